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
    /// `--profile`: a named profile of the AWS config and credentials files,
    /// whose credentials then win over those in the environment. Must exist.
    pub profile: Option<String>,
    /// `--region`: overrides the region of the environment and the profile.
    pub region: Option<String>,
    /// `--endpoint-url`: an `http://` or `https://` endpoint for every
    /// service (a sandbox such as moto); S3 then uses path-style addressing.
    pub endpoint_url: Option<String>,
}

/// Why the AWS configuration could not be loaded; each message tells the
/// user what to pass or fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `--region`, the environment nor the profile gives a region.
    #[error(
        "no AWS region is configured: pass --region or set AWS_REGION (or a region in the profile)"
    )]
    NoRegion,
    /// `--endpoint-url` is not an `http://` or `https://` URL.
    #[error("invalid endpoint URL {url:?}: it must start with http:// or https://")]
    BadEndpoint {
        /// The `--endpoint-url` as given.
        url: String,
    },
    /// The `--profile` is in neither the config nor the credentials file.
    #[error("the AWS profile {name:?} does not exist in the AWS config or credentials files (profiles found: {known}); check --profile or run `aws configure --profile {name}`")]
    NoProfile {
        /// The profile name given to `--profile`.
        name: String,
        /// The profiles the files do hold, sorted and comma-separated
        /// (`none` when there are none).
        known: String,
    },
    /// The AWS config or credentials files could not be read or parsed.
    #[error("cannot read the AWS config files for profile {name:?}: {message}")]
    ProfileFiles {
        /// The profile name given to `--profile`.
        name: String,
        /// The SDK's reason the files could not be loaded.
        message: String,
    },
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
    /// The caller's 12-digit account id (empty if STS did not return one).
    pub account_id: String,
    /// The caller's principal ARN, e.g. an assumed role's session
    /// (`arn:aws:sts::123456789012:assumed-role/ROLE/SESSION`); empty if STS
    /// did not return one.
    pub arn: String,
}

/// `sts:GetCallerIdentity` failed: no or expired credentials, no access,
/// or an endpoint that does not answer; the message says which.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the AWS identity (sts:GetCallerIdentity): {message}")]
pub struct IdentityError {
    message: String,
    /// The SDK's whole error, for `--debug`.
    pub debug: String,
}

/// Who the configuration's credentials are, from `sts:GetCallerIdentity`;
/// fails when there are no usable credentials or STS does not answer.
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
