//! The keystone property: the same set of updates gives the same bits in any
//! order, through the log (which buffers out-of-order batches) and the replica.

use proptest::prelude::*;
use seedswarm::crdt::log::{Log, Payload, DELTA};
use seedswarm::crdt::replica::{Replica, Rules, Schedule, Update};
use seedswarm::delta::fedzip;
use seedswarm::zo::codec::{Codec, Settings};
use seedswarm::zo::perturb::Kind;
use seedswarm::zo::seed::{Origin, RunId};
use seedswarm::zo::structure::Structure;

fn replica(kind: Kind) -> Replica {
    replica_with(kind, Structure::Dense)
}

fn replica_with(kind: Kind, structure: Structure) -> Replica {
    let rules = Rules {
        run: RunId([9; 32]),
        kind,
        structure,
        codec: Codec::new(&Settings::default()),
        schedule: Schedule::Linear {
            lr: 1e-3,
            steps: 50,
            final_fraction: 0.1,
        },
        unit_bits: 24,
        max_delta_norm: 1.0,
    };
    let tensors = vec![
        (
            "a".to_string(),
            (0..1000).map(|i| (i as f32 * 0.37).sin()).collect(),
        ),
        ("b".to_string(), vec![0.0; 33]),
        ("c".to_string(), vec![1.0; 70_000]),
    ];
    Replica::new(rules, tensors)
}

/// A deterministic delta payload for update `seq` of `o` (tensors a and b;
/// some exceed the norm clip).
fn payload_for(o: &Origin, seq: u64) -> Payload {
    let mut x = u64::from(o.0[0]) * 1_000_003 + seq * 7919 + 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 2001) as f32 / 1000.0 - 1.0
    };
    let scale = if seq.is_multiple_of(3) { 0.5 } else { 0.01 };
    let a: Vec<f32> = (0..1000).map(|_| next() * scale).collect();
    let b: Vec<f32> = (0..33).map(|_| next() * scale).collect();
    let s = fedzip::Settings {
        top_z: 0.1,
        ..fedzip::Settings::default()
    };
    let d = fedzip::compress(&[("a", &a), ("b", &b)], &s).unwrap();
    Payload::new(fedzip::encode(&d, s.positions))
}

type Batch = (Origin, u64, Vec<u8>, Vec<Payload>);

/// Batches `(origin, first_seq, codes, payloads)` covering every update once.
fn batches(updates: &[Update], cuts: &[usize]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut by_origin: std::collections::BTreeMap<Origin, Vec<&Update>> = Default::default();
    for u in updates {
        by_origin.entry(u.origin).or_default().push(u);
    }
    let mut k = 0;
    for (o, us) in by_origin {
        let mut i = 0;
        while i < us.len() {
            let len = 1 + cuts[k % cuts.len()] % 5;
            k += 1;
            let end = (i + len).min(us.len());
            let payloads = us[i..end]
                .iter()
                .filter(|u| u.code == DELTA)
                .map(|u| payload_for(&u.origin, u.seq))
                .collect();
            out.push((
                o,
                us[i].seq,
                us[i..end].iter().map(|u| u.code).collect(),
                payloads,
            ));
            i = end;
        }
    }
    out
}

fn run(kind: Kind, structure: Structure, order: &[Batch]) -> (String, Vec<(Origin, u64)>) {
    let mut r = replica_with(kind, structure);
    let mut log = Log::in_memory(RunId([9; 32]));
    for (o, first, codes, payloads) in order {
        let fresh = log.insert_with(*o, *first, codes, payloads).unwrap();
        r.apply_with(&fresh, &|o, s| log.payload(o, s).cloned())
            .unwrap();
    }
    assert_eq!(log.pending_updates(), 0);
    (
        r.digest(),
        r.version_vector().iter().map(|(o, n)| (*o, *n)).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Mixed streams: code 0x80 stands for a delta update (a compressed sparse
    /// delta, norm-clipped), every other code for a one-byte update.
    #[test]
    fn any_order_same_bits(
        codes in proptest::collection::vec(prop_oneof![4 => any::<u8>(), 1 => Just(DELTA)], 1..60),
        cuts in proptest::collection::vec(0usize..100, 1..20),
        perm_seed in any::<u64>(),
        gaussian in any::<bool>(),
        structure in prop_oneof![
            Just(Structure::Dense),
            Just(Structure::Layers { layers: 1 }),
            Just(Structure::Magnitude { density: 0.3 }),
        ],
    ) {
        let kind = if gaussian { Kind::Gaussian } else { Kind::Rademacher };
        let origins = [Origin([1; 32]), Origin([2; 32]), Origin([3; 32])];
        let mut next = [0u64; 3];
        let updates: Vec<Update> = codes
            .iter()
            .enumerate()
            .map(|(i, &code)| {
                let o = i % 3;
                next[o] += 1;
                Update { origin: origins[o], seq: next[o] - 1, code }
            })
            .collect();
        let in_order = batches(&updates, &[0]);
        let mut shuffled = batches(&updates, &cuts);
        // Deterministic Fisher–Yates from the proptest seed.
        let mut x = perm_seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        // Duplicate deliveries must not change anything either.
        let mut with_dups = shuffled.clone();
        with_dups.extend(shuffled.iter().take(3).cloned());
        let a = run(kind, structure, &in_order);
        let b = run(kind, structure, &shuffled);
        let c = run(kind, structure, &with_dups);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &c);
    }
}

#[test]
fn updates_move_the_weights_and_digest() {
    let mut r = replica(Kind::Rademacher);
    let d0 = r.digest();
    let u = Update {
        origin: Origin([1; 32]),
        seq: 0,
        code: 100,
    };
    r.apply(&[u]).unwrap();
    assert_ne!(r.digest(), d0);
    let mut w = vec![0f32; 1000];
    r.materialize(0, &mut w);
    let moved = w
        .iter()
        .zip(&r.slots()[0].base)
        .filter(|(a, b)| a != b)
        .count();
    assert!(moved > 990, "{moved} of 1000 weights moved");
}

#[test]
fn gaps_are_refused_by_the_replica() {
    let mut r = replica(Kind::Rademacher);
    let u = Update {
        origin: Origin([1; 32]),
        seq: 1,
        code: 3,
    };
    assert!(r.apply(&[u]).is_err());
    assert_eq!(r.applied(), 0);
}

#[test]
fn perturbation_is_undone_by_rematerializing() {
    let r = replica(Kind::Gaussian);
    let seed = seedswarm::zo::seed::derive(&RunId([9; 32]), &Origin([4; 32]), 0);
    let mut w = vec![0f32; 1000];
    r.materialize(0, &mut w);
    let clean = w.clone();
    r.materialize_perturbed(0, &mut w, &seed, 1e-3);
    assert_ne!(w, clean);
    r.materialize(0, &mut w);
    assert_eq!(w, clean);
}

/// Updates 0..4 of origin [1; 32] with codes 90..94 (the golden tests' input).
fn four_updates() -> Vec<Update> {
    (0..4)
        .map(|s| Update {
            origin: Origin([1; 32]),
            seq: s,
            code: 90 + s as u8,
        })
        .collect()
}

#[test]
fn golden_contributions() {
    // Pinned integer contributions of one update: every node must compute these.
    let mut r = replica(Kind::Rademacher);
    r.apply(&[Update {
        origin: Origin([1; 32]),
        seq: 7,
        code: 0,
    }])
    .unwrap_err();
    let updates = four_updates();
    r.apply(&updates).unwrap();
    let picks: Vec<i32> = vec![
        r.slots()[0].delta[0],
        r.slots()[0].delta[999],
        r.slots()[1].delta[5],
        r.slots()[2].delta[69_999],
    ];
    assert_eq!(picks, [-5849, 6647, -6262, -821]);
    assert_eq!(
        r.digest(),
        "40c4463cfd51b3b83617757468e826ae2fdc601c073a4814ee12e2a5f5ccb681"
    );
}

fn one_update(seq: u64) -> Update {
    Update {
        origin: Origin([1; 32]),
        seq,
        code: 100,
    }
}

#[test]
fn a_layer_subset_update_moves_only_its_layers() {
    for kind in [Kind::Rademacher, Kind::Gaussian] {
        let mut r = replica_with(kind, Structure::Layers { layers: 1 });
        let mut moved_sets = std::collections::BTreeSet::new();
        for seq in 0..6 {
            let before: Vec<Vec<i32>> = r.slots().iter().map(|s| s.delta.clone()).collect();
            let seed = seedswarm::zo::seed::derive(&RunId([9; 32]), &Origin([1; 32]), seq);
            let which = r.perturbed(&seed);
            assert_eq!(which.iter().filter(|&&on| on).count(), 1, "{which:?}");
            r.apply(&[one_update(seq)]).unwrap();
            for (t, s) in r.slots().iter().enumerate() {
                assert_eq!(
                    s.delta != before[t],
                    which[t],
                    "{kind:?} seq {seq} tensor {t}"
                );
            }
            moved_sets.insert(which);
        }
        assert!(
            moved_sets.len() > 1,
            "different seeds choose different layers"
        );
    }
}

#[test]
fn a_magnitude_update_moves_only_small_weights() {
    for kind in [Kind::Rademacher, Kind::Gaussian] {
        let mut r = replica_with(kind, Structure::Magnitude { density: 0.25 });
        r.apply(&[one_update(0), one_update(1)]).unwrap();
        let seed = seedswarm::zo::seed::derive(&RunId([9; 32]), &Origin([1; 32]), 5);
        for (t, s) in r.slots().iter().enumerate() {
            let mask = s.mask.as_ref().unwrap();
            let n = s.base.len();
            assert_eq!(
                seedswarm::zo::structure::count(mask),
                n.div_ceil(4),
                "tensor {t}"
            );
            let mut clean = vec![0f32; n];
            let mut w = vec![0f32; n];
            r.materialize(t, &mut clean);
            r.materialize_perturbed(t, &mut w, &seed, 1e-2);
            let mut largest_in = 0f32;
            let mut smallest_out = f32::INFINITY;
            for i in 0..n {
                let on = mask[i / 32] & (1 << (i % 32)) != 0;
                if on {
                    largest_in = largest_in.max(s.base[i].abs());
                    assert_ne!(w[i], clean[i], "{kind:?} tensor {t} element {i}");
                } else {
                    smallest_out = smallest_out.min(s.base[i].abs());
                    assert_eq!(s.delta[i], 0, "{kind:?} tensor {t} element {i}");
                    assert_eq!(w[i], clean[i]);
                }
            }
            assert!(largest_in <= smallest_out, "tensor {t}");
        }
        assert!(r.slots()[0].delta.iter().any(|&d| d != 0));
        assert_eq!(r.num_perturbable(), 250 + 9 + 17_500);
    }
}

#[test]
fn golden_structured_contributions() {
    // Pinned: every node must compute these bits for the same records.
    let cases = [
        (
            Structure::Layers { layers: 2 },
            "261e773afd9f272caef0ca78b90a0520a192d93067b07b6a565450f00093c043",
        ),
        (
            Structure::Magnitude { density: 0.1 },
            "8774c6173ac0a7bc4611c39843454ab4c03a70c7fbdd688786a3510fab64ca94",
        ),
    ];
    for (structure, digest) in cases {
        let mut r = replica_with(Kind::Rademacher, structure);
        let updates = four_updates();
        r.apply(&updates).unwrap();
        assert_eq!(r.digest(), digest, "{structure:?}");
        // Retracting them restores the base exactly.
        r.retract_with(&updates, &|_, _| None).unwrap();
        assert!(r.slots().iter().all(|s| s.delta.iter().all(|&d| d == 0)));
    }
}

#[test]
fn golden_delta_contributions() {
    // Pinned integer contributions of a delta update, norm clip included.
    let mut r = replica(Kind::Rademacher);
    let o = Origin([1; 32]);
    let p = payload_for(&o, 0); // scale 0.5: clipped to norm 1
    let d = fedzip::decode(&p, 100_000).unwrap();
    let c = r.delta_contributions(&d).unwrap();
    // The clip: the norm of the decoded values, scaled to 1.
    let norm: f64 = d
        .tensors
        .iter()
        .flat_map(|t| t.values().map(|(_, v)| f64::from(v) * f64::from(v)))
        .sum::<f64>()
        .sqrt();
    assert!(norm > 1.0, "this delta exercises the clip ({norm})");
    for (ci, t) in c.iter().zip(&d.tensors) {
        let unit = 2f64.powi(r.slots()[ci.slot].unit_exp);
        for (k, &v) in t.centroids.iter().enumerate() {
            let want = (f64::from(v) / norm / unit).round_ties_even() as i32;
            assert_eq!(ci.values[k], want);
        }
    }
    r.apply_with(
        &[Update {
            origin: o,
            seq: 0,
            code: DELTA,
        }],
        &|_, _| Some(p.clone()),
    )
    .unwrap();
    let a = &r.slots()[0].delta;
    let nonzero = a.iter().filter(|&&v| v != 0).count();
    assert_eq!(nonzero, 100, "top-z 0.1 of 1000");
    let values: Vec<Vec<i32>> = c.iter().map(|x| x.values.clone()).collect();
    assert_eq!(values, GOLDEN_VALUES);
    assert_eq!(r.digest(), GOLDEN_DIGEST);
    // A missing payload is an error and changes nothing.
    let before = r.digest();
    let err = r
        .apply_with(
            &[Update {
                origin: o,
                seq: 1,
                code: DELTA,
            }],
            &|_, _| None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("payload missing"), "{err}");
    assert_eq!(r.digest(), before);
    assert_eq!(r.applied(), 1);
}

const GOLDEN_VALUES: &[&[i32]] = &[&[-822438, -863, 822817], &[-844051, 432, 812982]];
const GOLDEN_DIGEST: &str = "9e2e1dfa3e20ebf16d97b3ab0cd101c841ad03bb6edf3071a94d7b6ef916aed1";
