//! Reading and writing the loop's non-blocking streams: until `WouldBlock`, retrying `Interrupted`.

use crate::console::Console;
use mio::net::UnixStream;
use std::io::{ErrorKind, Read, Write};

/// A connected socket with its pending output.
pub(crate) struct Conn {
    pub(crate) stream: UnixStream,
    pub(crate) out: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(stream: UnixStream, out: Vec<u8>) -> Self {
        Conn { stream, out }
    }

    /// Queues `bytes` on `conn` and writes what the socket takes now; false when there is no
    /// connection.
    pub(crate) fn send(conn: Option<&mut Conn>, bytes: &[u8]) -> bool {
        let Some(conn) = conn else {
            return false;
        };
        conn.out.extend_from_slice(bytes);
        flush(conn);
        true
    }
}

/// Reads a line-oriented stream (console, QEMU's stderr) into `lines`, passing each completed line to
/// `emit`; at end of file completes the last line and unregisters the stream.
pub(crate) fn serve_lines<S: Read + mio::event::Source>(
    registry: &mio::Registry,
    slot: &mut Option<S>,
    lines: &mut Console,
    mut emit: impl FnMut(&str),
) {
    let Some(stream) = slot.as_mut() else {
        return;
    };
    let eof = drain(stream, |bytes| {
        for line in lines.feed(bytes) {
            emit(&line);
        }
    });
    if eof {
        if let Some(line) = lines.flush() {
            emit(&line);
        }
        if let Some(mut stream) = slot.take() {
            let _ = registry.deregister(&mut stream);
        }
    }
}

/// Reads until `WouldBlock`, passing each chunk on; true at end of file (or a hard error).
pub(crate) fn drain(r: &mut impl Read, mut each: impl FnMut(&[u8])) -> bool {
    thread_local! {
        // One buffer for every read: a fresh zeroed 64 KiB array per readiness event cost more
        // than the read itself when output arrives in 4 KiB pieces.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
    }
    BUF.with_borrow_mut(|buf| drain_with(r, buf, &mut each))
}

fn drain_with(r: &mut impl Read, buf: &mut [u8], each: &mut impl FnMut(&[u8])) -> bool {
    loop {
        match r.read(buf) {
            Ok(0) => return true,
            Ok(n) => each(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Writes pending output until the socket is full; the rest waits for the next writable event.
pub(crate) fn flush(conn: &mut Conn) {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(n) => {
                conn.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock: wait for writable; a broken pipe shows up as EOF on the read side.
            Err(_) => return,
        }
    }
}
