//! Coverage data from the guests: the test names the guest directories where instrumented programs
//! write it (gcov `.gcda` files under a `GCOV_PREFIX`, LLVM `.profraw`), and the driver copies them,
//! guest paths kept, into `<output dir>/coverage/<machine>/` — at a clean shutdown, or when asked.

use crate::{Driver, Error, Machine};
use std::path::PathBuf;

/// The folder under the output directory that holds every machine's coverage data.
pub const COVERAGE_DIR: &str = "coverage";

/// Per machine, the guest directories holding coverage data, copied out at a clean shutdown.
#[derive(Default)]
struct CoverageDirs(std::collections::HashMap<usize, Vec<String>>);

impl Machine {
    /// Names a guest directory holding coverage data; [`collect_coverage`](Self::collect_coverage)
    /// copies it, and [`shutdown`](Self::shutdown) does so before the machine stops.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// vm.add_coverage_dir("/tmp/gcov");
    /// vm.succeed("GCOV_PREFIX=/tmp/gcov /bin/my-service --self-test")?;
    /// vm.collect_coverage()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_coverage_dir(&self, dir: &str) {
        let mut core = self.core.borrow_mut();
        let dirs = core.ext.get::<CoverageDirs>().0.entry(self.i).or_default();
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_string());
        }
    }

    /// Copies the machine's coverage directories (those that exist) into
    /// `<output dir>/coverage/<machine>/`, keeping their guest paths; returns that folder, or `None`
    /// when no directory was named.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// if let Some(dir) = vm.collect_coverage()? { println!("coverage in {}", dir.display()); }
    /// # Ok(())
    /// # }
    /// ```
    pub fn collect_coverage(&self) -> Result<Option<PathBuf>, Error> {
        let (dirs, output) = {
            let mut core = self.core.borrow_mut();
            let dirs = core.ext.get::<CoverageDirs>().0.get(&self.i).cloned();
            (dirs.unwrap_or_default(), core.output_dir.clone())
        };
        if dirs.is_empty() {
            return Ok(None);
        }
        let Some(output) = output else {
            return Err(Error::BadOption(format!(
                "machine {}: no output directory to collect coverage data into",
                self.name
            )));
        };
        let _step = self.step(format!("collecting coverage data from {}", dirs.join(" ")));
        // Relative to /, so the archive holds guest paths; missing directories are skipped (the
        // program may not have run), and the shell's `tar` is busybox's or GNU's alike.
        let mut cmd = String::from("cd / && set --");
        for d in &dirs {
            cmd.push(' ');
            cmd.push_str(&crate::text::sh_quote(d.trim_start_matches('/')));
        }
        cmd.push_str("; for d; do [ -d \"$d\" ] && set -- \"$@\" \"$d\"; shift; done; ");
        cmd.push_str("if [ $# -gt 0 ]; then tar -cf - -- \"$@\"; fi");
        let (status, archive) = self.run_command(cmd.as_bytes(), self.limit(None))?;
        if status != 0 {
            return Err(Error::CommandFailed {
                machine: self.name.clone(),
                command: cmd,
                status,
                output: String::from_utf8_lossy(&archive).into_owned(),
            });
        }
        let target = output.join(COVERAGE_DIR).join(&self.name);
        let io_err = |what: &str, source| Error::Io {
            what: format!("machine {}: {what} {}", self.name, target.display()),
            source,
        };
        std::fs::create_dir_all(&target).map_err(|e| io_err("creating", e))?;
        if !archive.is_empty() {
            // unpack refuses entries that would land outside `target` (`..`, absolute links).
            tar::Archive::new(&archive[..])
                .unpack(&target)
                .map_err(|e| io_err("unpacking coverage data into", e))?;
        }
        let files = crate::cache::list_files(&target).len();
        log::info!(
            "{}: {files} coverage file(s) in {}",
            self.name,
            target.display()
        );
        Ok(Some(target))
    }
}

impl Driver {
    /// [`Machine::collect_coverage`] for every running machine that names coverage directories;
    /// a failure is logged, not returned: a test's result never depends on its coverage.
    ///
    /// ```no_run
    /// # fn demo(driver: &driver::Driver) {
    /// driver.collect_coverage();
    /// # }
    /// ```
    pub fn collect_coverage(&self) {
        for m in self.machines() {
            if m.is_up() {
                if let Err(e) = m.collect_coverage() {
                    log::warn!("coverage: {e}");
                }
            }
        }
    }
}
