//! Retry policy: exponential backoff with full jitter, capped, forever — the journal holds
//! the data, so giving up would only lose it. Shutdown ends the wait by dropping the future.

use std::time::Duration;

use rand::Rng;

const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { attempt: 0 }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The pause before the next attempt: random in [cap/2, cap], cap doubling up to 30 s.
    pub fn next_delay(&mut self) -> Duration {
        let cap = FIRST.saturating_mul(1u32 << self.attempt.min(10)).min(MAX);
        self.attempt += 1;
        let half = cap / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= FIRST / 2 && first <= FIRST);
        for _ in 0..20 {
            assert!(b.next_delay() <= MAX);
        }
        assert!(b.next_delay() >= MAX / 2);
    }
}
