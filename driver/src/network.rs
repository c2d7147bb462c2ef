//! Networks seen from the host: ports forwarded into a guest, and faults between machines (delay,
//! jitter and loss on a machine's link to a VLAN, partitions).

use crate::{Driver, Error, Machine};
use std::time::Duration;

/// What a machine's link to a VLAN does to the packets the machine sends, as `tc netem` on the
/// guest's interface would: each waits `delay` ± `jitter` (uniformly spread, order kept) and
/// `loss_pct` percent are dropped. The default is a perfect link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkQuality {
    /// Added to every packet's trip.
    pub delay: Duration,
    /// How far a packet's delay may stray from `delay`, either way.
    pub jitter: Duration,
    /// Percentage of packets dropped, 0 to 100.
    pub loss_pct: f64,
}

impl Driver {
    /// Makes `machine`'s link to `vlan` delay and drop what the machine sends; replies to it are
    /// delayed as well, so a ping's round trip grows by `delay`.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver, a: &driver::Machine) -> Result<(), driver::Error> {
    /// use std::time::Duration;
    /// let slow = driver::LinkQuality { delay: Duration::from_millis(100), ..Default::default() };
    /// driver.set_link_quality(1, a, slow)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_link_quality(
        &self,
        vlan: u32,
        machine: &Machine,
        quality: LinkQuality,
    ) -> Result<(), Error> {
        let bad = |what: String| Error::Vlan {
            number: vlan,
            what,
            source: None,
        };
        if !(0.0..=100.0).contains(&quality.loss_pct) {
            return Err(bad(format!(
                "loss of {} %: must be between 0 and 100",
                quality.loss_pct
            )));
        }
        if quality.jitter > quality.delay {
            return Err(bad(format!(
                "jitter of {:?} exceeds the delay of {:?}: delays cannot go below zero",
                quality.jitter, quality.delay
            )));
        }
        let mut core = self.core.borrow_mut();
        let link = core
            .links
            .iter_mut()
            .find(|l| l.vlan == vlan && l.machine == machine.i)
            .ok_or_else(|| bad(format!("machine {} is not attached to it", machine.name)))?;
        log::info!(
            "vlan {vlan}: what {} sends is delayed {} ms ± {} ms, {} % lost",
            machine.name,
            quality.delay.as_millis(),
            quality.jitter.as_millis(),
            quality.loss_pct
        );
        link.set_quality(quality.delay, quality.jitter, quality.loss_pct)
    }

    /// Splits the network on every VLAN: machines of different groups stop reaching each other,
    /// both ways; machines of one group, and those named in no group, still reach their own. A new
    /// partition replaces the last; [`heal`](Self::heal) ends it.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver, a: &driver::Machine, b: &driver::Machine,
    /// #         c: &driver::Machine) -> Result<(), driver::Error> {
    /// driver.partition(&[&[a, b], &[c]])?;
    /// c.fail("ping -c 1 -W 1 192.168.1.1")?;
    /// driver.heal()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition(&self, groups: &[&[&Machine]]) -> Result<(), Error> {
        let mut moves = Vec::new();
        let mut seen: Vec<usize> = Vec::new();
        {
            let core = self.core.borrow();
            for (k, group) in groups.iter().enumerate() {
                for m in group.iter() {
                    if seen.contains(&m.i) {
                        return Err(Error::BadOption(format!(
                            "partition: machine {} is in two groups",
                            m.name
                        )));
                    }
                    seen.push(m.i);
                    let links: Vec<_> = core.links.iter().filter(|l| l.machine == m.i).collect();
                    if links.is_empty() {
                        return Err(Error::BadOption(format!(
                            "partition: machine {} is attached to no VLAN",
                            m.name
                        )));
                    }
                    // Segment 0 is where ports start: the machines named in no group stay there.
                    moves.extend(links.iter().map(|l| (l.vlan, l.port, k as u32 + 1)));
                }
            }
        }
        let names: Vec<String> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        log::info!("partitioning the network: [{}]", names.join("] ["));
        self.heal_quietly()?;
        let mut core = self.core.borrow_mut();
        for (vlan, port, segment) in moves {
            let switch = core
                .switch_mut(vlan)
                .expect("links belong to running switches");
            switch.set_segment(port, segment)?;
        }
        Ok(())
    }

    /// Ends a [`partition`](Self::partition): every machine reaches every other again.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.heal()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn heal(&self) -> Result<(), Error> {
        log::info!("healing the network");
        self.heal_quietly()
    }

    fn heal_quietly(&self) -> Result<(), Error> {
        let mut core = self.core.borrow_mut();
        let ports: Vec<_> = core.links.iter().map(|l| (l.vlan, l.port)).collect();
        for (vlan, port) in ports {
            let switch = core
                .switch_mut(vlan)
                .expect("links belong to running switches");
            switch.set_segment(port, 0)?;
        }
        Ok(())
    }
}

impl Machine {
    /// Forwards TCP `host_port` on the host's loopback address to `guest_port` in the guest
    /// (user-mode networking); other hosts cannot reach it.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.forward_port(8081, 80)?;
    /// let _ = std::net::TcpStream::connect(("127.0.0.1", 8081));
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward_port(&self, host_port: u16, guest_port: u16) -> Result<(), Error> {
        self.forward_port_on("127.0.0.1", host_port, guest_port)
    }

    /// [`forward_port`](Self::forward_port) listening on the host address `address` instead of
    /// loopback (an IPv4 address; `0.0.0.0` exposes the guest port to the network, so ask for it only
    /// when other hosts must reach it).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.forward_port_on("0.0.0.0", 8081, 80)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward_port_on(
        &self,
        address: &str,
        host_port: u16,
        guest_port: u16,
    ) -> Result<(), Error> {
        // Checked here: anything else would reach HMP's own parser, or inject a second option.
        if address.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(Error::BadOption(format!(
                "forward_port: {address:?} is not an IPv4 address to listen on"
            )));
        }
        self.monitor_expect_silence(&format!(
            "hostfwd_add tcp:{address}:{host_port}-:{guest_port}"
        ))
    }
}
