//! Waits, files, ports, console text and port forwarding on the tiny guest, each with its failure path.

use driver::Error;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tests::driver_with;

fn secs(s: f64) -> Option<Duration> {
    Some(Duration::from_secs_f64(s))
}

#[test]
fn waits_files_ports_console_and_forwarding() {
    let (_driver, vm) = driver_with("tiny");

    // wait_until_succeeds / wait_until_fails notice a change made in the background.
    vm.succeed("(sleep 1; touch /tmp/f) >/dev/null 2>&1 &")
        .unwrap();
    let t = Instant::now();
    vm.wait_until_succeeds("test -e /tmp/f", None).unwrap();
    eprintln!("wait_until_succeeds returned after {:?}", t.elapsed());
    vm.succeed("(sleep 0.5; rm /tmp/f) >/dev/null 2>&1 &")
        .unwrap();
    vm.wait_until_fails("test -e /tmp/f", secs(30.0)).unwrap();
    let err = vm
        .wait_until_succeeds("echo last-words; false", secs(1.0))
        .unwrap_err();
    assert!(matches!(err.cause(), Error::Timeout { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("last-words") && msg.contains("exit status 1"),
        "{msg}"
    );
    assert!(vm.wait_until_fails("true", secs(0.5)).is_err());

    // Files.
    vm.succeed("(sleep 0.5; echo x > '/tmp/a file') >/dev/null 2>&1 &")
        .unwrap();
    vm.wait_for_file("/tmp/a file", secs(30.0)).unwrap();
    let msg = vm
        .wait_for_file("/tmp/never", secs(0.5))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/tmp/never"), "{msg}");

    // Ports, on an address other than localhost too.
    vm.succeed("mkdir -p /tmp/www && echo served > /tmp/www/index.html")
        .unwrap();
    vm.succeed("(sleep 1; exec httpd -f -p 8080 -h /tmp/www) >/dev/null 2>&1 &")
        .unwrap();
    vm.wait_for_open_port(8080, None, secs(60.0)).unwrap();
    vm.wait_for_open_port(8080, Some("127.0.0.1"), secs(10.0))
        .unwrap();
    let msg = vm
        .wait_for_open_port(9, Some("no-such-host.invalid"), secs(0.5))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no-such-host.invalid"), "{msg}");
    let msg = vm
        .wait_for_closed_port(8080, None, secs(0.5))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("closed"), "{msg}");
    // A listener on another loopback address does not answer for localhost: `nc` decides then.
    vm.succeed("(exec httpd -f -p 127.0.0.2:8081 -h /tmp/www) >/dev/null 2>&1 &")
        .unwrap();
    vm.wait_for_open_port(8081, Some("127.0.0.2"), secs(30.0))
        .unwrap();
    let msg = vm
        .wait_for_open_port(8081, None, secs(1.0))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("localhost:8081 to be open"), "{msg}");

    // A socket closing as the awaited one starts listening leaves the guest's TCP socket counts
    // as they were, which tries between full reads of the sockets go by: it is still seen.
    vm.succeed("(exec nc -l -p 8083 </dev/null >/dev/null 2>&1) & echo $! > /tmp/nc8083")
        .unwrap();
    vm.wait_for_open_port(8083, None, secs(30.0)).unwrap();
    vm.succeed(
        "(sleep 1; kill $(cat /tmp/nc8083); exec nc -l -p 8084 </dev/null) >/dev/null 2>&1 &",
    )
    .unwrap();
    vm.wait_for_open_port(8084, None, secs(30.0)).unwrap();
    vm.wait_for_closed_port(8083, None, secs(30.0)).unwrap();

    // forward_port: the guest's web server reachable from the host.
    let host_port = 18000 + (std::process::id() % 1000) as u16;
    vm.forward_port(host_port, 8080).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", host_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.contains("served"), "{page}");
    assert!(
        vm.forward_port(host_port, 8080).is_err(),
        "the same host port twice"
    );

    vm.succeed("killall httpd").unwrap();
    vm.wait_for_closed_port(8080, None, secs(30.0)).unwrap();

    // Console text, printed after the wait began; waits move forward through the console.
    vm.succeed("(sleep 1; echo console-marker-1; echo console-marker-2) > /dev/ttyS0 2>&1 &")
        .unwrap();
    let line = vm
        .wait_for_console_text("console-marker-\\d", secs(60.0))
        .unwrap();
    assert_eq!(line, "console-marker-1");
    let line = vm
        .wait_for_console_text("console-marker-\\d", secs(60.0))
        .unwrap();
    assert_eq!(line, "console-marker-2");
    let msg = vm
        .wait_for_console_text("console-marker-\\d", secs(0.5))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("console-marker-2"),
        "the error shows the last lines: {msg}"
    );
    assert!(matches!(
        vm.wait_for_console_text("(unclosed", None),
        Err(Error::Regex { .. })
    ));

    // copy_from_host / copy_from_vm: every byte value, a file name with a space and a quote.
    let dir = tempdir();
    let src = dir.join("bytes");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    std::fs::write(&src, &bytes).unwrap();
    vm.copy_from_host(&src, "/tmp/new dir/it's").unwrap();
    assert_eq!(
        vm.succeed("wc -c < \"/tmp/new dir/it's\"").unwrap().trim(),
        "100000"
    );
    assert_eq!(vm.copy_from_vm("/tmp/new dir/it's").unwrap(), bytes);
    assert!(vm.copy_from_vm("/tmp/missing").is_err());
    assert!(vm.copy_from_host(&dir.join("missing"), "/tmp/x").is_err());
    std::fs::remove_dir_all(&dir).unwrap();

    // No systemd in this guest: unit calls fail at once with the command's output, not at a timeout.
    let t = Instant::now();
    let msg = vm
        .wait_for_unit("foo.service", None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("systemctl"), "{msg}");
    assert!(vm.get_unit_info("foo.service").is_err());
    let msg = vm
        .wait_for_user_unit("foo.service", "root", None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("systemctl"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // Nor did the waits leave a directory that would tell programs systemd runs here.
    vm.fail("test -e /run/systemd").unwrap();

    let t = Instant::now();
    vm.sleep(0.3).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));

    vm.crash().unwrap();
    assert!(!vm.is_running());
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vmtd-waits-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
