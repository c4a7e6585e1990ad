//! SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to f32) against the
//! Hugging Face transformers reference in /work/shared/reference: same token
//! ids, last-position logits within 1e-2.
//!
//! Needs `assets/SmolLM2-135M-Instruct.Q4_1.gguf` (scripts/fetch-assets.sh);
//! skipped with a message when it is missing, so a fresh checkout stays green.

use seedswarm::model::llama::{self, Llama, Source};
use seedswarm::model::{Batch, Model};
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-2;

fn gguf() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is missing; run scripts/fetch-assets.sh to enable the SmolLM2 tests",
            p.display()
        );
        None
    }
}

fn reference() -> Option<serde_json::Value> {
    let p = std::env::var("SEEDSWARM_REFERENCE")
        .unwrap_or_else(|_| "/work/shared/reference/smollm2_logits.json".into());
    match std::fs::read_to_string(&p) {
        Ok(t) => Some(serde_json::from_str(&t).expect("reference JSON parses")),
        Err(e) => {
            eprintln!("SKIPPED: reference logits {p} unreadable ({e}); set SEEDSWARM_REFERENCE");
            None
        }
    }
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn smollm2_matches_the_reference_logits() {
    let (Some(path), Some(reference)) = (gguf(), reference()) else {
        return;
    };
    let tok = llama::tokenizer(Source::Gguf(&path)).unwrap();
    assert_eq!(tok.get_vocab_size(false), 49_152);
    let great = llama::encode(&tok, " great").unwrap()[0];
    let terrible = llama::encode(&tok, " terrible").unwrap()[0];
    let model = Llama::load(Source::Gguf(&path), vec![terrible, great]).unwrap();
    assert_eq!(model.params().len(), 1 + 30 * 9 + 1);
    assert!(model
        .params()
        .iter()
        .any(|p| p.name == "model.layers.29.mlp.down_proj.weight"));
    let n: usize = model.params().iter().map(|p| p.len()).sum();
    assert_eq!(n, 134_515_008);

    for case in reference["cases"].as_array().expect("cases") {
        let prompt = case["prompt"].as_str().expect("prompt");
        let want = ids(&case["ids"]);
        let got = llama::encode(&tok, prompt).unwrap();
        assert_eq!(got, want, "token ids of {prompt:?}");
        let logits = model.last_logits(std::slice::from_ref(&got)).unwrap();
        let logits = logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let top = ids(&case["last_logits_top5_ids"]);
        let top_vals = case["last_logits_top5"].as_array().expect("top5");
        let mut max_err = 0f32;
        for (&id, v) in top.iter().zip(top_vals) {
            let v = v.as_f64().expect("logit") as f32;
            max_err = max_err.max((logits[id as usize] - v).abs());
        }
        for (id, key) in [(great, "great"), (terrible, "terrible")] {
            let v = case[key].as_f64().expect(key) as f32;
            max_err = max_err.max((logits[id as usize] - v).abs());
        }
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let sum_abs: f64 = logits.iter().map(|&x| f64::from(x.abs())).sum();
        let want_sum = case["logit_sum_abs_last"].as_f64().expect("sum");
        eprintln!(
            "{prompt:?}: max |Δlogit| {max_err:.2e}, top5 {:?}, Σ|logit| {sum_abs:.1} (ref {want_sum:.1})",
            &order[..5]
        );
        assert!(max_err <= TOL, "{prompt:?}: max |Δlogit| {max_err} > {TOL}");
        assert_eq!(&order[..5], top.as_slice(), "{prompt:?}: top-5 ids");
        // Σ|logit| over 49,152 entries: 1e-2 per entry on average at most.
        assert!(
            (sum_abs - want_sum).abs() <= 1e-2 * logits.len() as f64,
            "{prompt:?}: Σ|logit| {sum_abs} vs {want_sum}"
        );
    }
}

#[test]
fn smollm2_equal_length_batch_matches_single_forwards() {
    let Some(path) = gguf() else {
        return;
    };
    let tok = llama::tokenizer(Source::Gguf(&path)).unwrap();
    let label = |w: &str| llama::encode(&tok, w).unwrap()[0];
    let model = Llama::load(
        Source::Gguf(&path),
        vec![label(" terrible"), label(" great")],
    )
    .unwrap();
    let texts = [
        "a gorgeous , witty , seductive movie . It was",
        "the acting is terrible and the plot is dull . It was",
        "an utterly charming film It was",
    ];
    let batch = Batch {
        inputs: texts
            .iter()
            .map(|t| llama::encode(&tok, t).unwrap())
            .collect(),
        labels: vec![1, 0, 1],
    };
    let together = model.evaluate(&batch).unwrap();
    let mut single = 0.0;
    for (x, &y) in batch.inputs.iter().zip(&batch.labels) {
        let one = Batch {
            inputs: vec![x.clone()],
            labels: vec![y],
        };
        single += model.evaluate(&one).unwrap().loss_sum;
    }
    assert!(
        (together.loss_sum - single).abs() < 1e-3,
        "{together:?} vs {single}"
    );
}
