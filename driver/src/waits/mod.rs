//! Waits that poll the guest: a command until it succeeds or fails, a file; how a polling wait
//! paces its tries. Each other kind of wait is a file of its own beside this one.

mod console_text;
mod port;

use crate::machine::Machine;
use crate::text::{sh_quote, tail_text};
use crate::Error;
use std::time::{Duration, Instant};

/// First pause between two tries of a polling wait; it grows to [`MAX_RETRY_DELAY`], so a condition
/// that turns true soon is seen within milliseconds.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(10);
/// Longest pause: a condition is seen about half of it (plus one try) after it turns true.
const MAX_RETRY_DELAY: Duration = Duration::from_millis(100);
/// A try costs the guest at most what it took; pausing this many times as long keeps a wait's
/// guest CPU use under 10 %, however costly the try (`systemctl` under TCG, say).
pub(crate) const POLL_DUTY: u32 = 12;
/// Longest pause the pacing asks for: a try that is slow because the guest is busy (booting, say)
/// rather than costly must not stretch the wait.
pub(crate) const MAX_PACED_DELAY: Duration = Duration::from_secs(1);

impl Machine {
    /// Serves the event loop for `d` (other machines' consoles keep flowing) without sending anything.
    pub(crate) fn idle(&self, d: Duration) -> Result<(), Error> {
        self.core.borrow_mut().idle(d)
    }

    /// Calls `attempt` until it returns `Some`, pausing with a growing delay; on timeout the error
    /// names `what` and shows what `attempt` last wrote into its string.
    pub(crate) fn retry<T>(
        &self,
        what: &str,
        timeout: Duration,
        attempt: impl FnMut(Duration, &mut String) -> Result<Option<T>, Error>,
    ) -> Result<T, Error> {
        self.retry_paced(what, timeout, POLL_DUTY, attempt)
    }

    /// [`retry`](Self::retry), pausing at least `duty` times as long as the last try took (0 for
    /// tries that cost the guest nothing, such as OCR on the host).
    pub(crate) fn retry_paced<T>(
        &self,
        what: &str,
        timeout: Duration,
        duty: u32,
        mut attempt: impl FnMut(Duration, &mut String) -> Result<Option<T>, Error>,
    ) -> Result<T, Error> {
        self.explained(None, || {
            let t0 = Instant::now();
            let mut delay = FIRST_RETRY_DELAY;
            let mut last = String::new();
            loop {
                let left = timeout.saturating_sub(t0.elapsed());
                let tried = Instant::now();
                if let Some(v) = attempt(left.max(Duration::from_secs(1)), &mut last)? {
                    return Ok(v);
                }
                let cost = tried.elapsed();
                let left = timeout.saturating_sub(t0.elapsed());
                if left.is_zero() {
                    return Err(Error::Timeout {
                        machine: self.name.clone(),
                        what: what.to_string(),
                        after: timeout,
                        last,
                    });
                }
                let paced = (cost * duty).min(MAX_PACED_DELAY);
                self.idle(delay.max(paced).min(left))?;
                delay = (delay * 3 / 2).min(MAX_RETRY_DELAY);
            }
        })
    }

    /// Runs `command` until it exits 0 (default timeout); returns its output.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_until_succeeds("test -e /run/ready", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_until_succeeds(
        &self,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<String, Error> {
        self.wait_until_succeeds_bounded(command, timeout, None)
    }

    /// [`wait_until_succeeds`](Self::wait_until_succeeds) with each try bounded by `attempt`
    /// (NixOS's `attempt_timeout`): a try still running then is stopped in the guest and the
    /// command tried again, so one that hangs at times cannot use up the whole wait (`None`: a
    /// try may take what is left of the wait).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// use std::time::Duration;
    /// vm.wait_until_succeeds_bounded("curl -sf http://server/", None, Some(Duration::from_secs(5)))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_until_succeeds_bounded(
        &self,
        command: &str,
        timeout: Option<Duration>,
        attempt: Option<Duration>,
    ) -> Result<String, Error> {
        let _step = self.step(format!("waiting for success: {command}"));
        self.until_status(command, timeout, attempt, true)
    }

    /// Runs `command` until it exits non-zero (default timeout); returns its output.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_until_fails("pgrep -x setup", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_until_fails(
        &self,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<String, Error> {
        self.wait_until_fails_bounded(command, timeout, None)
    }

    /// [`wait_until_fails`](Self::wait_until_fails) with each try bounded by `attempt`, as
    /// [`wait_until_succeeds_bounded`](Self::wait_until_succeeds_bounded) bounds them.
    pub fn wait_until_fails_bounded(
        &self,
        command: &str,
        timeout: Option<Duration>,
        attempt: Option<Duration>,
    ) -> Result<String, Error> {
        let _step = self.step(format!("waiting for failure: {command}"));
        self.until_status(command, timeout, attempt, false)
    }

    /// Runs `command` until its status is 0 (`success`) or not, each try within `attempt` (times
    /// the factor) when given, else within what is left of the wait.
    fn until_status(
        &self,
        command: &str,
        timeout: Option<Duration>,
        attempt: Option<Duration>,
        success: bool,
    ) -> Result<String, Error> {
        let what = format!(
            "`{command}` to {}",
            if success { "succeed" } else { "fail" }
        );
        let attempt = attempt.map(|a| self.limit(Some(a)));
        self.retry(&what, self.limit(timeout), |left, last| {
            let bound = attempt.map_or(left, |a| a.min(left));
            let (status, out) = match self.execute_for(command, bound) {
                Ok(got) => got,
                // A try still running at its bound (or at the wait's end) was stopped in the
                // guest: tried again while time is left, else the wait's timeout says so.
                Err(e) => match e.cause() {
                    Error::Timeout { last: shown, .. } => {
                        *last = format!(
                            "a try was still running after {bound:?} and was stopped; its \
                             output:\n{shown}"
                        );
                        return Ok(None);
                    }
                    _ => return Err(e),
                },
            };
            *last = format!(
                "exit status {status}, output:\n{}",
                tail_text(out.as_bytes(), 2000)
            );
            Ok(((status == 0) == success).then_some(out))
        })
    }

    /// Waits until `path` exists in the guest.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_file("/run/ready", Some(std::time::Duration::from_secs(60)))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_file(&self, path: &str, timeout: Option<Duration>) -> Result<(), Error> {
        let _step = self.step(format!("waiting for file {path}"));
        // The shell runs the test itself: a try starts no process in the guest.
        let what = format!("file {path} to exist");
        self.retry(&what, self.limit(timeout), |left, last| {
            let status = self.test_for(&["-e", path], left)?;
            *last = format!("`test -e {}` exited {status}", sh_quote(path));
            Ok((status == 0).then_some(()))
        })
    }

    /// Runs `cmd` until it exits 0, within `limit`; the timeout error names `what` and shows the
    /// last exit status and output.
    pub(crate) fn until_exit_0(&self, what: &str, cmd: &str, limit: Duration) -> Result<(), Error> {
        self.retry(what, limit, |left, last| {
            let (status, out) = self.execute_for(cmd, left)?;
            *last = format!("`{cmd}` exited {status}");
            if !out.trim_end().is_empty() {
                last.push_str(&format!(": {}", out.trim_end()));
            }
            Ok((status == 0).then_some(()))
        })
    }

    /// Sleeps `seconds` of guest time.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.sleep(0.5)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn sleep(&self, seconds: f64) -> Result<(), Error> {
        self.succeed(format!("sleep {seconds}")).map(drop)
    }
}
