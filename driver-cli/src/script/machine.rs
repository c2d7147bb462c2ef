//! The `Machine` type of test scripts: its methods under their NixOS names, NixOS's keyword
//! arguments as optional trailing positional arguments.

use super::values::{
    commands, err, json_to_dynamic, port, qmp_args, qmp_event, secs, status_output, tty_number, Res,
};
use crate::interact::{interact, Target};
use driver::{Driver, Machine};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};
use std::cell::RefCell;
use std::time::Duration;

/// Registers `Machine` and its methods in `e`; `driver` serves the interactive ones.
pub fn register(e: &mut Engine, driver: &Driver) {
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
    // With a bound on each try (NixOS's `attempt_timeout`).
    e.register_fn(
        "wait_until_succeeds",
        |m: &mut Machine, c: &str, t: Dynamic, attempt: Dynamic| {
            m.wait_until_succeeds_bounded(c, Some(secs(t)?), Some(secs(attempt)?))
                .map_err(err)
        },
    );
    e.register_fn(
        "wait_until_fails",
        |m: &mut Machine, c: &str, t: Dynamic, attempt: Dynamic| {
            m.wait_until_fails_bounded(c, Some(secs(t)?), Some(secs(attempt)?))
                .map_err(err)
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
        ("shell_interact", Target::Shell),
        ("console_interact", Target::Console),
    ] {
        let d = driver.clone();
        e.register_fn(name, move |m: &mut Machine| -> Res<()> {
            interact(&d, m, target).map_err(|e| e.to_string().into())
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
    e.register_fn(
        "wait_for_unit_active_state",
        |m: &mut Machine, u: &str, s: &str| {
            m.wait_for_unit_active_state(u, s, None, None).map_err(err)
        },
    );
    e.register_fn(
        "wait_for_unit_active_state",
        |m: &mut Machine, u: &str, s: &str, t: Dynamic| {
            m.wait_for_unit_active_state(u, s, None, Some(secs(t)?))
                .map_err(err)
        },
    );
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
