//! Loading a llama: the [`Shape`] (from GGUF metadata or config.json) and
//! the f32 weights under Hugging Face names, from a GGUF file (dequantized,
//! Q/K un-permuted) or a Hugging Face directory of safetensors.

use crate::model::{Error, ParamSpec};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama as cl;
use std::collections::HashMap;
use std::path::Path;

pub(super) fn load_err(path: &Path, what: impl std::fmt::Display) -> Error {
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
    pub(super) fn config(&self) -> cl::Config {
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

    /// A Hugging Face `config.json` for this shape (`LlamaForCausalLM`, f32):
    /// what transformers and [`load_hf`] read back.
    pub fn hf_config(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "vocab_size": self.vocab,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.hidden / self.heads,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.context,
            "tie_word_embeddings": self.tied,
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
        })
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
pub(super) fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

pub(super) fn load_gguf(path: &Path) -> Result<(Shape, HashMap<String, Tensor>), Error> {
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

pub(super) fn load_hf(dir: &Path) -> Result<(Shape, HashMap<String, Tensor>), Error> {
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
