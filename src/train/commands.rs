//! The single-node commands: `train` (the [`Session`] loop without a
//! network), `eval` and `export` of a replica rebuilt from an update log.

use super::*;
use crate::proto::Own;
use serde::Serialize;

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
    /// Every evaluation of the run, first (before training) to last.
    pub curve: Vec<CurvePoint>,
}

/// One evaluation of a `train` run: dev accuracy against updates and time.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    /// Updates applied when it was taken.
    pub updates: u64,
    /// Seconds since the command started (model load included).
    pub wall_seconds: f64,
    pub accuracy: f64,
    pub loss: f64,
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
    let (mut session, _log) = Session::open(cfg, origin, data_dir)?;
    let initial = session.evaluate()?;
    let point = |updates: u64, e: &Eval| CurvePoint {
        updates,
        wall_seconds: start.elapsed().as_secs_f64(),
        accuracy: e.accuracy(),
        loss: e.loss(),
    };
    let mut curve = vec![point(session.trainer().replica().applied(), &initial)];
    let mut last = Some(initial);
    progress(0, cfg.node.steps, initial.loss(), Some(initial));
    let first = session.trainer().next_seq();
    let (mut delta_bytes, mut raw_delta_bytes) = (0u64, 0u64);
    while session.trainer().next_seq() < cfg.node.steps.max(first) {
        let made = session.step()?;
        if let Own::Delta(p) = &made.update {
            delta_bytes += p.len() as u64;
            raw_delta_bytes += made.raw_bytes as u64;
        }
        if let Some(e) = &made.eval {
            curve.push(point(session.trainer().replica().applied(), e));
            last = Some(*e);
        }
        progress(
            made.seq + 1,
            cfg.node.steps,
            f64::from(session.loss()),
            made.eval,
        );
    }
    let updates = session.trainer().replica().applied();
    // The last evaluation is the final one when nothing was applied since.
    let fin = match (curve.last(), last) {
        (Some(p), Some(e)) if p.updates == updates => e,
        _ => {
            let e = session.evaluate()?;
            curve.push(point(updates, &e));
            e
        }
    };
    let wall = start.elapsed().as_secs_f64();
    let trainer = session.trainer();
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
        curve,
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

/// Progress hook for [`evaluate`]: `(batches done, batches in all)`, called
/// once after each batch.
pub type EvalProgress<'a> = &'a mut dyn FnMut(usize, usize);

/// Accuracy of the replica (base model + the update log in `data_dir`) on a
/// labeled file (TSV/JSONL, prompt tasks) or, without one, the task's dev set;
/// `progress` hears of every batch evaluated.
pub fn evaluate(
    cfg: &Config,
    data_file: Option<&Path>,
    data_dir: Option<&Path>,
    progress: Option<EvalProgress<'_>>,
) -> Result<EvalSummary, Error> {
    let start = Instant::now();
    let trainer = Trainer::from_dir(cfg, local_origin(cfg), data_dir)?;
    let batch = cfg.node.eval_batch;
    let (batches, what) = match (data_file, &cfg.run.task) {
        (None, _) => (build_data(&cfg.run)?.dev(batch), "dev set".to_string()),
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
    let e = match progress {
        Some(p) => trainer.evaluate_with(&batches, p)?,
        None => trainer.evaluate(&batches)?,
    };
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
    let trainer = Trainer::from_dir(cfg, local_origin(cfg), data_dir)?;
    super::materialize::save_weights(trainer.model(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml");
        Config::load(&path).expect("demo config")
    }

    #[test]
    fn eval_progress_is_called_once_per_batch_with_increasing_counts() {
        let mut cfg = demo();
        cfg.node.eval_batch = 7;
        let mut calls = Vec::new();
        let s = evaluate(
            &cfg,
            None,
            None,
            Some(&mut |done, total| calls.push((done, total))),
        )
        .expect("eval");
        let batches = s.n.div_ceil(7);
        assert!(batches > 1, "the dev set spans several batches: {}", s.n);
        let expected: Vec<_> = (1..=batches).map(|d| (d, batches)).collect();
        assert_eq!(calls, expected);
        // The same result without a hook.
        let quiet = evaluate(&cfg, None, None, None).expect("eval");
        assert_eq!(
            (quiet.n, quiet.accuracy, quiet.digest),
            (s.n, s.accuracy, s.digest)
        );
    }
}
