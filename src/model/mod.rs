//! The model interface the trainer drives, and the models that implement it.
//!
//! A [`Model`] exposes its parameters as named flat f32 views (in a fixed
//! order), lets the trainer overwrite a parameter in place, and computes the
//! loss and predictions of a [`Batch`] at the current weights. The built-in
//! [`tiny::Tiny`] classifier needs no download; [`llama::Llama`] runs
//! SmolLM2-class models (GGUF or Hugging Face directories) with
//! candle-transformers as prompt classifiers.

pub mod llama;
pub mod tiny;

use candle_core::{CpuStorage, InplaceOp1, Layout, Tensor};
use std::sync::Mutex;

/// Errors of model operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A candle operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model does not have this parameter.
    #[error("no parameter {0}")]
    NoParam(String),
    /// The batch does not fit the model.
    #[error("bad batch: {0}")]
    Batch(String),
    /// A model file could not be loaded.
    #[error("loading the model: {0}")]
    Load(String),
    /// The model cannot do this.
    #[error("{0}")]
    Unsupported(String),
}

/// Name and shape of a parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Stable name (Hugging Face style for real models).
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for an empty tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Labeled token sequences.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Token ids per example.
    pub inputs: Vec<Vec<u32>>,
    /// Class index per example.
    pub labels: Vec<u32>,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Loss and accuracy over a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Eval {
    /// Sum of per-example losses.
    pub loss_sum: f64,
    /// Correct predictions.
    pub correct: usize,
    /// Examples.
    pub n: usize,
}

impl Eval {
    /// Adds another evaluation.
    pub fn merge(&mut self, o: Eval) {
        self.loss_sum += o.loss_sum;
        self.correct += o.correct;
        self.n += o.n;
    }

    /// Mean loss.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.n.max(1) as f64
    }

    /// Fraction correct.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }
}

/// "Loss of a batch at the current weights, with named flat parameter views."
pub trait Model: Send {
    /// Parameters in a fixed order.
    fn params(&self) -> Vec<ParamSpec>;
    /// A copy of parameter `i`, row-major.
    fn read(&self, i: usize) -> Result<Vec<f32>, Error>;
    /// Overwrites parameter `i` in place: `f` receives its row-major values.
    fn write(&mut self, i: usize, f: &mut dyn FnMut(&mut [f32])) -> Result<(), Error>;
    /// Mean loss of `batch`.
    fn loss(&self, batch: &Batch) -> Result<f32, Error>;
    /// Loss sum and correct predictions of `batch`.
    fn evaluate(&self, batch: &Batch) -> Result<Eval, Error>;
    /// The model's Hugging Face `config.json` (None: not a Hugging Face
    /// architecture).
    fn hf_config(&self) -> Option<serde_json::Value> {
        None
    }
    /// Mean loss of `batch` and its gradient with respect to the parameters
    /// `params` (indices, row-major values), for first-order contributors.
    fn gradients(&self, batch: &Batch, params: &[usize]) -> Result<(f32, Vec<Vec<f32>>), Error> {
        let _ = (batch, params);
        Err(Error::Unsupported(
            "this model does not compute gradients (needed by node.mode = \"first-order\")".into(),
        ))
    }
}

/// The gradient of each variable as row-major values (zeros where the loss
/// does not depend on it); `lens` are the variables' element counts.
pub fn gradient_values(
    grads: &candle_core::backprop::GradStore,
    vars: &[&candle_core::Var],
    lens: &[usize],
) -> Result<Vec<Vec<f32>>, Error> {
    let mut out = Vec::with_capacity(vars.len());
    for (v, &n) in vars.iter().zip(lens) {
        out.push(match grads.get(v.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; n],
        });
    }
    Ok(out)
}

/// BLAKE3 over the names, shapes and values of all parameters: the base model hash.
pub fn base_hash(model: &dyn Model) -> Result<[u8; 32], Error> {
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm/base/1");
    for (i, p) in model.params().iter().enumerate() {
        h.update(&(p.name.len() as u64).to_le_bytes());
        h.update(p.name.as_bytes());
        h.update(&(p.shape.len() as u64).to_le_bytes());
        for d in &p.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        for v in model.read(i)? {
            h.update(&v.to_le_bytes());
        }
    }
    Ok(*h.finalize().as_bytes())
}

/// A copy of parameter `i` of a model that keeps its parameters as tensors.
pub fn read_param(tensors: &[Tensor], i: usize) -> Result<Vec<f32>, Error> {
    let t = tensors
        .get(i)
        .ok_or_else(|| Error::NoParam(i.to_string()))?;
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Overwrites parameter `i` of such a model in place.
pub fn write_param(
    tensors: &[Tensor],
    i: usize,
    f: &mut dyn FnMut(&mut [f32]),
) -> Result<(), Error> {
    let t = tensors
        .get(i)
        .ok_or_else(|| Error::NoParam(i.to_string()))?;
    write_tensor(t, f)
}

/// Runs `f` on the contiguous f32 storage of a CPU tensor, in place.
pub fn write_tensor(t: &Tensor, f: &mut dyn FnMut(&mut [f32])) -> Result<(), Error> {
    type Writer<'a> = &'a mut dyn FnMut(&mut [f32]);
    struct Op<'a>(Mutex<Writer<'a>>);
    impl InplaceOp1 for Op<'_> {
        fn name(&self) -> &'static str {
            "seedswarm-write"
        }
        fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
            let (start, end) = layout
                .contiguous_offsets()
                .ok_or_else(|| candle_core::Error::Msg("parameter is not contiguous".into()))?;
            match storage {
                CpuStorage::F32(v) => {
                    let mut f = self
                        .0
                        .lock()
                        .map_err(|_| candle_core::Error::Msg("poisoned writer".into()))?;
                    (*f)(&mut v[start..end]);
                    Ok(())
                }
                _ => Err(candle_core::Error::Msg("parameter is not f32".into())),
            }
        }
    }
    t.inplace_op1(&Op(Mutex::new(f)))?;
    Ok(())
}
