//! Destinations. Each one has its own delivery task and cursor (see `pipeline`); this module
//! defines the contract every destination implements.
//!
//! Contract: the pipeline hands a sink a batch of records in journal order (shared with the
//! other destinations, hence `Arc`) (possibly mixing
//! groups and streams, bounded by `--max-batch-size`/`--max-batch-bytes`). The sink splits it
//! into requests as its API needs, retries transient failures itself (backoff with jitter,
//! indefinitely: the journal is the buffer), and returns only when every record is either
//! accepted or permanently rejected. Only then does the pipeline save the batch's cursor.
//! Dropping the `deliver` future (shutdown) is always safe: the cursor was not advanced, so the
//! batch is resent on the next start (at least once).

pub mod cloudwatch;
pub mod stdout;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ecs_event::Event;

/// One event on its way to a destination.
#[derive(Debug, Clone)]
pub struct Record {
    /// Log group (service), already valid for CloudWatch.
    pub group: String,
    /// Log stream (container or task), already valid for CloudWatch.
    pub stream: String,
    pub event: Event,
}

/// Records a destination refused for good, with why (shown to the operator and written
/// into the destination as a notice).
#[derive(Debug, Clone)]
pub struct Rejected {
    pub group: String,
    pub stream: String,
    pub count: usize,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub reason: String,
}

/// What happened to a delivered batch.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rejected: Vec<Rejected>,
}

/// A destination.
pub trait Sink: Send + 'static {
    /// Name used in `--dst`, logs and metrics.
    fn name(&self) -> &'static str;

    /// Deliver a batch (see the module contract). An `Err` means a fault the sink cannot get
    /// past by retrying (bad configuration, credentials refused): the pipeline reports it and
    /// stops this destination.
    fn deliver(
        &mut self,
        batch: Vec<Arc<Record>>,
    ) -> impl std::future::Future<Output = anyhow::Result<Outcome>> + Send;
}

pub mod http;
pub mod isolate;
pub mod logdna;
pub mod loggly;
pub mod secret;
#[cfg(test)]
mod sink_tests;
pub mod syslog_tls;
pub mod tls;
pub mod truncate;
