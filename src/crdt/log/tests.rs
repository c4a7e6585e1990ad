//! Unit tests of the log and its file.
use super::store::HEADER;
use super::*;
use std::fs::OpenOptions;

/// Inserts into the log and appends what became contiguous, as a node does.
fn put(log: &mut Log, store: &mut Store, o: Origin, first: u64, codes: &[u8], p: &[Payload]) {
    let fresh = log.insert_with(o, first, codes, p).unwrap();
    if let (Some(a), Some(b)) = (fresh.first(), fresh.last()) {
        store.append(&log.segment(&o, a.seq, b.seq + 1)).unwrap();
    }
}

#[test]
fn gaps_are_buffered_until_filled() {
    let mut log = Log::in_memory(RunId([0; 32]));
    let o = Origin([1; 32]);
    assert!(log.insert(o, 3, &[4, 5]).unwrap().is_empty());
    assert_eq!(log.pending_updates(), 2);
    assert_eq!(log.gaps(), vec![(o, 0, 3)]);
    let got = log.insert(o, 0, &[1, 2, 3]).unwrap();
    assert_eq!(
        got.iter().map(|u| u.code).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(log.pending_updates(), 0);
    // Overlapping and duplicate batches add nothing twice.
    let got = log.insert(o, 4, &[5, 6]).unwrap();
    assert_eq!(
        got,
        vec![Update {
            origin: o,
            seq: 5,
            code: 6
        }]
    );
    assert!(log.insert(o, 0, &[1]).unwrap().is_empty());
    assert_eq!(log.range(&o, 2, 100), &[3, 4, 5, 6]);
}

#[test]
fn torn_tail_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("updates.log");
    let run = RunId([5; 32]);
    let (a, b) = (Origin([1; 32]), Origin([2; 32]));
    {
        let (mut log, mut st, rec) = Store::open(&path, run).unwrap();
        assert_eq!(rec, Recovery::default());
        put(&mut log, &mut st, a, 0, &[1, 2, 3], &[]);
        put(&mut log, &mut st, b, 0, &[9], &[]);
        put(&mut log, &mut st, a, 3, &[4], &[]);
    }
    let full = std::fs::metadata(&path).unwrap().len();
    // Cut the last record in half, as a crash mid-write would.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(full - 5).unwrap();
    drop(f);
    let (mut log, mut st, rec) = Store::open(&path, run).unwrap();
    assert_eq!(rec.records, 2);
    assert_eq!(rec.updates, 4);
    assert_eq!(rec.truncated_bytes, 4 + 41 + 8 - 5);
    assert_eq!(log.next_seq(&a), 3);
    // The node carries on appending after the cut.
    put(&mut log, &mut st, a, 3, &[7], &[]);
    drop(st);
    let (log, _, rec) = Store::open(&path, run).unwrap();
    assert_eq!(rec.truncated_bytes, 0);
    assert_eq!(log.range(&a, 0, 10), &[1, 2, 3, 7]);
}

#[test]
fn corrupt_record_stops_recovery_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("updates.log");
    let run = RunId([5; 32]);
    let o = Origin([1; 32]);
    {
        let (mut log, mut st, _) = Store::open(&path, run).unwrap();
        put(&mut log, &mut st, o, 0, &[1, 2], &[]);
        put(&mut log, &mut st, o, 2, &[3, 4], &[]);
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let second = HEADER + 4 + 42 + 8;
    bytes[second + 4 + 40] ^= 0xff; // flip a code in the second record
    std::fs::write(&path, &bytes).unwrap();
    let (log, _, rec) = Store::open(&path, run).unwrap();
    assert_eq!(rec.records, 1);
    assert_eq!(log.range(&o, 0, 10), &[1, 2]);
}

#[test]
fn delta_updates_persist_with_their_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("updates.log");
    let run = RunId([5; 32]);
    let o = Origin([1; 32]);
    let p1 = Payload::new(vec![1, 2, 3]);
    let p2 = Payload::new(vec![4; 100]);
    {
        let (mut log, mut st, _) = Store::open(&path, run).unwrap();
        // A delta ahead of a gap waits with its payload.
        assert!(log
            .insert_with(o, 3, &[DELTA], std::slice::from_ref(&p2))
            .unwrap()
            .is_empty());
        assert_eq!(log.payload(&o, 3), Some(&p2));
        let got = log
            .insert_with(o, 0, &[7, DELTA, 9], std::slice::from_ref(&p1))
            .unwrap();
        assert_eq!(
            got.iter().map(|u| u.code).collect::<Vec<_>>(),
            [7, DELTA, 9, DELTA]
        );
        let held = log.segment(&o, 0, 4);
        assert_eq!(held.payload(3), Some(p2.clone()));
        assert_eq!(held.payload(2), None);
        st.append(&held).unwrap();
        assert_eq!(log.payloads_in(&o, 0, 10), vec![p1.clone(), p2.clone()]);
        assert_eq!(log.payloads_in(&o, 2, 10), vec![p2.clone()]);
        // Markers and payloads must correspond.
        assert!(matches!(
            log.insert(o, 4, &[DELTA]),
            Err(Error::Payloads { .. })
        ));
        assert!(matches!(
            log.insert_with(o, 4, &[1], std::slice::from_ref(&p1)),
            Err(Error::Payloads { .. })
        ));
        put(&mut log, &mut st, o, 4, &[11], &[]);
        assert_eq!(held.end(), 4);
    }
    let (log, _, rec) = Store::open(&path, run).unwrap();
    assert_eq!(rec.updates, 5);
    assert_eq!(rec.truncated_bytes, 0);
    assert_eq!(log.range(&o, 0, 10), &[7, DELTA, 9, DELTA, 11]);
    assert_eq!(log.payload(&o, 1), Some(&p1));
    assert_eq!(log.payload(&o, 3), Some(&p2));
    // A corrupt delta record is cut off like any torn tail.
    drop(log);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff; // inside the last record (code 11)
    std::fs::write(&path, &bytes).unwrap();
    let (log, _, rec) = Store::open(&path, run).unwrap();
    assert_eq!(rec.updates, 4);
    assert_eq!(log.payload(&o, 3), Some(&p2));
}

#[test]
fn foreign_or_garbage_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("updates.log");
    drop(Store::open(&path, RunId([1; 32])).unwrap());
    let err = Store::open(&path, RunId([2; 32])).unwrap_err().to_string();
    assert!(err.contains("belongs to run"), "{err}");
    std::fs::write(&path, b"hello world, not a log at all, certainly not one").unwrap();
    let err = Store::open(&path, RunId([1; 32])).unwrap_err().to_string();
    assert!(err.contains("bad header"), "{err}");
}

#[test]
fn segments_past_what_is_held_and_overflowing_signatures_never_panic() {
    // Found by the proto fuzz target: a segment asked past the held end
    // of a signed origin, and a signature record whose range overflows.
    let mut log = Log::in_memory(RunId([0; 32]));
    let o = Origin([1; 32]);
    log.insert(o, 0, &[1, 2, 3]).unwrap();
    let a = Attest {
        first_seq: 0,
        len: 3,
        sig: [0; 64],
    };
    log.attest(o, a);
    assert_eq!(log.signed_through(&o), 3);
    let seg = log.segment(&o, 5, 9);
    assert!(seg.codes.is_empty() && seg.attests.is_empty());
    log.attest(
        o,
        Attest {
            first_seq: u64::MAX,
            len: 2,
            sig: [0; 64],
        },
    );
    assert_eq!(log.signed_through(&o), 3);
}

#[test]
fn admissions_cap_what_counts_and_survive_a_restart() {
    use crate::crdt::admit::{Kind, Owner, Record};
    use libp2p::identity::ed25519;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("updates.log");
    let run = RunId([5; 32]);
    let key: ed25519::Keypair = ed25519::SecretKey::try_from_bytes(&mut [3u8; 32])
        .unwrap()
        .into();
    let owner = Owner(key.public().to_bytes());
    let (a, b) = (Origin([1; 32]), Origin([2; 32]));
    let admit = |o, n| Record::sign(&key, &run, Kind::Admission, o, n);
    {
        let (mut log, mut st, _) = Store::open(&path, run).unwrap();
        log.set_owner(Some(owner));
        put(&mut log, &mut st, a, 0, &[1, 2, 3, 4, 5], &[]);
        put(&mut log, &mut st, b, 0, &[9, 9], &[]);
        // Nothing counts before an admission; then up to its end.
        assert_eq!(log.version_vector(), VersionVector::new());
        assert!(log.admit(admit(a, 3)));
        st.append_admission(&admit(a, 3)).unwrap();
        assert_eq!(log.cap(&a), 3);
        assert_eq!(log.version_vector().get(&a), Some(&3));
        assert!(!log.version_vector().contains_key(&b));
        // A narrower admission is no news; a wider one is.
        assert!(!log.admit(admit(a, 2)));
        assert!(log.admit(admit(a, 4)));
        st.append_admission(&admit(a, 4)).unwrap();
        // A revocation (an exclusion) cuts below the admission.
        log.exclude(a, 1, vec![0x11]);
        assert_eq!(log.cap(&a), 1);
        log.exclude(a, 2, vec![0x11]);
        assert_eq!(log.cap(&a), 1, "an exclusion only moves back");
    }
    let (mut log, _, _) = Store::open(&path, run).unwrap();
    log.set_owner(Some(owner));
    assert_eq!(log.admission(&a), Some(&admit(a, 4)));
    assert_eq!(log.version_vector().get(&a), Some(&4));
    // An open run counts every origin.
    log.set_owner(None);
    assert_eq!(log.version_vector().get(&b), Some(&2));
    assert_eq!(log.version_vector().get(&a), Some(&5));
}
