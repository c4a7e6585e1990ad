//! FedZip on a real model: the fine-tuning delta of a SmolLM2 replica (base
//! plus the update log in a data dir, e.g. after `seedswarm train --config
//! configs/smollm2-sst2.toml --data-dir DIR`) is compressed at several
//! settings; reports the ratio against raw f32 and the dev accuracy of
//! base + decoded delta against base + the exact delta.
//!
//! Run: `cargo bench --bench fedzip_lm -- CONFIG DATA_DIR` (needs the
//! assets from `scripts/fetch-assets.sh`; prints a message and exits
//! otherwise). One JSON line per setting.

use seedswarm::config::Config;
use seedswarm::fedzip::{self, Positions, Settings};
use seedswarm::model::{Batch, Eval, Model};
use seedswarm::train;
use std::path::Path;

fn evaluate(model: &dyn Model, dev: &[Batch]) -> Eval {
    let mut e = Eval::default();
    for b in dev {
        e.merge(model.evaluate(b).expect("evaluate"));
    }
    e
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (Some(config), Some(dir)) = (args.first(), args.get(1)) else {
        println!("usage: cargo bench --bench fedzip_lm -- CONFIG DATA_DIR (skipped)");
        return;
    };
    let cfg = Config::load(Path::new(config)).expect("config");
    if train::model_source(&cfg.run).is_none() {
        println!("{config} is not a language-model config (skipped)");
        return;
    }
    let t = std::time::Instant::now();
    let trainer = match train::Trainer::new(&cfg, train::local_origin(&cfg), Some(Path::new(dir))) {
        Ok(t) => t,
        Err(e) => {
            println!("cannot load the model or log ({e}); run scripts/fetch-assets.sh (skipped)");
            return;
        }
    };
    let data = train::try_build_data(&cfg.run).expect("data");
    let dev = data.dev(cfg.node.eval_batch.min(16));
    let tuned = evaluate(trainer.model(), &dev);
    let mut model = train::build_model(&cfg.run).expect("model");
    let base_eval = evaluate(model.as_ref(), &dev);
    let specs = model.params();
    // The exact fine-tuning delta of every trainable tensor.
    let mut slots = Vec::new();
    for s in trainer.replica().slots() {
        let i = specs.iter().position(|p| p.name == s.name).expect("param");
        let now = trainer.model().read(i).expect("read");
        let diff: Vec<f32> = now.iter().zip(&s.base).map(|(a, b)| a - b).collect();
        slots.push((i, s.name.clone(), s.base.clone(), diff));
    }
    let raw: usize = slots.iter().map(|s| 4 * s.3.len()).sum();
    println!(
        "{{\"updates\":{},\"trainable_params\":{},\"dev_n\":{},\"accuracy_base\":{:.4},\"accuracy_exact_delta\":{:.4},\"load_seconds\":{:.1}}}",
        trainer.replica().applied(),
        raw / 4,
        tuned.n,
        base_eval.accuracy(),
        tuned.accuracy(),
        t.elapsed().as_secs_f64()
    );
    for (z, k) in [(1.0, 3), (1.0, 16), (0.1, 3), (0.01, 3)] {
        let s = Settings {
            top_z: z,
            clusters: k,
            iterations: 10,
            positions: Positions::Diff,
        };
        let views: Vec<(&str, &[f32])> = slots
            .iter()
            .map(|(_, n, _, d)| (n.as_str(), d.as_slice()))
            .collect();
        let d = fedzip::compress(&views, &s).expect("compress");
        let bytes = fedzip::encode(&d, Positions::Diff);
        let back = fedzip::decode(&bytes, 1 << 32).expect("decode");
        let (mut err, mut norm) = (0f64, 0f64);
        for ((i, _, base, diff), t) in slots.iter().zip(&back.tensors) {
            let dense = t.to_dense();
            for (a, b) in dense.iter().zip(diff) {
                err += f64::from(a - b).powi(2);
                norm += f64::from(*b).powi(2);
            }
            model
                .write(*i, &mut |w| {
                    for ((w, b), d) in w.iter_mut().zip(base).zip(&dense) {
                        *w = b + d;
                    }
                })
                .expect("write");
        }
        let e = evaluate(model.as_ref(), &dev);
        println!(
            "{{\"top_z\":{z},\"clusters\":{k},\"raw_bytes\":{raw},\"encoded_bytes\":{},\"ratio\":{:.1},\"rel_l2_error\":{:.4},\"accuracy\":{:.4},\"loss\":{:.4}}}",
            bytes.len(),
            raw as f64 / bytes.len() as f64,
            (err / norm.max(1e-30)).sqrt(),
            e.accuracy(),
            e.loss()
        );
    }
}
