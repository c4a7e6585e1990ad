//! Update batches (gossipsub): `decode_updates` never panics, and anything it
//! accepts is the canonical encoding of what it returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::net::wire::{decode_updates, encode_updates};

fuzz_target!(|data: &[u8]| {
    if let Ok((first, codes)) = decode_updates(data) {
        assert_eq!(
            encode_updates(first, codes),
            data,
            "accepted a non-canonical batch (first_seq {first}, {} codes)",
            codes.len()
        );
    }
});
