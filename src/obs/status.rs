//! `seedswarm status URL…`: one table for one or many nodes from their
//! `/status`, flagging nodes whose digests disagree at equal version vectors
//! and origins whose updates a node's spot checks found wrong.

use crate::node::Status;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// The outcome of one poll of all nodes.
#[derive(Debug, Default)]
pub struct Report {
    /// The rendered table.
    pub table: String,
    /// URLs that could not be read.
    pub unreachable: Vec<String>,
    /// Groups of nodes with equal version vectors but different digests.
    pub mismatches: usize,
    /// (node, origin) pairs where the node's spot checks flagged the origin.
    pub flagged: usize,
    /// Nodes that cannot be dialed from outside and were told what to do.
    pub advice: usize,
}

/// Polls every URL (a node's base URL or its `/status`) and renders the table.
pub fn poll(urls: &[String], timeout: Duration) -> Report {
    poll_with(urls, timeout, None)
}

/// Like [`poll`], sending `token` as a bearer token (nodes with
/// `node.http_token_file`).
pub fn poll_with(urls: &[String], timeout: Duration, token: Option<&str>) -> Report {
    let mut rows: Vec<(String, Result<Status, String>)> = Vec::new();
    for u in urls {
        let base = u.trim_end_matches('/').trim_end_matches("/status");
        let url = format!("{base}/status");
        let r = crate::obs::http::get_with(&url, timeout, token).and_then(|(code, body)| {
            if code == 401 {
                return Err(format!(
                    "{url}: HTTP 401 (the node wants a bearer token: --token-file FILE)"
                ));
            }
            if code != 200 {
                return Err(format!("{url}: HTTP {code}"));
            }
            serde_json::from_str::<serde_json::Value>(&body)
                .map_err(|e| format!("{url}: {e}"))
                .map(|v| status_from_json(&v))
        });
        rows.push((base.to_string(), r));
    }
    // Group reachable nodes by version vector; digests must agree within a group.
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (_, r) in &rows {
        if let Ok(s) = r {
            let key = serde_json::to_string(&s.version_vector).unwrap_or_default();
            groups.entry(key).or_default().push(&s.digest);
        }
    }
    let bad_vv: Vec<&String> = groups
        .iter()
        .filter(|(_, d)| d.iter().any(|x| x != &d[0]))
        .map(|(k, _)| k)
        .collect();
    let mut rep = Report {
        mismatches: bad_vv.len(),
        ..Report::default()
    };
    let _ = writeln!(
        rep.table,
        "{:<28} {:<10} {:>5} {:>7} {:>9} {:>7} {:>8} {:>7} {:>11} {:<14} {:<16} state",
        "node",
        "peer",
        "peers",
        "own",
        "applied",
        "backlog",
        "loss",
        "acc",
        "checks ok",
        "digest",
        "reach (dir/rel)"
    );
    let mut flagged: Vec<String> = Vec::new();
    let mut advice: Vec<String> = Vec::new();
    for (url, r) in &rows {
        match r {
            Ok(s) => {
                let key = serde_json::to_string(&s.version_vector).unwrap_or_default();
                let flag = if bad_vv.contains(&&key) {
                    "DIGEST MISMATCH"
                } else if s.settled {
                    "settled"
                } else if s.training_done {
                    "settling"
                } else {
                    "training"
                };
                let (checked, agreed) = s
                    .rechecks
                    .values()
                    .fold((0, 0), |(c, a), t| (c + t.checked, a + t.agreed));
                for (o, t) in &s.rechecks {
                    if let Some(n) = t.flagged_after {
                        flagged.push(format!(
                            "origin {} FLAGGED by {} after {n} checks: {} of {} disagree with the recomputed gradient",
                            o.get(..16).unwrap_or(o),
                            truncate(url, 40),
                            t.disagreed,
                            t.checked
                        ));
                    }
                }
                let r = &s.reachability;
                if let Some(a) = &r.advice {
                    advice.push(format!("{}: {a}", truncate(url, 40)));
                }
                let _ = writeln!(
                    rep.table,
                    "{:<28} {:<10} {:>5} {:>7} {:>9} {:>7} {:>8.4} {:>7} {:>11} {:<14} {:<16} {}",
                    truncate(url, 28),
                    truncate(
                        s.peer_id
                            .get(s.peer_id.len().saturating_sub(8)..)
                            .unwrap_or(""),
                        10
                    ),
                    s.peers,
                    s.own_updates,
                    s.updates_applied,
                    s.backlog,
                    s.loss,
                    s.accuracy
                        .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
                    format!("{agreed}/{checked}"),
                    s.digest.get(..12).unwrap_or("-"),
                    format!(
                        "{} {}/{}",
                        r.state.as_str(),
                        r.direct_connections,
                        r.relayed_connections
                    ),
                    if s.mode == "first-order" {
                        format!("{flag} (first-order)")
                    } else {
                        flag.to_string()
                    }
                );
            }
            Err(e) => {
                rep.unreachable.push(url.clone());
                let _ = writeln!(rep.table, "{:<28} UNREACHABLE: {e}", truncate(url, 28));
            }
        }
    }
    for f in flagged.iter().chain(&advice) {
        let _ = writeln!(rep.table, "{f}");
    }
    rep.advice = advice.len();
    rep.flagged = flagged.len();
    let reachable = rows.iter().filter(|(_, r)| r.is_ok()).count();
    let _ = writeln!(
        rep.table,
        "{reachable}/{} reachable; {} version vector(s); {}",
        rows.len(),
        groups.len(),
        if rep.mismatches == 0 {
            "digests agree wherever version vectors are equal".to_string()
        } else {
            format!(
                "{} group(s) of nodes DISAGREE at equal version vectors",
                rep.mismatches
            )
        }
    );
    rep
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

fn status_from_json(v: &serde_json::Value) -> Status {
    let u = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    Status {
        peer_id: s("peer_id"),
        mode: s("mode"),
        run_id: s("run_id"),
        peers: u("peers") as usize,
        own_updates: u("own_updates"),
        updates_applied: u("updates_applied"),
        backlog: u("backlog"),
        loss: v.get("loss").and_then(|x| x.as_f64()).unwrap_or(f64::NAN) as f32,
        accuracy: v.get("accuracy").and_then(|x| x.as_f64()),
        digest: s("digest"),
        version_vector: v
            .get("version_vector")
            .and_then(|x| serde_json::from_value(x.clone()).ok())
            .unwrap_or_default(),
        training_done: v
            .get("training_done")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        settled: v.get("settled").and_then(|x| x.as_bool()).unwrap_or(false),
        rechecks: v
            .get("rechecks")
            .and_then(|x| serde_json::from_value(x.clone()).ok())
            .unwrap_or_default(),
        reachability: v
            .get("reachability")
            .and_then(|x| serde_json::from_value(x.clone()).ok())
            .unwrap_or_default(),
        ..Status::default()
    }
}

/// One line about a node, as `seedswarm node` prints it while it runs.
pub fn line(s: &crate::node::Status) -> String {
    format!(
        "peers {:>2}  own {:>6}  applied {:>7}  backlog {:>5}  loss {:.4}  accuracy {}  digest {}",
        s.peers,
        s.own_updates,
        s.updates_applied,
        s.backlog,
        s.loss,
        s.accuracy
            .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
        s.digest.get(..12).unwrap_or("-"),
    )
}
