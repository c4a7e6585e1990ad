//! Settling at any swarm size: a node never says `settled` while it knows
//! of updates it does not hold, nor when nobody agreed with it.

use crate::node::{origin_of, Id, Spec};
use crate::world::World;
use crate::{ids, MINUTE};
use std::collections::HashSet;

#[test]
fn a_node_cut_off_while_the_others_finish_and_leave_never_says_settled() {
    let mut w = World::new(21);
    // Lossy at first, so heartbeats announce more than gossip delivered.
    w.loss = 0.5;
    // The cut-off node makes no updates of its own, so the others lack
    // nothing when it is gone.
    for id in ids(0..4) {
        let updates = if id == Id(3) { 0 } else { 300 };
        w.add(
            id,
            Spec {
                updates,
                ..Spec::default()
            },
        );
    }
    w.run_for(1_000);
    let rest = ids(0..3);
    let cut = Id(3);
    w.partition(&[cut], &rest);
    w.loss = 0.0;
    // The others finish, agree among themselves and leave.
    let finished = |w: &World| rest.iter().all(|id| w.nodes[id].core.settled());
    assert!(w.run_until(10 * MINUTE, finished), "the rest never settled");
    for &id in &rest {
        w.leave(id);
    }
    w.heal();
    w.run_for(2 * MINUTE);
    let n = &w.nodes[&cut];
    assert!(n.core.training_done());
    assert!(n.core.peers().is_empty(), "everyone else is gone");
    assert!(
        !n.core.settled(),
        "settled while holding {} updates",
        n.replica.applied()
    );
    assert!(!n.core.agreement(), "nobody agreed with it");
    let missing = n.core.missing();
    assert!(
        !missing.is_empty(),
        "heartbeats announced more than it holds"
    );
    let from: HashSet<_> = missing.iter().map(|m| m.origin).collect();
    for m in &missing {
        assert!(m.held < m.known);
        assert!(rest.contains(&m.by), "announced by a peer that left");
        assert!(rest.iter().any(|&id| origin_of(id) == m.origin));
    }
    assert!(!from.is_empty());
}

#[test]
fn a_node_whose_peers_agreed_and_left_is_settled() {
    let mut w = World::new(22);
    for id in ids(0..3) {
        w.add(id, Spec::default());
    }
    let all = |w: &World| w.nodes.values().all(|n| n.core.settled());
    assert!(w.run_until(10 * MINUTE, all), "never settled");
    w.leave(Id(0));
    w.leave(Id(1));
    w.run_for(MINUTE);
    let n = &w.nodes[&Id(2)];
    assert!(n.core.settled() && n.core.agreement());
    assert!(n.core.missing().is_empty());
    assert_eq!(n.replica.applied(), 3 * 200);
}
