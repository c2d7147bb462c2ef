//! Real QEMU 7.2 runs of the plans this crate builds: paused (`-S`) and without a guest, so they are quick
//! under TCG. They check that QEMU accepts every option and connects to the driver's sockets.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{group_gone, pair, read_all, write_script};
use qemu_proc::{
    launch_plan, live_members, Accel, BuiltinVm, Child, LaunchOptions, LaunchPlan, MachinePaths,
    StartCommand, StateRoot,
};

/// A machine's sockets with the driver's side listening, as the driver sets them up.
struct Machine {
    _root: StateRoot,
    paths: MachinePaths,
    monitor: UnixListener,
    shell: UnixListener,
    shell_port: UnixListener,
}

fn machine() -> Machine {
    let root = StateRoot::create().unwrap();
    let paths = MachinePaths::new(root.machine_dir("m").unwrap(), root.shared_dir().unwrap());
    paths.check_socket_paths().unwrap();
    let monitor = UnixListener::bind(&paths.monitor).unwrap();
    let shell = UnixListener::bind(&paths.shell).unwrap();
    let shell_port = UnixListener::bind(&paths.shell_port).unwrap();
    Machine {
        _root: root,
        paths,
        monitor,
        shell,
        shell_port,
    }
}

fn options() -> LaunchOptions {
    // Paused: QEMU sets everything up, connects its sockets and then waits.
    LaunchOptions {
        accel: Accel::Tcg,
        allow_reboot: false,
        extra_qemu_opts: vec!["-S".into()],
    }
}

/// Accepts QEMU's connection, or fails with what QEMU said on stderr if it exited instead.
fn accept(
    listener: &UnixListener,
    child: &mut Child,
    stderr: &mut Option<UnixStream>,
) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            let err = read_all(stderr.take().unwrap(), Duration::from_secs(5));
            panic!("qemu exited ({status}) before connecting: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "qemu did not connect within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads from the monitor until `needle` appears; returns everything read.
fn read_until(s: &mut UnixStream, needle: &str) -> String {
    read_until_any(s, &[needle])
}

/// Reads from the monitor until one of `needles` appears; returns everything read.
fn read_until_any(s: &mut UnixStream, needles: &[&str]) -> String {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !needles
        .iter()
        .any(|n| String::from_utf8_lossy(&seen).contains(n))
    {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "monitor closed; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Starts `plan`, waits for both connections and the monitor prompt; returns the child, the monitor and the
/// test's end of the serial console (kept open so QEMU's stdio stays valid).
fn start(m: &Machine, plan: &LaunchPlan) -> (Child, UnixStream, UnixStream) {
    let (child_in, serial) = pair();
    let child_out = child_in.try_clone().unwrap();
    let (child_err, our_err) = pair();
    let mut stderr = Some(our_err);
    let mut child = Child::spawn(plan, child_in, child_out, child_err).unwrap();
    let mut monitor = accept(&m.monitor, &mut child, &mut stderr);
    let _shell = accept(&m.shell, &mut child, &mut stderr);
    let _shell_port = accept(&m.shell_port, &mut child, &mut stderr);
    let banner = read_until(&mut monitor, "(qemu) ");
    assert!(banner.contains("QEMU 7."), "{banner:?}");
    assert!(m.paths.qmp.exists(), "no QMP socket");
    (child, monitor, serial)
}

#[test]
fn a_builtin_plan_starts_connects_and_terminates_within_the_grace() {
    let m = machine();
    let vm = BuiltinVm {
        memory_mb: Some(64),
        ..BuiltinVm::default()
    };
    let plan = launch_plan("m", &StartCommand::Builtin(vm), &m.paths, &options());
    let (mut child, _monitor, _serial) = start(&m, &plan);
    assert_eq!(child.try_wait().unwrap(), None);
    let pgid = child.pid();
    let grace = Duration::from_secs(10);
    let t = Instant::now();
    let status = child.terminate(grace).unwrap();
    assert!(t.elapsed() < grace, "{:?}", t.elapsed());
    // QEMU 7.2 shuts down cleanly on SIGTERM, then re-raises it so its parent sees why it ended.
    assert!(
        status.success() || status.signal() == Some(libc::SIGTERM),
        "{status}"
    );
    assert!(group_gone(pgid), "left behind: {:?}", live_members(pgid));
}

#[test]
fn a_nixos_style_script_runs_qemu_with_the_accelerator_overridden() {
    let m = machine();
    // Like NixOS's qemu-common.nix: the binary comes with `-machine accel=kvm:tcg -cpu max`, which our
    // appended `-machine accel=tcg` must override (QEMU would refuse `-accel tcg` here).
    let script = write_script(
        m.paths.state_dir.parent().unwrap(),
        "run-m-vm",
        "#!/bin/sh\nexec qemu-system-x86_64 -machine accel=kvm:tcg -cpu max -m 64 $QEMU_OPTS \"$@\"\n",
    );
    let plan = launch_plan("m", &StartCommand::Script(script), &m.paths, &options());
    let (child, mut monitor, _serial) = start(&m, &plan);
    monitor.write_all(b"info kvm\n").unwrap();
    let reply = read_until_any(
        &mut monitor,
        &["kvm support: enabled", "kvm support: disabled"],
    );
    assert!(reply.contains("kvm support: disabled"), "{reply:?}");
    let pgid = child.pid();
    assert!(Path::new(&format!("/proc/{pgid}/exe"))
        .read_link()
        .unwrap()
        .ends_with("qemu-system-x86_64"));
    drop(child);
    assert!(group_gone(pgid), "left behind: {:?}", live_members(pgid));
}
