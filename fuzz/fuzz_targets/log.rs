//! Update log recovery: `Store::open` (the log's file, recovered into an
//! in-memory `Log`) on arbitrary file contents returns Ok or Err and never
//! panics. Uses one temp file per process.
//!
//! When it opens, recovery must be stable: the file was cut back to its last
//! good record, so opening it again cuts nothing and yields the same log.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedswarm::crdt::log::Store;
use seedswarm::zo::seed::RunId;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("seedswarm-fuzz-log-{}.log", std::process::id()))
    })
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
        let vv = log.version_vector();
        let updates: Vec<_> = log.updates().collect();
        drop((log, store));
        let (again, _store, rec2) =
            Store::open(path, run).expect("reopening a recovered log fails");
        assert_eq!(rec2.truncated_bytes, 0, "second open cut bytes again");
        assert_eq!(rec2.records, rec.records);
        assert_eq!(again.version_vector(), vv);
        assert!(
            again.updates().eq(updates),
            "second open recovered other codes"
        );
    }
    let _ = std::fs::remove_file(path);
});
