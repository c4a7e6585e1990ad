//! The bases of a batch (`crdt::basis`: the state each update was computed
//! on): `Bases::decode` never panics on any bytes and batch length, and
//! what it accepts re-encodes to bases that decode to the same version
//! vectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::crdt::basis::{self, Bases};
use seedswarm::zo::seed::Origin;

fuzz_target!(|data: &[u8]| {
    let Some((&len, bytes)) = data.split_first() else {
        return;
    };
    let len = usize::from(len % 64) + 1;
    let Ok(b) = Bases::decode(bytes, len, 4096) else {
        return;
    };
    // Prefixes resolve to origins that carry them.
    let resolve = |p: &[u8; basis::PREFIX]| {
        let mut o = [0u8; 32];
        o[..basis::PREFIX].copy_from_slice(p);
        Some(Origin(o))
    };
    let vvs: Vec<_> = (0..len)
        .map(|i| b.at(i, &resolve).expect("every update of the batch has a basis"))
        .collect();
    let again = basis::encode(&vvs);
    let d = Bases::decode(&again, len, 4096).expect("re-encoded bases decode");
    for (i, vv) in vvs.iter().enumerate() {
        assert_eq!(d.at(i, &resolve).as_ref(), Some(vv));
    }
});
