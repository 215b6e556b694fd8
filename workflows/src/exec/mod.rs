//! The local executor: runs a compiled (or any) ASL definition in-process.
//!
//! It interprets the definition itself, not the builder, so what runs
//! locally is exactly what is deployed. Task states are handed to a
//! [`TaskHandler`] (firebreak's step registry, mocks, or anything else);
//! Parallel branches and Map items run concurrently; every transition is
//! recorded in a Step Functions-shaped [`History`]; time comes from a
//! [`Clock`] so tests and `--fast-clock` runs do not sleep.

pub mod callback;
pub mod choice;
pub mod clock;
pub mod history;
pub mod io;
pub mod journal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::asl::{Catcher, JitterStrategy, NullablePath, Retrier, State, StateMachine};
use crate::context::{LazyContext, StateContext};
use crate::error_name::ErrorName;
use crate::intrinsics::{looks_like_call, Call};
use crate::time::{format_timestamp, parse_timestamp};

pub use clock::{Clock, TokioClock};
pub use history::{History, HistoryEvent};
pub use journal::{Journal, JournalError};

use history::{
    details, entered_details, exited_details, iteration_details, not_truncated, payload,
};
use io::{apply_path, apply_result_path, apply_template, IoError};
use serde_json::value::RawValue;

/// One Task state invocation handed to a [`TaskHandler`].
#[derive(Clone, Debug)]
pub struct TaskCall {
    /// The state's `Resource`, as written.
    pub resource: String,
    /// The effective input (after InputPath and Parameters).
    pub input: Value,
    /// The Task state's name in its graph.
    pub state_name: String,
    /// 0 for the first try, then 1, 2, ... for retries.
    pub retry_count: u64,
    /// The context object as the state sees it (`$$`, through
    /// [`ContextSource::context`]), built only if the handler reads it: a
    /// copy per task would be a copy of the execution input per Map item.
    pub context: LazyContext,
    /// HeartbeatSeconds (or HeartbeatSecondsPath): a task that reports
    /// progress (a callback task's answerer) must send a heartbeat at least
    /// this often, or fail with `States.HeartbeatTimeout`.
    pub heartbeat_seconds: Option<u64>,
}

/// A failed task: the error name (matched by Retry/Catch) and its cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The error name, matched against `ErrorEquals`.
    pub error: String,
    /// A human-readable cause, if the task gave one.
    pub cause: Option<String>,
}

impl TaskFailure {
    /// A failure named `error`, with `cause`.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> TaskFailure {
        TaskFailure {
            error: error.into(),
            cause: Some(cause.into()),
        }
    }
}

/// Runs Task states.
#[async_trait]
pub trait TaskHandler: Send + Sync {
    /// Runs one attempt of a Task state: its result, or a failure for the
    /// state's Retry and Catch. The future is dropped if the state's timeout
    /// passes first.
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure>;
}

/// How an execution ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The top-level graph reached a Succeed state or a state with `End`.
    Succeeded,
    /// A Fail state, or an error that no Catch handled.
    Failed,
    /// The state machine's `TimeoutSeconds` passed first.
    TimedOut,
}

/// The result of an execution, shaped like `DescribeExecution`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// The final output; `None` unless it succeeded.
    pub output: Option<Value>,
    /// The error name: `None` when it succeeded, or failed in a Fail state
    /// without one; `States.Timeout` when it timed out.
    pub error: Option<String>,
    /// The failure's cause, if it gave one.
    pub cause: Option<String>,
}

/// Identity of an execution, for the context object and ARNs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutionConfig {
    /// The execution's name (`$$.Execution.Name`, the end of its ARN); a random
    /// UUID by default.
    pub name: String,
    /// The state machine's name in both ARNs (`firebreak-local` by default).
    pub state_machine_name: String,
    /// The AWS region in the ARNs (`us-east-1` by default).
    pub region: String,
    /// The AWS account id in the ARNs (`123456789012` by default).
    pub account: String,
    /// The execution role (`$$.Execution.RoleArn`).
    pub role_arn: String,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            name: uuid::Uuid::new_v4().to_string(),
            state_machine_name: "firebreak-local".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            role_arn: "arn:aws:iam::123456789012:role/firebreak-local".into(),
        }
    }
}

impl ExecutionConfig {
    /// The state machine's ARN (`$$.StateMachine.Id`).
    pub fn state_machine_arn(&self) -> String {
        format!(
            "arn:aws:states:{}:{}:stateMachine:{}",
            self.region, self.account, self.state_machine_name
        )
    }
    /// The execution's ARN (`$$.Execution.Id`):
    /// `arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME`.
    pub fn execution_arn(&self) -> String {
        format!(
            "arn:aws:states:{}:{}:execution:{}:{}",
            self.region, self.account, self.state_machine_name, self.name
        )
    }
}

/// An error inside a graph: `error` is `None` only for a Fail state
/// without one.
#[derive(Clone, Debug, PartialEq)]
struct Failure {
    error: Option<String>,
    cause: Option<String>,
}

impl Failure {
    fn named(error: ErrorName, cause: impl Into<String>) -> Failure {
        Failure {
            error: Some(error.as_str().to_string()),
            cause: Some(cause.into()),
        }
    }

    /// `States.Runtime` with Step Functions' preamble.
    fn runtime(state: &str, entered: u64, message: impl AsRef<str>) -> Failure {
        Failure::named(
            ErrorName::StatesRuntime,
            format!(
                "An error occurred while executing the state '{state}' (entered at the event id #{entered}). {}",
                message.as_ref()
            ),
        )
    }

    fn from_io(state: &str, entered: u64, e: &IoError) -> Failure {
        let f = Failure::runtime(state, entered, e.message());
        let name = if e.is_intrinsic() {
            ErrorName::StatesIntrinsicFailure
        } else if matches!(e, IoError::ResultPath { .. }) {
            // Any state's ResultPath, a Pass state's too (spec, Appendix A).
            ErrorName::StatesResultPathMatchFailure
        } else {
            return f;
        };
        Failure {
            error: Some(name.as_str().into()),
            cause: f.cause,
        }
    }

    fn name(&self) -> &str {
        self.error.as_deref().unwrap_or("")
    }

    fn as_error_output(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "Error".into(),
            self.error.clone().map(Value::String).unwrap_or(Value::Null),
        );
        m.insert(
            "Cause".into(),
            self.cause.clone().map(Value::String).unwrap_or(Value::Null),
        );
        Value::Object(m)
    }
}

/// Whether an `ErrorEquals` list matches an error.
fn error_matches(names: &[String], error: &str) -> bool {
    // Runtime errors and data-limit errors end the execution: no Retry or
    // Catch applies to them, even one that names them.
    if error == ErrorName::StatesRuntime.as_str()
        || error == ErrorName::StatesDataLimitExceeded.as_str()
    {
        return false;
    }
    names.iter().any(|n| {
        n == error
            || n == ErrorName::StatesAll.as_str()
            || (n == ErrorName::StatesTaskFailed.as_str()
                && error != ErrorName::StatesTimeout.as_str()
                && !error.starts_with("States."))
    })
}

/// The longest a retry waits: MaxDelaySeconds may be at most 31622400 s
/// (one year and a day), and no computed delay exceeds it.
const MAX_RETRY_DELAY_SECONDS: f64 = 31_622_400.0;

/// Step Functions ends an execution whose history reaches 25,000 events;
/// the same bound keeps a looping definition from running forever here.
pub const MAX_HISTORY_EVENTS: usize = 25_000;

/// Largest number of Map iterations run at once when MaxConcurrency is 0
/// (unlimited): Step Functions runs up to 40 inline iterations at a time.
const INLINE_MAP_CONCURRENCY: usize = 40;

/// How a state ends: go to another state, or end the graph.
enum Transition {
    Next(String),
    End,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs definitions.
#[derive(Clone)]
pub struct Executor {
    tasks: Arc<dyn TaskHandler>,
    clock: Arc<dyn Clock>,
    max_events: usize,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("clock", &self.clock)
            .finish()
    }
}

impl Executor {
    /// An executor that hands Task states to `tasks`, on a [`TokioClock`],
    /// failing an execution at [`MAX_HISTORY_EVENTS`] events.
    pub fn new(tasks: Arc<dyn TaskHandler>) -> Executor {
        Executor {
            tasks,
            clock: Arc::new(TokioClock::new()),
            max_events: MAX_HISTORY_EVENTS,
        }
    }

    /// The most history events an execution may record before it fails
    /// (Step Functions' quota for Standard workflows, 25,000, by default);
    /// 0 for no limit, as for Express workflows.
    pub fn with_max_events(mut self, n: usize) -> Executor {
        self.max_events = if n == 0 { usize::MAX } else { n };
        self
    }

    /// Takes time from `clock` instead (a paused one makes Waits and retry
    /// delays take no real time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Executor {
        self.clock = clock;
        self
    }

    /// Runs `machine` on `input`, recording into `history` (subscribe to it
    /// first for live progress).
    pub async fn run(
        &self,
        machine: &StateMachine,
        input: Value,
        config: &ExecutionConfig,
        history: &History,
    ) -> Outcome {
        let start = self.clock.now();
        self.execute(machine, input, config, history, start, None)
            .await
    }

    /// Runs like [`Executor::run`], journaling every transition to
    /// `journal` (made with [`Journal::create`] from the same definition,
    /// input and configuration) so the run can be resumed.
    pub async fn run_journaled(
        &self,
        journal: Arc<Journal>,
        start: &journal::Start,
        history: &History,
    ) -> Outcome {
        let at = parse_timestamp(&start.start_time).unwrap_or_else(|| self.clock.now());
        self.execute(
            &start.definition,
            start.input.clone(),
            &start.config,
            history,
            at,
            Some(journal),
        )
        .await
    }

    /// Resumes a journaled execution (opened with [`Journal::open`]):
    /// finished states and Task attempts are taken from the journal, not
    /// run again; a Wait or retry delay in progress waits only what is
    /// left of it. Returns the history, continued from the journal's.
    pub async fn resume(
        &self,
        journal: Arc<Journal>,
        start: &journal::Start,
    ) -> (Outcome, History) {
        let history = History::restore(journal.replay().events.clone());
        let outcome = self.resume_into(journal, start, &history).await;
        (outcome, history)
    }

    /// [`Executor::resume`] into a history the caller made with
    /// [`History::restore`] from the journal's events (so that it can
    /// watch it, and read it if it drops the run).
    pub async fn resume_into(
        &self,
        journal: Arc<Journal>,
        start: &journal::Start,
        history: &History,
    ) -> Outcome {
        if let Some(done) = &journal.replay().ended {
            return done.clone();
        }
        let at = parse_timestamp(&start.start_time).unwrap_or_else(|| self.clock.now());
        self.execute(
            &start.definition,
            start.input.clone(),
            &start.config,
            history,
            at,
            Some(journal),
        )
        .await
    }

    async fn execute(
        &self,
        machine: &StateMachine,
        input: Value,
        config: &ExecutionConfig,
        history: &History,
        start: chrono::DateTime<chrono::Utc>,
        journal: Option<Arc<Journal>>,
    ) -> Outcome {
        let context = json!({
            "Execution": {
                "Id": config.execution_arn(),
                "Input": input.clone(),
                "Name": config.name,
                "RoleArn": config.role_arn,
                "StartTime": format_timestamp(start),
                "RedriveCount": 0,
            },
            "StateMachine": {
                "Id": config.state_machine_arn(),
                "Name": config.state_machine_name,
            },
        });
        let run = Run {
            tasks: self.tasks.clone(),
            clock: self.clock.clone(),
            history: history.clone(),
            context: Arc::new(context),
            journal,
            max_events: self.max_events,
        };
        let started = run.record_keyed(
            Some("execution#started"),
            "ExecutionStarted",
            0,
            details(&json!({
                "input": payload(&input),
                "inputDetails": not_truncated(),
                "roleArn": config.role_arn,
            })),
        );
        let body = run.graph(
            &machine.start_at,
            &machine.states,
            input,
            started,
            String::new(),
        );
        let result = match machine.timeout_seconds {
            Some(t) => {
                // The deadline counts from the execution's start, also
                // when it is resumed later.
                let left = i64::try_from(t)
                    .ok()
                    .and_then(chrono::Duration::try_seconds)
                    .and_then(|d| start.checked_add_signed(d))
                    .map(|deadline| {
                        (deadline - self.clock.now())
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                    })
                    .unwrap_or(Duration::from_secs(t));
                tokio::select! {
                    biased;
                    r = body => Some(r),
                    _ = self.clock.deadline(left) => None,
                }
            }
            None => Some(body.await),
        };
        let outcome = match result {
            Some((Ok(output), last)) => {
                run.record(
                    "ExecutionSucceeded",
                    last,
                    details(&json!({"output": payload(&output), "outputDetails": not_truncated()})),
                );
                Outcome {
                    status: Status::Succeeded,
                    output: Some(output),
                    error: None,
                    cause: None,
                }
            }
            Some((Err(f), last)) => {
                let mut d = Map::new();
                if let Some(e) = &f.error {
                    d.insert("error".into(), Value::String(e.clone()));
                }
                if let Some(c) = &f.cause {
                    d.insert("cause".into(), Value::String(c.clone()));
                }
                run.record("ExecutionFailed", last, details(&d));
                Outcome {
                    status: Status::Failed,
                    output: None,
                    error: f.error,
                    cause: f.cause,
                }
            }
            None => {
                let last = history.len() as u64;
                run.record(
                    "ExecutionTimedOut",
                    last,
                    details(&json!({"error": "States.Timeout"})),
                );
                Outcome {
                    status: Status::TimedOut,
                    output: None,
                    error: Some(ErrorName::StatesTimeout.as_str().into()),
                    cause: None,
                }
            }
        };
        if let Some(j) = &run.journal {
            j.append(
                &journal::Entry::End {
                    outcome: outcome.clone(),
                },
                false,
            );
        }
        outcome
    }
}

/// One execution in progress.
struct Run {
    tasks: Arc<dyn TaskHandler>,
    clock: Arc<dyn Clock>,
    history: History,
    /// `$$` without the per-state parts.
    context: Arc<Value>,
    journal: Option<Arc<Journal>>,
    max_events: usize,
}

fn kind_prefix(state: &State) -> &'static str {
    state.type_name()
}

impl Run {
    /// `$$` for a state; `RetryCount` only where retries exist (Task,
    /// Parallel, Map): AWS gives a Pass state's context none.
    fn context_for(&self, state: &str, entered: &str, retry_count: Option<u64>) -> LazyContext {
        LazyContext::new(self.context.clone()).with_state(StateContext {
            name: state.to_string(),
            entered_time: entered.to_string(),
            retry_count,
        })
    }

    fn record(&self, kind: &str, prev: u64, details: Option<Box<RawValue>>) -> u64 {
        self.record_keyed(None, kind, prev, details)
    }

    /// Records an event, journaled; an event with a `key` that a resumed
    /// journal already holds is not recorded again (its id is returned).
    fn record_keyed(
        &self,
        key: Option<&str>,
        kind: &str,
        prev: u64,
        details: Option<Box<RawValue>>,
    ) -> u64 {
        let Some(journal) = &self.journal else {
            return self.history.record(kind, prev, self.clock.now(), details);
        };
        if let Some(id) = key.and_then(|k| journal.replay().keyed_events.get(k)) {
            return *id;
        }
        self.history
            .record_with(kind, prev, self.clock.now(), details, |event| {
                journal.append_event(event, key)
            })
    }

    /// A recorded wait (Wait state or retry delay) at `key`, or a new one
    /// of `duration`, journaled; returns what is left of it.
    fn wait_left(&self, key: &str, duration: Duration) -> Duration {
        let now = self.clock.now();
        let Some(journal) = &self.journal else {
            return duration;
        };
        if let Some(until) = journal
            .replay()
            .waits
            .get(key)
            .and_then(|u| parse_timestamp(u))
        {
            return (until - now).to_std().unwrap_or(Duration::ZERO);
        }
        let until = chrono::Duration::from_std(duration)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        journal.append(
            &journal::Entry::Wait {
                key: key.to_string(),
                until: until.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            },
            false,
        );
        duration
    }

    /// Runs one graph from `start_at`; returns its output (or failure) and
    /// the id of the last event on this path.
    fn graph<'a>(
        &'a self,
        start_at: &'a str,
        states: &'a IndexMap<String, State>,
        input: Value,
        prev: u64,
        // The journal key prefix of this graph: "" at the top level,
        // "3.a0.b1." for branch 1 of the Parallel at step 3 (attempt 0).
        scope: String,
    ) -> BoxFut<'a, (Result<Value, Failure>, u64)> {
        Box::pin(async move {
            let mut current = start_at.to_string();
            let mut input = input;
            let mut prev = prev;
            let mut step = 0u64;
            loop {
                let key = format!("{scope}{step}");
                step += 1;
                if let Some(done) = self
                    .journal
                    .as_ref()
                    .and_then(|j| j.replay().exits.get(&key))
                {
                    // Finished before the resume: take what it gave.
                    prev = done.last;
                    match &done.next {
                        Some(n) => {
                            current = n.clone();
                            input = done.output.clone();
                            continue;
                        }
                        None => return (Ok(done.output.clone()), prev),
                    }
                }
                if self.history.len() >= self.max_events {
                    return (
                        Err(Failure::named(
                            ErrorName::StatesRuntime,
                            format!(
                                "The execution reached the maximum number of history events ({}) before state '{current}'",
                                self.max_events
                            ),
                        )),
                        prev,
                    );
                }
                let Some(state) = states.get(&current) else {
                    return (
                        Err(Failure::named(
                            ErrorName::StatesRuntime,
                            format!("The state '{current}' does not exist"),
                        )),
                        prev,
                    );
                };
                let entered_at = self.clock.now();
                let entered = self.record_keyed(
                    Some(&format!("{key}#entered")),
                    &format!("{}StateEntered", kind_prefix(state)),
                    prev,
                    entered_details(&current, &input),
                );
                let entered_time = format_timestamp(entered_at);
                let (result, last) = self
                    .state(&current, state, input, entered, &entered_time, &key)
                    .await;
                prev = last;
                match result {
                    Ok((output, transition)) => {
                        if !matches!(state, State::Fail(_)) {
                            prev = self.record(
                                &format!("{}StateExited", kind_prefix(state)),
                                prev,
                                exited_details(&current, &output),
                            );
                        }
                        if let Some(j) = &self.journal {
                            let next = match &transition {
                                Transition::Next(n) => Some(n.as_str()),
                                Transition::End => None,
                            };
                            j.append_exit(&key, &output, next, prev);
                        }
                        match transition {
                            Transition::Next(n) => {
                                current = n;
                                input = output;
                            }
                            Transition::End => return (Ok(output), prev),
                        }
                    }
                    Err(f) => return (Err(f), prev),
                }
            }
        })
    }

    async fn state(
        &self,
        name: &str,
        state: &State,
        raw: Value,
        entered: u64,
        entered_time: &str,
        key: &str,
    ) -> (Result<(Value, Transition), Failure>, u64) {
        let ctx = self.context_for(name, entered_time, None);
        let transition = |next: Option<&str>| match next {
            Some(n) => Transition::Next(n.to_string()),
            None => Transition::End,
        };
        match state {
            State::Pass(p) => {
                let r = (|| {
                    let effective = apply_path("InputPath", p.input_path.as_ref(), &raw, &ctx)?;
                    let effective = match &p.parameters {
                        Some(t) => apply_template(t, &effective, &ctx)?,
                        None => effective,
                    };
                    let result = p.result.clone().unwrap_or(effective);
                    let out = apply_result_path(p.result_path.as_ref(), &raw, result)?;
                    apply_path("OutputPath", p.output_path.as_ref(), &out, &ctx)
                })();
                (
                    r.map(|o| (o, transition(p.next.as_deref())))
                        .map_err(|e| Failure::from_io(name, entered, &e)),
                    entered,
                )
            }
            State::Succeed(s) => {
                let r = apply_path("InputPath", s.input_path.as_ref(), &raw, &ctx)
                    .and_then(|v| apply_path("OutputPath", s.output_path.as_ref(), &v, &ctx));
                (
                    r.map(|o| (o, Transition::End))
                        .map_err(|e| Failure::from_io(name, entered, &e)),
                    entered,
                )
            }
            State::Fail(f) => {
                let pick = |lit: &Option<String>,
                            path: &Option<String>,
                            field: &str|
                 -> Result<Option<String>, Failure> {
                    if let Some(l) = lit {
                        return Ok(Some(l.clone()));
                    }
                    let Some(p) = path else { return Ok(None) };
                    let v = if looks_like_call(p) {
                        Call::parse(p)
                            .map_err(|e| Failure::runtime(name, entered, e.to_string()))?
                            .eval(&raw, &ctx)
                            .map_err(|e| Failure::runtime(name, entered, e.to_string()))?
                    } else {
                        io::select(field, p, &raw, &ctx).map_err(|_| {
                            Failure::runtime(
                                name,
                                entered,
                                format!(
                                    "The JSONPath '{p}' specified for the field '{field}' could not be found in the input '{}'",
                                    io::compact(&raw)
                                ),
                            )
                        })?
                    };
                    Ok(Some(match v {
                        Value::String(s) => s,
                        other => io::compact(&other),
                    }))
                };
                let r = pick(&f.error, &f.error_path, "ErrorPath").and_then(|error| {
                    let cause = pick(&f.cause, &f.cause_path, "CausePath")?;
                    Ok(Failure { error, cause })
                });
                (Err(r.unwrap_or_else(|e| e)), entered)
            }
            State::Choice(c) => {
                let effective = match apply_path("InputPath", c.input_path.as_ref(), &raw, &ctx) {
                    Ok(v) => v,
                    Err(e) => return (Err(Failure::from_io(name, entered, &e)), entered),
                };
                let next = match choice::first_match(&c.choices, &effective, &ctx) {
                    Ok(Some(n)) => n.to_string(),
                    Ok(None) => match &c.default {
                        Some(d) => d.clone(),
                        None => {
                            return (
                                Err(Failure::named(
                                    ErrorName::StatesNoChoiceMatched,
                                    format!(
                                        "An error occurred while executing the state '{name}' (entered at the event id #{entered}). Failed to transition out of the state. The state does not point to a next state."
                                    ),
                                )),
                                entered,
                            )
                        }
                    },
                    Err(e) => return (Err(Failure::runtime(name, entered, e.0)), entered),
                };
                let out = apply_path("OutputPath", c.output_path.as_ref(), &effective, &ctx);
                (
                    out.map(|o| (o, Transition::Next(next)))
                        .map_err(|e| Failure::from_io(name, entered, &e)),
                    entered,
                )
            }
            State::Wait(w) => {
                let effective = match apply_path("InputPath", w.input_path.as_ref(), &raw, &ctx) {
                    Ok(v) => v,
                    Err(e) => return (Err(Failure::from_io(name, entered, &e)), entered),
                };
                let duration = match self.wait_duration(name, entered, w, &effective, &ctx) {
                    Ok(d) => d,
                    Err(f) => return (Err(f), entered),
                };
                let left = self.wait_left(key, duration);
                self.clock.sleep(left).await;
                let out = apply_path("OutputPath", w.output_path.as_ref(), &effective, &ctx);
                (
                    out.map(|o| (o, transition(w.next.as_deref())))
                        .map_err(|e| Failure::from_io(name, entered, &e)),
                    entered,
                )
            }
            State::Task(_) | State::Parallel(_) | State::Map(_) => {
                self.with_retry_catch(name, state, raw, entered, entered_time, key)
                    .await
            }
        }
    }

    fn wait_duration(
        &self,
        name: &str,
        entered: u64,
        w: &crate::asl::WaitState,
        input: &Value,
        ctx: &LazyContext,
    ) -> Result<Duration, Failure> {
        if let Some(s) = w.seconds {
            return Ok(Duration::from_secs(s));
        }
        if let Some(p) = &w.seconds_path {
            let v = io::select("SecondsPath", p, input, ctx).map_err(|_| {
                Failure::runtime(
                    name,
                    entered,
                    format!("The SecondsPath parameter does not reference an input value: {p}"),
                )
            })?;
            return match v.as_i64() {
                Some(n) if n >= 0 => Ok(Duration::from_secs(n as u64)),
                Some(n) => Err(Failure::runtime(
                    name,
                    entered,
                    format!("The SecondsPath parameter references a negative value: {p} == {n}"),
                )),
                None => Err(Failure::runtime(
                    name,
                    entered,
                    format!(
                        "The SecondsPath parameter does not reference a valid integer value: {p} == {}",
                        io::compact(&v)
                    ),
                )),
            };
        }
        let (ts, from_path) = match (&w.timestamp, &w.timestamp_path) {
            (Some(t), _) => (t.clone(), None),
            (None, Some(p)) => {
                let v = io::select("TimestampPath", p, input, ctx).map_err(|_| {
                    Failure::runtime(
                        name,
                        entered,
                        format!(
                            "The TimestampPath parameter does not reference an input value: {p}"
                        ),
                    )
                })?;
                match v {
                    Value::String(s) => (s, Some(p.clone())),
                    other => {
                        return Err(Failure::runtime(
                            name,
                            entered,
                            format!(
                                "The TimestampPath parameter does not reference a valid ISO-8601 extended offset date-time format string: {p} == {}",
                                io::compact(&other)
                            ),
                        ))
                    }
                }
            }
            (None, None) => return Ok(Duration::ZERO),
        };
        let Some(at) = parse_timestamp(&ts) else {
            let p = from_path.unwrap_or_else(|| "Timestamp".into());
            return Err(Failure::runtime(
                name,
                entered,
                format!(
                    "The TimestampPath parameter does not reference a valid ISO-8601 extended offset date-time format string: {p} == {ts}"
                ),
            ));
        };
        let now = self.clock.now();
        Ok((at - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// Task, Parallel and Map: the body with Retry, then Catch.
    async fn with_retry_catch(
        &self,
        name: &str,
        state: &State,
        raw: Value,
        entered: u64,
        entered_time: &str,
        key: &str,
    ) -> (Result<(Value, Transition), Failure>, u64) {
        let Some(Common {
            retry: retriers,
            catch: catchers,
            result_selector,
            result_path,
            output_path,
            next,
            input_path,
            parameters,
        }) = common(state)
        else {
            return (
                Err(Failure::runtime(
                    name,
                    entered,
                    "not a Task, Parallel or Map state",
                )),
                entered,
            );
        };
        let mut counts = vec![0u64; retriers.len()];
        let mut prev = entered;
        let mut retry_count = 0u64;
        let result = loop {
            let ctx = self.context_for(name, entered_time, Some(retry_count));
            // A callback task gets a token per attempt (`$$.Task.Token`),
            // the same again when a killed run is resumed, so an answer
            // sent to the token printed before the kill still counts.
            let ctx = match state {
                State::Task(t) if t.resource.ends_with(".waitForTaskToken") => {
                    let token = task_token(&self.context, key, retry_count);
                    ctx.with_task(json!({ "Token": token }))
                }
                _ => ctx,
            };
            let attempt = async {
                let effective = apply_path("InputPath", input_path, &raw, &ctx)
                    .map_err(|e| (Failure::from_io(name, entered, &e), false))?;
                let effective = match parameters {
                    Some(t) => apply_template(t, &effective, &ctx)
                        .map_err(|e| (Failure::from_io(name, entered, &e), false))?,
                    None => effective,
                };
                Ok::<Value, (Failure, bool)>(effective)
            }
            .await;
            let (outcome, last) = match attempt {
                Err((f, _)) => (Err(f), prev),
                Ok(effective) => match state {
                    State::Task(t) => {
                        self.task_journaled(name, t, effective, &ctx, retry_count, prev, key)
                            .await
                    }
                    State::Parallel(p) => {
                        let scope = format!("{key}.a{retry_count}.");
                        self.parallel(name, p, effective, prev, &scope).await
                    }
                    State::Map(m) => {
                        let scope = format!("{key}.a{retry_count}.");
                        self.map(name, m, effective, &ctx, entered, prev, &scope)
                            .await
                    }
                    _ => (
                        Err(Failure::runtime(name, entered, "unexpected state type")),
                        prev,
                    ),
                },
            };
            prev = last;
            match outcome {
                Ok(result) => break Ok(result),
                Err(f) => {
                    let Some(i) = retriers
                        .iter()
                        .position(|r| error_matches(&r.error_equals, f.name()))
                    else {
                        break Err(f);
                    };
                    let r = &retriers[i];
                    if counts[i] >= r.attempts() {
                        break Err(f);
                    }
                    let delay =
                        self.wait_left(&format!("{key}.r{retry_count}"), retry_delay(r, counts[i]));
                    counts[i] += 1;
                    retry_count += 1;
                    self.clock.sleep(delay).await;
                }
            }
        };
        let ctx = self.context_for(name, entered_time, Some(retry_count));
        // The result's processing can fail too; a ResultPath that does not
        // fit the input is States.ResultPathMatchFailure, which Catch can
        // handle like any task error.
        let output = result.and_then(|result| {
            let selected = match result_selector {
                Some(t) => apply_template(t, &result, &ctx)
                    .map_err(|e| Failure::from_io(name, entered, &e))?,
                None => result,
            };
            let out = apply_result_path(result_path, &raw, selected).map_err(|e| {
                Failure::named(
                    ErrorName::StatesResultPathMatchFailure,
                    format!(
                        "An error occurred while executing the state '{name}' (entered at the event id #{entered}). {}",
                        e.message()
                    ),
                )
            })?;
            apply_path("OutputPath", output_path, &out, &ctx)
                .map_err(|e| Failure::from_io(name, entered, &e))
        });
        match output {
            Ok(o) => (
                Ok((
                    o,
                    match next {
                        Some(n) => Transition::Next(n.to_string()),
                        None => Transition::End,
                    },
                )),
                prev,
            ),
            Err(f) => {
                let Some(c) = catchers
                    .iter()
                    .find(|c| error_matches(&c.error_equals, f.name()))
                else {
                    return (Err(f), prev);
                };
                match apply_result_path(c.result_path.as_ref(), &raw, f.as_error_output()) {
                    Ok(o) => (Ok((o, Transition::Next(c.next.clone()))), prev),
                    Err(e) => (Err(Failure::from_io(name, entered, &e)), prev),
                }
            }
        }
    }

    /// A Task attempt, or its result from the journal if it finished
    /// before a resume; a new result is journaled (and synced) at once.
    #[allow(clippy::too_many_arguments)]
    async fn task_journaled(
        &self,
        name: &str,
        t: &crate::asl::TaskState,
        input: Value,
        ctx: &LazyContext,
        retry_count: u64,
        prev: u64,
        key: &str,
    ) -> (Result<Value, Failure>, u64) {
        let Some(journal) = &self.journal else {
            return self
                .task(name, t, input, ctx, retry_count, prev, None)
                .await;
        };
        let to_failure = |f: TaskFailure| Failure {
            error: Some(f.error),
            cause: f.cause,
        };
        if let Some(done) = journal
            .replay()
            .attempts
            .get(&(key.to_string(), retry_count))
        {
            return (done.result.clone().map_err(to_failure), done.last);
        }
        // The attempt's Scheduled/Started events are keyed: an attempt cut
        // off by a kill runs again on resume, but is scheduled once.
        let attempt = format!("{key}#{retry_count}");
        let (result, last) = self
            .task(name, t, input, ctx, retry_count, prev, Some(&attempt))
            .await;
        journal.append(
            &journal::Entry::Attempt {
                key: key.to_string(),
                n: retry_count,
                resource: t.resource.clone(),
                result: result.clone().map_err(|f| TaskFailure {
                    error: f.error.unwrap_or_default(),
                    cause: f.cause,
                }),
                last,
            },
            true,
        );
        (result, last)
    }

    /// Runs one attempt of a Task state: reads its time limits, records
    /// its Scheduled and Started events, invokes the handler under the
    /// timeout and records how the attempt ended. Returns the result and
    /// the id of the last event.
    #[allow(clippy::too_many_arguments)]
    async fn task(
        &self,
        name: &str,
        t: &crate::asl::TaskState,
        input: Value,
        ctx: &LazyContext,
        retry_count: u64,
        prev: u64,
        // The journal key of this attempt, for its Scheduled/Started.
        attempt: Option<&str>,
    ) -> (Result<Value, Failure>, u64) {
        let kind = TaskKind::of(&t.resource);
        let (timeout, heartbeat_seconds) = match task_limits(name, t, &input, ctx, prev) {
            Ok(l) => l,
            Err(f) => return (Err(f), prev),
        };
        let started = self.record_task_start(&kind, t, &input, timeout, prev, attempt);
        let call = TaskCall {
            resource: t.resource.clone(),
            input,
            state_name: name.to_string(),
            retry_count,
            context: ctx.clone(),
            heartbeat_seconds,
        };
        let invoke = self.tasks.invoke(call);
        let result = match timeout {
            Some(s) => tokio::select! {
                biased;
                r = invoke => Some(r),
                _ = self.clock.deadline(Duration::from_secs(s)) => None,
            },
            None => Some(invoke.await),
        };
        self.record_task_end(&kind, started, result)
    }

    /// Records the Scheduled and Started events of a task attempt (keyed by
    /// the attempt, so a resume does not schedule it twice). Returns the id
    /// of the Started event.
    fn record_task_start(
        &self,
        kind: &TaskKind,
        t: &crate::asl::TaskState,
        input: &Value,
        timeout: Option<u64>,
        prev: u64,
        attempt: Option<&str>,
    ) -> u64 {
        let key = |suffix: &str| attempt.map(|a| format!("{a}{suffix}"));
        let scheduled = match kind {
            TaskKind::Lambda => {
                let mut d = json!({"resource": t.resource, "input": payload(input), "inputDetails": not_truncated()});
                if let (Some(s), Some(o)) = (timeout, d.as_object_mut()) {
                    o.insert("timeoutInSeconds".into(), json!(s));
                }
                self.record_keyed(
                    key("#scheduled").as_deref(),
                    "LambdaFunctionScheduled",
                    prev,
                    details(&d),
                )
            }
            TaskKind::Service { service, action } => {
                let mut d = json!({"resourceType": service, "resource": action, "region": "us-east-1", "parameters": payload(input)});
                if let (Some(s), Some(o)) = (timeout, d.as_object_mut()) {
                    o.insert("timeoutInSeconds".into(), json!(s));
                }
                self.record_keyed(
                    key("#scheduled").as_deref(),
                    "TaskScheduled",
                    prev,
                    details(&d),
                )
            }
        };
        match kind {
            TaskKind::Lambda => self.record_keyed(
                key("#started").as_deref(),
                "LambdaFunctionStarted",
                scheduled,
                None,
            ),
            TaskKind::Service { service, action } => self.record_keyed(
                key("#started").as_deref(),
                "TaskStarted",
                scheduled,
                details(&json!({"resourceType": service, "resource": action})),
            ),
        }
    }

    /// Records how a task attempt ended (`None`: it timed out) and turns
    /// the handler's answer into the state's result. Returns it with the
    /// id of the event recorded.
    fn record_task_end(
        &self,
        kind: &TaskKind,
        started: u64,
        result: Option<Result<Value, TaskFailure>>,
    ) -> (Result<Value, Failure>, u64) {
        match result {
            Some(Ok(output)) => {
                let last = match kind {
                    TaskKind::Lambda => self.record(
                        "LambdaFunctionSucceeded",
                        started,
                        details(&json!({"output": payload(&output), "outputDetails": not_truncated()})),
                    ),
                    TaskKind::Service { service, action } => self.record(
                        "TaskSucceeded",
                        started,
                        details(&json!({"resourceType": service, "resource": action, "output": payload(&output), "outputDetails": not_truncated()})),
                    ),
                };
                (Ok(output), last)
            }
            Some(Err(f)) => {
                let mut d = Map::new();
                if let TaskKind::Service { service, action } = kind {
                    d.insert("resourceType".into(), json!(service));
                    d.insert("resource".into(), json!(action));
                }
                d.insert("error".into(), json!(f.error));
                if let Some(c) = &f.cause {
                    d.insert("cause".into(), json!(c));
                }
                let event = match kind {
                    TaskKind::Lambda => "LambdaFunctionFailed",
                    TaskKind::Service { .. } => "TaskFailed",
                };
                let last = self.record(event, started, details(&d));
                (
                    Err(Failure {
                        error: Some(f.error),
                        cause: f.cause,
                    }),
                    last,
                )
            }
            None => {
                let event = match kind {
                    TaskKind::Lambda => "LambdaFunctionTimedOut",
                    TaskKind::Service { .. } => "TaskTimedOut",
                };
                let last = self.record(
                    event,
                    started,
                    details(&json!({"error": ErrorName::StatesTimeout.as_str()})),
                );
                (
                    Err(Failure {
                        error: Some(ErrorName::StatesTimeout.as_str().into()),
                        cause: None,
                    }),
                    last,
                )
            }
        }
    }

    async fn parallel(
        &self,
        _name: &str,
        p: &crate::asl::ParallelState,
        input: Value,
        prev: u64,
        scope: &str,
    ) -> (Result<Value, Failure>, u64) {
        let started = self.record_keyed(
            Some(&format!("{scope}#started")),
            "ParallelStateStarted",
            prev,
            None,
        );
        let failed_key = format!("{scope}#failed");
        if let Some((error, cause)) = self
            .journal
            .as_ref()
            .and_then(|j| j.replay().failures.get(&failed_key))
        {
            // The failure the run saw before the resume, not whichever
            // branch happens to fail first now.
            let f = Failure {
                error: error.clone(),
                cause: cause.clone(),
            };
            let last = self.record_keyed(
                Some(&failed_key),
                "ParallelStateFailed",
                started,
                details(&failure_details(&f)),
            );
            return (Err(f), last);
        }
        let branches = p.branches.iter().enumerate().map(|(i, b)| {
            let input = input.clone();
            let scope = format!("{scope}b{i}.");
            async move {
                let (r, _) = self
                    .graph(&b.start_at, &b.states, input, started, scope)
                    .await;
                r
            }
        });
        // The first failing branch fails the state and stops the others
        // (dropping their futures), as Step Functions stops them.
        let outcome = futures::future::try_join_all(branches).await;
        match outcome {
            Ok(outputs) => {
                // Keyed: if what follows fails without an exit entry (a
                // ResultSelector in a Map iteration), a resume passes here
                // again.
                let last = self.record_keyed(
                    Some(&format!("{scope}#succeeded")),
                    "ParallelStateSucceeded",
                    started,
                    None,
                );
                (Ok(Value::Array(outputs)), last)
            }
            Err(f) => {
                // Synced like a task's result: the branch failure that
                // decided it usually was one (the failing attempt is
                // synced), and a crash must not let another branch decide.
                if let Some(j) = &self.journal {
                    j.append(
                        &journal::Entry::Failed {
                            key: failed_key.clone(),
                            error: f.error.clone(),
                            cause: f.cause.clone(),
                        },
                        true,
                    );
                }
                // Keyed like the entry: a resume that replays this failure
                // does not record it twice.
                let last = self.record_keyed(
                    Some(&failed_key),
                    "ParallelStateFailed",
                    started,
                    details(&failure_details(&f)),
                );
                (Err(f), last)
            }
        }
    }

    /// Runs an inline Map state: selects its items, builds each item's
    /// input, runs the iterations at most `MaxConcurrency` at a time, and
    /// decides, with the tolerated failures, whether the state failed.
    /// Returns the result and the id of the last event.
    #[allow(clippy::too_many_arguments)]
    async fn map(
        &self,
        name: &str,
        m: &crate::asl::MapState,
        input: Value,
        ctx: &LazyContext,
        entered: u64,
        prev: u64,
        scope: &str,
    ) -> (Result<Value, Failure>, u64) {
        if let Some(field) = m.unsupported_locally() {
            return (
                Err(Failure::runtime(
                    name,
                    entered,
                    format!("{field} is not supported by the local executor"),
                )),
                prev,
            );
        }
        let items = match map_items(name, m, &input, ctx, entered) {
            Ok(items) => items,
            Err(f) => return (Err(f), prev),
        };
        let Some((_, start_at, states)) = m.processor() else {
            return (
                Err(Failure::runtime(
                    name,
                    entered,
                    "the Map state has no ItemProcessor",
                )),
                prev,
            );
        };
        let limit = match map_concurrency(name, m, &input, ctx, entered) {
            Ok(limit) => limit,
            Err(f) => return (Err(f), prev),
        };
        let tolerance = Tolerance::of(m, &input, ctx);
        let started = self.record_keyed(
            Some(&format!("{scope}#started")),
            "MapStateStarted",
            prev,
            details(&json!({"length": items.len()})),
        );
        let inputs = match map_inputs(name, m, &items, &input, ctx, entered) {
            Ok(inputs) => inputs,
            Err(f) => return (Err(f), started),
        };
        let total = inputs.len();
        let iterations = inputs
            .into_iter()
            .enumerate()
            .map(|(i, item_input)| async move {
                let scope = format!("{scope}i{i}.");
                let done_key = format!("{scope}#done");
                let it_started = self.record_keyed(
                    Some(&format!("{scope}#started")),
                    "MapIterationStarted",
                    started,
                    iteration_details(name, i),
                );
                let (r, last) = self
                    .graph(start_at, states, item_input, it_started, scope)
                    .await;
                // Keyed: a resume replays finished iterations, and must not
                // record their end twice.
                let kind = match &r {
                    Ok(_) => "MapIterationSucceeded",
                    Err(_) => "MapIterationFailed",
                };
                self.record_keyed(Some(&done_key), kind, last, iteration_details(name, i));
                r
            });
        let (results, failures) =
            collect_iterations(iterations, limit, total, tolerance.any()).await;
        let failed: Option<Failure> = if tolerance.any() {
            tolerance.exceeded(failures, total).then(|| {
                Failure::named(
                    ErrorName::StatesExceedToleratedFailureThreshold,
                    "The specified tolerated failure threshold was exceeded",
                )
            })
        } else {
            results.iter().find_map(|r| r.as_ref().err().cloned())
        };
        self.record_map_end(failed, results, started, scope)
    }

    /// Records how a Map state ended: failed with `failed`, or succeeded
    /// with every iteration's output (a tolerated failure as its
    /// `{"Error", "Cause"}`).
    fn record_map_end(
        &self,
        failed: Option<Failure>,
        results: Vec<Result<Value, Failure>>,
        started: u64,
        scope: &str,
    ) -> (Result<Value, Failure>, u64) {
        match failed {
            Some(f) => {
                let last = self.record_keyed(
                    Some(&format!("{scope}#failed")),
                    "MapStateFailed",
                    started,
                    None,
                );
                (Err(f), last)
            }
            None => {
                let outputs: Vec<Value> = results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|f| f.as_error_output()))
                    .collect();
                let last = self.record_keyed(
                    Some(&format!("{scope}#succeeded")),
                    "MapStateSucceeded",
                    started,
                    None,
                );
                (Ok(Value::Array(outputs)), last)
            }
        }
    }
}

/// The items of a Map state: what `ItemsPath` selects (the whole input
/// without one), which must be an array.
fn map_items(
    name: &str,
    m: &crate::asl::MapState,
    input: &Value,
    ctx: &LazyContext,
    entered: u64,
) -> Result<Vec<Value>, Failure> {
    let items = match &m.items_path {
        Some(p) => io::select("ItemsPath", p, input, ctx)
            .map_err(|e| Failure::from_io(name, entered, &e))?,
        None => input.clone(),
    };
    match items {
        Value::Array(items) => Ok(items),
        other => Err(Failure::runtime(
            name,
            entered,
            format!(
                "Items of the Map state must be an array, found {}",
                crate::asl::kind_of(&other)
            ),
        )),
    }
}

/// How many iterations of a Map state run at once: `MaxConcurrency` or
/// what `MaxConcurrencyPath` selects (an integer), with 0 or neither
/// meaning `INLINE_MAP_CONCURRENCY`.
fn map_concurrency(
    name: &str,
    m: &crate::asl::MapState,
    input: &Value,
    ctx: &LazyContext,
    entered: u64,
) -> Result<usize, Failure> {
    let max = match (&m.max_concurrency, &m.max_concurrency_path) {
        (Some(n), _) => *n,
        (None, Some(p)) => {
            let v = io::select("MaxConcurrencyPath", p, input, ctx)
                .map_err(|e| Failure::from_io(name, entered, &e))?;
            v.as_u64().ok_or_else(|| {
                Failure::runtime(
                    name,
                    entered,
                    format!(
                        "The MaxConcurrencyPath field refers to value \"{}\" which is not a valid integer: {p}",
                        io::compact(&v)
                    ),
                )
            })?
        }
        _ => 0,
    };
    Ok(if max == 0 {
        INLINE_MAP_CONCURRENCY
    } else {
        usize::try_from(max).unwrap_or(INLINE_MAP_CONCURRENCY)
    })
}

/// The input of each Map iteration: the item, or the `ItemSelector` (or
/// `Parameters`) applied with `$$.Map.Item` set. Built up front, so a
/// selector error fails the state before any iteration starts.
fn map_inputs(
    name: &str,
    m: &crate::asl::MapState,
    items: &[Value],
    input: &Value,
    ctx: &LazyContext,
    entered: u64,
) -> Result<Vec<Value>, Failure> {
    let mut inputs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_input = match m.selector() {
            Some(sel) => {
                let c = ctx.with_map(json!({"Item": {"Index": i, "Value": item}}));
                apply_template(sel, input, &c).map_err(|e| Failure::from_io(name, entered, &e))?
            }
            None => item.clone(),
        };
        inputs.push(item_input);
    }
    Ok(inputs)
}

/// Runs Map iterations, at most `limit` at once, and gathers their results
/// in item order with the number that failed. Without a tolerance the
/// first failure stops the rest (their futures are dropped) and is the
/// last result.
async fn collect_iterations<F>(
    iterations: impl Iterator<Item = F>,
    limit: usize,
    total: usize,
    tolerant: bool,
) -> (Vec<Result<Value, Failure>>, u64)
where
    F: Future<Output = Result<Value, Failure>>,
{
    let mut results: Vec<Result<Value, Failure>> = Vec::with_capacity(total);
    let mut stream = stream::iter(iterations).buffered(limit);
    let mut failures = 0u64;
    while let Some(r) = stream.next().await {
        if r.is_err() {
            failures += 1;
            if !tolerant {
                // One failed iteration fails the Map; the rest stop.
                results.push(r);
                break;
            }
        }
        results.push(r);
    }
    (results, failures)
}

/// The failures a Map state tolerates: `ToleratedFailureCount` and
/// `ToleratedFailurePercentage`, or what their paths select. A path that
/// selects nothing usable counts as not set.
struct Tolerance {
    count: Option<u64>,
    percentage: Option<f64>,
}

impl Tolerance {
    fn of(m: &crate::asl::MapState, input: &Value, ctx: &LazyContext) -> Tolerance {
        let count = m.tolerated_failure_count.or_else(|| {
            m.tolerated_failure_count_path
                .as_ref()
                .and_then(|p| io::select("ToleratedFailureCountPath", p, input, ctx).ok())
                .and_then(|v| v.as_u64())
        });
        let percentage = m
            .tolerated_failure_percentage
            .as_ref()
            .and_then(|n| n.as_f64())
            .or_else(|| {
                m.tolerated_failure_percentage_path
                    .as_ref()
                    .and_then(|p| io::select("ToleratedFailurePercentagePath", p, input, ctx).ok())
                    .and_then(|v| v.as_f64())
            });
        Tolerance { count, percentage }
    }

    /// Whether any failure is tolerated: if not, the first one fails the
    /// Map state.
    fn any(&self) -> bool {
        self.count.is_some() || self.percentage.is_some()
    }

    /// Whether `failures` out of `total` iterations is over the threshold:
    /// over both limits when both are set, over the one set otherwise.
    fn exceeded(&self, failures: u64, total: usize) -> bool {
        let over_count = self.count.is_some_and(|c| failures > c);
        let pct = if total == 0 {
            0.0
        } else {
            failures as f64 * 100.0 / total as f64
        };
        let over_pct = self.percentage.is_some_and(|p| pct > p);
        match (self.count, self.percentage) {
            (Some(_), Some(_)) => over_count && over_pct,
            _ => over_count || over_pct,
        }
    }
}

/// The fields Task, Parallel and Map states share.
struct Common<'a> {
    retry: &'a [Retrier],
    catch: &'a [Catcher],
    result_selector: Option<&'a Value>,
    result_path: Option<&'a NullablePath>,
    output_path: Option<&'a NullablePath>,
    next: Option<&'a str>,
    input_path: Option<&'a NullablePath>,
    parameters: Option<&'a Value>,
}

fn common(state: &State) -> Option<Common<'_>> {
    Some(match state {
        State::Task(t) => Common {
            retry: t.retry.as_deref().unwrap_or(&[]),
            catch: t.catch.as_deref().unwrap_or(&[]),
            result_selector: t.result_selector.as_ref(),
            result_path: t.result_path.as_ref(),
            output_path: t.output_path.as_ref(),
            next: t.next.as_deref(),
            input_path: t.input_path.as_ref(),
            parameters: t.parameters.as_ref(),
        },
        State::Parallel(p) => Common {
            retry: p.retry.as_deref().unwrap_or(&[]),
            catch: p.catch.as_deref().unwrap_or(&[]),
            result_selector: p.result_selector.as_ref(),
            result_path: p.result_path.as_ref(),
            output_path: p.output_path.as_ref(),
            next: p.next.as_deref(),
            input_path: p.input_path.as_ref(),
            parameters: p.parameters.as_ref(),
        },
        State::Map(m) => Common {
            retry: m.retry.as_deref().unwrap_or(&[]),
            catch: m.catch.as_deref().unwrap_or(&[]),
            result_selector: m.result_selector.as_ref(),
            result_path: m.result_path.as_ref(),
            output_path: m.output_path.as_ref(),
            next: m.next.as_deref(),
            input_path: m.input_path.as_ref(),
            // A Map's Parameters is the legacy ItemSelector, applied per item.
            parameters: None,
        },
        _ => return None,
    })
}

/// The timeout and heartbeat of a Task attempt, in seconds (`None`: no
/// limit), from the literal fields or their paths. A path must select a
/// positive integer; anything else fails the state (not "no limit").
fn task_limits(
    name: &str,
    t: &crate::asl::TaskState,
    input: &Value,
    ctx: &LazyContext,
    prev: u64,
) -> Result<(Option<u64>, Option<u64>), Failure> {
    let seconds = |field: &str, literal: Option<u64>, path: &Option<String>| {
        match (literal, path) {
        (Some(s), _) => Ok(Some(s)),
        (None, Some(p)) => match io::select(field, p, input, ctx) {
            Ok(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(Failure::runtime(
                    name,
                    prev,
                    format!(
                        "The {field} field refers to value \"{}\" which is not a valid positive integer: {p}",
                        io::compact(&v)
                    ),
                )),
            },
            Err(e) => Err(Failure::from_io(name, prev, &e)),
        },
        (None, None) => Ok(None),
    }
    };
    let timeout = seconds(
        "TimeoutSecondsPath",
        t.timeout_seconds,
        &t.timeout_seconds_path,
    )?;
    let heartbeat = seconds(
        "HeartbeatSecondsPath",
        t.heartbeat_seconds,
        &t.heartbeat_seconds_path,
    )?;
    Ok((timeout, heartbeat))
}

/// How a Task resource shows up in the history.
enum TaskKind {
    /// A Lambda function ARN (or the step-runner placeholder).
    Lambda,
    /// `arn:aws:states:::service:action[.pattern]`.
    Service { service: String, action: String },
}

impl TaskKind {
    fn of(resource: &str) -> TaskKind {
        if let Some(rest) = resource.strip_prefix("arn:aws:states:::") {
            let mut parts = rest.splitn(2, ':');
            let service = parts.next().unwrap_or_default().to_string();
            let action = parts.next().unwrap_or_default().to_string();
            TaskKind::Service { service, action }
        } else {
            TaskKind::Lambda
        }
    }
}

/// `{"error", "cause"}` of a failure, as failure events carry them.
fn failure_details(f: &Failure) -> Value {
    let mut d = Map::new();
    if let Some(e) = &f.error {
        d.insert("error".into(), json!(e));
    }
    if let Some(c) = &f.cause {
        d.insert("cause".into(), json!(c));
    }
    Value::Object(d)
}

/// A callback task's token: the SHA-256 of the execution's id, the
/// state's journal key and the attempt, so a resumed attempt keeps it.
fn task_token(context: &Value, key: &str, attempt: u64) -> String {
    use sha2::{Digest as _, Sha256};
    let id = context
        .pointer("/Execution/Id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(attempt.to_be_bytes());
    h.finalize()
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The wait before retry number `count` (0-based) of a retrier.
fn retry_delay(r: &Retrier, count: u64) -> Duration {
    let base = r.interval() as f64 * r.backoff().powi(i32::try_from(count).unwrap_or(i32::MAX));
    let capped = match r.max_delay_seconds {
        Some(max) => base.min(max as f64),
        None => base,
    };
    let secs = match r.jitter_strategy {
        Some(JitterStrategy::Full) => rand::random::<f64>() * capped,
        _ => capped,
    };
    // 0 x infinity (IntervalSeconds 0 with a huge BackoffRate) is NaN; an
    // overflow is infinite: both wait the longest delay AWS allows.
    let secs = if secs.is_finite() {
        secs
    } else {
        MAX_RETRY_DELAY_SECONDS
    };
    Duration::from_secs_f64(secs.clamp(0.0, MAX_RETRY_DELAY_SECONDS))
}

#[cfg(test)]
mod tests;
