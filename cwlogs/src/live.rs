//! Following with CloudWatch's StartLiveTail: events pushed every second, without spending
//! the FilterLogEvents quota that polling shares with everyone.
//!
//! Live tail samples above 500 events/s per session, and sessions end after 3 hours. Neither
//! may hide an event: a sampled update makes cwlogs say so and switch to polling from the
//! last event seen; an ended session is restarted and the gap read back with one poll. Live
//! events carry no event id, so the follow loop de-duplicates by content (see `Seen`).

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::Result;
use aws_sdk_cloudwatchlogs::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_cloudwatchlogs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatchlogs::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::StartLiveTailResponseStream;
use aws_sdk_cloudwatchlogs::Client;

use crate::event::RawEvent;

/// StartLiveTail takes at most this many groups.
const MAX_GROUPS: usize = 10;

/// What a live tail session follows.
#[derive(Clone)]
pub struct Target {
    /// Group ARN → group name (events name their group by ARN).
    groups: HashMap<String, String>,
    prefix: Option<String>,
    pattern: Option<String>,
}

impl Target {
    /// The session for these groups, or `None` when StartLiveTail cannot express it (more
    /// than 10 groups, a task prefix over several groups, a group without an ARN).
    pub fn new(
        groups: &[crate::groups::Group],
        prefix: Option<&str>,
        pattern: Option<&str>,
    ) -> Option<Target> {
        if groups.is_empty() || groups.len() > MAX_GROUPS || (prefix.is_some() && groups.len() > 1)
        {
            return None;
        }
        let groups = groups
            .iter()
            .map(|g| Some((g.arn.clone()?, g.name.clone())))
            .collect::<Option<HashMap<_, _>>>()?;
        Some(Target {
            groups,
            prefix: prefix.map(str::to_string),
            pattern: pattern.map(str::to_string),
        })
    }
}

/// Why a session could not start.
pub enum Refused {
    /// The credentials may not use StartLiveTail (said once, then polling).
    Denied(String),
    /// Anything else: an endpoint without live tail (an emulator), a transient failure.
    Unavailable,
}

/// A running session.
pub struct Session {
    stream: aws_sdk_cloudwatchlogs::primitives::event_stream::EventReceiver<
        StartLiveTailResponseStream,
        aws_sdk_cloudwatchlogs::types::error::StartLiveTailResponseStreamError,
    >,
}

/// What a session brought.
pub enum Update {
    /// Events (unsampled), in time order.
    Events(Vec<RawEvent>),
    /// CloudWatch sampled this update: its events are not all there.
    Sampled,
    /// The session ended (3 hours, or the stream closed): start another.
    Ended,
}

/// Start a session (one request of the shared budget, taken by the HTTP client).
pub async fn start(client: &Client, t: &Target) -> Result<Session, Refused> {
    let mut req = client
        .start_live_tail()
        .set_log_group_identifiers(Some(t.groups.keys().cloned().collect()))
        .set_log_event_filter_pattern(t.pattern.clone());
    if let Some(p) = &t.prefix {
        req = req.log_stream_name_prefixes(p);
    }
    match req.send().await {
        Ok(out) => Ok(Session {
            stream: out.response_stream,
        }),
        Err(e) => {
            let code = e.code().unwrap_or_default().to_string();
            let msg = e
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| detail(&e));
            if matches!(code.as_str(), "AccessDeniedException" | "AccessDenied") {
                Err(Refused::Denied(msg))
            } else {
                Err(Refused::Unavailable)
            }
        }
    }
}

fn detail(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Session {
    /// Read the session on a task of its own, as fast as CloudWatch sends: a client that
    /// reads slower than the server sends (stdout blocked by a pager, a slow terminal) makes
    /// CloudWatch buffer 10 updates or 5,000 events and then drop the oldest, silently.
    /// Here the backlog waits in memory instead. The receiver ends after `Ended`, `Sampled`
    /// or an error; dropping it ends the reading.
    pub fn spawn_reader(
        mut self,
        t: Target,
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<Result<Update>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let u = self.next(&t).await;
                let last = !matches!(u, Ok(Update::Events(_)));
                if tx.send(u).is_err() || last {
                    return;
                }
            }
        });
        (rx, reader)
    }

    /// The next update worth acting on (empty updates and the session start are skipped).
    pub async fn next(&mut self, t: &Target) -> Result<Update> {
        loop {
            let msg = match self.stream.recv().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(Update::Ended),
                // SessionTimeoutException after 3 hours, or the connection dropped: either
                // way a new session and one poll for the gap carry on without loss.
                Err(SdkError::ServiceError(_)) | Err(SdkError::DispatchFailure(_)) => {
                    return Ok(Update::Ended)
                }
                Err(SdkError::ResponseError(_)) | Err(SdkError::TimeoutError(_)) => {
                    return Ok(Update::Ended)
                }
                Err(e) => return Err(anyhow::anyhow!("live tail failed: {}", detail(&e))),
            };
            let StartLiveTailResponseStream::SessionUpdate(u) = msg else {
                continue;
            };
            if u.session_metadata().is_some_and(|m| m.sampled()) {
                return Ok(Update::Sampled);
            }
            if u.session_results().is_empty() {
                continue;
            }
            let mut events: Vec<RawEvent> = u
                .session_results()
                .iter()
                .map(|e| {
                    let arn = e.log_group_identifier().unwrap_or_default();
                    RawEvent {
                        group: t.groups.get(arn).map(String::as_str).unwrap_or(arn).into(),
                        stream: e.log_stream_name().unwrap_or_default().to_string(),
                        // Live tail events have no id.
                        id: String::new(),
                        timestamp: e.timestamp().unwrap_or(0),
                        ingestion: e.ingestion_time().unwrap_or(0),
                        message: e.message().unwrap_or_default().to_string(),
                    }
                })
                .collect();
            events.sort_by_key(|e| e.timestamp);
            return Ok(Update::Events(events));
        }
    }
}

/// StartLiveTail is sent to `stream-` + the endpoint's host. An `--endpoint-url` that is an
/// IP address or `localhost` (an emulator, a tunnel) cannot take a prefix; there the request
/// goes to the endpoint as given.
#[derive(Debug)]
pub struct PlainHostForLocalEndpoints;

impl Intercept for PlainHostForLocalEndpoints {
    fn name(&self) -> &'static str {
        "PlainHostForLocalEndpoints"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = context.request_mut();
        if let Some(plain) = without_prefix(req.uri()) {
            req.set_uri(plain)?;
        }
        Ok(())
    }
}

/// `http://stream-127.0.0.1:5000/` → `http://127.0.0.1:5000/`; `None` for anything else.
fn without_prefix(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let rest = rest.strip_prefix("stream-")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host == "localhost" || host.parse::<IpAddr>().is_ok()).then(|| format!("{scheme}://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::{without_prefix, Target};
    use crate::groups::Group;

    fn group(name: &str, arn: Option<&str>) -> Group {
        Group {
            name: name.into(),
            creation_time: None,
            arn: arn.map(str::to_string),
        }
    }

    #[test]
    fn live_tail_only_where_start_live_tail_can_say_it() {
        let a = group("a", Some("arn:aws:logs:us-east-1:1:log-group:a"));
        let b = group("b", Some("arn:aws:logs:us-east-1:1:log-group:b"));
        assert!(Target::new(&[a.clone(), b.clone()], None, Some("ERROR")).is_some());
        assert!(Target::new(std::slice::from_ref(&a), Some("task"), None).is_some());
        // Stream prefixes need exactly one group.
        assert!(Target::new(&[a.clone(), b], Some("task"), None).is_none());
        // At most 10 groups, and each by ARN.
        let many: Vec<Group> = (0..11)
            .map(|i| group(&format!("g{i}"), Some(&format!("arn:g{i}"))))
            .collect();
        assert!(Target::new(&many, None, None).is_none());
        assert!(Target::new(&[a, group("c", None)], None, None).is_none());
    }

    #[test]
    fn the_stream_prefix_is_dropped_only_where_it_cannot_resolve() {
        assert_eq!(
            without_prefix("http://stream-127.0.0.1:5000/").as_deref(),
            Some("http://127.0.0.1:5000/")
        );
        assert_eq!(
            without_prefix("http://stream-localhost:80/x?y").as_deref(),
            Some("http://localhost:80/x?y")
        );
        assert_eq!(
            without_prefix("http://stream-[::1]:5000/").as_deref(),
            Some("http://[::1]:5000/")
        );
        assert_eq!(
            without_prefix("https://stream-logs.us-east-1.amazonaws.com/"),
            None
        );
        assert_eq!(without_prefix("http://127.0.0.1:5000/"), None);
    }
}
