//! A Rhai error as a person reads it: the message of the call that failed (not Rhai's wrapping
//! of every function it passed through), at the script's `file:line:column`.

use rhai::{EvalAltResult, Position};

/// The message of the error that started a chain of calls (without Rhai's decoration), and where
/// it happened: the failing command's line rather than the closure that called it.
pub fn innermost(e: &EvalAltResult) -> (String, Position) {
    let inner = e.unwrap_inner();
    let at = match inner.position() {
        p if p.is_none() => e.position(),
        p => p,
    };
    let message = match inner {
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        EvalAltResult::ErrorTerminated(v, _) => v.to_string(),
        // Most often a machine name that no start script gave.
        EvalAltResult::ErrorVariableNotFound(name, _) => format!(
            "Variable not found: {name} (no machine or variable of that name; a start script \
             run-<name>-vm makes a machine <name>)"
        ),
        other => {
            let text = other.to_string();
            let suffix = format!(" ({})", inner.position());
            text.strip_suffix(&suffix).unwrap_or(&text).to_string()
        }
    };
    (message, at)
}

/// A script's error as `file:line:column: message`; an interrupt's termination gives its reason.
pub fn located(path: &std::path::Path, e: &EvalAltResult) -> String {
    let (message, at) = innermost(e);
    format!(
        "{}:{}:{}: {message}",
        path.display(),
        at.line().unwrap_or(0),
        at.position().unwrap_or(0)
    )
}
