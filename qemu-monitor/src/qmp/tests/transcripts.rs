//! Hand-made transcripts: the protocol's odd corners, fed whole and split anywhere.

use super::*;

// ---- hand-made transcripts ----

#[test]
fn transcript_with_an_event_before_the_reply() {
    let mut qmp = Qmp::new();
    assert!(!qmp.is_ready());
    let mut wire = qmp.capabilities().unwrap();
    let (id, bytes) = qmp.command("system_powerdown", None).unwrap();
    wire.extend(bytes);
    assert_eq!(
        wire,
        b"{\"execute\":\"qmp_capabilities\",\"id\":0}\r\n{\"execute\":\"system_powerdown\",\"id\":1}\r\n"
    );
    assert_eq!(qmp.pending(), 2);
    qmp.feed(GREETING);
    assert_eq!(events(&mut qmp), [greeting()]);
    qmp.feed(b"{\"return\": {}, \"id\": 0}\r\n");
    assert_eq!(events(&mut qmp), [Event::Ready]);
    assert!(qmp.is_ready());
    assert_eq!(qmp.pending(), 1);
    qmp.feed(
        b"{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 42}, \"event\": \"POWERDOWN\"}\r\n",
    );
    assert_eq!(
        events(&mut qmp),
        [event("POWERDOWN", Value::Null, 1700000000, 42)]
    );
    assert_eq!(qmp.pending_command(id), Some("system_powerdown"));
    qmp.feed(b"{\"return\": {}, \"id\": 1}\r\n");
    assert_eq!(events(&mut qmp), [ok(1, json!({}))]);
    assert_eq!(qmp.pending(), 0);
    // An event without data or timestamp is still an event.
    qmp.feed(b"{\"event\": \"STOP\"}\r\n");
    assert_eq!(
        events(&mut qmp),
        [Event::Async {
            name: "STOP".into(),
            data: Value::Null,
            timestamp: None
        }]
    );
}

/// A hand-made transcript with everything odd in it, fed whole, byte by byte and at every split.
#[test]
fn odd_transcript_split_anywhere() {
    let output: &[u8] = b"\r\n  {\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 9}, \"package\": \"\"}, \"capabilities\": []}}\n\
        {\"return\": {}, \"id\": 0}{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": -1, \"microseconds\": -1}}\r\n\
        \tnot json\r\n\
        {\"return\": {}, \"id\": 77}\r\n\
        \r\n\r\n\
        {\"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}  \r\r\n\
        {\"return\": \"\\u00e9\\r\\n\", \"id\": 2}\r\n\
        {\"return\": {\"a\": ";
    let run = |pieces: Vec<&[u8]>| {
        let mut qmp = Qmp::new();
        let _ = qmp.capabilities().unwrap();
        for _ in 0..3 {
            let _ = qmp.command("x", None).unwrap();
        }
        let mut v = Vec::new();
        for p in pieces {
            qmp.feed(p);
            drain(&mut qmp, &mut v);
        }
        qmp.handle_eof();
        drain(&mut qmp, &mut v);
        v
    };
    let whole = run(vec![output]);
    assert_eq!(
        whole,
        [
            Event::Greeting(Greeting {
                version: Version {
                    major: 9,
                    minor: 0,
                    micro: 0,
                    package: String::new()
                },
                capabilities: vec![]
            }),
            Event::Ready,
            Event::Async {
                name: "RESUME".into(),
                data: Value::Null,
                timestamp: Some(Timestamp {
                    seconds: -1,
                    microseconds: -1
                })
            },
            garbage("not JSON (expected ident at line 1 column 2)", "not json"),
            garbage("a reply for unknown id 77", "{\"return\": {}, \"id\": 77}"),
            err(1, "GenericError", "no"),
            ok(2, json!("\u{e9}\r\n")),
            Event::Closed {
                pending: vec![3],
                partial: Some("16 bytes: {\"return\": {\"a\":".into())
            },
        ]
    );
    assert_eq!(run(output.chunks(1).collect()), whole, "byte by byte");
    for at in 0..=output.len() {
        let (a, b) = output.split_at(at);
        assert_eq!(run(vec![a, b]), whole, "split at {at}");
    }
}
