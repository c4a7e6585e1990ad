//! The sync protocol (request-response): serving log ranges, delta payloads,
//! snapshot offers and chunks, and taking in the answers to our own requests.

use super::*;
use crate::crdt::log::DELTA;

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    pub(super) fn on_request(&mut self, from: P, request: wire::Request, channel: C) {
        let cost = match &request {
            wire::Request::Offer { .. } | wire::Request::Fingerprints | wire::Request::Records => {
                COSTLY_REQUEST
            }
            _ => 1.0,
        };
        let now = self.now;
        let response = match request.validate() {
            Err(e) => {
                self.count("bad_request");
                wire::Response::Refused(e.to_string())
            }
            Ok(()) if !self.take_request(now, &from, cost) => {
                self.count("request_rate");
                wire::Response::Refused("over the request rate".into())
            }
            Ok(()) => match request {
                wire::Request::Range { origin, from, to } => self.serve_range(origin, from, to),
                wire::Request::Delta { origin, seq } => match self.log.payload(&origin, seq) {
                    Some(p) if self.log.range(&origin, seq, seq + 1) == [DELTA] => {
                        wire::Response::Delta {
                            origin,
                            seq,
                            data: wire::Blob(p.to_vec()),
                        }
                    }
                    _ => wire::Response::Refused("no such delta".into()),
                },
                wire::Request::Fingerprints => {
                    let heads = self
                        .log
                        .heads()
                        .filter(|&(_, n)| n > 0)
                        .filter_map(|(o, n)| {
                            Some((*o, n, wire::Blob(self.log.fingerprint(o, n)?.to_vec())))
                        })
                        .collect();
                    wire::Response::Fingerprints { heads }
                }
                wire::Request::Records => self.records_response(),
                wire::Request::Offer { at } => {
                    if self.offer_waiting.len() >= MAX_OFFER_WAITING {
                        wire::Response::Refused("busy".into())
                    } else {
                        // Answered once a snapshot has been made.
                        self.offer_waiting.push((at.into_iter().collect(), channel));
                        return;
                    }
                }
                wire::Request::Chunk { id, index } => self
                    .served
                    .iter()
                    .find(|(s, _)| s.id == id)
                    .and_then(|(s, _)| s.chunks.get(index as usize))
                    .map_or_else(
                        || wire::Response::Refused("no such snapshot chunk".into()),
                        |c| wire::Response::Chunk {
                            id,
                            index,
                            data: wire::Blob(c.clone()),
                        },
                    ),
            },
        };
        let (protocol, n) = match &response {
            wire::Response::Range { batches, .. } => (
                "sync",
                batches
                    .iter()
                    .map(|b| {
                        b.codes.0.len()
                            + b.sig.0.len()
                            + b.payloads.iter().map(|p| p.0.len()).sum::<usize>()
                    })
                    .sum(),
            ),
            wire::Response::Delta { data, .. } => ("delta", data.0.len()),
            wire::Response::Chunk { data, .. } => ("snapshot", data.0.len()),
            _ => ("sync", 0),
        };
        if n > 0 {
            self.event(Event::Bytes {
                protocol,
                inbound: false,
                n,
            });
        }
        self.emit(Output::Respond { channel, response });
    }

    /// Whole signed batches of `origin` covering `[from, to)` with their
    /// delta payloads, cut short where the payloads would exceed
    /// [`RANGE_PAYLOAD_BUDGET`] (the first always fits); nothing that is not
    /// signed by its origin is ever served.
    fn serve_range(&self, origin: Origin, from: u64, to: u64) -> wire::Response {
        // Nothing that counts nowhere (excluded, or not admitted).
        let stop = self.log.cap(&origin);
        let batches = self
            .log
            .signed_batches(&origin, from, to - from, RANGE_PAYLOAD_BUDGET)
            .into_iter()
            .take(wire::MAX_RANGE_BATCHES)
            .take_while(|(a, _, _)| a.first_seq < stop)
            .map(|(a, codes, payloads)| wire::Batch {
                first_seq: a.first_seq,
                codes: wire::Blob(codes.to_vec()),
                payloads: payloads.iter().map(|p| wire::Blob(p.to_vec())).collect(),
                sig: wire::Blob(a.sig.to_vec()),
            })
            .collect();
        wire::Response::Range { origin, batches }
    }

    /// Answers waiting offers from the snapshots at hand; makes the one
    /// the first waiting request needs (one at a time).
    pub(super) fn serve_snapshots(&mut self, now: Instant) {
        if self.offer_waiting.is_empty() || self.snapshot_inflight {
            return;
        }
        self.answer_offers(now);
        let Some((target, _)) = self.offer_waiting.first() else {
            return;
        };
        let target = target.clone();
        let retract = if target.is_empty() {
            Vec::new()
        } else {
            match self.retraction_to(&target) {
                Ok(r) => r,
                Err(why) => return self.refuse_offers(&target, &why),
            }
        };
        self.snapshot_inflight = true;
        self.emit(Output::MakeSnapshot { target, retract });
    }

    /// Refuses every offer request waiting for `target`.
    pub(super) fn refuse_offers(&mut self, target: &VersionVector, why: &str) {
        let waiting = std::mem::take(&mut self.offer_waiting);
        for (t, channel) in waiting {
            if &t == target {
                let response = wire::Response::Refused(why.to_string());
                self.emit(Output::Respond { channel, response });
            } else {
                self.offer_waiting.push((t, channel));
            }
        }
    }

    /// The applied tails to subtract to get from the replica's state to
    /// `target` (an error when this node holds less of some origin).
    pub(super) fn retraction_to(&self, target: &VersionVector) -> Result<Vec<Segment>, String> {
        let mut out = Vec::new();
        for (o, &want) in target {
            if self.delivered.get(o).copied().unwrap_or(0) < want {
                return Err("this node holds less than that version vector".into());
            }
        }
        for (o, &have) in &self.delivered {
            let want = target.get(o).copied().unwrap_or(0);
            if have > want {
                let seg = self.log.retraction(o, want, have);
                if seg.end() != have {
                    return Err("log does not hold what is applied".into());
                }
                out.push(seg);
            }
        }
        Ok(out)
    }

    /// Answers the waiting offers a served snapshot fits: of the state they
    /// name, or (naming none) of a state fresh enough.
    pub(super) fn answer_offers(&mut self, now: Instant) {
        let current = self.state.as_ref().map(|s| s.vv.clone());
        let waiting = std::mem::take(&mut self.offer_waiting);
        for (target, channel) in waiting {
            let fits = self.served.iter().find(|(s, at)| {
                if target.is_empty() {
                    Some(&s.vv) == current.as_ref() || now.duration_since(*at) < SNAPSHOT_FRESH
                } else {
                    s.vv == target
                }
            });
            match fits {
                Some((s, _)) => {
                    let response = wire::Response::Offer {
                        id: s.id,
                        vv: s.vv.iter().map(|(o, n)| (*o, *n)).collect(),
                        digest: s.digest,
                        raw_len: s.raw_len,
                        hashes: wire::Blob(s.hashes.concat()),
                    };
                    self.emit(Output::Respond { channel, response });
                }
                None => self.offer_waiting.push((target, channel)),
            }
        }
    }

    /// A sync request to `peer` failed or gave nothing: once it is
    /// unresponsive, settling neither waits for it nor for what it claimed.
    pub(super) fn peer_failed(&mut self, peer: &P) {
        self.repair.on_result(peer, false);
        if self.repair.unresponsive(peer) {
            let log = &self.log;
            self.known.discredit(peer, |o| log.next_seq(o));
        }
    }

    pub(super) fn request_failed(&mut self, peer: &P, req: &wire::Request) {
        self.peer_failed(peer);
        match req {
            wire::Request::Range { origin, .. } => self.repair.on_failure(origin),
            wire::Request::Offer { .. } => self.join.on_offer_failed(peer),
            wire::Request::Chunk { index, .. } => self.join.on_chunk_failed(peer, *index),
            wire::Request::Delta { origin, seq } => self.on_delta_payload(*origin, *seq, None),
            wire::Request::Fingerprints | wire::Request::Records => {}
        }
    }

    pub(super) fn on_response(&mut self, from: P, tag: u64, response: wire::Response) {
        let Some((peer, req)) = self.requests.remove(&tag) else {
            return;
        };
        if let Err(e) = response.validate(&req) {
            tracing::warn!(?from, error = %e, "invalid sync response");
            self.count("bad_response");
            self.request_failed(&peer, &req);
            return;
        }
        if !matches!(response, wire::Response::Refused(_)) {
            self.repair.on_result(&peer, true);
        }
        match response {
            wire::Response::Delta { origin, seq, data } => {
                self.on_delta_payload(origin, seq, Some(data.0));
            }
            wire::Response::Range { origin, batches } => {
                let asked = match &req {
                    wire::Request::Range { from, .. } => *from,
                    _ => 0,
                };
                self.on_range(from, origin, asked, batches);
            }
            offer @ wire::Response::Offer { .. } => {
                let refused = self.join.refused;
                self.join.on_offer(from, offer);
                for _ in refused..self.join.refused {
                    self.count("offer_oversized");
                }
            }
            wire::Response::Chunk { id: _, index, data } => {
                self.event(Event::Bytes {
                    protocol: "snapshot",
                    inbound: true,
                    n: data.0.len(),
                });
                match self.join.on_chunk(&from, index, data.0.clone()) {
                    join::Chunk::Taken(id) => self.emit(Output::KeepChunk {
                        id,
                        index,
                        data: data.0,
                    }),
                    join::Chunk::Unwanted => {}
                    join::Chunk::Bad => self.count("bad_chunk"),
                }
            }
            wire::Response::Fingerprints { heads } => {
                // Where ours differ, fetch the peer's signed batches from
                // seq 0: the conflict shows as a proof when they arrive.
                for (o, n, h) in heads {
                    let ours = self.log.fingerprint(&o, n);
                    if ours.is_some_and(|f| f[..] != h.0[..]) {
                        let to = n.min(wire::MAX_RANGE);
                        self.send(
                            from.clone(),
                            wire::Request::Range {
                                origin: o,
                                from: 0,
                                to,
                            },
                        );
                    }
                }
            }
            wire::Response::Records { records } => self.on_records(records),
            wire::Response::Refused(reason) => {
                tracing::debug!(?from, %reason, "sync request refused");
                self.request_failed(&peer, &req);
            }
        }
    }

    /// A repaired range: every batch must carry its origin's valid signature
    /// (else the server forged it: banned), payloads must decode and fit, and
    /// a batch contradicting what is held proves an equivocation; then stored.
    fn on_range(&mut self, server: P, origin: Origin, asked: u64, batches: Vec<wire::Batch>) {
        let now = self.now;
        let run = self.log.run();
        let mut stored = 0u64;
        let mut reached = 0u64;
        let mut bytes = 0usize;
        for b in batches {
            bytes += b.codes.0.len()
                + b.sig.0.len()
                + b.payloads.iter().map(|p| p.0.len()).sum::<usize>();
            if let Some(e) = b.payloads.iter().find_map(|p| self.check_delta(&p.0).err()) {
                tracing::warn!(origin = %origin.short(), error = %e, "range response with an invalid delta");
                self.count("bad_response");
                self.repair.on_failure(&origin);
                return;
            }
            let payloads: Vec<Payload> = b.payloads.into_iter().map(|p| Arc::new(p.0)).collect();
            let codes = b.codes.0;
            let Some(hashes) = attest::payload_hashes(&codes, &payloads) else {
                self.count("bad_response");
                self.repair.on_failure(&origin);
                return;
            };
            let attest = Attest {
                first_seq: b.first_seq,
                len: codes.len() as u32,
                sig: b
                    .sig
                    .0
                    .as_slice()
                    .try_into()
                    .unwrap_or([0; attest::SIG_LEN]),
            };
            if !attest::verify(&run, &origin, &attest, &codes, &hashes) {
                tracing::warn!(peer = ?server, origin = %origin.short(), seq = b.first_seq, "range response with a forged signature");
                self.repair.on_failure(&origin);
                self.ban(server, "forged_range");
                return;
            }
            if b.first_seq >= self.log.cap(&origin) {
                break;
            }
            if !self.within_quota(&origin, attest.end()) {
                break;
            }
            if let Some(c) = self.log.conflict(&origin, b.first_seq, &codes, &hashes) {
                let incoming = SignedBatch {
                    attest,
                    codes,
                    hashes,
                };
                self.on_conflict(now, origin, c.with, incoming);
                break;
            }
            reached = reached.max(attest.end());
            stored += self.accept(origin, b.first_seq, &codes, &payloads, attest);
        }
        self.event(Event::Bytes {
            protocol: "sync",
            inbound: true,
            n: bytes,
        });
        // A server that claimed more than it can show is not asked for it again soon.
        self.repair.on_served(&server, &origin, asked, reached, now);
        if reached <= asked {
            self.known.lower(&server, &origin, asked);
        }
        if stored == 0 {
            self.repair.on_failure(&origin);
            if reached <= asked {
                self.peer_failed(&server);
            }
        } else {
            self.stats.repaired += stored;
            self.event(Event::UpdatesRepaired(stored));
        }
    }
}
