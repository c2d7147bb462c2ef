//! Text helpers every layer uses: shell quoting, `systemctl show` output, shortened output.

use std::collections::HashMap;

/// Quotes `s` for a POSIX shell: single quotes, with `'` written as `'\''`.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `key=value` lines (`systemctl show`) as a map; other lines are skipped.
pub(crate) fn parse_properties(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The last `max` bytes of `out` as text, saying how much came before.
pub(crate) fn tail_text(out: &[u8], max: usize) -> String {
    let start = out.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&out[start..]);
    if start > 0 {
        format!("[… {start} bytes before]{text}")
    } else {
        text.into_owned()
    }
}

/// A command's first line, with `…` when it has more, for error messages.
pub(crate) fn command_text(command: &[u8]) -> String {
    let text = String::from_utf8_lossy(command);
    let first = text.lines().next().unwrap_or("");
    if text.lines().nth(1).is_some() {
        format!("{first} …")
    } else {
        first.to_string()
    }
}

/// The first `max` characters of `s`, with `…` when cut.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn properties() {
        let p =
            parse_properties("ActiveState=active\nExecStart={ path=/bin/x ; argv[]=/bin/x a=b }\n");
        assert_eq!(p["ActiveState"], "active");
        assert_eq!(p["ExecStart"], "{ path=/bin/x ; argv[]=/bin/x a=b }");
    }
}
