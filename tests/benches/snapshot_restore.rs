//! Benchmark row of the snapshot cache: on the systemd guest, start-to-ready (the first command
//! answered) when booting, against the same when resuming from `--snapshot-cache`, measured side
//! by side in one run. Goal: resuming takes under 10 % of booting.
//!
//! `cargo bench -p tests --bench snapshot_restore`

use driver::{Driver, Options, StartCommand};
use std::time::{Duration, Instant};

/// Starts the systemd guest with `options` and returns how long until `true` ran in it.
fn start_to_ready(options: &Options) -> Duration {
    let driver = Driver::with_options(options).expect("driver");
    let vm = driver
        .add_machine(StartCommand::Script(tests::guest_start_script("systemd")))
        .expect("machine");
    let t0 = Instant::now();
    vm.start().expect("start");
    vm.succeed("true").expect("first command");
    let took = t0.elapsed();
    vm.crash().expect("stop");
    took
}

fn main() {
    tests::init_logging();
    let cache = std::env::temp_dir().join(format!("vmtd-bench-cache-{}", std::process::id()));
    let cached = Options {
        snapshot_cache: Some(cache.clone()),
        ..Options::default()
    };
    let boot = start_to_ready(&Options::default());
    // The first run with the cache boots, settles and saves; it is not what is measured.
    start_to_ready(&cached);
    let resume = start_to_ready(&cached);
    std::fs::remove_dir_all(&cache).expect("removing the cache");
    let ratio = resume.as_secs_f64() / boot.as_secs_f64();
    println!("| measure | value | reference (same run) | ratio | goal | result |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| systemd guest, start to first command: resumed from --snapshot-cache | {:.2} s | booted: {:.2} s | {:.1} % | < 10 % | {} |",
        resume.as_secs_f64(),
        boot.as_secs_f64(),
        ratio * 100.0,
        if ratio < 0.10 { "pass" } else { "FAIL" }
    );
}
