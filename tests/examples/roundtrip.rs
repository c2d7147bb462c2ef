//! Prints the round-trip time of `execute("true")` on the tiny guest (median and p95 of 200), a
//! rough figure until the side-by-side benchmarks of the performance issue exist.
//! Run: cargo run --release -p tests --example roundtrip

use std::time::Instant;

fn main() {
    let (_driver, vm) = tests::driver_with("tiny");
    vm.connect().unwrap();
    let mut times: Vec<f64> = Vec::new();
    let mut succeeds: Vec<f64> = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        vm.execute("true").unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        vm.succeed("true").unwrap();
        succeeds.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for (name, mut t) in [("execute", times), ("succeed", succeeds)] {
        t.sort_by(f64::total_cmp);
        println!(
            "{name}(\"true\"): median {:.2} ms, p95 {:.2} ms",
            t[100], t[190]
        );
    }
    vm.shutdown().unwrap();
}
