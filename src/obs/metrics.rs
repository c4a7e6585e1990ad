//! seedswarm's own Prometheus series, registered next to the libp2p-metrics
//! registry (gossipsub, identify, kad, ping, swarm, bandwidth) so one
//! `/metrics` page serves both. Handles are cheap clones (atomics); the
//! network loop and the compute thread update them without locks.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label of a rejection reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why the message was refused (malformed, oversized, over_rate, …).
    pub reason: String,
}

/// Label of payload bytes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Flow {
    /// `gossip_updates`, `gossip_status` or `sync`.
    pub protocol: String,
    /// `in` or `out`.
    pub direction: String,
}

/// Label of a spot check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Recheck {
    /// The checked origin (first 8 hex digits).
    pub origin: String,
    /// `agree`, `disagree` or `inconclusive`.
    pub verdict: String,
}

/// Label of a reachability state (`public`, `private`, `unknown`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reach {
    pub state: String,
}

/// Label of a connection kind (`direct`, `relayed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Link {
    pub kind: String,
}

/// Label of an outcome (`ok`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub result: String,
}

/// All of seedswarm's series.
#[derive(Clone, Debug)]
pub struct Series {
    pub updates_published: Counter,
    pub updates_received: Counter,
    pub updates_repaired: Counter,
    pub updates_applied: Gauge,
    pub rejected: Family<Reason, Counter>,
    pub backlog: Gauge,
    pub loss: Gauge<f64, AtomicU64>,
    pub accuracy: Gauge<f64, AtomicU64>,
    pub step_seconds: Histogram,
    pub forward_seconds: Histogram,
    pub apply_seconds: Histogram,
    pub payload_bytes: Family<Flow, Counter>,
    pub peers: Gauge,
    pub mesh_peers: Gauge,
    pub version_vector_lag: Gauge,
    pub digest_mismatches: Counter,
    pub rechecks: Family<Recheck, Counter>,
    pub reachability: Family<Reach, Gauge>,
    pub connections: Family<Link, Gauge>,
    pub hole_punches: Family<Outcome, Counter>,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.5, 18))
}

impl Series {
    /// Creates the series and registers them under the `seedswarm_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let s = Self {
            updates_published: Counter::default(),
            updates_received: Counter::default(),
            updates_repaired: Counter::default(),
            updates_applied: Gauge::default(),
            rejected: Family::default(),
            backlog: Gauge::default(),
            loss: Gauge::default(),
            accuracy: Gauge::default(),
            step_seconds: seconds(),
            forward_seconds: seconds(),
            apply_seconds: seconds(),
            payload_bytes: Family::default(),
            peers: Gauge::default(),
            mesh_peers: Gauge::default(),
            version_vector_lag: Gauge::default(),
            digest_mismatches: Counter::default(),
            rechecks: Family::default(),
            reachability: Family::default(),
            connections: Family::default(),
            hole_punches: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("seedswarm");
        r.register(
            "updates_published",
            "Own updates published",
            s.updates_published.clone(),
        );
        r.register(
            "updates_received",
            "Foreign updates received (gossip and repair)",
            s.updates_received.clone(),
        );
        r.register(
            "updates_repaired",
            "Updates received by range repair",
            s.updates_repaired.clone(),
        );
        r.register(
            "updates_applied",
            "Updates applied to the replica",
            s.updates_applied.clone(),
        );
        r.register(
            "messages_rejected",
            "Messages refused, by reason",
            s.rejected.clone(),
        );
        r.register(
            "apply_backlog",
            "Updates received but not yet applied",
            s.backlog.clone(),
        );
        r.register(
            "loss",
            "Recent training loss (moving average)",
            s.loss.clone(),
        );
        r.register("accuracy", "Latest dev accuracy", s.accuracy.clone());
        r.register(
            "step_seconds",
            "Time of one SPSA step",
            s.step_seconds.clone(),
        );
        r.register(
            "forward_seconds",
            "Time of one loss forward",
            s.forward_seconds.clone(),
        );
        r.register(
            "apply_seconds",
            "Time to apply a batch of updates",
            s.apply_seconds.clone(),
        );
        r.register(
            "payload_bytes",
            "Application payload bytes by protocol",
            s.payload_bytes.clone(),
        );
        r.register("peers", "Peers heard from recently", s.peers.clone());
        r.register(
            "mesh_peers",
            "Gossipsub mesh size on the update topic",
            s.mesh_peers.clone(),
        );
        r.register(
            "version_vector_lag",
            "Updates peers announce that this node does not hold",
            s.version_vector_lag.clone(),
        );
        r.register(
            "digest_mismatches",
            "Heartbeats with our version vector but another digest",
            s.digest_mismatches.clone(),
        );
        r.register(
            "rechecks",
            "Foreign one-byte updates recomputed on their state, by origin and verdict",
            s.rechecks.clone(),
        );
        r.register(
            "reachability",
            "1 for this node's reachability from outside (public, private, unknown), 0 for the others",
            s.reachability.clone(),
        );
        r.register(
            "connections",
            "Open connections, direct or through a relay",
            s.connections.clone(),
        );
        r.register(
            "hole_punches",
            "Hole punches (DCUtR) over relayed connections, by result",
            s.hole_punches.clone(),
        );
        s
    }

    /// Sets the reachability and connection gauges from a report.
    pub fn reach(&self, r: &crate::net::nat::Report) {
        use crate::net::nat::State;
        for st in [State::Unknown, State::Public, State::Private] {
            self.reachability
                .get_or_create(&Reach {
                    state: st.as_str().into(),
                })
                .set(i64::from(st == r.state));
        }
        for (kind, n) in [
            ("direct", r.direct_connections),
            ("relayed", r.relayed_connections),
        ] {
            self.connections
                .get_or_create(&Link { kind: kind.into() })
                .set(n as i64);
        }
    }

    /// Counts payload bytes.
    pub fn bytes(&self, protocol: &str, direction: &str, n: usize) {
        self.payload_bytes
            .get_or_create(&Flow {
                protocol: protocol.into(),
                direction: direction.into(),
            })
            .inc_by(n as u64);
    }

    /// Counts a rejection.
    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&Reason {
                reason: reason.into(),
            })
            .inc();
    }
}
