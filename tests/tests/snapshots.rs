//! Snapshots on both bundled guests: what was written after a snapshot is gone after restoring it,
//! what was written before is there, and commands, console, monitor and clock work at once; two
//! machines on a VLAN still reach each other after `restore_all`.

use driver::{Driver, Machine, StartCommand};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::{guest_start_script, init_logging};

/// Checks files, commands, console, monitor and clock of `vm` around a snapshot and restore; the
/// files go under `dir` (on the guest's disk for the systemd guest).
fn round_trip(vm: &Machine, dir: &str) {
    vm.succeed(format!(
        "mkdir -p {dir} && echo kept > {dir}/before && sync"
    ))
    .unwrap();
    let t = Instant::now();
    vm.snapshot("s1").unwrap();
    eprintln!("{}: snapshot in {:?}", vm.name(), t.elapsed());
    assert!(vm.snapshots().unwrap().contains(&"s1".to_string()));
    vm.succeed(format!(
        "echo gone > {dir}/after && rm {dir}/before && sync"
    ))
    .unwrap();
    // Time passes between snapshot and restore; the guest clock must not stay behind.
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    vm.restore("s1").unwrap();
    eprintln!("{}: restore in {:?}", vm.name(), t.elapsed());
    assert_eq!(vm.succeed(format!("cat {dir}/before")).unwrap(), "kept\n");
    vm.fail(format!("test -e {dir}/after")).unwrap();
    vm.succeed("echo console-after-restore > /dev/ttyS0")
        .unwrap();
    vm.wait_for_console_text("console-after-restore", Some(Duration::from_secs(30)))
        .unwrap();
    assert!(vm
        .send_monitor_command("info status")
        .unwrap()
        .contains("running"));
    let guest: i64 = vm.succeed("date +%s").unwrap().trim().parse().unwrap();
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest - host).abs() <= 2,
        "guest clock {guest}, host {host}"
    );
    // A name HMP could misread is refused before it gets there.
    assert!(vm.snapshot("a;quit").is_err());
    let err = vm.restore("no-such-snapshot").unwrap_err().to_string();
    assert!(err.contains("no-such-snapshot"), "{err}");
    // A failed restore leaves the machine running as it was.
    assert!(vm
        .send_monitor_command("info status")
        .unwrap()
        .contains("running"));
    vm.succeed("true").unwrap();
}

#[test]
fn tiny_guests_on_a_vlan_snapshot_and_restore_alone_and_together() {
    init_logging();
    let driver = Driver::new().unwrap();
    let add = |name: &str| {
        let m = driver
            .add_named_machine(name, StartCommand::Script(guest_start_script("tiny")))
            .unwrap();
        m.attach_vlans(&[1]).unwrap();
        m
    };
    let (a, b) = (add("a"), add("b"));
    driver.start_all().unwrap();
    round_trip(&a, "/tmp/snap");

    let ping = |from: &Machine, to: &Machine| {
        from.succeed(format!("ping -c 1 -W 2 {}", to.vlan_address(1)))
            .unwrap();
    };
    ping(&a, &b);
    driver.snapshot_all("net").unwrap();
    a.succeed("touch /tmp/after-net").unwrap();
    b.succeed("touch /tmp/after-net").unwrap();
    driver.restore_all("net").unwrap();
    for (from, to) in [(&a, &b), (&b, &a)] {
        from.fail("test -e /tmp/after-net").unwrap();
        ping(from, to);
    }
    for m in driver.machines() {
        m.crash().unwrap();
    }
}

#[test]
fn systemd_guest_restores_its_disk_with_its_memory() {
    let (_driver, vm) = tests::driver_with("systemd");
    round_trip(&vm, "/root/snap");
    vm.wait_for_unit("multi-user.target", Some(Duration::from_secs(60)))
        .unwrap();
    vm.crash().unwrap();
}
