//! Permissioned runs on the simulator: only admitted origins count, a
//! revocation is applied by every replica alike (those that applied the
//! revoked updates subtract them), and an admission's end cuts exactly.
//! Each node is handed only its own admission, as an operator would; the
//! others it learns from its peers (records asked on meeting them).

use crate::node::{origin_of, Id, Spec};
use crate::world::World;
use crate::{done, ids, MINUTE};
use seedswarm::crdt::admit::{Kind, UNLIMITED};
use seedswarm::proto::join;

fn admitted(w: &mut World, id: Id, spec: Spec, until: u64) {
    w.add(id, spec);
    let r = w.record(Kind::Admission, id, until);
    w.give(id, r);
}

fn held(w: &World, id: Id, of: Id) -> u64 {
    w.nodes[&id]
        .replica
        .version_vector()
        .get(&origin_of(of))
        .copied()
        .unwrap_or(0)
}

fn rejected(w: &World, id: Id, reason: &str) -> u64 {
    w.nodes[&id]
        .core
        .stats()
        .rejected
        .get(reason)
        .copied()
        .unwrap_or(0)
}

#[test]
fn updates_of_an_origin_the_owner_never_admitted_are_never_applied() {
    let mut w = World::new(31).permissioned();
    w.loss = 0.1;
    for id in ids(0..3) {
        admitted(&mut w, id, Spec::default(), UNLIMITED);
    }
    // An origin with no admission that publishes anyway (an independent
    // implementation ignoring the rules).
    w.add(
        Id(3),
        Spec {
            obey_cap: false,
            ..Spec::default()
        },
    );
    let honest = |w: &World| {
        ids(0..3).iter().all(|i| w.nodes[i].core.settled()) && {
            let vv = w.nodes[&Id(0)].replica.version_vector().clone();
            let d = w.nodes[&Id(0)].replica.digest_bytes();
            ids(0..3).iter().all(|i| {
                w.nodes[i].replica.version_vector() == &vv && w.nodes[i].replica.digest_bytes() == d
            })
        }
    };
    assert!(
        w.run_until(10 * MINUTE, honest),
        "admitted nodes did not settle"
    );
    for id in ids(0..3) {
        assert_eq!(
            held(&w, id, Id(3)),
            0,
            "node {id:?} applied a non-admitted origin"
        );
        assert_eq!(w.nodes[&id].replica.applied(), 3 * 200);
        assert!(
            rejected(&w, id, "not_admitted") > 0,
            "node {id:?} never saw it"
        );
        assert_eq!(w.nodes[&id].core.stats().admitted, 3);
    }
    // It made its updates all the same; nobody took them.
    assert_eq!(held(&w, Id(3), Id(3)), 200);
}

#[test]
fn a_revocation_leaves_every_replica_with_one_digest() {
    let mut w = World::new(32).permissioned();
    w.loss = 0.05;
    let slow = Spec {
        updates: 300,
        step_ms: 20,
        ..Spec::default()
    };
    for id in ids(0..4) {
        admitted(&mut w, id, slow.clone(), UNLIMITED);
    }
    // Everyone applies plenty of node 3's updates.
    assert!(w.run_until(MINUTE, |w| ids(0..3)
        .iter()
        .all(|i| held(w, *i, Id(3)) >= 150)));
    // Node 2 is cut off while the owner revokes node 3 from seq 100 (handed
    // to node 0 alone); node 2 keeps applying node 3's updates meanwhile.
    w.partition(&[Id(2)], &[Id(0), Id(1), Id(3)]);
    let before = held(&w, Id(1), Id(3));
    assert!(before > 100);
    let revoke = w.record(Kind::Revocation, Id(3), 100);
    w.give(Id(0), revoke);
    w.run_for(5_000);
    w.heal();
    // A node that joins afterwards by snapshot, admitted like the others.
    admitted(
        &mut w,
        Id(4),
        Spec {
            updates: 20,
            join: join::Mode::Snapshot,
            ..Spec::default()
        },
        UNLIMITED,
    );
    assert!(
        w.run_until(10 * MINUTE, done),
        "no agreement after the revocation"
    );
    assert!(w.agree());
    for (id, n) in &w.nodes {
        assert_eq!(held(&w, *id, Id(3)), 100, "node {id:?}");
        assert_eq!(n.core.backlog(), 0);
    }
    // Those that had applied past seq 100 took exactly that back.
    for id in [Id(0), Id(1), Id(2)] {
        assert!(w.nodes[&id].retracted > 0, "node {id:?} retracted nothing");
    }
    // The revoked node itself (honest) stopped there and subtracted its own.
    assert!(w.nodes[&Id(3)].retracted > 0);
    let joiner = w.nodes[&Id(4)].core.join();
    assert!(
        joiner.fetched_bytes > 0,
        "the joiner did not take a snapshot"
    );
    assert_eq!(w.digest_mismatches, 0);
}

#[test]
fn an_admission_ending_at_seq_n_cuts_exactly_there_and_a_wider_one_extends_it() {
    let mut w = World::new(33).permissioned();
    for id in ids(0..2) {
        admitted(&mut w, id, Spec::default(), UNLIMITED);
    }
    // Node 2 is admitted until seq 40 but publishes 200 updates regardless.
    admitted(
        &mut w,
        Id(2),
        Spec {
            obey_cap: false,
            ..Spec::default()
        },
        40,
    );
    // A well-behaved node admitted until seq 30 stops there by itself.
    admitted(&mut w, Id(3), Spec::default(), 30);
    let cut = |w: &World| {
        ids(0..2).iter().all(|i| {
            held(w, *i, Id(2)) == 40 && held(w, *i, Id(3)) == 30 && w.nodes[i].core.backlog() == 0
        }) && w.agree_on(&ids(0..2))
    };
    assert!(w.run_until(10 * MINUTE, cut));
    // Long after node 2 published everything, still exactly 40 of it count.
    w.run_for(10_000);
    assert!(cut(&w));
    assert!(held(&w, Id(2), Id(2)) == 200);
    assert!(rejected(&w, Id(0), "not_admitted") > 0);
    assert_eq!(
        held(&w, Id(3), Id(3)),
        30,
        "the node went past its admission"
    );
    // The owner widens node 2's admission: every node takes the next 60.
    let wider = w.record(Kind::Admission, Id(2), 100);
    w.give(Id(1), wider);
    assert!(w.run_until(10 * MINUTE, |w| ids(0..2).iter().all(|i| held(
        w,
        *i,
        Id(2)
    ) == 100)
        && w.agree_on(&ids(0..2))));
    // A narrower admission arriving later changes nothing.
    let narrower = w.record(Kind::Admission, Id(2), 10);
    w.give(Id(0), narrower);
    w.run_for(3_000);
    for id in ids(0..2) {
        assert_eq!(held(&w, id, Id(2)), 100, "node {id:?}");
    }
}
