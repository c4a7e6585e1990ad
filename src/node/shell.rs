//! The network shell: owns the libp2p `Swarm`, turns its events into
//! [`Input`]s of the protocol core and executes the core's [`Output`]s —
//! publishing, requests, answers, verdicts, handing work to the compute
//! thread — plus what only a real node has: dialing, Kademlia and mDNS
//! bookkeeping, metrics, the status it publishes, and files for kept
//! snapshot chunks. It decides nothing about the protocol.

use super::compute::{self, FromCompute, ToCompute};
use super::report::{self, Status, Summary};
use super::{Control, Error, Node, Options};
use crate::config::Config;
use crate::http;
use crate::log::Log;
use crate::metrics::Series;
use crate::model::Eval;
use crate::net::{self, wire, Behaviour, BehaviourEvent, Topics};
use crate::proto::{self, Core, Event, Input, Output, Verdict};
use crate::seed::{hex, Origin};
use crate::snapshot::{self, Snapshot};
use crate::train::Session;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::metrics::{Metrics, Recorder, Registry};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, mdns, request_response, Multiaddr, PeerId, Swarm};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

type Channel = request_response::ResponseChannel<wire::Response>;
type NodeCore = Core<PeerId, gossipsub::MessageId, Channel>;

/// Results of work done on blocking threads, fed back to the core.
enum Done {
    Snapshot(Arc<Snapshot>),
    Kept {
        id: [u8; 32],
        index: u32,
        data: Vec<u8>,
    },
}

/// Builds the swarm, listens, and spawns the shell and the compute thread.
pub(super) async fn start(
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
            let shared = http::Shared {
                registry: registry.clone(),
                status: status_rx.clone(),
            };
            tokio::spawn(http::serve(listener, shared));
            local
        }
        None => None,
    };
    let settings = proto::Settings {
        origin,
        max_rate: opts.max_rate,
        publish_interval: opts.publish_interval,
        publish_max: opts.publish_max,
        heartbeat_interval: opts.heartbeat_interval,
        timing: opts.timing,
        join: opts.join,
        min_peers: opts.min_peers,
        exit_when_settled: opts.exit_when_settled,
        settle_timeout: opts.settle_timeout,
        max_delta_bytes: cfg.run.delta.max_bytes,
        shapes: session.trainer().shapes(),
        drop_incoming: opts.drop_incoming,
    };
    let core = Core::new(settings, log, Instant::now());
    let gate = Arc::new(AtomicBool::new(false));
    let (to_compute, compute_rx) = smpsc::sync_channel::<ToCompute>(64);
    let (compute_tx, from_compute) = mpsc::channel::<FromCompute>(1024);
    let limits = compute::Limits {
        series: series.clone(),
        max_updates: opts.max_updates,
        duration: opts.duration,
        gate: gate.clone(),
    };
    let compute = std::thread::Builder::new()
        .name("seedswarm-compute".into())
        .spawn(move || compute::run(session, limits, compute_rx, compute_tx))
        .map_err(|e| Error::Compute(e.to_string()))?;
    let (done_tx, done_rx) = mpsc::channel(64);
    let shell = Shell {
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
        done_tx,
        registry,
        metrics,
        series,
        status_tx,
        listen: listen.clone(),
        started: Instant::now(),
        last_rate: None,
        initial_eval: None,
        max_connected: 0,
        finished: false,
        failure: None,
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let (control_tx, control_rx) = mpsc::channel(16);
    let task = tokio::spawn(shell.run(stop_rx, control_rx, from_compute, done_rx, compute));
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

struct Shell {
    mode: String,
    bootstrap: Vec<Multiaddr>,
    data_dir: Option<PathBuf>,
    heartbeat: Duration,
    swarm: Swarm<Behaviour>,
    topics: Topics,
    core: NodeCore,
    requests: HashMap<request_response::OutboundRequestId, u64>,
    to_compute: Option<smpsc::SyncSender<ToCompute>>,
    /// Work for the compute thread that did not fit its channel yet.
    queue: VecDeque<ToCompute>,
    gate: Arc<AtomicBool>,
    done_tx: mpsc::Sender<Done>,
    registry: Arc<Mutex<Registry>>,
    metrics: Metrics,
    series: Series,
    status_tx: watch::Sender<Status>,
    listen: Vec<Multiaddr>,
    started: Instant,
    last_rate: Option<(Instant, u64, u64, u64)>,
    initial_eval: Option<Eval>,
    max_connected: usize,
    finished: bool,
    failure: Option<String>,
}

impl Shell {
    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut control: mpsc::Receiver<Control>,
        mut from_compute: mpsc::Receiver<FromCompute>,
        mut done_rx: mpsc::Receiver<Done>,
        compute: std::thread::JoinHandle<Option<Eval>>,
    ) -> Result<Summary, Error> {
        for addr in self.bootstrap.clone() {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap address");
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status = tokio::time::interval(self.heartbeat);
        let mut crashed = false;
        while !self.finished && self.failure.is_none() {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(cmd) = control.recv() => match cmd {
                    Control::Crash => { crashed = true; break; }
                    Control::Block(peers) => for p in peers {
                        self.swarm.behaviour_mut().blocked.block_peer(p);
                        self.input(Input::Forget(p));
                    },
                    Control::Unblock(peers) => for p in peers {
                        self.swarm.behaviour_mut().blocked.unblock_peer(p);
                        if let Err(e) = self.swarm.dial(p) {
                            tracing::debug!(peer = %p, error = %e, "redial failed");
                        }
                    },
                },
                _ = tick.tick() => self.input(Input::Tick),
                _ = status.tick() => {
                    self.publish_status();
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(msg) = from_compute.recv() => self.on_compute(msg),
                Some(done) = done_rx.recv() => match done {
                    Done::Snapshot(s) => self.input(Input::Snapshot(s)),
                    Done::Kept { id, index, data } => self.input(Input::KeptChunk { id, index, data }),
                },
            }
        }
        // Leave: announce (unless crashing), stop compute, collect the final evaluation.
        if !crashed {
            self.input(Input::Leave);
        }
        self.to_compute = None;
        let linger = Duration::from_millis(if crashed { 0 } else { 300 });
        let until = tokio::time::Instant::now() + linger;
        while let Ok(event) = tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
            self.on_swarm_event(event);
        }
        while let Some(msg) = from_compute.recv().await {
            if let FromCompute::State(st) = msg {
                self.core.handle(Instant::now(), Input::State(st));
            }
        }
        let last = tokio::task::spawn_blocking(move || compute.join())
            .await
            .map_err(|e| Error::Compute(e.to_string()))?
            .map_err(|_| Error::Compute("compute thread panicked".into()))?;
        if let Some(e) = self.failure.take() {
            return Err(Error::Compute(e));
        }
        let status = self.publish_status();
        Ok(report::summary(
            &self.core,
            status,
            self.initial_eval,
            last,
            self.max_connected,
            self.started.elapsed().as_secs_f64(),
        ))
    }

    /// Hands an input to the core and executes what it asks for.
    fn input(&mut self, input: Input<PeerId, gossipsub::MessageId, Channel>) {
        self.core.handle(Instant::now(), input);
        while let Some(out) = self.core.poll() {
            self.execute(out);
        }
        self.feed_compute();
    }

    fn execute(&mut self, out: Output<PeerId, gossipsub::MessageId, Channel>) {
        match out {
            Output::Publish { topic, data, end } => {
                let hash = self.topics.hash(topic);
                match self.swarm.behaviour_mut().gossipsub.publish(hash, data) {
                    Ok(_) => {
                        if let Some(end) = end {
                            self.core.handle(Instant::now(), Input::Published { end });
                        }
                    }
                    // Peers repair from heartbeats; nothing is lost.
                    Err(e) => tracing::debug!(?topic, error = %e, "publish deferred to repair"),
                }
            }
            Output::Verdict { id, from, verdict } => {
                let v = match verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Reject => MessageAcceptance::Reject,
                    Verdict::Ignore => MessageAcceptance::Ignore,
                };
                let g = &mut self.swarm.behaviour_mut().gossipsub;
                g.report_message_validation_result(&id, &from, v);
            }
            Output::Send { to, tag, request } => {
                let id = self.swarm.behaviour_mut().sync.send_request(&to, request);
                self.requests.insert(id, tag);
            }
            Output::Respond { channel, response } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!("sync response not sent: channel closed");
                }
            }
            Output::MakeSnapshot => self.queue.push_back(ToCompute::Image),
            Output::Install { chunks, hashes } => {
                self.queue.push_back(ToCompute::Install(chunks, hashes));
            }
            Output::KeepChunk { id, index, data } => {
                if let Some(dir) = &self.data_dir {
                    let d = dir.join("snapshot").join(hex(&id));
                    tokio::task::spawn_blocking(move || {
                        let _ = std::fs::create_dir_all(&d)
                            .and_then(|()| std::fs::write(d.join(index.to_string()), data));
                    });
                }
            }
            Output::Resume { id, chunks } => {
                if let Some(dir) = &self.data_dir {
                    let d = dir.join("snapshot").join(hex(&id));
                    let tx = self.done_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        for index in 0..chunks as u32 {
                            if let Ok(data) = std::fs::read(d.join(index.to_string())) {
                                let _ = tx.blocking_send(Done::Kept { id, index, data });
                            }
                        }
                    });
                }
            }
            Output::StartTraining => {
                tracing::info!(peers = self.core.peers().len(), "training starts");
                self.gate.store(true, Ordering::Release);
            }
            Output::Finished { settled } => {
                if !settled {
                    tracing::warn!("stopping before the swarm agreed");
                }
                self.finished = true;
            }
            Output::Event(e) => self.event(e),
        }
    }

    fn event(&mut self, e: Event<PeerId>) {
        let s = &self.series;
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
            Event::DigestMismatch(peer) => {
                s.digest_mismatches.inc();
                tracing::error!(%peer, "digest mismatch at an equal version vector");
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

    /// Hands queued work, then stored updates, to the compute thread while it has room.
    fn feed_compute(&mut self) {
        let Some(tx) = &self.to_compute else { return };
        loop {
            let msg = match self.queue.pop_front() {
                Some(m) => m,
                None => match self.core.next_apply(4096) {
                    Some(segment) => ToCompute::Apply(segment),
                    None => return,
                },
            };
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(smpsc::TrySendError::Full(m)) => {
                    self.queue.push_front(m);
                    return;
                }
                Err(smpsc::TrySendError::Disconnected(_)) => return,
            }
        }
    }

    fn on_compute(&mut self, msg: FromCompute) {
        match msg {
            FromCompute::Made(made) => {
                let made = *made;
                self.input(Input::Own {
                    seq: made.seq,
                    update: made.update,
                });
            }
            FromCompute::State(st) => {
                if self.initial_eval.is_none() {
                    self.initial_eval = st.eval;
                }
                self.input(Input::State(st));
            }
            FromCompute::Image(image) => {
                // δ from compute, the log's prefix from the core; encoded off the reactor.
                let prefix: Vec<snapshot::LogEntries> = self
                    .core
                    .log()
                    .prefix(&image.vv)
                    .into_iter()
                    .map(|s| {
                        (
                            s.origin,
                            s.codes,
                            s.payloads.iter().map(|p| p.to_vec()).collect(),
                        )
                    })
                    .collect();
                let tx = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let deltas: Vec<&[i32]> = image.deltas.iter().map(Vec::as_slice).collect();
                    let s = snapshot::encode(&deltas, &image.vv, image.digest, prefix);
                    tracing::info!(chunks = s.chunks.len(), "snapshot made");
                    let _ = tx.blocking_send(Done::Snapshot(Arc::new(s)));
                });
            }
            FromCompute::Installed(r) => self.input(Input::Installed(r)),
            FromCompute::Failed(e) => self.failure = Some(e),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(ev)) => {
                self.metrics.record(&ev);
                if let gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                } = ev
                {
                    let topic = self.topics.topic(&message.topic);
                    self.input(Input::Gossip {
                        id: message_id,
                        from: propagation_source,
                        source: message.source,
                        topic,
                        data: message.data,
                    });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(ev)) => {
                self.metrics.record(&ev);
                if let identify::Event::Received { peer_id, info, .. } = ev {
                    for addr in info.listen_addrs {
                        if is_dialable(&addr) {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ev)) => self.metrics.record(&ev),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.metrics.record(&ev),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                for (peer, addr) in list {
                    if !self.swarm.is_connected(&peer) {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer, addr.clone());
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                tracing::debug!(peer = %peer_id, "connected");
                self.max_connected = self.max_connected.max(self.swarm.connected_peers().count());
                if self.swarm.behaviour_mut().kad.bootstrap().is_err() {
                    tracing::trace!("kademlia has no peers yet");
                }
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listen.contains(&address) => {
                self.listen.push(address);
            }
            _ => {}
        }
    }

    fn on_sync(&mut self, ev: request_response::Event<wire::Request, wire::Response>) {
        use request_response::{Event as E, Message};
        match ev {
            E::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.input(Input::Request {
                    from: peer,
                    request,
                    channel,
                });
            }
            E::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(tag) = self.requests.remove(&request_id) {
                    self.input(Input::Response {
                        from: peer,
                        tag,
                        response,
                    });
                }
            }
            E::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "sync request failed");
                if let Some(tag) = self.requests.remove(&request_id) {
                    self.input(Input::RequestFailed { tag });
                }
            }
            _ => {}
        }
    }

    /// Publishes (and returns) the node's status; also writes `status.json`.
    fn publish_status(&mut self) -> Status {
        let bytes = bandwidth(&self.registry.lock().unwrap_or_else(|e| e.into_inner()));
        let now = Instant::now();
        let applied = self.core.state().map_or(0, |s| s.applied);
        let mut rates = (0.0, 0.0, 0.0);
        if let Some((t, a, bi, bo)) = self.last_rate {
            let dt = now.duration_since(t).as_secs_f64().max(1e-3);
            rates = (
                applied.saturating_sub(a) as f64 / dt,
                bytes.0.saturating_sub(bi) as f64 / dt,
                bytes.1.saturating_sub(bo) as f64 / dt,
            );
        }
        self.last_rate = Some((now, applied, bytes.0, bytes.1));
        let mesh_peers = self
            .swarm
            .behaviour()
            .gossipsub
            .mesh_peers(&self.topics.updates.hash())
            .count();
        let status = report::status(
            &self.core,
            report::Swarm {
                peer_id: self.swarm.local_peer_id().to_string(),
                mode: self.mode.clone(),
                listen: self.listen.iter().map(|a| a.to_string()).collect(),
                connected: self.swarm.connected_peers().count(),
                mesh_peers,
                bytes,
                uptime_s: now.duration_since(self.started).as_secs_f64(),
                rates,
            },
        );
        let s = &self.series;
        s.peers.set(status.peers as i64);
        s.mesh_peers.set(mesh_peers as i64);
        s.backlog.set(status.backlog as i64);
        s.updates_applied.set(applied as i64);
        s.version_vector_lag.set(self.core.lag() as i64);
        if let Some(st) = self.core.state() {
            s.loss.set(f64::from(st.loss));
            if let Some(e) = st.eval {
                s.accuracy.set(e.accuracy());
            }
        }
        if let Some(dir) = &self.data_dir {
            if let Ok(text) = serde_json::to_string_pretty(&status) {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    let tmp = dir.join("status.json.tmp");
                    if std::fs::write(&tmp, text).is_ok() {
                        let _ = std::fs::rename(&tmp, dir.join("status.json"));
                    }
                });
            }
        }
        self.status_tx.send_replace(status.clone());
        status
    }
}

fn is_dialable(addr: &Multiaddr) -> bool {
    !addr
        .iter()
        .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified()))
}

/// Total inbound and outbound bytes from the libp2p bandwidth counters.
fn bandwidth(registry: &Registry) -> (u64, u64) {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return (0, 0);
    }
    let (mut inb, mut out) = (0u64, 0u64);
    for line in text.lines() {
        if !line.starts_with("libp2p_bandwidth_bytes_total{") {
            continue;
        }
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if line.contains("direction=\"Inbound\"") {
            inb += value;
        } else if line.contains("direction=\"Outbound\"") {
            out += value;
        }
    }
    (inb, out)
}
