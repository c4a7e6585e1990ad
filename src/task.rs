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
    /// Labeled training file: .tsv, .csv (either with a header), .jsonl;
    /// any of them may be bzip2-compressed (.bz2).
    pub train: String,
    /// Labeled dev file (same formats; may be the training file, see
    /// `dev_fraction`).
    pub dev: String,
    /// Prompt template; `{sentence}` is replaced by the (trimmed) sentence.
    pub template: String,
    /// Label words, one per class; the model scores the first token of each.
    pub labels: Vec<String>,
    /// Training examples sampled per class with the run seed (0 = all).
    pub k_per_class: usize,
    /// The first this many dev examples are the dev set (0 = all).
    pub dev_size: usize,
    /// Column (or JSON key) of the sentence; by default the first of
    /// `sentence`, `text`, `review` that exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    /// Column (or JSON key) of the label; `label` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Label strings, one per class (class i = `label_values[i]`), for files
    /// whose labels are words (`["rotten", "fresh"]`); empty = the labels
    /// are class numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_values: Vec<String>,
    /// Rows with one of these label values are skipped (e.g. `["plot"]`);
    /// any other value missing from `label_values` is an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_values: Vec<String>,
    /// Held-out split, see [`held_out`]: with a fraction f > 0 the dev set is
    /// the part of `dev` whose texts fall in the held-out f, and training
    /// never sees those texts, so `dev` may name the training file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dev_fraction: f64,
}

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

impl Prompt {
    /// Checks the values; the error names the field.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        check_files(prefix, &self.train, &self.dev)?;
        for (name, v) in [("train", &self.train), ("dev", &self.dev)] {
            if Format::of(Path::new(v)) == Some(Format::Txt) {
                return Err(format!(
                    "{prefix}.{name} ({v:?}) must be a labeled file (.tsv, .csv or .jsonl)"
                ));
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
        if !self.label_values.is_empty() && self.label_values.len() != self.labels.len() {
            return Err(format!(
                "{prefix}.label_values must list one value per label word ({}), got {}",
                self.labels.len(),
                self.label_values.len()
            ));
        }
        for (i, a) in self.label_values.iter().enumerate() {
            if self.label_values[..i].contains(a) {
                return Err(format!(
                    "{prefix}.label_values[{i}] ({a:?}) is listed twice"
                ));
            }
            if self.skip_values.contains(a) {
                return Err(format!(
                    "{prefix}.skip_values lists {a:?}, which is also in {prefix}.label_values"
                ));
            }
        }
        for (name, v) in [
            ("text_column", &self.text_column),
            ("label_column", &self.label_column),
        ] {
            if v.as_deref().is_some_and(|c| c.trim().is_empty()) {
                return Err(format!("{prefix}.{name} must not be empty"));
            }
        }
        check_fraction(prefix, self.dev_fraction)?;
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

    /// How labeled rows are read.
    pub fn columns(&self) -> Columns<'_> {
        Columns {
            text: self.text_column.as_deref(),
            label: Some(self.label_column.as_deref().unwrap_or("label")),
            label_values: &self.label_values,
            skip_values: &self.skip_values,
            classes: self.labels.len(),
        }
    }

    /// `(sentence, class)` rows of a labeled file.
    pub fn read(&self, path: &Path) -> Result<Vec<(String, u32)>, Error> {
        read_labeled(path, &self.columns())
    }

    /// Reads, samples and tokenizes the task's data.
    pub fn load(
        &self,
        seed: u64,
        tokenize: &dyn Fn(&str) -> Result<Vec<u32>, String>,
    ) -> Result<PromptData, Error> {
        let classes = self.labels.len();
        let mut train = self.read(Path::new(&self.train))?;
        let mut dev = self.read(Path::new(&self.dev))?;
        if self.dev_fraction > 0.0 {
            train.retain(|(x, _)| !held_out(x, self.dev_fraction));
            dev.retain(|(x, _)| held_out(x, self.dev_fraction));
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, (_, y)) in train.iter().enumerate() {
            by_class[*y as usize].push(i);
        }
        let mut picked = Vec::new();
        for (c, rows) in by_class.iter_mut().enumerate() {
            if self.k_per_class > 0 && rows.len() > self.k_per_class {
                sample(rows, self.k_per_class, seed, c as u64);
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
        if self.dev_size > 0 {
            dev.truncate(self.dev_size);
        }
        let dev = dev.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        Ok(PromptData { seed, pool, dev })
    }
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

/// Settings of a causal language-modelling task on plain text: the loss is
/// the mean next-token cross-entropy over every position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// Training text: .txt, .jsonl (`{"text": …}`), .csv or .tsv (a text
    /// column), optionally .bz2.
    pub train: String,
    /// Dev text (same formats; may be the training file, see `dev_fraction`).
    pub dev: String,
    /// Column (or JSON key) of the text; by default the first of `text`,
    /// `sentence`, `review` that exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Longest example in tokens: each document is tokenized on its own and
    /// cut into consecutive windows of `seq_len` tokens (a shorter last
    /// window is kept when it has at least 2 tokens).
    pub seq_len: usize,
    /// What a document of a .txt file is: `"line"` (each non-empty line) or
    /// `"file"` (the whole file).
    #[serde(default)]
    pub documents: Documents,
    /// Training windows sampled with the run seed (0 = all).
    #[serde(default)]
    pub max_train: usize,
    /// The first this many dev windows are the dev set (0 = all).
    #[serde(default)]
    pub dev_size: usize,
    /// Held-out split by document text, as for the prompt task.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dev_fraction: f64,
}

/// What a document of a .txt file is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Documents {
    /// Each non-empty line.
    #[default]
    Line,
    /// The whole file.
    File,
}

impl Text {
    /// Checks the values; the error names the field.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        check_files(prefix, &self.train, &self.dev)?;
        if !(2..=65_536).contains(&self.seq_len) {
            return Err(format!(
                "{prefix}.seq_len must be within 2..=65536, got {}",
                self.seq_len
            ));
        }
        if self.column.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(format!("{prefix}.column must not be empty"));
        }
        check_fraction(prefix, self.dev_fraction)
    }

    /// The documents of a text file.
    pub fn read(&self, path: &Path) -> Result<Vec<String>, Error> {
        let text = read_text(path)?;
        let p = path.display().to_string();
        Ok(match Format::of(path) {
            Some(Format::Txt) => match self.documents {
                Documents::Line => text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect(),
                Documents::File => vec![text],
            },
            _ => {
                let cols = Columns {
                    text: self.column.as_deref(),
                    label: None,
                    label_values: &[],
                    skip_values: &[],
                    classes: 0,
                };
                rows(
                    &p,
                    &text,
                    Format::of(path),
                    &cols,
                    &["text", "sentence", "review"],
                )?
                .into_iter()
                .map(|r| r.text)
                .collect()
            }
        })
    }

    /// Token windows of documents.
    pub fn windows(
        &self,
        docs: &[String],
        tokenize: &dyn Fn(&str) -> Result<Vec<u32>, String>,
    ) -> Result<Vec<Vec<u32>>, Error> {
        let mut out = Vec::new();
        for d in docs {
            let ids = tokenize(d).map_err(Error::Tokenize)?;
            out.extend(
                ids.chunks(self.seq_len)
                    .filter(|w| w.len() >= 2)
                    .map(<[u32]>::to_vec),
            );
        }
        Ok(out)
    }

    /// Reads, splits, tokenizes and samples the task's data; every example's
    /// label is 0.
    pub fn load(
        &self,
        seed: u64,
        tokenize: &dyn Fn(&str) -> Result<Vec<u32>, String>,
    ) -> Result<PromptData, Error> {
        let mut train = self.read(Path::new(&self.train))?;
        let mut dev = self.read(Path::new(&self.dev))?;
        if self.dev_fraction > 0.0 {
            train.retain(|x| !held_out(x, self.dev_fraction));
            dev.retain(|x| held_out(x, self.dev_fraction));
        }
        let train = self.windows(&train, tokenize)?;
        let mut rows: Vec<usize> = (0..train.len()).collect();
        if self.max_train > 0 && rows.len() > self.max_train {
            sample(&mut rows, self.max_train, seed, 0);
        }
        let pool: Vec<Example> = rows.iter().map(|&i| (train[i].clone(), 0)).collect();
        if pool.is_empty() {
            return Err(Error::Format {
                path: self.train.clone(),
                message: "no training text (no window of at least 2 tokens)".into(),
            });
        }
        let mut dev = self.windows(&dev, tokenize)?;
        if self.dev_size > 0 {
            dev.truncate(self.dev_size);
        }
        let dev = dev.into_iter().map(|x| (x, 0)).collect();
        Ok(PromptData { seed, pool, dev })
    }
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

/// A data file's format, from its name (a `.bz2` suffix is looked through).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Tab-separated with a header; no quoting (GLUE style).
    Tsv,
    /// RFC 4180 comma-separated with a header (quoted fields may hold
    /// commas, doubled quotes and newlines).
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Plain text.
    Txt,
}

impl Format {
    /// The format of a file name, or `None` when unknown.
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".bz2").unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        Some(match ext {
            "tsv" => Format::Tsv,
            "csv" => Format::Csv,
            "jsonl" | "json" => Format::Jsonl,
            "txt" => Format::Txt,
            _ => return None,
        })
    }
}

/// The text of a file, decompressed when its name ends in `.bz2`.
pub fn read_text(path: &Path) -> Result<String, Error> {
    use std::io::Read;
    let p = path.display().to_string();
    let io = |source| Error::Io {
        path: p.clone(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "bz2") {
        let mut out = Vec::new();
        bzip2::read::MultiBzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::Format {
                path: p.clone(),
                message: format!("bzip2: {e}"),
            })?;
        out
    } else {
        raw
    };
    String::from_utf8(bytes).map_err(|e| Error::Format {
        path: p,
        message: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
    })
}

/// How the rows of a labeled file are read.
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a> {
    /// Text column; `None` = the first of the defaults that exists.
    pub text: Option<&'a str>,
    /// Label column; `None` = no labels.
    pub label: Option<&'a str>,
    /// Label strings per class; empty = labels are class numbers.
    pub label_values: &'a [String],
    /// Label values whose rows are skipped.
    pub skip_values: &'a [String],
    /// Number of classes.
    pub classes: usize,
}

/// A row: its line in the file, its text and its raw label.
struct Row {
    line: usize,
    text: String,
    label: Option<String>,
}

/// Reads `(sentence, class)` rows of a labeled file (TSV, CSV, JSONL,
/// optionally .bz2). Without `label_values` a label must be a class number
/// below `classes`; with them it must be one of them or of `skip_values`.
pub fn read_labeled(path: &Path, cols: &Columns<'_>) -> Result<Vec<(String, u32)>, Error> {
    let p = path.display().to_string();
    let text = read_text(path)?;
    let format = Format::of(path);
    if format == Some(Format::Txt) {
        return Err(Error::Format {
            path: p,
            message: "a plain-text file has no labels".into(),
        });
    }
    let mut out = Vec::new();
    for r in rows(&p, &text, format, cols, &["sentence", "text", "review"])? {
        let bad = |message: String| Error::Format {
            path: p.clone(),
            message: format!("line {}: {message}", r.line),
        };
        let raw = r.label.unwrap_or_default();
        let v = raw.trim();
        let class = if cols.label_values.is_empty() {
            let n: i64 = v.parse().map_err(|_| {
                bad(format!(
                    "label {v:?} is not a class number (map words to classes with run.task.label_values)"
                ))
            })?;
            if n < 0 || n as usize >= cols.classes {
                return Err(bad(format!(
                    "label {n} is outside 0..{} (one per run.task.labels entry)",
                    cols.classes
                )));
            }
            n as u32
        } else if let Some(i) = cols.label_values.iter().position(|l| l == v) {
            i as u32
        } else if cols.skip_values.iter().any(|l| l == v) {
            continue;
        } else {
            return Err(bad(format!(
                "label {v:?} is in neither run.task.label_values {:?} nor run.task.skip_values {:?}",
                cols.label_values, cols.skip_values
            )));
        };
        out.push((r.text, class));
    }
    Ok(out)
}

/// The rows of a TSV, CSV or JSONL text: the text column (configured, or the
/// first of `defaults` present) and the label column when asked for.
fn rows(
    p: &str,
    text: &str,
    format: Option<Format>,
    cols: &Columns<'_>,
    defaults: &[&str],
) -> Result<Vec<Row>, Error> {
    let bad = |line: usize, message: String| Error::Format {
        path: p.to_string(),
        message: format!("line {line}: {message}"),
    };
    let text_names: Vec<&str> = match cols.text {
        Some(c) => vec![c],
        None => defaults.to_vec(),
    };
    let mut out = Vec::new();
    if format == Some(Format::Jsonl) {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
            let s = text_names
                .iter()
                .find_map(|k| v.get(k).and_then(|s| s.as_str()))
                .ok_or_else(|| bad(i + 1, format!("no string field {text_names:?}")))?;
            let label = match cols.label {
                None => None,
                Some(k) => Some(match v.get(k) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => return Err(bad(i + 1, format!("no string or number {k:?}"))),
                }),
            };
            out.push(Row {
                line: i + 1,
                text: s.to_string(),
                label,
            });
        }
        return Ok(out);
    }
    let mut b = csv::ReaderBuilder::new();
    b.has_headers(true).flexible(true);
    if format == Some(Format::Tsv) {
        b.delimiter(b'\t').quoting(false);
    }
    let mut r = b.from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .map_err(|e| bad(1, e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(bad(1, "empty file (expected a header)".into()));
    }
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| header.iter().position(|h| h == n))
    };
    let ti = find(&text_names).ok_or_else(|| {
        bad(
            1,
            format!("header has no {text_names:?} column: {header:?}"),
        )
    })?;
    let li = match cols.label {
        None => None,
        Some(n) => Some(
            find(&[n]).ok_or_else(|| bad(1, format!("header has no {n:?} column: {header:?}")))?,
        ),
    };
    for rec in r.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            bad(line, e.to_string())
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let (Some(s), label) = (rec.get(ti), li.map(|i| rec.get(i))) else {
            return Err(bad(line, format!("expected {} fields", header.len())));
        };
        let label = match label {
            None => None,
            Some(Some(l)) => Some(l.to_string()),
            Some(None) => return Err(bad(line, format!("expected {} fields", header.len()))),
        };
        out.push(Row {
            line,
            text: s.to_string(),
            label,
        });
    }
    Ok(out)
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
            text_column: None,
            label_column: None,
            label_values: Vec::new(),
            skip_values: Vec::new(),
            dev_fraction: 0.0,
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
        let cols = prompt(dir.path(), 1);
        let e = cols.read(&f).unwrap_err().to_string();
        assert!(e.contains("x.tsv") && e.contains("line 3"), "{e}");
        std::fs::write(&f, "words\tlabel\n").unwrap();
        let e = cols.read(&f).unwrap_err().to_string();
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

    const QUOTED: &str = "id,review,category\n\
        1,\"good, really good\",fresh\n\
        2,\"she said \"\"meh\"\"\",rotten\n\
        3,\"two\nlines\",fresh\n\
        4,a plot summary,plot\n";

    fn rt(dir: &Path, file: &Path) -> Prompt {
        let mut p = prompt(dir, 0);
        p.train = file.display().to_string();
        p.dev = p.train.clone();
        p.label_column = Some("category".into());
        p.label_values = vec!["rotten".into(), "fresh".into()];
        p.skip_values = vec!["plot".into()];
        p
    }

    #[test]
    fn csv_quoting_label_words_and_bzip2() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("rt.csv");
        std::fs::write(&plain, QUOTED).unwrap();
        let packed = dir.path().join("rt.csv.bz2");
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        enc.write_all(QUOTED.as_bytes()).unwrap();
        std::fs::write(&packed, enc.finish().unwrap()).unwrap();
        let want = vec![
            ("good, really good".to_string(), 1),
            ("she said \"meh\"".to_string(), 0),
            ("two\nlines".to_string(), 1),
        ];
        for f in [&plain, &packed] {
            let p = rt(dir.path(), f);
            p.validate("run.task").unwrap();
            assert_eq!(p.read(f).unwrap(), want, "{}", f.display());
        }
        assert_eq!(Format::of(&packed), Some(Format::Csv));
        assert_eq!(Format::of(Path::new("a.TXT.bz2")), Some(Format::Txt));
        assert_eq!(Format::of(Path::new("a.parquet")), None);
        // The auto-detected text column is `review`; the label column is named.
        let mut p = rt(dir.path(), &plain);
        p.text_column = Some("id".into());
        assert_eq!(p.read(&plain).unwrap()[0].0, "1");
        // Not bzip2 at all.
        let fake = dir.path().join("fake.csv.bz2");
        std::fs::write(&fake, QUOTED).unwrap();
        let e = p.read(&fake).unwrap_err().to_string();
        assert!(e.contains("fake.csv.bz2") && e.contains("bzip2"), "{e}");
    }

    #[test]
    fn unknown_label_values_name_the_field_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rt.csv");
        std::fs::write(&f, QUOTED).unwrap();
        let mut p = rt(dir.path(), &f);
        p.skip_values.clear();
        let e = p.read(&f).unwrap_err().to_string();
        assert!(
            e.contains("\"plot\"") && e.contains("run.task.label_values") && e.contains("line 6"),
            "{e}"
        );
        // Word labels without a mapping.
        p.label_values.clear();
        let e = p.read(&f).unwrap_err().to_string();
        assert!(
            e.contains("run.task.label_values") && e.contains("line 2"),
            "{e}"
        );
        let mut p = rt(dir.path(), &f);
        p.label_values = vec!["rotten".into()];
        let e = p.validate("run.task").unwrap_err();
        assert!(e.contains("run.task.label_values"), "{e}");
        let mut p = rt(dir.path(), &f);
        p.label_column = Some("verdict".into());
        let e = p.read(&f).unwrap_err().to_string();
        assert!(e.contains("verdict") && e.contains("line 1"), "{e}");
        let mut p = rt(dir.path(), &f);
        p.dev_fraction = 1.5;
        let e = p.validate("run.task").unwrap_err();
        assert!(e.contains("run.task.dev_fraction"), "{e}");
    }

    #[test]
    fn held_out_split_is_disjoint_and_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("corpus.jsonl");
        let mut t = String::new();
        for i in 0..400 {
            t += &format!(
                "{{\"text\": \"review number {i}\", \"label\": \"{}\"}}\n",
                ["neg", "pos"][i % 2]
            );
        }
        std::fs::write(&f, t).unwrap();
        let mut p = rt(dir.path(), &f);
        p.label_column = None;
        p.label_values = vec!["neg".into(), "pos".into()];
        p.dev_fraction = 0.25;
        p.validate("run.task").unwrap();
        let d = p.load(1, &fake_tokenize).unwrap();
        assert_eq!(d.pool.len() + d.dev.len(), 400);
        assert!((60..140).contains(&d.dev.len()), "{}", d.dev.len());
        for (x, _) in &d.dev {
            assert!(!d.pool.iter().any(|(y, _)| y == x));
        }
        // Independent of the run seed.
        assert_eq!(p.load(2, &fake_tokenize).unwrap().dev, d.dev);
    }

    fn text_task(train: &Path) -> Text {
        Text {
            train: train.display().to_string(),
            dev: train.display().to_string(),
            column: None,
            seq_len: 4,
            documents: Documents::Line,
            max_train: 0,
            dev_size: 0,
            dev_fraction: 0.0,
        }
    }

    #[test]
    fn text_documents_become_token_windows() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("doc.txt");
        std::fs::write(&f, "abcdefghij\n\nxy\nz\n").unwrap();
        let t = text_task(&f);
        t.validate("run.task").unwrap();
        let d = t.load(1, &fake_tokenize).unwrap();
        let w: Vec<String> = d
            .pool
            .iter()
            .map(|(x, y)| {
                assert_eq!(*y, 0);
                x.iter().map(|&c| c as u8 as char).collect()
            })
            .collect();
        // "ij" is a short last window; "z" has no next token to predict.
        assert_eq!(w, ["abcd", "efgh", "ij", "xy"]);
        let mut whole = text_task(&f);
        whole.documents = Documents::File;
        assert_eq!(whole.read(&f).unwrap().len(), 1);
        let mut few = text_task(&f);
        few.max_train = 2;
        assert_eq!(few.load(1, &fake_tokenize).unwrap().pool.len(), 2);
        // A CSV column (quoted, multi-line).
        let c = dir.path().join("rt.csv");
        std::fs::write(&c, QUOTED).unwrap();
        let mut t = text_task(&c);
        t.column = Some("review".into());
        assert_eq!(t.read(&c).unwrap()[2], "two\nlines");
        t.seq_len = 1;
        assert!(t
            .validate("run.task")
            .unwrap_err()
            .contains("run.task.seq_len"));
        let mut t = text_task(&dir.path().join("x.parquet"));
        t.dev = f.display().to_string();
        assert!(t
            .validate("run.task")
            .unwrap_err()
            .contains("run.task.train"));
    }
}
