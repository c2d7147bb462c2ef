//! `vm-test-driver typecheck` and `vm-test-driver stubs`: the type stubs of `test_driver`
//! (`driver-cli/stubs`, built into the binary), and a Python test script checked with mypy against
//! them, as nixpkgs checks a testScript: its globals declared first (`test_driver.testscript`,
//! then each machine and `vlan<N>`), then the script. Errors name the script's own lines.

use crate::setup::{usage, Failure};
use anyhow::Context;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The stub package `test_driver`: each file's name and text.
const STUBS: &[(&str, &str)] = &[
    (
        "__init__.pyi",
        include_str!("../stubs/test_driver/__init__.pyi"),
    ),
    (
        "driver.pyi",
        include_str!("../stubs/test_driver/driver.pyi"),
    ),
    (
        "duration.pyi",
        include_str!("../stubs/test_driver/duration.pyi"),
    ),
    (
        "errors.pyi",
        include_str!("../stubs/test_driver/errors.pyi"),
    ),
    (
        "logger.pyi",
        include_str!("../stubs/test_driver/logger.pyi"),
    ),
    (
        "machine/__init__.pyi",
        include_str!("../stubs/test_driver/machine/__init__.pyi"),
    ),
    (
        "machine/qmp.pyi",
        include_str!("../stubs/test_driver/machine/qmp.pyi"),
    ),
    (
        "polling_condition.pyi",
        include_str!("../stubs/test_driver/polling_condition.pyi"),
    ),
    ("qmp.pyi", include_str!("../stubs/test_driver/qmp.pyi")),
    (
        "testscript.pyi",
        include_str!("../stubs/test_driver/testscript.pyi"),
    ),
    ("vlan.pyi", include_str!("../stubs/test_driver/vlan.pyi")),
    // PEP 561: the package carries its types.
    ("py.typed", ""),
];

/// The file mypy checks: the globals' declarations, then the script.
const CHECKED: &str = "script.py";
/// Longest a mypy run may take (a cold cache on a slow machine takes about half a minute).
const MYPY_LIMIT: Duration = Duration::from_secs(600);

/// Writes the stub package into `dir/test_driver`; returns that directory.
pub fn write_stubs(dir: &Path) -> anyhow::Result<PathBuf> {
    let package = dir.join("test_driver");
    std::fs::create_dir_all(&package)
        .with_context(|| format!("cannot create {}", package.display()))?;
    for (name, text) in STUBS {
        let file = package.join(name);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(package)
}

/// `vm-test-driver stubs DIR`.
pub fn stubs(dir: &Path) -> Result<(), Failure> {
    let package = write_stubs(dir).map_err(Failure::Setup)?;
    println!(
        "wrote the test_driver stubs to {}; mypy finds them with MYPYPATH={}, pyright and \
         Pylance with stubPath (or extraPaths) set to it",
        package.display(),
        dir.display()
    );
    Ok(())
}

/// A machine's global: NixOS's rule for making its name an identifier.
fn pythonize(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| match c {
            'A'..='Z' | 'a'..='z' | '_' => c,
            '0'..='9' if i > 0 => c,
            _ => '_',
        })
        .collect()
}

/// The declarations mypy reads before the script: the globals every script has, a `Machine` per
/// machine (`machine` too when there is one, unless a machine has that name), a `VLan` per VLAN.
pub fn prelude(machines: &[String], vlans: &[u32]) -> String {
    let mut text = String::from(
        "from test_driver.testscript import *\nfrom test_driver.vlan import VLan as _VLan\n",
    );
    let mut names: Vec<String> = machines.iter().map(|m| pythonize(m)).collect();
    if machines.len() == 1 && !machines.iter().any(|m| m == "machine") {
        names.push("machine".into());
    }
    for n in names {
        text.push_str(&format!("{n}: Machine\n"));
    }
    for v in vlans {
        text.push_str(&format!("vlan{v}: _VLan\n"));
    }
    text
}

/// mypy's report with the checked file's lines made the script's: `script.py:12:` becomes
/// `test.py:7:` when the prelude has 5 lines.
fn relocate(report: &str, prelude_lines: usize, shown: &str) -> String {
    let prefix = format!("{CHECKED}:");
    let mut out = String::new();
    for line in report.lines() {
        let moved = line.strip_prefix(&prefix).and_then(|rest| {
            let (n, rest) = rest.split_once(':')?;
            let n: usize = n.parse().ok()?;
            Some(match n.checked_sub(prelude_lines).filter(|&n| n > 0) {
                Some(n) => format!("{shown}:{n}:{rest}"),
                None => format!("<declarations of the globals>:{n}:{rest}"),
            })
        });
        out.push_str(moved.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The ways to run mypy, tried in order: a `mypy` on PATH, else the module of Debian's
/// `python3-mypy` (which installs no command), else of whichever python3 is first on PATH.
const MYPY_COMMANDS: &[&[&str]] = &[
    &["mypy"],
    &["/usr/bin/python3", "-m", "mypy"],
    &["python3", "-m", "mypy"],
];

/// The first way to run mypy that answers `--version`.
fn find_mypy() -> Result<&'static [&'static str], Failure> {
    for cmd in MYPY_COMMANDS {
        let probe = Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = probe else { continue };
        if wait_within(&mut child, Duration::from_secs(60)).is_ok_and(|s| s.success()) {
            return Ok(cmd);
        }
    }
    Err(Failure::Setup(anyhow::anyhow!(
        "mypy is not installed: install Debian's python3-mypy (apt-get install python3-mypy, as \
         scripts/setup.sh does) or put a mypy on PATH"
    )))
}

/// Waits for `child` at most `limit`, killing it after that.
fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("it did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private directory for one check, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("vmtd-typecheck-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// mypy's cache, kept between checks so the standard library's types are read once:
/// `$XDG_CACHE_HOME/vm-test-driver/mypy`, else `~/.cache/vm-test-driver/mypy`.
fn cache_dir(scratch: &Path) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(b) => b.join("vm-test-driver/mypy"),
        None => scratch.join("mypy-cache"),
    }
}

/// The machines' names: `--vm-names`, else taken from the start scripts as a run takes them.
pub fn machine_names(
    vm_names: &[String],
    start_scripts: &[PathBuf],
) -> Result<Vec<String>, Failure> {
    if !vm_names.is_empty() {
        return Ok(vm_names.to_vec());
    }
    start_scripts
        .iter()
        .map(|s| qemu_proc::machine_name_from_script(s).map_err(|e| usage(&e.to_string())))
        .collect()
}

/// `vm-test-driver typecheck`: checks `script` with mypy; exit 1 when mypy finds errors.
pub fn typecheck(machines: &[String], vlans: &[u32], script: &Path) -> Result<(), Failure> {
    let source = std::fs::read_to_string(script)
        .with_context(|| format!("cannot read the test script {}", script.display()))
        .map_err(Failure::Setup)?;
    let mypy = find_mypy()?;
    let scratch = Scratch::create().map_err(Failure::Setup)?;
    write_stubs(&scratch.0).map_err(Failure::Setup)?;
    let prelude = prelude(machines, vlans);
    std::fs::write(scratch.0.join(CHECKED), format!("{prelude}{source}"))
        .context("cannot write the file to check")
        .map_err(Failure::Setup)?;
    // Files, not pipes: a report larger than a pipe holds cannot stall mypy while we wait.
    let (report, errors) = (scratch.0.join("report"), scratch.0.join("errors"));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| Failure::Setup(e.into()));
    // nixpkgs' flags (driver.nix), with our stubs and a cache of our own.
    let mut child = Command::new(mypy[0])
        .args(&mypy[1..])
        .args(["--no-implicit-optional", "--pretty", "--no-color-output"])
        .arg("--cache-dir")
        .arg(cache_dir(&scratch.0))
        .arg(CHECKED)
        .current_dir(&scratch.0)
        .env("MYPYPATH", &scratch.0)
        // Its output goes to a file, where --pretty would wrap at 80 columns and split
        // `file:line: error: message` lines that editors and CI logs look for.
        .env("MYPY_FORCE_TERMINAL_WIDTH", "10000")
        .stdin(Stdio::null())
        .stdout(file(&report)?)
        .stderr(file(&errors)?)
        .spawn()
        .with_context(|| format!("cannot run {}", mypy.join(" ")))
        .map_err(Failure::Setup)?;
    let status = wait_within(&mut child, MYPY_LIMIT)
        .with_context(|| format!("{} {CHECKED}", mypy.join(" ")))
        .map_err(Failure::Setup)?;
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let shown = script.display().to_string();
    print!(
        "{}",
        relocate(&read(&report), prelude.lines().count(), &shown)
    );
    eprint!("{}", read(&errors));
    match status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(Failure::Test(anyhow::anyhow!(
            "{shown} does not type-check (mypy, above)"
        ))),
        _ => Err(Failure::Setup(anyhow::anyhow!(
            "mypy could not check {shown} ({status})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_globals_are_pythonized_and_one_machine_is_also_machine() {
        let p = prelude(&["web-server".into()], &[1, 2]);
        assert!(
            p.contains("\nweb_server: Machine\nmachine: Machine\n"),
            "{p}"
        );
        assert!(p.ends_with("vlan1: _VLan\nvlan2: _VLan\n"), "{p}");
        assert_eq!(pythonize("1st.host"), "_st_host");
        let p = prelude(&["machine".into()], &[]);
        assert_eq!(p.matches("machine: Machine").count(), 1, "{p}");
        let p = prelude(&["a".into(), "b".into()], &[]);
        assert!(!p.contains("machine: Machine"), "{p}");
    }

    #[test]
    fn reports_name_the_scripts_own_lines() {
        let report = "script.py:7: error: \"Machine\" has no attribute \"succed\"\n    \
                      tiny.succed()\nscript.py:2: note: x\nFound 1 error in 1 file\n";
        assert_eq!(
            relocate(report, 5, "t/test.py"),
            "t/test.py:2: error: \"Machine\" has no attribute \"succed\"\n    tiny.succed()\n\
             <declarations of the globals>:2: note: x\nFound 1 error in 1 file\n"
        );
    }

    /// The stubs describe the runtime: every method of the embedded `Machine` is in
    /// `machine/__init__.pyi`, and the stub adds only what the runtime does not have yet (listed here).
    #[test]
    fn the_machine_stub_matches_the_runtime_class() {
        use pyo3::prelude::*;
        use std::collections::BTreeSet;
        let stub = STUBS
            .iter()
            .find(|(n, _)| *n == "machine/__init__.pyi")
            .unwrap()
            .1;
        let stubbed: BTreeSet<String> = stub
            .lines()
            .filter_map(|l| l.trim().strip_prefix("def "))
            .filter_map(|l| l.split_once('(').map(|(n, _)| n.to_string()))
            .filter(|n| n != "retry")
            .chain(["qmp_client".to_string()])
            .collect();
        Python::initialize();
        let runtime: BTreeSet<String> = Python::attach(|py| {
            let class = py.get_type::<crate::python::PyMachine>();
            class
                .dir()
                .unwrap()
                .iter()
                .map(|n| n.extract::<String>().unwrap())
                .filter(|n| !n.starts_with('_'))
                .collect()
        });
        let missing: Vec<&String> = runtime.difference(&stubbed).collect();
        assert!(
            missing.is_empty(),
            "not in machine/__init__.pyi: {missing:?}"
        );
        // NixOS's, stubbed ahead of the runtime (the Python API is being completed).
        let ahead = [
            "console_interact",
            "qmp_client",
            "shell_interact",
            "wait_for_qmp_event",
        ];
        let extra: Vec<&String> = stubbed
            .difference(&runtime)
            .filter(|n| !ahead.contains(&n.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "in machine/__init__.pyi, not in the runtime: {extra:?}"
        );
    }
}
