//! Shared helpers: loading the real captures in `tests/data/` and driving a [`Monitor`] with them.
#![allow(dead_code)] // each test binary uses a different subset

use qemu_monitor::{Event, Monitor};
use std::path::PathBuf;

/// The greeting of the QEMU 7.2.22 the captures were made with.
pub const BANNER: &str = "QEMU 7.2.22 monitor - type 'help' for more information";

/// Every capture in `tests/data/` (see `capture.py`).
pub const CAPTURES: &[&str] = &[
    "banner",
    "banner-client",
    "info-status",
    "info-version",
    "help-info",
    "info-qtree",
    "info-registers",
    "unknown-command",
    "bad-args",
    "stop-cont-reset",
    "long-command",
    "screendump",
    "sendkey",
    "set-link-bad",
    "prompt-mid-line",
    "prompt-in-reply",
    "utf8",
    "empty",
    "pipelined",
    "queued-before-banner",
    "quit",
];

/// One real session: what we wrote and what QEMU wrote back.
pub struct Capture {
    pub name: &'static str,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
}

impl Capture {
    pub fn load(name: &'static str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let read = |ext: &str| {
            let path = dir.join(format!("{name}.{ext}"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        Self {
            name,
            input: read("in"),
            output: read("out"),
        }
    }

    /// The commands sent, one per `\n`-terminated line of the `.in` file.
    pub fn commands(&self) -> Vec<String> {
        let text = std::str::from_utf8(&self.input).expect("commands are UTF-8");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{}: unterminated command",
            self.name
        );
        text.split_terminator('\n').map(str::to_owned).collect()
    }

    /// A monitor with every command queued; checks the wire bytes against what was really sent.
    pub fn monitor(&self, max_reply: Option<usize>) -> Monitor {
        let mut m = Monitor::new();
        if let Some(cap) = max_reply {
            m = m.with_max_reply(cap);
        }
        let mut wire = Vec::new();
        for c in self.commands() {
            wire.extend(m.command(&c).expect("captured commands are valid"));
        }
        assert_eq!(
            wire, self.input,
            "{}: wire bytes differ from the capture",
            self.name
        );
        m
    }

    /// Feeds the output in the given pieces, then end of file; returns every event.
    pub fn events<'a>(
        &self,
        pieces: impl IntoIterator<Item = &'a [u8]>,
        max_reply: Option<usize>,
    ) -> Vec<Event> {
        let mut m = self.monitor(max_reply);
        let mut events = Vec::new();
        for piece in pieces {
            m.feed(piece);
            drain(&mut m, &mut events);
        }
        m.handle_eof();
        drain(&mut m, &mut events);
        events
    }

    pub fn whole(&self) -> Vec<Event> {
        self.events([self.output.as_slice()], None)
    }
}

pub fn drain(m: &mut Monitor, into: &mut Vec<Event>) {
    while let Some(e) = m.poll_event() {
        into.push(e);
    }
}

/// A deterministic xorshift64 generator: reproducible soup without a `rand` dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
