//! Snapshots of running machines with QEMU's own `savevm`/`loadvm`: RAM, devices and every qcow2
//! disk saved together inside the qcow2 files, so memory and disks always agree. A machine without a
//! qcow2 disk (the tiny initramfs guest) gets an empty one, `vmstate.qcow2` in its state directory,
//! attached with no device, only to hold the saved RAM.

use crate::cache::{create_vmstate_file, VMSTATE_DRIVE, VMSTATE_FILE};
use crate::{Driver, Error, Machine};
use std::time::{Duration, Instant};

impl Machine {
    /// Saves the running machine (memory, devices, qcow2 disks) as snapshot `name`, replacing an
    /// older one of that name. The guest pauses while it is written.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.snapshot("booted")?;
    /// vm.succeed("rm -rf /etc")?;
    /// vm.restore("booted")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn snapshot(&self, name: &str) -> Result<(), Error> {
        check_name(&self.name, name)?;
        self.connect()?;
        let _step = self.step(format!("saving snapshot {name}"));
        if self.core.borrow().io.vms[self.i].shell_held {
            return Err(Error::BadOption(format!(
                "machine {}: a timed-out command still runs in the guest; a snapshot now would \
                 restore it running",
                self.name
            )));
        }
        let t0 = Instant::now();
        self.ensure_vmstate_drive()?;
        self.monitor_ok(&format!("savevm {name}"))?;
        log::info!(
            "{}: snapshot {name} saved in {:.2} s",
            self.name,
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Brings the machine back to snapshot `name`: files written since are gone, the backdoor
    /// shell, console and monitor work at once, and the guest clock is set to the host's.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.restore("booted")?;
    /// vm.succeed("true")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn restore(&self, name: &str) -> Result<(), Error> {
        check_name(&self.name, name)?;
        if !self.is_running() {
            return Err(Error::NotRunning(self.name.clone()));
        }
        let _step = self.step(format!("restoring snapshot {name}"));
        let t0 = Instant::now();
        self.load(name)?;
        self.after_restore()?;
        log::info!(
            "{}: snapshot {name} restored in {:.2} s",
            self.name,
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The snapshots the machine holds, by name.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// assert!(vm.snapshots()?.contains(&"booted".to_string()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn snapshots(&self) -> Result<Vec<String>, Error> {
        let listing = self.monitor_within("info snapshots", self.limit(None))?;
        Ok(parse_snapshot_names(&listing))
    }

    fn load(&self, name: &str) -> Result<(), Error> {
        let was_running = self
            .monitor_within("info status", self.limit(None))?
            .contains("running");
        if let Err(e) = self.monitor_ok(&format!("loadvm {name}")) {
            // A failed loadvm leaves the machine paused: let it run on as it was.
            if was_running {
                self.monitor_ok("cont")?;
            }
            return Err(e);
        }
        // The guest resumes where it was saved: between two commands, with nothing in flight, and
        // its shell as it was then (without what later commands defined in it).
        let mut core = self.core.borrow_mut();
        let vm = &mut core.io.vms[self.i];
        vm.shell_held = false;
        vm.shell().resume();
        Ok(())
    }

    /// Sets the guest clock, which went back to the snapshot's time, to the host's.
    pub(crate) fn after_restore(&self) -> Result<(), Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let cmd = format!("date -u -s @{now} >/dev/null");
        self.execute_for(&cmd, self.limit(Some(Duration::from_secs(30))))
            .map(drop)
    }

    /// Attaches an empty qcow2 drive for the saved RAM unless the machine has one, or a qcow2 disk
    /// QEMU can keep it in.
    fn ensure_vmstate_drive(&self) -> Result<(), Error> {
        let blocks = self.monitor_within("info block", self.limit(None))?;
        if blocks.contains(VMSTATE_DRIVE) {
            return Ok(());
        }
        let dir = self.state_dir()?;
        let file = dir.join(VMSTATE_FILE);
        create_vmstate_file(&self.name, &file)?;
        let spec = format!(
            "drive_add 0 if=none,id={VMSTATE_DRIVE},format=qcow2,file={}",
            file.display().to_string().replace(',', ",,")
        );
        let reply = self.monitor_within(&spec, self.limit(None))?;
        if reply.trim() != "OK" {
            return Err(Error::Monitor {
                machine: self.name.clone(),
                reason: format!("attaching {}: {}", file.display(), reply.trim()),
            });
        }
        Ok(())
    }
}

impl Driver {
    /// Saves every running machine as snapshot `name` at one instant: all are paused first, so
    /// none runs on while another is saved.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.snapshot_all("network-up")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn snapshot_all(&self, name: &str) -> Result<(), Error> {
        let running = self.running_machines();
        self.nested(&format!("saving snapshot {name} of every machine"), || {
            for m in &running {
                check_name(&m.name, name)?;
                m.connect()?;
                m.ensure_vmstate_drive()?;
            }
            for m in &running {
                m.monitor_ok("stop")?;
            }
            // Saving leaves each machine paused; all resume together afterwards.
            let saved = running
                .iter()
                .try_for_each(|m| m.monitor_ok(&format!("savevm {name}")));
            for m in &running {
                m.monitor_ok("cont")?;
            }
            saved
        })
    }

    /// Brings every running machine back to snapshot `name` at one instant, then sets their clocks.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) -> Result<(), driver::Error> {
    /// driver.restore_all("network-up")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn restore_all(&self, name: &str) -> Result<(), Error> {
        let running = self.running_machines();
        self.nested(
            &format!("restoring snapshot {name} of every machine"),
            || {
                for m in &running {
                    check_name(&m.name, name)?;
                    m.monitor_ok("stop")?;
                }
                // loadvm leaves a paused machine paused: all resume together once every one is loaded.
                let loaded = running.iter().try_for_each(|m| m.load(name));
                for m in &running {
                    m.monitor_ok("cont")?;
                }
                loaded?;
                running.iter().try_for_each(|m| m.after_restore())
            },
        )
    }
}

impl Driver {
    fn running_machines(&self) -> Vec<Machine> {
        self.machines()
            .into_iter()
            .filter(|m| m.is_running())
            .collect()
    }
}

/// Snapshot names go to HMP unquoted: keep them to one plain word.
fn check_name(machine: &str, name: &str) -> Result<(), Error> {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if plain {
        Ok(())
    } else {
        Err(Error::BadOption(format!(
            "machine {machine}: snapshot name {name:?}: use letters, digits, '-', '_' and '.'"
        )))
    }
}

/// The names in HMP's `info snapshots` table (`ID TAG VM SIZE DATE VM CLOCK ICOUNT`).
fn parse_snapshot_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let id = words.next()?;
            let tag = words.next()?;
            (id.chars().all(|c| c.is_ascii_digit()) || id == "--").then(|| tag.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_from_info_snapshots() {
        let listing = "List of snapshots present on all disks:\n\
            ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n\
            --        booted            56.4 MiB 2026-11-28 14:30:00 00:00:04.123         \n\
            --        after-setup       57.0 MiB 2026-11-28 14:30:09 00:00:09.001         \n";
        assert_eq!(parse_snapshot_names(listing), ["booted", "after-setup"]);
        assert!(parse_snapshot_names("There is no snapshot available.").is_empty());
    }

    #[test]
    fn names_must_be_one_plain_word() {
        assert!(check_name("m", "booted-1.ok").is_ok());
        for bad in ["", "two words", "a;quit", "x\ny"] {
            let err = check_name("m", bad).unwrap_err().to_string();
            assert!(err.contains("snapshot name"), "{err}");
        }
    }
}
