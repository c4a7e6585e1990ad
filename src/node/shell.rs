//! The network shell: owns the libp2p `Swarm`, turns its events into
//! [`Input`]s of the protocol core and executes the core's [`Output`]s —
//! publishing, requests, answers, verdicts, handing work to the compute
//! thread — plus what only a real node has: dialing, Kademlia and mDNS
//! bookkeeping, metrics, the status it publishes, and files for kept
//! snapshot chunks. It decides nothing about the protocol.

use super::blocking::{self, Done};
use super::compute::{FromCompute, ToCompute};
use super::report::{self, Status, Summary};
use super::{Control, Error};
use crate::model::Eval;
use crate::net::{self, wire, Behaviour, BehaviourEvent, Topics};
use crate::obs::history::History;
use crate::obs::metrics::Series;
use crate::proto::{Core, Input, Output, Verdict};
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::metrics::{Metrics, Recorder};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, mdns, request_response, Multiaddr, PeerId, Swarm};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Kademlia is bootstrapped from a new connection at most this often.
const KAD_BOOTSTRAP_EVERY: Duration = Duration::from_secs(30);

pub(super) type Channel = request_response::ResponseChannel<wire::Response>;
type NodeCore = Core<PeerId, gossipsub::MessageId, Channel>;

pub(super) struct Shell {
    pub(super) mode: String,
    pub(super) bootstrap: Vec<Multiaddr>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) heartbeat: Duration,
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) topics: Topics,
    pub(super) core: NodeCore,
    pub(super) requests: HashMap<request_response::OutboundRequestId, u64>,
    pub(super) to_compute: Option<smpsc::SyncSender<ToCompute>>,
    /// Work for the compute thread that did not fit its channel yet.
    pub(super) queue: VecDeque<ToCompute>,
    pub(super) gate: Arc<AtomicBool>,
    /// First own seq that counts nowhere (shared with the compute thread).
    pub(super) own_cap: Arc<AtomicU64>,
    /// Contiguous updates the log holds that count, for the compute
    /// thread's staleness bound.
    pub(super) held: Arc<AtomicU64>,
    /// Live peers whose last heartbeat says they still train.
    pub(super) training_peers: Arc<AtomicU64>,
    pub(super) done_tx: mpsc::Sender<Done>,
    pub(super) bandwidth: net::Bandwidth,
    pub(super) metrics: Metrics,
    pub(super) series: Series,
    pub(super) status_tx: watch::Sender<Status>,
    /// Shared with the HTTP server (`/history`).
    pub(super) history: Arc<Mutex<History>>,
    pub(super) listen: Vec<Multiaddr>,
    pub(super) started: Instant,
    pub(super) rates: report::Rates,
    pub(super) initial_eval: Option<Eval>,
    pub(super) max_connected: usize,
    /// When Kademlia was last bootstrapped from here.
    pub(super) kad_bootstrapped: Option<Instant>,
    pub(super) finished: bool,
    pub(super) failure: Option<String>,
    /// Connections refused or failed in their handshake, by reason.
    pub(super) refused: std::collections::BTreeMap<String, u64>,
    /// Relays, reachability, relayed connections.
    pub(super) nat: super::nat::Nat,
}

impl Shell {
    pub(super) async fn run(
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
                    Control::Record(bytes, answer) => {
                        let r = self.core.add_record(Instant::now(), &bytes);
                        while let Some(out) = self.core.poll() {
                            self.execute(out);
                        }
                        self.feed_compute();
                        let _ = answer.send(r);
                    }
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
                _ = tick.tick() => {
                    self.input(Input::Tick);
                    self.share_progress();
                }
                _ = status.tick() => {
                    let now = Instant::now();
                    self.nat.maintain(&mut self.swarm, now);
                    // Collected only when the node knows relays.
                    self.nat.reach_peers(&mut self.swarm, self.core.peers().keys().copied(), now);
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
            Output::MakeSnapshot { target, retract } => {
                self.queue.push_back(ToCompute::Image(target, retract));
            }
            Output::KeepBases {
                origin,
                first_seq,
                n,
                bases,
            } => {
                self.queue
                    .push_back(ToCompute::KeepBases(origin, first_seq, n, bases));
            }
            Output::Check {
                origin,
                seq,
                code,
                target,
                retract,
            } => {
                self.queue.push_back(ToCompute::Check {
                    origin,
                    seq,
                    code,
                    target,
                    retract,
                });
            }
            Output::Install {
                chunks,
                hashes,
                vv,
                digest,
            } => {
                self.queue
                    .push_back(ToCompute::Install(chunks, hashes, vv, digest));
            }
            Output::KeepChunk { id, index, data } => {
                if let Some(dir) = &self.data_dir {
                    blocking::keep_chunk(dir, id, index, data);
                }
            }
            Output::Resume { id, chunks } => {
                if let Some(dir) = &self.data_dir {
                    blocking::prune_chunks(dir, Some(id));
                    blocking::resume(dir, id, chunks, self.done_tx.clone());
                }
            }
            Output::Ban { peer, reason } => {
                tracing::warn!(%peer, reason, "peer banned");
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            Output::Excluded {
                origin,
                from,
                proof,
            } => self
                .queue
                .push_back(ToCompute::Exclude(origin, from, proof)),
            Output::Admitted(record) => self.queue.push_back(ToCompute::Admit(record)),
            Output::OwnCap { end } => {
                if end < u64::MAX {
                    tracing::warn!(
                        end,
                        "this node's own updates count only below this seq (its admission ends or the owner revoked it): it trains no further"
                    );
                }
                self.own_cap.store(end, Ordering::Release);
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
            Output::Event(e) => report::record(&self.series, e),
        }
    }

    /// Tells the compute thread, once per tick (not per message), what its
    /// staleness bound and step size read: the contiguous updates that
    /// count (what the replica holds once everything handed out is
    /// applied; data behind gaps is not counted, so a peer publishing
    /// far-ahead seqs cannot stall steps) and the live peers still training.
    fn share_progress(&self) {
        let held: u64 = self.core.log().heads().map(|(_, n)| n).sum();
        self.held.store(held, Ordering::Release);
        let training = self.core.peers().values().filter(|v| !v.done).count();
        self.training_peers
            .store(training as u64, Ordering::Release);
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
                    basis: made.basis,
                });
            }
            FromCompute::State(st) => {
                if self.initial_eval.is_none() {
                    self.initial_eval = st.eval;
                }
                self.input(Input::State(st));
            }
            FromCompute::Image(Ok(image)) => {
                // δ from compute, the log's prefix from the core.
                let prefix = self.core.log().prefix(&image.vv);
                blocking::snapshot(*image, prefix, self.done_tx.clone());
            }
            FromCompute::Image(Err(reason)) => self.input(Input::SnapshotFailed(reason)),
            FromCompute::Installed(r) => {
                if let Some(dir) = &self.data_dir {
                    blocking::prune_chunks(dir, None);
                }
                self.input(Input::Installed(r));
            }
            FromCompute::Checked {
                origin,
                seq,
                result,
            } => self.input(Input::Checked {
                origin,
                seq,
                result,
            }),
            FromCompute::Failed(e) => self.failure = Some(e),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&event);
        if let Some((peer, only)) = self.nat.on_event(&mut self.swarm, &self.series, &event) {
            self.input(Input::Relayed { peer, only });
        }
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
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(ev)) => self.metrics.record(&ev),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(ev)) => self.metrics.record(&ev),
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
                // Not on every connection: each bootstrap is a walk of
                // every k-bucket, and in a swarm of 16 that was ~70% of
                // all wire bytes. Kademlia refreshes by itself after.
                let due = self
                    .kad_bootstrapped
                    .is_none_or(|t| t.elapsed() >= KAD_BOOTSTRAP_EVERY);
                if due {
                    self.kad_bootstrapped = Some(Instant::now());
                    if self.swarm.behaviour_mut().kad.bootstrap().is_err() {
                        tracing::trace!("kademlia has no peers yet");
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listen.contains(&address) => {
                self.listen.push(address);
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                let reason = match &error {
                    libp2p::swarm::ListenError::Denied { cause } => {
                        net::limits::denial_reason(cause)
                    }
                    libp2p::swarm::ListenError::Transport(_) => "handshake_failed",
                    _ => return,
                };
                tracing::debug!(from = %send_back_addr, reason, %error, "inbound connection refused");
                *self.refused.entry(reason.to_string()).or_default() += 1;
            }
            SwarmEvent::OutgoingConnectionError {
                error: libp2p::swarm::DialError::Denied { cause },
                peer_id,
                ..
            } => {
                let reason = net::limits::denial_reason(&cause);
                tracing::debug!(peer = ?peer_id, reason, "dial refused");
                *self.refused.entry(reason.to_string()).or_default() += 1;
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

    /// Publishes (and returns) the node's status, adds it to the history and
    /// writes `status.json`.
    fn publish_status(&mut self) -> Status {
        let bytes = self.bandwidth.totals();
        let now = Instant::now();
        let applied = self.core.state().map_or(0, |s| s.applied);
        let g = &self.swarm.behaviour().gossipsub;
        let mesh_peers = g.mesh_peers(&self.topics.updates.hash()).count();
        let swarm = report::Swarm {
            peer_id: self.swarm.local_peer_id().to_string(),
            mode: self.mode.clone(),
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
            connected: self.swarm.connected_peers().count(),
            mesh_peers,
            bytes,
            uptime_s: now.duration_since(self.started).as_secs_f64(),
            rates: self.rates.sample(now, applied, bytes),
            refused: self.refused.clone(),
            reachability: self.nat.report(&self.listen),
        };
        let status = report::status(&self.core, swarm, now);
        report::gauges(&self.series, &self.core, &status);
        if let Some(dir) = &self.data_dir {
            report::write_json(dir.clone(), &status);
        }
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&status);
        self.status_tx.send_replace(status.clone());
        status
    }
}

fn is_dialable(addr: &Multiaddr) -> bool {
    !addr
        .iter()
        .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified()))
}
