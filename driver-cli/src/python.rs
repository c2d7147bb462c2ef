//! NixOS Python test scripts (`test.py`) in an embedded CPython (PyO3), on the same driver as Rhai.
//!
//! The script sees the globals NixOS's `testScript` sees: a `Machine` per machine (`machine`
//! also, when there is one), `machines`, `start_all`, `join_all`, `subtest`, `retry`, `log`,
//! `driver`, `t`, … (`prelude.py`, Python glue over this module's `_vmtd` runtime); the
//! `Machine` methods are Rust (`machine`), each a call into the driver.
//!
//! One thread runs everything: Python calls the driver, and every call that may block releases
//! the GIL around the driver's loop ([`unlocked`]). Ctrl-C and `--global-timeout` end a driver
//! call as they do under Rhai; Python code that computes without calling the driver is stopped
//! by a pending call ([`interrupts`]) that raises `Interrupted`, which `except Exception` does
//! not catch.

mod calls;
mod duration;
mod errors;
mod interrupts;
mod machine;
mod repl;
mod runtime;

use crate::output::Output;
use crate::script::Case;
use driver::Driver;
use errors::{describe, locate, log_traceback, subtest_failure, syntax_error};
use pyo3::prelude::*;
use pyo3::types::{PyCode, PyCodeInput, PyCodeMethods, PyDict, PyList, PyModule};
use std::ffi::CString;
use std::path::Path;

pub use machine::{MachineEnv, PyMachine};
use runtime::Runtime;

/// The Python glue: `test_driver` and its modules, the script's globals.
const PRELUDE: &str = include_str!("python/prelude.py");

/// Whether `path` names a Python test script (by its `.py` suffix).
pub fn is_python(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
}

/// How a Python run ended.
pub struct Outcome {
    /// `Ok`, or the error as `file:line: Type: message`.
    pub result: Result<(), String>,
    /// The subtests, in the order they ended.
    pub cases: Vec<Case>,
    /// Whether the driver panicked (a bug in the driver, not in the script).
    pub panicked: bool,
}

/// A compiled script, ready to run against `driver`.
pub struct Script {
    code: Py<PyCode>,
    globals: Py<PyDict>,
    runtime: Py<Runtime>,
    shown: String,
}

impl Script {
    /// Starts Python, builds the globals and compiles `source`; a syntax error is
    /// `file:line:column: syntax error: message`.
    pub fn compile(
        driver: &Driver,
        shown: &Path,
        source: &str,
        out_dir: &Path,
        ocr: bool,
        out: &'static Output,
    ) -> anyhow::Result<Script> {
        Python::initialize();
        let shown_str = shown.display().to_string();
        Python::attach(|py| {
            let filename = CString::new(shown_str.clone())?;
            let text = CString::new(source).map_err(|_| {
                anyhow::anyhow!("{shown_str}: syntax error: the script holds a NUL byte")
            })?;
            let code = PyCode::compile(py, &text, &filename, PyCodeInput::File)
                .map_err(|e| syntax_error(py, &e, &shown_str))?;
            let env = MachineEnv {
                driver: driver.clone(),
                out_dir: out_dir.to_path_buf(),
                ocr,
            };
            let runtime = Py::new(py, Runtime::new(env.clone(), shown_str.clone(), out))?;
            let globals = globals(py, &env, &runtime, &shown_str)
                .and_then(|g| {
                    // NixOS's `test_script()` and `run_tests()`: the script, in its globals (what
                    // the REPL offers; NixOS gives every script the names).
                    let run = py
                        .eval(c"lambda code, g: lambda: exec(code, g)", None, None)?
                        .call1((&code, &g))?;
                    g.set_item("test_script", &run)?;
                    g.set_item("run_tests", &run)?;
                    Ok(g)
                })
                .map_err(|e| {
                    anyhow::anyhow!("cannot set up Python's globals: {}", describe(py, &e))
                })?;
            Ok(Script {
                code: code.unbind(),
                globals: globals.unbind(),
                runtime,
                shown: shown_str,
            })
        })
    }

    /// Runs the script to its end or its first uncaught exception; `deadline` is the global
    /// timeout's.
    pub fn run(self, deadline: Option<std::time::Instant>) -> Outcome {
        let (result, panicked) = Python::attach(|py| {
            let handler = py
                .import("test_driver")
                .and_then(|m| m.getattr("_on_interrupt"));
            let watch = handler.and_then(|h| interrupts::Watch::start(py, &h, deadline));
            let code = self.code.bind(py);
            let globals = self.globals.bind(py);
            let result = watch.and_then(|watch| {
                let result = code.run(Some(globals), None);
                drop(watch);
                result
            });
            match result {
                Ok(_) => (Ok(()), false),
                Err(e) => {
                    // A failed subtest leaves as SystemExit (NixOS's way), the failure inside.
                    let e = subtest_failure(py, e);
                    let panicked = e.is_instance_of::<pyo3::panic::PanicException>(py);
                    log_traceback(py, &e);
                    (Err(locate(py, &e, &self.shown, "")), panicked)
                }
            }
        });
        let cases = Python::attach(|py| self.runtime.borrow_mut(py).take_cases());
        Outcome {
            result,
            cases,
            panicked,
        }
    }
}

/// The script's globals: the prelude's `test_symbols()` over the driver's machines.
fn globals<'py>(
    py: Python<'py>,
    env: &MachineEnv,
    runtime: &Py<Runtime>,
    shown: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let sys = py.import("sys")?;
    sys.setattr("argv", [shown])?;
    let vmtd = PyModule::new(py, "_vmtd")?;
    vmtd.add_class::<PyMachine>()?;
    vmtd.add("runtime", runtime.clone_ref(py))?;
    let machines = PyList::empty(py);
    for m in env.driver.machines() {
        machines.append(Py::new(py, PyMachine::new(m, env.clone()))?)?;
    }
    vmtd.add("machines", machines)?;
    sys.getattr("modules")?.set_item("_vmtd", &vmtd)?;
    let prelude = PyModule::from_code(
        py,
        &CString::new(PRELUDE)?,
        c"<vm-test-driver prelude>",
        c"test_driver",
    )?;
    let symbols = prelude.getattr("test_symbols")?.call0()?;
    let symbols = symbols.cast_into::<PyDict>()?;
    symbols.set_item("__file__", shown)?;
    Ok(symbols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_scripts_are_chosen_by_their_suffix() {
        assert!(is_python(Path::new("t/test.py")));
        assert!(!is_python(Path::new("test.rhai")));
        assert!(!is_python(Path::new("py")));
    }
}
