//! Several machines served together: commands sent to all of them before any reply is awaited,
//! and unit waits on all of them at once (NixOS waits on one machine at a time).

use crate::commands::interrupt_command;
use crate::core::Core;
use crate::event_loop::{Ended, Loop};
use crate::machine::{Driver, Machine};
use crate::systemd::UnitWaiter;
use crate::text::parse_properties;
use crate::Error;
use std::time::{Duration, Instant};

/// For cancelling the waits of a joint unit wait (a `systemctl stop --no-block` and a `show`).
const CANCEL_LIMIT: Duration = Duration::from_secs(10);

impl Driver {
    /// Runs one command on each machine at once: all are sent before any reply is awaited, so the
    /// machines work in parallel. Returns each exit status and output, in order; fails on the first
    /// machine (in order) whose command could not finish, stopping the commands still running.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver, a: &driver::Machine, b: &driver::Machine) -> Result<(), driver::Error> {
    /// let replies = driver.execute_on_all(&[(a, "uname -r"), (b, "uname -r")], None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn execute_on_all(
        &self,
        commands: &[(&Machine, &str)],
        timeout: Option<Duration>,
    ) -> Result<Vec<(i32, String)>, Error> {
        for (k, (m, _)) in commands.iter().enumerate() {
            if commands[..k].iter().any(|(other, _)| other.i == m.i) {
                return Err(Error::BadOption(format!(
                    "execute_on_all: machine {} is named twice (one command per machine)",
                    m.name
                )));
            }
        }
        let limit = timeout
            .unwrap_or(crate::DEFAULT_TIMEOUT)
            .mul_f64(self.timeout_factor());
        let replies = self.run_on_all(commands, limit, |_, _| false)?;
        Ok(replies
            .into_iter()
            .map(|reply| reply.expect("nothing ends the round early"))
            .collect())
    }

    /// Runs `commands` at once, each within `limit`, until all have ended or one whose reply
    /// `ends_round(status, output)` accepts has: those still running are then stopped in the guest
    /// and read `None`.
    fn run_on_all(
        &self,
        commands: &[(&Machine, &str)],
        limit: Duration,
        ends_round: impl Fn(i32, &[u8]) -> bool,
    ) -> Result<Vec<Option<(i32, String)>>, Error> {
        for (m, _) in commands {
            m.connect()?;
        }
        crate::polling::check_polling_conditions(&self.core)?;
        let mut core = self.core.borrow_mut();
        for (m, cmd) in commands {
            m.send(&mut core, cmd.as_bytes())?;
        }
        let t0 = Instant::now();
        let mut outs: Vec<Vec<u8>> = vec![Vec::new(); commands.len()];
        let mut ends: Vec<Option<Result<i32, String>>> = vec![None; commands.len()];
        let mut early = false;
        let finished = core.io.run_until(t0 + limit, |io| {
            for (k, (m, _)) in commands.iter().enumerate() {
                if ends[k].is_none() {
                    ends[k] = collect(io, m, &mut outs[k]);
                    if let Some(Ok(status)) = ends[k] {
                        early |= ends_round(status, &outs[k]);
                    }
                }
            }
            (early || ends.iter().all(Option::is_some)).then_some(())
        });
        for (k, (m, cmd)) in commands.iter().enumerate() {
            let status = match &ends[k] {
                Some(Ok(status)) => Some(*status),
                _ => None,
            };
            core.activity
                .recorder()
                .command(&m.name, t0, cmd, status, &outs[k]);
        }
        if let Err(e) = finished {
            for (k, (m, _)) in commands.iter().enumerate() {
                if ends[k].is_none() {
                    core.io.vms[m.i].abandon_command();
                }
            }
            return Err(e);
        }
        let mut replies = Vec::new();
        for (k, (m, cmd)) in commands.iter().enumerate() {
            // Not taken out of `ends`: stop_unfinished reads which commands are still running.
            match &ends[k] {
                Some(Ok(status)) => replies.push(Some((
                    *status,
                    String::from_utf8_lossy(&outs[k]).into_owned(),
                ))),
                Some(Err(what)) => {
                    stop_unfinished(&mut core, commands, &ends);
                    // A panic is named by `gone` itself.
                    let what = format!("{what} while running `{cmd}`");
                    return Err(m.gone(&mut core, what.trim_start()));
                }
                None if early => replies.push(None),
                None => {
                    stop_unfinished(&mut core, commands, &ends);
                    return Err(Error::Timeout {
                        machine: m.name.clone(),
                        what: format!("command `{cmd}` to finish (run on several machines)"),
                        after: limit,
                        last: crate::text::tail_text(&outs[k], 2000),
                    });
                }
            }
        }
        if early {
            stop_unfinished(&mut core, commands, &ends);
        }
        Ok(replies)
    }

    /// Waits until `unit` is active on every one of `machines`, on all of them at once (in each
    /// guest systemd says when the unit's job has ended, as for [`Machine::wait_for_unit`]); fails
    /// as soon as it fails on any of them.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver, a: &driver::Machine, b: &driver::Machine) -> Result<(), driver::Error> {
    /// driver.start_all()?;
    /// driver.wait_for_unit_on_all(&[a, b], "multi-user.target", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_unit_on_all(
        &self,
        machines: &[&Machine],
        unit: &str,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let names: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
        let what = format!("unit {unit} on {}", names.join(", "));
        self.nested(&format!("waiting for {what}"), || {
            let factor = self.timeout_factor();
            let limit = timeout.unwrap_or(crate::DEFAULT_TIMEOUT).mul_f64(factor);
            let t0 = Instant::now();
            let active = |status: i32, out: &str| {
                status == 0
                    && parse_properties(out).get("ActiveState").map(String::as_str)
                        == Some("active")
            };
            let mut pending: Vec<&Machine> = machines.to_vec();
            while !pending.is_empty() {
                let left = limit.saturating_sub(t0.elapsed());
                // A fresh fallback scope name each round: a cancelled one may linger a moment.
                let waiter = UnitWaiter::new(unit, None);
                let round: Vec<(&Machine, &str)> =
                    pending.iter().map(|m| (*m, waiter.wait.as_str())).collect();
                // Any other answer ends the round: that machine's own wait tells why.
                let ends_round =
                    |status, out: &[u8]| !active(status, &String::from_utf8_lossy(out));
                let replies =
                    match self.run_on_all(&round, left.max(Duration::from_secs(1)), ends_round) {
                        Ok(replies) => replies,
                        Err(Error::Timeout { .. }) => {
                            return self.unit_wait_timed_out(&pending, unit, &waiter, limit)
                        }
                        Err(e) => return Err(e),
                    };
                let stopped: Vec<&Machine> = pending
                    .iter()
                    .zip(&replies)
                    .filter(|(_, reply)| reply.is_none())
                    .map(|(m, _)| *m)
                    .collect();
                // Their start jobs stay queued in the guests until cancelled. (No empty round: it
                // would still run the polling conditions.)
                if !stopped.is_empty() {
                    let cancels: Vec<(&Machine, &str)> = stopped
                        .iter()
                        .map(|m| (*m, waiter.cancel.as_str()))
                        .collect();
                    self.execute_on_all(&cancels, Some(CANCEL_LIMIT))?;
                }
                for (m, reply) in pending.iter().zip(&replies) {
                    match reply {
                        Some((status, out)) if !active(*status, out) => {
                            let left = limit.saturating_sub(t0.elapsed()).div_f64(factor);
                            m.wait_for_unit(unit, Some(left))?;
                        }
                        _ => {}
                    }
                }
                pending = stopped;
            }
            Ok(())
        })
    }

    /// After a joint unit wait timed out: cancels the waits still queued and names the machines
    /// whose unit is not active, with its state.
    fn unit_wait_timed_out(
        &self,
        pending: &[&Machine],
        unit: &str,
        waiter: &UnitWaiter,
        limit: Duration,
    ) -> Result<(), Error> {
        let cancels: Vec<(&Machine, &str)> = pending
            .iter()
            .map(|m| (*m, waiter.cancel.as_str()))
            .collect();
        let states = self.execute_on_all(&cancels, Some(CANCEL_LIMIT))?;
        let mut late = Vec::new();
        let mut last = Vec::new();
        for (m, (_, out)) in pending.iter().zip(states) {
            let info = parse_properties(&out);
            let state = |key: &str| info.get(key).cloned().unwrap_or_default();
            if state("ActiveState") != "active" {
                late.push(m.name.as_str());
                last.push(format!(
                    "{}: ActiveState={} SubState={}",
                    m.name,
                    state("ActiveState"),
                    state("SubState")
                ));
            }
        }
        if late.is_empty() {
            // Every unit turned active as the wait ended.
            return Ok(());
        }
        Err(Error::Timeout {
            machine: late.join(", "),
            what: format!("unit {unit} to be active"),
            after: limit,
            last: last.join("; "),
        })
    }
}

/// Takes machine `m`'s shell events: Some once its command ended (status, or what ended it).
fn collect(io: &mut Loop, m: &Machine, out: &mut Vec<u8>) -> Option<Result<i32, String>> {
    let ended = io.vms[m.i].take_command_events(|b| {
        out.extend_from_slice(b);
        true
    })?;
    Some(match ended {
        Ended::Exited(status) => Ok(status),
        Ended::Closed => Err("the backdoor shell closed".into()),
        Ended::Lost(reason) => Err(format!("the backdoor protocol was lost ({reason})")),
        // A panic is named by `gone` itself.
        Ended::Panicked | Ended::Refused => Err(String::new()),
    })
}

/// Stops, in the guests, the commands of `commands` that have not ended.
fn stop_unfinished(
    core: &mut Core,
    commands: &[(&Machine, &str)],
    ends: &[Option<Result<i32, String>>],
) {
    for (k, (m, _)) in commands.iter().enumerate() {
        if ends[k].is_none() {
            interrupt_command(core, m.i);
        }
    }
}
