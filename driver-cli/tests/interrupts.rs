//! The binary stopped from outside on the tiny guest: the global timeout, SIGINT and SIGTERM, the
//! REPL driven through a pseudo-terminal, and `run-vms` stopped with SIGINT. After each, no process
//! of the run is left.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn global_timeout_ends_the_run_naming_the_step_in_progress() {
    let dir = scratch("timeout");
    let junit = dir.join("junit.xml");
    let script = waiting_script(&dir);
    let o = Command::new(BIN)
        .args(["--keep-vm-state", "--global-timeout", "15", "--junit"])
        .arg(&junit)
        .arg("--report")
        .arg(dir.join("report"))
        .args(["--start-scripts", &tiny(), "--", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the global timeout of 15 s ran out while: subtest: waits forever")
            && err.contains("tiny: waiting for file /never"),
        "{err}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("global timeout"),
        "{xml}"
    );
    // The report tells what was known when the run was cut short.
    let report = std::fs::read_to_string(dir.join("report/report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["passed"], false);
    let interrupted = report["interrupted"].as_str().unwrap_or_default();
    assert!(
        interrupted.contains("the global timeout of 15 s ran out"),
        "{report}"
    );
    assert!(std::fs::read_to_string(dir.join("report/index.html"))
        .unwrap()
        .contains("stopped early: the global timeout of 15 s ran out"));
    let state = state_dir(&err);
    assert_nothing_left(&state);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts the waiting script, sends `signal` once the wait began, and checks the exit status.
fn stopped_by(signal: Signal, name: &str) {
    let dir = scratch(name);
    let script = waiting_script(&dir);
    let report = dir.join("report");
    let mut child = Command::new(BIN)
        .args([
            "--keep-vm-state",
            "--vlans",
            "1",
            "--report",
            report.to_str().unwrap(),
        ])
        .args(["--start-scripts", &tiny(), "--", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Seen::collect(child.stderr.take().unwrap());
    let mut child = Running(child);
    let child = &mut child.0;
    err.wait_for("tiny: waiting for file /never", 0);
    let running = names_of(&processes_mentioning(&state_dir(&err.text())));
    assert!(
        running.iter().any(|n| n == "vde_switch"),
        "the VLAN's switch is not running: {running:?}"
    );
    let t0 = Instant::now();
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let code = wait_exit(child, Duration::from_secs(20));
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    let log = err.text();
    assert_eq!(code, 128 + signal as i32, "{log}");
    assert!(
        log.contains(&format!(
            "interrupted by {} while: subtest: waits forever",
            signal.as_str()
        )),
        "{log}"
    );
    eprintln!("{signal} to exit: {:.2} s", took.as_secs_f64());
    let report = std::fs::read_to_string(report.join("report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["interrupted"],
        format!("interrupted by {}", signal.as_str()),
        "{report}"
    );
    let state = state_dir(&log);
    assert_nothing_left(&state);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigint_stops_the_run_cleanly() {
    stopped_by(Signal::SIGINT, "sigint");
}

#[test]
fn sigterm_stops_the_run_cleanly() {
    stopped_by(Signal::SIGTERM, "sigterm");
}

/// The binary on a new pseudo-terminal as its controlling terminal, as a user would run it.
fn spawn_on_pty(args: &[&str], home: &std::path::Path) -> (Running, std::fs::File, Seen) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("HOME", home)
        .env("TERM", "xterm")
        .env_remove("XDG_STATE_HOME")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = Running(cmd.spawn().unwrap());
    let master = std::fs::File::from(pty.master);
    let seen = Seen::collect(master.try_clone().unwrap());
    (child, master, seen)
}

#[test]
fn repl_runs_commands_reads_on_after_open_blocks_and_survives_ctrl_c() {
    let dir = scratch("repl");
    let (mut child, mut term, seen) = spawn_on_pty(
        &[
            "--keep-vm-state",
            "--interactive",
            "--start-scripts",
            &tiny(),
        ],
        &dir,
    );
    let mut at = seen.wait_for("vmtd> ", 0);
    // Machines are not started until asked.
    assert!(!seen.text().contains("tiny: starting"), "{}", seen.text());

    term.write_all(b"tiny.succeed(\"echo repl-$((6*7))\")\r")
        .unwrap();
    at = seen.wait_for("repl-42", at);
    at = seen.wait_for("vmtd> ", at);

    // An open bracket reads on; variables live from one input to the next.
    term.write_all(b"let n = [1,\r").unwrap();
    at = seen.wait_for("... ", at);
    term.write_all(b"2, 3];\r").unwrap();
    at = seen.wait_for("vmtd> ", at);
    term.write_all(b"n.len() * 7\r").unwrap();
    at = seen.wait_for("21", at);
    at = seen.wait_for("vmtd> ", at);

    // Ctrl-C interrupts the step in progress and returns to the prompt, the machine still usable.
    term.write_all(b"tiny.wait_for_file(\"/never\")\r").unwrap();
    at = seen.wait_for("waiting for file /never", at);
    // On a terminal, a wait that lasts shows in a live status line, and log lines are coloured.
    at = seen.wait_for("\u{2026} tiny: waiting for file /never (1 s)", at);
    assert!(seen.text().contains("\x1b[2m[ "), "{}", seen.text());
    term.write_all(b"\x03").unwrap();
    at = seen.wait_for("interrupted by SIGINT", at);
    at = seen.wait_for("vmtd> ", at);
    term.write_all(b"tiny.succeed(\"echo still-$((1+1))\")\r")
        .unwrap();
    at = seen.wait_for("still-2", at);
    at = seen.wait_for("vmtd> ", at);

    // shell_interact(): lines run in the guest's root shell until Ctrl-D.
    term.write_all(b"tiny.shell_interact()\r").unwrap();
    at = seen.wait_for("Ctrl-D (end of input) leaves", at);
    at = seen.wait_for("tiny# ", at);
    term.write_all(b"echo inside-$((2+3))\r").unwrap();
    at = seen.wait_for("inside-5", at);
    at = seen.wait_for("tiny# ", at);
    term.write_all(b"exit 3\r").unwrap();
    at = seen.wait_for("(exit status 3)", at);
    at = seen.wait_for("tiny# ", at);
    term.write_all(b"\x04").unwrap();
    at = seen.wait_for("(left the root shell (backdoor) of tiny)", at);
    at = seen.wait_for("vmtd> ", at);
    // console_interact(): lines typed into the serial console, here read by `head`.
    term.write_all(b"tiny.succeed(\"(head -n 1 /dev/ttyS0 > /tmp/typed) >/dev/null 2>&1 &\")\r")
        .unwrap();
    at = seen.wait_for("vmtd> ", at);
    term.write_all(b"tiny.console_interact()\r").unwrap();
    at = seen.wait_for("tiny console> ", at);
    term.write_all(b"typed-into-the-console\r").unwrap();
    at = seen.wait_for("tiny console> ", at);
    term.write_all(b"\x04").unwrap();
    at = seen.wait_for("(left the serial console of tiny)", at);
    at = seen.wait_for("vmtd> ", at);
    term.write_all(b"tiny.wait_until_succeeds(\"grep -q typed-into /tmp/typed\"); \"got-\" + 42\r")
        .unwrap();
    at = seen.wait_for("got-42", at);
    seen.wait_for("vmtd> ", at);

    // Ctrl-D leaves, stopping the machine; the history was saved.
    term.write_all(b"\x04").unwrap();
    let code = wait_exit(&mut child.0, Duration::from_secs(20));
    let text = seen.text();
    assert_eq!(code, 0, "{text}");
    let state = state_dir(&text);
    assert_nothing_left(&state);
    let history = std::fs::read_to_string(dir.join(".local/state/vm-test-driver/history")).unwrap();
    assert!(history.contains("n.len() * 7"), "{history}");
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_vms_says_how_to_reach_the_machines_and_stops_them_on_sigint() {
    let dir = scratch("run-vms");
    let out = dir.join("out");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "run-vms",
            "--start-scripts",
            &tiny(),
            "--vlans",
            "1",
            "--output-dir",
        ])
        .arg(&out)
        .args(["--forward", &format!("{port}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Seen::collect(child.stdout.take().unwrap());
    let stderr = Seen::collect(child.stderr.take().unwrap());
    let mut child = Running(child);
    let child = &mut child.0;
    let at = stdout.wait_for("state directory: ", 0);
    let state = stdout.wait_for("\n", at);
    let state = stdout.text()[at..state].trim().to_string();
    let text = stdout.text();
    assert!(text.contains("press Ctrl-C to stop them"), "{text}");
    assert!(text.contains("vlan 1: 192.168.1.1"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port} -> guest port 8080")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "serial console: {}",
            out.join("tiny.console.log").display()
        )),
        "{text}"
    );
    assert!(
        !processes_mentioning(&state).is_empty(),
        "QEMU should run under {state}"
    );
    // The forwarded port accepts connections on the loopback address (slirp accepts, then closes).
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let code = wait_exit(child, Duration::from_secs(20));
    assert_eq!(code, 0, "{}", stderr.text());
    assert_nothing_left(&state);
    assert!(std::fs::read_to_string(out.join("log.txt"))
        .unwrap()
        .contains("all machines stopped"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A TCP port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
