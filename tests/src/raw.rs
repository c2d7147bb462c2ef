//! A guest started without the driver, its backdoor shell on a socket held by the caller: the
//! reference the benchmarks measure the driver against.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the guest's backdoor prints once its shell reads commands.
const BANNER: &[u8] = b"Spawning backdoor root shell...";

/// A guest shell read and written over a plain socket, with no protocol but the shell's own.
pub struct RawShell {
    /// The shell's channel.
    pub sock: UnixStream,
}

/// The tiny guest started by this program, its backdoor shell on a socket we hold.
pub struct RawGuest {
    child: Child,
    /// The backdoor shell.
    pub shell: RawShell,
    dir: PathBuf,
    /// From spawning the start script to the banner.
    pub booted: Duration,
}

impl RawGuest {
    /// Starts `script` (a bundled guest's start script) as instance `n` and waits for its banner.
    pub fn start(script: &Path, n: usize) -> RawGuest {
        Self::start_on(script, n, false)
    }

    /// [`start`](Self::start), with the backdoor on `/dev/hvc0` when `hvc0` (as NixOS's backdoor
    /// service runs it: the shell reads the console device as its script) instead of the port.
    pub fn start_on(script: &Path, n: usize, hvc0: bool) -> RawGuest {
        let dir = std::env::temp_dir().join(format!("vmtd-raw-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shell");
        // The guest's backdoor takes the org.vmtd.backdoor port when there is one, as with the driver.
        let socket = format!("socket,path={},server=on,wait=off", path.display());
        let (console, port) = match hvc0 {
            true => (socket, "null".to_string()),
            false => ("null".to_string(), socket),
        };
        let opts = format!(
            "-machine accel={} -display none -serial null -monitor none \
             -chardev {console},id=con -device virtio-serial -device virtconsole,chardev=con \
             -chardev {port},id=raw -device virtserialport,chardev=raw,name=org.vmtd.backdoor",
            accel(),
        );
        let t0 = Instant::now();
        let mut cmd = Command::new(script);
        if hvc0 {
            cmd.env("QEMU_KERNEL_PARAMS", "vmtd.backdoor=hvc0");
        }
        cmd.env("QEMU_OPTS", opts)
            .env("TMPDIR", &dir)
            .env("USE_TMPDIR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // Killed with this program, however it ends (a benchmark stopped with Ctrl-C, say).
        qemu_proc::die_with_parent(&mut cmd, nix::libc::SIGKILL);
        let child = cmd.spawn().unwrap();
        let sock = loop {
            if let Ok(s) = UnixStream::connect(&path) {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "no raw socket");
            std::thread::sleep(Duration::from_millis(1));
        };
        let mut guest = RawGuest {
            child,
            shell: RawShell { sock },
            dir,
            booted: Duration::ZERO,
        };
        guest.shell.read_until(BANNER, |_| {});
        guest.booted = t0.elapsed();
        guest
    }
}

impl RawShell {
    /// Reads until `end` was seen; everything read before goes to `each` (bytes).
    pub fn read_until(&mut self, end: &[u8], mut each: impl FnMut(usize)) {
        let mut buf = vec![0u8; 65536];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = self.sock.read(&mut buf).unwrap();
            assert!(n > 0, "raw guest closed its shell");
            each(n);
            tail.extend_from_slice(&buf[..n]);
            if tail.windows(end.len()).any(|w| w == end) {
                return;
            }
            let keep = tail.len().saturating_sub(end.len());
            tail.drain(..keep);
        }
    }

    /// Writes `( cmd ) </dev/null; echo tag $?` and waits for `tag 0`: the least a command costs.
    pub fn round_trip(&mut self, cmd: &str) -> Duration {
        let t0 = Instant::now();
        self.sock
            .write_all(format!("( {cmd} ) </dev/null; echo tag $?\n").as_bytes())
            .unwrap();
        self.read_until(b"tag 0\n", |_| {});
        t0.elapsed()
    }
}

impl Drop for RawGuest {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The accelerator this machine offers, as `-machine accel=` takes it.
pub fn accel() -> &'static str {
    match qemu_proc::probe_accel().unwrap().accel {
        qemu_proc::Accel::Kvm => "kvm",
        _ => "tcg",
    }
}

/// Starts a machine of `script` under `driver` with a second virtio port beside its backdoor,
/// where a plain shell of the same guest answers over a socket: a reference that shares the
/// driver's guest, QEMU and kind of channel, so neither side gets a quieter guest than the other.
/// The start script passes `QEMU_OPTS` on to QEMU.
pub fn machine_with_reference_shell(
    driver: &driver::Driver,
    script: &Path,
) -> (driver::Machine, RawShell) {
    machine_with_reference(driver, script, "sh -s")
}

/// [`machine_with_reference_shell`] with `reference` as the reference shell (`bash --norc -s`: bash reading
/// its commands from the port as it reads them from `/dev/hvc0` as NixOS's backdoor).
pub fn machine_with_reference(
    driver: &driver::Driver,
    script: &Path,
    reference: &str,
) -> (driver::Machine, RawShell) {
    let path = std::env::temp_dir().join(format!("vmtd-ref-{}", std::process::id()));
    std::env::set_var(
        "QEMU_OPTS",
        format!(
            "-device virtio-serial,id=vmtdref -chardev socket,id=ref,path={},server=on,wait=off \
             -device virtserialport,bus=vmtdref.0,chardev=ref,name=org.vmtd.ref",
            path.display()
        ),
    );
    let vm = driver
        .add_machine(driver::StartCommand::Script(script.to_path_buf()))
        .unwrap();
    vm.succeed("true").unwrap();
    std::env::remove_var("QEMU_OPTS");
    let mut shell = RawShell {
        sock: UnixStream::connect(&path).unwrap(),
    };
    let _ = std::fs::remove_file(&path);
    // As the backdoor does it: the port opens once, so one read-write descriptor is the shell's
    // stdin and stdout.
    vm.succeed(format!(
        "for n in /sys/class/virtio-ports/*/name; do \
         [ \"$(cat \"$n\")\" = org.vmtd.ref ] && p=${{n%/name}}; done\n\
         setsid sh -c 'exec 0<>\"$1\" 1>&0 2>/dev/null; echo ref-ready; exec {reference}' \
         sh \"/dev/${{p##*/}}\" >/dev/null 2>&1 &",
    ))
    .unwrap();
    shell.read_until(b"ref-ready\n", |_| {});
    (vm, shell)
}
