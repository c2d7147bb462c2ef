//! `vm-test-driver`: boots VMs under QEMU and runs commands in them.
//!
//! For now one mode, `exec`: start one machine, run each command with `succeed`, print its output,
//! power the machine off. Test scripts come later (issue 5).

use anyhow::Context;
use clap::{Parser, Subcommand};
use driver::{Driver, StartCommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Boot QEMU virtual machines and run tests against them.
#[derive(Parser, Debug)]
#[command(name = "vm-test-driver", version)]
struct Cli {
    /// Keep the run's state directory (sockets, `vm-state-<name>`) afterwards.
    #[arg(long, global = true)]
    keep_vm_state: bool,
    #[command(subcommand)]
    mode: Mode,
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
    },
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.mode {
        Mode::Exec {
            start_script,
            commands,
        } => {
            let driver = Driver::new()?;
            if cli.keep_vm_state {
                driver.keep_vm_state();
                log::info!("keeping state in {}", driver.state_dir().display());
            }
            let vm = driver.add_machine(StartCommand::Script(start_script))?;
            vm.connect()?;
            for cmd in &commands {
                let out = vm
                    .succeed(cmd)
                    .with_context(|| format!("running `{cmd}`"))?;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(out.as_bytes())?;
                stdout.flush()?;
            }
            vm.shutdown()?;
            Ok(())
        }
    }
}
