//! Errors: what the command builder refuses, and what QEMU refuses.
//!
//! The bottom layer: it depends on nothing else in `qmp`.

/// Errors from [`Qmp::capabilities`](super::Qmp::capabilities) and
/// [`Qmp::command`](super::Qmp::command).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command was built before [`Qmp::capabilities`](super::Qmp::capabilities); QEMU would
    /// refuse it.
    #[error("capabilities negotiation has not been started (call `capabilities` first)")]
    NotNegotiated,
    /// [`Qmp::capabilities`](super::Qmp::capabilities) was called a second time.
    #[error("capabilities negotiation was already started")]
    AlreadyNegotiating,
    /// `qmp_capabilities` was passed to [`Qmp::command`](super::Qmp::command);
    /// [`Qmp::capabilities`](super::Qmp::capabilities) sends it.
    #[error("qmp_capabilities is sent by `capabilities`, not as a command")]
    CapabilitiesCommand,
    /// The arguments of a command were not a JSON object, which QEMU requires.
    #[error("command arguments must be a JSON object, not {found}")]
    ArgumentsNotObject {
        /// The JSON type given instead: `null`, `boolean`, `number`, `string` or `array`.
        found: &'static str,
    },
    /// QEMU refused `qmp_capabilities`, so it refuses every command.
    #[error("capabilities negotiation failed: {0}")]
    NegotiationFailed(QmpError),
    /// The connection reached end of file.
    #[error("the qmp connection is closed")]
    Closed,
}

/// An error reply from QEMU: `{"error": {"class": …, "desc": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {desc}")]
pub struct QmpError {
    /// The error class, e.g. `GenericError`, `CommandNotFound`, `DeviceNotFound`.
    pub class: String,
    /// The human-readable description.
    pub desc: String,
}
