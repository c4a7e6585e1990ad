//! What a node reports: the live [`Status`] (`/status`, `status.json`, the
//! dashboard, tests) and the [`Summary`] of a finished node, built from the
//! protocol core's counters, the compute state and the swarm's numbers.

use crate::crdt::replica::VersionVector;
use crate::obs::metrics::Series;
use crate::proto::{ComputeState, Core, Event, Peer, Stats};
use crate::zo::seed::hex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::path::PathBuf;
use std::time::Instant;

/// Live state of a node, for tables and tests.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub peer_id: String,
    /// "zeroth-order" or "first-order".
    pub mode: String,
    pub origin: String,
    pub run_id: String,
    pub listen: Vec<String>,
    pub peers: usize,
    pub connected: usize,
    pub own_updates: u64,
    /// Own updates handed to gossipsub (published), a prefix of `own_updates`.
    pub published_through: u64,
    pub updates_applied: u64,
    pub updates_received: u64,
    pub backlog: u64,
    pub loss: f32,
    pub accuracy: Option<f64>,
    pub digest: String,
    pub version_vector: BTreeMap<String, u64>,
    pub training_done: bool,
    pub settled: bool,
    pub rejected: BTreeMap<String, u64>,
    pub repaired_updates: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub uptime_s: f64,
    pub updates_per_s: f64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    pub mesh_peers: usize,
    pub digest_mismatches: u64,
    /// Origins excluded (hex: proven to equivocate, or revoked by the
    /// run's owner), with the first excluded seq.
    pub excluded: BTreeMap<String, u64>,
    /// Origins the run's owner admitted (0 in an open run).
    pub admitted: usize,
    /// Updates taken back out of the replica by exclusions.
    pub retracted_updates: u64,
    /// Updates dropped from behind gaps nobody filled (or over bounds).
    pub dropped_pending: u64,
    /// Spot checks of foreign one-byte updates, per origin (hex): checked,
    /// agreed, disagreed, inconclusive, and after how many checks it was
    /// flagged (null: not flagged).
    pub rechecks: BTreeMap<String, crate::zo::check::Tally>,
    /// Spot checks sampled but not made (queue full, state not reached in
    /// time, bases unreadable).
    pub rechecks_skipped: u64,
    /// Live peers settling still waits for, each with why ("nobody" when
    /// training is over and no peer has agreed with this state).
    pub waiting_for: Vec<String>,
    /// Updates some heartbeat (of a live or a departed peer) announced that
    /// this node has not applied: per origin, held of known, and who said so.
    pub missing: Vec<String>,
    /// Every live peer known from its heartbeats, sorted by peer id.
    pub swarm: Vec<SwarmPeer>,
    /// Connections this node refused, by reason: `handshake_failed`
    /// (inbound, e.g. a peer without the private swarm's key),
    /// `denied_peer` (`node.deny`, bans), `not_allowed` (not in
    /// `node.allow`), `connection_limit`, `per_ip_limit`.
    pub connections_refused: BTreeMap<String, u64>,
    /// Whether peers can dial this node (AutoNAT), its relays, direct and
    /// relayed connections, hole punches, and advice when unreachable.
    pub reachability: crate::net::nat::Report,
}

/// One peer as this node knows it from its last heartbeat.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SwarmPeer {
    pub peer_id: String,
    /// Its own updates: its version vector's entry for its own origin.
    pub own_updates: u64,
    /// Updates this node has applied that the peer does not hold (Σ over origins).
    pub behind: u64,
    /// Updates the peer holds that this node has not applied (Σ over origins).
    pub ahead: u64,
    /// "agree" or "differ" when its version vector equals ours, else "n/a".
    pub digest: String,
    /// "zeroth-order" or "first-order".
    pub mode: String,
    /// Seconds since its last heartbeat.
    pub last_seen_s: f64,
    /// It stopped training for good.
    pub done: bool,
    pub backlog: u64,
    pub loss: f32,
}

/// The swarm table: every peer of the core, against this node's replica.
pub(super) fn swarm_peers<P: Peer + Display, M: Clone + Debug, C: Debug>(
    core: &Core<P, M, C>,
    now: Instant,
) -> Vec<SwarmPeer> {
    let st = core.state();
    let empty = VersionVector::new();
    let ours = st.map_or(&empty, |s| &s.vv);
    let mut out: Vec<SwarmPeer> = core
        .peers()
        .iter()
        .map(|(p, v)| {
            let diff = |a: &VersionVector, b: &VersionVector| -> u64 {
                a.iter()
                    .map(|(o, n)| n.saturating_sub(b.get(o).copied().unwrap_or(0)))
                    .sum()
            };
            let digest = match st {
                Some(s) if s.vv == v.vv => {
                    if s.digest == v.digest {
                        "agree"
                    } else {
                        "differ"
                    }
                }
                _ => "n/a",
            };
            SwarmPeer {
                peer_id: p.to_string(),
                own_updates: p.origin().and_then(|o| v.vv.get(&o).copied()).unwrap_or(0),
                behind: diff(ours, &v.vv),
                ahead: diff(&v.vv, ours),
                digest: digest.to_string(),
                mode: v.mode.to_string(),
                last_seen_s: now.saturating_duration_since(v.seen).as_secs_f64(),
                done: v.done,
                backlog: v.backlog,
                loss: v.loss,
            }
        })
        .collect();
    out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    out
}

/// What a finished node measured.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub peer_id: String,
    /// "zeroth-order" or "first-order".
    pub mode: String,
    pub origin: String,
    pub run_id: String,
    pub digest: String,
    pub version_vector: BTreeMap<String, u64>,
    pub updates_applied: u64,
    pub own_updates: u64,
    pub initial_accuracy: f64,
    pub accuracy: f64,
    pub final_loss: f64,
    pub wall_seconds: f64,
    /// The process's peak resident memory in MiB (Linux; NaN elsewhere).
    pub peak_rss_mib: f64,
    pub settled: bool,
    pub peers_seen: usize,
    pub max_connected: usize,
    pub rejected: BTreeMap<String, u64>,
    pub dropped_by_test_hook: u64,
    pub repaired_updates: u64,
    pub foreign_updates_received: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// All inbound libp2p bytes (every protocol, all overhead) per foreign update received.
    pub wire_bytes_in_per_update: f64,
    pub gossip_messages_published: u64,
    pub mean_updates_per_message: f64,
    pub max_backlog: u64,
    pub mean_backlog: f64,
    /// How this node caught up: "snapshot", "replay" or "none".
    pub join: String,
    pub join_seconds: Option<f64>,
    pub snapshot_bytes_fetched: u64,
    pub snapshot_raw_bytes: u64,
    /// Origins excluded (hex: proven to equivocate, or revoked by the
    /// run's owner), with the first excluded seq.
    pub excluded: BTreeMap<String, u64>,
    /// Origins the run's owner admitted (0 in an open run).
    pub admitted: usize,
    /// Updates taken back out by exclusions.
    pub retracted_updates: u64,
    /// Updates dropped from behind gaps nobody filled.
    pub dropped_pending: u64,
    /// Spot checks of foreign one-byte updates, per origin (hex): checked,
    /// agreed, disagreed, inconclusive, and after how many checks it was
    /// flagged (null: not flagged).
    pub rechecks: BTreeMap<String, crate::zo::check::Tally>,
    /// Spot checks sampled but not made (queue full, state not reached in
    /// time, bases unreadable).
    pub rechecks_skipped: u64,
    /// Peers settling still waited for when the node stopped (empty when
    /// it settled), each with why.
    pub waiting_for: Vec<String>,
    /// Updates known (announced by a live or departed peer) but not held
    /// when the node stopped, per origin.
    pub missing: Vec<String>,
}

/// Per-second rates between two status samples.
#[derive(Debug, Default)]
pub(super) struct Rates {
    last: Option<(Instant, u64, (u64, u64))>,
}

impl Rates {
    /// Applied updates, bytes in and bytes out per second since the last sample.
    pub(super) fn sample(
        &mut self,
        now: Instant,
        applied: u64,
        bytes: (u64, u64),
    ) -> (f64, f64, f64) {
        let mut rates = (0.0, 0.0, 0.0);
        if let Some((t, a, (bi, bo))) = self.last {
            let dt = now.duration_since(t).as_secs_f64().max(1e-3);
            rates = (
                applied.saturating_sub(a) as f64 / dt,
                bytes.0.saturating_sub(bi) as f64 / dt,
                bytes.1.saturating_sub(bo) as f64 / dt,
            );
        }
        self.last = Some((now, applied, bytes));
        rates
    }
}

/// Sets the sampled (not counted) metrics from a status.
pub(super) fn gauges<P: Peer, M: Clone + Debug, C: Debug>(
    s: &Series,
    core: &Core<P, M, C>,
    status: &Status,
) {
    s.peers.set(status.peers as i64);
    s.mesh_peers.set(status.mesh_peers as i64);
    s.backlog.set(status.backlog as i64);
    s.updates_applied.set(status.updates_applied as i64);
    s.version_vector_lag.set(core.lag() as i64);
    s.reach(&status.reachability);
    if let Some(st) = core.state() {
        s.loss.set(f64::from(st.loss));
        if let Some(e) = st.eval {
            s.accuracy.set(e.accuracy());
        }
    }
}

/// Writes `status.json` in `dir` (atomically, off the reactor).
pub(super) fn write_json(dir: PathBuf, status: &Status) {
    if let Ok(text) = serde_json::to_string_pretty(status) {
        tokio::task::spawn_blocking(move || {
            let tmp = dir.join("status.json.tmp");
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, dir.join("status.json"));
            }
        });
    }
}

/// A version vector keyed by hex origins.
pub fn vv_hex(vv: &VersionVector) -> BTreeMap<String, u64> {
    vv.iter().map(|(o, n)| (o.to_hex(), *n)).collect()
}

/// What the shell knows that the core does not.
pub(super) struct Swarm {
    pub peer_id: String,
    pub mode: String,
    pub listen: Vec<String>,
    pub connected: usize,
    pub mesh_peers: usize,
    pub bytes: (u64, u64),
    pub uptime_s: f64,
    /// Per second: applied updates, bytes in, bytes out.
    pub rates: (f64, f64, f64),
    /// Connections refused, by reason.
    pub refused: BTreeMap<String, u64>,
    pub reachability: crate::net::nat::Report,
}

/// The status of a node now.
pub(super) fn status<P: Peer + Display, M: Clone + Debug, C: Debug>(
    core: &Core<P, M, C>,
    sw: Swarm,
    now: Instant,
) -> Status {
    let st = core.state().cloned().unwrap_or_default();
    let stats: Stats = core.stats();
    Status {
        peer_id: sw.peer_id,
        mode: sw.mode,
        origin: core.origin().to_hex(),
        run_id: core.log().run().to_hex(),
        listen: sw.listen,
        peers: core.peers().len(),
        connected: sw.connected,
        own_updates: st.own,
        published_through: stats.published_through,
        updates_applied: st.applied,
        updates_received: core.log().len(),
        backlog: core.backlog(),
        loss: if core.state().is_some() {
            st.loss
        } else {
            f32::NAN
        },
        accuracy: st.eval.map(|e| e.accuracy()),
        digest: core.state().map(|s| hex(&s.digest)).unwrap_or_default(),
        version_vector: vv_hex(&st.vv),
        training_done: core.training_done(),
        settled: core.settled(),
        rejected: stats.rejected,
        repaired_updates: stats.repaired,
        bytes_in: sw.bytes.0,
        bytes_out: sw.bytes.1,
        uptime_s: sw.uptime_s,
        updates_per_s: sw.rates.0,
        bytes_in_per_s: sw.rates.1,
        bytes_out_per_s: sw.rates.2,
        mesh_peers: sw.mesh_peers,
        digest_mismatches: stats.digest_mismatches,
        excluded: stats.excluded.clone(),
        admitted: stats.admitted,
        retracted_updates: stats.retracted,
        dropped_pending: stats.dropped_pending,
        rechecks: rechecks_hex(&stats.checks),
        rechecks_skipped: stats.checks_skipped,
        waiting_for: waiting_for(core),
        missing: core
            .missing()
            .into_iter()
            .map(|m| {
                format!(
                    "origin {}: holds {} of {} (announced by {})",
                    m.origin.short(),
                    m.held,
                    m.known,
                    m.by
                )
            })
            .collect(),
        swarm: swarm_peers(core, now),
        connections_refused: sw.refused,
        reachability: sw.reachability,
    }
}

/// The summary of a finished node.
pub(super) fn summary<P: Peer, M: Clone + Debug, C: Debug>(
    core: &Core<P, M, C>,
    status: Status,
    initial: Option<crate::model::Eval>,
    last: Option<crate::model::Eval>,
    max_connected: usize,
    wall_seconds: f64,
) -> Summary {
    let stats = core.stats();
    let st: ComputeState = core.state().cloned().unwrap_or_default();
    let join = core.join();
    Summary {
        peer_id: status.peer_id,
        mode: status.mode,
        origin: status.origin,
        run_id: status.run_id,
        digest: status.digest,
        version_vector: status.version_vector,
        updates_applied: st.applied,
        own_updates: st.own,
        initial_accuracy: initial.map_or(f64::NAN, |e| e.accuracy()),
        accuracy: last.map_or(f64::NAN, |e| e.accuracy()),
        final_loss: last.map_or(f64::NAN, |e| e.loss()),
        wall_seconds,
        peak_rss_mib: peak_rss_mib(),
        settled: core.settled(),
        peers_seen: stats.peers_seen,
        max_connected,
        rejected: stats.rejected,
        dropped_by_test_hook: stats.dropped,
        repaired_updates: stats.repaired,
        foreign_updates_received: stats.foreign_received,
        bytes_in: status.bytes_in,
        bytes_out: status.bytes_out,
        wire_bytes_in_per_update: status.bytes_in as f64 / stats.foreign_received.max(1) as f64,
        gossip_messages_published: stats.published_messages,
        mean_updates_per_message: stats.published_updates as f64
            / stats.published_messages.max(1) as f64,
        max_backlog: stats.backlog_max,
        mean_backlog: stats.backlog_sum / stats.backlog_samples.max(1) as f64,
        join: join.chosen.to_string(),
        join_seconds: join.seconds(),
        snapshot_bytes_fetched: join.fetched_bytes,
        snapshot_raw_bytes: join.raw_bytes,
        excluded: stats.excluded,
        admitted: stats.admitted,
        retracted_updates: stats.retracted,
        dropped_pending: stats.dropped_pending,
        rechecks: status.rechecks,
        rechecks_skipped: status.rechecks_skipped,
        waiting_for: status.waiting_for,
        missing: status.missing,
    }
}

/// Spot-check tallies by origin hex.
fn rechecks_hex(
    checks: &BTreeMap<crate::zo::seed::Origin, crate::zo::check::Tally>,
) -> BTreeMap<String, crate::zo::check::Tally> {
    checks
        .iter()
        .map(|(o, t)| (o.to_hex(), t.clone()))
        .collect()
}

/// The process's peak resident set (VmHWM) in MiB, NaN where unknown.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024.0)
        })
        .unwrap_or(f64::NAN)
}

/// Live peers settling waits for, and "nobody" when training is over and
/// no peer agreed.
fn waiting_for<P: Peer + Display, M: Clone + Debug, C: Debug>(core: &Core<P, M, C>) -> Vec<String> {
    let mut out: Vec<String> = core
        .waiting_for()
        .into_iter()
        .map(|(p, why)| format!("{p}: {why}"))
        .collect();
    if core.training_done() && !core.settled() && !core.agreement() {
        out.push("nobody: no peer has agreed with this state".into());
    }
    out
}

/// Counts or logs an event of the core.
pub(super) fn record<P: Display>(s: &Series, e: Event<P>) {
    match e {
        Event::Rejected(reason) => s.reject(reason),
        Event::Bytes {
            protocol,
            inbound,
            n,
        } => {
            s.bytes(protocol, if inbound { "in" } else { "out" }, n);
        }
        Event::UpdatesPublished(n) => {
            s.updates_published.inc_by(n);
        }
        Event::UpdatesReceived(n) => {
            s.updates_received.inc_by(n);
        }
        Event::UpdatesRepaired(n) => {
            s.updates_repaired.inc_by(n);
        }
        Event::Rechecked(origin, verdict) => {
            let verdict = match verdict {
                crate::zo::check::Verdict::Agree => "agree",
                crate::zo::check::Verdict::Disagree => "disagree",
                crate::zo::check::Verdict::Inconclusive => "inconclusive",
            };
            s.rechecks
                .get_or_create(&crate::obs::metrics::Recheck {
                    origin: origin.short(),
                    verdict: verdict.into(),
                })
                .inc();
        }
        Event::DigestMismatch(peer) => {
            s.digest_mismatches.inc();
            tracing::error!(%peer, "digest mismatch at an equal version vector");
        }
        Event::Excluded(origin, from) => {
            tracing::warn!(origin = %origin.short(), from, "origin excluded (proven equivocation)");
        }
        Event::PeerLeft(peer) => tracing::info!(%peer, "peer left"),
        Event::PeerSilent(peer) => {
            tracing::info!(%peer, "peer went silent; no longer waited on")
        }
        Event::Joined(how) => tracing::info!(how, "join finished"),
        Event::Settled => {
            tracing::info!("swarm agrees: same version vector and digest everywhere")
        }
    }
}
