//! Hand-made inputs for what the captures do not show: garbage, end of file at bad moments, huge
//! replies, bad commands, desyncs, and a byte soup.

mod common;

use common::{drain, Capture, XorShift, BANNER};
use qemu_monitor::{Error, Event, Monitor, MAX_COMMAND_LEN, PROMPT, TRUNCATION_MARKER};

const GREETING: &[u8] = b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ";

/// What QEMU 7.2's readline prints while `cmd` is typed into it, up to and including its line end.
fn echo(cmd: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 1..=cmd.len() {
        out.extend(b"\x1b[D".repeat(k - 1));
        out.extend(&cmd.as_bytes()[..k]);
        out.extend(b"\x1b[K");
    }
    out.extend(b"\r\n");
    out
}

fn ready() -> Monitor {
    let mut m = Monitor::new();
    m.feed(GREETING);
    assert_eq!(m.poll_event(), Some(Event::Banner(BANNER.into())));
    assert!(m.is_ready());
    m
}

fn events(m: &mut Monitor) -> Vec<Event> {
    let mut v = Vec::new();
    drain(m, &mut v);
    v
}

#[test]
fn synthetic_echo_matches_the_captured_one() {
    let c = Capture::load("info-status");
    let mut expected = GREETING.to_vec();
    expected.extend(echo("info status"));
    expected.extend(b"VM status: paused (prelaunch)\r\n(qemu) ");
    assert_eq!(c.output, expected);
}

#[test]
fn garbage_before_the_banner_is_skipped() {
    let mut m = Monitor::new();
    let _ = m.command("info status").unwrap(); // queued before the greeting
    m.feed(b"\x00\xff\xfe junk\r\n\x1b[31mred (qemu) \x1b[0m\r\n\r\n");
    m.feed(b"no line end before it: ");
    m.feed(GREETING);
    m.feed(&echo("info status"));
    m.feed(b"VM status: running\r\n(qemu) ");
    assert_eq!(
        events(&mut m),
        [
            Event::Banner(BANNER.into()),
            Event::Reply("VM status: running\n".into())
        ]
    );
    assert!(m.is_ready());
}

#[test]
fn prompt_without_a_greeting_gives_an_empty_banner() {
    let mut m = Monitor::new();
    m.feed(b"(qemu) ");
    assert_eq!(events(&mut m), [Event::Banner(String::new())]);
    assert!(m.is_ready());
}

#[test]
fn eof_before_the_banner() {
    let mut m = Monitor::new();
    m.feed(b"QEMU 7.2.22 monitor - type");
    m.handle_eof();
    assert_eq!(events(&mut m), [Event::Closed]);

    let mut m = Monitor::new();
    let _ = m.command("stop").unwrap();
    m.handle_eof();
    let ev = events(&mut m);
    assert!(
        matches!(&ev[..], [Event::Lost { .. }, Event::Closed]),
        "{ev:?}"
    );
}

#[test]
fn eof_mid_reply_is_lost_then_closed() {
    let mut m = ready();
    let _ = m.command("info qtree").unwrap();
    m.feed(&echo("info qtree"));
    m.feed(b"bus: main-system-bus\r\n  type System\r\n(qe");
    assert_eq!(m.partial_reply(), "bus: main-system-bus\n  type System\n");
    assert_eq!(m.pending_command(), Some("info qtree"));
    m.handle_eof();
    assert_eq!(
        events(&mut m),
        [
            Event::Lost {
                reason: "connection closed while waiting for the reply to \"info qtree\"".into()
            },
            Event::Closed
        ]
    );
    // Once closed, always closed, and reported once.
    m.handle_eof();
    m.feed(b"(qemu) ");
    assert_eq!(events(&mut m), []);
    assert_eq!(m.command("info status"), Err(Error::Closed));
}

#[test]
fn eof_mid_echo_is_lost() {
    let mut m = ready();
    let _ = m.command("info status").unwrap();
    m.feed(&echo("info status")[..20]);
    m.handle_eof();
    assert!(matches!(
        &events(&mut m)[..],
        [Event::Lost { .. }, Event::Closed]
    ));
}

#[test]
fn eof_when_idle_is_just_closed() {
    let mut m = ready();
    m.handle_eof();
    assert_eq!(events(&mut m), [Event::Closed]);
    assert!(m.is_closed() && !m.is_ready());
}

#[test]
fn quit_is_answered_by_eof_even_before_its_echo() {
    let mut m = ready();
    let _ = m.command("q").unwrap();
    m.handle_eof();
    assert_eq!(events(&mut m), [Event::Reply(String::new()), Event::Closed]);

    // Commands queued behind quit are lost.
    let mut m = ready();
    let _ = m.command("  quit").unwrap();
    let _ = m.command("info status").unwrap();
    m.feed(&echo("  quit"));
    m.handle_eof();
    let ev = events(&mut m);
    assert!(
        matches!(&ev[..], [Event::Reply(r), Event::Lost { .. }, Event::Closed] if r.is_empty()),
        "{ev:?}"
    );
}

#[test]
fn quit_with_a_prompt_is_an_ordinary_reply() {
    let mut m = ready();
    let _ = m.command("quit").unwrap();
    m.feed(&echo("quit"));
    m.feed(b"(qemu) ");
    assert_eq!(events(&mut m), [Event::Reply(String::new())]);
}

#[test]
fn prompt_counts_only_at_a_line_start() {
    let mut m = ready();
    let _ = m.command("x").unwrap();
    m.feed(&echo("x"));
    m.feed(b"x (qemu) y\r\n(qemu)z\r\n((qemu) \r\n  (qemu) \r\n(qemu\r\n(qemu) ");
    assert_eq!(
        events(&mut m),
        [Event::Reply(
            "x (qemu) y\n(qemu)z\n((qemu) \n  (qemu) \n(qemu\n".into()
        )]
    );
    // A bare \n ends a line too.
    let _ = m.command("x").unwrap();
    m.feed(&echo("x"));
    m.feed(b"a\n(qemu) ");
    assert_eq!(events(&mut m), [Event::Reply("a\n".into())]);
}

#[test]
fn reply_escapes_and_carriage_returns_are_removed() {
    let mut m = ready();
    let _ = m.command("x").unwrap();
    m.feed(&echo("x"));
    m.feed(b"\x1b[1;31mred\x1b[0m \x1b(Bplain\x1bc\r\ntab\there\r\r\n\x1b\x01ctl\r\n(qemu) ");
    assert_eq!(
        events(&mut m),
        [Event::Reply("red plain\ntab\there\n\x01ctl\n".into())]
    );
}

#[test]
fn invalid_utf8_in_a_reply_is_replaced() {
    let mut m = ready();
    let _ = m.command("x").unwrap();
    m.feed(&echo("x"));
    m.feed(b"\xff\xc3\r\n(qemu) ");
    assert_eq!(events(&mut m), [Event::Reply("\u{fffd}\u{fffd}\n".into())]);
}

#[test]
fn huge_reply_stays_under_the_cap() {
    const CAP: usize = 4096;
    let mut m = Monitor::new().with_max_reply(CAP);
    m.feed(GREETING);
    let _ = m.command("info trace-events").unwrap();
    m.feed(&echo("info trace-events"));
    let line = b"some_trace_event : state 0\r\n";
    let chunk = line.repeat(2000);
    let mut total = 0;
    while total < 10 << 20 {
        m.feed(&chunk);
        total += chunk.len();
        assert!(m.buffered() <= CAP + 64, "{} bytes held", m.buffered());
    }
    m.feed(b"(qemu) ");
    let ev = events(&mut m);
    let [Event::Banner(_), Event::Reply(r)] = &ev[..] else {
        panic!("{ev:?}")
    };
    let clean_total = total / line.len() * (line.len() - 1);
    let head = "some_trace_event : state 0\n".repeat(CAP / 27 + 1);
    assert!(r.starts_with(&head[..CAP]));
    assert!(r.ends_with(&format!(
        "\n{TRUNCATION_MARKER} after {CAP} bytes, {} bytes dropped]\n",
        clean_total - CAP
    )));
    assert!(r.len() < CAP + 100);
    // The next reply starts afresh.
    let _ = m.command("info status").unwrap();
    m.feed(&echo("info status"));
    m.feed(b"VM status: running\r\n(qemu) ");
    assert_eq!(
        events(&mut m),
        [Event::Reply("VM status: running\n".into())]
    );
    assert_eq!(m.buffered(), 0);
}

#[test]
fn zero_cap_keeps_only_the_marker() {
    let mut m = Monitor::new().with_max_reply(0);
    m.feed(GREETING);
    let _ = m.command("info version").unwrap();
    m.feed(&echo("info version"));
    m.feed(b"7.2.22\r\n(qemu) ");
    let ev = events(&mut m);
    assert_eq!(
        ev[1],
        Event::Reply(format!(
            "{TRUNCATION_MARKER} after 0 bytes, 7 bytes dropped]\n"
        ))
    );
    // An empty reply is not truncated.
    let _ = m.command("stop").unwrap();
    m.feed(&echo("stop"));
    m.feed(b"(qemu) ");
    assert_eq!(events(&mut m), [Event::Reply(String::new())]);
}

/// Scans resume where they stopped: a 2000-byte command's 8 MB echo and a 4 MB reply, one byte per
/// `feed`, finish quickly, which a rescan of held bytes would not.
#[test]
fn byte_at_a_time_stays_linear() {
    let cmd = format!("set_link {} on", "n".repeat(MAX_COMMAND_LEN / 2));
    let mut input = echo(&cmd);
    assert!(input.len() > 8_000_000);
    input.extend(b"Error: Device 'nnn' not found\r\n".repeat(4 << 20 >> 5));
    input.extend(PROMPT.as_bytes());
    let mut m = ready();
    let _ = m.command(&cmd).unwrap();
    for b in &input {
        m.feed(std::slice::from_ref(b));
    }
    let ev = events(&mut m);
    let [Event::Reply(r)] = &ev[..] else {
        panic!("{} events", ev.len())
    };
    assert!(r.starts_with("Error: Device 'nnn' not found\n"));
    assert!(r.contains(TRUNCATION_MARKER));
    assert!(r.len() < qemu_monitor::DEFAULT_MAX_REPLY + 100);
    assert!(m.is_ready());
}

#[test]
fn longest_command_is_accepted_and_its_echo_checked() {
    let cmd = "x".repeat(MAX_COMMAND_LEN);
    let mut m = ready();
    let _ = m.command(&cmd).unwrap();
    m.feed(&echo(&cmd));
    m.feed(b"unknown command\r\n(qemu) ");
    assert_eq!(events(&mut m), [Event::Reply("unknown command\n".into())]);
}

#[test]
fn bad_commands_are_refused() {
    let mut m = Monitor::new();
    assert_eq!(
        m.command("info status\n"),
        Err(Error::ControlByte {
            index: 11,
            byte: b'\n'
        })
    );
    assert_eq!(
        m.command("a\tb"),
        Err(Error::ControlByte {
            index: 1,
            byte: b'\t'
        })
    );
    assert_eq!(
        m.command("\x1b[A"),
        Err(Error::ControlByte {
            index: 0,
            byte: 0x1b
        })
    );
    assert_eq!(
        m.command("del\x7f"),
        Err(Error::ControlByte {
            index: 3,
            byte: 0x7f
        })
    );
    // U+011B is C4 9B in UTF-8, and readline takes 0x9b for a CSI.
    assert_eq!(
        m.command("set_link \u{11b} on"),
        Err(Error::ControlByte {
            index: 10,
            byte: 0x9b
        })
    );
    assert_eq!(
        m.command(&"x".repeat(MAX_COMMAND_LEN + 1)),
        Err(Error::TooLong {
            len: MAX_COMMAND_LEN + 1
        })
    );
    assert_eq!(m.pending(), 0, "refused commands are not queued");
    assert_eq!(
        Error::ControlByte {
            index: 3,
            byte: 0x7f
        }
        .to_string(),
        "command byte 3 (0x7f) is a control byte for qemu's readline"
    );
}

#[test]
fn output_while_idle_is_lost_once() {
    let mut m = ready();
    m.feed(b"surprise\r\n(qemu) ");
    m.feed(b"more");
    assert_eq!(
        events(&mut m),
        [Event::Lost {
            reason: "unexpected output 's' while no command was pending".into()
        }]
    );
    assert_eq!(m.command("info status"), Err(Error::Lost));
    assert!(!m.is_ready());
    m.handle_eof();
    assert_eq!(events(&mut m), [Event::Closed]);
}

#[test]
fn wrong_echo_is_lost() {
    let mut m = ready();
    let _ = m.command("info status").unwrap();
    let _ = m.command("stop").unwrap();
    m.feed(&echo("info version"));
    m.feed(b"7.2.22\r\n(qemu) ");
    assert_eq!(
        events(&mut m),
        [Event::Lost {
            reason: "the echo of \"info status\" ended in \"nfo version\\u{1b}[K\\r\"".into()
        }]
    );
    assert_eq!(m.pending(), 0);
}

#[test]
fn empty_command_echo_is_only_a_line_end() {
    let mut m = ready();
    let _ = m.command("").unwrap();
    m.feed(b"x\r\n(qemu) ");
    assert!(matches!(&events(&mut m)[..], [Event::Lost { .. }]));
}

/// Random soup biased towards protocol fragments never panics, keeps memory under the cap, and keeps
/// the event invariants: one banner first, replies never above the cap, Lost and Closed at most once.
#[test]
fn byte_soup_never_panics_and_stays_bounded() {
    const CAP: usize = 200;
    let tokens: &[&[u8]] = &[
        b"(qemu) ",
        b"\r\n",
        b"\r\n(qemu) ",
        b"\n",
        b"\x1b[K",
        b"\x1b[D",
        b"\x1b",
        b"\x1b[",
        b"\x1b(",
        b"(qemu",
        b"QEMU 7.2.22 monitor - type 'help' for more information",
        b"info status\x1b[K\r\n",
        b"quit\x1b[K\r\n",
        b"\x1b[K\r\n",
        b"VM status: running\r\n",
        b"\xff\xc3\x9b",
    ];
    let commands = ["info status", "quit", "", "stop", "x"];
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..300 {
        let mut m = Monitor::new().with_max_reply(CAP);
        let mut sent = 0usize;
        let mut events = Vec::new();
        for _ in 0..200 {
            let mut piece = Vec::new();
            for _ in 0..1 + rng.below(8) {
                match rng.below(4) {
                    0 => {
                        let n = rng.below(40);
                        piece.extend((0..n).map(|_| rng.next() as u8));
                    }
                    1 => piece.extend(b"x".repeat(rng.below(500))),
                    _ => piece.extend(tokens[rng.below(tokens.len())]),
                }
            }
            m.feed(&piece);
            if rng.below(4) == 0 && m.command(commands[rng.below(commands.len())]).is_ok() {
                sent += 1;
            }
            if rng.below(300) == 0 {
                m.handle_eof();
            }
            // Memory: the reply cap, one greeting line and its predecessor, one echo window.
            assert!(
                m.buffered() <= CAP + 2 * 4096 + 2 * 16,
                "{} bytes held",
                m.buffered()
            );
            drain(&mut m, &mut events);
        }
        m.handle_eof();
        drain(&mut m, &mut events);
        let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
        assert!(count(|e| matches!(e, Event::Banner(_))) <= 1);
        assert!(count(|e| matches!(e, Event::Lost { .. })) <= 1);
        assert_eq!(count(|e| matches!(e, Event::Closed)), 1);
        assert_eq!(events.last(), Some(&Event::Closed));
        assert!(count(|e| matches!(e, Event::Reply(_))) <= sent);
        for e in &events {
            if let Event::Reply(r) = e {
                assert!(r.len() <= CAP + 1 + 80, "reply of {} bytes", r.len());
            }
        }
    }
}

/// A plausible QEMU with random reply bodies (any bytes but `(`, so no line starts with a prompt),
/// fed in random pieces: every command gets exactly one reply, none above the cap, nothing is lost.
#[test]
fn random_replies_in_random_pieces_all_arrive() {
    const CAP: usize = 300;
    let commands = ["info status", "", "stop", "x /2x 0", "set_link \u{e9} on"];
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    for _ in 0..200 {
        let mut m = Monitor::new().with_max_reply(CAP);
        let mut stream = GREETING.to_vec();
        let n = 1 + rng.below(6);
        for _ in 0..n {
            let cmd = commands[rng.below(commands.len())];
            let _ = m.command(cmd).unwrap();
            stream.extend(echo(cmd));
            for _ in 0..rng.below(8) {
                let max = if rng.below(5) == 0 { 2000 } else { 60 };
                let len = rng.below(max);
                stream.extend((0..len).map(|_| match rng.next() as u8 {
                    b'(' => b'[',
                    b => b,
                }));
                if rng.below(3) == 0 {
                    stream.extend(b" (qemu) ");
                }
                stream.extend(b"\r\n");
            }
            stream.extend(PROMPT.as_bytes());
        }
        let mut events = Vec::new();
        let mut rest = stream.as_slice();
        while !rest.is_empty() {
            let (a, b) = rest.split_at(1 + rng.below(rest.len().min(700)));
            m.feed(a);
            assert!(m.buffered() <= CAP + 2 * 4096 + 64);
            drain(&mut m, &mut events);
            rest = b;
        }
        assert_eq!(events.len(), 1 + n, "{events:?}");
        assert!(matches!(events[0], Event::Banner(_)));
        for e in &events[1..] {
            let Event::Reply(r) = e else { panic!("{e:?}") };
            assert!(r.len() <= CAP + 1 + 80);
            assert!(!r.contains('\r'));
        }
        assert!(m.is_ready());
    }
}
