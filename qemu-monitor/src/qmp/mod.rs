//! A sans-IO codec for the QEMU Machine Protocol (QMP) on `-qmp unix:PATH`.
//!
//! What travels on the wire (see `tests/data/qmp-*.out`, captured from a real QEMU 7.2 by
//! `tests/data/capture-qmp.py`): one JSON object per line, each ending in `\r\n`, ASCII only
//! (QEMU escapes everything else as `\uXXXX`):
//!
//! ```text
//! <- {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "…"}, "capabilities": ["oob"]}}
//! -> {"execute":"qmp_capabilities","id":0}
//! <- {"return": {}, "id": 0}
//! -> {"execute":"cont","id":1}
//! <- {"timestamp": {"seconds": 1795925755, "microseconds": 514998}, "event": "RESUME"}
//! <- {"return": {}, "id": 1}
//! -> {"execute":"nope","id":2}
//! <- {"id": 2, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}
//! ```
//!
//! - QEMU greets every new connection: [`Event::Greeting`].
//! - Until `qmp_capabilities` succeeds QEMU refuses every other command and sends no events. The
//!   negotiation is the caller's first write, and it need not wait for the greeting: write the bytes
//!   of [`Qmp::capabilities`] as soon as the socket is connected, and commands right after them if
//!   wanted. QEMU still greets first, reads requests only after that and executes them in order, so
//!   the commands run once the negotiation is done (see `tests/data/qmp-pipelined.out`). Its success
//!   is [`Event::Ready`]; [`Qmp::command`] refuses to build commands before `capabilities` was called.
//!   A caller that prefers to wait for [`Event::Greeting`] before negotiating may do so.
//! - Every request carries an `id` (0 for `qmp_capabilities`, then 1, 2, …), which QEMU copies into
//!   its reply: [`Event::Reply`] names it. Replies come in request order (no out-of-band execution
//!   is requested), but the codec matches them by id anyway.
//! - Events arrive at any time after the negotiation, also between a command and its reply
//!   (`cont` is answered by `RESUME`, then the reply): [`Event::Async`].
//! - `quit` is answered by a `SHUTDOWN` event and its reply, then QEMU closes the connection (the
//!   reader may see `ECONNRESET` rather than end of file if it had unread requests).
//!
//! Framing is by line: a message is what lies between two `\n`; surrounding whitespace (`\r`,
//! blanks, empty lines) is ignored, and several objects on one line are decoded one after another.
//! A line that is not a JSON object in the shape of a greeting, reply or event becomes
//! [`Event::Garbage`], and decoding goes on with the next line. QEMU's `pretty=on` output, which
//! spreads one message over many lines, is therefore not supported.
//!
//! Memory is bounded: at most [`Qmp::with_max_message`] bytes of the current line are held (plus one
//! for its `\r`). A longer line is reported as [`Event::TooLong`] as soon as it crosses the limit,
//! then skipped up to its `\n`; the command it answered gets no reply.
//!
//! The caller owns I/O: write what [`Qmp::capabilities`] and [`Qmp::command`] return, pass everything
//! read to [`Qmp::feed`] (and end of file to [`Qmp::handle_eof`]), then drain [`Qmp::poll_event`].
//!
//! ```
//! use qemu_monitor::qmp::{Event, Qmp};
//! use serde_json::json;
//!
//! let mut qmp = Qmp::new();
//! assert_eq!(qmp.capabilities().unwrap(), b"{\"execute\":\"qmp_capabilities\",\"id\":0}\r\n");
//! let (id, wire) = qmp.command("query-status", None).unwrap();
//! assert_eq!(wire, b"{\"execute\":\"query-status\",\"id\":1}\r\n");
//!
//! qmp.feed(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \
//!            \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n{\"return\": {}, \"id\": 0}\r\n");
//! assert!(matches!(qmp.poll_event(), Some(Event::Greeting(g)) if g.version.minor == 2));
//! assert_eq!(qmp.poll_event(), Some(Event::Ready));
//! qmp.feed(b"{\"return\": {\"status\": \"running\"}, \"id\": 1}\r\n");
//! assert_eq!(
//!     qmp.poll_event(),
//!     Some(Event::Reply { id, result: Ok(json!({"status": "running"})) })
//! );
//! assert_eq!(qmp.poll_event(), None);
//! ```
//!
//! # Layout
//!
//! Each file uses only the ones listed before it; this file only re-exports.
//!
//! - `error`: [`Error`] and [`QmpError`].
//! - `text`: excerpts of bad input and JSON type names, for events and errors.
//! - `event`: [`Event`] and the data it carries ([`Greeting`], [`Version`], [`Timestamp`]).
//! - `framing`: the byte stream cut into capped lines ([`DEFAULT_MAX_MESSAGE`]).
//! - `command`: requests checked and encoded for the wire ([`CAPABILITIES_ID`]).
//! - `decode`: what the JSON values of a line are, before the connection's state is consulted.
//! - `codec`: [`Qmp`], the state machine that ties them together.
//! - `tests`: the unit tests, with the captures in `tests/data/`.

mod error;
mod text;

mod event;

mod command;
mod framing;

mod decode;

mod codec;

#[cfg(test)]
mod tests;

pub use codec::Qmp;
pub use command::CAPABILITIES_ID;
pub use error::{Error, QmpError};
pub use event::{Event, Greeting, Timestamp, Version};
pub use framing::DEFAULT_MAX_MESSAGE;
