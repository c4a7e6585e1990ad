//! Judging gossip: every update batch, delta announcement and heartbeat is
//! checked here before gossipsub may forward it.
//!
//! An update batch is refused when it is unsigned, its author is not an
//! ed25519 identity, it does not decode, it is over its origin's rate, or it
//! contradicts what that origin already signed (equivocation); it is ignored
//! when it is our own, already held (replayed), or of an unknown wire version
//! (counted, never penalized, so a rolling upgrade does not graylist peers).
//! A delta announcement is judged only once its payload has been pulled from
//! the forwarding peer and checked against the announced size and hash and
//! against this run's trainable tensors.

use super::*;
use crate::crdt::log::DELTA;
use crate::net::wire::DeltaAnnounce;

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    pub(super) fn on_gossip(
        &mut self,
        now: Instant,
        id: M,
        from: P,
        source: Option<P>,
        topic: Option<Topic>,
        data: &[u8],
    ) {
        let (protocol, verdict) = match topic {
            Some(Topic::Updates) => ("gossip_updates", self.on_updates(now, source, data)),
            Some(Topic::Status) => ("gossip_status", self.on_heartbeat(now, source, data)),
            Some(Topic::Deltas) => (
                "gossip_deltas",
                self.on_delta_announce(now, &id, &from, source, data),
            ),
            Some(Topic::Proofs) => ("gossip_proofs", self.on_proof(now, data)),
            None => {
                self.count("wrong_run");
                ("other", Some(Verdict::Reject))
            }
        };
        self.event(Event::Bytes {
            protocol,
            inbound: true,
            n: data.len(),
        });
        if let Some(verdict) = verdict {
            self.emit(Output::Verdict { id, from, verdict });
        }
    }

    /// The author's origin, or the verdict refusing the message.
    fn author(&mut self, source: Option<P>) -> Result<Origin, Verdict> {
        let Some(source) = source else {
            self.count("unsigned");
            return Err(Verdict::Reject);
        };
        source.origin().ok_or_else(|| {
            self.count("forged");
            Verdict::Reject
        })
    }

    /// Counts an input that did not decode: an unknown version is ignored,
    /// anything else refused (penalizing the forwarder).
    pub(super) fn refuse_decode(&mut self, e: &wire::Error) -> Verdict {
        match e {
            wire::Error::Version(_) => {
                self.count("unknown_version");
                Verdict::Ignore
            }
            wire::Error::Oversized(_) => {
                self.count("oversized");
                Verdict::Reject
            }
            _ => {
                self.count("malformed");
                Verdict::Reject
            }
        }
    }

    fn on_updates(&mut self, now: Instant, source: Option<P>, data: &[u8]) -> Option<Verdict> {
        let origin = match self.author(source) {
            Ok(o) => o,
            Err(v) => return Some(v),
        };
        let wire::UpdateBatch {
            first_seq: first,
            sig,
            bases,
            codes,
        } = match wire::decode_updates_with(data) {
            Ok(v) => v,
            Err(e) => return Some(self.refuse_decode(&e)),
        };
        if origin == self.settings.signer.origin() {
            // Our own updates echoed back by someone: we know them.
            return Some(Verdict::Ignore);
        }
        if self.log.exclusion(&origin).is_some_and(|e| first >= e.from) {
            self.count("excluded");
            return Some(Verdict::Ignore);
        }
        // Before any signature check or per-origin state: an origin the
        // owner did not admit costs nothing.
        if first >= self.log.admitted_until(&origin) {
            self.count("not_admitted");
            return Some(Verdict::Ignore);
        }
        if !self.take_tokens(now, origin, codes.len() as f64) {
            self.count("over_rate");
            return Some(Verdict::Reject);
        }
        let attest = Attest {
            first_seq: first,
            len: codes.len() as u32,
            sig,
        };
        if !attest::verify(&self.log.run(), &origin, &attest, codes, &[]) {
            self.count("bad_signature");
            return Some(Verdict::Reject);
        }
        // An origin may never sign two different codes for one seq: the two
        // signed batches prove it. The forwarder could not know; no penalty.
        if let Some(c) = self.log.conflict(&origin, first, codes, &[]) {
            let incoming = SignedBatch {
                attest,
                codes: codes.to_vec(),
                hashes: Vec::new(),
            };
            self.on_conflict(now, origin, c.with, incoming);
            return Some(Verdict::Ignore);
        }
        let held = self.log.range(&origin, first, first + codes.len() as u64);
        if held.len() == codes.len() {
            self.count("replayed");
            return Some(Verdict::Ignore);
        }
        if self.test_drop() {
            return Some(Verdict::Ignore);
        }
        if !self.within_quota(&origin, attest.end()) {
            return Some(Verdict::Ignore);
        }
        if !self.room(&origin, first, codes.len() as u64, 0) {
            return Some(Verdict::Ignore);
        }
        self.accept(origin, first, codes, &[], attest);
        if !bases.is_empty() {
            // The bases only serve rechecks: bad ones cost the batch nothing.
            match crate::crdt::basis::Bases::decode(bases, codes.len(), MAX_LOG_ORIGINS) {
                Ok(decoded) => {
                    self.sample_checks(now, origin, first, codes, &decoded);
                    self.emit(Output::KeepBases {
                        origin,
                        first_seq: first,
                        n: codes.len() as u32,
                        bases: bases.to_vec(),
                    });
                }
                Err(e) => {
                    tracing::debug!(origin = %origin.short(), error = %e, "bases do not decode");
                    self.count("bad_bases");
                }
            }
        }
        Some(Verdict::Accept)
    }

    /// A proof of equivocation: checked, then the origin is excluded
    /// (forwarded only when it was news). The topic also carries the
    /// owner's membership records ([`crate::crdt::admit`]).
    pub(super) fn on_proof(&mut self, now: Instant, data: &[u8]) -> Option<Verdict> {
        if matches!(
            data.first(),
            Some(&crate::crdt::admit::ADMISSION | &crate::crdt::admit::REVOCATION)
        ) {
            return Some(self.on_record_gossip(now, data));
        }
        let proof = match Proof::decode(data) {
            Ok(p) => p,
            Err(attest::ProofError::Version(_)) => {
                self.count("unknown_version");
                return Some(Verdict::Ignore);
            }
            Err(_) => {
                self.count("malformed");
                return Some(Verdict::Reject);
            }
        };
        // Cheap first: a proof of nothing new costs no signature check.
        let Some(from) = proof.a.conflict(&proof.b) else {
            self.count("bad_proof");
            return Some(Verdict::Reject);
        };
        if self
            .log
            .exclusion(&proof.origin)
            .is_some_and(|e| e.from <= from)
        {
            self.count("replayed");
            return Some(Verdict::Ignore);
        }
        if proof.check(&self.log.run()).is_err() {
            self.count("bad_proof");
            return Some(Verdict::Reject);
        }
        if proof.origin == self.settings.signer.origin() {
            self.exclude(now, proof.origin, from, data.to_vec(), false);
            return Some(Verdict::Accept);
        }
        let news = self.exclude(now, proof.origin, from, data.to_vec(), false);
        Some(if news {
            Verdict::Accept
        } else {
            Verdict::Ignore
        })
    }

    fn on_heartbeat(&mut self, now: Instant, source: Option<P>, data: &[u8]) -> Option<Verdict> {
        let Some(source) = source else {
            self.count("unsigned");
            return Some(Verdict::Reject);
        };
        let hb = match Heartbeat::decode(data) {
            Ok(hb) => hb,
            Err(e) => return Some(self.refuse_decode(&e)),
        };
        if source.origin() == Some(self.settings.signer.origin()) {
            return Some(Verdict::Ignore);
        }
        if self.is_banned(&source) {
            self.count("banned");
            return Some(Verdict::Ignore);
        }
        if !self.heartbeat_admitted(now, &source) {
            return Some(Verdict::Ignore);
        }
        // An old heartbeat replayed (by anyone: it stays validly signed).
        let stamp = (hb.epoch, hb.counter);
        if self.heard.get(&source).is_some_and(|&last| stamp <= last) {
            self.count("stale_heartbeat");
            return Some(Verdict::Ignore);
        }
        if self.heard.len() >= MAX_HEARD && !self.heard.contains_key(&source) {
            let live = self.repair.peers();
            self.heard.retain(|p, _| live.contains_key(p));
        }
        if self.heard.len() < MAX_HEARD || self.heard.contains_key(&source) {
            self.heard.insert(source.clone(), stamp);
        }
        if self.peers_seen.len() < MAX_SEEN {
            self.peers_seen.insert(source.clone());
        }
        if let Some(st) = &self.state {
            let same_vv =
                hb.vv.len() == st.vv.len() && hb.vv.iter().all(|(o, n)| st.vv.get(o) == Some(n));
            if same_vv && hb.digest != st.digest {
                self.stats.digest_mismatches += 1;
                self.event(Event::DigestMismatch(source.clone()));
                // Same updates counted, another state: someone holds another
                // signed version of some seq. Compare logs to find it.
                let due = self
                    .fingerprints_asked
                    .get(&source)
                    .is_none_or(|t| now.duration_since(*t) >= FINGERPRINT_EVERY);
                if due && self.fingerprints_asked.len() < MAX_BANNED {
                    self.fingerprints_asked.insert(source.clone(), now);
                    self.send(source.clone(), wire::Request::Fingerprints);
                }
            }
        }
        if hb.leaving {
            self.event(Event::PeerLeft(source.clone()));
        }
        // Claims outlive the peer (settling waits for them); what is
        // excluded or not admitted is clipped when they are read.
        // Claims of a peer that stopped answering do not count.
        let settled_at = (hb.done && hb.backlog == 0).then_some(hb.digest);
        let ours = self.state.as_ref().map(|st| (&st.vv, &st.digest));
        let credible = !self.repair.unresponsive(&source);
        self.known
            .on_heartbeat(&source, &hb.vv, credible, settled_at, ours);
        self.records_for_heartbeat(now, &source, &hb.vv);
        // A peer still counting updates of an excluded origin lacks the proof.
        let stale: Vec<(Origin, Vec<u8>)> = hb
            .vv
            .iter()
            .filter_map(|(o, n)| {
                let e = self.log.exclusion(o)?;
                let due = self
                    .proof_sent
                    .get(o)
                    .is_none_or(|t| now.duration_since(*t) >= PROOF_RESEND);
                (*n > e.from && due).then(|| (*o, e.proof.clone()))
            })
            .collect();
        for (o, proof) in stale {
            self.publish_proof(now, o, proof);
        }
        self.repair.on_heartbeat(
            source,
            PeerView {
                vv: hb.vv.into_iter().collect(),
                digest: hb.digest,
                done: hb.done,
                backlog: hb.backlog,
                loss: hb.loss,
                mode: hb.mode,
                seen: now,
            },
            hb.leaving,
        );
        Some(Verdict::Accept)
    }

    /// Validates a delta announcement. The payload is pulled from the peer
    /// that forwarded it (which validated it, so it holds the payload); the
    /// verdict waits until the payload checks out (None: pending).
    fn on_delta_announce(
        &mut self,
        now: Instant,
        id: &M,
        from: &P,
        source: Option<P>,
        data: &[u8],
    ) -> Option<Verdict> {
        let origin = match self.author(source) {
            Ok(o) => o,
            Err(v) => return Some(v),
        };
        let a = match DeltaAnnounce::decode(data, self.settings.max_delta_bytes) {
            Ok(a) => a,
            Err(e) => return Some(self.refuse_decode(&e)),
        };
        if origin == self.settings.signer.origin() {
            return Some(Verdict::Ignore);
        }
        if self.log.exclusion(&origin).is_some_and(|e| a.seq >= e.from) {
            self.count("excluded");
            return Some(Verdict::Ignore);
        }
        if a.seq >= self.log.admitted_until(&origin) {
            self.count("not_admitted");
            return Some(Verdict::Ignore);
        }
        if !self.take_tokens(now, origin, 1.0) {
            self.count("over_rate");
            return Some(Verdict::Reject);
        }
        let attest = Attest {
            first_seq: a.seq,
            len: 1,
            sig: a.sig,
        };
        if !attest::verify(&self.log.run(), &origin, &attest, &[DELTA], &[a.hash]) {
            self.count("bad_signature");
            return Some(Verdict::Reject);
        }
        if let Some(c) = self.log.conflict(&origin, a.seq, &[DELTA], &[a.hash]) {
            let incoming = SignedBatch {
                attest,
                codes: vec![DELTA],
                hashes: vec![a.hash],
            };
            self.on_conflict(now, origin, c.with, incoming);
            return Some(Verdict::Ignore);
        }
        if !self.log.range(&origin, a.seq, a.seq + 1).is_empty() {
            self.count("replayed");
            return Some(Verdict::Ignore);
        }
        if !self.within_quota(&origin, a.seq + 1) || !self.room(&origin, a.seq, 1, a.len as usize) {
            return Some(Verdict::Ignore);
        }
        if self.delta_waits.contains_key(&(origin, a.seq)) || self.test_drop() {
            return Some(Verdict::Ignore);
        }
        // Bounded work per announcer: beyond the caps an announcement is
        // ignored (unpenalized); range repair fetches what it missed later.
        let of_origin = self
            .delta_waits
            .keys()
            .filter(|(o, _)| *o == origin)
            .count();
        if of_origin >= MAX_WAITS_PER_ORIGIN || self.delta_waits.len() >= MAX_WAITS {
            self.count("deltas_busy");
            return Some(Verdict::Ignore);
        }
        self.delta_waits.insert(
            (origin, a.seq),
            DeltaWait {
                id: id.clone(),
                from: from.clone(),
                hash: a.hash,
                len: a.len,
                sig: a.sig,
            },
        );
        self.send(from.clone(), wire::Request::Delta { origin, seq: a.seq });
        None
    }

    /// The payload of an announced delta arrived (or could not be fetched):
    /// judge the announcement.
    pub(super) fn on_delta_payload(&mut self, origin: Origin, seq: u64, data: Option<Vec<u8>>) {
        let Some(w) = self.delta_waits.remove(&(origin, seq)) else {
            return;
        };
        let verdict = match data {
            None => Verdict::Ignore,
            Some(data) => {
                let fits =
                    data.len() == w.len as usize && *blake3::hash(&data).as_bytes() == w.hash;
                match (fits, self.check_delta(&data)) {
                    (true, Ok(())) => {
                        self.event(Event::Bytes {
                            protocol: "delta",
                            inbound: true,
                            n: data.len(),
                        });
                        let attest = Attest {
                            first_seq: seq,
                            len: 1,
                            sig: w.sig,
                        };
                        self.accept(origin, seq, &[DELTA], &[Arc::new(data)], attest);
                        Verdict::Accept
                    }
                    (false, _) => {
                        self.count("bad_delta");
                        Verdict::Reject
                    }
                    (true, Err(e)) => {
                        tracing::warn!(origin = %origin.short(), seq, error = %e, "invalid delta");
                        self.count("bad_delta");
                        Verdict::Reject
                    }
                }
            }
        };
        self.emit(Output::Verdict {
            id: w.id,
            from: w.from,
            verdict,
        });
    }

    /// Decodes a delta payload and checks it fits this run's trainable
    /// tensors: the one check a delta gets before it is stored (the replica
    /// decodes it again only to apply it).
    pub(super) fn check_delta(&self, payload: &[u8]) -> Result<(), String> {
        if payload.len() > self.settings.max_delta_bytes {
            return Err(format!("delta of {} bytes", payload.len()));
        }
        let params: u64 = self.settings.shapes.iter().map(|(_, n)| *n).sum();
        let d = crate::delta::fedzip::decode(payload, params).map_err(|e| e.to_string())?;
        for t in &d.tensors {
            match self.settings.shapes.iter().find(|(n, _)| *n == t.name) {
                Some((_, len)) if *len == t.len => {}
                Some(_) => return Err(format!("tensor {} has another length", t.name)),
                None => return Err(format!("tensor {} is not trainable in this run", t.name)),
            }
        }
        Ok(())
    }
}
