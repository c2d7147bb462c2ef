//! QEMU's human monitor (HMP): commands and their replies.

use crate::machine::Machine;
use crate::Error;
use std::time::{Duration, Instant};

impl Machine {
    /// Sends an HMP command to QEMU's monitor and returns its reply.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let status = vm.send_monitor_command("info status")?;
    /// assert!(status.contains("running"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_monitor_command(&self, command: &str) -> Result<String, Error> {
        // As NixOS's: the polling conditions in force are checked first.
        self.before_command()?;
        let _step = self.step(format!("monitor: {command}"));
        self.monitor_within(command, self.limit(None))
    }

    /// Sends an HMP command and waits up to `limit` for the reply.
    pub(crate) fn monitor_within(&self, command: &str, limit: Duration) -> Result<String, Error> {
        let mut core = self.core.borrow_mut();
        let i = self.i;
        if !core.io.vms[i].is_running() {
            return Err(Error::NotRunning(self.name.clone()));
        }
        let deadline = Instant::now() + limit;
        // Replies to commands abandoned by a timeout or an interrupt come first, and are not ours.
        core.io.vms[i]
            .monitor_events
            .retain(|e| !matches!(e, qemu_monitor::Event::Reply(_)));
        let mut stale = core.io.vms[i].monitor.pending();
        // QEMU connects right after it starts; the codec holds the command until the greeting.
        let bytes = core.io.vms[i]
            .monitor
            .command(command)
            .map_err(|e| Error::Monitor {
                machine: self.name.clone(),
                reason: e.to_string(),
            })?;
        let ready = core.io.run_until(deadline, |io| {
            if io.vms[i].exit.is_some() {
                Some(false)
            } else {
                io.vms[i].monitor_connected().then_some(true)
            }
        })?;
        if ready != Some(true) || !core.io.vms[i].write_monitor(&bytes) {
            return Err(self.gone(&mut core, "the monitor is not connected"));
        }
        let reply = core.io.run_until(deadline, |io| {
            while let Some(e) = io.vms[i].monitor_events.pop_front() {
                match e {
                    qemu_monitor::Event::Reply(_) if stale > 0 => stale -= 1,
                    qemu_monitor::Event::Reply(r) => return Some(Ok(r)),
                    qemu_monitor::Event::Closed => return Some(Ok(String::new())),
                    qemu_monitor::Event::Lost { reason } => return Some(Err(reason)),
                    _ => {}
                }
            }
            None
        })?;
        match reply {
            Some(Ok(r)) => Ok(r),
            Some(Err(reason)) => Err(Error::Monitor {
                machine: self.name.clone(),
                reason,
            }),
            None => Err(Error::Timeout {
                machine: self.name.clone(),
                what: format!("the monitor's reply to `{command}`"),
                after: limit,
                last: String::new(),
            }),
        }
    }

    /// Sends a monitor command that prints nothing when it works; any reply is its error message.
    pub(crate) fn monitor_expect_silence(&self, command: &str) -> Result<(), Error> {
        let _step = self.step(format!("monitor: {command}"));
        self.monitor_ok(command)
    }

    /// An HMP command that prints nothing when it works (savevm, loadvm).
    pub(crate) fn monitor_ok(&self, command: &str) -> Result<(), Error> {
        let reply = self.monitor_within(command, self.limit(None))?;
        match reply.trim() {
            "" => Ok(()),
            said => Err(Error::Monitor {
                machine: self.name.clone(),
                reason: format!("{command}: {said}"),
            }),
        }
    }
}
