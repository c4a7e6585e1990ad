//! The append-only update log.
//!
//! Holds, per origin, the codes of its contiguous prefix of updates (one byte
//! each) and buffers batches that arrive ahead of a gap until the gap is
//! filled. Only contiguous data is persisted. File layout:
//!
//! ```text
//! header:  "SEEDSWARMLOG\0\0\0\x01" (16 bytes) ‖ run_id (32 bytes)
//! record:  len: u32 LE ‖ origin (32) ‖ first_seq: u64 LE ‖ codes (len − 40) ‖ check (8)
//! ```
//!
//! `check` is the first 8 bytes of BLAKE3 over the record's payload. On open, a
//! torn or corrupt tail is detected, every complete record before it is kept,
//! and the file is truncated to the last good record (with a warning).

use crate::replica::{Update, VersionVector};
use crate::seed::{Origin, RunId};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 16] = b"SEEDSWARMLOG\0\0\0\x01";
const HEADER: usize = 48;
/// Largest batch accepted in one record.
pub const MAX_RECORD_CODES: usize = 1 << 20;

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// IO failure.
    #[error("update log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a seedswarm log, or belongs to another run.
    #[error("update log {path}: {reason}")]
    Refused { path: PathBuf, reason: String },
    /// A batch was too large.
    #[error("batch of {0} codes exceeds the limit of {MAX_RECORD_CODES}")]
    TooLarge(usize),
}

/// What opening a log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Complete records read.
    pub records: u64,
    /// Updates recovered.
    pub updates: u64,
    /// Bytes of torn or corrupt tail that were cut off.
    pub truncated_bytes: u64,
}

/// Per-origin contiguous codes plus buffered out-of-order batches.
#[derive(Debug)]
pub struct Log {
    run: RunId,
    path: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    origins: BTreeMap<Origin, Vec<u8>>,
    pending: BTreeMap<Origin, BTreeMap<u64, Vec<u8>>>,
}

impl Log {
    /// A log kept only in memory.
    pub fn in_memory(run: RunId) -> Self {
        Self {
            run,
            path: None,
            file: None,
            origins: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Opens or creates the log at `path` for `run`, recovering complete records.
    pub fn open(path: &Path, run: RunId) -> Result<(Self, Recovery), Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut log = Self::in_memory(run);
        log.path = Some(path.to_owned());
        let mut rec = Recovery::default();
        if bytes.is_empty() {
            file.write_all(MAGIC).map_err(io)?;
            file.write_all(&run.0).map_err(io)?;
            file.sync_data().map_err(io)?;
        } else {
            if bytes.len() < HEADER || &bytes[..16] != MAGIC {
                return Err(Error::Refused {
                    path: path.to_owned(),
                    reason: "not a seedswarm update log (bad header); move it away to start afresh"
                        .into(),
                });
            }
            if bytes[16..48] != run.0 {
                return Err(Error::Refused {
                    path: path.to_owned(),
                    reason: format!(
                        "belongs to run {} but this node runs {}; use another data dir",
                        hex_short(&bytes[16..48]),
                        run.short()
                    ),
                });
            }
            let mut pos = HEADER;
            while let Some((origin, first, codes, next)) = parse_record(&bytes, pos) {
                log.accept(origin, first, codes.to_vec());
                rec.records += 1;
                rec.updates += codes.len() as u64;
                pos = next;
            }
            if pos < bytes.len() {
                rec.truncated_bytes = (bytes.len() - pos) as u64;
                tracing::warn!(
                    path = %path.display(),
                    kept_records = rec.records,
                    cut_bytes = rec.truncated_bytes,
                    "update log had a torn or corrupt tail; recovered every complete record before it"
                );
                file.set_len(pos as u64).map_err(io)?;
                file.seek(SeekFrom::End(0)).map_err(io)?;
            }
            // Buffered data is not persisted; anything recovered is contiguous.
            log.pending.clear();
        }
        log.file = Some(BufWriter::new(file));
        Ok((log, rec))
    }

    /// The run this log belongs to.
    pub fn run(&self) -> RunId {
        self.run
    }

    /// Accepts a batch `codes` for `origin` starting at `first_seq`; returns the
    /// updates that became contiguous (to apply, in order) and persists them.
    pub fn insert(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
    ) -> Result<Vec<Update>, Error> {
        if codes.len() > MAX_RECORD_CODES {
            return Err(Error::TooLarge(codes.len()));
        }
        let before = self.next_seq(&origin);
        self.accept(origin, first_seq, codes.to_vec());
        let after = self.next_seq(&origin);
        if after == before {
            return Ok(Vec::new());
        }
        let all = &self.origins[&origin];
        let new = &all[before as usize..after as usize];
        if let Some(file) = self.file.as_mut() {
            let path = self.path.clone().unwrap_or_default();
            write_record(file, &origin, before, new)
                .and_then(|()| file.flush())
                .map_err(|source| Error::Io { path, source })?;
        }
        Ok(new
            .iter()
            .enumerate()
            .map(|(i, &code)| Update {
                origin,
                seq: before + i as u64,
                code,
            })
            .collect())
    }

    /// Merges a batch into memory without persisting.
    fn accept(&mut self, origin: Origin, first_seq: u64, codes: Vec<u8>) {
        let have = self.next_seq(&origin);
        let end = first_seq.saturating_add(codes.len() as u64);
        if end <= have || codes.is_empty() {
            return;
        }
        if first_seq > have {
            let p = self.pending.entry(origin).or_default();
            let slot = p.entry(first_seq).or_default();
            if codes.len() > slot.len() {
                *slot = codes;
            }
            return;
        }
        let prefix = self.origins.entry(origin).or_default();
        prefix.extend_from_slice(&codes[(have - first_seq) as usize..]);
        // Drain buffered batches that now connect.
        if let Some(p) = self.pending.get_mut(&origin) {
            while let Some((&first, _)) = p.iter().next() {
                let have = prefix.len() as u64;
                if first > have {
                    break;
                }
                let batch = p.remove(&first).unwrap_or_default();
                let end = first + batch.len() as u64;
                if end > have {
                    prefix.extend_from_slice(&batch[(have - first) as usize..]);
                }
            }
            if p.is_empty() {
                self.pending.remove(&origin);
            }
        }
    }

    /// Number of contiguous updates held for `origin`.
    pub fn next_seq(&self, origin: &Origin) -> u64 {
        self.origins.get(origin).map_or(0, |v| v.len() as u64)
    }

    /// The version vector of the contiguous data.
    pub fn version_vector(&self) -> VersionVector {
        self.origins
            .iter()
            .map(|(o, v)| (*o, v.len() as u64))
            .collect()
    }

    /// Codes of `origin` for `seq ∈ [from, to)`, clipped to what is held.
    pub fn range(&self, origin: &Origin, from: u64, to: u64) -> &[u8] {
        let Some(all) = self.origins.get(origin) else {
            return &[];
        };
        let to = to.min(all.len() as u64);
        if from >= to {
            return &[];
        }
        &all[from as usize..to as usize]
    }

    /// Updates buffered behind gaps.
    pub fn pending_updates(&self) -> u64 {
        self.pending
            .values()
            .flat_map(|p| p.values())
            .map(|v| v.len() as u64)
            .sum()
    }

    /// The first missing seq range per origin that has buffered data behind a gap.
    pub fn gaps(&self) -> Vec<(Origin, u64, u64)> {
        self.pending
            .iter()
            .filter_map(|(o, p)| {
                let first = *p.keys().next()?;
                Some((*o, self.next_seq(o), first))
            })
            .collect()
    }

    /// All contiguous updates in (origin, seq) order.
    pub fn updates(&self) -> impl Iterator<Item = Update> + '_ {
        self.origins.iter().flat_map(|(o, codes)| {
            codes.iter().enumerate().map(move |(i, &code)| Update {
                origin: *o,
                seq: i as u64,
                code,
            })
        })
    }

    /// Total contiguous updates.
    pub fn len(&self) -> u64 {
        self.origins.values().map(|v| v.len() as u64).sum()
    }

    /// True when no update is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hex_short(b: &[u8]) -> String {
    crate::seed::hex(&b[..4.min(b.len())])
}

fn check(payload: &[u8]) -> [u8; 8] {
    let h = blake3::hash(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.as_bytes()[..8]);
    out
}

fn write_record(
    w: &mut impl Write,
    origin: &Origin,
    first: u64,
    codes: &[u8],
) -> std::io::Result<()> {
    let mut payload = Vec::with_capacity(40 + codes.len());
    payload.extend_from_slice(&origin.0);
    payload.extend_from_slice(&first.to_le_bytes());
    payload.extend_from_slice(codes);
    w.write_all(&(payload.len() as u32).to_le_bytes())?;
    w.write_all(&payload)?;
    w.write_all(&check(&payload))
}

/// Parses the record at `pos`: `(origin, first_seq, codes, next_pos)`.
fn parse_record(bytes: &[u8], pos: usize) -> Option<(Origin, u64, &[u8], usize)> {
    let len = u32::from_le_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?) as usize;
    if !(40..=40 + MAX_RECORD_CODES).contains(&len) {
        return None;
    }
    let payload = bytes.get(pos + 4..pos + 4 + len)?;
    let sum = bytes.get(pos + 4 + len..pos + 12 + len)?;
    if check(payload) != sum {
        return None;
    }
    let origin = Origin(payload[..32].try_into().ok()?);
    let first = u64::from_le_bytes(payload[32..40].try_into().ok()?);
    Some((origin, first, &payload[40..], pos + 12 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_buffered_until_filled() {
        let mut log = Log::in_memory(RunId([0; 32]));
        let o = Origin([1; 32]);
        assert!(log.insert(o, 3, &[4, 5]).unwrap().is_empty());
        assert_eq!(log.pending_updates(), 2);
        assert_eq!(log.gaps(), vec![(o, 0, 3)]);
        let got = log.insert(o, 0, &[1, 2, 3]).unwrap();
        assert_eq!(
            got.iter().map(|u| u.code).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(log.pending_updates(), 0);
        // Overlapping and duplicate batches add nothing twice.
        let got = log.insert(o, 4, &[5, 6]).unwrap();
        assert_eq!(
            got,
            vec![Update {
                origin: o,
                seq: 5,
                code: 6
            }]
        );
        assert!(log.insert(o, 0, &[1]).unwrap().is_empty());
        assert_eq!(log.range(&o, 2, 100), &[3, 4, 5, 6]);
    }

    #[test]
    fn torn_tail_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("updates.log");
        let run = RunId([5; 32]);
        let (a, b) = (Origin([1; 32]), Origin([2; 32]));
        {
            let (mut log, rec) = Log::open(&path, run).unwrap();
            assert_eq!(rec, Recovery::default());
            log.insert(a, 0, &[1, 2, 3]).unwrap();
            log.insert(b, 0, &[9]).unwrap();
            log.insert(a, 3, &[4]).unwrap();
        }
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in half, as a crash mid-write would.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        drop(f);
        let (mut log, rec) = Log::open(&path, run).unwrap();
        assert_eq!(rec.records, 2);
        assert_eq!(rec.updates, 4);
        assert_eq!(rec.truncated_bytes, 4 + 41 + 8 - 5);
        assert_eq!(log.next_seq(&a), 3);
        // The node carries on appending after the cut.
        log.insert(a, 3, &[7]).unwrap();
        drop(log);
        let (log, rec) = Log::open(&path, run).unwrap();
        assert_eq!(rec.truncated_bytes, 0);
        assert_eq!(log.range(&a, 0, 10), &[1, 2, 3, 7]);
    }

    #[test]
    fn corrupt_record_stops_recovery_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("updates.log");
        let run = RunId([5; 32]);
        let o = Origin([1; 32]);
        {
            let (mut log, _) = Log::open(&path, run).unwrap();
            log.insert(o, 0, &[1, 2]).unwrap();
            log.insert(o, 2, &[3, 4]).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER + 4 + 42 + 8;
        bytes[second + 4 + 40] ^= 0xff; // flip a code in the second record
        std::fs::write(&path, &bytes).unwrap();
        let (log, rec) = Log::open(&path, run).unwrap();
        assert_eq!(rec.records, 1);
        assert_eq!(log.range(&o, 0, 10), &[1, 2]);
    }

    #[test]
    fn foreign_or_garbage_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("updates.log");
        drop(Log::open(&path, RunId([1; 32])).unwrap());
        let err = Log::open(&path, RunId([2; 32])).unwrap_err().to_string();
        assert!(err.contains("belongs to run"), "{err}");
        std::fs::write(&path, b"hello world, not a log at all, certainly not one").unwrap();
        let err = Log::open(&path, RunId([1; 32])).unwrap_err().to_string();
        assert!(err.contains("bad header"), "{err}");
    }
}
