//! Python exceptions and the driver's errors: where a script failed (`file:line: Type: message`,
//! the innermost frame in the script), and driver errors as the exceptions, with the words,
//! NixOS's driver raises.

use pyo3::exceptions::{PyRuntimeError, PySyntaxError};
use pyo3::prelude::*;

/// A syntax error as `file:line:column: syntax error: message`.
pub fn syntax_error(py: Python<'_>, e: &PyErr, shown: &str) -> anyhow::Error {
    if !e.is_instance_of::<PySyntaxError>(py) {
        return anyhow::anyhow!("{shown}: cannot compile: {}", describe(py, e));
    }
    let v = e.value(py);
    let get = |k: &str| v.getattr(k).ok().and_then(|x| x.extract::<i64>().ok());
    let msg = v
        .getattr("msg")
        .and_then(|m| m.extract::<String>())
        .unwrap_or_else(|_| describe(py, e));
    anyhow::anyhow!(
        "{shown}:{}:{}: syntax error: {msg}",
        get("lineno").unwrap_or(0),
        get("offset").unwrap_or(0)
    )
}

/// An exception as Python prints its last line: `Type: message`, or `Type` alone.
pub fn describe(py: Python<'_>, e: &PyErr) -> String {
    let name = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let text = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    if text.is_empty() {
        name
    } else {
        format!("{name}: {text}")
    }
}

/// The innermost line of the script in `e`'s traceback (`None` when it did not reach the script).
fn script_line(py: Python<'_>, e: &PyErr, shown: &str) -> Option<i64> {
    let mut tb = e.traceback(py).map(|t| t.into_any());
    let mut line = None;
    while let Some(t) = tb.filter(|t| !t.is_none()) {
        let file: Option<String> = t
            .getattr("tb_frame")
            .and_then(|f| f.getattr("f_code"))
            .and_then(|c| c.getattr("co_filename"))
            .and_then(|f| f.extract())
            .ok();
        if file.as_deref() == Some(shown) {
            line = t.getattr("tb_lineno").and_then(|l| l.extract()).ok();
        }
        tb = t.getattr("tb_next").ok();
    }
    line
}

/// An exception as the run's error: `file:line: {what}Type: message`, at the line the script's
/// innermost frame was at.
pub fn locate(py: Python<'_>, e: &PyErr, shown: &str, what: &str) -> String {
    match script_line(py, e, shown) {
        Some(line) => format!("{shown}:{line}: {what}{}", describe(py, e)),
        None => format!("{shown}: {what}{}", describe(py, e)),
    }
}

/// The exception inside `e` when `e` is the prelude's `SubtestFailed` (the `SystemExit` a failed
/// subtest leaves by, as NixOS's logger exits), else `e`: the run's error names the real failure.
pub fn subtest_failure(py: Python<'_>, e: PyErr) -> PyErr {
    let inner = py
        .import("test_driver")
        .and_then(|m| m.getattr("SubtestFailed"))
        .ok()
        .filter(|class| e.value(py).is_instance(class).unwrap_or(false))
        .and_then(|_| e.value(py).getattr("error").ok())
        .filter(|inner| !inner.is_none());
    match inner {
        Some(inner) => PyErr::from_value(inner),
        None => e,
    }
}

/// Logs the traceback Python would print.
pub fn log_traceback(py: Python<'_>, e: &PyErr) {
    let Ok(lines) = py
        .import("traceback")
        .and_then(|t| t.getattr("format_exception")?.call1((e.value(py),)))
        .and_then(|l| l.extract::<Vec<String>>())
    else {
        return;
    };
    for line in lines.concat().trim_end().lines() {
        log::info!("{line}");
    }
}

/// An exception of the class `name` of `test_driver.errors` (the prelude's) saying `message`.
pub fn raise(py: Python<'_>, name: &str, message: String) -> PyErr {
    match py
        .import("test_driver.errors")
        .and_then(|m| m.getattr(name))
    {
        Ok(class) => match class.call1((message.clone(),)) {
            Ok(e) => PyErr::from_value(e),
            Err(_) => PyRuntimeError::new_err(message),
        },
        Err(_) => PyRuntimeError::new_err(message),
    }
}

/// A driver error as NixOS's driver would raise it: the first line in NixOS's words (scripts match
/// on them), the driver's full explanation (output, console, unit state) on the lines after. An
/// interrupt is `Interrupted`, which `except Exception` does not catch.
pub fn driver_error(py: Python<'_>, e: driver::Error) -> PyErr {
    let words = nixos_words(e.cause());
    let full = format!("{:#}", anyhow::Error::from(e));
    match words {
        Some((class, first)) if full.starts_with(&first) => raise(py, class, full),
        Some((class, first)) => raise(py, class, format!("{first}\n{full}")),
        None => raise(py, "RequestedAssertionFailed", full),
    }
}

/// NixOS's exception class and first line for the driver error `e`, where NixOS words it
/// otherwise than the driver.
fn nixos_words(e: &driver::Error) -> Option<(&'static str, String)> {
    use driver::Error::*;
    match e {
        CommandFailed {
            command, status, ..
        } => Some((
            "RequestedAssertionFailed",
            format!("command `{command}` failed (exit code {status})"),
        )),
        UnexpectedSuccess { command, .. } => Some((
            "RequestedAssertionFailed",
            format!("command `{command}` unexpectedly succeeded"),
        )),
        Timeout { after, .. } => Some((
            "RequestedAssertionFailed",
            format!("action timed out after {:.1} seconds", after.as_secs_f64()),
        )),
        Interrupted { .. } => Some(("Interrupted", e.to_string())),
        PollingConditionFailed { name, .. } => Some((
            "PollingConditionError",
            format!("Polling condition failed: {name}"),
        )),
        NotRunning(..) | MachineGone { .. } | ShellLost { .. } => {
            Some(("MachineError", e.to_string().lines().next()?.to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::nixos_words;
    use std::time::Duration;

    #[test]
    fn driver_errors_get_nixos_words() {
        let w = |e: driver::Error| nixos_words(&e).map(|(_, t)| t);
        let failed = driver::Error::CommandFailed {
            machine: "a".into(),
            command: "false".into(),
            status: 1,
            output: String::new(),
        };
        assert_eq!(
            w(failed).as_deref(),
            Some("command `false` failed (exit code 1)")
        );
        let succeeded = driver::Error::UnexpectedSuccess {
            machine: "a".into(),
            command: "true".into(),
            output: String::new(),
        };
        assert_eq!(
            w(succeeded).as_deref(),
            Some("command `true` unexpectedly succeeded")
        );
        let timeout = driver::Error::Timeout {
            machine: "a".into(),
            what: "x".into(),
            after: Duration::from_secs(5),
            last: String::new(),
        };
        assert_eq!(
            w(timeout).as_deref(),
            Some("action timed out after 5.0 seconds")
        );
    }
}
