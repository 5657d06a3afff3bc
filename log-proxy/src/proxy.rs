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

use crossbeam_channel::{select, Receiver, Sender};

use crate::docker::{Answer, Lookups, Meta, LOOKUP_TIMEOUT};
use crate::episode::Episode;
use crate::intake::Messages;
use crate::journal::{container_fields, encode_line, Batch, WriterState, NOTICE_MESSAGE_ID};
use crate::limiter::{Budget, Drops, Notice};
use crate::metrics::Counters;
use crate::policy::Policy;
use crate::syslog;

/// Table key for messages that are not syslog, or in Docker's forms without a tag: they
/// share one budget and are written under the identifier `log-proxy`. (Keys starting with a
/// space cannot be tags: a tag never holds whitespace.)
const RAW_KEY: &[u8] = b" raw";
/// Table key prefix for local syslog lines without a tag (Python's `SysLogHandler`
/// without `ident`, `logger` without `-t` on some systems): keyed by the sending process
/// when the kernel names it (`SO_PASSCRED`), else all in one budget. Written without a
/// SYSLOG_IDENTIFIER, as journald writes them.
const UNTAGGED_KEY: &[u8] = b" untagged";
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
/// `--journal-buffer`'s default: 64 MiB of encoded entries, about 200,000 Docker lines.
pub const DEFAULT_BUFFER_BYTES: u64 = 64 * 1024 * 1024;
/// The writer's queue while journald is there but slower than the senders (about what the
/// 128-batch queue held before the buffer was sized in bytes).
const UP_QUEUE_BYTES: u64 = 2 * 1024 * 1024;
/// How long the processor waits for room in journald's socket itself, per batch, before
/// handing the rest to the writer: a consumer merely slower than the senders frees room
/// again and again within this, and waiting here costs one thread's sleep instead of a
/// hand-off that wakes the writer and keeps it busy (measured: fewer context switches per
/// line, `log-proxy/bench/switches.sh`). A longer stall goes to the writer's buffer, so
/// intake keeps up through it.
const DIRECT_WAIT: Duration = Duration::from_millis(20);

enum Lookup {
    Pending { since: Instant, queue: Queue },
    Done,
}

/// Lines waiting for their container's metadata, back to back (one allocation, not one
/// per line).
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    /// (severity, end of the message, end of its extra fields) per line.
    lines: Vec<(u8, usize, usize)>,
}

impl Queue {
    /// A line and its per-line fields (`extra`, already encoded).
    fn push(&mut self, severity: u8, msg: &[u8], extra: &[u8]) {
        self.buf.extend_from_slice(msg);
        let msg_end = self.buf.len();
        self.buf.extend_from_slice(extra);
        self.lines.push((severity, msg_end, self.buf.len()));
    }

    fn iter(&self) -> impl Iterator<Item = (u8, &[u8], &[u8])> {
        let mut start = 0;
        self.lines.iter().map(move |&(sev, msg_end, end)| {
            let m = &self.buf[start..msg_end];
            let extra = &self.buf[msg_end..end];
            start = end;
            (sev, m, extra)
        })
    }
}

struct Container {
    /// Its key in the processor's table.
    key: Vec<u8>,
    /// What the operator's log and Docker lookups call it.
    reference: String,
    meta: Option<Arc<Meta>>,
    lookup: Lookup,
    retry_lookup_at: Option<Instant>,
    /// Docker lookups failing for it: warned once, not on every 30 s retry.
    no_meta: Episode,
    fields: Vec<u8>,
    budget: Budget,
    /// The policy rule that chose the budget (`None`: the defaults).
    rule: Option<Arc<str>>,
    /// Its entry in the processor's per-rule drop counts.
    rule_slot: usize,
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
    /// log-proxy's own report (refused senders): counted in its own metric already.
    Own,
}

pub struct Processor {
    policy: Arc<Policy>,
    /// New policies from reloads (SIGHUP, the file changing), applied between lines.
    policies: Option<Receiver<Arc<Policy>>>,
    /// Lines and bytes dropped per rule (`default`, `label` or a rule's name), published to
    /// the metrics once a second; owned here so the drop path takes no lock.
    /// indexed by a container's `rule_slot`: the drop path neither hashes nor allocates.
    rule_drops: Vec<(Arc<str>, u64, u64)>,
    lookups: Option<Lookups>,
    counters: Arc<Counters>,
    writer: Arc<WriterState>,
    out: Sender<Batch>,
    /// Bytes of encoded entries the writer's queue may hold (`--journal-buffer`).
    buffer_bytes: u64,
    /// The intake's counters, for the report of refused senders.
    intake: Option<Arc<crate::intake::IntakeStats>>,
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
    /// Per-line fields of the line at hand (SYSLOG_FACILITY, SYSLOG_PID), reused.
    extra: Vec<u8>,
    /// Keys of untagged senders, reused (`" untagged 1234"`).
    key: Vec<u8>,
}

impl Processor {
    pub fn new(
        policy: Arc<Policy>,
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
            policy,
            policies: None,
            rule_drops: vec![("default".into(), 0, 0)],
            lookups,
            counters,
            writer,
            out,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            intake: None,
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
            extra: Vec::new(),
            key: Vec::new(),
        }
    }

    /// Let the writer's queue hold up to `bytes` of encoded entries (at least one batch
    /// always fits, however large).
    pub fn buffer_bytes(mut self, bytes: u64) -> Processor {
        self.buffer_bytes = bytes;
        self
    }

    /// Take new policies from `rx` (reloads) and move existing containers to them.
    pub fn reloading(mut self, rx: Receiver<Arc<Policy>>) -> Processor {
        self.policies = Some(rx);
        self
    }

    /// Report the senders the intake refused (counted in `stats`) into journald.
    pub fn reporting_refusals(mut self, stats: Arc<crate::intake::IntakeStats>) -> Processor {
        self.intake = Some(stats);
        self
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
        if let Some(p) = self.policies.as_ref().and_then(|rx| rx.try_recv().ok()) {
            self.apply(p);
        }
        if now >= self.next_tick {
            self.report_refusals(now);
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
        let mut extra = std::mem::take(&mut self.extra);
        for (i, raw) in m.iter().enumerate() {
            extra.clear();
            let Some(msg) = syslog::parse(raw) else {
                // Not syslog: the whole line, as text (no NULs, line end stripped).
                crate::metrics::bump(&self.counters.unparsable, 1);
                let idx = self.container(RAW_KEY, RAW_KEY, now);
                let text = as_text(raw);
                self.line(idx, 5, &text, &[], now);
                continue;
            };
            if msg.format == syslog::Format::Local {
                // The fields journald writes per line besides MESSAGE and PRIORITY.
                if msg.facility != 0 {
                    let mut n = [0u8; 3];
                    journal_native::encode_field(
                        &mut extra,
                        "SYSLOG_FACILITY",
                        decimal(msg.facility, &mut n),
                    );
                }
                if let Some(pid) = msg.pid {
                    journal_native::encode_field(&mut extra, "SYSLOG_PID", pid);
                }
            }
            let idx = if !msg.tag.is_empty() {
                let key = if is_reference(msg.container_ref()) {
                    msg.container_ref()
                } else {
                    msg.tag
                };
                // Docker's forms name the container as before (without `docker/`); a
                // local form's identifier is what journald would write, whole.
                let ident = if msg.format == syslog::Format::Local {
                    msg.tag
                } else {
                    key
                };
                self.container(key, ident, now)
            } else if msg.format == syslog::Format::Local {
                if msg.tagged {
                    // `<PRI>: MSG`: journald writes an empty SYSLOG_IDENTIFIER.
                    journal_native::encode_field(&mut extra, "SYSLOG_IDENTIFIER", b"");
                }
                let mut key = std::mem::take(&mut self.key);
                key.clear();
                key.extend_from_slice(UNTAGGED_KEY);
                if let Some(pid) = m.pid(i) {
                    key.push(b' ');
                    key.extend_from_slice(pid.to_string().as_bytes());
                }
                let idx = self.container(&key, &key, now);
                self.key = key;
                idx
            } else {
                // Docker's forms without a usable tag: kept, under the shared key.
                self.container(RAW_KEY, RAW_KEY, now)
            };
            self.line(idx, msg.severity, msg.msg, &extra, now);
        }
        self.extra = extra;
    }

    /// The slot of `key`, created (and its lookup requested) on first sight; `tag` is what
    /// its lines say in SYSLOG_IDENTIFIER and CONTAINER_TAG while Docker has not named it.
    fn container(&mut self, key: &[u8], tag: &[u8], now: Instant) -> usize {
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
        let raw = key == RAW_KEY;
        let untagged = !raw && key.starts_with(UNTAGGED_KEY);
        let reference = if untagged {
            String::from_utf8_lossy(&key[1..]).into_owned()
        } else {
            String::from_utf8_lossy(key).into_owned()
        };
        let lookup = match &self.lookups {
            // Only what could name a container is asked about.
            Some(l) if !raw && !untagged && is_reference(key) => {
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
        } else if untagged {
            Vec::new()
        } else {
            tag_fields(tag)
        };
        let assigned = self.policy.assign(None);
        let c = Container {
            key: key.to_vec(),
            reference,
            meta: None,
            lookup,
            retry_lookup_at: None,
            no_meta: Episode::default(),
            fields,
            budget: Budget::new(assigned.limit),
            rule_slot: rule_slot(&mut self.rule_drops, assigned.rule.as_deref()),
            rule: assigned.rule,
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

    fn line(&mut self, idx: usize, severity: u8, msg: &[u8], extra: &[u8], now: Instant) {
        let c = self.slots[idx].as_mut().unwrap();
        if let Lookup::Pending { queue, .. } = &mut c.lookup {
            if queue.buf.len() + msg.len() <= MAX_QUEUED_BYTES {
                queue.push(severity, msg, extra);
                return;
            }
            let reason = format!(
                "more than {} MiB of lines arrived before Docker answered",
                MAX_QUEUED_BYTES >> 20
            );
            self.resolve(idx, None, Some(reason));
            return self.line(idx, severity, msg, extra, now);
        }
        self.admit(idx, severity, msg, extra, now);
    }

    /// Rate-limit one line of a container whose fields are known, and queue it for journald.
    fn admit(&mut self, idx: usize, severity: u8, msg: &[u8], extra: &[u8], now: Instant) {
        let c = self.slots[idx].as_mut().unwrap();
        if c.budget.admit(severity, msg.len()) {
            self.batch.push(|out| {
                encode_line(out, &c.fields, severity, msg);
                out.extend_from_slice(extra);
            });
            self.owners.push((idx, Kind::Line));
            crate::metrics::bump(&self.counters.forwarded, 1);
            crate::metrics::bump(&self.counters.forwarded_bytes, msg.len() as u64);
        } else {
            crate::metrics::bump(&self.counters.rate_limited, 1);
            crate::metrics::bump(&self.counters.dropped_bytes, msg.len() as u64);
            let t = &mut self.rule_drops[c.rule_slot];
            t.1 += 1;
            t.2 += msg.len() as u64;
            if let Some(n) = c.drops.record(now, msg.len() as u64) {
                self.notice(idx, n);
            }
        }
    }

    /// Write a drop notice into the container's own stream: its fields, warning priority,
    /// a fixed MESSAGE_ID and N_DROPPED. Notices bypass the limiter.
    fn notice(&mut self, idx: usize, n: Notice) {
        let c = self.slots[idx].as_ref().unwrap();
        let text = n.text(c.budget.limit(), c.rule.as_deref());
        let rule = c.rule.clone();
        self.batch.push(|out| {
            encode_line(out, &c.fields, 4, text.as_bytes());
            journal_native::encode_field(out, "MESSAGE_ID", NOTICE_MESSAGE_ID.as_bytes());
            journal_native::encode_field(out, "N_DROPPED", n.count().to_string().as_bytes());
            journal_native::encode_field(out, "N_DROPPED_BYTES", n.bytes().to_string().as_bytes());
            journal_native::encode_field(
                out,
                "LOG_PROXY_RULE",
                rule.as_deref().unwrap_or("default").as_bytes(),
            );
        });
        self.owners.push((idx, Kind::Notice(n.count())));
        self.counters.notices.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(container = %c.reference, notice = %text, "rate limit");
    }

    /// Move every container to the budget `policy` gives it. One whose budget is unchanged
    /// keeps it as it is (no reset); one that moves while dropping starts its new budget
    /// spent, so a reload never lets a flood through. Between two lines: none is lost or
    /// reordered.
    fn apply(&mut self, policy: Arc<Policy>) {
        // The file was read and checked on the runtime thread; this is all the processor
        // pauses for, and the log says how long.
        let started = Instant::now();
        let mut moved = 0;
        for c in self.slots.iter_mut().flatten() {
            let a = policy.assign(c.meta.as_deref());
            if a.limit != c.budget.limit() {
                c.budget = Budget::moved(a.limit, c.drops.active());
                moved += 1;
            }
            c.rule_slot = rule_slot(&mut self.rule_drops, a.rule.as_deref());
            c.rule = a.rule;
        }
        tracing::info!(
            policy = %policy.source.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            rules = policy.rules.len(),
            defaults = %policy.defaults,
            containers = self.index.len(),
            moved,
            pause_us = started.elapsed().as_micros() as u64,
            "policy reloaded: {} rules; {moved} of {} containers moved to a new budget",
            policy.rules.len(),
            self.index.len()
        );
        self.policy = policy;
    }

    /// Write the report of refused senders (see [`crate::trust`]) when one is due, under
    /// `SYSLOG_IDENTIFIER=log-proxy`.
    fn report_refusals(&mut self, now: Instant) {
        let Some(stats) = &self.intake else { return };
        let Some(text) = stats.refused.due(now) else {
            return;
        };
        self.batch.push(|out| {
            journal_native::encode_field(out, "MESSAGE", text.as_bytes());
            out.extend_from_slice(b"PRIORITY=4\n");
            journal_native::encode_field(out, "SYSLOG_IDENTIFIER", b"log-proxy");
            journal_native::encode_field(out, "LOG_PROXY_REFUSED", b"1");
        });
        self.owners.push((usize::MAX, Kind::Own));
        tracing::warn!("{text}");
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
                        let i = self.container(reference.as_bytes(), reference.as_bytes(), now);
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
        let policy = self.policy.clone();
        let c = self.slots[idx].as_mut().unwrap();
        if let Some(reason) = failure {
            self.counters
                .docker_lookup_failures
                .fetch_add(1, Ordering::Relaxed);
            if c.meta.is_none() && c.no_meta.hit() {
                tracing::warn!(container = %c.reference, %reason, "forwarding without Docker metadata; will look again every 30s (logged again when found)");
            }
            c.retry_lookup_at = Some(Instant::now() + RETRY_LOOKUP);
        }
        if let Some(m) = meta {
            if let Some(ended) = c.no_meta.end() {
                tracing::info!(container = %c.reference, name = %m.name, "Docker metadata found (lookups failed {ended})");
            }
            c.fields = container_fields(&c.reference, Some(&m));
            if let Some(Err(e)) = &m.limit {
                if self.warned_labels.insert(m.id_full.clone()) {
                    tracing::warn!(container = %m.name, error = %e, "ignoring bad log-proxy.rate-limit label; using the policy's limit");
                }
            }
            let a = policy.assign(Some(&m));
            if a.limit != c.budget.limit() {
                c.budget = Budget::new(a.limit);
            }
            c.rule_slot = rule_slot(&mut self.rule_drops, a.rule.as_deref());
            c.rule = a.rule;
            c.meta = Some(m);
            c.retry_lookup_at = None;
        }
        let queued = match std::mem::replace(&mut c.lookup, Lookup::Done) {
            Lookup::Pending { queue, .. } => queue,
            Lookup::Done => Queue::default(),
        };
        let now = Instant::now();
        for (sev, msg, extra) in queued.iter() {
            self.admit(idx, sev, msg, extra, now);
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
                self.index.remove(&c.key);
                self.free.push(i);
            }
            self.counters
                .containers
                .store(self.index.len() as u64, Ordering::Relaxed);
        }
    }

    /// [`Processor::flush`], except while journald is gone and the writer already holds
    /// batches to retry: then lines gather into batches of [`HELD_BATCH`] first (fewer,
    /// larger hand-offs; the buffer itself is bounded in bytes, see `flush`).
    fn flush_unless_holding(&mut self) {
        let holding = !self.writer.up.load(Ordering::Relaxed) && !self.out.is_empty();
        if holding && self.batch.len() < HELD_BATCH {
            return;
        }
        self.flush();
    }

    /// Hand the batch to the writer. The writer's queue holds up to `buffer_bytes` of
    /// encoded entries (`--journal-buffer`). While journald is up and the queue is full,
    /// wait (back-pressure to Docker); while it is gone and the queue is full, count the
    /// batch's lines as lost, per container.
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
        let bytes = batch.bytes() as u64;
        loop {
            let up = self.writer.up.load(Ordering::Relaxed);
            // While journald takes entries, a short queue: back-pressure reaches Docker
            // early and memory stays small. Only while it is gone does the queue grow to the
            // whole outage buffer.
            let limit = if up {
                self.buffer_bytes.min(UP_QUEUE_BYTES)
            } else {
                self.buffer_bytes
            };
            if self.writer.admit(bytes, limit) {
                self.writer.in_flight.fetch_add(1, Ordering::AcqRel);
                if self.out.send(batch).is_err() {
                    self.writer.in_flight.fetch_sub(1, Ordering::AcqRel);
                    self.writer.release(bytes);
                    self.lose(&owners);
                }
                break;
            }
            if !up {
                self.lose(&owners);
                break;
            }
            // Back-pressure from a slow journald: waiting, not wedged.
            self.writer.wait_for_room(bytes, limit, WRITER_WAIT);
            if let Some(a) = &self.alive {
                a.beat();
            }
        }
        self.owners = owners;
        self.owners.clear();
    }

    /// Write from the front of `batch` straight to journald while the writer holds nothing
    /// (so order is kept), waiting up to [`DIRECT_WAIT`] for room in its socket. Returns
    /// how many entries went out.
    fn write_direct(&self, batch: &Batch) -> usize {
        let Some(j) = &self.direct else { return 0 };
        if self.writer.in_flight.load(Ordering::Acquire) != 0
            || !self.writer.up.load(Ordering::Relaxed)
        {
            return 0;
        }
        let entries = batch.entries();
        let mut i = 0;
        let mut deadline = None;
        while i < entries.len() {
            let end = (i + crate::journal::BATCH).min(entries.len());
            match j.send_many(&entries[i..end]) {
                Ok(n) => i += n,
                Err(journal_native::SendError::WouldBlock { .. }) => {
                    let until = *deadline.get_or_insert_with(|| Instant::now() + DIRECT_WAIT);
                    if Instant::now() >= until {
                        break; // still full: the writer's buffer takes the rest
                    }
                    j.wait_for_room(Duration::from_millis(1));
                }
                // Gone, or anything odd: the writer retries, flags and counts.
                Err(_) => break,
            }
        }
        self.writer.written.fetch_add(i as u64, Ordering::Relaxed);
        i
    }

    fn lose(&mut self, owners: &[(usize, Kind)]) {
        for &(i, kind) in owners {
            let Some(c) = self.slots.get_mut(i).and_then(|s| s.as_mut()) else {
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
                Kind::Own => {}
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
        {
            let mut r = self.counters.rule_dropped.lock().unwrap();
            for (rule, lines, bytes) in self.rule_drops.iter().filter(|t| t.1 > 0) {
                r.insert(rule.to_string(), (*lines, *bytes));
            }
        }
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

/// The entry of `rule` (`None`: `default`) in the per-rule drop counts, added on first use.
/// Called when a budget is assigned, never per line; rules are few.
fn rule_slot(drops: &mut Vec<(Arc<str>, u64, u64)>, rule: Option<&str>) -> usize {
    let name = rule.unwrap_or("default");
    match drops.iter().position(|(r, _, _)| &**r == name) {
        Some(i) => i,
        None => {
            drops.push((name.into(), 0, 0));
            drops.len() - 1
        }
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

/// The fields of a tag's lines while Docker has not named a container for it (or never
/// will: a local program's tag). Bytes as sent; journald takes any.
fn tag_fields(tag: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(tag) {
        Ok(t) => container_fields(t, None),
        Err(_) => {
            let mut f = Vec::new();
            journal_native::encode_field(&mut f, "SYSLOG_IDENTIFIER", tag);
            journal_native::encode_field(&mut f, "CONTAINER_TAG", tag);
            f
        }
    }
}

/// A datagram that is not syslog, as text: trailing line ends, whitespace and NULs
/// stripped (as journald strips them), an inner NUL shown as U+FFFD, never kept raw.
fn as_text(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let end = raw
        .iter()
        .rposition(|&c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0))
        .map_or(0, |i| i + 1);
    let raw = &raw[..end];
    if !raw.contains(&0) {
        return raw.into();
    }
    let mut out = Vec::with_capacity(raw.len() + 8);
    for &c in raw {
        if c == 0 {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// `n` in decimal, in `buf`.
fn decimal(n: u8, buf: &mut [u8; 3]) -> &[u8] {
    let mut i = 3;
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + n % 10;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}
