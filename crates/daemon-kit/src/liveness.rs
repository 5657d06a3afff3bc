//! Which parts of a daemon are making progress, for the systemd watchdog.
//!
//! A watchdog that pings from a thread of its own proves only that the process exists. Here
//! each working loop holds a [`Part`] and beats it as it goes round; the watchdog pings only
//! while every part is either beating or idle (waiting for work, which is not a wedge), and
//! names the part that stopped when it stops pinging — so the operator's log says what hung
//! before systemd restarts the service.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `last` value of a part that is waiting for work.
const IDLE: u64 = u64::MAX;

/// The set of watched parts of one daemon. Cheap to clone; clones share the set.
#[derive(Clone)]
pub struct Liveness {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    parts: Mutex<Vec<Arc<Shared>>>,
    /// The daemon said it is ready (listening; every destination started).
    ready: AtomicBool,
    /// Stall limit in milliseconds that `/healthz` judges by: the watchdog's when systemd
    /// set one, else [`crate::MIN_STALL`].
    limit_ms: AtomicU64,
}

struct Shared {
    name: String,
    /// Milliseconds since the epoch of the last beat, or [`IDLE`].
    last: AtomicU64,
    /// Its thread panicked: stalled for good, whatever the limit.
    panicked: AtomicBool,
}

/// One watched loop. It counts as alive while it beats at least once per stall limit, or while
/// it says it is idle. Dropping it (the loop ended) takes it out of the set — unless its
/// thread is panicking: then it stays, stalled for good, so a dead loop is not mistaken for a
/// finished one.
pub struct Part {
    shared: Arc<Shared>,
    inner: Arc<Inner>,
}

/// A part that has not beaten for longer than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// The part's name, as given to [`Liveness::part`].
    pub name: String,
    /// How long since its last beat.
    pub for_: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub fn new() -> Liveness {
        Liveness {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                parts: Mutex::new(Vec::new()),
                ready: AtomicBool::new(false),
                limit_ms: AtomicU64::new(crate::MIN_STALL.as_millis() as u64),
            }),
        }
    }

    /// Watch a new part, beaten now.
    pub fn part(&self, name: impl Into<String>) -> Part {
        let shared = Arc::new(Shared {
            name: name.into(),
            last: AtomicU64::new(millis(self.inner.epoch)),
            panicked: AtomicBool::new(false),
        });
        let mut parts = self.inner.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.push(shared.clone());
        Part {
            shared,
            inner: self.inner.clone(),
        }
    }

    /// Mark the daemon ready (what `/readyz` answers); [`crate::notify_ready`] does this.
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the daemon has said it is ready.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    /// The stall limit that health checks use (the watchdog's own once it runs).
    pub fn limit(&self) -> Duration {
        Duration::from_millis(self.inner.limit_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_limit(&self, limit: Duration) {
        self.inner
            .limit_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// The parts that have neither beaten nor been idle for longer than `limit`, longest
    /// first. Empty when the daemon is healthy.
    pub fn stalled(&self, limit: Duration) -> Vec<Stalled> {
        let now = millis(self.inner.epoch);
        let parts = self.inner.parts.lock().unwrap_or_else(|e| e.into_inner());
        let mut stalled: Vec<Stalled> = parts
            .iter()
            .filter_map(|p| {
                let last = p.last.load(Ordering::Relaxed);
                let since = Duration::from_millis(now.saturating_sub(last));
                if p.panicked.load(Ordering::Relaxed) {
                    return Some(Stalled {
                        name: format!("{} (its thread panicked)", p.name),
                        for_: since,
                    });
                }
                (last != IDLE && since > limit).then(|| Stalled {
                    name: p.name.clone(),
                    for_: since,
                })
            })
            .collect();
        stalled.sort_by_key(|s| std::cmp::Reverse(s.for_));
        stalled
    }
}

impl Part {
    /// The loop went round: it is alive.
    pub fn beat(&self) {
        self.shared
            .last
            .store(millis(self.inner.epoch), Ordering::Relaxed);
    }

    /// The loop is about to wait for work for as long as it takes (an empty queue, a
    /// destination's retry back-off): not a stall. The next [`Part::beat`] watches it again.
    pub fn idle(&self) {
        self.shared.last.store(IDLE, Ordering::Relaxed);
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.panicked.store(true, Ordering::Relaxed);
            return;
        }
        let mut parts = self.inner.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.retain(|p| !Arc::ptr_eq(p, &self.shared));
    }
}

fn millis(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that a loaded machine's scheduling does not make a part look stalled
    /// between two statements.
    const LIMIT: Duration = Duration::from_millis(500);

    /// Wait past the limit on the real clock (what the watchdog itself measures).
    fn past_limit() {
        std::thread::sleep(LIMIT * 2);
    }

    #[test]
    fn a_part_that_stops_beating_is_named_as_stalled() {
        let l = Liveness::new();
        let reader = l.part("journal reader (cloudwatch)");
        let writer = l.part("writer");
        assert!(l.stalled(LIMIT).is_empty());
        past_limit();
        writer.beat();
        let stalled = l.stalled(LIMIT);
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].name, "journal reader (cloudwatch)");
        assert!(stalled[0].for_ > LIMIT);
        reader.beat();
        assert!(l.stalled(LIMIT).is_empty(), "a beat makes it alive again");
    }

    #[test]
    fn an_idle_part_is_not_stalled_however_long_it_waits() {
        let l = Liveness::new();
        let writer = l.part("writer");
        writer.idle();
        past_limit();
        assert!(l.stalled(LIMIT).is_empty());
        writer.beat();
        past_limit();
        assert_eq!(
            l.stalled(LIMIT).len(),
            1,
            "watched again after its next beat"
        );
    }

    #[test]
    fn a_part_whose_thread_panicked_stays_stalled() {
        let l = Liveness::new();
        let part = l.part("journal reader (loggly)");
        let _ = std::thread::spawn(move || {
            let _part = part;
            panic!("a bug in the reader");
        })
        .join();
        let stalled = l.stalled(LIMIT);
        assert_eq!(stalled.len(), 1, "a panicked part must not leave quietly");
        assert_eq!(
            stalled[0].name,
            "journal reader (loggly) (its thread panicked)"
        );
    }

    #[test]
    fn a_finished_part_leaves_the_set() {
        let l = Liveness::new();
        let part = l.part("stdin reader");
        past_limit();
        assert_eq!(l.stalled(LIMIT).len(), 1);
        drop(part);
        assert!(l.stalled(LIMIT).is_empty());
    }
}
