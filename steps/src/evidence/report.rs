//! The incident report of a run, kept in the case: `cases/CASE/reports/`
//! holds one JSON (the report itself, re-rendered by `firebreak report`)
//! and its Markdown rendering per run, each written once (never
//! replaced) and the JSON put under custody.

use chrono::Utc;
use firebreak_forensics::custody::{Event, Location, NewRecord, Source};

use super::{get, list_keys, put_new_locked, Lock, Put, Stored};
use crate::context::StepContext;
use crate::error::StepError;

/// What a stored report is about.
#[derive(Clone, Debug)]
pub struct ReportInfo<'a> {
    /// The case.
    pub case_id: &'a str,
    /// The instance.
    pub instance_id: &'a str,
    /// The run's name (the execution's), which names the files.
    pub run: &'a str,
    /// Who ran it (principal ARN).
    pub actor: &'a str,
}

/// The prefix of a case's reports.
pub fn prefix(case: &str) -> String {
    format!("cases/{case}/reports/")
}

/// Stores the report (`json`, and its Markdown `md`) in the case and puts
/// the JSON under custody; returns where the JSON is, or `None` in a dry
/// run.
pub async fn store(
    ctx: &StepContext,
    bucket: &str,
    lock: &Lock,
    info: &ReportInfo<'_>,
    json: Vec<u8>,
    md: Vec<u8>,
) -> Result<Option<Stored>, StepError> {
    let log = ctx.log("incident_report");
    let base = format!("{}{}", prefix(info.case_id), info.run);
    let stored = match put_new_locked(
        ctx,
        &log,
        bucket,
        &format!("{base}.json"),
        json,
        "application/json",
        lock,
    )
    .await?
    {
        Put::Created(s) => s,
        // A run has one name: the same report was stored already.
        Put::Exists | Put::Planned => return Ok(None),
    };
    put_new_locked(
        ctx,
        &log,
        bucket,
        &format!("{base}.md"),
        md,
        "text/markdown; charset=utf-8",
        lock,
    )
    .await?;
    crate::evidence::custody::append(
        ctx,
        &log,
        bucket,
        lock,
        NewRecord {
            case_id: info.case_id.to_string(),
            evidence_id: format!("incident-report:{}", info.run),
            event: Event::Acquired,
            kind: "incident-report".into(),
            source: Source {
                account_id: ctx.account_id.clone(),
                region: ctx.region.clone(),
                instance_id: Some(info.instance_id.to_string()),
                volume_id: None,
            },
            location: Location::S3 {
                bucket: stored.bucket.clone(),
                key: stored.key.clone(),
                version_id: stored.version_id.clone(),
            },
            size: Some(stored.digest.size),
            sha256: Some(stored.digest.sha256.clone()),
            host_sha256: None,
            at: Utc::now(),
            actor: info.actor.to_string(),
            tool: "firebreak".into(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            note: Some("the incident report of the run, written when it ended".into()),
            details: None,
            signing_key: None,
        },
    )
    .await?;
    Ok(Some(stored))
}

/// The case's reports (the JSON of each run), oldest first by name.
pub async fn list(ctx: &StepContext, bucket: &str, case: &str) -> Result<Vec<String>, StepError> {
    let log = ctx.log("incident_report");
    Ok(list_keys(ctx, &log, bucket, &prefix(case))
        .await?
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect())
}

/// One stored report's JSON text.
pub async fn read(
    ctx: &StepContext,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StepError> {
    let log = ctx.log("incident_report");
    Ok(get(ctx, &log, bucket, key).await?.map(|(b, _)| b))
}
