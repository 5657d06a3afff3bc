//! A condition that is logged when it begins and when it ends — with how often it repeated
//! and for how long — instead of once per retry. ("Docker unavailable" came three times in
//! its first second, and then every 10 s, while Docker was down: noise that hid the rest.)
//!
//! The caller keeps one [`Episode`] per condition (per container, where the condition is a
//! container's) and writes its own log lines, so each keeps its fields and level.

use std::time::{Duration, Instant};

/// One condition's state: quiet, or in an episode since some time with some repeats.
#[derive(Debug, Default)]
pub struct Episode {
    began: Option<Instant>,
    /// Times the condition was seen in this episode, the first included.
    seen: u64,
}

/// How an episode went, reported when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Times the condition was seen, the first included.
    pub seen: u64,
    pub lasted: Duration,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.lasted.as_secs_f64();
        let times = if self.seen == 1 { "time" } else { "times" };
        write!(f, "seen {} {times} over {secs:.1}s", self.seen)
    }
}

impl Episode {
    /// The condition holds. True when this begins an episode: log the warning then (and
    /// only then).
    pub fn hit(&mut self) -> bool {
        self.seen += 1;
        if self.began.is_some() {
            return false;
        }
        self.began = Some(Instant::now());
        true
    }

    /// The condition is over. `Some` when an episode ended: log its end with the figures.
    pub fn end(&mut self) -> Option<Ended> {
        let began = self.began.take()?;
        Some(Ended {
            seen: std::mem::take(&mut self.seen),
            lasted: began.elapsed(),
        })
    }

    /// Whether an episode is under way.
    pub fn active(&self) -> bool {
        self.began.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_episode_and_a_count_at_its_end() {
        let mut e = Episode::default();
        assert_eq!(e.end(), None, "nothing to end while quiet");
        assert!(e.hit(), "the first sight begins an episode");
        assert!(!e.hit() && !e.hit(), "repeats are counted, not logged");
        assert!(e.active());
        let ended = e.end().expect("an episode was under way");
        assert_eq!(ended.seen, 3);
        assert!(ended.to_string().starts_with("seen 3 times over "));
        assert_eq!(e.end(), None, "ends once");
        assert!(e.hit(), "the next sight begins a new episode");
        assert_eq!(e.end().unwrap().seen, 1);
    }
}
