//! X11 in the guest, as the seed driver did it: the X server's socket and `xwininfo` (Debian's
//! x11-utils) run in the guest against display :0.

use crate::{Error, Machine};
use regex::Regex;
use std::time::Duration;

impl Machine {
    /// Waits until an X server runs on display :0 and answers `xwininfo -root`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_x(None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_x(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let _step = self.step("waiting for the X server".into());
        let cmd = "[ -e /tmp/.X11-unix/X0 ] && DISPLAY=:0 xwininfo -root 2>&1 >/dev/null";
        self.until_exit_0("the X server on :0", cmd, self.limit(timeout))
    }

    /// The names of the X windows on display :0 (`xwininfo -root -tree`), as NixOS's
    /// `get_window_names`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// assert!(vm.get_window_names()?.iter().any(|n| n == "xterm"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_window_names(&self) -> Result<Vec<String>, Error> {
        self.window_names_within(self.limit(None))
    }

    fn window_names_within(&self, limit: Duration) -> Result<Vec<String>, Error> {
        let cmd = "DISPLAY=:0 xwininfo -root -tree";
        let (status, out) = self.execute_for(cmd, limit)?;
        if status != 0 {
            return Err(Error::CommandFailed {
                machine: self.name.clone(),
                command: cmd.into(),
                status,
                output: out,
            });
        }
        Ok(window_names(&out))
    }

    /// Waits until a window whose name matches `regex` is on display :0; the timeout error lists
    /// the windows there were.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_window(r"^xterm$", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_window(&self, regex: &str, timeout: Option<Duration>) -> Result<(), Error> {
        let re = Regex::new(regex).map_err(|source| Error::Regex {
            pattern: regex.to_string(),
            source,
        })?;
        let _step = self.step(format!("waiting for a window /{regex}/"));
        self.retry(
            &format!("a window /{regex}/"),
            self.limit(timeout),
            |left, last| {
                let names = self.window_names_within(left)?;
                *last = format!("windows: {names:?}");
                Ok(names.iter().any(|n| re.is_match(n)).then_some(()))
            },
        )
    }
}

/// The quoted names in `xwininfo -root -tree` output (`0x400022 "xterm": ("xterm" "XTerm") …`).
fn window_names(tree: &str) -> Vec<String> {
    tree.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix("0x")?;
            let (_, quoted) = rest.split_once(" \"")?;
            let (name, _) = quoted.split_once("\":")?;
            Some(name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_an_xwininfo_tree() {
        let tree = r#"
xwininfo: Window id: 0x3c6 (the root window) (has no name)

  Root window id: 0x3c6 (the root window) (has no name)
  Parent window id: 0x0 (none)
     2 children:
     0x400022 "late window": ("xterm" "XTerm")  484x316+0+0  +0+0
        1 child:
        0x400023 (has no name): ()  484x316+0+0  +0+0
     0x200001 "first-terminal": ("xterm" "XTerm")  10x10+10+10  +10+10
"#;
        assert_eq!(window_names(tree), ["late window", "first-terminal"]);
    }
}
