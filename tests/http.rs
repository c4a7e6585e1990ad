//! The per-node HTTP server as users meet it: Prometheus `/metrics`, JSON
//! `/status` (with the swarm table) and `/history`, 404s, a slow client that must not block anything, the
//! `seedswarm status` command, and the dashboard rendered in headless Chromium.

mod common;

use common::{config, until};

use seedswarm::node::{Node, Options};
use seedswarm::obs::http::get;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

fn options(max_updates: u64) -> Options {
    Options {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        max_updates: Some(max_updates),
        heartbeat_interval: Duration::from_millis(300),
        http: Some("127.0.0.1:0".parse().unwrap()),
        exit_when_settled: false,
        ..Options::default()
    }
}

async fn fetch(addr: SocketAddr, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || get(&url, Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("http answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_unknown_paths() {
    let mut node = Node::start(config(), options(300)).await.unwrap();
    let addr = node.http.expect("http bound");
    let mut op = options(300);
    op.http = None;
    op.bootstrap = vec![node.listen[0].clone().with_p2p(node.peer_id).unwrap()];
    let mut peer = Node::start(config(), op).await.unwrap();
    until(&node, |s| s.settled && s.updates_applied == 600).await;
    // A client that connects and never sends must not block anyone.
    let idle = std::net::TcpStream::connect(addr).unwrap();
    let (code, metrics) = fetch(addr, "/metrics").await;
    assert_eq!(code, 200);
    for series in [
        "seedswarm_updates_published_total 300",
        "seedswarm_updates_applied 600",
        "seedswarm_updates_received_total 300",
        "seedswarm_payload_bytes_total{protocol=\"gossip_updates\",direction=\"in\"}",
        "seedswarm_step_seconds_count 300",
        "seedswarm_digest_mismatches_total 0",
        "seedswarm_wire_bytes_total{",
        "libp2p_swarm_",
        "libp2p_gossipsub_",
    ] {
        assert!(metrics.contains(series), "missing {series} in /metrics");
    }
    let (code, body) = fetch(addr, "/status").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["own_updates"], 300);
    assert_eq!(v["peer_id"], node.peer_id.to_string());
    assert_eq!(v["digest"].as_str().unwrap().len(), 64);
    // The swarm as known from heartbeats: the one peer, settled with us.
    let swarm = v["swarm"].as_array().expect("swarm list");
    assert_eq!(swarm.len(), 1, "{swarm:?}");
    let p = &swarm[0];
    assert_eq!(p["peer_id"], peer.peer_id.to_string());
    assert_eq!(p["own_updates"], 300);
    assert_eq!((&p["behind"], &p["ahead"]), (&0.into(), &0.into()));
    assert_eq!(p["digest"], "agree");
    assert_eq!(p["mode"], "zeroth-order");
    assert_eq!(p["done"], true);
    assert!(p["last_seen_s"].as_f64().unwrap() >= 0.0);
    // The history is served and grows with every status publish.
    let history = |body: String| -> serde_json::Value { serde_json::from_str(&body).unwrap() };
    let (code, body) = fetch(addr, "/history").await;
    assert_eq!(code, 200);
    let h1 = history(body);
    assert_eq!(h1["version"], 1);
    let n1 = h1["samples"].as_u64().unwrap();
    let run1 = h1["run"].as_array().unwrap();
    let recent1 = h1["recent"].as_array().unwrap();
    assert!(n1 >= 1 && !run1.is_empty() && !recent1.is_empty(), "{h1}");
    assert_eq!(
        run1.iter().map(|p| p["n"].as_u64().unwrap()).sum::<u64>(),
        n1
    );
    let t1 = run1.last().unwrap()["t"].as_f64().unwrap();
    assert_eq!(recent1.last().unwrap()["t"].as_f64(), Some(t1));
    assert_eq!(run1.last().unwrap()["own_updates"], 300);
    // Past t1 by more than a rounding error: serde_json's float parsing
    // may land an ulp below the value printed (no `float_roundtrip`), so
    // the very sample of t1 could pass for a later one.
    until(&node, |s| s.uptime_s > t1 + 1e-6).await;
    let h2 = history(fetch(addr, "/history").await.1);
    assert!(h2["samples"].as_u64().unwrap() > n1, "{h2}");
    assert_eq!(
        h2["run"][0]["t0"], h1["run"][0]["t0"],
        "still from the start"
    );
    assert_eq!(fetch(addr, "/nope").await.0, 404);
    let (code, page) = fetch(addr, "/").await;
    assert_eq!(code, 200);
    assert!(page.contains("<canvas id=\"loss\"") && !page.contains("://cdn"));
    drop(idle);
    for n in [&mut node, &mut peer] {
        n.stop();
    }
    node.wait().await.unwrap();
    peer.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_checks_the_whole_swarm() {
    let a = Node::start(config(), options(200)).await.unwrap();
    let mut ob = options(200);
    ob.bootstrap = vec![a.listen[0].clone().with_p2p(a.peer_id).unwrap()];
    let b = Node::start(config(), ob).await.unwrap();
    for n in [&a, &b] {
        until(n, |s| s.settled && s.updates_applied == 400).await;
    }
    let urls: Vec<String> = [&a, &b]
        .iter()
        .map(|n| format!("http://{}", n.http.unwrap()))
        .collect();
    let bin = env!("CARGO_BIN_EXE_seedswarm");
    let out = tokio::task::spawn_blocking({
        let urls = urls.clone();
        move || {
            Command::new(bin)
                .arg("status")
                .args(&urls)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Reachability: each node has one direct connection, none relayed.
    assert!(text.contains("reach (dir/rel)"), "{text}");
    assert_eq!(text.matches(" 1/0 ").count(), 2, "{text}");
    assert!(
        text.contains("2/2 reachable; 1 version vector(s); digests agree"),
        "{text}"
    );
    // An unreachable node makes the command fail.
    let dead = "http://127.0.0.1:1".to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg("status")
            .args(&urls)
            .arg(dead)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNREACHABLE"));
    for mut n in [a, b] {
        n.stop();
        n.wait().await.unwrap();
    }
}

fn chromium() -> Option<String> {
    let candidates = [
        std::env::var("CHROMIUM").unwrap_or_default(),
        "chromium".into(),
        "chromium-browser".into(),
    ];
    candidates.into_iter().filter(|c| !c.is_empty()).find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_opened_mid_run_draws_the_whole_run_and_the_swarm() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("SEEDSWARM_REQUIRE_BROWSER").is_none(),
            "chromium is required (SEEDSWARM_REQUIRE_BROWSER is set) but was not found"
        );
        eprintln!("SKIPPED: no chromium on PATH (install Debian's `chromium`; .ci/run does)");
        return;
    };
    let a = Node::start(config(), options(1_000_000)).await.unwrap();
    let mut ob = options(1_000_000);
    ob.bootstrap = vec![a.listen[0].clone().with_p2p(a.peer_id).unwrap()];
    let b = Node::start(config(), ob).await.unwrap();
    // Open the page mid-run: the node has published status for a while.
    until(&a, |s| {
        s.peers >= 1 && s.updates_applied > 100 && s.uptime_s > 4.0 && !s.swarm.is_empty()
    })
    .await;
    let first_sample = {
        let (_, body) = fetch(a.http.unwrap(), "/history").await;
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        h["run"][0]["t0"].as_f64().unwrap()
    };
    let opened_at = a.watch().borrow().uptime_s;
    let url = format!("http://{}/", a.http.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: Vec<String>, profile: &str| {
        let mut c = Command::new(&browser);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            "--virtual-time-budget=5000",
        ]);
        c.arg(format!(
            "--user-data-dir={}",
            dir.path().join(profile).display()
        ));
        c.args(extra).arg(&url);
        c
    };
    let mut dump = run(vec!["--dump-dom".into()], "p1");
    let shot_path = dir.path().join("dashboard.png");
    let mut shot = run(vec![format!("--screenshot={}", shot_path.display())], "p2");
    let (dom, shot_ok) = tokio::task::spawn_blocking(move || {
        let dom = dump.output().unwrap();
        let shot = shot.output().unwrap();
        (
            String::from_utf8_lossy(&dom.stdout).into_owned(),
            shot.status.success(),
        )
    })
    .await
    .unwrap();
    // The attribute `name` of the element whose tag contains `marker`.
    let attr = |marker: &str, name: &str| -> Option<String> {
        let at = dom.find(marker)?;
        let open = dom[..=at].rfind('<')?;
        let tag = &dom[open..at + dom[at..].find('>')?];
        let v = tag
            .split(&format!(" {name}=\""))
            .nth(1)?
            .split('"')
            .next()?;
        Some(v.to_string())
    };
    let num = |marker: &str, name: &str| -> f64 {
        attr(marker, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} on {marker} in the rendered page"))
    };
    // The history drawn on opening reaches back to the run's first sample.
    let history_points = num("<body", "data-history-points");
    let reach = attr("id=\"reach\"", "data-state");
    assert!(
        matches!(reach.as_deref(), Some("unknown" | "public" | "private")),
        "reachability drawn: {reach:?}"
    );
    assert!(
        history_points >= 10.0,
        "{history_points} history points drawn"
    );
    assert_eq!(num("<body", "data-history-from"), first_sample);
    assert!(num("<body", "data-history-to") >= opened_at);
    for id in ["loss", "rate", "bytes", "peers", "backlog", "acc"] {
        let marker = format!("id=\"{id}\"");
        let points = num(&marker, "data-points");
        assert!(points >= history_points, "chart {id} drew {points} points");
        let (t0, t1) = (num(&marker, "data-t0"), num(&marker, "data-t1"));
        assert!(t0 <= first_sample + 1.0, "chart {id} starts at {t0} s");
        assert!(t1 >= opened_at, "chart {id} ends at {t1} s");
    }
    // The swarm table lists the other node.
    assert!(
        dom.contains(&format!("data-peer=\"{}\"", b.peer_id)),
        "swarm table row for the other node"
    );
    let state = dom
        .split("id=\"state\"")
        .nth(1)
        .and_then(|r| r.split('>').nth(1))
        .and_then(|r| r.split('<').next())
        .unwrap_or("");
    assert_eq!(state, "· training", "state line of the page");
    assert!(dom.contains(&a.peer_id.to_string()), "peer id shown");
    assert!(shot_ok);
    let png = std::fs::read(&shot_path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
    for mut n in [a, b] {
        n.stop();
        n.wait().await.unwrap();
    }
}

/// A request with extra header lines, by hand: `(status code, head)`.
async fn raw_get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut bytes = Vec::new();
        let _ = s.read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, head)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_path_needs_it_and_the_status_command_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("http.token");
    let token = seedswarm::net::psk::generate_token(&token_file).unwrap();
    let mut o = options(100);
    o.http_token = Some(seedswarm::obs::http::Token::new(token.clone()));
    let mut node = Node::start(config(), o).await.unwrap();
    let addr = node.http.expect("http bound");
    assert!(
        node.notices.contains(&format!(
            "HTTP on {addr} requires a bearer token (node.http_token_file)"
        )),
        "{:?}",
        node.notices
    );
    until(&node, |s| s.own_updates == 100).await;
    let good = format!("Authorization: Bearer {token}\r\n");
    let wrong = format!("Authorization: Bearer {}0\r\n", &token[..63]);
    for path in [
        "/",
        "/index.html",
        "/status",
        "/metrics",
        "/history",
        "/nope",
    ] {
        for headers in ["", wrong.as_str(), "Authorization: Basic xyz\r\n"] {
            let (code, head) = raw_get(addr, path, headers).await;
            assert_eq!(code, 401, "{path} with {headers:?}: {head}");
            assert!(head.contains("\r\nWWW-Authenticate: Bearer"), "{head}");
        }
    }
    for (path, want) in [
        ("/", 200),
        ("/status", 200),
        ("/metrics", 200),
        ("/history", 200),
        ("/nope", 404),
    ] {
        assert_eq!(raw_get(addr, path, &good).await.0, want, "{path}");
    }
    // The library client sends the header; the body is the real status.
    let url = format!("http://{addr}/status");
    let t = token.clone();
    let (code, body) = tokio::task::spawn_blocking(move || {
        seedswarm::obs::http::get_with(&url, Duration::from_secs(5), Some(&t))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["own_updates"], 100);
    // A browser opens the dashboard with ?token=; the data paths take the header only.
    let (code, _) = raw_get(addr, &format!("/?token={token}"), "").await;
    assert_eq!(code, 200);
    assert_eq!(
        raw_get(addr, &format!("/?token={}0", &token[..63]), "")
            .await
            .0,
        401
    );
    assert_eq!(
        raw_get(addr, &format!("/status?token={token}"), "").await.0,
        401
    );
    // `seedswarm status --token-file` reads it; without, the node is unreachable (401).
    let bin = env!("CARGO_BIN_EXE_seedswarm");
    let base = format!("http://{addr}");
    let (with, without) = tokio::task::spawn_blocking(move || {
        let with = Command::new(bin)
            .args(["status", &base, "--token-file"])
            .arg(&token_file)
            .output()
            .unwrap();
        let without = Command::new(bin).args(["status", &base]).output().unwrap();
        (with, without)
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&with.stdout);
    assert!(with.status.success(), "{text}");
    assert!(text.contains("1/1 reachable"), "{text}");
    assert_eq!(without.status.code(), Some(1));
    let text = String::from_utf8_lossy(&without.stdout);
    assert!(
        text.contains("HTTP 401") && text.contains("--token-file"),
        "{text}"
    );
    node.stop();
    node.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_turned_away_until_slots_free() {
    use seedswarm::obs::http::MAX_CONNECTIONS;
    let mut node = Node::start(config(), options(10)).await.unwrap();
    let addr = node.http.expect("http bound");
    // Idle clients hold every slot (each until it sends or the 5 s deadline).
    let idle: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let (code, head) = raw_get(addr, "/status", "").await;
    assert_eq!(code, 503, "{head}");
    drop(idle);
    // Slots come back as the server sees the idle clients go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = raw_get(addr, "/status", "").await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 503);
        assert!(tokio::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.stop();
    node.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_opened_with_its_token_draws_the_run() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("SEEDSWARM_REQUIRE_BROWSER").is_none(),
            "chromium is required (SEEDSWARM_REQUIRE_BROWSER is set) but was not found"
        );
        eprintln!("SKIPPED: no chromium on PATH");
        return;
    };
    let token = "dashboard-token-0123456789abcdef".to_string();
    let mut o = options(1_000_000);
    o.http_token = Some(seedswarm::obs::http::Token::new(token.clone()));
    let mut a = Node::start(config(), o).await.unwrap();
    until(&a, |s| s.uptime_s > 2.0 && s.own_updates > 50).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = |url: String, profile: &str| {
        let mut c = Command::new(&browser);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ]);
        c.arg(format!(
            "--user-data-dir={}",
            dir.path().join(profile).display()
        ));
        c.arg(url);
        c
    };
    let base = format!("http://{}/", a.http.unwrap());
    let mut with = dump(format!("{base}?token={token}"), "p1");
    let mut without = dump(base, "p2");
    let (with, without) = tokio::task::spawn_blocking(move || {
        let w = with.output().unwrap();
        let wo = without.output().unwrap();
        (
            String::from_utf8_lossy(&w.stdout).into_owned(),
            String::from_utf8_lossy(&wo.stdout).into_owned(),
        )
    })
    .await
    .unwrap();
    // With the token in the URL the page's own requests carried it: the
    // history was drawn and the status (with the peer id) shown.
    assert!(with.contains(&a.peer_id.to_string()), "peer id shown");
    let points = with
        .split("data-history-points=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("history points drawn");
    assert!(points >= 1, "{points}");
    // Without it, the page itself is refused.
    assert!(!without.contains("<canvas"), "{without}");
    a.stop();
    a.wait().await.unwrap();
}
