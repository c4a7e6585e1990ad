//! Losses and evaluation of a llama (label-word classification or next-token
//! prediction), and the backward pass for first-order training: the
//! [`Model`] implementation.

use super::forward::last_rows;
use super::{Head, Llama, Padded, Weights};
use crate::model::{Batch, Error, Eval, Model, ParamSpec};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

impl Llama {
    /// Mean loss of `batch` as a tensor over `w` (differentiable ops): the
    /// classifier's cross-entropy over the label tokens, or the next-token
    /// cross-entropy over every predicted position.
    fn loss_tensor(&self, w: &Weights, batch: &Batch) -> Result<Tensor, Error> {
        let p = self.pad(&batch.inputs)?;
        let h = self.hidden_with(w, &p, true)?;
        match &self.head {
            Head::Classify(label_ids) => {
                if batch.labels.len() != batch.inputs.len() {
                    return Err(Error::Batch("labels and inputs differ in number".into()));
                }
                if let Some(&bad) = batch
                    .labels
                    .iter()
                    .find(|&&l| l as usize >= label_ids.len())
                {
                    return Err(Error::Batch(format!("label {bad} outside the classes")));
                }
                let ids = Tensor::from_slice(label_ids, label_ids.len(), &Device::Cpu)?;
                let logits = self.logits_at_with(w, &h, &last_rows(&p), Some(&ids), true)?;
                let labels = Tensor::from_slice(&batch.labels, batch.labels.len(), &Device::Cpu)?;
                Ok(candle_nn::loss::cross_entropy(&logits, &labels)?)
            }
            Head::NextToken => {
                let (at, targets) = next_token_targets(batch, &p)?;
                let logits = self.logits_at_with(w, &h, &at, None, true)?;
                let n = targets.len();
                let targets = Tensor::from_vec(targets, n, &Device::Cpu)?;
                Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
            }
        }
    }

    /// Label-token logits per example, `[example][class]`, in batch order,
    /// from one padded forward.
    pub(super) fn label_logits(
        &self,
        batch: &Batch,
        label_ids: &[u32],
    ) -> Result<Vec<Vec<f32>>, Error> {
        if batch.labels.len() != batch.inputs.len() {
            return Err(Error::Batch("labels and inputs differ in number".into()));
        }
        if let Some(&bad) = batch
            .labels
            .iter()
            .find(|&&l| l as usize >= label_ids.len())
        {
            return Err(Error::Batch(format!("label {bad} outside the classes")));
        }
        let p = self.pad(&batch.inputs)?;
        let h = self.hidden(&p)?;
        let ids = Tensor::from_slice(label_ids, label_ids.len(), &Device::Cpu)?;
        Ok(self.logits_at(&h, &last_rows(&p), Some(&ids))?.to_vec2()?)
    }

    /// Next-token cross-entropy summed over every predicted position, with
    /// the number of positions and of top-1 hits.
    fn next_token(&self, batch: &Batch) -> Result<Eval, Error> {
        let p = self.pad(&batch.inputs)?;
        let (at, targets) = next_token_targets(batch, &p)?;
        let h = self.hidden(&p)?;
        let mut e = Eval::default();
        // Bounded memory: at most CHUNK × vocab logits at once.
        const CHUNK: usize = 256;
        for (rows, ys) in at.chunks(CHUNK).zip(targets.chunks(CHUNK)) {
            let logits = self.logits_at(&h, rows, None)?;
            let flat = logits.flatten_all()?.to_vec1::<f32>()?;
            let scored: Vec<(f64, bool)> = flat
                .par_chunks(self.shape.vocab)
                .zip(ys.par_iter())
                .map(|(row, &y)| score(row, y))
                .collect();
            for (loss, ok) in scored {
                e.loss_sum += loss;
                e.correct += usize::from(ok);
                e.n += 1;
            }
        }
        Ok(e)
    }
}

/// Packed rows that predict a next token, and the tokens they predict.
fn next_token_targets(batch: &Batch, p: &Padded) -> Result<(Vec<u32>, Vec<u32>), Error> {
    let mut at = Vec::new();
    let mut targets = Vec::new();
    for (r, x) in batch.inputs.iter().enumerate() {
        for i in 0..x.len().saturating_sub(1) {
            at.push((p.offsets[r] + i) as u32);
            targets.push(x[i + 1]);
        }
    }
    if at.is_empty() {
        return Err(Error::Batch(
            "no next-token targets (every sequence has a single token)".into(),
        ));
    }
    Ok((at, targets))
}

/// Cross-entropy of class `label` and whether the argmax is `label`.
fn score(logits: &[f32], label: u32) -> (f64, bool) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = f64::from(max)
        + logits
            .iter()
            .map(|&v| f64::from(v - max).exp())
            .sum::<f64>()
            .ln();
    let l = label as usize;
    let best = logits
        .iter()
        .enumerate()
        .fold(0, |b, (i, &v)| if v > logits[b] { i } else { b });
    (lse - f64::from(logits[l]), best == l)
}

impl Model for Llama {
    fn params(&self) -> Vec<ParamSpec> {
        self.specs.clone()
    }

    fn read(&self, i: usize) -> Result<Vec<f32>, Error> {
        crate::model::read_param(&self.tensors, i)
    }

    fn write(&mut self, i: usize, f: &mut dyn FnMut(&mut [f32])) -> Result<(), Error> {
        crate::model::write_param(&self.tensors, i, f)
    }

    fn hf_config(&self) -> Option<serde_json::Value> {
        Some(self.shape.hf_config())
    }

    fn loss(&self, batch: &Batch) -> Result<f32, Error> {
        let e = self.evaluate(batch)?;
        Ok(e.loss() as f32)
    }

    /// Backprop through the differentiable forward: variables (copies) stand
    /// in for the parameters `params`; the output layer tied to the
    /// embedding accumulates both uses.
    fn gradients(&self, batch: &Batch, params: &[usize]) -> Result<(f32, Vec<Vec<f32>>), Error> {
        let mut ts = self.tensors.clone();
        let mut vars = Vec::with_capacity(params.len());
        for &i in params {
            let t = self
                .tensors
                .get(i)
                .ok_or_else(|| Error::NoParam(i.to_string()))?;
            let v = candle_core::Var::from_tensor(t)?;
            ts[i] = v.as_tensor().clone();
            vars.push(v);
        }
        let w = Weights::of(&self.shape, &self.specs, &ts);
        let loss = self.loss_tensor(&w, batch)?;
        let grads = loss.backward()?;
        let vars: Vec<&candle_core::Var> = vars.iter().collect();
        let lens: Vec<usize> = params.iter().map(|&i| self.specs[i].len()).collect();
        let out = crate::model::gradient_values(&grads, &vars, &lens)?;
        Ok((loss.to_scalar::<f32>()?, out))
    }

    /// Classification: per-example loss and accuracy. Next-token: `n` counts
    /// predicted positions, `correct` the top-1 hits among them.
    fn evaluate(&self, batch: &Batch) -> Result<Eval, Error> {
        let label_ids = match &self.head {
            Head::NextToken => return self.next_token(batch),
            Head::Classify(ids) => ids,
        };
        let rows = self.label_logits(batch, label_ids)?;
        let mut e = Eval {
            n: batch.len(),
            ..Eval::default()
        };
        for (row, &label) in rows.iter().zip(&batch.labels) {
            let (loss, ok) = score(row, label);
            e.loss_sum += loss;
            e.correct += usize::from(ok);
        }
        Ok(e)
    }
}
