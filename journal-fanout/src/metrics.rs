//! Counters per destination, served as Prometheus text at `/metrics` when
//! `--metrics-address` is set. Sinks reach their counters with [`for_destination`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One destination's counters.
#[derive(Debug, Default)]
pub struct Destination {
    pub name: &'static str,
    /// Journal entries read for this destination (container lines or not).
    pub entries_read: AtomicU64,
    /// Entries skipped because they have no group field (not container lines).
    pub entries_skipped: AtomicU64,
    /// Events the destination acknowledged.
    pub events_delivered: AtomicU64,
    /// Events the destination refused for good (counted, reported, noticed).
    pub events_rejected: AtomicU64,
    /// Journal entries that vanished (rotation, vacuum) before this destination read them.
    pub entries_lost: AtomicU64,
    /// Gaps of unknown size (the journal could not say how many entries vanished).
    pub losses_of_unknown_size: AtomicU64,
    pub batches_delivered: AtomicU64,
    /// Failed attempts that were retried (throttling, server errors, network).
    pub delivery_retries: AtomicU64,
    pub cursor_saves: AtomicU64,
    /// Unix time of the last saved cursor (0 = never).
    pub last_cursor_save_seconds: AtomicU64,
}

fn registry() -> &'static Mutex<Vec<Arc<Destination>>> {
    static R: OnceLock<Mutex<Vec<Arc<Destination>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

static STDIN_REJECTED: AtomicU64 = AtomicU64::new(0);

/// The counters of destination `name` (created on first use).
pub fn for_destination(name: &'static str) -> Arc<Destination> {
    let mut r = registry().lock().unwrap();
    if let Some(d) = r.iter().find(|d| d.name == name) {
        return d.clone();
    }
    let d = Arc::new(Destination {
        name,
        ..Destination::default()
    });
    r.push(d.clone());
    d
}

/// A stdin line that could not be understood.
pub fn stdin_rejected() {
    STDIN_REJECTED.fetch_add(1, Ordering::Relaxed);
}

/// Add to a counter (shorthand for sinks).
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The Prometheus text exposition of every counter.
pub fn render() -> String {
    let dests = registry().lock().unwrap().clone();
    let mut out = String::new();
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&Destination) -> &AtomicU64,
    );
    let series: [Series; 10] = [
        (
            "entries_read_total",
            "counter",
            "Journal entries read.",
            |d| &d.entries_read,
        ),
        (
            "entries_skipped_total",
            "counter",
            "Entries without the group field (not container lines).",
            |d| &d.entries_skipped,
        ),
        (
            "events_delivered_total",
            "counter",
            "Events the destination acknowledged.",
            |d| &d.events_delivered,
        ),
        (
            "events_rejected_total",
            "counter",
            "Events the destination refused for good.",
            |d| &d.events_rejected,
        ),
        (
            "entries_lost_total",
            "counter",
            "Journal entries rotated or vacuumed away before they were shipped.",
            |d| &d.entries_lost,
        ),
        (
            "losses_unknown_size_total",
            "counter",
            "Journal gaps whose size the journal could not tell.",
            |d| &d.losses_of_unknown_size,
        ),
        (
            "batches_delivered_total",
            "counter",
            "Batches delivered.",
            |d| &d.batches_delivered,
        ),
        (
            "delivery_retries_total",
            "counter",
            "Delivery attempts that failed and were retried.",
            |d| &d.delivery_retries,
        ),
        (
            "cursor_saves_total",
            "counter",
            "Cursor checkpoints written.",
            |d| &d.cursor_saves,
        ),
        (
            "last_cursor_save_timestamp_seconds",
            "gauge",
            "When the cursor was last saved (Unix time).",
            |d| &d.last_cursor_save_seconds,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP journal_fanout_{name} {help}");
        let _ = writeln!(out, "# TYPE journal_fanout_{name} {kind}");
        for d in &dests {
            let _ = writeln!(
                out,
                "journal_fanout_{name}{{destination=\"{}\"}} {}",
                d.name,
                get(d).load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP journal_fanout_stdin_lines_rejected_total Lines on stdin that were not {{group,stream,event}} JSON.\n\
         # TYPE journal_fanout_stdin_lines_rejected_total counter\n\
         journal_fanout_stdin_lines_rejected_total {}",
        STDIN_REJECTED.load(Ordering::Relaxed)
    );
    out
}

/// Bind `addr` now (so a taken port fails at start), then answer `GET /metrics` forever.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-address {addr}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                // Read the request head; only its first line matters.
                while n < buf.len() {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
                    ("200 OK", render())
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    }))
}
