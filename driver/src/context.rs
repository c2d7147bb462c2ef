//! Failure context: what a failed call tells beyond its error, without the test asking — the
//! machine's last console lines, a unit's status and journal, a screenshot. Gathering is quick and
//! bounded, and never replaces the error it explains.

use crate::error::JOURNAL_LINES;
use crate::machine::CONSOLE_LINES;
use crate::{Error, FailureContext, Machine, UnitContext};

use std::time::Duration;

/// How long each command run to gather context may take (not scaled: it must stay short).
const GATHER_LIMIT: Duration = Duration::from_secs(10);

/// Screenshots taken for failures so far, to number their files.
#[derive(Default)]
struct FailureScreenshots(usize);

/// The failure-context hook ([`crate::machine::Hooks::explain`]): what is known about `m` as a
/// call on it failed with `error`.
pub(crate) fn gather(m: &Machine, unit: Option<&str>, error: &Error) -> FailureContext {
    // A failed unit's error shows its status already.
    let status = !matches!(error, Error::UnitFailed { .. });
    let mut context = m.gather(unit, status);
    // A wait on the network that timed out may never have had a network to wait on.
    if matches!(error, Error::Timeout { .. }) {
        context.notes.extend(crate::nics::no_vlan_note(m));
    }
    context
}

impl Machine {
    fn gather(&self, unit: Option<&str>, status: bool) -> FailureContext {
        let mut context = FailureContext {
            machine: self.name.clone(),
            console: self.core.borrow().io.vms[self.i]
                .console
                .tail(CONSOLE_LINES),
            ..FailureContext::default()
        };
        if let Some(unit) = unit {
            match self.unit_context(unit, status) {
                Ok(u) => context.unit = Some(u),
                Err(why) => context
                    .missing
                    .push(format!("the state of unit {unit}: {why}")),
            }
        }
        let output_dir = self.core.borrow().output_dir.clone();
        match output_dir {
            None => {}
            Some(_) if !self.is_running() => {}
            Some(dir) => {
                let n = {
                    let mut core = self.core.borrow_mut();
                    let taken = &mut core.ext.get::<FailureScreenshots>().0;
                    *taken += 1;
                    *taken
                };
                let path = dir.join(format!("{}-failure-{n}.png", self.name));
                match self.screenshot_within(&path, GATHER_LIMIT) {
                    Ok(()) => context.screenshot = Some(path),
                    // No display device: nothing to show, and nothing worth a line.
                    Err(e) if e.to_string().contains("no display") => {}
                    Err(e) => context.missing.push(format!("a screenshot: {e}")),
                }
            }
        }
        context
    }

    /// `systemctl status` and the journal of `unit`, unless the shell still runs an abandoned
    /// command (asking would only time out).
    fn unit_context(&self, unit: &str, status: bool) -> Result<UnitContext, String> {
        if !self.is_up() || self.core.borrow().io.vms[self.i].shell_held {
            return Err("the backdoor shell is not available".into());
        }
        let quoted = crate::text::sh_quote(unit);
        let run = |cmd: String| {
            self.execute_for(&format!("{cmd} 2>&1"), GATHER_LIMIT)
                .map(|(_, out)| out)
                .map_err(|e| e.to_string())
        };
        Ok(UnitContext {
            unit: unit.to_string(),
            status: match status {
                true => run(format!("systemctl --no-pager -l status {quoted}"))?,
                false => String::new(),
            },
            journal: run(format!(
                "journalctl --no-pager -n {JOURNAL_LINES} -u {quoted}"
            ))?,
        })
    }
}
