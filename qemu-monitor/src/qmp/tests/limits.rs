//! Errors, garbage and limits: what is reported, and that decoding goes on after it.

use super::*;

// ---- errors, garbage, limits ----

#[test]
fn error_reply() {
    let mut qmp = ready();
    let (id, _) = qmp
        .command("set_link", Some(json!({"name": "x", "up": true})))
        .unwrap();
    qmp.feed(b"{\"id\": 1, \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x' not found\"}}\r\n");
    assert_eq!(
        events(&mut qmp),
        [err(id, "DeviceNotFound", "Device 'x' not found")]
    );
    // An error without the usual members keeps what it has.
    let (id, _) = qmp.command("x", None).unwrap();
    qmp.feed(b"{\"error\": {\"code\": 3}, \"id\": 2}\r\n");
    assert_eq!(events(&mut qmp), [err(id, "", "{\"code\":3}")]);
    assert!(qmp.is_ready());
}

#[test]
fn garbage_is_reported_and_decoding_goes_on() {
    let mut qmp = ready();
    let (id, _) = qmp.command("query-status", None).unwrap();
    let mut deep = vec![b'['; 100_000];
    deep.extend(b"\r\n");
    let inputs: Vec<(&[u8], Event)> = vec![
        (
            b"hello world\r\n",
            garbage("not JSON (expected value at line 1 column 1)", "hello world"),
        ),
        (b"[1, 2]\r\n", garbage("not a JSON object but array", "[1, 2]")),
        (b"\"str\"\r\n", garbage("not a JSON object but string", "\"str\"")),
        (b"42\r\n", garbage("not a JSON object but number", "42")),
        (b"null\r\n", garbage("not a JSON object but null", "null")),
        (
            b"{\"foo\": 1}\r\n",
            garbage("not a greeting, reply or event", "{\"foo\": 1}"),
        ),
        (
            b"{\"event\": 5}\r\n",
            garbage("an event whose name is not a string", "{\"event\": 5}"),
        ),
        // QEMU's answer to a request it could not parse has no id.
        (
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword 'xyz'\"}}\r\n",
            garbage(
                "a reply without an id",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword 'xyz'\"}}",
            ),
        ),
        (
            b"{\"return\": {}, \"error\": {}, \"id\": 1}\r\n",
            garbage(
                "a reply with both return and error",
                "{\"return\": {}, \"error\": {}, \"id\": 1}",
            ),
        ),
        (
            b"{\"QMP\": {}}\r\n",
            garbage("a second greeting", "{\"QMP\": {}}"),
        ),
        (
            b"{\"a\": \r\n",
            garbage("not JSON (EOF while parsing a value at line 1 column 5)", "{\"a\":"),
        ),
        (
            b"{\"return\": \"\xff\", \"id\": 1}\r\n",
            garbage(
                "not JSON (invalid unicode code point at line 1 column 13)",
                "{\"return\": \"\u{fffd}\", \"id\": 1}",
            ),
        ),
        // Control characters are escaped in the excerpt.
        (
            b"\x1b[31mred\x00\r\n",
            garbage(
                "not JSON (expected value at line 1 column 1)",
                "\\u{1b}[31mred\\0",
            ),
        ),
        (
            b"{} x\r\n",
            garbage("not a greeting, reply or event", "{}"),
        ),
    ];
    for (input, expected) in inputs {
        qmp.feed(input);
        let got = events(&mut qmp);
        // `{} x`: the object, then the rest of the line.
        if input.starts_with(b"{} ") {
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(
                matches!(&got[1], Event::Garbage { excerpt, .. } if excerpt == "x"),
                "{got:?}"
            );
        } else {
            assert_eq!(got.len(), 1, "{got:?}");
        }
        assert_eq!(got[0], expected);
    }
    // Deep nesting hits serde_json's recursion limit, not the stack.
    qmp.feed(&deep);
    let got = events(&mut qmp);
    assert!(
        matches!(&got[..], [Event::Garbage { reason, excerpt }]
            if reason.contains("recursion limit") && excerpt.ends_with("[[[…")),
        "{got:?}"
    );
    // Through all of it, the pending command survived and its reply is matched.
    assert_eq!(qmp.pending_command(id), Some("query-status"));
    qmp.feed(b"{\"return\": {\"status\": \"running\"}, \"id\": 1}\r\n");
    assert_eq!(events(&mut qmp), [ok(id, json!({"status": "running"}))]);
    assert!(qmp.is_ready());
}

#[test]
fn replies_for_unknown_ids() {
    let mut qmp = ready();
    let (id, _) = qmp.command("stop", None).unwrap();
    qmp.feed(b"{\"return\": {}, \"id\": 99}\r\n");
    qmp.feed(b"{\"return\": {}, \"id\": \"1\"}\r\n");
    qmp.feed(b"{\"return\": {}, \"id\": -1}\r\n");
    qmp.feed(b"{\"return\": {}, \"id\": 1.5}\r\n");
    // The negotiation was answered already.
    qmp.feed(b"{\"return\": {}, \"id\": 0}\r\n");
    qmp.feed(b"{\"return\": {}, \"id\": 1}\r\n");
    // A second reply for the same id.
    qmp.feed(b"{\"return\": {}, \"id\": 1}\r\n");
    let unknown = |id: &str| {
        garbage(
            &format!("a reply for unknown id {id}"),
            &format!("{{\"return\": {{}}, \"id\": {id}}}"),
        )
    };
    assert_eq!(
        events(&mut qmp),
        [
            unknown("99"),
            unknown("\"1\""),
            unknown("-1"),
            unknown("1.5"),
            unknown("0"),
            ok(id, json!({})),
            unknown("1"),
        ]
    );
    assert!(qmp.is_ready());
}

#[test]
fn negotiation_refused() {
    let mut qmp = Qmp::new();
    let _ = qmp.capabilities().unwrap();
    let (id, _) = qmp.command("query-status", None).unwrap();
    qmp.feed(GREETING);
    qmp.feed(b"{\"id\": 0, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Capabilities negotiation is already complete, command ignored\"}}\r\n");
    let refusal = QmpError {
        class: "CommandNotFound".into(),
        desc: "Capabilities negotiation is already complete, command ignored".into(),
    };
    assert_eq!(
        events(&mut qmp),
        [greeting(), Event::NegotiationFailed(refusal.clone())]
    );
    assert!(!qmp.is_ready());
    assert_eq!(
        qmp.command("stop", None),
        Err(Error::NegotiationFailed(refusal))
    );
    // What was written already is still answered (with QEMU's refusal, as captured).
    qmp.feed(b"{\"id\": 1, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n");
    assert_eq!(
        events(&mut qmp),
        [err(
            id,
            "CommandNotFound",
            "Expecting capabilities negotiation with 'qmp_capabilities'"
        )]
    );
}

#[test]
fn malformed_greeting_is_garbage() {
    let mut qmp = Qmp::new();
    qmp.feed(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, \"capabilities\": []}}\r\n");
    assert!(matches!(
        &events(&mut qmp)[..],
        [Event::Garbage { reason, .. }] if reason == "a malformed greeting"
    ));
    assert_eq!(qmp.greeting(), None);
    qmp.feed(GREETING);
    assert_eq!(events(&mut qmp), [greeting()]);
}

#[test]
fn over_long_message_then_resync() {
    let line = |n: usize| {
        // A reply of exactly `n` bytes, padded inside a string.
        let head = b"{\"return\": \"";
        let tail = b"\", \"id\": 1}";
        let mut v = head.to_vec();
        v.resize(n - tail.len(), b'x');
        v.extend(tail);
        v
    };
    for split in [false, true] {
        let mut qmp = ready().with_max_message(64);
        let _ = qmp.command("a", None).unwrap();
        // One byte too many, with and without a \r, whole and byte by byte.
        let mut input = line(65);
        input.extend(b"\r\n");
        input.extend(line(65));
        input.extend(b"\n");
        // Exactly the limit passes, with its \r\n.
        input.extend(line(64));
        input.extend(b"\r\n");
        let mut got = Vec::new();
        if split {
            for b in input.chunks(1) {
                qmp.feed(b);
                drain(&mut qmp, &mut got);
                assert!(qmp.buffered() <= 65);
            }
        } else {
            qmp.feed(&input);
            drain(&mut qmp, &mut got);
        }
        let excerpt = format!("{}…", String::from_utf8(line(65)).unwrap());
        let too_long = Event::TooLong { limit: 64, excerpt };
        assert_eq!(
            got,
            [
                too_long.clone(),
                too_long,
                ok(1, json!("x".repeat(64 - 12 - 11)))
            ],
            "split: {split}"
        );
    }

    // Far over the limit, in pieces: reported once, as soon as it is crossed, then skipped.
    let mut qmp = ready().with_max_message(64);
    let _ = qmp.command("a", None).unwrap();
    qmp.feed(&[b'{'; 50]);
    assert_eq!(events(&mut qmp), []);
    qmp.feed(&[b'{'; 50]);
    let got = events(&mut qmp);
    assert!(
        matches!(&got[..], [Event::TooLong { limit: 64, excerpt }] if *excerpt == format!("{}…", "{".repeat(100))),
        "{got:?}"
    );
    assert_eq!(qmp.buffered(), 0);
    qmp.feed(&[b'x'; 10_000]);
    qmp.feed(b"\"}\r\n{\"return\": {}, \"id\": 1}\r\n");
    assert_eq!(events(&mut qmp), [ok(1, json!({}))]);
    // End of file inside an over-long line: nothing more to say about it.
    qmp.feed(&[b'x'; 100]);
    qmp.handle_eof();
    assert!(matches!(&events(&mut qmp)[..], [Event::TooLong { .. }, c] if *c == closed()));
}

#[test]
fn tiny_limits() {
    // With a cap of 0 only blank lines pass; of 1, one-byte lines.
    let mut qmp = Qmp::new().with_max_message(0);
    qmp.feed(b"\r\n\n\r\n{}\r\n");
    assert!(matches!(
        &events(&mut qmp)[..],
        [Event::TooLong { limit: 0, .. }]
    ));
    let mut qmp = Qmp::new().with_max_message(1);
    qmp.feed(b"\r\n1\r\n12\n\r\r\n");
    assert_eq!(
        events(&mut qmp),
        [
            garbage("not a JSON object but number", "1"),
            Event::TooLong {
                limit: 1,
                excerpt: "12…".into()
            },
        ]
    );
    assert_eq!(qmp.buffered(), 0);
}

#[test]
fn eof_mid_message() {
    let mut qmp = ready();
    let _ = qmp.command("query-status", None).unwrap();
    qmp.feed(b"{\"return\": {\"status\": \"runn");
    assert_eq!(events(&mut qmp), []);
    assert_eq!(qmp.buffered(), 27);
    qmp.handle_eof();
    assert_eq!(
        events(&mut qmp),
        [Event::Closed {
            pending: vec![1],
            partial: Some("27 bytes: {\"return\": {\"status\": \"runn".into())
        }]
    );
    assert!(qmp.is_closed() && !qmp.is_ready());
    assert_eq!(qmp.buffered(), 0);
    // Once closed, always closed, and reported once.
    qmp.handle_eof();
    qmp.feed(b"{\"return\": {}, \"id\": 1}\r\n");
    assert_eq!(events(&mut qmp), []);
    assert_eq!(qmp.command("stop", None), Err(Error::Closed));
    assert_eq!(qmp.capabilities(), Err(Error::Closed));
    assert_eq!(qmp.pending(), 0);
}

#[test]
fn eof_after_a_complete_message_without_line_end() {
    let mut qmp = ready();
    let _ = qmp.command("query-status", None).unwrap();
    let _ = qmp.command("stop", None).unwrap();
    qmp.feed(b"{\"return\": {}, \"id\": 1}  {\"return\": {}, \"id\": 2}  ");
    qmp.handle_eof();
    assert_eq!(
        events(&mut qmp),
        [ok(1, json!({})), ok(2, json!({})), closed()]
    );
    // Garbage that is not cut short is garbage, at end of file too.
    let mut qmp = ready();
    qmp.feed(b"junk");
    qmp.handle_eof();
    assert_eq!(
        events(&mut qmp),
        [
            garbage("not JSON (expected value at line 1 column 1)", "junk"),
            closed()
        ]
    );
}

#[test]
fn eof_before_the_greeting() {
    let mut qmp = Qmp::new();
    qmp.handle_eof();
    assert_eq!(events(&mut qmp), [closed()]);

    let mut qmp = Qmp::new();
    let _ = qmp.capabilities().unwrap();
    let _ = qmp.command("stop", None).unwrap();
    qmp.feed(&GREETING[..30]);
    qmp.handle_eof();
    assert_eq!(
        events(&mut qmp),
        [Event::Closed {
            pending: vec![0, 1],
            partial: Some("30 bytes: {\"QMP\": {\"version\": {\"qemu\": {".into())
        }]
    );
}

#[test]
fn any_whitespace_between_messages() {
    let mut qmp = ready();
    for _ in 0..4 {
        let _ = qmp.command("x", None).unwrap();
    }
    qmp.feed(b"\n\n  {\"return\" :\t{ } , \"id\":1}  \n\t{\"return\": {}, \"id\": 2}\r\r\n");
    qmp.feed(b"{\"return\": {}, \"id\": 3}{\"return\": {}, \"id\": 4}\r\n \r\n");
    assert_eq!(
        events(&mut qmp),
        [
            ok(1, json!({})),
            ok(2, json!({})),
            ok(3, json!({})),
            ok(4, json!({}))
        ]
    );
    assert_eq!(qmp.buffered(), 0);
}

#[test]
fn excerpts_are_cut() {
    let mut qmp = Qmp::new();
    let mut line = "é".repeat(150).into_bytes();
    line.extend(b"\r\n");
    qmp.feed(&line);
    let got = events(&mut qmp);
    // 200 bytes: 100 two-byte characters.
    assert!(
        matches!(&got[..], [Event::Garbage { excerpt, .. }] if *excerpt == format!("{}…", "é".repeat(100))),
        "{got:?}"
    );
}
