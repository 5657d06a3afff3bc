//! The journald end: the fields each line carries (those Docker's journald driver writes, so
//! `journalctl CONTAINER_NAME=web` just works) and the writer thread.
//!
//! In the common case the processor writes a batch itself with one non-blocking `sendmmsg`
//! (measured: each hand-off between threads costs a context switch, on 2 cores as much as the
//! send); the writer thread takes over whenever that would wait.
//!
//! The writer never drops what it holds. While journald is slow (its socket full), the writer
//! waits for room a second at a time and the back-pressure reaches Docker (its blocking mode
//! stalls the container's writes — no loss).
//! While journald is *gone* (socket missing or refused) the writer retries with backoff and
//! flags it, so the processor stops waiting, keeps the bounded queue full, and counts (per
//! container) what does not fit — reported into each container's log once journald is back.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use journal_native::{encode_field, Journal, SendError};

use crate::docker::Meta;

/// `MESSAGE_ID` of the proxy's own notices (drops, losses), so tools can find them:
/// `journalctl MESSAGE_ID=...`.
pub const NOTICE_MESSAGE_ID: &str = "5c0d9a8a3f1e4b6c9d2e7f10a1b2c3d4";

/// Entries per `sendmmsg` and per batch handed to the writer.
pub const BATCH: usize = 64;

/// The fields every line of a container carries besides `MESSAGE` and `PRIORITY`,
/// serialized once per container.
pub fn container_fields(reference: &str, meta: Option<&Meta>) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    match meta {
        Some(m) => {
            let tag = m.tag.as_deref().unwrap_or_else(|| m.id12());
            encode_field(&mut out, "SYSLOG_IDENTIFIER", tag.as_bytes());
            encode_field(&mut out, "CONTAINER_ID", m.id12().as_bytes());
            encode_field(&mut out, "CONTAINER_ID_FULL", m.id_full.as_bytes());
            encode_field(&mut out, "CONTAINER_NAME", m.name.as_bytes());
            encode_field(&mut out, "CONTAINER_TAG", tag.as_bytes());
            encode_field(&mut out, "IMAGE_NAME", m.image_name.as_bytes());
            if let Some(arn) = &m.task_arn {
                encode_field(&mut out, "CONTAINER_TASK", arn.as_bytes());
            }
            if let Some(uuid) = m.task_uuid() {
                encode_field(&mut out, "CONTAINER_TASK_UUID", uuid.as_bytes());
            }
            // The ECS task definition family, for journal-fanout's `ecs_family` naming.
            if let Some(family) = m.labels.get(crate::policy::ECS_FAMILY_LABEL) {
                encode_field(&mut out, "CONTAINER_TASK_FAMILY", family.as_bytes());
            }
        }
        None => {
            // Docker could not tell us more: what the tag says is all we have.
            encode_field(&mut out, "SYSLOG_IDENTIFIER", reference.as_bytes());
            encode_field(&mut out, "CONTAINER_TAG", reference.as_bytes());
            if looks_like_id(reference) {
                encode_field(&mut out, "CONTAINER_ID", &reference.as_bytes()[..12]);
                if reference.len() == 64 {
                    encode_field(&mut out, "CONTAINER_ID_FULL", reference.as_bytes());
                }
            }
        }
    }
    out
}

fn looks_like_id(s: &str) -> bool {
    (s.len() == 12 || s.len() == 64) && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Serialize one line: `MESSAGE`, `PRIORITY`, then the container's fields.
pub fn encode_line(out: &mut Vec<u8>, fields: &[u8], priority: u8, msg: &[u8]) {
    encode_field(out, "MESSAGE", msg);
    out.extend_from_slice(b"PRIORITY=");
    out.push(b'0' + priority.min(7));
    out.push(b'\n');
    out.extend_from_slice(fields);
}

/// Entries on their way to journald, serialized back to back.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    pub fn with_capacity(entries: usize) -> Batch {
        Batch {
            buf: Vec::with_capacity(entries * 256),
            ends: Vec::with_capacity(entries),
        }
    }

    /// Append one entry written by `f` into the buffer.
    pub fn push(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.buf);
        self.ends.push(self.buf.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of the encoded entries.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The entries from `from` on, as a new batch (what is left after a partial send).
    pub fn split_from(&self, from: usize) -> Batch {
        let mut rest = Batch::with_capacity(self.len().saturating_sub(from));
        for e in self.entries().into_iter().skip(from) {
            rest.push(|out| out.extend_from_slice(e));
        }
        rest
    }

    pub fn entries(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&e| {
                let s = &self.buf[start..e];
                start = e;
                s
            })
            .collect()
    }
}

/// What the writer shares with the rest of the proxy.
#[derive(Default)]
pub struct WriterState {
    /// False while journald is unreachable.
    pub up: AtomicBool,
    pub written: AtomicU64,
    pub retries: AtomicU64,
    /// Entries journald refused outright (not "gone": e.g. an entry it cannot take).
    pub refused: AtomicU64,
    /// Batches handed to the writer and not yet fully written. Only while it is 0 may the
    /// processor write directly (order is kept: nothing of the writer's is still pending).
    pub in_flight: AtomicUsize,
    /// Set at shutdown: from then on an unavailable journald gets [`DRAIN_LIMIT`] more.
    pub stopping: AtomicBool,
    /// Entries still held when the drain limit ran out at shutdown.
    pub lost_at_shutdown: AtomicU64,
    /// Bytes of encoded entries handed to the writer and not yet written: the outage
    /// buffer's fill (`--journal-buffer` bounds it).
    pub held_bytes: AtomicU64,
    /// Signalled when the buffer has drained to what a waiting producer asked for.
    room: (std::sync::Mutex<()>, std::sync::Condvar),
    /// One more than the fill a waiting producer waits for; 0 while nobody waits. The
    /// writer wakes it only then, not per written batch: a producer woken per batch refills
    /// one batch, sleeps again, and the two threads trade a context switch per batch
    /// (measured: the hand-off's switches, `log-proxy/bench/switches.sh`).
    wake_below: AtomicU64,
}

impl WriterState {
    /// Reserve `bytes` in a buffer of `limit` bytes; false when they do not fit. One batch
    /// always fits an empty buffer, however large.
    pub fn admit(&self, bytes: u64, limit: u64) -> bool {
        let mut held = self.held_bytes.load(Ordering::Relaxed);
        loop {
            if held != 0 && held + bytes > limit {
                return false;
            }
            match self.held_bytes.compare_exchange_weak(
                held,
                held + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    /// Give back what a batch reserved, and wake a producer waiting for room once the
    /// buffer has drained to its low-water mark.
    pub fn release(&self, bytes: u64) {
        let held = self.held_bytes.fetch_sub(bytes, Ordering::SeqCst) - bytes;
        // SeqCst pairs with `wait_for_room`: either it sees this release's fill, or this
        // sees its mark and wakes it under the lock (no lost wake-up).
        if held < self.wake_below.load(Ordering::SeqCst) {
            let _guard = self.room.0.lock().unwrap();
            self.room.1.notify_all();
        }
    }

    /// Wait up to `timeout` for room for `bytes` in a buffer of `limit`: until the buffer
    /// has drained to half of `limit` (or to empty for a batch larger than that), so that
    /// the producer refills in one go rather than a batch per wake-up.
    pub fn wait_for_room(&self, bytes: u64, limit: u64, timeout: Duration) {
        let low_water = (limit / 2).min(limit.saturating_sub(bytes));
        let guard = self.room.0.lock().unwrap();
        self.wake_below.store(low_water + 1, Ordering::SeqCst);
        let held = self.held_bytes.load(Ordering::SeqCst);
        if held <= low_water {
            self.wake_below.store(0, Ordering::SeqCst);
            return;
        }
        let guard = self.room.1.wait_timeout(guard, timeout).unwrap().0;
        self.wake_below.store(0, Ordering::SeqCst);
        drop(guard);
    }
}

/// How long shutdown waits for an unavailable journald before giving up what it holds (and
/// counting it), so SIGTERM never wedges; under systemd's `TimeoutStopSec` in the unit.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// How long the writer waits at a time for room in journald's socket: short enough that a
/// stop request and the watchdog see it, long enough not to spin.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// Run the writer until the channel closes and everything it held is written.
pub fn run_writer(
    journal: Journal,
    rx: Receiver<Batch>,
    state: Arc<WriterState>,
    alive: daemon_kit::Part,
) {
    state.up.store(true, Ordering::Relaxed);
    // Non-blocking, with the waits below: a blocking send to a journald that stops reading
    // would block for as long as it does — past the watchdog and past SIGTERM's drain limit.
    if let Err(e) = journal.set_nonblocking(true) {
        tracing::warn!(error = %e, "cannot make the journald socket non-blocking; a journald that stops reading will hold this thread");
    }
    let mut deadline: Option<std::time::Instant> = None;
    let mut abandoned = false;
    // An outage of journald: logged when it begins and when it ends, with the retries.
    let mut gone = crate::episode::Episode::default();
    // Whether the current "journald is not reading" episode was reported.
    let mut slow_reported = false;
    // At shutdown, journald gets DRAIN_LIMIT more to take what is held.
    let out_of_time = |deadline: &mut Option<std::time::Instant>| {
        state.stopping.load(Ordering::Relaxed) && {
            let d = *deadline.get_or_insert_with(|| std::time::Instant::now() + DRAIN_LIMIT);
            std::time::Instant::now() >= d
        }
    };
    loop {
        // An empty queue is not a stall; a batch that never gets written is.
        alive.idle();
        let Ok(batch) = rx.recv() else { break };
        alive.beat();
        let bytes = batch.bytes() as u64;
        let entries = batch.entries();
        let mut i = 0;
        let mut backoff = Duration::from_millis(10);
        while i < entries.len() {
            if abandoned {
                state
                    .lost_at_shutdown
                    .fetch_add((entries.len() - i) as u64, Ordering::Relaxed);
                break;
            }
            let end = (i + BATCH).min(entries.len());
            alive.beat();
            match journal.send_many(&entries[i..end]) {
                Ok(n) => {
                    i += n;
                    state.written.fetch_add(n as u64, Ordering::Relaxed);
                    state.up.store(true, Ordering::Relaxed);
                    if let Some(ended) = gone.end() {
                        tracing::info!(socket = %journal.path().display(), "journald is back; writing resumes (unavailable: {ended})");
                    }
                    if std::mem::take(&mut slow_reported) {
                        tracing::info!(socket = %journal.path().display(), "journald reads again; writing resumes");
                    }
                    backoff = Duration::from_millis(10);
                }
                Err(SendError::WouldBlock { .. }) => {
                    // journald is there but not reading (busy, stopped, or restarting under
                    // systemd, which keeps its socket): hold and wait for room. Still "up":
                    // once the queue is full the processor waits too, and the back-pressure
                    // reaches Docker, which holds the container's writes — nothing is lost.
                    if out_of_time(&mut deadline) {
                        abandoned = true;
                        continue;
                    }
                    if !journal.wait_for_room(ROOM_WAIT) && !slow_reported {
                        slow_reported = true;
                        tracing::warn!(socket = %journal.path().display(), "journald has not read its socket for {ROOM_WAIT:?}; holding lines, and Docker's writes once log-proxy's queue is full");
                    }
                }
                Err(e @ SendError::NotRunning { .. }) => {
                    state.up.store(false, Ordering::Relaxed);
                    if gone.hit() {
                        tracing::error!(error = %e, "journald unavailable; holding lines and retrying (logged again when it is back)");
                    }
                    state.retries.fetch_add(1, Ordering::Relaxed);
                    if out_of_time(&mut deadline) {
                        abandoned = true;
                        continue;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    // One entry journald will not take (never seen in practice): count it and
                    // move on rather than wedge every container behind it.
                    tracing::error!(error = %e, "journald refused an entry; counted in log_proxy_journal_refused_total");
                    state.refused.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }
        }
        state.in_flight.fetch_sub(1, Ordering::Release);
        state.release(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer waiting for room sleeps until the writer has drained the buffer to half,
    /// not until the first written batch: it then refills in one go.
    #[test]
    fn a_waiting_producer_wakes_at_the_low_water_mark() {
        let state = Arc::new(WriterState::default());
        for _ in 0..10 {
            assert!(state.admit(100, 1000));
        }
        assert!(!state.admit(100, 1000), "the buffer is full");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let state = state.clone();
            std::thread::spawn(move || {
                state.wait_for_room(100, 1000, Duration::from_secs(60));
                tx.send(()).unwrap();
            })
        };
        // The waiter has set its mark once it is about to sleep.
        while state.wake_below.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        for _ in 0..4 {
            state.release(100);
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "woken with 600 of 1000 bytes still held"
        );
        state.release(100);
        state.release(100);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("not woken at 400 of 1000 bytes held");
        waiter.join().unwrap();
        assert!(state.admit(100, 1000));
    }

    #[test]
    fn unknown_container_fields_come_from_the_tag() {
        let f = container_fields("0414557846fd", None);
        let s = String::from_utf8(f).unwrap();
        assert!(s.contains("CONTAINER_ID=0414557846fd\n"));
        assert!(s.contains("CONTAINER_TAG=0414557846fd\n"));
        assert!(s.contains("SYSLOG_IDENTIFIER=0414557846fd\n"));
        let f = String::from_utf8(container_fields("not-an-id", None)).unwrap();
        assert!(!f.contains("CONTAINER_ID="));
    }

    #[test]
    fn known_container_fields_match_dockers_journald_driver() {
        let m = Meta {
            id_full: "0414557846fd0123456789abcdef0123456789abcdef0123456789abcdef0123".into(),
            name: "web".into(),
            image_name: "busybox:local".into(),
            task_arn: Some("arn:aws:ecs:us-east-1:1:task/c/uuid1".into()),
            labels: [(
                crate::policy::ECS_FAMILY_LABEL.to_string(),
                "checkout".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let s = String::from_utf8(container_fields("0414557846fd", Some(&m))).unwrap();
        for want in [
            "CONTAINER_ID=0414557846fd\n",
            "CONTAINER_NAME=web\n",
            "CONTAINER_TAG=0414557846fd\n",
            "IMAGE_NAME=busybox:local\n",
            "CONTAINER_TASK_UUID=uuid1\n",
            "CONTAINER_TASK_FAMILY=checkout\n",
        ] {
            assert!(s.contains(want), "{want} missing in {s}");
        }
    }
}
