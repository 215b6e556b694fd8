//! The typed builder: playbooks are chains of steps, choices, waits,
//! parallel branches, maps and bounded poll loops, with Retry/Catch policies
//! written with the shared error names.
//!
//! The builder only records what the author asked for; the compiler
//! ([`crate::compile`]) turns it into ASL and checks every path against the
//! types of the case file.
//!
//! ```
//! use firebreak_workflows::builder::{Chain, Cond, Workflow};
//! use firebreak_workflows::builder::{pass, succeed};
//! use serde_json::json;
//!
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! struct Input { instance_id: String }
//!
//! let wf = Workflow::new::<Input>("hello", "Say hello")
//!     .chain(Chain::new()
//!         .then(pass("Greet").result(json!("hello")).result_at("greeting"))
//!         .then(succeed("Done")));
//! let compiled = firebreak_workflows::compile::compile(&wf).unwrap();
//! assert_eq!(compiled.definition.start_at, "Greet");
//! ```

use schemars::JsonSchema;
use serde_json::Value;

use crate::asl::JitterStrategy;
use crate::error_name::ErrorName;
use crate::step::{StepDef, StepInfo};

/// A whole playbook before compilation.
#[derive(Clone, Debug)]
pub struct Workflow {
    pub name: String,
    pub comment: String,
    /// JSON Schema of the execution input (the case file as it starts).
    pub input_schema: Value,
    pub chain: Chain,
    /// Upper bound on the whole execution (`TimeoutSeconds`).
    pub timeout_seconds: Option<u64>,
}

impl Workflow {
    pub fn new<I: JsonSchema>(name: &str, comment: &str) -> Workflow {
        Workflow {
            name: name.to_string(),
            comment: comment.to_string(),
            input_schema: schemars::schema_for!(I).to_value(),
            chain: Chain::new(),
            timeout_seconds: None,
        }
    }

    pub fn chain(mut self, chain: Chain) -> Workflow {
        self.chain = chain;
        self
    }

    pub fn timeout_seconds(mut self, seconds: u64) -> Workflow {
        self.timeout_seconds = Some(seconds);
        self
    }
}

/// A sequence of nodes; each runs after the previous one.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub nodes: Vec<Node>,
    /// Mistakes made while building (reported by the compiler with the
    /// others, rather than panicking in a builder call).
    pub build_errors: Vec<String>,
}

impl Chain {
    pub fn new() -> Chain {
        Chain::default()
    }

    /// Appends a node. After a Succeed or Fail nothing can follow: the
    /// mistake is recorded and reported when compiling.
    pub fn then(mut self, node: impl Into<Node>) -> Chain {
        let node = node.into();
        if let Some(last) = self.nodes.last() {
            if last.is_terminal() {
                self.build_errors.push(format!(
                    "\"{}\" cannot follow \"{}\": nothing runs after a {} state",
                    node.name(),
                    last.name(),
                    if matches!(last, Node::Succeed(_)) {
                        "Succeed"
                    } else {
                        "Fail"
                    }
                ));
                return self;
            }
        }
        self.nodes.push(node);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[derive(Clone, Debug)]
pub enum Node {
    Task(TaskNode),
    Pass(PassNode),
    Wait(WaitNode),
    Choice(ChoiceNode),
    Parallel(ParallelNode),
    Map(MapNode),
    Poll(PollNode),
    Succeed(SucceedNode),
    Fail(FailNode),
}

impl Node {
    pub fn name(&self) -> &str {
        match self {
            Node::Task(n) => &n.name,
            Node::Pass(n) => &n.name,
            Node::Wait(n) => &n.name,
            Node::Choice(n) => &n.name,
            Node::Parallel(n) => &n.name,
            Node::Map(n) => &n.name,
            Node::Poll(n) => &n.name,
            Node::Succeed(n) => &n.name,
            Node::Fail(n) => &n.name,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Node::Succeed(_) | Node::Fail(_))
    }
}

macro_rules! into_node {
    ($($t:ident => $v:ident),*) => {$(
        impl From<$t> for Node {
            fn from(n: $t) -> Node { Node::$v(n) }
        }
    )*};
}
into_node!(TaskNode => Task, PassNode => Pass, WaitNode => Wait, ChoiceNode => Choice,
    ParallelNode => Parallel, MapNode => Map, PollNode => Poll, SucceedNode => Succeed,
    FailNode => Fail);

/// How a step's input is built from the case file.
#[derive(Clone, Debug)]
pub enum Binding {
    /// `field.$: path`.
    Path(String),
    /// A literal value.
    Literal(Value),
}

/// What happens when a task fails after its retries.
#[derive(Clone, Debug)]
pub enum OnFailure {
    /// The failure ends the execution.
    Propagate,
    /// The failure (`{"Error", "Cause"}`) is recorded at `$.failures.<key>`,
    /// the `handler` chain runs (it may be empty), and the playbook goes on
    /// with the next node unless the handler ends it. This is how a failed
    /// evidence step never prevents containment.
    Handle { key: String, handler: Chain },
}

impl OnFailure {
    pub fn record_and_continue(key: &str) -> OnFailure {
        OnFailure::Handle {
            key: key.to_string(),
            handler: Chain::new(),
        }
    }
}

/// A Retry rule expressed with error names.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub errors: Vec<ErrorName>,
    pub interval_seconds: u64,
    pub max_attempts: u64,
    pub backoff_rate: f64,
    pub max_delay_seconds: Option<u64>,
    pub jitter: Option<JitterStrategy>,
}

/// First wait before retrying a throttled or unavailable AWS call: AWS
/// SDKs start around one second.
const TRANSIENT_INTERVAL_SECONDS: u64 = 2;
/// Six retries with backoff 2 and the 30 s cap wait at most 2+4+8+16+30+30
/// = 90 s in all: long enough for API throttling to clear during an
/// incident, short enough not to stall containment.
const TRANSIENT_MAX_ATTEMPTS: u64 = 6;
const TRANSIENT_BACKOFF_RATE: f64 = 2.0;
/// No single wait longer than 30 s: an incident is time-critical.
const TRANSIENT_MAX_DELAY_SECONDS: u64 = 30;

impl RetryPolicy {
    pub fn on(errors: impl IntoIterator<Item = ErrorName>) -> RetryPolicy {
        RetryPolicy {
            errors: errors.into_iter().collect(),
            interval_seconds: 1,
            max_attempts: 3,
            backoff_rate: 2.0,
            max_delay_seconds: None,
            jitter: None,
        }
    }

    /// Throttling, 5xx and Lambda service errors: exponential backoff with
    /// full jitter (many instances contained at once must not retry in
    /// lockstep).
    pub fn transient() -> RetryPolicy {
        RetryPolicy {
            errors: ErrorName::ALL_NAMES
                .iter()
                .copied()
                .filter(|e| e.is_transient())
                .collect(),
            interval_seconds: TRANSIENT_INTERVAL_SECONDS,
            max_attempts: TRANSIENT_MAX_ATTEMPTS,
            backoff_rate: TRANSIENT_BACKOFF_RATE,
            max_delay_seconds: Some(TRANSIENT_MAX_DELAY_SECONDS),
            jitter: Some(JitterStrategy::Full),
        }
    }

    pub fn interval(mut self, seconds: u64) -> Self {
        self.interval_seconds = seconds;
        self
    }
    pub fn max_attempts(mut self, n: u64) -> Self {
        self.max_attempts = n;
        self
    }
    pub fn backoff(mut self, rate: f64) -> Self {
        self.backoff_rate = rate;
        self
    }
    pub fn max_delay(mut self, seconds: u64) -> Self {
        self.max_delay_seconds = Some(seconds);
        self
    }
    pub fn jitter_full(mut self) -> Self {
        self.jitter = Some(JitterStrategy::Full);
        self
    }
}

/// Runs one firebreak step.
#[derive(Clone, Debug)]
pub struct TaskNode {
    pub name: String,
    pub comment: Option<String>,
    pub step: StepInfo,
    /// Input fields, in the order given.
    pub bindings: Vec<(String, Binding)>,
    /// Or the whole input from one path.
    pub input_from: Option<String>,
    /// Key of the case file the output is written to; `None` discards it.
    pub result_at: Option<String>,
    pub retry: Vec<RetryPolicy>,
    pub on_failure: OnFailure,
    pub timeout_seconds: Option<u64>,
    pub heartbeat_seconds: Option<u64>,
    pub runner: Runner,
}

/// Where a task's step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The step-runner Lambda.
    Lambda,
    /// A container (ECS on Fargate, waited for with `.sync`): no 15-minute
    /// limit, room on disk. Its result is not returned to the execution;
    /// the step stores what it produces as evidence.
    Container,
}

/// A container step may run for hours (Volatility on a large image); six
/// bounds one that hangs.
pub const CONTAINER_TASK_TIMEOUT_SECONDS: u64 = 6 * 3600;

/// Default Task timeout: the longest step (release) makes a few dozen AWS
/// calls, each bounded by the SDK's timeouts; 10 minutes bounds a hung step
/// and stays under Lambda's 15-minute limit for the step-runner.
pub const DEFAULT_TASK_TIMEOUT_SECONDS: u64 = 600;

/// A task running step `S`, with the default retry on transient errors and
/// the default timeout.
pub fn task<S: StepDef>(name: &str) -> TaskNode {
    TaskNode {
        name: name.to_string(),
        comment: None,
        step: StepInfo::of::<S>(),
        bindings: Vec::new(),
        input_from: None,
        result_at: None,
        retry: vec![RetryPolicy::transient()],
        on_failure: OnFailure::Propagate,
        timeout_seconds: Some(DEFAULT_TASK_TIMEOUT_SECONDS),
        heartbeat_seconds: None,
        runner: Runner::Lambda,
    }
}

impl TaskNode {
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    /// Input field `field` comes from `path` in the case file.
    pub fn bind(mut self, field: &str, path: &str) -> Self {
        self.bindings
            .push((field.to_string(), Binding::Path(path.to_string())));
        self
    }
    /// Input field `field` is a literal.
    pub fn set(mut self, field: &str, value: Value) -> Self {
        self.bindings
            .push((field.to_string(), Binding::Literal(value)));
        self
    }
    /// The whole input is the value at `path`.
    pub fn input_from(mut self, path: &str) -> Self {
        self.input_from = Some(path.to_string());
        self
    }
    /// The output goes to `$.<key>`.
    pub fn result_at(mut self, key: &str) -> Self {
        self.result_at = Some(key.to_string());
        self
    }
    /// Replaces the retry rules.
    pub fn retry(mut self, rules: Vec<RetryPolicy>) -> Self {
        self.retry = rules;
        self
    }
    /// After retries, record the failure under `$.failures.<key>` and go on.
    pub fn continue_on_failure(mut self, key: &str) -> Self {
        self.on_failure = OnFailure::record_and_continue(key);
        self
    }
    /// After retries, record the failure under `$.failures.<key>`, run
    /// `handler`, then go on (unless the handler ends the playbook).
    pub fn on_failure(mut self, key: &str, handler: Chain) -> Self {
        self.on_failure = OnFailure::Handle {
            key: key.to_string(),
            handler,
        };
        self
    }
    pub fn timeout_seconds(mut self, s: u64) -> Self {
        self.timeout_seconds = Some(s);
        self
    }
    pub fn heartbeat_seconds(mut self, s: u64) -> Self {
        self.heartbeat_seconds = Some(s);
        self
    }
    /// Runs the step in a container (ECS `.sync`) instead of the Lambda.
    /// Not retried: a container step is long, and the Lambda error names
    /// of the default policy never come from ECS.
    pub fn in_container(mut self) -> Self {
        self.runner = Runner::Container;
        self.timeout_seconds = Some(CONTAINER_TASK_TIMEOUT_SECONDS);
        self.retry = Vec::new();
        self
    }
}

/// A Pass state: a literal result or a parameters template, written to a
/// key of the case file.
#[derive(Clone, Debug)]
pub struct PassNode {
    pub name: String,
    pub comment: Option<String>,
    pub result: Option<Value>,
    pub parameters: Option<Value>,
    pub result_at: Option<String>,
}

pub fn pass(name: &str) -> PassNode {
    PassNode {
        name: name.to_string(),
        comment: None,
        result: None,
        parameters: None,
        result_at: None,
    }
}

impl PassNode {
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    pub fn result(mut self, v: Value) -> Self {
        self.result = Some(v);
        self
    }
    pub fn parameters(mut self, v: Value) -> Self {
        self.parameters = Some(v);
        self
    }
    pub fn result_at(mut self, key: &str) -> Self {
        self.result_at = Some(key.to_string());
        self
    }
}

#[derive(Clone, Debug)]
pub enum WaitFor {
    Seconds(u64),
    SecondsPath(String),
    TimestampPath(String),
}

#[derive(Clone, Debug)]
pub struct WaitNode {
    pub name: String,
    pub comment: Option<String>,
    pub wait: WaitFor,
}

pub fn wait(name: &str, wait: WaitFor) -> WaitNode {
    WaitNode {
        name: name.to_string(),
        comment: None,
        wait,
    }
}

/// A condition over the case file, compiled into a Choice rule.
#[derive(Clone, Debug)]
pub enum Cond {
    StringEquals(String, String),
    NumericEquals(String, f64),
    NumericGreaterThanEquals(String, f64),
    NumericLessThan(String, f64),
    BooleanEquals(String, bool),
    IsPresent(String, bool),
    IsNull(String, bool),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    pub fn string_equals(path: &str, v: &str) -> Cond {
        Cond::StringEquals(path.into(), v.into())
    }
    pub fn is_true(path: &str) -> Cond {
        Cond::BooleanEquals(path.into(), true)
    }
    pub fn is_false(path: &str) -> Cond {
        Cond::BooleanEquals(path.into(), false)
    }
    pub fn present(path: &str) -> Cond {
        Cond::IsPresent(path.into(), true)
    }
    pub fn absent(path: &str) -> Cond {
        Cond::IsPresent(path.into(), false)
    }
    /// Present and not `null`: what an optional field given a value is.
    pub fn given(path: &str) -> Cond {
        Cond::And(vec![
            Cond::IsPresent(path.into(), true),
            Cond::IsNull(path.into(), false),
        ])
    }
    pub fn numeric_equals(path: &str, v: f64) -> Cond {
        Cond::NumericEquals(path.into(), v)
    }
    pub fn at_least(path: &str, v: f64) -> Cond {
        Cond::NumericGreaterThanEquals(path.into(), v)
    }
    pub fn less_than(path: &str, v: f64) -> Cond {
        Cond::NumericLessThan(path.into(), v)
    }
    pub fn and(c: Vec<Cond>) -> Cond {
        Cond::And(c)
    }
    pub fn or(c: Vec<Cond>) -> Cond {
        Cond::Or(c)
    }
    #[allow(clippy::should_implement_trait)]
    pub fn not(c: Cond) -> Cond {
        Cond::Not(Box::new(c))
    }
}

/// Branches on conditions; every branch (and the default) continues with
/// the node after the Choice unless it ends.
#[derive(Clone, Debug)]
pub struct ChoiceNode {
    pub name: String,
    pub comment: Option<String>,
    pub branches: Vec<(Cond, Chain)>,
    /// `None`: when no condition holds, go on with the next node.
    pub otherwise: Option<Chain>,
}

pub fn choice(name: &str) -> ChoiceNode {
    ChoiceNode {
        name: name.to_string(),
        comment: None,
        branches: Vec::new(),
        otherwise: None,
    }
}

impl ChoiceNode {
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    pub fn when(mut self, cond: Cond, chain: Chain) -> Self {
        self.branches.push((cond, chain));
        self
    }
    pub fn otherwise(mut self, chain: Chain) -> Self {
        self.otherwise = Some(chain);
        self
    }
}

/// Runs branches at once on the same case file; their outputs (an array,
/// in branch order) go to `$.<result_at>`.
#[derive(Clone, Debug)]
pub struct ParallelNode {
    pub name: String,
    pub comment: Option<String>,
    pub branches: Vec<Chain>,
    pub result_at: Option<String>,
    pub retry: Vec<RetryPolicy>,
    pub on_failure: OnFailure,
}

pub fn parallel(name: &str) -> ParallelNode {
    ParallelNode {
        name: name.to_string(),
        comment: None,
        branches: Vec::new(),
        result_at: None,
        retry: Vec::new(),
        on_failure: OnFailure::Propagate,
    }
}

impl ParallelNode {
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    pub fn branch(mut self, chain: Chain) -> Self {
        self.branches.push(chain);
        self
    }
    pub fn result_at(mut self, key: &str) -> Self {
        self.result_at = Some(key.to_string());
        self
    }
    pub fn continue_on_failure(mut self, key: &str) -> Self {
        self.on_failure = OnFailure::record_and_continue(key);
        self
    }
}

/// Runs `body` for each item of the array at `items_path`.
#[derive(Clone, Debug)]
pub struct MapNode {
    pub name: String,
    pub comment: Option<String>,
    pub items_path: String,
    /// Template for each item's input (`$$.Map.Item.Value` is the item).
    pub item_selector: Option<Value>,
    pub body: Chain,
    pub max_concurrency: Option<u64>,
    pub result_at: Option<String>,
    pub on_failure: OnFailure,
}

pub fn map(name: &str, items_path: &str, body: Chain) -> MapNode {
    MapNode {
        name: name.to_string(),
        comment: None,
        items_path: items_path.to_string(),
        item_selector: None,
        body,
        max_concurrency: None,
        result_at: None,
        on_failure: OnFailure::Propagate,
    }
}

impl MapNode {
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    pub fn item_selector(mut self, v: Value) -> Self {
        self.item_selector = Some(v);
        self
    }
    pub fn max_concurrency(mut self, n: u64) -> Self {
        self.max_concurrency = Some(n);
        self
    }
    pub fn result_at(mut self, key: &str) -> Self {
        self.result_at = Some(key.to_string());
        self
    }
    pub fn continue_on_failure(mut self, key: &str) -> Self {
        self.on_failure = OnFailure::record_and_continue(key);
        self
    }
}

/// A bounded poll loop: run `check`, stop when `done` holds, otherwise wait
/// `interval_seconds` and try again, at most `max_attempts` times. When the
/// attempts run out, the error `Firebreak.WaitExhausted` is handled like a
/// failure of `check` (its `on_failure`). No loop is unbounded.
#[derive(Clone, Debug)]
pub struct PollNode {
    pub name: String,
    pub comment: Option<String>,
    pub check: TaskNode,
    pub done: Cond,
    pub interval_seconds: u64,
    pub max_attempts: u64,
}

/// Default poll interval: status APIs (snapshots, SSM commands) change at
/// most every few seconds, and 15 s keeps the calls per resource low.
pub const DEFAULT_POLL_INTERVAL_SECONDS: u64 = 15;
/// Default attempts: 40 x 15 s = 10 minutes before giving up.
pub const DEFAULT_POLL_MAX_ATTEMPTS: u64 = 40;

pub fn poll(name: &str, check: TaskNode, done: Cond) -> PollNode {
    PollNode {
        name: name.to_string(),
        comment: None,
        check,
        done,
        interval_seconds: DEFAULT_POLL_INTERVAL_SECONDS,
        max_attempts: DEFAULT_POLL_MAX_ATTEMPTS,
    }
}

impl PollNode {
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    pub fn every(mut self, seconds: u64) -> Self {
        self.interval_seconds = seconds;
        self
    }
    pub fn at_most(mut self, attempts: u64) -> Self {
        self.max_attempts = attempts;
        self
    }
}

#[derive(Clone, Debug)]
pub struct SucceedNode {
    pub name: String,
    pub comment: Option<String>,
}

pub fn succeed(name: &str) -> SucceedNode {
    SucceedNode {
        name: name.to_string(),
        comment: None,
    }
}

#[derive(Clone, Debug)]
pub struct FailNode {
    pub name: String,
    pub comment: Option<String>,
    pub error: ErrorName,
    pub cause: String,
    /// When set, the error and cause are read from these paths instead
    /// (a handler passing on the failure it caught).
    pub from_paths: Option<(String, String)>,
}

pub fn fail(name: &str, error: ErrorName, cause: &str) -> FailNode {
    FailNode {
        name: name.to_string(),
        comment: None,
        error,
        cause: cause.to_string(),
        from_paths: None,
    }
}

/// Ends the execution with the failure recorded at `$.failures.<key>`
/// (after a handler has done its work).
pub fn fail_with_recorded(name: &str, key: &str) -> FailNode {
    FailNode {
        name: name.to_string(),
        comment: None,
        error: ErrorName::StatesTaskFailed,
        cause: String::new(),
        from_paths: Some((
            format!("$.failures.{key}.Error"),
            format!("$.failures.{key}.Cause"),
        )),
    }
}
