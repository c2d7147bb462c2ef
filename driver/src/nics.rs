//! A machine's NICs on the VLANs: attaching it, finding its NIC on a VLAN from QEMU itself
//! (`info network`: the NIC whose peer is the VLAN's VDE netdev), taking links down and up (NixOS's
//! `block`/`unblock`), and saying so when a machine whose start script sets up its own NICs ended up
//! on no VLAN.

use crate::machine::Machine;
use crate::Error;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long the monitor may take to list the NICs when the shell has connected.
const LIST_LIMIT: Duration = Duration::from_secs(10);

/// One NIC of `info network` and the netdev it is plugged into.
#[derive(Debug, PartialEq)]
struct Nic {
    /// The NIC's name, which `set_link` takes (`virtio-net-pci.1`, or its `id=`).
    name: String,
    /// The netdev's id (`vlan1` in NixOS-built and the driver's own NICs).
    peer: String,
    /// The netdev's type (`vde`, `user`, …).
    kind: String,
    /// The VDE socket it is connected to.
    sock: Option<String>,
}

/// The NICs HMP's `info network` lists, with their peers:
/// `virtio-net-pci.1: index=0,type=nic,…` then ` \ vlan1: index=0,type=vde,sock=/…,fd=8`.
fn parse_nics(info: &str) -> Vec<Nic> {
    let fields = |rest: &str| -> HashMap<String, String> {
        rest.split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    };
    let mut nics = Vec::new();
    let mut nic: Option<String> = None;
    for line in info.lines() {
        let line = line.trim_end();
        if let Some(peer) = line.trim_start().strip_prefix("\\ ") {
            let (Some(name), Some((id, rest))) = (nic.take(), peer.split_once(": ")) else {
                continue;
            };
            let f = fields(rest);
            nics.push(Nic {
                name,
                peer: id.to_string(),
                kind: f.get("type").cloned().unwrap_or_default(),
                sock: f.get("sock").cloned(),
            });
        } else if let Some((name, rest)) = line.split_once(": ") {
            let is_nic = fields(rest).get("type").is_some_and(|t| t == "nic");
            nic = is_nic.then(|| name.to_string());
        }
    }
    nics
}

/// The NIC on VLAN `vlan`: plugged into a VDE netdev whose socket is one of `sockets` (the
/// machine's link to the switch, or the switch itself), or, failing that, into NixOS's `vlan<n>`.
fn nic_on<'a>(nics: &'a [Nic], vlan: u32, sockets: &[PathBuf]) -> Option<&'a Nic> {
    let vde = |n: &&Nic| n.kind == "vde";
    nics.iter()
        .filter(vde)
        .find(|n| {
            n.sock.as_deref().is_some_and(|s| {
                sockets
                    .iter()
                    .any(|d| d.as_path() == std::path::Path::new(s))
            })
        })
        .or_else(|| {
            nics.iter()
                .filter(vde)
                .find(|n| n.peer == format!("vlan{vlan}"))
        })
}

/// Per machine, why it is on no VLAN although the run has some (said when its waits time out).
#[derive(Default)]
struct NoVlan(HashMap<usize, String>);

/// The hook run once a machine's shell connected: a machine whose start script sets up its own
/// NICs is checked to be on at least one of the run's VLANs; if not, a warning says which
/// variables its script left unused, and the failure context of its later errors repeats it.
pub(crate) fn on_connected(m: &Machine) -> Result<(), Error> {
    let (own, vlans) = {
        let core = m.core.borrow();
        let vm = &core.vms[m.i];
        (vm.own_nics, vm.vlans.clone())
    };
    if !own || vlans.is_empty() {
        return Ok(());
    }
    let found = match m.vlan_nics_within(LIST_LIMIT) {
        Ok(found) => found,
        Err(e) => {
            log::warn!("{}: cannot list its NICs: {e}", m.name);
            return Ok(());
        }
    };
    let on: Vec<String> = found
        .iter()
        .map(|(n, nic)| format!("VLAN {n} ({nic})"))
        .collect();
    log::debug!("{}: NICs on {}", m.name, on.join(", "));
    let mut core = m.core.borrow_mut();
    let notes = &mut core.ext.get::<NoVlan>().0;
    if found.is_empty() {
        let unused: Vec<String> = vlans
            .iter()
            .map(|n| format!("QEMU_VDE_SOCKET_{n}"))
            .collect();
        let note = format!(
            "machine {} is on no VLAN: its start script sets up NICs of its own (it names \
             QEMU_VDE_SOCKET_), but QEMU has no NIC on the run's VLANs; {} went unused",
            m.name,
            unused.join(", ")
        );
        log::warn!("{note}");
        notes.insert(m.i, note);
    } else {
        notes.remove(&m.i);
    }
    Ok(())
}

/// Why `m` is on no VLAN, if it is (see [`on_connected`]).
pub(crate) fn no_vlan_note(m: &Machine) -> Option<String> {
    m.core.borrow_mut().ext.get::<NoVlan>().0.get(&m.i).cloned()
}

impl Machine {
    /// Attaches the machine to VLANs before it starts: a NIC with MAC `52:54:00:12:<vlan>:<n>` per VLAN,
    /// where n is the machine's 1-based position in the driver (the bundled guests give it address
    /// `192.168.<vlan>.<n>`). Starts the switches it names.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.attach_vlans(&[1, 2])?;
    /// vm.start()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn attach_vlans(&self, vlans: &[u32]) -> Result<(), Error> {
        let mut core = self.core.borrow_mut();
        if core.io.vms[self.i].is_running() {
            return Err(Error::Vlan {
                number: vlans.first().copied().unwrap_or(0),
                what: format!(
                    "machine {} runs already; attach VLANs before it starts",
                    self.name
                ),
                source: None,
            });
        }
        for &n in vlans {
            core.ensure_link(n, self.i)?;
        }
        Ok(())
    }

    /// The address the bundled guests give this machine on `vlan`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let addr = vm.vlan_address(1); // "192.168.1.<n>"
    /// vm.succeed(&format!("ping -c 1 {addr}"))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn vlan_address(&self, vlan: u32) -> String {
        let number = self.core.borrow().vms[self.i].number;
        format!("192.168.{vlan}.{number}")
    }

    /// Takes the machine's VLAN links down (the guest sees its cables pulled), as NixOS's `block`.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.block()?;
    /// vm.fail("ping -c 1 -W 1 192.168.1.2")?;
    /// vm.unblock()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn block(&self) -> Result<(), Error> {
        self.set_links(false)
    }

    /// Brings the machine's VLAN links back up.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.block()?;
    /// vm.unblock()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn unblock(&self) -> Result<(), Error> {
        self.set_links(true)
    }

    /// The machine's NICs on the run's VLANs, as QEMU reports them: (VLAN, NIC name).
    fn vlan_nics_within(&self, limit: Duration) -> Result<Vec<(u32, String)>, Error> {
        let sockets: Vec<(u32, Vec<PathBuf>)> = {
            let core = self.core.borrow();
            core.switches
                .iter()
                .map(|s| {
                    let mut dirs = vec![s.socket_dir.clone()];
                    dirs.extend(core.link(s.number, self.i).map(|l| l.socket_dir.clone()));
                    (s.number, dirs)
                })
                .collect()
        };
        let nics = parse_nics(&self.monitor_within("info network", limit)?);
        Ok(sockets
            .iter()
            .filter_map(|(n, dirs)| nic_on(&nics, *n, dirs).map(|nic| (*n, nic.name.clone())))
            .collect())
    }

    /// Sets the link of every NIC the machine has on a VLAN (found from QEMU, so NICs of a
    /// NixOS-built start script count too).
    fn set_links(&self, up: bool) -> Result<(), Error> {
        let nics = self.vlan_nics_within(self.limit(None))?;
        if nics.is_empty() {
            let own = self.core.borrow().vms[self.i].own_nics;
            let why = if self.core.borrow().switches.is_empty() {
                "the run has no VLAN".to_string()
            } else if own {
                "its start script sets up NICs of its own, and none is on one of the run's VLANs"
                    .to_string()
            } else {
                "it is attached to no VLAN".to_string()
            };
            return Err(Error::Monitor {
                machine: self.name.clone(),
                reason: format!(
                    "no VLAN link to switch {}: {why}",
                    if up { "on" } else { "off" }
                ),
            });
        }
        let state = if up { "on" } else { "off" };
        for (_, nic) in nics {
            self.monitor_expect_silence(&format!("set_link {nic} {state}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `info network` of QEMU 7.2 with a user NIC, a NixOS-built VLAN NIC (no id) and the driver's.
    const INFO: &str =
        "virtio-net-pci.0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r
 \\ user.0: index=0,type=user,net=10.0.2.0,restrict=off\r
virtio-net-pci.1: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:01:01\r
 \\ vlan1: index=0,type=vde,sock=/run/s/vde1-m1.ctl,fd=8\r
nic-vlan2: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:02:01\r
 \\ vlan2: index=0,type=vde,sock=/run/s/vde2,fd=11\r
";

    #[test]
    fn nics_and_their_peers_from_info_network() {
        let nics = parse_nics(INFO);
        assert_eq!(nics.len(), 3);
        assert_eq!(
            nics[1],
            Nic {
                name: "virtio-net-pci.1".into(),
                peer: "vlan1".into(),
                kind: "vde".into(),
                sock: Some("/run/s/vde1-m1.ctl".into()),
            }
        );
        assert_eq!(nics[2].name, "nic-vlan2");
        assert_eq!(nics[0].kind, "user");
    }

    #[test]
    fn the_nic_of_a_vlan_is_found_by_its_socket_then_by_nixos_netdev_id() {
        let nics = parse_nics(INFO);
        let dirs = |d: &str| vec![PathBuf::from(d)];
        let name = |n: Option<&Nic>| n.map(|n| n.name.clone());
        assert_eq!(
            name(nic_on(&nics, 1, &dirs("/run/s/vde1-m1.ctl"))),
            Some("virtio-net-pci.1".into())
        );
        // By socket even under another netdev id: the socket is what the switch sees.
        assert_eq!(
            name(nic_on(&nics, 3, &dirs("/run/s/vde2"))),
            Some("nic-vlan2".into())
        );
        // A script that named its netdev as NixOS does, on a socket path the driver did not give.
        assert_eq!(
            name(nic_on(&nics, 2, &dirs("/elsewhere"))),
            Some("nic-vlan2".into())
        );
        assert_eq!(name(nic_on(&nics, 4, &dirs("/elsewhere"))), None);
        assert!(parse_nics("").is_empty());
        assert!(parse_nics("garbage\n \\ x: y\n").is_empty());
    }
}
