//! The one list of error names shared by steps, compiled Retry/Catch and the
//! executor.
//!
//! A step that fails reports one of these names; the step-runner Lambda sends
//! it as `errorType`, so Step Functions matches it in `ErrorEquals`; the local
//! executor matches the same string. Names are written here once, never
//! derived from Rust type names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_names {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, retriable: $retriable:literal; )*) => {
        /// An error name as it appears in `ErrorEquals` and in `errorType`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorName {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorName {
            /// Every name, in declaration order.
            pub const ALL_NAMES: &'static [ErrorName] = &[ $( ErrorName::$variant, )* ];

            /// The name exactly as Step Functions sees it.
            pub const fn as_str(self) -> &'static str {
                match self { $( ErrorName::$variant => $name, )* }
            }

            /// Whether retrying the same call can succeed (throttling, a
            /// service that is briefly unavailable, a resource still
            /// settling). Used to build default retry policies.
            pub const fn is_transient(self) -> bool {
                match self { $( ErrorName::$variant => $retriable, )* }
            }
        }

        impl FromStr for ErrorName {
            type Err = UnknownErrorName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $name => Ok(ErrorName::$variant), )*
                    other => Err(UnknownErrorName(other.to_string())),
                }
            }
        }
    };
}

error_names! {
    // --- Names defined by the States Language ---------------------------
    /// Matches every error (except `States.Runtime`); must stand alone and
    /// last in a Retry/Catch list.
    StatesAll => "States.ALL", retriable: false;
    /// A Task sent no heartbeat within its `HeartbeatSeconds`.
    StatesHeartbeatTimeout => "States.HeartbeatTimeout", retriable: false;
    /// A Task ran longer than its `TimeoutSeconds`, or the execution longer
    /// than its own.
    StatesTimeout => "States.Timeout", retriable: false;
    /// A Task failed. In `ErrorEquals` it matches every error not named
    /// `States.*`, so never `States.Timeout`.
    StatesTaskFailed => "States.TaskFailed", retriable: false;
    /// A Task lacked the privileges to run its code.
    StatesPermissions => "States.Permissions", retriable: false;
    /// A state's `ResultPath` could not be applied to its input.
    StatesResultPathMatchFailure => "States.ResultPathMatchFailure", retriable: false;
    /// A `.$` path in a state's `Parameters` could not be resolved.
    StatesParameterPathFailure => "States.ParameterPathFailure", retriable: false;
    /// A branch of a Parallel state failed.
    StatesBranchFailed => "States.BranchFailed", retriable: false;
    /// No Choice rule matched and the Choice state has no `Default`.
    StatesNoChoiceMatched => "States.NoChoiceMatched", retriable: false;
    /// An intrinsic function call in a payload template failed.
    StatesIntrinsicFailure => "States.IntrinsicFailure", retriable: false;
    /// More Map iterations failed than the state tolerates.
    StatesExceedToleratedFailureThreshold => "States.ExceedToleratedFailureThreshold", retriable: false;
    /// A Map state could not read its items through its `ItemReader`.
    StatesItemReaderFailed => "States.ItemReaderFailed", retriable: false;
    /// A Map state could not write its results through its `ResultWriter`.
    StatesResultWriterFailed => "States.ResultWriterFailed", retriable: false;
    /// A payload was over Step Functions' size quota (256 KiB); the executor
    /// lets no Retry or Catch handle it.
    StatesDataLimitExceeded => "States.DataLimitExceeded", retriable: false;
    /// An error the execution cannot recover from (a path that selects nothing,
    /// a value of the wrong type); no Retry or Catch handles it, not even
    /// `States.ALL`.
    StatesRuntime => "States.Runtime", retriable: false;

    // --- Transient errors of the Lambda service itself (AWS recommends
    // retrying these on every Lambda task) ---------------------------------
    /// The Lambda service had an internal error.
    LambdaServiceException => "Lambda.ServiceException", retriable: true;
    /// The Lambda service failed the invocation for another reason.
    LambdaAwsLambdaException => "Lambda.AWSLambdaException", retriable: true;
    /// Step Functions could not reach the Lambda service.
    LambdaSdkClientException => "Lambda.SdkClientException", retriable: true;
    /// Lambda throttled the invocation (concurrency or request rate).
    LambdaTooManyRequests => "Lambda.TooManyRequestsException", retriable: true;

    // --- firebreak's own ---------------------------------------------------
    /// The step input does not match the step's input type.
    InvalidInput => "Firebreak.InvalidInput", retriable: false;
    /// The step-runner was asked for a step it does not know.
    UnknownStep => "Firebreak.UnknownStep", retriable: false;
    /// The instance does not exist (or is terminated) in this account and
    /// region.
    InstanceNotFound => "Firebreak.InstanceNotFound", retriable: false;
    /// A resource the step needs (volume, snapshot, group) does not exist.
    ResourceNotFound => "Firebreak.ResourceNotFound", retriable: false;
    /// AWS refused the call for lack of permission.
    AccessDenied => "Firebreak.AccessDenied", retriable: false;
    /// AWS throttled the call; retry with backoff and jitter.
    Throttled => "Firebreak.Throttled", retriable: true;
    /// AWS answered 5xx, or the call timed out or could not connect.
    AwsUnavailable => "Firebreak.AwsUnavailable", retriable: true;
    /// Any other error AWS returned for a call (a 4xx that retrying will
    /// not fix).
    AwsRequestFailed => "Firebreak.AwsRequestFailed", retriable: false;
    /// The state read back after a change is not the state asked for.
    VerificationFailed => "Firebreak.VerificationFailed", retriable: false;
    /// A person denied the approval a run waited for (`firebreak deny`):
    /// the run stops before its first change.
    ApprovalDenied => "Firebreak.ApprovalDenied", retriable: false;
    /// A bounded wait ran out of attempts before the resource was ready.
    WaitExhausted => "Firebreak.WaitExhausted", retriable: false;
    /// The instance is in a shape the step cannot handle (for example no
    /// network interface in a VPC).
    Unsupported => "Firebreak.Unsupported", retriable: false;
    /// The instance is already contained (under another case, or its
    /// pre-incident state is gone): recording it now would record the
    /// contained state as if it were the original.
    AlreadyContained => "Firebreak.AlreadyContained", retriable: false;
    /// Some of what containment acts on could not be contained (each
    /// named in the cause, with what was): the rest was.
    PartiallyContained => "Firebreak.PartiallyContained", retriable: false;
    /// The memory capture on the host failed, or its command did not run
    /// (the host's own reason is in the cause).
    CaptureFailed => "Firebreak.CaptureFailed", retriable: false;
    /// An evidence file is not what it claims to be (a LiME image whose
    /// structure is broken, with the range and offset in the cause).
    EvidenceInvalid => "Firebreak.EvidenceInvalid", retriable: false;
    /// Volatility could not analyse the image.
    AnalysisFailed => "Firebreak.AnalysisFailed", retriable: false;
    /// A bug or an impossible state inside firebreak; reported, never
    /// retried.
    Internal => "Firebreak.Internal", retriable: false;
}

impl ErrorName {
    /// `States.*` names are the language's own; the others come from tasks.
    pub fn is_states_name(self) -> bool {
        self.as_str().starts_with("States.")
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A string that is none of the [`ErrorName`]s (from parsing or deserializing
/// one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error name {0:?}")]
pub struct UnknownErrorName(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_itself() {
        for n in ErrorName::ALL_NAMES {
            assert_eq!(n.as_str().parse::<ErrorName>(), Ok(*n));
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ErrorName::ALL_NAMES.iter().map(|n| n.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn unknown_names_are_refused() {
        assert!("Firebreak.Nope".parse::<ErrorName>().is_err());
    }
}
