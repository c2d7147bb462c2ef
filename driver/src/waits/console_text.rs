//! Waiting for a line of the serial console: served by the loop's console lines, no guest command.

use crate::machine::Machine;
use crate::Error;
use regex::Regex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Console lines shown when a console wait times out.
const CONSOLE_CONTEXT: usize = 20;

/// Per machine, the console lines before this number were consumed by a console wait.
#[derive(Default)]
struct Cursors(HashMap<usize, u64>);

impl Machine {
    /// Waits until a serial console line matches `regex`; returns the line. Each match consumes the
    /// console up to that line, so repeated waits move forward; the line being printed (a prompt
    /// without newline) matches too.
    ///
    /// ```no_run
    /// # fn demo(vm: &driver::Machine) -> Result<(), driver::Error> {
    /// let line = vm.wait_for_console_text(r"login:", None)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_console_text(
        &self,
        regex: &str,
        timeout: Option<Duration>,
    ) -> Result<String, Error> {
        self.explained(None, || {
            let re = Regex::new(regex).map_err(|source| Error::Regex {
                pattern: regex.to_string(),
                source,
            })?;
            let timeout = self.limit(timeout);
            let _step = self.step(format!("waiting for console text /{regex}/"));
            let i = self.i;
            let mut core = self.core.borrow_mut();
            let mut cursor = core.ext.get::<Cursors>().0.get(&i).copied().unwrap_or(0);
            let found = core.io.run_until(Instant::now() + timeout, |io| {
                let vm = &io.vms[i];
                if let Some((n, line)) = vm.console.find_from(cursor, |l| re.is_match(l)) {
                    cursor = n + 1;
                    return Some(Some(line));
                }
                // The line being printed (the UART is slow under TCG) matches once; it counts as consumed
                // when it completes.
                let partial_unseen = cursor <= vm.console.total();
                let partial = vm.console.partial();
                if partial_unseen && re.is_match(&partial) {
                    cursor = vm.console.total() + 1;
                    return Some(Some(partial));
                }
                // Nothing more can arrive once QEMU exited and its console reached end of file.
                (vm.exit.is_some() && vm.io_drained()).then_some(None)
            });
            core.ext.get::<Cursors>().0.insert(i, cursor);
            let found = found?;
            match found {
                Some(Some(line)) => Ok(line),
                Some(None) => Err(self.gone(
                    &mut core,
                    &format!("QEMU exited while waiting for console text /{regex}/"),
                )),
                None => Err(Error::Timeout {
                    machine: self.name.clone(),
                    what: format!("console text /{regex}/"),
                    after: timeout,
                    last: core.io.vms[i].console.tail(CONSOLE_CONTEXT).join("\n"),
                }),
            }
        })
    }
}
