//! The snapshot cache's side of a machine's boot: once the backdoor shell answers, a first run
//! saves the settled machine into the cache (`crate::cache` plans the start), and a run resumed from
//! the cache sets the guest clock.

use crate::cache::{META, READY, VMSTATE_FILE};
use crate::machine::Machine;
use crate::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the first boot may take to settle before it is saved anyway.
const SETTLE_MAX: Duration = Duration::from_secs(90);
/// The guest's CPU idle share over half a second that counts as settled.
const SETTLED_IDLE: f64 = 0.9;

/// The machine's backdoor shell has just connected: a machine resumed from a snapshot gets the
/// host's time, one booted for the cache is saved into it.
pub(crate) fn on_connected(m: &Machine) -> Result<(), Error> {
    let (save, resumed, shell) = {
        let mut core = m.core.borrow_mut();
        let save = core.vms[m.i].cache_save.take();
        let io = &mut core.io.vms[m.i];
        (save, std::mem::take(&mut io.resumed), io.active)
    };
    if resumed {
        m.after_restore()?;
    }
    if let (Some(entry), Some(shell)) = (save, shell) {
        m.save_to_cache(&entry, shell);
    }
    Ok(())
}

impl Machine {
    /// Saves the freshly booted machine into cache entry `entry`: paused, so RAM and the copied
    /// disks agree; a failure is only logged (the cache only saves time).
    pub(crate) fn save_to_cache(&self, entry: &Path, shell: usize) {
        // Saved mid-boot, every restore would redo the rest of the boot (and under TCG translate
        // it again): wait until the guest has nothing left to do.
        let t0 = Instant::now();
        match self.settle() {
            Ok(idle) => log::info!(
                "{}: settled ({:.0} % idle) {:.2} s after the shell answered",
                self.name,
                idle * 100.0,
                t0.elapsed().as_secs_f64()
            ),
            Err(e) => log::warn!("{}: snapshot cache: {e}", self.name),
        }
        let t0 = Instant::now();
        if let Err(e) = self.monitor_ok("stop") {
            log::warn!("{}: snapshot cache: {e}", self.name);
            return;
        }
        let saved = self.copy_into_cache(entry, shell);
        if let Err(e) = self.monitor_ok("cont") {
            log::warn!("{}: snapshot cache: {e}", self.name);
        }
        match saved {
            Ok(()) => log::info!(
                "{}: saved into the snapshot cache in {:.2} s ({})",
                self.name,
                t0.elapsed().as_secs_f64(),
                entry.display()
            ),
            Err(e) => log::warn!("{}: snapshot cache: {e}", self.name),
        }
    }

    /// Waits until the guest's CPUs are at least [`SETTLED_IDLE`] idle over half a second (or
    /// [`SETTLE_MAX`] passed); returns the last idle share.
    fn settle(&self) -> Result<f64, Error> {
        let t0 = Instant::now();
        loop {
            let (_, out) = self.execute_for(
                "head -n 1 /proc/stat; sleep 0.5; head -n 1 /proc/stat",
                Duration::from_secs(30),
            )?;
            let idle = idle_share(&out).unwrap_or(1.0);
            if idle >= SETTLED_IDLE || t0.elapsed() > SETTLE_MAX {
                return Ok(idle);
            }
        }
    }

    fn copy_into_cache(&self, entry: &Path, shell: usize) -> Result<(), Error> {
        self.monitor_ok(&format!("savevm {READY}"))?;
        let dir = self.state_dir()?;
        let blocks = self.monitor_within("info block", self.limit(None))?;
        // Written next to the entry and renamed: a run stopped halfway leaves no half entry.
        let tmp = entry.with_extension(format!("tmp-{}", std::process::id()));
        let io_err = |what: String, source| Error::Io { what, source };
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("disks"))
            .map_err(|e| io_err(format!("creating {}", tmp.display()), e))?;
        for file in block_files(&blocks) {
            let Ok(relative) = file.strip_prefix(&dir) else {
                // A disk outside the state directory is the start script's to keep.
                continue;
            };
            let to = if file.file_name() == Some(VMSTATE_FILE.as_ref()) {
                tmp.join(VMSTATE_FILE)
            } else {
                tmp.join("disks").join(relative)
            };
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| io_err(format!("creating {}", parent.display()), e))?;
            }
            std::fs::copy(&file, &to)
                .map_err(|e| io_err(format!("copying {} into the cache", file.display()), e))?;
        }
        std::fs::write(tmp.join(META), format!("shell={shell}\n"))
            .map_err(|e| io_err(format!("writing {}", tmp.display()), e))?;
        let _ = std::fs::remove_dir_all(entry);
        std::fs::rename(&tmp, entry).map_err(|e| {
            io_err(
                format!("renaming {} to {}", tmp.display(), entry.display()),
                e,
            )
        })
    }
}

/// The idle share between two `/proc/stat` "cpu" lines (idle + iowait over all).
fn idle_share(two_lines: &str) -> Option<f64> {
    let parse = |l: &str| -> Option<(u64, u64)> {
        let v: Vec<u64> = l
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
        Some((idle, v.iter().sum()))
    };
    let mut lines = two_lines.lines().filter(|l| l.starts_with("cpu "));
    let (i0, t0) = parse(lines.next()?)?;
    let (i1, t1) = parse(lines.next()?)?;
    let total = t1.checked_sub(t0).filter(|&t| t > 0)?;
    Some(i1.saturating_sub(i0) as f64 / total as f64)
}

/// The image files in HMP's `info block` (`id (#block123): /path/file.qcow2 (qcow2)` lines).
fn block_files(info: &str) -> Vec<PathBuf> {
    info.lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| {
            let (_, rest) = l.split_once("): ")?;
            let (path, format) = rest.rsplit_once(" (")?;
            (format.trim_end_matches(')') == "qcow2").then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_files_of_info_block() {
        let info = "virtio0 (#block143): /s/vm-state-systemd/systemd.qcow2 (qcow2)\n    \
            Attached to:      /machine/peripheral-anon/device[1]/virtio-backend\n    \
            Backing file:     /cache/base.qcow2 (chain depth: 1)\n\n\
            vmtd-vmstate (#block512): /s/vm-state-systemd/vmstate.qcow2 (qcow2)\n    \
            Removable device: not locked, tray closed\n\n\
            cd0 (#block9): /iso/x.iso (raw)\n";
        assert_eq!(
            block_files(info),
            [
                PathBuf::from("/s/vm-state-systemd/systemd.qcow2"),
                PathBuf::from("/s/vm-state-systemd/vmstate.qcow2")
            ]
        );
    }

    #[test]
    fn idle_share_of_two_samples() {
        let out = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu  110 0 50 880 60 0 0 0 0 0\n";
        assert_eq!(idle_share(out), Some(0.9));
        assert_eq!(idle_share("cpu  1 1 1 1\n"), None);
    }
}
