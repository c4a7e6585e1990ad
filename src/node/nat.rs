//! The shell's NAT bookkeeping: which connections are relayed, which relays
//! hold a reservation for this node, what AutoNAT and hole punching found.
//! It reserves at relays while the node is not known to be public, drops
//! the reservations once it is, and closes a relayed connection as soon as
//! a direct one to the same peer exists.

use crate::net::nat::{self, Reachability, State, MAX_RESERVATIONS};
use crate::net::{Behaviour, BehaviourEvent};
use crate::obs::metrics::{Outcome, Series};
use libp2p::core::transport::ListenerId;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{autonat, dcutr, identify, relay, Multiaddr, PeerId, Swarm};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A relay whose reservation failed is tried again after this long.
const RETRY: Duration = Duration::from_secs(30);

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
                if !relayed {
                    if endpoint.is_dialer() {
                        self.dialed
                            .insert(*peer_id, endpoint.get_remote_address().clone());
                    }
                    // Direct now: the relay carries nothing more for this pair.
                    let relayed: Vec<ConnectionId> = self
                        .conns
                        .iter()
                        .filter(|(_, (p, r))| p == peer_id && *r)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in relayed {
                        swarm.close_connection(id);
                    }
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
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::v2::client::Event {
                tested_addr,
                result,
                server,
                ..
            })) => {
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

    /// Reserves at relays while the node is not known to be public (up to
    /// [`MAX_RESERVATIONS`], configured relays first), drops them once it is.
    pub fn maintain(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        if self.reach.state() == State::Public {
            for (id, _) in self.listeners.drain() {
                swarm.remove_listener(id);
            }
            return;
        }
        let mut order: Vec<(&PeerId, &(Multiaddr, bool))> = self.relays.iter().collect();
        order.sort_by_key(|(_, (_, configured))| !configured);
        let mut open = self.listeners.len();
        let mut start = Vec::new();
        for (peer, (addr, _)) in order {
            if open >= MAX_RESERVATIONS {
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
        self.reach
            .report(listen, self.conns.len() - relayed, relayed)
    }
}
