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
        let bytes = std::fs::read(source).map_err(|e| Error::Io {
            what: format!("reading {}", source.display()),
            source: e,
        })?;
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
}
