//! The proxy's figures for Prometheus: what came in, what went to journald, what was dropped
//! and why. The loops count into plain atomics (no lock on the per-line path); this module
//! reads them at each scrape, as a collector of the process's one registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use daemon_kit::prometheus_client::collector::Collector;
use daemon_kit::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use daemon_kit::prometheus_client::metrics::counter::ConstCounter;
use daemon_kit::prometheus_client::metrics::gauge::ConstGauge;
use daemon_kit::prometheus_client::metrics::MetricType;
use daemon_kit::prometheus_client::registry::{Registry, Unit};

use crate::intake::IntakeStats;
use crate::journal::WriterState;

/// How many containers get a series of their own in the per-container drop figure; the rest
/// are summed under `container_name="other"`, so a churn of containers cannot blow up the
/// series count.
pub const TOP_CONTAINERS: usize = 50;

/// Add `n` to a per-line counter that only the processor thread writes: a plain load and
/// store instead of a locked read-modify-write on the per-line path (a scrape reads it
/// at most a few lines stale; nothing is lost, as no other thread writes it).
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Counters owned by the processor (the intake and the writer keep their own). Only the
/// processor thread writes the per-line ones ([`bump`]).
#[derive(Default)]
pub struct Counters {
    /// Container lines admitted by the rate limit and queued for journald (not notices).
    pub forwarded: AtomicU64,
    /// Message bytes (the MESSAGE field) of those lines.
    pub forwarded_bytes: AtomicU64,
    /// Lines dropped by the per-container rate limit.
    pub rate_limited: AtomicU64,
    /// Message bytes of those lines.
    pub dropped_bytes: AtomicU64,
    pub unparsable: AtomicU64,
    pub docker_lookup_failures: AtomicU64,
    pub lost_journald_down: AtomicU64,
    pub notices: AtomicU64,
    pub containers: AtomicU64,
    /// Top containers by lines dropped: (id, name, dropped), largest first.
    pub top_dropped: Mutex<Vec<(String, String, u64)>>,
    /// Lines and message bytes dropped per policy rule (`default`, `label`, a rule's name):
    /// as many series as the policy has rules.
    pub rule_dropped: Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
}

pub struct Metrics {
    pub counters: Arc<Counters>,
    pub intake: Arc<IntakeStats>,
    pub writer: Arc<WriterState>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("log-proxy metrics")
    }
}

/// A view of [`Metrics`] the registry owns.
#[derive(Debug)]
struct Collect(Arc<Metrics>);

impl Metrics {
    /// Add these figures to the process's registry.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(Collect(self.clone())));
    }

    /// This collector's figures alone, as OpenMetrics text (for the summary logged at stop).
    pub fn render(self: &Arc<Self>) -> String {
        let mut r = Registry::default();
        self.register(&mut r);
        daemon_kit::encode(&r)
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, unit, c.metric_type())?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

impl Collector for Collect {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let c = &m.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut e;
        counter(e, "log_proxy_received_lines", "Syslog messages received (a message cut at the receive limit counts once). Each is forwarded, dropped by the rate limit, or still waiting for its container's Docker lookup.", None, g(&m.intake.received))?;
        counter(e, "log_proxy_truncated_lines", "Received messages longer than the receive limit, cut to it (also counted as received).", None, g(&m.intake.truncated))?;
        counter(e, "log_proxy_forwarded_lines", "Received lines admitted by the per-container rate limit and queued for journald; drop notices are not included (log_proxy_notices_total).", None, g(&c.forwarded))?;
        counter(e, "log_proxy_forwarded", "Message bytes (the MESSAGE field, without the fields log-proxy adds) of the forwarded lines.", Some(&Unit::Bytes), g(&c.forwarded_bytes))?;
        counter(
            e,
            "log_proxy_written_entries",
            "Entries journald accepted: forwarded lines and notices, less those lost or refused.",
            None,
            g(&m.writer.written),
        )?;
        counter(
            e,
            "log_proxy_dropped_lines",
            "Received lines dropped by the per-container rate limits.",
            None,
            g(&c.rate_limited),
        )?;
        counter(
            e,
            "log_proxy_dropped",
            "Message bytes of the lines dropped by the rate limits.",
            Some(&Unit::Bytes),
            g(&c.dropped_bytes),
        )?;
        counter(e, "log_proxy_unparsable_lines", "Received messages that were not syslog (no <PRI>), written as text under the shared key (or dropped by its budget); a subset of received.", None, g(&c.unparsable))?;
        counter(
            e,
            "log_proxy_docker_lookup_failures",
            "Container lookups that failed (the container's lines go on with tag fields only).",
            None,
            g(&c.docker_lookup_failures),
        )?;
        counter(
            e,
            "log_proxy_journal_retries",
            "Sends to journald retried because it was unavailable.",
            None,
            g(&m.writer.retries),
        )?;
        counter(e, "log_proxy_journal_lost_lines", "Forwarded lines lost because journald was unavailable longer than the buffer lasts, or at shutdown.", None, g(&c.lost_journald_down) + g(&m.writer.lost_at_shutdown))?;
        counter(
            e,
            "log_proxy_journal_refused",
            "Entries journald refused outright.",
            None,
            g(&m.writer.refused),
        )?;
        counter(
            e,
            "log_proxy_notices",
            "Rate-limit drop notices written into containers' logs.",
            None,
            g(&c.notices),
        )?;
        gauge(
            e,
            "log_proxy_containers",
            "Containers (and the shared key for untagged lines) currently tracked.",
            None,
            g(&c.containers) as i64,
        )?;
        gauge(
            e,
            "log_proxy_buffer",
            "Encoded entries waiting for the journald writer: the outage buffer's fill while journald is unavailable (--journal-buffer bounds it).",
            Some(&Unit::Bytes),
            g(&m.writer.held_bytes) as i64,
        )?;
        gauge(
            e,
            "log_proxy_journal_up",
            "1 while journald takes entries, 0 while it is gone (lines are then held in the buffer).",
            None,
            i64::from(m.writer.up.load(Ordering::Relaxed)),
        )?;

        let rules = c
            .rule_dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut f = e.encode_descriptor(
            "log_proxy_rule_dropped_lines",
            "Lines dropped by the rate limits, per policy rule that set the limit (default: no rule; label: the container's own log-proxy.rate-limit label).",
            None,
            MetricType::Counter,
        )?;
        for (rule, (lines, _)) in &rules {
            ConstCounter::new(*lines).encode(f.encode_family(&[("rule", rule.as_str())])?)?;
        }
        let mut f = e.encode_descriptor(
            "log_proxy_rule_dropped",
            "Message bytes of the lines dropped by the rate limits, per policy rule.",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for (rule, (_, bytes)) in &rules {
            ConstCounter::new(*bytes).encode(f.encode_family(&[("rule", rule.as_str())])?)?;
        }
        let mut f = e.encode_descriptor(
            "log_proxy_untrusted_lines",
            "Received lines refused because their sender's uid is not allowed (--allow-uid), per uid; not written (a subset of received).",
            None,
            MetricType::Counter,
        )?;
        for (uid, n) in m.intake.refused.totals() {
            ConstCounter::new(n).encode(f.encode_family(&[("uid", uid.to_string().as_str())])?)?;
        }

        let top = c
            .top_dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut f = e.encode_descriptor(
            "log_proxy_container_dropped_lines",
            "Lines dropped by the rate limit per container: the 50 that dropped most by id and name, the rest summed as container_name=\"other\".",
            None,
            MetricType::Counter,
        )?;
        let mut listed = 0;
        for (id, name, n) in top.iter().take(TOP_CONTAINERS) {
            listed += n;
            let labels = [
                ("container_id", id.as_str()),
                ("container_name", name.as_str()),
            ];
            ConstCounter::new(*n).encode(f.encode_family(&labels)?)?;
        }
        let other = g(&c.rate_limited).saturating_sub(listed);
        let labels = [("container_id", ""), ("container_name", "other")];
        ConstCounter::new(other).encode(f.encode_family(&labels)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_openmetrics_with_units_and_an_other_bucket() {
        let m = Arc::new(Metrics {
            counters: Arc::new(Counters::default()),
            intake: Arc::new(IntakeStats::default()),
            writer: Arc::new(WriterState::default()),
        });
        m.counters.rate_limited.store(7, Ordering::Relaxed);
        m.counters.dropped_bytes.store(700, Ordering::Relaxed);
        m.writer.held_bytes.store(4096, Ordering::Relaxed);
        *m.counters.top_dropped.lock().unwrap() = vec![("abc".into(), "web".into(), 5)];
        let text = m.render();
        for want in [
            "log_proxy_dropped_lines_total 7\n",
            "log_proxy_dropped_bytes_total 700\n",
            "# UNIT log_proxy_dropped_bytes bytes\n",
            "log_proxy_buffer_bytes 4096\n",
            "log_proxy_container_dropped_lines_total{container_id=\"abc\",container_name=\"web\"} 5\n",
            "log_proxy_container_dropped_lines_total{container_id=\"\",container_name=\"other\"} 2\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
    }
}
