//! Log streams (tasks, containers) of a group with activity in a time window.
//!
//! DescribeLogStreams' `lastEventTimestamp` is eventually consistent (it can lag about an
//! hour), so it only decides the clear cases. A stream whose activity it cannot settle —
//! last event reported just before the window, or after the window's end — is checked
//! with a one-event FilterLogEvents over the window.

use anyhow::{bail, Result};
use aws_sdk_cloudwatchlogs::types::OrderBy;
use aws_sdk_cloudwatchlogs::Client;
use futures::{stream, StreamExt, TryStreamExt};

use crate::client::send;
use crate::time::local_display;

/// How far `lastEventTimestamp` may trail the real last event.
const LAST_EVENT_LAG_MS: i64 = 3_600_000;
/// Concurrent activity checks.
const CHECKS_IN_FLIGHT: usize = 8;

#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    pub creation_time: i64,
    pub first_event: Option<i64>,
    pub last_event: Option<i64>,
}

/// Inclusive window in ms.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

enum Activity {
    Yes,
    No,
    Unsure,
}

fn activity(s: &Stream, w: Window) -> Activity {
    let earliest = s.first_event.unwrap_or(s.creation_time);
    if earliest > w.end {
        return Activity::No;
    }
    match s.last_event {
        Some(last) if last >= w.start && last <= w.end => Activity::Yes,
        _ if s.first_event.is_some_and(|f| f >= w.start && f <= w.end) => Activity::Yes,
        Some(last) if last < w.start - LAST_EVENT_LAG_MS => Activity::No,
        None if s.creation_time < w.start - LAST_EVENT_LAG_MS => Activity::No,
        _ => Activity::Unsure,
    }
}

/// Streams of `group` (starting with `prefix`, if given) with events in `w`, most recently
/// active first, at most `max`. With a prefix that matches nothing at all, or nothing in
/// the window, the error says so and what to do.
pub async fn active(
    client: &Client,
    group: &str,
    prefix: Option<&str>,
    w: Window,
    max: usize,
) -> Result<Vec<Stream>> {
    let (found, matched_any) = candidates(client, group, prefix, w, max, true).await?;
    if found.is_empty() {
        return Err(nothing_active(client, group, prefix, w, matched_any).await);
    }
    Ok(found)
}

/// Like [`active`], for follow mode's periodic re-selection: never an error when empty,
/// and streams it cannot settle are kept (querying a quiet stream costs nothing).
pub async fn maybe_active(
    client: &Client,
    group: &str,
    prefix: Option<&str>,
    w: Window,
    max: usize,
) -> Result<(Vec<Stream>, bool)> {
    candidates(client, group, prefix, w, max, false).await
}

async fn candidates(
    client: &Client,
    group: &str,
    prefix: Option<&str>,
    w: Window,
    max: usize,
    check_unsure: bool,
) -> Result<(Vec<Stream>, bool)> {
    let mut sure = Vec::new();
    let mut unsure = Vec::new();
    let mut matched_any = false;
    let mut token: Option<String> = None;
    'pages: loop {
        let mut req = client
            .describe_log_streams()
            .log_group_name(group)
            .set_next_token(token.take())
            .limit(50);
        // The API refuses a prefix together with LastEventTime order.
        req = match prefix {
            Some(p) => req.log_stream_name_prefix(p),
            None => req.order_by(OrderBy::LastEventTime).descending(true),
        };
        let out = send(
            &format!("listing the streams of log group {group:?}"),
            || req.clone().send(),
        )
        .await?;
        for s in out.log_streams() {
            matched_any = true;
            let s = Stream {
                name: s.log_stream_name().unwrap_or_default().to_string(),
                creation_time: s.creation_time().unwrap_or(0),
                first_event: s.first_event_timestamp(),
                last_event: s.last_event_timestamp(),
            };
            if prefix.is_none() && s.last_event.unwrap_or(0) < w.start - LAST_EVENT_LAG_MS {
                // Ordered by last event: everything after this is older still.
                break 'pages;
            }
            match activity(&s, w) {
                Activity::Yes => sure.push(s),
                Activity::Unsure => unsure.push(s),
                Activity::No => {}
            }
            if prefix.is_none() && sure.len() >= max {
                break 'pages;
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    if !check_unsure {
        sure.append(&mut unsure);
    }
    let checked: Vec<Option<Stream>> = stream::iter(unsure)
        .map(|s| async move {
            let has = has_events(client, group, &s.name, w).await?;
            Ok::<_, anyhow::Error>(has.then_some(s))
        })
        .buffer_unordered(CHECKS_IN_FLIGHT)
        .try_collect()
        .await?;
    sure.extend(checked.into_iter().flatten());
    sure.sort_by(|a, b| {
        b.last_event
            .unwrap_or(0)
            .cmp(&a.last_event.unwrap_or(0))
            .then_with(|| a.name.cmp(&b.name))
    });
    sure.truncate(max);
    Ok((sure, matched_any))
}

/// Why nothing is active, in words: a bad prefix (with the most recently active
/// streams), or a window to widen.
pub async fn nothing_active(
    client: &Client,
    group: &str,
    prefix: Option<&str>,
    w: Window,
    matched_any: bool,
) -> anyhow::Error {
    match explain_empty(client, group, prefix, w, matched_any).await {
        Ok(()) => anyhow::anyhow!("no active streams in log group {group:?}"),
        Err(e) => e,
    }
}

async fn explain_empty(
    client: &Client,
    group: &str,
    prefix: Option<&str>,
    w: Window,
    matched_any: bool,
) -> Result<()> {
    {
        let window = format!(
            "between {} and {}",
            local_display(w.start),
            local_display(w.end)
        );
        match prefix {
            Some(p) if !matched_any => {
                let recent = most_recent(client, group, 5).await?;
                let list: String = recent
                    .iter()
                    .map(|s| {
                        format!(
                            "\n  {}  (last event {})",
                            s.name,
                            s.last_event
                                .map(local_display)
                                .unwrap_or_else(|| "-".into())
                        )
                    })
                    .collect();
                if recent.is_empty() {
                    bail!("no stream of log group {group:?} starts with {p:?}; the group has no streams yet");
                }
                bail!(
                    "no stream of log group {group:?} starts with {p:?}. \
                     The most recently active streams are:{list}"
                );
            }
            Some(p) => bail!(
                "streams of log group {group:?} start with {p:?}, but none has events {window}; \
                 widen the window, e.g. --since 24h (or --since all)"
            ),
            None => bail!(
                "no stream of log group {group:?} has events {window}; \
                 widen the window, e.g. --since 24h (or --since all)"
            ),
        }
    }
}

/// The `n` most recently active streams, for "did you mean" on a bad --task.
async fn most_recent(client: &Client, group: &str, n: i32) -> Result<Vec<Stream>> {
    let req = client
        .describe_log_streams()
        .log_group_name(group)
        .order_by(OrderBy::LastEventTime)
        .descending(true)
        .limit(n);
    let out = send(
        &format!("listing the streams of log group {group:?}"),
        || req.clone().send(),
    )
    .await?;
    Ok(out
        .log_streams()
        .iter()
        .map(|s| Stream {
            name: s.log_stream_name().unwrap_or_default().to_string(),
            creation_time: s.creation_time().unwrap_or(0),
            first_event: s.first_event_timestamp(),
            last_event: s.last_event_timestamp(),
        })
        .collect())
}

/// Whether `stream` has at least one event in `w` (pages may be empty yet carry a token).
async fn has_events(client: &Client, group: &str, stream: &str, w: Window) -> Result<bool> {
    let mut token: Option<String> = None;
    loop {
        let req = client
            .filter_log_events()
            .log_group_name(group)
            .log_stream_names(stream)
            .start_time(w.start)
            .end_time(w.end)
            .limit(1)
            .set_next_token(token.take());
        let out = send(
            &format!("checking stream {stream:?} of log group {group:?} for events"),
            || req.clone().send(),
        )
        .await?;
        if !out.events().is_empty() {
            return Ok(true);
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(false),
        }
    }
}
