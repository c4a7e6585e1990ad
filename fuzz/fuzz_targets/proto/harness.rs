//! The harness around `proto::Core`: its state `H` (what was given to the
//! core and what it owes, the snapshots in play, what the harness signed,
//! and the compute side's model), feeding inputs and draining `poll()` /
//! `next_apply()` after each, and the bookkeeping of gossip ids, request
//! tags and response channels (with the checks on requests to the node:
//! offer requests held ≤ 256, others answered at once).

use crate::input::{digest_of, R};
use crate::{trace, Pe, MAX_DELTA_BYTES, MAX_OFFER_WAITING};
use seedswarm::crdt::log::Log;
use seedswarm::crdt::replica::VersionVector;
use seedswarm::net::wire::{DeltaAnnounce, Request};
use seedswarm::proto::{ComputeState, Core, Input, Settings, Topic};
use seedswarm::zo::seed::Origin;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

type Fz = Core<Pe, u64, u64>;

/// What the compute side knows of one origin's applied updates: each seq's
/// code and (for a delta) its payload hash, and which seqs a signature it
/// was handed covers.
#[derive(Default)]
pub(crate) struct Hist {
    pub(crate) codes: Vec<Option<(u8, Option<[u8; 32]>)>>,
    pub(crate) covered: Vec<bool>,
}

/// Seqs beyond this are not tracked in `Hist` (the fuzzed seqs stay far
/// below it).
pub(crate) const HIST_MAX: u64 = 1 << 16;

impl Hist {
    pub(crate) fn set(&mut self, seq: u64, code: u8, hash: Option<[u8; 32]>) {
        if seq >= HIST_MAX {
            return;
        }
        let i = seq as usize;
        if self.codes.len() <= i {
            self.codes.resize(i + 1, None);
        }
        self.codes[i] = Some((code, hash));
    }
    pub(crate) fn get(&self, seq: u64) -> Option<(u8, Option<[u8; 32]>)> {
        self.codes.get(usize::try_from(seq).ok()?).copied().flatten()
    }
    pub(crate) fn cover(&mut self, from: u64, to: u64) {
        let to = to.min(HIST_MAX);
        if from >= to {
            return;
        }
        if self.covered.len() < to as usize {
            self.covered.resize(to as usize, false);
        }
        for c in &mut self.covered[from as usize..to as usize] {
            *c = true;
        }
    }
    pub(crate) fn is_covered(&self, seq: u64) -> bool {
        seq >= HIST_MAX || self.covered.get(seq as usize).copied().unwrap_or(false)
    }
    /// Codes and delta payload hashes of `[from, to)`, when all are known.
    pub(crate) fn batch(&self, from: u64, to: u64) -> Option<(Vec<u8>, Vec<[u8; 32]>)> {
        let mut codes = Vec::new();
        let mut hashes = Vec::new();
        for s in from..to {
            let (c, h) = self.get(s)?;
            codes.push(c);
            if let Some(h) = h {
                hashes.push(h);
            }
        }
        Some((codes, hashes))
    }
    /// Forgets `[from, …)` (retracted).
    pub(crate) fn cut(&mut self, from: u64) {
        let from = from.min(HIST_MAX) as usize;
        self.codes.truncate(from);
    }
}

pub(crate) struct H {
    pub(crate) core: Fz,
    pub(crate) t0: Instant,
    pub(crate) now_ms: u64,
    pub(crate) own: Origin,
    pub(crate) apply_max: usize,
    pub(crate) resume_mask: u8,
    // Gossip.
    pub(crate) next_msg: u64,
    pub(crate) given: HashMap<u64, Pe>,
    pub(crate) judged: HashSet<u64>,
    /// Delta announcements given (message id to origin and seq).
    pub(crate) announces: HashMap<u64, (Origin, u64)>,
    /// Payloads announced on the Deltas topic, to answer `Request::Delta`.
    pub(crate) announced: HashMap<(Origin, u64), Vec<u8>>,
    /// Heartbeat stamps (epoch, counter) last sent per peer.
    pub(crate) stamps: HashMap<Pe, (u64, u64)>,
    /// Counter of the next own heartbeat.
    pub(crate) own_heartbeats: u64,
    // What the harness signed or served.
    /// Peers that served a range with a batch not validly signed by its
    /// origin (or CBOR-decoded responses): the only ones that may be banned.
    pub(crate) forgers: HashSet<Pe>,
    /// Origins the harness signed other updates for than their honest
    /// history (or a valid proof against): the only ones that may be excluded.
    pub(crate) equivocated: HashSet<Origin>,
    /// Exclusions the core reported, by origin.
    pub(crate) excluded: BTreeMap<Origin, u64>,
    // Our requests.
    pub(crate) next_tag: u64,
    pub(crate) outstanding: BTreeMap<u64, (Pe, Request)>,
    pub(crate) delta_out: usize,
    // Requests to us.
    pub(crate) next_chan: u64,
    pub(crate) open: BTreeMap<u64, Request>,
    // Snapshots.
    /// A `MakeSnapshot` being made: the state it reaches, or why not.
    pub(crate) make_pending: Option<Result<VersionVector, String>>,
    /// Spot checks asked for (`Output::Check`), answered after the drain.
    pub(crate) checks: Vec<(Origin, u64)>,
    /// Built update batches carry bases (header bit `0x10`, with spot checks on).
    pub(crate) bases_on: bool,
    pub(crate) served: Vec<[u8; 32]>,
    pub(crate) offered: HashMap<[u8; 32], Vec<Vec<u8>>>,
    /// An `Install` being installed: the version vector vouched for.
    pub(crate) install: Option<VersionVector>,
    /// The version vector a snapshot installed.
    pub(crate) installed: VersionVector,
    pub(crate) kept: HashMap<([u8; 32], u32), Vec<u8>>,
    // The compute side: what it applied and persisted, per origin (own
    // included), and what it knows of the applied codes.
    pub(crate) applied: BTreeMap<Origin, u64>,
    pub(crate) persisted: BTreeMap<Origin, u64>,
    pub(crate) hist: BTreeMap<Origin, Hist>,
    pub(crate) own_next: u64,
    /// Nonzero: the node's state diverged (its digest is `[salt; 32]`).
    pub(crate) salt: u8,
    pub(crate) loss: f32,
    pub(crate) training_done: bool,
    pub(crate) training: bool,
    pub(crate) finished: bool,
}

impl H {
    /// A harness around a new core; the compute side has applied nothing.
    pub(crate) fn new(settings: Settings, apply_max: usize, resume_mask: u8) -> H {
        let t0 = Instant::now();
        let own = settings.signer.origin();
        H {
            core: Core::new(settings, Log::in_memory(crate::RUN), t0),
            t0,
            now_ms: 0,
            own,
            apply_max,
            resume_mask,
            next_msg: 0,
            given: HashMap::new(),
            judged: HashSet::new(),
            announces: HashMap::new(),
            announced: HashMap::new(),
            stamps: HashMap::new(),
            own_heartbeats: 0,
            forgers: HashSet::new(),
            equivocated: HashSet::new(),
            excluded: BTreeMap::new(),
            next_tag: 0,
            outstanding: BTreeMap::new(),
            delta_out: 0,
            next_chan: 0,
            open: BTreeMap::new(),
            make_pending: None,
            checks: Vec::new(),
            bases_on: false,
            served: Vec::new(),
            offered: HashMap::new(),
            install: None,
            installed: BTreeMap::new(),
            kept: HashMap::new(),
            applied: BTreeMap::new(),
            persisted: BTreeMap::new(),
            hist: BTreeMap::new(),
            own_next: 0,
            salt: 0,
            loss: f32::NAN,
            training_done: false,
            training: false,
            finished: false,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    /// The replica's digest in the model.
    pub(crate) fn digest(&self) -> [u8; 32] {
        digest_of(&self.applied, self.salt)
    }

    pub(crate) fn state(&self) -> ComputeState {
        ComputeState {
            vv: self.applied.clone(),
            digest: self.digest(),
            applied: self.applied.values().fold(0u64, |a, n| a.saturating_add(*n)),
            own: self.own_next,
            loss: self.loss,
            eval: None,
            training_done: self.training_done,
        }
    }

    /// Sets what is applied of `origin` (an entry at 0 is dropped, as a
    /// replica's version vector does).
    pub(crate) fn set_applied(&mut self, origin: Origin, n: u64) {
        if n == 0 {
            self.applied.remove(&origin);
        } else {
            self.applied.insert(origin, n);
        }
    }

    /// Hands an input to the core and plays shell and compute side.
    pub(crate) fn input(&mut self, input: Input<Pe, u64, u64>) {
        let now = self.now();
        if trace() {
            eprintln!("t={}ms in  {input:?}", self.now_ms);
        }
        self.core.handle(now, input);
        self.drain();
    }

    pub(crate) fn drain(&mut self) {
        loop {
            while let Some(out) = self.core.poll() {
                self.output(out);
            }
            // The compute side answers spot checks (always "agree" here:
            // what the core does with a verdict is not the point).
            let checks = std::mem::take(&mut self.checks);
            let answered = !checks.is_empty();
            for (origin, seq) in checks {
                let now = self.now();
                self.core.handle(
                    now,
                    Input::Checked {
                        origin,
                        seq,
                        result: Ok((seedswarm::zo::check::Verdict::Agree, 0.0)),
                    },
                );
            }
            if answered {
                continue;
            }
            let mut any = false;
            while let Some(seg) = self.core.next_apply(self.apply_max) {
                self.check_segment(&seg);
                any = true;
            }
            if !any {
                return;
            }
            let st = self.state();
            let now = self.now();
            self.core.handle(now, Input::State(Box::new(st)));
        }
    }

    pub(crate) fn gossip(
        &mut self,
        from: Pe,
        source: Option<Pe>,
        topic: Option<Topic>,
        data: Vec<u8>,
    ) {
        let id = self.next_msg;
        self.next_msg += 1;
        self.given.insert(id, from);
        if topic == Some(Topic::Deltas) {
            let origin = source.and_then(|p| seedswarm::proto::Peer::origin(&p));
            if let (Some(o), Ok(a)) = (origin, DeltaAnnounce::decode(&data, MAX_DELTA_BYTES)) {
                self.announces.insert(id, (o, a.seq));
            }
        }
        self.input(Input::Gossip {
            id,
            from,
            source,
            topic,
            data,
        });
    }

    pub(crate) fn request(&mut self, from: Pe, request: Request) {
        let channel = self.next_chan;
        self.next_chan += 1;
        let offer = matches!(request, Request::Offer { .. }) && request.validate().is_ok();
        self.open.insert(channel, request.clone());
        self.input(Input::Request {
            from,
            request,
            channel,
        });
        let held = self
            .open
            .values()
            .filter(|r| matches!(r, Request::Offer { .. }))
            .count();
        assert!(held <= MAX_OFFER_WAITING, "{held} offer requests held");
        if !offer {
            assert!(
                !self.open.contains_key(&channel),
                "request answered later than at once"
            );
        }
    }

    /// An outstanding tag chosen by the input, with its request.
    pub(crate) fn pick_tag(&mut self, r: &mut R) -> Option<(u64, Pe, Request)> {
        let i = usize::from(r.u8());
        if self.outstanding.is_empty() {
            return None;
        }
        let (&tag, (to, req)) = self.outstanding.iter().nth(i % self.outstanding.len())?;
        Some((tag, *to, req.clone()))
    }

    pub(crate) fn closed(&mut self, tag: u64) {
        if let Some((_, req)) = self.outstanding.remove(&tag) {
            if matches!(req, Request::Delta { .. }) {
                self.delta_out -= 1;
            }
        }
    }
}
