//! The guest command protocol over the backdoor shell, as a sans-IO state machine.
//!
//! The guest runs a POSIX shell (busybox `ash`, `dash` or `bash`) whose stdin and stdout are the
//! backdoor channel (`/dev/hvc0`), after printing [`BANNER`]. [`Session`] frames each command so that
//! the shell does all the work with builtins and one subshell. The first command of a session defines
//! a shell function that does the framing, so each command costs few bytes more than its text (bash
//! reading its script from a device, as NixOS's backdoor runs it, reads one byte per read(2)):
//!
//! ```text
//! _vmtd() { printf '\036B%s\036' "$1"; ( trap "printf '\036E%s %d\036' $1 \"\$?\"" EXIT; set --; . /proc/self/fd/3 ) </dev/null & vmtd_job=$!; }
//! _vmtd <nonce> 3<<'vmtd_<nonce>'
//! <command text, verbatim>
//! vmtd_<nonce>
//! ```
//!
//! The nonce is hex digits, so the trap can carry it expanded; `set --` gives the command the
//! positional parameters of the shell's top level (none), not the function's.
//!
//! - the command text is never re-quoted: a quoted here-document passes it byte for byte, and `.` parses it
//!   as a script of its own, so comments, heredocs, unbalanced quotes in strings and `exit N` all work;
//! - the subshell keeps `exit` and `cd` from touching the backdoor shell, and `</dev/null` keeps `cat` from
//!   eating the protocol; its EXIT trap writes the end marker with the command's status, `exit N` included;
//! - the subshell runs in the background, so the backdoor shell keeps reading while a command runs:
//!   [`Session::interrupt`] can then stop a command that outlived its timeout (the process tree under
//!   `$vmtd_job`, found in `/proc`) and the shell is usable again. A command killed by a signal its
//!   subshell cannot trap (SIGKILL) writes no end marker; the caller's timeout covers that;
//! - output is the command's stdout as it arrives, between a start and an end marker carrying a fresh
//!   random nonce, so background jobs (`sleep 100 &`) do not hold the command open, late output of earlier
//!   commands is told apart ([`Event::Stray`]), and output may contain any bytes, even old markers;
//! - the markers are written with octal escapes, so the bytes we send never contain the bytes we wait for,
//!   even if the guest's terminal echoes input.
//!
//! The caller owns I/O: write what [`Session::command`] returns, pass everything read to
//! [`Session::feed`], then drain [`Session::poll_event`].
//!
//! ```
//! use guest_shell::{Event, Session};
//!
//! let mut s = Session::with_nonces(|| 0x2a);
//! s.feed(b"Spawning backdoor root shell...\n");
//! assert_eq!(s.poll_event(), Some(Event::Banner));
//! let _bytes_to_write = s.command(b"echo hi").unwrap();
//! s.feed(b"\x1eB0000000000000000000000000000002a\x1ehi\n");
//! s.feed(b"\x1eE0000000000000000000000000000002a 0\x1e");
//! assert_eq!(s.poll_event(), Some(Event::Output(b"hi\n".to_vec())));
//! assert_eq!(s.poll_event(), Some(Event::Exited { status: 0 }));
//! ```
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;

/// The line a NixOS-compatible guest prints on the backdoor channel once its root shell is ready.
pub const BANNER: &[u8] = b"Spawning backdoor root shell...";

/// Stops the process tree of the last command (`$vmtd_job`). POSIX sh with /proc only: each process
/// is stopped before its children are looked up, so the tree cannot grow while it is walked. The
/// field after the `(comm)` of /proc/PID/stat (which may hold spaces) is the state, then the ppid.
const INTERRUPT: &[u8] = br#"vmtd_stop() {
  kill -STOP "$1" 2>/dev/null || return 0
  for vmtd_s in /proc/[0-9]*/stat; do
    read -r vmtd_l < "$vmtd_s" 2>/dev/null || continue
    case " ${vmtd_l##*) }" in " "?" $1 "*) vmtd_s=${vmtd_s%/stat}; vmtd_stop "${vmtd_s#/proc/}" ;; esac
  done
  kill -KILL "$1" 2>/dev/null
}
[ -n "$vmtd_job" ] && vmtd_stop "$vmtd_job"
true"#;

/// Defines the shell function every command is framed with (see the crate doc); sent once per
/// shell session, before its first command.
const FRAMER: &[u8] = b"_vmtd() { printf '\\036B%s\\036' \"$1\"; ( trap \"printf '\\036E%s %d\\036' $1 \\\"\\$?\\\"\" EXIT; set --; . /proc/self/fd/3 ) </dev/null & vmtd_job=$!; }\n";

/// Defines the function that runs a `test` in the backdoor shell itself (see [`Session::test`]),
/// sent once per shell session before its first such test. `vmtd_job=`: no process runs for it, so
/// an interrupt must not stop the last command's (gone, maybe reused) process ID.
const TEST_FRAMER: &[u8] = b"_vmtt() { vmtd_job=; printf '\\036B%s\\036' \"$1\"; vmtd_n=$1; shift; test \"$@\" </dev/null; printf '\\036E%s %d\\036' \"$vmtd_n\" \"$?\"; }\n";

/// Longest exit status we accept: a shell reports 0..=255, three digits.
const MAX_STATUS_DIGITS: usize = 3;

/// Errors from building a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The shell has not printed its banner yet (or the channel closed).
    #[error("the backdoor shell is not connected")]
    NotConnected,
    /// One command at a time: the previous one has not exited.
    #[error("a command is already running on the backdoor shell")]
    Busy,
    /// A shell script cannot carry NUL bytes.
    #[error("the command contains a NUL byte at offset {0}")]
    Nul(usize),
    /// The protocol desynchronised earlier; the session cannot be trusted.
    #[error("the backdoor shell session is lost")]
    Lost,
}

/// What the session learned from the bytes fed to it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The shell printed [`BANNER`]: commands may be sent.
    Banner,
    /// A piece of the running command's stdout, in order.
    Output(Vec<u8>),
    /// The running command finished with this exit status.
    Exited {
        /// The shell's `$?`: 0..=255, 128+N when killed by signal N.
        status: i32,
    },
    /// Bytes outside any command: late output of background jobs, or of an abandoned command.
    Stray(Vec<u8>),
    /// The protocol desynchronised; reported once, after which commands are refused.
    Lost {
        /// What was seen instead of what was expected.
        reason: String,
    },
    /// The channel reached end of file.
    Closed {
        /// Whether a command was running (its output so far was already delivered).
        during_command: bool,
    },
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Output is bytes; show it as escaped text so test failures are readable.
        match self {
            Event::Banner => write!(f, "Banner"),
            Event::Output(b) => write!(f, "Output({:?})", String::from_utf8_lossy(b)),
            Event::Exited { status } => write!(f, "Exited {{ status: {status} }}"),
            Event::Stray(b) => write!(f, "Stray({:?})", String::from_utf8_lossy(b)),
            Event::Lost { reason } => write!(f, "Lost {{ reason: {reason:?} }}"),
            Event::Closed { during_command } => {
                write!(f, "Closed {{ during_command: {during_command} }}")
            }
        }
    }
}

#[derive(Debug)]
enum State {
    AwaitBanner,
    Idle,
    /// Command sent; bytes before its start marker are stray.
    AwaitStart,
    Running,
    Status(Vec<u8>),
    Lost,
    Closed,
}

/// One backdoor shell session: frames commands and decodes their output.
///
/// Drain order: after each [`feed`](Session::feed) or [`handle_eof`](Session::handle_eof), call
/// [`poll_event`](Session::poll_event) until it returns `None`.
pub struct Session {
    state: State,
    /// Bytes received but not yet turned into events: at most a marker's length.
    buf: Vec<u8>,
    start_marker: Vec<u8>,
    end_marker: Vec<u8>,
    /// The banner's line end may arrive in a later read; it is not stray output.
    after_banner: bool,
    events: VecDeque<Event>,
    nonces: Box<dyn FnMut() -> u128 + Send>,
    /// Whether [`FRAMER`] was sent to this shell.
    framer_sent: bool,
    /// Whether [`TEST_FRAMER`] was sent to this shell.
    test_framer_sent: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session that draws each command's nonce from `nonces` (inject a fixed source in tests; use a
    /// cryptographic random source otherwise, so a guest cannot forge an end marker).
    pub fn with_nonces(nonces: impl FnMut() -> u128 + Send + 'static) -> Self {
        Session {
            state: State::AwaitBanner,
            buf: Vec::new(),
            start_marker: Vec::new(),
            end_marker: Vec::new(),
            after_banner: false,
            events: VecDeque::new(),
            nonces: Box::new(nonces),
            framer_sent: false,
            test_framer_sent: false,
        }
    }

    /// Whether the banner was seen and the channel is usable.
    pub fn is_connected(&self) -> bool {
        !matches!(self.state, State::AwaitBanner | State::Lost | State::Closed)
    }

    /// Whether a command is in flight.
    pub fn is_busy(&self) -> bool {
        matches!(
            self.state,
            State::AwaitStart | State::Running | State::Status(_)
        )
    }

    /// Frames `cmd` (any shell text, passed verbatim) and returns the bytes to write to the channel.
    #[must_use = "the returned bytes must be written to the backdoor channel"]
    pub fn command(&mut self, cmd: &[u8]) -> Result<Vec<u8>, Error> {
        self.ready_for(&[cmd])?;
        // A command that happens to contain the nonce could end its own here-document early.
        let nonce = self.fresh_nonce(&[cmd]);
        let mut out = Vec::with_capacity(cmd.len() + FRAMER.len() + 100);
        if !self.framer_sent {
            out.extend_from_slice(FRAMER);
            self.framer_sent = true;
        }
        out.extend_from_slice(b"_vmtd ");
        out.extend_from_slice(nonce.as_bytes());
        out.extend_from_slice(b" 3<<'vmtd_");
        out.extend_from_slice(nonce.as_bytes());
        out.extend_from_slice(b"'\n");
        out.extend_from_slice(cmd);
        if !cmd.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(b"vmtd_");
        out.extend_from_slice(nonce.as_bytes());
        out.push(b'\n');

        self.expect(&nonce);
        Ok(out)
    }

    /// Frames `test ARGS…` for the shell to run itself, with no subshell: the try of a polling wait
    /// (`test -e FILE`) then starts no process, where a fork of bash costs the guest ~9.5 ms of CPU
    /// under TCG. `test` is a builtin of every shell we meet (ash, dash, bash), cannot exit the shell
    /// or change its state, and its arguments are quoted here, so no text reaches the shell as code.
    /// Its events are those of [`command`](Session::command); [`interrupt`](Session::interrupt) cannot
    /// stop it (a `test` only blocks on a file system that hangs), but frees the shell once it ends.
    #[must_use = "the returned bytes must be written to the backdoor channel"]
    pub fn test(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, Error> {
        self.ready_for(args)?;
        let nonce = self.fresh_nonce(args);
        let mut out = Vec::with_capacity(TEST_FRAMER.len() + 64);
        if !self.test_framer_sent {
            out.extend_from_slice(TEST_FRAMER);
            self.test_framer_sent = true;
        }
        out.extend_from_slice(b"_vmtt ");
        out.extend_from_slice(nonce.as_bytes());
        for arg in args {
            out.extend_from_slice(b" '");
            for &b in *arg {
                if b == b'\'' {
                    out.extend_from_slice(b"'\\''");
                } else {
                    out.push(b);
                }
            }
            out.push(b'\'');
        }
        out.push(b'\n');
        self.expect(&nonce);
        Ok(out)
    }

    /// A nonce none of `parts` contains, as hex digits: an echoing terminal must not show a marker
    /// before the command ran.
    fn fresh_nonce(&mut self, parts: &[&[u8]]) -> String {
        loop {
            let hex = format!("{:032x}", (self.nonces)());
            if !parts.iter().any(|p| contains(p, hex.as_bytes())) {
                return hex;
            }
        }
    }

    /// Refuses a new command unless the shell is idle and `parts` hold no NUL byte.
    fn ready_for(&self, parts: &[&[u8]]) -> Result<(), Error> {
        match self.state {
            State::Idle => {}
            State::AwaitBanner | State::Closed => return Err(Error::NotConnected),
            State::Lost => return Err(Error::Lost),
            _ => return Err(Error::Busy),
        }
        let mut offset = 0;
        for part in parts {
            if let Some(at) = part.iter().position(|&b| b == 0) {
                return Err(Error::Nul(offset + at));
            }
            offset += part.len();
        }
        Ok(())
    }

    /// Awaits the markers of the command framed with `nonce`.
    fn expect(&mut self, nonce: &str) {
        self.start_marker = [b"\x1eB", nonce.as_bytes(), b"\x1e"].concat();
        self.end_marker = [b"\x1eE", nonce.as_bytes(), b" "].concat();
        self.state = State::AwaitStart;
    }

    /// Gives up on the running command: its remaining output will be reported as [`Event::Stray`].
    ///
    /// The caller must make the guest stop it (the shell still runs it); the next command's start
    /// marker tells its output apart from the abandoned one's.
    pub fn abandon(&mut self) {
        if self.is_busy() {
            let rest = std::mem::take(&mut self.buf);
            self.push_stray(rest);
            self.state = State::Idle;
        }
    }

    /// Abandons the running command and frames one that stops it in the guest: the command's subshell
    /// and every process under it get SIGSTOP (so none forks anew), then SIGKILL. The returned bytes
    /// are a command like any other: its [`Event::Exited`] says the shell is free again.
    #[must_use = "the returned bytes must be written to the backdoor channel"]
    pub fn interrupt(&mut self) -> Result<Vec<u8>, Error> {
        self.abandon();
        self.command(INTERRUPT)
    }

    /// Takes up a shell that printed its banner to an earlier session, idle between commands (a
    /// machine restored from a snapshot): no banner comes, commands can go at once.
    pub fn resume(&mut self) {
        self.reset();
        self.state = State::Idle;
    }

    /// Expects the shell to print its banner again (the guest restarted its backdoor, or rebooted).
    pub fn reset(&mut self) {
        self.state = State::AwaitBanner;
        self.buf.clear();
        // Events of the old shell (its Closed, say) must not reach whoever waits on the new one.
        self.events.clear();
        self.after_banner = false;
        // A new shell (or one restored from a snapshot) gets the framing function again.
        self.framer_sent = false;
        self.test_framer_sent = false;
    }

    /// Takes bytes read from the channel. Never fails: problems come out as events.
    pub fn feed(&mut self, input: &[u8]) {
        if matches!(self.state, State::Lost | State::Closed) {
            return;
        }
        self.buf.extend_from_slice(input);
        self.process();
    }

    /// The channel reached end of file.
    pub fn handle_eof(&mut self) {
        let during_command = self.is_busy();
        if matches!(self.state, State::Running) && !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.events.push_back(Event::Output(rest));
        }
        if !matches!(self.state, State::Closed) {
            self.buf.clear();
            self.state = State::Closed;
            self.events.push_back(Event::Closed { during_command });
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn process(&mut self) {
        if self.after_banner {
            let eol = self
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.buf.drain(..eol);
            self.after_banner = self.buf.is_empty();
        }
        loop {
            match &mut self.state {
                State::AwaitBanner => {
                    let Some(at) = find_from(&self.buf, BANNER, 0) else {
                        // Pre-banner chatter is irrelevant; keep only what could start the banner.
                        let keep = partial_suffix(&self.buf, BANNER);
                        self.buf.drain(..self.buf.len() - keep);
                        return;
                    };
                    // The banner line ends with "\n" (or "\r\n" on a cooked terminal); swallow it,
                    // now or at the start of the next read.
                    let end = at + BANNER.len();
                    self.buf.drain(..end);
                    self.after_banner = true;
                    self.state = State::Idle;
                    self.events.push_back(Event::Banner);
                    return self.process();
                }
                State::Idle => {
                    let stray = std::mem::take(&mut self.buf);
                    self.push_stray(stray);
                    return;
                }
                State::AwaitStart => {
                    let Some(at) = find_from(&self.buf, &self.start_marker, 0) else {
                        let keep = partial_suffix(&self.buf, &self.start_marker);
                        let stray: Vec<u8> = self.buf.drain(..self.buf.len() - keep).collect();
                        self.push_stray(stray);
                        return;
                    };
                    let stray: Vec<u8> = self.buf.drain(..at).collect();
                    self.push_stray(stray);
                    self.buf.drain(..self.start_marker.len());
                    self.state = State::Running;
                }
                State::Running => {
                    let Some(at) = find_from(&self.buf, &self.end_marker, 0) else {
                        // Hold back only what could be the start of the end marker, so output
                        // streams without delay.
                        let keep = partial_suffix(&self.buf, &self.end_marker);
                        if self.buf.len() > keep {
                            let out: Vec<u8> = self.buf.drain(..self.buf.len() - keep).collect();
                            self.events.push_back(Event::Output(out));
                        }
                        return;
                    };
                    if at > 0 {
                        let out: Vec<u8> = self.buf.drain(..at).collect();
                        self.events.push_back(Event::Output(out));
                    }
                    self.buf.drain(..self.end_marker.len());
                    self.state = State::Status(Vec::new());
                }
                State::Status(digits) => {
                    let mut used = 0;
                    let mut done = None;
                    for &b in &self.buf {
                        used += 1;
                        match b {
                            b'0'..=b'9' if digits.len() < MAX_STATUS_DIGITS => digits.push(b),
                            0x1e if !digits.is_empty() => {
                                done = Some(Ok(parse_status(digits)));
                                break;
                            }
                            _ => {
                                done = Some(Err(format!(
                                    "bad exit status after end marker: {:?}",
                                    String::from_utf8_lossy(&[&digits[..], &[b]].concat())
                                )));
                                break;
                            }
                        }
                    }
                    self.buf.drain(..used);
                    match done {
                        None => return,
                        Some(Ok(status)) => {
                            self.state = State::Idle;
                            self.events.push_back(Event::Exited { status });
                        }
                        Some(Err(reason)) => {
                            self.buf.clear();
                            self.state = State::Lost;
                            self.events.push_back(Event::Lost { reason });
                            return;
                        }
                    }
                }
                State::Lost | State::Closed => {
                    self.buf.clear();
                    return;
                }
            }
        }
    }

    fn push_stray(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        // Merge with a stray event not yet drained, so byte-by-byte feeding does not make one
        // event per byte.
        if let Some(Event::Stray(prev)) = self.events.back_mut() {
            prev.extend_from_slice(&bytes);
        } else {
            self.events.push_back(Event::Stray(bytes));
        }
    }
}

fn parse_status(digits: &[u8]) -> i32 {
    digits
        .iter()
        .fold(0, |acc, &d| acc * 10 + i32::from(d - b'0'))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find_from(haystack, needle, 0).is_some()
}

fn find_from(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() || from > haystack.len() - needle.len() {
        return None;
    }
    // memmem, not a compare at every offset: the whole of a command's output passes through here.
    memchr::memmem::find(&haystack[from..], needle).map(|i| i + from)
}

/// Length of the longest proper suffix of `buf` that is a prefix of `marker`.
fn partial_suffix(buf: &[u8], marker: &[u8]) -> usize {
    let max = marker.len().saturating_sub(1).min(buf.len());
    (1..=max)
        .rev()
        .find(|&n| buf[buf.len() - n..] == marker[..n])
        .unwrap_or(0)
}

/// Joins adjacent [`Event::Output`] and adjacent [`Event::Stray`] events: the same bytes read in
/// other pieces give other events, and this makes them compare equal.
pub fn coalesce(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(Event::Output(a)), Event::Output(b)) => a.extend(b),
            (Some(Event::Stray(a)), Event::Stray(b)) => a.extend(b),
            (_, e) => out.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(nonce: u128) -> Session {
        let mut s = Session::with_nonces(move || nonce);
        s.feed(b"boot noise\r\nSpawning backdoor root shell...\r\n");
        assert_eq!(s.poll_event(), Some(Event::Banner));
        assert_eq!(s.poll_event(), None);
        s
    }

    fn drain(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    const N: &str = "0000000000000000000000000000002a";

    #[test]
    fn golden_command_bytes() {
        let mut s = connected(0x2a);
        let bytes = s.command(b"echo hi # c").unwrap();
        let framer = "_vmtd() { printf '\\036B%s\\036' \"$1\"; \
             ( trap \"printf '\\036E%s %d\\036' $1 \\\"\\$?\\\"\" EXIT; set --; \
             . /proc/self/fd/3 ) </dev/null & vmtd_job=$!; }\n";
        let call = format!("_vmtd {N} 3<<'vmtd_{N}'\necho hi # c\nvmtd_{N}\n");
        assert_eq!(String::from_utf8(bytes).unwrap(), format!("{framer}{call}"));
        // Later commands of the same shell are the call alone.
        s.feed(format!("\x1eB{N}\x1ehi\n\x1eE{N} 0\x1e").as_bytes());
        let _ = drain(&mut s);
        let bytes = s.command(b"echo hi # c").unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), call);
        // A new shell (a reboot) is given the function again.
        s.reset();
        s.feed(BANNER);
        let _ = drain(&mut s);
        let bytes = s.command(b"echo hi # c").unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), format!("{framer}{call}"));
    }

    #[test]
    fn golden_test_bytes() {
        let mut s = connected(0x2a);
        let bytes = s.test(&[b"-e", b"/it's here"]).unwrap();
        let framer = "_vmtt() { vmtd_job=; printf '\\036B%s\\036' \"$1\"; vmtd_n=$1; shift; \
             test \"$@\" </dev/null; printf '\\036E%s %d\\036' \"$vmtd_n\" \"$?\"; }\n";
        let call = format!("_vmtt {N} '-e' '/it'\\''s here'\n");
        assert_eq!(String::from_utf8(bytes).unwrap(), format!("{framer}{call}"));
        s.feed(format!("\x1eB{N}\x1e\x1eE{N} 1\x1e").as_bytes());
        assert_eq!(drain(&mut s), [Event::Exited { status: 1 }]);
        // The function is defined once per shell, apart from the command framing's.
        assert_eq!(
            String::from_utf8(s.test(&[b"-e", b"/it's here"]).unwrap()).unwrap(),
            call
        );
        s.feed(format!("\x1eB{N}\x1e\x1eE{N} 0\x1e").as_bytes());
        let _ = drain(&mut s);
        assert!(String::from_utf8(s.command(b"true").unwrap())
            .unwrap()
            .starts_with("_vmtd() {"));
        // Busy and NUL are refused as for commands.
        assert_eq!(s.test(&[b"-e"]), Err(Error::Busy));
        s.feed(format!("\x1eB{N}\x1e\x1eE{N} 0\x1e").as_bytes());
        let _ = drain(&mut s);
        assert_eq!(s.test(&[b"-e", b"a\0b"]), Err(Error::Nul(3)));
        s.reset();
        s.feed(BANNER);
        let _ = drain(&mut s);
        assert!(String::from_utf8(s.test(&[b"-e"]).unwrap())
            .unwrap()
            .starts_with("_vmtt() {"));
    }

    #[test]
    fn a_resumed_session_takes_commands_without_a_banner() {
        let mut s = Session::with_nonces(|| 0x2a);
        assert!(!s.is_connected());
        s.resume();
        assert!(s.is_connected() && !s.is_busy());
        let _ = s.command(b"true").unwrap();
        s.feed(format!("\x1eB{N}\x1eok\x1eE{N} 0\x1e").as_bytes());
        let events = coalesce(std::iter::from_fn(|| s.poll_event()).collect());
        assert_eq!(
            events,
            [Event::Output(b"ok".to_vec()), Event::Exited { status: 0 }]
        );
    }

    #[test]
    fn golden_command_with_trailing_newline_is_not_doubled() {
        let mut s = connected(0x2a);
        let bytes = s.command(b"true\n").unwrap();
        assert!(String::from_utf8(bytes)
            .unwrap()
            .ends_with(&format!("'vmtd_{N}'\ntrue\nvmtd_{N}\n")));
    }

    #[test]
    fn nonce_found_in_command_is_redrawn() {
        let mut n = 0u128;
        let mut s = Session::with_nonces(move || {
            n += 1;
            n
        });
        s.feed(BANNER);
        let _ = drain(&mut s);
        let bytes = s.command(format!("echo {:032x}", 1).as_bytes()).unwrap();
        assert!(String::from_utf8(bytes)
            .unwrap()
            .contains(&format!("vmtd_{:032x}", 2)));
    }

    #[test]
    fn refuses_nul_busy_and_unconnected() {
        let mut s = Session::with_nonces(|| 1);
        assert_eq!(s.command(b"true"), Err(Error::NotConnected));
        s.feed(BANNER);
        assert_eq!(s.command(b"a\0b"), Err(Error::Nul(1)));
        let _ = s.command(b"true").unwrap();
        assert_eq!(s.command(b"true"), Err(Error::Busy));
    }

    fn reply(nonce: &str, before: &[u8], out: &[u8], status: &str) -> Vec<u8> {
        [
            before,
            format!("\x1eB{nonce}\x1e").as_bytes(),
            out,
            format!("\x1eE{nonce} {status}\x1e").as_bytes(),
        ]
        .concat()
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let input = reply(N, b"late\n", b"a\x1eE\x1eB old \xff\n\x1e", "127");
        let want = vec![
            Event::Stray(b"late\n".to_vec()),
            Event::Output(b"a\x1eE\x1eB old \xff\n\x1e".to_vec()),
            Event::Exited { status: 127 },
        ];
        for cut in 0..=input.len() {
            let mut s = connected(0x2a);
            let _ = s.command(b"x").unwrap();
            s.feed(&input[..cut]);
            s.feed(&input[cut..]);
            assert_eq!(coalesce(drain(&mut s)), want, "cut at {cut}");
        }
        let mut s = connected(0x2a);
        let _ = s.command(b"x").unwrap();
        for b in &input {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(coalesce(drain(&mut s)), want, "byte by byte");
    }

    #[test]
    fn output_streams_without_waiting_for_the_end() {
        let mut s = connected(0x2a);
        let _ = s.command(b"x").unwrap();
        s.feed(format!("\x1eB{N}\x1epartial line").as_bytes());
        assert_eq!(drain(&mut s), vec![Event::Output(b"partial line".to_vec())]);
        // A possible marker prefix is held back, nothing more.
        s.feed(b"more\x1eE00");
        assert_eq!(drain(&mut s), vec![Event::Output(b"more".to_vec())]);
        s.feed(b"x");
        assert_eq!(drain(&mut s), vec![Event::Output(b"\x1eE00x".to_vec())]);
    }

    #[test]
    fn bad_status_is_lost_once() {
        let mut s = connected(0x2a);
        let _ = s.command(b"x").unwrap();
        s.feed(format!("\x1eB{N}\x1e\x1eE{N} 12x").as_bytes());
        assert!(matches!(drain(&mut s).as_slice(), [Event::Lost { .. }]));
        s.feed(b"anything");
        assert_eq!(drain(&mut s), vec![]);
        assert_eq!(s.command(b"true"), Err(Error::Lost));
    }

    #[test]
    fn overlong_status_is_lost() {
        let mut s = connected(0x2a);
        let _ = s.command(b"x").unwrap();
        s.feed(format!("\x1eB{N}\x1e\x1eE{N} 1234\x1e").as_bytes());
        assert!(matches!(drain(&mut s).as_slice(), [Event::Lost { .. }]));
    }

    #[test]
    fn eof_mid_command_delivers_held_back_output() {
        let mut s = connected(0x2a);
        let _ = s.command(b"x").unwrap();
        s.feed(format!("\x1eB{N}\x1eout\x1eE").as_bytes());
        s.handle_eof();
        assert_eq!(
            coalesce(drain(&mut s)),
            vec![
                Event::Output(b"out\x1eE".to_vec()),
                Event::Closed {
                    during_command: true
                }
            ]
        );
        assert_eq!(s.command(b"x"), Err(Error::NotConnected));
    }

    #[test]
    fn eof_when_idle() {
        let mut s = connected(1);
        s.handle_eof();
        s.handle_eof();
        assert_eq!(
            drain(&mut s),
            vec![Event::Closed {
                during_command: false
            }]
        );
    }

    #[test]
    fn abandoned_command_output_is_stray_until_next_start() {
        let mut s = connected(0x2a);
        let _ = s.command(b"yes").unwrap();
        s.feed(format!("\x1eB{N}\x1ey\ny\n").as_bytes());
        let _ = drain(&mut s);
        s.abandon();
        assert!(!s.is_busy());
        s.feed(b"y\ny\n");
        let _ = s.command(b"true").unwrap();
        s.feed(&reply(N, b"y\n", b"", "0"));
        assert_eq!(
            coalesce(drain(&mut s)),
            vec![
                Event::Stray(b"y\ny\ny\n".to_vec()),
                Event::Exited { status: 0 }
            ]
        );
    }

    #[test]
    fn reset_forgets_the_old_shell() {
        let mut s = connected(0x2a);
        let _ = s.command(b"x").unwrap();
        s.handle_eof();
        s.reset();
        assert_eq!(s.poll_event(), None, "no stale Closed");
        assert!(!s.is_connected());
        s.feed(b"Spawning backdoor root shell...\n");
        assert_eq!(drain(&mut s), vec![Event::Banner]);
        assert!(s.command(b"true").is_ok());
    }

    #[test]
    fn banner_split_and_preceded_by_garbage() {
        let input = b"\xff\x00garbage Spawning backdoor\r\nSpawning backdoor root shell...\n";
        for cut in 0..=input.len() {
            let mut s = Session::with_nonces(|| 1);
            s.feed(&input[..cut]);
            s.feed(&input[cut..]);
            assert_eq!(drain(&mut s), vec![Event::Banner], "cut at {cut}");
            assert!(s.is_connected());
        }
    }

    #[test]
    fn byte_soup_never_panics_and_buffer_stays_small() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let mut s = connected(u128::from(round as u32));
            for _ in 0..500 {
                if !s.is_busy() {
                    let _ = s.command(b"x");
                }
                let len = (next() % 40) as usize;
                // Bias toward protocol bytes so markers and digits are hit often.
                let alphabet = format!("\x1eBE0123456789 {:032x}\n", round);
                let bytes: Vec<u8> = (0..len)
                    .map(|_| alphabet.as_bytes()[(next() % alphabet.len() as u64) as usize])
                    .collect();
                s.feed(&bytes);
                assert!(s.buf.len() < 64, "buffer grew to {}", s.buf.len());
                let _ = drain(&mut s);
            }
        }
    }

    #[test]
    fn partial_suffix_cases() {
        assert_eq!(partial_suffix(b"abc\x1eE", b"\x1eE12"), 2);
        assert_eq!(partial_suffix(b"abc", b"\x1eE12"), 0);
        assert_eq!(partial_suffix(b"\x1eE12", b"\x1eE12"), 0);
        assert_eq!(partial_suffix(b"x\x1eE1", b"\x1eE12"), 3);
        assert_eq!(partial_suffix(b"", b"\x1eE12"), 0);
    }
}
