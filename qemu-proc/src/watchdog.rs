//! A process outside the driver that SIGKILLs every live machine's process group when the driver is
//! gone, however it ended.
//!
//! `PR_SET_PDEATHSIG` reaches only the process the driver spawned; a start script that runs QEMU without
//! `exec` leaves QEMU a grandchild that a driver SIGKILL would orphan. The watchdog is a tiny `sh` reading
//! `+PGID`/`-PGID` lines from a pipe only the driver holds (close-on-exec, so no machine inherits it);
//! the kernel closes the pipe when the driver dies, and at EOF the watchdog kills the groups it still
//! has. One watchdog serves every machine of the process and is started at the first spawn.

use once_cell::sync::Lazy;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// Ignores the terminal's signals (the driver handles them and stops the machines itself), remembers
/// the groups, and at EOF kills what is left.
const SCRIPT: &str = r#"trap '' INT TERM HUP QUIT
set --
while read -r op; do
  case $op in
    +*) set -- "$@" "${op#+}" ;;
    -*) gone=${op#-}; keep=; for p; do [ "$p" = "$gone" ] || keep="$keep $p"; done; set -- $keep ;;
  esac
done
for p; do kill -s KILL -- "-$p" 2>/dev/null; done
"#;

static WATCHDOG: Lazy<Mutex<Option<ChildStdin>>> = Lazy::new(|| Mutex::new(start()));

fn start() -> Option<ChildStdin> {
    let spawned = Command::new("/bin/sh")
        .args(["-c", SCRIPT, "vmtd-watchdog"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut child) => {
            log::debug!("watchdog started as pid {}", child.id());
            child.stdin.take()
        }
        Err(e) => {
            log::warn!("no watchdog (/bin/sh: {e}): a machine whose start script does not exec QEMU may outlive a killed driver");
            None
        }
    }
}

fn tell(line: String) {
    let mut guard = WATCHDOG.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pipe) = guard.as_mut() {
        if let Err(e) = pipe.write_all(line.as_bytes()) {
            log::warn!("watchdog gone ({e}); machines rely on PDEATHSIG alone");
            *guard = None;
        }
    }
}

/// Asks the watchdog to kill process group `pgid` if the driver dies before calling [`forget`].
pub(crate) fn watch(pgid: i32) {
    tell(format!("+{pgid}\n"));
}

/// The group is about to be reaped (its id may then be reused): the watchdog must not kill it anymore.
pub(crate) fn forget(pgid: i32) {
    tell(format!("-{pgid}\n"));
}
