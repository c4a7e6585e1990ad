//! Prompt-based classification: labeled sentences put into a template, the
//! classes scored as label words; a k-shot training pool per class.

use super::files::{read_labeled, Columns, Format};
use super::{check_files, check_fraction, held_out, is_zero, sample, Error, Example, PromptData};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
