//! Snapshots for joining: `δ` at a version vector plus the update log up to
//! it, losslessly compressed, split into integrity-checked chunks.
//!
//! Body (before compression): bincode header (version vector, digest, tensor
//! lengths, log codes per origin with the payloads of their delta updates),
//! then every `δ` value as a zigzag LEB128
//! varint. The body is compressed with zstd and cut into [`CHUNK`]-byte
//! chunks; each chunk is named by its BLAKE3 hash and the snapshot by the hash
//! of its header fields and chunk hashes, so identical replicas offer
//! identical snapshots and a joiner can fetch chunks from several of them.

use crate::replica::VersionVector;
use crate::seed::Origin;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;
/// Most chunks a snapshot may have (16 GiB compressed).
pub const MAX_CHUNKS: usize = 1 << 14;

/// Errors of snapshot decoding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A chunk did not match its hash.
    #[error("chunk {0} failed its integrity check")]
    Chunk(usize),
    /// The body could not be decoded.
    #[error("snapshot body: {0}")]
    Body(String),
    /// The contents do not fit this replica.
    #[error("snapshot does not fit: {0}")]
    Mismatch(String),
}

#[derive(Serialize, Deserialize)]
struct Header {
    vv: Vec<(Origin, u64)>,
    digest: [u8; 32],
    lens: Vec<u64>,
    codes: Vec<LogEntries>,
}

/// An origin's log from seq 0: codes, and the payloads of its delta updates
/// (one per [`crate::log::DELTA`] code, in order).
pub type LogEntries = (Origin, Vec<u8>, Vec<Vec<u8>>);

/// A snapshot ready to serve.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Identity: hash of version vector, digest and chunk hashes.
    pub id: [u8; 32],
    /// Version vector of the state.
    pub vv: VersionVector,
    /// Digest of `δ` at `vv`.
    pub digest: [u8; 32],
    /// Uncompressed size of `δ` as raw i32 (for ratios).
    pub raw_len: u64,
    /// BLAKE3 of each chunk.
    pub hashes: Vec<[u8; 32]>,
    /// The chunks.
    pub chunks: Vec<Vec<u8>>,
}

/// The identity of a snapshot from its announced fields.
pub fn id_of(vv: &[(Origin, u64)], digest: &[u8; 32], hashes: &[[u8; 32]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm/snapshot/1");
    for (o, n) in vv {
        h.update(&o.0);
        h.update(&n.to_le_bytes());
    }
    h.update(digest);
    for c in hashes {
        h.update(c);
    }
    *h.finalize().as_bytes()
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    let mut z = ((v << 1) ^ (v >> 31)) as u32;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Encodes `δ` (per tensor), its version vector and digest, and the log codes.
pub fn encode(
    deltas: &[&[i32]],
    vv: &VersionVector,
    digest: [u8; 32],
    codes: Vec<LogEntries>,
) -> Snapshot {
    let header = Header {
        vv: vv.iter().map(|(o, n)| (*o, *n)).collect(),
        digest,
        lens: deltas.iter().map(|d| d.len() as u64).collect(),
        codes,
    };
    let head =
        bincode::serde::encode_to_vec(&header, bincode::config::standard()).unwrap_or_default();
    let raw_len: u64 = deltas.iter().map(|d| 4 * d.len() as u64).sum();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).expect("zstd encoder");
    let mut buf = Vec::with_capacity(1 << 16);
    let mut ok =
        enc.write_all(&(head.len() as u64).to_le_bytes()).is_ok() && enc.write_all(&head).is_ok();
    for d in deltas {
        for chunk in d.chunks(1 << 14) {
            buf.clear();
            for &v in chunk {
                put_varint(&mut buf, v);
            }
            ok &= enc.write_all(&buf).is_ok();
        }
    }
    let body = if ok {
        enc.finish().unwrap_or_default()
    } else {
        Vec::new()
    };
    let chunks: Vec<Vec<u8>> = body.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    let hashes: Vec<[u8; 32]> = chunks.iter().map(|c| *blake3::hash(c).as_bytes()).collect();
    Snapshot {
        id: id_of(&header.vv, &digest, &hashes),
        vv: vv.clone(),
        digest,
        raw_len,
        hashes,
        chunks,
    }
}

/// A decoded snapshot.
pub struct Decoded {
    /// Version vector.
    pub vv: VersionVector,
    /// Digest announced for `δ`.
    pub digest: [u8; 32],
    /// `δ` per tensor.
    pub deltas: Vec<Vec<i32>>,
    /// Log codes per origin (seqs `0..n`) with their delta payloads.
    pub codes: Vec<LogEntries>,
}

/// Checks each chunk against its hash, then decodes; `lens` are the replica's tensor lengths.
pub fn decode(chunks: &[Vec<u8>], hashes: &[[u8; 32]], lens: &[usize]) -> Result<Decoded, Error> {
    for (i, (c, h)) in chunks.iter().zip(hashes).enumerate() {
        if blake3::hash(c).as_bytes() != h {
            return Err(Error::Chunk(i));
        }
    }
    if chunks.len() != hashes.len() {
        return Err(Error::Body("chunk count differs from the offer".into()));
    }
    let total: usize = lens.iter().sum();
    // A varint takes at most 5 bytes; the header is bounded by the log size.
    let limit = (5 * total as u64).saturating_add(1 << 30);
    let reader = std::io::Cursor::new(chunks.concat());
    let mut dec = zstd::stream::Decoder::new(reader)
        .map_err(|e| Error::Body(e.to_string()))?
        .take(limit);
    let mut len8 = [0u8; 8];
    dec.read_exact(&mut len8)
        .map_err(|e| Error::Body(e.to_string()))?;
    let head_len = u64::from_le_bytes(len8);
    if head_len > 1 << 30 {
        return Err(Error::Body("header too large".into()));
    }
    let mut head = vec![0u8; head_len as usize];
    dec.read_exact(&mut head)
        .map_err(|e| Error::Body(e.to_string()))?;
    let (header, _): (Header, usize) = bincode::serde::decode_from_slice(
        &head,
        bincode::config::standard().with_limit::<{ 1 << 30 }>(),
    )
    .map_err(|e| Error::Body(e.to_string()))?;
    if header.lens.len() != lens.len() || header.lens.iter().zip(lens).any(|(a, &b)| *a != b as u64)
    {
        return Err(Error::Mismatch(
            "tensor shapes differ from this replica's".into(),
        ));
    }
    let mut rest = Vec::new();
    dec.read_to_end(&mut rest)
        .map_err(|e| Error::Body(e.to_string()))?;
    let mut deltas = Vec::with_capacity(lens.len());
    let mut pos = 0usize;
    for &n in lens {
        let mut d = Vec::with_capacity(n);
        for _ in 0..n {
            let mut z: u32 = 0;
            let mut shift = 0;
            loop {
                let &b = rest
                    .get(pos)
                    .ok_or_else(|| Error::Body("truncated values".into()))?;
                pos += 1;
                if shift == 28 && b > 0x0f {
                    return Err(Error::Body("varint overflows i32".into()));
                }
                z |= u32::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            d.push(((z >> 1) as i32) ^ -((z & 1) as i32));
        }
        deltas.push(d);
    }
    if pos != rest.len() {
        return Err(Error::Body("trailing bytes".into()));
    }
    let vv: VersionVector = header.vv.into_iter().collect();
    for (o, c, p) in &header.codes {
        if vv.get(o).copied().unwrap_or(0) != c.len() as u64 {
            return Err(Error::Body(
                "log codes do not match the version vector".into(),
            ));
        }
        if c.iter().filter(|&&x| x == crate::log::DELTA).count() != p.len() {
            return Err(Error::Body(
                "delta payloads do not match the log's delta updates".into(),
            ));
        }
    }
    Ok(Decoded {
        vv,
        digest: header.digest,
        deltas,
        codes: header.codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_integrity() {
        let a: Vec<i32> = (0..300_000i64)
            .map(|i| (i * 7919 % 2001) as i32 - 1000)
            .collect();
        let b = vec![i32::MIN, i32::MAX, 0, -1, 1];
        let vv: VersionVector = [(Origin([1; 32]), 3)].into_iter().collect();
        let s = encode(
            &[&a, &b],
            &vv,
            [9; 32],
            vec![(Origin([1; 32]), vec![1, 2, 3], vec![])],
        );
        assert!(s.chunks.iter().map(Vec::len).sum::<usize>() < 4 * a.len());
        let d = decode(&s.chunks, &s.hashes, &[a.len(), b.len()]).unwrap();
        assert_eq!(d.deltas, vec![a.clone(), b.clone()]);
        assert_eq!(d.vv, vv);
        assert_eq!(d.codes, vec![(Origin([1; 32]), vec![1, 2, 3], vec![])]);
        // Identical states give identical snapshot ids.
        let again = encode(
            &[&a, &b],
            &vv,
            [9; 32],
            vec![(Origin([1; 32]), vec![1, 2, 3], vec![])],
        );
        assert_eq!(again.id, s.id);
        let mut bad = s.chunks.clone();
        bad[0][10] ^= 1;
        assert!(matches!(
            decode(&bad, &s.hashes, &[a.len(), b.len()]),
            Err(Error::Chunk(0))
        ));
        assert!(matches!(
            decode(&s.chunks, &s.hashes, &[a.len()]),
            Err(Error::Mismatch(_))
        ));
    }

    #[test]
    fn delta_payloads_travel_with_the_log() {
        let d = vec![5i32; 10];
        let o = Origin([1; 32]);
        let vv: VersionVector = [(o, 3)].into_iter().collect();
        let codes = vec![(o, vec![1, crate::log::DELTA, 3], vec![vec![7u8; 40]])];
        let s = encode(&[&d], &vv, [9; 32], codes.clone());
        let got = decode(&s.chunks, &s.hashes, &[10]).unwrap();
        assert_eq!(got.codes, codes);
        // A delta marker without its payload is refused.
        let bad = encode(
            &[&d],
            &vv,
            [9; 32],
            vec![(o, vec![1, crate::log::DELTA, 3], vec![])],
        );
        assert!(matches!(
            decode(&bad.chunks, &bad.hashes, &[10]),
            Err(Error::Body(_))
        ));
    }
}
