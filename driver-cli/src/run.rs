//! Running one test script (or the REPL over it), and the `exec` mode: a driver, the script's
//! engine, then stopping the machines and writing the reports, whatever ended the run.

use crate::args::{RunArgs, Speed};
use crate::builtin::MachineArg;
use crate::coverage;
use crate::junit;
use crate::nixos_args;
use crate::output::Output;
use crate::python;
use crate::repl;
use crate::report;
use crate::script;
use crate::script_error::located;
use crate::setup::{builtin_machine, network_driver, new_driver, setup_error, usage, Failure};
use crate::suite;
use anyhow::Context;
use driver::StartCommand;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `exec` mode: `commands` in the machine of `start_script` or `--machine`, each of which must
/// succeed.
pub fn exec(
    start_script: Option<PathBuf>,
    machine: Option<MachineArg>,
    commands: &[String],
    keep_vm_state: bool,
    speed: Speed,
) -> Result<(), Failure> {
    let options = driver::Options {
        require_kvm: speed.require_kvm,
        timeout_factor: speed.timeout_factor,
        ..Default::default()
    };
    // Checked before a driver (and its state directory) exists.
    let machine = machine.map(|m| builtin_machine(&m)).transpose()?;
    let driver = new_driver(keep_vm_state, options)?;
    let vm = match (start_script, machine) {
        (Some(script), None) => driver.add_machine(StartCommand::Script(script)),
        (None, Some(machine)) => machine.add_to(&driver),
        // clap lets exactly one through.
        _ => return Err(usage("exec takes START_SCRIPT or --machine, one of them")),
    }
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

/// Runs one test script (or the REPL, or a directory of them), then writes the reports asked for.
pub fn run_script(mut args: RunArgs, out: &'static Output) -> Result<(), Failure> {
    nixos_args::resolve(&mut args, &nixos_args::process_env)?;
    if let Some(dir) = args.test_script.as_deref().filter(|p| p.is_dir()) {
        if let Some(more) = args.more_scripts.first() {
            return Err(usage(&format!(
                "give a directory of test scripts or a list of them, not both ({} and {})",
                dir.display(),
                more.display()
            )));
        }
        return suite::run(&args, dir);
    }
    if let Some(first) = args
        .test_script
        .clone()
        .filter(|_| !args.more_scripts.is_empty())
    {
        let list: Vec<PathBuf> = std::iter::once(first)
            .chain(args.more_scripts.iter().cloned())
            .collect();
        return suite::run_list(&args, &list);
    }
    if args.jobs.is_some() || args.partition.is_some() {
        let given = match &args.test_script {
            Some(p) => format!(", not {}", p.display()),
            None => String::new(),
        };
        return Err(usage(&format!(
            "--jobs and --partition need a directory or a list of test scripts{given}"
        )));
    }
    let path = match args.test_script {
        Some(path) => Some(path),
        None if args.interactive => None,
        None => {
            return Err(usage(&format!(
                "no test script given: vm-test-driver --start-scripts A B -- test.rhai{}",
                swallowed_script_hint(&args.network.start_scripts)
            )))
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
    let (t0, outcome, cases, panicked) = match path.as_deref().filter(|p| python::is_python(p)) {
        Some(_) => {
            let out_dir = match &args.network.output_dir {
                Some(dir) => dir.clone(),
                None => std::env::current_dir().map_err(|e| Failure::Setup(e.into()))?,
            };
            let script =
                python::Script::compile(&driver, shown, &source, &out_dir, args.enable_ocr, out)
                    .map_err(Failure::Setup)?;
            let deadline = args.global_timeout.map(|t| {
                let t = Duration::from_secs_f64(t);
                driver.set_global_timeout(t);
                Instant::now() + t
            });
            if args.interactive {
                return leave_repl(&driver, script.interact(&driver, deadline, out));
            }
            let t0 = Instant::now();
            let python::Outcome {
                result,
                cases,
                panicked,
            } = script.run(deadline);
            (t0, result, cases, panicked)
        }
        None => {
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
                return leave_repl(&driver, outcome);
            }
            let t0 = Instant::now();
            // A panic is a bug in the driver, yet the run still ends as any failure does:
            // machines stopped, coverage, reports and JUnit written (the panic message already
            // went to stderr).
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
            .map_err(|e| located(shown, &e));
            (t0, outcome, cases.take(), panicked)
        }
    };
    // Machines still running at the end are stopped (not powered off cleanly), as in NixOS; their
    // coverage data is copied out first.
    driver.collect_coverage();
    driver.stop_all();
    let signal = driver.take_signal();
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

/// Ends a REPL's session: the machines still running are stopped (their coverage copied out
/// first), as at the end of a run; a REPL writes no report.
fn leave_repl(driver: &driver::Driver, outcome: anyhow::Result<()>) -> Result<(), Failure> {
    driver.collect_coverage();
    driver.stop_all();
    outcome.map_err(Failure::Setup)
}

/// When the last start script looks like a test script, says that --start-scripts took it.
fn swallowed_script_hint(start_scripts: &[PathBuf]) -> String {
    let Some(last) = start_scripts.last() else {
        return String::new();
    };
    let name = last.file_name().unwrap_or_default().to_string_lossy();
    let start_script = (name.starts_with("run-") && name.ends_with("-vm")) || last.is_dir();
    if start_script || name.contains(['*', '?', '[']) {
        return String::new();
    }
    format!(
        "; --start-scripts took {} as a start script: put the test script after `--`",
        last.display()
    )
}

/// The message a panic was raised with (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
