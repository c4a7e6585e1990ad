//! Update batches (gossipsub; `UPDATES_VERSION` = 2 ‖ varint first_seq ‖
//! origin's signature (64) ‖ codes): `decode_updates` never panics, and
//! anything it accepts is the canonical encoding of what it returns, the
//! signature included. (Whether the signature verifies is the core's
//! business, fuzzed by the `proto` target.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::net::wire::{decode_updates, encode_updates, UPDATES_VERSION};

fuzz_target!(|data: &[u8]| {
    if let Ok((first, sig, codes)) = decode_updates(data) {
        assert_eq!(data[0], UPDATES_VERSION);
        assert!(!codes.is_empty(), "accepted an empty batch");
        assert!(
            first.checked_add(codes.len() as u64).is_some(),
            "accepted a batch whose seqs overflow"
        );
        assert_eq!(
            encode_updates(first, &sig, codes),
            data,
            "accepted a non-canonical batch (first_seq {first}, {} codes)",
            codes.len()
        );
    }
});
