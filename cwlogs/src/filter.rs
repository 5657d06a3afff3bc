//! Client-side filters: `--grep-v` drops lines matching any pattern, `--level` keeps
//! events at a level or more severe. CloudWatch's own `--grep` runs server side.

use anyhow::{Context, Result};
use ecs_event::Level;
use regex_lite::Regex;

use crate::event::Decoded;

#[derive(Default)]
pub struct Filter {
    exclude: Vec<Regex>,
    /// The least severe level still printed.
    min_level: Option<Level>,
}

impl Filter {
    /// Compile the flags' values; a bad value is a configuration error naming it.
    pub fn new(grep_v: &[String], level: Option<&str>) -> Result<Filter> {
        let exclude = grep_v
            .iter()
            .map(|p| Regex::new(p).with_context(|| format!("invalid --grep-v regex {p:?}")))
            .collect::<Result<Vec<_>>>()?;
        let min_level = level
            .map(|l| {
                l.parse::<Level>().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid --level {l:?}: expected one of EMERG ALERT CRIT ERROR WARN NOTICE INFO DEBUG"
                    )
                })
            })
            .transpose()?;
        Ok(Filter { exclude, min_level })
    }

    pub fn is_empty(&self) -> bool {
        self.exclude.is_empty() && self.min_level.is_none()
    }

    /// Whether the event is printed. `--grep-v` looks at the raw line and the message,
    /// so a pattern matches what the operator sees whichever format is chosen.
    pub fn keeps(&self, raw_line: &str, d: &Decoded) -> bool {
        if let Some(min) = self.min_level {
            // A level that is no ecs-logs name (a writer's own word) is kept: never hide
            // what cannot be ranked.
            if let Ok(l) = d.level.parse::<Level>() {
                if l > min {
                    return false;
                }
            }
        }
        !self
            .exclude
            .iter()
            .any(|r| r.is_match(raw_line) || r.is_match(&d.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, RawEvent};

    fn ev(msg: &str) -> RawEvent {
        RawEvent {
            group: "svc".into(),
            stream: "s".into(),
            id: "1".into(),
            timestamp: 0,
            ingestion: 0,
            message: msg.into(),
        }
    }

    fn keeps(f: &Filter, msg: &str) -> bool {
        let e = ev(msg);
        f.keeps(&e.message, &decode(&e))
    }

    #[test]
    fn level_keeps_this_and_more_severe() {
        let f = Filter::new(&[], Some("warn")).unwrap();
        assert!(keeps(&f, r#"{"level":"ERROR","message":"x"}"#));
        assert!(keeps(&f, r#"{"level":"WARN","message":"x"}"#));
        assert!(keeps(&f, r#"{"level":3,"message":"x"}"#)); // PRIORITY 3 = ERROR
        assert!(!keeps(&f, r#"{"level":"INFO","message":"x"}"#));
        assert!(!keeps(&f, r#"{"level":7,"message":"x"}"#));
        assert!(!keeps(&f, "plain line is INFO"));
    }

    #[test]
    fn grep_v_drops_matches_of_any_pattern() {
        let f = Filter::new(&["health".into(), "^GET /metrics".into()], None).unwrap();
        assert!(!keeps(&f, "GET /health 200"));
        assert!(!keeps(&f, "GET /metrics 200"));
        assert!(keeps(&f, "POST /orders 201"));
        assert!(!keeps(&f, r#"{"level":"INFO","message":"GET /metrics"}"#));
    }

    #[test]
    fn bad_values_are_named() {
        let e = Filter::new(&["(".into()], None).err().unwrap();
        assert!(format!("{e:#}").contains("invalid --grep-v regex \"(\""));
        let e = Filter::new(&[], Some("loud")).err().unwrap();
        assert!(e.to_string().starts_with("invalid --level \"loud\""));
    }
}
