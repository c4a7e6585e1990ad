//! FedZip compressed deltas: `fedzip::decode` on arbitrary bytes, with a
//! bound of 2^20 elements. Must never panic. When it accepts the input, the
//! decoded delta is valid, and encoding it again (with either position
//! coding) decodes to the same delta.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::delta::fedzip::{self, Positions};

const MAX_ELEMENTS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = fedzip::decode(data, MAX_ELEMENTS) else {
        return;
    };
    assert!(d.validate().is_ok());
    for coding in [Positions::Diff, Positions::Plain] {
        let bytes = fedzip::encode(&d, coding);
        let again = fedzip::decode(&bytes, MAX_ELEMENTS).expect("re-encoded delta decodes");
        assert_eq!(again, d);
        // Encoding is deterministic.
        assert_eq!(fedzip::encode(&again, coding), bytes);
    }
});
