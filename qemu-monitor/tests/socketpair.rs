//! The codec over a real socket: a thread plays QEMU by replaying captured sessions in odd-sized
//! chunks, the test side does blocking reads and writes as a driver would.

mod common;

use common::{Capture, CAPTURES};
use qemu_monitor::Monitor;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Chunk sizes that line up with nothing in the protocol.
const CHUNKS: &[usize] = &[
    1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67,
];

/// Generous for a local socket, but a stuck test fails instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(10);

fn replay(name: &'static str) {
    let capture = Capture::load(name);
    let (mut ours, mut theirs) = UnixStream::pair().expect("socketpair");
    ours.set_read_timeout(Some(TIMEOUT)).unwrap();
    theirs.set_read_timeout(Some(TIMEOUT)).unwrap();

    let expected_in = capture.input.clone();
    let output = capture.output.clone();
    let qemu = std::thread::spawn(move || {
        // QEMU's side: read the commands, then answer with the captured bytes, then hang up.
        let mut got = vec![0; expected_in.len()];
        theirs
            .read_exact(&mut got)
            .expect("commands from the driver side");
        assert_eq!(got, expected_in, "{name}: commands on the wire");
        let mut rest = output.as_slice();
        for &n in CHUNKS.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            theirs.write_all(chunk).expect("write to the driver side");
            rest = tail;
        }
        // Dropping `theirs` closes the socket: end of file on our side.
    });

    let mut m = Monitor::new();
    for c in capture.commands() {
        let wire = m.command(&c).unwrap();
        ours.write_all(&wire).unwrap();
    }
    let mut events = Vec::new();
    let mut buf = [0u8; 4096];
    // A step limit: a livelock fails the test.
    for _ in 0..=capture.output.len() + 1 {
        let n = ours.read(&mut buf).expect("read from the QEMU side");
        if n == 0 {
            m.handle_eof();
            common::drain(&mut m, &mut events);
            break;
        }
        m.feed(&buf[..n]);
        common::drain(&mut m, &mut events);
    }
    qemu.join().expect("the QEMU thread failed");
    assert!(m.is_closed(), "{name}: never saw end of file");
    assert_eq!(events, capture.whole(), "{name}");
}

#[test]
fn every_capture_replayed_over_a_socketpair() {
    for &name in CAPTURES {
        replay(name);
    }
}
