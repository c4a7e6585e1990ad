//! Llama-family language models (SmolLM2 and kin) from GGUF files or Hugging
//! Face directories, as prompt classifiers or causal language models.
//!
//! All weights are dequantized to f32 and kept under Hugging Face names
//! (`model.embed_tokens.weight`, `model.layers.3.mlp.down_proj.weight`, …).
//! The forward pass is our own, over those very tensors (embedding → blocks
//! of RMS norm, rotary causal attention with grouped key/value heads and a
//! SwiGLU MLP → final norm → output layer), so [`Model::write`] (an in-place
//! candle op) changes what it computes. It matches candle-transformers'
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

use super::{Batch, Error, Eval, Model, ParamSpec};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama as cl;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::Tokenizer;

/// Where a model comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A GGUF file (tensors dequantized to f32; tokenizer from its metadata).
    Gguf(&'a Path),
    /// A Hugging Face directory: config.json, *.safetensors, tokenizer.json.
    HfDir(&'a Path),
}

fn load_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Load(format!("{}: {what}", path.display()))
}

/// Shape settings read from the model file.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Vocabulary size.
    pub vocab: usize,
    /// Hidden width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// RMS-norm epsilon.
    pub rms_eps: f64,
    /// Rotary base.
    pub rope_theta: f32,
    /// Longest sequence.
    pub context: usize,
    /// Output layer tied to the token embedding.
    pub tied: bool,
}

impl Shape {
    fn config(&self) -> cl::Config {
        cl::Config {
            hidden_size: self.hidden,
            intermediate_size: self.intermediate,
            vocab_size: self.vocab,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads,
            use_flash_attn: false,
            rms_norm_eps: self.rms_eps,
            rope_theta: self.rope_theta,
            bos_token_id: None,
            eos_token_id: None,
            rope_scaling: None,
            max_position_embeddings: self.context,
            tie_word_embeddings: self.tied,
        }
    }

    /// Hugging Face parameter names and shapes, in the model's fixed order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let (h, i) = (self.hidden, self.intermediate);
        let hd = h / self.heads;
        let kv = hd * self.kv_heads;
        let mut out = vec![ParamSpec {
            name: "model.embed_tokens.weight".into(),
            shape: vec![self.vocab, h],
        }];
        for l in 0..self.layers {
            let p = |n: &str, shape: Vec<usize>| ParamSpec {
                name: format!("model.layers.{l}.{n}"),
                shape,
            };
            out.extend([
                p("input_layernorm.weight", vec![h]),
                p("self_attn.q_proj.weight", vec![h, h]),
                p("self_attn.k_proj.weight", vec![kv, h]),
                p("self_attn.v_proj.weight", vec![kv, h]),
                p("self_attn.o_proj.weight", vec![h, h]),
                p("post_attention_layernorm.weight", vec![h]),
                p("mlp.gate_proj.weight", vec![i, h]),
                p("mlp.up_proj.weight", vec![i, h]),
                p("mlp.down_proj.weight", vec![h, i]),
            ]);
        }
        out.push(ParamSpec {
            name: "model.norm.weight".into(),
            shape: vec![h],
        });
        if !self.tied {
            out.push(ParamSpec {
                name: "lm_head.weight".into(),
                shape: vec![self.vocab, h],
            });
        }
        out
    }

    fn validate(&self) -> Result<(), String> {
        if self.heads == 0 || self.kv_heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return Err(format!(
                "hidden size {} is not a multiple of the {} heads",
                self.hidden, self.heads
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads)
            || !(self.hidden / self.heads).is_multiple_of(2)
        {
            return Err(format!(
                "unsupported head layout: {} heads, {} key/value heads, head size {}",
                self.heads,
                self.kv_heads,
                self.hidden / self.heads
            ));
        }
        if self.layers == 0 || self.vocab == 0 || self.context == 0 {
            return Err("zero layers, vocabulary or context".into());
        }
        Ok(())
    }
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

/// Reads the tokenizer of a model (GGUF metadata or tokenizer.json).
pub fn tokenizer(source: Source<'_>) -> Result<Tokenizer, Error> {
    match source {
        Source::Gguf(path) => {
            let mut f = std::fs::File::open(path).map_err(|e| load_err(path, e))?;
            let ct = gguf_file::Content::read(&mut f).map_err(|e| load_err(path, e))?;
            gguf_tokenizer(&ct).map_err(|e| load_err(path, e))
        }
        Source::HfDir(dir) => {
            let path = dir.join("tokenizer.json");
            Tokenizer::from_file(&path).map_err(|e| load_err(&path, e))
        }
    }
}

/// A byte-level BPE tokenizer from GGUF metadata, with SmolLM2's
/// pre-tokenizer (digits split individually, then GPT-2 byte-level, no prefix
/// space). No BOS/EOS is added.
fn gguf_tokenizer(ct: &gguf_file::Content) -> Result<Tokenizer, String> {
    use candle_core::quantized::tokenizer::TokenizerFromGguf;
    use tokenizers::pre_tokenizers::{
        byte_level::ByteLevel, digits::Digits, sequence::Sequence, PreTokenizerWrapper,
    };
    let mut t = Tokenizer::from_gguf(ct).map_err(|e| format!("tokenizer: {e}"))?;
    let pre = ct
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if !matches!(pre.as_str(), "smollm" | "gpt2" | "") {
        return Err(format!(
            "tokenizer.ggml.pre = {pre:?} is not supported (supported: smollm, gpt2)"
        ));
    }
    let seq: Vec<PreTokenizerWrapper> = if pre == "smollm" {
        vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ]
    } else {
        vec![ByteLevel::new(false, true, true).into()]
    };
    t.with_pre_tokenizer(Some(Sequence::new(seq)));
    Ok(t)
}

/// Token ids of `text` (no special tokens added).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, Error> {
    Ok(tok
        .encode(text, false)
        .map_err(|e| Error::Load(format!("tokenizing {text:?}: {e}")))?
        .get_ids()
        .to_vec())
}

fn meta_usize(ct: &gguf_file::Content, key: &str) -> Result<usize, String> {
    let v = ct
        .metadata
        .get(key)
        .ok_or_else(|| format!("missing metadata {key}"))?;
    let n = v
        .to_u32()
        .map(u64::from)
        .or_else(|_| v.to_u64())
        .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
        .map_err(|e| format!("metadata {key}: {e}"))?;
    usize::try_from(n).map_err(|e| format!("metadata {key}: {e}"))
}

fn meta_f32(ct: &gguf_file::Content, key: &str) -> Option<f32> {
    ct.metadata.get(key).and_then(|v| v.to_f32().ok())
}

/// Undoes llama.cpp's Q/K row permutation (interleaved → rotate-half layout).
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

fn load_gguf(path: &Path) -> Result<(Shape, HashMap<String, Tensor>), Error> {
    let mut f = std::fs::File::open(path).map_err(|e| load_err(path, e))?;
    let ct = gguf_file::Content::read(&mut f).map_err(|e| load_err(path, e))?;
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" {
        return Err(load_err(
            path,
            format!("architecture {arch:?} is not supported (only llama)"),
        ));
    }
    let m = |k: &str| meta_usize(&ct, &format!("llama.{k}")).map_err(|e| load_err(path, e));
    let heads = m("attention.head_count")?;
    let vocab = match ct.metadata.get("tokenizer.ggml.tokens") {
        Some(v) => v.to_vec().map(Vec::len).unwrap_or(0),
        None => 0,
    };
    let vocab = m("vocab_size").unwrap_or(vocab);
    let shape = Shape {
        vocab,
        hidden: m("embedding_length")?,
        intermediate: m("feed_forward_length")?,
        layers: m("block_count")?,
        heads,
        kv_heads: m("attention.head_count_kv").unwrap_or(heads),
        rms_eps: f64::from(meta_f32(&ct, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5)),
        rope_theta: meta_f32(&ct, "llama.rope.freq_base").unwrap_or(10_000.0),
        context: m("context_length")?,
        tied: !ct.tensor_infos.contains_key("output.weight"),
    };
    shape.validate().map_err(|e| load_err(path, e))?;
    let dev = Device::Cpu;
    let mut get = |name: &str| -> Result<Tensor, Error> {
        let q = ct
            .tensor(&mut f, name, &dev)
            .map_err(|e| load_err(path, format!("tensor {name}: {e}")))?;
        let t = q
            .dequantize(&dev)
            .map_err(|e| load_err(path, format!("dequantizing {name}: {e}")))?;
        Ok(t.to_dtype(DType::F32)?.contiguous()?)
    };
    let mut ts = HashMap::new();
    ts.insert(
        "model.embed_tokens.weight".to_string(),
        get("token_embd.weight")?,
    );
    ts.insert("model.norm.weight".to_string(), get("output_norm.weight")?);
    if !shape.tied {
        ts.insert("lm_head.weight".to_string(), get("output.weight")?);
    }
    for l in 0..shape.layers {
        for (gguf, hf) in [
            ("attn_norm", "input_layernorm"),
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("ffn_norm", "post_attention_layernorm"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
        ] {
            let mut t = get(&format!("blk.{l}.{gguf}.weight"))?;
            if gguf == "attn_q" {
                t = unpermute(&t, shape.heads)?;
            } else if gguf == "attn_k" {
                t = unpermute(&t, shape.kv_heads)?;
            }
            ts.insert(format!("model.layers.{l}.{hf}.weight"), t);
        }
    }
    Ok((shape, ts))
}

fn load_hf(dir: &Path) -> Result<(Shape, HashMap<String, Tensor>), Error> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| load_err(&cfg_path, e))?;
    let c: cl::LlamaConfig = serde_json::from_str(&text).map_err(|e| load_err(&cfg_path, e))?;
    let shape = Shape {
        vocab: c.vocab_size,
        hidden: c.hidden_size,
        intermediate: c.intermediate_size,
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads(),
        rms_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta,
        context: c.max_position_embeddings,
        tied: c.tie_word_embeddings.unwrap_or(false),
    };
    if c.rope_scaling.is_some() {
        return Err(load_err(&cfg_path, "rope_scaling is not supported"));
    }
    shape.validate().map_err(|e| load_err(&cfg_path, e))?;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| load_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(load_err(dir, "no *.safetensors files"));
    }
    let mut ts = HashMap::new();
    for p in files {
        let part = candle_core::safetensors::load(&p, &Device::Cpu).map_err(|e| load_err(&p, e))?;
        for (k, v) in part {
            ts.insert(k, v.to_dtype(DType::F32)?.contiguous()?);
        }
    }
    Ok((shape, ts))
}

impl Llama {
    /// Loads a model with the given head (a `Vec<u32>` of label tokens
    /// converts into [`Head::Classify`]).
    pub fn load(source: Source<'_>, head: impl Into<Head>) -> Result<Self, Error> {
        let (shape, ts) = match source {
            Source::Gguf(p) => load_gguf(p)?,
            Source::HfDir(p) => load_hf(p)?,
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

    /// Checks token ids and packs them; see [`Padded`].
    fn pad(&self, inputs: &[Vec<u32>]) -> Result<Padded, Error> {
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
    fn hidden(&self, p: &Padded) -> Result<Tensor, Error> {
        self.hidden_with(&self.w, p, false)
    }

    /// [`Llama::hidden`] over `w`; `differentiable` swaps candle's fused norm,
    /// softmax and rotary kernels (which have no backward pass) for their
    /// composed equivalents.
    fn hidden_with(&self, w: &Weights, p: &Padded, differentiable: bool) -> Result<Tensor, Error> {
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
    fn logits_at(
        &self,
        hidden: &Tensor,
        at: &[u32],
        vocab: Option<&Tensor>,
    ) -> Result<Tensor, Error> {
        self.logits_at_with(&self.w, hidden, at, vocab, false)
    }

    /// [`Llama::logits_at`] over `w` (see [`Llama::hidden_with`]).
    fn logits_at_with(
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

    /// Label-token logits per example, `[example][class]`, in batch order,
    /// from one padded forward.
    fn label_logits(&self, batch: &Batch, label_ids: &[u32]) -> Result<Vec<Vec<f32>>, Error> {
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

/// Packed row of each sequence's last token.
fn last_rows(p: &Padded) -> Vec<u32> {
    p.lens
        .iter()
        .enumerate()
        .map(|(r, &l)| (p.offsets[r] + l - 1) as u32)
        .collect()
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
        super::read_param(&self.tensors, i)
    }

    fn write(&mut self, i: usize, f: &mut dyn FnMut(&mut [f32])) -> Result<(), Error> {
        super::write_param(&self.tensors, i, f)
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
        let out = super::gradient_values(&grads, &vars, &lens)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_shape() -> Shape {
        Shape {
            vocab: 50,
            hidden: 16,
            intermediate: 24,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            context: 64,
            tied: true,
        }
    }

    fn random_model() -> Llama {
        let shape = tiny_shape();
        let mut ts = HashMap::new();
        let mut s = 1u64;
        for p in shape.params() {
            let v: Vec<f32> = (0..p.len())
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
                })
                .collect();
            let t = Tensor::from_vec(v, p.shape.as_slice(), &Device::Cpu).unwrap();
            ts.insert(p.name, t);
        }
        Llama::from_tensors(shape, ts, vec![3, 7]).unwrap()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut m = random_model();
        let b = Batch {
            inputs: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8, 9], vec![9, 10]],
            labels: vec![0, 1, 1],
        };
        let specs = m.params();
        // A norm weight, a projection and the (tied) embedding.
        let pick: Vec<usize> = [
            "model.layers.1.input_layernorm.weight",
            "model.layers.0.mlp.up_proj.weight",
            "model.embed_tokens.weight",
        ]
        .iter()
        .map(|n| specs.iter().position(|p| p.name == *n).unwrap())
        .collect();
        let (loss, grads) = m.gradients(&b, &pick).unwrap();
        assert!((loss - m.loss(&b).unwrap()).abs() < 1e-4, "{loss}");
        for (k, &i) in pick.iter().enumerate() {
            // The element with the largest gradient, checked by central differences.
            let (j, &g) = grads[k]
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            let h = 1e-2f32;
            let at = |m: &mut Llama, d: f32| {
                m.write(i, &mut |w| w[j] += d).unwrap();
                let l = m.loss(&b).unwrap();
                m.write(i, &mut |w| w[j] -= d).unwrap();
                l
            };
            let fd = (at(&mut m, h) - at(&mut m, -h)) / (2.0 * h);
            assert!(
                (fd - g).abs() <= 0.05 * g.abs() + 1e-3,
                "{}[{j}]: backprop {g}, finite difference {fd}",
                specs[i].name
            );
        }
        // The next-token head differentiates too.
        let mut t = random_model();
        t.head = Head::NextToken;
        let (l, g) = t.gradients(&b, &pick[..1]).unwrap();
        assert!(l.is_finite() && g[0].iter().any(|&x| x != 0.0));
    }

    #[test]
    fn writing_a_parameter_changes_the_logits() {
        let mut m = random_model();
        let b = Batch {
            inputs: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10]],
            labels: vec![0, 1, 1],
        };
        let before = m.evaluate(&b).unwrap();
        let names: Vec<String> = m.params().into_iter().map(|p| p.name).collect();
        for probe in [
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.norm.weight",
            "model.embed_tokens.weight",
        ] {
            let i = names.iter().position(|n| n == probe).unwrap();
            let saved = m.read(i).unwrap();
            m.write(i, &mut |w| w.iter_mut().for_each(|x| *x *= 1.5))
                .unwrap();
            let after = m.evaluate(&b).unwrap();
            assert_ne!(before.loss_sum, after.loss_sum, "{probe}");
            m.write(i, &mut |w| w.copy_from_slice(&saved)).unwrap();
            assert_eq!(m.evaluate(&b).unwrap(), before, "{probe} restored");
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn forward_matches_candle_transformers() {
        let m = random_model();
        let x = vec![vec![1, 2, 3, 4, 5, 6, 7], vec![9, 8, 7, 6, 5, 4, 3]];
        let ours = m.last_logits(&x).unwrap();
        let theirs = m.reference_last_logits(&x).unwrap();
        assert_eq!(ours.dims(), &[2, 50]);
        let d = max_diff(&ours, &theirs);
        assert!(d < 1e-5, "max |Δ| {d}");
        // Every position of the all-position logits is the last position of
        // the prefix ending there.
        let all = m.logits(&x).unwrap();
        assert_eq!(all.dims(), &[2, 7, 50]);
        for i in 0..7 {
            let prefix: Vec<Vec<u32>> = x.iter().map(|r| r[..=i].to_vec()).collect();
            let want = m.reference_last_logits(&prefix).unwrap();
            let got = all.narrow(1, i, 1).unwrap().squeeze(1).unwrap();
            let d = max_diff(&got, &want);
            assert!(d < 1e-5, "position {i}: max |Δ| {d}");
        }
    }

    #[test]
    fn padded_batch_matches_buckets_of_equal_length() {
        let m = random_model();
        let b = Batch {
            inputs: vec![
                vec![1, 2, 3],
                vec![4, 5],
                vec![6, 7, 8],
                vec![9],
                vec![10, 11, 12, 13, 14, 15, 16, 17],
            ],
            labels: vec![0, 1, 0, 1, 1],
        };
        let Head::Classify(ids) = m.head().clone() else {
            unreachable!()
        };
        let padded = m.label_logits(&b, &ids).unwrap();
        let mut buckets: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, x) in b.inputs.iter().enumerate() {
            buckets.entry(x.len()).or_default().push(i);
        }
        for members in buckets.values() {
            let xs: Vec<Vec<u32>> = members.iter().map(|&i| b.inputs[i].clone()).collect();
            let full = m
                .reference_last_logits(&xs)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (row, &i) in full.iter().zip(members) {
                for (c, &t) in ids.iter().enumerate() {
                    let (a, s) = (padded[i][c], row[t as usize]);
                    assert!((a - s).abs() < 1e-4, "example {i} class {c}: {a} vs {s}");
                }
            }
        }
    }

    #[test]
    fn next_token_loss_is_the_mean_cross_entropy_of_every_position() {
        let mut ts = HashMap::new();
        let base = random_model();
        for (p, t) in base.params().into_iter().zip(base.tensors()) {
            ts.insert(p.name, t.copy().unwrap());
        }
        let mut m = Llama::from_tensors(tiny_shape(), ts, Head::NextToken).unwrap();
        let b = Batch {
            inputs: vec![vec![1, 2, 3, 4, 5], vec![6, 7, 8]],
            labels: vec![0, 0],
        };
        let e = m.evaluate(&b).unwrap();
        assert_eq!(e.n, 4 + 2);
        // By hand, from the all-position logits of each sequence alone.
        let (mut sum, mut hits) = (0.0, 0);
        for x in &b.inputs {
            let l = m.logits(std::slice::from_ref(x)).unwrap();
            let l = l.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            for i in 0..x.len() - 1 {
                let row = &l[i];
                let lse = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
                sum += lse - f64::from(row[x[i + 1] as usize]);
                let best = (0..row.len())
                    .max_by(|&a, &c| row[a].total_cmp(&row[c]))
                    .unwrap();
                hits += usize::from(best == x[i + 1] as usize);
            }
        }
        assert!((e.loss_sum - sum).abs() < 1e-4, "{} vs {sum}", e.loss_sum);
        assert_eq!(e.correct, hits);
        let mean = m.loss(&b).unwrap();
        assert!((f64::from(mean) - sum / 6.0).abs() < 1e-5);
        // A uniform guess over 50 tokens costs ln 50 ≈ 3.9; random weights are
        // near it.
        assert!((2.0..6.0).contains(&mean), "{mean}");
        m.write(0, &mut |w| w.iter_mut().for_each(|x| *x *= 2.0))
            .unwrap();
        assert_ne!(m.loss(&b).unwrap(), mean);
        let one = Batch {
            inputs: vec![vec![3]],
            labels: vec![0],
        };
        assert!(m.loss(&one).is_err());
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, r/h/2, c).swapaxes(1, 2).reshape(r, c)
        let (h, r, c) = (2usize, 8usize, 3usize);
        let hf: Vec<f32> = (0..r * c).map(|x| x as f32).collect();
        let hf_t = Tensor::from_vec(hf.clone(), (r, c), &Device::Cpu).unwrap();
        let gguf = hf_t
            .reshape((h, 2, r / h / 2, c))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((r, c))
            .unwrap();
        assert_ne!(gguf.flatten_all().unwrap().to_vec1::<f32>().unwrap(), hf);
        let back = unpermute(&gguf, h).unwrap();
        assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(), hf);
    }

    #[test]
    fn bad_batches_are_errors() {
        let m = random_model();
        let bad = Batch {
            inputs: vec![vec![1, 99]],
            labels: vec![0],
        };
        assert!(m.loss(&bad).is_err());
        let bad = Batch {
            inputs: vec![vec![1]],
            labels: vec![5],
        };
        assert!(m.loss(&bad).is_err());
        assert!(m.loss(&Batch::default()).is_err());
    }
}
