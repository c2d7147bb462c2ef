//! Calling the driver from Python: the GIL is released while the driver's loop runs, and the
//! driver's error becomes the exception NixOS's driver raises.

use super::errors::driver_error;
use pyo3::prelude::*;

/// Runs the driver call `f` with the GIL released; its error becomes a Python exception.
pub fn call<T>(py: Python<'_>, f: impl FnOnce() -> Result<T, driver::Error>) -> PyResult<T> {
    unlocked(py, f).map_err(|e| driver_error(py, e))
}

/// Runs `f` with the GIL released (PyO3's `detach`), for a driver call that serves the loop.
///
/// `detach` asks for a `Send` closure because it is written for handing work to other threads.
/// The driver's handles are `Rc`s, not `Send`, yet this is sound: `detach` runs `f` at once, on
/// this thread, and returns its result here, so nothing crosses a thread. While the GIL is
/// released another Python thread could run, but it cannot reach these `Rc`s: every driver
/// object Python holds is an `unsendable` class, which PyO3 refuses to touch from any thread but
/// the one that made it (it raises instead). `f` only ever holds driver handles and plain values,
/// never a `Python` token or a `Bound` (the callers in this module pass driver calls), so it
/// touches no Python object without the GIL; a callback the driver makes from inside `f` (a QMP
/// event filter, a polling condition) takes the GIL back with `Python::attach` first.
pub fn unlocked<T>(py: Python<'_>, f: impl FnOnce() -> T) -> T {
    /// Carries the closure, and its result back, across `detach`'s `Send` bound.
    struct SameThread<T>(T);
    // SAFETY: see above: the value never leaves this thread.
    unsafe impl<T> Send for SameThread<T> {}
    impl<F: FnOnce() -> T, T> SameThread<F> {
        fn run(self) -> SameThread<T> {
            SameThread((self.0)())
        }
    }
    let job = SameThread(f);
    py.detach(move || job.run()).0
}
