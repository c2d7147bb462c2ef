//! Starting a machine and waiting for its backdoor shell.

use crate::machine::Machine;
use crate::record::MachineEvent;
use crate::{Error, StartCommand};
use std::time::{Duration, Instant};

/// How long a start script may take to start QEMU (not scaled: no guest code runs before it).
const QEMU_START_LIMIT: Duration = Duration::from_secs(60);

/// How waiting for the backdoor shell ended.
enum Boot {
    Connected,
    Exited,
    /// The kernel panicked; QEMU may go on running (panic=0), but the guest is gone.
    Panicked,
    NoQemu,
}

impl Machine {
    /// Starts QEMU if it is not running; does not wait for the guest.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.start()?; // returns at once; the first command waits for the guest
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(&self) -> Result<(), Error> {
        self.core.borrow_mut().start(self.i)
    }

    /// Starts the machine if needed and waits for the backdoor shell (default timeout).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.connect()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(&self) -> Result<(), Error> {
        self.connect_for(self.limit(None))
    }

    /// Starts the machine if needed and waits up to `timeout` for the backdoor shell.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.connect_within(std::time::Duration::from_secs(120))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_within(&self, timeout: Duration) -> Result<(), Error> {
        self.connect_for(self.limit(Some(timeout)))
    }

    fn connect_for(&self, timeout: Duration) -> Result<(), Error> {
        self.explained(None, || {
            let mut core = self.core.borrow_mut();
            let vm = &core.io.vms[self.i];
            if vm.is_running() && vm.shell_connected() {
                return Ok(());
            }
            // Exited without anyone waiting for it (a crash, a poweroff from inside): report it rather
            // than boot a fresh machine behind the test's back. After `wait_for_shutdown` it starts anew.
            if vm.started() && vm.exit.is_some() {
                return Err(self.gone(&mut core, "QEMU has exited"));
            }
            core.start(self.i)?;
            let _step = core.activity.enter_on(
                Some(&self.name),
                format!("{}: waiting for the backdoor shell", self.name),
            );
            let t0 = Instant::now();
            let i = self.i;
            let got = core.io.run_until(t0 + timeout, |io| {
                let vm = &io.vms[i];
                if vm.shell_connected() {
                    Some(Boot::Connected)
                } else if vm.exit.is_some() || !vm.shell_events.is_empty() {
                    // Exited, or the shell channel closed before its banner.
                    Some(Boot::Exited)
                } else if vm.panicked.is_some() {
                    Some(Boot::Panicked)
                } else if t0.elapsed() > QEMU_START_LIMIT && !vm.monitor_connected() {
                    // QEMU connects to its monitor within milliseconds of starting.
                    Some(Boot::NoQemu)
                } else {
                    None
                }
            })?;
            match got {
                Some(Boot::NoQemu) => {
                    let what = format!(
                        "nothing connected to the monitor socket within {QEMU_START_LIMIT:?} of \
                         starting {}: it did not start QEMU, or not with the options the driver \
                         passes in QEMU_OPTS",
                        match &core.vms[i].start {
                            StartCommand::Script(path) =>
                                format!("start script {}", path.display()),
                            StartCommand::Builtin(_) => "QEMU".into(),
                        }
                    );
                    Err(self.gone(&mut core, &what))
                }
                Some(Boot::Connected) => {
                    let since_start = core.io.vms[i].started_at.map(|s| s.elapsed());
                    let recorder = core.activity.recorder();
                    let event = MachineEvent::Connected { t: recorder.now() };
                    recorder.event(&self.name, event);
                    log::info!(
                        "{}: connected to the backdoor shell ({:.2} s after start)",
                        self.name,
                        since_start.unwrap_or_default().as_secs_f64()
                    );
                    core.io.vms[i].shell_events.clear();
                    drop(core);
                    self.hooks()
                        .connected
                        .iter()
                        .try_for_each(|hook| hook(self))
                }
                Some(Boot::Exited) => {
                    Err(self.gone(&mut core, "QEMU exited before the backdoor shell connected"))
                }
                Some(Boot::Panicked) => {
                    Err(self.gone(&mut core, "before the backdoor shell connected"))
                }
                None => Err(Error::Timeout {
                    machine: self.name.clone(),
                    what: "the backdoor shell to connect".into(),
                    after: timeout,
                    last: core.io.vms[i].context(20),
                }),
            }
        })
    }
}
