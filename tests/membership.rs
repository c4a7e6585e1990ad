//! Dynamic membership over real libp2p on loopback: a node joins mid-run and
//! catches up by replaying the log from peers; a node crashes and restarts
//! from its data dir; a partition heals. Each ends in equal digests.

mod common;

use common::{assert_identical, config, finish, until};

use seedswarm::node::{Node, Options};
use seedswarm::proto::Timing;
use std::path::PathBuf;
use std::time::Duration;

fn options(max_updates: u64, bootstrap: &[&Node]) -> Options {
    Options {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: bootstrap
            .iter()
            .map(|p| p.listen[0].clone().with_p2p(p.peer_id).unwrap())
            .collect(),
        mdns: false,
        max_updates: Some(max_updates),
        settle_timeout: Duration::from_secs(60),
        publish_interval: Duration::from_millis(50),
        publish_max: 64,
        heartbeat_interval: Duration::from_millis(300),
        timing: Timing {
            repair_delay: Duration::from_millis(600),
            // Long enough that a slow machine never forgets a live or
            // restarting peer mid-test (which would let others finish without it).
            peer_timeout: Duration::from_secs(15),
            ..Timing::default()
        },
        ..Options::default()
    }
}

/// Waits until every node has applied `total` updates and seen agreement,
/// then stops them all. The early nodes keep serving (a node may otherwise
/// finish and leave before a late joiner has published anything).
async fn stop_when_complete(mut nodes: Vec<Node>, total: u64) -> Vec<seedswarm::node::Summary> {
    for n in &nodes {
        until(n, |s| s.updates_applied == total && s.settled).await;
    }
    for n in &mut nodes {
        n.stop();
    }
    finish(nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_mid_run_catches_up_by_replay() {
    let cfg = config();
    let a = Node::start(
        cfg.clone(),
        Options {
            min_peers: 1,
            exit_when_settled: false,
            ..options(2500, &[])
        },
    )
    .await
    .unwrap();
    let b = Node::start(
        cfg.clone(),
        Options {
            min_peers: 1,
            exit_when_settled: false,
            ..options(2500, &[&a])
        },
    )
    .await
    .unwrap();
    until(&a, |s| s.updates_applied >= 1500).await;
    let c = Node::start(cfg, options(200, &[&b])).await.unwrap();
    let s = stop_when_complete(vec![a, b, c], 2500 + 2500 + 200).await;
    assert_identical(&s);
    assert_eq!(s[2].updates_applied, 2500 + 2500 + 200);
    assert!(
        s[2].repaired_updates >= 1000,
        "the joiner replayed history from peers: {:?}",
        s[2]
    );
    assert_eq!(s[2].join, "replay", "a tiny model is cheaper to replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_mid_run_catches_up_from_a_snapshot() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(
        cfg.clone(),
        Options {
            min_peers: 1,
            exit_when_settled: false,
            ..options(3000, &[])
        },
    )
    .await
    .unwrap();
    let b = Node::start(
        cfg.clone(),
        Options {
            min_peers: 1,
            exit_when_settled: false,
            ..options(3000, &[&a])
        },
    )
    .await
    .unwrap();
    until(&a, |s| s.updates_applied >= 2000).await;
    let c = Node::start(
        cfg,
        Options {
            join: seedswarm::proto::join::Mode::Snapshot,
            data_dir: Some(dir.path().join("c")),
            ..options(200, &[&a, &b])
        },
    )
    .await
    .unwrap();
    let s = stop_when_complete(vec![a, b, c], 3000 + 3000 + 200).await;
    assert_identical(&s);
    assert_eq!(s[2].updates_applied, 3000 + 3000 + 200);
    assert_eq!(s[2].join, "snapshot");
    assert!(s[2].snapshot_bytes_fetched > 0);
    // The chunks kept while fetching are gone once the snapshot is in.
    let kept = dir.path().join("c").join("snapshot");
    let left = std::fs::read_dir(&kept).map_or(0, |d| d.count());
    assert_eq!(left, 0, "stale snapshot chunks under {}", kept.display());
    assert!(
        s[2].repaired_updates < 2000,
        "most history came in the snapshot, not by replay: {:?}",
        s[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_restarts_from_its_data_dir_and_nothing_is_lost() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let data = |n: &str| -> Option<PathBuf> { Some(dir.path().join(n)) };
    let a = Node::start(
        cfg.clone(),
        Options {
            min_peers: 2,
            data_dir: data("a"),
            ..options(2500, &[])
        },
    )
    .await
    .unwrap();
    let b = Node::start(
        cfg.clone(),
        Options {
            min_peers: 2,
            data_dir: data("b"),
            ..options(2500, &[&a])
        },
    )
    .await
    .unwrap();
    let c = Node::start(
        cfg.clone(),
        Options {
            min_peers: 2,
            data_dir: data("c"),
            ..options(2500, &[&a, &b])
        },
    )
    .await
    .unwrap();
    until(&b, |s| s.own_updates >= 800).await;
    let b_peer = b.peer_id;
    b.crash().await;
    // The others keep going; B comes back with the same identity and log.
    let b = Node::start(
        cfg,
        Options {
            data_dir: data("b"),
            ..options(2500, &[&a, &c])
        },
    )
    .await
    .unwrap();
    assert_eq!(
        b.peer_id, b_peer,
        "the node key in the data dir keeps the identity"
    );
    assert!(b.status().own_updates == 0 || b.status().own_updates >= 800);
    let s = finish(vec![a, b, c]).await;
    assert_identical(&s);
    // Every update any origin published is in every replica: 3 × 2500.
    assert_eq!(s[0].updates_applied, 3 * 2500);
    assert!(
        s.iter().all(|x| !x.rejected.contains_key("equivocation")),
        "{:?}",
        s[1].rejected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_into_equal_digests() {
    let cfg = config();
    let mut nodes: Vec<Node> = Vec::new();
    for _ in 0..4 {
        let peers: Vec<&Node> = nodes.iter().collect();
        let o = Options {
            min_peers: 3,
            ..options(3000, &peers)
        };
        nodes.push(Node::start(cfg.clone(), o).await.unwrap());
    }
    until(&nodes[0], |s| s.updates_applied >= 2000).await;
    let (left, right): (Vec<_>, Vec<_>) = (
        vec![nodes[0].peer_id, nodes[1].peer_id],
        vec![nodes[2].peer_id, nodes[3].peer_id],
    );
    for (i, n) in nodes.iter().enumerate() {
        n.block(if i < 2 { right.clone() } else { left.clone() })
            .await;
    }
    // Both sides keep training apart: node 2 advances, node 0 hears nothing of it.
    let o2 = nodes[2].origin.to_hex();
    let seen = |n: &Node| n.status().version_vector.get(&o2).copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(400)).await; // let in-flight messages land
    let (seen_start, own2_start) = (seen(&nodes[0]), nodes[2].status().own_updates);
    until(&nodes[2], |s| {
        s.own_updates >= own2_start + 300 || s.training_done
    })
    .await;
    let (seen_end, own2_end) = (seen(&nodes[0]), nodes[2].status().own_updates);
    assert!(own2_end >= own2_start + 300, "node 2 kept training");
    assert!(
        seen_end == seen_start,
        "node 0 received node 2's updates across the partition ({seen_start} -> {seen_end})"
    );
    for (i, n) in nodes.iter().enumerate() {
        n.unblock(if i < 2 { right.clone() } else { left.clone() })
            .await;
    }
    let s = finish(nodes).await;
    assert_identical(&s);
    assert_eq!(s[0].updates_applied, 4 * 3000);
}

/// The regression for one log per node: a node whose log holds another
/// origin's delta updates is restarted through `Node::start` from its data
/// dir. It comes back with the same version vector and digest, and a new
/// node that joins after the delta's author has left gets those deltas, by
/// range repair, from the restarted node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_a_log_with_deltas_keeps_and_serves_them() {
    let zo = config();
    let mut fo = config();
    fo.node.mode = seedswarm::config::Mode::FirstOrder;
    fo.node.first_order.local_steps = 3;
    fo.node.first_order.compression.top_z = 0.25;
    let dir = tempfile::tempdir().unwrap();
    let a_dir = Some(dir.path().join("a"));
    let a = Node::start(
        zo.clone(),
        Options {
            min_peers: 1,
            data_dir: a_dir.clone(),
            exit_when_settled: false,
            ..options(300, &[])
        },
    )
    .await
    .unwrap();
    let b = Node::start(
        fo,
        Options {
            min_peers: 1,
            ..options(5, &[&a])
        },
    )
    .await
    .unwrap();
    let b_origin = b.origin.to_hex();
    until(&a, |s| s.updates_applied == 305 && s.settled).await;
    let before = a.status();
    let mut b = b;
    b.stop();
    b.wait().await.unwrap();
    let mut a = a;
    a.stop();
    a.wait().await.unwrap();
    assert_eq!(before.version_vector.get(&b_origin), Some(&5));
    // Restart from the data dir: same state, before any peer is heard from.
    let a = Node::start(
        zo.clone(),
        Options {
            data_dir: a_dir,
            exit_when_settled: false,
            ..options(300, &[])
        },
    )
    .await
    .unwrap();
    until(&a, |s| !s.digest.is_empty()).await;
    let after = a.status();
    assert_eq!(after.version_vector, before.version_vector);
    assert_eq!(after.digest, before.digest);
    // The author of the deltas is gone; a newcomer replays them from A.
    let c = Node::start(
        zo,
        Options {
            join: seedswarm::proto::join::Mode::Replay,
            ..options(20, &[&a])
        },
    )
    .await
    .unwrap();
    until(&c, |s| s.version_vector.get(&b_origin) == Some(&5)).await;
    let s = stop_when_complete(vec![a, c], 325).await;
    assert_identical(&s);
    assert_eq!(s[1].join, "replay");
    assert!(s[1].repaired_updates >= 305, "{:?}", s[1]);
}
