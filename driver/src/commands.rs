//! Commands in the guest over the backdoor shell: framing, sending, reading the reply within a
//! timeout, stopping a timed-out command in the guest.

use crate::core::Core;
use crate::event_loop::Ended;
use crate::machine::Machine;
use crate::text::{command_text, sh_quote, tail_text};
use crate::Error;
use std::time::{Duration, Instant};

/// Where [`Machine::execute_streaming`] sends a command's output.
type OutputSink<'a> = dyn FnMut(&[u8]) + 'a;

/// How much of a command's output a timeout error shows.
const LAST_OUTPUT: usize = 2000;
/// How long the shell may take to stop a timed-out command (before the timeout factor).
const INTERRUPT_LIMIT: Duration = Duration::from_secs(5);

/// What a command asks of the backdoor shell.
#[derive(Clone, Copy)]
enum Request<'a> {
    /// Shell text, run in a subshell of its own.
    Script(&'a [u8]),
    /// The arguments of a `test` the shell runs itself (no process started).
    Test(&'a [&'a [u8]]),
}

impl Machine {
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

    /// `test ARGS…` run by the backdoor shell itself, within `limit`: its exit status. A polling
    /// wait's try this way starts no process in the guest (bash's fork costs ~9.5 ms of guest CPU
    /// under TCG, most of such a try).
    pub(crate) fn test_for(&self, args: &[&str], limit: Duration) -> Result<i32, Error> {
        let text = std::iter::once("test".to_string())
            .chain(args.iter().map(|a| sh_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let (status, _) = self.run_request(text.as_bytes(), Request::Test(&args), limit, None)?;
        Ok(status)
    }

    /// Runs `command`; its output is returned, or given to `sink` (then only its end is kept).
    fn run_command_with(
        &self,
        command: &[u8],
        timeout: Duration,
        sink: Option<&mut OutputSink>,
    ) -> Result<(i32, Vec<u8>), Error> {
        self.run_request(command, Request::Script(command), timeout, sink)
    }

    /// Runs `request` (shown and logged as `command`); its output is returned, or given to `sink`
    /// (then only its end is kept).
    fn run_request(
        &self,
        command: &[u8],
        request: Request,
        timeout: Duration,
        mut sink: Option<&mut OutputSink>,
    ) -> Result<(i32, Vec<u8>), Error> {
        self.before_command()?;
        self.explained(None, || {
            self.connect()?;
            let mut core = self.core.borrow_mut();
            let i = self.i;
            self.send_request(&mut core, request)?;
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut overflow = false;
            let max_output = core.max_output;
            let done = core.io.run_until(t0 + timeout, |io| {
                let ended = io.vms[i].take_command_events(|b| match sink.as_mut() {
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
                    core.io.vms[i].abandon_command();
                    return Err(e);
                }
                Ok(done) => done,
            };
            let shown = || tail_text(&out, LAST_OUTPUT);
            if overflow {
                let outcome = if crate::commands::interrupt_command(&mut core, i) {
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
                Some(Err(None)) if core.io.vms[i].panicked.is_some() => {
                    core.io.vms[i].abandon_command();
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
                    let outcome = if crate::commands::interrupt_command(&mut core, i) {
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

    /// Frames `command` and writes it to the backdoor shell, unless the shell is wedged.
    pub(crate) fn send(&self, core: &mut Core, command: &[u8]) -> Result<(), Error> {
        self.send_request(core, Request::Script(command))
    }

    fn send_request(&self, core: &mut Core, request: Request) -> Result<(), Error> {
        if let Some(reason) = &core.io.vms[self.i].shell_wedged {
            return Err(Error::ShellWedged {
                machine: self.name.clone(),
                reason: reason.clone(),
            });
        }
        let bytes = self.frame_request(core, request)?;
        if !core.io.vms[self.i].write_shell(&bytes) {
            return Err(Error::NotRunning(self.name.clone()));
        }
        Ok(())
    }

    /// The bytes that run `command` on the backdoor shell.
    pub(crate) fn frame(&self, core: &mut Core, command: &[u8]) -> Result<Vec<u8>, Error> {
        self.frame_request(core, Request::Script(command))
    }

    fn frame_request(&self, core: &mut Core, request: Request) -> Result<Vec<u8>, Error> {
        let shell = core.io.vms[self.i].shell();
        match request {
            Request::Script(command) => shell.command(command),
            Request::Test(args) => shell.test(args),
        }
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
}

/// Stops machine `i`'s command in flight in the guest (`Session::interrupt`) and waits for the
/// shell to confirm. True when the shell is free again; otherwise it is marked wedged.
pub(crate) fn interrupt_command(core: &mut Core, i: usize) -> bool {
    let limit = INTERRUPT_LIMIT.mul_f64(core.timeout_factor);
    let vm = &mut core.io.vms[i];
    vm.shell_held = true;
    let Ok(bytes) = vm.shell().interrupt() else {
        return false;
    };
    if !vm.write_shell(&bytes) {
        return false;
    }
    let t0 = Instant::now();
    let answered = core.io.run_until(t0 + limit, |io| {
        let ended = io.vms[i].take_command_events(|_| true)?;
        Some(matches!(ended, Ended::Exited(_)))
    });
    let vm = &mut core.io.vms[i];
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
