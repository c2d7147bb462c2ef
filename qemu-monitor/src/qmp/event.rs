//! What the codec reports: QEMU's greeting and version, replies, asynchronous events, and the
//! problems it skipped.
//!
//! Plain data: it depends only on [`error`](super::error) for [`QmpError`].

use super::error::QmpError;
use serde_json::Value;
use std::fmt;

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Version {
    /// Major version number (7 for QEMU 7.2.22).
    pub major: u64,
    /// Minor version number (2 for QEMU 7.2.22).
    pub minor: u64,
    /// Micro version number (22 for QEMU 7.2.22).
    pub micro: u64,
    /// The build's package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`; often empty.
    pub package: String,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        if !self.package.is_empty() {
            write!(f, " ({})", self.package)?;
        }
        Ok(())
    }
}

/// QEMU's greeting: `{"QMP": {"version": …, "capabilities": […]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Greeting {
    /// The version of the QEMU at the other end.
    pub version: Version,
    /// Capabilities QEMU offers (e.g. `oob`); none are enabled by
    /// [`Qmp::capabilities`](super::Qmp::capabilities).
    pub capabilities: Vec<String>,
}

/// When QEMU emitted an event, as it reports it (seconds and microseconds since the Unix epoch; both
/// -1 if QEMU could not read its clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Whole seconds.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

/// What the codec learned from the bytes fed to it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// QEMU's greeting, the first message of every connection.
    Greeting(Greeting),
    /// QEMU accepted `qmp_capabilities`: commands run and events flow.
    Ready,
    /// QEMU refused `qmp_capabilities`; further commands are refused by
    /// [`Qmp::command`](super::Qmp::command). Replies to commands already written still arrive
    /// (QEMU refuses them one by one).
    NegotiationFailed(QmpError),
    /// The reply to the command with this id: its `return` value, or its `error`.
    Reply {
        /// The id [`Qmp::command`](super::Qmp::command) returned for the command.
        id: u64,
        /// `Ok(return value)` (often `{}`), or the error QEMU reported.
        result: Result<Value, QmpError>,
    },
    /// An asynchronous event, e.g. `SHUTDOWN`, `STOP`, `RESUME`, `RESET`.
    Async {
        /// The event's name.
        name: String,
        /// Its `data` member; `Value::Null` if it had none.
        data: Value,
        /// Its `timestamp` member, if it had a well-formed one.
        timestamp: Option<Timestamp>,
    },
    /// A line that is not a QMP message (not JSON, not an object, a reply for an unknown id, …);
    /// it was skipped and decoding goes on.
    Garbage {
        /// What is wrong with it.
        reason: String,
        /// The start of the offending text, control characters escaped.
        excerpt: String,
    },
    /// A line longer than the limit; it is skipped up to its `\n`, and decoding goes on.
    TooLong {
        /// The limit in bytes ([`Qmp::max_message`](super::Qmp::max_message)).
        limit: usize,
        /// The start of the line, control characters escaped.
        excerpt: String,
    },
    /// The connection reached end of file; reported once, last.
    Closed {
        /// Ids of the commands (0: `qmp_capabilities`) that never got a reply, in ascending order.
        pending: Vec<u64>,
        /// The start of an unfinished message cut off by the end of file, with its length.
        partial: Option<String>,
    },
}
