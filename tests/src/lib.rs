//! Helpers for integration tests against real QEMU guests: building (or finding cached) guests and
//! setting up logging.

pub mod raw;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (the workspace this crate lives in).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The start script of a bundled guest (`tiny`, `systemd` or `x11`), built by `guests/build.sh` on first
/// use and cached outside the repository afterwards.
pub fn guest_start_script(guest: &str) -> PathBuf {
    guest_dir(guest).join(format!("run-{guest}-vm"))
}

/// The directory holding a bundled guest's start scripts (`guests/build.sh GUEST` builds it on first use);
/// the `x11` guest's are `run-x11-vm` and `run-tty-vm`, the `nixos` guest's `run-client-vm`,
/// `run-server-vm` and `run-webserver-vm`.
pub fn guest_dir(guest: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("guests/build.sh"))
        .arg(guest)
        .output()
        .expect("cannot run guests/build.sh");
    assert!(
        out.status.success(),
        "guests/build.sh {guest} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).expect("guests/build.sh printed a non-UTF-8 path");
    PathBuf::from(dir.trim())
}

/// Shell text naming `m`'s interface on `vlan` (the one holding its VLAN address), for `ping -I`:
/// a ping by the default route would reach QEMU's user network, which answers any address itself.
pub fn vlan_interface(m: &driver::Machine, vlan: u32) -> String {
    format!(
        "$(ip -o addr show to {} | cut -d' ' -f2)",
        m.vlan_address(vlan)
    )
}

/// Logs to the test's captured output (shown when it fails), once per process.
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .is_test(true)
        .try_init();
}

/// A driver with one machine started from a bundled guest's start script (named after the guest),
/// logging set up.
pub fn driver_with(guest: &str) -> (driver::Driver, driver::Machine) {
    driver_with_options(guest, driver::Options::default())
}

/// [`driver_with`] set up as `options` say, except that timeouts are taken as written: these tests
/// size them for TCG already, and check that they expire when they should.
pub fn driver_with_options(
    guest: &str,
    options: driver::Options,
) -> (driver::Driver, driver::Machine) {
    init_logging();
    let options = driver::Options {
        timeout_factor: Some(options.timeout_factor.unwrap_or(1.0)),
        ..options
    };
    let driver = driver::Driver::with_options(&options).expect("cannot set up the driver");
    let vm = driver
        .add_machine(driver::StartCommand::Script(guest_start_script(guest)))
        .expect("cannot add the guest's machine");
    (driver, vm)
}
