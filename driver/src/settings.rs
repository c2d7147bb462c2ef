//! The run's settings: how a [`Driver`](crate::Driver) is set up, and the defaults it falls back on.

use std::path::PathBuf;
use std::time::Duration;

/// How long a wait lasts when the caller gives no timeout (as the NixOS driver).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

/// What every timeout is multiplied by under TCG when the user gives no factor: guests boot and run
/// about this much slower than under KVM here (systemd guest to backdoor: ≈18 s against ≈3 s).
pub const TCG_TIMEOUT_FACTOR: f64 = 5.0;

/// Most output one command may return by default: beyond it the command is stopped, so memory
/// stays bounded whatever the guest prints.
pub const MAX_OUTPUT: usize = 64 << 20;

/// How a [`Driver`] is set up; `Options::default()` is what [`Driver::new`] does.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep state in this directory (created 0700, never removed) instead of a fresh one.
    pub state_dir: Option<PathBuf>,
    /// Fail at once, naming the reason, unless KVM is usable.
    pub require_kvm: bool,
    /// Multiply every timeout a test gives (and the defaults) by this; `None`: 1 under KVM,
    /// [`TCG_TIMEOUT_FACTOR`] under TCG, so tests written for KVM pass under TCG unchanged.
    pub timeout_factor: Option<f64>,
    /// Where files for people go (screenshots taken when a call fails); `None`: no such files.
    pub output_dir: Option<PathBuf>,
    /// Keep each machine "booted and ready" here after its first boot, and start later runs of the
    /// same machine (same start command, inputs and network) from that snapshot instead of booting.
    pub snapshot_cache: Option<PathBuf>,
    /// Most output one command may return (bytes); a command printing more is stopped and fails.
    /// `None`: [`MAX_OUTPUT`] (64 MiB).
    pub max_output: Option<usize>,
}
