//! What settling must account for beyond the live peers: every update any
//! heartbeat ever announced (peers that have since left included), and
//! whether anyone at all agreed with this node's final state.
//!
//! A node that lost its peers (they left, or it was cut off) used to find
//! every live peer in agreement, because there were none, and said
//! `settled` while missing most of the run. Here a claim outlives the peer
//! that made it: settling waits until the node holds (and has applied)
//! every update it knows of, and agreement needs at least one peer — live,
//! or departed after a last heartbeat at this very state — unless the node
//! never heard of any peer at all (a solo run).

use super::{Core, Peer};
use crate::crdt::replica::VersionVector;
use crate::zo::seed::Origin;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

/// Origins whose claims are remembered, at most (beyond, claims of new
/// origins are ignored; existing ones still rise).
pub const MAX_KNOWN: usize = crate::net::wire::MAX_ORIGINS;
/// Peers remembered as having agreed at one state, at most.
const MAX_CONCURRED: usize = 1 << 12;

/// Updates a node knows of but does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing<P> {
    /// Whose updates.
    pub origin: Origin,
    /// How many this node has applied.
    pub held: u64,
    /// How many were announced (capped by admissions and exclusions).
    pub known: u64,
    /// The peer whose heartbeat announced them.
    pub by: P,
}

/// Claims and agreement, for settling.
#[derive(Debug)]
pub struct Known<P> {
    /// Per origin: the most updates any heartbeat announced, and by whom.
    claims: HashMap<Origin, (u64, P)>,
    /// Peers whose heartbeat was done at `concur_at` (vv and digest) with
    /// nothing left to apply.
    concurred: HashSet<P>,
    concur_at: Option<(VersionVector, [u8; 32])>,
}

impl<P> Default for Known<P> {
    fn default() -> Self {
        Self {
            claims: HashMap::new(),
            concurred: HashSet::new(),
            concur_at: None,
        }
    }
}

impl<P: Clone + Eq + Hash + Ord> Known<P> {
    /// Takes the claims of `peer`'s heartbeat (`vv`; only when `credible`),
    /// and whether it was done at (`vv`, `digest`) with nothing left to
    /// apply while this node is at `ours`.
    pub fn on_heartbeat(
        &mut self,
        peer: &P,
        vv: &[(Origin, u64)],
        credible: bool,
        settled_at: Option<[u8; 32]>,
        ours: Option<(&VersionVector, &[u8; 32])>,
    ) {
        let claims = if credible { vv } else { &[] };
        for (o, n) in claims {
            let room = self.claims.len() < MAX_KNOWN;
            match self.claims.get_mut(o) {
                Some(c) if *n > c.0 => *c = (*n, peer.clone()),
                Some(_) => {}
                None if room && *n > 0 => {
                    self.claims.insert(*o, (*n, peer.clone()));
                }
                None => {}
            }
        }
        let (Some(digest), Some((our_vv, our_digest))) = (settled_at, ours) else {
            return;
        };
        let same = digest == *our_digest
            && vv.len() == our_vv.len()
            && vv.iter().all(|(o, n)| our_vv.get(o) == Some(n));
        if !same {
            self.concurred.remove(peer);
            return;
        }
        if self
            .concur_at
            .as_ref()
            .is_none_or(|(v, d)| v != our_vv || d != our_digest)
        {
            self.concur_at = Some((our_vv.clone(), *our_digest));
            self.concurred.clear();
        }
        if self.concurred.len() < MAX_CONCURRED {
            self.concurred.insert(peer.clone());
        }
    }

    /// `peer` could not back its claim for `origin` past `to` (it served
    /// nothing from there): its claim counts only up to `to`.
    pub fn lower(&mut self, peer: &P, origin: &Origin, to: u64) {
        if let Some(c) = self.claims.get_mut(origin) {
            if &c.1 == peer && c.0 > to {
                c.0 = to;
            }
        }
    }

    /// `peer` stopped answering sync requests: its claims count no further
    /// than what this node holds (`have`) until it shows it can back them.
    pub fn discredit(&mut self, peer: &P, have: impl Fn(&Origin) -> u64) {
        for (o, c) in self.claims.iter_mut() {
            if &c.1 == peer {
                c.0 = c.0.min(have(o));
            }
        }
    }

    /// Some peer, live or departed, was done at exactly this state (`vv`,
    /// `digest`) with nothing left to apply.
    pub fn concurred(&self, vv: &VersionVector, digest: &[u8; 32]) -> bool {
        !self.concurred.is_empty()
            && self
                .concur_at
                .as_ref()
                .is_some_and(|(v, d)| v == vv && d == digest)
    }

    /// What is known but not held in `have`, with each origin's claim
    /// clipped by `cap` (the first seq that counts nowhere), sorted by origin.
    pub fn missing(&self, have: &VersionVector, cap: impl Fn(&Origin) -> u64) -> Vec<Missing<P>> {
        let mut out: Vec<Missing<P>> = self
            .claims
            .iter()
            .filter_map(|(o, (n, by))| {
                let known = (*n).min(cap(o));
                let held = have.get(o).copied().unwrap_or(0);
                (known > held).then(|| Missing {
                    origin: *o,
                    held,
                    known,
                    by: by.clone(),
                })
            })
            .collect();
        out.sort_by_key(|m| m.origin);
        out
    }
}

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    /// Updates some heartbeat (of a live or a departed peer) announced that
    /// this node has not applied, per origin.
    pub fn missing(&self) -> Vec<Missing<P>> {
        let empty = VersionVector::new();
        let have = self.state.as_ref().map_or(&empty, |st| &st.vv);
        self.known.missing(have, |o| self.log.cap(o))
    }

    /// Some peer agrees with this node's state: a live one (done, same
    /// version vector and digest), or one that left after saying so; true
    /// as well when this node never heard of any peer (a solo run).
    pub fn agreement(&self) -> bool {
        let Some(st) = &self.state else { return false };
        self.peers_seen.is_empty()
            || self.repair.agreeing(&st.vv, &st.digest) > 0
            || self.known.concurred(&st.vv, &st.digest)
    }

    /// Local state agrees with every live peer and with at least one peer,
    /// nothing is left to apply, and no update any heartbeat announced is
    /// missing (agreement with nobody is not agreement).
    pub(super) fn agreed(&self) -> bool {
        let Some(st) = &self.state else { return false };
        st.training_done
            && self.outbox.is_none()
            && self.log.pending_updates() == 0
            && self.log.version_vector() == st.vv
            && self.repair.settled(&st.vv, &st.digest)
            && self.agreement()
            && self.missing().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(u8, u64)]) -> Vec<(Origin, u64)> {
        pairs.iter().map(|&(o, n)| (Origin([o; 32]), n)).collect()
    }

    #[test]
    fn a_claim_outlives_its_peer_and_is_clipped_by_the_cap() {
        let mut k: Known<u32> = Known::default();
        k.on_heartbeat(&1, &vv(&[(7, 100), (8, 5)]), true, None, None);
        k.on_heartbeat(&2, &vv(&[(7, 60)]), true, None, None);
        k.on_heartbeat(&3, &vv(&[(7, 900)]), false, None, None);
        let have: VersionVector = vv(&[(7, 60), (8, 5)]).into_iter().collect();
        let m = k.missing(&have, |_| u64::MAX);
        assert_eq!(
            m,
            vec![Missing {
                origin: Origin([7; 32]),
                held: 60,
                known: 100,
                by: 1
            }]
        );
        assert!(
            k.missing(&have, |_| 60).is_empty(),
            "an exclusion at 60 clips it"
        );
        // The claimant could not show more than 60.
        k.lower(&2, &Origin([7; 32]), 60);
        assert_eq!(
            k.missing(&have, |_| u64::MAX).len(),
            1,
            "only its own claim is lowered"
        );
        k.lower(&1, &Origin([7; 32]), 60);
        assert!(k.missing(&have, |_| u64::MAX).is_empty());
    }

    #[test]
    fn agreement_is_at_one_state_and_resets_when_it_moves() {
        let mut k: Known<u32> = Known::default();
        let a: VersionVector = vv(&[(1, 3)]).into_iter().collect();
        let b: VersionVector = vv(&[(1, 4)]).into_iter().collect();
        assert!(!k.concurred(&a, &[0; 32]), "nobody agreed yet");
        k.on_heartbeat(
            &5,
            &vv(&[(1, 3)]),
            true,
            Some([0; 32]),
            Some((&a, &[0; 32])),
        );
        assert!(k.concurred(&a, &[0; 32]));
        assert!(!k.concurred(&a, &[1; 32]), "another digest");
        assert!(!k.concurred(&b, &[0; 32]), "another state");
        // A peer done at another digest does not count.
        let mut k: Known<u32> = Known::default();
        k.on_heartbeat(
            &5,
            &vv(&[(1, 3)]),
            true,
            Some([9; 32]),
            Some((&a, &[0; 32])),
        );
        assert!(!k.concurred(&a, &[0; 32]));
    }
}
