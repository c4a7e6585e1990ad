//! Update log recovery: `Store::open` (the log's file, format 2: magic
//! `SEEDSWARMLOG\0\0\0\x02`, code, delta and meta records — signatures and
//! exclusions; format 1 is read and upgraded) on arbitrary file contents
//! returns Ok or Err and never panics. Uses one temp file per process.
//!
//! When it opens, recovery must be stable: the file was cut back to its last
//! good record and upgraded to format 2, so opening it again cuts nothing
//! and yields the same log (records, version vector, codes, signatures held
//! and exclusions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::crdt::log::{Log, Store};
use seedswarm::zo::seed::{Origin, RunId};
use std::path::PathBuf;
use std::sync::OnceLock;

const MAGIC_V2: &[u8; 16] = b"SEEDSWARMLOG\0\0\0\x02";

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("seedswarm-fuzz-log-{}.log", std::process::id()))
    })
}

/// What a recovered log holds, to compare two opens.
#[derive(Debug, PartialEq)]
struct Held {
    vv: Vec<(Origin, u64)>,
    heads: Vec<(Origin, u64, u64, u64)>,
    exclusions: Vec<(Origin, u64, Vec<u8>)>,
}

fn held(log: &Log) -> Held {
    Held {
        vv: log.version_vector().into_iter().collect(),
        heads: log
            .heads()
            .map(|(o, n)| (*o, n, log.next_seq(o), log.signed_through(o)))
            .collect(),
        exclusions: log
            .exclusions()
            .iter()
            .map(|(o, e)| (*o, e.from, e.proof.clone()))
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    let run = RunId([0; 32]);
    std::fs::write(path, data).expect("write temp log");
    if let Ok((log, store, rec)) = Store::open(path, run) {
        assert_eq!(store.path(), path.as_path());
        // Recovered codes all come from records; nothing stays buffered.
        assert!(log.len() <= rec.updates);
        assert_eq!(log.pending_updates(), 0);
        assert!(rec.truncated_bytes <= data.len() as u64);
        // Signatures are kept only over held codes; exclusions cap what counts.
        for (o, n) in log.heads() {
            assert!(log.signed_through(o) <= log.next_seq(o));
            if let Some(e) = log.exclusion(o) {
                assert!(n <= e.from, "an excluded origin counts past its exclusion");
            }
        }
        let before = held(&log);
        let updates: Vec<_> = log.updates().collect();
        drop((log, store));
        let bytes = std::fs::read(path).expect("read back");
        if !data.is_empty() {
            assert_eq!(
                bytes.len() as u64,
                data.len() as u64 - rec.truncated_bytes,
                "the file was cut elsewhere than reported"
            );
        }
        assert_eq!(&bytes[..16], MAGIC_V2, "the recovered file is not format 2");
        let (again, _store, rec2) =
            Store::open(path, run).expect("reopening a recovered log fails");
        assert_eq!(rec2.truncated_bytes, 0, "second open cut bytes again");
        assert_eq!(rec2.records, rec.records);
        assert_eq!(held(&again), before, "second open recovered another log");
        assert!(
            again.updates().eq(updates),
            "second open recovered other codes"
        );
    }
    let _ = std::fs::remove_file(path);
});
