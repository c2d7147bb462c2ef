//! Real captures: decoded whole, split anywhere, over the limit, and over a real socket.

use super::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

// ---- real captures ----

#[test]
fn captured_greeting_is_decoded() {
    for c in captures() {
        assert!(c.output.starts_with(GREETING), "{}", c.name);
    }
    let mut qmp = Qmp::new();
    qmp.feed(GREETING);
    assert_eq!(events(&mut qmp), [greeting()]);
    assert_eq!(qmp.greeting().unwrap().capabilities, ["oob"]);
    assert!(!qmp.is_ready());
    assert_eq!(qmp.buffered(), 0);
}

#[test]
fn captures_decode_to_the_expected_events() {
    for c in captures() {
        let got = c.whole();
        if c.name == "schema" {
            // About 200 KiB on one line: the schema of every command, type and event.
            let [g, Event::Ready, Event::Reply {
                id: 1,
                result: Ok(Value::Array(schema)),
            }, Event::Closed {
                pending,
                partial: None,
            }] = &got[..]
            else {
                panic!("schema: {:?}", &got[..got.len().min(2)]);
            };
            assert_eq!(*g, greeting());
            assert!(pending.is_empty());
            assert!(schema.len() > 100, "{}", schema.len());
            assert_eq!(schema[0]["name"], "query-status");
            continue;
        }
        assert_eq!(got, expected(c.name), "{}", c.name);
    }
}

#[test]
fn captures_split_anywhere_give_the_same_events() {
    for c in captures() {
        let whole = c.whole();
        let bytes: Vec<&[u8]> = c.output.chunks(1).collect();
        assert_eq!(c.events(bytes, None), whole, "{}: byte by byte", c.name);
        // Every split point into two chunks (the big schema: every 997th).
        let step = if c.output.len() > 10_000 { 997 } else { 1 };
        for at in (0..=c.output.len()).step_by(step) {
            let (a, b) = c.output.split_at(at);
            assert_eq!(c.events([a, b], None), whole, "{}: split at {at}", c.name);
        }
        // Random pieces.
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ c.output.len() as u64);
        for _ in 0..20 {
            let mut pieces = Vec::new();
            let mut rest = c.output;
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(300));
                let (p, r) = rest.split_at(n);
                pieces.push(p);
                rest = r;
            }
            assert_eq!(c.events(pieces, None), whole, "{}: random pieces", c.name);
        }
    }
}

#[test]
fn captured_schema_over_the_limit() {
    let c = captures().into_iter().find(|c| c.name == "schema").unwrap();
    for pieces in [c.output.chunks(1).collect::<Vec<_>>(), vec![c.output]] {
        let got = c.events(pieces, Some(100_000));
        let [g, Event::Ready, Event::TooLong {
            limit: 100_000,
            excerpt,
        }, Event::Closed {
            pending,
            partial: None,
        }] = &got[..]
        else {
            panic!("{got:?}");
        };
        assert_eq!(*g, greeting());
        assert!(excerpt.starts_with("{\"return\": [{\"name\": \"query-status\""));
        assert!(excerpt.ends_with('…'));
        // The reply was lost, so its command is still pending at the end.
        assert_eq!(pending, &[1]);
    }
}

// ---- a real socket ----

/// Chunk sizes that line up with nothing in the protocol.
const CHUNKS: &[usize] = &[
    1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 4096,
];

/// Generous for a local socket, but a stuck test fails instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn captures_over_a_socketpair() {
    for c in captures() {
        let (mut ours, mut theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(TIMEOUT)).unwrap();
        theirs.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (name, input, output) = (c.name, c.input, c.output);
        let qemu = std::thread::spawn(move || {
            // QEMU's side: greet at once, read the requests, answer in odd pieces, hang up.
            let greeting_len = output.iter().position(|&b| b == b'\n').unwrap() + 1;
            theirs.write_all(&output[..greeting_len]).unwrap();
            let mut got = vec![0; input.len()];
            theirs.read_exact(&mut got).expect("requests");
            assert_eq!(got, input, "{name}: requests on the wire");
            let mut rest = &output[greeting_len..];
            for &n in CHUNKS.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at(n.min(rest.len()));
                theirs.write_all(chunk).unwrap();
                rest = tail;
            }
        });

        // Our side writes everything at once, without waiting for the greeting.
        let mut qmp = Qmp::new();
        ours.write_all(&qmp.capabilities().unwrap()).unwrap();
        for (name, args) in &c.commands {
            let (_, wire) = qmp.command(name, args.clone()).unwrap();
            ours.write_all(&wire).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // A step limit: a livelock fails the test.
        for _ in 0..=c.output.len() + 1 {
            let n = ours.read(&mut buf).expect("read from the QEMU side");
            if n == 0 {
                qmp.handle_eof();
                drain(&mut qmp, &mut got);
                break;
            }
            qmp.feed(&buf[..n]);
            drain(&mut qmp, &mut got);
        }
        qemu.join().expect("the QEMU thread failed");
        assert!(qmp.is_closed(), "{name}: never saw end of file");
        assert_eq!(got, c.whole(), "{name}");
    }
}

/// A deterministic xorshift64 generator: reproducible pieces without a `rand` dependency.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}
