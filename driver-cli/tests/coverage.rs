//! Distributed coverage end to end: `examples/coverage.rhai` runs one gcov-instrumented program as
//! server on one tiny guest and as client on another; the merged lcov tracefile shows lines hit only
//! by the server, only by the client, and their union.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vm-test-driver"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(tests::repo_root())
        .output()
        .expect("cannot run vm-test-driver")
}

/// The number of the line of greet.c that carries `marker`.
fn line_of(marker: &str) -> usize {
    let source =
        std::fs::read_to_string(tests::repo_root().join("examples/coverage/greet.c")).unwrap();
    let n = source.lines().position(|l| l.contains(marker));
    n.unwrap_or_else(|| panic!("no {marker:?} in greet.c")) + 1
}

/// How often `line` ran according to a tracefile (`DA:<line>,<count>`), 0 if it is not listed.
fn hits(tracefile: &Path, line: usize) -> u64 {
    let text = std::fs::read_to_string(tracefile).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("DA:{line},")))
        .map(|count| count.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn coverage_of_server_and_client_merges_into_one_report() {
    let root = tests::repo_root();
    let build = Command::new("bash")
        .arg(root.join("examples/coverage/build.sh"))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let out = root.join("out/coverage-test");
    let _ = std::fs::remove_dir_all(&out);
    let scripts = out.join("machines");
    std::fs::create_dir_all(&scripts).unwrap();
    for name in ["server", "client"] {
        let link = scripts.join(format!("run-{name}-vm"));
        std::os::unix::fs::symlink(tests::guest_start_script("tiny"), link).unwrap();
    }
    let junit = out.join("junit.xml");
    let o = run(
        &[
            "--start-scripts",
            scripts.to_str().unwrap(),
            "--vlans",
            "1",
            "--output-dir",
            out.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--coverage-report",
            "--",
            "examples/coverage.rhai",
        ],
        &[],
    );
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{log}");

    let coverage = out.join("coverage");
    let (server, client, total) = (
        coverage.join("server.info"),
        coverage.join("client.info"),
        coverage.join("total.info"),
    );
    for marker in ["server only", "client only"] {
        let line = line_of(marker);
        let (on_server, on_client) = (hits(&server, line), hits(&client, line));
        if marker == "server only" {
            assert!(
                on_server > 0 && on_client == 0,
                "line {line}: {on_server}/{on_client}"
            );
        } else {
            assert!(
                on_client > 0 && on_server == 0,
                "line {line}: {on_server}/{on_client}"
            );
        }
        assert_eq!(
            hits(&total, line),
            on_server + on_client,
            "line {line} in the union"
        );
    }
    assert!(coverage.join("html/index.html").is_file());

    // One line of summary in the log, the JUnit report and report.json.
    assert!(
        log.contains("coverage: ") && log.contains(" lines hit ("),
        "{log}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<property name=\"coverage\" value=\""),
        "{xml}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["coverage"]["machines"],
        serde_json::json!(["client", "server"])
    );
    assert!(report["coverage"]["lines_hit"].as_u64().unwrap() > 0);

    // The merge again, by the subcommand; then what it says without its tools or data.
    let o = run(&["coverage", out.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("coverage: "));
    let o = run(
        &["coverage", out.to_str().unwrap()],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lcov is not installed (Debian package lcov)")
    );
    let o = run(&["coverage", "/nonexistent"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no coverage data"));
    let o = run(&["--coverage-report", "--", "examples/coverage.rhai"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--coverage-report needs --output-dir"));
    std::fs::remove_dir_all(&out).unwrap();
}
