//! The `nixos` guest: a machine started by a script written after NixOS's `qemu-vm.nix`, whose backdoor is
//! NixOS's backdoor.service (`bash --norc` on `/dev/hvc0`, stderr on the serial console). One machine,
//! `client`, without a VLAN, under our driver: commands over hvc0 (not the driver's second channel), the 9p
//! shares (`SHARED_DIR` at /tmp/shared, the state dir's `xchg` at /tmp/xchg), `QEMU_KERNEL_PARAMS`,
//! `NIX_DISK_IMAGE`, and the disk across a reboot and a new QEMU.
//!
//! The two-machine scenario on VLAN 1 waits for the driver to leave alone the NICs a start script attaches
//! itself (it adds its own today: `Duplicate ID 'vlan1'`); `examples/nixos-webserver-client.rhai` has it.

use driver::{Driver, StartCommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::{guest_dir, init_logging};

/// A directory of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn nixos_start_script_under_the_driver() {
    init_logging();
    let scratch =
        Scratch(std::env::temp_dir().join(format!("vmtd-nixos-guest-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let disk = scratch.0.join("client-disk.qcow2");
    // This test binary is its own process, with this one test: the variables reach only its start script.
    std::env::set_var("NIX_DISK_IMAGE", &disk);
    std::env::set_var("QEMU_KERNEL_PARAMS", "vmtd.nixos-test=param-42");
    std::env::remove_var("QEMU_VDE_SOCKET_1");

    let driver = Driver::new().unwrap();
    let script = guest_dir("nixos").join("run-client-vm");
    let client = driver.add_machine(StartCommand::Script(script)).unwrap();
    assert_eq!(client.name(), "client");
    client.set_allow_reboot(true);
    let t0 = Instant::now();
    client.connect().unwrap();
    eprintln!(
        "nixos guest: backdoor ready {:.2} s after start",
        t0.elapsed().as_secs_f64()
    );

    // The backdoor: bash, run by backdoor.service, on hvc0 (stdin and stdout) with stderr on ttyS0;
    // not on the driver's flow-controlled port.
    client.succeed("true").unwrap();
    assert_eq!(
        client
            .succeed("readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2")
            .unwrap(),
        "/dev/hvc0\n/dev/hvc0\n/dev/ttyS0\n"
    );
    assert!(!client
        .succeed("echo $BASH_VERSION")
        .unwrap()
        .trim()
        .is_empty());
    assert!(client
        .succeed("cat /proc/$$/cgroup")
        .unwrap()
        .contains("/backdoor.service"));
    client.succeed("echo nixos-guest-says-hi >&2").unwrap();
    client
        .wait_for_console_text("nixos-guest-says-hi", Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(client.succeed("hostname").unwrap(), "client\n");
    // getent's ahosts asks with AI_ADDRCONFIG: no IPv4 answer until the machine has an IPv4 address
    // of its own, which networkd gives it a moment after the backdoor is up.
    assert_eq!(
        client
            .wait_until_succeeds(
                "a=$(getent ahostsv4 webserver) && echo \"${a%% *}\"",
                Some(Duration::from_secs(60))
            )
            .unwrap(),
        "192.168.1.2\n"
    );

    // Root disk and 9p shares, mounted at boot.
    let mounts = client
        .succeed("awk '$2 == \"/\" || $2 ~ /^\\/tmp\\// { print $1, $2, $3 }' /proc/mounts")
        .unwrap();
    for mount in [
        "/dev/vda / ext4",
        "shared /tmp/shared 9p",
        "xchg /tmp/xchg 9p",
    ] {
        assert!(
            mounts.lines().any(|l| l == mount),
            "{mount} not in\n{mounts}"
        );
    }
    let shared = driver.state_dir().join("shared-xchg");
    std::fs::write(shared.join("from-host"), "hello, guest\n").unwrap();
    assert_eq!(
        client.succeed("cat /tmp/shared/from-host").unwrap(),
        "hello, guest\n"
    );
    client
        .succeed("echo 'hello, host' > /tmp/xchg/from-guest")
        .unwrap();
    let xchg = driver.state_dir().join("vm-state-client/xchg");
    assert_eq!(
        std::fs::read_to_string(xchg.join("from-guest")).unwrap(),
        "hello, host\n"
    );

    // QEMU_KERNEL_PARAMS reaches the kernel; no VLAN variable, no VLAN NIC.
    let cmdline = client.succeed("cat /proc/cmdline").unwrap();
    assert!(cmdline.contains(" vmtd.nixos-test=param-42"), "{cmdline}");
    assert!(cmdline.contains("systemd.hostname=client"), "{cmdline}");
    let macs = client.succeed("cat /sys/class/net/*/address").unwrap();
    assert!(!macs.contains("52:54:00:12:01:"), "{macs}");

    // NIX_DISK_IMAGE: the disk was made there (a qcow2 overlay), not in the state directory.
    let head = std::fs::read(&disk).unwrap();
    assert_eq!(&head[..4], b"QFI\xfb");
    assert!(!driver
        .state_dir()
        .join("vm-state-client/client.qcow2")
        .exists());

    // The disk keeps a file across a reboot, and across a new QEMU on the same image.
    client.succeed("echo kept > /root/kept; sync").unwrap();
    let boot_id = client
        .succeed("cat /proc/sys/kernel/random/boot_id")
        .unwrap();
    let t = Instant::now();
    client.reboot().unwrap();
    assert_eq!(client.succeed("cat /root/kept").unwrap(), "kept\n");
    eprintln!(
        "nixos guest: rebooted in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_ne!(
        client
            .succeed("cat /proc/sys/kernel/random/boot_id")
            .unwrap(),
        boot_id
    );
    client.succeed("echo again >> /root/kept; sync").unwrap();
    client.shutdown().unwrap();
    assert!(!client.is_running());
    client.start().unwrap();
    assert_eq!(client.succeed("cat /root/kept").unwrap(), "kept\nagain\n");
    client.shutdown().unwrap();
}
