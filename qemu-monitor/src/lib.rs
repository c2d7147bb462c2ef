//! A sans-IO codec for QEMU 7.2's human monitor protocol (HMP) on `-monitor unix:PATH`; the
//! machine protocol (QMP, `-qmp unix:PATH`) has its own codec of the same shape in [`qmp`].
//!
//! What travels on the wire (see `tests/data/*.out`, captured from a real QEMU 7.2 by
//! `tests/data/capture.py`):
//!
//! ```text
//! QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu)
//! i\e[K\e[Din\e[K\e[D\e[Dinf\e[K ... info status\e[K\r\n      <- readline's echo of "info status\n"
//! VM status: paused (prelaunch)\r\n                          <- the reply, lines ending in \r\n
//! (qemu)                                                     <- the prompt: the reply is complete
//! ```
//!
//! - QEMU greets every new connection with one line and a prompt: [`Event::Banner`].
//! - Its readline echoes a command by redrawing the whole line after every byte it reads (`ESC [ D`
//!   moves back, the line is printed again, `ESC [ K` clears the rest), so the echo of an n-byte
//!   command is about 2n² bytes and never contains a line end. It ends with the full command, `ESC [ K`
//!   and `\r\n`; [`Monitor`] discards it without buffering it, and checks that it ends that way.
//! - The reply is everything up to `(qemu) ` at the start of a line. Real replies always end in `\r\n`
//!   (checked for every `info` subcommand of QEMU 7.2), so a prompt only counts at a line start and
//!   `(qemu) ` in the middle of a line (`Error: Device 'x (qemu) y' not found`) is text. Only a string
//!   the host chose that contains a line break followed by `(qemu) ` (a VM `-name`, say) can fake a
//!   prompt; HMP cannot tell, but the output that follows the fake prompt then shows up when no reply
//!   is due, or instead of the next echo, and is reported as [`Event::Lost`].
//! - `quit` gets no prompt: QEMU echoes it and closes the connection. A pending `quit` (or `q`)
//!   therefore completes with [`Event::Reply`] (normally `""`) at end of file, followed by
//!   [`Event::Closed`], and no [`Event::Lost`].
//! - Commands that make readline ask for a password (`change vnc password` without one) are not
//!   supported: QEMU then prints `Password: ` instead of a prompt, and the reply never completes.
//!
//! Commands may be queued at any time, even before the greeting: QEMU reads them one after another and
//! answers them in order (see `tests/data/pipelined.out` and `queued-before-banner.out`).
//!
//! Replies are truncated, not streamed: each command gets exactly one [`Event::Reply`], which keeps
//! callers simple, and the replies a driver needs (`screendump`, `sendkey`, `set_link`, `info …`) are
//! small. Text beyond [`Monitor::with_max_reply`] bytes is counted and dropped, and the reply then ends
//! with a [`TRUNCATION_MARKER`] line, so memory stays bounded whatever QEMU sends.
//!
//! The caller owns I/O: write what [`Monitor::command`] returns, pass everything read to
//! [`Monitor::feed`] (and end of file to [`Monitor::handle_eof`]), then drain [`Monitor::poll_event`].
//!
//! ```
//! use qemu_monitor::{Event, Monitor};
//!
//! let mut m = Monitor::new();
//! m.feed(b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ");
//! assert_eq!(
//!     m.poll_event(),
//!     Some(Event::Banner("QEMU 7.2.22 monitor - type 'help' for more information".into()))
//! );
//! assert_eq!(m.command("info status").unwrap(), b"info status\n");
//! // The echo's last redraw, then the reply and the next prompt.
//! m.feed(b"\x1b[D\x1b[Dinfo status\x1b[K\r\nVM status: running\r\n(qemu) ");
//! assert_eq!(m.poll_event(), Some(Event::Reply("VM status: running\n".into())));
//! assert!(m.is_ready());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::VecDeque;

pub mod qmp;

/// The prompt QEMU prints when it waits for a command.
pub const PROMPT: &str = "(qemu) ";

/// Longest command QEMU's readline keeps (`READLINE_CMD_BUF_SIZE - 1`); it silently drops the rest.
pub const MAX_COMMAND_LEN: usize = 4095;

/// Reply cap used by [`Monitor::new`]: far above any `info` output of a small VM.
pub const DEFAULT_MAX_REPLY: usize = 1 << 20;

/// Start of the line that ends a reply whose tail was dropped because it exceeded the cap.
pub const TRUNCATION_MARKER: &str = "[qemu-monitor: reply truncated";

/// Longest greeting line kept; the greeting is one short line, anything longer is garbage.
const MAX_BANNER: usize = 4096;

/// What readline prints after the redrawn line: erase to the end of line, then its `\n` as `\r\n`.
const ECHO_END: &[u8] = b"\x1b[K\r";

/// Errors from [`Monitor::command`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command has a byte that QEMU's readline would act on instead of inserting it.
    #[error("command byte {index} (0x{byte:02x}) is a control byte for qemu's readline")]
    ControlByte {
        /// Offset of the byte in the command.
        index: usize,
        /// The byte: below 0x20, 0x7f, or 0x9b (a one-byte CSI to readline).
        byte: u8,
    },
    /// The command is longer than QEMU's readline keeps.
    #[error("command is {len} bytes, qemu's readline keeps at most {MAX_COMMAND_LEN}")]
    TooLong {
        /// Length of the command in bytes.
        len: usize,
    },
    /// The protocol desynchronised earlier; replies could not be matched to commands any more.
    #[error("the monitor connection is out of sync")]
    Lost,
    /// The connection reached end of file.
    #[error("the monitor connection is closed")]
    Closed,
}

/// What the monitor learned from the bytes fed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// QEMU's greeting line (without its line end), seen with the first prompt.
    Banner(String),
    /// The reply to the oldest pending command: echo and escape sequences removed, `\r\n` turned into
    /// `\n`, usually ending in `\n`; `""` for commands that print nothing. Invalid UTF-8 becomes
    /// U+FFFD; text above the cap is dropped and a [`TRUNCATION_MARKER`] line ends the reply instead.
    Reply(String),
    /// The protocol desynchronised; reported once, after which commands are refused.
    Lost {
        /// What was seen instead of what was expected.
        reason: String,
    },
    /// The connection reached end of file; reported once, last.
    Closed,
}

/// Where the codec is in the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Skipping whatever precedes the first prompt, remembering its last line as the greeting.
    PreBanner,
    /// Prompt seen, nothing pending: QEMU has nothing to say.
    Idle,
    /// Discarding readline's echo of the oldest pending command, up to its line end.
    Echo,
    /// Collecting the reply of the oldest pending command, up to a prompt at a line start.
    Reply,
    /// Desynchronised; input is ignored.
    Lost,
    /// End of file seen; input is ignored.
    Closed,
}

/// Where the terminal-escape stripper is inside an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// After `ESC`.
    Start,
    /// After `ESC` and intermediate bytes (e.g. `ESC ( B`).
    Intermediate,
    /// Inside `ESC [ params`.
    Csi,
}

/// Where the prompt matcher is on the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line: a prompt may begin here.
    Start,
    /// The line so far is this many bytes of [`PROMPT`]; they are held back until it is decided.
    Prompt(usize),
    /// Past the start of a line: no prompt until the next `\n`.
    Middle,
}

/// A command written to QEMU whose reply has not been seen yet.
#[derive(Debug, Clone)]
struct Pending {
    text: String,
    /// `quit` gets no prompt: end of file completes it.
    quits: bool,
}

/// One HMP connection: encodes commands and decodes greeting and replies.
///
/// Methods come in four groups: getters ([`is_ready`](Monitor::is_ready), …), input
/// ([`feed`](Monitor::feed), [`handle_eof`](Monitor::handle_eof)), the command mutator
/// ([`command`](Monitor::command)) and output ([`poll_event`](Monitor::poll_event)). After each input
/// call, drain `poll_event` until it returns `None`. Memory is bounded: at most the reply cap, one
/// greeting line and the tail of one echo are held, however the input is split.
#[derive(Debug, Clone)]
pub struct Monitor {
    phase: Phase,
    esc: Esc,
    line: Line,
    max_reply: usize,
    /// Commands written, oldest first; the front one is being echoed or answered.
    pending: VecDeque<Pending>,
    /// The reply so far, at most `max_reply` bytes.
    reply: Vec<u8>,
    /// Reply bytes dropped above the cap.
    dropped: u64,
    /// Before the greeting: the current line, and the last non-empty complete one.
    line_buf: Vec<u8>,
    banner: Vec<u8>,
    /// The last bytes of the current echo, to check how it ends; at most twice what is checked.
    echo_tail: Vec<u8>,
    events: VecDeque<Event>,
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// A monitor waiting for QEMU's greeting, with the [`DEFAULT_MAX_REPLY`] cap.
    #[must_use]
    pub fn new() -> Self {
        Self {
            phase: Phase::PreBanner,
            esc: Esc::None,
            line: Line::Start,
            max_reply: DEFAULT_MAX_REPLY,
            pending: VecDeque::new(),
            reply: Vec::new(),
            dropped: 0,
            line_buf: Vec::new(),
            banner: Vec::new(),
            echo_tail: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Keeps at most `bytes` of each reply's text; the rest is dropped and marked with [`TRUNCATION_MARKER`].
    #[must_use]
    pub fn with_max_reply(mut self, bytes: usize) -> Self {
        self.max_reply = bytes;
        self
    }

    // ---- getters ----

    /// Whether the greeting and a prompt were seen and no command is pending.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Whether end of file was seen.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// How many commands were written and not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The command whose reply is awaited next, for error messages.
    pub fn pending_command(&self) -> Option<&str> {
        self.pending.front().map(|p| p.text.as_str())
    }

    /// The reply collected so far for the oldest pending command (capped), for timeout messages.
    pub fn partial_reply(&self) -> String {
        String::from_utf8_lossy(&self.reply).into_owned()
    }

    /// The reply cap in bytes.
    pub fn max_reply(&self) -> usize {
        self.max_reply
    }

    /// Bytes of input currently held (reply, greeting line, echo tail), not counting queued events.
    pub fn buffered(&self) -> usize {
        self.reply.len() + self.line_buf.len() + self.banner.len() + self.echo_tail.len()
    }

    // ---- input ----

    /// Takes bytes read from the monitor socket. Never fails: problems become [`Event::Lost`].
    pub fn feed(&mut self, input: &[u8]) {
        for &b in input {
            match self.phase {
                Phase::Lost | Phase::Closed => return,
                Phase::Idle => {
                    // QEMU prints nothing between a prompt and the next command it reads.
                    self.lose(format!(
                        "unexpected output '{}' while no command was pending",
                        b.escape_ascii()
                    ));
                    return;
                }
                Phase::Echo => self.echo_byte(b),
                Phase::PreBanner | Phase::Reply => self.text_byte(b),
            }
        }
    }

    /// Takes end of file on the monitor socket: yields [`Event::Closed`], after a [`Event::Reply`]
    /// for a pending `quit`, or an [`Event::Lost`] if other commands were still pending.
    pub fn handle_eof(&mut self) {
        match self.phase {
            Phase::Closed => return,
            Phase::Lost | Phase::Idle => {}
            Phase::PreBanner => {
                if !self.pending.is_empty() {
                    self.lose(format!(
                        "connection closed before the greeting, with {} command(s) pending",
                        self.pending.len()
                    ));
                }
            }
            Phase::Echo | Phase::Reply => {
                if self.pending.front().is_some_and(|p| p.quits) {
                    // QEMU exits without a prompt: the closed connection is quit's answer.
                    if self.phase == Phase::Reply {
                        self.flush_prompt_prefix();
                    }
                    self.finish_reply();
                }
                if let Some(p) = self.pending.front() {
                    let what = format!(
                        "connection closed while waiting for the reply to {:?}",
                        p.text
                    );
                    self.lose(what);
                }
            }
        }
        self.phase = Phase::Closed;
        self.pending.clear();
        self.reply = Vec::new();
        self.line_buf = Vec::new();
        self.banner = Vec::new();
        self.echo_tail = Vec::new();
        self.events.push_back(Event::Closed);
    }

    // ---- command ----

    /// Queues `cmd` and returns the bytes to write for it (`cmd` and `\n`).
    ///
    /// Commands may be queued before the greeting and while others are pending; replies come in order.
    /// Errors if `cmd` holds a byte readline would interpret (newline, other controls, DEL, 0x9b) or is
    /// longer than [`MAX_COMMAND_LEN`], or if the connection is lost or closed.
    #[must_use = "the returned bytes must be written to the monitor socket"]
    pub fn command(&mut self, cmd: &str) -> Result<Vec<u8>, Error> {
        match self.phase {
            Phase::Lost => return Err(Error::Lost),
            Phase::Closed => return Err(Error::Closed),
            _ => {}
        }
        if let Some((index, &byte)) = cmd
            .as_bytes()
            .iter()
            .enumerate()
            .find(|(_, &b)| b < 0x20 || b == 0x7f || b == 0x9b)
        {
            return Err(Error::ControlByte { index, byte });
        }
        if cmd.len() > MAX_COMMAND_LEN {
            return Err(Error::TooLong { len: cmd.len() });
        }
        // HMP looks commands up by exact name; `q` is quit's alias.
        let quits = matches!(cmd.split_whitespace().next(), Some("quit" | "q"));
        self.pending.push_back(Pending {
            text: cmd.to_owned(),
            quits,
        });
        if self.phase == Phase::Idle {
            self.start_echo();
        }
        let mut wire = Vec::with_capacity(cmd.len() + 1);
        wire.extend_from_slice(cmd.as_bytes());
        wire.push(b'\n');
        Ok(wire)
    }

    // ---- output ----

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internals ----

    fn lose(&mut self, reason: String) {
        self.phase = Phase::Lost;
        self.pending.clear();
        self.reply = Vec::new();
        self.echo_tail = Vec::new();
        self.events.push_back(Event::Lost { reason });
    }

    fn start_echo(&mut self) {
        self.phase = Phase::Echo;
        self.echo_tail.clear();
    }

    /// One byte of readline's echo: only its line end matters, and the bytes just before it.
    fn echo_byte(&mut self, b: u8) {
        let front = &self.pending[0].text;
        let keep = front.len() + ECHO_END.len();
        if b != b'\n' {
            // Keep a window of the last `keep` bytes; halving amortises the shift to O(1) a byte.
            if self.echo_tail.len() >= 2 * keep {
                self.echo_tail.drain(..self.echo_tail.len() - keep);
            }
            self.echo_tail.push(b);
            return;
        }
        // An empty line is never redrawn: its echo is just the line end.
        let ok = if front.is_empty() {
            self.echo_tail == b"\r"
        } else {
            self.echo_tail.ends_with(ECHO_END)
                && self.echo_tail[..self.echo_tail.len() - ECHO_END.len()]
                    .ends_with(front.as_bytes())
        };
        if !ok {
            let start = self.echo_tail.len().saturating_sub(keep);
            let seen = String::from_utf8_lossy(&self.echo_tail[start..]).into_owned();
            let reason = format!("the echo of {front:?} ended in {seen:?}");
            self.lose(reason);
            return;
        }
        self.echo_tail.clear();
        self.phase = Phase::Reply;
        self.esc = Esc::None;
        self.line = Line::Start;
    }

    /// One byte of greeting or reply: strip escapes and `\r`, then look for a prompt at a line start.
    fn text_byte(&mut self, b: u8) {
        let next = match (self.esc, b) {
            (Esc::None, _) => None,
            (Esc::Start, b'[') => Some(Esc::Csi),
            (Esc::Start | Esc::Intermediate, 0x20..=0x2f) => Some(Esc::Intermediate),
            (Esc::Start | Esc::Intermediate, 0x30..=0x7e) => Some(Esc::None),
            (Esc::Csi, 0x20..=0x3f) => Some(Esc::Csi),
            (Esc::Csi, 0x40..=0x7e) => Some(Esc::None),
            // Not a sequence after all: the byte is text again.
            _ => {
                self.esc = Esc::None;
                None
            }
        };
        if let Some(esc) = next {
            self.esc = esc;
            return;
        }
        match b {
            0x1b => self.esc = Esc::Start,
            // Lines end in \r\n on the wire; a lone \r only moves a terminal's cursor.
            b'\r' => {}
            _ => self.clean_byte(b),
        }
    }

    /// One byte of clean text: the prompt matcher, then the reply or greeting.
    fn clean_byte(&mut self, b: u8) {
        let prompt = PROMPT.as_bytes();
        let matched = match self.line {
            Line::Start => Some(0),
            Line::Prompt(n) => Some(n),
            Line::Middle => None,
        };
        if let Some(n) = matched {
            if prompt[n] == b {
                if n + 1 == prompt.len() {
                    self.line = Line::Middle;
                    self.prompt_seen();
                } else {
                    self.line = Line::Prompt(n + 1);
                }
                return;
            }
            // Not a prompt: what was held back is text.
            self.flush_prompt_prefix();
        }
        self.push_text(b);
        self.line = if b == b'\n' {
            Line::Start
        } else {
            Line::Middle
        };
    }

    fn flush_prompt_prefix(&mut self) {
        if let Line::Prompt(n) = self.line {
            self.line = Line::Middle;
            for &p in &PROMPT.as_bytes()[..n] {
                self.push_text(p);
            }
        }
    }

    fn push_text(&mut self, b: u8) {
        match self.phase {
            Phase::PreBanner => {
                if b == b'\n' {
                    if self.line_buf.iter().any(|c| !c.is_ascii_whitespace()) {
                        std::mem::swap(&mut self.banner, &mut self.line_buf);
                    }
                    self.line_buf.clear();
                } else if self.line_buf.len() < MAX_BANNER {
                    self.line_buf.push(b);
                }
            }
            _ => {
                if self.reply.len() < self.max_reply {
                    self.reply.push(b);
                } else {
                    self.dropped += 1;
                }
            }
        }
    }

    fn prompt_seen(&mut self) {
        match self.phase {
            Phase::PreBanner => {
                // A prompt only counts at a line start, so the greeting is the last complete
                // non-empty line; from "QEMU" on, in case garbage without a line end preceded it.
                let line = std::mem::take(&mut self.banner);
                let start = line.windows(5).position(|w| w == b"QEMU ").unwrap_or(0);
                let text = String::from_utf8_lossy(&line[start..]).trim().to_owned();
                self.line_buf = Vec::new();
                self.events.push_back(Event::Banner(text));
            }
            _ => self.finish_reply(),
        }
        if self.pending.is_empty() {
            self.phase = Phase::Idle;
        } else {
            self.start_echo();
        }
    }

    /// Emits the collected reply for the oldest pending command.
    fn finish_reply(&mut self) {
        let mut text = String::from_utf8_lossy(&self.reply).into_owned();
        // Repairing invalid UTF-8 can triple the size; the cap is on the text delivered.
        if text.len() > self.max_reply {
            let mut cut = self.max_reply;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.dropped += (text.len() - cut) as u64;
            text.truncate(cut);
        }
        if self.dropped > 0 {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "{TRUNCATION_MARKER} after {} bytes, {} bytes dropped]\n",
                self.max_reply, self.dropped
            ));
        }
        self.reply = Vec::new();
        self.dropped = 0;
        self.pending.pop_front();
        self.events.push_back(Event::Reply(text));
    }
}
