//! Perturbation vectors `z`, regenerated from an update's [`Seed`].
//!
//! Tensor `t` (its index in the trainable set) draws from ChaCha8 stream `t`
//! keyed by the seed, so any slice of any tensor's `z` can be regenerated on
//! its own by seeking the stream:
//! - Rademacher: element `i` is bit `i % 32` (LSB first) of little-endian word
//!   `i / 32`; a set bit is `+1`, a clear bit `−1`.
//! - Gaussian: element `i` uses words `2i` and `2i + 1` through Box–Muller in
//!   f64 with the pure-Rust `libm` (never the platform libm), then rounds to f32.
//!
//! Streams at the top of the 64-bit range are reserved for rounding decisions
//! (see [`uniform`]).

use crate::zo::seed::Seed;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Stream used for the stochastic rounding of the one-byte code.
pub const CODEC_STREAM: u64 = u64::MAX;
/// Stream used for the stochastic rounding of per-tensor integer contributions.
pub const ROUNDING_STREAM: u64 = u64::MAX - 1;

/// Distribution of `z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// ±1 with equal probability (exact, fastest; classic SPSA).
    #[default]
    Rademacher,
    /// Standard normal through a platform-independent Box–Muller transform.
    Gaussian,
}

/// A ChaCha8 stream of update `seed`, positioned at 32-bit word `word`.
pub fn stream(seed: &Seed, stream: u64, word: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::from_seed(seed.0);
    rng.set_stream(stream);
    rng.set_word_pos(u128::from(word));
    rng
}

/// Fills `out` with little-endian words from `rng`.
#[inline]
pub fn fill_words(rng: &mut ChaCha8Rng, out: &mut [u32]) {
    let mut bytes = [0u8; 1024];
    for chunk in out.chunks_mut(256) {
        let b = &mut bytes[..chunk.len() * 4];
        rng.fill_bytes(b);
        for (w, c) in chunk.iter_mut().zip(b.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
}

/// A uniform in `[0, 1)` with 53 random bits: words `2k`, `2k+1` of `stream_id`.
pub fn uniform(seed: &Seed, stream_id: u64, k: u64) -> f64 {
    let mut rng = stream(seed, stream_id, 2 * k);
    let lo = u64::from(rng.next_u32());
    let hi = u64::from(rng.next_u32());
    let bits = ((hi << 32) | lo) >> 11;
    bits as f64 * (1.0 / (1u64 << 53) as f64)
}

/// One standard normal from two words (Box–Muller, cosine branch).
#[inline]
pub fn gaussian(w0: u32, w1: u32) -> f32 {
    // u1 in (0, 1], u2 in [0, 1): both exactly representable.
    let u1 = (f64::from(w0 >> 8) + 1.0) * (1.0 / 16_777_216.0);
    let u2 = f64::from(w1 >> 8) * (1.0 / 16_777_216.0);
    let r = (-2.0 * libm::log(u1)).sqrt();
    (r * libm::cos(std::f64::consts::TAU * u2)) as f32
}

/// Writes `z[start .. start + out.len()]` of tensor `tensor` into `out`.
pub fn fill(kind: Kind, seed: &Seed, tensor: u64, start: usize, out: &mut [f32]) {
    let mut words = vec![0u32; 512];
    match kind {
        Kind::Rademacher => {
            let mut i = start;
            let end = start + out.len();
            let mut rng = stream(seed, tensor, (start / 32) as u64);
            let mut o = 0;
            while i < end {
                let n_words = ((end - (i / 32) * 32).div_ceil(32)).min(words.len());
                fill_words(&mut rng, &mut words[..n_words]);
                for &w in &words[..n_words] {
                    let base = (i / 32) * 32;
                    let lo = i - base;
                    let hi = (end - base).min(32);
                    for b in lo..hi {
                        out[o] = if (w >> b) & 1 == 1 { 1.0 } else { -1.0 };
                        o += 1;
                    }
                    i = base + hi;
                }
            }
        }
        Kind::Gaussian => {
            let mut rng = stream(seed, tensor, 2 * start as u64);
            for chunk in out.chunks_mut(words.len() / 2) {
                let w = &mut words[..chunk.len() * 2];
                fill_words(&mut rng, w);
                for (z, pair) in chunk.iter_mut().zip(w.chunks_exact(2)) {
                    *z = gaussian(pair[0], pair[1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zo::seed::{derive, Origin, RunId};

    fn seed() -> Seed {
        derive(&RunId([7; 32]), &Origin([9; 32]), 42)
    }

    #[test]
    fn golden_rademacher() {
        let mut z = vec![0f32; 16];
        fill(Kind::Rademacher, &seed(), 0, 0, &mut z);
        let signs: String = z.iter().map(|&v| if v > 0.0 { '+' } else { '-' }).collect();
        assert_eq!(signs, "-++---++--+--++-");
        fill(Kind::Rademacher, &seed(), 1, 0, &mut z);
        let signs1: String = z.iter().map(|&v| if v > 0.0 { '+' } else { '-' }).collect();
        assert_ne!(signs, signs1, "tensors must use independent streams");
    }

    #[test]
    fn golden_gaussian() {
        let mut z = vec![0f32; 4];
        fill(Kind::Gaussian, &seed(), 3, 0, &mut z);
        let bits: Vec<u32> = z.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, [3203130269, 3140691962, 3217585130, 3204302144]);
    }

    #[test]
    fn gaussian_moments() {
        let mut z = vec![0f32; 200_000];
        fill(Kind::Gaussian, &seed(), 0, 0, &mut z);
        let n = z.len() as f64;
        let mean = z.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = z
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn slices_match_full_regeneration() {
        for kind in [Kind::Rademacher, Kind::Gaussian] {
            let mut full = vec![0f32; 5000];
            fill(kind, &seed(), 5, 0, &mut full);
            for &(start, len) in &[
                (0, 1),
                (1, 31),
                (31, 2),
                (32, 32),
                (33, 1000),
                (4095, 905),
                (4999, 1),
            ] {
                let mut part = vec![0f32; len];
                fill(kind, &seed(), 5, start, &mut part);
                assert_eq!(
                    &full[start..start + len],
                    &part[..],
                    "{kind:?} {start}+{len}"
                );
            }
        }
    }

    #[test]
    fn rademacher_is_balanced() {
        let mut z = vec![0f32; 100_000];
        fill(Kind::Rademacher, &seed(), 2, 0, &mut z);
        let sum: f32 = z.iter().sum();
        assert!(sum.abs() < 1500.0, "sum {sum}");
    }
}
