//! Prints the round-trip time of `execute("true")` on the tiny guest (median and p95 of 200), a
//! rough figure until the side-by-side benchmarks of the performance issue exist.
//! Run: cargo run --release -p tests --example roundtrip

use std::time::Instant;

fn main() {
    let (_driver, vm) = tests::driver_with("tiny");
    vm.connect().unwrap();
    let mut times: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            vm.execute("true").unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "execute(\"true\"): median {:.2} ms, p95 {:.2} ms",
        times[100], times[190]
    );
    vm.shutdown().unwrap();
}
