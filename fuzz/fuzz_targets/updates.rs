//! Update batches (gossipsub; `UPDATES_VERSION` = 2 ‖ varint first_seq ‖
//! origin's signature (64) ‖ codes, or `UPDATES_BASES_VERSION` = 3 with
//! `varint len ‖ bases` before the codes): `decode_updates_with` never
//! panics, and anything it accepts is the canonical encoding of what it
//! returns, the signature and the bases included. (Whether the signature
//! verifies is the core's business, fuzzed by the `proto` target; the
//! bases' own decoder is the `basis` target.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::net::wire::{
    decode_updates, decode_updates_with, encode_updates_with, UPDATES_BASES_VERSION,
    UPDATES_VERSION,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = decode_updates_with(data) {
        let want = if b.bases.is_empty() {
            UPDATES_VERSION
        } else {
            UPDATES_BASES_VERSION
        };
        assert_eq!(data[0], want);
        assert!(!b.codes.is_empty(), "accepted an empty batch");
        assert!(
            b.first_seq.checked_add(b.codes.len() as u64).is_some(),
            "accepted a batch whose seqs overflow"
        );
        assert_eq!(
            encode_updates_with(b.first_seq, &b.sig, b.bases, b.codes),
            data,
            "accepted a non-canonical batch (first_seq {}, {} codes)",
            b.first_seq,
            b.codes.len()
        );
        let (first, sig, codes) = decode_updates(data).expect("the same batch");
        assert_eq!((first, sig, codes), (b.first_seq, b.sig, b.codes));
    }
});
