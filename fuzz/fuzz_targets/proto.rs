//! The protocol core (`proto::Core`), an IO-free state machine, driven by a
//! sequence of inputs decoded from the fuzz bytes, with the shell's and the
//! compute side's part played by this harness (as `tests/sim/world.rs` does).
//!
//! Layout: 3 header bytes (settings), then operations. Each operation is one
//! byte `op` (kind = `op % 17`) and its arguments; a missing byte reads as 0
//! and the run ends when the input does. Peers are `Pe(0..8)`: `Pe(0)` is
//! this node, `Pe(x)` signs with an ed25519 key derived from `x`
//! (`Signer::from_seed`), except `Pe(7)`, which has no origin (not an ed25519
//! identity; `origin_of(7)` is not a key either); gossip is forwarded and
//! requests come from `Pe(1..8)`. Each peer has an honest history (a code per
//! seq, a delta update at every seq ≡ 15 mod 16), which is what it signs
//! unless the input says otherwise.
//!
//! Header: `h0` join mode (`% 3`), min peers (`>> 2 % 3`), exit when settled
//! (`0x10`), drop incoming (`0x20`), hand-out size (`>> 6`: 4096, 1, 3, 16);
//! `h1` rate (`% 4`), publish size (`>> 2 % 16`), snapshot quorum 1 or 2
//! (`0x40`), range size (`>> 7`); `h2` chunks resumed (bits 0–2, bit 7
//! corrupts chunk 0), a quota of 200 updates per origin (`0x08`), spot
//! checks of every foreign update, and bases in built update batches
//! (`0x10`).
//!
//! A "how" byte says how a built batch is signed and filled: low 3 bits
//! 0–4 the author's true signature, 5 another peer's key, 6 a bit flipped,
//! 7 zeros; bit 3: codes from the input instead of the honest history.
//!
//! | kind | input |
//! |---|---|
//! | 0, 1 | `Tick` after `dt` (byte `b`: `10·b` ms below 200, else `b − 199` s) |
//! | 2 | `Gossip`, raw: forwarder, source, topic (Updates/Status/Deltas/Proofs/None), len, data |
//! | 3 | `Gossip` Updates, built: forwarder, source, how, first seq, n, (codes) — honest: up to the next delta update |
//! | 4 | `Gossip` Status, built: source, (forwarder), a sorted version vector, digest (0 ours, 1 the honest one of that vv, else `[d; 32]`), flags (1 done, 2 leaving, 4 backlog, 8 replay the last stamp, 0x40 new epoch, loss), backlog; stamps count up per peer |
//! | 5 | `Gossip` Deltas, built: forwarder, source, how, seq, payload byte (honest: the delta update at `seq \| 15`; else a valid FedZip delta or raw bytes), true or wrong hash (`0x20`), signed as `how` says |
//! | 6 | `Request`, built: Range / Offer (of the current state, a vv from the input, the applied state, a little before it) / Chunk (of a served snapshot or not) / Delta / Fingerprints |
//! | 7 | `Request`, CBOR-decoded (as libp2p's `cbor` codec does) from len, bytes |
//! | 8, 9 | `Response` to an outstanding `Output::Send` tag: Refused, a fitting answer built from the request (up to three signed batches from the request's start or a little before, signed as `how` says; a delta; an offer with a true id of the asked or another state, with the honest digest or not; chunks, true or corrupted; the node's own fingerprints, one altered or not), or CBOR-decoded bytes |
//! | 10 | `RequestFailed` for an outstanding tag |
//! | 11 | `Own` update (after `StartTraining`): a code or a valid delta, seqs increasing |
//! | 12 | `State`: the harness's replica model (version vector of what it applied, digest a function of it unless diverged), loss, training done |
//! | 13 | `Snapshot` (or `SnapshotFailed`) after `MakeSnapshot`, or `Installed` (Ok with the verified prefix of each origin's snapshot log, or Err) after `Install` |
//! | 14 | `Forget(peer)` |
//! | 15 | `Leave` |
//! | 16 | `Gossip` Proofs, built: forwarder, peer, mode (valid proof, no conflict, bad signature, raw bytes), first seq, n |
//!
//! After each input, `poll()` and then `next_apply()` are drained; what is
//! applied is reported back as `State`, as the compute thread does; `Publish`
//! with an `end` is answered with `Published`, `Resume` with `KeptChunk`s;
//! `MakeSnapshot { target, retract }` is answered (at op 13) with the state
//! the compute side reaches by subtracting `retract` (and own updates past
//! the target), or `SnapshotFailed` when that is not `target`.
//!
//! Checked: nothing panics; every `next_apply` segment is non-empty, carries
//! one payload per delta marker and is never of the node's own origin;
//! `Apply` segments are at most the asked size (or end the signed batch that
//! crosses it), continue their origin exactly where what was applied
//! ended, leave no gap in what is persisted, never pass an exclusion, and every code in them is
//! covered by a signature of its origin that verifies; `Retract` segments
//! are exactly the applied tail of an excluded origin from its exclusion;
//! `Store` segments lie within what is applied, leave no gap in what is
//! persisted, and are signed (but for a tail cut at the installed version
//! vector, whose batch's signature comes with the next `Apply` segment); snapshot retractions are applied tails and reach the
//! target; every `Verdict` is for a gossip id given as input, from its
//! forwarder, at most once per id, and once every request is answered or
//! failed every message has one; every `Send` has a fresh tag, a request
//! that passes `validate`, and is not to this node; outstanding
//! `Request::Delta` sends stay ≤ 1024 (`MAX_WAITS`) and offer requests held
//! unanswered ≤ 256 (`MAX_OFFER_WAITING`); every `Respond` answers a channel
//! given once and not yet answered, passes the requester's
//! `Response::validate`, comes at once unless the request is an `Offer`, and
//! serves only batches its origin signed; own publications decode and are
//! validly signed, own heartbeats count up; published proofs hold and are
//! against an origin the harness made equivocate; `Install`ed chunks match
//! their hashes; `MakeSnapshot` is not asked again before `Snapshot`; only
//! peers that served forged batches are banned; only origins the harness
//! made equivocate are excluded, with a proof that holds from that seq;
//! `StartTraining` and `Finished` come at most once. Known library bugs
//! (README, "Known failures") fail these checks; `PROTO_ALLOW_KNOWN=1`
//! tolerates exactly those cases, so that fuzzing gets past them.
//!
//! Files: `proto/input.rs` (the byte reader, the valid deltas, honest
//! histories and signing, snapshots built from the bytes),
//! `proto/harness.rs` (the harness state `H`, feeding inputs and draining
//! outputs, tags and channels), `proto/ops.rs` (the operations of the table
//! above, the responses built to fit requests, the installed snapshot log,
//! proofs), `proto/check.rs` (the checks on segments and outputs, with the
//! shell's and compute side's answers to them).
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
use seedswarm::crdt::attest::Signer;
use seedswarm::proto::{self, join, Input, Settings, Timing};
use seedswarm::zo::seed::{Origin, RunId};
use std::sync::OnceLock;
use std::time::Duration;

/// A peer: small integers. `Pe(0)` is this node, `Pe(NO_ORIGIN)` has no origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Pe(u8);

const PEERS: u8 = 8;
const NO_ORIGIN: u8 = 7;
const ME: Pe = Pe(0);

/// The fuzzed run.
const RUN: RunId = RunId([7; 32]);

impl proto::Peer for Pe {
    fn origin(&self) -> Option<Origin> {
        (self.0 != NO_ORIGIN).then(|| origin_of(self.0))
    }
}

/// The key peer `x` signs with (derived from `x`; `Pe(NO_ORIGIN)` has one
/// too, but it is not its origin).
fn signer_of(x: u8) -> &'static Signer {
    static S: OnceLock<Vec<Signer>> = OnceLock::new();
    let all = S.get_or_init(|| {
        (0..PEERS)
            .map(|x| {
                let seed = blake3::hash(&[b"seedswarm-fuzz/peer".as_slice(), &[x]].concat());
                Signer::from_seed(*seed.as_bytes(), RUN)
            })
            .collect()
    });
    &all[usize::from(x % PEERS)]
}

/// The origin of peer `x`: its public key (`origin_of(NO_ORIGIN)` is an
/// origin no peer has, and not an ed25519 key).
fn origin_of(x: u8) -> Origin {
    if x % PEERS == NO_ORIGIN {
        Origin([0xff; 32])
    } else {
        signer_of(x).origin()
    }
}

/// The peer whose origin `o` is.
fn index_of(o: &Origin) -> Option<u8> {
    (0..PEERS).find(|&x| origin_of(x) == *o)
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

/// `PROTO_ALLOW_KNOWN=1` tolerates the known library bugs listed in the
/// README ("Known failures"), narrowly, so that fuzzing gets past them;
/// by default they fail the run.
fn allow_known() -> bool {
    static A: OnceLock<bool> = OnceLock::new();
    *A.get_or_init(|| std::env::var_os("PROTO_ALLOW_KNOWN").is_some())
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
    let settings = Settings {
        signer: signer_of(ME.0).clone(),
        max_rate: [20.0, 1000.0, 50_000.0, 1.0][usize::from(h1 % 4)],
        publish_interval: Duration::from_millis(50),
        publish_max: 1 + usize::from((h1 >> 2) % 16),
        heartbeat_interval: Duration::from_millis(300),
        timing: Timing {
            max_range: [16, 1 << 16][usize::from(h1 >> 7)],
            ..Timing::default()
        },
        join: [join::Mode::Replay, join::Mode::Snapshot, join::Mode::Auto][usize::from(h0 % 3)],
        snapshot_quorum: 1 + usize::from((h1 >> 6) & 1),
        apply_rate: None,
        min_peers: usize::from((h0 >> 2) % 3),
        exit_when_settled: h0 & 0x10 != 0,
        settle_timeout: Duration::from_secs(60),
        max_delta_bytes: MAX_DELTA_BYTES,
        max_updates_per_origin: if h2 & 0x08 != 0 { 200 } else { 1 << 24 },
        owner: None,
        epoch_ms: 1,
        shapes: shapes(),
        drop_incoming: if h0 & 0x20 != 0 { 0.25 } else { 0.0 },
        mode: Default::default(),
        verify_fraction: if h2 & 0x10 != 0 { 1.0 } else { 0.0 },
        check_key: [9; 32],
    };
    let apply_max = [4096, 1, 3, 16][usize::from(h0 >> 6)];
    let mut h = H::new(settings, apply_max, h2);
    h.bases_on = h2 & 0x10 != 0;
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
    // Known: a delta announcement whose payload was being fetched when its
    // origin was excluded from before its seq is never judged.
    let dropped = |id: &u64| {
        allow_known()
            && h.announces
                .get(id)
                .is_some_and(|(o, seq)| h.excluded.get(o).is_some_and(|&e| e <= *seq))
    };
    let unjudged: Vec<&u64> = h
        .given
        .keys()
        .filter(|id| !h.judged.contains(id) && !dropped(id))
        .collect();
    assert!(unjudged.is_empty(), "messages never judged: {unjudged:?}");
});
