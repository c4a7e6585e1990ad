//! FedZip compressed sparse deltas (Malekijoo et al., 2021): per-tensor top-z
//! sparsification by magnitude, 1-D k-means quantization of the kept values,
//! and lossless encoding of positions (difference of address) and cluster ids
//! (canonical Huffman).
//!
//! [`compress`] and [`decode`] are deterministic and platform-independent:
//! k-means uses only `+ - * /` and comparisons in a fixed order, so every
//! node that decodes the same bytes gets the same `f32` bits.
//!
//! # Byte format (version 1)
//!
//! Varints are unsigned LEB128 ([`crate::varint`]): at most 10 bytes, minimal
//! (no trailing zero byte), and must fit in `u64`. Bitstreams are packed
//! LSB-first; a code word of the Huffman code is written most significant bit
//! first.
//!
//! ```text
//! delta    = "FZDL" version:u8(=1) tensors:varint tensor*
//! tensor   = name_len:varint(1..=4096) name:utf8
//!            len:varint(<= 2^32)        total over tensors <= max_elements
//!            k:varint(<= 256)           number of centroids
//!            centroid:f32le * k         finite
//!            count:varint(<= len)       kept entries; count > 0 needs k > 0
//!            coding:u8                  0 = diff, 1 = plain
//!            [code_len:u8 * k]          only when count > 0; 0 = unused id
//!            bits_len:varint            bytes of the bitstream that follows
//!            bits:u8 * bits_len         positions, then ids; zero padding to
//!                                       the byte, no spare byte
//! ```
//!
//! Positions, `diff` coding: the gaps `g_i = p_i - p_{i-1} - 1` (with
//! `p_{-1} = -1`) are cut into blocks of 256; each block starts with a 5-bit
//! Rice parameter `r` (the encoder picks the one giving the fewest bits, ties to
//! the lower `r`), then each gap as `g >> r` in unary (that many 1 bits, then a
//! 0) followed by the low `r` bits of `g`.
//!
//! Positions, `plain` coding: each position in `ceil(log2(len))` bits.
//!
//! Ids: a canonical Huffman code (code words assigned in order of (length,
//! id)), lengths 1..=32. With two or more used ids the code must be complete
//! (Kraft sum exactly 1). With exactly one used id its length must be 1 and
//! ids take no bits at all.

use crate::varint;
use serde::{Deserialize, Serialize};
use std::collections::{BinaryHeap, HashSet};
use std::fmt;

/// File magic.
pub const MAGIC: [u8; 4] = *b"FZDL";
/// Format version.
pub const VERSION: u8 = 1;
/// Longest tensor name accepted, in bytes.
pub const MAX_NAME: usize = 4096;
/// Most elements in one tensor (positions are `u32`).
pub const MAX_LEN: u64 = 1 << 32;
/// Most centroids per tensor (ids are `u8`).
pub const MAX_CLUSTERS: usize = 256;
/// Longest Huffman code word, in bits.
const MAX_CODE_LEN: u8 = 32;
/// Gaps per Rice block in the `diff` position coding.
const BLOCK: usize = 256;
/// Bits of the Rice parameter.
const RICE_BITS: u32 = 5;

/// How kept positions are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// Gaps between successive positions, Rice-coded per block of 256.
    #[default]
    Diff,
    /// Each position in `ceil(log2(len))` bits.
    Plain,
}

impl fmt::Display for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Positions::Diff => "diff",
            Positions::Plain => "plain",
        })
    }
}

impl std::str::FromStr for Positions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "diff" => Ok(Positions::Diff),
            "plain" => Ok(Positions::Plain),
            _ => Err(format!(
                "unknown position coding {s:?} (expected diff or plain)"
            )),
        }
    }
}

/// Compression settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Fraction in (0, 1] of the entries of each tensor kept, by magnitude
    /// (`ceil(top_z * len)`, at least 1 for a non-empty tensor).
    pub top_z: f64,
    /// Number of k-means centroids (1..=256).
    pub clusters: usize,
    /// Lloyd iterations.
    pub iterations: usize,
    /// Position coding used when encoding.
    pub positions: Positions,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            top_z: 0.01,
            clusters: 3,
            iterations: 10,
            positions: Positions::Diff,
        }
    }
}

impl Settings {
    /// Rejects out-of-range values with a message naming the field
    /// (`{prefix}.top_z`, ...).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if !(self.top_z > 0.0 && self.top_z <= 1.0) {
            return Err(format!(
                "{prefix}.top_z must be within (0, 1], got {}",
                self.top_z
            ));
        }
        if !(1..=MAX_CLUSTERS).contains(&self.clusters) {
            return Err(format!(
                "{prefix}.clusters must be within 1..={MAX_CLUSTERS}, got {}",
                self.clusters
            ));
        }
        if self.iterations > 1000 {
            return Err(format!(
                "{prefix}.iterations must be at most 1000, got {}",
                self.iterations
            ));
        }
        Ok(())
    }
}

/// One tensor of a delta: `len` entries, of which those at `positions` hold
/// `centroids[ids[i]]` and the rest are zero.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseTensor {
    /// Parameter name.
    pub name: String,
    /// Number of elements of the dense tensor.
    pub len: u64,
    /// Quantization levels (finite).
    pub centroids: Vec<f32>,
    /// Kept positions, strictly increasing, each `< len`.
    pub positions: Vec<u32>,
    /// Centroid index of each kept position.
    pub ids: Vec<u8>,
}

impl SparseTensor {
    /// The dense tensor (`len` entries).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.len as usize];
        for (i, v) in self.values() {
            out[i] = v;
        }
        out
    }

    /// `(position, value)` of each kept entry, in increasing position.
    pub fn values(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.positions
            .iter()
            .zip(&self.ids)
            .map(|(&p, &id)| (p as usize, self.centroids[id as usize]))
    }

    fn validate(&self, index: usize) -> Result<(), Error> {
        let bad = |message: String| Error::Invalid {
            context: context(index, &self.name),
            message,
        };
        if self.name.is_empty() || self.name.len() > MAX_NAME {
            return Err(bad(format!(
                "name must be 1..={MAX_NAME} bytes, got {}",
                self.name.len()
            )));
        }
        if self.len > MAX_LEN {
            return Err(bad(format!("len {} exceeds 2^32", self.len)));
        }
        if self.centroids.len() > MAX_CLUSTERS {
            return Err(bad(format!("{} centroids", self.centroids.len())));
        }
        if let Some(c) = self.centroids.iter().find(|c| !c.is_finite()) {
            return Err(bad(format!("non-finite centroid {c}")));
        }
        if self.positions.len() != self.ids.len() {
            return Err(bad("positions and ids differ in length".into()));
        }
        let mut prev: Option<u32> = None;
        for &p in &self.positions {
            if u64::from(p) >= self.len || prev.is_some_and(|q| p <= q) {
                return Err(bad(format!("position {p} out of order or range")));
            }
            prev = Some(p);
        }
        if let Some(id) = self
            .ids
            .iter()
            .find(|&&id| id as usize >= self.centroids.len())
        {
            return Err(bad(format!(
                "id {id} not below {} centroids",
                self.centroids.len()
            )));
        }
        Ok(())
    }
}

/// A compressed delta: one sparse tensor per parameter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    /// The tensors, in input order; names are unique.
    pub tensors: Vec<SparseTensor>,
}

impl Delta {
    /// Total dense elements.
    pub fn elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }

    /// Total kept entries.
    pub fn kept(&self) -> u64 {
        self.tensors.iter().map(|t| t.positions.len() as u64).sum()
    }

    /// Checks every invariant [`decode`] checks (except the element bound).
    /// [`encode`] of a delta that fails this gives bytes that do not decode.
    pub fn validate(&self) -> Result<(), Error> {
        let mut names = HashSet::new();
        for (i, t) in self.tensors.iter().enumerate() {
            t.validate(i)?;
            if !names.insert(t.name.as_str()) {
                return Err(Error::DuplicateName {
                    name: t.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Errors of compression and decoding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Settings out of range.
    #[error("invalid FedZip settings: {0}")]
    Settings(String),
    /// An input value was NaN or infinite.
    #[error("tensor {name}: element {index} is not finite ({value})")]
    NonFinite {
        name: String,
        index: usize,
        value: f32,
    },
    /// A tensor name is used twice.
    #[error("duplicate tensor name {name:?}")]
    DuplicateName { name: String },
    /// The input does not start with the magic.
    #[error("not a FedZip delta (bad magic)")]
    Magic,
    /// Unknown format version.
    #[error("unsupported FedZip delta version {0} (expected {VERSION})")]
    Version(u8),
    /// The input ended early.
    #[error("truncated FedZip delta: {0} runs past the end")]
    Truncated(String),
    /// Bytes after the last tensor.
    #[error("{0} trailing bytes after the last tensor")]
    Trailing(usize),
    /// More elements than the caller allows (`context` names the tensor
    /// that crossed the bound).
    #[error("{context}: the delta holds more than the allowed {max} elements")]
    TooLarge { context: String, max: u64 },
    /// A structurally invalid field.
    #[error("{context}: {message}")]
    Invalid { context: String, message: String },
}

fn context(index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("tensor {index}")
    } else {
        format!("tensor {index} ({name:?})")
    }
}

// ---------------------------------------------------------------- compress --

/// Top-z sparsification (the largest magnitudes, exact zeros never kept) and
/// k-means quantization of each tensor.
///
/// Rejects invalid settings, non-finite values (naming the tensor and
/// element), tensors of more than 2^32 elements, empty, over-long or duplicate
/// names.
pub fn compress(tensors: &[(&str, &[f32])], s: &Settings) -> Result<Delta, Error> {
    use rayon::prelude::*;
    s.validate("fedzip").map_err(Error::Settings)?;
    let mut names = HashSet::new();
    for (i, (name, values)) in tensors.iter().enumerate() {
        if !names.insert(*name) {
            return Err(Error::DuplicateName {
                name: name.to_string(),
            });
        }
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Error::Invalid {
                context: context(i, name),
                message: format!("name must be 1..={MAX_NAME} bytes, got {}", name.len()),
            });
        }
        if values.len() as u64 > MAX_LEN {
            return Err(Error::Invalid {
                context: context(i, name),
                message: format!("{} elements exceed 2^32", values.len()),
            });
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                name: name.to_string(),
                index,
                value: values[index],
            });
        }
    }
    let tensors = tensors
        .par_iter()
        .map(|(name, values)| compress_one(name, values, s))
        .collect();
    Ok(Delta { tensors })
}

/// Number of entries kept of `len` at fraction `top_z`.
pub fn kept_count(len: usize, top_z: f64) -> usize {
    if len == 0 {
        return 0;
    }
    let k = (top_z * len as f64).ceil();
    if k >= len as f64 {
        len
    } else if k >= 1.0 {
        k as usize
    } else {
        1
    }
}

fn compress_one(name: &str, values: &[f32], s: &Settings) -> SparseTensor {
    // Exact zeros carry nothing: an untouched tensor (or row) costs no entries.
    let nonzero = values.iter().filter(|&&v| v != 0.0).count();
    let keep = kept_count(values.len(), s.top_z).min(nonzero);
    let positions = top_positions(values, keep);
    let kept: Vec<f32> = positions.iter().map(|&p| values[p as usize]).collect();
    let (centroids, ids) = if kept.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        kmeans(&kept, s.clusters, s.iterations)
    };
    SparseTensor {
        name: name.to_string(),
        len: values.len() as u64,
        centroids,
        positions,
        ids,
    }
}

/// Positions of the `keep` entries largest in magnitude (ties: lower index
/// first), in increasing order.
fn top_positions(values: &[f32], keep: usize) -> Vec<u32> {
    if keep == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..values.len() as u64).map(|i| i as u32).collect();
    if keep < idx.len() {
        // A strict total order (values are finite), so the kept set is unique.
        idx.select_nth_unstable_by(keep - 1, |&a, &b| {
            let (x, y) = (values[a as usize].abs(), values[b as usize].abs());
            y.total_cmp(&x).then(a.cmp(&b))
        });
        idx.truncate(keep);
    }
    idx.sort_unstable();
    idx
}

/// 1-D k-means: centroids start evenly spaced between min and max, then
/// `iterations` Lloyd steps; returns the centroids and each value's id.
fn kmeans(values: &[f32], k: usize, iterations: usize) -> (Vec<f32>, Vec<u8>) {
    let (mut lo, mut hi) = (values[0], values[0]);
    for &v in values {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    let mut centroids: Vec<f32> = (0..k)
        .map(|j| {
            if k == 1 {
                (lo + (hi - lo) / 2.0) as f32
            } else {
                (lo + (hi - lo) * j as f64 / (k - 1) as f64) as f32
            }
        })
        .collect();
    let mut ids = vec![0u8; values.len()];
    let mut sums = vec![0f64; k];
    let mut counts = vec![0u64; k];
    for _ in 0..iterations {
        assign(values, &centroids, &mut ids);
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        for (&v, &id) in values.iter().zip(&ids) {
            sums[id as usize] += f64::from(v);
            counts[id as usize] += 1;
        }
        for j in 0..k {
            if counts[j] > 0 {
                centroids[j] = (sums[j] / counts[j] as f64) as f32;
            }
        }
    }
    assign(values, &centroids, &mut ids);
    (centroids, ids)
}

/// Nearest centroid of each value (ties: lower index).
fn assign(values: &[f32], centroids: &[f32], ids: &mut [u8]) {
    for (&v, id) in values.iter().zip(ids.iter_mut()) {
        let v = f64::from(v);
        let mut best = 0usize;
        let mut best_d = (v - f64::from(centroids[0])).abs();
        for (j, &c) in centroids.iter().enumerate().skip(1) {
            let d = (v - f64::from(c)).abs();
            if d < best_d {
                best = j;
                best_d = d;
            }
        }
        *id = best as u8;
    }
}

// ------------------------------------------------------------------ encode --

/// Encodes a delta losslessly. `d` must be valid (see [`Delta::validate`]);
/// otherwise the bytes do not decode (this never panics).
pub fn encode(d: &Delta, positions: Positions) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    varint::put(&mut out, d.tensors.len() as u64);
    for t in &d.tensors {
        varint::put(&mut out, t.name.len() as u64);
        out.extend_from_slice(t.name.as_bytes());
        varint::put(&mut out, t.len);
        varint::put(&mut out, t.centroids.len() as u64);
        for c in &t.centroids {
            out.extend_from_slice(&c.to_le_bytes());
        }
        let count = t.positions.len().min(t.ids.len());
        varint::put(&mut out, count as u64);
        out.push(match positions {
            Positions::Diff => 0,
            Positions::Plain => 1,
        });
        if count == 0 {
            varint::put(&mut out, 0);
            continue;
        }
        let mut freq = vec![0u64; t.centroids.len()];
        for &id in &t.ids {
            if let Some(f) = freq.get_mut(id as usize) {
                *f += 1;
            }
        }
        let lengths = huffman_lengths(&freq);
        out.extend_from_slice(&lengths);
        let codes = canonical_codes(&lengths);
        let mut w = BitWriter::default();
        match positions {
            Positions::Diff => write_gaps(&mut w, &t.positions),
            Positions::Plain => {
                let width = plain_width(t.len);
                for &p in &t.positions {
                    w.write(u64::from(p), width);
                }
            }
        }
        if lengths.iter().filter(|&&l| l > 0).count() > 1 {
            for &id in &t.ids {
                let (code, len) = codes.get(id as usize).copied().unwrap_or((0, 0));
                // Code words go most significant bit first.
                for b in (0..len).rev() {
                    w.write(u64::from((code >> b) & 1), 1);
                }
            }
        }
        let bits = w.finish();
        varint::put(&mut out, bits.len() as u64);
        out.extend_from_slice(&bits);
    }
    out
}

/// Bits of each position in the `plain` coding: `ceil(log2(len))`.
fn plain_width(len: u64) -> u32 {
    if len <= 1 {
        0
    } else {
        64 - (len - 1).leading_zeros()
    }
}

fn write_gaps(w: &mut BitWriter, positions: &[u32]) {
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
fn huffman_lengths(freq: &[u64]) -> Vec<u8> {
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
fn canonical_codes(lengths: &[u8]) -> Vec<(u32, u8)> {
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
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Appends the low `bits` (≤ 32; more are cut to 32) bits of `v`, LSB first.
    fn write(&mut self, v: u64, bits: u32) {
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

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

// ------------------------------------------------------------------ decode --

/// Decodes and validates a delta whose tensors hold at most `max_elements`
/// elements in total. Never panics; allocates at most a small multiple of
/// `bytes.len()` (plus names and centroids, bounded by the input).
pub fn decode(bytes: &[u8], max_elements: u64) -> Result<Delta, Error> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(4, "magic")? != MAGIC {
        return Err(Error::Magic);
    }
    let version = r.take(1, "version")?[0];
    if version != VERSION {
        return Err(Error::Version(version));
    }
    let n = r.varint("tensor count")?;
    // Each tensor takes at least 7 bytes.
    if n > (r.remaining() / 7) as u64 {
        return Err(Error::Truncated(format!("{n} tensors")));
    }
    let mut tensors = Vec::with_capacity(n as usize);
    let mut names = HashSet::new();
    let mut total: u64 = 0;
    for index in 0..n as usize {
        let t = decode_tensor(&mut r, index, max_elements, &mut total)?;
        if !names.insert(t.name.clone()) {
            return Err(Error::DuplicateName { name: t.name });
        }
        tensors.push(t);
    }
    if r.remaining() > 0 {
        return Err(Error::Trailing(r.remaining()));
    }
    Ok(Delta { tensors })
}

fn decode_tensor(
    r: &mut Reader<'_>,
    index: usize,
    max_elements: u64,
    total: &mut u64,
) -> Result<SparseTensor, Error> {
    let ctx = |name: &str| context(index, name);
    let name_len = r.varint("name length")?;
    if name_len == 0 || name_len > MAX_NAME as u64 {
        return Err(Error::Invalid {
            context: ctx(""),
            message: format!("name length {name_len} not within 1..={MAX_NAME}"),
        });
    }
    let raw = r.take(name_len as usize, "name")?;
    let name = std::str::from_utf8(raw)
        .map_err(|_| Error::Invalid {
            context: ctx(""),
            message: "name is not UTF-8".into(),
        })?
        .to_string();
    let bad = |message: String| Error::Invalid {
        context: ctx(&name),
        message,
    };
    let len = r.varint("len")?;
    if len > MAX_LEN {
        return Err(bad(format!("len {len} exceeds 2^32")));
    }
    *total = total.saturating_add(len);
    if *total > max_elements {
        return Err(Error::TooLarge {
            context: ctx(&name),
            max: max_elements,
        });
    }
    let k = r.varint("centroid count")?;
    if k > MAX_CLUSTERS as u64 {
        return Err(bad(format!("{k} centroids, more than {MAX_CLUSTERS}")));
    }
    let k = k as usize;
    let raw = r.take(4 * k, "centroids")?;
    let centroids: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(c) = centroids.iter().find(|c| !c.is_finite()) {
        return Err(bad(format!("non-finite centroid {c}")));
    }
    let count = r.varint("kept count")?;
    if count > len {
        return Err(bad(format!("{count} kept entries of {len}")));
    }
    if count > 0 && k == 0 {
        return Err(bad(format!("{count} kept entries but no centroids")));
    }
    let coding = match r.take(1, "position coding")?[0] {
        0 => Positions::Diff,
        1 => Positions::Plain,
        c => return Err(bad(format!("unknown position coding {c}"))),
    };
    let lengths = if count > 0 {
        r.take(k, "code lengths")?.to_vec()
    } else {
        Vec::new()
    };
    let bits_len = r.varint("bitstream length")?;
    if bits_len > r.remaining() as u64 {
        return Err(Error::Truncated(format!("{} bitstream", ctx(&name))));
    }
    let bits = r.take(bits_len as usize, "bitstream")?;
    // Every position after the first costs at least one bit, so this bounds
    // the allocation by the input length.
    if count > 1 && count > 8 * bits_len {
        return Err(bad(format!(
            "{count} kept entries cannot fit in {bits_len} bytes"
        )));
    }
    let count = count as usize;
    let mut positions = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    if count > 0 {
        let table = Table::new(&lengths).map_err(bad)?;
        let mut br = BitReader::new(bits);
        let trunc = |_| Error::Truncated(format!("{} bitstream", ctx(&name)));
        match coding {
            Positions::Diff => {
                let mut next: u64 = 0; // smallest allowed next position
                while positions.len() < count {
                    let rice = br.read(RICE_BITS).map_err(trunc)?;
                    for _ in 0..BLOCK.min(count - positions.len()) {
                        let mut q: u64 = 0;
                        while br.read(1).map_err(trunc)? == 1 {
                            q += 1;
                            if q > (MAX_LEN - 1) >> rice {
                                return Err(bad("gap out of range".into()));
                            }
                        }
                        let g = (q << rice) | u64::from(br.read(rice).map_err(trunc)?);
                        let p = next + g;
                        if p >= len {
                            return Err(bad(format!("position {p} not below len {len}")));
                        }
                        positions.push(p as u32);
                        next = p + 1;
                    }
                }
            }
            Positions::Plain => {
                let width = plain_width(len);
                let mut prev: Option<u64> = None;
                for _ in 0..count {
                    let p = u64::from(br.read(width).map_err(trunc)?);
                    if p >= len {
                        return Err(bad(format!("position {p} not below len {len}")));
                    }
                    if prev.is_some_and(|q| p <= q) {
                        return Err(bad(format!("position {p} not increasing")));
                    }
                    positions.push(p as u32);
                    prev = Some(p);
                }
            }
        }
        for _ in 0..count {
            ids.push(table.decode(&mut br).map_err(trunc)?);
        }
        let used = br.pos.div_ceil(8);
        if used != bits.len() {
            return Err(bad(format!(
                "bitstream holds {} bytes, {used} used",
                bits.len()
            )));
        }
        if !br.pos.is_multiple_of(8) && bits[bits.len() - 1] >> (br.pos % 8) != 0 {
            return Err(bad("nonzero padding bits".into()));
        }
    } else if bits_len != 0 {
        return Err(bad(format!("{bits_len} bitstream bytes for no entries")));
    }
    Ok(SparseTensor {
        name,
        len,
        centroids,
        positions,
        ids,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::Truncated(what.to_string()));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn varint(&mut self, what: &str) -> Result<u64, Error> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let (v, n) = varint::decode(rest).map_err(|e| match e {
            varint::Error::Truncated => Error::Truncated(what.to_string()),
            e => Error::Invalid {
                context: "varint".into(),
                message: format!("{what}: {e}"),
            },
        })?;
        self.pos += n;
        Ok(v)
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Reads `bits` (≤ 32) bits, LSB first.
    fn read(&mut self, bits: u32) -> Result<u32, ()> {
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
struct Table {
    /// Symbols with a code, sorted by (length, symbol).
    symbols: Vec<u8>,
    /// Number of codes of each length 0..=32.
    counts: [u32; MAX_CODE_LEN as usize + 1],
    /// The only symbol when exactly one is used (zero-bit code).
    single: Option<u8>,
}

impl Table {
    fn new(lengths: &[u8]) -> Result<Self, String> {
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

    fn decode(&self, br: &mut BitReader<'_>) -> Result<u8, ()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Deterministic standard normal samples (splitmix64 + Box-Muller; the
    /// transcendental functions are only used to make test data).
    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (next().max(1e-300), next());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    }

    fn golden_input() -> (Vec<f32>, Vec<f32>) {
        let a = vec![0.5, -1.0, 0.0, 2.0, -0.25, 3.0, 0.1, -2.5, 1.5, -3.0];
        let b = vec![0.0, 0.75, -0.75, 0.75];
        (a, b)
    }

    #[test]
    fn golden_vector() {
        let (a, b) = golden_input();
        let s = Settings {
            top_z: 0.5,
            ..Settings::default()
        };
        let d = compress(&[("a", &a), ("b", &b)], &s).unwrap();
        let t = &d.tensors[0];
        assert_eq!(t.positions, vec![3, 5, 7, 8, 9]);
        assert_eq!(t.centroids, GOLDEN_CENTROIDS_A.to_vec());
        assert_eq!(t.ids, GOLDEN_IDS_A.to_vec());
        // Ties in magnitude: the lower index wins.
        assert_eq!(d.tensors[1].positions, vec![1, 2]);
        let bytes = encode(&d, Positions::Diff);
        assert_eq!(hex(&bytes), GOLDEN_DIFF);
        assert_eq!(hex(&encode(&d, Positions::Plain)), GOLDEN_PLAIN);
        assert_eq!(decode(&bytes, 14).unwrap(), d);
        assert_eq!(
            t.to_dense(),
            vec![
                0.0,
                0.0,
                0.0,
                t.centroids[t.ids[0] as usize],
                0.0,
                t.centroids[t.ids[1] as usize],
                0.0,
                t.centroids[t.ids[2] as usize],
                t.centroids[t.ids[3] as usize],
                t.centroids[t.ids[4] as usize],
            ]
        );
    }

    const GOLDEN_CENTROIDS_A: [f32; 3] = [-2.75, 1.75, 3.0];
    const GOLDEN_IDS_A: [u8; 5] = [1, 2, 0, 1, 0];
    /// "FZDL" v1, 2 tensors; "a": len 10, centroids [-2.75, 1.75, 3.0],
    /// 5 kept, diff coding, code lengths [2, 1, 2], 3 bitstream bytes; "b":
    /// len 4, centroids [-0.75, 0, 0.75], 2 kept, code lengths [1, 0, 1].
    const GOLDEN_DIFF: &str = "465a444c010201610a03000030c00000e03f00004040050002010203e00a27\
                               01620403000040bf000000000000403f0200010001022001";
    const GOLDEN_PLAIN: &str = "465a444c010201610a03000030c00000e03f000040400501020102045387e904\
                                01620403000040bf000000000000403f02010100010119";

    #[test]
    fn settings_validate_names_the_field() {
        let s = Settings {
            top_z: 2.0,
            ..Settings::default()
        };
        assert_eq!(
            s.validate("delta").unwrap_err(),
            "delta.top_z must be within (0, 1], got 2"
        );
        let s = Settings {
            clusters: 0,
            ..Settings::default()
        };
        assert!(s.validate("d").unwrap_err().starts_with("d.clusters"));
        assert!(Settings::default().validate("d").is_ok());
        let t: Settings = toml::from_str("top_z = 0.1\npositions = \"plain\"").unwrap();
        assert_eq!(t.positions, Positions::Plain);
        assert_eq!(t.clusters, 3);
        assert!(toml::from_str::<Settings>("topz = 0.1").is_err());
    }

    #[test]
    fn compress_rejects_bad_input() {
        let s = Settings::default();
        let e = compress(&[("w", &[1.0, f32::NAN])], &s).unwrap_err();
        assert!(e.to_string().contains("tensor w: element 1"), "{e}");
        let e = compress(&[("w", &[1.0]), ("w", &[2.0])], &s).unwrap_err();
        assert!(matches!(e, Error::DuplicateName { .. }));
        let bad = Settings {
            top_z: 0.0,
            ..s.clone()
        };
        assert!(matches!(
            compress(&[("w", &[1.0])], &bad),
            Err(Error::Settings(_))
        ));
    }

    #[test]
    fn invalid_delta_encodes_without_panic_and_is_refused() {
        let t = SparseTensor {
            name: "w".into(),
            len: 1 << 40,
            centroids: vec![1.0],
            positions: vec![5, 3],
            ids: vec![0, 7],
        };
        let d = Delta { tensors: vec![t] };
        assert!(d.validate().is_err());
        for coding in [Positions::Diff, Positions::Plain] {
            assert!(decode(&encode(&d, coding), u64::MAX).is_err());
        }
    }

    #[test]
    fn keeps_ceil_top_z() {
        assert_eq!(kept_count(0, 0.5), 0);
        assert_eq!(kept_count(10, 0.01), 1);
        assert_eq!(kept_count(10, 0.15), 2);
        assert_eq!(kept_count(10, 1.0), 10);
        let x = gaussian(1000, 1);
        let d = compress(&[("x", &x)], &Settings::default()).unwrap();
        assert_eq!(d.kept(), 10);
        let min_kept = d.tensors[0]
            .positions
            .iter()
            .map(|&p| x[p as usize].abs())
            .fold(f32::INFINITY, f32::min);
        assert_eq!(x.iter().filter(|v| v.abs() >= min_kept).count(), 10);
    }

    #[test]
    fn single_cluster_and_equal_values() {
        let x = [0.0f32, 1.0, 1.0, 1.0, -1.0];
        for clusters in [1, 3, 256] {
            let s = Settings {
                top_z: 1.0,
                clusters,
                ..Settings::default()
            };
            let d = compress(&[("x", &x)], &s).unwrap();
            for coding in [Positions::Diff, Positions::Plain] {
                assert_eq!(decode(&encode(&d, coding), 5).unwrap(), d);
            }
        }
    }

    fn valid_bytes() -> Vec<u8> {
        let x = gaussian(2000, 7);
        let s = Settings {
            top_z: 0.05,
            ..Settings::default()
        };
        encode(
            &compress(&[("x", &x), ("y", &x[..100])], &s).unwrap(),
            Positions::Diff,
        )
    }

    /// Writes a one-tensor delta by hand: plain coding, two ids with codes
    /// given by `lengths`.
    fn handmade(len: u64, centroids: &[f32], lengths: &[u8], body: &[(u64, u32)]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        varint::put(&mut out, 1);
        varint::put(&mut out, 1);
        out.push(b'w');
        varint::put(&mut out, len);
        varint::put(&mut out, centroids.len() as u64);
        for c in centroids {
            out.extend_from_slice(&c.to_le_bytes());
        }
        let count = body.iter().filter(|(_, w)| *w == plain_width(len)).count();
        varint::put(&mut out, count as u64);
        out.push(1);
        out.extend_from_slice(lengths);
        let mut w = BitWriter::default();
        for &(v, bits) in body {
            w.write(v, bits);
        }
        let bits = w.finish();
        varint::put(&mut out, bits.len() as u64);
        out.extend_from_slice(&bits);
        out
    }

    #[test]
    fn decode_rejects_malformed_input() {
        let good = valid_bytes();
        assert!(decode(&good, 2100).is_ok());
        assert_eq!(
            decode(&good, 2099).unwrap_err().to_string(),
            "tensor 1 (\"y\"): the delta holds more than the allowed 2099 elements"
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(decode(&b, u64::MAX), Err(Error::Magic));
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(decode(&b, u64::MAX), Err(Error::Version(2)));
        let mut b = good.clone();
        b.push(0);
        assert_eq!(decode(&b, u64::MAX), Err(Error::Trailing(1)));
        for n in 0..good.len() {
            assert!(decode(&good[..n], u64::MAX).is_err(), "prefix {n}");
        }
        // Duplicate names.
        let d = compress(&[("x", &[1.0f32][..])], &Settings::default()).unwrap();
        let two = Delta {
            tensors: vec![d.tensors[0].clone(), d.tensors[0].clone()],
        };
        assert!(matches!(
            decode(&encode(&two, Positions::Diff), 10),
            Err(Error::DuplicateName { .. })
        ));
        // Non-finite centroid.
        let mut nan = d.clone();
        nan.tensors[0].centroids[0] = f32::NAN;
        let e = decode(&encode(&nan, Positions::Diff), 10).unwrap_err();
        assert!(e.to_string().contains("non-finite centroid"), "{e}");
        // Hand-made plain-coded tensors: len 5 (3 bits), codes 0 -> "0", 1 -> "1".
        let ok = handmade(5, &[1.0, 2.0], &[1, 1], &[(1, 3), (4, 3), (0, 1), (1, 1)]);
        let t = &decode(&ok, 5).unwrap().tensors[0];
        assert_eq!(
            (t.positions.as_slice(), t.ids.as_slice()),
            (&[1, 4][..], &[0, 1][..])
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                handmade(5, &[1.0, 2.0], &[1, 1], &[(1, 3), (5, 3), (0, 1), (1, 1)]),
                "not below len",
            ),
            (
                handmade(5, &[1.0, 2.0], &[1, 1], &[(3, 3), (2, 3), (0, 1), (1, 1)]),
                "not increasing",
            ),
            (
                handmade(5, &[1.0, 2.0], &[1, 2], &[(1, 3), (4, 3), (0, 1), (1, 1)]),
                "complete code",
            ),
            (
                handmade(5, &[1.0, 2.0, 3.0], &[1, 1, 1], &[(1, 3), (4, 3), (0, 2)]),
                "complete code",
            ),
            (
                handmade(5, &[1.0, 2.0], &[0, 0], &[(1, 3), (4, 3), (0, 2)]),
                "no id has a code",
            ),
            (
                handmade(5, &[1.0, 2.0], &[33, 1], &[(1, 3), (4, 3), (0, 2)]),
                "exceeds 32",
            ),
            (
                handmade(5, &[1.0, 2.0], &[2, 0], &[(1, 3), (4, 3)]),
                "single used id",
            ),
            (
                handmade(
                    5,
                    &[1.0, 2.0],
                    &[1, 1],
                    &[(1, 3), (4, 3), (0, 1), (1, 1), (0, 8)],
                ),
                "used",
            ),
            (
                handmade(
                    4,
                    &[1.0, 2.0],
                    &[1, 1],
                    &[(1, 2), (3, 2), (0, 1), (1, 1), (1, 1)],
                ),
                "padding",
            ),
            (
                handmade(1 << 33, &[1.0, 2.0], &[1, 1], &[(1, 3)]),
                "exceeds 2^32",
            ),
        ];
        for (bytes, want) in cases {
            let e = decode(&bytes, u64::MAX).unwrap_err();
            assert!(e.to_string().contains(want), "{e} (want {want})");
        }
        // A huge count with a short bitstream is refused before allocating.
        let mut b2 = MAGIC.to_vec();
        b2.push(VERSION);
        varint::put(&mut b2, 1);
        varint::put(&mut b2, 1);
        b2.push(b'w');
        varint::put(&mut b2, MAX_LEN);
        varint::put(&mut b2, 1);
        b2.extend_from_slice(&1f32.to_le_bytes());
        varint::put(&mut b2, MAX_LEN);
        b2.extend_from_slice(&[0, 1, 1, 0]);
        let e = decode(&b2, u64::MAX).unwrap_err();
        assert!(e.to_string().contains("cannot fit"), "{e}");
        // Non-minimal varint.
        let mut b3 = MAGIC.to_vec();
        b3.extend_from_slice(&[VERSION, 0x80, 0x00]);
        assert!(decode(&b3, 0).unwrap_err().to_string().contains("minimal"));
        let mut b4 = MAGIC.to_vec();
        b4.push(VERSION);
        b4.extend_from_slice(&[0xff; 10]);
        assert!(decode(&b4, 0).unwrap_err().to_string().contains("overflow"));
    }

    #[test]
    fn sizes_and_ratio() {
        let x = gaussian(1 << 20, 42);
        let raw = 4.0 * x.len() as f64;
        let mut report = Vec::new();
        for top_z in [0.01, 0.1] {
            let s = Settings {
                top_z,
                ..Settings::default()
            };
            let d = compress(&[("x", &x)], &s).unwrap();
            let diff = encode(&d, Positions::Diff).len();
            let plain = encode(&d, Positions::Plain).len();
            assert!(diff < plain, "top_z {top_z}: diff {diff} plain {plain}");
            assert_eq!(decode(&encode(&d, Positions::Diff), 1 << 20).unwrap(), d);
            report.push((top_z, raw / diff as f64, raw / plain as f64));
        }
        eprintln!("1M Gaussian ratios (top_z, diff, plain): {report:?}");
        assert!(report[0].1 > 250.0, "{report:?}");
        assert!(report[1].1 > 45.0, "{report:?}");
    }

    fn arb_tensor() -> impl Strategy<Value = Vec<f32>> {
        let value = prop_oneof![
            (-4i8..=4).prop_map(|v| f32::from(v) * 0.25),
            (-1e3f32..1e3f32),
            any::<f32>().prop_filter("finite", |v| v.is_finite()),
        ];
        prop::collection::vec(value, 0..400)
    }

    fn arb_settings() -> impl Strategy<Value = Settings> {
        (
            prop_oneof![Just(1.0f64), 0.001f64..1.0],
            prop_oneof![1usize..=8, Just(256usize)],
            0usize..=4,
        )
            .prop_map(|(top_z, clusters, iterations)| Settings {
                top_z,
                clusters,
                iterations,
                positions: Positions::Diff,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn roundtrip(tensors in prop::collection::vec(arb_tensor(), 0..4), s in arb_settings()) {
            let names: Vec<String> = (0..tensors.len()).map(|i| format!("t{i}")).collect();
            let input: Vec<(&str, &[f32])> =
                names.iter().map(String::as_str).zip(tensors.iter().map(Vec::as_slice)).collect();
            let d = compress(&input, &s).unwrap();
            prop_assert!(d.validate().is_ok());
            let total = d.elements();
            for coding in [Positions::Diff, Positions::Plain] {
                let bytes = encode(&d, coding);
                prop_assert_eq!(&decode(&bytes, total).unwrap(), &d);
                // Deterministic: compressing again gives the same bytes.
                prop_assert_eq!(encode(&compress(&input, &s).unwrap(), coding), bytes);
            }
            for (t, (_, x)) in d.tensors.iter().zip(&input) {
                let nonzero = x.iter().filter(|&&v| v != 0.0).count();
                prop_assert_eq!(t.positions.len(), kept_count(x.len(), s.top_z).min(nonzero));
                prop_assert!(t.positions.iter().all(|&p| x[p as usize] != 0.0));
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut b = MAGIC.to_vec();
            b.push(VERSION);
            b.extend_from_slice(&bytes);
            let _ = decode(&bytes, u64::MAX);
            let _ = decode(&b, 1 << 20);
        }

        #[test]
        fn bit_flips_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)) {
            let mut b = valid_bytes();
            for (i, bit) in flips {
                let i = i.index(b.len());
                b[i] ^= 1 << bit;
            }
            if let Ok(d) = decode(&b, 1 << 16) {
                prop_assert!(d.validate().is_ok());
                prop_assert_eq!(decode(&encode(&d, Positions::Plain), 1 << 16).unwrap(), d);
            }
        }
    }
}
