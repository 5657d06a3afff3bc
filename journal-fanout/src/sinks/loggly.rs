//! Loggly destination.
//!
//! Default transport: the HTTPS bulk endpoint, `POST {LOGGLY_URL}/bulk/TOKEN/tag/TAGS/`, one
//! event (the event's JSON) per line, at most 1 MB per event (longer ones truncated with a
//! marker) and 5 MB per request. Tags are the group, the stream and `LOGGLY_TAGS`, made valid
//! for Loggly; a request holds events of one tag set. `LOGGLY_URL=tls://TOKEN@host:port`
//! (ecs-logs' form) selects RFC 5424 syslog over TLS with `[TOKEN@41058 tag="…"]`.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use url::Url;

use super::http::{Answer, Http, Target};
use super::isolate::{self, Item, Requests};
use super::secret::{mask_userinfo, token_from_env, Env, Secret};
use super::syslog_tls::{self, sd_escape, SyslogTls};
use super::tls::TlsOptions;
use super::{Outcome, Record, Sink};
use crate::metrics;

pub const DEFAULT_URL: &str = "https://logs-01.loggly.com";
/// Loggly's documented limits (bulk): 1 MB per event, 5 MB per request.
pub const MAX_EVENT_BYTES: usize = 1_000_000;
pub const MAX_REQUEST_BYTES: usize = 5_000_000;

/// Where and how to send, from `LOGGLY_TOKEN`/`LOGGLY_TOKEN_FILE`, `LOGGLY_URL`, `LOGGLY_TAGS`.
#[derive(Debug, Clone)]
pub struct LogglyConfig {
    pub token: Secret,
    pub transport: Transport,
    /// Extra tags for every event, already valid.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Transport {
    /// Base URL to which `/bulk/TOKEN/tag/TAGS/` is appended.
    Bulk(Url),
    /// RFC 5424 over TLS.
    Syslog { host: String, port: u16 },
}

impl LogglyConfig {
    pub fn from_env(env: Env) -> Result<LogglyConfig> {
        let raw_url = env("LOGGLY_URL").unwrap_or_else(|| DEFAULT_URL.to_string());
        let url = Url::parse(raw_url.trim()).with_context(|| {
            format!(
                "LOGGLY_URL {:?} is not a URL: set it to https://host[:port] or tls://TOKEN@host:port",
                mask_userinfo(&raw_url)
            )
        })?;
        let url_token = (!url.username().is_empty()).then(|| Secret::new(url.username()));
        let env_token = token_from_env(env, "LOGGLY_TOKEN")?;
        let token = match (url_token, env_token) {
            (Some(u), Some(e)) if u != e => {
                bail!("LOGGLY_URL carries a token and LOGGLY_TOKEN holds a different one: keep one of them")
            }
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => bail!(
                "the loggly destination needs a customer token: set LOGGLY_TOKEN (or LOGGLY_TOKEN_FILE)"
            ),
        };
        if !token
            .expose()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!(
                "LOGGLY_TOKEN is not a Loggly customer token (expected letters, digits and dashes)"
            );
        }
        let transport = match url.scheme() {
            "https" | "http" => {
                if url.host_str().is_none() {
                    bail!("LOGGLY_URL has no host: set it to https://host[:port]");
                }
                let mut base = url.clone();
                base.set_username("").ok();
                base.set_query(None);
                Transport::Bulk(base)
            }
            "tls" => {
                let host = url.host_str().context("LOGGLY_URL tls://TOKEN@host:port has no host")?;
                let port = url.port().unwrap_or(6514);
                Transport::Syslog { host: host.to_string(), port }
            }
            other => bail!(
                "LOGGLY_URL scheme {other:?} is not supported: use https:// (bulk API), http:// (local receivers) or tls:// (syslog over TLS)"
            ),
        };
        let tags = env("LOGGLY_TAGS")
            .unwrap_or_default()
            .split(',')
            .filter_map(tag)
            .collect();
        Ok(LogglyConfig {
            token,
            transport,
            tags,
        })
    }

    /// The endpoint as it may be shown (token masked).
    pub fn shown(&self) -> String {
        match &self.transport {
            Transport::Bulk(base) => {
                format!("{}/bulk/****/tag/…/", base.as_str().trim_end_matches('/'))
            }
            Transport::Syslog { host, port } => format!("tls://****@{host}:{port}"),
        }
    }
}

/// A Loggly tag: only alphanumerics, `-`, `.` and `_` are valid (others become `_`); it must
/// start with an alphanumeric and is kept to 64 characters. `None` if nothing is left.
pub fn tag(s: &str) -> Option<String> {
    let t: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    (!t.is_empty()).then_some(t)
}

/// The Loggly destination.
pub struct Loggly {
    inner: Inner,
}

enum Inner {
    Bulk(Bulk),
    Syslog {
        conn: Box<SyslogTls>,
        token: Secret,
        tags: Vec<String>,
        hostname: String,
    },
}

impl Loggly {
    /// From the process environment, for `--dst loggly` (errors name the variable to set).
    pub fn from_env(
        tls: &TlsOptions,
        hostname: &str,
        metrics: Arc<metrics::Destination>,
    ) -> Result<Loggly> {
        let config = LogglyConfig::from_env(&super::secret::process_env)?;
        tracing::info!(destination = "loggly", endpoint = %config.shown(), "sending");
        Loggly::new(config, tls, hostname, metrics)
    }

    pub fn new(
        config: LogglyConfig,
        tls: &TlsOptions,
        hostname: &str,
        metrics: Arc<metrics::Destination>,
    ) -> Result<Loggly> {
        let inner = match config.transport {
            Transport::Bulk(ref base) => Inner::Bulk(Bulk {
                http: Http::new(tls, metrics)?,
                target: Target {
                    dest: "loggly",
                    shown: config.shown(),
                    config_vars: "LOGGLY_TOKEN and LOGGLY_URL",
                    token: config.token.clone(),
                },
                base: base.as_str().trim_end_matches('/').to_string(),
                tags: config.tags.clone(),
                keys: Default::default(),
                urls: Default::default(),
            }),
            Transport::Syslog { ref host, port } => Inner::Syslog {
                conn: Box::new(SyslogTls::new("loggly", host, port, tls, metrics)?),
                token: config.token.clone(),
                tags: config.tags.clone(),
                hostname: hostname.to_string(),
            },
        };
        Ok(Loggly { inner })
    }
}

impl Sink for Loggly {
    fn name(&self) -> &'static str {
        "loggly"
    }

    async fn deliver(&mut self, batch: Vec<std::sync::Arc<Record>>) -> Result<Outcome> {
        match &mut self.inner {
            Inner::Bulk(bulk) => isolate::deliver(bulk, &batch).await,
            Inner::Syslog {
                conn,
                token,
                tags,
                hostname,
            } => {
                let mut frames = Vec::new();
                for r in &batch {
                    let sd = format!(
                        "[{}@41058{}]",
                        token.expose(),
                        event_tags(r, tags)
                            .iter()
                            .map(|t| format!(" tag=\"{}\"", sd_escape(t)))
                            .collect::<String>()
                    );
                    syslog_tls::format(r, hostname, &sd, MAX_EVENT_BYTES, &mut frames);
                }
                conn.send(&frames).await?;
                Ok(Outcome::default())
            }
        }
    }
}

/// Group, stream, then the configured tags; valid and without repeats.
fn event_tags(r: &Record, extra: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::with_capacity(2 + extra.len());
    for t in [tag(&r.group), tag(&r.stream)]
        .into_iter()
        .flatten()
        .chain(extra.iter().cloned())
    {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags
}

/// The bulk API: request building and the service call.
struct Bulk {
    http: Http,
    target: Target,
    base: String,
    tags: Vec<String>,
    /// Tag keys by group and stream: a batch has few of them, and building one is several
    /// allocations (bounded: cleared past `KEYS_KEPT`).
    keys: HashMap<String, HashMap<String, Arc<str>>>,
    /// The request URL of each key, parsed when the key is made: parsing it per request (host
    /// and IDNA checks included) was about a tenth of a request's CPU.
    urls: HashMap<Arc<str>, Url>,
}

/// Most groups whose tag keys [`Bulk`] keeps.
const KEYS_KEPT: usize = 1024;

impl Bulk {
    fn key(&mut self, r: &Record) -> Arc<str> {
        if let Some(k) = self.keys.get(&r.group).and_then(|s| s.get(&r.stream)) {
            return k.clone();
        }
        if self.keys.len() >= KEYS_KEPT || self.urls.len() >= KEYS_KEPT * 4 {
            self.keys.clear();
            self.urls.clear();
        }
        let k: Arc<str> = event_tags(r, &self.tags).join(",").into();
        if let Ok(url) = Url::parse(&self.url(&k)) {
            self.urls.insert(k.clone(), url);
        }
        let streams = self.keys.entry(r.group.clone()).or_default();
        if streams.len() >= KEYS_KEPT {
            streams.clear();
        }
        streams.insert(r.stream.clone(), k.clone());
        k
    }

    fn url(&self, key: &str) -> String {
        if key.is_empty() {
            format!("{}/bulk/{}/", self.base, self.target.token.expose())
        } else {
            format!(
                "{}/bulk/{}/tag/{key}/",
                self.base,
                self.target.token.expose()
            )
        }
    }
}

impl Requests for Bulk {
    fn max_request_bytes(&self) -> usize {
        MAX_REQUEST_BYTES
    }

    fn framing(&self) -> (usize, usize) {
        (1, 0) // '\n' between events
    }

    fn render(&mut self, record: &Record) -> Item {
        Item {
            key: self.key(record),
            body: super::truncate::event_json(&record.event, MAX_EVENT_BYTES),
        }
    }

    async fn send(&self, key: &str, items: &[&Item]) -> Result<Answer> {
        // Made by `key` unless the cache was cleared since; a key is valid URL text.
        let url = match self.urls.get(key) {
            Some(u) => u.clone(),
            None => Url::parse(&self.url(key))
                .with_context(|| format!("tags {key:?} do not make a valid Loggly URL"))?,
        };
        let mut body = String::with_capacity(items.iter().map(|i| i.body.len() + 1).sum());
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                body.push('\n');
            }
            body.push_str(&item.body);
        }
        let body = bytes::Bytes::from(body);
        self.http
            .send(&self.target, |c| {
                c.post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "text/plain")
                    .body(body.clone())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = LogglyConfig::from_env(&env(&[
            ("LOGGLY_TOKEN", "abc-1"),
            ("LOGGLY_TAGS", "a b, ,x"),
        ]))
        .unwrap();
        assert!(
            matches!(&c.transport, Transport::Bulk(u) if u.as_str() == "https://logs-01.loggly.com/")
        );
        assert_eq!(c.tags, vec!["a_b", "x"]);
        assert_eq!(c.shown(), "https://logs-01.loggly.com/bulk/****/tag/…/");
        assert!(!format!("{c:?}").contains("abc-1"));

        let e = LogglyConfig::from_env(&env(&[])).unwrap_err().to_string();
        assert!(e.contains("set LOGGLY_TOKEN"), "{e}");
        let e = LogglyConfig::from_env(&env(&[("LOGGLY_TOKEN", "t"), ("LOGGLY_URL", "ftp://h")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("LOGGLY_URL scheme"), "{e}");
        let e = LogglyConfig::from_env(&env(&[("LOGGLY_URL", "tls://se cret@h:1")])).unwrap_err();
        assert!(!format!("{e:#}").contains("se cret"), "{e:#}");

        let c =
            LogglyConfig::from_env(&env(&[("LOGGLY_URL", "tls://tok@logs-01.loggly.com:6514")]))
                .unwrap();
        assert_eq!(c.token.expose(), "tok");
        assert!(
            matches!(&c.transport, Transport::Syslog { host, port: 6514 } if host == "logs-01.loggly.com")
        );
    }

    #[test]
    fn tags_are_valid() {
        assert_eq!(tag("my/service:v1").as_deref(), Some("my_service_v1"));
        assert_eq!(tag("__x").as_deref(), Some("x"));
        assert_eq!(tag("///"), None);
        assert_eq!(tag(&"a".repeat(100)).unwrap().len(), 64);
    }
}
