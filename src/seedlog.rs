//! The seed log: a whole fine-tuning run as one small, self-describing file.
//!
//! A run's replica is a function of the base model, the run manifest and the
//! set of updates (one byte each, or a compressed delta). A seed log holds
//! exactly that — everything but the base model, which it names by hash —
//! and the digest of `δ` the updates must give, so whoever holds the base
//! model rebuilds the exact fine-tuned weights (`seedswarm materialize`).
//!
//! Layout (varints are LEB128, [`crate::varint`]):
//!
//! ```text
//! magic     "SEEDSWARMSEEDLOG" (16)
//! version   u8 = 1
//! flags     u8: bit 0 = signatures included
//! run_id    32
//! base_hash 32                      (crate::model::base_hash of the base model)
//! manifest  varint len ‖ canonical JSON of the [run] manifest (its run id)
//! origins   varint count ‖ count × (origin 32 ‖ varint updates)   (sorted, distinct)
//! codes     per origin, in order: its `updates` codes (seqs 0..updates)
//! deltas    per origin, per delta marker (0x80) among its codes: varint len ‖ payload
//! signed    (flag bit 0) per origin: varint count ‖ count × (varint first_seq ‖ varint len ‖ sig 64)
//! digest    32                      (BLAKE3 of δ after every update, Replica::digest_bytes)
//! check     32                      (BLAKE3 of every byte before it)
//! ```
//!
//! Reading validates every count against the bytes that remain, so a
//! hostile or corrupt file is refused with a message and never makes the
//! reader allocate more than the file's size.

use crate::crdt::attest::{Attest, SIG_LEN};
use crate::crdt::log::{Payload, Segment, DELTA, MAX_DELTA_BYTES};
use crate::crdt::replica::VersionVector;
use crate::varint;
use crate::zo::seed::{Origin, RunId};
use std::path::Path;
use std::sync::Arc;

/// The file's first bytes.
pub const MAGIC: &[u8; 16] = b"SEEDSWARMSEEDLOG";
/// The format version written.
pub const VERSION: u8 = 1;
const SIGNED: u8 = 1;

/// Errors of reading or writing a seed log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// IO failure.
    #[error("seed log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Not a seed log, a version this build does not read, or corrupt.
    #[error("seed log: {0}")]
    Format(String),
}

fn bad(what: impl Into<String>) -> Error {
    Error::Format(what.into())
}

/// A run as its manifest, base model hash, every update and the final digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedLog {
    /// The run id (of `manifest` and `base_hash`).
    pub run: RunId,
    /// [`crate::model::base_hash`] of the base model.
    pub base_hash: [u8; 32],
    /// Canonical JSON of the run manifest.
    pub manifest: String,
    /// Per origin (sorted), its updates from seq 0, with their delta payloads
    /// and, when the log is signed, the origin's signatures.
    pub segments: Vec<Segment>,
    /// BLAKE3 of `δ` after all of them.
    pub digest: [u8; 32],
}

impl SeedLog {
    /// True when the origins' signatures are included.
    pub fn signed(&self) -> bool {
        self.segments.iter().any(|s| !s.attests.is_empty())
    }

    /// Updates of every origin.
    pub fn version_vector(&self) -> VersionVector {
        self.segments
            .iter()
            .filter(|s| !s.codes.is_empty())
            .map(|s| (s.origin, s.codes.len() as u64))
            .collect()
    }

    /// Updates in all.
    pub fn updates(&self) -> u64 {
        self.segments.iter().map(|s| s.codes.len() as u64).sum()
    }

    /// Delta updates in all, and their payload bytes.
    pub fn deltas(&self) -> (usize, usize) {
        let p = self.segments.iter().flat_map(|s| &s.payloads);
        (p.clone().count(), p.map(|p| p.len()).sum())
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.manifest.len() + self.updates() as usize);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(if self.signed() { SIGNED } else { 0 });
        out.extend_from_slice(&self.run.0);
        out.extend_from_slice(&self.base_hash);
        varint::put(&mut out, self.manifest.len() as u64);
        out.extend_from_slice(self.manifest.as_bytes());
        varint::put(&mut out, self.segments.len() as u64);
        for s in &self.segments {
            out.extend_from_slice(&s.origin.0);
            varint::put(&mut out, s.codes.len() as u64);
        }
        for s in &self.segments {
            out.extend_from_slice(&s.codes);
        }
        for s in &self.segments {
            for p in &s.payloads {
                varint::put(&mut out, p.len() as u64);
                out.extend_from_slice(p);
            }
        }
        if self.signed() {
            for s in &self.segments {
                varint::put(&mut out, s.attests.len() as u64);
                for a in &s.attests {
                    varint::put(&mut out, a.first_seq);
                    varint::put(&mut out, u64::from(a.len));
                    out.extend_from_slice(&a.sig);
                }
            }
        }
        out.extend_from_slice(&self.digest);
        let check = blake3::hash(&out);
        out.extend_from_slice(check.as_bytes());
        out
    }

    /// Parses and checks a file's bytes (magic, version, checksum, every
    /// count and length); the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not a seed log (bad magic)"));
        }
        if bytes.len() < MAGIC.len() + 2 + 32 + 32 + 32 + 32 {
            return Err(bad("truncated"));
        }
        let (body, check) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != check {
            return Err(bad("checksum mismatch: the file is corrupt or truncated"));
        }
        let mut r = Reader {
            b: &body[MAGIC.len()..],
        };
        let version = r.byte()?;
        if version != VERSION {
            return Err(bad(format!(
                "format version {version} is not supported (this build reads {VERSION})"
            )));
        }
        let flags = r.byte()?;
        if flags & !SIGNED != 0 {
            return Err(bad(format!("unknown flags {flags:#x}")));
        }
        let run = RunId(r.array()?);
        let base_hash = r.array()?;
        let n = r.len("manifest")?;
        let manifest = String::from_utf8(r.take(n, "manifest")?.to_vec())
            .map_err(|_| bad("the manifest is not UTF-8"))?;
        let origins = r.count("origins", 32 + 1)?;
        let mut table: Vec<(Origin, usize)> = Vec::with_capacity(origins);
        for _ in 0..origins {
            let o = Origin(r.array()?);
            let n = r.len("updates")?;
            if table.last().is_some_and(|(p, _)| *p >= o) {
                return Err(bad("origins are not sorted and distinct"));
            }
            table.push((o, n));
        }
        let mut segments = Vec::with_capacity(origins);
        for &(o, n) in &table {
            let codes = r.take(n, "codes")?.to_vec();
            segments.push(Segment::new(o, 0, codes, Vec::new()));
        }
        for s in &mut segments {
            let markers = s.codes.iter().filter(|&&c| c == DELTA).count();
            for _ in 0..markers {
                let n = r.len("delta payload")?;
                if n > MAX_DELTA_BYTES {
                    return Err(bad(format!(
                        "a delta payload of {n} bytes exceeds {MAX_DELTA_BYTES}"
                    )));
                }
                let p: Payload = Arc::new(r.take(n, "delta payload")?.to_vec());
                s.payloads.push(p);
            }
        }
        if flags & SIGNED != 0 {
            for s in &mut segments {
                let count = r.count("signatures", 2 + SIG_LEN)?;
                for _ in 0..count {
                    let first_seq = r.varint()?;
                    let len = u32::try_from(r.varint()?).map_err(|_| bad("batch too long"))?;
                    let sig = r.array()?;
                    let a = Attest {
                        first_seq,
                        len,
                        sig,
                    };
                    if a.end() > s.end() {
                        return Err(bad("a signature covers seqs past the origin's updates"));
                    }
                    s.attests.push(a);
                }
            }
        }
        if flags & SIGNED != 0 && segments.iter().all(|s| s.attests.is_empty()) {
            return Err(bad("marked signed but holds no signature"));
        }
        let digest = r.array()?;
        if !r.b.is_empty() {
            return Err(bad(format!("{} trailing bytes", r.b.len())));
        }
        Ok(Self {
            run,
            base_hash,
            manifest,
            segments,
            digest,
        })
    }

    /// Writes the file (through a temporary file renamed into place, so a
    /// crash leaves either the old file or the new one).
    pub fn write(&self, path: &Path) -> Result<usize, Error> {
        let bytes = self.encode();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("seedlog-part");
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(bytes.len())
    }

    /// Reads and checks a file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::decode(&bytes)
    }
}

/// A cursor over the body that refuses to read past its end.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        if n > self.b.len() {
            return Err(bad(format!(
                "{what}: {n} bytes announced, {} left",
                self.b.len()
            )));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1, "header")?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, "field")?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let (v, used) = varint::decode(self.b).map_err(|e| bad(format!("varint: {e}")))?;
        self.b = &self.b[used..];
        Ok(v)
    }

    /// A length that must fit in what is left.
    fn len(&mut self, what: &str) -> Result<usize, Error> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.b.len())
            .ok_or_else(|| {
                bad(format!(
                    "{what}: {n} announced, {} bytes left",
                    self.b.len()
                ))
            })
    }

    /// A count of items at least `min_bytes` each, that must fit.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, Error> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_bytes) <= self.b.len())
            .ok_or_else(|| {
                bad(format!(
                    "{what}: {n} announced, {} bytes left",
                    self.b.len()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(signed: bool) -> SeedLog {
        let a = Origin([1; 32]);
        let b = Origin([2; 32]);
        let mut sa = Segment::new(
            a,
            0,
            vec![0x01, 0x85, DELTA, 0x7f],
            vec![Arc::new(vec![9; 5])],
        );
        if signed {
            sa.attests.push(Attest {
                first_seq: 0,
                len: 4,
                sig: [7; SIG_LEN],
            });
        }
        SeedLog {
            run: RunId([3; 32]),
            base_hash: [4; 32],
            manifest: "{\"name\":\"t\"}".into(),
            segments: vec![sa, Segment::new(b, 0, vec![0x02], Vec::new())],
            digest: [5; 32],
        }
    }

    #[test]
    fn round_trips_signed_and_unsigned() {
        for signed in [false, true] {
            let s = sample(signed);
            let back = SeedLog::decode(&s.encode()).expect("decodes");
            assert_eq!(back, s);
            assert_eq!(back.signed(), signed);
            assert_eq!(back.updates(), 5);
            assert_eq!(back.deltas(), (1, 5));
        }
    }

    /// The format is pinned: the same log gives these exact bytes.
    #[test]
    fn golden_bytes() {
        let bytes = sample(false).encode();
        // magic, version, flags, run, base, manifest (1 + 12), origins
        // (1 + 2 × 33), codes (5), payload (1 + 5), digest, check.
        assert_eq!(bytes.len(), 16 + 2 + 64 + 13 + 67 + 5 + 6 + 64);
        assert_eq!(&bytes[16..18], &[1, 0]);
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            "5382e35302fb8f1aa84a639a431f4bfe1f58f869d891530c71ad49fbd5005af0"
        );
    }

    #[test]
    fn corrupt_truncated_and_foreign_files_are_refused() {
        let bytes = sample(true).encode();
        for i in [0, 17, 40, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(SeedLog::decode(&b).is_err(), "flipped byte {i}");
        }
        for n in [0, 10, 100, bytes.len() - 1] {
            assert!(SeedLog::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        let err = SeedLog::decode(b"SEEDSWARMLOG\0\0\0\x02").unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
    }

    /// Counts that promise more than the file holds are refused before any
    /// allocation (the checksum is made valid so parsing gets that far).
    #[test]
    fn forged_counts_are_refused() {
        let mut s = sample(false);
        s.segments.truncate(0);
        let mut body = s.encode();
        body.truncate(body.len() - 32 - 32);
        // Replace the origin count (0) with a huge one.
        let at = body.len() - 1;
        body.truncate(at);
        varint::put(&mut body, u64::MAX >> 1);
        body.extend_from_slice(&[5; 32]);
        let check = blake3::hash(&body);
        body.extend_from_slice(check.as_bytes());
        let err = SeedLog::decode(&body).unwrap_err().to_string();
        assert!(err.contains("origins"), "{err}");
    }
}
