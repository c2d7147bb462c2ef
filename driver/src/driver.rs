//! The [`Driver`]'s own methods: setting up a run, its machines and VLANs, signals and the global
//! timeout, and the run's record. The layer on top: it wires the features' hooks into the machines.

use crate::core::Core;
use crate::machine::{Driver, Hooks, Machine};
use crate::settings::{Options, MAX_OUTPUT, TCG_TIMEOUT_FACTOR};
use crate::vlan::VlanInfo;
use crate::{Accel, AccelChoice, Activity, Error, RunRecord, StartCommand, Step};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

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
        *core.ext.get::<Hooks>() = Hooks {
            before_command: Some(crate::polling::before_command),
            connected: &[crate::cache_save::on_connected, crate::nics::on_connected],
            explain: Some(crate::context::gather),
        };
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
        let i = core.add(name, start);
        Ok(Machine::new(self.core.clone(), i, name))
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

    /// The VLANs whose switches run, by number: each with its switch's socket directory (what
    /// NixOS start scripts read from `QEMU_VDE_SOCKET_<n>`) and process id.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.add_vlan(1)?;
    /// for v in driver.vlans() {
    ///     println!("vlan {}: {} (pid {})", v.number, v.socket_dir.display(), v.pid);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn vlans(&self) -> Vec<VlanInfo> {
        let core = self.core.borrow();
        let mut all: Vec<VlanInfo> = core.switches.iter().map(|s| s.info()).collect();
        all.sort_by_key(|v| v.number);
        all
    }

    /// The directory shared with every guest (`SHARED_DIR`, NixOS's `shared_dir`), created if
    /// needed.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// std::fs::write(driver.shared_dir()?.join("hello"), "hi").unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn shared_dir(&self) -> Result<std::path::PathBuf, Error> {
        let core = self.core.borrow();
        core.root.shared_dir().map_err(Error::Setup)
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
        let _step = self.enter_step(label);
        f()
    }

    /// Enters a labelled step that lasts until the returned guard is dropped: [`nested`]
    /// for a front end whose block cannot be a closure (Python's `with subtest(…)`). Logs its
    /// start; the guard logs its end with the time it took, and ends any step entered after it.
    ///
    /// [`nested`]: Driver::nested
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// let step = driver.enter_step("subtest: the server answers");
    /// // … the block's calls, recorded inside the step …
    /// drop(step);
    /// # }
    /// ```
    pub fn enter_step(&self, label: &str) -> Step {
        log::info!("{label}");
        self.activity().enter(label.to_string())
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
        self.core.borrow_mut().io.interrupts.deadline = Some((at, timeout));
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
        self.core.borrow_mut().io.catch_signals()
    }

    /// The signal caught since the last call, if any, forgetting it so later waits run again.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// if let Some(sig) = driver.take_signal() { eprintln!("interrupted by signal {sig}"); }
    /// # }
    /// ```
    pub fn take_signal(&self) -> Option<i32> {
        self.core.borrow().io.interrupts.clear_signal()
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
            Ok(core) => core.io.check_interrupts(),
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
        self.core.borrow().serial_stdout.set(false);
    }

    /// Copies the machines' console lines into the log again (the default).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// driver.serial_stdout_on();
    /// # }
    /// ```
    pub fn serial_stdout_on(&self) {
        self.core.borrow().serial_stdout.set(true);
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
