//! The serial console: bytes split into lines, logged, and kept in a bounded ring.

use std::collections::VecDeque;

/// Longest line kept whole; a longer one is cut so a console without newlines cannot grow memory.
const MAX_LINE: usize = 16 * 1024;

/// Lines of one machine's serial console.
#[derive(Debug)]
pub(crate) struct Console {
    partial: Vec<u8>,
    lines: VecDeque<String>,
    capacity: usize,
    /// Lines ever completed, so waiters can ask for "lines after number N".
    total: u64,
    /// The number of the current boot's first line: the console's log is of this boot only, as
    /// NixOS's `get_console_log` is (a machine started again starts a new log).
    boot: u64,
}

impl Console {
    pub(crate) fn new(capacity: usize) -> Self {
        Console {
            partial: Vec::new(),
            lines: VecDeque::new(),
            capacity,
            total: 0,
            boot: 0,
        }
    }

    /// Starts the log of a new boot: what QEMU prints from now on.
    pub(crate) fn start_boot(&mut self) {
        self.boot = self.total;
    }

    /// Takes bytes read from the console and returns the lines they completed.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            if b == b'\n' || self.partial.len() >= MAX_LINE {
                let line = self.take_partial();
                done.push(line.clone());
                self.push_line(line);
                if b == b'\n' {
                    continue;
                }
            }
            self.partial.push(b);
        }
        done
    }

    /// Completes a line left without a newline (QEMU exited, or a prompt).
    pub(crate) fn flush(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let line = self.take_partial();
        self.push_line(line.clone());
        Some(line)
    }

    fn take_partial(&mut self) -> String {
        let mut raw = std::mem::take(&mut self.partial);
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
        String::from_utf8_lossy(&raw).into_owned()
    }

    fn push_line(&mut self, line: String) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        self.total += 1;
    }

    /// The last `n` complete lines, oldest first.
    pub(crate) fn tail(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }

    /// The first kept line numbered `from` or later (lines count from 0 since boot) that `matches`,
    /// with its number; lines already dropped from the ring are skipped.
    pub(crate) fn find_from(
        &self,
        from: u64,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Option<(u64, String)> {
        let first = self.total - self.lines.len() as u64;
        let skip = from.saturating_sub(first) as usize;
        self.lines
            .iter()
            .enumerate()
            .skip(skip)
            .find(|(_, l)| matches(l))
            .map(|(k, l)| (first + k as u64, l.clone()))
    }

    /// Number of lines completed so far (the line being received will get this number).
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The line being received (no newline yet), e.g. a prompt.
    pub(crate) fn partial(&self) -> String {
        String::from_utf8_lossy(&self.partial).into_owned()
    }

    /// Every line kept of the current boot, joined.
    pub(crate) fn text(&self) -> String {
        let first = self.total - self.lines.len() as u64;
        let skip = self.boot.saturating_sub(first) as usize;
        let mut s = String::new();
        for l in self.lines.iter().skip(skip) {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_strips_cr_and_keeps_the_last_lines() {
        let mut c = Console::new(2);
        assert_eq!(c.feed(b"a\r\nb"), vec!["a"]);
        assert_eq!(c.feed(b"\nc\n"), vec!["b", "c"]);
        assert_eq!(c.tail(5), vec!["b", "c"]);
        assert_eq!(c.total, 3);
        assert_eq!(c.flush(), None);
        c.feed(b"prompt# ");
        assert_eq!(c.flush().as_deref(), Some("prompt# "));
    }

    #[test]
    fn find_from_counts_lines_since_boot() {
        let mut c = Console::new(2);
        c.feed(b"a\nb\nc\nb\n");
        assert_eq!(c.find_from(0, |l| l == "b"), Some((3, "b".into())));
        assert_eq!(c.find_from(4, |l| l == "b"), None);
        assert_eq!(c.find_from(0, |l| l == "a"), None, "dropped from the ring");
        assert_eq!(c.total, 4);
    }

    #[test]
    fn the_log_is_of_the_current_boot_and_ring_numbers_go_on() {
        let mut c = Console::new(10);
        c.feed(b"first boot\n");
        assert_eq!(c.text(), "first boot\n");
        c.start_boot();
        assert_eq!(c.text(), "");
        c.feed(b"second boot\n");
        assert_eq!(c.text(), "second boot\n");
        // Waiters still count lines since the first boot.
        assert_eq!(
            c.find_from(0, |l| l.contains("boot")),
            Some((0, "first boot".into()))
        );
        let mut small = Console::new(1);
        small.feed(b"a\nb\n");
        small.start_boot();
        small.feed(b"c\n");
        assert_eq!(small.text(), "c\n");
    }

    #[test]
    fn endless_line_is_cut() {
        let mut c = Console::new(10);
        let lines = c.feed(&vec![b'x'; MAX_LINE * 2 + 5]);
        assert_eq!(lines.len(), 2);
        assert!(c.partial.len() <= MAX_LINE);
    }
}
