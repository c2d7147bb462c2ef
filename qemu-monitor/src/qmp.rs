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

use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Line cap used by [`Qmp::new`]: far above any reply of a small VM (`query-qmp-schema` of QEMU 7.2
/// is about 200 KiB).
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// The id [`Qmp::capabilities`] gives `qmp_capabilities`; commands count from 1.
pub const CAPABILITIES_ID: u64 = 0;

/// Longest excerpt of a bad line kept in an event, in bytes.
const EXCERPT: usize = 200;

/// Errors from [`Qmp::capabilities`] and [`Qmp::command`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command was built before [`Qmp::capabilities`]; QEMU would refuse it.
    #[error("capabilities negotiation has not been started (call `capabilities` first)")]
    NotNegotiated,
    /// [`Qmp::capabilities`] was called a second time.
    #[error("capabilities negotiation was already started")]
    AlreadyNegotiating,
    /// `qmp_capabilities` was passed to [`Qmp::command`]; [`Qmp::capabilities`] sends it.
    #[error("qmp_capabilities is sent by `capabilities`, not as a command")]
    CapabilitiesCommand,
    /// The arguments of a command were not a JSON object, which QEMU requires.
    #[error("command arguments must be a JSON object, not {found}")]
    ArgumentsNotObject {
        /// The JSON type given instead: `null`, `boolean`, `number`, `string` or `array`.
        found: &'static str,
    },
    /// QEMU refused `qmp_capabilities`, so it refuses every command.
    #[error("capabilities negotiation failed: {0}")]
    NegotiationFailed(QmpError),
    /// The connection reached end of file.
    #[error("the qmp connection is closed")]
    Closed,
}

/// An error reply from QEMU: `{"error": {"class": …, "desc": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {desc}")]
pub struct QmpError {
    /// The error class, e.g. `GenericError`, `CommandNotFound`, `DeviceNotFound`.
    pub class: String,
    /// The human-readable description.
    pub desc: String,
}

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Version {
    /// Major version number (7 for QEMU 7.2.22).
    pub major: u64,
    /// Minor version number (2 for QEMU 7.2.22).
    pub minor: u64,
    /// Micro version number (22 for QEMU 7.2.22).
    pub micro: u64,
    /// The build's package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`; often empty.
    pub package: String,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        if !self.package.is_empty() {
            write!(f, " ({})", self.package)?;
        }
        Ok(())
    }
}

/// QEMU's greeting: `{"QMP": {"version": …, "capabilities": […]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Greeting {
    /// The version of the QEMU at the other end.
    pub version: Version,
    /// Capabilities QEMU offers (e.g. `oob`); none are enabled by [`Qmp::capabilities`].
    pub capabilities: Vec<String>,
}

/// When QEMU emitted an event, as it reports it (seconds and microseconds since the Unix epoch; both
/// -1 if QEMU could not read its clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Whole seconds.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

/// What the codec learned from the bytes fed to it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// QEMU's greeting, the first message of every connection.
    Greeting(Greeting),
    /// QEMU accepted `qmp_capabilities`: commands run and events flow.
    Ready,
    /// QEMU refused `qmp_capabilities`; further commands are refused by [`Qmp::command`]. Replies to
    /// commands already written still arrive (QEMU refuses them one by one).
    NegotiationFailed(QmpError),
    /// The reply to the command with this id: its `return` value, or its `error`.
    Reply {
        /// The id [`Qmp::command`] returned for the command.
        id: u64,
        /// `Ok(return value)` (often `{}`), or the error QEMU reported.
        result: Result<Value, QmpError>,
    },
    /// An asynchronous event, e.g. `SHUTDOWN`, `STOP`, `RESUME`, `RESET`.
    Async {
        /// The event's name.
        name: String,
        /// Its `data` member; `Value::Null` if it had none.
        data: Value,
        /// Its `timestamp` member, if it had a well-formed one.
        timestamp: Option<Timestamp>,
    },
    /// A line that is not a QMP message (not JSON, not an object, a reply for an unknown id, …);
    /// it was skipped and decoding goes on.
    Garbage {
        /// What is wrong with it.
        reason: String,
        /// The start of the offending text, control characters escaped.
        excerpt: String,
    },
    /// A line longer than the limit; it is skipped up to its `\n`, and decoding goes on.
    TooLong {
        /// The limit in bytes ([`Qmp::max_message`]).
        limit: usize,
        /// The start of the line, control characters escaped.
        excerpt: String,
    },
    /// The connection reached end of file; reported once, last.
    Closed {
        /// Ids of the commands (0: `qmp_capabilities`) that never got a reply, in ascending order.
        pending: Vec<u64>,
        /// The start of an unfinished message cut off by the end of file, with its length.
        partial: Option<String>,
    },
}

/// Where capabilities negotiation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Negotiation {
    /// [`Qmp::capabilities`] not called yet.
    NotStarted,
    /// `qmp_capabilities` written, reply awaited.
    Sent,
    /// QEMU accepted it.
    Done,
    /// QEMU refused it.
    Failed(QmpError),
}

/// One QMP connection: encodes commands and decodes greeting, replies and events.
///
/// Methods come in four groups: getters ([`is_ready`](Qmp::is_ready), …), input
/// ([`feed`](Qmp::feed), [`handle_eof`](Qmp::handle_eof)), command mutators
/// ([`capabilities`](Qmp::capabilities), [`command`](Qmp::command)) and output
/// ([`poll_event`](Qmp::poll_event)). After each input call, drain `poll_event` until it returns
/// `None`. Feeding one byte at a time costs the same as feeding everything at once: each byte is
/// looked at once before its line ends, and each line is parsed once.
#[derive(Debug, Clone)]
pub struct Qmp {
    max_message: usize,
    negotiation: Negotiation,
    greeting: Option<Greeting>,
    closed: bool,
    next_id: u64,
    /// Commands written and not answered yet: id → command name.
    pending: BTreeMap<u64, String>,
    /// The current line so far, at most `max_message + 1` bytes.
    line: Vec<u8>,
    /// Inside a line that was too long: discard up to its `\n`.
    skipping: bool,
    events: VecDeque<Event>,
}

impl Default for Qmp {
    fn default() -> Self {
        Self::new()
    }
}

impl Qmp {
    /// A codec waiting for QEMU's greeting, with the [`DEFAULT_MAX_MESSAGE`] cap.
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            negotiation: Negotiation::NotStarted,
            greeting: None,
            closed: false,
            next_id: CAPABILITIES_ID + 1,
            pending: BTreeMap::new(),
            line: Vec::new(),
            skipping: false,
            events: VecDeque::new(),
        }
    }

    /// Keeps lines of at most `bytes` bytes, not counting their `\r\n`; longer ones become
    /// [`Event::TooLong`]. At most `bytes + 1` bytes of input are held.
    #[must_use]
    pub fn with_max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    // ---- getters ----

    /// Whether QEMU accepted `qmp_capabilities` and the connection is open.
    pub fn is_ready(&self) -> bool {
        self.negotiation == Negotiation::Done && !self.closed
    }

    /// Whether end of file was seen.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// QEMU's greeting, once seen.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// How many commands (`qmp_capabilities` included) were written and not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The name of the pending command with this id, for error messages.
    pub fn pending_command(&self, id: u64) -> Option<&str> {
        self.pending.get(&id).map(String::as_str)
    }

    /// The line cap in bytes.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Bytes of input currently held (the unfinished line), not counting queued events.
    pub fn buffered(&self) -> usize {
        self.line.len()
    }

    // ---- input ----

    /// Takes bytes read from the QMP socket. Never fails: problems become [`Event::Garbage`] or
    /// [`Event::TooLong`]. Ignored after end of file.
    pub fn feed(&mut self, mut input: &[u8]) {
        if self.closed {
            return;
        }
        while !input.is_empty() {
            let (part, ends_line) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let part = &input[..i];
                    input = &input[i + 1..];
                    (part, true)
                }
                None => (std::mem::take(&mut input), false),
            };
            if !self.skipping {
                // One byte more than the cap: the line's `\r`, unknown until its `\n` arrives.
                if self.line.len() + part.len() > self.max_message.saturating_add(1) {
                    self.too_long(part);
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            if ends_line {
                if self.skipping {
                    self.skipping = false;
                } else {
                    self.end_line();
                }
            }
        }
    }

    /// Takes end of file on the QMP socket: yields [`Event::Closed`] with the ids left unanswered.
    /// A last message without its line end is still decoded if it is complete.
    pub fn handle_eof(&mut self) {
        if self.closed {
            return;
        }
        let mut partial = None;
        if !self.skipping {
            let line = std::mem::take(&mut self.line);
            if self.over_limit(&line) {
                self.push_too_long(&line);
            } else {
                partial = self.decode(line.trim_ascii(), true);
            }
        }
        self.closed = true;
        self.skipping = false;
        self.line = Vec::new();
        let pending = std::mem::take(&mut self.pending).into_keys().collect();
        self.events.push_back(Event::Closed { pending, partial });
    }

    // ---- commands ----

    /// Starts capabilities negotiation: returns the bytes of `qmp_capabilities` (id
    /// [`CAPABILITIES_ID`]), to be written first, without waiting for the greeting.
    ///
    /// No capability is enabled (in particular not `oob`). QEMU's answer becomes [`Event::Ready`] or
    /// [`Event::NegotiationFailed`]. Errors if called twice or after end of file.
    #[must_use = "the returned bytes must be written to the QMP socket"]
    pub fn capabilities(&mut self) -> Result<Vec<u8>, Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        if self.negotiation != Negotiation::NotStarted {
            return Err(Error::AlreadyNegotiating);
        }
        self.negotiation = Negotiation::Sent;
        self.pending
            .insert(CAPABILITIES_ID, "qmp_capabilities".to_owned());
        Ok(encode("qmp_capabilities", None, CAPABILITIES_ID))
    }

    /// Queues the command `name` with optional `args` (a JSON object) and returns its id and the
    /// bytes to write: `{"execute":NAME,"arguments":ARGS,"id":ID}\r\n`.
    ///
    /// May be called as soon as [`capabilities`](Qmp::capabilities) was, before QEMU has answered it;
    /// the reply is the [`Event::Reply`] with the returned id. Errors before `capabilities`, after a
    /// refused negotiation, after end of file, for `qmp_capabilities` itself, and for arguments that
    /// are not an object.
    #[must_use = "the returned bytes must be written to the QMP socket"]
    pub fn command(&mut self, name: &str, args: Option<Value>) -> Result<(u64, Vec<u8>), Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        match &self.negotiation {
            Negotiation::NotStarted => return Err(Error::NotNegotiated),
            Negotiation::Failed(e) => return Err(Error::NegotiationFailed(e.clone())),
            Negotiation::Sent | Negotiation::Done => {}
        }
        if name == "qmp_capabilities" {
            return Err(Error::CapabilitiesCommand);
        }
        let args = match args {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                return Err(Error::ArgumentsNotObject {
                    found: json_type(&other),
                })
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, name.to_owned());
        Ok((id, encode(name, args, id)))
    }

    // ---- output ----

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internals ----

    /// The current line plus `part` crossed the cap: report it and skip to its end.
    fn too_long(&mut self, part: &[u8]) {
        let mut head = std::mem::take(&mut self.line);
        let need = EXCERPT.saturating_sub(head.len()).min(part.len());
        head.extend_from_slice(&part[..need]);
        self.push_too_long(&head);
        self.skipping = true;
    }

    /// Whether a whole line, without its `\n`, is over the cap; its `\r` does not count.
    fn over_limit(&self, line: &[u8]) -> bool {
        line.strip_suffix(b"\r").unwrap_or(line).len() > self.max_message
    }

    fn push_too_long(&mut self, head: &[u8]) {
        let mut excerpt = escape(head[..head.len().min(EXCERPT)].trim_ascii());
        excerpt.push('…');
        self.events.push_back(Event::TooLong {
            limit: self.max_message,
            excerpt,
        });
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if self.over_limit(&line) {
            self.push_too_long(&line);
            return;
        }
        // Only end of file can cut a message short: a line is all there is of it.
        let unfinished = self.decode(line.trim_ascii(), false);
        debug_assert!(unfinished.is_none());
    }

    /// Decodes the JSON values of one line (already trimmed); problems are reported as garbage.
    /// At end of file, a value cut short is not garbage but returned, described for
    /// [`Event::Closed`].
    fn decode(&mut self, text: &[u8], at_eof: bool) -> Option<String> {
        let mut values = serde_json::Deserializer::from_slice(text).into_iter::<Value>();
        loop {
            let start = values.byte_offset();
            match values.next() {
                None => return None,
                Some(Ok(value)) => {
                    let raw = text[start..values.byte_offset()].trim_ascii();
                    self.message(value, raw);
                }
                Some(Err(e)) => {
                    let rest = text[start..].trim_ascii();
                    if at_eof && e.is_eof() {
                        return Some(format!("{} bytes: {}", rest.len(), excerpt(rest)));
                    }
                    self.garbage(format!("not JSON ({e})"), rest);
                    return None;
                }
            }
        }
    }

    /// One decoded JSON value; `raw` is its text, for excerpts.
    fn message(&mut self, value: Value, raw: &[u8]) {
        let Value::Object(mut obj) = value else {
            let reason = format!("not a JSON object but {}", json_type(&value));
            return self.garbage(reason, raw);
        };
        if let Some(qmp) = obj.remove("QMP") {
            if self.greeting.is_some() {
                return self.garbage("a second greeting".into(), raw);
            }
            let Some(greeting) = parse_greeting(&qmp) else {
                return self.garbage("a malformed greeting".into(), raw);
            };
            self.greeting = Some(greeting.clone());
            self.events.push_back(Event::Greeting(greeting));
        } else if let Some(name) = obj.get("event") {
            let Some(name) = name.as_str().map(str::to_owned) else {
                return self.garbage("an event whose name is not a string".into(), raw);
            };
            let timestamp = obj.get("timestamp").and_then(|t| {
                Some(Timestamp {
                    seconds: t.get("seconds")?.as_i64()?,
                    microseconds: t.get("microseconds")?.as_i64()?,
                })
            });
            let data = obj.remove("data").unwrap_or(Value::Null);
            self.events.push_back(Event::Async {
                name,
                data,
                timestamp,
            });
        } else if obj.contains_key("return") || obj.contains_key("error") {
            self.reply(obj, raw);
        } else {
            self.garbage("not a greeting, reply or event".into(), raw);
        }
    }

    fn reply(&mut self, mut obj: Map<String, Value>, raw: &[u8]) {
        let id = match obj.get("id") {
            // QEMU's answer to a request it could not parse, which we never write.
            None => return self.garbage("a reply without an id".into(), raw),
            Some(v) => match v.as_u64().filter(|id| self.pending.contains_key(id)) {
                Some(id) => id,
                None => return self.garbage(format!("a reply for unknown id {v}"), raw),
            },
        };
        let result = match (obj.remove("return"), obj.remove("error")) {
            (Some(value), None) => Ok(value),
            (None, Some(error)) => Err(QmpError {
                class: error
                    .get("class")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                desc: match error.get("desc") {
                    Some(Value::String(desc)) => desc.clone(),
                    _ => error.to_string(),
                },
            }),
            _ => return self.garbage("a reply with both return and error".into(), raw),
        };
        self.pending.remove(&id);
        if id == CAPABILITIES_ID {
            match result {
                Ok(_) => {
                    self.negotiation = Negotiation::Done;
                    self.events.push_back(Event::Ready);
                }
                Err(e) => {
                    self.negotiation = Negotiation::Failed(e.clone());
                    self.events.push_back(Event::NegotiationFailed(e));
                }
            }
        } else {
            self.events.push_back(Event::Reply { id, result });
        }
    }

    fn garbage(&mut self, reason: String, raw: &[u8]) {
        self.events.push_back(Event::Garbage {
            reason,
            excerpt: excerpt(raw),
        });
    }
}

/// The wire form of a request: compact JSON, members in a fixed order, then `\r\n`.
fn encode(name: &str, args: Option<Map<String, Value>>, id: u64) -> Vec<u8> {
    let mut out = format!("{{\"execute\":{}", Value::from(name));
    if let Some(args) = args {
        out.push_str(&format!(",\"arguments\":{}", Value::Object(args)));
    }
    out.push_str(&format!(",\"id\":{id}}}\r\n"));
    out.into_bytes()
}

fn parse_greeting(qmp: &Value) -> Option<Greeting> {
    let version = qmp.get("version")?;
    let qemu = version.get("qemu")?;
    Some(Greeting {
        version: Version {
            major: qemu.get("major")?.as_u64()?,
            minor: qemu.get("minor")?.as_u64()?,
            micro: qemu.get("micro")?.as_u64()?,
            package: version
                .get("package")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
        capabilities: qmp
            .get("capabilities")?
            .as_array()?
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<_>>()?,
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The start of `bytes` for an event, marked with `…` if cut.
fn excerpt(bytes: &[u8]) -> String {
    let mut out = escape(&bytes[..bytes.len().min(EXCERPT)]);
    if bytes.len() > EXCERPT {
        out.push('…');
    }
    out
}

/// Text for a log line: invalid UTF-8 replaced, control characters escaped.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

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
                input: include_bytes!("../tests/data/qmp-session.in"),
                output: include_bytes!("../tests/data/qmp-session.out"),
            },
            Capture {
                name: "schema",
                commands: vec![("query-qmp-schema", None)],
                input: include_bytes!("../tests/data/qmp-schema.in"),
                output: include_bytes!("../tests/data/qmp-schema.out"),
            },
            Capture {
                name: "pipelined",
                commands: vec![
                    ("query-status", None),
                    ("cont", None),
                    ("stop", None),
                    ("query-status", None),
                ],
                input: include_bytes!("../tests/data/qmp-pipelined.in"),
                output: include_bytes!("../tests/data/qmp-pipelined.out"),
            },
            Capture {
                name: "quit",
                commands: vec![("query-status", None), ("quit", None)],
                input: include_bytes!("../tests/data/qmp-quit.in"),
                output: include_bytes!("../tests/data/qmp-quit.out"),
            },
            Capture {
                name: "client",
                commands: vec![("query-status", None)],
                input: include_bytes!("../tests/data/qmp-client.in"),
                output: include_bytes!("../tests/data/qmp-client.out"),
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

    // ---- golden wire bytes ----

    #[test]
    fn golden_capabilities() {
        let mut qmp = Qmp::new();
        assert_eq!(
            qmp.capabilities().unwrap(),
            b"{\"execute\":\"qmp_capabilities\",\"id\":0}\r\n"
        );
        assert_eq!(qmp.pending(), 1);
        assert_eq!(qmp.pending_command(0), Some("qmp_capabilities"));
        assert_eq!(qmp.capabilities(), Err(Error::AlreadyNegotiating));
    }

    #[test]
    fn golden_commands() {
        let mut qmp = Qmp::new();
        let _ = qmp.capabilities().unwrap();
        let (id, wire) = qmp.command("query-status", None).unwrap();
        assert_eq!(
            (id, wire.as_slice()),
            (1, &b"{\"execute\":\"query-status\",\"id\":1}\r\n"[..])
        );
        let (id, wire) = qmp
            .command(
                "human-monitor-command",
                Some(json!({"command-line": "info status"})),
            )
            .unwrap();
        assert_eq!(id, 2);
        assert_eq!(
            wire,
            b"{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info status\"},\"id\":2}\r\n"
        );
        // Nested arguments, keys in sorted order (given sorted, so serde_json's `preserve_order`
        // feature would not change them), an empty object kept.
        let (id, wire) = qmp
            .command(
                "screendump",
                Some(
                    json!({"filename": "/tmp/s.png", "format": "png", "x": {"a": [1, null, true]}}),
                ),
            )
            .unwrap();
        assert_eq!(id, 3);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "{\"execute\":\"screendump\",\"arguments\":{\"filename\":\"/tmp/s.png\",\"format\":\"png\",\
             \"x\":{\"a\":[1,null,true]}},\"id\":3}\r\n"
        );
        let (_, wire) = qmp.command("stop", Some(json!({}))).unwrap();
        assert_eq!(
            wire,
            b"{\"execute\":\"stop\",\"arguments\":{},\"id\":4}\r\n"
        );
        // Names are JSON strings: quotes, controls and non-ASCII are escaped or passed as UTF-8.
        let (_, wire) = qmp.command("a\"b\\c\nd\u{e9}", None).unwrap();
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "{\"execute\":\"a\\\"b\\\\c\\nd\u{e9}\",\"id\":5}\r\n"
        );
        assert_eq!(qmp.pending(), 6);
        assert_eq!(qmp.pending_command(3), Some("screendump"));
    }

    #[test]
    fn refused_commands_use_no_id() {
        let mut qmp = Qmp::new();
        assert_eq!(qmp.command("stop", None), Err(Error::NotNegotiated));
        let _ = qmp.capabilities().unwrap();
        assert_eq!(
            qmp.command("qmp_capabilities", None),
            Err(Error::CapabilitiesCommand)
        );
        assert_eq!(
            qmp.command("stop", Some(json!([1]))),
            Err(Error::ArgumentsNotObject { found: "array" })
        );
        assert_eq!(
            qmp.command("stop", Some(Value::Null)),
            Err(Error::ArgumentsNotObject { found: "null" })
        );
        assert_eq!(qmp.command("stop", None).unwrap().0, 1);
        assert_eq!(qmp.pending(), 2);
    }

    #[test]
    fn error_messages() {
        let e = QmpError {
            class: "GenericError".into(),
            desc: "Parameter 'x' is unexpected".into(),
        };
        assert_eq!(e.to_string(), "GenericError: Parameter 'x' is unexpected");
        assert_eq!(
            Error::NegotiationFailed(e).to_string(),
            "capabilities negotiation failed: GenericError: Parameter 'x' is unexpected"
        );
        assert_eq!(
            Error::ArgumentsNotObject { found: "string" }.to_string(),
            "command arguments must be a JSON object, not string"
        );
        assert_eq!(Error::Closed.to_string(), "the qmp connection is closed");
        let Some(Event::Greeting(g)) = ({
            let mut qmp = Qmp::new();
            qmp.feed(GREETING);
            qmp.poll_event()
        }) else {
            panic!("no greeting")
        };
        assert_eq!(
            g.version.to_string(),
            "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"
        );
        let plain = Version {
            major: 9,
            minor: 0,
            micro: 1,
            package: String::new(),
        };
        assert_eq!(plain.to_string(), "9.0.1");
    }

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

    // ---- hand-made transcripts ----

    #[test]
    fn transcript_with_an_event_before_the_reply() {
        let mut qmp = Qmp::new();
        assert!(!qmp.is_ready());
        let mut wire = qmp.capabilities().unwrap();
        let (id, bytes) = qmp.command("system_powerdown", None).unwrap();
        wire.extend(bytes);
        assert_eq!(
            wire,
            b"{\"execute\":\"qmp_capabilities\",\"id\":0}\r\n{\"execute\":\"system_powerdown\",\"id\":1}\r\n"
        );
        assert_eq!(qmp.pending(), 2);
        qmp.feed(GREETING);
        assert_eq!(events(&mut qmp), [greeting()]);
        qmp.feed(b"{\"return\": {}, \"id\": 0}\r\n");
        assert_eq!(events(&mut qmp), [Event::Ready]);
        assert!(qmp.is_ready());
        assert_eq!(qmp.pending(), 1);
        qmp.feed(
            b"{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 42}, \"event\": \"POWERDOWN\"}\r\n",
        );
        assert_eq!(
            events(&mut qmp),
            [event("POWERDOWN", Value::Null, 1700000000, 42)]
        );
        assert_eq!(qmp.pending_command(id), Some("system_powerdown"));
        qmp.feed(b"{\"return\": {}, \"id\": 1}\r\n");
        assert_eq!(events(&mut qmp), [ok(1, json!({}))]);
        assert_eq!(qmp.pending(), 0);
        // An event without data or timestamp is still an event.
        qmp.feed(b"{\"event\": \"STOP\"}\r\n");
        assert_eq!(
            events(&mut qmp),
            [Event::Async {
                name: "STOP".into(),
                data: Value::Null,
                timestamp: None
            }]
        );
    }

    /// A hand-made transcript with everything odd in it, fed whole, byte by byte and at every split.
    #[test]
    fn odd_transcript_split_anywhere() {
        let output: &[u8] = b"\r\n  {\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 9}, \"package\": \"\"}, \"capabilities\": []}}\n\
            {\"return\": {}, \"id\": 0}{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": -1, \"microseconds\": -1}}\r\n\
            \tnot json\r\n\
            {\"return\": {}, \"id\": 77}\r\n\
            \r\n\r\n\
            {\"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}  \r\r\n\
            {\"return\": \"\\u00e9\\r\\n\", \"id\": 2}\r\n\
            {\"return\": {\"a\": ";
        let run = |pieces: Vec<&[u8]>| {
            let mut qmp = Qmp::new();
            let _ = qmp.capabilities().unwrap();
            for _ in 0..3 {
                let _ = qmp.command("x", None).unwrap();
            }
            let mut v = Vec::new();
            for p in pieces {
                qmp.feed(p);
                drain(&mut qmp, &mut v);
            }
            qmp.handle_eof();
            drain(&mut qmp, &mut v);
            v
        };
        let whole = run(vec![output]);
        assert_eq!(
            whole,
            [
                Event::Greeting(Greeting {
                    version: Version {
                        major: 9,
                        minor: 0,
                        micro: 0,
                        package: String::new()
                    },
                    capabilities: vec![]
                }),
                Event::Ready,
                Event::Async {
                    name: "RESUME".into(),
                    data: Value::Null,
                    timestamp: Some(Timestamp {
                        seconds: -1,
                        microseconds: -1
                    })
                },
                garbage("not JSON (expected ident at line 1 column 2)", "not json"),
                garbage("a reply for unknown id 77", "{\"return\": {}, \"id\": 77}"),
                err(1, "GenericError", "no"),
                ok(2, json!("\u{e9}\r\n")),
                Event::Closed {
                    pending: vec![3],
                    partial: Some("16 bytes: {\"return\": {\"a\":".into())
                },
            ]
        );
        assert_eq!(run(output.chunks(1).collect()), whole, "byte by byte");
        for at in 0..=output.len() {
            let (a, b) = output.split_at(at);
            assert_eq!(run(vec![a, b]), whole, "split at {at}");
        }
    }

    // ---- errors, garbage, limits ----

    #[test]
    fn error_reply() {
        let mut qmp = ready();
        let (id, _) = qmp
            .command("set_link", Some(json!({"name": "x", "up": true})))
            .unwrap();
        qmp.feed(b"{\"id\": 1, \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x' not found\"}}\r\n");
        assert_eq!(
            events(&mut qmp),
            [err(id, "DeviceNotFound", "Device 'x' not found")]
        );
        // An error without the usual members keeps what it has.
        let (id, _) = qmp.command("x", None).unwrap();
        qmp.feed(b"{\"error\": {\"code\": 3}, \"id\": 2}\r\n");
        assert_eq!(events(&mut qmp), [err(id, "", "{\"code\":3}")]);
        assert!(qmp.is_ready());
    }

    #[test]
    fn garbage_is_reported_and_decoding_goes_on() {
        let mut qmp = ready();
        let (id, _) = qmp.command("query-status", None).unwrap();
        let mut deep = vec![b'['; 100_000];
        deep.extend(b"\r\n");
        let inputs: Vec<(&[u8], Event)> = vec![
            (
                b"hello world\r\n",
                garbage("not JSON (expected value at line 1 column 1)", "hello world"),
            ),
            (b"[1, 2]\r\n", garbage("not a JSON object but array", "[1, 2]")),
            (b"\"str\"\r\n", garbage("not a JSON object but string", "\"str\"")),
            (b"42\r\n", garbage("not a JSON object but number", "42")),
            (b"null\r\n", garbage("not a JSON object but null", "null")),
            (
                b"{\"foo\": 1}\r\n",
                garbage("not a greeting, reply or event", "{\"foo\": 1}"),
            ),
            (
                b"{\"event\": 5}\r\n",
                garbage("an event whose name is not a string", "{\"event\": 5}"),
            ),
            // QEMU's answer to a request it could not parse has no id.
            (
                b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword 'xyz'\"}}\r\n",
                garbage(
                    "a reply without an id",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword 'xyz'\"}}",
                ),
            ),
            (
                b"{\"return\": {}, \"error\": {}, \"id\": 1}\r\n",
                garbage(
                    "a reply with both return and error",
                    "{\"return\": {}, \"error\": {}, \"id\": 1}",
                ),
            ),
            (
                b"{\"QMP\": {}}\r\n",
                garbage("a second greeting", "{\"QMP\": {}}"),
            ),
            (
                b"{\"a\": \r\n",
                garbage("not JSON (EOF while parsing a value at line 1 column 5)", "{\"a\":"),
            ),
            (
                b"{\"return\": \"\xff\", \"id\": 1}\r\n",
                garbage(
                    "not JSON (invalid unicode code point at line 1 column 13)",
                    "{\"return\": \"\u{fffd}\", \"id\": 1}",
                ),
            ),
            // Control characters are escaped in the excerpt.
            (
                b"\x1b[31mred\x00\r\n",
                garbage(
                    "not JSON (expected value at line 1 column 1)",
                    "\\u{1b}[31mred\\0",
                ),
            ),
            (
                b"{} x\r\n",
                garbage("not a greeting, reply or event", "{}"),
            ),
        ];
        for (input, expected) in inputs {
            qmp.feed(input);
            let got = events(&mut qmp);
            // `{} x`: the object, then the rest of the line.
            if input.starts_with(b"{} ") {
                assert_eq!(got.len(), 2, "{got:?}");
                assert!(
                    matches!(&got[1], Event::Garbage { excerpt, .. } if excerpt == "x"),
                    "{got:?}"
                );
            } else {
                assert_eq!(got.len(), 1, "{got:?}");
            }
            assert_eq!(got[0], expected);
        }
        // Deep nesting hits serde_json's recursion limit, not the stack.
        qmp.feed(&deep);
        let got = events(&mut qmp);
        assert!(
            matches!(&got[..], [Event::Garbage { reason, excerpt }]
                if reason.contains("recursion limit") && excerpt.ends_with("[[[…")),
            "{got:?}"
        );
        // Through all of it, the pending command survived and its reply is matched.
        assert_eq!(qmp.pending_command(id), Some("query-status"));
        qmp.feed(b"{\"return\": {\"status\": \"running\"}, \"id\": 1}\r\n");
        assert_eq!(events(&mut qmp), [ok(id, json!({"status": "running"}))]);
        assert!(qmp.is_ready());
    }

    #[test]
    fn replies_for_unknown_ids() {
        let mut qmp = ready();
        let (id, _) = qmp.command("stop", None).unwrap();
        qmp.feed(b"{\"return\": {}, \"id\": 99}\r\n");
        qmp.feed(b"{\"return\": {}, \"id\": \"1\"}\r\n");
        qmp.feed(b"{\"return\": {}, \"id\": -1}\r\n");
        qmp.feed(b"{\"return\": {}, \"id\": 1.5}\r\n");
        // The negotiation was answered already.
        qmp.feed(b"{\"return\": {}, \"id\": 0}\r\n");
        qmp.feed(b"{\"return\": {}, \"id\": 1}\r\n");
        // A second reply for the same id.
        qmp.feed(b"{\"return\": {}, \"id\": 1}\r\n");
        let unknown = |id: &str| {
            garbage(
                &format!("a reply for unknown id {id}"),
                &format!("{{\"return\": {{}}, \"id\": {id}}}"),
            )
        };
        assert_eq!(
            events(&mut qmp),
            [
                unknown("99"),
                unknown("\"1\""),
                unknown("-1"),
                unknown("1.5"),
                unknown("0"),
                ok(id, json!({})),
                unknown("1"),
            ]
        );
        assert!(qmp.is_ready());
    }

    #[test]
    fn negotiation_refused() {
        let mut qmp = Qmp::new();
        let _ = qmp.capabilities().unwrap();
        let (id, _) = qmp.command("query-status", None).unwrap();
        qmp.feed(GREETING);
        qmp.feed(b"{\"id\": 0, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Capabilities negotiation is already complete, command ignored\"}}\r\n");
        let refusal = QmpError {
            class: "CommandNotFound".into(),
            desc: "Capabilities negotiation is already complete, command ignored".into(),
        };
        assert_eq!(
            events(&mut qmp),
            [greeting(), Event::NegotiationFailed(refusal.clone())]
        );
        assert!(!qmp.is_ready());
        assert_eq!(
            qmp.command("stop", None),
            Err(Error::NegotiationFailed(refusal))
        );
        // What was written already is still answered (with QEMU's refusal, as captured).
        qmp.feed(b"{\"id\": 1, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n");
        assert_eq!(
            events(&mut qmp),
            [err(
                id,
                "CommandNotFound",
                "Expecting capabilities negotiation with 'qmp_capabilities'"
            )]
        );
    }

    #[test]
    fn malformed_greeting_is_garbage() {
        let mut qmp = Qmp::new();
        qmp.feed(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, \"capabilities\": []}}\r\n");
        assert!(matches!(
            &events(&mut qmp)[..],
            [Event::Garbage { reason, .. }] if reason == "a malformed greeting"
        ));
        assert_eq!(qmp.greeting(), None);
        qmp.feed(GREETING);
        assert_eq!(events(&mut qmp), [greeting()]);
    }

    #[test]
    fn over_long_message_then_resync() {
        let line = |n: usize| {
            // A reply of exactly `n` bytes, padded inside a string.
            let head = b"{\"return\": \"";
            let tail = b"\", \"id\": 1}";
            let mut v = head.to_vec();
            v.resize(n - tail.len(), b'x');
            v.extend(tail);
            v
        };
        for split in [false, true] {
            let mut qmp = ready().with_max_message(64);
            let _ = qmp.command("a", None).unwrap();
            // One byte too many, with and without a \r, whole and byte by byte.
            let mut input = line(65);
            input.extend(b"\r\n");
            input.extend(line(65));
            input.extend(b"\n");
            // Exactly the limit passes, with its \r\n.
            input.extend(line(64));
            input.extend(b"\r\n");
            let mut got = Vec::new();
            if split {
                for b in input.chunks(1) {
                    qmp.feed(b);
                    drain(&mut qmp, &mut got);
                    assert!(qmp.buffered() <= 65);
                }
            } else {
                qmp.feed(&input);
                drain(&mut qmp, &mut got);
            }
            let excerpt = format!("{}…", String::from_utf8(line(65)).unwrap());
            let too_long = Event::TooLong { limit: 64, excerpt };
            assert_eq!(
                got,
                [
                    too_long.clone(),
                    too_long,
                    ok(1, json!("x".repeat(64 - 12 - 11)))
                ],
                "split: {split}"
            );
        }

        // Far over the limit, in pieces: reported once, as soon as it is crossed, then skipped.
        let mut qmp = ready().with_max_message(64);
        let _ = qmp.command("a", None).unwrap();
        qmp.feed(&[b'{'; 50]);
        assert_eq!(events(&mut qmp), []);
        qmp.feed(&[b'{'; 50]);
        let got = events(&mut qmp);
        assert!(
            matches!(&got[..], [Event::TooLong { limit: 64, excerpt }] if *excerpt == format!("{}…", "{".repeat(100))),
            "{got:?}"
        );
        assert_eq!(qmp.buffered(), 0);
        qmp.feed(&[b'x'; 10_000]);
        qmp.feed(b"\"}\r\n{\"return\": {}, \"id\": 1}\r\n");
        assert_eq!(events(&mut qmp), [ok(1, json!({}))]);
        // End of file inside an over-long line: nothing more to say about it.
        qmp.feed(&[b'x'; 100]);
        qmp.handle_eof();
        assert!(matches!(&events(&mut qmp)[..], [Event::TooLong { .. }, c] if *c == closed()));
    }

    #[test]
    fn tiny_limits() {
        // With a cap of 0 only blank lines pass; of 1, one-byte lines.
        let mut qmp = Qmp::new().with_max_message(0);
        qmp.feed(b"\r\n\n\r\n{}\r\n");
        assert!(matches!(
            &events(&mut qmp)[..],
            [Event::TooLong { limit: 0, .. }]
        ));
        let mut qmp = Qmp::new().with_max_message(1);
        qmp.feed(b"\r\n1\r\n12\n\r\r\n");
        assert_eq!(
            events(&mut qmp),
            [
                garbage("not a JSON object but number", "1"),
                Event::TooLong {
                    limit: 1,
                    excerpt: "12…".into()
                },
            ]
        );
        assert_eq!(qmp.buffered(), 0);
    }

    #[test]
    fn eof_mid_message() {
        let mut qmp = ready();
        let _ = qmp.command("query-status", None).unwrap();
        qmp.feed(b"{\"return\": {\"status\": \"runn");
        assert_eq!(events(&mut qmp), []);
        assert_eq!(qmp.buffered(), 27);
        qmp.handle_eof();
        assert_eq!(
            events(&mut qmp),
            [Event::Closed {
                pending: vec![1],
                partial: Some("27 bytes: {\"return\": {\"status\": \"runn".into())
            }]
        );
        assert!(qmp.is_closed() && !qmp.is_ready());
        assert_eq!(qmp.buffered(), 0);
        // Once closed, always closed, and reported once.
        qmp.handle_eof();
        qmp.feed(b"{\"return\": {}, \"id\": 1}\r\n");
        assert_eq!(events(&mut qmp), []);
        assert_eq!(qmp.command("stop", None), Err(Error::Closed));
        assert_eq!(qmp.capabilities(), Err(Error::Closed));
        assert_eq!(qmp.pending(), 0);
    }

    #[test]
    fn eof_after_a_complete_message_without_line_end() {
        let mut qmp = ready();
        let _ = qmp.command("query-status", None).unwrap();
        let _ = qmp.command("stop", None).unwrap();
        qmp.feed(b"{\"return\": {}, \"id\": 1}  {\"return\": {}, \"id\": 2}  ");
        qmp.handle_eof();
        assert_eq!(
            events(&mut qmp),
            [ok(1, json!({})), ok(2, json!({})), closed()]
        );
        // Garbage that is not cut short is garbage, at end of file too.
        let mut qmp = ready();
        qmp.feed(b"junk");
        qmp.handle_eof();
        assert_eq!(
            events(&mut qmp),
            [
                garbage("not JSON (expected value at line 1 column 1)", "junk"),
                closed()
            ]
        );
    }

    #[test]
    fn eof_before_the_greeting() {
        let mut qmp = Qmp::new();
        qmp.handle_eof();
        assert_eq!(events(&mut qmp), [closed()]);

        let mut qmp = Qmp::new();
        let _ = qmp.capabilities().unwrap();
        let _ = qmp.command("stop", None).unwrap();
        qmp.feed(&GREETING[..30]);
        qmp.handle_eof();
        assert_eq!(
            events(&mut qmp),
            [Event::Closed {
                pending: vec![0, 1],
                partial: Some("30 bytes: {\"QMP\": {\"version\": {\"qemu\": {".into())
            }]
        );
    }

    #[test]
    fn any_whitespace_between_messages() {
        let mut qmp = ready();
        for _ in 0..4 {
            let _ = qmp.command("x", None).unwrap();
        }
        qmp.feed(b"\n\n  {\"return\" :\t{ } , \"id\":1}  \n\t{\"return\": {}, \"id\": 2}\r\r\n");
        qmp.feed(b"{\"return\": {}, \"id\": 3}{\"return\": {}, \"id\": 4}\r\n \r\n");
        assert_eq!(
            events(&mut qmp),
            [
                ok(1, json!({})),
                ok(2, json!({})),
                ok(3, json!({})),
                ok(4, json!({}))
            ]
        );
        assert_eq!(qmp.buffered(), 0);
    }

    #[test]
    fn excerpts_are_cut() {
        let mut qmp = Qmp::new();
        let mut line = "é".repeat(150).into_bytes();
        line.extend(b"\r\n");
        qmp.feed(&line);
        let got = events(&mut qmp);
        // 200 bytes: 100 two-byte characters.
        assert!(
            matches!(&got[..], [Event::Garbage { excerpt, .. }] if *excerpt == format!("{}…", "é".repeat(100))),
            "{got:?}"
        );
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
}
