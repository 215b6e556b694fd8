//! firebreak's Lambda functions: the step runner (runs any step by name
//! for the deployed state machines) and the notification handler (an
//! EventBridge finding to a started playbook). Thin on purpose: parsing,
//! deciding and the steps live in the library crates; this crate wires
//! them to the Lambda runtime and to Step Functions. It may import every
//! firebreak library crate and is imported by none.

pub mod notify;
pub mod step_runner;

/// A Lambda error as the runtime reports it: `errorType` is what Step
/// Functions' Retry and Catch match (the shared error names).
pub fn diagnostic(
    name: firebreak_workflows::ErrorName,
    message: impl Into<String>,
) -> lambda_runtime::Diagnostic {
    lambda_runtime::Diagnostic {
        error_type: name.as_str().to_string(),
        error_message: message.into(),
    }
}
