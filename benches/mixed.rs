//! A mixed swarm against a zeroth-order-only swarm of the same size on the
//! built-in task: wall time until every node's dev accuracy reaches the
//! target. In the mixed swarm one node is a first-order contributor (local
//! backprop steps, compressed sparse deltas); the others send one-byte
//! updates. Real libp2p over loopback TCP, in one process.
//!
//! Run: `cargo bench --bench mixed [-- NODES TARGET REPEATS]` (defaults 4
//! 0.95 5); prints one JSON line per swarm and a summary line.

use seedswarm::config::{Config, Mode};
use seedswarm::node::{Node, Options};
use std::time::{Duration, Instant};

fn config() -> Config {
    Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/demo.toml"
    )))
    .expect("demo config")
}

struct Outcome {
    seconds: f64,
    /// From the first status showing an own update (training under way).
    training_seconds: f64,
    applied: u64,
    deltas: u64,
}

async fn swarm(n: usize, first_order: usize, target: f64) -> Outcome {
    let base = config();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut cfg = base.clone();
        if i < first_order {
            cfg.node.mode = Mode::FirstOrder;
        }
        let mut o = Options {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            mdns: false,
            min_peers: n - 1,
            duration: Some(Duration::from_secs(60)),
            settle_timeout: Duration::from_secs(30),
            publish_interval: Duration::from_millis(cfg.node.publish_ms),
            publish_max: cfg.node.publish_max,
            heartbeat_interval: Duration::from_millis(100),
            ..Options::default()
        };
        o.bootstrap = nodes
            .iter()
            .map(|p| p.listen[0].clone().with_p2p(p.peer_id).unwrap())
            .collect();
        nodes.push(Node::start(cfg, o).await.expect("node starts"));
    }
    let start = Instant::now();
    let watches: Vec<_> = nodes.iter().map(Node::watch).collect();
    let mut trained_at: Option<Instant> = None;
    let (seconds, applied) = loop {
        if trained_at.is_none() && watches.iter().any(|w| w.borrow().own_updates > 0) {
            trained_at = Some(Instant::now());
        }
        let reached = watches
            .iter()
            .all(|w| w.borrow().accuracy.is_some_and(|a| a >= target));
        if reached {
            let applied = watches
                .iter()
                .map(|w| w.borrow().updates_applied)
                .max()
                .unwrap_or(0);
            break (start.elapsed().as_secs_f64(), applied);
        }
        if start.elapsed() > Duration::from_secs(60) {
            break (f64::INFINITY, 0);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let deltas = nodes
        .iter()
        .take(first_order)
        .map(|x| x.status().own_updates)
        .sum();
    for x in &mut nodes {
        x.stop();
    }
    for x in nodes {
        let _ = x.wait().await;
    }
    let training_seconds = trained_at.map_or(f64::INFINITY, |t| {
        seconds - t.duration_since(start).as_secs_f64()
    });
    Outcome {
        seconds,
        training_seconds,
        applied,
        deltas,
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(4);
    let target: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0.95);
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut times = [Vec::new(), Vec::new()];
    let mut training = [Vec::new(), Vec::new()];
    for r in 0..repeats {
        // Alternate the order so drift in machine load hits both alike.
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for fo in order {
            let o = rt.block_on(swarm(n, fo, target));
            println!(
                "{{\"nodes\":{n},\"first_order\":{fo},\"target\":{target},\"seconds\":{:.3},\"training_seconds\":{:.3},\"updates_applied\":{},\"deltas\":{}}}",
                o.seconds, o.training_seconds, o.applied, o.deltas
            );
            times[fo].push(o.seconds);
            training[fo].push(o.training_seconds);
        }
    }
    for t in times.iter_mut().chain(training.iter_mut()) {
        t.sort_by(f64::total_cmp);
    }
    let median = |t: &Vec<f64>| t[t.len() / 2];
    println!(
        "{{\"summary\":true,\"nodes\":{n},\"target\":{target},\"repeats\":{repeats},\"median_seconds_zo_only\":{:.3},\"median_seconds_mixed\":{:.3},\"speedup\":{:.2},\"median_training_seconds_zo_only\":{:.3},\"median_training_seconds_mixed\":{:.3},\"training_speedup\":{:.2}}}",
        median(&times[0]),
        median(&times[1]),
        median(&times[0]) / median(&times[1]),
        median(&training[0]),
        median(&training[1]),
        median(&training[0]) / median(&training[1])
    );
}
