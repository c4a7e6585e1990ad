//! Unit tests of the core alone (the simulator in `tests/sim` checks the
//! swarm's properties over many cores).

use super::*;
use crate::zo::seed::RunId;

/// Peer `x` signs with a key derived from `x`.
fn signer(x: u8) -> attest::Signer {
    attest::Signer::from_seed([x; 32], RunId([0; 32]))
}

impl Peer for u8 {
    fn origin(&self) -> Option<Origin> {
        Some(signer(*self).origin())
    }
}

/// A batch as peer `x` signs and publishes it.
fn signed(x: u8, first: u64, codes: &[u8]) -> Vec<u8> {
    wire::encode_updates(first, &signer(x).sign(first, codes, &[]).sig, codes)
}

fn core(origin: u8, join: join::Mode) -> (Core<u8, u64, u64>, Instant) {
    core_with(origin, join, |_| {})
}

fn core_with(
    origin: u8,
    join: join::Mode,
    tweak: impl FnOnce(&mut Settings),
) -> (Core<u8, u64, u64>, Instant) {
    let t0 = Instant::now();
    let settings = Settings {
        signer: signer(origin),
        max_rate: 1000.0,
        publish_interval: Duration::from_millis(100),
        publish_max: 4,
        heartbeat_interval: Duration::from_millis(300),
        timing: Timing::default(),
        join,
        snapshot_quorum: 2,
        apply_rate: None,
        min_peers: 0,
        exit_when_settled: true,
        settle_timeout: Duration::from_secs(60),
        max_delta_bytes: 1 << 20,
        max_updates_per_origin: 1 << 24,
        owner: None,
        epoch_ms: 1,
        shapes: vec![("w".into(), 8)],
        drop_incoming: 0.0,
        mode: Default::default(),
        verify_fraction: 0.0,
        check_key: [0; 32],
    };
    let mut settings = settings;
    tweak(&mut settings);
    (Core::new(settings, Log::in_memory(RunId([0; 32])), t0), t0)
}

fn drain(c: &mut Core<u8, u64, u64>) -> Vec<Output<u8, u64, u64>> {
    std::iter::from_fn(|| c.poll())
        .filter(|o| !matches!(o, Output::Event(_)))
        .collect()
}

#[test]
fn own_updates_are_stored_batched_and_never_handed_back() {
    let (mut c, t0) = core(1, join::Mode::Replay);
    for seq in 0..4 {
        c.handle(
            t0,
            Input::Own {
                seq,
                update: Own::Code(3),
                basis: VersionVector::new(),
            },
        );
    }
    // publish_max = 4: one batch of four, published at once.
    let out = drain(&mut c);
    let batches: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Publish {
                topic: Topic::Updates,
                data,
                end,
            } => Some((data.clone(), *end)),
            _ => None,
        })
        .collect();
    // The batch carries the state each update was computed on (here the
    // empty one: no other origin's updates).
    let bases = crate::crdt::basis::encode(&[
        VersionVector::new(),
        VersionVector::new(),
        VersionVector::new(),
        VersionVector::new(),
    ]);
    let sig = signer(1).sign(0, &[3; 4], &[]).sig;
    let want = wire::encode_updates_with(0, &sig, &bases, &[3; 4]);
    assert_eq!(batches, vec![(want, Some(4))]);
    assert_eq!(c.log().next_seq(&signer(1).origin()), 4);
    assert_eq!(c.log().signed_through(&signer(1).origin()), 4);
    assert!(
        c.next_apply(100).is_none(),
        "own updates are applied by compute"
    );
}

#[test]
fn foreign_batches_are_handed_out_in_order_once() {
    let (mut c, t0) = core(1, join::Mode::Replay);
    let gossip = |id, first, codes: &[u8]| Input::Gossip {
        id,
        from: 2,
        source: Some(2),
        topic: Some(Topic::Updates),
        data: signed(2, first, codes),
    };
    c.handle(t0, gossip(1, 2, &[7, 8]));
    assert!(c.next_apply(100).is_none(), "nothing contiguous yet");
    c.handle(t0, gossip(2, 0, &[5, 6]));
    let verdicts: Vec<_> = drain(&mut c)
        .into_iter()
        .filter_map(|o| match o {
            Output::Verdict { id, verdict, .. } => Some((id, verdict)),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts, vec![(1, Verdict::Accept), (2, Verdict::Accept)]);
    // Whole signed batches: asked for 3, it runs to the end of the batch
    // holding seq 2, and carries both signatures.
    let seg = c.next_apply(3).expect("contiguous");
    assert_eq!((seg.first_seq, seg.codes.clone()), (0, vec![5, 6, 7, 8]));
    assert_eq!(seg.attests.len(), 2);
    assert!(c.next_apply(3).is_none());
}

#[test]
fn unknown_versions_are_ignored_and_counted_not_rejected() {
    let (mut c, t0) = core(1, join::Mode::Replay);
    for (id, topic) in [Topic::Updates, Topic::Status, Topic::Deltas]
        .into_iter()
        .enumerate()
    {
        c.handle(
            t0,
            Input::Gossip {
                id: id as u64,
                from: 2,
                source: Some(2),
                topic: Some(topic),
                data: vec![200, 1, 2, 3],
            },
        );
    }
    let out = drain(&mut c);
    assert!(out.iter().all(|o| matches!(
        o,
        Output::Verdict {
            verdict: Verdict::Ignore,
            ..
        }
    )));
    assert_eq!(out.len(), 3);
    assert_eq!(c.stats().rejected.get("unknown_version"), Some(&3));
}

#[test]
fn nothing_is_handed_out_while_joining_by_snapshot() {
    let (mut c, t0) = core(1, join::Mode::Snapshot);
    c.handle(
        t0,
        Input::Gossip {
            id: 0,
            from: 2,
            source: Some(2),
            topic: Some(Topic::Updates),
            data: signed(2, 0, &[5]),
        },
    );
    assert!(c.next_apply(10).is_none(), "held until the snapshot is in");
    c.handle(t0, Input::Tick);
    assert!(!drain(&mut c)
        .iter()
        .any(|o| matches!(o, Output::StartTraining)));
}

#[test]
fn held_offer_requests_are_bounded() {
    let (mut c, t0) = core(1, join::Mode::Replay);
    // From many peers (each within its own request rate).
    for ch in 0..(MAX_OFFER_WAITING as u64 + 10) {
        c.handle(
            t0,
            Input::Request {
                from: 2 + (ch % 30) as u8,
                request: wire::Request::Offer { at: Vec::new() },
                channel: ch,
            },
        );
    }
    let busy = drain(&mut c)
        .into_iter()
        .filter(|o| {
            matches!(
                o,
                Output::Respond {
                    response: wire::Response::Refused(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(busy, 10, "beyond the bound, offers are refused at once");
}

fn heartbeat_from(c: &mut Core<u8, u64, u64>, t: Instant, peer: u8, epoch: u64, counter: u64) {
    let hb = Heartbeat {
        vv: Vec::new(),
        digest: [0; 32],
        done: false,
        leaving: false,
        loss: 0.0,
        backlog: 0,
        mode: Default::default(),
        epoch,
        counter,
    };
    c.handle(
        t,
        Input::Gossip {
            id: counter,
            from: peer,
            source: Some(peer),
            topic: Some(Topic::Status),
            data: hb.encode(),
        },
    );
}

#[test]
fn replayed_heartbeats_are_ignored() {
    let (mut c, t0) = core(1, join::Mode::Replay);
    heartbeat_from(&mut c, t0, 2, 10, 5);
    heartbeat_from(&mut c, t0, 2, 10, 5); // replayed
    heartbeat_from(&mut c, t0, 2, 10, 4); // older
    assert_eq!(c.stats().rejected.get("stale_heartbeat"), Some(&2));
    heartbeat_from(&mut c, t0, 2, 10, 6);
    heartbeat_from(&mut c, t0, 2, 11, 0); // restarted: a later epoch
    assert_eq!(c.stats().rejected.get("stale_heartbeat"), Some(&2));
    assert!(c.peers().contains_key(&2));
}

#[test]
fn sync_requests_are_rate_limited_per_peer() {
    let (mut c, t0) = core(1, join::Mode::Replay);
    let range = |ch| Input::Request {
        from: 2,
        request: wire::Request::Range {
            origin: Origin([9; 32]),
            from: 0,
            to: 10,
        },
        channel: ch,
    };
    for ch in 0..1000 {
        c.handle(t0, range(ch));
    }
    let refused = c.stats().rejected.get("request_rate").copied().unwrap_or(0);
    assert_eq!(
        refused,
        1000 - 2 * REQUESTS_PER_SECOND as u64,
        "a burst of two seconds"
    );
    // Another peer has its own allowance; time refills it.
    c.handle(
        t0,
        Input::Request {
            from: 3,
            request: wire::Request::Fingerprints,
            channel: 5000,
        },
    );
    c.handle(t0 + Duration::from_secs(1), range(5001));
    assert_eq!(
        c.stats().rejected.get("request_rate").copied(),
        Some(refused)
    );
}

#[test]
fn an_origin_past_its_quota_is_refused() {
    let t0 = Instant::now();
    let (c, _) = core(1, join::Mode::Replay);
    let mut settings = c.settings.clone();
    settings.max_updates_per_origin = 4;
    let mut c: Core<u8, u64, u64> = Core::new(settings, Log::in_memory(RunId([0; 32])), t0);
    let gossip = |id, first, codes: &[u8]| Input::Gossip {
        id,
        from: 2,
        source: Some(2),
        topic: Some(Topic::Updates),
        data: signed(2, first, codes),
    };
    c.handle(t0, gossip(1, 0, &[5, 6, 7]));
    c.handle(t0, gossip(2, 3, &[8, 9]));
    c.handle(t0, gossip(3, 3, &[8]));
    assert_eq!(c.stats().rejected.get("over_quota"), Some(&1));
    assert_eq!(c.log().version_vector().get(&signer(2).origin()), Some(&4));
}

#[test]
fn own_updates_recovered_from_disk_are_signed_again_as_published() {
    // A restarted node holds its own codes (and a delta) without signatures.
    let me = signer(1);
    let mut log = Log::in_memory(RunId([0; 32]));
    let p = crate::crdt::log::Payload::new(vec![7; 10]);
    log.insert_with(me.origin(), 0, &[1, 2, crate::crdt::log::DELTA, 3], &[p])
        .unwrap();
    let (c, t0) = core(1, join::Mode::Replay);
    let c: Core<u8, u64, u64> = Core::new(c.settings.clone(), log, t0);
    let o = me.origin();
    assert_eq!(c.log().signed_through(&o), 4);
    // Served as published: the codes, the delta alone, the rest.
    let served: Vec<(u64, u32)> = c
        .log()
        .signed_batches(&o, 0, 100, 1 << 20)
        .into_iter()
        .map(|(a, _, _)| (a.first_seq, a.len))
        .collect();
    assert_eq!(served, vec![(0, 2), (2, 1), (3, 1)]);
}

#[test]
fn heartbeat_and_publish_periods_grow_with_the_swarm_and_are_capped() {
    let (mut c, t0) = core(1, join::Mode::Replay);
    // Up to 8 live peers: the configured periods.
    for p in 2..10 {
        heartbeat_from(&mut c, t0, p, 1, 0);
    }
    assert_eq!(c.peers().len(), 8);
    assert_eq!(c.heartbeat_every(), Duration::from_millis(300));
    assert_eq!(c.publish_every(), Duration::from_millis(100));
    // 16 peers: twice as long.
    for p in 10..18 {
        heartbeat_from(&mut c, t0, p, 1, 0);
    }
    assert_eq!(c.heartbeat_every(), Duration::from_millis(600));
    assert_eq!(c.publish_every(), Duration::from_millis(200));
    // 200 peers: at the caps.
    for p in 18..210 {
        heartbeat_from(&mut c, t0, p, 1, 0);
    }
    assert_eq!(c.heartbeat_every(), publish::HEARTBEAT_MAX);
    assert_eq!(c.publish_every(), publish::PUBLISH_MAX);
    assert!(publish::HEARTBEAT_MAX * 3 <= Timing::default().peer_timeout);
}

/// Spot checks without sockets: a batch of origin 2 computed on 3 updates
/// of origin 3 is checked once this node has handed those over; the check
/// names that state and what to subtract to reach it, and its verdict is
/// tallied. A batch whose state this node never reaches expires.
#[test]
fn spot_checks_wait_for_the_state_then_ask_compute_and_tally() {
    use crate::zo::check::Verdict as V;
    let (mut c, t0) = core_with(1, join::Mode::Replay, |s| s.verify_fraction = 1.0);
    let (o2, o3) = (signer(2).origin(), signer(3).origin());
    let gossip = |id, x: u8, first: u64, codes: &[u8], bases: &[VersionVector]| Input::Gossip {
        id,
        from: x,
        source: Some(x),
        topic: Some(Topic::Updates),
        data: wire::encode_updates_with(
            first,
            &signer(x).sign(first, codes, &[]).sig,
            &crate::crdt::basis::encode(bases),
            codes,
        ),
    };
    // Origin 2's two updates: on 3 then 5 of origin 3's updates.
    let b = |n: u64| VersionVector::from([(o3, n)]);
    c.handle(t0, gossip(1, 2, 0, &[5, 0x85], &[b(3), b(5)]));
    assert_eq!(
        c.checks_waiting(),
        0,
        "origin 3 is not known yet: unresolvable"
    );
    c.handle(
        t0,
        gossip(2, 3, 0, &[1, 2, 3, 4, 5, 6], &vec![VersionVector::new(); 6]),
    );
    c.handle(t0, gossip(3, 2, 2, &[7], &[b(6)]));
    assert_eq!(c.checks_waiting(), 1 + 6);
    drain(&mut c);
    let check = |c: &mut Core<u8, u64, u64>| {
        let mut v: Vec<_> = drain(c)
            .into_iter()
            .filter_map(|o| match o {
                Output::Check {
                    origin,
                    seq,
                    code,
                    target,
                    retract,
                } => {
                    let mut back: Vec<_> = retract
                        .iter()
                        .map(|s| (s.origin, s.first_seq, s.end()))
                        .collect();
                    back.sort();
                    Some((origin, seq, code, target, back))
                }
                _ => None,
            })
            .collect();
        assert!(v.len() <= 1, "one in flight");
        v.pop()
    };
    // Origin 3's first update was made on nothing: ready at once, with
    // nothing to subtract (nothing handed over yet).
    c.handle(t0, Input::Tick);
    let (o, seq, code, target, back) = check(&mut c).expect("a check");
    assert_eq!((o, seq, code, back.len()), (o3, 0, 1, 0));
    assert_eq!(target, VersionVector::from([(o3, 0)]));
    // Everything is handed over; the next check subtracts what lies past
    // its state: origin 2's 3 updates, origin 3's from seq 1.
    while c.next_apply(100).is_some() {}
    c.handle(
        t0,
        Input::Checked {
            origin: o3,
            seq: 0,
            result: Ok((V::Agree, 0.3)),
        },
    );
    let (o, seq, _, target, back) = check(&mut c).expect("the next check at once");
    assert_eq!((o, seq), (o3, 1));
    assert_eq!(target, VersionVector::from([(o3, 1)]));
    let mut want = vec![(o2, 0, 3), (o3, 1, 6)];
    want.sort();
    assert_eq!(back, want);
    c.handle(
        t0,
        Input::Checked {
            origin: o3,
            seq: 1,
            result: Ok((V::Disagree, -0.3)),
        },
    );
    let t = &c.stats().checks[&o3];
    assert_eq!((t.checked, t.agreed, t.disagreed), (2, 1, 1));
    // Origin 2's third update: on origin 3's six (its first two came
    // before origin 3 was known and were not queued).
    let mut seen = Vec::new();
    for _ in 0..6 {
        let Some((o, seq, _, target, _)) = check(&mut c) else {
            break;
        };
        seen.push((o, seq, target));
        c.handle(
            t0,
            Input::Checked {
                origin: o,
                seq,
                result: Ok((V::Agree, 1.0)),
            },
        );
    }
    assert!(
        seen.contains(&(o2, 2, VersionVector::from([(o3, 6), (o2, 2)]))),
        "{seen:?}"
    );
    // A check whose state is never reached (origin 3's 9th update) waits,
    // then expires and is counted.
    c.handle(t0, gossip(4, 2, 3, &[9], &[b(9)]));
    assert_eq!(c.checks_waiting(), 1);
    let skipped = c.stats().checks_skipped;
    c.handle(
        t0 + check::CHECK_EXPIRE + Duration::from_secs(1),
        Input::Tick,
    );
    assert_eq!(c.checks_waiting(), 0);
    assert_eq!(c.stats().checks_skipped, skipped + 1);
}

/// Bases that do not decode cost the batch nothing: its codes are taken,
/// the bases are counted and neither kept nor sampled.
#[test]
fn bad_bases_are_counted_and_not_kept() {
    let (mut c, t0) = core_with(1, join::Mode::Replay, |s| s.verify_fraction = 1.0);
    let codes = [5u8, 6];
    let data =
        wire::encode_updates_with(0, &signer(2).sign(0, &codes, &[]).sig, &[200, 1, 2], &codes);
    c.handle(
        t0,
        Input::Gossip {
            id: 1,
            from: 2,
            source: Some(2),
            topic: Some(Topic::Updates),
            data,
        },
    );
    let out = drain(&mut c);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Verdict {
            verdict: Verdict::Accept,
            ..
        }
    )));
    assert!(!out.iter().any(|o| matches!(o, Output::KeepBases { .. })));
    assert_eq!(c.stats().rejected.get("bad_bases"), Some(&1));
    assert_eq!(c.checks_waiting(), 0);
    assert_eq!(c.log().next_seq(&signer(2).origin()), 2);
}

/// A heartbeat announcing `n` updates of origin 9.
fn announce(c: &mut Core<u8, u64, u64>, t: Instant, peer: u8, counter: u64, n: u64) {
    let hb = Heartbeat {
        vv: vec![(signer(9).origin(), n)],
        digest: [0; 32],
        done: false,
        leaving: false,
        loss: 0.0,
        backlog: 0,
        mode: Default::default(),
        epoch: 1,
        counter,
    };
    c.handle(
        t,
        Input::Gossip {
            id: 1000 * u64::from(peer) + counter,
            from: peer,
            source: Some(peer),
            topic: Some(Topic::Status),
            data: hb.encode(),
        },
    );
}

fn offers_to(out: &[Output<u8, u64, u64>]) -> Vec<u8> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                request: wire::Request::Offer { .. },
                ..
            } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn snapshots_are_asked_of_direct_peers_only() {
    let (mut c, t0) = core(1, join::Mode::Snapshot);
    for p in [2, 3] {
        c.handle(
            t0,
            Input::Relayed {
                peer: p,
                only: true,
            },
        );
    }
    let mut t = t0;
    for k in 0..4 {
        t += Duration::from_millis(500);
        announce(&mut c, t, 2, k, 50);
        announce(&mut c, t, 3, k, 50);
        c.handle(t, Input::Tick);
    }
    assert!(
        offers_to(&drain(&mut c)).is_empty(),
        "no snapshot through a relay"
    );
    // Peer 3 was hole punched: it alone is asked.
    c.handle(
        t,
        Input::Relayed {
            peer: 3,
            only: false,
        },
    );
    t += Duration::from_millis(100);
    c.handle(t, Input::Tick);
    assert_eq!(offers_to(&drain(&mut c)), vec![3]);
}

#[test]
fn a_joiner_that_knows_only_relayed_peers_replays() {
    let (mut c, t0) = core(1, join::Mode::Snapshot);
    c.handle(
        t0,
        Input::Relayed {
            peer: 2,
            only: true,
        },
    );
    let mut t = t0;
    for k in 0..24 {
        t += Duration::from_millis(500);
        announce(&mut c, t, 2, k, 50);
        c.handle(t, Input::Tick);
    }
    let events: Vec<_> = std::iter::from_fn(|| c.poll()).collect();
    assert!(offers_to(&events).is_empty());
    assert!(
        events
            .iter()
            .any(|o| matches!(o, Output::Event(Event::Joined("replay")))),
        "after {:?} without a direct peer it replays",
        join::RELAYED_WAIT
    );
}
