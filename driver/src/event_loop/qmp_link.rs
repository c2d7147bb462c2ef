//! One machine's QMP connection as the loop keeps it: dialing QEMU's socket, the codec, replies by
//! id and the queue of asynchronous events. What a test does with them is `crate::qmp`'s.

use crate::text::shorten;
use qemu_monitor::qmp::{self, Qmp, QmpError};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Events kept per machine; older ones are dropped (a wait skips what it never saw).
pub const EVENTS_KEPT: usize = 1000;
/// First pause between two tries to connect to the QMP socket; it doubles up to
/// [`DIAL_MAX_DELAY`], as the driver's polling waits do.
const DIAL_FIRST_DELAY: Duration = Duration::from_millis(10);
/// Longest pause between two tries: the socket is connected at most this long after it appears.
pub(crate) const DIAL_MAX_DELAY: Duration = Duration::from_millis(60);
/// How long after QEMU connected to the monitor the QMP socket may still be missing. QEMU creates
/// both (and the backdoor sockets) in one go before it runs the guest, so a socket missing this long
/// after is not coming: the start script did not pass the option (not scaled: no guest code runs).
pub(crate) const DIAL_GRACE: Duration = Duration::from_secs(5);
/// Events listed when a wait times out.
const EVENTS_SHOWN: usize = 10;
/// Characters of an event's data shown in the log and in errors.
const DATA_SHOWN: usize = 300;
/// Events logged at info level; the others at debug level.
const NOTABLE: [&str; 4] = ["SHUTDOWN", "GUEST_PANICKED", "RESET", "STOP"];

/// An asynchronous QMP event of a machine, e.g. `SHUTDOWN`, `STOP`, `RESUME`, `RESET`.
#[derive(Clone, Debug, PartialEq)]
pub struct QmpEvent {
    /// The event's name, e.g. `SHUTDOWN`.
    pub name: String,
    /// Its `data` member (`{"guest": true, "reason": "guest-shutdown"}` for a poweroff in the guest);
    /// `Value::Null` when it has none.
    pub data: Value,
    /// When QEMU emitted it, by QEMU's clock; `None` if QEMU could not read its clock.
    pub timestamp: Option<SystemTime>,
    /// When the driver received it.
    pub received: Instant,
}

impl QmpEvent {
    /// The event's name and data, shortened, for logs and errors.
    pub(crate) fn summary(&self) -> String {
        match &self.data {
            Value::Null => self.name.clone(),
            data => format!("{} {}", self.name, shorten(&data.to_string(), DATA_SHOWN)),
        }
    }
}

/// Where the connection to one machine's QMP socket stands.
#[derive(Clone, Debug)]
pub(crate) enum Status {
    /// QEMU was never started.
    Idle,
    /// QEMU runs; the socket at `path` is tried at `next`, then after `delay`.
    Dialing {
        path: PathBuf,
        next: Instant,
        delay: Duration,
        /// When the dialer first saw QEMU connected to the monitor.
        monitor_seen: Option<Instant>,
    },
    /// Connected; `qmp_capabilities` was written first.
    Connected,
    /// QEMU never offered the socket (the start script does not pass `-qmp`).
    Absent,
    /// The connection ended, or QEMU exited before offering it.
    Closed,
}

/// One machine's QMP state, kept by the event loop: the codec, replies by id, the event queue.
pub(crate) struct QmpLink {
    pub(crate) codec: Qmp,
    pub(crate) status: Status,
    /// Replies not yet taken by [`Machine::qmp_command`], by command id.
    pub(crate) replies: HashMap<u64, Result<Value, QmpError>>,
    /// The last [`EVENTS_KEPT`] events, each with its sequence number.
    events: VecDeque<(u64, QmpEvent)>,
    /// The sequence number the next event gets.
    next_seq: u64,
    /// Events numbered below this were consumed by a wait.
    pub(crate) cursor: u64,
    /// Why QMP cannot be used although connected (QEMU refused the negotiation).
    pub(crate) refused: Option<String>,
}

impl QmpLink {
    /// Nothing started yet.
    pub(crate) fn idle() -> Self {
        QmpLink {
            codec: Qmp::new(),
            status: Status::Idle,
            replies: HashMap::new(),
            events: VecDeque::new(),
            next_seq: 0,
            cursor: 0,
            refused: None,
        }
    }

    /// A fresh link for a QEMU just started, which will create its socket at `path`.
    pub(crate) fn dialing(path: PathBuf, now: Instant) -> Self {
        QmpLink {
            status: Status::Dialing {
                path,
                next: now + DIAL_FIRST_DELAY,
                delay: DIAL_FIRST_DELAY,
                monitor_seen: None,
            },
            ..Self::idle()
        }
    }

    /// When the dialer wants the loop to wake up next, if it does.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        match self.status {
            Status::Dialing { next, .. } => Some(next),
            _ => None,
        }
    }

    /// Takes what the codec decoded: replies by id, events into the queue (logged).
    pub(crate) fn absorb(&mut self, machine: &str) {
        while let Some(e) = self.codec.poll_event() {
            match e {
                qmp::Event::Greeting(g) => {
                    log::debug!("{machine}: QMP greeting of QEMU {}", g.version)
                }
                qmp::Event::Ready => log::debug!("{machine}: QMP ready"),
                qmp::Event::NegotiationFailed(e) => {
                    log::warn!("{machine}: QEMU refused the QMP capabilities negotiation: {e}");
                    self.refused = Some(format!(
                        "QEMU refused the QMP capabilities negotiation: {e}"
                    ));
                }
                qmp::Event::Reply { id, result } => {
                    self.replies.insert(id, result);
                }
                qmp::Event::Async {
                    name,
                    data,
                    timestamp,
                } => {
                    let timestamp = timestamp.and_then(|t| {
                        let secs = u64::try_from(t.seconds).ok()?;
                        let micros = u64::try_from(t.microseconds).ok()?;
                        Some(
                            SystemTime::UNIX_EPOCH
                                + Duration::from_secs(secs)
                                + Duration::from_micros(micros),
                        )
                    });
                    let event = QmpEvent {
                        name,
                        data,
                        timestamp,
                        received: Instant::now(),
                    };
                    if NOTABLE.contains(&event.name.as_str()) {
                        log::info!("{machine}: QMP event {}", event.summary());
                    } else {
                        log::debug!("{machine}: QMP event {}", event.summary());
                    }
                    self.events.push_back((self.next_seq, event));
                    self.next_seq += 1;
                    if self.events.len() > EVENTS_KEPT {
                        self.events.pop_front();
                    }
                }
                qmp::Event::Garbage { reason, excerpt } => {
                    log::warn!("{machine}: QMP: skipped a bad message ({reason}): {excerpt}")
                }
                qmp::Event::TooLong { limit, excerpt } => {
                    log::warn!("{machine}: QMP: skipped a message over {limit} bytes: {excerpt}")
                }
                qmp::Event::Closed { pending, .. } => {
                    log::debug!(
                        "{machine}: QMP connection closed ({} commands unanswered)",
                        pending.len()
                    );
                    self.status = Status::Closed;
                }
                other => log::debug!("{machine}: QMP: {other:?}"),
            }
        }
    }

    /// Events not consumed yet, oldest first.
    pub(crate) fn unseen(&self) -> impl Iterator<Item = &(u64, QmpEvent)> {
        let cursor = self.cursor;
        self.events.iter().filter(move |(seq, _)| *seq >= cursor)
    }

    /// Whether events arrived that no wait has looked at.
    pub(crate) fn has_unseen(&self) -> bool {
        self.next_seq > self.cursor
    }

    /// The last events received, for a timeout's message.
    pub(crate) fn last_events(&self) -> String {
        let start = self.events.len().saturating_sub(EVENTS_SHOWN);
        let shown: Vec<String> = self
            .events
            .iter()
            .skip(start)
            .map(|(_, e)| {
                format!(
                    "  {} ({:.1} s ago)",
                    e.summary(),
                    e.received.elapsed().as_secs_f64()
                )
            })
            .collect();
        if shown.is_empty() {
            "(no QMP event since QEMU started)".into()
        } else {
            format!(
                "last {} of {} QMP events since QEMU started:\n{}",
                shown.len(),
                self.next_seq,
                shown.join("\n")
            )
        }
    }
}
