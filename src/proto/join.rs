//! Joining a running swarm, as a state machine (no IO; time passed in).
//!
//! A node that starts with an empty log decides, once it has heard from
//! peers, whether to replay the log from genesis (ordinary repair) or to fetch
//! a snapshot, by estimate: replay costs `updates × parameters` of
//! regenerate-and-apply work, a snapshot costs its bytes over the network plus
//! decoding. For a snapshot it asks every known peer for an offer. A snapshot
//! qualifies only when at least `quorum` distinct peers vouch for its state —
//! by offering the same snapshot, or by announcing its version vector with
//! its digest in their heartbeats — and its size is within the bound the
//! manifest implies ([`max_snapshot_bytes`]). Of those, it picks the newest
//! (among equals, the one most peers vouch for), fetches its chunks from the
//! peers offering it in parallel, checking every chunk against its hash, and
//! the install checks the state's digest against the vouched one. With no
//! qualifying snapshot it replays. Verified
//! chunks are handed out to be kept (on disk, by the node) and chunks kept by
//! an interrupted join are taken back ([`Join::on_kept_chunk`]), so a join
//! resumes.

use crate::net::wire::{Request, Response};
use crate::zo::seed::{hex, Origin};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How a joining node catches up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Whichever is cheaper by estimate.
    #[default]
    Auto,
    /// Replay the log from genesis through range repair.
    Replay,
    /// Download a snapshot plus the log suffix.
    Snapshot,
}

/// Regenerate-and-apply throughput assumed when none was measured
/// (param-updates/s); a node measures its own at start
/// ([`crate::crdt::replica::measure_apply_rate`], [`Join::set_apply_rate`]).
const APPLY_RATE: f64 = 2e9;
/// How long a joiner that knows only relayed peers waits for a direct one.
pub const RELAYED_WAIT: Duration = Duration::from_secs(10);
/// Link throughput assumed before any was measured (bytes/s): an
/// optimistic 1 Gbit/s, so the first choice leans to the snapshot only when
/// replay is slower even against a fast link; the fetch then measures the
/// real rate ([`LINK_MEASURE`]) and falls back to replay when that is cheaper.
const LINK_RATE: f64 = 125e6;
/// With `--join auto`, the snapshot fetch is timed over at least this long
/// (and two chunks) before the choice is checked against the measured rate.
const LINK_MEASURE: Duration = Duration::from_secs(1);
/// Compressed snapshot bytes per trainable parameter assumed before an offer
/// says better (≈ 13 bits of entropy per value after hundreds of updates).
const SNAPSHOT_BYTES_PER_PARAM: f64 = 1.6;
/// Decode, verify and install throughput (parameters/s).
const INSTALL_RATE: f64 = 5e8;
/// Requests in flight per peer while fetching chunks.
const PER_PEER: usize = 16;

/// The largest snapshot body accepted for a run with `params` trainable
/// parameters whose offer claims `updates` updates: each value of `δ` takes
/// at most 5 bytes as a varint (zstd adds < 1 %), each update at most one
/// code, a 64-byte signature and a delta payload's share; 64 MiB of headroom.
pub fn max_snapshot_bytes(params: u64, updates: u64) -> u64 {
    params
        .saturating_mul(6)
        .saturating_add(updates.saturating_mul(128))
        .saturating_add(64 << 20)
}

/// Whether the snapshot fetch logs its progress: when chunks arrived since
/// the last line (`last` of `total` then, `done` now) and either 2 s passed
/// or another tenth of the chunks is in.
fn fetch_report_due(since_last: Duration, done: usize, last: usize, total: usize) -> bool {
    done > last && (since_last >= Duration::from_secs(2) || (done - last) * 10 >= total)
}

/// What the node should do.
#[derive(Debug)]
pub enum Action<P> {
    /// Send this request to this peer.
    Ask(P, Request),
    /// Hand the verified chunks to the compute thread; the installed state
    /// must be `vv` with `digest` (what was vouched for).
    Install {
        chunks: Vec<Vec<u8>>,
        hashes: Vec<[u8; 32]>,
        vv: Vec<(Origin, u64)>,
        digest: [u8; 32],
    },
    /// Offer back the chunks of snapshot `id` kept by an earlier, interrupted
    /// join ([`Join::on_kept_chunk`]).
    Resume { id: [u8; 32], chunks: usize },
}

/// What became of a fetched chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// It checked out; it belongs to snapshot `id` (worth keeping).
    Taken([u8; 32]),
    /// No fetch is going on.
    Unwanted,
    /// It failed its check (the peer is dropped).
    Bad,
}

#[derive(Clone, Debug)]
struct Offer {
    id: [u8; 32],
    vv: Vec<(Origin, u64)>,
    digest: [u8; 32],
    vv_total: u64,
    raw_len: u64,
    hashes: Vec<[u8; 32]>,
}

#[derive(Debug)]
enum Phase<P> {
    Off,
    Waiting {
        since: Instant,
    },
    Offers {
        since: Instant,
        /// Asked and not answered yet.
        asked: HashSet<P>,
        /// Everyone asked (peers heard of later are asked too).
        everyone: HashSet<P>,
        /// The state asked for.
        target: Vec<(Origin, u64)>,
        got: Vec<(P, Offer)>,
    },
    Fetching {
        offer: Offer,
        holders: Vec<P>,
        chunks: Vec<Option<Vec<u8>>>,
        inflight: HashMap<u32, (P, Instant)>,
        turn: usize,
        /// When the fetch began, and when and at how many chunks progress
        /// was last logged.
        since: Instant,
        reported: (Instant, usize),
        /// The choice was checked against the measured link rate.
        measured: bool,
    },
    Installing,
}

/// The join state.
#[derive(Debug)]
pub struct Join<P> {
    mode: Mode,
    phase: Phase<P>,
    /// How the node caught up: "snapshot", "replay" or "none".
    pub chosen: &'static str,
    started: Instant,
    /// When the join finished.
    pub finished: Option<Instant>,
    /// Compressed snapshot bytes received.
    pub fetched_bytes: u64,
    /// Raw i32 size of the installed snapshot's `δ`.
    pub raw_bytes: u64,
    /// Distinct peers that must vouch for a snapshot's state.
    quorum: usize,
    /// Trainable parameters (for the size bound), from the last tick.
    params: u64,
    /// Offers refused (too large, or not enough peers vouching).
    pub refused: u64,
    /// This node's replay speed (param-updates/s).
    apply_rate: f64,
    /// The link rate the fetch measured (bytes/s), once it has.
    pub link_rate: Option<f64>,
}

/// Who vouches for a state: the peers whose latest heartbeat announced this
/// version vector with this digest.
pub type Vouchers<'a, P> = &'a dyn Fn(&[(Origin, u64)], &[u8; 32]) -> Vec<P>;

impl<P: Clone + Eq + Hash + Ord + std::fmt::Debug> Join<P> {
    /// A node with an empty log joins; one with state does not.
    pub fn new(mode: Mode, empty: bool, now: Instant) -> Self {
        Self::with_quorum(mode, empty, now, 2)
    }

    /// Like [`Join::new`]; a snapshot needs `quorum` distinct peers vouching
    /// for its state (at most as many as are known, at least one).
    pub fn with_quorum(mode: Mode, empty: bool, now: Instant, quorum: usize) -> Self {
        let (phase, chosen) = match (empty, mode) {
            (false, _) => (Phase::Off, "none"),
            (true, Mode::Replay) => (Phase::Off, "replay"),
            (true, _) => (Phase::Waiting { since: now }, "none"),
        };
        Self {
            mode,
            phase,
            chosen,
            started: now,
            finished: None,
            fetched_bytes: 0,
            raw_bytes: 0,
            quorum: quorum.max(1),
            params: 0,
            refused: 0,
            apply_rate: APPLY_RATE,
            link_rate: None,
        }
    }

    /// Sets the replay speed measured on this machine (param-updates/s).
    pub fn set_apply_rate(&mut self, rate: f64) {
        if rate.is_finite() && rate > 0.0 {
            self.apply_rate = rate;
        }
    }

    /// Seconds a replay of `updates` updates of `params` values takes here.
    fn replay_seconds(&self, updates: u64, params: u64) -> f64 {
        updates as f64 * params as f64 / self.apply_rate
    }

    /// True while joining: hold training, repairs and deliveries to compute.
    pub fn active(&self) -> bool {
        !matches!(self.phase, Phase::Off)
    }

    /// Seconds the join took (None while running or when there was none).
    pub fn seconds(&self) -> Option<f64> {
        self.finished
            .map(|f| f.duration_since(self.started).as_secs_f64())
    }

    /// Still deciding how to join (no offer asked yet).
    pub fn waiting(&self) -> bool {
        matches!(self.phase, Phase::Waiting { .. })
    }

    /// Every peer known is reachable only through a relay: a snapshot would
    /// go through it, so after [`RELAYED_WAIT`] without a direct peer (a
    /// hole punch takes a second or two) the joiner replays instead.
    pub fn relayed_only(&mut self, now: Instant) {
        if let Phase::Waiting { since } = self.phase {
            if now.duration_since(since) > RELAYED_WAIT {
                tracing::info!("only relayed peers: joining by replay");
                self.finish("replay", now);
            }
        }
    }

    fn finish(&mut self, chosen: &'static str, now: Instant) {
        self.phase = Phase::Off;
        self.chosen = chosen;
        self.finished = Some(now);
    }

    /// Advances the join. `best` is the total of the highest version vector
    /// peers announce; `params` the trainable parameter count; `target` the
    /// state to ask snapshots of (what every peer holds: the component-wise
    /// minimum of their version vectors), `vouchers` who announced a state.
    pub fn tick(
        &mut self,
        now: Instant,
        peers: &[P],
        best: u64,
        params: usize,
        target: &[(Origin, u64)],
        vouchers: Vouchers<'_, P>,
    ) -> Vec<Action<P>> {
        self.params = params as u64;
        let replay_here = self.replay_seconds(best, params as u64);
        // Two distinct peers by default, when two or more are known.
        let quorum = self.quorum.min(peers.len().max(1));
        let mut out = Vec::new();
        match &mut self.phase {
            Phase::Off | Phase::Installing => {}
            Phase::Waiting { since } => {
                let waited = now.duration_since(*since);
                if peers.is_empty() {
                    if waited > Duration::from_secs(2) {
                        self.finish("none", now);
                    }
                } else if waited > Duration::from_millis(1200) {
                    // Not at the first heartbeat: a lone early peer (perhaps
                    // a hostile one) must not be all the joiner knows.
                    let replay = replay_here;
                    let snapshot = 0.5
                        + params as f64 * SNAPSHOT_BYTES_PER_PARAM / LINK_RATE
                        + params as f64 / INSTALL_RATE;
                    let want = match self.mode {
                        Mode::Snapshot => best > 0,
                        Mode::Auto => best > 0 && snapshot < replay,
                        Mode::Replay => false,
                    };
                    tracing::info!(
                        updates = best,
                        params,
                        replay_s = replay,
                        snapshot_s = snapshot,
                        choice = if want { "snapshot" } else { "replay" },
                        "joining a running swarm"
                    );
                    if want {
                        for p in peers {
                            out.push(Action::Ask(
                                p.clone(),
                                Request::Offer {
                                    at: target.to_vec(),
                                },
                            ));
                        }
                        self.phase = Phase::Offers {
                            since: now,
                            asked: peers.iter().cloned().collect(),
                            everyone: peers.iter().cloned().collect(),
                            target: target.to_vec(),
                            got: Vec::new(),
                        };
                    } else {
                        self.finish("replay", now);
                    }
                }
            }
            Phase::Offers {
                since,
                asked,
                everyone,
                target,
                got,
            } => {
                // Peers heard of since are asked too (for the same state).
                for p in peers {
                    if everyone.insert(p.clone()) {
                        asked.insert(p.clone());
                        out.push(Action::Ask(
                            p.clone(),
                            Request::Offer { at: target.clone() },
                        ));
                    }
                }
                if asked.is_empty() || now.duration_since(*since) > Duration::from_secs(5) {
                    // The newest snapshot enough peers vouch for; among equals,
                    // the one most peers vouch for.
                    let mut groups: HashMap<[u8; 32], (Offer, Vec<P>)> = HashMap::new();
                    for (p, o) in got.drain(..) {
                        groups
                            .entry(o.id)
                            .or_insert_with(|| (o.clone(), Vec::new()))
                            .1
                            .push(p);
                    }
                    let mut refused = 0;
                    let best = groups
                        .into_values()
                        .filter_map(|(o, holders)| {
                            let mut v: HashSet<P> = holders.iter().cloned().collect();
                            v.extend(vouchers(&o.vv, &o.digest));
                            if v.len() >= quorum {
                                Some((o, holders, v.len()))
                            } else {
                                tracing::warn!(
                                    id = %hex(&o.id[..8]),
                                    vouching = v.len(),
                                    quorum,
                                    "snapshot offer not vouched for by enough peers; not taken"
                                );
                                refused += 1;
                                None
                            }
                        })
                        .max_by_key(|(o, _, v)| (o.vv_total, *v, o.id))
                        .map(|(o, holders, _)| (o, holders));
                    self.refused += refused;
                    match best {
                        None => {
                            tracing::warn!("no peer offered a snapshot; replaying instead");
                            self.finish("replay", now);
                        }
                        Some((offer, holders)) => {
                            let n = offer.hashes.len();
                            tracing::info!(
                                id = %hex(&offer.id[..8]),
                                chunks = n,
                                holders = holders.len(),
                                "fetching snapshot"
                            );
                            self.raw_bytes = offer.raw_len;
                            out.push(Action::Resume {
                                id: offer.id,
                                chunks: n,
                            });
                            self.phase = Phase::Fetching {
                                offer,
                                holders,
                                chunks: vec![None; n],
                                inflight: HashMap::new(),
                                turn: 0,
                                since: now,
                                reported: (now, 0),
                                measured: false,
                            };
                        }
                    }
                }
            }
            Phase::Fetching {
                offer,
                holders,
                chunks,
                inflight,
                turn,
                since,
                reported,
                measured,
            } => {
                inflight.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(30));
                let done = chunks.iter().filter(|c| c.is_some()).count();
                let took = now.duration_since(*since);
                if !*measured && done >= 2 && done < chunks.len() && took >= LINK_MEASURE {
                    *measured = true;
                    let rate = self.fetched_bytes as f64 / took.as_secs_f64();
                    self.link_rate = Some(rate);
                    let per_chunk = self.fetched_bytes as f64 / done as f64;
                    let left = (chunks.len() - done) as f64 * per_chunk / rate
                        + self.params as f64 / INSTALL_RATE;
                    let replay = replay_here;
                    let switch = self.mode == Mode::Auto && replay < left;
                    tracing::info!(
                        link_mb_s = format_args!("{:.1}", rate / 1e6),
                        snapshot_left_s = format_args!("{left:.1}"),
                        replay_s = format_args!("{replay:.1}"),
                        choice = if switch { "replay" } else { "snapshot" },
                        "snapshot fetch measured"
                    );
                    if switch {
                        self.finish("replay", now);
                        return out;
                    }
                }
                if holders.is_empty() {
                    tracing::warn!("every snapshot holder failed; replaying instead");
                    self.finish("replay", now);
                    return out;
                }
                if done == chunks.len() {
                    tracing::info!(
                        chunks = done,
                        bytes = self.fetched_bytes,
                        seconds = format_args!("{:.1}", now.duration_since(*since).as_secs_f64()),
                        "snapshot fetched; installing it"
                    );
                } else if fetch_report_due(
                    now.duration_since(reported.0),
                    done,
                    reported.1,
                    chunks.len(),
                ) {
                    *reported = (now, done);
                    tracing::info!(
                        chunks = format_args!("{done}/{}", chunks.len()),
                        bytes = self.fetched_bytes,
                        holders = holders.len(),
                        "fetching snapshot"
                    );
                }
                if chunks.iter().all(Option::is_some) {
                    let data = chunks
                        .iter_mut()
                        .map(|c| c.take().unwrap_or_default())
                        .collect();
                    out.push(Action::Install {
                        chunks: data,
                        hashes: offer.hashes.clone(),
                        vv: offer.vv.clone(),
                        digest: offer.digest,
                    });
                    self.phase = Phase::Installing;
                    return out;
                }
                let mut load: HashMap<P, usize> = HashMap::new();
                for (p, _) in inflight.values() {
                    *load.entry(p.clone()).or_default() += 1;
                }
                for (i, chunk) in chunks.iter().enumerate() {
                    if chunk.is_some() || inflight.contains_key(&(i as u32)) {
                        continue;
                    }
                    let Some(p) = (0..holders.len())
                        .map(|k| holders[(*turn + k) % holders.len()].clone())
                        .find(|p| load.get(p).copied().unwrap_or(0) < PER_PEER)
                    else {
                        break;
                    };
                    *turn += 1;
                    *load.entry(p.clone()).or_default() += 1;
                    inflight.insert(i as u32, (p.clone(), now));
                    out.push(Action::Ask(
                        p,
                        Request::Chunk {
                            id: offer.id,
                            index: i as u32,
                        },
                    ));
                }
            }
        }
        out
    }

    /// An offer arrived.
    pub fn on_offer(&mut self, peer: P, response: Response) {
        let hashes = response.hashes();
        if let (
            Phase::Offers { asked, got, .. },
            Response::Offer {
                id,
                vv,
                raw_len,
                digest,
                ..
            },
        ) = (&mut self.phase, response)
        {
            asked.remove(&peer);
            let vv_total: u64 = vv.iter().map(|(_, n)| n).sum();
            let bound = max_snapshot_bytes(self.params, vv_total);
            if (hashes.len() as u64).saturating_mul(crate::crdt::snapshot::CHUNK as u64)
                > bound + crate::crdt::snapshot::CHUNK as u64
            {
                tracing::warn!(
                    ?peer,
                    chunks = hashes.len(),
                    bound,
                    "snapshot offer larger than this run allows; not taken"
                );
                self.refused += 1;
                return;
            }
            got.push((
                peer,
                Offer {
                    id,
                    vv,
                    digest,
                    vv_total,
                    raw_len,
                    hashes,
                },
            ));
        }
    }

    /// A peer did not answer the offer request.
    pub fn on_offer_failed(&mut self, peer: &P) {
        if let Phase::Offers { asked, .. } = &mut self.phase {
            asked.remove(peer);
        }
    }

    /// A chunk arrived from `peer`; one that fails its check drops that peer.
    pub fn on_chunk(&mut self, peer: &P, index: u32, data: Vec<u8>) -> Chunk {
        let Phase::Fetching {
            offer,
            holders,
            chunks,
            inflight,
            ..
        } = &mut self.phase
        else {
            return Chunk::Unwanted;
        };
        inflight.remove(&index);
        let Some(expected) = offer.hashes.get(index as usize) else {
            return Chunk::Bad;
        };
        if blake3::hash(&data).as_bytes() != expected {
            tracing::warn!(
                ?peer,
                index,
                "snapshot chunk failed its check; dropping that peer"
            );
            holders.retain(|p| p != peer);
            return Chunk::Bad;
        }
        self.fetched_bytes += data.len() as u64;
        chunks[index as usize] = Some(data);
        Chunk::Taken(offer.id)
    }

    /// A chunk of snapshot `id` kept by an interrupted join (see
    /// [`Action::Resume`]); taken when it is wanted and checks out.
    pub fn on_kept_chunk(&mut self, id: [u8; 32], index: u32, data: Vec<u8>) -> bool {
        let Phase::Fetching { offer, chunks, .. } = &mut self.phase else {
            return false;
        };
        let i = index as usize;
        if offer.id != id
            || chunks.get(i).is_none_or(Option::is_some)
            || offer
                .hashes
                .get(i)
                .map(|h| blake3::hash(&data).as_bytes() == h)
                != Some(true)
        {
            return false;
        }
        chunks[i] = Some(data);
        true
    }

    /// A chunk request failed: it will be asked of another holder.
    pub fn on_chunk_failed(&mut self, peer: &P, index: u32) {
        if let Phase::Fetching {
            holders, inflight, ..
        } = &mut self.phase
        {
            inflight.remove(&index);
            if holders.len() > 1 {
                holders.retain(|p| p != peer);
            }
        }
    }

    /// The compute thread installed the snapshot (or could not).
    pub fn on_installed(&mut self, ok: bool, now: Instant) {
        if ok {
            self.finish("snapshot", now);
        } else {
            tracing::warn!("snapshot could not be installed; replaying instead");
            self.finish("replay", now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_progress_is_logged_every_tenth_or_every_two_seconds() {
        let quick = Duration::from_millis(300);
        // One chunk at a time, quickly: a line at every tenth of 100 chunks.
        let mut last = 0;
        let mut lines = Vec::new();
        for done in 1..=100 {
            if fetch_report_due(quick, done, last, 100) {
                lines.push(done);
                last = done;
            }
        }
        assert_eq!(lines, (1..=10).map(|k| 10 * k).collect::<Vec<_>>());
        // Slowly: after 2 s of input time, whatever the count.
        assert!(fetch_report_due(Duration::from_secs(2), 3, 2, 100));
        assert!(!fetch_report_due(Duration::from_millis(1999), 3, 2, 100));
        // Nothing new arrived: no line, however long it has been.
        assert!(!fetch_report_due(Duration::from_secs(60), 2, 2, 100));
        // Few chunks: every chunk is a tenth.
        assert!(fetch_report_due(quick, 1, 0, 3));
    }

    /// Peer 1 offers snapshot `[7; 32]` of 20 chunks of `size` bytes each
    /// (`raw_len` raw); the chunks.
    fn offer_chunks(j: &mut Join<u8>, size: usize, raw_len: u64) -> Vec<Vec<u8>> {
        let chunks: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; size]).collect();
        let hashes: Vec<u8> = chunks
            .iter()
            .flat_map(|c| *blake3::hash(c).as_bytes())
            .collect();
        j.on_offer(
            1,
            Response::Offer {
                id: [7; 32],
                vv: Vec::new(),
                digest: [0; 32],
                raw_len,
                hashes: crate::net::wire::Blob(hashes),
            },
        );
        chunks
    }

    #[test]
    fn a_fetch_reports_progress_and_installs_every_chunk() {
        // Shows the log lines with `cargo nextest run --lib a_fetch --no-capture`.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let t0 = Instant::now();
        let mut j: Join<u8> = Join::new(Mode::Snapshot, true, t0);
        // It listens a while before deciding.
        assert!(j
            .tick(t0, &[1], 100, 10, &[], &|_, _| Vec::new())
            .is_empty());
        let t0 = t0 + Duration::from_millis(1300);
        let asked = j.tick(t0, &[1], 100, 10, &[], &|_, _| Vec::new());
        assert!(matches!(
            &asked[..],
            [Action::Ask(1, Request::Offer { .. })]
        ));
        let chunks = offer_chunks(&mut j, 1000, 20_000);
        let mut now = t0 + Duration::from_millis(10);
        j.tick(now, &[1], 100, 10, &[], &|_, _| Vec::new());
        for (i, c) in chunks.iter().enumerate() {
            now += Duration::from_millis(300);
            assert_eq!(j.on_chunk(&1, i as u32, c.clone()), Chunk::Taken([7; 32]));
            let out = j.tick(now, &[1], 100, 10, &[], &|_, _| Vec::new());
            if i + 1 < chunks.len() {
                assert!(!out.iter().any(|a| matches!(a, Action::Install { .. })));
            } else {
                assert!(
                    matches!(&out[..], [Action::Install { chunks: got, .. }] if got == &chunks)
                );
            }
        }
        assert_eq!(j.fetched_bytes, 20_000);
    }

    /// `--join auto` over a slow link: the fetch is timed, and a replay
    /// that is cheaper than the rest of the fetch is taken instead; with a
    /// slow replay the snapshot goes on.
    #[test]
    fn auto_join_falls_back_to_replay_when_the_measured_link_is_slow() {
        for (apply_rate, expect) in [(1e9, "replay"), (1e7, "snapshot")] {
            let t0 = Instant::now();
            let mut j: Join<u8> = Join::new(Mode::Auto, true, t0);
            j.set_apply_rate(apply_rate);
            // 1,000 updates of 10^6 parameters: replay 1 s at 1e9/s, 100 s at 1e7/s.
            let (best, params) = (1000, 1_000_000);
            j.tick(t0, &[1], best, params, &[], &|_, _| Vec::new());
            let mut now = t0 + Duration::from_millis(1300);
            let asked = j.tick(now, &[1], best, params, &[], &|_, _| Vec::new());
            assert!(
                matches!(&asked[..], [Action::Ask(1, Request::Offer { .. })]),
                "against an assumed fast link the snapshot looks cheaper: {asked:?}"
            );
            let chunks = offer_chunks(&mut j, 100_000, 4_000_000);
            now += Duration::from_millis(10);
            j.tick(now, &[1], best, params, &[], &|_, _| Vec::new());
            // 100 kB every 0.6 s: ~170 kB/s, 11 s for the rest.
            for (i, c) in chunks.iter().enumerate().take(3) {
                now += Duration::from_millis(600);
                j.on_chunk(&1, i as u32, c.clone());
                j.tick(now, &[1], best, params, &[], &|_, _| Vec::new());
            }
            let rate = j.link_rate.expect("the fetch was timed");
            assert!((rate - 100_000.0 / 0.6).abs() < 2e4, "{rate}");
            if expect == "replay" {
                assert!(!j.active(), "switched to replay");
                assert_eq!(j.chosen, "replay");
            } else {
                assert!(j.active(), "still fetching the snapshot");
            }
        }
    }

    fn offer(id: u8, total: u64, chunks: usize) -> Response {
        let vv = vec![(Origin([id; 32]), total)];
        let hashes: Vec<[u8; 32]> = (0..chunks).map(|i| [i as u8; 32]).collect();
        let digest = [id; 32];
        Response::Offer {
            id: crate::crdt::snapshot::id_of(&vv, &digest, &hashes),
            vv,
            digest,
            raw_len: 100,
            hashes: crate::net::wire::Blob(hashes.concat()),
        }
    }

    /// Runs a join over offers from peers 1..=n; returns what it chose and,
    /// for a snapshot, the state it will insist on.
    fn choose(quorum: usize, offers: Vec<(u8, Response)>, vouch: Vouchers<'_, u8>) -> Option<u8> {
        let t0 = Instant::now();
        let peers: Vec<u8> = offers.iter().map(|(p, _)| *p).collect();
        let mut j: Join<u8> = Join::with_quorum(Mode::Snapshot, true, t0, quorum);
        let t0 = t0 + Duration::from_millis(1300);
        j.tick(t0, &peers, 100, 10, &[], vouch);
        for (p, o) in offers {
            j.on_offer(p, o);
        }
        let out = j.tick(t0 + Duration::from_millis(10), &peers, 100, 10, &[], vouch);
        j.tick(t0 + Duration::from_millis(20), &peers, 100, 10, &[], vouch);
        match j.phase {
            Phase::Fetching { offer, .. } => Some(offer.digest[0]),
            _ => {
                assert!(out.is_empty() || j.chosen == "replay");
                None
            }
        }
    }

    #[test]
    fn a_snapshot_needs_a_quorum_of_vouching_peers() {
        let none: Vouchers<'_, u8> = &|_, _| Vec::new();
        // A poisoned offer claiming far more history, from one peer, loses
        // to the snapshot two peers offer.
        let got = choose(
            2,
            vec![
                (1, offer(9, 1_000_000, 1)),
                (2, offer(3, 50, 1)),
                (3, offer(3, 50, 1)),
            ],
            none,
        );
        assert_eq!(got, Some(3));
        // Alone, it is not taken: the joiner replays.
        assert_eq!(
            choose(
                2,
                vec![(1, offer(9, 1_000_000, 1)), (2, offer(3, 50, 1))],
                none
            ),
            None
        );
        // A heartbeat of the same version vector and digest vouches too.
        let hb: Vouchers<'_, u8> = &|vv, d| {
            if d == &[3; 32] && vv[0].1 == 50 {
                vec![7]
            } else {
                Vec::new()
            }
        };
        assert_eq!(
            choose(
                2,
                vec![(1, offer(9, 1_000_000, 1)), (2, offer(3, 50, 1))],
                hb
            ),
            Some(3)
        );
        // With one peer known, one suffices.
        assert_eq!(choose(2, vec![(1, offer(9, 1_000_000, 1))], none), Some(9));
        // An offer larger than the run allows is refused whoever vouches.
        let huge =
            1 + (max_snapshot_bytes(10, 50) / crate::crdt::snapshot::CHUNK as u64) as usize + 1;
        assert_eq!(choose(1, vec![(1, offer(3, 50, huge))], none), None);
    }
}
