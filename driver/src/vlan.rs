//! Virtual networks: one `vde_switch` per VLAN number; each machine plugs into a switch of its own,
//! joined to the VLAN's switch by a `wirefilter` (which can delay and drop its packets) at the port
//! numbered like the machine (which can be moved to another segment for a partition).
//!
//! QEMU's multicast socket netdev is not used: anyone on the host could join it. Every socket lives in
//! the run's private state directory.

use crate::Error;
use qemu_proc::{Child, LaunchPlan, ProgramKind};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a switch or wire filter gets to create its sockets.
const SWITCH_READY: Duration = Duration::from_secs(10);
/// How long a management command may take (a local process answering at once).
const MGMT_REPLY: Duration = Duration::from_secs(5);
/// Ports of a VLAN's switch: port `n` is machine number `n`'s link.
const SWITCH_PORTS: &str = "300";

/// A running VLAN switch, as [`crate::Driver::vlans`] lists it (NixOS's `VLan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanInfo {
    /// The VLAN's number (1..=255).
    pub number: u32,
    /// The switch's socket directory (`vde<n>.ctl` in the run's state directory).
    pub socket_dir: PathBuf,
    /// The `vde_switch` process's id.
    pub pid: i32,
}

/// A VLAN's switch. Dropping it stops the switch.
pub(crate) struct Switch {
    pub(crate) number: u32,
    pub(crate) socket_dir: PathBuf,
    /// The switch's management socket: moves ports between segments for partitions.
    mgmt: Mgmt,
    /// Segments (VDE VLAN ids) created so far; 0, where every port starts, always exists.
    segments: Vec<u32>,
    _process: VdeProcess,
}

/// A machine's link to a VLAN: QEMU plugs into a switch of its own, joined to the VLAN's switch by a
/// `wirefilter`, which delays or drops what the machine sends when asked. Dropping it stops both.
pub(crate) struct Link {
    pub(crate) vlan: u32,
    /// The machine's index in the driver.
    pub(crate) machine: usize,
    /// The port of the VLAN's switch the link takes (the machine's number).
    pub(crate) port: usize,
    /// Where QEMU plugs in.
    pub(crate) socket_dir: PathBuf,
    filter: Mgmt,
    /// Declared before `_switch`: the filter leaves the machine's switch before it stops.
    _filter: VdeProcess,
    _switch: VdeProcess,
}

/// A VDE program: its process, and our end of its stdin (VDE programs exit when their management
/// console reaches EOF).
struct VdeProcess {
    /// Declared before `_console` so the process is stopped first.
    _child: Child,
    _console: UnixStream,
}

impl VdeProcess {
    /// Starts `program` in `root`, logging to `log`, and waits until `ready` (a socket it creates)
    /// accepts a connection; on failure the error shows what it said.
    fn start(
        vlan: u32,
        program: &str,
        args: &[&OsStr],
        root: &Path,
        log: &str,
        ready: &Path,
    ) -> Result<VdeProcess, Error> {
        let log_path = root.join(log);
        let io_err = |what: &str, source| Error::Io {
            what: format!("vlan {vlan}: {program}: {what}"),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(|e| io_err("socketpair", e))?;
        let log = std::fs::File::create(&log_path).map_err(|e| io_err("log file", e))?;
        let null = std::fs::File::create("/dev/null").map_err(|e| io_err("/dev/null", e))?;
        let plan = LaunchPlan {
            program: program.into(),
            kind: ProgramKind::Switch,
            args: args.iter().map(|a| a.to_os_string()).collect(),
            env: Vec::new(),
            cwd: root.to_path_buf(),
        };
        let mut child = Child::spawn(
            &plan,
            OwnedFd::from(theirs),
            OwnedFd::from(null),
            OwnedFd::from(log),
        )
        .map_err(|source| Error::Vlan {
            number: vlan,
            what: format!("cannot start {program} (Debian package vde2)"),
            source: Some(source),
        })?;
        // Readiness is the socket accepting a connection; the program forks nothing that could tell
        // us. The file alone is not enough: it appears at bind(), a moment before listen(), and a
        // client in between is refused (seen in CI: a wirefilter refused by the machine's switch).
        let deadline = Instant::now() + SWITCH_READY;
        while UnixStream::connect(ready).is_err() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(Error::Vlan {
                    number: vlan,
                    what: match exited {
                        Some(status) => format!("{program} exited ({status}): {}", said.trim()),
                        None => format!("{program} did not listen on its socket: {}", said.trim()),
                    },
                    source: None,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(VdeProcess {
            _child: child,
            _console: ours,
        })
    }
}

impl Switch {
    /// Starts the switch of VLAN `number` with its control directory under `root`.
    pub(crate) fn start(number: u32, root: &Path) -> Result<Switch, Error> {
        let socket_dir = root.join(format!("vde{number}.ctl"));
        let mgmt_path = root.join(format!("vde{number}.mgmt"));
        let args = [
            "-s".as_ref(),
            socket_dir.as_os_str(),
            "--dirmode".as_ref(),
            "0700".as_ref(),
            "-M".as_ref(),
            mgmt_path.as_os_str(),
            "--mgmtmode".as_ref(),
            "0600".as_ref(),
            "-n".as_ref(),
            SWITCH_PORTS.as_ref(),
        ];
        let process = VdeProcess::start(
            number,
            "vde_switch",
            &args,
            root,
            &format!("vde{number}.log"),
            &mgmt_path,
        )?;
        let mgmt = Mgmt::connect(&mgmt_path).map_err(|e| mgmt_error(number, "switch", e))?;
        log::info!("vlan {number}: switch ready ({})", socket_dir.display());
        Ok(Switch {
            number,
            socket_dir,
            mgmt,
            segments: vec![0],
            _process: process,
        })
    }

    /// What [`crate::Driver::vlans`] tells of this switch.
    pub(crate) fn info(&self) -> VlanInfo {
        VlanInfo {
            number: self.number,
            socket_dir: self.socket_dir.clone(),
            pid: self._process._child.pid(),
        }
    }

    /// Puts `port` into `segment`: ports hear only ports of the same segment.
    pub(crate) fn set_segment(&mut self, port: usize, segment: u32) -> Result<(), Error> {
        if !self.segments.contains(&segment) {
            self.command(&format!("vlan/create {segment}"))?;
            self.segments.push(segment);
        }
        self.command(&format!("port/setvlan {port} {segment}"))
    }

    fn command(&mut self, cmd: &str) -> Result<(), Error> {
        let number = self.number;
        self.mgmt
            .command(cmd)
            .map(drop)
            .map_err(|e| mgmt_error(number, "switch", format!("`{cmd}`: {e}")))
    }
}

impl Link {
    /// Starts machine `machine` (number `port`)'s switch and the filter joining it to `switch`.
    pub(crate) fn start(
        switch: &Switch,
        machine: usize,
        port: usize,
        root: &Path,
    ) -> Result<Link, Error> {
        let vlan = switch.number;
        let base = format!("vde{vlan}-m{port}");
        let socket_dir = root.join(format!("{base}.ctl"));
        let switch_args = [
            "-s".as_ref(),
            socket_dir.as_os_str(),
            "--dirmode".as_ref(),
            "0700".as_ref(),
        ];
        let own_switch = VdeProcess::start(
            vlan,
            "vde_switch",
            &switch_args,
            root,
            &format!("{base}.log"),
            &socket_dir.join("ctl"),
        )?;
        let filter_mgmt = root.join(format!("{base}.filter"));
        // Left is the machine's side, right the VLAN's switch at the machine's port.
        let mut wire = socket_dir.clone().into_os_string();
        wire.push(":");
        wire.push(&switch.socket_dir);
        wire.push(format!("[{port}]"));
        let filter_args = [
            "-v".as_ref(),
            wire.as_os_str(),
            "-M".as_ref(),
            filter_mgmt.as_os_str(),
            "--mgmtmode".as_ref(),
            "0600".as_ref(),
        ];
        let filter_process = VdeProcess::start(
            vlan,
            "wirefilter",
            &filter_args,
            root,
            &format!("{base}.filter.log"),
            &filter_mgmt,
        )?;
        let filter = Mgmt::connect(&filter_mgmt).map_err(|e| mgmt_error(vlan, "wirefilter", e))?;
        Ok(Link {
            vlan,
            machine,
            port,
            socket_dir,
            filter,
            _filter: filter_process,
            _switch: own_switch,
        })
    }

    /// Delays (`delay` ± `jitter`, uniformly) and drops (`loss_pct` %) what the machine sends.
    pub(crate) fn set_quality(
        &mut self,
        delay: Duration,
        jitter: Duration,
        loss_pct: f64,
    ) -> Result<(), Error> {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        for cmd in [
            format!("delay LR{}+{}U", ms(delay), ms(jitter)),
            format!("loss LR{loss_pct}"),
        ] {
            self.filter
                .command(&cmd)
                .map_err(|e| mgmt_error(self.vlan, "wirefilter", format!("`{cmd}`: {e}")))?;
        }
        Ok(())
    }
}

fn mgmt_error(vlan: u32, program: &str, what: String) -> Error {
    Error::Vlan {
        number: vlan,
        what: format!("{program} management: {what}"),
        source: None,
    }
}

/// A client of the line-based management console that vde_switch and wirefilter share: a command per
/// line; the reply is an optional data block (`0000 DATA END WITH '.'` … `.`), a status line
/// (`1000 Success`, or an error code and text) and a prompt ending in `$ `.
struct Mgmt {
    stream: UnixStream,
}

impl Mgmt {
    fn connect(path: &Path) -> Result<Mgmt, String> {
        // VdeProcess::start has seen the socket listening.
        let stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(MGMT_REPLY))
            .map_err(|e| e.to_string())?;
        let mut mgmt = Mgmt { stream };
        // The banner ends with the first prompt.
        mgmt.read_until(|buf| buf.ends_with(b"$ "))?;
        Ok(mgmt)
    }

    /// Sends `cmd`; its data block on success, the status line on failure.
    fn command(&mut self, cmd: &str) -> Result<String, String> {
        use std::io::Write;
        self.stream
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let reply = self.read_until(|buf| parse_reply(buf).is_some())?;
        parse_reply(&reply).expect("read_until stops at a whole reply")
    }

    fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, String> {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !done(&buf) {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the management socket closed".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("no reply: {e}")),
            }
        }
        Ok(buf)
    }
}

/// A whole reply in `buf`: the data block (possibly empty) for status 1000, else the status line.
fn parse_reply(buf: &[u8]) -> Option<Result<String, String>> {
    let text = String::from_utf8_lossy(buf);
    if !text.ends_with("$ ") {
        return None;
    }
    let status = text.lines().find(|l| {
        l.len() >= 5 && l.as_bytes()[..4].iter().all(u8::is_ascii_digit) && !l.starts_with("0000")
    })?;
    if !status.starts_with("1000 ") {
        return Some(Err(status.to_string()));
    }
    let data = match text.split_once("0000 DATA END WITH '.'\n") {
        Some((_, rest)) => rest.split("\n.\n").next().unwrap_or("").to_string(),
        None => String::new(),
    };
    Some(Ok(data))
}

/// The MAC of machine number `machine` (1-based) on `vlan`: `52:54:00:12:<vlan>:<machine>`, as NixOS
/// assigns them; the bundled guests derive `192.168.<vlan>.<machine>` from it.
pub(crate) fn mac(vlan: u32, machine: usize) -> String {
    format!("52:54:00:12:{:02x}:{:02x}", vlan & 0xff, machine & 0xff)
}

/// QEMU options attaching a machine to a switch; the NIC's id is what `block` switches off.
pub(crate) fn qemu_opts(vlan: u32, machine: usize, socket_dir: &Path) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "vde,id=vlan{vlan},sock={}",
            socket_dir.display().to_string().replace(',', ",,")
        ),
        "-device".into(),
        format!(
            "virtio-net-pci,netdev=vlan{vlan},id={},mac={}",
            nic_id(vlan),
            mac(vlan, machine)
        ),
    ]
}

/// Whether a start script attaches NICs to the switches itself: it names `QEMU_VDE_SOCKET_`, as
/// every NixOS-built `run-<name>-vm` does (`-netdev vde,id=vlan<n>,sock=$QEMU_VDE_SOCKET_<n>`). The
/// driver then adds no NIC of its own to such a machine (QEMU would refuse a second `vlan<n>`).
/// Scripts larger than 1 MiB are read no further than that.
pub(crate) fn attaches_own_nics(start: &qemu_proc::StartCommand) -> bool {
    use std::io::Read;
    let qemu_proc::StartCommand::Script(path) = start else {
        return false;
    };
    let mut text = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut text));
    const NAME: &[u8] = b"QEMU_VDE_SOCKET_";
    read.is_ok() && text.windows(NAME.len()).any(|w| w == NAME)
}

/// The QEMU id of a machine's NIC on `vlan`.
pub(crate) fn nic_id(vlan: u32) -> String {
    format!("nic-vlan{vlan}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_replies_parse_whole_or_not_at_all() {
        assert_eq!(
            parse_reply(b"1000 Success\n\nvde$ "),
            Some(Ok(String::new()))
        );
        assert_eq!(parse_reply(b"1000 Success\n"), None, "no prompt yet");
        assert_eq!(
            parse_reply(b"1006 No such device or address\n\nvde$ "),
            Some(Err("1006 No such device or address".into()))
        );
        let data = b"0000 DATA END WITH '.'\nLoss L->R 10+0U\n.\n1000 Success\n\nVDEwf$ ";
        assert_eq!(parse_reply(data), Some(Ok("Loss L->R 10+0U".into())));
        assert_eq!(parse_reply(&data[..30]), None);
        assert_eq!(parse_reply(b"garbage $ "), None);
    }

    #[test]
    fn a_socket_is_ready_when_it_listens_not_when_it_is_bound() {
        let root = std::env::temp_dir().join(format!("vmtd-vlan-ready-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let socket = root.join("late.sock");
        // Binds at once and listens 300 ms later: the window vde_switch has between the two.
        let script = format!(
            "import socket, time\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.bind({:?})\n\
             time.sleep(0.3)\n\
             s.listen()\n\
             time.sleep(30)\n",
            socket.to_str().unwrap()
        );
        let args = ["-c".as_ref(), script.as_ref()];
        let process = VdeProcess::start(9, "python3", &args, &root, "late.log", &socket);
        let connected = match &process {
            Ok(_) => Ok(UnixStream::connect(&socket)),
            Err(e) => Err(e.to_string()),
        };
        drop(process);
        std::fs::remove_dir_all(&root).unwrap();
        connected
            .expect("start()")
            .expect("a connection right after start() returned");
    }

    #[test]
    fn scripts_that_name_the_switch_sockets_attach_their_own_nics() {
        let dir = std::env::temp_dir().join(format!("vmtd-own-nics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            qemu_proc::StartCommand::Script(path)
        };
        let nixos = script(
            "run-a-vm",
            "exec qemu -device virtio-net-pci,netdev=vlan1,mac=52:54:00:12:01:01 \\\n\
             -netdev vde,id=vlan1,sock=\"$QEMU_VDE_SOCKET_1\" $QEMU_OPTS\n",
        );
        assert!(attaches_own_nics(&nixos));
        assert!(!attaches_own_nics(&script(
            "run-b-vm",
            "exec qemu $QEMU_OPTS\n"
        )));
        assert!(!attaches_own_nics(&qemu_proc::StartCommand::Script(
            dir.join("missing")
        )));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn macs_and_options() {
        assert_eq!(mac(1, 2), "52:54:00:12:01:02");
        assert_eq!(mac(10, 255), "52:54:00:12:0a:ff");
        assert_eq!(
            qemu_opts(2, 3, Path::new("/s/vde2.ctl")),
            vec![
                "-netdev",
                "vde,id=vlan2,sock=/s/vde2.ctl",
                "-device",
                "virtio-net-pci,netdev=vlan2,id=nic-vlan2,mac=52:54:00:12:02:03"
            ]
        );
    }
}
