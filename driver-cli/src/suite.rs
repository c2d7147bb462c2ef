//! Running a directory of test scripts: each script in a child process of this binary (its own
//! driver, state directory and machines), at most `--jobs` at once, only the `--partition`'s share.
//!
//! A child is this executable run on one script with the run's options, its files put where they
//! cannot collide (`<output dir>/<stem>/`, `<report>/<stem>/`, a JUnit file of its own that the
//! parent merges). Its output passes through line by line, prefixed `[<stem>] `. The parent reaps
//! on SIGCHLD and forwards SIGINT, SIGTERM and SIGHUP to the children, which stop their machines
//! themselves; a parent killed outright takes them along by `PR_SET_PDEATHSIG(SIGTERM)`.

use crate::args::RunArgs;
use crate::junit;
use crate::setup::{usage, Failure};
use anyhow::Context;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A line longer than this is passed through in pieces, each prefixed.
const MAX_LINE: u64 = 64 * 1024;
/// The tail of a child's log kept for a JUnit suite the child could not write itself.
const KEPT_OUTPUT: usize = 1024 * 1024;

/// One test script of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    path: PathBuf,
    /// Its file name without `.rhai`: the log prefix, the subdirectory and the JUnit suite name.
    stem: String,
}

/// The `*.rhai` files in `dir` (not in subdirectories), sorted by file name.
fn collect(dir: &Path) -> anyhow::Result<Vec<Script>> {
    let mut found: Vec<(OsString, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the test scripts in {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name(), e.path()))
        .filter(|(name, path)| {
            Path::new(name).extension() == Some(OsStr::new("rhai")) && path.is_file()
        })
        .collect();
    found.sort();
    Ok(found
        .into_iter()
        .map(|(_, path)| Script {
            stem: path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            path,
        })
        .collect())
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
    let mut flag = |on: bool, name: &str| {
        if on {
            a.push(name.into());
        }
    };
    flag(net.keep_vm_state, "--keep-vm-state");
    flag(net.speed.require_kvm, "--require-kvm");
    flag(args.coverage_report, "--coverage-report");
    // The list options last, each closed by the `--` before the script.
    if !net.start_scripts.is_empty() {
        a.push("--start-scripts".into());
        a.extend(net.start_scripts.iter().map(OsString::from));
    }
    if !net.vlans.is_empty() {
        a.push("--vlans".into());
        a.extend(net.vlans.iter().map(|v| OsString::from(v.to_string())));
    }
    a.push("--".into());
    a.push(script.path.clone().into());
    a
}

/// How one script ended.
enum Outcome {
    Exited {
        status: ExitStatus,
        time: Duration,
    },
    /// It could not be started.
    Unstarted(String),
    /// A signal stopped the suite before its turn.
    NotRun,
}

impl Outcome {
    fn passed(&self) -> bool {
        matches!(self, Outcome::Exited { status, .. } if status.success())
    }

    /// `passed`, `failed (exit status 1)`, `failed (killed by SIGKILL)`, `not run`.
    fn describe(&self) -> String {
        match self {
            Outcome::Exited { status, .. } if status.success() => "passed".into(),
            Outcome::Exited { status, .. } => format!("failed ({})", exit_status(*status)),
            Outcome::Unstarted(e) => format!("failed (not started: {e})"),
            Outcome::NotRun => "not run".into(),
        }
    }
}

fn exit_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by {}", signal_name(sig)),
        (None, None) => status.to_string(),
    }
}

fn signal_name(sig: i32) -> String {
    signal_hook::low_level::signal_name(sig).map_or_else(|| format!("signal {sig}"), str::to_string)
}

/// A child running one script, with the threads passing its output through.
struct Running {
    index: usize,
    child: std::process::Child,
    started: Instant,
    readers: Vec<JoinHandle<()>>,
}

/// Runs the `*.rhai` scripts in `dir` (the test script given), the partition's share of them, at
/// most `--jobs` at once, and prints a summary. Exit: 0 all passed, 1 any failed.
pub fn run(args: &RunArgs, dir: &Path) -> Result<(), Failure> {
    if args.interactive {
        return Err(usage(&format!(
            "--interactive takes one test script, not the directory {}",
            dir.display()
        )));
    }
    if args.coverage_report && args.network.output_dir.is_none() {
        return Err(usage(
            "--coverage-report needs --output-dir: the coverage data is collected there",
        ));
    }
    let all = collect(dir).map_err(Failure::Setup)?;
    if all.is_empty() {
        return Err(usage(&format!(
            "{} holds no *.rhai test script",
            dir.display()
        )));
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
            "partition {} holds none of the {total} test scripts in {}: nothing to run",
            args.partition.map(|p| p.to_string()).unwrap_or_default(),
            dir.display()
        );
        return Ok(());
    }
    let jobs = args.jobs.unwrap_or(1);
    log::info!(
        "running {} test scripts of {}{share}, up to {jobs} at once",
        scripts.len(),
        dir.display()
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
            let junit = junit_dir.as_ref().map(|d| d.file(script));
            let argv = child_args(args, script, junit.as_deref());
            match spawn(&exe, &argv, script, kept[next].clone()) {
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
    summarize(&scripts, &outcomes);
    if let (Some(file), Some(dir)) = (&args.junit, &junit_dir) {
        let suites = scripts
            .iter()
            .zip(&outcomes)
            .zip(&kept)
            .map(|((s, o), k)| suite_of(dir, s, o, k.as_ref(), interrupted))
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

/// Reaps exited processes that are not in `ours`: as a subreaper (see `main`) we adopt what the
/// children leave behind when they exit (a watchdog that outlived its driver), and nothing else
/// would reap those. Stops at a child of ours, which the next SIGCHLD reaps.
fn reap_orphans(ours: &[i32]) {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: WNOWAIT only looks: the process stays waitable.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` for an exited child (si_pid stays 0 when there is none).
        let pid = unsafe { info.si_pid() };
        if r != 0 || pid == 0 || ours.contains(&pid) {
            return;
        }
        // SAFETY: `pid` is an exited child of ours that no `Child` owns.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
}

/// Starts the child for `script` in its own process group (a terminal's ^C reaches only the
/// parent, which forwards it once), with its stdout and stderr passed through prefixed.
fn spawn(
    exe: &Path,
    argv: &[OsString],
    script: &Script,
    kept: Option<Arc<Mutex<String>>>,
) -> anyhow::Result<(std::process::Child, Vec<JoinHandle<()>>)> {
    let mut cmd = Command::new(exe);
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SIGTERM, not SIGKILL: the child then stops its machines as on any SIGTERM.
    qemu_proc::die_with_parent(&mut cmd, libc::SIGTERM);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let prefix = format!("[{}] ", script.stem);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(pass_through(out, prefix.clone(), Stream::Stdout, None));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(pass_through(err, prefix, Stream::Stderr, kept));
    }
    Ok((child, readers))
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A thread copying `from` line by line to our own `to`, each line prefixed, whole lines written at
/// once so the children's lines never interleave; `kept` gets the text too (its last part).
fn pass_through(
    from: impl Read + Send + 'static,
    prefix: String,
    to: Stream,
    kept: Option<Arc<Mutex<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut from = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut from).take(MAX_LINE).read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            let mut whole = Vec::with_capacity(prefix.len() + line.len());
            whole.extend_from_slice(prefix.as_bytes());
            whole.extend_from_slice(&line);
            let _ = match to {
                Stream::Stdout => std::io::stdout().lock().write_all(&whole),
                Stream::Stderr => std::io::stderr().lock().write_all(&whole),
            };
            if let Some(kept) = &kept {
                let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                k.push_str(&String::from_utf8_lossy(&line));
                if k.len() > KEPT_OUTPUT {
                    // Drop whole lines from the front.
                    let cut = k.len() - KEPT_OUTPUT;
                    let cut = k[cut..].find('\n').map_or(k.len(), |at| cut + at + 1);
                    k.drain(..cut);
                }
            }
        }
    })
}

/// The summary: one line per script, then the counts.
fn summarize(scripts: &[Script], outcomes: &[Outcome]) {
    let width = scripts.iter().map(|s| s.stem.len()).max().unwrap_or(0);
    log::info!("summary:");
    for (s, o) in scripts.iter().zip(outcomes) {
        let time = match o {
            Outcome::Exited { time, .. } => format!("  {:.2} s", time.as_secs_f64()),
            _ => String::new(),
        };
        let line = format!("  {:width$}  {}{time}", s.stem, o.describe());
        if o.passed() {
            log::info!("{line}");
        } else {
            log::error!("{line}");
        }
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let not_run = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::NotRun))
        .count();
    let failed = outcomes.len() - passed - not_run;
    let not_run = match not_run {
        0 => String::new(),
        n => format!(", {n} not run"),
    };
    log::info!("{passed} passed, {failed} failed{not_run}");
}

/// The JUnit suite of one script: the one its child wrote, else one saying why there is none.
fn suite_of(
    dir: &JunitDir,
    script: &Script,
    outcome: &Outcome,
    kept: Option<&Arc<Mutex<String>>>,
    interrupted: Option<i32>,
) -> quick_junit::TestSuite {
    let output = kept
        .map(|k| k.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let (time, failure) = match outcome {
        Outcome::NotRun => {
            let why = match interrupted {
                Some(sig) => format!("not run: interrupted by {}", signal_name(sig)),
                None => "not run".into(),
            };
            return junit::skipped_suite(&script.stem, &why);
        }
        Outcome::Unstarted(e) => (Duration::ZERO, format!("not started: {e}")),
        Outcome::Exited { status, time } => {
            let failure = format!(
                "vm-test-driver {} ({})",
                exit_status(*status),
                status_meaning(*status)
            );
            match junit::read_suite(&dir.file(script)) {
                Ok(mut suite) => {
                    // A child that failed must not look green, whatever its file says.
                    if !status.success() && suite.failures == 0 && suite.errors == 0 {
                        suite.add_test_case(junit::failed_case(
                            &script.stem,
                            *time,
                            &failure,
                            &output,
                        ));
                    }
                    return suite;
                }
                // No file: the script did not get to run (a syntax error, a bad option) or the
                // child died; its log says why.
                Err(e) => {
                    log::debug!("{}: {e:#}", script.stem);
                    (*time, failure)
                }
            }
        }
    };
    junit::failed_suite(&script.stem, time, &failure, &output)
}

/// What the binary's exit statuses mean.
fn status_meaning(status: ExitStatus) -> &'static str {
    match status.code() {
        Some(0) => "passed",
        Some(1) => "the test failed",
        Some(2) => "usage or setup error",
        Some(101) => "the driver panicked",
        Some(c) if c > 128 => "stopped by a signal",
        _ if status.signal().is_some() => "killed",
        _ => "unexpected exit status",
    }
}

/// A private directory for the children's JUnit files next to the merged one (`.<name>.parts-<pid>`,
/// so a run killed before it could remove it leaves it where the report goes), removed when dropped.
struct JunitDir(PathBuf);

impl JunitDir {
    fn create(merged: &Path) -> anyhow::Result<JunitDir> {
        let parent = merged
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = merged.file_name().unwrap_or_default().to_string_lossy();
        let dir = parent.join(format!(".{name}.parts-{}", std::process::id()));
        // Left over by an earlier run with our pid that was killed.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(JunitDir(dir))
    }

    fn file(&self, script: &Script) -> PathBuf {
        self.0.join(format!("{}.xml", script.stem))
    }
}

impl Drop for JunitDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
             --keep-vm-state --require-kvm --coverage-report \
             --start-scripts run-a-vm run-b-vm --vlans 1 2 -- t/web.rhai"
        );
        // What the child gets parses back to the same options, for one script.
        let back = args(&argv);
        assert_eq!(back.test_script.as_deref(), Some(Path::new("t/web.rhai")));
        assert_eq!(back.network.vlans, [1, 2]);
        assert_eq!(back.network.speed.timeout_factor, Some(2.5));
        assert!(back.jobs.is_none() && back.partition.is_none());
    }

    #[test]
    fn a_child_of_a_bare_run_gets_only_its_script() {
        let argv = child_args(&args(&["dir"]), &script(), None);
        assert_eq!(argv, ["--", "t/web.rhai"]);
    }

    #[test]
    fn scripts_are_the_rhai_files_sorted_by_name() {
        let dir = std::env::temp_dir().join(format!("vmtd-suite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub.rhai")).unwrap();
        for f in ["b.rhai", "a.rhai", "c.txt", "a.rhai.bak", "B.rhai"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let stems: Vec<String> = collect(&dir).unwrap().into_iter().map(|s| s.stem).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(stems, ["B", "a", "b"]);
    }
}
