//! Fuzzes `guest_shell::Session` with scripts of commands, feeds in odd pieces, end of file,
//! abandon, interrupt, reset and resume (format in `fuzz/src/lib.rs`), checking what the crate
//! documents after every call: `feed` never panics, at most a marker's length is held back, events
//! fit the session's state, every output byte was fed, the framing never carries the markers it
//! waits for, and the events do not depend on how the input was split.
#![no_main]

use guest_shell::{coalesce, Error, Event, Session};
use libfuzzer_sys::fuzz_target;
use vmtd_fuzz::{pieces, Op, Script};

/// `\x1eB<32 hex digits>\x1e` and `\x1eE<32 hex digits> `: the longest thing held back is one byte
/// short of a marker; the crate documents "at most a marker's length".
const MARKER_LEN: usize = 35;

/// Highest status the decoder accepts: it reads at most three digits.
const MAX_STATUS: i32 = 999;

/// The start of every framed command, before its nonce.
/// What a frame's call of the framing function starts with (after the function's definition, in a
/// shell's first frame); the nonce follows.
const FRAME_CALL: &[u8] = b"_vmtd ";

fuzz_target!(|data: &[u8]| {
    let Some(script) = Script::parse(data) else {
        return;
    };
    let split = coalesce(run(&script, true));
    let whole = coalesce(run(&script, false));
    assert_eq!(split, whole, "the events depend on how the input was split");
});

/// Runs the script, checking every step; returns all events.
fn run(script: &Script, split: bool) -> Vec<Event> {
    // The config byte picks where the nonces start; seeds use 0, as the recorded transcript did.
    let mut n = u128::from(script.config);
    let mut s = Session::with_nonces(move || {
        n += 1;
        n
    });
    let mut model = Model::default();
    model.check_state(&s);
    for op in &script.ops {
        match *op {
            Op::Feed { data, split: cut } => {
                for piece in pieces(data, if split { cut } else { 0 }) {
                    if model.accepts_input() {
                        model.fed += piece.len();
                    }
                    s.feed(piece);
                    model.drain(&mut s);
                }
            }
            Op::Command(cmd) => {
                let got = s.command(cmd);
                model.check_command(cmd, got);
                model.drain(&mut s);
            }
            Op::Test(data) => {
                let args: Vec<&[u8]> = data.split(|&b| b == b' ').collect();
                let got = s.test(&args);
                model.check_test(&args, got);
                model.drain(&mut s);
            }
            Op::Interrupt => {
                let busy = model.state == State::Busy;
                let got = s.interrupt();
                if busy {
                    model.state = State::Idle;
                }
                // Nothing for the caller to see here: the stop script is a command like any other.
                model.check_command(b"", got);
                model.drain(&mut s);
            }
            Op::Abandon => {
                s.abandon();
                if model.state == State::Busy {
                    model.state = State::Idle;
                }
                model.drain(&mut s);
            }
            Op::Reset => {
                s.reset();
                model.state = State::AwaitBanner;
                model.drain(&mut s);
            }
            Op::Resume => {
                s.resume();
                model.state = State::Idle;
                model.drain(&mut s);
            }
            Op::Eof => {
                s.handle_eof();
                model.drain(&mut s);
                assert_eq!(model.state, State::Closed, "handle_eof did not close");
            }
        }
    }
    model.events
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    AwaitBanner,
    Idle,
    /// A command was framed and has not exited, been abandoned, lost or closed.
    Busy,
    Lost,
    Closed,
}

/// What the session must look like from the outside, given the calls made and the events seen.
#[derive(Default)]
struct Model {
    state: State,
    /// Bytes fed while the session took input.
    fed: usize,
    /// Bytes that came out as `Output` or `Stray`.
    delivered: usize,
    events: Vec<Event>,
}

impl Model {
    fn accepts_input(&self) -> bool {
        !matches!(self.state, State::Lost | State::Closed)
    }

    fn drain(&mut self, s: &mut Session) {
        while let Some(e) = s.poll_event() {
            self.check_event(&e);
            self.events.push(e);
        }
        self.check_state(s);
    }

    fn check_event(&mut self, e: &Event) {
        let state = self.state;
        match e {
            Event::Banner => {
                assert_eq!(state, State::AwaitBanner, "Banner");
                self.state = State::Idle;
            }
            Event::Output(bytes) => {
                assert_eq!(state, State::Busy, "Output");
                assert!(!bytes.is_empty(), "empty Output");
                self.delivered += bytes.len();
            }
            Event::Stray(bytes) => {
                assert!(
                    matches!(state, State::Idle | State::Busy),
                    "Stray in {state:?}"
                );
                assert!(!bytes.is_empty(), "empty Stray");
                self.delivered += bytes.len();
            }
            Event::Exited { status } => {
                assert_eq!(state, State::Busy, "Exited");
                assert!((0..=MAX_STATUS).contains(status), "status {status}");
                self.state = State::Idle;
            }
            Event::Lost { .. } => {
                // Only a bad exit status desynchronises the session.
                assert_eq!(state, State::Busy, "Lost");
                self.state = State::Lost;
            }
            Event::Closed { during_command } => {
                assert_ne!(state, State::Closed, "Closed twice");
                assert_eq!(*during_command, state == State::Busy, "during_command");
                self.state = State::Closed;
            }
            other => panic!("unknown event {other:?}"),
        }
        assert!(
            self.delivered <= self.fed,
            "{} bytes delivered, {} fed",
            self.delivered,
            self.fed
        );
    }

    /// What framing `parts` must give in this state: an error, or `Ok` to check the frame.
    fn want(&self, parts: &[&[u8]]) -> Result<(), Error> {
        match self.state {
            State::AwaitBanner | State::Closed => Err(Error::NotConnected),
            State::Lost => Err(Error::Lost),
            State::Busy => Err(Error::Busy),
            State::Idle => match parts.concat().iter().position(|&b| b == 0) {
                Some(at) => Err(Error::Nul(at)),
                None => Ok(()),
            },
        }
    }

    fn check_test(&mut self, args: &[&[u8]], got: Result<Vec<u8>, Error>) {
        match (got, self.want(args)) {
            (Ok(wire), Ok(())) => {
                check_test_frame(&wire, args);
                self.state = State::Busy;
            }
            (got, want) => assert_eq!(got.map(|_| ()), want, "test({args:?})"),
        }
    }

    fn check_command(&mut self, cmd: &[u8], got: Result<Vec<u8>, Error>) {
        let want = self.want(&[cmd]);
        match (got, want) {
            (Ok(wire), Ok(())) => {
                check_frame(&wire, cmd);
                self.state = State::Busy;
            }
            (got, want) => assert_eq!(got.map(|_| ()), want, "command({cmd:?})"),
        }
    }

    fn check_state(&self, s: &Session) {
        assert_eq!(
            s.is_busy(),
            self.state == State::Busy,
            "is_busy in {:?}",
            self.state
        );
        assert_eq!(
            s.is_connected(),
            matches!(self.state, State::Idle | State::Busy),
            "is_connected in {:?}",
            self.state
        );
        let held = buffered(s);
        assert!(held <= MARKER_LEN, "{held} bytes held back");
    }
}

/// The framing carries `cmd` verbatim, and never the markers it waits for.
fn check_frame(wire: &[u8], cmd: &[u8]) {
    // A shell's first frame defines the function, on a line of its own, before the call.
    let call = match wire.strip_prefix(b"_vmtd() {") {
        Some(_) => wire
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&wire[wire.len()..], |at| &wire[at + 1..]),
        None => wire,
    };
    let nonce = call
        .strip_prefix(FRAME_CALL)
        .and_then(|rest| rest.get(..32))
        .unwrap_or_else(|| panic!("bad frame {:?}", String::from_utf8_lossy(wire)));
    assert!(nonce.iter().all(u8::is_ascii_hexdigit), "nonce {nonce:?}");
    assert!(!contains(cmd, nonce), "nonce inside the command");
    let start = [b"\x1eB", nonce, b"\x1e"].concat();
    let end = [b"\x1eE", nonce, b" "].concat();
    assert!(
        !contains(wire, &start) && !contains(wire, &end),
        "frame holds a marker"
    );
    if !cmd.is_empty() {
        assert!(contains(wire, cmd), "command not carried verbatim");
    }
}

/// A `test` frame: after the function's definition (a shell's first), `_vmtt <nonce>` and each
/// argument single-quoted, `'` as `'\''`, so no argument is read as shell code; no marker inside.
fn check_test_frame(wire: &[u8], args: &[&[u8]]) {
    let call = match wire.strip_prefix(b"_vmtt() {") {
        Some(_) => {
            let at = wire
                .iter()
                .position(|&b| b == b'\n')
                .expect("definition line");
            &wire[at + 1..]
        }
        None => wire,
    };
    let rest = call
        .strip_prefix(b"_vmtt ")
        .unwrap_or_else(|| panic!("bad test frame {:?}", String::from_utf8_lossy(wire)));
    let (nonce, mut rest) = rest.split_at(32.min(rest.len()));
    assert!(
        nonce.len() == 32 && nonce.iter().all(u8::is_ascii_hexdigit),
        "nonce {nonce:?}"
    );
    for arg in args {
        let quoted = [
            &b" '"[..],
            &arg.split(|&b| b == b'\'')
                .collect::<Vec<_>>()
                .join(&b"'\\''"[..]),
            b"'",
        ]
        .concat();
        rest = rest.strip_prefix(&quoted[..]).unwrap_or_else(|| {
            panic!(
                "argument {arg:?} not quoted in {:?}",
                String::from_utf8_lossy(wire)
            )
        });
    }
    assert_eq!(rest, b"\n", "test frame ends");
    let start = [b"\x1eB", nonce, b"\x1e"].concat();
    let end = [b"\x1eE", nonce, b" "].concat();
    assert!(
        !contains(wire, &start) && !contains(wire, &end),
        "frame holds a marker"
    );
}

/// Compares only where the first byte matches: instrumented `memcmp` at every offset would make
/// this harness, not the decoder, take most of the fuzzing time.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .any(|(i, &b)| b == first && haystack[i..].starts_with(needle))
}

/// Bytes the session holds back: it exposes no getter, only its `Debug` (`buffered: N`).
fn buffered(s: &Session) -> usize {
    let debug = format!("{s:?}");
    let at = debug
        .find("buffered: ")
        .expect("Session's Debug shows `buffered`")
        + 10;
    let digits: String = debug[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a byte count")
}
