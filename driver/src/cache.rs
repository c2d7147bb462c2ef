//! The snapshot cache (`Options::snapshot_cache`): the first run of a machine saves it "booted and
//! ready" (snapshot `vmtd-ready` of its RAM and qcow2 disks) into the cache, keyed by its start
//! command and that command's inputs; later runs start QEMU with `-loadvm` from a copy and take up
//! the backdoor shell where it was, instead of booting.

use crate::snapshot::{create_vmstate_file, VMSTATE_DRIVE, VMSTATE_FILE};
use crate::{Error, Machine};
use qemu_proc::{AccelChoice, StartCommand};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The snapshot a cache entry holds.
const READY: &str = "vmtd-ready";
/// The file in an entry that says it is complete, and which backdoor channel the shell used.
const META: &str = "meta";
/// How long the first boot may take to settle before it is saved anyway.
const SETTLE_MAX: Duration = Duration::from_secs(90);
/// The guest's CPU idle share over half a second that counts as settled.
const SETTLED_IDLE: f64 = 0.9;

/// What starting a machine with a cache does.
pub(crate) enum Plan {
    /// Resume from this entry: QEMU loads the snapshot, the shell is on channel `shell`.
    Resume { shell: usize },
    /// Boot, then save into this entry once the backdoor shell answers.
    Save(PathBuf),
}

/// The entry of a machine: `<cache>/<name>-<hash of what determines the booted state>`.
pub(crate) fn entry(
    cache: &Path,
    name: &str,
    start: &StartCommand,
    vlans: &[u32],
    number: usize,
    allow_reboot: bool,
    accel: &AccelChoice,
) -> PathBuf {
    let mut h = Sha256::new();
    h.update(b"vmtd snapshot cache 1\0");
    h.update(format!(
        "{name}\0{vlans:?}\0{number}\0{allow_reboot}\0{}\0",
        accel.accel
    ));
    // A snapshot loads only into the QEMU that saved it (device layouts change between versions).
    if let Some(meta) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("qemu-system-x86_64"))
            .find_map(|q| std::fs::metadata(q).ok())
    }) {
        h.update(format!(
            "qemu\0{}\0{:?}\0",
            meta.len(),
            meta.modified().ok()
        ));
    }
    match start {
        StartCommand::Script(path) => {
            h.update(path.to_string_lossy().as_bytes());
            let script = std::fs::read(path).unwrap_or_default();
            h.update(&script);
            // What the script starts from: every absolute path in it that names a file.
            let text = String::from_utf8_lossy(&script);
            for word in text.split(|c: char| c.is_whitespace() || "'\"=,".contains(c)) {
                if let Some(meta) = word
                    .starts_with('/')
                    .then(|| std::fs::metadata(word).ok())
                    .flatten()
                    .filter(|m| m.is_file())
                {
                    h.update(format!(
                        "{word}\0{}\0{:?}\0",
                        meta.len(),
                        meta.modified().ok()
                    ));
                }
            }
        }
        StartCommand::Builtin(vm) => h.update(format!("{vm:?}")),
    }
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    cache.join(format!("{name}-{hex}"))
}

/// Prepares machine `name`'s state directory `dir` from `entry` if it is complete and the machine
/// has no disk of its own there yet; returns the plan and the QEMU options it needs.
pub(crate) fn prepare(name: &str, entry: &Path, dir: &Path) -> Result<(Plan, Vec<String>), Error> {
    let io_err = |what: String, source| Error::Io { what, source };
    let vmstate = dir.join(VMSTATE_FILE);
    let mut opts = vec![
        "-drive".to_string(),
        format!(
            "if=none,id={VMSTATE_DRIVE},format=qcow2,file={}",
            vmstate.display().to_string().replace(',', ",,")
        ),
    ];
    let shell = std::fs::read_to_string(entry.join(META))
        .ok()
        .and_then(|m| m.strip_prefix("shell=")?.trim().parse::<usize>().ok());
    let disks = entry.join("disks");
    let kept = list_files(&disks)
        .iter()
        .any(|f| dir.join(f.strip_prefix(&disks).unwrap_or(f)).exists());
    match shell {
        Some(shell) if !kept => {
            let _ = std::fs::remove_file(&vmstate);
            std::fs::copy(entry.join(VMSTATE_FILE), &vmstate)
                .map_err(|e| io_err(format!("copying {} from the cache", VMSTATE_FILE), e))?;
            for f in list_files(&disks) {
                let to = dir.join(f.strip_prefix(&disks).unwrap_or(&f));
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| io_err(format!("creating {}", parent.display()), e))?;
                }
                std::fs::copy(&f, &to)
                    .map_err(|e| io_err(format!("copying {} from the cache", f.display()), e))?;
            }
            log::info!(
                "{name}: resuming from the snapshot cache ({})",
                entry.display()
            );
            opts.extend(["-loadvm".to_string(), READY.to_string()]);
            Ok((Plan::Resume { shell }, opts))
        }
        _ => {
            if kept {
                log::info!("{name}: its kept disk is used, not the snapshot cache's");
            }
            let _ = std::fs::remove_file(&vmstate);
            create_vmstate_file(name, &vmstate)?;
            Ok((Plan::Save(entry.to_path_buf()), opts))
        }
    }
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

/// Every file under `dir`, recursively (none when it does not exist).
pub(crate) fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.is_dir() {
                found.extend(list_files(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
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

    #[test]
    fn entries_change_with_the_script_and_its_files() {
        let dir = std::env::temp_dir().join(format!("vmtd-cache-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("bzImage");
        std::fs::write(&kernel, "k1").unwrap();
        let script = dir.join("run-x-vm");
        std::fs::write(
            &script,
            format!("exec qemu -kernel '{}'\n", kernel.display()),
        )
        .unwrap();
        let accel = AccelChoice {
            accel: qemu_proc::Accel::Tcg,
            reason: String::new(),
        };
        let key = |vlans: &[u32]| {
            entry(
                &dir,
                "x",
                &StartCommand::Script(script.clone()),
                vlans,
                1,
                false,
                &accel,
            )
        };
        let first = key(&[]);
        assert_eq!(first, key(&[]), "stable");
        assert_ne!(first, key(&[1]), "another network");
        std::fs::write(&kernel, "kernel 2").unwrap();
        assert_ne!(first, key(&[]), "another kernel");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
