//! Writing events as JSON by hand, byte for byte what `serde_json` writes for them.
//!
//! Every shipped line is serialized once per destination, and `serde_json`'s string escaping
//! (a table look-up per byte) was the largest single item of a destination's CPU in `perf`
//! (docs/BENCHMARKS.md). [`write_str`] checks eight bytes at a time for a byte that needs
//! escaping and copies the runs between them whole. Values of free-form maps (`data`,
//! `info`'s extra keys, `errors`) still go through `serde_json`.

use serde_json::{Map, Value};

use crate::{format_time, Event, Info};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes in `x` must be escaped in a JSON string: a control
/// character (below 0x20), `"` or `\`. (Exact as a yes/no: the borrow of the subtraction
/// can only mark bytes above one that matched.)
#[inline]
fn needs_escape(x: u64) -> bool {
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    let q = x ^ (ONES * b'"' as u64);
    let quote = q.wrapping_sub(ONES) & !q;
    let b = x ^ (ONES * b'\\' as u64);
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGHS != 0
}

/// `s` as a JSON string, quoted and escaped exactly as `serde_json` does (`\"`, `\\`, `\b`,
/// `\t`, `\n`, `\f`, `\r`, other control characters as `\u00xx`; everything else as is).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0; // the first byte not written yet
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            if !needs_escape(x) {
                i += 8;
                continue;
            }
        }
        // A chunk with something to escape, or the last few bytes: byte by byte.
        let end = (i + 8).min(bytes.len());
        while i < end {
            let c = bytes[i];
            let escape: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\t' => b"\\t",
                b'\r' => b"\\r",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[start..i]);
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 15) as usize]);
            } else {
                out.extend_from_slice(escape);
            }
            i += 1;
            start = i;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A free-form JSON value, written by `serde_json`.
fn write_value(out: &mut Vec<u8>, v: &Value) {
    serde_json::to_writer(&mut *out, v).expect("a JSON value always serializes");
}

/// `"key":` after a comma if `first` is false.
fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    write_str(out, k);
    out.push(b':');
}

/// A JSON object of a map, in the map's order.
pub fn write_map(out: &mut Vec<u8>, m: &Map<String, Value>) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in m {
        key(out, &mut first, k);
        write_value(out, v);
    }
    out.push(b'}');
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(n).as_bytes());
}

impl Info {
    /// As `serde_json` writes it: empty fields left out, extra keys after the known ones.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (k, v) in [
            ("host", &self.host),
            ("source", &self.source),
            ("id", &self.id),
        ] {
            if !v.is_empty() {
                key(out, &mut first, k);
                write_str(out, v);
            }
        }
        for (k, v) in [("pid", self.pid), ("uid", self.uid), ("gid", self.gid)] {
            if v != 0 {
                key(out, &mut first, k);
                write_int(out, v);
            }
        }
        if !self.errors.is_empty() {
            key(out, &mut first, "errors");
            out.push(b'[');
            for (n, e) in self.errors.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_value(out, e);
            }
            out.push(b']');
        }
        for (k, v) in &self.extra {
            key(out, &mut first, k);
            write_value(out, v);
        }
        out.push(b'}');
    }
}

impl Event {
    /// Append the event's JSON to `out`, byte for byte what `serde_json::to_writer` writes.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(self.message.len() + 160);
        out.extend_from_slice(b"{\"level\":");
        write_str(out, self.level.as_str());
        out.extend_from_slice(b",\"time\":");
        write_str(out, &format_time(&self.time));
        out.extend_from_slice(b",\"info\":");
        self.info.write_json(out);
        out.extend_from_slice(b",\"data\":");
        write_map(out, &self.data);
        out.extend_from_slice(b",\"message\":");
        write_str(out, &self.message);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Level;
    use chrono::Utc;

    fn serde_str(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain ascii text, longer than eight bytes".into(),
            "quote \" backslash \\ slash / del \u{7f}".into(),
            "ünïcødé ✓ 😀 and \u{2028} line separator".into(),
            "tab\tnew\nret\rback\u{8}feed\u{c}nul\u{0}esc\u{1b}us\u{1f}".into(),
            "\"".into(),
            "1234567\"".into(),
            "12345678\"".into(),
            "123456789\\".into(),
        ];
        // Every byte below 0x80 at every position of a 17-byte string.
        for c in 0u8..0x80 {
            for pos in 0..17 {
                let mut s = vec![b'a'; 17];
                s[pos] = c;
                cases.push(String::from_utf8(s).unwrap());
            }
        }
        for s in &cases {
            assert_eq!(ours(s), serde_str(s), "for {s:?}");
        }
    }

    #[test]
    fn events_are_written_as_serde_json_writes_them() {
        let mut e = Event::new(Level::Warn, Utc::now(), "a \"quoted\"\nmessage ✓");
        let plain = e.clone();
        e.info.host = "host-1".into();
        e.info.id = "0123456789ab".into();
        e.info.pid = 42;
        e.info.gid = -1;
        e.info.errors = vec![serde_json::json!({"type": "x", "error": "boom\t"})];
        e.info
            .extra
            .insert("custom\u{1}".into(), serde_json::json!([1, "two"]));
        e.data
            .insert("a".into(), serde_json::json!({"b": 1.5, "c": null}));
        e.data.insert("k\"".into(), serde_json::json!("v\\"));
        for ev in [plain, e] {
            let mut out = Vec::new();
            ev.write_json(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&ev).unwrap()
            );
        }
    }
}
