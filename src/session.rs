//! What `respond`, `release` and `rehearse` share: AWS configuration and
//! identity, the step context, the evidence bucket check, and running a
//! compiled playbook through the local executor with live progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use aws_config::SdkConfig;
use chrono::Utc;
use firebreak_steps::case::{default_evidence_bucket, CaseFile, CaseInfo};
use firebreak_steps::config::{identity, load, ConfigError, Identity};
use firebreak_steps::context::CallRecord;
use firebreak_steps::ids::InstanceId;
use firebreak_steps::{AwsClients, Mode, Registry, StepContext, StepRunner};
use firebreak_workflows::compile::Compiled;
use firebreak_workflows::exec::journal::Start;
use firebreak_workflows::exec::{
    ExecutionConfig, Executor, History, HistoryEvent, Journal, JournalError, Outcome, TaskCall,
    TaskFailure, TaskHandler,
};
use firebreak_workflows::ErrorName;

use firebreak_workflows::context::ContextSource as _;
use firebreak_workflows::exec::callback::{wait_for_answer, CallbackStore as _, FileStore};
use serde_json::{json, Value};

use crate::{AwsArgs, BadInput};

pub(crate) struct Session {
    pub config: SdkConfig,
    pub who: Identity,
    pub region: String,
    pub ctx: StepContext,
    /// Said before each progress line when several runs share the
    /// terminal (the instance id).
    pub label: Option<String>,
    pub started: Instant,
    pub quiet: bool,
    /// How to finish the run if it is interrupted (said on Ctrl-C).
    finish_with: Arc<Mutex<Option<String>>>,
}

/// A run stopped by Ctrl-C or SIGTERM at a point where nothing was left
/// half done (exit 130).
#[derive(Debug)]
pub(crate) struct Interrupted {
    /// The states that finished, in order.
    pub finished: Vec<String>,
    /// The command that finishes the run.
    pub finish_with: Option<String>,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted; stopped at a safe point (not within an isolation move or a release's restore) after {}",
            if self.finished.is_empty() {
                "no step had finished".to_string()
            } else {
                format!("{} finished: {}", self.finished.len(), self.finished.join(", "))
            }
        )?;
        if let Some(c) = &self.finish_with {
            write!(f, "; to finish the run: {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Interrupted {}

impl Session {
    pub(crate) async fn open(aws: &AwsArgs, mode: Mode, quiet: bool) -> anyhow::Result<Session> {
        let config = load(&aws.options()).await.map_err(|e| match e {
            ConfigError::NoRegion
            | ConfigError::BadEndpoint { .. }
            | ConfigError::NoProfile { .. }
            | ConfigError::ProfileFiles { .. } => anyhow::Error::new(BadInput(e.to_string())),
        })?;
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        let who = {
            // Said while it waits: an endpoint that does not answer takes
            // the connect timeout and retries to fail.
            let ask = identity(&config);
            tokio::pin!(ask);
            let answer = tokio::select! {
                a = &mut ask => a,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                    if !quiet {
                        say!(
                            "firebreak: connecting to {} (region {region}) ...",
                            config.endpoint_url().unwrap_or("AWS")
                        );
                    }
                    ask.await
                }
            };
            answer.map_err(|e| {
                if aws.debug {
                    anyhow::anyhow!("{e}\n  the SDK's error: {}", e.debug)
                } else {
                    anyhow::anyhow!("{e} (--debug shows the SDK's whole error)")
                }
            })?
        };
        let started = Instant::now();
        let ctx = StepContext::new(
            AwsClients::new(&config),
            mode,
            who.account_id.clone(),
            region.clone(),
        )
        .with_progress(move |step, message| {
            if quiet {
                return;
            }
            if crate::live::enabled() {
                crate::live::draw(&elapsed(started), step, message);
            } else {
                say!("  [{}]     {step}: {message}", elapsed(started));
            }
        });
        Ok(Session {
            config,
            who,
            region,
            ctx,
            label: None,
            started,
            quiet,
            finish_with: Arc::new(Mutex::new(None)),
        })
    }

    /// Takes over Ctrl-C and SIGTERM for a run that changes things: the
    /// first asks the run to stop at the next point where nothing is half
    /// done (an isolation move in progress is finished first); a second
    /// stops at once. Both say how to finish the run.
    pub(crate) fn stop_safely_on_interrupt(&self) {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            say!("firebreak: warning: cannot handle Ctrl-C: an interrupt stops the run at once");
            return;
        };
        let interrupt = self.ctx.interrupt.clone();
        let finish_with = self.finish_with.clone();
        tokio::spawn(async move {
            let hint = || {
                finish_with
                    .lock()
                    .ok()
                    .and_then(|f| f.clone())
                    .map(|c| format!("; to finish the run: {c}"))
                    .unwrap_or_default()
            };
            let mut first = true;
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if first {
                    first = false;
                    if interrupt.request() {
                        say!("\nfirebreak: interrupt: finishing the critical part in progress (an isolation move, so no interface is left on an allow-all group, or a release's restore) before stopping; interrupt again to stop at once{}", hint());
                    } else {
                        say!("\nfirebreak: interrupt: stopping");
                    }
                } else {
                    say!("\nfirebreak: stopped at once (second interrupt){}", hint());
                    if crate::live::json() {
                        let finish = finish_with.lock().ok().and_then(|f| f.clone());
                        crate::print_json_error(
                            "stopped at once by a second interrupt",
                            "stopped at once: a step may have been cut short",
                            crate::exit::INTERRUPTED,
                            serde_json::json!({ "finish_with": finish }),
                        );
                    }
                    std::process::exit(i32::from(crate::exit::INTERRUPTED));
                }
            }
        });
    }

    /// The command said on an interrupt to finish the run.
    pub(crate) fn finish_with(&self, command: String) {
        if let Ok(mut f) = self.finish_with.lock() {
            *f = Some(command);
        }
    }

    /// firebreak's steps, run with this session's AWS access.
    pub(crate) fn step_runner(&self) -> StepRunner {
        StepRunner::new(Arc::new(Registry::standard()), self.ctx.clone())
    }

    /// The evidence bucket to use, and whether it exists.
    pub(crate) async fn evidence_bucket_named(
        &self,
        given: Option<&str>,
    ) -> anyhow::Result<(String, bool)> {
        let bucket = given
            .map(str::to_string)
            .unwrap_or_else(|| default_evidence_bucket(&self.who.account_id, &self.region));
        let exists = firebreak_steps::evidence::bucket_exists(&self.ctx, &bucket)
            .await
            .map_err(|e| self.aws_failure(e))?;
        Ok((bucket, exists))
    }

    /// The evidence bucket to use; it must exist (`firebreak setup` makes it).
    pub(crate) async fn evidence_bucket(&self, given: Option<&str>) -> anyhow::Result<String> {
        let (bucket, exists) = self.evidence_bucket_named(given).await?;
        if !exists {
            return Err(BadInput(format!(
                "the evidence bucket {bucket} does not exist in account {} region {}: create it with `firebreak setup` (or pass --evidence-bucket)",
                self.who.account_id, self.region
            ))
            .into());
        }
        Ok(bucket)
    }

    /// The case a run acts on, opened now by this session's caller in its
    /// account and region.
    pub(crate) fn case_info(
        &self,
        case_id: impl std::fmt::Display,
        instance_id: impl std::fmt::Display,
        evidence_bucket: String,
        evidence_lock: firebreak_steps::evidence::Lock,
    ) -> CaseInfo {
        CaseInfo {
            case_id: case_id.to_string(),
            instance_id: instance_id.to_string(),
            account_id: self.who.account_id.clone(),
            region: self.region.clone(),
            opened_at: chrono::Utc::now(),
            actor: self.who.arn.clone(),
            evidence_bucket,
            evidence_lock,
        }
    }

    /// How the case's evidence is locked: legal holds where the bucket has
    /// Object Lock (else said on stderr), and the custody key checked and
    /// named by its ARN.
    pub(crate) async fn evidence_lock(
        &self,
        bucket: &str,
        retention_days: Option<u32>,
        kms_key_id: Option<String>,
        custody_key: Option<&str>,
    ) -> anyhow::Result<firebreak_steps::evidence::Lock> {
        let legal_hold = firebreak_steps::evidence::object_lock_enabled(&self.ctx, bucket)
            .await
            .map_err(anyhow::Error::new)?;
        if !legal_hold {
            say!("warning: s3://{bucket} has no Object Lock: evidence cannot be put under legal hold or retention (make the bucket with `firebreak setup`)");
        }
        let custody_key = match custody_key {
            Some(k) => Some(
                firebreak_steps::evidence::custody::check_signing_key(&self.ctx, k)
                    .await
                    .map_err(|e| match e.name {
                        ErrorName::InvalidInput
                        | ErrorName::ResourceNotFound
                        | ErrorName::AwsRequestFailed => {
                            anyhow::Error::new(BadInput(format!("--custody-key: {}", e.message)))
                        }
                        _ => anyhow::Error::new(e),
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

    /// The instance's case tags, failing with bad input when the instance
    /// does not exist.
    pub(crate) async fn case_tag(
        &self,
        instance: &InstanceId,
    ) -> anyhow::Result<firebreak_steps::containment::ec2::CaseTag> {
        firebreak_steps::containment::ec2::case_tag(&self.ctx, instance)
            .await
            .map_err(|e| {
                if e.name == ErrorName::InstanceNotFound {
                    anyhow::Error::new(BadInput(format!(
                        "{instance} does not exist in account {} region {}: if it is elsewhere, pass its --region (or the --profile of its account) ({})",
                        self.who.account_id, self.region, e.message
                    )))
                } else {
                    self.aws_failure(e)
                }
            })
    }

    /// An AWS failure as the CLI says it: access denied names who was
    /// refused and where the permissions are listed.
    pub(crate) fn aws_failure(&self, e: firebreak_steps::StepError) -> anyhow::Error {
        if e.name == ErrorName::AccessDenied {
            anyhow::anyhow!(
                "access denied: {} ({} may not do this; docs/iam-permissions.md lists what each command needs)",
                e.message,
                self.who.arn
            )
        } else {
            anyhow::Error::new(e)
        }
    }

    /// Runs a compiled playbook on a case file; returns its outcome, its
    /// history and the AWS calls it made.
    pub(crate) async fn run(&self, compiled: &Compiled, input: &CaseFile) -> anyhow::Result<Run> {
        self.run_with(compiled, input, None).await
    }

    /// Runs like [`Session::run`], journaled (under `runner`, the record
    /// `firebreak resume` rebuilds the run from), so a killed run can be
    /// finished with `firebreak resume`.
    pub(crate) async fn run_journaled(
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
            let printer = Progress::new(self.started, self.label.clone());
            history.subscribe(move |e| printer.event(e));
        }
        let runner = Arc::new(NotingRunner::new(self, calls_before));
        let executor = Executor::new(runner.clone());
        let exec_config = ExecutionConfig {
            // Unique per run: two runs of a case in one second must not
            // share a journal.
            name: format!(
                "{}-{}-{}",
                input.case.case_id,
                Utc::now().format("%Y%m%dT%H%M%S"),
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            ),
            state_machine_name: format!("firebreak-{}", compiled.name),
            region: self.region.clone(),
            account: self.who.account_id.clone(),
            role_arn: self.who.arn.clone(),
        };
        let value = serde_json::to_value(input)?;
        let run_name = exec_config.name.clone();
        let interrupt = self.ctx.interrupt.clone();
        let run = async {
            match journal_runner {
                None => Ok::<_, anyhow::Error>(
                    executor
                        .run(&compiled.definition, value, &exec_config, &history)
                        .await,
                ),
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
                    self.finish_with(format!("firebreak resume {}", start.config.name));
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
                    Ok(outcome)
                }
            }
        };
        let outcome = tokio::select! {
            biased;
            outcome = run => outcome?,
            () = interrupt.stoppable() => {
                return Err(self.interrupted(&history).into())
            }
        };
        Ok(Run {
            name: run_name,
            outcome,
            history: history.events(),
            calls: self.ctx.calls.records().split_off(calls_before),
        })
    }
}

impl Session {
    /// What an interrupted run had done.
    fn interrupted(&self, history: &History) -> Interrupted {
        Interrupted {
            finished: history
                .events()
                .iter()
                .filter(|e| e.kind.ends_with("StateExited"))
                .filter_map(|e| e.detail()?.get("name")?.as_str().map(str::to_string))
                .collect(),
            finish_with: self.finish_with.lock().ok().and_then(|f| f.clone()),
        }
    }
}

/// Resumes a journaled playbook run (opened from its journal), with this
/// session's AWS access.
pub(crate) async fn resume_run(
    session: &Session,
    journal: Journal,
    start: &Start,
) -> anyhow::Result<Run> {
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
    session.finish_with(format!("firebreak resume {}", start.config.name));
    let history = History::restore(journal.replay().events.clone());
    if !session.quiet {
        let printer = Progress::new(session.started, session.label.clone());
        history.subscribe(move |e| printer.event(e));
    }
    let interrupt = session.ctx.interrupt.clone();
    let outcome = tokio::select! {
        biased;
        outcome = executor.resume_into(journal, start, &history) => outcome,
        () = interrupt.stoppable() => return Err(session.interrupted(&history).into()),
    };
    calls.extend(session.ctx.calls.records().split_off(calls_before));
    Ok(Run {
        name: start.config.name.clone(),
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
    /// A dry run: callback tasks do not wait for their answer.
    dry_run: bool,
}

impl NotingRunner {
    fn new(session: &Session, calls_before: usize) -> NotingRunner {
        NotingRunner {
            steps: session.step_runner(),
            calls: session.ctx.calls.clone(),
            journal: OnceLock::new(),
            noted: Mutex::new(calls_before),
            dry_run: session.ctx.is_dry_run(),
        }
    }
}

#[async_trait::async_trait]
impl TaskHandler for NotingRunner {
    async fn invoke(&self, call: TaskCall) -> Result<serde_json::Value, TaskFailure> {
        let result = if self.steps.handles_callback(&call.resource, &call.input) {
            // The step asks (approval request), then the run waits for
            // the token's answer in the local token store; a dry run does
            // not wait, it plans on.
            let opened = if self.dry_run {
                Ok(())
            } else {
                open_token(&call)
            };
            match opened {
                Err(e) => Err(e),
                Ok(()) => match self.steps.start_callback(call.input.clone()).await {
                    Ok(asked) if self.dry_run => Ok(asked),
                    Ok(_) => wait_for_token(&call).await,
                    Err(e) => {
                        if !self.dry_run {
                            close_token(&call);
                        }
                        Err(e)
                    }
                },
            }
        } else {
            self.steps.invoke(call).await
        };
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
pub(crate) fn state_dir() -> std::path::PathBuf {
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

/// The state directory (made 0700 if missing), refused when another user
/// owns it or others may write to it: a planted journal would run its
/// `--mock-command` on resume, a planted token file would answer a task.
pub(crate) fn secure_state_dir() -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = state_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| anyhow::anyhow!("cannot make the state directory {}: {e}", dir.display()))?;
    let folders = ["executions", "tokens", "locks", "decoys"];
    for d in std::iter::once(dir.clone()).chain(folders.iter().map(|f| dir.join(f))) {
        // The state directory itself may be a link to a directory of
        // yours; the folders in it are checked as they are.
        let meta = if d == dir {
            std::fs::metadata(&d)
        } else {
            std::fs::symlink_metadata(&d)
        };
        let Ok(meta) = meta else {
            continue;
        };
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(BadInput(format!(
                "the state directory {} belongs to user id {}, not to you ({me}): firebreak will not read journals or task answers someone else can plant (set FIREBREAK_STATE_DIR to a directory of yours)",
                d.display(),
                meta.uid()
            ))
            .into());
        }
        if !meta.is_dir() || meta.mode() & 0o022 != 0 {
            return Err(BadInput(format!(
                "the state directory {} is {}: firebreak will not read journals or task answers someone else can plant (chmod 700 {0})",
                d.display(),
                if meta.is_dir() {
                    format!("writable by others (mode {:o})", meta.mode() & 0o777)
                } else {
                    "not a directory".to_string()
                }
            ))
            .into());
        }
        tighten(&d, &meta);
    }
    Ok(dir)
}

/// Makes a folder of the state directory and its files its owner's only,
/// as firebreak makes them now (earlier versions left them 0755 and 0644).
fn tighten(dir: &std::path::Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if meta.mode() & 0o077 != 0 {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(m) = e.metadata() else { continue };
        if m.is_file() && m.mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600));
        }
    }
}

pub(crate) use firebreak_workflows::exec::callback::write_private;

/// A directory of the state directory, made 0700.
pub(crate) fn private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    secure_state_dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", path.display()))?;
    secure_state_dir()?;
    Ok(())
}

/// A local lock on one instance, held for a whole `respond` or `release`
/// (released when dropped, or when the process dies): two runs on one
/// instance go one after the other, the second continuing the first's
/// case.
pub(crate) struct InstanceLock {
    _file: std::fs::File,
}

/// Takes the instance's lock, waiting (and saying so) while another run
/// holds it.
pub(crate) async fn lock_instance(
    instance: &InstanceId,
    doing: &str,
) -> anyhow::Result<InstanceLock> {
    use std::io::{Seek, Write};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = secure_state_dir()?.join("locks");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let path = dir.join(format!("{instance}.lock"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            say!(
                "firebreak: another firebreak run is working on {instance} ({}); waiting for it to end, then this one continues its case",
                holder.trim()
            );
            file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await?
                .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow::anyhow!("cannot lock {}: {e}", path.display()))
        }
    }
    // Who holds it, for the next one to say.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(
        file,
        "{doing}, pid {}, since {}",
        std::process::id(),
        Utc::now().format("%H:%M:%S")
    );
    Ok(InstanceLock { _file: file })
}

/// Sets a journal aside (`NAME.jsonl.abandoned`) so it is never resumed;
/// says where it went.
pub(crate) fn abandon(path: &std::path::Path) -> String {
    let mut to = path.as_os_str().to_os_string();
    to.push(".abandoned");
    let to = std::path::PathBuf::from(to);
    match std::fs::rename(path, &to) {
        Ok(()) => to.display().to_string(),
        Err(e) => format!("could not move {}: {e}", path.display()),
    }
}

/// Sets aside the unfinished `respond` runs of a case on this machine
/// (its release closed it: resuming one would undo the release).
pub(crate) fn abandon_unfinished(instance: &InstanceId, account: &str, case: &str) {
    let mut seen = std::collections::HashSet::new();
    while let Some((path, start)) = unfinished_run(instance, account) {
        if start
            .input
            .pointer("/case/case_id")
            .and_then(|c| c.as_str())
            != Some(case)
            || !seen.insert(path.clone())
        {
            break;
        }
        let aside = abandon(&path);
        say!(
            "firebreak release: the unfinished run {} of case {case} is set aside ({aside}): the case is released",
            start.config.name
        );
    }
}

/// A journaled run of `respond` on the instance that did not end: its
/// journal's path and start.
pub(crate) fn unfinished_run(
    instance: &InstanceId,
    account: &str,
) -> Option<(std::path::PathBuf, Start)> {
    let dir = state_dir().join("executions");
    let mut found: Vec<(std::path::PathBuf, Start)> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .filter(|p| !Journal::broken_path(p).exists())
        .filter_map(|p| {
            let (start, ended) = Journal::peek(&p).ok()?;
            let case = start.input.get("case")?;
            let ours = case.get("instance_id")?.as_str()? == instance.as_str()
                && case.get("account_id")?.as_str()? == account
                && start.runner.get("command").and_then(|c| c.as_str()) == Some("respond");
            (ours && !ended).then_some((p, start))
        })
        .collect();
    found.sort_by(|a, b| a.1.start_time.cmp(&b.1.start_time));
    found.pop()
}

/// Creates the journal of a new run (a name already taken is bad input,
/// exit 2), warning on stderr if writing it fails later.
pub(crate) fn create_journal(start: &Start) -> anyhow::Result<(Arc<Journal>, std::path::PathBuf)> {
    secure_state_dir()?;
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
pub(crate) fn warn_on_journal_failure(journal: &Journal) {
    journal.on_failure(|e| {
        say!("firebreak: warning: cannot write the journal: {e}; the run goes on, but cannot be resumed")
    });
}

pub(crate) fn journal_path(name: &str) -> std::path::PathBuf {
    state_dir().join("executions").join(format!("{name}.jsonl"))
}

/// One playbook run.
pub(crate) struct Run {
    /// The execution's name (the journal's).
    pub name: String,
    pub outcome: Outcome,
    pub history: Vec<HistoryEvent>,
    pub calls: Vec<firebreak_steps::context::CallRecord>,
}

impl Run {
    pub(crate) fn report(
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

pub(crate) fn elapsed(since: Instant) -> String {
    let s = since.elapsed().as_secs_f64();
    format!("{:02}:{:04.1}", (s / 60.0) as u64, s % 60.0)
}

/// Prints one history event as a progress line.
pub(crate) type ProgressPrinter = Box<dyn Fn(&HistoryEvent) + Send + Sync>;

/// The progress printer of a session (none when quiet), for histories
/// that come from elsewhere (a remote execution).
pub(crate) fn progress_printer(session: &Session) -> Option<ProgressPrinter> {
    if session.quiet {
        return None;
    }
    let p = Progress::new(session.started, session.label.clone());
    Some(Box::new(move |e| p.event(e)))
}

/// Prints task progress from the history as it is recorded.
struct Progress {
    started: Instant,
    /// Said before each line (`[i-...]`), when several runs print.
    label: String,
    /// Per state: whether it failed since it was entered.
    failed: Mutex<HashMap<String, bool>>,
}

impl Progress {
    fn new(started: Instant, label: Option<String>) -> Progress {
        Progress {
            started,
            label: label.map(|l| format!(" {l}")).unwrap_or_default(),
            failed: Mutex::new(HashMap::new()),
        }
    }

    fn event(&self, e: &HistoryEvent) {
        let t = format!("{}{}", elapsed(self.started), self.label);
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

/// Refuses to create and delete resources outside a sandbox: a local
/// endpoint (moto), or an account the user names explicitly.
pub(crate) fn confirm_sandbox(session: &Session, account: Option<&str>) -> anyhow::Result<()> {
    // Only an endpoint on this machine is taken for a sandbox: a custom
    // endpoint may also be a real one (FIPS, VPC endpoints).
    let local = session.config.endpoint_url().is_some_and(|u| {
        [
            "http://127.0.0.1",
            "http://localhost",
            "http://[::1]",
            "https://127.0.0.1",
            "https://localhost",
        ]
        .iter()
        .any(|p| u.starts_with(p))
    });
    if local {
        return Ok(());
    }
    match account {
        Some(a) if a == session.who.account_id => Ok(()),
        Some(a) => Err(BadInput(format!(
            "--sandbox-account {a} is not the account these credentials are for ({})",
            session.who.account_id
        ))
        .into()),
        None => Err(BadInput(format!(
            "this creates and deletes resources: pass --sandbox-account {} to confirm the account is a sandbox",
            session.who.account_id
        ))
        .into()),
    }
}

/// The callback tokens of local runs, in the state directory (checked
/// to be its owner's only).
pub(crate) fn token_store() -> anyhow::Result<FileStore> {
    secure_state_dir()?;
    Ok(FileStore::new(state_dir().join("tokens")))
}

/// Opens the task's token in the store before its step asks for the
/// answer, so an answer that comes at once finds the task waiting.
pub(crate) fn open_token(call: &TaskCall) -> Result<(), TaskFailure> {
    let failed = |m: String| TaskFailure::new(ErrorName::StatesTaskFailed.as_str(), m);
    let store = token_store().map_err(|e| failed(format!("{e:#}")))?;
    let token = call
        .context
        .context()
        .pointer("/Task/Token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    store
        .open(
            &token,
            &json!({
                "execution": call.context.context().pointer("/Execution/Name"),
                "state": call.state_name,
            }),
        )
        .map_err(|e| failed(e.to_string()))
}

/// Closes a token opened by [`open_token`] whose step failed to ask.
pub(crate) fn close_token(call: &TaskCall) {
    if let (Ok(store), Some(token)) = (
        token_store(),
        call.context
            .context()
            .pointer("/Task/Token")
            .and_then(Value::as_str),
    ) {
        store.close(token);
    }
}

/// Waits until `task-success`, `task-failure`, `approve` or `deny`
/// answers this attempt's token (see `firebreak_workflows::exec::callback`).
pub(crate) async fn wait_for_token(call: &TaskCall) -> Result<Value, TaskFailure> {
    let store = token_store()
        .map_err(|e| TaskFailure::new(ErrorName::StatesTaskFailed.as_str(), format!("{e:#}")))?;
    let approval = call.input.pointer("/Payload/step").and_then(Value::as_str)
        == Some(
            <firebreak_steps::notify::RequestApproval as firebreak_workflows::step::StepDef>::NAME,
        );
    // Polling a file: the answer comes from another process, and a file
    // also survives this one being killed and resumed.
    wait_for_answer(&store, call, std::time::Duration::from_millis(100), |token| {
        if approval {
            let instance = call
                .input
                .pointer("/Payload/input/instance_id")
                .and_then(Value::as_str)
                .unwrap_or("the instance");
            say!(
                "firebreak: {instance} waits for approval before the first change (nothing has been changed); answer with\n  firebreak approve {token}\n  firebreak deny {token} --reason WHY"
            );
            return;
        }
        say!(
            "firebreak: state '{}' waits for its task token; answer with\n  firebreak task-success {token} --output '{{...}}'\n  firebreak task-failure {token} --error ERROR --cause CAUSE{}",
            call.state_name,
            match call.heartbeat_seconds {
                Some(s) => format!("\n  and send `firebreak task-heartbeat {token}` at least every {s} s"),
                None => String::new(),
            }
        );
    })
    .await
}
