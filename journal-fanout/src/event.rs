//! A journal entry becomes an ecs-logs event (`ecs_event::Event`) routed to a group and stream.
//!
//! Rules (issue 3): a line that is already an ecs event keeps its fields and gets the
//! missing ones from the entry; any other JSON object goes under `data` whole, with its
//! `message`/`msg` as the message; a plain line is the message. Group and stream names are
//! made valid for CloudWatch Logs so every destination sees the same names.

use chrono::{DateTime, TimeZone, Utc};
use ecs_event::{Event, Info, Level};
use serde_json::{Map, Value};

use crate::config::EventRules;
use crate::sinks::Record;

/// The fields of a journal entry that matter here, copied out of the journal.
#[derive(Debug, Default, Clone)]
pub struct JournalEntry {
    /// The values of the fields naming and routes read (`EventRules::fields`).
    pub values: Vec<Option<Vec<u8>>>,
    pub message: Option<Vec<u8>>,
    pub priority: Option<Vec<u8>>,
    pub hostname: Option<Vec<u8>>,
    pub pid: Option<Vec<u8>>,
    pub uid: Option<Vec<u8>>,
    pub gid: Option<Vec<u8>>,
    pub code_file: Option<Vec<u8>>,
    pub code_line: Option<Vec<u8>>,
    pub code_func: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
    /// The entry's realtime timestamp, µs since the epoch.
    pub realtime_usec: u64,
}

/// What the entry provides when the line itself does not say.
struct Defaults {
    level: Level,
    time: DateTime<Utc>,
    info: Info,
}

/// Turn a journal entry into a record, or `None` when it is not a container line (the
/// group template has no value for it).
pub fn from_journal(rules: &EventRules, e: &mut JournalEntry) -> Option<Record> {
    let group = rules
        .group
        .render(&rules.fields, &e.values)
        .filter(|g| !g.is_empty())?;
    let group = valid_group(group);
    let stream = match rules
        .stream
        .render(&rules.fields, &e.values)
        .filter(|s| !s.is_empty())
    {
        Some(s) => valid_stream(s),
        // A tagged entry without a stream still belongs to its group: never drop it.
        None => "unknown".to_string(),
    };
    let text = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let num = |v: &Option<Vec<u8>>| -> i64 {
        v.as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let host = match &rules.hostname_override {
        Some(h) => h.clone(),
        None => match e.hostname.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => utf8_lossy(h).into_owned(),
            None => rules.hostname_default.clone(),
        },
    };
    let source = match (&e.code_file, &e.code_line, &e.code_func) {
        (None, None, None) => String::new(),
        _ => format!(
            "{}:{}:{}",
            text(&e.code_file),
            text(&e.code_line),
            text(&e.code_func)
        ),
    };
    let defaults = Defaults {
        level: level_from_priority(e.priority.as_deref()),
        time: time_from_usec(e.realtime_usec),
        info: Info {
            host,
            source,
            id: text(&e.message_id),
            pid: num(&e.pid),
            uid: num(&e.uid),
            gid: num(&e.gid),
            ..Info::default()
        },
    };
    // The message moves into the event (no copy when it is UTF-8, as nearly all are).
    let line = e.message.take().unwrap_or_default();
    let event = from_line(line, defaults);
    Some(Record {
        group,
        stream,
        event,
    })
}

/// Normalize a JSON value that claims to be an event (stdin source): same rules as a line.
pub fn from_json(value: Value, host: &str) -> Event {
    let defaults = Defaults {
        level: Level::Info,
        time: Utc::now(),
        info: Info {
            host: host.to_string(),
            ..Info::default()
        },
    };
    match value {
        Value::Object(map) => from_object(map, defaults),
        Value::String(s) => plain(s, defaults),
        other => plain(other.to_string(), defaults),
    }
}

fn from_line(line: Vec<u8>, d: Defaults) -> Event {
    let trimmed = line.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        if let Ok(map) = serde_json::from_slice::<Map<String, Value>>(trimmed) {
            return from_object(map, d);
        }
    }
    let mut text = match String::from_utf8(line) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    // Docker and most loggers end lines with a newline; the event does not need it.
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    plain(text, d)
}

/// `b` as text, invalid UTF-8 replaced. `str::from_utf8` first: its validation is several
/// times faster than `String::from_utf8_lossy`'s on valid text (measured on the reader's
/// profile), and journal fields are nearly always valid.
pub fn utf8_lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

fn plain(message: String, d: Defaults) -> Event {
    Event {
        level: d.level,
        time: d.time,
        info: d.info,
        data: Map::new(),
        message,
    }
}

const EVENT_KEYS: [&str; 5] = ["level", "time", "info", "data", "message"];

fn from_object(mut map: Map<String, Value>, d: Defaults) -> Event {
    let looks_like_event = !map.is_empty() && map.keys().all(|k| EVENT_KEYS.contains(&k.as_str()));
    if looks_like_event {
        let mut filled = map.clone();
        filled
            .entry("level")
            .or_insert_with(|| Value::String(d.level.as_str().into()));
        if filled.get("level").is_some_and(Value::is_null) {
            filled.insert("level".into(), Value::String(d.level.as_str().into()));
        }
        if !filled.get("time").is_some_and(Value::is_string) {
            filled.insert(
                "time".into(),
                Value::String(ecs_event::format_time(&d.time)),
            );
        }
        if let Ok(mut ev) = serde_json::from_value::<Event>(Value::Object(filled)) {
            fill_info(&mut ev.info, d.info);
            return ev;
        }
        // Shaped like an event but with wrong types: keep it whole under `data` below.
    }
    let mut message = String::new();
    for key in ["message", "msg"] {
        if let Some(Value::String(_)) = map.get(key) {
            if let Some(Value::String(s)) = map.remove(key) {
                message = s;
            }
            break;
        }
    }
    let level = match map.get("level") {
        Some(Value::String(s)) => s.parse().unwrap_or(d.level),
        _ => d.level,
    };
    Event {
        level,
        time: d.time,
        info: d.info,
        data: map,
        message,
    }
}

fn fill_info(info: &mut Info, from: Info) {
    if info.host.is_empty() {
        info.host = from.host;
    }
    if info.source.is_empty() {
        info.source = from.source;
    }
    if info.id.is_empty() {
        info.id = from.id;
    }
    if info.pid == 0 {
        info.pid = from.pid;
    }
    if info.uid == 0 {
        info.uid = from.uid;
    }
    if info.gid == 0 {
        info.gid = from.gid;
    }
}

fn level_from_priority(p: Option<&[u8]>) -> Level {
    match p {
        Some([d @ b'0'..=b'7']) => Level::from_priority(d - b'0'),
        _ => Level::Info,
    }
}

fn time_from_usec(usec: u64) -> DateTime<Utc> {
    let secs = (usec / 1_000_000) as i64;
    let nanos = ((usec % 1_000_000) * 1000) as u32;
    Utc.timestamp_opt(secs, nanos)
        .single()
        .unwrap_or_else(Utc::now)
}

/// The longest group or stream name CloudWatch accepts.
pub const MAX_NAME_BYTES: usize = 512;

/// A valid CloudWatch log stream name: `:` and `*` become `/`, at most 512 bytes.
pub fn stream_name(raw: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| if c == ':' || c == '*' { '/' } else { c })
        .collect();
    let s = truncate(s, MAX_NAME_BYTES);
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// A valid CloudWatch log group name: `:` and `*` become `/`, other characters outside
/// `[.-_/#A-Za-z0-9]` become `_`, at most 512 bytes, never starting with `aws/` (reserved).
pub fn group_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| match c {
            ':' | '*' => '/',
            c if c.is_ascii_alphanumeric() || ".-_/#".contains(c) => c,
            _ => '_',
        })
        .collect();
    if s.starts_with("aws/") {
        s.insert(0, '_');
    }
    let s = truncate(s, MAX_NAME_BYTES);
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// `raw` if it is a valid log group name already (nearly always: no copy), else
/// [`group_name`] of it.
fn valid_group(raw: String) -> String {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_NAME_BYTES
        && !raw.starts_with("aws/")
        && raw
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'/' | b'#'));
    if ok {
        raw
    } else {
        group_name(&raw)
    }
}

/// `raw` if it is a valid log stream name already (no copy), else [`stream_name`] of it.
fn valid_stream(raw: String) -> String {
    let ok = !raw.is_empty() && raw.len() <= MAX_NAME_BYTES && !raw.contains([':', '*']);
    if ok {
        raw
    } else {
        stream_name(&raw)
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_valid_already_are_kept_and_others_made_valid() {
        for raw in [
            "payments-api",
            "svc/a.b#c_d",
            "aws/x",
            "a:b*c",
            "ünï",
            "",
            "a b",
            &"g".repeat(600),
        ] {
            assert_eq!(
                valid_group(raw.to_string()),
                group_name(raw),
                "group {raw:?}"
            );
            assert_eq!(
                valid_stream(raw.to_string()),
                stream_name(raw),
                "stream {raw:?}"
            );
        }
    }

    fn rules() -> EventRules {
        let mut fields = crate::naming::Fields::default();
        EventRules {
            group: crate::naming::Template::field("CONTAINER_TAG", &mut fields),
            stream: crate::naming::Template::field("CONTAINER_NAME", &mut fields),
            fields,
            routes: Default::default(),
            hostname_override: None,
            hostname_default: "thishost".into(),
        }
    }

    fn entry(msg: &str) -> JournalEntry {
        JournalEntry {
            values: vec![Some(b"api".to_vec()), Some(b"api:1*x".to_vec())],
            message: Some(msg.as_bytes().to_vec()),
            priority: Some(b"3".to_vec()),
            hostname: Some(b"vm1".to_vec()),
            pid: Some(b"42".to_vec()),
            realtime_usec: 1_700_000_000_123_456,
            ..JournalEntry::default()
        }
    }

    #[test]
    fn plain_line() {
        let r = from_journal(&rules(), &mut entry("hello world\n")).unwrap();
        assert_eq!(r.group, "api");
        assert_eq!(r.stream, "api/1/x");
        assert_eq!(r.event.message, "hello world");
        assert_eq!(r.event.level, Level::Error);
        assert_eq!(r.event.info.host, "vm1");
        assert_eq!(r.event.info.pid, 42);
        assert_eq!(
            ecs_event::format_time(&r.event.time),
            "2023-11-14T22:13:20.123456Z"
        );
    }

    #[test]
    fn ecs_event_keeps_fields_and_fills_missing() {
        let line = r#"{"level":"WARN","info":{"host":"app","errors":[{"error":"x"}]},"data":{"k":1},"message":"m"}"#;
        let r = from_journal(&rules(), &mut entry(line)).unwrap();
        assert_eq!(r.event.level, Level::Warn);
        assert_eq!(r.event.info.host, "app");
        assert_eq!(r.event.info.pid, 42);
        assert_eq!(r.event.data["k"], 1);
        assert_eq!(r.event.message, "m");
        assert_eq!(r.event.info.errors.len(), 1);
        assert_eq!(r.event.time, time_from_usec(1_700_000_000_123_456));
    }

    #[test]
    fn other_object_goes_under_data() {
        let r = from_journal(
            &rules(),
            &mut entry(r#"{"msg":"hi","user":7,"level":"debug"}"#),
        )
        .unwrap();
        assert_eq!(r.event.message, "hi");
        assert_eq!(r.event.data["user"], 7);
        assert_eq!(r.event.data["level"], "debug");
        assert_eq!(r.event.level, Level::Debug);
        assert!(!r.event.data.contains_key("msg"));
    }

    #[test]
    fn event_shape_with_bad_types_loses_nothing() {
        let r = from_journal(&rules(), &mut entry(r#"{"level":"LOUD","message":"x"}"#)).unwrap();
        assert_eq!(r.event.message, "x");
        assert_eq!(r.event.data["level"], "LOUD");
        assert_eq!(r.event.level, Level::Error);
    }

    #[test]
    fn not_a_container_line() {
        let mut e = entry("x");
        e.values[0] = None;
        assert!(from_journal(&rules(), &mut e).is_none());
    }

    #[test]
    fn names_are_valid_for_cloudwatch() {
        assert_eq!(stream_name("a:b*c"), "a/b/c");
        assert_eq!(group_name("my app:v1"), "my_app/v1");
        assert_eq!(group_name("aws/x"), "_aws/x");
        let long = "é".repeat(400);
        assert!(stream_name(&long).len() <= 512);
        assert_eq!(stream_name(""), "unknown");
    }
}
