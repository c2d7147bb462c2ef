//! One machine's channels as the loop serves them: its QEMU process, the sockets QEMU connects to,
//! the serial console and stderr, and the codecs and queues of each protocol.

use super::io::{drain, flush, serve_lines, Conn};
use super::observer::Observer;
use super::qmp_link::{QmpLink, Status as QmpStatus};
use super::token::Channel;
use crate::console::Console;
use crate::Error;
use guest_shell::Session;
use mio::net::{UnixListener, UnixStream};
use mio::unix::pipe::Receiver;
use mio::{Interest, Registry};
use qemu_monitor::Monitor;
use qemu_proc::{Child, LaunchPlan, MachinePaths};
use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Console lines kept per machine for errors, `get_console_log` and console waits.
const CONSOLE_LINES: usize = 10_000;
/// QEMU's stderr lines kept per machine for start-up errors.
const STDERR_LINES: usize = 200;
/// How long QEMU gets to exit on SIGTERM before SIGKILL when the driver goes away.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);
/// What Linux prints on the console when it panics.
const KERNEL_PANIC: &str = "Kernel panic - not syncing";
/// Bytes of stray output (late output of background jobs) logged per piece.
const STRAY_LOGGED: usize = 500;
/// Backdoor channel indices: NixOS guests use the console, ours the flow-controlled port.
const BACKDOORS: [&str; 2] = ["hvc0", "port"];

/// The file descriptors of a started machine.
struct Fds {
    child: Child,
    serial: Option<UnixStream>,
    stderr: Option<Receiver>,
    monitor_listener: Option<UnixListener>,
    monitor: Option<Conn>,
    shell_listeners: [Option<UnixListener>; 2],
    shells: [Option<Conn>; 2],
    /// The QMP connection, once dialed.
    qmp: Option<Conn>,
}

/// How a command on the backdoor shell ended, as its events tell ([`MachineIo::take_command_events`]).
pub(crate) enum Ended {
    Exited(i32),
    /// The channel closed (the guest powered off, QEMU exited).
    Closed,
    /// The protocol desynchronised.
    Lost(String),
    /// The guest kernel panicked.
    Panicked,
    /// The output callback asked to stop.
    Refused,
}

/// Everything the loop keeps of one machine: its process, sockets, codecs and what they decoded.
pub(crate) struct MachineIo {
    pub(crate) name: String,
    pub(crate) console: Console,
    pub(crate) stderr: Console,
    /// One session per backdoor channel until one prints the banner; that one is `active`.
    sessions: [Session; 2],
    pub(crate) active: Option<usize>,
    pub(crate) shell_events: VecDeque<guest_shell::Event>,
    /// A command was abandoned and may still run in the guest: the shell answers only after it.
    pub(crate) shell_held: bool,
    /// The shell did not answer the interrupt sent after a timed-out command: later commands fail at
    /// once with this reason rather than each waiting out its timeout. Cleared by a new banner.
    pub(crate) shell_wedged: Option<String>,
    /// The console line where the guest kernel panicked, until the machine starts or reboots again.
    pub(crate) panicked: Option<String>,
    /// Restored from a snapshot: the shell on this channel is up, without a banner.
    resume_shell: Option<usize>,
    /// Restored from a snapshot, and the shell connected; taken by whoever sets the guest clock.
    pub(crate) resumed: bool,
    pub(crate) monitor: Monitor,
    pub(crate) monitor_events: VecDeque<qemu_monitor::Event>,
    /// QMP codec, replies and events; they outlive QEMU until its next start.
    pub(crate) qmp: QmpLink,
    fds: Option<Fds>,
    pub(crate) exit: Option<ExitStatus>,
    pub(crate) started_at: Option<Instant>,
}

fn new_session() -> Session {
    Session::with_nonces(|| {
        let mut b = [0u8; 16];
        // The OS random source does not fail on Linux once booted; a zero nonce would still be a
        // working (if guessable) marker.
        let _ = getrandom::getrandom(&mut b);
        u128::from_le_bytes(b)
    })
}

impl MachineIo {
    pub(super) fn new(name: String) -> Self {
        MachineIo {
            name,
            console: Console::new(CONSOLE_LINES),
            stderr: Console::new(STDERR_LINES),
            sessions: [new_session(), new_session()],
            active: None,
            shell_events: VecDeque::new(),
            shell_held: false,
            shell_wedged: None,
            panicked: None,
            resume_shell: None,
            resumed: false,
            monitor: Monitor::new(),
            monitor_events: VecDeque::new(),
            qmp: QmpLink::idle(),
            fds: None,
            exit: None,
            started_at: None,
        }
    }

    /// The backdoor session in use (before the banner: the console's, which refuses commands).
    pub(crate) fn shell(&mut self) -> &mut Session {
        &mut self.sessions[self.active.unwrap_or(0)]
    }

    /// Whether a backdoor shell printed its banner and is usable.
    pub(crate) fn shell_connected(&self) -> bool {
        self.active.is_some_and(|k| self.sessions[k].is_connected())
    }

    /// Forgets the backdoor shell: the next command waits for a new banner (the guest reboots).
    pub(crate) fn reset_shell(&mut self) {
        for session in &mut self.sessions {
            session.reset();
        }
        self.active = None;
        self.shell_events.clear();
        self.shell_held = false;
        self.shell_wedged = None;
        self.panicked = None;
    }

    /// Gives up on the command in flight; the guest still runs it, so later commands wait.
    pub(crate) fn abandon_command(&mut self) {
        self.shell().abandon();
        self.shell_held = true;
    }

    /// QEMU was started (and not stopped by the driver since), whether or not it exited.
    pub(crate) fn started(&self) -> bool {
        self.fds.is_some()
    }

    /// QEMU was started and has not exited.
    pub(crate) fn is_running(&self) -> bool {
        self.fds.is_some() && self.exit.is_none()
    }

    /// Whether QEMU has connected to the monitor (and not closed it).
    pub(crate) fn monitor_connected(&self) -> bool {
        self.fds.as_ref().is_some_and(|f| f.monitor.is_some())
    }

    /// Whether the monitor socket still waits for QEMU to connect.
    pub(super) fn monitor_listening(&self) -> bool {
        self.fds
            .as_ref()
            .is_some_and(|f| f.monitor_listener.is_some())
    }

    /// Whether the console, QEMU's stderr and the QMP connection reached end of file.
    pub(crate) fn io_drained(&self) -> bool {
        self.fds
            .as_ref()
            .is_none_or(|f| f.serial.is_none() && f.stderr.is_none() && f.qmp.is_none())
    }

    /// Whether the QMP socket is connected (and not closed).
    pub(crate) fn qmp_connected(&self) -> bool {
        self.fds.as_ref().is_some_and(|f| f.qmp.is_some())
    }

    /// Queues bytes for the backdoor shell in use and writes what the socket takes now.
    pub(crate) fn write_shell(&mut self, bytes: &[u8]) -> bool {
        let Some(k) = self.active else {
            return false;
        };
        Conn::send(self.fds.as_mut().and_then(|f| f.shells[k].as_mut()), bytes)
    }

    /// Queues bytes for the monitor and writes what the socket takes now.
    pub(crate) fn write_monitor(&mut self, bytes: &[u8]) -> bool {
        Conn::send(self.fds.as_mut().and_then(|f| f.monitor.as_mut()), bytes)
    }

    /// Queues bytes for the QMP socket and writes what the socket takes now.
    pub(crate) fn write_qmp(&mut self, bytes: &[u8]) -> bool {
        Conn::send(self.fds.as_mut().and_then(|f| f.qmp.as_mut()), bytes)
    }

    /// One non-blocking write to the serial console; `None` when it is closed.
    pub(super) fn write_serial(&mut self, bytes: &[u8]) -> Option<std::io::Result<usize>> {
        let serial = self.fds.as_mut()?.serial.as_mut()?;
        Some(serial.write(bytes))
    }

    /// Takes the backdoor shell's events for the command in flight, passing its output to `output`
    /// (which returns false to stop taking: the caller has had enough); Some once the command
    /// ended. Every way of running a command reads its events through here.
    pub(crate) fn take_command_events(
        &mut self,
        mut output: impl FnMut(&[u8]) -> bool,
    ) -> Option<Ended> {
        if self.panicked.is_some() {
            return Some(Ended::Panicked);
        }
        while let Some(e) = self.shell_events.pop_front() {
            match e {
                guest_shell::Event::Output(b) if !output(&b) => return Some(Ended::Refused),
                guest_shell::Event::Exited { status } => {
                    self.shell_held = false;
                    return Some(Ended::Exited(status));
                }
                guest_shell::Event::Closed { .. } => return Some(Ended::Closed),
                guest_shell::Event::Lost { reason } => return Some(Ended::Lost(reason)),
                _ => {}
            }
        }
        None
    }

    /// What to show when something about this machine fails: how QEMU ended, its stderr, the console.
    pub(crate) fn context(&self, console_lines: usize) -> String {
        let mut s = String::new();
        if let Some(status) = self.exit {
            s.push_str(&format!("QEMU exited: {status}\n"));
        }
        let stderr = self.stderr.tail(20);
        if !stderr.is_empty() {
            s.push_str("QEMU stderr:\n");
            for l in stderr {
                s.push_str(&format!("  {l}\n"));
            }
        }
        let console = self.console.tail(console_lines);
        if console.is_empty() {
            s.push_str("(nothing on the serial console)\n");
        } else {
            s.push_str(&format!("last {} console lines:\n", console.len()));
            for l in console {
                s.push_str(&format!("  {}# {l}\n", self.name));
            }
        }
        s
    }

    /// Starts QEMU: listeners for the monitor and shells first (QEMU connects to them), a
    /// socketpair as its serial console, a pipe for its stderr.
    pub(super) fn spawn(
        &mut self,
        reg: &Registry,
        i: usize,
        plan: &LaunchPlan,
        paths: &MachinePaths,
        resume_shell: Option<usize>,
    ) -> Result<(), Error> {
        let name = &self.name;
        let io_err = |what: &str, e: std::io::Error| Error::Io {
            what: format!("machine {name}: {what}"),
            source: e,
        };
        // A socket left by an earlier QEMU (QMP's too: it would refuse, or be a stale server).
        for p in [&paths.monitor, &paths.shell, &paths.shell_port, &paths.qmp] {
            let _ = std::fs::remove_file(p);
        }
        let mut monitor_listener =
            UnixListener::bind(&paths.monitor).map_err(|e| io_err("monitor socket", e))?;
        let mut shell_listeners = [
            UnixListener::bind(&paths.shell).map_err(|e| io_err("shell socket", e))?,
            UnixListener::bind(&paths.shell_port).map_err(|e| io_err("shell port socket", e))?,
        ];
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| io_err("socketpair", e))?;
        let (stderr_r, stderr_w) = std::io::pipe().map_err(|e| io_err("pipe", e))?;
        let theirs_in = theirs.try_clone().map_err(|e| io_err("socketpair", e))?;
        log::info!("{name}: starting ({})", plan.program.display());
        log::debug!("{name}: {plan:?}");
        let child = Child::spawn(
            plan,
            OwnedFd::from(theirs_in),
            OwnedFd::from(theirs),
            OwnedFd::from(stderr_w),
        )
        .map_err(|source| Error::Start {
            machine: name.clone(),
            source,
        })?;
        ours.set_nonblocking(true)
            .map_err(|e| io_err("socketpair", e))?;
        let mut serial = UnixStream::from_std(ours);
        let mut stderr = Receiver::from(OwnedFd::from(stderr_r));
        stderr
            .set_nonblocking(true)
            .map_err(|e| io_err("pipe", e))?;
        let r = Interest::READABLE;
        reg.register(&mut serial, Channel::Serial.token(i), r)?;
        reg.register(&mut stderr, Channel::Stderr.token(i), r)?;
        reg.register(&mut monitor_listener, Channel::MonitorListener.token(i), r)?;
        for (k, l) in shell_listeners.iter_mut().enumerate() {
            reg.register(l, Channel::ShellListener(k).token(i), r)?;
        }
        let [console_listener, port_listener] = shell_listeners;
        self.fds = Some(Fds {
            child,
            serial: Some(serial),
            stderr: Some(stderr),
            monitor_listener: Some(monitor_listener),
            monitor: None,
            shell_listeners: [Some(console_listener), Some(port_listener)],
            shells: [None, None],
            qmp: None,
        });
        self.exit = None;
        self.console.start_boot();
        self.reset_shell();
        self.monitor = Monitor::new();
        self.monitor_events.clear();
        self.qmp = QmpLink::dialing(paths.qmp.clone(), Instant::now());
        self.started_at = Some(Instant::now());
        self.resume_shell = resume_shell;
        self.resumed = false;
        Ok(())
    }

    /// Drops QEMU (terminating it if it still runs) and the sockets; the status when this ended it.
    pub(super) fn stop(&mut self, reg: &Registry, grace: Duration) -> Option<ExitStatus> {
        let mut fds = self.fds.take()?;
        if let Some(mut s) = fds.serial.take() {
            let _ = reg.deregister(&mut s);
        }
        if let Some(mut s) = fds.stderr.take() {
            let _ = reg.deregister(&mut s);
        }
        if let Some(mut s) = fds.monitor_listener.take() {
            let _ = reg.deregister(&mut s);
        }
        for l in &mut fds.shell_listeners {
            if let Some(mut s) = l.take() {
                let _ = reg.deregister(&mut s);
            }
        }
        if let Some(mut c) = fds.monitor.take() {
            let _ = reg.deregister(&mut c.stream);
        }
        for c in &mut fds.shells {
            if let Some(mut c) = c.take() {
                let _ = reg.deregister(&mut c.stream);
            }
        }
        if let Some(mut c) = fds.qmp.take() {
            // Events QEMU wrote last (a SHUTDOWN before it exited) stay queued for a wait.
            let codec = &mut self.qmp.codec;
            if drain(&mut c.stream, |bytes| codec.feed(bytes)) {
                codec.handle_eof();
            }
            self.qmp.absorb(&self.name);
            let _ = reg.deregister(&mut c.stream);
        }
        if !matches!(self.qmp.status, QmpStatus::Absent) {
            self.qmp.status = QmpStatus::Closed;
        }
        if self.exit.is_some() {
            return None;
        }
        match fds.child.terminate(grace) {
            Ok(status) => {
                self.exit = Some(status);
                Some(status)
            }
            Err(e) => {
                log::warn!("{}: stopping QEMU: {e}", self.name);
                None
            }
        }
    }

    /// QEMU's exit status if it exited since the last look.
    pub(super) fn try_reap(&mut self) -> Option<ExitStatus> {
        let fds = self.fds.as_mut()?;
        if self.exit.is_some() {
            return None;
        }
        match fds.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                Some(status)
            }
            Ok(None) => None,
            Err(e) => {
                log::warn!("{}: waiting for QEMU: {e}", self.name);
                None
            }
        }
    }

    /// Registers the QMP connection just dialed, with the capabilities negotiation as its first bytes.
    pub(super) fn connect_qmp(
        &mut self,
        reg: &Registry,
        i: usize,
        mut stream: UnixStream,
    ) -> Result<(), Error> {
        reg.register(
            &mut stream,
            Channel::Qmp.token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let out = self
            .qmp
            .codec
            .capabilities()
            .expect("a fresh codec negotiates once");
        log::debug!("{}: connected to QMP", self.name);
        if let Some(fds) = self.fds.as_mut() {
            fds.qmp = Some(Conn::new(stream, out));
        }
        self.qmp.status = QmpStatus::Connected;
        Ok(())
    }

    /// Serves what is ready on `channel`.
    pub(super) fn handle(
        &mut self,
        registry: &Registry,
        i: usize,
        channel: Channel,
        observer: &mut dyn Observer,
    ) -> Result<(), Error> {
        let Some(fds) = self.fds.as_mut() else {
            return Ok(());
        };
        match channel {
            Channel::Serial => {
                let name = &self.name;
                let panicked = &mut self.panicked;
                serve_lines(registry, &mut fds.serial, &mut self.console, |line| {
                    observer.console_line(name, line);
                    // A panicked guest may hang rather than exit: commands must not wait for it.
                    if let (None, Some(at)) = (&panicked, line.find(KERNEL_PANIC)) {
                        let what = line[at..].trim().to_string();
                        log::error!("{name}: the guest kernel panicked: {what}");
                        *panicked = Some(what);
                    }
                });
            }
            Channel::Stderr => {
                let name = &self.name;
                serve_lines(registry, &mut fds.stderr, &mut self.stderr, |line| {
                    log::warn!("{name}: qemu: {line}");
                });
            }
            Channel::MonitorListener | Channel::ShellListener(_) => {
                let (listener, slot, conn_channel) = match channel {
                    Channel::ShellListener(k) => (
                        &mut fds.shell_listeners[k],
                        &mut fds.shells[k],
                        Channel::Shell(k),
                    ),
                    _ => (
                        &mut fds.monitor_listener,
                        &mut fds.monitor,
                        Channel::Monitor,
                    ),
                };
                let Some(l) = listener.as_mut() else {
                    return Ok(());
                };
                match l.accept() {
                    Ok((mut stream, _)) => {
                        registry.register(
                            &mut stream,
                            conn_channel.token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        *slot = Some(Conn::new(stream, Vec::new()));
                        if let Channel::ShellListener(k) = channel {
                            if self.resume_shell == Some(k) {
                                self.resume_shell = None;
                                self.sessions[k].resume();
                                self.active = Some(k);
                                self.resumed = true;
                            }
                        }
                        // QEMU connects once; a second connection would be someone else.
                        if let Some(mut l) = listener.take() {
                            let _ = registry.deregister(&mut l);
                        }
                        // The connection may already hold data that arrived before registration.
                        return self.handle(registry, i, conn_channel, observer);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => log::warn!("{}: accept: {e}", self.name),
                }
            }
            Channel::Monitor => {
                let Some(conn) = fds.monitor.as_mut() else {
                    return Ok(());
                };
                flush(conn);
                let monitor = &mut self.monitor;
                let eof = drain(&mut conn.stream, |bytes| monitor.feed(bytes));
                if eof {
                    monitor.handle_eof();
                    if let Some(mut c) = fds.monitor.take() {
                        let _ = registry.deregister(&mut c.stream);
                    }
                }
                while let Some(e) = self.monitor.poll_event() {
                    self.monitor_events.push_back(e);
                }
            }
            Channel::Qmp => {
                let Some(conn) = fds.qmp.as_mut() else {
                    return Ok(());
                };
                flush(conn);
                let codec = &mut self.qmp.codec;
                // A reset connection (ECONNRESET: QEMU quit with requests unread) is an end of file.
                let eof = drain(&mut conn.stream, |bytes| codec.feed(bytes));
                if eof {
                    codec.handle_eof();
                    if let Some(mut c) = fds.qmp.take() {
                        let _ = registry.deregister(&mut c.stream);
                    }
                }
                self.qmp.absorb(&self.name);
            }
            Channel::Shell(k) => {
                let Some(conn) = fds.shells[k].as_mut() else {
                    return Ok(());
                };
                flush(conn);
                let shell = &mut self.sessions[k];
                let eof = drain(&mut conn.stream, |bytes| shell.feed(bytes));
                if eof {
                    shell.handle_eof();
                    if let Some(mut c) = fds.shells[k].take() {
                        let _ = registry.deregister(&mut c.stream);
                    }
                }
                self.take_shell_events(k);
            }
        }
        Ok(())
    }

    /// Queues what backdoor channel `k` decoded, once it is the one in use; logs stray output.
    fn take_shell_events(&mut self, k: usize) {
        while let Some(e) = self.sessions[k].poll_event() {
            if self.active.is_none() && e == guest_shell::Event::Banner {
                log::debug!("{}: backdoor shell on {}", self.name, BACKDOORS[k]);
                self.active = Some(k);
            }
            if self.active != Some(k) {
                // The other channel: a guest uses one; whatever the unused one says is noise.
                continue;
            }
            match e {
                guest_shell::Event::Stray(b) => {
                    // What an interrupted `yes` left in the channel can be megabytes.
                    let text = String::from_utf8_lossy(&b[..b.len().min(STRAY_LOGGED)]);
                    if !text.trim().is_empty() {
                        let more = b.len().saturating_sub(STRAY_LOGGED);
                        let more = if more > 0 {
                            format!(" … ({more} more bytes)")
                        } else {
                            String::new()
                        };
                        log::info!(
                            "{}: output outside any command: {}{more}",
                            self.name,
                            text.trim_end()
                        );
                    }
                }
                e => self.shell_events.push_back(e),
            }
        }
    }
}
