//! A machine's power: reboot, clean shutdown, waiting for QEMU to exit, pulling the plug.

use crate::machine::{settle, Machine};
use crate::{Error, DEFAULT_TIMEOUT};
use std::time::{Duration, Instant};

impl Machine {
    /// Whether a reboot restarts the machine (true) or ends QEMU (false, the default, as in NixOS);
    /// takes effect at the next start.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.set_allow_reboot(true);
    /// vm.start()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_allow_reboot(&self, allow: bool) {
        self.core.borrow_mut().vms[self.i].allow_reboot = allow;
    }

    /// Presses Ctrl+Alt+Delete in the guest; the next command waits for the rebooted guest's backdoor
    /// shell. Without [`set_allow_reboot`](Self::set_allow_reboot) QEMU exits instead, and the next
    /// command says so.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.reboot()?;
    /// vm.succeed("true")?; // waits for the rebooted guest
    /// # Ok(())
    /// # }
    /// ```
    pub fn reboot(&self) -> Result<(), Error> {
        let _step = self.step("rebooting".into());
        self.send_monitor_command("sendkey ctrl-alt-delete")?;
        self.core.borrow_mut().io.vms[self.i].reset_shell();
        Ok(())
    }

    /// Logs `message` as coming from this machine.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.log("starting the interesting part");
    /// # Ok(())
    /// # }
    /// ```
    pub fn log(&self, message: &str) {
        log::info!("{}: {message}", self.name);
    }

    /// Powers the guest off cleanly (`poweroff` in the guest) and waits for QEMU to exit.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.shutdown()?;
    /// assert!(!vm.is_running());
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown(&self) -> Result<(), Error> {
        self.shutdown_within(DEFAULT_TIMEOUT)
    }

    /// [`shutdown`](Self::shutdown), waiting up to `timeout` for the backdoor and then for QEMU to exit.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.shutdown_within(std::time::Duration::from_secs(60))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_within(&self, timeout: Duration) -> Result<(), Error> {
        if !self.is_running() {
            return Ok(());
        }
        let _step = self.step("shutting down".into());
        self.connect_within(timeout)?;
        // Programs have exited (and written their data) by now, or never will.
        if let Err(e) = self.collect_coverage() {
            log::warn!("coverage: {e}");
        }
        {
            let mut core = self.core.borrow_mut();
            let bytes = self.frame(&mut core, b"poweroff")?;
            core.io.vms[self.i].write_shell(&bytes);
        }
        self.wait_for_shutdown_within(timeout)
    }

    /// Waits (default timeout) for QEMU to exit by itself.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.execute("poweroff")?;
    /// vm.wait_for_shutdown()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_shutdown(&self) -> Result<(), Error> {
        self.wait_for_shutdown_within(DEFAULT_TIMEOUT)
    }

    /// Waits up to `timeout` for QEMU to exit by itself; on timeout QEMU keeps running.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.execute("poweroff")?;
    /// vm.wait_for_shutdown_within(std::time::Duration::from_secs(60))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_shutdown_within(&self, timeout: Duration) -> Result<(), Error> {
        self.explained(None, || {
            let timeout = self.limit(Some(timeout));
            let mut core = self.core.borrow_mut();
            let i = self.i;
            if !core.io.vms[i].started() {
                return Ok(());
            }
            let _step = core.activity.enter_on(
                Some(&self.name),
                format!("{}: waiting for QEMU to exit", self.name),
            );
            let exited = core
                .io
                .run_until(Instant::now() + timeout, |io| io.vms[i].exit.map(|_| ()))?;
            if exited.is_none() {
                return Err(Error::Timeout {
                    machine: self.name.clone(),
                    what: "QEMU to exit".into(),
                    after: timeout,
                    last: core.io.vms[i].context(20),
                });
            }
            settle(&mut core, i);
            core.stop_io(i);
            Ok(())
        })
    }

    /// The serial console lines of the current boot kept so far (at most the last 10 000): a
    /// machine started again starts a new log, as NixOS's does.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let log = vm.get_console_log();
    /// assert!(!log.contains("Kernel panic"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_console_log(&self) -> String {
        self.core.borrow().io.vms[self.i].console.text()
    }

    /// Stops QEMU at once through the monitor (`quit`), like pulling the plug, and waits for it.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.crash()?;
    /// assert!(!vm.is_running());
    /// # Ok(())
    /// # }
    /// ```
    pub fn crash(&self) -> Result<(), Error> {
        if !self.is_running() {
            return Ok(());
        }
        let _step = self.step("crashing".into());
        self.send_monitor_command("quit")?;
        self.wait_for_shutdown()
    }
}
