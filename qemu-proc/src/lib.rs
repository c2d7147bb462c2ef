//! Starting and stopping QEMU: command lines, environments, state directories, process groups.
//!
//! Two halves:
//! - **planning** is pure: [`launch_plan`] turns a [`StartCommand`] (a NixOS-style `run-<name>-vm` start
//!   script, or a [`BuiltinVm`]) plus the machine's socket paths ([`MachinePaths`]) into a [`LaunchPlan`] —
//!   program, arguments, environment, working directory — that tests compare whole;
//! - **running**: [`StateRoot`] makes the private per-run directory, [`probe_accel`] picks KVM or TCG, and
//!   [`Child`] spawns a plan in its own process group with `PR_SET_PDEATHSIG(SIGKILL)`, and stops, kills
//!   and reaps the whole group (also on `Drop`).
//!
//! Every plan makes QEMU connect to two sockets the driver listens on (`monitor` for HMP, `shell` for the
//! backdoor on a virtconsole), listen on a third (`qmp`), and use its stdio as the serial console.
//!
//! ```
//! use std::path::PathBuf;
//! use qemu_proc::{launch_plan, machine_name_from_script, Accel, LaunchOptions, MachinePaths, StartCommand};
//!
//! let script = PathBuf::from("/nix/store/xyz-nixos-vm/bin/run-server-vm");
//! let name = machine_name_from_script(&script)?;
//! let paths = MachinePaths::new("/tmp/vmtd-1/vm-state-server".into(), "/tmp/vmtd-1/shared-xchg".into());
//! let plan = launch_plan(&name, &StartCommand::Script(script), &paths, &LaunchOptions::new(Accel::Tcg));
//!
//! assert_eq!(name, "server");
//! assert_eq!(plan.args[..4], ["-machine", "accel=tcg", "-display", "none"]);
//! assert!(plan.env.contains(&("USE_TMPDIR".into(), "1".into())));
//! assert_eq!(plan.cwd, paths.state_dir);
//! # Ok::<(), qemu_proc::Error>(())
//! ```
//!
//! Linux only. `unsafe` is used for `pre_exec`, `prctl`, `waitid`/`waitpid`, `kill` and one `ioctl`, each
//! with its reason beside it.

#![warn(missing_docs)]

mod accel;
mod child;
mod error;
mod plan;
mod state;
mod watchdog;

pub use accel::{probe_accel, Accel, AccelChoice, ACCEL_ENV};
pub use child::{become_subreaper, die_with_parent, live_members, Child, DROP_GRACE};
pub use error::Error;
pub use plan::{
    launch_plan, machine_name_from_script, BuiltinVm, LaunchOptions, LaunchPlan, MachinePaths,
    ProgramKind, StartCommand, BACKDOOR_PORT_NAME, DEFAULT_HDA_INTERFACE, DEFAULT_MEMORY_MB,
    DEFAULT_QEMU_BINARY, MAX_SOCKET_PATH,
};
pub use state::StateRoot;
