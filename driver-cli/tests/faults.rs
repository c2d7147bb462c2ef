//! Faults of the driver process itself and bad input, on the binary: SIGKILL in mid-test (a start
//! script that forks QEMU rather than exec it, and a VLAN's switches), a panic inside the driver,
//! start scripts that cannot work, unknown and duplicate machine names, invalid regexes and key
//! names, a script with a syntax error; and two runs at once on one host, listening on loopback only.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `run-<name>-vm` in `dir`: the tiny guest started by a shell that stays QEMU's parent.
fn forking_start_script(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("run-{name}-vm"));
    write_exec(
        &path,
        &format!("#!/bin/sh\n'{}' \"$@\"\necho done\n", tiny()),
    );
    path.to_str().unwrap().to_string()
}

fn named(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("run-{name}-vm"));
    write_exec(&path, &format!("#!/bin/sh\nexec '{}' \"$@\"\n", tiny()));
    path.to_str().unwrap().to_string()
}

fn script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let o: Output = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn sigkill_in_mid_test_leaves_no_qemu_and_no_switch() {
    let dir = scratch("faults-sigkill");
    let start = forking_start_script(&dir, "forked");
    let test = script(
        &dir,
        "waits.rhai",
        "forked.succeed(\"true\");\nforked.wait_for_file(\"/never\");\n",
    );
    let mut child = Command::new(BIN)
        .args([
            "--keep-vm-state",
            "--vlans",
            "1",
            "--start-scripts",
            &start,
            "--",
            &test,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Seen::collect(child.stderr.take().unwrap());
    let mut child = Running(child);
    err.wait_for("forked: waiting for file /never", 0);
    let state = state_dir(&err.text());
    let before = processes_mentioning(&state);
    let names = names_of(&before);
    // The test can fail: QEMU (a grandchild here), the VLAN's switch and wirefilter are running.
    for want in ["qemu-system-x86", "vde_switch", "wirefilter"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let t0 = Instant::now();
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.0.wait();
    loop {
        let left = processes_mentioning(&state);
        if left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "left running 2 s after SIGKILL: {:?}",
            names_of(&left)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "FAULT | driver SIGKILLed | {:.2} s | every process of the run gone",
        t0.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_panic_in_the_driver_stops_the_machines_and_writes_the_reports() {
    let dir = scratch("faults-panic");
    let test = script(
        &dir,
        "panics.rhai",
        "subtest(\"boots\", || tiny.succeed(\"true\"));\n\
         subtest(\"hits a bug\", || driver_panic_for_tests(\"simulated bug\"));\n",
    );
    let junit = dir.join("junit.xml");
    let report = dir.join("report");
    let o = Command::new(BIN)
        .env("VMTD_FAULT_INJECTION", "1")
        .args(["--keep-vm-state", "--junit", junit.to_str().unwrap()])
        .args(["--report", report.to_str().unwrap()])
        .args(["--start-scripts", &tiny(), "--", &test])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(101), "{log}");
    assert!(
        log.contains("internal error: the driver panicked: simulated bug"),
        "{log}"
    );
    let state = state_dir(&log);
    assert_nothing_left(&state);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], false);
    assert!(
        json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the driver panicked: simulated bug"),
        "{json}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("simulated bug"), "{xml}");
    // Without the environment variable the function does not exist.
    let (code, err) = run(&["--start-scripts", &tiny(), "--", &test]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Function not found: driver_panic_for_tests"),
        "{err}"
    );
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_start_scripts_and_names_are_clear_errors() {
    let dir = scratch("faults-bad-input");
    let ok = script(&dir, "ok.rhai", "start_all();\n");
    let up = |name: &str| {
        script(
            &dir,
            &format!("{name}.rhai"),
            &format!("{name}.succeed(\"true\");\n"),
        )
    };
    let check = |args: &[&str], code: i32, needles: &[&str]| {
        let t0 = Instant::now();
        let (got, err) = run(args);
        assert_eq!(got, Some(code), "{args:?}:\n{err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: no {n:?} in:\n{err}");
        }
        let line = err
            .lines()
            .find(|l| needles.iter().any(|n| l.contains(n)))
            .unwrap_or_default()
            .to_string();
        eprintln!(
            "FAULT | {args:?} | {:.2} s | {line}",
            t0.elapsed().as_secs_f64()
        );
    };
    // A start script that does not exist, or is not executable.
    check(
        &["--start-scripts", "/nonexistent/run-x-vm", "--", &ok],
        2,
        &["start script /nonexistent/run-x-vm does not exist"],
    );
    let noexec = dir.join("run-noexec-vm");
    std::fs::write(&noexec, "#!/bin/sh\nexit 0\n").unwrap();
    check(
        &[
            "--start-scripts",
            noexec.to_str().unwrap(),
            "--",
            &up("noexec"),
        ],
        1,
        &["run-noexec-vm is not executable"],
    );
    // One that exits without starting QEMU: at once, with what it printed.
    let noqemu = dir.join("run-noqemu-vm");
    write_exec(&noqemu, "#!/bin/sh\necho no qemu here >&2\nexit 0\n");
    check(
        &[
            "--start-scripts",
            noqemu.to_str().unwrap(),
            "--",
            &up("noqemu"),
        ],
        1,
        &[
            "QEMU exited before the backdoor shell connected",
            "no qemu here",
        ],
    );
    // Two machines of one name.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let twin = named(&other, "tiny");
    check(
        &["--start-scripts", &tiny(), &twin, "--", &ok],
        2,
        &["two machines are named \"tiny\""],
    );
    // A machine name no start script gave.
    let unknown = script(&dir, "unknown.rhai", "server.succeed(\"true\");\n");
    check(
        &["--start-scripts", &tiny(), "--", &unknown],
        1,
        &["unknown.rhai:1:1: Variable not found: server (no machine"],
    );
    // A syntax error: before any machine starts.
    let syntax = script(&dir, "syntax.rhai", "tiny.succeed(\"true\";\n");
    check(
        &["--start-scripts", &tiny(), "--", &syntax],
        2,
        &["syntax.rhai:1:20: syntax error: Expecting ',' to separate the arguments"],
    );
    // An invalid regex and invalid key names, named in the error; the machine boots for them.
    let calls = script(
        &dir,
        "calls.rhai",
        "let r = \"\";\n\
         try { tiny.wait_for_console_text(\"(unclosed\"); } catch (e) { r += `${e}\n`; }\n\
         try { tiny.send_key(\"ctrl-nokey\"); } catch (e) { r += `${e}\n`; }\n\
         try { tiny.send_chars(\"\\u00e9\"); } catch (e) { r += `${e}\n`; }\n\
         throw r;\n",
    );
    check(
        &["--start-scripts", &tiny(), "--", &calls],
        1,
        &["(unclosed", "unknown key \"nokey\" in \"ctrl-nokey\"", "é"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Listening TCP sockets (inode → local address) of the host, IPv4 and IPv6.
fn listening() -> Vec<(u64, String)> {
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" {
                found.push((f[9].parse().unwrap_or(0), f[1].to_string()));
            }
        }
    }
    found
}

/// Socket inodes held open by process `pid`.
fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

#[test]
fn two_runs_at_once_do_not_interfere_and_listen_on_loopback_only() {
    let dir = scratch("faults-two-runs");
    // Each run forwards a port (user networking) and serves it for 15 s, while the test looks at both.
    let test = |n: u16| {
        script(
            &dir,
            &format!("run{n}.rhai"),
            &format!(
                "tiny.succeed(\"mkdir -p /srv && echo run{n} > /srv/index.html\");\n\
                 tiny.succeed(\"httpd -p 80 -h /srv\");\n\
                 tiny.forward_port({n}, 80);\n\
                 tiny.wait_for_open_port(80);\n\
                 tiny.succeed(\"echo run{n} > /tmp/mine\");\n\
                 tiny.succeed(\"sleep 15\");\n\
                 tiny.succeed(\"grep -qx run{n} /tmp/mine\");\n"
            ),
        )
    };
    let ports = [free_port(), free_port()];
    let mut runs: Vec<(Running, Seen)> = ports
        .iter()
        .map(|&p| {
            let mut c = Command::new(BIN)
                .args([
                    "--keep-vm-state",
                    "--start-scripts",
                    &tiny(),
                    "--",
                    &test(p),
                ])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let seen = Seen::collect(c.stderr.take().unwrap());
            (Running(c), seen)
        })
        .collect();
    for (_, seen) in &runs {
        seen.wait_for("must succeed: sleep 15", 0);
    }
    let states: Vec<String> = runs.iter().map(|(_, s)| state_dir(&s.text())).collect();
    assert_ne!(states[0], states[1]);
    for s in &states {
        let mode = std::fs::metadata(s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{s}");
    }
    // Each forwarded port reaches its own run's guest, on 127.0.0.1.
    for (i, &p) in ports.iter().enumerate() {
        let mut body = String::new();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
        use std::io::{Read, Write};
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        stream.read_to_string(&mut body).unwrap();
        assert!(
            body.contains(&format!("run{p}")),
            "port {p} of run {i}: {body}"
        );
    }
    // Nothing of either run listens on an address other than loopback.
    let all = listening();
    let mut checked = 0;
    for s in &states {
        for pid in processes_mentioning(s) {
            for inode in socket_inodes(pid) {
                for (_, addr) in all.iter().filter(|(i, _)| *i == inode) {
                    checked += 1;
                    // 0100007F = 127.0.0.1, and ::1 in /proc/net/tcp6's byte order.
                    assert!(
                        addr.starts_with("0100007F:")
                            || addr.starts_with("00000000000000000000000001000000:"),
                        "pid {pid} ({:?}) listens on {addr}",
                        names_of(&[pid])
                    );
                }
            }
        }
    }
    assert!(checked >= 2, "the forwarded ports were not seen listening");
    // Both finish, each having kept its own file.
    for (run, seen) in runs.iter_mut() {
        assert_eq!(wait_exit(&mut run.0, PATIENCE), 0, "{}", seen.text());
    }
    for s in &states {
        assert_nothing_left(s);
        std::fs::remove_dir_all(s).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
