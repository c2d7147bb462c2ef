//! The command line: what each mode takes, parsed by clap into plain values. Checks that need
//! more than one option, or the file system, are the run's (see `setup`); the NixOS test driver's
//! spellings and environment variables are turned into these options by `nixos_args`.

use crate::builtin::{parse_machine_arg, MachineArg};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::str::FromStr;

/// Boot QEMU virtual machines and run tests against them.
#[derive(Parser, Debug)]
#[command(
    name = "vm-test-driver",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The machines of a run and where its files go.
#[derive(Args, Debug)]
pub struct Network {
    /// NixOS-style start scripts `run-<name>-vm`, each a machine named <name>; a directory stands for
    /// the `run-*-vm` files in it, a quoted glob pattern for the files it matches.
    /// [env: vmStartScripts, startScripts]
    // Zero values are allowed, as NixOS's `nargs="*"` allows them.
    #[arg(long, visible_alias = "vm-start-scripts", num_args = 0.., value_name = "SCRIPT")]
    pub start_scripts: Vec<PathBuf>,
    /// Name the machines of --start-scripts, in the same order, instead of naming each after its
    /// script. [env: vmNames]
    #[arg(long, num_args = 0.., value_name = "NAME")]
    pub vm_names: Vec<String>,
    /// VLAN numbers every machine is attached to. [env: vlans]
    #[arg(long, num_args = 0.., value_name = "N", value_parser = parse_vlan)]
    pub vlans: Vec<u32>,
    /// A machine without a start script, booted from a disk image, an ISO or a kernel (repeatable;
    /// added after the start scripts' machines): KEY=VALUE pairs separated by commas, the keys name
    /// (default "machine"), hda, hda_interface, cdrom, memory (MiB), kernel, initrd, append,
    /// qemu_flags (split on whitespace); a value holding a comma in double quotes; relative paths
    /// from the current directory.
    #[arg(long = "machine", value_name = "KEY=VALUE,...", value_parser = parse_machine_arg)]
    pub machines: Vec<MachineArg>,
    /// Keep the run's state directory (sockets, `vm-state-<name>`) afterwards.
    #[arg(long, short = 'K', visible_alias = "keep-machine-state")]
    pub keep_vm_state: bool,
    /// Keep state in DIR (created 0700, never removed) instead of a fresh directory, so a later run
    /// with the same DIR finds each machine's `vm-state-<name>` (its disk) again.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Write the log (`log.txt`) and each machine's serial console (`<name>.console.log`) here.
    #[arg(
        long,
        short = 'o',
        visible_aliases = ["output_directory", "output-directory"],
        value_name = "DIR"
    )]
    pub output_dir: Option<PathBuf>,
    /// Keep each machine booted and ready in DIR after its first boot; later runs of the same
    /// machine (start script, its files, network) resume from there instead of booting.
    #[arg(long, value_name = "DIR")]
    pub snapshot_cache: Option<PathBuf>,
    #[command(flatten)]
    pub speed: Speed,
}

/// How fast machines run, and how long waits may therefore last.
#[derive(Args, Debug, Clone, Copy)]
pub struct Speed {
    /// Fail at once, naming why, unless KVM is usable (rather than run slowly under TCG).
    #[arg(long)]
    pub require_kvm: bool,
    /// Multiply every timeout by F (default: 1 under KVM, 5 under TCG).
    #[arg(long, value_name = "F")]
    pub timeout_factor: Option<f64>,
}

/// Running a test script.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub network: Network,
    /// End the run after this many seconds, reporting the step in progress. [env: globalTimeout]
    #[arg(long, value_name = "SECONDS")]
    pub global_timeout: Option<f64>,
    /// Write a JUnit XML report to FILE: one test case per subtest.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the run report (index.html and report.json) into DIR; default: the output directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// After the run, merge the coverage data collected from the machines into one lcov/genhtml
    /// report under OUTPUT_DIR/coverage (needs --output-dir).
    #[arg(long)]
    pub coverage_report: bool,
    /// Let Python scripts read the screen by OCR (`get_screen_text`, `wait_for_text`), as NixOS's
    /// `enableOCR = true` does; without it they raise "OCR requested but enableOCR is false".
    /// [env: enableOCR]
    #[arg(long)]
    pub enable_ocr: bool,
    /// Start a REPL with the script's bindings instead of running the script (`test_script()` runs it).
    #[arg(long, short = 'I', overrides_with = "no_interactive")]
    pub interactive: bool,
    /// Run the script, not a REPL (undoes an earlier --interactive).
    #[arg(long, overrides_with = "interactive")]
    pub no_interactive: bool,
    /// Run up to N test scripts at once (default 1); needs a directory or a list of test scripts.
    #[arg(short = 'j', long, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Run only share K of N of the directory's test scripts: with the scripts sorted by file name,
    /// script i (from 0) belongs to share (i mod N) + 1. For splitting a suite over CI machines.
    #[arg(long, value_name = "K/N")]
    pub partition: Option<Partition>,
    /// The Rhai test script (a `.py` one: a NixOS Python testScript), or a directory whose `*.rhai`
    /// and `*.py` files each run in a driver of their own;
    /// put it after `--` when it follows a list option. [env: testScript]
    pub test_script: Option<PathBuf>,
    /// More test scripts: then each of them runs in a driver of its own, as a directory's do
    /// (with --jobs and --partition, in the order given).
    #[arg(value_name = "MORE_SCRIPTS")]
    pub more_scripts: Vec<PathBuf>,
    #[command(flatten)]
    pub nixos: NixosArgs,
}

/// The modes besides running a test script.
#[derive(Subcommand, Debug)]
pub enum Mode {
    /// Start the machine of START_SCRIPT (or --machine), run each COMMAND in it (each must
    /// succeed), shut it down.
    Exec {
        /// A NixOS-style start script, `run-<name>-vm`.
        #[arg(required_unless_present = "machine")]
        start_script: Option<PathBuf>,
        /// Instead of START_SCRIPT, a machine without a start script: KEY=VALUE,... as for --machine
        /// of a test run.
        #[arg(long, value_name = "KEY=VALUE,...", conflicts_with = "start_script",
              value_parser = parse_machine_arg)]
        machine: Option<MachineArg>,
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
    /// Type-check a Python test script with mypy against the stubs of `test_driver`, its machines
    /// and VLANs declared as globals first (as nixpkgs checks a testScript).
    Typecheck {
        /// The machines' names, each a global `Machine` (separated by spaces or commas).
        #[arg(long, num_args = 0.., value_delimiter = ',', value_name = "NAME")]
        vm_names: Vec<String>,
        /// Instead of --vm-names, name the machines after start scripts `run-<name>-vm`, as a
        /// run does.
        #[arg(long, visible_alias = "vm-start-scripts", num_args = 0.., value_name = "SCRIPT")]
        start_scripts: Vec<PathBuf>,
        /// VLAN numbers, each a global `vlan<N>`.
        #[arg(long, num_args = 0.., value_name = "N", value_parser = parse_vlan)]
        vlans: Vec<u32>,
        /// The Python test script; put it after `--` when it follows a list option.
        test_script: PathBuf,
    },
    /// Write the type stubs of `test_driver` into DIR/test_driver (`*.pyi`, `py.typed`), for an
    /// editor (pyright's stubPath) or mypy (MYPYPATH=DIR).
    Stubs {
        /// Where the `test_driver` stub package goes.
        dir: PathBuf,
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

/// `--partition K/N`: the scripts whose 0-based index i (sorted by file name) has `i mod N == K - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Which share, from 1.
    pub k: usize,
    /// Into how many shares the scripts are split.
    pub n: usize,
}

impl FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or("expected K/N with 1 <= K <= N, such as 1/4")?;
        let number = |v: &str, what: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{what} is not a number: expected K/N, such as 1/4"))
        };
        let (k, n) = (number(k, "K")?, number(n, "N")?);
        if n == 0 {
            return Err("N must be at least 1".into());
        }
        if k == 0 || k > n {
            return Err(format!("K must be between 1 and N ({n})"));
        }
        Ok(Partition { k, n })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl Partition {
    /// Whether the script at `index` (0-based, in file name order) is in this share.
    pub fn holds(&self, index: usize) -> bool {
        index % self.n == self.k - 1
    }
}

/// A `--vlans` value: a number. What is not one is often the test script, swallowed by the list.
pub fn parse_vlan(s: &str) -> Result<u32, String> {
    s.parse().map_err(|_| {
        format!(
            "expected a VLAN number; a test script after --vlans goes after `--`: \
             --vlans 1 -- {s}"
        )
    })
}

/// `--jobs N`: at least 1.
pub fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1: how many test scripts run at once".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a number: how many test scripts run at once".into()),
    }
}

/// Options only the NixOS test driver has.
#[derive(Args, Debug)]
#[command(next_help_heading = "NixOS test driver compatibility")]
pub struct NixosArgs {
    /// NixOS's driver configuration (`driverConfiguration.json`): its `vms`, `vlans`,
    /// `global_timeout` and `test_script` stand in for the options not given.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// As --junit, but a relative FILE is in the output directory, as in NixOS.
    #[arg(long, value_name = "FILE", conflicts_with = "junit")]
    pub junit_xml: Option<PathBuf>,
    /// How much the log shows; RUST_LOG, when set, wins. [env: logLevel]
    #[arg(long, value_name = "LEVEL", value_parser = ["debug", "info", "warning", "error"])]
    pub log_level: Option<String>,
    /// Refused unless empty: systemd-nspawn containers are not supported. [env: containerNames]
    #[arg(long, num_args = 0.., value_name = "NAME")]
    pub container_names: Vec<String>,
    /// Refused unless empty, as --container-names. [env: containerStartScripts]
    #[arg(long, num_args = 0.., value_name = "SCRIPT")]
    pub container_start_scripts: Vec<PathBuf>,
    /// Ignored, with a warning: there is no Python debugger to attach to.
    #[arg(long, value_name = "ADDRESS")]
    pub debug_hook_attach: Option<String>,
    /// Ignored, with a warning: guests have no SSH backdoor over vsock here.
    #[arg(long, value_name = "OFFSET")]
    pub dump_vsocks: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_parse_and_reject_bad_values() {
        assert_eq!("2/3".parse(), Ok(Partition { k: 2, n: 3 }));
        assert_eq!("1/1".parse(), Ok(Partition { k: 1, n: 1 }));
        for bad in ["0/2", "3/2", "a/b", "1/0", "2", "", "1/2/3", "-1/2", " 1/2"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn every_index_is_in_exactly_one_partition() {
        for n in 1..6 {
            for i in 0..20 {
                let holders: Vec<usize> =
                    (1..=n).filter(|&k| Partition { k, n }.holds(i)).collect();
                assert_eq!(holders, [i % n + 1], "index {i} of {n} partitions");
            }
        }
    }

    #[test]
    fn jobs_must_be_a_positive_number() {
        assert_eq!(parse_jobs("4"), Ok(4));
        assert!(parse_jobs("0").is_err());
        assert!(parse_jobs("x").is_err());
    }
}
