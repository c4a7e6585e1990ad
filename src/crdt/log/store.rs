//! The update log's file: an append-only sequence of records, each checked
//! by the first 8 bytes of its BLAKE3 (the format is in the parent module's
//! docs). Opening recovers every complete record into a [`Log`] and cuts a
//! torn or corrupt tail.

use super::*;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub(super) const MAGIC: &[u8; 16] = b"SEEDSWARMLOG\0\0\0\x02";
/// The format before signatures and exclusions (read, then upgraded).
const MAGIC_V1: &[u8; 16] = b"SEEDSWARMLOG\0\0\0\x01";
/// Flag bit of a delta record's length field.
const DELTA_FLAG: u32 = 1 << 31;
/// Flag bit of a meta record (a signature or an exclusion).
const META_FLAG: u32 = 1 << 30;
/// Meta record kinds (first byte of the body).
const META_ATTEST: u8 = 1;
const META_EXCLUDE: u8 = 2;
const META_ADMIT: u8 = 3;
pub(super) const HEADER: usize = 48;

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

/// The log's file: an append-only sequence of checked records.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    file: BufWriter<File>,
}

impl Store {
    /// Opens or creates the log file at `path` for `run`, recovering every
    /// complete record into a [`Log`].
    pub fn open(path: &Path, run: RunId) -> Result<(Log, Store, Recovery), Error> {
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
        let mut log = Log::in_memory(run);
        let mut rec = Recovery::default();
        if bytes.is_empty() {
            file.write_all(MAGIC).map_err(io)?;
            file.write_all(&run.0).map_err(io)?;
            file.sync_data().map_err(io)?;
        } else {
            let v1 = bytes.len() >= HEADER && &bytes[..16] == MAGIC_V1;
            if bytes.len() < HEADER || (&bytes[..16] != MAGIC && !v1) {
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
            while let Some((origin, first, record, next)) = parse_record(&bytes, pos) {
                match record {
                    Record::Codes(codes) => log.accept(origin, first, codes.to_vec(), None),
                    Record::Delta(payload) => {
                        log.payloads
                            .insert((origin, first), Payload::new(payload.to_vec()));
                        log.accept(origin, first, vec![DELTA], None);
                    }
                    Record::Attest(a) => log.attest(origin, a),
                    Record::Exclude(proof) => {
                        log.exclude(origin, first, proof.to_vec());
                    }
                    Record::Admit(bytes) => match admit::Record::decode(bytes) {
                        // Checked against the owner when it was stored.
                        Ok(a) => {
                            log.admit(a);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable admission in the log; skipped")
                        }
                    },
                }
                rec.records += 1;
                rec.updates = log.len();
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
            if v1 {
                // Same records, plus the new kinds from now on: mark the
                // file so an older binary refuses it instead of cutting them.
                let mut f = OpenOptions::new().write(true).open(path).map_err(io)?;
                f.write_all(MAGIC).map_err(io)?;
                f.sync_data().map_err(io)?;
                tracing::info!(path = %path.display(), "update log upgraded to format 2");
            }
            // Buffered data is not persisted; anything recovered is contiguous.
            log.pending.clear();
            log.drop_stray_payloads();
        }
        let store = Store {
            path: path.to_owned(),
            file: BufWriter::new(file),
        };
        Ok((log, store, rec))
    }

    /// Appends a segment (records of its one-byte runs and of each delta
    /// update) and flushes it to the OS.
    pub fn append(&mut self, segment: &Segment) -> Result<(), Error> {
        let Segment {
            origin,
            first_seq,
            codes,
            payloads,
            attests,
            op,
        } = segment;
        if *op == Op::Retract {
            // Retractions follow from an exclusion, persisted on its own.
            return Ok(());
        }
        let first_seq = *first_seq;
        let markers = codes.iter().filter(|&&c| c == DELTA).count();
        if markers != payloads.len() {
            return Err(Error::Payloads {
                markers,
                payloads: payloads.len(),
            });
        }
        let file = &mut self.file;
        let mut write = || -> std::io::Result<()> {
            // Runs of one-byte codes, and one record per delta.
            let mut start = 0;
            let mut next = payloads.iter();
            for (i, &c) in codes.iter().enumerate() {
                if c != DELTA {
                    continue;
                }
                if start < i {
                    write_record(file, origin, first_seq + start as u64, &codes[start..i])?;
                }
                let p = next.next().map_or(&[][..], |p| p.as_slice());
                write_delta_record(file, origin, first_seq + i as u64, p)?;
                start = i + 1;
            }
            if start < codes.len() {
                write_record(file, origin, first_seq + start as u64, &codes[start..])?;
            }
            for a in attests {
                let mut body = vec![META_ATTEST];
                body.extend_from_slice(&a.len.to_le_bytes());
                body.extend_from_slice(&a.sig);
                write_meta_record(file, origin, a.first_seq, &body)?;
            }
            file.flush()
        };
        write().map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends an exclusion of `origin` from seq `from` with its proof.
    pub fn append_exclusion(
        &mut self,
        origin: &Origin,
        from: u64,
        proof: &[u8],
    ) -> Result<(), Error> {
        let mut body = vec![META_EXCLUDE];
        body.extend_from_slice(proof);
        let file = &mut self.file;
        write_meta_record(file, origin, from, &body)
            .and_then(|_| file.flush())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Appends an owner-signed admission (its encoded record).
    pub fn append_admission(&mut self, record: &admit::Record) -> Result<(), Error> {
        let mut body = vec![META_ADMIT];
        body.extend_from_slice(&record.encode());
        let file = &mut self.file;
        write_meta_record(file, &record.origin, record.seq, &body)
            .and_then(|_| file.flush())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Makes everything appended so far durable (fsync of the data).
    pub fn sync(&mut self) -> Result<(), Error> {
        let path = self.path.clone();
        self.file
            .flush()
            .and_then(|_| self.file.get_ref().sync_data())
            .map_err(|source| Error::Io { path, source })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn hex_short(b: &[u8]) -> String {
    crate::zo::seed::hex(&b[..4.min(b.len())])
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

fn write_delta_record(
    w: &mut impl Write,
    origin: &Origin,
    seq: u64,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut rec = Vec::with_capacity(40 + payload.len());
    rec.extend_from_slice(&origin.0);
    rec.extend_from_slice(&seq.to_le_bytes());
    rec.extend_from_slice(payload);
    w.write_all(&(rec.len() as u32 | DELTA_FLAG).to_le_bytes())?;
    w.write_all(&rec)?;
    w.write_all(&check(&rec))
}

fn write_meta_record(
    w: &mut impl Write,
    origin: &Origin,
    seq: u64,
    body: &[u8],
) -> std::io::Result<()> {
    let mut rec = Vec::with_capacity(40 + body.len());
    rec.extend_from_slice(&origin.0);
    rec.extend_from_slice(&seq.to_le_bytes());
    rec.extend_from_slice(body);
    w.write_all(&(rec.len() as u32 | META_FLAG).to_le_bytes())?;
    w.write_all(&rec)?;
    w.write_all(&check(&rec))
}

/// What a record holds.
enum Record<'a> {
    /// One-byte codes from `first_seq` on.
    Codes(&'a [u8]),
    /// The payload of one delta update at `first_seq`.
    Delta(&'a [u8]),
    /// The origin's signature over its batch from `first_seq`.
    Attest(Attest),
    /// The origin is excluded from `first_seq` on; the encoded proof (or
    /// owner-signed revocation).
    Exclude(&'a [u8]),
    /// An owner-signed admission of the origin, encoded.
    Admit(&'a [u8]),
}

/// Parses the record at `pos`: `(origin, first_seq, record, next_pos)`.
fn parse_record(bytes: &[u8], pos: usize) -> Option<(Origin, u64, Record<'_>, usize)> {
    let word = u32::from_le_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?);
    let delta = word & DELTA_FLAG != 0;
    let meta = word & META_FLAG != 0;
    if delta && meta {
        return None;
    }
    let len = (word & !(DELTA_FLAG | META_FLAG)) as usize;
    let max = if delta {
        MAX_DELTA_BYTES
    } else {
        MAX_RECORD_CODES
    };
    if !(40..=40 + max).contains(&len) {
        return None;
    }
    let payload = bytes.get(pos + 4..pos + 4 + len)?;
    let sum = bytes.get(pos + 4 + len..pos + 12 + len)?;
    if check(payload) != sum {
        return None;
    }
    let origin = Origin(payload[..32].try_into().ok()?);
    let first = u64::from_le_bytes(payload[32..40].try_into().ok()?);
    let body = &payload[40..];
    if meta {
        let (&kind, rest) = body.split_first()?;
        let record = match kind {
            META_ATTEST if rest.len() == 4 + crate::crdt::attest::SIG_LEN => {
                Record::Attest(Attest {
                    first_seq: first,
                    len: u32::from_le_bytes(rest[..4].try_into().ok()?),
                    sig: rest[4..].try_into().ok()?,
                })
            }
            META_EXCLUDE => Record::Exclude(rest),
            META_ADMIT => Record::Admit(rest),
            _ => return None,
        };
        return Some((origin, first, record, pos + 12 + len));
    }
    if !delta && body.contains(&DELTA) {
        return None;
    }
    let record = if delta {
        Record::Delta(body)
    } else {
        Record::Codes(body)
    };
    Some((origin, first, record, pos + 12 + len))
}
