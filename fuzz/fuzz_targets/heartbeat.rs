//! Heartbeats (gossipsub; `HEARTBEAT_VERSION` = 3 ‖ bincode): `Heartbeat::decode`
//! never panics, and anything it accepts survives an encode/decode round trip
//! (so it starts with the version byte), every field included (the epoch and
//! counter of version 3 too). `loss` may be NaN, so the round trip is checked
//! on re-encoded bytes rather than with `PartialEq`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::net::wire::{Heartbeat, HEARTBEAT_VERSION};

fuzz_target!(|data: &[u8]| {
    if let Ok(hb) = Heartbeat::decode(data) {
        let enc = hb.encode();
        assert!(!enc.is_empty(), "accepted heartbeat does not re-encode");
        assert_eq!(enc[0], HEARTBEAT_VERSION);
        let again = Heartbeat::decode(&enc).expect("re-encoded heartbeat is refused");
        assert_eq!(again.encode(), enc, "heartbeat changes across a round trip");
        assert_eq!(again.loss.to_bits(), hb.loss.to_bits());
        assert_eq!(again.vv, hb.vv);
        assert!(
            hb.vv.windows(2).all(|w| w[0].0 < w[1].0),
            "accepted a version vector not sorted by origin"
        );
        assert_eq!(again.digest, hb.digest);
        assert_eq!(
            (again.done, again.leaving, again.backlog, again.mode),
            (hb.done, hb.leaving, hb.backlog, hb.mode)
        );
        assert_eq!((again.epoch, again.counter), (hb.epoch, hb.counter));
    }
});
