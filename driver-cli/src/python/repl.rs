//! `--interactive` with a Python test script: a Python REPL over the script's globals, as NixOS's
//! driver opens one (it embeds ptpython; this is the REPL loop the Rhai one uses, with Python's
//! own `codeop` telling whole input from input that reads on). `test_script()` runs the script
//! (a global of every Python run).

use super::interrupts::Watch;
use super::Script;
use crate::output::Output;
use crate::repl::{session, Entered, Language};
use driver::Driver;
use pyo3::exceptions::PySystemExit;
use pyo3::prelude::*;
use std::time::Instant;

/// Python's prompts; its history is kept apart from Rhai's.
const PYTHON: Language = Language {
    prompt: ">>> ",
    more: "... ",
    history: "history.py",
};

impl Script {
    /// Reads, runs and prints Python until end of input (Ctrl-D) or `exit()`; `deadline` is the
    /// global timeout's.
    pub fn interact(
        self,
        driver: &Driver,
        deadline: Option<Instant>,
        out: &Output,
    ) -> anyhow::Result<()> {
        Python::attach(|py| {
            let globals = self.globals.bind(py);
            let compile = py.import("codeop")?.getattr("compile_command")?;
            let exec = py.import("builtins")?.getattr("exec")?;
            let handler = py.import("test_driver")?.getattr("_on_interrupt")?;
            session(driver, out, &PYTHON, |input| {
                let entered = match compile.call1((input, "<repl>", "single")) {
                    // An open block: read on, as Python's own REPL does.
                    Ok(code) if code.is_none() => return Entered::More,
                    Ok(code) => {
                        // A watch per input: one that outlived an interrupt would trip again.
                        let ran = Watch::start(py, &handler, deadline).and_then(|watch| {
                            let ran = exec.call1((code, globals));
                            drop(watch);
                            ran
                        });
                        match ran {
                            Ok(_) => Entered::Ran,
                            Err(e) if e.is_instance_of::<PySystemExit>(py) => Entered::Leave,
                            Err(e) => {
                                e.display(py);
                                Entered::Ran
                            }
                        }
                    }
                    Err(e) => {
                        e.display(py);
                        Entered::Ran
                    }
                };
                flush(py);
                entered
            })
        })
    }
}

/// Writes out what Python buffered, so it shows before the driver's next lines and prompt.
fn flush(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for stream in ["stdout", "stderr"] {
            let _ = sys.getattr(stream).and_then(|s| s.call_method0("flush"));
        }
    }
}
