//! Zeroth-order training: one SPSA step per local sample, and the single-node
//! `train` loop.
//!
//! A [`Trainer`] owns the model, the replica and the update log. A step
//! evaluates the loss at `θ + εz` and `θ − εz` (each a fresh materialization
//! from the replica), forms `g = (ℓ₊ − ℓ₋) / 2ε`, encodes it in one byte, logs
//! and applies it like any other update, and re-materializes the weights.

use crate::codec::Codec;
use crate::config::{self, Config, ModelSpec, TaskSpec};
use crate::log::{self, Log};
use crate::model::llama::{self, Llama};
use crate::model::{self, tiny::Tiny, Batch, Eval, Model};
use crate::replica::{self, Replica, Rules, Update};
use crate::seed::{self, Origin, RunId, Seed};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Model failure.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// Log failure.
    #[error(transparent)]
    Log(#[from] log::Error),
    /// Replica failure.
    #[error(transparent)]
    Replica(#[from] replica::Error),
    /// Task data could not be read.
    #[error(transparent)]
    Task(#[from] crate::task::Error),
    /// The model and the task do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// The trainable patterns matched nothing.
    #[error("run.trainable matches no parameter of the model (patterns: {0:?})")]
    NothingTrainable(Vec<String>),
}

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// The update's seq.
    pub seq: u64,
    /// Its one-byte code.
    pub code: u8,
    /// Loss at θ + εz.
    pub loss_plus: f32,
    /// Loss at θ − εz.
    pub loss_minus: f32,
    /// Projected gradient before encoding.
    pub grad: f64,
    /// Wall time of the two loss forwards, seconds.
    pub forward_seconds: [f64; 2],
}

/// What one first-order round produced.
#[derive(Clone, Debug)]
pub struct FirstOrderStep {
    /// The update's seq.
    pub seq: u64,
    /// The encoded compressed delta.
    pub payload: log::Payload,
    /// Mean training loss over the local steps.
    pub loss: f32,
    /// Size of the uncompressed f32 delta, bytes.
    pub raw_bytes: usize,
    /// Wall time of the local steps, seconds.
    pub compute_seconds: f64,
}

/// Data access for a run.
pub enum Data {
    /// The built-in synthetic task.
    Synthetic {
        task: crate::task::Synthetic,
        seed: u64,
    },
    /// Tokenized prompt-classification data.
    Prompt(Arc<crate::task::PromptData>),
    /// The data could not be loaded ([`build_data`] cannot fail): every batch
    /// is empty, so the first step or evaluation reports this message.
    Failed(String),
}

impl Data {
    /// Training batch `seq` of `origin`.
    pub fn train_batch(&self, origin: &Origin, seq: u64, size: usize) -> Batch {
        match self {
            Data::Synthetic { task, seed } => task.train_batch(*seed, origin, seq, size),
            Data::Prompt(d) => d.train_batch(origin, seq, size),
            Data::Failed(_) => Batch::default(),
        }
    }

    /// The dev set in batches.
    pub fn dev(&self, batch: usize) -> Vec<Batch> {
        match self {
            Data::Synthetic { task, seed } => task.dev(*seed, batch),
            Data::Prompt(d) => d.dev(batch),
            Data::Failed(_) => vec![Batch::default()],
        }
    }
}

/// The model file of a language-model manifest.
pub fn model_source(manifest: &config::Manifest) -> Option<llama::Source<'_>> {
    match &manifest.model {
        ModelSpec::Tiny(_) => None,
        ModelSpec::Gguf(f) => Some(llama::Source::Gguf(Path::new(&f.path))),
        ModelSpec::Hf(f) => Some(llama::Source::HfDir(Path::new(&f.path))),
    }
}

/// The first token of each label word (they must differ).
pub fn label_ids(tok: &tokenizers::Tokenizer, labels: &[String]) -> Result<Vec<u32>, Error> {
    let mut ids = Vec::with_capacity(labels.len());
    for (i, w) in labels.iter().enumerate() {
        let t = llama::encode(tok, w)?;
        let first = *t.first().ok_or_else(|| {
            Error::Mismatch(format!("run.task.labels[{i}] ({w:?}) has no tokens"))
        })?;
        if let Some(j) = ids.iter().position(|&x| x == first) {
            return Err(Error::Mismatch(format!(
                "run.task.labels[{j}] and [{i}] start with the same token {first}; choose distinct words"
            )));
        }
        ids.push(first);
    }
    Ok(ids)
}

/// Builds the base model of a manifest.
pub fn build_model(manifest: &config::Manifest) -> Result<Box<dyn Model>, Error> {
    match &manifest.model {
        ModelSpec::Tiny(s) => {
            let mut h = blake3::Hasher::new();
            h.update(b"seedswarm/tiny-init/1");
            h.update(&manifest.seed.to_le_bytes());
            Ok(Box::new(Tiny::new(s, &Seed(*h.finalize().as_bytes()))?))
        }
        ModelSpec::Gguf(_) | ModelSpec::Hf(_) => {
            let src = model_source(manifest)
                .ok_or_else(|| Error::Mismatch("run.model is not a language model".into()))?;
            let head = match &manifest.task {
                TaskSpec::Prompt(task) => {
                    let tok = llama::tokenizer(src)?;
                    llama::Head::Classify(label_ids(&tok, &task.labels)?)
                }
                TaskSpec::Text(_) => llama::Head::NextToken,
                TaskSpec::Synthetic(_) => {
                    return Err(Error::Mismatch(
                        "a language model needs run.task.kind = \"prompt\" or \"text\"".into(),
                    ))
                }
            };
            Ok(Box::new(Llama::load(src, head)?))
        }
    }
}

/// Builds the data of a manifest; a failure to read prompt data is logged and
/// gives [`Data::Failed`] (use [`try_build_data`] to get the error).
pub fn build_data(manifest: &config::Manifest) -> Data {
    match try_build_data(manifest) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("cannot load the task data: {e}");
            Data::Failed(e.to_string())
        }
    }
}

/// Builds the data of a manifest (reads, samples and tokenizes prompt data).
pub fn try_build_data(manifest: &config::Manifest) -> Result<Data, Error> {
    match &manifest.task {
        TaskSpec::Synthetic(t) => Ok(Data::Synthetic {
            task: t.clone(),
            seed: manifest.seed,
        }),
        TaskSpec::Prompt(_) | TaskSpec::Text(_) => {
            let src = model_source(manifest).ok_or_else(|| {
                Error::Mismatch("a prompt or text task needs a language model".into())
            })?;
            let tok = llama::tokenizer(src)?;
            let tokenize = |s: &str| llama::encode(&tok, s).map_err(|e| e.to_string());
            let data = match &manifest.task {
                TaskSpec::Text(t) => t.load(manifest.seed, &tokenize)?,
                TaskSpec::Prompt(t) => t.load(manifest.seed, &tokenize)?,
                TaskSpec::Synthetic(_) => unreachable!("matched above"),
            };
            Ok(Data::Prompt(Arc::new(data)))
        }
    }
}

/// Model + replica + log of one node.
pub struct Trainer {
    model: Box<dyn Model>,
    replica: Replica,
    log: Log,
    /// Model parameter index of each replica slot.
    slots: Vec<usize>,
    eps: f32,
    origin: Origin,
    /// Largest delta payload the run accepts (`run.delta.max_bytes`).
    max_delta_bytes: usize,
}

impl Trainer {
    /// Builds the model of `cfg`, its replica, and opens the log (in `data_dir`
    /// when given); replays the recovered log into the replica.
    pub fn new(cfg: &Config, origin: Origin, data_dir: Option<&Path>) -> Result<Self, Error> {
        let model = build_model(&cfg.run)?;
        let run = cfg.run.run_id(&model::base_hash(model.as_ref())?);
        let specs = model.params();
        let mut slots = Vec::new();
        let mut tensors = Vec::new();
        for (i, p) in specs.iter().enumerate() {
            if cfg.run.trainable.iter().any(|g| config::glob(g, &p.name)) {
                slots.push(i);
                tensors.push((p.name.clone(), model.read(i)?));
            }
        }
        if slots.is_empty() {
            return Err(Error::NothingTrainable(cfg.run.trainable.clone()));
        }
        let rules = Rules {
            run,
            kind: cfg.run.perturbation,
            codec: Codec::new(&cfg.run.codec),
            schedule: cfg.run.schedule.clone(),
            unit_bits: cfg.run.unit_bits,
            max_delta_norm: cfg.run.delta.max_norm,
        };
        let mut replica = Replica::new(rules, tensors);
        let log = match data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| log::Error::Io {
                    path: dir.to_owned(),
                    source,
                })?;
                let (log, rec) = Log::open(&dir.join("updates.log"), run)?;
                if rec.updates > 0 {
                    tracing::info!(
                        updates = rec.updates,
                        records = rec.records,
                        "resuming from the update log"
                    );
                }
                log
            }
            None => Log::in_memory(run),
        };
        let all: Vec<Update> = log.updates().collect();
        for chunk in all.chunks(4096) {
            replica.apply_with(chunk, &|o, s| log.payload(o, s).cloned())?;
        }
        let mut t = Self {
            model,
            replica,
            log,
            slots,
            eps: cfg.run.eps as f32,
            origin,
            max_delta_bytes: cfg.run.delta.max_bytes,
        };
        t.materialize()?;
        Ok(t)
    }

    /// The run id.
    pub fn run(&self) -> RunId {
        self.replica.rules().run
    }

    /// This node's origin.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The update log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The model at the replica's current weights.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// The next seq this node will publish.
    pub fn next_seq(&self) -> u64 {
        self.log.next_seq(&self.origin)
    }

    fn materialize(&mut self) -> Result<(), Error> {
        for (t, &i) in self.slots.iter().enumerate() {
            let r = &self.replica;
            self.model.write(i, &mut |w| r.materialize(t, w))?;
        }
        Ok(())
    }

    fn perturb(&mut self, seed: &Seed, scale: f32) -> Result<(), Error> {
        for (t, &i) in self.slots.iter().enumerate() {
            let r = &self.replica;
            self.model
                .write(i, &mut |w| r.materialize_perturbed(t, w, seed, scale))?;
        }
        Ok(())
    }

    /// One SPSA step on `batch` as update `next_seq()`; logs and applies it.
    pub fn step(&mut self, batch: &Batch) -> Result<Step, Error> {
        let seq = self.next_seq();
        let seed = seed::derive(&self.run(), &self.origin, seq);
        let mut forward_seconds = [0.0; 2];
        let losses = self.perturb(&seed, self.eps).and_then(|()| {
            let t = Instant::now();
            let plus = self.model.loss(batch)?;
            forward_seconds[0] = t.elapsed().as_secs_f64();
            self.perturb(&seed, -self.eps)?;
            let t = Instant::now();
            let minus = self.model.loss(batch)?;
            forward_seconds[1] = t.elapsed().as_secs_f64();
            Ok((plus, minus))
        });
        let (loss_plus, loss_minus) = match losses {
            Ok(v) => v,
            Err(e) => {
                self.materialize()?;
                return Err(e);
            }
        };
        let grad = (f64::from(loss_plus) - f64::from(loss_minus)) / (2.0 * f64::from(self.eps));
        let code = self.replica.rules().codec.encode(grad, &seed);
        let fresh = self.log.insert(self.origin, seq, &[code])?;
        self.replica.apply(&fresh)?;
        self.materialize()?;
        Ok(Step {
            seq,
            code,
            loss_plus,
            loss_minus,
            grad,
            forward_seconds,
        })
    }

    /// A snapshot of `δ` and the log at the replica's version vector.
    pub fn snapshot(&self) -> crate::snapshot::Snapshot {
        let deltas: Vec<&[i32]> = self
            .replica
            .slots()
            .iter()
            .map(|s| s.delta.as_slice())
            .collect();
        let vv = self.replica.version_vector();
        let codes = vv
            .iter()
            .map(|(o, n)| {
                let payloads = self.log.payloads_in(o, 0, *n);
                (
                    *o,
                    self.log.range(o, 0, *n).to_vec(),
                    payloads.iter().map(|p| p.to_vec()).collect(),
                )
            })
            .collect();
        crate::snapshot::encode(&deltas, vv, self.replica.digest_bytes(), codes)
    }

    /// Installs a snapshot into a node that holds no update yet; checks the
    /// digest of the received `δ` first. Returns the log codes installed.
    pub fn install(
        &mut self,
        chunks: &[Vec<u8>],
        hashes: &[[u8; 32]],
    ) -> Result<crate::net::join::Codes, String> {
        if !self.log.is_empty() {
            return Err("this node already holds updates; a snapshot is only for joining".into());
        }
        let lens: Vec<usize> = self.replica.slots().iter().map(|s| s.delta.len()).collect();
        let d = crate::snapshot::decode(chunks, hashes, &lens).map_err(|e| e.to_string())?;
        if replica::digest_of(d.deltas.iter().map(Vec::as_slice)) != d.digest {
            return Err("snapshot digest does not match its contents".into());
        }
        self.replica
            .install(d.deltas, d.vv)
            .map_err(|e| e.to_string())?;
        for (o, codes, payloads) in &d.codes {
            let payloads: Vec<log::Payload> = payloads.iter().cloned().map(Arc::new).collect();
            self.log
                .insert_with(*o, 0, codes, &payloads)
                .map_err(|e| e.to_string())?;
        }
        self.materialize().map_err(|e| e.to_string())?;
        Ok(d.codes)
    }

    /// Accepts a batch of codes from `origin` (with the payloads of its delta
    /// updates, in order); applies whatever became contiguous.
    pub fn receive(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
        payloads: &[log::Payload],
    ) -> Result<usize, Error> {
        let fresh = self.log.insert_with(origin, first_seq, codes, payloads)?;
        if fresh.is_empty() {
            return Ok(0);
        }
        let log = &self.log;
        let n = self
            .replica
            .apply_with(&fresh, &|o, s| log.payload(o, s).cloned())?;
        self.materialize()?;
        Ok(n)
    }

    /// One first-order round as update `next_seq()`: `local_steps` SGD steps
    /// on `batches` from the replica's weights, then the change is compressed
    /// ([`crate::fedzip`]), logged and applied as a delta update like any
    /// other (so this node moves exactly as its peers will).
    pub fn step_first_order(
        &mut self,
        batches: &[Batch],
        lr: f32,
        compression: &crate::fedzip::Settings,
    ) -> Result<FirstOrderStep, Error> {
        let seq = self.next_seq();
        let start: Vec<Vec<f32>> = self
            .slots
            .iter()
            .map(|&i| self.model.read(i))
            .collect::<Result<_, _>>()?;
        let t = Instant::now();
        let mut losses = Vec::with_capacity(batches.len());
        let local = (|| -> Result<Vec<Vec<f32>>, Error> {
            for b in batches {
                let (loss, grads) = self.model.gradients(b, &self.slots)?;
                losses.push(loss);
                for (&i, g) in self.slots.iter().zip(&grads) {
                    self.model.write(i, &mut |w| {
                        for (w, g) in w.iter_mut().zip(g) {
                            *w -= lr * g;
                        }
                    })?;
                }
            }
            Ok(self
                .slots
                .iter()
                .map(|&i| self.model.read(i))
                .collect::<Result<_, _>>()?)
        })();
        let compute_seconds = t.elapsed().as_secs_f64();
        // Back to the replica's weights whatever happened.
        self.materialize()?;
        let local = local?;
        let names: Vec<String> = self
            .replica
            .slots()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let diffs: Vec<Vec<f32>> = local
            .iter()
            .zip(&start)
            .map(|(l, s)| l.iter().zip(s).map(|(a, b)| a - b).collect())
            .collect();
        let views: Vec<(&str, &[f32])> = names
            .iter()
            .zip(&diffs)
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let delta = crate::fedzip::compress(&views, compression)
            .map_err(|e| Error::Mismatch(format!("compressing the delta: {e}")))?;
        let payload = crate::fedzip::encode(&delta, compression.positions);
        if payload.len() > self.max_delta_bytes {
            // Peers would refuse it, and this origin's later updates with it.
            return Err(Error::Mismatch(format!(
                "the compressed delta is {} bytes, over run.delta.max_bytes = {}; lower node.first_order.compression.top_z",
                payload.len(),
                self.max_delta_bytes
            )));
        }
        let raw_bytes = 4 * diffs.iter().map(Vec::len).sum::<usize>();
        let payload = Arc::new(payload);
        let fresh = self.log.insert_with(
            self.origin,
            seq,
            &[log::DELTA],
            std::slice::from_ref(&payload),
        )?;
        let log = &self.log;
        self.replica
            .apply_with(&fresh, &|o, s| log.payload(o, s).cloned())?;
        self.materialize()?;
        Ok(FirstOrderStep {
            seq,
            payload,
            loss: losses.iter().sum::<f32>() / losses.len().max(1) as f32,
            raw_bytes,
            compute_seconds,
        })
    }

    /// Loss and accuracy on `batches` at the current weights.
    pub fn evaluate(&self, batches: &[Batch]) -> Result<Eval, Error> {
        let mut e = Eval::default();
        for b in batches {
            e.merge(self.model.evaluate(b)?);
        }
        Ok(e)
    }
}

/// JSON summary of a `train` run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub run_id: String,
    pub origin: String,
    pub initial_loss: f64,
    pub initial_accuracy: f64,
    pub final_loss: f64,
    pub accuracy: f64,
    pub updates: u64,
    pub wall_seconds: f64,
    pub steps_per_second: f64,
    pub digest: String,
    pub trainable_params: usize,
    /// Size of the on-disk update log per update (when a data dir is used).
    pub log_bytes_per_update: Option<f64>,
    /// How this node trained: "zeroth-order" or "first-order".
    pub mode: String,
    /// First-order: mean encoded delta size, bytes.
    pub delta_bytes_mean: Option<f64>,
    /// First-order: raw f32 delta size over encoded size.
    pub delta_ratio: Option<f64>,
}

/// The deterministic origin of a single-node run without an identity.
pub fn local_origin(cfg: &Config) -> Origin {
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm/local-origin/1");
    h.update(&cfg.run.seed.to_le_bytes());
    Origin(*h.finalize().as_bytes())
}

/// The local batches of first-order round `seq` of `origin`: its own data
/// stream, after the batches its earlier rounds used.
pub fn first_order_batches(cfg: &Config, data: &Data, origin: &Origin, seq: u64) -> Vec<Batch> {
    let fo = &cfg.node.first_order;
    let size = if fo.batch_size == 0 {
        cfg.run.batch_size
    } else {
        fo.batch_size
    };
    let steps = fo.local_steps as u64;
    (0..steps)
        .map(|h| data.train_batch(origin, seq * steps + h, size))
        .collect()
}

/// Progress reporting hook for [`run_single`]: `(step, steps, train loss, eval)`.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64, f64, Option<Eval>);

/// Trains a single node (no network) for `cfg.node.steps` own updates.
pub fn run_single(
    cfg: &Config,
    data_dir: Option<&Path>,
    progress: Progress<'_>,
) -> Result<Summary, Error> {
    let start = Instant::now();
    let origin = local_origin(cfg);
    let mut trainer = Trainer::new(cfg, origin, data_dir)?;
    let data = try_build_data(&cfg.run)?;
    let dev = data.dev(cfg.node.eval_batch);
    let initial = trainer.evaluate(&dev)?;
    progress(0, cfg.node.steps, initial.loss(), Some(initial));
    let first = trainer.next_seq();
    let mut ema = initial.loss();
    let (mut delta_bytes, mut raw_delta_bytes) = (0u64, 0u64);
    while trainer.next_seq() < cfg.node.steps.max(first) {
        let seq = trainer.next_seq();
        if cfg.node.mode == config::Mode::FirstOrder {
            let fo = &cfg.node.first_order;
            let batches = first_order_batches(cfg, &data, &origin, seq);
            let s = trainer.step_first_order(&batches, fo.lr as f32, &fo.compression)?;
            delta_bytes += s.payload.len() as u64;
            raw_delta_bytes += s.raw_bytes as u64;
            ema = 0.8 * ema + 0.2 * f64::from(s.loss);
        } else {
            let batch = data.train_batch(&origin, seq, cfg.run.batch_size);
            let s = trainer.step(&batch)?;
            ema = 0.98 * ema + 0.02 * 0.5 * f64::from(s.loss_plus + s.loss_minus);
        }
        let done = seq + 1;
        let eval = if cfg.node.eval_every > 0 && done % cfg.node.eval_every == 0 {
            Some(trainer.evaluate(&dev)?)
        } else {
            None
        };
        progress(done, cfg.node.steps, ema, eval);
    }
    let fin = trainer.evaluate(&dev)?;
    let wall = start.elapsed().as_secs_f64();
    let updates = trainer.replica().applied();
    let ran = trainer.next_seq() - first;
    Ok(Summary {
        run_id: trainer.run().to_hex(),
        origin: origin.to_hex(),
        initial_loss: initial.loss(),
        initial_accuracy: initial.accuracy(),
        final_loss: fin.loss(),
        accuracy: fin.accuracy(),
        updates,
        wall_seconds: wall,
        steps_per_second: ran as f64 / wall.max(1e-9),
        digest: trainer.replica().digest(),
        trainable_params: trainer.replica().num_params(),
        log_bytes_per_update: data_dir.and_then(|d| {
            let len = std::fs::metadata(d.join("updates.log")).ok()?.len();
            Some(len as f64 / updates.max(1) as f64)
        }),
        mode: cfg.node.mode.to_string(),
        delta_bytes_mean: (delta_bytes > 0).then(|| delta_bytes as f64 / ran.max(1) as f64),
        delta_ratio: (delta_bytes > 0).then(|| raw_delta_bytes as f64 / delta_bytes as f64),
    })
}

/// JSON summary of an `eval` run.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSummary {
    pub run_id: String,
    /// Updates in the replayed log.
    pub updates: u64,
    pub digest: String,
    /// What was evaluated (a file, or the task's dev set).
    pub data: String,
    pub accuracy: f64,
    pub loss: f64,
    pub n: usize,
    pub wall_seconds: f64,
}

/// Accuracy of the replica (base model + the update log in `data_dir`) on a
/// labeled file (TSV/JSONL, prompt tasks) or, without one, the task's dev set.
pub fn evaluate(
    cfg: &Config,
    data_file: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<EvalSummary, Error> {
    let start = Instant::now();
    let trainer = Trainer::new(cfg, local_origin(cfg), data_dir)?;
    let batch = cfg.node.eval_batch;
    let (batches, what) = match (data_file, &cfg.run.task) {
        (None, _) => (try_build_data(&cfg.run)?.dev(batch), "dev set".to_string()),
        (Some(f), TaskSpec::Prompt(t)) => {
            let src = model_source(&cfg.run)
                .ok_or_else(|| Error::Mismatch("prompt task without a language model".into()))?;
            let tok = llama::tokenizer(src)?;
            let rows = t.read(f)?;
            let mut examples = Vec::with_capacity(rows.len());
            for (x, y) in &rows {
                examples.push((llama::encode(&tok, &t.render(x))?, *y));
            }
            (
                crate::task::batches(&examples, batch),
                f.display().to_string(),
            )
        }
        (Some(f), TaskSpec::Text(t)) => {
            let src = model_source(&cfg.run)
                .ok_or_else(|| Error::Mismatch("text task without a language model".into()))?;
            let tok = llama::tokenizer(src)?;
            let tokenize = |s: &str| llama::encode(&tok, s).map_err(|e| e.to_string());
            let windows = t.windows(&t.read(f)?, &tokenize)?;
            let examples: Vec<_> = windows.into_iter().map(|x| (x, 0)).collect();
            (
                crate::task::batches(&examples, batch),
                f.display().to_string(),
            )
        }
        (Some(_), TaskSpec::Synthetic(_)) => {
            return Err(Error::Mismatch(
                "--data needs a prompt task; the synthetic task has only its dev set".into(),
            ))
        }
    };
    let e = trainer.evaluate(&batches)?;
    Ok(EvalSummary {
        run_id: trainer.run().to_hex(),
        updates: trainer.replica().applied(),
        digest: trainer.replica().digest(),
        data: what,
        accuracy: e.accuracy(),
        loss: e.loss(),
        n: e.n,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Writes the replica's weights (base + the update log in `data_dir`) as
/// safetensors under the model's parameter names; returns the tensor count.
pub fn export(cfg: &Config, data_dir: Option<&Path>, out: &Path) -> Result<usize, Error> {
    let trainer = Trainer::new(cfg, local_origin(cfg), data_dir)?;
    let m = trainer.model();
    let mut tensors = std::collections::HashMap::new();
    for (i, p) in m.params().into_iter().enumerate() {
        let t = candle_core::Tensor::from_vec(
            m.read(i)?,
            p.shape.as_slice(),
            &candle_core::Device::Cpu,
        )
        .map_err(model::Error::from)?;
        tensors.insert(p.name, t);
    }
    let n = tensors.len();
    candle_core::safetensors::save(&tensors, out)
        .map_err(|e| model::Error::Load(format!("writing {}: {e}", out.display())))?;
    Ok(n)
}
