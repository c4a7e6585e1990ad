//! Structured perturbations: which elements of the trainable set an update
//! perturbs (and so moves). Part of the run manifest; every peer derives the
//! same choice from the update's seed and the base weights `θ₀`, so the
//! contribution of an update stays a function of its record alone.
//!
//! - [`Structure::Dense`]: every trainable element (plain MeZO).
//! - [`Structure::Layers`] (LeZO, Wang et al. 2024): each update perturbs
//!   exactly `layers` of the trainable set's layer groups. A tensor whose
//!   name has a numeric component (`model.layers.7.mlp…` → 7) belongs to the
//!   group of the first such number; every other tensor is a group of its
//!   own. Group `g` gets the key `(hi << 32) | lo` from words `2g`, `2g + 1`
//!   of ChaCha8 stream [`LAYER_STREAM`] of the seed; the `layers` smallest
//!   keys (ties by group index) are chosen.
//! - [`Structure::Magnitude`] (Sparse MeZO, Liu et al. 2024): only the
//!   `ceil(density · n)` elements of smallest `|θ₀|` of each tensor (ties by
//!   index), a mask fixed for the run. Sparse MeZO thresholds the current
//!   weights; `θ₀` keeps the mask the same on every replica whatever it has
//!   applied.

use crate::zo::perturb::{fill_words, stream};
use crate::zo::seed::Seed;
use serde::{Deserialize, Serialize};

/// Stream that chooses the layer groups of an update.
pub const LAYER_STREAM: u64 = u64::MAX - 2;

/// Which elements an update perturbs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Structure {
    /// Every trainable element.
    #[default]
    Dense,
    /// `layers` layer groups per update, chosen by the update's seed.
    Layers { layers: u32 },
    /// The `density` fraction of smallest-magnitude base weights of each tensor.
    Magnitude { density: f64 },
}

impl Structure {
    /// True for [`Structure::Dense`] (left out of the canonical manifest).
    pub fn is_dense(&self) -> bool {
        *self == Structure::Dense
    }

    /// Checks the values; the error names the field.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        match *self {
            Structure::Dense => Ok(()),
            Structure::Layers { layers: 0 } => Err(format!("{prefix}.layers must be at least 1")),
            Structure::Layers { .. } => Ok(()),
            Structure::Magnitude { density } if !(density > 0.0 && density <= 1.0) => Err(format!(
                "{prefix}.density must be within (0, 1], got {density}"
            )),
            Structure::Magnitude { .. } => Ok(()),
        }
    }
}

/// The layer group of every tensor (by name, in order): groups are numbered
/// by first appearance.
pub fn groups<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let mut keys: Vec<String> = Vec::new();
    names
        .into_iter()
        .map(|name| {
            let key = name
                .split('.')
                .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .map_or_else(|| format!("tensor {name}"), |n| format!("layer {n}"));
            keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                keys.push(key);
                keys.len() - 1
            })
        })
        .collect()
}

/// Which of `n` groups update `seed` perturbs: exactly `min(layers, n)`.
pub fn chosen_groups(seed: &Seed, n: usize, layers: u32) -> Vec<bool> {
    let k = (layers as usize).min(n);
    let mut words = vec![0u32; 2 * n];
    fill_words(&mut stream(seed, LAYER_STREAM, 0), &mut words);
    let mut order: Vec<(u64, usize)> = words
        .chunks_exact(2)
        .enumerate()
        .map(|(g, w)| ((u64::from(w[1]) << 32) | u64::from(w[0]), g))
        .collect();
    order.sort_unstable();
    let mut out = vec![false; n];
    for &(_, g) in &order[..k] {
        out[g] = true;
    }
    out
}

/// The magnitude mask of one tensor as a bitset (bit `i % 32` of word
/// `i / 32`): the `ceil(density · n)` elements of smallest `|base|`, ties by
/// index (NaNs order last).
pub fn magnitude_mask(base: &[f32], density: f64) -> Vec<u32> {
    let n = base.len();
    let k = ((density * n as f64).ceil() as usize).clamp(usize::from(n > 0), n);
    let mut mask = vec![0u32; n.div_ceil(32)];
    if k == 0 {
        return mask;
    }
    // |x| as its bit pattern orders like the magnitude for every non-NaN x.
    let key = |x: f32| x.to_bits() & 0x7fff_ffff;
    let mut keys: Vec<u32> = base.iter().map(|&x| key(x)).collect();
    let (_, &mut threshold, _) = keys.select_nth_unstable(k - 1);
    let below = base.iter().filter(|&&x| key(x) < threshold).count();
    let mut ties = k - below;
    for (i, &x) in base.iter().enumerate() {
        let kx = key(x);
        if kx < threshold || (kx == threshold && ties > 0) {
            if kx == threshold {
                ties -= 1;
            }
            mask[i / 32] |= 1 << (i % 32);
        }
    }
    mask
}

/// Number of set bits of a mask.
pub fn count(mask: &[u32]) -> usize {
    mask.iter().map(|w| w.count_ones() as usize).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zo::seed::{derive, Origin, RunId};

    #[test]
    fn groups_follow_layer_numbers() {
        let names = [
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight",
            "model.layers.1.input_layernorm.weight",
            "model.layers.10.input_layernorm.weight",
            "model.norm.weight",
            "head.bias",
        ];
        assert_eq!(groups(names), [0, 1, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn golden_layer_choice() {
        let seed = derive(&RunId([7; 32]), &Origin([9; 32]), 42);
        let picked: Vec<usize> = chosen_groups(&seed, 31, 8)
            .iter()
            .enumerate()
            .filter_map(|(g, &on)| on.then_some(g))
            .collect();
        assert_eq!(picked, [6, 10, 12, 14, 15, 19, 21, 30]);
        let other = derive(&RunId([7; 32]), &Origin([9; 32]), 43);
        assert_ne!(chosen_groups(&seed, 31, 8), chosen_groups(&other, 31, 8));
        assert_eq!(chosen_groups(&seed, 3, 8), [true; 3]);
    }

    #[test]
    fn layer_choice_is_uniform() {
        let mut hits = [0u32; 10];
        for seq in 0..2000 {
            let seed = derive(&RunId([1; 32]), &Origin([2; 32]), seq);
            for (h, on) in hits.iter_mut().zip(chosen_groups(&seed, 10, 3)) {
                *h += u32::from(on);
            }
        }
        // Each group is chosen 3/10 of the time: 600 ± ~4 sigma.
        for h in hits {
            assert!((520..=680).contains(&h), "{hits:?}");
        }
    }

    #[test]
    fn golden_magnitude_mask() {
        let base = [0.5f32, -0.1, 0.1, 2.0, -0.0, 0.3, f32::NAN, 0.1, -3.0];
        // ceil(0.5 * 9) = 5: -0.0, -0.1, 0.1 (index 2), 0.1 (index 7), 0.3.
        let mask = magnitude_mask(&base, 0.5);
        assert_eq!(mask, [0b1011_0110]);
        assert_eq!(count(&magnitude_mask(&base, 1.0)), 9);
        assert_eq!(count(&magnitude_mask(&base, 1e-9)), 1);
        assert_eq!(magnitude_mask(&[], 0.5), Vec::<u32>::new());
        // Ties at the threshold go by index: the first two of four.
        assert_eq!(magnitude_mask(&[1.0, -1.0, 1.0, 1.0], 0.5), [0b0011]);
    }
}
