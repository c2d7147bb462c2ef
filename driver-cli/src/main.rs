//! `vm-test-driver`: boots VMs under QEMU and runs test scripts against them.
//!
//! `vm-test-driver --start-scripts run-a-vm run-b-vm --vlans 1 2 -- test.rhai` runs a Rhai test script
//! with every machine as a global; `vm-test-driver exec START_SCRIPT -- COMMAND...` runs commands in
//! one machine. Exit status: 0 passed, 1 test failed, 2 usage or setup error.

mod script;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use driver::{Driver, StartCommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

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

/// Running a test script.
#[derive(Args, Debug)]
struct RunArgs {
    /// NixOS-style start scripts `run-<name>-vm`, each a machine named <name>; a directory stands for
    /// the `run-*-vm` files in it.
    #[arg(long, num_args = 1.., value_name = "SCRIPT")]
    start_scripts: Vec<PathBuf>,
    /// VLAN numbers every machine is attached to.
    #[arg(long, num_args = 1.., value_name = "N")]
    vlans: Vec<u32>,
    /// Keep the run's state directory (sockets, `vm-state-<name>`) afterwards.
    #[arg(long)]
    keep_vm_state: bool,
    /// The Rhai test script; put it after `--` when it follows a list option.
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
    },
}

/// Why a run did not pass: the test itself (exit 1) or how it was asked for (exit 2).
enum Failure {
    Test(anyhow::Error),
    Setup(anyhow::Error),
}

fn main() -> ExitCode {
    let t0 = Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            // Console lines carry their machine's name already ("name# line"); keep them plain.
            writeln!(
                buf,
                "[{:8.3}s] {}",
                t0.elapsed().as_secs_f64(),
                record.args()
            )
        })
        .init();
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
        }) => exec(start_script, &commands, keep_vm_state),
        None => run_script(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Test(e)) => {
            log::error!("test failed: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Setup(e)) => {
            log::error!("{e:#}");
            ExitCode::from(2)
        }
    }
}

fn new_driver(keep_vm_state: bool) -> Result<Driver, Failure> {
    let driver = Driver::new().map_err(|e| Failure::Setup(e.into()))?;
    if keep_vm_state {
        driver.keep_vm_state();
        log::info!("keeping state in {}", driver.state_dir().display());
    }
    Ok(driver)
}

fn exec(start_script: PathBuf, commands: &[String], keep_vm_state: bool) -> Result<(), Failure> {
    let driver = new_driver(keep_vm_state)?;
    let vm = driver
        .add_machine(StartCommand::Script(start_script))
        .map_err(|e| Failure::Setup(e.into()))?;
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

fn run_script(args: RunArgs) -> Result<(), Failure> {
    let usage = |msg: &str| Failure::Setup(anyhow::anyhow!("{msg} (see --help)"));
    let Some(path) = args.test_script else {
        return Err(usage(
            "no test script given: vm-test-driver --start-scripts A B -- test.rhai",
        ));
    };
    let source = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the test script {}", path.display()))
        .map_err(Failure::Setup)?;
    let driver = new_driver(args.keep_vm_state)?;
    for s in expand_start_scripts(args.start_scripts).map_err(Failure::Setup)? {
        // Caught here, a missing script is a setup error (exit 2), not a failure of the test.
        if !s.is_file() {
            return Err(usage(&format!(
                "start script {} does not exist",
                s.display()
            )));
        }
        let vm = driver
            .add_machine(StartCommand::Script(s))
            .map_err(|e| Failure::Setup(e.into()))?;
        vm.attach_vlans(&args.vlans)
            .map_err(|e| Failure::Setup(e.into()))?;
    }
    let engine = script::engine(&driver);
    let mut scope = script::scope(&driver);
    let ast = engine
        .compile_with_scope(&scope, &source)
        .map_err(|e| Failure::Setup(anyhow::anyhow!("{}: {e}", path.display())))?;
    let t0 = Instant::now();
    let outcome = engine.run_ast_with_scope(&mut scope, &ast);
    // Machines still running at the end are stopped (not powered off cleanly), as in NixOS.
    driver.stop_all();
    match outcome {
        Ok(()) => {
            log::info!("test passed in {:.2} s", t0.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e) => {
            let at = e.position();
            Err(Failure::Test(anyhow::anyhow!(
                "{}:{}:{}: {}",
                path.display(),
                at.line().unwrap_or(0),
                at.position().unwrap_or(0),
                e.unwrap_inner()
            )))
        }
    }
}

/// Start scripts as given, with a directory standing for the `run-*-vm` files in it (sorted).
fn expand_start_scripts(given: Vec<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in given {
        if !path.is_dir() {
            out.push(path);
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(&path)
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
