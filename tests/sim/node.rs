//! A simulated node: the real protocol core plus its compute side — the
//! replica and the log's file (a list of persisted segments that survives a
//! crash). Own updates are random one-byte codes and, for mixed nodes, real
//! FedZip deltas; everything the core hands over is applied as the node's
//! compute thread would.

use crate::world::{Ev, World};
use seedswarm::crdt::attest::Signer;
use seedswarm::crdt::log::{Log, Payload, Segment, DELTA};
use seedswarm::crdt::replica::Replica;
use seedswarm::crdt::replica::VersionVector;
use seedswarm::delta::fedzip;
use seedswarm::proto::{self, join, ComputeState, Core, Input, Own};
use seedswarm::zo::seed::{Origin, RunId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A simulated peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u16);

impl proto::Peer for Id {
    fn origin(&self) -> Option<Origin> {
        Some(origin_of(*self))
    }
}

/// The run every simulated node is in.
pub const RUN: RunId = RunId([7; 32]);

/// The key a simulated peer signs with (derived from its id).
pub fn signer_of(id: Id) -> Signer {
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm/sim-peer");
    h.update(&id.0.to_le_bytes());
    Signer::from_seed(*h.finalize().as_bytes(), RUN)
}

/// The origin a simulated peer signs as.
pub fn origin_of(id: Id) -> Origin {
    signer_of(id).origin()
}

/// An update batch as `id` signs and publishes it.
pub fn signed_updates(id: Id, first: u64, codes: &[u8]) -> Vec<u8> {
    let a = signer_of(id).sign(first, codes, &[]);
    seedswarm::net::wire::encode_updates(first, &a.sig, codes)
}

/// Where a simulated response goes.
#[derive(Debug)]
pub struct Chan {
    pub(crate) requester: Id,
    pub(crate) tag: u64,
}

pub(crate) type SimCore = Core<Id, u64, Chan>;

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
    /// Peers that must vouch for a snapshot.
    pub quorum: usize,
    /// Stops making own updates where its own updates stop counting (its
    /// admission's end, a revocation), as the node does; false: a peer
    /// that publishes regardless.
    pub obey_cap: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            kind: Kind::Codes,
            updates: 200,
            step_ms: 10,
            join: join::Mode::Replay,
            min_peers: 0,
            quorum: 2,
            obey_cap: true,
        }
    }
}

/// What survives a crash: the log's file and kept snapshot chunks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) persisted: Vec<Segment>,
    /// Exclusions persisted next to the log (origin, from, proof).
    pub(crate) exclusions: Vec<(Origin, u64, Vec<u8>)>,
    /// Admissions persisted next to the log.
    pub(crate) admissions: Vec<seedswarm::crdt::admit::Record>,
    pub(crate) chunks: HashMap<([u8; 32], u32), Vec<u8>>,
}

pub struct Node {
    pub core: SimCore,
    pub replica: Replica,
    pub(crate) spec: Spec,
    pub(crate) disk: Disk,
    pub(crate) training: bool,
    pub done: bool,
    pub(crate) seen: HashSet<u64>,
    pub(crate) rng: Rng,
    /// Incarnation, so events of a crashed node's past life are dropped.
    pub(crate) life: u32,
    /// Updates taken back out of the replica (exclusions).
    pub retracted: u64,
    /// First own seq that counts nowhere ([`proto::Output::OwnCap`]).
    pub(crate) own_cap: u64,
}

impl World {
    /// Starts (or restarts) a node from what its disk holds.
    pub(crate) fn boot(&mut self, id: Id, spec: Spec, disk: Disk, life: u32) {
        let mut log = Log::in_memory(self.rules.run);
        let mut replica = Replica::new(self.rules.clone(), self.tensors.clone());
        for s in &disk.persisted {
            log.insert_with(s.origin, s.first_seq, &s.codes, &s.payloads)
                .expect("persisted segment");
            for a in &s.attests {
                log.attest(s.origin, *a);
            }
        }
        for (o, from, proof) in &disk.exclusions {
            log.exclude(*o, *from, proof.clone());
        }
        for a in &disk.admissions {
            log.admit(*a);
        }
        let all: Vec<_> = log.updates().collect();
        replica
            .apply_with(&all, &|o, s| log.payload(o, s).cloned())
            .expect("replay");
        let core = Core::new(self.settings(id, &spec), log, self.now());
        let own_cap = core.own_cap();
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
            retracted: 0,
            own_cap,
        };
        self.nodes.insert(id, node);
        self.report(id);
        self.schedule(0, Ev::Tick(id));
    }

    /// The node's compute side makes its next own update.
    pub(crate) fn produce(&mut self, id: Id) {
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
        if seq >= n.spec.updates || (n.spec.obey_cap && seq >= n.own_cap) {
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
        let seg = Segment::new(origin, seq, vec![code], payloads);
        let mut basis = n.replica.version_vector().clone();
        basis.remove(&origin);
        n.replica
            .apply_with(&seg.updates(), &|_, s| seg.payload(s))
            .expect("own update applies");
        n.disk.persisted.push(seg);
        n.core.handle(now, Input::Own { seq, update, basis });
        let st = state(n);
        n.core.handle(now, Input::State(Box::new(st)));
        let step = n.spec.step_ms;
        self.drain(id);
        self.schedule(step, Ev::Produce(id));
    }

    /// Makes the snapshot at once (the compute side takes work in order:
    /// the replica is where the core knows it is) and hands it back later.
    pub(crate) fn make_snapshot(&mut self, id: Id, target: &VersionVector, retract: &[Segment]) {
        let Some(n) = self.nodes.get(&id) else { return };
        let image = match seedswarm::crdt::snapshot::image_before(&n.replica, retract) {
            Ok(i) if target.is_empty() || &i.vv == target => i,
            Ok(_) => {
                let why = "could not reach that version vector".to_string();
                return self.schedule(10, Ev::SnapshotReady(id, Err(why)));
            }
            Err(e) => return self.schedule(10, Ev::SnapshotReady(id, Err(e))),
        };
        let s = seedswarm::crdt::snapshot::of(&image, n.core.log().prefix(&image.vv));
        self.schedule(10, Ev::SnapshotReady(id, Ok(Arc::new(s))));
    }

    /// Reports node `id`'s replica to its core.
    pub(crate) fn report(&mut self, id: Id) {
        let now = self.now();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let st = state(n);
        n.core.handle(now, Input::State(Box::new(st)));
        self.drain(id);
    }
}

pub(crate) fn state(n: &Node) -> ComputeState {
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
