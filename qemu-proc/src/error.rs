//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::plan::ProgramKind;

/// Everything that can go wrong while planning, starting or stopping a machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A start script's file name is not `run-<name>-vm`.
    #[error("start script file name {} does not match run-<name>-vm", path.display())]
    ScriptName {
        /// The path as given.
        path: PathBuf,
    },
    /// `VMTD_ACCEL` holds something other than `kvm` or `tcg`.
    #[error("VMTD_ACCEL is {value:?}; expected \"kvm\" or \"tcg\"")]
    AccelOverride {
        /// The variable's value (lossily decoded).
        value: String,
    },
    /// A string that names no accelerator was parsed as an [`Accel`](crate::Accel).
    #[error("unknown accelerator {value:?}; expected \"kvm\" or \"tcg\"")]
    UnknownAccel {
        /// The string that was parsed.
        value: String,
    },
    /// A machine name that cannot be used in a directory name.
    #[error("machine name {name:?} is empty or contains '/' or NUL")]
    MachineName {
        /// The rejected name.
        name: String,
    },
    /// A state directory given by the user is not a private directory of ours.
    #[error("state directory {} {why}; use a directory only you can enter", path.display())]
    NotPrivate {
        /// The directory.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A state directory could not be created or set up.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A socket path does not fit into `sockaddr_un`.
    #[error("socket path {} is {len} bytes long; unix sockets allow at most 107", path.display())]
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The program to start does not exist.
    #[error("{kind} {} does not exist", path.display())]
    ProgramMissing {
        /// Start script or QEMU binary.
        kind: ProgramKind,
        /// The program as it was looked up.
        path: PathBuf,
    },
    /// A bare program name was not found in `$PATH`.
    #[error("{kind} {} is not in PATH", path.display())]
    ProgramNotInPath {
        /// Start script or QEMU binary.
        kind: ProgramKind,
        /// The bare name.
        path: PathBuf,
    },
    /// The program exists but is not an executable file.
    #[error("{kind} {} is not executable", path.display())]
    NotExecutable {
        /// Start script or QEMU binary.
        kind: ProgramKind,
        /// The program.
        path: PathBuf,
    },
    /// The working directory of the plan does not exist.
    #[error("working directory {} does not exist", path.display())]
    CwdMissing {
        /// The directory.
        path: PathBuf,
    },
    /// The program exists but `execve` says it does not: its `#!` interpreter or ELF loader is missing.
    #[error("cannot start {kind} {}: its interpreter (#! line or ELF loader) does not exist", path.display())]
    InterpreterMissing {
        /// Start script or QEMU binary.
        kind: ProgramKind,
        /// The program.
        path: PathBuf,
    },
    /// Forking or executing the program failed.
    #[error("cannot start {kind} {}", path.display())]
    Spawn {
        /// Start script or QEMU binary.
        kind: ProgramKind,
        /// The program.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `waitid`/`waitpid` on the child failed (e.g. someone else reaped it).
    #[error("cannot wait for process {pid}")]
    Wait {
        /// The child's pid.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Signalling the child's process group failed.
    #[error("cannot send {signal} to process group {pgid}")]
    Signal {
        /// The process group.
        pgid: i32,
        /// The signal's name.
        signal: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Processes of the group were still alive a while after SIGKILL (e.g. stuck in the kernel).
    #[error("process group {pgid} still has live processes {pids:?} {waited:?} after SIGKILL")]
    Survivors {
        /// The process group.
        pgid: i32,
        /// The live members found.
        pids: Vec<i32>,
        /// How long we waited after SIGKILL.
        waited: Duration,
    },
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("cannot make this process a child subreaper")]
    Subreaper {
        /// Why.
        #[source]
        source: io::Error,
    },
}
