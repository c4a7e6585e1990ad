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
//!
//! Files: `proto/input.rs` (the byte reader, the valid deltas, snapshots
//! built from the bytes), `proto/harness.rs` (the harness state `H`, feeding
//! inputs and draining outputs, tags and channels), `proto/ops.rs` (the
//! operations of the table above and the responses built to fit requests),
//! `proto/check.rs` (the checks on segments and outputs, with the shell's
//! answers to them).
#![no_main]

#[path = "proto/check.rs"]
mod check;
#[path = "proto/harness.rs"]
mod harness;
#[path = "proto/input.rs"]
mod input;
#[path = "proto/ops.rs"]
mod ops;

use harness::H;
use input::R;
use libfuzzer_sys::fuzz_target;
use seedswarm::proto::{self, join, Input, Settings, Timing};
use seedswarm::zo::seed::Origin;
use std::sync::OnceLock;
use std::time::Duration;

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
    let mut h = H::new(settings, own, apply_max, h2);
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
