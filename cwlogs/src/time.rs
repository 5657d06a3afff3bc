//! `--since` / `--until` values: every form the old Go `cwlogs` accepted, and a few more.
//!
//! All results are milliseconds since the Unix epoch, the unit CloudWatch Logs speaks.

use anyhow::{bail, Result};
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};

/// What a bad value's error lists, so the operator can fix it without reading docs.
pub const ACCEPTED: &str = "accepted forms: a relative duration (42m, 1h30m, 2d, 1w, -1h), \
`now`, `all`, `today`, `yesterday` (local midnight), a date (2017-05-21), a local time (2017-05-21T15:00 or 2017-05-21T15:00:00), \
RFC 3339 with a zone (2017-05-21T15:00:00Z, 2017-05-21T15:00:00+02:00) or Unix seconds (1495378800)";

/// Parse a time relative to `now_ms` (durations count back from it).
pub fn parse(value: &str, now_ms: i64) -> Result<i64> {
    let v = value.trim();
    match parse_inner(v, now_ms) {
        Some(t) => Ok(t),
        None => bail!(crate::cli::ConfigError(format!(
            "invalid time {value:?}: {ACCEPTED}"
        ))),
    }
}

fn parse_inner(v: &str, now_ms: i64) -> Option<i64> {
    match v {
        "" => return None,
        "now" => return Some(now_ms),
        "all" => return Some(0),
        "today" | "yesterday" => {
            let today = Local.timestamp_millis_opt(now_ms).single()?.date_naive();
            let day = if v == "today" {
                today
            } else {
                today.pred_opt()?
            };
            return local_ms(day.and_hms_opt(0, 0, 0)?);
        }
        _ => {}
    }
    // `-1h`: the sign other tools write for "ago"; a duration already counts back.
    let v = match v.strip_prefix('-') {
        Some(d)
            if d.as_bytes().first().is_some_and(u8::is_ascii_digit) && !d.contains(['-', ':']) =>
        {
            let d = humantime::parse_duration(d).ok()?;
            return Some(now_ms.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64));
        }
        _ => v,
    };
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Unix seconds. (A bare number is never a duration: durations need a unit.)
        return v.parse::<i64>().ok()?.checked_mul(1000);
    }
    if v.as_bytes()[0].is_ascii_digit() && !v.contains('-') && !v.contains(':') {
        let d = humantime::parse_duration(v).ok()?;
        return Some(now_ms.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.timestamp_millis());
    }
    // RFC 3339 without seconds but with a zone: 2017-05-21T15:00Z / +02:00.
    for fmt in [
        "%Y-%m-%dT%H:%M%#z",
        "%Y-%m-%d %H:%M%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(&v.replace('Z', "+00:00"), fmt) {
            return Some(t.timestamp_millis());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(v, fmt) {
            return local_ms(naive);
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return local_ms(d.and_hms_opt(0, 0, 0)?);
    }
    None
}

/// A wall-clock time in the local zone. In a DST gap there is no such time: the
/// value is rejected rather than silently shifted.
fn local_ms(naive: NaiveDateTime) -> Option<i64> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A millisecond timestamp as local `YYYY-MM-DD HH:MM:SS`, for messages and tables.
pub fn local_display(ms: i64) -> String {
    match Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Local
            .with_ymd_and_hms(y, mo, d, h, mi, s)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn relative_durations_count_back_from_now() {
        assert_eq!(parse("42m", NOW).unwrap(), NOW - 42 * 60_000);
        assert_eq!(parse("1h30m", NOW).unwrap(), NOW - 90 * 60_000);
        assert_eq!(parse("2d", NOW).unwrap(), NOW - 2 * 86_400_000);
        assert_eq!(parse("90s", NOW).unwrap(), NOW - 90_000);
        assert_eq!(parse("1h 5m", NOW).unwrap(), NOW - 65 * 60_000);
    }

    #[test]
    fn keywords() {
        assert_eq!(parse("now", NOW).unwrap(), NOW);
        assert_eq!(parse("all", NOW).unwrap(), 0);
    }

    #[test]
    fn dates_and_local_times_use_the_local_zone() {
        assert_eq!(
            parse("2017-05-21", NOW).unwrap(),
            local(2017, 5, 21, 0, 0, 0)
        );
        assert_eq!(
            parse("2017-05-21T15:00", NOW).unwrap(),
            local(2017, 5, 21, 15, 0, 0)
        );
        assert_eq!(
            parse("2017-05-21T15:00:07", NOW).unwrap(),
            local(2017, 5, 21, 15, 0, 7)
        );
        assert_eq!(
            parse("2017-05-21T15:00:07.250", NOW).unwrap(),
            local(2017, 5, 21, 15, 0, 7) + 250
        );
    }

    #[test]
    fn rfc3339_with_zone() {
        assert_eq!(
            parse("2017-05-21T15:00:00Z", NOW).unwrap(),
            1_495_378_800_000
        );
        assert_eq!(
            parse("2017-05-21T17:00:00+02:00", NOW).unwrap(),
            1_495_378_800_000
        );
        assert_eq!(
            parse("2017-05-21T15:00:00.5Z", NOW).unwrap(),
            1_495_378_800_500
        );
        assert_eq!(parse("2017-05-21T15:00Z", NOW).unwrap(), 1_495_378_800_000);
    }

    #[test]
    fn today_yesterday_and_minus_durations() {
        let today = Local
            .timestamp_millis_opt(NOW)
            .unwrap()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let midnight = local_ms(today).unwrap();
        assert_eq!(parse("today", NOW).unwrap(), midnight);
        let y = local_ms(today - chrono::Days::new(1)).unwrap();
        assert_eq!(parse("yesterday", NOW).unwrap(), y);
        assert_eq!(parse("-1h", NOW).unwrap(), NOW - 3_600_000);
        assert_eq!(parse("-5m", NOW).unwrap(), NOW - 300_000);
    }

    #[test]
    fn unix_seconds() {
        assert_eq!(parse("1495378800", NOW).unwrap(), 1_495_378_800_000);
    }

    #[test]
    fn bad_values_list_the_accepted_forms() {
        for bad in ["", "tomorrow", "42", "42x", "2017-13-01", "15:00", "-5"] {
            if bad == "42" {
                // A bare number is Unix seconds, which is valid.
                assert_eq!(parse(bad, NOW).unwrap(), 42_000);
                continue;
            }
            let err = parse(bad, NOW).unwrap_err().to_string();
            assert!(err.contains("accepted forms"), "{bad}: {err}");
            assert!(err.contains("1h30m") && err.contains("RFC 3339"), "{err}");
        }
    }
}
