//! Files between the host and the guest, over the backdoor shell (binary-safe both ways).

use crate::machine::Machine;
use crate::text::sh_quote;
use crate::Error;
use std::path::Path;

impl Machine {
    /// Copies a host file into the guest at `target` (any bytes, any file name); creates the parent
    /// directory.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.copy_from_host(std::path::Path::new("fixtures/config.toml"), "/etc/app/config.toml")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_from_host(&self, source: &Path, target: &str) -> Result<(), Error> {
        let io = |e| Error::Io {
            what: format!("reading {}", source.display()),
            source: e,
        };
        if source.is_dir() {
            // A directory is copied whole, as NixOS's `cp -r` does: its tree under `target`.
            self.succeed(format!("mkdir -p -- {}", sh_quote(target)).as_str())?;
            let mut entries: Vec<_> = std::fs::read_dir(source)
                .map_err(io)?
                .collect::<Result<_, _>>()
                .map_err(io)?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name();
                let inner = format!(
                    "{}/{}",
                    target.trim_end_matches('/'),
                    name.to_string_lossy()
                );
                self.copy_from_host(&entry.path(), &inner)?;
            }
            return Ok(());
        }
        let bytes = std::fs::read(source).map_err(io)?;
        self.write_file(target, &bytes)
    }

    /// Writes `bytes` to `target` in the guest, creating the parent directory.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.write_file("/etc/motd", b"hello\n")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_file(&self, target: &str, bytes: &[u8]) -> Result<(), Error> {
        use base64::Engine as _;
        let _step = self.step(format!("writing {} bytes to {target}", bytes.len()));
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut cmd = format!(
            "t={}; mkdir -p -- \"$(dirname -- \"$t\")\" && base64 -d > \"$t\" <<'VMTD_EOF'\n",
            sh_quote(target)
        );
        // Lines of 76 characters, as base64 tools write them, keep any shell's line reader happy.
        for chunk in encoded.as_bytes().chunks(76) {
            cmd.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            cmd.push('\n');
        }
        cmd.push_str("VMTD_EOF\n");
        let (status, out) = self.execute(&cmd)?;
        if status != 0 {
            return Err(Error::CommandFailed {
                machine: self.name.clone(),
                command: format!("write {target}"),
                status,
                output: out,
            });
        }
        Ok(())
    }

    /// The bytes of a file in the guest (the channel is binary-safe, so no encoding is needed).
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let log = vm.copy_from_vm("/var/log/app.log")?;
    /// std::fs::write("app.log", log).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_from_vm(&self, source: &str) -> Result<Vec<u8>, Error> {
        let cmd = format!("cat -- {}", sh_quote(source));
        let (status, out) = self.run_command(cmd.as_bytes(), self.limit(None))?;
        if status != 0 {
            return Err(Error::CommandFailed {
                machine: self.name.clone(),
                command: cmd,
                status,
                output: String::from_utf8_lossy(&out).into_owned(),
            });
        }
        Ok(out)
    }

    /// Copies the guest's file or directory `source` to `target` on the host (a directory's tree
    /// is copied whole, its files' bytes as they are; symbolic links and special files are left
    /// out). Parents of `target` are created.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.copy_tree_from_vm("/var/log", std::path::Path::new("out/guest-logs"))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_tree_from_vm(&self, source: &str, target: &Path) -> Result<(), Error> {
        let io = |e| Error::Io {
            what: format!("writing {}", target.display()),
            source: e,
        };
        let quoted = sh_quote(source);
        let (is_dir, _) = self.execute(&format!("test -d {quoted}"))?;
        if is_dir != 0 {
            let bytes = self.copy_from_vm(source)?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            return std::fs::write(target, bytes).map_err(io);
        }
        // NUL-separated: file names may hold newlines.
        let list = |kind: &str| -> Result<Vec<String>, Error> {
            let out =
                self.succeed(format!("cd -- {quoted} && find . -type {kind} -print0").as_str())?;
            Ok(out
                .split('\0')
                .filter(|p| !p.is_empty() && *p != ".")
                .map(|p| p.trim_start_matches("./").to_string())
                .collect())
        };
        std::fs::create_dir_all(target).map_err(io)?;
        for dir in list("d")? {
            std::fs::create_dir_all(target.join(&dir)).map_err(io)?;
        }
        for file in list("f")? {
            let bytes = self.copy_from_vm(&format!("{}/{file}", source.trim_end_matches('/')))?;
            std::fs::write(target.join(&file), bytes).map_err(io)?;
        }
        Ok(())
    }
}
