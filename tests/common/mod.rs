//! Helpers shared by the multi-node tests: the demo config, waiting on a
//! node's status with a deadline, collecting summaries, and the bit-identity check.
#![allow(dead_code)]

use seedswarm::config::Config;
use seedswarm::node::{Node, Options, Status, Summary};
use std::time::Duration;

/// The demo run manifest and node settings.
pub fn config() -> Config {
    Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/demo.toml"
    )))
    .expect("demo config")
}

/// Loopback TCP, no mDNS, fast batching and heartbeats: a node that publishes
/// `max_updates` and starts training once it has heard `min_peers` peers.
pub fn options(max_updates: u64, min_peers: usize) -> Options {
    Options {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        max_updates: Some(max_updates),
        min_peers,
        settle_timeout: Duration::from_secs(60),
        publish_interval: Duration::from_millis(50),
        publish_max: 64,
        heartbeat_interval: Duration::from_millis(300),
        ..Options::default()
    }
}

/// Waits (at most 90 s) until `what` holds for the node's status.
pub async fn until(node: &Node, what: impl Fn(&Status) -> bool) {
    let mut w = node.watch();
    tokio::time::timeout(Duration::from_secs(90), async {
        while !what(&w.borrow()) {
            if w.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .expect("condition reached in time");
}

/// Waits (at most 180 s) for every node to finish; their summaries in order.
pub async fn finish(nodes: Vec<Node>) -> Vec<Summary> {
    let waits = nodes.into_iter().map(|n| n.wait());
    tokio::time::timeout(Duration::from_secs(180), futures::future::join_all(waits))
        .await
        .expect("nodes finished in time")
        .into_iter()
        .map(|r| r.expect("node ran"))
        .collect()
}

/// Every node saw agreement and holds the same version vector and digest.
pub fn assert_identical(s: &[Summary]) {
    for x in s {
        assert!(x.settled, "node {} did not see agreement: {x:?}", x.peer_id);
        assert_eq!(
            x.version_vector, s[0].version_vector,
            "version vectors differ"
        );
        assert_eq!(
            x.digest, s[0].digest,
            "digests differ at equal version vectors"
        );
        assert_eq!(x.updates_applied, s[0].updates_applied);
    }
}
