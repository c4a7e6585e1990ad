//! A small HTTP/1.1 server per node: `/metrics` (Prometheus text), `/status`
//! (JSON), `/history` (JSON, see [`crate::obs::history`]), `/` (the
//! dashboard, embedded in the binary). Binds only where told. Each
//! connection runs in its own task with a deadline, reads at most 8 KiB of
//! request head and shares nothing with the network loop but a status
//! snapshot, the history (locked only to copy it) and the metrics registry,
//! so slow clients never block it.

use crate::node::Status;
use crate::obs::history::History;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const DASHBOARD: &str = include_str!("dashboard.html");
const MAX_HEAD: usize = 8 * 1024;
const DEADLINE: Duration = Duration::from_secs(5);

/// What the server reads.
#[derive(Clone)]
pub struct Shared {
    /// libp2p-metrics and seedswarm series.
    pub registry: Arc<Mutex<Registry>>,
    /// Latest node status.
    pub status: watch::Receiver<Status>,
    /// The node's history, one sample per status publish.
    pub history: Arc<Mutex<History>>,
}

/// Serves until the status sender (the node) goes away.
pub async fn serve(listener: TcpListener, shared: Shared) {
    let mut closed = shared.status.clone();
    loop {
        tokio::select! {
            r = closed.changed() => if r.is_err() { break },
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(DEADLINE, handle(stream, shared)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn handle(mut stream: TcpStream, shared: Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, 431, "text/plain", b"request head too large\n").await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", b"only GET\n").await;
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/" | "/index.html" => {
            respond(
                &mut stream,
                200,
                "text/html; charset=utf-8",
                DASHBOARD.as_bytes(),
            )
            .await
        }
        "/metrics" => {
            let mut text = String::new();
            {
                let reg = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
                let _ = prometheus_client::encoding::text::encode(&mut text, &reg);
            }
            respond(
                &mut stream,
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text.as_bytes(),
            )
            .await
        }
        "/status" => {
            let status = shared.status.borrow().clone();
            let body = serde_json::to_vec_pretty(&status).unwrap_or_default();
            respond(&mut stream, 200, "application/json", &body).await
        }
        "/history" => {
            let snapshot = shared
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot();
            let body = serde_json::to_vec(&snapshot).unwrap_or_default();
            respond(&mut stream, 200, "application/json", &body).await
        }
        _ => respond(&mut stream, 404, "text/plain", b"not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    kind: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// Fetches `url` (`http://host:port/path`) with a deadline: `(status code, body)`.
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut body = Vec::new();
    s.take(64 << 20)
        .read_to_end(&mut body)
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: malformed HTTP response"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: malformed status line"))?;
    Ok((code, body.to_string()))
}
