//! How bad input is described in events and errors: excerpts and JSON type names.
//!
//! A bottom layer: it depends on nothing else in `qmp`.

use serde_json::Value;

/// Longest excerpt of a bad line kept in an event, in bytes.
pub(super) const EXCERPT: usize = 200;

/// The name of a JSON value's type, as errors and garbage reasons give it.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The start of `bytes` for an event, marked with `…` if cut.
pub(super) fn excerpt(bytes: &[u8]) -> String {
    let mut out = escape(&bytes[..bytes.len().min(EXCERPT)]);
    if bytes.len() > EXCERPT {
        out.push('…');
    }
    out
}

/// Text for a log line: invalid UTF-8 replaced, control characters escaped.
pub(super) fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}
