//! What keeps a node safe from the peers it talks to, as the core's
//! methods: exclusions of proven equivocators and their proofs, bans of
//! peers that serve forged data, storing a snapshot's signed log, and the
//! bounds on what peers can make a node keep (waiting data, quotas, request
//! rates, gaps nobody fills).

use super::*;

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    /// Stores the signed batches of a snapshot's log segment (from seq 0;
    /// the compute side kept only its verified prefix,
    /// [`crate::crdt::log::verified_prefix`]); returns one past the last seq
    /// stored.
    pub(super) fn store_signed_prefix(&mut self, now: Instant, s: &Segment) -> u64 {
        let mut at = 0u64;
        for a in &s.attests {
            if a.first_seq > at || a.end() <= at || a.end() > s.end() {
                break;
            }
            let codes = &s.codes[a.first_seq as usize..a.end() as usize];
            let before = s.codes[..a.first_seq as usize]
                .iter()
                .filter(|&&c| c == crate::crdt::log::DELTA)
                .count();
            let n = codes
                .iter()
                .filter(|&&c| c == crate::crdt::log::DELTA)
                .count();
            let Some(payloads) = s.payloads.get(before..before + n) else {
                break;
            };
            // What gossip brought while joining may contradict it.
            let Some(hashes) = attest::payload_hashes(codes, payloads) else {
                break;
            };
            if let Some(c) = self.log.conflict(&s.origin, a.first_seq, codes, &hashes) {
                let incoming = SignedBatch {
                    attest: *a,
                    codes: codes.to_vec(),
                    hashes,
                };
                self.on_conflict(now, s.origin, c.with, incoming);
                break;
            }
            if let Err(e) = self
                .log
                .insert_signed(s.origin, a.first_seq, codes, payloads, Some(*a))
            {
                tracing::warn!(error = %e, "snapshot log not stored");
                break;
            }
            at = a.end();
        }
        at
    }
    /// Excludes `origin` from `from` on (a checked proof, or the owner's
    /// revocation); publishes the evidence when it is news. Returns whether
    /// it was.
    /// (`publish` false: the proof came by gossip and is forwarded as it is.)
    pub(super) fn exclude(
        &mut self,
        now: Instant,
        origin: Origin,
        from: u64,
        proof: Vec<u8>,
        publish: bool,
    ) -> bool {
        let revoked = proof.first() == Some(&crate::crdt::admit::REVOCATION);
        if origin == self.settings.signer.origin() && !revoked {
            tracing::error!(
                from,
                "this node's own origin is proven to have signed two different updates for one seq \
                 (a log lost after a crash?); its peers exclude it from there on"
            );
            return false;
        }
        if !self.log.exclude(origin, from, proof.clone()) {
            return false;
        }
        if revoked {
            tracing::warn!(origin = %origin.short(), from, "the owner revoked this origin: excluded from this seq on");
        } else {
            tracing::warn!(origin = %origin.short(), from, "origin signed conflicting updates: excluded from this seq on");
        }
        self.log.drop_pending(&origin);
        self.drop_delta_waits(&origin, from);
        self.event(Event::Excluded(origin, from));
        self.emit(Output::Excluded {
            origin,
            from,
            proof: proof.clone(),
        });
        if publish {
            self.publish_proof(now, origin, proof);
        } else {
            self.proof_sent.insert(origin, now);
        }
        true
    }
    pub(super) fn publish_proof(&mut self, now: Instant, origin: Origin, proof: Vec<u8>) {
        self.proof_sent.insert(origin, now);
        self.event(Event::Bytes {
            protocol: "gossip_proofs",
            inbound: false,
            n: proof.len(),
        });
        self.emit(Output::Publish {
            topic: Topic::Proofs,
            data: proof,
            end: None,
        });
    }
    /// Two signed batches of `origin` conflict: build the proof, exclude.
    pub(super) fn on_conflict(
        &mut self,
        now: Instant,
        origin: Origin,
        with: Option<SignedBatch>,
        incoming: SignedBatch,
    ) {
        self.count("equivocation");
        let Some(with) = with else {
            // What we hold there is not signed (a log of the older format):
            // nothing to prove with; the batch is simply not taken.
            return;
        };
        let proof = Proof {
            origin,
            a: with,
            b: incoming,
        };
        match proof.check(&self.log.run()) {
            Ok(from) => {
                self.exclude(now, origin, from, proof.encode(), true);
            }
            Err(e) => tracing::debug!(error = %e, "no proof from a conflict"),
        }
    }
    /// Drops the delta fetches of `origin` from seq `from` on (excluded),
    /// judging their announcements: ignored.
    pub(super) fn drop_delta_waits(&mut self, origin: &Origin, from: u64) {
        let gone: Vec<(Origin, u64)> = self
            .delta_waits
            .keys()
            .filter(|(o, s)| o == origin && *s >= from)
            .copied()
            .collect();
        for k in gone {
            if let Some(w) = self.delta_waits.remove(&k) {
                self.emit(Output::Verdict {
                    id: w.id,
                    from: w.from,
                    verdict: Verdict::Ignore,
                });
            }
        }
    }
    /// A peer served forged data: ban it (bounded list) and forget it.
    pub(super) fn ban(&mut self, peer: P, reason: &'static str) {
        self.count(reason);
        self.repair.forget(&peer);
        // What it claimed is not waited for.
        let log = &self.log;
        self.known.discredit(&peer, |o| log.next_seq(o));
        if !self.banned.contains(&peer) {
            self.banned.push_back(peer.clone());
            if self.banned.len() > MAX_BANNED {
                self.banned.pop_front();
            }
        }
        self.emit(Output::Ban { peer, reason });
    }
    /// True when `peer` was banned.
    pub fn is_banned(&self, peer: &P) -> bool {
        self.banned.contains(peer)
    }
    /// Room behind `origin`'s gap for a batch of `n` updates at `first`;
    /// false (and counted) when the bounds are reached.
    /// `payload`: bytes of the delta payload it carries.
    pub(super) fn room(&mut self, origin: &Origin, first: u64, n: u64, payload: usize) -> bool {
        if first <= self.log.next_seq(origin) {
            return true;
        }
        let (mine, batches) = self.log.pending_of(origin);
        if mine + n > MAX_PENDING_PER_ORIGIN
            || batches >= MAX_PENDING_BATCHES_PER_ORIGIN
            || self.log.pending_updates() + n > MAX_PENDING
            || self.log.pending_batches() >= MAX_PENDING_BATCHES
            || (payload > 0
                && self.log.pending_payload_bytes() + payload > MAX_PENDING_PAYLOAD_BYTES)
        {
            self.count("pending_full");
            return false;
        }
        true
    }
    /// Drops what waits behind a gap nobody filled for `timing.give_up`
    /// (an origin that never serves, or died): bounded memory, and settling
    /// is not held up by it. Repair asks again when a peer shows it holds it.
    pub(super) fn give_up_gaps(&mut self, now: Instant) {
        let gaps = self.log.gaps();
        self.gap_since
            .retain(|o, (at, _)| gaps.iter().any(|(g, next, _)| g == o && next == at));
        for (o, next, _) in gaps {
            let since = self.gap_since.entry(o).or_insert((next, now)).1;
            if now.duration_since(since) >= self.settings.timing.give_up {
                let n = self.log.drop_pending(&o);
                self.gap_since.remove(&o);
                self.stats.dropped_pending += n;
                self.count("gap_given_up");
                tracing::warn!(origin = %o.short(), missing_from = next, dropped = n, "nobody filled a gap; dropped what waited behind it");
            }
        }
    }
    /// Takes `n` tokens from `peer`'s bucket of sync requests.
    pub(super) fn take_request(&mut self, now: Instant, peer: &P, n: f64) -> bool {
        if self.request_buckets.len() >= MAX_SEEN && !self.request_buckets.contains_key(peer) {
            self.prune_buckets(now);
        }
        let rate = REQUESTS_PER_SECOND;
        self.request_buckets
            .entry(peer.clone())
            .or_insert_with(|| Bucket::full(rate, now))
            .take(now, rate, n)
    }
    /// Forgets buckets that refilled (idle at least their burst time):
    /// a new bucket starts full, so nothing is lost.
    pub(super) fn prune_buckets(&mut self, now: Instant) {
        let full = |b: &Bucket| now.saturating_duration_since(b.at) >= Duration::from_secs(2);
        self.buckets.retain(|_, b| !full(b));
        self.request_buckets.retain(|_, b| !full(b));
    }
    /// Room in the log for a batch of `origin` ending at `end`: within its
    /// quota (`run.max_updates_per_origin`) and the bound on origins.
    pub(super) fn within_quota(&mut self, origin: &Origin, end: u64) -> bool {
        if end > self.settings.max_updates_per_origin {
            self.count("over_quota");
            return false;
        }
        if self.log.next_seq(origin) == 0
            && self.log.pending_of(origin).1 == 0
            && self.log.origins() >= MAX_LOG_ORIGINS
        {
            self.count("too_many_origins");
            return false;
        }
        true
    }
}
