//! Python's `Machine`: NixOS's methods, with their signatures, keyword arguments and return
//! values, each a call into `driver::Machine` with the GIL released.

use super::calls::call;
use super::errors::driver_error;
use driver::Machine;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Seconds as a timeout; what is not a non-negative number counts as none given.
fn secs(t: Option<f64>) -> Option<Duration> {
    t.and_then(|t| Duration::try_from_secs_f64(t).ok())
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
    out_dir: PathBuf,
}

impl PyMachine {
    /// `m` for Python; `copy_from_vm` writes under `out_dir`.
    pub fn new(m: Machine, out_dir: PathBuf) -> Self {
        PyMachine { m, out_dir }
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

    fn send_monitor_command(&self, py: Python<'_>, command: &str) -> PyResult<String> {
        call(py, || self.m.send_monitor_command(command))
    }

    #[pyo3(signature = (host_port=8080, guest_port=80))]
    fn forward_port(&self, py: Python<'_>, host_port: u16, guest_port: u16) -> PyResult<()> {
        call(py, || self.m.forward_port(host_port, guest_port))
    }

    /// Sleeps `secs` in the guest's time (NixOS runs `sleep` in the guest).
    fn sleep(&self, py: Python<'_>, secs: f64) -> PyResult<()> {
        call(py, || self.m.sleep(secs))
    }

    // Commands.

    #[pyo3(signature = (*commands, timeout=None))]
    fn succeed(
        &self,
        py: Python<'_>,
        commands: Vec<String>,
        timeout: Option<f64>,
    ) -> PyResult<String> {
        let Some(t) = secs(timeout) else {
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
        timeout: Option<f64>,
    ) -> PyResult<String> {
        let Some(t) = secs(timeout) else {
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
    /// accepts that the command takes the machine down), `check_output=False` `(-2, "")`.
    #[pyo3(signature = (command, check_return=true, check_output=true, timeout=Some(900.0)))]
    fn execute(
        &self,
        py: Python<'_>,
        command: &str,
        check_return: bool,
        check_output: bool,
        timeout: Option<f64>,
    ) -> PyResult<(i32, String)> {
        let got = call(py, || match secs(timeout) {
            Some(t) => self.m.execute_within(command, t),
            None => self.m.execute(command),
        });
        let gone = |e: &PyErr| {
            py.import("test_driver.errors")
                .and_then(|m| m.getattr("MachineError"))
                .is_ok_and(|c| e.value(py).is_instance(&c).unwrap_or(false))
        };
        match (check_return, check_output, got) {
            (_, false, Ok(_)) => Ok((-2, String::new())),
            (false, _, Ok((_, out))) => Ok((-1, out)),
            (true, true, Ok(got)) => Ok(got),
            (false, true, Err(e)) if gone(&e) => Ok((-1, String::new())),
            (_, false, Err(e)) if gone(&e) => Ok((-2, String::new())),
            (_, _, Err(e)) => Err(e),
        }
    }

    #[pyo3(signature = (command, timeout=900.0))]
    fn wait_until_succeeds(&self, py: Python<'_>, command: &str, timeout: f64) -> PyResult<String> {
        call(py, || {
            self.m.wait_until_succeeds(command, secs(Some(timeout)))
        })
    }

    #[pyo3(signature = (command, timeout=900.0))]
    fn wait_until_fails(&self, py: Python<'_>, command: &str, timeout: f64) -> PyResult<String> {
        call(py, || self.m.wait_until_fails(command, secs(Some(timeout))))
    }

    // systemd.

    #[pyo3(signature = (q, user=None))]
    fn systemctl(&self, py: Python<'_>, q: &str, user: Option<&str>) -> PyResult<(i32, String)> {
        call(py, || match user {
            Some(u) => self.m.systemctl_as(q, u),
            None => self.m.systemctl(q),
        })
    }

    #[pyo3(signature = (unit, user=None, timeout=900.0))]
    fn wait_for_unit(
        &self,
        py: Python<'_>,
        unit: &str,
        user: Option<&str>,
        timeout: f64,
    ) -> PyResult<()> {
        let t = secs(Some(timeout));
        call(py, || match user {
            Some(u) => self.m.wait_for_user_unit(unit, u, t),
            None => self.m.wait_for_unit(unit, t),
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

    #[pyo3(signature = (unit, require_state="active"))]
    fn require_unit_state(&self, py: Python<'_>, unit: &str, require_state: &str) -> PyResult<()> {
        call(py, || self.m.require_unit_state(unit, require_state))
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

    #[pyo3(signature = (filename, timeout=900.0))]
    fn wait_for_file(&self, py: Python<'_>, filename: &str, timeout: f64) -> PyResult<()> {
        call(py, || self.m.wait_for_file(filename, secs(Some(timeout))))
    }

    #[pyo3(signature = (port, addr="localhost", timeout=900.0))]
    fn wait_for_open_port(
        &self,
        py: Python<'_>,
        port: u16,
        addr: &str,
        timeout: f64,
    ) -> PyResult<()> {
        call(py, || {
            self.m
                .wait_for_open_port(port, Some(addr), secs(Some(timeout)))
        })
    }

    #[pyo3(signature = (port, addr="localhost", timeout=900.0))]
    fn wait_for_closed_port(
        &self,
        py: Python<'_>,
        port: u16,
        addr: &str,
        timeout: f64,
    ) -> PyResult<()> {
        call(py, || {
            self.m
                .wait_for_closed_port(port, Some(addr), secs(Some(timeout)))
        })
    }

    #[pyo3(signature = (addr, is_datagram=false, timeout=900.0))]
    fn wait_for_open_unix_socket(
        &self,
        py: Python<'_>,
        addr: &str,
        is_datagram: bool,
        timeout: f64,
    ) -> PyResult<()> {
        call(py, || {
            self.m
                .wait_for_open_unix_socket(addr, is_datagram, secs(Some(timeout)))
        })
    }

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

    /// NixOS's `copy_from_vm(source, target_dir="")`: the file into the output directory's
    /// `target_dir`, under its own name.
    #[pyo3(signature = (source, target_dir=""))]
    fn copy_from_vm(&self, py: Python<'_>, source: &str, target_dir: &str) -> PyResult<()> {
        let bytes = call(py, || self.m.copy_from_vm(source))?;
        let name = Path::new(source).file_name().unwrap_or_default();
        let dir = self.out_dir.join(target_dir);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(name), bytes))
            .map_err(|e| {
                pyo3::exceptions::PyOSError::new_err(format!(
                    "copy_from_vm: cannot write {source} into {}: {e}",
                    dir.display()
                ))
            })
    }

    // Consoles, terminals, keys, screen.

    #[pyo3(signature = (regex, timeout=None))]
    fn wait_for_console_text(
        &self,
        py: Python<'_>,
        regex: &str,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        call(py, || self.m.wait_for_console_text(regex, secs(timeout))).map(drop)
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

    #[pyo3(signature = (tty, regexp, timeout=900.0))]
    fn wait_until_tty_matches(
        &self,
        py: Python<'_>,
        tty: &Bound<'_, PyAny>,
        regexp: &str,
        timeout: f64,
    ) -> PyResult<()> {
        let n = tty_number(tty)?;
        call(py, || {
            self.m
                .wait_until_tty_matches(n, regexp, secs(Some(timeout)))
        })
    }

    fn dump_tty_contents(&self, py: Python<'_>, tty: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = tty_number(tty)?;
        call(py, || self.m.dump_tty_contents(n))
    }

    /// NixOS's `send_key`; the driver paces keys itself, so `delay` and `log` change nothing.
    #[pyo3(signature = (key, delay=Some(0.01), log=true))]
    fn send_key(&self, py: Python<'_>, key: &str, delay: Option<f64>, log: bool) -> PyResult<()> {
        let _ = (delay, log);
        call(py, || self.m.send_key(key))
    }

    #[pyo3(signature = (chars, delay=Some(0.01)))]
    fn send_chars(&self, py: Python<'_>, chars: &str, delay: Option<f64>) -> PyResult<()> {
        call(py, || self.m.send_chars(chars, secs(delay)))
    }

    fn get_screen_text(&self, py: Python<'_>) -> PyResult<String> {
        call(py, || self.m.get_screen_text())
    }

    fn get_screen_text_variants(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        call(py, || self.m.get_screen_text_variants())
    }

    #[pyo3(signature = (regex, timeout=900.0))]
    fn wait_for_text(&self, py: Python<'_>, regex: &str, timeout: f64) -> PyResult<()> {
        call(py, || self.m.wait_for_text(regex, secs(Some(timeout))))
    }

    fn screenshot(&self, py: Python<'_>, filename: &str) -> PyResult<()> {
        call(py, || self.m.screenshot(filename)).map(drop)
    }

    #[pyo3(signature = (timeout=900.0))]
    fn wait_for_x(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        call(py, || self.m.wait_for_x(secs(Some(timeout))))
    }

    fn get_window_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        call(py, || self.m.get_window_names())
    }

    #[pyo3(signature = (regexp, timeout=900.0))]
    fn wait_for_window(&self, py: Python<'_>, regexp: &str, timeout: f64) -> PyResult<()> {
        call(py, || self.m.wait_for_window(regexp, secs(Some(timeout))))
    }
}
