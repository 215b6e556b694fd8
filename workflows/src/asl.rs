//! Serde model of the Amazon States Language (JSONPath mode).
//!
//! The model is faithful rather than convenient: every field AWS documents for
//! a state type has a place here, numbers keep their JSON form (so `2` stays
//! `2` and `2.5` stays `2.5`), and `null` is kept apart from "absent" where
//! the language gives them different meanings (`InputPath`, `OutputPath`,
//! `ResultPath`). Parsing a valid definition and serialising it again gives
//! the same JSON value.
//!
//! Field order on output follows the order of the struct fields, which is the
//! order the AWS documentation uses, so generated definitions read naturally.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// A whole state machine (the top level of a definition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StateMachine {
    /// `Comment`: a human-readable description of the state machine; no effect
    /// on the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `QueryLanguage`: absent means `JSONPath`, the AWS default (see
    /// [`QueryLanguage`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_language: Option<QueryLanguage>,
    /// `StartAt`: the name of the top-level state the execution begins with.
    pub start_at: String,
    /// `States`: the top-level states by name, in document order. Names are
    /// unique across the whole definition (branches and Map processors
    /// included), 1 to 80 characters.
    pub states: IndexMap<String, State>,
    /// `TimeoutSeconds`: the most the whole execution may run, in seconds (1 to
    /// 99999999); past it the execution times out with `States.Timeout`.
    /// `None`: no limit but the execution type's own (one year for Standard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// `Version`: the States Language version; `"1.0"`, the only one, is also
    /// what absent means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `QueryLanguage`: firebreak runs JSONPath definitions only; `JSONata` is
/// parsed so the validator can name it instead of failing on an unknown
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryLanguage {
    /// `"JSONPath"` (the default): paths, `Parameters` and `ResultSelector`
    /// select and shape data.
    #[serde(rename = "JSONPath")]
    JsonPath,
    /// `"JSONata"`: JSONata expressions with `Arguments` and `Output` instead
    /// of paths; the validator rejects it.
    #[serde(rename = "JSONata")]
    Jsonata,
}

/// A nested graph: a Parallel branch or a legacy Map `Iterator`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Branch {
    /// `Comment`: a human-readable description of the branch; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `StartAt`: the state this graph begins with; one of its own `states`.
    pub start_at: String,
    /// `States`: the states of this graph by name; their transitions cannot
    /// leave it, and their names are used nowhere else in the definition.
    pub states: IndexMap<String, State>,
}

/// The graph a Map state runs for each item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ItemProcessor {
    /// `Comment`: a human-readable description of the processor; no effect on
    /// the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `ProcessorConfig`: how the iterations run; `None` means an Inline Map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_config: Option<ProcessorConfig>,
    /// `StartAt`: the state each iteration begins with; one of `states`.
    pub start_at: String,
    /// `States`: the states run for each item; their transitions cannot leave
    /// this graph.
    pub states: IndexMap<String, State>,
}

/// `ProcessorConfig` of an `ItemProcessor`: the Map's mode and, when
/// Distributed, the type of its child executions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProcessorConfig {
    /// `Mode`: `INLINE` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProcessorMode>,
    /// `ExecutionType`: the kind of child execution; AWS requires it with
    /// `DISTRIBUTED` (the validator checks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_type: Option<ExecutionType>,
}

/// `ProcessorConfig.Mode`: how a Map state runs its iterations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProcessorMode {
    /// `"INLINE"` (the default): iterations run inside the parent execution, in
    /// its history, at most 40 at a time.
    Inline,
    /// `"DISTRIBUTED"`: each iteration is a child workflow execution with its
    /// own history; the mode that allows `ItemReader`, `ItemBatcher`,
    /// `ResultWriter` and `Label`.
    Distributed,
}

/// `ProcessorConfig.ExecutionType`: the kind of child executions a Distributed
/// Map starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExecutionType {
    /// `"STANDARD"`: child executions that may run up to a year, each with a
    /// full history.
    Standard,
    /// `"EXPRESS"`: short child executions (at most 5 minutes each), cheaper,
    /// without a full history.
    Express,
}

/// One state, tagged by its `Type`.
// A definition holds each state once, in a map; boxing the larger variants
// would buy nothing measurable and make every match noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum State {
    /// `"Task"`: runs one unit of work named by its `Resource`.
    Task(TaskState),
    /// `"Pass"`: passes its input on, optionally with a fixed `Result` or a
    /// `Parameters` template; does no work.
    Pass(PassState),
    /// `"Choice"`: goes to the `Next` of the first rule that holds, else to its
    /// `Default`.
    Choice(ChoiceState),
    /// `"Wait"`: pauses for some seconds or until a timestamp.
    Wait(WaitState),
    /// `"Succeed"`: ends its graph (the execution, a branch or an iteration)
    /// successfully.
    Succeed(SucceedState),
    /// `"Fail"`: fails with an error name and a cause, ending the execution
    /// unless an enclosing Parallel or Map catches it.
    Fail(FailState),
    /// `"Parallel"`: runs every branch on the same input; its result is the
    /// array of their outputs.
    Parallel(ParallelState),
    /// `"Map"`: runs its item processor for each element of an array; its
    /// result is the array of their outputs.
    Map(MapState),
}

impl State {
    /// The `Type` name of this state.
    pub fn type_name(&self) -> &'static str {
        match self {
            State::Task(_) => "Task",
            State::Pass(_) => "Pass",
            State::Choice(_) => "Choice",
            State::Wait(_) => "Wait",
            State::Succeed(_) => "Succeed",
            State::Fail(_) => "Fail",
            State::Parallel(_) => "Parallel",
            State::Map(_) => "Map",
        }
    }

    /// The state's `Comment`, whatever its type.
    pub fn comment(&self) -> Option<&str> {
        match self {
            State::Task(s) => s.comment.as_deref(),
            State::Pass(s) => s.comment.as_deref(),
            State::Choice(s) => s.comment.as_deref(),
            State::Wait(s) => s.comment.as_deref(),
            State::Succeed(s) => s.comment.as_deref(),
            State::Fail(s) => s.comment.as_deref(),
            State::Parallel(s) => s.comment.as_deref(),
            State::Map(s) => s.comment.as_deref(),
        }
    }

    /// `(Next, End)` of the states that have them (not Choice, Succeed,
    /// Fail), as written.
    pub fn next_end(&self) -> Option<(Option<&str>, Option<bool>)> {
        match self {
            State::Task(s) => Some((s.next.as_deref(), s.end)),
            State::Pass(s) => Some((s.next.as_deref(), s.end)),
            State::Wait(s) => Some((s.next.as_deref(), s.end)),
            State::Parallel(s) => Some((s.next.as_deref(), s.end)),
            State::Map(s) => Some((s.next.as_deref(), s.end)),
            State::Choice(_) | State::Succeed(_) | State::Fail(_) => None,
        }
    }

    /// The `Next` state, when the state has one.
    pub fn next(&self) -> Option<&str> {
        self.next_end().and_then(|(n, _)| n)
    }

    /// The `Retry` rules of a Task, Parallel or Map state; empty when absent or
    /// for the other types.
    pub fn retry(&self) -> &[Retrier] {
        let r = match self {
            State::Task(s) => &s.retry,
            State::Parallel(s) => &s.retry,
            State::Map(s) => &s.retry,
            _ => return &[],
        };
        r.as_deref().unwrap_or(&[])
    }

    /// The `Catch` rules of a Task, Parallel or Map state; empty when absent or
    /// for the other types.
    pub fn catch(&self) -> &[Catcher] {
        let c = match self {
            State::Task(s) => &s.catch,
            State::Parallel(s) => &s.catch,
            State::Map(s) => &s.catch,
            _ => return &[],
        };
        c.as_deref().unwrap_or(&[])
    }

    /// Every state name this state can move to directly (Next, Choice
    /// targets, Default, Catch targets), with the field that names it.
    pub fn targets(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(next) = self.next() {
            out.push(("Next".to_string(), next));
        }
        if let State::Choice(c) = self {
            for (i, rule) in c.choices.iter().enumerate() {
                if let Some(next) = &rule.next {
                    out.push((format!("Choices[{i}].Next"), next.as_str()));
                }
            }
            if let Some(d) = &c.default {
                out.push(("Default".to_string(), d.as_str()));
            }
        }
        for (i, c) in self.catch().iter().enumerate() {
            out.push((format!("Catch[{i}].Next"), c.next.as_str()));
        }
        out
    }

    /// True when the state ends its graph (Succeed, Fail or `End: true`).
    pub fn is_terminal(&self) -> bool {
        match self {
            State::Succeed(_) | State::Fail(_) => true,
            State::Choice(_) => false,
            other => other.next_end().is_some_and(|(_, end)| end == Some(true)),
        }
    }
}

/// A path field that may also be JSON `null`, which the language gives its
/// own meaning (`InputPath: null` = empty input, `ResultPath: null` = discard
/// the result, `OutputPath: null` = empty output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NullablePath {
    /// JSON `null`: `{}` as input (`InputPath`) or output (`OutputPath`), or
    /// the result discarded (`ResultPath`).
    Null,
    /// A path as written (`$`, `$.case.id`); `ResultPath` needs a reference
    /// path (no `$$`, no wildcards).
    Path(String),
}

impl NullablePath {
    /// The path, or `None` for `null`.
    pub fn as_path(&self) -> Option<&str> {
        match self {
            NullablePath::Null => None,
            NullablePath::Path(p) => Some(p),
        }
    }
}

impl Serialize for NullablePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NullablePath::Null => s.serialize_none(),
            NullablePath::Path(p) => s.serialize_str(p),
        }
    }
}

/// Used with `#[serde(default)]`: a present field (even `null`) becomes
/// `Some(..)`, an absent one stays `None`.
fn nullable_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NullablePath>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(Some(match v {
        None => NullablePath::Null,
        Some(p) => NullablePath::Path(p),
    }))
}

/// A `Task` state: runs its `Resource` on the input `Parameters` builds, with
/// `Retry` and `Catch` for its errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TaskState {
    /// `Comment`: a human-readable description of the state; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `Resource`: what runs: an ARN (a Lambda function, an activity, or
    /// `arn:aws:states:::service:action` with an optional `.sync` or
    /// `.waitForTaskToken`), or a `${Placeholder}` that
    /// `DefinitionSubstitutions` fills in on deployment.
    pub resource: String,
    /// `Credentials`: the role Step Functions assumes to run the task
    /// (`{"RoleArn": ...}`, e.g. cross-account); kept as raw JSON, neither
    /// checked nor used by the local executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Value>,
    /// `InputPath`: the part of the state's input it works on. `None`: absent,
    /// so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    /// `Parameters`: the template that builds the task's payload from the
    /// effective input (keys ending in `.$` take a path or an intrinsic call);
    /// `None`: the effective input itself is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// `ResultSelector`: a template applied to the raw result before
    /// `ResultPath`; `None`: the raw result is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_selector: Option<Value>,
    /// `ResultPath`: where the result goes in the state's input. `None`:
    /// absent, so `$` (the result replaces the input); `Some(Null)`: the result
    /// is discarded and the input passes on unchanged.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    /// `OutputPath`: the part of the state's output passed on to the next
    /// state. `None`: absent, so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    /// `TimeoutSeconds`: the most one attempt may run, in seconds (1 to
    /// 99999999), before it fails with `States.Timeout`. `None` and no
    /// `TimeoutSecondsPath`: no limit of the task's own (AWS documents a
    /// default of 99999999 seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// `TimeoutSecondsPath`: a path into the state's input that selects the
    /// timeout, a positive integer of seconds; exclusive with `TimeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds_path: Option<String>,
    /// `HeartbeatSeconds`: the longest a running attempt may go without a
    /// heartbeat (`SendTaskHeartbeat`), in seconds, before it fails with
    /// `States.HeartbeatTimeout`; must be smaller than `TimeoutSeconds`.
    /// `None`: no heartbeat is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds: Option<u64>,
    /// `HeartbeatSecondsPath`: a path into the state's input that selects the
    /// heartbeat interval, a positive integer of seconds; exclusive with
    /// `HeartbeatSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds_path: Option<String>,
    /// `None` when absent; `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Vec<Retrier>>,
    /// `Catch`: tried in order once retries are exhausted; the first whose
    /// `ErrorEquals` matches goes to its `Next`. `None` when absent;
    /// `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<Vec<Catcher>>,
    /// `Next`: the state to go to on success; exactly one of `Next` and
    /// `End: true` is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// `End`: `true` makes this the last state of its graph; kept as written,
    /// so an explicit `false` round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

/// A `Pass` state: puts a fixed `Result`, a `Parameters` template's output or
/// its own input at `ResultPath`; does no work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PassState {
    /// `Comment`: a human-readable description of the state; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `InputPath`: the part of the state's input it works on. `None`: absent,
    /// so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    /// `Parameters`: a template applied to the effective input (keys ending in
    /// `.$` take a path or an intrinsic call); its output is the result when
    /// there is no `Result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// `Result` may legitimately be `null`; keep it apart from absent.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Value>,
    /// `ResultPath`: where the result goes in the state's input. `None`:
    /// absent, so `$` (the result replaces the input); `Some(Null)`: the result
    /// is discarded and the input passes on unchanged.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    /// `OutputPath`: the part of the state's output passed on to the next
    /// state. `None`: absent, so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    /// `Next`: the state to go to on success; exactly one of `Next` and
    /// `End: true` is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// `End`: `true` makes this the last state of its graph; kept as written,
    /// so an explicit `false` round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

fn present_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A `Choice` state: goes to the `Next` of the first rule in `Choices` that
/// holds, else to `Default`; it has no `Next` or `End` of its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ChoiceState {
    /// `Comment`: a human-readable description of the state; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `InputPath`: the part of the state's input the rules test and pass on.
    /// `None`: absent, so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    /// `OutputPath`: the part of the state's output passed on to the next
    /// state. `None`: absent, so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    /// Kept as a plain list so that an empty `Choices` parses and the
    /// validator can name the state; AWS requires at least one rule.
    #[serde(default)]
    pub choices: Vec<ChoiceRule>,
    /// `Default`: where to go when no rule holds; `None`: the state then fails
    /// with `States.NoChoiceMatched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A `Wait` state: waits as exactly one of `Seconds`, `SecondsPath`,
/// `Timestamp` and `TimestampPath` says, then passes its input on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct WaitState {
    /// `Comment`: a human-readable description of the state; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `InputPath`: the part of the state's input it works on. `None`: absent,
    /// so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    /// `OutputPath`: the part of the state's output passed on to the next
    /// state. `None`: absent, so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    /// `Seconds`: how long to wait, in seconds (0 to 99999999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// `SecondsPath`: a path into the state's input that selects the wait in
    /// seconds, a non-negative integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_path: Option<String>,
    /// `Timestamp`: wait until this RFC 3339 time (`2024-03-14T01:59:00Z`); a
    /// time already past does not wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// `TimestampPath`: a path into the state's input that selects an RFC 3339
    /// timestamp to wait until.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_path: Option<String>,
    /// `Next`: the state to go to on success; exactly one of `Next` and
    /// `End: true` is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// `End`: `true` makes this the last state of its graph; kept as written,
    /// so an explicit `false` round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

/// A `Succeed` state: ends its graph successfully, with its input (through
/// `InputPath` and `OutputPath`) as output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SucceedState {
    /// `Comment`: a human-readable description of the state; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `InputPath`: the part of the state's input it works on. `None`: absent,
    /// so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    /// `OutputPath`: the part of the state's output passed on to the next
    /// state. `None`: absent, so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
}

/// A `Fail` state: fails with an error name and a cause, ending the execution
/// unless an enclosing Parallel or Map catches it; it has no `Next` or `End`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FailState {
    /// `Comment`: a human-readable description of the state; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `Error`: the error name reported (what an enclosing `ErrorEquals`
    /// matches); exclusive with `ErrorPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `ErrorPath`: a path or intrinsic call on the state's input that gives
    /// the error name at run time; exclusive with `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_path: Option<String>,
    /// `Cause`: a human-readable explanation of the failure; exclusive with
    /// `CausePath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// `CausePath`: a path or intrinsic call on the state's input that gives
    /// the cause at run time; exclusive with `Cause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_path: Option<String>,
}

/// A `Parallel` state: runs every branch at once on the same input; its result
/// is the array of the branches' outputs, in branch order. One failed branch
/// fails it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ParallelState {
    /// `Comment`: a human-readable description of the state; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `Branches`: the graphs run at once, each given the same effective input.
    pub branches: Vec<Branch>,
    /// `InputPath`: the part of the state's input it works on. `None`: absent,
    /// so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    /// `Parameters`: a template that builds the input every branch receives
    /// (keys ending in `.$` take a path or an intrinsic call); `None`: the
    /// effective input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// `ResultSelector`: a template applied to the array of branch outputs
    /// before `ResultPath`; `None`: the array is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_selector: Option<Value>,
    /// `ResultPath`: where the result goes in the state's input. `None`:
    /// absent, so `$` (the result replaces the input); `Some(Null)`: the result
    /// is discarded and the input passes on unchanged.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    /// `OutputPath`: the part of the state's output passed on to the next
    /// state. `None`: absent, so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    /// `None` when absent; `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Vec<Retrier>>,
    /// `Catch`: tried in order once retries are exhausted; the first whose
    /// `ErrorEquals` matches goes to its `Next`. `None` when absent;
    /// `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<Vec<Catcher>>,
    /// `Next`: the state to go to on success; exactly one of `Next` and
    /// `End: true` is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// `End`: `true` makes this the last state of its graph; kept as written,
    /// so an explicit `false` round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

/// A `Map` state: runs its item processor for each element of an array of its
/// input; its result is the array of the iterations' outputs, in item order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MapState {
    /// `Comment`: a human-readable description of the state; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `ItemProcessor`: the graph run for each item, with its mode; exactly one
    /// of it and the legacy `Iterator` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_processor: Option<ItemProcessor>,
    /// Legacy form of `ItemProcessor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterator: Option<Branch>,
    /// `ItemsPath`: a path to the array iterated over; `None` means `$` (the
    /// effective input must be the array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_path: Option<String>,
    /// `ItemReader` (Distributed only): reads the items from S3 instead of the
    /// input; raw JSON, not run locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_reader: Option<Value>,
    /// `ItemSelector`: a template that builds each iteration's input
    /// (`$$.Map.Item.Value` is the item, `$$.Map.Item.Index` its position);
    /// `None`: the item itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_selector: Option<Value>,
    /// `ItemBatcher` (Distributed only): gives each iteration a batch
    /// (`{"Items": [...]}`) instead of one item; raw JSON, not run locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_batcher: Option<Value>,
    /// `ResultWriter` (Distributed only): writes the iterations' results to S3
    /// instead of the state's result; raw JSON, not run locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_writer: Option<Value>,
    /// `MaxConcurrency`: the most iterations run at once; `None` or 0: no limit
    /// set (AWS runs at most 40 Inline iterations at a time, and so does the
    /// local executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u64>,
    /// `MaxConcurrencyPath`: a path into the state's input that selects
    /// `MaxConcurrency`, a non-negative integer; exclusive with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency_path: Option<String>,
    /// `ToleratedFailureCount`: how many iterations may fail before the Map
    /// fails with `States.ExceedToleratedFailureThreshold`; `None`: none may,
    /// unless a percentage is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_count: Option<u64>,
    /// `ToleratedFailureCountPath`: a path into the state's input that selects
    /// `ToleratedFailureCount`; exclusive with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_count_path: Option<String>,
    /// `ToleratedFailurePercentage`: the share of iterations, 0 to 100, that
    /// may fail before the Map fails with
    /// `States.ExceedToleratedFailureThreshold`; a JSON number, so `2.5` is
    /// kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percentage: Option<Number>,
    /// `ToleratedFailurePercentagePath`: a path into the state's input that
    /// selects `ToleratedFailurePercentage`; exclusive with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percentage_path: Option<String>,
    /// `Label` (Distributed only): up to 40 characters that AWS adds to the
    /// Map Run's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `InputPath`: the part of the state's input it works on. `None`: absent,
    /// so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    /// Legacy form of `ItemSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// `ResultSelector`: a template applied to the array of iteration outputs
    /// before `ResultPath`; `None`: the array is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_selector: Option<Value>,
    /// `ResultPath`: where the result goes in the state's input. `None`:
    /// absent, so `$` (the result replaces the input); `Some(Null)`: the result
    /// is discarded and the input passes on unchanged.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    /// `OutputPath`: the part of the state's output passed on to the next
    /// state. `None`: absent, so `$` (all of it); `Some(Null)`: `{}`.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    /// `None` when absent; `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Vec<Retrier>>,
    /// `Catch`: tried in order once retries are exhausted; the first whose
    /// `ErrorEquals` matches goes to its `Next`. `None` when absent;
    /// `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<Vec<Catcher>>,
    /// `Next`: the state to go to on success; exactly one of `Next` and
    /// `End: true` is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// `End`: `true` makes this the last state of its graph; kept as written,
    /// so an explicit `false` round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

impl MapState {
    /// The first Distributed Map field the local executor cannot honour,
    /// if any: `ItemReader` and `ResultWriter` read and write S3, and
    /// `ItemBatcher` changes every child's input (`{"Items": [...]}`) in
    /// ways AWS documents only in part. Running without them would give
    /// another result than AWS, silently.
    pub fn unsupported_locally(&self) -> Option<&'static str> {
        [
            ("ItemReader", self.item_reader.is_some()),
            ("ItemBatcher", self.item_batcher.is_some()),
            ("ResultWriter", self.result_writer.is_some()),
        ]
        .into_iter()
        .find_map(|(field, present)| present.then_some(field))
    }

    /// The graph run per item, whichever form the definition uses.
    pub fn processor(&self) -> Option<(Option<&str>, &str, &IndexMap<String, State>)> {
        if let Some(p) = &self.item_processor {
            Some((p.comment.as_deref(), p.start_at.as_str(), &p.states))
        } else {
            self.iterator
                .as_ref()
                .map(|b| (b.comment.as_deref(), b.start_at.as_str(), &b.states))
        }
    }

    /// The per-item selector, whichever form the definition uses.
    pub fn selector(&self) -> Option<&Value> {
        self.item_selector.as_ref().or(self.parameters.as_ref())
    }
}

/// One entry of `Retry`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Retrier {
    /// `Comment`: a human-readable description of the retrier; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `ErrorEquals`: the error names this retrier handles (at least one);
    /// `States.ALL` matches any error but `States.Runtime`, and must be alone,
    /// in the last retrier.
    pub error_equals: Vec<String>,
    /// `IntervalSeconds`: the wait before the first retry, in seconds (1 to
    /// 99999999); `None`: 1 (see [`Retrier::interval`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// `MaxAttempts`: the most retries after the first attempt (0 never
    /// retries); `None`: 3 (see [`Retrier::attempts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    /// Kept as a JSON number so `2` round-trips as `2`, not `2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_rate: Option<Number>,
    /// `MaxDelaySeconds`: a cap on any single wait between attempts, in seconds
    /// (1 to 31622400); `None`: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_seconds: Option<u64>,
    /// `JitterStrategy`: whether the waits are randomised; `None`: `NONE`, the
    /// computed waits exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_strategy: Option<JitterStrategy>,
}

/// Defaults from the States Language specification.
pub const DEFAULT_RETRY_INTERVAL_SECONDS: u64 = 1;
/// `MaxAttempts` when absent: three retries after the first attempt.
pub const DEFAULT_RETRY_MAX_ATTEMPTS: u64 = 3;
/// `BackoffRate` when absent: each wait is twice the one before.
pub const DEFAULT_RETRY_BACKOFF_RATE: f64 = 2.0;

impl Retrier {
    /// `IntervalSeconds`, or its default of 1 s when absent.
    pub fn interval(&self) -> u64 {
        self.interval_seconds
            .unwrap_or(DEFAULT_RETRY_INTERVAL_SECONDS)
    }
    /// `MaxAttempts`, or its default of 3 retries when absent.
    pub fn attempts(&self) -> u64 {
        self.max_attempts.unwrap_or(DEFAULT_RETRY_MAX_ATTEMPTS)
    }
    /// `BackoffRate` as a float, or its default of 2.0 when absent.
    pub fn backoff(&self) -> f64 {
        self.backoff_rate
            .as_ref()
            .and_then(Number::as_f64)
            .unwrap_or(DEFAULT_RETRY_BACKOFF_RATE)
    }
}

/// `JitterStrategy` of a retrier: whether the waits are randomised, so that
/// many failed executions do not retry in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JitterStrategy {
    /// `"FULL"`: each wait is a random time between 0 and the computed
    /// interval.
    Full,
    /// `"NONE"` (the default): each wait is the computed interval.
    None,
}

/// One entry of `Catch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Catcher {
    /// `Comment`: a human-readable description of the catcher; no effect on the
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `ErrorEquals`: the error names this catcher handles (at least one);
    /// `States.ALL` matches any error but `States.Runtime`, and must be alone,
    /// in the last catcher.
    pub error_equals: Vec<String>,
    /// `ResultPath`: where the error output (`{"Error", "Cause"}`) goes in the
    /// state's input. `None`: absent, so `$` (it replaces the input);
    /// `Some(Null)`: the input passes on unchanged.
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    /// `Next`: the state to go to when this catcher matches.
    pub next: String,
}

/// A top-level Choice rule: a condition plus where to go when it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceRule {
    /// What the rule tests: a comparison, or `And`/`Or`/`Not` of nested rules.
    pub condition: Condition,
    /// Required on top-level rules, absent inside And/Or/Not.
    pub next: Option<String>,
    /// `Comment`: a human-readable description of the rule; no effect on the
    /// run.
    pub comment: Option<String>,
}

/// A Boolean expression of a Choice rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `And`: every nested rule holds (tested in order, stopping at the first
    /// that does not); at least one.
    And(Vec<ChoiceRule>),
    /// `Or`: some nested rule holds (tested in order, stopping at the first
    /// that does); at least one.
    Or(Vec<ChoiceRule>),
    /// `Not`: the nested rule does not hold.
    Not(Box<ChoiceRule>),
    /// A comparison, such as `{"Variable": "$.n", "NumericLessThan": 3}`.
    Compare {
        /// `Variable`: the path of the value tested; any operator but
        /// `IsPresent` fails the state (`States.Runtime`) when it selects
        /// nothing.
        variable: String,
        /// The operator, without its `Path` suffix (which `operand` records).
        op: Comparison,
        /// What the value is compared with.
        operand: Operand,
    },
}

/// The right-hand side of a comparison: a literal, or a path (the `...Path`
/// form of the operator) into the state's input.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A literal of the operator's JSON type (see
    /// [`Comparison::literal_kind`]): `"NumericEquals": 3`.
    Literal(Value),
    /// The value at this path, in the input or the context object:
    /// `"NumericEqualsPath": "$.limit"`.
    Path(String),
}

/// The comparison operators of Choice rules, without their `Path` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// The string equals the operand.
    StringEquals,
    /// The string sorts before the operand (by UTF-16 code units, as Step
    /// Functions compares).
    StringLessThan,
    /// The string sorts after the operand.
    StringGreaterThan,
    /// The string sorts before the operand or equals it.
    StringLessThanEquals,
    /// The string sorts after the operand or equals it.
    StringGreaterThanEquals,
    /// The string matches a pattern in which `*` is any run of characters and
    /// `\*` a literal star; no `Path` form.
    StringMatches,
    /// The number equals the operand.
    NumericEquals,
    /// The number is less than the operand.
    NumericLessThan,
    /// The number is greater than the operand.
    NumericGreaterThan,
    /// The number is less than or equal to the operand.
    NumericLessThanEquals,
    /// The number is greater than or equal to the operand.
    NumericGreaterThanEquals,
    /// The Boolean equals the operand.
    BooleanEquals,
    /// The RFC 3339 timestamp is the same instant as the operand.
    TimestampEquals,
    /// The timestamp is earlier than the operand.
    TimestampLessThan,
    /// The timestamp is later than the operand.
    TimestampGreaterThan,
    /// The timestamp is earlier than the operand or the same instant.
    TimestampLessThanEquals,
    /// The timestamp is later than the operand or the same instant.
    TimestampGreaterThanEquals,
    /// With `true`, the value is JSON `null`; with `false`, it is not. No
    /// `Path` form.
    IsNull,
    /// With `true`, the `Variable` path selects something; with `false`, it
    /// selects nothing. No `Path` form.
    IsPresent,
    /// With `true`, the value is a JSON number; with `false`, it is not. No
    /// `Path` form.
    IsNumeric,
    /// With `true`, the value is a JSON string; with `false`, it is not. No
    /// `Path` form.
    IsString,
    /// With `true`, the value is a JSON Boolean; with `false`, it is not. No
    /// `Path` form.
    IsBoolean,
    /// With `true`, the value is a string holding an RFC 3339 timestamp; with
    /// `false`, it is not. No `Path` form.
    IsTimestamp,
}

impl Comparison {
    /// Every operator, in declaration order.
    pub const ALL: [Comparison; 23] = [
        Comparison::StringEquals,
        Comparison::StringLessThan,
        Comparison::StringGreaterThan,
        Comparison::StringLessThanEquals,
        Comparison::StringGreaterThanEquals,
        Comparison::StringMatches,
        Comparison::NumericEquals,
        Comparison::NumericLessThan,
        Comparison::NumericGreaterThan,
        Comparison::NumericLessThanEquals,
        Comparison::NumericGreaterThanEquals,
        Comparison::BooleanEquals,
        Comparison::TimestampEquals,
        Comparison::TimestampLessThan,
        Comparison::TimestampGreaterThan,
        Comparison::TimestampLessThanEquals,
        Comparison::TimestampGreaterThanEquals,
        Comparison::IsNull,
        Comparison::IsPresent,
        Comparison::IsNumeric,
        Comparison::IsString,
        Comparison::IsBoolean,
        Comparison::IsTimestamp,
    ];

    /// The operator's key in a rule, without the `Path` suffix.
    pub fn name(self) -> &'static str {
        match self {
            Comparison::StringEquals => "StringEquals",
            Comparison::StringLessThan => "StringLessThan",
            Comparison::StringGreaterThan => "StringGreaterThan",
            Comparison::StringLessThanEquals => "StringLessThanEquals",
            Comparison::StringGreaterThanEquals => "StringGreaterThanEquals",
            Comparison::StringMatches => "StringMatches",
            Comparison::NumericEquals => "NumericEquals",
            Comparison::NumericLessThan => "NumericLessThan",
            Comparison::NumericGreaterThan => "NumericGreaterThan",
            Comparison::NumericLessThanEquals => "NumericLessThanEquals",
            Comparison::NumericGreaterThanEquals => "NumericGreaterThanEquals",
            Comparison::BooleanEquals => "BooleanEquals",
            Comparison::TimestampEquals => "TimestampEquals",
            Comparison::TimestampLessThan => "TimestampLessThan",
            Comparison::TimestampGreaterThan => "TimestampGreaterThan",
            Comparison::TimestampLessThanEquals => "TimestampLessThanEquals",
            Comparison::TimestampGreaterThanEquals => "TimestampGreaterThanEquals",
            Comparison::IsNull => "IsNull",
            Comparison::IsPresent => "IsPresent",
            Comparison::IsNumeric => "IsNumeric",
            Comparison::IsString => "IsString",
            Comparison::IsBoolean => "IsBoolean",
            Comparison::IsTimestamp => "IsTimestamp",
        }
    }

    /// Whether the operator has a `...Path` form (the type tests and
    /// StringMatches do not).
    pub fn has_path_form(self) -> bool {
        !matches!(
            self,
            Comparison::StringMatches
                | Comparison::IsNull
                | Comparison::IsPresent
                | Comparison::IsNumeric
                | Comparison::IsString
                | Comparison::IsBoolean
                | Comparison::IsTimestamp
        )
    }

    /// The JSON type a literal operand must have.
    pub fn literal_kind(self) -> LiteralKind {
        match self {
            Comparison::StringEquals
            | Comparison::StringLessThan
            | Comparison::StringGreaterThan
            | Comparison::StringLessThanEquals
            | Comparison::StringGreaterThanEquals
            | Comparison::StringMatches
            | Comparison::TimestampEquals
            | Comparison::TimestampLessThan
            | Comparison::TimestampGreaterThan
            | Comparison::TimestampLessThanEquals
            | Comparison::TimestampGreaterThanEquals => LiteralKind::String,
            Comparison::NumericEquals
            | Comparison::NumericLessThan
            | Comparison::NumericGreaterThan
            | Comparison::NumericLessThanEquals
            | Comparison::NumericGreaterThanEquals => LiteralKind::Number,
            _ => LiteralKind::Boolean,
        }
    }

    /// Parses an operator key such as `NumericLessThanPath`.
    pub fn from_key(key: &str) -> Option<(Comparison, bool)> {
        Comparison::ALL.iter().find_map(|c| {
            if key == c.name() {
                Some((*c, false))
            } else if c.has_path_form() && key.strip_suffix("Path") == Some(c.name()) {
                Some((*c, true))
            } else {
                None
            }
        })
    }
}

/// The JSON type of a comparison's literal operand (see
/// [`Comparison::literal_kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralKind {
    /// A string: the String and Timestamp operators.
    String,
    /// A number: the Numeric operators.
    Number,
    /// A Boolean: `BooleanEquals` and the type tests (`IsNull`, `IsPresent`,
    /// ...).
    Boolean,
}

impl Serialize for ChoiceRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ChoiceRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        ChoiceRule::from_value(&v).map_err(serde::de::Error::custom)
    }
}

impl ChoiceRule {
    fn to_value(&self) -> Value {
        let mut m = Map::new();
        match &self.condition {
            Condition::Compare {
                variable,
                op,
                operand,
            } => {
                m.insert("Variable".into(), Value::String(variable.clone()));
                match operand {
                    Operand::Literal(v) => {
                        m.insert(op.name().into(), v.clone());
                    }
                    Operand::Path(p) => {
                        m.insert(format!("{}Path", op.name()), Value::String(p.clone()));
                    }
                }
            }
            Condition::And(rules) => {
                m.insert(
                    "And".into(),
                    Value::Array(rules.iter().map(ChoiceRule::to_value).collect()),
                );
            }
            Condition::Or(rules) => {
                m.insert(
                    "Or".into(),
                    Value::Array(rules.iter().map(ChoiceRule::to_value).collect()),
                );
            }
            Condition::Not(rule) => {
                m.insert("Not".into(), rule.to_value());
            }
        }
        if let Some(c) = &self.comment {
            m.insert("Comment".into(), Value::String(c.clone()));
        }
        if let Some(n) = &self.next {
            m.insert("Next".into(), Value::String(n.clone()));
        }
        Value::Object(m)
    }

    /// Parses one rule. Errors name the offending key; the operand's JSON
    /// type is checked here so that a rule that parses is well-formed.
    pub fn from_value(v: &Value) -> Result<ChoiceRule, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("a Choice rule must be an object, found {}", kind_of(v)))?;
        let mut variable = None;
        let mut next = None;
        let mut comment = None;
        let mut found: Vec<Condition> = Vec::new();
        let mut compare: Option<(Comparison, Operand)> = None;
        for (key, val) in obj {
            match key.as_str() {
                "Variable" => variable = Some(string_field(key, val)?),
                "Next" => next = Some(string_field(key, val)?),
                "Comment" => comment = Some(string_field(key, val)?),
                "And" | "Or" => {
                    let items = val
                        .as_array()
                        .ok_or_else(|| format!("\"{key}\" must be an array of rules"))?;
                    if items.is_empty() {
                        return Err(format!("\"{key}\" must hold at least one rule"));
                    }
                    let rules = items
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            ChoiceRule::from_value(r).map_err(|e| format!("{key}[{i}]: {e}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    found.push(if key == "And" {
                        Condition::And(rules)
                    } else {
                        Condition::Or(rules)
                    });
                }
                "Not" => {
                    let rule = ChoiceRule::from_value(val).map_err(|e| format!("Not: {e}"))?;
                    found.push(Condition::Not(Box::new(rule)));
                }
                other => {
                    let (op, is_path) = Comparison::from_key(other)
                        .ok_or_else(|| format!("unknown field \"{other}\" in a Choice rule"))?;
                    if compare.is_some() {
                        return Err(format!(
                            "a Choice rule holds one comparison; \"{other}\" is a second one"
                        ));
                    }
                    let operand = if is_path {
                        Operand::Path(string_field(other, val)?)
                    } else {
                        let ok = match op.literal_kind() {
                            LiteralKind::String => val.is_string(),
                            LiteralKind::Number => val.is_number(),
                            LiteralKind::Boolean => val.is_boolean(),
                        };
                        if !ok {
                            return Err(format!(
                                "\"{other}\" must be a {}, found {}",
                                match op.literal_kind() {
                                    LiteralKind::String => "string",
                                    LiteralKind::Number => "number",
                                    LiteralKind::Boolean => "boolean",
                                },
                                kind_of(val)
                            ));
                        }
                        Operand::Literal(val.clone())
                    };
                    compare = Some((op, operand));
                }
            }
        }
        let condition = match (compare, variable, found.len()) {
            (Some((op, operand)), Some(variable), 0) => Condition::Compare {
                variable,
                op,
                operand,
            },
            (Some((op, _)), None, _) => {
                return Err(format!("\"{}\" needs a \"Variable\"", op.name()))
            }
            (None, Some(_), 0) => {
                return Err("\"Variable\" is given but no comparison operator".to_string())
            }
            (None, None, 1) => found.remove(0),
            (None, None, 0) => {
                return Err(
                    "a Choice rule needs a comparison (with \"Variable\") or And/Or/Not"
                        .to_string(),
                )
            }
            _ => {
                return Err(
                    "a Choice rule holds exactly one of: a comparison, And, Or, Not".to_string(),
                )
            }
        };
        Ok(ChoiceRule {
            condition,
            next,
            comment,
        })
    }
}

fn string_field(key: &str, v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("\"{key}\" must be a string, found {}", kind_of(v)))
}

/// The JSON type of a value, for error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl StateMachine {
    /// Parses a definition from JSON text (first error only; use
    /// [`crate::validate`] to get every problem with its location).
    pub fn from_json(text: &str) -> Result<StateMachine, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Every state, in nested branches and Map processors too, with its
    /// path (`Outer/branch 0/Inner`) for messages; a state comes before
    /// the states nested in it.
    pub fn all_states(&self) -> Vec<(String, &State)> {
        fn walk<'a>(
            prefix: &str,
            states: &'a IndexMap<String, State>,
            out: &mut Vec<(String, &'a State)>,
        ) {
            for (name, state) in states {
                let here = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                out.push((here.clone(), state));
                match state {
                    State::Parallel(p) => {
                        for (i, b) in p.branches.iter().enumerate() {
                            walk(&format!("{here}/branch {i}"), &b.states, out);
                        }
                    }
                    State::Map(m) => {
                        if let Some((_, _, states)) = m.processor() {
                            walk(&here, states, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.states, &mut out);
        out
    }

    /// Every Task state (see [`StateMachine::all_states`]).
    pub fn tasks(&self) -> Vec<(String, &TaskState)> {
        self.all_states()
            .into_iter()
            .filter_map(|(path, s)| match s {
                State::Task(t) => Some((path, t)),
                _ => None,
            })
            .collect()
    }

    /// Pretty JSON, the form written to files and shown to users.
    pub fn to_json_pretty(&self) -> String {
        // Serialising plain data to a String cannot fail: every map key is a
        // string and no custom Serialize here returns an error.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
