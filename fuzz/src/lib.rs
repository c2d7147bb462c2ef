//! The input format of the fuzz targets: the fuzzer's bytes read as a script of operations on a
//! decoder, so that one input can queue commands, feed bytes in odd pieces, hit end of file and so on.
//!
//! ```text
//! input := config:u8 op*
//! op    := 'C' len:u8 bytes[len]              command(bytes)
//!        | 'E'                                handle_eof()
//!        | 'A' | 'I' | 'R' | 'S'              abandon / interrupt / reset / resume (guest-shell only)
//!        | 'F' len:u16le split:u8 bytes[len]  feed(bytes), cut into pieces chosen by `split`
//! ```
//!
//! Any other op byte is read as `F` too, so that random bytes mostly feed data. Lengths running past
//! the end of the input are cut short. `split == 0` feeds the bytes in one call; otherwise piece sizes
//! are drawn from a generator seeded by `split`, each in `0..=split` (0 is an empty `feed`).
//! `fuzz/make_seeds.py` writes the committed seeds in this format.

/// One operation on a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Queue a command with these bytes.
    Command(&'a [u8]),
    /// Queue a `test` (`Session::test`) of these bytes, cut into arguments at each space.
    Test(&'a [u8]),
    /// Feed these bytes, cut as [`pieces`] says.
    Feed {
        /// The bytes.
        data: &'a [u8],
        /// How to cut them.
        split: u8,
    },
    /// End of file.
    Eof,
    /// `Session::abandon`.
    Abandon,
    /// `Session::interrupt`.
    Interrupt,
    /// `Session::reset`.
    Reset,
    /// `Session::resume`.
    Resume,
}

/// A parsed input: one configuration byte and the operations.
#[derive(Debug)]
pub struct Script<'a> {
    /// The first byte; each target says what it selects.
    pub config: u8,
    /// The operations, in order.
    pub ops: Vec<Op<'a>>,
}

impl<'a> Script<'a> {
    /// Reads `data` as a script; `None` for an empty input.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&config, mut rest) = data.split_first()?;
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            head
        };
        let mut ops = Vec::new();
        while let Some(&op) = take(1).first() {
            ops.push(match op {
                b'C' => {
                    let len = take(1).first().copied().unwrap_or(0);
                    Op::Command(take(usize::from(len)))
                }
                b'T' => {
                    let len = take(1).first().copied().unwrap_or(0);
                    Op::Test(take(usize::from(len)))
                }
                b'E' => Op::Eof,
                b'A' => Op::Abandon,
                b'I' => Op::Interrupt,
                b'R' => Op::Reset,
                b'S' => Op::Resume,
                _ => {
                    let len = match *take(2) {
                        [lo, hi] => usize::from(u16::from_le_bytes([lo, hi])),
                        [lo] => usize::from(lo),
                        _ => 0,
                    };
                    let split = take(1).first().copied().unwrap_or(0);
                    Op::Feed {
                        data: take(len),
                        split,
                    }
                }
            });
        }
        Some(Self { config, ops })
    }
}

/// Cuts `data` into the pieces to feed: whole for `split == 0`, else sizes in `0..=split` from a
/// generator seeded by `split` (so the same input always gives the same pieces).
pub fn pieces(data: &[u8], split: u8) -> Vec<&[u8]> {
    if split == 0 {
        return vec![data];
    }
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(split);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x % (u64::from(split) + 1)) as usize;
        let (head, tail) = rest.split_at(n.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}
