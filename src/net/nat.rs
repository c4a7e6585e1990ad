//! Getting through NATs with libp2p's own parts, and telling the user where
//! the node stands.
//!
//! - **AutoNAT v2** (client and server on every node): a peer dials each
//!   candidate address of this node back over a fresh port; an address that
//!   answers is confirmed external, one that does not is marked failed.
//! - **Circuit relay v2**: every node is a client; a node run with
//!   `node.relay_server` serves reservations and circuits (bounded below).
//!   A node reserves a slot at up to [`MAX_RESERVATIONS`] relays: those of
//!   `node.relays`, and while it is not known to be public, peers it dialed
//!   that speak the hop protocol; so peers behind other NATs can reach it.
//! - **DCUtR**: over a relayed connection both ends dial each other's
//!   observed addresses at once (hole punching); once a direct connection
//!   exists the relayed one is closed, so a relay carries only what cannot
//!   go direct.
//!
//! [`Reachability`] turns the events into public / private / unknown, the
//! connection counts and one line of advice.

use libp2p::multiaddr::Protocol;
use libp2p::{relay, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Most relays a node not known to be public reserves a slot at.
pub const MAX_RESERVATIONS: usize = 2;

/// What a relay server (`node.relay_server`) grants: reservations for 128
/// peers (2 per peer) for an hour, 64 circuits (8 per peer), each closed
/// after 10 minutes or 16 MiB relayed, whichever comes first. Gossip of
/// one-byte updates fits with room to spare (a node's heartbeats and
/// updates are a few hundred bytes a second); a snapshot or delta payload
/// past the cap is cut and asked again of a directly connected peer. The
/// per-circuit byte cap bounds what one pair of hostile peers can make the
/// relay forward.
pub fn relay_config() -> relay::Config {
    relay::Config {
        max_reservations: 128,
        max_reservations_per_peer: 2,
        reservation_duration: Duration::from_secs(3600),
        max_circuits: 64,
        max_circuits_per_peer: 8,
        max_circuit_duration: Duration::from_secs(600),
        max_circuit_bytes: 16 << 20,
        ..Default::default()
    }
}

/// Whether `addr` is a direct IP address with a port: what reachability
/// is about (AutoNAT also tests the odd candidates that identify reports
/// over relayed connections: circuit addresses, a bare `/p2p/<id>`).
pub fn is_direct_ip(addr: &Multiaddr) -> bool {
    let mut it = addr.iter();
    matches!(it.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)))
        && matches!(it.next(), Some(Protocol::Tcp(_) | Protocol::Udp(_)))
        && !is_circuit(addr)
}

/// Whether `addr` goes through a relay (`/p2p-circuit`).
pub fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The address to listen on for a reservation at the relay reached at
/// `addr` (which may or may not end with the relay's `/p2p/<id>`).
pub fn circuit_listen_addr(addr: &Multiaddr, relay: PeerId) -> Multiaddr {
    let mut a = addr.clone();
    if !matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.push(Protocol::P2p(relay));
    }
    a.with(Protocol::P2pCircuit)
}

/// Whether this node can be dialed from outside.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No address tested yet.
    #[default]
    Unknown,
    /// A peer dialed one of its addresses back (or the operator gave one
    /// with `--external-address`).
    Public,
    /// Every address peers tried to dial back failed.
    Private,
}

impl State {
    /// Its name in `/status`, `/metrics` and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Public => "public",
            State::Private => "private",
        }
    }
}

/// A node's reachability as `/status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// "public", "private" or "unknown".
    pub state: State,
    /// Addresses peers dialed back (or given by the operator).
    pub external: Vec<String>,
    /// Addresses peers failed to dial back.
    pub unreachable: Vec<String>,
    /// Relays holding a reservation for this node (its `/p2p-circuit` addresses).
    pub relayed_at: Vec<String>,
    /// Open connections that are direct, and that go through a relay.
    pub direct_connections: usize,
    pub relayed_connections: usize,
    /// Hole punches (DCUtR) that gave a direct connection, and that failed.
    pub hole_punched: u64,
    pub hole_punch_failed: u64,
    /// One line for the operator when the node cannot be dialed directly.
    pub advice: Option<String>,
    /// Per peer id, how it was last connected: "direct", "relayed" or
    /// "hole punched".
    pub links: BTreeMap<String, String>,
}

/// What the node knows of its reachability, fed by the swarm's events.
#[derive(Debug, Default)]
pub struct Reachability {
    confirmed: BTreeSet<Multiaddr>,
    failed: BTreeSet<Multiaddr>,
    reservations: BTreeMap<PeerId, Multiaddr>,
    hole_punched: u64,
    hole_punch_failed: u64,
}

impl Reachability {
    /// An address was confirmed external (AutoNAT, the operator, a relay
    /// reservation: circuit addresses are kept apart).
    pub fn confirmed(&mut self, addr: Multiaddr) {
        if is_direct_ip(&addr) {
            self.failed.remove(&addr);
            self.confirmed.insert(addr);
        }
    }

    /// An external address expired.
    pub fn expired(&mut self, addr: &Multiaddr) {
        self.confirmed.remove(addr);
    }

    /// A peer could not dial `addr` back.
    pub fn failed(&mut self, addr: Multiaddr) {
        if is_direct_ip(&addr) && !self.confirmed.contains(&addr) {
            self.failed.insert(addr);
        }
    }

    /// A relay accepted a reservation (listening at `addr`).
    pub fn reserved(&mut self, relay: PeerId, addr: Multiaddr) {
        self.reservations.insert(relay, addr);
    }

    /// A reservation ended (its listener closed).
    pub fn unreserved(&mut self, relay: &PeerId) {
        self.reservations.remove(relay);
    }

    /// The relays this node holds a reservation at.
    pub fn relays(&self) -> impl Iterator<Item = &PeerId> {
        self.reservations.keys()
    }

    /// A hole punch ended.
    pub fn hole_punch(&mut self, ok: bool) {
        if ok {
            self.hole_punched += 1;
        } else {
            self.hole_punch_failed += 1;
        }
    }

    /// Public when an address answered, private when only failures are
    /// known, unknown before any test ended.
    pub fn state(&self) -> State {
        if !self.confirmed.is_empty() {
            State::Public
        } else if !self.failed.is_empty() {
            State::Private
        } else {
            State::Unknown
        }
    }

    /// The report, with the open connections' counts and, for a node that
    /// cannot be dialed, what to do about it: forward the port it listens
    /// on (`listen`: its listen addresses), or reserve at a relay.
    pub fn report(&self, listen: &[Multiaddr], direct: usize, relayed: usize) -> Report {
        let state = self.state();
        // The port to forward: TCP if the node listens on one, else UDP.
        let port = |want: &'static str| {
            listen.iter().filter(|a| !is_circuit(a)).find_map(|a| {
                a.iter().find_map(|p| match p {
                    Protocol::Tcp(port) if port != 0 && want == "TCP" => Some((want, port)),
                    Protocol::Udp(port) if port != 0 && want == "UDP" => Some((want, port)),
                    _ => None,
                })
            })
        };
        let port = port("TCP").or_else(|| port("UDP"));
        let forward = match port {
            Some((proto, port)) => format!(
                "forward {proto} port {port} on your router to this machine and run with --external-address /ip4/<public ip>/{}/{port}",
                proto.to_lowercase()
            ),
            None => "listen on a fixed port (--listen /ip4/0.0.0.0/tcp/<port>), forward it on your router and run with --external-address".to_string(),
        };
        let advice = match state {
            State::Public => None,
            State::Private if self.reservations.is_empty() => Some(format!(
                "not reachable from outside its NAT and no relay holds a slot for it: {forward}, or run with --relay <address of a node with node.relay_server = true>"
            )),
            State::Private => Some(format!(
                "not reachable from outside its NAT: peers reach it through {} relay(s) and hole punching; for direct connections from everyone, {forward}",
                self.reservations.len()
            )),
            State::Unknown if self.reservations.is_empty() => None,
            State::Unknown => Some(
                "reachability not tested yet (no peer has dialed it back); reachable through a relay meanwhile"
                    .into(),
            ),
        };
        Report {
            state,
            external: self.confirmed.iter().map(|a| a.to_string()).collect(),
            unreachable: self.failed.iter().map(|a| a.to_string()).collect(),
            relayed_at: self.reservations.values().map(|a| a.to_string()).collect(),
            direct_connections: direct,
            relayed_connections: relayed,
            hole_punched: self.hole_punched,
            hole_punch_failed: self.hole_punch_failed,
            advice,
            links: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn states_follow_the_dial_backs() {
        let mut r = Reachability::default();
        let listen = [
            a("/ip4/0.0.0.0/tcp/4001"),
            a("/ip4/0.0.0.0/udp/4001/quic-v1"),
        ];
        assert_eq!(r.state(), State::Unknown);
        assert_eq!(r.report(&listen, 0, 0).advice, None);
        r.failed(a("/ip4/203.0.113.7/tcp/4001"));
        assert_eq!(r.state(), State::Private);
        let advice = r.report(&listen, 1, 0).advice.unwrap();
        assert!(advice.contains("forward TCP port 4001"), "{advice}");
        assert!(advice.contains("--relay"), "{advice}");
        // A reservation: reachable through the relay, still private.
        let relay = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let circuit = circuit_listen_addr(&a("/ip4/198.51.100.1/tcp/4001"), relay);
        assert!(is_circuit(&circuit));
        assert!(circuit
            .to_string()
            .ends_with(&format!("/p2p/{relay}/p2p-circuit")));
        r.confirmed(circuit.clone());
        assert_eq!(r.state(), State::Private, "a circuit address is not public");
        r.reserved(relay, circuit);
        let rep = r.report(&listen, 1, 2);
        assert!(rep.advice.unwrap().contains("1 relay(s)"));
        assert_eq!((rep.direct_connections, rep.relayed_connections), (1, 2));
        // A dial-back that worked makes it public, and no advice is given.
        r.confirmed(a("/ip4/203.0.113.7/udp/4001/quic-v1"));
        assert_eq!(r.state(), State::Public);
        assert_eq!(r.report(&listen, 1, 0).advice, None);
        r.expired(&a("/ip4/203.0.113.7/udp/4001/quic-v1"));
        assert_eq!(r.state(), State::Private);
    }

    #[test]
    fn advice_without_a_fixed_port_says_to_pick_one() {
        let mut r = Reachability::default();
        r.failed(a("/ip4/203.0.113.7/tcp/39000"));
        let advice = r.report(&[a("/ip4/0.0.0.0/tcp/0")], 0, 0).advice.unwrap();
        assert!(advice.contains("fixed port"), "{advice}");
        // TCP is preferred, whatever the order of the listen addresses.
        let listen = [
            a("/ip4/0.0.0.0/udp/4002/quic-v1"),
            a("/ip4/0.0.0.0/tcp/4001"),
        ];
        let advice = r.report(&listen, 0, 0).advice.unwrap();
        assert!(advice.contains("TCP port 4001"), "{advice}");
    }

    #[test]
    fn only_direct_ip_addresses_count() {
        let mut r = Reachability::default();
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        r.failed(Multiaddr::empty().with(Protocol::P2p(peer)));
        r.failed(circuit_listen_addr(&a("/ip4/198.51.100.1/tcp/4001"), peer));
        assert_eq!(r.state(), State::Unknown);
        r.failed(a("/ip6/2001:db8::1/udp/4001/quic-v1"));
        assert_eq!(r.state(), State::Private);
    }
}
