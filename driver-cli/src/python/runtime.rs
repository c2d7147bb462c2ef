//! `_vmtd.runtime`: the driver's global functions as the prelude calls them (`start_all`,
//! `join_all`, the log, subtests recorded for JUnit and the report, `create_machine`, polling
//! conditions, VLANs).

use super::calls::{call, unlocked};
use super::duration::Secs;
use super::errors::{describe, locate, subtest_failure};
use super::machine::{MachineEnv, PyMachine};
use crate::output::Output;
use crate::script::Case;
use driver::{Driver, PollingGuard, StartCommand, Step};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A subtest that has begun.
struct Open {
    name: String,
    t0: Instant,
    mark: usize,
    /// The subtest's step in the report's timeline; ends when dropped.
    step: Step,
}

/// A polling condition in force while Python holds it (`with condition:`), ended by `close`.
#[pyclass(unsendable, module = "_vmtd")]
pub struct PyPollingGuard(Option<PollingGuard>);

#[pymethods]
impl PyPollingGuard {
    /// Ends the condition (again is harmless).
    fn close(&mut self) {
        self.0.take();
    }
}

/// The driver behind a script's globals (one thread: an `unsendable` class).
#[pyclass(unsendable, module = "_vmtd")]
pub struct Runtime {
    driver: Driver,
    env: MachineEnv,
    script: String,
    out: &'static Output,
    open: Vec<Open>,
    done: Vec<Case>,
}

impl Runtime {
    /// The runtime of the script shown as `script`, on `env`'s driver.
    pub fn new(env: MachineEnv, script: String, out: &'static Output) -> Self {
        Runtime {
            driver: env.driver.clone(),
            env,
            script,
            out,
            open: Vec::new(),
            done: Vec::new(),
        }
    }

    /// The subtests that ended, in the order they ended.
    pub fn take_cases(&mut self) -> Vec<Case> {
        std::mem::take(&mut self.done)
    }
}

#[pymethods]
impl Runtime {
    /// NixOS's `start_all()`.
    fn start_all(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.driver.start_all())
    }

    /// NixOS's `join_all()`.
    fn join_all(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.driver.join_all())
    }

    /// A line in the log, at `level` (`debug`, `info`, `warning`, `error`).
    #[pyo3(signature = (message, level="info"))]
    fn log(&self, message: &str, level: &str) {
        match level {
            "debug" => log::debug!("{message}"),
            "warning" => log::warn!("{message}"),
            "error" => log::error!("{message}"),
            _ => self.driver.log(message),
        }
    }

    /// Serves the machines for `seconds` (a `retry`'s pause); an interrupt ends it.
    fn sleep(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let d = Duration::try_from_secs_f64(seconds).unwrap_or_default();
        call(py, || self.driver.sleep(d))
    }

    /// A duration argument (a `timedelta`, or seconds) in seconds, refused as NixOS refuses one.
    fn seconds(&self, duration: Secs) -> f64 {
        duration.0
    }

    /// Raises `Interrupted` when the run must stop.
    fn check_interrupts(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.driver.check_interrupts())
    }

    fn serial_stdout_on(&self) {
        self.driver.serial_stdout_on();
    }

    fn serial_stdout_off(&self) {
        self.driver.serial_stdout_off();
    }

    /// The run's timeout factor (1 under KVM, 5 under TCG unless given).
    #[getter]
    fn timeout_factor(&self) -> f64 {
        self.driver.timeout_factor()
    }

    /// Where the run's files go (NixOS's `driver.out_dir`).
    #[getter]
    fn out_dir(&self) -> PathBuf {
        self.env.out_dir.clone()
    }

    /// Whether OCR may run (`--enable-ocr`, NixOS's `enableOCR`).
    #[getter]
    fn ocr_enabled(&self) -> bool {
        self.env.ocr
    }

    /// The running VLAN switches: `(number, socket directory, pid)`, by number.
    fn vlans(&self) -> Vec<(u32, PathBuf, i32)> {
        let all = self.driver.vlans();
        all.into_iter()
            .map(|v| (v.number, v.socket_dir, v.pid))
            .collect()
    }

    /// Puts a polling condition in force until the guard's `close`: before guest commands, at
    /// most once per `interval` seconds, the driver calls `check` (a Python callable returning
    /// whether the condition holds; the prelude turns its exceptions into `False`), and a command
    /// after a failed check fails with NixOS's "Polling condition failed: {description}".
    fn polling_enter(
        &self,
        description: &str,
        interval: f64,
        check: Py<PyAny>,
    ) -> PyResult<PyPollingGuard> {
        let interval = Duration::try_from_secs_f64(interval).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "seconds_interval must be a non-negative number of seconds, not {interval}"
            ))
        })?;
        // The driver calls this with the GIL released (inside a guest command): take it back.
        let run = move || -> driver::CheckResult {
            Python::attach(|py| match check.call0(py) {
                Ok(v) if v.bind(py).is_truthy().unwrap_or(false) => Ok(()),
                Ok(_) => Err("the condition does not hold".into()),
                Err(e) => Err(describe(py, &e).into()),
            })
        };
        let guard = self
            .driver
            .enter_polling_condition(description, interval, run);
        Ok(PyPollingGuard(Some(guard)))
    }

    /// vm-test-driver's `partition(group, group, …)`: each group of machines cut off from the
    /// others on every VLAN until `heal()`.
    #[pyo3(signature = (*groups))]
    fn partition(&self, py: Python<'_>, groups: Vec<Vec<PyRef<'_, PyMachine>>>) -> PyResult<()> {
        let groups: Vec<Vec<driver::Machine>> = groups
            .iter()
            .map(|g| g.iter().map(|m| m.machine().clone()).collect())
            .collect();
        let refs: Vec<Vec<&driver::Machine>> = groups.iter().map(|g| g.iter().collect()).collect();
        let slices: Vec<&[&driver::Machine]> = refs.iter().map(|g| g.as_slice()).collect();
        call(py, || self.driver.partition(&slices))
    }

    /// vm-test-driver's `heal()`: every link back as it was before `partition`.
    fn heal(&self, py: Python<'_>) -> PyResult<()> {
        call(py, || self.driver.heal())
    }

    /// vm-test-driver's `set_link_quality(vlan, machine, delay_ms, jitter_ms=0, loss_percent=0)`:
    /// what `machine` sends on `vlan` is delayed and dropped so.
    #[pyo3(signature = (vlan, machine, delay_ms, jitter_ms=0.0, loss_percent=0.0))]
    fn set_link_quality(
        &self,
        py: Python<'_>,
        vlan: u32,
        machine: PyRef<'_, PyMachine>,
        delay_ms: f64,
        jitter_ms: f64,
        loss_percent: f64,
    ) -> PyResult<()> {
        let ms = |v: f64, what: &str| match v.is_finite() && v >= 0.0 {
            true => Ok(Duration::from_secs_f64(v / 1000.0)),
            false => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "set_link_quality: {what} must be a number of milliseconds ≥ 0, not {v}"
            ))),
        };
        let quality = driver::LinkQuality {
            delay: ms(delay_ms, "delay_ms")?,
            jitter: ms(jitter_ms, "jitter_ms")?,
            loss_pct: loss_percent,
        };
        let m = machine.machine().clone();
        call(py, || self.driver.set_link_quality(vlan, &m, quality))
    }

    /// NixOS's `create_machine(start_command, *, name=None)`: a machine of a start script, not
    /// started until used.
    #[pyo3(signature = (start_command, name=None))]
    fn create_machine(
        &self,
        py: Python<'_>,
        start_command: PathBuf,
        name: Option<&str>,
    ) -> PyResult<PyMachine> {
        let start = StartCommand::Script(start_command);
        let m = unlocked(py, || match name {
            Some(name) => self.driver.add_named_machine(name, start),
            None => self.driver.add_machine(start),
        });
        m.map(|m| PyMachine::new(m, self.env.clone()))
            .map_err(|e| super::errors::driver_error(py, e))
    }

    /// A subtest begins: a step of the report's timeline (logged), and timed for JUnit.
    fn subtest_enter(&mut self, name: String) {
        let mark = self.out.mark();
        let step = self.driver.enter_step(&format!("subtest: {name}"));
        self.open.push(Open {
            name,
            t0: Instant::now(),
            mark,
            step,
        });
    }

    /// The innermost subtest ends, failed with `error` (an exception) or not.
    #[pyo3(signature = (error=None))]
    fn subtest_exit(&mut self, py: Python<'_>, error: Option<Bound<'_, PyAny>>) {
        let names: Vec<&str> = self.open.iter().map(|o| o.name.as_str()).collect();
        let full = names.join(" > ");
        let Some(open) = self.open.pop() else { return };
        let failure = error.map(|e| {
            let e = subtest_failure(py, PyErr::from_value(e));
            let what = format!("subtest {:?} failed: ", open.name);
            locate(py, &e, &self.script, &what)
        });
        let time = open.t0.elapsed();
        if let Some(f) = &failure {
            log::error!("{f}");
        }
        // Ends the step: its line "(finished: subtest: …, in … seconds)" follows.
        drop(open.step);
        self.done.push(Case {
            name: full,
            time,
            failure,
            output: self.out.lines_since(open.mark),
        });
    }
}
