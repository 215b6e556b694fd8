//! A case's custody ledger in the evidence bucket, and its verification.
//!
//! Each record is its own object, `cases/CASE/custody/NNNNNNNN.json`,
//! written once (`If-None-Match: *`) under Object Lock; its number is its
//! sequence, so a listing gives the chain in order. Appending the same
//! event twice (a retried step) finds the first and writes nothing.
//!
//! Verification reads what is there now, not what should be: the latest
//! version of every record and artifact. Object Lock stops anyone
//! destroying a version, but not writing a new one over it or hiding it
//! behind a delete marker; both are reported, as are broken links and
//! artifacts whose bytes no longer hash to what was recorded.

use firebreak_forensics::custody::{verify_chain, Break, CustodyRecord, Location, NewRecord};
use firebreak_workflows::ErrorName;
use serde::Serialize;

use crate::context::{StepContext, StepLog};
use crate::error::StepError;
use crate::evidence::{self, keys, Lock, Put, S3Uri, Version};

/// Concurrent appends race for the next number; the loser reads again.
const APPEND_TRIES: usize = 8;

/// The records of a case as stored now, in key order, with the keys.
pub async fn read_ledger(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
) -> Result<Vec<(String, Result<CustodyRecord, String>)>, StepError> {
    let mut out = Vec::new();
    for key in evidence::list_keys(ctx, log, bucket, &keys::custody_prefix(case)).await? {
        let parsed = match evidence::get(ctx, log, bucket, &key).await? {
            Some((bytes, _)) => serde_json::from_slice::<CustodyRecord>(&bytes)
                .map_err(|e| format!("not a custody record: {e}")),
            None => Err("vanished while being read".to_string()),
        };
        out.push((key, parsed));
    }
    Ok(out)
}

fn same_event(a: &CustodyRecord, b: &NewRecord) -> bool {
    a.evidence_id == b.evidence_id
        && a.event == b.event
        && a.kind == b.kind
        && a.location == b.location
        && a.sha256 == b.sha256
}

/// Appends a record to the case's chain, or returns the one already there
/// for the same event. Refuses to extend a damaged ledger.
pub async fn append(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    lock: &Lock,
    record: NewRecord,
) -> Result<CustodyRecord, StepError> {
    for _ in 0..APPEND_TRIES {
        let ledger = read_ledger(ctx, log, bucket, &record.case_id).await?;
        let mut records = Vec::new();
        for (key, r) in ledger {
            match r {
                Ok(r) => records.push(r),
                Err(e) => {
                    return Err(StepError::new(
                        ErrorName::VerificationFailed,
                        format!("the custody ledger is damaged at s3://{bucket}/{key} ({e}): run `firebreak evidence verify --case {}`", record.case_id),
                    ))
                }
            }
        }
        if let Some(existing) = records.iter().find(|r| same_event(r, &record)) {
            return Ok(existing.clone());
        }
        let breaks = verify_chain(&record.case_id, &records);
        if let Some(b) = breaks.first() {
            return Err(StepError::new(
                ErrorName::VerificationFailed,
                format!(
                    "the custody ledger of case {} is broken at record {} ({}): nothing is appended to it; run `firebreak evidence verify`",
                    record.case_id, b.sequence, b.problem
                ),
            ));
        }
        let next = record
            .clone()
            .chain_after(records.last())
            .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
        let body = serde_json::to_vec_pretty(&next)
            .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
        let key = keys::custody(&next.case_id, next.sequence);
        match evidence::put_new_locked(ctx, log, bucket, &key, body, "application/json", lock)
            .await?
        {
            Put::Created(_) | Put::Planned => return Ok(next),
            Put::Exists => continue,
        }
    }
    Err(StepError::new(
        ErrorName::Throttled,
        format!(
            "could not append to the custody ledger of case {}: {APPEND_TRIES} concurrent appends won the race",
            record.case_id
        ),
    ))
}

/// What became of one artifact the ledger names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactState {
    /// Its current bytes hash to the recorded SHA-256.
    Intact,
    /// Its current bytes do not.
    Modified,
    /// It is gone (or hidden behind a delete marker).
    Missing,
    /// Not hashed by firebreak (a snapshot): its existence was checked.
    Present,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArtifactCheck {
    pub evidence_id: String,
    pub kind: String,
    pub location: String,
    pub recorded_sha256: Option<String>,
    pub current_sha256: Option<String>,
    pub state: ArtifactState,
    pub detail: String,
}

/// The result of `evidence verify`.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub case_id: String,
    pub bucket: String,
    pub records: usize,
    /// Broken links of the chain, the first one first.
    pub breaks: Vec<Break>,
    /// Custody records overwritten, hidden or unreadable.
    pub record_problems: Vec<String>,
    pub artifacts: Vec<ArtifactCheck>,
    /// The last record: keep its hash outside the bucket (the ticket, the
    /// case notes) to detect a chain cut short.
    pub head: Option<ChainHead>,
    /// What verification cannot vouch for (a bucket without COMPLIANCE
    /// Object Lock).
    pub warnings: Vec<String>,
    pub intact: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub sequence: u64,
    pub hash: String,
}

fn visible(versions: &[Version], key: &str) -> (Option<Version>, usize, bool) {
    let of_key: Vec<&Version> = versions.iter().filter(|v| v.key == key).collect();
    let latest = of_key.iter().find(|v| v.is_latest).copied();
    let deleted = latest.is_some_and(|v| v.delete_marker);
    let count = of_key.iter().filter(|v| !v.delete_marker).count();
    (latest.filter(|v| !v.delete_marker).cloned(), count, deleted)
}

/// Verifies a case: the chain, every record object, every artifact.
pub async fn verify(
    ctx: &StepContext,
    bucket: &str,
    case: &str,
) -> Result<Verification, StepError> {
    let log = ctx.log("verify_custody");
    let prefix = format!("cases/{case}/");
    let versions = evidence::list_versions(ctx, &log, bucket, &prefix).await?;
    let custody_prefix = keys::custody_prefix(case);
    let mut record_keys: Vec<String> = versions
        .iter()
        .filter(|v| v.key.starts_with(&custody_prefix))
        .map(|v| v.key.clone())
        .collect();
    record_keys.sort();
    record_keys.dedup();

    let mut record_problems = Vec::new();
    let mut records = Vec::new();
    for key in &record_keys {
        let (latest, count, deleted) = visible(&versions, key);
        if deleted {
            record_problems.push(format!(
                "s3://{bucket}/{key}: the record was deleted (a delete marker hides it)"
            ));
            continue;
        }
        if count > 1 {
            record_problems.push(format!(
                "s3://{bucket}/{key}: the record was overwritten ({count} versions; the latest is read)"
            ));
        }
        let Some(latest) = latest else { continue };
        let uri = S3Uri {
            bucket: bucket.to_string(),
            key: key.clone(),
            version_id: Some(latest.version_id.clone()).filter(|v| v != "null"),
        };
        let bytes = get_version(ctx, &log, &uri).await?;
        match serde_json::from_slice::<CustodyRecord>(&bytes) {
            Ok(r) => {
                let named = key
                    .strip_prefix(&custody_prefix)
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse::<u64>().ok());
                if named != Some(r.sequence) {
                    record_problems.push(format!(
                        "s3://{bucket}/{key} holds record {}: records were moved or reordered",
                        r.sequence
                    ));
                }
                records.push(r);
            }
            Err(e) => record_problems.push(format!(
                "s3://{bucket}/{key} is not a custody record ({e}): it was edited"
            )),
        }
    }
    let breaks = verify_chain(case, &records);
    for r in &records {
        let mismatch = r.note.as_deref().is_some_and(|n| n.starts_with("MISMATCH"));
        if mismatch || (r.host_sha256.is_some() && r.sha256.is_some() && r.host_sha256 != r.sha256)
        {
            record_problems.push(format!(
                "record {} ({} {}): the host's SHA-256 {} and the off-host SHA-256 {} differ",
                r.sequence,
                r.kind,
                r.location.uri(),
                r.host_sha256.as_deref().unwrap_or("?"),
                r.sha256.as_deref().unwrap_or("?")
            ));
        }
    }
    // Records of one artifact must agree on its hash.
    for (i, r) in records.iter().enumerate() {
        if let Some(first) = records[..i]
            .iter()
            .find(|p| p.location == r.location && p.sha256.is_some())
        {
            if r.sha256.is_some() && r.sha256 != first.sha256 {
                record_problems.push(format!(
                    "record {} gives {} the SHA-256 {}, record {} gave it {}",
                    r.sequence,
                    r.location.uri(),
                    r.sha256.as_deref().unwrap_or("?"),
                    first.sequence,
                    first.sha256.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    let mut warnings = Vec::new();
    let locked = ctx
        .aws
        .s3
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
        .ok()
        .and_then(|o| o.object_lock_configuration().cloned())
        .is_some_and(|c| {
            c.rule()
                .and_then(|r| r.default_retention())
                .and_then(|d| d.mode())
                == Some(&aws_sdk_s3::types::ObjectLockRetentionMode::Compliance)
        });
    if !locked {
        warnings.push(format!(
            "s3://{bucket} has no COMPLIANCE Object Lock default: versions can be deleted there, so records removed from the end of the chain cannot be detected; compare the chain head with the one kept outside the bucket"
        ));
    }

    // Each artifact once: the first record that hashed it holds the
    // reference hash.
    let mut artifacts = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in &records {
        let uri = r.location.uri();
        if !seen.insert(uri.clone()) {
            continue;
        }
        let check = match &r.location {
            Location::S3 {
                bucket: b,
                key,
                version_id,
            } => check_object(ctx, &log, r, b, key, version_id.as_deref()).await?,
            Location::Snapshot { snapshot_id, .. } => {
                check_snapshot(ctx, &log, r, snapshot_id).await?
            }
        };
        artifacts.push(check);
    }
    let intact = breaks.is_empty()
        && record_problems.is_empty()
        && artifacts
            .iter()
            .all(|a| matches!(a.state, ArtifactState::Intact | ArtifactState::Present));
    Ok(Verification {
        case_id: case.to_string(),
        bucket: bucket.to_string(),
        records: records.len(),
        breaks,
        record_problems,
        artifacts,
        head: records.last().map(|r| ChainHead {
            sequence: r.sequence,
            hash: r.hash.clone(),
        }),
        warnings,
        intact,
    })
}

async fn get_version(
    ctx: &StepContext,
    log: &StepLog<'_>,
    uri: &S3Uri,
) -> Result<Vec<u8>, StepError> {
    log.read("s3:GetObject", uri.to_string());
    let mut req = ctx.aws.s3.get_object().bucket(&uri.bucket).key(&uri.key);
    if let Some(v) = &uri.version_id {
        req = req.version_id(v);
    }
    let out = req
        .send()
        .await
        .map_err(|e| crate::error::aws_error(&format!("s3:GetObject {uri}"), e))?;
    let bytes =
        out.body.collect().await.map_err(|e| {
            StepError::new(ErrorName::AwsUnavailable, format!("reading {uri}: {e}"))
        })?;
    Ok(bytes.into_bytes().to_vec())
}

async fn check_object(
    ctx: &StepContext,
    log: &StepLog<'_>,
    r: &CustodyRecord,
    bucket: &str,
    key: &str,
    recorded_version: Option<&str>,
) -> Result<ArtifactCheck, StepError> {
    let location = r.location.uri();
    let versions = evidence::list_versions(ctx, log, bucket, key).await?;
    let (latest, count, deleted) = visible(&versions, key);
    let base = |state, current: Option<String>, detail: String| ArtifactCheck {
        evidence_id: r.evidence_id.clone(),
        kind: r.kind.clone(),
        location: location.clone(),
        recorded_sha256: r.sha256.clone(),
        current_sha256: current,
        state,
        detail,
    };
    let Some(latest) = latest else {
        return Ok(base(
            ArtifactState::Missing,
            None,
            if deleted {
                "deleted: a delete marker hides it".into()
            } else {
                "no such object".into()
            },
        ));
    };
    let uri = S3Uri {
        bucket: bucket.into(),
        key: key.into(),
        version_id: Some(latest.version_id.clone()).filter(|v| v != "null"),
    };
    log.progress(&format!("hashing {uri}"));
    let (digest, _) = evidence::hash_object(ctx, log, &uri, &[]).await?;
    let replaced = match recorded_version {
        Some(v) if v != latest.version_id => format!(
            "; version {} replaced the recorded version {v} ({count} versions)",
            latest.version_id
        ),
        _ => String::new(),
    };
    Ok(match &r.sha256 {
        Some(want) if *want == digest.sha256 && r.size.is_none_or(|s| s == digest.size) => base(
            ArtifactState::Intact,
            Some(digest.sha256.clone()),
            format!("{} bytes, SHA-256 matches{replaced}", digest.size),
        ),
        Some(want) => base(
            ArtifactState::Modified,
            Some(digest.sha256.clone()),
            format!(
                "SHA-256 is now {} ({} bytes), recorded {want} ({} bytes){replaced}",
                digest.sha256,
                digest.size,
                r.size.map_or("?".into(), |s| s.to_string())
            ),
        ),
        None => base(
            ArtifactState::Present,
            Some(digest.sha256.clone()),
            format!("no recorded hash; {} bytes now{replaced}", digest.size),
        ),
    })
}

async fn check_snapshot(
    ctx: &StepContext,
    log: &StepLog<'_>,
    r: &CustodyRecord,
    snapshot_id: &str,
) -> Result<ArtifactCheck, StepError> {
    log.read(
        "ec2:DescribeSnapshots",
        format!("SnapshotIds=[{snapshot_id}]"),
    );
    let found = ctx
        .aws
        .ec2
        .describe_snapshots()
        .snapshot_ids(snapshot_id)
        .send()
        .await;
    let (state, detail) = match found {
        Ok(out) if !out.snapshots().is_empty() => (
            ArtifactState::Present,
            format!(
                "exists ({})",
                out.snapshots()[0]
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default()
            ),
        ),
        Ok(_) => (ArtifactState::Missing, "no such snapshot".into()),
        Err(e) => match crate::error::error_code(&e).as_deref() {
            Some("InvalidSnapshot.NotFound") => (ArtifactState::Missing, "no such snapshot".into()),
            _ => {
                return Err(crate::error::aws_error(
                    &format!("ec2:DescribeSnapshots {snapshot_id}"),
                    e,
                ))
            }
        },
    };
    Ok(ArtifactCheck {
        evidence_id: r.evidence_id.clone(),
        kind: r.kind.clone(),
        location: r.location.uri(),
        recorded_sha256: r.sha256.clone(),
        current_sha256: None,
        state,
        detail,
    })
}
