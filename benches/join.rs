//! Join cost for a SmolLM2-sized replica (134.5 M trainable parameters):
//! a node joins a running one through the snapshot path over libp2p on
//! loopback; the same-run baseline copies the raw f32 weights over a plain
//! loopback TCP socket.
//!
//! Run: `cargo bench --bench join` (prints one JSON line; takes ~1–2 min).

use seedswarm::config::{Config, ModelSpec, TaskSpec};
use seedswarm::node::{Node, Options};
use seedswarm::proto::join::Mode;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const UPDATES: u64 = 64;

fn config() -> Config {
    let mut cfg = Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/demo.toml"
    )))
    .expect("demo config");
    // 32,832 × 4,096 embedding + small head = 134.5 M parameters.
    if let ModelSpec::Tiny(m) = &mut cfg.run.model {
        m.vocab = 32_832;
        m.dim = 4096;
        m.hidden = 8;
    }
    if let TaskSpec::Synthetic(t) = &mut cfg.run.task {
        t.vocab = 32_832;
        t.dev_size = 64;
    }
    cfg.run.batch_size = 8;
    // Contributions of a few hundred units, as with LM learning rates.
    cfg.run.schedule = seedswarm::crdt::replica::Schedule::Constant { lr: 1e-5 };
    cfg.node.eval_every = 0;
    cfg.node.eval_batch = 64;
    cfg
}

fn raw_copy_seconds(bytes: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback socket");
    let addr = listener.local_addr().expect("local address");
    let data = vec![0x5au8; bytes];
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect over loopback");
        s.write_all(&data).expect("send the raw weights");
    });
    let (mut r, _) = listener.accept().expect("accept");
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < bytes {
        let n = r.read(&mut buf).expect("receive the raw weights");
        if n == 0 {
            break;
        }
        got += n;
    }
    sender.join().expect("sender thread");
    start.elapsed().as_secs_f64()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("seedswarm=info"))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = config();
        let base = Options {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            mdns: false,
            heartbeat_interval: Duration::from_millis(300),
            ..Options::default()
        };
        let mut a = Node::start(
            cfg.clone(),
            Options {
                max_updates: Some(UPDATES),
                exit_when_settled: false,
                ..base.clone()
            },
        )
        .await
        .unwrap();
        let mut w = a.watch();
        while !w.borrow().training_done {
            w.changed().await.unwrap();
        }
        let params: usize = 32_832 * 4096 + 4096 * 8 + 8 + 8 * 2 + 2;
        let b = Node::start(
            cfg,
            Options {
                max_updates: Some(0),
                join: Mode::Snapshot,
                bootstrap: vec![a.listen[0].clone().with_p2p(a.peer_id).unwrap()],
                ..base
            },
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        let s = b.wait().await.unwrap();
        let wall = t0.elapsed().as_secs_f64();
        a.stop();
        let sa = a.wait().await.unwrap();
        let raw = raw_copy_seconds(4 * params);
        let line = serde_json::json!({
            "params": params,
            "updates": UPDATES,
            "join": s.join,
            "join_seconds": s.join_seconds,
            "joiner_wall_seconds": wall,
            "snapshot_bytes": s.snapshot_bytes_fetched,
            "raw_f32_bytes": 4 * params,
            "snapshot_over_raw_f32": s.snapshot_bytes_fetched as f64 / (4 * params) as f64,
            "raw_f32_loopback_copy_seconds": raw,
            "join_over_raw_copy": s.join_seconds.unwrap_or(f64::NAN) / raw,
            "digests_equal": s.digest == sa.digest,
        });
        println!("{line}");
    });
}
