//! Python testScripts on the machines nixpkgs' own driver tests use (its `machines.nix`): `basic`
//! (a systemd machine), `tty` (root logged in on tty1), `client` and `server` (curl; python3 on port
//! 8080) on VLAN 1, and `x11` (X with an xterm, read by OCR), each from a bundled guest, through the
//! binary.
//!
//! Our own scripts (`tests/py/`) always run. nixpkgs' scripts (`nixos/tests/nixos-test-driver/`:
//! `common.py` and the ten tests of its default.nix) are not ours to ship: they run only when
//! `VMTD_NIXPKGS_SUITE` names a folder holding them, or the machine keeps them beside its cached
//! guests (`~/.cache/vm-test-driver/nixpkgs-suite`), each as nixpkgs runs it (`cat common.py SCRIPT
//! > testScript.py`, OCR enabled for ocr.py as its `enableOCR` does).

mod common;

use common::{assert_nothing_left, scratch, BIN};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tests::guest_dir;

/// Names the folder holding nixpkgs' driver test scripts.
const SUITE_VAR: &str = "VMTD_NIXPKGS_SUITE";

/// Where a machine keeps nixpkgs' scripts when `SUITE_VAR` is not set: beside the cached guests,
/// `${XDG_CACHE_HOME:-~/.cache}/vm-test-driver/nixpkgs-suite` (never in the repository).
fn cached_suite() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("vm-test-driver/nixpkgs-suite")
}

/// The folder of nixpkgs' scripts: `SUITE_VAR`'s, else the cached one when it holds them.
fn suite_dir() -> Option<PathBuf> {
    match std::env::var_os(SUITE_VAR) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(cached_suite()).filter(|d| d.join("common.py").is_file()),
    }
}

/// A run stops itself after this long (seconds), whatever hangs: a tty or X guest boots in under a
/// minute under TCG, and each script's waits are bounded by their own timeouts.
const GLOBAL_TIMEOUT: &str = "1200";

/// The machines a script needs: start scripts (in NixOS's machine order) and VLANs.
struct Machines {
    start_scripts: Vec<PathBuf>,
    vlans: &'static [&'static str],
    /// NixOS's `enableOCR`.
    ocr: bool,
}

/// nixpkgs' `basic` machine (its minimal profile): the systemd guest.
fn basic() -> Machines {
    Machines {
        start_scripts: vec![tests::guest_start_script("systemd")],
        vlans: &[],
        ocr: false,
    }
}

/// No machine at all (nixpkgs' driver test: `nodes = { }`).
fn none() -> Machines {
    Machines {
        start_scripts: Vec::new(),
        vlans: &[],
        ocr: false,
    }
}

/// nixpkgs' `tty` machine: the x11 guest's image without X, root logged in on tty1.
fn tty() -> Machines {
    Machines {
        start_scripts: vec![guest_dir("x11").join("run-tty-vm")],
        vlans: &[],
        ocr: false,
    }
}

/// nixpkgs' `client` (1) and `server` (2) machines on VLAN 1, as NixOS builds them.
fn client_server() -> Machines {
    let dir = guest_dir("nixos");
    Machines {
        start_scripts: vec![dir.join("run-client-vm"), dir.join("run-server-vm")],
        vlans: &["1"],
        ocr: false,
    }
}

/// nixpkgs' `x11` machine: X on :0 with an xterm, OCR enabled.
fn x11() -> Machines {
    Machines {
        start_scripts: vec![guest_dir("x11").join("run-x11-vm")],
        vlans: &[],
        ocr: true,
    }
}

/// Runs `script` on `machines` through the binary with its output in `dir/out`; asserts it passes
/// and that nothing of the run is left.
fn passes(dir: &Path, script: &Path, machines: &Machines) {
    if let Err(failure) = run(dir, script, machines) {
        panic!("{failure}");
    }
}

/// Runs `script` on `machines` through the binary with its output in `dir/out`: `Err` with the
/// driver's log when it did not exit 0; then checks that nothing of the run is left.
fn run(dir: &Path, script: &Path, machines: &Machines) -> Result<(), String> {
    let out = dir.join("out");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(["--global-timeout", GLOBAL_TIMEOUT, "-o"])
        .arg(&out);
    if !machines.start_scripts.is_empty() {
        cmd.arg("--start-scripts").args(&machines.start_scripts);
    }
    if machines.ocr {
        cmd.arg("--enable-ocr");
    }
    if !machines.vlans.is_empty() {
        cmd.arg("--vlans").args(machines.vlans);
    }
    let t0 = Instant::now();
    let o = cmd.arg("--").arg(script).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!(
        "{}: exit {:?} after {:.1} s",
        script.display(),
        o.status.code(),
        t0.elapsed().as_secs_f64()
    );
    assert_nothing_left(out.to_str().unwrap());
    match o.status.code() {
        Some(0) => Ok(()),
        code => Err(format!("{}: exit {code:?}:\n{err}", script.display())),
    }
}

/// One of our scripts under `tests/py/`.
fn ours(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

#[test]
fn tty_autologin_and_typing() {
    let dir = scratch("py-tty");
    passes(&dir, &ours("tty.py"), &tty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn client_and_server_on_a_vlan() {
    let dir = scratch("py-client-server");
    passes(&dir, &ours("client_server.py"), &client_server());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn x11_windows_screenshots_and_ocr() {
    let dir = scratch("py-x11");
    passes(&dir, &ours("x11.py"), &x11());
    assert!(dir.join("out/desktop.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nixpkgs_driver_tests_pass_verbatim() {
    // nixpkgs' tests write /tmp/exampleDir on the host; they run one after another.
    let Some(suite) = suite_dir() else {
        eprintln!(
            "\n!!! NOT RUN: nixpkgs' own driver tests need {SUITE_VAR} naming a folder with nixpkgs' \
             nixos/tests/nixos-test-driver/{{common,low_level,files,systemd,power,polling_condition,\
             driver,tty,networking,x11,ocr}}.py (or that folder at {})\n",
            cached_suite().display()
        );
        return;
    };
    eprintln!("nixpkgs' driver tests from {}", suite.display());
    let common = std::fs::read(suite.join("common.py")).unwrap_or_else(|e| {
        panic!(
            "{SUITE_VAR}: cannot read common.py in {}: {e}",
            suite.display()
        )
    });
    let runs = [
        ("driver", none as fn() -> Machines),
        ("low_level", basic),
        ("systemd", basic),
        ("polling_condition", basic),
        ("power", basic),
        ("files", basic),
        ("tty", tty),
        ("networking", client_server),
        ("x11", x11),
        ("ocr", x11),
    ];
    // Every script runs, so that one failure does not hide how the others fare.
    let mut failures = Vec::new();
    for (name, machines) in runs {
        let dir = scratch(&format!("nixpkgs-{name}"));
        let script = suite.join(format!("{name}.py"));
        let mut text = common.clone();
        text.extend(
            std::fs::read(&script)
                .unwrap_or_else(|e| panic!("{SUITE_VAR}: cannot read {}: {e}", script.display())),
        );
        // As nixpkgs' default.nix builds it: the two files one after the other.
        let test_script = dir.join("testScript.py");
        std::fs::write(&test_script, text).unwrap();
        match run(&dir, &test_script, &machines()) {
            Ok(()) => std::fs::remove_dir_all(&dir).unwrap(),
            Err(failure) => failures.push(format!("nixpkgs' {name}.py failed: {failure}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
