//! Unit tests of the trainer: step scaling, replay chunking, rechecking on
//! an earlier state.

use super::*;
use std::time::Duration;

#[test]
fn a_scaled_step_publishes_the_scaled_gradient_and_nothing_else_changes() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml"),
    )
    .unwrap();
    let cfg = crate::config::Config::parse(&text, "demo.toml").unwrap();
    let origin = Origin([3; 32]);
    let data = build_data(&cfg.run).unwrap();
    let batch = data.train_batch(&origin, 0, cfg.run.batch_size);
    let mut full = Trainer::new(&cfg, origin).unwrap();
    let mut quarter = Trainer::new(&cfg, origin).unwrap();
    quarter.set_step_scale(0.25);
    let (a, b) = (full.step(&batch).unwrap(), quarter.step(&batch).unwrap());
    // Same state, same sample, same perturbation: the same gradient.
    assert_eq!(a.grad, b.grad);
    assert_ne!(a.grad, 0.0);
    let codec = &full.replica().rules().codec;
    let (ga, gb) = (codec.decode(a.code), codec.decode(b.code));
    // A quarter as large, within the codec's resolution (8 steps per
    // octave, stochastic rounding: at most one step either way for each).
    let ratio = gb / ga;
    assert!((0.25 / 1.2..=0.25 * 1.2).contains(&ratio), "{ga} {gb}");
    // The byte alone is the contribution: applying it anywhere gives
    // the replica the scaled step.
    assert_eq!(quarter.replica().version_vector().get(&origin), Some(&1));
    // Out-of-range scales clamp to (0, 1].
    quarter.set_step_scale(7.0);
    assert_eq!(quarter.step_scale, 1.0);
    quarter.set_step_scale(f64::NAN);
    assert_eq!(quarter.step_scale, 1.0);
}

#[test]
fn replay_chunks_shrink_with_the_model() {
    assert_eq!(replay_chunk(0), 4096);
    assert_eq!(replay_chunk(10_000), 4096);
    assert_eq!(replay_chunk(1 << 26), 16);
    assert_eq!(replay_chunk(usize::MAX), 1);
}

#[test]
fn replay_reports_every_tenth_or_after_five_seconds() {
    let second = Duration::from_secs(1);
    let due: Vec<usize> = (1..=100)
        .filter(|&d| replay_report_due(d, 100, second))
        .collect();
    assert_eq!(due, (1..=10).map(|k| 10 * k).collect::<Vec<_>>());
    // Fewer than ten chunks: every chunk.
    assert!((1..=3).all(|d| replay_report_due(d, 3, second)));
    // A fast replay: no line in between.
    let quick = Duration::from_millis(10);
    assert!((1..=100).all(|d| !replay_report_due(d, 100, quick)));
    // A slow chunk reports whatever its number.
    assert!(replay_report_due(7, 100, Duration::from_secs(5)));
    assert!(!replay_report_due(7, 100, Duration::from_secs(4)));
}

/// Rechecking on an earlier state: subtracting the updates past it and
/// recomputing gives exactly what a replica at that state computes, and
/// leaves the replica bit for bit as it was.
#[test]
fn recompute_at_an_earlier_state_matches_and_restores() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo.toml")).unwrap();
    let cfg = crate::config::Config::parse(&text, "demo.toml").unwrap();
    let (a, b) = (Origin([1; 32]), Origin([2; 32]));
    let data = build_data(&cfg.run).unwrap();
    let mut t = Trainer::new(&cfg, a).unwrap();
    let mut early = Trainer::new(&cfg, a).unwrap();
    let codes_a: Vec<u8> = (0..6).map(|i| 3 + i).collect();
    let codes_b: Vec<u8> = (0..4).map(|i| 0x83 + i).collect();
    let seg_a = Segment::new(a, 0, codes_a.clone(), Vec::new());
    let seg_b = Segment::new(b, 0, codes_b.clone(), Vec::new());
    t.apply(&seg_a).unwrap();
    t.apply(&seg_b).unwrap();
    let before = t.replica().digest();
    // The state {a: 2, b: 1}.
    early
        .apply(&Segment::new(a, 0, codes_a[..2].to_vec(), Vec::new()))
        .unwrap();
    early
        .apply(&Segment::new(b, 0, codes_b[..1].to_vec(), Vec::new()))
        .unwrap();
    let target = early.replica().version_vector().clone();
    let batch = data.train_batch(&b, 1, cfg.run.batch_size);
    let want = early.recompute(&b, 1, &batch).unwrap();
    let back = vec![
        Segment::new(a, 2, codes_a[2..].to_vec(), Vec::new()),
        Segment::new(b, 1, codes_b[1..].to_vec(), Vec::new()),
    ];
    let got = t.recompute_at(&target, &back, &b, 1, &batch).unwrap();
    assert_eq!(got.to_bits(), want.to_bits());
    assert_eq!(t.replica().digest(), before);
    // Subtracting too little does not reach the state: an error, and
    // still nothing changed.
    assert!(t.recompute_at(&target, &back[..1], &b, 1, &batch).is_err());
    assert_eq!(t.replica().digest(), before);
}

#[test]
fn structured_steps_leave_the_model_at_the_replica() {
    use crate::zo::structure::Structure;
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml"),
    )
    .unwrap();
    for structure in [
        Structure::Layers { layers: 2 },
        Structure::Magnitude { density: 0.2 },
    ] {
        let mut cfg = crate::config::Config::parse(&text, "demo.toml").unwrap();
        cfg.run.structure = structure;
        let origin = Origin([3; 32]);
        let data = build_data(&cfg.run).unwrap();
        let mut t = Trainer::new(&cfg, origin).unwrap();
        let mut steps = Vec::new();
        for seq in 0..8 {
            let batch = data.train_batch(&origin, seq, cfg.run.batch_size);
            steps.push(t.step(&batch).unwrap());
            // Skipped tensors were never left perturbed: the model holds
            // exactly the replica's weights.
            for (k, &i) in t.slots.iter().enumerate() {
                let mut want = vec![0f32; t.replica.slots()[k].base.len()];
                t.replica.materialize(k, &mut want);
                assert_eq!(t.model.read(i).unwrap(), want, "{structure:?} tensor {k}");
            }
        }
        assert!(steps.iter().all(|s| s.grad.is_finite()));
        assert!(steps.iter().any(|s| s.grad != 0.0));
        // A peer recomputing the last update on the state before it gets
        // the same gradient (the same elements perturbed the same way).
        let mut peer = Trainer::new(&cfg, Origin([4; 32])).unwrap();
        let earlier: Vec<Update> = steps[..7]
            .iter()
            .map(|s| Update {
                origin,
                seq: s.seq,
                code: s.code,
            })
            .collect();
        peer.replica.apply(&earlier).unwrap();
        peer.materialize().unwrap();
        let batch = data.train_batch(&origin, 7, cfg.run.batch_size);
        assert_eq!(peer.recompute(&origin, 7, &batch).unwrap(), steps[7].grad);
    }
}
