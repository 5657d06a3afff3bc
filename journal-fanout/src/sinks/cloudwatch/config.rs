//! CloudWatch Logs settings: the standard AWS chain (credentials, region, `AWS_ENDPOINT_URL`)
//! plus what journal-fanout adds. The SDK's own retries are off: a retry after a lost
//! response duplicates events either way, and our retry policy (see `retry`) never gives up
//! while the journal holds the data.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;

#[derive(Debug, Clone, Default)]
pub struct CloudWatchConfig {
    /// Retention set on groups journal-fanout creates (`--cloudwatch-retention-days`, the
    /// file's `destination.cloudwatchlogs.retention_days`; a reload changes it).
    pub retention_days: Retention,
}

/// Days of retention for new groups (`None`: never expire), shared with the reload.
#[derive(Debug, Clone, Default)]
pub struct Retention(std::sync::Arc<std::sync::atomic::AtomicI32>);

impl Retention {
    pub fn new(days: Option<i32>) -> Retention {
        let r = Retention::default();
        r.set(days);
        r
    }

    pub fn set(&self, days: Option<i32>) {
        self.0
            .store(days.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<i32> {
        Some(self.0.load(std::sync::atomic::Ordering::Relaxed)).filter(|d| *d != 0)
    }
}

/// A client from the environment, or an error telling the operator what to set.
pub async fn client() -> anyhow::Result<aws_sdk_cloudwatchlogs::Client> {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await;
    if sdk.region().is_none() {
        return Err(daemon_kit::config_error(
            "--dst cloudwatchlogs: no AWS region configured; set AWS_REGION (or a region in \
             the AWS profile, or run on EC2 with instance metadata)",
        ));
    }
    credentials(&sdk).await?;
    Ok(aws_sdk_cloudwatchlogs::Client::new(&sdk))
}

/// Load the credentials once at start, so missing ones are reported as missing (exit 2)
/// before the first request, not later as a failure to reach the service.
async fn credentials(sdk: &aws_config::SdkConfig) -> anyhow::Result<()> {
    use aws_credential_types::provider::{error::CredentialsError, ProvideCredentials};
    let Some(provider) = sdk.credentials_provider() else {
        return Err(daemon_kit::config_error(NO_CREDENTIALS));
    };
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(CredentialsError::CredentialsNotLoaded(_)) => {
            Err(daemon_kit::config_error(NO_CREDENTIALS))
        }
        // A provider that exists but failed (instance metadata timing out at boot, STS
        // unreachable): a runtime failure, worth a restart.
        Err(e) => Err(anyhow::Error::new(e).context(
            "--dst cloudwatchlogs: cannot load AWS credentials (the provider that has them failed)",
        )),
    }
}

const NO_CREDENTIALS: &str = "--dst cloudwatchlogs: no AWS credentials found; set \
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE with ~/.aws/credentials), \
    or run with an instance or task role";
