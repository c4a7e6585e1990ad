//! The network actor: owns the libp2p `Swarm`, validates gossip, batches
//! own updates, heartbeats, serves and plans repairs, drives joins, and
//! publishes the node's status.

use super::compute::{compute_thread, ComputeLimits, ComputeState, FromCompute, ToCompute};
use super::*;
use crate::log::{Payload, DELTA};

/// A delta announcement whose payload is being fetched before the message is
/// validated (and so forwarded).
struct DeltaWait {
    message_id: gossipsub::MessageId,
    source: PeerId,
    hash: [u8; 32],
    len: u32,
}

/// Payload bytes a range response carries at most (beyond its first delta).
const RANGE_PAYLOAD_BUDGET: usize = 4 << 20;
/// Delta payloads being fetched at once, per origin and in all.
const MAX_WAITS_PER_ORIGIN: usize = 16;
const MAX_WAITS: usize = 1024;

/// Per-origin token bucket over updates.
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub(super) struct Actor {
    cfg: Config,
    opts: Options,
    swarm: Swarm<Behaviour>,
    topics: Topics,
    origin: Origin,
    mirror: Log,
    sync: sync::Sync<PeerId>,
    registry: Arc<Mutex<Registry>>,
    metrics: Metrics,
    series: Series,
    started: Instant,
    last_rate: Option<(Instant, u64, u64, u64)>,
    digest_mismatches: u64,
    status_tx: watch::Sender<Status>,
    listen: Vec<Multiaddr>,
    trainer: Option<Trainer>,
    state: Option<ComputeState>,
    outbox: Option<(u64, Vec<u8>)>,
    deliver: VecDeque<(Origin, u64, Vec<u8>, Vec<Payload>)>,
    delta_waits: HashMap<(Origin, u64), DeltaWait>,
    shapes: Vec<(String, u64)>,
    buckets: HashMap<Origin, Bucket>,
    rejected: BTreeMap<String, u64>,
    requests: HashMap<request_response::OutboundRequestId, wire::Request>,
    join: join::Join,
    params: usize,
    served: VecDeque<(Arc<Snapshot>, Instant)>,
    offer_waiting: Vec<request_response::ResponseChannel<wire::Response>>,
    want_snapshot: bool,
    snapshot_inflight: bool,
    dropped: u64,
    drop_rng: u64,
    published_through: u64,
    repaired: u64,
    foreign_received: u64,
    published_messages: u64,
    published_updates: u64,
    peers_seen: std::collections::HashSet<PeerId>,
    max_connected: usize,
    backlog_max: u64,
    backlog_sum: f64,
    backlog_samples: u64,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: Config,
        opts: Options,
        trainer: Trainer,
        swarm: Swarm<Behaviour>,
        topics: Topics,
        mirror: Log,
        (registry, metrics, series): (Arc<Mutex<Registry>>, Metrics, Series),
        status_tx: watch::Sender<Status>,
        listen: Vec<Multiaddr>,
    ) -> Self {
        let origin = trainer.origin();
        let params = trainer.replica().num_params();
        let shapes = trainer
            .replica()
            .slots()
            .iter()
            .map(|s| (s.name.clone(), s.base.len() as u64))
            .collect();
        let join = join::Join::new(opts.join, mirror.is_empty(), Instant::now());
        Self {
            join,
            params,
            served: VecDeque::new(),
            offer_waiting: Vec::new(),
            want_snapshot: false,
            snapshot_inflight: false,
            sync: sync::Sync::new(opts.timing),
            drop_rng: u64::from_le_bytes(origin.0[..8].try_into().unwrap_or([1; 8])) | 1,
            cfg,
            opts,
            swarm,
            topics,
            origin,
            mirror,
            registry,
            metrics,
            series,
            started: Instant::now(),
            last_rate: None,
            digest_mismatches: 0,
            status_tx,
            listen,
            trainer: Some(trainer),
            state: None,
            outbox: None,
            deliver: VecDeque::new(),
            delta_waits: HashMap::new(),
            shapes,
            buckets: HashMap::new(),
            rejected: BTreeMap::new(),
            requests: HashMap::new(),
            dropped: 0,
            published_through: 0,
            repaired: 0,
            foreign_received: 0,
            published_messages: 0,
            published_updates: 0,
            peers_seen: Default::default(),
            max_connected: 0,
            backlog_max: 0,
            backlog_sum: 0.0,
            backlog_samples: 0,
        }
    }

    pub(super) async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut control: mpsc::Receiver<Control>,
    ) -> Result<Summary, Error> {
        let start = Instant::now();
        let run_id = self.mirror.run();
        for addr in self.opts.bootstrap.clone() {
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
        let trainer = self
            .trainer
            .take()
            .ok_or_else(|| Error::Compute("no trainer".into()))?;
        let (to_compute, compute_rx) = smpsc::sync_channel::<ToCompute>(1024);
        let (compute_tx, mut from_compute) = mpsc::channel::<FromCompute>(4096);
        let gate = Arc::new(Mutex::new(self.opts.min_peers == 0 && !self.join.active()));
        let limits = ComputeLimits {
            series: self.series.clone(),
            max_updates: self.opts.max_updates,
            deadline: self.opts.duration.map(|d| Instant::now() + d),
            start_gate: gate.clone(),
        };
        let cfg = self.cfg.clone();
        let compute = std::thread::Builder::new()
            .name("seedswarm-compute".into())
            .spawn(move || compute_thread(trainer, cfg, limits, compute_rx, compute_tx))
            .map_err(|e| Error::Compute(e.to_string()))?;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_publish = Instant::now();
        let mut last_heartbeat = Instant::now() - self.opts.heartbeat_interval;
        let mut done_since: Option<Instant> = None;
        let mut done_heartbeats = 0u32;
        let mut settled = false;
        let mut failure: Option<String> = None;
        let mut initial_eval: Option<Eval> = None;
        let mut crashed = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(cmd) = control.recv() => match cmd {
                    Control::Crash => {
                        crashed = true;
                        break;
                    }
                    Control::Block(peers) => {
                        for p in peers {
                            self.swarm.behaviour_mut().blocked.block_peer(p);
                            self.sync.forget(&p);
                        }
                    }
                    Control::Unblock(peers) => {
                        for p in peers {
                            self.swarm.behaviour_mut().blocked.unblock_peer(p);
                            if let Err(e) = self.swarm.dial(p) {
                                tracing::debug!(peer = %p, error = %e, "redial failed");
                            }
                        }
                    }
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.drive_join(now, &to_compute);
                    self.serve_snapshots(&to_compute);
                    {
                        let mut g = gate.lock().unwrap_or_else(|e| e.into_inner());
                        if !*g && self.sync.peers().len() >= self.opts.min_peers && !self.join.active() {
                            tracing::info!(peers = self.sync.peers().len(), "enough peers; training starts");
                            *g = true;
                        }
                    }
                    self.feed_compute(&to_compute);
                    for gone in self.sync.expire(now) {
                        tracing::info!(peer = %gone, "peer went silent; no longer waited on");
                    }
                    let asks = if self.join.active() {
                        Vec::new()
                    } else {
                        self.sync.plan(&self.mirror.version_vector(), &self.mirror.gaps(), now)
                    };
                    for ask in asks {
                        let req = wire::Request::Range { origin: ask.origin, from: ask.from, to: ask.to };
                        let id = self.swarm.behaviour_mut().sync.send_request(&ask.peer, req.clone());
                        self.requests.insert(id, req);
                    }
                    if now.duration_since(last_heartbeat) >= self.opts.heartbeat_interval {
                        last_heartbeat = now;
                        let done = done_since.is_some() && self.outbox.is_none();
                        self.heartbeat(done, false);
                        if done { done_heartbeats += 1; }
                        self.sample_backlog();
                        self.publish_status(settled, done_since.is_some());
                    }
                    if let Some(since) = done_since {
                        let agreed = self.agreed();
                        if agreed && done_heartbeats >= 2 {
                            if !settled {
                                tracing::info!("swarm agrees: same version vector and digest everywhere");
                            }
                            settled = true;
                        }
                        if self.opts.exit_when_settled && (settled || now.duration_since(since) > self.opts.settle_timeout) {
                            if !settled {
                                tracing::warn!(timeout = ?self.opts.settle_timeout, "stopping before the swarm agreed");
                            }
                            break;
                        }
                    }
                }
                event = self.swarm.select_next_some() => {
                    self.on_swarm_event(event);
                    self.feed_compute(&to_compute);
                }
                msg = from_compute.recv() => match msg {
                    Some(FromCompute::Published { seq, code }) => self.on_published(seq, code),
                    Some(FromCompute::PublishedDelta { seq, payload }) => {
                        self.on_published_delta(seq, payload)
                    }
                    Some(FromCompute::State(st)) => {
                        if initial_eval.is_none() {
                            initial_eval = st.eval;
                        }
                        if st.training_done && done_since.is_none() {
                            done_since = Some(Instant::now());
                            self.flush_outbox();
                        }
                        self.state = Some(*st);
                    }
                    Some(FromCompute::Snapshot(s)) => {
                        self.snapshot_inflight = false;
                        self.served.push_front((s, Instant::now()));
                        self.served.truncate(2);
                        self.answer_offers();
                    }
                    Some(FromCompute::Installed(r)) => {
                        tracing::info!(ok = r.is_ok(), "snapshot installed");
                        let ok = r.is_ok();
                        match r {
                            Ok(codes) => self.installed(codes),
                            Err(e) => tracing::warn!(error = %e, "snapshot install failed"),
                        }
                        self.join.on_installed(ok, Instant::now());
                        self.feed_compute(&to_compute);
                    }
                    Some(FromCompute::Failed(e)) => { failure = Some(e); break; }
                    None => { failure = Some("compute thread ended".into()); break; }
                },
            }
            // Publishing is due by time, whichever branch ran.
            if self.outbox.is_some() && last_publish.elapsed() >= self.opts.publish_interval {
                self.flush_outbox();
                last_publish = Instant::now();
            }
        }
        // Leave: announce, stop compute, collect the final evaluation.
        if crashed {
            self.outbox = None;
        } else {
            self.flush_outbox();
            self.heartbeat(true, true);
        }
        let _ = to_compute.send(ToCompute::StopTraining);
        let _ = to_compute.send(ToCompute::Stop);
        // Keep the swarm polled briefly so the leave message goes out.
        let linger = Duration::from_millis(if crashed { 0 } else { 300 });
        let flush_until = tokio::time::Instant::now() + linger;
        while let Ok(event) =
            tokio::time::timeout_at(flush_until, self.swarm.select_next_some()).await
        {
            self.on_swarm_event(event);
        }
        // Drain compute messages until it ends, then join it.
        while let Some(msg) = from_compute.recv().await {
            if let FromCompute::State(st) = msg {
                self.state = Some(*st);
            }
        }
        let final_eval = tokio::task::spawn_blocking(move || compute.join())
            .await
            .map_err(|e| Error::Compute(e.to_string()))?
            .map_err(|_| Error::Compute("compute thread panicked".into()))?;
        if let Some(e) = failure {
            return Err(Error::Compute(e));
        }
        self.publish_status(settled, true);
        let st = self.state.clone();
        let (bytes_in, bytes_out) = self.bandwidth();
        let applied = st.as_ref().map_or(0, |s| s.applied);
        Ok(Summary {
            peer_id: self.swarm.local_peer_id().to_string(),
            mode: self.cfg.node.mode.to_string(),
            origin: self.origin.to_hex(),
            run_id: run_id.to_hex(),
            digest: st.as_ref().map(|s| hex(&s.digest)).unwrap_or_default(),
            version_vector: st.as_ref().map(|s| vv_hex(&s.vv)).unwrap_or_default(),
            updates_applied: applied,
            own_updates: st.as_ref().map_or(0, |s| s.own),
            initial_accuracy: initial_eval.map_or(f64::NAN, |e| e.accuracy()),
            accuracy: final_eval.map_or(f64::NAN, |e| e.accuracy()),
            final_loss: final_eval.map_or(f64::NAN, |e| e.loss()),
            wall_seconds: start.elapsed().as_secs_f64(),
            settled,
            peers_seen: self.peers_seen.len(),
            max_connected: self.max_connected,
            rejected: self.rejected.clone(),
            dropped_by_test_hook: self.dropped,
            repaired_updates: self.repaired,
            foreign_updates_received: self.foreign_received,
            bytes_in,
            bytes_out,
            wire_bytes_in_per_update: bytes_in as f64 / self.foreign_received.max(1) as f64,
            gossip_messages_published: self.published_messages,
            mean_updates_per_message: self.published_updates as f64
                / self.published_messages.max(1) as f64,
            max_backlog: self.backlog_max,
            mean_backlog: self.backlog_sum / self.backlog_samples.max(1) as f64,
            join: self.join.chosen.to_string(),
            join_seconds: self.join.seconds(),
            snapshot_bytes_fetched: self.join.fetched_bytes,
            snapshot_raw_bytes: self.join.raw_bytes,
        })
    }

    fn bandwidth(&self) -> (u64, u64) {
        bandwidth(&self.registry.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn backlog(&self) -> u64 {
        let applied = self.state.as_ref().map_or(0, |s| s.applied);
        (self.mirror.len() + self.mirror.pending_updates()).saturating_sub(applied)
    }

    fn sample_backlog(&mut self) {
        let b = self.backlog();
        self.backlog_max = self.backlog_max.max(b);
        self.backlog_sum += b as f64;
        self.backlog_samples += 1;
    }

    /// Local state agrees with every live peer, and nothing is left to apply.
    fn agreed(&self) -> bool {
        let Some(st) = &self.state else { return false };
        st.training_done
            && self.outbox.is_none()
            && self.deliver.is_empty()
            && self.mirror.pending_updates() == 0
            && self.mirror.version_vector() == st.vv
            && self.sync.settled(&st.vv, &st.digest)
    }

    fn reject(&mut self, reason: &str) {
        self.series.reject(reason);
        *self.rejected.entry(reason.to_string()).or_insert(0) += 1;
    }

    fn on_published(&mut self, seq: u64, code: u8) {
        self.series.updates_published.inc();
        let _ = self.mirror.insert(self.origin, seq, &[code]);
        match &mut self.outbox {
            Some((first, codes)) if *first + codes.len() as u64 == seq => codes.push(code),
            _ => {
                self.flush_outbox();
                self.outbox = Some((seq, vec![code]));
            }
        }
        let max = self.opts.publish_max.clamp(1, wire::MAX_BATCH);
        if self.outbox.as_ref().is_some_and(|(_, c)| c.len() >= max) {
            self.flush_outbox();
        }
    }

    /// Stores an own delta update and announces it; peers pull the payload.
    fn on_published_delta(&mut self, seq: u64, payload: Payload) {
        self.series.updates_published.inc();
        self.flush_outbox();
        let announce = wire::DeltaAnnounce {
            seq,
            len: payload.len() as u32,
            hash: *blake3::hash(&payload).as_bytes(),
        };
        if let Err(e) = self
            .mirror
            .insert_with(self.origin, seq, &[DELTA], &[payload])
        {
            tracing::warn!(error = %e, "cannot store own delta");
        }
        let data = announce.encode();
        self.series.bytes("gossip_deltas", "out", data.len());
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topics.deltas.hash(), data)
        {
            Ok(_) => {
                self.published_through = self.published_through.max(seq + 1);
                self.published_messages += 1;
                self.published_updates += 1;
            }
            Err(e) => tracing::debug!(error = %e, "delta announcement deferred to repair"),
        }
    }

    /// Decodes a delta payload and checks it fits this run's trainable tensors.
    fn check_delta(&self, payload: &[u8]) -> Result<(), String> {
        if payload.len() > self.cfg.run.delta.max_bytes {
            return Err(format!("delta of {} bytes", payload.len()));
        }
        let d = crate::fedzip::decode(payload, self.params as u64).map_err(|e| e.to_string())?;
        for t in &d.tensors {
            match self.shapes.iter().find(|(n, _)| *n == t.name) {
                Some((_, len)) if *len == t.len => {}
                Some(_) => return Err(format!("tensor {} has another length", t.name)),
                None => return Err(format!("tensor {} is not trainable in this run", t.name)),
            }
        }
        Ok(())
    }

    /// Validates a delta announcement. The payload is pulled from the peer
    /// that forwarded it (which validated it, so it holds the payload); the
    /// message is accepted, and forwarded, only once the payload checks out.
    fn on_delta_announce(
        &mut self,
        message: &gossipsub::Message,
        message_id: &gossipsub::MessageId,
        propagation_source: PeerId,
    ) -> Option<MessageAcceptance> {
        let Some(source) = message.source else {
            self.reject("unsigned");
            return Some(MessageAcceptance::Reject);
        };
        let Some(origin) = net::origin_of_peer(&source) else {
            self.reject("forged");
            return Some(MessageAcceptance::Reject);
        };
        let a = match wire::DeltaAnnounce::decode(&message.data, self.cfg.run.delta.max_bytes) {
            Ok(a) => a,
            Err(e) => return Some(self.refuse_decode(&e)),
        };
        if origin == self.origin {
            return Some(MessageAcceptance::Ignore);
        }
        let held = self.mirror.range(&origin, a.seq, a.seq + 1);
        if let Some(&code) = held.first() {
            let same = code == DELTA
                && self
                    .mirror
                    .payload(&origin, a.seq)
                    .is_some_and(|p| *blake3::hash(p).as_bytes() == a.hash);
            return Some(if same {
                self.reject("replayed");
                MessageAcceptance::Ignore
            } else {
                self.reject("equivocation");
                MessageAcceptance::Reject
            });
        }
        if !self.take_tokens(origin, 1.0) {
            self.reject("over_rate");
            return Some(MessageAcceptance::Reject);
        }
        if self.delta_waits.contains_key(&(origin, a.seq)) || self.test_drop() {
            return Some(MessageAcceptance::Ignore);
        }
        // Bounded work per announcer: beyond the caps an announcement is
        // ignored (unpenalized); range repair fetches what it missed later.
        let of_origin = self
            .delta_waits
            .keys()
            .filter(|(o, _)| *o == origin)
            .count();
        if of_origin >= MAX_WAITS_PER_ORIGIN || self.delta_waits.len() >= MAX_WAITS {
            self.reject("deltas_busy");
            return Some(MessageAcceptance::Ignore);
        }
        self.delta_waits.insert(
            (origin, a.seq),
            DeltaWait {
                message_id: message_id.clone(),
                source: propagation_source,
                hash: a.hash,
                len: a.len,
            },
        );
        self.send(
            propagation_source,
            wire::Request::Delta { origin, seq: a.seq },
        );
        None
    }

    /// The payload of an announced delta arrived (or could not be fetched).
    fn on_delta_payload(&mut self, origin: Origin, seq: u64, data: Option<Vec<u8>>) {
        let Some(w) = self.delta_waits.remove(&(origin, seq)) else {
            return;
        };
        let verdict = match data {
            None => MessageAcceptance::Ignore,
            Some(data) => {
                let fits =
                    data.len() == w.len as usize && *blake3::hash(&data).as_bytes() == w.hash;
                match (fits, self.check_delta(&data)) {
                    (true, Ok(())) => {
                        self.series.bytes("delta", "in", data.len());
                        self.foreign_received +=
                            self.accept_codes(origin, seq, &[DELTA], vec![Arc::new(data)]);
                        MessageAcceptance::Accept
                    }
                    (false, _) => {
                        self.reject("bad_delta");
                        MessageAcceptance::Reject
                    }
                    (true, Err(e)) => {
                        tracing::warn!(origin = %origin.short(), seq, error = %e, "invalid delta");
                        self.reject("bad_delta");
                        MessageAcceptance::Reject
                    }
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&w.message_id, &w.source, verdict);
    }

    /// Takes `n` tokens from `origin`'s bucket (burst of two seconds).
    fn take_tokens(&mut self, origin: Origin, n: f64) -> bool {
        let now = Instant::now();
        let rate = self.opts.max_rate;
        let b = self.buckets.entry(origin).or_insert(Bucket {
            tokens: 2.0 * rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(2.0 * rate);
        b.at = now;
        if b.tokens < n {
            return false;
        }
        b.tokens -= n;
        true
    }

    fn flush_outbox(&mut self) {
        let Some((first, codes)) = self.outbox.take() else {
            return;
        };
        let data = wire::encode_updates(first, &codes);
        self.series.bytes("gossip_updates", "out", data.len());
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topics.updates.hash(), data)
        {
            Ok(_) => {
                self.published_through = self.published_through.max(first + codes.len() as u64);
                self.published_messages += 1;
                self.published_updates += codes.len() as u64;
            }
            // Peers repair from heartbeats; nothing is lost.
            Err(e) => tracing::debug!(error = %e, "publish deferred to repair"),
        }
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
        self.series.bytes("gossip_status", "out", data.len());
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topics.status.hash(), data);
    }

    fn feed_compute(&mut self, tx: &smpsc::SyncSender<ToCompute>) {
        if self.join.active() {
            return; // held until the snapshot is installed
        }
        while let Some((origin, first_seq, codes, payloads)) = self.deliver.pop_front() {
            match tx.try_send(ToCompute::Updates {
                origin,
                first_seq,
                codes,
                payloads,
            }) {
                Ok(()) => {}
                Err(smpsc::TrySendError::Full(ToCompute::Updates {
                    origin,
                    first_seq,
                    codes,
                    payloads,
                })) => {
                    self.deliver
                        .push_front((origin, first_seq, codes, payloads));
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// Stores a batch (with the payloads of its delta updates) in the mirror
    /// and queues what became contiguous.
    fn accept_codes(
        &mut self,
        origin: Origin,
        first_seq: u64,
        codes: &[u8],
        payloads: Vec<Payload>,
    ) -> u64 {
        match self.mirror.insert_with(origin, first_seq, codes, &payloads) {
            Ok(fresh) if !fresh.is_empty() => {
                let n = fresh.len() as u64;
                self.series.updates_received.inc_by(n);
                let first = fresh[0].seq;
                let payloads = self.mirror.payloads_in(&origin, first, first + n);
                self.deliver.push_back((
                    origin,
                    first,
                    fresh.iter().map(|u| u.code).collect(),
                    payloads,
                ));
                n
            }
            Ok(_) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store batch");
                0
            }
        }
    }

    /// Validates an update batch; returns the verdict for gossipsub.
    fn on_updates(&mut self, message: &gossipsub::Message) -> MessageAcceptance {
        let Some(source) = message.source else {
            self.reject("unsigned");
            return MessageAcceptance::Reject;
        };
        let Some(origin) = net::origin_of_peer(&source) else {
            self.reject("forged");
            return MessageAcceptance::Reject;
        };
        let (first, codes) = match wire::decode_updates(&message.data) {
            Ok(v) => v,
            Err(e) => return self.refuse_decode(&e),
        };
        if origin == self.origin {
            // Our own updates echoed back by someone: we know them.
            return MessageAcceptance::Ignore;
        }
        // Rate limit per origin (tokens = updates), burst of two seconds.
        if !self.take_tokens(origin, codes.len() as f64) {
            self.reject("over_rate");
            return MessageAcceptance::Reject;
        }
        // An origin may never sign two different codes for one seq.
        let held = self
            .mirror
            .range(&origin, first, first + codes.len() as u64);
        if held != &codes[..held.len()] {
            self.reject("equivocation");
            return MessageAcceptance::Reject;
        }
        if held.len() == codes.len() {
            self.reject("replayed");
            return MessageAcceptance::Ignore;
        }
        if self.test_drop() {
            return MessageAcceptance::Ignore;
        }
        self.foreign_received += self.accept_codes(origin, first, codes, Vec::new());
        MessageAcceptance::Accept
    }

    /// The test hook: drops this incoming message with probability `drop_incoming`.
    fn test_drop(&mut self) -> bool {
        if self.opts.drop_incoming <= 0.0 {
            return false;
        }
        let x = &mut self.drop_rng;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        let drop = (*x % 1_000_000) as f64 / 1e6 < self.opts.drop_incoming;
        self.dropped += u64::from(drop);
        drop
    }

    /// Counts a payload that did not decode and rejects it (penalizing the sender).
    fn refuse_decode(&mut self, e: &wire::Error) -> MessageAcceptance {
        self.reject(match e {
            wire::Error::Oversized(_) => "oversized",
            _ => "malformed",
        });
        MessageAcceptance::Reject
    }

    fn on_heartbeat_message(&mut self, message: &gossipsub::Message) -> MessageAcceptance {
        let Some(source) = message.source else {
            self.reject("unsigned");
            return MessageAcceptance::Reject;
        };
        let hb = match Heartbeat::decode(&message.data) {
            Ok(hb) => hb,
            Err(e) => return self.refuse_decode(&e),
        };
        if source == *self.swarm.local_peer_id() {
            return MessageAcceptance::Ignore;
        }
        self.peers_seen.insert(source);
        if let Some(st) = &self.state {
            let same_vv =
                hb.vv.len() == st.vv.len() && hb.vv.iter().all(|(o, n)| st.vv.get(o) == Some(n));
            if same_vv && hb.digest != st.digest {
                self.digest_mismatches += 1;
                self.series.digest_mismatches.inc();
                tracing::error!(peer = %source, "digest mismatch at an equal version vector");
            }
        }
        if hb.leaving {
            tracing::info!(peer = %source, "peer left");
        }
        self.sync.on_heartbeat(
            source,
            PeerView {
                vv: hb.vv.into_iter().collect(),
                digest: hb.digest,
                done: hb.done,
                backlog: hb.backlog,
                loss: hb.loss,
                seen: Instant::now(),
            },
            hb.leaving,
        );
        MessageAcceptance::Accept
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
                    let verdict = if message.topic == self.topics.updates.hash() {
                        self.series
                            .bytes("gossip_updates", "in", message.data.len());
                        self.on_updates(&message)
                    } else if message.topic == self.topics.deltas.hash() {
                        self.series.bytes("gossip_deltas", "in", message.data.len());
                        match self.on_delta_announce(&message, &message_id, propagation_source) {
                            Some(v) => v,
                            None => return, // decided when the payload arrives
                        }
                    } else if message.topic == self.topics.status.hash() {
                        self.series.bytes("gossip_status", "in", message.data.len());
                        self.on_heartbeat_message(&message)
                    } else {
                        self.reject("wrong_run");
                        MessageAcceptance::Reject
                    };
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            verdict,
                        );
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
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                tracing::debug!(peer = %peer_id, "disconnected");
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listen.contains(&address) => {
                self.listen.push(address);
            }
            _ => {}
        }
    }

    fn on_sync(&mut self, ev: request_response::Event<wire::Request, wire::Response>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = match request.validate() {
                    Err(e) => {
                        self.reject("bad_request");
                        wire::Response::Refused(e.to_string())
                    }
                    Ok(()) => match request {
                        wire::Request::Range { origin, from, to } => {
                            self.serve_range(origin, from, to)
                        }
                        wire::Request::Delta { origin, seq } => {
                            match self.mirror.payload(&origin, seq) {
                                Some(p) => wire::Response::Delta {
                                    origin,
                                    seq,
                                    data: wire::Blob(p.to_vec()),
                                },
                                None => wire::Response::Refused("no such delta".into()),
                            }
                        }
                        wire::Request::Offer => {
                            // Answered once the compute thread has made a snapshot.
                            self.offer_waiting.push(channel);
                            self.want_snapshot = true;
                            return;
                        }
                        wire::Request::Chunk { id, index } => self
                            .served
                            .iter()
                            .find(|(s, _)| s.id == id)
                            .and_then(|(s, _)| s.chunks.get(index as usize))
                            .map_or_else(
                                || wire::Response::Refused("no such snapshot chunk".into()),
                                |c| wire::Response::Chunk {
                                    id,
                                    index,
                                    data: wire::Blob(c.clone()),
                                },
                            ),
                    },
                };
                match &response {
                    wire::Response::Range {
                        codes, payloads, ..
                    } => self.series.bytes(
                        "sync",
                        "out",
                        codes.0.len() + payloads.iter().map(|p| p.0.len()).sum::<usize>(),
                    ),
                    wire::Response::Delta { data, .. } => {
                        self.series.bytes("delta", "out", data.0.len())
                    }
                    wire::Response::Chunk { data, .. } => {
                        self.series.bytes("snapshot", "out", data.0.len())
                    }
                    _ => {}
                }
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!(%peer, "sync response not sent: channel closed");
                }
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(req) = self.requests.remove(&request_id) else {
                    return;
                };
                if let Err(e) = response.validate(&req) {
                    tracing::warn!(%peer, error = %e, "invalid sync response");
                    self.reject("bad_response");
                    self.request_failed(peer, &req);
                    return;
                }
                match response {
                    wire::Response::Delta { origin, seq, data } => {
                        self.on_delta_payload(origin, seq, Some(data.0));
                    }
                    wire::Response::Range {
                        origin,
                        first_seq,
                        codes,
                        payloads,
                    } => {
                        if let Some(e) = payloads.iter().find_map(|p| self.check_delta(&p.0).err())
                        {
                            tracing::warn!(%peer, error = %e, "range response with an invalid delta");
                            self.reject("bad_response");
                            self.sync.on_failure(&origin);
                            return;
                        }
                        let held =
                            self.mirror
                                .range(&origin, first_seq, first_seq + codes.0.len() as u64);
                        if held != &codes.0[..held.len()] {
                            self.reject("equivocation");
                            self.sync.on_failure(&origin);
                            return;
                        }
                        if codes.0.is_empty() {
                            self.sync.on_failure(&origin);
                        }
                        self.series.bytes(
                            "sync",
                            "in",
                            codes.0.len() + payloads.iter().map(|p| p.0.len()).sum::<usize>(),
                        );
                        let payloads = payloads.into_iter().map(|p| Arc::new(p.0)).collect();
                        let n = self.accept_codes(origin, first_seq, &codes.0, payloads);
                        self.series.updates_repaired.inc_by(n);
                        self.repaired += n;
                        self.foreign_received += n;
                    }
                    offer @ wire::Response::Offer { .. } => self.join.on_offer(peer, offer),
                    wire::Response::Chunk { index, data, .. } => {
                        self.series.bytes("snapshot", "in", data.0.len());
                        if !self
                            .join
                            .on_chunk(peer, index, data.0, self.opts.data_dir.as_deref())
                        {
                            self.reject("bad_chunk");
                        }
                    }
                    wire::Response::Refused(reason) => {
                        tracing::debug!(%peer, %reason, "sync request refused");
                        self.request_failed(peer, &req);
                    }
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "sync request failed");
                if let Some(req) = self.requests.remove(&request_id) {
                    self.request_failed(peer, &req);
                }
            }
            _ => {}
        }
    }

    /// Mirrors an installed snapshot's log; queues what arrived meanwhile.
    fn installed(&mut self, codes: join::Codes) {
        for (o, c, payloads) in codes {
            let n = c.len() as u64;
            let payloads: Vec<Payload> = payloads.into_iter().map(Arc::new).collect();
            if let Ok(fresh) = self.mirror.insert_with(o, 0, &c, &payloads) {
                let beyond: Vec<u8> = fresh
                    .iter()
                    .filter(|u| u.seq >= n)
                    .map(|u| u.code)
                    .collect();
                if !beyond.is_empty() {
                    let end = n + beyond.len() as u64;
                    let p = self.mirror.payloads_in(&o, n, end);
                    self.deliver.push_back((o, n, beyond, p));
                }
            }
        }
    }

    /// A range of `origin`'s log with its delta payloads, cut short where the
    /// payloads would exceed [`RANGE_PAYLOAD_BUDGET`] (the first always fits).
    fn serve_range(&self, origin: Origin, from: u64, to: u64) -> wire::Response {
        let codes = self.mirror.range(&origin, from, to);
        let mut payloads = Vec::new();
        let mut bytes = 0usize;
        let mut end = codes.len();
        for (i, &c) in codes.iter().enumerate() {
            if c != DELTA {
                continue;
            }
            let Some(p) = self.mirror.payload(&origin, from + i as u64) else {
                end = i;
                break;
            };
            if !payloads.is_empty() && bytes + p.len() > RANGE_PAYLOAD_BUDGET {
                end = i;
                break;
            }
            bytes += p.len();
            payloads.push(wire::Blob(p.to_vec()));
        }
        wire::Response::Range {
            origin,
            first_seq: from,
            codes: wire::Blob(codes[..end].to_vec()),
            payloads,
        }
    }

    /// Makes a snapshot when peers asked for one; answers waiting offers.
    fn serve_snapshots(&mut self, to_compute: &smpsc::SyncSender<ToCompute>) {
        if !self.want_snapshot || self.snapshot_inflight {
            return;
        }
        let current = self.state.as_ref().map(|s| &s.vv);
        let fresh = self
            .served
            .front()
            .is_some_and(|(s, at)| Some(&s.vv) == current || at.elapsed() < Duration::from_secs(5));
        self.want_snapshot = false;
        if fresh {
            self.answer_offers();
        } else if to_compute.send(ToCompute::Snapshot).is_ok() {
            self.snapshot_inflight = true;
        }
    }

    fn answer_offers(&mut self) {
        let Some((s, _)) = self.served.front().cloned() else {
            return;
        };
        for channel in std::mem::take(&mut self.offer_waiting) {
            let offer = wire::Response::Offer {
                id: s.id,
                vv: s.vv.iter().map(|(o, n)| (*o, *n)).collect(),
                digest: s.digest,
                raw_len: s.raw_len,
                hashes: wire::Blob(s.hashes.concat()),
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, offer);
        }
    }

    fn request_failed(&mut self, peer: PeerId, req: &wire::Request) {
        match req {
            wire::Request::Range { origin, .. } => self.sync.on_failure(origin),
            wire::Request::Offer => self.join.on_offer_failed(peer),
            wire::Request::Chunk { index, .. } => self.join.on_chunk_failed(peer, *index),
            wire::Request::Delta { origin, seq } => self.on_delta_payload(*origin, *seq, None),
        }
    }

    fn send(&mut self, peer: PeerId, req: wire::Request) {
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, req.clone());
        self.requests.insert(id, req);
    }

    /// Drives the join: decide, ask for offers, fetch chunks, hand them to compute.
    fn drive_join(&mut self, now: Instant, to_compute: &smpsc::SyncSender<ToCompute>) {
        let params = self.params;
        let peers: Vec<PeerId> = self.sync.peers().keys().copied().collect();
        let best: u64 = self.sync.best().values().sum();
        let dir = self.opts.data_dir.clone();
        for action in self.join.tick(now, &peers, best, params, dir.as_deref()) {
            match action {
                join::Action::Ask(p, req) => self.send(p, req),
                join::Action::Install(chunks, hashes) => {
                    tracing::info!(chunks = chunks.len(), "snapshot fetched; installing");
                    if to_compute.send(ToCompute::Install(chunks, hashes)).is_err() {
                        tracing::warn!("compute thread gone; cannot install the snapshot");
                    }
                }
            }
        }
    }

    fn publish_status(&mut self, settled: bool, training_done: bool) {
        let (bytes_in, bytes_out) = self.bandwidth();
        let st = self.state.clone();
        let now = Instant::now();
        let applied = st.as_ref().map_or(0, |s| s.applied);
        let (mut updates_per_s, mut bytes_in_per_s, mut bytes_out_per_s) = (0.0, 0.0, 0.0);
        if let Some((t, a, bi, bo)) = self.last_rate {
            let dt = now.duration_since(t).as_secs_f64().max(1e-3);
            updates_per_s = applied.saturating_sub(a) as f64 / dt;
            bytes_in_per_s = bytes_in.saturating_sub(bi) as f64 / dt;
            bytes_out_per_s = bytes_out.saturating_sub(bo) as f64 / dt;
        }
        self.last_rate = Some((now, applied, bytes_in, bytes_out));
        let mesh_peers = self
            .swarm
            .behaviour()
            .gossipsub
            .mesh_peers(&self.topics.updates.hash())
            .count();
        // Metrics that are sampled rather than counted.
        let s = &self.series;
        s.peers.set(self.sync.peers().len() as i64);
        s.mesh_peers.set(mesh_peers as i64);
        s.backlog.set(self.backlog() as i64);
        s.updates_applied.set(applied as i64);
        if let Some(st) = &st {
            s.loss.set(f64::from(st.loss));
            if let Some(e) = st.eval {
                s.accuracy.set(e.accuracy());
            }
        }
        let have = self.mirror.version_vector();
        let lag: u64 = self
            .sync
            .best()
            .iter()
            .map(|(o, n)| n.saturating_sub(have.get(o).copied().unwrap_or(0)))
            .sum();
        s.version_vector_lag.set(lag as i64);
        let status = Status {
            peer_id: self.swarm.local_peer_id().to_string(),
            mode: self.cfg.node.mode.to_string(),
            origin: self.origin.to_hex(),
            run_id: self.mirror.run().to_hex(),
            published_through: self.published_through,
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
            peers: self.sync.peers().len(),
            connected: self.swarm.connected_peers().count(),
            own_updates: st.as_ref().map_or(0, |s| s.own),
            updates_applied: st.as_ref().map_or(0, |s| s.applied),
            updates_received: self.mirror.len(),
            backlog: self.backlog(),
            loss: st.as_ref().map_or(f32::NAN, |s| s.loss),
            accuracy: st.as_ref().and_then(|s| s.eval).map(|e| e.accuracy()),
            digest: st.as_ref().map(|s| hex(&s.digest)).unwrap_or_default(),
            version_vector: st.as_ref().map(|s| vv_hex(&s.vv)).unwrap_or_default(),
            training_done,
            settled,
            rejected: self.rejected.clone(),
            repaired_updates: self.repaired,
            bytes_in,
            bytes_out,
            uptime_s: now.duration_since(self.started).as_secs_f64(),
            updates_per_s,
            bytes_in_per_s,
            bytes_out_per_s,
            mesh_peers,
            digest_mismatches: self.digest_mismatches,
        };
        if let Some(dir) = &self.opts.data_dir {
            if let Ok(text) = serde_json::to_string_pretty(&status) {
                let tmp = dir.join("status.json.tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, dir.join("status.json"));
                }
            }
        }
        self.status_tx.send_replace(status);
    }
}

fn vv_hex(vv: &VersionVector) -> BTreeMap<String, u64> {
    vv.iter().map(|(o, n)| (o.to_hex(), *n)).collect()
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
