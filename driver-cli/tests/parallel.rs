//! A directory of test scripts: each in a child driver of its own, `-j N` at once, `--partition K/N`
//! a deterministic share. The scripts use no machine, so nothing boots and the runs are quick.

mod common;

use common::{assert_nothing_left, scratch, wait_exit, Running, Seen, BIN};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Seven scripts, written out of order; sorted by file name they are these.
const NAMES: [&str; 7] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
];

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("cannot run vm-test-driver")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory of the seven scripts, each logging `ran <name>` and printing `printed <name>`,
/// plus files that are not test scripts.
fn seven_scripts(name: &str) -> PathBuf {
    let dir = scratch(name).join("suite");
    std::fs::create_dir_all(dir.join("nested.rhai")).unwrap();
    std::fs::write(dir.join("nested.rhai/inner.rhai"), "throw \"not run\";\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not a script\n").unwrap();
    for n in NAMES.iter().rev() {
        std::fs::write(
            dir.join(format!("{n}.rhai")),
            format!("log(\"ran {n}\");\nprint(\"printed {n}\");\n"),
        )
        .unwrap();
    }
    dir
}

/// How often each script logged `ran <name>`, from the parent's prefixed stderr.
fn ran(stderr: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in stderr.lines() {
        let Some((name, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            continue;
        };
        if rest.ends_with(&format!(" ran {name}")) {
            *seen.entry(name.to_string()).or_default() += 1;
        }
    }
    seen
}

#[test]
fn partitions_run_every_script_exactly_once() {
    let dir = seven_scripts("partitions");
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for k in 1..=3 {
        let share = format!("{k}/3");
        let o = run(&["--partition", &share, "--", path(&dir)]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{share}: {err}");
        // Sorted by name, script i belongs to partition (i mod 3) + 1.
        let expected: Vec<&str> = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == k - 1)
            .map(|(_, n)| *n)
            .collect();
        let got = ran(&err);
        assert_eq!(
            got.keys().map(String::as_str).collect::<Vec<_>>(),
            expected,
            "{share}: {err}"
        );
        assert!(
            err.contains(&format!("{} passed, 0 failed", expected.len())),
            "{share}: {err}"
        );
        assert!(
            err.contains(&format!("(partition {share}: {} of 7)", expected.len())),
            "{err}"
        );
        for (name, n) in got {
            *total.entry(name).or_default() += n;
        }
    }
    let all: BTreeMap<String, usize> = NAMES.iter().map(|n| (n.to_string(), 1)).collect();
    assert_eq!(total, all, "every script exactly once over the partitions");
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_list_of_scripts_runs_as_a_directory_does_in_its_order() {
    let dir = seven_scripts("list");
    let script = |n: &str| dir.join(format!("{n}.rhai")).to_str().unwrap().to_string();
    // golf, alpha, echo: given out of order; partition 2/2 is the second of them, alpha.
    let (g, a, e) = (script("golf"), script("alpha"), script("echo"));
    let o = run(&["-j", "2", "--", &g, &a, &e]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let got: Vec<String> = ran(&err).into_keys().collect();
    assert_eq!(got, ["alpha", "echo", "golf"], "{err}");
    assert!(err.contains("3 passed, 0 failed"), "{err}");
    let o = run(&["--partition", "2/2", "--", &g, &a, &e]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(
        ran(&err).into_keys().collect::<Vec<_>>(),
        ["alpha"],
        "{err}"
    );
    // A directory and scripts together are refused, as is a file that is no script.
    let o = run(&["--", path(&dir), &g]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("not both"), "{}", text(&o.stderr));
    let notes = dir.join("notes.txt");
    let o = run(&["--", &g, path(&notes)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("notes.txt is not a test script"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn jobs_run_every_script_once_with_outputs_of_their_own_and_a_summary() {
    let dir = seven_scripts("jobs");
    let base = dir.parent().unwrap();
    let (out, report, junit) = (base.join("out"), base.join("report"), base.join("all.xml"));
    let o = run(&[
        "-j",
        "3",
        "--output-dir",
        path(&out),
        "--report",
        path(&report),
        "--junit",
        path(&junit),
        "--",
        path(&dir),
    ]);
    let (err, stdout) = (text(&o.stderr), text(&o.stdout));
    assert_eq!(o.status.code(), Some(0), "{err}");
    let all: BTreeMap<String, usize> = NAMES.iter().map(|n| (n.to_string(), 1)).collect();
    assert_eq!(ran(&err), all, "{err}");
    assert!(err.contains("running 7 test scripts"), "{err}");
    assert!(err.contains("up to 3 at once"), "{err}");
    // A summary line per script, then the counts; the nested directory's script never ran.
    for n in NAMES {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("  {n:7}  passed  "))),
            "no summary line for {n}: {err}"
        );
        assert!(stdout.contains(&format!("[{n}] printed {n}\n")), "{stdout}");
        let log = std::fs::read_to_string(out.join(n).join("log.txt")).unwrap();
        assert!(log.contains(&format!("ran {n}")), "{log}");
        assert!(report.join(n).join("report.json").is_file());
    }
    assert!(err.contains("7 passed, 0 failed"), "{err}");
    assert!(!err.contains("not run"), "{err}");
    // One JUnit document, a suite per script.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suites: Vec<&str> = parsed.test_suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(suites, NAMES, "{xml}");
    assert_eq!((parsed.tests, parsed.failures), (7, 0), "{xml}");
    assert!(xml.contains("ran golf"), "{xml}");
    // The children's own JUnit files, kept next to it during the run, are gone.
    let left: Vec<String> = std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn jobs_bound_how_many_scripts_run_at_once() {
    let base = scratch("bound");
    let dir = base.join("suite");
    std::fs::create_dir_all(&dir).unwrap();
    for n in ["a", "b", "c", "d", "e"] {
        // Passes on the closure's last try, after a second (0.2 s times the TCG timeout factor).
        std::fs::write(
            dir.join(format!("{n}.rhai")),
            "retry(|last_try| last_try, 0.2);\n",
        )
        .unwrap();
    }
    let mut child = Running(
        Command::new(BIN)
            .args(["-j", "2", "--", path(&dir)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = Seen::collect(child.0.stderr.take().unwrap());
    // The children, and only they, name a script in the directory.
    let needle = format!("{}/", dir.display());
    let mut most = 0;
    while child.0.try_wait().unwrap().is_none() {
        most = most.max(common::processes_mentioning(&needle).len());
        std::thread::sleep(Duration::from_millis(10));
    }
    let code = wait_exit(&mut child.0, Duration::from_secs(60));
    let err = err.text();
    assert_eq!(code, 0, "{err}");
    assert!(most <= 2, "{most} scripts ran at once with -j 2: {err}");
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn a_failing_script_fails_the_run_and_the_summary_names_it() {
    let base = scratch("failing");
    let dir = base.join("suite");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.rhai"), "log(\"fine\");\n").unwrap();
    std::fs::write(dir.join("also-good.rhai"), "log(\"fine\");\n").unwrap();
    std::fs::write(
        dir.join("bad.rhai"),
        "subtest(\"breaks\", || { throw \"broken on purpose\"; });\n",
    )
    .unwrap();
    // Exits 2 before it could write a JUnit file: the parent writes its suite.
    std::fs::write(dir.join("syntax.rhai"), "let x = ;\n").unwrap();
    let junit = base.join("all.xml");
    let o = run(&["-j", "2", "--junit", path(&junit), "--", path(&dir)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line = |name: &str| {
        err.lines()
            .find(|l| l.contains(&format!("  {name:9}  ")))
            .unwrap_or_else(|| panic!("no summary line for {name}: {err}"))
            .to_string()
    };
    assert!(line("good").contains("passed"), "{err}");
    assert!(line("also-good").contains("passed"), "{err}");
    assert!(line("bad").contains("failed (exit status 1)"), "{err}");
    assert!(line("syntax").contains("failed (exit status 2)"), "{err}");
    assert!(err.contains("2 passed, 2 failed"), "{err}");
    assert!(
        err.contains("2 of 4 test scripts failed: bad, syntax"),
        "{err}"
    );
    // The children's own errors came through, prefixed.
    assert!(
        err.lines()
            .any(|l| l.starts_with("[bad] ") && l.contains("broken on purpose")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("[syntax] ") && l.contains("syntax error")),
        "{err}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let failures: BTreeMap<&str, usize> = parsed
        .test_suites
        .iter()
        .map(|s| (s.name.as_str(), s.failures))
        .collect();
    let expected: BTreeMap<&str, usize> =
        [("also-good", 0), ("bad", 1), ("good", 0), ("syntax", 1)]
            .into_iter()
            .collect();
    assert_eq!(failures, expected, "{xml}");
    assert!(xml.contains("name=\"breaks\""), "{xml}");
    assert!(
        xml.contains("exit status 2 (usage or setup error)"),
        "{xml}"
    );
    assert!(xml.contains("syntax error"), "{xml}");
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn bad_jobs_and_partitions_are_usage_errors_naming_the_value() {
    let dir = seven_scripts("usage");
    let base = dir.parent().unwrap();
    let d = path(&dir);
    for (args, needles) in [
        (vec!["-j", "0", "--", d], vec!["'0'", "--jobs"]),
        (vec!["--jobs", "many", "--", d], vec!["'many'", "--jobs"]),
        (
            vec!["--partition", "0/2", "--", d],
            vec!["'0/2'", "between 1 and N"],
        ),
        (
            vec!["--partition", "3/2", "--", d],
            vec!["'3/2'", "between 1 and N"],
        ),
        (
            vec!["--partition", "a/b", "--", d],
            vec!["'a/b'", "not a number"],
        ),
        (
            vec!["--partition", "1/0", "--", d],
            vec!["'1/0'", "at least 1"],
        ),
        (vec!["--partition", "2", "--", d], vec!["'2'", "K/N"]),
    ] {
        let o = run(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: no {n:?} in {err}");
        }
        assert!(ran(&err).is_empty(), "{args:?} ran scripts: {err}");
    }
    // A single script has no share to take.
    let one = dir.join("alpha.rhai");
    for flag in [["-j", "2"], ["--partition", "1/2"]] {
        let o = run(&[flag[0], flag[1], "--", path(&one)]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("need a directory or a list of test scripts")
                && err.contains("alpha.rhai"),
            "{err}"
        );
    }
    let empty = base.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(&["-j", "2", "--", path(&empty)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("holds no test script (*.rhai, *.py)"));
    let o = run(&["--interactive", "--", d]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--interactive takes one test script"));
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn an_empty_partition_passes_and_says_so() {
    let base = scratch("empty-share");
    let dir = base.join("suite");
    std::fs::create_dir_all(&dir).unwrap();
    for n in ["one", "two"] {
        std::fs::write(
            dir.join(format!("{n}.rhai")),
            format!("log(\"ran {n}\");\n"),
        )
        .unwrap();
    }
    let o = run(&["--partition", "3/4", "--", path(&dir)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("partition 3/4 holds none of the 2 test scripts"),
        "{err}"
    );
    assert!(ran(&err).is_empty(), "{err}");
    std::fs::remove_dir_all(base).unwrap();
}

/// A suite of three scripts that wait until interrupted, run two at once; returns the parent and
/// its stderr once both running children are waiting.
fn waiting_suite(dir: &Path, junit: &Path) -> (Running, Seen) {
    std::fs::create_dir_all(dir).unwrap();
    for n in ["first", "second", "third"] {
        // `retry` waits in the driver, so a signal ends it.
        std::fs::write(
            dir.join(format!("{n}.rhai")),
            format!("log(\"{n} waits\");\nretry(|last_try| false, 600);\n"),
        )
        .unwrap();
    }
    let mut child = Running(
        Command::new(BIN)
            .args(["-j", "2", "--junit", path(junit), "--", path(dir)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = Seen::collect(child.0.stderr.take().unwrap());
    err.wait_for("first waits", 0);
    err.wait_for("second waits", 0);
    let running = common::processes_mentioning(&format!("{}/", dir.display()));
    assert_eq!(running.len(), 2, "{running:?}: {}", err.text());
    (child, err)
}

#[test]
fn sigterm_reaches_the_children_which_stop_and_the_rest_do_not_start() {
    let base = scratch("sigterm");
    let (dir, junit) = (base.join("suite"), base.join("all.xml"));
    let (mut child, err) = waiting_suite(&dir, &junit);
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM).unwrap();
    let code = wait_exit(&mut child.0, common::PATIENCE);
    let err = err.text();
    assert_eq!(code, 128 + 15, "{err}");
    for n in ["first", "second"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("[{n}] ")) && l.contains("interrupted by SIGTERM")),
            "{err}"
        );
    }
    assert!(!err.contains("third waits"), "{err}");
    assert!(err.contains("third   not run"), "{err}");
    assert!(err.contains("0 passed, 2 failed, 1 not run"), "{err}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<skipped message=\"not run: interrupted by SIGTERM\"/>"),
        "{xml}"
    );
    assert_nothing_left(&format!("{}/", dir.display()));
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn the_children_die_with_a_killed_parent() {
    let base = scratch("sigkill");
    let (dir, junit) = (base.join("suite"), base.join("all.xml"));
    let (mut child, _err) = waiting_suite(&dir, &junit);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // PR_SET_PDEATHSIG sends them SIGTERM, which ends their waits.
    assert_nothing_left(&format!("{}/", dir.display()));
    std::fs::remove_dir_all(base).unwrap();
}
