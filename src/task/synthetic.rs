//! The built-in synthetic counting task: token sequences labeled by whether
//! "positive" tokens outnumber "negative" ones, drawn per node from its own
//! stream; the dev set is shared.

use crate::model::Batch;
use crate::zo::perturb;
use crate::zo::seed::{Origin, Seed};
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

    pub(super) fn key(seed: u64, stream: &[u8], index: u64) -> Seed {
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
