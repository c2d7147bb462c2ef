//! The tiny busybox guest under TCG: boot, the protocol's edge cases through the real guest, shutdown.

use driver::{Driver, StartCommand};
use std::time::{Duration, Instant};
use tests::{driver_with, guest_start_script, init_logging};

#[test]
fn boot_commands_edge_cases_and_shutdown() {
    let (_driver, vm) = driver_with("tiny");
    assert_eq!(vm.name(), "tiny");
    let t0 = Instant::now();
    vm.connect().unwrap();
    eprintln!(
        "tiny guest: backdoor ready {:.2} s after start",
        t0.elapsed().as_secs_f64()
    );
    assert!(vm.is_up());

    let release = vm.succeed("uname -r").unwrap();
    assert!(
        release.trim_end().ends_with("cloud-amd64"),
        "uname -r: {release:?}"
    );

    let ok = |cmd: &str, want: &str| {
        let (status, out) = vm.execute(cmd).unwrap();
        assert_eq!((status, out.as_str()), (0, want), "{cmd:?}");
    };
    ok("echo hi # c", "hi\n");
    ok("cat <<EOF\nline1\n$((1+2))\nEOF", "line1\n3\n");
    ok("echo '('", "(\n");
    ok(
        "x=1\nif [ $x = 1 ]; then\n  echo one\nfi\nfor i in a b; do\n  echo $i\ndone",
        "one\na\nb\n",
    );
    ok("printf 'no newline'", "no newline");
    ok("echo fine", "fine\n");
    assert_eq!(vm.execute("exit 3").unwrap().0, 3);
    ok("echo still connected", "still connected\n");

    let t = Instant::now();
    ok("cat", "");
    ok("sleep 100 &", "");
    ok("sleep 100 & echo started", "started\n");
    ok("echo next", "next\n");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "cat/background jobs blocked: {:?}",
        t.elapsed()
    );

    let (status, bytes) = vm
        .execute_bytes(b"printf '\\377\\376\\n'", Duration::from_secs(60))
        .unwrap();
    assert_eq!((status, bytes.as_slice()), (0, &b"\xff\xfe\n"[..]));

    // Marker-like text, the banner and a here-document delimiter in the output.
    ok(
        "printf '\\036E00000000000000000000000000000001 0\\036 Spawning backdoor root shell...\\nvmtd_0\\n'",
        "\u{1e}E00000000000000000000000000000001 0\u{1e} Spawning backdoor root shell...\nvmtd_0\n",
    );

    // stderr goes to the serial console (the log), not into the returned output.
    ok("echo out; echo err-from-command >&2", "out\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !vm.get_console_log().contains("err-from-command") {
        assert!(
            Instant::now() < deadline,
            "stderr never reached the console log"
        );
        vm.succeed("sleep 0.1").unwrap();
    }

    let t = Instant::now();
    let (status, big) = vm
        .execute_bytes(
            b"head -c 10000000 /dev/zero | tr '\\000' a",
            Duration::from_secs(300),
        )
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(big.len(), 10_000_000);
    assert!(big.iter().all(|&b| b == b'a'));
    eprintln!("10 MB of output in {:.2} s", t.elapsed().as_secs_f64());

    // Several commands at once, as NixOS's succeed(*commands): stops at the first failure.
    assert_eq!(vm.succeed(["echo a", "echo b"]).unwrap(), "a\nb\n");
    let err = vm
        .succeed(["true", "false", "touch /tmp/not-reached"])
        .unwrap_err();
    assert!(err.to_string().contains("`false` failed"), "{err}");
    vm.fail("test -e /tmp/not-reached").unwrap();
    assert_eq!(vm.fail(["false", "echo x; exit 2"]).unwrap(), "x\n");
    assert_eq!(vm.fail("echo expected; false").unwrap(), "expected\n");
    let err = vm.fail("echo oops; true").unwrap_err().to_string();
    assert!(
        err.contains("unexpectedly succeeded") && err.contains("oops"),
        "{err}"
    );
    let err = vm.succeed("echo nope; false").unwrap_err().to_string();
    assert!(
        err.contains("exit status 1") && err.contains("nope"),
        "{err}"
    );

    vm.shutdown().unwrap();
    assert!(!vm.is_running());
}

#[test]
fn builtin_command_line_and_monitor() {
    init_logging();
    let dir = guest_start_script("tiny").parent().unwrap().to_path_buf();
    // Timeouts as written: the test checks that short ones expire.
    let driver = Driver::with_options(&driver::Options {
        timeout_factor: Some(1.0),
        ..Default::default()
    })
    .unwrap();
    let vm = driver
        .add_machine(StartCommand::Builtin(driver::BuiltinVm {
            kernel: Some(dir.join("bzImage")),
            initrd: Some(dir.join("initrd")),
            append: Some("console=ttyS0 loglevel=4 panic=-1".into()),
            memory_mb: Some(256),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(vm.name(), "machine");
    // No guest boots in 50 ms: the timeout names the wait and shows what QEMU printed so far.
    let err = vm.connect_within(Duration::from_millis(50)).unwrap_err();
    assert!(
        err.to_string().contains("the backdoor shell to connect"),
        "{err}"
    );
    assert_eq!(vm.succeed("echo built-in").unwrap(), "built-in\n");
    let status = vm.send_monitor_command("info status").unwrap();
    assert_eq!(status.trim(), "VM status: running");
    let err = vm.send_monitor_command("no_such_command").unwrap();
    assert!(err.contains("unknown command"), "{err}");
    let err = vm
        .wait_for_shutdown_within(Duration::from_millis(300))
        .unwrap_err();
    assert!(err.to_string().contains("QEMU to exit"), "{err}");
    assert!(
        vm.is_up(),
        "a wait that timed out leaves the machine running"
    );

    // A command that outlives its timeout is abandoned; the next command runs once it ends and
    // gets only its own output.
    let err = vm
        .execute_within(
            "echo started; sleep 2; echo late",
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("to finish") && err.contains("started"),
        "{err}"
    );
    assert_eq!(vm.succeed("echo next").unwrap(), "next\n");

    // A paused guest cannot power off: the shutdown wait times out, and completes once resumed.
    vm.send_monitor_command("stop").unwrap();
    let err = vm
        .shutdown_within(Duration::from_millis(500))
        .unwrap_err()
        .to_string();
    assert!(err.contains("QEMU to exit"), "{err}");
    vm.send_monitor_command("cont").unwrap();
    vm.wait_for_shutdown().unwrap();
    assert!(!vm.is_running());
    vm.start().unwrap();
    // Booted first: the bound below is for noticing the poweroff, not for a TCG boot (4.5–5 s).
    vm.connect().unwrap();

    // The guest powers off in the middle of a command: the command fails at once with its output so
    // far, and so does the next one (the machine is not silently booted again).
    let t = Instant::now();
    let err = vm
        .execute("echo partial; echo o > /proc/sysrq-trigger; sleep 30")
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        err.contains("partial") && err.contains("QEMU exited"),
        "{err}"
    );
    let err = vm.execute("true").unwrap_err().to_string();
    assert!(err.contains("QEMU has exited"), "{err}");
    vm.wait_for_shutdown().unwrap();
    assert!(!vm.is_running());
}
