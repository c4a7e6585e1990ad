//! The sync protocol (request-response): serving log ranges, delta payloads,
//! snapshot offers and chunks, and taking in the answers to our own requests.

use super::*;
use crate::crdt::log::DELTA;

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    pub(super) fn on_request(&mut self, from: P, request: wire::Request, channel: C) {
        let _ = from;
        let response = match request.validate() {
            Err(e) => {
                self.count("bad_request");
                wire::Response::Refused(e.to_string())
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
                wire::Request::Offer => {
                    if self.offer_waiting.len() >= MAX_OFFER_WAITING {
                        wire::Response::Refused("busy".into())
                    } else {
                        // Answered once a snapshot has been made.
                        self.offer_waiting.push(channel);
                        self.want_snapshot = true;
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
            wire::Response::Range {
                codes, payloads, ..
            } => (
                "sync",
                codes.0.len() + payloads.iter().map(|p| p.0.len()).sum::<usize>(),
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

    /// A range of `origin`'s log with its delta payloads, cut short where the
    /// payloads would exceed [`RANGE_PAYLOAD_BUDGET`] (the first always fits).
    fn serve_range(&self, origin: Origin, from: u64, to: u64) -> wire::Response {
        let codes = self.log.range(&origin, from, to);
        let mut payloads = Vec::new();
        let mut bytes = 0usize;
        let mut end = codes.len();
        for (i, &c) in codes.iter().enumerate() {
            if c != DELTA {
                continue;
            }
            let Some(p) = self.log.payload(&origin, from + i as u64) else {
                end = i;
                break;
            };
            if !payloads.is_empty() && bytes + p.len() > RANGE_PAYLOAD_BUDGET {
                end = i;
                break;
            }
            bytes += p.len();
            payloads.push(wire::Blob(p.to_vec()));
        }
        wire::Response::Range {
            origin,
            first_seq: from,
            codes: wire::Blob(codes[..end].to_vec()),
            payloads,
        }
    }

    /// Asks for a snapshot when peers want one; answers waiting offers.
    pub(super) fn serve_snapshots(&mut self, now: Instant) {
        if !self.want_snapshot || self.snapshot_inflight {
            return;
        }
        let current = self.state.as_ref().map(|s| &s.vv);
        let fresh = self.served.front().is_some_and(|(s, at)| {
            Some(&s.vv) == current || now.duration_since(*at) < SNAPSHOT_FRESH
        });
        self.want_snapshot = false;
        if fresh {
            self.answer_offers();
        } else {
            self.snapshot_inflight = true;
            self.emit(Output::MakeSnapshot);
        }
    }

    pub(super) fn answer_offers(&mut self) {
        let Some((s, _)) = self.served.front().cloned() else {
            return;
        };
        for channel in std::mem::take(&mut self.offer_waiting) {
            let response = wire::Response::Offer {
                id: s.id,
                vv: s.vv.iter().map(|(o, n)| (*o, *n)).collect(),
                digest: s.digest,
                raw_len: s.raw_len,
                hashes: wire::Blob(s.hashes.concat()),
            };
            self.emit(Output::Respond { channel, response });
        }
    }

    pub(super) fn request_failed(&mut self, peer: &P, req: &wire::Request) {
        match req {
            wire::Request::Range { origin, .. } => self.repair.on_failure(origin),
            wire::Request::Offer => self.join.on_offer_failed(peer),
            wire::Request::Chunk { index, .. } => self.join.on_chunk_failed(peer, *index),
            wire::Request::Delta { origin, seq } => self.on_delta_payload(*origin, *seq, None),
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
        match response {
            wire::Response::Delta { origin, seq, data } => {
                self.on_delta_payload(origin, seq, Some(data.0));
            }
            wire::Response::Range {
                origin,
                first_seq,
                codes,
                payloads,
            } => self.on_range(origin, first_seq, &codes.0, payloads),
            offer @ wire::Response::Offer { .. } => self.join.on_offer(from, offer),
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
            wire::Response::Refused(reason) => {
                tracing::debug!(?from, %reason, "sync request refused");
                self.request_failed(&peer, &req);
            }
        }
    }

    /// A repaired range: checked like gossip (payloads decode and fit, no
    /// contradiction with what is held), then stored.
    fn on_range(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
        payloads: Vec<wire::Blob>,
    ) {
        if let Some(e) = payloads.iter().find_map(|p| self.check_delta(&p.0).err()) {
            tracing::warn!(origin = %origin.short(), error = %e, "range response with an invalid delta");
            self.count("bad_response");
            self.repair.on_failure(&origin);
            return;
        }
        let held = self
            .log
            .range(&origin, first_seq, first_seq + codes.len() as u64);
        if held != &codes[..held.len()] {
            self.count("equivocation");
            self.repair.on_failure(&origin);
            return;
        }
        if codes.is_empty() {
            self.repair.on_failure(&origin);
        }
        self.event(Event::Bytes {
            protocol: "sync",
            inbound: true,
            n: codes.len() + payloads.iter().map(|p| p.0.len()).sum::<usize>(),
        });
        let payloads: Vec<Payload> = payloads.into_iter().map(|p| Arc::new(p.0)).collect();
        let n = self.accept(origin, first_seq, codes, &payloads);
        if n > 0 {
            self.stats.repaired += n;
            self.event(Event::UpdatesRepaired(n));
        }
    }
}
