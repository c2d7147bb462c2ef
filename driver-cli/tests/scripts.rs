//! The binary end to end: Rhai test scripts from `examples/` on the tiny guest, and usage errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    tests::repo_root()
}

fn run(args: &[&str]) -> Output {
    run_with(args, &[])
}

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vm-test-driver"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .expect("cannot run vm-test-driver")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary with `args` and checks it exits 2 (usage or setup error) with every one of
/// `needles` in its error output.
fn exits_2_saying(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: no {needle:?} in: {err}");
    }
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmtd-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn hello_passes_and_failing_fails_with_its_location_and_output() {
    let tiny = tests::guest_start_script("tiny");
    let tiny = tiny.to_str().unwrap();

    // A quoted glob pattern stands for the start scripts it matches.
    let pattern = format!(
        "{}/run-*-vm",
        tests::guest_start_script("tiny")
            .parent()
            .unwrap()
            .display()
    );
    let o = run(&["--start-scripts", &pattern, "--", "examples/hello.rhai"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("subtest: waits react to the guest"));
    assert!(stderr(&o).contains("tiny: text /42 apples/ seen after"));
    assert!(
        stderr(&o).contains("(finished: making files, in "),
        "{}",
        stderr(&o)
    );

    let out = scratch("failing");
    let junit = out.join("junit.xml");
    let o = run(&[
        "--start-scripts",
        tiny,
        "--output-dir",
        out.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--",
        "examples/failing.rhai",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // The line and column of the failing command, not of the subtest that called it.
    assert!(
        err.contains("examples/failing.rhai:8:10: subtest \"fails on purpose\" failed"),
        "{err}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suite = &report.test_suites[0];
    assert_eq!((suite.tests, suite.failures), (2, 1), "{xml}");
    let failed: Vec<&str> = suite
        .test_cases
        .iter()
        .filter(|c| !matches!(c.status, quick_junit::TestCaseStatus::Success { .. }))
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["fails on purpose"], "{xml}");
    assert!(xml.contains("this is the output"), "{xml}");
    let log = std::fs::read_to_string(out.join("log.txt")).unwrap();
    assert!(
        log.contains("subtest: fails on purpose") && !log.contains('\u{1b}'),
        "{log}"
    );
    std::fs::remove_dir_all(&out).unwrap();
    assert!(
        err.contains("fails on purpose") && err.contains("this is the output"),
        "{err}"
    );
    assert!(!err.contains("subtest: never reached"), "{err}");
}

#[test]
fn usage_and_setup_errors_exit_2_naming_the_problem() {
    // A list option must not swallow the script: without `--` the script is taken as a start script.
    exits_2_saying(
        &["--start-scripts", "run-a-vm", "run-b-vm"],
        &["no test script given"],
    );

    exits_2_saying(
        &["--", "examples/no-such-test.rhai"],
        &["examples/no-such-test.rhai"],
    );

    let dir = std::env::temp_dir().join(format!("vmtd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.rhai");
    std::fs::write(&bad, "let x = ;\n").unwrap();
    exits_2_saying(
        &["--", bad.to_str().unwrap()],
        &["bad.rhai:1:", "syntax error"],
    );

    let ok = dir.join("ok.rhai");
    std::fs::write(&ok, "log(\"never runs\");\n").unwrap();
    let ok = ok.to_str().unwrap();
    exits_2_saying(
        &["--start-scripts", "/nonexistent/run-x-vm", "--", ok],
        &["/nonexistent/run-x-vm"],
    );

    let tiny = tests::guest_start_script("tiny");
    exits_2_saying(
        &[
            "--vlans",
            "0",
            "--start-scripts",
            tiny.to_str().unwrap(),
            "--",
            ok,
        ],
        &["vlan 0"],
    );

    // A directory stands for the start scripts in it.
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    for name in ["run-b-vm", "run-a-vm", "README"] {
        std::fs::write(scripts.join(name), "#!/bin/sh\n").unwrap();
    }
    let names = dir.join("names.rhai");
    std::fs::write(
        &names,
        "let n = machines.map(|m| m.name); if n != [\"a\", \"b\"] { throw `got ${n}`; }\n",
    )
    .unwrap();
    let o = run(&[
        "--start-scripts",
        scripts.to_str().unwrap(),
        "--",
        names.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    exits_2_saying(
        &["--start-scripts", empty.to_str().unwrap(), "--", ok],
        &["holds no run-<name>-vm"],
    );

    exits_2_saying(
        &["--start-scripts", "/nonexistent/run-*-vm", "--", ok],
        &["no start script matches /nonexistent/run-*-vm"],
    );

    exits_2_saying(
        &["--global-timeout", "0", "--", ok],
        &["--global-timeout must be a positive number of seconds, not 0"],
    );

    exits_2_saying(
        &["--timeout-factor", "0", "--", ok],
        &["--timeout-factor must be a positive number, not 0"],
    );
    // Forced TCG makes the refusal the same on hosts with and without KVM.
    let o = run_with(&["--require-kvm", "--", ok], &[("VMTD_ACCEL", "tcg")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("KVM is required but cannot be used: VMTD_ACCEL=tcg"),
        "{}",
        stderr(&o)
    );

    exits_2_saying(&["--no-such-flag"], &[]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn webserver_client_example_passes() {
    // Machines are named after their start scripts: link the bundled guests under the example's names.
    let dir = std::env::temp_dir().join(format!("vmtd-cli-ws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let webserver = dir.join("run-webserver-vm");
    let client = dir.join("run-client-vm");
    std::os::unix::fs::symlink(tests::guest_start_script("systemd"), &webserver).unwrap();
    std::os::unix::fs::symlink(tests::guest_start_script("tiny"), &client).unwrap();
    let o = run(&[
        "--start-scripts",
        webserver.to_str().unwrap(),
        client.to_str().unwrap(),
        "--vlans",
        "1",
        "--",
        "examples/webserver-client.rhai",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("subtest: the client fetches the page over VLAN 1"));
    assert!(stderr(&o).contains("subtest: a slow link slows every round trip"));
}

#[test]
fn a_state_dir_keeps_a_machines_disk_for_the_next_run_and_must_be_private() {
    let dir = scratch("state-dir");
    let state = dir.join("state");
    let systemd = tests::guest_start_script("systemd");
    let write = dir.join("write.rhai");
    std::fs::write(
        &write,
        "systemd.succeed(\"echo kept > /root/mark && sync\");\nsystemd.shutdown();\n",
    )
    .unwrap();
    let read = dir.join("read.rhai");
    std::fs::write(
        &read,
        "let got = systemd.succeed(\"cat /root/mark\");\nif got != \"kept\\n\" { throw `got ${got}`; }\n",
    )
    .unwrap();
    for script in [&write, &read] {
        let o = run(&[
            "--state-dir",
            state.to_str().unwrap(),
            "--start-scripts",
            systemd.to_str().unwrap(),
            "--",
            script.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert!(state.join("vm-state-systemd/systemd.qcow2").is_file());

    // Sockets in it drive a root shell: a directory others can enter is refused.
    use std::os::unix::fs::PermissionsExt;
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    exits_2_saying(
        &[
            "--state-dir",
            open.to_str().unwrap(),
            "--",
            read.to_str().unwrap(),
        ],
        &["has mode 755"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timeouts_sized_for_kvm_stretch_under_tcg_by_the_factor() {
    let dir = scratch("factor");
    let script = dir.join("late.rhai");
    // The file appears 3 s after the wait starts; the test allows 2 s, as if the guest ran on KVM.
    std::fs::write(
        &script,
        "tiny.succeed(\"(sleep 3; touch /tmp/late) >/dev/null 2>&1 &\");\n\
         tiny.wait_for_file(\"/tmp/late\", 2);\n",
    )
    .unwrap();
    let tiny = tests::guest_start_script("tiny");
    let args = |factor: Option<&'static str>| {
        let mut a = vec!["--start-scripts", tiny.to_str().unwrap()];
        if let Some(f) = factor {
            a.extend(["--timeout-factor", f]);
        }
        a.extend(["--", script.to_str().unwrap()]);
        a
    };
    let tcg = [("VMTD_ACCEL", "tcg")];
    let o = run_with(&args(None), &tcg);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("timeouts x5 (the default under TCG)"),
        "{}",
        stderr(&o)
    );
    let o = run_with(&args(Some("1")), &tcg);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("timeouts x1 (as given)")
            && stderr(&o).contains("timed out after 2s waiting for file /tmp/late to exist"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_unit_wait_reports_the_units_status_and_journal() {
    let out = scratch("failing-unit");
    let junit = out.join("junit.xml");
    let systemd = tests::guest_start_script("systemd");
    let o = run(&[
        "--start-scripts",
        systemd.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--",
        "examples/failing-unit.rhai",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let case = &report.test_suites[0].test_cases[0];
    let quick_junit::TestCaseStatus::NonSuccess { description, .. } = &case.status else {
        panic!("the subtest passed: {xml}");
    };
    let message = description.as_deref().unwrap_or_default();
    for needle in [
        "unit broken.service failed",
        "--- context of machine systemd ---",
        "status=3/NOTIMPLEMENTED",
        "journal of broken.service (last 50 lines):",
        "broken-service-says-goodbye",
        "status=3",
        "last ",
        "screenshot: ",
    ] {
        assert!(
            message.contains(needle),
            "no {needle:?} in the JUnit failure: {message}"
        );
    }
    assert!(out.join("systemd-failure-1.png").is_file());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_snapshot_cache_resumes_a_machine_booted_by_an_earlier_run() {
    let dir = scratch("snapshot-cache");
    let cache = dir.join("cache");
    let script = dir.join("once.rhai");
    // The restored machine predates the file: every run finds it missing. Its clock must not be
    // the snapshot's: it is checked against the host's time when the script was written.
    let write_script = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(
            &script,
            format!(
                "tiny.succeed(\"test ! -e /tmp/from-this-run && touch /tmp/from-this-run\");\n\
                 let guest = tiny.succeed(\"date +%s\");\n\
                 guest.trim();\n\
                 guest = parse_int(guest);\n\
                 if guest < {now} {{ throw `guest clock ${{guest}} is behind {now}`; }}\n"
            ),
        )
        .unwrap();
    };
    write_script();
    let tiny = tests::guest_start_script("tiny");
    let args = |vlans: bool| {
        let mut a = vec!["--snapshot-cache", cache.to_str().unwrap()];
        a.extend(["--start-scripts", tiny.to_str().unwrap()]);
        if vlans {
            a.extend(["--vlans", "1"]);
        }
        a.extend(["--", script.to_str().unwrap()]);
        a
    };
    let o = run(&args(false));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("saved into the snapshot cache"),
        "{}",
        stderr(&o)
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    write_script();
    let o = run(&args(false));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resuming from the snapshot cache"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("saved into the snapshot cache"));
    // Another network is another machine: booted and saved anew.
    let o = run(&args(true));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("saved into the snapshot cache"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn qmp_commands_events_and_polling_conditions_from_a_script() {
    let dir = scratch("qmp");
    let script = dir.join("qmp.rhai");
    std::fs::write(
        &script,
        r#"
start_all(); // QMP answers while the guest still boots
let s = tiny.qmp_command("query-status");
if s.status != "running" || s.running != true { throw `query-status: ${s}`; }
tiny.qmp_command("stop");
let e = tiny.wait_for_qmp_event("STOP", 60);
if e.name != "STOP" || type_of(e.timestamp) != "f64" { throw `not STOP: ${e}`; }
tiny.qmp_command("cont");
let bad = "";
try { tiny.wait_for_qmp_event(|ev| 1, 60); } catch (err) { bad = err; }
if !bad.contains("must return true or false") { throw `a filter returning 1: ${bad}`; }
tiny.qmp_command("stop");
tiny.qmp_command("cont");
let e = tiny.wait_for_qmp_event(|ev| ev.name == "RESUME", 60.0);
if e.name != "RESUME" { throw `not RESUME: ${e}`; }
let v = tiny.qmp_command("human-monitor-command", #{ "command-line": "info version" });
log(`QEMU version: ${v.trim()}`);
let failed = false;
try { tiny.qmp_command("no-such-command"); } catch (err) {
    if !err.contains("CommandNotFound") { throw err; }
    failed = true;
}
if !failed { throw "an unknown QMP command succeeded"; }
// polling_condition: the body's value comes back; a broken condition is named.
tiny.succeed("touch /tmp/up");
let n = polling_condition("up stays", || tiny.succeed("test -e /tmp/up"), || { tiny.succeed("true"); 7 });
if n != 7 { throw `the body's value: ${n}`; }
let msg = "";
try {
    polling_condition("up stays", 0, || tiny.succeed("test -e /tmp/up"), || {
        tiny.succeed("rm /tmp/up");
        tiny.succeed("true");
    });
} catch (err) { msg = err; }
if !msg.contains("polling condition \"up stays\" failed") { throw `not named: ${msg}`; }
tiny.succeed("(sleep 1; echo o > /proc/sysrq-trigger) >/dev/null 2>&1 &");
let e = tiny.wait_for_qmp_event(|ev| ev.name == "SHUTDOWN" && ev.data.guest);
log(`powered off: ${e.data.reason}`);
"#,
    )
    .unwrap();
    let tiny = tests::guest_start_script("tiny");
    let o = run(&[
        "--start-scripts",
        tiny.to_str().unwrap(),
        "--",
        script.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("QEMU version: "), "{err}");
    assert!(err.contains("powered off: guest-shutdown"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn machines_created_at_run_time_reboot_when_allowed_and_the_console_can_be_muted() {
    let dir = scratch("create-machine");
    let tiny = tests::guest_start_script("tiny");
    let script = dir.join("create.rhai");
    std::fs::write(
        &script,
        format!(
            r#"
let extra = create_machine("{tiny}", "extra");
if extra.name != "extra" {{ throw `named ${{extra.name}}`; }}
extra.start(true); // allow_reboot: the guest's reboot restarts it instead of ending QEMU
let boot = extra.succeed("cat /proc/sys/kernel/random/boot_id");
extra.reboot();
if extra.succeed("cat /proc/sys/kernel/random/boot_id") == boot {{ throw "not rebooted"; }}
serial_stdout_off();
extra.succeed("echo muted-line > /dev/ttyS0");
extra.wait_for_console_text("muted-line");
serial_stdout_on();
extra.succeed("echo shown-line > /dev/ttyS0");
extra.wait_for_console_text("shown-line");
let dup = "";
try {{ create_machine("{tiny}", "extra"); }} catch (e) {{ dup = e; }}
if !dup.contains("extra") {{ throw `a second machine named extra: ${{dup}}`; }}
"#,
            tiny = tiny.display()
        ),
    )
    .unwrap();
    let o = run(&["--", script.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    // Muted lines are still recorded (the wait saw it) but not logged.
    assert!(log.contains("extra# shown-line"), "{log}");
    assert!(!log.contains("extra# muted-line"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}
