//! Training: the model and replica of a node ([`Trainer`]), the one training
//! loop shared by `train` and `node` ([`Session`]), and the single-node
//! commands (`train`, `eval`, `export`).
//!
//! A [`Trainer`] owns the model and the replica. An SPSA step evaluates the
//! loss at `θ + εz` and `θ − εz` (each a fresh materialization from the
//! replica), forms `g = (ℓ₊ − ℓ₋) / 2ε`, encodes it in one byte and applies it
//! like any other update; a first-order round takes local SGD steps and
//! applies their compressed difference as a delta update.

mod commands;
mod materialize;
mod session;
mod verify;

pub use commands::{evaluate, export, run_single, EvalProgress, EvalSummary, Progress, Summary};
pub use materialize::{export_seedlog, materialize, rebuild, MaterializeSummary, SeedLogSummary};
pub use session::{Made, Session};
pub use verify::{judge, sampled, verify, Check, Tally, Verdict, VerifySummary, DEFAULT_TOLERANCE};

use crate::config::{self, Config, ModelSpec, TaskSpec};
use crate::crdt::log::{self, Log, Segment, Store};
use crate::crdt::replica::{self, Replica, Rules, Update, VersionVector};
use crate::crdt::snapshot::{self, Image};
use crate::model::llama::{self, Llama};
use crate::model::{self, tiny::Tiny, Batch, Eval, Model};
use crate::zo::codec::Codec;
use crate::zo::seed::{self, Origin, RunId, Seed};
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
}

impl Data {
    /// Training batch `seq` of `origin`.
    pub fn train_batch(&self, origin: &Origin, seq: u64, size: usize) -> Batch {
        match self {
            Data::Synthetic { task, seed } => task.train_batch(*seed, origin, seq, size),
            Data::Prompt(d) => d.train_batch(origin, seq, size),
        }
    }

    /// The dev set in batches.
    pub fn dev(&self, batch: usize) -> Vec<Batch> {
        match self {
            Data::Synthetic { task, seed } => task.dev(*seed, batch),
            Data::Prompt(d) => d.dev(batch),
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

/// Builds the data of a manifest (reads, samples and tokenizes prompt data).
pub fn build_data(manifest: &config::Manifest) -> Result<Data, Error> {
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

/// Model + replica of one node: takes SPSA steps and first-order rounds,
/// applies updates, makes and installs snapshots. The update log is not
/// here: the protocol core owns it, and [`Session`] appends its file.
pub struct Trainer {
    model: Box<dyn Model>,
    replica: Replica,
    /// Model parameter index of each replica slot.
    slots: Vec<usize>,
    eps: f32,
    /// Own projected gradients are multiplied by this before encoding (the
    /// byte alone is the contribution, so replicas agree whatever it is).
    step_scale: f64,
    /// Test hook: own gradients are encoded with the opposite sign.
    flip_signs: bool,
    origin: Origin,
    /// Largest delta payload the run accepts (`run.delta.max_bytes`).
    max_delta_bytes: usize,
}

/// Opens (or creates) the update log of `data_dir` for `run`, recovering
/// every complete record.
pub fn open_log(data_dir: &Path, run: RunId) -> Result<(Log, Store), Error> {
    std::fs::create_dir_all(data_dir).map_err(|source| log::Error::Io {
        path: data_dir.to_owned(),
        source,
    })?;
    let (log, store, rec) = Store::open(&data_dir.join("updates.log"), run)?;
    if rec.updates > 0 {
        tracing::info!(
            updates = rec.updates,
            records = rec.records,
            "resuming from the update log"
        );
    }
    Ok((log, store))
}

/// The run id of `cfg`: its canonical manifest and its base model's hash
/// (loads the model).
pub fn run_id(cfg: &Config) -> Result<RunId, Error> {
    let model = build_model(&cfg.run)?;
    Ok(cfg.run.run_id(&model::base_hash(model.as_ref())?))
}

impl Trainer {
    /// Builds the base model of `cfg` and an empty replica of its trainable tensors.
    pub fn new(cfg: &Config, origin: Origin) -> Result<Self, Error> {
        let what = match model_source(&cfg.run) {
            None => "the built-in tiny model".to_string(),
            Some(llama::Source::Gguf(p) | llama::Source::HfDir(p)) => p.display().to_string(),
        };
        tracing::info!(model = %what, "loading the model");
        let t = Instant::now();
        let model = build_model(&cfg.run)?;
        let run = cfg.run.run_id(&model::base_hash(model.as_ref())?);
        let trainer = Self::with_model(&cfg.run, model, run, origin)?;
        tracing::info!(
            seconds = format_args!("{:.1}", t.elapsed().as_secs_f64()),
            params = trainer
                .model
                .params()
                .iter()
                .map(model::ParamSpec::len)
                .sum::<usize>(),
            trainable = trainer.replica.num_params(),
            "model loaded"
        );
        Ok(trainer)
    }

    /// An empty replica of the trainable tensors of `model` (already built
    /// from `manifest`) in run `run`.
    pub fn with_model(
        manifest: &config::Manifest,
        model: Box<dyn Model>,
        run: RunId,
        origin: Origin,
    ) -> Result<Self, Error> {
        let specs = model.params();
        let mut slots = Vec::new();
        let mut tensors = Vec::new();
        for (i, p) in specs.iter().enumerate() {
            if manifest.trainable.iter().any(|g| config::glob(g, &p.name)) {
                slots.push(i);
                tensors.push((p.name.clone(), model.read(i)?));
            }
        }
        if slots.is_empty() {
            return Err(Error::NothingTrainable(manifest.trainable.clone()));
        }
        let rules = Rules {
            run,
            kind: manifest.perturbation,
            structure: manifest.structure,
            codec: Codec::new(&manifest.codec),
            schedule: manifest.schedule.clone(),
            unit_bits: manifest.unit_bits,
            max_delta_norm: manifest.delta.max_norm,
        };
        Ok(Self {
            model,
            replica: Replica::new(rules, tensors),
            slots,
            eps: manifest.eps as f32,
            step_scale: 1.0,
            flip_signs: false,
            origin,
            max_delta_bytes: manifest.delta.max_bytes,
        })
    }

    /// The replica at the update log of `data_dir` (the base model without one).
    pub fn from_dir(cfg: &Config, origin: Origin, data_dir: Option<&Path>) -> Result<Self, Error> {
        let mut t = Self::new(cfg, origin)?;
        if let Some(dir) = data_dir {
            let (log, _) = open_log(dir, t.run())?;
            t.replay(&log)?;
        }
        Ok(t)
    }

    /// Applies every update `log` holds beyond the replica's version vector,
    /// in chunks of about [`REPLAY_WORK`] parameter-updates, logging the
    /// progress (see [`replay_report_due`]) and the total time.
    pub fn replay(&mut self, log: &Log) -> Result<(), Error> {
        let all: Vec<Update> = log.updates().collect();
        if all.is_empty() {
            return self.materialize();
        }
        let size = replay_chunk(self.replica.num_params());
        let chunks = all.len().div_ceil(size);
        tracing::info!(updates = all.len(), chunks, "replaying the update log");
        let start = Instant::now();
        let mut last = start;
        for (i, chunk) in all.chunks(size).enumerate() {
            self.replica
                .apply_with(chunk, &|o, s| log.payload(o, s).cloned())?;
            let now = Instant::now();
            if i + 1 < chunks && replay_report_due(i + 1, chunks, now.duration_since(last)) {
                last = now;
                let done = ((i + 1) * size).min(all.len());
                tracing::info!(
                    done,
                    total = all.len(),
                    percent = 100 * done / all.len(),
                    "replaying the update log"
                );
            }
        }
        self.materialize()?;
        let seconds = start.elapsed().as_secs_f64();
        tracing::info!(
            updates = all.len(),
            seconds = format_args!("{seconds:.1}"),
            per_second = format_args!("{:.0}", all.len() as f64 / seconds.max(1e-9)),
            "replayed the update log"
        );
        Ok(())
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

    /// Names and lengths of the trainable tensors (what a delta may touch).
    pub fn shapes(&self) -> Vec<(String, u64)> {
        self.replica
            .slots()
            .iter()
            .map(|s| (s.name.clone(), s.base.len() as u64))
            .collect()
    }

    /// The model at the replica's current weights.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// The next seq this node will publish.
    pub fn next_seq(&self) -> u64 {
        self.replica
            .version_vector()
            .get(&self.origin)
            .copied()
            .unwrap_or(0)
    }

    fn materialize(&mut self) -> Result<(), Error> {
        self.materialize_some(&vec![true; self.slots.len()])
    }

    /// Materializes the tensors marked in `which`.
    fn materialize_some(&mut self, which: &[bool]) -> Result<(), Error> {
        for (t, &i) in self.slots.iter().enumerate() {
            if which[t] {
                let r = &self.replica;
                self.model.write(i, &mut |w| r.materialize(t, w))?;
            }
        }
        Ok(())
    }

    /// Writes `θ + scale·z` into the tensors the update of `seed` perturbs
    /// (`which`); the others keep their materialized `θ`.
    fn perturb(&mut self, seed: &Seed, scale: f32, which: &[bool]) -> Result<(), Error> {
        for (t, &i) in self.slots.iter().enumerate() {
            if which[t] {
                let r = &self.replica;
                self.model
                    .write(i, &mut |w| r.materialize_perturbed(t, w, seed, scale))?;
            }
        }
        Ok(())
    }

    /// Scales own projected gradients from the next step on (clamped to
    /// `(0, 1]`; not finite: 1).
    pub fn set_step_scale(&mut self, scale: f64) {
        self.step_scale = if scale.is_finite() && scale > 0.0 {
            scale.min(1.0)
        } else {
            1.0
        };
    }

    /// Test hook: encode own gradients with the opposite sign from the next
    /// step on — a hostile origin's valid-looking bytes, which spot checks
    /// must flag. Replicas still agree (the byte is the contribution).
    pub fn set_flip_signs(&mut self, on: bool) {
        self.flip_signs = on;
    }

    /// One SPSA step on `batch` as update `next_seq()`; applies it (the
    /// caller stores it before publishing it).
    pub fn step(&mut self, batch: &Batch) -> Result<Step, Error> {
        let seq = self.next_seq();
        let seed = seed::derive(&self.run(), &self.origin, seq);
        let which = self.replica.perturbed(&seed);
        let (loss_plus, loss_minus, forward_seconds) = self.losses(&seed, &which, batch)?;
        let grad = (f64::from(loss_plus) - f64::from(loss_minus)) / (2.0 * f64::from(self.eps));
        let code = self.replica.rules().codec.encode(
            grad * self.step_scale * if self.flip_signs { -1.0 } else { 1.0 },
            &seed,
        );
        self.replica.apply(&[Update {
            origin: self.origin,
            seq,
            code,
        }])?;
        // Only the perturbed tensors moved (or hold θ − εz).
        self.materialize_some(&which)?;
        Ok(Step {
            seq,
            code,
            loss_plus,
            loss_minus,
            grad,
            forward_seconds,
        })
    }

    /// The losses at `θ ± εz` (z from `seed`, on the tensors in `which`) on
    /// `batch` and the time of each forward. The weights are left at
    /// `θ − εz` (the caller materializes), or the replica's again on error.
    fn losses(
        &mut self,
        seed: &Seed,
        which: &[bool],
        batch: &Batch,
    ) -> Result<(f32, f32, [f64; 2]), Error> {
        let mut forward_seconds = [0.0; 2];
        let losses = self.perturb(seed, self.eps, which).and_then(|()| {
            let t = Instant::now();
            let plus = self.model.loss(batch)?;
            forward_seconds[0] = t.elapsed().as_secs_f64();
            self.perturb(seed, -self.eps, which)?;
            let t = Instant::now();
            let minus = self.model.loss(batch)?;
            forward_seconds[1] = t.elapsed().as_secs_f64();
            Ok((plus, minus))
        });
        match losses {
            Ok((plus, minus)) => Ok((plus, minus, forward_seconds)),
            Err(e) => {
                self.materialize()?;
                Err(e)
            }
        }
    }

    /// The projected gradient of `origin`'s update `seq` recomputed on the
    /// replica's current state, with `batch` (that update's own sample):
    /// what the origin should have encoded, before its step scale.
    pub fn recompute(&mut self, origin: &Origin, seq: u64, batch: &Batch) -> Result<f64, Error> {
        let grad = self.projected(origin, seq, batch)?;
        self.materialize()?;
        Ok(grad)
    }

    /// The projected gradient of update `(origin, seq)` on `batch`, leaving
    /// the weights perturbed (the caller materializes).
    fn projected(&mut self, origin: &Origin, seq: u64, batch: &Batch) -> Result<f64, Error> {
        let seed = seed::derive(&self.run(), origin, seq);
        let which = self.replica.perturbed(&seed);
        let (plus, minus, _) = self.losses(&seed, &which, batch)?;
        Ok((f64::from(plus) - f64::from(minus)) / (2.0 * f64::from(self.eps)))
    }

    /// [`Trainer::recompute`] on an earlier state: `back` are, per origin,
    /// the applied tails past `target` (after taking them out the replica's
    /// version vector must be `target`); they are subtracted, the gradient
    /// recomputed, and added back (wrapping integer arithmetic, so the
    /// replica is bit for bit what it was, whatever happened).
    pub fn recompute_at(
        &mut self,
        target: &VersionVector,
        back: &[Segment],
        origin: &Origin,
        seq: u64,
        batch: &Batch,
    ) -> Result<f64, Error> {
        let updates: Vec<Update> = back.iter().flat_map(Segment::updates).collect();
        let payload = |o: &Origin, s: u64| {
            back.iter()
                .find(|g| g.origin == *o && (g.first_seq..g.end()).contains(&s))
                .and_then(|g| g.payload(s))
        };
        self.replica.retract_with(&updates, &payload)?;
        let nonzero = |vv: &VersionVector| -> VersionVector {
            vv.iter()
                .filter(|(_, &n)| n > 0)
                .map(|(o, &n)| (*o, n))
                .collect()
        };
        let reached = nonzero(self.replica.version_vector()) == nonzero(target);
        // One materialization at the end, after the state is restored.
        let grad = if reached {
            self.projected(origin, seq, batch)
        } else {
            Err(Error::Mismatch(
                "the retracted state is not the one to recheck on".into(),
            ))
        };
        self.replica.apply_with(&updates, &payload)?;
        self.materialize()?;
        grad
    }

    /// A copy of `δ`, the version vector and the digest: what a snapshot
    /// is made of (with the log's prefix up to that version vector).
    pub fn image(&self) -> Image {
        snapshot::image(&self.replica)
    }

    /// Installs a snapshot into a replica that holds no update yet (see
    /// [`snapshot::install`]) and materializes the weights.
    pub fn install(
        &mut self,
        chunks: &[Vec<u8>],
        hashes: &[[u8; 32]],
        expect: (&VersionVector, &[u8; 32]),
    ) -> Result<(VersionVector, Vec<Segment>), String> {
        let (vv, segments) = snapshot::install(&mut self.replica, chunks, hashes, expect)?;
        self.materialize().map_err(|e| e.to_string())?;
        // Only what its origins signed is kept (and served on).
        let run = self.replica.rules().run;
        let segments = segments
            .iter()
            .map(|s| crate::crdt::log::verified_prefix(&run, s))
            .collect();
        Ok((vv, segments))
    }

    /// Applies a contiguous segment of updates (its first seq must be the
    /// next of its origin, or already applied), or retracts it (see
    /// [`log::Op`]); returns the updates it concerned (for [`log::Op::Store`],
    /// which the replica holds already, the count to be written to the file).
    pub fn apply(&mut self, segment: &Segment) -> Result<usize, Error> {
        let updates = segment.updates();
        let payload = |_: &crate::zo::seed::Origin, s| segment.payload(s);
        let n = match segment.op {
            log::Op::Retract => self.replica.retract_with(&updates, &payload)?,
            log::Op::Apply => self.replica.apply_with(&updates, &payload)?,
            log::Op::Store => return Ok(segment.codes.len()),
        };
        if n > 0 {
            self.materialize()?;
        }
        Ok(n)
    }

    /// One first-order round as update `next_seq()`: `local_steps` SGD steps
    /// on `batches` from the replica's weights, then the change is compressed
    /// ([`crate::delta::fedzip`]) and applied as a delta update like any other (so
    /// this node moves exactly as its peers will).
    pub fn step_first_order(
        &mut self,
        batches: &[Batch],
        lr: f32,
        compression: &crate::delta::fedzip::Settings,
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
        let delta = crate::delta::fedzip::compress(&views, compression)
            .map_err(|e| Error::Mismatch(format!("compressing the delta: {e}")))?;
        let payload = crate::delta::fedzip::encode(&delta, compression.positions);
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
        let own = Update {
            origin: self.origin,
            seq,
            code: log::DELTA,
        };
        self.replica
            .apply_with(&[own], &|_, _| Some(payload.clone()))?;
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
        self.evaluate_with(batches, &mut |_, _| {})
    }

    /// [`Trainer::evaluate`], calling `progress(done, total)` after each batch.
    pub fn evaluate_with(
        &self,
        batches: &[Batch],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Eval, Error> {
        let mut e = Eval::default();
        for (i, b) in batches.iter().enumerate() {
            e.merge(self.model.evaluate(b)?);
            progress(i + 1, batches.len());
        }
        Ok(e)
    }
}

/// Parameter-updates per replay chunk (about a second of regenerate-and-apply).
pub const REPLAY_WORK: usize = 1 << 30;

/// Updates per replay chunk for `params` trainable parameters: 4,096 for
/// small models, fewer for large ones so that progress shows.
pub fn replay_chunk(params: usize) -> usize {
    (REPLAY_WORK / params.max(1)).clamp(1, 4096)
}

/// Whether the replay reports after chunk `done` of `total`, `since_last`
/// after its last line: on every tenth of the chunks once a second passed
/// (a fast replay logs only its start and end), or after 5 s whatever the
/// count.
pub fn replay_report_due(done: usize, total: usize, since_last: std::time::Duration) -> bool {
    let tenth = total.div_ceil(10).max(1);
    let secs = since_last.as_secs_f64();
    (done.is_multiple_of(tenth) && secs >= 1.0) || secs >= 5.0
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

#[cfg(test)]
mod tests;
