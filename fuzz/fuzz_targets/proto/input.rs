//! Decoding the fuzz bytes: the byte reader `R` (peers, sources, origins,
//! version vectors, codes with delta payloads), the fixed set of valid FedZip
//! deltas over `shapes()`, every peer's honest history (what it signs when
//! it does not equivocate), signing as a peer (truly or not), and snapshots
//! with a true id built from the bytes.

use crate::{hash, origin_of, signer_of, Pe, NO_ORIGIN, PEERS};
use seedswarm::crdt::attest::SIG_LEN;
use seedswarm::crdt::log::{Payload, DELTA};
use seedswarm::crdt::replica::VersionVector;
use seedswarm::crdt::snapshot::{self, Snapshot};
use seedswarm::delta::fedzip;
use seedswarm::zo::seed::Origin;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// A few valid FedZip deltas over `shapes()`, made once.
pub(crate) fn deltas() -> &'static [Payload] {
    static D: OnceLock<Vec<Payload>> = OnceLock::new();
    D.get_or_init(|| {
        (0..4u32)
            .map(|k| {
                let vals = |n: usize, salt: u32| -> Vec<f32> {
                    (0..n as u32)
                        .map(|i| {
                            let x = i.wrapping_mul(2654435761) ^ (k * 40503 + salt);
                            ((x % 2001) as f32 - 1000.0) * 1e-5
                        })
                        .collect()
                };
                let a = vals(48, 1);
                let b = vals(16, 2);
                let settings = fedzip::Settings {
                    top_z: [0.1, 0.25, 0.5, 1.0][k as usize],
                    clusters: 1 + k as usize,
                    positions: if k % 2 == 0 {
                        fedzip::Positions::Diff
                    } else {
                        fedzip::Positions::Plain
                    },
                    ..fedzip::Settings::default()
                };
                let views: Vec<(&str, &[f32])> = vec![("a", &a), ("b", &b)];
                let d = fedzip::compress(&views, &settings).expect("compress");
                Arc::new(fedzip::encode(&d, settings.positions))
            })
            .collect()
    })
}

/// Peer `x`'s honest update `seq`: a delta update every 16th seq (15, 31,
/// …; one of `deltas()`), else a one-byte code (never the marker).
pub(crate) fn honest_code(x: u8, seq: u64) -> u8 {
    if seq % 16 == 15 {
        return DELTA;
    }
    let c = (seq as u8).wrapping_mul(0x9d) ^ x.wrapping_mul(0x3b) ^ 0x11;
    if c == DELTA {
        0x7f
    } else {
        c
    }
}

/// The payload of peer `x`'s honest delta update `seq`.
pub(crate) fn honest_payload(x: u8, seq: u64) -> Payload {
    deltas()[(usize::from(x) + (seq / 16) as usize) % 4].clone()
}

/// Peer `x`'s honest updates `[first, first + n)` with their payloads.
pub(crate) fn honest(x: u8, first: u64, n: usize) -> (Vec<u8>, Vec<Payload>) {
    let mut payloads = Vec::new();
    let codes = (first..first.saturating_add(n as u64))
        .map(|s| {
            let c = honest_code(x, s);
            if c == DELTA {
                payloads.push(honest_payload(x, s));
            }
            c
        })
        .collect();
    (codes, payloads)
}

/// BLAKE3 of each payload.
pub(crate) fn hashes(payloads: &[Payload]) -> Vec<[u8; 32]> {
    payloads.iter().map(|p| hash(p)).collect()
}

/// How a built batch is signed and filled, from one byte `s`: the low three
/// bits pick the signature (0–4: the author's true one; 5: another peer's
/// key; 6: the true one with a bit flipped; 7: zeros), bit 3 takes the codes
/// from the input instead of the author's honest history (an equivocation
/// when they differ).
#[derive(Clone, Copy, Debug)]
pub(crate) struct How(pub(crate) u8);

impl How {
    pub(crate) fn from_input(self) -> bool {
        self.0 & 8 != 0
    }
    /// Whether `x`'s batch signed this way verifies.
    pub(crate) fn good(self, x: u8) -> bool {
        self.0 % 8 < 5 && x != NO_ORIGIN
    }
    /// Signs `x`'s batch this way.
    pub(crate) fn sign(self, x: u8, first: u64, codes: &[u8], hashes: &[[u8; 32]]) -> [u8; SIG_LEN] {
        if codes.is_empty() {
            return [0; SIG_LEN];
        }
        let by = if self.0 % 8 == 5 { (x + 1) % PEERS } else { x };
        let mut sig = signer_of(by).sign(first, codes, hashes).sig;
        match self.0 % 8 {
            6 => sig[usize::from(self.0 >> 4) % SIG_LEN] ^= 1,
            7 => sig = [0; SIG_LEN],
            _ => {}
        }
        sig
    }
}

/// Reads the fuzz bytes; a missing byte reads as 0.
pub(crate) struct R<'a>(pub(crate) &'a [u8]);

impl R<'_> {
    pub(crate) fn done(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    /// A forwarder or requester: never this node.
    pub(crate) fn peer(&mut self) -> Pe {
        Pe(1 + self.u8() % (PEERS - 1))
    }
    /// A signed source (possibly this node, possibly `Pe(NO_ORIGIN)`) or none.
    pub(crate) fn source(&mut self) -> Option<Pe> {
        let b = self.u8() % (PEERS + 1);
        (b < PEERS).then_some(Pe(b))
    }
    pub(crate) fn origin(&mut self) -> Origin {
        origin_of(self.u8() % PEERS)
    }
    /// Sorted, de-duplicated version vector of up to 5 entries.
    pub(crate) fn vv(&mut self) -> Vec<(Origin, u64)> {
        let n = self.u8() % 6;
        let vv: BTreeMap<Origin, u64> = (0..n)
            .map(|_| (self.origin(), u64::from(self.u8())))
            .collect();
        vv.into_iter().collect()
    }
    /// Codes from bytes; `0x80` and bytes ≥ `0xf0` are delta updates, each
    /// with a valid payload.
    pub(crate) fn codes(&mut self, n: usize) -> (Vec<u8>, Vec<Payload>) {
        let mut payloads = Vec::new();
        let codes = self
            .bytes(n)
            .into_iter()
            .map(|c| {
                if c == DELTA || c >= 0xf0 {
                    payloads.push(deltas()[usize::from(c & 3)].clone());
                    DELTA
                } else {
                    c
                }
            })
            .collect();
        (codes, payloads)
    }
}

/// The state digest of the harness's model: a function of the version
/// vector (so peers at one state agree), unless the node diverged (`salt`).
pub(crate) fn digest_of(vv: &VersionVector, salt: u8) -> [u8; 32] {
    if salt != 0 {
        return [salt; 32];
    }
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm-fuzz/state");
    for (o, n) in vv {
        h.update(&o.0);
        h.update(&n.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// A snapshot with a true id over small chunks from the fuzz bytes.
pub(crate) fn make_snapshot(r: &mut R, vv: &VersionVector, digest: [u8; 32]) -> Snapshot {
    let k = 1 + usize::from(r.u8() % 3);
    let chunks: Vec<Vec<u8>> = (0..k)
        .map(|_| {
            let n = usize::from(r.u8() % 32);
            r.bytes(n)
        })
        .collect();
    let hashes: Vec<[u8; 32]> = chunks.iter().map(|c| hash(c)).collect();
    let list: Vec<(Origin, u64)> = vv.iter().map(|(o, n)| (*o, *n)).collect();
    Snapshot {
        id: snapshot::id_of(&list, &digest, &hashes),
        vv: vv.clone(),
        digest,
        raw_len: u64::from(r.u8()),
        hashes,
        chunks,
    }
}
