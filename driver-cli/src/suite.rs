//! Running a directory (or a list) of test scripts: each script in a child process of this binary
//! (its own driver, state directory and machines), at most `--jobs` at once, only the
//! `--partition`'s share.
//!
//! A child is this executable run on one script with the run's options, its files put where they
//! cannot collide (`<output dir>/<stem>/`, `<report>/<stem>/`, a JUnit file of its own that the
//! parent merges). Its output passes through line by line, prefixed `[<stem>] `. The parent reaps
//! on SIGCHLD and forwards SIGINT, SIGTERM and SIGHUP to the children, which stop their machines
//! themselves; a parent killed outright takes them along by `PR_SET_PDEATHSIG(SIGTERM)`.

mod children;
mod outcome;

use crate::args::RunArgs;
use crate::junit;
use crate::setup::{usage, Failure};
use anyhow::Context;
use children::{reap_orphans, spawn};
use outcome::{signal_name, suite_of, summarize, JunitDir, Outcome};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// One test script of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    path: PathBuf,
    /// Its file name without `.rhai` or `.py` (the whole name when a script of the other kind
    /// has the same stem): the log prefix, the subdirectory and the JUnit suite name.
    stem: String,
}

/// The suffixes of test scripts: Rhai, and NixOS Python testScripts.
const SUFFIXES: [&str; 2] = ["rhai", "py"];

/// The `*.rhai` and `*.py` files in `dir` (not in subdirectories), sorted by file name.
fn collect(dir: &Path) -> anyhow::Result<Vec<Script>> {
    let mut found: Vec<(OsString, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the test scripts in {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name(), e.path()))
        .filter(|(name, path)| is_script(Path::new(name)) && path.is_file())
        .collect();
    found.sort();
    Ok(named(found))
}

/// The scripts given on the command line, in their order; each must be a `.rhai` or `.py` file,
/// and no two may have the same file name (their output would share a directory).
fn listed(paths: &[PathBuf]) -> anyhow::Result<Vec<Script>> {
    let mut found: Vec<(OsString, PathBuf)> = Vec::new();
    for path in paths {
        let name = path.file_name().unwrap_or_default().to_owned();
        anyhow::ensure!(
            is_script(path) && path.is_file(),
            "{} is not a test script (a .rhai or .py file)",
            path.display()
        );
        anyhow::ensure!(
            !found.iter().any(|(n, _)| *n == name),
            "two test scripts are named {}: their output would share a directory",
            name.to_string_lossy()
        );
        found.push((name, path.clone()));
    }
    Ok(named(found))
}

/// Whether `path` has a test script's suffix.
fn is_script(path: &Path) -> bool {
    let suffix = path.extension().and_then(OsStr::to_str);
    suffix.is_some_and(|s| SUFFIXES.contains(&s))
}

/// The scripts `(file name, path)`, each named by its stem unless a script of the other kind
/// shares it.
fn named(found: Vec<(OsString, PathBuf)>) -> Vec<Script> {
    let stem = |path: &Path| path.file_stem().unwrap_or_default().to_owned();
    found
        .iter()
        .map(|(name, path)| {
            // `web.rhai` and `web.py` would share the stem's output directory and JUnit file.
            let shared = found.iter().filter(|(_, p)| stem(p) == stem(path)).count() > 1;
            let shown = if shared { name.clone() } else { stem(path) };
            Script {
                stem: shown.to_string_lossy().into_owned(),
                path: path.clone(),
            }
        })
        .collect()
}

/// The command line of the child that runs `script`: the run's options, with every per-run path
/// moved into the script's own subdirectory, and `junit` as its JUnit file.
fn child_args(args: &RunArgs, script: &Script, junit: Option<&Path>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut opt = |name: &str, value: &dyn AsRef<OsStr>| {
        a.push(name.into());
        a.push(value.as_ref().to_os_string());
    };
    let net = &args.network;
    let own = |dir: &Path| dir.join(&script.stem);
    if let Some(d) = &net.state_dir {
        opt("--state-dir", &own(d));
    }
    if let Some(d) = &net.output_dir {
        opt("--output-dir", &own(d));
    }
    if let Some(d) = &net.snapshot_cache {
        // Shared: entries are keyed by machine, and that is the point of the cache.
        opt("--snapshot-cache", d);
    }
    if let Some(f) = net.speed.timeout_factor {
        opt("--timeout-factor", &f.to_string());
    }
    if let Some(t) = args.global_timeout {
        opt("--global-timeout", &t.to_string());
    }
    if let Some(f) = junit {
        opt("--junit", &f);
    }
    if let Some(d) = &args.report {
        opt("--report", &own(d));
    }
    if let Some(level) = &args.nixos.log_level {
        opt("--log-level", level);
    }
    let mut flag = |on: bool, name: &str| {
        if on {
            a.push(name.into());
        }
    };
    flag(net.keep_vm_state, "--keep-vm-state");
    flag(net.speed.require_kvm, "--require-kvm");
    flag(args.coverage_report, "--coverage-report");
    for m in &net.machines {
        a.push("--machine".into());
        a.push(m.text.clone().into());
    }
    // The list options last, each closed by the `--` before the script.
    if !net.start_scripts.is_empty() {
        a.push("--start-scripts".into());
        a.extend(net.start_scripts.iter().map(OsString::from));
    }
    if !net.vm_names.is_empty() {
        a.push("--vm-names".into());
        a.extend(net.vm_names.iter().map(OsString::from));
    }
    if !net.vlans.is_empty() {
        a.push("--vlans".into());
        a.extend(net.vlans.iter().map(|v| OsString::from(v.to_string())));
    }
    a.push("--".into());
    a.push(script.path.clone().into());
    a
}

/// A child running one script, with the threads passing its output through.
struct Running {
    index: usize,
    child: std::process::Child,
    started: Instant,
    readers: Vec<JoinHandle<()>>,
}

/// Runs the `*.rhai` and `*.py` scripts in `dir` (the test script given), the partition's share of them, at
/// most `--jobs` at once, and prints a summary. Exit: 0 all passed, 1 any failed.
pub fn run(args: &RunArgs, dir: &Path) -> Result<(), Failure> {
    let all = collect(dir).map_err(Failure::Setup)?;
    if all.is_empty() {
        return Err(usage(&format!(
            "{} holds no test script (*.rhai, *.py)",
            dir.display()
        )));
    }
    run_scripts(args, all, &dir.display().to_string())
}

/// Runs the scripts `paths` given on the command line as [`run`] runs a directory's, in their
/// order (which `--partition` shares out).
pub fn run_list(args: &RunArgs, paths: &[PathBuf]) -> Result<(), Failure> {
    let all = listed(paths).map_err(|e| usage(&format!("{e:#}")))?;
    run_scripts(args, all, "the command line")
}

/// Runs `all` (the scripts of `whence`), the partition's share of them.
fn run_scripts(args: &RunArgs, all: Vec<Script>, whence: &str) -> Result<(), Failure> {
    if args.interactive {
        return Err(usage(&format!(
            "--interactive takes one test script, not those of {whence}"
        )));
    }
    if args.coverage_report && args.network.output_dir.is_none() {
        return Err(usage(
            "--coverage-report needs --output-dir: the coverage data is collected there",
        ));
    }
    let total = all.len();
    let scripts: Vec<Script> = match args.partition {
        Some(p) => all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| p.holds(*i))
            .map(|(_, s)| s)
            .collect(),
        None => all,
    };
    let share = match args.partition {
        Some(p) => format!(" (partition {p}: {} of {total})", scripts.len()),
        None => String::new(),
    };
    if scripts.is_empty() {
        log::info!(
            "partition {} holds none of the {total} test scripts of {whence}: nothing to run",
            args.partition.map(|p| p.to_string()).unwrap_or_default(),
        );
        return Ok(());
    }
    let jobs = args.jobs.unwrap_or(1);
    log::info!(
        "running {} test scripts of {whence}{share}, up to {jobs} at once",
        scripts.len(),
    );
    let exe = std::env::current_exe()
        .context("cannot find this executable to run the test scripts with")
        .map_err(Failure::Setup)?;
    // The children's JUnit files, merged into the one asked for at the end.
    let junit_dir = match &args.junit {
        Some(file) => Some(JunitDir::create(file).map_err(Failure::Setup)?),
        None => None,
    };
    // Registered before the first child is spawned, so no SIGCHLD is missed.
    let mut signals = signal_hook::iterator::Signals::new([SIGCHLD, SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")
        .map_err(Failure::Setup)?;
    let kept: Vec<Option<Arc<Mutex<String>>>> = scripts
        .iter()
        .map(|_| args.junit.as_ref().map(|_| Arc::default()))
        .collect();
    let mut outcomes: Vec<Outcome> = scripts.iter().map(|_| Outcome::NotRun).collect();
    let mut running: Vec<Running> = Vec::new();
    let mut next = 0;
    let mut interrupted: Option<i32> = None;
    loop {
        // Spawned from this (the main) thread: PR_SET_PDEATHSIG fires when the forking thread ends.
        while interrupted.is_none() && running.len() < jobs && next < scripts.len() {
            let script = &scripts[next];
            let junit = junit_dir.as_ref().map(|d| d.file(&script.stem));
            let argv = child_args(args, script, junit.as_deref());
            match spawn(&exe, &argv, &script.stem, kept[next].clone()) {
                Ok((child, readers)) => {
                    log::info!("{}: started", script.stem);
                    running.push(Running {
                        index: next,
                        child,
                        started: Instant::now(),
                        readers,
                    });
                }
                Err(e) => {
                    log::error!("{}: cannot start: {e:#}", script.stem);
                    outcomes[next] = Outcome::Unstarted(format!("{e:#}"));
                }
            }
            next += 1;
        }
        if running.is_empty() {
            break;
        }
        for sig in signals.wait() {
            if sig == SIGCHLD {
                continue;
            }
            if interrupted.is_none() {
                log::warn!(
                    "interrupted by {}: stopping {} running test scripts",
                    signal_name(sig),
                    running.len()
                );
            }
            interrupted = Some(sig);
            for r in &running {
                // Each child stops its own machines; a second signal makes it exit at once.
                // SAFETY: kill has no memory effects; the pid is an unreaped child of ours, so it
                // cannot have been reused.
                unsafe { libc::kill(r.child.id() as libc::pid_t, sig) };
            }
        }
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait() {
                Ok(None) => i += 1,
                Ok(Some(status)) => {
                    let r = running.swap_remove(i);
                    let time = r.started.elapsed();
                    // Its output is all passed through before its result is logged.
                    for t in r.readers {
                        let _ = t.join();
                    }
                    let outcome = Outcome::Exited { status, time };
                    let line = format!(
                        "{}: {} in {:.2} s",
                        scripts[r.index].stem,
                        outcome.describe(),
                        time.as_secs_f64()
                    );
                    if outcome.passed() {
                        log::info!("{line}");
                    } else {
                        log::error!("{line}");
                    }
                    outcomes[r.index] = outcome;
                }
                Err(e) => {
                    // Not expected for a child of ours; give up on it rather than spin.
                    let r = running.swap_remove(i);
                    log::error!("{}: cannot wait for it: {e}", scripts[r.index].stem);
                    outcomes[r.index] = Outcome::Unstarted(format!("cannot wait for it: {e}"));
                }
            }
        }
        let ours: Vec<i32> = running.iter().map(|r| r.child.id() as i32).collect();
        reap_orphans(&ours);
    }
    drop(signals);
    let stems: Vec<&str> = scripts.iter().map(|s| s.stem.as_str()).collect();
    summarize(&stems, &outcomes);
    if let (Some(file), Some(dir)) = (&args.junit, &junit_dir) {
        let suites = scripts
            .iter()
            .zip(&outcomes)
            .zip(&kept)
            .map(|((s, o), k)| suite_of(dir, &s.stem, o, k.as_ref(), interrupted))
            .collect();
        junit::write_suites(file, suites)
            .with_context(|| format!("cannot write the JUnit report {}", file.display()))
            .map_err(Failure::Setup)?;
    }
    let failed: Vec<&str> = scripts
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !o.passed() && !matches!(o, Outcome::NotRun))
        .map(|(s, _)| s.stem.as_str())
        .collect();
    let summary = if failed.is_empty() {
        String::new()
    } else {
        format!(
            "{} of {} test scripts failed: {}",
            failed.len(),
            scripts.len(),
            failed.join(", ")
        )
    };
    match interrupted {
        Some(sig) if failed.is_empty() => Err(Failure::Signal(
            sig,
            anyhow::anyhow!("interrupted by {}", signal_name(sig)),
        )),
        Some(sig) => Err(Failure::Signal(
            sig,
            anyhow::anyhow!("interrupted by {}; {summary}", signal_name(sig)),
        )),
        None if failed.is_empty() => Ok(()),
        None => Err(Failure::Test(anyhow::anyhow!(summary))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(cli: &[&str]) -> RunArgs {
        crate::args::Cli::try_parse_from(
            std::iter::once("vm-test-driver").chain(cli.iter().copied()),
        )
        .unwrap()
        .run
    }

    fn script() -> Script {
        Script {
            path: "t/web.rhai".into(),
            stem: "web".into(),
        }
    }

    #[test]
    fn a_child_gets_the_options_with_paths_of_its_own() {
        let a = args(&[
            "-j",
            "3",
            "--partition",
            "1/2",
            "--output-dir",
            "out",
            "--report",
            "rep",
            "--state-dir",
            "st",
            "--snapshot-cache",
            "cache",
            "--timeout-factor",
            "2.5",
            "--global-timeout",
            "600",
            "--junit",
            "all.xml",
            "--keep-vm-state",
            "--require-kvm",
            "--coverage-report",
            "--machine",
            "name=c,cdrom=\"x,y.iso\"",
            "--start-scripts",
            "run-a-vm",
            "run-b-vm",
            "--vlans",
            "1",
            "2",
            "--",
            "t",
        ]);
        let argv = child_args(&a, &script(), Some(Path::new("/tmp/j/web.xml")));
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            argv.join(" "),
            "--state-dir st/web --output-dir out/web --snapshot-cache cache \
             --timeout-factor 2.5 --global-timeout 600 --junit /tmp/j/web.xml --report rep/web \
             --keep-vm-state --require-kvm --coverage-report --machine name=c,cdrom=\"x,y.iso\" \
             --start-scripts run-a-vm run-b-vm --vlans 1 2 -- t/web.rhai"
        );
        // What the child gets parses back to the same options, for one script.
        let back = args(&argv);
        assert_eq!(back.test_script.as_deref(), Some(Path::new("t/web.rhai")));
        assert_eq!(back.network.vlans, [1, 2]);
        assert_eq!(back.network.machines, a.network.machines);
        assert_eq!(back.network.speed.timeout_factor, Some(2.5));
        assert!(back.jobs.is_none() && back.partition.is_none());
    }

    #[test]
    fn a_child_gets_the_machine_names_and_the_log_level() {
        let a = args(&[
            "--log-level",
            "warning",
            "--vm-start-scripts",
            "s1",
            "s2",
            "--vm-names",
            "a",
            "b",
            "--",
            "t",
        ]);
        let argv = child_args(&a, &script(), None);
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            argv.join(" "),
            "--log-level warning --start-scripts s1 s2 --vm-names a b -- t/web.rhai"
        );
    }

    #[test]
    fn a_child_of_a_bare_run_gets_only_its_script() {
        let argv = child_args(&args(&["dir"]), &script(), None);
        assert_eq!(argv, ["--", "t/web.rhai"]);
    }

    #[test]
    fn scripts_are_the_rhai_and_py_files_sorted_by_name() {
        let dir = std::env::temp_dir().join(format!("vmtd-suite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub.rhai")).unwrap();
        std::fs::create_dir_all(dir.join("sub.py")).unwrap();
        for f in [
            "b.rhai",
            "a.rhai",
            "c.txt",
            "a.rhai.bak",
            "B.rhai",
            "d.py",
            "d.pyc",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let stems: Vec<String> = collect(&dir).unwrap().into_iter().map(|s| s.stem).collect();
        assert_eq!(stems, ["B", "a", "b", "d"]);
        // Two kinds of one name keep their suffixes, so their files do not collide.
        std::fs::write(dir.join("b.py"), "").unwrap();
        let stems: Vec<String> = collect(&dir).unwrap().into_iter().map(|s| s.stem).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(stems, ["B", "a", "b.py", "b.rhai", "d"]);
    }

    #[test]
    fn a_list_keeps_its_order_and_refuses_what_is_not_a_script_or_a_name_twice() {
        let dir = std::env::temp_dir().join(format!("vmtd-list-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("x")).unwrap();
        std::fs::create_dir_all(dir.join("dir.py")).unwrap();
        for f in ["b.rhai", "a.py", "b.py", "notes.txt", "x/a.py"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let list = |names: &[&str]| {
            let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
            listed(&paths).map(|l| l.into_iter().map(|s| s.stem).collect::<Vec<_>>())
        };
        assert_eq!(list(&["b.rhai", "a.py"]).unwrap(), ["b", "a"]);
        assert_eq!(list(&["b.py", "b.rhai"]).unwrap(), ["b.py", "b.rhai"]);
        let err = |names: &[&str]| format!("{:#}", list(names).unwrap_err());
        assert!(err(&["a.py", "notes.txt"])
            .ends_with("notes.txt is not a test script (a .rhai or .py file)"));
        assert!(err(&["a.py", "dir.py"]).contains("dir.py is not a test script"));
        assert!(err(&["a.py", "missing.py"]).contains("missing.py is not a test script"));
        assert_eq!(
            err(&["a.py", "x/a.py"]),
            "two test scripts are named a.py: their output would share a directory"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
