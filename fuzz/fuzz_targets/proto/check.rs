//! The checks on what the core hands out, and the shell's and compute
//! side's answers to it: `next_apply` segments (Apply: contiguous with what
//! is applied and persisted, every code covered by a valid signature of its
//! origin; Retract: exactly the applied tail of an excluded origin; Store:
//! within what is applied, contiguous with what is persisted) and every
//! `Output` (verdicts, sends, responds, own publications, snapshots to make
//! and install, bans, exclusions, training and finish), answering `Publish`
//! with `Published`, `Resume` with `KeptChunk`s and `MakeSnapshot` with the
//! state the compute side would reach.

use crate::harness::H;
use crate::{allow_known, hash, index_of, trace, Pe, MAX_DELTA_BYTES, MAX_WAITS, ME, RUN};
use seedswarm::crdt::attest::{self, Attest, Proof};
use seedswarm::crdt::log::{Op, Segment, DELTA};
use seedswarm::crdt::replica::VersionVector;
use seedswarm::net::wire::{self, DeltaAnnounce, Heartbeat, Request};
use seedswarm::proto::{self, Input, Output, Topic};

impl H {
    /// Records a segment's codes (with their payload hashes) as known.
    fn learn(&mut self, seg: &Segment) {
        let h = self.hist.entry(seg.origin).or_default();
        let mut k = 0;
        for (i, &c) in seg.codes.iter().enumerate() {
            let ph = (c == DELTA).then(|| {
                k += 1;
                seg.payloads.get(k - 1).map(|p| hash(p)).unwrap_or([0; 32])
            });
            h.set(seg.first_seq.saturating_add(i as u64), c, ph);
        }
    }

    /// Checks the signatures a segment carries (each over a batch ending
    /// inside it, in order) and records what they cover.
    fn check_attests(&mut self, seg: &Segment) {
        let h = self.hist.entry(seg.origin).or_default();
        let mut last = seg.first_seq;
        for a in &seg.attests {
            assert!(
                a.len > 0 && a.end() > last && a.end() <= seg.end(),
                "segment carries a signature of a batch not ending inside it: {a:?} in {seg:?}"
            );
            last = a.end();
            if let Some((codes, hashes)) = h.batch(a.first_seq, a.end()) {
                assert!(
                    attest::verify(&RUN, &seg.origin, a, &codes, &hashes),
                    "segment carries a signature that is not its origin's over these codes: {a:?} in {seg:?}"
                );
            }
            h.cover(a.first_seq, a.end());
        }
    }

    pub(crate) fn check_segment(&mut self, seg: &Segment) {
        if trace() {
            eprintln!("         apply {seg:?}");
        }
        let o = seg.origin;
        assert_ne!(o, self.own, "next_apply hands out own updates");
        let applied = self.applied.get(&o).copied().unwrap_or(0);
        // Known: after a snapshot whose log is signed short of its version
        // vector, a retraction stops where the log does (possibly at once).
        let short_known = allow_known()
            && seg.op == Op::Retract
            && seg.end() < applied
            && self.installed.get(&o).is_some_and(|&n| seg.end() < n);
        assert!(
            !seg.codes.is_empty() || short_known,
            "empty segment: {seg:?}"
        );
        let markers = seg.codes.iter().filter(|&&c| c == DELTA).count();
        assert_eq!(
            markers,
            seg.payloads.len(),
            "segment without the payload of a delta update: {seg:?}"
        );
        let persisted = self.persisted.get(&o).copied().unwrap_or(0);
        let exclusion = self.core.log().exclusion(&o).map(|e| e.from);
        // Known: held updates below a snapshot's version vector past its
        // signed log are never handed out to be persisted.
        let gap_known = allow_known()
            && self.installed.get(&o).is_some_and(|&n| seg.first_seq <= n);
        match seg.op {
            Op::Apply => {
                // At most the asked size, or up to the end of the signed
                // batch that crosses it (whole batches are handed out), or
                // up to an exclusion inside that batch.
                assert!(
                    seg.codes.len() <= self.apply_max
                        || exclusion == Some(seg.end())
                        || seg.attests.last().is_some_and(|a| a.end() == seg.end()
                            && a.first_seq < seg.first_seq.saturating_add(self.apply_max as u64)),
                    "segment over max, not ending a signed batch: {seg:?}"
                );
                assert_eq!(
                    seg.first_seq, applied,
                    "segment of {o:?} not contiguous with what was applied"
                );
                // The log's file has no gap (a snapshot's log may have run
                // past its version vector: then these are written again).
                assert!(
                    seg.first_seq <= persisted || gap_known,
                    "applied segment of {o:?} leaves a gap in the log's file after {persisted}: {seg:?}"
                );
                assert!(
                    exclusion.is_none_or(|e| seg.end() <= e),
                    "updates of an excluded origin applied past its exclusion: {seg:?}"
                );
                self.learn(seg);
                self.check_attests(seg);
                // Every code applied is signed by its origin (the last batch
                // may be cut by an exclusion inside it).
                if exclusion != Some(seg.end()) {
                    let h = &self.hist[&o];
                    if let Some(s) = (seg.first_seq..seg.end()).find(|&s| !h.is_covered(s)) {
                        panic!("update {s} of {o:?} applied without its origin's signature: {seg:?}");
                    }
                }
                self.set_applied(o, seg.end());
                self.persisted.insert(o, persisted.max(seg.end()));
            }
            Op::Retract => {
                let Some(from) = exclusion else {
                    panic!("retraction of an origin that is not excluded: {seg:?}");
                };
                assert!(self.excluded.contains_key(&o), "retraction before Excluded");
                assert_eq!(seg.first_seq, from, "retraction not from the exclusion");
                if !short_known {
                    assert_eq!(
                        seg.end(),
                        applied,
                        "retraction is not the applied tail of {o:?} (applied {applied}): {seg:?}"
                    );
                }
                self.check_same_as_applied(seg);
                self.set_applied(o, seg.first_seq);
                if let Some(h) = self.hist.get_mut(&o) {
                    h.cut(seg.first_seq);
                }
            }
            Op::Store => {
                assert!(
                    seg.end() <= applied,
                    "stored segment of {o:?} past what is applied ({applied}): {seg:?}"
                );
                assert!(
                    seg.first_seq <= persisted || gap_known,
                    "stored segment of {o:?} leaves a gap in the log's file after {persisted}: {seg:?}"
                );
                self.check_same_as_applied(seg);
                self.learn(seg);
                self.check_attests(seg);
                // Signed, except a tail cut at the installed version vector
                // (its batch's signature comes with the next Apply segment).
                let h = &self.hist[&o];
                if let Some(s) = (seg.first_seq..seg.end()).find(|&s| !h.is_covered(s)) {
                    let tail = seg.end() == applied && (s..seg.end()).all(|t| !h.is_covered(t));
                    assert!(
                        tail,
                        "update {s} of {o:?} stored without its origin's signature: {seg:?}"
                    );
                }
                self.persisted.insert(o, persisted.max(seg.end()));
            }
        }
    }

    /// Where the compute side knows the applied codes, `seg` holds the same.
    fn check_same_as_applied(&self, seg: &Segment) {
        let Some(h) = self.hist.get(&seg.origin) else {
            return;
        };
        for (i, &c) in seg.codes.iter().enumerate() {
            let s = seg.first_seq.saturating_add(i as u64);
            if let Some((held, _)) = h.get(s) {
                assert_eq!(held, c, "{:?} seq {s}: another code than applied", seg.op);
            }
        }
    }

    /// The state the compute side reaches for `MakeSnapshot { target,
    /// retract }` (as `Session::image_at` does), checking the retraction.
    fn snapshot_state(
        &self,
        target: &VersionVector,
        retract: &[Segment],
    ) -> Result<VersionVector, String> {
        if target.is_empty() {
            assert!(retract.is_empty(), "retraction for the current state");
            return Ok(self.applied.clone());
        }
        let mut vv = self.applied.clone();
        for s in retract {
            assert_eq!(s.op, Op::Retract, "snapshot retraction of another op");
            assert!(!s.codes.is_empty(), "empty snapshot retraction");
            let have = self.applied.get(&s.origin).copied().unwrap_or(0);
            if s.origin == self.own {
                assert!(s.end() <= have, "own retraction past what is applied");
                continue;
            }
            assert_eq!(
                s.end(),
                have,
                "snapshot retraction is not the applied tail: {s:?}"
            );
            self.check_same_as_applied(s);
            vv.insert(s.origin, s.first_seq);
        }
        // Own updates past the target are subtracted by the compute side.
        let want = target.get(&self.own).copied().unwrap_or(0);
        if self.applied.get(&self.own).is_some_and(|&h| h > want) {
            vv.insert(self.own, want);
        }
        vv.retain(|_, n| *n > 0);
        // The retraction is exactly the way from here to the target.
        for (o, n) in vv.iter().chain(target.iter()) {
            if *o != self.own {
                assert_eq!(
                    vv.get(o).copied().unwrap_or(0),
                    target.get(o).copied().unwrap_or(0),
                    "snapshot retraction does not reach the target for {o:?}"
                );
            }
            let _ = n;
        }
        if &vv == target {
            Ok(vv)
        } else {
            Err("could not reach that version vector".into())
        }
    }

    pub(crate) fn output(&mut self, out: Output<Pe, u64, u64>) {
        if trace() && !matches!(out, Output::Event(proto::Event::Bytes { .. })) {
            eprintln!("         out {out:?}");
        }
        match out {
            Output::Publish { topic, data, end } => {
                match topic {
                    Topic::Updates => {
                        let (first, sig, codes) = wire::decode_updates(&data)
                            .expect("own update batch does not decode");
                        let a = Attest {
                            first_seq: first,
                            len: codes.len() as u32,
                            sig,
                        };
                        assert!(
                            attest::verify(&RUN, &self.own, &a, codes, &[]),
                            "own update batch not validly signed"
                        );
                        assert_eq!(end, Some(a.end()));
                    }
                    Topic::Status => {
                        let hb = Heartbeat::decode(&data).expect("own heartbeat does not decode");
                        assert_eq!(
                            (hb.epoch, hb.counter),
                            (1, self.own_heartbeats),
                            "own heartbeat stamps do not count up"
                        );
                        self.own_heartbeats += 1;
                    }
                    Topic::Deltas => {
                        let a = DeltaAnnounce::decode(&data, MAX_DELTA_BYTES)
                            .expect("own delta announcement does not decode");
                        let at = Attest {
                            first_seq: a.seq,
                            len: 1,
                            sig: a.sig,
                        };
                        assert!(
                            attest::verify(&RUN, &self.own, &at, &[DELTA], &[a.hash]),
                            "own delta announcement not validly signed"
                        );
                    }
                    Topic::Proofs => {
                        let p = Proof::decode(&data).expect("published proof does not decode");
                        p.check(&RUN).expect("published proof does not hold");
                        assert!(
                            self.equivocated.contains(&p.origin),
                            "proof published against {:?}, which never equivocated",
                            p.origin
                        );
                    }
                }
                if let Some(end) = end {
                    let now = self.now();
                    self.core.handle(now, Input::Published { end });
                }
            }
            Output::Admitted(_) | Output::OwnCap { .. } => {
                panic!("a membership output in an open run: {out:?}")
            }
            Output::Verdict { id, from, verdict } => {
                let Some(&given_from) = self.given.get(&id) else {
                    panic!("verdict {verdict:?} for message {id}, never given");
                };
                assert_eq!(from, given_from, "verdict names another forwarder");
                assert!(self.judged.insert(id), "second verdict for message {id}");
            }
            Output::Send { to, tag, request } => {
                assert!(tag >= self.next_tag, "tag {tag} reused");
                self.next_tag = tag + 1;
                assert_ne!(to, ME, "request sent to this node");
                request
                    .validate()
                    .unwrap_or_else(|e| panic!("own request {request:?} invalid: {e}"));
                if matches!(request, Request::Delta { .. }) {
                    self.delta_out += 1;
                    assert!(self.delta_out <= MAX_WAITS, "delta fetches unbounded");
                }
                self.outstanding.insert(tag, (to, request));
            }
            Output::Respond { channel, response } => {
                let Some(req) = self.open.remove(&channel) else {
                    panic!("answer on channel {channel}: never given or answered already");
                };
                response
                    .validate(&req)
                    .unwrap_or_else(|e| panic!("answer {response:?} to {req:?} invalid: {e}"));
                if let wire::Response::Range { origin, batches } = &response {
                    // Served ranges carry only what their origin signed.
                    for b in batches {
                        let payloads: Vec<_> = b
                            .payloads
                            .iter()
                            .map(|p| std::sync::Arc::new(p.0.clone()))
                            .collect();
                        let hashes = attest::payload_hashes(&b.codes.0, &payloads)
                            .expect("served batch without its payloads");
                        let a = Attest {
                            first_seq: b.first_seq,
                            len: b.codes.0.len() as u32,
                            sig: b.sig.0.as_slice().try_into().expect("signature length"),
                        };
                        // Known: a snapshot's log stored over other held
                        // codes of an equivocating origin keeps those codes
                        // under the snapshot batch's signature.
                        let known = allow_known()
                            && self.equivocated.contains(origin)
                            && self.installed.contains_key(origin);
                        assert!(
                            known || attest::verify(&RUN, origin, &a, &b.codes.0, &hashes),
                            "served a batch of {origin:?} its origin did not sign: {a:?}"
                        );
                    }
                }
            }
            Output::Check {
                origin,
                seq,
                code,
                target,
                retract,
            } => {
                assert_ne!(origin, self.own, "a spot check of the node's own update");
                assert_ne!(code, 0, "a spot check of a zero code");
                assert_eq!(target.get(&origin), Some(&seq), "a check's state lacks its own seq");
                assert!(
                    self.checks.is_empty(),
                    "a second spot check before the first was answered"
                );
                // The same invariants as a snapshot's: applied tails that
                // reach the target exactly.
                let _ = self.snapshot_state(&target, &retract);
                self.checks.push((origin, seq));
            }
            Output::KeepBases {
                origin: _,
                first_seq: _,
                n,
                bases,
            } => {
                assert!(
                    seedswarm::crdt::basis::Bases::decode(&bases, n as usize, 4096).is_ok(),
                    "kept bases that do not decode"
                );
            }
            Output::MakeSnapshot { target, retract } => {
                assert!(
                    self.make_pending.is_none(),
                    "MakeSnapshot again before Snapshot"
                );
                self.make_pending = Some(self.snapshot_state(&target, &retract));
            }
            Output::Install {
                chunks,
                hashes,
                vv,
                digest: _,
            } => {
                assert_eq!(chunks.len(), hashes.len());
                for (c, h) in chunks.iter().zip(&hashes) {
                    assert_eq!(&hash(c), h, "unverified chunk installed");
                }
                assert!(self.install.is_none(), "second Install before Installed");
                self.install = Some(vv);
            }
            Output::KeepChunk { id, index, data } => {
                self.kept.insert((id, index), data);
            }
            Output::Resume { id, chunks } => {
                // Chunks kept by "an earlier life": those of the offer as
                // made, some of them corrupted, chosen by the header.
                let offered = self.offered.get(&id).cloned().unwrap_or_default();
                for index in 0..chunks.min(8) as u32 {
                    let mut data = match self.kept.get(&(id, index)) {
                        Some(d) => d.clone(),
                        None if self.resume_mask & (1 << index) != 0 => {
                            match offered.get(index as usize) {
                                Some(d) => d.clone(),
                                None => continue,
                            }
                        }
                        None => continue,
                    };
                    if self.resume_mask & 0x80 != 0 && index == 0 {
                        data.push(0);
                    }
                    let now = self.now();
                    self.core.handle(now, Input::KeptChunk { id, index, data });
                }
            }
            Output::StartTraining => {
                assert!(!self.training, "StartTraining twice");
                self.training = true;
            }
            Output::Ban { peer, reason } => {
                assert_ne!(peer, ME, "banned itself");
                assert!(
                    self.forgers.contains(&peer),
                    "{peer:?} banned ({reason}), though it never served a forged batch"
                );
            }
            Output::Excluded {
                origin,
                from,
                proof,
            } => {
                assert_ne!(origin, self.own, "own origin excluded");
                assert!(
                    self.equivocated.contains(&origin),
                    "{origin:?} (peer {:?}) excluded, though it never equivocated",
                    index_of(&origin)
                );
                let p = Proof::decode(&proof).expect("exclusion proof does not decode");
                assert_eq!(p.origin, origin, "exclusion proof of another origin");
                assert_eq!(p.check(&RUN), Ok(from), "exclusion proof does not hold");
                if let Some(&was) = self.excluded.get(&origin) {
                    assert!(from < was, "exclusion reported again, not earlier");
                }
                self.excluded.insert(origin, from);
            }
            Output::Finished { .. } => {
                assert!(!self.finished, "Finished twice");
                self.finished = true;
            }
            Output::Event(_) => {}
        }
    }
}

