//! `Machine`: one VM of the run, with the NixOS driver's method names.

use crate::activity::Step;
use crate::core::{Core, Ended};
use crate::{Error, StartCommand, DEFAULT_TIMEOUT};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long to keep reading QEMU's stderr and console after it exited, so errors show its last words.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a start script may take to start QEMU (not scaled: no guest code runs before it).
const QEMU_START_LIMIT: Duration = Duration::from_secs(60);

/// Where [`Machine::execute_streaming`] sends a command's output.
type OutputSink<'a> = dyn FnMut(&[u8]) + 'a;

/// How waiting for the backdoor shell ended.
enum Boot {
    Connected,
    Exited,
    /// The kernel panicked; QEMU may go on running (panic=0), but the guest is gone.
    Panicked,
    NoQemu,
}

/// How much of a command's output a timeout error shows.
const LAST_OUTPUT: usize = 2000;

/// A handle on one machine of a [`Driver`](crate::Driver); clones refer to the same machine.
#[derive(Clone)]
pub struct Machine {
    pub(crate) core: Rc<RefCell<Core>>,
    pub(crate) i: usize,
    pub(crate) name: String,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Machine({})", self.name)
    }
}

impl Machine {
    pub(crate) fn new(core: Rc<RefCell<Core>>, i: usize, name: &str) -> Self {
        Machine {
            core,
            i,
            name: name.to_string(),
        }
    }

    /// The machine's name (`run-<name>-vm`).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// assert_eq!(vm.name(), "webserver");
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether QEMU runs and the backdoor shell is connected.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// if !vm.is_up() { vm.connect()?; }
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_up(&self) -> bool {
        let core = self.core.borrow();
        let vm = &core.vms[self.i];
        vm.is_running() && vm.shell_connected()
    }

    /// Whether QEMU was started and has not exited (NixOS's `booted`).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// assert!(!vm.is_running() || vm.is_up() || true);
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_running(&self) -> bool {
        self.core.borrow().vms[self.i].is_running()
    }

    /// Starts QEMU if it is not running; does not wait for the guest.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.start()?; // returns at once; the first command waits for the guest
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(&self) -> Result<(), Error> {
        self.core.borrow_mut().start(self.i)
    }

    /// Starts the machine if needed and waits for the backdoor shell (default timeout).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.connect()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(&self) -> Result<(), Error> {
        self.connect_for(self.limit(None))
    }

    /// Starts the machine if needed and waits up to `timeout` for the backdoor shell.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.connect_within(std::time::Duration::from_secs(120))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_within(&self, timeout: Duration) -> Result<(), Error> {
        self.connect_for(self.limit(Some(timeout)))
    }

    /// `given` (or the default timeout) multiplied by the run's timeout factor.
    pub(crate) fn limit(&self, given: Option<Duration>) -> Duration {
        given
            .unwrap_or(DEFAULT_TIMEOUT)
            .mul_f64(self.core.borrow().timeout_factor)
    }

    fn connect_for(&self, timeout: Duration) -> Result<(), Error> {
        self.explained(None, || {
            let mut core = self.core.borrow_mut();
            let vm = &core.vms[self.i];
            if vm.is_running() && vm.shell_connected() {
                return Ok(());
            }
            // Exited without anyone waiting for it (a crash, a poweroff from inside): report it rather
            // than boot a fresh machine behind the test's back. After `wait_for_shutdown` it starts anew.
            if vm.io.is_some() && vm.exit.is_some() {
                return Err(self.gone(&mut core, "QEMU has exited"));
            }
            core.start(self.i)?;
            let _step = core.activity.enter_on(
                Some(&self.name),
                format!("{}: waiting for the backdoor shell", self.name),
            );
            let t0 = Instant::now();
            let i = self.i;
            let got = core.run_until(t0 + timeout, |core| {
                let vm = &core.vms[i];
                if vm.shell_connected() {
                    Some(Boot::Connected)
                } else if vm.exit.is_some() || !vm.shell_events.is_empty() {
                    // Exited, or the shell channel closed before its banner.
                    Some(Boot::Exited)
                } else if vm.panicked.is_some() {
                    Some(Boot::Panicked)
                } else if t0.elapsed() > QEMU_START_LIMIT && !core.monitor_connected(i) {
                    // QEMU connects to its monitor within milliseconds of starting.
                    Some(Boot::NoQemu)
                } else {
                    None
                }
            })?;
            match got {
                Some(Boot::NoQemu) => {
                    let what = format!(
                        "nothing connected to the monitor socket within {QEMU_START_LIMIT:?} of \
                         starting {}: it did not start QEMU, or not with the options the driver \
                         passes in QEMU_OPTS",
                        match &core.vms[i].start {
                            StartCommand::Script(path) =>
                                format!("start script {}", path.display()),
                            StartCommand::Builtin(_) => "QEMU".into(),
                        }
                    );
                    Err(self.gone(&mut core, &what))
                }
                Some(Boot::Connected) => {
                    let since_start = core.vms[i].started_at.map(|s| s.elapsed());
                    let recorder = core.activity.recorder();
                    let event = crate::record::MachineEvent::Connected { t: recorder.now() };
                    recorder.event(&self.name, event);
                    log::info!(
                        "{}: connected to the backdoor shell ({:.2} s after start)",
                        self.name,
                        since_start.unwrap_or_default().as_secs_f64()
                    );
                    core.vms[i].shell_events.clear();
                    let vm = &mut core.vms[i];
                    let (save, resumed, shell) = (
                        vm.cache_save.take(),
                        std::mem::take(&mut vm.resumed),
                        vm.active,
                    );
                    drop(core);
                    if resumed {
                        self.after_restore()?;
                    }
                    if let (Some(entry), Some(shell)) = (save, shell) {
                        self.save_to_cache(&entry, shell);
                    }
                    Ok(())
                }
                Some(Boot::Exited) => {
                    Err(self.gone(&mut core, "QEMU exited before the backdoor shell connected"))
                }
                Some(Boot::Panicked) => {
                    Err(self.gone(&mut core, "before the backdoor shell connected"))
                }
                None => Err(Error::Timeout {
                    machine: self.name.clone(),
                    what: "the backdoor shell to connect".into(),
                    after: timeout,
                    last: core.vms[i].context(20),
                }),
            }
        })
    }

    /// Runs `command` in the guest (any shell text, verbatim); returns its exit status and stdout.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let (status, out) = vm.execute("grep -c processor /proc/cpuinfo")?;
    /// assert_eq!(status, 0);
    /// println!("{} CPUs", out.trim());
    /// # Ok(())
    /// # }
    /// ```
    pub fn execute(&self, command: &str) -> Result<(i32, String), Error> {
        self.execute_for(command, self.limit(None))
    }

    /// [`execute`](Self::execute) with a timeout; on timeout the command is abandoned (its later
    /// output is logged, not returned) and the shell runs later commands once it ends.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let (status, _) = vm.execute_within("sleep 1", std::time::Duration::from_secs(10))?;
    /// assert_eq!(status, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn execute_within(&self, command: &str, timeout: Duration) -> Result<(i32, String), Error> {
        self.execute_for(command, self.limit(Some(timeout)))
    }

    /// [`execute`](Self::execute) with a timeout already multiplied by the factor.
    pub(crate) fn execute_for(
        &self,
        command: &str,
        limit: Duration,
    ) -> Result<(i32, String), Error> {
        let (status, out) = self.run_command(command.as_bytes(), limit)?;
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }

    /// Runs `command` and returns its exit status and raw stdout bytes.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let (_, bytes) = vm.execute_bytes(b"head -c 4 /dev/urandom", std::time::Duration::from_secs(10))?;
    /// assert_eq!(bytes.len(), 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn execute_bytes(
        &self,
        command: &[u8],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), Error> {
        self.run_command(command, self.limit(Some(timeout)))
    }

    /// Runs `command` and passes its output to `sink` as it arrives, keeping none of it (only the
    /// end, for error messages): for outputs of any size. Returns the exit status.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let mut bytes = 0;
    /// let status = vm.execute_streaming(
    ///     "cat /dev/vda",
    ///     std::time::Duration::from_secs(600),
    ///     |chunk| bytes += chunk.len(),
    /// )?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn execute_streaming(
        &self,
        command: &str,
        timeout: Duration,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<i32, Error> {
        let limit = self.limit(Some(timeout));
        let (status, _) = self.run_command_with(command.as_bytes(), limit, Some(&mut sink))?;
        Ok(status)
    }

    pub(crate) fn run_command(
        &self,
        command: &[u8],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), Error> {
        self.run_command_with(command, timeout, None)
    }

    /// Runs `command`; its output is returned, or given to `sink` (then only its end is kept).
    fn run_command_with(
        &self,
        command: &[u8],
        timeout: Duration,
        mut sink: Option<&mut OutputSink>,
    ) -> Result<(i32, Vec<u8>), Error> {
        crate::polling::check_polling_conditions(&self.core)?;
        self.explained(None, || {
            self.connect()?;
            let mut core = self.core.borrow_mut();
            let i = self.i;
            self.send(&mut core, command)?;
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut overflow = false;
            let done = core.run_until(t0 + timeout, |core| {
                let max_output = core.max_output;
                let ended = core.take_command_events(i, |b| match sink.as_mut() {
                    Some(sink) => {
                        sink(b);
                        out.extend_from_slice(b);
                        if out.len() > 2 * LAST_OUTPUT {
                            out.drain(..out.len() - LAST_OUTPUT);
                        }
                        true
                    }
                    // Bounded memory: the rest of an endless output is not kept.
                    None if out.len() + b.len() > max_output => false,
                    None => {
                        out.extend_from_slice(b);
                        true
                    }
                })?;
                Some(match ended {
                    Ended::Exited(status) => Ok(status),
                    Ended::Refused => {
                        overflow = true;
                        Err(None)
                    }
                    Ended::Closed | Ended::Panicked => Err(None),
                    Ended::Lost(reason) => Err(Some(reason)),
                })
            });
            let status = match &done {
                Ok(Some(Ok(status))) => Some(*status),
                _ => None,
            };
            let text = String::from_utf8_lossy(command);
            core.activity
                .recorder()
                .command(&self.name, t0, &text, status, &out);
            let done = match done {
                Err(e) => {
                    // Interrupted: later output of the command is not anyone's reply.
                    core.vms[i].abandon_command();
                    return Err(e);
                }
                Ok(done) => done,
            };
            let shown = || tail_text(&out, LAST_OUTPUT);
            if overflow {
                let outcome = if core.interrupt_command(i) {
                    "it was stopped in the guest"
                } else {
                    "it could not be stopped: the shell does not answer"
                };
                return Err(Error::OutputTooLarge {
                    machine: self.name.clone(),
                    command: command_text(command),
                    limit: core.max_output,
                    outcome: outcome.into(),
                    last: shown(),
                });
            }
            match done {
                Some(Ok(status)) => {
                    log::debug!(
                        "{}: exit status {status} after {:.3} s",
                        self.name,
                        t0.elapsed().as_secs_f64()
                    );
                    Ok((status, out))
                }
                Some(Err(None)) if core.vms[i].panicked.is_some() => {
                    core.vms[i].abandon_command();
                    let what = format!(
                        "while running `{}`; its output so far:\n{}",
                        command_text(command),
                        shown()
                    );
                    Err(self.gone(&mut core, &what))
                }
                Some(Err(None)) => {
                    let what = format!(
                        "the backdoor shell closed while running `{}`; its output so far:\n{}",
                        command_text(command),
                        shown()
                    );
                    Err(self.gone(&mut core, &what))
                }
                Some(Err(Some(reason))) => Err(Error::ShellLost {
                    machine: self.name.clone(),
                    reason,
                }),
                None => {
                    let outcome = if core.interrupt_command(i) {
                        "stopped in the guest"
                    } else {
                        "could not be stopped: the shell does not answer"
                    };
                    Err(Error::Timeout {
                        machine: self.name.clone(),
                        what: format!("command `{}` to finish ({outcome})", command_text(command)),
                        after: timeout,
                        last: shown(),
                    })
                }
            }
        })
    }

    /// Runs each command in turn (one, or several as NixOS's `succeed(*commands)`); returns their
    /// stdout joined; an error at the first exit status that is not 0.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let kernel = vm.succeed("uname -r")?;
    /// vm.succeed(["mkdir -p /srv", "touch /srv/ready"])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn succeed(&self, commands: impl CommandList) -> Result<String, Error> {
        self.explained(None, || {
            let mut all = String::new();
            for command in commands.commands() {
                let _step = self.step(format!("must succeed: {command}"));
                all.push_str(&self.succeed_quietly(command)?);
            }
            Ok(all)
        })
    }

    /// `succeed` of one command without a log line, for commands a wait repeats.
    pub(crate) fn succeed_quietly(&self, command: &str) -> Result<String, Error> {
        self.succeed_for(command, self.limit(None))
    }

    /// `succeed_quietly` within `limit` (already multiplied by the factor).
    pub(crate) fn succeed_for(&self, command: &str, limit: Duration) -> Result<String, Error> {
        self.explained(None, || {
            let (status, output) = self.execute_for(command, limit)?;
            if status != 0 {
                return Err(Error::CommandFailed {
                    machine: self.name.clone(),
                    command: command.to_string(),
                    status,
                    output,
                });
            }
            Ok(output)
        })
    }

    /// Runs each command in turn; returns their stdout joined; an error at the first that exits 0.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.fail("test -e /etc/shadow-")?;
    /// vm.fail(["false", "exit 3"])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn fail(&self, commands: impl CommandList) -> Result<String, Error> {
        self.explained(None, || {
            let mut all = String::new();
            for command in commands.commands() {
                let _step = self.step(format!("must fail: {command}"));
                let (status, output) = self.execute(command)?;
                if status == 0 {
                    return Err(Error::UnexpectedSuccess {
                        machine: self.name.clone(),
                        command: command.to_string(),
                        output,
                    });
                }
                all.push_str(&output);
            }
            Ok(all)
        })
    }

    /// Sends an HMP command to QEMU's monitor and returns its reply.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let status = vm.send_monitor_command("info status")?;
    /// assert!(status.contains("running"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_monitor_command(&self, command: &str) -> Result<String, Error> {
        let _step = self.step(format!("monitor: {command}"));
        self.monitor_within(command, self.limit(None))
    }

    /// Sends an HMP command and waits up to `limit` for the reply.
    pub(crate) fn monitor_within(&self, command: &str, limit: Duration) -> Result<String, Error> {
        let mut core = self.core.borrow_mut();
        let i = self.i;
        if !core.vms[i].is_running() {
            return Err(Error::NotRunning(self.name.clone()));
        }
        let deadline = Instant::now() + limit;
        // Replies to commands abandoned by a timeout or an interrupt come first, and are not ours.
        core.vms[i]
            .monitor_events
            .retain(|e| !matches!(e, qemu_monitor::Event::Reply(_)));
        let mut stale = core.vms[i].monitor.pending();
        // QEMU connects right after it starts; the codec holds the command until the greeting.
        let bytes = core.vms[i]
            .monitor
            .command(command)
            .map_err(|e| Error::Monitor {
                machine: self.name.clone(),
                reason: e.to_string(),
            })?;
        let ready = core.run_until(deadline, |core| {
            if core.vms[i].exit.is_some() {
                Some(false)
            } else {
                core.monitor_connected(i).then_some(true)
            }
        })?;
        if ready != Some(true) || !core.write_monitor(i, &bytes) {
            return Err(self.gone(&mut core, "the monitor is not connected"));
        }
        let reply = core.run_until(deadline, |core| {
            while let Some(e) = core.vms[i].monitor_events.pop_front() {
                match e {
                    qemu_monitor::Event::Reply(_) if stale > 0 => stale -= 1,
                    qemu_monitor::Event::Reply(r) => return Some(Ok(r)),
                    qemu_monitor::Event::Closed => return Some(Ok(String::new())),
                    qemu_monitor::Event::Lost { reason } => return Some(Err(reason)),
                    _ => {}
                }
            }
            None
        })?;
        match reply {
            Some(Ok(r)) => Ok(r),
            Some(Err(reason)) => Err(Error::Monitor {
                machine: self.name.clone(),
                reason,
            }),
            None => Err(Error::Timeout {
                machine: self.name.clone(),
                what: format!("the monitor's reply to `{command}`"),
                after: limit,
                last: String::new(),
            }),
        }
    }

    /// Whether a reboot restarts the machine (true) or ends QEMU (false, the default, as in NixOS);
    /// takes effect at the next start.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.set_allow_reboot(true);
    /// vm.start()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_allow_reboot(&self, allow: bool) {
        self.core.borrow_mut().vms[self.i].allow_reboot = allow;
    }

    /// Presses Ctrl+Alt+Delete in the guest; the next command waits for the rebooted guest's backdoor
    /// shell. Without [`set_allow_reboot`](Self::set_allow_reboot) QEMU exits instead, and the next
    /// command says so.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.reboot()?;
    /// vm.succeed("true")?; // waits for the rebooted guest
    /// # Ok(())
    /// # }
    /// ```
    pub fn reboot(&self) -> Result<(), Error> {
        let _step = self.step("rebooting".into());
        self.send_monitor_command("sendkey ctrl-alt-delete")?;
        self.core.borrow_mut().vms[self.i].reset_shell();
        Ok(())
    }

    /// Logs `message` as coming from this machine.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.log("starting the interesting part");
    /// # Ok(())
    /// # }
    /// ```
    pub fn log(&self, message: &str) {
        log::info!("{}: {message}", self.name);
    }

    /// Powers the guest off cleanly (`poweroff` in the guest) and waits for QEMU to exit.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.shutdown()?;
    /// assert!(!vm.is_running());
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown(&self) -> Result<(), Error> {
        self.shutdown_within(DEFAULT_TIMEOUT)
    }

    /// [`shutdown`](Self::shutdown), waiting up to `timeout` for the backdoor and then for QEMU to exit.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.shutdown_within(std::time::Duration::from_secs(60))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_within(&self, timeout: Duration) -> Result<(), Error> {
        if !self.is_running() {
            return Ok(());
        }
        let _step = self.step("shutting down".into());
        self.connect_within(timeout)?;
        // Programs have exited (and written their data) by now, or never will.
        if let Err(e) = self.collect_coverage() {
            log::warn!("coverage: {e}");
        }
        {
            let mut core = self.core.borrow_mut();
            let bytes = self.frame(&mut core, b"poweroff")?;
            core.write_shell(self.i, &bytes);
        }
        self.wait_for_shutdown_within(timeout)
    }

    /// Waits (default timeout) for QEMU to exit by itself.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.execute("poweroff")?;
    /// vm.wait_for_shutdown()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_shutdown(&self) -> Result<(), Error> {
        self.wait_for_shutdown_within(DEFAULT_TIMEOUT)
    }

    /// Waits up to `timeout` for QEMU to exit by itself; on timeout QEMU keeps running.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.execute("poweroff")?;
    /// vm.wait_for_shutdown_within(std::time::Duration::from_secs(60))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_shutdown_within(&self, timeout: Duration) -> Result<(), Error> {
        self.explained(None, || {
            let timeout = self.limit(Some(timeout));
            let mut core = self.core.borrow_mut();
            let i = self.i;
            if core.vms[i].io.is_none() {
                return Ok(());
            }
            let _step = core.activity.enter_on(
                Some(&self.name),
                format!("{}: waiting for QEMU to exit", self.name),
            );
            let exited = core.run_until(Instant::now() + timeout, |core| {
                core.vms[i].exit.map(|_| ())
            })?;
            if exited.is_none() {
                return Err(Error::Timeout {
                    machine: self.name.clone(),
                    what: "QEMU to exit".into(),
                    after: timeout,
                    last: core.vms[i].context(20),
                });
            }
            settle(&mut core, i);
            core.stop_io(i);
            Ok(())
        })
    }

    /// Attaches the machine to VLANs before it starts: a NIC with MAC `52:54:00:12:<vlan>:<n>` per VLAN,
    /// where n is the machine's 1-based position in the driver (the bundled guests give it address
    /// `192.168.<vlan>.<n>`). Starts the switches it names.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.attach_vlans(&[1, 2])?;
    /// vm.start()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn attach_vlans(&self, vlans: &[u32]) -> Result<(), Error> {
        let mut core = self.core.borrow_mut();
        if core.vms[self.i].is_running() {
            return Err(Error::Vlan {
                number: vlans.first().copied().unwrap_or(0),
                what: format!(
                    "machine {} runs already; attach VLANs before it starts",
                    self.name
                ),
                source: None,
            });
        }
        for &n in vlans {
            core.ensure_link(n, self.i)?;
            if !core.vms[self.i].vlans.contains(&n) {
                core.vms[self.i].vlans.push(n);
            }
        }
        Ok(())
    }

    /// The address the bundled guests give this machine on `vlan`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let addr = vm.vlan_address(1); // "192.168.1.<n>"
    /// vm.succeed(&format!("ping -c 1 {addr}"))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn vlan_address(&self, vlan: u32) -> String {
        let number = self.core.borrow().vms[self.i].number;
        format!("192.168.{vlan}.{number}")
    }

    /// Takes the machine's VLAN links down (the guest sees its cables pulled), as NixOS's `block`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.block()?;
    /// vm.fail("ping -c 1 -W 1 192.168.1.2")?;
    /// vm.unblock()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn block(&self) -> Result<(), Error> {
        self.set_links(false)
    }

    /// Brings the machine's VLAN links back up.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.block()?;
    /// vm.unblock()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn unblock(&self) -> Result<(), Error> {
        self.set_links(true)
    }

    fn set_links(&self, up: bool) -> Result<(), Error> {
        let vlans = self.core.borrow().vms[self.i].vlans.clone();
        if vlans.is_empty() {
            return Err(Error::Monitor {
                machine: self.name.clone(),
                reason: "no VLAN link to switch: the machine is attached to no VLAN".into(),
            });
        }
        for n in vlans {
            let state = if up { "on" } else { "off" };
            self.monitor_expect_silence(&format!("set_link {} {state}", crate::vlan::nic_id(n)))?;
        }
        Ok(())
    }

    /// Sends a monitor command that prints nothing when it works; any reply is its error message.
    pub(crate) fn monitor_expect_silence(&self, command: &str) -> Result<(), Error> {
        let _step = self.step(format!("monitor: {command}"));
        self.monitor_ok(command)
    }

    /// The serial console lines kept so far (the last 10 000).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let log = vm.get_console_log();
    /// assert!(!log.contains("Kernel panic"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_console_log(&self) -> String {
        self.core.borrow().vms[self.i].console.text()
    }

    /// The bytes that run `command` on the backdoor shell.
    /// Frames `command` and writes it to the backdoor shell, unless the shell is wedged.
    pub(crate) fn send(&self, core: &mut Core, command: &[u8]) -> Result<(), Error> {
        if let Some(reason) = &core.vms[self.i].shell_wedged {
            return Err(Error::ShellWedged {
                machine: self.name.clone(),
                reason: reason.clone(),
            });
        }
        let bytes = self.frame(core, command)?;
        if !core.write_shell(self.i, &bytes) {
            return Err(Error::NotRunning(self.name.clone()));
        }
        Ok(())
    }

    fn frame(&self, core: &mut Core, command: &[u8]) -> Result<Vec<u8>, Error> {
        core.vms[self.i]
            .shell()
            .command(command)
            .map_err(|source| match source {
                guest_shell::Error::Lost => Error::ShellLost {
                    machine: self.name.clone(),
                    reason: "an earlier command desynchronised the channel".into(),
                },
                reason => Error::BadCommand {
                    machine: self.name.clone(),
                    reason,
                },
            })
    }

    /// Logs `what` this machine starts doing and makes it the innermost step until the guard drops.
    /// The machine's private state directory (`vm-state-<name>`), created if needed.
    pub(crate) fn state_dir(&self) -> Result<std::path::PathBuf, Error> {
        let core = self.core.borrow();
        core.root
            .machine_dir(&self.name)
            .map_err(|source| Error::Start {
                machine: self.name.clone(),
                source,
            })
    }

    pub(crate) fn step(&self, what: String) -> Step {
        log::info!("{}: {what}", self.name);
        let activity = self.core.borrow().activity.clone();
        activity.enter_on(Some(&self.name), format!("{}: {what}", self.name))
    }

    pub(crate) fn gone(&self, core: &mut Core, what: &str) -> Error {
        settle(core, self.i);
        let what = match &core.vms[self.i].panicked {
            Some(line) => format!("the guest kernel panicked ({line}) {what}"),
            None => what.to_string(),
        };
        Error::MachineGone {
            machine: self.name.clone(),
            what,
            context: core.vms[self.i].context(crate::context::CONSOLE_LINES),
        }
    }
}

/// Lets the loop read what a dying QEMU still wrote, so an error shows it.
fn settle(core: &mut Core, i: usize) {
    let _ = core.run_until(Instant::now() + SETTLE, |core| {
        core.vms[i].exit.filter(|_| core.io_drained(i)).map(|_| ())
    });
}

pub(crate) fn tail_text(out: &[u8], max: usize) -> String {
    let start = out.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&out[start..]);
    if start > 0 {
        format!("[… {start} bytes before]{text}")
    } else {
        text.into_owned()
    }
}

fn command_text(command: &[u8]) -> String {
    let text = String::from_utf8_lossy(command);
    let first = text.lines().next().unwrap_or("");
    if text.lines().nth(1).is_some() {
        format!("{first} …")
    } else {
        first.to_string()
    }
}

/// One shell command or several, for [`Machine::succeed`] and [`Machine::fail`] (NixOS's `*commands`).
pub trait CommandList {
    /// The commands, in order.
    fn commands(&self) -> Vec<&str>;
}

impl CommandList for &str {
    fn commands(&self) -> Vec<&str> {
        vec![self]
    }
}

impl CommandList for String {
    fn commands(&self) -> Vec<&str> {
        vec![self]
    }
}

impl CommandList for &String {
    fn commands(&self) -> Vec<&str> {
        vec![self]
    }
}

impl<const N: usize> CommandList for [&str; N] {
    fn commands(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl CommandList for &[&str] {
    fn commands(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl CommandList for Vec<String> {
    fn commands(&self) -> Vec<&str> {
        self.iter().map(String::as_str).collect()
    }
}
