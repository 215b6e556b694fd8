//! `firebreak cases`: the account's cases (open, released, failed) with
//! their instance, when they were opened and the last run of each on this
//! machine, so an operator finds the way back to an incident.

use std::collections::BTreeMap;

use clap::Args;
use firebreak_steps::cases::{list_cases, CaseSummary};
use firebreak_steps::Mode;
use firebreak_workflows::exec::Journal;
use serde::Serialize;

use crate::session::{state_dir, Session};
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs};

#[derive(Debug, Args)]
pub(crate) struct CasesArgs {
    /// Bucket of the cases' evidence (default firebreak-evidence-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// A run of `respond` journaled on this machine.
#[derive(Clone, Debug, Serialize)]
struct LocalRun {
    execution: String,
    started: String,
    ended: bool,
}

#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    case: CaseSummary,
    /// The latest run of the case journaled on this machine.
    last_run: Option<LocalRun>,
}

/// The latest local `respond` run of each case, from the journals.
fn local_runs(account: &str) -> BTreeMap<String, (String, LocalRun)> {
    let mut runs: BTreeMap<String, (String, LocalRun)> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(state_dir().join("executions")) else {
        return runs;
    };
    for path in dir.filter_map(Result::ok).map(|e| e.path()) {
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        let Ok((start, ended)) = Journal::peek(&path) else {
            continue;
        };
        let field = |p: &str| {
            start
                .input
                .pointer(p)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        if field("/case/account_id") != account {
            continue;
        }
        let run = LocalRun {
            execution: start.config.name.clone(),
            started: start.start_time.clone(),
            ended,
        };
        let case = field("/case/case_id");
        let newer = runs.get(&case).is_none_or(|(_, r)| r.started < run.started);
        if newer {
            runs.insert(case, (field("/case/instance_id"), run));
        }
    }
    runs
}

pub(crate) async fn run(args: CasesArgs) -> anyhow::Result<u8> {
    if args.output == OutputFormat::Json {
        crate::json_errors();
    }
    let session = Session::open(&args.aws, Mode::Live, true).await?;
    let bucket = session
        .evidence_bucket(args.evidence_bucket.as_deref())
        .await?;
    let cases = list_cases(&session.ctx, &bucket)
        .await
        .map_err(anyhow::Error::new)?;
    let mut local = local_runs(&session.who.account_id);
    let mut listed: Vec<Listed> = cases
        .into_iter()
        .map(|c| Listed {
            last_run: local.remove(&c.case_id).map(|(_, r)| r),
            case: c,
        })
        .collect();
    // Runs stopped before the case's record was stored.
    for (case_id, (instance, run)) in local {
        listed.push(Listed {
            case: CaseSummary {
                case_id,
                instance_id: Some(instance),
                opened_at: None,
                status: "unknown".into(),
            },
            last_run: Some(run),
        });
    }
    match args.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&listed)?),
        OutputFormat::Human => print_table(&listed, &session),
    }
    Ok(exit::OK)
}

fn print_table(listed: &[Listed], session: &Session) {
    outln!(
        "Cases in account {} region {} ({} found)",
        session.who.account_id,
        session.region,
        listed.len()
    );
    if listed.is_empty() {
        return;
    }
    outln!(
        "{:<34} {:<21} {:<19} {:<21} LAST RUN ON THIS MACHINE",
        "CASE",
        "INSTANCE",
        "STATUS",
        "OPENED"
    );
    for l in listed {
        let last = match &l.last_run {
            None => "-".to_string(),
            Some(r) if r.ended => format!("{} (ended)", r.execution),
            Some(r) => format!(
                "{} (did not end: `firebreak resume {}`)",
                r.execution, r.execution
            ),
        };
        outln!(
            "{:<34} {:<21} {:<19} {:<21} {last}",
            l.case.case_id,
            l.case.instance_id.as_deref().unwrap_or("-"),
            l.case.status,
            l.case
                .opened_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
}
