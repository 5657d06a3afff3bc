//! Per-container rate limits and the accounting of what they drop.
//!
//! Each container gets two `governor` budgets of the same size: one for ordinary lines and one
//! for lines of severity error and worse (Docker sends stderr as `err`), so an info flood being
//! cut never silences the container's errors. Every dropped line is counted into the
//! container's current *episode*, and the episode is reported into the container's own log:
//! a "beginning to drop" notice at the first drop, a "dropped N" notice at least once per
//! interval while it lasts, and a last one within one interval after the last drop — driven by
//! a clock tick, so a container that went quiet or exited still tells.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// How lines of severity error and worse are budgeted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Errors {
    /// A budget of their own, of the same size (Docker sends stderr as `err`): an info flood
    /// being cut never silences the container's errors.
    #[default]
    Separate,
    /// Counted in the same budget as every other line.
    Shared,
    /// Never limited.
    Exempt,
}

impl FromStr for Errors {
    type Err = String;
    fn from_str(s: &str) -> Result<Errors, String> {
        match s {
            "separate" => Ok(Errors::Separate),
            "shared" => Ok(Errors::Shared),
            "exempt" => Ok(Errors::Exempt),
            _ => Err(format!(
                "errors = {s:?}: use \"separate\", \"shared\" or \"exempt\""
            )),
        }
    }
}

/// `lines` lines and `bytes` message bytes per `interval`; 0 means that budget is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub lines: u32,
    pub bytes: u64,
    pub interval: Duration,
    pub errors: Errors,
}

impl Limit {
    /// `lines` per `interval`, no byte budget, errors separate (the flags' form).
    pub fn lines(lines: u32, interval: Duration) -> Limit {
        Limit {
            lines,
            bytes: 0,
            interval,
            errors: Errors::Separate,
        }
    }

    pub fn unlimited(&self) -> bool {
        (self.lines == 0 && self.bytes == 0) || self.interval.is_zero()
    }
}

/// `20 MiB`, `4 KiB`, `512 B`: sizes as operators write them.
pub fn show_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if b >= size && b.is_multiple_of(size) {
            return format!("{} {unit}", b / size);
        }
    }
    for (unit, size) in UNITS {
        if b >= size {
            return format!("{:.1} {unit}", b as f64 / size as f64);
        }
    }
    format!("{b} B")
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = humantime::format_duration(self.interval);
        match (self.lines, self.bytes) {
            (0, 0) => write!(f, "no limit"),
            (l, 0) => write!(f, "{l} lines per {per}"),
            (0, b) => write!(f, "{} per {per}", show_bytes(b)),
            (l, b) => write!(f, "{l} lines / {} per {per}", show_bytes(b)),
        }
    }
}

impl FromStr for Limit {
    type Err = String;

    /// The label form: `LINES/INTERVAL` (`2000/5s`), `LINES/INTERVAL/BYTES` (`2000/5s/8MiB`),
    /// or `0` for unlimited.
    fn from_str(s: &str) -> Result<Limit, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(Limit::lines(0, Duration::from_secs(5)));
        }
        let mut parts = s.split('/');
        let (Some(b), Some(i)) = (parts.next(), parts.next()) else {
            return Err(format!(
                "rate limit {s:?} is not LINES/INTERVAL[/BYTES] (e.g. 2000/5s or 2000/5s/8MiB) or 0"
            ));
        };
        let lines = b
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("rate limit {s:?}: lines {b:?} is not a whole number: {e}"))?;
        let interval = humantime::parse_duration(i.trim()).map_err(|e| {
            format!("rate limit {s:?}: interval {i:?} is not a duration like 5s: {e}")
        })?;
        let bytes = match parts.next() {
            Some(b) => parse_size::parse_size(b.trim())
                .map_err(|e| format!("rate limit {s:?}: {b:?} is not a size like 8MiB: {e}"))?,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(format!(
                "rate limit {s:?} has more than three parts: LINES/INTERVAL/BYTES"
            ));
        }
        Ok(Limit {
            lines,
            bytes,
            interval,
            errors: Errors::Separate,
        })
    }
}

/// A governor bucket of `n` cells per `interval` (`None`: unlimited).
fn bucket(n: u64, interval: Duration) -> Option<DefaultDirectRateLimiter> {
    // Larger budgets than u32 cells (4 GiB per interval) are as good as unlimited here.
    let burst = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))?;
    // GCRA: a full bucket of `burst`, refilled at burst/interval.
    let period = (interval / burst.get()).max(Duration::from_nanos(1));
    Some(RateLimiter::direct_with_clock(
        Quota::with_period(period)?.allow_burst(burst),
        clock(),
    ))
}

/// One clock for every bucket. Each `QuantaClock::default()` calibrates a new TSC clock
/// (`CPUID`, a trap to the hypervisor on a VM): measured at ~85 µs per container, so a
/// reload that moved 1,000 containers stalled the processor for 60–110 ms.
fn clock() -> governor::clock::QuantaClock {
    static CLOCK: std::sync::OnceLock<governor::clock::QuantaClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(Default::default).clone()
}

/// One budget: lines and bytes.
struct Pair {
    lines: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
}

impl Pair {
    fn new(limit: &Limit) -> Pair {
        if limit.interval.is_zero() {
            return Pair {
                lines: None,
                bytes: None,
            };
        }
        Pair {
            lines: bucket(limit.lines as u64, limit.interval),
            bytes: bucket(limit.bytes, limit.interval),
        }
    }

    /// Take one line of `len` bytes, if both budgets have room.
    fn admit(&self, len: usize) -> bool {
        if let Some(l) = &self.lines {
            if l.check().is_err() {
                return false;
            }
        }
        match (
            &self.bytes,
            NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX)),
        ) {
            (Some(b), Some(n)) => matches!(b.check_n(n), Ok(Ok(()))),
            _ => true,
        }
    }

    /// Spend what is left (see [`Budget::moved`]).
    fn drain(&self) {
        if let Some(l) = &self.lines {
            while l.check().is_ok() {}
        }
        if let Some(b) = &self.bytes {
            let mut n = NonZeroU32::MAX;
            // Halve the amount until the rest is taken: a bucket holds at most u32::MAX.
            loop {
                match b.check_n(n) {
                    Ok(Ok(())) => continue,
                    _ if n.get() == 1 => break,
                    _ => n = NonZeroU32::new(n.get() / 2).unwrap(),
                }
            }
        }
    }
}

/// A container's budgets: one for ordinary lines and, unless errors share or are exempt, one
/// of the same size for errors.
pub struct Budget {
    limit: Limit,
    normal: Pair,
    errors: Option<Pair>,
}

impl Budget {
    pub fn new(limit: Limit) -> Budget {
        Budget {
            limit,
            normal: Pair::new(&limit),
            errors: (limit.errors == Errors::Separate).then(|| Pair::new(&limit)),
        }
    }

    /// A budget replacing one a reload changed. A container in the middle of a drop
    /// episode starts with its new budget spent (refilling at the new rate), so moving it
    /// never lets a flood through; one that was within its budget starts full, as before.
    pub fn moved(limit: Limit, dropping: bool) -> Budget {
        let b = Budget::new(limit);
        if dropping {
            b.normal.drain();
            if let Some(e) = &b.errors {
                e.drain();
            }
        }
        b
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// May a line of this severity and message length pass?
    pub fn admit(&self, severity: u8, len: usize) -> bool {
        if severity <= 3 {
            return match (&self.errors, self.limit.errors) {
                (_, Errors::Exempt) => true,
                (Some(e), _) => e.admit(len),
                (None, _) => self.normal.admit(len),
            };
        }
        self.normal.admit(len)
    }
}

/// What to write into the container's log about its drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The first drop of an episode.
    Begin,
    /// `lines` lines of `bytes` message bytes dropped since the previous notice.
    Dropped { lines: u64, bytes: u64 },
}

impl Notice {
    /// The notice's text; `rule` names the policy rule that set the limit, if any.
    pub fn text(&self, limit: Limit, rule: Option<&str>) -> String {
        let rule = rule.map(|r| format!(" (rule {r})")).unwrap_or_default();
        match self {
            Notice::Begin => format!(
                "log-proxy: beginning to drop log lines, the container is over its limit of {limit}{rule}"
            ),
            Notice::Dropped { lines, bytes } => format!(
                "log-proxy: dropped {lines} log lines ({}), the container is over its limit of {limit}{rule}",
                show_bytes(*bytes)
            ),
        }
    }

    /// Lines this notice accounts for (`N_DROPPED`): the "dropped" notices of a container add
    /// up exactly to what it lost.
    pub fn count(&self) -> u64 {
        match self {
            Notice::Begin => 0,
            Notice::Dropped { lines, .. } => *lines,
        }
    }

    /// Message bytes this notice accounts for (`N_DROPPED_BYTES`), adding up the same way.
    pub fn bytes(&self) -> u64 {
        match self {
            Notice::Begin => 0,
            Notice::Dropped { bytes, .. } => *bytes,
        }
    }
}

/// One container's drop episode.
#[derive(Debug, Default)]
pub struct Drops {
    active: bool,
    pending: u64,
    pending_bytes: u64,
    last_drop: Option<Instant>,
    last_notice: Option<Instant>,
    /// All lines dropped by the limiter over the container's life in this process.
    pub total: u64,
}

impl Drops {
    /// Count a dropped line of `bytes` message bytes; returns the notice to write now, if any.
    pub fn record(&mut self, now: Instant, bytes: u64) -> Option<Notice> {
        self.pending += 1;
        self.pending_bytes += bytes;
        self.total += 1;
        self.last_drop = Some(now);
        if self.active {
            None
        } else {
            self.active = true;
            self.last_notice = Some(now);
            Some(Notice::Begin)
        }
    }

    /// Is an episode open (the processor must keep ticking this container)?
    pub fn active(&self) -> bool {
        self.active
    }

    /// Called on every clock tick while an episode is open: reports the count at least once
    /// per `interval`, and closes the episode (with a last report) once a whole `interval`
    /// has passed without a drop.
    pub fn tick(&mut self, now: Instant, interval: Duration) -> Option<Notice> {
        if !self.active {
            return None;
        }
        let since_drop = now.saturating_duration_since(self.last_drop.unwrap_or(now));
        let since_notice = now.saturating_duration_since(self.last_notice.unwrap_or(now));
        let quiet = since_drop >= interval;
        if quiet {
            self.active = false;
        }
        if self.pending > 0 && (quiet || since_notice >= interval) {
            self.last_notice = Some(now);
            return Some(self.take());
        }
        None
    }

    /// At shutdown: report whatever is still uncounted.
    pub fn flush(&mut self) -> Option<Notice> {
        self.active = false;
        (self.pending > 0).then(|| self.take())
    }

    fn take(&mut self) -> Notice {
        Notice::Dropped {
            lines: std::mem::take(&mut self.pending),
            bytes: std::mem::take(&mut self.pending_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_label_limits() {
        assert_eq!(
            "2000/5s".parse::<Limit>().unwrap(),
            Limit::lines(2000, Duration::from_secs(5))
        );
        let l = "2000/5s/8MiB".parse::<Limit>().unwrap();
        assert_eq!(l.bytes, 8 << 20);
        assert_eq!(l.to_string(), "2000 lines / 8 MiB per 5s");
        assert!("0".parse::<Limit>().unwrap().unlimited());
        let e = "lots".parse::<Limit>().unwrap_err();
        assert!(e.contains("LINES/INTERVAL"), "{e}");
        assert!("10/soon".parse::<Limit>().is_err());
    }

    #[test]
    fn errors_have_their_own_budget() {
        let b = Budget::new(Limit::lines(3, Duration::from_secs(60)));
        let passed = (0..10).filter(|_| b.admit(6, 10)).count();
        assert_eq!(passed, 3);
        // The info flood is being cut, yet errors still pass.
        assert!(b.admit(3, 10));
        assert!(b.admit(2, 10));
        let shared = Budget::new(Limit {
            errors: Errors::Shared,
            ..Limit::lines(3, Duration::from_secs(60))
        });
        assert_eq!((0..10).filter(|_| shared.admit(6, 10)).count(), 3);
        assert!(!shared.admit(3, 10));
        let exempt = Budget::new(Limit {
            errors: Errors::Exempt,
            ..Limit::lines(3, Duration::from_secs(60))
        });
        assert_eq!((0..10).filter(|_| exempt.admit(6, 10)).count(), 3);
        assert!((0..100).all(|_| exempt.admit(3, 10)));
    }

    #[test]
    fn bytes_are_a_budget_of_their_own() {
        let b = Budget::new(Limit {
            bytes: 1000,
            ..Limit::lines(100, Duration::from_secs(60))
        });
        // 100-byte lines: the byte budget ends it after 10.
        assert_eq!((0..50).filter(|_| b.admit(6, 100)).count(), 10);
        // A line larger than the whole budget never fits.
        let b = Budget::new(Limit {
            bytes: 1000,
            ..Limit::lines(0, Duration::from_secs(60))
        });
        assert!(!b.admit(6, 1001));
        assert!(b.admit(6, 0), "an empty line costs no bytes");
    }

    #[test]
    fn a_moved_budget_of_a_dropping_container_starts_spent() {
        let l = Limit::lines(100, Duration::from_secs(3600));
        assert!(!Budget::moved(l, true).admit(6, 1));
        assert!(Budget::moved(l, false).admit(6, 1));
        let lb = Limit {
            bytes: 1 << 20,
            ..l
        };
        assert!(!Budget::moved(lb, true).admit(6, 1));
    }

    #[test]
    fn zero_burst_is_unlimited() {
        let b = Budget::new("0".parse().unwrap());
        assert!((0..100_000).all(|_| b.admit(6, 100)));
    }

    #[test]
    fn episode_reports_add_up_and_end_within_an_interval() {
        let iv = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut d = Drops::default();
        let mut counted = 0;
        let mut notices = vec![];
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 12); // 12 s of drops
            if let Some(n) = d.record(now, 10) {
                notices.push(n);
            }
            if let Some(n) = d.tick(now, iv) {
                counted += n.count();
                notices.push(n);
            }
        }
        assert_eq!(notices[0], Notice::Begin);
        // The container goes quiet: ticks alone must close the episode.
        let last = t0 + Duration::from_millis(999 * 12);
        let mut t = last;
        while d.active() {
            t += Duration::from_millis(100);
            if let Some(n) = d.tick(t, iv) {
                counted += n.count();
                notices.push(n);
            }
        }
        assert!(t - last <= iv + Duration::from_millis(100));
        assert_eq!(counted, 1000);
        assert!(notices.len() >= 4, "{notices:?}"); // begin + one per interval + last
    }
}
