//! Step errors: an error name from the shared list plus a message, and the
//! mapping from AWS SDK errors to those names.

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use firebreak_workflows::ErrorName;

/// A failed step: `name` is what Retry/Catch match, `message` the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct StepError {
    /// The error name from the shared list, which Retry and Catch match on.
    pub name: ErrorName,
    /// The cause in words, with the failed call and its target when from AWS.
    pub message: String,
}

impl StepError {
    /// A step error with this name and message.
    pub fn new(name: ErrorName, message: impl Into<String>) -> StepError {
        StepError {
            name,
            message: message.into(),
        }
    }

    /// An `InvalidInput` error: the case file or the step's input is wrong,
    /// not AWS.
    pub fn invalid_input(message: impl Into<String>) -> StepError {
        StepError::new(ErrorName::InvalidInput, message)
    }

    /// A `VerificationFailed` error: what was read back from AWS (after a
    /// change, or of evidence) is not what was expected; never retried.
    pub fn verification(message: impl Into<String>) -> StepError {
        StepError::new(ErrorName::VerificationFailed, message)
    }

    /// An error with its whole cause chain written into the message: a
    /// step error crosses the step runner's boundary (Lambda, journal) as
    /// a name and a message, so the chain cannot travel as sources.
    pub fn with_source(name: ErrorName, context: &str, err: impl StdError) -> StepError {
        let mut message = context.to_string();
        let mut cause: Option<&dyn StdError> = Some(&err);
        while let Some(e) = cause {
            message.push_str(": ");
            message.push_str(&e.to_string());
            cause = e.source();
        }
        StepError::new(name, message)
    }
}

/// A value an AWS answer must carry (an id, an ARN): the value, or an
/// `AwsRequestFailed` error naming the call and what it lacked, never an
/// empty string acted on or kept.
pub(crate) fn required(call: &str, what: &str, value: Option<&str>) -> Result<String, StepError> {
    value
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            StepError::new(
                ErrorName::AwsRequestFailed,
                format!("{call} answered without {what}"),
            )
        })
}

/// Error codes AWS uses for throttling across services.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    // IAM: another change to the same entity is in flight; it settles.
    "ConcurrentModification",
    "ConcurrentModificationException",
];

/// Codes that mean the caller lacks permission (or valid credentials).
const ACCESS_CODES: &[&str] = &[
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
];

/// Codes of server-side trouble that a retry can fix.
const UNAVAILABLE_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
];

/// The error code of an SDK error, when AWS sent one.
pub fn error_code<E, R>(err: &SdkError<E, R>) -> Option<String>
where
    E: ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .map(str::to_string)
}

/// Maps an SDK error to a step error. `call` names the call and its target
/// (`ec2:ModifyNetworkInterfaceAttribute eni-0abc`).
pub fn aws_error<E>(
    call: &str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> StepError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = error_code(&err);
    let detail = err
        .as_service_error()
        .and_then(|e| e.message())
        .map(str::to_string)
        .unwrap_or_else(|| match status {
            // An answer without an AWS error code: its HTTP status says
            // what happened (a 503 from an overloaded endpoint).
            Some(s) => format!("HTTP {s}: {}", explain(&err)),
            None => explain(&err),
        });
    let name = match (&err, code.as_deref()) {
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _) => ErrorName::AwsUnavailable,
        (_, Some(c)) if THROTTLING_CODES.contains(&c) => ErrorName::Throttled,
        (_, Some(c)) if ACCESS_CODES.contains(&c) => ErrorName::AccessDenied,
        (_, Some(c)) if UNAVAILABLE_CODES.contains(&c) => ErrorName::AwsUnavailable,
        (_, Some("InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed")) => {
            ErrorName::InstanceNotFound
        }
        (_, Some(c)) if c.ends_with(".NotFound") || c.starts_with("NoSuch") => {
            ErrorName::ResourceNotFound
        }
        _ if status.is_some_and(|s| s >= 500) => ErrorName::AwsUnavailable,
        // S3 answers HEAD and some refusals with a bare 403, no code.
        _ if status == Some(403) => ErrorName::AccessDenied,
        _ if status == Some(429) => ErrorName::Throttled,
        _ => ErrorName::AwsRequestFailed,
    };
    let code = code.map(|c| format!("{c}: ")).unwrap_or_default();
    StepError::new(name, format!("{call} failed: {code}{detail}"))
}

/// The messages of an error and its sources, joined with ": " (a source
/// whose message the previous one already holds is left out). Unlike the
/// SDK's `DisplayErrorContext`, no Debug structure is added.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let m = err.to_string();
        if !m.is_empty() && !parts.last().is_some_and(|p| p.contains(&m)) {
            parts.push(m);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// One sentence a person can act on for an AWS error that is not an
/// answer from the service: no credentials, an expired SSO session, an
/// endpoint that does not answer (the SDK's own Debug structures are left
/// to `--debug`).
pub fn explain<E, R>(err: &SdkError<E, R>) -> String
where
    E: StdError + 'static,
    R: std::fmt::Debug + 'static,
{
    let chain = error_chain(err);
    let lower = chain.to_lowercase();
    match err {
        _ if lower.contains("sso") && (lower.contains("expired") || lower.contains("token")) => format!(
            "the SSO session has expired or is missing: sign in again with `aws sso login --profile PROFILE` ({chain})"
        ),
        _ if lower.contains("credential") => format!(
            "no usable AWS credentials: firebreak looked in the environment (AWS_ACCESS_KEY_ID), the profile's entries in ~/.aws/credentials and ~/.aws/config (SSO, credential_process, role), the container and instance metadata; set credentials or pass --profile ({chain})"
        ),
        SdkError::TimeoutError(_) => format!(
            "AWS did not answer within the time limit: check the network and --endpoint-url ({chain})"
        ),
        SdkError::DispatchFailure(d) if d.is_timeout() => format!(
            "the endpoint did not answer within 5 seconds: check the network, the region and --endpoint-url ({chain})"
        ),
        SdkError::DispatchFailure(d) if d.is_io() => format!(
            "cannot connect to the AWS endpoint: check the network, the region and --endpoint-url ({chain})"
        ),
        _ => chain,
    }
}
