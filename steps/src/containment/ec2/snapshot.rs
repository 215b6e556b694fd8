//! Snapshot an instance's EBS volumes, and check the snapshots' progress.

use async_trait::async_trait;
use aws_sdk_ec2::types::{InstanceSpecification, ResourceType, Snapshot, TagSpecification};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{describe_instance, filter, tag, volumes, InstanceRef};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::step::Step;
use crate::tags;

/// Takes crash-consistent snapshots of all the instance's volumes
/// (`CreateSnapshots`), tagged with the case and the instance. Idempotent:
/// volumes that already have a snapshot for this case are not snapped
/// again.
#[derive(Debug)]
pub struct SnapshotVolumes;

/// Reads the state of a set of snapshots; `all_completed` ends the poll
/// loop that waits for them. A snapshot in state `error` fails the step.
#[derive(Debug)]
pub struct AwaitSnapshots;

/// One snapshot of one of the instance's volumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotRef {
    /// The EBS snapshot id (`snap-...`); in a dry run a placeholder,
    /// `(planned) snapshot of vol-...`.
    pub snapshot_id: String,
    /// The volume it was taken from (`vol-...`).
    pub volume_id: String,
    /// The device the volume is attached at (`/dev/xvda`); None from
    /// [`AwaitSnapshots`], and for a volume no longer attached.
    pub device_name: Option<String>,
    /// `pending`, `completed` or `error`.
    pub state: String,
    /// `0%` to `100%`, as EC2 reports it.
    pub progress: Option<String>,
}

/// What [`SnapshotVolumes`] took or found for the instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotSet {
    /// The instance the volumes belong to (`i-...`).
    pub instance_id: String,
    /// The case's snapshots of the instance's volumes, root volume first:
    /// those of earlier runs and those taken now; in a dry run, those that
    /// would be taken, with state `planned`.
    pub snapshots: Vec<SnapshotRef>,
    /// All snapshot ids, for the wait that follows.
    pub snapshot_ids: Vec<String>,
    /// Snapshots created by this run (empty when all existed already).
    pub created_snapshot_ids: Vec<String>,
    /// Whether this was a dry run: the create calls were only sent with
    /// `DryRun=true`, and `snapshot_ids` is empty.
    pub dry_run: bool,
}

/// Input of [`AwaitSnapshots`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotIds {
    /// The snapshots to read (`snap-...`), as [`SnapshotSet::snapshot_ids`]
    /// gives them; empty means nothing to wait for.
    pub snapshot_ids: Vec<String>,
}

/// Where the snapshots stand, read from EC2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotProgress {
    /// Whether every snapshot is `completed` (true for an empty set): ends
    /// the wait.
    pub all_completed: bool,
    /// How many are `completed`.
    pub completed: usize,
    /// How many were asked about.
    pub total: usize,
    /// Each snapshot's state and progress, in the order asked (without
    /// device names).
    pub snapshots: Vec<SnapshotRef>,
}

impl StepDef for SnapshotVolumes {
    const NAME: &'static str = "snapshot_volumes";
    const SUMMARY: &'static str =
        "Take crash-consistent snapshots of every EBS volume, tagged with the case (CreateSnapshots).";
    const MUTATES: bool = true;
    type Input = InstanceRef;
    type Output = SnapshotSet;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::InstanceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(["ec2:DescribeInstances", "ec2:DescribeSnapshots"], ["*"]),
            Statement::allow(
                [
                    "ec2:CreateSnapshots",
                    "ec2:CreateSnapshot",
                    "ec2:CreateTags",
                ],
                [
                    "arn:aws:ec2:*:*:instance/*",
                    "arn:aws:ec2:*:*:volume/*",
                    "arn:aws:ec2:*::snapshot/*",
                ],
            ),
        ]
    }
}

impl StepDef for AwaitSnapshots {
    const NAME: &'static str = "await_snapshots";
    const SUMMARY: &'static str = "Read the progress of the case's snapshots.";
    const MUTATES: bool = false;
    type Input = SnapshotIds;
    type Output = SnapshotProgress;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::ResourceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![Statement::allow(["ec2:DescribeSnapshots"], ["*"])]
    }
}

fn to_ref(s: &Snapshot, device: Option<String>) -> SnapshotRef {
    SnapshotRef {
        snapshot_id: s.snapshot_id().unwrap_or_default().to_string(),
        volume_id: s.volume_id().unwrap_or_default().to_string(),
        device_name: device,
        state: s
            .state()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        progress: s.progress().map(str::to_string),
    }
}

/// Snapshots already taken for this case and instance (not failed ones).
async fn existing(
    ctx: &StepContext,
    log: &StepLog<'_>,
    case: &str,
    instance: &str,
) -> Result<Vec<Snapshot>, StepError> {
    log.read(
        "ec2:DescribeSnapshots",
        format!(
            "OwnerIds=[self], Filters=[tag:{}={case}, tag:{}={instance}]",
            tags::CASE,
            tags::INSTANCE
        ),
    );
    let mut out = Vec::new();
    let mut pages = ctx
        .aws
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(filter(&format!("tag:{}", tags::CASE), [case]))
        .filters(filter(&format!("tag:{}", tags::INSTANCE), [instance]))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("ec2:DescribeSnapshots", e))?;
        out.extend(
            page.snapshots()
                .iter()
                .filter(|s| s.state().map(|x| x.as_str()) != Some("error"))
                .cloned(),
        );
    }
    Ok(out)
}

#[async_trait]
impl Step for SnapshotVolumes {
    async fn run(ctx: &StepContext, input: InstanceRef) -> Result<SnapshotSet, StepError> {
        let (case, id) = input.parse()?;
        let log = ctx.log(Self::NAME);
        let ec2 = &ctx.aws.ec2;
        let instance = describe_instance(ctx, &log, &id).await?;
        let vols = volumes(&instance);
        let device_of = |v: &str| {
            vols.iter()
                .find(|(id, _)| id == v)
                .and_then(|(_, d)| d.clone())
        };
        let have = existing(ctx, &log, case.as_str(), id.as_str()).await?;
        let missing: Vec<&(String, Option<String>)> = vols
            .iter()
            .filter(|(v, _)| !have.iter().any(|s| s.volume_id() == Some(v.as_str())))
            .collect();

        let description = format!("firebreak case {case}: {id}");
        let tag_spec = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .tags(tag(tags::CASE, case.as_str()))
            .tags(tag(tags::INSTANCE, id.as_str()))
            .tags(tag("Name", &format!("firebreak {case} {id}")))
            .build();
        let mut created: Vec<Snapshot> = Vec::new();
        let mut planned: Vec<SnapshotRef> = Vec::new();
        if missing.len() == vols.len() && !vols.is_empty() {
            // All at once: one crash-consistent point in time across volumes.
            let params = format!(
                "InstanceSpecification={{InstanceId={id}}}, Tags=[{}={case}, {}={id}]",
                tags::CASE,
                tags::INSTANCE
            );
            let req = ec2
                .create_snapshots()
                .instance_specification(
                    InstanceSpecification::builder()
                        .instance_id(id.as_str())
                        .build(),
                )
                .description(&description)
                .tag_specifications(tag_spec.clone());
            if ctx.is_dry_run() {
                log.dry_run(
                    "ec2:CreateSnapshots",
                    params,
                    req.dry_run(true).send().await,
                )?;
                planned.extend(vols.iter().map(|(v, d)| SnapshotRef {
                    snapshot_id: format!("(planned) snapshot of {v}"),
                    volume_id: v.clone(),
                    device_name: d.clone(),
                    state: "planned".into(),
                    progress: None,
                }));
            } else {
                let out = req
                    .send()
                    .await
                    .map_err(|e| aws_error(&format!("ec2:CreateSnapshots {id}"), e))?;
                log.done("ec2:CreateSnapshots", params);
                for info in out.snapshots() {
                    created.push(
                        Snapshot::builder()
                            .set_snapshot_id(info.snapshot_id().map(str::to_string))
                            .set_volume_id(info.volume_id().map(str::to_string))
                            .set_state(info.state().cloned())
                            .set_progress(info.progress().map(str::to_string))
                            .build(),
                    );
                }
            }
        } else {
            // Some volumes were snapped by an earlier run: take only the
            // missing ones (their point in time already differs).
            for (v, d) in &missing {
                let params = format!(
                    "VolumeId={v}, Tags=[{}={case}, {}={id}]",
                    tags::CASE,
                    tags::INSTANCE
                );
                let req = ec2
                    .create_snapshot()
                    .volume_id(v)
                    .description(&description)
                    .tag_specifications(tag_spec.clone());
                if ctx.is_dry_run() {
                    log.dry_run("ec2:CreateSnapshot", params, req.dry_run(true).send().await)?;
                    planned.push(SnapshotRef {
                        snapshot_id: format!("(planned) snapshot of {v}"),
                        volume_id: v.clone(),
                        device_name: d.clone(),
                        state: "planned".into(),
                        progress: None,
                    });
                } else {
                    let s = req
                        .send()
                        .await
                        .map_err(|e| aws_error(&format!("ec2:CreateSnapshot {v}"), e))?;
                    log.done("ec2:CreateSnapshot", params);
                    created.push(
                        Snapshot::builder()
                            .set_snapshot_id(s.snapshot_id().map(str::to_string))
                            .set_volume_id(s.volume_id().map(str::to_string))
                            .set_state(s.state().cloned())
                            .set_progress(s.progress().map(str::to_string))
                            .build(),
                    );
                }
            }
        }
        let mut snapshots: Vec<SnapshotRef> = have
            .iter()
            .chain(created.iter())
            .map(|s| to_ref(s, device_of(s.volume_id().unwrap_or_default())))
            .collect();
        snapshots.extend(planned);
        // Root volume first, then by device name.
        snapshots.sort_by_key(|s| {
            vols.iter()
                .position(|(v, _)| *v == s.volume_id)
                .unwrap_or(usize::MAX)
        });
        let snapshot_ids = if ctx.is_dry_run() {
            Vec::new()
        } else {
            snapshots.iter().map(|s| s.snapshot_id.clone()).collect()
        };
        Ok(SnapshotSet {
            instance_id: id.to_string(),
            snapshot_ids,
            created_snapshot_ids: created
                .iter()
                .filter_map(|s| s.snapshot_id().map(str::to_string))
                .collect(),
            snapshots,
            dry_run: ctx.is_dry_run(),
        })
    }
}

#[async_trait]
impl Step for AwaitSnapshots {
    async fn run(ctx: &StepContext, input: SnapshotIds) -> Result<SnapshotProgress, StepError> {
        let log = ctx.log(Self::NAME);
        if input.snapshot_ids.is_empty() {
            return Ok(SnapshotProgress {
                all_completed: true,
                completed: 0,
                total: 0,
                snapshots: Vec::new(),
            });
        }
        for sid in &input.snapshot_ids {
            if !sid.starts_with("snap-") {
                return Err(StepError::invalid_input(format!(
                    "{sid:?} is not a snapshot id"
                )));
            }
        }
        log.read(
            "ec2:DescribeSnapshots",
            format!("SnapshotIds=[{}]", input.snapshot_ids.join(", ")),
        );
        let out = ctx
            .aws
            .ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(input.snapshot_ids.clone()))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeSnapshots", e))?;
        let snapshots: Vec<SnapshotRef> = input
            .snapshot_ids
            .iter()
            .filter_map(|id| {
                out.snapshots()
                    .iter()
                    .find(|s| s.snapshot_id() == Some(id.as_str()))
            })
            .map(|s| to_ref(s, None))
            .collect();
        if snapshots.len() != input.snapshot_ids.len() {
            return Err(StepError::new(
                ErrorName::ResourceNotFound,
                "a snapshot of the case was not returned by DescribeSnapshots (deleted?)",
            ));
        }
        let failed: Vec<&SnapshotRef> = snapshots.iter().filter(|s| s.state == "error").collect();
        if !failed.is_empty() {
            return Err(StepError::verification(format!(
                "snapshot(s) failed: {}",
                failed
                    .iter()
                    .map(|s| format!("{} of {}", s.snapshot_id, s.volume_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let completed = snapshots.iter().filter(|s| s.state == "completed").count();
        let total = snapshots.len();
        log.progress(&format!(
            "{completed}/{total} snapshots completed ({})",
            snapshots
                .iter()
                .map(|s| format!("{} {}", s.snapshot_id, s.progress.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(SnapshotProgress {
            all_completed: completed == total,
            completed,
            total,
            snapshots,
        })
    }
}
