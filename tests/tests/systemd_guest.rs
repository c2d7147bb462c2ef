//! The Debian systemd guest (bash as the backdoor shell) under TCG: boot, commands, clean poweroff.

use driver::{Driver, StartCommand};
use std::time::{Duration, Instant};
use tests::{guest_start_script, init_logging};

#[test]
fn boot_commands_and_shutdown() {
    init_logging();
    let driver = Driver::new().unwrap();
    let vm = driver
        .add_machine(StartCommand::Script(guest_start_script("systemd")))
        .unwrap();
    assert_eq!(vm.name(), "systemd");
    let t0 = Instant::now();
    vm.connect().unwrap();
    eprintln!(
        "systemd guest: backdoor ready {:.2} s after start",
        t0.elapsed().as_secs_f64()
    );
    assert!(vm.succeed("uname -r").unwrap().contains("cloud-amd64"));
    assert!(!vm.succeed("echo $BASH_VERSION").unwrap().trim().is_empty());
    // The backdoor comes up before the boot ends; systemd reports when it has.
    let state = vm.execute("systemctl is-system-running --wait").unwrap().1;
    eprintln!(
        "systemd guest: system {} {:.2} s after start",
        state.trim(),
        t0.elapsed().as_secs_f64()
    );
    assert!(["running", "degraded"].contains(&state.trim()), "{state}");
    assert_eq!(vm.execute("exit 3").unwrap().0, 3);
    assert_eq!(vm.succeed("cat <<'EOF'\n$x (\nEOF").unwrap(), "$x (\n");
    let t = Instant::now();
    assert_eq!(vm.succeed("cat; sleep 100 & echo bg").unwrap(), "bg\n");
    assert!(t.elapsed() < Duration::from_secs(10));
    let (status, out) = vm
        .execute_bytes(
            b"head -c 1000000 /dev/urandom | base64 -w0",
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!((status, out.len()), (0, 1333336));
    vm.shutdown().unwrap();
    assert!(!vm.is_running());
}
