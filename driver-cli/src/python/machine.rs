//! Python's `Machine`: NixOS's methods, with their signatures, keyword arguments and return
//! values, each a call into `driver::Machine` with the GIL released.

use super::calls::{call, unlocked};
use super::duration::{duration, Secs};
use super::errors::{driver_error, raise};
use crate::interact::{interact, interact_via_socat, Target};
use driver::{Driver, Machine};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// What every machine of a Python run shares: the driver, where files go, whether OCR may run.
#[derive(Clone)]
pub struct MachineEnv {
    /// The run's driver.
    pub driver: Driver,
    /// NixOS's `out_dir`: `copy_from_vm` and screenshots write here.
    pub out_dir: PathBuf,
    /// `--enable-ocr` (NixOS's `enableOCR`): without it, OCR raises as NixOS's driver does.
    pub ocr: bool,
}

/// A virtual terminal's number, given as NixOS scripts give it (`1` or `"1"`).
fn tty_number(v: &Bound<'_, PyAny>) -> PyResult<u32> {
    let text = v.str()?.to_string();
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=63).contains(n))
        .ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "tty {text}: virtual terminals are numbered 1 to 63"
            ))
        })
}

/// A NixOS machine of the test (one thread: an `unsendable` class, see `calls::unlocked`).
#[pyclass(unsendable, name = "Machine", module = "test_driver.machine")]
pub struct PyMachine {
    m: Machine,
    env: MachineEnv,
}

impl PyMachine {
    /// `m` for Python, in the run `env` describes.
    pub fn new(m: Machine, env: MachineEnv) -> Self {
        PyMachine { m, env }
    }

    /// The driver's machine behind this one.
    pub fn machine(&self) -> &Machine {
        &self.m
    }

    /// NixOS's error when a script asks for OCR without `enableOCR`.
    fn require_ocr(&self, py: Python<'_>) -> PyResult<()> {
        match self.env.ocr {
            true => Ok(()),
            false => Err(raise(
                py,
                "MachineError",
                "OCR requested but enableOCR is false (pass --enable-ocr, or set enableOCR=1)"
                    .into(),
            )),
        }
    }

    /// One of the machine's paths, as NixOS gives it: a `pathlib.Path`.
    fn path(
        &self,
        py: Python<'_>,
        pick: impl FnOnce(driver::MachinePaths) -> PathBuf,
    ) -> PyResult<PathBuf> {
        call(py, || self.m.paths()).map(pick)
    }

    /// Runs each command within `timeout`, each checked by `ok` (NixOS's `succeed`/`fail` with a
    /// `timeout=`), their output joined.
    fn each_within(
        &self,
        py: Python<'_>,
        commands: Vec<String>,
        timeout: Duration,
        must: &str,
        check: impl Fn(&str, i32, String) -> Result<String, driver::Error>,
    ) -> PyResult<String> {
        let mut all = String::new();
        for c in commands {
            self.m.log(&format!("must {must}: {c}"));
            let (status, out) = call(py, || self.m.execute_within(&c, timeout))?;
            all.push_str(&check(&c, status, out).map_err(|e| driver_error(py, e))?);
        }
        Ok(all)
    }
}

#[pymethods]
impl PyMachine {
    fn __repr__(&self) -> String {
        format!("<Machine '{}'>", self.m.name())
    }

    /// The machine's name.
    #[getter]
    fn name(&self) -> String {
        self.m.name().to_string()
    }

    /// Whether QEMU runs.
    #[getter]
    fn booted(&self) -> bool {
        self.m.is_running()
    }

    /// Whether the backdoor shell is connected.
    #[getter]
    fn connected(&self) -> bool {
        self.m.is_up()
    }

    /// The machine's state directory (`vm-state-<name>`).
    #[getter]
    fn state_dir(&self, py: Python<'_>) -> PyResult<PathBuf> {
        self.path(py, |p| p.state_dir)
    }

    /// The directory shared with the guests (`SHARED_DIR`).
    #[getter]
    fn shared_dir(&self, py: Python<'_>) -> PyResult<PathBuf> {
        self.path(py, |p| p.shared_dir)
    }

    /// QEMU's HMP monitor socket.
    #[getter]
    fn monitor_path(&self, py: Python<'_>) -> PyResult<PathBuf> {
        self.path(py, |p| p.monitor)
    }

    /// The backdoor shell's socket.
    #[getter]
    fn shell_path(&self, py: Python<'_>) -> PyResult<PathBuf> {
        self.path(py, |p| p.shell)
    }

    /// QEMU's QMP socket.
    #[getter]
    fn qmp_path(&self, py: Python<'_>) -> PyResult<PathBuf> {
        self.path(py, |p| p.qmp)
    }

    /// Where the run's files go (NixOS's `out_dir`).
    #[getter]
    fn out_dir(&self) -> PathBuf {
        self.env.out_dir.clone()
    }

    fn is_up(&self) -> bool {
        self.m.is_up()
    }

    fn log(&self, msg: &str) {
        self.m.log(msg);
    }

    /// A step of the log, as a context manager (NixOS's `machine.nested(msg)`).
    #[pyo3(signature = (msg, attrs=None))]
    fn nested<'py>(
        &self,
        py: Python<'py>,
        msg: &str,
        attrs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = attrs;
        let log = py.import("test_driver.logger")?.getattr("rootlog")?;
        log.call_method1("nested", (format!("{}: {msg}", self.m.name()),))
    }

    // Lifecycle.

    #[pyo3(signature = (allow_reboot=false))]
    fn start(&self, py: Python<'_>, allow_reboot: bool) -> PyResult<()> {
        self.m.set_allow_reboot(allow_reboot);
        call(py, || self.m.start())
    }

    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.m.connect())
    }

    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.m.shutdown())
    }

    fn crash(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.m.crash())
    }

    fn reboot(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.m.reboot())
    }

    fn wait_for_shutdown(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.m.wait_for_shutdown())
    }

    fn block(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.m.block())
    }

    fn unblock(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.m.unblock())
    }

    /// NixOS's `send_monitor_command`: the monitor's reply up to and including its next prompt
    /// (`(qemu) `), as NixOS reads it off the socket; the driver's codec takes the prompt off.
    fn send_monitor_command(&self, py: Python<'_>, command: &str) -> PyResult<String> {
        call(py, || self.m.send_monitor_command(command)).map(|reply| reply + "(qemu) ")
    }

    /// NixOS's `shell_interact(address=None)`: lines typed on the terminal run in the backdoor
    /// root shell until end of input (without a terminal on stdin, an unattended run, it returns
    /// at once); with a socat `address` (`"TCP-LISTEN:4444"`), lines from there, the output sent
    /// back, until that side closes.
    #[pyo3(signature = (address=None))]
    fn shell_interact(&self, py: Python<'_>, address: Option<&str>) -> PyResult<()> {
        let Some(address) = address else {
            return self.interact(py, Target::Shell);
        };
        unlocked(py, || {
            interact_via_socat(&self.env.driver, &self.m, address)
        })
        .map_err(|e| match e.downcast::<driver::Error>() {
            Ok(e) => driver_error(py, e),
            Err(e) => pyo3::exceptions::PyOSError::new_err(format!("{e:#}")),
        })
    }

    /// NixOS's `console_interact()`: lines typed on the terminal go to the serial console until
    /// end of input. Without a terminal on stdin it returns at once.
    fn console_interact(&self, py: Python<'_>) -> PyResult<()> {
        self.interact(py, Target::Console)
    }

    /// The QMP command `command` with `arguments` (a dict, or `None`): its `return` value.
    /// `QMPAPIError` when QEMU answers with an error, as NixOS's `qmp_client.send` raises it.
    #[pyo3(signature = (command, arguments=None))]
    fn qmp_command(
        &self,
        py: Python<'_>,
        command: &str,
        arguments: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let args = match arguments.filter(|a| !a.is_none()) {
            Some(a) => Some(to_json(py, &a)?),
            None => None,
        };
        match unlocked(py, || self.m.qmp_command(command, args)) {
            Ok(v) => from_json(py, &v),
            Err(e) => match e.cause() {
                driver::Error::QmpCommandFailed { class, desc, .. } => {
                    let message = serde_json::json!({"error": {"class": class, "desc": desc}});
                    let class = py
                        .import("test_driver.machine.qmp")?
                        .getattr("QMPAPIError")?;
                    Err(PyErr::from_value(class.call1((from_json(py, &message)?,))?))
                }
                _ => Err(driver_error(py, e)),
            },
        }
    }

    /// vm-test-driver's: the QMP events received and not yet looked at, oldest first, without
    /// waiting (what `qmp_client.events()` yields).
    fn qmp_events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let events = call(py, || self.m.take_qmp_events())?;
        events.iter().map(|e| event_dict(py, e)).collect()
    }

    /// NixOS's `wait_for_qmp_event(event_filter, timeout=600)`: the first QMP event (a dict with
    /// `event`, `data`, `timestamp`) `event_filter` accepts. Events are the driver's (see
    /// `driver::Machine::wait_for_qmp_event`): those not looked at by an earlier wait come first.
    #[pyo3(signature = (event_filter, timeout=Secs(600.0)))]
    fn wait_for_qmp_event(
        &self,
        py: Python<'_>,
        event_filter: Py<PyAny>,
        timeout: Secs,
    ) -> PyResult<Py<PyAny>> {
        // The filter's exception ends the wait (the filter says yes) and is raised here.
        let mut raised: Option<PyErr> = None;
        let got = {
            let raised = std::cell::RefCell::new(&mut raised);
            unlocked(py, || {
                self.m.wait_for_qmp_event(
                    |e| {
                        Python::attach(|py| {
                            let event = event_dict(py, e)?;
                            event_filter.call1(py, (event,))?.bind(py).is_truthy()
                        })
                        .unwrap_or_else(|err| {
                            **raised.borrow_mut() = Some(err);
                            true
                        })
                    },
                    timeout.duration(),
                )
            })
        };
        if let Some(err) = raised {
            return Err(err);
        }
        match got {
            Ok(e) => event_dict(py, &e),
            Err(e) if matches!(e.cause(), driver::Error::Timeout { .. }) => {
                let message = format!("{:#}", anyhow::Error::from(e));
                Err(raise(py, "QMPEventTimeout", message))
            }
            Err(e) => Err(driver_error(py, e)),
        }
    }

    #[pyo3(signature = (host_port=8080, guest_port=80))]
    fn forward_port(&self, py: Python<'_>, host_port: u16, guest_port: u16) -> PyResult<()> {
        call(py, || self.m.forward_port(host_port, guest_port))
    }

    /// Sleeps `secs` in the guest's time (NixOS runs `sleep` in the guest).
    fn sleep(&self, py: Python<'_>, secs: Secs) -> PyResult<()> {
        call(py, || self.m.sleep(secs.0))
    }

    // Commands.

    #[pyo3(signature = (*commands, timeout=None))]
    fn succeed(
        &self,
        py: Python<'_>,
        commands: Vec<String>,
        timeout: Option<Secs>,
    ) -> PyResult<String> {
        let Some(t) = duration(timeout) else {
            return call(py, || self.m.succeed(commands));
        };
        let name = self.m.name().to_string();
        self.each_within(
            py,
            commands,
            t,
            "succeed",
            |c, status, output| match status {
                0 => Ok(output),
                _ => Err(driver::Error::CommandFailed {
                    machine: name.clone(),
                    command: c.to_string(),
                    status,
                    output,
                }),
            },
        )
    }

    #[pyo3(signature = (*commands, timeout=None))]
    fn fail(
        &self,
        py: Python<'_>,
        commands: Vec<String>,
        timeout: Option<Secs>,
    ) -> PyResult<String> {
        let Some(t) = duration(timeout) else {
            return call(py, || self.m.fail(commands));
        };
        let name = self.m.name().to_string();
        self.each_within(py, commands, t, "fail", |c, status, output| match status {
            0 => Err(driver::Error::UnexpectedSuccess {
                machine: name.clone(),
                command: c.to_string(),
                output,
            }),
            _ => Ok(output),
        })
    }

    /// NixOS's `execute`: `(status, output)`; `check_return=False` gives `-1` for the status (and
    /// accepts that the command takes the machine down); `check_output=False` starts the command
    /// and returns `(-2, "")` at once, its output discarded, as NixOS's does (which sends it and
    /// reads nothing back: `execute("reboot", check_output=False)`).
    #[pyo3(signature = (command, check_return=true, check_output=true, timeout=Some(Secs(900.0))))]
    fn execute(
        &self,
        py: Python<'_>,
        command: &str,
        check_return: bool,
        check_output: bool,
        timeout: Option<Secs>,
    ) -> PyResult<(i32, String)> {
        if !check_output {
            // In the background of the command's own subshell: the call returns once it started.
            // The newline ends a trailing comment of the command before the parenthesis.
            let detached = format!("( {command}\n) >/dev/null 2>&1 &");
            let got = call(py, || self.m.execute(&detached));
            return match got {
                Ok(_) => Ok((-2, String::new())),
                Err(e) => Err(e),
            };
        }
        let got = call(py, || match duration(timeout) {
            Some(t) => self.m.execute_within(command, t),
            None => self.m.execute(command),
        });
        let gone = |e: &PyErr| {
            py.import("test_driver.errors")
                .and_then(|m| m.getattr("MachineError"))
                .is_ok_and(|c| e.value(py).is_instance(&c).unwrap_or(false))
        };
        if let Ok((2, _)) = &got {
            // Status 2 is also the shell's for a command it cannot parse; NixOS's `execute`
            // raises then (its bash's message reaches the script), so check with the host's bash.
            if let Some(said) = syntax_error(command) {
                let message = format!("command `{command}` is not valid shell syntax: {said}");
                return Err(raise(py, "TestScriptError", message));
            }
        }
        match (check_return, got) {
            (false, Ok((_, out))) => Ok((-1, out)),
            (true, Ok(got)) => Ok(got),
            (false, Err(e)) if gone(&e) => Ok((-1, String::new())),
            (_, Err(e)) => Err(e),
        }
    }

    /// NixOS's `wait_until_succeeds(command, timeout=900, attempt_timeout=None)`: a try still
    /// running after `attempt_timeout` is stopped and the command tried again.
    #[pyo3(signature = (command, timeout=Secs(900.0), attempt_timeout=None))]
    fn wait_until_succeeds(
        &self,
        py: Python<'_>,
        command: &str,
        timeout: Secs,
        attempt_timeout: Option<Secs>,
    ) -> PyResult<String> {
        let (t, a) = (timeout.duration(), duration(attempt_timeout));
        call(py, || self.m.wait_until_succeeds_bounded(command, t, a))
    }

    /// NixOS's `wait_until_fails`, with `attempt_timeout` as `wait_until_succeeds` has it.
    #[pyo3(signature = (command, timeout=Secs(900.0), attempt_timeout=None))]
    fn wait_until_fails(
        &self,
        py: Python<'_>,
        command: &str,
        timeout: Secs,
        attempt_timeout: Option<Secs>,
    ) -> PyResult<String> {
        let (t, a) = (timeout.duration(), duration(attempt_timeout));
        call(py, || self.m.wait_until_fails_bounded(command, t, a))
    }

    // systemd.

    #[pyo3(signature = (q, user=None))]
    fn systemctl(&self, py: Python<'_>, q: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        call(py, || match user {
            Some(u) => self.m.systemctl_as(q, u),
            None => self.m.systemctl(q),
        })
    }

    #[pyo3(signature = (unit, user=None, timeout=Secs(900.0)))]
    fn wait_for_unit(
        &self,
        py: Python<'_>,
        unit: &str,
        user: Option<&str>,
        timeout: Secs,
    ) -> PyResult<()> {
        let t = timeout.duration();
        call(py, || match user {
            Some(u) => self.m.wait_for_user_unit(unit, u, t),
            None => self.m.wait_for_unit(unit, t),
        })
    }

    /// NixOS's `wait_for_unit_active_state(unit, state, timeout=…)`: until the unit's
    /// `ActiveState` is `state`.
    #[pyo3(signature = (unit, state, user=None, timeout=Secs(900.0)))]
    fn wait_for_unit_active_state(
        &self,
        py: Python<'_>,
        unit: &str,
        state: &str,
        user: Option<&str>,
        timeout: Secs,
    ) -> PyResult<()> {
        call(py, || {
            self.m
                .wait_for_unit_active_state(unit, state, user, timeout.duration())
        })
    }

    #[pyo3(signature = (unit, user=None))]
    fn get_unit_info(
        &self,
        py: Python<'_>,
        unit: &str,
        user: Option<&str>,
    ) -> PyResult<HashMap<String, String>> {
        call(py, || match user {
            Some(u) => self.m.get_user_unit_info(unit, u),
            None => self.m.get_unit_info(unit),
        })
    }

    #[pyo3(signature = (unit, property, user=None))]
    fn get_unit_property(
        &self,
        py: Python<'_>,
        unit: &str,
        property: &str,
        user: Option<&str>,
    ) -> PyResult<String> {
        match user {
            None => call(py, || self.m.get_unit_property(unit, property)),
            Some(u) => {
                let info = call(py, || self.m.get_user_unit_info(unit, u))?;
                info.get(property).cloned().ok_or_else(|| {
                    pyo3::exceptions::PyAssertionError::new_err(format!(
                        "systemctl show --property \"{property}\" \"{unit}\" has no {property}"
                    ))
                })
            }
        }
    }

    /// NixOS's `require_unit_state`, failing in NixOS's words (scripts match on them, typo
    /// included) with the driver's explanation after them.
    #[pyo3(signature = (unit, require_state="active"))]
    fn require_unit_state(&self, py: Python<'_>, unit: &str, require_state: &str) -> PyResult<()> {
        let e = match unlocked(py, || self.m.require_unit_state(unit, require_state)) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let now = match e.cause() {
            driver::Error::UnitFailed { status, .. } => status
                .strip_prefix(&format!("expected {require_state}, it is "))
                .map(|rest| rest.lines().next().unwrap_or_default().to_string()),
            _ => None,
        };
        match now {
            Some(now) => {
                let full = format!("{:#}", anyhow::Error::from(e));
                let first = format!(
                    "Expected unit '{unit}' to to be in state '{require_state}' but it is in \
                     state '{now}'"
                );
                Err(raise(
                    py,
                    "RequestedAssertionFailed",
                    format!("{first}\n{full}"),
                ))
            }
            None => Err(driver_error(py, e)),
        }
    }

    #[pyo3(signature = (jobname, user=None))]
    fn start_job(
        &self,
        py: Python<'_>,
        jobname: &str,
        user: Option<&str>,
    ) -> PyResult<(i32, String)> {
        self.systemctl(py, &format!("start {jobname}"), user)
    }

    #[pyo3(signature = (jobname, user=None))]
    fn stop_job(
        &self,
        py: Python<'_>,
        jobname: &str,
        user: Option<&str>,
    ) -> PyResult<(i32, String)> {
        self.systemctl(py, &format!("stop {jobname}"), user)
    }

    fn wait_for_job(&self, py: Python<'_>, jobname: &str) -> PyResult<()> {
        call(py, || self.m.wait_for_job(jobname, None))
    }

    // Files and ports.

    #[pyo3(signature = (filename, timeout=Secs(900.0)))]
    fn wait_for_file(&self, py: Python<'_>, filename: &str, timeout: Secs) -> PyResult<()> {
        call(py, || self.m.wait_for_file(filename, timeout.duration()))
    }

    #[pyo3(signature = (port, addr="localhost", timeout=Secs(900.0)))]
    fn wait_for_open_port(
        &self,
        py: Python<'_>,
        port: u16,
        addr: &str,
        timeout: Secs,
    ) -> PyResult<()> {
        call(py, || {
            self.m
                .wait_for_open_port(port, Some(addr), timeout.duration())
        })
    }

    #[pyo3(signature = (port, addr="localhost", timeout=Secs(900.0)))]
    fn wait_for_closed_port(
        &self,
        py: Python<'_>,
        port: u16,
        addr: &str,
        timeout: Secs,
    ) -> PyResult<()> {
        call(py, || {
            self.m
                .wait_for_closed_port(port, Some(addr), timeout.duration())
        })
    }

    #[pyo3(signature = (addr, is_datagram=false, timeout=Secs(900.0)))]
    fn wait_for_open_unix_socket(
        &self,
        py: Python<'_>,
        addr: &str,
        is_datagram: bool,
        timeout: Secs,
    ) -> PyResult<()> {
        call(py, || {
            self.m
                .wait_for_open_unix_socket(addr, is_datagram, timeout.duration())
        })
    }

    /// NixOS's `copy_from_host`: a file or a directory (copied whole) into the guest.
    fn copy_from_host(&self, py: Python<'_>, source: PathBuf, target: &str) -> PyResult<()> {
        call(py, || self.m.copy_from_host(&source, target))
    }

    fn copy_from_host_via_shell(
        &self,
        py: Python<'_>,
        source: PathBuf,
        target: &str,
    ) -> PyResult<()> {
        call(py, || self.m.copy_from_host(&source, target))
    }

    /// NixOS's `copy_from_vm(source, target_dir="")`: the file or directory (copied whole)
    /// into the output directory's `target_dir` (an absolute one stands alone), under its own
    /// name.
    #[pyo3(signature = (source, target_dir=PathBuf::new()))]
    fn copy_from_vm(&self, py: Python<'_>, source: &str, target_dir: PathBuf) -> PyResult<()> {
        let name = Path::new(source).file_name().unwrap_or_default();
        let target = self.env.out_dir.join(target_dir).join(name);
        call(py, || self.m.copy_tree_from_vm(source, &target))
    }

    /// NixOS's `copy_from_machine`, the name `copy_from_vm` has there now.
    #[pyo3(signature = (source, target_dir=PathBuf::new()))]
    fn copy_from_machine(&self, py: Python<'_>, source: &str, target_dir: PathBuf) -> PyResult<()> {
        self.copy_from_vm(py, source, target_dir)
    }

    // Consoles, terminals, keys, screen.

    #[pyo3(signature = (regex, timeout=None))]
    fn wait_for_console_text(
        &self,
        py: Python<'_>,
        regex: &str,
        timeout: Option<Secs>,
    ) -> PyResult<()> {
        call(py, || {
            self.m.wait_for_console_text(regex, duration(timeout))
        })
        .map(drop)
    }

    fn get_console_log(&self) -> String {
        self.m.get_console_log()
    }

    fn send_console(&self, py: Python<'_>, chars: &str) -> PyResult<()> {
        call(py, || self.m.send_console(chars))
    }

    fn get_tty_text(&self, py: Python<'_>, tty: &Bound<'_, PyAny>) -> PyResult<String> {
        let n = tty_number(tty)?;
        call(py, || self.m.get_tty_text(n))
    }

    #[pyo3(signature = (tty, regexp, timeout=Secs(900.0)))]
    fn wait_until_tty_matches(
        &self,
        py: Python<'_>,
        tty: &Bound<'_, PyAny>,
        regexp: &str,
        timeout: Secs,
    ) -> PyResult<()> {
        let n = tty_number(tty)?;
        call(py, || {
            self.m.wait_until_tty_matches(n, regexp, timeout.duration())
        })
    }

    fn dump_tty_contents(&self, py: Python<'_>, tty: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = tty_number(tty)?;
        call(py, || self.m.dump_tty_contents(n))
    }

    /// NixOS's `send_key`; the driver paces keys itself, so `delay` and `log` change nothing.
    #[pyo3(signature = (key, delay=Some(Secs(0.01)), log=true))]
    fn send_key(&self, py: Python<'_>, key: &str, delay: Option<Secs>, log: bool) -> PyResult<()> {
        let _ = (delay, log);
        call(py, || self.m.send_key(key))
    }

    #[pyo3(signature = (chars, delay=Some(Secs(0.01))))]
    fn send_chars(&self, py: Python<'_>, chars: &str, delay: Option<Secs>) -> PyResult<()> {
        call(py, || self.m.send_chars(chars, duration(delay)))
    }

    fn get_screen_text(&self, py: Python<'_>) -> PyResult<String> {
        self.require_ocr(py)?;
        call(py, || self.m.get_screen_text())
    }

    fn get_screen_text_variants(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.require_ocr(py)?;
        call(py, || self.m.get_screen_text_variants())
    }

    #[pyo3(signature = (regex, timeout=Secs(900.0)))]
    fn wait_for_text(&self, py: Python<'_>, regex: &str, timeout: Secs) -> PyResult<()> {
        self.require_ocr(py)?;
        call(py, || self.m.wait_for_text(regex, timeout.duration()))
    }

    fn screenshot(&self, py: Python<'_>, filename: &str) -> PyResult<()> {
        call(py, || self.m.screenshot(filename)).map(drop)
    }

    #[pyo3(signature = (timeout=Secs(900.0)))]
    fn wait_for_x(&self, py: Python<'_>, timeout: Secs) -> PyResult<()> {
        call(py, || self.m.wait_for_x(timeout.duration()))
    }

    fn get_window_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        call(py, || self.m.get_window_names())
    }

    #[pyo3(signature = (regexp, timeout=Secs(900.0)))]
    fn wait_for_window(&self, py: Python<'_>, regexp: &str, timeout: Secs) -> PyResult<()> {
        call(py, || self.m.wait_for_window(regexp, timeout.duration()))
    }
}

impl PyMachine {
    /// `shell_interact` / `console_interact`: the driver-cli's line loop, when stdin is a
    /// terminal (a run without one, as under CI, must not wait for input that never comes).
    fn interact(&self, py: Python<'_>, target: Target) -> PyResult<()> {
        if !std::io::stdin().is_terminal() {
            self.m
                .log("not interacting: stdin is not a terminal (an unattended run)");
            return Ok(());
        }
        unlocked(py, || interact(&self.env.driver, &self.m, target))
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{e:#}")))
    }
}

/// What the host's bash says of `command`'s syntax (`bash -n`), when it cannot parse it; `None`
/// when it can, or when there is no bash to ask.
fn syntax_error(command: &str) -> Option<String> {
    let out = std::process::Command::new("bash")
        .args(["-n", "-c", command])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let said = String::from_utf8_lossy(&out.stderr);
    (!out.status.success() && said.contains("syntax error")).then(|| said.trim().to_string())
}

/// A Python value (a dict of QMP arguments) as JSON, through Python's `json`.
fn to_json(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text: String = py.import("json")?.call_method1("dumps", (v,))?.extract()?;
    serde_json::from_str(&text)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("not JSON: {e}")))
}

/// A JSON value as Python's `json.loads` gives it.
fn from_json(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    let loaded = py.import("json")?.call_method1("loads", (v.to_string(),))?;
    Ok(loaded.unbind())
}

/// A QMP event as NixOS hands it to filters: QEMU's own message (`event`, `data`, `timestamp`).
fn event_dict(py: Python<'_>, e: &driver::QmpEvent) -> PyResult<Py<PyAny>> {
    let since = e.timestamp.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
    let (seconds, micros) = since.map_or((-1, -1), |d| {
        (d.as_secs() as i64, i64::from(d.subsec_micros()))
    });
    let message = serde_json::json!({
        "event": e.name,
        "data": e.data,
        "timestamp": {"seconds": seconds, "microseconds": micros},
    });
    from_json(py, &message)
}

#[cfg(test)]
mod tests {
    use super::syntax_error;

    #[test]
    fn the_hosts_bash_tells_a_syntax_error_from_a_failing_command() {
        let said = syntax_error(")").expect("`)` is not valid syntax");
        assert!(said.contains("unexpected token"), "{said}");
        assert_eq!(syntax_error("echo ok; exit 2"), None);
    }
}
