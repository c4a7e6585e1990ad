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
//! receives with probability `loss` (every later copy is a duplicate to it).
//! A request reaches its peer (or fails after a timeout when the peer is
//! gone, blocked, or the request is lost with `request_loss`), as
//! request-response does over a connection.
//!
//! The nodes themselves — the core plus their compute side — are in
//! [`crate::node`].

use crate::node::{state, Chan, Disk, Id, Node, Rng, Spec};
use seedswarm::config::Config;
use seedswarm::crdt::log::Op;
use seedswarm::crdt::replica::Rules;
use seedswarm::net::wire;
use seedswarm::proto::{self, Input, Output, Topic, Verdict};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

pub(crate) enum Ev {
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
    SnapshotReady(
        Id,
        Result<std::sync::Arc<seedswarm::crdt::snapshot::Snapshot>, String>,
    ),
    Install {
        to: Id,
        chunks: Vec<Vec<u8>>,
        hashes: Vec<[u8; 32]>,
        vv: seedswarm::crdt::replica::VersionVector,
        digest: [u8; 32],
    },
}

/// A published gossip message.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    source: Id,
    topic: Option<Topic>,
    data: Vec<u8>,
}

/// Everything a scripted peer receives.
#[derive(Debug, Default)]
pub struct Inbox {
    pub requests: Vec<(Id, wire::Request)>,
}

type Script = Box<dyn FnMut(&wire::Request) -> Option<wire::Response>>;

pub struct World {
    pub(crate) t0: Instant,
    pub now_ms: u64,
    pub(crate) seq: u64,
    pub(crate) queue: BinaryHeap<Reverse<(u64, u64)>>,
    pub(crate) events: HashMap<u64, (u32, Ev)>,
    pub nodes: BTreeMap<Id, Node>,
    pub(crate) dead: BTreeMap<Id, (Spec, Disk, u32)>,
    pub(crate) scripted: BTreeMap<Id, (Script, Inbox)>,
    pub(crate) rng: Rng,
    /// Probability that a node loses a gossip message (all its copies).
    pub loss: f64,
    /// Probability that a request is lost (it then fails after a timeout).
    pub request_loss: f64,
    /// Extra random delay per message, milliseconds (reorders).
    pub jitter_ms: u64,
    pub(crate) blocked: HashSet<(Id, Id)>,
    pub(crate) messages: HashMap<u64, Message>,
    pub(crate) next_msg: u64,
    /// Verdicts `Reject` earned by each forwarder (gossipsub's penalty).
    pub penalties: BTreeMap<Id, u64>,
    /// Bans each peer earned (forged data served).
    pub bans: BTreeMap<Id, u64>,
    /// Verdicts the cores gave, by (judge, verdict).
    pub verdicts: BTreeMap<(Id, String), u64>,
    pub digest_mismatches: u64,
    pub(crate) rules: Rules,
    pub(crate) tensors: Vec<(String, Vec<f32>)>,
    pub(crate) max_delta_bytes: usize,
    /// The run's owner key, when the run is permissioned.
    pub(crate) owner: Option<libp2p::identity::ed25519::Keypair>,
}

pub(crate) const TICK_MS: u64 = 50;
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
            run: crate::node::RUN,
            kind: cfg.run.perturbation,
            structure: cfg.run.structure,
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
            bans: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            digest_mismatches: 0,
            rules,
            tensors,
            max_delta_bytes: cfg.run.delta.max_bytes,
            owner: None,
        }
    }

    /// Makes the run permissioned (before any node is added): only origins
    /// the owner admits count.
    pub fn permissioned(mut self) -> Self {
        let mut seed = [0x0e; 32];
        let secret = libp2p::identity::ed25519::SecretKey::try_from_bytes(&mut seed)
            .expect("32 bytes are a secret key");
        self.owner = Some(secret.into());
        self
    }

    /// The owner's record about `who`, encoded (admission until `seq`, or
    /// revocation from `seq`).
    pub fn record(&self, kind: seedswarm::crdt::admit::Kind, who: Id, seq: u64) -> Vec<u8> {
        let key = self.owner.as_ref().expect("a permissioned world");
        seedswarm::crdt::admit::Record::sign(
            key,
            &self.rules.run,
            kind,
            crate::node::origin_of(who),
            seq,
        )
        .encode()
    }

    /// Hands node `to` the owner's record (as its operator would, from a
    /// file): it takes and gossips it.
    pub fn give(&mut self, to: Id, record: Vec<u8>) {
        let now = self.now();
        let n = self.nodes.get_mut(&to).expect("a live node");
        n.core.add_record(now, &record).expect("a valid record");
        self.drain(to);
    }

    pub(crate) fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    pub(crate) fn schedule(&mut self, after_ms: u64, ev: Ev) {
        let life = match &ev {
            Ev::Tick(id) | Ev::Produce(id) | Ev::SnapshotReady(id, _) => self.life(*id),
            Ev::Install { to, .. } => self.life(*to),
            _ => 0,
        };
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + after_ms, self.seq)));
        self.events.insert(self.seq, (life, ev));
    }

    pub(crate) fn life(&self, id: Id) -> u32 {
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

    pub(crate) fn settings(&self, id: Id, spec: &Spec) -> proto::Settings {
        proto::Settings {
            signer: crate::node::signer_of(id),
            max_rate: 50_000.0,
            publish_interval: Duration::from_millis(50),
            publish_max: 64,
            heartbeat_interval: Duration::from_millis(300),
            timing: proto::Timing::default(),
            join: spec.join,
            snapshot_quorum: spec.quorum,
            apply_rate: None,
            min_peers: spec.min_peers,
            exit_when_settled: false,
            settle_timeout: Duration::from_secs(600),
            max_delta_bytes: self.max_delta_bytes,
            max_updates_per_origin: 1 << 24,
            owner: self
                .owner
                .as_ref()
                .map(|k| seedswarm::crdt::admit::Owner(k.public().to_bytes())),
            // Virtual time since the world began: a restart is newer.
            epoch_ms: self.now_ms + 1,
            shapes: self
                .tensors
                .iter()
                .map(|(n, t)| (n.clone(), t.len() as u64))
                .collect(),
            drop_incoming: 0.0,
            mode: Default::default(),
            verify_fraction: 0.0,
            check_key: [0; 32],
        }
    }

    /// Starts node `id` with an empty log.
    pub fn add(&mut self, id: Id, spec: Spec) {
        self.boot(id, spec, Disk::default(), 0);
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
            Ev::SnapshotReady(id, r) if current(self, id) => match r {
                Ok(s) => self.input(id, Input::Snapshot(s)),
                Err(why) => self.input(id, Input::SnapshotFailed(why)),
            },
            Ev::Install {
                to,
                chunks,
                hashes,
                vv,
                digest,
            } if current(self, to) => {
                let n = self.nodes.get_mut(&to).expect("node");
                let run = self.rules.run;
                let r = seedswarm::crdt::snapshot::install(
                    &mut n.replica,
                    &chunks,
                    &hashes,
                    (&vv, &digest),
                )
                .map(|(vv, segments)| {
                    let kept: Vec<_> = segments
                        .iter()
                        .map(|s| seedswarm::crdt::log::verified_prefix(&run, s))
                        .collect();
                    (vv, kept)
                });
                if let Ok((_, segments)) = &r {
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

    pub(crate) fn drain(&mut self, id: Id) {
        loop {
            let now = self.now();
            let Some(n) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(out) = n.core.poll() else {
                // Apply what became contiguous, as the compute thread would.
                let mut applied = false;
                while let Some(seg) = n.core.next_apply(4096) {
                    match seg.op {
                        Op::Retract => {
                            n.replica
                                .retract_with(&seg.updates(), &|_, s| seg.payload(s))
                                .expect("the core retracts only the applied tail");
                            n.retracted += seg.codes.len() as u64;
                        }
                        Op::Apply => {
                            n.replica
                                .apply_with(&seg.updates(), &|_, s| seg.payload(s))
                                .expect("the core hands over only valid, contiguous updates");
                            n.disk.persisted.push(seg);
                        }
                        Op::Store => n.disk.persisted.push(seg),
                    }
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
            Output::MakeSnapshot { target, retract } => self.make_snapshot(id, &target, &retract),
            Output::KeepBases { .. } => {}
            // Simulated nodes have no model to recompute with (and run
            // with verify_fraction 0).
            Output::Check { origin, seq, .. } => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.core.handle(
                        self.t0 + Duration::from_millis(self.now_ms),
                        Input::Checked {
                            origin,
                            seq,
                            result: Err("no model in the simulator".into()),
                        },
                    );
                }
            }
            Output::Install {
                chunks,
                hashes,
                vv,
                digest,
            } => self.schedule(
                10,
                Ev::Install {
                    to: id,
                    chunks,
                    hashes,
                    vv,
                    digest,
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
            Output::Ban { peer, .. } => {
                *self.bans.entry(peer).or_insert(0) += 1;
                self.blocked.insert((id, peer));
            }
            Output::Excluded {
                origin,
                from,
                proof,
            } => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.disk.exclusions.push((origin, from, proof));
                }
            }
            Output::Admitted(record) => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.disk.admissions.push(record);
                }
            }
            Output::OwnCap { end } => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.own_cap = end;
                }
            }
            Output::Event(proto::Event::DigestMismatch(_)) => self.digest_mismatches += 1,
            Output::Event(_) => {}
        }
    }

    /// Every live node has settled (training over, agreement seen).
    pub fn settled(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.values().all(|n| n.core.settled())
    }

    /// These live nodes hold one version vector and one digest.
    pub fn agree_on(&self, ids: &[Id]) -> bool {
        let mut it = ids.iter().filter_map(|i| self.nodes.get(i));
        let Some(first) = it.next() else { return true };
        it.all(|n| {
            n.replica.version_vector() == first.replica.version_vector()
                && n.replica.digest_bytes() == first.replica.digest_bytes()
        })
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
