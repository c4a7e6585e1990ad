//! FedZip on a real model: the fine-tuning delta of a SmolLM2 replica (base
//! plus the update log in a data dir, e.g. after `seedswarm train --config
//! configs/smollm2-sst2.toml --data-dir DIR`) is compressed at several
//! settings; reports the ratio against raw f32 and the dev accuracy of
//! base + decoded delta against base + the exact delta.
//!
//! With `fo:N` in place of DATA_DIR the delta is first-order instead: N SGD
//! steps (backprop, `node.first_order.lr`, batches of `run.batch_size`) on
//! the trainable set from the base model.
//!
//! Run: `cargo bench --bench fedzip_lm -- CONFIG DATA_DIR|fo:N` (needs the
//! assets from `scripts/fetch-assets.sh`; prints a message and exits
//! otherwise). One JSON line per setting.

use seedswarm::config::Config;
use seedswarm::delta::fedzip::{self, Positions, Settings};
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
    let data = train::build_data(&cfg.run).expect("data");
    let dev = data.dev(cfg.node.eval_batch.min(16));
    let mut model = match train::build_model(&cfg.run) {
        Ok(m) => m,
        Err(e) => {
            println!("cannot load the model ({e}); run scripts/fetch-assets.sh (skipped)");
            return;
        }
    };
    let base_eval = evaluate(model.as_ref(), &dev);
    let specs = model.params();
    let trainable: Vec<usize> = specs
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            cfg.run
                .trainable
                .iter()
                .any(|g| seedswarm::config::glob(g, &p.name))
        })
        .map(|(i, _)| i)
        .collect();
    let base: Vec<Vec<f32>> = trainable
        .iter()
        .map(|&i| model.read(i).expect("read a parameter"))
        .collect();
    // The exact delta of every trainable tensor: from the log, or by backprop.
    let (updates, tuned_weights): (u64, Vec<Vec<f32>>) = if let Some(n) =
        dir.strip_prefix("fo:").and_then(|n| n.parse::<u64>().ok())
    {
        let origin = train::local_origin(&cfg);
        let lr = cfg.node.first_order.lr as f32;
        for step in 0..n {
            let b = data.train_batch(&origin, step, cfg.run.batch_size);
            let (loss, grads) = model.gradients(&b, &trainable).expect("gradients");
            eprintln!("sgd step {step}: loss {loss:.4}");
            for (&i, g) in trainable.iter().zip(&grads) {
                model
                    .write(i, &mut |w| {
                        for (w, g) in w.iter_mut().zip(g) {
                            *w -= lr * g;
                        }
                    })
                    .expect("write a parameter");
            }
        }
        let now = trainable
            .iter()
            .map(|&i| model.read(i).expect("read a parameter"))
            .collect();
        (n, now)
    } else {
        let trainer =
            match train::Trainer::from_dir(&cfg, train::local_origin(&cfg), Some(Path::new(dir))) {
                Ok(t) => t,
                Err(e) => {
                    println!("cannot load the log ({e}) (skipped)");
                    return;
                }
            };
        let now = trainable
            .iter()
            .map(|&i| trainer.model().read(i).expect("read a parameter"))
            .collect();
        (trainer.replica().applied(), now)
    };
    for (&i, w) in trainable.iter().zip(&tuned_weights) {
        model
            .write(i, &mut |x| x.copy_from_slice(w))
            .expect("write a parameter");
    }
    let tuned = evaluate(model.as_ref(), &dev);
    let slots: Vec<(usize, String, Vec<f32>, Vec<f32>)> = trainable
        .iter()
        .zip(base)
        .zip(&tuned_weights)
        .map(|((&i, b), now)| {
            let diff = now.iter().zip(&b).map(|(a, b)| a - b).collect();
            (i, specs[i].name.clone(), b, diff)
        })
        .collect();
    let raw: usize = slots.iter().map(|s| 4 * s.3.len()).sum();
    println!(
        "{{\"updates\":{},\"trainable_params\":{},\"dev_n\":{},\"accuracy_base\":{:.4},\"accuracy_exact_delta\":{:.4},\"load_seconds\":{:.1}}}",
        updates,
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
