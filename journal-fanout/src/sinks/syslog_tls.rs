//! RFC 5424 syslog over TLS (the `tls://` URLs of ecs-logs), for Loggly and LogDNA.
//!
//! Framing: one message per line (LF-terminated), as Loggly's own rsyslog/syslog-ng set-ups
//! send it; the message is compact JSON, so it never holds a raw newline. Syslog has no
//! acknowledgement: a batch counts as delivered once written and flushed. A failed write
//! reconnects (with backoff) and resends the whole batch, and before each batch a dead
//! connection (closed by the receiver meanwhile) is noticed and replaced.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use futures::FutureExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::http::{chain, Backoff};
use super::tls::{is_certificate_error, TlsOptions};
use super::truncate;
use super::Record;
use crate::metrics;

/// Facility `user` (1): container output.
const FACILITY: u8 = 1;

/// One syslog-over-TLS connection with reconnect.
pub struct SyslogTls {
    dest: &'static str,
    host: String,
    port: u16,
    /// `tls://****@host:port`
    shown: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    conn: Option<TlsStream<TcpStream>>,
    backoff: Backoff,
    metrics: Arc<metrics::Destination>,
}

impl SyslogTls {
    pub fn new(
        dest: &'static str,
        host: &str,
        port: u16,
        tls: &TlsOptions,
        metrics: Arc<metrics::Destination>,
    ) -> Result<SyslogTls> {
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| anyhow!("{host:?} is not a valid host name for TLS"))?;
        Ok(SyslogTls {
            dest,
            host: host.to_string(),
            port,
            shown: format!("tls://****@{host}:{port}"),
            server_name,
            connector: TlsConnector::from(Arc::new(tls.client_config()?)),
            conn: None,
            backoff: Backoff::default(),
            metrics,
        })
    }

    /// Writes `frames` (complete lines); retries until they are written and flushed.
    pub async fn send(&mut self, frames: &[u8]) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            let started = std::time::Instant::now();
            let sent = self.try_send(frames).await;
            self.metrics.request(started, sent.is_ok());
            match sent {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.conn = None;
                    if is_certificate_error(&*e) {
                        return Err(anyhow!(
                            "{}: the server's certificate is not trusted ({}); if it is signed by a private CA, pass that CA with --ca-file",
                            self.shown,
                            chain(&*e)
                        ));
                    }
                    let wait = self.backoff.delay(attempt);
                    tracing::warn!(
                        dest = self.dest,
                        "{}: {}; reconnecting and resending in {wait:?}",
                        self.shown,
                        chain(&*e)
                    );
                    metrics::add(&self.metrics.delivery_retries, 1);
                    tokio::time::sleep(wait).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    async fn try_send(
        &mut self,
        frames: &[u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(conn) = &mut self.conn {
            if !alive(conn) {
                tracing::info!(
                    dest = self.dest,
                    "{}: connection closed by the receiver; reconnecting",
                    self.shown
                );
                self.conn = None;
            }
        }
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let tcp = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    TcpStream::connect((self.host.as_str(), self.port)),
                )
                .await
                .map_err(|_| "connect timed out after 10s")??;
                tcp.set_nodelay(true)?;
                let tls = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    self.connector.connect(self.server_name.clone(), tcp),
                )
                .await
                .map_err(|_| format!("TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}"))??;
                self.conn.insert(tls)
            }
        };
        // A receiver that stops reading would otherwise hold this write (and the batch, and
        // the cursor) for ever; after the timeout the connection's state is unknown: drop it.
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            conn.write_all(frames).await?;
            conn.flush().await
        })
        .await;
        match written {
            Ok(r) => r?,
            Err(_) => {
                self.conn = None;
                return Err(format!(
                    "the receiver took no data for {WRITE_TIMEOUT:?}; reconnecting"
                )
                .into());
            }
        }
        Ok(())
    }
}

/// Bounds on each step of a delivery, as the HTTP destinations have (sinks/http.rs).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A receiver never talks back; a read that completes at once means EOF or an error.
fn alive(conn: &mut TlsStream<TcpStream>) -> bool {
    let mut buf = [0u8; 256];
    !matches!(
        conn.read(&mut buf).now_or_never(),
        Some(Ok(0)) | Some(Err(_))
    )
}

/// One RFC 5424 line: `<PRI>1 TIME HOST APP PROCID - SD MSG\n`, MSG being the event's JSON
/// within `limit` bytes.
pub fn format(record: &Record, hostname: &str, sd: &str, limit: usize, out: &mut Vec<u8>) {
    let e = &record.event;
    let pri = FACILITY * 8 + e.level.priority();
    let host = if e.info.host.is_empty() {
        hostname
    } else {
        &e.info.host
    };
    let procid = if e.info.pid > 0 {
        e.info.pid.to_string()
    } else {
        "-".into()
    };
    let head = format!(
        "<{pri}>1 {} {} {} {} - {sd} ",
        ecs_event::format_time(&e.time),
        header_field(host, 255),
        header_field(&record.group, 48),
        header_field(&procid, 128),
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(truncate::event_json(e, limit).as_bytes());
    out.push(b'\n');
}

/// A header field: printable US-ASCII without spaces (others become `_`), bounded, `-` if empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped.
pub fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ecs_event::{Event, Level};

    #[test]
    fn formats_rfc5424_line() {
        let mut e = Event::new(
            Level::Warn,
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 22, 13, 0, 0)
                .unwrap(),
            "a\nb",
        );
        e.info.pid = 42;
        let r = Record {
            group: "my svc".into(),
            stream: "s".into(),
            event: e,
        };
        let mut out = Vec::new();
        format(&r, "vm", "[T@41058 tag=\"x\"]", 1000, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with(
                "<12>1 2026-11-22T13:00:00.000000Z vm my_svc 42 - [T@41058 tag=\"x\"] {"
            ),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(sd_escape(r#"a"b\c]"#), r#"a\"b\\c\]"#);
    }
}
