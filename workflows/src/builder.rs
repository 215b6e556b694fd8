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
    /// The playbook's name (`ec2-contain`), carried to the compiled playbook
    /// and named in compile errors.
    pub name: String,
    /// A one-line description, written as the definition's top-level `Comment`.
    pub comment: String,
    /// JSON Schema of the execution input (the case file as it starts).
    pub input_schema: Value,
    /// The nodes, run in order; the first one is the `StartAt` state.
    pub chain: Chain,
    /// Upper bound on the whole execution (`TimeoutSeconds`).
    pub timeout_seconds: Option<u64>,
    /// Where the execution input says which AWS account the steps act in
    /// (`$.case.account_id`): every task passes it to its step.
    pub account_from: Option<String>,
}

impl Workflow {
    /// A workflow named `name` whose execution input has type `I` (its JSON
    /// Schema types the paths the compiler checks), with no nodes and no
    /// timeout yet.
    pub fn new<I: JsonSchema>(name: &str, comment: &str) -> Workflow {
        Workflow {
            name: name.to_string(),
            comment: comment.to_string(),
            input_schema: schemars::schema_for!(I).to_value(),
            chain: Chain::new(),
            timeout_seconds: None,
            account_from: None,
        }
    }

    /// Every task passes the account at `path` (a string in the execution
    /// input) to its step, which acts in that account: a case in a member
    /// account is contained through that account's role.
    pub fn acting_in(mut self, path: &str) -> Workflow {
        self.account_from = Some(path.to_string());
        self
    }

    /// Sets the nodes to run, replacing any set before.
    pub fn chain(mut self, chain: Chain) -> Workflow {
        self.chain = chain;
        self
    }

    /// Bounds the whole execution to `seconds` (`TimeoutSeconds`; 1 to
    /// 99999999, checked when compiling).
    pub fn timeout_seconds(mut self, seconds: u64) -> Workflow {
        self.timeout_seconds = Some(seconds);
        self
    }
}

/// A sequence of nodes; each runs after the previous one.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    /// The nodes in running order; after the last one the chain goes on with
    /// whatever follows it (at the top level, the execution ends).
    pub nodes: Vec<Node>,
    /// Mistakes made while building (reported by the compiler with the
    /// others, rather than panicking in a builder call).
    pub build_errors: Vec<String>,
}

impl Chain {
    /// An empty chain.
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

    /// True when the chain has no nodes (recorded build errors do not count).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// One element of a chain: a state, or a poll loop that compiles into several.
#[derive(Clone, Debug)]
pub enum Node {
    /// A step, run by a Task state ([`task`]).
    Task(TaskNode),
    /// A Pass state ([`pass`]).
    Pass(PassNode),
    /// A Wait state ([`wait`]).
    Wait(WaitNode),
    /// A Choice state and the chains of its branches ([`choice`]).
    Choice(ChoiceNode),
    /// A Parallel state ([`parallel`]).
    Parallel(ParallelNode),
    /// A Map state ([`map`]).
    Map(MapNode),
    /// A bounded poll loop: a Pass, the check Task, a Choice, a Wait and more
    /// ([`poll`]).
    Poll(PollNode),
    /// A Succeed state ([`succeed`]); nothing may follow it in its chain.
    Succeed(SucceedNode),
    /// A Fail state ([`fail`], [`fail_with_recorded`]); nothing may follow it
    /// in its chain.
    Fail(FailNode),
}

impl Node {
    /// The node's state name (for a poll loop, the name of its entry state).
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

    /// True for Succeed and Fail, after which nothing runs in the chain.
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
    Handle {
        /// Where the failure is recorded: `$.failures.<key>`.
        key: String,
        /// The chain run after recording it; empty to go straight on with the
        /// next node.
        handler: Chain,
    },
}

impl OnFailure {
    /// Records the failure at `$.failures.<key>` and goes on with the next
    /// node, with no handler.
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
    /// `ErrorEquals`: the error names retried.
    pub errors: Vec<ErrorName>,
    /// `IntervalSeconds`: the wait before the first retry, in seconds.
    pub interval_seconds: u64,
    /// `MaxAttempts`: the most retries after the first attempt; 0 never
    /// retries.
    pub max_attempts: u64,
    /// `BackoffRate`: what each wait is multiplied by for the next one (at
    /// least 1.0).
    pub backoff_rate: f64,
    /// `MaxDelaySeconds`: a cap on any single wait, in seconds; `None`: no cap.
    pub max_delay_seconds: Option<u64>,
    /// `JitterStrategy`: `Some(Full)` randomises the waits; `None` leaves the
    /// field out (AWS then uses `NONE`).
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
    /// Retries `errors` with the States Language defaults: a first wait of
    /// 1 s, 3 retries, backoff 2.0, no cap, no jitter.
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

    /// Sets the wait before the first retry, in seconds (`IntervalSeconds`; 0
    /// is refused when compiling).
    pub fn interval(mut self, seconds: u64) -> Self {
        self.interval_seconds = seconds;
        self
    }
    /// Sets how many retries may follow the first attempt (`MaxAttempts`; 0
    /// turns the rule off).
    pub fn max_attempts(mut self, n: u64) -> Self {
        self.max_attempts = n;
        self
    }
    /// Sets what each wait is multiplied by (`BackoffRate`; below 1.0 is
    /// refused when compiling).
    pub fn backoff(mut self, rate: f64) -> Self {
        self.backoff_rate = rate;
        self
    }
    /// Caps every wait at `seconds` (`MaxDelaySeconds`; 1 to 31622400, checked
    /// when compiling).
    pub fn max_delay(mut self, seconds: u64) -> Self {
        self.max_delay_seconds = Some(seconds);
        self
    }
    /// Picks each wait at random between 0 and its computed value
    /// (`JitterStrategy: FULL`).
    pub fn jitter_full(mut self) -> Self {
        self.jitter = Some(JitterStrategy::Full);
        self
    }
}

/// Runs one firebreak step.
#[derive(Clone, Debug)]
pub struct TaskNode {
    /// The state name: unique in the workflow, 1 to 80 characters (checked when
    /// compiling).
    pub name: String,
    /// `Comment` of the state; `None`: the step's name and summary.
    pub comment: Option<String>,
    /// The step run, with the schemas of its input and output (from [`task`]'s
    /// type parameter).
    pub step: StepInfo,
    /// Input fields, in the order given.
    pub bindings: Vec<(String, Binding)>,
    /// Or the whole input from one path.
    pub input_from: Option<String>,
    /// Key of the case file the output is written to; `None` discards it.
    pub result_at: Option<String>,
    /// Retry rules, tried in order; [`task`] starts with
    /// [`RetryPolicy::transient`], and [`TaskNode::in_container`] clears them.
    pub retry: Vec<RetryPolicy>,
    /// What happens once retries are exhausted; [`OnFailure::Propagate`] by
    /// default.
    pub on_failure: OnFailure,
    /// `TimeoutSeconds` of each attempt; [`DEFAULT_TASK_TIMEOUT_SECONDS`] by
    /// default, [`CONTAINER_TASK_TIMEOUT_SECONDS`] in a container; `None`: no
    /// limit.
    pub timeout_seconds: Option<u64>,
    /// `HeartbeatSeconds`; `None` (the default): no heartbeat is required.
    pub heartbeat_seconds: Option<u64>,
    /// Where the step runs: [`Runner::Lambda`] by default.
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
    /// The step-runner Lambda, invoked with the task token
    /// (`lambda:invoke.waitForTaskToken`): the step asks for an answer and
    /// returns at once; the state's result is the answer given to the
    /// token, and a refusal (`SendTaskFailure`) is its failure.
    Callback,
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
    /// Sets the state's `Comment` (instead of the step's name and summary).
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
    /// Sets the timeout of each attempt, in seconds (`TimeoutSeconds`; 1 to
    /// 99999999, checked when compiling).
    pub fn timeout_seconds(mut self, s: u64) -> Self {
        self.timeout_seconds = Some(s);
        self
    }
    /// Sets `HeartbeatSeconds`: the longest an attempt may go without a
    /// heartbeat; it must be below the timeout (checked when compiling).
    pub fn heartbeat_seconds(mut self, s: u64) -> Self {
        self.heartbeat_seconds = Some(s);
        self
    }
    /// Waits for an answer to the task's token after the step ran
    /// ([`Runner::Callback`]): the step takes the token in its input field
    /// `task_token`, which the compiler binds to `$$.Task.Token`. Not
    /// retried (a second request would ask twice); `timeout` bounds the wait.
    pub fn wait_for_token(mut self, timeout_seconds: u64) -> Self {
        self.runner = Runner::Callback;
        self.timeout_seconds = Some(timeout_seconds);
        self.retry = Vec::new();
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
    /// The state name: unique in the workflow, 1 to 80 characters (checked when
    /// compiling).
    pub name: String,
    /// `Comment` of the state.
    pub comment: Option<String>,
    /// `Result`: a fixed value that is the state's result (at run time it wins
    /// over `parameters`).
    pub result: Option<Value>,
    /// `Parameters`: a template over the case file whose output is the result
    /// when there is no `result`; its `.$` paths are checked when compiling.
    pub parameters: Option<Value>,
    /// Key of the case file the result is written to (`ResultPath: $.<key>`);
    /// `None` discards it (`ResultPath: null`), so the state changes nothing.
    pub result_at: Option<String>,
}

/// A Pass state named `name`; it changes nothing until given a `result` or
/// `parameters` and a `result_at`.
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
    /// Sets the state's `Comment`.
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    /// Sets the fixed result (`Result`).
    pub fn result(mut self, v: Value) -> Self {
        self.result = Some(v);
        self
    }
    /// Sets the template whose output is the result (`Parameters`).
    pub fn parameters(mut self, v: Value) -> Self {
        self.parameters = Some(v);
        self
    }
    /// Writes the result to `$.<key>` of the case file.
    pub fn result_at(mut self, key: &str) -> Self {
        self.result_at = Some(key.to_string());
        self
    }
}

/// How long a Wait node waits.
#[derive(Clone, Debug)]
pub enum WaitFor {
    /// A fixed number of seconds (`Seconds`).
    Seconds(u64),
    /// The number of seconds at a path of the case file (`SecondsPath`; checked
    /// to be a present integer when compiling).
    SecondsPath(String),
    /// Until the RFC 3339 timestamp at a path of the case file
    /// (`TimestampPath`; checked to be a present string when compiling).
    TimestampPath(String),
}

/// A Wait state: pauses, then goes on with the next node; the case file is
/// unchanged.
#[derive(Clone, Debug)]
pub struct WaitNode {
    /// The state name: unique in the workflow, 1 to 80 characters (checked when
    /// compiling).
    pub name: String,
    /// `Comment` of the state.
    pub comment: Option<String>,
    /// What to wait for.
    pub wait: WaitFor,
}

/// A Wait state named `name` that waits as `wait` says.
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
    /// The string at the path (first) equals the value (second).
    StringEquals(String, String),
    /// The number at the path equals the value.
    NumericEquals(String, f64),
    /// The number at the path is greater than or equal to the value.
    NumericGreaterThanEquals(String, f64),
    /// The number at the path is less than the value.
    NumericLessThan(String, f64),
    /// The Boolean at the path equals the value.
    BooleanEquals(String, bool),
    /// `IsPresent`: the path selects something (`true`) or nothing (`false`);
    /// the one test that may read a field that can be absent.
    IsPresent(String, bool),
    /// `IsNull`: the value at the path is `null` (`true`) or is not (`false`);
    /// the path must be present.
    IsNull(String, bool),
    /// Every condition holds; they are tested in order, so later ones may rely
    /// on what earlier ones established (present, not `null`).
    And(Vec<Cond>),
    /// At least one of the conditions holds.
    Or(Vec<Cond>),
    /// The condition does not hold.
    Not(Box<Cond>),
}

impl Cond {
    /// The string at `path` equals `v`.
    pub fn string_equals(path: &str, v: &str) -> Cond {
        Cond::StringEquals(path.into(), v.into())
    }
    /// The Boolean at `path` is `true`.
    pub fn is_true(path: &str) -> Cond {
        Cond::BooleanEquals(path.into(), true)
    }
    /// The Boolean at `path` is `false`.
    pub fn is_false(path: &str) -> Cond {
        Cond::BooleanEquals(path.into(), false)
    }
    /// `path` is present in the case file (it may still be `null`).
    pub fn present(path: &str) -> Cond {
        Cond::IsPresent(path.into(), true)
    }
    /// `path` is absent from the case file.
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
    /// The number at `path` equals `v`.
    pub fn numeric_equals(path: &str, v: f64) -> Cond {
        Cond::NumericEquals(path.into(), v)
    }
    /// The number at `path` is at least `v` (`NumericGreaterThanEquals`).
    pub fn at_least(path: &str, v: f64) -> Cond {
        Cond::NumericGreaterThanEquals(path.into(), v)
    }
    /// The number at `path` is below `v` (`NumericLessThan`).
    pub fn less_than(path: &str, v: f64) -> Cond {
        Cond::NumericLessThan(path.into(), v)
    }
    /// All of `c` hold, tested in order (see [`Cond::And`]).
    pub fn and(c: Vec<Cond>) -> Cond {
        Cond::And(c)
    }
    /// At least one of `c` holds.
    pub fn or(c: Vec<Cond>) -> Cond {
        Cond::Or(c)
    }
    /// `c` does not hold.
    #[allow(clippy::should_implement_trait)]
    pub fn not(c: Cond) -> Cond {
        Cond::Not(Box::new(c))
    }
}

/// Branches on conditions; every branch (and the default) continues with
/// the node after the Choice unless it ends.
#[derive(Clone, Debug)]
pub struct ChoiceNode {
    /// The state name: unique in the workflow, 1 to 80 characters (checked when
    /// compiling).
    pub name: String,
    /// `Comment` of the state.
    pub comment: Option<String>,
    /// The conditions with their chains, tested in order: the first that holds
    /// runs its chain (an empty chain goes straight on with the next node).
    pub branches: Vec<(Cond, Chain)>,
    /// `None`: when no condition holds, go on with the next node.
    pub otherwise: Option<Chain>,
}

/// A Choice named `name` with no branch yet: add them with [`ChoiceNode::when`]
/// (compiling refuses a Choice without one).
pub fn choice(name: &str) -> ChoiceNode {
    ChoiceNode {
        name: name.to_string(),
        comment: None,
        branches: Vec::new(),
        otherwise: None,
    }
}

impl ChoiceNode {
    /// Sets the state's `Comment`.
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    /// Adds a branch: when `cond` holds (and no earlier one did), `chain` runs;
    /// in it, the paths `cond` found present or not `null` are known to be so.
    pub fn when(mut self, cond: Cond, chain: Chain) -> Self {
        self.branches.push((cond, chain));
        self
    }
    /// Sets the chain run when no condition holds (`Default`); without it, the
    /// playbook goes on with the next node.
    pub fn otherwise(mut self, chain: Chain) -> Self {
        self.otherwise = Some(chain);
        self
    }
}

/// Runs branches at once on the same case file; their outputs (an array,
/// in branch order) go to `$.<result_at>`.
#[derive(Clone, Debug)]
pub struct ParallelNode {
    /// The state name: unique in the workflow, 1 to 80 characters (checked when
    /// compiling).
    pub name: String,
    /// `Comment` of the state.
    pub comment: Option<String>,
    /// The chains run at once, each on the whole case file; none may be empty.
    pub branches: Vec<Chain>,
    /// Key of the case file the array of branch outputs is written to; `None`
    /// discards it.
    pub result_at: Option<String>,
    /// Retry rules of the whole state (a retry runs every branch again); empty
    /// by default.
    pub retry: Vec<RetryPolicy>,
    /// What happens when a branch fails; [`OnFailure::Propagate`] by default.
    pub on_failure: OnFailure,
}

/// A Parallel state named `name` with no branch yet: add them with
/// [`ParallelNode::branch`] (compiling refuses a Parallel without one).
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
    /// Sets the state's `Comment`.
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    /// Adds a branch, run at the same time as the others; it must not be empty.
    pub fn branch(mut self, chain: Chain) -> Self {
        self.branches.push(chain);
        self
    }
    /// Writes the array of branch outputs, in branch order, to `$.<key>`.
    pub fn result_at(mut self, key: &str) -> Self {
        self.result_at = Some(key.to_string());
        self
    }
    /// When a branch fails, records the failure at `$.failures.<key>` and goes
    /// on with the next node.
    pub fn continue_on_failure(mut self, key: &str) -> Self {
        self.on_failure = OnFailure::record_and_continue(key);
        self
    }
}

/// Runs `body` for each item of the array at `items_path`.
#[derive(Clone, Debug)]
pub struct MapNode {
    /// The state name: unique in the workflow, 1 to 80 characters (checked when
    /// compiling).
    pub name: String,
    /// `Comment` of the state.
    pub comment: Option<String>,
    /// `ItemsPath`: the path of the array iterated over, checked to be a
    /// present array when compiling.
    pub items_path: String,
    /// Template for each item's input (`$$.Map.Item.Value` is the item).
    pub item_selector: Option<Value>,
    /// The chain run for each item, on the item itself or on what
    /// `item_selector` builds.
    pub body: Chain,
    /// `MaxConcurrency`: the most items processed at once; `None`: no limit set
    /// (AWS runs at most 40 at a time).
    pub max_concurrency: Option<u64>,
    /// Key of the case file the array of results, in item order, is written to;
    /// `None` discards it.
    pub result_at: Option<String>,
    /// What happens when an iteration fails; [`OnFailure::Propagate`] by
    /// default.
    pub on_failure: OnFailure,
}

/// An Inline Map named `name` that runs `body` for each item of the array at
/// `items_path`.
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
    /// Sets the state's `Comment`.
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    /// Sets the template that builds each item's input (`ItemSelector`):
    /// `$$.Map.Item.Value` is the item, `$$.Map.Item.Index` its position.
    pub fn item_selector(mut self, v: Value) -> Self {
        self.item_selector = Some(v);
        self
    }
    /// Processes at most `n` items at once (`MaxConcurrency`; 0 means no
    /// limit).
    pub fn max_concurrency(mut self, n: u64) -> Self {
        self.max_concurrency = Some(n);
        self
    }
    /// Writes the array of results, in item order, to `$.<key>`.
    pub fn result_at(mut self, key: &str) -> Self {
        self.result_at = Some(key.to_string());
        self
    }
    /// When an iteration fails, records the failure at `$.failures.<key>` and
    /// goes on with the next node.
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
    /// The name of the loop's entry state; its other states are named after it
    /// (`<name> done?`, `<name> wait`, `<name> count`, `<name> gave up`).
    pub name: String,
    /// `Comment` of the entry state; `None`: a sentence saying what is polled,
    /// how often and how many times.
    pub comment: Option<String>,
    /// The task run on each attempt; it needs a `result_at` (where `done` reads
    /// its result), and its `on_failure` also handles giving up.
    pub check: TaskNode,
    /// Once this holds after a check, the loop ends and the playbook goes on.
    pub done: Cond,
    /// Seconds waited between two checks; [`DEFAULT_POLL_INTERVAL_SECONDS`] by
    /// default.
    pub interval_seconds: u64,
    /// The most checks run before giving up (at least 1);
    /// [`DEFAULT_POLL_MAX_ATTEMPTS`] by default.
    pub max_attempts: u64,
}

/// Default poll interval: status APIs (snapshots, SSM commands) change at
/// most every few seconds, and 15 s keeps the calls per resource low.
pub const DEFAULT_POLL_INTERVAL_SECONDS: u64 = 15;
/// Default attempts: 40 x 15 s = 10 minutes before giving up.
pub const DEFAULT_POLL_MAX_ATTEMPTS: u64 = 40;

/// A poll loop named `name` that runs `check` until `done` holds, with the
/// default interval and attempts.
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
    /// Sets the `Comment` of the loop's entry state.
    pub fn comment(mut self, c: &str) -> Self {
        self.comment = Some(c.to_string());
        self
    }
    /// Waits `seconds` between two checks.
    pub fn every(mut self, seconds: u64) -> Self {
        self.interval_seconds = seconds;
        self
    }
    /// Gives up after `attempts` checks (0 is refused when compiling).
    pub fn at_most(mut self, attempts: u64) -> Self {
        self.max_attempts = attempts;
        self
    }
}

/// A Succeed state: ends the playbook (or its branch or Map iteration)
/// successfully.
#[derive(Clone, Debug)]
pub struct SucceedNode {
    /// The state name: unique in the workflow, 1 to 80 characters (checked when
    /// compiling).
    pub name: String,
    /// `Comment` of the state.
    pub comment: Option<String>,
}

/// A Succeed state named `name`.
pub fn succeed(name: &str) -> SucceedNode {
    SucceedNode {
        name: name.to_string(),
        comment: None,
    }
}

/// A Fail state: ends the execution (or fails the enclosing Parallel or Map)
/// with an error name and a cause.
#[derive(Clone, Debug)]
pub struct FailNode {
    /// The state name: unique in the workflow, 1 to 80 characters (checked when
    /// compiling).
    pub name: String,
    /// `Comment` of the state.
    pub comment: Option<String>,
    /// `Error`: the error name reported; unused when `from_paths` is set.
    pub error: ErrorName,
    /// `Cause`: the explanation reported; unused when `from_paths` is set.
    pub cause: String,
    /// When set, the error and cause are read from these paths instead
    /// (a handler passing on the failure it caught).
    pub from_paths: Option<(String, String)>,
}

/// A Fail state named `name` that fails with `error` and `cause`.
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
