//! LogDNA (Mezmo) destination.
//!
//! Default transport: the ingest API, `POST {LOGDNA_URL}/logs/ingest?hostname=H&now=MS` with
//! the ingestion key as HTTP basic user (empty password) and a JSON body
//! `{"lines":[{"timestamp","line","app","level","meta":{"stream","info","data"}}]}`, at most
//! 10 MB. `meta` keys always hold the same JSON type (Mezmo skips meta parsing for a line whose
//! key changed type). `LOGDNA_URL=tls://[KEY@]host:port` selects RFC 5424 syslog over TLS with
//! `[logdna@48950 key="KEY"]`.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use url::Url;

use super::http::{Answer, Http, Target};
use super::isolate::{self, Item, Requests};
use super::secret::{mask_userinfo, token_from_env, Env, Secret};
use super::syslog_tls::{self, sd_escape, SyslogTls};
use super::tls::TlsOptions;
use super::truncate::cut;
use super::{Outcome, Record, Sink};
use crate::metrics;

pub const DEFAULT_URL: &str = "https://logs.mezmo.com";
/// Mezmo's documented payload limit.
pub const MAX_REQUEST_BYTES: usize = 10_000_000;
/// Per-line limit: not documented (see protocols.md §6.3); one line may use most of a request.
pub const MAX_LINE_BYTES: usize = MAX_REQUEST_BYTES - 64 * 1024;
/// `{"lines":[` + `]}`
const ENVELOPE: usize = 12;

/// From `LOGDNA_TOKEN`/`LOGDNA_TOKEN_FILE` and `LOGDNA_URL`.
#[derive(Debug, Clone)]
pub struct LogdnaConfig {
    pub key: Secret,
    pub transport: Transport,
}

#[derive(Debug, Clone)]
pub enum Transport {
    /// Base URL to which `/logs/ingest` is appended.
    Ingest(Url),
    Syslog {
        host: String,
        port: u16,
    },
}

impl LogdnaConfig {
    pub fn from_env(env: Env) -> Result<LogdnaConfig> {
        let raw_url = env("LOGDNA_URL").unwrap_or_else(|| DEFAULT_URL.to_string());
        let url = Url::parse(raw_url.trim()).with_context(|| {
            format!(
                "LOGDNA_URL {:?} is not a URL: set it to https://host[:port] or tls://host:port",
                mask_userinfo(&raw_url)
            )
        })?;
        let url_key = (!url.username().is_empty()).then(|| Secret::new(url.username()));
        let env_key = token_from_env(env, "LOGDNA_TOKEN")?;
        let key = match (url_key, env_key) {
            (Some(u), Some(e)) if u != e => {
                bail!("LOGDNA_URL carries a key and LOGDNA_TOKEN holds a different one: keep one of them")
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => bail!(
                "the logdna destination needs an ingestion key: set LOGDNA_TOKEN (or LOGDNA_TOKEN_FILE)"
            ),
        };
        if key.expose().contains(':') {
            bail!("LOGDNA_TOKEN contains ':' and cannot be an ingestion key");
        }
        let transport = match url.scheme() {
            "https" | "http" => {
                if url.host_str().is_none() {
                    bail!("LOGDNA_URL has no host: set it to https://host[:port]");
                }
                let mut base = url.clone();
                base.set_username("").ok();
                base.set_query(None);
                Transport::Ingest(base)
            }
            "tls" => {
                let host = url.host_str().context("LOGDNA_URL tls://host:port has no host")?;
                let port = url.port().unwrap_or(6514);
                Transport::Syslog { host: host.to_string(), port }
            }
            other => bail!(
                "LOGDNA_URL scheme {other:?} is not supported: use https:// (ingest API), http:// (local receivers) or tls:// (syslog over TLS)"
            ),
        };
        Ok(LogdnaConfig { key, transport })
    }

    /// The endpoint as it may be shown.
    pub fn shown(&self) -> String {
        match &self.transport {
            Transport::Ingest(base) => {
                format!("{}/logs/ingest", base.as_str().trim_end_matches('/'))
            }
            Transport::Syslog { host, port } => format!("tls://****@{host}:{port}"),
        }
    }
}

/// The LogDNA destination.
pub struct Logdna {
    inner: Inner,
}

enum Inner {
    Ingest(Box<Ingest>),
    Syslog {
        conn: Box<SyslogTls>,
        key: Secret,
        hostname: String,
    },
}

impl Logdna {
    /// From the process environment, for `--dst logdna` (errors name the variable to set).
    pub fn from_env(
        tls: &TlsOptions,
        hostname: &str,
        metrics: Arc<metrics::Destination>,
    ) -> Result<Logdna> {
        let config = LogdnaConfig::from_env(&super::secret::process_env)?;
        tracing::info!(destination = "logdna", endpoint = %config.shown(), "sending");
        Logdna::new(config, tls, hostname, metrics)
    }

    pub fn new(
        config: LogdnaConfig,
        tls: &TlsOptions,
        hostname: &str,
        metrics: Arc<metrics::Destination>,
    ) -> Result<Logdna> {
        // The ingest API refuses every request without a hostname (400), which would look
        // like every event being poisoned.
        if hostname.trim().is_empty() {
            bail!("the logdna destination needs this machine's host name: set --hostname");
        }
        let inner = match config.transport {
            Transport::Ingest(ref base) => Inner::Ingest(Box::new(Ingest {
                http: Http::new(tls, metrics)?,
                target: Target {
                    dest: "logdna",
                    shown: config.shown(),
                    config_vars: "LOGDNA_TOKEN and LOGDNA_URL",
                    token: config.key.clone(),
                },
                url: Url::parse(&format!(
                    "{}/logs/ingest",
                    base.as_str().trim_end_matches('/')
                ))
                .context("LOGDNA_URL does not make an ingest URL: set it to https://host[:port]")?,
                hostname: hostname.to_string(),
                no_key: "".into(),
            })),
            Transport::Syslog { ref host, port } => Inner::Syslog {
                conn: Box::new(SyslogTls::new("logdna", host, port, tls, metrics)?),
                key: config.key.clone(),
                hostname: hostname.to_string(),
            },
        };
        Ok(Logdna { inner })
    }
}

impl Sink for Logdna {
    fn name(&self) -> &'static str {
        "logdna"
    }

    async fn deliver(&mut self, batch: Vec<std::sync::Arc<Record>>) -> Result<Outcome> {
        match &mut self.inner {
            Inner::Ingest(ingest) => isolate::deliver(&mut **ingest, &batch).await,
            Inner::Syslog {
                conn,
                key,
                hostname,
            } => {
                let sd = format!("[logdna@48950 key=\"{}\"]", sd_escape(key.expose()));
                let mut frames = Vec::new();
                for r in &batch {
                    syslog_tls::format(r, hostname, &sd, MAX_LINE_BYTES, &mut frames);
                }
                conn.send(&frames).await?;
                Ok(Outcome::default())
            }
        }
    }
}

/// The ingest API: request building and the service call.
struct Ingest {
    http: Http,
    target: Target,
    /// Parsed once: a parse per request was a measurable share of a request's CPU.
    url: Url,
    hostname: String,
    /// Every line shares one request key (the ingest API has no per-request tags).
    no_key: std::sync::Arc<str>,
}

/// One entry of `lines`, serialized straight from the record (no `Value` tree on the common
/// path). The line is the message (the whole event's JSON when it has none); `meta` has fixed
/// keys with fixed types.
#[derive(serde::Serialize)]
struct Line<'a> {
    app: &'a str,
    level: &'a str,
    line: std::borrow::Cow<'a, str>,
    meta: Meta<'a>,
    timestamp: i64,
}

#[derive(serde::Serialize)]
struct Meta<'a> {
    data: &'a Map<String, Value>,
    info: &'a ecs_event::Info,
    stream: &'a str,
}

fn line(record: &Record) -> Line<'_> {
    let e = &record.event;
    Line {
        app: &record.group,
        level: e.level.as_str(),
        line: if e.message.is_empty() {
            e.to_json().into()
        } else {
            e.message.as_str().into()
        },
        meta: Meta {
            data: &e.data,
            info: &e.info,
            stream: &record.stream,
        },
        timestamp: e.time.timestamp_millis(),
    }
}

/// `line(record)` as JSON, written by hand as serde writes it (`ecs_event::write_str`: the
/// escaping was the largest item of this destination's CPU).
fn write_line(out: &mut Vec<u8>, l: &Line) {
    out.extend_from_slice(b"{\"app\":");
    ecs_event::write_str(out, l.app);
    out.extend_from_slice(b",\"level\":");
    ecs_event::write_str(out, l.level);
    out.extend_from_slice(b",\"line\":");
    ecs_event::write_str(out, &l.line);
    out.extend_from_slice(b",\"meta\":{\"data\":");
    ecs_event::write_map(out, l.meta.data);
    out.extend_from_slice(b",\"info\":");
    l.meta.info.write_json(out);
    out.extend_from_slice(b",\"stream\":");
    ecs_event::write_str(out, l.meta.stream);
    out.extend_from_slice(b"},\"timestamp\":");
    out.extend_from_slice(itoa::Buffer::new().format(l.timestamp).as_bytes());
    out.push(b'}');
}

fn render_line(record: &Record) -> String {
    let l = line(record);
    let mut out = Vec::with_capacity(record.event.message.len() + 256);
    write_line(&mut out, &l);
    let s = String::from_utf8(out).expect("only UTF-8 is written");
    if s.len() <= MAX_LINE_BYTES {
        return s;
    }
    let mut v = serde_json::to_value(&l).expect("a line always serializes");
    // Too big: shorten the line, then replace data by a (cut) string of it under its own key,
    // so `meta.data` stays an object.
    let over = s.len() - MAX_LINE_BYTES;
    let text = v["line"].as_str().unwrap_or_default().to_string();
    if text.len() > over + 256 {
        v["line"] = Value::String(cut(&text, text.len() - over - 256));
    } else {
        let data = Value::Object(record.event.data.clone()).to_string();
        let mut m = Map::new();
        m.insert(
            "journal_fanout_truncated".into(),
            Value::String(cut(&data, MAX_LINE_BYTES / 2)),
        );
        v["meta"]["data"] = Value::Object(m);
        v["line"] = Value::String(cut(&text, MAX_LINE_BYTES / 4));
    }
    v.to_string()
}

impl Requests for Ingest {
    fn max_request_bytes(&self) -> usize {
        MAX_REQUEST_BYTES
    }

    fn framing(&self) -> (usize, usize) {
        (1, ENVELOPE) // ',' between lines
    }

    fn render(&mut self, record: &Record) -> Item {
        Item {
            key: self.no_key.clone(),
            body: render_line(record),
        }
    }

    async fn send(&self, _key: &str, items: &[&Item]) -> Result<Answer> {
        let mut body =
            String::with_capacity(ENVELOPE + items.iter().map(|i| i.body.len() + 1).sum::<usize>());
        body.push_str("{\"lines\":[");
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&item.body);
        }
        body.push_str("]}");
        let body = bytes::Bytes::from(body);
        let (url, hostname, key) = (&self.url, &self.hostname, self.target.token.expose());
        self.http
            .send(&self.target, |c| {
                let now = chrono::Utc::now().timestamp_millis().to_string();
                c.post(url.clone())
                    .query(&[("hostname", hostname.as_str()), ("now", now.as_str())])
                    .basic_auth(key, Some(""))
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/json; charset=UTF-8",
                    )
                    .body(body.clone())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecs_event::{Event, Level};
    use serde_json::json;

    #[test]
    fn lines_are_written_as_serde_writes_them() {
        let mut e = Event::new(Level::Error, chrono::Utc::now(), "a \"line\"\twith ✓");
        e.info.host = "h".into();
        e.info.pid = 7;
        e.data.insert("k".into(), json!({"n": [1, "x\n"]}));
        let mut empty = e.clone();
        empty.message.clear();
        for event in [e, empty] {
            let r = Record {
                group: "svc \"a\"".into(),
                stream: "task\\1".into(),
                event,
            };
            let mut out = Vec::new();
            write_line(&mut out, &line(&r));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&line(&r)).unwrap()
            );
        }
    }

    #[test]
    fn config() {
        let env = |k: &str| (k == "LOGDNA_TOKEN").then(|| "k3y".to_string());
        let c = LogdnaConfig::from_env(&env).unwrap();
        assert_eq!(c.shown(), "https://logs.mezmo.com/logs/ingest");
        assert!(!format!("{c:?}").contains("k3y"));
        let e = LogdnaConfig::from_env(&|_: &str| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("set LOGDNA_TOKEN"), "{e}");
        let env =
            |k: &str| (k == "LOGDNA_URL").then(|| "tls://k3y@syslog-a.logdna.com:6514".to_string());
        let c = LogdnaConfig::from_env(&env).unwrap();
        assert_eq!(c.key.expose(), "k3y");
        assert_eq!(c.shown(), "tls://****@syslog-a.logdna.com:6514");
    }

    #[test]
    fn line_shape_and_meta_types() {
        let mut e = Event::new(Level::Warn, chrono::Utc::now(), "");
        e.data.insert("k".into(), json!(1));
        let r = Record {
            group: "g".into(),
            stream: "s".into(),
            event: e,
        };
        let v: Value = serde_json::from_str(&render_line(&r)).unwrap();
        assert_eq!(v["app"], "g");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["meta"]["stream"], "s");
        assert_eq!(v["meta"]["data"]["k"], 1);
        assert!(v["meta"]["info"].is_object());
        assert!(v["line"].as_str().unwrap().starts_with('{'));
    }

    #[test]
    fn written_line_is_the_value_line() {
        // The line written straight from the record is the documented shape, with and without
        // a message, data and info.
        let mut with = Event::new(Level::Info, chrono::Utc::now(), "hello \"x\"\n\u{1}é");
        with.data.insert("n".into(), json!({"a": [1, 2]}));
        with.info.host = "h".into();
        with.info.pid = 7;
        for e in [with, Event::new(Level::Debug, chrono::Utc::now(), "")] {
            let text = if e.message.is_empty() {
                e.to_json()
            } else {
                e.message.clone()
            };
            let expected = json!({
                "timestamp": e.time.timestamp_millis(),
                "line": text,
                "app": "grp",
                "level": e.level.as_str(),
                "meta": {"stream": "str", "info": e.info, "data": e.data},
            });
            let r = Record {
                group: "grp".into(),
                stream: "str".into(),
                event: e,
            };
            let written: Value = serde_json::from_str(&render_line(&r)).unwrap();
            assert_eq!(written, expected);
        }
    }
}
