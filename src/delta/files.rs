//! FedZip deltas between safetensors files, behind `seedswarm delta`.
//!
//! [`compress`] matches the tensors of a base and a fine-tuned file by name,
//! FedZip-compresses their difference (input − base) and measures the error
//! of what a receiver decodes; [`apply`] adds such a delta to a base and
//! writes the result. This module owns the file handling, the matching of
//! tensors (shapes, dtypes, tensors present in one file only) and the
//! [`Summary`] of a compression; the codec itself is [`crate::delta::fedzip`].
//! Nothing here prints: the command line reports the summaries.

use crate::delta::fedzip::{self, Positions, Settings};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What [`compress`] did: sizes, ratios and the error a receiver sees
/// (`delta --summary` writes it as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Tensors in the delta.
    pub tensors: usize,
    /// Entries of those tensors.
    pub elements: u64,
    /// Entries kept (non-zero in the decoded delta).
    pub kept: u64,
    /// Size of the dense f32 difference, `4 · elements`.
    pub raw_bytes: u64,
    /// Size of the written delta (with the chosen position coding).
    pub compressed_bytes: u64,
    /// Size with difference-coded positions.
    pub compressed_bytes_diff: u64,
    /// Size with plain positions.
    pub compressed_bytes_plain: u64,
    /// `raw_bytes / compressed_bytes`.
    pub ratio: f64,
    /// `raw_bytes / compressed_bytes_plain`.
    pub ratio_plain: f64,
    /// ‖decoded − difference‖₂ / ‖difference‖₂ (0 for a zero difference).
    pub rel_l2_error: f64,
    /// Largest |decoded − difference| over every entry.
    pub max_abs_error: f64,
    /// The settings used.
    pub top_z: f64,
    pub clusters: usize,
    pub iterations: usize,
    pub positions: Positions,
    /// Tensors left out: in one file only, or equal non-float tensors.
    pub skipped: Vec<String>,
    /// Seconds spent in FedZip compression and encoding.
    pub compress_s: f64,
    /// Seconds in all, reading the files included.
    pub wall_s: f64,
}

/// What [`apply`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// Tensors of the delta added to the base.
    pub tensors: usize,
    /// Entries of the delta kept (non-zero).
    pub kept: u64,
}

/// Errors of [`compress`] and [`apply`]; each names the file or tensor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A safetensors file could not be read or parsed.
    #[error("reading {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// A safetensors file could not be written.
    #[error("writing {path}")]
    Save {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// A delta file could not be read.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A delta file could not be written.
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A delta file is not a valid FedZip delta (or too large for the base).
    #[error("decoding {path}")]
    Decode {
        path: PathBuf,
        #[source]
        source: fedzip::Error,
    },
    /// A tensor has different shapes in the two files.
    #[error("tensor {name}: shape {base_shape:?} in {base} but {input_shape:?} in {input}")]
    Shape {
        name: String,
        base: PathBuf,
        base_shape: Vec<usize>,
        input: PathBuf,
        input_shape: Vec<usize>,
    },
    /// A tensor differs between the files but is not of a float type.
    #[error(
        "tensor {name}: dtype {base:?}/{input:?} differs between the files and is not a float type"
    )]
    NonFloatDiffers {
        name: String,
        base: DType,
        input: DType,
    },
    /// The difference of a tensor is NaN or infinite somewhere.
    #[error("tensor {name}: difference at element {index} is not finite")]
    NonFinite { name: String, index: usize },
    /// A tensor of the delta is missing from the base.
    #[error("tensor {name} of the delta is not in {base}")]
    Missing { name: String, base: PathBuf },
    /// A tensor of the delta has another length than in the base.
    #[error("tensor {name}: {delta} elements in the delta but {elements} in {base}")]
    Length {
        name: String,
        delta: u64,
        elements: usize,
        base: PathBuf,
    },
    /// A tensor of the delta is not of a float type in the base.
    #[error("tensor {name}: dtype {dtype:?} is not a float type")]
    NotFloat { name: String, dtype: DType },
    /// A tensor could not be converted to or from f32.
    #[error("tensor {name}: converting {from:?} to {to:?}")]
    Convert {
        name: String,
        from: DType,
        to: DType,
        #[source]
        source: candle_core::Error,
    },
    /// Compression failed (invalid settings, a name FedZip rejects, ...).
    #[error(transparent)]
    Fedzip(#[from] fedzip::Error),
    /// The encoded delta did not decode to what was encoded.
    #[error("internal error: the delta does not decode to itself")]
    RoundTrip,
}

fn load(path: &Path) -> Result<BTreeMap<String, Tensor>, Error> {
    let map = candle_core::safetensors::load(path, &Device::Cpu).map_err(|source| Error::Load {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(map.into_iter().collect())
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}

/// The entries of `t` as `T`, flattened.
fn values<T: candle_core::WithDType>(name: &str, t: &Tensor) -> Result<Vec<T>, Error> {
    let convert = |source| Error::Convert {
        name: name.to_string(),
        from: t.dtype(),
        to: T::DTYPE,
        source,
    };
    t.flatten_all()
        .and_then(|x| x.to_dtype(T::DTYPE))
        .and_then(|x| x.to_vec1::<T>())
        .map_err(convert)
}

/// Compresses `input − base` over the tensors present in both files with
/// the settings `s`, and writes the encoded delta to `out` when given.
///
/// Tensors in one file only, and non-float tensors equal in both, are left
/// out (listed in [`Summary::skipped`]); shapes must match, and a non-float
/// tensor that differs is an error.
pub fn compress(
    base: &Path,
    input: &Path,
    s: &Settings,
    out: Option<&Path>,
) -> Result<Summary, Error> {
    let start = Instant::now();
    s.validate("fedzip").map_err(fedzip::Error::Settings)?;
    let a = load(base)?;
    let b = load(input)?;
    let mut names = Vec::new();
    let mut diffs = Vec::new();
    let mut skipped = Vec::new();
    for (name, tb) in &b {
        let Some(ta) = a.get(name) else {
            skipped.push(name.clone());
            continue;
        };
        if ta.dims() != tb.dims() {
            return Err(Error::Shape {
                name: name.clone(),
                base: base.to_path_buf(),
                base_shape: ta.dims().to_vec(),
                input: input.to_path_buf(),
                input_shape: tb.dims().to_vec(),
            });
        }
        if !is_float(ta.dtype()) || !is_float(tb.dtype()) {
            let same =
                ta.dtype() == tb.dtype() && values::<f64>(name, ta)? == values::<f64>(name, tb)?;
            if same {
                skipped.push(name.clone());
                continue;
            }
            return Err(Error::NonFloatDiffers {
                name: name.clone(),
                base: ta.dtype(),
                input: tb.dtype(),
            });
        }
        let xa = values::<f32>(name, ta)?;
        let xb = values::<f32>(name, tb)?;
        let d: Vec<f32> = xb.iter().zip(&xa).map(|(y, x)| y - x).collect();
        if let Some(index) = d.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                name: name.clone(),
                index,
            });
        }
        names.push(name.clone());
        diffs.push(d);
    }
    for name in a.keys().filter(|n| !b.contains_key(*n)) {
        skipped.push(name.clone());
    }
    let t0 = Instant::now();
    let refs: Vec<(&str, &[f32])> = names
        .iter()
        .map(String::as_str)
        .zip(diffs.iter().map(Vec::as_slice))
        .collect();
    let d = fedzip::compress(&refs, s)?;
    let bytes = fedzip::encode(&d, s.positions);
    let compress_s = t0.elapsed().as_secs_f64();
    let diff_len = fedzip::encode(&d, Positions::Diff).len() as u64;
    let plain_len = fedzip::encode(&d, Positions::Plain).len() as u64;
    // Measure the error on what a receiver decodes.
    let decoded = fedzip::decode(&bytes, d.elements())?;
    if decoded != d {
        return Err(Error::RoundTrip);
    }
    drop(refs);
    let (mut norm, mut err, mut max_abs) = (0f64, 0f64, 0f64);
    for (t, x) in decoded.tensors.iter().zip(&mut diffs) {
        norm += x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        for (p, v) in t.values() {
            x[p] -= v;
        }
        for &r in x.iter() {
            err += f64::from(r) * f64::from(r);
            max_abs = max_abs.max(f64::from(r.abs()));
        }
    }
    if let Some(path) = out {
        std::fs::write(path, &bytes).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let elements = d.elements();
    let raw_bytes = 4 * elements;
    let ratio = |n: u64| raw_bytes as f64 / n.max(1) as f64;
    Ok(Summary {
        tensors: d.tensors.len(),
        elements,
        kept: d.kept(),
        raw_bytes,
        compressed_bytes: bytes.len() as u64,
        compressed_bytes_diff: diff_len,
        compressed_bytes_plain: plain_len,
        ratio: ratio(bytes.len() as u64),
        ratio_plain: ratio(plain_len),
        rel_l2_error: if norm > 0.0 { (err / norm).sqrt() } else { 0.0 },
        max_abs_error: max_abs,
        top_z: s.top_z,
        clusters: s.clusters,
        iterations: s.iterations,
        positions: s.positions,
        skipped,
        compress_s,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Writes `base + delta` to `out`, each tensor in its base dtype; tensors
/// not in the delta are copied.
pub fn apply(base: &Path, delta: &Path, out: &Path) -> Result<Applied, Error> {
    let mut a: HashMap<String, Tensor> = load(base)?.into_iter().collect();
    let bytes = std::fs::read(delta).map_err(|source| Error::Read {
        path: delta.to_path_buf(),
        source,
    })?;
    let max = a.values().map(|t| t.elem_count() as u64).sum();
    let d = fedzip::decode(&bytes, max).map_err(|source| Error::Decode {
        path: delta.to_path_buf(),
        source,
    })?;
    for t in &d.tensors {
        let ta = a.get(&t.name).ok_or_else(|| Error::Missing {
            name: t.name.clone(),
            base: base.to_path_buf(),
        })?;
        if ta.elem_count() as u64 != t.len {
            return Err(Error::Length {
                name: t.name.clone(),
                delta: t.len,
                elements: ta.elem_count(),
                base: base.to_path_buf(),
            });
        }
        if !is_float(ta.dtype()) {
            return Err(Error::NotFloat {
                name: t.name.clone(),
                dtype: ta.dtype(),
            });
        }
        let mut x = values::<f32>(&t.name, ta)?;
        for (p, v) in t.values() {
            x[p] += v;
        }
        let c = Tensor::from_vec(x, ta.shape().clone(), &Device::Cpu)
            .and_then(|c| c.to_dtype(ta.dtype()))
            .map_err(|source| Error::Convert {
                name: t.name.clone(),
                from: DType::F32,
                to: ta.dtype(),
                source,
            })?;
        a.insert(t.name.clone(), c);
    }
    candle_core::safetensors::save(&a, out).map_err(|source| Error::Save {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(Applied {
        tensors: d.tensors.len(),
        kept: d.kept(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 8;
                h as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn f32s(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn save(path: &Path, tensors: &[(&str, Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    fn read(path: &Path, name: &str) -> Vec<f32> {
        let map = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        map[name].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn compress_then_apply_is_within_the_measured_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let wa = noise(32 * 24, 1);
        let wb: Vec<f32> = wa
            .iter()
            .zip(noise(32 * 24, 2))
            .map(|(x, n)| x + 0.01 * n)
            .collect();
        let steps = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
        save(
            &p("a.safetensors"),
            &[
                ("w", f32s(&wa, &[32, 24])),
                ("steps", steps.clone()),
                ("frozen", f32s(&noise(5, 3), &[5])),
            ],
        );
        save(
            &p("b.safetensors"),
            &[("w", f32s(&wb, &[32, 24])), ("steps", steps)],
        );
        let s = Settings {
            top_z: 0.1,
            ..Settings::default()
        };
        let sum = compress(
            &p("a.safetensors"),
            &p("b.safetensors"),
            &s,
            Some(&p("d.fzd")),
        )
        .unwrap();
        assert_eq!((sum.tensors, sum.elements), (1, 32 * 24));
        assert_eq!(sum.kept, fedzip::kept_count(32 * 24, 0.1) as u64);
        assert_eq!(sum.raw_bytes, 4 * 32 * 24);
        assert_eq!(
            sum.compressed_bytes,
            std::fs::metadata(p("d.fzd")).unwrap().len()
        );
        assert_eq!(sum.compressed_bytes, sum.compressed_bytes_diff);
        assert!(sum.ratio > 1.0, "{sum:?}");
        assert_eq!(sum.skipped, ["steps", "frozen"]);
        assert!(sum.rel_l2_error > 0.0 && sum.rel_l2_error < 1.0, "{sum:?}");

        let applied = apply(&p("a.safetensors"), &p("d.fzd"), &p("c.safetensors")).unwrap();
        assert_eq!((applied.tensors, applied.kept), (1, sum.kept));
        let wc = read(&p("c.safetensors"), "w");
        // The applied weights differ from the fine-tuned ones by the error
        // the summary measured (up to f32 rounding of the additions).
        let (mut err, mut norm, mut max_abs) = (0f64, 0f64, 0f64);
        for ((c, b), a) in wc.iter().zip(&wb).zip(&wa) {
            let r = f64::from(c - b);
            err += r * r;
            norm += f64::from(b - a).powi(2);
            max_abs = max_abs.max(r.abs());
        }
        assert!(max_abs <= sum.max_abs_error + 1e-6, "{max_abs} {sum:?}");
        let rel = (err / norm).sqrt();
        assert!((rel - sum.rel_l2_error).abs() < 1e-3, "{rel} {sum:?}");
        assert_eq!(read(&p("c.safetensors"), "frozen"), noise(5, 3));
    }

    #[test]
    fn a_shape_mismatch_names_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.st"), dir.path().join("b.st"));
        save(&a, &[("layer.weight", f32s(&noise(12, 1), &[3, 4]))]);
        save(&b, &[("layer.weight", f32s(&noise(12, 2), &[4, 3]))]);
        let e = compress(&a, &b, &Settings::default(), None).unwrap_err();
        assert!(matches!(&e, Error::Shape { name, .. } if name == "layer.weight"));
        let msg = e.to_string();
        assert!(
            msg.contains("layer.weight") && msg.contains("[3, 4]") && msg.contains("b.st"),
            "{msg}"
        );
    }

    #[test]
    fn a_changed_non_float_tensor_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, d) = (
            dir.path().join("a.st"),
            dir.path().join("b.st"),
            dir.path().join("d.fzd"),
        );
        let ids = |v: &[u32]| Tensor::new(v, &Device::Cpu).unwrap();
        save(&a, &[("ids", ids(&[1, 2, 3]))]);
        save(&b, &[("ids", ids(&[1, 2, 4]))]);
        let e = compress(&a, &b, &Settings::default(), None).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("tensor ids") && msg.contains("not a float type"),
            "{msg}"
        );
        // A delta for a tensor that is an integer tensor in the base.
        save(&b, &[("ids", f32s(&[1.0, 2.0, 4.0], &[3]))]);
        save(&a, &[("ids", f32s(&[1.0, 2.0, 3.0], &[3]))]);
        compress(&a, &b, &Settings::default(), Some(&d)).unwrap();
        save(&a, &[("ids", ids(&[1, 2, 3]))]);
        let e = apply(&a, &d, &dir.path().join("c.st")).unwrap_err();
        assert!(
            matches!(&e, Error::NotFloat { name, dtype: DType::U32 } if name == "ids"),
            "{e}"
        );
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, gone) = (dir.path().join("a.st"), dir.path().join("gone.st"));
        save(&a, &[("w", f32s(&[1.0], &[1]))]);
        let e = compress(&a, &gone, &Settings::default(), None).unwrap_err();
        assert!(matches!(e, Error::Load { .. }), "{e}");
        assert!(e.to_string().contains("gone.st"), "{e}");
        let e = apply(&a, &dir.path().join("gone.fzd"), &dir.path().join("c.st")).unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "{e}");
        assert!(e.to_string().contains("gone.fzd"), "{e}");
        // Invalid settings fail before any file is read.
        let s = Settings {
            top_z: 2.0,
            ..Settings::default()
        };
        let e = compress(&gone, &gone, &s, None).unwrap_err();
        assert!(
            matches!(e, Error::Fedzip(fedzip::Error::Settings(_))),
            "{e}"
        );
    }
}
