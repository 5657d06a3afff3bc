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

/// `burst` lines per `interval`; `burst == 0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub burst: u32,
    pub interval: Duration,
}

impl Limit {
    pub fn unlimited(&self) -> bool {
        self.burst == 0 || self.interval.is_zero()
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lines per {}",
            self.burst,
            humantime::format_duration(self.interval)
        )
    }
}

impl FromStr for Limit {
    type Err = String;

    /// The label form: `BURST/INTERVAL` (`2000/5s`), or `0` for unlimited.
    fn from_str(s: &str) -> Result<Limit, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(Limit {
                burst: 0,
                interval: Duration::from_secs(5),
            });
        }
        let (b, i) = s
            .split_once('/')
            .ok_or_else(|| format!("rate limit {s:?} is not BURST/INTERVAL (e.g. 2000/5s) or 0"))?;
        let burst = b
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("rate limit {s:?}: burst {b:?} is not a whole number: {e}"))?;
        let interval = humantime::parse_duration(i.trim()).map_err(|e| {
            format!("rate limit {s:?}: interval {i:?} is not a duration like 5s: {e}")
        })?;
        Ok(Limit { burst, interval })
    }
}

/// A container's two budgets.
pub struct Budget {
    limit: Limit,
    normal: Option<DefaultDirectRateLimiter>,
    errors: Option<DefaultDirectRateLimiter>,
}

impl Budget {
    pub fn new(limit: Limit) -> Budget {
        let make = || {
            if limit.unlimited() {
                return None;
            }
            let burst = NonZeroU32::new(limit.burst)?;
            // GCRA: a full bucket of `burst`, refilled at burst/interval.
            let period = (limit.interval / limit.burst).max(Duration::from_nanos(1));
            Some(RateLimiter::direct(
                Quota::with_period(period)?.allow_burst(burst),
            ))
        };
        Budget {
            limit,
            normal: make(),
            errors: make(),
        }
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// May a line of this severity pass?
    pub fn admit(&self, severity: u8) -> bool {
        let l = if severity <= 3 {
            &self.errors
        } else {
            &self.normal
        };
        match l {
            None => true,
            Some(l) => l.check().is_ok(),
        }
    }
}

/// What to write into the container's log about its drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The first drop of an episode.
    Begin,
    /// `n` lines dropped since the previous notice.
    Dropped(u64),
}

impl Notice {
    pub fn text(&self, limit: Limit) -> String {
        match self {
            Notice::Begin => format!(
                "log-proxy: beginning to drop log lines, the container is over its limit of {limit}"
            ),
            Notice::Dropped(n) => format!(
                "log-proxy: dropped {n} log lines, the container is over its limit of {limit}"
            ),
        }
    }

    /// Lines this notice accounts for (`N_DROPPED`): the "dropped" notices of a container add
    /// up exactly to what it lost.
    pub fn count(&self) -> u64 {
        match self {
            Notice::Begin => 0,
            Notice::Dropped(n) => *n,
        }
    }
}

/// One container's drop episode.
#[derive(Debug, Default)]
pub struct Drops {
    active: bool,
    pending: u64,
    last_drop: Option<Instant>,
    last_notice: Option<Instant>,
    /// All lines dropped by the limiter over the container's life in this process.
    pub total: u64,
}

impl Drops {
    /// Count a dropped line; returns the notice to write now, if any.
    pub fn record(&mut self, now: Instant) -> Option<Notice> {
        self.pending += 1;
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
            let n = std::mem::take(&mut self.pending);
            self.last_notice = Some(now);
            return Some(Notice::Dropped(n));
        }
        None
    }

    /// At shutdown: report whatever is still uncounted.
    pub fn flush(&mut self) -> Option<Notice> {
        self.active = false;
        let n = std::mem::take(&mut self.pending);
        (n > 0).then_some(Notice::Dropped(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_label_limits() {
        assert_eq!(
            "2000/5s".parse::<Limit>().unwrap(),
            Limit {
                burst: 2000,
                interval: Duration::from_secs(5)
            }
        );
        assert!("0".parse::<Limit>().unwrap().unlimited());
        let e = "lots".parse::<Limit>().unwrap_err();
        assert!(e.contains("BURST/INTERVAL"), "{e}");
        assert!("10/soon".parse::<Limit>().is_err());
    }

    #[test]
    fn errors_have_their_own_budget() {
        let b = Budget::new(Limit {
            burst: 3,
            interval: Duration::from_secs(60),
        });
        let passed = (0..10).filter(|_| b.admit(6)).count();
        assert_eq!(passed, 3);
        // The info flood is being cut, yet errors still pass.
        assert!(b.admit(3));
        assert!(b.admit(2));
    }

    #[test]
    fn zero_burst_is_unlimited() {
        let b = Budget::new("0".parse().unwrap());
        assert!((0..100_000).all(|_| b.admit(6)));
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
            if let Some(n) = d.record(now) {
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
