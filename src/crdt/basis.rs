//! The state each update of a batch was computed on, compactly: what makes
//! a one-byte update re-checkable by a third party (DESIGN: "every byte is
//! a claim about a state").
//!
//! The state an origin stepped on for its update `seq` is its replica's
//! version vector then: its own updates `0..seq` and, per other origin, the
//! contiguous count it had applied. A batch of consecutive updates carries
//! those version vectors (other origins only), as the first update's in
//! full and then only the entries that changed from one update to the next
//! (an origin's count grows as its batches arrive, or shrinks when it is
//! excluded). Origins are named by the first 8 bytes of their id; a reader
//! resolves them against the origins it knows and skips a check whose
//! prefix is unknown or ambiguous (finding a second ed25519 key with a
//! chosen 8-byte prefix costs about 2^64 tries).
//!
//! ```text
//! bases   := varint n ‖ n × (prefix 8 ‖ varint count)       (the first update's, ascending)
//!            varint m ‖ m × (varint gap ‖ varint index ‖ varint zigzag(change))
//! ```
//!
//! `gap` is the update's offset in the batch minus the previous change's
//! (the first change: its offset), so changes come in update order; `index`
//! is into the `n` entries. Empty bytes mean "no bases" (a batch from a
//! node that does not send them). Decoding bounds every count by the bytes
//! that carry it and refuses offsets past the batch, unknown indices and
//! counts that would go negative.

use crate::crdt::replica::VersionVector;
use crate::varint;
use crate::zo::seed::Origin;

/// Bytes of an origin prefix.
pub const PREFIX: usize = 8;

/// An origin's prefix.
pub fn prefix(o: &Origin) -> [u8; PREFIX] {
    let mut p = [0u8; PREFIX];
    p.copy_from_slice(&o.0[..PREFIX]);
    p
}

/// Origins by prefix, for resolving the prefixes of decoded bases: a
/// prefix two known origins share resolves to none.
#[derive(Debug, Default)]
pub struct Prefixes(std::collections::BTreeMap<[u8; PREFIX], Option<Origin>>);

impl Prefixes {
    /// The prefixes of `origins`.
    pub fn of<'a>(origins: impl IntoIterator<Item = &'a Origin>) -> Self {
        let mut m = std::collections::BTreeMap::new();
        for o in origins {
            m.entry(prefix(o))
                .and_modify(|e: &mut Option<Origin>| {
                    if *e != Some(*o) {
                        *e = None
                    }
                })
                .or_insert(Some(*o));
        }
        Self(m)
    }

    /// The one known origin with prefix `p`.
    pub fn resolve(&self, p: &[u8; PREFIX]) -> Option<Origin> {
        self.0.get(p).copied().flatten()
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Encodes the bases of a batch: `bases[i]` is the version vector update
/// `i` was computed on, without the origin's own entry. Empty for an empty
/// slice.
pub fn encode(bases: &[VersionVector]) -> Vec<u8> {
    let Some(first) = bases.first() else {
        return Vec::new();
    };
    let mut all: Vec<Origin> = bases.iter().flat_map(|b| b.keys().copied()).collect();
    all.sort();
    all.dedup();
    let count = |b: &VersionVector, o: &Origin| b.get(o).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(2 + all.len() * (PREFIX + 3));
    varint::put(&mut out, all.len() as u64);
    for o in &all {
        out.extend_from_slice(&prefix(o));
        varint::put(&mut out, count(first, o));
    }
    let mut changes = Vec::new();
    for (i, w) in bases.windows(2).enumerate() {
        for (j, o) in all.iter().enumerate() {
            let (a, b) = (count(&w[0], o), count(&w[1], o));
            if a != b {
                changes.push((i + 1, j, b as i64 - a as i64));
            }
        }
    }
    varint::put(&mut out, changes.len() as u64);
    let mut last = 0;
    for (at, j, d) in changes {
        varint::put(&mut out, (at - last) as u64);
        varint::put(&mut out, j as u64);
        varint::put(&mut out, zigzag(d));
        last = at;
    }
    out
}

/// The decoded bases of a batch of `len` updates: the first update's
/// counts and the changes after it (memory linear in the bytes, whatever
/// the batch length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bases {
    len: usize,
    prefixes: Vec<[u8; PREFIX]>,
    /// The first update's count per entry.
    first: Vec<u64>,
    /// `(update offset, entry, change)`, in update order.
    changes: Vec<(usize, usize, i64)>,
}

/// Why bases did not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bases: {0}")]
pub struct Error(String);

fn bad(s: impl Into<String>) -> Error {
    Error(s.into())
}

/// Largest count a basis entry may hold.
const MAX_COUNT: u64 = 1 << 48;

/// A cursor over encoded bases.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn varint(&mut self, what: &str) -> Result<u64, Error> {
        let (v, used) =
            varint::decode(&self.b[self.at..]).map_err(|e| bad(format!("{what}: {e}")))?;
        self.at += used;
        Ok(v)
    }

    fn prefix(&mut self) -> Result<[u8; PREFIX], Error> {
        let p = self
            .b
            .get(self.at..self.at + PREFIX)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("truncated prefix"))?;
        self.at += PREFIX;
        Ok(p)
    }
}

impl Bases {
    /// Decodes the bases of a batch of `len` updates; `max_entries` bounds
    /// the origins named.
    pub fn decode(bytes: &[u8], len: usize, max_entries: usize) -> Result<Self, Error> {
        let mut c = Cursor { b: bytes, at: 0 };
        let n = c.varint("entries")? as usize;
        if n > max_entries || n.saturating_mul(PREFIX + 1) > bytes.len() {
            return Err(bad(format!("{n} entries")));
        }
        let mut prefixes = Vec::with_capacity(n);
        let mut first = Vec::with_capacity(n);
        for _ in 0..n {
            prefixes.push(c.prefix()?);
            let count = c.varint("count")?;
            if count > MAX_COUNT {
                return Err(bad("count too large"));
            }
            first.push(count);
        }
        if prefixes.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad("entries not in ascending order"));
        }
        let m = c.varint("changes")? as usize;
        if m.saturating_mul(3) > bytes.len() {
            return Err(bad(format!("{m} changes")));
        }
        // Replayed on one row as they are read: every count stays in range.
        let mut row = first.clone();
        let mut changes = Vec::with_capacity(m);
        let mut offset = 0u64;
        for _ in 0..m {
            offset = offset.saturating_add(c.varint("gap")?);
            let j = c.varint("index")? as usize;
            let d = unzigzag(c.varint("change")?);
            if offset == 0 || offset as usize >= len {
                return Err(bad(format!("change at update {offset} of {len}")));
            }
            if j >= n {
                return Err(bad(format!("entry {j} of {n}")));
            }
            let v = (row[j] as i64)
                .checked_add(d)
                .filter(|v| (0..=MAX_COUNT as i64).contains(v));
            row[j] = v.ok_or_else(|| bad("a count leaves its range"))? as u64;
            changes.push((offset as usize, j, d));
        }
        if c.at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self {
            len,
            prefixes,
            first,
            changes,
        })
    }

    /// The version vector update `i` of the batch was computed on, its
    /// prefixes resolved by `resolve` (None: past the batch, or some prefix
    /// unknown or ambiguous), without the origin's own entry.
    pub fn at(
        &self,
        i: usize,
        resolve: &dyn Fn(&[u8; PREFIX]) -> Option<Origin>,
    ) -> Option<VersionVector> {
        if i >= self.len {
            return None;
        }
        let mut row = self.first.clone();
        for &(_, j, d) in self.changes.iter().take_while(|(at, _, _)| *at <= i) {
            // In range: checked when decoded.
            row[j] = (row[j] as i64 + d) as u64;
        }
        let mut vv = VersionVector::new();
        for (p, &c) in self.prefixes.iter().zip(&row) {
            if c > 0 {
                vv.insert(resolve(p)?, c);
            }
        }
        Some(vv)
    }
}

/// The file a node keeps the bases it published and received in
/// (`bases.log` in its data dir), so a finished run can be rechecked
/// offline (`seedswarm verify`). Append-only, every record checked:
///
/// ```text
/// header:  "SEEDSWARMBASES\0\x01" (16) ‖ run_id (32)
/// record:  len: u32 LE ‖ origin (32) ‖ first_seq: u64 LE ‖ n: u32 LE ‖ bases (len − 44) ‖ check (8)
/// ```
///
/// `check` is the first 8 bytes of BLAKE3 over the record's payload; opening
/// keeps every complete record and cuts a torn or corrupt tail.
#[derive(Debug)]
pub struct BasesFile {
    file: std::fs::File,
    path: std::path::PathBuf,
}

/// One stored record: the bases of `origin`'s batch of `n` updates from `first_seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub origin: Origin,
    pub first_seq: u64,
    pub n: u32,
    pub bases: Vec<u8>,
}

const FILE_MAGIC: &[u8; 16] = b"SEEDSWARMBASES\0\x01";
const FILE_HEADER: usize = 48;
/// Largest bases record accepted.
const MAX_RECORD: usize = 1 << 20;

fn record_check(payload: &[u8]) -> [u8; 8] {
    let mut c = [0u8; 8];
    c.copy_from_slice(&blake3::hash(payload).as_bytes()[..8]);
    c
}

/// Parses the records after the header; returns them and where the valid
/// part ends.
fn parse_file(bytes: &[u8]) -> (Vec<Stored>, usize) {
    let mut out = Vec::new();
    let mut pos = FILE_HEADER;
    while let Some(len) = bytes
        .get(pos..pos + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    {
        if !(44..=MAX_RECORD).contains(&len) {
            break;
        }
        let (Some(payload), Some(sum)) = (
            bytes.get(pos + 4..pos + 4 + len),
            bytes.get(pos + 4 + len..pos + 12 + len),
        ) else {
            break;
        };
        if record_check(payload) != sum {
            break;
        }
        let mut origin = [0u8; 32];
        origin.copy_from_slice(&payload[..32]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&payload[32..40]);
        let mut n = [0u8; 4];
        n.copy_from_slice(&payload[40..44]);
        out.push(Stored {
            origin: Origin(origin),
            first_seq: u64::from_le_bytes(first),
            n: u32::from_le_bytes(n),
            bases: payload[44..].to_vec(),
        });
        pos += 12 + len;
    }
    (out, pos)
}

impl BasesFile {
    /// Opens or creates the file at `path` for `run`, cutting a torn tail.
    pub fn open(path: &std::path::Path, run: &crate::zo::seed::RunId) -> std::io::Result<Self> {
        use std::io::{Read, Seek, Write};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if bytes.is_empty() {
            file.write_all(FILE_MAGIC)?;
            file.write_all(&run.0)?;
        } else {
            check_header(&bytes, run, path)?;
            let (_, end) = parse_file(&bytes);
            if end < bytes.len() {
                tracing::warn!(path = %path.display(), cut_bytes = bytes.len() - end, "bases file had a torn tail; cut");
                file.set_len(end as u64)?;
                file.seek(std::io::SeekFrom::End(0))?;
            }
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Appends the bases of `origin`'s batch of `n` updates from `first_seq`.
    pub fn append(
        &mut self,
        origin: &Origin,
        first_seq: u64,
        n: u32,
        bases: &[u8],
    ) -> std::io::Result<()> {
        use std::io::Write;
        if bases.len() + 44 > MAX_RECORD {
            return Ok(());
        }
        let mut rec = Vec::with_capacity(56 + bases.len());
        rec.extend_from_slice(&((44 + bases.len()) as u32).to_le_bytes());
        rec.extend_from_slice(&origin.0);
        rec.extend_from_slice(&first_seq.to_le_bytes());
        rec.extend_from_slice(&n.to_le_bytes());
        rec.extend_from_slice(bases);
        let check = record_check(&rec[4..]);
        rec.extend_from_slice(&check);
        self.file.write_all(&rec)
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Every complete record of the file at `path` (none when it is absent).
    pub fn read(
        path: &std::path::Path,
        run: &crate::zo::seed::RunId,
    ) -> std::io::Result<Vec<Stored>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        check_header(&bytes, run, path)?;
        Ok(parse_file(&bytes).0)
    }
}

fn check_header(
    bytes: &[u8],
    run: &crate::zo::seed::RunId,
    path: &std::path::Path,
) -> std::io::Result<()> {
    if bytes.len() < FILE_HEADER || &bytes[..16] != FILE_MAGIC {
        return Err(std::io::Error::other(format!(
            "{}: not a seedswarm bases file",
            path.display()
        )));
    }
    if bytes[16..48] != run.0 {
        return Err(std::io::Error::other(format!(
            "{}: belongs to another run",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(x: u8) -> Origin {
        Origin([x; 32])
    }

    fn vv(items: &[(u8, u64)]) -> VersionVector {
        items.iter().map(|&(x, n)| (o(x), n)).collect()
    }

    fn resolve(p: &[u8; PREFIX]) -> Option<Origin> {
        Some(o(p[0]))
    }

    #[test]
    fn round_trips_growth_new_origins_and_exclusions() {
        let bases = vec![
            vv(&[(1, 10), (2, 3)]),
            vv(&[(1, 10), (2, 3)]),
            vv(&[(1, 25), (2, 3)]),
            vv(&[(1, 25), (2, 3), (3, 7)]),
            vv(&[(1, 4), (2, 9), (3, 7)]),
        ];
        let bytes = encode(&bases);
        let d = Bases::decode(&bytes, bases.len(), 16).unwrap();
        for (i, b) in bases.iter().enumerate() {
            assert_eq!(d.at(i, &resolve).as_ref(), Some(b), "update {i}");
        }
        assert!(d.at(5, &resolve).is_none());
        assert!(d.at(0, &|_| None).is_none(), "an unknown prefix");
    }

    /// Pinned bytes: every node must read the same bases.
    #[test]
    fn golden_bytes() {
        let bases = vec![
            vv(&[(1, 300), (2, 5)]),
            vv(&[(1, 300), (2, 6)]),
            vv(&[(1, 290), (2, 6)]),
        ];
        let mut want = vec![2];
        want.extend_from_slice(&[1; 8]);
        want.extend_from_slice(&[0xac, 0x02]);
        want.extend_from_slice(&[2; 8]);
        want.push(5);
        want.extend_from_slice(&[2, 1, 1, 2, 1, 0, 19]);
        assert_eq!(encode(&bases), want);
        // A batch whose bases never change costs the first update's alone.
        let same = vec![vv(&[(1, 300)]); 25];
        assert_eq!(encode(&same).len(), 1 + 8 + 2 + 1);
        assert!(encode(&[]).is_empty());
    }

    /// The largest batch naming the most origins costs memory by its
    /// bytes, not batch length × origins (that would be half a gigabyte).
    #[test]
    fn a_long_batch_naming_many_origins_stays_small() {
        let many: VersionVector = (0..4000u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                (Origin(id), 1)
            })
            .collect();
        let bytes = encode(std::slice::from_ref(&many));
        let len = crate::net::wire::MAX_BATCH;
        let b = Bases::decode(&bytes, len, 4096).unwrap();
        assert_eq!(std::mem::size_of_val(b.changes.as_slice()), 0);
        assert_eq!(b.first.len(), 4000);
        let resolve = |p: &[u8; PREFIX]| {
            let mut id = [0u8; 32];
            id[..PREFIX].copy_from_slice(p);
            Some(Origin(id))
        };
        assert_eq!(b.at(len - 1, &resolve), Some(many));
        assert_eq!(b.at(len, &resolve), None);
    }

    #[test]
    fn hostile_bases_are_refused() {
        let good = encode(&[vv(&[(1, 3)]), vv(&[(1, 4)])]);
        assert!(Bases::decode(&good, 2, 16).is_ok());
        // The change points past the batch.
        assert!(Bases::decode(&good, 1, 16).is_err());
        // Too many entries for the bound, or for the bytes.
        assert!(Bases::decode(&good, 2, 0).is_err());
        assert!(Bases::decode(&[200, 1], 2, 4096).is_err());
        // A count going negative.
        let neg = encode(&[vv(&[(1, 3)]), vv(&[(1, 0), (2, 1)])]);
        let mut b = neg.clone();
        let last = b.len() - 1;
        b[last] = 9; // zigzag(-5)
        assert!(Bases::decode(&b, 2, 16).is_err());
        // Truncated and trailing bytes.
        for n in 0..good.len() {
            assert!(Bases::decode(&good[..n], 2, 16).is_err(), "{n}");
        }
        let mut t = good.clone();
        t.push(0);
        assert!(Bases::decode(&t, 2, 16).is_err());
        // Descending prefixes.
        let mut d = encode(&[vv(&[(1, 3), (2, 4)])]);
        d[1] = 9;
        assert!(Bases::decode(&d, 1, 16).is_err());
    }

    #[test]
    fn the_bases_file_keeps_complete_records_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bases.log");
        let run = crate::zo::seed::RunId([4; 32]);
        let mut f = BasesFile::open(&path, &run).unwrap();
        let a = encode(&[vv(&[(1, 3)]), vv(&[(1, 4)])]);
        f.append(&o(2), 10, 2, &a).unwrap();
        f.append(&o(3), 0, 1, &[0, 0]).unwrap();
        drop(f);
        let want = vec![
            Stored {
                origin: o(2),
                first_seq: 10,
                n: 2,
                bases: a.clone(),
            },
            Stored {
                origin: o(3),
                first_seq: 0,
                n: 1,
                bases: vec![0, 0],
            },
        ];
        assert_eq!(BasesFile::read(&path, &run).unwrap(), want);
        // A torn tail is cut on open; what came before stays.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9, 0, 0]);
        std::fs::write(&path, &bytes).unwrap();
        let mut f = BasesFile::open(&path, &run).unwrap();
        f.append(&o(5), 1, 1, &[0, 0]).unwrap();
        drop(f);
        assert_eq!(BasesFile::read(&path, &run).unwrap().len(), 3);
        // Another run's file is refused.
        assert!(BasesFile::read(&path, &crate::zo::seed::RunId([5; 32])).is_err());
        assert!(BasesFile::read(&dir.path().join("none"), &run)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn prefixes_resolve_known_origins_and_not_shared_ones() {
        let mut twin = [1u8; 32];
        twin[31] = 9;
        let (a, b) = (o(1), Origin(twin));
        let p = Prefixes::of([&a, &o(2), &o(2)]);
        assert_eq!(p.resolve(&prefix(&a)), Some(a));
        assert_eq!(
            p.resolve(&prefix(&o(2))),
            Some(o(2)),
            "the same origin twice"
        );
        assert_eq!(p.resolve(&prefix(&o(3))), None, "unknown");
        let shared = Prefixes::of([&a, &b]);
        assert_eq!(shared.resolve(&prefix(&a)), None, "ambiguous");
    }
}
