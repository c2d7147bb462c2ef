//! What every mode that boots machines shares: how a run fails ([`Failure`], each kind with its
//! exit status), and a driver made from the command line's options with its machines added.

use crate::args::Network;
use crate::builtin::{Builtin, MachineArg};
use crate::output::Output;
use anyhow::Context;
use driver::{Driver, StartCommand};
use std::path::PathBuf;

/// Why a run did not pass: the test itself (exit 1), how it was asked for (exit 2), a signal
/// (exit 128 + its number), or a bug in the driver (exit 101).
pub enum Failure {
    /// The test failed (exit 1).
    Test(anyhow::Error),
    /// A usage or setup error (exit 2).
    Setup(anyhow::Error),
    /// Stopped by the signal of this number (exit 128 + it).
    Signal(i32, anyhow::Error),
    /// A bug in the driver: exit status 101, as an uncaught Rust panic has.
    Panic(anyhow::Error),
}

/// A setup error (exit 2) from any error.
pub fn setup_error(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Setup(e.into())
}

/// A driver with `options`, keeping its state directory when asked to.
pub fn new_driver(keep_vm_state: bool, options: driver::Options) -> Result<Driver, Failure> {
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
pub fn network_driver(net: &Network, out: &'static Output) -> Result<Driver, Failure> {
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
    let scripts = expand_start_scripts(&net.start_scripts).map_err(Failure::Setup)?;
    if !net.vm_names.is_empty() && net.vm_names.len() != scripts.len() {
        return Err(usage(&format!(
            "--vm-names gives {} names for {} start scripts: expected one name per start script, \
             in the same order",
            net.vm_names.len(),
            scripts.len()
        )));
    }
    // The VLANs run from the start, machines or not, as NixOS's driver starts them (a script's
    // `vlans` lists them).
    for &n in &net.vlans {
        driver.add_vlan(n).map_err(setup_error)?;
    }
    for (i, s) in scripts.into_iter().enumerate() {
        // Caught here, a missing script is a setup error (exit 2), not a failure of the test.
        if !s.is_file() {
            return Err(usage(&format!(
                "start script {} does not exist",
                s.display()
            )));
        }
        let vm = match net.vm_names.get(i) {
            Some(name) => driver.add_named_machine(name, StartCommand::Script(s)),
            None => driver.add_machine(StartCommand::Script(s)),
        }
        .map_err(setup_error)?;
        vm.attach_vlans(&net.vlans).map_err(setup_error)?;
    }
    for m in &net.machines {
        let vm = builtin_machine(m)?.add_to(&driver).map_err(setup_error)?;
        vm.attach_vlans(&net.vlans).map_err(setup_error)?;
    }
    Ok(driver)
}

/// A `--machine` checked against the file system (relative paths from the current directory); a
/// missing file is a usage error naming the option and the path.
pub fn builtin_machine(m: &MachineArg) -> Result<Builtin, Failure> {
    let cwd = std::env::current_dir()
        .context("cannot read the current directory")
        .map_err(Failure::Setup)?;
    m.spec
        .clone()
        .finish(&cwd)
        .map_err(|e| usage(&format!("--machine {}: {e}", m.text)))
}

/// A usage error: `msg`, pointing at `--help`.
pub fn usage(msg: &str) -> Failure {
    Failure::Setup(anyhow::anyhow!("{msg} (see --help)"))
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
