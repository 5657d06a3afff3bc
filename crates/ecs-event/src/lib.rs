//! The log event schema shared by the suite (and by Segment's `ecs-logs` tools before it).
//!
//! `journal-fanout` turns every journal line into an [`Event`] and ships it as JSON;
//! `cwlogs` reads the same JSON back out of CloudWatch Logs. Keeping the type in one
//! place keeps the writer and the reader from drifting apart.
//!
//! Wire shape (field names are a contract with existing dashboards and parsers):
//! `{"level": "INFO", "time": "2026-11-22T13:32:28.396128Z", "info": {"host", "source",
//! "id", "pid", "uid", "gid", "errors": [...]}, "data": {...}, "message": "..."}`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

mod json;
pub use json::{write_map, write_str};

/// Syslog severities, spelled as ecs-logs spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    Emerg,
    Alert,
    Crit,
    Error,
    Warn,
    Notice,
    #[default]
    Info,
    Debug,
}

impl Level {
    pub const ALL: [Level; 8] = [
        Level::Emerg,
        Level::Alert,
        Level::Crit,
        Level::Error,
        Level::Warn,
        Level::Notice,
        Level::Info,
        Level::Debug,
    ];

    /// From a syslog/journald `PRIORITY` (0..=7). Out-of-range values are `Debug`.
    pub fn from_priority(p: u8) -> Level {
        Level::ALL.get(p as usize).copied().unwrap_or(Level::Debug)
    }

    /// The syslog/journald `PRIORITY` number.
    pub fn priority(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Emerg => "EMERG",
            Level::Alert => "ALERT",
            Level::Crit => "CRIT",
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Notice => "NOTICE",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a level name that is not one we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevel(pub String);

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown log level {:?} (expected one of EMERG, ALERT, CRIT, ERROR, WARN, NOTICE, INFO, DEBUG)",
            self.0
        )
    }
}

impl std::error::Error for UnknownLevel {}

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Accepts the ecs-logs names and the common aliases other loggers emit
    /// (`warning`, `err`, `fatal`, `critical`, `trace`...), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = match s.trim().to_ascii_uppercase().as_str() {
            "EMERG" | "EMERGENCY" | "PANIC" => Level::Emerg,
            "ALERT" => Level::Alert,
            "CRIT" | "CRITICAL" | "FATAL" => Level::Crit,
            "ERROR" | "ERR" => Level::Error,
            "WARN" | "WARNING" => Level::Warn,
            "NOTICE" => Level::Notice,
            "INFO" | "INFORMATION" | "INFORMATIONAL" => Level::Info,
            "DEBUG" | "TRACE" => Level::Debug,
            _ => return Err(UnknownLevel(s.to_string())),
        };
        Ok(l)
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Numbers are syslog priorities; strings are names.
        let v = Value::deserialize(d)?;
        match v {
            Value::Number(n) => Ok(Level::from_priority(n.as_u64().unwrap_or(7).min(7) as u8)),
            Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "log level must be a string or a number, got {other}"
            ))),
        }
    }
}

/// Where an event came from. Empty fields are omitted on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Info {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: i64,
    /// Kept as raw JSON: producers put different shapes here (type/error/errno/stack)
    /// and a reader must not lose any of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Value>,
    /// Anything else a producer put in `info`, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One log event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub level: Level,
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub info: Info,
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub message: String,
}

impl Event {
    /// A plain event with a message and nothing else.
    pub fn new(level: Level, time: DateTime<Utc>, message: impl Into<String>) -> Event {
        Event {
            level,
            time,
            info: Info::default(),
            data: Map::new(),
            message: message.into(),
        }
    }

    /// Serialize to compact JSON (what `serde_json` writes, written faster: [`json`]).
    pub fn to_json(&self) -> String {
        // Sized for the message plus the envelope: no regrowth on the way (one per event).
        let mut out = Vec::with_capacity(self.message.len() + 192);
        self.write_json(&mut out);
        String::from_utf8(out).expect("only UTF-8 is written")
    }
}

/// RFC 3339 with microseconds, `Z` for UTC — what ecs-logs wrote and what sorts as text.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("bad event time {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_wire_shape() {
        let json = r#"{"level":"WARN","time":"2026-11-22T13:32:28.396128Z","info":{"host":"vm","pid":12,"errors":[{"type":"x","error":"boom"}],"custom":1},"data":{"a":{"b":1}},"message":"hi"}"#;
        let e: Event = serde_json::from_str(json).unwrap();
        assert_eq!(e.level, Level::Warn);
        assert_eq!(e.info.pid, 12);
        assert_eq!(e.info.extra["custom"], 1);
        let back: Value = serde_json::from_str(&e.to_json()).unwrap();
        let orig: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn levels_from_priority_and_names() {
        assert_eq!(Level::from_priority(3), Level::Error);
        assert_eq!(Level::from_priority(6), Level::Info);
        assert_eq!("warning".parse::<Level>().unwrap(), Level::Warn);
        assert!("loud".parse::<Level>().is_err());
    }
}
