//! Unit tests of the QMP codec, and the fixtures they share: the real captures from `tests/data/`
//! (see `capture-qmp.py`), what they must decode to, and small helpers.
//!
//! Grouped as the behaviour they pin down: golden wire bytes ([`wire`]), real captures fed whole, split
//! and over a socket ([`captures`]), hand-made transcripts ([`transcripts`]), and errors, garbage and
//! limits ([`limits`]).

use super::*;
use serde_json::{json, Value};

mod captures;
mod limits;
mod transcripts;
mod wire;

/// The greeting of the QEMU 7.2.22 the captures were made with, byte for byte.
const GREETING: &[u8] =
    b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \
    \"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}\r\n";

/// One real session from `tests/data/` (see `capture-qmp.py`): the commands, what was written
/// for them, and what QEMU wrote back.
struct Capture {
    name: &'static str,
    commands: Vec<(&'static str, Option<Value>)>,
    input: &'static [u8],
    output: &'static [u8],
}

/// Every capture, with the commands `capture-qmp.py` sent in it.
fn captures() -> Vec<Capture> {
    vec![
        Capture {
            name: "session",
            commands: vec![
                ("query-status", None),
                ("cont", None),
                ("stop", None),
                ("system_reset", None),
                ("nope", None),
                ("stop", Some(json!({"x": 1}))),
                (
                    "qom-get",
                    Some(json!({"path": "/machine/\u{e9}", "property": "type"})),
                ),
                ("query-name", None),
                (
                    "human-monitor-command",
                    Some(json!({"command-line": "info status"})),
                ),
            ],
            input: include_bytes!("../../../tests/data/qmp-session.in"),
            output: include_bytes!("../../../tests/data/qmp-session.out"),
        },
        Capture {
            name: "schema",
            commands: vec![("query-qmp-schema", None)],
            input: include_bytes!("../../../tests/data/qmp-schema.in"),
            output: include_bytes!("../../../tests/data/qmp-schema.out"),
        },
        Capture {
            name: "pipelined",
            commands: vec![
                ("query-status", None),
                ("cont", None),
                ("stop", None),
                ("query-status", None),
            ],
            input: include_bytes!("../../../tests/data/qmp-pipelined.in"),
            output: include_bytes!("../../../tests/data/qmp-pipelined.out"),
        },
        Capture {
            name: "quit",
            commands: vec![("query-status", None), ("quit", None)],
            input: include_bytes!("../../../tests/data/qmp-quit.in"),
            output: include_bytes!("../../../tests/data/qmp-quit.out"),
        },
        Capture {
            name: "client",
            commands: vec![("query-status", None)],
            input: include_bytes!("../../../tests/data/qmp-client.in"),
            output: include_bytes!("../../../tests/data/qmp-client.out"),
        },
    ]
}

impl Capture {
    /// A codec with the negotiation and every command queued; checks the wire bytes against
    /// what was really sent.
    fn qmp(&self, max_message: Option<usize>) -> Qmp {
        let mut qmp = Qmp::new();
        if let Some(cap) = max_message {
            qmp = qmp.with_max_message(cap);
        }
        let mut wire = qmp.capabilities().unwrap();
        for (i, (name, args)) in self.commands.iter().enumerate() {
            let (id, bytes) = qmp.command(name, args.clone()).unwrap();
            assert_eq!(id, i as u64 + 1);
            wire.extend(bytes);
        }
        assert_eq!(
            String::from_utf8_lossy(&wire),
            String::from_utf8_lossy(self.input),
            "{}: wire bytes differ from the capture",
            self.name
        );
        qmp
    }

    /// Feeds the output in the given pieces, then end of file; returns every event.
    fn events<'a>(
        &self,
        pieces: impl IntoIterator<Item = &'a [u8]>,
        max_message: Option<usize>,
    ) -> Vec<Event> {
        let mut qmp = self.qmp(max_message);
        let mut events = Vec::new();
        for piece in pieces {
            qmp.feed(piece);
            drain(&mut qmp, &mut events);
            assert!(qmp.buffered() <= qmp.max_message() + 1);
        }
        qmp.handle_eof();
        drain(&mut qmp, &mut events);
        events
    }

    fn whole(&self) -> Vec<Event> {
        self.events([self.output], None)
    }
}

fn drain(qmp: &mut Qmp, into: &mut Vec<Event>) {
    while let Some(e) = qmp.poll_event() {
        into.push(e);
    }
}

fn events(qmp: &mut Qmp) -> Vec<Event> {
    let mut v = Vec::new();
    drain(qmp, &mut v);
    v
}

fn greeting() -> Event {
    Event::Greeting(Greeting {
        version: Version {
            major: 7,
            minor: 2,
            micro: 22,
            package: "Debian 1:7.2+dfsg-7+deb12u18+b3".into(),
        },
        capabilities: vec!["oob".into()],
    })
}

fn ok(id: u64, value: Value) -> Event {
    Event::Reply {
        id,
        result: Ok(value),
    }
}

fn err(id: u64, class: &str, desc: &str) -> Event {
    Event::Reply {
        id,
        result: Err(QmpError {
            class: class.into(),
            desc: desc.into(),
        }),
    }
}

fn event(name: &str, data: Value, seconds: i64, microseconds: i64) -> Event {
    Event::Async {
        name: name.into(),
        data,
        timestamp: Some(Timestamp {
            seconds,
            microseconds,
        }),
    }
}

fn closed() -> Event {
    Event::Closed {
        pending: vec![],
        partial: None,
    }
}

fn garbage(reason: &str, excerpt: &str) -> Event {
    Event::Garbage {
        reason: reason.into(),
        excerpt: excerpt.into(),
    }
}

/// A codec that has sent `qmp_capabilities` and seen the greeting and its acceptance.
fn ready() -> Qmp {
    let mut qmp = Qmp::new();
    let _ = qmp.capabilities().unwrap();
    qmp.feed(GREETING);
    qmp.feed(b"{\"return\": {}, \"id\": 0}\r\n");
    assert_eq!(events(&mut qmp), [greeting(), Event::Ready]);
    assert!(qmp.is_ready());
    qmp
}

/// What each capture must decode to.
fn expected(name: &str) -> Vec<Event> {
    let status = |s: &str| json!({"status": s, "singlestep": false, "running": false});
    match name {
        "session" => vec![
            greeting(),
            Event::Ready,
            ok(1, status("prelaunch")),
            // Events come between a command and its reply.
            event("RESUME", Value::Null, 1795925755, 514998),
            ok(2, json!({})),
            event("STOP", Value::Null, 1795925755, 515232),
            ok(3, json!({})),
            event(
                "RESET",
                json!({"guest": false, "reason": "host-qmp-system-reset"}),
                1795925755,
                515501,
            ),
            ok(4, json!({})),
            err(5, "CommandNotFound", "The command nope has not been found"),
            err(6, "GenericError", "Parameter 'x' is unexpected"),
            // QEMU writes ASCII only: the é came back as \u00E9.
            err(7, "DeviceNotFound", "Device '/machine/\u{e9}' not found"),
            ok(8, json!({})),
            ok(9, json!("VM status: paused (prelaunch)\r\n")),
            closed(),
        ],
        "pipelined" => vec![
            greeting(),
            Event::Ready,
            ok(1, status("prelaunch")),
            event("RESUME", Value::Null, 1795925755, 554377),
            ok(2, json!({})),
            event("STOP", Value::Null, 1795925755, 554607),
            ok(3, json!({})),
            ok(4, status("paused")),
            closed(),
        ],
        // SHUTDOWN comes before quit's reply, then QEMU hangs up.
        "quit" => vec![
            greeting(),
            Event::Ready,
            ok(1, status("paused")),
            event(
                "SHUTDOWN",
                json!({"guest": false, "reason": "host-qmp-quit"}),
                1795925755,
                555907,
            ),
            ok(2, json!({})),
            closed(),
        ],
        "client" => vec![
            greeting(),
            Event::Ready,
            ok(1, status("prelaunch")),
            closed(),
        ],
        other => panic!("no expectation for {other}"),
    }
}
