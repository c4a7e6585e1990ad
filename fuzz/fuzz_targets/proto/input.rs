//! Decoding the fuzz bytes: the byte reader `R` (peers, sources, origins,
//! version vectors, codes with delta payloads), the fixed set of valid FedZip
//! deltas over `shapes()`, and snapshots with a true id built from the bytes.

use crate::{hash, origin_of, Pe, PEERS};
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
