//! A mixed swarm over real libp2p: zeroth-order nodes publish one-byte
//! updates, a first-order node publishes compressed sparse deltas (announced
//! on gossipsub, pulled over request-response). Every replica ends
//! bit-identical, also on a node that loses announcements and repairs them
//! through range requests that carry the delta payloads.

mod common;

use common::{assert_identical, config, finish, options};

use seedswarm::config::Mode;
use seedswarm::node::{Node, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeroth_and_first_order_nodes_agree_bit_for_bit() {
    let zo = config();
    let mut fo = config();
    fo.node.mode = Mode::FirstOrder;
    fo.node.first_order.local_steps = 5;
    fo.node.first_order.compression.top_z = 0.25;
    let rounds = 40;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let (cfg, max) = if i == 2 { (&fo, rounds) } else { (&zo, 1500) };
        let mut o = options(max, 2);
        o.bootstrap = nodes
            .iter()
            .map(|p| p.listen[0].clone().with_p2p(p.peer_id).unwrap())
            .collect();
        if i == 1 {
            // Loses a third of what arrives by gossip, deltas included.
            o.drop_incoming = 0.3;
        }
        nodes.push(Node::start(cfg.clone(), o).await.expect("node starts"));
    }
    let s = finish(nodes).await;
    for x in &s {
        eprintln!(
            "own {}, applied {}, repaired {}, dropped {}, accuracy {} (from {}), rejected {:?}",
            x.own_updates,
            x.updates_applied,
            x.repaired_updates,
            x.dropped_by_test_hook,
            x.accuracy,
            x.initial_accuracy,
            x.rejected
        );
    }
    assert_identical(&s);
    assert_eq!(s[2].own_updates, rounds);
    assert_eq!(s[0].updates_applied, 2 * 1500 + rounds);
    assert_eq!(s[0].version_vector.len(), 3);
    assert!(s[1].dropped_by_test_hook > 0 && s[1].repaired_updates > 0);
    for x in &s {
        assert!(x.accuracy >= 0.9, "accuracy {}", x.accuracy);
        assert!(!x.rejected.contains_key("bad_delta"), "{:?}", x.rejected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_mixed_swarm_from_a_snapshot_that_carries_deltas() {
    let zo = config();
    let mut fo = config();
    fo.node.mode = Mode::FirstOrder;
    fo.node.first_order.local_steps = 5;
    let dir = tempfile::tempdir().unwrap();
    // The first two keep serving after training (a node may leave before a
    // late joiner has published anything; here they wait for it).
    let serve = |mut o: Options| {
        o.exit_when_settled = false;
        o
    };
    let a = Node::start(zo.clone(), serve(options(3000, 1)))
        .await
        .unwrap();
    let mut ob = serve(options(60, 1));
    ob.bootstrap = vec![a.listen[0].clone().with_p2p(a.peer_id).unwrap()];
    let b = Node::start(fo, ob).await.unwrap();
    common::until(&a, |s| s.updates_applied >= 1500).await;
    let mut oc = serve(options(100, 0));
    oc.join = seedswarm::proto::join::Mode::Snapshot;
    oc.data_dir = Some(dir.path().join("c"));
    oc.bootstrap = [&a, &b]
        .iter()
        .map(|p| p.listen[0].clone().with_p2p(p.peer_id).unwrap())
        .collect();
    let c = Node::start(zo, oc).await.unwrap();
    let mut nodes = vec![a, b, c];
    for n in &nodes {
        common::until(n, |s| s.updates_applied == 3000 + 60 + 100 && s.settled).await;
    }
    for n in &mut nodes {
        n.stop();
    }
    let s = finish(nodes).await;
    assert_identical(&s);
    assert_eq!(s[2].join, "snapshot");
    // The joiner's log holds the deltas it got in the snapshot: a restart
    // from its data dir replays to the same state.
    let mut cfg = config();
    cfg.node.steps = 100;
    let e = seedswarm::train::Trainer::from_dir(
        &cfg,
        seedswarm::zo::seed::Origin([0; 32]),
        Some(&dir.path().join("c")),
    )
    .unwrap();
    assert_eq!(e.replica().digest(), s[2].digest);
}
