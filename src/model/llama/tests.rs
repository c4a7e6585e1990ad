//! Unit tests of the llama: gradients against finite differences, the
//! forward against candle-transformers, padding, the next-token loss and
//! GGUF un-permuting.

use super::load::unpermute;
use super::*;
use crate::model::{Batch, Model};

fn tiny_shape() -> Shape {
    Shape {
        vocab: 50,
        hidden: 16,
        intermediate: 24,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        context: 64,
        tied: true,
    }
}

fn random_model() -> Llama {
    let shape = tiny_shape();
    let mut ts = HashMap::new();
    let mut s = 1u64;
    for p in shape.params() {
        let v: Vec<f32> = (0..p.len())
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
            })
            .collect();
        let t = Tensor::from_vec(v, p.shape.as_slice(), &Device::Cpu).unwrap();
        ts.insert(p.name, t);
    }
    Llama::from_tensors(shape, ts, vec![3, 7]).unwrap()
}

#[test]
fn gradients_match_finite_differences() {
    let mut m = random_model();
    let b = Batch {
        inputs: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8, 9], vec![9, 10]],
        labels: vec![0, 1, 1],
    };
    let specs = m.params();
    // A norm weight, a projection and the (tied) embedding.
    let pick: Vec<usize> = [
        "model.layers.1.input_layernorm.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.embed_tokens.weight",
    ]
    .iter()
    .map(|n| specs.iter().position(|p| p.name == *n).unwrap())
    .collect();
    let (loss, grads) = m.gradients(&b, &pick).unwrap();
    assert!((loss - m.loss(&b).unwrap()).abs() < 1e-4, "{loss}");
    for (k, &i) in pick.iter().enumerate() {
        // The element with the largest gradient, checked by central differences.
        let (j, &g) = grads[k]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        let h = 1e-2f32;
        let at = |m: &mut Llama, d: f32| {
            m.write(i, &mut |w| w[j] += d).unwrap();
            let l = m.loss(&b).unwrap();
            m.write(i, &mut |w| w[j] -= d).unwrap();
            l
        };
        let fd = (at(&mut m, h) - at(&mut m, -h)) / (2.0 * h);
        assert!(
            (fd - g).abs() <= 0.05 * g.abs() + 1e-3,
            "{}[{j}]: backprop {g}, finite difference {fd}",
            specs[i].name
        );
    }
    // The next-token head differentiates too.
    let mut t = random_model();
    t.head = Head::NextToken;
    let (l, g) = t.gradients(&b, &pick[..1]).unwrap();
    assert!(l.is_finite() && g[0].iter().any(|&x| x != 0.0));
}

#[test]
fn writing_a_parameter_changes_the_logits() {
    let mut m = random_model();
    let b = Batch {
        inputs: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10]],
        labels: vec![0, 1, 1],
    };
    let before = m.evaluate(&b).unwrap();
    let names: Vec<String> = m.params().into_iter().map(|p| p.name).collect();
    for probe in [
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.norm.weight",
        "model.embed_tokens.weight",
    ] {
        let i = names.iter().position(|n| n == probe).unwrap();
        let saved = m.read(i).unwrap();
        m.write(i, &mut |w| w.iter_mut().for_each(|x| *x *= 1.5))
            .unwrap();
        let after = m.evaluate(&b).unwrap();
        assert_ne!(before.loss_sum, after.loss_sum, "{probe}");
        m.write(i, &mut |w| w.copy_from_slice(&saved)).unwrap();
        assert_eq!(m.evaluate(&b).unwrap(), before, "{probe} restored");
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn forward_matches_candle_transformers() {
    let m = random_model();
    let x = vec![vec![1, 2, 3, 4, 5, 6, 7], vec![9, 8, 7, 6, 5, 4, 3]];
    let ours = m.last_logits(&x).unwrap();
    let theirs = m.reference_last_logits(&x).unwrap();
    assert_eq!(ours.dims(), &[2, 50]);
    let d = max_diff(&ours, &theirs);
    assert!(d < 1e-5, "max |Δ| {d}");
    // Every position of the all-position logits is the last position of
    // the prefix ending there.
    let all = m.logits(&x).unwrap();
    assert_eq!(all.dims(), &[2, 7, 50]);
    for i in 0..7 {
        let prefix: Vec<Vec<u32>> = x.iter().map(|r| r[..=i].to_vec()).collect();
        let want = m.reference_last_logits(&prefix).unwrap();
        let got = all.narrow(1, i, 1).unwrap().squeeze(1).unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "position {i}: max |Δ| {d}");
    }
}

#[test]
fn padded_batch_matches_buckets_of_equal_length() {
    let m = random_model();
    let b = Batch {
        inputs: vec![
            vec![1, 2, 3],
            vec![4, 5],
            vec![6, 7, 8],
            vec![9],
            vec![10, 11, 12, 13, 14, 15, 16, 17],
        ],
        labels: vec![0, 1, 0, 1, 1],
    };
    let Head::Classify(ids) = m.head().clone() else {
        unreachable!()
    };
    let padded = m.label_logits(&b, &ids).unwrap();
    let mut buckets: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, x) in b.inputs.iter().enumerate() {
        buckets.entry(x.len()).or_default().push(i);
    }
    for members in buckets.values() {
        let xs: Vec<Vec<u32>> = members.iter().map(|&i| b.inputs[i].clone()).collect();
        let full = m
            .reference_last_logits(&xs)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, &i) in full.iter().zip(members) {
            for (c, &t) in ids.iter().enumerate() {
                let (a, s) = (padded[i][c], row[t as usize]);
                assert!((a - s).abs() < 1e-4, "example {i} class {c}: {a} vs {s}");
            }
        }
    }
}

#[test]
fn next_token_loss_is_the_mean_cross_entropy_of_every_position() {
    let mut ts = HashMap::new();
    let base = random_model();
    for (p, t) in base.params().into_iter().zip(base.tensors()) {
        ts.insert(p.name, t.copy().unwrap());
    }
    let mut m = Llama::from_tensors(tiny_shape(), ts, Head::NextToken).unwrap();
    let b = Batch {
        inputs: vec![vec![1, 2, 3, 4, 5], vec![6, 7, 8]],
        labels: vec![0, 0],
    };
    let e = m.evaluate(&b).unwrap();
    assert_eq!(e.n, 4 + 2);
    // By hand, from the all-position logits of each sequence alone.
    let (mut sum, mut hits) = (0.0, 0);
    for x in &b.inputs {
        let l = m.logits(std::slice::from_ref(x)).unwrap();
        let l = l.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        for i in 0..x.len() - 1 {
            let row = &l[i];
            let lse = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
            sum += lse - f64::from(row[x[i + 1] as usize]);
            let best = (0..row.len())
                .max_by(|&a, &c| row[a].total_cmp(&row[c]))
                .unwrap();
            hits += usize::from(best == x[i + 1] as usize);
        }
    }
    assert!((e.loss_sum - sum).abs() < 1e-4, "{} vs {sum}", e.loss_sum);
    assert_eq!(e.correct, hits);
    let mean = m.loss(&b).unwrap();
    assert!((f64::from(mean) - sum / 6.0).abs() < 1e-5);
    // A uniform guess over 50 tokens costs ln 50 ≈ 3.9; random weights are
    // near it.
    assert!((2.0..6.0).contains(&mean), "{mean}");
    m.write(0, &mut |w| w.iter_mut().for_each(|x| *x *= 2.0))
        .unwrap();
    assert_ne!(m.loss(&b).unwrap(), mean);
    let one = Batch {
        inputs: vec![vec![3]],
        labels: vec![0],
    };
    assert!(m.loss(&one).is_err());
}

#[test]
fn unpermute_inverts_llama_cpp_permute() {
    // llama.cpp: w.reshape(h, 2, r/h/2, c).swapaxes(1, 2).reshape(r, c)
    let (h, r, c) = (2usize, 8usize, 3usize);
    let hf: Vec<f32> = (0..r * c).map(|x| x as f32).collect();
    let hf_t = Tensor::from_vec(hf.clone(), (r, c), &Device::Cpu).unwrap();
    let gguf = hf_t
        .reshape((h, 2, r / h / 2, c))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((r, c))
        .unwrap();
    assert_ne!(gguf.flatten_all().unwrap().to_vec1::<f32>().unwrap(), hf);
    let back = unpermute(&gguf, h).unwrap();
    assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(), hf);
}

#[test]
fn bad_batches_are_errors() {
    let m = random_model();
    let bad = Batch {
        inputs: vec![vec![1, 99]],
        labels: vec![0],
    };
    assert!(m.loss(&bad).is_err());
    let bad = Batch {
        inputs: vec![vec![1]],
        labels: vec![5],
    };
    assert!(m.loss(&bad).is_err());
    assert!(m.loss(&Batch::default()).is_err());
}
