//! Top-z sparsification and 1-D k-means quantization of each tensor.

use super::{context, Delta, Error, Settings, SparseTensor, MAX_LEN, MAX_NAME};
use std::collections::HashSet;

/// Top-z sparsification (the largest magnitudes, exact zeros never kept) and
/// k-means quantization of each tensor.
///
/// Rejects invalid settings, non-finite values (naming the tensor and
/// element), tensors of more than 2^32 elements, empty, over-long or duplicate
/// names.
pub fn compress(tensors: &[(&str, &[f32])], s: &Settings) -> Result<Delta, Error> {
    use rayon::prelude::*;
    s.validate("fedzip").map_err(Error::Settings)?;
    let mut names = HashSet::new();
    for (i, (name, values)) in tensors.iter().enumerate() {
        if !names.insert(*name) {
            return Err(Error::DuplicateName {
                name: name.to_string(),
            });
        }
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Error::Invalid {
                context: context(i, name),
                message: format!("name must be 1..={MAX_NAME} bytes, got {}", name.len()),
            });
        }
        if values.len() as u64 > MAX_LEN {
            return Err(Error::Invalid {
                context: context(i, name),
                message: format!("{} elements exceed 2^32", values.len()),
            });
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                name: name.to_string(),
                index,
                value: values[index],
            });
        }
    }
    let tensors = tensors
        .par_iter()
        .map(|(name, values)| compress_one(name, values, s))
        .collect();
    Ok(Delta { tensors })
}

/// Number of entries kept of `len` at fraction `top_z`.
pub fn kept_count(len: usize, top_z: f64) -> usize {
    if len == 0 {
        return 0;
    }
    let k = (top_z * len as f64).ceil();
    if k >= len as f64 {
        len
    } else if k >= 1.0 {
        k as usize
    } else {
        1
    }
}

fn compress_one(name: &str, values: &[f32], s: &Settings) -> SparseTensor {
    // Exact zeros carry nothing: an untouched tensor (or row) costs no entries.
    let nonzero = values.iter().filter(|&&v| v != 0.0).count();
    let keep = kept_count(values.len(), s.top_z).min(nonzero);
    let positions = top_positions(values, keep);
    let kept: Vec<f32> = positions.iter().map(|&p| values[p as usize]).collect();
    let (centroids, ids) = if kept.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        kmeans(&kept, s.clusters, s.iterations)
    };
    SparseTensor {
        name: name.to_string(),
        len: values.len() as u64,
        centroids,
        positions,
        ids,
    }
}

/// Positions of the `keep` entries largest in magnitude (ties: lower index
/// first), in increasing order.
fn top_positions(values: &[f32], keep: usize) -> Vec<u32> {
    if keep == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..values.len() as u64).map(|i| i as u32).collect();
    if keep < idx.len() {
        // A strict total order (values are finite), so the kept set is unique.
        idx.select_nth_unstable_by(keep - 1, |&a, &b| {
            let (x, y) = (values[a as usize].abs(), values[b as usize].abs());
            y.total_cmp(&x).then(a.cmp(&b))
        });
        idx.truncate(keep);
    }
    idx.sort_unstable();
    idx
}

/// 1-D k-means: centroids start evenly spaced between min and max, then
/// `iterations` Lloyd steps; returns the centroids and each value's id.
fn kmeans(values: &[f32], k: usize, iterations: usize) -> (Vec<f32>, Vec<u8>) {
    let (mut lo, mut hi) = (values[0], values[0]);
    for &v in values {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    let mut centroids: Vec<f32> = (0..k)
        .map(|j| {
            if k == 1 {
                (lo + (hi - lo) / 2.0) as f32
            } else {
                (lo + (hi - lo) * j as f64 / (k - 1) as f64) as f32
            }
        })
        .collect();
    let mut ids = vec![0u8; values.len()];
    let mut sums = vec![0f64; k];
    let mut counts = vec![0u64; k];
    for _ in 0..iterations {
        assign(values, &centroids, &mut ids);
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        for (&v, &id) in values.iter().zip(&ids) {
            sums[id as usize] += f64::from(v);
            counts[id as usize] += 1;
        }
        for j in 0..k {
            if counts[j] > 0 {
                centroids[j] = (sums[j] / counts[j] as f64) as f32;
            }
        }
    }
    assign(values, &centroids, &mut ids);
    (centroids, ids)
}

/// Nearest centroid of each value (ties: lower index).
fn assign(values: &[f32], centroids: &[f32], ids: &mut [u8]) {
    for (&v, id) in values.iter().zip(ids.iter_mut()) {
        let v = f64::from(v);
        let mut best = 0usize;
        let mut best_d = (v - f64::from(centroids[0])).abs();
        for (j, &c) in centroids.iter().enumerate().skip(1) {
            let d = (v - f64::from(c)).abs();
            if d < best_d {
                best = j;
                best_d = d;
            }
        }
        *id = best as u8;
    }
}
