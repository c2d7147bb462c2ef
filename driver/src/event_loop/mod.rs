//! The loop's room: one `mio::Poll` serving every file descriptor of every machine (serial console,
//! QEMU's stderr, HMP monitor, QMP, both backdoor channels), child exits (SIGCHLD) and caught
//! signals. It owns the protocol codecs and queues what they decode, per machine
//! ([`MachineIo`]); it knows channels, not features. Blocking calls above it are "send what is
//! needed, then [`Loop::run_until`] a condition on the machines' channels holds".
//!
//! What the loop sees that others watch (console lines, QEMU exits) goes to an [`Observer`]; the
//! loop calls nothing else above it.

mod channels;
mod io;
mod observer;
mod qmp_link;
mod token;

pub(crate) use channels::{Ended, MachineIo, KILL_GRACE};
pub(crate) use observer::Observer;
pub(crate) use qmp_link::Status as QmpStatus;
pub use qmp_link::{QmpEvent, EVENTS_KEPT};

use crate::Error;
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use std::io::ErrorKind;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use token::Channel;

const SIGNALS: Token = Token(usize::MAX - 1);

/// What ends every wait early: a deadline for the whole run, or a signal the driver catches.
#[derive(Default)]
pub(crate) struct Interrupts {
    /// The deadline, and the timeout it came from (for the message).
    pub(crate) deadline: Option<(Instant, Duration)>,
    /// The number of the signal caught, 0 for none; set from the signal handler.
    pub(crate) signal: Arc<AtomicUsize>,
    /// Set with `signal`; a second SIGINT while it is set ends the process at once.
    pub(crate) armed: Arc<AtomicBool>,
}

impl Interrupts {
    /// Why the run must stop now, if it must.
    pub(crate) fn reason(&self) -> Option<String> {
        match self.signal.load(Ordering::SeqCst) {
            0 => {}
            n => return Some(format!("interrupted by {}", signal_name(n as i32))),
        }
        let (at, timeout) = self.deadline?;
        (Instant::now() >= at)
            .then(|| format!("the global timeout of {} s ran out", timeout.as_secs_f64()))
    }

    /// Forgets a caught signal, so the next wait runs (an interactive session goes on after Ctrl-C).
    pub(crate) fn clear_signal(&self) -> Option<i32> {
        self.armed.store(false, Ordering::SeqCst);
        match self.signal.swap(0, Ordering::SeqCst) {
            0 => None,
            n => Some(n as i32),
        }
    }
}

fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {n}"))
}

/// The event loop and every machine's channels.
pub(crate) struct Loop {
    poll: Poll,
    events: Events,
    signals: Signals,
    /// Each machine's channels, by its index in the driver.
    pub(crate) vms: Vec<MachineIo>,
    pub(crate) interrupts: Interrupts,
    observer: Box<dyn Observer>,
}

impl Loop {
    /// A loop with no machine; SIGCHLD wakes it when a QEMU exits, so no one polls for that.
    pub(crate) fn new(observer: Box<dyn Observer>) -> Result<Self, Error> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([signal_hook::consts::SIGCHLD])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Loop {
            poll,
            events: Events::with_capacity(64),
            signals,
            vms: Vec::new(),
            interrupts: Interrupts::default(),
            observer,
        })
    }

    /// Adds a machine's (idle) channels; returns its index.
    pub(crate) fn add(&mut self, name: &str) -> usize {
        self.vms.push(MachineIo::new(name.to_string()));
        self.vms.len() - 1
    }

    /// Serves all channels until `cond` returns `Some`, or `None` at `deadline`. Never sleeps beyond
    /// what `poll` waits for.
    pub(crate) fn run_until<R>(
        &mut self,
        deadline: Instant,
        mut cond: impl FnMut(&mut Loop) -> Option<R>,
    ) -> Result<Option<R>, Error> {
        loop {
            if let Some(r) = cond(self) {
                return Ok(Some(r));
            }
            self.check_interrupts()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wake = match self.interrupts.deadline {
                Some((run_ends, _)) => deadline.min(run_ends),
                None => deadline,
            };
            self.turn(wake.saturating_duration_since(now))?;
        }
    }

    /// Serves all channels for `d` without waiting for anything in particular.
    pub(crate) fn idle(&mut self, d: Duration) -> Result<(), Error> {
        self.run_until(Instant::now() + d, |_| None::<()>)?;
        Ok(())
    }

    /// Fails when the run must stop (a caught signal, the global timeout), naming what was going on.
    pub(crate) fn check_interrupts(&self) -> Result<(), Error> {
        match self.interrupts.reason() {
            None => Ok(()),
            Some(reason) => Err(Error::Interrupted {
                reason,
                during: self.observer.during(),
            }),
        }
    }

    /// SIGINT, SIGTERM and SIGHUP interrupt waits instead of ending the process; a second SIGINT
    /// before the first was handled ends it at once (exit 130), QEMU following by PDEATHSIG.
    pub(crate) fn catch_signals(&mut self) -> Result<(), Error> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let io = |source: std::io::Error| Error::Io {
            what: "installing signal handlers".into(),
            source,
        };
        signal_hook::flag::register_conditional_shutdown(
            SIGINT,
            130,
            self.interrupts.armed.clone(),
        )
        .map_err(io)?;
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_usize(sig, self.interrupts.signal.clone(), sig as usize)
                .map_err(io)?;
            signal_hook::flag::register(sig, self.interrupts.armed.clone()).map_err(io)?;
            self.signals.add_signal(sig).map_err(io)?;
        }
        Ok(())
    }

    /// One round of the loop: wait for readiness (at most `timeout`) and handle what is ready.
    fn turn(&mut self, timeout: Duration) -> Result<(), Error> {
        let now = Instant::now();
        let timeout = match self.vms.iter().filter_map(|vm| vm.qmp.wake_at()).min() {
            Some(at) => timeout.min(at.saturating_duration_since(now)),
            None => timeout,
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        for token in ready {
            if token == SIGNALS {
                // SIGINT and SIGTERM set `interrupts.signal` in their handlers; here they only wake us.
                for _ in self.signals.pending() {}
                self.reap();
                continue;
            }
            let Some((i, channel)) = Channel::from_token(token) else {
                continue;
            };
            if let Some(vm) = self.vms.get_mut(i) {
                vm.handle(self.poll.registry(), i, channel, &mut *self.observer)?;
            }
        }
        for i in 0..self.vms.len() {
            self.dial_qmp(i)?;
        }
        Ok(())
    }

    /// Tries to connect to machine `i`'s QMP socket when it is time to; QEMU creates the socket
    /// shortly after it starts. Connected, it writes the capabilities negotiation at once. Gives up
    /// when QEMU exits, or when the socket is still missing well after QEMU connected to the monitor.
    fn dial_qmp(&mut self, i: usize) -> Result<(), Error> {
        let vm = &mut self.vms[i];
        if !matches!(vm.qmp.status, QmpStatus::Dialing { .. }) {
            return Ok(());
        }
        if !vm.started() || vm.exit.is_some() {
            if vm.exit.is_some() {
                log::debug!(
                    "{}: QEMU exited before its QMP socket was connected",
                    vm.name
                );
            }
            vm.qmp.status = QmpStatus::Closed;
            return Ok(());
        }
        let monitor_listening = vm.monitor_listening();
        let QmpStatus::Dialing {
            path,
            next,
            delay,
            monitor_seen,
        } = &mut vm.qmp.status
        else {
            return Ok(());
        };
        let now = Instant::now();
        if now < *next {
            return Ok(());
        }
        match UnixStream::connect(&*path) {
            Ok(stream) => {
                let registry = self.poll.registry();
                vm.connect_qmp(registry, i, stream)?;
                // Writes the negotiation, and reads the greeting if it is there already.
                vm.handle(registry, i, Channel::Qmp, &mut *self.observer)
            }
            Err(e) => {
                // QEMU has connected to the monitor: it has created its sockets, or is about to.
                if monitor_seen.is_none() && !monitor_listening {
                    *monitor_seen = Some(now);
                }
                if monitor_seen.is_some_and(|at| now.duration_since(at) >= qmp_link::DIAL_GRACE) {
                    log::info!(
                        "{}: QEMU offers no QMP socket ({}: {e}); QMP calls will fail",
                        vm.name,
                        path.display()
                    );
                    vm.qmp.status = QmpStatus::Absent;
                } else {
                    *next = now + *delay;
                    *delay = (*delay * 2).min(qmp_link::DIAL_MAX_DELAY);
                }
                Ok(())
            }
        }
    }

    /// Collects exit statuses of machines whose QEMU exited.
    fn reap(&mut self) {
        for vm in &mut self.vms {
            if let Some(status) = vm.try_reap() {
                log::info!("{}: QEMU exited: {status}", vm.name);
                self.observer.exited(&vm.name, status);
            }
        }
    }

    /// Starts machine `i`'s QEMU as `plan` says, listening first on the sockets QEMU connects to.
    pub(crate) fn spawn(
        &mut self,
        i: usize,
        plan: &qemu_proc::LaunchPlan,
        paths: &qemu_proc::MachinePaths,
        resume_shell: Option<usize>,
    ) -> Result<(), Error> {
        self.vms[i].spawn(self.poll.registry(), i, plan, paths, resume_shell)
    }

    /// Drops machine `i`'s QEMU (terminating it if it still runs) and its sockets; the status
    /// when the driver ended it now.
    pub(crate) fn stop(&mut self, i: usize, grace: Duration) -> Option<ExitStatus> {
        self.vms[i].stop(self.poll.registry(), grace)
    }

    /// Writes `bytes` to machine `i`'s serial console (QEMU's stdin), as typed on it; false when
    /// the machine is not running. The console socket is non-blocking: this waits for room, serving
    /// the event loop (others' output keeps flowing), up to `deadline`.
    pub(crate) fn write_console(&mut self, i: usize, mut bytes: &[u8], deadline: Instant) -> bool {
        while !bytes.is_empty() {
            match self.vms[i].write_serial(bytes) {
                Some(Ok(0)) | None => return false,
                Some(Ok(n)) => bytes = &bytes[n..],
                Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline || self.idle(Duration::from_millis(5)).is_err() {
                        return false;
                    }
                }
                Some(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Some(Err(_)) => return false,
            }
        }
        true
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        for i in 0..self.vms.len() {
            self.stop(i, KILL_GRACE);
        }
    }
}
