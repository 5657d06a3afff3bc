//! The HTTP service call shared by the Loggly and LogDNA sinks, and its retry policy:
//! 2xx accepted; 429, 408, 5xx and network errors retried forever with exponential backoff and
//! jitter (a `Retry-After` from the server wins); 401/403/404/405 and redirects are
//! configuration faults (an error: the destination stops, its cursor stays put); any other
//! 4xx refuses this request only, and the caller splits it to find the offending events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use reqwest::{Client, RequestBuilder, StatusCode};

use super::secret::Secret;
use super::tls::{is_certificate_error, TlsOptions};
use crate::metrics;

/// What the service said about one request, once transient failures are behind us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    /// Refused for good (a 4xx): why, as the operator should read it.
    Refused(String),
}

/// Where requests go, as they may be shown (token masked) and how to fix a fault.
pub struct Target {
    /// Destination name (`loggly`, `logdna`).
    pub dest: &'static str,
    /// Endpoint with the token masked, for messages.
    pub shown: String,
    /// The variables an operator changes to fix a configuration fault.
    pub config_vars: &'static str,
    /// Scrubbed from any text a server sends back.
    pub token: Secret,
}

/// An HTTP client with verified TLS and the retry policy.
pub struct Http {
    client: Client,
    backoff: Backoff,
    metrics: Arc<metrics::Destination>,
    /// Set while requests fail. Several requests may be in flight (one per Loggly tag set):
    /// the one that found the service failing reports each of its retries, the others retry
    /// quietly, so an outage is one warning per retry, not one per request in flight.
    failing: AtomicBool,
}

impl Http {
    pub fn new(tls: &TlsOptions, metrics: Arc<metrics::Destination>) -> Result<Http> {
        let mut config = tls.client_config()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = Client::builder()
            .use_preconfigured_tls(config)
            // A redirect would carry the token elsewhere; treat it as a configuration fault.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| anyhow!("cannot build the HTTP client: {}", e.without_url()))?;
        Ok(Http {
            client,
            backoff: Backoff::default(),
            metrics,
            failing: AtomicBool::new(false),
        })
    }

    /// Sends the request `build` makes (called once per attempt) until the service accepts
    /// or refuses it; transient failures are retried indefinitely.
    pub async fn send(
        &self,
        target: &Target,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Answer> {
        let mut attempt = 0u32;
        let mut reporter = false;
        loop {
            let started = std::time::Instant::now();
            let sent = build(&self.client).send().await;
            self.metrics.request(
                started,
                sent.as_ref().is_ok_and(|r| r.status().is_success()),
            );
            let wait = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(&resp);
                    if status.is_success() {
                        drain(resp).await;
                        if self.failing.swap(false, Ordering::Relaxed) {
                            tracing::info!(dest = target.dest, "{} accepts again", target.shown);
                        }
                        return Ok(Answer::Accepted);
                    }
                    let body = excerpt(&target.token.scrub(&resp.text().await.unwrap_or_default()));
                    match classify(status) {
                        Class::Transient => {
                            let wait = retry_after.unwrap_or_else(|| self.backoff.delay(attempt));
                            reporter |= !self.failing.swap(true, Ordering::Relaxed);
                            if reporter {
                                tracing::warn!(
                                    dest = target.dest,
                                    "{} answered HTTP {status} ({body}); retrying in {wait:?}",
                                    target.shown
                                );
                            }
                            wait
                        }
                        Class::Config => {
                            return Err(anyhow!(
                                "{} answered HTTP {status} ({body}): the {} configuration is wrong; check {}",
                                target.shown,
                                target.dest,
                                target.config_vars
                            ))
                        }
                        Class::Refused => {
                            // The service answers: whoever reports an outage stops.
                            self.failing.store(false, Ordering::Relaxed);
                            return Ok(Answer::Refused(format!("HTTP {status}: {body}")))
                        }
                    }
                }
                Err(e) => {
                    let e = e.without_url();
                    if is_certificate_error(&e) {
                        return Err(anyhow!(
                            "{}: the server's certificate is not trusted ({}); if it is signed by a private CA, pass that CA with --ca-file",
                            target.shown,
                            chain(&e)
                        ));
                    }
                    let wait = self.backoff.delay(attempt);
                    reporter |= !self.failing.swap(true, Ordering::Relaxed);
                    if reporter {
                        tracing::warn!(
                            dest = target.dest,
                            "{} unreachable ({}); retrying in {wait:?}",
                            target.shown,
                            chain(&e)
                        );
                    }
                    wait
                }
            };
            metrics::add(&self.metrics.delivery_retries, 1);
            tokio::time::sleep(wait).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

/// Reads an accepted answer's (small) body to its end. A response dropped unread closes its
/// connection, so every request paid a new TCP and TLS handshake (measured: about 5 ms of CPU
/// per request against a local receiver, before TLS). A body over 64 KiB is left unread.
async fn drain(mut resp: reqwest::Response) {
    let mut read = 0usize;
    while let Ok(Some(chunk)) = resp.chunk().await {
        read += chunk.len();
        if read > 64 * 1024 {
            break;
        }
    }
}

enum Class {
    Transient,
    Config,
    Refused,
}

fn classify(status: StatusCode) -> Class {
    match status.as_u16() {
        408 | 429 => Class::Transient,
        401 | 403 | 404 | 405 => Class::Config,
        300..=399 => Class::Config,
        400..=499 => Class::Refused,
        _ => Class::Transient,
    }
}

/// `Retry-After` in seconds (HTTP dates are rare from log services; they fall back to the
/// backoff). Capped so a confused server cannot park us for a day.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(600)))
}

fn excerpt(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "empty body".into();
    }
    let mut end = body.len().min(200);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].replace(['\n', '\r'], " ")
}

/// An error and its causes on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// Exponential backoff with jitter: attempt n waits a random time in [d/2, d] with
/// d = min(base * 2^n, max), so many agents recovering together do not stampede.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let half = d / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Backoff::default();
        for a in 0..40 {
            let d = b.delay(a);
            let full = b.base.saturating_mul(1u32 << a.min(16)).min(b.max);
            assert!(d >= full / 2 && d <= full, "{a}: {d:?}");
        }
    }

    #[test]
    fn classes() {
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            Class::Transient
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY),
            Class::Transient
        ));
        assert!(matches!(classify(StatusCode::BAD_REQUEST), Class::Refused));
        assert!(matches!(
            classify(StatusCode::PAYLOAD_TOO_LARGE),
            Class::Refused
        ));
        assert!(matches!(classify(StatusCode::FORBIDDEN), Class::Config));
    }
}
