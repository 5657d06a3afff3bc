//! One CloudWatch event, read as an ecs-logs event when it is one.
//!
//! journal-fanout writes `ecs_event::Event` JSON; other writers put plain lines. A plain
//! line (or JSON that is not an event) becomes level INFO with the whole line as the
//! message and CloudWatch's timestamp as its time, so nothing is hidden.

use std::sync::Arc;

use chrono::{DateTime, Local, TimeZone, Utc};
use ecs_event::{format_time, Level};
use serde::Serialize;
use serde_json::{Map, Value};

/// An event as FilterLogEvents returns it, tagged with its group.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub group: Arc<str>,
    pub stream: String,
    pub id: String,
    /// The event's CloudWatch timestamp (ms): what time windows and ordering use.
    pub timestamp: i64,
    pub ingestion: i64,
    pub message: String,
}

/// The decoded fields every output mode starts from.
pub struct Decoded {
    pub level: String,
    pub time: DateTime<Utc>,
    pub info: Value,
    pub data: Value,
    pub message: String,
}

pub fn decode(e: &RawEvent) -> Decoded {
    let line = e.message.trim_end_matches(['\n', '\r']);
    let cw_time = ms_to_utc(e.timestamp);
    if line.starts_with('{') {
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) {
            if obj.contains_key("message") || obj.contains_key("level") {
                return from_object(obj, cw_time);
            }
        }
    }
    Decoded {
        level: Level::Info.as_str().to_string(),
        time: cw_time,
        info: Value::Object(Map::new()),
        data: Value::Object(Map::new()),
        message: line.to_string(),
    }
}

fn from_object(mut obj: Map<String, Value>, cw_time: DateTime<Utc>) -> Decoded {
    let level = match obj.remove("level") {
        Some(Value::String(s)) => s
            .parse::<Level>()
            .map(|l| l.as_str().to_string())
            .unwrap_or(s),
        Some(Value::Number(n)) => Level::from_priority(n.as_u64().unwrap_or(7).min(7) as u8)
            .as_str()
            .to_string(),
        _ => Level::Info.as_str().to_string(),
    };
    let time = match obj.get("time") {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(cw_time),
        _ => cw_time,
    };
    let message = match obj.remove("message") {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let info = match obj.remove("info") {
        Some(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    };
    let data = match obj.remove("data") {
        Some(v @ Value::Object(_)) => v,
        Some(Value::Null) | None => Value::Object(Map::new()),
        Some(other) => Value::Object(Map::from_iter([("value".to_string(), other)])),
    };
    Decoded {
        level,
        time,
        info,
        data,
        message,
    }
}

pub fn ms_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// The record `--json` and `--raw` print, and the base of every template's context.
/// A struct, not a map, so the key order is fixed whatever serde_json features are on.
#[derive(Serialize)]
pub struct Record {
    pub group: String,
    pub stream: String,
    pub id: String,
    pub ingest_time: String,
    pub creation_time: String,
    pub level: String,
    pub time: String,
    pub info: Value,
    pub data: Value,
    pub message: String,
}

pub fn record(e: &RawEvent, d: Decoded) -> Record {
    Record {
        group: e.group.to_string(),
        stream: e.stream.clone(),
        id: e.id.clone(),
        ingest_time: format_time(&ms_to_utc(e.ingestion)),
        creation_time: format_time(&ms_to_utc(e.timestamp)),
        level: d.level,
        time: format_time(&d.time),
        info: d.info,
        data: d.data,
        message: d.message,
    }
}

/// The record as a template context, with the derived fields `data_flat` (only when the
/// template uses it), `task_short` and `time_short`.
pub fn template_context(
    r: Record,
    time: &DateTime<Utc>,
    want_flat: bool,
    want_zone: bool,
) -> Map<String, Value> {
    let flat = want_flat.then(|| flatten(&r.data));
    let short = task_short(&r.stream);
    let mut m = Map::new();
    m.insert("group".into(), Value::String(r.group));
    m.insert("stream".into(), Value::String(r.stream));
    m.insert("id".into(), Value::String(r.id));
    m.insert("ingest_time".into(), Value::String(r.ingest_time));
    m.insert("creation_time".into(), Value::String(r.creation_time));
    m.insert("level".into(), Value::String(r.level));
    m.insert("time".into(), Value::String(r.time));
    m.insert("info".into(), r.info);
    m.insert("data".into(), r.data);
    m.insert("message".into(), Value::String(r.message));
    if let Some(flat) = flat {
        m.insert("data_flat".into(), Value::Object(flat));
    }
    m.insert("task_short".into(), Value::String(short));
    m.insert("time_short".into(), Value::String(time_short(time)));
    // Only when the template names it: an offset lookup per event is not free.
    if want_zone {
        m.insert("zone".into(), Value::String(zone(time)));
    }
    m
}

/// `--utc`: show times in UTC instead of the local zone. Set once at start.
static UTC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_utc(on: bool) {
    UTC.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `MM-DD HH:MM:SS` in the local zone (or UTC with `--utc`), as the Go tool printed it.
pub fn time_short(t: &DateTime<Utc>) -> String {
    if UTC.load(std::sync::atomic::Ordering::Relaxed) {
        t.format("%m-%d %H:%M:%S").to_string()
    } else {
        t.with_timezone(&Local).format("%m-%d %H:%M:%S").to_string()
    }
}

/// The zone `time_short` is in: `UTC` with `--utc`, else the local offset (`+02:00`).
pub fn zone(t: &DateTime<Utc>) -> String {
    if UTC.load(std::sync::atomic::Ordering::Relaxed) {
        "UTC".into()
    } else {
        t.with_timezone(&Local).format("%:z").to_string()
    }
}

/// The first block of a task-UUID stream name (`0f5c3b2a-…` → `0f5c3b2a`), else the name.
pub fn task_short(stream: &str) -> String {
    let parts: Vec<&str> = stream.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let is_uuid = parts.len() == 5
        && parts
            .iter()
            .zip(lens)
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if is_uuid {
        parts[0].to_string()
    } else {
        stream.to_string()
    }
}

/// Nested objects and arrays flattened to dotted keys, sorted by key so output is stable.
pub fn flatten(v: &Value) -> Map<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    flatten_into("", v, &mut out);
    out.into_iter().collect()
}

fn flatten_into(prefix: &str, v: &Value, out: &mut std::collections::BTreeMap<String, Value>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten_into(&key(k), v, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten_into(&key(&i.to_string()), v, out);
            }
        }
        Value::Object(_) | Value::Array(_) if prefix.is_empty() => {}
        Value::Object(_) | Value::Array(_) => {
            out.insert(prefix.to_string(), Value::String(v.to_string()));
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(msg: &str) -> RawEvent {
        RawEvent {
            group: "g".into(),
            stream: "s".into(),
            id: "1".into(),
            timestamp: 1_495_378_800_000,
            ingestion: 1_495_378_800_100,
            message: msg.into(),
        }
    }

    #[test]
    fn ecs_event_fields_are_read() {
        let d = decode(&raw(
            r#"{"level":"WARN","time":"2017-05-21T15:00:01.5Z","info":{"host":"h1"},"data":{"a":1},"message":"hi"}"#,
        ));
        assert_eq!(d.level, "WARN");
        assert_eq!(format_time(&d.time), "2017-05-21T15:00:01.500000Z");
        assert_eq!(d.info, json!({"host":"h1"}));
        assert_eq!(d.data, json!({"a":1}));
        assert_eq!(d.message, "hi");
    }

    #[test]
    fn plain_lines_and_non_event_json_are_info_with_cloudwatch_time() {
        for line in ["just text\n", r#"{"foo":1}"#, "{broken"] {
            let d = decode(&raw(line));
            assert_eq!(d.level, "INFO");
            assert_eq!(d.message, line.trim_end());
            assert_eq!(d.time.timestamp_millis(), 1_495_378_800_000);
        }
    }

    #[test]
    fn level_aliases_and_numbers_are_normalised() {
        assert_eq!(
            decode(&raw(r#"{"level":"warning","message":"x"}"#)).level,
            "WARN"
        );
        assert_eq!(decode(&raw(r#"{"level":3,"message":"x"}"#)).level, "ERROR");
        assert_eq!(
            decode(&raw(r#"{"level":"chatty","message":"x"}"#)).level,
            "chatty"
        );
    }

    #[test]
    fn flatten_uses_dotted_keys() {
        let f = flatten(&json!({"b":{"c":1,"d":[true,"x"]},"a":"s","e":{}}));
        let keys: Vec<_> = f.keys().cloned().collect();
        assert_eq!(keys, ["a", "b.c", "b.d.0", "b.d.1", "e"]);
        assert_eq!(f["e"], json!("{}"));
    }

    #[test]
    fn task_short_only_shortens_uuids() {
        assert_eq!(
            task_short("0f5c3b2a-1d2e-4f60-8a9b-0c1d2e3f4a5b"),
            "0f5c3b2a"
        );
        assert_eq!(task_short("web-1"), "web-1");
        assert_eq!(task_short("ecs/api/0f5c3b2a1d2e"), "ecs/api/0f5c3b2a1d2e");
    }
}
