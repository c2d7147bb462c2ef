//! Three tiny guests on two VLANs (vde_switch): A–B on VLAN 1, B–C on VLAN 2; block and unblock.

use driver::{Driver, StartCommand};
use tests::{guest_start_script, init_logging};

#[test]
fn three_machines_on_two_vlans() {
    init_logging();
    let script = guest_start_script("tiny");
    let driver = Driver::new().unwrap();
    let add = |name: &str, vlans: &[u32]| {
        let m = driver
            .add_named_machine(name, StartCommand::Script(script.clone()))
            .unwrap();
        m.attach_vlans(vlans).unwrap();
        m
    };
    let a = add("a", &[1]);
    let b = add("b", &[1, 2]);
    let c = add("c", &[2]);
    assert!(driver
        .add_named_machine("a", StartCommand::Script(script.clone()))
        .is_err());
    assert!(a.attach_vlans(&[0]).is_err());
    driver.start_all().unwrap();
    assert!(a.attach_vlans(&[3]).is_err(), "attaching a running machine");
    // Every guest up (its VLAN address set at boot) before the first ping: a guest still booting
    // under a loaded TCG host does not answer within the ping's 2 s.
    for m in driver.machines() {
        m.connect().unwrap();
    }

    // Pings leave through the machine's interface on `vlan`: by the default route they would reach
    // QEMU's user networking, which answers pings to any address itself.
    let ping = |m: &driver::Machine, vlan: u32, addr: String| {
        let dev = tests::vlan_interface(m, vlan);
        m.execute(&format!("ping -c 1 -W 2 -I \"{dev}\" {addr}"))
            .unwrap()
            .0
    };
    assert_eq!(b.vlan_address(2), "192.168.2.2");
    assert_eq!(ping(&a, 1, b.vlan_address(1)), 0, "A reaches B on VLAN 1");
    assert_eq!(ping(&b, 2, c.vlan_address(2)), 0, "B reaches C on VLAN 2");
    assert_eq!(ping(&c, 2, b.vlan_address(2)), 0, "C reaches B on VLAN 2");
    assert_ne!(ping(&a, 1, c.vlan_address(2)), 0, "A does not reach C");

    // One loop serves every machine: C's console keeps flowing while a call waits on A.
    c.succeed("(sleep 0.5; echo printed-while-a-sleeps > /dev/ttyS0) >/dev/null 2>&1 &")
        .unwrap();
    a.succeed("sleep 3").unwrap();
    assert!(
        c.get_console_log().contains("printed-while-a-sleeps"),
        "C's console was not read during A's command"
    );

    a.block().unwrap();
    assert_ne!(ping(&a, 1, b.vlan_address(1)), 0, "blocked");
    a.unblock().unwrap();
    b.wait_until_succeeds(&format!("ping -c 1 -W 1 {}", a.vlan_address(1)), None)
        .unwrap();
    assert!(driver.machine("nobody").is_err());
    for m in driver.machines() {
        m.crash().unwrap();
    }
}
