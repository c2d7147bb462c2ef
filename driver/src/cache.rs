//! The snapshot cache (`Options::snapshot_cache`): the first run of a machine saves it "booted and
//! ready" (snapshot `vmtd-ready` of its RAM and qcow2 disks) into the cache, keyed by its start
//! command and that command's inputs; later runs start QEMU with `-loadvm` from a copy and take up
//! the backdoor shell where it was, instead of booting.

use crate::Error;
use qemu_proc::{AccelChoice, StartCommand};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The snapshot a cache entry holds.
pub(crate) const READY: &str = "vmtd-ready";
/// The file in an entry that says it is complete, and which backdoor channel the shell used.
pub(crate) const META: &str = "meta";
/// The id of the drive that holds saved RAM when a machine has no qcow2 disk of its own.
pub(crate) const VMSTATE_DRIVE: &str = "vmtd-vmstate";
/// The file of that drive, in the machine's state directory.
pub(crate) const VMSTATE_FILE: &str = "vmstate.qcow2";

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

/// Creates an empty qcow2 file (with `qemu-img`, from qemu-utils) unless it exists.
pub(crate) fn create_vmstate_file(machine: &str, file: &Path) -> Result<(), Error> {
    if file.exists() {
        return Ok(());
    }
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(file)
        .arg("1M")
        .output()
        .map_err(|source| Error::Io {
            what: format!("machine {machine}: running qemu-img (Debian package qemu-utils)"),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Monitor {
            machine: machine.to_string(),
            reason: format!(
                "qemu-img create {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
