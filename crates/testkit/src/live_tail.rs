//! A CloudWatch Logs StartLiveTail server for tests (moto answers StartLiveTail with one
//! JSON document, not an event stream): every other request is forwarded to moto.
//!
//! It speaks the documented event stream over HTTP/1.1 (a chunked response of
//! `application/vnd.amazon.eventstream` messages framed by `aws-smithy-eventstream`): a
//! `sessionStart` event, then a `sessionUpdate` every second with the events ingested since
//! the session started (`sessionMetadata.sampled` when asked to sample), and after the
//! session timeout (3 hours at AWS, shortened here) a `SessionTimeoutException`.
//! Events ingested while no session runs are never delivered live — as at AWS.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};

/// One event as CloudWatch ingested it.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    pub group_arn: String,
    pub stream: String,
    pub timestamp: i64,
    pub message: String,
    ingested: i64,
}

#[derive(Default)]
struct Shared {
    events: Mutex<Vec<LiveEvent>>,
    sample_next: AtomicBool,
    sessions: AtomicUsize,
    /// Request bodies of StartLiveTail, in order.
    requests: Mutex<Vec<Value>>,
    /// Operations forwarded to moto, in order.
    forwarded: Mutex<Vec<String>>,
    /// Answer StartLiveTail with AccessDeniedException.
    deny: AtomicBool,
}

/// The server; it stops with the test process.
pub struct LiveTailServer {
    port: u16,
    shared: Arc<Shared>,
}

type Body = BoxBody<Bytes, Infallible>;

impl LiveTailServer {
    /// Serve on a free loopback port; forward all but StartLiveTail to `127.0.0.1:upstream`.
    /// Sessions end with SessionTimeoutException after `session_timeout`.
    pub fn start(upstream: u16, session_timeout: Duration) -> LiveTailServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        return;
                    };
                    let s = s.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            handle(req, s.clone(), upstream, session_timeout)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                            .await;
                    });
                }
            });
        });
        LiveTailServer { port, shared }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// CloudWatch ingested an event (put it into moto too, for polls to find).
    pub fn ingest(&self, group_arn: &str, stream: &str, timestamp: i64, message: &str) {
        self.shared.events.lock().unwrap().push(LiveEvent {
            group_arn: group_arn.into(),
            stream: stream.into(),
            timestamp,
            message: message.into(),
            ingested: now_ms(),
        });
    }

    /// The next update of the newest session says it was sampled, and carries only every
    /// other event — what CloudWatch does above 500 events/s.
    pub fn sample_next_update(&self) {
        self.shared.sample_next.store(true, Ordering::SeqCst);
    }

    /// Sessions started so far.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// StartLiveTail request bodies so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Operations forwarded to moto so far (`FilterLogEvents`, …).
    pub fn forwarded(&self) -> Vec<String> {
        self.shared.forwarded.lock().unwrap().clone()
    }

    /// Answer StartLiveTail with AccessDeniedException, as for credentials without
    /// `logs:StartLiveTail`.
    pub fn deny_live_tail(&self) {
        self.shared.deny.store(true, Ordering::SeqCst);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn frame(kind: &str, name: &str, payload: Value) -> Bytes {
    let type_header = if kind == "event" {
        ":event-type"
    } else {
        ":exception-type"
    };
    let msg = Message::new_from_parts(
        vec![
            Header::new(
                ":message-type",
                HeaderValue::String(kind.to_string().into()),
            ),
            Header::new(type_header, HeaderValue::String(name.to_string().into())),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
        ],
        payload.to_string(),
    );
    let mut buf = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&msg, &mut buf).expect("frame a message");
    buf.into()
}

async fn handle(
    req: Request<Incoming>,
    s: Arc<Shared>,
    upstream: u16,
    timeout: Duration,
) -> Result<Response<Body>, Infallible> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if target != "Logs_20140328.StartLiveTail" {
        let op = target.rsplit('.').next().unwrap_or_default().to_string();
        s.forwarded.lock().unwrap().push(op);
        return Ok(forward(req, upstream).await);
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body: Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    s.requests.lock().unwrap().push(body.clone());
    if s.deny.load(Ordering::SeqCst) {
        let text = json!({"__type": "AccessDeniedException",
            "message": "User: arn:aws:iam::1:user/dev is not authorized to perform: logs:StartLiveTail"})
        .to_string();
        return Ok(Response::builder()
            .status(400)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", "AccessDeniedException")
            .body(Full::new(Bytes::from(text)).boxed())
            .unwrap());
    }
    let strings = |key: &str| -> Vec<String> {
        body[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let groups = strings("logGroupIdentifiers");
    let prefixes = strings("logStreamNamePrefixes");
    let session = s.sessions.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let start = frame(
        "event",
        "sessionStart",
        json!({
            "requestId": format!("req-{session}"),
            "sessionId": format!("session-{session}"),
            "logGroupIdentifiers": groups,
            "logStreamNamePrefixes": prefixes,
        }),
    );
    tokio::spawn(async move {
        if tx.send(start).await.is_err() {
            return;
        }
        let began = Instant::now();
        let mut cursor = s.events.lock().unwrap().len();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            if began.elapsed() >= timeout {
                let _ = tx
                    .send(frame(
                        "exception",
                        "SessionTimeoutException",
                        json!({"message": "Session timed out after the maximum duration"}),
                    ))
                    .await;
                return;
            }
            let fresh: Vec<LiveEvent> = {
                let all = s.events.lock().unwrap();
                let f = all[cursor..]
                    .iter()
                    .filter(|e| groups.contains(&e.group_arn))
                    .filter(|e| {
                        prefixes.is_empty() || prefixes.iter().any(|p| e.stream.starts_with(p))
                    })
                    .cloned()
                    .collect();
                cursor = all.len();
                f
            };
            // Only the newest session samples: an older one may linger until its client's
            // disconnection is noticed.
            let newest = s.sessions.load(Ordering::SeqCst) == session + 1;
            let sampled = newest && s.sample_next.swap(false, Ordering::SeqCst);
            let results: Vec<Value> = fresh
                .iter()
                .enumerate()
                .filter(|(i, _)| !sampled || i % 2 == 0)
                .map(|(_, e)| {
                    json!({
                        "logStreamName": e.stream,
                        "logGroupIdentifier": e.group_arn,
                        "message": e.message,
                        "timestamp": e.timestamp,
                        "ingestionTime": e.ingested,
                    })
                })
                .collect();
            let update = frame(
                "event",
                "sessionUpdate",
                json!({"sessionMetadata": {"sampled": sampled}, "sessionResults": results}),
            );
            if tx.send(update).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/vnd.amazon.eventstream")
        .header("x-amzn-requestid", format!("req-{session}"))
        .body(StreamBody::new(stream).boxed())
        .unwrap())
}

/// Pass a request to moto and its answer back (moto closes each connection: one per request).
async fn forward(req: Request<Incoming>, upstream: u16) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut head = format!(
        "{} {} HTTP/1.1\r\n",
        parts.method,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    for (k, v) in &parts.headers {
        if k == "connection" || k == "content-length" {
            continue;
        }
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or_default()));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut up = std::net::TcpStream::connect(("127.0.0.1", upstream)).ok()?;
        up.write_all(head.as_bytes()).ok()?;
        up.write_all(&body).ok()?;
        crate::read_message(&mut std::io::BufReader::new(up))
    })
    .await
    .ok()
    .flatten();
    let Some((rhead, rbody)) = answer else {
        return Response::builder()
            .status(502)
            .body(Full::new(Bytes::from("moto did not answer")).boxed())
            .unwrap();
    };
    let text = String::from_utf8_lossy(&rhead);
    let mut lines = text.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let mut resp = Response::builder().status(status);
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim();
            if !k.is_empty()
                && !k.eq_ignore_ascii_case("content-length")
                && !k.eq_ignore_ascii_case("connection")
            {
                resp = resp.header(k, v.trim());
            }
        }
    }
    resp.body(Full::new(Bytes::from(rbody)).boxed()).unwrap()
}
