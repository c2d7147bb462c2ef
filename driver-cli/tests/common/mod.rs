//! Helpers shared by the binary's process-level tests: scratch directories, running the binary,
//! collecting its output, and checking that no process of a run is left.
#![allow(dead_code)] // each test file uses its own subset

use std::io::Read;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vm-test-driver");
/// Long enough for the tiny guest to boot under TCG on a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn tiny() -> String {
    tests::guest_start_script("tiny")
        .to_str()
        .unwrap()
        .to_string()
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmtd-int-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// PIDs of processes whose command line mentions `needle` (the run's unique state directory).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Waits until no process mentions `needle`, failing after a few seconds with what is left.
pub fn assert_nothing_left(needle: &str) {
    let t0 = Instant::now();
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "left running: {left:?} ({needle})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything a child writes to one stream, collected by a thread, with waits for text.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<String>>);

impl Seen {
    pub fn collect(stream: impl Read + Send + 'static) -> Seen {
        let seen = Seen::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            // A pty's master reads EIO once the child and its descendants closed the terminal.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.0.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        seen
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits for `needle` to appear after byte `from`; returns where it ends.
    pub fn wait_for(&self, needle: &str, from: usize) -> usize {
        let t0 = Instant::now();
        loop {
            let text = self.text();
            if let Some(at) = text.get(from..).and_then(|t| t.find(needle)) {
                return from + at + needle.len();
            }
            assert!(
                t0.elapsed() < PATIENCE,
                "no {needle:?} after byte {from} in:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The driver under test, killed if the test fails before it exits (QEMU follows by PDEATHSIG).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if t0.elapsed() > within {
            let _ = child.kill();
            panic!("vm-test-driver did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The state directory a run with `--keep-vm-state` logged.
pub fn state_dir(log: &str) -> String {
    let line = log.lines().find_map(|l| {
        l.split_once("keeping state in ")
            .map(|(_, d)| d.trim().to_string())
    });
    line.unwrap_or_else(|| panic!("no state directory in:\n{log}"))
}

/// A script that boots the guest, then waits for a file that never appears.
pub fn waiting_script(dir: &std::path::Path) -> String {
    let script = dir.join("waits.rhai");
    std::fs::write(
        &script,
        "subtest(\"waits forever\", || {\n    tiny.wait_for_file(\"/never\");\n});\n",
    )
    .unwrap();
    script.to_str().unwrap().to_string()
}

/// The command names (`comm`) of `pids`.
pub fn names_of(pids: &[i32]) -> Vec<String> {
    pids.iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
        .map(|c| c.trim().to_string())
        .collect()
}

/// The JUnit file at `path`: its text (for failure messages), its first suite, and that suite's
/// test case names in order.
pub fn junit_cases(path: &std::path::Path) -> (String, quick_junit::TestSuite, Vec<String>) {
    let xml = std::fs::read_to_string(path).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suite = report
        .test_suites
        .into_iter()
        .next()
        .expect("no test suite");
    let names = suite
        .test_cases
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    (xml, suite, names)
}
