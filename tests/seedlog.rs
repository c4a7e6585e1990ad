//! A finished run as one small file and back: `export --seedlog` →
//! `materialize` gives bit-identical weights (one-byte and delta updates),
//! altered or corrupt seed logs are refused with a message, and `verify`
//! passes an honest origin and flags one that publishes sign-flipped codes.

use seedswarm::config::Config;
use seedswarm::crdt::log::{Segment, Store};
use seedswarm::seedlog::SeedLog;
use seedswarm::train::{self, Trainer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seedswarm"))
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary written")).expect("json")
}

fn ok(o: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "failed: {text}");
    text
}

fn train(dir: &Path, steps: &str, mode: &str) -> serde_json::Value {
    let s = dir.join(format!("train-{mode}.json"));
    ok(bin()
        .args(["train", "--config"])
        .arg(demo())
        .args(["--steps", steps, "--mode", mode, "--data-dir"])
        .arg(dir.join("data"))
        .arg("--summary")
        .arg(&s)
        .output()
        .unwrap());
    json(&s)
}

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    out.sort();
    out
}

fn export_and_materialize(dir: &Path) -> (serde_json::Value, PathBuf) {
    let data = dir.join("data");
    let log = dir.join("run.seedlog");
    let s = dir.join("export.json");
    ok(bin()
        .args(["export", "--config"])
        .arg(demo())
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(dir.join("replica.safetensors"))
        .arg("--seedlog")
        .arg(&log)
        .arg("--summary")
        .arg(&s)
        .output()
        .unwrap());
    let m = dir.join("materialize.json");
    ok(bin()
        .arg("materialize")
        .arg(&log)
        .arg("--out")
        .arg(dir.join("rebuilt.safetensors"))
        .arg("--summary")
        .arg(&m)
        .output()
        .unwrap());
    assert_eq!(
        tensors(&dir.join("replica.safetensors")),
        tensors(&dir.join("rebuilt.safetensors")),
        "the rebuilt weights are the replica's, bit for bit"
    );
    assert_eq!(json(&m)["digest"], json(&s)["digest"]);
    (json(&s), log)
}

#[test]
fn a_seed_log_rebuilds_the_exact_replica_in_about_a_byte_per_update() {
    let dir = tempfile::tempdir().unwrap();
    let t = train(dir.path(), "600", "zeroth-order");
    let (s, log) = export_and_materialize(dir.path());
    assert_eq!(s["digest"], t["digest"]);
    assert_eq!(s["updates"], 600);
    let bytes = s["bytes"].as_u64().unwrap();
    let overhead = bytes - 600;
    // Header, manifest, one origin, digest and checksum: under 1 KiB.
    assert!(overhead < 1024, "{bytes} bytes for 600 updates");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), bytes);
    // A directory: weights, manifest and model card.
    let out = dir.path().join("model");
    ok(bin()
        .arg("materialize")
        .arg(&log)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap());
    assert_eq!(
        tensors(&out.join("model.safetensors")),
        tensors(&dir.path().join("replica.safetensors"))
    );
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains(t["digest"].as_str().unwrap()), "{card}");
    assert!(out.join("seedswarm-manifest.json").exists());
    // The built-in model needs no base file.
    let o = bin()
        .arg("materialize")
        .arg(&log)
        .args(["--base", "/nonexistent.gguf", "--out"])
        .arg(dir.path().join("x.safetensors"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--base"));
}

#[test]
fn a_seed_log_carries_delta_updates() {
    let dir = tempfile::tempdir().unwrap();
    let t = train(dir.path(), "4", "first-order");
    let (s, _) = export_and_materialize(dir.path());
    assert_eq!(s["digest"], t["digest"]);
    assert_eq!(s["deltas"], 4);
    assert!(s["delta_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn altered_or_corrupt_seed_logs_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    train(dir.path(), "200", "zeroth-order");
    let (_, log) = export_and_materialize(dir.path());
    let refused = |file: &Path, want: &str| {
        let out = dir.path().join("refused.safetensors");
        let o = bin()
            .arg("materialize")
            .arg(file)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{want}: {err}");
        assert!(!out.exists(), "nothing written");
    };
    // A flipped byte: the checksum.
    let mut bytes = std::fs::read(&log).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let bad = dir.path().join("bad.seedlog");
    std::fs::write(&bad, &bytes).unwrap();
    refused(&bad, "checksum");
    // A code changed and re-encoded with a valid checksum: the digest.
    let mut sl = SeedLog::read(&log).unwrap();
    sl.segments[0].codes[100] ^= 0x80;
    sl.write(&bad).unwrap();
    refused(&bad, "digest");
    // Another manifest: the run id.
    let mut sl = SeedLog::read(&log).unwrap();
    sl.manifest = sl.manifest.replace("\"eps\":0.01", "\"eps\":0.02");
    sl.write(&bad).unwrap();
    refused(&bad, "run id");
    refused(&dir.path().join("missing.seedlog"), "missing.seedlog");
}

/// Runs `seedswarm verify`; its exit code and the first origin's checks.
fn verify(dir: &Path, data: &Path, fraction: &str) -> (Option<i32>, serde_json::Value) {
    let s = dir.join("verify.json");
    let o = bin()
        .args(["verify", "--config"])
        .arg(demo())
        .arg("--data-dir")
        .arg(data)
        .args(["--fraction", fraction, "--sample-seed", "1", "--summary"])
        .arg(&s)
        .output()
        .unwrap();
    (o.status.code(), json(&s)["origins"][0].clone())
}

/// A hostile origin: steps honestly on its own state but publishes the
/// opposite sign (`random`: a sign from a coin, keyed by the seq) — what it
/// can do with valid-looking bytes.
fn hostile_log(dir: &Path, steps: u64, random: bool) {
    let cfg = Config::load(&demo()).unwrap();
    let origin = train::local_origin(&cfg);
    let mut trainer = Trainer::new(&cfg, origin).unwrap();
    let data = train::build_data(&cfg.run).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (_, mut store, _) = Store::open(&dir.join("updates.log"), trainer.run()).unwrap();
    let codec = trainer.replica().rules().codec.clone();
    for seq in 0..steps {
        let batch = data.train_batch(&origin, seq, cfg.run.batch_size);
        let g = trainer.recompute(&origin, seq, &batch).unwrap();
        let seed = seedswarm::zo::seed::derive(&trainer.run(), &origin, seq);
        let sign = if !random || seed.0[0] & 1 == 0 {
            -1.0
        } else {
            1.0
        };
        let seg = Segment::new(origin, seq, vec![codec.encode(sign * g, &seed)], Vec::new());
        trainer.apply(&seg).unwrap();
        store.append(&seg).unwrap();
    }
    store.sync().unwrap();
}

#[test]
fn verify_passes_an_honest_origin_and_flags_a_sign_flipper() {
    let dir = tempfile::tempdir().unwrap();
    train(dir.path(), "1500", "zeroth-order");
    let (code, s) = verify(dir.path(), &dir.path().join("data"), "0.2");
    assert_eq!(code, Some(0), "{s}");
    let checked = s["checked"].as_u64().unwrap();
    assert!((200..400).contains(&checked), "{checked}");
    assert!(s["agreed"].as_u64().unwrap() * 10 >= checked * 9, "{s}");
    assert!(s["disagreement_rate"].is_null() || s["disagreed"].as_u64().unwrap() * 100 <= checked);
    assert_eq!(s["flagged"], false);

    let bad = dir.path().join("flipper");
    hostile_log(&bad, 300, false);
    let (code, s) = verify(dir.path(), &bad, "0.2");
    assert_eq!(code, Some(4), "a flagged origin exits 4: {s}");
    let after = s["flagged_after"].as_u64().unwrap();
    assert!(after <= 20, "flagged after {after} checks");
    assert!(s["disagreed"].as_u64().unwrap() * 2 > s["checked"].as_u64().unwrap());
    // Random signs: about half disagree; flagged within a few dozen checks.
    let coin = dir.path().join("coin");
    hostile_log(&coin, 300, true);
    let (code, s) = verify(dir.path(), &coin, "0.2");
    assert_eq!(code, Some(4), "{s}");
    let after = s["flagged_after"].as_u64().unwrap();
    eprintln!("random signs: flagged after {after} checks: {s}");
    assert!(after <= 40, "flagged after {after} checks");
}

/// A node's log holds its origin's signatures: `--signed` puts them in the
/// seed log, `materialize` checks them, and a code changed under a
/// signature is refused even with a matching digest.
#[test]
fn a_signed_seed_log_is_checked_against_its_origins_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(bin()
        .args(["node", "--config"])
        .arg(demo())
        .args([
            "--max-updates",
            "300",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap());
    let log = dir.path().join("signed.seedlog");
    let s = dir.path().join("export.json");
    ok(bin()
        .args(["export", "--config"])
        .arg(demo())
        .arg("--data-dir")
        .arg(&data)
        .arg("--seedlog")
        .arg(&log)
        .arg("--signed")
        .arg("--summary")
        .arg(&s)
        .output()
        .unwrap());
    assert_eq!(json(&s)["signed"], true);
    let m = dir.path().join("m.json");
    ok(bin()
        .arg("materialize")
        .arg(&log)
        .arg("--out")
        .arg(dir.path().join("w.safetensors"))
        .arg("--summary")
        .arg(&m)
        .output()
        .unwrap());
    assert_eq!(json(&m)["signed_origins"], 1);
    assert_eq!(json(&m)["updates"], 300);
    // Change a code and fix up the digest: the signature no longer covers it.
    let mut sl = SeedLog::read(&log).unwrap();
    sl.segments[0].codes[10] ^= 0x80;
    let cfg = Config::load(&demo()).unwrap();
    let mut t = Trainer::new(&cfg, train::local_origin(&cfg)).unwrap();
    for seg in &sl.segments {
        let mut s = seg.clone();
        s.attests.clear();
        t.apply(&s).unwrap();
    }
    sl.digest = t.replica().digest_bytes();
    let bad = dir.path().join("forged.seedlog");
    sl.write(&bad).unwrap();
    let o = bin()
        .arg("materialize")
        .arg(&bad)
        .arg("--out")
        .arg(dir.path().join("x.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("signatures"), "{err}");
}
