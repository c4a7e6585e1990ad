//! The swarm's properties, checked on the deterministic simulator ([`world`]):
//! real protocol cores, replicas and logs, a simulated network. Each test
//! runs minutes of virtual time in well under a second of real time.

mod node;
mod world;

use node::{origin_of, Id, Kind, Spec};
use seedswarm::crdt::log::DELTA;
use seedswarm::net::wire;
use seedswarm::proto::{join, Topic};
use world::World;

const MINUTE: u64 = 60_000;

fn ids(range: std::ops::Range<u16>) -> Vec<Id> {
    range.map(Id).collect()
}

fn done(w: &World) -> bool {
    w.settled() && w.agree()
}

/// Every live node settled on one version vector and one digest, holding
/// `total` updates, with no digest mismatch ever seen.
fn assert_converged(w: &World, total: u64) {
    assert!(w.agree(), "replicas differ");
    assert!(w.settled(), "not every node saw agreement");
    for (id, n) in &w.nodes {
        assert_eq!(n.replica.applied(), total, "node {id:?} applied");
        assert_eq!(n.core.backlog(), 0, "node {id:?} backlog");
    }
    assert_eq!(w.digest_mismatches, 0);
}

#[test]
fn equal_digests_after_quiescence_under_twenty_percent_loss() {
    let mut w = World::new(1);
    w.loss = 0.2;
    w.request_loss = 0.05;
    w.jitter_ms = 30; // reorders
    for id in ids(0..8) {
        w.add(id, Spec::default());
    }
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    assert_converged(&w, 8 * 200);
    let repaired: u64 = w.nodes.values().map(|n| n.core.stats().repaired).sum();
    assert!(repaired > 0, "loss should have needed repair");
    assert!(
        w.now_ms < 2 * MINUTE,
        "took {} ms of virtual time",
        w.now_ms
    );
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut w = World::new(seed);
        w.loss = 0.2;
        for id in ids(0..4) {
            w.add(id, Spec::default());
        }
        w.run_for(1000);
        w.add(
            Id(4),
            Spec {
                updates: 20,
                join: join::Mode::Snapshot,
                ..Spec::default()
            },
        );
        assert!(w.run_until(10 * MINUTE, done));
        let n = &w.nodes[&Id(0)];
        let j = w.nodes[&Id(4)].core.join();
        (
            w.now_ms,
            n.replica.digest(),
            n.core.stats().repaired,
            j.fetched_bytes,
        )
    };
    let first = run(9);
    assert!(first.3 > 0, "the joiner fetched a snapshot");
    for _ in 0..3 {
        assert_eq!(run(9), first, "the simulator is deterministic");
    }
}

#[test]
fn churn_crash_restart_leave_and_late_join() {
    let mut w = World::new(2);
    w.loss = 0.05;
    for id in ids(0..6) {
        w.add(id, Spec::default());
    }
    w.run_for(800);
    w.crash(Id(2));
    w.run_for(700);
    w.leave(Id(5));
    w.run_for(500);
    w.add(Id(6), Spec::default());
    w.run_for(500);
    w.restart(Id(2));
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    // The crashed node resumed from its disk and made all its updates; the
    // node that left contributed what it made before leaving.
    let n = &w.nodes[&Id(0)];
    let vv = n.replica.version_vector();
    assert_eq!(vv[&origin_of(Id(2))], 200);
    let left = vv[&origin_of(Id(5))];
    assert!((100..200).contains(&left), "leaver made {left}");
    assert_converged(&w, 6 * 200 + left);
}

#[test]
fn a_partition_heals_into_equal_digests() {
    let mut w = World::new(3);
    let (a, b) = (ids(0..3), ids(3..6));
    for &id in a.iter().chain(&b) {
        w.add(
            id,
            Spec {
                updates: 300,
                ..Spec::default()
            },
        );
    }
    w.run_for(500);
    w.partition(&a, &b);
    w.run_for(1500);
    let vv = |w: &World, id| w.nodes[&id].replica.version_vector().clone();
    let (left, right) = (vv(&w, Id(0)), vv(&w, Id(3)));
    assert!(
        left.get(&origin_of(Id(4))) < right.get(&origin_of(Id(4))),
        "the sides drifted apart"
    );
    w.heal();
    assert!(
        w.run_until(10 * MINUTE, done),
        "no quiescence after healing"
    );
    assert_converged(&w, 6 * 300);
}

#[test]
fn joins_by_replay_and_by_snapshot() {
    let mut w = World::new(4);
    w.loss = 0.05;
    for id in ids(0..4) {
        w.add(id, Spec::default());
    }
    w.run_for(1200);
    let joiner = |join| Spec {
        updates: 50,
        join,
        ..Spec::default()
    };
    w.add(Id(4), joiner(join::Mode::Replay));
    w.add(Id(5), joiner(join::Mode::Snapshot));
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    assert_converged(&w, 4 * 200 + 2 * 50);
    assert_eq!(w.nodes[&Id(4)].core.join().chosen, "replay");
    let j = w.nodes[&Id(5)].core.join();
    assert_eq!(j.chosen, "snapshot");
    assert!(j.fetched_bytes > 0);
}

#[test]
fn mixed_one_byte_and_delta_streams_with_restart_and_snapshot_join() {
    let mut w = World::new(5);
    w.loss = 0.1;
    for id in ids(0..5) {
        let kind = if id.0 < 2 {
            Kind::Mixed(5)
        } else {
            Kind::Codes
        };
        w.add(
            id,
            Spec {
                kind,
                updates: 100,
                ..Spec::default()
            },
        );
    }
    w.run_for(600);
    // A mixed node crashes and restarts from a log that holds deltas.
    w.crash(Id(0));
    w.run_for(300);
    w.restart(Id(0));
    w.add(
        Id(5),
        Spec {
            updates: 20,
            join: join::Mode::Snapshot,
            ..Spec::default()
        },
    );
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    assert_converged(&w, 5 * 100 + 20);
    let n = &w.nodes[&Id(3)];
    let deltas = n.core.log().range(&origin_of(Id(1)), 0, 100);
    assert_eq!(deltas.iter().filter(|&&c| c == DELTA).count(), 20);
    assert_eq!(w.nodes[&Id(5)].core.join().chosen, "snapshot");
}

#[test]
fn hostile_inputs_are_judged_without_sockets() {
    let mut w = World::new(6);
    let liar = Id(100);
    let liar_origin = origin_of(liar);
    // The liar answers range requests with codes that contradict what it
    // gossiped, and serves a delta payload that does not match its hash.
    w.add_scripted(
        liar,
        Box::new(move |req| match req {
            wire::Request::Range { origin, .. } => Some(wire::Response::Range {
                origin: *origin,
                first_seq: 0,
                codes: wire::Blob(vec![42; 4]),
                payloads: Vec::new(),
            }),
            wire::Request::Delta { origin, seq } => Some(wire::Response::Delta {
                origin: *origin,
                seq: *seq,
                data: wire::Blob(vec![1; 45]),
            }),
            _ => None,
        }),
    );
    for id in ids(0..2) {
        w.add(
            id,
            Spec {
                updates: 50,
                ..Spec::default()
            },
        );
    }
    let victim = Id(0);
    let up = Some(Topic::Updates);
    w.inject(liar, victim, up, wire::encode_updates(0, &[5, 6, 7])); // valid
    w.inject(liar, victim, up, wire::encode_updates(0, &[5, 6, 7])); // replayed
    w.inject(liar, victim, up, wire::encode_updates(1, &[9])); // equivocation
    w.inject(liar, victim, up, vec![9, 9, 9]); // unknown version
    w.inject(liar, victim, up, vec![wire::UPDATES_VERSION, 0x80]); // malformed
    w.inject(liar, victim, None, vec![1, 0, 1]); // another run's topic
    let announce = wire::DeltaAnnounce {
        seq: 3,
        len: 45,
        hash: [0; 32],
    };
    w.inject(liar, victim, Some(Topic::Deltas), announce.encode()); // payload won't match
                                                                    // A heartbeat claiming far more of the liar's history, and of the
                                                                    // victim's own: the first is repaired (and the answer caught
                                                                    // contradicting), the second never asked for.
    let hb = wire::Heartbeat {
        vv: {
            let mut v = vec![(liar_origin, 10), (origin_of(victim), 1000)];
            v.sort();
            v
        },
        digest: [0; 32],
        done: false,
        leaving: false,
        loss: 0.0,
        backlog: 0,
        mode: Default::default(),
    };
    w.inject(liar, victim, Some(Topic::Status), hb.encode());
    w.run_for(5_000);
    let stats = w.nodes[&victim].core.stats();
    for reason in [
        "replayed",
        "equivocation",
        "unknown_version",
        "malformed",
        "wrong_run",
        "bad_delta",
    ] {
        assert!(
            stats.rejected.contains_key(reason),
            "{reason}: {:?}",
            stats.rejected
        );
    }
    assert!(
        stats.rejected["equivocation"] >= 2,
        "gossip and repair: {:?}",
        stats.rejected
    );
    // Refusals that could be honest (replayed, unknown version) cost nothing.
    assert_eq!(
        w.penalties.get(&liar).copied(),
        Some(4),
        "penalized for equivocation, malformed, wrong run and bad delta only"
    );
    let vv = w.nodes[&victim].core.log().version_vector();
    assert_eq!(
        vv.get(&liar_origin),
        Some(&3),
        "only the valid batch was taken"
    );
    let asked_own = w.inbox(liar).requests.iter().any(|(from, r)| {
        *from == victim
            && matches!(r, wire::Request::Range { origin, .. } if *origin == origin_of(victim))
    });
    assert!(
        !asked_own,
        "a node never repairs its own origin from others"
    );
    // The honest nodes still converge (once the silent liar is forgotten).
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    assert_converged(&w, 2 * 50 + 3);
}

#[test]
fn thirty_two_nodes_converge() {
    let mut w = World::new(7);
    w.loss = 0.1;
    for id in ids(0..32) {
        w.add(
            id,
            Spec {
                updates: 100,
                ..Spec::default()
            },
        );
    }
    let t = std::time::Instant::now();
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    eprintln!("32 nodes: {} ms virtual in {:?}", w.now_ms, t.elapsed());
    assert_converged(&w, 32 * 100);
}
