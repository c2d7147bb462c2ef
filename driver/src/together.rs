//! Several machines served together: commands sent to all of them before any reply is awaited,
//! and waits that poll all of them in one loop (NixOS waits on one machine at a time).

use crate::core::{Core, Ended};
use crate::waits::{sh_quote, MAX_PACED_DELAY, POLL_DUTY};
use crate::{Driver, Error, Machine};
use std::time::{Duration, Instant};

/// Pause between rounds of a joint wait (each round polls every machine still waited for).
const ROUND_PAUSE: Duration = Duration::from_millis(100);

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
        for (m, _) in commands {
            m.connect()?;
        }
        crate::polling::check_polling_conditions(&self.core)?;
        let limit = timeout
            .unwrap_or(crate::DEFAULT_TIMEOUT)
            .mul_f64(self.timeout_factor());
        let mut core = self.core.borrow_mut();
        for (m, cmd) in commands {
            m.send(&mut core, cmd.as_bytes())?;
        }
        let t0 = Instant::now();
        let mut outs: Vec<Vec<u8>> = vec![Vec::new(); commands.len()];
        let mut ends: Vec<Option<Result<i32, String>>> = vec![None; commands.len()];
        let finished = core.run_until(t0 + limit, |core| {
            for (k, (m, _)) in commands.iter().enumerate() {
                if ends[k].is_none() {
                    ends[k] = collect(core, m, &mut outs[k]);
                }
            }
            ends.iter().all(Option::is_some).then_some(())
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
                    core.vms[m.i].abandon_command();
                }
            }
            return Err(e);
        }
        let mut replies = Vec::new();
        for (k, (m, cmd)) in commands.iter().enumerate() {
            match ends[k].take() {
                Some(Ok(status)) => {
                    replies.push((status, String::from_utf8_lossy(&outs[k]).into_owned()))
                }
                Some(Err(what)) => {
                    stop_unfinished(&mut core, commands, &ends);
                    // A panic is named by `gone` itself.
                    let what = format!("{what} while running `{cmd}`");
                    return Err(m.gone(&mut core, what.trim_start()));
                }
                None => {
                    stop_unfinished(&mut core, commands, &ends);
                    return Err(Error::Timeout {
                        machine: m.name.clone(),
                        what: format!("command `{cmd}` to finish (run on several machines)"),
                        after: limit,
                        last: crate::machine::tail_text(&outs[k], 2000),
                    });
                }
            }
        }
        Ok(replies)
    }

    /// Waits until `unit` is active on every one of `machines`, polling them together (one round
    /// asks all machines still waited for at once); fails at once if it fails on any of them.
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
            let limit = timeout
                .unwrap_or(crate::DEFAULT_TIMEOUT)
                .mul_f64(self.timeout_factor());
            let t0 = Instant::now();
            let probe = format!("systemctl show -p ActiveState --value {}", sh_quote(unit));
            let mut pending: Vec<&Machine> = machines.to_vec();
            loop {
                let left = limit.saturating_sub(t0.elapsed());
                let tried = Instant::now();
                let round: Vec<(&Machine, &str)> =
                    pending.iter().map(|m| (*m, probe.as_str())).collect();
                let replies =
                    self.execute_on_all(&round, Some(left.max(Duration::from_secs(1))))?;
                let mut still = Vec::new();
                for (m, (_, state)) in pending.iter().zip(replies) {
                    match state.trim() {
                        "active" => {}
                        // The unit's own wait explains a failure with its status and journal.
                        "failed" => return m.wait_for_unit(unit, Some(Duration::from_secs(1))),
                        _ => still.push(*m),
                    }
                }
                pending = still;
                if pending.is_empty() {
                    return Ok(());
                }
                let left = limit.saturating_sub(t0.elapsed());
                if left.is_zero() {
                    let names: Vec<&str> = pending.iter().map(|m| m.name.as_str()).collect();
                    return Err(Error::Timeout {
                        machine: names.join(", "),
                        what: format!("unit {unit} to be active"),
                        after: limit,
                        last: String::new(),
                    });
                }
                let pause = ROUND_PAUSE.max((tried.elapsed() * POLL_DUTY).min(MAX_PACED_DELAY));
                self.sleep(pause.min(left))?;
            }
        })
    }
}

/// Takes machine `m`'s shell events: Some once its command ended (status, or what ended it).
fn collect(core: &mut Core, m: &Machine, out: &mut Vec<u8>) -> Option<Result<i32, String>> {
    let ended = core.take_command_events(m.i, |b| {
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
            core.interrupt_command(m.i);
        }
    }
}
