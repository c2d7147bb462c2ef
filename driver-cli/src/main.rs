//! `vm-test-driver`: boots VMs under QEMU and runs test scripts against them.
//!
//! `vm-test-driver --start-scripts run-a-vm run-b-vm --vlans 1 2 -- test.rhai` runs a Rhai test script
//! with every machine as a global (`test.py`: a NixOS Python test script, see `python`); `vm-test-driver exec START_SCRIPT -- COMMAND...` runs commands in
//! one machine. Given a directory instead of a script, it runs the `*.rhai` and `*.py` files in it, each in a
//! child process of its own: `-j N` at once, `--partition K/N` only a deterministic share of them.
//! It also takes the NixOS test driver's options and environment variables (`nixos_args`), so
//! nixpkgs' test derivation can run it in place of `nixos-test-driver`.
//! Exit status: 0 passed, 1 test failed, 2 usage or setup error.

mod args;
mod builtin;
mod coverage;
mod interact;
mod junit;
mod nixos_args;
mod output;
mod python;
mod repl;
mod report;
mod run;
mod run_vms;
mod script;
mod script_error;
mod setup;
mod suite;
mod typecheck;

use args::{Cli, Mode};
use clap::Parser;
use setup::Failure;
use std::process::ExitCode;

fn main() -> ExitCode {
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
    // Parsed first: the log's level may come from the command line (NixOS's --log-level).
    let out = output::init(nixos_args::log_level(&cli.run, &nixos_args::process_env));
    // QEMUs that a start script forked without exec become our children when the script exits, so
    // they are reaped and stopped with their process group instead of lingering under PID 1.
    if let Err(e) = qemu_proc::become_subreaper() {
        log::warn!("{e}");
    }
    let result = match cli.mode {
        Some(Mode::Exec {
            start_script,
            machine,
            commands,
            keep_vm_state,
            speed,
        }) => run::exec(start_script, machine, &commands, keep_vm_state, speed),
        Some(Mode::RunVms {
            mut network,
            forward,
        }) => nixos_args::resolve_network(&mut network, &nixos_args::process_env)
            .and_then(|()| run_vms::run(&network, &forward, out)),
        Some(Mode::Coverage { output_dir }) => match coverage::report(&output_dir) {
            Ok(summary) => {
                println!("coverage: {summary}");
                Ok(())
            }
            Err(e) => Err(Failure::Setup(e)),
        },
        Some(Mode::Typecheck {
            vm_names,
            start_scripts,
            vlans,
            test_script,
        }) => typecheck::machine_names(&vm_names, &start_scripts)
            .and_then(|names| typecheck::typecheck(&names, &vlans, &test_script)),
        Some(Mode::Stubs { dir }) => typecheck::stubs(&dir),
        None => run::run_script(cli.run, out),
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
