//! The harness around `proto::Core`: its state `H` (what was given to the
//! core and what it owes, the snapshots in play, and the compute side's
//! model), feeding inputs and draining `poll()` / `next_apply()` after each,
//! and the bookkeeping of gossip ids, request tags and response channels
//! (with the checks on requests to the node: offer requests held ≤ 256,
//! others answered at once).

use crate::input::R;
use crate::{trace, Pe, MAX_OFFER_WAITING};
use seedswarm::crdt::log::Log;
use seedswarm::net::wire::Request;
use seedswarm::proto::{ComputeState, Core, Input, Settings, Topic};
use seedswarm::zo::seed::{Origin, RunId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

type Fz = Core<Pe, u64, u64>;

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
    /// Payloads announced on the Deltas topic, to answer `Request::Delta`.
    pub(crate) announced: HashMap<(Origin, u64), Vec<u8>>,
    // Our requests.
    pub(crate) next_tag: u64,
    pub(crate) outstanding: BTreeMap<u64, (Pe, Request)>,
    pub(crate) delta_out: usize,
    // Requests to us.
    pub(crate) next_chan: u64,
    pub(crate) open: BTreeMap<u64, Request>,
    // Snapshots.
    pub(crate) make_pending: bool,
    pub(crate) served: Vec<[u8; 32]>,
    pub(crate) offered: HashMap<[u8; 32], Vec<Vec<u8>>>,
    pub(crate) install: Option<usize>,
    pub(crate) kept: HashMap<([u8; 32], u32), Vec<u8>>,
    // The compute side: what it applied, per origin (own included).
    pub(crate) applied: BTreeMap<Origin, u64>,
    pub(crate) own_next: u64,
    pub(crate) digest: [u8; 32],
    pub(crate) loss: f32,
    pub(crate) training_done: bool,
    pub(crate) training: bool,
    pub(crate) finished: bool,
}

impl H {
    /// A harness around a new core; the compute side has applied nothing.
    pub(crate) fn new(settings: Settings, own: Origin, apply_max: usize, resume_mask: u8) -> H {
        let t0 = Instant::now();
        H {
            core: Core::new(settings, Log::in_memory(RunId([7; 32])), t0),
            t0,
            now_ms: 0,
            own,
            apply_max,
            resume_mask,
            next_msg: 0,
            given: HashMap::new(),
            judged: HashSet::new(),
            announced: HashMap::new(),
            next_tag: 0,
            outstanding: BTreeMap::new(),
            delta_out: 0,
            next_chan: 0,
            open: BTreeMap::new(),
            make_pending: false,
            served: Vec::new(),
            offered: HashMap::new(),
            install: None,
            kept: HashMap::new(),
            applied: BTreeMap::new(),
            own_next: 0,
            digest: [0; 32],
            loss: f32::NAN,
            training_done: false,
            training: false,
            finished: false,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    pub(crate) fn state(&self) -> ComputeState {
        ComputeState {
            vv: self.applied.clone(),
            digest: self.digest,
            applied: self.applied.values().sum(),
            own: self.own_next,
            loss: self.loss,
            eval: None,
            training_done: self.training_done,
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
        let offer = matches!(request, Request::Offer) && request.validate().is_ok();
        self.open.insert(channel, request.clone());
        self.input(Input::Request {
            from,
            request,
            channel,
        });
        let held = self
            .open
            .values()
            .filter(|r| matches!(r, Request::Offer))
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
