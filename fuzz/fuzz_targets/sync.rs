//! Sync request-response messages: decoded exactly as libp2p-request-response
//! 0.30's `cbor` codec does (`cbor4ii::serde::from_slice`), then validated.
//! Must never panic.
//!
//! The input is tried whole as a `Request` and as a `Response`; it is also read
//! as `[n] ‖ request (n bytes) ‖ response` so that `Response::validate` runs
//! against fuzzer-chosen decoded requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::net::wire::{Request, Response};

fn decode<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    cbor4ii::serde::from_slice::<T>(data).ok()
}

fuzz_target!(|data: &[u8]| {
    let req = decode::<Request>(data);
    if let Some(r) = &req {
        let _ = r.validate();
    }
    if let Some(resp) = decode::<Response>(data) {
        let fallback = Request::Range {
            origin: seedswarm::zo::seed::Origin([0; 32]),
            from: 0,
            to: u64::MAX,
        };
        let _ = resp.validate(req.as_ref().unwrap_or(&fallback));
    }
    // Split form: [n] ‖ request (n bytes) ‖ response.
    if let Some((&n, rest)) = data.split_first() {
        let n = usize::from(n).min(rest.len());
        let (a, b) = rest.split_at(n);
        if let (Some(req), Some(resp)) = (decode::<Request>(a), decode::<Response>(b)) {
            let _ = req.validate();
            let _ = resp.validate(&req);
        }
    }
});
