//! The Debian systemd guest (bash as the backdoor shell) under TCG: boot, commands, clean poweroff.

use std::time::{Duration, Instant};
use tests::driver_with;

#[test]
fn boot_commands_and_shutdown() {
    let (_driver, vm) = driver_with("systemd");
    assert_eq!(vm.name(), "systemd");
    let t0 = Instant::now();
    vm.connect().unwrap();
    eprintln!(
        "systemd guest: backdoor ready {:.2} s after start",
        t0.elapsed().as_secs_f64()
    );
    assert!(vm.succeed("uname -r").unwrap().contains("cloud-amd64"));
    assert!(!vm.succeed("echo $BASH_VERSION").unwrap().trim().is_empty());
    // The backdoor comes up before the boot ends; systemd reports when it has.
    let state = vm.execute("systemctl is-system-running --wait").unwrap().1;
    eprintln!(
        "systemd guest: system {} {:.2} s after start",
        state.trim(),
        t0.elapsed().as_secs_f64()
    );
    assert!(["running", "degraded"].contains(&state.trim()), "{state}");
    assert_eq!(vm.execute("exit 3").unwrap().0, 3);
    assert_eq!(vm.succeed("cat <<'EOF'\n$x (\nEOF").unwrap(), "$x (\n");
    let t = Instant::now();
    assert_eq!(vm.succeed("cat; sleep 100 & echo bg").unwrap(), "bg\n");
    assert!(t.elapsed() < Duration::from_secs(10));
    let (status, out) = vm
        .execute_bytes(
            b"head -c 1000000 /dev/urandom | base64 -w0",
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!((status, out.len()), (0, 1333336));

    // Units: waits, info, and the failure paths, which must end at once rather than at the timeout.
    vm.wait_for_unit("multi-user.target", None).unwrap();
    let info = vm.get_unit_info("systemd-journald.service").unwrap();
    assert_eq!(info["ActiveState"], "active");
    vm.require_active_unit("systemd-journald.service").unwrap();
    vm.write_file(
        "/etc/systemd/system/broken.service",
        b"[Service]\nExecStart=/bin/sh -c 'echo broken-unit-says-bye; exit 7'\n",
    )
    .unwrap();
    vm.write_file(
        "/etc/systemd/system/sleeper.service",
        b"[Service]\nExecStart=/bin/sleep 1000\n",
    )
    .unwrap();
    vm.succeed("systemctl daemon-reload").unwrap();
    vm.start_job("broken.service").unwrap();
    let t = Instant::now();
    let err = vm
        .wait_for_unit("broken.service", None)
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert!(err.contains("unit broken.service failed"), "{err}");
    assert!(
        err.contains("broken-unit-says-bye"),
        "the journal is shown: {err}"
    );
    let err = vm
        .wait_for_unit("sleeper.service", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no job is pending"), "{err}");
    assert!(vm.require_active_unit("sleeper.service").is_err());
    assert_eq!(vm.start_job("sleeper.service").unwrap().0, 0);
    vm.wait_for_unit("sleeper.service", Some(Duration::from_secs(60)))
        .unwrap();
    let (status, _) = vm.systemctl("is-active sleeper.service").unwrap();
    assert_eq!(status, 0);
    assert_eq!(vm.stop_job("sleeper.service").unwrap().0, 0);

    // Units still activating are followed through their jobs in the guest: a wait that times out
    // names the state and leaves no job or unit of its own; a failing start fails the wait.
    vm.write_file(
        "/etc/systemd/system/slow.service",
        b"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 8\n",
    )
    .unwrap();
    vm.write_file(
        "/etc/systemd/system/slow-fail.service",
        b"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'sleep 2; exit 3'\n",
    )
    .unwrap();
    vm.succeed(
        "systemctl daemon-reload; systemctl start --no-block slow.service slow-fail.service",
    )
    .unwrap();
    let err = vm
        .wait_for_unit("slow.service", Some(Duration::from_secs(4)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ActiveState=activating"), "{err}");
    let left = vm
        .succeed(
            "systemctl list-jobs --no-legend; systemctl list-units --all --no-legend 'vmtd-wait*'",
        )
        .unwrap();
    assert!(!left.contains("vmtd-wait"), "{left}");
    let err = vm
        .wait_for_unit("slow-fail.service", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unit slow-fail.service failed"), "{err}");
    // Named as systemctl takes it, without `.service`.
    vm.wait_for_unit("slow", Some(Duration::from_secs(60)))
        .unwrap();
    let failed = vm
        .succeed("systemctl list-units --failed --no-legend")
        .unwrap();
    assert!(!failed.contains("vmtd-wait"), "{failed}");
    // A manager that cannot load the waiter's template (here: a directory in its place) is
    // followed through a transient scope instead, not by polling.
    vm.succeed(
        "rm /run/systemd/system/vmtd-wait@.target; mkdir /run/systemd/system/vmtd-wait@.target; \
         systemd-run --no-block -p Type=oneshot -p RemainAfterExit=yes --unit=later sleep 2",
    )
    .unwrap();
    vm.wait_for_unit("later", Some(Duration::from_secs(60)))
        .unwrap();
    let scopes = vm
        .succeed("rmdir /run/systemd/system/vmtd-wait@.target; journalctl -b -o cat | grep -c 'Started vmtd-wait-.*scope'")
        .unwrap();
    assert_eq!(scopes.trim(), "1", "one scope, no polling");
    // An instance of a template, `@` and `-` in its name: the waiter's instance name holds it
    // as it is (%i; systemd 252 takes a second `@` there).
    vm.write_file(
        "/etc/systemd/system/late@.service",
        b"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 2\n",
    )
    .unwrap();
    vm.succeed("systemctl daemon-reload; systemctl start --no-block late@a-b.service")
        .unwrap();
    vm.wait_for_unit("late@a-b.service", Some(Duration::from_secs(60)))
        .unwrap();
    let reached = vm
        .succeed(
            "journalctl -b -o cat | grep -c 'Reached target vmtd-wait@late@a-b.service.target'",
        )
        .unwrap();
    assert_eq!(
        reached.trim(),
        "1",
        "the waiter target, not the scope or polling"
    );
    assert!(vm.require_active_unit("late@a-b.service").is_ok());

    // OpenBSD nc (`nc -z`) in this guest.
    vm.succeed(
        "mkdir -p /tmp/w; (sleep 0.5; exec busybox httpd -f -p 8080 -h /tmp/w) >/dev/null 2>&1 &",
    )
    .unwrap();
    vm.wait_for_open_port(8080, None, Some(Duration::from_secs(60)))
        .unwrap();
    vm.succeed("pkill -f 'httpd -f -p 8080'").unwrap();
    vm.wait_for_closed_port(8080, None, Some(Duration::from_secs(60)))
        .unwrap();

    // NixOS's newer methods.
    assert_eq!(
        vm.get_unit_property("sleeper.service", "ActiveState")
            .unwrap(),
        "inactive"
    );
    vm.require_unit_state("sleeper.service", "inactive")
        .unwrap();
    let err = vm
        .require_unit_state("sleeper.service", "active")
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected active, it is inactive"), "{err}");
    let err = vm
        .get_unit_property("sleeper.service", "Not a name")
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a property name"), "{err}");
    vm.succeed("(sleep 0.5; exec nc -lkU /tmp/app.sock) >/dev/null 2>&1 &")
        .unwrap();
    vm.wait_for_open_unix_socket("/tmp/app.sock", false, Some(Duration::from_secs(60)))
        .unwrap();
    let err = vm
        .wait_for_open_unix_socket("/tmp/none.sock", false, Some(Duration::from_secs(2)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unix socket /tmp/none.sock to accept connections"),
        "{err}"
    );
    assert_eq!(vm.copy_from_machine("/etc/hostname").unwrap(), b"systemd\n");

    // A user's units (NixOS's `user` argument): alice's manager, started as logind would.
    vm.succeed("useradd -m alice && systemctl start user@$(id -u alice).service")
        .unwrap();
    vm.write_file(
        "/etc/systemd/user/hello.service",
        b"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/echo hello-from-alice\n",
    )
    .unwrap();
    assert_eq!(vm.systemctl_as("daemon-reload", "alice").unwrap().0, 0);
    let err = vm
        .wait_for_user_unit("hello.service", "alice", Some(Duration::from_secs(60)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no job is pending"), "{err}");
    assert_eq!(
        vm.systemctl_as("start hello.service", "alice").unwrap().0,
        0
    );
    vm.wait_for_user_unit("hello.service", "alice", Some(Duration::from_secs(60)))
        .unwrap();
    let info = vm.get_user_unit_info("hello.service", "alice").unwrap();
    assert_eq!(info["ActiveState"], "active");
    // Units that turn active, or fail, while the wait runs: alice's manager tells when their job
    // ends, through the driver's waiter target, which it loads from /run/systemd/user.
    let run_as_alice = |unit: &str, cmd: &str| {
        vm.succeed(format!(
            "su -l alice --shell /bin/sh -c 'XDG_RUNTIME_DIR=/run/user/$(id -u) systemd-run \
             --user --no-block --unit={unit} -p Type=oneshot -p RemainAfterExit=yes {cmd}'"
        ))
        .unwrap()
    };
    run_as_alice("later", "sleep 2");
    vm.wait_for_user_unit("later", "alice", Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(
        vm.get_user_unit_info("later", "alice").unwrap()["ActiveState"],
        "active"
    );
    let waiter = vm
        .get_user_unit_info("vmtd-wait@later.service.target", "alice")
        .unwrap();
    assert_eq!(waiter["LoadState"], "loaded", "{waiter:?}");
    assert_eq!(waiter["ActiveState"], "inactive", "{waiter:?}");
    run_as_alice("doomed", "sh -c \"sleep 1; exit 3\"");
    let err = vm
        .wait_for_user_unit("doomed", "alice", Some(Duration::from_secs(60)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unit doomed failed"), "{err}");
    // The system manager has no such unit.
    assert_eq!(
        vm.get_unit_info("hello.service").unwrap()["LoadState"],
        "not-found"
    );

    // Virtual terminals: the login prompt on tty1, and text written to it.
    vm.wait_until_tty_matches(1, "login: ", Some(Duration::from_secs(60)))
        .unwrap();
    vm.succeed("(sleep 1; echo tty-marker-$((6 * 7)) > /dev/tty1) >/dev/null 2>&1 &")
        .unwrap();
    vm.wait_until_tty_matches(1, "tty-marker-42", Some(Duration::from_secs(60)))
        .unwrap();
    let text = vm.get_tty_text(1).unwrap();
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let err = vm
        .wait_until_tty_matches(1, "never-there", Some(Duration::from_secs(2)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/never-there/ on tty1") && err.contains("tty-marker-42"),
        "{err}"
    );
    vm.dump_tty_contents(1).unwrap();
    // Typing into the serial console: a reader on it gets the line.
    vm.succeed("(head -n 1 /dev/ttyS0 > /tmp/typed) >/dev/null 2>&1 &")
        .unwrap();
    vm.succeed("sleep 0.5").unwrap();
    vm.send_console("typed-on-the-serial-console\n").unwrap();
    vm.wait_for_file("/tmp/typed", Some(Duration::from_secs(30)))
        .unwrap();
    vm.wait_until_succeeds(
        "grep -qx typed-on-the-serial-console /tmp/typed",
        Some(Duration::from_secs(30)),
    )
    .unwrap();

    vm.shutdown().unwrap();
    assert!(!vm.is_running());
}
