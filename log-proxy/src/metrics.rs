//! Prometheus text metrics: what came in, what went to journald, what was dropped and why.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::intake::IntakeStats;
use crate::journal::WriterState;

/// Counters owned by the processor (the intake and the writer keep their own).
#[derive(Default)]
pub struct Counters {
    pub forwarded: AtomicU64,
    pub rate_limited: AtomicU64,
    pub unparsable: AtomicU64,
    pub docker_lookup_failures: AtomicU64,
    pub lost_journald_down: AtomicU64,
    pub notices: AtomicU64,
    pub containers: AtomicU64,
    /// Top containers by lines dropped: (id, name, dropped), largest first.
    pub top_dropped: Mutex<Vec<(String, String, u64)>>,
    /// Lines and message bytes dropped per policy rule (`default`, `label`, a rule's name).
    pub rule_dropped: Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
}

pub struct Metrics {
    pub counters: Arc<Counters>,
    pub intake: Arc<IntakeStats>,
    pub writer: Arc<WriterState>,
}

impl Metrics {
    pub fn render(&self) -> String {
        let c = &self.counters;
        let mut s = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "log_proxy_received_lines_total",
            "Syslog messages received.",
            g(&self.intake.received),
        );
        counter(
            "log_proxy_truncated_lines_total",
            "Messages longer than the receive limit, cut.",
            g(&self.intake.truncated),
        );
        counter(
            "log_proxy_forwarded_lines_total",
            "Lines handed to the journald writer (notices included).",
            g(&c.forwarded),
        );
        counter(
            "log_proxy_written_entries_total",
            "Entries journald accepted.",
            g(&self.writer.written),
        );
        counter(
            "log_proxy_dropped_lines_total",
            "Lines dropped by per-container rate limits.",
            g(&c.rate_limited),
        );
        counter(
            "log_proxy_unparsable_lines_total",
            "Messages that were not syslog, forwarded raw.",
            g(&c.unparsable),
        );
        counter(
            "log_proxy_docker_lookup_failures_total",
            "Container lookups that failed (lines forwarded with tag fields only).",
            g(&c.docker_lookup_failures),
        );
        counter(
            "log_proxy_journal_retries_total",
            "Sends to journald retried because it was unavailable.",
            g(&self.writer.retries),
        );
        counter(
            "log_proxy_journal_lost_lines_total",
            "Lines lost because journald was unavailable longer than the buffer lasts.",
            g(&c.lost_journald_down) + g(&self.writer.lost_at_shutdown),
        );
        counter(
            "log_proxy_journal_refused_total",
            "Entries journald refused outright.",
            g(&self.writer.refused),
        );
        counter(
            "log_proxy_notices_total",
            "Notices written into containers' logs.",
            g(&c.notices),
        );
        let _ = writeln!(
            s,
            "# HELP log_proxy_containers Containers currently tracked.\n# TYPE log_proxy_containers gauge\nlog_proxy_containers {}",
            g(&c.containers)
        );
        let _ = writeln!(
            s,
            "# HELP log_proxy_container_dropped_lines_total Lines dropped per container (noisiest first).\n# TYPE log_proxy_container_dropped_lines_total counter"
        );
        for (id, name, n) in c.top_dropped.lock().unwrap().iter() {
            let _ = writeln!(
                s,
                "log_proxy_container_dropped_lines_total{{container_id=\"{}\",container_name=\"{}\"}} {n}",
                escape(id),
                escape(name)
            );
        }
        let rules = c.rule_dropped.lock().unwrap().clone();
        let _ = writeln!(
            s,
            "# HELP log_proxy_rule_dropped_lines_total Lines dropped by rate limits, per policy rule that set the limit (default: no rule; label: the container's own label).\n# TYPE log_proxy_rule_dropped_lines_total counter"
        );
        for (rule, (lines, _)) in &rules {
            let _ = writeln!(
                s,
                "log_proxy_rule_dropped_lines_total{{rule=\"{}\"}} {lines}",
                escape(rule)
            );
        }
        let _ = writeln!(
            s,
            "# HELP log_proxy_rule_dropped_bytes_total Message bytes of the lines dropped by rate limits, per policy rule.\n# TYPE log_proxy_rule_dropped_bytes_total counter"
        );
        for (rule, (_, bytes)) in &rules {
            let _ = writeln!(
                s,
                "log_proxy_rule_dropped_bytes_total{{rule=\"{}\"}} {bytes}",
                escape(rule)
            );
        }
        let _ = writeln!(
            s,
            "# HELP log_proxy_untrusted_lines_total Lines refused because their sender's uid is not allowed (--allow-uid), per uid; not written.\n# TYPE log_proxy_untrusted_lines_total counter"
        );
        for (uid, n) in self.intake.refused.totals() {
            let _ = writeln!(s, "log_proxy_untrusted_lines_total{{uid=\"{uid}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP log_proxy_buffer_bytes Bytes of encoded entries waiting for the journald writer (the outage buffer's fill; --journal-buffer bounds it).\n# TYPE log_proxy_buffer_bytes gauge\nlog_proxy_buffer_bytes {}",
            g(&self.writer.held_bytes)
        );
        let _ = writeln!(
            s,
            "# HELP log_proxy_journal_up 1 while journald takes entries, 0 while it is gone (lines are then held in the buffer).\n# TYPE log_proxy_journal_up gauge\nlog_proxy_journal_up {}",
            u8::from(self.writer.up.load(Ordering::Relaxed))
        );
        s
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
