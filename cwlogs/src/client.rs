//! The CloudWatch Logs client, and errors an operator can act on.
//!
//! Built only once a command needs it, so `--help` and usage errors never load the AWS
//! configuration.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::Client;

use crate::cli::AwsArgs;

/// Transient failures (connection refused or reset, timeouts, 5xx) are retried this many
/// attempts in all, with capped backoff, so an unreachable endpoint never hangs a terminal
/// for minutes.
const MAX_ATTEMPTS: u32 = 6;
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// Throttling is a spell to outlast, not a failure: the account's quota is shared, and a
/// busy moment passes within seconds to a minute.
const THROTTLE_PATIENCE: Duration = Duration::from_secs(120);
const THROTTLE_MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Throttling shorter than this passes without a word.
const THROTTLE_NOTE_AFTER: Duration = Duration::from_secs(2);

/// [`THROTTLE_PATIENCE`], or CWLOGS_THROTTLE_PATIENCE (undocumented: for tests).
fn patience() -> Duration {
    static P: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *P.get_or_init(|| {
        std::env::var("CWLOGS_THROTTLE_PATIENCE")
            .ok()
            .and_then(|v| humantime::parse_duration(&v).ok())
            .unwrap_or(THROTTLE_PATIENCE)
    })
}

/// The AWS configuration every client of a command shares.
pub async fn load(args: &AwsArgs) -> Result<aws_config::SdkConfig> {
    // Retries are ours ([`send`]): each attempt must take its slot from the shared budget,
    // and throttling needs far more patience than the SDK's few attempts.
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::disabled());
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
        return Err(daemon_kit::config_error(
            "no AWS region is configured: pass --region (e.g. --region us-east-1), set AWS_REGION, \
             or set `region` in the profile in ~/.aws/config",
        ));
    }
    Ok(conf)
}

pub async fn connect(args: &AwsArgs) -> Result<Client> {
    Ok(logs(&load(args).await?))
}

/// The CloudWatch Logs client for `conf`.
pub fn logs(conf: &aws_config::SdkConfig) -> Client {
    let mut b = aws_sdk_cloudwatchlogs::config::Builder::from(conf)
        .interceptor(crate::live::PlainHostForLocalEndpoints);
    let http = conf.http_client().unwrap_or_else(default_https_client);
    b = b.http_client(crate::budget::http_client(http));
    Client::from_conf(b.build())
}

/// The SDK's own default HTTPS client (hyper 1, rustls with aws-lc, HTTP(S)_PROXY from the
/// environment), made here because the SDK builds it out of reach when none is given, and
/// the budget needs to wrap it.
fn default_https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        conn.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            conn.set_sleep_impl(c.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

/// Send one CloudWatch Logs request built by `call`, within the shared budget: transient
/// failures are retried a few times, throttling for up to [`THROTTLE_PATIENCE`] (saying
/// once on stderr that cwlogs is waiting). Errors come back explained, `what` naming the
/// call and its input.
pub async fn send<T, E, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let mut failures = 0u32;
    let mut throttles = 0u32;
    let mut throttled_since: Option<Instant> = None;
    loop {
        // The budget is taken by the HTTP client (see `logs`), per attempt.
        let err = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if is_throttling(&err) {
            crate::budget::throttled();
            let since = *throttled_since.get_or_insert_with(Instant::now);
            let waited = since.elapsed();
            if waited >= patience() {
                return Err(explain(what, err));
            }
            if waited >= THROTTLE_NOTE_AFTER {
                note_throttled(what);
            }
            let pause = backoff(throttles, THROTTLE_MAX_BACKOFF).min(patience() - waited);
            throttles += 1;
            tokio::time::sleep(pause).await;
            continue;
        }
        failures += 1;
        if failures < MAX_ATTEMPTS && is_transient(&err) {
            tokio::time::sleep(backoff(failures - 1, MAX_BACKOFF)).await;
            continue;
        }
        return Err(explain(what, err));
    }
}

/// Said once per process, however many requests wait.
fn note_throttled(what: &str) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        crate::output::erase_progress();
        eprintln!(
            "cwlogs: CloudWatch Logs is throttling requests (while {what}); waiting for it to \
             pass, for up to {}",
            humantime::format_duration(patience())
        );
    }
}

/// Exponential from 250 ms, capped, with full jitter so that processes throttled together
/// do not come back together.
fn backoff(n: u32, cap: Duration) -> Duration {
    let ceiling = Duration::from_millis(250)
        .saturating_mul(1u32 << n.min(16))
        .min(cap);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Half fixed, half random: never a zero pause.
    ceiling / 2 + ceiling.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

fn is_throttling<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(
        err.code(),
        Some(
            "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
        )
    ) || err
        .raw_response()
        .is_some_and(|r| r.status().as_u16() == 429)
}

fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => {
            e.raw().status().is_server_error() || err.code() == Some("ServiceUnavailableException")
        }
        _ => false,
    }
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
        // The credentials or their permissions are the operator's to fix: exit 2.
        "AccessDeniedException" | "AccessDenied" => daemon_kit::config(anyhow!(
            "access denied while {what}: the credentials in use lack permission for it \
             (they need logs:DescribeLogGroups, logs:DescribeLogStreams and logs:FilterLogEvents); \
             check --profile / AWS_PROFILE or ask for read access to CloudWatch Logs.\n  ({})",
            err.message().unwrap_or(&code)
        )),
        "UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException"
        | "InvalidClientTokenId" => daemon_kit::config(anyhow!(
            "AWS rejected the credentials while {what} ({code}): they are unknown, wrong or expired; \
             refresh them (e.g. `aws sso login`, or re-run under aws-vault) and try again"
        )),
        "ThrottlingException" => anyhow!(
            "CloudWatch Logs kept throttling while {what}, for {}: other tools or machines are \
             using up the account's quota; retry later, or lower --max-rps",
            humantime::format_duration(patience())
        ),
        _ if is_credentials_missing(&detail) => daemon_kit::config(anyhow!(
            "no AWS credentials found while {what}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
             pass --profile NAME (or set AWS_PROFILE), or run under aws-vault / `aws sso login`"
        )),
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
