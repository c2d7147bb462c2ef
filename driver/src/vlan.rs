//! Virtual networks: one `vde_switch` per VLAN number, machines attached with `-netdev vde`.
//!
//! QEMU's multicast socket netdev is not used: anyone on the host could join it. A switch's control
//! directory lives in the run's private state directory.

use crate::Error;
use qemu_proc::{Child, LaunchPlan, ProgramKind};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a switch gets to create its control socket.
const SWITCH_READY: Duration = Duration::from_secs(10);

/// A running switch. Dropping it stops the switch (its `Child` terminates the process group).
pub(crate) struct Switch {
    pub(crate) number: u32,
    pub(crate) socket_dir: PathBuf,
    /// The switch's process; declared before `_console` so it is stopped first.
    _child: Child,
    /// Our end of the switch's stdin: vde_switch exits when its management console reaches EOF.
    _console: UnixStream,
}

impl Switch {
    /// Starts the switch of VLAN `number` with its control directory under `root`.
    pub(crate) fn start(number: u32, root: &Path) -> Result<Switch, Error> {
        let socket_dir = root.join(format!("vde{number}.ctl"));
        let log_path = root.join(format!("vde{number}.log"));
        let io_err = |what: &str, source| Error::Io {
            what: format!("vlan {number}: {what}"),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(|e| io_err("socketpair", e))?;
        let log = std::fs::File::create(&log_path).map_err(|e| io_err("log file", e))?;
        let null = std::fs::File::create("/dev/null").map_err(|e| io_err("/dev/null", e))?;
        let plan = LaunchPlan {
            program: "vde_switch".into(),
            kind: ProgramKind::Switch,
            args: vec![
                "-s".into(),
                socket_dir.clone().into_os_string(),
                "--dirmode".into(),
                "0700".into(),
            ],
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
            number,
            what: "cannot start vde_switch (Debian package vde2)".into(),
            source: Some(source),
        })?;
        // Readiness is the control socket appearing; the switch forks nothing that could tell us.
        let deadline = Instant::now() + SWITCH_READY;
        while !socket_dir.join("ctl").exists() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(Error::Vlan {
                    number,
                    what: match exited {
                        Some(status) => format!("vde_switch exited ({status}): {}", said.trim()),
                        None => format!("vde_switch did not create its socket: {}", said.trim()),
                    },
                    source: None,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        log::info!("vlan {number}: switch ready ({})", socket_dir.display());
        Ok(Switch {
            number,
            socket_dir,
            _child: child,
            _console: ours,
        })
    }
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

/// The QEMU id of a machine's NIC on `vlan`.
pub(crate) fn nic_id(vlan: u32) -> String {
    format!("nic-vlan{vlan}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
