#![no_main]
// Throwaway: writes seeds with the crate's own encoders. Not committed.
use libfuzzer_sys::fuzz_target;
use seedswarm::log::{Segment, Store, DELTA};
use seedswarm::net::wire::Heartbeat;
use seedswarm::seed::{Origin, RunId};
use std::sync::Arc;

fuzz_target!(|_data: &[u8]| {
    let Ok(dir) = std::env::var("SEED_OUT") else { return };
    let dir = std::path::PathBuf::from(dir);
    for name in ["hb0", "hb1", "hb2"] {
        let old = std::fs::read(format!("seeds/heartbeat/{name}")).unwrap();
        let mut v = vec![seedswarm::net::wire::HEARTBEAT_VERSION];
        v.extend_from_slice(&old);
        let hb = Heartbeat::decode(&v).expect("old seed body decodes after a version byte");
        let enc = hb.encode();
        assert_eq!(enc, v);
        eprintln!("{name}: {hb:?}");
        std::fs::write(dir.join(name), enc).unwrap();
    }
    let golden = Heartbeat {
        vv: vec![(Origin([1; 32]), 5)],
        digest: [3; 32],
        done: true,
        leaving: false,
        loss: 0.25,
        backlog: 300,
    };
    std::fs::write(dir.join("hb_golden"), golden.encode()).unwrap();
    // A log with one-byte and delta records.
    let p = dir.join("delta_record");
    let _ = std::fs::remove_file(&p);
    let (_, mut store, _) = Store::open(&p, RunId([0; 32])).unwrap();
    let payload = Arc::new(b"FZDL\x01\x00".to_vec());
    store
        .append(&Segment {
            origin: Origin([1; 32]),
            first_seq: 0,
            codes: vec![3, DELTA, 5],
            payloads: vec![payload],
        })
        .unwrap();
    drop(store);
    let (log, _, rec) = Store::open(&p, RunId([0; 32])).unwrap();
    eprintln!("delta_record: {rec:?} len {}", log.len());
});
