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

mod admit;
pub mod check;
mod gossip;
mod io;
mod publish;
mod serve;
pub mod settle;
mod trust;

use crate::crdt::attest::{self, Attest, Proof, SignedBatch};
use crate::crdt::log::{Log, Op, Payload, Segment};
use crate::crdt::replica::VersionVector;
use crate::crdt::snapshot::Snapshot;
use crate::net::wire::{self, Heartbeat};
use crate::zo::seed::Origin;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use io::{ComputeState, Event, Input, Output, Own, Peer, Settings, Stats, Topic, Verdict};
pub use join::Join;
pub use repair::{PeerView, Repair, Timing};

/// A delta announcement whose payload is being fetched before the message is
/// judged (and so forwarded).
#[derive(Debug)]
struct DeltaWait<P, M> {
    id: M,
    from: P,
    hash: [u8; 32],
    len: u32,
    /// The origin's signature over the announced delta update.
    sig: [u8; attest::SIG_LEN],
}

/// A token bucket (burst of two seconds).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket for `rate` per second.
    fn full(rate: f64, now: Instant) -> Self {
        Self {
            tokens: 2.0 * rate,
            at: now,
        }
    }

    /// Refills at `rate` per second, then takes `n` tokens if it holds them.
    fn take(&mut self, now: Instant, rate: f64, n: f64) -> bool {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate)
            .min(2.0 * rate);
        self.at = now;
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }
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
/// Updates one origin may have waiting behind gaps, and batches.
pub const MAX_PENDING_PER_ORIGIN: u64 = 1 << 16;
const MAX_PENDING_BATCHES_PER_ORIGIN: usize = 1024;
/// Updates all origins together may have waiting behind gaps, in at most
/// this many batches, with at most this many delta payload bytes.
pub const MAX_PENDING: u64 = 1 << 22;
pub const MAX_PENDING_BATCHES: usize = 1 << 16;
pub const MAX_PENDING_PAYLOAD_BYTES: usize = 64 << 20;
/// A proof is sent again to a peer still announcing excluded updates at
/// most this often.
const PROOF_RESEND: Duration = Duration::from_secs(5);
/// Sync requests a peer may make per second (burst of two seconds); an
/// offer or a fingerprint request costs [`COSTLY_REQUEST`] of them.
const REQUESTS_PER_SECOND: f64 = 100.0;
const COSTLY_REQUEST: f64 = 20.0;
/// Origins the log takes updates of, at most (beyond, batches of new
/// origins are ignored).
pub const MAX_LOG_ORIGINS: usize = wire::MAX_ORIGINS;
/// Distinct peers counted as seen, at most (the count saturates there).
const MAX_SEEN: usize = 1 << 16;
/// Peers whose newest heartbeat stamp is remembered, at most.
const MAX_HEARD: usize = 1 << 14;
/// Fingerprints are asked of one peer at most this often.
const FINGERPRINT_EVERY: Duration = Duration::from_secs(10);
/// Peers banned at most (the oldest is forgotten first).
const MAX_BANNED: usize = 4096;

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
    /// Own one-byte updates waiting to be published: first seq, codes, and
    /// the state each was computed on.
    outbox: Option<(u64, Vec<u8>, Vec<VersionVector>)>,
    /// Spot checks of foreign updates waiting or in flight.
    checks: check::Checks,
    delta_waits: HashMap<(Origin, u64), DeltaWait<P, M>>,
    buckets: HashMap<Origin, Bucket>,
    /// Per requesting peer, a token bucket over sync requests.
    request_buckets: HashMap<P, Bucket>,
    requests: HashMap<u64, (P, wire::Request)>,
    next_tag: u64,
    served: VecDeque<(Arc<Snapshot>, Instant)>,
    /// Offer requests waiting for a snapshot at their version vector (empty:
    /// the current state).
    offer_waiting: Vec<(VersionVector, C)>,
    snapshot_inflight: bool,
    peers_seen: HashSet<P>,
    /// Peers reachable only through relays (as the shell says: bounded by
    /// its connections).
    relayed: HashSet<P>,
    /// Peers that served forged data, oldest first.
    banned: VecDeque<P>,
    /// When each exclusion's proof was last published.
    proof_sent: HashMap<Origin, Instant>,
    /// When fingerprints were last asked of each peer.
    fingerprints_asked: HashMap<P, Instant>,
    /// When records were last asked of each peer (bounded).
    records_asked: HashMap<P, Instant>,
    /// Peers asked for records on first meeting them.
    records_met: usize,
    /// The time of the input being handled.
    now: Instant,
    /// Heartbeats sent since start.
    heartbeats_sent: u64,
    /// The newest (epoch, counter) heard from each peer (bounded).
    heard: HashMap<P, (u64, u64)>,
    /// Per origin: seqs `[from, to)` a snapshot installed in the replica
    /// whose signed batches are not stored yet (repair fetches them; they are
    /// then handed out only to be stored).
    unstored: BTreeMap<Origin, (u64, u64)>,
    /// Per origin with data behind a gap: where the gap starts, and since when.
    gap_since: HashMap<Origin, (u64, Instant)>,
    drop_rng: u64,
    started_training: bool,
    last_publish: Instant,
    last_heartbeat: Option<Instant>,
    done_since: Option<Instant>,
    done_heartbeats: u32,
    settled: bool,
    /// Every update heartbeats announced, and who agreed with this node.
    known: settle::Known<P>,
    finished: bool,
    stats: Stats,
    out: VecDeque<Output<P, M, C>>,
}

impl<P: Peer, M: Clone + Debug, C: Debug> Core<P, M, C> {
    /// A core over `log` (recovered from disk, or empty); the compute side
    /// holds a replica with exactly `log` applied.
    pub fn new(settings: Settings, mut log: Log, now: Instant) -> Self {
        let origin = settings.signer.origin();
        log.set_owner(settings.owner);
        attest_own(&mut log, &settings.signer);
        let delivered = log.version_vector();
        let mut join =
            Join::with_quorum(settings.join, log.is_empty(), now, settings.snapshot_quorum);
        if let Some(rate) = settings.apply_rate {
            join.set_apply_rate(rate);
        }
        Self {
            repair: Repair::new(settings.timing).with_own(origin),
            join,
            delivered,
            log,
            state: None,
            outbox: None,
            checks: check::Checks::default(),
            delta_waits: HashMap::new(),
            buckets: HashMap::new(),
            request_buckets: HashMap::new(),
            requests: HashMap::new(),
            next_tag: 0,
            served: VecDeque::new(),
            offer_waiting: Vec::new(),
            snapshot_inflight: false,
            peers_seen: HashSet::new(),
            relayed: HashSet::new(),
            banned: VecDeque::new(),
            proof_sent: HashMap::new(),
            fingerprints_asked: HashMap::new(),
            records_asked: HashMap::new(),
            records_met: 0,
            now,
            heartbeats_sent: 0,
            heard: HashMap::new(),
            gap_since: HashMap::new(),
            unstored: BTreeMap::new(),
            drop_rng: u64::from_le_bytes(origin.0[..8].try_into().unwrap_or([1; 8])) | 1,
            started_training: false,
            last_publish: now,
            last_heartbeat: None,
            done_since: None,
            done_heartbeats: 0,
            settled: false,
            known: settle::Known::default(),
            finished: false,
            stats: Stats::default(),
            out: VecDeque::new(),
            settings,
        }
    }

    /// Takes an input; outputs queue up for [`Core::poll`].
    pub fn handle(&mut self, now: Instant, input: Input<P, M, C>) {
        self.now = now;
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
            Input::Own { seq, update, basis } => self.on_own(now, seq, update, basis),
            Input::Checked {
                origin,
                seq,
                result,
            } => self.on_checked(now, origin, seq, result),
            Input::State(st) => self.on_state(now, *st),
            Input::Snapshot(s) => {
                self.snapshot_inflight = false;
                self.served.push_front((s, now));
                self.served.truncate(SNAPSHOTS_KEPT);
                self.answer_offers(now);
                self.serve_snapshots(now);
            }
            Input::SnapshotFailed(why) => {
                self.snapshot_inflight = false;
                tracing::debug!(%why, "no snapshot of that state");
                // Refuse the first waiting request's state; the rest go on.
                if let Some((target, _)) = self.offer_waiting.first() {
                    let target = target.clone();
                    self.refuse_offers(&target, &why);
                }
                self.serve_snapshots(now);
            }
            Input::Installed(r) => self.on_installed(now, r),
            Input::KeptChunk { id, index, data } => {
                self.join.on_kept_chunk(id, index, data);
            }
            Input::Forget(p) => {
                self.repair.forget(&p);
                self.fingerprints_asked.remove(&p);
                self.relayed.remove(&p);
            }
            Input::Relayed { peer, only } => {
                if only {
                    self.relayed.insert(peer);
                } else {
                    self.relayed.remove(&peer);
                }
            }
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
        // An exclusion first takes back what was applied past it.
        let own = self.settings.signer.origin();
        // Own updates too (only a revocation excludes this node's own
        // origin), but only once the compute side has stopped training and
        // every own update it made and applied is in the log: it applies
        // them before the core hears of them.
        let own_settled = self
            .state
            .as_ref()
            .is_some_and(|st| st.training_done && st.own == self.log.next_seq(&own));
        let back = self.delivered.iter().find_map(|(o, &d)| {
            let from = self.log.exclusion(o)?.from;
            (d > from && (*o != own || own_settled)).then_some((*o, from, d))
        });
        if let Some((origin, from, to)) = back {
            let seg = self.log.retraction(&origin, from, to);
            if seg.end() != to {
                // Installed with a snapshot, never held one by one: there is
                // nothing to subtract them with (see the README's limits).
                tracing::error!(origin = %origin.short(), from, to, held = seg.end(), "cannot take back updates of an excluded origin this node never held; its state now differs");
                self.delivered.insert(origin, from);
                return self.next_apply(max);
            }
            if from == 0 {
                self.delivered.remove(&origin);
            } else {
                self.delivered.insert(origin, from);
            }
            self.stats.retracted += seg.codes.len() as u64;
            return Some(seg);
        }
        // Signed batches of what a snapshot installed: only to be stored.
        let stored = self.unstored.iter().find_map(|(o, &(from, to))| {
            let held = self.log.next_seq(o).min(to);
            (held > from).then_some((*o, from, held, to))
        });
        if let Some((origin, from, held, to)) = stored {
            let end = self.log.batch_end(&origin, held).min(to).max(held);
            let mut seg = self.log.segment(&origin, from, end);
            seg.op = Op::Store;
            if seg.end() >= to {
                self.unstored.remove(&origin);
            } else {
                self.unstored.insert(origin, (seg.end(), to));
            }
            return Some(seg);
        }
        // Called after every input: walk the log's heads, allocate nothing.
        let (origin, from, to) = self.log.heads().find_map(|(o, to)| {
            let from = self.delivered.get(o).copied().unwrap_or(0);
            (to > from).then_some((*o, from, to))
        })?;
        // Whole signed batches, so each signature is stored with its codes.
        let to = self
            .log
            .batch_end(&origin, to.min(from + max.max(1) as u64))
            .min(to);
        let seg = self.log.segment(&origin, from, to);
        self.delivered.insert(origin, to);
        Some(seg)
    }

    /// This node's origin.
    pub fn origin(&self) -> Origin {
        self.settings.signer.origin()
    }

    /// The update log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.peers_seen = self.peers_seen.len();
        s.admitted = self.log.admissions().len();
        s.excluded = self
            .log
            .exclusions()
            .iter()
            .map(|(o, e)| (o.to_hex(), e.from))
            .collect();
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

    /// Live peers settling waits for, with why (empty when agreed or no
    /// state yet).
    pub fn waiting_for(&self) -> Vec<(P, &'static str)> {
        match &self.state {
            Some(st) => self.repair.waiting_for(&st.vv, &st.digest),
            None => Vec::new(),
        }
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
        self.next_check(now);
        if !self.started_training
            && !self.join.active()
            && self.repair.peers().len() >= self.settings.min_peers
        {
            self.started_training = true;
            self.emit(Output::StartTraining);
        }
        for gone in self.repair.expire(now) {
            // Its newest heartbeat stamp stays remembered: an old heartbeat
            // replayed later must not make a departed peer look alive.
            self.fingerprints_asked.remove(&gone);
            self.event(Event::PeerSilent(gone));
        }
        self.give_up_gaps(now);
        if !self.join.active() {
            let caps = self.repair_caps();
            let held: VersionVector = self
                .log
                .heads()
                .map(|(o, _)| (*o, self.log.next_seq(o)))
                .collect();
            let asks = self.repair.plan(&held, &self.log.gaps(), &caps, now);
            for ask in asks {
                let req = wire::Request::Range {
                    origin: ask.origin,
                    from: ask.from,
                    to: ask.to,
                };
                self.send(ask.peer, req);
            }
        }
        if self.outbox.is_some() && now.duration_since(self.last_publish) >= self.publish_every() {
            self.flush_outbox();
            self.last_publish = now;
        }
        let due = self
            .last_heartbeat
            .is_none_or(|t| now.duration_since(t) >= self.heartbeat_every());
        if due {
            self.last_heartbeat = Some(now);
            self.prune_buckets(now);
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

    fn on_state(&mut self, now: Instant, st: ComputeState) {
        if st.training_done && self.done_since.is_none() {
            self.done_since = Some(now);
            self.flush_outbox();
        }
        self.state = Some(st);
    }

    /// Drives the join: decide, ask for offers, fetch chunks, install.
    fn drive_join(&mut self, now: Instant) {
        let was = self.join.active();
        // Sorted: the core decides the same way whatever the hash order.
        let mut peers: Vec<P> = self.repair.peers().keys().cloned().collect();
        peers.sort();
        // Snapshots come over direct connections only.
        let relayed = peers.len();
        peers.retain(|p| !self.relayed.contains(p));
        if peers.is_empty() && relayed > 0 && self.join.waiting() {
            self.join.relayed_only(now);
            if was && !self.join.active() {
                let chosen = self.join.chosen;
                self.event(Event::Joined(chosen));
            }
            return;
        }
        let best: u64 = self.repair.best().values().sum();
        let params = self.settings.shapes.iter().map(|(_, n)| *n as usize).sum();
        let views = self.repair.peers();
        let vouchers = |vv: &[(Origin, u64)], digest: &[u8; 32]| -> Vec<P> {
            views
                .iter()
                .filter(|(_, v)| {
                    &v.digest == digest
                        && v.vv.len() == vv.len()
                        && vv.iter().all(|(o, n)| v.vv.get(o) == Some(n))
                })
                .map(|(p, _)| p.clone())
                .collect()
        };
        // A state the quorum's most advanced peers all hold: every honest
        // one of them offers the identical snapshot of it.
        let quorum = self.settings.snapshot_quorum;
        let target: Vec<(Origin, u64)> = self.repair.common(quorum).into_iter().collect();
        let refused = self.join.refused;
        let actions = self
            .join
            .tick(now, &peers, best, params, &target, &vouchers);
        // Offers not enough peers vouched for (a poisoned snapshot, or
        // peers at different states) are counted like any refused input.
        for _ in refused..self.join.refused {
            self.count("offer_unvouched");
        }
        for action in actions {
            match action {
                join::Action::Ask(p, req) => self.send(p, req),
                join::Action::Install {
                    chunks,
                    hashes,
                    vv,
                    digest,
                } => {
                    tracing::info!(chunks = chunks.len(), "snapshot fetched; installing");
                    self.emit(Output::Install {
                        chunks,
                        hashes,
                        vv: vv.into_iter().collect(),
                        digest,
                    });
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
    fn on_installed(&mut self, now: Instant, r: Result<(VersionVector, Vec<Segment>), String>) {
        let ok = r.is_ok();
        match r {
            Ok((vv, segments)) => {
                let mut stored: HashMap<Origin, u64> = HashMap::new();
                for s in segments {
                    let at = self.store_signed_prefix(now, &s);
                    stored.insert(s.origin, at);
                }
                for (o, &n) in &vv {
                    // What the compute side persisted: the verified prefix.
                    let kept = stored.get(o).copied().unwrap_or(0);
                    if kept < n {
                        tracing::info!(
                            origin = %o.short(),
                            kept,
                            of = n,
                            "snapshot log not signed past this seq; the rest is repaired"
                        );
                        self.unstored.insert(*o, (kept, n));
                    }
                }
                // Updates past the snapshot's version vector are handed out.
                self.delivered = vv;
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
        self.buckets
            .entry(origin)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(now, rate, n)
    }

    /// Stores a batch (with the payloads of its delta updates); returns how
    /// many updates were new.
    fn accept(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
        payloads: &[Payload],
        attest: Attest,
    ) -> u64 {
        match self
            .log
            .insert_signed(origin, first_seq, codes, payloads, Some(attest))
        {
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

/// Signs this node's own held codes that no signature covers yet (after a
/// restart: the signatures of own batches are not persisted, the node signs
/// again what it holds).
/// Signs the own origin's updates in `log` past its signed frontier, in
/// batches as they are published (the log file keeps foreign origins'
/// signatures; a node signs its own again on start, and an export too).
pub fn attest_own(log: &mut Log, signer: &attest::Signer) {
    let own = signer.origin();
    let n = log.next_seq(&own);
    let mut at = log.signed_through(&own);
    while at < n {
        // Batches as published: runs of one-byte codes, each delta alone
        // (so a served batch carries at most one payload).
        let codes = log.range(&own, at, n.min(at + wire::MAX_BATCH as u64));
        let len = match codes.iter().position(|&c| c == crate::crdt::log::DELTA) {
            Some(0) => 1,
            Some(k) => k,
            None => codes.len(),
        } as u64;
        let end = at + len;
        let codes = codes[..len as usize].to_vec();
        let payloads = log.payloads_in(&own, at, end);
        let Some(hashes) = attest::payload_hashes(&codes, &payloads) else {
            tracing::warn!(seq = at, "own delta payload missing; not signed again");
            return;
        };
        log.attest(own, signer.sign(at, &codes, &hashes));
        at = end;
    }
}

#[cfg(test)]
mod tests;
