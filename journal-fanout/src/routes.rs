//! Which destinations an entry goes to: `[[route]]` rules, evaluated in order, the first
//! match deciding. No match sends the entry to every destination (what journal-fanout did
//! before routes existed). `to = []` drops on purpose: counted as routed away, never as lost.

use globset::{Glob, GlobMatcher};

use crate::naming::{Fields, Values};
use crate::sinks::Record;

/// A set of running destinations, one bit per destination in start order.
pub type DestSet = u64;

/// Every destination in a set of `n`.
pub fn all(n: usize) -> DestSet {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its place in the file, from 1, for messages and the per-route counter.
    pub number: usize,
    group: Option<(String, GlobMatcher)>,
    /// Matches this syslog severity and every less severe one (a larger number).
    min_severity: Option<u8>,
    fields: Vec<(usize, String, GlobMatcher)>,
    pub to: DestSet,
    /// The destinations' names, as written (for `check-config`).
    pub to_names: Vec<String>,
}

/// A route as written in the file, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct RouteSpec {
    pub group: Option<String>,
    pub priority: Option<String>,
    pub fields: Vec<(String, String)>,
    pub to: Vec<String>,
}

impl Route {
    /// Check `spec` (route number `number`) against the running destinations `dests`.
    pub fn build(
        number: usize,
        spec: &RouteSpec,
        dests: &[&str],
        fields: &mut Fields,
    ) -> Result<Route, String> {
        let at = format!("route {number}");
        let glob = |what: &str, pattern: &str| {
            Glob::new(pattern)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("{at}: match.{what} = {pattern:?} is not a valid glob: {e}"))
        };
        let group = match &spec.group {
            Some(p) => Some((p.clone(), glob("group", p)?)),
            None => None,
        };
        let min_severity = match &spec.priority {
            Some(p) => Some(parse_priority(p).ok_or_else(|| {
                format!(
                    "{at}: match.priority = {p:?} is not a syslog priority (emerg, alert, crit, \
                     err, warning, notice, info, debug, or 0-7)"
                )
            })?),
            None => None,
        };
        let mut matchers = Vec::new();
        for (name, pattern) in &spec.fields {
            if !crate::naming::is_field_name(name) {
                return Err(format!(
                    "{at}: match.field.{name} is not a journal field name (upper case letters, \
                     digits and _, e.g. CONTAINER_NAME)"
                ));
            }
            matchers.push((
                fields.index(name),
                name.clone(),
                glob(&format!("field.{name}"), pattern)?,
            ));
        }
        let mut to = 0;
        for name in &spec.to {
            let canonical = if name == "cloudwatch" {
                "cloudwatchlogs"
            } else {
                name
            };
            match dests.iter().position(|d| *d == canonical) {
                Some(i) => to |= 1 << i,
                None => {
                    return Err(format!(
                        "{at}: to = {name:?} is not a running destination (running: {}); add it \
                         to --dst or remove it from the route",
                        dests.join(", ")
                    ))
                }
            }
        }
        Ok(Route {
            number,
            group,
            min_severity,
            fields: matchers,
            to,
            to_names: spec.to.clone(),
        })
    }

    fn matches(&self, r: &Record, values: &Values) -> bool {
        if let Some((_, g)) = &self.group {
            if !g.is_match(&r.group) {
                return false;
            }
        }
        if let Some(min) = self.min_severity {
            if r.event.level.priority() < min {
                return false;
            }
        }
        self.fields.iter().all(|(i, _, g)| {
            values
                .get(*i)
                .and_then(|v| v.as_deref())
                .is_some_and(|v| g.is_match(crate::event::utf8_lossy(v).as_ref()))
        })
    }
}

/// The routes of a configuration, in order.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub routes: Vec<Route>,
    /// Every running destination (the answer when nothing matches).
    pub everywhere: DestSet,
}

/// Where one entry goes, and which route said so (`None`: no route matched).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub to: DestSet,
    pub route: Option<usize>,
}

impl Routes {
    pub fn decide(&self, r: &Record, values: &Values) -> Decision {
        for route in &self.routes {
            if route.matches(r, values) {
                return Decision {
                    to: route.to,
                    route: Some(route.number),
                };
            }
        }
        Decision {
            to: self.everywhere,
            route: None,
        }
    }
}

/// A syslog priority by name or number, as its severity number.
pub fn parse_priority(p: &str) -> Option<u8> {
    let p = p.trim().to_ascii_lowercase();
    if let Ok(n) = p.parse::<u8>() {
        return (n <= 7).then_some(n);
    }
    Some(match p.as_str() {
        "emerg" | "emergency" | "panic" => 0,
        "alert" => 1,
        "crit" | "critical" => 2,
        "err" | "error" => 3,
        "warning" | "warn" => 4,
        "notice" => 5,
        "info" => 6,
        "debug" => 7,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ecs_event::{Event, Level};

    fn rec(group: &str, level: Level) -> Record {
        Record {
            group: group.into(),
            stream: "s".into(),
            event: Event::new(level, Utc::now(), "m"),
        }
    }

    fn routes(specs: &[RouteSpec], fields: &mut Fields) -> Routes {
        let dests = ["cloudwatchlogs", "loggly", "logdna"];
        Routes {
            routes: specs
                .iter()
                .enumerate()
                .map(|(i, s)| Route::build(i + 1, s, &dests, fields).unwrap())
                .collect(),
            everywhere: all(3),
        }
    }

    #[test]
    fn first_match_decides_and_no_match_goes_everywhere() {
        let mut f = Fields::default();
        let r = routes(
            &[
                RouteSpec {
                    group: Some("payments-*".into()),
                    to: vec!["cloudwatchlogs".into()],
                    ..Default::default()
                },
                RouteSpec {
                    priority: Some("debug".into()),
                    ..Default::default()
                },
                RouteSpec {
                    fields: vec![("CONTAINER_NAME".into(), "*-canary".into())],
                    to: vec!["loggly".into(), "logdna".into()],
                    ..Default::default()
                },
            ],
            &mut f,
        );
        let none: Vec<Option<Vec<u8>>> = vec![None];
        let canary: Vec<Option<Vec<u8>>> = vec![Some(b"web-canary".to_vec())];
        assert_eq!(
            r.decide(&rec("payments-api", Level::Debug), &none).to,
            0b001
        );
        assert_eq!(
            r.decide(&rec("web", Level::Debug), &canary),
            Decision {
                to: 0,
                route: Some(2)
            }
        );
        assert_eq!(r.decide(&rec("web", Level::Info), &canary).to, 0b110);
        assert_eq!(
            r.decide(&rec("web", Level::Error), &none),
            Decision {
                to: 0b111,
                route: None
            }
        );
    }

    #[test]
    fn priority_means_this_and_less_severe() {
        let mut f = Fields::default();
        let r = routes(
            &[RouteSpec {
                priority: Some("info".into()),
                ..Default::default()
            }],
            &mut f,
        );
        assert_eq!(r.decide(&rec("a", Level::Debug), &[]).route, Some(1));
        assert_eq!(r.decide(&rec("a", Level::Info), &[]).route, Some(1));
        assert_eq!(r.decide(&rec("a", Level::Notice), &[]).route, None);
    }

    #[test]
    fn errors_name_the_route() {
        let mut f = Fields::default();
        let e = |s: RouteSpec| Route::build(3, &s, &["stdout"], &mut f.clone()).unwrap_err();
        assert!(e(RouteSpec {
            to: vec!["loggly".into()],
            ..Default::default()
        })
        .contains("route 3: to = \"loggly\" is not a running destination (running: stdout)"));
        assert!(e(RouteSpec {
            priority: Some("loud".into()),
            ..Default::default()
        })
        .contains("not a syslog priority"));
        assert!(e(RouteSpec {
            fields: vec![("name".into(), "x".into())],
            ..Default::default()
        })
        .contains("not a journal field name"));
        let _ = &mut f;
    }
}
