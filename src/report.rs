//! The incident report: written into the case when a run ends (`respond`,
//! locally or `--remote`), and read back with `firebreak report --case ID
//! [--format md|json|html]`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use firebreak_playbooks::alerts::Alert;
use firebreak_playbooks::incident::IncidentReport;
use firebreak_playbooks::report::Report;
use firebreak_steps::evidence::report::{self as stored, ReportInfo};
use firebreak_steps::ids::{CaseId, IdError};
use firebreak_steps::Mode;
use firebreak_workflows::asl::StateMachine;
use firebreak_workflows::exec::HistoryEvent;

use crate::session::Session;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    /// Markdown, with the playbook's graph in Mermaid.
    Md,
    /// The report itself, as stored.
    Json,
    /// One self-contained HTML page.
    Html,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The case.
    #[arg(long)]
    pub case: String,
    /// Which run of the case (its execution name; default: the latest).
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The case's evidence bucket (default firebreak-evidence-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Builds the incident report of a finished live run and stores it in the
/// case. A failure to store is said, never fails the run: containment is
/// done by then.
pub(crate) async fn write_after_run(
    session: &Session,
    report: &Report,
    history: &[HistoryEvent],
    definition: &StateMachine,
    alert: Option<&Alert>,
    run: &str,
    case: &firebreak_steps::case::CaseInfo,
) {
    let (bucket, lock) = (&case.evidence_bucket, &case.evidence_lock);
    if report.mode != Mode::Live {
        return;
    }
    let mut incident = IncidentReport::build(report, history, definition, alert);
    incident.header.execution_name = Some(run.to_string());
    let json = match incident.to_json() {
        Ok(j) => j.into_bytes(),
        Err(e) => {
            say!("firebreak: warning: the incident report could not be written: {e}");
            return;
        }
    };
    let info = ReportInfo {
        case_id: &report.case_id,
        instance_id: &report.instance_id,
        run,
        actor: &report.actor,
    };
    match stored::store(
        &session.ctx,
        bucket,
        lock,
        &info,
        json,
        incident.to_markdown().into_bytes(),
    )
    .await
    {
        Ok(Some(s)) if !session.quiet => say!(
            "  incident report: {} (sha256 {}); read it with `firebreak report --case {}`",
            s.location(),
            s.digest.sha256,
            report.case_id
        ),
        Ok(_) => {}
        Err(e) => say!(
            "firebreak: warning: the incident report of case {} could not be stored in {bucket}: {}",
            report.case_id,
            e.message
        ),
    }
}

pub(crate) async fn run(args: ReportArgs) -> anyhow::Result<u8> {
    let case: CaseId = args
        .case
        .parse()
        .map_err(|e: IdError| BadInput(e.to_string()))?;
    let session = Session::open(&args.aws, Mode::Live, true).await?;
    let bucket = session
        .evidence_bucket(args.evidence_bucket.as_deref())
        .await?;
    let keys = stored::list(&session.ctx, &bucket, case.as_str())
        .await
        .map_err(|e| session.aws_failure(e))?;
    let key = match &args.run {
        Some(run) => keys
            .iter()
            .find(|k| k.ends_with(&format!("/{run}.json")))
            .cloned()
            .ok_or_else(|| {
                BadInput(format!(
                    "case {case} has no report of a run named {run} (its reports: {})",
                    names(&keys)
                ))
            })?,
        None => keys.last().cloned().ok_or_else(|| {
            BadInput(format!(
                "case {case} has no incident report in {bucket}: `respond` writes one when a live run ends"
            ))
        })?,
    };
    let bytes = stored::read(&session.ctx, &bucket, &key)
        .await
        .map_err(|e| session.aws_failure(e))?
        .ok_or_else(|| anyhow::anyhow!("s3://{bucket}/{key} disappeared while being read"))?;
    let text = String::from_utf8_lossy(&bytes);
    let incident = IncidentReport::from_json(&text)
        .map_err(|e| anyhow::anyhow!("s3://{bucket}/{key} is not an incident report: {e}"))?;
    let rendered = match args.format {
        Format::Md => incident.to_markdown(),
        Format::Html => incident.to_html(),
        Format::Json => text.into_owned(),
    };
    match &args.out {
        Some(path) => std::fs::write(path, rendered)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?,
        None => out!("{rendered}"),
    }
    Ok(exit::OK)
}

fn names(keys: &[String]) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    keys.iter()
        .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".json"))
        .collect::<Vec<_>>()
        .join(", ")
}
