//! Wire formats of the network, with decoders that validate everything and
//! never panic on hostile input.
//!
//! Every format seedswarm sends, serves or stores starts with a version (or
//! travels under a versioned protocol name), so that a node can tell a
//! message of a newer format from a malformed one:
//!
//! | format | where | version | layout |
//! |---|---|---|---|
//! | update batch | gossipsub `ss/<run>/u` | byte [`UPDATES_VERSION`] = 2 | `0x02 ‖ varint first_seq ‖ origin's signature (64) ‖ codes` |
//! | delta announcement | gossipsub `ss/<run>/d` | byte [`DELTA_VERSION`] = 2 | `0x02 ‖ seq: u64 LE ‖ len: u32 LE ‖ BLAKE3(payload) ‖ signature (64)` (109 bytes) |
//! | heartbeat | gossipsub `ss/<run>/s` | byte [`HEARTBEAT_VERSION`] = 3 | `0x03 ‖ bincode(`[`Heartbeat`]`)` (standard config, size limited) |
//! | proof of equivocation | gossipsub `ss/<run>/x` | byte [`PROOF_VERSION`](crate::crdt::attest::PROOF_VERSION) = 1 | see [`crate::crdt::attest::Proof`] |
//! | sync request/response | request-response | protocol [`SYNC_PROTOCOL`](crate::net::SYNC_PROTOCOL) = `/seedswarm/sync/3` | CBOR of [`Request`] / [`Response`] |
//! | snapshot body | served in chunks by sync | magic `SSNP` + byte [`snapshot::VERSION`](crate::crdt::snapshot::VERSION) = 2 | see [`crate::crdt::snapshot`] |
//! | update log file | disk | magic `SEEDSWARMLOG\0\0\0\x02` (16 bytes; version 1 is read and upgraded) | see [`crate::crdt::log`] |
//! | FedZip delta | delta payloads (sync, log, snapshot) | magic `FZDL` + byte [`fedzip::VERSION`](crate::delta::fedzip::VERSION) = 1 | see [`crate::delta::fedzip`] |
//!
//! Varints are [`crate::varint`] (unsigned LEB128, shortest form only). The
//! gossip decoders ([`decode_updates`], [`DeltaAnnounce::decode`],
//! [`Heartbeat::decode`]) return [`Error::Version`] for an unknown version and
//! another [`Error`] for malformed input: the first is to be ignored (and
//! counted), not penalized. Golden vectors pin the bytes of every format in
//! the unit tests of its module.
//!
//! - Update batches: the origin is the message's authenticated source, not
//!   repeated; seqs run from `first_seq`, one per code; the signature is the
//!   origin's over the batch ([`crate::crdt::attest`]), kept with the codes
//!   and served on, so a code is applied only if its origin signed it.
//! - Delta announcements: the payload itself (a compressed sparse delta) is
//!   pulled over request-response.
//! - Heartbeats: version vector, digest, counters, done flag, mode
//!   (zeroth- or first-order), and the node's start time with a counter
//!   (version 3), so a replayed old heartbeat is ignored. An older version
//!   is an unknown version (ignored and counted, not penalized).
//! - Sync requests/responses: log ranges as whole origin-signed batches
//!   (with the payloads of the delta updates in them), delta payloads,
//!   snapshot offers of a named state and chunks, log fingerprints.

use crate::config::Mode;
use crate::varint;
use crate::zo::seed::Origin;
use serde::{Deserialize, Serialize};

/// Wire version byte of update batches (2: origin-signed).
pub const UPDATES_VERSION: u8 = 2;
/// Wire version byte of update batches that carry the state each update
/// was computed on ([`crate::crdt::basis`]).
pub const UPDATES_BASES_VERSION: u8 = 3;
/// Bytes of an origin's signature.
pub const SIG_LEN: usize = crate::crdt::attest::SIG_LEN;
/// Most codes one gossip batch may carry.
pub const MAX_BATCH: usize = 16 * 1024;
/// Most origins a heartbeat may list.
pub const MAX_ORIGINS: usize = 4096;
/// Largest heartbeat accepted, bytes.
pub const MAX_HEARTBEAT: usize = 48 * MAX_ORIGINS + 256;
/// Most codes one range response may carry.
pub const MAX_RANGE: u64 = 1 << 20;
/// Most signed batches one range response may carry.
pub const MAX_RANGE_BATCHES: usize = 4096;

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than its own framing.
    #[error("truncated")]
    Truncated,
    /// Unknown version: a format this node cannot read (perhaps a newer
    /// one), not malformed input; to be ignored, not penalized.
    #[error("unknown wire version {0}")]
    Version(u8),
    /// Over a size limit.
    #[error("oversized: {0}")]
    Oversized(String),
    /// Structurally invalid.
    #[error("malformed: {0}")]
    Malformed(String),
}

impl From<varint::Error> for Error {
    fn from(e: varint::Error) -> Self {
        match e {
            varint::Error::Truncated => Error::Truncated,
            e => Error::Malformed(e.to_string()),
        }
    }
}

/// Encodes an update batch: `0x02 ‖ varint first_seq ‖ signature (64) ‖ codes`.
pub fn encode_updates(first_seq: u64, sig: &[u8; SIG_LEN], codes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + varint::MAX_LEN + SIG_LEN + codes.len());
    out.push(UPDATES_VERSION);
    varint::put(&mut out, first_seq);
    out.extend_from_slice(sig);
    out.extend_from_slice(codes);
    out
}

/// Encodes an update batch with the bases of its updates (encoded by
/// [`crate::crdt::basis::encode`]): `0x03 ‖ varint first_seq ‖ signature
/// (64) ‖ varint len ‖ bases ‖ codes`; without bases, as [`encode_updates`].
/// The bases ride inside the gossip message, which the origin signs.
pub fn encode_updates_with(
    first_seq: u64,
    sig: &[u8; SIG_LEN],
    bases: &[u8],
    codes: &[u8],
) -> Vec<u8> {
    if bases.is_empty() {
        return encode_updates(first_seq, sig, codes);
    }
    let mut out = Vec::with_capacity(1 + 2 * varint::MAX_LEN + SIG_LEN + bases.len() + codes.len());
    out.push(UPDATES_BASES_VERSION);
    varint::put(&mut out, first_seq);
    out.extend_from_slice(sig);
    varint::put(&mut out, bases.len() as u64);
    out.extend_from_slice(bases);
    out.extend_from_slice(codes);
    out
}

/// Decodes an update batch into `(first_seq, signature, codes)`.
pub fn decode_updates(data: &[u8]) -> Result<(u64, [u8; SIG_LEN], &[u8]), Error> {
    decode_updates_with(data).map(|b| (b.first_seq, b.sig, b.codes))
}

/// A decoded update batch.
#[derive(Debug, PartialEq, Eq)]
pub struct UpdateBatch<'a> {
    /// Seq of the first code.
    pub first_seq: u64,
    /// The origin's signature over the codes.
    pub sig: [u8; SIG_LEN],
    /// The encoded bases of its updates (empty: none, version 2).
    pub bases: &'a [u8],
    /// The codes.
    pub codes: &'a [u8],
}

/// Decodes an update batch of either version.
pub fn decode_updates_with(data: &[u8]) -> Result<UpdateBatch<'_>, Error> {
    let (&version, rest) = data.split_first().ok_or(Error::Truncated)?;
    if version != UPDATES_VERSION && version != UPDATES_BASES_VERSION {
        return Err(Error::Version(version));
    }
    let (first, i) = varint::decode(rest)?;
    let rest = &rest[i..];
    let sig: [u8; SIG_LEN] = rest
        .get(..SIG_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Truncated)?;
    let mut codes = &rest[SIG_LEN..];
    let mut bases: &[u8] = &[];
    if version == UPDATES_BASES_VERSION {
        let (n, i) = varint::decode(codes)?;
        let n = usize::try_from(n).map_err(|_| Error::Truncated)?;
        let body = &codes[i..];
        if n == 0 || n > body.len() {
            return Err(Error::Malformed(format!("bases of {n} bytes")));
        }
        bases = &body[..n];
        codes = &body[n..];
    }
    if codes.is_empty() {
        return Err(Error::Malformed("empty batch".into()));
    }
    if codes.contains(&crate::zo::codec::DELTA) {
        return Err(Error::Malformed(
            "delta marker in a batch of one-byte updates".into(),
        ));
    }
    if codes.len() > MAX_BATCH {
        return Err(Error::Oversized(format!(
            "{} codes > {MAX_BATCH}",
            codes.len()
        )));
    }
    if first.checked_add(codes.len() as u64).is_none() {
        return Err(Error::Malformed("sequence range overflows".into()));
    }
    Ok(UpdateBatch {
        first_seq: first,
        sig,
        bases,
        codes,
    })
}

/// Wire version byte of delta announcements (2: origin-signed).
pub const DELTA_VERSION: u8 = 2;

/// A delta update on offer: its seq in the origin's stream, size and hash,
/// and the origin's signature over the one-update batch `[DELTA]` at `seq`
/// with that payload hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaAnnounce {
    /// The update's seq.
    pub seq: u64,
    /// Payload size, bytes.
    pub len: u32,
    /// BLAKE3 of the payload.
    pub hash: [u8; 32],
    /// The origin's signature.
    pub sig: [u8; SIG_LEN],
}

impl DeltaAnnounce {
    /// Encodes for the wire (109 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(109);
        out.push(DELTA_VERSION);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.sig);
        out
    }

    /// Decodes and validates (`len` within `1..=max_len`).
    pub fn decode(data: &[u8], max_len: usize) -> Result<Self, Error> {
        let (&version, rest) = data.split_first().ok_or(Error::Truncated)?;
        if version != DELTA_VERSION {
            return Err(Error::Version(version));
        }
        if rest.len() != 44 + SIG_LEN {
            return Err(Error::Malformed(format!(
                "delta announcement of {} bytes",
                data.len()
            )));
        }
        let seq = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(rest[8..12].try_into().unwrap_or_default());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&rest[12..44]);
        let mut sig = [0u8; SIG_LEN];
        sig.copy_from_slice(&rest[44..]);
        if len == 0 {
            return Err(Error::Malformed("empty delta".into()));
        }
        if len as usize > max_len {
            return Err(Error::Oversized(format!("delta of {len} bytes")));
        }
        if seq == u64::MAX {
            return Err(Error::Malformed("sequence number overflows".into()));
        }
        Ok(Self {
            seq,
            len,
            hash,
            sig,
        })
    }
}

/// A node's periodic state announcement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Contiguous updates held per origin.
    pub vv: Vec<(Origin, u64)>,
    /// BLAKE3 of the replica's `δ` at `vv`.
    pub digest: [u8; 32],
    /// True once the node has stopped publishing for good (it still serves).
    pub done: bool,
    /// True when the node is leaving now.
    pub leaving: bool,
    /// Recent training loss (NaN when unknown).
    pub loss: f32,
    /// Updates waiting to be applied.
    pub backlog: u64,
    /// How the node contributes (one byte: 0 zeroth-order, 1 first-order).
    pub mode: Mode,
    /// When the node started (wall-clock milliseconds).
    pub epoch: u64,
    /// Heartbeats it sent before this one since it started: with `epoch`,
    /// a replayed old heartbeat is told from a new one.
    pub counter: u64,
}

/// Wire version byte of heartbeats (2: with the mode; 3: with epoch and
/// counter).
pub const HEARTBEAT_VERSION: u8 = 3;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_HEARTBEAT>()
}

impl Heartbeat {
    /// Encodes for the wire: [`HEARTBEAT_VERSION`] ‖ bincode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![HEARTBEAT_VERSION];
        match bincode::serde::encode_into_std_write(self, &mut out, bincode_config()) {
            Ok(_) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Decodes and validates.
    pub fn decode(data: &[u8]) -> Result<Self, Error> {
        if data.len() > MAX_HEARTBEAT {
            return Err(Error::Oversized(format!(
                "heartbeat of {} bytes",
                data.len()
            )));
        }
        let (&version, data) = data.split_first().ok_or(Error::Truncated)?;
        if version != HEARTBEAT_VERSION {
            return Err(Error::Version(version));
        }
        let (hb, used): (Heartbeat, usize) =
            bincode::serde::decode_from_slice(data, bincode_config())
                .map_err(|e| Error::Malformed(e.to_string()))?;
        if used != data.len() {
            return Err(Error::Malformed("trailing bytes".into()));
        }
        if hb.vv.len() > MAX_ORIGINS {
            return Err(Error::Oversized(format!("{} origins", hb.vv.len())));
        }
        if hb.vv.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(Error::Malformed(
                "version vector not sorted by origin".into(),
            ));
        }
        Ok(hb)
    }
}

/// Bytes that CBOR encodes as a byte string (not an array of integers).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// One origin-signed batch in a range response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Seq of its first code.
    pub first_seq: u64,
    /// Its codes.
    pub codes: Blob,
    /// Payloads of the delta updates among `codes`, in order.
    pub payloads: Vec<Blob>,
    /// The origin's signature (64 bytes) over the batch.
    pub sig: Blob,
}

impl Batch {
    /// One past its last seq.
    pub fn end(&self) -> u64 {
        self.first_seq.saturating_add(self.codes.0.len() as u64)
    }
}

/// A sync request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Codes of `origin` for seqs `[from, to)`.
    Range { origin: Origin, from: u64, to: u64 },
    /// Describe a snapshot of your state at version vector `at` (empty: of
    /// your current state). A node holding more builds `δ` at `at` exactly
    /// by subtracting the later contributions, so every honest peer offers
    /// the identical snapshot of one `at`: a joiner asks them all for the
    /// same one, and takes it only when enough of them agree.
    Offer {
        #[serde(default)]
        at: Vec<(Origin, u64)>,
    },
    /// Chunk `index` of snapshot `id`.
    Chunk { id: [u8; 32], index: u32 },
    /// The payload of delta update `seq` of `origin`.
    Delta { origin: Origin, seq: u64 },
    /// A fingerprint of each origin's log (asked when a peer announces this
    /// node's version vector with another digest: someone holds another
    /// signed version of some seq).
    Fingerprints,
    /// The records that decide what counts: owner-signed admissions and
    /// revocations, and proofs of equivocation (asked on meeting a peer, and
    /// of a peer whose updates are not admitted here yet).
    Records,
}

/// Most bytes of records one [`Response::Records`] carries.
pub const MAX_RECORDS_BYTES: usize = 4 << 20;
/// Most records one [`Response::Records`] carries (admissions and
/// exclusions of every origin a log keeps).
pub const MAX_RECORDS: usize = 2 * MAX_ORIGINS;

/// A sync response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Whole origin-signed batches of `origin` covering the requested range
    /// from its start (possibly fewer than asked; the first batch may begin
    /// before `from`, the last may end past `to`).
    Range { origin: Origin, batches: Vec<Batch> },
    /// The payload of a delta update.
    Delta {
        origin: Origin,
        seq: u64,
        data: Blob,
    },
    /// A snapshot on offer: chunk hashes concatenated in `hashes`.
    Offer {
        id: [u8; 32],
        vv: Vec<(Origin, u64)>,
        digest: [u8; 32],
        raw_len: u64,
        hashes: Blob,
    },
    /// One chunk of a snapshot.
    Chunk {
        id: [u8; 32],
        index: u32,
        data: Blob,
    },
    /// Per origin: the updates held and BLAKE3 of their codes (and delta
    /// payload hashes) from seq 0, sorted by origin.
    Fingerprints { heads: Vec<(Origin, u64, Blob)> },
    /// Encoded records ([`crate::crdt::admit::Record`]s and
    /// [`crate::crdt::attest::Proof`]s), each checked on its own.
    Records { records: Vec<Blob> },
    /// The request was refused.
    Refused(String),
}

impl Response {
    /// The chunk hashes of an offer.
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        match self {
            Response::Offer { hashes, .. } => hashes
                .0
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap_or([0; 32]))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Request {
    /// Validates a decoded request.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            Request::Range { from, to, .. } if to <= from => {
                Err(Error::Malformed("empty range".into()))
            }
            Request::Range { from, to, .. } if to - from > MAX_RANGE => {
                Err(Error::Oversized(format!("range of {}", to - from)))
            }
            Request::Offer { ref at } if at.len() > MAX_ORIGINS => {
                Err(Error::Oversized(format!("{} origins", at.len())))
            }
            Request::Offer { ref at } if at.windows(2).any(|w| w[0].0 >= w[1].0) => Err(
                Error::Malformed("version vector not sorted by origin".into()),
            ),
            Request::Range { .. }
            | Request::Offer { .. }
            | Request::Chunk { .. }
            | Request::Delta { .. }
            | Request::Fingerprints
            | Request::Records => Ok(()),
        }
    }
}

impl Response {
    /// Validates a decoded response against the request it answers.
    pub fn validate(&self, req: &Request) -> Result<(), Error> {
        match (self, req) {
            (Response::Refused(_), _) => Ok(()),
            (
                Response::Range { origin, batches },
                Request::Range {
                    origin: o,
                    from,
                    to,
                },
            ) => {
                if origin != o {
                    return Err(Error::Malformed("range of another origin".into()));
                }
                if batches.len() > MAX_RANGE_BATCHES {
                    return Err(Error::Oversized(format!("{} batches", batches.len())));
                }
                let total: u64 = batches.iter().map(|b| b.codes.0.len() as u64).sum();
                if total > MAX_RANGE + MAX_BATCH as u64 {
                    return Err(Error::Oversized(format!("{total} codes")));
                }
                let mut at = *from;
                for (i, b) in batches.iter().enumerate() {
                    if b.codes.0.is_empty() || b.codes.0.len() > MAX_BATCH {
                        return Err(Error::Malformed("batch length".into()));
                    }
                    if b.sig.0.len() != SIG_LEN {
                        return Err(Error::Malformed("signature length".into()));
                    }
                    if b.first_seq.checked_add(b.codes.0.len() as u64).is_none() {
                        return Err(Error::Malformed("range overflows".into()));
                    }
                    // Each batch covers the next seq wanted, within the request.
                    if b.first_seq > at || b.end() <= at || (i > 0 && at >= *to) {
                        return Err(Error::Malformed("batches do not cover the request".into()));
                    }
                    at = b.end();
                    let markers = b
                        .codes
                        .0
                        .iter()
                        .filter(|&&c| c == crate::zo::codec::DELTA)
                        .count();
                    if markers != b.payloads.len() {
                        return Err(Error::Malformed(format!(
                            "{markers} delta updates but {} payloads",
                            b.payloads.len()
                        )));
                    }
                    if b.payloads
                        .iter()
                        .any(|p| p.0.is_empty() || p.0.len() > crate::crdt::log::MAX_DELTA_BYTES)
                    {
                        return Err(Error::Oversized("delta payload".into()));
                    }
                }
                Ok(())
            }
            (Response::Delta { origin, seq, data }, Request::Delta { origin: o, seq: rs }) => {
                if origin != o || seq != rs {
                    return Err(Error::Malformed("delta of another request".into()));
                }
                if data.0.is_empty() || data.0.len() > crate::crdt::log::MAX_DELTA_BYTES {
                    return Err(Error::Oversized(format!("delta of {} bytes", data.0.len())));
                }
                Ok(())
            }
            (
                Response::Offer {
                    id,
                    vv,
                    digest,
                    hashes,
                    ..
                },
                Request::Offer { at },
            ) => {
                if !at.is_empty() && at != vv {
                    return Err(Error::Malformed("offer of another version vector".into()));
                }
                if hashes.0.len() % 32 != 0
                    || hashes.0.len() / 32 > crate::crdt::snapshot::MAX_CHUNKS
                {
                    return Err(Error::Malformed("chunk hash list".into()));
                }
                if vv.len() > MAX_ORIGINS || vv.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(Error::Malformed("offer version vector".into()));
                }
                if crate::crdt::snapshot::id_of(vv, digest, &self.hashes()) != *id {
                    return Err(Error::Malformed(
                        "offer id does not match its contents".into(),
                    ));
                }
                Ok(())
            }
            (Response::Chunk { id, index, data }, Request::Chunk { id: rid, index: ri }) => {
                if id != rid || index != ri {
                    return Err(Error::Malformed("chunk of another request".into()));
                }
                if data.0.len() > crate::crdt::snapshot::CHUNK {
                    return Err(Error::Oversized(format!("chunk of {} bytes", data.0.len())));
                }
                Ok(())
            }
            (Response::Fingerprints { heads }, Request::Fingerprints) => {
                if heads.len() > MAX_ORIGINS {
                    return Err(Error::Oversized(format!("{} origins", heads.len())));
                }
                if heads.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(Error::Malformed("fingerprints not sorted by origin".into()));
                }
                if heads.iter().any(|(_, _, h)| h.0.len() != 32) {
                    return Err(Error::Malformed("fingerprint length".into()));
                }
                Ok(())
            }
            (Response::Records { records }, Request::Records) => {
                if records.len() > MAX_RECORDS {
                    return Err(Error::Oversized(format!("{} records", records.len())));
                }
                let bytes: usize = records.iter().map(|r| r.0.len()).sum();
                if bytes > MAX_RECORDS_BYTES {
                    return Err(Error::Oversized(format!("{bytes} bytes of records")));
                }
                Ok(())
            }
            _ => Err(Error::Malformed(
                "response does not answer the request".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
