//! Start scripts that attach their own NIC to a VLAN, as every NixOS-built `run-<name>-vm` does
//! (`-netdev vde,id=vlan1,sock=$QEMU_VDE_SOCKET_1`), on one VLAN with a machine that gets the
//! driver's NIC: no second NIC for the first, block/unblock find each NIC from QEMU, link faults and
//! partitions work for both; a script that names the variables but plugs into none is on no VLAN,
//! and the driver says so.

use driver::{Driver, LinkQuality, Machine, StartCommand};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::{guest_start_script, init_logging};

/// A NixOS-style start script wrapping the tiny guest's: its own NIC on VLAN 1 with NixOS's MAC for
/// machine `number` and netdev id, unless `plug` is false (then it only names the variable).
fn nixos_style_script(dir: &Path, name: &str, number: u8, plug: bool) -> PathBuf {
    let nic = format!(
        "-device virtio-net-pci,netdev=vlan1,mac=52:54:00:12:01:{number:02x} \
         -netdev vde,id=vlan1,sock=$QEMU_VDE_SOCKET_1"
    );
    let opts = if plug {
        format!("export QEMU_OPTS=\"$QEMU_OPTS {nic}\"\n")
    } else {
        "# this machine would use QEMU_VDE_SOCKET_1, but its NIC was left out\n".into()
    };
    let path = dir.join(format!("run-{name}-vm"));
    let inner = guest_start_script("tiny");
    std::fs::write(
        &path,
        format!("#!/bin/sh\n{opts}exec {} \"$@\"\n", inner.display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Whether `m` reaches `addr` over its VLAN 1 interface (not QEMU's user network).
fn reaches(m: &Machine, addr: &str) -> bool {
    let dev = tests::vlan_interface(m, 1);
    m.execute(&format!("ping -c 1 -W 2 -I \"{dev}\" {addr}"))
        .unwrap()
        .0
        == 0
}

#[test]
fn scripts_with_their_own_nic_and_without_share_a_vlan() {
    init_logging();
    let dir = tempdir("own-nics");
    let driver = Driver::new().unwrap();
    driver.add_vlan(1).unwrap();
    // NixOS numbers machines too: `nixos` is machine 1, `plain` machine 2, as the driver counts.
    let nixos = driver
        .add_machine(StartCommand::Script(nixos_style_script(
            &dir, "nixos", 1, true,
        )))
        .unwrap();
    let plain = driver
        .add_named_machine("plain", StartCommand::Script(guest_start_script("tiny")))
        .unwrap();
    plain.attach_vlans(&[1]).unwrap();
    driver.start_all().unwrap();
    // Both up (VLAN addresses set at boot) before the first ping.
    nixos.connect().unwrap();
    plain.connect().unwrap();

    // One NIC on VLAN 1 each: QEMU would have refused a second `vlan1` netdev.
    let info = nixos.send_monitor_command("info network").unwrap();
    assert_eq!(info.matches("type=vde").count(), 1, "{info}");
    assert!(info.contains("virtio-net-pci.1"), "{info}");
    assert!(reaches(&nixos, &plain.vlan_address(1)));
    assert!(reaches(&plain, &nixos.vlan_address(1)));

    // block() finds the script's NIC (`virtio-net-pci.1`, no id) from QEMU.
    nixos.block().unwrap();
    assert!(!reaches(&plain, &nixos.vlan_address(1)), "blocked");
    nixos.unblock().unwrap();
    plain
        .wait_until_succeeds(
            &format!("ping -c 1 -W 1 {}", nixos.vlan_address(1)),
            Some(Duration::from_secs(30)),
        )
        .unwrap();
    plain.block().unwrap();
    assert!(!reaches(&nixos, &plain.vlan_address(1)), "blocked");
    plain.unblock().unwrap();
    nixos
        .wait_until_succeeds(
            &format!("ping -c 1 -W 1 {}", plain.vlan_address(1)),
            Some(Duration::from_secs(30)),
        )
        .unwrap();

    // The script's NIC is plugged into a link of its own, so link faults apply to it.
    let slow = LinkQuality {
        delay: Duration::from_millis(300),
        ..Default::default()
    };
    driver.set_link_quality(1, &nixos, slow).unwrap();
    let t0 = Instant::now();
    assert!(reaches(&plain, &nixos.vlan_address(1)));
    assert!(t0.elapsed() >= Duration::from_millis(300), "no delay");
    driver
        .set_link_quality(1, &nixos, LinkQuality::default())
        .unwrap();
    driver.partition(&[&[&nixos], &[&plain]]).unwrap();
    assert!(!reaches(&plain, &nixos.vlan_address(1)), "partitioned");
    driver.heal().unwrap();
    nixos
        .wait_until_succeeds(
            &format!("ping -c 1 -W 1 {}", plain.vlan_address(1)),
            Some(Duration::from_secs(30)),
        )
        .unwrap();
    for m in driver.machines() {
        m.shutdown().unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_script_that_plugs_into_no_vlan_is_said_to_be_on_none() {
    init_logging();
    let dir = tempdir("no-vlan");
    let driver = Driver::new().unwrap();
    driver.add_vlan(1).unwrap();
    let lost = driver
        .add_machine(StartCommand::Script(nixos_style_script(
            &dir, "lost", 1, false,
        )))
        .unwrap();
    // (No ping: QEMU's user network would answer it, or send it on from the host.)
    let err = lost
        .wait_until_succeeds(
            "ip -o addr show | grep -q ' 192.168.1.'",
            Some(Duration::from_secs(3)),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("note: machine lost is on no VLAN")
            && err.contains("QEMU_VDE_SOCKET_1 went unused"),
        "{err}"
    );
    let err = lost.block().unwrap_err().to_string();
    assert!(
        err.contains("no VLAN link to switch off")
            && err.contains("sets up NICs of its own, and none is on one of the run's VLANs"),
        "{err}"
    );
    lost.shutdown().unwrap();

    // Without any VLAN in the run, block() says that instead.
    let alone = Driver::new().unwrap();
    let tiny = alone
        .add_machine(StartCommand::Script(guest_start_script("tiny")))
        .unwrap();
    tiny.start().unwrap();
    let err = tiny.block().unwrap_err().to_string();
    assert!(err.contains("the run has no VLAN"), "{err}");
    tiny.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmtd-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
