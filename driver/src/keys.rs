//! The keyboard: QEMU's `sendkey` with key names checked here (a clear error naming a bad one), and
//! text typed as the key combinations a US layout needs for it.

use crate::{Error, Machine};
use std::time::Duration;

/// How long each key is held; QEMU queues presses and releases, so this paces typing.
const HOLD_MS: u32 = 20;
/// The pause between two keys of `send_chars` unless the caller gives one (NixOS's default).
pub const DEFAULT_KEY_DELAY: Duration = Duration::from_millis(10);

/// Every key name QEMU's `sendkey` knows (its QKeyCode enumeration).
const KEYS: &[&str] = &[
    "unmapped",
    "pause",
    "ro",
    "kp_comma",
    "kp_equals",
    "power",
    "hiragana",
    "henkan",
    "yen",
    "sleep",
    "wake",
    "audionext",
    "audioprev",
    "audiostop",
    "audioplay",
    "audiomute",
    "volumeup",
    "volumedown",
    "mediaselect",
    "mail",
    "calculator",
    "computer",
    "ac_home",
    "ac_back",
    "ac_forward",
    "ac_refresh",
    "ac_bookmarks",
    "muhenkan",
    "katakanahiragana",
    "lang1",
    "lang2",
    "f13",
    "f14",
    "f15",
    "f16",
    "f17",
    "f18",
    "f19",
    "f20",
    "f21",
    "f22",
    "f23",
    "f24",
    "shift",
    "shift_r",
    "alt",
    "alt_r",
    "ctrl",
    "ctrl_r",
    "menu",
    "esc",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "0",
    "minus",
    "equal",
    "backspace",
    "tab",
    "q",
    "w",
    "e",
    "r",
    "t",
    "y",
    "u",
    "i",
    "o",
    "p",
    "bracket_left",
    "bracket_right",
    "ret",
    "a",
    "s",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "semicolon",
    "apostrophe",
    "grave_accent",
    "backslash",
    "z",
    "x",
    "c",
    "v",
    "b",
    "n",
    "m",
    "comma",
    "dot",
    "slash",
    "asterisk",
    "spc",
    "caps_lock",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "f6",
    "f7",
    "f8",
    "f9",
    "f10",
    "f11",
    "f12",
    "num_lock",
    "scroll_lock",
    "kp_divide",
    "kp_multiply",
    "kp_subtract",
    "kp_add",
    "kp_enter",
    "kp_decimal",
    "sysrq",
    "kp_0",
    "kp_1",
    "kp_2",
    "kp_3",
    "kp_4",
    "kp_5",
    "kp_6",
    "kp_7",
    "kp_8",
    "kp_9",
    "less",
    "home",
    "pgup",
    "pgdn",
    "end",
    "left",
    "up",
    "down",
    "right",
    "insert",
    "delete",
    "stop",
    "again",
    "props",
    "undo",
    "front",
    "copy",
    "open",
    "paste",
    "find",
    "cut",
    "lf",
    "help",
    "meta_l",
    "meta_r",
    "compose",
];

/// Checks a combination (`ctrl-alt-delete`, `shift-a`, `0x1e`): every part a known key name or a
/// raw scancode in hex.
fn check_combo(combo: &str) -> Result<(), String> {
    if combo.is_empty() {
        return Err("an empty key".into());
    }
    for key in combo.split('-') {
        let hex = key
            .strip_prefix("0x")
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !hex && !KEYS.contains(&key) {
            return Err(format!(
                "unknown key {key:?} in {combo:?} (QEMU's names: a, shift, ctrl, alt, ret, spc, \
                 f1, …, or a scancode like 0x1e)"
            ));
        }
    }
    Ok(())
}

/// The combination that types `c` on a US keyboard layout.
fn combo_for(c: char) -> Option<String> {
    let plain = |k: &str| Some(k.to_string());
    let shifted = |k: &str| Some(format!("shift-{k}"));
    match c {
        'a'..='z' | '0'..='9' => plain(&c.to_string()),
        'A'..='Z' => shifted(&c.to_ascii_lowercase().to_string()),
        ' ' => plain("spc"),
        '\n' => plain("ret"),
        '\t' => plain("tab"),
        '-' => plain("minus"),
        '=' => plain("equal"),
        '[' => plain("bracket_left"),
        ']' => plain("bracket_right"),
        '\\' => plain("backslash"),
        ';' => plain("semicolon"),
        '\'' => plain("apostrophe"),
        '`' => plain("grave_accent"),
        ',' => plain("comma"),
        '.' => plain("dot"),
        '/' => plain("slash"),
        '!' => shifted("1"),
        '@' => shifted("2"),
        '#' => shifted("3"),
        '$' => shifted("4"),
        '%' => shifted("5"),
        '^' => shifted("6"),
        '&' => shifted("7"),
        '*' => shifted("8"),
        '(' => shifted("9"),
        ')' => shifted("0"),
        '_' => shifted("minus"),
        '+' => shifted("equal"),
        '{' => shifted("bracket_left"),
        '}' => shifted("bracket_right"),
        '|' => shifted("backslash"),
        ':' => shifted("semicolon"),
        '"' => shifted("apostrophe"),
        '~' => shifted("grave_accent"),
        '<' => shifted("comma"),
        '>' => shifted("dot"),
        '?' => shifted("slash"),
        _ => None,
    }
}

impl Machine {
    /// Presses key combinations, space-separated, in order: `"ctrl-alt-delete"`, `"shift-a ret"`.
    /// Every name is checked first; nothing is sent if one is unknown.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.send_keys("ctrl-alt-f2")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_keys(&self, keys: &str) -> Result<(), Error> {
        let combos: Vec<&str> = keys.split_whitespace().collect();
        if combos.is_empty() {
            return Err(Error::BadOption("send_keys: no keys given".into()));
        }
        for combo in &combos {
            check_combo(combo).map_err(|e| Error::BadOption(format!("send_keys: {e}")))?;
        }
        let _step = self.step(format!("sending keys {keys}"));
        self.press(&combos, DEFAULT_KEY_DELAY)
    }

    /// NixOS's name: presses one key combination.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.send_key("ret")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_key(&self, key: &str) -> Result<(), Error> {
        self.send_keys(key)
    }

    /// Types `text` (printable ASCII, newlines and tabs) on the keyboard, `delay` (default 10 ms)
    /// between keys; shifted symbols are typed with shift.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.send_chars("echo hello > /tmp/out\n", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_chars(&self, text: &str, delay: Option<Duration>) -> Result<(), Error> {
        let combos = text
            .chars()
            .map(|c| {
                combo_for(c).ok_or_else(|| {
                    Error::BadOption(format!(
                        "send_chars: {c:?} cannot be typed (printable ASCII, newline and tab can)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let _step = self.step(format!("typing {text:?}"));
        let combos: Vec<&str> = combos.iter().map(String::as_str).collect();
        self.press(&combos, delay.unwrap_or(DEFAULT_KEY_DELAY))
    }

    fn press(&self, combos: &[&str], delay: Duration) -> Result<(), Error> {
        for combo in combos {
            self.monitor_ok(&format!("sendkey {combo} {HOLD_MS}"))?;
            // Presses queue in QEMU behind each other's hold time; the pause is on top of it.
            self.idle(delay + Duration::from_millis(HOLD_MS.into()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_checked_key_by_key() {
        for ok in [
            "ctrl-alt-delete",
            "shift-a",
            "ret",
            "kp_enter",
            "0x1e",
            "alt-f2",
        ] {
            assert!(check_combo(ok).is_ok(), "{ok}");
        }
        let err = check_combo("ctrl-enter").unwrap_err();
        assert!(
            err.contains("unknown key \"enter\" in \"ctrl-enter\""),
            "{err}"
        );
        assert!(check_combo("0x").is_err());
        assert!(check_combo("").is_err());
    }

    #[test]
    fn every_printable_ascii_character_has_a_valid_combination() {
        for c in (' '..='~').chain(['\n', '\t']) {
            let combo = combo_for(c).unwrap_or_else(|| panic!("{c:?}"));
            check_combo(&combo).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
        assert_eq!(combo_for('A').unwrap(), "shift-a");
        assert_eq!(combo_for('>').unwrap(), "shift-dot");
        assert!(combo_for('é').is_none() && combo_for('\u{7}').is_none());
    }
}
