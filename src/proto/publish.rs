//! Publishing: own updates into the log and the outbox (one gossip batch per
//! interval or per `publish_max` updates; a delta announced on its own), and
//! heartbeats of the replica's version vector and digest (and the node's mode).

use super::*;

/// Live peers up to which heartbeats and batches keep their configured
/// periods.
const PERIOD_PEERS: f64 = 8.0;
/// The longest the heartbeat period grows to with the swarm (a third of
/// the repair's peer timeout, so a live peer is never forgotten).
pub(super) const HEARTBEAT_MAX: Duration = Duration::from_secs(5);
/// The longest the publish period grows to with the swarm.
pub(super) const PUBLISH_MAX: Duration = Duration::from_secs(1);

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    /// The heartbeat period: heartbeats cost each node about the same bytes
    /// per second at any swarm size (see [`Core::scaled`]).
    pub fn heartbeat_every(&self) -> Duration {
        self.scaled(self.settings.heartbeat_interval, HEARTBEAT_MAX)
    }

    /// The publish period: fewer, fuller messages, so the per-message cost
    /// (gossip envelope, signatures, copies) is shared by more updates when
    /// every node receives everyone's (see [`Core::scaled`]).
    pub fn publish_every(&self) -> Duration {
        self.scaled(self.settings.publish_interval, PUBLISH_MAX)
    }

    /// `base` up to [`PERIOD_PEERS`] live peers, growing in proportion to
    /// their number beyond, at most `cap` (never below `base`).
    fn scaled(&self, base: Duration, cap: Duration) -> Duration {
        let scale = (self.repair.peers().len() as f64 / PERIOD_PEERS).max(1.0);
        base.mul_f64(scale).min(cap.max(base))
    }

    /// Stores an own update (the compute side applied and persisted it) and
    /// queues it for publishing.
    pub(super) fn on_own(&mut self, now: Instant, seq: u64, update: Own, basis: VersionVector) {
        let origin = self.settings.signer.origin();
        self.event(Event::UpdatesPublished(1));
        match update {
            Own::Code(code) => {
                if let Err(e) = self.log.insert(origin, seq, &[code]) {
                    tracing::warn!(error = %e, "cannot store own update");
                }
                match &mut self.outbox {
                    Some((first, codes, bases)) if *first + codes.len() as u64 == seq => {
                        codes.push(code);
                        bases.push(basis);
                    }
                    _ => {
                        self.flush_outbox();
                        self.outbox = Some((seq, vec![code], vec![basis]));
                        self.last_publish = self.last_publish.min(now);
                    }
                }
                let max = self.settings.publish_max.clamp(1, wire::MAX_BATCH);
                if self.outbox.as_ref().is_some_and(|(_, c, _)| c.len() >= max) {
                    self.flush_outbox();
                    self.last_publish = now;
                }
            }
            Own::Delta(payload) => {
                self.flush_outbox();
                let hash = *blake3::hash(&payload).as_bytes();
                let attest = self
                    .settings
                    .signer
                    .sign(seq, &[crate::crdt::log::DELTA], &[hash]);
                let announce = wire::DeltaAnnounce {
                    seq,
                    len: payload.len() as u32,
                    hash,
                    sig: attest.sig,
                };
                if let Err(e) = self.log.insert_signed(
                    origin,
                    seq,
                    &[crate::crdt::log::DELTA],
                    &[payload],
                    Some(attest),
                ) {
                    tracing::warn!(error = %e, "cannot store own delta");
                }
                let data = announce.encode();
                self.stats.published_messages += 1;
                self.stats.published_updates += 1;
                self.event(Event::Bytes {
                    protocol: "gossip_deltas",
                    inbound: false,
                    n: data.len(),
                });
                self.emit(Output::Publish {
                    topic: Topic::Deltas,
                    data,
                    end: Some(seq + 1),
                });
            }
        }
        let end = self.log.next_seq(&origin);
        let d = self.delivered.entry(origin).or_insert(0);
        *d = (*d).max(end);
    }

    pub(super) fn flush_outbox(&mut self) {
        let Some((first, codes, bases)) = self.outbox.take() else {
            return;
        };
        let attest = self.settings.signer.sign(first, &codes, &[]);
        self.log.attest(self.settings.signer.origin(), attest);
        let bases = crate::crdt::basis::encode(&bases);
        let data = wire::encode_updates_with(first, &attest.sig, &bases, &codes);
        if !bases.is_empty() {
            self.emit(Output::KeepBases {
                origin: self.settings.signer.origin(),
                first_seq: first,
                n: codes.len() as u32,
                bases,
            });
        }
        self.stats.published_messages += 1;
        self.stats.published_updates += codes.len() as u64;
        self.event(Event::Bytes {
            protocol: "gossip_updates",
            inbound: false,
            n: data.len(),
        });
        self.emit(Output::Publish {
            topic: Topic::Updates,
            data,
            end: Some(first + codes.len() as u64),
        });
    }

    pub(super) fn heartbeat(&mut self, done: bool, leaving: bool) {
        let Some(st) = &self.state else { return };
        let hb = Heartbeat {
            vv: st.vv.iter().map(|(o, n)| (*o, *n)).collect(),
            digest: st.digest,
            done,
            leaving,
            loss: st.loss,
            backlog: self.backlog(),
            mode: self.settings.mode,
            epoch: self.settings.epoch_ms,
            counter: self.heartbeats_sent,
        };
        self.heartbeats_sent += 1;
        let data = hb.encode();
        self.event(Event::Bytes {
            protocol: "gossip_status",
            inbound: false,
            n: data.len(),
        });
        self.emit(Output::Publish {
            topic: Topic::Status,
            data,
            end: None,
        });
    }
}
