//! The seed's webserver/client scenario on machines built the way NixOS builds them (the `nixos`
//! guest's run-client-vm and run-webserver-vm, VLAN NICs baked into the start scripts), with a tiny
//! guest that gets the driver's NIC on the same VLAN: the page over VLAN 1 by name, block/unblock of
//! the scripts' own NICs, a partition, a slow link, and a port forwarded to the host.

use driver::{Driver, LinkQuality, Machine, StartCommand};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tests::{guest_dir, guest_start_script, init_logging};

/// The client's fetch of the webserver's page by name, kept short when the link is cut.
const FETCH: &str = "curl --fail --silent --show-error --max-time 5 http://webserver/";
const PAGE: &str = "Hello from the webserver";

fn fetched(client: &Machine) -> bool {
    client.execute(FETCH).unwrap().0 == 0
}

/// An HTTP GET of `/` on the host's `127.0.0.1:port`.
fn get_from_host(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: webserver\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    page
}

#[test]
fn webserver_and_client_as_nixos_builds_them_share_a_vlan_with_a_tiny_guest() {
    init_logging();
    let dir = guest_dir("nixos");
    let driver = Driver::new().unwrap();
    driver.add_vlan(1).unwrap();
    // Machines 1 and 2 as NixOS numbers them (by name), then a tiny guest with the driver's NIC.
    let client = driver
        .add_machine(StartCommand::Script(dir.join("run-client-vm")))
        .unwrap();
    let webserver = driver
        .add_machine(StartCommand::Script(dir.join("run-webserver-vm")))
        .unwrap();
    let tiny = driver
        .add_machine(StartCommand::Script(guest_start_script("tiny")))
        .unwrap();
    tiny.attach_vlans(&[1]).unwrap();
    driver.start_all().unwrap();

    webserver
        .wait_for_unit("httpd.service", Some(Duration::from_secs(300)))
        .unwrap();
    webserver.wait_for_open_port(80, None, None).unwrap();
    let page = client
        .wait_until_succeeds(FETCH, Some(Duration::from_secs(120)))
        .unwrap();
    assert!(page.contains(PAGE), "{page}");
    // One NIC on VLAN 1 each (no second one from the driver), the script's own, without an id.
    let info = webserver.send_monitor_command("info network").unwrap();
    assert_eq!(info.matches("type=vde").count(), 1, "{info}");
    // The tiny guest, on the driver's NIC, reaches the NixOS machine on its NIC.
    tiny.wait_until_succeeds(
        &format!("ping -c 1 -W 2 {}", webserver.vlan_address(1)),
        Some(Duration::from_secs(60)),
    )
    .unwrap();

    webserver.block().unwrap();
    assert!(!fetched(&client), "fetched from a blocked webserver");
    webserver.unblock().unwrap();
    client
        .wait_until_succeeds(FETCH, Some(Duration::from_secs(120)))
        .unwrap();

    driver.partition(&[&[&webserver], &[&client]]).unwrap();
    assert!(!fetched(&client), "fetched across a partition");
    driver.heal().unwrap();
    client
        .wait_until_succeeds(FETCH, Some(Duration::from_secs(120)))
        .unwrap();

    // What the client sends waits 300 ms: a TCP handshake and a request are two such trips.
    let slow = LinkQuality {
        delay: Duration::from_millis(300),
        ..Default::default()
    };
    driver.set_link_quality(1, &client, slow).unwrap();
    let t = Instant::now();
    client.succeed(FETCH).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "a fetch over a 300 ms link took {:?}",
        t.elapsed()
    );
    driver
        .set_link_quality(1, &client, LinkQuality::default())
        .unwrap();

    // A free port of the host's loopback, then the webserver's port 80 forwarded to it.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    webserver.forward_port(port, 80).unwrap();
    let page = get_from_host(port);
    assert!(page.contains(PAGE), "{page}");

    for m in driver.machines() {
        m.shutdown().unwrap();
    }
}
