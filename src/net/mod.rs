//! The libp2p side: behaviour, swarm construction, identity and topics.
//!
//! One `#[derive(NetworkBehaviour)]` struct: gossipsub (update batches and
//! heartbeats, signed, validated before forwarding, with peer scoring),
//! request-response (log ranges, CBOR), identify, ping, optional mDNS, and
//! Kademlia fed by identify and bootstrap addresses, plus connection
//! hygiene ([`limits`]: caps in all, per peer, per IP, pending; allow and
//! deny lists). Transports: TCP (noise, yamux) and QUIC, with bandwidth
//! metrics; in a private swarm (a pre-shared key, libp2p `pnet`) TCP alone,
//! every connection encrypted with the key before noise, so a node without
//! the key cannot complete a handshake.

pub mod bandwidth;
pub mod limits;
pub mod nat;
pub mod psk;
pub mod wire;

pub use bandwidth::Bandwidth;
pub use libp2p::pnet::PreSharedKey;
pub use limits::Limits;

use crate::zo::seed::{Origin, RunId};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, OrTransport};
use libp2p::core::{upgrade, Transport};
use libp2p::identity::{self, Keypair};
use libp2p::metrics::Registry;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, noise,
    ping, pnet, quic, relay, request_response, tcp, yamux,
};
use libp2p::{PeerId, StreamProtocol, Swarm};
use std::path::Path;
use std::time::Duration;

/// Protocol name of the sync request-response protocol.
pub const SYNC_PROTOCOL: &str = "/seedswarm/sync/3";
/// Protocol name of the private Kademlia DHT.
pub const KAD_PROTOCOL: &str = "/seedswarm/kad/1.0.0";
/// Largest gossip message accepted (bytes).
pub const MAX_GOSSIP: usize = 64 * 1024;
/// Largest control part (IHAVE, IWANT, GRAFT, PRUNE, subscriptions) of one
/// gossip RPC accepted, bytes (gossipsub's default, made explicit).
pub const MAX_GOSSIP_CONTROL: usize = 16 * 1024;
/// Most message ids one IHAVE or IWANT carries (gossipsub's
/// `max_control_messages_sent`). A message id is the source's base58 peer id
/// and a decimal seq, at most 72 bytes (74 framed), so 192 of them fit in
/// [`MAX_GOSSIP_CONTROL`]. gossipsub's default of 5000 does not: after a
/// burst of a few hundred messages in the gossip window a node's IHAVE
/// exceeds what its peers accept, the peer drops that inbound stream, the
/// sender is not told, and gossip in that direction stays silent until the
/// peers forget each other as silent (each may then settle on its own).
pub const MAX_GOSSIP_IDS: usize = 192;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Identity file problems.
    #[error("node key {path}: {reason}")]
    Key { path: String, reason: String },
    /// Building the swarm failed.
    #[error("building the network: {0}")]
    Build(String),
}

/// The node's behaviour. The behaviours that refuse connections come
/// first: the derived behaviour asks its fields in order and stops at the
/// first refusal, so a refused connection never reaches the others. (One
/// that did would be remembered by request-response as established, and
/// its bookkeeping would trip when another connection to that peer closes.)
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Peers this node refuses to talk to (operators; partition tests).
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// The only peers this node talks to (`node.allow`; off when empty).
    pub allowed: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    /// Inbound connections per remote IP address.
    pub per_ip: limits::PerIp,
    /// Established connections in all and per peer, pending ones.
    pub limits: connection_limits::Behaviour,
    /// Circuit relay v2 server (`node.relay_server`; off by default).
    pub relay: Toggle<relay::Behaviour>,
    /// Circuit relay v2 client: reservations at relays, relayed dials.
    pub relay_client: relay::client::Behaviour,
    /// Hole punching over relayed connections.
    pub dcutr: dcutr::Behaviour,
    /// AutoNAT v2: asks peers to dial this node's candidate addresses back
    /// (off when the node listens on loopback only, [`Access::autonat`]).
    pub autonat: Toggle<autonat::v2::client::Behaviour>,
    /// AutoNAT v2: dials peers' candidate addresses back for them.
    pub autonat_server: autonat::v2::server::Behaviour,
    /// Update batches and heartbeats.
    pub gossipsub: gossipsub::Behaviour,
    /// Log-range transfer.
    pub sync: request_response::cbor::Behaviour<wire::Request, wire::Response>,
    /// Peer information (listen addresses for Kademlia).
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// LAN discovery (off in tests).
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Wider discovery from bootstrap addresses.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// Who may connect, and how much: the network half of `node.*` admission
/// settings. The default is an open swarm with the default [`Limits`].
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// The private swarm's pre-shared key (TCP only, QUIC off).
    pub psk: Option<PreSharedKey>,
    /// Connection caps.
    pub limits: Limits,
    /// When not empty, the only peers to dial or accept.
    pub allow: Vec<PeerId>,
    /// Peers never dialed or accepted.
    pub deny: Vec<PeerId>,
    /// Serve circuit relay v2 for peers behind NATs ([`nat::relay_config`]).
    pub relay_server: bool,
    /// Probe this node's reachability with AutoNAT v2. A probe can cost
    /// 30–100 kB once per address (the server asks for that much data
    /// when the address tested is not the one the connection came from):
    /// [`probes_reachability`] turns it off for a node that listens on
    /// loopback only, where no outside peer could ever dial it.
    pub autonat: bool,
}

/// Whether a node listening on `listen` should probe its reachability: it
/// listens somewhere other than loopback.
pub fn probes_reachability(listen: &[libp2p::Multiaddr]) -> bool {
    use libp2p::multiaddr::Protocol;
    listen.iter().any(|a| match a.iter().next() {
        Some(Protocol::Ip4(ip)) => !ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => !ip.is_loopback(),
        _ => true,
    })
}

/// Whether `addr` is a QUIC address (there is no pre-shared key for QUIC).
pub fn is_quic(addr: &libp2p::Multiaddr) -> bool {
    addr.iter().any(|p| {
        matches!(
            p,
            libp2p::multiaddr::Protocol::Quic | libp2p::multiaddr::Protocol::QuicV1
        )
    })
}

/// How long a connection may take from accept or dial to a multiplexed
/// session (pnet, noise, yamux) before it is dropped, so a peer that never
/// finishes its handshake does not hold a pending slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

impl crate::proto::Peer for PeerId {
    fn origin(&self) -> Option<Origin> {
        origin_of_peer(self)
    }
}

/// The gossip topics of a run.
#[derive(Clone, Debug)]
pub struct Topics {
    /// Update batches.
    pub updates: gossipsub::IdentTopic,
    /// Heartbeats.
    pub status: gossipsub::IdentTopic,
    /// Delta announcements.
    pub deltas: gossipsub::IdentTopic,
    /// Proofs of equivocation.
    pub proofs: gossipsub::IdentTopic,
}

/// A gossip message's id: 12 bytes of BLAKE3 over its source and sequence
/// number (both covered by the source's signature, so nobody can make a
/// message collide with another author's).
pub fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm/msgid/1");
    if let Some(p) = &m.source {
        h.update(&p.to_bytes());
    }
    h.update(&m.sequence_number.unwrap_or_default().to_le_bytes());
    h.update(&(m.data.len() as u64).to_le_bytes());
    h.update(&m.data);
    gossipsub::MessageId::new(&h.finalize().as_bytes()[..12])
}

impl Topics {
    /// Topics named from the run id.
    pub fn new(run: &RunId) -> Self {
        // Short: every gossip message carries its topic's name.
        let base = format!("ss/{}", &run.to_hex()[..24]);
        Self {
            updates: gossipsub::IdentTopic::new(format!("{base}/u")),
            status: gossipsub::IdentTopic::new(format!("{base}/s")),
            deltas: gossipsub::IdentTopic::new(format!("{base}/d")),
            proofs: gossipsub::IdentTopic::new(format!("{base}/x")),
        }
    }

    /// The gossipsub topic of a core topic.
    pub fn hash(&self, topic: crate::proto::Topic) -> gossipsub::TopicHash {
        match topic {
            crate::proto::Topic::Updates => self.updates.hash(),
            crate::proto::Topic::Status => self.status.hash(),
            crate::proto::Topic::Deltas => self.deltas.hash(),
            crate::proto::Topic::Proofs => self.proofs.hash(),
        }
    }

    /// The core topic of a gossipsub topic (None: not one of this run's).
    pub fn topic(&self, hash: &gossipsub::TopicHash) -> Option<crate::proto::Topic> {
        [
            crate::proto::Topic::Updates,
            crate::proto::Topic::Status,
            crate::proto::Topic::Deltas,
            crate::proto::Topic::Proofs,
        ]
        .into_iter()
        .find(|t| self.hash(*t) == *hash)
    }
}

/// Loads the node key from `dir/node.key`, creating it on first use.
pub fn load_or_create_key(dir: &Path) -> Result<Keypair, Error> {
    let path = dir.join("node.key");
    let err = |reason: String| Error::Key {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            err(format!(
                "unreadable ({e}); move it away to get a new identity"
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            // Durable before it is used: written, synced, renamed into place,
            // and the directory synced, so a power loss never leaves a node
            // that signed updates without the key it signed them with.
            let tmp = path.with_extension("key.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The origin (raw ed25519 public key) of a key pair.
pub fn origin_of_key(key: &Keypair) -> Option<Origin> {
    Some(Origin(key.public().try_into_ed25519().ok()?.to_bytes()))
}

/// The origin of a peer id, when it inlines an ed25519 key.
pub fn origin_of_peer(peer: &PeerId) -> Option<Origin> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(Origin(pk.try_into_ed25519().ok()?.to_bytes()))
}

/// The peer id of an origin.
pub fn peer_of_origin(origin: &Origin) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(&origin.0).ok()?;
    Some(PeerId::from_public_key(&identity::PublicKey::from(pk)))
}

/// The transports: TCP (noise, yamux) or QUIC, every connection's bytes
/// counted by `bw`. With a pre-shared key: TCP alone, each connection
/// first wrapped by pnet (a nonce each way, then XSalsa20 with the key), so
/// noise fails against a peer holding another key or none.
fn transport(
    key: &Keypair,
    bw: Bandwidth,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let tcp_base = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    if let Some(psk) = psk {
        return Ok(tcp_base
            .and_then(move |socket, _| pnet::PnetConfig::new(psk).handshake(socket))
            .upgrade(upgrade::Version::V1Lazy)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .timeout(HANDSHAKE_TIMEOUT)
            .map(move |(p, m), _| (p, bw.wrap(StreamMuxerBox::new(m))))
            .boxed());
    }
    let tcp = tcp_base
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .timeout(HANDSHAKE_TIMEOUT)
        .map(|(p, m), _| (p, StreamMuxerBox::new(m)));
    let quic = quic::tokio::Transport::new(quic::Config::new(key))
        .map(|(p, m), _| (p, StreamMuxerBox::new(m)));
    Ok(OrTransport::new(quic, tcp)
        .map(move |either, _| {
            let (p, m) = either.into_inner();
            (p, bw.wrap(m))
        })
        .boxed())
}

/// Builds the swarm for `run` with `key`; registers gossipsub metrics in
/// `registry`; counts wire bytes in `bw`. Sync responses are accepted up to
/// what a run with delta payloads of the largest size allows.
pub fn build(
    key: Keypair,
    topics: &Topics,
    mdns_on: bool,
    registry: &mut Registry,
    bw: Bandwidth,
) -> Result<Swarm<Behaviour>, Error> {
    build_with(
        key,
        topics,
        mdns_on,
        registry,
        bw,
        crate::crdt::log::MAX_DELTA_BYTES,
        &Access::default(),
    )
}

/// The largest sync response accepted for a run whose delta payloads are at
/// most `max_delta_bytes`: a range of [`wire::MAX_RANGE`] codes in whole
/// batches with their signatures and payloads (4 MiB beyond the first), a
/// snapshot chunk or a delta payload.
pub fn max_response_bytes(max_delta_bytes: usize) -> u64 {
    let range = 4 * (wire::MAX_RANGE + wire::MAX_BATCH as u64)
        + 128 * wire::MAX_RANGE_BATCHES as u64
        + (4 << 20)
        + max_delta_bytes as u64;
    range
        .max(crate::crdt::snapshot::CHUNK as u64 + 4096)
        .saturating_add(4096)
}

/// Like [`build`], accepting sync responses only up to what this run's
/// `run.delta.max_bytes` allows ([`max_response_bytes`]), and with
/// `access`: a private swarm's key (TCP only), connection limits, allow and
/// deny lists.
pub fn build_with(
    key: Keypair,
    topics: &Topics,
    mdns_on: bool,
    registry: &mut Registry,
    bw: Bandwidth,
    max_delta_bytes: usize,
    access: &Access,
) -> Result<Swarm<Behaviour>, Error> {
    let b = |e: &dyn std::fmt::Display| Error::Build(e.to_string());
    let topics = topics.clone();
    let psk = access.psk;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            transport(key, bw, psk)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
        })
        .map_err(|e| b(&e))?
        // Relayed connections: noise and yamux inside the circuit (a private
        // swarm's relay is reached over pnet already).
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| b(&e))?
        .with_behaviour(
            |key, relay_client| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let peer = key.public().to_peer_id();
                let config = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .validate_messages()
                    .max_transmit_size(MAX_GOSSIP)
                    .max_control_message_size(MAX_GOSSIP_CONTROL)
                    .max_control_messages_sent(MAX_GOSSIP_IDS)
                    .heartbeat_interval(Duration::from_millis(700))
                    .mesh_n(4)
                    .mesh_n_low(3)
                    .mesh_n_high(8)
                    .mesh_outbound_min(2)
                    .history_length(6)
                    // Traffic (and signature checks: every copy received is
                    // verified) per update at scale: a mesh of 4, an author
                    // sends to its mesh only (not to every peer), a peer
                    // that has a message says so (IDONTWANT) before a copy
                    // is sent, IHAVE goes to 3 peers about the last two
                    // windows (anti-entropy repairs what gossip misses),
                    // with 12-byte ids instead of the default base58 peer
                    // id and decimal seqno (~70 bytes each).
                    .flood_publish(false)
                    .idontwant_message_size_threshold(128)
                    .gossip_lazy(3)
                    .gossip_factor(0.0)
                    .history_gossip(2)
                    .message_id_fn(message_id)
                    .build()?;
                let mut gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    config,
                )?
                .with_metrics(registry, Default::default());
                let mut params = gossipsub::PeerScoreParams {
                    ip_colocation_factor_weight: 0.0,
                    ..Default::default()
                };
                for t in [
                    &topics.updates,
                    &topics.status,
                    &topics.deltas,
                    &topics.proofs,
                ] {
                    params.topics.insert(
                        t.hash(),
                        gossipsub::TopicScoreParams {
                            topic_weight: 1.0,
                            time_in_mesh_weight: 0.0,
                            first_message_deliveries_weight: 0.0,
                            mesh_message_deliveries_weight: 0.0,
                            mesh_failure_penalty_weight: 0.0,
                            invalid_message_deliveries_weight: -10.0,
                            invalid_message_deliveries_decay: 0.9,
                            ..Default::default()
                        },
                    );
                }
                gossipsub.with_peer_score(params, gossipsub::PeerScoreThresholds::default())?;
                gossipsub.subscribe(&topics.updates)?;
                gossipsub.subscribe(&topics.status)?;
                gossipsub.subscribe(&topics.deltas)?;
                gossipsub.subscribe(&topics.proofs)?;
                let sync = request_response::cbor::Behaviour::with_codec(
                    request_response::cbor::codec::Codec::default()
                        .set_request_size_maximum(48 * wire::MAX_ORIGINS as u64 + 4096)
                        .set_response_size_maximum(max_response_bytes(max_delta_bytes)),
                    [(
                        StreamProtocol::new(SYNC_PROTOCOL),
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30)),
                );
                let identify = identify::Behaviour::new(
                    identify::Config::new("/seedswarm/1".into(), key.public())
                        .with_agent_version(format!("seedswarm/{}", env!("CARGO_PKG_VERSION")))
                        .with_interval(Duration::from_secs(60))
                        // New listen addresses (a relay reservation, say)
                        // reach peers at once, not at the next interval.
                        .with_push_listen_addr_updates(true),
                );
                let ping = ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_secs(10)),
                );
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config {
                            query_interval: Duration::from_secs(5),
                            ..Default::default()
                        },
                        peer,
                    )?)
                } else {
                    None
                };
                let mut kad = kad::Behaviour::with_config(
                    peer,
                    kad::store::MemoryStore::new(peer),
                    kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
                );
                kad.set_mode(Some(kad::Mode::Server));
                let mut blocked = allow_block_list::Behaviour::default();
                for p in &access.deny {
                    blocked.block_peer(*p);
                }
                let allowed = (!access.allow.is_empty()).then(|| {
                    let mut a = allow_block_list::Behaviour::default();
                    for p in &access.allow {
                        a.allow_peer(*p);
                    }
                    a
                });
                Ok(Behaviour {
                    gossipsub,
                    sync,
                    identify,
                    ping,
                    mdns: Toggle::from(mdns),
                    kad,
                    blocked,
                    limits: access.limits.behaviour(),
                    per_ip: limits::PerIp::new(access.limits.max_connections_per_ip),
                    allowed: Toggle::from(allowed),
                    relay: Toggle::from(
                        access
                            .relay_server
                            .then(|| relay::Behaviour::new(peer, nat::relay_config())),
                    ),
                    relay_client,
                    dcutr: dcutr::Behaviour::new(peer),
                    autonat: Toggle::from(
                        access.autonat.then(autonat::v2::client::Behaviour::default),
                    ),
                    autonat_server: autonat::v2::server::Behaviour::default(),
                })
            },
        )
        .map_err(|e| b(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ihave_or_iwant_fits_in_a_gossip_frame() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        // The default message id: base58 source ‖ decimal seq.
        let id = peer.to_base58().len() + u64::MAX.to_string().len();
        // Each id framed (tag, length), plus the topic and the RPC's framing.
        assert!(MAX_GOSSIP_IDS * (id + 2) + 1024 <= MAX_GOSSIP_CONTROL);
    }

    #[test]
    fn only_a_node_listening_beyond_loopback_probes_its_reachability() {
        let a = |s: &str| -> libp2p::Multiaddr { s.parse().unwrap() };
        assert!(!probes_reachability(&[
            a("/ip4/127.0.0.1/tcp/0"),
            a("/ip6/::1/udp/0/quic-v1")
        ]));
        assert!(probes_reachability(&[
            a("/ip4/127.0.0.1/tcp/0"),
            a("/ip4/0.0.0.0/udp/0/quic-v1")
        ]));
        assert!(probes_reachability(&[a("/ip4/10.99.0.11/tcp/4001")]));
    }

    #[test]
    fn origin_and_peer_id_correspond() {
        let key = Keypair::generate_ed25519();
        let origin = origin_of_key(&key).unwrap();
        let peer = key.public().to_peer_id();
        assert_eq!(origin_of_peer(&peer), Some(origin));
        assert_eq!(peer_of_origin(&origin), Some(peer));
    }

    #[test]
    fn node_key_is_persistent_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_key(dir.path()).unwrap();
        let b = load_or_create_key(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        std::fs::write(dir.path().join("node.key"), b"garbage").unwrap();
        let err = load_or_create_key(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unreadable"), "{err}");
    }
}
