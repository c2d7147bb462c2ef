//! QMP, the QEMU Machine Protocol: [`Machine::qmp_command`] and [`Machine::wait_for_qmp_event`],
//! as NixOS's driver offers them.
//!
//! QEMU listens on `<state dir>/vm-state-<name>/qmp` (the driver passes
//! `-qmp unix:…,server=on,wait=off`). The event loop dials it once QEMU has created it, writes the
//! capabilities negotiation at once, and from then on keeps every reply (by id) and every
//! asynchronous event (the last [`EVENTS_KEPT`], with their host arrival time) of each machine. A
//! start script that does not pass the option on to QEMU just has no QMP: the machine works as
//! before, and the QMP calls fail with [`Error::NoQmp`].
//!
//! **Which events a wait sees.** Each machine keeps a cursor into its event queue. A wait looks at
//! the events from the cursor on, oldest first — so also at events queued before the call — and then
//! at those arriving while it waits. Every event it looks at is consumed, whether it matched or not,
//! and it stops at the first match: events queued after the match stay for the next wait. So an event
//! that arrives between two waits (a `SHUTDOWN` while the test did something else) is seen by the
//! second, and an event one wait skipped is not seen again. As in NixOS, where the wait reads the
//! events not consumed yet from the socket, an old unconsumed event matches before a newer one of the
//! same name. A timed-out wait has consumed every event up to its end. A new start of QEMU begins a
//! new, empty queue.
//!
//! ```no_run
//! # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
//! use driver::serde_json::json;
//! assert_eq!(vm.qmp_command("query-status", None)?["status"], "running");
//! vm.qmp_command("stop", None)?;
//! vm.wait_for_qmp_event_named("STOP", None)?;
//! vm.qmp_command("human-monitor-command", Some(json!({"command-line": "info version"})))?;
//! vm.execute("poweroff -f")?;
//! let shutdown = vm.wait_for_qmp_event(|e| e.name == "SHUTDOWN", None)?;
//! assert_eq!(shutdown.data["guest"], true);
//! # Ok(())
//! # }
//! ```

use crate::core::Core;
use crate::event_loop::QmpEvent;
use crate::event_loop::QmpStatus as Status;
use crate::machine::Machine;
use crate::Error;
use qemu_monitor::qmp::QmpError;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long a wait that saw QEMU exit keeps reading the QMP socket for the events QEMU wrote last.
const EXIT_SETTLE: Duration = Duration::from_millis(500);

/// How waiting for the QMP connection ended.
enum Link {
    Up,
    Absent,
    Gone,
}

impl Machine {
    /// Runs the QMP command `name` with `args` (a JSON object, or `None` for none) and returns its
    /// `return` value; an error reply becomes [`Error::QmpCommandFailed`] naming its class and
    /// description. Waits up to the default timeout (times the run's factor) for the reply.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// use driver::serde_json::json;
    /// let status = vm.qmp_command("query-status", None)?;
    /// assert_eq!(status["status"], "running");
    /// let version = vm.qmp_command(
    ///     "human-monitor-command",
    ///     Some(json!({"command-line": "info version"})),
    /// )?;
    /// println!("QEMU {}", version.as_str().unwrap_or_default().trim());
    /// # Ok(())
    /// # }
    /// ```
    pub fn qmp_command(&self, name: &str, args: Option<Value>) -> Result<Value, Error> {
        let _step = self.step(format!("qmp: {name}"));
        self.qmp_within(name, args, self.limit(None))
    }

    /// Sends a QMP command and waits up to `limit` for its reply.
    pub(crate) fn qmp_within(
        &self,
        command: &str,
        args: Option<Value>,
        limit: Duration,
    ) -> Result<Value, Error> {
        let mut core = self.core.borrow_mut();
        let i = self.i;
        let deadline = Instant::now() + limit;
        match self.qmp_link(&mut core, deadline, limit)? {
            Link::Up => {}
            Link::Absent => return Err(Error::NoQmp(self.name.clone())),
            Link::Gone => {
                let what = match core.io.vms[i].exit {
                    Some(_) => {
                        format!("QEMU has exited, so the QMP command `{command}` cannot run")
                    }
                    None => format!("QEMU closed its QMP connection before `{command}` was sent"),
                };
                return Err(self.gone(&mut core, &what));
            }
        }
        // Replies to commands abandoned by a timeout or an interrupt are no one's.
        let link = &mut core.io.vms[i].qmp;
        link.replies.clear();
        let (id, bytes) = link.codec.command(command, args).map_err(|e| Error::Qmp {
            machine: self.name.clone(),
            reason: format!("cannot send `{command}`: {e}"),
        })?;
        if !core.io.vms[i].write_qmp(&bytes) {
            let what = format!("QEMU's QMP connection closed before `{command}` was sent");
            return Err(self.gone(&mut core, &what));
        }
        let reply = core.io.run_until(deadline, |io| {
            let link = &mut io.vms[i].qmp;
            if let Some(r) = link.replies.remove(&id) {
                Some(Some(r))
            } else if link.codec.is_closed() || !io.vms[i].qmp_connected() {
                Some(None)
            } else {
                None
            }
        })?;
        match reply {
            Some(Some(Ok(value))) => Ok(value),
            Some(Some(Err(QmpError { class, desc }))) => Err(Error::QmpCommandFailed {
                machine: self.name.clone(),
                command: command.to_string(),
                class,
                desc,
            }),
            Some(None) => {
                let what = format!("QEMU closed its QMP connection before answering `{command}`");
                Err(self.gone(&mut core, &what))
            }
            None => Err(Error::Timeout {
                machine: self.name.clone(),
                what: format!("QEMU's reply to the QMP command `{command}`"),
                after: limit,
                last: String::new(),
            }),
        }
    }

    /// Waits for the QMP connection to be set up (QEMU creates the socket right after it starts).
    fn qmp_link(&self, core: &mut Core, deadline: Instant, limit: Duration) -> Result<Link, Error> {
        let i = self.i;
        let vm = &core.io.vms[i];
        if !vm.started() && vm.exit.is_none() {
            return Err(Error::NotRunning(self.name.clone()));
        }
        core.io.run_until(deadline, |io| {
            let vm = &io.vms[i];
            match vm.qmp.status {
                Status::Connected if vm.exit.is_none() => Some(()),
                Status::Dialing { .. } if vm.exit.is_none() => None,
                _ => Some(()),
            }
        })?;
        let vm = &core.io.vms[i];
        if let Some(reason) = &vm.qmp.refused {
            return Err(Error::Qmp {
                machine: self.name.clone(),
                reason: reason.clone(),
            });
        }
        Ok(match vm.qmp.status {
            _ if vm.exit.is_some() => Link::Gone,
            Status::Connected => Link::Up,
            Status::Absent => Link::Absent,
            Status::Idle | Status::Closed => Link::Gone,
            Status::Dialing { .. } => {
                return Err(Error::Timeout {
                    machine: self.name.clone(),
                    what: "QEMU's QMP socket to appear".into(),
                    after: limit,
                    last: vm.context(20),
                })
            }
        })
    }

    /// Waits for a QMP event `filter` accepts, up to `timeout` (default 900 s) times the run's
    /// factor, and returns it. The filter runs outside the event loop, so it may call the driver.
    ///
    /// Which events count: the machine's events not consumed yet, oldest first — also those that
    /// arrived before the call — then those arriving during it. Every event the wait looks at is
    /// consumed, matched or not, and it stops at the first match; events after the match stay for
    /// the next wait. So an event that arrives between two waits is seen by the second. A timed-out
    /// wait consumed every event up to its end. If QEMU exits, a matching event it sent before is
    /// still returned; otherwise the wait fails at once. A new start of QEMU begins an empty queue.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.execute("echo o > /proc/sysrq-trigger &")?;
    /// let e = vm.wait_for_qmp_event(|e| e.name == "SHUTDOWN", Some(std::time::Duration::from_secs(60)))?;
    /// assert_eq!(e.data["guest"], true);
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_qmp_event(
        &self,
        filter: impl Fn(&QmpEvent) -> bool,
        timeout: Option<Duration>,
    ) -> Result<QmpEvent, Error> {
        self.wait_qmp_event("a QMP event accepted by the filter", &filter, timeout)
    }

    /// [`wait_for_qmp_event`](Self::wait_for_qmp_event) for the next event named `name`
    /// (`SHUTDOWN`, `STOP`, `RESUME`, `RESET`, `GUEST_PANICKED`, …).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.qmp_command("stop", None)?;
    /// vm.wait_for_qmp_event_named("STOP", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_qmp_event_named(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<QmpEvent, Error> {
        self.wait_qmp_event(&format!("QMP event {name}"), &|e| e.name == name, timeout)
    }

    /// The QMP events received and not yet looked at by a wait (or an earlier call), oldest first,
    /// without waiting for more: NixOS's `qmp_client.events()`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// for event in vm.take_qmp_events()? {
    ///     println!("{} {}", event.name, event.data);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_qmp_events(&self) -> Result<Vec<QmpEvent>, Error> {
        // One turn of the loop: events QEMU already sent are decoded.
        self.idle(Duration::ZERO)?;
        let mut core = self.core.borrow_mut();
        let qmp = &mut core.io.vms[self.i].qmp;
        let unseen: Vec<(u64, QmpEvent)> = qmp.unseen().cloned().collect();
        if let Some((seq, _)) = unseen.last() {
            qmp.cursor = seq + 1;
        }
        Ok(unseen.into_iter().map(|(_, e)| e).collect())
    }

    /// The wait behind both public forms; `what` names the event awaited in errors.
    fn wait_qmp_event(
        &self,
        what: &str,
        filter: &dyn Fn(&QmpEvent) -> bool,
        timeout: Option<Duration>,
    ) -> Result<QmpEvent, Error> {
        self.explained(None, || {
            let limit = self.limit(timeout);
            let _step = self.step(format!("waiting for {what}"));
            let i = self.i;
            let deadline = Instant::now() + limit;
            let mut exit_seen: Option<Instant> = None;
            loop {
                // The filter runs without the loop borrowed: it may call the driver.
                let unseen: Vec<(u64, QmpEvent)> =
                    self.core.borrow().io.vms[i].qmp.unseen().cloned().collect();
                for (seq, event) in unseen {
                    self.core.borrow_mut().io.vms[i].qmp.cursor = seq + 1;
                    if filter(&event) {
                        log::info!("{}: got {}", self.name, event.summary());
                        return Ok(event);
                    }
                }
                // (Events the bounded queue dropped before the wait saw them are skipped: the
                // cursor moved past them with the first later event looked at.)
                let mut core = self.core.borrow_mut();
                let vm = &core.io.vms[i];
                if !vm.started() && vm.exit.is_none() {
                    return Err(Error::NotRunning(self.name.clone()));
                }
                if let Some(reason) = &vm.qmp.refused {
                    return Err(Error::Qmp {
                        machine: self.name.clone(),
                        reason: reason.clone(),
                    });
                }
                if matches!(vm.qmp.status, Status::Absent) {
                    return Err(Error::NoQmp(self.name.clone()));
                }
                if vm.exit.is_some() {
                    // What QEMU wrote before it exited is read by now (its socket reached end of
                    // file), or was not coming.
                    let since = *exit_seen.get_or_insert_with(Instant::now);
                    if !vm.qmp_connected() || since.elapsed() >= EXIT_SETTLE {
                        let what = format!("QEMU exited while waiting for {what}");
                        return Err(self.gone(&mut core, &what));
                    }
                }
                // Without a QMP end of file, the settling time must still end the wait.
                let until = match exit_seen {
                    Some(since) => deadline.min(since + EXIT_SETTLE),
                    None => deadline,
                };
                let got = core.io.run_until(until, |io| {
                    let vm = &io.vms[i];
                    let changed = vm.qmp.has_unseen()
                        || matches!(vm.qmp.status, Status::Absent)
                        || vm.qmp.refused.is_some()
                        || match (vm.exit, exit_seen) {
                            (None, _) => false,
                            (Some(_), None) => true,
                            (Some(_), Some(since)) => {
                                !vm.qmp_connected() || since.elapsed() >= EXIT_SETTLE
                            }
                        };
                    changed.then_some(())
                })?;
                if got.is_none() && Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        machine: self.name.clone(),
                        what: what.to_string(),
                        after: limit,
                        last: core.io.vms[i].qmp.last_events(),
                    });
                }
            }
        })
    }
}
