//! Durations as NixOS's driver takes them: a `datetime.timedelta` (what today's nixpkgs asks
//! for), or a bare number of seconds (what older scripts pass, still accepted there).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBool;
use std::time::Duration;

/// A duration argument (`timeout=`, `attempt_timeout=`, `delay=`, …) in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Secs(pub f64);

impl Secs {
    /// As a `Duration`; a negative or not finite number is none (a wait then takes its default).
    pub fn duration(self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.0).ok()
    }
}

/// `Some(duration)` of an optional argument, as [`Secs::duration`].
pub fn duration(t: Option<Secs>) -> Option<Duration> {
    t.and_then(Secs::duration)
}

impl<'a, 'py> FromPyObject<'a, 'py> for Secs {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        // NixOS's words: a bool is an int to Python, and a likely slip (`timeout=True`).
        if obj.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(format!(
                "expected a duration, got bool: {}",
                obj.repr()?
            )));
        }
        if let Ok(seconds) = obj.extract::<f64>() {
            return Ok(Secs(seconds));
        }
        let is_timedelta = obj
            .py()
            .import("datetime")?
            .getattr("timedelta")
            .and_then(|class| obj.is_instance(&class))?;
        if is_timedelta {
            return Ok(Secs(obj.call_method0("total_seconds")?.extract()?));
        }
        Err(PyTypeError::new_err(format!(
            "expected a timedelta, int, or float duration, got {}",
            obj.get_type().name()?
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::Secs;
    use pyo3::prelude::*;

    fn extract(py: Python<'_>, expr: &str) -> PyResult<Secs> {
        let code = std::ffi::CString::new(expr).unwrap();
        let value = py.eval(&code, None, None)?;
        value.extract::<Secs>()
    }

    #[test]
    fn takes_timedeltas_and_numbers_of_seconds_and_names_what_it_refuses() {
        Python::initialize();
        Python::attach(|py| {
            py.import("datetime").unwrap();
            let s = |e: &str| extract(py, e).map(|s| s.0);
            assert_eq!(s("10").unwrap(), 10.0);
            assert_eq!(s("0.25").unwrap(), 0.25);
            assert_eq!(
                s("__import__('datetime').timedelta(minutes=2, milliseconds=500)").unwrap(),
                120.5
            );
            let err = |e: &str| extract(py, e).unwrap_err().to_string();
            assert_eq!(
                err("True"),
                "TypeError: expected a duration, got bool: True"
            );
            assert_eq!(
                err("'10'"),
                "TypeError: expected a timedelta, int, or float duration, got str"
            );
            assert_eq!(Secs(-1.0).duration(), None);
            assert_eq!(
                Secs(1.5).duration(),
                Some(std::time::Duration::from_millis(1500))
            );
        });
    }
}
