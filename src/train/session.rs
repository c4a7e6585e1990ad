//! The one training loop, shared by `seedswarm train` and the node's compute
//! thread: a [`Session`] owns the [`Trainer`], the task data (loaded once),
//! the dev batches and the log's file; it takes own steps (zeroth- or
//! first-order, by the node's mode), appends each before it can be
//! published, applies what the protocol core hands over, and evaluates on the
//! same cadence in both modes (every `node.eval_every` own updates).

use super::*;
use crate::config::{FirstOrder, Mode};
use crate::proto::{ComputeState, Own};

/// What one own step made.
#[derive(Clone, Debug)]
pub struct Made {
    /// The update's seq.
    pub seq: u64,
    /// The update (already applied and stored).
    pub update: Own,
    /// Training loss of the step (mean of `ℓ₊`, `ℓ₋`, or of the local steps).
    pub loss: f32,
    /// Wall time of the step, seconds.
    pub seconds: f64,
    /// Wall time of each loss forward (zeroth-order), seconds.
    pub forward_seconds: Vec<f64>,
    /// First-order: size of the uncompressed f32 delta, bytes.
    pub raw_bytes: usize,
    /// The evaluation due after this step, when one was.
    pub eval: Option<Eval>,
    /// The state it was computed on: the replica's version vector then,
    /// without this node's own entry (which is `seq`).
    pub basis: VersionVector,
}

/// A node's training state: trainer, data, and the log's file.
pub struct Session {
    trainer: Trainer,
    data: Data,
    dev: Vec<Batch>,
    store: Option<Store>,
    /// The bases of published and received batches (`bases.log`).
    bases: Option<crate::crdt::basis::BasesFile>,
    cfg: Config,
    loss: f32,
    eval: Option<Eval>,
    /// This node's latest own updates (code, delta payload), by seq: a
    /// snapshot of an earlier state subtracts those the protocol core had
    /// not heard of yet.
    own_recent: std::collections::BTreeMap<u64, (u8, Option<log::Payload>)>,
}

/// Own updates kept for [`Session::image_at`].
const OWN_RECENT: usize = 1 << 16;

impl Session {
    /// Builds the model and replica, opens the update log of `data_dir` (kept
    /// in memory without one), replays it, and loads the task data. Returns
    /// the log for the protocol core, which owns it from then on.
    pub fn open(
        cfg: &Config,
        origin: Origin,
        data_dir: Option<&Path>,
    ) -> Result<(Self, Log), Error> {
        let mut trainer = Trainer::new(cfg, origin)?;
        let (log, store) = match data_dir {
            Some(dir) => {
                let (log, store) = open_log(dir, trainer.run())?;
                (log, Some(store))
            }
            None => (Log::in_memory(trainer.run()), None),
        };
        trainer.replay(&log)?;
        let bases = match data_dir {
            Some(dir) => Some(
                crate::crdt::basis::BasesFile::open(&dir.join("bases.log"), &trainer.run())
                    .map_err(|source| log::Error::Io {
                        path: dir.join("bases.log"),
                        source,
                    })?,
            ),
            None => None,
        };
        let data = build_data(&cfg.run)?;
        let dev = data.dev(cfg.node.eval_batch);
        let session = Self {
            trainer,
            data,
            dev,
            store,
            bases,
            cfg: cfg.clone(),
            loss: f32::NAN,
            eval: None,
            own_recent: Default::default(),
        };
        Ok((session, log))
    }

    /// Updates applied to the replica (own included).
    pub fn applied(&self) -> u64 {
        self.trainer.replica().applied()
    }

    /// Scales own projected gradients from the next step on (see
    /// [`Trainer::set_step_scale`]).
    pub fn set_step_scale(&mut self, scale: f64) {
        self.trainer.set_step_scale(scale);
    }

    /// Test hook: publish own one-byte updates with the opposite sign (see
    /// [`Trainer::set_flip_signs`]).
    pub fn set_flip_signs(&mut self, on: bool) {
        self.trainer.set_flip_signs(on);
    }

    /// The trainer.
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// This node's mode.
    pub fn mode(&self) -> Mode {
        self.cfg.node.mode
    }

    /// Loss and accuracy on the dev set now (kept as the latest evaluation).
    pub fn evaluate(&mut self) -> Result<Eval, Error> {
        let e = self.trainer.evaluate(&self.dev)?;
        self.eval = Some(e);
        Ok(e)
    }

    /// The latest evaluation.
    pub fn last_eval(&self) -> Option<Eval> {
        self.eval
    }

    /// Recent training loss (moving average; NaN before the first step).
    pub fn loss(&self) -> f32 {
        self.loss
    }

    /// One own step as update `next_seq()`: made, applied, stored (before
    /// anyone can publish it), and evaluated after when due.
    pub fn step(&mut self) -> Result<Made, Error> {
        let origin = self.trainer.origin();
        let seq = self.trainer.next_seq();
        let mut basis = self.trainer.replica().version_vector().clone();
        basis.remove(&origin);
        let t = Instant::now();
        let (update, loss, forward_seconds, raw_bytes, keep) = match self.cfg.node.mode {
            Mode::FirstOrder => {
                let fo: &FirstOrder = &self.cfg.node.first_order;
                let batches = first_order_batches(&self.cfg, &self.data, &origin, seq);
                let s = self
                    .trainer
                    .step_first_order(&batches, fo.lr as f32, &fo.compression)?;
                (Own::Delta(s.payload), s.loss, Vec::new(), s.raw_bytes, 0.8)
            }
            Mode::ZerothOrder => {
                let batch = self.data.train_batch(&origin, seq, self.cfg.run.batch_size);
                let s = self.trainer.step(&batch)?;
                let loss = 0.5 * (s.loss_plus + s.loss_minus);
                (Own::Code(s.code), loss, s.forward_seconds.to_vec(), 0, 0.98)
            }
        };
        let seconds = t.elapsed().as_secs_f64();
        let kept = match &update {
            Own::Code(c) => (*c, None),
            Own::Delta(p) => (log::DELTA, Some(p.clone())),
        };
        self.own_recent.insert(seq, kept);
        while self.own_recent.len() > OWN_RECENT {
            self.own_recent.pop_first();
        }
        if let Some(store) = &mut self.store {
            let (codes, payloads) = match &update {
                Own::Code(c) => (vec![*c], Vec::new()),
                Own::Delta(p) => (vec![log::DELTA], vec![p.clone()]),
            };
            store.append(&Segment::new(origin, seq, codes, payloads))?;
        }
        self.loss = if self.loss.is_nan() {
            loss
        } else {
            keep * self.loss + (1.0 - keep) * loss
        };
        let every = self.cfg.node.eval_every;
        let eval = if every > 0 && (seq + 1).is_multiple_of(every) {
            Some(self.evaluate()?)
        } else {
            None
        };
        Ok(Made {
            seq,
            update,
            loss,
            seconds,
            forward_seconds,
            raw_bytes,
            eval,
            basis,
        })
    }

    /// Keeps the bases of `origin`'s batch of `n` updates from `first` in
    /// `bases.log` (a failure is logged: the bases only serve offline
    /// rechecks).
    pub fn keep_bases(&mut self, origin: &Origin, first: u64, n: u32, bases: &[u8]) {
        if let Some(f) = &mut self.bases {
            if let Err(e) = f.append(origin, first, n, bases) {
                tracing::warn!(path = %f.path().display(), error = %e, "cannot keep bases");
            }
        }
    }

    /// Rechecks `origin`'s one-byte update `seq` (published as `code`) on
    /// the state `target` it says it was computed on: subtracts `retract`
    /// (the applied tails past `target` the protocol core knows of) and this
    /// node's own updates past it, recomputes the projected gradient with
    /// that update's sample, adds everything back (exactly: integer
    /// accumulators), and judges the code (noise floor: `node.verify_tolerance / 2ε`). Returns
    /// the verdict and the gradient.
    pub fn recheck(
        &mut self,
        target: &VersionVector,
        retract: &[Segment],
        (origin, seq, code): (Origin, u64, u8),
    ) -> Result<(super::Verdict, f64), String> {
        let floor = self.cfg.node.verify_tolerance / (2.0 * self.cfg.run.eps);
        let back = self.way_back(target, retract)?;
        let batch = self.data.train_batch(&origin, seq, self.cfg.run.batch_size);
        let grad = self
            .trainer
            .recompute_at(target, &back, &origin, seq, &batch)
            .map_err(|e| e.to_string())?;
        let codec = &self.trainer.replica().rules().codec;
        let steps = self.cfg.run.codec.steps_per_octave;
        Ok((super::judge(codec, steps, code, grad, floor), grad))
    }

    /// Applies a segment the protocol core handed over, then appends it to
    /// the log's file; returns the updates applied.
    pub fn apply(&mut self, segment: &Segment) -> Result<usize, Error> {
        let n = self.trainer.apply(segment)?;
        if n > 0 {
            if let Some(store) = &mut self.store {
                store.append(segment)?;
            }
        }
        Ok(n)
    }

    /// Installs a snapshot (see [`Trainer::install`]) and stores its log.
    pub fn install(
        &mut self,
        chunks: &[Vec<u8>],
        hashes: &[[u8; 32]],
        expect: (&VersionVector, &[u8; 32]),
    ) -> Result<(VersionVector, Vec<Segment>), String> {
        let (vv, segments) = self.trainer.install(chunks, hashes, expect)?;
        if let Some(store) = &mut self.store {
            for s in &segments {
                store.append(s).map_err(|e| e.to_string())?;
            }
        }
        Ok((vv, segments))
    }

    /// A copy of the state at `target` (empty: now), made by subtracting
    /// `retract` (the applied tails the protocol core knows of) and this
    /// node's own updates past `target` (which may be newer than the core's).
    pub fn image_at(&self, target: &VersionVector, retract: &[Segment]) -> Result<Image, String> {
        if target.is_empty() {
            return Ok(self.trainer.image());
        }
        let segments = self.way_back(target, retract)?;
        let image = snapshot::image_before(self.trainer.replica(), &segments)?;
        if &image.vv != target {
            return Err("could not reach that version vector".into());
        }
        Ok(image)
    }

    /// What to subtract from the replica to reach `target`: the foreign
    /// applied tails in `retract` (what the protocol core knows of) and this
    /// node's own updates past `target` (which may be newer than the core's).
    fn way_back(
        &self,
        target: &VersionVector,
        retract: &[Segment],
    ) -> Result<Vec<Segment>, String> {
        let own = self.trainer.origin();
        let mut back: Vec<Segment> = retract
            .iter()
            .filter(|s| s.origin != own)
            .cloned()
            .collect();
        let have = self.trainer.next_seq();
        let from = target.get(&own).copied().unwrap_or(0);
        if have > from {
            let mut codes = Vec::new();
            let mut payloads = Vec::new();
            for seq in from..have {
                let (c, p) = self
                    .own_recent
                    .get(&seq)
                    .ok_or("own updates that old are not kept")?;
                codes.push(*c);
                payloads.extend(p.clone());
            }
            back.push(Segment::new(own, from, codes, payloads));
        }
        Ok(back)
    }

    /// Persists an exclusion (an origin proven to equivocate, from `from` on).
    pub fn exclude(&mut self, origin: &Origin, from: u64, proof: &[u8]) -> Result<(), Error> {
        if let Some(store) = &mut self.store {
            store.append_exclusion(origin, from, proof)?;
        }
        Ok(())
    }

    /// Persists an owner-signed admission.
    pub fn admit(&mut self, record: &crate::crdt::admit::Record) -> Result<(), Error> {
        if let Some(store) = &mut self.store {
            store.append_admission(record)?;
        }
        Ok(())
    }

    /// Makes the log's file durable (own updates before they are published).
    pub fn sync(&mut self) -> Result<(), Error> {
        if let Some(store) = &mut self.store {
            store.sync()?;
        }
        Ok(())
    }

    /// What the protocol core needs to know of the replica.
    pub fn state(&self, training_done: bool) -> ComputeState {
        let r = self.trainer.replica();
        ComputeState {
            vv: r.version_vector().clone(),
            digest: r.digest_bytes(),
            applied: r.applied(),
            own: self.trainer.next_seq(),
            loss: self.loss,
            eval: self.eval,
            training_done,
        }
    }
}
