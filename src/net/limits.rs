//! Connection hygiene: how many connections a node holds, and from where.
//!
//! libp2p's `connection_limits` caps established connections (in all, per
//! peer) and pending ones (per direction); [`PerIp`] caps the inbound
//! connections, pending and established together, from one remote IP
//! address, so one host cannot take every pending slot or most of the
//! established ones.

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{connection_limits, Multiaddr, PeerId};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

/// Default of `node.max_connections`: established connections in all.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// Default of `node.max_connections_per_peer` (two: a simultaneous dial
/// from both sides, or TCP and QUIC, may briefly give a pair two).
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Default of `node.max_pending`: connections still in their handshake,
/// incoming and outgoing each.
pub const DEFAULT_MAX_PENDING: u32 = 128;
/// Default of `node.max_connections_per_ip`: inbound connections from one
/// IP address. 128 lets a local swarm of 64 nodes on 127.0.0.1 (63 peers ×
/// 2 connections each) run unchanged, while one host still gets at most
/// half of the default [`DEFAULT_MAX_CONNECTIONS`].
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 128;

/// The connection limits of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Established connections in all.
    pub max_connections: u32,
    /// Established connections with one peer.
    pub max_connections_per_peer: u32,
    /// Pending connections, incoming and outgoing each.
    pub max_pending: u32,
    /// Inbound connections (pending and established) from one IP address.
    pub max_connections_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_pending: DEFAULT_MAX_PENDING,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
        }
    }
}

impl Limits {
    /// libp2p's connection-limits behaviour for these limits.
    pub fn behaviour(&self) -> connection_limits::Behaviour {
        connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(self.max_connections))
                .with_max_established_per_peer(Some(self.max_connections_per_peer))
                .with_max_pending_incoming(Some(self.max_pending))
                .with_max_pending_outgoing(Some(self.max_pending)),
        )
    }
}

/// Why [`PerIp`] refused an inbound connection (the cause inside
/// `ListenError::Denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLimitExceeded {
    /// The remote address.
    pub ip: IpAddr,
    /// The cap.
    pub limit: u32,
}

impl std::fmt::Display for IpLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} already holds {} inbound connections (node.max_connections_per_ip)",
            self.ip, self.limit
        )
    }
}

impl std::error::Error for IpLimitExceeded {}

/// The IP address of a multiaddr (its first `/ip4` or `/ip6`), if any.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Caps the inbound connections from one remote IP address. A connection
/// counts from the moment it is accepted (pending) until it fails or
/// closes; outbound connections (this node dialed) do not count. No
/// address is exempt, loopback included.
#[derive(Debug)]
pub struct PerIp {
    limit: u32,
    by_ip: HashMap<IpAddr, u32>,
    conns: HashMap<ConnectionId, IpAddr>,
}

impl PerIp {
    /// A cap of `limit` inbound connections per IP address.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            by_ip: HashMap::new(),
            conns: HashMap::new(),
        }
    }

    /// Counts connection `id` from `ip` unless that address is at the cap.
    pub fn admit(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), IpLimitExceeded> {
        if self.conns.contains_key(&id) {
            return Ok(());
        }
        let n = self.by_ip.entry(ip).or_insert(0);
        if *n >= self.limit {
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
            return Err(IpLimitExceeded {
                ip,
                limit: self.limit,
            });
        }
        *n += 1;
        self.conns.insert(id, ip);
        Ok(())
    }

    /// Stops counting connection `id` (failed or closed); unknown ids are ignored.
    pub fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.conns.remove(&id) else {
            return;
        };
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// Inbound connections counted for `ip`.
    pub fn count(&self, ip: IpAddr) -> u32 {
        self.by_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Inbound connections counted in all.
    pub fn total(&self) -> usize {
        self.conns.len()
    }
}

impl NetworkBehaviour for PerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match ip_of(remote) {
            Some(ip) => self.admit(id, ip).map_err(ConnectionDenied::new),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(f) => self.release(f.connection_id),
            FromSwarm::ConnectionClosed(c) => self.release(c.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Why a connection was refused, in a few words (for `/status`).
pub fn denial_reason(cause: &ConnectionDenied) -> &'static str {
    if cause.downcast_ref::<IpLimitExceeded>().is_some() {
        "per_ip_limit"
    } else if cause
        .downcast_ref::<connection_limits::Exceeded>()
        .is_some()
    {
        "connection_limit"
    } else if cause
        .downcast_ref::<libp2p::allow_block_list::Blocked>()
        .is_some()
    {
        "denied_peer"
    } else if cause
        .downcast_ref::<libp2p::allow_block_list::NotAllowed>()
        .is_some()
    {
        "not_allowed"
    } else {
        "denied"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_refuses_at_the_cap_and_frees_on_release() {
        let mut l = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let ids: Vec<ConnectionId> = (0..5).map(ConnectionId::new_unchecked).collect();
        l.admit(ids[0], a).unwrap();
        l.admit(ids[1], a).unwrap();
        let e = l.admit(ids[2], a).unwrap_err();
        assert_eq!(e, IpLimitExceeded { ip: a, limit: 2 });
        assert!(e.to_string().contains("node.max_connections_per_ip"));
        // Another address has its own allowance.
        l.admit(ids[3], b).unwrap();
        assert_eq!((l.count(a), l.count(b), l.total()), (2, 1, 3));
        // The same connection admitted twice counts once.
        l.admit(ids[3], b).unwrap();
        assert_eq!(l.count(b), 1);
        // A refused connection was never counted: releasing it changes nothing.
        l.release(ids[2]);
        assert_eq!(l.count(a), 2);
        l.release(ids[0]);
        assert_eq!(l.count(a), 1);
        l.admit(ids[4], a).unwrap();
        assert_eq!(l.count(a), 2);
        for id in &ids {
            l.release(*id);
        }
        assert_eq!((l.count(a), l.count(b), l.total()), (0, 0, 0));
        assert!(l.by_ip.is_empty(), "no entries left behind");
    }

    #[test]
    fn a_zero_cap_refuses_everything_and_leaves_nothing_behind() {
        let mut l = PerIp::new(0);
        let a: IpAddr = "::1".parse().unwrap();
        assert!(l.admit(ConnectionId::new_unchecked(0), a).is_err());
        assert!(l.by_ip.is_empty());
    }

    #[test]
    fn the_remote_ip_comes_from_the_multiaddr() {
        let v4: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let v6: Multiaddr = "/ip6/::1/udp/1/quic-v1".parse().unwrap();
        let dns: Multiaddr = "/dns4/example.org/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&v4), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip_of(&v6), Some("::1".parse().unwrap()));
        assert_eq!(ip_of(&dns), None);
    }

    #[test]
    fn pending_inbound_connections_are_refused_by_the_behaviour_and_released_on_failure() {
        let mut l = PerIp::new(1);
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let remote: Multiaddr = "/ip4/192.0.2.7/tcp/5555".parse().unwrap();
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        l.handle_pending_inbound_connection(c1, &local, &remote)
            .unwrap();
        let denied = l
            .handle_pending_inbound_connection(c2, &local, &remote)
            .unwrap_err();
        assert_eq!(denial_reason(&denied), "per_ip_limit");
        let error = libp2p::swarm::ListenError::Aborted;
        l.on_swarm_event(FromSwarm::ListenFailure(libp2p::swarm::ListenFailure {
            local_addr: &local,
            send_back_addr: &remote,
            error: &error,
            connection_id: c1,
            peer_id: None,
        }));
        l.handle_pending_inbound_connection(c2, &local, &remote)
            .unwrap();
    }
}
