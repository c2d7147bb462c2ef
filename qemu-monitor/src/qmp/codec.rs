//! The state machine: [`Qmp`], one connection's negotiation, pending commands and event queue.
//!
//! It ties the layers below together: [`framing`](super::framing) cuts the input into lines,
//! [`decode`] says what their values are, and this file decides what they mean for the connection;
//! [`command`] encodes what it sends. Nothing below depends on it.

use super::command::{self, CAPABILITIES_ID};
use super::decode::{self, Message};
use super::error::{Error, QmpError};
use super::event::{Event, Greeting};
use super::framing::{Frame, Lines, DEFAULT_MAX_MESSAGE};
use super::text::excerpt;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

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
    negotiation: Negotiation,
    greeting: Option<Greeting>,
    closed: bool,
    next_id: u64,
    /// Commands written and not answered yet: id → command name.
    pending: BTreeMap<u64, String>,
    /// The line framing, with the cap and the unfinished line.
    lines: Lines,
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
            negotiation: Negotiation::NotStarted,
            greeting: None,
            closed: false,
            next_id: CAPABILITIES_ID + 1,
            pending: BTreeMap::new(),
            lines: Lines::new(DEFAULT_MAX_MESSAGE),
            events: VecDeque::new(),
        }
    }

    /// Keeps lines of at most `bytes` bytes, not counting their `\r\n`; longer ones become
    /// [`Event::TooLong`]. At most `bytes + 1` bytes of input are held.
    #[must_use]
    pub fn with_max_message(mut self, bytes: usize) -> Self {
        self.lines.set_max_message(bytes);
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
        self.lines.max_message()
    }

    /// Bytes of input currently held (the unfinished line), not counting queued events.
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    // ---- input ----

    /// Takes bytes read from the QMP socket. Never fails: problems become [`Event::Garbage`] or
    /// [`Event::TooLong`]. Ignored after end of file.
    pub fn feed(&mut self, mut input: &[u8]) {
        if self.closed {
            return;
        }
        while let Some(frame) = self.lines.next_frame(&mut input) {
            // Only end of file can cut a message short: a line is all there is of it.
            let unfinished = self.frame(frame, false);
            debug_assert!(unfinished.is_none());
        }
    }

    /// Takes end of file on the QMP socket: yields [`Event::Closed`] with the ids left unanswered.
    /// A last message without its line end is still decoded if it is complete.
    pub fn handle_eof(&mut self) {
        if self.closed {
            return;
        }
        let partial = match self.lines.finish() {
            Some(frame) => self.frame(frame, true),
            None => None,
        };
        self.closed = true;
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
        Ok(command::encode("qmp_capabilities", None, CAPABILITIES_ID))
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
        // Checked before an id is taken: a refused command uses none.
        let args = command::validate(name, args)?;
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, name.to_owned());
        Ok((id, command::encode(name, args, id)))
    }

    // ---- output ----

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internals ----

    /// Reports or decodes one frame; at end of file, returns the description of a message cut
    /// short, for [`Event::Closed`].
    fn frame(&mut self, frame: Frame, at_eof: bool) -> Option<String> {
        match frame {
            Frame::TooLong(excerpt) => {
                self.events.push_back(Event::TooLong {
                    limit: self.lines.max_message(),
                    excerpt,
                });
                None
            }
            Frame::Line(line) => decode::line(line.trim_ascii(), at_eof, |message, raw| {
                self.message(message, raw);
            }),
        }
    }

    /// One decoded value, checked against the connection's state; `raw` is its text, for excerpts.
    fn message(&mut self, message: Message, raw: &[u8]) {
        match message {
            Message::Greeting(_) if self.greeting.is_some() => {
                self.garbage("a second greeting".into(), raw);
            }
            Message::Greeting(None) => self.garbage("a malformed greeting".into(), raw),
            Message::Greeting(Some(greeting)) => {
                self.greeting = Some(greeting.clone());
                self.events.push_back(Event::Greeting(greeting));
            }
            Message::Async {
                name,
                data,
                timestamp,
            } => self.events.push_back(Event::Async {
                name,
                data,
                timestamp,
            }),
            Message::Reply { id, result } => self.reply(&id, result, raw),
            Message::Garbage(reason) => self.garbage(reason, raw),
        }
    }

    /// A reply: its id must name a pending command (checked first), and it must not carry both a
    /// return value and an error.
    fn reply(&mut self, id: &Value, result: Option<Result<Value, QmpError>>, raw: &[u8]) {
        let Some(id) = id.as_u64().filter(|id| self.pending.contains_key(id)) else {
            return self.garbage(format!("a reply for unknown id {id}"), raw);
        };
        let Some(result) = result else {
            return self.garbage("a reply with both return and error".into(), raw);
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
