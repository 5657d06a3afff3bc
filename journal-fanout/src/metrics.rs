//! Figures per destination, served as OpenMetrics at `/metrics` when `--metrics-address` is
//! set. `main` owns one [`Metrics`]; sinks and the pipeline count through the per-destination
//! [`Destination`] handles it hands out (plain atomics on the per-entry path; a lock at most
//! once per batch or request), and [`Metrics::register`] reads them at each scrape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use daemon_kit::prometheus_client::collector::Collector;
use daemon_kit::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use daemon_kit::prometheus_client::metrics::counter::ConstCounter;
use daemon_kit::prometheus_client::metrics::gauge::ConstGauge;
use daemon_kit::prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use daemon_kit::prometheus_client::metrics::MetricType;
use daemon_kit::prometheus_client::registry::{Registry, Unit};

/// How many log groups get a series of their own in `group_delivered_bytes_total` per
/// destination; the rest are summed under `group="other"`.
pub const TOP_GROUPS: usize = 50;

/// One destination's counters.
#[derive(Debug)]
pub struct Destination {
    pub name: &'static str,
    /// Journal entries read for this destination (container lines or not).
    pub entries_read: AtomicU64,
    /// Entries skipped because they have no group field (not container lines).
    pub entries_skipped: AtomicU64,
    /// Events the destination acknowledged.
    pub events_delivered: AtomicU64,
    /// Message bytes of those events.
    pub delivered_bytes: AtomicU64,
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
    /// Requests (HTTP calls, TLS writes) that succeeded / failed.
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    request_duration: Histogram,
    /// Message bytes delivered per log group (updated once per batch).
    groups: Mutex<HashMap<String, u64>>,
    /// The cursor of the last entry whose batch was delivered (once per batch).
    delivered_cursor: Mutex<Option<String>>,
    /// Journal entries between the last delivered one and the journal's head, from seqnums
    /// (`backlog_known` says whether the head was looked at).
    pub backlog: AtomicU64,
    pub backlog_known: AtomicBool,
    /// Realtime (µs since the epoch) of the last delivered entry, 0 before one.
    pub delivered_realtime_usec: AtomicU64,
    /// Container lines that routes sent to other destinations (or nowhere): on purpose, not
    /// lost.
    pub routed_away: AtomicU64,
    /// The destination is fed by the shared journal read (false: it fell behind and reads on
    /// its own until it catches up).
    pub shared_read: AtomicBool,
    /// Times it fell behind and left the shared read.
    pub shared_read_leaves: AtomicU64,
}

impl Destination {
    /// Fresh (zero) counters for destination `name`.
    pub fn new(name: &'static str) -> Destination {
        Destination {
            name,
            entries_read: AtomicU64::new(0),
            entries_skipped: AtomicU64::new(0),
            events_delivered: AtomicU64::new(0),
            delivered_bytes: AtomicU64::new(0),
            events_rejected: AtomicU64::new(0),
            entries_lost: AtomicU64::new(0),
            losses_of_unknown_size: AtomicU64::new(0),
            batches_delivered: AtomicU64::new(0),
            delivery_retries: AtomicU64::new(0),
            cursor_saves: AtomicU64::new(0),
            last_cursor_save_seconds: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            // 5 ms .. about 80 s: a fast local receiver up to the 60 s request timeout.
            request_duration: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            groups: Mutex::new(HashMap::new()),
            delivered_cursor: Mutex::new(None),
            backlog: AtomicU64::new(0),
            backlog_known: AtomicBool::new(false),
            delivered_realtime_usec: AtomicU64::new(0),
            routed_away: AtomicU64::new(0),
            shared_read: AtomicBool::new(true),
            shared_read_leaves: AtomicU64::new(0),
        }
    }

    /// One request to the destination ended (`ok`: it answered with success).
    pub fn request(&self, started: Instant, ok: bool) {
        self.request_duration
            .observe(started.elapsed().as_secs_f64());
        add(
            if ok {
                &self.requests_ok
            } else {
                &self.requests_failed
            },
            1,
        );
    }

    /// A batch was delivered: `bytes` per group (message bytes).
    pub fn delivered<'a>(&self, per_group: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        for (g, n) in per_group {
            add(&self.delivered_bytes, n);
            match groups.get_mut(g) {
                Some(v) => *v += n,
                None => {
                    groups.insert(g.to_string(), n);
                }
            }
        }
    }

    /// The batch ending at `cursor` is delivered (and its cursor saved).
    pub fn delivered_up_to(&self, cursor: &str) {
        if let Some(t) = cursor_field(cursor, "t") {
            self.delivered_realtime_usec.store(t, Ordering::Relaxed);
        }
        *self
            .delivered_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(cursor.to_string());
    }

    /// The cursor of the last delivered entry.
    #[cfg_attr(not(feature = "journald"), allow(dead_code))]
    pub fn delivered_cursor(&self) -> Option<String> {
        self.delivered_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Seconds the last delivered entry is behind now while entries wait; 0 when caught up.
    fn lag_seconds(&self) -> f64 {
        let t = self.delivered_realtime_usec.load(Ordering::Relaxed);
        if self.backlog.load(Ordering::Relaxed) == 0 || t == 0 {
            return 0.0;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        now.saturating_sub(t) as f64 / 1e6
    }
}

/// A hex field (`i=` seqnum, `t=` realtime µs) of a journal cursor (protocols.md §4.7).
pub fn cursor_field(cursor: &str, key: &str) -> Option<u64> {
    cursor.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == key).then(|| u64::from_str_radix(v, 16).ok())?
    })
}

/// Every counter of this process, in the order destinations were first asked for.
#[derive(Debug, Default)]
pub struct Metrics {
    destinations: Mutex<Vec<Arc<Destination>>>,
    /// Lines on stdin that could not be understood.
    stdin_rejected: AtomicU64,
    /// The journal's files were looked at (journal source only): the two gauges below apply.
    journal_checked: AtomicBool,
    journal_files_readable: AtomicU64,
    /// Journal files (or directories) that exist where we read but cannot be opened.
    journal_files_unreadable: AtomicU64,
    /// Entries each route decided.
    pub routes: Arc<RouteHits>,
    /// How the journal readers read entries' fields.
    pub journal_reads: Arc<JournalReads>,
}

/// Journal entries read, by which reader read their fields (added once per batch).
#[derive(Debug, Default)]
pub struct JournalReads {
    /// By journal-fanout's own reader of the journal files.
    pub file: AtomicU64,
    /// Through libsystemd, where that reader declined the entry.
    pub libsystemd: AtomicU64,
}

/// Entries decided per route number (from 1), summed once per batch.
#[derive(Debug, Default)]
pub struct RouteHits(Mutex<Vec<u64>>);

impl RouteHits {
    /// Add `hits[n]` to route `n`.
    pub fn add(&self, hits: &[u64]) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < hits.len() {
            v.resize(hits.len(), 0);
        }
        for (i, n) in hits.iter().enumerate() {
            v[i] += n;
        }
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A view of [`Metrics`] the registry owns.
#[derive(Debug)]
struct Collect(Arc<Metrics>);

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Add these figures to the process's registry.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(Collect(self.clone())));
    }

    /// The counters of destination `name` (created on first use).
    pub fn destination(&self, name: &'static str) -> Arc<Destination> {
        let mut r = self.destinations.lock().unwrap();
        if let Some(d) = r.iter().find(|d| d.name == name) {
            return d.clone();
        }
        let d = Arc::new(Destination::new(name));
        r.push(d.clone());
        d
    }

    /// Every destination's counters.
    #[cfg_attr(not(feature = "journald"), allow(dead_code))]
    pub fn destinations(&self) -> Vec<Arc<Destination>> {
        self.destinations.lock().unwrap().clone()
    }

    /// A stdin line that could not be understood.
    pub fn stdin_rejected(&self) {
        self.stdin_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// What the last look at the journal's files found.
    #[cfg_attr(not(feature = "journald"), allow(dead_code))]
    pub fn set_journal_files(&self, readable: u64, unreadable: u64) {
        self.journal_files_readable
            .store(readable, Ordering::Relaxed);
        self.journal_files_unreadable
            .store(unreadable, Ordering::Relaxed);
        self.journal_checked.store(true, Ordering::Relaxed);
    }

    /// These figures alone as OpenMetrics text (tests).
    #[cfg(test)]
    pub fn render(self: &Arc<Self>) -> String {
        let mut r = Registry::default();
        self.register(&mut r);
        daemon_kit::encode(&r)
    }
}

type Get = fn(&Destination) -> u64;

impl Collector for Collect {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let dests = m.destinations();
        let series: [(&str, MetricType, Option<Unit>, &str, Get); 15] = [
            ("journal_fanout_entries_read", MetricType::Counter, None, "Journal entries read for the destination, container lines or not (each is batched or skipped).", |d| l(&d.entries_read)),
            ("journal_fanout_entries_skipped", MetricType::Counter, None, "Entries read for which the group template has no value (not container lines), not shipped.", |d| l(&d.entries_skipped)),
            ("journal_fanout_entries_routed_away", MetricType::Counter, None, "Container lines that routes sent to other destinations or nowhere (to = []): on purpose, not lost.", |d| l(&d.routed_away)),
            ("journal_fanout_shared_read", MetricType::Gauge, None, "1 while the destination is fed by the shared journal read; 0 while it fell behind and reads on its own until it catches up.", |d| u64::from(d.shared_read.load(Ordering::Relaxed))),
            ("journal_fanout_shared_read_leaves", MetricType::Counter, None, "Times the destination fell behind (took no batch for 1 s) and left the shared journal read.", |d| l(&d.shared_read_leaves)),
            ("journal_fanout_events_delivered", MetricType::Counter, None, "Events the destination acknowledged (loss and refusal notices included).", |d| l(&d.events_delivered)),
            ("journal_fanout_delivered", MetricType::Counter, Some(Unit::Bytes), "Message bytes of the events the destination acknowledged.", |d| l(&d.delivered_bytes)),
            ("journal_fanout_events_rejected", MetricType::Counter, None, "Events the destination refused for good (each reported in a notice).", |d| l(&d.events_rejected)),
            ("journal_fanout_entries_lost", MetricType::Counter, None, "Journal entries rotated or vacuumed away before they were read for the destination.", |d| l(&d.entries_lost)),
            ("journal_fanout_losses_unknown_size", MetricType::Counter, None, "Journal gaps whose size the journal could not tell.", |d| l(&d.losses_of_unknown_size)),
            ("journal_fanout_batches_delivered", MetricType::Counter, None, "Batches the destination acknowledged.", |d| l(&d.batches_delivered)),
            ("journal_fanout_delivery_retries", MetricType::Counter, None, "Delivery attempts that failed and were retried.", |d| l(&d.delivery_retries)),
            ("journal_fanout_cursor_saves", MetricType::Counter, None, "Cursor checkpoints written (the newest delivered position, at most once a second).", |d| l(&d.cursor_saves)),
            ("journal_fanout_last_cursor_save_timestamp", MetricType::Gauge, Some(Unit::Seconds), "When the cursor was last saved, Unix time (0: not yet).", |d| l(&d.last_cursor_save_seconds)),
            ("journal_fanout_backlog_entries", MetricType::Gauge, None, "Journal entries (container lines or not) between the last delivered one and the journal's head, from their sequence numbers; looked at every 2 s.", |d| l(&d.backlog)),
        ];
        for (name, kind, unit, help, get) in &series {
            if *name == "journal_fanout_backlog_entries"
                && !dests
                    .iter()
                    .any(|d| d.backlog_known.load(Ordering::Relaxed))
            {
                continue;
            }
            let mut f = e.encode_descriptor(name, help, unit.as_ref(), *kind)?;
            for d in &dests {
                let labels = [("destination", d.name)];
                let fe = f.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(get(d)).encode(fe)?,
                    _ => ConstGauge::new(get(d) as i64).encode(fe)?,
                }
            }
        }
        if dests
            .iter()
            .any(|d| d.backlog_known.load(Ordering::Relaxed))
        {
            let mut f = e.encode_descriptor(
                "journal_fanout_lag",
                "Now minus the journal timestamp of the last delivered entry while entries are waiting (backlog above 0); 0 when caught up.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for d in &dests {
                ConstGauge::new(d.lag_seconds())
                    .encode(f.encode_family(&[("destination", d.name)])?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "journal_fanout_requests",
            "Requests to the destination (HTTP calls, TLS writes) by result: ok, or failed (then retried or given up).",
            None,
            MetricType::Counter,
        )?;
        for d in &dests {
            for (result, v) in [("ok", l(&d.requests_ok)), ("failed", l(&d.requests_failed))] {
                ConstCounter::new(v)
                    .encode(f.encode_family(&[("destination", d.name), ("result", result)])?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "journal_fanout_request_duration",
            "How long requests to the destination took, answered or failed.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for d in &dests {
            d.request_duration
                .encode(f.encode_family(&[("destination", d.name)])?)?;
        }
        let mut f = e.encode_descriptor(
            "journal_fanout_group_delivered",
            "Message bytes acknowledged per destination and log group: the 50 largest groups, the rest summed as group=\"other\".",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for d in &dests {
            let mut groups: Vec<(String, u64)> = d
                .groups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(g, n)| (g.clone(), *n))
                .collect();
            groups.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            let other: u64 = groups.iter().skip(TOP_GROUPS).map(|(_, n)| n).sum();
            groups.truncate(TOP_GROUPS);
            if other > 0 {
                groups.push(("other".into(), other));
            }
            for (g, n) in &groups {
                ConstCounter::new(*n)
                    .encode(f.encode_family(&[("destination", d.name), ("group", g.as_str())])?)?;
            }
        }
        let hits = m.routes.snapshot();
        if hits.len() > 1 {
            let mut f = e.encode_descriptor(
                "journal_fanout_route_entries",
                "Container lines each [[route]] decided (route = its place in the configuration file, from 1); lines no route matched go to every destination and are not counted here.",
                None,
                MetricType::Counter,
            )?;
            for (n, v) in hits.iter().enumerate().skip(1) {
                ConstCounter::new(*v)
                    .encode(f.encode_family(&[("route", n.to_string().as_str())])?)?;
            }
        }
        let c = ConstCounter::new(l(&m.stdin_rejected));
        c.encode(e.encode_descriptor(
            "journal_fanout_stdin_lines_rejected",
            "Lines on stdin that were not {group,stream,event} JSON.",
            None,
            c.metric_type(),
        )?)?;
        if m.journal_checked.load(Ordering::Relaxed) {
            let g = ConstGauge::new(l(&m.journal_files_readable) as i64);
            g.encode(e.encode_descriptor(
                "journal_fanout_journal_files_readable",
                "Journal files where journal-fanout reads that it can open.",
                None,
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(l(&m.journal_files_unreadable) as i64);
            g.encode(e.encode_descriptor(
                "journal_fanout_journal_files_unreadable",
                "Journal files (or journal directories) that exist where journal-fanout reads but cannot be opened: their lines are not shipped.",
                None,
                g.metric_type(),
            )?)?;
            let mut f = e.encode_descriptor(
                "journal_fanout_journal_entries_read",
                "Journal entries read (by every journal reader, counted when its position is taken), by what read their fields: reader=\"file\" journal-fanout's own reader of the journal files, reader=\"libsystemd\" libsystemd where that reader declined the entry (a compressed field, a file it has not opened yet, a layout it does not know), which costs more CPU per entry.",
                None,
                MetricType::Counter,
            )?;
            let r = &m.journal_reads;
            for (reader, n) in [("file", &r.file), ("libsystemd", &r.libsystemd)] {
                ConstCounter::new(l(n)).encode(f.encode_family(&[("reader", reader)])?)?;
            }
        }
        Ok(())
    }
}

/// A counter's value.
fn l(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Add to a counter (shorthand for sinks).
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_when_caught_up_and_groups_past_the_top_are_other() {
        let m = Arc::new(Metrics::new());
        let d = m.destination("loggly");
        let per: Vec<(String, u64)> = (0..60).map(|i| (format!("g{i:02}"), 100 + i)).collect();
        d.delivered(per.iter().map(|(g, n)| (g.as_str(), *n)));
        d.backlog_known.store(true, Ordering::Relaxed);
        let ten_s_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
            - 10_000_000;
        d.delivered_up_to(&format!("s=ab;i=1f;b=cd;m=1;t={ten_s_ago:x};x=2"));
        assert_eq!(d.lag_seconds(), 0.0, "nothing waiting: caught up");
        d.backlog.store(5, Ordering::Relaxed);
        assert!(d.lag_seconds() >= 10.0);
        d.request(Instant::now(), false);
        let text = m.render();
        // g00..g09 are the 10 smallest: summed as other.
        let other: u64 = (100..110).sum();
        for want in [
            format!("journal_fanout_group_delivered_bytes_total{{destination=\"loggly\",group=\"other\"}} {other}\n"),
            "journal_fanout_group_delivered_bytes_total{destination=\"loggly\",group=\"g59\"} 159\n".into(),
            "journal_fanout_backlog_entries{destination=\"loggly\"} 5\n".into(),
            "journal_fanout_requests_total{destination=\"loggly\",result=\"failed\"} 1\n".into(),
            "journal_fanout_request_duration_seconds_count{destination=\"loggly\"} 1\n".into(),
            "# UNIT journal_fanout_lag_seconds seconds\n".into(),
        ] {
            assert!(text.contains(&want), "{want:?} missing in:\n{text}");
        }
        assert!(!text.contains("group=\"g00\""), "{text}");
    }
}
