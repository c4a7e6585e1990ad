//! SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to f32) against the
//! Hugging Face transformers reference in tests/data/smollm2_logits.json
//! (tests/data/README.md): same token ids, last-position logits within
//! 1e-2; our forward against candle-transformers' on the same weights; one
//! padded forward against single forwards; the causal-LM loss; the shipped
//! configs and the SST-2 data they name (data/sst2/).
//!
//! Needs `assets/SmolLM2-135M-Instruct.Q4_1.gguf` (scripts/fetch-assets.sh);
//! skipped with a message when it is missing, so a fresh checkout stays green — except
//! where `SEEDSWARM_REQUIRE_ASSETS=1` (CI, after fetching them): then they fail.
//! The reference logits and the SST-2 data are in the repository: a test
//! that needs them fails when they are missing.

use seedswarm::model::llama::{self, Head, Llama, Source};
use seedswarm::model::{Batch, Model};
use std::path::{Path, PathBuf};
use std::time::Instant;

const TOL: f32 = 1e-2;

fn gguf() -> Option<PathBuf> {
    let p = repo().join("assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        missing(&p);
        None
    }
}

/// A fetched asset is missing: a skip on a developer's checkout, a failure
/// where the assets must be there (CI sets `SEEDSWARM_REQUIRE_ASSETS=1`
/// after running scripts/fetch-assets.sh).
fn missing(p: &Path) {
    if std::env::var_os("SEEDSWARM_REQUIRE_ASSETS").is_some_and(|v| v == "1") {
        panic!(
            "{} is missing and SEEDSWARM_REQUIRE_ASSETS=1: run scripts/fetch-assets.sh",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing; run scripts/fetch-assets.sh to enable the SmolLM2 tests",
        p.display()
    );
}

/// The repository root: data/ and tests/data/ are read from here, not from
/// the working directory.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The transformers reference logits: tests/data/smollm2_logits.json, or the
/// file named by `SEEDSWARM_REFERENCE`.
fn reference() -> serde_json::Value {
    let p = std::env::var_os("SEEDSWARM_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("tests/data/smollm2_logits.json"));
    let t = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reference logits {} unreadable: {e}", p.display()));
    serde_json::from_str(&t).expect("reference JSON parses")
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
    let Some(path) = gguf() else {
        return;
    };
    let reference = reference();
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
        let theirs = model
            .reference_last_logits(std::slice::from_ref(&got))
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let vs_candle = logits
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{prompt:?}: ours vs candle-transformers max |Δlogit| {vs_candle:.2e}");
        assert!(vs_candle <= 1e-3, "{prompt:?}: {vs_candle}");
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
fn smollm2_padded_batch_matches_single_forwards() {
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
    let lens: Vec<usize> = batch.inputs.iter().map(Vec::len).collect();
    assert!(lens.iter().any(|&l| l != lens[0]), "{lens:?}");
    let together = model.evaluate(&batch).unwrap();
    // Whole-vocabulary logits at each row's own last token, padded vs alone.
    let padded = model.last_logits(&batch.inputs).unwrap();
    for (i, x) in batch.inputs.iter().enumerate() {
        let alone = model.last_logits(std::slice::from_ref(x)).unwrap();
        let row = padded.narrow(0, i, 1).unwrap();
        let d = (row - alone)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-3, "row {i}: max |Δlogit| {d}");
    }
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

/// The prompts of an SST-2 file of the repository (`data/sst2/…`).
fn sst2_prompts(tok: &tokenizers::Tokenizer, file: &str) -> Vec<Vec<u32>> {
    let p = repo().join(file);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{} unreadable: {e}", p.display()));
    text.lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .map(|s| llama::encode(tok, &format!("{} It was", s.trim())).unwrap())
        .collect()
}

fn median(f: &mut dyn FnMut(), n: usize) -> f64 {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

/// Timings on SmolLM2-135M (run with `--release --ignored --nocapture`):
/// forward of 16 × 48 SST-2 tokens, candle-transformers' forward vs ours;
/// 16 SST-2 dev prompts of their own lengths, one forward per length
/// (the old way) vs one padded forward; ZO step vs 2 forwards on the
/// smollm2-sst2 config.
#[test]
#[ignore]
fn smollm2_timings() {
    use seedswarm::config::Config;
    use seedswarm::train::{self, Trainer};
    let Some(path) = gguf() else {
        return;
    };
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
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
    let train = sst2_prompts(&tok, "data/sst2/train.tsv");
    let dev = sst2_prompts(&tok, "data/sst2/dev.tsv");
    // 16 × 48: the first 16 training prompts of at least 48 tokens, cut to 48.
    let fixed: Vec<Vec<u32>> = train
        .iter()
        .filter(|x| x.len() >= 48)
        .take(16)
        .map(|x| x[..48].to_vec())
        .collect();
    assert_eq!(fixed.len(), 16);
    let labels = vec![0; 16];
    let fixed_batch = Batch {
        inputs: fixed.clone(),
        labels: labels.clone(),
    };
    let cand = median(
        &mut || drop(model.reference_last_logits(&fixed).unwrap()),
        reps,
    );
    let ours = median(&mut || drop(model.last_logits(&fixed).unwrap()), reps);
    let head = median(
        &mut || {
            model.evaluate(&fixed_batch).unwrap();
        },
        reps,
    );
    eprintln!(
        "16 x 48 SST-2 tokens, median of {reps}: candle-transformers {cand:.2}s, ours (full vocab at the last token) {ours:.2}s, ours (label head) {head:.2}s = {:.0} tokens/s; vs PyTorch 6.53s: {:.2}x",
        768.0 / head,
        6.53 / head
    );
    // 16 dev prompts of their own lengths.
    let mixed: Vec<Vec<u32>> = dev.iter().take(16).cloned().collect();
    let lens: Vec<usize> = mixed.iter().map(Vec::len).collect();
    let mut buckets: std::collections::BTreeMap<usize, Vec<Vec<u32>>> = Default::default();
    for x in &mixed {
        buckets.entry(x.len()).or_default().push(x.clone());
    }
    let bucketed = median(
        &mut || {
            for xs in buckets.values() {
                drop(model.reference_last_logits(xs).unwrap());
            }
        },
        reps,
    );
    let mixed_batch = Batch {
        inputs: mixed,
        labels,
    };
    let padded = median(
        &mut || {
            model.evaluate(&mixed_batch).unwrap();
        },
        reps,
    );
    eprintln!(
        "16 SST-2 dev prompts, lengths {lens:?} ({} distinct, {} tokens, padded to {}), median of {reps}: one candle-transformers forward per length {bucketed:.2}s, one padded forward {padded:.2}s ({:.2}x)",
        buckets.len(),
        lens.iter().sum::<usize>(),
        lens.iter().max().unwrap(),
        bucketed / padded
    );
    drop(model);

    let mut cfg = match std::env::var_os("SEEDSWARM_CONFIG") {
        Some(p) => Config::load(Path::new(&p)).unwrap(),
        None => config("smollm2-sst2.toml"),
    };
    cfg.run.model = seedswarm::config::ModelSpec::Gguf(seedswarm::config::ModelFile {
        path: path.display().to_string(),
    });
    let t = Instant::now();
    let origin = train::local_origin(&cfg);
    let mut trainer = Trainer::new(&cfg, origin).unwrap();
    eprintln!(
        "trainer (load, base hash, replica of {} params): {:.2}s",
        trainer.replica().num_params(),
        t.elapsed().as_secs_f64()
    );
    let data = train::build_data(&cfg.run).unwrap();
    let steps: u64 = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let (mut sum_step, mut sum_two) = (0.0, 0.0);
    for seq in 0..steps {
        let b = data.train_batch(&origin, seq, cfg.run.batch_size);
        let t = Instant::now();
        let two = trainer.model().loss(&b).unwrap();
        let _ = trainer.model().loss(&b).unwrap();
        let fwd2 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let s = trainer.step(&b).unwrap();
        let step = t.elapsed().as_secs_f64();
        sum_step += step;
        sum_two += fwd2;
        eprintln!(
            "step {seq}: {step:.2}s (2 forwards {fwd2:.2}s, inside step {:.2}+{:.2}s, ratio {:.2}) loss {two:.4} ℓ+ {:.4} ℓ- {:.4} g {:+.3} code {}",
            s.forward_seconds[0], s.forward_seconds[1], step / fwd2, s.loss_plus, s.loss_minus, s.grad, s.code
        );
    }
    eprintln!(
        "ZO step / 2 forwards over {steps} steps: {:.2} ({:.2}s / {:.2}s)",
        sum_step / sum_two,
        sum_step / steps as f64,
        sum_two / steps as f64
    );
}

/// The causal-LM head: English text costs far less than a uniform guess
/// (ln 49,152 ≈ 10.8 nats per token), and the loss is the mean over tokens.
#[test]
fn smollm2_next_token_loss() {
    let Some(path) = gguf() else {
        return;
    };
    let tok = llama::tokenizer(Source::Gguf(&path)).unwrap();
    let model = Llama::load(Source::Gguf(&path), Head::NextToken).unwrap();
    let texts = [
        "The capital of France is Paris, and the capital of Italy is Rome.",
        "it 's a charming and often affecting journey .",
    ];
    let batch = Batch {
        inputs: texts
            .iter()
            .map(|t| llama::encode(&tok, t).unwrap())
            .collect(),
        labels: vec![0, 0],
    };
    let e = model.evaluate(&batch).unwrap();
    let tokens: usize = batch.inputs.iter().map(|x| x.len() - 1).sum();
    assert_eq!(e.n, tokens);
    eprintln!(
        "next-token loss {:.3} nats (perplexity {:.1}), top-1 accuracy {:.3} over {} tokens",
        e.loss(),
        e.loss().exp(),
        e.accuracy(),
        e.n
    );
    assert!(e.loss() < 5.0, "{e:?}");
    assert!(e.accuracy() > 0.2, "{e:?}");
    let mut sum = 0.0;
    for x in &batch.inputs {
        let one = Batch {
            inputs: vec![x.clone()],
            labels: vec![0],
        };
        sum += model.evaluate(&one).unwrap().loss_sum;
    }
    assert!((sum - e.loss_sum).abs() < 1e-2, "{sum} vs {}", e.loss_sum);
}

/// A shipped config, its task's data files (named relative to the
/// repository root, where the README runs `seedswarm`) made absolute.
fn config(name: &str) -> seedswarm::config::Config {
    use seedswarm::config::{Config, TaskSpec};
    let mut cfg = Config::load(&repo().join("configs").join(name)).unwrap();
    let files = match &mut cfg.run.task {
        TaskSpec::Prompt(t) => [&mut t.train, &mut t.dev],
        TaskSpec::Text(t) => [&mut t.train, &mut t.dev],
        TaskSpec::Synthetic(_) => return cfg,
    };
    for f in files {
        assert!(!Path::new(f).is_absolute(), "{name}: {f} is absolute");
        *f = repo().join(&*f).display().to_string();
    }
    cfg
}

/// The shipped SmolLM2 configs parse; the SST-2 files they name are in the
/// repository and read whole; the Rotten Tomatoes corpus loads when present.
#[test]
fn smollm2_configs_are_valid() {
    use seedswarm::config::TaskSpec;
    for (name, text) in [
        ("smollm2-sst2.toml", false),
        ("smollm2-rt.toml", false),
        ("smollm2-text.toml", true),
    ] {
        let cfg = config(name);
        assert_eq!(matches!(cfg.run.task, TaskSpec::Text(_)), text, "{name}");
    }
    // GLUE SST-2 (data/sst2/README.md): rows and positive rows.
    let sst2 = [(67_349, 37_569), (872, 444)];
    match &config("smollm2-sst2.toml").run.task {
        TaskSpec::Prompt(t) => {
            for (file, want) in [&t.train, &t.dev].into_iter().zip(sst2) {
                let rows = t
                    .read(Path::new(file))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                let positive = rows.iter().filter(|(_, y)| *y == 1).count();
                assert_eq!((rows.len(), positive), want, "{file}");
            }
        }
        other => panic!("smollm2-sst2.toml: {other:?}"),
    }
    match &config("smollm2-text.toml").run.task {
        TaskSpec::Text(t) => {
            for (file, (want, _)) in [&t.train, &t.dev].into_iter().zip(sst2) {
                let docs = t
                    .read(Path::new(file))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(docs.len(), want, "{file}");
            }
        }
        other => panic!("smollm2-text.toml: {other:?}"),
    }
    let corpus = repo().join("assets/rotten_tomatoes_corpus_full.csv.bz2");
    if !corpus.exists() {
        missing(&corpus);
        return;
    }
    let cfg = config("smollm2-rt.toml");
    let TaskSpec::Prompt(t) = &cfg.run.task else {
        unreachable!()
    };
    let rows = t.read(&corpus).unwrap();
    let fresh = rows.iter().filter(|(_, y)| *y == 1).count();
    assert_eq!((rows.len(), fresh), (12_808, 7_403));
    let held = rows
        .iter()
        .filter(|(x, _)| seedswarm::task::held_out(x, t.dev_fraction))
        .count();
    let dev: Vec<u32> = rows
        .iter()
        .filter(|(x, _)| seedswarm::task::held_out(x, t.dev_fraction))
        .take(t.dev_size)
        .map(|(_, y)| *y)
        .collect();
    eprintln!(
        "Rotten Tomatoes: {} reviews, {fresh} fresh, {held} held out; the dev set's first {} are {} fresh",
        rows.len(),
        dev.len(),
        dev.iter().filter(|&&y| y == 1).count()
    );
    assert!((1_000..1_600).contains(&held), "{held}");
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

/// The text task end to end: config → data windows → one ZO step → dev
/// evaluation reporting per-token loss and next-token accuracy.
#[test]
fn smollm2_text_task_trains_end_to_end() {
    use seedswarm::config::{ModelFile, ModelSpec, TaskSpec};
    use seedswarm::train::{self, Trainer};
    let Some(path) = gguf() else {
        return;
    };
    let mut cfg = config("smollm2-text.toml");
    let TaskSpec::Text(t) = &mut cfg.run.task else {
        unreachable!()
    };
    // Both sides of the split from the (small) dev file.
    t.train = t.dev.clone();
    t.dev_fraction = 0.5;
    t.max_train = 32;
    t.dev_size = 8;
    cfg.run.batch_size = 4;
    cfg.run.model = ModelSpec::Gguf(ModelFile {
        path: path.display().to_string(),
    });
    let origin = train::local_origin(&cfg);
    let mut trainer = Trainer::new(&cfg, origin).unwrap();
    let data = train::build_data(&cfg.run).unwrap();
    let dev = data.dev(4);
    let before = trainer.evaluate(&dev).unwrap();
    let tokens: usize = dev
        .iter()
        .flat_map(|b| &b.inputs)
        .map(|x| x.len() - 1)
        .sum();
    assert_eq!(before.n, tokens);
    assert!(
        before.loss() < 8.0 && before.accuracy() > 0.05,
        "{before:?}"
    );
    let s = trainer.step(&data.train_batch(&origin, 0, 4)).unwrap();
    assert!(s.loss_plus.is_finite() && s.loss_minus.is_finite());
    assert_ne!(s.loss_plus, s.loss_minus);
    let after = trainer.evaluate(&dev).unwrap();
    eprintln!(
        "text task: dev loss {:.4} -> {:.4} over {} tokens, ℓ+ {:.4} ℓ- {:.4}",
        before.loss(),
        after.loss(),
        after.n,
        s.loss_plus,
        s.loss_minus
    );
    assert_eq!(after.n, before.n);
}

/// A few SPSA steps on SmolLM2 as a seed log → `materialize` to a Hugging
/// Face directory (config.json, model.safetensors, tokenizer.json) that
/// loads back to the very replica: same tensors as `export`, same tokens,
/// bit-identical loss; another base (the fine-tuned directory itself) is
/// refused by hash.
#[test]
fn smollm2_seed_log_materializes_a_hugging_face_directory() {
    use seedswarm::crdt::log::{Segment, Store};
    use seedswarm::train::{self, Trainer};
    if gguf().is_none() {
        return;
    }
    let cfg = config("smollm2-sst2.toml");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let origin = train::local_origin(&cfg);
    let mut trainer = Trainer::new(&cfg, origin).unwrap();
    let data = train::build_data(&cfg.run).unwrap();
    let (_, mut store, _) = Store::open(&data_dir.join("updates.log"), trainer.run()).unwrap();
    for seq in 0..3 {
        let batch = data.train_batch(&origin, seq, cfg.run.batch_size);
        let s = trainer.step(&batch).unwrap();
        store
            .append(&Segment::new(origin, seq, vec![s.code], Vec::new()))
            .unwrap();
    }
    store.sync().unwrap();
    let file = dir.path().join("run.seedlog");
    let s = train::export_seedlog(&cfg, &data_dir, &file, false).unwrap();
    assert_eq!(s.updates, 3);
    assert_eq!(s.digest, trainer.replica().digest());
    eprintln!(
        "SmolLM2 seed log: {} bytes for {} updates ({} of manifest), against {} bytes of f32 weights",
        s.bytes, s.updates, s.manifest_bytes, s.model_bytes
    );
    let out = dir.path().join("hf");
    let m = train::materialize(&file, None, &out).unwrap();
    assert_eq!(
        (m.digest.as_str(), m.format.as_str()),
        (s.digest.as_str(), "directory")
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let exported = dir.path().join("export.safetensors");
    train::export(&cfg, Some(&data_dir), &exported).unwrap();
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap()
    );
    let tok = llama::tokenizer(Source::Gguf(&gguf().unwrap())).unwrap();
    let hf_tok = llama::tokenizer(Source::HfDir(&out)).unwrap();
    let text = "a gorgeous, witty, seductive movie. It was";
    assert_eq!(
        llama::encode(&hf_tok, text).unwrap(),
        llama::encode(&tok, text).unwrap()
    );
    let labels = vec![
        llama::encode(&tok, " terrible").unwrap()[0],
        llama::encode(&tok, " great").unwrap()[0],
    ];
    let hf = Llama::load(Source::HfDir(&out), labels).unwrap();
    let batch = data.train_batch(&origin, 99, 4);
    assert_eq!(
        hf.loss(&batch).unwrap().to_bits(),
        trainer.model().loss(&batch).unwrap().to_bits()
    );
    let e = train::materialize(&file, Some(&out), &dir.path().join("again")).unwrap_err();
    assert!(e.to_string().contains("hash"), "{e}");
}

/// The numeric noise a spot check must tolerate, measured: the projected
/// gradient of the same update computed on the whole batch and as the mean
/// of its two halves (another packing of the same rows: other padded
/// lengths, other matmul shapes). The loss difference it implies must be
/// well inside `node.verify_tolerance`'s default.
#[test]
fn smollm2_gradient_noise_between_packings_is_within_the_spot_check_tolerance() {
    use seedswarm::model::Batch;
    use seedswarm::train::{self, Trainer};
    if gguf().is_none() {
        return;
    }
    let cfg = config("smollm2-sst2.toml");
    let origin = train::local_origin(&cfg);
    let mut trainer = Trainer::new(&cfg, origin).unwrap();
    let data = train::build_data(&cfg.run).unwrap();
    let mut worst = 0f64;
    for seq in 0..3 {
        let batch = data.train_batch(&origin, seq, cfg.run.batch_size);
        let half = batch.len() / 2;
        let part = |r: std::ops::Range<usize>| Batch {
            inputs: batch.inputs[r.clone()].to_vec(),
            labels: batch.labels[r].to_vec(),
        };
        let g = trainer.recompute(&origin, seq, &batch).unwrap();
        let g1 = trainer.recompute(&origin, seq, &part(0..half)).unwrap();
        let g2 = trainer
            .recompute(&origin, seq, &part(half..batch.len()))
            .unwrap();
        let d = (g - 0.5 * (g1 + g2)).abs() * 2.0 * cfg.run.eps;
        eprintln!(
            "update {seq}: g {g:.5}, halves {:.5}, loss noise {d:.2e}",
            0.5 * (g1 + g2)
        );
        worst = worst.max(d);
    }
    eprintln!(
        "largest loss noise between packings: {worst:.2e} (tolerance {:.0e})",
        train::DEFAULT_TOLERANCE
    );
    assert!(worst < train::DEFAULT_TOLERANCE / 4.0, "{worst}");
}

/// SmolLM2 spot-check benchmark: an origin that steps honestly on its own
/// state but publishes the opposite sign is flagged by `verify` within a
/// handful of rechecks (two forwards each).
#[test]
fn smollm2_a_sign_flipper_is_flagged_within_a_few_rechecks() {
    use seedswarm::crdt::log::{Segment, Store};
    use seedswarm::train::{self, Trainer};
    if gguf().is_none() {
        return;
    }
    let cfg = config("smollm2-sst2.toml");
    let dir = tempfile::tempdir().unwrap();
    let origin = train::local_origin(&cfg);
    let mut trainer = Trainer::new(&cfg, origin).unwrap();
    let data = train::build_data(&cfg.run).unwrap();
    let (_, mut store, _) = Store::open(&dir.path().join("updates.log"), trainer.run()).unwrap();
    let codec = trainer.replica().rules().codec.clone();
    for seq in 0..8 {
        let batch = data.train_batch(&origin, seq, cfg.run.batch_size);
        let g = trainer.recompute(&origin, seq, &batch).unwrap();
        let seed = seedswarm::zo::seed::derive(&trainer.run(), &origin, seq);
        let seg = Segment::new(origin, seq, vec![codec.encode(-g, &seed)], Vec::new());
        trainer.apply(&seg).unwrap();
        store.append(&seg).unwrap();
    }
    store.sync().unwrap();
    let s = train::verify(
        &cfg,
        dir.path(),
        None,
        1.0,
        train::DEFAULT_TOLERANCE,
        &[7; 32],
    )
    .unwrap();
    let t = &s.origins[0].tally;
    eprintln!(
        "SmolLM2 flipper: {} checked, {} disagree, {} inconclusive, flagged after {:?}, {:.1}s",
        t.checked, t.disagreed, t.inconclusive, t.flagged_after, s.wall_seconds
    );
    assert_eq!(s.flagged, vec![s.origins[0].origin.clone()]);
    assert!(t.flagged_after.unwrap() <= 8);
}
