//! The swarm's properties, checked on the deterministic simulator ([`world`]):
//! real protocol cores, replicas and logs, a simulated network. Each test
//! runs minutes of virtual time in well under a second of real time.

mod membership;
mod node;
mod scale;
mod world;

use node::{origin_of, signed_updates, signer_of, Id, Kind, Spec};
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
    // The liar answers range requests with batches whose signatures are not
    // their origin's, and serves a delta payload that does not match its hash.
    w.add_scripted(
        liar,
        Box::new(move |req| match req {
            wire::Request::Range { origin, from, .. } => Some(wire::Response::Range {
                origin: *origin,
                batches: vec![wire::Batch {
                    first_seq: *from,
                    codes: wire::Blob(vec![42; 4]),
                    payloads: Vec::new(),
                    sig: wire::Blob(vec![7; 64]),
                }],
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
    w.inject(liar, victim, up, signed_updates(liar, 0, &[5, 6, 7])); // valid
    w.inject(liar, victim, up, signed_updates(liar, 0, &[5, 6, 7])); // replayed
    let mut forged = signed_updates(liar, 3, &[1]);
    let n = forged.len();
    forged[n - 1] = 2; // another code under the same signature
    w.inject(liar, victim, up, forged); // bad signature
    w.inject(liar, victim, up, wire::encode_updates(3, &[0; 64], &[1])); // unsigned batch
    w.inject(liar, victim, up, vec![9, 9, 9]); // unknown version
    w.inject(liar, victim, up, vec![wire::UPDATES_VERSION, 0x80]); // malformed
    w.inject(liar, victim, None, vec![1, 0, 1]); // another run's topic
    let hash = [0; 32];
    let sig = signer_of(liar).sign(3, &[DELTA], &[hash]).sig;
    let announce = wire::DeltaAnnounce {
        seq: 3,
        len: 45,
        hash,
        sig,
    };
    w.inject(liar, victim, Some(Topic::Deltas), announce.encode()); // payload won't match
                                                                    // A heartbeat claiming far more of the liar's history, and of the
                                                                    // victim's own: the first is repaired (and the answer caught forged),
                                                                    // the second never asked for.
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
        epoch: 1,
        counter: 0,
    };
    w.inject(liar, victim, Some(Topic::Status), hb.encode());
    w.run_for(5_000);
    let stats = w.nodes[&victim].core.stats();
    for reason in [
        "replayed",
        "bad_signature",
        "unknown_version",
        "malformed",
        "wrong_run",
        "bad_delta",
        "forged_range",
    ] {
        assert!(
            stats.rejected.contains_key(reason),
            "{reason}: {:?}",
            stats.rejected
        );
    }
    // Refusals that could be honest (replayed, unknown version) cost nothing.
    assert_eq!(
        w.penalties.get(&liar).copied(),
        Some(5),
        "penalized for two bad signatures, malformed, wrong run and bad delta only"
    );
    // Each range asked of it (once per node and origin it claimed: its own,
    // and the victim's future seqs, which the other node asked for) was
    // answered forged, and the asker banned it; nobody asked again.
    let bans = w.bans.get(&liar).copied().unwrap_or(0);
    let asks = w
        .inbox(liar)
        .requests
        .iter()
        .filter(|(_, r)| matches!(r, wire::Request::Range { .. }))
        .count();
    assert!(bans >= 2, "banned by both nodes: {bans}");
    assert_eq!(bans as usize, asks, "every forged answer got a ban");
    assert!(asks <= 3, "asked {asks} times");
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

/// A heartbeat as a scripted peer sends it: claims `vv`, never done (each
/// newer than the last).
fn heartbeat(vv: Vec<(seedswarm::zo::seed::Origin, u64)>) -> Vec<u8> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut vv = vv;
    vv.sort();
    wire::Heartbeat {
        vv,
        digest: [0; 32],
        done: false,
        leaving: false,
        loss: 0.0,
        backlog: 0,
        mode: Default::default(),
        epoch: 1,
        counter: COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
    .encode()
}

#[test]
fn forged_history_through_repair_is_never_stored() {
    // The attack: a peer heartbeats that it holds a million updates of an
    // honest origin H (and of an origin nobody has), and answers the range
    // requests that follow with codes of its own choosing, signed by itself.
    let mut w = World::new(10);
    let forger = Id(200);
    let honest = ids(0..3);
    let h = origin_of(Id(0));
    let ghost = origin_of(Id(999));
    let key = signer_of(forger);
    w.add_scripted(
        forger,
        Box::new(move |req| match req {
            wire::Request::Range { origin, from, .. } => {
                let codes = vec![0x7f; 64];
                Some(wire::Response::Range {
                    origin: *origin,
                    batches: vec![wire::Batch {
                        first_seq: *from,
                        sig: wire::Blob(key.sign(*from, &codes, &[]).sig.to_vec()),
                        codes: wire::Blob(codes),
                        payloads: Vec::new(),
                    }],
                })
            }
            _ => None,
        }),
    );
    for &id in &honest {
        w.add(id, Spec::default());
    }
    for _ in 0..10 {
        for &id in &honest {
            let hb = heartbeat(vec![(h, 1_000_000), (ghost, 1_000)]);
            w.inject(forger, id, Some(Topic::Status), hb);
        }
        w.run_for(1_000);
    }
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    assert_converged(&w, 3 * 200);
    for (id, n) in &w.nodes {
        let vv = n.replica.version_vector();
        assert_eq!(vv.get(&h), Some(&200), "{id:?} holds only H's own 200");
        assert!(!vv.contains_key(&ghost), "{id:?} took an invented origin");
        let st = n.core.stats();
        assert!(
            !st.rejected.contains_key("equivocation"),
            "{:?}",
            st.rejected
        );
    }
    // Range requests (each node also asks a peer it meets for its records).
    let ranges: Vec<_> = w
        .inbox(forger)
        .requests
        .iter()
        .filter(|(_, r)| matches!(r, wire::Request::Range { .. }))
        .collect();
    let asks = ranges.len();
    for (asker, _) in ranges {
        assert!(
            w.nodes[asker].core.is_banned(&forger),
            "{asker:?} banned the forger"
        );
    }
    assert!(
        w.bans.get(&forger).copied().unwrap_or(0) >= 1,
        "forger banned"
    );
    assert!(
        asks <= 3 * 2,
        "asked {asks} times: at most once per node and origin"
    );
}

#[test]
fn an_equivocating_origin_is_excluded_everywhere_with_equal_digests() {
    let mut w = World::new(11);
    let liar = Id(300);
    let lo = origin_of(liar);
    w.add_scripted(liar, Box::new(|_| None));
    for id in ids(0..5) {
        w.add(
            id,
            Spec {
                updates: 100,
                ..Spec::default()
            },
        );
    }
    w.run_for(300);
    // Two versions of seqs 0..10 that differ from seq 5 on, to two nodes at
    // once: each side takes the one it saw first and forwards it.
    let v1: Vec<u8> = (1..=10).collect();
    let mut v2 = v1.clone();
    v2[5] = 0x7f;
    w.inject(
        liar,
        Id(0),
        Some(Topic::Updates),
        signed_updates(liar, 0, &v1),
    );
    w.inject(
        liar,
        Id(4),
        Some(Topic::Updates),
        signed_updates(liar, 0, &v2),
    );
    w.run_for(500);
    // It keeps publishing afterwards: excluded, ignored.
    for &id in &ids(0..5) {
        w.inject(
            liar,
            id,
            Some(Topic::Updates),
            signed_updates(liar, 10, &[3; 10]),
        );
    }
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    assert_converged(&w, 5 * 100 + 5);
    let retracted: u64 = w.nodes.values().map(|n| n.retracted).sum();
    assert!(retracted > 0, "some node had applied a version past seq 5");
    for (id, n) in &w.nodes {
        assert_eq!(n.replica.version_vector().get(&lo), Some(&5), "{id:?}");
        assert_eq!(
            n.core.stats().excluded.get(&lo.to_hex()),
            Some(&5),
            "{id:?}"
        );
    }
    for id in ids(0..5) {
        assert_eq!(
            w.penalties.get(&id),
            None,
            "honest forwarders are not penalized"
        );
    }
    // A node joining afterwards by snapshot ends on the same state.
    w.add(
        Id(5),
        Spec {
            updates: 10,
            join: join::Mode::Snapshot,
            ..Spec::default()
        },
    );
    assert!(
        w.run_until(10 * MINUTE, done),
        "no quiescence after the join"
    );
    assert_converged(&w, 5 * 100 + 5 + 10);
}

#[test]
fn equivocation_across_a_partition_is_found_after_healing() {
    let mut w = World::new(12);
    let liar = Id(301);
    let lo = origin_of(liar);
    w.add_scripted(liar, Box::new(|_| None));
    let (a, b) = (ids(0..3), ids(3..6));
    for &id in a.iter().chain(&b) {
        w.add(
            id,
            Spec {
                updates: 150,
                ..Spec::default()
            },
        );
    }
    w.run_for(300);
    w.partition(&a, &b);
    let v1: Vec<u8> = vec![9; 8];
    let mut v2 = v1.clone();
    v2[2] = 0x81;
    w.inject(
        liar,
        Id(0),
        Some(Topic::Updates),
        signed_updates(liar, 0, &v1),
    );
    w.inject(
        liar,
        Id(3),
        Some(Topic::Updates),
        signed_updates(liar, 0, &v2),
    );
    w.run_for(1_000);
    let (left, right) = (&w.nodes[&Id(1)], &w.nodes[&Id(4)]);
    assert_eq!(left.replica.version_vector().get(&lo), Some(&8));
    assert_eq!(right.replica.version_vector().get(&lo), Some(&8));
    w.heal();
    // Equal version vectors, different digests: the nodes compare log
    // fingerprints, fetch the other side's signed batches, find the proof.
    assert!(
        w.run_until(10 * MINUTE, done),
        "no quiescence after healing"
    );
    assert!(w.digest_mismatches > 0, "the sides did disagree");
    assert!(w.agree() && w.settled());
    for n in w.nodes.values() {
        assert_eq!(n.replica.applied(), 6 * 150 + 2);
        assert_eq!(n.replica.version_vector().get(&lo), Some(&2));
    }
}

#[test]
fn a_valid_format_staller_neither_stalls_nor_bloats_the_swarm() {
    // A peer that publishes valid signed batches — far-ahead seqs too — and
    // heartbeats claims it never serves.
    let mut w = World::new(13);
    let staller = Id(400);
    let so = origin_of(staller);
    w.add_scripted(staller, Box::new(|_| None));
    let honest = ids(0..3);
    for &id in &honest {
        w.add(
            id,
            Spec {
                updates: 100,
                ..Spec::default()
            },
        );
    }
    for &id in &honest {
        w.inject(
            staller,
            id,
            Some(Topic::Updates),
            signed_updates(staller, 0, &[0x7f; 50]),
        );
    }
    for i in 1..3_000u64 {
        let batch = signed_updates(staller, 1_000 * i, &[0xff; 40]);
        for &id in &honest {
            w.inject(staller, id, Some(Topic::Updates), batch.clone());
        }
    }
    let mut peak = 0u64;
    for _ in 0..30 {
        for &id in &honest {
            w.inject(
                staller,
                id,
                Some(Topic::Status),
                heartbeat(vec![(so, 5_000_000)]),
            );
        }
        w.run_for(1_000);
        for n in w.nodes.values() {
            let (updates, batches) = n.core.log().pending_of(&so);
            assert!(updates <= seedswarm::proto::MAX_PENDING_PER_ORIGIN);
            assert!(batches <= 1024);
            peak = peak.max(updates);
        }
    }
    assert!(peak > 0, "the staller's far-ahead batches were buffered");
    // It keeps heartbeating, never serves: the honest nodes still settle.
    let settle = |w: &World| honest.iter().all(|id| w.nodes[id].core.settled()) && w.agree();
    let mut ok = false;
    for _ in 0..240 {
        for &id in &honest {
            w.inject(
                staller,
                id,
                Some(Topic::Status),
                heartbeat(vec![(so, 5_000_000)]),
            );
        }
        if w.run_until(1_000, settle) {
            ok = true;
            break;
        }
    }
    assert!(ok, "honest nodes never settled");
    for n in w.nodes.values() {
        assert_eq!(n.replica.version_vector().get(&so), Some(&50));
        assert_eq!(n.core.log().pending_updates(), 0, "what waited was dropped");
        assert!(n.core.stats().dropped_pending > 0);
    }
}

#[test]
fn a_poisoned_snapshot_is_never_installed() {
    // A peer offers a snapshot claiming far more history (and, asked for a
    // state, a snapshot of it with another δ). No other peer vouches for
    // either: the joiner takes the one the honest peers agree on.
    let mut w = World::new(14);
    let poisoner = Id(500);
    let po = origin_of(poisoner);
    w.add_scripted(
        poisoner,
        Box::new(move |req| match req {
            wire::Request::Offer { at } => {
                let mut vv: seedswarm::crdt::replica::VersionVector = at.iter().copied().collect();
                vv.insert(po, 1_000_000);
                let bogus = [vec![i32::MAX; 48], vec![7; 16]];
                let d: Vec<&[i32]> = bogus.iter().map(Vec::as_slice).collect();
                let s = seedswarm::crdt::snapshot::encode(&d, &vv, [0xee; 32], vec![]);
                Some(wire::Response::Offer {
                    id: s.id,
                    vv: s.vv.iter().map(|(o, n)| (*o, *n)).collect(),
                    digest: s.digest,
                    raw_len: s.raw_len,
                    hashes: wire::Blob(s.hashes.concat()),
                })
            }
            _ => None,
        }),
    );
    for id in ids(0..3) {
        w.add(id, Spec::default());
    }
    w.run_for(1_000);
    for &id in &ids(0..3) {
        w.inject(
            poisoner,
            id,
            Some(Topic::Status),
            heartbeat(vec![(po, 1_000_000)]),
        );
    }
    w.add(
        Id(3),
        Spec {
            updates: 20,
            join: join::Mode::Snapshot,
            ..Spec::default()
        },
    );
    w.inject(
        poisoner,
        Id(3),
        Some(Topic::Status),
        heartbeat(vec![(po, 1_000_000)]),
    );
    assert!(w.run_until(10 * MINUTE, done), "no quiescence");
    let j = w.nodes[&Id(3)].core.join();
    assert_eq!(j.chosen, "snapshot");
    assert!(j.refused >= 1, "the poisoned offer was refused");
    assert!(
        !w.inbox(poisoner)
            .requests
            .iter()
            .any(|(_, r)| matches!(r, wire::Request::Chunk { .. })),
        "nothing fetched from the poisoner"
    );
    assert!(w.agree(), "the joiner ends on the honest state");
    for n in w.nodes.values() {
        assert!(!n.replica.version_vector().contains_key(&po));
        assert_eq!(n.replica.applied(), 3 * 200 + 20);
    }
}
