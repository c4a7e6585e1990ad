//! The forward pass of a llama over its own tensors: packing a batch of
//! different lengths, the blocks (RMS norm, rotary grouped-query attention,
//! SwiGLU MLP), the output layer, and candle-transformers' forward as a
//! reference.

use super::{Llama, Padded, Weights};
use crate::model::Error;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama as cl;
use std::collections::HashMap;

impl Llama {
    /// Checks token ids and packs them; see [`Padded`].
    pub(super) fn pad(&self, inputs: &[Vec<u32>]) -> Result<Padded, Error> {
        let rows = inputs.len();
        let len = inputs.iter().map(Vec::len).max().unwrap_or(0);
        if rows == 0 || inputs.iter().any(Vec::is_empty) {
            return Err(Error::Batch("empty batch or empty sequence".into()));
        }
        if len > self.shape.context {
            return Err(Error::Batch(format!(
                "sequence of {len} tokens exceeds the context ({})",
                self.shape.context
            )));
        }
        let lens: Vec<usize> = inputs.iter().map(Vec::len).collect();
        let mut ids = Vec::with_capacity(lens.iter().sum());
        let mut offsets = Vec::with_capacity(rows);
        for x in inputs {
            if let Some(&bad) = x.iter().find(|&&t| t as usize >= self.shape.vocab) {
                return Err(Error::Batch(format!("token {bad} outside the vocabulary")));
            }
            offsets.push(ids.len());
            ids.extend_from_slice(x);
        }
        let maps = if lens.iter().all(|&l| l == len) {
            None
        } else {
            let mut to_padded = Vec::with_capacity(rows * len);
            let mut to_packed = Vec::with_capacity(ids.len());
            for (r, (&off, &l)) in offsets.iter().zip(&lens).enumerate() {
                to_padded.extend((0..len).map(|i| (off + i.min(l - 1)) as u32));
                to_packed.extend((0..l).map(|i| (r * len + i) as u32));
            }
            let n = to_packed.len();
            Some((
                Tensor::from_vec(to_padded, rows * len, &Device::Cpu)?,
                Tensor::from_vec(to_packed, n, &Device::Cpu)?,
            ))
        };
        let n = ids.len();
        Ok(Padded {
            ids: Tensor::from_vec(ids, n, &Device::Cpu)?,
            rows,
            len,
            lens,
            offsets,
            maps,
        })
    }

    /// Hidden states after the last block (before the final norm), packed:
    /// `[Σ lens, hidden]`. Per-token work (norms, projections, MLP) runs on
    /// real tokens only; attention runs on the right-padded layout, which
    /// needs no key mask: with the causal mask, position i only attends to
    /// positions ≤ i, which are real tokens wherever i is.
    pub(super) fn hidden(&self, p: &Padded) -> Result<Tensor, Error> {
        self.hidden_with(&self.w, p, false)
    }

    /// [`Llama::hidden`] over `w`; `differentiable` swaps candle's fused norm,
    /// softmax and rotary kernels (which have no backward pass) for their
    /// composed equivalents.
    pub(super) fn hidden_with(
        &self,
        w: &Weights,
        p: &Padded,
        differentiable: bool,
    ) -> Result<Tensor, Error> {
        let rms = |x: &Tensor, a: &Tensor, eps: f32| {
            if differentiable {
                candle_nn::ops::rms_norm_slow(x, a, eps)
            } else {
                candle_nn::ops::rms_norm(x, a, eps)
            }
        };
        let rope = |x: &Tensor, c: &Tensor, s: &Tensor| {
            if differentiable {
                candle_nn::rotary_emb::rope_slow(x, c, s)
            } else {
                candle_nn::rotary_emb::rope(x, c, s)
            }
        };
        let s = &self.shape;
        let (b, t) = (p.rows, p.len);
        let hd = s.hidden / s.heads;
        let groups = s.heads / s.kv_heads;
        let eps = s.rms_eps as f32;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let linear = |x: &Tensor, w: &Tensor| x.matmul(&w.t()?);
        let heads = |x: Tensor, n: usize| -> candle_core::Result<Tensor> {
            let x = match &p.maps {
                Some((to_padded, _)) => x.index_select(to_padded, 0)?,
                None => x,
            };
            x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let mut x = w.embed.index_select(&p.ids, 0)?;
        for blk in &w.blocks {
            let h = rms(&x, &blk.attn_norm, eps)?;
            let q = heads(linear(&h, &blk.q)?, s.heads)?;
            let k = heads(linear(&h, &blk.k)?, s.kv_heads)?;
            let v = heads(linear(&h, &blk.v)?, s.kv_heads)?;
            let q = rope(&q, &cos, &sin)?;
            let k = rope(&k, &cos, &sin)?;
            // Grouped-query attention without copying keys: the query heads
            // sharing a key/value head are stacked along the rows.
            let q = q.reshape((b, s.kv_heads, groups * t, hd))?;
            let att = (q.matmul(&k.t()?)? * scale)?
                .reshape((b, s.kv_heads, groups, t, t))?
                .broadcast_add(&mask)?
                .reshape((b, s.kv_heads, groups * t, t))?;
            let att = if differentiable {
                candle_nn::ops::softmax(&att, candle_core::D::Minus1)?
            } else {
                candle_nn::ops::softmax_last_dim(&att)?
            };
            let y = att
                .matmul(&v)?
                .reshape((b, s.heads, t, hd))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * t, s.hidden))?;
            let y = match &p.maps {
                Some((_, to_packed)) => y.index_select(to_packed, 0)?,
                None => y,
            };
            x = (linear(&y, &blk.o)? + x)?;
            let h = rms(&x, &blk.mlp_norm, eps)?;
            let g = candle_nn::ops::silu(&linear(&h, &blk.gate)?)?;
            let u = linear(&h, &blk.up)?;
            x = (linear(&(g * u)?, &blk.down)? + x)?;
        }
        Ok(x)
    }

    /// Final norm then output layer on hidden-state rows `at` (flat indices).
    pub(super) fn logits_at(
        &self,
        hidden: &Tensor,
        at: &[u32],
        vocab: Option<&Tensor>,
    ) -> Result<Tensor, Error> {
        self.logits_at_with(&self.w, hidden, at, vocab, false)
    }

    /// [`Llama::logits_at`] over `w` (see [`Llama::hidden_with`]).
    pub(super) fn logits_at_with(
        &self,
        w: &Weights,
        hidden: &Tensor,
        at: &[u32],
        vocab: Option<&Tensor>,
        differentiable: bool,
    ) -> Result<Tensor, Error> {
        let idx = Tensor::from_slice(at, at.len(), &Device::Cpu)?;
        let h = hidden.index_select(&idx, 0)?;
        let eps = self.shape.rms_eps as f32;
        let h = if differentiable {
            candle_nn::ops::rms_norm_slow(&h, &w.norm, eps)?
        } else {
            candle_nn::ops::rms_norm(&h, &w.norm, eps)?
        };
        let out = match vocab {
            Some(ids) => w.lm_head.index_select(ids, 0)?,
            None => w.lm_head.clone(),
        };
        Ok(h.matmul(&out.t()?)?)
    }

    /// Logits over the whole vocabulary at every position of equal-length
    /// sequences, `[rows, len, vocab]`.
    pub fn logits(&self, inputs: &[Vec<u32>]) -> Result<Tensor, Error> {
        let p = self.pad(inputs)?;
        if p.lens.iter().any(|&l| l != p.len) {
            return Err(Error::Batch("sequences of unequal length".into()));
        }
        let h = self.hidden(&p)?;
        let all: Vec<u32> = (0..(p.rows * p.len) as u32).collect();
        Ok(self
            .logits_at(&h, &all, None)?
            .reshape((p.rows, p.len, self.shape.vocab))?)
    }

    /// Logits over the whole vocabulary at each sequence's own last token,
    /// `[rows, vocab]`; sequences may differ in length (one padded forward).
    pub fn last_logits(&self, inputs: &[Vec<u32>]) -> Result<Tensor, Error> {
        let p = self.pad(inputs)?;
        let h = self.hidden(&p)?;
        self.logits_at(&h, &last_rows(&p), None)
    }

    /// candle-transformers' `Llama::forward` over the same tensors (last
    /// position of equal-length sequences): the cross-check of our forward.
    pub fn reference_last_logits(&self, inputs: &[Vec<u32>]) -> Result<Tensor, Error> {
        let p = self.pad(inputs)?;
        if p.lens.iter().any(|&l| l != p.len) {
            return Err(Error::Batch("sequences of unequal length".into()));
        }
        let ts: HashMap<String, Tensor> = self
            .specs
            .iter()
            .map(|s| s.name.clone())
            .zip(self.tensors.iter().cloned())
            .collect();
        let cfg = self.shape.config();
        let vb = candle_nn::VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
        let inner = cl::Llama::load(vb, &cfg)?;
        let mut cache = cl::Cache::new(false, DType::F32, &cfg, &Device::Cpu)?;
        let ids = p.ids.reshape((p.rows, p.len))?;
        Ok(inner.forward(&ids, 0, &mut cache)?)
    }
}

/// Packed row of each sequence's last token.
pub(super) fn last_rows(p: &Padded) -> Vec<u32> {
    p.lens
        .iter()
        .enumerate()
        .map(|(r, &l)| (p.offsets[r] + l - 1) as u32)
        .collect()
}
