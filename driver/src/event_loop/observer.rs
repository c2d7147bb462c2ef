//! What the loop tells the layers above it while it serves: the only way it reaches them.

use std::process::ExitStatus;

/// Who hears what the loop saw; the loop calls it while serving, so it must not block.
pub(crate) trait Observer {
    /// Machine `name` printed a line on its serial console.
    fn console_line(&mut self, name: &str, line: &str);
    /// Machine `name`'s QEMU exited by itself.
    fn exited(&mut self, name: &str, status: ExitStatus);
    /// The steps in progress, for the message of an interrupted wait.
    fn during(&self) -> String;
}
