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

/// A check the driver owns (see [`Driver::enter_polling_condition`]).
type OwnedCheck = Rc<RefCell<dyn FnMut() -> CheckResult>>;

/// A condition's check: borrowed for the span of a call, or owned until its guard drops.
#[derive(Clone)]
enum Check {
    Scoped(ErasedCheck),
    Owned(OwnedCheck),
}

struct Condition {
    /// Tells the conditions apart, so a guard removes its own whatever the order they end in.
    id: u64,
    name: String,
    interval: Duration,
    last: Option<Instant>,
    check: Check,
}

/// The conditions in force, innermost last.
#[derive(Default)]
struct Conditions {
    active: Vec<Condition>,
    /// The id of the next condition.
    next_id: u64,
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
        let _pop = self.push_condition(name, interval, Check::Scoped(check));
        check_polling_conditions(&self.core)?;
        body()
    }

    /// Puts `check` in force until the returned guard is dropped: [`with_polling_condition`] for a
    /// front end whose block cannot be a closure (Python's `with condition:`). Unlike it, nothing
    /// is checked on entry: the first check comes before the next guest command, as in NixOS.
    ///
    /// [`with_polling_condition`]: Driver::with_polling_condition
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver, server: driver::Machine, client: &driver::Machine) -> Result<(), driver::Error> {
    /// let guard = driver.enter_polling_condition(
    ///     "the server stays up",
    ///     std::time::Duration::from_secs(2),
    ///     move || { server.succeed("systemctl is-active nginx")?; Ok(()) },
    /// );
    /// client.succeed("curl -f http://server/")?;
    /// drop(guard);
    /// # Ok(())
    /// # }
    /// ```
    pub fn enter_polling_condition(
        &self,
        name: &str,
        interval: Duration,
        check: impl FnMut() -> CheckResult + 'static,
    ) -> PollingGuard {
        let check: OwnedCheck = Rc::new(RefCell::new(check));
        self.push_condition(name, interval, Check::Owned(check))
    }

    /// Lists a condition; the guard removes it.
    fn push_condition(&self, name: &str, interval: Duration, check: Check) -> PollingGuard {
        let mut core = self.core.borrow_mut();
        let conditions = core.ext.get::<Conditions>();
        let id = conditions.next_id;
        conditions.next_id += 1;
        conditions.active.push(Condition {
            id,
            name: name.to_string(),
            interval,
            last: None,
            check,
        });
        PollingGuard {
            core: self.core.clone(),
            id,
        }
    }
}

/// A polling condition in force: dropping it ends the condition, however the block it guards ends.
#[must_use = "the condition ends when the guard is dropped"]
pub struct PollingGuard {
    core: Rc<RefCell<Core>>,
    id: u64,
}

impl Drop for PollingGuard {
    fn drop(&mut self) {
        if let Ok(mut core) = self.core.try_borrow_mut() {
            let id = self.id;
            core.ext.get::<Conditions>().active.retain(|c| c.id != id);
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

/// The hook run before each guest command ([`crate::machine::Hooks::before_command`]).
pub(crate) fn before_command(m: &Machine) -> Result<(), Error> {
    check_polling_conditions(&m.core)
}

pub(crate) fn check_polling_conditions(core: &Rc<RefCell<Core>>) -> Result<(), Error> {
    let due: Vec<(String, Check)> = {
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
                (c.name.clone(), c.check.clone())
            })
            .collect()
    };
    for (name, check) in due {
        core.borrow_mut().ext.get::<Conditions>().checking = true;
        let _done = Checking(core.clone());
        log::debug!("checking polling condition {name}");
        let result = match check {
            // SAFETY: see `with_polling_condition`: the closure is alive while its condition is
            // listed, and `checking` keeps this call from being re-entered.
            Check::Scoped(check) => unsafe { (*check)() },
            // Held by this clone even if its guard drops meanwhile; `checking` keeps the borrow
            // unique.
            Check::Owned(check) => (check.borrow_mut())(),
        };
        if let Err(e) = result {
            return Err(Error::PollingConditionFailed {
                name,
                reason: e.to_string(),
            });
        }
    }
    Ok(())
}
