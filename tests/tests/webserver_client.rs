//! The seed's own example: a `webserver` (the Debian systemd guest, an HTTP server run as a systemd
//! unit) and a `client` (the tiny guest) on VLAN 1. The client fetches a page; `block` makes that fail,
//! `unblock` restores it; `forward_port` makes the server reachable from the host at localhost:8081.

use driver::{Driver, StartCommand};
use std::io::{Read, Write};
use std::time::Duration;
use tests::{guest_start_script, init_logging};

#[test]
fn client_fetches_from_webserver_over_vlan() {
    init_logging();
    let driver = Driver::new().unwrap();
    let webserver = driver
        .add_named_machine(
            "webserver",
            StartCommand::Script(guest_start_script("systemd")),
        )
        .unwrap();
    let client = driver
        .add_named_machine("client", StartCommand::Script(guest_start_script("tiny")))
        .unwrap();
    webserver.attach_vlans(&[1]).unwrap();
    client.attach_vlans(&[1]).unwrap();
    driver.start_all().unwrap();

    webserver
        .write_file(
            "/srv/www/index.html",
            b"<h1>hello from the webserver</h1>\n",
        )
        .unwrap();
    webserver
        .write_file(
            "/etc/systemd/system/httpd.service",
            b"[Service]\nExecStart=/bin/busybox httpd -f -p 80 -h /srv/www\n",
        )
        .unwrap();
    webserver.succeed("systemctl daemon-reload").unwrap();
    webserver.start_job("httpd.service").unwrap();
    webserver
        .wait_for_unit("httpd.service", Some(Duration::from_secs(120)))
        .unwrap();
    webserver
        .wait_for_open_port(80, None, Some(Duration::from_secs(120)))
        .unwrap();

    // busybox-static's wget crashes (SIGSEGV) in this guest; a request over nc does the same job.
    let fetch = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} 80 | grep hello",
        webserver.vlan_address(1)
    );
    let page = client
        .wait_until_succeeds(&fetch, Some(Duration::from_secs(120)))
        .unwrap();
    assert!(page.contains("hello from the webserver"), "{page}");

    webserver.block().unwrap();
    client.fail(&fetch).unwrap();
    webserver.unblock().unwrap();
    client
        .wait_until_succeeds(&fetch, Some(Duration::from_secs(120)))
        .unwrap();

    webserver.forward_port(8081, 80).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", 8081)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.contains("hello from the webserver"), "{page}");

    client.shutdown().unwrap();
    webserver.shutdown().unwrap();
}
