//! What making own updates durable costs: appending one-byte updates to the
//! update log's file (as the compute thread does for each own update) with
//! no sync, with an fsync after every update, and with the group commit the
//! node uses (one fsync per group of updates; the node syncs at most every
//! 20 ms of steps, before any of them may be published). Also ed25519
//! signing and verifying of a batch, the other new cost of trust.
//!
//! Run: `cargo bench --bench durability` (prints one JSON line, ~10 s). The
//! figures depend on the disk under the temp dir (`TMPDIR`).

use seedswarm::crdt::attest::{verify, Signer};
use seedswarm::crdt::log::{Segment, Store};
use seedswarm::zo::seed::{Origin, RunId};
use std::time::Instant;

fn per_update(n: usize, group: Option<usize>) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = RunId([3; 32]);
    let (_, mut store, _) = Store::open(&dir.path().join("updates.log"), run).expect("log");
    let o = Origin([1; 32]);
    let t = Instant::now();
    for seq in 0..n as u64 {
        store
            .append(&Segment::new(o, seq, vec![5], Vec::new()))
            .expect("append");
        if let Some(g) = group {
            if (seq + 1) % g as u64 == 0 {
                store.sync().expect("sync");
            }
        }
    }
    store.sync().expect("sync");
    t.elapsed().as_secs_f64() / n as f64
}

fn main() {
    let none = per_update(20_000, None);
    let each = per_update(300, Some(1));
    // 2,000 updates/s (the demo model on one core) over 20 ms: 40 per group.
    let group = per_update(4_000, Some(40));
    let signer = Signer::from_seed([4; 32], RunId([3; 32]));
    let codes = vec![7u8; 100];
    let n = 2_000;
    let t = Instant::now();
    let mut a = signer.sign(0, &codes, &[]);
    for i in 0..n {
        a = signer.sign(i, &codes, &[]);
    }
    let sign = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(verify(&signer.run(), &signer.origin(), &a, &codes, &[]));
    }
    let verify_s = t.elapsed().as_secs_f64() / n as f64;
    assert_eq!(ok, n as usize, "a valid signature verifies");
    println!(
        "{}",
        serde_json::json!({
            "append_no_sync_us": none * 1e6,
            "append_fsync_each_us": each * 1e6,
            "append_group_commit_40_us": group * 1e6,
            "sign_batch_of_100_us": sign * 1e6,
            "verify_batch_of_100_us": verify_s * 1e6,
        })
    );
}
