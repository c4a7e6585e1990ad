//! Reading task data files: the format by file name, bzip2 decompression,
//! and the rows of TSV, CSV and JSONL files (text column, label column,
//! label words and skipped values).

use super::Error;
use std::path::Path;

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
pub(super) struct Row {
    pub(super) line: usize,
    pub(super) text: String,
    pub(super) label: Option<String>,
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
pub(super) fn rows(
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
