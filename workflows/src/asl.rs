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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_language: Option<QueryLanguage>,
    pub start_at: String,
    pub states: IndexMap<String, State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `QueryLanguage`: firebreak runs JSONPath definitions only; `JSONata` is
/// parsed so the validator can name it instead of failing on an unknown
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryLanguage {
    #[serde(rename = "JSONPath")]
    JsonPath,
    #[serde(rename = "JSONata")]
    Jsonata,
}

/// A nested graph: a Parallel branch or a legacy Map `Iterator`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Branch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub start_at: String,
    pub states: IndexMap<String, State>,
}

/// The graph a Map state runs for each item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ItemProcessor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_config: Option<ProcessorConfig>,
    pub start_at: String,
    pub states: IndexMap<String, State>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProcessorConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProcessorMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_type: Option<ExecutionType>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProcessorMode {
    Inline,
    Distributed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExecutionType {
    Standard,
    Express,
}

/// One state, tagged by its `Type`.
// A definition holds each state once, in a map; boxing the larger variants
// would buy nothing measurable and make every match noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum State {
    Task(TaskState),
    Pass(PassState),
    Choice(ChoiceState),
    Wait(WaitState),
    Succeed(SucceedState),
    Fail(FailState),
    Parallel(ParallelState),
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

    pub fn retry(&self) -> &[Retrier] {
        let r = match self {
            State::Task(s) => &s.retry,
            State::Parallel(s) => &s.retry,
            State::Map(s) => &s.retry,
            _ => return &[],
        };
        r.as_deref().unwrap_or(&[])
    }

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
    Null,
    Path(String),
}

impl NullablePath {
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TaskState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Value>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_selector: Option<Value>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds_path: Option<String>,
    /// `None` when absent; `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Vec<Retrier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<Vec<Catcher>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PassState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// `Result` may legitimately be `null`; keep it apart from absent.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Value>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

fn present_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ChoiceState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct WaitState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SucceedState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FailState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ParallelState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub branches: Vec<Branch>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_selector: Option<Value>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    /// `None` when absent; `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Vec<Retrier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<Vec<Catcher>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MapState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_processor: Option<ItemProcessor>,
    /// Legacy form of `ItemProcessor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterator: Option<Branch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_reader: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_batcher: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_writer: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_count_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percentage: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percentage_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_path: Option<NullablePath>,
    /// Legacy form of `ItemSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_selector: Option<Value>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_path: Option<NullablePath>,
    /// `None` when absent; `Some(vec![])` keeps an explicit `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Vec<Retrier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<Vec<Catcher>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub error_equals: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    /// Kept as a JSON number so `2` round-trips as `2`, not `2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_rate: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_strategy: Option<JitterStrategy>,
}

/// Defaults from the States Language specification.
pub const DEFAULT_RETRY_INTERVAL_SECONDS: u64 = 1;
pub const DEFAULT_RETRY_MAX_ATTEMPTS: u64 = 3;
pub const DEFAULT_RETRY_BACKOFF_RATE: f64 = 2.0;

impl Retrier {
    pub fn interval(&self) -> u64 {
        self.interval_seconds
            .unwrap_or(DEFAULT_RETRY_INTERVAL_SECONDS)
    }
    pub fn attempts(&self) -> u64 {
        self.max_attempts.unwrap_or(DEFAULT_RETRY_MAX_ATTEMPTS)
    }
    pub fn backoff(&self) -> f64 {
        self.backoff_rate
            .as_ref()
            .and_then(Number::as_f64)
            .unwrap_or(DEFAULT_RETRY_BACKOFF_RATE)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JitterStrategy {
    Full,
    None,
}

/// One entry of `Catch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Catcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub error_equals: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub result_path: Option<NullablePath>,
    pub next: String,
}

/// A top-level Choice rule: a condition plus where to go when it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceRule {
    pub condition: Condition,
    /// Required on top-level rules, absent inside And/Or/Not.
    pub next: Option<String>,
    pub comment: Option<String>,
}

/// A Boolean expression of a Choice rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    And(Vec<ChoiceRule>),
    Or(Vec<ChoiceRule>),
    Not(Box<ChoiceRule>),
    Compare {
        variable: String,
        op: Comparison,
        operand: Operand,
    },
}

/// The right-hand side of a comparison: a literal, or a path (the `...Path`
/// form of the operator) into the state's input.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Literal(Value),
    Path(String),
}

/// The comparison operators of Choice rules, without their `Path` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Comparison {
    StringEquals,
    StringLessThan,
    StringGreaterThan,
    StringLessThanEquals,
    StringGreaterThanEquals,
    StringMatches,
    NumericEquals,
    NumericLessThan,
    NumericGreaterThan,
    NumericLessThanEquals,
    NumericGreaterThanEquals,
    BooleanEquals,
    TimestampEquals,
    TimestampLessThan,
    TimestampGreaterThan,
    TimestampLessThanEquals,
    TimestampGreaterThanEquals,
    IsNull,
    IsPresent,
    IsNumeric,
    IsString,
    IsBoolean,
    IsTimestamp,
}

impl Comparison {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralKind {
    String,
    Number,
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
