//! Polling conditions (NixOS's `polling_condition`): checks that must keep holding while a part of
//! the test runs, run before that part's guest commands, at most once per interval.

use crate::core::Core;
use crate::machine::{Driver, Machine};
use crate::Error;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a check returns: `Err` says why the condition does not hold.
pub type CheckResult = Result<(), Box<dyn std::error::Error>>;

/// A check with its lifetime erased (see [`Driver::with_polling_condition`] for why that is sound).
type ErasedCheck = *mut (dyn FnMut() -> CheckResult + 'static);

struct Condition {
    name: String,
    interval: Duration,
    last: Option<Instant>,
    check: ErasedCheck,
}

/// The conditions in force, innermost last.
#[derive(Default)]
struct Conditions {
    active: Vec<Condition>,
    /// A check is running: its own commands are not checked again.
    checking: bool,
}

impl Driver {
    /// Runs `body` while `check` must keep holding: before each guest command `body` sends (on any
    /// machine), at most once per `interval`, and once at the start, `check` runs; if it fails, the
    /// command fails with [`Error::PollingConditionFailed`] naming `name`. Commands the check itself
    /// sends are not checked.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver, server: &driver::Machine, client: &driver::Machine) -> Result<(), driver::Error> {
    /// driver.with_polling_condition(
    ///     "the server stays up",
    ///     std::time::Duration::from_secs(2),
    ///     || { server.succeed("systemctl is-active nginx")?; Ok(()) },
    ///     || client.succeed("curl -f http://server/").map(drop),
    /// )?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_polling_condition<T>(
        &self,
        name: &str,
        interval: Duration,
        mut check: impl FnMut() -> CheckResult,
        body: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let check: &mut dyn FnMut() -> CheckResult = &mut check;
        // SAFETY: only the lifetime is erased. The pointer is removed from the list by `_pop`
        // before `check` goes out of scope (also when `body` panics), it is called only on this
        // thread while `body` runs (this frame does not touch `check` meanwhile), and never while
        // a check is already running, so no two `&mut` to it exist at once.
        let check: ErasedCheck = unsafe {
            std::mem::transmute::<*mut (dyn FnMut() -> CheckResult + '_), ErasedCheck>(check)
        };
        self.core
            .borrow_mut()
            .ext
            .get::<Conditions>()
            .active
            .push(Condition {
                name: name.to_string(),
                interval,
                last: None,
                check,
            });
        let _pop = Pop(self.core.clone());
        check_polling_conditions(&self.core)?;
        body()
    }
}

/// Removes the innermost condition when its `with_polling_condition` ends, however it ends.
struct Pop(Rc<RefCell<Core>>);

impl Drop for Pop {
    fn drop(&mut self) {
        if let Ok(mut core) = self.0.try_borrow_mut() {
            core.ext.get::<Conditions>().active.pop();
        }
    }
}

/// Clears `checking` when a check ends, however it ends.
struct Checking(Rc<RefCell<Core>>);

impl Drop for Checking {
    fn drop(&mut self) {
        if let Ok(mut core) = self.0.try_borrow_mut() {
            core.ext.get::<Conditions>().checking = false;
        }
    }
}

/// Runs the checks that are due; called before every guest command.
/// The hook run before each guest command ([`crate::machine::Hooks::before_command`]).
pub(crate) fn before_command(m: &Machine) -> Result<(), Error> {
    check_polling_conditions(&m.core)
}

pub(crate) fn check_polling_conditions(core: &Rc<RefCell<Core>>) -> Result<(), Error> {
    let due: Vec<(String, ErasedCheck)> = {
        let mut core = core.borrow_mut();
        let conditions = core.ext.get::<Conditions>();
        if conditions.checking || conditions.active.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        conditions
            .active
            .iter_mut()
            .filter(|c| c.last.is_none_or(|t| now.duration_since(t) >= c.interval))
            .map(|c| {
                c.last = Some(now);
                (c.name.clone(), c.check)
            })
            .collect()
    };
    for (name, check) in due {
        core.borrow_mut().ext.get::<Conditions>().checking = true;
        let _done = Checking(core.clone());
        log::debug!("checking polling condition {name}");
        // SAFETY: see `with_polling_condition`: the closure is alive while its condition is listed,
        // and `checking` keeps this call from being re-entered.
        let result = unsafe { (*check)() };
        if let Err(e) = result {
            return Err(Error::PollingConditionFailed {
                name,
                reason: e.to_string(),
            });
        }
    }
    Ok(())
}
