//! Rhai test scripts: every machine a global named after it, `Machine` methods under their NixOS
//! names, NixOS keyword arguments as optional trailing positional arguments.

use crate::output::Output;
use crate::script_error::{innermost, located};
use driver::{Driver, Machine};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position, Scope};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

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

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Turns a driver error into a script error at the call's position; the message carries the chain.
fn err(e: driver::Error) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(
        format!("{:#}", anyhow::Error::from(e)).into(),
        Position::NONE,
    )
    .into()
}

/// A timeout in seconds, given as an integer or a float (Rhai does not convert between them).
fn secs(v: Dynamic) -> Res<Duration> {
    Ok(Duration::from_secs_f64(number(v, "a timeout", "seconds")?))
}

/// A non-negative number given as an integer or a float; `what` and `unit` name it in errors.
fn number(v: Dynamic, what: &str, unit: &str) -> Res<f64> {
    let n = if let Some(i) = v.clone().try_cast::<i64>() {
        i as f64
    } else if let Some(f) = v.clone().try_cast::<f64>() {
        f
    } else {
        return Err(format!("{what} is a number of {unit}, not {}", v.type_name()).into());
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("{what} must be a non-negative number of {unit}, not {n}").into());
    }
    Ok(n)
}

/// An array of machines, one group of a partition.
fn machines(v: Array) -> Res<Vec<Machine>> {
    v.into_iter()
        .map(|m| {
            let t = m.type_name();
            m.try_cast::<Machine>()
                .ok_or_else(|| format!("a partition's group holds machines, not {t}").into())
        })
        .collect()
}

fn partition(driver: &Driver, groups: Vec<Array>) -> Res<()> {
    let groups = groups.into_iter().map(machines).collect::<Res<Vec<_>>>()?;
    let refs: Vec<Vec<&Machine>> = groups.iter().map(|g| g.iter().collect()).collect();
    let slices: Vec<&[&Machine]> = refs.iter().map(Vec::as_slice).collect();
    driver.partition(&slices).map_err(err)
}

/// One command or an array of commands (NixOS's `succeed(*commands)`).
fn commands(v: Dynamic) -> Res<Vec<String>> {
    if v.is_string() {
        return Ok(vec![v.into_string()?]);
    }
    if let Some(a) = v.clone().try_cast::<Array>() {
        return a
            .into_iter()
            .map(|c| {
                c.into_string()
                    .map_err(|t| format!("a command is a string, not {t}").into())
            })
            .collect();
    }
    Err(format!(
        "expected a command string or an array of them, not {}",
        v.type_name()
    )
    .into())
}

/// NixOS's `(status, output)` tuple as a Rhai array `[status, output]`.
fn status_output((status, out): (i32, String)) -> Array {
    vec![Dynamic::from(i64::from(status)), out.into()]
}

/// A QMP value as Rhai sees it: objects become maps, arrays arrays, `null` unit, integers `i64`
/// (larger ones, and fractions, `f64`).
fn json_to_dynamic(v: driver::serde_json::Value) -> Dynamic {
    use driver::serde_json::Value;
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => b.into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.into(),
        Value::Array(a) => a.into_iter().map(json_to_dynamic).collect::<Array>().into(),
        Value::Object(o) => o
            .into_iter()
            .map(|(k, v)| (k.into(), json_to_dynamic(v)))
            .collect::<Map>()
            .into(),
    }
}

/// A Rhai value as QMP arguments take it; fails on what JSON cannot hold (a machine, a function).
fn dynamic_to_json(v: Dynamic) -> Res<driver::serde_json::Value> {
    use driver::serde_json::{Number, Value};
    let t = v.type_name();
    if v.is_unit() {
        Ok(Value::Null)
    } else if let Ok(b) = v.as_bool() {
        Ok(b.into())
    } else if let Ok(i) = v.as_int() {
        Ok(i.into())
    } else if let Ok(f) = v.as_float() {
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("QMP arguments cannot hold the number {f}").into())
    } else if v.is_string() || v.is_char() {
        Ok(v.to_string().into())
    } else if v.is_array() {
        let a = v.cast::<Array>();
        Ok(Value::Array(
            a.into_iter().map(dynamic_to_json).collect::<Res<_>>()?,
        ))
    } else if v.is_map() {
        Ok(Value::Object(qmp_args(v.cast::<Map>())?))
    } else {
        Err(format!("QMP arguments cannot hold a {t}").into())
    }
}

/// A Rhai map as a QMP command's arguments.
fn qmp_args(m: Map) -> Res<driver::serde_json::Map<String, driver::serde_json::Value>> {
    m.into_iter()
        .map(|(k, v)| Ok((k.to_string(), dynamic_to_json(v)?)))
        .collect()
}

/// A QMP event as a Rhai map: `name`, `data`, and `timestamp` (QEMU's, in seconds since the Unix
/// epoch, or unit when QEMU could not read its clock).
fn qmp_event(e: &driver::QmpEvent) -> Map {
    let timestamp = e
        .timestamp
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(Dynamic::UNIT, |d| d.as_secs_f64().into());
    Map::from_iter([
        ("name".into(), e.name.clone().into()),
        ("data".into(), json_to_dynamic(e.data.clone())),
        ("timestamp".into(), timestamp),
    ])
}

/// `m.wait_for_qmp_event(|e| …)`: a Rhai function as the filter; its error ends the wait.
fn wait_for_qmp_event_with(
    ctx: &NativeCallContext,
    m: &Machine,
    f: &FnPtr,
    timeout: Option<Duration>,
) -> Res<Map> {
    let failure: RefCell<Option<Box<EvalAltResult>>> = RefCell::new(None);
    let got = m.wait_for_qmp_event(
        |e| {
            if failure.borrow().is_some() {
                return true;
            }
            let verdict = f
                .call_within_context::<Dynamic>(ctx, (qmp_event(e),))
                .and_then(|v| {
                    v.as_bool().map_err(|t| {
                        format!("the QMP event filter must return true or false, not {t}").into()
                    })
                });
            verdict.unwrap_or_else(|e| {
                *failure.borrow_mut() = Some(e);
                true
            })
        },
        timeout,
    );
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    got.map(|e| qmp_event(&e)).map_err(err)
}

fn port(p: i64) -> Res<u16> {
    u16::try_from(p).map_err(|_| format!("{p} is not a TCP port").into())
}

/// The engine with the driver's API registered; subtests are recorded in `cases`.
/// Set (to anything) to give scripts `driver_panic_for_tests(message)`, which panics inside the
/// driver: how the tests check that a panic still stops the machines and writes the reports.
pub const FAULT_INJECTION_ENV: &str = "VMTD_FAULT_INJECTION";

/// An array of machines, each checked.
fn machine_list(machines: Array) -> Res<Vec<Machine>> {
    machines
        .into_iter()
        .map(|m| {
            let kind = m.type_name().to_string();
            m.try_cast::<Machine>()
                .ok_or_else(|| format!("expected machines, found a {kind}").into())
        })
        .collect()
}

/// A virtual terminal number as the guest numbers them (tty1 …).
fn tty_number(tty: i64) -> Res<u32> {
    u32::try_from(tty)
        .ok()
        .filter(|n| (1..=63).contains(n))
        .ok_or_else(|| format!("tty {tty}: virtual terminals are numbered 1 to 63").into())
}

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
    e.register_type_with_name::<Machine>("Machine");
    e.register_fn("to_string", |m: &mut Machine| {
        format!("Machine({})", m.name())
    });
    e.register_get("name", |m: &mut Machine| m.name().to_string());

    // Lifecycle.
    e.register_fn("start", |m: &mut Machine| m.start().map_err(err));
    e.register_fn("start", |m: &mut Machine, allow_reboot: bool| {
        m.set_allow_reboot(allow_reboot);
        m.start().map_err(err)
    });
    e.register_fn("connect", |m: &mut Machine| m.connect().map_err(err));
    e.register_fn("is_up", |m: &mut Machine| m.is_up());
    e.register_fn("shutdown", |m: &mut Machine| m.shutdown().map_err(err));
    e.register_fn("crash", |m: &mut Machine| m.crash().map_err(err));
    e.register_fn("reboot", |m: &mut Machine| m.reboot().map_err(err));
    e.register_fn("wait_for_shutdown", |m: &mut Machine| {
        m.wait_for_shutdown().map_err(err)
    });
    e.register_fn("block", |m: &mut Machine| m.block().map_err(err));
    e.register_fn("unblock", |m: &mut Machine| m.unblock().map_err(err));
    e.register_fn("send_monitor_command", |m: &mut Machine, c: &str| {
        m.send_monitor_command(c).map_err(err)
    });

    // QMP.
    e.register_fn("qmp_command", |m: &mut Machine, c: &str| -> Res<Dynamic> {
        m.qmp_command(c, None).map(json_to_dynamic).map_err(err)
    });
    e.register_fn(
        "qmp_command",
        |m: &mut Machine, c: &str, args: Map| -> Res<Dynamic> {
            let args = driver::serde_json::Value::Object(qmp_args(args)?);
            m.qmp_command(c, Some(args))
                .map(json_to_dynamic)
                .map_err(err)
        },
    );
    e.register_fn("wait_for_qmp_event", |m: &mut Machine, name: &str| {
        m.wait_for_qmp_event_named(name, None)
            .map(|e| qmp_event(&e))
            .map_err(err)
    });
    e.register_fn(
        "wait_for_qmp_event",
        |m: &mut Machine, name: &str, t: Dynamic| {
            m.wait_for_qmp_event_named(name, Some(secs(t)?))
                .map(|e| qmp_event(&e))
                .map_err(err)
        },
    );
    e.register_fn(
        "wait_for_qmp_event",
        |ctx: NativeCallContext, m: &mut Machine, f: FnPtr| {
            wait_for_qmp_event_with(&ctx, m, &f, None)
        },
    );
    e.register_fn(
        "wait_for_qmp_event",
        |ctx: NativeCallContext, m: &mut Machine, f: FnPtr, t: Dynamic| {
            wait_for_qmp_event_with(&ctx, m, &f, Some(secs(t)?))
        },
    );

    // Commands.
    e.register_fn("succeed", |m: &mut Machine, c: Dynamic| {
        m.succeed(commands(c)?).map_err(err)
    });
    e.register_fn("fail", |m: &mut Machine, c: Dynamic| {
        m.fail(commands(c)?).map_err(err)
    });
    e.register_fn("execute", |m: &mut Machine, c: &str| -> Res<Array> {
        m.execute(c).map(status_output).map_err(err)
    });
    e.register_fn(
        "execute",
        |m: &mut Machine, c: &str, t: Dynamic| -> Res<Array> {
            m.execute_within(c, secs(t)?)
                .map(status_output)
                .map_err(err)
        },
    );
    e.register_fn("wait_until_succeeds", |m: &mut Machine, c: &str| {
        m.wait_until_succeeds(c, None).map_err(err)
    });
    e.register_fn(
        "wait_until_succeeds",
        |m: &mut Machine, c: &str, t: Dynamic| {
            m.wait_until_succeeds(c, Some(secs(t)?)).map_err(err)
        },
    );
    e.register_fn("wait_until_fails", |m: &mut Machine, c: &str| {
        m.wait_until_fails(c, None).map_err(err)
    });
    e.register_fn(
        "wait_until_fails",
        |m: &mut Machine, c: &str, t: Dynamic| m.wait_until_fails(c, Some(secs(t)?)).map_err(err),
    );
    e.register_fn("sleep", |m: &mut Machine, t: Dynamic| {
        m.sleep(secs(t)?.as_secs_f64()).map_err(err)
    });

    // systemd.
    e.register_fn("systemctl", |m: &mut Machine, q: &str| -> Res<Array> {
        m.systemctl(q).map(status_output).map_err(err)
    });
    e.register_fn("get_unit_info", |m: &mut Machine, u: &str| -> Res<Map> {
        let info = m.get_unit_info(u).map_err(err)?;
        Ok(info
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    });
    e.register_fn("wait_for_unit", |m: &mut Machine, u: &str| {
        m.wait_for_unit(u, None).map_err(err)
    });
    e.register_fn("wait_for_unit", |m: &mut Machine, u: &str, t: Dynamic| {
        m.wait_for_unit(u, Some(secs(t)?)).map_err(err)
    });
    // Units of a user's manager (NixOS's `user` argument).
    e.register_fn(
        "systemctl",
        |m: &mut Machine, q: &str, user: &str| -> Res<Array> {
            m.systemctl_as(q, user).map(status_output).map_err(err)
        },
    );
    e.register_fn(
        "get_unit_info",
        |m: &mut Machine, u: &str, user: &str| -> Res<Map> {
            let info = m.get_user_unit_info(u, user).map_err(err)?;
            Ok(info
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect())
        },
    );
    e.register_fn("wait_for_unit", |m: &mut Machine, u: &str, user: &str| {
        m.wait_for_user_unit(u, user, None).map_err(err)
    });
    e.register_fn(
        "wait_for_unit",
        |m: &mut Machine, u: &str, user: &str, t: Dynamic| {
            m.wait_for_user_unit(u, user, Some(secs(t)?)).map_err(err)
        },
    );
    // Virtual terminals and the serial console.
    e.register_fn("get_tty_text", |m: &mut Machine, tty: i64| {
        m.get_tty_text(tty_number(tty)?).map_err(err)
    });
    e.register_fn(
        "wait_until_tty_matches",
        |m: &mut Machine, tty: i64, r: &str| {
            m.wait_until_tty_matches(tty_number(tty)?, r, None)
                .map_err(err)
        },
    );
    e.register_fn(
        "wait_until_tty_matches",
        |m: &mut Machine, tty: i64, r: &str, t: Dynamic| {
            m.wait_until_tty_matches(tty_number(tty)?, r, Some(secs(t)?))
                .map_err(err)
        },
    );
    e.register_fn("dump_tty_contents", |m: &mut Machine, tty: i64| {
        m.dump_tty_contents(tty_number(tty)?).map_err(err)
    });
    e.register_fn("send_console", |m: &mut Machine, chars: &str| {
        m.send_console(chars).map_err(err)
    });
    // Interactive: a root shell over the backdoor, or the serial console, until Ctrl-D.
    for (name, target) in [
        ("shell_interact", crate::interact::Target::Shell),
        ("console_interact", crate::interact::Target::Console),
    ] {
        let d = driver.clone();
        e.register_fn(name, move |m: &mut Machine| -> Res<()> {
            crate::interact::interact(&d, m, target).map_err(|e| e.to_string().into())
        });
    }
    e.register_fn("wait_for_job", |m: &mut Machine, u: &str| {
        m.wait_for_job(u, None).map_err(err)
    });
    e.register_fn("require_active_unit", |m: &mut Machine, u: &str| {
        m.require_active_unit(u).map_err(err)
    });
    e.register_fn("start_job", |m: &mut Machine, u: &str| -> Res<Array> {
        m.start_job(u).map(status_output).map_err(err)
    });
    e.register_fn("stop_job", |m: &mut Machine, u: &str| -> Res<Array> {
        m.stop_job(u).map(status_output).map_err(err)
    });

    // Files, ports, console.
    e.register_fn("wait_for_file", |m: &mut Machine, f: &str| {
        m.wait_for_file(f, None).map_err(err)
    });
    e.register_fn("wait_for_file", |m: &mut Machine, f: &str, t: Dynamic| {
        m.wait_for_file(f, Some(secs(t)?)).map_err(err)
    });
    e.register_fn("wait_for_open_port", |m: &mut Machine, p: i64| {
        m.wait_for_open_port(port(p)?, None, None).map_err(err)
    });
    e.register_fn("wait_for_open_port", |m: &mut Machine, p: i64, a: &str| {
        m.wait_for_open_port(port(p)?, Some(a), None).map_err(err)
    });
    e.register_fn(
        "wait_for_open_port",
        |m: &mut Machine, p: i64, a: &str, t: Dynamic| {
            m.wait_for_open_port(port(p)?, Some(a), Some(secs(t)?))
                .map_err(err)
        },
    );
    e.register_fn("wait_for_closed_port", |m: &mut Machine, p: i64| {
        m.wait_for_closed_port(port(p)?, None, None).map_err(err)
    });
    e.register_fn(
        "wait_for_closed_port",
        |m: &mut Machine, p: i64, a: &str| {
            m.wait_for_closed_port(port(p)?, Some(a), None).map_err(err)
        },
    );
    e.register_fn(
        "wait_for_closed_port",
        |m: &mut Machine, p: i64, a: &str, t: Dynamic| {
            m.wait_for_closed_port(port(p)?, Some(a), Some(secs(t)?))
                .map_err(err)
        },
    );
    e.register_fn("copy_from_host", |m: &mut Machine, src: &str, dst: &str| {
        m.copy_from_host(std::path::Path::new(src), dst)
            .map_err(err)
    });
    e.register_fn("write_file", |m: &mut Machine, dst: &str, text: &str| {
        m.write_file(dst, text.as_bytes()).map_err(err)
    });
    for name in ["copy_from_vm", "copy_from_machine"] {
        e.register_fn(name, |m: &mut Machine, src: &str| -> Res<String> {
            let bytes = m.copy_from_vm(src).map_err(err)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        });
    }
    e.register_fn("get_unit_property", |m: &mut Machine, u: &str, p: &str| {
        m.get_unit_property(u, p).map_err(err)
    });
    e.register_fn("require_unit_state", |m: &mut Machine, u: &str, s: &str| {
        m.require_unit_state(u, s).map_err(err)
    });
    e.register_fn("wait_for_open_unix_socket", |m: &mut Machine, p: &str| {
        m.wait_for_open_unix_socket(p, false, None).map_err(err)
    });
    e.register_fn(
        "wait_for_open_unix_socket",
        |m: &mut Machine, p: &str, datagram: bool, t: Dynamic| {
            m.wait_for_open_unix_socket(p, datagram, Some(secs(t)?))
                .map_err(err)
        },
    );
    e.register_fn(
        "vlan_address",
        |m: &mut Machine, vlan: i64| -> Res<String> {
            let vlan = u32::try_from(vlan).map_err(|_| format!("{vlan} is not a VLAN number"))?;
            Ok(m.vlan_address(vlan))
        },
    );
    e.register_fn("forward_port", |m: &mut Machine, host: i64, guest: i64| {
        m.forward_port(port(host)?, port(guest)?).map_err(err)
    });
    e.register_fn(
        "forward_port",
        |m: &mut Machine, host: i64, guest: i64, address: &str| {
            m.forward_port_on(address, port(host)?, port(guest)?)
                .map_err(err)
        },
    );
    e.register_fn("wait_for_console_text", |m: &mut Machine, r: &str| {
        m.wait_for_console_text(r, None).map_err(err)
    });
    e.register_fn(
        "wait_for_console_text",
        |m: &mut Machine, r: &str, t: Dynamic| {
            m.wait_for_console_text(r, Some(secs(t)?)).map_err(err)
        },
    );
    e.register_fn("get_console_log", |m: &mut Machine| m.get_console_log());
    for name in ["send_keys", "send_key"] {
        e.register_fn(name, |m: &mut Machine, keys: &str| {
            m.send_keys(keys).map_err(err)
        });
    }
    e.register_fn("send_chars", |m: &mut Machine, text: &str| {
        m.send_chars(text, None).map_err(err)
    });
    e.register_fn(
        "send_chars",
        |m: &mut Machine, text: &str, delay: Dynamic| {
            m.send_chars(text, Some(secs(delay)?)).map_err(err)
        },
    );
    e.register_fn("get_screen_text", |m: &mut Machine| {
        m.get_screen_text().map_err(err)
    });
    e.register_fn(
        "get_screen_text_variants",
        |m: &mut Machine| -> Res<Array> {
            let texts = m.get_screen_text_variants().map_err(err)?;
            Ok(texts.into_iter().map(Dynamic::from).collect())
        },
    );
    e.register_fn("wait_for_text", |m: &mut Machine, r: &str| {
        m.wait_for_text(r, None).map_err(err)
    });
    e.register_fn("wait_for_text", |m: &mut Machine, r: &str, t: Dynamic| {
        m.wait_for_text(r, Some(secs(t)?)).map_err(err)
    });
    e.register_fn("wait_for_x", |m: &mut Machine| {
        m.wait_for_x(None).map_err(err)
    });
    e.register_fn("wait_for_x", |m: &mut Machine, t: Dynamic| {
        m.wait_for_x(Some(secs(t)?)).map_err(err)
    });
    e.register_fn("get_window_names", |m: &mut Machine| -> Res<Array> {
        let names = m.get_window_names().map_err(err)?;
        Ok(names.into_iter().map(Dynamic::from).collect())
    });
    e.register_fn("wait_for_window", |m: &mut Machine, r: &str| {
        m.wait_for_window(r, None).map_err(err)
    });
    e.register_fn("wait_for_window", |m: &mut Machine, r: &str, t: Dynamic| {
        m.wait_for_window(r, Some(secs(t)?)).map_err(err)
    });
    e.register_fn("snapshot", |m: &mut Machine, name: &str| {
        m.snapshot(name).map_err(err)
    });
    e.register_fn("restore", |m: &mut Machine, name: &str| {
        m.restore(name).map_err(err)
    });
    e.register_fn("snapshots", |m: &mut Machine| -> Res<Array> {
        let names = m.snapshots().map_err(err)?;
        Ok(names.into_iter().map(Dynamic::from).collect())
    });
    e.register_fn("add_coverage_dir", |m: &mut Machine, dir: &str| {
        m.add_coverage_dir(dir)
    });
    e.register_fn("collect_coverage", |m: &mut Machine| {
        m.collect_coverage()
            .map(|d| d.map(|d| d.display().to_string()).unwrap_or_default())
            .map_err(err)
    });
    e.register_fn("screenshot", |m: &mut Machine, name: &str| {
        m.screenshot(name)
            .map(|p| p.display().to_string())
            .map_err(err)
    });
    e.register_fn("log", |m: &mut Machine, msg: &str| m.log(msg));

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
