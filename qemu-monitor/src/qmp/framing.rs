//! Wire framing: cuts the byte stream into lines, holding at most one capped line in memory.
//!
//! A message is what lies between two `\n`. A line longer than the cap is reported as soon as it
//! crosses it, then skipped up to its `\n`. Knows nothing of JSON or QMP; depends only on
//! [`text`](super::text) for excerpts.

use super::text::{escape, EXCERPT};

/// Line cap used by [`Qmp::new`](super::Qmp::new): far above any reply of a small VM
/// (`query-qmp-schema` of QEMU 7.2 is about 200 KiB).
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// What the framer found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    /// A whole line within the cap, without its `\n` (surrounding whitespace, `\r` included, is
    /// left for the decoder to trim).
    Line(Vec<u8>),
    /// A line over the cap: the excerpt of its start for [`Event::TooLong`](super::Event::TooLong).
    TooLong(String),
}

/// The line splitter: the unfinished line and whether the current line is being skipped.
#[derive(Debug, Clone)]
pub(super) struct Lines {
    max_message: usize,
    /// The current line so far, at most `max_message + 1` bytes.
    line: Vec<u8>,
    /// Inside a line that was too long: discard up to its `\n`.
    skipping: bool,
}

impl Lines {
    /// A splitter with no input yet, keeping lines of at most `max_message` bytes.
    pub(super) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            line: Vec::new(),
            skipping: false,
        }
    }

    /// Changes the cap; the line held so far is kept.
    pub(super) fn set_max_message(&mut self, bytes: usize) {
        self.max_message = bytes;
    }

    /// The line cap in bytes.
    pub(super) fn max_message(&self) -> usize {
        self.max_message
    }

    /// Bytes of input currently held (the unfinished line).
    pub(super) fn buffered(&self) -> usize {
        self.line.len()
    }

    /// Consumes `input` up to the next frame and returns it, or all of `input` and `None`.
    ///
    /// The caller handles each frame before asking for the next, so frames keep their order with
    /// whatever the caller reports about them. Each byte is looked at once before its line ends.
    pub(super) fn next_frame(&mut self, input: &mut &[u8]) -> Option<Frame> {
        while !input.is_empty() {
            let (part, ends_line) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let part = &input[..i];
                    *input = &input[i + 1..];
                    (part, true)
                }
                None => (std::mem::take(input), false),
            };
            // At most one frame per part: a line that turns too long here is only skipped at its end.
            let mut frame = None;
            if !self.skipping {
                // One byte more than the cap: the line's `\r`, unknown until its `\n` arrives.
                if self.line.len() + part.len() > self.max_message.saturating_add(1) {
                    frame = Some(self.too_long(part));
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            if ends_line {
                if self.skipping {
                    self.skipping = false;
                } else {
                    frame = Some(self.end_line());
                }
            }
            if frame.is_some() {
                return frame;
            }
        }
        None
    }

    /// End of file: the last line without its `\n`, if any is held (possibly empty), and nothing
    /// if an over-long line was being skipped. Leaves the splitter empty.
    pub(super) fn finish(&mut self) -> Option<Frame> {
        let frame = (!self.skipping).then(|| self.end_line());
        self.skipping = false;
        self.line = Vec::new();
        frame
    }

    /// The current line plus `part` crossed the cap: report it and skip to its end.
    fn too_long(&mut self, part: &[u8]) -> Frame {
        let mut head = std::mem::take(&mut self.line);
        let need = EXCERPT.saturating_sub(head.len()).min(part.len());
        head.extend_from_slice(&part[..need]);
        self.skipping = true;
        too_long_excerpt(&head)
    }

    /// The current line is whole: hand it over, unless it is over the cap.
    fn end_line(&mut self) -> Frame {
        let line = std::mem::take(&mut self.line);
        if self.over_limit(&line) {
            too_long_excerpt(&line)
        } else {
            Frame::Line(line)
        }
    }

    /// Whether a whole line, without its `\n`, is over the cap; its `\r` does not count.
    fn over_limit(&self, line: &[u8]) -> bool {
        line.strip_suffix(b"\r").unwrap_or(line).len() > self.max_message
    }
}

/// The excerpt of an over-long line: always marked as cut.
fn too_long_excerpt(head: &[u8]) -> Frame {
    let mut excerpt = escape(head[..head.len().min(EXCERPT)].trim_ascii());
    excerpt.push('…');
    Frame::TooLong(excerpt)
}
