//! The handles a test holds, [`Machine`] and [`Driver`], and what every feature of a machine uses:
//! its timeouts, its steps in the log, the errors of a machine gone, failure context, and the hooks
//! through which features above this layer join in (polling conditions before each command, the
//! snapshot cache once the shell is up, failure context when a call fails).

use crate::activity::Step;
use crate::core::Core;
use crate::{Error, FailureContext, DEFAULT_TIMEOUT};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long to keep reading QEMU's stderr and console after it exited, so errors show its last words.
const SETTLE: Duration = Duration::from_millis(500);
/// Console lines an error about a machine gone shows.
pub(crate) const CONSOLE_LINES: usize = 50;

/// The machines of one test run and the event loop serving them.
#[derive(Clone)]
pub struct Driver {
    pub(crate) core: Rc<RefCell<Core>>,
}

/// A handle on one machine of a [`Driver`](crate::Driver); clones refer to the same machine.
#[derive(Clone)]
pub struct Machine {
    pub(crate) core: Rc<RefCell<Core>>,
    pub(crate) i: usize,
    pub(crate) name: String,
}

/// A hook on a machine.
pub(crate) type MachineHook = fn(&Machine) -> Result<(), Error>;
/// The failure-context hook: what is known about a machine whose call failed (with a unit's state).
pub(crate) type ExplainHook = fn(&Machine, Option<&str>, &Error) -> FailureContext;

/// What features above the machine layer do when it passes these points; set by the driver.
#[derive(Clone, Copy, Default)]
pub(crate) struct Hooks {
    /// Before each guest command (the polling conditions in force).
    pub(crate) before_command: Option<MachineHook>,
    /// Once the backdoor shell connected, in order (the snapshot cache saves or sets the guest
    /// clock; the machine's NICs are checked).
    pub(crate) connected: &'static [MachineHook],
    /// Gathers what is known about the machine when a call on it failed.
    pub(crate) explain: Option<ExplainHook>,
}

/// Calls under way that attach failure context; only the outermost one gathers it.
#[derive(Default)]
struct Explaining(usize);

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Machine({})", self.name)
    }
}

impl Machine {
    pub(crate) fn new(core: Rc<RefCell<Core>>, i: usize, name: &str) -> Self {
        Machine {
            core,
            i,
            name: name.to_string(),
        }
    }

    /// The machine's name (`run-<name>-vm`).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// assert_eq!(vm.name(), "webserver");
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether QEMU runs and the backdoor shell is connected.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// if !vm.is_up() { vm.connect()?; }
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_up(&self) -> bool {
        let core = self.core.borrow();
        let vm = &core.io.vms[self.i];
        vm.is_running() && vm.shell_connected()
    }

    /// Whether QEMU was started and has not exited (NixOS's `booted`).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// assert!(!vm.is_running() || vm.is_up() || true);
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_running(&self) -> bool {
        self.core.borrow().io.vms[self.i].is_running()
    }

    /// `given` (or the default timeout) multiplied by the run's timeout factor.
    pub(crate) fn limit(&self, given: Option<Duration>) -> Duration {
        given
            .unwrap_or(DEFAULT_TIMEOUT)
            .mul_f64(self.core.borrow().timeout_factor)
    }

    /// The hooks features set (see [`Hooks`]).
    pub(crate) fn hooks(&self) -> Hooks {
        *self.core.borrow_mut().ext.get::<Hooks>()
    }

    /// Runs the hook due before a guest or monitor command (the polling conditions in force).
    pub(crate) fn before_command(&self) -> Result<(), Error> {
        match self.hooks().before_command {
            Some(before) => before(self),
            None => Ok(()),
        }
    }

    /// Runs `f`; if it fails, and no call around it gathers context already, attaches what the
    /// `explain` hook gathers about this machine (with `unit`'s status and journal when given).
    pub(crate) fn explained<T>(
        &self,
        unit: Option<&str>,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let outermost = {
            let mut core = self.core.borrow_mut();
            let depth = &mut core.ext.get::<Explaining>().0;
            *depth += 1;
            *depth == 1
        };
        let result = match (f(), self.hooks().explain) {
            (Err(e), Some(explain)) if outermost && e.wants_context() => {
                let context = explain(self, unit, &e);
                log::debug!("{}: failure context gathered", self.name);
                Err(Error::WithContext {
                    error: Box::new(e),
                    context: Box::new(context),
                })
            }
            (r, _) => r,
        };
        self.core.borrow_mut().ext.get::<Explaining>().0 -= 1;
        result
    }

    /// The machine's private state directory (`vm-state-<name>`), created if needed.
    pub(crate) fn state_dir(&self) -> Result<std::path::PathBuf, Error> {
        let core = self.core.borrow();
        core.root
            .machine_dir(&self.name)
            .map_err(|source| Error::Start {
                machine: self.name.clone(),
                source,
            })
    }

    /// Where the machine's files are: its state directory, its monitor, shell and QMP sockets,
    /// and the directory shared with guests (NixOS's `state_dir`, `monitor_path`, …); the
    /// directories are created if needed.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// println!("monitor socket: {}", vm.paths()?.monitor.display());
    /// # Ok(())
    /// # }
    /// ```
    pub fn paths(&self) -> Result<qemu_proc::MachinePaths, Error> {
        let state = self.state_dir()?;
        let shared = self.core.borrow().root.shared_dir().map_err(Error::Setup)?;
        Ok(qemu_proc::MachinePaths::new(state, shared))
    }

    /// Logs `what` this machine starts doing and makes it the innermost step until the guard drops.
    pub(crate) fn step(&self, what: String) -> Step {
        log::info!("{}: {what}", self.name);
        let activity = self.core.borrow().activity.clone();
        activity.enter_on(Some(&self.name), format!("{}: {what}", self.name))
    }

    /// The error for a machine gone (QEMU exited, the guest panicked): `what` happened, with QEMU's
    /// exit status, its stderr and the last console lines.
    pub(crate) fn gone(&self, core: &mut Core, what: &str) -> Error {
        settle(core, self.i);
        let what = match &core.io.vms[self.i].panicked {
            Some(line) => format!("the guest kernel panicked ({line}) {what}"),
            None => what.to_string(),
        };
        Error::MachineGone {
            machine: self.name.clone(),
            what,
            context: core.io.vms[self.i].context(CONSOLE_LINES),
        }
    }
}

/// Lets the loop read what a dying QEMU still wrote, so an error shows it.
pub(crate) fn settle(core: &mut Core, i: usize) {
    let _ = core.io.run_until(Instant::now() + SETTLE, |io| {
        let vm = &io.vms[i];
        vm.exit.filter(|_| vm.io_drained()).map(|_| ())
    });
}
