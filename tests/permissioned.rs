//! A permissioned run on real sockets, driven as its owner would drive it:
//! `seedswarm owner-key`, `seedswarm admit` and `seedswarm revoke` (the
//! binary), record files handed to nodes at start and published to a
//! running node over its HTTP server (`seedswarm publish`).

mod common;

use common::{assert_identical, config, finish, options, until};
use libp2p::identity::Keypair;
use seedswarm::node::{Node, Options};
use std::path::{Path, PathBuf};
use std::process::Command;

fn seedswarm(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_seedswarm"))
        .args(args)
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "seedswarm {args:?}: {text}");
    text
}

fn addr(n: &Node) -> libp2p::Multiaddr {
    n.listen[0].clone().with_p2p(n.peer_id).unwrap()
}

/// The owner's key, and the demo config made permissioned by it.
fn owner_and_config(dir: &Path) -> (PathBuf, PathBuf, seedswarm::config::Config) {
    let key = dir.join("owner.key");
    let out = seedswarm(&["owner-key", key.to_str().unwrap()]);
    let line = out
        .lines()
        .find(|l| l.starts_with("owner = "))
        .expect("the manifest line");
    let demo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo.toml")).unwrap();
    let text = demo.replacen("[run]\n", &format!("[run]\n{line}\n"), 1);
    assert_ne!(text, demo, "the demo config has a [run] section");
    let path = dir.join("run.toml");
    std::fs::write(&path, &text).unwrap();
    let mut cfg = config();
    cfg.run.owner = Some(
        line.trim_start_matches("owner = ")
            .trim_matches('"')
            .to_string(),
    );
    (key, path, cfg)
}

fn sign(verb: &str, key: &Path, cfg: &Path, peer: &Keypair, extra: &[&str], out: &Path) {
    let peer = peer.public().to_peer_id().to_string();
    let mut args = vec![
        verb,
        "--owner-key",
        key.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--peer",
        &peer,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    seedswarm(&args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_nodes_train_a_revocation_applies_everywhere_outsiders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (owner_key, cfg_path, cfg) = owner_and_config(dir.path());
    // `peer-id` makes a node's key once and prints the id the owner admits.
    let node_dir = dir.path().join("node");
    let id = seedswarm(&["peer-id", "--data-dir", node_dir.to_str().unwrap()]);
    assert_eq!(
        id,
        seedswarm(&["peer-id", "--data-dir", node_dir.to_str().unwrap()])
    );
    let key = seedswarm::net::load_or_create_key(&node_dir).unwrap();
    assert_eq!(id.trim(), key.public().to_peer_id().to_string());
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("{i}.admission")))
        .collect();
    sign("admit", &owner_key, &cfg_path, &keys[0], &[], &files[0]);
    // Node 1 only until its seq 150.
    sign(
        "admit",
        &owner_key,
        &cfg_path,
        &keys[1],
        &["--until-seq", "150"],
        &files[1],
    );

    // A node with no admission refuses to train, and says what to do.
    let outsider = Options {
        key: Some(keys[2].clone()),
        ..options(100, 0)
    };
    let err = Node::start(cfg.clone(), outsider)
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("not admitted") && msg.contains("seedswarm admit"),
        "{msg}"
    );
    // Nor does someone else's admission make it one.
    let borrowed = Options {
        key: Some(keys[2].clone()),
        records: vec![files[0].clone()],
        ..options(100, 0)
    };
    assert!(Node::start(cfg.clone(), borrowed).await.is_err());

    // Signed ahead (it is only a file), so that publishing it is quick
    // while node 0 still trains.
    let revocation = dir.path().join("0.revocation");
    sign(
        "revoke",
        &owner_key,
        &cfg_path,
        &keys[0],
        &["--from-seq", "200"],
        &revocation,
    );
    let made = 2000;
    let a = Node::start(
        cfg.clone(),
        Options {
            key: Some(keys[0].clone()),
            records: vec![files[0].clone()],
            ..options(made, 1)
        },
    )
    .await
    .unwrap();
    let b = Node::start(
        cfg.clone(),
        Options {
            key: Some(keys[1].clone()),
            records: vec![files[1].clone()],
            bootstrap: vec![addr(&a)],
            http: Some("127.0.0.1:0".parse().unwrap()),
            ..options(made, 1)
        },
    )
    .await
    .unwrap();
    // A follower with no admission (max_updates 0) joins and only follows.
    let c = Node::start(
        cfg.clone(),
        Options {
            key: Some(keys[2].clone()),
            bootstrap: vec![addr(&a)],
            ..options(0, 1)
        },
    )
    .await
    .unwrap();
    let a_hex = a.origin.to_hex();
    // The owner revokes node 0 from seq 200 once both have applied past it;
    // the file reaches node 1 alone.
    until(&b, |s| {
        s.version_vector.get(&a_hex).copied().unwrap_or(0) > 250
    })
    .await;
    // Published to node 1 over its HTTP server, as the owner would.
    let url = format!("http://{}", b.http.unwrap());
    let file = revocation.clone();
    let out = tokio::task::spawn_blocking(move || {
        seedswarm(&["publish", "--node", &url, file.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert!(out.contains("\"news\":true"), "{out}");
    let bytes = std::fs::read(&revocation).unwrap();
    assert_eq!(
        b.add_record(bytes).await,
        Ok(false),
        "no news the second time"
    );
    // Garbage, or a record of another owner, is refused with a reason.
    assert!(b
        .add_record(b"seedswarm-revocation 00".to_vec())
        .await
        .is_err());
    let stranger = dir.path().join("stranger.key");
    seedswarm(&["owner-key", stranger.to_str().unwrap()]);
    let forged = seedswarm::owner::sign(
        &stranger,
        &seedswarm::zo::seed::RunId([0; 32]),
        seedswarm::crdt::admit::Kind::Revocation,
        &b.peer_id.to_string(),
        0,
    )
    .unwrap();
    let err = b
        .add_record(forged.to_text().into_bytes())
        .await
        .unwrap_err();
    assert!(err.contains("owner"), "{err}");
    let s = finish(vec![a, b, c]).await;
    assert_identical(&s);
    for x in &s {
        assert_eq!(x.version_vector.get(&a_hex), Some(&200), "{}", x.peer_id);
        assert_eq!(
            x.version_vector.get(&s[1].origin),
            Some(&150),
            "{}: node 1 counts until its admission ends",
            x.peer_id
        );
        assert_eq!(
            x.version_vector.len(),
            2,
            "the follower contributes nothing"
        );
        assert_eq!(x.excluded.get(&a_hex), Some(&200));
        assert_eq!(x.admitted, 2);
    }
    // The revoked node took back its own updates past seq 200, node 1 the
    // ones it had applied.
    assert!(s[0].retracted_updates > 0 && s[1].retracted_updates > 0);
}
