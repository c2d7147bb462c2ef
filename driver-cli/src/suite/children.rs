//! The children that run the scripts: spawned in process groups of their own, their output passed
//! through line by line with the script's prefix, and what they leave behind reaped.

use anyhow::Context;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A line longer than this is passed through in pieces, each prefixed.
const MAX_LINE: u64 = 64 * 1024;
/// The tail of a child's log kept for a JUnit suite the child could not write itself.
const KEPT_OUTPUT: usize = 1024 * 1024;

/// Reaps exited processes that are not in `ours`: as a subreaper (see `main`) we adopt what the
/// children leave behind when they exit (a watchdog that outlived its driver), and nothing else
/// would reap those. Stops at a child of ours, which the next SIGCHLD reaps.
pub fn reap_orphans(ours: &[i32]) {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: WNOWAIT only looks: the process stays waitable.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` for an exited child (si_pid stays 0 when there is none).
        let pid = unsafe { info.si_pid() };
        if r != 0 || pid == 0 || ours.contains(&pid) {
            return;
        }
        // SAFETY: `pid` is an exited child of ours that no `Child` owns.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
}

/// Starts the child for the script named `stem` in its own process group (a terminal's ^C reaches
/// only the parent, which forwards it once), with its stdout and stderr passed through prefixed.
pub fn spawn(
    exe: &Path,
    argv: &[OsString],
    stem: &str,
    kept: Option<Arc<Mutex<String>>>,
) -> anyhow::Result<(std::process::Child, Vec<JoinHandle<()>>)> {
    let mut cmd = Command::new(exe);
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SIGTERM, not SIGKILL: the child then stops its machines as on any SIGTERM.
    qemu_proc::die_with_parent(&mut cmd, libc::SIGTERM);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let prefix = format!("[{stem}] ");
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(pass_through(out, prefix.clone(), Stream::Stdout, None));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(pass_through(err, prefix, Stream::Stderr, kept));
    }
    Ok((child, readers))
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A thread copying `from` line by line to our own `to`, each line prefixed, whole lines written at
/// once so the children's lines never interleave; `kept` gets the text too (its last part).
fn pass_through(
    from: impl Read + Send + 'static,
    prefix: String,
    to: Stream,
    kept: Option<Arc<Mutex<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut from = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut from).take(MAX_LINE).read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            let mut whole = Vec::with_capacity(prefix.len() + line.len());
            whole.extend_from_slice(prefix.as_bytes());
            whole.extend_from_slice(&line);
            let _ = match to {
                Stream::Stdout => std::io::stdout().lock().write_all(&whole),
                Stream::Stderr => std::io::stderr().lock().write_all(&whole),
            };
            if let Some(kept) = &kept {
                let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                k.push_str(&String::from_utf8_lossy(&line));
                if k.len() > KEPT_OUTPUT {
                    // Drop whole lines from the front.
                    let cut = k.len() - KEPT_OUTPUT;
                    let cut = k[cut..].find('\n').map_or(k.len(), |at| cut + at + 1);
                    k.drain(..cut);
                }
            }
        }
    })
}
