//! Faults in the guest and under the driver, on four tiny guests in one driver: an endless output, a
//! command outliving its timeout, a wedged shell, a guest powering off, a kernel panic (hanging and
//! rebooting) and QEMU killed while a command runs. Each is reported quickly, names what happened,
//! and the machines not at fault go on working. Times are printed for the table.

use driver::{Driver, Error, Options, StartCommand};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::{guest_start_script, init_logging};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A start script running the tiny guest with extra kernel parameters (QEMU_KERNEL_PARAMS).
fn tiny_with_params(dir: &Path, params: &str) -> PathBuf {
    let path = dir.join("run-tiny-vm");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nQEMU_KERNEL_PARAMS=\"{params} $QEMU_KERNEL_PARAMS\" exec '{}' \"$@\"\n",
            guest_start_script("tiny").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// The pid of the QEMU of machine `name` in `driver` (its command line names its state directory).
fn qemu_pid(driver: &Driver, name: &str) -> i32 {
    let needle = driver
        .state_dir()
        .join(format!("vm-state-{name}/"))
        .display()
        .to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("qemu-system") && cmdline.contains(&needle) {
            return pid;
        }
    }
    panic!("no QEMU mentions {needle}");
}

fn report(fault: &str, took: Duration, err: &Error) {
    let first = err.to_string();
    let first = first.lines().next().unwrap_or_default();
    eprintln!("FAULT | {fault} | {:.2} s | {first}", took.as_secs_f64());
}

#[test]
fn guest_faults_are_reported_quickly_and_spare_the_other_machines() {
    init_logging();
    let dir = std::env::temp_dir().join(format!("vmtd-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let driver = Driver::with_options(&Options {
        timeout_factor: Some(1.0),
        max_output: Some(1 << 20),
        ..Options::default()
    })
    .unwrap();
    let tiny = guest_start_script("tiny");
    let add = |name: &str, script: &Path| {
        driver
            .add_named_machine(name, StartCommand::Script(script.to_path_buf()))
            .unwrap()
    };
    let a = add("a", &tiny);
    let off = add("off", &tiny);
    // panic=0: the kernel halts on a panic and QEMU keeps running.
    let hang = add("hang", &tiny_with_params(&dir, "panic=0"));
    let killed = add("killed", &tiny);
    driver.start_all().unwrap();
    for m in [&a, &off, &hang, &killed] {
        m.succeed("true").unwrap();
    }

    // Endless output with a timeout: fails at the timeout, the command is stopped in the guest.
    let t0 = Instant::now();
    let err = a.execute_within("yes", secs(3)).unwrap_err();
    let took = t0.elapsed();
    report("`yes` with a 3 s timeout (1 MiB output limit)", took, &err);
    // Under TCG `yes` fills 1 MiB well before 3 s: the output limit stops it first.
    assert!(
        matches!(
            err.cause(),
            Error::OutputTooLarge { .. } | Error::Timeout { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("stopped in the guest"), "{err}");
    assert!(took < secs(10), "{took:?}");
    a.fail("pidof yes").unwrap();
    assert_eq!(a.succeed("echo usable").unwrap(), "usable\n");

    // Streamed output is not kept: 3 MB pass the 1 MiB limit.
    let mut streamed = 0;
    let status = a
        .execute_streaming("head -c 3000000 /dev/zero", secs(60), |b| {
            streamed += b.len()
        })
        .unwrap();
    assert_eq!((status, streamed), (0, 3_000_000));

    // A slow endless output within the limit: the timeout stops it.
    let t0 = Instant::now();
    let err = a
        .execute_within("while :; do echo tick; sleep 0.1; done", secs(2))
        .unwrap_err();
    let took = t0.elapsed();
    report("endless slow output, 2 s timeout", took, &err);
    assert!(matches!(err.cause(), Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("tick"), "{err}");
    assert!(took < secs(6), "{took:?}");
    assert_eq!(a.succeed("echo usable").unwrap(), "usable\n");

    // `exec sleep 1000` replaces only the command's subshell: the timeout stops it.
    let t0 = Instant::now();
    let err = a.execute_within("exec sleep 1000", secs(2)).unwrap_err();
    report("`exec sleep 1000`, 2 s timeout", t0.elapsed(), &err);
    assert!(err.to_string().contains("stopped in the guest"), "{err}");
    a.fail("pidof sleep").unwrap();

    // The guest powers off while a command runs.
    let t0 = Instant::now();
    let err = off
        .execute_within(
            "(sleep 1; echo o > /proc/sysrq-trigger) >/dev/null 2>&1 & sleep 60",
            secs(60),
        )
        .unwrap_err();
    let took = t0.elapsed();
    report("guest powers off during a command (1 s in)", took, &err);
    assert!(matches!(err.cause(), Error::MachineGone { .. }), "{err}");
    assert!(err.to_string().contains("QEMU exited"), "{err}");
    assert!(took < secs(1) + secs(2), "{took:?}");

    // A kernel panic that halts the guest (QEMU keeps running): recognised on the console.
    let t0 = Instant::now();
    let err = hang
        .execute_within(
            "(sleep 1; echo c > /proc/sysrq-trigger) >/dev/null 2>&1 & sleep 60",
            secs(60),
        )
        .unwrap_err();
    let took = t0.elapsed();
    report("kernel panic (guest halts) during a command", took, &err);
    let msg = err.to_string();
    assert!(
        msg.contains("the guest kernel panicked (Kernel panic - not syncing"),
        "{msg}"
    );
    assert!(took < secs(1) + secs(2), "{took:?}");
    assert!(hang.is_running(), "panic=0 keeps QEMU running");
    // Later commands on the panicked machine fail at once too.
    let t0 = Instant::now();
    assert!(hang.succeed("true").is_err());
    assert!(t0.elapsed() < secs(2));

    // QEMU killed from outside while a command runs.
    let pid = qemu_pid(&driver, "killed");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(secs(1));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        Instant::now()
    });
    let err = killed.execute_within("sleep 60", secs(60)).unwrap_err();
    let took = killer.join().unwrap().elapsed();
    report("QEMU killed (SIGKILL) during a command", took, &err);
    assert!(matches!(err.cause(), Error::MachineGone { .. }), "{err}");
    assert!(err.to_string().contains("signal: 9"), "{err}");
    assert!(took < secs(3), "{took:?}");

    // The machine not at fault is unaffected.
    assert_eq!(a.succeed("echo still-here").unwrap(), "still-here\n");

    // Files of any bytes under any names, both ways; no name is run as shell code.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let names = [
        "with space",
        "quo'te\"s",
        "new\nline",
        "-leading-dash",
        "$(touch /tmp/pwned)",
        "`touch /tmp/pwned`",
        "*glob?[x]",
        "back\\slash",
        "tab\there",
        "ünïcødé",
    ];
    for name in names {
        let target = format!("/tmp/copy/{name}");
        a.write_file(&target, &bytes).unwrap();
        assert_eq!(a.copy_from_vm(&target).unwrap(), bytes, "{name:?}");
    }
    let host = dir.join("host 'file\"\n-x");
    std::fs::write(&host, &bytes).unwrap();
    a.copy_from_host(&host, "/tmp/copy/-from host\n").unwrap();
    assert_eq!(
        a.copy_from_machine("/tmp/copy/-from host\n").unwrap(),
        bytes
    );
    let count = "n=0; for f in /tmp/copy/*; do n=$((n + 1)); done; echo $n";
    assert_eq!(a.succeed(count).unwrap(), format!("{}\n", names.len() + 1));
    a.fail("test -e /tmp/pwned").unwrap();
    // NUL cannot be in a file name: a clear error, nothing sent.
    let err = a.write_file("/tmp/nul\0name", b"x").unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");

    // Forwarded ports listen on loopback unless another address is asked for.
    let err = a.forward_port_on("0.0.0.0:1 -x", 1, 80).unwrap_err();
    assert!(err.to_string().contains("not an IPv4 address"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    a.forward_port(port, 80).unwrap();
    a.forward_port_on("0.0.0.0", port + 1, 80).unwrap();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let listens = |addr: &str| tcp.lines().any(|l| l.contains(addr) && l.contains(" 0A "));
    assert!(listens(&format!("0100007F:{port:04X}")), "{tcp}");
    assert!(listens(&format!("00000000:{:04X}", port + 1)), "{tcp}");

    // A wedged shell (stopped by a command): the next command times out, the interrupt gets no
    // answer, and from then on commands fail at once instead of each waiting out its timeout.
    a.succeed("kill -STOP $$").unwrap();
    let t0 = Instant::now();
    let err = a.execute_within("true", secs(2)).unwrap_err();
    let took = t0.elapsed();
    report("wedged shell: first command, 2 s timeout", took, &err);
    assert!(
        err.to_string()
            .contains("could not be stopped: the shell does not answer"),
        "{err}"
    );
    let t0 = Instant::now();
    let err = a.succeed("true").unwrap_err();
    let took = t0.elapsed();
    report("wedged shell: next command", took, &err);
    assert!(matches!(err.cause(), Error::ShellWedged { .. }), "{err}");
    assert!(took < secs(1), "{took:?}");

    drop(driver);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_kernel_panic_that_reboots_is_reported_as_a_panic() {
    // The tiny guest's own panic=-1 reboots at once; without allow_reboot QEMU exits (-no-reboot).
    let (_driver, vm) = tests::driver_with("tiny");
    vm.succeed("true").unwrap();
    let t0 = Instant::now();
    let err = vm
        .execute_within("echo c > /proc/sysrq-trigger", secs(60))
        .unwrap_err();
    let took = t0.elapsed();
    report("kernel panic (guest reboots, -no-reboot)", took, &err);
    let msg = err.to_string();
    assert!(msg.contains("the guest kernel panicked"), "{msg}");
    assert!(msg.contains("QEMU exited"), "{msg}");
    assert!(took < secs(3), "{took:?}");
}
