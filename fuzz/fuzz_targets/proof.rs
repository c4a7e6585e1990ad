//! Proofs of equivocation (gossipsub `seedswarm/<run>/x`; `PROOF_VERSION` = 1
//! ‖ origin ‖ two signed batches): `Proof::decode` and `Proof::check` never
//! panic; anything `decode` accepts is the canonical encoding of what it
//! returns; and a proof that checks names a seq both batches hold where they
//! differ.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::crdt::attest::Proof;
use seedswarm::zo::seed::RunId;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Proof::decode(data) else {
        return;
    };
    assert_eq!(p.encode(), data, "accepted a non-canonical proof");
    for b in [&p.a, &p.b] {
        assert_eq!(b.codes.len(), b.attest.len as usize);
        assert!(b.attest.first_seq.checked_add(u64::from(b.attest.len)).is_some());
    }
    let conflict = p.a.conflict(&p.b);
    if let Some(seq) = conflict {
        for b in [&p.a, &p.b] {
            assert!(b.attest.first_seq <= seq && seq < b.attest.end());
        }
    }
    match p.check(&RunId([0; 32])) {
        Ok(seq) => assert_eq!(Some(seq), conflict),
        Err(_) => {}
    }
});
