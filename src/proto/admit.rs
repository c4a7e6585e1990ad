//! Membership, as the core's methods: the owner's admissions and
//! revocations ([`crate::crdt::admit`]) taken from gossip, from a peer's
//! records or from a file, and the records a peer is asked for and served.
//!
//! A revocation is an exclusion: it goes the same way as a proof of
//! equivocation (persisted, applied updates past it subtracted, resent to
//! peers still counting them). An admission is kept in the log, which
//! counts an origin's updates only below its admitted limit; updates past
//! it are not stored, not forwarded and not repaired until an admission
//! that covers them arrives.

use super::*;
use crate::crdt::admit::{Kind, Record};

/// Records are asked of one peer at most this often.
const RECORDS_EVERY: Duration = Duration::from_secs(10);
/// Peers asked for records on first meeting them (beyond: only when they
/// show updates not admitted here).
const RECORDS_ON_MEETING: usize = 2;

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    /// A membership record by gossip: checked against the owner, taken,
    /// forwarded only when it was news.
    pub(super) fn on_record_gossip(&mut self, now: Instant, data: &[u8]) -> Verdict {
        match self.open_record(data) {
            Err(v) => v,
            Ok(r) if self.take_record(now, r, false) => Verdict::Accept,
            Ok(_) => {
                self.count("replayed");
                Verdict::Ignore
            }
        }
    }

    /// Decodes and checks a record; the verdict refusing it otherwise.
    fn open_record(&mut self, data: &[u8]) -> Result<Record, Verdict> {
        let Some(owner) = self.log.owner() else {
            // An open run has no owner whose records could count.
            self.count("no_owner");
            return Err(Verdict::Ignore);
        };
        match Record::open(data, &self.log.run(), &owner) {
            Ok(r) => Ok(r),
            Err(crate::crdt::admit::Error::Signature) => {
                self.count("bad_record");
                Err(Verdict::Reject)
            }
            Err(_) => {
                self.count("malformed");
                Err(Verdict::Reject)
            }
        }
    }

    /// Takes a checked record; true when it was news. `publish`: gossip it
    /// then (a record handed to this node, not one that came by gossip).
    fn take_record(&mut self, now: Instant, r: Record, publish: bool) -> bool {
        let own = self.settings.signer.origin();
        let before = self.log.cap(&own);
        let news = match r.kind {
            Kind::Admission => {
                let news = self.log.admit(r);
                if news {
                    tracing::info!(record = ?r, "admission");
                    self.emit(Output::Admitted(r));
                    if publish {
                        self.publish_proof(now, r.origin, r.encode());
                    }
                }
                news
            }
            Kind::Revocation => self.exclude(now, r.origin, r.seq, r.encode(), publish),
        };
        let after = self.log.cap(&own);
        if after != before {
            self.emit(Output::OwnCap { end: after });
        }
        news
    }

    /// A record handed to this node (a file, the owner's command): checked,
    /// taken and, when news, gossiped. Returns whether it was news.
    pub fn add_record(&mut self, now: Instant, data: &[u8]) -> Result<bool, String> {
        let owner = self
            .log
            .owner()
            .ok_or("this run has no owner (run.owner): it takes no membership records")?;
        let r = Record::open(data, &self.log.run(), &owner).map_err(|e| e.to_string())?;
        Ok(self.take_record(now, r, true))
    }

    /// First own seq that counts nowhere (`u64::MAX`: no limit).
    pub fn own_cap(&self) -> u64 {
        self.log.cap(&self.settings.signer.origin())
    }

    /// Asks `peer` for its records, at most once per [`RECORDS_EVERY`].
    pub(super) fn ask_records(&mut self, now: Instant, peer: &P) {
        let due = self
            .records_asked
            .get(peer)
            .is_none_or(|t| now.duration_since(*t) >= RECORDS_EVERY);
        if !due {
            return;
        }
        if self.records_asked.len() >= MAX_BANNED {
            self.records_asked
                .retain(|_, t| now.duration_since(*t) < RECORDS_EVERY);
            if self.records_asked.len() >= MAX_BANNED {
                return;
            }
        }
        self.records_asked.insert(peer.clone(), now);
        self.send(peer.clone(), wire::Request::Records);
    }

    /// A heartbeat from `source` that announces `vv`: ask for records on
    /// first meeting a peer (what a joiner lacks), and, in a permissioned
    /// run, whenever it counts updates this node's admissions do not cover.
    pub(super) fn records_for_heartbeat(&mut self, now: Instant, source: &P, vv: &[(Origin, u64)]) {
        let met = !self.records_asked.contains_key(source) && self.records_met < RECORDS_ON_MEETING;
        let short = self.log.owner().is_some()
            && vv
                .iter()
                .any(|(o, n)| *n > self.log.admitted_until(o) && self.log.exclusion(o).is_none());
        if met || short {
            if met {
                self.records_met += 1;
            }
            self.ask_records(now, source);
        }
    }

    /// True when `source`'s heartbeats are heard: in a permissioned run only
    /// those of admitted origins (others are asked for their records, which
    /// may hold their admission, and are otherwise ignored).
    pub(super) fn heartbeat_admitted(&mut self, now: Instant, source: &P) -> bool {
        if self.log.owner().is_none() {
            return true;
        }
        match source.origin() {
            Some(o) if self.log.cap(&o) > 0 => true,
            _ => {
                self.count("not_admitted");
                self.ask_records(now, source);
                false
            }
        }
    }

    /// What this node serves as its records: every admission, then every
    /// exclusion's evidence (revocations and proofs), within the bounds.
    pub(super) fn records_response(&self) -> wire::Response {
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let all = self
            .log
            .admissions()
            .values()
            .map(|a| a.encode())
            .chain(self.log.exclusions().values().map(|e| e.proof.clone()));
        for r in all {
            if records.len() >= wire::MAX_RECORDS || bytes + r.len() > wire::MAX_RECORDS_BYTES {
                break;
            }
            bytes += r.len();
            records.push(wire::Blob(r));
        }
        wire::Response::Records { records }
    }

    /// A peer's records: each checked on its own and taken (none is
    /// gossiped: the peer that served it holds it already).
    pub(super) fn on_records(&mut self, records: Vec<wire::Blob>) {
        let now = self.now;
        for r in records {
            // Judged as if it came by gossip (where it would be forwarded).
            let _ = self.on_proof(now, &r.0);
        }
    }

    /// Caps for repair: per origin announced or held, the first seq that
    /// counts nowhere, where there is one.
    pub(super) fn repair_caps(&self) -> VersionVector {
        let mut caps: VersionVector = self
            .log
            .exclusions()
            .iter()
            .map(|(o, e)| (*o, e.from))
            .collect();
        if self.log.owner().is_some() {
            for o in self.repair.best().keys() {
                let cap = self.log.cap(o);
                if cap < u64::MAX {
                    caps.insert(*o, cap);
                }
            }
        }
        caps
    }
}
