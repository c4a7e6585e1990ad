//! A swarm node: one actor owns the libp2p `Swarm`; ZO compute runs on its
//! own thread; protocol decisions live in [`crate::net::sync`].
//!
//! The network loop validates every gossip message before it is forwarded,
//! keeps an in-memory mirror of the update log (what has been *received*) to
//! serve range requests and plan repairs, batches this node's own updates into
//! one signed gossip message per interval, and heartbeats the replica's
//! version vector and digest. The compute thread owns the [`Trainer`]
//! (model, replica, persisted log) and applies whatever becomes contiguous.

use crate::config::Config;
use crate::http;
use crate::log::Log;
use crate::metrics::Series;
use crate::model::Eval;
use crate::net::join;
use crate::net::sync::{self, PeerView};
use crate::net::wire::{self, Heartbeat};
use crate::net::{self, Behaviour, BehaviourEvent, Topics};
use crate::replica::VersionVector;
use crate::seed::{hex, Origin};
use crate::snapshot::Snapshot;
use crate::train::{self, Trainer};
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::metrics::{Metrics, Recorder, Registry};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, mdns, request_response, Multiaddr, PeerId, Swarm};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

mod actor;
mod compute;

use actor::Actor;
/// Errors of a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network setup failed.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// Training setup or a step failed.
    #[error(transparent)]
    Train(#[from] train::Error),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    /// The compute thread stopped unexpectedly.
    #[error("compute thread failed: {0}")]
    Compute(String),
}

/// How a node runs (beyond the config file).
#[derive(Clone, Debug)]
pub struct Options {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (and add to Kademlia).
    pub bootstrap: Vec<Multiaddr>,
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
    /// Repair timing.
    pub timing: sync::Timing,
    /// Most updates per second accepted from one origin.
    pub max_rate: f64,
    /// Test hook: fraction of incoming update messages to drop unseen.
    pub drop_incoming: f64,
    /// Exit once training is over and the swarm agrees (false: serve until stopped).
    pub exit_when_settled: bool,
    /// Serve /metrics, /status and the dashboard here.
    pub http: Option<std::net::SocketAddr>,
    /// How a node with an empty log catches up.
    pub join: join::Mode,
}

impl Options {
    /// Options from a config's `[node]` section plus command-line choices.
    pub fn from_config(
        cfg: &Config,
        data_dir: Option<PathBuf>,
        max_updates: Option<u64>,
        duration: Option<Duration>,
        serve: bool,
    ) -> Self {
        let n = &cfg.node;
        Self {
            listen: n.listen.iter().filter_map(|a| a.parse().ok()).collect(),
            bootstrap: n.bootstrap.iter().filter_map(|a| a.parse().ok()).collect(),
            data_dir,
            key: None,
            max_updates,
            duration,
            min_peers: n.min_peers,
            mdns: n.mdns,
            settle_timeout: Duration::from_secs(n.settle_timeout_s),
            publish_interval: Duration::from_millis(n.publish_ms),
            publish_max: n.publish_max,
            heartbeat_interval: Duration::from_millis(n.heartbeat_ms),
            timing: sync::Timing::default(),
            max_rate: n.max_rate,
            drop_incoming: 0.0,
            exit_when_settled: !serve,
            http: n.http.as_deref().and_then(|a| a.parse().ok()),
            join: join::Mode::Auto,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            data_dir: None,
            key: None,
            max_updates: None,
            duration: None,
            min_peers: 0,
            mdns: true,
            settle_timeout: Duration::from_secs(120),
            publish_interval: Duration::from_millis(250),
            publish_max: 256,
            heartbeat_interval: Duration::from_millis(1000),
            timing: sync::Timing::default(),
            max_rate: 50_000.0,
            drop_incoming: 0.0,
            exit_when_settled: true,
            http: None,
            join: join::Mode::Auto,
        }
    }
}

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
    status: watch::Receiver<Status>,
    control: mpsc::Sender<Control>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Summary, Error>>,
}

impl Node {
    /// Builds the node, starts listening and spawns its actor.
    pub async fn start(cfg: Config, opts: Options) -> Result<Node, Error> {
        let key = match (&opts.key, &opts.data_dir) {
            (Some(k), _) => k.clone(),
            (None, Some(dir)) => net::load_or_create_key(dir)?,
            (None, None) => Keypair::generate_ed25519(),
        };
        let origin = net::origin_of_key(&key)
            .ok_or_else(|| net::Error::Build("node key is not ed25519".into()))?;
        let peer_id = key.public().to_peer_id();
        // Build the trainer and load the data here so setup errors surface
        // before anything runs.
        let trainer = Trainer::new(&cfg, origin, opts.data_dir.as_deref())?;
        train::try_build_data(&cfg.run)?;
        let run = trainer.run();
        let topics = Topics::new(&run);
        let mut registry = Registry::default();
        let mut swarm = net::build(key, &topics, opts.mdns, &mut registry)?;
        let metrics = Metrics::new(&mut registry);
        let series = Series::register(&mut registry);
        let registry = Arc::new(Mutex::new(registry));
        for addr in &opts.listen {
            swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
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
        let mut mirror = Log::in_memory(run);
        for (o, n) in trainer.log().version_vector() {
            let codes = trainer.log().range(&o, 0, n).to_vec();
            let _ = mirror.insert(o, 0, &codes);
        }
        let (status_tx, status_rx) = watch::channel(Status::default());
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
                tokio::spawn(http::serve(
                    listener,
                    http::Shared {
                        registry: registry.clone(),
                        status: status_rx.clone(),
                    },
                ));
                local
            }
            None => None,
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let (control_tx, control_rx) = mpsc::channel(16);
        let actor = Actor::new(
            cfg,
            opts,
            trainer,
            swarm,
            topics,
            mirror,
            (registry, metrics, series),
            status_tx,
            listen.clone(),
        );
        let task = tokio::spawn(actor.run(stop_rx, control_rx));
        Ok(Node {
            peer_id,
            origin,
            listen,
            http: http_addr,
            status: status_rx,
            control: control_tx,
            stop: Some(stop_tx),
            task,
        })
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
}
