//! The operations: one byte `op` (kind = `op % 17`) and its arguments,
//! decoded from the fuzz bytes and handed to the core as inputs (the table
//! at the top of `proto.rs`), and the responses built to fit the core's own
//! requests.

use crate::harness::H;
use crate::input::{deltas, digest_of, hashes, honest, make_snapshot, How, R};
use crate::{cbor, hash, index_of, origin_of, signer_of, Pe, ME, NO_ORIGIN, PEERS, RUN};
use seedswarm::crdt::attest::{SignedBatch, Proof};
use seedswarm::crdt::log::{self, Segment, DELTA};
use seedswarm::crdt::replica::VersionVector;
use seedswarm::net::wire::{self, Batch, Blob, DeltaAnnounce, Heartbeat, Request, Response};
use seedswarm::proto::{self, Input, Own, Topic};
use seedswarm::zo::seed::Origin;
use std::sync::Arc;

/// The peer index whose history `origin` is (`NO_ORIGIN` for none).
fn peer_of(origin: &Origin) -> u8 {
    index_of(origin).unwrap_or(NO_ORIGIN)
}

impl H {
    /// A response fitting `req`, built from the fuzz bytes, as peer
    /// `responder` answers it.
    pub(crate) fn answer(&mut self, r: &mut R, req: &Request, responder: Pe) -> Response {
        match req {
            &Request::Range { origin, from, to } => {
                let x = peer_of(&origin);
                let how = How(r.u8());
                let back = u64::from(r.u8() % 3).min(from);
                let k = 1 + r.u8() % 3;
                let mut at = from - back;
                let mut batches = Vec::new();
                for i in 0..k {
                    if i > 0 && at >= to {
                        break;
                    }
                    let n = usize::from(r.u8() % 24);
                    let (codes, payloads) = if how.from_input() {
                        r.codes(n)
                    } else {
                        honest(x, at, n)
                    };
                    let sig = how.sign(x, at, &codes, &hashes(&payloads));
                    batches.push(Batch {
                        first_seq: at,
                        codes: Blob(codes),
                        payloads: payloads.iter().map(|p| Blob(p.to_vec())).collect(),
                        sig: Blob(sig.to_vec()),
                    });
                    at += n as u64;
                    if n == 0 {
                        break;
                    }
                }
                if !how.good(x) {
                    self.forgers.insert(responder);
                } else if how.from_input() {
                    self.equivocated.insert(origin);
                }
                Response::Range { origin, batches }
            }
            Request::Records => {
                // Whatever bytes: records of an open run, proofs, garbage.
                let n = r.u8() % 3;
                let records = (0..n)
                    .map(|_| {
                        let len = usize::from(r.u8() % 128);
                        Blob(r.bytes(len))
                    })
                    .collect();
                Response::Records { records }
            }
            &Request::Delta { origin, seq } => {
                let b = r.u8();
                let data = match (b % 4, self.announced.get(&(origin, seq))) {
                    (0 | 1, Some(p)) => p.clone(),
                    (2, _) => {
                        let n = usize::from(r.u8() % 64);
                        r.bytes(n)
                    }
                    _ => deltas()[usize::from(b >> 2) % 4].to_vec(),
                };
                Response::Delta {
                    origin,
                    seq,
                    data: Blob(data),
                }
            }
            Request::Offer { at } => {
                let b = r.u8();
                let vv: VersionVector = if !at.is_empty() && b & 1 == 0 {
                    at.iter().copied().collect()
                } else {
                    r.vv().into_iter().collect()
                };
                let digest = if b & 2 == 0 {
                    digest_of(&vv, 0)
                } else {
                    [r.u8(); 32]
                };
                let s = make_snapshot(r, &vv, digest);
                self.offered.insert(s.id, s.chunks.clone());
                Response::Offer {
                    id: s.id,
                    vv: vv.into_iter().collect(),
                    digest: s.digest,
                    raw_len: s.raw_len,
                    hashes: Blob(s.hashes.concat()),
                }
            }
            &Request::Chunk { id, index } => {
                let b = r.u8();
                let mut data = self
                    .offered
                    .get(&id)
                    .and_then(|c| c.get(index as usize))
                    .cloned()
                    .unwrap_or_else(|| {
                        let n = usize::from(b % 32);
                        r.bytes(n)
                    });
                if b & 0x80 != 0 {
                    data.push(b);
                }
                Response::Chunk {
                    id,
                    index,
                    data: Blob(data),
                }
            }
            Request::Fingerprints => {
                // The node's own log's fingerprints (a peer holding the same),
                // the first one altered or one past what the node holds.
                let b = r.u8();
                let log = self.core.log();
                let mut heads: Vec<(Origin, u64, Blob)> = log
                    .heads()
                    .filter(|&(_, n)| n > 0)
                    .take(4)
                    .map(|(o, n)| {
                        let n = n + u64::from(b & 2 != 0);
                        let f = log.fingerprint(o, n).unwrap_or([b; 32]);
                        (*o, n, Blob(f.to_vec()))
                    })
                    .collect();
                if b & 1 != 0 {
                    if let Some((_, _, f)) = heads.first_mut() {
                        f.0[0] ^= 1;
                    }
                }
                Response::Fingerprints { heads }
            }
        }
    }

    /// The compute side installs the snapshot of `vv`: the snapshot's log of
    /// each origin (its honest history from seq 0, signed in batches; exactly
    /// to `vv`, to the end of a batch past it, short of it, or with a forged
    /// batch), of which it keeps the verified prefix, as `Trainer::install`.
    fn installed(&mut self, r: &mut R, vv: VersionVector) -> Vec<Segment> {
        let mut segs = Vec::new();
        for (&o, &n) in &vv {
            let x = peer_of(&o);
            let k = r.u8();
            let len = match k % 4 {
                1 => n.saturating_add(1 + u64::from(k >> 2) % 4),
                2 => n.saturating_sub(1 + u64::from(k >> 2) % 4),
                _ => n,
            }
            .min(1 << 12);
            let step = 1 + u64::from(k >> 4) % 8;
            let forged = (k % 4 == 3).then_some(u64::from(k >> 2) % 4);
            let (codes, payloads) = honest(x, 0, len as usize);
            let mut seg = Segment::new(o, 0, codes, payloads);
            let mut at = 0;
            let mut i = 0;
            while at < len {
                let end = (at + step).min(len);
                let c = &seg.codes[at as usize..end as usize];
                let before = seg.codes[..at as usize].iter().filter(|&&c| c == DELTA).count();
                let m = c.iter().filter(|&&c| c == DELTA).count();
                let h = hashes(&seg.payloads[before..before + m]);
                let mut a = signer_of(x).sign(at, c, &h);
                if forged == Some(i) {
                    a.sig[0] ^= 1;
                }
                seg.attests.push(a);
                at = end;
                i += 1;
            }
            segs.push(log::verified_prefix(&RUN, &seg));
        }
        segs
    }

    pub(crate) fn op(&mut self, r: &mut R) {
        match r.u8() % 17 {
            0 | 1 => {
                let b = r.u8();
                let dt = if b < 200 {
                    10 * u64::from(b)
                } else {
                    1000 * u64::from(b - 199)
                };
                self.now_ms += dt;
                self.input(Input::Tick);
            }
            2 => {
                let from = r.peer();
                let source = r.source();
                let topic = [
                    Some(Topic::Updates),
                    Some(Topic::Status),
                    Some(Topic::Deltas),
                    Some(Topic::Proofs),
                    None,
                ][usize::from(r.u8() % 5)];
                let n = usize::from(r.u8());
                let data = r.bytes(n);
                self.gossip(from, source, topic, data);
            }
            3 => {
                let from = r.peer();
                let source = r.source();
                let how = How(r.u8());
                let first = u64::from(r.u8());
                let n = usize::from(r.u8() % 32);
                let x = source.map_or(1, |p| p.0);
                let codes = if how.from_input() {
                    r.bytes(n)
                } else {
                    // The honest one-byte updates from `first`, up to the
                    // next delta update (announced on its own).
                    let (c, _) = honest(x, first, n);
                    c.into_iter().take_while(|&c| c != DELTA).collect()
                };
                if how.from_input() && how.good(x) && !codes.contains(&DELTA) {
                    self.equivocated.insert(origin_of(x));
                }
                let sig = how.sign(x, first, &codes, &[]);
                // With spot checks on, batches carry bases: states made of
                // this node's and another peer's updates, some reachable,
                // some not (yet).
                let bases = if self.bases_on && !codes.is_empty() {
                    let other = origin_of(1 + (x + 1) % 6);
                    let vvs: Vec<VersionVector> = (0..codes.len() as u64)
                        .map(|i| {
                            VersionVector::from([
                                (origin_of(ME.0), (first + i) % 5),
                                (other, i % 4),
                            ])
                        })
                        .collect();
                    seedswarm::crdt::basis::encode(&vvs)
                } else {
                    Vec::new()
                };
                self.gossip(
                    from,
                    source,
                    Some(Topic::Updates),
                    wire::encode_updates_with(first, &sig, &bases, &codes),
                );
            }
            4 => {
                let source = r.source();
                let from = source.filter(|p| *p != ME).unwrap_or_else(|| r.peer());
                let vv = r.vv();
                let d = r.u8();
                let digest = match d {
                    0 => self.digest(),
                    1 => digest_of(&vv.iter().copied().collect(), 0),
                    _ => [d; 32],
                };
                let flags = r.u8();
                let loss = [f32::NAN, 0.5, 0.0, f32::INFINITY][usize::from(flags >> 4) % 4];
                // Stamps count up per peer; bit 3 replays the last one,
                // bit 6 starts a new epoch (a restart).
                let key = source.unwrap_or(from);
                let last = self.stamps.get(&key).copied().unwrap_or((1, 0));
                let stamp = if flags & 8 != 0 {
                    last
                } else if flags & 0x40 != 0 {
                    (last.0 + 1, 0)
                } else {
                    (last.0, last.1 + 1)
                };
                self.stamps.insert(key, stamp);
                let hb = Heartbeat {
                    vv,
                    digest,
                    done: flags & 1 != 0,
                    leaving: flags & 2 != 0,
                    loss,
                    backlog: if flags & 4 != 0 { u64::from(r.u8()) } else { 0 },
                    mode: Default::default(),
                    epoch: stamp.0,
                    counter: stamp.1,
                };
                self.gossip(from, source, Some(Topic::Status), hb.encode());
            }
            5 => {
                let from = r.peer();
                let source = r.source();
                let how = How(r.u8());
                let seq = u64::from(r.u8());
                let b = r.u8();
                let x = source.map_or(1, |p| p.0);
                let (seq, payload) = if !how.from_input() {
                    // The honest delta update at or after `seq`.
                    let seq = seq | 15;
                    (seq, crate::input::honest_payload(x, seq).to_vec())
                } else if b & 0x10 == 0 {
                    (seq, deltas()[usize::from(b) % 4].to_vec())
                } else {
                    let n = usize::from(r.u8() % 64);
                    (seq, r.bytes(n))
                };
                let mut h = hash(&payload);
                if b & 0x20 != 0 {
                    h[0] ^= 1;
                }
                // A true signature over another payload hash than the
                // honest one is an equivocation too.
                if how.good(x) && (how.from_input() || b & 0x20 != 0) {
                    self.equivocated.insert(origin_of(x));
                }
                let a = DeltaAnnounce {
                    seq,
                    len: payload.len() as u32,
                    hash: h,
                    sig: how.sign(x, seq, &[DELTA], &[h]),
                };
                if let Some(o) = source.and_then(|p| proto::Peer::origin(&p)) {
                    self.announced.insert((o, seq), payload);
                }
                self.gossip(from, source, Some(Topic::Deltas), a.encode());
            }
            6 => {
                let from = r.peer();
                let req = match r.u8() % 5 {
                    0 => {
                        let origin = r.origin();
                        let from = u64::from(r.u8());
                        let to = from + u64::from(r.u8());
                        Request::Range { origin, from, to }
                    }
                    1 => {
                        // Of the current state, a state from the input, the
                        // node's applied state, or a little before it.
                        let a = r.u8();
                        let at = match a % 4 {
                            0 => Vec::new(),
                            1 => r.vv(),
                            2 => self.applied.iter().map(|(o, n)| (*o, *n)).collect(),
                            _ => self
                                .applied
                                .iter()
                                .map(|(o, n)| (*o, n.saturating_sub(u64::from(r.u8() % 4))))
                                .filter(|(_, n)| *n > 0)
                                .collect(),
                        };
                        Request::Offer { at }
                    }
                    2 => {
                        let b = r.u8();
                        let id = match self.served.iter().rev().nth(usize::from(b % 4)) {
                            Some(id) if b < 0xc0 => *id,
                            _ => [b; 32],
                        };
                        Request::Chunk {
                            id,
                            index: u32::from(r.u8() % 4),
                        }
                    }
                    3 => Request::Delta {
                        origin: r.origin(),
                        seq: u64::from(r.u8()),
                    },
                    _ => Request::Fingerprints,
                };
                self.request(from, req);
            }
            7 => {
                let from = r.peer();
                let n = usize::from(r.u8());
                if let Some(req) = cbor::<Request>(&r.bytes(n)) {
                    self.request(from, req);
                }
            }
            8 | 9 => {
                let Some((tag, to, req)) = self.pick_tag(r) else {
                    return;
                };
                let b = r.u8();
                let from = if b & 0x80 == 0 { to } else { r.peer() };
                let response = match b % 4 {
                    0 => Response::Refused("no".into()),
                    3 => {
                        let n = usize::from(r.u8());
                        match cbor::<Response>(&r.bytes(n)) {
                            Some(resp) => {
                                self.forgers.insert(from);
                                resp
                            }
                            None => Response::Refused("undecodable".into()),
                        }
                    }
                    _ => self.answer(r, &req, from),
                };
                self.closed(tag);
                self.input(Input::Response {
                    from,
                    tag,
                    response,
                });
            }
            10 => {
                let Some((tag, _, _)) = self.pick_tag(r) else {
                    return;
                };
                self.closed(tag);
                self.input(Input::RequestFailed { tag });
            }
            11 => {
                let b = r.u8();
                if !self.training {
                    return;
                }
                // Made, applied and persisted by the compute side.
                let update = if b % 8 == 7 {
                    Own::Delta(deltas()[usize::from(b >> 3) % 4].clone())
                } else {
                    Own::Code(if b == DELTA { 0x81 } else { b })
                };
                let seq = self.own_next;
                let mut basis = self.applied.clone();
                basis.remove(&self.own);
                self.own_next += 1;
                self.applied.insert(self.own, self.own_next);
                self.input(Input::Own {
                    seq,
                    update,
                    basis,
                });
                let st = self.state();
                self.input(Input::State(Box::new(st)));
            }
            12 => {
                let b = r.u8();
                self.training_done |= b & 1 != 0;
                if b & 2 != 0 {
                    self.salt = r.u8();
                }
                self.loss = [f32::NAN, 1.5, 0.25, 0.0][usize::from(b >> 2) % 4];
                let st = self.state();
                self.input(Input::State(Box::new(st)));
            }
            13 => {
                if let Some(made) = self.make_pending.take() {
                    let b = r.u8();
                    match made {
                        Ok(vv) if b & 0x80 == 0 => {
                            let s = make_snapshot(r, &vv, digest_of(&vv, self.salt));
                            self.served.push(s.id);
                            self.input(Input::Snapshot(Arc::new(s)));
                        }
                        Ok(_) => self.input(Input::SnapshotFailed("out of memory".into())),
                        Err(why) => self.input(Input::SnapshotFailed(why)),
                    }
                } else if let Some(vv) = self.install.take() {
                    let b = r.u8();
                    let result = if b & 1 == 0 {
                        let segs = self.installed(r, vv.clone());
                        // The compute side installed the snapshot's state and
                        // persisted the verified log.
                        self.applied = vv.clone();
                        self.applied.retain(|_, n| *n > 0);
                        self.installed = self.applied.clone();
                        self.persisted.clear();
                        self.hist.clear();
                        for s in &segs {
                            self.persisted.insert(s.origin, s.end());
                            let h = self.hist.entry(s.origin).or_default();
                            let mut k = 0;
                            for (i, &c) in s.codes.iter().enumerate() {
                                let ph = (c == DELTA).then(|| {
                                    k += 1;
                                    hash(&s.payloads[k - 1])
                                });
                                h.set(i as u64, c, ph);
                            }
                            for a in &s.attests {
                                h.cover(a.first_seq, a.end());
                            }
                        }
                        if let Some(n) = self.applied.get(&self.own) {
                            self.own_next = self.own_next.max(*n);
                        }
                        Ok((vv, segs))
                    } else {
                        Err("cannot install".to_string())
                    };
                    self.input(Input::Installed(result));
                }
            }
            14 => {
                let b = r.u8();
                let p = Pe(b % PEERS);
                // High bit: the shell says the peer is now reachable only
                // through relays (or again directly); else it is forgotten.
                if b & 0x80 != 0 {
                    self.input(Input::Relayed {
                        peer: p,
                        only: b & 0x40 != 0,
                    });
                } else {
                    self.input(Input::Forget(p));
                }
            }
            15 => self.input(Input::Leave),
            _ => {
                let from = r.peer();
                let x = r.u8() % PEERS;
                let m = r.u8();
                let first = u64::from(r.u8());
                let n = 1 + usize::from(r.u8() % 8);
                let data = if m % 4 == 3 {
                    let len = usize::from(r.u8());
                    r.bytes(len)
                } else {
                    self.proof(x, m, first, n).encode()
                };
                self.gossip(from, Some(from), Some(Topic::Proofs), data);
            }
        }
    }

    /// A proof against peer `x`: its honest batch `[first, first + n)` and
    /// another one (shifted by `m >> 4 & 3`) with one update changed (`m % 4`
    /// 0), none changed (1: no conflict), or changed but badly signed (2).
    fn proof(&mut self, x: u8, m: u8, first: u64, n: usize) -> Proof {
        let origin = origin_of(x);
        let signed = |first: u64, codes: Vec<u8>, hashes: Vec<[u8; 32]>| SignedBatch {
            attest: signer_of(x).sign(first, &codes, &hashes),
            codes,
            hashes,
        };
        let (ca, pa) = honest(x, first, n);
        let a = signed(first, ca, hashes(&pa));
        let shift = u64::from(m >> 4) % 4;
        let fb = first + shift;
        let (mut cb, pb) = honest(x, fb, n);
        let mut hb = hashes(&pb);
        if m % 4 != 1 {
            let overlap = (n as u64).saturating_sub(shift).max(1) as usize;
            let i = usize::from(m >> 2) % overlap;
            if cb[i] == DELTA {
                let k = cb[..i].iter().filter(|&&c| c == DELTA).count();
                hb[k][0] ^= 1;
            } else {
                cb[i] ^= 1;
                if cb[i] == DELTA {
                    cb[i] = 0x01;
                }
            }
        }
        let mut b = signed(fb, cb, hb);
        if m % 4 == 2 {
            b.attest.sig[0] ^= 1;
        }
        if m % 4 == 0 && x != NO_ORIGIN {
            self.equivocated.insert(origin);
        }
        Proof { origin, a, b }
    }
}
