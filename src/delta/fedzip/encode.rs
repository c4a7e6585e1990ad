//! The byte format, writing side (format in the module docs of [`super`]).

use super::bits::{canonical_codes, huffman_lengths, plain_width, write_gaps, BitWriter};
use super::{Delta, Positions, MAGIC, VERSION};
use crate::varint;

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
