//! The journal is read once for every destination: one reader decodes each entry once,
//! routes it, and builds batches of shared records (`Arc`) that each destination's delivery
//! task receives through its own small bounded channel; each destination saves its own
//! cursor after its own delivery. Data flows: source → [`read_loop`] (route, batch) →
//! channel → [`deliver_loop`] (sink) → checkpoint.
//!
//! Isolation: a destination whose channel has taken no batch for [`STALL`] while the reader
//! waits for it (an outage, throttling) leaves the shared read: it continues from the cursor
//! of the last batch it took, with a reader of its own ([`own_read`]) that sends only to it,
//! so the others go on at full speed. Once that reader has caught up with the journal's head
//! it offers to rejoin; the shared reader accepts when both stand on the same entry, so no
//! entry is skipped or sent twice across the switch.
//!
//! Batches are cut on the reader thread, so the journal cursor is taken once per batch (at
//! its last entry): the position a destination saves once the batch is delivered.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use ecs_event::{Event, Level};
use tokio::sync::mpsc;

use crate::checkpoint::Checkpoint;
use crate::config::{BatchLimits, EventRules};
use crate::metrics::{self, add};
use crate::routes::DestSet;
use crate::sinks::{Record, Rejected, Sink};
use crate::source::{Entry, Loss, Read, Source};

/// Records for one destination in journal order, and the cursor of the last entry read for
/// them (entries routed elsewhere included: the position to save once these are delivered).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub records: Vec<Arc<Record>>,
    pub cursor: Option<String>,
    /// Container lines in this stretch of the journal that routes sent elsewhere.
    pub routed_away: u64,
}

/// Batches waiting in a destination's channel besides the one being delivered.
pub const QUEUED_BATCHES: usize = 1;

/// How long the shared reader waits for a destination that takes no batch before that
/// destination leaves the shared read (the others wait at most this long for it once).
pub const STALL: Duration = Duration::from_secs(1);

/// How often a destination reading on its own offers to rejoin while it is caught up.
const JOIN_EVERY: Duration = Duration::from_secs(1);

/// How long the reader waits for the journal at a time, so a stop request is seen quickly.
const POLL: Duration = Duration::from_millis(200);

/// A destination saves its cursor at most this often: the latest delivered position, once the
/// interval has passed (or at the next batch), and at the end. A save costs two `fsync`s and a
/// rename, which with a save per batch was a tenth of a destination's CPU
/// (docs/BENCHMARKS.md). The price: after a crash (not a stop), up to this much of what was
/// delivered is shipped again; at-least-once either way.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// After this many skipped (non-container) entries with nothing batched, save the cursor
/// anyway so a restart does not rescan them.
const SKIPPED_CHECKPOINT: u64 = 10_000;

/// One destination as the readers see it.
#[derive(Debug, Clone)]
pub struct Lane {
    /// Its bit in a route's [`DestSet`].
    pub bit: DestSet,
    pub tx: mpsc::Sender<Batch>,
    pub m: Arc<metrics::Destination>,
}

/// The naming and routes in force, replaced whole by a reload; readers pick up a new
/// version before their next entry.
pub struct RulesCell {
    version: AtomicU64,
    rules: Mutex<Arc<EventRules>>,
}

impl RulesCell {
    pub fn new(rules: EventRules) -> Arc<RulesCell> {
        Arc::new(RulesCell {
            version: AtomicU64::new(0),
            rules: Mutex::new(Arc::new(rules)),
        })
    }

    pub fn replace(&self, rules: EventRules) {
        *self.rules.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        self.version.fetch_add(1, Ordering::Release);
    }

    pub fn current(&self) -> Arc<EventRules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A reader's view of [`RulesCell`]: one atomic load per entry.
pub struct RulesView {
    cell: Arc<RulesCell>,
    seen: u64,
}

impl RulesView {
    /// A view that has already handed `cell`'s current rules to its source.
    pub fn new(cell: Arc<RulesCell>) -> RulesView {
        let seen = cell.version.load(Ordering::Acquire);
        RulesView { cell, seen }
    }

    fn refresh(&mut self, src: &mut dyn Source) {
        let v = self.cell.version.load(Ordering::Acquire);
        if v != self.seen {
            self.seen = v;
            src.set_rules(self.cell.current());
        }
    }
}

/// The destinations a shared reader starts with, and the channel through which the others
/// (reading on their own) ask to join.
pub struct Lanes {
    pub lanes: Vec<Lane>,
    /// Per lane: it starts on a reader of its own (its saved cursor is elsewhere) and joins
    /// later.
    pub on_their_own: Vec<bool>,
    pub joins: (
        std::sync::mpsc::Sender<JoinRequest>,
        std::sync::mpsc::Receiver<JoinRequest>,
    ),
}

impl From<Vec<Lane>> for Lanes {
    fn from(lanes: Vec<Lane>) -> Lanes {
        Lanes {
            on_their_own: vec![false; lanes.len()],
            lanes,
            joins: std::sync::mpsc::channel(),
        }
    }
}

/// Starts a reader of its own for a destination that left the shared read.
pub trait Detach {
    /// Read for `lane` alone from just after `cursor` (`None`: from the journal's head),
    /// offering to rejoin through `joins`.
    fn spawn(
        &self,
        lane: Lane,
        cursor: Option<String>,
        joins: std::sync::mpsc::Sender<JoinRequest>,
    ) -> anyhow::Result<()>;
}

/// A destination reading on its own asks to rejoin the shared read.
pub struct JoinRequest {
    bit: DestSet,
    /// The shared reader's position (its cursor), or `None`: not now.
    offer: std::sync::mpsc::SyncSender<Option<String>>,
    answer: std::sync::mpsc::Receiver<Answer>,
}

enum Answer {
    /// Read exactly up to the offered position; here is what it batched and not yet sent,
    /// and the cursor of the last batch it did send (where to start again should it fall
    /// behind before `carry` is taken).
    Joined { carry: Batch, sent: Option<String> },
    /// Cannot stand on the offered position now; it stays on its own.
    Stay,
}

struct LaneState {
    lane: Lane,
    attached: bool,
    /// Batches for this destination not yet taken by its channel.
    pending: VecDeque<Batch>,
    last_accept: Instant,
    /// The cursor of the last batch its channel took: where its own reader would start.
    handed: Option<String>,
}

/// Read `src` for `lanes` until `stop` is set or the source ends: decode and route each entry
/// once, batch, and hand each destination its share. Runs on its own thread; beats `alive` as
/// it goes round and marks it idle while it waits for a destination (the journal is the
/// buffer then). `detach`: how a destination that falls behind gets a reader of its own
/// (`None`: it never leaves; every destination waits for the slowest, as with stdin).
#[allow(clippy::too_many_arguments)]
pub fn read_loop(
    src: &mut dyn Source,
    limits: BatchLimits,
    lanes: impl Into<Lanes>,
    mut rules: Option<RulesView>,
    hits: Option<Arc<metrics::RouteHits>>,
    detach: Option<&dyn Detach>,
    rt: &tokio::runtime::Handle,
    stop: &AtomicBool,
    alive: &daemon_kit::Part,
) -> anyhow::Result<()> {
    let Lanes {
        lanes,
        on_their_own,
        joins: (joins_tx, joins_rx),
    } = lanes.into();
    let start = src.cursor()?;
    let mut r = Shared {
        lanes: lanes
            .into_iter()
            .zip(on_their_own)
            .map(|(lane, alone)| LaneState {
                lane,
                attached: !alone,
                pending: VecDeque::new(),
                last_accept: Instant::now(),
                handed: start.clone(),
            })
            .collect(),
        b: Builder::new(limits),
        detach,
        joins: joins_tx,
        rt,
        alive,
    };
    r.b.lanes = r
        .lanes
        .iter()
        .map(|l| (l.lane.bit, l.lane.m.clone()))
        .collect();
    r.b.away = vec![0; r.lanes.len()];
    r.b.hits = hits;
    // Save the starting position right away (e.g. `--from tail`), so entries written while
    // we run before the first batch are not skipped by a later restart.
    if let Some(cursor) = start {
        r.hand_out(
            |_| Batch {
                cursor: Some(cursor.clone()),
                ..Batch::default()
            },
            false,
        )?;
    }
    let mut iterations = 0u32;
    loop {
        if stop.load(Ordering::Relaxed) {
            return r.flush(src);
        }
        if let Some(view) = &mut rules {
            view.refresh(src);
        }
        while let Ok(req) = joins_rx.try_recv() {
            r.join(src, req)?;
        }
        match src.read()? {
            Read::Record(e) => {
                r.b.push(e);
                if r.b.full() {
                    r.flush(src)?;
                }
            }
            Read::Skipped => {
                r.b.skipped += 1;
                if r.b.entries.is_empty() && r.b.skipped >= SKIPPED_CHECKPOINT {
                    r.flush(src)?;
                }
            }
            Read::Idle => {
                alive.beat();
                // Caught up after entries that were all skipped: pass their position on, so
                // the saved cursor and the backlog figure do not stay behind them.
                if r.b.entries.is_empty() && (r.b.skipped > 0 || r.b.away_any()) {
                    r.flush(src)?;
                    continue;
                }
                match r.b.due_in() {
                    Some(d) if d.is_zero() => r.flush(src)?,
                    Some(d) => src.wait(d.min(POLL))?,
                    None => src.wait(POLL)?,
                }
            }
            Read::End => return r.flush(src),
        }
        if let Some(loss) = src.take_loss() {
            r.b.add_loss(loss, r.attached_metrics());
        }
        // While entries keep coming (never idle), still beat and honour the flush timeout —
        // every 256 entries, not each (a clock read per entry on the hot path).
        iterations = iterations.wrapping_add(1);
        if iterations.is_multiple_of(256) {
            alive.beat();
            if r.b.due_in().is_some_and(|d| d.is_zero()) {
                r.flush(src)?;
            }
        }
    }
}

/// The shared reader's state.
struct Shared<'a> {
    lanes: Vec<LaneState>,
    b: Builder,
    detach: Option<&'a dyn Detach>,
    joins: std::sync::mpsc::Sender<JoinRequest>,
    rt: &'a tokio::runtime::Handle,
    alive: &'a daemon_kit::Part,
}

impl Shared<'_> {
    fn attached_metrics(&self) -> Vec<Arc<metrics::Destination>> {
        self.lanes
            .iter()
            .filter(|l| l.attached)
            .map(|l| l.lane.m.clone())
            .collect()
    }

    fn flush(&mut self, src: &mut dyn Source) -> anyhow::Result<()> {
        if let Some(loss) = src.take_loss() {
            let m = self.attached_metrics();
            self.b.add_loss(loss, m);
        }
        let cursor = src.cursor()?;
        let attached: Vec<bool> = self.lanes.iter().map(|l| l.attached).collect();
        let mut batches = self.b.take(cursor, &attached);
        self.hand_out(|i| batches[i].take().unwrap_or_default(), true)
    }

    /// Give every attached destination its batch (`make(lane index)`), waiting for those
    /// whose channel is full; one that takes nothing for [`STALL`] leaves the shared read
    /// when another destination is still in it.
    fn hand_out(
        &mut self,
        mut make: impl FnMut(usize) -> Batch,
        skip_empty: bool,
    ) -> anyhow::Result<()> {
        for (i, l) in self.lanes.iter_mut().enumerate() {
            if !l.attached {
                continue;
            }
            let batch = make(i);
            if skip_empty
                && batch.records.is_empty()
                && batch.cursor.is_none()
                && batch.routed_away == 0
            {
                continue;
            }
            l.pending.push_back(batch);
        }
        loop {
            let mut waiting = None;
            let mut open = 0;
            for (i, l) in self.lanes.iter_mut().enumerate() {
                if !l.attached {
                    continue;
                }
                while let Some(b) = l.pending.pop_front() {
                    let cursor = b.cursor.clone();
                    match l.lane.tx.try_send(b) {
                        Ok(()) => {
                            l.last_accept = Instant::now();
                            if cursor.is_some() {
                                l.handed = cursor;
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(b)) => {
                            l.pending.push_front(b);
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            // Its delivery task ended (and said why): nothing to wait for.
                            l.pending.clear();
                            l.attached = false;
                        }
                    }
                }
                if l.attached {
                    open += 1;
                    if !l.pending.is_empty() && waiting.is_none() {
                        waiting = Some(i);
                    }
                }
            }
            if open == 0 {
                anyhow::bail!("every destination of this source has stopped");
            }
            let Some(i) = waiting else {
                return Ok(());
            };
            let can_leave = self.detach.is_some() && open > 1;
            let l = &mut self.lanes[i];
            let left = STALL.saturating_sub(l.last_accept.elapsed());
            if can_leave && left.is_zero() {
                self.leave(i)?;
                continue;
            }
            // Waiting for a destination (its retries can take as long as its outage) is not
            // a stall of ours.
            self.alive.idle();
            let tx = l.lane.tx.clone();
            self.rt.block_on(async {
                if can_leave {
                    let _ = tokio::time::timeout(left, tx.reserve()).await;
                } else {
                    let _ = tx.reserve().await;
                }
            });
            self.alive.beat();
        }
    }

    /// Destination `i` fell behind: it continues on a reader of its own.
    fn leave(&mut self, i: usize) -> anyhow::Result<()> {
        let l = &mut self.lanes[i];
        l.attached = false;
        l.pending.clear();
        l.lane.m.shared_read.store(false, Ordering::Relaxed);
        add(&l.lane.m.shared_read_leaves, 1);
        tracing::warn!(
            destination = l.lane.m.name,
            stalled = ?STALL,
            "destination fell behind: it reads the journal on its own from its cursor until it \
             catches up, so the other destinations are not held back"
        );
        let detach = self.detach.expect("checked by the caller");
        detach.spawn(l.lane.clone(), l.handed.clone(), self.joins.clone())
    }

    /// A destination reading on its own asks to rejoin: offer our position, and take it back
    /// if it stands exactly there.
    fn join(&mut self, src: &mut dyn Source, req: JoinRequest) -> anyhow::Result<()> {
        let Some(i) = self
            .lanes
            .iter()
            .position(|l| l.lane.bit == req.bit && !l.attached)
        else {
            let _ = req.offer.send(None);
            return Ok(());
        };
        // Hand out what is batched, so the destination joins at a batch boundary: nothing
        // it read itself comes to it again.
        self.flush(src)?;
        let here = src.cursor()?;
        if req.offer.send(here.clone()).is_err() || here.is_none() {
            return Ok(());
        }
        if let Ok(Answer::Joined { carry, sent }) = req.answer.recv() {
            let l = &mut self.lanes[i];
            l.attached = true;
            l.last_accept = Instant::now();
            // Not `here`: until its channel takes `carry`, the entries in it are only there.
            l.handed = sent;
            l.pending.push_back(carry);
            l.lane.m.shared_read.store(true, Ordering::Relaxed);
            tracing::info!(
                destination = l.lane.m.name,
                "destination caught up: it is back on the shared journal read"
            );
            self.hand_out(|_| Batch::default(), true)?;
        }
        Ok(())
    }
}

/// Read for one destination alone (it left the shared read), from `src`'s position, until it
/// has caught up and rejoined through `joins`, or `stop`.
#[allow(clippy::too_many_arguments)]
pub fn own_read(
    src: &mut dyn Source,
    limits: BatchLimits,
    lane: Lane,
    start: Option<String>,
    mut rules: RulesView,
    joins: std::sync::mpsc::Sender<JoinRequest>,
    stop: &AtomicBool,
    alive: &daemon_kit::Part,
) -> anyhow::Result<()> {
    let mut b = Builder::new(limits);
    b.lanes = vec![(lane.bit, lane.m.clone())];
    b.away = vec![0];
    // The cursor of the last batch this reader sent.
    let mut sent = start;
    let send =
        |b: &mut Builder, src: &mut dyn Source, sent: &mut Option<String>| -> anyhow::Result<()> {
            let cursor = src.cursor()?;
            if let Some(batch) = b.take(cursor, &[true]).pop().flatten() {
                let c = batch.cursor.clone();
                alive.idle();
                lane.tx
                    .blocking_send(batch)
                    .map_err(|_| anyhow::anyhow!("destination {} has stopped", lane.m.name))?;
                alive.beat();
                if c.is_some() {
                    *sent = c;
                }
            }
            Ok(())
        };
    let mut last_offer = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return send(&mut b, src, &mut sent);
        }
        rules.refresh(src);
        match src.read()? {
            Read::Record(e) => {
                b.push(e);
                if b.full() {
                    send(&mut b, src, &mut sent)?;
                }
            }
            Read::Skipped => {
                b.skipped += 1;
                if b.entries.is_empty() && b.skipped >= SKIPPED_CHECKPOINT {
                    send(&mut b, src, &mut sent)?;
                }
            }
            Read::Idle => {
                alive.beat();
                if last_offer.elapsed() >= JOIN_EVERY {
                    last_offer = Instant::now();
                    if try_join(src, &mut b, lane.bit, &joins, &sent)? {
                        return Ok(());
                    }
                }
                match b.due_in() {
                    Some(d) if d.is_zero() => send(&mut b, src, &mut sent)?,
                    Some(d) => src.wait(d.min(POLL))?,
                    None => src.wait(POLL)?,
                }
            }
            Read::End => return send(&mut b, src, &mut sent),
        }
        if let Some(loss) = src.take_loss() {
            b.add_loss(loss, vec![lane.m.clone()]);
        }
    }
}

/// Ask the shared reader to take this destination back; `true` when it did (what was
/// batched here went with the answer).
fn try_join(
    src: &mut dyn Source,
    b: &mut Builder,
    bit: DestSet,
    joins: &std::sync::mpsc::Sender<JoinRequest>,
    sent: &Option<String>,
) -> anyhow::Result<bool> {
    use crate::source::journald::Position;
    let (offer_tx, offer_rx) = std::sync::mpsc::sync_channel(1);
    let (answer_tx, answer_rx) = std::sync::mpsc::channel();
    let req = JoinRequest {
        bit,
        offer: offer_tx,
        answer: answer_rx,
    };
    if joins.send(req).is_err() {
        return Ok(false); // the shared reader has ended
    }
    // The shared reader may be waiting for a slow destination: then try again later.
    let Ok(Some(there)) = offer_rx.recv_timeout(Duration::from_secs(2)) else {
        return Ok(false);
    };
    let target = Position::parse(&there);
    // Read up to exactly the shared reader's position (it is usually a few entries ahead).
    loop {
        let here = src.cursor()?.and_then(|c| Position::parse(&c));
        match (here.as_ref(), target.as_ref()) {
            (Some(h), Some(t)) => match h.after(t) {
                Some(std::cmp::Ordering::Equal) => {
                    let carry = b.take(Some(there), &[true]).pop().flatten();
                    let _ = answer_tx.send(Answer::Joined {
                        carry: carry.unwrap_or_default(),
                        sent: sent.clone(),
                    });
                    return Ok(true);
                }
                Some(std::cmp::Ordering::Less) => {}
                // Ahead of it, or another sequence: not now.
                _ => break,
            },
            _ => break,
        }
        match src.read()? {
            Read::Record(e) => b.push(e),
            Read::Skipped => b.skipped += 1,
            Read::Idle | Read::End => break,
        }
    }
    let _ = answer_tx.send(Answer::Stay);
    Ok(false)
}

/// The entries read since the last batch was cut, with where each goes.
struct Builder {
    limits: BatchLimits,
    entries: Vec<(Arc<Record>, DestSet)>,
    /// The destinations batches are cut for, by lane index.
    lanes: Vec<(DestSet, Arc<metrics::Destination>)>,
    /// Per lane: container lines routed elsewhere since the last batch.
    away: Vec<u64>,
    bytes: usize,
    started: Option<Instant>,
    skipped: u64,
    /// Entries read (container lines and others) since the last batch.
    read: u64,
    /// Per route number: entries it decided since the last batch.
    route_hits: Vec<u64>,
    /// Where route counts go (the shared reader's builder only: each entry is counted once).
    hits: Option<Arc<metrics::RouteHits>>,
    /// A loss not yet written as a notice (it goes with the next records).
    loss: Option<Loss>,
}

impl Builder {
    fn new(limits: BatchLimits) -> Builder {
        Builder {
            limits,
            entries: Vec::new(),
            lanes: Vec::new(),
            away: Vec::new(),
            bytes: 0,
            started: None,
            skipped: 0,
            read: 0,
            route_hits: Vec::new(),
            hits: None,
            loss: None,
        }
    }

    fn push(&mut self, e: Entry) {
        self.read += 1;
        if let Some(n) = e.route {
            if self.route_hits.len() <= n {
                self.route_hits.resize(n + 1, 0);
            }
            self.route_hits[n] += 1;
        }
        let mut wanted = false;
        for (i, (bit, _)) in self.lanes.iter().enumerate() {
            if e.to & bit != 0 {
                wanted = true;
            } else {
                self.away[i] += 1;
            }
        }
        if !wanted {
            return;
        }
        self.started.get_or_insert_with(Instant::now);
        // What a destination pays per event beyond the message (names, JSON keys).
        self.bytes += e.size + e.record.group.len() + e.record.stream.len() + 64;
        self.entries.push((Arc::new(e.record), e.to));
    }

    fn away_any(&self) -> bool {
        self.away.iter().any(|&a| a > 0)
    }

    fn full(&self) -> bool {
        self.entries.len() >= self.limits.max_events || self.bytes >= self.limits.max_bytes
    }

    /// Time left before the batch must go (`None` when empty).
    fn due_in(&self) -> Option<Duration> {
        self.started
            .map(|s| self.limits.flush_timeout.saturating_sub(s.elapsed()))
    }

    fn add_loss(&mut self, loss: Loss, to: Vec<Arc<metrics::Destination>>) {
        report_loss(&loss, &to);
        self.loss = Some(match self.loss.take() {
            Some(old) => old.merge(loss),
            None => loss,
        });
    }

    /// Cut a batch per lane (`None` for lanes not `attached`, or with nothing to say).
    fn take(&mut self, cursor: Option<String>, attached: &[bool]) -> Vec<Option<Batch>> {
        let mut entries = std::mem::take(&mut self.entries);
        if !entries.is_empty() {
            if let Some(loss) = self.loss.take() {
                entries = with_loss_notices(entries, &loss);
            }
        }
        let mut out = Vec::with_capacity(self.lanes.len());
        for (i, (bit, m)) in self.lanes.iter().enumerate() {
            let away = std::mem::take(&mut self.away[i]);
            if !attached.get(i).copied().unwrap_or(false) {
                out.push(None);
                continue;
            }
            add(&m.entries_read, self.read + self.skipped);
            add(&m.entries_skipped, self.skipped);
            let records: Vec<Arc<Record>> = entries
                .iter()
                .filter(|(_, to)| to & bit != 0)
                .map(|(r, _)| r.clone())
                .collect();
            if records.is_empty() && cursor.is_none() && away == 0 {
                out.push(None);
                continue;
            }
            out.push(Some(Batch {
                records,
                cursor: cursor.clone(),
                routed_away: away,
            }));
        }
        self.bytes = 0;
        self.started = None;
        self.skipped = 0;
        self.read = 0;
        if let Some(hits) = &self.hits {
            if !self.route_hits.is_empty() {
                hits.add(&std::mem::take(&mut self.route_hits));
            }
        }
        out
    }
}

fn report_loss(loss: &Loss, to: &[Arc<metrics::Destination>]) {
    for m in to {
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
fn with_loss_notices(
    records: Vec<(Arc<Record>, DestSet)>,
    loss: &Loss,
) -> Vec<(Arc<Record>, DestSet)> {
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
    for (r, to) in records {
        if seen.insert((r.group.clone(), r.stream.clone())) {
            let n = notice(&r.group, &r.stream, r.event.time, text.clone());
            out.push((Arc::new(n), to));
        }
        out.push((r, to));
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

/// Deliver batches to `sink` and save the cursor of what was delivered (at most every
/// [`SAVE_EVERY`], and at the end), until the reader side closes.
pub async fn deliver_loop<S: Sink>(
    sink: S,
    rx: mpsc::Receiver<Batch>,
    checkpoint: Option<Checkpoint>,
    m: Arc<metrics::Destination>,
) -> anyhow::Result<()> {
    let mut saver = Saver {
        checkpoint,
        pending: None,
        last: Instant::now(),
        m: m.clone(),
    };
    let result = deliver_batches(sink, rx, &mut saver, m).await;
    // Whatever ended the loop, what was delivered stays delivered.
    let saved = saver.save().await;
    result.and(saved)
}

/// The delivered position and when it was last written to the cursor file.
struct Saver {
    checkpoint: Option<Checkpoint>,
    /// Delivered, not saved yet.
    pending: Option<String>,
    last: Instant,
    m: Arc<metrics::Destination>,
}

impl Saver {
    /// When the pending position is due to be saved (`None`: nothing pending).
    fn due(&self) -> Option<tokio::time::Instant> {
        self.pending.as_ref()?;
        Some((self.last + SAVE_EVERY).into())
    }

    /// Note `cursor` as delivered; save it when [`SAVE_EVERY`] has passed.
    async fn delivered(&mut self, cursor: &str) -> anyhow::Result<()> {
        if self.checkpoint.is_none() {
            return Ok(());
        }
        self.pending = Some(cursor.to_string());
        if self.last.elapsed() >= SAVE_EVERY {
            self.save().await?;
        }
        Ok(())
    }

    /// Save the pending position, if any.
    async fn save(&mut self) -> anyhow::Result<()> {
        let (Some(cursor), Some(cp)) = (self.pending.take(), &self.checkpoint) else {
            return Ok(());
        };
        // The save waits for the disk (two fsyncs): off the runtime's workers, so the
        // other destinations' tasks go on meanwhile.
        let cp = cp.clone();
        tokio::task::spawn_blocking(move || cp.save(&cursor))
            .await
            .map_err(|e| anyhow::anyhow!("the cursor save failed: {e}"))??;
        self.last = Instant::now();
        add(&self.m.cursor_saves, 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.m
            .last_cursor_save_seconds
            .store(now, Ordering::Relaxed);
        Ok(())
    }
}

async fn deliver_batches<S: Sink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Batch>,
    saver: &mut Saver,
    m: Arc<metrics::Destination>,
) -> anyhow::Result<()> {
    let name = sink.name();
    loop {
        let batch = match saver.due() {
            // Something delivered waits to be saved: no longer than until it is due.
            Some(due) => match tokio::time::timeout_at(due, rx.recv()).await {
                Ok(b) => b,
                Err(_) => {
                    saver.save().await?;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(batch) = batch else {
            break;
        };
        add(&m.routed_away, batch.routed_away);
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
                        Arc::new(notice(
                            &r.group,
                            &r.stream,
                            Utc::now(),
                            rejected_notice_text(name, r),
                        ))
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
        if let Some(cursor) = &batch.cursor {
            saver.delivered(cursor).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(g: &str, s: &str, msg: &str) -> (Arc<Record>, DestSet) {
        let r = Record {
            group: g.into(),
            stream: s.into(),
            event: Event::new(Level::Info, Utc::now(), msg),
        };
        (Arc::new(r), 1)
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
        let msgs: Vec<_> = out.iter().map(|(r, _)| r.event.message.as_str()).collect();
        assert_eq!(msgs.len(), 5);
        assert!(msgs[0].starts_with("journal-fanout: 5 events between "));
        assert_eq!(msgs[1], "1");
        assert!(msgs[2].starts_with("journal-fanout: 5 events"));
        assert_eq!(&msgs[3..], ["2", "3"]);
    }

    /// A journal in memory: entries are sequence numbers; cursors carry them as `i=`.
    #[derive(Clone, Default)]
    struct Journal(Arc<Mutex<Vec<u64>>>);

    struct FakeSource {
        journal: Journal,
        /// Index of the next entry to read.
        pos: usize,
    }

    impl FakeSource {
        fn open(journal: &Journal, cursor: Option<&str>) -> FakeSource {
            let pos = cursor.map_or(0, |c| {
                let seq = crate::metrics::cursor_field(c, "i").unwrap();
                journal
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .position(|&s| s == seq)
                    .unwrap()
                    + 1
            });
            FakeSource {
                journal: journal.clone(),
                pos,
            }
        }
    }

    impl Source for FakeSource {
        fn read(&mut self) -> anyhow::Result<Read> {
            let seq = self.journal.0.lock().unwrap().get(self.pos).copied();
            Ok(match seq {
                Some(seq) => {
                    self.pos += 1;
                    let record = Record {
                        group: "g".into(),
                        stream: "s".into(),
                        event: Event::new(Level::Info, Utc::now(), seq.to_string()),
                    };
                    Read::Record(Entry {
                        record,
                        size: 10,
                        to: DestSet::MAX,
                        route: None,
                    })
                }
                None => Read::Idle,
            })
        }

        fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
            std::thread::sleep(timeout.min(Duration::from_millis(2)));
            Ok(())
        }

        fn cursor(&mut self) -> anyhow::Result<Option<String>> {
            Ok(self.pos.checked_sub(1).map(|i| {
                let seq = self.journal.0.lock().unwrap()[i];
                format!("s=ab;i={seq:x};b=cd;m=0;t=0;x=0")
            }))
        }
    }

    struct FakeDetach {
        journal: Journal,
        stop: Arc<AtomicBool>,
        rules: Arc<RulesCell>,
    }

    impl Detach for FakeDetach {
        fn spawn(
            &self,
            lane: Lane,
            cursor: Option<String>,
            joins: std::sync::mpsc::Sender<JoinRequest>,
        ) -> anyhow::Result<()> {
            let (journal, stop, rules) =
                (self.journal.clone(), self.stop.clone(), self.rules.clone());
            std::thread::spawn(move || {
                let alive = daemon_kit::Liveness::new().part("own");
                let mut src = FakeSource::open(&journal, cursor.as_deref());
                let limits = BatchLimits {
                    max_events: 500,
                    max_bytes: 1 << 20,
                    flush_timeout: Duration::from_millis(20),
                };
                own_read(
                    &mut src,
                    limits,
                    lane,
                    cursor,
                    RulesView::new(rules),
                    joins,
                    &stop,
                    &alive,
                )
                .unwrap();
            });
            Ok(())
        }
    }

    fn rules() -> EventRules {
        let mut fields = crate::naming::Fields::default();
        EventRules {
            group: crate::naming::Template::field("G", &mut fields),
            stream: crate::naming::Template::field("S", &mut fields),
            fields,
            routes: Default::default(),
            hostname_override: None,
            hostname_default: "h".into(),
        }
    }

    /// A destination that stalls again and again (leaving, catching up, rejoining, sometimes
    /// leaving again before its first batch back was taken) gets every entry, in order, and
    /// the other one is never held back for long.
    #[test]
    fn a_destination_that_keeps_stalling_loses_nothing_across_leaving_and_rejoining() {
        const N: u64 = 30_000;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let journal = Journal::default();
        let stop = Arc::new(AtomicBool::new(false));
        let stall = Arc::new(AtomicBool::new(false));
        let mut got: Vec<Arc<Mutex<Vec<u64>>>> = Vec::new();
        let mut lanes = Vec::new();
        for (i, name) in ["fast", "stalling"].into_iter().enumerate() {
            let (tx, mut rx) = mpsc::channel::<Batch>(QUEUED_BATCHES);
            let seen = Arc::new(Mutex::new(Vec::new()));
            got.push(seen.clone());
            let stall = (i == 1).then(|| stall.clone());
            std::thread::spawn(move || {
                while let Some(b) = rx.blocking_recv() {
                    if let Some(stall) = &stall {
                        // Slow (100 ms a batch), and now and then not at all.
                        std::thread::sleep(Duration::from_millis(100));
                        while stall.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    let mut v = seen.lock().unwrap();
                    v.extend(
                        b.records
                            .iter()
                            .map(|r| r.event.message.parse::<u64>().unwrap()),
                    );
                }
            });
            lanes.push(Lane {
                bit: 1 << i,
                tx,
                m: Arc::new(metrics::Destination::new(name)),
            });
        }
        let stalling = lanes[1].m.clone();
        let cell = RulesCell::new(rules());
        let detach = FakeDetach {
            journal: journal.clone(),
            stop: stop.clone(),
            rules: cell.clone(),
        };
        let reader = {
            let (journal, stop, rt, cell) = (
                journal.clone(),
                stop.clone(),
                rt.handle().clone(),
                cell.clone(),
            );
            std::thread::spawn(move || {
                let alive = daemon_kit::Liveness::new().part("shared");
                let mut src = FakeSource::open(&journal, None);
                let limits = BatchLimits {
                    max_events: 500,
                    max_bytes: 1 << 20,
                    flush_timeout: Duration::from_millis(20),
                };
                read_loop(
                    &mut src,
                    limits,
                    lanes,
                    Some(RulesView::new(cell)),
                    None,
                    Some(&detach),
                    &rt,
                    &stop,
                    &alive,
                )
                .unwrap();
            })
        };
        // Entries keep coming while the second destination stalls for 1.3 s, runs for a
        // moment, and stalls again.
        let writer = {
            let journal = journal.clone();
            std::thread::spawn(move || {
                for seq in 1..=N {
                    journal.0.lock().unwrap().push(seq);
                    // About 10 s in all: past the last stall.
                    if seq % 10 == 0 {
                        std::thread::sleep(Duration::from_micros(3_300));
                    }
                }
            })
        };
        // Stall, and stall again the moment it is back on the shared read: its first batch
        // back is then still waiting for room when it leaves again.
        for _ in 0..3 {
            stall.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1300));
            stall.store(false, Ordering::Relaxed);
            let until = Instant::now() + Duration::from_secs(10);
            while !stalling.shared_read.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        writer.join().unwrap();
        let all: Vec<u64> = (1..=N).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.iter().any(|g| *g.lock().unwrap() != all) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (name, g) in ["fast", "stalling"].iter().zip(&got) {
            let g = g.lock().unwrap();
            let missing: Vec<_> = all.iter().filter(|s| !g.contains(s)).take(10).collect();
            assert!(missing.is_empty(), "{name} is missing {missing:?}");
            assert_eq!(*g, all, "{name}: entries twice or out of order");
        }
        let leaves = stalling.shared_read_leaves.load(Ordering::Relaxed);
        assert!(leaves >= 2, "it left the shared read {leaves} time(s)");
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    }
}
