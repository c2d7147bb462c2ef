//! Two systemd guests served together: commands sent to both before either reply is awaited, and
//! one wait for a unit on both, polled in one loop.

use driver::{Driver, Error, StartCommand};
use std::time::Duration;
use tests::{guest_start_script, init_logging};

#[test]
fn commands_and_unit_waits_on_two_machines_at_once() {
    init_logging();
    let driver = Driver::new().unwrap();
    let script = guest_start_script("systemd");
    let a = driver
        .add_named_machine("a", StartCommand::Script(script.clone()))
        .unwrap();
    let b = driver
        .add_named_machine("b", StartCommand::Script(script))
        .unwrap();
    driver.start_all().unwrap();
    driver
        .wait_for_unit_on_all(&[&a, &b], "multi-user.target", None)
        .unwrap();

    let replies = driver
        .execute_on_all(
            &[(&a, "sleep 1; echo from-a"), (&b, "echo from-b; exit 3")],
            None,
        )
        .unwrap();
    assert_eq!(
        replies,
        vec![(0, "from-a\n".to_string()), (3, "from-b\n".to_string())]
    );
    let err = driver
        .execute_on_all(&[(&a, "true"), (&a, "true")], None)
        .unwrap_err();
    assert!(err.to_string().contains("named twice"), "{err}");
    // A command still running at the timeout is stopped; the machines stay usable.
    let err = driver
        .execute_on_all(
            &[(&a, "true"), (&b, "sleep 100")],
            Some(Duration::from_secs(2)),
        )
        .unwrap_err();
    assert!(
        matches!(err.cause(), Error::Timeout { machine, .. } if machine == "b"),
        "{err}"
    );
    assert_eq!(b.succeed("echo free").unwrap(), "free\n");

    // A unit that becomes active later on one of them: the joint wait sees it on both.
    a.succeed(
        "systemd-run --no-block --unit=both -p Type=oneshot -p RemainAfterExit=yes sh -c 'sleep 2'",
    )
    .unwrap();
    b.succeed("systemd-run --unit=both -p Type=oneshot -p RemainAfterExit=yes true")
        .unwrap();
    driver
        .wait_for_unit_on_all(&[&a, &b], "both.service", Some(Duration::from_secs(60)))
        .unwrap();
    // A unit that fails on one machine fails the wait, with that machine's journal.
    a.succeed("systemd-run --unit=bad -p Type=oneshot sh -c 'echo bad-unit-says-bye; exit 4'")
        .unwrap_or_default();
    b.succeed("systemd-run --unit=bad -p Type=oneshot -p RemainAfterExit=yes true")
        .unwrap();
    let err = driver
        .wait_for_unit_on_all(&[&a, &b], "bad.service", Some(Duration::from_secs(60)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unit bad.service failed"), "{err}");
    driver.stop_all();
}
