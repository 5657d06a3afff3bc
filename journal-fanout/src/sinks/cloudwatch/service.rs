//! The service calls: PutLogEvents, and creating the group and stream when the service says
//! they are missing (an existing one is not an error). Failures are classified for the retry
//! policy: throttling, 5xx, timeouts and network errors are retried; credentials refused are
//! retried too (they can be fixed without losing anything); a request the service calls
//! invalid is refused for good.

use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_cloudwatchlogs::Client;

use super::request::LogEvent;

/// Why a call did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Transient (throttling, server error, network): try again later.
    Retry(String),
    /// The group or stream does not exist: create them, then try again.
    Missing,
    /// Refused for good (the service says the request is invalid).
    Refused(String),
    /// The request could not even be built: a bug or bad configuration.
    Fatal(String),
}

/// Events the service accepted the call for but did not store (protocols.md §5.1).
#[derive(Debug, Default, PartialEq)]
pub struct RejectedRanges {
    /// Events `[0, n)` were too old or expired.
    pub too_old_end: usize,
    /// Events `[n, len)` were too far in the future.
    pub too_new_start: Option<usize>,
}

pub async fn put(
    client: &Client,
    group: &str,
    stream: &str,
    events: &[LogEvent],
) -> Result<RejectedRanges, Failure> {
    let input: Vec<InputLogEvent> = events
        .iter()
        .map(|e| {
            InputLogEvent::builder()
                .timestamp(e.timestamp_ms)
                .message(e.message.clone())
                .build()
                .map_err(|err| Failure::Fatal(err.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let out = client
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .set_log_events(Some(input))
        .send()
        .await
        .map_err(|err| match &err {
            SdkError::ServiceError(se) => match se.err() {
                PutLogEventsError::ResourceNotFoundException(_) => Failure::Missing,
                PutLogEventsError::InvalidParameterException(e) => Failure::Refused(format!(
                    "CloudWatch refused the request as invalid: {}",
                    e.message().unwrap_or("InvalidParameterException")
                )),
                _ => classify(&err),
            },
            _ => classify(&err),
        })?;
    let n = events.len();
    let clamp = |i: i32| (i.max(0) as usize).min(n);
    let info = out.rejected_log_events_info();
    let too_old = info
        .and_then(|i| i.too_old_log_event_end_index())
        .map(clamp)
        .unwrap_or(0);
    let expired = info
        .and_then(|i| i.expired_log_event_end_index())
        .map(clamp)
        .unwrap_or(0);
    Ok(RejectedRanges {
        too_old_end: too_old.max(expired),
        too_new_start: info
            .and_then(|i| i.too_new_log_event_start_index())
            .map(clamp)
            .filter(|&i| i < n),
    })
}

/// Create the group (with retention, if configured) and the stream; existing ones are fine.
pub async fn ensure(
    client: &Client,
    group: &str,
    stream: &str,
    retention_days: Option<i32>,
) -> Result<(), Failure> {
    match client.create_log_group().log_group_name(group).send().await {
        Ok(_) => {
            tracing::info!(group, "created CloudWatch log group");
            if let Some(days) = retention_days {
                if let Err(e) = client
                    .put_retention_policy()
                    .log_group_name(group)
                    .retention_in_days(days)
                    .send()
                    .await
                {
                    tracing::error!(
                        group, days, error = %DisplayErrorContext(&e),
                        "cannot set the retention of a new log group; it keeps its events forever"
                    );
                }
            }
        }
        Err(e) if already_exists(&e) => {}
        Err(e) => return Err(classify(&e)),
    }
    match client
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if already_exists(&e) => Ok(()),
        // The group vanished between the two calls: start over.
        Err(e) if e.code() == Some("ResourceNotFoundException") => Err(Failure::Missing),
        Err(e) => Err(classify(&e)),
    }
}

fn already_exists<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ResourceAlreadyExistsException")
}

/// Codes that mean "credentials or permissions": fixable by the operator, so retried.
const AUTH_CODES: [&str; 8] = [
    "UnrecognizedClientException",
    "AccessDeniedException",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
];

fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = DisplayErrorContext(err).to_string();
    match err {
        SdkError::ConstructionFailure(_) => Failure::Fatal(text),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Retry(text)
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            let status = Some(se.raw().status().as_u16());
            if code.contains("Throttl")
                || code == "ServiceUnavailableException"
                || code == "OperationAbortedException"
                || code == "LimitExceededException"
                || status == Some(429)
                || status.is_some_and(|s| s >= 500)
                || AUTH_CODES.contains(&code)
            {
                Failure::Retry(text)
            } else {
                Failure::Refused(format!("CloudWatch refused the request: {text}"))
            }
        }
        _ => Failure::Retry(text),
    }
}
