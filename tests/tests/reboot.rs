//! reboot on the tiny guest: with allow_reboot the guest comes back with a fresh /tmp; without it
//! QEMU exits (-no-reboot, as in NixOS) and the next command says so.

use driver::{Driver, StartCommand};
use tests::{guest_start_script, init_logging};

#[test]
fn reboot_with_and_without_allow_reboot() {
    init_logging();
    let driver = Driver::new().unwrap();
    let script = guest_start_script("tiny");
    let again = driver
        .add_named_machine("again", StartCommand::Script(script.clone()))
        .unwrap();
    let once = driver
        .add_named_machine("once", StartCommand::Script(script))
        .unwrap();
    again.set_allow_reboot(true);
    driver.start_all().unwrap();

    again.succeed("touch /tmp/before-reboot").unwrap();
    let boot_id = again
        .succeed("cat /proc/sys/kernel/random/boot_id")
        .unwrap();
    driver.nested("rebooting", || again.reboot()).unwrap();
    again.fail("test -e /tmp/before-reboot").unwrap();
    assert_ne!(
        again
            .succeed("cat /proc/sys/kernel/random/boot_id")
            .unwrap(),
        boot_id
    );
    assert!(again.is_running());

    once.connect().unwrap();
    once.reboot().unwrap();
    let err = once.succeed("true").unwrap_err().to_string();
    assert!(err.contains("QEMU"), "{err}");
    once.wait_for_shutdown().unwrap();
    again.crash().unwrap();
}
