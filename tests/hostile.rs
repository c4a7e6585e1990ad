//! A hostile peer on the run's own topics: a real libp2p swarm (same
//! behaviour, its own key) publishes malformed, oversized, equivocating,
//! replayed and over-rate update batches to a running node. Each is refused,
//! counted by reason, and the node keeps working. A second peer announces
//! delta updates and serves, over request-response, a payload that does not
//! match its announced hash, then one that does not decode, then a valid one:
//! the first two are refused, the third is applied; a flood of announcements
//! whose payloads never come is fetched only up to a bound.

mod common;

use common::config;

use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::swarm::SwarmEvent;
use seedswarm::net::{self, wire, BehaviourEvent, Topics};
use seedswarm::node::{Node, Options};
use seedswarm::zo::seed::RunId;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_refused_counted_and_harmless() {
    let victim = Node::start(
        config(),
        Options {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            mdns: false,
            max_updates: Some(200),
            max_rate: 2000.0,
            heartbeat_interval: Duration::from_millis(200),
            exit_when_settled: false,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let mut w = victim.watch();
    while w.borrow().run_id.is_empty() {
        w.changed().await.unwrap();
    }
    let run = RunId::from_hex(&w.borrow().run_id).unwrap();
    let topics = Topics::new(&run);
    let mut liar = attacker(&topics, &victim).await;
    let mut vandal = attacker(&topics, &victim).await;
    let t = topics.updates.hash();
    let publish = |s: &mut libp2p::Swarm<net::Behaviour>, data: Vec<u8>| {
        s.behaviour_mut()
            .gossipsub
            .publish(t.clone(), data)
            .expect("published");
    };
    // The liar: a valid batch, the same batch again, another code for a seq
    // it already signed, then far more updates than the rate limit allows.
    publish(&mut liar, wire::encode_updates(0, &[5, 6, 7]));
    publish(&mut liar, wire::encode_updates(0, &[5, 6, 7]));
    publish(&mut liar, wire::encode_updates(1, &[9]));
    for i in 0..8u64 {
        publish(&mut liar, wire::encode_updates(3 + 1000 * i, &[1; 1000]));
    }
    // The vandal: a batch of a wire version nobody knows (ignored and
    // counted, not penalized: it could be a newer peer), garbage under the
    // current version, and a batch over the size limit.
    publish(&mut vandal, vec![9, 9, 9]);
    publish(&mut vandal, vec![wire::UPDATES_VERSION, 0x80]);
    publish(
        &mut vandal,
        wire::encode_updates(0, &vec![1; wire::MAX_BATCH + 1]),
    );
    let want = [
        "unknown_version",
        "malformed",
        "oversized",
        "replayed",
        "equivocation",
        "over_rate",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = liar.select_next_some() => {}
            _ = vandal.select_next_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let s = victim.status();
                if want.iter().all(|r| s.rejected.contains_key(*r)) {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "rejections seen: {:?}", s.rejected);
            }
        }
    }
    // The node goes on with its own work regardless.
    let mut w = victim.watch();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !w.borrow().training_done {
            w.changed().await.unwrap();
        }
    })
    .await
    .expect("victim finished training");
    let mut victim = victim;
    victim.stop();
    let summary = victim.wait().await.unwrap();
    assert_eq!(summary.own_updates, 200, "the node kept training");
    // Only the liar's updates that passed validation were taken, none beyond a refusal.
    let liar_origin = net::origin_of_peer(liar.local_peer_id()).unwrap().to_hex();
    let held = summary
        .version_vector
        .get(&liar_origin)
        .copied()
        .unwrap_or(0);
    assert!(
        (3..3 + 8000).contains(&held),
        "took {held} of the liar's updates"
    );
    let vandal_origin = net::origin_of_peer(vandal.local_peer_id())
        .unwrap()
        .to_hex();
    assert!(!summary.version_vector.contains_key(&vandal_origin));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_delta_payloads_are_refused_and_a_good_one_is_applied() {
    use libp2p::request_response::{self, Message};
    let victim = Node::start(
        config(),
        Options {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            mdns: false,
            max_updates: Some(100),
            heartbeat_interval: Duration::from_millis(200),
            exit_when_settled: false,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let mut w = victim.watch();
    while w.borrow().run_id.is_empty() {
        w.changed().await.unwrap();
    }
    let run = RunId::from_hex(&w.borrow().run_id).unwrap();
    let topics = Topics::new(&run);
    let mut peer = attacker(&topics, &victim).await;
    let origin = net::origin_of_peer(peer.local_peer_id()).unwrap().to_hex();
    let s = seedswarm::delta::fedzip::Settings::default();
    let good = seedswarm::delta::fedzip::encode(
        &seedswarm::delta::fedzip::compress(&[("head.bias", &[0.01f32, -0.02][..])], &s).unwrap(),
        s.positions,
    );
    let garbage = vec![0xabu8; 50];
    let announce = |payload: &[u8]| {
        wire::DeltaAnnounce {
            seq: 0,
            len: payload.len() as u32,
            hash: *blake3::hash(payload).as_bytes(),
        }
        .encode()
    };
    // (announced, served): a hash mismatch, an undecodable payload, a good one.
    let rounds = [
        (announce(&good), garbage.clone()),
        (announce(&garbage), garbage.clone()),
        (announce(&good), good.clone()),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (i, (ann, serve)) in rounds.into_iter().enumerate() {
        peer.behaviour_mut()
            .gossipsub
            .publish(topics.deltas.hash(), ann)
            .expect("announced");
        // Serve the payload when the victim pulls it.
        loop {
            let ev = tokio::time::timeout_at(deadline, peer.select_next_some())
                .await
                .expect("victim pulled the payload");
            if let SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            })) = ev
            {
                let wire::Request::Delta { origin, seq } = request else {
                    continue;
                };
                let data = wire::Blob(serve.clone());
                let _ = peer
                    .behaviour_mut()
                    .sync
                    .send_response(channel, wire::Response::Delta { origin, seq, data });
                break;
            }
        }
        // Wait for the verdict before the next round.
        let want_bad = if i < 2 { i as u64 + 1 } else { 2 };
        loop {
            tokio::select! {
                _ = peer.select_next_some() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    let st = victim.status();
                    let bad = st.rejected.get("bad_delta").copied().unwrap_or(0);
                    let applied = st.version_vector.get(&origin).copied().unwrap_or(0);
                    if bad == want_bad && (i < 2 || applied == 1) {
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "round {i}: rejected {:?}, applied {applied}",
                        st.rejected
                    );
                }
            }
        }
    }
    // A flood of announcements whose payloads never come: the victim fetches
    // a bounded number at once and ignores the rest.
    for seq in 1..=40u64 {
        let ann = wire::DeltaAnnounce {
            seq,
            len: 50,
            hash: [seq as u8; 32],
        };
        peer.behaviour_mut()
            .gossipsub
            .publish(topics.deltas.hash(), ann.encode())
            .expect("announced");
    }
    loop {
        tokio::select! {
            _ = peer.select_next_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                let st = victim.status();
                if st.rejected.get("deltas_busy").copied().unwrap_or(0) >= 40 - 16 {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "rejected {:?}", st.rejected);
            }
        }
    }
    let mut victim = victim;
    victim.stop();
    let summary = victim.wait().await.unwrap();
    assert_eq!(summary.version_vector.get(&origin), Some(&1));
    assert_eq!(summary.rejected.get("bad_delta"), Some(&2));
}

/// A real libp2p peer on the run's topics, connected to `victim`.
async fn attacker(topics: &Topics, victim: &Node) -> libp2p::Swarm<net::Behaviour> {
    let mut registry = libp2p::metrics::Registry::default();
    let key = libp2p::identity::Keypair::generate_ed25519();
    let bw = net::Bandwidth::register(&mut registry);
    let mut evil = net::build(key, topics, false, &mut registry, bw).unwrap();
    evil.dial(victim.listen[0].clone()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        let (mut updates, mut deltas) = (false, false);
        while !(updates && deltas) {
            if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { topic, .. },
            )) = evil.select_next_some().await
            {
                updates |= topic == topics.updates.hash();
                deltas |= topic == topics.deltas.hash();
            }
        }
    })
    .await
    .expect("victim subscribed");
    evil
}
