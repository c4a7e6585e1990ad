//! Writes the seeds of the decoder targets (`seeds/{updates,heartbeat,sync,
//! log,proof}/`) with the crate's own encoders, so they follow the formats
//! of the `seedswarm` being built: `gen_seeds [FUZZ_DIR]` (default `.`).
//! The `proto` seeds are written by `proto_seeds.py`, the `fedzip` ones are
//! the format's golden vectors and `seedswarm delta` outputs (unchanged).
//!
//! `gen_seeds --known DIR` writes, instead, inputs that reproduce known
//! library bugs (see the README), never seeds: they would stop a fuzz run.
//!
//! Not a fuzz target: a plain program (it does not link libFuzzer), built
//! with the targets by `cargo fuzz build` or on its own with
//! `cargo run --bin gen_seeds`.

use seedswarm::config::Mode;
use seedswarm::crdt::attest::{Proof, SignedBatch, Signer};
use seedswarm::crdt::log::{Payload, Segment, Store, DELTA};
use seedswarm::crdt::snapshot;
use seedswarm::net::wire::{self, Batch, Blob, Heartbeat, Request, Response};
use seedswarm::zo::seed::{Origin, RunId};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), v).expect("cbor")
}

/// A signer of the log target's run (`RunId([0; 32])`) or another.
fn signer(x: u8, run: RunId) -> Signer {
    Signer::from_seed([x; 32], run)
}

fn updates(dir: &Path) {
    let s = signer(1, RunId([0; 32]));
    let b = |first: u64, codes: &[u8]| {
        wire::encode_updates(first, &s.sign(first, codes, &[]).sig, codes)
    };
    write(dir, "seq0_one", &b(0, &[5]));
    write(dir, "seq300_two", &b(300, &[1, 2]));
    let codes: Vec<u8> = (0..64).collect();
    write(dir, "seq_2p40", &b(1 << 40, &codes));
    write(dir, "seq_big", &b(u64::MAX - 8, &[1, 2, 3, 4, 5, 6, 7, 8]));
    write(dir, "zero_sig", &wire::encode_updates(7, &[0; 64], &[0x7f, 0x81]));
}

fn heartbeat(dir: &Path) {
    let hb0 = Heartbeat {
        vv: Vec::new(),
        digest: [0; 32],
        done: false,
        leaving: false,
        loss: f32::NAN,
        backlog: 0,
        mode: Mode::default(),
        epoch: 0,
        counter: 0,
    };
    let hb1 = Heartbeat {
        vv: vec![(Origin([1; 32]), 5), (Origin([2; 32]), 300)],
        digest: [3; 32],
        done: true,
        leaving: false,
        loss: 0.25,
        backlog: 7,
        mode: Mode::default(),
        epoch: 1_764_000_000_000,
        counter: 42,
    };
    let hb2 = Heartbeat {
        vv: vec![(Origin([9; 32]), u64::MAX)],
        digest: [0xab; 32],
        done: false,
        leaving: true,
        loss: -1.5,
        backlog: u64::MAX,
        mode: Mode::FirstOrder,
        epoch: u64::MAX,
        counter: u64::MAX,
    };
    // The unit test's golden heartbeat (net/wire/tests.rs).
    let golden = Heartbeat {
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
    for (name, hb) in [("hb0", hb0), ("hb1", hb1), ("hb2", hb2), ("hb_golden", golden)] {
        let bytes = hb.encode();
        assert_eq!(Heartbeat::decode(&bytes).map(|h| h.encode()), Ok(bytes.clone()));
        write(dir, name, &bytes);
    }
}

fn batch(s: &Signer, first: u64, codes: &[u8], payloads: &[Vec<u8>]) -> Batch {
    let hashes: Vec<[u8; 32]> = payloads.iter().map(|p| *blake3::hash(p).as_bytes()).collect();
    Batch {
        first_seq: first,
        codes: Blob(codes.to_vec()),
        payloads: payloads.iter().map(|p| Blob(p.clone())).collect(),
        sig: Blob(s.sign(first, codes, &hashes).sig.to_vec()),
    }
}

fn sync(dir: &Path) {
    let s = signer(7, RunId([0; 32]));
    let o = s.origin();
    let o2 = signer(8, RunId([0; 32])).origin();
    let range = Request::Range {
        origin: o,
        from: 0,
        to: 10,
    };
    let at: Vec<(Origin, u64)> = {
        let mut v = vec![(o, 5), (o2, 3)];
        v.sort();
        v
    };
    let offer_at = Request::Offer { at: at.clone() };
    let chunk_id = [0x69; 32];
    let chunk = Request::Chunk {
        id: chunk_id,
        index: 1,
    };
    let delta = Request::Delta { origin: o, seq: 3 };
    let reqs: Vec<(&str, Request)> = vec![
        ("req_range", range.clone()),
        (
            "req_range_empty",
            Request::Range {
                origin: o,
                from: 5,
                to: 5,
            },
        ),
        (
            "req_range_huge",
            Request::Range {
                origin: o,
                from: 1 << 40,
                to: u64::MAX,
            },
        ),
        ("req_offer", Request::Offer { at: Vec::new() }),
        ("req_offer_at", offer_at.clone()),
        ("req_chunk", chunk.clone()),
        ("req_delta", delta.clone()),
        ("req_fingerprints", Request::Fingerprints),
    ];
    for (name, r) in &reqs {
        write(dir, name, &cbor(r));
    }
    let payload = vec![0x46, 0x5a, 0x44, 0x4c, 1, 2, 3];
    let resp_range = Response::Range {
        origin: o,
        batches: vec![
            batch(&s, 0, &[1, 2, 3], &[]),
            batch(&s, 3, &[DELTA, 4], std::slice::from_ref(&payload)),
        ],
    };
    let hashes: Vec<[u8; 32]> = vec![[1; 32], [2; 32]];
    let digest = [4; 32];
    let offer = |vv: &[(Origin, u64)]| Response::Offer {
        id: snapshot::id_of(vv, &digest, &hashes),
        vv: vv.to_vec(),
        digest,
        raw_len: 1000,
        hashes: Blob(hashes.concat()),
    };
    let fingerprints = Response::Fingerprints {
        heads: at
            .iter()
            .map(|(o, n)| (*o, *n, Blob(vec![*n as u8; 32])))
            .collect(),
    };
    let resps: Vec<(&str, Response)> = vec![
        ("resp_range", resp_range.clone()),
        (
            "resp_range_none",
            Response::Range {
                origin: o,
                batches: Vec::new(),
            },
        ),
        ("resp_refused", Response::Refused("busy".into())),
        ("resp_offer", offer(&at)),
        (
            "resp_chunk",
            Response::Chunk {
                id: chunk_id,
                index: 1,
                data: Blob(vec![7; 16]),
            },
        ),
        (
            "resp_delta",
            Response::Delta {
                origin: o,
                seq: 3,
                data: Blob(payload.clone()),
            },
        ),
        ("resp_fingerprints", fingerprints.clone()),
    ];
    for (name, r) in &resps {
        write(dir, name, &cbor(r));
    }
    // [n] ‖ request ‖ response, each pair valid.
    let pairs: Vec<(&str, Request, Response)> = vec![
        ("pair_range", range, resp_range),
        ("pair_offer", offer_at, offer(&at)),
        ("pair_offer_now", Request::Offer { at: Vec::new() }, offer(&at)),
        (
            "pair_chunk",
            chunk,
            Response::Chunk {
                id: chunk_id,
                index: 1,
                data: Blob(vec![1; 8]),
            },
        ),
        (
            "pair_delta",
            delta,
            Response::Delta {
                origin: o,
                seq: 3,
                data: Blob(payload),
            },
        ),
        ("pair_fingerprints", Request::Fingerprints, fingerprints),
    ];
    for (name, req, resp) in pairs {
        assert_eq!(resp.validate(&req), Ok(()), "{name}");
        let a = cbor(&req);
        let mut bytes = vec![u8::try_from(a.len()).expect("request under 256 bytes")];
        bytes.extend(a);
        bytes.extend(cbor(&resp));
        write(dir, name, &bytes);
    }
}

/// A valid proof of equivocation of `s` (codes at seq 2 differ).
fn proof(s: &Signer) -> Proof {
    let b = |first: u64, codes: &[u8], hashes: Vec<[u8; 32]>| SignedBatch {
        attest: s.sign(first, codes, &hashes),
        codes: codes.to_vec(),
        hashes,
    };
    Proof {
        origin: s.origin(),
        a: b(0, &[1, 2, 3, 4], Vec::new()),
        b: b(2, &[9, DELTA], vec![[5; 32]]),
    }
}

fn proofs(dir: &Path) {
    let run = RunId([0; 32]);
    let s = signer(3, run);
    let p = proof(&s);
    assert_eq!(p.check(&run), Ok(2));
    write(dir, "conflict", &p.encode());
    let b = |first: u64, codes: &[u8], hashes: Vec<[u8; 32]>| SignedBatch {
        attest: s.sign(first, codes, &hashes),
        codes: codes.to_vec(),
        hashes,
    };
    let deltas = Proof {
        origin: s.origin(),
        a: b(5, &[DELTA], vec![[1; 32]]),
        b: b(5, &[DELTA], vec![[2; 32]]),
    };
    assert_eq!(deltas.check(&run), Ok(5));
    write(dir, "delta_payloads", &deltas.encode());
    let agree = Proof {
        origin: s.origin(),
        a: b(0, &[1, 2], Vec::new()),
        b: b(1, &[2, 3], Vec::new()),
    };
    write(dir, "agree", &agree.encode());
    let mut forged = p.clone();
    forged.b.codes[0] = 8;
    write(dir, "forged", &forged.encode());
}

/// A log file written by `Store`, its bytes.
fn store_file(tmp: &Path, name: &str, f: impl FnOnce(&mut Store)) -> Vec<u8> {
    let path = tmp.join(name);
    let _ = std::fs::remove_file(&path);
    let (_, mut store, _) = Store::open(&path, RunId([0; 32])).expect("open");
    f(&mut store);
    drop(store);
    let bytes = std::fs::read(&path).expect("read log");
    let _ = std::fs::remove_file(&path);
    bytes
}

fn log(dir: &Path) {
    let tmp = std::env::temp_dir();
    let o1 = Origin([1; 32]);
    let o2 = Origin([2; 32]);
    let header = store_file(&tmp, "gen-header.log", |_| {});
    write(dir, "header_only", &header);
    let one = store_file(&tmp, "gen-one.log", |s| {
        s.append(&Segment::new(o1, 0, vec![1, 2, 3], Vec::new()))
            .expect("append");
    });
    write(dir, "one_record", &one);
    let three = store_file(&tmp, "gen-three.log", |s| {
        s.append(&Segment::new(o1, 0, vec![1, 2, 3], Vec::new()))
            .expect("append");
        s.append(&Segment::new(o2, 0, vec![4, 5], Vec::new()))
            .expect("append");
        s.append(&Segment::new(o1, 3, vec![6], Vec::new()))
            .expect("append");
    });
    write(dir, "three_records", &three);
    write(dir, "three_records_torn", &three[..three.len() - 5]);
    let mut corrupt = three.clone();
    let n = corrupt.len();
    corrupt[n - 10] ^= 0x40;
    write(dir, "three_records_corrupt_tail", &corrupt);
    // Format 1: the same records under the old magic (read, then upgraded).
    let mut v1 = three.clone();
    v1[15] = 1;
    write(dir, "three_records_v1", &v1);
    let payload: Payload = Arc::new(vec![0x46, 0x5a, 0x44, 0x4c, 1]);
    let delta = store_file(&tmp, "gen-delta.log", |s| {
        s.append(&Segment::new(o1, 0, vec![3, DELTA, 5], vec![payload.clone()]))
            .expect("append");
    });
    write(dir, "delta_record", &delta);
    // Signed: codes and delta records with the origin's signatures (meta
    // records), then an exclusion of that origin with its proof.
    let signer = signer(3, RunId([0; 32]));
    let so = signer.origin();
    let signed_seg = || {
        let codes = vec![1, 2, DELTA, 4];
        let h = *blake3::hash(&payload).as_bytes();
        let mut seg = Segment::new(so, 0, codes.clone(), vec![payload.clone()]);
        seg.attests.push(signer.sign(0, &codes[..2], &[]));
        seg.attests.push(signer.sign(2, &codes[2..], &[h]));
        seg
    };
    let signed = store_file(&tmp, "gen-signed.log", |s| {
        s.append(&signed_seg()).expect("append");
    });
    write(dir, "signed", &signed);
    let p = proof(&signer);
    let excluded = store_file(&tmp, "gen-excluded.log", |s| {
        s.append(&signed_seg()).expect("append");
        s.append_exclusion(&so, 2, &p.encode()).expect("exclusion");
        s.append(&Segment::new(o1, 0, vec![7], Vec::new()))
            .expect("append");
    });
    write(dir, "signed_excluded", &excluded);
}

/// Inputs that reproduce known library bugs (not seeds).
fn known(dir: &Path) {
    // A signature record whose first_seq + len overflows u64: `Store::open`
    // panics in `Log::attest` (`Attest::end`) when overflow checks are on.
    let tmp = std::env::temp_dir();
    let s = signer(3, RunId([0; 32]));
    let bytes = store_file(&tmp, "gen-known.log", |st| {
        let mut seg = Segment::new(s.origin(), 0, vec![1], Vec::new());
        let mut a = s.sign(0, &[1], &[]);
        a.first_seq = u64::MAX - 1;
        a.len = 5;
        seg.attests.push(a);
        st.append(&seg).expect("append");
    });
    write(dir, "log-attest-overflow", &bytes);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = &args[..] {
        if flag == "--known" {
            known(Path::new(dir));
            return;
        }
    }
    let root = PathBuf::from(args.first().map_or(".", String::as_str)).join("seeds");
    updates(&root.join("updates"));
    heartbeat(&root.join("heartbeat"));
    sync(&root.join("sync"));
    proofs(&root.join("proof"));
    log(&root.join("log"));
    eprintln!("seeds written under {}", root.display());
}
