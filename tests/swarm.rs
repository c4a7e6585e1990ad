//! Several nodes in one process over real libp2p (TCP on 127.0.0.1): they
//! learn the built-in task together and end bit-identical, also when one node
//! loses a fifth of its incoming update messages; nodes of different runs
//! never mix. mDNS is off, so test cases never discover each other.

mod common;

use common::{assert_identical, config, finish, options};

use seedswarm::config::Config;
use seedswarm::node::{Node, Options};
use std::time::Duration;

/// Starts `n` nodes, each dialing all earlier ones; node `i` gets `tweak(i, opts)`.
async fn start(
    n: usize,
    cfg: &Config,
    max_updates: u64,
    tweak: impl Fn(usize, &mut Options),
) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut o = options(max_updates, n - 1);
        o.bootstrap = nodes
            .iter()
            .map(|p: &Node| p.listen[0].clone().with_p2p(p.peer_id).unwrap())
            .collect();
        tweak(i, &mut o);
        nodes.push(Node::start(cfg.clone(), o).await.expect("node starts"));
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_learn_together_and_agree_bit_for_bit() {
    let cfg = config();
    let nodes = start(4, &cfg, 2500, |_, _| {}).await;
    let s = finish(nodes).await;
    for x in &s {
        eprintln!(
            "published {} msgs ({:.1}/msg), received {}, repaired {}, accuracy {}, wall {:.2}s",
            x.gossip_messages_published,
            x.mean_updates_per_message,
            x.foreign_updates_received,
            x.repaired_updates,
            x.accuracy,
            x.wall_seconds
        );
    }
    assert_identical(&s);
    let total: u64 = s.iter().map(|x| x.own_updates).sum();
    assert_eq!(total, 4 * 2500);
    assert_eq!(
        s[0].updates_applied, total,
        "every update applied everywhere"
    );
    assert_eq!(s[0].version_vector.len(), 4);
    for x in &s {
        assert!(
            x.accuracy >= 0.9,
            "accuracy {} (from {})",
            x.accuracy,
            x.initial_accuracy
        );
        assert!(x.initial_accuracy < 0.7);
        assert!(
            x.rejected.keys().all(|k| k == "replayed"),
            "{:?}",
            x.rejected
        );
        assert!(x.foreign_updates_received >= 3 * 2500);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_restores_equality_when_a_node_drops_a_fifth_of_its_messages() {
    let cfg = config();
    let nodes = start(4, &cfg, 600, |i, o| {
        if i == 3 {
            o.drop_incoming = 0.2;
        }
    })
    .await;
    let s = finish(nodes).await;
    assert_identical(&s);
    assert_eq!(s[0].updates_applied, 4 * 600);
    assert!(s[3].dropped_by_test_hook > 0, "the hook dropped messages");
    assert!(
        s[3].repaired_updates > 0,
        "the gaps were repaired: {:?}",
        s[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_different_runs_never_apply_each_others_updates() {
    let a = config();
    let mut b = config();
    b.run.eps = 0.02; // a different manifest: a different run id
    let na = Node::start(a, options(300, 0)).await.unwrap();
    let mut ob = options(300, 0);
    ob.bootstrap = vec![na.listen[0].clone().with_p2p(na.peer_id).unwrap()];
    let nb = Node::start(b, ob).await.unwrap();
    let (origin_a, origin_b) = (na.origin.to_hex(), nb.origin.to_hex());
    let s = finish(vec![na, nb]).await;
    assert_ne!(s[0].run_id, s[1].run_id);
    assert!(
        s.iter().all(|x| x.max_connected >= 1),
        "the nodes did connect"
    );
    assert_eq!(
        s[0].version_vector.keys().collect::<Vec<_>>(),
        vec![&origin_a]
    );
    assert_eq!(
        s[1].version_vector.keys().collect::<Vec<_>>(),
        vec![&origin_b]
    );
    assert_eq!(s[0].updates_applied, 300);
    assert_eq!(s[1].updates_applied, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_agree_over_quic_with_a_time_limit() {
    let cfg = config();
    let quic = |bootstrap: Vec<libp2p::Multiaddr>| Options {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        bootstrap,
        max_updates: None,
        duration: Some(Duration::from_millis(1500)),
        ..options(0, 1)
    };
    let a = Node::start(cfg.clone(), quic(vec![])).await.unwrap();
    assert!(a.listen[0].to_string().contains("quic-v1"));
    let b = Node::start(
        cfg,
        quic(vec![a.listen[0].clone().with_p2p(a.peer_id).unwrap()]),
    )
    .await
    .unwrap();
    let s = finish(vec![a, b]).await;
    assert_identical(&s);
    assert!(
        s.iter().all(|x| x.own_updates > 0),
        "both trained until the deadline"
    );
    assert_eq!(s[0].updates_applied, s[0].own_updates + s[1].own_updates);
}
