//! Events larger than a destination accepts are shortened with a visible marker, never dropped.

use ecs_event::Event;

/// Appended where text was cut; says how much went missing.
fn marker(dropped: usize) -> String {
    format!("…[journal-fanout: truncated {dropped} bytes]")
}

/// `text` cut to at most `limit` bytes (on a character boundary), marker included.
pub fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut keep = limit.saturating_sub(marker(text.len()).len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut out = String::with_capacity(limit);
    out.push_str(&text[..keep]);
    out.push_str(&marker(text.len() - keep));
    out
}

/// The event as compact JSON (no raw newlines: JSON escapes them) in at most `limit` bytes.
/// The message is shortened first so the result stays valid JSON; if the bulk is elsewhere
/// (huge `data`), the JSON text itself is cut.
pub fn event_json(event: &Event, limit: usize) -> String {
    let json = event.to_json();
    if json.len() <= limit {
        return json;
    }
    // Shorten the message (so the result stays JSON); escaping makes serialized and raw
    // lengths differ, so estimate proportionally and check.
    let room = 64;
    let mut e = event.clone();
    let mut current = json.len();
    for _ in 0..4 {
        let over = current - limit;
        let ser = serde_json::to_string(&e.message).map_or(0, |s| s.len());
        if ser <= over + room {
            break;
        }
        let keep = e.message.len() * (ser - over - room) / ser;
        e.message = cut(&event.message, keep);
        let shorter = e.to_json();
        if shorter.len() <= limit {
            return shorter;
        }
        current = shorter.len();
    }
    cut(&json, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ecs_event::Level;

    #[test]
    fn cut_keeps_limit_and_marks() {
        let s = "é".repeat(1000);
        let c = cut(&s, 100);
        assert!(c.len() <= 100 && c.contains("truncated"), "{c}");
        assert_eq!(cut("short", 100), "short");
    }

    #[test]
    fn big_message_stays_json() {
        let e = Event::new(Level::Info, Utc::now(), "x\n".repeat(10_000));
        let j = event_json(&e, 5_000);
        assert!(j.len() <= 5_000);
        let back: Event = serde_json::from_str(&j).unwrap();
        assert!(back.message.contains("journal-fanout: truncated"));
        assert!(!j.contains('\n'));
    }
}
