//! The one event loop: every file descriptor of every machine, and child exits, served by one
//! `mio::Poll`. Blocking API calls are "send what is needed, then `run_until`".

use crate::activity::Activity;
use crate::console::Console;
use crate::qmp::{QmpLink, Status as QmpStatus};
use crate::record::MachineEvent;
use crate::vlan::{self, Link, Switch};
use crate::Error;
use guest_shell::Session;
use mio::net::{UnixListener, UnixStream};
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};
use qemu_monitor::Monitor;
use qemu_proc::{AccelChoice, Child, LaunchOptions, MachinePaths, StartCommand, StateRoot};
use signal_hook_mio::v1_0::Signals;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Console lines kept per machine for errors, `get_console_log` and console waits.
const CONSOLE_LINES: usize = 10_000;
/// QEMU's stderr lines kept per machine for start-up errors.
const STDERR_LINES: usize = 200;
/// How long QEMU gets to exit on SIGTERM before SIGKILL when the driver goes away.
const KILL_GRACE: Duration = Duration::from_secs(3);

const SIGNALS: Token = Token(usize::MAX - 1);

/// The channels of one machine, as event-loop tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Serial,
    Stderr,
    MonitorListener,
    Monitor,
    /// The backdoor on `/dev/hvc0` (index 0) or on the flow-controlled port (index 1).
    ShellListener(usize),
    Shell(usize),
    /// QMP: QEMU listens, the loop dials (see `dial_qmp`).
    Qmp,
}

/// Backdoor channel indices: NixOS guests use the console, ours the flow-controlled port.
const BACKDOORS: [&str; 2] = ["hvc0", "port"];

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

    fn token(self, vm: usize) -> Token {
        Token(vm * Self::ALL.len() + self.index())
    }

    fn from_token(t: Token) -> Option<(usize, Channel)> {
        let n = Self::ALL.len();
        Self::ALL.get(t.0 % n).map(|&c| (t.0 / n, c))
    }
}

/// A connected socket with its pending output.
pub(crate) struct Conn {
    stream: UnixStream,
    out: Vec<u8>,
}

/// What the loop owns of a started machine.
pub(crate) struct VmIo {
    pub(crate) child: Child,
    serial: Option<UnixStream>,
    stderr: Option<Receiver>,
    monitor_listener: Option<UnixListener>,
    monitor: Option<Conn>,
    shell_listeners: [Option<UnixListener>; 2],
    shells: [Option<Conn>; 2],
    /// The QMP connection, once dialed.
    qmp: Option<Conn>,
}

/// Everything known about one machine.
/// How a command on the backdoor shell ended, as its events tell ([`Core::take_command_events`]).
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

/// What Linux prints on the console when it panics.
const KERNEL_PANIC: &str = "Kernel panic - not syncing";
/// How long the shell may take to stop a timed-out command (before the timeout factor).
const INTERRUPT_LIMIT: Duration = Duration::from_secs(5);
/// Bytes of stray output (late output of background jobs) logged per piece.
const STRAY_LOGGED: usize = 500;

pub(crate) struct Vm {
    pub(crate) name: String,
    pub(crate) start: StartCommand,
    pub(crate) allow_reboot: bool,
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
    /// Restored from the snapshot cache: the shell on this channel is up, without a banner.
    pub(crate) resume_shell: Option<usize>,
    /// Restored from the snapshot cache; the guest clock wants setting once the shell answers.
    pub(crate) resumed: bool,
    /// Booting for the snapshot cache: save into this entry once the shell answers.
    pub(crate) cache_save: Option<std::path::PathBuf>,
    pub(crate) monitor: Monitor,
    pub(crate) monitor_events: VecDeque<qemu_monitor::Event>,
    /// QMP codec, replies and events; they outlive QEMU until its next start.
    pub(crate) qmp: QmpLink,
    pub(crate) io: Option<VmIo>,
    pub(crate) exit: Option<ExitStatus>,
    pub(crate) started_at: Option<Instant>,
    /// Console lines before this number were consumed by `wait_for_console_text`.
    pub(crate) console_cursor: u64,
    /// 1-based position among the driver's machines; the last byte of its VLAN MACs and addresses.
    pub(crate) number: usize,
    /// VLANs this machine is attached to.
    pub(crate) vlans: Vec<u32>,
    /// Guest directories holding coverage data, copied out at a clean shutdown.
    pub(crate) coverage_dirs: Vec<String>,
}

impl Vm {
    pub(crate) fn new(name: String, start: StartCommand, number: usize) -> Self {
        Vm {
            name,
            start,
            allow_reboot: false,
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
            cache_save: None,
            monitor: Monitor::new(),
            monitor_events: VecDeque::new(),
            qmp: QmpLink::idle(),
            io: None,
            exit: None,
            started_at: None,
            console_cursor: 0,
            number,
            vlans: Vec::new(),
            coverage_dirs: Vec::new(),
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

    /// QEMU was started and has not exited.
    pub(crate) fn is_running(&self) -> bool {
        self.io.is_some() && self.exit.is_none()
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

/// The event loop and all machines.
pub(crate) struct Core {
    poll: Poll,
    events: Events,
    signals: Signals,
    pub(crate) vms: Vec<Vm>,
    /// Switches, stopped after the machines (see `Drop`).
    /// Machines' links to switches; declared before `switches`, so they are stopped first.
    pub(crate) links: Vec<Link>,
    pub(crate) switches: Vec<Switch>,
    pub(crate) root: StateRoot,
    pub(crate) accel: AccelChoice,
    pub(crate) activity: Activity,
    pub(crate) interrupts: Interrupts,
    /// Every timeout a caller gives is multiplied by this (slow TCG guests).
    pub(crate) timeout_factor: f64,
    /// Most output one command may return.
    pub(crate) max_output: usize,
    /// Whether guests' console lines go to the log (NixOS's serial_stdout_on/off); they are
    /// recorded for the report and `get_console_log` either way.
    pub(crate) serial_stdout: bool,
    /// Polling conditions in force (`Driver::with_polling_condition`).
    pub(crate) conditions: crate::polling::Conditions,
    /// Where screenshots taken for failure reports go.
    pub(crate) output_dir: Option<std::path::PathBuf>,
    /// Where machines are kept booted and ready across runs.
    pub(crate) snapshot_cache: Option<std::path::PathBuf>,
    /// Calls under way that attach failure context; only the outermost one gathers it.
    pub(crate) explaining: usize,
    /// Screenshots taken for failures so far, to number their files.
    pub(crate) failure_screenshots: usize,
}

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

impl Core {
    pub(crate) fn new(root: StateRoot, accel: AccelChoice) -> Result<Self, Error> {
        let poll = Poll::new()?;
        // SIGCHLD wakes the loop when a QEMU exits, so no one polls for it.
        let mut signals = Signals::new([signal_hook::consts::SIGCHLD])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Core {
            poll,
            events: Events::with_capacity(64),
            signals,
            vms: Vec::new(),
            links: Vec::new(),
            switches: Vec::new(),
            root,
            accel,
            activity: Activity::default(),
            interrupts: Interrupts::default(),
            timeout_factor: 1.0,
            max_output: crate::MAX_OUTPUT,
            serial_stdout: true,
            conditions: Default::default(),
            output_dir: None,
            snapshot_cache: None,
            explaining: 0,
            failure_screenshots: 0,
        })
    }

    /// Starts QEMU for machine `i`: listeners for the monitor and shell first (QEMU connects to them),
    /// a socketpair as its serial console, a pipe for its stderr.
    pub(crate) fn start(&mut self, i: usize) -> Result<(), Error> {
        if self.vms[i].is_running() {
            return Ok(());
        }
        self.stop_io(i);
        let name = self.vms[i].name.clone();
        let proc_err = |source| Error::Start {
            machine: name.clone(),
            source,
        };
        let dir = self.root.machine_dir(&name).map_err(proc_err)?;
        let shared = self.root.shared_dir().map_err(proc_err)?;
        let mut cache_plan = None;
        let mut extra_qemu_opts = Vec::new();
        if let Some(cache) = &self.snapshot_cache {
            let vm = &self.vms[i];
            let entry = crate::cache::entry(
                cache,
                &name,
                &vm.start,
                &vm.vlans,
                vm.number,
                vm.allow_reboot,
                &self.accel,
            );
            let (plan, opts) = crate::cache::prepare(&name, &entry, &dir)?;
            cache_plan = Some(plan);
            extra_qemu_opts.extend(opts);
        }
        let paths = MachinePaths::new(dir, shared);
        // A deep $TMPDIR makes socket paths too long for bind(); say so rather than "name too long".
        paths.check_socket_paths().map_err(proc_err)?;
        for &n in &self.vms[i].vlans {
            let link = self
                .link(n, i)
                .expect("attach_vlans starts the links it names");
            extra_qemu_opts.extend(vlan::qemu_opts(n, self.vms[i].number, &link.socket_dir));
        }
        let mut plan = qemu_proc::launch_plan(
            &name,
            &self.vms[i].start,
            &paths,
            &LaunchOptions {
                accel: self.accel.accel,
                allow_reboot: self.vms[i].allow_reboot,
                extra_qemu_opts,
            },
        );
        // NixOS-built start scripts attach themselves to the switches named by these.
        for s in &self.switches {
            let dir = match self.link(s.number, i) {
                Some(link) => &link.socket_dir,
                None => &s.socket_dir,
            };
            plan.env.push((
                format!("QEMU_VDE_SOCKET_{}", s.number).into(),
                dir.clone().into_os_string(),
            ));
        }
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
            &plan,
            OwnedFd::from(theirs_in),
            OwnedFd::from(theirs),
            OwnedFd::from(stderr_w),
        )
        .map_err(proc_err)?;
        ours.set_nonblocking(true)
            .map_err(|e| io_err("socketpair", e))?;
        let mut serial = UnixStream::from_std(ours);
        let mut stderr = Receiver::from(OwnedFd::from(stderr_r));
        stderr
            .set_nonblocking(true)
            .map_err(|e| io_err("pipe", e))?;
        let reg = self.poll.registry();
        let r = Interest::READABLE;
        reg.register(&mut serial, Channel::Serial.token(i), r)?;
        reg.register(&mut stderr, Channel::Stderr.token(i), r)?;
        reg.register(&mut monitor_listener, Channel::MonitorListener.token(i), r)?;
        for (k, l) in shell_listeners.iter_mut().enumerate() {
            reg.register(l, Channel::ShellListener(k).token(i), r)?;
        }
        let [console_listener, port_listener] = shell_listeners;
        let vm = &mut self.vms[i];
        vm.io = Some(VmIo {
            child,
            serial: Some(serial),
            stderr: Some(stderr),
            monitor_listener: Some(monitor_listener),
            monitor: None,
            shell_listeners: [Some(console_listener), Some(port_listener)],
            shells: [None, None],
            qmp: None,
        });
        vm.exit = None;
        vm.reset_shell();
        vm.monitor = Monitor::new();
        vm.monitor_events.clear();
        vm.qmp = QmpLink::dialing(paths.qmp.clone(), Instant::now());
        vm.started_at = Some(Instant::now());
        match cache_plan {
            Some(crate::cache::Plan::Resume { shell }) => vm.resume_shell = Some(shell),
            Some(crate::cache::Plan::Save(entry)) => vm.cache_save = Some(entry),
            None => {}
        }
        let recorder = self.activity.recorder();
        let event = MachineEvent::Started { t: recorder.now() };
        recorder.event(&vm.name, event);
        Ok(())
    }

    /// Drops machine `i`'s QEMU (terminating it if it still runs) and its sockets.
    pub(crate) fn stop_io(&mut self, i: usize) {
        let Some(mut io) = self.vms[i].io.take() else {
            return;
        };
        let reg = self.poll.registry();
        if let Some(mut s) = io.serial.take() {
            let _ = reg.deregister(&mut s);
        }
        if let Some(mut s) = io.stderr.take() {
            let _ = reg.deregister(&mut s);
        }
        if let Some(mut s) = io.monitor_listener.take() {
            let _ = reg.deregister(&mut s);
        }
        for l in &mut io.shell_listeners {
            if let Some(mut s) = l.take() {
                let _ = reg.deregister(&mut s);
            }
        }
        if let Some(mut c) = io.monitor.take() {
            let _ = reg.deregister(&mut c.stream);
        }
        for c in &mut io.shells {
            if let Some(mut c) = c.take() {
                let _ = reg.deregister(&mut c.stream);
            }
        }
        let vm = &mut self.vms[i];
        if let Some(mut c) = io.qmp.take() {
            // Events QEMU wrote last (a SHUTDOWN before it exited) stay queued for a wait.
            let codec = &mut vm.qmp.codec;
            if drain(&mut c.stream, |bytes| codec.feed(bytes)) {
                codec.handle_eof();
            }
            vm.qmp.absorb(&vm.name);
            let _ = reg.deregister(&mut c.stream);
        }
        if !matches!(vm.qmp.status, QmpStatus::Absent) {
            vm.qmp.status = QmpStatus::Closed;
        }
        if self.vms[i].exit.is_none() {
            match io.child.terminate(KILL_GRACE) {
                Ok(status) => {
                    let recorder = self.activity.recorder();
                    let t = recorder.now();
                    let status_text = format!("{status} (stopped by the driver)");
                    let event = MachineEvent::Exited {
                        t,
                        status: status_text,
                    };
                    recorder.event(&self.vms[i].name, event);
                    self.vms[i].exit = Some(status);
                }
                Err(e) => log::warn!("{}: stopping QEMU: {e}", self.vms[i].name),
            }
        }
    }

    /// Serves all channels until `cond` returns `Some`, or `None` at `deadline`. Never sleeps beyond
    /// what `poll` waits for.
    pub(crate) fn run_until<R>(
        &mut self,
        deadline: Instant,
        mut cond: impl FnMut(&mut Core) -> Option<R>,
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
                during: self.activity.describe(),
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
            if i < self.vms.len() {
                self.handle(i, channel)?;
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
        let QmpStatus::Dialing {
            path,
            next,
            delay,
            monitor_seen,
        } = &mut vm.qmp.status
        else {
            return Ok(());
        };
        let Some(io) = vm.io.as_mut() else {
            vm.qmp.status = QmpStatus::Closed;
            return Ok(());
        };
        if vm.exit.is_some() {
            log::debug!(
                "{}: QEMU exited before its QMP socket was connected",
                vm.name
            );
            vm.qmp.status = QmpStatus::Closed;
            return Ok(());
        }
        let now = Instant::now();
        if now < *next {
            return Ok(());
        }
        match UnixStream::connect(&*path) {
            Ok(mut stream) => {
                self.poll.registry().register(
                    &mut stream,
                    Channel::Qmp.token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                let out = vm
                    .qmp
                    .codec
                    .capabilities()
                    .expect("a fresh codec negotiates once");
                log::debug!("{}: connected to QMP", vm.name);
                io.qmp = Some(Conn { stream, out });
                vm.qmp.status = QmpStatus::Connected;
                // Writes the negotiation, and reads the greeting if it is there already.
                self.handle(i, Channel::Qmp)
            }
            Err(e) => {
                // QEMU has connected to the monitor: it has created its sockets, or is about to.
                if monitor_seen.is_none() && io.monitor_listener.is_none() {
                    *monitor_seen = Some(now);
                }
                if monitor_seen.is_some_and(|at| now.duration_since(at) >= crate::qmp::DIAL_GRACE) {
                    log::info!(
                        "{}: QEMU offers no QMP socket ({}: {e}); QMP calls will fail",
                        vm.name,
                        path.display()
                    );
                    vm.qmp.status = QmpStatus::Absent;
                } else {
                    *next = now + *delay;
                    *delay = (*delay * 2).min(crate::qmp::DIAL_MAX_DELAY);
                }
                Ok(())
            }
        }
    }

    /// Collects exit statuses of machines whose QEMU exited.
    fn reap(&mut self) {
        for vm in &mut self.vms {
            let Some(io) = vm.io.as_mut() else { continue };
            if vm.exit.is_some() {
                continue;
            }
            match io.child.try_wait() {
                Ok(Some(status)) => {
                    log::info!("{}: QEMU exited: {status}", vm.name);
                    self.activity.recorder().event(
                        &vm.name,
                        MachineEvent::Exited {
                            t: self.activity.recorder().now(),
                            status: status.to_string(),
                        },
                    );
                    vm.exit = Some(status);
                }
                Ok(None) => {}
                Err(e) => log::warn!("{}: waiting for QEMU: {e}", vm.name),
            }
        }
    }

    fn handle(&mut self, i: usize, channel: Channel) -> Result<(), Error> {
        let registry = self.poll.registry();
        let vm = &mut self.vms[i];
        let Some(io) = vm.io.as_mut() else {
            return Ok(());
        };
        match channel {
            Channel::Serial => {
                let name = &vm.name;
                let recorder = self.activity.recorder();
                let panicked = &mut vm.panicked;
                let shown = self.serial_stdout;
                serve_lines(registry, &mut io.serial, &mut vm.console, |line| {
                    if shown {
                        log::info!(target: "console", "{name}# {line}");
                    }
                    recorder.console_line(name, line);
                    // A panicked guest may hang rather than exit: commands must not wait for it.
                    if let (None, Some(at)) = (&panicked, line.find(KERNEL_PANIC)) {
                        let what = line[at..].trim().to_string();
                        log::error!("{name}: the guest kernel panicked: {what}");
                        *panicked = Some(what);
                    }
                });
            }
            Channel::Stderr => {
                let name = &vm.name;
                serve_lines(registry, &mut io.stderr, &mut vm.stderr, |line| {
                    log::warn!("{name}: qemu: {line}");
                });
            }
            Channel::MonitorListener | Channel::ShellListener(_) => {
                let (listener, slot, conn_channel) = match channel {
                    Channel::ShellListener(k) => (
                        &mut io.shell_listeners[k],
                        &mut io.shells[k],
                        Channel::Shell(k),
                    ),
                    _ => (&mut io.monitor_listener, &mut io.monitor, Channel::Monitor),
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
                        *slot = Some(Conn {
                            stream,
                            out: Vec::new(),
                        });
                        if let Channel::ShellListener(k) = channel {
                            if vm.resume_shell == Some(k) {
                                vm.resume_shell = None;
                                vm.sessions[k].resume();
                                vm.active = Some(k);
                                vm.resumed = true;
                            }
                        }
                        // QEMU connects once; a second connection would be someone else.
                        if let Some(mut l) = listener.take() {
                            let _ = registry.deregister(&mut l);
                        }
                        // The connection may already hold data that arrived before registration.
                        return self.handle(i, conn_channel);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => log::warn!("{}: accept: {e}", vm.name),
                }
            }
            Channel::Monitor => {
                let Some(conn) = io.monitor.as_mut() else {
                    return Ok(());
                };
                flush(conn);
                let monitor = &mut vm.monitor;
                let eof = drain(&mut conn.stream, |bytes| monitor.feed(bytes));
                if eof {
                    monitor.handle_eof();
                    if let Some(mut c) = io.monitor.take() {
                        let _ = registry.deregister(&mut c.stream);
                    }
                }
                while let Some(e) = vm.monitor.poll_event() {
                    vm.monitor_events.push_back(e);
                }
            }
            Channel::Qmp => {
                let Some(conn) = io.qmp.as_mut() else {
                    return Ok(());
                };
                flush(conn);
                let codec = &mut vm.qmp.codec;
                // A reset connection (ECONNRESET: QEMU quit with requests unread) is an end of file.
                let eof = drain(&mut conn.stream, |bytes| codec.feed(bytes));
                if eof {
                    codec.handle_eof();
                    if let Some(mut c) = io.qmp.take() {
                        let _ = registry.deregister(&mut c.stream);
                    }
                }
                vm.qmp.absorb(&vm.name);
            }
            Channel::Shell(k) => {
                let Some(conn) = io.shells[k].as_mut() else {
                    return Ok(());
                };
                flush(conn);
                let shell = &mut vm.sessions[k];
                let eof = drain(&mut conn.stream, |bytes| shell.feed(bytes));
                if eof {
                    shell.handle_eof();
                    if let Some(mut c) = io.shells[k].take() {
                        let _ = registry.deregister(&mut c.stream);
                    }
                }
                while let Some(e) = vm.sessions[k].poll_event() {
                    if vm.active.is_none() && e == guest_shell::Event::Banner {
                        log::debug!("{}: backdoor shell on {}", vm.name, BACKDOORS[k]);
                        vm.active = Some(k);
                    }
                    if vm.active != Some(k) {
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
                                    vm.name,
                                    text.trim_end()
                                );
                            }
                        }
                        e => vm.shell_events.push_back(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues bytes for machine `i`'s backdoor shell and writes what the socket takes now.
    pub(crate) fn write_shell(&mut self, i: usize, bytes: &[u8]) -> bool {
        let vm = &mut self.vms[i];
        let Some(k) = vm.active else {
            return false;
        };
        let Some(conn) = vm.io.as_mut().and_then(|io| io.shells[k].as_mut()) else {
            return false;
        };
        conn.out.extend_from_slice(bytes);
        flush(conn);
        true
    }

    /// Takes machine `i`'s backdoor shell events for the command in flight, passing its output to
    /// `output` (which returns false to stop taking: the caller has had enough); Some once the
    /// command ended. Every way of running a command reads its events through here.
    pub(crate) fn take_command_events(
        &mut self,
        i: usize,
        mut output: impl FnMut(&[u8]) -> bool,
    ) -> Option<Ended> {
        let vm = &mut self.vms[i];
        if vm.panicked.is_some() {
            return Some(Ended::Panicked);
        }
        while let Some(e) = vm.shell_events.pop_front() {
            match e {
                guest_shell::Event::Output(b) if !output(&b) => return Some(Ended::Refused),
                guest_shell::Event::Exited { status } => {
                    vm.shell_held = false;
                    return Some(Ended::Exited(status));
                }
                guest_shell::Event::Closed { .. } => return Some(Ended::Closed),
                guest_shell::Event::Lost { reason } => return Some(Ended::Lost(reason)),
                _ => {}
            }
        }
        None
    }

    /// Stops machine `i`'s command in flight in the guest (`Session::interrupt`) and waits for the
    /// shell to confirm. True when the shell is free again; otherwise it is marked wedged.
    pub(crate) fn interrupt_command(&mut self, i: usize) -> bool {
        let limit = INTERRUPT_LIMIT.mul_f64(self.timeout_factor);
        let vm = &mut self.vms[i];
        vm.shell_held = true;
        let Ok(bytes) = vm.shell().interrupt() else {
            return false;
        };
        if !self.write_shell(i, &bytes) {
            return false;
        }
        let t0 = Instant::now();
        let answered = self.run_until(t0 + limit, |core| {
            let ended = core.take_command_events(i, |_| true)?;
            Some(matches!(ended, Ended::Exited(_)))
        });
        let vm = &mut self.vms[i];
        match answered {
            Ok(Some(true)) => {
                log::debug!(
                    "{}: command stopped in the guest in {:.3} s",
                    vm.name,
                    t0.elapsed().as_secs_f64()
                );
                vm.shell_held = false;
                true
            }
            Ok(None) => {
                vm.shell().abandon();
                vm.shell_wedged = Some(format!(
                    "the backdoor shell is wedged: it did not answer within {limit:?} the interrupt \
                     sent after a command timed out"
                ));
                false
            }
            _ => {
                vm.shell().abandon();
                false
            }
        }
    }

    /// Writes `bytes` to machine `i`'s serial console (QEMU's stdin), as typed on it; false when
    /// the machine is not running. The console socket is non-blocking: this waits for room, serving
    /// the event loop (others' output keeps flowing), up to `deadline`.
    pub(crate) fn write_console(&mut self, i: usize, mut bytes: &[u8], deadline: Instant) -> bool {
        while !bytes.is_empty() {
            let Some(serial) = self.vms[i].io.as_mut().and_then(|io| io.serial.as_mut()) else {
                return false;
            };
            match serial.write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline || self.idle(Duration::from_millis(5)).is_err() {
                        return false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Queues bytes for machine `i`'s monitor and writes what the socket takes now.
    pub(crate) fn write_monitor(&mut self, i: usize, bytes: &[u8]) -> bool {
        let Some(conn) = self.vms[i].io.as_mut().and_then(|io| io.monitor.as_mut()) else {
            return false;
        };
        conn.out.extend_from_slice(bytes);
        flush(conn);
        true
    }

    /// Whether QEMU has connected to machine `i`'s monitor (and not closed it).
    pub(crate) fn monitor_connected(&self, i: usize) -> bool {
        self.vms[i]
            .io
            .as_ref()
            .is_some_and(|io| io.monitor.is_some())
    }

    /// Whether machine `i`'s console, QEMU stderr and QMP connection reached end of file.
    pub(crate) fn io_drained(&self, i: usize) -> bool {
        self.vms[i]
            .io
            .as_ref()
            .is_none_or(|io| io.serial.is_none() && io.stderr.is_none() && io.qmp.is_none())
    }

    /// Queues bytes for machine `i`'s QMP socket and writes what the socket takes now.
    pub(crate) fn write_qmp(&mut self, i: usize, bytes: &[u8]) -> bool {
        let Some(conn) = self.vms[i].io.as_mut().and_then(|io| io.qmp.as_mut()) else {
            return false;
        };
        conn.out.extend_from_slice(bytes);
        flush(conn);
        true
    }

    /// Whether machine `i`'s QMP socket is connected (and not closed).
    pub(crate) fn qmp_connected(&self, i: usize) -> bool {
        self.vms[i].io.as_ref().is_some_and(|io| io.qmp.is_some())
    }
}

impl Core {
    /// Starts the switch of VLAN `number` unless it runs already.
    pub(crate) fn ensure_switch(&mut self, number: u32) -> Result<(), Error> {
        if !(1..=255).contains(&number) {
            return Err(Error::Vlan {
                number,
                what: "VLAN numbers go from 1 to 255 (they become a byte of MACs and addresses)"
                    .into(),
                source: None,
            });
        }
        if !self.switches.iter().any(|s| s.number == number) {
            let switch = Switch::start(number, self.root.path())?;
            self.switches.push(switch);
        }
        Ok(())
    }

    /// Starts VLAN `number`'s switch and machine `i`'s link to it, unless they run.
    pub(crate) fn ensure_link(&mut self, number: u32, i: usize) -> Result<(), Error> {
        self.ensure_switch(number)?;
        if self.link(number, i).is_none() {
            let switch = self.switches.iter().find(|s| s.number == number);
            let switch = switch.expect("started above");
            let link = Link::start(switch, i, self.vms[i].number, self.root.path())?;
            self.links.push(link);
        }
        Ok(())
    }

    /// Machine `i`'s link to VLAN `number`.
    pub(crate) fn link(&self, number: u32, i: usize) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| l.vlan == number && l.machine == i)
    }

    pub(crate) fn switch_mut(&mut self, number: u32) -> Option<&mut Switch> {
        self.switches.iter_mut().find(|s| s.number == number)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        for i in 0..self.vms.len() {
            self.stop_io(i);
        }
    }
}

/// Reads a line-oriented stream (console, QEMU's stderr) into `lines`, passing each completed line to
/// `emit`; at end of file completes the last line and unregisters the stream.
fn serve_lines<S: Read + mio::event::Source>(
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
fn drain(r: &mut impl Read, mut each: impl FnMut(&[u8])) -> bool {
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
fn flush(conn: &mut Conn) {
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
