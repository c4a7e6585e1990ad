//! Seed logs (`seedlog::SeedLog::decode`: a whole run as one file): never
//! panics, never allocates beyond the input's size, and what it accepts
//! encodes back to exactly the input bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::seedlog::SeedLog;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = SeedLog::decode(data) {
        assert_eq!(s.encode(), data, "accepted a non-canonical seed log");
    }
});
