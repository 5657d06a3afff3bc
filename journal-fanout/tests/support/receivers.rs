//! Contract receivers: local stand-ins for Loggly's bulk API, LogDNA's ingest API and an RFC 5424
//! syslog-over-TLS endpoint. Each checks every request exactly as the public API documents it
//! (path, token, tags, auth, content type, framing, size limits; see protocols.md §6) and
//! records what it accepted and every contract violation. They can be told to answer 429/500,
//! to refuse a poisoned event with 400, to go away (port closed) and come back, and to serve
//! TLS with a test CA.
//!
//! Each receiver runs on its own small tokio runtime, so it works from sync tests (driving the
//! binary) and async tests (driving a sink) alike.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Loggly's documented bulk limits, as our sink reads them (decimal megabytes).
pub const LOGGLY_MAX_EVENT: usize = 1_000_000;
pub const LOGGLY_MAX_REQUEST: usize = 5_000_000;
/// Mezmo's documented payload limit.
pub const LOGDNA_MAX_REQUEST: usize = 10_000_000;

/// Which public API a receiver speaks.
#[derive(Clone, Debug)]
pub enum Api {
    /// `POST /bulk/TOKEN/tag/TAGS/`, text/plain, one event per line.
    LogglyBulk { token: String },
    /// `POST /logs/ingest?hostname=&now=`, basic auth `KEY:`, JSON `{"lines":[...]}`.
    LogdnaIngest { key: String },
    /// RFC 5424 lines over TLS with `[TOKEN@41058 tag=".."...]`.
    LogglySyslog { token: String },
    /// RFC 5424 lines over TLS with `[logdna@48950 key=".."]`.
    LogdnaSyslog { key: String },
}

/// One event a receiver accepted.
#[derive(Clone, Debug)]
pub struct Received {
    /// Loggly: tags (URL path or SD params). LogDNA: empty.
    pub tags: Vec<String>,
    /// LogDNA: `app` (ingest) or APP-NAME (syslog); Loggly syslog: APP-NAME.
    pub app: String,
    /// LogDNA ingest: the `hostname` query parameter; syslog: HOSTNAME.
    pub host: String,
    /// Loggly: the event line parsed as JSON (a JSON string if it was not JSON).
    /// LogDNA ingest: the whole line object. Syslog: MSG parsed as JSON.
    pub body: Value,
}

impl Received {
    /// The event's message wherever this API carries it.
    pub fn message(&self) -> String {
        let m = self.body.get("message").or_else(|| self.body.get("line"));
        match m {
            Some(Value::String(s)) => s.clone(),
            _ => match &self.body {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            },
        }
    }
}

/// What the receiver does with requests (changeable while running).
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Answer every request with this status (429/500...) until cleared.
    pub fail_with: Option<u16>,
    /// `Retry-After` seconds sent with `fail_with`.
    pub retry_after: Option<u64>,
    /// A request holding an event containing this text is answered 400.
    pub poison: Option<String>,
    /// Syslog: close each connection after this many lines (the rest of what was sent is lost
    /// from the receiver's view, as with a real server restart).
    pub accept_and_drop: bool,
    /// HTTP: wait this long before answering each request, as a distant service does (the
    /// requests of other connections are served meanwhile).
    pub delay: Option<std::time::Duration>,
}

/// What a receiver saw.
#[derive(Debug, Default)]
pub struct State {
    pub behaviour: Behaviour,
    pub events: Vec<Received>,
    pub violations: Vec<String>,
    /// Requests (HTTP) or connections (syslog) seen.
    pub requests: usize,
    /// TCP connections accepted (HTTP clients should keep one alive between requests).
    pub connections: usize,
    /// HTTP requests being answered right now, and the most at any one time.
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Requests answered with `fail_with`.
    pub failed: usize,
    /// Requests answered 400 because of the poison.
    pub poisoned: usize,
    /// Connections dropped in accept-and-drop mode.
    pub dropped: usize,
    /// TLS handshakes that failed (client refused our certificate, ...).
    pub handshake_errors: usize,
    /// `meta` key -> JSON type seen first (LogDNA: types must not change).
    pub meta_types: BTreeMap<String, &'static str>,
}

struct Shared {
    api: Api,
    tls: Option<TlsAcceptor>,
    state: Mutex<State>,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A running (or paused) receiver.
pub struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Plain HTTP/TCP on a free loopback port.
    pub fn start(api: Api) -> Receiver {
        Receiver::start_with(api, None)
    }

    /// With TLS (certificate from `TestCa::server_config`).
    pub fn start_with(api: Api, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        let shared = Arc::new(Shared {
            api,
            tls: tls.map(TlsAcceptor::from),
            state: Mutex::new(State::default()),
            tasks: Mutex::new(Vec::new()),
        });
        let mut r = Receiver {
            port: 0,
            shared,
            rt: Some(rt),
        };
        r.port = r.listen(0);
        r
    }

    fn listen(&self, port: u16) -> u16 {
        let rt = self.rt.as_ref().unwrap();
        // std bind (sets SO_REUSEADDR, so `resume` gets the same port back) works from sync
        // and async callers alike; block_on would not.
        // After `stop` the old listener closes once its aborted task is dropped: retry briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let std_listener = loop {
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if port != 0 && std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("receiver cannot bind 127.0.0.1:{port}: {e}"),
            }
        };
        std_listener.set_nonblocking(true).unwrap();
        let _ctx = rt.enter();
        let listener = TcpListener::from_std(std_listener).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = self.shared.clone();
        let task = rt.spawn(accept_loop(listener, shared));
        self.shared.tasks.lock().unwrap().push(task.abort_handle());
        port
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT` / `https://localhost:PORT` (TLS certificates name `localhost`).
    pub fn url(&self) -> String {
        if self.shared.tls.is_some() {
            format!("https://localhost:{}", self.port)
        } else {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    /// Goes away: the port is closed and open connections are cut.
    pub fn stop(&self) {
        for t in self.shared.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Comes back on the same port.
    pub fn resume(&self) {
        let port = self.listen(self.port);
        assert_eq!(port, self.port);
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.state().behaviour)
    }

    pub fn events(&self) -> Vec<Received> {
        self.state().events.clone()
    }

    pub fn event_count(&self) -> usize {
        self.state().events.len()
    }

    /// Panics with the list if any request broke the API contract.
    pub fn assert_no_violations(&self) {
        let s = self.state();
        assert!(
            s.violations.is_empty(),
            "{} contract violations, first ones: {:#?}",
            s.violations.len(),
            &s.violations[..s.violations.len().min(5)]
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        shared.state.lock().unwrap().connections += 1;
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match &s.tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => serve(tls, s.clone()).await,
                    Err(_) => s.state.lock().unwrap().handshake_errors += 1,
                },
                None => serve(tcp, s.clone()).await,
            }
        });
        shared.tasks.lock().unwrap().push(task.abort_handle());
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, shared: Arc<Shared>) {
    match shared.api {
        Api::LogglyBulk { .. } | Api::LogdnaIngest { .. } => serve_http(stream, &shared).await,
        Api::LogglySyslog { .. } | Api::LogdnaSyslog { .. } => serve_syslog(stream, &shared).await,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    body: String,
    retry_after: Option<u64>,
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(stream: S, shared: &Shared) {
    let mut conn = BufReader::new(stream);
    loop {
        let req = match read_request(&mut conn).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                shared
                    .state
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("bad HTTP framing: {e}"));
                return;
            }
        };
        if shared.state.lock().unwrap().behaviour.accept_and_drop {
            shared.state.lock().unwrap().dropped += 1;
            return;
        }
        let delay = {
            let mut st = shared.state.lock().unwrap();
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
            st.behaviour.delay
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let resp = {
            let mut st = shared.state.lock().unwrap();
            st.in_flight -= 1;
            handle(&shared.api, &req, &mut st)
        };
        let reason = match resp.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Error",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            resp.status,
            resp.body.len()
        );
        if let Some(s) = resp.retry_after {
            head.push_str(&format!("Retry-After: {s}\r\n"));
        }
        head.push_str("\r\n");
        let w = conn.get_mut();
        if w.write_all(head.as_bytes()).await.is_err()
            || w.write_all(resp.body.as_bytes()).await.is_err()
            || w.flush().await.is_err()
        {
            return;
        }
        if req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

/// `Ok(None)`: the connection ended (closed or reset by the client) between requests, or the
/// client went away mid-request — not a protocol violation. `Err`: a malformed request.
async fn read_request<R: AsyncRead + Unpin>(
    conn: &mut BufReader<R>,
) -> Result<Option<Request>, String> {
    let mut line = String::new();
    match conn.read_line(&mut line).await {
        Ok(0) | Err(_) => return Ok(None),
        Ok(_) => {}
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    if parts.next() != Some("HTTP/1.1") {
        return Err(format!("request line {line:?} is not HTTP/1.1"));
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        match conn.read_line(&mut h).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').ok_or(format!("bad header line {h:?}"))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err("chunked body (expected Content-Length)".into());
    }
    let len: usize = match req.header("content-length") {
        Some(v) => v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?,
        None if req.method == "POST" => return Err("POST without Content-Length".into()),
        None => 0,
    };
    if len > 64 * 1024 * 1024 {
        return Err(format!("absurd Content-Length {len}"));
    }
    req.body = vec![0; len];
    if conn.read_exact(&mut req.body).await.is_err() {
        return Ok(None);
    }
    Ok(Some(req))
}

fn handle(api: &Api, req: &Request, st: &mut State) -> Response {
    st.requests += 1;
    let ok = |body: &str| Response {
        status: 200,
        body: body.into(),
        retry_after: None,
    };
    let answer = |status: u16, body: &str| Response {
        status,
        body: body.into(),
        retry_after: None,
    };
    if let Some(status) = st.behaviour.fail_with {
        st.failed += 1;
        return Response {
            status,
            body: r#"{"error":"try later"}"#.into(),
            retry_after: st.behaviour.retry_after,
        };
    }
    if req.method != "POST" {
        st.violations
            .push(format!("method {} (expected POST)", req.method));
        return answer(405, "{}");
    }
    let poisoned = st
        .behaviour
        .poison
        .as_ref()
        .is_some_and(|p| memfind(&req.body, p.as_bytes()));
    match api {
        Api::LogglyBulk { token } => {
            let tags = match check_loggly_request(token, req) {
                Ok(t) => t,
                Err((status, v)) => {
                    st.violations.push(v);
                    return answer(status, r#"{"response":"error"}"#);
                }
            };
            if poisoned {
                st.poisoned += 1;
                return answer(400, r#"{"response":"invalid event"}"#);
            }
            let body = String::from_utf8_lossy(&req.body);
            for line in body.split('\n') {
                if line.is_empty() {
                    st.violations
                        .push("empty line in a bulk body (an empty event)".into());
                    continue;
                }
                if line.len() > LOGGLY_MAX_EVENT {
                    st.violations
                        .push(format!("event of {} bytes > 1 MB", line.len()));
                }
                let body = serde_json::from_str(line).unwrap_or_else(|_| {
                    st.violations
                        .push(format!("bulk line is not the event's JSON: {:.100}", line));
                    Value::String(line.to_string())
                });
                st.events.push(Received {
                    tags: tags.clone(),
                    app: String::new(),
                    host: String::new(),
                    body,
                });
            }
            ok(r#"{"response" : "ok"}"#)
        }
        Api::LogdnaIngest { key } => {
            let host = match check_logdna_request(key, req) {
                Ok(h) => h,
                Err((status, v)) => {
                    st.violations.push(v);
                    return answer(
                        status,
                        r#"{"error":"Bad or missing parameters.","code":"BadRequest","status":"error"}"#,
                    );
                }
            };
            let v: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => {
                    st.violations.push(format!("body is not JSON: {e}"));
                    return answer(400, r#"{"status":"error"}"#);
                }
            };
            let Some(lines) = v.get("lines").and_then(Value::as_array) else {
                st.violations.push("body has no \"lines\" array".into());
                return answer(400, r#"{"status":"error"}"#);
            };
            if lines.is_empty() {
                st.violations.push("empty \"lines\"".into());
            }
            if poisoned {
                st.poisoned += 1;
                return answer(
                    400,
                    r#"{"error":"Bad or missing parameters.","code":"BadRequest","status":"error"}"#,
                );
            }
            for l in lines {
                check_logdna_line(l, st);
                st.events.push(Received {
                    tags: Vec::new(),
                    app: l["app"].as_str().unwrap_or_default().to_string(),
                    host: host.clone(),
                    body: l.clone(),
                });
            }
            ok(r#"{"status":"ok"}"#)
        }
        _ => unreachable!("syslog APIs are not HTTP"),
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Path `/bulk/TOKEN/tag/TAGS/`, text/plain, ≤ 5 MB. Returns the tags.
fn check_loggly_request(token: &str, req: &Request) -> Result<Vec<String>, (u16, String)> {
    let path = req.target.split('?').next().unwrap_or_default();
    let rest = path
        .strip_prefix("/bulk/")
        .ok_or((404, format!("path {path:?} is not /bulk/...")))?;
    let (tok, rest) = rest
        .split_once('/')
        .ok_or((404, format!("path {path:?} lacks the token segment")))?;
    if tok != token {
        return Err((403, "wrong customer token in the path".into()));
    }
    let tags = if rest.is_empty() {
        Vec::new()
    } else {
        let t = rest
            .strip_prefix("tag/")
            .and_then(|t| t.strip_suffix('/'))
            .ok_or((
                404,
                format!("path after the token is {rest:?}, expected tag/TAGS/"),
            ))?;
        t.split(',').map(str::to_string).collect::<Vec<_>>()
    };
    if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
        return Err((400, format!("invalid Loggly tag {bad:?}")));
    }
    match req.header("content-type") {
        Some(ct) if ct.starts_with("text/plain") || ct.starts_with("application/json") => {}
        other => return Err((400, format!("content-type {other:?}"))),
    }
    if req.body.len() > LOGGLY_MAX_REQUEST {
        return Err((
            413,
            format!("bulk request of {} bytes > 5 MB", req.body.len()),
        ));
    }
    Ok(tags)
}

/// `POST /logs/ingest?hostname=H&now=MS`, basic auth `KEY:` only, JSON, ≤ 10 MB. Returns H.
fn check_logdna_request(key: &str, req: &Request) -> Result<String, (u16, String)> {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    if path != "/logs/ingest" {
        return Err((404, format!("path {path:?} is not /logs/ingest")));
    }
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let host = params
        .get("hostname")
        .filter(|h| !h.is_empty())
        .ok_or((400, "Missing param hostname.".to_string()))?
        .clone();
    let now: i64 = params
        .get("now")
        .and_then(|n| n.parse().ok())
        .ok_or((400, "missing or non-numeric now=".to_string()))?;
    let wall = chrono::Utc::now().timestamp_millis();
    if (now - wall).abs() > 3_600_000 {
        return Err((
            400,
            format!("now={now} is not the sender's current epoch ms"),
        ));
    }
    if params.contains_key("apikey") || req.header("apikey").is_some() {
        return Err((400, "more than one auth method (apikey given too)".into()));
    }
    let expected = format!("Basic {}", base64(format!("{key}:").as_bytes()));
    match req.header("authorization") {
        Some(a) if a == expected => {}
        Some(_) => {
            return Err((
                401,
                "Authorization is not Basic KEY: with empty password".into(),
            ))
        }
        None => return Err((401, "Missing Credentials".into())),
    }
    match req.header("content-type") {
        Some(ct) if ct.starts_with("application/json") => {}
        other => return Err((400, format!("content-type {other:?}"))),
    }
    if req.body.len() > LOGDNA_MAX_REQUEST {
        return Err((413, format!("payload of {} bytes > 10 MB", req.body.len())));
    }
    Ok(host)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_logdna_line(l: &Value, st: &mut State) {
    let mut bad = |what: String| st.violations.push(what);
    if !l["timestamp"].is_i64() {
        bad(format!(
            "line without integer timestamp: {:.200}",
            l.to_string()
        ));
    }
    if l["line"].as_str().is_none_or(str::is_empty) {
        bad("line without non-empty \"line\"".into());
    }
    if !l["app"].is_string() || !l["level"].is_string() {
        bad("line without string app/level".into());
    }
    let Some(meta) = l["meta"].as_object() else {
        bad("line without meta object".into());
        return;
    };
    if !meta.get("stream").is_some_and(Value::is_string) {
        bad("meta.stream missing".into());
    }
    for (k, v) in meta {
        let t = json_type(v);
        let seen = *st.meta_types.entry(k.clone()).or_insert(t);
        if seen != t {
            st.violations
                .push(format!("meta.{k} changed type from {seen} to {t}"));
        }
    }
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// RFC 5424 over TLS, one message per line

async fn serve_syslog<S: AsyncRead + AsyncWrite + Unpin>(stream: S, shared: &Shared) {
    shared.state.lock().unwrap().requests += 1;
    if shared.state.lock().unwrap().behaviour.accept_and_drop {
        shared.state.lock().unwrap().dropped += 1;
        return;
    }
    let mut lines = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match lines.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') {
            shared
                .state
                .lock()
                .unwrap()
                .violations
                .push("connection closed in the middle of a message".into());
            return;
        }
        let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
        let mut st = shared.state.lock().unwrap();
        match parse_5424(&shared.api, &line) {
            Ok(r) => st.events.push(r),
            Err(v) => st.violations.push(format!("{v}: {:.200}", line)),
        }
    }
}

/// Checks `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG` and the SD element the API needs.
fn parse_5424(api: &Api, line: &str) -> Result<Received, String> {
    let mut f = line.splitn(7, ' ');
    let mut next = |what: &str| f.next().ok_or(format!("no {what}"));
    let pri_ver = next("PRI")?;
    let pri: u8 = pri_ver
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix(">1"))
        .and_then(|s| s.parse().ok())
        .ok_or("bad <PRI>1")?;
    if pri > 191 {
        return Err(format!("PRI {pri} > 191"));
    }
    let ts = next("TIMESTAMP")?;
    chrono::DateTime::parse_from_rfc3339(ts).map_err(|e| format!("TIMESTAMP {ts:?}: {e}"))?;
    let host = next("HOSTNAME")?.to_string();
    let app = next("APP-NAME")?.to_string();
    let _procid = next("PROCID")?;
    let _msgid = next("MSGID")?;
    let rest = next("STRUCTURED-DATA")?;
    for (name, v, max) in [("HOSTNAME", &host, 255), ("APP-NAME", &app, 48)] {
        if v.is_empty() || v.len() > max || !v.chars().all(|c| ('!'..='~').contains(&c)) {
            return Err(format!("{name} {v:?} is not 1..{max} printable US-ASCII"));
        }
    }
    let (sd_id, params, msg) = parse_sd(rest)?;
    let tags = match api {
        Api::LogglySyslog { token } => {
            if sd_id != format!("{token}@41058") {
                return Err(format!("SD-ID {sd_id:?} is not TOKEN@41058"));
            }
            let tags: Vec<String> = params
                .iter()
                .filter(|(k, _)| k == "tag")
                .map(|(_, v)| v.clone())
                .collect();
            if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
                return Err(format!("invalid Loggly tag {bad:?}"));
            }
            tags
        }
        Api::LogdnaSyslog { key } => {
            if sd_id != "logdna@48950" || !params.iter().any(|(k, v)| k == "key" && v == key) {
                return Err("SD element is not [logdna@48950 key=\"KEY\"]".into());
            }
            Vec::new()
        }
        _ => unreachable!(),
    };
    let body =
        serde_json::from_str(msg).map_err(|e| format!("MSG is not the event's JSON: {e}"))?;
    Ok(Received {
        tags,
        app,
        host,
        body,
    })
}

/// One SD element `[ID k="v" ...]` followed by ` MSG`; values unescaped.
type SdParams = Vec<(String, String)>;

fn parse_sd(s: &str) -> Result<(String, SdParams, &str), String> {
    let s = s
        .strip_prefix('[')
        .ok_or("STRUCTURED-DATA is not an element")?;
    let id_end = s.find([' ', ']']).ok_or("unterminated SD element")?;
    let id = s[..id_end].to_string();
    let mut params = Vec::new();
    let mut rest = &s[id_end..];
    loop {
        if let Some(r) = rest.strip_prefix(']') {
            let msg = r.strip_prefix(' ').ok_or("no SP before MSG")?;
            return Ok((id, params, msg));
        }
        let r = rest.strip_prefix(' ').ok_or("bad SD params")?;
        let eq = r.find('=').ok_or("SD-PARAM without =")?;
        let name = r[..eq].to_string();
        let r = r[eq + 1..]
            .strip_prefix('"')
            .ok_or("SD-PARAM value not quoted")?;
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, c @ ('"' | '\\' | ']'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c)
                    }
                    None => return Err("SD value ends in \\".into()),
                },
                Some((i, '"')) => break i,
                Some((_, ']')) => return Err("unescaped ] in SD value".into()),
                Some((_, c)) => value.push(c),
                None => return Err("unterminated SD value".into()),
            }
        };
        params.push((name, value));
        rest = &r[end + 1..];
    }
}

// ---------------------------------------------------------------------------------------------
// Test certificates

/// A private CA and a server certificate for `localhost`/127.0.0.1 signed by it.
pub struct TestCa {
    pub ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "journal-fanout test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        TestCa {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// Writes the CA certificate (for `--ca-file`) into `dir`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let p = dir.join("test-ca.pem");
        std::fs::write(&p, &self.ca_pem).unwrap();
        p
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// Polls `f` until it returns `Some` (the real signal), panicking with `what` after `timeout`.
pub async fn until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"key:"), "a2V5Og==");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn parses_sd_with_escapes() {
        let (id, p, msg) = parse_sd(r#"[T@41058 tag="a" tag="b\]c"] {"x":1}"#).unwrap();
        assert_eq!(id, "T@41058");
        assert_eq!(p[1].1, "b]c");
        assert_eq!(msg, r#"{"x":1}"#);
    }
}
