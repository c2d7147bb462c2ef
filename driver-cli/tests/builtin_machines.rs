//! Built-in machines (the seed's `createMachine({ hda, cdrom, … })`) end to end: `create_machine(#{ … })`
//! in a Rhai script boots an installer-like ISO made here from the tiny guest, with an empty disk it
//! writes, reboots and reads back; bad maps fail naming the key or file; `--machine` on the command
//! line gives a test run its global and `exec` its machine.

mod common;

use common::scratch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the binary in `cwd` (where relative paths of built-in machines resolve).
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(common::BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("cannot run vm-test-driver")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The directory of the tiny guest: its `bzImage` and `initrd`.
fn tiny_dir() -> PathBuf {
    common::tiny().rsplit_once('/').unwrap().0.into()
}

/// Runs `program` with `args`, failing the test with its output unless it succeeds; `package` is
/// the Debian package that provides it (listed in scripts/packages.txt).
fn tool(program: &str, package: &str, args: &[&str], cwd: &Path) {
    let o = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install the Debian package {package}")
        });
    assert!(o.status.success(), "{program} {args:?}: {}", stderr(&o));
}

/// Copies `from` to `to`, naming the Debian package that provides `from` when it is missing.
fn copy_from_package(from: &str, to: &Path, package: &str) {
    if let Err(e) = std::fs::copy(from, to) {
        panic!("cannot copy {from} ({e}): install the Debian package {package}");
    }
}

/// `dir/tiny.iso`: a CD that boots the tiny guest with isolinux, as an installer ISO would, with the
/// serial console on its kernel command line.
fn tiny_iso(dir: &Path) {
    let tree = dir.join("iso-tree");
    std::fs::create_dir_all(tree.join("isolinux")).unwrap();
    copy_from_package(
        "/usr/lib/ISOLINUX/isolinux.bin",
        &tree.join("isolinux/isolinux.bin"),
        "isolinux",
    );
    copy_from_package(
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
        &tree.join("isolinux/ldlinux.c32"),
        "syslinux-common",
    );
    for file in ["bzImage", "initrd"] {
        std::fs::copy(tiny_dir().join(file), tree.join(file)).unwrap();
    }
    std::fs::write(
        tree.join("isolinux/isolinux.cfg"),
        "SERIAL 0 115200\nDEFAULT tiny\nPROMPT 0\nLABEL tiny\n  KERNEL /bzImage\n  INITRD /initrd\n  \
         APPEND console=ttyS0 loglevel=4 panic=-1 no_timer_check\n",
    )
    .unwrap();
    tool(
        "xorriso",
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "TINY",
            "-o",
            "tiny.iso",
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "iso-tree",
        ],
        dir,
    );
    std::fs::remove_dir_all(&tree).unwrap();
}

#[test]
fn an_installer_iso_boots_writes_its_disk_reboots_and_reads_it_back() {
    let dir = scratch("builtin-iso");
    tiny_iso(&dir);
    tool(
        "qemu-img",
        "qemu-utils",
        &["create", "-q", "-f", "qcow2", "disk.qcow2", "64M"],
        &dir,
    );
    // Relative paths, from the driver's current directory; the CD first (`-boot order=d`), as an
    // installer is started, and still after the reboot.
    std::fs::write(
        dir.join("install.rhai"),
        r#"
let installer = create_machine(#{
    name: "installer",
    cdrom: "tiny.iso",
    hda: "./disk.qcow2",
    memory: 256,
    qemu_flags: ["-boot", "order=d"],
});
if installer.name != "installer" { throw `named ${installer.name}`; }
installer.start(true); // allow_reboot: the guest's reboot restarts it instead of ending QEMU
subtest("the empty disk is written", || {
    installer.succeed("test -b /dev/vda");
    installer.succeed("mke2fs -q /dev/vda && mkdir /tmp/d && mount /dev/vda /tmp/d");
    installer.succeed("echo written-before-reboot > /tmp/d/proof && umount /tmp/d && sync");
});
let boot = installer.succeed("cat /proc/sys/kernel/random/boot_id");
installer.reboot();
subtest("the disk holds it after the reboot", || {
    if installer.succeed("cat /proc/sys/kernel/random/boot_id") == boot { throw "not rebooted"; }
    let proof = installer.succeed("mkdir /tmp/d && mount -o ro /dev/vda /tmp/d && cat /tmp/d/proof");
    if proof != "written-before-reboot\n" { throw `the disk holds ${proof}`; }
});
installer.shutdown();
"#,
    )
    .unwrap();
    let o = run_in(&dir, &["--", "install.rhai"]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("installer# ISOLINUX"),
        "booted from the CD: {log}"
    );
    // QEMU wrote the file itself: the marker is in the image on the host.
    tool(
        "qemu-img",
        "qemu-utils",
        &["convert", "-O", "raw", "disk.qcow2", "disk.raw"],
        &dir,
    );
    let raw = std::fs::read(dir.join("disk.raw")).unwrap();
    assert!(raw
        .windows(b"written-before-reboot".len())
        .any(|w| w == b"written-before-reboot"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_maps_fail_naming_the_key_type_or_file_and_nothing_boots() {
    let dir = scratch("builtin-bad");
    std::fs::write(dir.join("x.iso"), b"").unwrap();
    // Each call's error, caught; no machine is started, so this needs no QEMU.
    std::fs::write(
        dir.join("bad.rhai"),
        r#"
fn error_of(f) { try { f.call(); } catch (e) { return e; } throw "no error"; }
let expect = [
    [|| create_machine(#{ hda: "x.iso", hdd: "y" }),
     "create_machine: unknown key \"hdd\"; the keys are name, hda, hda_interface, cdrom, memory, kernel, initrd, append, qemu_flags"],
    [|| create_machine(#{ hda: "missing.qcow2" }), "create_machine: hda "],
    [|| create_machine(#{ hda: "missing.qcow2" }), "/missing.qcow2: No such file or directory"],
    [|| create_machine(#{ name: "x", memory: 512 }),
     "create_machine: nothing to boot: give hda (a disk image), cdrom (an ISO image) or kernel"],
    [|| create_machine(#{ cdrom: "x.iso", memory: "1G" }),
     "create_machine: memory must be an integer (MiB), not a string"],
    [|| create_machine(#{ cdrom: "x.iso", memory: 1.5 }),
     "create_machine: memory must be an integer (MiB), not f64"],
    [|| create_machine(#{ cdrom: 3 }), "create_machine: cdrom must be a string (a file path), not an integer"],
    [|| create_machine(#{ cdrom: "x.iso", qemu_flags: ["-smp", 2] }),
     "create_machine: qemu_flags must be a string (split on whitespace) or an array of strings, not an array holding i64"],
    [|| create_machine(#{ cdrom: "x.iso", initrd: "x.iso" }), "create_machine: initrd needs kernel"],
];
for e in expect {
    let got = error_of(e[0]);
    if !got.contains(e[1]) { throw `expected ${e[1]}, got: ${got}`; }
}
// Good maps: NixOS's default name, strings split on whitespace; machines are not started.
let m = create_machine(#{ cdrom: "x.iso", qemu_flags: "-smp 1" });
if m.name != "machine" { throw `default name ${m.name}`; }
let dup = error_of(|| create_machine(#{ cdrom: "x.iso" }));
if !dup.contains("machine") { throw `a second "machine": ${dup}`; }
// The start script form still works (its machine is named after it, and not started either).
if create_machine("/nowhere/run-scripted-vm").name != "scripted" { throw "start script form"; }
// --machine gave the run a global, named as given.
if cli.name != "cli" || machines.len() != 1 { throw `globals: ${machines}`; }
"#,
    )
    .unwrap();
    let o = run_in(
        &dir,
        &["--machine", "name=cli,cdrom=./x.iso", "--", "bad.rhai"],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // The command line: a missing file is a usage error naming the option and the path.
    for args in [
        &["--machine", "hda=missing.img", "--", "bad.rhai"][..],
        &["run-vms", "--machine", "hda=missing.img"],
        &["exec", "--machine", "hda=missing.img", "--", "true"],
    ] {
        let o = run_in(&dir, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let path = dir.join("missing.img");
        assert!(
            err.contains(&format!(
                "--machine hda=missing.img: hda {}: No such file",
                path.display()
            )),
            "{args:?}: {err}"
        );
    }
    let o = run_in(&dir, &["run-vms", "--machine", "hda=x.iso,memory=lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("memory must be an integer (MiB), not \"lots\""),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_boots_a_machine_given_on_the_command_line() {
    let dir = scratch("builtin-exec");
    let tiny = tiny_dir();
    let spec = format!(
        "name=cli,kernel={0}/bzImage,initrd={0}/initrd,memory=256,\
         append=\"console=ttyS0 loglevel=4 panic=-1 no_timer_check hostname=from-the-cli\"",
        tiny.display()
    );
    let o = run_in(
        &dir,
        &["exec", "--machine", &spec, "--", "hostname", "echo done"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from-the-cli\ndone\n");
    // QEMU's command line holds the kernel command line: nothing of the run is left.
    common::assert_nothing_left("hostname=from-the-cli");
    std::fs::remove_dir_all(&dir).unwrap();
}
