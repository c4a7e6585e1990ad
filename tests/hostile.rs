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
use seedswarm::crdt::attest::Signer;
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
    let (mut liar, liar_key) = attacker(&topics, &victim, run).await;
    let (mut vandal, _) = attacker(&topics, &victim, run).await;
    let (mut flooder, flooder_key) = attacker(&topics, &victim, run).await;
    let t = topics.updates.hash();
    let publish = |s: &mut libp2p::Swarm<net::Behaviour>, data: Vec<u8>| {
        s.behaviour_mut()
            .gossipsub
            .publish(t.clone(), data)
            .expect("published");
    };
    let signed = |key: &Signer, first: u64, codes: &[u8]| {
        wire::encode_updates(first, &key.sign(first, codes, &[]).sig, codes)
    };
    // The liar: a valid batch, the same batch again, then another code for a
    // seq it already signed (which excludes it from there on).
    publish(&mut liar, signed(&liar_key, 0, &[5, 6, 7]));
    publish(&mut liar, signed(&liar_key, 0, &[5, 6, 7]));
    publish(&mut liar, signed(&liar_key, 1, &[9]));
    // The flooder: a batch whose signature is not its own, then far more
    // updates than the rate limit allows (gossipsub graylists it after a few
    // rejections, so both come first).
    let mut forged = signed(&flooder_key, 0, &[2]);
    *forged.last_mut().unwrap() = 3;
    publish(&mut flooder, forged);
    for i in 0..8u64 {
        publish(&mut flooder, signed(&flooder_key, 1000 * i, &[1; 1000]));
    }
    // The vandal: a batch of a wire version nobody knows (ignored and
    // counted, not penalized: it could be a newer peer), garbage under the
    // current version, and a batch over the size limit.
    publish(&mut vandal, vec![9, 9, 9]);
    publish(&mut vandal, vec![wire::UPDATES_VERSION, 0x80]);
    publish(
        &mut vandal,
        wire::encode_updates(0, &[0; 64], &vec![1; wire::MAX_BATCH + 1]),
    );
    let want = [
        "unknown_version",
        "malformed",
        "oversized",
        "replayed",
        "equivocation",
        "over_rate",
        "bad_signature",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = liar.select_next_some() => {}
            _ = vandal.select_next_some() => {}
            _ = flooder.select_next_some() => {}
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
    // The liar signed two codes for seq 1: it counts only up to there.
    let liar_origin = net::origin_of_peer(liar.local_peer_id()).unwrap().to_hex();
    let held = summary
        .version_vector
        .get(&liar_origin)
        .copied()
        .unwrap_or(0);
    assert_eq!(held, 1, "the liar is excluded from its equivocation on");
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
    let (mut peer, key) = attacker(&topics, &victim, run).await;
    let origin = net::origin_of_peer(peer.local_peer_id()).unwrap().to_hex();
    let s = seedswarm::delta::fedzip::Settings::default();
    let good = seedswarm::delta::fedzip::encode(
        &seedswarm::delta::fedzip::compress(&[("head.bias", &[0.01f32, -0.02][..])], &s).unwrap(),
        s.positions,
    );
    let garbage = vec![0xabu8; 50];
    let delta = seedswarm::crdt::log::DELTA;
    let announce = |payload: &[u8]| {
        let hash = *blake3::hash(payload).as_bytes();
        wire::DeltaAnnounce {
            seq: 0,
            len: payload.len() as u32,
            hash,
            sig: key.sign(0, &[delta], &[hash]).sig,
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
        let hash = [seq as u8; 32];
        let ann = wire::DeltaAnnounce {
            seq,
            len: 50,
            hash,
            sig: key.sign(seq, &[delta], &[hash]).sig,
        };
        peer.behaviour_mut()
            .gossipsub
            .publish(topics.deltas.hash(), ann.encode())
            .expect("announced");
    }
    // The payload requests are held unanswered (their channels kept open),
    // so the victim's fetches stay in flight: the bound is what it is.
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            ev = peer.select_next_some() => {
                if let SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                    message: Message::Request { channel, .. },
                    ..
                })) = ev
                {
                    held.push(channel);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                let st = victim.status();
                assert!(held.len() <= 16, "{} payloads fetched at once", held.len());
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

/// A real libp2p peer on the run's topics, connected to `victim`, with a
/// signer of its own key.
async fn attacker(
    topics: &Topics,
    victim: &Node,
    run: RunId,
) -> (libp2p::Swarm<net::Behaviour>, Signer) {
    let mut registry = libp2p::metrics::Registry::default();
    let key = libp2p::identity::Keypair::generate_ed25519();
    let signer = Signer::new(key.clone().try_into_ed25519().unwrap(), run);
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
    (evil, signer)
}
