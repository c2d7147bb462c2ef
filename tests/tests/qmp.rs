//! QMP on the tiny guest: commands and their error replies, events awaited (STOP, RESUME, SHUTDOWN),
//! an event that arrived before the wait, timeouts naming what was awaited, and a start script that
//! does not pass the QMP option on to QEMU.

use driver::serde_json::json;
use driver::{Driver, Error, StartCommand};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tests::{driver_with, guest_start_script, init_logging};

const WAIT: Option<Duration> = Some(Duration::from_secs(120));

#[test]
fn commands_events_and_shutdown() {
    let (_driver, vm) = driver_with("tiny");
    let err = vm.qmp_command("query-status", None).unwrap_err();
    assert!(matches!(err, Error::NotRunning(_)), "{err}");
    vm.succeed("true").unwrap();

    let status = vm.qmp_command("query-status", None).unwrap();
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(status["running"], true, "{status}");

    // An error reply names QEMU's class and description.
    let err = vm.qmp_command("no-such-command", None).unwrap_err();
    match err.cause() {
        Error::QmpCommandFailed { class, desc, .. } => {
            assert_eq!(class, "CommandNotFound");
            assert!(desc.contains("no-such-command"), "{desc}");
        }
        other => panic!("not a QMP error reply: {other}"),
    }
    assert!(err.to_string().contains("CommandNotFound"), "{err}");
    let err = vm
        .qmp_command("query-status", Some(json!([1, 2])))
        .unwrap_err();
    assert!(err.to_string().contains("must be a JSON object"), "{err}");

    // stop/cont and their events; the guest is paused in between.
    assert_eq!(vm.qmp_command("stop", None).unwrap(), json!({}));
    let stop = vm.wait_for_qmp_event_named("STOP", WAIT).unwrap();
    assert_eq!(stop.name, "STOP");
    let since_emitted = stop.timestamp.unwrap().elapsed().unwrap_or_default();
    assert!(since_emitted < Duration::from_secs(60), "{since_emitted:?}");
    assert_eq!(
        vm.qmp_command("query-status", None).unwrap()["status"],
        "paused"
    );
    vm.qmp_command("cont", None).unwrap();
    let resume = vm.wait_for_qmp_event(|e| e.name == "RESUME", WAIT).unwrap();
    assert_eq!(resume.name, "RESUME");
    assert_eq!(vm.succeed("echo back").unwrap(), "back\n");

    let version = vm
        .qmp_command(
            "human-monitor-command",
            Some(json!({"command-line": "info version"})),
        )
        .unwrap();
    let version = version.as_str().unwrap();
    assert!(
        version.trim().starts_with(|c: char| c.is_ascii_digit()),
        "{version:?}"
    );
    let qmp_version = vm.qmp_command("query-version", None).unwrap();
    let major = qmp_version["qemu"]["major"].as_u64().unwrap();
    assert!(version.starts_with(&format!("{major}.")), "{version:?}");

    // A wait that times out names the event awaited and the events seen.
    let t = Instant::now();
    let err = vm
        .wait_for_qmp_event_named("NO_SUCH_EVENT", Some(Duration::from_millis(500)))
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let msg = err.to_string();
    assert!(matches!(err.cause(), Error::Timeout { .. }), "{msg}");
    assert!(
        msg.contains("QMP event NO_SUCH_EVENT") && msg.contains("STOP") && msg.contains("RESUME"),
        "{msg}"
    );

    // The guest powers off by itself: SHUTDOWN says so, then QEMU exits.
    vm.succeed("(sleep 1; echo o > /proc/sysrq-trigger) >/dev/null 2>&1 &")
        .unwrap();
    let shutdown = vm.wait_for_qmp_event_named("SHUTDOWN", WAIT).unwrap();
    assert_eq!(shutdown.data["guest"], true, "{:?}", shutdown.data);
    assert_eq!(shutdown.data["reason"], "guest-shutdown");
    // Nothing more can come: a wait fails at once, naming what it awaited.
    let t = Instant::now();
    let err = vm.wait_for_qmp_event_named("RESET", WAIT).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let msg = err.to_string();
    assert!(matches!(err.cause(), Error::MachineGone { .. }), "{msg}");
    assert!(
        msg.contains("QEMU exited while waiting for QMP event RESET"),
        "{msg}"
    );
    vm.wait_for_shutdown().unwrap();

    // Started again: a fresh queue. An event that arrives while no one waits is not lost, even when
    // QEMU has exited since.
    vm.succeed("true").unwrap();
    assert_eq!(
        vm.qmp_command("query-status", None).unwrap()["status"],
        "running"
    );
    assert_eq!(vm.qmp_command("quit", None).unwrap(), json!({}));
    vm.wait_for_shutdown().unwrap();
    assert!(!vm.is_running());
    let shutdown = vm.wait_for_qmp_event_named("SHUTDOWN", WAIT).unwrap();
    assert_eq!(shutdown.data["guest"], false, "{:?}", shutdown.data);
    assert_eq!(shutdown.data["reason"], "host-qmp-quit");
    let err = vm.qmp_command("query-status", None).unwrap_err();
    assert!(err.to_string().contains("QEMU"), "{err}");
}

#[test]
fn a_start_script_without_the_qmp_option_has_no_qmp() {
    init_logging();
    let dir = std::env::temp_dir().join(format!("vmtd-qmp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Passes every option of the driver on to the tiny guest's script except `-qmp <socket>`.
    let script = dir.join("run-noqmp-vm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nskip=\nfor a do\n  shift\n  if [ -n \"$skip\" ]; then skip=; continue; fi\n  \
             if [ \"$a\" = -qmp ]; then skip=1; continue; fi\n  set -- \"$@\" \"$a\"\ndone\n\
             exec '{}' \"$@\"\n",
            guest_start_script("tiny").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let driver = Driver::with_options(&driver::Options {
        timeout_factor: Some(1.0),
        ..Default::default()
    })
    .unwrap();
    let vm = driver.add_machine(StartCommand::Script(script)).unwrap();
    assert_eq!(vm.name(), "noqmp");
    // Everything else works as before.
    assert_eq!(vm.succeed("echo up").unwrap(), "up\n");
    assert!(vm
        .send_monitor_command("info status")
        .unwrap()
        .contains("running"));
    let t = Instant::now();
    let err = vm.qmp_command("query-status", None).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        err.to_string().lines().next().unwrap(),
        "QEMU of machine noqmp offers no QMP socket (its start script does not pass the driver's \
         -qmp option on to QEMU)"
    );
    let err = vm.wait_for_qmp_event_named("SHUTDOWN", WAIT).unwrap_err();
    assert!(matches!(err.cause(), Error::NoQmp(_)), "{err}");
    vm.shutdown().unwrap();
    drop(driver);
    std::fs::remove_dir_all(&dir).unwrap();
}
