//! Re-checking one-byte updates: every code is a claim ("on my sample, at
//! this state, the projected gradient was g") that anyone holding the base
//! model can recompute with two forwards. The sample of update `(origin,
//! seq)` is a function of the manifest and `(origin, seq)` alone
//! ([`Data::train_batch`]); the state is the replica the origin stepped on.
//!
//! [`judge`] ([`crate::zo::check`]) compares a published code with a
//! recomputed gradient.
//!
//! [`verify`] rechecks a finished single-origin run offline (`seedswarm
//! verify`): there every update's state is the origin's own prefix. In a
//! swarm the state is the origin's version vector when it stepped, which
//! its gossip batches carry ([`crate::crdt::basis`]) and running nodes
//! spot-check (`node.verify_fraction`); the update log does not keep it,
//! so offline, swarm logs are refused with a message rather than checked
//! against a guessed state.

use super::*;
pub use crate::zo::check::{judge, sampled, Tally, Verdict, DEFAULT_TOLERANCE};
use serde::Serialize;

/// One recheck, for the summary.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub seq: u64,
    pub code: u8,
    /// The code's value.
    pub value: f64,
    /// The recomputed projected gradient.
    pub grad: f64,
    pub verdict: Verdict,
}

/// JSON summary of `seedswarm verify`.
#[derive(Clone, Debug, Serialize)]
pub struct VerifySummary {
    pub run_id: String,
    pub origin: String,
    pub updates: u64,
    pub fraction: f64,
    /// Loss noise tolerated (absolute, loss units) and the floor it gives
    /// in gradient units (`tolerance / 2ε`).
    pub tolerance: f64,
    pub floor: f64,
    #[serde(flatten)]
    pub tally: Tally,
    pub flagged: bool,
    pub checks: Vec<Check>,
    pub wall_seconds: f64,
}

/// Rechecks `fraction` of the one-byte updates of the single-origin log in
/// `data_dir` (delta updates are applied, not checked): replays the log in
/// order and, before each sampled update, recomputes its gradient on the
/// state it was made on. `tolerance` is the loss noise tolerated; `key`
/// picks the sample.
pub fn verify(
    cfg: &Config,
    data_dir: &Path,
    origin: Option<Origin>,
    fraction: f64,
    tolerance: f64,
    key: &[u8; 32],
) -> Result<VerifySummary, Error> {
    let start = Instant::now();
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(Error::Mismatch(format!(
            "--fraction must be in (0, 1], got {fraction}"
        )));
    }
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        return Err(Error::Mismatch(format!(
            "--tolerance must be a non-negative number, got {tolerance}"
        )));
    }
    let mut trainer = Trainer::new(cfg, local_origin(cfg))?;
    let (log, _) = open_log(data_dir, trainer.run())?;
    let vv = log.version_vector();
    let o = match (origin, vv.len()) {
        (Some(o), _) if !vv.contains_key(&o) => {
            return Err(Error::Mismatch(format!(
                "origin {} has no updates in {}",
                o.to_hex(),
                data_dir.display()
            )))
        }
        (_, 0) => {
            return Err(Error::Mismatch(format!(
                "{} holds no updates",
                data_dir.display()
            )))
        }
        (_, 1) => *vv.keys().next().expect("one origin"),
        (_, n) => {
            return Err(Error::Mismatch(format!(
                "{} holds updates of {n} origins; the state a swarm update was made on \
                 (its origin's version vector then) is not recorded yet, so only \
                 single-origin runs (seedswarm train) can be rechecked offline",
                data_dir.display()
            )))
        }
    };
    let data = build_data(&cfg.run)?;
    let codec = trainer.replica().rules().codec.clone();
    let floor = tolerance / (2.0 * cfg.run.eps);
    let n = vv[&o];
    let mut tally = Tally::default();
    let mut checks = Vec::new();
    let mut at = 0u64;
    let mut check = |trainer: &mut Trainer, seq: u64| -> Result<(), Error> {
        let code = log.range(&o, seq, seq + 1)[0];
        if code == log::DELTA {
            return Ok(());
        }
        let batch = data.train_batch(&o, seq, cfg.run.batch_size);
        let grad = trainer.recompute(&o, seq, &batch)?;
        let verdict = judge(&codec, cfg.run.codec.steps_per_octave, code, grad, floor);
        tally.add(verdict);
        checks.push(Check {
            seq,
            code,
            value: codec.decode(code),
            grad,
            verdict,
        });
        Ok(())
    };
    for seq in 0..n {
        if !sampled(key, &o, seq, fraction) {
            continue;
        }
        if seq > at {
            trainer.apply(&log.segment(&o, at, seq))?;
            at = seq;
        }
        check(&mut trainer, seq)?;
    }
    Ok(VerifySummary {
        run_id: trainer.run().to_hex(),
        origin: o.to_hex(),
        updates: n,
        fraction,
        tolerance,
        floor,
        flagged: tally.flagged_after.is_some(),
        tally,
        checks,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}
