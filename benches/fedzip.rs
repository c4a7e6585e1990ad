//! Effect of FedZip compression on first-order training of the built-in
//! task: rounds of local SGD steps whose weight change is applied either
//! exactly (the uncompressed delta: plain local SGD) or through
//! compress → encode → decode (top-z, k-means, Huffman ids,
//! difference-of-address positions). Reports dev accuracy and loss after each
//! number of rounds and the encoded size against raw f32.
//!
//! Run: `cargo bench --bench fedzip [-- ROUNDS [DIM HIDDEN]]` (defaults 30,
//! and the demo model's 8 and 16; wider models give larger tensors, where
//! the fixed per-tensor header matters less); one JSON line per setting.

use seedswarm::config::{Config, TaskSpec};
use seedswarm::delta::fedzip::{self, Positions, Settings};
use seedswarm::model::{Batch, Eval, Model};
use seedswarm::train;
use seedswarm::zo::seed::Origin;

fn config() -> Config {
    Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/demo.toml"
    )))
    .expect("demo config")
}

fn evaluate(model: &dyn Model, dev: &[Batch]) -> Eval {
    let mut e = Eval::default();
    for b in dev {
        e.merge(model.evaluate(b).expect("evaluate"));
    }
    e
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(30);
    let mut cfg = config();
    if let (Some(&dim), Some(&hidden), seedswarm::config::ModelSpec::Tiny(m)) =
        (args.get(1), args.get(2), &mut cfg.run.model)
    {
        m.dim = dim;
        m.hidden = hidden;
    }
    let TaskSpec::Synthetic(_) = &cfg.run.task else {
        panic!("the demo config uses the synthetic task")
    };
    let data = train::build_data(&cfg.run).expect("data");
    let dev = data.dev(cfg.node.eval_batch);
    let fo = &cfg.node.first_order;
    let origin = Origin([3; 32]);
    let settings: Vec<(String, Option<Settings>)> = std::iter::once(("none".to_string(), None))
        .chain([1.0, 0.25, 0.1, 0.01].into_iter().flat_map(|z| {
            [3usize, 8].into_iter().map(move |k| {
                (
                    format!("top_z={z} clusters={k}"),
                    Some(Settings {
                        top_z: z,
                        clusters: k,
                        iterations: 10,
                        positions: Positions::Diff,
                    }),
                )
            })
        }))
        .collect();
    for (label, s) in settings {
        let mut model = train::build_model(&cfg.run).expect("model");
        let specs = model.params();
        let all: Vec<usize> = (0..specs.len()).collect();
        let (mut raw, mut enc, mut enc_plain) = (0usize, 0usize, 0usize);
        let mut curve = Vec::new();
        for r in 0..rounds {
            let start: Vec<Vec<f32>> = all
                .iter()
                .map(|&i| model.read(i).expect("read a parameter"))
                .collect();
            for h in 0..fo.local_steps as u64 {
                let b = data.train_batch(&origin, r as u64 * fo.local_steps as u64 + h, 64);
                let (_, grads) = model.gradients(&b, &all).expect("gradients");
                for (&i, g) in all.iter().zip(&grads) {
                    model
                        .write(i, &mut |w| {
                            for (w, g) in w.iter_mut().zip(g) {
                                *w -= fo.lr as f32 * g;
                            }
                        })
                        .expect("write a parameter");
                }
            }
            if let Some(s) = &s {
                let diffs: Vec<Vec<f32>> = all
                    .iter()
                    .zip(&start)
                    .map(|(&i, st)| {
                        let now = model.read(i).expect("read a parameter");
                        now.iter().zip(st).map(|(a, b)| a - b).collect()
                    })
                    .collect();
                let views: Vec<(&str, &[f32])> = specs
                    .iter()
                    .zip(&diffs)
                    .map(|(p, d)| (p.name.as_str(), d.as_slice()))
                    .collect();
                let d = fedzip::compress(&views, s).expect("compress");
                let bytes = fedzip::encode(&d, Positions::Diff);
                enc += bytes.len();
                enc_plain += fedzip::encode(&d, Positions::Plain).len();
                raw += 4 * diffs.iter().map(Vec::len).sum::<usize>();
                let back = fedzip::decode(&bytes, 1 << 30).expect("decode");
                for (&i, (t, st)) in all.iter().zip(back.tensors.iter().zip(&start)) {
                    let dense = t.to_dense();
                    model
                        .write(i, &mut |w| {
                            for ((w, s), d) in w.iter_mut().zip(st).zip(&dense) {
                                *w = s + d;
                            }
                        })
                        .expect("write a parameter");
                }
            }
            if [1, 3, 10, rounds].contains(&(r + 1)) {
                let e = evaluate(model.as_ref(), &dev);
                curve.push(format!(
                    "{{\"rounds\":{},\"accuracy\":{:.4},\"loss\":{:.4}}}",
                    r + 1,
                    e.accuracy(),
                    e.loss()
                ));
            }
        }
        let ratio = if enc > 0 {
            format!("{:.2}", raw as f64 / enc as f64)
        } else {
            "null".into()
        };
        let ratio_plain = if enc_plain > 0 {
            format!("{:.2}", raw as f64 / enc_plain as f64)
        } else {
            "null".into()
        };
        println!(
            "{{\"setting\":\"{label}\",\"params\":{},\"local_steps\":{},\"lr\":{},\"bytes_per_delta\":{},\"raw_bytes_per_delta\":{},\"ratio\":{ratio},\"ratio_plain_positions\":{ratio_plain},\"curve\":[{}]}}",
            specs.iter().map(|p| p.len()).sum::<usize>(),
            fo.local_steps,
            fo.lr,
            enc / rounds,
            raw / rounds,
            curve.join(",")
        );
    }
}
