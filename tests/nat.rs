//! NAT traversal parts on loopback: a relay server grants a reservation to
//! a node not known to be public, reachability and the relays holding a
//! slot show in /status and /metrics, an operator-given external address
//! makes a node public, and the swarm still ends with equal digests. (The
//! NATs themselves, hole punching included, are in scripts/nat-swarm.sh:
//! network namespaces and nftables, root only.)

mod common;

use common::{config, finish, options, until};
use seedswarm::net::nat::State;
use seedswarm::node::{Node, Options};
use seedswarm::obs::http::get;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reserves_at_a_relay_and_the_swarm_agrees() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cfg = config();
    // A relay serves reservations only with a confirmed external address:
    // the operator's, on a port picked free just before.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let relay = Node::start(
        cfg.clone(),
        Options {
            listen: vec![addr.clone()],
            external_addresses: vec![addr],
            access: seedswarm::net::Access {
                relay_server: true,
                ..Default::default()
            },
            ..options(200, 2)
        },
    )
    .await
    .unwrap();
    let boot = relay.listen[0].clone().with_p2p(relay.peer_id).unwrap();
    let a = Node::start(
        cfg.clone(),
        Options {
            bootstrap: vec![boot.clone()],
            relays: vec![(relay.peer_id, relay.listen[0].clone())],
            http: Some("127.0.0.1:0".parse().unwrap()),
            ..options(200, 2)
        },
    )
    .await
    .unwrap();
    // It asks its relay for a slot (loopback makes it public soon: the
    // operator's relay is kept anyway), and /status says where it is relayed.
    until(&a, |s| !s.reachability.relayed_at.is_empty()).await;
    let r = a.status().reachability;
    assert!(
        r.relayed_at[0].contains(&format!("/p2p/{}/p2p-circuit", relay.peer_id)),
        "{r:?}"
    );
    let url = format!("http://{}/metrics", a.http.unwrap());
    let (_, metrics) = tokio::task::spawn_blocking(move || get(&url, Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    for series in [
        "seedswarm_reachability{state=\"public\"}",
        "seedswarm_connections{kind=\"direct\"}",
        "seedswarm_connections{kind=\"relayed\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
    // An operator-given external address: public at once, no advice.
    let b = Node::start(
        cfg,
        Options {
            bootstrap: vec![boot],
            external_addresses: vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()],
            ..options(200, 2)
        },
    )
    .await
    .unwrap();
    until(&b, |s| s.reachability.state == State::Public).await;
    assert!(b.status().reachability.advice.is_none());
    let sums = finish(vec![relay, a, b]).await;
    assert!(sums.iter().all(|s| s.digest == sums[0].digest));
    assert!(sums.iter().all(|s| s.updates_applied == 600));
}
