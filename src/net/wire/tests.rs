//! Golden vectors and refusal tests of the wire formats.

use super::*;
use proptest::prelude::*;

const SIG: [u8; SIG_LEN] = [0x5a; SIG_LEN];

/// `0x02 ‖ varint first_seq ‖ signature ‖ codes`.
fn batch_bytes(varint_first: &[u8], codes: &[u8]) -> Vec<u8> {
    let mut v = vec![2];
    v.extend_from_slice(varint_first);
    v.extend_from_slice(&SIG);
    v.extend_from_slice(codes);
    v
}

#[test]
fn golden_update_encoding() {
    assert_eq!(encode_updates(0, &SIG, &[5]), batch_bytes(&[0], &[5]));
    assert_eq!(encode_updates(0, &SIG, &[5]).len(), 67);
    assert_eq!(
        encode_updates(300, &SIG, &[1, 2]),
        batch_bytes(&[0xac, 0x02], &[1, 2])
    );
    assert_eq!(
        decode_updates(&batch_bytes(&[0xac, 0x02], &[1, 2])),
        Ok((300, SIG, &[1u8, 2][..]))
    );
}

#[test]
fn bad_batches_are_refused() {
    assert_eq!(decode_updates(&[]), Err(Error::Truncated));
    assert_eq!(decode_updates(&[1, 0, 1]), Err(Error::Version(1)));
    assert_eq!(decode_updates(&[2, 0x80]), Err(Error::Truncated));
    assert_eq!(decode_updates(&[2, 0, 1, 2]), Err(Error::Truncated));
    assert!(matches!(
        decode_updates(&batch_bytes(&[0], &[])),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(
        decode_updates(&batch_bytes(&[0x80, 0x00], &[1])),
        Err(Error::Malformed(_))
    ));
    let mut big = encode_updates(0, &SIG, &vec![1; MAX_BATCH + 1]);
    assert!(matches!(decode_updates(&big), Err(Error::Oversized(_))));
    big.truncate(big.len() - 1);
    assert!(decode_updates(&big).is_ok());
    let over = batch_bytes(
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        &[7],
    );
    assert!(decode_updates(&over).is_err());
}

#[test]
fn heartbeat_roundtrip_and_limits() {
    let hb = Heartbeat {
        vv: vec![(Origin([1; 32]), 5), (Origin([2; 32]), 9)],
        digest: [3; 32],
        done: true,
        leaving: false,
        loss: 0.25,
        backlog: 0,
        mode: Mode::ZerothOrder,
        epoch: 1_764_600_000_000,
        counter: 12,
    };
    assert_eq!(Heartbeat::decode(&hb.encode()), Ok(hb.clone()));
    let mut unsorted = hb.clone();
    unsorted.vv.reverse();
    assert!(Heartbeat::decode(&unsorted.encode()).is_err());
    let mut bytes = hb.encode();
    bytes.push(0);
    assert!(Heartbeat::decode(&bytes).is_err());
    assert!(Heartbeat::decode(&[0xff; 10]).is_err());
}

#[test]
fn golden_heartbeat() {
    let hb = Heartbeat {
        vv: vec![(Origin([1; 32]), 5)],
        digest: [3; 32],
        done: true,
        leaving: false,
        loss: 0.25,
        backlog: 300,
        mode: Mode::FirstOrder,
        epoch: 300,
        counter: 7,
    };
    // version ‖ bincode (standard: varint lengths and integers, arrays
    // and tuples without length, f32 LE).
    let mut want = vec![HEARTBEAT_VERSION, 1]; // vv: one entry
    want.extend_from_slice(&[1; 32]); // origin
    want.push(5); // seq count
    want.extend_from_slice(&[3; 32]); // digest
    want.extend_from_slice(&[1, 0]); // done, leaving
    want.extend_from_slice(&[0x00, 0x00, 0x80, 0x3e]); // loss 0.25
    want.extend_from_slice(&[0xfb, 0x2c, 0x01]); // backlog 300: u16 marker + LE
    want.push(1); // mode: first-order (variant index)
    want.extend_from_slice(&[0xfb, 0x2c, 0x01]); // epoch 300
    want.push(7); // counter
    let bytes = hb.encode();
    assert_eq!(bytes.len(), 81);
    assert_eq!(bytes, want);
    assert_eq!(Heartbeat::decode(&want), Ok(hb));
    // An unknown version is told apart from malformed input.
    let mut v4 = want.clone();
    v4[0] = 4;
    assert_eq!(Heartbeat::decode(&v4), Err(Error::Version(4)));
    // Version 2 (no epoch, counter) is an older format: unknown, not malformed.
    let mut v2 = want[..want.len() - 4].to_vec();
    v2[0] = 2;
    assert_eq!(Heartbeat::decode(&v2), Err(Error::Version(2)));
    // A mode this version does not know is malformed.
    let mut bad = want.clone();
    bad[want.len() - 5] = 2;
    assert!(matches!(Heartbeat::decode(&bad), Err(Error::Malformed(_))));
    assert_eq!(Heartbeat::decode(&[]), Err(Error::Truncated));
    assert!(matches!(
        Heartbeat::decode(&want[1..]),
        Err(Error::Version(_) | Error::Malformed(_))
    ));
    assert!(matches!(
        Heartbeat::decode(&want[..40]),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn golden_delta_announcement() {
    let a = DeltaAnnounce {
        seq: 258,
        len: 1000,
        hash: [7; 32],
        sig: SIG,
    };
    let bytes = a.encode();
    assert_eq!(bytes.len(), 109);
    assert_eq!(&bytes[..13], &[2, 2, 1, 0, 0, 0, 0, 0, 0, 0xe8, 3, 0, 0]);
    assert_eq!(&bytes[13..45], &[7; 32]);
    assert_eq!(&bytes[45..], &SIG);
    assert_eq!(DeltaAnnounce::decode(&bytes, 1000), Ok(a));
    assert!(matches!(
        DeltaAnnounce::decode(&bytes, 999),
        Err(Error::Oversized(_))
    ));
    assert!(DeltaAnnounce::decode(&bytes[..108], 1000).is_err());
    let mut zero = a;
    zero.len = 0;
    assert!(DeltaAnnounce::decode(&zero.encode(), 1000).is_err());
    // A one-byte batch may not carry the delta marker.
    assert!(matches!(
        decode_updates(&encode_updates(0, &SIG, &[1, crate::zo::codec::DELTA])),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn every_gossip_decoder_names_an_unknown_version() {
    let hb = Heartbeat {
        vv: vec![],
        digest: [0; 32],
        done: false,
        leaving: false,
        loss: 1.0,
        backlog: 0,
        mode: Mode::ZerothOrder,
        epoch: 0,
        counter: 0,
    };
    let announce = DeltaAnnounce {
        seq: 1,
        len: 10,
        hash: [0; 32],
        sig: SIG,
    };
    for v in [0u8, 1, 4, 0x80, 0xff] {
        let mut b = encode_updates(7, &SIG, &[1, 2]);
        b[0] = v;
        assert_eq!(decode_updates(&b), Err(Error::Version(v)));
        let mut b = announce.encode();
        b[0] = v;
        assert_eq!(DeltaAnnounce::decode(&b, 100), Err(Error::Version(v)));
        let mut b = hb.encode();
        b[0] = v;
        if v != HEARTBEAT_VERSION {
            assert_eq!(Heartbeat::decode(&b), Err(Error::Version(v)));
        }
        // Whatever follows an unknown version is not looked at.
        assert_eq!(decode_updates(&[v]), Err(Error::Version(v)));
        assert_eq!(DeltaAnnounce::decode(&[v], 100), Err(Error::Version(v)));
        if v != HEARTBEAT_VERSION {
            assert_eq!(Heartbeat::decode(&[v]), Err(Error::Version(v)));
        }
    }
}

#[test]
fn range_batches_must_cover_the_request_and_match_markers() {
    let o = Origin([1; 32]);
    let req = Request::Range {
        origin: o,
        from: 2,
        to: 10,
    };
    let batch = |first_seq, codes: Vec<u8>, payloads: Vec<Blob>| Batch {
        first_seq,
        codes: Blob(codes),
        payloads,
        sig: Blob(SIG.to_vec()),
    };
    let range = |batches| Response::Range { origin: o, batches };
    // Whole batches: the first may start before `from`, the last end past `to`.
    let ok = range(vec![
        batch(
            0,
            vec![1, crate::zo::codec::DELTA, 2],
            vec![Blob(vec![9; 5])],
        ),
        batch(3, vec![4; 9], vec![]),
    ]);
    assert!(ok.validate(&req).is_ok());
    assert!(range(vec![]).validate(&req).is_ok(), "nothing to give");
    let missing = range(vec![batch(0, vec![1, crate::zo::codec::DELTA, 2], vec![])]);
    assert!(missing.validate(&req).is_err());
    let gap = range(vec![batch(3, vec![4; 2], vec![])]);
    assert!(gap.validate(&req).is_err(), "seq 2 not covered");
    let hole = range(vec![
        batch(2, vec![4; 2], vec![]),
        batch(5, vec![4], vec![]),
    ]);
    assert!(hole.validate(&req).is_err(), "seq 4 not covered");
    let past = range(vec![
        batch(2, vec![4; 8], vec![]),
        batch(10, vec![4], vec![]),
    ]);
    assert!(
        past.validate(&req).is_err(),
        "a batch wholly past the request"
    );
    let mut short_sig = batch(2, vec![4], vec![]);
    short_sig.sig = Blob(vec![1; 63]);
    assert!(range(vec![short_sig]).validate(&req).is_err());
    let other = Response::Range {
        origin: Origin([2; 32]),
        batches: vec![],
    };
    assert!(other.validate(&req).is_err());
    let wrong = Response::Delta {
        origin: o,
        seq: 3,
        data: Blob(vec![1]),
    };
    assert!(wrong
        .validate(&Request::Delta { origin: o, seq: 4 })
        .is_err());
    assert!(wrong
        .validate(&Request::Delta { origin: o, seq: 3 })
        .is_ok());
}

proptest! {
    #[test]
    fn update_roundtrip(first in any::<u64>(), codes in proptest::collection::vec(any::<u8>(), 1..100)) {
        prop_assume!(first.checked_add(codes.len() as u64).is_some());
        prop_assume!(!codes.contains(&crate::zo::codec::DELTA));
        let enc = encode_updates(first, &SIG, &codes);
        prop_assert_eq!(decode_updates(&enc), Ok((first, SIG, &codes[..])));
    }

    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_updates(&data);
        let _ = Heartbeat::decode(&data);
        let _ = DeltaAnnounce::decode(&data, 1 << 20);
        let _ = crate::crdt::attest::Proof::decode(&data);
    }
}

#[test]
fn update_batches_with_bases_round_trip_and_bad_lengths_are_refused() {
    let bases = [2u8, 9, 9];
    let data = encode_updates_with(7, &SIG, &bases, &[1, 2, 3]);
    assert_eq!(data[0], UPDATES_BASES_VERSION);
    assert_eq!(data.len(), 1 + 1 + 64 + 1 + 3 + 3);
    let b = decode_updates_with(&data).unwrap();
    assert_eq!(
        (b.first_seq, b.bases, b.codes),
        (7, &bases[..], &[1u8, 2, 3][..])
    );
    // Without bases: version 2, byte for byte.
    assert_eq!(
        encode_updates_with(7, &SIG, &[], &[1]),
        encode_updates(7, &SIG, &[1])
    );
    assert!(decode_updates_with(&encode_updates(7, &SIG, &[1]))
        .unwrap()
        .bases
        .is_empty());
    // A bases length of 0, or past the end; bases leaving no codes.
    let mut zero = data[..66].to_vec();
    zero.extend_from_slice(&[0, 1]);
    assert!(matches!(
        decode_updates_with(&zero),
        Err(Error::Malformed(_))
    ));
    let mut long = data[..66].to_vec();
    long.extend_from_slice(&[9, 1, 2]);
    assert!(matches!(
        decode_updates_with(&long),
        Err(Error::Malformed(_))
    ));
    let mut empty = data[..66].to_vec();
    empty.extend_from_slice(&[2, 1, 2]);
    assert!(matches!(
        decode_updates_with(&empty),
        Err(Error::Malformed(_))
    ));
}
