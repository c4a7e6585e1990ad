//! Llama-family language models (SmolLM2 and kin) from GGUF files or Hugging
//! Face directories, run by candle-transformers, as prompt classifiers.
//!
//! All weights are dequantized to f32 and kept under Hugging Face names
//! (`model.embed_tokens.weight`, `model.layers.3.mlp.down_proj.weight`, …).
//! The model is built through `VarBuilder::from_tensors` from those very
//! tensors, and candle's layers keep handles to the same storage, so
//! [`Model::write`] (an in-place candle op) changes what the forward pass
//! computes. GGUF stores the Q/K projections permuted for interleaved rotary
//! embeddings; they are un-permuted here because candle-transformers rotates
//! halves (the Hugging Face layout). SmolLM2 ties the output layer to the
//! token embedding.
//!
//! The classification loss is the cross-entropy over the label words' logits
//! at the last position. candle-transformers' `Llama::forward` takes no
//! attention mask, so a batch is run in buckets of equal token length.

use super::{Batch, Error, Eval, Model, ParamSpec};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama as cl;
use std::collections::{BTreeMap, HashMap};
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

/// A llama as a prompt classifier over fixed label tokens.
pub struct Llama {
    inner: cl::Llama,
    cache: cl::Cache,
    shape: Shape,
    specs: Vec<ParamSpec>,
    tensors: Vec<Tensor>,
    label_ids: Vec<u32>,
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
    /// Loads a model and fixes the label tokens the classifier scores.
    pub fn load(source: Source<'_>, label_ids: Vec<u32>) -> Result<Self, Error> {
        let (shape, ts) = match source {
            Source::Gguf(p) => load_gguf(p)?,
            Source::HfDir(p) => load_hf(p)?,
        };
        Self::from_tensors(shape, ts, label_ids)
    }

    /// Builds the model from f32 tensors under Hugging Face names.
    pub fn from_tensors(
        shape: Shape,
        mut ts: HashMap<String, Tensor>,
        label_ids: Vec<u32>,
    ) -> Result<Self, Error> {
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
            tensors.push(t.clone());
        }
        // Only the tensors the model uses; the VarBuilder hands out clones of
        // these very handles (same storage).
        let used: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        ts.retain(|k, _| used.contains(k.as_str()));
        let cfg = shape.config();
        let vb = candle_nn::VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
        let inner = cl::Llama::load(vb, &cfg)?;
        let cache = cl::Cache::new(false, DType::F32, &cfg, &Device::Cpu)?;
        Ok(Self {
            inner,
            cache,
            shape,
            specs,
            tensors,
            label_ids,
        })
    }

    /// The model's shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The parameter tensors (shared with the forward pass), in `params()` order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// Last-position logits over the whole vocabulary for equal-length sequences.
    pub fn last_logits(&self, inputs: &[Vec<u32>]) -> Result<Tensor, Error> {
        let b = inputs.len();
        let len = inputs.first().map_or(0, Vec::len);
        if b == 0 || len == 0 {
            return Err(Error::Batch("empty batch or empty sequence".into()));
        }
        if len > self.shape.context {
            return Err(Error::Batch(format!(
                "sequence of {len} tokens exceeds the context ({})",
                self.shape.context
            )));
        }
        let mut ids = Vec::with_capacity(b * len);
        for x in inputs {
            if x.len() != len {
                return Err(Error::Batch("sequences of unequal length".into()));
            }
            if let Some(&bad) = x.iter().find(|&&t| t as usize >= self.shape.vocab) {
                return Err(Error::Batch(format!("token {bad} outside the vocabulary")));
            }
            ids.extend_from_slice(x);
        }
        let ids = Tensor::from_vec(ids, (b, len), &Device::Cpu)?;
        let mut cache = self.cache.clone();
        Ok(self.inner.forward(&ids, 0, &mut cache)?)
    }

    /// Label-token logits per example, `[example][class]`, in batch order.
    fn label_logits(&self, batch: &Batch) -> Result<Vec<Vec<f32>>, Error> {
        if batch.labels.len() != batch.inputs.len() {
            return Err(Error::Batch("labels and inputs differ in number".into()));
        }
        if batch.is_empty() {
            return Err(Error::Batch("empty batch".into()));
        }
        if let Some(&bad) = batch
            .labels
            .iter()
            .find(|&&l| l as usize >= self.label_ids.len())
        {
            return Err(Error::Batch(format!("label {bad} outside the classes")));
        }
        let mut buckets: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, x) in batch.inputs.iter().enumerate() {
            buckets.entry(x.len()).or_default().push(i);
        }
        let idx = Tensor::from_vec(self.label_ids.clone(), self.label_ids.len(), &Device::Cpu)?;
        let mut out = vec![Vec::new(); batch.len()];
        for members in buckets.values() {
            let inputs: Vec<Vec<u32>> = members.iter().map(|&i| batch.inputs[i].clone()).collect();
            let logits = self.last_logits(&inputs)?.index_select(&idx, 1)?;
            for (row, &i) in logits.to_vec2::<f32>()?.into_iter().zip(members) {
                out[i] = row;
            }
        }
        Ok(out)
    }
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

    fn evaluate(&self, batch: &Batch) -> Result<Eval, Error> {
        let rows = self.label_logits(batch)?;
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

    #[test]
    fn buckets_match_single_forwards() {
        let m = random_model();
        let b = Batch {
            inputs: vec![vec![1, 2, 3], vec![4, 5], vec![6, 7, 8]],
            labels: vec![0, 1, 0],
        };
        let all = m.label_logits(&b).unwrap();
        for (i, x) in b.inputs.iter().enumerate() {
            let one = Batch {
                inputs: vec![x.clone()],
                labels: vec![b.labels[i]],
            };
            let single = m.label_logits(&one).unwrap();
            for (a, s) in all[i].iter().zip(&single[0]) {
                assert!((a - s).abs() < 1e-5, "{a} vs {s}");
            }
        }
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
