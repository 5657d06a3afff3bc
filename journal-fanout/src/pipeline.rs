//! One pipeline per destination: source thread → batches (bounded channel) → `Sink::deliver`
//! → save the cursor. A slow or down destination fills only its own small channel, so it
//! holds back only itself with bounded memory, and catches up from the journal later.
//!
//! The batch is built on the reader thread: the journal cursor is then taken once per batch
//! (at its last entry), which is the position to save once the batch is delivered.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use ecs_event::{Event, Level};
use tokio::sync::mpsc;

use crate::checkpoint::Checkpoint;
use crate::config::BatchLimits;
use crate::metrics::{self, add};
use crate::sinks::{Record, Rejected, Sink};
use crate::source::{Loss, Read, Source};

/// Records in journal order and the cursor of the last entry read for them.
#[derive(Debug, Clone)]
pub struct Batch {
    pub records: Vec<Record>,
    pub cursor: Option<String>,
}

/// Batches waiting for a destination: one being delivered plus this many queued.
pub const QUEUED_BATCHES: usize = 1;

/// How long the reader waits for the journal at a time, so a stop request is seen quickly.
const POLL: Duration = Duration::from_millis(200);

/// After this many skipped (non-container) entries with nothing batched, save the cursor
/// anyway so a restart does not rescan them.
const SKIPPED_CHECKPOINT: u64 = 10_000;

/// Read `src` into batches for `outputs` (one per destination sharing this source) until
/// `stop` is set or the source ends. Runs on its own thread; beats `alive` as it goes round,
/// and marks it idle while it waits for a destination (the journal is the buffer then).
pub fn read_loop(
    src: &mut dyn Source,
    limits: BatchLimits,
    outputs: &[(mpsc::Sender<Batch>, Arc<metrics::Destination>)],
    stop: &AtomicBool,
    alive: &daemon_kit::Part,
) -> anyhow::Result<()> {
    let mut b = Builder::new(limits);
    // Save the starting position right away (e.g. `--from tail`), so entries written while
    // we run before the first batch are not skipped by a later restart.
    if let Some(cursor) = src.cursor()? {
        send(
            outputs,
            Batch {
                records: Vec::new(),
                cursor: Some(cursor),
            },
            alive,
        )?;
    }
    let mut iterations = 0u32;
    loop {
        if stop.load(Ordering::Relaxed) {
            return b.flush(src, outputs, alive);
        }
        if b.records.is_empty() && !b.slot_free {
            // Start a batch only when its place in the queue is free: one batch being
            // delivered, one being built — not a third one waiting, finished, in memory.
            alive.idle();
            for (tx, _) in outputs {
                let _ = futures::executor::block_on(tx.reserve());
            }
            alive.beat();
            b.slot_free = true;
        }
        match src.read()? {
            Read::Record(r, size) => {
                for (_, m) in outputs {
                    add(&m.entries_read, 1);
                }
                b.push(r, size);
                if b.full() {
                    b.flush(src, outputs, alive)?;
                }
            }
            Read::Skipped => {
                for (_, m) in outputs {
                    add(&m.entries_read, 1);
                    add(&m.entries_skipped, 1);
                }
                b.skipped += 1;
                if b.records.is_empty() && b.skipped >= SKIPPED_CHECKPOINT {
                    b.flush(src, outputs, alive)?;
                }
            }
            Read::Idle => {
                alive.beat();
                // Caught up after entries that were all skipped: pass their position on, so
                // the saved cursor and the backlog figure do not stay behind them.
                if b.records.is_empty() && b.skipped > 0 {
                    b.flush(src, outputs, alive)?;
                    continue;
                }
                match b.due_in() {
                    Some(d) if d.is_zero() => b.flush(src, outputs, alive)?,
                    Some(d) => src.wait(d.min(POLL))?,
                    None => src.wait(POLL)?,
                }
            }
            Read::End => return b.flush(src, outputs, alive),
        }
        if let Some(loss) = src.take_loss() {
            report_loss(&loss, outputs);
            b.loss = Some(match b.loss.take() {
                Some(old) => old.merge(loss),
                None => loss,
            });
        }
        // While entries keep coming (never idle), still beat and honour the flush timeout —
        // every 256 entries, not each (a clock read per entry on the hot path).
        iterations = iterations.wrapping_add(1);
        if iterations.is_multiple_of(256) {
            alive.beat();
            if b.due_in().is_some_and(|d| d.is_zero()) {
                b.flush(src, outputs, alive)?;
            }
        }
    }
}

struct Builder {
    limits: BatchLimits,
    records: Vec<Record>,
    bytes: usize,
    started: Option<Instant>,
    skipped: u64,
    /// A loss not yet written as a notice (it goes with the next records).
    loss: Option<Loss>,
    /// The queue had room when this batch was started.
    slot_free: bool,
}

impl Builder {
    fn new(limits: BatchLimits) -> Builder {
        Builder {
            limits,
            records: Vec::new(),
            bytes: 0,
            started: None,
            skipped: 0,
            loss: None,
            slot_free: false,
        }
    }

    fn push(&mut self, r: Record, size: usize) {
        self.started.get_or_insert_with(Instant::now);
        // What a destination pays per event beyond the message (names, JSON keys).
        self.bytes += size + r.group.len() + r.stream.len() + 64;
        self.records.push(r);
    }

    fn full(&self) -> bool {
        self.records.len() >= self.limits.max_events || self.bytes >= self.limits.max_bytes
    }

    /// Time left before the batch must go (`None` when empty).
    fn due_in(&self) -> Option<Duration> {
        self.started
            .map(|s| self.limits.flush_timeout.saturating_sub(s.elapsed()))
    }

    fn flush(
        &mut self,
        src: &mut dyn Source,
        outputs: &[(mpsc::Sender<Batch>, Arc<metrics::Destination>)],
        alive: &daemon_kit::Part,
    ) -> anyhow::Result<()> {
        let cursor = src.cursor()?;
        if let Some(loss) = src.take_loss() {
            report_loss(&loss, outputs);
            self.loss = Some(match self.loss.take() {
                Some(old) => old.merge(loss),
                None => loss,
            });
        }
        let mut records = std::mem::take(&mut self.records);
        if !records.is_empty() {
            if let Some(loss) = self.loss.take() {
                records = with_loss_notices(records, &loss);
            }
        }
        self.bytes = 0;
        self.started = None;
        self.skipped = 0;
        self.slot_free = false;
        if records.is_empty() && cursor.is_none() {
            return Ok(());
        }
        send(outputs, Batch { records, cursor }, alive)
    }
}

fn send(
    outputs: &[(mpsc::Sender<Batch>, Arc<metrics::Destination>)],
    batch: Batch,
    alive: &daemon_kit::Part,
) -> anyhow::Result<()> {
    // Waiting for a destination (its retries can take as long as its outage) is not a stall.
    alive.idle();
    let mut open = 0;
    let mut batch = Some(batch);
    for (i, (tx, _)) in outputs.iter().enumerate() {
        let b = if i + 1 == outputs.len() {
            batch.take().expect("the last output takes the batch")
        } else {
            batch.clone().expect("the batch is still here")
        };
        // Blocks while the destination is busy: the journal is the buffer.
        if tx.blocking_send(b).is_ok() {
            open += 1;
        }
    }
    alive.beat();
    if open == 0 {
        anyhow::bail!("every destination of this source has stopped");
    }
    Ok(())
}

fn report_loss(loss: &Loss, outputs: &[(mpsc::Sender<Batch>, Arc<metrics::Destination>)]) {
    for (_, m) in outputs {
        match loss.count {
            Some(n) => add(&m.entries_lost, n),
            None => add(&m.losses_of_unknown_size, 1),
        }
        tracing::error!(
            destination = m.name,
            entries = loss.count,
            from = %ecs_event::format_time(&loss.from),
            to = %ecs_event::format_time(&loss.to),
            "journal entries were rotated or vacuumed away before they were shipped \
             (keep more journal: SystemMaxUse=/RuntimeMaxUse= in journald.conf)"
        );
    }
}

/// Put a notice about `loss` in front of the first record of every stream in the batch —
/// the streams being read when the hole appeared.
fn with_loss_notices(records: Vec<Record>, loss: &Loss) -> Vec<Record> {
    let count = match loss.count {
        Some(n) => n.to_string(),
        None => "an unknown number of".to_string(),
    };
    let text = format!(
        "journal-fanout: {count} events between {} and {} could not be delivered: \
         the journal rotated or vacuumed them away before they were shipped \
         (the count includes non-container journal entries)",
        ecs_event::format_time(&loss.from),
        ecs_event::format_time(&loss.to)
    );
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(records.len() + 1);
    for r in records {
        if seen.insert((r.group.clone(), r.stream.clone())) {
            out.push(notice(&r.group, &r.stream, r.event.time, text.clone()));
        }
        out.push(r);
    }
    out
}

fn notice(group: &str, stream: &str, time: DateTime<Utc>, message: String) -> Record {
    let mut event = Event::new(Level::Warn, time, message);
    event.data.insert(
        "journal_fanout_notice".into(),
        serde_json::Value::Bool(true),
    );
    Record {
        group: group.to_string(),
        stream: stream.to_string(),
        event,
    }
}

/// The notice text for events a destination refused.
pub fn rejected_notice_text(destination: &str, r: &Rejected) -> String {
    format!(
        "journal-fanout: {} events could not be delivered to {destination} between {} and {}: {}",
        r.count,
        ecs_event::format_time(&r.first),
        ecs_event::format_time(&r.last),
        r.reason
    )
}

/// Deliver batches to `sink` and save the cursor after each, until the reader side closes.
pub async fn deliver_loop<S: Sink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Batch>,
    checkpoint: Option<Checkpoint>,
    m: Arc<metrics::Destination>,
) -> anyhow::Result<()> {
    let name = sink.name();
    while let Some(batch) = rx.recv().await {
        if !batch.records.is_empty() {
            let n = batch.records.len() as u64;
            // Bytes per group, summed here so the counters take one lock per batch.
            let mut per_group: Vec<(String, u64)> = Vec::new();
            for r in &batch.records {
                let len = r.event.message.len() as u64;
                match per_group.iter_mut().find(|(g, _)| *g == r.group) {
                    Some((_, b)) => *b += len,
                    None => per_group.push((r.group.clone(), len)),
                }
            }
            let outcome = sink
                .deliver(batch.records)
                .await
                .with_context(|| format!("destination {name} failed"))?;
            let rejected: u64 = outcome.rejected.iter().map(|r| r.count as u64).sum();
            add(&m.events_delivered, n.saturating_sub(rejected));
            add(&m.batches_delivered, 1);
            // Refused events' bytes stay in (an estimate; they are counted in events_rejected).
            m.delivered(per_group.iter().map(|(g, b)| (g.as_str(), *b)));
            if rejected > 0 {
                add(&m.events_rejected, rejected);
                let notices = outcome
                    .rejected
                    .iter()
                    .map(|r| {
                        tracing::error!(
                            destination = name,
                            group = %r.group,
                            stream = %r.stream,
                            events = r.count,
                            reason = %r.reason,
                            "events refused by the destination"
                        );
                        // Now, so the destination's own time window accepts the notice.
                        notice(
                            &r.group,
                            &r.stream,
                            Utc::now(),
                            rejected_notice_text(name, r),
                        )
                    })
                    .collect();
                let again = sink
                    .deliver(notices)
                    .await
                    .with_context(|| format!("destination {name} failed"))?;
                for r in again.rejected {
                    tracing::error!(
                        destination = name,
                        group = %r.group,
                        stream = %r.stream,
                        reason = %r.reason,
                        "the notice about refused events was itself refused"
                    );
                }
            }
        }
        if let Some(cursor) = &batch.cursor {
            m.delivered_up_to(cursor);
        }
        if let (Some(cursor), Some(cp)) = (&batch.cursor, &checkpoint) {
            cp.save(cursor)?;
            add(&m.cursor_saves, 1);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            m.last_cursor_save_seconds.store(now, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(g: &str, s: &str, msg: &str) -> Record {
        Record {
            group: g.into(),
            stream: s.into(),
            event: Event::new(Level::Info, Utc::now(), msg),
        }
    }

    #[test]
    fn loss_notice_goes_before_each_stream() {
        let loss = Loss {
            count: Some(5),
            from: Utc::now(),
            to: Utc::now(),
        };
        let out = with_loss_notices(
            vec![rec("g", "a", "1"), rec("g", "b", "2"), rec("g", "a", "3")],
            &loss,
        );
        let msgs: Vec<_> = out.iter().map(|r| r.event.message.as_str()).collect();
        assert_eq!(msgs.len(), 5);
        assert!(msgs[0].starts_with("journal-fanout: 5 events between "));
        assert_eq!(msgs[1], "1");
        assert!(msgs[2].starts_with("journal-fanout: 5 events"));
        assert_eq!(&msgs[3..], ["2", "3"]);
    }
}
