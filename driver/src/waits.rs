//! Waits, systemd units, files and ports: the `Machine` methods built from commands and the console.

use crate::machine::tail_text;
use crate::{Error, Machine};
use regex::Regex;
use std::collections::HashMap;
use std::path::Path;
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
/// Longest a port wait trusts an unchanged count of TCP sockets instead of reading which listen: a
/// socket closing as another starts listening between two tries leaves the counts as they were.
const PORT_RESCAN: Duration = Duration::from_secs(1);
/// Marks the line a port wait's try prints about the guest's TCP sockets, for the next try.
const PORT_MARK: &str = "vmtd-port";
/// Console lines shown when a console wait times out.
const CONSOLE_CONTEXT: usize = 20;

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
        let _step = self.step(format!("waiting for success: {command}"));
        self.until_status(command, timeout, true)
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
        let _step = self.step(format!("waiting for failure: {command}"));
        self.until_status(command, timeout, false)
    }

    fn until_status(
        &self,
        command: &str,
        timeout: Option<Duration>,
        success: bool,
    ) -> Result<String, Error> {
        let what = format!(
            "`{command}` to {}",
            if success { "succeed" } else { "fail" }
        );
        self.retry(&what, self.limit(timeout), |left, last| {
            let (status, out) = self.execute_for(command, left)?;
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
        let cmd = format!("test -e {}", sh_quote(path));
        self.until_exit_0(&format!("file {path} to exist"), &cmd, self.limit(timeout))
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

    /// Waits until something accepts TCP connections on `addr:port` in the guest (`addr` defaults to
    /// `localhost`, as in NixOS; any address works).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_open_port(80, None, None)?;
    /// vm.wait_for_open_port(5432, Some("10.0.2.15"), None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_open_port(
        &self,
        port: u16,
        addr: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.port_wait(port, addr, timeout, true)
    }

    /// Waits until nothing accepts TCP connections on `addr:port` in the guest.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.succeed("systemctl stop nginx")?;
    /// vm.wait_for_closed_port(80, None, None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_closed_port(
        &self,
        port: u16,
        addr: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.port_wait(port, addr, timeout, false)
    }

    fn port_wait(
        &self,
        port: u16,
        addr: Option<&str>,
        timeout: Option<Duration>,
        open: bool,
    ) -> Result<(), Error> {
        let addr = addr.unwrap_or("localhost");
        let state = if open { "open" } else { "closed" };
        let _step = self.step(format!("waiting for {state} port {addr}:{port}"));
        // `nc -z` where nc has it (OpenBSD's); busybox nc lacks -z but returns at once on an open
        // port when stdin is empty. Messages are kept so a reason other than "not yet" (a name that
        // does not resolve, no nc) shows up in the timeout error.
        let a = sh_quote(addr);
        // For a port of this machine, ask with builtins only (no process) what listens on it: a
        // listener on a wildcard or loopback address answers for localhost, so `nc` (a process,
        // tens of milliseconds under TCG, at every try) runs only for a listener on another address.
        // l: 1 nothing listens, 0 one accepts loopback connections, 2 one on another address.
        let local = matches!(addr, "localhost" | "127.0.0.1" | "::1");
        let listening = if local {
            // Addresses as /proc/net/tcp{,6} print them (hex, in the kernel's byte order).
            let v4 = ["00000000", "0100007F", "0000000000000000FFFF00000100007F"];
            let v6 = [&"0".repeat(32), &format!("{}01000000", "0".repeat(24))];
            let answer: Vec<&str> = match addr {
                "127.0.0.1" => vec![v4[0], v4[1], v4[2], v6[0]],
                "::1" => vec![v6[0], v6[1]],
                _ => vec![v4[0], v4[1], v4[2], v6[0], v6[1]],
            };
            let p = format!("{port:04X}");
            let answer = answer
                .iter()
                .map(|a| format!("{a}:{p}\\ 0A"))
                .collect::<Vec<_>>()
                .join("|");
            format!(
                "seen=0; l=1\n\
                 for f in /proc/net/tcp /proc/net/tcp6; do [ -r \"$f\" ] || continue; seen=1\n\
                 while read -r _ la _ st _; do case \"$la $st\" in\n\
                 {answer}) l=0;;\n\
                 *:{p}\\ 0A) [ $l = 1 ] && l=2;; esac\n\
                 done < \"$f\"; done\n\
                 if [ $seen = 1 ]; then echo \"{PORT_MARK} $sig $l\"; case $l in\n\
                 0) echo 'listening on port {port}'; exit 0;;\n\
                 1) echo 'nothing listens on port {port}'; exit 1;; esac; fi\n"
            )
        } else {
            String::new()
        };
        let nc = format!(
            "o=$(nc -z -w 1 {a} {port} 2>&1) && exit 0\n\
             case \"$o\" in *'invalid option'*|*'illegal option'*)\n\
             nc -w 1 {a} {port} </dev/null >/dev/null 2>&1 && exit 0\n\
             o=\"$(nc -w 1 {a} {port} </dev/null 2>&1)\";;\nesac\necho \"$o\"; exit 1"
        );
        // Reading which sockets listen costs a builtin `read` per byte, ~0.2 ms per socket under
        // TCG, and sending that script ~3 ms more per try than `test -e`; the counts in
        // /proc/net/sockstat{,6} cost ~0.6 ms whatever the sockets. While they stay as the last
        // full read saw them, that read's answer stands (for PORT_RESCAN at most), so most tries
        // are a short command; one that sees the counts change (exit 3) is followed by a full read.
        let counts = "i= al= i6=\n\
             { read -r _; read -r _ _ i _ _ _ _ _ al _; } 2>/dev/null </proc/net/sockstat && \
             { read -r _ _ i6; } 2>/dev/null </proc/net/sockstat6\n\
             sig=${i:+$i/$al/$i6}\n";
        let full = if local {
            format!("{counts}{listening}{nc}")
        } else {
            nc
        };
        // The counts the last full read saw, whether something listened then, and when.
        let mut known: Option<(String, bool, Instant)> = None;
        self.retry(
            &format!("port {addr}:{port} to be {state}"),
            self.limit(timeout),
            |left, last| {
                if let Some((sig, listens, _)) =
                    known.as_ref().filter(|k| k.2.elapsed() < PORT_RESCAN)
                {
                    let (status, answer) = if *listens {
                        (0, "listening")
                    } else {
                        (1, "nothing listens")
                    };
                    let quick = format!(
                        "{counts}[ \"$sig\" = {} ] || exit 3\n\
                         echo '{answer} on port {port} (no TCP socket changed)'; exit {status}",
                        sh_quote(sig)
                    );
                    let (status, out) = self.execute_for(&quick, left)?;
                    if status != 3 {
                        *last = format!("exited {status}: {}", out.trim_end());
                        return Ok(((status == 0) == open).then_some(()));
                    }
                }
                let (status, out) = self.execute_for(&full, left)?;
                let mut said = String::new();
                for line in out.lines() {
                    match line.strip_prefix(PORT_MARK).map(str::split_whitespace) {
                        Some(mut words) => {
                            known = match (words.next(), words.next()) {
                                (Some(sig), Some(l @ ("0" | "1"))) => {
                                    Some((sig.to_string(), l == "0", Instant::now()))
                                }
                                _ => None,
                            };
                        }
                        None => {
                            said.push_str(line);
                            said.push('\n');
                        }
                    }
                }
                *last = format!("exited {status}: {}", said.trim_end());
                Ok(((status == 0) == open).then_some(()))
            },
        )
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

    /// Waits until a serial console line matches `regex`; returns the line. Each match consumes the
    /// console up to that line, so repeated waits move forward; the line being printed (a prompt
    /// without newline) matches too.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let line = vm.wait_for_console_text(r"login:", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_console_text(
        &self,
        regex: &str,
        timeout: Option<Duration>,
    ) -> Result<String, Error> {
        self.explained(None, || {
            let re = Regex::new(regex).map_err(|source| Error::Regex {
                pattern: regex.to_string(),
                source,
            })?;
            let timeout = self.limit(timeout);
            let _step = self.step(format!("waiting for console text /{regex}/"));
            let i = self.i;
            let mut core = self.core.borrow_mut();
            let found = core.run_until(Instant::now() + timeout, |core| {
                let vm = &mut core.vms[i];
                if let Some((n, line)) = vm.console.find_from(vm.console_cursor, |l| re.is_match(l))
                {
                    vm.console_cursor = n + 1;
                    return Some(Some(line));
                }
                // The line being printed (the UART is slow under TCG) matches once; it counts as consumed
                // when it completes.
                let partial_unseen = vm.console_cursor <= vm.console.total();
                let partial = vm.console.partial();
                if partial_unseen && re.is_match(&partial) {
                    vm.console_cursor = vm.console.total() + 1;
                    return Some(Some(partial));
                }
                // Nothing more can arrive once QEMU exited and its console reached end of file.
                (vm.exit.is_some() && core.io_drained(i)).then_some(None)
            })?;
            match found {
                Some(Some(line)) => Ok(line),
                Some(None) => Err(self.gone(
                    &mut core,
                    &format!("QEMU exited while waiting for console text /{regex}/"),
                )),
                None => Err(Error::Timeout {
                    machine: self.name.clone(),
                    what: format!("console text /{regex}/"),
                    after: timeout,
                    last: core.vms[i].console.tail(CONSOLE_CONTEXT).join("\n"),
                }),
            }
        })
    }

    /// Stops QEMU at once through the monitor (`quit`), like pulling the plug, and waits for it.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.crash()?;
    /// assert!(!vm.is_running());
    /// # Ok(())
    /// # }
    /// ```
    pub fn crash(&self) -> Result<(), Error> {
        if !self.is_running() {
            return Ok(());
        }
        let _step = self.step("crashing".into());
        self.send_monitor_command("quit")?;
        self.wait_for_shutdown()
    }

    /// Runs `systemctl <args>` in the guest; returns its exit status and output.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let (status, _) = vm.systemctl("is-active sshd")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn systemctl(&self, args: &str) -> Result<(i32, String), Error> {
        self.execute(&systemctl_command(args, None))
    }

    /// `systemctl --user <args>` for the manager of `user` (logged in, or lingering), as NixOS's
    /// `systemctl(q, user)`: run through `su -l USER` with its `XDG_RUNTIME_DIR`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let (status, _) = vm.systemctl_as("is-active pipewire.service", "alice")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn systemctl_as(&self, args: &str, user: &str) -> Result<(i32, String), Error> {
        self.execute(&systemctl_command(args, Some(user)))
    }

    /// `systemctl show <unit>` as a map of property to value.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let info = vm.get_unit_info("nginx.service")?;
    /// assert_eq!(info["ActiveState"], "active");
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_unit_info(&self, unit: &str) -> Result<HashMap<String, String>, Error> {
        self.unit_info_for(unit, None, self.limit(None))
    }

    /// [`get_unit_info`](Self::get_unit_info) of a unit of `user`'s manager.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let info = vm.get_user_unit_info("app.service", "alice")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_user_unit_info(
        &self,
        unit: &str,
        user: &str,
    ) -> Result<HashMap<String, String>, Error> {
        self.unit_info_for(unit, Some(user), self.limit(None))
    }

    fn unit_info_for(
        &self,
        unit: &str,
        user: Option<&str>,
        limit: Duration,
    ) -> Result<HashMap<String, String>, Error> {
        let cmd = systemctl_command(&format!("--no-pager show {}", sh_quote(unit)), user);
        Ok(parse_properties(&self.succeed_for(&cmd, limit)?))
    }

    /// Waits until `unit` is active; fails at once, with its status and journal, if it fails, and
    /// when it is inactive with no job pending (it would never start).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_unit("multi-user.target", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_unit(&self, unit: &str, timeout: Option<Duration>) -> Result<(), Error> {
        self.explained(Some(unit), || self.wait_for_unit_of(unit, None, timeout))
    }

    /// [`wait_for_unit`](Self::wait_for_unit) for a unit of `user`'s manager (NixOS's
    /// `wait_for_unit(unit, user)`).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_user_unit("app.service", "alice", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_user_unit(
        &self,
        unit: &str,
        user: &str,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.explained(None, || self.wait_for_unit_of(unit, Some(user), timeout))
    }

    fn wait_for_unit_of(
        &self,
        unit: &str,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let whose = user.map(|u| format!(" of user {u}")).unwrap_or_default();
        let _step = self.step(format!("waiting for unit {unit}{whose}"));
        self.retry(
            &format!("unit {unit}{whose} to be active"),
            self.limit(timeout),
            |left, last| {
                let info = self.follow_unit_job(unit, user, left)?;
                let state = info.get("ActiveState").map_or("", String::as_str);
                *last = format!(
                    "ActiveState={state} SubState={}",
                    info.get("SubState").map_or("", String::as_str)
                );
                match state {
                    "active" => Ok(Some(())),
                    "failed" => Err(Error::UnitFailed {
                        machine: self.name.clone(),
                        unit: unit.to_string(),
                        status: self.unit_status(unit, user),
                    }),
                    "inactive" => {
                        let jobs = systemctl_command("list-jobs --full 2>&1", user);
                        let (_, jobs) = self.execute_for(&jobs, left)?;
                        if jobs.contains("No jobs") {
                            // The unit may have started between the two queries.
                            let again = self.unit_info_for(unit, user, left)?;
                            if again.get("ActiveState").map(String::as_str) == Some("inactive") {
                                return Err(Error::UnitFailed {
                                    machine: self.name.clone(),
                                    unit: unit.to_string(),
                                    status: format!(
                                        "it is inactive and no job is pending\n{}",
                                        self.unit_status(unit, user)
                                    ),
                                });
                            }
                        }
                        Ok(None)
                    }
                    _ => Ok(None),
                }
            },
        )
    }

    /// Waits in the guest, within `left`, for `unit` of the system manager (or of `user`'s) to
    /// leave its pending job or activation, then returns its properties: systemd's own job engine
    /// does the waiting, so no poll costs the guest CPU while the unit starts (a `systemctl show`
    /// costs it about 170 ms under TCG) and the wait returns within about 0.1 s of the unit turning
    /// active.
    ///
    /// `systemctl start vmtd-wait@UNIT.target`, a target ordered after the unit and requiring it
    /// (`After=`, `Requisite=`), starts once the unit's job is done and only if the unit is then
    /// active; a unit that is inactive with no job, or failed, makes it fail at once. Either way
    /// `systemctl show` tells the state. The template goes into `/run/systemd/system` (for a user's
    /// manager `/run/systemd/user`), which systemd reads for a unit it has not loaded yet: no
    /// daemon-reload, so the user's units are left alone. `StopWhenUnneeded=` stops each instance
    /// as soon as it has started. Nothing is exec'd once the unit is active, so this answers sooner
    /// than a transient scope with the same dependencies (`systemd-run --scope`, which execs its
    /// command then: 40-50 ms per process under TCG); a manager that does not load the template
    /// gets that scope instead.
    fn follow_unit_job(
        &self,
        unit: &str,
        user: Option<&str>,
        left: Duration,
    ) -> Result<HashMap<String, String>, Error> {
        if left < Duration::from_secs(1) {
            return self.unit_info_for(unit, user, left);
        }
        let waiter = UnitWaiter::new(unit, user);
        match self.execute_for(&waiter.wait, left) {
            Ok((0, out)) => Ok(parse_properties(&out)),
            // No systemctl (a guest without systemd), say: an error now, not a wait to the end.
            Ok((status, output)) => Err(Error::CommandFailed {
                machine: self.name.clone(),
                command: waiter.wait,
                status,
                output,
            }),
            // Stopped in the guest at the timeout; the state read then is what the timeout
            // error shows.
            Err(Error::Timeout { .. }) => {
                let limit = self.limit(Some(Duration::from_secs(10)));
                Ok(parse_properties(&self.succeed_for(&waiter.cancel, limit)?))
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until the job `unit` is active: NixOS's name for [`wait_for_unit`](Self::wait_for_unit).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.wait_for_job("nginx.service", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_job(&self, unit: &str, timeout: Option<Duration>) -> Result<(), Error> {
        self.wait_for_unit(unit, timeout)
    }

    /// Fails unless `unit` is active now.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.require_active_unit("nginx.service")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn require_active_unit(&self, unit: &str) -> Result<(), Error> {
        self.explained(Some(unit), || {
            let info = self.get_unit_info(unit)?;
            match info.get("ActiveState").map(String::as_str) {
                Some("active") => Ok(()),
                state => Err(Error::UnitFailed {
                    machine: self.name.clone(),
                    unit: unit.to_string(),
                    status: format!(
                        "expected active, it is {}\n{}",
                        state.unwrap_or("unknown"),
                        self.unit_status(unit, None)
                    ),
                }),
            }
        })
    }

    /// `systemctl start <unit>`; returns status and output.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.start_job("nginx.service")?;
    /// vm.wait_for_unit("nginx.service", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_job(&self, unit: &str) -> Result<(i32, String), Error> {
        self.systemctl(&format!("start {}", sh_quote(unit)))
    }

    /// `systemctl stop <unit>`; returns status and output.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.stop_job("nginx.service")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop_job(&self, unit: &str) -> Result<(i32, String), Error> {
        self.systemctl(&format!("stop {}", sh_quote(unit)))
    }

    /// `systemctl status` and the last journal lines of `unit`, for error messages; best effort.
    fn unit_status(&self, unit: &str, user: Option<&str>) -> String {
        let q = sh_quote(unit);
        // A user's units log to the system journal, found with --user-unit.
        let journal = match user {
            None => format!("journalctl --no-pager -n 50 -u {q}"),
            Some(_) => format!("journalctl --no-pager -n 50 --user-unit {q}"),
        };
        let status = systemctl_command(&format!("--no-pager status {q}"), user);
        let cmd = format!("{status} 2>&1; {journal} 2>&1");
        match self.execute_within(&cmd, Duration::from_secs(30)) {
            Ok((_, out)) => out,
            Err(e) => format!("(could not get the unit's status: {e})"),
        }
    }

    /// Copies a host file into the guest at `target` (any bytes, any file name); creates the parent
    /// directory.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.copy_from_host(std::path::Path::new("fixtures/config.toml"), "/etc/app/config.toml")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_from_host(&self, source: &Path, target: &str) -> Result<(), Error> {
        let bytes = std::fs::read(source).map_err(|e| Error::Io {
            what: format!("reading {}", source.display()),
            source: e,
        })?;
        self.write_file(target, &bytes)
    }

    /// Writes `bytes` to `target` in the guest, creating the parent directory.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.write_file("/etc/motd", b"hello\n")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_file(&self, target: &str, bytes: &[u8]) -> Result<(), Error> {
        use base64::Engine as _;
        let _step = self.step(format!("writing {} bytes to {target}", bytes.len()));
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut cmd = format!(
            "t={}; mkdir -p -- \"$(dirname -- \"$t\")\" && base64 -d > \"$t\" <<'VMTD_EOF'\n",
            sh_quote(target)
        );
        // Lines of 76 characters, as base64 tools write them, keep any shell's line reader happy.
        for chunk in encoded.as_bytes().chunks(76) {
            cmd.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            cmd.push('\n');
        }
        cmd.push_str("VMTD_EOF\n");
        let (status, out) = self.execute(&cmd)?;
        if status != 0 {
            return Err(Error::CommandFailed {
                machine: self.name.clone(),
                command: format!("write {target}"),
                status,
                output: out,
            });
        }
        Ok(())
    }

    /// The bytes of a file in the guest (the channel is binary-safe, so no encoding is needed).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let log = vm.copy_from_vm("/var/log/app.log")?;
    /// std::fs::write("app.log", log).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_from_vm(&self, source: &str) -> Result<Vec<u8>, Error> {
        let cmd = format!("cat -- {}", sh_quote(source));
        let (status, out) = self.run_command(cmd.as_bytes(), self.limit(None))?;
        if status != 0 {
            return Err(Error::CommandFailed {
                machine: self.name.clone(),
                command: cmd,
                status,
                output: String::from_utf8_lossy(&out).into_owned(),
            });
        }
        Ok(out)
    }

    /// Forwards TCP `host_port` on the host's loopback address to `guest_port` in the guest
    /// (user-mode networking); other hosts cannot reach it.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.forward_port(8081, 80)?;
    /// let _ = std::net::TcpStream::connect(("127.0.0.1", 8081));
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward_port(&self, host_port: u16, guest_port: u16) -> Result<(), Error> {
        self.forward_port_on("127.0.0.1", host_port, guest_port)
    }

    /// [`forward_port`](Self::forward_port) listening on the host address `address` instead of
    /// loopback (an IPv4 address; `0.0.0.0` exposes the guest port to the network, so ask for it only
    /// when other hosts must reach it).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.forward_port_on("0.0.0.0", 8081, 80)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward_port_on(
        &self,
        address: &str,
        host_port: u16,
        guest_port: u16,
    ) -> Result<(), Error> {
        // Checked here: anything else would reach HMP's own parser, or inject a second option.
        if address.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(Error::BadOption(format!(
                "forward_port: {address:?} is not an IPv4 address to listen on"
            )));
        }
        self.monitor_expect_silence(&format!(
            "hostfwd_add tcp:{address}:{host_port}-:{guest_port}"
        ))
    }
}

/// The guest commands of a wait for a unit's job: see `Machine::follow_unit_job`.
pub(crate) struct UnitWaiter {
    /// Exits 0 once the unit's job has ended, printing `ActiveState=active` or the unit's
    /// `systemctl show`.
    pub(crate) wait: String,
    /// Run after `wait` was stopped at a timeout: the waiter's start job would still be queued, to
    /// run (and fail) whenever the unit's job ends, so it goes too; prints `systemctl show`.
    pub(crate) cancel: String,
}

impl UnitWaiter {
    /// The commands waiting for `unit` of the system manager, or of `user`'s; each waiter has
    /// its own fallback scope name.
    pub(crate) fn new(unit: &str, user: Option<&str>) -> UnitWaiter {
        static WAITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let show = systemctl_command(&format!("--no-pager show {}", sh_quote(unit)), user);
        // systemctl takes `nginx` for `nginx.service`; a dependency wants the full name.
        let full = full_unit_name(unit);
        let (u, waiter) = (
            sh_quote(&full),
            sh_quote(&format!("vmtd-wait@{full}.target")),
        );
        let scope = format!(
            "vmtd-wait-{}-{}.scope",
            std::process::id(),
            WAITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        // A user's manager reads /run/systemd/user, which only root can write (the shell is root).
        // No directory is made where systemd does not run: programs take /run/systemd/system for
        // a sign that it does.
        let (dir, mkdir, flag) = match user {
            None => ("/run/systemd/system", "", ""),
            Some(_) => (
                "/run/systemd/user",
                "[ -d /run/systemd/system ] && mkdir -p /run/systemd/user; ",
                " --user",
            ),
        };
        let start = systemctl_command(&format!("--no-ask-password start {waiter}"), user);
        let run_scope = in_manager(
            &format!(
                "systemd-run{flag} --quiet --collect --scope --unit={scope} \
                 -p After={u} -p Requisite={u} true"
            ),
            user,
        );
        let wait = format!(
            "t={dir}/vmtd-wait@.target\n\
             [ -e $t ] || {{ {mkdir}printf '%s\\n' '[Unit]' \\\n\
             \x20 'Description=vm-test-driver: %i is active' \\\n\
             \x20 DefaultDependencies=no After=%i Requisite=%i StopWhenUnneeded=yes >$t; }} 2>/dev/null\n\
             if e=$({start} 2>&1 >/dev/null); then\n\
             \x20 echo ActiveState=active; exit 0\n\
             fi\n\
             case $e in *\"Unit vmtd-wait@\"*)\n\
             \x20 {run_scope} >/dev/null 2>&1 && {{ echo ActiveState=active; exit 0; }}\n\
             esac\n\
             {show}"
        );
        let stop = systemctl_command(&format!("stop --no-block {waiter} {scope}"), user);
        let cancel = format!("{stop} >/dev/null 2>&1; {show}");
        UnitWaiter { wait, cancel }
    }
}

/// The shell command running `systemctl <args>`: the system manager's, or `user`'s as NixOS does
/// it (a login shell of the user, `XDG_RUNTIME_DIR` set so systemctl finds the user manager).
fn systemctl_command(args: &str, user: Option<&str>) -> String {
    match user {
        None => format!("systemctl {args}"),
        Some(_) => in_manager(&format!("systemctl --user {args}"), user),
    }
}

/// `cmd` as root, or as `user` so that it reaches the user's manager.
fn in_manager(cmd: &str, user: Option<&str>) -> String {
    match user {
        None => cmd.to_string(),
        Some(user) => format!(
            "su -l {} --shell /bin/sh -c {}",
            sh_quote(user),
            sh_quote(&format!("XDG_RUNTIME_DIR=/run/user/$(id -u) {cmd}"))
        ),
    }
}

/// `unit` with the `.service` that systemctl adds to a name without a unit type.
fn full_unit_name(unit: &str) -> String {
    const TYPES: [&str; 11] = [
        "service",
        "socket",
        "target",
        "device",
        "mount",
        "automount",
        "swap",
        "timer",
        "path",
        "slice",
        "scope",
    ];
    match unit.rsplit_once('.') {
        Some((_, ty)) if TYPES.contains(&ty) => unit.to_string(),
        _ => format!("{unit}.service"),
    }
}

/// Quotes `s` for a POSIX shell: single quotes, with `'` written as `'\''`.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(crate) fn parse_properties(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_get_the_type_systemctl_would_add() {
        assert_eq!(full_unit_name("nginx"), "nginx.service");
        assert_eq!(full_unit_name("nginx.service"), "nginx.service");
        assert_eq!(full_unit_name("multi-user.target"), "multi-user.target");
        assert_eq!(full_unit_name("getty@tty1"), "getty@tty1.service");
        assert_eq!(full_unit_name("app.v2"), "app.v2.service");
    }

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
