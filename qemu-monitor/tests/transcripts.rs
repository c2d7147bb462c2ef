//! The transcript harness: real QEMU 7.2 sessions from `tests/data/`, fed whole, byte by byte, split
//! at every offset and in random pieces, must give the same events; and those events must be right.

mod common;

use common::{Capture, XorShift, BANNER, CAPTURES};
use qemu_monitor::{Event, Monitor, TRUNCATION_MARKER};

fn banner() -> Event {
    Event::Banner(BANNER.into())
}

fn reply(s: &str) -> Event {
    Event::Reply(s.into())
}

fn replies(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Reply(r) => Some(r.as_str()),
            _ => None,
        })
        .collect()
}

/// What each capture must decode to.
fn check(c: &Capture, events: &[Event]) {
    let version = "7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3\n";
    let expected: Vec<Event> = match c.name {
        "banner" => vec![banner(), Event::Closed],
        "banner-client" => vec![banner(), reply("VM status: paused (prelaunch)\n"), Event::Closed],
        "info-status" => vec![banner(), reply("VM status: paused (prelaunch)\n"), Event::Closed],
        "info-version" => vec![banner(), reply(version), Event::Closed],
        "unknown-command" => vec![banner(), reply("unknown command: 'foo'\n"), Event::Closed],
        "bad-args" => vec![
            banner(),
            reply("invalid parameter: delet\n"),
            reply("stop|s: extraneous characters at the end of line\nTry \"help stop\" for more information\n"),
            reply("invalid char 'n' in expression\nTry \"help x\" for more information\n"),
            Event::Closed,
        ],
        "stop-cont-reset" => vec![
            banner(),
            reply(""),
            reply(""),
            reply("VM status: running\n"),
            reply(""),
            reply(""),
            reply("VM status: paused\n"),
            Event::Closed,
        ],
        "long-command" => vec![
            banner(),
            reply(&format!("Error: Device '{}' not found\n", "n".repeat(72))),
            Event::Closed,
        ],
        "screendump" | "sendkey" => vec![banner(), reply(""), Event::Closed],
        "set-link-bad" => vec![banner(), reply("Error: Device 'nonexist' not found\n"), Event::Closed],
        // The prompt's text in the middle of a line is not a prompt.
        "prompt-mid-line" => vec![banner(), reply("Error: Device 'x (qemu) y' not found\n"), Event::Closed],
        // A VM name "a\n(qemu) b": HMP cannot tell this from a prompt, but what follows it is
        // output nobody asked for, and that is reported.
        "prompt-in-reply" => vec![
            banner(),
            reply("a\n"),
            Event::Lost {
                reason: "unexpected output 'b' while no command was pending".into(),
            },
            Event::Closed,
        ],
        "utf8" => vec![banner(), reply("Error: Device '\u{e9}' not found\n"), Event::Closed],
        "empty" => vec![banner(), reply(""), reply(""), Event::Closed],
        "pipelined" => vec![
            banner(),
            reply("VM status: paused\n"),
            reply(version),
            reply("unknown command: 'foo'\n"),
            reply(""),
            Event::Closed,
        ],
        "queued-before-banner" => vec![banner(), reply("VM status: paused\n"), Event::Closed],
        // No prompt after quit: end of file is its answer.
        "quit" => vec![banner(), reply("VM status: paused\n"), reply(""), Event::Closed],
        "help-info" | "info-qtree" | "info-registers" => {
            assert_eq!(events.len(), 3, "{}: {events:?}", c.name);
            assert_eq!(events[0], banner());
            assert_eq!(events[2], Event::Closed);
            let r = replies(events)[0];
            assert!(!r.contains('\r') && !r.contains('\x1b'), "{}: not clean", c.name);
            assert!(r.ends_with('\n'));
            let (first, lines) = match c.name {
                "help-info" => ("info balloon  -- show balloon information", 67),
                "info-qtree" => ("bus: main-system-bus", 203),
                // `info registers` starts with an empty line.
                _ => ("", 28),
            };
            assert_eq!(r.lines().next(), Some(first), "{}", c.name);
            assert_eq!(r.lines().count(), lines, "{}", c.name);
            return;
        }
        other => panic!("no expectation for capture {other}"),
    };
    assert_eq!(events, expected, "{}", c.name);
}

#[test]
fn every_capture_decodes_to_the_expected_events() {
    for &name in CAPTURES {
        let c = Capture::load(name);
        check(&c, &c.whole());
    }
}

#[test]
fn byte_by_byte_gives_the_same_events() {
    for &name in CAPTURES {
        let c = Capture::load(name);
        let bytes = c.events(c.output.chunks(1), None);
        assert_eq!(bytes, c.whole(), "{name}");
    }
}

/// Every two-part split of every capture.
#[test]
fn split_at_every_offset_gives_the_same_events() {
    let handles: Vec<_> = CAPTURES
        .iter()
        .map(|&name| {
            std::thread::spawn(move || {
                let c = Capture::load(name);
                let whole = c.whole();
                for i in 0..=c.output.len() {
                    let (a, b) = c.output.split_at(i);
                    assert_eq!(c.events([a, b], None), whole, "{name} split at {i}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a split test failed");
    }
}

#[test]
fn random_pieces_give_the_same_events() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for &name in CAPTURES {
        let c = Capture::load(name);
        let whole = c.whole();
        for _ in 0..20 {
            let mut pieces = Vec::new();
            let mut rest = c.output.as_slice();
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(300));
                let (a, b) = rest.split_at(n);
                pieces.push(a);
                rest = b;
            }
            assert_eq!(c.events(pieces, None), whole, "{name}");
        }
    }
}

/// Sending each command only once the monitor is ready (as a careful driver would) changes nothing.
#[test]
fn commands_sent_when_ready_give_the_same_events() {
    for &name in CAPTURES {
        let c = Capture::load(name);
        if name == "pipelined" || name == "queued-before-banner" {
            continue; // those were really sent ahead of the replies
        }
        let mut m = Monitor::new();
        let mut commands = c.commands().into_iter();
        let mut events = Vec::new();
        for &b in &c.output {
            m.feed(&[b]);
            common::drain(&mut m, &mut events);
            if m.is_ready() {
                if let Some(cmd) = commands.next() {
                    let _ = m.command(&cmd).unwrap();
                }
            }
        }
        m.handle_eof();
        common::drain(&mut m, &mut events);
        assert_eq!(events, c.whole(), "{name}");
    }
}

/// Golden wire bytes: a command is its text and one `\n` (not `\r\n`, which readline would read as
/// two lines), exactly as sent in every real session.
#[test]
fn command_wire_bytes_are_golden() {
    let mut m = Monitor::new();
    assert_eq!(m.command("info status").unwrap(), b"info status\n");
    assert_eq!(m.command("").unwrap(), b"\n");
    assert_eq!(m.command("   ").unwrap(), b"   \n");
    assert_eq!(
        m.command("sendkey ctrl-alt-delete").unwrap(),
        b"sendkey ctrl-alt-delete\n"
    );
    assert_eq!(
        m.command("screendump /tmp/x/s.ppm").unwrap(),
        b"screendump /tmp/x/s.ppm\n"
    );
    assert_eq!(
        m.command("set_link \u{e9} on").unwrap(),
        b"set_link \xc3\xa9 on\n"
    );
    assert_eq!(
        m.command("hostfwd_add tcp::2222-:22").unwrap(),
        b"hostfwd_add tcp::2222-:22\n"
    );
    assert_eq!(m.command("quit").unwrap(), b"quit\n");
    assert_eq!(m.pending(), 8);
    // And the bytes of every captured session (checked inside `monitor`).
    for &name in CAPTURES {
        let _ = Capture::load(name).monitor(None);
    }
}

/// The real `info qtree` reply with a cap far below its size: the head is kept, the rest counted.
#[test]
fn real_reply_above_the_cap_is_truncated_with_a_marker() {
    let c = Capture::load("info-qtree");
    let full = replies(&c.whole())[0].to_owned();
    let capped = c.events([c.output.as_slice()], Some(100));
    assert_eq!(capped.len(), 3);
    let r = replies(&capped)[0];
    let (head, marker) = r.split_at(101); // 100 bytes and the line end added before the marker
    assert_eq!(&head[..100], &full[..100]);
    assert_eq!(&head[100..], "\n");
    assert_eq!(
        marker,
        format!(
            "{TRUNCATION_MARKER} after 100 bytes, {} bytes dropped]\n",
            full.len() - 100
        )
    );
    // Byte by byte, the same.
    assert_eq!(c.events(c.output.chunks(1), Some(100)), capped);
}
