//! Pure command-line building: no I/O, so every vector can be golden-tested.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::accel::Accel;
use crate::Error;

/// QEMU binary used by [`BuiltinVm`] when none is given.
pub const DEFAULT_QEMU_BINARY: &str = "qemu-system-x86_64";
/// Guest memory of a [`BuiltinVm`] when none is given, in MiB.
pub const DEFAULT_MEMORY_MB: u32 = 512;
/// Disk interface of a [`BuiltinVm`] when none is given.
pub const DEFAULT_HDA_INTERFACE: &str = "virtio";
/// Longest path that fits into `sockaddr_un.sun_path` with its terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Name of the flow-controlled virtio-serial port offered beside `/dev/hvc0` for the backdoor shell
/// (`/sys/class/virtio-ports/*/name` in the guest; `/dev/virtio-ports/<name>` with udev).
pub const BACKDOOR_PORT_NAME: &str = "org.vmtd.backdoor";

/// How a machine is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartCommand {
    /// A NixOS-style start script `run-<name>-vm`; it reads QEMU_OPTS, QEMU_NET_OPTS, QEMU_KERNEL_PARAMS,
    /// TMPDIR, SHARED_DIR, USE_TMPDIR and passes "$@" to QEMU.
    Script(PathBuf),
    /// A command line built here (the seed's hda/cdrom/hdaInterface/qemuFlags options).
    Builtin(BuiltinVm),
}

/// A machine whose QEMU command line this crate builds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuiltinVm {
    /// QEMU binary, a path or a name looked up in `$PATH` (default `qemu-system-x86_64`).
    pub qemu_binary: Option<PathBuf>,
    /// Kernel for `-kernel`.
    pub kernel: Option<PathBuf>,
    /// Initrd for `-initrd`.
    pub initrd: Option<PathBuf>,
    /// Kernel command line for `-append`.
    pub append: Option<String>,
    /// First disk; its format is qcow2 if the file name ends in `.qcow2`, raw otherwise.
    pub hda: Option<PathBuf>,
    /// Drive interface of `hda` (default `virtio`).
    pub hda_interface: Option<String>,
    /// CD-ROM image for `-cdrom`.
    pub cdrom: Option<PathBuf>,
    /// Guest memory in MiB (default 512).
    pub memory_mb: Option<u32>,
    /// Extra QEMU arguments, placed before the options this crate always appends.
    ///
    /// Do not choose an accelerator here: [`LaunchOptions::accel`] does, and QEMU refuses `-accel` next to
    /// `-machine accel=`.
    pub qemu_flags: Vec<String>,
    /// Options appended to `-netdev user,id=user.0,` (like NixOS's `QEMU_NET_OPTS`, e.g. `hostfwd=…`).
    pub net_opts: Option<String>,
}

/// Paths of one machine's sockets inside its state dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachinePaths {
    /// The machine's state directory, also the child's working directory.
    pub state_dir: PathBuf,
    /// HMP monitor socket; the driver listens, QEMU connects.
    pub monitor: PathBuf,
    /// Backdoor shell socket behind `/dev/hvc0` (virtconsole); the driver listens, QEMU connects.
    pub shell: PathBuf,
    /// Backdoor shell socket behind the flow-controlled port [`BACKDOOR_PORT_NAME`]; likewise.
    pub shell_port: PathBuf,
    /// QMP socket; QEMU listens.
    pub qmp: PathBuf,
    /// Directory shared with the guest (`SHARED_DIR`).
    pub shared_dir: PathBuf,
}

impl MachinePaths {
    /// Names the sockets `monitor`, `shell` and `qmp` inside `state_dir`, as the NixOS driver does.
    ///
    /// Give absolute paths: the child runs with `state_dir` as its working directory, so a relative
    /// socket path would be resolved against the wrong directory.
    pub fn new(state_dir: PathBuf, shared_dir: PathBuf) -> Self {
        MachinePaths {
            monitor: state_dir.join("monitor"),
            shell: state_dir.join("shell"),
            shell_port: state_dir.join("shell-port"),
            qmp: state_dir.join("qmp"),
            state_dir,
            shared_dir,
        }
    }

    /// Fails if a socket path is too long for `sockaddr_un` (a deep `$TMPDIR` can do that).
    pub fn check_socket_paths(&self) -> Result<(), Error> {
        for path in [&self.monitor, &self.shell, &self.shell_port, &self.qmp] {
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(Error::SocketPathTooLong {
                    path: path.clone(),
                    len,
                });
            }
        }
        Ok(())
    }
}

/// What a [`LaunchPlan`] starts, so errors can name it plainly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgramKind {
    /// A `run-<name>-vm` start script.
    StartScript,
    /// A QEMU binary started with a command line built here.
    Qemu,
    /// A `vde_switch` serving a virtual network.
    Switch,
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgramKind::StartScript => "start script",
            ProgramKind::Qemu => "qemu binary",
            ProgramKind::Switch => "vde_switch",
        })
    }
}

/// What to exec: pure data, golden-tested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchPlan {
    /// The program: a start script, a QEMU binary path, or a bare name looked up in `$PATH`.
    pub program: PathBuf,
    /// Whether `program` is a start script or QEMU itself (used in error messages).
    pub kind: ProgramKind,
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// Variables added to or overridden in the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory of the child.
    pub cwd: PathBuf,
}

/// Per-launch choices that are not part of the machine's definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Accelerator, usually from [`probe_accel`](crate::probe_accel).
    pub accel: Accel,
    /// Leave out `-no-reboot`, so a guest reboot restarts the guest instead of ending QEMU.
    pub allow_reboot: bool,
    /// Appended after everything else.
    pub extra_qemu_opts: Vec<String>,
}

impl LaunchOptions {
    /// Options with the given accelerator, no reboots and no extra QEMU options.
    pub fn new(accel: Accel) -> Self {
        LaunchOptions {
            accel,
            allow_reboot: false,
            extra_qemu_opts: Vec::new(),
        }
    }
}

/// Machine name from a start script's file name as given (run-foo-vm -> "foo"; no symlink resolution, no
/// parent folders); error naming the path if the file name does not match run-*-vm.
pub fn machine_name_from_script(path: &Path) -> Result<String, Error> {
    let bad = || Error::ScriptName {
        path: path.to_path_buf(),
    };
    let file_name = path.file_name().and_then(OsStr::to_str).ok_or_else(bad)?;
    let name = file_name
        .strip_prefix("run-")
        .and_then(|rest| rest.strip_suffix("-vm"))
        .filter(|name| !name.is_empty())
        .ok_or_else(bad)?;
    Ok(name.to_owned())
}

/// Builds the plan for machine `name`.
///
/// Both kinds get, after their own arguments: `-machine accel=<kvm|tcg>`, `-display none`,
/// `-serial stdio`, `-monitor unix:<monitor>`, `-chardev socket,id=shell,path=<shell>`,
/// `-device virtio-serial`, `-device virtconsole,chardev=shell`,
/// `-chardev socket,id=shell-port,path=<shell_port>`,
/// `-device virtserialport,chardev=shell-port,name=`[`BACKDOOR_PORT_NAME`],
/// `-qmp unix:<qmp>,server=on,wait=off`,
/// `-no-reboot` unless `allow_reboot`, then `extra_qemu_opts`.
///
/// A script gets them as arguments (it passes `"$@"` to QEMU) and `TMPDIR`, `SHARED_DIR` and
/// `USE_TMPDIR=1` in its environment; `QEMU_OPTS`, `QEMU_NET_OPTS` and `QEMU_KERNEL_PARAMS` are inherited
/// untouched. A builtin machine gets `-name`, `-m`, its kernel, disks, an RNG and user-mode networking
/// first. The working directory is the state directory either way.
pub fn launch_plan(
    name: &str,
    cmd: &StartCommand,
    paths: &MachinePaths,
    opts: &LaunchOptions,
) -> LaunchPlan {
    let common = common_args(paths, opts);
    match cmd {
        StartCommand::Script(script) => LaunchPlan {
            program: script.clone(),
            kind: ProgramKind::StartScript,
            args: common,
            env: vec![
                ("TMPDIR".into(), paths.state_dir.clone().into_os_string()),
                (
                    "SHARED_DIR".into(),
                    paths.shared_dir.clone().into_os_string(),
                ),
                ("USE_TMPDIR".into(), "1".into()),
            ],
            cwd: paths.state_dir.clone(),
        },
        StartCommand::Builtin(vm) => {
            let mut args = builtin_args(name, vm);
            args.extend(common);
            LaunchPlan {
                program: vm
                    .qemu_binary
                    .clone()
                    .unwrap_or_else(|| DEFAULT_QEMU_BINARY.into()),
                kind: ProgramKind::Qemu,
                args,
                env: Vec::new(),
                cwd: paths.state_dir.clone(),
            }
        }
    }
}

fn builtin_args(name: &str, vm: &BuiltinVm) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-name".into(),
        // `guest=` keeps a name containing '=' from being read as an option key.
        concat(&["guest=".as_ref(), &escape_commas(name.as_ref())]),
        "-m".into(),
        vm.memory_mb.unwrap_or(DEFAULT_MEMORY_MB).to_string().into(),
    ];
    // -kernel, -initrd, -append and -cdrom take their argument verbatim (no option parsing), so no escaping.
    if let Some(kernel) = &vm.kernel {
        args.push("-kernel".into());
        args.push(kernel.clone().into_os_string());
    }
    if let Some(initrd) = &vm.initrd {
        args.push("-initrd".into());
        args.push(initrd.clone().into_os_string());
    }
    if let Some(append) = &vm.append {
        args.push("-append".into());
        args.push(append.into());
    }
    if let Some(hda) = &vm.hda {
        let iface = vm.hda_interface.as_deref().unwrap_or(DEFAULT_HDA_INTERFACE);
        let is_qcow2 = hda
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("qcow2"));
        let format = if is_qcow2 { "qcow2" } else { "raw" };
        args.push("-drive".into());
        args.push(concat(&[
            "file=".as_ref(),
            &escape_commas(hda.as_os_str()),
            format!(",if={iface},format={format}").as_ref(),
        ]));
    }
    if let Some(cdrom) = &vm.cdrom {
        args.push("-cdrom".into());
        args.push(cdrom.clone().into_os_string());
    }
    args.extend(["-device", "virtio-rng-pci", "-netdev"].map(OsString::from));
    let mut netdev = String::from("user,id=user.0");
    // A leading comma would otherwise become ",," — QEMU's escaped comma — and swallow the first option.
    if let Some(net) = vm
        .net_opts
        .as_deref()
        .map(|n| n.trim_start_matches(','))
        .filter(|n| !n.is_empty())
    {
        netdev.push(',');
        netdev.push_str(net);
    }
    args.push(netdev.into());
    args.extend(["-device", "virtio-net-pci,netdev=user.0"].map(OsString::from));
    args.extend(vm.qemu_flags.iter().map(OsString::from));
    args
}

fn common_args(paths: &MachinePaths, opts: &LaunchOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    // `-machine accel=` rather than `-accel`: NixOS start scripts already pass `-machine accel=kvm:tcg`,
    // QEMU refuses `-accel` next to it, and a later `-machine accel=` overrides the earlier one.
    args.push("-machine".into());
    args.push(format!("accel={}", opts.accel).into());
    args.extend(["-display", "none", "-serial", "stdio", "-monitor"].map(OsString::from));
    args.push(concat(&[
        "unix:".as_ref(),
        &escape_commas(paths.monitor.as_os_str()),
    ]));
    args.push("-chardev".into());
    args.push(concat(&[
        "socket,id=shell,path=".as_ref(),
        &escape_commas(paths.shell.as_os_str()),
    ]));
    args.extend(
        [
            "-device",
            "virtio-serial",
            "-device",
            "virtconsole,chardev=shell",
            "-chardev",
        ]
        .map(OsString::from),
    );
    // QEMU drops console data when the host reads too slowly (virtio-console.c: consoles are never
    // throttled), so guests that know it use a plain port, which is flow-controlled.
    args.push(concat(&[
        "socket,id=shell-port,path=".as_ref(),
        &escape_commas(paths.shell_port.as_os_str()),
    ]));
    args.push("-device".into());
    args.push(format!("virtserialport,chardev=shell-port,name={BACKDOOR_PORT_NAME}").into());
    args.push("-qmp".into());
    args.push(concat(&[
        "unix:".as_ref(),
        &escape_commas(paths.qmp.as_os_str()),
        ",server=on,wait=off".as_ref(),
    ]));
    if !opts.allow_reboot {
        args.push("-no-reboot".into());
    }
    args.extend(opts.extra_qemu_opts.iter().map(OsString::from));
    args
}

/// QEMU option values end at a comma; a literal comma is written twice.
fn escape_commas(s: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(s.len());
    for &b in s.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn concat(parts: &[&OsStr]) -> OsString {
    let mut out = OsString::new();
    for part in parts {
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> MachinePaths {
        MachinePaths::new(
            "/tmp/vmtd-1/vm-state-foo".into(),
            "/tmp/vmtd-1/shared-xchg".into(),
        )
    }

    fn strs(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn machine_paths_are_inside_the_state_dir() {
        let p = paths();
        assert_eq!(p.monitor, Path::new("/tmp/vmtd-1/vm-state-foo/monitor"));
        assert_eq!(p.shell, Path::new("/tmp/vmtd-1/vm-state-foo/shell"));
        assert_eq!(p.qmp, Path::new("/tmp/vmtd-1/vm-state-foo/qmp"));
        assert_eq!(p.shared_dir, Path::new("/tmp/vmtd-1/shared-xchg"));
        p.check_socket_paths().unwrap();
    }

    #[test]
    fn long_socket_paths_are_refused() {
        let deep = PathBuf::from(format!("/tmp/{}", "d".repeat(100)));
        let err = MachinePaths::new(deep, "/x".into())
            .check_socket_paths()
            .unwrap_err();
        assert!(
            matches!(err, Error::SocketPathTooLong { len: 113, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("/monitor is 113 bytes long"),
            "{err}"
        );
    }

    #[test]
    fn golden_script_plan() {
        let cmd = StartCommand::Script("/nix/store/abc-nixos-vm/bin/run-foo-vm".into());
        let plan = launch_plan("foo", &cmd, &paths(), &LaunchOptions::new(Accel::Tcg));
        assert_eq!(
            plan.program,
            Path::new("/nix/store/abc-nixos-vm/bin/run-foo-vm")
        );
        assert_eq!(plan.kind, ProgramKind::StartScript);
        assert_eq!(
            strs(&plan.args),
            [
                "-machine",
                "accel=tcg",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                "unix:/tmp/vmtd-1/vm-state-foo/monitor",
                "-chardev",
                "socket,id=shell,path=/tmp/vmtd-1/vm-state-foo/shell",
                "-device",
                "virtio-serial",
                "-device",
                "virtconsole,chardev=shell",
                "-chardev",
                "socket,id=shell-port,path=/tmp/vmtd-1/vm-state-foo/shell-port",
                "-device",
                "virtserialport,chardev=shell-port,name=org.vmtd.backdoor",
                "-qmp",
                "unix:/tmp/vmtd-1/vm-state-foo/qmp,server=on,wait=off",
                "-no-reboot",
            ]
        );
        let env: Vec<(&str, &str)> = plan
            .env
            .iter()
            .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            env,
            [
                ("TMPDIR", "/tmp/vmtd-1/vm-state-foo"),
                ("SHARED_DIR", "/tmp/vmtd-1/shared-xchg"),
                ("USE_TMPDIR", "1"),
            ]
        );
        assert_eq!(plan.cwd, Path::new("/tmp/vmtd-1/vm-state-foo"));
    }

    #[test]
    fn golden_script_plan_with_reboot_kvm_and_extra_options() {
        let cmd = StartCommand::Script("run-foo-vm".into());
        let opts = LaunchOptions {
            accel: Accel::Kvm,
            allow_reboot: true,
            extra_qemu_opts: vec!["-incoming".into(), "defer".into()],
        };
        let plan = launch_plan("foo", &cmd, &paths(), &opts);
        let args = strs(&plan.args);
        assert_eq!(args[..2], ["-machine", "accel=kvm"]);
        assert!(!args.contains(&"-no-reboot"));
        assert_eq!(
            args[args.len() - 3..],
            [
                "unix:/tmp/vmtd-1/vm-state-foo/qmp,server=on,wait=off",
                "-incoming",
                "defer"
            ]
        );
    }

    #[test]
    fn golden_builtin_plan_full() {
        let vm = BuiltinVm {
            qemu_binary: Some("/usr/bin/qemu-system-x86_64".into()),
            kernel: Some("/boot/vmlinuz".into()),
            initrd: Some("/boot/initrd.img".into()),
            append: Some("console=ttyS0 root=/dev/vda".into()),
            hda: Some("/images/disk.qcow2".into()),
            hda_interface: Some("ide".into()),
            cdrom: Some("/images/seed.iso".into()),
            memory_mb: Some(1024),
            qemu_flags: vec!["-smp".into(), "2".into()],
            net_opts: Some("hostfwd=tcp::2222-:22".into()),
        };
        let opts = LaunchOptions {
            accel: Accel::Tcg,
            allow_reboot: false,
            extra_qemu_opts: vec!["-S".into()],
        };
        let plan = launch_plan("web", &StartCommand::Builtin(vm), &paths(), &opts);
        assert_eq!(plan.program, Path::new("/usr/bin/qemu-system-x86_64"));
        assert_eq!(plan.kind, ProgramKind::Qemu);
        assert_eq!(
            strs(&plan.args),
            [
                "-name",
                "guest=web",
                "-m",
                "1024",
                "-kernel",
                "/boot/vmlinuz",
                "-initrd",
                "/boot/initrd.img",
                "-append",
                "console=ttyS0 root=/dev/vda",
                "-drive",
                "file=/images/disk.qcow2,if=ide,format=qcow2",
                "-cdrom",
                "/images/seed.iso",
                "-device",
                "virtio-rng-pci",
                "-netdev",
                "user,id=user.0,hostfwd=tcp::2222-:22",
                "-device",
                "virtio-net-pci,netdev=user.0",
                "-smp",
                "2",
                "-machine",
                "accel=tcg",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                "unix:/tmp/vmtd-1/vm-state-foo/monitor",
                "-chardev",
                "socket,id=shell,path=/tmp/vmtd-1/vm-state-foo/shell",
                "-device",
                "virtio-serial",
                "-device",
                "virtconsole,chardev=shell",
                "-chardev",
                "socket,id=shell-port,path=/tmp/vmtd-1/vm-state-foo/shell-port",
                "-device",
                "virtserialport,chardev=shell-port,name=org.vmtd.backdoor",
                "-qmp",
                "unix:/tmp/vmtd-1/vm-state-foo/qmp,server=on,wait=off",
                "-no-reboot",
                "-S",
            ]
        );
        assert!(plan.env.is_empty());
        assert_eq!(plan.cwd, Path::new("/tmp/vmtd-1/vm-state-foo"));
    }

    #[test]
    fn golden_builtin_plan_defaults() {
        let plan = launch_plan(
            "a",
            &StartCommand::Builtin(BuiltinVm::default()),
            &paths(),
            &LaunchOptions::new(Accel::Tcg),
        );
        assert_eq!(plan.program, Path::new("qemu-system-x86_64"));
        assert_eq!(
            strs(&plan.args[..10]),
            [
                "-name",
                "guest=a",
                "-m",
                "512",
                "-device",
                "virtio-rng-pci",
                "-netdev",
                "user,id=user.0",
                "-device",
                "virtio-net-pci,netdev=user.0",
            ]
        );
        assert_eq!(strs(&plan.args[10..12]), ["-machine", "accel=tcg"]);
    }

    #[test]
    fn raw_disks_default_interface_and_commas_are_escaped() {
        let vm = BuiltinVm {
            hda: Some("/img/a,b.img".into()),
            net_opts: Some(",hostfwd=tcp::80-:80".into()),
            ..BuiltinVm::default()
        };
        let p = MachinePaths::new("/t/x,y".into(), "/t/s".into());
        let plan = launch_plan(
            "n,1",
            &StartCommand::Builtin(vm),
            &p,
            &LaunchOptions::new(Accel::Tcg),
        );
        let args = strs(&plan.args);
        assert!(args.contains(&"guest=n,,1"), "{args:?}");
        assert!(
            args.contains(&"file=/img/a,,b.img,if=virtio,format=raw"),
            "{args:?}"
        );
        assert!(
            args.contains(&"user,id=user.0,hostfwd=tcp::80-:80"),
            "{args:?}"
        );
        assert!(args.contains(&"unix:/t/x,,y/monitor"), "{args:?}");
        assert!(
            args.contains(&"socket,id=shell,path=/t/x,,y/shell"),
            "{args:?}"
        );
        assert!(
            args.contains(&"unix:/t/x,,y/qmp,server=on,wait=off"),
            "{args:?}"
        );
    }

    #[test]
    fn non_utf8_paths_survive() {
        let state = PathBuf::from(OsString::from_vec(b"/t/\xff".to_vec()));
        let plan = launch_plan(
            "a",
            &StartCommand::Script("run-a-vm".into()),
            &MachinePaths::new(state, "/s".into()),
            &LaunchOptions::new(Accel::Tcg),
        );
        assert_eq!(plan.args[7].as_bytes(), b"unix:/t/\xff/monitor");
    }

    #[test]
    fn machine_names_from_script_file_names() {
        let ok = |p: &str| machine_name_from_script(Path::new(p)).unwrap();
        assert_eq!(ok("run-foo-vm"), "foo");
        assert_eq!(
            ok("/nix/store/x-nixos-vm/bin/run-my-machine-vm"),
            "my-machine"
        );
        assert_eq!(ok("./run-a-vm-vm"), "a-vm");
        assert_eq!(ok("run-run-vm"), "run");
        for bad in [
            "foo",
            "run-vm",
            "run--vm",
            "run-foo",
            "foo-vm",
            "/",
            "",
            "..",
            "run-foo-vm.sh",
            "xrun-foo-vm",
        ] {
            let err = machine_name_from_script(Path::new(bad)).unwrap_err();
            assert!(matches!(err, Error::ScriptName { .. }), "{bad}: {err:?}");
        }
        let err = machine_name_from_script(Path::new("/x/run-vm")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "start script file name /x/run-vm does not match run-<name>-vm"
        );
    }

    #[test]
    fn machine_name_comes_from_the_symlink_not_its_target() {
        let root = crate::StateRoot::create().unwrap();
        let target = root.path().join("run-y-vm");
        std::fs::write(&target, "#!/bin/sh\n").unwrap();
        let link = root.path().join("run-x-vm");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(machine_name_from_script(&link).unwrap(), "x");
        // A folder named like a script does not count either.
        assert!(machine_name_from_script(&root.path().join("run-z-vm/start")).is_err());
    }
}
