//! What `respond`, `release` and `rehearse` share: AWS configuration and
//! identity, the step context, the evidence bucket check, and running a
//! compiled playbook through the local executor with live progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use aws_config::SdkConfig;
use chrono::Utc;
use firebreak_steps::case::{default_evidence_bucket, CaseFile, CaseId, InstanceId};
use firebreak_steps::config::{identity, load, ConfigError, Identity};
use firebreak_steps::context::CallRecord;
use firebreak_steps::{AwsClients, Mode, Registry, StepContext, StepRunner};
use firebreak_workflows::compile::Compiled;
use firebreak_workflows::exec::journal::Start;
use firebreak_workflows::exec::{
    ExecutionConfig, Executor, History, HistoryEvent, Journal, JournalError, Outcome, TaskCall,
    TaskFailure, TaskHandler,
};
use firebreak_workflows::ErrorName;

use crate::{AwsArgs, BadInput};

pub struct Session {
    pub config: SdkConfig,
    pub who: Identity,
    pub region: String,
    pub ctx: StepContext,
    pub started: Instant,
    pub quiet: bool,
}

impl Session {
    pub async fn open(aws: &AwsArgs, mode: Mode, quiet: bool) -> anyhow::Result<Session> {
        let config = load(&aws.options()).await.map_err(|e| match e {
            ConfigError::NoRegion | ConfigError::BadEndpoint { .. } => {
                anyhow::Error::new(BadInput(e.to_string()))
            }
        })?;
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        let who = identity(&config).await?;
        let started = Instant::now();
        let ctx = StepContext::new(
            AwsClients::new(&config),
            mode,
            who.account_id.clone(),
            region.clone(),
        )
        .with_progress(move |step, message| {
            if !quiet {
                say!("  [{}]     {step}: {message}", elapsed(started));
            }
        });
        Ok(Session {
            config,
            who,
            region,
            ctx,
            started,
            quiet,
        })
    }

    /// firebreak's steps, run with this session's AWS access.
    pub fn step_runner(&self) -> StepRunner {
        StepRunner::new(Arc::new(Registry::standard()), self.ctx.clone())
    }

    /// The evidence bucket to use; it must exist (`firebreak setup` makes it).
    pub async fn evidence_bucket(&self, given: Option<&str>) -> anyhow::Result<String> {
        let bucket = given
            .map(str::to_string)
            .unwrap_or_else(|| default_evidence_bucket(&self.who.account_id, &self.region));
        let exists = firebreak_steps::evidence::bucket_exists(&self.ctx, &bucket)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !exists {
            return Err(BadInput(format!(
                "the evidence bucket {bucket} does not exist in account {} region {}: create it with `firebreak setup` (or pass --evidence-bucket)",
                self.who.account_id, self.region
            ))
            .into());
        }
        Ok(bucket)
    }

    /// How the case's evidence is locked: legal holds where the bucket has
    /// Object Lock (else said on stderr), and the custody key checked and
    /// named by its ARN.
    pub async fn evidence_lock(
        &self,
        bucket: &str,
        retention_days: Option<u32>,
        kms_key_id: Option<String>,
        custody_key: Option<&str>,
    ) -> anyhow::Result<firebreak_steps::evidence::Lock> {
        let legal_hold = firebreak_steps::evidence::object_lock_enabled(&self.ctx, bucket)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !legal_hold {
            say!("warning: s3://{bucket} has no Object Lock: evidence cannot be put under legal hold or retention (make the bucket with `firebreak setup`)");
        }
        let custody_key = match custody_key {
            Some(k) => Some(
                firebreak_steps::custody::check_signing_key(&self.ctx, k)
                    .await
                    .map_err(|e| match e.name {
                        ErrorName::InvalidInput
                        | ErrorName::ResourceNotFound
                        | ErrorName::AwsRequestFailed => {
                            anyhow::Error::new(BadInput(format!("--custody-key: {}", e.message)))
                        }
                        _ => anyhow::anyhow!("{e}"),
                    })?,
            ),
            None => None,
        };
        Ok(firebreak_steps::evidence::Lock {
            retention_days,
            kms_key_id,
            legal_hold,
            custody_key,
        })
    }

    /// The case open for an instance (from its tags), failing with bad
    /// input when the instance does not exist.
    pub async fn open_case(&self, instance: &InstanceId) -> anyhow::Result<Option<CaseId>> {
        firebreak_steps::ec2::open_case(&self.ctx, instance)
            .await
            .map_err(|e| {
                if e.name == ErrorName::InstanceNotFound {
                    anyhow::Error::new(BadInput(e.message))
                } else {
                    anyhow::anyhow!("{e}")
                }
            })
    }

    /// Runs a compiled playbook on a case file; returns its outcome, its
    /// history and the AWS calls it made.
    pub async fn run(&self, compiled: &Compiled, input: &CaseFile) -> anyhow::Result<Run> {
        self.run_with(compiled, input, None).await
    }

    /// Runs like [`Session::run`], journaled (under `runner`, the record
    /// `firebreak resume` rebuilds the run from), so a killed run can be
    /// finished with `firebreak resume`.
    pub async fn run_journaled(
        &self,
        compiled: &Compiled,
        input: &CaseFile,
        runner: serde_json::Value,
    ) -> anyhow::Result<Run> {
        self.run_with(compiled, input, Some(runner)).await
    }

    async fn run_with(
        &self,
        compiled: &Compiled,
        input: &CaseFile,
        journal_runner: Option<serde_json::Value>,
    ) -> anyhow::Result<Run> {
        let calls_before = self.ctx.calls.records().len();
        let history = History::new();
        if !self.quiet {
            let printer = Progress::new(self.started);
            history.subscribe(move |e| printer.event(e));
        }
        let runner = Arc::new(NotingRunner::new(self, calls_before));
        let executor = Executor::new(runner.clone());
        let exec_config = ExecutionConfig {
            name: format!(
                "{}-{}",
                input.case.case_id,
                Utc::now().format("%Y%m%dT%H%M%S")
            ),
            state_machine_name: format!("firebreak-{}", compiled.name),
            region: self.region.clone(),
            account: self.who.account_id.clone(),
            role_arn: self.who.arn.clone(),
        };
        let value = serde_json::to_value(input)?;
        let outcome = match journal_runner {
            None => {
                executor
                    .run(&compiled.definition, value, &exec_config, &history)
                    .await
            }
            Some(record) => {
                let start = Start {
                    definition: compiled.definition.clone(),
                    input: value,
                    config: exec_config,
                    start_time: firebreak_workflows::time::format_timestamp(Utc::now()),
                    runner: record,
                };
                let (journal, path) = create_journal(&start)?;
                let _ = runner.journal.set(journal.clone());
                if !self.quiet {
                    say!(
                        "  execution {} (journal {}); if this run is interrupted, `firebreak resume {}` finishes it",
                        start.config.name,
                        path.display(),
                        start.config.name
                    );
                }
                let outcome = executor
                    .run_journaled(journal.clone(), &start, &history)
                    .await;
                if journal.write_error().is_some() {
                    say!("firebreak: warning: this run's journal could not be written (said when it happened); the run cannot be resumed");
                }
                outcome
            }
        };
        Ok(Run {
            outcome,
            history: history.events(),
            calls: self.ctx.calls.records().split_off(calls_before),
        })
    }
}

/// Resumes a journaled playbook run (opened from its journal), with this
/// session's AWS access.
pub async fn resume_run(session: &Session, journal: Journal, start: &Start) -> anyhow::Result<Run> {
    let calls_before = session.ctx.calls.records().len();
    let runner = Arc::new(NotingRunner::new(session, calls_before));
    let executor = Executor::new(runner.clone());
    warn_on_journal_failure(&journal);
    // The calls the run made before it was cut off, as it noted them.
    let mut calls: Vec<CallRecord> = journal
        .replay()
        .notes
        .iter()
        .filter_map(|n| serde_json::from_value(n.get("call")?.clone()).ok())
        .collect();
    let journal = Arc::new(journal);
    let _ = runner.journal.set(journal.clone());
    let (outcome, history) = executor.resume(journal, start).await;
    calls.extend(session.ctx.calls.records().split_off(calls_before));
    Ok(Run {
        outcome,
        history: history.events(),
        calls,
    })
}

/// The step runner of a run, which notes in the journal (once it has one)
/// the AWS calls made so far each time a step attempt ends: the summary of
/// a resumed run then lists the calls of the whole run, except those of a
/// step cut off by the kill that no later step end noted (the step runs
/// again, and its second run's calls are listed).
struct NotingRunner {
    steps: StepRunner,
    calls: firebreak_steps::context::CallLog,
    journal: OnceLock<Arc<Journal>>,
    /// How many of the session's calls are noted (or were made before).
    noted: Mutex<usize>,
}

impl NotingRunner {
    fn new(session: &Session, calls_before: usize) -> NotingRunner {
        NotingRunner {
            steps: session.step_runner(),
            calls: session.ctx.calls.clone(),
            journal: OnceLock::new(),
            noted: Mutex::new(calls_before),
        }
    }
}

#[async_trait::async_trait]
impl TaskHandler for NotingRunner {
    async fn invoke(&self, call: TaskCall) -> Result<serde_json::Value, TaskFailure> {
        let result = self.steps.invoke(call).await;
        if let (Some(journal), Ok(mut noted)) = (self.journal.get(), self.noted.lock()) {
            let records = self.calls.records();
            for r in records.iter().skip(*noted) {
                journal.append_note(&serde_json::json!({ "call": r }));
            }
            *noted = records.len();
        }
        result
    }
}

/// Where journals are kept: `FIREBREAK_STATE_DIR`, else
/// `$XDG_STATE_HOME/firebreak`, else `~/.local/state/firebreak`.
pub fn state_dir() -> std::path::PathBuf {
    // Hand-written: three environment variables do not justify a crate.
    use std::path::PathBuf;
    if let Some(d) = std::env::var_os("FIREBREAK_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("firebreak");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/state/firebreak")
}

/// The journal of the execution `name`.
/// Creates the journal of a new run (a name already taken is bad input,
/// exit 2), warning on stderr if writing it fails later.
pub fn create_journal(start: &Start) -> anyhow::Result<(Arc<Journal>, std::path::PathBuf)> {
    let path = journal_path(&start.config.name);
    let journal = Journal::create(&path, start).map_err(|e| match e {
        JournalError::Exists { .. } | JournalError::NameTaken { .. } => {
            anyhow::Error::new(BadInput(e.to_string()))
        }
        other => anyhow::anyhow!("{other}"),
    })?;
    warn_on_journal_failure(&journal);
    Ok((Arc::new(journal), path))
}

/// Warns on stderr as soon as a journal write fails: the run goes on (a
/// containment must not stop for a full disk), but cannot be resumed.
pub fn warn_on_journal_failure(journal: &Journal) {
    journal.on_failure(|e| {
        say!("firebreak: warning: cannot write the journal: {e}; the run goes on, but cannot be resumed")
    });
}

pub fn journal_path(name: &str) -> std::path::PathBuf {
    state_dir().join("executions").join(format!("{name}.jsonl"))
}

/// One playbook run.
pub struct Run {
    pub outcome: Outcome,
    pub history: Vec<HistoryEvent>,
    pub calls: Vec<firebreak_steps::context::CallRecord>,
}

impl Run {
    pub fn report(
        &self,
        playbook: &str,
        case: &firebreak_steps::case::CaseInfo,
        mode: Mode,
        took: std::time::Duration,
    ) -> firebreak_playbooks::report::Report {
        firebreak_playbooks::report::Report::build(
            playbook,
            case,
            mode,
            &self.outcome,
            &self.history,
            self.calls.clone(),
            took,
        )
    }
}

pub fn elapsed(since: Instant) -> String {
    let s = since.elapsed().as_secs_f64();
    format!("{:02}:{:04.1}", (s / 60.0) as u64, s % 60.0)
}

/// Prints task progress from the history as it is recorded.
struct Progress {
    started: Instant,
    /// Per state: whether it failed since it was entered.
    failed: Mutex<HashMap<String, bool>>,
}

impl Progress {
    fn new(started: Instant) -> Progress {
        Progress {
            started,
            failed: Mutex::new(HashMap::new()),
        }
    }

    fn event(&self, e: &HistoryEvent) {
        let t = elapsed(self.started);
        let detail = e.detail();
        let field = |k: &str| {
            detail
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or("")
        };
        match e.kind.as_str() {
            "TaskStateEntered" => {
                let name = field("name").to_string();
                say!("  [{t}] -> {name}");
                if let Ok(mut f) = self.failed.lock() {
                    f.insert(name, false);
                }
            }
            "LambdaFunctionFailed" | "TaskFailed" | "LambdaFunctionTimedOut" | "TaskTimedOut" => {
                say!("  [{t}]    failed: {}: {}", field("error"), field("cause"));
                if let Ok(mut f) = self.failed.lock() {
                    for v in f.values_mut() {
                        *v = true;
                    }
                }
            }
            "TaskStateExited" => {
                let name = field("name");
                let failed = self
                    .failed
                    .lock()
                    .ok()
                    .and_then(|mut f| f.remove(name))
                    .unwrap_or(false);
                if failed {
                    say!("  [{t}] !! {name}: failed, recorded on the case; going on");
                } else {
                    say!("  [{t}] ok {name}");
                }
            }
            "LambdaFunctionScheduled" | "TaskScheduled" => {
                // A task scheduled again after a failure is a retry.
                if let Ok(mut f) = self.failed.lock() {
                    if f.values().any(|v| *v) {
                        say!("  [{t}]    retrying");
                        for v in f.values_mut() {
                            *v = false;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
