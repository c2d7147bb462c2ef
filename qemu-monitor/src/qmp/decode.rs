//! The message decoder: what the JSON values of one line say, before the connection's state is
//! consulted.
//!
//! Stateless, so the checks that need state (a second greeting, an unknown id) are left to the
//! codec, which makes them first. Depends on [`event`](super::event), [`error`](super::error) and
//! [`text`](super::text).

use super::error::QmpError;
use super::event::{Greeting, Timestamp, Version};
use super::text::{excerpt, json_type};
use serde_json::{Map, Value};

/// One JSON value of a line, in the shape of a QMP message or not.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Message {
    /// `{"QMP": …}`: the greeting, or `None` if it is malformed.
    Greeting(Option<Greeting>),
    /// `{"event": NAME, …}`: an asynchronous event.
    Async {
        /// The event's name.
        name: String,
        /// Its `data` member; `Value::Null` if it had none.
        data: Value,
        /// Its `timestamp` member, if it had a well-formed one.
        timestamp: Option<Timestamp>,
    },
    /// `{"return": …}` or `{"error": …}` with an `id`.
    Reply {
        /// The `id` member as sent; whether it names a pending command is for the codec to say.
        id: Value,
        /// The return value or the error; `None` if the reply had both.
        result: Option<Result<Value, QmpError>>,
    },
    /// Not a QMP message: why.
    Garbage(String),
}

/// Decodes the JSON values of one line (already trimmed), passing each to `each` with its text.
/// Text that is not JSON ends the line as [`Message::Garbage`]. At end of file, a value cut short is
/// not garbage but returned, described for [`Event::Closed`](super::Event::Closed).
pub(super) fn line(
    text: &[u8],
    at_eof: bool,
    mut each: impl FnMut(Message, &[u8]),
) -> Option<String> {
    let mut values = serde_json::Deserializer::from_slice(text).into_iter::<Value>();
    loop {
        let start = values.byte_offset();
        match values.next() {
            None => return None,
            Some(Ok(value)) => {
                let raw = text[start..values.byte_offset()].trim_ascii();
                each(message(value), raw);
            }
            Some(Err(e)) => {
                let rest = text[start..].trim_ascii();
                if at_eof && e.is_eof() {
                    return Some(format!("{} bytes: {}", rest.len(), excerpt(rest)));
                }
                each(Message::Garbage(format!("not JSON ({e})")), rest);
                return None;
            }
        }
    }
}

/// What one decoded JSON value is.
fn message(value: Value) -> Message {
    let Value::Object(mut obj) = value else {
        return Message::Garbage(format!("not a JSON object but {}", json_type(&value)));
    };
    if let Some(qmp) = obj.remove("QMP") {
        Message::Greeting(parse_greeting(&qmp))
    } else if let Some(name) = obj.get("event") {
        let Some(name) = name.as_str().map(str::to_owned) else {
            return Message::Garbage("an event whose name is not a string".into());
        };
        let timestamp = obj.get("timestamp").and_then(|t| {
            Some(Timestamp {
                seconds: t.get("seconds")?.as_i64()?,
                microseconds: t.get("microseconds")?.as_i64()?,
            })
        });
        let data = obj.remove("data").unwrap_or(Value::Null);
        Message::Async {
            name,
            data,
            timestamp,
        }
    } else if obj.contains_key("return") || obj.contains_key("error") {
        reply(obj)
    } else {
        Message::Garbage("not a greeting, reply or event".into())
    }
}

fn reply(mut obj: Map<String, Value>) -> Message {
    let Some(id) = obj.remove("id") else {
        // QEMU's answer to a request it could not parse, which we never write.
        return Message::Garbage("a reply without an id".into());
    };
    let result = match (obj.remove("return"), obj.remove("error")) {
        (Some(value), None) => Some(Ok(value)),
        (None, Some(error)) => Some(Err(QmpError {
            class: error
                .get("class")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            desc: match error.get("desc") {
                Some(Value::String(desc)) => desc.clone(),
                _ => error.to_string(),
            },
        })),
        _ => None,
    };
    Message::Reply { id, result }
}

fn parse_greeting(qmp: &Value) -> Option<Greeting> {
    let version = qmp.get("version")?;
    let qemu = version.get("qemu")?;
    Some(Greeting {
        version: Version {
            major: qemu.get("major")?.as_u64()?,
            minor: qemu.get("minor")?.as_u64()?,
            micro: qemu.get("micro")?.as_u64()?,
            package: version
                .get("package")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
        capabilities: qmp
            .get("capabilities")?
            .as_array()?
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<_>>()?,
    })
}
