//! The driver's errors, and the failure context a failed call carries ([`Error::WithContext`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Journal lines a failed unit wait shows.
pub(crate) const JOURNAL_LINES: usize = 50;

/// Errors of the driver API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A wait ran out of time.
    #[error("machine {machine}: timed out after {after:?} waiting for {what}; last seen:\n{last}")]
    Timeout {
        /// The machine waited on.
        machine: String,
        /// What was awaited.
        what: String,
        /// How long the wait lasted.
        after: Duration,
        /// The last thing seen (command output, console lines).
        last: String,
    },
    /// `succeed` got a non-zero exit status.
    #[error(
        "machine {machine}: command `{command}` failed (exit status {status}); output:\n{output}"
    )]
    CommandFailed {
        /// The machine.
        machine: String,
        /// The command text.
        command: String,
        /// Its exit status.
        status: i32,
        /// Its stdout.
        output: String,
    },
    /// `fail` got exit status 0.
    #[error("machine {machine}: command `{command}` unexpectedly succeeded; output:\n{output}")]
    UnexpectedSuccess {
        /// The machine.
        machine: String,
        /// The command text.
        command: String,
        /// Its stdout.
        output: String,
    },
    /// QEMU exited, or the guest closed the channel, while something was awaited.
    #[error("machine {machine}: {what}\n{context}")]
    MachineGone {
        /// The machine.
        machine: String,
        /// What happened and what was going on.
        what: String,
        /// QEMU's exit status and stderr, the last console lines.
        context: String,
    },
    /// A command needs the machine running, and it is not.
    #[error("machine {0}: not running")]
    NotRunning(String),
    /// The backdoor protocol desynchronised.
    #[error("machine {machine}: backdoor shell protocol lost: {reason}")]
    ShellLost {
        /// The machine.
        machine: String,
        /// What was seen.
        reason: String,
    },
    /// A polling condition (see [`Driver::with_polling_condition`]) did not hold.
    #[error("polling condition \"{name}\" failed: {reason}")]
    PollingConditionFailed {
        /// The condition's name.
        name: String,
        /// Why its check failed.
        reason: String,
    },
    /// The backdoor shell stopped answering (see the reason); commands fail at once until it returns.
    #[error("machine {machine}: {reason}")]
    ShellWedged {
        /// The machine.
        machine: String,
        /// Since when and why.
        reason: String,
    },
    /// A command printed more than the driver keeps in memory for one command.
    #[error("machine {machine}: the output of `{command}` exceeded {} MiB, so {outcome}; its last output:\n{last}", limit >> 20)]
    OutputTooLarge {
        /// The machine.
        machine: String,
        /// The command, shortened.
        command: String,
        /// The limit in bytes.
        limit: usize,
        /// Whether the command was stopped.
        outcome: String,
        /// The end of what it printed.
        last: String,
    },
    /// The command cannot be sent (e.g. it contains a NUL byte).
    #[error("machine {machine}: cannot send the command: {reason}")]
    BadCommand {
        /// The machine.
        machine: String,
        /// Why.
        reason: guest_shell::Error,
    },
    /// The monitor refused a command or desynchronised.
    #[error("machine {machine}: monitor: {reason}")]
    Monitor {
        /// The machine.
        machine: String,
        /// Why.
        reason: String,
    },
    /// QEMU answered a QMP command with an error.
    #[error("machine {machine}: QMP command `{command}` failed: {class}: {desc}")]
    QmpCommandFailed {
        /// The machine.
        machine: String,
        /// The command's name.
        command: String,
        /// QEMU's error class, e.g. `CommandNotFound`, `GenericError`.
        class: String,
        /// QEMU's description of the error.
        desc: String,
    },
    /// The machine's QEMU has no QMP socket: its start script does not pass the driver's `-qmp`
    /// option on to QEMU.
    #[error(
        "QEMU of machine {0} offers no QMP socket (its start script does not pass the driver's \
         -qmp option on to QEMU)"
    )]
    NoQmp(String),
    /// QMP cannot be used: QEMU refused the negotiation, or a command could not be built.
    #[error("machine {machine}: qmp: {reason}")]
    Qmp {
        /// The machine.
        machine: String,
        /// Why.
        reason: String,
    },
    /// No machine has this name.
    #[error("no machine named {name:?} (machines: {known})")]
    UnknownMachine {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// Two machines would have the same name.
    #[error("two machines are named {0:?}")]
    DuplicateMachine(String),
    /// Starting QEMU, naming a machine or preparing its state failed.
    #[error("machine {machine}: cannot start")]
    Start {
        /// The machine.
        machine: String,
        /// Why.
        #[source]
        source: qemu_proc::Error,
    },
    /// A regular expression did not compile.
    #[error("invalid regular expression {pattern:?}")]
    Regex {
        /// The pattern as given.
        pattern: String,
        /// Why it is invalid.
        #[source]
        source: regex::Error,
    },
    /// A systemd unit entered the `failed` state while it was awaited.
    #[error("machine {machine}: unit {unit} failed\n{status}")]
    UnitFailed {
        /// The machine.
        machine: String,
        /// The unit.
        unit: String,
        /// `systemctl status` of the unit.
        status: String,
    },
    /// A caught signal or the run's global timeout stopped what was going on.
    #[error("{reason}{}", while_clause(during))]
    Interrupted {
        /// The signal or the timeout.
        reason: String,
        /// The steps in progress, outermost first ([`crate::Activity::describe`]).
        during: String,
    },
    /// A virtual network could not be set up.
    #[error("vlan {number}: {what}")]
    Vlan {
        /// The VLAN number.
        number: u32,
        /// What went wrong.
        what: String,
        /// The process error, when starting the switch failed.
        #[source]
        source: Option<qemu_proc::Error>,
    },
    /// A call failed; what was known about its machine then follows the error ([`Error::cause`]
    /// is the error alone).
    #[error("{error}\n{context}")]
    WithContext {
        /// The failure.
        error: Box<Error>,
        /// The machine's console, unit state and screenshot at that moment.
        context: Box<FailureContext>,
    },
    /// KVM was required and cannot be used.
    #[error("KVM is required but cannot be used: {reason}")]
    KvmRequired {
        /// Which check failed.
        reason: String,
    },
    /// An option of the driver has a value it cannot use.
    #[error("invalid option: {0}")]
    BadOption(String),
    /// Setting up the run (state directory, accelerator probe) failed.
    #[error("cannot set up the run")]
    Setup(#[source] qemu_proc::Error),
    /// An operating-system call failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn while_clause(during: &str) -> String {
    if during.is_empty() {
        String::new()
    } else {
        format!(" while: {during}")
    }
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            what: "event loop".into(),
            source,
        }
    }
}

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
    /// What else the driver knows that may explain the failure (a machine on no VLAN).
    pub notes: Vec<String>,
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
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
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
    pub(crate) fn wants_context(&self) -> bool {
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
