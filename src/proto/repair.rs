//! Anti-entropy as a plain state machine (no IO; time is passed in).
//!
//! Tracks what each peer announced in its heartbeats, decides which missing
//! `(origin, seq)` ranges to request from whom, rotates peers when a request
//! fails, forgets peers that left or went silent, and tells when the swarm has
//! settled (every live peer done, same version vector, same digest).

use crate::crdt::replica::VersionVector;
use crate::zo::seed::Origin;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Timing knobs of the repair protocol.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A gap must persist this long before it is repaired (gossip may still fill it).
    pub repair_delay: Duration,
    /// A repair request without an answer after this long is retried elsewhere.
    pub request_timeout: Duration,
    /// A peer not heard from for this long is forgotten.
    pub peer_timeout: Duration,
    /// Most codes asked for in one request.
    pub max_range: u64,
    /// Data buffered behind a gap that nobody filled for this long is
    /// dropped (the gap is repaired again when a peer shows it holds it).
    pub give_up: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            repair_delay: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(10),
            peer_timeout: Duration::from_secs(15),
            max_range: 1 << 16,
            give_up: Duration::from_secs(60),
        }
    }
}

/// What a peer last announced.
#[derive(Clone, Debug)]
pub struct PeerView {
    /// Its version vector.
    pub vv: VersionVector,
    /// Its digest at `vv`.
    pub digest: [u8; 32],
    /// It stopped publishing for good.
    pub done: bool,
    /// Updates it has not applied yet.
    pub backlog: u64,
    /// Its recent training loss.
    pub loss: f32,
    /// How it contributes (zeroth- or first-order).
    pub mode: crate::config::Mode,
    /// When we last heard from it.
    pub seen: Instant,
}

impl PeerView {
    /// Done at exactly `vv` with `digest`, nothing left to apply.
    pub fn agrees(&self, vv: &VersionVector, digest: &[u8; 32]) -> bool {
        self.done && &self.vv == vv && &self.digest == digest && self.backlog == 0
    }
}

#[derive(Clone, Debug)]
struct Inflight<P> {
    peer: P,
    from: u64,
    since: Instant,
    failed: bool,
}

/// A range to ask a peer for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask<P> {
    /// Whom to ask.
    pub peer: P,
    /// Whose updates.
    pub origin: Origin,
    /// First seq wanted.
    pub from: u64,
    /// One past the last seq wanted.
    pub to: u64,
}

/// The anti-entropy state.
#[derive(Debug)]
pub struct Repair<P> {
    timing: Timing,
    peers: HashMap<P, PeerView>,
    /// Per origin: the target we lack and since when we have lacked it.
    want: HashMap<Origin, (u64, Instant)>,
    inflight: HashMap<Origin, Inflight<P>>,
    /// Round-robin counter so repairs spread over peers.
    turn: usize,
    /// This node's own origin: never repaired from others (its log is the
    /// node's own, and a peer's claim about it cannot be trusted).
    own: Option<Origin>,
    /// Claims a peer could not back: when it answered a range of an origin
    /// with signed batches up to less than it announced, its claim for that
    /// origin counts only up to what it showed, for [`CLAIM_CAP`].
    caps: HashMap<(P, Origin), (u64, Instant)>,
    /// Consecutive sync requests each peer failed (no answer, refused, or an
    /// answer that gave nothing); see [`UNRESPONSIVE`].
    failures: HashMap<P, u32>,
}

/// A peer that failed this many sync requests in a row is unresponsive: it is
/// not asked while others can be, and settling does not wait for it.
pub const UNRESPONSIVE: u32 = 3;

/// How long an unbacked claim stays capped.
pub const CLAIM_CAP: Duration = Duration::from_secs(30);
/// Claims capped at most (the bound on what liars can make a node keep).
const MAX_CAPS: usize = 1 << 16;

impl<P: Clone + Eq + Hash + Ord> Repair<P> {
    /// An empty state.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            peers: HashMap::new(),
            want: HashMap::new(),
            inflight: HashMap::new(),
            turn: 0,
            own: None,
            caps: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    /// Never plans repairs of `origin` (this node's own).
    pub fn with_own(mut self, origin: Origin) -> Self {
        self.own = Some(origin);
        self
    }

    /// Records a heartbeat; `leaving` forgets the peer at once.
    pub fn on_heartbeat(&mut self, peer: P, view: PeerView, leaving: bool) {
        if leaving {
            self.forget(&peer);
        } else {
            self.peers.insert(peer, view);
        }
    }

    /// Forgets a peer (left, or disconnected).
    pub fn forget(&mut self, peer: &P) {
        self.peers.remove(peer);
        self.inflight.retain(|_, f| &f.peer != peer);
        self.caps.retain(|(p, _), _| p != peer);
        self.failures.remove(peer);
    }

    /// A sync request to `peer` got something (`ok`) or nothing.
    pub fn on_result(&mut self, peer: &P, ok: bool) {
        if ok {
            self.failures.remove(peer);
        } else if self.peers.contains_key(peer) {
            *self.failures.entry(peer.clone()).or_insert(0) += 1;
        }
    }

    /// True when `peer` failed its last [`UNRESPONSIVE`] requests.
    pub fn unresponsive(&self, peer: &P) -> bool {
        self.failures.get(peer).is_some_and(|&n| n >= UNRESPONSIVE)
    }

    /// `peer` answered a range of `origin` asked from `from` with signed
    /// batches reaching `reached` (one past the last seq): if that is no
    /// progress while it announced more, its claim is capped at `from` for a
    /// while (it could not back it: a liar, or a log whose tail is not
    /// signed). Progress, however little, is never punished.
    pub fn on_served(&mut self, peer: &P, origin: &Origin, from: u64, reached: u64, now: Instant) {
        let claimed = self
            .peers
            .get(peer)
            .and_then(|v| v.vv.get(origin))
            .copied()
            .unwrap_or(0);
        let reached = reached.max(from);
        if claimed > reached && reached == from {
            if self.caps.len() >= MAX_CAPS {
                self.caps
                    .retain(|_, (_, at)| now.duration_since(*at) < CLAIM_CAP);
            }
            if self.caps.len() < MAX_CAPS {
                self.caps.insert((peer.clone(), *origin), (reached, now));
            }
        }
    }

    /// What `peer` is believed to hold of `origin`.
    fn claim(&self, peer: &P, v: &PeerView, origin: &Origin, now: Option<Instant>) -> u64 {
        let n = v.vv.get(origin).copied().unwrap_or(0);
        match self.caps.get(&(peer.clone(), *origin)) {
            Some(&(cap, at)) if now.is_none_or(|t| t.duration_since(at) < CLAIM_CAP) => n.min(cap),
            _ => n,
        }
    }

    /// Forgets peers not heard from within the peer timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<P> {
        let gone: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, v)| now.duration_since(v.seen) > self.timing.peer_timeout)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &gone {
            self.forget(p);
        }
        gone
    }

    /// Live peers and their views.
    pub fn peers(&self) -> &HashMap<P, PeerView> {
        &self.peers
    }

    /// What the `k` most advanced live peers (by updates held; ties by
    /// peer) all hold: the component-wise minimum of their version vectors
    /// (origins one of them lacks left out).
    pub fn common(&self, k: usize) -> VersionVector {
        let mut ranked: Vec<(&P, &PeerView)> = self.peers.iter().collect();
        ranked.sort_by(|a, b| {
            let (x, y) = (a.1.vv.values().sum::<u64>(), b.1.vv.values().sum::<u64>());
            y.cmp(&x).then_with(|| a.0.cmp(b.0))
        });
        ranked.truncate(k.max(1));
        let mut it = ranked.into_iter().map(|(_, v)| v);
        let Some(first) = it.next() else {
            return VersionVector::new();
        };
        let mut out = first.vv.clone();
        for v in it {
            out.retain(|o, n| match v.vv.get(o) {
                Some(&m) => {
                    *n = (*n).min(m);
                    *n > 0
                }
                None => false,
            });
        }
        out
    }

    /// The most any live peer holds of each origin (claims it could not
    /// back capped).
    pub fn best(&self) -> VersionVector {
        self.best_at(None)
    }

    fn best_at(&self, now: Option<Instant>) -> VersionVector {
        let mut best = VersionVector::new();
        for (p, v) in &self.peers {
            for o in v.vv.keys() {
                let n = self.claim(p, v, o, now);
                let b = best.entry(*o).or_insert(0);
                *b = (*b).max(n);
            }
        }
        best.retain(|_, n| *n > 0);
        best
    }

    /// Ranges to request now, given what we hold (`have`) and the gaps behind
    /// which we buffer data (`gaps`: origin, next wanted, first buffered).
    /// Targets are clipped to `limits` (origins excluded from a seq on).
    pub fn plan(
        &mut self,
        have: &VersionVector,
        gaps: &[(Origin, u64, u64)],
        limits: &VersionVector,
        now: Instant,
    ) -> Vec<Ask<P>> {
        self.caps
            .retain(|_, (_, at)| now.duration_since(*at) < CLAIM_CAP);
        let mut targets = self.best_at(Some(now));
        for &(o, _, first) in gaps {
            let t = targets.entry(o).or_insert(0);
            *t = (*t).max(first);
        }
        if let Some(own) = &self.own {
            targets.remove(own);
        }
        for (o, &limit) in limits {
            if let Some(t) = targets.get_mut(o) {
                *t = (*t).min(limit);
            }
        }
        // Track how long each shortfall has persisted.
        self.want.retain(|o, _| {
            targets.get(o).copied().unwrap_or(0) > have.get(o).copied().unwrap_or(0)
        });
        let mut asks = Vec::new();
        let mut origins: Vec<(&Origin, &u64)> = targets.iter().collect();
        origins.sort();
        for (o, &target) in origins {
            let held = have.get(o).copied().unwrap_or(0);
            if target <= held {
                self.inflight.remove(o);
                continue;
            }
            let since = self.want.entry(*o).or_insert((target, now)).1;
            if now.duration_since(since) < self.timing.repair_delay {
                continue;
            }
            if let Some(f) = self.inflight.get(o) {
                let progressed = held > f.from;
                let timed_out = now.duration_since(f.since) > self.timing.request_timeout;
                if !progressed && !timed_out && !f.failed {
                    continue;
                }
            }
            // Peers that hold at least the next missing update; rotate among them.
            let mut holders: Vec<&P> = self
                .peers
                .iter()
                .filter(|(p, v)| self.claim(p, v, o, Some(now)) > held)
                .map(|(p, _)| p)
                .collect();
            if holders.is_empty() {
                // Only buffered data tells us of the gap: ask anyone.
                holders = self.peers.keys().collect();
            }
            // Peers that answer come first; the unresponsive are a last resort.
            if holders.iter().any(|p| !self.unresponsive(p)) {
                holders.retain(|p| !self.unresponsive(p));
            }
            if holders.is_empty() {
                continue;
            }
            holders.sort();
            let previous = self.inflight.get(o).map(|f| f.peer.clone());
            let mut pick = holders[self.turn % holders.len()].clone();
            if holders.len() > 1 && Some(&pick) == previous.as_ref() {
                pick = holders[(self.turn + 1) % holders.len()].clone();
            }
            self.turn = self.turn.wrapping_add(1);
            let to = target.min(held + self.timing.max_range);
            self.inflight.insert(
                *o,
                Inflight {
                    peer: pick.clone(),
                    from: held,
                    since: now,
                    failed: false,
                },
            );
            asks.push(Ask {
                peer: pick,
                origin: *o,
                from: held,
                to,
            });
        }
        asks
    }

    /// A request for `origin` failed: the next plan may ask someone else.
    pub fn on_failure(&mut self, origin: &Origin) {
        if let Some(f) = self.inflight.get_mut(origin) {
            f.failed = true;
        }
    }

    /// True when every live, responsive peer is done and holds exactly `vv`
    /// with `digest` (a peer that keeps failing sync requests cannot be
    /// caught up with, and is not waited for).
    pub fn settled(&self, vv: &VersionVector, digest: &[u8; 32]) -> bool {
        self.peers
            .iter()
            .all(|(p, v)| self.unresponsive(p) || v.agrees(vv, digest))
    }

    /// Live, responsive peers done at exactly `vv` with `digest` and
    /// nothing left to apply.
    pub fn agreeing(&self, vv: &VersionVector, digest: &[u8; 32]) -> usize {
        self.peers
            .iter()
            .filter(|(p, v)| !self.unresponsive(p) && v.agrees(vv, digest))
            .count()
    }

    /// Live peers settling waits for, with why (not done, behind or ahead,
    /// another digest).
    pub fn waiting_for(&self, vv: &VersionVector, digest: &[u8; 32]) -> Vec<(P, &'static str)> {
        let mut out: Vec<(P, &'static str)> = self
            .peers
            .iter()
            .filter(|(p, _)| !self.unresponsive(p))
            .filter_map(|(p, v)| {
                let why = if !v.done {
                    "still training"
                } else if &v.vv != vv {
                    "another version vector"
                } else if &v.digest != digest {
                    "another digest"
                } else if v.backlog > 0 {
                    "still applying"
                } else {
                    return None;
                };
                Some((p.clone(), why))
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(vv: &[(u8, u64)], done: bool, now: Instant) -> PeerView {
        PeerView {
            vv: vv.iter().map(|&(o, n)| (Origin([o; 32]), n)).collect(),
            digest: [0; 32],
            done,
            backlog: 0,
            loss: 0.0,
            mode: Default::default(),
            seen: now,
        }
    }

    #[test]
    fn repairs_persistent_gaps_only_and_rotates_on_failure() {
        let t0 = Instant::now();
        let mut s: Repair<u32> = Repair::new(Timing::default());
        s.on_heartbeat(1, view(&[(9, 100)], false, t0), false);
        s.on_heartbeat(2, view(&[(9, 100)], false, t0), false);
        let have: VersionVector = [(Origin([9; 32]), 40)].into_iter().collect();
        // Fresh gap: gossip may still fill it.
        assert!(s.plan(&have, &[], &VersionVector::new(), t0).is_empty());
        let later = t0 + Duration::from_secs(2);
        let asks = s.plan(&have, &[], &VersionVector::new(), later);
        assert_eq!(asks.len(), 1);
        assert_eq!((asks[0].from, asks[0].to), (40, 100));
        let first = asks[0].peer;
        // In flight: no duplicate request.
        assert!(s.plan(&have, &[], &VersionVector::new(), later).is_empty());
        s.on_failure(&Origin([9; 32]));
        let asks = s.plan(&have, &[], &VersionVector::new(), later);
        assert_eq!(asks.len(), 1);
        assert_ne!(
            asks[0].peer, first,
            "a failed peer is not asked again at once"
        );
        // Filled: nothing more to do.
        let full: VersionVector = [(Origin([9; 32]), 100)].into_iter().collect();
        assert!(s.plan(&full, &[], &VersionVector::new(), later).is_empty());
    }

    #[test]
    fn buffered_gaps_are_repaired_even_without_heartbeats_claiming_more() {
        let t0 = Instant::now();
        let mut s: Repair<u32> = Repair::new(Timing::default());
        s.on_heartbeat(1, view(&[], false, t0), false);
        let have = VersionVector::new();
        let gaps = [(Origin([5; 32]), 0, 10)];
        assert!(s.plan(&have, &gaps, &VersionVector::new(), t0).is_empty());
        let asks = s.plan(
            &have,
            &gaps,
            &VersionVector::new(),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(
            asks,
            vec![Ask {
                peer: 1,
                origin: Origin([5; 32]),
                from: 0,
                to: 10
            }]
        );
    }

    #[test]
    fn settles_only_when_all_live_peers_agree_and_are_done() {
        let t0 = Instant::now();
        let mut s: Repair<u32> = Repair::new(Timing::default());
        let vv: VersionVector = [(Origin([1; 32]), 3)].into_iter().collect();
        s.on_heartbeat(1, view(&[(1, 3)], true, t0), false);
        s.on_heartbeat(2, view(&[(1, 2)], true, t0), false);
        assert!(!s.settled(&vv, &[0; 32]));
        s.on_heartbeat(2, view(&[(1, 3)], false, t0), false);
        assert!(!s.settled(&vv, &[0; 32]));
        s.on_heartbeat(2, view(&[(1, 3)], true, t0), false);
        assert!(s.settled(&vv, &[0; 32]));
        assert!(!s.settled(&vv, &[1; 32]), "digest mismatch is not settled");
        // A silent peer is forgotten and no longer waited on.
        s.on_heartbeat(3, view(&[], false, t0), false);
        assert!(!s.settled(&vv, &[0; 32]));
        assert_eq!(s.expire(t0 + Duration::from_secs(60)).len(), 3);
        s.on_heartbeat(4, view(&[(1, 3)], true, t0), true);
        assert!(s.peers().is_empty(), "a leaving peer is forgotten at once");
    }
}
