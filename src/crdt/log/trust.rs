//! What decides which held updates count: the owner's admissions
//! ([`crate::crdt::admit`]), exclusions (a proof of equivocation or a
//! revocation) and the conflicts that prove equivocation, with the log
//! fingerprints that find them across a partition.

use super::*;

impl Log {
    /// Makes the run permissioned by `owner` (None: open to every origin).
    pub fn set_owner(&mut self, owner: Option<Owner>) {
        self.owner = owner;
    }

    /// The run's owner, when it is permissioned.
    pub fn owner(&self) -> Option<Owner> {
        self.owner
    }

    /// Takes an owner-signed admission (checked by the caller); true when it
    /// is news (no admission of that origin reached as far). At most
    /// [`MAX_ADMISSIONS`] origins are admitted; beyond, new ones are refused.
    pub fn admit(&mut self, a: Record) -> bool {
        if a.kind != Kind::Admission {
            return false;
        }
        match self.admitted.get(&a.origin) {
            Some(cur) if admit::covers(cur, &a) => false,
            None if self.admitted.len() >= MAX_ADMISSIONS => false,
            _ => {
                self.admitted.insert(a.origin, a);
                true
            }
        }
    }

    /// The widest admission of `origin`.
    pub fn admission(&self, origin: &Origin) -> Option<&Record> {
        self.admitted.get(origin)
    }

    /// Every admission, by origin.
    pub fn admissions(&self) -> &BTreeMap<Origin, Record> {
        &self.admitted
    }

    /// First seq of `origin` its admission does not cover (`u64::MAX` in an
    /// open run; 0 for an origin the owner never admitted).
    pub fn admitted_until(&self, origin: &Origin) -> u64 {
        match self.owner {
            None => u64::MAX,
            Some(_) => self.admitted.get(origin).map_or(0, |a| a.seq),
        }
    }

    /// First seq of `origin` that counts nowhere: its exclusion (a proof or
    /// a revocation) or the end of its admission, whichever comes first.
    pub fn cap(&self, origin: &Origin) -> u64 {
        let excluded = self.excluded.get(origin).map_or(u64::MAX, |e| e.from);
        excluded.min(self.admitted_until(origin))
    }

    /// How a batch of `origin` (with the hashes of its delta payloads)
    /// contradicts held or waiting signed data, if it does.
    pub fn conflict(
        &self,
        origin: &Origin,
        first_seq: u64,
        codes: &[u8],
        hashes: &[[u8; 32]],
    ) -> Option<Conflict> {
        let end = first_seq + codes.len() as u64;
        let mut k = 0usize;
        let mut incoming_hash = Vec::with_capacity(codes.len());
        for &c in codes {
            incoming_hash.push(if c == DELTA {
                k += 1;
                hashes.get(k - 1).copied()
            } else {
                None
            });
        }
        let held = self.range(origin, first_seq, end);
        let differs = |seq: u64, code: u8| -> bool {
            let i = (seq - first_seq) as usize;
            code != codes[i]
                || (code == DELTA
                    && self
                        .payload(origin, seq)
                        .map(|p| *blake3::hash(p).as_bytes())
                        != incoming_hash[i])
        };
        if let Some(i) = (0..held.len()).find(|&i| differs(first_seq + i as u64, held[i])) {
            let seq = first_seq + i as u64;
            return Some(Conflict {
                seq,
                with: self.signed_batch(origin, seq),
            });
        }
        // Batches waiting behind a gap were signed too.
        let incoming = SignedBatch {
            attest: Attest {
                first_seq,
                len: codes.len() as u32,
                sig: [0; crate::crdt::attest::SIG_LEN],
            },
            codes: codes.to_vec(),
            hashes: hashes.to_vec(),
        };
        for (&f, (c, a)) in self.pending.get(origin)?.range(..end) {
            if f + c.len() as u64 <= first_seq {
                continue;
            }
            let Some(a) = a else { continue };
            let payloads = self.payloads_in_pending(origin, f, c);
            let Some(h) = crate::crdt::attest::payload_hashes(c, &payloads) else {
                continue;
            };
            let waiting = SignedBatch {
                attest: *a,
                codes: c.clone(),
                hashes: h,
            };
            if let Some(seq) = waiting.conflict(&incoming) {
                return Some(Conflict {
                    seq,
                    with: Some(waiting),
                });
            }
        }
        None
    }

    fn payloads_in_pending(&self, origin: &Origin, first: u64, codes: &[u8]) -> Vec<Payload> {
        codes
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == DELTA)
            .filter_map(|(i, _)| self.payload(origin, first + i as u64).cloned())
            .collect()
    }

    /// Excludes `origin` from seq `from` on (an equivocation proven by
    /// `proof`); returns true when that is news (no exclusion, or a later
    /// one, was known). Held codes stay (to serve whole signed batches), but
    /// count nowhere past `from`; waiting batches from there are dropped.
    pub fn exclude(&mut self, origin: Origin, from: u64, proof: Vec<u8>) -> bool {
        if self.excluded.get(&origin).is_some_and(|e| e.from <= from) {
            return false;
        }
        self.excluded.insert(origin, Exclusion { from, proof });
        if let Some(p) = self.pending.get_mut(&origin) {
            p.retain(|&first, _| first < from);
            if p.is_empty() {
                self.pending.remove(&origin);
            }
        }
        self.drop_stray_payloads_of(origin, self.next_seq(&origin));
        true
    }

    /// BLAKE3 of `origin`'s first `n` held codes and the hashes of the delta
    /// payloads among them (None when fewer are held): two nodes holding
    /// different signed versions of some seq below `n` differ here.
    pub fn fingerprint(&self, origin: &Origin, n: u64) -> Option<[u8; 32]> {
        let codes = self.range(origin, 0, n);
        if (codes.len() as u64) < n {
            return None;
        }
        let mut h = blake3::Hasher::new();
        h.update(b"seedswarm/fingerprint/1");
        h.update(&origin.0);
        h.update(&n.to_le_bytes());
        h.update(codes);
        for (i, &c) in codes.iter().enumerate() {
            if c == DELTA {
                if let Some(p) = self.payload(origin, i as u64) {
                    h.update(blake3::hash(p).as_bytes());
                }
            }
        }
        Some(*h.finalize().as_bytes())
    }

    /// The exclusion of `origin`, if it is a proven equivocator.
    pub fn exclusion(&self, origin: &Origin) -> Option<&Exclusion> {
        self.excluded.get(origin)
    }

    /// Every exclusion, by origin.
    pub fn exclusions(&self) -> &BTreeMap<Origin, Exclusion> {
        &self.excluded
    }
}
