//! Golden wire bytes: what the encoder writes, and what it refuses.

use super::*;

// ---- golden wire bytes ----

#[test]
fn golden_capabilities() {
    let mut qmp = Qmp::new();
    assert_eq!(
        qmp.capabilities().unwrap(),
        b"{\"execute\":\"qmp_capabilities\",\"id\":0}\r\n"
    );
    assert_eq!(qmp.pending(), 1);
    assert_eq!(qmp.pending_command(0), Some("qmp_capabilities"));
    assert_eq!(qmp.capabilities(), Err(Error::AlreadyNegotiating));
}

#[test]
fn golden_commands() {
    let mut qmp = Qmp::new();
    let _ = qmp.capabilities().unwrap();
    let (id, wire) = qmp.command("query-status", None).unwrap();
    assert_eq!(
        (id, wire.as_slice()),
        (1, &b"{\"execute\":\"query-status\",\"id\":1}\r\n"[..])
    );
    let (id, wire) = qmp
        .command(
            "human-monitor-command",
            Some(json!({"command-line": "info status"})),
        )
        .unwrap();
    assert_eq!(id, 2);
    assert_eq!(
        wire,
        b"{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info status\"},\"id\":2}\r\n"
    );
    // Nested arguments, keys in sorted order (given sorted, so serde_json's `preserve_order`
    // feature would not change them), an empty object kept.
    let (id, wire) = qmp
        .command(
            "screendump",
            Some(json!({"filename": "/tmp/s.png", "format": "png", "x": {"a": [1, null, true]}})),
        )
        .unwrap();
    assert_eq!(id, 3);
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        "{\"execute\":\"screendump\",\"arguments\":{\"filename\":\"/tmp/s.png\",\"format\":\"png\",\
         \"x\":{\"a\":[1,null,true]}},\"id\":3}\r\n"
    );
    let (_, wire) = qmp.command("stop", Some(json!({}))).unwrap();
    assert_eq!(
        wire,
        b"{\"execute\":\"stop\",\"arguments\":{},\"id\":4}\r\n"
    );
    // Names are JSON strings: quotes, controls and non-ASCII are escaped or passed as UTF-8.
    let (_, wire) = qmp.command("a\"b\\c\nd\u{e9}", None).unwrap();
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        "{\"execute\":\"a\\\"b\\\\c\\nd\u{e9}\",\"id\":5}\r\n"
    );
    assert_eq!(qmp.pending(), 6);
    assert_eq!(qmp.pending_command(3), Some("screendump"));
}

#[test]
fn refused_commands_use_no_id() {
    let mut qmp = Qmp::new();
    assert_eq!(qmp.command("stop", None), Err(Error::NotNegotiated));
    let _ = qmp.capabilities().unwrap();
    assert_eq!(
        qmp.command("qmp_capabilities", None),
        Err(Error::CapabilitiesCommand)
    );
    assert_eq!(
        qmp.command("stop", Some(json!([1]))),
        Err(Error::ArgumentsNotObject { found: "array" })
    );
    assert_eq!(
        qmp.command("stop", Some(Value::Null)),
        Err(Error::ArgumentsNotObject { found: "null" })
    );
    assert_eq!(qmp.command("stop", None).unwrap().0, 1);
    assert_eq!(qmp.pending(), 2);
}

#[test]
fn error_messages() {
    let e = QmpError {
        class: "GenericError".into(),
        desc: "Parameter 'x' is unexpected".into(),
    };
    assert_eq!(e.to_string(), "GenericError: Parameter 'x' is unexpected");
    assert_eq!(
        Error::NegotiationFailed(e).to_string(),
        "capabilities negotiation failed: GenericError: Parameter 'x' is unexpected"
    );
    assert_eq!(
        Error::ArgumentsNotObject { found: "string" }.to_string(),
        "command arguments must be a JSON object, not string"
    );
    assert_eq!(Error::Closed.to_string(), "the qmp connection is closed");
    let Some(Event::Greeting(g)) = ({
        let mut qmp = Qmp::new();
        qmp.feed(GREETING);
        qmp.poll_event()
    }) else {
        panic!("no greeting")
    };
    assert_eq!(
        g.version.to_string(),
        "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"
    );
    let plain = Version {
        major: 9,
        minor: 0,
        micro: 1,
        package: String::new(),
    };
    assert_eq!(plain.to_string(), "9.0.1");
}
