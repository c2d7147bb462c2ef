//! The run report: report.json validates against its schema, and index.html, rendered by headless
//! Chromium, shows the tests, steps, commands, a screenshot and console lines; the PNG of the
//! rendered failing report is kept in `out/report/` (a CI artifact).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs the binary with `args` and checks its exit status.
fn run(args: &[&str], code: i32) {
    let o = Command::new(env!("CARGO_BIN_EXE_vm-test-driver"))
        .args(args)
        .current_dir(tests::repo_root())
        .output()
        .expect("cannot run vm-test-driver");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
}

fn validate(report: &Path) -> serde_json::Value {
    let schema_path = tests::repo_root().join("driver-cli/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema is valid");
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{} does not match its schema: {errors:#?}",
        report.display()
    );
    json
}

/// Renders `html` in headless Chromium: its DOM, and a PNG of the page when `png` is given.
fn render(html: &Path, png: Option<&Path>) -> String {
    let profile = std::env::temp_dir().join(format!("vmtd-chromium-{}", std::process::id()));
    let url = format!("file://{}", html.display());
    let mut cmd = Command::new("chromium");
    // As root and on a closed network: no sandbox, nothing fetched in the background.
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match png {
        Some(png) => cmd
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1280,2400"),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(&url)
        .output()
        .expect("cannot run chromium (Debian package chromium)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn out_dir(name: &str) -> PathBuf {
    let dir = tests::repo_root().join("out").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn reports_of_a_passing_and_a_failing_run_validate_and_render() {
    let tiny = tests::guest_start_script("tiny");
    let tiny = tiny.to_str().unwrap();

    let failing = out_dir("report");
    let args = [
        "--start-scripts",
        tiny,
        "--output-dir",
        failing.to_str().unwrap(),
    ];
    run(&[&args[..], &["--", "examples/failing.rhai"]].concat(), 1);
    let json = validate(&failing.join("report.json"));
    assert_eq!(json["passed"], false);
    assert!(json["error"]
        .as_str()
        .unwrap()
        .contains("examples/failing.rhai:8:10"));
    let tests = json["tests"].as_array().unwrap();
    let failed: Vec<&str> = tests
        .iter()
        .filter(|t| t["passed"] == false)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["fails on purpose"]);
    let machine = &json["machines"][0];
    assert_eq!(machine["name"], "tiny");
    let kinds: Vec<&str> = machine["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["started", "connected", "command", "screenshot", "exited"] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    assert!(machine["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["status"] == 1 && e["output"] == "this is the output\n"));

    let dom = render(&failing.join("index.html"), None);
    for needle in [
        "<h1 id=\"status\">examples/failing.rhai: FAILED</h1>",
        "class=\"test fail\"",
        "fails on purpose",
        "class=\"step\"",
        "tiny: must succeed: echo 'this is the output'; exit 1",
        "<span class=\"fail\">exit 1</span>",
        "<img src=\"data:image/png;base64,",
        "id=\"console-tiny-",
        "href=\"#console-tiny-",
    ] {
        assert!(
            dom.contains(needle),
            "the rendered failing report has no {needle:?}"
        );
    }
    let png = failing.join("failing-report.png");
    render(&failing.join("index.html"), Some(&png));
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

    let passing = out_dir("report-passing");
    let report_dir = passing.join("report");
    let args = [
        "--start-scripts",
        tiny,
        "--report",
        report_dir.to_str().unwrap(),
    ];
    run(&[&args[..], &["--", "examples/hello.rhai"]].concat(), 0);
    let json = validate(&report_dir.join("report.json"));
    assert_eq!(json["passed"], true);
    assert!(json["tests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["passed"] == true));
    let dom = render(&report_dir.join("index.html"), None);
    assert!(dom.contains("examples/hello.rhai: PASSED"), "{dom}");
    assert!(!dom.contains("class=\"test fail\""));
    std::fs::remove_dir_all(&passing).unwrap();
}
