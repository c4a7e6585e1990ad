//! Judging a published one-byte code against a recomputed gradient, and
//! choosing which updates to recheck.
//!
//! The origin multiplies its gradient by a step scale in `(0, 1]` that depends
//! on how many nodes train (`node.step_peers`), so only the sign and an
//! upper bound on the magnitude are checkable: stochastic rounding moves a
//! value at most one grid step up, so an honest code's magnitude is at most
//! `max(|g| + floor, smallest) · 2^(1/steps_per_octave)`. A gradient within
//! `floor` of zero (the forward's numeric noise between machines, thread
//! counts and batch packings, in gradient units) has no checkable sign.

use crate::zo::codec;
use crate::zo::seed::Origin;
use serde::{Deserialize, Serialize};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The code is what an honest origin could have published.
    Agree,
    /// The sign is wrong, or the magnitude exceeds what the gradient allows.
    Disagree,
    /// The gradient is within the noise floor of zero: the sign cannot be told.
    Inconclusive,
}

/// Judges `code` against the recomputed gradient `g` (see the module docs);
/// `floor` is the numeric noise in gradient units.
pub fn judge(codec: &codec::Codec, steps_per_octave: u32, code: u8, g: f64, floor: f64) -> Verdict {
    if !g.is_finite() {
        return Verdict::Inconclusive;
    }
    let v = codec.decode(code);
    let step = 2f64.powf(1.0 / f64::from(steps_per_octave.max(1)));
    let smallest = codec.decode(1);
    let bound = (g.abs() + floor).max(smallest) * step * (1.0 + 1e-9);
    if v.abs() > bound {
        return Verdict::Disagree;
    }
    if v == 0.0 {
        return Verdict::Agree;
    }
    if g.abs() <= floor {
        return Verdict::Inconclusive;
    }
    if (v > 0.0) == (g > 0.0) {
        Verdict::Agree
    } else {
        Verdict::Disagree
    }
}

/// Whether update `(origin, seq)` is among the checked fraction, keyed by
/// the checker's secret `key` so that an origin cannot tell which of its
/// updates will be checked.
pub fn sampled(key: &[u8; 32], origin: &Origin, seq: u64, fraction: f64) -> bool {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"seedswarm/check/1");
    h.update(&origin.0);
    h.update(&seq.to_le_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or([0; 8]));
    (x as f64) < fraction.clamp(0.0, 1.0) * (u64::MAX as f64)
}

/// Loss noise tolerated by default (absolute, loss units); see the README's
/// measurement of the noise between thread counts and batch packings.
pub const DEFAULT_TOLERANCE: f64 = 1e-4;

/// Flag an origin once at least this many conclusive checks disagreed...
pub const FLAG_MIN_DISAGREE: u64 = 5;
/// ...and they are more than this fraction of its conclusive checks.
pub const FLAG_RATE: f64 = 0.2;

/// Per-origin tally of checks.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    pub checked: u64,
    pub agreed: u64,
    pub disagreed: u64,
    pub inconclusive: u64,
    /// Checks made when the origin was first flagged (None: not flagged).
    pub flagged_after: Option<u64>,
}

impl Tally {
    /// Counts a verdict and flags when the rule says so.
    pub fn add(&mut self, v: Verdict) {
        self.checked += 1;
        match v {
            Verdict::Agree => self.agreed += 1,
            Verdict::Disagree => self.disagreed += 1,
            Verdict::Inconclusive => self.inconclusive += 1,
        }
        if self.flagged_after.is_none() && self.flag_due() {
            self.flagged_after = Some(self.checked);
        }
    }

    /// Disagreements over conclusive checks.
    pub fn disagreement_rate(&self) -> f64 {
        self.disagreed as f64 / (self.agreed + self.disagreed).max(1) as f64
    }

    fn flag_due(&self) -> bool {
        self.disagreed >= FLAG_MIN_DISAGREE && self.disagreement_rate() > FLAG_RATE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zo::seed::Seed;

    fn codec() -> (codec::Codec, u32) {
        let s = codec::Settings::default();
        (codec::Codec::new(&s), s.steps_per_octave)
    }

    #[test]
    fn honest_codes_agree_and_flipped_ones_do_not() {
        let (c, steps) = codec();
        let seed = Seed([9; 32]);
        for &g in &[0.003, -0.02, 0.5, -3.0, 7.9, 100.0] {
            for scale in [1.0, 0.5, 0.04] {
                let code = c.encode(g * scale, &seed);
                assert_eq!(
                    judge(&c, steps, code, g, 1e-4),
                    Verdict::Agree,
                    "{g} × {scale}"
                );
                let flipped = c.encode(-g * scale, &seed);
                if flipped != 0 {
                    assert_eq!(judge(&c, steps, flipped, g, 1e-4), Verdict::Disagree, "{g}");
                }
            }
        }
    }

    #[test]
    fn magnitudes_beyond_the_gradient_disagree_and_noise_is_inconclusive() {
        let (c, steps) = codec();
        let clip = c.encode(1e9, &Seed([1; 32]));
        assert_eq!(judge(&c, steps, clip, 0.01, 1e-4), Verdict::Disagree);
        // Every code at most one grid step above |g| agrees in sign.
        let g = 0.3;
        let up = c.encode_with(g * 1.08, 0.0);
        assert_eq!(judge(&c, steps, up, g, 0.0), Verdict::Agree);
        let far = c.encode_with(g * 1.3, 0.0);
        assert_eq!(judge(&c, steps, far, g, 0.0), Verdict::Disagree);
        // Within the floor: a small code of either sign is inconclusive; zero agrees.
        let small = c.encode_with(-1e-5, 0.0);
        assert_eq!(judge(&c, steps, small, 1e-5, 1e-4), Verdict::Inconclusive);
        assert_eq!(judge(&c, steps, 0, 0.4, 1e-4), Verdict::Agree);
        assert_eq!(
            judge(&c, steps, 0x05, f64::NAN, 1e-4),
            Verdict::Inconclusive
        );
    }

    #[test]
    fn sampling_hits_the_fraction_and_depends_on_the_key() {
        let o = Origin([3; 32]);
        let n = 20_000u64;
        let hits = (0..n).filter(|&s| sampled(&[1; 32], &o, s, 0.05)).count();
        assert!((800..1200).contains(&hits), "{hits}");
        let same = (0..n)
            .filter(|&s| sampled(&[1; 32], &o, s, 0.05) && sampled(&[2; 32], &o, s, 0.05))
            .count();
        assert!(same < 150, "{same}");
        assert!((0..100).all(|s| sampled(&[1; 32], &o, s, 1.0)));
    }

    #[test]
    fn flags_after_enough_disagreement_only() {
        let mut honest = Tally::default();
        for i in 0..1000 {
            honest.add(if i % 100 == 0 {
                Verdict::Disagree
            } else {
                Verdict::Agree
            });
        }
        assert_eq!(honest.flagged_after, None);
        let mut flipper = Tally::default();
        for _ in 0..10 {
            flipper.add(Verdict::Disagree);
        }
        assert_eq!(flipper.flagged_after, Some(FLAG_MIN_DISAGREE));
    }
}
