//! The command encoder: what a request looks like on the wire, and which requests QEMU would refuse
//! whatever the connection's state.
//!
//! Ids and the negotiation are the codec's business; this layer depends only on
//! [`error`](super::error) and [`text`](super::text).

use super::error::Error;
use super::text::json_type;
use serde_json::{Map, Value};

/// The id [`Qmp::capabilities`](super::Qmp::capabilities) gives `qmp_capabilities`; commands count
/// from 1.
pub const CAPABILITIES_ID: u64 = 0;

/// Checks a command for [`Qmp::command`](super::Qmp::command): `qmp_capabilities` is not one, and
/// its arguments must be a JSON object. Returns the arguments' members.
pub(super) fn validate(
    name: &str,
    args: Option<Value>,
) -> Result<Option<Map<String, Value>>, Error> {
    if name == "qmp_capabilities" {
        return Err(Error::CapabilitiesCommand);
    }
    match args {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(Error::ArgumentsNotObject {
            found: json_type(&other),
        }),
    }
}

/// The wire form of a request: compact JSON, members in a fixed order, then `\r\n`.
pub(super) fn encode(name: &str, args: Option<Map<String, Value>>, id: u64) -> Vec<u8> {
    let mut out = format!("{{\"execute\":{}", Value::from(name));
    if let Some(args) = args {
        out.push_str(&format!(",\"arguments\":{}", Value::Object(args)));
    }
    out.push_str(&format!(",\"id\":{id}}}\r\n"));
    out.into_bytes()
}
