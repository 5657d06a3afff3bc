//! Operational plumbing shared by the suite's daemons (`log-proxy`, `journal-fanout`):
//! diagnostics to stderr, systemd readiness and watchdog, and a Prometheus text endpoint.
//!
//! Kept apart from the programs so each of them reads as its data flow only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub mod exit;
pub mod hostcheck;
mod liveness;
pub use exit::{config, config_error, ConfigError};
mod metrics;
pub mod watch;
pub use liveness::{Liveness, Part, Stalled};
pub use metrics::{encode, registry, ProcessCollector};
/// The metrics crate the daemons register their figures with (one registry per process).
pub use prometheus_client;

/// `info`, except the AWS SDK's own chatter: its credential and region providers warn at
/// length (IMDS retries) before the one error the program itself reports.
pub const DEFAULT_FILTER: &str =
    "info,aws_config=error,aws_smithy_runtime=error,aws_smithy_runtime_api=error,aws_sdk_cloudwatchlogs=error";

/// Structured diagnostics on stderr (logfmt-like `key=value` lines), level from `RUST_LOG`
/// (default `info`). stdout stays free for data.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// Tell systemd (when run under it with `Type=notify`) that the service is ready, and start
/// pinging its watchdog at half the configured interval. Outside systemd this does nothing.
///
/// Each ping first asks `liveness` whether every watched part is beating (or idle); while one
/// has stalled for half the interval (at least [`MIN_STALL`]) there is no ping, an error
/// names the part, and systemd restarts the service once the interval runs out.
pub fn notify_ready(liveness: Liveness) -> Watchdog {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    liveness.set_ready();
    let watchdog = Watchdog {
        stopping: Arc::new(AtomicBool::new(false)),
    };
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = Duration::from_micros(usec / 2);
        let limit = period.max(MIN_STALL);
        liveness.set_limit(limit);
        let stopping = watchdog.stopping.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                // systemd stops watching once told STOPPING=1, and the loops wind down then.
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let stalled = liveness.stalled(limit);
                if stalled.is_empty() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    continue;
                }
                for s in &stalled {
                    tracing::error!(
                        part = %s.name,
                        stalled_for = ?s.for_,
                        "no progress: not pinging the systemd watchdog, so systemd will restart \
                         the service (WatchdogSec); if this repeats, report it with this log"
                    );
                }
            })
            .expect("spawn watchdog thread");
    }
    watchdog
}

/// The readiness and watchdog side of a running daemon, from [`notify_ready`].
pub struct Watchdog {
    stopping: Arc<AtomicBool>,
}

impl Watchdog {
    /// Tell systemd the service is stopping, and stop judging progress: the loops end now.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
}

/// Loops beat at least this often (the slowest: a retry back-off of 1 s), so no shorter stall
/// counts, however short `WatchdogSec=` is.
pub const MIN_STALL: Duration = Duration::from_secs(5);

/// Serve the registry's OpenMetrics text at `GET /metrics` on `addr` in the background of the
/// current tokio runtime, with `GET /healthz` (200 while every watched part of `liveness`
/// beats or idles, 503 naming the stalled ones: what the watchdog judges) and `GET /readyz`
/// (200 once the daemon called [`notify_ready`], 503 before); any other path answers 404. The
/// address is bound before this returns, so a bad or taken `--metrics-address` fails at
/// start; a later failure of the endpoint is logged (the daemon goes on without it).
pub async fn start_metrics(
    addr: &str,
    registry: Arc<prometheus_client::registry::Registry>,
    liveness: Liveness,
) -> anyhow::Result<()> {
    let parsed: SocketAddr = addr.parse().with_context(|| {
        format!("--metrics-address {addr:?} is not HOST:PORT (e.g. 127.0.0.1:9102)")
    })?;
    let listener = TcpListener::bind(parsed)
        .await
        .with_context(|| format!("cannot listen for metrics on {parsed}"))?;
    tokio::spawn(async move {
        if let Err(e) = serve_metrics_on(listener, registry, liveness).await {
            tracing::error!("the metrics endpoint on {parsed} stopped: {e:#}");
        }
    });
    Ok(())
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to one request head: status, content type, body.
fn answer(
    head: &str,
    registry: &prometheus_client::registry::Registry,
    liveness: &Liveness,
) -> (&'static str, &'static str, String) {
    let path = head
        .strip_prefix("GET ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("");
    match path {
        "/metrics" => ("200 OK", OPENMETRICS, encode(registry)),
        "/healthz" => {
            let stalled = liveness.stalled(liveness.limit());
            if stalled.is_empty() {
                ("200 OK", TEXT, "ok\n".to_string())
            } else {
                let names: Vec<String> = stalled
                    .iter()
                    .map(|s| format!("{} (no progress for {:.1?})", s.name, s.for_))
                    .collect();
                (
                    "503 Service Unavailable",
                    TEXT,
                    format!("stalled: {}\n", names.join(", ")),
                )
            }
        }
        "/readyz" if liveness.is_ready() => ("200 OK", TEXT, "ready\n".to_string()),
        "/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "starting: not listening yet\n".to_string(),
        ),
        _ => (
            "404 Not Found",
            TEXT,
            "not found: metrics are at /metrics, health at /healthz and /readyz\n".to_string(),
        ),
    }
}

async fn serve_metrics_on(
    listener: TcpListener,
    registry: Arc<prometheus_client::registry::Registry>,
    liveness: Liveness,
) -> anyhow::Result<()> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let (registry, liveness) = (registry.clone(), liveness.clone());
        tokio::spawn(async move {
            // A scrape or probe is one small GET; read the head, answer, close.
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(k)) => {
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, kind, body) = answer(&head, &registry, &liveness);
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

/// The signals a daemon acts on, installed together so none of them keeps its default action
/// (SIGHUP's is to terminate: operators send it by habit, `systemctl reload`, logrotate).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: drain and stop.
    Stop(&'static str),
    /// SIGHUP: reload the configuration file, never stop.
    Reload,
}

impl Signals {
    /// Install the handlers (needs a tokio runtime with signals enabled).
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Run `fut` on a new current-thread runtime on its own OS thread (for programs whose hot
/// path is plain threads and only their side jobs are async).
pub fn spawn_runtime_thread<F>(name: &str, fut: F) -> std::thread::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build tokio runtime")
                .block_on(fut)
        })
        .expect("spawn runtime thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_names_the_stalled_part_and_recovers_readyz_follows_readiness() {
        let registry = registry("t", "0.1.0 (rev x)");
        let l = Liveness::new();
        l.set_limit(Duration::from_millis(300));
        let writer = l.part("journald writer");
        assert_eq!(
            answer("GET /readyz HTTP/1.1", &registry, &l).0,
            "503 Service Unavailable"
        );
        l.set_ready();
        assert_eq!(answer("GET /readyz HTTP/1.1", &registry, &l).0, "200 OK");
        assert_eq!(answer("GET /healthz HTTP/1.1", &registry, &l).0, "200 OK");
        std::thread::sleep(Duration::from_millis(700));
        let (status, _, body) = answer("GET /healthz HTTP/1.1", &registry, &l);
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("journald writer"), "{body}");
        writer.beat();
        assert_eq!(answer("GET /healthz HTTP/1.1", &registry, &l).0, "200 OK");
        assert_eq!(
            answer("GET /health HTTP/1.1", &registry, &l).0,
            "404 Not Found"
        );
        let (status, kind, body) = answer("GET /metrics HTTP/1.1", &registry, &l);
        assert_eq!((status, kind), ("200 OK", OPENMETRICS));
        assert!(body.contains("t_build_info"), "{body}");
    }
}
