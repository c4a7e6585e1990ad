//! The compute thread: owns the [`Trainer`] (model, replica, persisted log),
//! takes SPSA steps, applies what the network hands it, makes and installs
//! snapshots, and reports its state; the network loop never waits on it.

use super::*;
use crate::config::Mode;
use crate::log::Payload;

pub(super) enum ToCompute {
    Updates {
        origin: Origin,
        first_seq: u64,
        codes: Vec<u8>,
        payloads: Vec<Payload>,
    },
    Snapshot,
    Install(Vec<Vec<u8>>, Vec<[u8; 32]>),
    StopTraining,
    Stop,
}

#[derive(Clone, Debug)]
pub(super) struct ComputeState {
    pub(super) vv: VersionVector,
    pub(super) digest: [u8; 32],
    pub(super) applied: u64,
    pub(super) own: u64,
    pub(super) loss: f32,
    pub(super) eval: Option<Eval>,
    pub(super) training_done: bool,
}

pub(super) enum FromCompute {
    Published { seq: u64, code: u8 },
    PublishedDelta { seq: u64, payload: Payload },
    Snapshot(Arc<Snapshot>),
    Installed(Result<join::Codes, String>),
    State(Box<ComputeState>),
    Failed(String),
}

pub(super) struct ComputeLimits {
    pub(super) series: Series,
    pub(super) max_updates: Option<u64>,
    pub(super) deadline: Option<Instant>,
    pub(super) start_gate: Arc<Mutex<bool>>,
}

pub(super) fn compute_thread(
    mut trainer: Trainer,
    cfg: Config,
    limits: ComputeLimits,
    rx: smpsc::Receiver<ToCompute>,
    tx: mpsc::Sender<FromCompute>,
) -> Option<Eval> {
    let data = train::build_data(&cfg.run);
    let dev = data.dev(cfg.node.eval_batch);
    let origin = trainer.origin();
    let initial = trainer.evaluate(&dev).ok();
    let mut ema: f32 = f32::NAN;
    let mut training = true;
    let mut last_state = Instant::now() - Duration::from_secs(1);
    let mut dirty = true;
    let mut eval = initial;
    let send_state = |trainer: &Trainer, ema: f32, eval: Option<Eval>, done: bool| {
        let r = trainer.replica();
        let st = ComputeState {
            vv: r.version_vector().clone(),
            digest: r.digest_bytes(),
            applied: r.applied(),
            own: trainer.next_seq(),
            loss: ema,
            eval,
            training_done: done,
        };
        tx.blocking_send(FromCompute::State(Box::new(st))).is_ok()
    };
    loop {
        // Apply whatever arrived.
        let gate_open = *limits.start_gate.lock().unwrap_or_else(|e| e.into_inner());
        let wait = if training && gate_open {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        let mut first = true;
        loop {
            let msg = if first {
                rx.recv_timeout(wait)
                    .map_err(|e| matches!(e, smpsc::RecvTimeoutError::Disconnected))
            } else {
                rx.try_recv()
                    .map_err(|e| matches!(e, smpsc::TryRecvError::Disconnected))
            };
            first = false;
            match msg {
                Ok(ToCompute::Updates {
                    origin,
                    first_seq,
                    codes,
                    payloads,
                }) => {
                    let t = Instant::now();
                    let r = trainer.receive(origin, first_seq, &codes, &payloads);
                    let secs = t.elapsed().as_secs_f64();
                    limits.series.apply_seconds.observe(secs);
                    match r {
                        Ok(n) => dirty |= n > 0,
                        Err(e) => {
                            let _ = tx.blocking_send(FromCompute::Failed(e.to_string()));
                            return eval;
                        }
                    }
                }
                Ok(ToCompute::Snapshot) => {
                    let t = Instant::now();
                    let s = Arc::new(trainer.snapshot());
                    tracing::info!(
                        seconds = t.elapsed().as_secs_f64(),
                        chunks = s.chunks.len(),
                        "snapshot made"
                    );
                    if tx.blocking_send(FromCompute::Snapshot(s)).is_err() {
                        return eval;
                    }
                }
                Ok(ToCompute::Install(chunks, hashes)) => {
                    let r = trainer.install(&chunks, &hashes);
                    dirty = true;
                    if tx.blocking_send(FromCompute::Installed(r)).is_err() {
                        return eval;
                    }
                }
                Ok(ToCompute::StopTraining) => training = false,
                Ok(ToCompute::Stop) | Err(true) => {
                    return trainer.evaluate(&dev).ok().or(eval);
                }
                Err(false) => break,
            }
        }
        if training && gate_open {
            let own = trainer.next_seq();
            let over_count = limits.max_updates.is_some_and(|m| own >= m);
            let over_time = limits.deadline.is_some_and(|d| Instant::now() >= d);
            if over_count || over_time {
                training = false;
                eval = trainer.evaluate(&dev).ok();
                dirty = true;
            } else if cfg.node.mode == Mode::FirstOrder {
                let fo = &cfg.node.first_order;
                let batches = train::first_order_batches(&cfg, &data, &origin, own);
                let t = Instant::now();
                match trainer.step_first_order(&batches, fo.lr as f32, &fo.compression) {
                    Ok(s) => {
                        limits
                            .series
                            .step_seconds
                            .observe(t.elapsed().as_secs_f64());
                        ema = if ema.is_nan() {
                            s.loss
                        } else {
                            0.8 * ema + 0.2 * s.loss
                        };
                        tracing::debug!(
                            seq = s.seq,
                            bytes = s.payload.len(),
                            raw = s.raw_bytes,
                            "first-order delta"
                        );
                        if tx
                            .blocking_send(FromCompute::PublishedDelta {
                                seq: s.seq,
                                payload: s.payload,
                            })
                            .is_err()
                        {
                            return eval;
                        }
                        dirty = true;
                        if cfg.node.eval_every > 0 {
                            eval = trainer.evaluate(&dev).ok();
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(FromCompute::Failed(e.to_string()));
                        return eval;
                    }
                }
            } else {
                let batch = data.train_batch(&origin, own, cfg.run.batch_size);
                let t = Instant::now();
                match trainer.step(&batch) {
                    Ok(s) => {
                        limits
                            .series
                            .step_seconds
                            .observe(t.elapsed().as_secs_f64());
                        for f in s.forward_seconds {
                            limits.series.forward_seconds.observe(f);
                        }
                        let l = 0.5 * (s.loss_plus + s.loss_minus);
                        ema = if ema.is_nan() {
                            l
                        } else {
                            0.98 * ema + 0.02 * l
                        };
                        if tx
                            .blocking_send(FromCompute::Published {
                                seq: s.seq,
                                code: s.code,
                            })
                            .is_err()
                        {
                            return eval;
                        }
                        dirty = true;
                        let done = s.seq + 1;
                        if cfg.node.eval_every > 0 && done % cfg.node.eval_every == 0 {
                            eval = trainer.evaluate(&dev).ok();
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(FromCompute::Failed(e.to_string()));
                        return eval;
                    }
                }
            }
        }
        if dirty && last_state.elapsed() >= Duration::from_millis(100) {
            if !send_state(&trainer, ema, eval, !training) {
                return eval;
            }
            dirty = false;
            last_state = Instant::now();
        }
    }
}
