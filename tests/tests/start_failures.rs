//! Start-up failures, with no guest: each ends at once with an error naming the problem.

use driver::{Driver, Error, StartCommand};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn qemu_dying_before_the_backdoor_is_reported_at_once_with_its_stderr() {
    tests::init_logging();
    let dir = std::env::temp_dir().join(format!("vmtd-start-failures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let driver = Driver::new().unwrap();

    let broken = script(
        &dir,
        "run-broken-vm",
        "#!/bin/sh\necho 'qemu: could not load kernel /nonexistent' >&2\nexit 1\n",
    );
    let vm = driver.add_machine(StartCommand::Script(broken)).unwrap();
    assert_eq!(vm.name(), "broken");
    let t = Instant::now();
    let err = vm.connect().unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let msg = err.to_string();
    assert!(matches!(err, Error::MachineGone { .. }), "{msg}");
    assert!(msg.contains("could not load kernel /nonexistent"), "{msg}");
    assert!(msg.contains("exit status: 1"), "{msg}");
    // Its commands fail at once too, rather than booting it again.
    assert!(vm.execute("true").is_err());

    let missing = dir.join("run-missing-vm");
    let vm = driver.add_machine(StartCommand::Script(missing)).unwrap();
    let msg = anyhow_chain(vm.start().unwrap_err());
    assert!(msg.contains("does not exist"), "{msg}");

    let noexec = script(&dir, "run-noexec-vm", "#!/bin/sh\n");
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let vm = driver.add_machine(StartCommand::Script(noexec)).unwrap();
    let msg = anyhow_chain(vm.start().unwrap_err());
    assert!(msg.contains("not executable"), "{msg}");

    let err = driver
        .add_machine(StartCommand::Script(dir.join("not-a-start-script")))
        .unwrap_err();
    let msg = anyhow_chain(err);
    assert!(msg.contains("not-a-start-script"), "{msg}");

    let vm = driver.machine("broken").unwrap();
    assert!(vm.block().is_err(), "no VLAN to block");
    drop(driver);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The error and its sources, as the CLI prints them.
fn anyhow_chain(e: driver::Error) -> String {
    format!("{:#}", anyhow::Error::from(e))
}
