//! Long work reports progress: `seedswarm eval` over a replayed log still
//! gives the replica's digest and accuracy, and says on stderr (in log lines,
//! without a bar when stderr is not a terminal) that it loaded the model and
//! replayed the log.

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
