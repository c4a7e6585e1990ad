//! Sync request-response messages (protocol `/seedswarm/sync/2`): decoded
//! exactly as libp2p-request-response 0.30's `cbor` codec does
//! (`cbor4ii::serde::from_slice`), then validated. Must never panic.
//!
//! The input is tried whole as a `Request` and as a `Response`; a decoded
//! response is validated against one request of each kind (Range, Offer of
//! the current state and of a named one, Chunk, Delta, Fingerprints). The
//! input is also read as `[n] ‖ request (n bytes) ‖ response` so that
//! `Response::validate` runs against fuzzer-chosen decoded requests.
//!
//! When a response passes validation against a request, what validation
//! promises is checked: a `Range` holds whole batches (non-empty, 64-byte
//! signatures, one payload per delta marker) that cover the requested range
//! from its start; an `Offer` for a named state offers that state;
//! `Fingerprints` are sorted with 32-byte hashes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::crdt::log::DELTA;
use seedswarm::net::wire::{Request, Response, MAX_BATCH, SIG_LEN};
use seedswarm::zo::seed::Origin;

fn decode<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    cbor4ii::serde::from_slice::<T>(data).ok()
}

/// One request of each kind, to validate decoded responses against.
fn requests() -> Vec<Request> {
    let o = Origin([0; 32]);
    vec![
        Request::Range {
            origin: o,
            from: 0,
            to: u64::MAX,
        },
        Request::Range {
            origin: o,
            from: 5,
            to: 10,
        },
        Request::Offer { at: Vec::new() },
        Request::Offer {
            at: vec![(o, 3), (Origin([1; 32]), 7)],
        },
        Request::Chunk {
            id: [0; 32],
            index: 0,
        },
        Request::Delta { origin: o, seq: 0 },
        Request::Fingerprints,
    ]
}

/// What `Response::validate(req)` promises when it accepts.
fn check_valid(req: &Request, resp: &Response) {
    if resp.validate(req).is_err() {
        return;
    }
    match (req, resp) {
        (
            Request::Range { origin, from, to },
            Response::Range {
                origin: o,
                batches,
            },
        ) => {
            assert_eq!(origin, o, "range of another origin accepted");
            let mut at = *from;
            for (i, b) in batches.iter().enumerate() {
                assert!(!b.codes.0.is_empty() && b.codes.0.len() <= MAX_BATCH);
                assert_eq!(b.sig.0.len(), SIG_LEN);
                assert!(b.first_seq <= at && b.end() > at, "batches leave a hole");
                assert!(i == 0 || at < *to, "batch past the requested range");
                let markers = b.codes.0.iter().filter(|&&c| c == DELTA).count();
                assert_eq!(markers, b.payloads.len());
                at = b.end();
            }
        }
        (Request::Offer { at }, Response::Offer { vv, .. }) => {
            assert!(at.is_empty() || at == vv, "offer of another state accepted");
        }
        (Request::Fingerprints, Response::Fingerprints { heads }) => {
            assert!(heads.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(heads.iter().all(|(_, _, h)| h.0.len() == 32));
        }
        (_, Response::Refused(_)) => {}
        (Request::Delta { origin, seq }, Response::Delta { origin: o, seq: s, .. }) => {
            assert_eq!((origin, seq), (o, s));
        }
        (Request::Chunk { id, index }, Response::Chunk { id: i, index: n, .. }) => {
            assert_eq!((id, index), (i, n));
        }
        _ => panic!("a response of another kind passes validation: {req:?} / {resp:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let req = decode::<Request>(data);
    if let Some(r) = &req {
        let _ = r.validate();
    }
    if let Some(resp) = decode::<Response>(data) {
        for r in requests().iter().chain(req.as_ref()) {
            check_valid(r, &resp);
        }
    }
    // Split form: [n] ‖ request (n bytes) ‖ response.
    if let Some((&n, rest)) = data.split_first() {
        let n = usize::from(n).min(rest.len());
        let (a, b) = rest.split_at(n);
        if let (Some(req), Some(resp)) = (decode::<Request>(a), decode::<Response>(b)) {
            let _ = req.validate();
            check_valid(&req, &resp);
        }
    }
});
