//! A deterministic network simulator: N nodes, each the real protocol core
//! ([`seedswarm::proto::Core`]) with a real replica and update log, over a
//! simulated network with a seeded RNG, virtual time, gossip loss, delay and
//! reordering, partitions, crash/restart, joins, and scripted peers that send
//! whatever a format allows. Nothing sleeps: a run of minutes of virtual time
//! takes a fraction of a second.
//!
//! The network: every pair of live nodes is connected unless blocked.
//! Gossip is flooded like gossipsub floods a small mesh: the author sends to
//! every neighbour, and a node forwards a message to its neighbours only once
//! its core has accepted it (validation before forwarding); copies are
//! de-duplicated by message id. A node loses each gossip message it
//! receives with probability `loss` (every later copy is a duplicate to it). A request reaches its peer (or fails after a timeout when the peer
//! is gone, blocked, or the request is lost with `request_loss`), as
//! request-response does over a connection.
//!
//! The compute side of a node is the replica plus the log's file (a list of
//! persisted segments that survives a crash): own updates are random one-byte
//! codes and, for mixed nodes, real FedZip deltas; everything the core hands
//! over is applied as the node's compute thread would.

use seedswarm::config::Config;
use seedswarm::crdt::log::{Log, Payload, Segment, DELTA};
use seedswarm::crdt::replica::{Replica, Rules};
use seedswarm::delta::fedzip;
use seedswarm::net::wire;
use seedswarm::proto::{self, join, ComputeState, Core, Input, Output, Own, Topic, Verdict};
use seedswarm::zo::seed::{Origin, RunId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A simulated peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u16);

impl proto::Peer for Id {
    fn origin(&self) -> Option<Origin> {
        Some(origin_of(*self))
    }
}

/// The origin a simulated peer signs as.
pub fn origin_of(id: Id) -> Origin {
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm/sim-peer");
    h.update(&id.0.to_le_bytes());
    Origin(*h.finalize().as_bytes())
}

/// Where a simulated response goes.
#[derive(Debug)]
pub struct Chan {
    requester: Id,
    tag: u64,
}

type SimCore = Core<Id, u64, Chan>;

/// splitmix64: small, seeded, good enough for a simulator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a node contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One-byte updates only.
    Codes,
    /// Every `k`-th own update is a FedZip delta.
    Mixed(u64),
}

/// How a node is started.
#[derive(Clone, Debug)]
pub struct Spec {
    pub kind: Kind,
    /// Own updates to make.
    pub updates: u64,
    /// Virtual milliseconds per own update.
    pub step_ms: u64,
    /// How a node with an empty log catches up.
    pub join: join::Mode,
    /// Peers to hear from before training.
    pub min_peers: usize,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            kind: Kind::Codes,
            updates: 200,
            step_ms: 10,
            join: join::Mode::Replay,
            min_peers: 0,
        }
    }
}

enum Ev {
    Tick(Id),
    Produce(Id),
    Gossip {
        to: Id,
        from: Id,
        msg: u64,
    },
    Request {
        to: Id,
        from: Id,
        tag: u64,
        request: wire::Request,
    },
    Response {
        to: Id,
        from: Id,
        tag: u64,
        response: wire::Response,
    },
    Failed {
        to: Id,
        tag: u64,
    },
    Snapshot(Id),
    Install {
        to: Id,
        chunks: Vec<Vec<u8>>,
        hashes: Vec<[u8; 32]>,
    },
}

/// A published gossip message.
#[derive(Clone, Debug)]
struct Message {
    source: Id,
    topic: Option<Topic>,
    data: Vec<u8>,
}

/// What survives a crash: the log's file and kept snapshot chunks.
#[derive(Clone, Debug, Default)]
struct Disk {
    persisted: Vec<Segment>,
    chunks: HashMap<([u8; 32], u32), Vec<u8>>,
}

pub struct Node {
    pub core: SimCore,
    pub replica: Replica,
    spec: Spec,
    disk: Disk,
    training: bool,
    pub done: bool,
    seen: HashSet<u64>,
    rng: Rng,
    /// Incarnation, so events of a crashed node's past life are dropped.
    life: u32,
}

/// Everything a scripted peer receives.
#[derive(Debug, Default)]
pub struct Inbox {
    pub requests: Vec<(Id, wire::Request)>,
}

type Script = Box<dyn FnMut(&wire::Request) -> Option<wire::Response>>;

pub struct World {
    t0: Instant,
    pub now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, (u32, Ev)>,
    pub nodes: BTreeMap<Id, Node>,
    dead: BTreeMap<Id, (Spec, Disk, u32)>,
    scripted: BTreeMap<Id, (Script, Inbox)>,
    rng: Rng,
    /// Probability that a node loses a gossip message (all its copies).
    pub loss: f64,
    /// Probability that a request is lost (it then fails after a timeout).
    pub request_loss: f64,
    /// Extra random delay per message, milliseconds (reorders).
    pub jitter_ms: u64,
    blocked: HashSet<(Id, Id)>,
    messages: HashMap<u64, Message>,
    next_msg: u64,
    /// Verdicts `Reject` earned by each forwarder (gossipsub's penalty).
    pub penalties: BTreeMap<Id, u64>,
    /// Verdicts the cores gave, by (judge, verdict).
    pub verdicts: BTreeMap<(Id, String), u64>,
    pub digest_mismatches: u64,
    rules: Rules,
    tensors: Vec<(String, Vec<f32>)>,
    max_delta_bytes: usize,
}

const TICK_MS: u64 = 50;
const BASE_DELAY_MS: u64 = 2;
const REQUEST_TIMEOUT_MS: u64 = 2_000;

impl World {
    /// An empty world; its replicas follow the demo manifest's rules.
    pub fn new(seed: u64) -> Self {
        let cfg = Config::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/demo.toml"
        )))
        .expect("demo config");
        let rules = Rules {
            run: RunId([7; 32]),
            kind: cfg.run.perturbation,
            codec: seedswarm::zo::codec::Codec::new(&cfg.run.codec),
            schedule: cfg.run.schedule.clone(),
            unit_bits: cfg.run.unit_bits,
            max_delta_norm: cfg.run.delta.max_norm,
        };
        let mut r = Rng::new(0x5eed);
        let mut values = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (r.below(2001) as f32 - 1000.0) / 1000.0)
                .collect()
        };
        let tensors = vec![("a".to_string(), values(48)), ("b".to_string(), values(16))];
        Self {
            t0: Instant::now(),
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes: BTreeMap::new(),
            dead: BTreeMap::new(),
            scripted: BTreeMap::new(),
            rng: Rng::new(seed),
            loss: 0.0,
            request_loss: 0.0,
            jitter_ms: 5,
            blocked: HashSet::new(),
            messages: HashMap::new(),
            next_msg: 0,
            penalties: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            digest_mismatches: 0,
            rules,
            tensors,
            max_delta_bytes: cfg.run.delta.max_bytes,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    fn schedule(&mut self, after_ms: u64, ev: Ev) {
        let life = match &ev {
            Ev::Tick(id) | Ev::Produce(id) | Ev::Snapshot(id) => self.life(*id),
            Ev::Install { to, .. } => self.life(*to),
            _ => 0,
        };
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + after_ms, self.seq)));
        self.events.insert(self.seq, (life, ev));
    }

    fn life(&self, id: Id) -> u32 {
        self.nodes.get(&id).map_or(0, |n| n.life)
    }

    fn delay(&mut self) -> u64 {
        BASE_DELAY_MS + self.rng.below(self.jitter_ms + 1)
    }

    fn linked(&self, a: Id, b: Id) -> bool {
        !self.blocked.contains(&(a, b)) && !self.blocked.contains(&(b, a))
    }

    fn alive(&self, id: Id) -> bool {
        self.nodes.contains_key(&id) || self.scripted.contains_key(&id)
    }

    fn settings(&self, id: Id, spec: &Spec) -> proto::Settings {
        proto::Settings {
            origin: origin_of(id),
            max_rate: 50_000.0,
            publish_interval: Duration::from_millis(50),
            publish_max: 64,
            heartbeat_interval: Duration::from_millis(300),
            timing: proto::Timing::default(),
            join: spec.join,
            min_peers: spec.min_peers,
            exit_when_settled: false,
            settle_timeout: Duration::from_secs(600),
            max_delta_bytes: self.max_delta_bytes,
            shapes: self
                .tensors
                .iter()
                .map(|(n, t)| (n.clone(), t.len() as u64))
                .collect(),
            drop_incoming: 0.0,
        }
    }

    /// Starts node `id` with an empty log.
    pub fn add(&mut self, id: Id, spec: Spec) {
        self.boot(id, spec, Disk::default(), 0);
    }

    /// Starts (or restarts) a node from what its disk holds.
    fn boot(&mut self, id: Id, spec: Spec, disk: Disk, life: u32) {
        let mut log = Log::in_memory(self.rules.run);
        let mut replica = Replica::new(self.rules.clone(), self.tensors.clone());
        for s in &disk.persisted {
            log.insert_with(s.origin, s.first_seq, &s.codes, &s.payloads)
                .expect("persisted segment");
        }
        let all: Vec<_> = log.updates().collect();
        replica
            .apply_with(&all, &|o, s| log.payload(o, s).cloned())
            .expect("replay");
        let core = Core::new(self.settings(id, &spec), log, self.now());
        let node = Node {
            core,
            replica,
            spec,
            disk,
            training: false,
            done: false,
            seen: HashSet::new(),
            rng: Rng::new(u64::from(id.0) * 7919 + u64::from(life)),
            life: life + 1,
        };
        self.nodes.insert(id, node);
        self.report(id);
        self.schedule(0, Ev::Tick(id));
    }

    /// Adds a scripted peer: it has no core, receives requests into its
    /// inbox and answers them with `script`.
    pub fn add_scripted(&mut self, id: Id, script: Script) {
        self.scripted.insert(id, (script, Inbox::default()));
    }

    /// What a scripted peer received.
    pub fn inbox(&self, id: Id) -> &Inbox {
        &self.scripted[&id].1
    }

    /// Crashes a node: its memory is lost, its disk kept.
    pub fn crash(&mut self, id: Id) {
        if let Some(n) = self.nodes.remove(&id) {
            self.dead.insert(id, (n.spec, n.disk, n.life));
        }
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: Id) {
        if let Some((spec, disk, life)) = self.dead.remove(&id) {
            self.boot(id, spec, disk, life);
        }
    }

    /// The node leaves gracefully (announces it) and is gone for good.
    pub fn leave(&mut self, id: Id) {
        self.input(id, Input::Leave);
        self.nodes.remove(&id);
    }

    /// Cuts the links between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[Id], b: &[Id]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                if let Some(n) = self.nodes.get_mut(&x) {
                    n.core.handle(
                        self.t0 + Duration::from_millis(self.now_ms),
                        Input::Forget(y),
                    );
                }
                if let Some(n) = self.nodes.get_mut(&y) {
                    n.core.handle(
                        self.t0 + Duration::from_millis(self.now_ms),
                        Input::Forget(x),
                    );
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Publishes `data` on `topic` as `source` (a scripted peer) to `to`
    /// directly, as a hostile implementation would.
    pub fn inject(&mut self, source: Id, to: Id, topic: Option<Topic>, data: Vec<u8>) {
        let msg = self.next_msg;
        self.next_msg += 1;
        self.messages.insert(
            msg,
            Message {
                source,
                topic,
                data,
            },
        );
        self.schedule(
            1,
            Ev::Gossip {
                to,
                from: source,
                msg,
            },
        );
    }

    /// Runs events until `done` holds (checked as time advances), the queue
    /// empties, or `limit_ms` of virtual time pass; returns whether `done` held.
    pub fn run_until(&mut self, limit_ms: u64, done: impl Fn(&World) -> bool) -> bool {
        let end = self.now_ms + limit_ms;
        let mut last_check = u64::MAX;
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t != last_check {
                if done(self) {
                    return true;
                }
                last_check = t;
            }
            if t > end {
                self.queue.push(Reverse((t, seq)));
                return done(self);
            }
            self.now_ms = t;
            if let Some((life, ev)) = self.events.remove(&seq) {
                self.dispatch(life, ev);
            }
        }
        done(self)
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(ms, |_| false);
    }

    fn dispatch(&mut self, life: u32, ev: Ev) {
        let current = |w: &World, id: Id| w.nodes.get(&id).is_some_and(|n| n.life == life);
        match ev {
            Ev::Tick(id) if current(self, id) => {
                self.input(id, Input::Tick);
                self.schedule(TICK_MS, Ev::Tick(id));
            }
            Ev::Produce(id) if current(self, id) => self.produce(id),
            Ev::Snapshot(id) if current(self, id) => self.make_snapshot(id),
            Ev::Install { to, chunks, hashes } if current(self, to) => {
                let n = self.nodes.get_mut(&to).expect("node");
                let r = seedswarm::crdt::snapshot::install(&mut n.replica, &chunks, &hashes);
                if let Ok(segments) = &r {
                    n.disk.persisted.extend(segments.iter().cloned());
                }
                self.input(to, Input::Installed(r));
                self.report(to);
            }
            Ev::Gossip { to, from, msg } => self.deliver(to, from, msg),
            Ev::Request {
                to,
                from,
                tag,
                request,
            } => {
                if let Some((script, inbox)) = self.scripted.get_mut(&to) {
                    inbox.requests.push((from, request.clone()));
                    match script(&request) {
                        Some(response) => {
                            let d = BASE_DELAY_MS;
                            self.schedule(
                                d,
                                Ev::Response {
                                    to: from,
                                    from: to,
                                    tag,
                                    response,
                                },
                            );
                        }
                        None => self.schedule(REQUEST_TIMEOUT_MS, Ev::Failed { to: from, tag }),
                    }
                } else if self.nodes.contains_key(&to) {
                    let channel = Chan {
                        requester: from,
                        tag,
                    };
                    self.input(
                        to,
                        Input::Request {
                            from,
                            request,
                            channel,
                        },
                    );
                } else {
                    self.schedule(REQUEST_TIMEOUT_MS, Ev::Failed { to: from, tag });
                }
            }
            Ev::Response {
                to,
                from,
                tag,
                response,
            } => self.input(
                to,
                Input::Response {
                    from,
                    tag,
                    response,
                },
            ),
            Ev::Failed { to, tag } => self.input(to, Input::RequestFailed { tag }),
            _ => {} // an event of a crashed node's past life
        }
    }

    fn deliver(&mut self, to: Id, from: Id, msg: u64) {
        let Some(n) = self.nodes.get_mut(&to) else {
            return;
        };
        if !n.seen.insert(msg) {
            return;
        }
        // Lost at this node: later copies are duplicates it ignores.
        if self.rng.chance(self.loss) {
            return;
        }
        let m = self.messages[&msg].clone();
        self.input(
            to,
            Input::Gossip {
                id: msg,
                from,
                source: Some(m.source),
                topic: m.topic,
                data: m.data,
            },
        );
    }

    /// Sends message `msg` from `by` to its neighbours (not `except`).
    fn flood(&mut self, by: Id, msg: u64, except: Option<Id>) {
        let to: Vec<Id> = self
            .nodes
            .keys()
            .copied()
            .filter(|&y| y != by && Some(y) != except && self.linked(by, y))
            .collect();
        for y in to {
            let d = self.delay();
            self.schedule(
                d,
                Ev::Gossip {
                    to: y,
                    from: by,
                    msg,
                },
            );
        }
    }

    /// Hands `input` to node `id`'s core and executes what it asks for.
    pub fn input(&mut self, id: Id, input: Input<Id, u64, Chan>) {
        let now = self.now();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        n.core.handle(now, input);
        self.drain(id);
    }

    fn drain(&mut self, id: Id) {
        loop {
            let now = self.now();
            let Some(n) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(out) = n.core.poll() else {
                // Apply what became contiguous, as the compute thread would.
                let mut applied = false;
                while let Some(seg) = n.core.next_apply(4096) {
                    n.replica
                        .apply_with(&seg.updates(), &|_, s| seg.payload(s))
                        .expect("the core hands over only valid, contiguous updates");
                    n.disk.persisted.push(seg);
                    applied = true;
                }
                if !applied {
                    return;
                }
                let st = state(n);
                n.core.handle(now, Input::State(Box::new(st)));
                continue;
            };
            self.execute(id, out);
        }
    }

    fn execute(&mut self, id: Id, out: Output<Id, u64, Chan>) {
        match out {
            Output::Publish { topic, data, end } => {
                let msg = self.next_msg;
                self.next_msg += 1;
                self.messages.insert(
                    msg,
                    Message {
                        source: id,
                        topic: Some(topic),
                        data,
                    },
                );
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.seen.insert(msg);
                    if let Some(end) = end {
                        n.core.handle(
                            self.t0 + Duration::from_millis(self.now_ms),
                            Input::Published { end },
                        );
                    }
                }
                self.flood(id, msg, None);
            }
            Output::Verdict {
                id: msg,
                from,
                verdict,
            } => {
                *self
                    .verdicts
                    .entry((id, format!("{verdict:?}")))
                    .or_insert(0) += 1;
                match verdict {
                    Verdict::Accept => self.flood(id, msg, Some(from)),
                    Verdict::Reject => *self.penalties.entry(from).or_insert(0) += 1,
                    Verdict::Ignore => {}
                }
            }
            Output::Send { to, tag, request } => {
                let ok =
                    self.alive(to) && self.linked(id, to) && !self.rng.chance(self.request_loss);
                if ok {
                    let d = self.delay();
                    self.schedule(
                        d,
                        Ev::Request {
                            to,
                            from: id,
                            tag,
                            request,
                        },
                    );
                } else {
                    self.schedule(REQUEST_TIMEOUT_MS, Ev::Failed { to: id, tag });
                }
            }
            Output::Respond { channel, response } => {
                let to = channel.requester;
                let tag = channel.tag;
                if self.alive(to) && self.linked(id, to) {
                    let d = self.delay();
                    self.schedule(
                        d,
                        Ev::Response {
                            to,
                            from: id,
                            tag,
                            response,
                        },
                    );
                } else {
                    self.schedule(REQUEST_TIMEOUT_MS, Ev::Failed { to, tag });
                }
            }
            Output::MakeSnapshot => self.schedule(10, Ev::Snapshot(id)),
            Output::Install { chunks, hashes } => self.schedule(
                10,
                Ev::Install {
                    to: id,
                    chunks,
                    hashes,
                },
            ),
            Output::KeepChunk {
                id: sid,
                index,
                data,
            } => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.disk.chunks.insert((sid, index), data);
                }
            }
            Output::Resume { id: sid, chunks } => {
                let kept: Vec<(u32, Vec<u8>)> = self.nodes.get(&id).map_or(Vec::new(), |n| {
                    (0..chunks as u32)
                        .filter_map(|i| n.disk.chunks.get(&(sid, i)).map(|d| (i, d.clone())))
                        .collect()
                });
                for (index, data) in kept {
                    let now = self.now();
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.core.handle(
                            now,
                            Input::KeptChunk {
                                id: sid,
                                index,
                                data,
                            },
                        );
                    }
                }
            }
            Output::StartTraining => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.training = true;
                    let step = n.spec.step_ms;
                    self.schedule(step, Ev::Produce(id));
                }
            }
            Output::Finished { .. } => {}
            Output::Event(proto::Event::DigestMismatch(_)) => self.digest_mismatches += 1,
            Output::Event(_) => {}
        }
    }

    /// The node's compute side makes its next own update.
    fn produce(&mut self, id: Id) {
        let now = self.now();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let origin = origin_of(id);
        let seq = n
            .replica
            .version_vector()
            .get(&origin)
            .copied()
            .unwrap_or(0);
        if seq >= n.spec.updates {
            n.done = true;
            let st = state(n);
            n.core.handle(now, Input::State(Box::new(st)));
            self.drain(id);
            return;
        }
        let update = match n.spec.kind {
            Kind::Mixed(k) if seq % k == k - 1 => {
                Own::Delta(delta_payload(&mut n.rng, &self.tensors))
            }
            _ => {
                let c = (n.rng.next() & 0xff) as u8;
                Own::Code(if c == DELTA { 0x81 } else { c })
            }
        };
        let (code, payloads) = match &update {
            Own::Code(c) => (*c, Vec::new()),
            Own::Delta(p) => (DELTA, vec![p.clone()]),
        };
        let seg = Segment {
            origin,
            first_seq: seq,
            codes: vec![code],
            payloads,
        };
        n.replica
            .apply_with(&seg.updates(), &|_, s| seg.payload(s))
            .expect("own update applies");
        n.disk.persisted.push(seg);
        n.core.handle(now, Input::Own { seq, update });
        let st = state(n);
        n.core.handle(now, Input::State(Box::new(st)));
        let step = n.spec.step_ms;
        self.drain(id);
        self.schedule(step, Ev::Produce(id));
    }

    fn make_snapshot(&mut self, id: Id) {
        let Some(n) = self.nodes.get(&id) else { return };
        let image = seedswarm::crdt::snapshot::image(&n.replica);
        let s = seedswarm::crdt::snapshot::of(&image, n.core.log().prefix(&image.vv));
        self.input(id, Input::Snapshot(Arc::new(s)));
    }

    /// Reports node `id`'s replica to its core.
    fn report(&mut self, id: Id) {
        let now = self.now();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let st = state(n);
        n.core.handle(now, Input::State(Box::new(st)));
        self.drain(id);
    }

    /// Every live node has settled (training over, agreement seen).
    pub fn settled(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.values().all(|n| n.core.settled())
    }

    /// Live nodes hold one version vector and one digest.
    pub fn agree(&self) -> bool {
        let mut it = self.nodes.values();
        let Some(first) = it.next() else { return true };
        it.all(|n| {
            n.replica.version_vector() == first.replica.version_vector()
                && n.replica.digest_bytes() == first.replica.digest_bytes()
        })
    }
}

fn state(n: &Node) -> ComputeState {
    let r = &n.replica;
    ComputeState {
        vv: r.version_vector().clone(),
        digest: r.digest_bytes(),
        applied: r.applied(),
        own: r
            .version_vector()
            .get(&n.core.origin())
            .copied()
            .unwrap_or(0),
        loss: 0.0,
        eval: None,
        training_done: n.done,
    }
}

/// A real FedZip delta over the world's tensors: a few random entries.
fn delta_payload(rng: &mut Rng, tensors: &[(String, Vec<f32>)]) -> Payload {
    let diffs: Vec<Vec<f32>> = tensors
        .iter()
        .map(|(_, t)| {
            (0..t.len())
                .map(|_| (rng.below(2001) as f32 - 1000.0) * 1e-5)
                .collect()
        })
        .collect();
    let views: Vec<(&str, &[f32])> = tensors
        .iter()
        .zip(&diffs)
        .map(|((n, _), d)| (n.as_str(), d.as_slice()))
        .collect();
    let settings = fedzip::Settings {
        top_z: 0.25,
        ..fedzip::Settings::default()
    };
    let d = fedzip::compress(&views, &settings).expect("compress");
    Arc::new(fedzip::encode(&d, settings.positions))
}
