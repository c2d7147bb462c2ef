//! Two systemd guests served together: commands sent to both before either reply is awaited, and
//! one wait for a unit on both at once.

use driver::{Driver, Error, StartCommand};
use std::time::{Duration, Instant};
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

    // A failure on one machine ends the wait at once, though the other's unit is still starting;
    // the other's wait is cancelled in its guest.
    let forever = "-p Type=oneshot -p RemainAfterExit=yes sleep 1000";
    a.succeed("systemd-run --no-block --unit=late-bad -p Type=oneshot sh -c 'sleep 1; exit 4'")
        .unwrap();
    b.succeed(format!("systemd-run --no-block --unit=late-bad {forever}"))
        .unwrap();
    let t0 = Instant::now();
    let err = driver
        .wait_for_unit_on_all(&[&a, &b], "late-bad", Some(Duration::from_secs(60)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unit late-bad failed"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "the failure on a was seen after {:?}, not at once",
        t0.elapsed()
    );
    let no_waiter = |m: &driver::Machine| {
        let jobs = m.succeed("systemctl list-jobs --no-legend; systemctl list-units --all --no-legend 'vmtd-wait*'").unwrap();
        assert!(!jobs.contains("vmtd-wait"), "{}: {jobs}", m.name());
    };
    no_waiter(&b);

    // At the timeout the machines whose unit is not active are named, with its state, and
    // nothing of the wait is left in either guest.
    a.succeed(format!("systemd-run --no-block --unit=slow {forever}"))
        .unwrap();
    b.succeed("systemd-run --unit=slow -p Type=oneshot -p RemainAfterExit=yes true")
        .unwrap();
    let err = driver
        .wait_for_unit_on_all(&[&a, &b], "slow", Some(Duration::from_secs(2)))
        .unwrap_err();
    match err.cause() {
        Error::Timeout { machine, last, .. } => {
            assert_eq!(machine, "a", "{err}");
            assert!(last.contains("a: ActiveState=activating"), "{err}");
        }
        _ => panic!("expected a timeout: {err}"),
    }
    no_waiter(&a);
    no_waiter(&b);
    driver.stop_all();
}
