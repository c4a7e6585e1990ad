//! The append-only update log.
//!
//! Holds, per origin, the codes of its contiguous prefix of updates (one byte
//! each) and buffers batches that arrive ahead of a gap until the gap is
//! filled. Only contiguous data is persisted. File layout:
//!
//! ```text
//! header:  "SEEDSWARMLOG\0\0\0\x02" (16 bytes) ‖ run_id (32 bytes)
//! record:  len: u32 LE ‖ origin (32) ‖ first_seq: u64 LE ‖ codes (len − 40) ‖ check (8)
//! delta:   (len | 2^31): u32 LE ‖ origin (32) ‖ seq: u64 LE ‖ payload (len − 40) ‖ check (8)
//! meta:    (len | 2^30): u32 LE ‖ origin (32) ‖ seq: u64 LE ‖ kind (1) ‖ body ‖ check (8)
//!          kind 1: the origin's signature over its batch from seq
//!          kind 2: an exclusion from seq (body: the proof or the owner's revocation)
//!          kind 3: the owner's admission of the origin (body: the record)
//! ```
//!
//! Format 1 (header `\x01`, before signatures) is read and upgraded.
//!
//! A compressed sparse delta (the second update kind, [`crate::delta::fedzip`])
//! occupies one seq of its origin like a one-byte update: its code is the
//! marker [`DELTA`] (`0x80`, "negative zero", which the one-byte codec never
//! produces and which contributes nothing as a one-byte update), and its
//! payload is held next to the codes. A delta record carries the payload, so
//! the log alone still replays the whole state.
//!
//! `check` is the first 8 bytes of BLAKE3 over the record's payload. On open, a
//! torn or corrupt tail is detected, every complete record before it is kept,
//! and the file is truncated to the last good record (with a warning).
//!
//! The in-memory [`Log`] does no IO: it belongs to the protocol core
//! ([`crate::proto`]). Its file, the [`Store`], is appended by whoever applies
//! updates to the replica (the compute thread), exactly as they are applied,
//! and an own update before it is published; [`Store::open`] recovers the file
//! into a [`Log`] to resume from.

use crate::crdt::admit::{self, Kind, Owner, Record};
use crate::crdt::attest::{Attest, SignedBatch};
use crate::crdt::replica::{Update, VersionVector};
use crate::zo::seed::{Origin, RunId};
use std::collections::BTreeMap;
use std::path::PathBuf;

mod store;

mod trust;

pub use store::{Recovery, Store};

pub use crate::zo::codec::DELTA;
/// Largest delta payload a log record may hold.
pub const MAX_DELTA_BYTES: usize = 64 << 20;

/// A delta payload (the encoded compressed sparse delta), shared cheaply.
pub type Payload = std::sync::Arc<Vec<u8>>;
/// Largest batch accepted in one record.
pub const MAX_RECORD_CODES: usize = 1 << 20;
/// Origins a permissioned run's log keeps admissions of, at most.
pub const MAX_ADMISSIONS: usize = 4096;

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
    /// Delta markers and payloads do not correspond.
    #[error("batch has {markers} delta markers but {payloads} delta payloads")]
    Payloads { markers: usize, payloads: usize },
}

/// A contiguous run of one origin's updates, with the payloads of its delta
/// updates in order and the origin's signatures over the batches that end
/// inside it: what the core hands over to be applied, what the store
/// appends, what a snapshot carries per origin (from seq 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Whose updates.
    pub origin: Origin,
    /// Seq of the first code.
    pub first_seq: u64,
    /// One code per update.
    pub codes: Vec<u8>,
    /// Payloads of the [`DELTA`] codes, in order.
    pub payloads: Vec<Payload>,
    /// The origin's signatures of the batches ending in `(first_seq, end]`
    /// (a batch may start before `first_seq`).
    pub attests: Vec<Attest>,
    /// What to do with it.
    pub op: Op,
}

/// What the compute side does with a [`Segment`] the core hands over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Op {
    /// Apply it to the replica and append it to the log's file.
    #[default]
    Apply,
    /// Take it out of the replica again: its origin was proven to equivocate
    /// and is excluded from `first_seq` on (the segment is the applied tail
    /// from there). The exclusion is persisted on its own.
    Retract,
    /// Only append it to the log's file: the replica holds these updates
    /// already (installed with a snapshot before their signed batches came).
    Store,
}

impl Segment {
    /// A segment of codes (and payloads) without signatures.
    pub fn new(origin: Origin, first_seq: u64, codes: Vec<u8>, payloads: Vec<Payload>) -> Self {
        Self {
            origin,
            first_seq,
            codes,
            payloads,
            attests: Vec::new(),
            op: Op::Apply,
        }
    }

    /// One past the last seq.
    pub fn end(&self) -> u64 {
        self.first_seq + self.codes.len() as u64
    }

    /// The updates, in seq order.
    pub fn updates(&self) -> Vec<Update> {
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &code)| Update {
                origin: self.origin,
                seq: self.first_seq + i as u64,
                code,
            })
            .collect()
    }

    /// The payload of delta update `seq`, when it is in this segment.
    pub fn payload(&self, seq: u64) -> Option<Payload> {
        if seq < self.first_seq || seq >= self.end() {
            return None;
        }
        let i = (seq - self.first_seq) as usize;
        if self.codes[i] != DELTA {
            return None;
        }
        let k = self.codes[..i].iter().filter(|&&c| c == DELTA).count();
        self.payloads.get(k).cloned()
    }
}

/// The longest prefix of a snapshot's log segment (from seq 0) that its
/// origin's signatures cover, batch after batch, each verified; with those
/// signatures. What is cut off (unsigned, or a forged signature) is repaired
/// from peers later.
pub fn verified_prefix(run: &RunId, s: &Segment) -> Segment {
    let mut at = 0u64;
    let mut attests = Vec::new();
    let mut deltas = 0usize;
    for a in &s.attests {
        if s.first_seq != 0 || a.first_seq > at || a.end() <= at || a.end() > s.end() {
            break;
        }
        let codes = &s.codes[a.first_seq as usize..a.end() as usize];
        let before = s.codes[..a.first_seq as usize]
            .iter()
            .filter(|&&c| c == DELTA)
            .count();
        let n = codes.iter().filter(|&&c| c == DELTA).count();
        let Some(payloads) = s.payloads.get(before..before + n) else {
            break;
        };
        let Some(hashes) = crate::crdt::attest::payload_hashes(codes, payloads) else {
            break;
        };
        if !crate::crdt::attest::verify(run, &s.origin, a, codes, &hashes) {
            tracing::warn!(origin = %s.origin.short(), seq = a.first_seq, "snapshot log with a forged signature; cut there");
            break;
        }
        attests.push(*a);
        at = a.end();
        deltas = before + n;
    }
    Segment {
        origin: s.origin,
        first_seq: 0,
        codes: s.codes[..at as usize].to_vec(),
        payloads: s.payloads[..deltas].to_vec(),
        attests,
        op: Op::Apply,
    }
}

/// A batch waiting behind a gap: its codes and, when it came signed, the
/// origin's signature.
type Waiting = (Vec<u8>, Option<Attest>);

/// An exclusion: from this seq on an origin's updates count nowhere; the
/// encoded [`crate::crdt::attest::Proof`] that justifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exclusion {
    /// First excluded seq.
    pub from: u64,
    /// The proof, encoded.
    pub proof: Vec<u8>,
}

/// How an incoming batch contradicts what is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The first seq where they differ.
    pub seq: u64,
    /// The held signed batch covering it (None when what is held there is
    /// not signed: this node's own updates, or a log of an older format).
    pub with: Option<SignedBatch>,
}

/// Per-origin contiguous codes, the origin's signatures over them, buffered
/// out-of-order batches, and exclusions of proven equivocators.
#[derive(Debug)]
pub struct Log {
    run: RunId,
    origins: BTreeMap<Origin, Vec<u8>>,
    pending: BTreeMap<Origin, BTreeMap<u64, Waiting>>,
    /// Payloads of delta updates, held or pending, by `(origin, seq)`.
    payloads: BTreeMap<(Origin, u64), Payload>,
    /// Per origin, signatures over held codes by batch end; each extends the
    /// signed frontier, so the one with the smallest end past a seq covers it.
    attests: BTreeMap<Origin, BTreeMap<u64, Attest>>,
    /// Proven equivocators, from which seq on they are excluded.
    excluded: BTreeMap<Origin, Exclusion>,
    /// The run's owner, when it is permissioned: then an origin's updates
    /// count only below its admitted limit.
    owner: Option<Owner>,
    /// Per origin, the widest admission the owner signed.
    admitted: BTreeMap<Origin, Record>,
}

impl Log {
    /// A log kept only in memory.
    pub fn in_memory(run: RunId) -> Self {
        Self {
            run,
            origins: BTreeMap::new(),
            pending: BTreeMap::new(),
            payloads: BTreeMap::new(),
            attests: BTreeMap::new(),
            excluded: BTreeMap::new(),
            owner: None,
            admitted: BTreeMap::new(),
        }
    }

    /// The run this log belongs to.
    pub fn run(&self) -> RunId {
        self.run
    }

    /// Accepts a batch of one-byte `codes` for `origin` starting at
    /// `first_seq`; returns the updates that became contiguous (to apply, in
    /// order) and persists them. The batch may not hold delta markers.
    pub fn insert(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
    ) -> Result<Vec<Update>, Error> {
        self.insert_with(origin, first_seq, codes, &[])
    }

    /// Like [`Log::insert`], for a batch that may hold delta updates:
    /// `payloads` are the payloads of its [`DELTA`] codes, in order.
    pub fn insert_with(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
        payloads: &[Payload],
    ) -> Result<Vec<Update>, Error> {
        self.insert_signed(origin, first_seq, codes, payloads, None)
    }

    /// Like [`Log::insert_with`], keeping the origin's signature over the
    /// whole batch (checked by the caller) to serve it on.
    pub fn insert_signed(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
        payloads: &[Payload],
        attest: Option<Attest>,
    ) -> Result<Vec<Update>, Error> {
        if codes.len() > MAX_RECORD_CODES {
            return Err(Error::TooLarge(codes.len()));
        }
        let markers = codes.iter().filter(|&&c| c == DELTA).count();
        if markers != payloads.len() || payloads.iter().any(|p| p.len() > MAX_DELTA_BYTES) {
            return Err(Error::Payloads {
                markers,
                payloads: payloads.len(),
            });
        }
        let before = self.next_seq(&origin);
        let mut next = payloads.iter();
        for (i, &c) in codes.iter().enumerate() {
            if c == DELTA {
                let seq = first_seq + i as u64;
                let p = next.next().cloned().unwrap_or_default();
                if seq >= before {
                    self.payloads.entry((origin, seq)).or_insert(p);
                }
            }
        }
        self.accept(origin, first_seq, codes.to_vec(), attest);
        let after = self.next_seq(&origin);
        if after == before {
            return Ok(Vec::new());
        }
        let all = &self.origins[&origin];
        let new = &all[before as usize..after as usize];
        let out = new
            .iter()
            .enumerate()
            .map(|(i, &code)| Update {
                origin,
                seq: before + i as u64,
                code,
            })
            .collect();
        self.drop_stray_payloads_of(origin, before);
        Ok(out)
    }

    /// Records the origin's signature over held codes `[first_seq, end)`
    /// (this node's own batches, signed when published); ignored unless it
    /// extends the signed frontier and the codes are held.
    pub fn attest(&mut self, origin: Origin, attest: Attest) {
        let fits = attest
            .first_seq
            .checked_add(u64::from(attest.len))
            .is_some_and(|end| end <= self.next_seq(&origin));
        if !fits || attest.len == 0 {
            return;
        }
        let a = self.attests.entry(origin).or_default();
        if a.last_key_value()
            .is_none_or(|(&end, _)| attest.end() > end)
        {
            a.insert(attest.end(), attest);
        }
    }

    /// One past the last seq of `origin` its signatures cover.
    pub fn signed_through(&self, origin: &Origin) -> u64 {
        self.attests
            .get(origin)
            .and_then(|a| a.last_key_value())
            .map_or(0, |(&end, _)| end)
    }

    /// The signed batch covering held seq `seq` of `origin`.
    pub fn covering(&self, origin: &Origin, seq: u64) -> Option<(Attest, &[u8])> {
        let (_, a) = self.attests.get(origin)?.range(seq + 1..).next()?;
        if a.first_seq > seq {
            return None;
        }
        let codes = self.range(origin, a.first_seq, a.end());
        (codes.len() == a.len as usize).then_some((*a, codes))
    }

    /// The held signed batch covering `seq`, with its payload hashes.
    fn signed_batch(&self, origin: &Origin, seq: u64) -> Option<SignedBatch> {
        let (attest, codes) = self.covering(origin, seq)?;
        let payloads = self.payloads_in(origin, attest.first_seq, attest.end());
        Some(SignedBatch {
            attest,
            codes: codes.to_vec(),
            hashes: crate::crdt::attest::payload_hashes(codes, &payloads)?,
        })
    }

    /// Whole signed batches of `origin` covering `[from, …)` in order, as many
    /// as fit in `max_codes` codes and `payload_budget` payload bytes (the
    /// first always fits): what a range request is answered with. Stops where
    /// the held codes are not signed.
    pub fn signed_batches(
        &self,
        origin: &Origin,
        from: u64,
        max_codes: u64,
        payload_budget: usize,
    ) -> Vec<(Attest, &[u8], Vec<Payload>)> {
        let mut out = Vec::new();
        let (mut at, mut codes_n, mut bytes) = (from, 0u64, 0usize);
        while let Some((a, codes)) = self.covering(origin, at) {
            let payloads = self.payloads_in(origin, a.first_seq, a.end());
            let p: usize = payloads.iter().map(|p| p.len()).sum();
            if payloads.len() != codes.iter().filter(|&&c| c == DELTA).count() {
                break;
            }
            if !out.is_empty()
                && (codes_n + u64::from(a.len) > max_codes || bytes + p > payload_budget)
            {
                break;
            }
            codes_n += u64::from(a.len);
            bytes += p;
            at = a.end();
            out.push((a, codes, payloads));
        }
        out
    }

    /// The payload of delta update `seq` of `origin`, held or pending.
    pub fn payload(&self, origin: &Origin, seq: u64) -> Option<&Payload> {
        self.payloads.get(&(*origin, seq))
    }

    /// Payloads of the delta updates among the held codes of `origin` in
    /// `[from, to)`, in seq order.
    pub fn payloads_in(&self, origin: &Origin, from: u64, to: u64) -> Vec<Payload> {
        let codes = self.range(origin, from, to);
        codes
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == DELTA)
            .filter_map(|(i, _)| self.payload(origin, from + i as u64).cloned())
            .collect()
    }

    /// The held updates of `origin` in `[from, to)` (clipped) as a segment,
    /// with the signatures of the batches ending inside it.
    pub fn segment(&self, origin: &Origin, from: u64, to: u64) -> Segment {
        let codes = self.range(origin, from, to).to_vec();
        let end = from + codes.len() as u64;
        let attests = match self.attests.get(origin) {
            Some(a) if end > from => a.range(from + 1..=end).map(|(_, a)| *a).collect(),
            _ => Vec::new(),
        };
        Segment {
            origin: *origin,
            first_seq: from,
            payloads: self.payloads_in(origin, from, end),
            codes,
            attests,
            op: Op::Apply,
        }
    }

    /// The held updates of `origin` in `[from, to)` as a segment to take
    /// back out of the replica ([`Op::Retract`], no signatures).
    pub fn retraction(&self, origin: &Origin, from: u64, to: u64) -> Segment {
        let mut seg = self.segment(origin, from, to);
        seg.attests.clear();
        seg.op = Op::Retract;
        seg
    }

    /// One past the end of the signed batch covering `seq - 1` (so that a
    /// segment ending there carries its signature), or `seq` when none does.
    pub fn batch_end(&self, origin: &Origin, seq: u64) -> u64 {
        match seq.checked_sub(1).and_then(|s| self.covering(origin, s)) {
            Some((a, _)) => a.end().max(seq),
            None => seq,
        }
    }

    /// Every origin's log from seq 0 up to `vv`, each extended to the end of
    /// the signed batch it stops in (for a snapshot at `vv`).
    pub fn prefix(&self, vv: &VersionVector) -> Vec<Segment> {
        vv.iter()
            .map(|(o, &n)| self.segment(o, 0, self.batch_end(o, n)))
            .collect()
    }

    /// Forgets payloads (at seqs from `from` on) whose seq is neither held as
    /// a delta nor pending; those below `from` were checked by earlier calls.
    fn drop_stray_payloads_of(&mut self, origin: Origin, from: u64) {
        let held = self.origins.get(&origin);
        let pending = self.pending.get(&origin);
        self.payloads
            .range((origin, from)..=(origin, u64::MAX))
            .map(|(k, _)| *k)
            .filter(|&(_, seq)| {
                let is_held = held.is_some_and(|c| c.get(seq as usize) == Some(&DELTA));
                let is_pending = pending.is_some_and(|p| {
                    p.range(..=seq)
                        .next_back()
                        .is_some_and(|(&f, (c, _))| seq < f + c.len() as u64)
                });
                !is_held && !is_pending
            })
            .collect::<Vec<_>>()
            .into_iter()
            .for_each(|k| {
                self.payloads.remove(&k);
            });
    }

    fn drop_stray_payloads(&mut self) {
        let origins: Vec<Origin> = self.payloads.keys().map(|(o, _)| *o).collect();
        for o in origins {
            self.drop_stray_payloads_of(o, 0);
        }
    }

    /// Merges a batch into memory without persisting.
    fn accept(&mut self, origin: Origin, first_seq: u64, codes: Vec<u8>, attest: Option<Attest>) {
        let have = self.next_seq(&origin);
        let end = first_seq.saturating_add(codes.len() as u64);
        if end <= have || codes.is_empty() {
            return;
        }
        if first_seq > have {
            let p = self.pending.entry(origin).or_default();
            let slot = p.entry(first_seq).or_default();
            if codes.len() > slot.0.len() {
                *slot = (codes, attest);
            }
            return;
        }
        let prefix = self.origins.entry(origin).or_default();
        prefix.extend_from_slice(&codes[(have - first_seq) as usize..]);
        let mut signed: Vec<Attest> = attest.into_iter().collect();
        // Drain buffered batches that now connect.
        if let Some(p) = self.pending.get_mut(&origin) {
            while let Some((&first, _)) = p.iter().next() {
                let have = prefix.len() as u64;
                if first > have {
                    break;
                }
                let (batch, a) = p.remove(&first).unwrap_or_default();
                let end = first + batch.len() as u64;
                if end > have {
                    prefix.extend_from_slice(&batch[(have - first) as usize..]);
                    signed.extend(a);
                }
            }
            if p.is_empty() {
                self.pending.remove(&origin);
            }
        }
        for a in signed {
            self.attest(origin, a);
        }
    }

    /// Origins with updates held.
    pub fn origins(&self) -> usize {
        self.origins.len()
    }

    /// Number of contiguous updates held for `origin` (exclusions aside).
    pub fn next_seq(&self, origin: &Origin) -> u64 {
        self.origins.get(origin).map_or(0, |v| v.len() as u64)
    }

    /// The contiguous updates of `origin` that count: held ones, up to its
    /// exclusion.
    fn counted(&self, origin: &Origin, held: u64) -> u64 {
        held.min(self.cap(origin))
    }

    /// The version vector of the contiguous data (exclusions applied).
    pub fn version_vector(&self) -> VersionVector {
        self.heads()
            .filter(|&(_, n)| n > 0)
            .map(|(o, n)| (*o, n))
            .collect()
    }

    /// Each origin with the number of contiguous updates that count, in
    /// origin order.
    pub fn heads(&self) -> impl Iterator<Item = (&Origin, u64)> + '_ {
        self.origins
            .iter()
            .map(|(o, v)| (o, self.counted(o, v.len() as u64)))
    }

    /// Codes of `origin` for `seq ∈ [from, to)`, clipped to what is held
    /// (exclusions aside).
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
            .map(|v| v.0.len() as u64)
            .sum()
    }

    /// Batches buffered behind gaps, all origins.
    pub fn pending_batches(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }

    /// Bytes of the delta payloads buffered behind gaps, all origins.
    pub fn pending_payload_bytes(&self) -> usize {
        self.pending
            .iter()
            .flat_map(|(o, p)| {
                p.iter().flat_map(move |(&first, (codes, _))| {
                    codes
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| c == DELTA)
                        .map(move |(i, _)| (*o, first + i as u64))
                })
            })
            .filter_map(|(o, seq)| self.payloads.get(&(o, seq)).map(|p| p.len()))
            .sum()
    }

    /// Updates of `origin` buffered behind a gap, and in how many batches.
    pub fn pending_of(&self, origin: &Origin) -> (u64, usize) {
        self.pending.get(origin).map_or((0, 0), |p| {
            (p.values().map(|v| v.0.len() as u64).sum(), p.len())
        })
    }

    /// Drops what `origin` has buffered behind its gap (unrepairable, or over
    /// a bound); returns the updates dropped.
    pub fn drop_pending(&mut self, origin: &Origin) -> u64 {
        let n = self.pending_of(origin).0;
        self.pending.remove(origin);
        self.drop_stray_payloads_of(*origin, self.next_seq(origin));
        n
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

    /// All contiguous updates that count, in (origin, seq) order.
    pub fn updates(&self) -> impl Iterator<Item = Update> + '_ {
        self.origins.iter().flat_map(move |(o, codes)| {
            let n = self.counted(o, codes.len() as u64) as usize;
            codes[..n].iter().enumerate().map(move |(i, &code)| Update {
                origin: *o,
                seq: i as u64,
                code,
            })
        })
    }

    /// Total contiguous updates that count.
    pub fn len(&self) -> u64 {
        self.heads().map(|(_, n)| n).sum()
    }

    /// True when no update is held.
    pub fn is_empty(&self) -> bool {
        self.origins.values().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests;
