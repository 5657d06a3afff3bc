//! Counters per destination, served as Prometheus text at `/metrics` when
//! `--metrics-address` is set. `main` owns one [`Metrics`]; sinks and the pipeline count
//! through the per-destination [`Destination`] handles it hands out.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

impl Destination {
    /// Fresh (zero) counters for destination `name`.
    pub fn new(name: &'static str) -> Destination {
        Destination {
            name,
            ..Destination::default()
        }
    }
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
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
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

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let dests = self.destinations.lock().unwrap().clone();
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
        self.stdin_rejected.load(Ordering::Relaxed)
    );
        if self.journal_checked.load(Ordering::Relaxed) {
            let _ = writeln!(
                out,
                "# HELP journal_fanout_journal_files_readable Journal files where journal-fanout reads that it can open.\n\
                 # TYPE journal_fanout_journal_files_readable gauge\n\
                 journal_fanout_journal_files_readable {}\n\
                 # HELP journal_fanout_journal_files_unreadable Journal files (or journal directories) that exist where journal-fanout reads but cannot be opened: their lines are not shipped.\n\
                 # TYPE journal_fanout_journal_files_unreadable gauge\n\
                 journal_fanout_journal_files_unreadable {}",
                self.journal_files_readable.load(Ordering::Relaxed),
                self.journal_files_unreadable.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Add to a counter (shorthand for sinks).
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
