//! The NixOS testScript API beyond the basics (`must_raise`, `polling_condition`, `vlans`, QMP,
//! `shell_interact`, the machine's attributes, subtests as report steps), through the binary:
//! our own scripts in `tests/py/`, without a machine, on the tiny guest, and what needs systemd
//! on the systemd guest (one boot).

mod common;

use common::{scratch, tiny, BIN};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the binary with `args` from the repository root, stdin not a terminal (as under CI).
fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(tests::repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run vm-test-driver")
}

/// Asserts the run passed and its script said `done`; the log is in the message otherwise.
fn assert_passed(o: &Output, done: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains(done), "{err}");
    err
}

#[test]
fn the_api_without_machines_must_raise_retry_polling_conditions_and_vlans() {
    let dir = scratch("py-api-none");
    let out = dir.join("out");
    let o = run(&[
        "--vlans",
        "3",
        "-o",
        out.to_str().unwrap(),
        "--",
        "driver-cli/tests/py/no_machine.py",
    ]);
    let err = assert_passed(&o, "no-machine API: all checks passed");
    // The failed subtests are reported, yet the script that expected them passes.
    assert!(
        err.contains("subtest \"fails on purpose\" failed: OSError: inner trouble"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_api_on_the_tiny_guest_and_subtests_as_report_steps() {
    let dir = scratch("py-api-tiny");
    let out = dir.join("out");
    let tiny = tiny();
    let o = run(&[
        "--start-scripts",
        &tiny,
        "--vm-names",
        "machine",
        "-o",
        out.to_str().unwrap(),
        "--",
        "driver-cli/tests/py/tiny.py",
    ]);
    let err = assert_passed(&o, "tiny API: all checks passed");
    assert!(
        err.contains("not interacting: stdin is not a terminal"),
        "{err}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let steps = report["steps"].as_array().unwrap();
    let step = |label: &str| {
        steps
            .iter()
            .find(|s| s["label"] == label)
            .unwrap_or_else(|| panic!("no step {label:?} in {steps:#?}"))
    };
    let (outer, inner) = (step("subtest: outer step"), step("subtest: inner step"));
    assert_eq!(outer["depth"], 0);
    assert_eq!(inner["depth"], 1);
    let span = |s: &serde_json::Value| (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
    let ((o0, o1), (i0, i1)) = (span(outer), span(inner));
    assert!(o0 <= i0 && i1 <= o1, "{outer} {inner}");
    // The inner subtest's command is a step inside it.
    assert!(steps
        .iter()
        .any(|s| s["label"] == "machine: must succeed: true"
            && s["depth"] == 2
            && span(s).0 >= i0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unit_states_fail_in_nixos_words_on_the_systemd_guest() {
    let dir = scratch("py-api-systemd");
    let systemd = tests::guest_start_script("systemd");
    assert!(Path::new(&systemd).exists());
    let o = run(&[
        "--start-scripts",
        systemd.to_str().unwrap(),
        "--vm-names",
        "machine",
        "-o",
        dir.to_str().unwrap(),
        "--",
        "driver-cli/tests/py/systemd.py",
    ]);
    assert_passed(&o, "systemd API: all checks passed");
    std::fs::remove_dir_all(&dir).unwrap();
}
