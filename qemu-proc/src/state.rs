//! The per-run state root and the per-machine directories in it.

use std::collections::hash_map::RandomState;
use std::fs::{self, DirBuilder, Permissions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// Attempts at finding an unused state root name before giving up.
const CREATE_ATTEMPTS: u32 = 64;

/// Per-run state root: a fresh 0700 directory under $TMPDIR (or /tmp), removed on drop unless keep() was
/// called.
#[derive(Debug)]
pub struct StateRoot {
    path: PathBuf,
    keep: bool,
}

impl StateRoot {
    /// Creates `vmtd-<pid>-<random>` under `$TMPDIR` (or `/tmp`), mode 0700, as an absolute path.
    pub fn create() -> Result<Self, Error> {
        let mut base = std::env::temp_dir();
        if base.is_relative() {
            // The children run with their state dir as working directory, so a relative root would make every
            // socket path handed to them wrong.
            let cwd = std::env::current_dir().map_err(|source| Error::CreateDir {
                path: base.clone(),
                source,
            })?;
            base = cwd.join(base);
        }
        let mut last_err = None;
        for _ in 0..CREATE_ATTEMPTS {
            let path = base.join(format!("vmtd-{}-{:016x}", std::process::id(), random_u64()));
            // mkdir is exclusive: a name someone else created (even a symlink) fails instead of being reused.
            match make_private_dir(&path) {
                Ok(()) => {
                    log::debug!("created state root {}", path.display());
                    return Ok(StateRoot { path, keep: false });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some((path, e)),
                Err(source) => return Err(Error::CreateDir { path, source }),
            }
        }
        let (path, source) = last_err.expect("at least one attempt was made");
        Err(Error::CreateDir { path, source })
    }

    /// Uses `path` as the state root, creating it (mode 0700) if needed, and never removes it, so a
    /// later run with the same path finds each machine's `vm-state-<name>` (its disk) again. An
    /// existing directory must be ours and closed to others: sockets that drive a root shell live there.
    pub fn at(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::MetadataExt;
        let path = std::path::absolute(path).map_err(|source| Error::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
        match make_private_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let not_private = |why: String| Error::NotPrivate {
                    path: path.clone(),
                    why,
                };
                let meta = fs::symlink_metadata(&path).map_err(|source| Error::CreateDir {
                    path: path.clone(),
                    source,
                })?;
                if !meta.is_dir() {
                    return Err(not_private("is not a directory".into()));
                }
                let me = nix::unistd::geteuid().as_raw();
                if meta.uid() != me {
                    return Err(not_private(format!(
                        "belongs to uid {}, not {me}",
                        meta.uid()
                    )));
                }
                if meta.mode() & 0o077 != 0 {
                    return Err(not_private(format!("has mode {:o}", meta.mode() & 0o777)));
                }
            }
            Err(source) => return Err(Error::CreateDir { path, source }),
        }
        Ok(StateRoot { path, keep: true })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the directory in place when this is dropped (for post-mortems).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Creates (if needed) and returns `<root>/vm-state-<name>`, mode 0700; error on a name with '/' or
    /// empty.
    pub fn machine_dir(&self, name: &str) -> Result<PathBuf, Error> {
        if name.is_empty() || name.contains(['/', '\0']) {
            return Err(Error::MachineName {
                name: name.to_owned(),
            });
        }
        self.subdir(&format!("vm-state-{name}"))
    }

    /// Creates (if needed) and returns `<root>/shared-xchg`, the directory shared with guests.
    pub fn shared_dir(&self) -> Result<PathBuf, Error> {
        self.subdir("shared-xchg")
    }

    /// A restarted machine reuses its directory (its disk image lives there), so existing is fine.
    fn subdir(&self, name: &str) -> Result<PathBuf, Error> {
        let path = self.path.join(name);
        match make_private_dir(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(path),
            Err(source) => Err(Error::CreateDir { path, source }),
        }
    }
}

impl Drop for StateRoot {
    fn drop(&mut self) {
        if self.keep {
            log::info!("keeping state root {}", self.path.display());
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            log::warn!("cannot remove state root {}: {e}", self.path.display());
        }
    }
}

fn make_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)?;
    // The umask may have taken bits away from 0700 (even the owner's); set them exactly.
    fs::set_permissions(path, Permissions::from_mode(0o700))
}

/// Unpredictable enough for a directory name (uniqueness is guaranteed by the exclusive mkdir, not by
/// this): std seeds `RandomState` from the OS's random source.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn root_and_subdirs_are_private_and_removed_on_drop() {
        let root = StateRoot::create().unwrap();
        let path = root.path().to_path_buf();
        assert!(path.is_absolute());
        assert!(path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("vmtd-"));
        assert_eq!(mode(&path), 0o700);
        let m = root.machine_dir("my-machine").unwrap();
        assert_eq!(m, path.join("vm-state-my-machine"));
        assert_eq!(mode(&m), 0o700);
        // Idempotent: a restarted machine gets the same directory.
        fs::write(m.join("disk.qcow2"), b"x").unwrap();
        assert_eq!(root.machine_dir("my-machine").unwrap(), m);
        assert!(m.join("disk.qcow2").exists());
        let s = root.shared_dir().unwrap();
        assert_eq!(s, path.join("shared-xchg"));
        assert_eq!(mode(&s), 0o700);
        drop(root);
        assert!(!path.exists());
    }

    #[test]
    fn two_roots_differ() {
        let a = StateRoot::create().unwrap();
        let b = StateRoot::create().unwrap();
        assert_ne!(a.path(), b.path());
    }

    #[test]
    fn kept_roots_stay() {
        let mut root = StateRoot::create().unwrap();
        root.keep();
        let path = root.path().to_path_buf();
        drop(root);
        assert!(path.is_dir());
        fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn bad_machine_names() {
        let root = StateRoot::create().unwrap();
        for bad in ["", "a/b", "/", "a\0b"] {
            let err = root.machine_dir(bad).unwrap_err();
            assert!(matches!(err, Error::MachineName { .. }), "{bad:?}: {err:?}");
        }
        assert_eq!(
            root.machine_dir("x/y").unwrap_err().to_string(),
            "machine name \"x/y\" is empty or contains '/' or NUL"
        );
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let root = StateRoot::create().unwrap();
        fs::write(root.path().join("vm-state-f"), b"").unwrap();
        let err = root.machine_dir("f").unwrap_err();
        assert!(matches!(err, Error::CreateDir { .. }), "{err:?}");
    }
}
