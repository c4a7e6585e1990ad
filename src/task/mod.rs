//! Training and evaluation data.
//!
//! The built-in synthetic task needs no download: sequences of tokens where
//! tokens `1..=k` are "positive", `k+1..=2k` "negative" and the rest neutral;
//! the label is 1 when positives outnumber negatives (ties are redrawn). Each
//! node draws its own training stream, keyed by its origin, so nodes train on
//! different data; the dev set is shared.
//!
//! Prompt-based classification ([`Prompt`]) reads labeled sentences and lets
//! the model score label words: each sentence is put into a template
//! (`"{sentence} It was"`) and the classes are words (`" terrible"`,
//! `" great"`). The training pool is a k-shot sample per class drawn with the
//! manifest seed; each node draws its batches from the pool with its own
//! stream, keyed by its origin. Causal language modelling ([`Text`]) cuts
//! documents into token windows; the model's loss is the mean next-token
//! cross-entropy.
//!
//! Files ([`Format`], by name; any may end in `.bz2` and is then decompressed
//! by the pure-Rust bzip2): TSV with a header (GLUE style, no quoting), CSV
//! with a header (RFC 4180 quoting), JSONL, and plain text (.txt, text task
//! only). Text and label columns are configurable; labels are class numbers,
//! or words mapped by `label_values` (Rotten Tomatoes' `fresh`/`rotten`),
//! with `skip_values` for rows to leave out. A single corpus file can serve
//! as both train and dev through a deterministic held-out split by text hash
//! ([`held_out`]).
//!
//! Layout: [`Synthetic`] in `synthetic`, [`Prompt`] in `prompt`, [`Text`] in
//! `text`, and the file readers ([`Format`], [`read_text`], [`read_labeled`])
//! in `files`; this module keeps what they share: errors, the k-shot sampler,
//! the held-out split and the tokenized [`PromptData`].

use crate::model::Batch;
use crate::zo::perturb;
use crate::zo::seed::Origin;
use rand_core::Rng;
use std::path::Path;

mod files;
mod prompt;
mod synthetic;
#[cfg(test)]
mod tests;
mod text;

pub use files::{read_labeled, read_text, Columns, Format};
pub use prompt::Prompt;
pub use synthetic::Synthetic;
pub use text::{Documents, Text};

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Errors reading task data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file could not be read.
    #[error("cannot read data file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A data file is malformed.
    #[error("data file {path}: {message}")]
    Format { path: String, message: String },
    /// A sentence could not be tokenized.
    #[error("tokenizing: {0}")]
    Tokenize(String),
}

fn check_fraction(prefix: &str, f: f64) -> Result<(), String> {
    if !(0.0..1.0).contains(&f) {
        return Err(format!(
            "{prefix}.dev_fraction must be within [0, 1), got {f}"
        ));
    }
    Ok(())
}

fn check_files(prefix: &str, train: &str, dev: &str) -> Result<(), String> {
    for (name, v) in [("train", train), ("dev", dev)] {
        if v.trim().is_empty() {
            return Err(format!("{prefix}.{name} must name a data file"));
        }
        if Format::of(Path::new(v)).is_none() {
            return Err(format!(
                "{prefix}.{name} ({v:?}) must end in .tsv, .csv, .jsonl, .json or .txt (optionally .bz2)"
            ));
        }
    }
    Ok(())
}

/// Keeps a uniform sample of `k` of `rows` (in their original order), drawn
/// with the run seed and `stream`.
fn sample(rows: &mut Vec<usize>, k: usize, seed: u64, stream: u64) {
    let mut rng = perturb::stream(&Synthetic::key(seed, b"k-shot", stream), 0, 0);
    // Partial Fisher-Yates: the first k rows become a uniform sample.
    for j in 0..k {
        let r = j + below(&mut rng, rows.len() - j);
        rows.swap(j, r);
    }
    rows.truncate(k);
    rows.sort_unstable();
}

/// Whether a text belongs to the held-out fraction `f`: the first 8 bytes of
/// BLAKE3("seedswarm/split/1" ‖ text), as a little-endian u64, are below
/// f · 2^64. Keyed by the text alone, so the split is the same for every
/// run and file order, and duplicate texts never straddle it.
pub fn held_out(text: &str, f: f64) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm/split/1");
    h.update(text.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    (u64::from_le_bytes(b) as f64) < f * 2f64.powi(64)
}

/// Token ids of a prompt and its class (0 for text windows).
pub type Example = (Vec<u32>, u32);

/// A uniform draw from `0..n` (n ≥ 1) by multiply-shift of a 64-bit word.
fn below(rng: &mut impl Rng, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// Tokenized data of a prompt or text task: the training pool and the dev set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptData {
    seed: u64,
    /// Training pool.
    pub pool: Vec<Example>,
    /// Dev set, in file order.
    pub dev: Vec<Example>,
}

impl PromptData {
    /// Training batch `seq` of the node `origin`: `size` draws from the pool
    /// (with replacement), from the node's own stream.
    pub fn train_batch(&self, origin: &Origin, seq: u64, size: usize) -> Batch {
        let mut rng = perturb::stream(&Synthetic::key(self.seed, &origin.0, seq), 0, 0);
        let mut b = Batch::default();
        for _ in 0..size {
            let (x, y) = &self.pool[below(&mut rng, self.pool.len())];
            b.inputs.push(x.clone());
            b.labels.push(*y);
        }
        b
    }

    /// The dev set in batches of at most `batch` examples, ordered by token
    /// length (so a padded forward wastes little).
    pub fn dev(&self, batch: usize) -> Vec<Batch> {
        let mut sorted = self.dev.clone();
        sorted.sort_by_key(|(x, _)| x.len());
        batches(&sorted, batch)
    }
}

/// Examples in batches of at most `batch`.
pub fn batches(examples: &[Example], batch: usize) -> Vec<Batch> {
    examples
        .chunks(batch.max(1))
        .map(|c| Batch {
            inputs: c.iter().map(|(x, _)| x.clone()).collect(),
            labels: c.iter().map(|(_, y)| *y).collect(),
        })
        .collect()
}
