//! Copy the case's snapshots to a forensic account and/or region,
//! re-encrypted with its KMS key.

use async_trait::async_trait;
use aws_config::Region;
use aws_sdk_ec2::types::{
    CreateVolumePermission, CreateVolumePermissionModifications, ResourceType,
    SnapshotAttributeName, TagSpecification,
};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{filter, tag};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::ids::CaseId;
use crate::step::Step;
use crate::tags;

/// Where forensic copies go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ForensicCopy {
    /// Target region (the source region when copying to another account only).
    pub region: String,
    /// KMS key in the target account and region the copies are encrypted with.
    pub kms_key_id: String,
    /// Target account; the snapshots are shared with it first. None: this
    /// account.
    pub account_id: Option<String>,
    /// Role to assume in the target account to make the copies.
    pub role_arn: Option<String>,
}

/// Copies each snapshot of the case into the forensic account/region,
/// encrypted with the given key, carrying the source's tags plus
/// `firebreak:source-snapshot`. Cross-account, the source snapshots are
/// first shared with the target account (create-volume permission), and
/// the copies are made with a role assumed there. Idempotent: a copy is
/// found by its `firebreak:source-snapshot` tag; a later call only reports
/// progress, which is what the poll loop waits on.
#[derive(Debug)]
pub struct CopySnapshots;

/// Input of [`CopySnapshots`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CopyInput {
    /// The case, validated as a [`crate::ids::CaseId`]; tagged on each copy
    /// and part of the assumed role's session name.
    pub case_id: String,
    /// The case's snapshots to copy (`snap-...`); empty means nothing to do.
    pub snapshot_ids: Vec<String>,
    /// Where the copies go: another account, another region, or both.
    pub target: ForensicCopy,
}

/// One forensic copy of one of the case's snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotCopy {
    /// The snapshot in the case's account and region it was copied from
    /// (`snap-...`).
    pub source_snapshot_id: String,
    /// The copy's snapshot id in the target account and region (`snap-...`).
    pub snapshot_id: String,
    /// The 12-digit account that holds the copy.
    pub account_id: String,
    /// The region that holds the copy.
    pub region: String,
    /// The copy's EC2 state: `pending`, `completed` or `error` (an `error`
    /// fails the step).
    pub state: String,
    /// `0%` to `100%`, as EC2 reports it; None before EC2 reports any.
    pub progress: Option<String>,
}

/// What [`CopySnapshots`] made or found in the forensic account/region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CopyOutput {
    /// One per source snapshot with a copy, made now or by an earlier run; in
    /// a dry run only those of earlier runs.
    pub copies: Vec<SnapshotCopy>,
    /// Whether every source snapshot has a completed copy (always true in a
    /// dry run, and for no snapshots): ends the poll loop.
    pub all_completed: bool,
    /// Whether a snapshot was shared or a copy started (false in a dry run).
    pub changed: bool,
    /// Whether this was a dry run: sharing and copying were only sent with
    /// `DryRun=true`.
    pub dry_run: bool,
}

/// Tag naming the snapshot a copy was made from.
const SOURCE_TAG: &str = "firebreak:source-snapshot";

impl StepDef for CopySnapshots {
    const NAME: &'static str = "copy_snapshots";
    const SUMMARY: &'static str =
        "Copy the case's snapshots to the forensic account/region, re-encrypted with its KMS key.";
    const MUTATES: bool = true;
    type Input = CopyInput;
    type Output = CopyOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::ResourceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(["ec2:DescribeSnapshots"], ["*"]),
            Statement::allow(
                [
                    "ec2:DescribeSnapshotAttribute",
                    "ec2:ModifySnapshotAttribute",
                    "ec2:CopySnapshot",
                    "ec2:CreateTags",
                ],
                ["arn:aws:ec2:*::snapshot/*"],
            ),
            Statement::allow(["sts:AssumeRole"], ["arn:aws:iam::*:role/*"]),
            Statement::allow(
                [
                    "kms:CreateGrant",
                    "kms:Decrypt",
                    "kms:DescribeKey",
                    "kms:Encrypt",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                ],
                ["arn:aws:kms:*:*:key/*"],
            ),
        ]
    }
}

fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[async_trait]
impl Step for CopySnapshots {
    async fn run(ctx: &StepContext, input: CopyInput) -> Result<CopyOutput, StepError> {
        let case: CaseId = input
            .case_id
            .parse()
            .map_err(|e: crate::ids::IdError| StepError::invalid_input(e.to_string()))?;
        let t = &input.target;
        let (target_account, cross_account) = check_target(ctx, &input)?;
        let log = ctx.log(Self::NAME);
        let ec2 = &ctx.aws.ec2;
        if input.snapshot_ids.is_empty() {
            return Ok(CopyOutput {
                copies: vec![],
                all_completed: true,
                changed: false,
                dry_run: ctx.is_dry_run(),
            });
        }
        log.read(
            "ec2:DescribeSnapshots",
            format!("SnapshotIds=[{}]", input.snapshot_ids.join(", ")),
        );
        let sources = ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(input.snapshot_ids.clone()))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeSnapshots", e))?;
        let mut changed = false;

        // Share with the target account (once).
        if cross_account {
            changed |= share_with(ctx, &log, &input.snapshot_ids, &target_account).await?;
        }

        let target = target_client(ctx, t, &case).await;

        let mut copies = Vec::new();
        for src in sources.snapshots() {
            let Some(src_id) = src.snapshot_id() else {
                continue;
            };
            log.read(
                "ec2:DescribeSnapshots",
                format!(
                    "{target_account}/{}: Filters=[tag:{SOURCE_TAG}={src_id}]",
                    t.region
                ),
            );
            let existing = target
                .describe_snapshots()
                .owner_ids("self")
                .filters(filter(&format!("tag:{SOURCE_TAG}"), [src_id]))
                .send()
                .await
                .map_err(|e| aws_error("ec2:DescribeSnapshots (forensic)", e))?;
            if let Some(c) = existing
                .snapshots()
                .iter()
                .find(|s| s.state().map(|x| x.as_str()) != Some("error"))
            {
                copies.push(SnapshotCopy {
                    source_snapshot_id: src_id.to_string(),
                    snapshot_id: c.snapshot_id().unwrap_or_default().to_string(),
                    account_id: target_account.clone(),
                    region: t.region.clone(),
                    state: c
                        .state()
                        .map(|x| x.as_str().to_string())
                        .unwrap_or_default(),
                    progress: c.progress().map(str::to_string),
                });
                continue;
            }
            // The source's own tags travel with the copy (AWS-reserved
            // keys excepted), plus where it came from.
            let mut spec = TagSpecification::builder().resource_type(ResourceType::Snapshot);
            for tg in src.tags() {
                if let (Some(k), Some(v)) = (tg.key(), tg.value()) {
                    if !k.starts_with("aws:") {
                        spec = spec.tags(tag(k, v));
                    }
                }
            }
            spec = spec
                .tags(tag(SOURCE_TAG, src_id))
                .tags(tag("firebreak:source-account", &ctx.account_id))
                .tags(tag("firebreak:source-region", &ctx.region))
                .tags(tag(tags::CASE, case.as_str()));
            let params = format!(
                "{target_account}/{}: SourceRegion={}, SourceSnapshotId={src_id}, Encrypted=true, KmsKeyId={}",
                t.region, ctx.region, t.kms_key_id
            );
            let req = target
                .copy_snapshot()
                .source_region(&ctx.region)
                .source_snapshot_id(src_id)
                .encrypted(true)
                .kms_key_id(&t.kms_key_id)
                .description(format!(
                    "firebreak case {case}: forensic copy of {src_id} from {}/{}",
                    ctx.account_id, ctx.region
                ))
                .tag_specifications(spec.build());
            if ctx.is_dry_run() {
                log.dry_run("ec2:CopySnapshot", params, req.dry_run(true).send().await)?;
                continue;
            }
            let out = req
                .send()
                .await
                .map_err(|e| aws_error(&format!("ec2:CopySnapshot {src_id}"), e))?;
            log.done("ec2:CopySnapshot", params);
            changed = true;
            copies.push(SnapshotCopy {
                source_snapshot_id: src_id.to_string(),
                snapshot_id: out.snapshot_id().unwrap_or_default().to_string(),
                account_id: target_account.clone(),
                region: t.region.clone(),
                state: "pending".into(),
                progress: None,
            });
        }
        refresh_copies(&log, &target, &target_account, &t.region, &mut copies).await?;
        if let Some(bad) = copies.iter().find(|c| c.state == "error") {
            return Err(StepError::verification(format!(
                "the forensic copy {} of {} failed",
                bad.snapshot_id, bad.source_snapshot_id
            )));
        }
        let completed = copies.iter().filter(|c| c.state == "completed").count();
        if !copies.is_empty() {
            log.progress(&format!(
                "{completed}/{} forensic copies completed",
                copies.len()
            ));
        }
        Ok(CopyOutput {
            // A dry run has nothing to wait for.
            all_completed: ctx.is_dry_run()
                || (completed == copies.len() && copies.len() == input.snapshot_ids.len()),
            copies,
            changed,
            dry_run: ctx.is_dry_run(),
        })
    }
}

/// Reads the new copies' state rather than assume it: a small copy may
/// already be done, which saves the poll loop a wait.
async fn refresh_copies(
    log: &StepLog<'_>,
    target: &aws_sdk_ec2::Client,
    target_account: &str,
    region: &str,
    copies: &mut [SnapshotCopy],
) -> Result<(), StepError> {
    // Read the new copies' state rather than assume it: a small copy
    // may already be done, which saves the poll loop a wait.
    let fresh: Vec<String> = copies
        .iter()
        .filter(|c| c.state == "pending" && !c.snapshot_id.is_empty())
        .map(|c| c.snapshot_id.clone())
        .collect();
    if !fresh.is_empty() {
        log.read(
            "ec2:DescribeSnapshots",
            format!(
                "{target_account}/{region}: SnapshotIds=[{}]",
                fresh.join(", ")
            ),
        );
        let now = target
            .describe_snapshots()
            .set_snapshot_ids(Some(fresh))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeSnapshots (forensic)", e))?;
        for s in now.snapshots() {
            if let Some(c) = copies
                .iter_mut()
                .find(|c| Some(c.snapshot_id.as_str()) == s.snapshot_id())
            {
                c.state = s
                    .state()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default();
                c.progress = s.progress().map(str::to_string);
            }
        }
    }
    Ok(())
}

/// Checks the copy's target; gives the target account and whether it is
/// another account than the caller's.
fn check_target(ctx: &StepContext, input: &CopyInput) -> Result<(String, bool), StepError> {
    let t = &input.target;
    if !valid_region(&t.region) {
        return Err(StepError::invalid_input(format!(
            "{:?} is not a region",
            t.region
        )));
    }
    if t.kms_key_id.trim().is_empty() {
        return Err(StepError::invalid_input(
            "a KMS key is needed to re-encrypt the copies",
        ));
    }
    let target_account = t
        .account_id
        .clone()
        .unwrap_or_else(|| ctx.account_id.clone());
    let cross_account = target_account != ctx.account_id;
    if cross_account && t.role_arn.is_none() {
        return Err(StepError::invalid_input(format!(
            "copying to account {target_account} needs a role to assume there (role_arn)"
        )));
    }
    if !cross_account && t.region == ctx.region {
        return Err(StepError::invalid_input(
            "the forensic copy must go to another account or another region",
        ));
    }
    for s in &input.snapshot_ids {
        if !s.starts_with("snap-") {
            return Err(StepError::invalid_input(format!(
                "{s:?} is not a snapshot id"
            )));
        }
    }
    Ok((target_account, cross_account))
}

/// Shares each snapshot with the target account (once); says whether it
/// changed anything.
async fn share_with(
    ctx: &StepContext,
    log: &StepLog<'_>,
    snapshot_ids: &[String],
    target_account: &str,
) -> Result<bool, StepError> {
    let ec2 = &ctx.aws.ec2;
    let mut changed = false;
    for id in snapshot_ids {
        log.read(
            "ec2:DescribeSnapshotAttribute",
            format!("{id} createVolumePermission"),
        );
        let attr = ec2
            .describe_snapshot_attribute()
            .snapshot_id(id)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeSnapshotAttribute", e))?;
        let shared = attr
            .create_volume_permissions()
            .iter()
            .any(|p| p.user_id() == Some(target_account));
        if shared {
            continue;
        }
        let params = format!("SnapshotId={id}, CreateVolumePermission add {target_account}");
        let req = ec2
            .modify_snapshot_attribute()
            .snapshot_id(id)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(
                CreateVolumePermissionModifications::builder()
                    .add(
                        CreateVolumePermission::builder()
                            .user_id(target_account)
                            .build(),
                    )
                    .build(),
            );
        if ctx.is_dry_run() {
            log.dry_run(
                "ec2:ModifySnapshotAttribute",
                params,
                req.dry_run(true).send().await,
            )?;
        } else {
            req.send().await.map_err(|e| {
                let mut err = aws_error(&format!("ec2:ModifySnapshotAttribute {id}"), e);
                err.message.push_str(" (snapshots encrypted with the default aws/ebs key cannot be shared: encrypt the volumes with a customer managed key shared with the forensic account)");
                err
            })?;
            log.done("ec2:ModifySnapshotAttribute", params);
            changed = true;
        }
    }
    Ok(changed)
}

/// STS allows role session names of at most 64 characters; a case id may
/// have 64 of its own.
const SESSION_NAME_MAX: usize = 64;

/// The session name of the forensic account's role: `firebreak-` and as
/// much of the case id as fits (case ids are ASCII, which STS allows).
fn session_name(case: &CaseId) -> String {
    let mut name = format!("firebreak-{case}");
    name.truncate(SESSION_NAME_MAX);
    name
}

/// An EC2 client in the target account (through the role) and region.
async fn target_client(ctx: &StepContext, t: &ForensicCopy, case: &CaseId) -> aws_sdk_ec2::Client {
    let mut builder = ctx
        .aws
        .sdk
        .to_builder()
        .region(Region::new(t.region.clone()));
    if let Some(role) = &t.role_arn {
        let provider = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name(session_name(case))
            .configure(&ctx.aws.sdk)
            .build()
            .await;
        builder = builder.credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        );
    }
    aws_sdk_ec2::Client::new(&builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_sts_limit_for_the_longest_case_ids() {
        let longest: CaseId = "c".repeat(64).parse().expect("a valid case id");
        let name = session_name(&longest);
        assert_eq!(name.len(), SESSION_NAME_MAX);
        assert!(name.starts_with("firebreak-ccc"));
        let short: CaseId = "INC-42".parse().expect("valid");
        assert_eq!(session_name(&short), "firebreak-INC-42");
    }
}
