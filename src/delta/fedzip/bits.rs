//! Bit-level codings: an LSB-first bit writer and reader, the Rice-coded
//! position gaps, and canonical Huffman codes of centroid ids.

use super::{BLOCK, MAX_CODE_LEN, RICE_BITS};
use std::collections::BinaryHeap;

/// Bits of each position in the `plain` coding: `ceil(log2(len))`.
pub(super) fn plain_width(len: u64) -> u32 {
    if len <= 1 {
        0
    } else {
        64 - (len - 1).leading_zeros()
    }
}

pub(super) fn write_gaps(w: &mut BitWriter, positions: &[u32]) {
    let mut prev: i64 = -1;
    let gaps: Vec<u64> = positions
        .iter()
        .map(|&p| {
            let g = (i64::from(p) - prev - 1).max(0) as u64;
            prev = i64::from(p);
            g
        })
        .collect();
    for block in gaps.chunks(BLOCK) {
        let r = best_rice(block);
        w.write(u64::from(r), RICE_BITS);
        for &g in block {
            let q = g >> r;
            for _ in 0..q {
                w.write(1, 1);
            }
            w.write(0, 1);
            w.write(g & ((1u64 << r) - 1), r);
        }
    }
}

/// The Rice parameter giving the fewest bits for a block (ties: lower).
fn best_rice(block: &[u64]) -> u32 {
    let mut best = (u64::MAX, 0u32);
    for r in 0..(1u32 << RICE_BITS) {
        let bits: u64 = block.iter().map(|&g| (g >> r) + 1 + u64::from(r)).sum();
        if bits < best.0 {
            best = (bits, r);
        }
    }
    best.1
}

/// Huffman code lengths (0 for unused symbols, at most [`MAX_CODE_LEN`]);
/// a single used symbol gets length 1. Deterministic: ties in the merge
/// order go to the lower node number (leaves by symbol, then internal nodes
/// in creation order).
pub(super) fn huffman_lengths(freq: &[u64]) -> Vec<u8> {
    let mut freq = freq.to_vec();
    loop {
        let lengths = huffman_once(&freq);
        if lengths.iter().all(|&l| l <= MAX_CODE_LEN) {
            return lengths;
        }
        // Flatten the distribution and retry; keeps used symbols used.
        for f in freq.iter_mut().filter(|f| **f > 0) {
            *f = (*f >> 1) | 1;
        }
    }
}

fn huffman_once(freq: &[u64]) -> Vec<u8> {
    use std::cmp::Reverse;
    let n = freq.len();
    let mut lengths = vec![0u8; n];
    let used: Vec<usize> = (0..n).filter(|&i| freq[i] > 0).collect();
    match used.len() {
        0 => return lengths,
        1 => {
            lengths[used[0]] = 1;
            return lengths;
        }
        _ => {}
    }
    // parent[node]; leaves are 0..n, internal nodes n.. in creation order.
    let mut parent = vec![usize::MAX; 2 * n];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
        used.iter().map(|&i| Reverse((freq[i], i))).collect();
    let mut next = n;
    while heap.len() > 1 {
        let (Some(Reverse((wa, a))), Some(Reverse((wb, b)))) = (heap.pop(), heap.pop()) else {
            break;
        };
        parent[a] = next;
        parent[b] = next;
        heap.push(Reverse((wa.saturating_add(wb), next)));
        next += 1;
    }
    for &i in &used {
        let mut depth = 0u32;
        let mut node = i;
        while parent[node] != usize::MAX {
            node = parent[node];
            depth += 1;
        }
        lengths[i] = depth.min(255) as u8;
    }
    lengths
}

/// Canonical code words `(code, length)` per symbol, assigned in order of
/// (length, symbol).
pub(super) fn canonical_codes(lengths: &[u8]) -> Vec<(u32, u8)> {
    let mut order: Vec<usize> = (0..lengths.len()).filter(|&i| lengths[i] > 0).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let mut codes = vec![(0u32, 0u8); lengths.len()];
    let mut code: u64 = 0;
    let mut prev_len = 0u8;
    for (n, &i) in order.iter().enumerate() {
        let l = lengths[i];
        if n > 0 {
            code = (code + 1) << (l - prev_len);
        }
        prev_len = l;
        codes[i] = (code as u32, l);
    }
    codes
}

#[derive(Default)]
pub(super) struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Appends the low `bits` (≤ 32; more are cut to 32) bits of `v`, LSB first.
    pub(super) fn write(&mut self, v: u64, bits: u32) {
        let bits = bits.min(32);
        if bits == 0 {
            return;
        }
        self.acc |= (v & ((1u64 << bits) - 1)) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

pub(super) struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bits read so far.
    pub(super) pos: usize,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Reads `bits` (≤ 32) bits, LSB first.
    pub(super) fn read(&mut self, bits: u32) -> Result<u32, ()> {
        if bits == 0 {
            return Ok(0);
        }
        let end = self.pos + bits as usize;
        if end > 8 * self.bytes.len() {
            return Err(());
        }
        let first = self.pos / 8;
        let mut acc: u64 = 0;
        for (i, &b) in self.bytes[first..].iter().take(5).enumerate() {
            acc |= u64::from(b) << (8 * i);
        }
        let v = (acc >> (self.pos % 8)) & ((1u64 << bits) - 1);
        self.pos = end;
        Ok(v as u32)
    }
}

/// A canonical Huffman decoding table (code lengths per symbol).
pub(super) struct Table {
    /// Symbols with a code, sorted by (length, symbol).
    symbols: Vec<u8>,
    /// Number of codes of each length 0..=32.
    counts: [u32; MAX_CODE_LEN as usize + 1],
    /// The only symbol when exactly one is used (zero-bit code).
    single: Option<u8>,
}

impl Table {
    pub(super) fn new(lengths: &[u8]) -> Result<Self, String> {
        let mut counts = [0u32; MAX_CODE_LEN as usize + 1];
        for (i, &l) in lengths.iter().enumerate() {
            if l > MAX_CODE_LEN {
                return Err(format!("code length {l} of id {i} exceeds {MAX_CODE_LEN}"));
            }
            if l > 0 {
                counts[l as usize] += 1;
            }
        }
        let used: Vec<usize> = (0..lengths.len()).filter(|&i| lengths[i] > 0).collect();
        let single = match used.len() {
            0 => return Err("no id has a code".into()),
            1 if lengths[used[0]] == 1 => Some(used[0] as u8),
            1 => return Err("a single used id must have code length 1".into()),
            _ => {
                let kraft: u64 = used
                    .iter()
                    .map(|&i| 1u64 << (MAX_CODE_LEN - lengths[i]))
                    .sum();
                if kraft != 1u64 << MAX_CODE_LEN {
                    return Err("Huffman code lengths do not form a complete code".into());
                }
                None
            }
        };
        let mut symbols: Vec<u8> = used.iter().map(|&i| i as u8).collect();
        symbols.sort_by_key(|&s| (lengths[s as usize], s));
        Ok(Self {
            symbols,
            counts,
            single,
        })
    }

    pub(super) fn decode(&self, br: &mut BitReader<'_>) -> Result<u8, ()> {
        if let Some(s) = self.single {
            return Ok(s);
        }
        let (mut code, mut first, mut index) = (0u64, 0u64, 0u64);
        for len in 1..=MAX_CODE_LEN as usize {
            code |= u64::from(br.read(1)?);
            let count = u64::from(self.counts[len]);
            if code - first < count {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        // Unreachable for a complete code.
        Err(())
    }
}
