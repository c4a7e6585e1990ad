//! Snapshots for joining: `δ` at a version vector plus the update log up to
//! it, losslessly compressed, split into integrity-checked chunks.
//!
//! Body: `"SSNP" ‖ version: u8 (= 1) ‖ header_len: u64 LE ‖ zstd(bincode
//! header) ‖ segment frames`. The header holds the version vector, digest, tensor lengths, the log codes per
//! origin with the payloads of their delta updates, and the compressed size
//! of every segment frame. `δ` is cut into segments of [`SEGMENT`] values
//! (tensor by tensor); each is an independent zstd frame of zigzag LEB128
//! varints, so segments are encoded and decoded in parallel. The body is cut
//! into [`CHUNK`]-byte chunks; each chunk is named by its BLAKE3 hash and the
//! snapshot by the hash of its header fields and chunk hashes, so identical
//! replicas offer identical snapshots and a joiner can fetch chunks from
//! several of them.

use crate::crdt::log::Segment;
use crate::crdt::replica::Replica;
use crate::crdt::replica::VersionVector;
use crate::varint;
use crate::zo::seed::Origin;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;
/// Most chunks a snapshot may have (16 GiB compressed).
pub const MAX_CHUNKS: usize = 1 << 14;
/// Values of `δ` per independently compressed segment.
pub const SEGMENT: usize = 1 << 20;
/// Magic at the start of a snapshot body.
pub const MAGIC: [u8; 4] = *b"SSNP";
/// Version of the snapshot body format (2: the log carries its origins'
/// signatures).
pub const VERSION: u8 = 2;
/// Largest decompressed header accepted.
const MAX_HEADER: usize = 1 << 30;

/// Errors of snapshot decoding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A chunk did not match its hash.
    #[error("chunk {0} failed its integrity check")]
    Chunk(usize),
    /// The body does not start with [`MAGIC`].
    #[error("not a seedswarm snapshot body (bad magic)")]
    Magic,
    /// The body is of a format version this node cannot read.
    #[error("unsupported snapshot body version {0} (this node reads version {VERSION})")]
    Version(u8),
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
    /// Compressed size of each segment frame, in order.
    segments: Vec<u64>,
}

/// An origin's log from seq 0: codes, the payloads of its delta updates
/// (one per [`crate::zo::codec::DELTA`] code, in order), and the origin's
/// signatures over its batches (first seq, length, signature), in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntries {
    /// Whose.
    pub origin: Origin,
    /// Codes from seq 0.
    pub codes: Vec<u8>,
    /// Delta payloads, in order.
    pub payloads: Vec<Vec<u8>>,
    /// Signatures over its batches.
    pub attests: Vec<(u64, u32, Vec<u8>)>,
}

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

/// Encodes `δ` (per tensor), its version vector and digest, and the log codes.
pub fn encode(
    deltas: &[&[i32]],
    vv: &VersionVector,
    digest: [u8; 32],
    codes: Vec<LogEntries>,
) -> Snapshot {
    let segments: Vec<&[i32]> = deltas.iter().flat_map(|d| d.chunks(SEGMENT)).collect();
    let frames: Vec<Vec<u8>> = segments
        .par_iter()
        .map(|seg| {
            let mut buf = Vec::with_capacity(seg.len() * 2);
            for &v in *seg {
                varint::put(&mut buf, u64::from(varint::zigzag(v)));
            }
            zstd::bulk::compress(&buf, 1).unwrap_or_default()
        })
        .collect();
    let header = Header {
        vv: vv.iter().map(|(o, n)| (*o, *n)).collect(),
        digest,
        lens: deltas.iter().map(|d| d.len() as u64).collect(),
        codes,
        segments: frames.iter().map(|f| f.len() as u64).collect(),
    };
    let head =
        bincode::serde::encode_to_vec(&header, bincode::config::standard()).unwrap_or_default();
    let head = zstd::bulk::compress(&head, 3).unwrap_or_default();
    let raw_len: u64 = deltas.iter().map(|d| 4 * d.len() as u64).sum();
    let mut body = Vec::with_capacity(13 + head.len() + frames.iter().map(Vec::len).sum::<usize>());
    body.extend_from_slice(&MAGIC);
    body.push(VERSION);
    body.extend_from_slice(&(head.len() as u64).to_le_bytes());
    body.extend_from_slice(&head);
    for f in &frames {
        body.extend_from_slice(f);
    }
    let chunks: Vec<Vec<u8>> = body.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    let hashes: Vec<[u8; 32]> = chunks
        .par_iter()
        .map(|c| *blake3::hash(c).as_bytes())
        .collect();
    Snapshot {
        id: id_of(&header.vv, &digest, &hashes),
        vv: vv.clone(),
        digest,
        raw_len,
        hashes,
        chunks,
    }
}

/// Decodes one segment frame into `out` (exactly `out.len()` varints).
fn decode_segment(frame: &[u8], out: &mut [i32]) -> Result<(), Error> {
    // A varint takes at most 5 bytes: the bound keeps allocation finite.
    let raw = zstd::bulk::decompress(frame, 5 * out.len())
        .map_err(|e| Error::Body(format!("segment: {e}")))?;
    let mut pos = 0usize;
    for o in out.iter_mut() {
        let rest = raw.get(pos..).unwrap_or_default();
        let (z, n) = varint::decode(rest).map_err(|e| match e {
            varint::Error::Truncated => Error::Body("truncated values".into()),
            e => Error::Body(format!("segment value: {e}")),
        })?;
        let z = u32::try_from(z).map_err(|_| Error::Body("varint overflows i32".into()))?;
        pos += n;
        *o = varint::unzigzag(z);
    }
    if pos != raw.len() {
        return Err(Error::Body("trailing bytes in a segment".into()));
    }
    Ok(())
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
    if chunks.len() != hashes.len() {
        return Err(Error::Body("chunk count differs from the offer".into()));
    }
    if let Some(i) = chunks
        .par_iter()
        .zip(hashes)
        .position_any(|(c, h)| blake3::hash(c).as_bytes() != h)
    {
        return Err(Error::Chunk(i));
    }
    let body = chunks.concat();
    let truncated = || Error::Body("truncated".into());
    let (magic, rest) = body.split_at_checked(MAGIC.len()).ok_or_else(truncated)?;
    if magic != MAGIC {
        return Err(Error::Magic);
    }
    let (&version, rest) = rest.split_first().ok_or_else(truncated)?;
    if version != VERSION {
        return Err(Error::Version(version));
    }
    let (head_len, rest) = rest.split_at_checked(8).ok_or_else(truncated)?;
    let head_len = u64::from_le_bytes(head_len.try_into().unwrap_or_default());
    if head_len > rest.len() as u64 {
        return Err(Error::Body("header longer than the body".into()));
    }
    let (head, mut frames) = rest.split_at(head_len as usize);
    let head = zstd::bulk::decompress(head, MAX_HEADER)
        .map_err(|e| Error::Body(format!("header: {e}")))?;
    let (header, used): (Header, usize) = bincode::serde::decode_from_slice(
        &head,
        bincode::config::standard().with_limit::<{ 1 << 30 }>(),
    )
    .map_err(|e| Error::Body(e.to_string()))?;
    if used != head.len() {
        return Err(Error::Body("trailing bytes after the header".into()));
    }
    if header.lens.len() != lens.len() || header.lens.iter().zip(lens).any(|(a, &b)| *a != b as u64)
    {
        return Err(Error::Mismatch(
            "tensor shapes differ from this replica's".into(),
        ));
    }
    let want: usize = lens.iter().map(|n| n.div_ceil(SEGMENT)).sum();
    if header.segments.len() != want {
        return Err(Error::Body(format!(
            "{} segments, {want} expected",
            header.segments.len()
        )));
    }
    if header.segments.iter().sum::<u64>() != frames.len() as u64 {
        return Err(Error::Body(
            "segment sizes do not add up to the body".into(),
        ));
    }
    let mut deltas: Vec<Vec<i32>> = lens.iter().map(|&n| vec![0; n]).collect();
    let mut work: Vec<(&[u8], &mut [i32])> = Vec::with_capacity(want);
    let mut sizes = header.segments.iter();
    for d in deltas.iter_mut() {
        for out in d.chunks_mut(SEGMENT) {
            let n = sizes.next().copied().unwrap_or(0) as usize;
            let (frame, tail) = frames.split_at(n);
            frames = tail;
            work.push((frame, out));
        }
    }
    work.into_par_iter()
        .try_for_each(|(frame, out)| decode_segment(frame, out))?;
    let vv: VersionVector = header.vv.into_iter().collect();
    // The log may stop short of the version vector (what is not signed is
    // repaired after the install) or run to the end of a signed batch past it.
    for e in &header.codes {
        if e.attests
            .iter()
            .any(|a| a.2.len() != crate::crdt::attest::SIG_LEN)
        {
            return Err(Error::Body("signature length".into()));
        }
        if e.codes
            .iter()
            .filter(|&&x| x == crate::zo::codec::DELTA)
            .count()
            != e.payloads.len()
        {
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

/// What a snapshot is made of: `δ` per tensor at a version vector, and its digest.
#[derive(Clone, Debug)]
pub struct Image {
    /// `δ` per trainable tensor.
    pub deltas: Vec<Vec<i32>>,
    /// The version vector.
    pub vv: VersionVector,
    /// Digest of `δ`.
    pub digest: [u8; 32],
}

/// A copy of a replica's `δ`, version vector and digest.
pub fn image(replica: &Replica) -> Image {
    Image {
        deltas: replica.slots().iter().map(|s| s.delta.clone()).collect(),
        vv: replica.version_vector().clone(),
        digest: replica.digest_bytes(),
    }
}

/// A copy of the state `replica` was in before `retract` (per origin, the
/// applied tail to take out; exact, the contributions are integers).
pub fn image_before(replica: &Replica, retract: &[Segment]) -> Result<Image, String> {
    if retract.is_empty() {
        return Ok(image(replica));
    }
    let mut r = replica.clone();
    for s in retract {
        r.retract_with(&s.updates(), &|_, q| s.payload(q))
            .map_err(|e| e.to_string())?;
    }
    Ok(image(&r))
}

/// The snapshot of `image` with the log's `prefix` up to its version vector
/// (from [`crate::crdt::log::Log::prefix`]).
pub fn of(image: &Image, prefix: Vec<Segment>) -> Snapshot {
    let entries: Vec<LogEntries> = prefix
        .into_iter()
        .map(|s| LogEntries {
            origin: s.origin,
            codes: s.codes,
            payloads: s.payloads.iter().map(|p| p.to_vec()).collect(),
            attests: s
                .attests
                .iter()
                .map(|a| (a.first_seq, a.len, a.sig.to_vec()))
                .collect(),
        })
        .collect();
    let deltas: Vec<&[i32]> = image.deltas.iter().map(Vec::as_slice).collect();
    encode(&deltas, &image.vv, image.digest, entries)
}

/// Installs a snapshot into a replica that holds no update yet: checks the
/// chunks, that the state is the one expected (`expect`: the version vector
/// and digest peers vouched for) and the digest of the received `δ`; returns
/// the replica's version vector and the snapshot's log (whose signatures are
/// checked before it is stored, [`crate::crdt::log::verified_prefix`]).
pub fn install(
    replica: &mut Replica,
    chunks: &[Vec<u8>],
    hashes: &[[u8; 32]],
    expect: (&VersionVector, &[u8; 32]),
) -> Result<(VersionVector, Vec<Segment>), String> {
    if replica.applied() > 0 {
        return Err("this node already holds updates; a snapshot is only for joining".into());
    }
    let lens: Vec<usize> = replica.slots().iter().map(|s| s.delta.len()).collect();
    let d = decode(chunks, hashes, &lens).map_err(|e| e.to_string())?;
    if &d.vv != expect.0 || &d.digest != expect.1 {
        return Err("snapshot is not of the state its peers vouched for".into());
    }
    if crate::crdt::replica::digest_of(d.deltas.iter().map(Vec::as_slice)) != d.digest {
        return Err("snapshot digest does not match its contents".into());
    }
    let segments: Vec<Segment> = d
        .codes
        .into_iter()
        .map(|e| Segment {
            origin: e.origin,
            first_seq: 0,
            codes: e.codes,
            payloads: e.payloads.into_iter().map(Arc::new).collect(),
            attests: e
                .attests
                .into_iter()
                .map(|(first_seq, len, sig)| crate::crdt::attest::Attest {
                    first_seq,
                    len,
                    sig: sig.try_into().unwrap_or([0; crate::crdt::attest::SIG_LEN]),
                })
                .collect(),
            op: crate::crdt::log::Op::Apply,
        })
        .collect();
    let vv = d.vv.clone();
    replica.install(d.deltas, d.vv).map_err(|e| e.to_string())?;
    Ok((vv, segments))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log entries without signatures.
    fn entries(o: Origin, codes: Vec<u8>, payloads: Vec<Vec<u8>>) -> LogEntries {
        LogEntries {
            origin: o,
            codes,
            payloads,
            attests: Vec::new(),
        }
    }

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
            vec![entries(Origin([1; 32]), vec![1, 2, 3], vec![])],
        );
        assert!(s.chunks.iter().map(Vec::len).sum::<usize>() < 4 * a.len());
        let d = decode(&s.chunks, &s.hashes, &[a.len(), b.len()]).unwrap();
        assert_eq!(d.deltas, vec![a.clone(), b.clone()]);
        assert_eq!(d.vv, vv);
        assert_eq!(
            d.codes,
            vec![entries(Origin([1; 32]), vec![1, 2, 3], vec![])]
        );
        // Identical states give identical snapshot ids.
        let again = encode(
            &[&a, &b],
            &vv,
            [9; 32],
            vec![entries(Origin([1; 32]), vec![1, 2, 3], vec![])],
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
    fn many_segments_decode_in_parallel_and_bad_bodies_are_refused() {
        let a: Vec<i32> = (0..(2 * SEGMENT + 12_345) as i64)
            .map(|i| ((i * 48_271) % 65_537) as i32 - 32_768)
            .collect();
        let b: Vec<i32> = vec![-3; SEGMENT];
        let vv = VersionVector::new();
        let s = encode(&[&a, &b], &vv, [1; 32], vec![]);
        let d = decode(&s.chunks, &s.hashes, &[a.len(), b.len()]).unwrap();
        assert_eq!(d.deltas, vec![a.clone(), b.clone()]);
        // A body cut short (re-hashed so it passes the chunk check) is an error.
        let mut body = s.chunks.concat();
        body.truncate(body.len() - 10);
        let chunks = vec![body];
        let hashes = vec![*blake3::hash(&chunks[0]).as_bytes()];
        assert!(matches!(
            decode(&chunks, &hashes, &[a.len(), b.len()]),
            Err(Error::Body(_))
        ));
        // Garbage never panics.
        for n in [0usize, 7, 8, 100] {
            let junk = vec![vec![0xffu8; n]];
            let h = vec![*blake3::hash(&junk[0]).as_bytes()];
            assert!(decode(&junk, &h, &[10]).is_err());
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Re-hashes a body (so it passes the chunk check) and decodes it.
    fn decode_body(body: Vec<u8>, lens: &[usize]) -> Result<Decoded, Error> {
        let h = vec![*blake3::hash(&body).as_bytes()];
        decode(&[body], &h, lens)
    }

    #[test]
    fn golden_body() {
        let a = [0, -1, 1, -64, 64, i32::MIN, i32::MAX];
        let b = [7];
        let o = Origin([1; 32]);
        let vv: VersionVector = [(o, 3)].into_iter().collect();
        let mut e = entries(o, vec![1, crate::zo::codec::DELTA, 3], vec![vec![0xaa; 2]]);
        e.attests.push((0, 3, vec![0x55; 64]));
        let codes = vec![e];
        let s = encode(&[&a, &b], &vv, [9; 32], codes.clone());
        assert_eq!(s.chunks.len(), 1);
        let body = &s.chunks[0];
        assert_eq!(&body[..5], b"SSNP\x02");
        let head_len = u64::from_le_bytes(body[5..13].try_into().unwrap()) as usize;
        let (head, frames) = body[13..].split_at(head_len);
        // The segment frames, decompressed: zigzag LEB128 of each value.
        let head = zstd::bulk::decompress(head, 1 << 16).unwrap();
        let sizes = &head[head.len() - 2..];
        let (fa, fb) = frames.split_at(sizes[0] as usize);
        assert_eq!(fb.len(), sizes[1] as usize);
        assert_eq!(
            hex(&zstd::bulk::decompress(fa, 64).unwrap()),
            "0001027f8001ffffffff0ffeffffff0f"
        );
        assert_eq!(hex(&zstd::bulk::decompress(fb, 64).unwrap()), "0e");
        // The header, decompressed: bincode (standard) of vv, digest, tensor
        // lengths, log codes with delta payloads, segment frame sizes.
        let mut want = vec![1];
        want.extend_from_slice(&[1; 32]);
        want.push(3);
        want.extend_from_slice(&[9; 32]);
        want.extend_from_slice(&[2, 7, 1]);
        want.push(1);
        want.extend_from_slice(&[1; 32]);
        want.extend_from_slice(&[3, 1, 0x80, 3, 1, 2, 0xaa, 0xaa]);
        // signatures: one (first seq 0, length 3, 64 bytes)
        want.extend_from_slice(&[1, 0, 3, 64]);
        want.extend_from_slice(&[0x55; 64]);
        want.extend_from_slice(&[2, sizes[0], sizes[1]]);
        assert_eq!(head, want);
        // The whole body and the snapshot id also pin zstd's output (level 1
        // frames, level 3 header) of the zstd in Cargo.lock: identical
        // replicas offer identical ids only if they compress alike.
        assert_eq!(hex(blake3::hash(body).as_bytes()), GOLDEN_BODY_HASH);
        assert_eq!(hex(&s.id), GOLDEN_ID);
        let d = decode(&s.chunks, &s.hashes, &[7, 1]).unwrap();
        assert_eq!(d.deltas, vec![a.to_vec(), b.to_vec()]);
        assert_eq!(d.codes, codes);
    }

    const GOLDEN_BODY_HASH: &str =
        "f9f0ebcc1bf245f74929b9f4d5e183af9a100ad11aa36725c53f26f0e3bf2478";
    const GOLDEN_ID: &str = "e3cc4a244134044636eac2fb2240ba6a9dbe9d05a77a89c40c5564f26e9f9a09";

    #[test]
    fn unknown_versions_and_foreign_bodies_are_named() {
        let d = vec![5i32; 10];
        let s = encode(&[&d], &VersionVector::new(), [0; 32], vec![]);
        let mut body = s.chunks.concat();
        body[4] = 3;
        let e = decode_body(body.clone(), &[10]).err().unwrap();
        assert!(matches!(e, Error::Version(3)), "{e}");
        assert!(e.to_string().contains("version 3"), "{e}");
        body[0] = b'X';
        assert!(matches!(decode_body(body, &[10]), Err(Error::Magic)));
        for n in 0..13 {
            let cut = s.chunks[0][..n].to_vec();
            assert!(decode_body(cut, &[10]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn delta_payloads_travel_with_the_log() {
        let d = vec![5i32; 10];
        let o = Origin([1; 32]);
        let vv: VersionVector = [(o, 3)].into_iter().collect();
        let codes = vec![entries(
            o,
            vec![1, crate::zo::codec::DELTA, 3],
            vec![vec![7u8; 40]],
        )];
        let s = encode(&[&d], &vv, [9; 32], codes.clone());
        let got = decode(&s.chunks, &s.hashes, &[10]).unwrap();
        assert_eq!(got.codes, codes);
        // A delta marker without its payload is refused.
        let bad = encode(
            &[&d],
            &vv,
            [9; 32],
            vec![entries(o, vec![1, crate::zo::codec::DELTA, 3], vec![])],
        );
        assert!(matches!(
            decode(&bad.chunks, &bad.hashes, &[10]),
            Err(Error::Body(_))
        ));
    }
}
