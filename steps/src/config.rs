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
    #[error("the AWS profile {name:?} does not exist in the AWS config or credentials files (profiles found: {known}); check --profile or run `aws configure --profile {name}`")]
    NoProfile { name: String, known: String },
    #[error("cannot read the AWS config files for profile {name:?}: {message}")]
    ProfileFiles { name: String, message: String },
}

/// Checks a named profile exists in the config and credentials files.
async fn check_profile(name: &str) -> Result<(), ConfigError> {
    use aws_runtime::env_config::file::EnvConfigFiles;
    use aws_types::os_shim_internal::{Env, Fs};
    let set =
        aws_config::profile::load(&Fs::real(), &Env::real(), &EnvConfigFiles::default(), None)
            .await
            .map_err(|e| ConfigError::ProfileFiles {
                name: name.to_string(),
                message: e.to_string(),
            })?;
    if set.get_profile(name).is_some() {
        return Ok(());
    }
    let mut known: Vec<&str> = set.profiles().collect();
    known.sort_unstable();
    Err(ConfigError::NoProfile {
        name: name.to_string(),
        known: if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
    })
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
        // As with the AWS CLI, a named profile wins over credentials in
        // the environment (the SDK's default chain reads those first).
        check_profile(p).await?;
        loader = loader.profile_name(p).credentials_provider(
            aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_name(p)
                .build(),
        );
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
#[error("cannot read the AWS identity (sts:GetCallerIdentity): {message}")]
pub struct IdentityError {
    message: String,
    /// The SDK's whole error, for `--debug`.
    pub debug: String,
}

pub async fn identity(config: &SdkConfig) -> Result<Identity, IdentityError> {
    let out = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            let code = e
                .as_service_error()
                .and_then(aws_smithy_types::error::metadata::ProvideErrorMetadata::code)
                .map(|c| format!("{c}: "))
                .unwrap_or_default();
            let message = e
                .as_service_error()
                .and_then(aws_smithy_types::error::metadata::ProvideErrorMetadata::message)
                .map(str::to_string)
                .unwrap_or_else(|| crate::error::explain(&e));
            IdentityError {
                message: format!("{code}{message}"),
                debug: format!("{e:?}"),
            }
        })?;
    Ok(Identity {
        account_id: out.account().unwrap_or_default().to_string(),
        arn: out.arn().unwrap_or_default().to_string(),
    })
}
