//! `cloudwatchlogs`: log group = record group, log stream = record stream.
//!
//! Read top to bottom: [`config`] (client from the AWS environment) → [`request`] (batch →
//! per-stream requests within the limits) → [`service`] (the calls, creating what is
//! missing) → [`retry`] (backoff, forever). Streams are sent concurrently, each stream's
//! requests in order, so order within a stream is kept.

pub mod config;
pub mod request;
pub mod retry;
pub mod service;

use std::sync::Arc;

use futures::stream::{self, StreamExt};

use self::config::CloudWatchConfig;
use self::request::{LogEvent, StreamRequests};
use self::retry::Backoff;
use self::service::{Failure, RejectedRanges};
use super::{Outcome, Record, Rejected, Sink};
use crate::metrics;

/// Streams sent at the same time.
const CONCURRENT_STREAMS: usize = 8;

pub struct CloudWatchSink {
    client: aws_sdk_cloudwatchlogs::Client,
    config: CloudWatchConfig,
    metrics: Arc<metrics::Destination>,
}

impl CloudWatchSink {
    pub async fn from_env(
        config: CloudWatchConfig,
        metrics: Arc<metrics::Destination>,
    ) -> anyhow::Result<CloudWatchSink> {
        Ok(CloudWatchSink {
            client: config::client().await?,
            config,
            metrics,
        })
    }
}

impl Sink for CloudWatchSink {
    fn name(&self) -> &'static str {
        "cloudwatchlogs"
    }

    async fn deliver(&mut self, batch: Vec<std::sync::Arc<Record>>) -> anyhow::Result<Outcome> {
        let streams = request::build(batch);
        let this = &*self;
        let results: Vec<anyhow::Result<Vec<Rejected>>> = stream::iter(streams)
            .map(|s| this.send_stream(s))
            .buffer_unordered(CONCURRENT_STREAMS)
            .collect()
            .await;
        let mut outcome = Outcome::default();
        for r in results {
            outcome.rejected.extend(r?);
        }
        Ok(outcome)
    }
}

impl CloudWatchSink {
    /// Send one stream's requests in order; returns what the service refused.
    async fn send_stream(&self, s: StreamRequests) -> anyhow::Result<Vec<Rejected>> {
        let mut rejected = Vec::new();
        for events in &s.requests {
            rejected.extend(self.send_request(&s.group, &s.stream, events).await?);
        }
        Ok(rejected)
    }

    async fn send_request(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
    ) -> anyhow::Result<Vec<Rejected>> {
        let mut backoff = Backoff::new();
        let mut created = false;
        loop {
            let started = std::time::Instant::now();
            let put = service::put(&self.client, group, stream, events).await;
            self.metrics.request(started, put.is_ok());
            let failure = match put {
                Ok(ranges) => return Ok(rejections(group, stream, events, ranges)),
                // Still missing right after creating it (deleted meanwhile, or the service
                // is slow to show it): create again, but not in a tight loop.
                Err(Failure::Missing) if created => {
                    created = false;
                    Failure::Retry(format!(
                        "{group}/{stream} is still missing after creating it"
                    ))
                }
                Err(Failure::Missing) => {
                    match service::ensure(
                        &self.client,
                        group,
                        stream,
                        self.config.retention_days.get(),
                    )
                    .await
                    {
                        Ok(()) | Err(Failure::Missing) => {
                            created = true;
                            continue;
                        }
                        Err(f) => f,
                    }
                }
                Err(f) => f,
            };
            match failure {
                Failure::Retry(why) => {
                    metrics::add(&self.metrics.delivery_retries, 1);
                    // Loud on the first failure and then now and again, not on every attempt.
                    if backoff.attempts().is_multiple_of(10) {
                        tracing::warn!(
                            group,
                            stream,
                            attempt = backoff.attempts() + 1,
                            "CloudWatch Logs call failed, retrying: {why}"
                        );
                    }
                    backoff.wait().await;
                }
                Failure::Refused(why) => {
                    let (first, last) = request::span(events);
                    return Ok(vec![Rejected {
                        group: group.into(),
                        stream: stream.into(),
                        count: events.len(),
                        first,
                        last,
                        reason: why,
                    }]);
                }
                Failure::Fatal(why) => anyhow::bail!("cannot call CloudWatch Logs: {why}"),
                Failure::Missing => unreachable!("handled above"),
            }
        }
    }
}

/// Turn the service's rejected ranges into reports.
fn rejections(group: &str, stream: &str, events: &[LogEvent], r: RejectedRanges) -> Vec<Rejected> {
    let mut out = Vec::new();
    let mut report = |slice: &[LogEvent], reason: &str| {
        if !slice.is_empty() {
            let (first, last) = request::span(slice);
            out.push(Rejected {
                group: group.into(),
                stream: stream.into(),
                count: slice.len(),
                first,
                last,
                reason: reason.into(),
            });
        }
    };
    let old_end = r.too_old_end;
    report(
        &events[..old_end],
        "CloudWatch Logs refused them as too old (older than 14 days or than the log group's retention)",
    );
    if let Some(start) = r.too_new_start {
        report(
            &events[start.max(old_end)..],
            "CloudWatch Logs refused them as too new (more than 2 hours in the future; check the host clock)",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_ranges_become_reports() {
        let ev = |ms| LogEvent {
            timestamp_ms: ms,
            message: "m".into(),
        };
        let events: Vec<_> = (0..10).map(|i| ev(1_000_000 + i)).collect();
        let out = rejections(
            "g",
            "s",
            &events,
            RejectedRanges {
                too_old_end: 3,
                too_new_start: Some(8),
            },
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].count, 3);
        assert!(out[0].reason.contains("too old"));
        assert_eq!(out[1].count, 2);
        assert!(out[1].reason.contains("too new"));
    }
}
