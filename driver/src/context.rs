//! Failure context: what a failed call tells beyond its error, without the test asking — the
//! machine's last console lines, a unit's status and journal, a screenshot. Gathering is quick and
//! bounded, and never replaces the error it explains.

use crate::{Error, Machine};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Console lines a failure shows.
pub(crate) const CONSOLE_LINES: usize = 50;
/// Journal lines a failed unit wait shows.
const JOURNAL_LINES: usize = 50;
/// How long each command run to gather context may take (not scaled: it must stay short).
const GATHER_LIMIT: Duration = Duration::from_secs(10);

/// What was known about a machine when one of its calls failed.
#[derive(Clone, Debug, Default)]
pub struct FailureContext {
    /// The machine.
    pub machine: String,
    /// Its last serial console lines, oldest first.
    pub console: Vec<String>,
    /// For a failed unit wait: the unit's state as systemd tells it.
    pub unit: Option<UnitContext>,
    /// A PNG of the machine's display, in the output directory.
    pub screenshot: Option<PathBuf>,
    /// What could not be gathered, and why.
    pub missing: Vec<String>,
}

/// A unit's state at the moment a wait on it failed.
#[derive(Clone, Debug, Default)]
pub struct UnitContext {
    /// The unit.
    pub unit: String,
    /// `systemctl status <unit>`; empty when the error shows it already.
    pub status: String,
    /// Its last journal lines.
    pub journal: String,
}

impl fmt::Display for FailureContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- context of machine {} ---", self.machine)?;
        if let Some(u) = &self.unit {
            if !u.status.is_empty() {
                writeln!(f, "systemctl status {}:", u.unit)?;
                write_indented(f, &u.status)?;
            }
            writeln!(f, "journal of {} (last {JOURNAL_LINES} lines):", u.unit)?;
            write_indented(f, &u.journal)?;
        }
        if self.console.is_empty() {
            writeln!(f, "(nothing on the serial console)")?;
        } else {
            writeln!(f, "last {} console lines:", self.console.len())?;
            for l in &self.console {
                writeln!(f, "  {}# {l}", self.machine)?;
            }
        }
        if let Some(p) = &self.screenshot {
            writeln!(f, "screenshot: {}", p.display())?;
        }
        for m in &self.missing {
            writeln!(f, "(not gathered: {m})")?;
        }
        Ok(())
    }
}

fn write_indented(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for l in text.trim_end().lines() {
        writeln!(f, "  {l}")?;
    }
    Ok(())
}

impl Error {
    /// The error itself, without the context a failed call carries.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) {
    /// let err = vm.succeed("false").unwrap_err();
    /// assert!(matches!(err.cause(), driver::Error::CommandFailed { status: 1, .. }));
    /// # }
    /// ```
    pub fn cause(&self) -> &Error {
        match self {
            Error::WithContext { error, .. } => error.cause(),
            e => e,
        }
    }

    /// What was known about the machine when the call failed, if it was gathered.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) {
    /// let err = vm.succeed("false").unwrap_err();
    /// println!("{:?}", err.context().map(|c| &c.console));
    /// # }
    /// ```
    pub fn context(&self) -> Option<&FailureContext> {
        match self {
            Error::WithContext { context, .. } => Some(context),
            _ => None,
        }
    }

    /// Failures of the test (not of its setup, and not an interrupt) that context helps explain.
    fn wants_context(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::CommandFailed { .. }
                | Error::UnexpectedSuccess { .. }
                | Error::UnitFailed { .. }
                | Error::ShellLost { .. }
                | Error::ShellWedged { .. }
                | Error::OutputTooLarge { .. }
        )
    }
}

impl Machine {
    /// Runs `f`; if it fails, and no call around it gathers context already, attaches the context of
    /// this machine (with `unit`'s status and journal when given).
    pub(crate) fn explained<T>(
        &self,
        unit: Option<&str>,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let outermost = self.core.borrow().explaining == 0;
        self.core.borrow_mut().explaining += 1;
        let result = f();
        match result {
            Err(e) if outermost && e.wants_context() => {
                // A failed unit's error shows its status already.
                let status = !matches!(e, Error::UnitFailed { .. });
                let context = self.gather(unit, status);
                self.core.borrow_mut().explaining -= 1;
                log::debug!("{}: failure context gathered", self.name);
                Err(Error::WithContext {
                    error: Box::new(e),
                    context: Box::new(context),
                })
            }
            r => {
                self.core.borrow_mut().explaining -= 1;
                r
            }
        }
    }

    fn gather(&self, unit: Option<&str>, status: bool) -> FailureContext {
        let mut context = FailureContext {
            machine: self.name.clone(),
            console: self.core.borrow().vms[self.i].console.tail(CONSOLE_LINES),
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
                    core.failure_screenshots += 1;
                    core.failure_screenshots
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
        if !self.is_up() || self.core.borrow().vms[self.i].shell_held {
            return Err("the backdoor shell is not available".into());
        }
        let quoted = crate::waits::sh_quote(unit);
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

    /// Takes a screenshot of the display as PNG into `path`, with the monitor given `limit`.
    pub(crate) fn screenshot_within(&self, path: &Path, limit: Duration) -> Result<(), Error> {
        let image = self.screen_within(limit)?;
        image.write_png(path).map_err(|source| Error::Io {
            what: format!("machine {}: writing {}", self.name, path.display()),
            source,
        })?;
        let core = self.core.borrow();
        let recorder = core.activity.recorder();
        let event = crate::record::MachineEvent::Screenshot {
            t: recorder.now(),
            path: path.to_path_buf(),
        };
        recorder.event(&self.name, event);
        Ok(())
    }
}
