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

/// The tiny guest started by this program, its backdoor shell on a socket we hold.
pub struct RawGuest {
    child: Child,
    /// The backdoor shell's channel.
    pub sock: UnixStream,
    dir: PathBuf,
    /// From spawning the start script to the banner.
    pub booted: Duration,
}

impl RawGuest {
    /// Starts `script` (a bundled guest's start script) as instance `n` and waits for its banner.
    pub fn start(script: &Path, n: usize) -> RawGuest {
        let dir = std::env::temp_dir().join(format!("vmtd-raw-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shell");
        // The guest's backdoor takes the org.vmtd.backdoor port when there is one, as with the driver.
        let opts = format!(
            "-machine accel={} -display none -serial null -monitor none \
             -chardev null,id=con -device virtio-serial -device virtconsole,chardev=con \
             -chardev socket,id=raw,path={},server=on,wait=off \
             -device virtserialport,chardev=raw,name=org.vmtd.backdoor",
            accel(),
            path.display()
        );
        let t0 = Instant::now();
        let mut cmd = Command::new(script);
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
            sock,
            dir,
            booted: Duration::ZERO,
        };
        guest.read_until(BANNER, |_| {});
        guest.booted = t0.elapsed();
        guest
    }

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
