//! `firebreak run`: run any Step Functions definition in the local executor.
//!
//! Task states whose resource is a firebreak step go to the step registry
//! (which talks to AWS); `.waitForTaskToken` tasks wait for `firebreak
//! task-success` / `task-failure`; any other resource is answered from
//! `--mock` files or `--mock-command` programs (which also override the
//! first two). Every resource is checked before the run starts, so a run
//! never stops half-way for want of a mock.
//!
//! Runs are journaled unless `--no-journal` (`FIREBREAK_STATE_DIR`, by
//! default `~/.local/state/firebreak`, under `executions/NAME.jsonl`);
//! `firebreak resume NAME` finishes a run that was killed, without running
//! a finished task attempt again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use clap::Args;
use firebreak_steps::{Mode, StepRunner};
use firebreak_workflows::asl::{QueryLanguage, StateMachine};
use firebreak_workflows::exec::callback::{
    is_callback, Answer as CallbackAnswer, CallbackError, CallbackStore as _,
};
use firebreak_workflows::exec::journal::Start;
use firebreak_workflows::exec::{
    Clock, ExecutionConfig, Executor, History, Journal, Outcome, Status, TaskCall, TaskFailure,
    TaskHandler, TokioClock,
};
use firebreak_workflows::time::format_timestamp;
use firebreak_workflows::validate::validate_json;
use serde_json::{json, Value};

use crate::session::{create_journal, journal_path, state_dir, warn_on_journal_failure, Session};
use crate::{exit, AwsArgs, BadInput};
use firebreak_workflows::ErrorName;

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The definition: a JSON file in JSONPath mode.
    pub definition: PathBuf,
    /// The execution input: JSON text, or @FILE to read it from a file.
    #[arg(long, default_value = "{}", value_name = "JSON|@FILE")]
    pub input: String,
    /// Answer Task states whose Resource is RESOURCE with this JSON (a
    /// result, or {"Error": "...", "Cause": "..."} to fail the task). Give
    /// the same RESOURCE again for later calls: answers are used in order
    /// and the last one repeats.
    #[arg(long = "mock", value_name = "RESOURCE=@FILE|RESOURCE=JSON")]
    pub mocks: Vec<String>,
    /// Answer Task states whose Resource is RESOURCE by running COMMAND
    /// with `sh -c`: the task's input on stdin, its answer (as for --mock)
    /// on stdout; a non-zero exit fails the task with States.TaskFailed.
    #[arg(long = "mock-command", value_name = "RESOURCE=COMMAND")]
    pub mock_commands: Vec<String>,
    /// Add the execution history (Step Functions' event types) to the output.
    #[arg(long)]
    pub history: bool,
    /// Waits, retry delays and timeouts take no real time (they are still
    /// recorded in the history, with the times they would have had). Only
    /// for definitions whose tasks are all mocked.
    #[arg(long)]
    pub fast_clock: bool,
    /// The execution's name (`$$.Execution.Name`); a UUID by default.
    #[arg(long)]
    pub name: Option<String>,
    /// The most history events before the execution fails with
    /// States.Runtime: 25000 is Step Functions' quota for Standard
    /// workflows; 0 for no limit (as Express workflows).
    #[arg(long, default_value_t = 25_000, value_name = "N")]
    pub max_events: usize,
    /// Do not journal the run (it cannot be resumed): for throwaway runs
    /// and benchmarks.
    #[arg(long)]
    pub no_journal: bool,
    /// Run the execution N times in this process and print the rate on
    /// stderr (a benchmark); the output printed is the last execution's.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// A deployed step-runner Lambda ARN also treated as the step runner.
    #[arg(long, value_name = "ARN")]
    pub step_runner_arn: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// The runtime for `run` and `resume`: with a fast clock, a
/// single-threaded runtime whose timers are paused, so every wait
/// completes as soon as nothing else can make progress, in the order real
/// time would give.
fn runtime(fast_clock: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if fast_clock {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.start_paused(true);
        b
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

pub(crate) fn main(args: RunArgs) -> anyhow::Result<u8> {
    runtime(args.fast_clock)?.block_on(run(args))
}

/// One canned answer for a resource.
#[derive(Clone, Debug)]
enum Answer {
    Result(Value),
    Fail(TaskFailure),
    /// A program that answers (`--mock-command`).
    Command(String),
}

impl Answer {
    fn from_json(v: Value) -> Answer {
        // An object holding only Error (a string) and perhaps Cause is a
        // failure; anything else is the task's result.
        if let Value::Object(o) = &v {
            if let Some(Value::String(error)) = o.get("Error") {
                let cause_ok = match o.get("Cause") {
                    None | Some(Value::String(_)) | Some(Value::Null) => true,
                    Some(_) => false,
                };
                if cause_ok && o.keys().all(|k| k == "Error" || k == "Cause") {
                    return Answer::Fail(TaskFailure {
                        error: error.clone(),
                        cause: o.get("Cause").and_then(Value::as_str).map(str::to_string),
                    });
                }
            }
        }
        Answer::Result(v)
    }
}

/// The answers for one resource and how many were used.
#[derive(Debug)]
struct Script {
    answers: Vec<Answer>,
    used: usize,
}

/// Task dispatch for `run`: mocks first, then firebreak's steps.
struct Tasks {
    mocks: HashMap<String, Mutex<Script>>,
    steps: Option<StepRunner>,
}

#[async_trait]
impl TaskHandler for Tasks {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        if let Some(script) = self.mocks.get(&call.resource) {
            let answer = {
                let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
                let i = s.used.min(s.answers.len() - 1);
                s.used += 1;
                s.answers[i].clone()
            };
            return match answer {
                Answer::Result(v) => Ok(v),
                Answer::Fail(f) => Err(f),
                Answer::Command(c) => run_command(&c, &call.input).await,
            };
        }
        if is_callback(&call.resource) {
            // A firebreak step behind the token (an approval request)
            // runs first: it is what asks for the answer.
            if let Some(runner) = &self.steps {
                if runner.handles_callback(&call.resource, &call.input) {
                    crate::session::open_token(&call)?;
                    if let Err(e) = runner.start_callback(call.input.clone()).await {
                        crate::session::close_token(&call);
                        return Err(e);
                    }
                }
            }
            return crate::session::wait_for_token(&call).await;
        }
        match &self.steps {
            Some(runner) => runner.invoke(call).await,
            // Checked before the run: every resource has a mock or a runner.
            None => Err(TaskFailure::new(
                ErrorName::StatesRuntime.as_str(),
                format!("no --mock for the resource {:?}", call.resource),
            )),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct TaskSuccessArgs {
    /// The task token (`$$.Task.Token`, as `run` printed it).
    pub token: String,
    /// The task's result: JSON text, or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    pub output: String,
}

#[derive(Debug, Args)]
pub(crate) struct TaskFailureArgs {
    /// The task token (`$$.Task.Token`, as `run` printed it).
    pub token: String,
    /// The error name (matched by the state's Retry and Catch).
    #[arg(long, default_value = "")]
    pub error: String,
    /// A description of the failure.
    #[arg(long)]
    pub cause: Option<String>,
}

/// An answer or heartbeat that cannot be given: bad input (exit 2) when
/// the token is malformed, nobody waits for it, or it was answered.
fn callback_error(e: CallbackError) -> anyhow::Error {
    match e {
        CallbackError::Store(m) => anyhow::anyhow!(m),
        e => bad(e.to_string()),
    }
}

#[derive(Debug, Args)]
pub(crate) struct TaskHeartbeatArgs {
    /// The task token (`$$.Task.Token`, as `run` printed it).
    pub token: String,
}

/// Tells a waiting callback task its worker is alive (HeartbeatSeconds).
pub(crate) fn task_heartbeat(args: TaskHeartbeatArgs) -> anyhow::Result<u8> {
    crate::session::token_store()?
        .heartbeat(&args.token)
        .map_err(callback_error)?;
    Ok(exit::OK)
}

pub(crate) fn task_success(args: TaskSuccessArgs) -> anyhow::Result<u8> {
    let output = json_arg("--output", &args.output)?;
    crate::session::token_store()?
        .answer(&args.token, &CallbackAnswer::Success(output))
        .map_err(callback_error)?;
    Ok(exit::OK)
}

pub(crate) fn task_failure(args: TaskFailureArgs) -> anyhow::Result<u8> {
    crate::session::token_store()?
        .answer(
            &args.token,
            &CallbackAnswer::Failure {
                error: args.error,
                cause: args.cause,
            },
        )
        .map_err(callback_error)?;
    Ok(exit::OK)
}

/// Runs a `--mock-command` for one task.
async fn run_command(command: &str, input: &Value) -> Result<Value, TaskFailure> {
    use tokio::io::AsyncWriteExt;
    let failed = |cause: String| TaskFailure::new(ErrorName::StatesTaskFailed.as_str(), cause);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot start the mock command {command:?}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe early;
        // that is its business, not a failure.
        let _ = stdin.write_all(input.to_string().as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| failed(format!("the mock command {command:?} failed: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "the mock command {command:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        failed(format!(
            "the mock command {command:?} did not print JSON: {e}"
        ))
    })?;
    match Answer::from_json(v) {
        Answer::Fail(f) => Err(f),
        Answer::Result(v) => Ok(v),
        Answer::Command(_) => Err(failed("a command cannot answer with a command".into())),
    }
}

fn bad(m: impl Into<String>) -> anyhow::Error {
    BadInput(m.into()).into()
}

/// `JSON` or `@FILE`, parsed; `what` names the option in errors.
fn json_arg(what: &str, text: &str) -> anyhow::Result<Value> {
    let (shown, body) = match text.strip_prefix('@') {
        Some(path) => (
            format!("{what} file {path}"),
            std::fs::read_to_string(path)
                .map_err(|e| bad(format!("{what}: cannot read {path}: {e}")))?,
        ),
        None => (what.to_string(), text.to_string()),
    };
    serde_json::from_str(&body).map_err(|e| bad(format!("{shown} is not valid JSON: {e}")))
}

/// `--mock` and `--mock-command` as the journal keeps them: per resource,
/// the answers in order (`{"answer": JSON}` or `{"command": "..."}`).
fn parse_mocks(given: &[String], commands: &[String]) -> anyhow::Result<Vec<(String, Value)>> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let split = |flag: &str, m: &str| -> anyhow::Result<(String, String)> {
        // ARNs never contain '=', so the first one ends the resource.
        let Some((resource, value)) = m.split_once('=') else {
            return Err(bad(format!(
                "{flag} {m:?}: expected RESOURCE=..., for example '{flag} arn:aws:lambda:us-east-1:123456789012:function:f=@answer.json'"
            )));
        };
        if resource.is_empty() {
            return Err(bad(format!("{flag} {m:?}: the resource is empty")));
        }
        Ok((resource.to_string(), value.to_string()))
    };
    for m in given {
        let (resource, value) = split("--mock", m)?;
        let answer = json_arg(&format!("--mock {resource}"), &value)?;
        out.push((resource, json!({ "answer": answer })));
    }
    for m in commands {
        let (resource, command) = split("--mock-command", m)?;
        if command.trim().is_empty() {
            return Err(bad(format!(
                "--mock-command {resource}: the command is empty"
            )));
        }
        if given
            .iter()
            .any(|g| g.split_once('=').map(|(r, _)| r) == Some(resource.as_str()))
        {
            return Err(bad(format!(
                "{resource} has both --mock and --mock-command: give one of them"
            )));
        }
        out.push((resource, json!({ "command": command })));
    }
    Ok(out)
}

/// Answer scripts from the journaled form; `used` continues a resumed run.
fn scripts(
    mocks: &[(String, Value)],
    used: &HashMap<String, usize>,
) -> HashMap<String, Mutex<Script>> {
    let mut scripts: HashMap<String, Mutex<Script>> = HashMap::new();
    for (resource, m) in mocks {
        let answer = match m.get("command").and_then(Value::as_str) {
            Some(c) => Answer::Command(c.to_string()),
            None => Answer::from_json(m.get("answer").cloned().unwrap_or(Value::Null)),
        };
        let script = scripts.entry(resource.clone()).or_insert_with(|| {
            Mutex::new(Script {
                answers: Vec::new(),
                used: used.get(resource).copied().unwrap_or(0),
            })
        });
        script
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .answers
            .push(answer);
    }
    scripts
}

fn load_definition(path: &PathBuf) -> anyhow::Result<StateMachine> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(format!("{shown}: cannot read: {e}")))?;
    let machine = validate_json(&text).map_err(|problems| {
        let lines: Vec<String> = problems.0.iter().map(|p| format!("{shown}: {p}")).collect();
        bad(format!(
            "{shown} is not a valid definition ({} problem{}):\n{}",
            problems.0.len(),
            if problems.0.len() == 1 { "" } else { "s" },
            lines.join("\n")
        ))
    })?;
    for (path, state) in machine.all_states() {
        if let firebreak_workflows::asl::State::Map(m) = state {
            if let Some(field) = m.unsupported_locally() {
                return Err(bad(format!(
                    "{shown}: state '{path}': field {field} is not supported by the local executor (ItemReader and ResultWriter need S3; ItemBatcher's batches are not reproduced); give the items in the input (ItemsPath) to run this Map here"
                )));
            }
        }
    }
    if machine.query_language == Some(QueryLanguage::Jsonata) {
        return Err(bad(format!(
            "{shown}: QueryLanguage JSONata is not supported; firebreak runs JSONPath definitions"
        )));
    }
    Ok(machine)
}

/// How a journaled `run` rebuilds its task handler on resume.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Runner {
    command: String,
    mocks: Vec<(String, Value)>,
    fast_clock: bool,
    step_runner_arn: Option<String>,
    profile: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    #[serde(default = "default_max_events")]
    max_events: usize,
}

fn default_max_events() -> usize {
    firebreak_workflows::exec::MAX_HISTORY_EVENTS
}

/// Execution names as Step Functions allows them (1-80 characters, no
/// whitespace, wildcards, brackets or control characters), which also
/// keeps them safe as file names.
fn check_name(name: &str) -> anyhow::Result<()> {
    let bad_char = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(*c));
    if name.is_empty()
        || name.chars().count() > 80
        || bad_char.is_some()
        || name == "."
        || name == ".."
    {
        return Err(bad(format!(
            "--name {name:?}: an execution name has 1 to 80 characters, without whitespace or any of <>{{}}[]?*\"#%\\^|~`$&,;:/"
        )));
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let machine = load_definition(&args.definition)?;
    let input = json_arg("--input", &args.input)?;
    let mocks = parse_mocks(&args.mocks, &args.mock_commands)?;

    // Every Task resource needs a mock or the step runner; decide before
    // anything runs.
    let tasks = machine.tasks();
    let mut needs_steps = Vec::new();
    let mut needs_real_time = Vec::new();
    for (state, task) in &tasks {
        let r = task.resource.as_str();
        if mocks.iter().any(|(m, _)| m == r) {
            continue;
        }
        if is_callback(r) {
            needs_real_time.push(state.clone());
            continue;
        }
        let is_step = r == firebreak_workflows::step::STEP_RUNNER_RESOURCE
            || r == firebreak_workflows::step::CONTAINER_RESOURCE
            || args.step_runner_arn.as_deref() == Some(r);
        if !is_step {
            return Err(bad(format!(
                "state '{state}': field Resource {r:?} is not a firebreak step and has no mock; give --mock '{r}=@result.json'"
            )));
        }
        needs_steps.push(state.clone());
        needs_real_time.push(state.clone());
    }
    for (resource, _) in &mocks {
        if !tasks.iter().any(|(_, t)| &t.resource == resource) {
            say!("firebreak: warning: --mock {resource}: no Task state uses this resource");
        }
    }
    if args.fast_clock && !needs_real_time.is_empty() {
        return Err(bad(format!(
            "--fast-clock cannot run firebreak steps or wait for task tokens (they happen in real time); mock them or drop --fast-clock (states: {})",
            needs_real_time.join(", ")
        )));
    }

    let mut config = ExecutionConfig::default();
    if let Some(n) = &args.name {
        check_name(n)?;
        config.name = n.clone();
    }
    if let Some(stem) = args.definition.file_stem() {
        config.state_machine_name = stem.to_string_lossy().into_owned();
    }
    let mut runner = Runner {
        command: "run".into(),
        mocks,
        fast_clock: args.fast_clock,
        step_runner_arn: args.step_runner_arn.clone(),
        profile: args.aws.profile.clone(),
        region: args.aws.region.clone(),
        endpoint_url: args.aws.endpoint_url.clone(),
        max_events: args.max_events,
    };
    let steps = if needs_steps.is_empty() {
        None
    } else {
        let (steps, session) = step_runner(&runner).await?;
        config.region = session.region.clone();
        config.account = session.who.account_id.clone();
        config.role_arn = session.who.arn.clone();
        // A resume must reach the same place, also when the environment
        // chose it.
        runner.region = Some(session.region.clone());
        if runner.endpoint_url.is_none() {
            runner.endpoint_url = session.config.endpoint_url().map(str::to_string);
        }
        Some(steps)
    };
    let clock = TokioClock::new();
    let start = Start {
        definition: machine,
        input,
        config,
        start_time: format_timestamp(clock.now()),
        runner: serde_json::to_value(&runner)?,
    };
    let base_name = start.config.name.clone();
    let began = std::time::Instant::now();
    let mut last = None;
    for k in 1..=args.repeat.max(1) {
        let mut start = start.clone();
        if args.repeat > 1 {
            start.config.name = format!("{base_name}-{k}");
            start.start_time = format_timestamp(clock.now());
        }
        let executor = Executor::new(Arc::new(Tasks {
            mocks: scripts(&runner.mocks, &HashMap::new()),
            steps: steps.clone(),
        }))
        .with_clock(Arc::new(clock.clone()))
        .with_max_events(runner.max_events);
        let history = History::new();
        let (outcome, journal) = if args.no_journal {
            let o = executor
                .run(
                    &start.definition,
                    start.input.clone(),
                    &start.config,
                    &history,
                )
                .await;
            (o, None)
        } else {
            let (journal, path) = create_journal(&start)?;
            if k == 1 {
                say!(
                    "firebreak: execution {} (journal {}); if it is interrupted, `firebreak resume {}` finishes it",
                    start.config.name,
                    path.display(),
                    start.config.name
                );
            }
            let o = executor
                .run_journaled(journal.clone(), &start, &history)
                .await;
            (o, Some(journal))
        };
        last = Some((outcome, history, journal));
    }
    if args.repeat > 1 {
        let secs = began.elapsed().as_secs_f64();
        say!(
            "firebreak: {} executions in {secs:.3} s: {:.1} executions/s{}",
            args.repeat,
            args.repeat as f64 / secs.max(1e-9),
            if args.no_journal {
                " (not journaled)"
            } else {
                " (journaled)"
            }
        );
    }
    let Some((outcome, history, journal)) = last else {
        return Err(bad("--repeat must be at least 1"));
    };
    finish(&outcome, &history, args.history, journal.as_deref())
}

/// A step runner (and its AWS session) for the journaled options.
async fn step_runner(r: &Runner) -> anyhow::Result<(StepRunner, Session)> {
    let aws = AwsArgs {
        profile: r.profile.clone(),
        region: r.region.clone(),
        endpoint_url: r.endpoint_url.clone(),
        debug: false,
    };
    let session = Session::open(&aws, Mode::Live, false).await?;
    let mut runner = session.step_runner();
    if let Some(arn) = &r.step_runner_arn {
        runner = runner.accept_resource(arn.clone());
    }
    Ok((runner, session))
}

/// Prints the outcome object and gives the exit code.
fn finish(
    outcome: &Outcome,
    history: &History,
    with_history: bool,
    journal: Option<&Journal>,
) -> anyhow::Result<u8> {
    if journal.and_then(Journal::write_error).is_some() {
        say!("firebreak: warning: this run's journal could not be written (said when it happened); the run cannot be resumed");
    }
    let mut printed = outcome_json(outcome);
    if with_history {
        printed["history"] = serde_json::to_value(history.events())?;
    }
    outln!("{}", serde_json::to_string_pretty(&printed)?);
    Ok(match outcome.status {
        Status::Succeeded => exit::OK,
        Status::Failed | Status::TimedOut => exit::FAILED,
    })
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The execution's name (as `run` printed it) or its journal file.
    pub execution: String,
    /// Add the execution history to the output.
    #[arg(long)]
    pub history: bool,
    /// For a `respond` run: where AWS is, when not where the run went
    /// (by default the run's own profile, region and endpoint).
    #[command(flatten)]
    pub aws: crate::AwsArgs,
}

/// The journal of a case's latest run that did not end (`firebreak resume
/// CASE`), among those `respond` wrote under the state directory.
fn latest_unfinished_of_case(case: &str) -> Option<PathBuf> {
    let prefix = format!("{case}-");
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(state_dir().join("executions"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "jsonl")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .filter_map(|p| {
            let (start, ended) = Journal::peek(&p).ok()?;
            let of_case = start.input.pointer("/case/case_id").and_then(Value::as_str)
                == Some(case)
                && start.runner.get("command").and_then(Value::as_str) == Some("respond");
            (of_case && !ended).then_some((start.start_time, p))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// `firebreak resume`: reads the journal first, since a fast-clock run
/// needs its own runtime.
pub(crate) fn resume_main(args: ResumeArgs) -> anyhow::Result<u8> {
    let path = if args.execution.ends_with(".jsonl") || args.execution.contains('/') {
        PathBuf::from(&args.execution)
    } else {
        // A name `respond` made from a long case id may pass 80
        // characters: its journal is there.
        if !journal_path(&args.execution).is_file() {
            check_name(&args.execution)?;
        }
        journal_path(&args.execution)
    };
    crate::session::secure_state_dir()?;
    // A case id: its latest run that did not end.
    let path = if !path.is_file() && !Journal::broken_path(&path).exists() {
        latest_unfinished_of_case(&args.execution).unwrap_or(path)
    } else {
        path
    };
    if !path.is_file() && !Journal::broken_path(&path).exists() {
        return Err(bad(format!(
            "no journal for execution {:?} at {}, and no unfinished run of a case of that id (runs are journaled under FIREBREAK_STATE_DIR, now {})",
            args.execution,
            path.display(),
            state_dir().display()
        )));
    }
    let (journal, start) = Journal::open(&path).map_err(|e| bad(e.to_string()))?;
    if start.runner.get("command").and_then(Value::as_str) == Some("respond") {
        return runtime(false)?.block_on(crate::respond::resume(journal, start, args.aws));
    }
    let runner: Runner = serde_json::from_value(start.runner.clone()).map_err(|e| {
        bad(format!(
            "{}: not a journal written by `firebreak run` ({e})",
            path.display()
        ))
    })?;
    let runtime = runtime(runner.fast_clock)?;
    runtime.block_on(resume(args, journal, start, runner))
}

async fn resume(
    args: ResumeArgs,
    journal: Journal,
    start: Start,
    runner: Runner,
) -> anyhow::Result<u8> {
    let replay = journal.replay();
    if replay.ended.is_some() {
        say!(
            "firebreak: execution {} had already ended",
            start.config.name
        );
    } else {
        say!(
            "firebreak: resuming execution {}: {} finished states and {} finished task attempts are taken from the journal",
            start.config.name,
            replay.exits.len(),
            replay.attempts.len()
        );
    }
    let steps = if replay.ended.is_none()
        && start.definition.tasks().iter().any(|(_, t)| {
            !is_callback(&t.resource) && !runner.mocks.iter().any(|(m, _)| *m == t.resource)
        }) {
        Some(step_runner(&runner).await?.0)
    } else {
        None
    };
    // A fast clock goes on from the journal's last time, so a wait in
    // progress keeps its place; a real one from now.
    let clock = match (runner.fast_clock, replay.events.last()) {
        (true, Some(e)) => TokioClock::starting_at(e.timestamp),
        _ => TokioClock::new(),
    };
    let executor = Executor::new(Arc::new(Tasks {
        mocks: scripts(&runner.mocks, &replay.attempts_per_resource),
        steps,
    }))
    .with_clock(Arc::new(clock))
    .with_max_events(runner.max_events);
    let journal = Arc::new(journal);
    warn_on_journal_failure(&journal);
    let (outcome, history) = executor.resume(journal.clone(), &start).await;
    finish(&outcome, &history, args.history, Some(&journal))
}

/// `{"status", "output", "error", "cause"}`, as DescribeExecution gives
/// them (absent fields are null).
fn outcome_json(o: &Outcome) -> Value {
    json!({
        "status": o.status,
        "output": o.output,
        "error": o.error,
        "cause": o.cause,
    })
}
