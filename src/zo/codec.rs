//! The one-byte gradient codec (DESIGN §2).
//!
//! A code is a sign bit (`0x80`) and a 7-bit magnitude index; index 0 is
//! exactly zero. Magnitude `m ∈ 1..=127` is `clip · 2^((m − 127)/s)` with `s`
//! steps per octave (a power of two). The 256-entry table is built only from
//! exactly rounded IEEE operations (`sqrt`, `*`, `/`, scaling by powers of two),
//! never the platform's `exp`/`ln`, so every node decodes to the same bits.
//! Encoding clips at `clip` and rounds between neighbouring grid points either
//! to the nearest or stochastically (unbiased) with a uniform drawn from the
//! update's seed, so an origin's encoding is reproducible.

use crate::zo::perturb::{uniform, CODEC_STREAM};
use crate::zo::seed::Seed;
use serde::{Deserialize, Serialize};

/// The code that marks a delta update (a compressed sparse delta,
/// [`crate::delta::fedzip`]) in an origin's stream of codes: "negative zero" (sign
/// bit, magnitude index 0). [`Codec::encode`] never produces it (a zero
/// magnitude is always encoded as `0`), and as a one-byte update it decodes
/// to exactly zero, so it contributes nothing.
pub const DELTA: u8 = 0x80;

/// Codec settings, part of the run manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Largest magnitude a byte can carry; bounds what any one update can do.
    pub clip: f64,
    /// Grid points per factor of two (1, 2, 4, 8, 16 or 32).
    #[serde(default = "default_steps")]
    pub steps_per_octave: u32,
    /// Unbiased stochastic rounding between grid points (seeded by the update).
    #[serde(default = "default_true")]
    pub stochastic: bool,
}

fn default_steps() -> u32 {
    8
}
fn default_true() -> bool {
    true
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            clip: 8.0,
            steps_per_octave: default_steps(),
            stochastic: true,
        }
    }
}

impl Settings {
    /// Checks the values; the error names the offending field.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(format!(
                "{prefix}.clip must be a positive finite number, got {}",
                self.clip
            ));
        }
        if !matches!(self.steps_per_octave, 1 | 2 | 4 | 8 | 16 | 32) {
            return Err(format!(
                "{prefix}.steps_per_octave must be one of 1, 2, 4, 8, 16, 32, got {}",
                self.steps_per_octave
            ));
        }
        Ok(())
    }
}

/// A built codec: the decode table plus rounding mode.
#[derive(Clone, Debug)]
pub struct Codec {
    /// `mag[m]` for `m ∈ 0..128`; `mag[0] = 0`.
    mag: [f64; 128],
    stochastic: bool,
}

impl Codec {
    /// Builds the table. `settings` must have passed [`Settings::validate`].
    pub fn new(settings: &Settings) -> Self {
        let s = settings.steps_per_octave.max(1);
        // r = 2^(1/s) by repeated square roots (each exactly rounded).
        let mut r = 2.0f64;
        let mut k = s;
        while k > 1 {
            r = r.sqrt();
            k /= 2;
        }
        let mut rpow = vec![1.0f64; s as usize];
        for f in 1..s as usize {
            rpow[f] = rpow[f - 1] * r;
        }
        let mut mag = [0f64; 128];
        for (m, slot) in mag.iter_mut().enumerate().skip(1) {
            let below = 127 - m as u32;
            let (q, f) = (below / s, below % s);
            *slot = (settings.clip / rpow[f as usize]) * pow2(-(q as i32));
        }
        Self {
            mag,
            stochastic: settings.stochastic,
        }
    }

    /// The value of a code.
    #[inline]
    pub fn decode(&self, code: u8) -> f64 {
        let m = self.mag[(code & 0x7f) as usize];
        if code & 0x80 != 0 && m != 0.0 {
            -m
        } else {
            m
        }
    }

    /// The whole decode table, index = code.
    pub fn table(&self) -> [f64; 256] {
        let mut t = [0f64; 256];
        for (c, v) in t.iter_mut().enumerate() {
            *v = self.decode(c as u8);
        }
        t
    }

    /// Encodes `g`; `seed` drives stochastic rounding. NaN encodes as 0.
    pub fn encode(&self, g: f64, seed: &Seed) -> u8 {
        let u = if self.stochastic {
            uniform(seed, CODEC_STREAM, 0)
        } else {
            0.5
        };
        self.encode_with(g, u)
    }

    /// Encodes `g` with rounding threshold `u ∈ [0, 1)` (0.5 = nearest).
    pub fn encode_with(&self, g: f64, u: f64) -> u8 {
        if g.is_nan() {
            return 0;
        }
        let a = g.abs().min(self.mag[127]);
        // Largest m with mag[m] <= a.
        let m = self.mag.partition_point(|&v| v <= a) - 1;
        let m = if m == 127 || self.mag[m] == a {
            m
        } else {
            let (lo, hi) = (self.mag[m], self.mag[m + 1]);
            let p = (a - lo) / (hi - lo);
            if self.stochastic {
                if u < p {
                    m + 1
                } else {
                    m
                }
            } else if p >= 0.5 {
                m + 1
            } else {
                m
            }
        };
        let sign = if g < 0.0 && m > 0 { 0x80 } else { 0 };
        m as u8 | sign
    }
}

/// `2^e` exactly, for |e| < 1000.
pub fn pow2(e: i32) -> f64 {
    f64::from_bits(((1023 + e as i64) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zo::seed::{derive, Origin, RunId};

    fn codec(stochastic: bool) -> Codec {
        Codec::new(&Settings {
            clip: 8.0,
            steps_per_octave: 8,
            stochastic,
        })
    }

    #[test]
    fn table_is_monotone_and_symmetric() {
        let c = codec(true);
        let t = c.table();
        assert_eq!(t[0], 0.0);
        assert_eq!(t[0x80], 0.0);
        for m in 1..128 {
            assert!(t[m] > t[m - 1], "monotone at {m}");
            assert_eq!(t[m | 0x80], -t[m], "symmetric at {m}");
            assert!(t[m].is_finite());
        }
        assert_eq!(t[127], 8.0);
        assert_eq!(t[127 - 8], 4.0);
    }

    #[test]
    fn golden_table_bits() {
        let t = codec(true).table();
        let picks: Vec<u64> = [1usize, 2, 64, 100, 126, 127, 0x80 | 3]
            .iter()
            .map(|&c| t[c].to_bits())
            .collect();
        // Cross-checked with CPython floats (IEEE binary64) doing the same operations.
        assert_eq!(
            picks,
            [
                4549487736736823061,
                4549972470151916071,
                4585072031254270330,
                4605120719643910363,
                4619945656561935495,
                4620693217682128896,
                13773873112544132044
            ]
        );
    }

    #[test]
    fn encode_decode_idempotent_on_grid() {
        for stochastic in [false, true] {
            let c = codec(stochastic);
            for code in 0..=255u8 {
                let v = c.decode(code);
                for u in [0.0, 0.3, 0.999] {
                    let back = c.encode_with(v, u);
                    let expect = if code == 0x80 { 0 } else { code };
                    assert_eq!(back, expect, "code {code:#x} u {u}");
                }
            }
        }
    }

    #[test]
    fn clips_and_handles_nan() {
        let c = codec(false);
        assert_eq!(c.encode_with(1e9, 0.5), 127);
        assert_eq!(c.encode_with(-1e9, 0.5), 0xff);
        assert_eq!(c.encode_with(f64::NAN, 0.5), 0);
        assert_eq!(c.encode_with(0.0, 0.5), 0);
        assert_eq!(c.encode_with(f64::INFINITY, 0.5), 127);
    }

    #[test]
    fn encode_never_produces_the_delta_marker() {
        assert_eq!(codec(true).decode(DELTA), 0.0);
        let run = RunId([5; 32]);
        let tiny = [
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            -5e-324,
            -1e-300,
            -1e-6,
            f64::NAN,
            -f64::NAN,
            f64::NEG_INFINITY,
        ];
        for stochastic in [false, true] {
            let c = codec(stochastic);
            let below = c.decode(1);
            let mut gs: Vec<f64> = tiny.to_vec();
            // Around and below the smallest magnitude, both signs.
            for k in 0..=64 {
                let g = below * f64::from(k) / 32.0;
                gs.extend([g, -g]);
            }
            for (i, &g) in gs.iter().enumerate() {
                for u in [0.0, 0.25, 0.5, 0.999_999] {
                    assert_ne!(c.encode_with(g, u), DELTA, "g {g} u {u}");
                }
                let seed = derive(&run, &Origin([2; 32]), i as u64);
                assert_ne!(c.encode(g, &seed), DELTA, "g {g}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn encode_never_produces_delta(g in proptest::num::f64::ANY, u in 0.0f64..1.0) {
            for stochastic in [false, true] {
                proptest::prop_assert_ne!(codec(stochastic).encode_with(g, u), DELTA);
            }
        }
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let c = codec(true);
        let run = RunId([3; 32]);
        for &g in &[0.37f64, -1.234, 5.5e-5] {
            let n = 20_000u64;
            let mean: f64 = (0..n)
                .map(|seq| c.decode(c.encode(g, &derive(&run, &Origin([1; 32]), seq))))
                .sum::<f64>()
                / n as f64;
            let rel = ((mean - g) / g).abs();
            assert!(rel < 0.03, "g {g} mean {mean}");
        }
    }
}
