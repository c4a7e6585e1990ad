//! Llama-family language models (SmolLM2 and kin) from GGUF files or Hugging
//! Face directories, as prompt classifiers or causal language models.
//!
//! All weights are dequantized to f32 and kept under Hugging Face names
//! (`model.embed_tokens.weight`, `model.layers.3.mlp.down_proj.weight`, …).
//! The forward pass is our own, over those very tensors (embedding → blocks
//! of RMS norm, rotary causal attention with grouped key/value heads and a
//! SwiGLU MLP → final norm → output layer), so
//! [`Model::write`](super::Model::write) (an in-place candle op) changes what
//! it computes. It matches candle-transformers'
//! `Llama::forward` (kept as [`Llama::reference_last_logits`] for
//! cross-checks) but returns logits at every position, and runs a batch of
//! different lengths in one forward: per-token work runs on the real tokens
//! only (packed row after row), attention on the right-padded layout, and
//! each row's logits are taken at its own last token. GGUF stores the Q/K
//! projections permuted for interleaved rotary embeddings; they are
//! un-permuted here because we rotate halves (the Hugging Face layout).
//! SmolLM2 ties the output layer to the token embedding.
//!
//! [`Head::Classify`]: the loss is the cross-entropy over the label words'
//! logits at the last position. [`Head::NextToken`]: the mean next-token
//! cross-entropy over every position, and "accuracy" is top-1 next-token
//! accuracy.
//!
//! Layout: loading (the [`Shape`], GGUF files and Hugging Face directories)
//! in `load`, the tokenizer in `tokens`, the forward pass in `forward`, the
//! losses, evaluation and backward pass (the [`Model`](super::Model)
//! implementation) in `loss`; this module holds the model and the weight
//! handles they share.

use super::{Error, ParamSpec};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

mod forward;
mod load;
mod loss;
#[cfg(test)]
mod tests;
mod tokens;

pub use load::Shape;
pub use tokens::{encode, tokenizer};

/// Where a model comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A GGUF file (tensors dequantized to f32; tokenizer from its metadata).
    Gguf(&'a Path),
    /// A Hugging Face directory: config.json, *.safetensors, tokenizer.json.
    HfDir(&'a Path),
}

/// What the model's loss scores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// Prompt classification: cross-entropy over these label tokens' logits
    /// at each example's last position (class i = token i).
    Classify(Vec<u32>),
    /// Causal language modelling: mean next-token cross-entropy over every
    /// position; a batch's labels are ignored.
    NextToken,
}

impl From<Vec<u32>> for Head {
    fn from(label_ids: Vec<u32>) -> Self {
        Head::Classify(label_ids)
    }
}

/// Handles to one block's weights (the same storage as `Llama::tensors`).
struct Block {
    attn_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    mlp_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// Handles to the weights the forward reads: the same storage as
/// `Llama::tensors`, or, when computing gradients, variables standing in for
/// the trainable ones.
struct Weights {
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
}

impl Weights {
    /// Views of `tensors` (in `specs` order) by their Hugging Face names.
    fn of(shape: &Shape, specs: &[ParamSpec], tensors: &[Tensor]) -> Self {
        let by_name: HashMap<&str, &Tensor> = specs
            .iter()
            .map(|s| s.name.as_str())
            .zip(tensors.iter())
            .collect();
        let get = |n: &str| -> Tensor { by_name[n].clone() };
        let blocks = (0..shape.layers)
            .map(|l| {
                let p = |n: &str| get(&format!("model.layers.{l}.{n}.weight"));
                Block {
                    attn_norm: p("input_layernorm"),
                    q: p("self_attn.q_proj"),
                    k: p("self_attn.k_proj"),
                    v: p("self_attn.v_proj"),
                    o: p("self_attn.o_proj"),
                    mlp_norm: p("post_attention_layernorm"),
                    gate: p("mlp.gate_proj"),
                    up: p("mlp.up_proj"),
                    down: p("mlp.down_proj"),
                }
            })
            .collect();
        let embed = get("model.embed_tokens.weight");
        let lm_head = if shape.tied {
            embed.clone()
        } else {
            get("lm_head.weight")
        };
        Self {
            embed,
            blocks,
            norm: get("model.norm.weight"),
            lm_head,
        }
    }
}

/// A llama run by our own forward pass over candle tensors.
pub struct Llama {
    shape: Shape,
    specs: Vec<ParamSpec>,
    tensors: Vec<Tensor>,
    w: Weights,
    /// Rotary tables, `[context, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
    head: Head,
}

/// The token ids of a batch, packed (real tokens only, row after row), with
/// the maps between packed rows and the right-padded `[rows, len]` layout
/// that attention uses (absent when every sequence has the same length).
struct Padded {
    /// Packed token ids, `[Σ lens]`.
    ids: Tensor,
    rows: usize,
    len: usize,
    lens: Vec<usize>,
    /// Packed index of each row's first token.
    offsets: Vec<usize>,
    /// Packed row of each padded position (a padding slot repeats its row's
    /// last token, whose output nothing real reads), and padded position of
    /// each packed row.
    maps: Option<(Tensor, Tensor)>,
}

impl Llama {
    /// Loads a model with the given head (a `Vec<u32>` of label tokens
    /// converts into [`Head::Classify`]).
    pub fn load(source: Source<'_>, head: impl Into<Head>) -> Result<Self, Error> {
        let (shape, ts) = match source {
            Source::Gguf(p) => load::load_gguf(p)?,
            Source::HfDir(p) => load::load_hf(p)?,
        };
        Self::from_tensors(shape, ts, head)
    }

    /// Builds the model from f32 tensors under Hugging Face names.
    pub fn from_tensors(
        shape: Shape,
        ts: HashMap<String, Tensor>,
        head: impl Into<Head>,
    ) -> Result<Self, Error> {
        let head = head.into();
        if let Head::Classify(label_ids) = &head {
            if label_ids.len() < 2 {
                return Err(Error::Load(
                    "a classifier needs at least 2 label tokens".into(),
                ));
            }
            if let Some(&bad) = label_ids.iter().find(|&&t| t as usize >= shape.vocab) {
                return Err(Error::Load(format!(
                    "label token {bad} outside the vocabulary ({})",
                    shape.vocab
                )));
            }
        }
        let specs = shape.params();
        let mut tensors = Vec::with_capacity(specs.len());
        for s in &specs {
            let t = ts
                .get(&s.name)
                .ok_or_else(|| Error::Load(format!("missing tensor {}", s.name)))?;
            if t.dims() != s.shape.as_slice() {
                return Err(Error::Load(format!(
                    "tensor {} has shape {:?}, expected {:?}",
                    s.name,
                    t.dims(),
                    s.shape
                )));
            }
            tensors.push(t.contiguous()?);
        }
        // Clones of tensor handles share their storage, so writes through
        // `tensors` are seen by the forward pass.
        let w = Weights::of(&shape, &specs, &tensors);
        // Rotary tables as in Hugging Face / candle-transformers (rotate halves).
        let hd = shape.hidden / shape.heads;
        let inv: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|i| 1f32 / shape.rope_theta.powf(i as f32 / hd as f32))
            .collect();
        let inv = Tensor::new(inv, &Device::Cpu)?.reshape((1, hd / 2))?;
        let pos = Tensor::arange(0, shape.context as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((shape.context, 1))?;
        let angles = pos.matmul(&inv)?;
        Ok(Self {
            cos: angles.cos()?,
            sin: angles.sin()?,
            shape,
            specs,
            tensors,
            w,
            head,
        })
    }

    /// The model's shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The head the loss uses.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The parameter tensors (shared with the forward pass), in `params()` order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
}
