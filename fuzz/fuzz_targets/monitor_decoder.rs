//! Fuzzes `qemu_monitor::Monitor` with scripts of commands, feeds in odd pieces and end of file
//! (format in `fuzz/src/lib.rs`), checking what the crate documents after every call:
//! `feed` never panics, memory stays within the reply cap plus one greeting line and one echo tail,
//! events come in the documented order, replies are clean and capped, and the events do not depend on
//! how the input was split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemu_monitor::{Error, Event, Monitor, DEFAULT_MAX_REPLY, MAX_COMMAND_LEN, TRUNCATION_MARKER};
use vmtd_fuzz::{pieces, Op, Script};

/// Reply caps the config byte picks from: small ones make truncation easy to reach.
const CAPS: [usize; 8] = [0, 1, 2, 7, 16, 64, 1024, DEFAULT_MAX_REPLY];

/// The longest greeting line the monitor keeps (private `MAX_BANNER` in the crate). Before the
/// greeting it holds the current line and the last complete one, so twice this.
const MAX_GREETING_LINE: usize = 4096;

/// `ESC [ K \r`: the monitor keeps at most twice (command + this) bytes of an echo's tail.
const ECHO_END_LEN: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some(script) = Script::parse(data) else {
        return;
    };
    let cap = CAPS[usize::from(script.config % 8)];
    let split = run(&script, cap, true);
    let whole = run(&script, cap, false);
    assert_eq!(split, whole, "the events depend on how the input was split");
});

/// Runs the script, checking every step; returns all events.
fn run(script: &Script, cap: usize, split: bool) -> Vec<Event> {
    let mut m = Monitor::new().with_max_reply(cap);
    let mut model = Model {
        cap,
        ..Model::default()
    };
    model.check_state(&m);
    for op in &script.ops {
        match *op {
            Op::Feed { data, split: s } => {
                for piece in pieces(data, if split { s } else { 0 }) {
                    m.feed(piece);
                    model.drain(&mut m);
                }
            }
            Op::Command(bytes) => {
                let cmd = String::from_utf8_lossy(bytes);
                let got = m.command(&cmd);
                model.check_command(&cmd, got);
                model.drain(&mut m);
            }
            Op::Eof => {
                m.handle_eof();
                model.drain(&mut m);
                assert!(model.closed, "handle_eof gave no Closed");
            }
            // guest-shell only.
            Op::Test(_) | Op::Abandon | Op::Interrupt | Op::Reset | Op::Resume => {}
        }
    }
    model.events
}

/// What the monitor must look like from the outside, given the events it gave.
#[derive(Default)]
struct Model {
    cap: usize,
    /// Commands `command` accepted.
    accepted: usize,
    /// Replies seen.
    replies: usize,
    longest_command: usize,
    banner: bool,
    lost: bool,
    closed: bool,
    events: Vec<Event>,
}

impl Model {
    fn drain(&mut self, m: &mut Monitor) {
        while let Some(e) = m.poll_event() {
            self.check_event(&e);
            self.events.push(e);
        }
        self.check_state(m);
    }

    fn check_event(&mut self, e: &Event) {
        assert!(!self.closed, "{e:?} after Closed");
        match e {
            Event::Banner(text) => {
                assert!(self.events.is_empty(), "Banner after {:?}", self.events);
                assert!(
                    !text.contains(['\r', '\n', '\x1b']),
                    "banner not clean: {text:?}"
                );
                self.banner = true;
            }
            Event::Reply(text) => {
                assert!(!self.lost, "Reply after Lost");
                assert!(self.banner, "Reply before Banner");
                assert!(
                    self.replies < self.accepted,
                    "more replies than commands ({})",
                    self.accepted
                );
                self.check_reply(text);
                self.replies += 1;
            }
            Event::Lost { .. } => {
                assert!(!self.lost, "Lost twice");
                self.lost = true;
            }
            Event::Closed => self.closed = true,
            other => panic!("unknown event {other:?}"),
        }
    }

    /// A reply is clean, and at most `cap` bytes unless it ends with the truncation line.
    fn check_reply(&self, text: &str) {
        assert!(!text.contains(['\r', '\x1b']), "reply not clean: {text:?}");
        if text.len() <= self.cap {
            return;
        }
        let line = format!("{TRUNCATION_MARKER} after {} bytes, ", self.cap);
        let at = text
            .rfind(&line)
            .unwrap_or_else(|| panic!("reply of {} bytes over cap {}", text.len(), self.cap));
        let kept = &text[..at];
        assert!(kept.is_empty() || kept.ends_with('\n'), "marker mid-line");
        assert!(
            kept.len() <= self.cap + 1,
            "kept {} bytes over cap {}",
            kept.len(),
            self.cap
        );
        let dropped = text[at + line.len()..]
            .strip_suffix(" bytes dropped]\n")
            .unwrap_or_else(|| panic!("bad truncation line in {text:?}"));
        assert!(dropped.parse::<u64>().is_ok_and(|n| n > 0), "{text:?}");
    }

    fn check_command(&mut self, cmd: &str, got: Result<Vec<u8>, Error>) {
        let control = cmd
            .bytes()
            .enumerate()
            .find(|&(_, b)| b < 0x20 || b == 0x7f || b == 0x9b);
        let want = if self.closed {
            Err(Error::Closed)
        } else if self.lost {
            Err(Error::Lost)
        } else if let Some((index, byte)) = control {
            Err(Error::ControlByte { index, byte })
        } else if cmd.len() > MAX_COMMAND_LEN {
            Err(Error::TooLong { len: cmd.len() })
        } else {
            Ok(format!("{cmd}\n").into_bytes())
        };
        assert_eq!(got, want, "command({cmd:?})");
        if got.is_ok() {
            self.accepted += 1;
            self.longest_command = self.longest_command.max(cmd.len());
        }
    }

    fn check_state(&self, m: &Monitor) {
        assert_eq!(m.is_closed(), self.closed);
        assert_eq!(m.max_reply(), self.cap);
        let pending = if self.lost || self.closed {
            0
        } else {
            self.accepted - self.replies
        };
        assert_eq!(m.pending(), pending, "pending commands");
        assert_eq!(m.pending_command().is_some(), pending > 0);
        if m.is_ready() {
            assert!(self.banner && pending == 0 && !self.lost && !self.closed);
        }
        // "At most the reply cap, one greeting line and the tail of one echo are held, however the
        // input is split"; the greeting's bytes are let go once it has been reported.
        let greeting = if self.banner {
            0
        } else {
            2 * MAX_GREETING_LINE
        };
        let bound = self.cap + greeting + 2 * (self.longest_command + ECHO_END_LEN);
        assert!(
            m.buffered() <= bound,
            "buffered {} > {bound} (cap {}, banner seen: {})",
            m.buffered(),
            self.cap,
            self.banner
        );
    }
}
