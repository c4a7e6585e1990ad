//! Re-checking one-byte updates: every code is a claim ("on my sample, at
//! this state, the projected gradient was g") that anyone holding the base
//! model can recompute with two forwards. The sample of update `(origin,
//! seq)` is a function of the manifest and `(origin, seq)` alone
//! ([`Data::train_batch`]); the state is the replica the origin stepped on.
//!
//! [`judge`] ([`crate::zo::check`]) compares a published code with a
//! recomputed gradient.
//!
//! [`verify`] rechecks a finished run offline (`seedswarm verify`). In a
//! swarm an update's state is its origin's version vector when it stepped,
//! which its gossip batch carries ([`crate::crdt::basis`]) and a node keeps
//! in `bases.log`; in a single-origin run (`seedswarm train`) it is the
//! origin's own prefix. Updates whose state is not known are counted as
//! unverifiable, never checked against a guessed state.

use super::*;
pub use crate::zo::check::{judge, sampled, Tally, Verdict, DEFAULT_TOLERANCE};
use serde::Serialize;
use std::collections::BTreeMap;

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

/// The checks of one origin.
#[derive(Clone, Debug, Serialize)]
pub struct OriginChecks {
    pub origin: String,
    /// Its updates in the log.
    pub updates: u64,
    #[serde(flatten)]
    pub tally: Tally,
    pub flagged: bool,
    /// Sampled updates whose state is not known here (no bases kept for
    /// them) or not reachable (it names updates this log lacks).
    pub unverifiable: u64,
    pub checks: Vec<Check>,
}

/// JSON summary of `seedswarm verify`.
#[derive(Clone, Debug, Serialize)]
pub struct VerifySummary {
    pub run_id: String,
    pub fraction: f64,
    /// Loss noise tolerated (absolute, loss units) and the floor it gives
    /// in gradient units (`tolerance / 2ε`).
    pub tolerance: f64,
    pub floor: f64,
    /// Per origin checked, in origin order.
    pub origins: Vec<OriginChecks>,
    /// Origins flagged (hex).
    pub flagged: Vec<String>,
    pub wall_seconds: f64,
}

impl VerifySummary {
    /// What `seedswarm verify` prints: a line per origin, then the totals.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for o in &self.origins {
            out.push_str(&format!(
                "origin {}: {} of {} updates rechecked: {} agree, {} disagree, {} inconclusive (|g| <= {:.2e}), {} without a known state; disagreement {:.1}%{}\n",
                &o.origin[..16],
                o.tally.checked,
                o.updates,
                o.tally.agreed,
                o.tally.disagreed,
                o.tally.inconclusive,
                self.floor,
                o.unverifiable,
                100.0 * o.tally.disagreement_rate(),
                match o.tally.flagged_after {
                    Some(n) => format!(", FLAGGED after {n} checks"),
                    None => String::new(),
                },
            ));
        }
        out.push_str(&format!(
            "{} origin(s) rechecked, {} flagged, {:.1}s\n",
            self.origins.len(),
            self.flagged.len(),
            self.wall_seconds
        ));
        out
    }
}

/// Rechecks `fraction` of the one-byte updates of the log in `data_dir`
/// (of `origin`, or of every origin; delta updates are not checked), each
/// on the state it was computed on: the bases its batch carried, which a
/// node keeps in `bases.log` (in a single-origin log, its own prefix). The
/// replica is rebuilt once; each check subtracts what lies past its state,
/// recomputes, and adds it back. `tolerance` is the loss noise tolerated;
/// `key` picks the sample.
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
    if vv.is_empty() {
        return Err(Error::Mismatch(format!(
            "{} holds no updates",
            data_dir.display()
        )));
    }
    let origins: Vec<Origin> = match origin {
        Some(o) if !vv.contains_key(&o) => {
            return Err(Error::Mismatch(format!(
                "origin {} has no updates in {}",
                o.to_hex(),
                data_dir.display()
            )))
        }
        Some(o) => vec![o],
        None => vv.keys().copied().collect(),
    };
    let path = data_dir.join("bases.log");
    let stored = crate::crdt::basis::BasesFile::read(&path, &trainer.run())
        .map_err(|source| log::Error::Io { path, source })?;
    let known = crate::crdt::basis::Prefixes::of(vv.keys());
    let resolve = |p: &[u8; crate::crdt::basis::PREFIX]| known.resolve(p);
    // Per origin: (first seq, updates, decoded bases), by first seq.
    let mut bases: BTreeMap<Origin, BTreeMap<u64, (u32, crate::crdt::basis::Bases)>> =
        BTreeMap::new();
    for r in stored {
        if let Ok(b) = crate::crdt::basis::Bases::decode(&r.bases, r.n as usize, vv.len() + 1) {
            bases
                .entry(r.origin)
                .or_default()
                .insert(r.first_seq, (r.n, b));
        }
    }
    let single = vv.len() == 1;
    let basis_of = |o: &Origin, seq: u64| -> Option<VersionVector> {
        let mut target = if single {
            VersionVector::new()
        } else {
            let (&first, (n, b)) = bases.get(o)?.range(..=seq).next_back()?;
            if seq >= first + u64::from(*n) {
                return None;
            }
            b.at((seq - first) as usize, &resolve)?
        };
        target.insert(*o, seq);
        Some(target)
    };
    trainer.replay(&log)?;
    let data = build_data(&cfg.run)?;
    let codec = trainer.replica().rules().codec.clone();
    let floor = tolerance / (2.0 * cfg.run.eps);
    let mut out = Vec::new();
    for o in origins {
        let n = vv[&o];
        let mut c = OriginChecks {
            origin: o.to_hex(),
            updates: n,
            tally: Tally::default(),
            flagged: false,
            unverifiable: 0,
            checks: Vec::new(),
        };
        for seq in 0..n {
            let code = log.range(&o, seq, seq + 1)[0];
            if code == 0 || code == log::DELTA || !sampled(key, &o, seq, fraction) {
                continue;
            }
            let Some(target) = basis_of(&o, seq) else {
                c.unverifiable += 1;
                continue;
            };
            if target
                .iter()
                .any(|(p, &t)| vv.get(p).copied().unwrap_or(0) < t)
            {
                c.unverifiable += 1;
                continue;
            }
            let back: Vec<Segment> = vv
                .iter()
                .filter_map(|(p, &have)| {
                    let t = target.get(p).copied().unwrap_or(0);
                    (have > t).then(|| log.segment(p, t, have))
                })
                .collect();
            let batch = data.train_batch(&o, seq, cfg.run.batch_size);
            let grad = trainer.recompute_at(&target, &back, &o, seq, &batch)?;
            let verdict = judge(&codec, cfg.run.codec.steps_per_octave, code, grad, floor);
            c.tally.add(verdict);
            c.checks.push(Check {
                seq,
                code,
                value: codec.decode(code),
                grad,
                verdict,
            });
        }
        c.flagged = c.tally.flagged_after.is_some();
        out.push(c);
    }
    Ok(VerifySummary {
        run_id: trainer.run().to_hex(),
        fraction,
        tolerance,
        floor,
        flagged: out
            .iter()
            .filter(|c| c.flagged)
            .map(|c| c.origin.clone())
            .collect(),
        origins: out,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}
