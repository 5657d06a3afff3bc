//! Request building: a batch of records becomes PutLogEvents requests, per log stream, that
//! each obey the service limits (protocols.md §5.1): Σ(message bytes + 26) ≤ 1,048,576,
//! at most 10,000 events, all within 24 hours, in time order (stable: equal times keep
//! journal order). Breaking any of these fails the whole call, so they are enforced here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ecs_event::Event;
use serde_json::{json, Map};

use crate::sinks::Record;

pub const MAX_REQUEST_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD: usize = 26;
pub const MAX_EVENTS: usize = 10_000;
/// Events in one request must span less than 24 hours.
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// The largest message one event may carry.
pub const MAX_MESSAGE_BYTES: usize = MAX_REQUEST_BYTES - EVENT_OVERHEAD;

/// One log event as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub timestamp_ms: i64,
    pub message: String,
}

/// The requests for one log stream, to be sent in order.
#[derive(Debug)]
pub struct StreamRequests {
    pub group: String,
    pub stream: String,
    pub requests: Vec<Vec<LogEvent>>,
}

/// Split a batch into per-stream requests (streams in order of first appearance).
pub fn build(batch: Vec<std::sync::Arc<Record>>) -> Vec<StreamRequests> {
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut streams: Vec<(String, String, Vec<LogEvent>)> = Vec::new();
    for r in batch {
        let ev = LogEvent {
            timestamp_ms: r.event.time.timestamp_millis().max(0),
            message: message(&r.event),
        };
        let key = (r.group.clone(), r.stream.clone());
        let i = match index.get(&key) {
            Some(&i) => i,
            None => {
                streams.push((key.0.clone(), key.1.clone(), Vec::new()));
                index.insert(key, streams.len() - 1);
                streams.len() - 1
            }
        };
        streams[i].2.push(ev);
    }
    streams
        .into_iter()
        .map(|(group, stream, mut events)| {
            events.sort_by_key(|e| e.timestamp_ms);
            StreamRequests {
                group,
                stream,
                requests: split(events),
            }
        })
        .collect()
}

fn split(events: Vec<LogEvent>) -> Vec<Vec<LogEvent>> {
    let mut out = Vec::new();
    let mut cur: Vec<LogEvent> = Vec::new();
    let mut bytes = 0;
    for e in events {
        let size = e.message.len() + EVENT_OVERHEAD;
        let too_long = cur
            .first()
            .is_some_and(|f| e.timestamp_ms - f.timestamp_ms >= MAX_SPAN_MS);
        if !cur.is_empty()
            && (cur.len() >= MAX_EVENTS || bytes + size > MAX_REQUEST_BYTES || too_long)
        {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The event as JSON, cut to fit one CloudWatch event with a visible marker if it is too big.
pub fn message(event: &Event) -> String {
    let json = event.to_json();
    if json.len() <= MAX_MESSAGE_BYTES {
        return json;
    }
    let original = json.len();
    let mut keep = event.message.len().min(MAX_MESSAGE_BYTES / 2);
    loop {
        let mut cut = event.clone();
        let mut end = keep.min(cut.message.len());
        while !cut.message.is_char_boundary(end) {
            end -= 1;
        }
        cut.message.truncate(end);
        cut.message.push_str(" [truncated by journal-fanout]");
        let mut marker = Map::new();
        marker.insert(
            "journal_fanout_truncated".into(),
            json!({ "original_bytes": original }),
        );
        cut.data = marker;
        let out = cut.to_json();
        if out.len() <= MAX_MESSAGE_BYTES || keep == 0 {
            return out;
        }
        keep /= 2;
    }
}

/// Timestamps of the first and last event (for reports).
pub fn span(events: &[LogEvent]) -> (DateTime<Utc>, DateTime<Utc>) {
    let t = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    (
        t(events.first().map_or(0, |e| e.timestamp_ms)),
        t(events.last().map_or(0, |e| e.timestamp_ms)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ecs_event::Level;

    fn rec(stream: &str, ms: i64, msg: &str) -> std::sync::Arc<Record> {
        std::sync::Arc::new(Record {
            group: "g".into(),
            stream: stream.into(),
            event: Event::new(Level::Info, Utc.timestamp_millis_opt(ms).unwrap(), msg),
        })
    }

    fn check(reqs: &[Vec<LogEvent>]) {
        for r in reqs {
            assert!(!r.is_empty() && r.len() <= MAX_EVENTS);
            let bytes: usize = r.iter().map(|e| e.message.len() + EVENT_OVERHEAD).sum();
            assert!(bytes <= MAX_REQUEST_BYTES);
            assert!(r.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
            assert!(r.last().unwrap().timestamp_ms - r[0].timestamp_ms < MAX_SPAN_MS);
        }
    }

    #[test]
    fn sorts_stably_and_groups_by_stream() {
        let out = build(vec![
            rec("a", 5, "a1"),
            rec("b", 1, "b1"),
            rec("a", 3, "a2"),
            rec("a", 3, "a3"),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].stream, "a");
        let msgs: Vec<Event> = out[0].requests[0]
            .iter()
            .map(|e| serde_json::from_str(&e.message).unwrap())
            .collect();
        let m: Vec<_> = msgs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(m, ["a2", "a3", "a1"]);
    }

    #[test]
    fn splits_on_count_bytes_and_span() {
        let t0 = 1_700_000_000_000;
        let many: Vec<_> = (0..25_000).map(|i| rec("a", t0 + i, "x")).collect();
        let out = build(many);
        check(&out[0].requests);
        assert_eq!(out[0].requests.len(), 3);

        let big = "y".repeat(300_000);
        let out = build((0..10).map(|i| rec("a", t0 + i, &big)).collect());
        check(&out[0].requests);
        assert!(out[0].requests.len() >= 4);

        let out = build(vec![
            rec("a", t0, "1"),
            rec("a", t0 + MAX_SPAN_MS - 1, "2"),
            rec("a", t0 + MAX_SPAN_MS, "3"),
        ]);
        check(&out[0].requests);
        assert_eq!(out[0].requests.len(), 2);
    }

    #[test]
    fn oversized_event_is_cut_with_marker() {
        let huge = "z".repeat(MAX_MESSAGE_BYTES + 10);
        let m = message(&Event::new(Level::Info, Utc::now(), huge));
        assert!(m.len() <= MAX_MESSAGE_BYTES);
        let e: Event = serde_json::from_str(&m).unwrap();
        assert!(e.message.ends_with("[truncated by journal-fanout]"));
        assert!(e.data.contains_key("journal_fanout_truncated"));
    }
}
