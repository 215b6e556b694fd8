//! AWS configuration: the standard credential and region chain, plus the
//! `--profile`, `--region` and `--endpoint-url` overrides (and
//! `AWS_ENDPOINT_URL`, which the chain reads itself).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Connecting to an AWS endpoint takes milliseconds; 5 s means it is not
/// answering (or a sandbox is down), and the user should hear about it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt of one call: the slowest EC2 describe calls on large
/// accounts take a few seconds; 20 s bounds a hung connection.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// One call with the SDK's own retries: bounded so a step never hangs on a
/// silent endpoint.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// What the user may override on the command line.
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    pub profile: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no AWS region is configured: pass --region or set AWS_REGION (or a region in the profile)"
    )]
    NoRegion,
    #[error("invalid endpoint URL {url:?}: it must start with http:// or https://")]
    BadEndpoint { url: String },
}

/// Loads the SDK configuration.
pub async fn load(opts: &AwsOptions) -> Result<SdkConfig, ConfigError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build(),
    );
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(url) = &opts.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::BadEndpoint { url: url.clone() });
        }
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(ConfigError::NoRegion);
    }
    Ok(config)
}

/// Whether the configuration points at a custom endpoint (a sandbox such as
/// moto), where S3 needs path-style addressing.
pub fn has_custom_endpoint(config: &SdkConfig) -> bool {
    config.endpoint_url().is_some()
}

/// The caller's account and principal, from STS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub account_id: String,
    pub arn: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the AWS identity (sts:GetCallerIdentity): {0}; check the credentials, profile and endpoint")]
pub struct IdentityError(String);

pub async fn identity(config: &SdkConfig) -> Result<Identity, IdentityError> {
    let out = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            IdentityError(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string())
        })?;
    Ok(Identity {
        account_id: out.account().unwrap_or_default().to_string(),
        arn: out.arn().unwrap_or_default().to_string(),
    })
}
