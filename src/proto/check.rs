//! Spot checks: a node recomputes a fraction of the foreign one-byte
//! updates it receives by gossip, on the state each was computed on (the
//! bases the batch carries, [`crate::crdt::basis`]), and tallies per origin
//! how many agreed ([`crate::zo::check`]).
//!
//! Which updates are checked is chosen with this node's secret key, so an
//! origin cannot tell which of its updates a given node will check. A check
//! waits until this node has handed over (to be applied) everything its
//! state includes; then the core asks the compute side to subtract what was
//! applied past it, recompute, and add it back. One check is in flight at a
//! time; at most [`MAX_CHECKS_WAITING`] wait, and one whose state is not
//! reached within [`CHECK_EXPIRE`] is dropped (and counted as skipped), so
//! what a peer can make this node store or compute is bounded.

use super::*;
use crate::crdt::basis::{self, Bases};
use crate::zo::check::{sampled, Verdict};

/// Checks waiting for their state, at most.
pub const MAX_CHECKS_WAITING: usize = 256;
/// A check whose state is not reached in this long is dropped.
pub const CHECK_EXPIRE: Duration = Duration::from_secs(120);

/// A sampled update waiting for this node to reach its state.
#[derive(Debug, Clone)]
pub(super) struct Waiting {
    origin: Origin,
    seq: u64,
    code: u8,
    target: VersionVector,
    since: Instant,
}

/// The spot-check queue.
#[derive(Debug, Default)]
pub(super) struct Checks {
    waiting: VecDeque<Waiting>,
    inflight: bool,
}

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    /// Samples the updates of an accepted gossip batch of `origin` for
    /// checking and queues those whose state its `bases` name.
    pub(super) fn sample_checks(
        &mut self,
        now: Instant,
        origin: Origin,
        first: u64,
        codes: &[u8],
        decoded: &Bases,
    ) {
        let f = self.settings.verify_fraction;
        if f <= 0.0 {
            return;
        }
        let key = self.settings.check_key;
        let picked: Vec<usize> = (0..codes.len())
            .filter(|&i| codes[i] != 0 && sampled(&key, &origin, first + i as u64, f))
            .collect();
        if picked.is_empty() {
            return;
        }
        // Prefixes resolve among the origins this node holds updates of
        // (and itself).
        let own = self.settings.signer.origin();
        let known = basis::Prefixes::of(self.log.heads().map(|(o, _)| o).chain([&own]));
        let resolve = |p: &[u8; basis::PREFIX]| known.resolve(p);
        for i in picked {
            let seq = first + i as u64;
            let Some(mut target) = decoded.at(i, &resolve) else {
                self.stats.checks_skipped += 1;
                continue;
            };
            if self.checks.waiting.len() >= MAX_CHECKS_WAITING {
                self.stats.checks_skipped += 1;
                continue;
            }
            target.insert(origin, seq);
            self.checks.waiting.push_back(Waiting {
                origin,
                seq,
                code: codes[i],
                target,
                since: now,
            });
        }
    }

    /// Hands the compute side the first check whose state this node has
    /// reached (one at a time); drops checks that waited too long.
    pub(super) fn next_check(&mut self, now: Instant) {
        if self.checks.inflight || self.join.active() {
            return;
        }
        while self
            .checks
            .waiting
            .front()
            .is_some_and(|w| now.duration_since(w.since) > CHECK_EXPIRE)
        {
            self.checks.waiting.pop_front();
            self.stats.checks_skipped += 1;
        }
        let delivered = &self.delivered;
        let ready = self.checks.waiting.iter().position(|w| {
            w.target
                .iter()
                .all(|(o, &n)| delivered.get(o).copied().unwrap_or(0) >= n)
        });
        let Some(w) = ready.and_then(|i| self.checks.waiting.remove(i)) else {
            return;
        };
        match self.retraction_to(&w.target) {
            Ok(retract) => {
                self.checks.inflight = true;
                self.emit(Output::Check {
                    origin: w.origin,
                    seq: w.seq,
                    code: w.code,
                    target: w.target,
                    retract,
                });
            }
            Err(why) => {
                tracing::debug!(%why, "spot check dropped");
                self.stats.checks_skipped += 1;
            }
        }
    }

    /// Tallies a finished check.
    pub(super) fn on_checked(
        &mut self,
        now: Instant,
        origin: Origin,
        seq: u64,
        result: Result<(Verdict, f64), String>,
    ) {
        self.checks.inflight = false;
        match result {
            Ok((verdict, grad)) => {
                self.event(Event::Rechecked(origin, verdict));
                let t = self.stats.checks.entry(origin).or_default();
                let was = t.flagged_after.is_some();
                t.add(verdict);
                if verdict == Verdict::Disagree {
                    tracing::debug!(origin = %origin.short(), seq, grad, "spot check disagrees");
                }
                if !was && t.flagged_after.is_some() {
                    tracing::warn!(
                        origin = %origin.short(),
                        checked = t.checked,
                        disagreed = t.disagreed,
                        "origin flagged: its published codes disagree with recomputed gradients"
                    );
                }
            }
            Err(why) => {
                tracing::debug!(origin = %origin.short(), seq, %why, "spot check not made");
                self.stats.checks_skipped += 1;
            }
        }
        self.next_check(now);
    }

    /// Checks waiting for their state.
    pub fn checks_waiting(&self) -> usize {
        self.checks.waiting.len()
    }
}
