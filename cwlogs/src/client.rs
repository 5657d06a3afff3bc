//! The CloudWatch Logs client, and errors an operator can act on.
//!
//! Built only once a command needs it, so `--help` and usage errors never load the AWS
//! configuration.

use std::error::Error as StdError;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::Client;

use crate::cli::AwsArgs;

/// Throttling is retried by the SDK's standard mode with backoff; a few more attempts
/// than its default 3 ride out a busy account during parallel fetches, and the capped
/// backoff keeps an unreachable endpoint from hanging a terminal for minutes.
const MAX_ATTEMPTS: u32 = 6;
const MAX_BACKOFF: Duration = Duration::from_secs(4);

pub async fn connect(args: &AwsArgs) -> Result<Client> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(
        RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_max_backoff(MAX_BACKOFF),
    );
    if let Some(r) = &args.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &args.profile {
        loader = loader.profile_name(p);
    }
    if let Some(e) = &args.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        bail!(crate::cli::ConfigError(
            "no AWS region is configured: pass --region (e.g. --region us-east-1), set AWS_REGION, \
             or set `region` in the profile in ~/.aws/config"
                .into()
        ));
    }
    Ok(Client::new(&conf))
}

/// An SDK error in words that say what to do. `what` names the call and its input.
pub fn explain<E, R>(what: &str, err: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = chain(&err);
    let code = err.code().unwrap_or_default().to_string();
    match code.as_str() {
        "AccessDeniedException" | "AccessDenied" => anyhow!(
            "access denied while {what}: the credentials in use lack permission for it \
             (they need logs:DescribeLogGroups, logs:DescribeLogStreams and logs:FilterLogEvents); \
             check --profile / AWS_PROFILE or ask for read access to CloudWatch Logs.\n  ({})",
            err.message().unwrap_or(&code)
        ),
        "UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException"
        | "InvalidClientTokenId" => anyhow!(
            "AWS rejected the credentials while {what} ({code}): they are unknown, wrong or expired; \
             refresh them (e.g. `aws sso login`, or re-run under aws-vault) and try again"
        ),
        "ThrottlingException" => anyhow!(
            "CloudWatch Logs kept throttling while {what}, even after {MAX_ATTEMPTS} attempts; \
             retry in a moment, narrow --since/--until, or lower --parallel"
        ),
        _ if is_credentials_missing(&detail) => anyhow!(
            "no AWS credentials found while {what}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
             pass --profile NAME (or set AWS_PROFILE), or run under aws-vault / `aws sso login`"
        ),
        _ if matches!(err, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => anyhow!(
            "could not reach CloudWatch Logs while {what}: {detail}\n  \
             check the network, --region, and --endpoint-url / AWS_ENDPOINT_URL"
        ),
        _ => anyhow!("failed while {what}: {detail}"),
    }
}

/// An error and its causes, `: `-separated, without repeats.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

fn is_credentials_missing(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("no credentials")
        || d.contains("credentialsnotloaded")
        || d.contains("credentials provider")
}
