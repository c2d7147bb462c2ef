//! What the run is doing right now: the nested steps and the wait in progress. Shared (`Send`) so a
//! terminal status line can show it from another thread, and quoted when a run is interrupted.

use crate::record::Recorder;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The stack of steps in progress (subtests, waits, commands), outermost first.
#[derive(Clone, Default)]
pub struct Activity {
    frames: Arc<Mutex<Vec<Frame>>>,
    /// Keeps every step, for reports.
    recorder: Recorder,
}

struct Frame {
    what: String,
    since: Instant,
}

/// Ends its step when dropped, and every step entered after it.
#[must_use = "the step ends when the guard is dropped"]
pub struct Step {
    activity: Activity,
    depth: usize,
    what: String,
    since: Instant,
    /// The step's index in the record.
    recorded: usize,
}

impl Activity {
    fn frames(&self) -> MutexGuard<'_, Vec<Frame>> {
        // A panic while the lock is held leaves the frames consistent: each push and truncate is whole.
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters a step that lasts as long as the returned guard, which logs its duration at the end.
    pub(crate) fn enter(&self, what: String) -> Step {
        self.enter_on(None, what)
    }

    /// Enters a step acting on `machine`.
    pub(crate) fn enter_on(&self, machine: Option<&str>, what: String) -> Step {
        let since = Instant::now();
        let mut frames = self.frames();
        frames.push(Frame {
            what: what.clone(),
            since,
        });
        let depth = frames.len() - 1;
        drop(frames);
        let recorded = self.recorder.begin_step(&what, machine, depth, since);
        Step {
            activity: self.clone(),
            depth,
            what,
            since,
            recorded,
        }
    }

    pub(crate) fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// How many steps are in progress (a log indents its lines by it).
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// let indent = "  ".repeat(driver.activity().depth());
    /// # }
    /// ```
    pub fn depth(&self) -> usize {
        self.frames().len()
    }

    /// The innermost step and how long it has lasted.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// if let Some((what, since)) = driver.activity().innermost() {
    ///     eprintln!("{what} ({:.0} s)", since.as_secs_f64());
    /// }
    /// # }
    /// ```
    pub fn innermost(&self) -> Option<(String, Duration)> {
        self.frames()
            .last()
            .map(|f| (f.what.clone(), f.since.elapsed()))
    }

    /// All steps in progress, outermost first, each with how long it has lasted; empty when idle.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// println!("now: {}", driver.activity().describe());
    /// # }
    /// ```
    pub fn describe(&self) -> String {
        self.frames()
            .iter()
            .map(|f| format!("{} ({:.1} s)", f.what, f.since.elapsed().as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" > ")
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.activity.frames().truncate(self.depth);
        self.activity.recorder.end_step(self.recorded);
        // Logged after the step ended, so it lines up with the line that began it.
        log::info!(
            target: STEP_END,
            "(finished: {}, in {:.2} seconds)",
            self.what,
            self.since.elapsed().as_secs_f64()
        );
    }
}

/// The log target of the line that ends a step, so a log can dim or drop it.
pub const STEP_END: &str = "vmtd::step_end";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_nest_and_end_with_their_guards() {
        let a = Activity::default();
        assert_eq!(a.describe(), "");
        let outer = a.enter("subtest: x".into());
        {
            let _inner = a.enter("vm: waiting for unit y".into());
            assert!(a.describe().starts_with("subtest: x ("));
            assert!(a.describe().contains(" > vm: waiting for unit y ("));
            assert_eq!(a.innermost().unwrap().0, "vm: waiting for unit y");
        }
        assert_eq!(a.innermost().unwrap().0, "subtest: x");
        drop(outer);
        assert!(a.innermost().is_none());
    }

    #[test]
    fn dropping_an_outer_step_ends_the_inner_ones_left_behind() {
        let a = Activity::default();
        let outer = a.enter("outer".into());
        let inner = a.enter("inner".into());
        drop(outer);
        assert!(a.innermost().is_none());
        drop(inner);
        assert!(a.innermost().is_none());
    }
}
