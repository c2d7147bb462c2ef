//! The high-level API of the VM test driver: a [`Driver`] owns the machines of one test run and one
//! single-threaded event loop that serves every channel of every machine (serial console, monitor,
//! backdoor shell, child exits); a [`Machine`] is a cheap handle with the NixOS driver's method names.
//!
//! ```no_run
//! use driver::{Driver, StartCommand};
//!
//! let driver = Driver::new()?;
//! let vm = driver.add_machine(StartCommand::Script("guests/out/run-tiny-vm".into()))?;
//! assert_eq!(vm.name(), "tiny");
//! let kernel = vm.succeed("uname -r")?;
//! println!("{kernel}");
//! vm.shutdown()?;
//! # Ok::<(), driver::Error>(())
//! ```

#![warn(missing_docs)]

mod activity;
mod cache;
mod console;
mod context;
mod core;
mod coverage;
mod keys;
mod machine;
mod network;
mod ocr;
mod parity;
mod polling;
mod qmp;
mod record;
mod screen;
mod snapshot;
mod together;
mod tty;
mod vlan;
mod waits;
mod x11;

pub use activity::{Activity, Step, STEP_END};
pub use context::{FailureContext, UnitContext};
pub use coverage::COVERAGE_DIR;
pub use keys::DEFAULT_KEY_DELAY;
pub use machine::{CommandList, Machine};
pub use network::LinkQuality;
pub use polling::CheckResult;
pub use qemu_proc::{Accel, AccelChoice, BuiltinVm, StartCommand};
pub use qmp::{QmpEvent, EVENTS_KEPT as QMP_EVENTS_KEPT};
pub use record::{ConsoleLine, MachineEvent, MachineRecord, RunRecord, StepRecord};
pub use screen::Screen;
/// The JSON crate of QMP values ([`Machine::qmp_command`]), for `serde_json::json!` and `Value`.
pub use serde_json;

use crate::core::{Core, Vm};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// How long a wait lasts when the caller gives no timeout (as the NixOS driver).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

/// What every timeout is multiplied by under TCG when the user gives no factor: guests boot and run
/// about this much slower than under KVM here (systemd guest to backdoor: ≈18 s against ≈3 s).
pub const TCG_TIMEOUT_FACTOR: f64 = 5.0;

/// Most output one command may return by default: beyond it the command is stopped, so memory
/// stays bounded whatever the guest prints.
pub const MAX_OUTPUT: usize = 64 << 20;

/// How a [`Driver`] is set up; `Options::default()` is what [`Driver::new`] does.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep state in this directory (created 0700, never removed) instead of a fresh one.
    pub state_dir: Option<PathBuf>,
    /// Fail at once, naming the reason, unless KVM is usable.
    pub require_kvm: bool,
    /// Multiply every timeout a test gives (and the defaults) by this; `None`: 1 under KVM,
    /// [`TCG_TIMEOUT_FACTOR`] under TCG, so tests written for KVM pass under TCG unchanged.
    pub timeout_factor: Option<f64>,
    /// Where files for people go (screenshots taken when a call fails); `None`: no such files.
    pub output_dir: Option<PathBuf>,
    /// Keep each machine "booted and ready" here after its first boot, and start later runs of the
    /// same machine (same start command, inputs and network) from that snapshot instead of booting.
    pub snapshot_cache: Option<PathBuf>,
    /// Most output one command may return (bytes); a command printing more is stopped and fails.
    /// `None`: [`MAX_OUTPUT`] (64 MiB).
    pub max_output: Option<usize>,
}

/// Errors of the driver API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A wait ran out of time.
    #[error("machine {machine}: timed out after {after:?} waiting for {what}; last seen:\n{last}")]
    Timeout {
        /// The machine waited on.
        machine: String,
        /// What was awaited.
        what: String,
        /// How long the wait lasted.
        after: Duration,
        /// The last thing seen (command output, console lines).
        last: String,
    },
    /// `succeed` got a non-zero exit status.
    #[error(
        "machine {machine}: command `{command}` failed (exit status {status}); output:\n{output}"
    )]
    CommandFailed {
        /// The machine.
        machine: String,
        /// The command text.
        command: String,
        /// Its exit status.
        status: i32,
        /// Its stdout.
        output: String,
    },
    /// `fail` got exit status 0.
    #[error("machine {machine}: command `{command}` unexpectedly succeeded; output:\n{output}")]
    UnexpectedSuccess {
        /// The machine.
        machine: String,
        /// The command text.
        command: String,
        /// Its stdout.
        output: String,
    },
    /// QEMU exited, or the guest closed the channel, while something was awaited.
    #[error("machine {machine}: {what}\n{context}")]
    MachineGone {
        /// The machine.
        machine: String,
        /// What happened and what was going on.
        what: String,
        /// QEMU's exit status and stderr, the last console lines.
        context: String,
    },
    /// A command needs the machine running, and it is not.
    #[error("machine {0}: not running")]
    NotRunning(String),
    /// The backdoor protocol desynchronised.
    #[error("machine {machine}: backdoor shell protocol lost: {reason}")]
    ShellLost {
        /// The machine.
        machine: String,
        /// What was seen.
        reason: String,
    },
    /// A polling condition (see [`Driver::with_polling_condition`]) did not hold.
    #[error("polling condition \"{name}\" failed: {reason}")]
    PollingConditionFailed {
        /// The condition's name.
        name: String,
        /// Why its check failed.
        reason: String,
    },
    /// The backdoor shell stopped answering (see the reason); commands fail at once until it returns.
    #[error("machine {machine}: {reason}")]
    ShellWedged {
        /// The machine.
        machine: String,
        /// Since when and why.
        reason: String,
    },
    /// A command printed more than the driver keeps in memory for one command.
    #[error("machine {machine}: the output of `{command}` exceeded {} MiB, so {outcome}; its last output:\n{last}", limit >> 20)]
    OutputTooLarge {
        /// The machine.
        machine: String,
        /// The command, shortened.
        command: String,
        /// The limit in bytes.
        limit: usize,
        /// Whether the command was stopped.
        outcome: String,
        /// The end of what it printed.
        last: String,
    },
    /// The command cannot be sent (e.g. it contains a NUL byte).
    #[error("machine {machine}: cannot send the command: {reason}")]
    BadCommand {
        /// The machine.
        machine: String,
        /// Why.
        reason: guest_shell::Error,
    },
    /// The monitor refused a command or desynchronised.
    #[error("machine {machine}: monitor: {reason}")]
    Monitor {
        /// The machine.
        machine: String,
        /// Why.
        reason: String,
    },
    /// QEMU answered a QMP command with an error.
    #[error("machine {machine}: QMP command `{command}` failed: {class}: {desc}")]
    QmpCommandFailed {
        /// The machine.
        machine: String,
        /// The command's name.
        command: String,
        /// QEMU's error class, e.g. `CommandNotFound`, `GenericError`.
        class: String,
        /// QEMU's description of the error.
        desc: String,
    },
    /// The machine's QEMU has no QMP socket: its start script does not pass the driver's `-qmp`
    /// option on to QEMU.
    #[error(
        "QEMU of machine {0} offers no QMP socket (its start script does not pass the driver's \
         -qmp option on to QEMU)"
    )]
    NoQmp(String),
    /// QMP cannot be used: QEMU refused the negotiation, or a command could not be built.
    #[error("machine {machine}: qmp: {reason}")]
    Qmp {
        /// The machine.
        machine: String,
        /// Why.
        reason: String,
    },
    /// No machine has this name.
    #[error("no machine named {name:?} (machines: {known})")]
    UnknownMachine {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// Two machines would have the same name.
    #[error("two machines are named {0:?}")]
    DuplicateMachine(String),
    /// Starting QEMU, naming a machine or preparing its state failed.
    #[error("machine {machine}: cannot start")]
    Start {
        /// The machine.
        machine: String,
        /// Why.
        #[source]
        source: qemu_proc::Error,
    },
    /// A regular expression did not compile.
    #[error("invalid regular expression {pattern:?}")]
    Regex {
        /// The pattern as given.
        pattern: String,
        /// Why it is invalid.
        #[source]
        source: regex::Error,
    },
    /// A systemd unit entered the `failed` state while it was awaited.
    #[error("machine {machine}: unit {unit} failed\n{status}")]
    UnitFailed {
        /// The machine.
        machine: String,
        /// The unit.
        unit: String,
        /// `systemctl status` of the unit.
        status: String,
    },
    /// A caught signal or the run's global timeout stopped what was going on.
    #[error("{reason}{}", while_clause(during))]
    Interrupted {
        /// The signal or the timeout.
        reason: String,
        /// The steps in progress, outermost first ([`Activity::describe`]).
        during: String,
    },
    /// A virtual network could not be set up.
    #[error("vlan {number}: {what}")]
    Vlan {
        /// The VLAN number.
        number: u32,
        /// What went wrong.
        what: String,
        /// The process error, when starting the switch failed.
        #[source]
        source: Option<qemu_proc::Error>,
    },
    /// A call failed; what was known about its machine then follows the error ([`Error::cause`]
    /// is the error alone).
    #[error("{error}\n{context}")]
    WithContext {
        /// The failure.
        error: Box<Error>,
        /// The machine's console, unit state and screenshot at that moment.
        context: Box<FailureContext>,
    },
    /// KVM was required and cannot be used.
    #[error("KVM is required but cannot be used: {reason}")]
    KvmRequired {
        /// Which check failed.
        reason: String,
    },
    /// An option of the driver has a value it cannot use.
    #[error("invalid option: {0}")]
    BadOption(String),
    /// Setting up the run (state directory, accelerator probe) failed.
    #[error("cannot set up the run")]
    Setup(#[source] qemu_proc::Error),
    /// An operating-system call failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn while_clause(during: &str) -> String {
    if during.is_empty() {
        String::new()
    } else {
        format!(" while: {during}")
    }
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            what: "event loop".into(),
            source,
        }
    }
}

/// The machines of one test run and the event loop serving them.
#[derive(Clone)]
pub struct Driver {
    pub(crate) core: Rc<RefCell<Core>>,
}

impl Driver {
    /// A driver with a fresh private state directory; probes KVM and logs the accelerator chosen.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// let driver = driver::Driver::new()?;
    /// println!("accelerator: {}", driver.accel().accel);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Result<Self, Error> {
        Self::with_options(&Options::default())
    }

    /// A driver whose state lives in `dir` (created 0700 if missing, never removed), so machines of
    /// a later run with the same `dir` find their `vm-state-<name>` (disk images) again.
    ///
    /// ```no_run
    /// let driver = driver::Driver::with_state_dir("/var/tmp/my-test-state".as_ref())?;
    /// # Ok::<(), driver::Error>(())
    /// ```
    pub fn with_state_dir(dir: &std::path::Path) -> Result<Self, Error> {
        Self::with_options(&Options {
            state_dir: Some(dir.to_path_buf()),
            ..Options::default()
        })
    }

    /// A driver set up as `options` say; says once which accelerator and timeout factor it uses.
    ///
    /// ```no_run
    /// let driver = driver::Driver::with_options(&driver::Options {
    ///     require_kvm: true,
    ///     ..Default::default()
    /// })?;
    /// # Ok::<(), driver::Error>(())
    /// ```
    pub fn with_options(options: &Options) -> Result<Self, Error> {
        if let Some(f) = options.timeout_factor {
            if !(f.is_finite() && f > 0.0) {
                return Err(Error::BadOption(format!(
                    "timeout factor {f}: must be a positive number"
                )));
            }
        }
        let accel = qemu_proc::probe_accel().map_err(Error::Setup)?;
        if options.require_kvm && accel.accel != Accel::Kvm {
            return Err(Error::KvmRequired {
                reason: accel.reason,
            });
        }
        let (factor, why) = match (options.timeout_factor, accel.accel) {
            (Some(f), _) => (f, "as given"),
            (None, Accel::Kvm) => (1.0, "KVM"),
            (None, Accel::Tcg) => (TCG_TIMEOUT_FACTOR, "the default under TCG"),
        };
        log::info!(
            "accelerator: {} ({}); timeouts x{factor} ({why})",
            accel.accel,
            accel.reason
        );
        let root = match &options.state_dir {
            Some(dir) => qemu_proc::StateRoot::at(dir),
            None => qemu_proc::StateRoot::create(),
        }
        .map_err(Error::Setup)?;
        log::debug!("state directory: {}", root.path().display());
        let mut core = Core::new(root, accel)?;
        core.timeout_factor = factor;
        core.output_dir = options.output_dir.clone();
        core.max_output = options.max_output.unwrap_or(MAX_OUTPUT);
        if let Some(cache) = &options.snapshot_cache {
            std::fs::create_dir_all(cache).map_err(|source| Error::Io {
                what: format!("creating the snapshot cache {}", cache.display()),
                source,
            })?;
        }
        core.snapshot_cache = options.snapshot_cache.clone();
        Ok(Driver {
            core: Rc::new(RefCell::new(core)),
        })
    }

    /// Everything recorded about the run so far (steps, machine events, commands, console lines),
    /// for reports; cheap enough to call once at the end.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// let record = driver.record();
    /// println!("{} steps", record.steps.len());
    /// # }
    /// ```
    pub fn record(&self) -> RunRecord {
        self.core.borrow().activity.recorder().snapshot()
    }

    /// How long ago the driver was created: the origin of every time in [`record`](Self::record).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// println!("running for {:?}", driver.elapsed());
    /// # }
    /// ```
    pub fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.core.borrow().activity.recorder().now())
    }

    /// What every timeout is multiplied by in this run.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// println!("timeouts x{}", driver.timeout_factor());
    /// # }
    /// ```
    pub fn timeout_factor(&self) -> f64 {
        self.core.borrow().timeout_factor
    }

    /// Adds a machine; a start script names it after its file (`run-<name>-vm`).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// let vm = driver.add_machine(driver::StartCommand::Script("result/bin/run-webserver-vm".into()))?;
    /// assert_eq!(vm.name(), "webserver");
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_machine(&self, start: StartCommand) -> Result<Machine, Error> {
        let name = match &start {
            StartCommand::Script(path) => {
                qemu_proc::machine_name_from_script(path).map_err(|source| Error::Start {
                    machine: path.display().to_string(),
                    source,
                })?
            }
            // NixOS's name for a machine given only by options.
            StartCommand::Builtin(_) => "machine".to_string(),
        };
        self.add_named_machine(&name, start)
    }

    /// Adds a machine under an explicit name.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// let a = driver.add_named_machine("a", driver::StartCommand::Script("run-tiny-vm".into()))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_named_machine(&self, name: &str, start: StartCommand) -> Result<Machine, Error> {
        let mut core = self.core.borrow_mut();
        if core.vms.iter().any(|vm| vm.name == name) {
            return Err(Error::DuplicateMachine(name.to_string()));
        }
        let number = core.vms.len() + 1;
        core.vms.push(Vm::new(name.to_string(), start, number));
        Ok(Machine::new(self.core.clone(), core.vms.len() - 1, name))
    }

    /// The machine called `name`.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// let vm = driver.machine("webserver")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn machine(&self, name: &str) -> Result<Machine, Error> {
        let core = self.core.borrow();
        match core.vms.iter().position(|vm| vm.name == name) {
            Some(i) => Ok(Machine::new(self.core.clone(), i, name)),
            None => Err(Error::UnknownMachine {
                name: name.to_string(),
                known: core
                    .vms
                    .iter()
                    .map(|vm| vm.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// All machines, in the order they were added.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// for vm in driver.machines() { vm.shutdown()?; }
    /// # Ok(())
    /// # }
    /// ```
    pub fn machines(&self) -> Vec<Machine> {
        let core = self.core.borrow();
        (0..core.vms.len())
            .map(|i| Machine::new(self.core.clone(), i, &core.vms[i].name))
            .collect()
    }

    /// The accelerator used for every machine, and why.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// if driver.accel().accel == driver::Accel::Tcg { println!("no KVM: {}", driver.accel().reason); }
    /// # Ok(())
    /// # }
    /// ```
    pub fn accel(&self) -> AccelChoice {
        self.core.borrow().accel.clone()
    }

    /// The run's private state directory (machine sockets, `vm-state-<name>`).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// println!("sockets under {}", driver.state_dir().display());
    /// # Ok(())
    /// # }
    /// ```
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.core.borrow().root.path().to_path_buf()
    }

    /// Keeps the state directory after the run, for post-mortems.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.keep_vm_state();
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_vm_state(&self) {
        self.core.borrow_mut().root.keep();
    }

    /// Starts the switch of VLAN `number` (1..=255) unless it runs; machines attach with
    /// [`Machine::attach_vlans`], which starts switches itself.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.add_vlan(1)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_vlan(&self, number: u32) -> Result<(), Error> {
        self.core.borrow_mut().ensure_switch(number)
    }

    /// Starts every machine that is not running, without waiting for them to boot.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.start_all()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_all(&self) -> Result<(), Error> {
        for m in self.machines() {
            m.start()?;
        }
        Ok(())
    }

    /// Logs a message of the test.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.log("all machines up");
    /// # Ok(())
    /// # }
    /// ```
    pub fn log(&self, message: &str) {
        log::info!("{message}");
    }

    /// Runs `f` as a labelled step: logs its start, and its end with the time it took.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// let out = driver.nested("checking the server", || driver.machine("server")?.succeed("true"))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn nested<T>(&self, label: &str, f: impl FnOnce() -> T) -> T {
        log::info!("{label}");
        let _step = self.activity().enter(label.to_string());
        f()
    }

    /// The steps in progress, shareable with another thread (a terminal status line).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// let activity = driver.activity();
    /// std::thread::spawn(move || loop {
    ///     eprint!("\r{}", activity.describe());
    ///     std::thread::sleep(std::time::Duration::from_secs(1));
    /// });
    /// # }
    /// ```
    pub fn activity(&self) -> Activity {
        self.core.borrow().activity.clone()
    }

    /// Ends every wait from `timeout` on with [`Error::Interrupted`] naming the step in progress.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// driver.set_global_timeout(std::time::Duration::from_secs(3600));
    /// # }
    /// ```
    pub fn set_global_timeout(&self, timeout: Duration) {
        let at = std::time::Instant::now() + timeout;
        self.core.borrow_mut().interrupts.deadline = Some((at, timeout));
    }

    /// Makes SIGINT, SIGTERM and SIGHUP end the wait in progress with [`Error::Interrupted`]
    /// instead of the process, so the caller can stop machines and write its logs; a second SIGINT
    /// before [`take_signal`](Self::take_signal) ends the process at once (exit 130).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.catch_signals()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn catch_signals(&self) -> Result<(), Error> {
        self.core.borrow_mut().catch_signals()
    }

    /// The signal caught since the last call, if any, forgetting it so later waits run again.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// if let Some(sig) = driver.take_signal() { eprintln!("interrupted by signal {sig}"); }
    /// # }
    /// ```
    pub fn take_signal(&self) -> Option<i32> {
        self.core.borrow().interrupts.clear_signal()
    }

    /// [`Error::Interrupted`] when a caught signal or the global timeout says the run must stop;
    /// for callers that compute without waiting (a script interpreter's progress hook).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.check_interrupts()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn check_interrupts(&self) -> Result<(), Error> {
        // Inside a driver call the loop checks for itself.
        match self.core.try_borrow() {
            Ok(core) => core.check_interrupts(),
            Err(_) => Ok(()),
        }
    }

    /// Serves every machine's channels for `d` (consoles keep flowing); fails early on an interrupt.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.sleep(std::time::Duration::from_millis(500))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn sleep(&self, d: Duration) -> Result<(), Error> {
        self.core.borrow_mut().idle(d)
    }

    /// Waits for every machine to shut down by itself (NixOS's `join_all`).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// for vm in driver.machines() { vm.execute("poweroff")?; }
    /// driver.join_all()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn join_all(&self) -> Result<(), Error> {
        self.nested("waiting for all machines to shut down", || {
            self.machines()
                .iter()
                .try_for_each(|vm| vm.wait_for_shutdown())
        })
    }

    /// Stops copying the machines' console lines into the log (they are still recorded, for
    /// `get_console_log`, waits on the console and the report), as NixOS's `serial_stdout_off`.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// driver.serial_stdout_off();
    /// # }
    /// ```
    pub fn serial_stdout_off(&self) {
        self.core.borrow_mut().serial_stdout = false;
    }

    /// Copies the machines' console lines into the log again (the default).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// driver.serial_stdout_on();
    /// # }
    /// ```
    pub fn serial_stdout_on(&self) {
        self.core.borrow_mut().serial_stdout = true;
    }

    /// Stops every running machine at once (no clean shutdown) and reaps it.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.stop_all();
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop_all(&self) {
        let mut core = self.core.borrow_mut();
        for i in 0..core.vms.len() {
            core.stop_io(i);
        }
    }
}
