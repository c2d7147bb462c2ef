//! The NixOS-compatible backdoor on `/dev/hvc0` (virtconsole), which the bundled guests use when told
//! to by `vmtd.backdoor=hvc0`: a guest built for NixOS's driver must work unchanged.

use tests::driver_with;

#[test]
fn commands_over_hvc0() {
    // This test binary is its own process: the variable reaches only this test's start script.
    std::env::set_var("QEMU_KERNEL_PARAMS", "vmtd.backdoor=hvc0");
    let (_driver, vm) = driver_with("tiny");
    let fd0 = vm.succeed("readlink /proc/$$/fd/0").unwrap();
    assert_eq!(fd0, "/dev/hvc0\n");
    assert_eq!(vm.execute("exit 3").unwrap().0, 3);
    assert_eq!(vm.succeed("cat; echo '(' # c").unwrap(), "(\n");
    assert_eq!(vm.succeed("sleep 100 & echo bg").unwrap(), "bg\n");
    assert_eq!(
        vm.succeed("head -c 100000 /dev/zero | wc -c")
            .unwrap()
            .trim(),
        "100000"
    );
    // `quit` ends QEMU at once (NixOS's `crash`).
    vm.send_monitor_command("quit").unwrap();
    vm.wait_for_shutdown().unwrap();
    assert!(!vm.is_running());
}
