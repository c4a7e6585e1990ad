//! A swarm node: the network shell ([`shell`]) owns the libp2p `Swarm` and
//! translates its events into inputs of the protocol core
//! ([`crate::proto::Core`]), whose outputs it executes; the compute thread
//! ([`compute`]) owns the training [`Session`] (model, replica, the log's
//! file) and applies what the core hands over. Nothing blocks the reactor:
//! loading the model and replaying the log happen on a blocking thread, and
//! snapshots are encoded there.

use crate::config::{self, Config, NodeSettings};
use crate::crdt::log::Log;
use crate::net::{self, Topics};
use crate::obs::history::History;
use crate::obs::http;
use crate::obs::metrics::Series;
use crate::proto::{self, join, Core, Timing};
use crate::train::{self, Session};
use crate::zo::seed::Origin;
use compute::{FromCompute, ToCompute};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::metrics::{Metrics, Registry};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

mod blocking;
mod compute;
mod nat;
mod report;
mod shell;

pub use report::{Status, Summary, SwarmPeer};

/// Errors of a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network setup failed.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// Training setup or a step failed.
    #[error(transparent)]
    Train(#[from] train::Error),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    /// A membership record given to the node is unusable.
    #[error("membership record {path}: {reason}")]
    Record { path: String, reason: String },
    /// The run is permissioned and this node holds no admission.
    #[error(
        "this node ({peer}) is not admitted to this permissioned run (run.owner is set): \
         ask the run's owner for an admission (seedswarm admit --owner-key KEY --config CONFIG --peer {peer} --out FILE) \
         and start with --record FILE (or node.records); with --max-updates 0 it only follows the run"
    )]
    NotAdmitted { peer: String },
    /// The compute thread stopped unexpectedly.
    #[error("compute thread failed: {0}")]
    Compute(String),
}

/// How a node runs: the config's `[node]` section, validated and parsed, plus
/// what only the command line or a test chooses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (and add to Kademlia).
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses known to reach this node from outside (`node.external_addresses`).
    pub external_addresses: Vec<Multiaddr>,
    /// Relays to reserve a slot at (`node.relays`).
    pub relays: Vec<(PeerId, Multiaddr)>,
    /// Keeps node.key and updates.log; resumes from them.
    pub data_dir: Option<PathBuf>,
    /// Identity to use when there is no data dir (tests); else generated.
    pub key: Option<Keypair>,
    /// Own updates to publish before stopping training (None: no limit).
    pub max_updates: Option<u64>,
    /// Stop training after this long (None: no limit).
    pub duration: Option<Duration>,
    /// Start training only once this many peers have been heard from.
    pub min_peers: usize,
    /// LAN discovery.
    pub mdns: bool,
    /// After training, wait at most this long for the swarm to agree.
    pub settle_timeout: Duration,
    /// Own updates are batched into one gossip message per interval...
    pub publish_interval: Duration,
    /// ... or as soon as this many are waiting.
    pub publish_max: usize,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// No own step while more held updates than this are unapplied.
    pub max_staleness: u64,
    /// Own steps scaled by `min(1, step_peers / nodes training)` (0: off).
    pub step_peers: u64,
    /// Repair timing.
    pub timing: Timing,
    /// Most updates per second accepted from one origin.
    pub max_rate: f64,
    /// Test hook: fraction of incoming update messages to drop unseen.
    pub drop_incoming: f64,
    /// Test hook: publish every one-byte update with the sign of its
    /// gradient flipped, as a hostile origin would (spot checks flag it).
    pub flip_signs: bool,
    /// Exit once training is over and the swarm agrees (false: serve until stopped).
    pub exit_when_settled: bool,
    /// Serve /metrics, /status and the dashboard here.
    pub http: Option<std::net::SocketAddr>,
    /// How a node with an empty log catches up.
    pub join: join::Mode,
    /// Distinct peers that must vouch for a snapshot (`node.snapshot_quorum`).
    pub snapshot_quorum: usize,
    /// Membership records (the owner's admissions and revocations, as
    /// files) this node takes and gossips at start (`node.records`).
    pub records: Vec<PathBuf>,
    /// Who may connect: the private swarm's key, connection limits, allow
    /// and deny lists (`node.psk_file`, `node.max_*`, `node.allow`,
    /// `node.deny`).
    pub access: net::Access,
    /// The bearer token HTTP requests must carry (`node.http_token_file`).
    pub http_token: Option<http::Token>,
}

impl Options {
    /// Options from a config's `[node]` section plus command-line choices;
    /// an address that does not parse is an error naming its field.
    pub fn from_config(
        cfg: &Config,
        data_dir: Option<PathBuf>,
        max_updates: Option<u64>,
        duration: Option<Duration>,
        serve: bool,
    ) -> Result<Self, config::Error> {
        let mut o = Self::from_settings(&cfg.node).map_err(|message| config::Error::Invalid {
            path: "node settings".into(),
            message,
        })?;
        o.data_dir = data_dir;
        o.max_updates = max_updates;
        o.duration = duration;
        o.exit_when_settled = !serve;
        Ok(o)
    }

    /// Options from node settings alone (the message names a bad field).
    pub fn from_settings(n: &NodeSettings) -> Result<Self, String> {
        let addrs = |field: &str, list: &[String]| -> Result<Vec<Multiaddr>, String> {
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse()
                        .map_err(|e| format!("node.{field}[{i}] is not a multiaddr ({a:?}): {e}"))
                })
                .collect()
        };
        let http = n
            .http
            .as_deref()
            .map(|a| {
                a.parse().map_err(|e| {
                    format!("node.http is not an address like 127.0.0.1:9000 ({a:?}): {e}")
                })
            })
            .transpose()?;
        Ok(Self {
            listen: addrs("listen", &n.listen)?,
            bootstrap: addrs("bootstrap", &n.bootstrap)?,
            external_addresses: addrs("external_addresses", &n.external_addresses)?,
            relays: addrs("relays", &n.relays)?
                .into_iter()
                .enumerate()
                .map(|(i, a)| match a.iter().last() {
                    Some(libp2p::multiaddr::Protocol::P2p(peer)) => Ok((peer, a)),
                    _ => Err(format!(
                        "node.relays[{i}] must end with the relay's /p2p/<peer id> ({a})"
                    )),
                })
                .collect::<Result<_, _>>()?,
            data_dir: None,
            key: None,
            max_updates: None,
            duration: None,
            min_peers: n.min_peers,
            mdns: n.mdns,
            settle_timeout: Duration::from_secs(n.settle_timeout_s),
            publish_interval: Duration::from_millis(n.publish_ms),
            publish_max: n.publish_max,
            heartbeat_interval: Duration::from_millis(n.heartbeat_ms),
            max_staleness: n.max_staleness,
            step_peers: n.step_peers,
            timing: Timing::default(),
            max_rate: n.max_rate,
            drop_incoming: 0.0,
            flip_signs: false,
            exit_when_settled: true,
            http,
            join: join::Mode::Auto,
            snapshot_quorum: n.snapshot_quorum,
            records: n.records.iter().map(PathBuf::from).collect(),
            access: access(n)?,
            http_token: n
                .http_token_file
                .as_deref()
                .map(|f| net::psk::load_token("node.http_token_file", std::path::Path::new(f)))
                .transpose()?
                .map(http::Token::new),
        })
    }
}

/// The network access settings of `n`: the key read from `node.psk_file`,
/// the caps, the peer ids of `node.allow` and `node.deny` (errors name the
/// field, and the path or index).
fn access(n: &NodeSettings) -> Result<net::Access, String> {
    n.validate_access()?;
    Ok(net::Access {
        psk: n
            .psk_file
            .as_deref()
            .map(|f| net::psk::load("node.psk_file", std::path::Path::new(f)))
            .transpose()?,
        limits: net::Limits {
            max_connections: n.max_connections,
            max_connections_per_peer: n.max_connections_per_peer,
            max_pending: n.max_pending,
            max_connections_per_ip: n.max_connections_per_ip,
        },
        allow: n.peer_ids("allow", &n.allow)?,
        deny: n.peer_ids("deny", &n.deny)?,
        relay_server: n.relay_server,
        // Decided at start from the listen addresses (net::probes_reachability).
        autonat: true,
    })
}

/// The start-up lines a node's operator should read: a private swarm's
/// key fingerprint and QUIC off (with what was dropped for it), mDNS
/// announcing the node, allow and deny lists, and an HTTP server reachable
/// beyond loopback without a token.
fn notices(
    opts: &Options,
    dropped: &[Multiaddr],
    http: Option<std::net::SocketAddr>,
) -> Vec<String> {
    let mut out = Vec::new();
    let a = &opts.access;
    if let Some(psk) = &a.psk {
        out.push(format!(
            "private swarm: psk fingerprint {} (QUIC off)",
            psk.fingerprint()
        ));
        if !dropped.is_empty() {
            let list: Vec<String> = dropped.iter().map(|d| d.to_string()).collect();
            out.push(format!(
                "QUIC off because of the pre-shared key (pnet covers TCP only): not using {}",
                list.join(", ")
            ));
        }
    }
    if opts.mdns {
        let mut line = "mDNS on: this node announces itself on the local network (node.mdns = false or --no-mdns to stop)".to_string();
        if a.psk.is_some() {
            line.push_str("; peers without the pre-shared key cannot connect");
        }
        out.push(line);
    }
    if a.relay_server {
        out.push(if opts.external_addresses.is_empty() {
            "relay server on: it grants reservations only once an external address is confirmed (by AutoNAT, or give --external-address)".to_string()
        } else {
            format!(
                "relay server on, reachable at {}",
                opts.external_addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    if !a.allow.is_empty() {
        out.push(format!(
            "allow list: only {} listed peer(s) may connect (node.allow)",
            a.allow.len()
        ));
    }
    if !a.deny.is_empty() {
        out.push(format!(
            "deny list: {} peer(s) refused (node.deny)",
            a.deny.len()
        ));
    }
    if let Some(h) = http {
        if opts.http_token.is_some() {
            out.push(format!(
                "HTTP on {h} requires a bearer token (node.http_token_file)"
            ));
        } else if !h.ip().is_loopback() {
            out.push(format!(
                "HTTP on {h} without a token: anyone who can reach it reads status and metrics; set node.http_token_file"
            ));
        }
    }
    out
}

impl Default for Options {
    /// The defaults of [`NodeSettings`] (one place for them).
    fn default() -> Self {
        Self::from_settings(&NodeSettings::default()).expect("default node settings are valid")
    }
}

/// A running node.
pub struct Node {
    /// libp2p peer id.
    pub peer_id: PeerId,
    /// Origin (ed25519 public key).
    pub origin: Origin,
    /// Addresses it listens on (with the real ports).
    pub listen: Vec<Multiaddr>,
    /// Where its HTTP server listens, when enabled.
    pub http: Option<std::net::SocketAddr>,
    /// Start-up lines for the operator (private swarm, QUIC off, mDNS on,
    /// an HTTP server without a token...).
    pub notices: Vec<String>,
    status: watch::Receiver<Status>,
    control: mpsc::Sender<Control>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Summary, Error>>,
}

/// Runs a node until it finishes (training over and the swarm settled, or
/// `shutdown` resolved: then it leaves gracefully); `started` is called once
/// it listens.
pub async fn run(
    cfg: Config,
    opts: Options,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(&Node),
) -> Result<Summary, Error> {
    let mut node = Node::start(cfg, opts).await?;
    started(&node);
    tokio::select! {
        r = node.wait_ref() => r,
        () = shutdown => {
            node.stop();
            node.wait_ref().await
        }
    }
}

/// This start's epoch (wall-clock milliseconds), kept increasing across
/// restarts from one data dir (`epoch` file there) even when the clock was
/// set back, so peers that remember this node's last heartbeat hear the new
/// ones. Best effort: without a data dir, or when the file cannot be
/// written, the clock alone.
fn start_epoch(dir: Option<&std::path::Path>) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let Some(dir) = dir else { return now };
    let path = dir.join("epoch");
    let last = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let epoch = now.max(last.saturating_add(1));
    let tmp = dir.join("epoch.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(epoch.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "start epoch not kept");
    }
    epoch
}

impl Node {
    /// Loads the model and the log (off the reactor), builds the swarm,
    /// starts listening and spawns the shell and the compute thread.
    pub async fn start(cfg: Config, opts: Options) -> Result<Node, Error> {
        let (key, dir) = (opts.key.clone(), opts.data_dir.clone());
        let flip_signs = opts.flip_signs;
        let c = cfg.clone();
        let (key, origin, session, log) = tokio::task::spawn_blocking(move || {
            let key = match (key, &dir) {
                (Some(k), _) => k,
                (None, Some(dir)) => net::load_or_create_key(dir)?,
                (None, None) => Keypair::generate_ed25519(),
            };
            let origin = net::origin_of_key(&key)
                .ok_or_else(|| net::Error::Build("node key is not ed25519".into()))?;
            let (mut session, log) = Session::open(&c, origin, dir.as_deref())?;
            session.set_flip_signs(flip_signs);
            Ok::<_, Error>((key, origin, session, log))
        })
        .await
        .map_err(|e| Error::Compute(e.to_string()))??;
        start(cfg, opts, key, origin, session, log).await
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Asks the node to leave (gracefully: it announces it).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Waits for the node to finish.
    pub async fn wait(mut self) -> Result<Summary, Error> {
        self.wait_ref().await
    }

    /// Waits for the node to finish (cancel-safe; the node stays owned).
    pub async fn wait_ref(&mut self) -> Result<Summary, Error> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(Error::Compute(e.to_string())),
        }
    }

    /// Stops the node abruptly, as a crash would: no leave announcement, no
    /// flush of unpublished updates; returns once its files are closed.
    pub async fn crash(mut self) {
        let _ = self.control.send(Control::Crash).await;
        let _ = self.wait_ref().await;
    }

    /// Refuses connections with `peers` and drops current ones (a partition).
    pub async fn block(&self, peers: Vec<PeerId>) {
        let _ = self.control.send(Control::Block(peers)).await;
    }

    /// Hands the node an owner-signed record (admission or revocation, its
    /// file's bytes): checked, kept and gossiped. Ok(true) when it was news.
    pub async fn add_record(&self, bytes: Vec<u8>) -> Result<bool, String> {
        let record = crate::crdt::admit::Record::from_file_bytes(&bytes)?;
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Record(record.encode(), tx))
            .await
            .map_err(|_| "the node has stopped".to_string())?;
        rx.await.map_err(|_| "the node has stopped".to_string())?
    }

    /// Lifts a [`Node::block`] and dials the peers again.
    pub async fn unblock(&self, peers: Vec<PeerId>) {
        let _ = self.control.send(Control::Unblock(peers)).await;
    }
}

/// Commands to a running node.
#[derive(Debug)]
enum Control {
    /// Refuse connections with these peers (and drop current ones).
    Block(Vec<PeerId>),
    /// Talk to these peers again (and dial them).
    Unblock(Vec<PeerId>),
    /// Stop at once without announcing anything, as a crash would.
    Crash,
    /// Take (and gossip) a membership record; answers whether it was news.
    Record(Vec<u8>, oneshot::Sender<Result<bool, String>>),
}

/// Builds the swarm, listens, and spawns the shell and the compute thread.
async fn start(
    cfg: Config,
    opts: Options,
    key: Keypair,
    origin: Origin,
    session: Session,
    log: Log,
) -> Result<Node, Error> {
    let peer_id = key.public().to_peer_id();
    let topics = Topics::new(&log.run());
    let mut registry = Registry::default();
    let bandwidth = net::Bandwidth::register(&mut registry);
    let ed = key
        .clone()
        .try_into_ed25519()
        .map_err(|_| net::Error::Build("node key is not ed25519".into()))?;
    let mut swarm = net::build_with(
        key,
        &topics,
        opts.mdns,
        &mut registry,
        bandwidth.clone(),
        cfg.run.delta.max_bytes,
        &net::Access {
            autonat: net::probes_reachability(&opts.listen),
            ..opts.access.clone()
        },
    )?;
    // A private swarm runs on TCP alone: pnet has no QUIC.
    let mut opts = opts;
    let mut dropped = Vec::new();
    if opts.access.psk.is_some() {
        for list in [&mut opts.listen, &mut opts.bootstrap] {
            dropped.extend(list.iter().filter(|a| net::is_quic(a)).cloned());
            list.retain(|a| !net::is_quic(a));
        }
    }
    let metrics = Metrics::new(&mut registry);
    let series = Series::register(&mut registry);
    let registry = Arc::new(Mutex::new(registry));
    for addr in &opts.listen {
        swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    }
    for addr in &opts.external_addresses {
        swarm.add_external_address(addr.clone());
    }
    // Wait until every listener reports its address.
    let mut listen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listen.len() < opts.listen.len() {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => listen.push(address),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let (control_tx, control_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(Status::default());
    let history = Arc::new(Mutex::new(History::new()));
    let http_addr = match opts.http {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Listen {
                        addr: format!("http://{addr}"),
                        reason: e.to_string(),
                    })?;
            let local = listener.local_addr().ok();
            // Records posted to /records go to the shell like Node::add_record.
            let (records, mut posted) = mpsc::channel(8);
            let control = control_tx.clone();
            tokio::spawn(async move {
                while let Some((bytes, answer)) = posted.recv().await {
                    if control.send(Control::Record(bytes, answer)).await.is_err() {
                        break;
                    }
                }
            });
            let shared = http::Shared {
                registry: registry.clone(),
                status: status_rx.clone(),
                history: history.clone(),
                token: opts.http_token.clone(),
                records: Some(records),
            };
            tokio::spawn(http::serve(listener, shared));
            local
        }
        None => None,
    };
    let signer = crate::crdt::attest::Signer::new(ed, session.trainer().replica().rules().run);
    debug_assert_eq!(signer.origin(), origin);
    let settings = proto::Settings {
        signer,
        max_rate: opts.max_rate,
        publish_interval: opts.publish_interval,
        publish_max: opts.publish_max,
        heartbeat_interval: opts.heartbeat_interval,
        timing: opts.timing,
        join: opts.join,
        // Measured only when it matters: a node with an empty log joining
        // by its own choice.
        apply_rate: (log.is_empty() && opts.join == join::Mode::Auto)
            .then(crate::crdt::replica::measure_apply_rate),
        snapshot_quorum: opts.snapshot_quorum,
        min_peers: opts.min_peers,
        exit_when_settled: opts.exit_when_settled,
        settle_timeout: opts.settle_timeout,
        max_delta_bytes: cfg.run.delta.max_bytes,
        max_updates_per_origin: cfg.run.max_updates_per_origin,
        epoch_ms: start_epoch(opts.data_dir.as_deref()),
        shapes: session.trainer().shapes(),
        drop_incoming: opts.drop_incoming,
        mode: cfg.node.mode,
        owner: cfg.run.owner(),
        verify_fraction: cfg.node.verify_fraction,
        check_key: {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| {
                Error::Compute(format!("no randomness for the spot-check key: {e}"))
            })?;
            k
        },
    };
    let mut core = Core::new(settings, log, Instant::now());
    for path in &opts.records {
        let bytes = std::fs::read(path).map_err(|e| Error::Record {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let record = crate::crdt::admit::Record::from_file_bytes(&bytes)
            .and_then(|r| core.add_record(Instant::now(), &r.encode()))
            .map_err(|reason| Error::Record {
                path: path.display().to_string(),
                reason,
            });
        record?;
    }
    if cfg.run.owner.is_some() && core.own_cap() == 0 && opts.max_updates != Some(0) {
        return Err(Error::NotAdmitted {
            peer: peer_id.to_string(),
        });
    }
    let own_cap = Arc::new(AtomicU64::new(core.own_cap()));
    let held = Arc::new(AtomicU64::new(0));
    let training_peers = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(AtomicBool::new(false));
    let (to_compute, compute_rx) = smpsc::sync_channel::<ToCompute>(64);
    let (compute_tx, from_compute) = mpsc::channel::<FromCompute>(1024);
    let limits = compute::Limits {
        series: series.clone(),
        max_updates: opts.max_updates,
        duration: opts.duration,
        gate: gate.clone(),
        own_cap: own_cap.clone(),
        held: held.clone(),
        max_staleness: opts.max_staleness,
        training_peers: training_peers.clone(),
        step_peers: opts.step_peers,
    };
    let compute = std::thread::Builder::new()
        .name("seedswarm-compute".into())
        .spawn(move || compute::run(session, limits, compute_rx, compute_tx))
        .map_err(|e| Error::Compute(e.to_string()))?;
    let (done_tx, done_rx) = mpsc::channel(64);
    let shell = shell::Shell {
        mode: cfg.node.mode.to_string(),
        bootstrap: opts.bootstrap.clone(),
        data_dir: opts.data_dir.clone(),
        heartbeat: opts.heartbeat_interval,
        swarm,
        topics,
        core,
        requests: HashMap::new(),
        to_compute: Some(to_compute),
        queue: VecDeque::new(),
        gate,
        own_cap,
        held,
        training_peers,
        done_tx,
        bandwidth,
        metrics,
        series,
        status_tx,
        history,
        listen: listen.clone(),
        started: Instant::now(),
        rates: Default::default(),
        initial_eval: None,
        max_connected: 0,
        kad_bootstrapped: None,
        finished: false,
        failure: None,
        refused: Default::default(),
        nat: nat::Nat::new(&opts.relays, &opts.external_addresses),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(shell.run(stop_rx, control_rx, from_compute, done_rx, compute));
    Ok(Node {
        peer_id,
        origin,
        listen,
        http: http_addr,
        notices: notices(&opts, &dropped, http_addr),
        status: status_rx,
        control: control_tx,
        stop: Some(stop_tx),
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_from_the_validated_settings_and_bad_addresses_name_their_field() {
        let n = NodeSettings::default();
        let o = Options::default();
        assert_eq!(o.listen.len(), n.listen.len());
        assert_eq!(o.publish_max, n.publish_max);
        assert_eq!(o.heartbeat_interval, Duration::from_millis(n.heartbeat_ms));
        let bad = NodeSettings {
            bootstrap: vec!["/ip4/127.0.0.1/tcp/1".into(), "not an address".into()],
            ..NodeSettings::default()
        };
        let e = Options::from_settings(&bad).unwrap_err();
        assert!(e.contains("node.bootstrap[1]"), "{e}");
        let bad = NodeSettings {
            http: Some("localhost".into()),
            ..NodeSettings::default()
        };
        assert!(Options::from_settings(&bad)
            .unwrap_err()
            .contains("node.http"));
        // NAT settings: a relay must name its peer id; addresses are parsed.
        let relay = Keypair::generate_ed25519().public().to_peer_id();
        let good = NodeSettings {
            relays: vec![format!("/ip4/203.0.113.7/tcp/4001/p2p/{relay}")],
            external_addresses: vec!["/ip4/203.0.113.7/tcp/4001".into()],
            relay_server: true,
            ..NodeSettings::default()
        };
        let o = Options::from_settings(&good).unwrap();
        assert_eq!(o.relays[0].0, relay);
        assert_eq!(o.external_addresses.len(), 1);
        assert!(o.access.relay_server);
        for (bad, field) in [
            (
                NodeSettings {
                    relays: vec!["/ip4/203.0.113.7/tcp/4001".into()],
                    ..NodeSettings::default()
                },
                "node.relays[0] must end with the relay's /p2p/<peer id>",
            ),
            (
                NodeSettings {
                    external_addresses: vec!["203.0.113.7:4001".into()],
                    ..NodeSettings::default()
                },
                "node.external_addresses[0]",
            ),
        ] {
            let e = Options::from_settings(&bad).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn access_settings_are_read_and_bad_ones_name_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("swarm.key");
        let psk = net::psk::generate(&key).unwrap();
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let n = NodeSettings {
            psk_file: Some(key.display().to_string()),
            max_connections_per_ip: 3,
            allow: vec![peer.to_string()],
            ..NodeSettings::default()
        };
        let o = Options::from_settings(&n).unwrap();
        assert_eq!(o.access.psk, Some(psk));
        assert_eq!(o.access.limits.max_connections_per_ip, 3);
        assert_eq!(o.access.allow, vec![peer]);
        assert!(
            format!("{o:?}").contains("fingerprint"),
            "Debug shows no key"
        );
        let bad = key.with_file_name("bad.key");
        std::fs::write(&bad, "garbage").unwrap();
        for (n, field, what) in [
            (
                NodeSettings {
                    psk_file: Some(bad.display().to_string()),
                    ..NodeSettings::default()
                },
                "node.psk_file",
                bad.display().to_string(),
            ),
            (
                NodeSettings {
                    http_token_file: Some("/nonexistent/token".into()),
                    ..NodeSettings::default()
                },
                "node.http_token_file",
                "/nonexistent/token".into(),
            ),
            (
                NodeSettings {
                    deny: vec![peer.to_string(), "12D3KooWnope".into()],
                    ..NodeSettings::default()
                },
                "node.deny[1]",
                "12D3KooWnope".into(),
            ),
            (
                NodeSettings {
                    max_pending: 0,
                    ..NodeSettings::default()
                },
                "node.max_pending",
                "at least 1".into(),
            ),
        ] {
            let e = Options::from_settings(&n).unwrap_err();
            assert!(e.contains(field) && e.contains(&what), "{field}: {e}");
        }
    }

    #[test]
    fn start_up_notices_say_what_is_exposed() {
        let psk = net::PreSharedKey::new([3; 32]);
        let quic: Multiaddr = "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap();
        let open: std::net::SocketAddr = "0.0.0.0:9100".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let o = Options {
            mdns: true,
            ..Options::default()
        };
        let n = notices(&o, &[], Some(open));
        assert_eq!(
            n,
            [
                "mDNS on: this node announces itself on the local network (node.mdns = false or --no-mdns to stop)",
                "HTTP on 0.0.0.0:9100 without a token: anyone who can reach it reads status and metrics; set node.http_token_file",
            ]
        );
        assert!(notices(
            &Options {
                mdns: false,
                ..o.clone()
            },
            &[],
            Some(local)
        )
        .is_empty());
        let private = Options {
            access: net::Access {
                psk: Some(psk),
                deny: vec![Keypair::generate_ed25519().public().to_peer_id()],
                ..net::Access::default()
            },
            http_token: Some(http::Token::new("0123456789abcdef")),
            ..o
        };
        let n = notices(&private, std::slice::from_ref(&quic), Some(open));
        assert_eq!(
            n[0],
            format!(
                "private swarm: psk fingerprint {} (QUIC off)",
                psk.fingerprint()
            )
        );
        assert!(
            n[1].starts_with("QUIC off because of the pre-shared key")
                && n[1].ends_with("/ip4/0.0.0.0/udp/0/quic-v1"),
            "{}",
            n[1]
        );
        assert!(
            n[2].starts_with("mDNS on:")
                && n[2].ends_with("peers without the pre-shared key cannot connect"),
            "{}",
            n[2]
        );
        assert_eq!(n[3], "deny list: 1 peer(s) refused (node.deny)");
        assert_eq!(
            n[4],
            "HTTP on 0.0.0.0:9100 requires a bearer token (node.http_token_file)"
        );
        assert_eq!(n.len(), 5);
    }
}
