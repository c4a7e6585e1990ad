//! The operations: one byte `op` (kind = `op % 16`) and its arguments,
//! decoded from the fuzz bytes and handed to the core as inputs (the table
//! at the top of `proto.rs`), and the responses built to fit the core's own
//! requests.

use crate::harness::H;
use crate::input::{deltas, make_snapshot, R};
use crate::{cbor, hash, Pe, ME, PEERS};
use seedswarm::crdt::log::{Segment, DELTA};
use seedswarm::crdt::replica::VersionVector;
use seedswarm::net::wire::{self, Blob, DeltaAnnounce, Heartbeat, Request, Response};
use seedswarm::proto::{self, Input, Own, Topic};
use seedswarm::zo::seed::Origin;
use std::collections::BTreeMap;
use std::sync::Arc;

impl H {
    /// A response fitting `req`, built from the fuzz bytes.
    pub(crate) fn answer(&mut self, r: &mut R, req: &Request) -> Response {
        match *req {
            Request::Range { origin, from, to } => {
                let back = u64::from(r.u8() % 3).min(from);
                let first_seq = from - back;
                let n = (u64::from(r.u8() % 24)).min(to - first_seq) as usize;
                let (codes, payloads) = r.codes(n);
                Response::Range {
                    origin,
                    first_seq,
                    codes: Blob(codes),
                    payloads: payloads.iter().map(|p| Blob(p.to_vec())).collect(),
                }
            }
            Request::Delta { origin, seq } => {
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
            Request::Offer => {
                let vv: VersionVector = r.vv().into_iter().collect();
                let d = r.u8();
                let s = make_snapshot(r, &vv, [d; 32]);
                self.offered.insert(s.id, s.chunks.clone());
                Response::Offer {
                    id: s.id,
                    vv: vv.into_iter().collect(),
                    digest: s.digest,
                    raw_len: s.raw_len,
                    hashes: Blob(s.hashes.concat()),
                }
            }
            Request::Chunk { id, index } => {
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
        }
    }

    pub(crate) fn op(&mut self, r: &mut R) {
        match r.u8() % 16 {
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
                    None,
                ][usize::from(r.u8() % 4)];
                let n = usize::from(r.u8());
                let data = r.bytes(n);
                self.gossip(from, source, topic, data);
            }
            3 => {
                let from = r.peer();
                let source = r.source();
                let first = u64::from(r.u8());
                let n = usize::from(r.u8() % 32);
                let codes = r.bytes(n);
                self.gossip(
                    from,
                    source,
                    Some(Topic::Updates),
                    wire::encode_updates(first, &codes),
                );
            }
            4 => {
                let source = r.source();
                let from = source.filter(|p| *p != ME).unwrap_or_else(|| r.peer());
                let vv = r.vv();
                let d = r.u8();
                let digest = if d == 0 { self.digest } else { [d; 32] };
                let flags = r.u8();
                let loss = [f32::NAN, 0.5, 0.0, f32::INFINITY][usize::from(flags >> 4) % 4];
                let hb = Heartbeat {
                    vv,
                    digest,
                    done: flags & 1 != 0,
                    leaving: flags & 2 != 0,
                    loss,
                    backlog: if flags & 4 != 0 { u64::from(r.u8()) } else { 0 },
                    mode: Default::default(),
                };
                self.gossip(from, source, Some(Topic::Status), hb.encode());
            }
            5 => {
                let from = r.peer();
                let source = r.source();
                let seq = u64::from(r.u8());
                let b = r.u8();
                let payload = if b & 0x10 == 0 {
                    deltas()[usize::from(b) % 4].to_vec()
                } else {
                    let n = usize::from(r.u8() % 64);
                    r.bytes(n)
                };
                let mut h = hash(&payload);
                if b & 0x20 != 0 {
                    h[0] ^= 1;
                }
                let a = DeltaAnnounce {
                    seq,
                    len: payload.len() as u32,
                    hash: h,
                };
                if let Some(o) = source.and_then(|p| proto::Peer::origin(&p)) {
                    self.announced.insert((o, seq), payload);
                }
                self.gossip(from, source, Some(Topic::Deltas), a.encode());
            }
            6 => {
                let from = r.peer();
                let req = match r.u8() % 4 {
                    0 => {
                        let origin = r.origin();
                        let from = u64::from(r.u8());
                        let to = from + u64::from(r.u8());
                        Request::Range { origin, from, to }
                    }
                    1 => Request::Offer,
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
                    _ => Request::Delta {
                        origin: r.origin(),
                        seq: u64::from(r.u8()),
                    },
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
                            Some(resp) => resp,
                            None => Response::Refused("undecodable".into()),
                        }
                    }
                    _ => self.answer(r, &req),
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
                self.own_next += 1;
                self.applied.insert(self.own, self.own_next);
                self.input(Input::Own { seq, update });
                let st = self.state();
                self.input(Input::State(Box::new(st)));
            }
            12 => {
                let b = r.u8();
                self.training_done |= b & 1 != 0;
                if b & 2 != 0 {
                    self.digest = [r.u8(); 32];
                }
                self.loss = [f32::NAN, 1.5, 0.25, 0.0][usize::from(b >> 2) % 4];
                let st = self.state();
                self.input(Input::State(Box::new(st)));
            }
            13 => {
                if self.make_pending {
                    self.make_pending = false;
                    let vv = self.applied.clone();
                    let s = make_snapshot(r, &vv, self.digest);
                    self.served.push(s.id);
                    self.input(Input::Snapshot(Arc::new(s)));
                } else if self.install.take().is_some() {
                    let b = r.u8();
                    let result = if b & 1 == 0 {
                        let n = r.u8() % 4;
                        let mut segs: BTreeMap<Origin, Segment> = BTreeMap::new();
                        for _ in 0..n {
                            let origin = r.origin();
                            let len = usize::from(r.u8() % 16);
                            let (codes, payloads) = r.codes(len);
                            segs.insert(
                                origin,
                                Segment {
                                    origin,
                                    first_seq: 0,
                                    codes,
                                    payloads,
                                },
                            );
                        }
                        let segs: Vec<Segment> = segs.into_values().collect();
                        // The compute side installed the snapshot's state.
                        self.applied = segs.iter().map(|s| (s.origin, s.end())).collect();
                        if let Some(n) = self.applied.get(&self.own) {
                            self.own_next = self.own_next.max(*n);
                        }
                        Ok(segs)
                    } else {
                        Err("cannot install".to_string())
                    };
                    self.input(Input::Installed(result));
                }
            }
            14 => {
                let p = Pe(r.u8() % PEERS);
                self.input(Input::Forget(p));
            }
            _ => self.input(Input::Leave),
        }
    }
}
