//! One request budget for every cwlogs process of a user on this machine.
//!
//! FilterLogEvents and friends are limited per account and region, and every developer and
//! tool shares that quota: several terminals following several services would throttle each
//! other (and the deploy pipeline). So all cwlogs processes draw CloudWatch Logs requests
//! from one bucket: a small state file under `$XDG_RUNTIME_DIR` (else `/tmp`), read and
//! written under an advisory lock (flock).
//!
//! The bucket hands out evenly spaced slots (a GCRA: the file holds the next free slot), so
//! no one-second window ever sees more than the budget — a burst allowance would let a
//! window see up to twice it. On ThrottlingException the rate halves for every process, and
//! grows back linearly with time (AIMD).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Requests per second when nothing else is said (`--max-rps`).
pub const DEFAULT_RPS: f64 = 4.0;
/// Slots are this much further apart than 1/rate: a request reserved earlier can reach the
/// service a little later than one reserved after it (scheduling on a busy machine,
/// connection set-up, the network); the margin (100 ms per second at 4/s) keeps any
/// one-second window at the service within the budget anyway.
const JITTER_MARGIN: f64 = 0.1;
/// After throttling, the shared rate grows back by this many requests/s every second.
const RECOVER_PER_S: f64 = 0.5;
/// Throttled answers within this long of a halving are the same spell (requests already
/// in flight), not a reason to halve again.
const DECREASE_EVERY_MS: f64 = 2e3;
/// Throttling never takes the rate below this.
const MIN_RPS: f64 = 0.2;

/// What the state file holds. Times are Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    /// The next free slot.
    next_slot: f64,
    /// The rate right after the last throttling, and when that was (0: never).
    throttled_rate: f64,
    throttled_at: f64,
}

impl State {
    const EMPTY: State = State {
        next_slot: 0.0,
        throttled_rate: 0.0,
        throttled_at: 0.0,
    };

    fn parse(text: &str) -> State {
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .filter(|x: &f64| x.is_finite() && *x >= 0.0)
            .collect();
        match v[..] {
            [next_slot, throttled_rate, throttled_at] => State {
                next_slot,
                throttled_rate,
                throttled_at,
            },
            // Unreadable (first use, another version, a torn write): start afresh.
            _ => State::EMPTY,
        }
    }

    fn text(&self) -> String {
        format!(
            "{:.3} {:.4} {:.3}\n",
            self.next_slot, self.throttled_rate, self.throttled_at
        )
    }

    /// The rate in force at `now` for a process allowed `max` requests/s.
    fn rate(&self, now: f64, max: f64) -> f64 {
        if self.throttled_at <= 0.0 {
            return max;
        }
        let grown = self.throttled_rate + RECOVER_PER_S * (now - self.throttled_at).max(0.0) / 1e3;
        grown.min(max)
    }

    /// Reserve the next slot at or after `now`; returns it.
    fn reserve(&mut self, now: f64, max: f64) -> f64 {
        let slot = self.next_slot.max(now);
        self.next_slot = slot + 1e3 / self.rate(now, max) * (1.0 + JITTER_MARGIN);
        slot
    }

    /// The service throttled us: halve the rate in force for everyone.
    fn throttled(&mut self, now: f64, max: f64) {
        if self.throttled_at > 0.0 && now - self.throttled_at < DECREASE_EVERY_MS {
            return;
        }
        self.throttled_rate = (self.rate(now, max) / 2.0).max(MIN_RPS);
        self.throttled_at = now;
    }
}

/// The machine-wide bucket, as this process sees it.
pub struct Budget {
    max_rps: f64,
    store: Store,
}

enum Store {
    File(Mutex<File>),
    /// A budget we cannot share (read-only /tmp, odd permissions) still paces this process.
    Memory(Mutex<State>),
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// Set this process's ceiling (`--max-rps`) before the first request.
pub fn init(max_rps: f64) {
    let _ = BUDGET.set(Budget::open(max_rps, state_path()));
}

fn get() -> &'static Budget {
    BUDGET.get_or_init(|| Budget::open(DEFAULT_RPS, state_path()))
}

/// Wait for this process's turn to send one CloudWatch Logs request.
pub async fn take() {
    let wait = get().reserve();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// `inner`, taking a slot of the budget right before each request goes out: after
/// credentials, signing and serialization, so that the time a request reaches the service
/// is as close to its slot as can be. (Every attempt passes here, retries included.)
pub fn http_client(
    inner: aws_smithy_runtime_api::client::http::SharedHttpClient,
) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_runtime_api::client::http::{
        http_client_fn, HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;

    #[derive(Debug)]
    struct Budgeted(SharedHttpConnector);
    impl HttpConnector for Budgeted {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let inner = self.0.clone();
            HttpConnectorFuture::new(async move {
                take().await;
                inner.call(request).await
            })
        }
    }
    http_client_fn(move |settings, components| {
        SharedHttpConnector::new(Budgeted(inner.http_connector(settings, components)))
    })
}

/// Tell every process that the service throttled a request.
pub fn throttled() {
    get().throttled();
}

/// `$XDG_RUNTIME_DIR/cwlogs-budget`, else `/tmp/cwlogs-budget-UID` (per user: another
/// user's file could not be trusted, nor written).
fn state_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("cwlogs-budget"),
        // SAFETY: getuid cannot fail.
        None => PathBuf::from(format!("/tmp/cwlogs-budget-{}", unsafe { libc::getuid() })),
    }
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

impl Budget {
    fn open(max_rps: f64, path: PathBuf) -> Budget {
        use std::os::unix::fs::OpenOptionsExt;
        // In /tmp another user could have put a symlink or a file of theirs at the name: never
        // follow a link, and use only a file of our own.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .ok()
            .filter(|f| {
                use std::os::unix::fs::MetadataExt;
                // SAFETY: getuid cannot fail.
                f.metadata()
                    .is_ok_and(|m| m.is_file() && m.uid() == unsafe { libc::getuid() })
            });
        let store = match file {
            Some(f) => Store::File(Mutex::new(f)),
            None => Store::Memory(Mutex::new(State::EMPTY)),
        };
        Budget { max_rps, store }
    }

    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let file = match &self.store {
            Store::Memory(st) => return f(&mut st.lock().unwrap_or_else(|e| e.into_inner())),
            Store::File(file) => file,
        };
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        let fd = file.as_raw_fd();
        // SAFETY: flock on a descriptor we own; unlocked below (or when the file closes).
        unsafe { libc::flock(fd, libc::LOCK_EX) };
        let mut text = String::new();
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.read_to_string(&mut text);
        let mut st = State::parse(&text);
        let r = f(&mut st);
        let new = st.text();
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.write_all(new.as_bytes());
        let _ = file.set_len(new.len() as u64);
        // SAFETY: as above.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        r
    }

    fn reserve(&self) -> Duration {
        let now = now_ms();
        let slot = self.update(|st| {
            // A clock set back (or a corrupt file) must not park every process for long.
            if st.next_slot > now + MAX_QUEUE_MS {
                st.next_slot = now;
            }
            st.reserve(now, self.max_rps)
        });
        Duration::from_secs_f64(((slot - now) / 1e3).max(0.0))
    }

    fn throttled(&self) {
        let now = now_ms();
        self.update(|st| st.throttled(now, self.max_rps));
    }
}

/// No process waits longer than this for a slot (requests are signed before they wait, and
/// AWS refuses signatures older than 5 minutes).
const MAX_QUEUE_MS: f64 = 120e3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_never_put_more_than_the_budget_in_a_second() {
        let mut st = State::EMPTY;
        let now = 1_000_000.0;
        let slots: Vec<f64> = (0..40).map(|_| st.reserve(now, 4.0)).collect();
        assert_eq!(slots[0], now);
        for (i, s) in slots.iter().enumerate() {
            let in_window = slots[i..].iter().filter(|t| **t < s + 1e3).count();
            assert!(in_window <= 4, "{in_window} slots in the second from {s}");
        }
        // And the budget is used: 40 requests take about 10 s, not much more.
        assert!(slots[39] - now < 11e3, "{}", slots[39] - now);
    }

    #[test]
    fn throttling_halves_the_rate_for_everyone_and_it_grows_back() {
        let mut st = State::EMPTY;
        let mut now = 5_000.0;
        st.throttled(now, 4.0);
        assert_eq!(st.rate(now, 4.0), 2.0);
        // A process with a lower ceiling keeps its own.
        assert_eq!(st.rate(now, 1.0), 1.0);
        // More throttled answers of the same spell change nothing.
        st.throttled(now + 100.0, 4.0);
        assert_eq!(st.rate(now, 4.0), 2.0);
        now += DECREASE_EVERY_MS;
        st.throttled(now, 4.0);
        // 2/s grown back by 1 over those 2 s, then halved.
        assert!((st.rate(now, 4.0) - 1.5).abs() < 1e-9);
        assert!((st.rate(now + 1e3, 4.0) - 2.0).abs() < 1e-9);
        assert_eq!(st.rate(now + 60e3, 4.0), 4.0);
        for _ in 0..20 {
            now += DECREASE_EVERY_MS;
            st.throttled(now, 4.0);
        }
        assert!(st.rate(now, 4.0) < 1.1, "{}", st.rate(now, 4.0));
    }

    #[test]
    fn the_state_file_round_trips_and_junk_starts_afresh() {
        let st = State {
            next_slot: 1_700_000_000_123.5,
            throttled_rate: 1.25,
            throttled_at: 1_700_000_000_000.0,
        };
        let back = State::parse(&st.text());
        assert!((back.next_slot - st.next_slot).abs() < 1e-3);
        assert_eq!(back.throttled_rate, 1.25);
        assert_eq!(State::parse("garbage"), State::EMPTY);
        assert_eq!(State::parse(""), State::EMPTY);
    }

    #[test]
    fn a_symlink_in_place_of_the_state_file_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("cwlogs-budget-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.join("budget");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let b = Budget::open(4.0, path);
        assert!(matches!(b.store, Store::Memory(_)));
        b.reserve();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_budgets_on_one_file_share_the_slots() {
        let dir = std::env::temp_dir().join(format!("cwlogs-budget-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("budget");
        let a = Budget::open(4.0, path.clone());
        let b = Budget::open(4.0, path);
        let waits: Vec<Duration> = (0..8)
            .map(|i| if i % 2 == 0 { a.reserve() } else { b.reserve() })
            .collect();
        // Eight requests from two processes at 4/s: the last waits about 1.9 s.
        assert!(waits[7] > Duration::from_millis(1700), "{waits:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
