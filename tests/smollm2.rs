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

/// Timings on SmolLM2-135M (run with `--ignored --nocapture`, release
/// profile recommended): forward of 16 × 48 tokens, ZO step vs 2 forwards,
/// and the projected gradients of a few steps on SST-2 (with the repo config).
#[test]
#[ignore]
fn smollm2_timings() {
    use seedswarm::config::Config;
    use seedswarm::train::{self, Trainer};
    use std::time::Instant;
    let Some(path) = gguf() else {
        return;
    };
    eprintln!("threads: {}", candle_core::utils::get_num_threads());
    let t = Instant::now();
    let tok = llama::tokenizer(Source::Gguf(&path)).unwrap();
    let label = |w: &str| llama::encode(&tok, w).unwrap()[0];
    let model = Llama::load(
        Source::Gguf(&path),
        vec![label(" terrible"), label(" great")],
    )
    .unwrap();
    eprintln!("load + dequantize: {:.2}s", t.elapsed().as_secs_f64());
    let text = "the movie is a charming , funny and often affecting journey , and the acting is great though the plot drags . ";
    let ids = llama::encode(&tok, &text.repeat(4)).unwrap();
    let batch: Vec<Vec<u32>> = (0..16).map(|i| ids[i..i + 48].to_vec()).collect();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        model.last_logits(&batch).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "forward 16 x 48 tokens: min {:.2}s median {:.2}s ({:.0} tokens/s at the median)",
        times[0],
        times[1],
        768.0 / times[1]
    );
    drop(model);

    let cfg_path = std::env::var("SEEDSWARM_CONFIG")
        .unwrap_or_else(|_| format!("{}/configs/smollm2-sst2.toml", env!("CARGO_MANIFEST_DIR")));
    let mut cfg = Config::load(std::path::Path::new(&cfg_path)).unwrap();
    cfg.run.model = seedswarm::config::ModelSpec::Gguf(seedswarm::config::ModelFile {
        path: path.display().to_string(),
    });
    let t = Instant::now();
    let origin = train::local_origin(&cfg);
    let mut trainer = Trainer::new(&cfg, origin, None).unwrap();
    eprintln!(
        "trainer (load, base hash, replica of {} params): {:.2}s",
        trainer.replica().num_params(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let data = train::try_build_data(&cfg.run).unwrap();
    eprintln!(
        "data (k-shot sample, tokenize): {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let steps: u64 = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for seq in 0..steps {
        let b = data.train_batch(&origin, seq, cfg.run.batch_size);
        let t = Instant::now();
        let two = trainer.model().loss(&b).unwrap();
        let _ = trainer.model().loss(&b).unwrap();
        let fwd2 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let s = trainer.step(&b).unwrap();
        let step = t.elapsed().as_secs_f64();
        eprintln!(
            "step {seq}: {step:.2}s (2 forwards {fwd2:.2}s, inside step {:.2}+{:.2}s) loss {two:.4} ℓ+ {:.4} ℓ- {:.4} g {:+.3} code {}",
            s.forward_seconds[0], s.forward_seconds[1], s.loss_plus, s.loss_minus, s.grad, s.code
        );
    }
}

/// The Hugging Face directory loader gives the same logits as the GGUF it
/// was written from (safetensors under HF names, config.json, tokenizer.json).
#[test]
fn smollm2_hf_directory_matches_gguf() {
    let Some(path) = gguf() else {
        return;
    };
    let tok = llama::tokenizer(Source::Gguf(&path)).unwrap();
    let labels = vec![
        llama::encode(&tok, " terrible").unwrap()[0],
        llama::encode(&tok, " great").unwrap()[0],
    ];
    let model = Llama::load(Source::Gguf(&path), labels.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ts = std::collections::HashMap::new();
    for (p, t) in model.params().into_iter().zip(model.tensors()) {
        ts.insert(p.name, t.clone());
    }
    candle_core::safetensors::save(&ts, dir.path().join("model.safetensors")).unwrap();
    let s = model.shape();
    let config = serde_json::json!({
        "hidden_size": s.hidden, "intermediate_size": s.intermediate, "vocab_size": s.vocab,
        "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads, "rms_norm_eps": s.rms_eps, "rope_theta": s.rope_theta,
        "max_position_embeddings": s.context, "tie_word_embeddings": s.tied,
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    tok.save(dir.path().join("tokenizer.json"), false).unwrap();
    let hf_tok = llama::tokenizer(Source::HfDir(dir.path())).unwrap();
    let prompt = "unflinchingly bleak and desperate 1234 It was";
    let ids = llama::encode(&tok, prompt).unwrap();
    assert_eq!(llama::encode(&hf_tok, prompt).unwrap(), ids);
    let hf = Llama::load(Source::HfDir(dir.path()), labels).unwrap();
    let a = model.last_logits(std::slice::from_ref(&ids)).unwrap();
    let b = hf.last_logits(std::slice::from_ref(&ids)).unwrap();
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
}
