//! The NixOS test driver's command line: a run on the tiny guest through NixOS's spellings, and
//! the two ways nixpkgs' test derivation calls its driver (environment variables from the
//! wrapper, or today a `--config` file), each followed by run.nix's `-o $out`.

mod common;

use common::{scratch, tiny, BIN};
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(tests::repo_root())
        .output()
        .expect("cannot run vm-test-driver")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn nixos_spellings_run_a_test_and_nixpkgs_calls_work_unchanged() {
    let dir = scratch("nixos-cli");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let script = dir.join("nixos.rhai");
    std::fs::write(
        &script,
        "subtest(\"the guest answers\", || {\n\
         \x20   let got = tiny.succeed(\"echo nixos-style\");\n\
         \x20   if got != \"nixos-style\\n\" { throw `got ${got}`; }\n\
         });\n",
    )
    .unwrap();
    let tiny = tiny();

    // NixOS's flags; the script follows -K, a flag, so it needs no `--`. A relative --junit-xml
    // lands in the output directory, as NixOS's does.
    let o = run(
        &[
            "--vm-start-scripts",
            &tiny,
            "-o",
            out.to_str().unwrap(),
            "--junit-xml",
            "junit.xml",
            "-K",
            script.to_str().unwrap(),
        ],
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let log = std::fs::read_to_string(out.join("log.txt")).unwrap();
    assert!(log.contains("subtest: the guest answers"), "{log}");
    assert!(out.join("index.html").is_file() && out.join("report.json").is_file());
    assert!(!tests::repo_root().join("junit.xml").exists());
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suite = &report.test_suites[0];
    assert_eq!((suite.tests, suite.failures), (1, 0), "{xml}");
    assert_eq!(suite.test_cases[0].name.as_str(), "the guest answers");
    // -K keeps the state directory and says where it is.
    let kept = err
        .lines()
        .find_map(|l| l.split_once("keeping state in ").map(|(_, d)| d.trim()))
        .unwrap_or_else(|| panic!("no kept state directory named: {err}"));
    assert!(Path::new(kept).join("vm-state-tiny").is_dir(), "{kept}");
    std::fs::remove_dir_all(kept).unwrap();

    // The scripts below only look at the machines, so nothing boots.
    let names = |expected: &str| {
        let file = dir.join(format!("names-{expected}.rhai"));
        std::fs::write(
            &file,
            format!(
                "let n = machines.map(|m| m.name);\n\
                 if n != [\"{expected}\"] {{ throw `machines ${{n}}`; }}\n"
            ),
        )
        .unwrap();
        file
    };

    // nixpkgs' driver.nix (until 25.05) wraps the driver with `--set startScripts … --set
    // testScript … --set globalTimeout … --set vlans …`; run.nix calls `nixos-test-driver -o $out`.
    let out_env = dir.join("out-env");
    let test_script = names("tiny");
    let o = run(
        &["-o", out_env.to_str().unwrap()],
        &[
            ("startScripts", &tiny),
            ("testScript", test_script.to_str().unwrap()),
            ("globalTimeout", "3600"),
            ("vlans", ""),
            ("LOGFILE", "/dev/null"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out_env.join("log.txt").is_file());

    // Today: `--add-flags "--config ${driverConfigurationFile}" --add-flags "--log-level info"`,
    // the configuration naming each machine.
    let out_config = dir.join("out-config");
    let config = dir.join("driverConfiguration.json");
    let test_script = names("server");
    std::fs::write(
        &config,
        serde_json::json!({
            "vms": { "server": { "name": "server", "start_script": tiny } },
            "containers": {},
            "vlans": [],
            "global_timeout": 3600,
            "enable_ssh_backdoor": false,
            "test_script": test_script,
        })
        .to_string(),
    )
    .unwrap();
    let o = run(
        &[
            "--config",
            config.to_str().unwrap(),
            "--log-level",
            "info",
            "-o",
            out_config.to_str().unwrap(),
        ],
        &[("LOGFILE", "/dev/null")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out_config.join("log.txt").is_file());

    std::fs::remove_dir_all(&dir).unwrap();
}
