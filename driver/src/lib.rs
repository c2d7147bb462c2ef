//! The high-level API of the VM test driver: a [`Driver`] owns the machines of one test run and one
//! single-threaded event loop that serves every channel of every machine (serial console, monitor,
//! QMP, backdoor shell, child exits); a [`Machine`] is a cheap handle with the NixOS driver's method
//! names.
//!
//! ```no_run
//! use driver::{Driver, StartCommand};
//!
//! let driver = Driver::new()?;
//! let vm = driver.add_machine(StartCommand::Script("guests/out/run-tiny-vm".into()))?;
//! assert_eq!(vm.name(), "tiny");
//! let kernel = vm.succeed("uname -r")?;
//! println!("{kernel}");
//! vm.shutdown()?;
//! # Ok::<(), driver::Error>(())
//! ```
//!
//! # Layers
//!
//! Each file imports only from layers below it (`driver/tests/layers.rs` checks this), so a feature
//! is a room of its own: a new wait is one new file under `waits/`, with no edit to the loop.
//!
//! ```text
//!  driver.rs            Driver's own methods; wires the features' hooks into the machines
//!  together.rs          several machines at once (execute_on_all, wait_for_unit_on_all)
//!  power.rs             reboot, shutdown, wait_for_shutdown, crash
//!  features             waits/{mod,port,console_text}.rs, systemd.rs, files.rs, qmp.rs, screen.rs,
//!                       keys.rs, ocr.rs, x11.rs, tty.rs, parity.rs, snapshot.rs, cache_save.rs,
//!                       network.rs, nics.rs, coverage.rs, polling.rs, context.rs
//!  commands.rs, monitor.rs   guest commands over the backdoor; HMP commands
//!  boot.rs              start a machine, wait for its backdoor shell
//!  machine.rs           the Machine and Driver handles, timeouts, steps, errors, hooks
//!  core.rs              shared state: loop + machines' set-up + VLAN processes + settings;
//!                       start (launch plan) and stop
//!  vlan.rs, cache.rs    VDE processes; snapshot-cache entries
//!  event_loop/          THE LOOP: mio, every machine's fds and codecs, child exits, signals;
//!                       knows channels, not features (an Observer hears console lines, exits)
//!  leaves               error.rs, settings.rs, text.rs, ext.rs, console.rs, record.rs, activity.rs
//!  ───────────          qemu-proc, qemu-monitor, guest-shell (other crates)
//! ```

#![warn(missing_docs)]

// The leaves: no import from any other module of this crate but each other.
mod activity;
mod console;
mod error;
mod ext;
mod record;
mod settings;
mod text;

// The loop's room.
mod event_loop;

// What the core starts machines with.
mod cache;
mod vlan;

// Shared state, handles, the basic channels' use.
mod boot;
mod commands;
mod core;
mod machine;
mod monitor;

// Features.
mod cache_save;
mod context;
mod coverage;
mod files;
mod keys;
mod network;
mod nics;
mod ocr;
mod parity;
mod polling;
mod qmp;
mod screen;
mod snapshot;
mod systemd;
mod tty;
mod waits;
mod x11;

// Above the features.
mod driver;
mod power;
mod together;

pub use activity::{Activity, Step, STEP_END};
pub use commands::CommandList;
pub use coverage::COVERAGE_DIR;
pub use error::{Error, FailureContext, UnitContext};
pub use event_loop::{QmpEvent, EVENTS_KEPT as QMP_EVENTS_KEPT};
pub use keys::DEFAULT_KEY_DELAY;
pub use machine::{Driver, Machine};
pub use network::LinkQuality;
pub use polling::{CheckResult, PollingGuard};
pub use qemu_proc::{Accel, AccelChoice, BuiltinVm, MachinePaths, StartCommand};
pub use record::{ConsoleLine, MachineEvent, MachineRecord, RunRecord, StepRecord};
pub use screen::Screen;
/// The JSON crate of QMP values ([`Machine::qmp_command`]), for `serde_json::json!` and `Value`.
pub use serde_json;
pub use settings::{Options, DEFAULT_TIMEOUT, MAX_OUTPUT, TCG_TIMEOUT_FACTOR};
pub use vlan::VlanInfo;
