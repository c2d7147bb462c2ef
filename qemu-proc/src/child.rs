//! Spawning, stopping and reaping a machine's process group.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::plan::{LaunchPlan, ProgramKind};
use crate::Error;

/// Grace between SIGTERM and SIGKILL when a [`Child`] is dropped while running.
pub const DROP_GRACE: Duration = Duration::from_secs(2);
/// How long processes may take to disappear after SIGKILL before they are reported as survivors.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
/// Longest pause between two looks at the group while waiting for it to end.
const MAX_POLL: Duration = Duration::from_millis(20);
/// Retries of a spawn that failed with ETXTBSY (see [`Child::spawn`]).
const TXTBSY_RETRIES: u32 = 20;

/// A running QEMU (or start script) in its own process group, with PR_SET_PDEATHSIG(SIGKILL) so it dies
/// with the driver even on SIGKILL.
///
/// The spawned process leads a new process group whose id is its pid; everything it starts stays in that
/// group unless it moves itself out, and [`terminate`](Child::terminate), [`kill`](Child::kill) and `Drop`
/// signal the whole group. That matters for start scripts that do not `exec` QEMU (dash does not `exec`
/// the last command by itself): QEMU is then a grandchild that the group signal still reaches.
///
/// The leader is kept as a zombie (observed with `waitid(WNOWAIT)`) until the group is stopped or the
/// `Child` dropped: while it is unreaped its pid — the group id — cannot be reused, so a group signal sent
/// late can never reach an unrelated process group.
///
/// Limits of `PR_SET_PDEATHSIG`, which the driver must respect:
/// - it fires when the *thread* that forked exits, not the process, so spawn from a thread that lives as
///   long as the machines (the driver spawns from its main thread);
/// - only the spawned process gets it: it survives the `execve` of a script (only set-uid execs clear it),
///   but QEMU started by a script *without* `exec` is a grandchild and does not. For that case every group
///   is also registered with a watchdog process that kills it when the driver dies (`watchdog.rs`);
///   `Drop` covers every other way the driver ends.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    program: PathBuf,
    kind: ProgramKind,
    /// Set once the leader has exited, whether or not it has been reaped yet.
    exited: Option<ExitStatus>,
    reaped: bool,
    /// The leader is reaped and no member of the group is alive: never signal the group again.
    done: bool,
}

impl Child {
    /// Spawns `plan` with the given stdio, in a new process group, with `PR_SET_PDEATHSIG(SIGKILL)`.
    ///
    /// Before forking it checks that the program and the working directory exist, so the error says
    /// "start script /x/run-a-vm does not exist" or "… is not executable" rather than a bare errno. A
    /// relative program path is taken relative to the driver's working directory (not the plan's `cwd`), a
    /// bare name is looked up in `$PATH`. A spawn failing with ETXTBSY is retried briefly: another thread
    /// forking while a freshly written script was still open for writing causes it, and it passes.
    pub fn spawn(
        plan: &LaunchPlan,
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Child, Error> {
        let program = resolve_program(plan)?;
        if !plan.cwd.is_dir() {
            return Err(Error::CwdMissing {
                path: plan.cwd.clone(),
            });
        }
        let mut cmd = Command::new(&program);
        cmd.arg0(plan.program.as_os_str())
            .args(&plan.args)
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&plan.cwd)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            // Our own group, so one signal reaches everything the machine started, and a terminal's ^C
            // reaches only the driver, which then stops the machines in order.
            .process_group(0);
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut attempt = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < TXTBSY_RETRIES => {
                    attempt += 1;
                    sleep(Duration::from_millis(5 * u64::from(attempt)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // The file was there a moment ago, so what execve did not find is its interpreter.
                    return Err(Error::InterpreterMissing {
                        kind: plan.kind,
                        path: program,
                    });
                }
                Err(source) => {
                    return Err(Error::Spawn {
                        kind: plan.kind,
                        path: program,
                        source,
                    })
                }
                Ok(child) => break child,
            }
        };
        // std's Child neither kills nor reaps on drop; from here on the pid is ours to manage.
        let pid = child.id() as i32;
        drop(cmd); // closes our copies of the child's stdio, so the driver sees EOF when the child exits
        log::info!("started {} {} as pid {pid}", plan.kind, program.display());
        crate::watchdog::watch(pid);
        Ok(Child {
            pid,
            program,
            kind: plan.kind,
            exited: None,
            reaped: false,
            done: false,
        })
    }

    /// The spawned process's pid, which is also its process group id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The program that was started, as resolved (absolute path).
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Non-blocking: Some(status) once the child (the process we spawned) has exited. Safe to call
    /// repeatedly.
    ///
    /// The exit is observed without reaping; the zombie is reaped by [`terminate`](Child::terminate),
    /// [`kill`](Child::kill) or `Drop`, together with the rest of the group (see [`Child`] for why).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.poll_leader()
    }

    /// SIGTERM (and SIGCONT) to the whole group, wait up to `grace` for the spawned process to exit and every
    /// other member to die, then SIGKILL the group; reaps the spawned process. Returns its exit status.
    ///
    /// Also the way to clean up after a child that exited by itself: members it left behind are stopped.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, Error> {
        if let (true, Some(status)) = (self.done, self.exited) {
            return Ok(status);
        }
        let deadline = Instant::now() + grace;
        if self.poll_leader()?.is_none() || !live_members(self.pid).is_empty() {
            self.signal(libc::SIGTERM, "SIGTERM")?;
            // A stopped process keeps SIGTERM pending until it is continued.
            self.signal(libc::SIGCONT, "SIGCONT")?;
            if !self.wait_group(deadline)? {
                log::warn!(
                    "{} {} (pid {}): group still alive {grace:?} after SIGTERM, sending SIGKILL",
                    self.kind,
                    self.program.display(),
                    self.pid
                );
                return self.kill();
            }
        }
        self.finish()
    }

    /// SIGKILL the group at once and reap.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        if let (true, Some(status)) = (self.done, self.exited) {
            return Ok(status);
        }
        self.signal(libc::SIGKILL, "SIGKILL")?;
        if !self.wait_group(Instant::now() + KILL_DEADLINE)? {
            return Err(Error::Survivors {
                pgid: self.pid,
                pids: live_members(self.pid),
                waited: KILL_DEADLINE,
            });
        }
        self.finish()
    }

    fn poll_leader(&mut self) -> Result<Option<ExitStatus>, Error> {
        if self.exited.is_some() {
            return Ok(self.exited);
        }
        loop {
            // SAFETY: siginfo_t is plain data; all-zero is a valid value and lets us see "no change" as
            // si_pid == 0, as waitid(2) recommends for WNOHANG.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            // SAFETY: `info` is a valid, writable siginfo_t.
            let r = unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, flags) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Wait {
                    pid: self.pid,
                    source: e,
                });
            }
            // SAFETY: waitid filled a SIGCHLD siginfo (or left it zeroed), for which these fields are valid.
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                return Ok(None);
            }
            // Rebuild the wait(2) status word so ExitStatus reports code() and signal() as usual.
            let raw = match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => (status & 0x7f) | 0x80,
                _ => status & 0x7f,
            };
            self.exited = Some(ExitStatus::from_raw(raw));
            return Ok(self.exited);
        }
    }

    /// Waits until the leader has exited and no member is alive; false if `deadline` passed first.
    fn wait_group(&mut self, deadline: Instant) -> Result<bool, Error> {
        // Start fast (QEMU usually exits within milliseconds of SIGTERM) and back off to stay cheap.
        let mut pause = Duration::from_millis(1);
        loop {
            if self.poll_leader()?.is_some() && live_members(self.pid).is_empty() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Reaps the leader and any members this process adopted as a subreaper; the group is then over.
    fn finish(&mut self) -> Result<ExitStatus, Error> {
        if !self.reaped {
            crate::watchdog::forget(self.pid);
            let mut raw = 0;
            // The leader is known to have exited, so this returns at once.
            loop {
                // SAFETY: `raw` is a valid, writable int.
                let r = unsafe { libc::waitpid(self.pid, &mut raw, 0) };
                if r >= 0 {
                    break;
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(Error::Wait {
                        pid: self.pid,
                        source: e,
                    });
                }
            }
            self.exited = Some(ExitStatus::from_raw(raw));
            self.reaped = true;
        }
        // Members orphaned by the leader's exit are our children if we are a subreaper
        // (become_subreaper); reap them here, or they would stay zombies in the group.
        loop {
            let mut raw = 0;
            // SAFETY: as above.
            let r = unsafe { libc::waitpid(-self.pid, &mut raw, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            log::debug!("reaped pid {r} of process group {}", self.pid);
        }
        self.done = true;
        Ok(self.exited.expect("set when reaped"))
    }

    fn signal(&self, sig: libc::c_int, name: &'static str) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        // SAFETY: kill has no memory-safety preconditions. The leader is not reaped yet (done is false), so
        // the group id still belongs to our group.
        if unsafe { libc::kill(-self.pid, sig) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        Err(Error::Signal {
            pgid: self.pid,
            signal: name,
            source: e,
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if matches!(self.poll_leader(), Ok(None)) {
            log::info!(
                "stopping {} {} (pid {}): dropped while running",
                self.kind,
                self.program.display(),
                self.pid
            );
        }
        match self.terminate(DROP_GRACE) {
            Ok(status) => log::debug!(
                "{} {} (pid {}) ended: {status}",
                self.kind,
                self.program.display(),
                self.pid
            ),
            Err(e) => {
                log::error!("stopping process group {}: {}", self.pid, chain(&e));
                if let Err(e) = self.kill() {
                    log::error!("killing process group {}: {}", self.pid, chain(&e));
                }
            }
        }
    }
}

/// Makes the process `cmd` spawns get `signal` when the spawning thread dies (`PR_SET_PDEATHSIG`;
/// see [`Child`] for its limits), and exit at once if the parent died before that was set.
pub fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    // Captured before the fork: in the child, getppid() differs from this iff we already died.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid, _exit); it allocates nothing and takes no locks. `unsafe` is needed because
    // pre_exec cannot check that by itself.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then no signal would ever come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Makes this process adopt orphaned descendants (`PR_SET_CHILD_SUBREAPER`), so that group members a start
/// script leaves behind are reaped by [`Child`] instead of lingering as zombies under PID 1 (which, in some
/// containers, reaps late or never, keeping the group id in use).
///
/// Process-wide and optional: a driver that calls it also adopts orphans of anything else it starts.
pub fn become_subreaper() -> Result<(), Error> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(Error::Subreaper {
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Pids of live (not zombie) processes in process group `pgid`.
///
/// `kill(-pgid, 0)` alone cannot tell: it succeeds while any zombie of the group (our unreaped leader, or
/// orphans PID 1 has not reaped yet) exists.
pub fn live_members(pgid: i32) -> Vec<i32> {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(-pgid, 0) } != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return Vec::new();
    }
    let dir = match fs::read_dir("/proc") {
        Ok(dir) => dir,
        Err(e) => {
            // Without /proc we cannot tell zombies from the living; assume the worst so callers escalate.
            log::warn!("cannot read /proc ({e}); assuming process group {pgid} is alive");
            return vec![pgid];
        }
    };
    let mut live = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may vanish between read_dir and read: then it is not alive.
        let Ok(stat) = fs::read(entry.path().join("stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat) {
            if pgrp == pgid && !matches!(state, b'Z' | b'X' | b'x') {
                live.push(pid);
            }
        }
    }
    live
}

/// State and process group from `/proc/<pid>/stat`: `pid (comm) state ppid pgrp …`, where comm may hold
/// spaces and parentheses, so fields are counted from the last ')'.
fn parse_stat(stat: &[u8]) -> Option<(u8, i32)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn resolve_program(plan: &LaunchPlan) -> Result<PathBuf, Error> {
    let given = &plan.program;
    if given.as_os_str().as_bytes().contains(&b'/') {
        let path = if given.is_relative() {
            // std would resolve it against the child's new cwd (platform-dependent); the user meant ours.
            let cwd = std::env::current_dir().map_err(|source| Error::Spawn {
                kind: plan.kind,
                path: given.clone(),
                source,
            })?;
            cwd.join(given)
        } else {
            given.clone()
        };
        check_executable(plan.kind, &path)?;
        return Ok(path);
    }
    let path_var = plan
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path_var)
        // An empty entry would mean the working directory: never look for QEMU there.
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(given))
        .find(|candidate| candidate.is_file() && is_executable(candidate))
        .ok_or_else(|| Error::ProgramNotInPath {
            kind: plan.kind,
            path: given.clone(),
        })
}

fn check_executable(kind: ProgramKind, path: &Path) -> Result<(), Error> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::ProgramMissing {
            kind,
            path: path.to_path_buf(),
        }),
        Err(source) => Err(Error::Spawn {
            kind,
            path: path.to_path_buf(),
            source,
        }),
        Ok(meta) if !meta.is_file() || !is_executable(path) => Err(Error::NotExecutable {
            kind,
            path: path.to_path_buf(),
        }),
        Ok(_) => Ok(()),
    }
}

/// access(2) rather than mode bits: it knows about root, ACLs and noexec mounts.
fn is_executable(path: &Path) -> bool {
    let Ok(c) = CString::new(OsStr::as_bytes(path.as_os_str())) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_stat(b"123 (qemu-system-x86) S 1 123 123 0 -1"),
            Some((b'S', 123))
        );
        assert_eq!(parse_stat(b"7 (a) b (c)) Z 1 99 99"), Some((b'Z', 99)));
        assert_eq!(parse_stat(b"7 (a"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn an_unused_group_has_no_members() {
        // Group ids are pids; pid_max is at most 2^22, so this one never exists.
        assert!(live_members(i32::MAX).is_empty());
    }
}
