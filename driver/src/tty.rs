//! Virtual terminals and the serial console, as the NixOS driver offers them: the text of a VT read
//! from `/dev/vcsN` in the guest, waits on it, and typing into the serial console.

use crate::{Error, Machine};
use regex::Regex;
use std::time::{Duration, Instant};

/// How long typing into the console may wait for the socket to take the bytes.
const CONSOLE_WRITE: Duration = Duration::from_secs(10);

impl Machine {
    /// The text on virtual terminal `tty` (1 for /dev/tty1), one line per screen row, as NixOS's
    /// `get_tty_text`: `/dev/vcsN` folded at the terminal's width.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let text = vm.get_tty_text(1)?;
    /// assert!(text.contains("login:"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_tty_text(&self, tty: u32) -> Result<String, Error> {
        self.tty_text_for(tty, self.limit(None))
    }

    fn tty_text_for(&self, tty: u32, limit: Duration) -> Result<String, Error> {
        // The width from the terminal itself (80 when stty cannot tell), as NixOS does.
        let cmd = format!(
            "w=$(stty -F /dev/tty{tty} size 2>/dev/null | cut -d' ' -f2); \
             fold -w \"${{w:-80}}\" /dev/vcs{tty}"
        );
        self.succeed_for(&cmd, limit)
    }

    /// Waits until the text of virtual terminal `tty` matches `regex` (default timeout); the timeout
    /// error shows the last text read.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_until_tty_matches(1, "login: ", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_until_tty_matches(
        &self,
        tty: u32,
        regex: &str,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let re = Regex::new(regex).map_err(|source| Error::Regex {
            pattern: regex.to_string(),
            source,
        })?;
        let _step = self.step(format!("waiting for /{regex}/ on tty{tty}"));
        self.retry(
            &format!("/{regex}/ on tty{tty}"),
            self.limit(timeout),
            |left, last| {
                let text = self.tty_text_for(tty, left)?;
                let found = re.is_match(&text);
                *last = text;
                Ok(found.then_some(()))
            },
        )
    }

    /// Writes the text of virtual terminal `tty` into the log (NixOS sends it to the guest's
    /// journal; the driver's log is where a reader of a failed run looks).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.dump_tty_contents(1)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn dump_tty_contents(&self, tty: u32) -> Result<(), Error> {
        let text = self.get_tty_text(tty)?;
        self.log(&format!("contents of tty{tty}:\n{}", text.trim_end()));
        Ok(())
    }

    /// Types `chars` into the serial console (QEMU's stdin), as NixOS's `send_console`: raw bytes,
    /// so `"\n"` ends a line.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.send_console("root\n")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_console(&self, chars: &str) -> Result<(), Error> {
        let _step = self.step(format!("typing {chars:?} into the serial console"));
        self.connect()?;
        let mut core = self.core.borrow_mut();
        if !core
            .io
            .write_console(self.i, chars.as_bytes(), Instant::now() + CONSOLE_WRITE)
        {
            return Err(Error::NotRunning(self.name.clone()));
        }
        Ok(())
    }
}
