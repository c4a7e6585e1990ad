//! Training and evaluation data.
//!
//! The built-in synthetic task needs no download: sequences of tokens where
//! tokens `1..=k` are "positive", `k+1..=2k` "negative" and the rest neutral;
//! the label is 1 when positives outnumber negatives (ties are redrawn). Each
//! node draws its own training stream, keyed by its origin, so nodes train on
//! different data; the dev set is shared.
//!
//! Prompt-based classification ([`Prompt`]) reads labeled sentences from TSV
//! (`sentence<TAB>label` with a header) or JSONL (`{"sentence": …, "label": …}`)
//! files, puts each sentence into a template (`"{sentence} It was"`), and lets
//! the model score label words (`" terrible"`, `" great"`). The training pool
//! is a k-shot sample per class drawn with the manifest seed; each node draws
//! its batches from the pool with its own stream, keyed by its origin.

use crate::model::Batch;
use crate::perturb;
use crate::seed::{Origin, Seed};
use rand_core::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// Settings of a prompt-based classification task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// Labeled training file (.tsv with a `sentence`/`label` header, or .jsonl).
    pub train: String,
    /// Labeled dev file (same formats).
    pub dev: String,
    /// Prompt template; `{sentence}` is replaced by the (trimmed) sentence.
    pub template: String,
    /// Label words, one per class (class i = label i in the files); the model
    /// scores the first token of each.
    pub labels: Vec<String>,
    /// Training examples sampled per class with the run seed (0 = all).
    pub k_per_class: usize,
    /// The first this many dev examples are the dev set (0 = all).
    pub dev_size: usize,
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

impl Prompt {
    /// Checks the values; the error names the field.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        for (name, v) in [("train", &self.train), ("dev", &self.dev)] {
            if v.trim().is_empty() {
                return Err(format!("{prefix}.{name} must name a data file"));
            }
        }
        if !self.template.contains("{sentence}") {
            return Err(format!(
                "{prefix}.template must contain {{sentence}}, got {:?}",
                self.template
            ));
        }
        if self.labels.len() < 2 || self.labels.len() > 1024 {
            return Err(format!(
                "{prefix}.labels must list 2..=1024 label words, got {}",
                self.labels.len()
            ));
        }
        if let Some(i) = self.labels.iter().position(|l| l.is_empty()) {
            return Err(format!("{prefix}.labels[{i}] must not be empty"));
        }
        for (i, a) in self.labels.iter().enumerate() {
            if self.labels[..i].contains(a) {
                return Err(format!("{prefix}.labels[{i}] ({a:?}) is listed twice"));
            }
        }
        if self.k_per_class > 10_000_000 {
            return Err(format!(
                "{prefix}.k_per_class must be at most 10000000, got {}",
                self.k_per_class
            ));
        }
        Ok(())
    }

    /// The prompt text of a sentence.
    pub fn render(&self, sentence: &str) -> String {
        self.template.replace("{sentence}", sentence.trim())
    }

    /// Reads, samples and tokenizes the task's data.
    pub fn load(
        &self,
        seed: u64,
        tokenize: &dyn Fn(&str) -> Result<Vec<u32>, String>,
    ) -> Result<PromptData, Error> {
        let classes = self.labels.len();
        let train = read_labeled(Path::new(&self.train), classes)?;
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, (_, y)) in train.iter().enumerate() {
            by_class[*y as usize].push(i);
        }
        let mut picked = Vec::new();
        for (c, rows) in by_class.iter_mut().enumerate() {
            if self.k_per_class > 0 && rows.len() > self.k_per_class {
                let mut rng = perturb::stream(&Synthetic::key(seed, b"k-shot", c as u64), 0, 0);
                // Partial Fisher-Yates: the first k rows become a uniform sample.
                for j in 0..self.k_per_class {
                    let r = j + below(&mut rng, rows.len() - j);
                    rows.swap(j, r);
                }
                rows.truncate(self.k_per_class);
                rows.sort_unstable();
            }
            picked.extend(rows.iter().copied());
        }
        picked.sort_unstable();
        let encode = |(x, y): &(String, u32)| -> Result<Example, Error> {
            Ok((tokenize(&self.render(x)).map_err(Error::Tokenize)?, *y))
        };
        let pool = picked
            .iter()
            .map(|&i| encode(&train[i]))
            .collect::<Result<Vec<_>, _>>()?;
        if pool.is_empty() {
            return Err(Error::Format {
                path: self.train.clone(),
                message: "no training examples".into(),
            });
        }
        let mut dev = read_labeled(Path::new(&self.dev), classes)?;
        if self.dev_size > 0 {
            dev.truncate(self.dev_size);
        }
        let dev = dev.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        Ok(PromptData { seed, pool, dev })
    }
}

/// Token ids of a prompt and its class.
pub type Example = (Vec<u32>, u32);

/// A uniform draw from `0..n` (n ≥ 1) by multiply-shift of a 64-bit word.
fn below(rng: &mut impl Rng, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// Tokenized prompt data: the k-shot training pool and the dev set.
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
    /// length (a model without padding masks runs each length separately).
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

/// Reads `(sentence, label)` rows from a TSV file with a header naming
/// `sentence` and `label` columns, or from JSONL with those keys; labels must
/// be below `classes`.
pub fn read_labeled(path: &Path, classes: usize) -> Result<Vec<(String, u32)>, Error> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: p.clone(),
        source,
    })?;
    let bad = |line: usize, message: String| Error::Format {
        path: p.clone(),
        message: format!("line {line}: {message}"),
    };
    let check = |line: usize, label: i64| -> Result<u32, Error> {
        if label < 0 || label as usize >= classes {
            return Err(bad(
                line,
                format!("label {label} is outside 0..{classes} (one per run.task.labels entry)"),
            ));
        }
        Ok(label as u32)
    };
    let mut rows = Vec::new();
    if path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json")
    {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
            let s = v
                .get("sentence")
                .or_else(|| v.get("text"))
                .and_then(|s| s.as_str())
                .ok_or_else(|| bad(i + 1, "no string \"sentence\" (or \"text\")".into()))?;
            let l = v
                .get("label")
                .and_then(|l| l.as_i64())
                .ok_or_else(|| bad(i + 1, "no integer \"label\"".into()))?;
            rows.push((s.to_string(), check(i + 1, l)?));
        }
        return Ok(rows);
    }
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.split('\t').map(str::trim).collect(),
        None => {
            return Err(bad(
                1,
                "empty file (expected a sentence/label header)".into(),
            ))
        }
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| bad(1, format!("header has no {name:?} column: {header:?}")))
    };
    let (si, li) = (col("sentence")?, col("label")?);
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(s), Some(l)) = (f.get(si), f.get(li)) else {
            return Err(bad(
                i + 1,
                format!("expected {} tab-separated fields", header.len()),
            ));
        };
        let l: i64 = l
            .trim()
            .parse()
            .map_err(|_| bad(i + 1, format!("label {l:?} is not an integer")))?;
        rows.push((s.to_string(), check(i + 1, l)?));
    }
    Ok(rows)
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

    fn prompt(dir: &Path, k: usize) -> Prompt {
        let train = dir.join("train.tsv");
        let mut t = String::from("sentence\tlabel\n");
        for i in 0..100 {
            t += &format!("s{i} \t{}\n", i % 2);
        }
        std::fs::write(&train, t).unwrap();
        let dev = dir.join("dev.jsonl");
        std::fs::write(
            &dev,
            "{\"sentence\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": 0}\n",
        )
        .unwrap();
        Prompt {
            train: train.display().to_string(),
            dev: dev.display().to_string(),
            template: "{sentence} It was".into(),
            labels: vec![" bad".into(), " good".into()],
            k_per_class: k,
            dev_size: 0,
        }
    }

    fn fake_tokenize(s: &str) -> Result<Vec<u32>, String> {
        Ok(s.bytes().map(u32::from).collect())
    }

    #[test]
    fn prompt_data_samples_k_per_class_and_reads_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let p = prompt(dir.path(), 5);
        p.validate("run.task").unwrap();
        let d = p.load(3, &fake_tokenize).unwrap();
        assert_eq!(d.pool.len(), 10);
        assert_eq!(d.pool.iter().filter(|(_, y)| *y == 1).count(), 5);
        assert_eq!(d, p.load(3, &fake_tokenize).unwrap());
        assert_ne!(d.pool, p.load(4, &fake_tokenize).unwrap().pool);
        assert_eq!(d.dev.len(), 2);
        assert_eq!(d.dev[0], (fake_tokenize("a It was").unwrap(), 1));
        let a = d.train_batch(&Origin([1; 32]), 0, 8);
        assert_eq!(a.len(), 8);
        assert_eq!(a, d.train_batch(&Origin([1; 32]), 0, 8));
        assert_ne!(a, d.train_batch(&Origin([2; 32]), 0, 8));
        let all = prompt(dir.path(), 0).load(3, &fake_tokenize).unwrap();
        assert_eq!(all.pool.len(), 100);
    }

    #[test]
    fn bad_data_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.tsv");
        std::fs::write(&f, "sentence\tlabel\nok\t1\nbad\t7\n").unwrap();
        let e = read_labeled(&f, 2).unwrap_err().to_string();
        assert!(e.contains("x.tsv") && e.contains("line 3"), "{e}");
        std::fs::write(&f, "text\tlabel\n").unwrap();
        let e = read_labeled(&f, 2).unwrap_err().to_string();
        assert!(e.contains("sentence"), "{e}");
        let mut p = prompt(dir.path(), 1);
        p.template = "no slot".into();
        assert!(p
            .validate("run.task")
            .unwrap_err()
            .contains("run.task.template"));
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
