//! Rhai test scripts: every machine a global named after it, `Machine` methods under their NixOS
//! names, NixOS keyword arguments as optional trailing positional arguments.

use driver::{Driver, Machine};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position, Scope};
use std::time::Duration;

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
    let s = if let Some(i) = v.clone().try_cast::<i64>() {
        i as f64
    } else if let Some(f) = v.clone().try_cast::<f64>() {
        f
    } else {
        return Err(format!("a timeout is a number of seconds, not {}", v.type_name()).into());
    };
    if !(s.is_finite() && s >= 0.0) {
        return Err(format!("a timeout must be a non-negative number of seconds, not {s}").into());
    }
    Ok(Duration::from_secs_f64(s))
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

fn port(p: i64) -> Res<u16> {
    u16::try_from(p).map_err(|_| format!("{p} is not a TCP port").into())
}

/// The engine with the driver's API registered.
pub fn engine(driver: &Driver) -> Engine {
    let mut e = Engine::new();
    e.register_type_with_name::<Machine>("Machine");
    e.register_fn("to_string", |m: &mut Machine| {
        format!("Machine({})", m.name())
    });
    e.register_get("name", |m: &mut Machine| m.name().to_string());

    // Lifecycle.
    e.register_fn("start", |m: &mut Machine| m.start().map_err(err));
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
    e.register_fn(
        "copy_from_vm",
        |m: &mut Machine, src: &str| -> Res<String> {
            let bytes = m.copy_from_vm(src).map_err(err)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
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
    e.register_fn("log", |m: &mut Machine, msg: &str| m.log(msg));

    // Globals.
    let d = driver.clone();
    e.register_fn("start_all", move || d.start_all().map_err(err));
    let d = driver.clone();
    e.register_fn("log", move |msg: &str| d.log(msg));
    let d = driver.clone();
    e.register_fn(
        "subtest",
        move |ctx: NativeCallContext, name: &str, f: FnPtr| -> Res<Dynamic> {
            d.nested(&format!("subtest: {name}"), || {
                f.call_within_context(&ctx, ())
            })
            .map_err(|e| format!("subtest {name:?} failed: {e}").into())
        },
    );
    e
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
