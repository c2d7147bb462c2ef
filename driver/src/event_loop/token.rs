//! Event-loop tokens: which machine and which of its channels a readiness event is for.

use mio::Token;

/// The channels of one machine, as event-loop tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    Serial,
    Stderr,
    MonitorListener,
    Monitor,
    /// The backdoor on `/dev/hvc0` (index 0) or on the flow-controlled port (index 1).
    ShellListener(usize),
    Shell(usize),
    /// QMP: QEMU listens, the loop dials (see `Loop::dial_qmp`).
    Qmp,
}

impl Channel {
    const ALL: [Channel; 9] = [
        Channel::Serial,
        Channel::Stderr,
        Channel::MonitorListener,
        Channel::Monitor,
        Channel::ShellListener(0),
        Channel::Shell(0),
        Channel::ShellListener(1),
        Channel::Shell(1),
        Channel::Qmp,
    ];

    fn index(self) -> usize {
        match self {
            Channel::Serial => 0,
            Channel::Stderr => 1,
            Channel::MonitorListener => 2,
            Channel::Monitor => 3,
            Channel::ShellListener(k) => 4 + 2 * k,
            Channel::Shell(k) => 5 + 2 * k,
            Channel::Qmp => 8,
        }
    }

    pub(super) fn token(self, vm: usize) -> Token {
        Token(vm * Self::ALL.len() + self.index())
    }

    pub(super) fn from_token(t: Token) -> Option<(usize, Channel)> {
        let n = Self::ALL.len();
        Self::ALL.get(t.0 % n).map(|&c| (t.0 / n, c))
    }
}
