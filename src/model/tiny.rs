//! The built-in model: a small candle classifier over token sequences.
//!
//! Embedding → mean over positions → tanh MLP → class logits. Initialized
//! deterministically from a seed (ChaCha stream, uniform ±1/√fan_in), so every
//! node builds the same base model without a download.

use super::{Batch, Error, Eval, Model, ParamSpec};
use crate::zo::perturb;
use crate::zo::seed::Seed;
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

/// Shape of the tiny model (part of the run manifest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Vocabulary size.
    pub vocab: usize,
    /// Embedding width.
    pub dim: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Settings {
    /// Checks the values; the error names the field.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        for (name, v, max) in [
            ("vocab", self.vocab, 1 << 20),
            ("dim", self.dim, 4096),
            ("hidden", self.hidden, 4096),
            ("classes", self.classes, 1024),
        ] {
            if v == 0 || v > max {
                return Err(format!("{prefix}.{name} must be within 1..={max}, got {v}"));
            }
        }
        if self.classes < 2 {
            return Err(format!(
                "{prefix}.classes must be at least 2, got {}",
                self.classes
            ));
        }
        Ok(())
    }
}

/// The tiny classifier.
pub struct Tiny {
    settings: Settings,
    specs: Vec<ParamSpec>,
    tensors: Vec<Tensor>,
}

impl Tiny {
    /// Builds the model with weights drawn from `seed`.
    pub fn new(settings: &Settings, seed: &Seed) -> Result<Self, Error> {
        let s = settings;
        let specs = vec![
            ParamSpec {
                name: "embed.weight".into(),
                shape: vec![s.vocab, s.dim],
            },
            ParamSpec {
                name: "mlp.weight".into(),
                shape: vec![s.dim, s.hidden],
            },
            ParamSpec {
                name: "mlp.bias".into(),
                shape: vec![s.hidden],
            },
            ParamSpec {
                name: "head.weight".into(),
                shape: vec![s.hidden, s.classes],
            },
            ParamSpec {
                name: "head.bias".into(),
                shape: vec![s.classes],
            },
        ];
        let fan_in = [1usize, s.dim, s.dim, s.hidden, s.hidden];
        let mut tensors = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let mut words = vec![0u32; spec.len()];
            perturb::fill_words(&mut perturb::stream(seed, i as u64, 0), &mut words);
            let scale = 1.0 / (fan_in[i] as f64).sqrt();
            let values: Vec<f32> = words
                .iter()
                .map(|&w| ((f64::from(w) / f64::from(u32::MAX)) * 2.0 - 1.0) * scale)
                .map(|v| v as f32)
                .collect();
            tensors.push(Tensor::from_vec(
                values,
                spec.shape.as_slice(),
                &Device::Cpu,
            )?);
        }
        Ok(Self {
            settings: settings.clone(),
            specs,
            tensors,
        })
    }

    fn logits(&self, batch: &Batch) -> Result<Tensor, Error> {
        self.logits_with(&self.tensors, batch)
    }

    fn logits_with(&self, w: &[Tensor], batch: &Batch) -> Result<Tensor, Error> {
        let b = batch.inputs.len();
        let len = batch.inputs.first().map_or(0, Vec::len);
        if b == 0 || len == 0 {
            return Err(Error::Batch("empty batch".into()));
        }
        let mut ids = Vec::with_capacity(b * len);
        for x in &batch.inputs {
            if x.len() != len {
                return Err(Error::Batch("sequences of unequal length".into()));
            }
            if let Some(&bad) = x.iter().find(|&&t| t as usize >= self.settings.vocab) {
                return Err(Error::Batch(format!("token {bad} outside the vocabulary")));
            }
            ids.extend_from_slice(x);
        }
        let ids = Tensor::from_vec(ids, b * len, &Device::Cpu)?;
        let x = w[0].embedding(&ids)?;
        let x = x.reshape((b, len, self.settings.dim))?.mean(1)?;
        let h = x.matmul(&w[1])?.broadcast_add(&w[2])?.tanh()?;
        Ok(h.matmul(&w[3])?.broadcast_add(&w[4])?)
    }

    fn labels(&self, batch: &Batch) -> Result<Tensor, Error> {
        if let Some(&bad) = batch
            .labels
            .iter()
            .find(|&&l| l as usize >= self.settings.classes)
        {
            return Err(Error::Batch(format!("label {bad} outside the classes")));
        }
        if batch.labels.len() != batch.inputs.len() {
            return Err(Error::Batch("labels and inputs differ in number".into()));
        }
        Ok(Tensor::from_vec(
            batch.labels.clone(),
            batch.labels.len(),
            &Device::Cpu,
        )?)
    }
}

impl Model for Tiny {
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
        let logits = self.logits(batch)?;
        let labels = self.labels(batch)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &labels)?.to_scalar::<f32>()?)
    }

    fn gradients(&self, batch: &Batch, params: &[usize]) -> Result<(f32, Vec<Vec<f32>>), Error> {
        // Fresh variables holding copies of the weights; candle records the
        // graph from them and backprop gives their gradients.
        let vars = self
            .tensors
            .iter()
            .map(candle_core::Var::from_tensor)
            .collect::<Result<Vec<_>, _>>()?;
        let w: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let logits = self.logits_with(&w, batch)?;
        let labels = self.labels(batch)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let grads = loss.backward()?;
        let picked = params
            .iter()
            .map(|&i| vars.get(i).ok_or_else(|| Error::NoParam(i.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let lens: Vec<usize> = params.iter().map(|&i| self.specs[i].len()).collect();
        let out = super::gradient_values(&grads, &picked, &lens)?;
        Ok((loss.to_scalar::<f32>()?, out))
    }

    fn evaluate(&self, batch: &Batch) -> Result<Eval, Error> {
        let logits = self.logits(batch)?;
        let labels = self.labels(batch)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?;
        let loss_sum = -f64::from(picked.sum_all()?.to_scalar::<f32>()?);
        let pred = logits
            .argmax(D::Minus1)?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?;
        let correct = pred
            .iter()
            .zip(&batch.labels)
            .filter(|(p, l)| p == l)
            .count();
        Ok(Eval {
            loss_sum,
            correct,
            n: batch.len(),
        })
    }
}
