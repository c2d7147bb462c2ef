//! Python test scripts (NixOS's testScripts) through the binary: on the tiny guest, and the
//! errors a script can make, which need no machine.

mod common;

use common::{
    assert_nothing_left, junit_cases, scratch, state_dir, tiny, wait_exit, Running, Seen, BIN,
    PATIENCE,
};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary with `args` from the repository root.
fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(tests::repo_root())
        .output()
        .expect("cannot run vm-test-driver")
}

#[test]
fn hello_py_passes_with_a_junit_case_per_subtest() {
    let dir = scratch("py-hello");
    let junit = dir.join("junit.xml");
    let (out, j) = (dir.join("out"), junit.to_str().unwrap());
    let tiny = tiny();
    let o = run(&[
        "--start-scripts",
        &tiny,
        "-o",
        out.to_str().unwrap(),
        "--junit",
        j,
        "--",
        "examples/hello.py",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("subtest: waits react to the guest"), "{err}");
    let (xml, suite, names) = junit_cases(&junit);
    assert_eq!(
        names,
        [
            "the guest runs commands > failures raise NixOS's exceptions",
            "the guest runs commands",
            "waits react to the guest",
        ],
        "{xml}"
    );
    assert_eq!(suite.failures, 0, "{xml}");
    assert!(xml.contains("kernel "), "{xml}");
    assert!(out.join("report.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_assert_exits_1_at_its_line_and_stops_the_machine() {
    let dir = scratch("py-assert");
    let script = dir.join("test.py");
    std::fs::write(
        &script,
        "start_all()\n\
         with subtest(\"outer\"):\n    \
             with subtest(\"inner\"):\n        \
                 x = tiny.succeed(\"echo 1\")\n        \
                 assert x == \"2\\n\", f\"got {x!r}\"\n\
         log.info(\"never reached\")\n",
    )
    .unwrap();
    let junit = dir.join("junit.xml");
    let tiny = tiny();
    let o = run(&[
        "--keep-vm-state",
        "--start-scripts",
        &tiny,
        "--junit",
        junit.to_str().unwrap(),
        "--",
        script.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("test.py:5: AssertionError: got '1\\n'"),
        "{err}"
    );
    assert!(!err.contains("never reached"), "{err}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suite = &report.test_suites[0];
    assert_eq!((suite.tests, suite.failures), (2, 2), "{xml}");
    assert!(xml.contains("subtest &quot;inner&quot; failed"), "{xml}");
    let state = state_dir(&err);
    assert_nothing_left(&state);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn syntax_errors_exit_2_and_name_errors_1_with_file_and_line() {
    let dir = scratch("py-errors");
    let bad = dir.join("bad.py");
    std::fs::write(&bad, "x = 1\ny = (\n").unwrap();
    let o = run(&["--", bad.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.py:2:5: syntax error: '(' was never closed"),
        "{err}"
    );

    let name = dir.join("name.py");
    std::fs::write(&name, "x = 1\nnot_defined()\n").unwrap();
    let o = run(&["--", name.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("name.py:2: NameError: name 'not_defined' is not defined"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_global_timeout_and_ctrl_c_stop_a_busy_loop() {
    let dir = scratch("py-loop");
    let script = dir.join("loop.py");
    std::fs::write(
        &script,
        "try:\n    while True:\n        pass\nexcept Exception:\n    log.info(\"swallowed\")\n",
    )
    .unwrap();
    let o = run(&["--global-timeout", "2", "--", script.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // The loop's line (CPython says which of the loop's two lines the jump back is on).
    assert!(
        err.contains("loop.py:2: Interrupted: the global timeout of 2 s ran out")
            || err.contains("loop.py:3: Interrupted: the global timeout of 2 s ran out"),
        "{err}"
    );
    assert!(!err.contains("swallowed"), "{err}");

    let child = Command::new(BIN)
        .args(["--", script.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("Interrupted: interrupted by SIGINT"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The binary in `--interactive` mode on `script`, its stdin a pipe the test writes lines into.
fn repl_on(
    script: &std::path::Path,
    tiny: &str,
) -> (Running, std::process::ChildStdin, Seen, Seen) {
    let mut child = Command::new(BIN)
        .args(["--keep-vm-state", "-I", "--start-scripts", tiny, "--"])
        .arg(script)
        .current_dir(tests::repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run vm-test-driver");
    let stdin = child.stdin.take().unwrap();
    let stdout = Seen::collect(child.stdout.take().unwrap());
    let stderr = Seen::collect(child.stderr.take().unwrap());
    (Running(child), stdin, stdout, stderr)
}

/// Ends the REPL's input, which must end the session with exit 0 and nothing of it left running;
/// removes the run's state and `dir`; returns the REPL's stderr.
fn leave_repl(
    mut child: Running,
    stdin: std::process::ChildStdin,
    stderr: &Seen,
    dir: &std::path::Path,
) -> String {
    drop(stdin);
    let code = wait_exit(&mut child.0, PATIENCE);
    let err = stderr.text();
    assert_eq!(code, 0, "{err}");
    let state = state_dir(&err);
    assert_nothing_left(&state);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    err
}

#[test]
fn the_repl_has_the_scripts_globals_runs_it_and_leaves_on_end_of_input() {
    let dir = scratch("py-repl");
    let script = dir.join("test.py");
    std::fs::write(
        &script,
        "log.info(\"the script ran\")\nfrom_script = tiny.succeed(\"echo $((6*7))\").strip()\n",
    )
    .unwrap();
    let (child, mut stdin, stdout, stderr) = repl_on(&script, &tiny());
    // Everything at once: lines are read one at a time, blocks end at a blank line.
    stdin
        .write_all(
            b"x = [m.name for m in machines]\n\
              x\n\
              for i in range(2):\n    print('loop', i)\n\n\
              test_script()\n\
              print('from the script:', from_script)\n\
              tiny.succed('true')\n\
              print(tiny.execute('exit 3'))\n",
        )
        .unwrap();
    let err = leave_repl(child, stdin, &stderr, &dir);
    let out = stdout.text();
    assert!(out.contains("machines: tiny (not started"), "{out}");
    assert!(out.contains("['tiny']\nloop 0\nloop 1\n"), "{out}");
    assert!(out.contains("from the script: 42\n"), "{out}");
    assert!(out.contains("(3, '')"), "{out}");
    assert!(err.contains("the script ran"), "{err}");
    // An error is shown and the session goes on.
    assert!(
        err.contains("object has no attribute 'succed'. Did you mean: 'succeed'?"),
        "{err}"
    );
}

#[test]
fn ctrl_c_in_the_repl_interrupts_a_driver_call_or_a_loop_and_the_session_goes_on() {
    let dir = scratch("py-repl-ctrl-c");
    let script = dir.join("test.py");
    std::fs::write(&script, "start_all()\n").unwrap();
    let (child, mut stdin, stdout, stderr) = repl_on(&script, &tiny());
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    let sigint = || nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    stdin.write_all(b"tiny.succeed('sleep 600')\n").unwrap();
    let at = stderr.wait_for("must succeed: sleep 600", 0);
    std::thread::sleep(Duration::from_millis(300));
    sigint();
    let at = stderr.wait_for("(interrupted; the machines keep running)", at);
    // Python that computes without calling the driver is interrupted too.
    stdin.write_all(b"while True:\n    pass\n\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sigint();
    let at = stderr.wait_for("(interrupted; the machines keep running)", at);
    stdin
        .write_all(b"print('after', tiny.succeed('echo ok').strip())\n")
        .unwrap();
    stdout.wait_for("after ok", 0);
    let err = leave_repl(child, stdin, &stderr, &dir);
    assert!(
        err[..at].contains("Interrupted: interrupted by SIGINT"),
        "{err}"
    );
}

#[test]
fn a_directory_of_py_and_rhai_scripts_runs_each_in_its_own_driver_with_junit() {
    let base = scratch("py-suite");
    let dir = base.join("suite");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("good.py"),
        "with subtest(\"echoes\"):\n    assert tiny.succeed(\"echo hi\") == \"hi\\n\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.py"),
        "with subtest(\"fails\"):\n    tiny.succeed(\"exit 4\")\n",
    )
    .unwrap();
    std::fs::write(dir.join("plain.rhai"), "log(\"rhai ran\");\n").unwrap();
    let junit = base.join("all.xml");
    let tiny = tiny();
    let o = run(&[
        "-j",
        "2",
        "--junit",
        junit.to_str().unwrap(),
        "--start-scripts",
        &tiny,
        "--",
        dir.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line = |name: &str| {
        err.lines()
            .find(|l| l.contains(&format!("  {name:5}  ")))
            .unwrap_or_else(|| panic!("no summary line for {name}: {err}"))
            .to_string()
    };
    assert!(line("good").contains("passed"), "{err}");
    assert!(line("plain").contains("passed"), "{err}");
    assert!(line("bad").contains("failed (exit status 1)"), "{err}");
    assert!(err.contains("1 of 3 test scripts failed: bad"), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("[bad] ")
            && l.contains("command `exit 4` failed (exit code 4)")),
        "{err}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suites: Vec<(&str, usize, usize)> = report
        .test_suites
        .iter()
        .map(|s| (s.name.as_str(), s.tests, s.failures))
        .collect();
    assert_eq!(
        suites,
        [("bad", 1, 1), ("good", 1, 0), ("plain", 1, 0)],
        "{xml}"
    );
    assert!(xml.contains("name=\"fails\""), "{xml}");
    assert!(xml.contains("name=\"echoes\""), "{xml}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn typecheck_passes_a_correct_script_and_names_a_misspelt_method_and_keyword() {
    let dir = scratch("py-typecheck");
    let bad = dir.join("bad.py");
    std::fs::write(
        &bad,
        "start_all()\nwith subtest(\"x\"):\n    server.succed(\"true\")\n\
         client.succeed(\"true\", timout=3)\nvlan1.nr + 1\n",
    )
    .unwrap();
    // The example is correct for its one machine (`machine` too).
    let o = run(&["typecheck", "--vm-names", "tiny", "--", "examples/hello.py"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("Success: no issues found"), "{out}");

    let o = run(&[
        "typecheck",
        "--vm-names",
        "server,client",
        "--vlans",
        "1",
        "--",
        bad.to_str().unwrap(),
    ]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    // mypy's words, at the script's own lines.
    let shown = bad.to_str().unwrap();
    assert!(
        out.contains(&format!(
            "{shown}:3: error: \"Machine\" has no attribute \"succed\"; maybe \"succeed\"?"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{shown}:4: error: Unexpected keyword argument \"timout\""
        )),
        "{out}"
    );
    assert!(out.contains("Found 2 errors"), "{out}");
    assert!(err.contains("does not type-check"), "{err}");

    // The stubs for an editor: a package that type-checks on its own.
    let stubs = dir.join("stubs");
    let o = run(&["stubs", stubs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for f in [
        "py.typed",
        "machine/__init__.pyi",
        "machine/qmp.pyi",
        "driver.pyi",
        "testscript.pyi",
    ] {
        assert!(stubs.join("test_driver").join(f).is_file(), "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
