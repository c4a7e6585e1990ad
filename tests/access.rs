//! Who may connect, over real sockets on 127.0.0.1: a private swarm (a
//! pre-shared key; outsiders without it, or with another, never complete
//! a handshake), deny and allow lists (the excluded peer never connects,
//! yet the run converges through the others), and the per-IP cap.

mod common;

use common::{assert_identical, config, finish, until};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{ListenError, SwarmEvent};
use libp2p::{Multiaddr, PeerId};
use seedswarm::net::{self, Access, Limits, PreSharedKey, Topics};
use seedswarm::node::{Node, Options, Status};
use seedswarm::zo::seed::RunId;
use std::time::Duration;

type Raw = libp2p::Swarm<net::Behaviour>;

fn options(max_updates: u64, bootstrap: &[&Node]) -> Options {
    Options {
        bootstrap: bootstrap
            .iter()
            .map(|p| p.listen[0].clone().with_p2p(p.peer_id).unwrap())
            .collect(),
        ..common::options(max_updates, 0)
    }
}

fn key(byte: u8) -> PreSharedKey {
    PreSharedKey::new([byte; 32])
}

/// A bare libp2p peer (the node's behaviour, its own key) with `access`,
/// driven by the test.
fn raw(access: &Access) -> Raw {
    let mut registry = libp2p::metrics::Registry::default();
    let bw = net::Bandwidth::register(&mut registry);
    let topics = Topics::new(&RunId::from_hex(&"00".repeat(32)).unwrap());
    net::build_with(
        Keypair::generate_ed25519(),
        &topics,
        false,
        &mut registry,
        bw,
        seedswarm::crdt::log::MAX_DELTA_BYTES,
        access,
    )
    .unwrap()
}

/// How a dial of a raw peer ended.
#[derive(Debug)]
enum Dialed {
    Connected(PeerId),
    Failed(String),
}

/// Dials every one of `addrs` from `swarm` and drives it until each dial
/// has ended. A handshake with a peer holding another key (or none) may
/// stall rather than fail, until [`net::HANDSHAKE_TIMEOUT`] ends it: pnet
/// itself does not check the key, the garbled noise handshake does.
/// A bare swarm with `access`, listening on loopback TCP, and its address.
async fn listening(access: &Access) -> (Raw, Multiaddr) {
    let mut x = raw(access);
    x.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    match x.select_next_some().await {
        SwarmEvent::NewListenAddr { address, .. } => (x, address),
        e => panic!("{e:?}"),
    }
}

async fn dial_all(swarm: &mut Raw, addrs: &[Multiaddr]) -> Vec<Dialed> {
    for a in addrs {
        swarm.dial(a.clone()).unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(net::HANDSHAKE_TIMEOUT + Duration::from_secs(15), async {
        while out.len() < addrs.len() {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    out.push(Dialed::Connected(peer_id))
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    out.push(Dialed::Failed(error.to_string()))
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the dials ended in time");
    out
}

fn refused(s: &Status, reason: &str) -> u64 {
    s.connections_refused.get(reason).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_swarm_admits_only_holders_of_its_key() {
    let psk = key(7);
    let private = |o: Options| Options {
        access: Access {
            psk: Some(psk),
            ..Access::default()
        },
        min_peers: 1,
        exit_when_settled: false,
        ..o
    };
    // A QUIC listen address is dropped (no pnet for QUIC), and said so.
    let mut oa = private(options(300, &[]));
    oa.listen
        .push("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap());
    let a = Node::start(config(), oa).await.unwrap();
    assert!(a.listen.iter().all(|l| !net::is_quic(l)), "{:?}", a.listen);
    let fp = psk.fingerprint().to_string();
    assert!(
        a.notices
            .contains(&format!("private swarm: psk fingerprint {fp} (QUIC off)")),
        "{:?}",
        a.notices
    );
    assert!(
        a.notices
            .iter()
            .any(|n| n.starts_with("QUIC off because of the pre-shared key")
                && n.contains("/udp/0/quic-v1")),
        "{:?}",
        a.notices
    );
    let b = Node::start(config(), private(options(300, &[&a])))
        .await
        .unwrap();
    for n in [&a, &b] {
        until(n, |s| s.connected == 1 && s.peers == 1).await;
    }
    // Outsiders, without a key and with another one, dial both insiders.
    let mut none = raw(&Access::default());
    let mut other = raw(&Access {
        psk: Some(key(8)),
        ..Access::default()
    });
    let addrs = [a.listen[0].clone(), b.listen[0].clone()];
    let (r1, r2) = futures::join!(dial_all(&mut none, &addrs), dial_all(&mut other, &addrs));
    for r in r1.iter().chain(&r2) {
        match r {
            Dialed::Failed(e) => eprintln!("outsider refused: {e}"),
            Dialed::Connected(p) => panic!("an outsider got in to {p}"),
        }
    }
    // Each insider saw both handshakes fail, and holds only the other.
    for n in [&a, &b] {
        until(n, |s| refused(s, "handshake_failed") >= 2).await;
        let s = n.status();
        assert_eq!((s.connected, s.peers, s.swarm.len()), (1, 1, 1), "{s:?}");
    }
    // The control: the same kind of peer with the key gets in.
    let mut insider = raw(&Access {
        psk: Some(psk),
        ..Access::default()
    });
    match &dial_all(&mut insider, &addrs[1..]).await[..] {
        [Dialed::Connected(p)] => assert_eq!(*p, b.peer_id),
        r => panic!("a holder of the key was refused: {r:?}"),
    }
    drop(insider);
    for n in [&a, &b] {
        until(n, |s| s.settled && s.updates_applied == 600).await;
    }
    let mut nodes = vec![a, b];
    for n in &mut nodes {
        n.stop();
    }
    let s = finish(nodes).await;
    assert_identical(&s);
    // a never held more than its one peer (b briefly held the control too).
    assert_eq!(s[0].max_connected, 1, "{:?}", s[0]);
}

/// Three nodes a, b, c in a line: a excludes c (how: `exclude`, given b's
/// and c's peer ids), b talks to both, c dials both. c never connects to
/// a, which counts the refusal under `reason`, and all three converge
/// through b.
async fn an_excluded_peer_never_connects(
    exclude: impl Fn(&mut Access, PeerId, PeerId),
    reason: &str,
) {
    let (kb, kc) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (pb, pc) = (kb.public().to_peer_id(), kc.public().to_peer_id());
    let mut oa = Options {
        min_peers: 2,
        ..options(200, &[])
    };
    exclude(&mut oa.access, pb, pc);
    let a = Node::start(config(), oa).await.unwrap();
    let b = Node::start(
        config(),
        Options {
            key: Some(kb),
            min_peers: 2,
            ..options(200, &[&a])
        },
    )
    .await
    .unwrap();
    until(&a, |s| s.connected == 1).await;
    let c = Node::start(
        config(),
        Options {
            key: Some(kc),
            min_peers: 2,
            ..options(200, &[&a, &b])
        },
    )
    .await
    .unwrap();
    assert_eq!(c.peer_id, pc);
    // c's dial was refused by a, and a heard of c through b (heartbeats).
    until(&a, |s| refused(s, reason) >= 1 && s.peers == 2).await;
    let s = finish(vec![a, b, c]).await;
    assert_identical(&s);
    assert_eq!(s[0].max_connected, 1, "a connected to c: {:?}", s[0]);
    assert_eq!(s[1].max_connected, 2, "b connects to both: {:?}", s[1]);
    assert!(s.iter().all(|x| x.updates_applied == 600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_listed_peer_never_connects() {
    an_excluded_peer_never_connects(|a, _, c| a.deny.push(c), "denied_peer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_allow_list_only_listed_peers_connect() {
    an_excluded_peer_never_connects(|a, b, _| a.allow.push(b), "not_allowed").await;
}

/// Drives `others` in the background while `f` runs on `main`.
async fn with_driven<T>(
    main: &mut Raw,
    others: &mut [&mut Raw],
    until: impl FnMut(&SwarmEvent<net::BehaviourEvent>) -> Option<T>,
) -> T {
    let mut until = until;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut rest = futures::future::select_all(
                others
                    .iter_mut()
                    .map(|o| Box::pin(o.select_next_some()))
                    .collect::<Vec<_>>(),
            );
            tokio::select! {
                ev = main.select_next_some() => if let Some(t) = until(&ev) { return t },
                _ = &mut rest => {}
            }
        }
    })
    .await
    .expect("the event came in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_cap_refuses_the_next_inbound_connection_from_one_address() {
    let capped = Access {
        limits: Limits {
            max_connections_per_ip: 1,
            ..Limits::default()
        },
        ..Access::default()
    };
    let (mut x, addr) = listening(&capped).await;
    let (mut y, mut z) = (raw(&Access::default()), raw(&Access::default()));
    let xid = *x.local_peer_id();
    // y gets in from 127.0.0.1.
    y.dial(addr.clone()).unwrap();
    let yid = *y.local_peer_id();
    with_driven(&mut x, &mut [&mut y], |ev| match ev {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == yid => Some(()),
        _ => None,
    })
    .await;
    // z, from the same address, is refused at accept.
    z.dial(addr.clone()).unwrap();
    let denied = with_driven(&mut x, &mut [&mut y, &mut z], |ev| match ev {
        SwarmEvent::IncomingConnectionError {
            error: ListenError::Denied { cause },
            ..
        } => Some(
            cause
                .downcast_ref::<net::limits::IpLimitExceeded>()
                .copied(),
        ),
        SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id != yid => {
            panic!("a second connection from 127.0.0.1 got in")
        }
        _ => None,
    })
    .await
    .expect("refused by the per-IP cap");
    assert_eq!(denied.limit, 1);
    assert!(denied.ip.is_loopback());
    // Once y leaves, the address has room again.
    assert!(y.disconnect_peer_id(xid).is_ok());
    with_driven(&mut x, &mut [&mut y, &mut z], |ev| match ev {
        SwarmEvent::ConnectionClosed { peer_id, .. } if *peer_id == yid => Some(()),
        _ => None,
    })
    .await;
    drop(y);
    z.dial(addr).unwrap();
    let zid = *z.local_peer_id();
    with_driven(&mut x, &mut [&mut z], |ev| match ev {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == zid => Some(()),
        _ => None,
    })
    .await;
}

/// A connection refused past the per-peer cap must reach no other
/// behaviour: request-response would keep it as established, and the
/// close of the peer's real connection would then trip its bookkeeping
/// (a panic in debug builds; it happened in a 16-node local swarm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_refused_past_the_per_peer_cap_leaves_no_trace() {
    let capped = Access {
        limits: Limits {
            max_connections_per_peer: 1,
            ..Limits::default()
        },
        ..Access::default()
    };
    let (mut x, addr) = listening(&capped).await;
    let mut y = raw(&Access::default());
    let (xid, yid) = (*x.local_peer_id(), *y.local_peer_id());
    for round in 0..2 {
        y.dial(addr.clone()).unwrap();
        with_driven(&mut x, &mut [&mut y], |ev| match ev {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == yid => Some(()),
            _ => None,
        })
        .await;
        // A second connection from y is refused by the cap.
        y.dial(addr.clone()).unwrap();
        let refused = with_driven(&mut x, &mut [&mut y], |ev| match ev {
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                ..
            } => Some(
                cause
                    .downcast_ref::<libp2p::connection_limits::Exceeded>()
                    .map(|e| e.to_string()),
            ),
            SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == yid => {
                panic!("round {round}: a second connection from y got in")
            }
            _ => None,
        })
        .await;
        assert!(refused.is_some(), "refused by the per-peer cap");
        // y leaves; x closes its one connection cleanly.
        assert!(y.disconnect_peer_id(xid).is_ok());
        with_driven(&mut x, &mut [&mut y], |ev| match ev {
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if *peer_id == yid => Some(()),
            _ => None,
        })
        .await;
        assert!(!x.is_connected(&yid));
    }
}
