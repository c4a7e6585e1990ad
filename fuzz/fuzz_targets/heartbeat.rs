//! Heartbeats (gossipsub; `HEARTBEAT_VERSION` ‖ bincode): `Heartbeat::decode`
//! never panics, and anything it accepts survives an encode/decode round trip
//! (so it starts with the version byte). `loss` may be NaN, so the
//! round trip is checked on re-encoded bytes rather than with `PartialEq`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::net::wire::Heartbeat;

fuzz_target!(|data: &[u8]| {
    if let Ok(hb) = Heartbeat::decode(data) {
        let enc = hb.encode();
        assert!(!enc.is_empty(), "accepted heartbeat does not re-encode");
        assert_eq!(enc[0], seedswarm::net::wire::HEARTBEAT_VERSION);
        let again = Heartbeat::decode(&enc).expect("re-encoded heartbeat is refused");
        assert_eq!(again.encode(), enc, "heartbeat changes across a round trip");
        assert_eq!(again.loss.to_bits(), hb.loss.to_bits());
        assert_eq!(again.vv, hb.vv);
        assert_eq!(again.digest, hb.digest);
        assert_eq!(
            (again.done, again.leaving, again.backlog),
            (hb.done, hb.leaving, hb.backlog)
        );
    }
});
