//! `firebreak respond`: run a playbook against an instance now, locally,
//! with live progress, ending with a summary.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use clap::{Args, ValueEnum};
use firebreak_steps::case::{CaseFile, CaseId, CaseInfo, InstanceId};
use firebreak_steps::config::{identity, load, ConfigError};
use firebreak_steps::{AwsClients, Mode, Registry, StepContext, StepRunner};
use firebreak_workflows::exec::{ExecutionConfig, Executor, History, HistoryEvent};
use firebreak_workflows::ErrorName;

use crate::summary::{Summary, SummaryFormat};
use crate::{AwsArgs, BadInput};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct RespondArgs {
    /// The compromised instance (i-...).
    #[arg(long)]
    pub instance: String,
    /// The playbook to run.
    #[arg(long, default_value = "ec2-contain")]
    pub playbook: String,
    /// Case id (default: the case the instance is tagged with, or a new one).
    #[arg(long)]
    pub case: Option<String>,
    /// Change nothing: list every call in order, send EC2 mutations with
    /// DryRun=true and show whether each would be allowed.
    #[arg(long)]
    pub dry_run: bool,
    /// Summary format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// No progress lines on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub async fn run(args: RespondArgs) -> anyhow::Result<u8> {
    let instance: InstanceId = args
        .instance
        .parse()
        .map_err(|e: firebreak_steps::case::IdError| BadInput(e.to_string()))?;
    let given_case: Option<CaseId> = match &args.case {
        Some(c) => Some(
            c.parse()
                .map_err(|e: firebreak_steps::case::IdError| BadInput(e.to_string()))?,
        ),
        None => None,
    };
    let compiled =
        firebreak_playbooks::compile(&args.playbook).map_err(|e| BadInput(e.to_string()))?;

    let config = load(&args.aws.options()).await.map_err(|e| match e {
        ConfigError::NoRegion | ConfigError::BadEndpoint { .. } => {
            anyhow::Error::new(BadInput(e.to_string()))
        }
    })?;
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let who = identity(&config).await?;
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Live
    };
    let quiet = args.quiet;
    let started = Instant::now();
    let ctx = StepContext::new(
        AwsClients::new(&config),
        mode,
        who.account_id.clone(),
        region.clone(),
    )
    .with_progress(move |step, message| {
        if !quiet {
            eprintln!("  [{}]     {step}: {message}", elapsed(started));
        }
    });

    // The instance must exist before anything starts; its tag names the
    // case already open for it.
    let open = firebreak_steps::ec2::open_case(&ctx, &instance)
        .await
        .map_err(|e| {
            if e.name == ErrorName::InstanceNotFound {
                anyhow::Error::new(BadInput(e.message))
            } else {
                anyhow::anyhow!("{e}")
            }
        })?;
    let (case, continuing) = match (given_case, open) {
        (Some(c), _) => (c, false),
        (None, Some(c)) => (c, true),
        (None, None) => (CaseId::generate(Utc::now(), &instance), false),
    };
    let opened_at = Utc::now();
    let input = CaseFile {
        case: CaseInfo {
            case_id: case.to_string(),
            instance_id: instance.to_string(),
            account_id: who.account_id.clone(),
            region: region.clone(),
            opened_at,
            actor: who.arn.clone(),
        },
    };
    if !args.quiet {
        eprintln!(
            "firebreak {}: {} on {instance} (account {}, region {region}), case {case}{}",
            if args.dry_run { "dry run" } else { "respond" },
            args.playbook,
            who.account_id,
            if continuing {
                " (continuing the case the instance is tagged with)"
            } else {
                ""
            },
        );
    }

    let history = History::new();
    if !args.quiet {
        let printer = Progress::new(started);
        history.subscribe(move |e| printer.event(e));
    }
    let runner = StepRunner::new(Arc::new(Registry::standard()), ctx.clone());
    let executor = Executor::new(Arc::new(runner));
    let exec_config = ExecutionConfig {
        name: format!("{case}-{}", opened_at.format("%Y%m%dT%H%M%S")),
        state_machine_name: format!("firebreak-{}", args.playbook),
        region: region.clone(),
        account: who.account_id.clone(),
        role_arn: who.arn.clone(),
    };
    let input_value = serde_json::to_value(&input).context("cannot build the case file")?;
    let outcome = executor
        .run(&compiled.definition, input_value, &exec_config, &history)
        .await;

    let summary = Summary::build(
        &args.playbook,
        &input.case,
        mode,
        &outcome,
        ctx.calls.records(),
        started.elapsed(),
    );
    match args.output {
        OutputFormat::Human => summary.print(SummaryFormat::Human),
        OutputFormat::Json => summary.print(SummaryFormat::Json),
    }
    let _ = std::io::stdout().flush();
    Ok(summary.exit_code())
}

fn elapsed(since: Instant) -> String {
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
                .and_then(|d| d.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or("")
        };
        match e.kind.as_str() {
            "TaskStateEntered" => {
                let name = field("name").to_string();
                eprintln!("  [{t}] -> {name}");
                if let Ok(mut f) = self.failed.lock() {
                    f.insert(name, false);
                }
            }
            "LambdaFunctionFailed" | "TaskFailed" | "LambdaFunctionTimedOut" | "TaskTimedOut" => {
                eprintln!("  [{t}]    failed: {}: {}", field("error"), field("cause"));
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
                    eprintln!("  [{t}] !! {name}: failed, recorded on the case; going on");
                } else {
                    eprintln!("  [{t}] ok {name}");
                }
            }
            "LambdaFunctionScheduled" | "TaskScheduled" => {
                // A task scheduled again after a failure is a retry.
                if let Ok(mut f) = self.failed.lock() {
                    if f.values().any(|v| *v) {
                        eprintln!("  [{t}]    retrying");
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
