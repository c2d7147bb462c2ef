//! Rhai test scripts: every machine a global named after it, `Machine` methods under their NixOS
//! names, NixOS keyword arguments as optional trailing positional arguments. This module runs
//! them: the engine with the driver's global functions, subtests, `retry`, and the globals;
//! `machine` registers the `Machine` methods, `values` converts between Rhai and the driver.

mod machine;
mod values;

use crate::output::Output;
use crate::script_error::{innermost, located};
use driver::{Driver, Machine};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Scope};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use values::{builtin_spec, err, machine_list, machines, number, secs, Res};

/// How often (in Rhai operations) a script that computes without waiting checks for interrupts.
const INTERRUPT_CHECK_OPS: u64 = 256;
/// Pauses between two tries of `retry` grow from the first to the last.
const RETRY_DELAYS: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// How one subtest went, for JUnit.
pub struct Case {
    /// Its name, nested subtests as `outer > inner`.
    pub name: String,
    /// How long it ran.
    pub time: Duration,
    /// The error it failed with.
    pub failure: Option<String>,
    /// The log lines it printed.
    pub output: String,
}

/// The subtests run so far (shared with the engine's `subtest`).
#[derive(Clone)]
pub struct Cases {
    script: Rc<std::path::Path>,
    done: Rc<RefCell<Vec<Case>>>,
    open: Rc<RefCell<Vec<String>>>,
}

impl Cases {
    /// No subtests yet, of the script at `script` (named in failures).
    pub fn new(script: &std::path::Path) -> Self {
        Cases {
            script: script.into(),
            done: Rc::default(),
            open: Rc::default(),
        }
    }

    /// Every subtest that ended, in the order they ended.
    pub fn take(&self) -> Vec<Case> {
        std::mem::take(&mut self.done.borrow_mut())
    }

    /// Runs the subtest `f`, recording it; its error says which subtest failed, at the failing line.
    fn run<T>(
        &self,
        name: &str,
        out: &Output,
        f: impl FnOnce() -> Result<T, Box<EvalAltResult>>,
    ) -> Result<T, Box<EvalAltResult>> {
        self.open.borrow_mut().push(name.to_string());
        let full = self.open.borrow().join(" > ");
        let (t0, mark) = (Instant::now(), out.mark());
        let result = f().map_err(|e| match *e {
            // An interrupt stays a termination, which the script cannot catch.
            EvalAltResult::ErrorTerminated(..) => e,
            _ => {
                let (message, at) = innermost(&e);
                EvalAltResult::ErrorRuntime(
                    format!("subtest {name:?} failed: {message}").into(),
                    at,
                )
                .into()
            }
        });
        self.open.borrow_mut().pop();
        let failure = result.as_ref().err().map(|e| located(&self.script, e));
        self.done.borrow_mut().push(Case {
            name: full,
            time: t0.elapsed(),
            failure,
            output: out.lines_since(mark),
        });
        result
    }
}

/// Set (to anything) to give scripts `driver_panic_for_tests(message)`, which panics inside the
/// driver: how the tests check that a panic still stops the machines and writes the reports.
pub const FAULT_INJECTION_ENV: &str = "VMTD_FAULT_INJECTION";

/// `partition(a, b[, c])`: each group of machines cut off from the others.
fn partition(driver: &Driver, groups: Vec<Array>) -> Res<()> {
    let groups = groups.into_iter().map(machines).collect::<Res<Vec<_>>>()?;
    let refs: Vec<Vec<&Machine>> = groups.iter().map(|g| g.iter().collect()).collect();
    let slices: Vec<&[&Machine]> = refs.iter().map(Vec::as_slice).collect();
    driver.partition(&slices).map_err(err)
}

/// NixOS's `polling_condition`: `body` runs while `check` keeps succeeding.
fn polling_condition(
    d: &Driver,
    ctx: &NativeCallContext,
    name: &str,
    interval: Duration,
    check: &FnPtr,
    body: &FnPtr,
) -> Res<Dynamic> {
    let checked = || -> driver::CheckResult {
        check
            .call_within_context::<Dynamic>(ctx, ())
            .map(drop)
            .map_err(|e| innermost(&e).0.into())
    };
    d.with_polling_condition(name, interval, checked, || {
        Ok(body.call_within_context::<Dynamic>(ctx, ()))
    })
    .map_err(err)?
}

/// The engine with the driver's API registered; subtests are recorded in `cases`.
pub fn engine(driver: &Driver, cases: &Cases, out: &'static Output) -> Engine {
    let mut e = Engine::new();
    // Stops a script that loops without calling the driver when the run is interrupted; a
    // termination, unlike an error, cannot be caught by the script's own `try`.
    let d = driver.clone();
    e.on_progress(move |ops| {
        if ops % INTERRUPT_CHECK_OPS != 0 {
            return None;
        }
        d.check_interrupts()
            .err()
            .map(|e| Dynamic::from(e.to_string()))
    });
    // Fault injection for the driver's own tests (a bug in the driver, simulated): only when asked
    // for by the environment, so no real script can depend on it.
    if std::env::var_os(FAULT_INJECTION_ENV).is_some() {
        e.register_fn("driver_panic_for_tests", |msg: &str| -> () {
            panic!("{msg}");
        });
    }
    machine::register(&mut e, driver);

    // Globals.
    let d = driver.clone();
    e.register_fn("start_all", move || d.start_all().map_err(err));
    let d = driver.clone();
    e.register_fn("log", move |msg: &str| d.log(msg));
    let d = driver.clone();
    e.register_fn(
        "nested",
        move |ctx: NativeCallContext, label: &str, f: FnPtr| -> Res<Dynamic> {
            d.nested(label, || f.call_within_context(&ctx, ()))
        },
    );
    let d = driver.clone();
    e.register_fn("sleep", move |t: Dynamic| d.sleep(secs(t)?).map_err(err));
    // Rhai's own sleep(INT) and sleep(FLOAT) match those types before a Dynamic parameter and
    // would block without serving the machines or noticing Ctrl-C: the driver's take them over.
    let d = driver.clone();
    e.register_fn("sleep", move |t: i64| {
        d.sleep(secs(Dynamic::from(t))?).map_err(err)
    });
    let d = driver.clone();
    e.register_fn("sleep", move |t: f64| {
        d.sleep(secs(Dynamic::from(t))?).map_err(err)
    });
    let d = driver.clone();
    e.register_fn("join_all", move || d.join_all().map_err(err));
    // Several machines in one loop: `wait_for_unit_on_all([a, b], "unit"[, timeout])`.
    let d = driver.clone();
    e.register_fn(
        "wait_for_unit_on_all",
        move |machines: Array, unit: &str| -> Res<()> {
            let machines = machine_list(machines)?;
            let refs: Vec<&Machine> = machines.iter().collect();
            d.wait_for_unit_on_all(&refs, unit, None).map_err(err)
        },
    );
    let d = driver.clone();
    e.register_fn(
        "wait_for_unit_on_all",
        move |machines: Array, unit: &str, t: Dynamic| -> Res<()> {
            let machines = machine_list(machines)?;
            let refs: Vec<&Machine> = machines.iter().collect();
            d.wait_for_unit_on_all(&refs, unit, Some(secs(t)?))
                .map_err(err)
        },
    );
    let d = driver.clone();
    e.register_fn("serial_stdout_off", move || d.serial_stdout_off());
    let d = driver.clone();
    e.register_fn("serial_stdout_on", move || d.serial_stdout_on());
    // A machine added while the test runs (NixOS's create_machine), named after its start script
    // `run-<name>-vm` or as given; not started until used.
    let d = driver.clone();
    e.register_fn("create_machine", move |script: &str| -> Res<Machine> {
        let start = driver::StartCommand::Script(script.into());
        d.add_machine(start).map_err(err)
    });
    let d = driver.clone();
    e.register_fn(
        "create_machine",
        move |script: &str, name: &str| -> Res<Machine> {
            let start = driver::StartCommand::Script(script.into());
            d.add_named_machine(name, start).map_err(err)
        },
    );
    // A built-in machine (the seed's createMachine({ hda, cdrom, … })), from a map of keys;
    // relative paths resolve against the driver's current directory.
    let d = driver.clone();
    e.register_fn("create_machine", move |spec: Map| -> Res<Machine> {
        let cwd = std::env::current_dir()
            .map_err(|e| format!("create_machine: cannot read the current directory: {e}"))?;
        let machine = builtin_spec(spec)?
            .finish(&cwd)
            .map_err(|e| format!("create_machine: {e}"))?;
        machine.add_to(&d).map_err(err)
    });
    let d = driver.clone();
    e.register_fn(
        "set_link_quality",
        move |vlan: i64, m: Machine, delay: Dynamic, jitter: Dynamic, loss: Dynamic| {
            let ms = |v| {
                number(v, "a delay", "milliseconds").map(|n| Duration::from_secs_f64(n / 1000.0))
            };
            let quality = driver::LinkQuality {
                delay: ms(delay)?,
                jitter: ms(jitter)?,
                loss_pct: number(loss, "a loss", "percent")?,
            };
            let vlan = u32::try_from(vlan).map_err(|_| format!("no VLAN {vlan}"))?;
            d.set_link_quality(vlan, &m, quality).map_err(err)
        },
    );
    let d = driver.clone();
    e.register_fn("partition", move |a: Array, b: Array| {
        partition(&d, vec![a, b])
    });
    let d = driver.clone();
    e.register_fn("partition", move |a: Array, b: Array, c: Array| {
        partition(&d, vec![a, b, c])
    });
    let d = driver.clone();
    e.register_fn("heal", move || d.heal().map_err(err));
    let d = driver.clone();
    e.register_fn("collect_coverage", move || d.collect_coverage());
    let d = driver.clone();
    e.register_fn("snapshot_all", move |name: &str| {
        d.snapshot_all(name).map_err(err)
    });
    // `rewind` is the REPL's word for going back after a failed experiment.
    for word in ["restore_all", "rewind"] {
        let d = driver.clone();
        e.register_fn(word, move |name: &str| d.restore_all(name).map_err(err));
    }
    let d = driver.clone();
    e.register_fn("retry", move |ctx: NativeCallContext, f: FnPtr| {
        retry(
            &d,
            &ctx,
            &f,
            driver::DEFAULT_TIMEOUT.mul_f64(d.timeout_factor()),
        )
    });
    let d = driver.clone();
    e.register_fn(
        "retry",
        move |ctx: NativeCallContext, f: FnPtr, t: Dynamic| {
            retry(&d, &ctx, &f, secs(t)?.mul_f64(d.timeout_factor()))
        },
    );
    // NixOS's polling_condition: `polling_condition(name[, interval], check, body)` runs body while
    // check must hold, checked before body's guest commands, at most every interval (2 s).
    let d = driver.clone();
    e.register_fn(
        "polling_condition",
        move |ctx: NativeCallContext, name: &str, check: FnPtr, body: FnPtr| {
            polling_condition(&d, &ctx, name, Duration::from_secs(2), &check, &body)
        },
    );
    let d = driver.clone();
    e.register_fn(
        "polling_condition",
        move |ctx: NativeCallContext, name: &str, t: Dynamic, check: FnPtr, body: FnPtr| {
            polling_condition(&d, &ctx, name, secs(t)?, &check, &body)
        },
    );
    let (d, cases) = (driver.clone(), cases.clone());
    e.register_fn(
        "subtest",
        move |ctx: NativeCallContext, name: &str, f: FnPtr| -> Res<Dynamic> {
            cases.run(name, out, || {
                d.nested(&format!("subtest: {name}"), || {
                    f.call_within_context(&ctx, ())
                })
            })
        },
    );
    e
}

/// NixOS's `retry(fn, timeout)`: calls `f(last_try)` until it returns true, pausing between tries
/// (serving the machines); the last call gets `true`, and an error if it too returns false.
fn retry(driver: &Driver, ctx: &NativeCallContext, f: &FnPtr, timeout: Duration) -> Res<()> {
    let t0 = Instant::now();
    let mut delay = RETRY_DELAYS.0;
    loop {
        let last = t0.elapsed() >= timeout;
        let got = f.call_within_context::<Dynamic>(ctx, (last,))?;
        let Some(ok) = got.as_bool().ok() else {
            return Err(format!(
                "retry: the function must return true or false, not {}",
                got.type_name()
            )
            .into());
        };
        if ok {
            return Ok(());
        }
        if last {
            return Err(format!("retry: still false after {} s", timeout.as_secs_f64()).into());
        }
        driver
            .sleep(delay.min(timeout.saturating_sub(t0.elapsed())))
            .map_err(err)?;
        delay = (delay * 2).min(RETRY_DELAYS.1);
    }
}

/// Global variables: each machine under its name, and `machines`.
pub fn scope(driver: &Driver) -> Scope<'static> {
    let mut scope = Scope::new();
    let machines = driver.machines();
    for m in &machines {
        scope.push_constant(global_name(m.name()), m.clone());
    }
    scope.push_constant(
        "machines",
        machines.into_iter().map(Dynamic::from).collect::<Array>(),
    );
    scope
}

/// The global a machine is known by: its name with characters a Rhai identifier cannot hold
/// replaced by `_` (`run-web-server-vm` gives `web_server`), as NixOS does for Python.
pub fn global_name(machine: &str) -> String {
    machine
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
