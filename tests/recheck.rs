//! Spot checks over real libp2p: three nodes of the demo run on loopback,
//! one of them publishing every one-byte update with the sign of its
//! gradient flipped (valid, signed, well-formed bytes). Its peers recompute
//! a fraction of the updates they receive, on the state each was made on
//! (the bases its batches carry), and flag it; the honest origins agree.
//! The verdicts are in the summaries, `/metrics` and `seedswarm status`
//! (which exits 4). Replicas still end bit-identical: a flagged origin is
//! reported, and what to do with it is the operator's (a revocation, in a
//! permissioned run).

mod common;

use common::{assert_identical, config, finish, options, until};
use seedswarm::node::Node;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_flag_a_sign_flipping_origin_and_agree_with_honest_ones() {
    let mut cfg = config();
    cfg.node.verify_fraction = 0.25;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let mut o = options(1200, 2);
        o.bootstrap = nodes
            .iter()
            .map(|p| p.listen[0].clone().with_p2p(p.peer_id).unwrap())
            .collect();
        o.flip_signs = i == 2;
        if i == 0 {
            o.http = Some("127.0.0.1:0".parse().unwrap());
            o.exit_when_settled = false;
            o.data_dir = Some(dir.path().join("node-0"));
        }
        nodes.push(Node::start(cfg.clone(), o).await.expect("node starts"));
    }
    let mut watcher = nodes.remove(0);
    let s = finish(nodes).await;
    until(&watcher, |st| st.settled && st.updates_applied == 3600).await;
    // The serving node: its metrics and the status command.
    let addr = watcher.http.expect("http bound");
    let url = format!("http://{addr}");
    let flipper = s[1].origin.clone();
    let metrics = tokio::task::spawn_blocking({
        let url = format!("{url}/metrics");
        move || seedswarm::obs::http::get(&url, Duration::from_secs(5))
    })
    .await
    .unwrap()
    .expect("metrics")
    .1;
    let series = format!(
        "seedswarm_rechecks_total{{origin=\"{}\",verdict=\"disagree\"}}",
        &flipper[..8]
    );
    assert!(metrics.contains(&series), "missing {series}");
    let o = Command::new(env!("CARGO_BIN_EXE_seedswarm"))
        .args(["status", &url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(4), "{table}");
    assert!(
        table.contains(&format!("origin {} FLAGGED", &flipper[..16])),
        "{table}"
    );
    watcher.stop();
    let w = watcher.wait().await.expect("node ran");
    let all = [vec![w], s].concat();
    assert_identical(&all);
    // Offline, from node 0's data dir (its log and the bases it kept):
    // `seedswarm verify` flags the flipper too, every origin's own included.
    let summary = dir.path().join("verify.json");
    let o = Command::new(env!("CARGO_BIN_EXE_seedswarm"))
        .args(["verify", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("node-0"))
        .args(["--fraction", "0.05", "--sample-seed", "3", "--summary"])
        .arg(&summary)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(v["flagged"], serde_json::json!([flipper]), "{v}");
    for c in v["origins"].as_array().unwrap() {
        eprintln!(
            "offline: origin {} checked {} agreed {} disagreed {} unverifiable {}",
            &c["origin"].as_str().unwrap()[..8],
            c["checked"],
            c["agreed"],
            c["disagreed"],
            c["unverifiable"]
        );
        assert!(c["checked"].as_u64().unwrap() >= 20, "{c}");
    }
    for (i, x) in all.iter().enumerate().take(2) {
        eprintln!("node {i}: {:?}, skipped {}", x.rechecks, x.rechecks_skipped);
        let bad = &x.rechecks[&flipper];
        let after = bad.flagged_after.expect("the flipper is flagged");
        assert!(after <= 20, "flagged after {after} checks: {bad:?}");
        assert!(bad.disagreed * 2 > bad.checked, "{bad:?}");
        for (o, t) in &x.rechecks {
            if o == &flipper {
                continue;
            }
            assert!(t.checked >= 20, "enough checks of {o}: {t:?}");
            assert_eq!(t.flagged_after, None, "honest {o} flagged: {t:?}");
            assert!(t.disagreed * 20 <= t.checked, "honest {o}: {t:?}");
        }
    }
}
