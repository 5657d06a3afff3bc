//! CloudWatch Logs settings: the standard AWS chain (credentials, region, `AWS_ENDPOINT_URL`)
//! plus what journal-fanout adds. The SDK's own retries are off: a retry after a lost
//! response duplicates events either way, and our retry policy (see `retry`) never gives up
//! while the journal holds the data.

use std::time::Duration;

use anyhow::bail;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;

#[derive(Debug, Clone, Default)]
pub struct CloudWatchConfig {
    /// Retention set on groups journal-fanout creates (`--cloudwatch-retention-days`).
    pub retention_days: Option<i32>,
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
        bail!(
            "--dst cloudwatchlogs: no AWS region configured; set AWS_REGION (or a region in \
             the AWS profile, or run on EC2 with instance metadata)"
        );
    }
    Ok(aws_sdk_cloudwatchlogs::Client::new(&sdk))
}
