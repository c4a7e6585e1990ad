//! Training and evaluation data.
//!
//! The built-in synthetic task needs no download: sequences of tokens where
//! tokens `1..=k` are "positive", `k+1..=2k` "negative" and the rest neutral;
//! the label is 1 when positives outnumber negatives (ties are redrawn). Each
//! node draws its own training stream, keyed by its origin, so nodes train on
//! different data; the dev set is shared.

use crate::model::Batch;
use crate::perturb;
use crate::seed::{Origin, Seed};
use rand_core::Rng;
use serde::{Deserialize, Serialize};

/// Settings of the synthetic counting task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synthetic {
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Vocabulary size (must equal the model's).
    pub vocab: usize,
    /// Number of positive (and of negative) tokens.
    pub signal_tokens: usize,
    /// Examples in the dev set.
    pub dev_size: usize,
}

impl Synthetic {
    /// Checks the values; the error names the field.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if self.seq_len == 0 || self.seq_len > 4096 {
            return Err(format!(
                "{prefix}.seq_len must be within 1..=4096, got {}",
                self.seq_len
            ));
        }
        if self.signal_tokens == 0 || 2 * self.signal_tokens + 1 > self.vocab {
            return Err(format!(
                "{prefix}.signal_tokens must be at least 1 and leave room in the vocabulary ({}), got {}",
                self.vocab, self.signal_tokens
            ));
        }
        if self.dev_size == 0 || self.dev_size > 1_000_000 {
            return Err(format!(
                "{prefix}.dev_size must be within 1..=1000000, got {}",
                self.dev_size
            ));
        }
        Ok(())
    }

    fn key(seed: u64, stream: &[u8], index: u64) -> Seed {
        let mut h = blake3::Hasher::new();
        h.update(b"seedswarm/data/1");
        h.update(&seed.to_le_bytes());
        h.update(&(stream.len() as u64).to_le_bytes());
        h.update(stream);
        h.update(&index.to_le_bytes());
        Seed(*h.finalize().as_bytes())
    }

    fn draw(&self, key: &Seed, n: usize) -> Batch {
        let mut rng = perturb::stream(key, 0, 0);
        let k = self.signal_tokens as u32;
        let span = (self.vocab - 1) as u32;
        let mut batch = Batch::default();
        while batch.len() < n {
            let x: Vec<u32> = (0..self.seq_len)
                .map(|_| 1 + (rng.next_u32() % span))
                .collect();
            let pos = x.iter().filter(|&&t| t <= k).count();
            let neg = x.iter().filter(|&&t| t > k && t <= 2 * k).count();
            if pos == neg {
                continue;
            }
            batch.labels.push(u32::from(pos > neg));
            batch.inputs.push(x);
        }
        batch
    }

    /// Training batch `seq` of the node `origin` (its own data stream).
    pub fn train_batch(&self, seed: u64, origin: &Origin, seq: u64, size: usize) -> Batch {
        self.draw(&Self::key(seed, &origin.0, seq), size)
    }

    /// The shared dev set, in batches of at most `batch` examples.
    pub fn dev(&self, seed: u64, batch: usize) -> Vec<Batch> {
        let all = self.draw(&Self::key(seed, b"dev", 0), self.dev_size);
        let mut out = Vec::new();
        for (x, y) in all.inputs.chunks(batch).zip(all.labels.chunks(batch)) {
            out.push(Batch {
                inputs: x.to_vec(),
                labels: y.to_vec(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Synthetic {
        Synthetic {
            seq_len: 12,
            vocab: 32,
            signal_tokens: 6,
            dev_size: 1000,
        }
    }

    #[test]
    fn labels_follow_the_rule_and_are_balanced() {
        let dev = task().dev(1, 1000).remove(0);
        assert_eq!(dev.len(), 1000);
        let ones = dev.labels.iter().filter(|&&l| l == 1).count();
        assert!((400..600).contains(&ones), "{ones}");
        for (x, &y) in dev.inputs.iter().zip(&dev.labels) {
            let pos = x.iter().filter(|&&t| (1..=6).contains(&t)).count();
            let neg = x.iter().filter(|&&t| (7..=12).contains(&t)).count();
            assert_eq!(y, u32::from(pos > neg));
        }
    }

    #[test]
    fn nodes_get_different_deterministic_data() {
        let t = task();
        let a = t.train_batch(1, &Origin([1; 32]), 0, 8);
        assert_eq!(a, t.train_batch(1, &Origin([1; 32]), 0, 8));
        assert_ne!(a, t.train_batch(1, &Origin([2; 32]), 0, 8));
        assert_ne!(a, t.train_batch(1, &Origin([1; 32]), 1, 8));
    }
}
