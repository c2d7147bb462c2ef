//! The Python front end against Rhai, in one run: `succeed("true")` timed inside each script, and
//! the driver's peak resident memory, on the tiny guest, the binaries run in turn (Rhai, Python,
//! Rhai, Python) so drift of the host or the guest hits both alike.
//! Run: cargo bench -p driver-cli --bench python

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Calls timed per run, after as many untimed ones.
const CALLS: usize = 200;
/// Runs of each language.
const RUNS: usize = 2;

const RHAI: &str = r#"
start_all();
for i in 0..CALLS { tiny.succeed("true"); }
let took = [];
for i in 0..CALLS {
    let t = timestamp();
    tiny.succeed("true");
    took.push(t.elapsed);
}
print(`vmtd-bench ${took}`);
"#;

const PYTHON: &str = r#"
import time
start_all()
for _ in range(CALLS):
    tiny.succeed("true")
took = []
for _ in range(CALLS):
    t = time.perf_counter()
    tiny.succeed("true")
    took.append(time.perf_counter() - t)
print("vmtd-bench", took)
"#;

/// What one run measured: each call's seconds, and the driver's peak RSS in KiB.
struct Run {
    took: Vec<f64>,
    peak_kib: u64,
}

/// Runs `script` through the binary on the tiny guest; samples the driver's VmHWM as it goes.
fn run(script: &Path, tiny: &Path) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vm-test-driver"))
        .arg("--start-scripts")
        .arg(tiny)
        .arg("--")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start vm-test-driver");
    let status_file = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak_kib = 0;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "{} ran over 300 s",
            script.display()
        );
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            peak_kib = peak_kib.max(hwm_kib(&status));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{} failed",
        script.display()
    );
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("vmtd-bench "))
        .unwrap_or_else(|| panic!("no timings from {}: {out}", script.display()));
    let took = line
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|x| x.trim().parse::<f64>().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(took.len(), CALLS);
    Run { took, peak_kib }
}

/// `VmHWM` of a /proc/PID/status text, in KiB.
fn hwm_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vmtd-bench-python-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let calls = CALLS.to_string();
    let rhai = dir.join("bench.rhai");
    let python = dir.join("bench.py");
    std::fs::write(&rhai, RHAI.replace("CALLS", &calls)).unwrap();
    std::fs::write(&python, PYTHON.replace("CALLS", &calls)).unwrap();
    let tiny = tests::guest_start_script("tiny");

    let (mut rhai_runs, mut python_runs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        rhai_runs.push(run(&rhai, &tiny));
        python_runs.push(run(&python, &tiny));
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let all = |runs: &[Run]| runs.iter().flat_map(|r| r.took.clone()).collect::<Vec<_>>();
    let peak = |runs: &[Run]| runs.iter().map(|r| r.peak_kib).max().unwrap();
    let (r, p) = (median(all(&rhai_runs)), median(all(&python_runs)));
    let (rk, pk) = (peak(&rhai_runs), peak(&python_runs));
    eprintln!(
        "per run: Rhai {:?} ms, {:?} KiB; Python {:?} ms, {:?} KiB",
        rhai_runs
            .iter()
            .map(|x| median(x.took.clone()) * 1e3)
            .collect::<Vec<_>>(),
        rhai_runs.iter().map(|x| x.peak_kib).collect::<Vec<_>>(),
        python_runs
            .iter()
            .map(|x| median(x.took.clone()) * 1e3)
            .collect::<Vec<_>>(),
        python_runs.iter().map(|x| x.peak_kib).collect::<Vec<_>>(),
    );
    let ratio = p / r;
    let extra_mib = (pk as f64 - rk as f64) / 1024.0;
    println!("| goal | measured | reference (same run) | ratio | target | result |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| succeed(\"true\") from Python | {:.2} ms (median of {}) | from Rhai: {:.2} ms | {ratio:.2} × | ≤ 1.1 × | {} |",
        p * 1e3,
        CALLS * RUNS,
        r * 1e3,
        if ratio <= 1.1 { "pass" } else { "FAIL" }
    );
    println!(
        "| driver's peak RSS with a Python script | {:.1} MB | with Rhai: {:.1} MB | {extra_mib:+.1} MB | ≤ +15 MB | {} |",
        pk as f64 / 1024.0,
        rk as f64 / 1024.0,
        if extra_mib <= 15.0 { "pass" } else { "FAIL" }
    );
}
