//! A small HTTP/1.1 server per node: `/metrics` (Prometheus text), `/status`
//! (JSON), `/history` (JSON, see [`crate::obs::history`]), `/` (the
//! dashboard, embedded in the binary). Binds only where told. Each
//! connection runs in its own task with a deadline, reads at most 8 KiB of
//! request head and shares nothing with the network loop but a status
//! snapshot, the history (locked only to copy it) and the metrics registry,
//! so slow clients never block it. At most [`MAX_CONNECTIONS`] connections
//! are served at once; more are answered 503 and closed at once.
//!
//! With a bearer token (`node.http_token_file`) every path requires
//! `Authorization: Bearer <token>` (compared in constant time; otherwise
//! 401 with `WWW-Authenticate: Bearer`). A browser cannot send that header
//! when it opens a page, so the dashboard page (`/`) also accepts the token
//! as `?token=<token>`; the page's script then sends the header on its own
//! requests. `/metrics`, `/status` and `/history` take the header only.

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
/// Most HTTP connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Most connections past [`MAX_CONNECTIONS`] answered 503 at once (more are
/// closed without an answer).
const TURNED_AWAY: usize = 16;
const BUSY_DEADLINE: Duration = Duration::from_secs(1);

/// A bearer token (its `Debug` does not show it).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token of these characters.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token, in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(candidate))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What the server reads.
#[derive(Clone)]
pub struct Shared {
    /// libp2p-metrics and seedswarm series.
    pub registry: Arc<Mutex<Registry>>,
    /// Latest node status.
    pub status: watch::Receiver<Status>,
    /// The node's history, one sample per status publish.
    pub history: Arc<Mutex<History>>,
    /// The bearer token every request must carry (None: none needed).
    pub token: Option<Token>,
    /// Where `POST /records` hands an owner's record (None: not served).
    pub records: Option<RecordSink>,
}

/// Takes an owner's record (encoded) and answers whether it was news.
pub type RecordSink =
    tokio::sync::mpsc::Sender<(Vec<u8>, tokio::sync::oneshot::Sender<Result<bool, String>>)>;

/// Largest `POST /records` body (a record file is about 230 bytes).
const MAX_RECORD_BODY: usize = 4096;

/// Serves until the status sender (the node) goes away.
pub async fn serve(listener: TcpListener, shared: Shared) {
    let mut closed = shared.status.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let turned_away = Arc::new(tokio::sync::Semaphore::new(TURNED_AWAY));
    loop {
        tokio::select! {
            r = closed.changed() => if r.is_err() { break },
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Full: a short-lived 503 while few are being turned
                        // away, else closed at once.
                        if let Ok(t) = turned_away.clone().try_acquire_owned() {
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(BUSY_DEADLINE, busy(stream)).await;
                                drop(t);
                            });
                        }
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(DEADLINE, handle(stream, shared)).await;
                        drop(slot);
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
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let post = method == "POST" && path == "/records";
    if method != "GET" && method != "HEAD" && !post {
        return respond(
            &mut stream,
            405,
            "text/plain",
            b"only GET (and POST /records)\n",
        )
        .await;
    }
    if let Some(token) = &shared.token {
        let page = matches!(path, "/" | "/index.html");
        let ok = bearer(&head).is_some_and(|t| token.matches(t))
            || (page && query_token(query).is_some_and(|t| token.matches(t.as_bytes())));
        if !ok {
            return respond_with(
                &mut stream,
                401,
                "text/plain",
                "WWW-Authenticate: Bearer realm=\"seedswarm\"\r\n",
                b"a bearer token is required (Authorization: Bearer <token>)\n",
            )
            .await;
        }
    }
    if post {
        return post_record(&mut stream, &head, &shared).await;
    }
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

/// `POST /records`: an owner's admission or revocation (a record file's
/// bytes) handed to the node, which checks it against the run's owner,
/// keeps it and gossips it when it is news. Anyone may post one: only the
/// owner's signature makes it count (the bearer token, when set, is asked
/// all the same).
async fn post_record(stream: &mut TcpStream, head: &[u8], shared: &Shared) -> std::io::Result<()> {
    let Some(sink) = &shared.records else {
        return respond(stream, 404, "text/plain", b"this node takes no records\n").await;
    };
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(head.len(), |i| i + 4);
    let len = String::from_utf8_lossy(&head[..end]).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let Some(len) = len.filter(|&n| n <= MAX_RECORD_BODY) else {
        return respond(
            stream,
            411,
            "text/plain",
            b"a Content-Length of at most 4096 is required\n",
        )
        .await;
    };
    let mut body = head[end..].to_vec();
    let mut buf = [0u8; 1024];
    while body.len() < len {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(len);
    let record = match crate::crdt::admit::Record::from_file_bytes(&body) {
        Ok(r) => r,
        Err(e) => return respond(stream, 400, "text/plain", format!("{e}\n").as_bytes()).await,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if sink.send((record.encode(), tx)).await.is_err() {
        return respond(stream, 503, "text/plain", b"the node is stopping\n").await;
    }
    match rx.await {
        Ok(Ok(news)) => {
            let body = serde_json::json!({ "record": format!("{record:?}"), "news": news });
            respond(stream, 200, "application/json", body.to_string().as_bytes()).await
        }
        Ok(Err(e)) => respond(stream, 400, "text/plain", format!("{e}\n").as_bytes()).await,
        Err(_) => respond(stream, 503, "text/plain", b"the node is stopping\n").await,
    }
}

/// What an over-full server answers before it closes a connection.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\r\n";

/// Answers 503 and closes after the client does (so the unread request
/// does not turn the close into a reset that loses the answer).
async fn busy(mut stream: TcpStream) -> std::io::Result<()> {
    stream.write_all(BUSY).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    let mut left = MAX_HEAD;
    while left > 0 {
        match stream.read(&mut sink).await? {
            0 => break,
            n => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header in a request head.
fn bearer(head: &[u8]) -> Option<&[u8]> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    head[..end].split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !name.eq_ignore_ascii_case(b"authorization") {
            return None;
        }
        let value = value.trim_ascii();
        let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
        scheme
            .eq_ignore_ascii_case(b"bearer")
            .then(|| token.trim_ascii())
    })
}

/// The value of `token=` in a query string (percent-decoding `%XX`).
fn query_token(query: &str) -> Option<String> {
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("token="))?;
    let mut out = Vec::with_capacity(raw.len());
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    kind: &str,
    body: &[u8],
) -> std::io::Result<()> {
    respond_with(stream, code, kind, "", body).await
}

async fn respond_with(
    stream: &mut TcpStream,
    code: u16,
    kind: &str,
    extra: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// Fetches `url` (`http://host:port/path`) with a deadline: `(status code, body)`.
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    get_with(url, timeout, None)
}

/// Like [`get`], sending `Authorization: Bearer <token>` when given one.
pub fn get_with(
    url: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    request(url, None, timeout, token)
}

/// POSTs `body` to `url`: the status code and the body of the answer.
pub fn post_with(
    url: &str,
    body: &[u8],
    timeout: Duration,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    request(url, Some(body), timeout, token)
}

/// One HTTP/1.1 request (GET, or POST with a body).
fn request(
    url: &str,
    post: Option<&[u8]>,
    timeout: Duration,
    token: Option<&str>,
) -> Result<(u16, String), String> {
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
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let (method, extra) = match post {
        Some(b) => ("POST", format!("Content-Length: {}\r\n", b.len())),
        None => ("GET", String::new()),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\n{auth}{extra}Connection: close\r\n\r\n"
    )
    .and_then(|_| s.write_all(post.unwrap_or_default()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_found_in_any_case_and_nowhere_else() {
        let head = b"GET /status HTTP/1.1\r\nHost: x\r\nauthorization:  bearer  abc123 \r\n\r\n";
        assert_eq!(bearer(head), Some(&b"abc123"[..]));
        let head = b"GET / HTTP/1.1\r\nAuthorization: Basic abc123\r\n\r\n";
        assert_eq!(bearer(head), None);
        let head = b"GET / HTTP/1.1\r\nX-Authorization: Bearer abc123\r\n\r\n";
        assert_eq!(bearer(head), None);
        // Not in the body, not in the request line.
        let head = b"GET /Authorization: Bearer abc HTTP/1.1\r\n\r\nAuthorization: Bearer abc\r\n";
        assert_eq!(bearer(head), None);
    }

    #[test]
    fn tokens_compare_whole_and_query_tokens_decode() {
        let t = Token::new("s3cret-token-0123");
        assert!(t.matches(b"s3cret-token-0123"));
        assert!(!t.matches(b"s3cret-token-012"));
        assert!(!t.matches(b"s3cret-token-01234"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(query_token("a=1&token=ab%2Bc"), Some("ab+c".into()));
        assert_eq!(query_token("token=abc"), Some("abc".into()));
        assert_eq!(query_token("mytoken=abc"), None);
        assert_eq!(query_token("token=ab%zz"), None);
        assert_eq!(query_token("token=ab%"), Some("ab%".into()));
    }
}
