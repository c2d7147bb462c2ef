//! Where the throughput goes: 25 MB of output through `execute_streaming`, against the same
//! command written to a plain shell of the same guest in the foreground (the benchmark's
//! reference) and in the background (the driver's framing, which keeps the shell reading so
//! that a command can be interrupted), interleaved, four rounds.
//! Run: cargo run --release -p tests --example throughput_split

use driver::{Driver, Options};
use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let driver = Driver::with_options(&Options::default()).unwrap();
    let (vm, mut raw) =
        tests::raw::machine_with_reference_shell(&driver, &tests::guest_start_script("tiny"));
    let cmd = "head -c 25000000 /dev/zero | tr '\\000' a";
    for _ in 0..4 {
        let t = Instant::now();
        vm.execute_streaming(cmd, Duration::from_secs(600), |_| {})
            .unwrap();
        let ours = t.elapsed().as_secs_f64();
        let mut raw_run = |text: String| {
            let t = Instant::now();
            raw.sock.write_all(text.as_bytes()).unwrap();
            raw.read_until(b"\ntag 0\n", |_| {});
            t.elapsed().as_secs_f64()
        };
        let fg = raw_run(format!("( {cmd} ) </dev/null; echo; echo tag $?\n"));
        let bg = raw_run(format!("( {cmd}; echo; echo tag $? ) </dev/null &\n"));
        println!("driver {ours:.2} s   raw, foreground {fg:.2} s   raw, background {bg:.2} s");
    }
}
