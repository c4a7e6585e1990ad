//! Causal language modelling on plain text: documents cut into token
//! windows, the loss the mean next-token cross-entropy.

use super::files::{read_text, rows, Columns, Format};
use super::{check_files, check_fraction, held_out, is_zero, sample, Error, Example, PromptData};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
