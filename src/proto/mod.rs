//! The protocol core: every decision of the swarm protocol as a state machine
//! with no sockets, files or clocks inside (time is an input), in the style of
//! iroh-gossip's `proto`.
//!
//! [`Core::handle`] takes an [`Input`] — a gossip message, a sync request or
//! response, a timer tick, an own update or the state of the compute thread —
//! and queues [`Output`]s: publish, send a request, answer one, report a
//! validation verdict, make or install a snapshot, events for metrics. What
//! became contiguous in the log is pulled with [`Core::next_apply`]. The
//! network shell ([`crate::node`]) translates libp2p events into inputs and
//! executes outputs; the simulator in `tests/sim` drives many cores over a
//! simulated network.
//!
//! Where things happen:
//! - a gossip batch is judged in [`gossip`] (`Core::on_updates`,
//!   `Core::on_delta_announce`, `Core::on_heartbeat`);
//! - it is stored in the one update [`Log`] of the node, owned here
//!   (`Core::accept`), and handed to be applied by [`Core::next_apply`];
//! - it is applied to the replica (and appended to the log's file) by the
//!   compute side ([`crate::train::Session::apply`]).
//!
//! The core is generic over the peer type `P` (libp2p's `PeerId` in the node,
//! small integers in the simulator), the gossip message id `M` and the
//! response channel `C`.

pub mod join;
pub mod repair;

mod gossip;
mod serve;

use crate::log::{Log, Payload, Segment};
use crate::model::Eval;
use crate::net::wire::{self, Heartbeat};
use crate::replica::VersionVector;
use crate::seed::Origin;
use crate::snapshot::Snapshot;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use join::Join;
pub use repair::{PeerView, Repair, Timing};

/// A peer of the swarm, as the core sees it.
pub trait Peer: Clone + Eq + Hash + Ord + Debug {
    /// The origin whose updates this peer signs, when its identity is one
    /// (an ed25519 key).
    fn origin(&self) -> Option<Origin>;
}

/// The gossip topics of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One-byte update batches.
    Updates,
    /// Heartbeats.
    Status,
    /// Delta announcements.
    Deltas,
}

/// A validation verdict for gossipsub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop and penalize the forwarder.
    Reject,
    /// Drop without penalty (duplicate, unknown version, busy).
    Ignore,
}

/// An own update, as the compute side produced it.
#[derive(Clone, Debug)]
pub enum Own {
    /// A one-byte update.
    Code(u8),
    /// A compressed sparse delta (its code in the log is [`crate::log::DELTA`]).
    Delta(Payload),
}

/// What the compute side reports about the replica.
#[derive(Clone, Debug, Default)]
pub struct ComputeState {
    /// Version vector of the replica (what is applied).
    pub vv: VersionVector,
    /// Digest of `δ` at `vv`.
    pub digest: [u8; 32],
    /// Updates applied.
    pub applied: u64,
    /// Own updates made.
    pub own: u64,
    /// Recent training loss (moving average; NaN when unknown).
    pub loss: f32,
    /// Latest evaluation.
    pub eval: Option<Eval>,
    /// Training has stopped for good.
    pub training_done: bool,
}

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node's origin.
    pub origin: Origin,
    /// Most updates per second accepted from one origin (burst of two seconds).
    pub max_rate: f64,
    /// Own one-byte updates are published once per interval...
    pub publish_interval: Duration,
    /// ... or as soon as this many are waiting.
    pub publish_max: usize,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Repair timing.
    pub timing: Timing,
    /// How a node with an empty log catches up.
    pub join: join::Mode,
    /// Start training only once this many peers have been heard from.
    pub min_peers: usize,
    /// Finish once training is over and the swarm agrees (or after `settle_timeout`).
    pub exit_when_settled: bool,
    /// After training, wait at most this long for the swarm to agree.
    pub settle_timeout: Duration,
    /// Largest delta payload accepted (`run.delta.max_bytes`).
    pub max_delta_bytes: usize,
    /// Trainable tensors (name, length): what a delta may touch.
    pub shapes: Vec<(String, u64)>,
    /// Test hook: fraction of incoming update messages dropped unseen.
    pub drop_incoming: f64,
}

/// What the core takes in.
#[derive(Debug)]
pub enum Input<P, M, C> {
    /// Time passed: repairs, heartbeats, joins, publishing by time, settling.
    Tick,
    /// A gossip message to judge (`topic` None: not one of this run's).
    Gossip {
        /// Its id, to report the verdict with.
        id: M,
        /// The peer that forwarded it.
        from: P,
        /// Its signed author, when signed.
        source: Option<P>,
        /// Which topic.
        topic: Option<Topic>,
        /// The payload.
        data: Vec<u8>,
    },
    /// A sync request from a peer.
    Request {
        /// Who asks.
        from: P,
        /// What.
        request: wire::Request,
        /// Where the answer goes.
        channel: C,
    },
    /// The answer to our request `tag`.
    Response {
        /// Who answered.
        from: P,
        /// The tag of [`Output::Send`].
        tag: u64,
        /// The answer.
        response: wire::Response,
    },
    /// Our request `tag` failed (timeout, connection closed, unsupported).
    RequestFailed {
        /// The tag of [`Output::Send`].
        tag: u64,
    },
    /// Own updates up to `end` were handed to gossipsub.
    Published {
        /// One past the last own seq published.
        end: u64,
    },
    /// The compute side made own update `seq` (already applied and persisted).
    Own {
        /// Its seq.
        seq: u64,
        /// The update.
        update: Own,
    },
    /// The compute side's latest state.
    State(Box<ComputeState>),
    /// A snapshot asked for by [`Output::MakeSnapshot`] is ready.
    Snapshot(Arc<Snapshot>),
    /// The snapshot of [`Output::Install`] was installed (its log), or not.
    Installed(Result<Vec<Segment>, String>),
    /// A chunk kept by an interrupted join ([`Output::Resume`]).
    KeptChunk {
        /// Snapshot id.
        id: [u8; 32],
        /// Chunk index.
        index: u32,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Stop talking to this peer (blocked, partitioned).
    Forget(P),
    /// Leave the swarm: flush own updates, announce it.
    Leave,
}

/// What the core asks the shell to do.
#[derive(Debug)]
pub enum Output<P, M, C> {
    /// Publish on a topic; `end`: one past the last own seq it carries.
    Publish {
        /// Topic.
        topic: Topic,
        /// Payload.
        data: Vec<u8>,
        /// One past the last own seq carried (update batches and announcements).
        end: Option<u64>,
    },
    /// Report a gossip validation verdict.
    Verdict {
        /// The message.
        id: M,
        /// The peer that forwarded it.
        from: P,
        /// The verdict.
        verdict: Verdict,
    },
    /// Send a sync request; answer with [`Input::Response`] or [`Input::RequestFailed`].
    Send {
        /// To whom.
        to: P,
        /// Our tag for it.
        tag: u64,
        /// The request.
        request: wire::Request,
    },
    /// Answer a sync request.
    Respond {
        /// The request's channel.
        channel: C,
        /// The answer.
        response: wire::Response,
    },
    /// Make a snapshot of the replica (`δ` at its version vector plus
    /// [`Core::log`]'s prefix up to it) and hand it back as [`Input::Snapshot`].
    MakeSnapshot,
    /// Install these verified snapshot chunks into the (empty) replica and
    /// report [`Input::Installed`].
    Install {
        /// The chunks.
        chunks: Vec<Vec<u8>>,
        /// Their hashes.
        hashes: Vec<[u8; 32]>,
    },
    /// Keep this verified snapshot chunk, so an interrupted join resumes.
    KeepChunk {
        /// Snapshot id.
        id: [u8; 32],
        /// Chunk index.
        index: u32,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Hand back kept chunks of snapshot `id` as [`Input::KeptChunk`].
    Resume {
        /// Snapshot id.
        id: [u8; 32],
        /// Its chunk count.
        chunks: usize,
    },
    /// Training may start (enough peers, join over).
    StartTraining,
    /// The node is finished: training over and the swarm agreed, or it waited
    /// `settle_timeout` for that.
    Finished {
        /// Whether the swarm agreed.
        settled: bool,
    },
    /// Something to count or log.
    Event(Event<P>),
}

/// Things worth counting or logging.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<P> {
    /// A message or response was refused or dropped, for this reason.
    Rejected(&'static str),
    /// Payload bytes on a protocol (`gossip_updates`, `gossip_status`,
    /// `gossip_deltas`, `sync`, `delta`, `snapshot`), in or out.
    Bytes {
        /// Protocol label.
        protocol: &'static str,
        /// Inbound (else outbound).
        inbound: bool,
        /// Bytes.
        n: usize,
    },
    /// Own updates published.
    UpdatesPublished(u64),
    /// Foreign updates newly stored (gossip or repair).
    UpdatesReceived(u64),
    /// Of which by range repair.
    UpdatesRepaired(u64),
    /// A peer announced our version vector with another digest.
    DigestMismatch(P),
    /// A peer announced it is leaving.
    PeerLeft(P),
    /// A peer went silent and is no longer waited on.
    PeerSilent(P),
    /// The join decided or finished (`"snapshot"`, `"replay"`, `"none"`).
    Joined(&'static str),
    /// The swarm agrees: same version vector and digest everywhere.
    Settled,
}

/// Counters the core keeps for status and summaries.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Refusals by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Messages dropped by the test hook.
    pub dropped: u64,
    /// Updates received by repair.
    pub repaired: u64,
    /// Foreign updates stored.
    pub foreign_received: u64,
    /// Gossip messages published with own updates.
    pub published_messages: u64,
    /// Own updates in them.
    pub published_updates: u64,
    /// One past the last own seq handed to gossipsub.
    pub published_through: u64,
    /// Heartbeats at our version vector with another digest.
    pub digest_mismatches: u64,
    /// Distinct peers heard from.
    pub peers_seen: usize,
    /// Largest backlog sampled at heartbeats.
    pub backlog_max: u64,
    /// Sum of sampled backlogs.
    pub backlog_sum: f64,
    /// Backlog samples.
    pub backlog_samples: u64,
}

/// A delta announcement whose payload is being fetched before the message is
/// judged (and so forwarded).
#[derive(Debug)]
struct DeltaWait<P, M> {
    id: M,
    from: P,
    hash: [u8; 32],
    len: u32,
}

/// Per-origin token bucket over updates.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Payload bytes a range response carries at most (beyond its first delta).
const RANGE_PAYLOAD_BUDGET: usize = 4 << 20;
/// Delta payloads being fetched at once, per origin and in all.
const MAX_WAITS_PER_ORIGIN: usize = 16;
const MAX_WAITS: usize = 1024;
/// Offer requests held while a snapshot is being made.
const MAX_OFFER_WAITING: usize = 256;
/// A served snapshot stays fresh enough to offer this long.
const SNAPSHOT_FRESH: Duration = Duration::from_secs(5);
/// Snapshots kept to serve chunks from.
const SNAPSHOTS_KEPT: usize = 2;

/// The protocol state of one node.
#[derive(Debug)]
pub struct Core<P, M, C> {
    settings: Settings,
    log: Log,
    /// Per origin, how far the log has been handed over to be applied.
    delivered: VersionVector,
    repair: Repair<P>,
    join: Join<P>,
    state: Option<ComputeState>,
    outbox: Option<(u64, Vec<u8>)>,
    delta_waits: HashMap<(Origin, u64), DeltaWait<P, M>>,
    buckets: HashMap<Origin, Bucket>,
    requests: HashMap<u64, (P, wire::Request)>,
    next_tag: u64,
    served: VecDeque<(Arc<Snapshot>, Instant)>,
    offer_waiting: Vec<C>,
    want_snapshot: bool,
    snapshot_inflight: bool,
    peers_seen: HashSet<P>,
    drop_rng: u64,
    started_training: bool,
    last_publish: Instant,
    last_heartbeat: Option<Instant>,
    done_since: Option<Instant>,
    done_heartbeats: u32,
    settled: bool,
    finished: bool,
    stats: Stats,
    out: VecDeque<Output<P, M, C>>,
}

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    /// A core over `log` (recovered from disk, or empty); the compute side
    /// holds a replica with exactly `log` applied.
    pub fn new(settings: Settings, log: Log, now: Instant) -> Self {
        let delivered = log.version_vector();
        let join = Join::new(settings.join, log.is_empty(), now);
        let origin = settings.origin;
        Self {
            repair: Repair::new(settings.timing).with_own(origin),
            join,
            delivered,
            log,
            state: None,
            outbox: None,
            delta_waits: HashMap::new(),
            buckets: HashMap::new(),
            requests: HashMap::new(),
            next_tag: 0,
            served: VecDeque::new(),
            offer_waiting: Vec::new(),
            want_snapshot: false,
            snapshot_inflight: false,
            peers_seen: HashSet::new(),
            drop_rng: u64::from_le_bytes(origin.0[..8].try_into().unwrap_or([1; 8])) | 1,
            started_training: false,
            last_publish: now,
            last_heartbeat: None,
            done_since: None,
            done_heartbeats: 0,
            settled: false,
            finished: false,
            stats: Stats::default(),
            out: VecDeque::new(),
            settings,
        }
    }

    /// Takes an input; outputs queue up for [`Core::poll`].
    pub fn handle(&mut self, now: Instant, input: Input<P, M, C>) {
        match input {
            Input::Tick => self.tick(now),
            Input::Gossip {
                id,
                from,
                source,
                topic,
                data,
            } => self.on_gossip(now, id, from, source, topic, &data),
            Input::Request {
                from,
                request,
                channel,
            } => self.on_request(from, request, channel),
            Input::Response {
                from,
                tag,
                response,
            } => self.on_response(from, tag, response),
            Input::RequestFailed { tag } => {
                if let Some((peer, req)) = self.requests.remove(&tag) {
                    self.request_failed(&peer, &req);
                }
            }
            Input::Published { end } => {
                self.stats.published_through = self.stats.published_through.max(end);
            }
            Input::Own { seq, update } => self.on_own(now, seq, update),
            Input::State(st) => self.on_state(now, *st),
            Input::Snapshot(s) => {
                self.snapshot_inflight = false;
                self.served.push_front((s, now));
                self.served.truncate(SNAPSHOTS_KEPT);
                self.answer_offers();
            }
            Input::Installed(r) => self.on_installed(now, r),
            Input::KeptChunk { id, index, data } => {
                self.join.on_kept_chunk(id, index, data);
            }
            Input::Forget(p) => self.repair.forget(&p),
            Input::Leave => {
                self.flush_outbox();
                self.heartbeat(true, true);
            }
        }
    }

    /// The next output, if any.
    pub fn poll(&mut self) -> Option<Output<P, M, C>> {
        self.out.pop_front()
    }

    /// The next run of stored updates to apply (at most `max` codes), in seq
    /// order per origin; nothing while joining. Own updates are never handed
    /// out (the compute side applied them when it made them).
    pub fn next_apply(&mut self, max: usize) -> Option<Segment> {
        if self.join.active() {
            return None;
        }
        let have = &self.log;
        let (origin, from, to) = self.delivered_gaps().find_map(|(o, from)| {
            let to = have.next_seq(&o);
            (to > from).then_some((o, from, to))
        })?;
        let to = to.min(from + max.max(1) as u64);
        let seg = self.log.segment(&origin, from, to);
        self.delivered.insert(origin, to);
        Some(seg)
    }

    fn delivered_gaps(&self) -> impl Iterator<Item = (Origin, u64)> + '_ {
        self.log
            .version_vector()
            .into_iter()
            .filter(|(o, n)| self.delivered.get(o).copied().unwrap_or(0) < *n)
            .map(|(o, _)| (o, self.delivered.get(&o).copied().unwrap_or(0)))
    }

    /// This node's origin.
    pub fn origin(&self) -> Origin {
        self.settings.origin
    }

    /// The update log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.peers_seen = self.peers_seen.len();
        s
    }

    /// The join state.
    pub fn join(&self) -> &Join<P> {
        &self.join
    }

    /// Live peers and what they announced.
    pub fn peers(&self) -> &HashMap<P, PeerView> {
        self.repair.peers()
    }

    /// The compute side's latest state.
    pub fn state(&self) -> Option<&ComputeState> {
        self.state.as_ref()
    }

    /// The swarm agreed after training.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// Training is over (own updates all made).
    pub fn training_done(&self) -> bool {
        self.done_since.is_some()
    }

    /// Updates stored but not applied yet (buffered behind gaps included).
    pub fn backlog(&self) -> u64 {
        let applied = self.state.as_ref().map_or(0, |s| s.applied);
        (self.log.len() + self.log.pending_updates()).saturating_sub(applied)
    }

    /// Updates live peers announce that this node does not hold.
    pub fn lag(&self) -> u64 {
        let have = self.log.version_vector();
        self.repair
            .best()
            .iter()
            .map(|(o, n)| n.saturating_sub(have.get(o).copied().unwrap_or(0)))
            .sum()
    }

    fn emit(&mut self, o: Output<P, M, C>) {
        self.out.push_back(o);
    }

    fn event(&mut self, e: Event<P>) {
        self.out.push_back(Output::Event(e));
    }

    /// Counts a refusal (whatever the verdict).
    fn count(&mut self, reason: &'static str) {
        *self.stats.rejected.entry(reason.to_string()).or_insert(0) += 1;
        self.event(Event::Rejected(reason));
    }

    fn send(&mut self, to: P, request: wire::Request) {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.requests.insert(tag, (to.clone(), request.clone()));
        self.emit(Output::Send { to, tag, request });
    }

    fn tick(&mut self, now: Instant) {
        self.drive_join(now);
        self.serve_snapshots(now);
        if !self.started_training
            && !self.join.active()
            && self.repair.peers().len() >= self.settings.min_peers
        {
            self.started_training = true;
            self.emit(Output::StartTraining);
        }
        for gone in self.repair.expire(now) {
            self.event(Event::PeerSilent(gone));
        }
        if !self.join.active() {
            let asks = self
                .repair
                .plan(&self.log.version_vector(), &self.log.gaps(), now);
            for ask in asks {
                let req = wire::Request::Range {
                    origin: ask.origin,
                    from: ask.from,
                    to: ask.to,
                };
                self.send(ask.peer, req);
            }
        }
        if self.outbox.is_some()
            && now.duration_since(self.last_publish) >= self.settings.publish_interval
        {
            self.flush_outbox();
            self.last_publish = now;
        }
        let due = self
            .last_heartbeat
            .is_none_or(|t| now.duration_since(t) >= self.settings.heartbeat_interval);
        if due {
            self.last_heartbeat = Some(now);
            let done = self.done_since.is_some() && self.outbox.is_none();
            self.heartbeat(done, false);
            if done {
                self.done_heartbeats += 1;
            }
            let b = self.backlog();
            self.stats.backlog_max = self.stats.backlog_max.max(b);
            self.stats.backlog_sum += b as f64;
            self.stats.backlog_samples += 1;
        }
        if let Some(since) = self.done_since {
            if !self.settled && self.agreed() && self.done_heartbeats >= 2 {
                self.settled = true;
                self.event(Event::Settled);
            }
            let timed_out = now.duration_since(since) > self.settings.settle_timeout;
            if self.settings.exit_when_settled && !self.finished && (self.settled || timed_out) {
                self.finished = true;
                let settled = self.settled;
                self.emit(Output::Finished { settled });
            }
        }
    }

    /// Local state agrees with every live peer, and nothing is left to apply.
    fn agreed(&self) -> bool {
        let Some(st) = &self.state else { return false };
        st.training_done
            && self.outbox.is_none()
            && self.log.pending_updates() == 0
            && self.log.version_vector() == st.vv
            && self.repair.settled(&st.vv, &st.digest)
    }

    fn on_state(&mut self, now: Instant, st: ComputeState) {
        if st.training_done && self.done_since.is_none() {
            self.done_since = Some(now);
            self.flush_outbox();
        }
        self.state = Some(st);
    }

    /// Stores an own update (the compute side applied and persisted it) and
    /// queues it for publishing.
    fn on_own(&mut self, now: Instant, seq: u64, update: Own) {
        let origin = self.settings.origin;
        self.event(Event::UpdatesPublished(1));
        match update {
            Own::Code(code) => {
                if let Err(e) = self.log.insert(origin, seq, &[code]) {
                    tracing::warn!(error = %e, "cannot store own update");
                }
                match &mut self.outbox {
                    Some((first, codes)) if *first + codes.len() as u64 == seq => codes.push(code),
                    _ => {
                        self.flush_outbox();
                        self.outbox = Some((seq, vec![code]));
                        self.last_publish = self.last_publish.min(now);
                    }
                }
                let max = self.settings.publish_max.clamp(1, wire::MAX_BATCH);
                if self.outbox.as_ref().is_some_and(|(_, c)| c.len() >= max) {
                    self.flush_outbox();
                    self.last_publish = now;
                }
            }
            Own::Delta(payload) => {
                self.flush_outbox();
                let announce = wire::DeltaAnnounce {
                    seq,
                    len: payload.len() as u32,
                    hash: *blake3::hash(&payload).as_bytes(),
                };
                if let Err(e) = self
                    .log
                    .insert_with(origin, seq, &[crate::log::DELTA], &[payload])
                {
                    tracing::warn!(error = %e, "cannot store own delta");
                }
                let data = announce.encode();
                self.stats.published_messages += 1;
                self.stats.published_updates += 1;
                self.event(Event::Bytes {
                    protocol: "gossip_deltas",
                    inbound: false,
                    n: data.len(),
                });
                self.emit(Output::Publish {
                    topic: Topic::Deltas,
                    data,
                    end: Some(seq + 1),
                });
            }
        }
        let end = self.log.next_seq(&origin);
        let d = self.delivered.entry(origin).or_insert(0);
        *d = (*d).max(end);
    }

    fn flush_outbox(&mut self) {
        let Some((first, codes)) = self.outbox.take() else {
            return;
        };
        let data = wire::encode_updates(first, &codes);
        self.stats.published_messages += 1;
        self.stats.published_updates += codes.len() as u64;
        self.event(Event::Bytes {
            protocol: "gossip_updates",
            inbound: false,
            n: data.len(),
        });
        self.emit(Output::Publish {
            topic: Topic::Updates,
            data,
            end: Some(first + codes.len() as u64),
        });
    }

    fn heartbeat(&mut self, done: bool, leaving: bool) {
        let Some(st) = &self.state else { return };
        let hb = Heartbeat {
            vv: st.vv.iter().map(|(o, n)| (*o, *n)).collect(),
            digest: st.digest,
            done,
            leaving,
            loss: st.loss,
            backlog: self.backlog(),
        };
        let data = hb.encode();
        self.event(Event::Bytes {
            protocol: "gossip_status",
            inbound: false,
            n: data.len(),
        });
        self.emit(Output::Publish {
            topic: Topic::Status,
            data,
            end: None,
        });
    }

    /// Drives the join: decide, ask for offers, fetch chunks, install.
    fn drive_join(&mut self, now: Instant) {
        let was = self.join.active();
        let peers: Vec<P> = self.repair.peers().keys().cloned().collect();
        let best: u64 = self.repair.best().values().sum();
        let params = self.settings.shapes.iter().map(|(_, n)| *n as usize).sum();
        for action in self.join.tick(now, &peers, best, params) {
            match action {
                join::Action::Ask(p, req) => self.send(p, req),
                join::Action::Install(chunks, hashes) => {
                    tracing::info!(chunks = chunks.len(), "snapshot fetched; installing");
                    self.emit(Output::Install { chunks, hashes });
                }
                join::Action::Resume { id, chunks } => self.emit(Output::Resume { id, chunks }),
            }
        }
        if was && !self.join.active() {
            let chosen = self.join.chosen;
            self.event(Event::Joined(chosen));
        }
    }

    /// Stores an installed snapshot's log; from then on, updates beyond the
    /// snapshot's version vector are handed out to be applied.
    fn on_installed(&mut self, now: Instant, r: Result<Vec<Segment>, String>) {
        let ok = r.is_ok();
        match r {
            Ok(segments) => {
                for s in segments {
                    if let Err(e) =
                        self.log
                            .insert_with(s.origin, s.first_seq, &s.codes, &s.payloads)
                    {
                        tracing::warn!(error = %e, "snapshot log not stored");
                    }
                    self.delivered.insert(s.origin, s.end());
                }
            }
            Err(e) => tracing::warn!(error = %e, "snapshot install failed"),
        }
        self.join.on_installed(ok, now);
        let chosen = self.join.chosen;
        self.event(Event::Joined(chosen));
    }

    /// The test hook: drops an incoming message with probability `drop_incoming`.
    fn test_drop(&mut self) -> bool {
        if self.settings.drop_incoming <= 0.0 {
            return false;
        }
        let x = &mut self.drop_rng;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        let drop = (*x % 1_000_000) as f64 / 1e6 < self.settings.drop_incoming;
        self.stats.dropped += u64::from(drop);
        drop
    }

    /// Takes `n` tokens from `origin`'s bucket (burst of two seconds).
    fn take_tokens(&mut self, now: Instant, origin: Origin, n: f64) -> bool {
        let rate = self.settings.max_rate;
        let b = self.buckets.entry(origin).or_insert(Bucket {
            tokens: 2.0 * rate,
            at: now,
        });
        b.tokens =
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(2.0 * rate);
        b.at = now;
        if b.tokens < n {
            return false;
        }
        b.tokens -= n;
        true
    }

    /// Stores a batch (with the payloads of its delta updates); returns how
    /// many updates were new.
    fn accept(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
        payloads: &[Payload],
    ) -> u64 {
        match self.log.insert_with(origin, first_seq, codes, payloads) {
            Ok(fresh) => {
                let n = fresh.len() as u64;
                if n > 0 {
                    self.stats.foreign_received += n;
                    self.event(Event::UpdatesReceived(n));
                }
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store batch");
                0
            }
        }
    }
}
