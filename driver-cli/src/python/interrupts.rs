//! Stopping Python code that computes without calling the driver (a `while True: pass`) when
//! Ctrl-C or `--global-timeout` ends the run, as Rhai's progress hook does.
//!
//! A driver call notices an interrupt by itself. Between calls, a watcher thread sees the signal
//! or the deadline and sends the main thread a signal ([`trip`]) whose handler is a Python
//! function; CPython runs it on the main thread at its next bytecode boundary, where it asks the
//! driver whether the run must stop and raises `Interrupted` if so. The watcher touches neither
//! the driver nor a Python object, and the script pays nothing while it runs (no trace function).
//!
//! (`Py_AddPendingCall` or `PyErr_SetInterruptEx` from the watcher would be simpler, but CPython
//! 3.11 only wakes the bytecode loop for them when they are called on the main thread: a signal
//! sent to the main thread is how to get there.)

use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the watcher looks at the flags.
const TICK: Duration = Duration::from_millis(100);
/// How often a script that keeps running after an interrupt (it caught `BaseException`) is
/// interrupted again.
const AGAIN: Duration = Duration::from_secs(1);

/// The signal the watcher sends the main thread: the last real-time signal, which nothing else
/// here uses.
fn trip() -> i32 {
    libc::SIGRTMAX()
}

/// Watches for interrupts while it lives.
pub struct Watch {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    hooks: Vec<signal_hook::SigId>,
}

impl Watch {
    /// Installs `handler` (a Python callable that raises when the run must stop) and starts
    /// watching for the signals the driver catches and for `deadline`.
    pub fn start(
        py: Python<'_>,
        handler: &Bound<'_, PyAny>,
        deadline: Option<Instant>,
    ) -> PyResult<Watch> {
        py.import("signal")?
            .call_method1("signal", (trip(), handler))?;
        let done = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let hooks = [SIGINT, SIGTERM, SIGHUP]
            .into_iter()
            .filter_map(|sig| {
                signal_hook::flag::register_usize(sig, signal.clone(), sig as usize).ok()
            })
            .collect();
        let flag = done.clone();
        // SAFETY: pthread_self has no preconditions; the id is only used for pthread_kill while
        // this thread lives (the watcher is joined before `start`'s caller returns from the run).
        let main = unsafe { libc::pthread_self() };
        let thread = std::thread::Builder::new()
            .name("python-interrupts".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while !flag.load(Ordering::Relaxed) {
                    // Unparked when the watch ends, so ending one costs no tick.
                    std::thread::park_timeout(TICK);
                    let now = Instant::now();
                    let due =
                        signal.load(Ordering::Relaxed) != 0 || deadline.is_some_and(|d| now >= d);
                    if due && last.is_none_or(|l| now - l >= AGAIN) {
                        last = Some(now);
                        // SAFETY: `main` is the live thread that runs Python (see above).
                        unsafe { libc::pthread_kill(main, trip()) };
                    }
                }
            })
            .ok();
        Ok(Watch {
            done,
            thread,
            hooks,
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        for id in self.hooks.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
