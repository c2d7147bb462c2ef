//! Rhai values to the driver's arguments and back: timeouts as integers or floats, one command or
//! an array of them, QMP's JSON as maps and arrays, driver errors as script errors.

use crate::builtin;
use driver::Machine;
use rhai::{Array, Dynamic, EvalAltResult, Map, Position};
use std::time::Duration;

pub type Res<T> = Result<T, Box<EvalAltResult>>;

/// Turns a driver error into a script error at the call's position; the message carries the chain.
pub fn err(e: driver::Error) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(
        format!("{:#}", anyhow::Error::from(e)).into(),
        Position::NONE,
    )
    .into()
}

/// A timeout in seconds, given as an integer or a float (Rhai does not convert between them).
pub fn secs(v: Dynamic) -> Res<Duration> {
    Ok(Duration::from_secs_f64(number(v, "a timeout", "seconds")?))
}

/// A non-negative number given as an integer or a float; `what` and `unit` name it in errors.
pub fn number(v: Dynamic, what: &str, unit: &str) -> Res<f64> {
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
pub fn machines(v: Array) -> Res<Vec<Machine>> {
    v.into_iter()
        .map(|m| {
            let t = m.type_name();
            m.try_cast::<Machine>()
                .ok_or_else(|| format!("a partition's group holds machines, not {t}").into())
        })
        .collect()
}

/// One command or an array of commands (NixOS's `succeed(*commands)`).
pub fn commands(v: Dynamic) -> Res<Vec<String>> {
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
pub fn status_output((status, out): (i32, String)) -> Array {
    vec![Dynamic::from(i64::from(status)), out.into()]
}

/// A QMP value as Rhai sees it: objects become maps, arrays arrays, `null` unit, integers `i64`
/// (larger ones, and fractions, `f64`).
pub fn json_to_dynamic(v: driver::serde_json::Value) -> Dynamic {
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
pub fn dynamic_to_json(v: Dynamic) -> Res<driver::serde_json::Value> {
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
pub fn qmp_args(m: Map) -> Res<driver::serde_json::Map<String, driver::serde_json::Value>> {
    m.into_iter()
        .map(|(k, v)| Ok((k.to_string(), dynamic_to_json(v)?)))
        .collect()
}

/// A QMP event as a Rhai map: `name`, `data`, and `timestamp` (QEMU's, in seconds since the Unix
/// epoch, or unit when QEMU could not read its clock).
pub fn qmp_event(e: &driver::QmpEvent) -> Map {
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

pub fn port(p: i64) -> Res<u16> {
    u16::try_from(p).map_err(|_| format!("{p} is not a TCP port").into())
}

/// An array of machines, each checked.
pub fn machine_list(machines: Array) -> Res<Vec<Machine>> {
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
pub fn tty_number(tty: i64) -> Res<u32> {
    u32::try_from(tty)
        .ok()
        .filter(|n| (1..=63).contains(n))
        .ok_or_else(|| format!("tty {tty}: virtual terminals are numbered 1 to 63").into())
}

/// `create_machine(#{ … })`'s map as a built-in machine's description; errors start with
/// `create_machine:` and name the key.
pub fn builtin_spec(m: Map) -> Res<builtin::Spec> {
    let mut spec = builtin::Spec::default();
    for (key, v) in m {
        let value = if v.is_string() {
            builtin::Value::Text(v.into_string()?)
        } else if let Ok(n) = v.as_int() {
            builtin::Value::Int(n)
        } else if v.is_array() {
            let items = v.cast::<Array>();
            let t = items
                .iter()
                .find(|i| !i.is_string())
                .map(|i| i.type_name().to_string());
            match t {
                None => builtin::Value::List(items.into_iter().map(|i| i.to_string()).collect()),
                Some(t) => builtin::Value::Other(format!("an array holding {t}")),
            }
        } else {
            builtin::Value::Other(v.type_name().to_string())
        };
        spec.set(&key, value)
            .map_err(|e| format!("create_machine: {e}"))?;
    }
    Ok(spec)
}
