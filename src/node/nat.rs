//! The shell's NAT bookkeeping: which connections are relayed, which relays
//! hold a reservation for this node, what AutoNAT and hole punching found.
//! It reserves at the operator's relays (`node.relays`) always, and at
//! relays it discovered while the node is not known to be public (dropping
//! those once it is); it closes a relayed connection as soon as a direct
//! one to the same peer exists.

use crate::net::nat::{self, Reachability, State, MAX_RESERVATIONS};
use crate::net::{Behaviour, BehaviourEvent};
use crate::obs::metrics::{Outcome, Series};
use libp2p::core::transport::ListenerId;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{autonat, dcutr, identify, relay, Multiaddr, PeerId, Swarm};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A relay whose reservation failed is tried again after this long; a
/// peer dialed through relays is dialed again no sooner than this.
const RETRY: Duration = Duration::from_secs(30);
/// Most peers dialed through relays per maintenance round.
const DIALS_PER_ROUND: usize = 8;
/// A peer whose hole punch failed is reached through a fresh relayed
/// connection (and so punched again) after this long, at most
/// [`PUNCH_TRIES`] times in all: the first punch often comes before either
/// side knows its observed addresses.
const PUNCH_RETRY: Duration = Duration::from_secs(5);
const PUNCH_TRIES: u32 = 4;
/// Most peers whose link kind is remembered.
const MAX_LINKS: usize = 1024;

/// A change the protocol core is told of: whether a peer is now reachable
/// only through relays.
pub(super) type LinkChange = (PeerId, bool);

#[derive(Default)]
pub(super) struct Nat {
    pub reach: Reachability,
    /// Relays to reserve at: configured ones first, then peers this node
    /// dialed directly that speak the hop protocol.
    relays: BTreeMap<PeerId, (Multiaddr, bool)>,
    /// Circuit listeners, by the relay they reserve at.
    listeners: HashMap<ListenerId, PeerId>,
    /// When a relay's reservation last failed.
    failed: HashMap<PeerId, Instant>,
    /// Open connections: peer and whether relayed.
    conns: HashMap<ConnectionId, (PeerId, bool)>,
    /// The address this node dialed each peer at, directly.
    dialed: HashMap<PeerId, Multiaddr>,
    /// Per peer, how it was last connected: "relayed", "direct", or
    /// "hole punched" (direct, by DCUtR over a relayed connection).
    links: BTreeMap<PeerId, &'static str>,
    /// When each peer heard of but not connected was last dialed through relays.
    relay_dials: HashMap<PeerId, Instant>,
    /// Per peer, failed hole punches and when the last one ended.
    punches: HashMap<PeerId, (u32, Instant)>,
}

impl Nat {
    /// With the operator's relays and external addresses.
    pub fn new(relays: &[(PeerId, Multiaddr)], external: &[Multiaddr]) -> Self {
        let mut n = Self::default();
        for (p, a) in relays {
            n.relays.insert(*p, (a.clone(), true));
        }
        for a in external {
            n.reach.confirmed(a.clone());
        }
        n
    }

    /// Closes every relayed connection to `peer`.
    fn close_relayed(&self, swarm: &mut Swarm<Behaviour>, peer: &PeerId) {
        for (id, (p, relayed)) in &self.conns {
            if p == peer && *relayed {
                swarm.close_connection(*id);
            }
        }
    }

    fn only_relayed(&self, peer: &PeerId) -> Option<bool> {
        let mut any = false;
        for (p, relayed) in self.conns.values() {
            if p == peer {
                if !relayed {
                    return Some(false);
                }
                any = true;
            }
        }
        any.then_some(true)
    }

    /// Takes what it needs of a swarm event; returns the peer whose
    /// relayed-only status changed, if any.
    pub fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        series: &Series,
        event: &SwarmEvent<BehaviourEvent>,
    ) -> Option<LinkChange> {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let before = self.only_relayed(peer_id);
                let relayed = endpoint.is_relayed();
                self.conns.insert(*connection_id, (*peer_id, relayed));
                self.link(*peer_id, if relayed { "relayed" } else { "direct" });
                if relayed && before == Some(false) {
                    // A direct connection is open already (a relayed dial,
                    // by Kademlia say, raced it): the relay carries nothing.
                    swarm.close_connection(*connection_id);
                }
                if !relayed {
                    if endpoint.is_dialer() {
                        self.dialed
                            .insert(*peer_id, endpoint.get_remote_address().clone());
                    }
                    // Direct now: the relay carries nothing more for this pair.
                    self.close_relayed(swarm, peer_id);
                }
                let after = self.only_relayed(peer_id);
                (before != after).then_some((*peer_id, after == Some(true)))
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                let before = self.only_relayed(peer_id);
                self.conns.remove(connection_id);
                let after = self.only_relayed(peer_id);
                if after.is_none() {
                    self.dialed.remove(peer_id);
                }
                (before != after).then_some((*peer_id, after == Some(true)))
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let hop = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
                if let (true, Some(addr)) = (hop, self.dialed.get(peer_id)) {
                    self.relays
                        .entry(*peer_id)
                        .or_insert_with(|| (addr.clone(), false));
                }
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
            )) => {
                tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                self.failed.remove(relay_peer_id);
                None
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(relay) = self.listeners.get(listener_id) {
                    self.reach.reserved(*relay, address.clone());
                }
                None
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self.listeners.remove(listener_id) {
                    tracing::info!(%relay, ?reason, "relay reservation closed");
                    self.reach.unreserved(&relay);
                    if reason.is_err() {
                        self.failed.insert(relay, Instant::now());
                    }
                }
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => {
                match result {
                    Ok(_) => {
                        tracing::info!(peer = %remote_peer_id, "hole punched: direct connection")
                    }
                    Err(e) => {
                        tracing::info!(peer = %remote_peer_id, error = %e, "hole punch failed")
                    }
                }
                let result = if result.is_ok() { "ok" } else { "failed" };
                series
                    .hole_punches
                    .get_or_create(&Outcome {
                        result: result.into(),
                    })
                    .inc();
                self.reach.hole_punch(result == "ok");
                if result == "ok" {
                    self.link(*remote_peer_id, "hole punched");
                    self.punches.remove(remote_peer_id);
                } else if self.punches.len() < MAX_LINKS {
                    let e = self
                        .punches
                        .entry(*remote_peer_id)
                        .or_insert((0, Instant::now()));
                    *e = (e.0 + 1, Instant::now());
                }
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::v2::client::Event {
                tested_addr,
                result,
                server,
                bytes_sent,
            })) => {
                tracing::debug!(addr = %tested_addr, %server, bytes_sent, ok = result.is_ok(), "AutoNAT probe");
                match result {
                    Ok(()) => self.reach.confirmed(tested_addr.clone()),
                    Err(e) => {
                        tracing::debug!(addr = %tested_addr, %server, error = %e, "not reachable at this address");
                        self.reach.failed(tested_addr.clone());
                    }
                }
                None
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                self.reach.confirmed(address.clone());
                None
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.reach.expired(address);
                None
            }
            _ => None,
        }
    }

    /// Remembers how `peer` is connected: a direct link made by hole
    /// punching stays "hole punched"; a relayed one does not overwrite a
    /// direct one while that is open.
    fn link(&mut self, peer: PeerId, kind: &'static str) {
        if self.links.len() >= MAX_LINKS && !self.links.contains_key(&peer) {
            return;
        }
        let direct_open = self.only_relayed(&peer) == Some(false);
        let e = self.links.entry(peer).or_insert(kind);
        match (kind, *e) {
            ("direct", "hole punched") => {}
            ("relayed", _) if direct_open => {}
            _ => *e = kind,
        }
    }

    /// Closes the relayed connections of peers whose hole punch failed a
    /// while ago (fewer than [`PUNCH_TRIES`] times), so that the next round
    /// of [`Nat::reach_peers`] dials them through the relay again and DCUtR
    /// gets another go, with the addresses both sides have learned since.
    fn punch_again(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        let due: Vec<PeerId> = self
            .punches
            .iter()
            .filter(|(p, (n, t))| {
                *n < PUNCH_TRIES
                    && now.duration_since(*t) >= PUNCH_RETRY
                    && self.only_relayed(p) == Some(true)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            tracing::debug!(%peer, "hole punch failed: reconnecting through the relay to punch again");
            self.close_relayed(swarm, &peer);
            self.relay_dials.remove(&peer);
            if let Some(e) = self.punches.get_mut(&peer) {
                e.1 = now;
            }
        }
        self.punches
            .retain(|p, (n, _)| *n < PUNCH_TRIES || self.conns.values().any(|(q, _)| q == p));
    }

    /// Dials, through every relay this node knows, the peers it hears of
    /// (by their heartbeats) but is not connected to: behind a NAT nobody
    /// else would dial them, and the relayed connection is what hole
    /// punching starts from. Nothing without relays (a LAN or loopback
    /// swarm connects as before).
    pub fn reach_peers(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        heard: impl Iterator<Item = PeerId>,
        now: Instant,
    ) {
        if self.relays.is_empty() {
            return;
        }
        let heard: std::collections::HashSet<PeerId> = heard.collect();
        self.relay_dials.retain(|p, _| heard.contains(p));
        let mut dialed = 0;
        for peer in heard {
            if dialed >= DIALS_PER_ROUND {
                break;
            }
            if swarm.is_connected(&peer)
                || self.relays.contains_key(&peer)
                || self
                    .relay_dials
                    .get(&peer)
                    .is_some_and(|t| now.duration_since(*t) < RETRY)
            {
                continue;
            }
            let addrs: Vec<Multiaddr> = self
                .relays
                .iter()
                .map(|(r, (a, _))| {
                    nat::circuit_listen_addr(a, *r).with(libp2p::multiaddr::Protocol::P2p(peer))
                })
                .collect();
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .build();
            if let Err(e) = swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "dial through relays failed");
            }
            self.relay_dials.insert(peer, now);
            dialed += 1;
        }
    }

    /// Reserves at the operator's relays, and at discovered ones while the
    /// node is not known to be public (up to [`MAX_RESERVATIONS`], the
    /// operator's first); drops the discovered ones once it is.
    pub fn maintain(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        self.punch_again(swarm, now);
        let public = self.reach.state() == State::Public;
        if public {
            // Discovered relays are dropped; the operator's are kept.
            let relays = &self.relays;
            self.listeners.retain(|id, relay| {
                let keep = relays.get(relay).is_some_and(|(_, configured)| *configured);
                if !keep {
                    swarm.remove_listener(*id);
                }
                keep
            });
        }
        let mut order: Vec<(&PeerId, &(Multiaddr, bool))> = self.relays.iter().collect();
        order.sort_by_key(|(_, (_, configured))| !configured);
        let mut open = self.listeners.len();
        let mut start = Vec::new();
        for (peer, (addr, configured)) in order {
            if open >= MAX_RESERVATIONS || (public && !configured) {
                break;
            }
            let busy = self.listeners.values().any(|r| r == peer);
            let resting = self
                .failed
                .get(peer)
                .is_some_and(|t| now.duration_since(*t) < RETRY);
            if !busy && !resting && peer != swarm.local_peer_id() {
                start.push((*peer, nat::circuit_listen_addr(addr, *peer)));
                open += 1;
            }
        }
        for (peer, addr) in start {
            match swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    tracing::debug!(relay = %peer, %addr, "asking for a relay reservation");
                    self.listeners.insert(id, peer);
                }
                Err(e) => {
                    tracing::warn!(relay = %peer, %addr, error = %e, "cannot listen through relay");
                    self.failed.insert(peer, now);
                }
            }
        }
    }

    /// The report for `/status`.
    pub fn report(&self, listen: &[Multiaddr]) -> nat::Report {
        let relayed = self.conns.values().filter(|(_, r)| *r).count();
        let mut r = self
            .reach
            .report(listen, self.conns.len() - relayed, relayed);
        r.links = self
            .links
            .iter()
            .map(|(p, k)| (p.to_string(), k.to_string()))
            .collect();
        r
    }
}
