//! The protocol core (`proto::Core`), an IO-free state machine, driven by a
//! sequence of inputs decoded from the fuzz bytes, with the shell's and the
//! compute side's part played by this harness (as `tests/sim/world.rs` does).
//!
//! Layout: 3 header bytes (settings), then operations. Each operation is one
//! byte `op` (kind = `op % 16`) and its arguments; a missing byte reads as 0
//! and the run ends when the input does. Peers are `Pe(0..8)`: `Pe(0)` is
//! this node, `Pe(7)` has no origin (not an ed25519 identity); gossip is
//! forwarded and requests come from `Pe(1..8)`.
//!
//! | kind | input |
//! |---|---|
//! | 0, 1 | `Tick` after `dt` (byte `b`: `10·b` ms below 200, else `b − 199` s) |
//! | 2 | `Gossip`, raw: forwarder, source, topic (Updates/Status/Deltas/None), len, data |
//! | 3 | `Gossip` Updates, built: source, first seq, codes |
//! | 4 | `Gossip` Status, built: source, a sorted version vector, digest, flags, loss, backlog |
//! | 5 | `Gossip` Deltas, built: forwarder, source, seq, payload (a valid FedZip delta or raw bytes), true or wrong hash |
//! | 6 | `Request`, built: Range / Offer / Chunk (of a served snapshot or not) / Delta |
//! | 7 | `Request`, CBOR-decoded (as libp2p's `cbor` codec does) from len, bytes |
//! | 8, 9 | `Response` to an outstanding `Output::Send` tag: Refused, a fitting answer built from the request (ranges with delta payloads, a delta, an offer with a true id, chunks, true or corrupted), or CBOR-decoded bytes |
//! | 10 | `RequestFailed` for an outstanding tag |
//! | 11 | `Own` update (after `StartTraining`): a code or a valid delta, seqs increasing |
//! | 12 | `State`: the harness's replica model (version vector of what it applied), digest, loss, training done |
//! | 13 | `Snapshot` after `MakeSnapshot`, or `Installed` (Ok with segments, or Err) after `Install` |
//! | 14 | `Forget(peer)` |
//! | 15 | `Leave` |
//!
//! After each input, `poll()` and then `next_apply()` are drained; what is
//! applied is reported back as `State`, as the compute thread does; `Publish`
//! with an `end` is answered with `Published`, `Resume` with `KeptChunk`s.
//!
//! Checked: nothing panics; every `next_apply` segment is non-empty, at most
//! the asked size, carries one payload per delta marker, is never of the
//! node's own origin, and continues its origin exactly where the last one (or
//! an installed snapshot) ended; every `Verdict` is for a gossip id given as
//! input, from its forwarder, at most once per id, and once every request is
//! answered or failed every message has one; every `Send` has a fresh tag, a
//! request that passes `validate`, and is not to this node; outstanding
//! `Request::Delta` sends stay ≤ 1024 (`MAX_WAITS`) and offer requests held
//! unanswered ≤ 256 (`MAX_OFFER_WAITING`); every `Respond` answers a channel
//! given once and not yet answered, passes the requester's
//! `Response::validate`, and comes at once unless the request is an `Offer`;
//! own publications decode with the gossip decoders; `Install`ed chunks match
//! their hashes; `MakeSnapshot` is not asked again before `Snapshot`;
//! `StartTraining` and `Finished` come at most once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::crdt::log::{Log, Payload, Segment, DELTA};
use seedswarm::crdt::replica::VersionVector;
use seedswarm::crdt::snapshot::{self, Snapshot};
use seedswarm::delta::fedzip;
use seedswarm::net::wire::{self, Blob, DeltaAnnounce, Heartbeat, Request, Response};
use seedswarm::proto::{
    self, join, ComputeState, Core, Input, Output, Own, Settings, Timing, Topic,
};
use seedswarm::zo::seed::{Origin, RunId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A peer: small integers. `Pe(0)` is this node, `Pe(NO_ORIGIN)` has no origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Pe(u8);

const PEERS: u8 = 8;
const NO_ORIGIN: u8 = 7;
const ME: Pe = Pe(0);

impl proto::Peer for Pe {
    fn origin(&self) -> Option<Origin> {
        (self.0 != NO_ORIGIN).then(|| origin_of(self.0))
    }
}

/// The origin of peer `x` (`origin_of(NO_ORIGIN)` is an origin no peer has).
fn origin_of(x: u8) -> Origin {
    let mut o = [0x5e; 32];
    o[0] = x.wrapping_mul(0x35) ^ 0x9c;
    o[31] = x;
    Origin(o)
}

/// Limits of the core (private constants of `proto`), checked from outside.
const MAX_WAITS: usize = 1024;
const MAX_OFFER_WAITING: usize = 256;
const MAX_DELTA_BYTES: usize = 1 << 16;

/// Trainable tensors of the fuzzed run.
fn shapes() -> Vec<(String, u64)> {
    vec![("a".into(), 48), ("b".into(), 16)]
}

/// A few valid FedZip deltas over `shapes()`, made once.
fn deltas() -> &'static [Payload] {
    static D: OnceLock<Vec<Payload>> = OnceLock::new();
    D.get_or_init(|| {
        (0..4u32)
            .map(|k| {
                let vals = |n: usize, salt: u32| -> Vec<f32> {
                    (0..n as u32)
                        .map(|i| {
                            let x = i.wrapping_mul(2654435761) ^ (k * 40503 + salt);
                            ((x % 2001) as f32 - 1000.0) * 1e-5
                        })
                        .collect()
                };
                let a = vals(48, 1);
                let b = vals(16, 2);
                let settings = fedzip::Settings {
                    top_z: [0.1, 0.25, 0.5, 1.0][k as usize],
                    clusters: 1 + k as usize,
                    positions: if k % 2 == 0 {
                        fedzip::Positions::Diff
                    } else {
                        fedzip::Positions::Plain
                    },
                    ..fedzip::Settings::default()
                };
                let views: Vec<(&str, &[f32])> = vec![("a", &a), ("b", &b)];
                let d = fedzip::compress(&views, &settings).expect("compress");
                Arc::new(fedzip::encode(&d, settings.positions))
            })
            .collect()
    })
}

/// Reads the fuzz bytes; a missing byte reads as 0.
struct R<'a>(&'a [u8]);

impl R<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    /// A forwarder or requester: never this node.
    fn peer(&mut self) -> Pe {
        Pe(1 + self.u8() % (PEERS - 1))
    }
    /// A signed source (possibly this node, possibly `Pe(NO_ORIGIN)`) or none.
    fn source(&mut self) -> Option<Pe> {
        let b = self.u8() % (PEERS + 1);
        (b < PEERS).then_some(Pe(b))
    }
    fn origin(&mut self) -> Origin {
        origin_of(self.u8() % PEERS)
    }
    /// Sorted, de-duplicated version vector of up to 5 entries.
    fn vv(&mut self) -> Vec<(Origin, u64)> {
        let n = self.u8() % 6;
        let vv: BTreeMap<Origin, u64> = (0..n)
            .map(|_| (self.origin(), u64::from(self.u8())))
            .collect();
        vv.into_iter().collect()
    }
    /// Codes from bytes; `0x80` and bytes ≥ `0xf0` are delta updates, each
    /// with a valid payload.
    fn codes(&mut self, n: usize) -> (Vec<u8>, Vec<Payload>) {
        let mut payloads = Vec::new();
        let codes = self
            .bytes(n)
            .into_iter()
            .map(|c| {
                if c == DELTA || c >= 0xf0 {
                    payloads.push(deltas()[usize::from(c & 3)].clone());
                    DELTA
                } else {
                    c
                }
            })
            .collect();
        (codes, payloads)
    }
}

/// `PROTO_TRACE=1` prints every input and output (to read a reproducer).
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("PROTO_TRACE").is_some())
}

fn hash(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

fn cbor<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    cbor4ii::serde::from_slice::<T>(data).ok()
}

/// A snapshot with a true id over small chunks from the fuzz bytes.
fn make_snapshot(r: &mut R, vv: &VersionVector, digest: [u8; 32]) -> Snapshot {
    let k = 1 + usize::from(r.u8() % 3);
    let chunks: Vec<Vec<u8>> = (0..k)
        .map(|_| {
            let n = usize::from(r.u8() % 32);
            r.bytes(n)
        })
        .collect();
    let hashes: Vec<[u8; 32]> = chunks.iter().map(|c| hash(c)).collect();
    let list: Vec<(Origin, u64)> = vv.iter().map(|(o, n)| (*o, *n)).collect();
    Snapshot {
        id: snapshot::id_of(&list, &digest, &hashes),
        vv: vv.clone(),
        digest,
        raw_len: u64::from(r.u8()),
        hashes,
        chunks,
    }
}

type Fz = Core<Pe, u64, u64>;

struct H {
    core: Fz,
    t0: Instant,
    now_ms: u64,
    own: Origin,
    apply_max: usize,
    resume_mask: u8,
    // Gossip.
    next_msg: u64,
    given: HashMap<u64, Pe>,
    judged: HashSet<u64>,
    /// Payloads announced on the Deltas topic, to answer `Request::Delta`.
    announced: HashMap<(Origin, u64), Vec<u8>>,
    // Our requests.
    next_tag: u64,
    outstanding: BTreeMap<u64, (Pe, Request)>,
    delta_out: usize,
    // Requests to us.
    next_chan: u64,
    open: BTreeMap<u64, Request>,
    // Snapshots.
    make_pending: bool,
    served: Vec<[u8; 32]>,
    offered: HashMap<[u8; 32], Vec<Vec<u8>>>,
    install: Option<usize>,
    kept: HashMap<([u8; 32], u32), Vec<u8>>,
    // The compute side: what it applied, per origin (own included).
    applied: BTreeMap<Origin, u64>,
    own_next: u64,
    digest: [u8; 32],
    loss: f32,
    training_done: bool,
    training: bool,
    finished: bool,
}

impl H {
    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    fn state(&self) -> ComputeState {
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
    fn input(&mut self, input: Input<Pe, u64, u64>) {
        let now = self.now();
        if trace() {
            eprintln!("t={}ms in  {input:?}", self.now_ms);
        }
        self.core.handle(now, input);
        self.drain();
    }

    fn drain(&mut self) {
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

    fn check_segment(&mut self, seg: &Segment) {
        if trace() {
            eprintln!("         apply {seg:?}");
        }
        assert_ne!(seg.origin, self.own, "next_apply hands out own updates");
        assert!(!seg.codes.is_empty(), "empty segment");
        assert!(seg.codes.len() <= self.apply_max, "segment over max");
        let markers = seg.codes.iter().filter(|&&c| c == DELTA).count();
        assert_eq!(
            markers,
            seg.payloads.len(),
            "segment without the payload of a delta update: {seg:?}"
        );
        let at = self.applied.entry(seg.origin).or_insert(0);
        assert_eq!(
            seg.first_seq, *at,
            "segment of {:?} not contiguous with what was applied",
            seg.origin
        );
        *at = seg.end();
    }

    fn output(&mut self, out: Output<Pe, u64, u64>) {
        if trace() && !matches!(out, Output::Event(proto::Event::Bytes { .. })) {
            eprintln!("         out {out:?}");
        }
        match out {
            Output::Publish { topic, data, end } => {
                match topic {
                    Topic::Updates => {
                        wire::decode_updates(&data).expect("own update batch does not decode");
                    }
                    Topic::Status => {
                        Heartbeat::decode(&data).expect("own heartbeat does not decode");
                    }
                    Topic::Deltas => {
                        DeltaAnnounce::decode(&data, MAX_DELTA_BYTES)
                            .expect("own delta announcement does not decode");
                    }
                }
                if let Some(end) = end {
                    let now = self.now();
                    self.core.handle(now, Input::Published { end });
                }
            }
            Output::Verdict { id, from, verdict } => {
                let Some(&given_from) = self.given.get(&id) else {
                    panic!("verdict {verdict:?} for message {id}, never given");
                };
                assert_eq!(from, given_from, "verdict names another forwarder");
                assert!(self.judged.insert(id), "second verdict for message {id}");
            }
            Output::Send { to, tag, request } => {
                assert!(tag >= self.next_tag, "tag {tag} reused");
                self.next_tag = tag + 1;
                assert_ne!(to, ME, "request sent to this node");
                request
                    .validate()
                    .unwrap_or_else(|e| panic!("own request {request:?} invalid: {e}"));
                if matches!(request, Request::Delta { .. }) {
                    self.delta_out += 1;
                    assert!(self.delta_out <= MAX_WAITS, "delta fetches unbounded");
                }
                self.outstanding.insert(tag, (to, request));
            }
            Output::Respond { channel, response } => {
                let Some(req) = self.open.remove(&channel) else {
                    panic!("answer on channel {channel}: never given or answered already");
                };
                response
                    .validate(&req)
                    .unwrap_or_else(|e| panic!("answer {response:?} to {req:?} invalid: {e}"));
            }
            Output::MakeSnapshot => {
                assert!(!self.make_pending, "MakeSnapshot again before Snapshot");
                self.make_pending = true;
            }
            Output::Install { chunks, hashes } => {
                assert_eq!(chunks.len(), hashes.len());
                for (c, h) in chunks.iter().zip(&hashes) {
                    assert_eq!(&hash(c), h, "unverified chunk installed");
                }
                assert!(self.install.is_none(), "second Install before Installed");
                self.install = Some(chunks.len());
            }
            Output::KeepChunk { id, index, data } => {
                self.kept.insert((id, index), data);
            }
            Output::Resume { id, chunks } => {
                // Chunks kept by "an earlier life": those of the offer as
                // made, some of them corrupted, chosen by the header.
                let offered = self.offered.get(&id).cloned().unwrap_or_default();
                for index in 0..chunks.min(8) as u32 {
                    let mut data = match self.kept.get(&(id, index)) {
                        Some(d) => d.clone(),
                        None if self.resume_mask & (1 << index) != 0 => {
                            match offered.get(index as usize) {
                                Some(d) => d.clone(),
                                None => continue,
                            }
                        }
                        None => continue,
                    };
                    if self.resume_mask & 0x80 != 0 && index == 0 {
                        data.push(0);
                    }
                    let now = self.now();
                    self.core.handle(now, Input::KeptChunk { id, index, data });
                }
            }
            Output::StartTraining => {
                assert!(!self.training, "StartTraining twice");
                self.training = true;
            }
            Output::Finished { .. } => {
                assert!(!self.finished, "Finished twice");
                self.finished = true;
            }
            Output::Event(_) => {}
        }
    }

    fn gossip(&mut self, from: Pe, source: Option<Pe>, topic: Option<Topic>, data: Vec<u8>) {
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

    fn request(&mut self, from: Pe, request: Request) {
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
    fn pick_tag(&mut self, r: &mut R) -> Option<(u64, Pe, Request)> {
        let i = usize::from(r.u8());
        if self.outstanding.is_empty() {
            return None;
        }
        let (&tag, (to, req)) = self.outstanding.iter().nth(i % self.outstanding.len())?;
        Some((tag, *to, req.clone()))
    }

    fn closed(&mut self, tag: u64) {
        if let Some((_, req)) = self.outstanding.remove(&tag) {
            if matches!(req, Request::Delta { .. }) {
                self.delta_out -= 1;
            }
        }
    }

    /// A response fitting `req`, built from the fuzz bytes.
    fn answer(&mut self, r: &mut R, req: &Request) -> Response {
        match *req {
            Request::Range { origin, from, to } => {
                let back = u64::from(r.u8() % 3).min(from);
                let first_seq = from - back;
                let n = (u64::from(r.u8() % 24)).min(to - first_seq) as usize;
                let (codes, payloads) = r.codes(n);
                Response::Range {
                    origin,
                    first_seq,
                    codes: Blob(codes),
                    payloads: payloads.iter().map(|p| Blob(p.to_vec())).collect(),
                }
            }
            Request::Delta { origin, seq } => {
                let b = r.u8();
                let data = match (b % 4, self.announced.get(&(origin, seq))) {
                    (0 | 1, Some(p)) => p.clone(),
                    (2, _) => {
                        let n = usize::from(r.u8() % 64);
                        r.bytes(n)
                    }
                    _ => deltas()[usize::from(b >> 2) % 4].to_vec(),
                };
                Response::Delta {
                    origin,
                    seq,
                    data: Blob(data),
                }
            }
            Request::Offer => {
                let vv: VersionVector = r.vv().into_iter().collect();
                let d = r.u8();
                let s = make_snapshot(r, &vv, [d; 32]);
                self.offered.insert(s.id, s.chunks.clone());
                Response::Offer {
                    id: s.id,
                    vv: vv.into_iter().collect(),
                    digest: s.digest,
                    raw_len: s.raw_len,
                    hashes: Blob(s.hashes.concat()),
                }
            }
            Request::Chunk { id, index } => {
                let b = r.u8();
                let mut data = self
                    .offered
                    .get(&id)
                    .and_then(|c| c.get(index as usize))
                    .cloned()
                    .unwrap_or_else(|| {
                        let n = usize::from(b % 32);
                        r.bytes(n)
                    });
                if b & 0x80 != 0 {
                    data.push(b);
                }
                Response::Chunk {
                    id,
                    index,
                    data: Blob(data),
                }
            }
        }
    }

    fn op(&mut self, r: &mut R) {
        match r.u8() % 16 {
            0 | 1 => {
                let b = r.u8();
                let dt = if b < 200 {
                    10 * u64::from(b)
                } else {
                    1000 * u64::from(b - 199)
                };
                self.now_ms += dt;
                self.input(Input::Tick);
            }
            2 => {
                let from = r.peer();
                let source = r.source();
                let topic = [
                    Some(Topic::Updates),
                    Some(Topic::Status),
                    Some(Topic::Deltas),
                    None,
                ][usize::from(r.u8() % 4)];
                let n = usize::from(r.u8());
                let data = r.bytes(n);
                self.gossip(from, source, topic, data);
            }
            3 => {
                let from = r.peer();
                let source = r.source();
                let first = u64::from(r.u8());
                let n = usize::from(r.u8() % 32);
                let codes = r.bytes(n);
                self.gossip(
                    from,
                    source,
                    Some(Topic::Updates),
                    wire::encode_updates(first, &codes),
                );
            }
            4 => {
                let source = r.source();
                let from = source.filter(|p| *p != ME).unwrap_or_else(|| r.peer());
                let vv = r.vv();
                let d = r.u8();
                let digest = if d == 0 { self.digest } else { [d; 32] };
                let flags = r.u8();
                let loss = [f32::NAN, 0.5, 0.0, f32::INFINITY][usize::from(flags >> 4) % 4];
                let hb = Heartbeat {
                    vv,
                    digest,
                    done: flags & 1 != 0,
                    leaving: flags & 2 != 0,
                    loss,
                    backlog: if flags & 4 != 0 { u64::from(r.u8()) } else { 0 },
                    mode: Default::default(),
                };
                self.gossip(from, source, Some(Topic::Status), hb.encode());
            }
            5 => {
                let from = r.peer();
                let source = r.source();
                let seq = u64::from(r.u8());
                let b = r.u8();
                let payload = if b & 0x10 == 0 {
                    deltas()[usize::from(b) % 4].to_vec()
                } else {
                    let n = usize::from(r.u8() % 64);
                    r.bytes(n)
                };
                let mut h = hash(&payload);
                if b & 0x20 != 0 {
                    h[0] ^= 1;
                }
                let a = DeltaAnnounce {
                    seq,
                    len: payload.len() as u32,
                    hash: h,
                };
                if let Some(o) = source.and_then(|p| proto::Peer::origin(&p)) {
                    self.announced.insert((o, seq), payload);
                }
                self.gossip(from, source, Some(Topic::Deltas), a.encode());
            }
            6 => {
                let from = r.peer();
                let req = match r.u8() % 4 {
                    0 => {
                        let origin = r.origin();
                        let from = u64::from(r.u8());
                        let to = from + u64::from(r.u8());
                        Request::Range { origin, from, to }
                    }
                    1 => Request::Offer,
                    2 => {
                        let b = r.u8();
                        let id = match self.served.iter().rev().nth(usize::from(b % 4)) {
                            Some(id) if b < 0xc0 => *id,
                            _ => [b; 32],
                        };
                        Request::Chunk {
                            id,
                            index: u32::from(r.u8() % 4),
                        }
                    }
                    _ => Request::Delta {
                        origin: r.origin(),
                        seq: u64::from(r.u8()),
                    },
                };
                self.request(from, req);
            }
            7 => {
                let from = r.peer();
                let n = usize::from(r.u8());
                if let Some(req) = cbor::<Request>(&r.bytes(n)) {
                    self.request(from, req);
                }
            }
            8 | 9 => {
                let Some((tag, to, req)) = self.pick_tag(r) else {
                    return;
                };
                let b = r.u8();
                let from = if b & 0x80 == 0 { to } else { r.peer() };
                let response = match b % 4 {
                    0 => Response::Refused("no".into()),
                    3 => {
                        let n = usize::from(r.u8());
                        match cbor::<Response>(&r.bytes(n)) {
                            Some(resp) => resp,
                            None => Response::Refused("undecodable".into()),
                        }
                    }
                    _ => self.answer(r, &req),
                };
                self.closed(tag);
                self.input(Input::Response {
                    from,
                    tag,
                    response,
                });
            }
            10 => {
                let Some((tag, _, _)) = self.pick_tag(r) else {
                    return;
                };
                self.closed(tag);
                self.input(Input::RequestFailed { tag });
            }
            11 => {
                let b = r.u8();
                if !self.training {
                    return;
                }
                // Made, applied and persisted by the compute side.
                let update = if b % 8 == 7 {
                    Own::Delta(deltas()[usize::from(b >> 3) % 4].clone())
                } else {
                    Own::Code(if b == DELTA { 0x81 } else { b })
                };
                let seq = self.own_next;
                self.own_next += 1;
                self.applied.insert(self.own, self.own_next);
                self.input(Input::Own { seq, update });
                let st = self.state();
                self.input(Input::State(Box::new(st)));
            }
            12 => {
                let b = r.u8();
                self.training_done |= b & 1 != 0;
                if b & 2 != 0 {
                    self.digest = [r.u8(); 32];
                }
                self.loss = [f32::NAN, 1.5, 0.25, 0.0][usize::from(b >> 2) % 4];
                let st = self.state();
                self.input(Input::State(Box::new(st)));
            }
            13 => {
                if self.make_pending {
                    self.make_pending = false;
                    let vv = self.applied.clone();
                    let s = make_snapshot(r, &vv, self.digest);
                    self.served.push(s.id);
                    self.input(Input::Snapshot(Arc::new(s)));
                } else if self.install.take().is_some() {
                    let b = r.u8();
                    let result = if b & 1 == 0 {
                        let n = r.u8() % 4;
                        let mut segs: BTreeMap<Origin, Segment> = BTreeMap::new();
                        for _ in 0..n {
                            let origin = r.origin();
                            let len = usize::from(r.u8() % 16);
                            let (codes, payloads) = r.codes(len);
                            segs.insert(
                                origin,
                                Segment {
                                    origin,
                                    first_seq: 0,
                                    codes,
                                    payloads,
                                },
                            );
                        }
                        let segs: Vec<Segment> = segs.into_values().collect();
                        // The compute side installed the snapshot's state.
                        self.applied = segs.iter().map(|s| (s.origin, s.end())).collect();
                        if let Some(n) = self.applied.get(&self.own) {
                            self.own_next = self.own_next.max(*n);
                        }
                        Ok(segs)
                    } else {
                        Err("cannot install".to_string())
                    };
                    self.input(Input::Installed(result));
                }
            }
            14 => {
                let p = Pe(r.u8() % PEERS);
                self.input(Input::Forget(p));
            }
            _ => self.input(Input::Leave),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = R(data);
    let h0 = r.u8();
    let h1 = r.u8();
    let h2 = r.u8();
    let own = origin_of(ME.0);
    let settings = Settings {
        origin: own,
        max_rate: [20.0, 1000.0, 50_000.0, 1.0][usize::from(h1 % 4)],
        publish_interval: Duration::from_millis(50),
        publish_max: 1 + usize::from((h1 >> 2) % 16),
        heartbeat_interval: Duration::from_millis(300),
        timing: Timing {
            max_range: [16, 1 << 16][usize::from(h1 >> 7)],
            ..Timing::default()
        },
        join: [join::Mode::Replay, join::Mode::Snapshot, join::Mode::Auto][usize::from(h0 % 3)],
        min_peers: usize::from((h0 >> 2) % 3),
        exit_when_settled: h0 & 0x10 != 0,
        settle_timeout: Duration::from_secs(60),
        max_delta_bytes: MAX_DELTA_BYTES,
        shapes: shapes(),
        drop_incoming: if h0 & 0x20 != 0 { 0.25 } else { 0.0 },
        mode: Default::default(),
    };
    let apply_max = [4096, 1, 3, 16][usize::from(h0 >> 6)];
    let t0 = Instant::now();
    let mut h = H {
        core: Core::new(settings, Log::in_memory(RunId([7; 32])), t0),
        t0,
        now_ms: 0,
        own,
        apply_max,
        resume_mask: h2,
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
    };
    // The compute side reports its (empty) replica first, as a node does.
    let st = h.state();
    h.input(Input::State(Box::new(st)));
    while !r.done() {
        h.op(&mut r);
    }
    // Every request ends (answered or failed): then every gossip message
    // has been judged.
    // (Failing sends nothing new: repairs and chunk requests go out on ticks.)
    for _ in 0..100_000 {
        let Some(&tag) = h.outstanding.keys().next() else {
            break;
        };
        h.closed(tag);
        h.input(Input::RequestFailed { tag });
    }
    let unjudged: Vec<&u64> = h.given.keys().filter(|id| !h.judged.contains(id)).collect();
    assert!(unjudged.is_empty(), "messages never judged: {unjudged:?}");
});
