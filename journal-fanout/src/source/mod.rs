//! Where lines come from. A source is read on its own thread (the journal handle is not
//! `Send`), one record at a time, and says where it is (a journal cursor) so the pipeline can
//! save that position once the destination has everything up to it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::routes::DestSet;
use crate::sinks::Record;

#[cfg(feature = "journald")]
pub mod journal_access;
#[cfg(feature = "journald")]
pub mod journal_file;
#[cfg(feature = "journald")]
pub mod journald;
pub mod stdin;

/// A container line and where it goes.
pub struct Entry {
    pub record: Record,
    /// Its message size in bytes (for batch limits).
    pub size: usize,
    /// The destinations its route sends it to.
    pub to: DestSet,
    /// The route that decided (`None`: no route matched, so every destination).
    pub route: Option<usize>,
}

impl Entry {
    /// A line for every destination (sources without routes).
    pub fn everywhere(record: Record, size: usize) -> Entry {
        Entry {
            record,
            size,
            to: DestSet::MAX,
            route: None,
        }
    }
}

/// One step of reading.
// Entries are moved once per line; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Read {
    /// A container line.
    Record(Entry),
    /// An entry that is not a container line (no group field): skipped.
    Skipped,
    /// Nothing more right now; `wait` for more.
    Idle,
    /// The source is finished (stdin closed).
    End,
}

/// Entries that were in the journal but are gone before this destination read them
/// (rotation, vacuuming, corruption).
#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    /// How many journal entries (container lines or not), when the journal tells.
    pub count: Option<u64>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Loss {
    /// Combine two losses seen before a notice could be written.
    pub fn merge(self, other: Loss) -> Loss {
        Loss {
            count: self.count.zip(other.count).map(|(a, b)| a + b),
            from: self.from.min(other.from),
            to: self.to.max(other.to),
        }
    }
}

pub trait Source {
    /// The next record, if one is available now.
    fn read(&mut self) -> anyhow::Result<Read>;

    /// Block until more may be available, at most `timeout`.
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<()>;

    /// The position just after the last entry read (`None` for sources without positions).
    fn cursor(&mut self) -> anyhow::Result<Option<String>>;

    /// A loss noticed since the last call, if any.
    fn take_loss(&mut self) -> Option<Loss> {
        None
    }

    /// New naming and routes (a reload), used from the next entry read.
    fn set_rules(&mut self, _rules: std::sync::Arc<crate::config::EventRules>) {}
}
