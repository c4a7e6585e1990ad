//! FedZip compressed sparse deltas (Malekijoo et al., 2021): per-tensor top-z
//! sparsification by magnitude, 1-D k-means quantization of the kept values,
//! and lossless encoding of positions (difference of address) and cluster ids
//! (canonical Huffman).
//!
//! [`compress`](fn@compress) and [`decode`](fn@decode) are deterministic and
//! platform-independent: k-means uses only `+ - * /` and comparisons in a
//! fixed order, so every node that decodes the same bytes gets the same `f32`
//! bits.
//!
//! Files: `compress` (top-z, k-means), `bits` (bit I/O, Rice and canonical
//! Huffman codes), `encode` and `decode` (the byte format below).
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

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

mod bits;
mod compress;
mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use compress::{compress, kept_count};
pub use decode::decode;
pub use encode::encode;

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

    /// Checks every invariant [`decode`](fn@decode) checks (except the element bound).
    /// [`encode`](fn@encode) of a delta that fails this gives bytes that do not decode.
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
