//! `vm-test-driver`: boots VMs under QEMU and runs test scripts against them.
//!
//! `vm-test-driver --start-scripts run-a-vm run-b-vm --vlans 1 2 -- test.rhai` runs a Rhai test script
//! with every machine as a global; `vm-test-driver exec START_SCRIPT -- COMMAND...` runs commands in
//! one machine. Given a directory instead of a script, it runs the `*.rhai` files in it, each in a
//! child process of its own: `-j N` at once, `--partition K/N` only a deterministic share of them.
//! Exit status: 0 passed, 1 test failed, 2 usage or setup error.

mod coverage;
mod interact;
mod junit;
mod output;
mod repl;
mod report;
mod run_vms;
mod script;
mod script_error;
mod suite;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use driver::{Driver, StartCommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Boot QEMU virtual machines and run tests against them.
#[derive(Parser, Debug)]
#[command(
    name = "vm-test-driver",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    run: RunArgs,
}

/// The machines of a run and where its files go.
#[derive(Args, Debug)]
struct Network {
    /// NixOS-style start scripts `run-<name>-vm`, each a machine named <name>; a directory stands for
    /// the `run-*-vm` files in it, a quoted glob pattern for the files it matches.
    #[arg(long, num_args = 1.., value_name = "SCRIPT")]
    start_scripts: Vec<PathBuf>,
    /// VLAN numbers every machine is attached to.
    #[arg(long, num_args = 1.., value_name = "N")]
    vlans: Vec<u32>,
    /// Keep the run's state directory (sockets, `vm-state-<name>`) afterwards.
    #[arg(long)]
    keep_vm_state: bool,
    /// Keep state in DIR (created 0700, never removed) instead of a fresh directory, so a later run
    /// with the same DIR finds each machine's `vm-state-<name>` (its disk) again.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Write the log (`log.txt`) and each machine's serial console (`<name>.console.log`) here.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Keep each machine booted and ready in DIR after its first boot; later runs of the same
    /// machine (start script, its files, network) resume from there instead of booting.
    #[arg(long, value_name = "DIR")]
    snapshot_cache: Option<PathBuf>,
    #[command(flatten)]
    speed: Speed,
}

/// How fast machines run, and how long waits may therefore last.
#[derive(Args, Debug, Clone, Copy)]
struct Speed {
    /// Fail at once, naming why, unless KVM is usable (rather than run slowly under TCG).
    #[arg(long)]
    require_kvm: bool,
    /// Multiply every timeout by F (default: 1 under KVM, 5 under TCG).
    #[arg(long, value_name = "F")]
    timeout_factor: Option<f64>,
}

/// Running a test script.
#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    network: Network,
    /// End the run after this many seconds, reporting the step in progress.
    #[arg(long, value_name = "SECONDS")]
    global_timeout: Option<f64>,
    /// Write a JUnit XML report to FILE: one test case per subtest.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write the run report (index.html and report.json) into DIR; default: the output directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// After the run, merge the coverage data collected from the machines into one lcov/genhtml
    /// report under OUTPUT_DIR/coverage (needs --output-dir).
    #[arg(long)]
    coverage_report: bool,
    /// Start a REPL with the script's bindings instead of running the script (`test_script()` runs it).
    #[arg(long, short = 'I')]
    interactive: bool,
    /// Run up to N test scripts at once (default 1); needs a directory of test scripts.
    #[arg(short = 'j', long, value_name = "N", value_parser = suite::parse_jobs)]
    jobs: Option<usize>,
    /// Run only share K of N of the directory's test scripts: with the scripts sorted by file name,
    /// script i (from 0) belongs to share (i mod N) + 1. For splitting a suite over CI machines.
    #[arg(long, value_name = "K/N")]
    partition: Option<suite::Partition>,
    /// The Rhai test script, or a directory whose `*.rhai` files each run in a driver of their own;
    /// put it after `--` when it follows a list option.
    test_script: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Start the machine of START_SCRIPT, run each COMMAND in it (each must succeed), shut it down.
    Exec {
        /// A NixOS-style start script, `run-<name>-vm`.
        start_script: PathBuf,
        /// Shell commands run as root in the guest, in order; give them after `--`.
        #[arg(last = true, required = true)]
        commands: Vec<String>,
        /// Keep the run's state directory afterwards.
        #[arg(long)]
        keep_vm_state: bool,
        #[command(flatten)]
        speed: Speed,
    },
    /// Merge the coverage data a run collected into OUTPUT_DIR/coverage into one HTML report and
    /// print its summary (what `--coverage-report` does after a run).
    Coverage {
        /// The output directory of the run.
        output_dir: PathBuf,
    },
    /// Start all machines, print how to reach them, and keep them running until Ctrl-C.
    RunVms {
        #[command(flatten)]
        network: Network,
        /// Forward a host port on 127.0.0.1 to a guest port: `HOST:GUEST` (the first machine) or
        /// `MACHINE:HOST:GUEST`.
        #[arg(long, value_name = "[MACHINE:]HOST:GUEST")]
        forward: Vec<String>,
    },
}

/// Why a run did not pass: the test itself (exit 1), how it was asked for (exit 2), a signal
/// (exit 128 + its number), or a bug in the driver (exit 101).
enum Failure {
    Test(anyhow::Error),
    Setup(anyhow::Error),
    Signal(i32, anyhow::Error),
    /// A bug in the driver: exit status 101, as an uncaught Rust panic has.
    Panic(anyhow::Error),
}

fn main() -> ExitCode {
    let out = output::init();
    // QEMUs that a start script forked without exec become our children when the script exits, so
    // they are reaped and stopped with their process group instead of lingering under PID 1.
    if let Err(e) = qemu_proc::become_subreaper() {
        log::warn!("{e}");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.mode {
        Some(Mode::Exec {
            start_script,
            commands,
            keep_vm_state,
            speed,
        }) => exec(start_script, &commands, keep_vm_state, speed),
        Some(Mode::RunVms { network, forward }) => run_vms::run(&network, &forward, out),
        Some(Mode::Coverage { output_dir }) => match coverage::report(&output_dir) {
            Ok(summary) => {
                println!("coverage: {summary}");
                Ok(())
            }
            Err(e) => Err(Failure::Setup(e)),
        },
        None => run_script(cli.run, out),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Test(e)) => {
            log::error!("test failed: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Setup(e)) => {
            log::error!("{e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Panic(e)) => {
            log::error!("{e:#}");
            ExitCode::from(101)
        }
        Err(Failure::Signal(sig, e)) => {
            log::error!("{e:#}");
            ExitCode::from(128u8.saturating_add(sig as u8))
        }
    };
    out.clear_status();
    log::logger().flush();
    code
}

/// The message a panic was raised with (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn setup_error(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Setup(e.into())
}

fn new_driver(keep_vm_state: bool, options: driver::Options) -> Result<Driver, Failure> {
    if let Some(f) = options.timeout_factor {
        if !(f.is_finite() && f > 0.0) {
            return Err(usage(&format!(
                "--timeout-factor must be a positive number, not {f}"
            )));
        }
    }
    let state_dir = options.state_dir.is_some();
    let driver = Driver::with_options(&options).map_err(setup_error)?;
    if keep_vm_state || state_dir {
        driver.keep_vm_state();
        log::info!("keeping state in {}", driver.state_dir().display());
    }
    Ok(driver)
}

/// A driver with the network's machines added (not started), signals caught, and the log following
/// it (and written to the output directory, if there is one).
fn network_driver(net: &Network, out: &'static output::Output) -> Result<Driver, Failure> {
    let options = driver::Options {
        state_dir: net.state_dir.clone(),
        require_kvm: net.speed.require_kvm,
        timeout_factor: net.speed.timeout_factor,
        output_dir: net.output_dir.clone(),
        snapshot_cache: net.snapshot_cache.clone(),
        max_output: None,
    };
    let driver = new_driver(net.keep_vm_state, options)?;
    driver.catch_signals().map_err(setup_error)?;
    out.follow(driver.activity());
    if let Some(dir) = &net.output_dir {
        std::fs::create_dir_all(dir)
            .and_then(|()| out.write_to(&dir.join("log.txt"), dir))
            .with_context(|| format!("cannot write to the output directory {}", dir.display()))
            .map_err(Failure::Setup)?;
    }
    for s in expand_start_scripts(&net.start_scripts).map_err(Failure::Setup)? {
        // Caught here, a missing script is a setup error (exit 2), not a failure of the test.
        if !s.is_file() {
            return Err(usage(&format!(
                "start script {} does not exist",
                s.display()
            )));
        }
        let vm = driver
            .add_machine(StartCommand::Script(s))
            .map_err(setup_error)?;
        vm.attach_vlans(&net.vlans).map_err(setup_error)?;
    }
    Ok(driver)
}

fn usage(msg: &str) -> Failure {
    Failure::Setup(anyhow::anyhow!("{msg} (see --help)"))
}

fn exec(
    start_script: PathBuf,
    commands: &[String],
    keep_vm_state: bool,
    speed: Speed,
) -> Result<(), Failure> {
    let options = driver::Options {
        require_kvm: speed.require_kvm,
        timeout_factor: speed.timeout_factor,
        ..Default::default()
    };
    let driver = new_driver(keep_vm_state, options)?;
    let vm = driver
        .add_machine(StartCommand::Script(start_script))
        .map_err(setup_error)?;
    let test = || -> anyhow::Result<()> {
        vm.connect()?;
        for cmd in commands {
            let out = vm
                .succeed(cmd)
                .with_context(|| format!("running `{cmd}`"))?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(out.as_bytes())?;
            stdout.flush()?;
        }
        vm.shutdown()?;
        Ok(())
    };
    test().map_err(Failure::Test)
}

fn run_script(args: RunArgs, out: &'static output::Output) -> Result<(), Failure> {
    if let Some(dir) = args.test_script.as_deref().filter(|p| p.is_dir()) {
        return suite::run(&args, dir);
    }
    if args.jobs.is_some() || args.partition.is_some() {
        let given = match &args.test_script {
            Some(p) => format!(", not {}", p.display()),
            None => String::new(),
        };
        return Err(usage(&format!(
            "--jobs and --partition need a directory of test scripts{given}"
        )));
    }
    let path = match args.test_script {
        Some(path) => Some(path),
        None if args.interactive => None,
        None => {
            return Err(usage(
                "no test script given: vm-test-driver --start-scripts A B -- test.rhai",
            ))
        }
    };
    let source = match &path {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the test script {}", path.display()))
            .map_err(Failure::Setup)?,
        None => String::new(),
    };
    if let Some(t) = args.global_timeout {
        if !(t.is_finite() && t > 0.0) {
            return Err(usage(&format!(
                "--global-timeout must be a positive number of seconds, not {t}"
            )));
        }
    }
    if args.junit.is_some() {
        out.keep_lines();
    }
    if args.coverage_report && args.network.output_dir.is_none() {
        return Err(usage(
            "--coverage-report needs --output-dir: the coverage data is collected there",
        ));
    }
    let driver = network_driver(&args.network, out)?;
    let shown = path.as_deref().unwrap_or(Path::new("<repl>"));
    let cases = script::Cases::new(shown);
    let engine = script::engine(&driver, &cases, out);
    let mut scope = script::scope(&driver);
    let ast = engine.compile_with_scope(&scope, &source).map_err(|e| {
        // file:line:column first, as runtime errors are shown.
        let at = e.position();
        Failure::Setup(anyhow::anyhow!(
            "{}:{}:{}: syntax error: {}",
            shown.display(),
            at.line().unwrap_or(0),
            at.position().unwrap_or(0),
            e.err_type()
        ))
    })?;
    if let Some(t) = args.global_timeout {
        driver.set_global_timeout(Duration::from_secs_f64(t));
    }
    if args.interactive {
        let outcome = repl::run(
            &engine,
            &mut scope,
            &driver,
            path.as_ref().map(|_| &ast),
            out,
        );
        driver.collect_coverage();
        driver.stop_all();
        return outcome.map_err(Failure::Setup);
    }
    let t0 = Instant::now();
    // A panic is a bug in the driver, yet the run still ends as any failure does: machines stopped,
    // coverage, reports and JUnit written (the panic message already went to stderr).
    let mut panicked = false;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.run_ast_with_scope(&mut scope, &ast)
    }))
    .unwrap_or_else(|payload| {
        panicked = true;
        Err(format!(
            "internal error: the driver panicked: {}",
            panic_message(&*payload)
        )
        .into())
    })
    .map_err(|e| script_error::located(shown, &e));
    // Machines still running at the end are stopped (not powered off cleanly), as in NixOS; their
    // coverage data is copied out first.
    driver.collect_coverage();
    driver.stop_all();
    let signal = driver.take_signal();
    let cases = cases.take();
    // Coverage never decides the test's result: a problem with it is a warning.
    let coverage = match &args.network.output_dir {
        Some(dir) if args.coverage_report => match coverage::report(dir) {
            Ok(summary) => {
                log::info!("coverage: {summary}");
                Some(summary)
            }
            Err(e) => {
                log::warn!("coverage: {e:#}");
                None
            }
        },
        _ => None,
    };
    // Written whatever ended the run, so a timed-out or interrupted run still explains itself.
    if let Some(dir) = args.report.as_ref().or(args.network.output_dir.as_ref()) {
        let interrupted = match signal {
            Some(sig) => Some(format!(
                "interrupted by {}",
                signal_hook::low_level::signal_name(sig).unwrap_or("a signal")
            )),
            None => driver.check_interrupts().err().map(|e| e.to_string()),
        };
        let accel = driver.accel();
        // The record's times count from the driver's creation; so do the report's.
        let duration = driver.elapsed().as_secs_f64();
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            - duration;
        let report = report::Report {
            schema_version: report::SCHEMA_VERSION,
            script: shown.display().to_string(),
            passed: outcome.is_ok(),
            interrupted,
            started_unix,
            duration,
            accelerator: format!("{} ({})", accel.accel, accel.reason),
            timeout_factor: driver.timeout_factor(),
            error: outcome.as_ref().err().cloned(),
            tests: cases.iter().map(report::TestResult::of).collect(),
            record: driver.record(),
            coverage: coverage.clone(),
        };
        report::write(dir, &report)
            .with_context(|| format!("cannot write the report into {}", dir.display()))
            .map_err(Failure::Setup)?;
        log::info!("report: {}", dir.join("index.html").display());
    }
    if let Some(file) = &args.junit {
        let name = shown.file_stem().unwrap_or_default().to_string_lossy();
        let all = junit::Run {
            suite: &name,
            time: t0.elapsed(),
            cases,
            failure: outcome.as_ref().err().map(String::as_str),
            output: out.lines_since(0),
            coverage: coverage.as_ref().map(|c| c.to_string()),
        };
        junit::write(file, all)
            .with_context(|| format!("cannot write the JUnit report {}", file.display()))
            .map_err(Failure::Setup)?;
    }
    match (outcome, signal) {
        (Err(e), _) if panicked => Err(Failure::Panic(anyhow::anyhow!(e))),
        (Ok(()), _) => {
            log::info!("test passed in {:.2} s", t0.elapsed().as_secs_f64());
            Ok(())
        }
        (Err(e), Some(sig)) => Err(Failure::Signal(sig, anyhow::anyhow!(e))),
        (Err(e), None) => Err(Failure::Test(anyhow::anyhow!(e))),
    }
}

/// Start scripts as given, with a directory standing for the `run-*-vm` files in it (sorted).
fn expand_start_scripts(given: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in given {
        let text = path.to_string_lossy();
        if !path.exists() && text.contains(['*', '?', '[']) {
            // A pattern the shell did not expand (quoted, or from a CI config).
            let mut found = glob::glob(&text)
                .with_context(|| format!("invalid start script pattern {text}"))?
                .collect::<Result<Vec<_>, _>>()?;
            if found.is_empty() {
                anyhow::bail!("no start script matches {text}");
            }
            found.sort();
            out.extend(found);
            continue;
        }
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("run-") && n.ends_with("-vm"))
            })
            .collect();
        if found.is_empty() {
            anyhow::bail!("{} holds no run-<name>-vm start script", path.display());
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}
