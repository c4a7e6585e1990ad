//! The `seedswarm` binary as a user runs it: the demo learns, bad configs
//! are refused with exit code 2 and nothing written, a run resumed from its
//! data dir ends bit-identical to an uninterrupted one, and long work
//! (`eval` over a replayed log) reports progress in log lines.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seedswarm"))
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml")
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary written")).expect("json")
}

#[test]
fn demo_learns_from_chance_to_ninety_percent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.json");
    let st = bin()
        .args(["train", "--config"])
        .arg(demo())
        .arg("--summary")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let s = summary(&out);
    let (a0, a1) = (
        s["initial_accuracy"].as_f64().unwrap(),
        s["accuracy"].as_f64().unwrap(),
    );
    assert!(a0 < 0.6, "starts near chance: {a0}");
    assert!(a1 >= 0.9, "learns: {a1}");
    assert!(s["final_loss"].as_f64().unwrap() < s["initial_loss"].as_f64().unwrap());
    assert_eq!(s["updates"], 5000);
    assert_eq!(s["digest"].as_str().unwrap().len(), 64);
}

#[test]
fn bad_config_names_the_field_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(demo())
        .unwrap()
        .replace("eps = 0.01", "eps = 3.0");
    std::fs::write(&cfg, text).unwrap();
    let out = dir.path().join("s.json");
    let o = bin()
        .args(["train", "--config"])
        .arg(&cfg)
        .arg("--summary")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run.eps"), "{err}");
    assert!(!out.exists());
    let o = bin()
        .args(["train", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.toml"));
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = |steps: &str, data: &Path, out: &Path| {
        let st = bin()
            .args(["train", "--config"])
            .arg(demo())
            .args(["--steps", steps, "--data-dir"])
            .arg(data)
            .arg("--summary")
            .arg(out)
            .status()
            .unwrap();
        assert!(st.success());
        summary(out)
    };
    let straight = run("300", &dir.path().join("a"), &dir.path().join("a.json"));
    run("120", &dir.path().join("b"), &dir.path().join("b1.json"));
    let resumed = run("300", &dir.path().join("b"), &dir.path().join("b2.json"));
    assert_eq!(resumed["updates"], 300);
    assert_eq!(resumed["digest"], straight["digest"]);
    // One byte per update plus per-record framing on disk.
    assert!(straight["log_bytes_per_update"].as_f64().unwrap() < 60.0);
}

#[test]
fn first_order_training_publishes_compressed_deltas_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("s.json");
    let run = |steps: &str| {
        let st = bin()
            .args([
                "train",
                "--mode",
                "first-order",
                "--steps",
                steps,
                "--config",
            ])
            .arg(demo())
            .arg("--data-dir")
            .arg(&data)
            .arg("--summary")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        summary(&out)
    };
    let first = run("15");
    assert_eq!(first["mode"], "first-order");
    assert_eq!(first["updates"], 15);
    assert!(first["delta_ratio"].as_f64().unwrap() > 1.0, "{first}");
    // Resumed from the log (delta payloads included) it carries on.
    let s = run("30");
    assert_eq!(s["updates"], 30);
    assert!(s["accuracy"].as_f64().unwrap() >= 0.9, "{s}");
    // The replay of the log gives the same replica as the run that wrote it.
    let eval = dir.path().join("e.json");
    let st = bin()
        .args(["eval", "--config"])
        .arg(demo())
        .arg("--data-dir")
        .arg(&data)
        .arg("--summary")
        .arg(&eval)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(summary(&eval)["digest"], s["digest"]);
    // A delta over run.delta.max_bytes is refused by its own node, not sent.
    let small = dir.path().join("small.toml");
    std::fs::write(
        &small,
        std::fs::read_to_string(demo())
            .unwrap()
            .replace("[run.codec]", "[run.delta]\nmax_bytes = 64\n\n[run.codec]"),
    )
    .unwrap();
    let o = bin()
        .args(["train", "--mode", "first-order", "--steps", "3", "--config"])
        .arg(&small)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run.delta.max_bytes"), "{err}");
}

#[test]
fn eval_replays_a_log_and_reports_progress_in_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trained = dir.path().join("t.json");
    let st = bin()
        .args(["train", "--steps", "200", "--config"])
        .arg(demo())
        .arg("--data-dir")
        .arg(&data)
        .arg("--summary")
        .arg(&trained)
        .status()
        .unwrap();
    assert!(st.success());
    let out = dir.path().join("e.json");
    let o = bin()
        .args(["eval", "--config"])
        .arg(demo())
        .arg("--data-dir")
        .arg(&data)
        .arg("--summary")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("accuracy "), "{stdout}");
    let e = summary(&out);
    assert_eq!(e["digest"], summary(&trained)["digest"]);
    assert_eq!(e["updates"], 200);
    assert_eq!(e["n"], 1024);
    // Model load and replay are reported; stderr is not a terminal, so no
    // spinner or bar is drawn there.
    let err = String::from_utf8_lossy(&o.stderr);
    for line in [
        "loading the model",
        "model loaded",
        "replaying the update log",
        "replayed the update log",
    ] {
        assert!(err.contains(line), "{line:?} missing from {err}");
    }
    assert!(!err.contains('\r') && !err.contains("batches"), "{err}");
}

#[test]
fn keygen_writes_a_private_swarm_key_once_and_a_node_runs_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    let o = bin().args(["keygen", "--psk"]).arg(&key).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let text = std::fs::read_to_string(&key).unwrap();
    let psk: seedswarm::net::PreSharedKey = text.parse().expect("a swarm.key file");
    let fp = psk.fingerprint().to_string();
    assert!(stdout.contains(&format!("fingerprint {fp}")), "{stdout}");
    assert!(
        !stdout.contains(text.lines().nth(2).unwrap()),
        "the key is not printed"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never over an existing file.
    let o = bin().args(["keygen", "--psk"]).arg(&key).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
    // An HTTP token too.
    let token = dir.path().join("http.token");
    let o = bin()
        .args(["keygen", "--http-token"])
        .arg(&token)
        .output()
        .unwrap();
    assert!(o.status.success());
    let t = std::fs::read_to_string(&token).unwrap();
    assert_eq!(t.trim().len(), 64);
    assert!(t.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    // A node with the key, named in the config's [node] section: QUIC is
    // dropped and both are said at start.
    let cfg = dir.path().join("private.toml");
    let demo_text = std::fs::read_to_string(demo()).unwrap();
    let line = format!("[node]\npsk_file = {:?}\n", key.display().to_string());
    std::fs::write(&cfg, demo_text.replacen("[node]\n", &line, 1)).unwrap();
    let o = bin()
        .args(["node", "--config"])
        .arg(&cfg)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
            "--max-updates",
            "20",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains(&format!("private swarm: psk fingerprint {fp} (QUIC off)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("QUIC off because of the pre-shared key")
            && stdout.contains("not using /ip4/127.0.0.1/udp/0/quic-v1"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("listening on /ip4/127.0.0.1/udp"),
        "{stdout}"
    );
    assert!(!stdout.contains("mDNS on"), "{stdout}");
}

#[test]
fn a_bad_key_file_names_node_psk_file_and_its_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "/key/swarm/psk/1.0.0/\n/base16/\n1234\n").unwrap();
    let missing = dir.path().join("missing.key");
    for (args, path) in [
        (vec!["--psk".to_string(), bad.display().to_string()], &bad),
        (
            vec!["--psk".to_string(), missing.display().to_string()],
            &missing,
        ),
    ] {
        let o = bin()
            .args(["node", "--config"])
            .arg(demo())
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
                "--max-updates",
                "1",
            ])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("node.psk_file") && err.contains(&path.display().to_string()),
            "{err}"
        );
    }
    // The same through the config file, and a bad peer id in node.deny.
    let demo_text = std::fs::read_to_string(demo()).unwrap();
    let cfg = dir.path().join("c.toml");
    let line = format!("[node]\npsk_file = {:?}\n", bad.display().to_string());
    std::fs::write(&cfg, demo_text.replacen("[node]\n", &line, 1)).unwrap();
    let o = bin()
        .args(["node", "--config"])
        .arg(&cfg)
        .args(["--no-mdns", "--max-updates", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("node.psk_file"));
    std::fs::write(
        &cfg,
        demo_text.replacen("[node]\n", "[node]\ndeny = [\"not-a-peer\"]\n", 1),
    )
    .unwrap();
    let o = bin()
        .args(["train", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("node.deny[0]"));
}
