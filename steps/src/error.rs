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
    pub name: ErrorName,
    pub message: String,
}

impl StepError {
    pub fn new(name: ErrorName, message: impl Into<String>) -> StepError {
        StepError {
            name,
            message: message.into(),
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> StepError {
        StepError::new(ErrorName::InvalidInput, message)
    }

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
        .unwrap_or_else(|| aws_smithy_types::error::display::DisplayErrorContext(&err).to_string());
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
