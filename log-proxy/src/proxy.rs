//! The processor: parse → container → rate limit → journald fields, on one thread.
//!
//! It owns the container table, so no lock sits on the per-line path. Lines of a container
//! whose metadata is being looked up wait in that container's queue (keeping their order)
//! while every other container's lines go on; drop episodes are driven by a clock tick so the
//! last notice is written even when the container never logs again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender, TrySendError};

use crate::docker::{Answer, Lookups, Meta, LOOKUP_TIMEOUT};
use crate::intake::Messages;
use crate::journal::{container_fields, encode_line, Batch, WriterState, NOTICE_MESSAGE_ID};
use crate::limiter::{Budget, Drops, Limit, Notice};
use crate::metrics::Counters;
use crate::syslog;

/// Table key for messages that are not syslog or carry no tag: they share one budget and
/// are written under the identifier `log-proxy`.
const RAW_KEY: &[u8] = b" raw";
/// Bytes of lines held per container while its lookup is outstanding (Docker answers an
/// inspect of a starting container only once the start completes, while the container may
/// already log 80,000 lines/s); beyond it the lines go out with what the tag says.
const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;
/// A failed lookup is retried after this long (lines keep flowing meanwhile).
const RETRY_LOOKUP: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(100);
const IDLE_EVICT: Duration = Duration::from_secs(120);
const DESTROYED_EVICT: Duration = Duration::from_secs(10);
/// Lines per batch handed to the writer while journald is gone (see `flush_unless_holding`).
const HELD_BATCH: usize = 256;
const WRITER_WAIT: Duration = Duration::from_millis(100);

enum Lookup {
    Pending { since: Instant, queue: Queue },
    Done,
}

/// Lines waiting for their container's metadata, back to back (one allocation, not one
/// per line).
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    lines: Vec<(u8, usize)>,
}

impl Queue {
    fn push(&mut self, severity: u8, msg: &[u8]) {
        self.buf.extend_from_slice(msg);
        self.lines.push((severity, self.buf.len()));
    }

    fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        let mut start = 0;
        self.lines.iter().map(move |&(sev, end)| {
            let m = &self.buf[start..end];
            start = end;
            (sev, m)
        })
    }
}

struct Container {
    reference: String,
    meta: Option<Arc<Meta>>,
    lookup: Lookup,
    retry_lookup_at: Option<Instant>,
    fields: Vec<u8>,
    budget: Budget,
    drops: Drops,
    /// Lines lost while journald was unavailable and the buffer was full; reported when back.
    lost_down: u64,
    last_seen: Instant,
    destroyed_at: Option<Instant>,
}

/// What an entry in the outgoing batch is, so a batch that must be dropped is accounted.
#[derive(Clone, Copy)]
enum Kind {
    Line,
    Notice(u64),
}

pub struct Processor {
    default_limit: Limit,
    lookups: Option<Lookups>,
    counters: Arc<Counters>,
    writer: Arc<WriterState>,
    out: Sender<Batch>,
    /// A non-blocking client of the same journald, for writing without a hand-off.
    direct: Option<journal_native::Journal>,
    index: HashMap<Vec<u8>, usize>,
    slots: Vec<Option<Container>>,
    free: Vec<usize>,
    batch: Batch,
    owners: Vec<(usize, Kind)>,
    warned_labels: std::collections::HashSet<String>,
    /// When drop episodes are next checked (`tick`) and metrics next published.
    next_tick: Instant,
    next_publish: Instant,
    /// Beaten each time round the loop, for the systemd watchdog.
    alive: Option<daemon_kit::Part>,
}

impl Processor {
    pub fn new(
        default_limit: Limit,
        lookups: Option<Lookups>,
        counters: Arc<Counters>,
        writer: Arc<WriterState>,
        out: Sender<Batch>,
        direct: Option<journal_native::Journal>,
    ) -> Processor {
        if let Some(d) = &direct {
            let _ = d.set_nonblocking(true);
        }
        Processor {
            default_limit,
            lookups,
            counters,
            writer,
            out,
            direct,
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            batch: Batch::with_capacity(16),
            owners: Vec::with_capacity(64),
            warned_labels: Default::default(),
            next_tick: Instant::now() + TICK,
            next_publish: Instant::now(),
            alive: None,
        }
    }

    /// Report progress to the watchdog through `part`.
    pub fn watched(mut self, part: daemon_kit::Part) -> Processor {
        self.alive = Some(part);
        self
    }

    /// Run until the intake closes; then flush every queue and every open drop episode.
    pub fn run(mut self, intake: Receiver<Messages>, answers: Receiver<Answer>) {
        loop {
            select! {
                recv(intake) -> m => match m {
                    Ok(m) => self.messages(&m),
                    Err(_) => break,
                },
                recv(answers) -> a => if let Ok(a) = a { self.answer(a) },
                default(TICK) => {},
            }
            self.housekeeping();
            if self.batch.len() >= 64 || intake.is_empty() {
                self.flush_unless_holding();
            }
        }
        self.shutdown();
    }

    /// Like [`Processor::run`] for a datagram listener whose batches this thread receives
    /// itself: one thread from socket to journald in the common case (measured: each
    /// hand-off between threads costs a context switch). Runs until `stop` is set.
    pub fn run_dgram(
        mut self,
        mut rx: crate::intake::DgramReceiver,
        stop: &std::sync::atomic::AtomicBool,
        answers: Receiver<Answer>,
        stats: &crate::intake::IntakeStats,
        drain_at_stop: bool,
    ) -> anyhow::Result<()> {
        let mut result = Ok(());
        while !stop.load(Ordering::Relaxed) {
            match rx.recv(stats) {
                Ok(Some(m)) => self.messages(&m),
                Ok(None) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            while let Ok(a) = answers.try_recv() {
                self.answer(a);
            }
            self.housekeeping();
            self.flush_unless_holding();
        }
        if drain_at_stop && result.is_ok() {
            result = rx.drain(stats, |m| self.messages(&m));
        }
        self.shutdown();
        result
    }

    /// The clock-driven work of both loops: drop notices of quiet containers, metrics.
    fn housekeeping(&mut self) {
        if let Some(a) = &self.alive {
            a.beat();
        }
        let now = Instant::now();
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + TICK;
        }
        if now >= self.next_publish {
            self.publish();
            self.next_publish = now + Duration::from_secs(1);
        }
    }

    fn messages(&mut self, m: &Messages) {
        let now = Instant::now();
        for raw in m.iter() {
            match syslog::parse(raw) {
                Some(msg) if is_reference(msg.container_ref()) => {
                    let idx = self.container(msg.container_ref(), now);
                    self.line(idx, msg.severity, msg.msg, now);
                }
                Some(msg) => {
                    // Syslog without a usable tag: keep the line, under the shared key.
                    let idx = self.container(RAW_KEY, now);
                    self.line(idx, msg.severity, msg.msg, now);
                }
                None => {
                    self.counters.unparsable.fetch_add(1, Ordering::Relaxed);
                    let idx = self.container(RAW_KEY, now);
                    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
                    self.line(idx, 5, raw, now);
                }
            }
        }
    }

    /// The slot of `key`, created (and its lookup requested) on first sight.
    fn container(&mut self, key: &[u8], now: Instant) -> usize {
        if let Some(&i) = self.index.get(key) {
            let c = self.slots[i].as_mut().unwrap();
            c.last_seen = now;
            if c.retry_lookup_at.is_some_and(|t| now >= t) {
                c.retry_lookup_at = None;
                if let Some(l) = &self.lookups {
                    l.request(c.reference.clone());
                }
            }
            return i;
        }
        let reference = String::from_utf8_lossy(key).into_owned();
        let raw = key == RAW_KEY;
        let lookup = match &self.lookups {
            Some(l) if !raw => {
                l.request(reference.clone());
                Lookup::Pending {
                    since: now,
                    queue: Queue::default(),
                }
            }
            _ => Lookup::Done,
        };
        let fields = if raw {
            let mut f = Vec::new();
            journal_native::encode_field(&mut f, "SYSLOG_IDENTIFIER", b"log-proxy");
            journal_native::encode_field(&mut f, "LOG_PROXY_UNPARSABLE", b"1");
            f
        } else {
            container_fields(&reference, None)
        };
        let c = Container {
            reference,
            meta: None,
            lookup,
            retry_lookup_at: None,
            fields,
            budget: Budget::new(self.default_limit),
            drops: Drops::default(),
            lost_down: 0,
            last_seen: now,
            destroyed_at: None,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(c);
                i
            }
            None => {
                self.slots.push(Some(c));
                self.slots.len() - 1
            }
        };
        self.index.insert(key.to_vec(), i);
        self.counters
            .containers
            .store(self.index.len() as u64, Ordering::Relaxed);
        i
    }

    fn line(&mut self, idx: usize, severity: u8, msg: &[u8], now: Instant) {
        let c = self.slots[idx].as_mut().unwrap();
        if let Lookup::Pending { queue, .. } = &mut c.lookup {
            if queue.buf.len() + msg.len() <= MAX_QUEUED_BYTES {
                queue.push(severity, msg);
                return;
            }
            let reason = format!(
                "more than {} MiB of lines arrived before Docker answered",
                MAX_QUEUED_BYTES >> 20
            );
            self.resolve(idx, None, Some(reason));
            return self.line(idx, severity, msg, now);
        }
        self.admit(idx, severity, msg, now);
    }

    /// Rate-limit one line of a container whose fields are known, and queue it for journald.
    fn admit(&mut self, idx: usize, severity: u8, msg: &[u8], now: Instant) {
        let c = self.slots[idx].as_mut().unwrap();
        if c.budget.admit(severity) {
            self.batch
                .push(|out| encode_line(out, &c.fields, severity, msg));
            self.owners.push((idx, Kind::Line));
            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            self.counters
                .forwarded_bytes
                .fetch_add(msg.len() as u64, Ordering::Relaxed);
        } else {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.counters
                .dropped_bytes
                .fetch_add(msg.len() as u64, Ordering::Relaxed);
            if let Some(n) = c.drops.record(now) {
                self.notice(idx, n);
            }
        }
    }

    /// Write a drop notice into the container's own stream: its fields, warning priority,
    /// a fixed MESSAGE_ID and N_DROPPED. Notices bypass the limiter.
    fn notice(&mut self, idx: usize, n: Notice) {
        let c = self.slots[idx].as_ref().unwrap();
        let text = n.text(c.budget.limit());
        let count = n.count().to_string();
        self.push_notice(idx, &text, &count, n.count());
    }

    fn push_notice(&mut self, idx: usize, text: &str, n_dropped: &str, count: u64) {
        let c = self.slots[idx].as_ref().unwrap();
        self.batch.push(|out| {
            encode_line(out, &c.fields, 4, text.as_bytes());
            journal_native::encode_field(out, "MESSAGE_ID", NOTICE_MESSAGE_ID.as_bytes());
            journal_native::encode_field(out, "N_DROPPED", n_dropped.as_bytes());
        });
        self.owners.push((idx, Kind::Notice(count)));
        self.counters.notices.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(container = %c.reference, notice = %text, "rate limit");
    }

    fn answer(&mut self, a: Answer) {
        match a {
            Answer::Found { reference, meta } => {
                let now = Instant::now();
                let idx = match self.index.get(reference.as_bytes()) {
                    Some(&i) => i,
                    // Warmed on `start`: create the entry so the first line needs no lookup.
                    None => {
                        let lookups = self.lookups.take();
                        let i = self.container(reference.as_bytes(), now);
                        self.lookups = lookups;
                        i
                    }
                };
                self.resolve(idx, Some(meta), None);
            }
            Answer::Failed { reference, reason } => {
                if let Some(&i) = self.index.get(reference.as_bytes()) {
                    self.resolve(i, None, Some(reason));
                }
            }
            Answer::Destroyed { id_full } => {
                let now = Instant::now();
                for c in self.slots.iter_mut().flatten() {
                    if c.meta.as_ref().is_some_and(|m| m.id_full == id_full) {
                        c.destroyed_at = Some(now);
                    }
                }
            }
        }
    }

    /// Settle a container's metadata (or its absence) and release its queued lines in order.
    fn resolve(&mut self, idx: usize, meta: Option<Arc<Meta>>, failure: Option<String>) {
        let default = self.default_limit;
        let c = self.slots[idx].as_mut().unwrap();
        if let Some(reason) = failure {
            self.counters
                .docker_lookup_failures
                .fetch_add(1, Ordering::Relaxed);
            if c.meta.is_none() {
                tracing::warn!(container = %c.reference, %reason, "forwarding without Docker metadata; will look again in 30s");
            }
            c.retry_lookup_at = Some(Instant::now() + RETRY_LOOKUP);
        }
        if let Some(m) = meta {
            c.fields = container_fields(&c.reference, Some(&m));
            let limit = match &m.limit {
                Some(Ok(l)) => *l,
                Some(Err(e)) => {
                    if self.warned_labels.insert(m.id_full.clone()) {
                        tracing::warn!(container = %m.name, error = %e, "ignoring bad log-proxy.rate-limit label; using the default limit");
                    }
                    default
                }
                None => default,
            };
            if limit != c.budget.limit() {
                c.budget = Budget::new(limit);
            }
            c.meta = Some(m);
            c.retry_lookup_at = None;
        }
        let queued = match std::mem::replace(&mut c.lookup, Lookup::Done) {
            Lookup::Pending { queue, .. } => queue,
            Lookup::Done => Queue::default(),
        };
        let now = Instant::now();
        for (sev, msg) in queued.iter() {
            self.admit(idx, sev, msg, now);
            if self.batch.len() >= 64 {
                self.flush();
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        let up = self.writer.up.load(Ordering::Relaxed);
        let mut evict = Vec::new();
        for i in 0..self.slots.len() {
            let Some(c) = self.slots[i].as_mut() else {
                continue;
            };
            if let Lookup::Pending { since, .. } = &c.lookup {
                if now.duration_since(*since) > LOOKUP_TIMEOUT + Duration::from_secs(1) {
                    let reason = "Docker did not answer in time".to_string();
                    self.resolve(i, None, Some(reason));
                    continue;
                }
            }
            let c = self.slots[i].as_mut().unwrap();
            if let Some(n) = c.drops.tick(now, c.budget.limit().interval) {
                self.notice(i, n);
            }
            let c = self.slots[i].as_mut().unwrap();
            if up && c.lost_down > 0 {
                let n = std::mem::take(&mut c.lost_down);
                let text = format!("log-proxy: lost {n} log lines while journald was unavailable (the proxy's buffer was full)");
                self.push_notice(i, &text, &n.to_string(), n);
            }
            let c = self.slots[i].as_ref().unwrap();
            let idle = now.duration_since(c.last_seen);
            let settled = matches!(c.lookup, Lookup::Done) && !c.drops.active() && c.lost_down == 0;
            let gone = c
                .destroyed_at
                .is_some_and(|t| now.duration_since(t) > DESTROYED_EVICT);
            if settled
                && (idle > IDLE_EVICT.max(2 * c.budget.limit().interval)
                    || (gone && idle > DESTROYED_EVICT))
            {
                evict.push(i);
            }
        }
        if !evict.is_empty() {
            // Entries in the unsent batch refer to slots: send them before reusing any.
            self.flush();
            for i in evict {
                let c = self.slots[i].take().unwrap();
                self.index.remove(c.reference.as_bytes());
                self.free.push(i);
            }
            self.counters
                .containers
                .store(self.index.len() as u64, Ordering::Relaxed);
        }
    }

    /// [`Processor::flush`], except while journald is gone and the writer already holds
    /// batches to retry: then lines gather into batches of [`HELD_BATCH`] first. The writer's
    /// queue holds 128 batches, so an outage is bridged for 128 × `HELD_BATCH` lines, not 128
    /// lines when they arrive one datagram at a time.
    fn flush_unless_holding(&mut self) {
        let holding = !self.writer.up.load(Ordering::Relaxed) && !self.out.is_empty();
        if holding && self.batch.len() < HELD_BATCH {
            return;
        }
        self.flush();
    }

    /// Hand the batch to the writer. While journald is up, wait (back-pressure to Docker);
    /// while it is down and the queue is full, count the batch's lines as lost, per container.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::replace(&mut self.batch, Batch::with_capacity(16));
        let mut owners = std::mem::take(&mut self.owners);
        let sent = self.write_direct(&batch);
        if sent == batch.len() {
            self.owners = owners;
            self.owners.clear();
            return;
        }
        if sent > 0 {
            batch = batch.split_from(sent);
            owners.drain(..sent);
        }
        self.writer.in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            let up = self.writer.up.load(Ordering::Relaxed);
            let r = if up {
                self.out
                    .send_timeout(batch, WRITER_WAIT)
                    .map_err(|e| match e {
                        crossbeam_channel::SendTimeoutError::Timeout(b) => TrySendError::Full(b),
                        crossbeam_channel::SendTimeoutError::Disconnected(b) => {
                            TrySendError::Disconnected(b)
                        }
                    })
            } else {
                self.out.try_send(batch)
            };
            match r {
                Ok(()) => break,
                Err(TrySendError::Full(b)) if up => {
                    // Back-pressure from a slow journald: waiting, not wedged.
                    if let Some(a) = &self.alive {
                        a.beat();
                    }
                    batch = b
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.writer.in_flight.fetch_sub(1, Ordering::AcqRel);
                    self.lose(&owners);
                    break;
                }
            }
        }
        self.owners = owners;
        self.owners.clear();
    }

    /// Write from the front of `batch` straight to journald while that needs no waiting and
    /// the writer holds nothing (so order is kept). Returns how many entries went out.
    fn write_direct(&self, batch: &Batch) -> usize {
        let Some(j) = &self.direct else { return 0 };
        if self.writer.in_flight.load(Ordering::Acquire) != 0
            || !self.writer.up.load(Ordering::Relaxed)
        {
            return 0;
        }
        let entries = batch.entries();
        let mut i = 0;
        while i < entries.len() {
            let end = (i + crate::journal::BATCH).min(entries.len());
            match j.send_many(&entries[i..end]) {
                Ok(n) => i += n,
                // Full, gone, or anything odd: the writer retries, flags and counts.
                Err(_) => break,
            }
        }
        self.writer.written.fetch_add(i as u64, Ordering::Relaxed);
        i
    }

    fn lose(&mut self, owners: &[(usize, Kind)]) {
        for &(i, kind) in owners {
            let Some(c) = self.slots[i].as_mut() else {
                continue;
            };
            match kind {
                Kind::Line => {
                    c.lost_down += 1;
                    self.counters
                        .lost_journald_down
                        .fetch_add(1, Ordering::Relaxed);
                }
                // A lost notice's count is reported again later, so the counts still add up.
                Kind::Notice(n) => c.lost_down += n,
            }
        }
    }

    fn publish(&self) {
        let mut top: Vec<(String, String, u64)> = self
            .slots
            .iter()
            .flatten()
            .filter(|c| c.drops.total > 0)
            .map(|c| {
                let name = c.meta.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                (c.reference.clone(), name, c.drops.total)
            })
            .collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.2));
        top.truncate(50);
        *self.counters.top_dropped.lock().unwrap() = top;
    }

    fn shutdown(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i]
                .as_ref()
                .is_some_and(|c| matches!(c.lookup, Lookup::Pending { .. }))
            {
                self.resolve(i, None, Some("shutting down before Docker answered".into()));
            }
            let Some(c) = self.slots[i].as_mut() else {
                continue;
            };
            if let Some(n) = c.drops.flush() {
                self.notice(i, n);
            }
            let c = self.slots[i].as_mut().unwrap();
            if c.lost_down > 0 {
                let n = std::mem::take(&mut c.lost_down);
                let text = format!("log-proxy: lost {n} log lines while journald was unavailable (the proxy's buffer was full)");
                self.push_notice(i, &text, &n.to_string(), n);
            }
            if self.batch.len() >= 64 {
                self.flush();
            }
        }
        self.flush();
        self.publish();
    }
}

/// A plausible container reference (ID, ID prefix or name) — what Docker's tag gives.
fn is_reference(r: &[u8]) -> bool {
    !r.is_empty()
        && r.len() <= 128
        && r[0].is_ascii_alphanumeric()
        && r.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}
