//! Take the instance out of its Auto Scaling group's hands.

use async_trait::async_trait;
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::containment::ec2::InstanceRef;
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, StepError};
use crate::ids::InstanceId;
use crate::step::Step;

/// Puts the instance in Standby (or detaches it) without the group
/// launching a replacement (the desired capacity is decremented), and
/// protects it from scale-in first so the group cannot terminate it in
/// between. A no-op when the instance is in no group. Reads back.
#[derive(Debug)]
pub struct DetachFromAutoScaling;

/// How to take the instance out of its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum AsgMode {
    /// Standby: stays a member (release returns it to service), gets no
    /// traffic from the group's load balancers, is not health-checked.
    #[default]
    Standby,
    /// Detach: leaves the group entirely.
    Detach,
}

/// Input of [`DetachFromAutoScaling`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DetachInput {
    /// The case, validated as a [`crate::ids::CaseId`].
    pub case_id: String,
    /// The instance to take out (`i-...`), validated as an
    /// [`crate::ids::InstanceId`].
    pub instance_id: String,
    /// Standby (stays a member) or detach (leaves the group).
    pub mode: AsgMode,
}

/// What [`DetachFromAutoScaling`] did, read back from Auto Scaling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DetachOutput {
    /// None when the instance is in no Auto Scaling group.
    pub group_name: Option<String>,
    /// The mode asked for, echoed.
    pub mode: AsgMode,
    /// The instance's lifecycle state before the step (`InService`,
    /// `Standby`, ...); None when it is in no group.
    pub lifecycle_state_before: Option<String>,
    /// `Standby`, or None once detached.
    pub lifecycle_state_after: Option<String>,
    /// Whether the instance is protected from scale-in after the step (as
    /// before it in a dry run). Reported true once detached, when no group
    /// protects it any more.
    pub protected_from_scale_in: bool,
    /// When the group was at its minimum, its MinSize was lowered by one so
    /// the instance could leave without a replacement; this is the old
    /// value (release restores it from the record).
    pub lowered_min_size_from: Option<i32>,
    /// Whether the step changed anything: scale-in protection, the group's
    /// minimum, or the instance's membership. Always false in a dry run.
    pub changed: bool,
    /// Whether this was a dry run: nothing was changed, and the Auto Scaling
    /// calls (which have no dry run) are logged as not checked.
    pub dry_run: bool,
}

impl StepDef for DetachFromAutoScaling {
    const NAME: &'static str = "detach_from_autoscaling";
    const SUMMARY: &'static str =
        "Protect from scale-in, then Standby (or detach) without a replacement; no-op outside a group.";
    const MUTATES: bool = true;
    type Input = DetachInput;
    type Output = DetachOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::ResourceNotFound,
            ErrorName::InvalidInput,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
            ErrorName::Unsupported,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                [
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeAutoScalingGroups",
                ],
                ["*"],
            ),
            Statement::allow(
                [
                    "autoscaling:SetInstanceProtection",
                    "autoscaling:EnterStandby",
                    "autoscaling:DetachInstances",
                    "autoscaling:UpdateAutoScalingGroup",
                    "autoscaling:CreateOrUpdateTags",
                ],
                ["arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*"],
            ),
        ]
    }
}

/// (group, lifecycle state, protected) of the instance, if in a group.
pub(crate) async fn membership(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &InstanceId,
) -> Result<Option<(String, String, bool)>, StepError> {
    log.read(
        "autoscaling:DescribeAutoScalingInstances",
        format!("InstanceIds=[{id}]"),
    );
    let out = ctx
        .aws
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(id.as_str())
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:DescribeAutoScalingInstances", e))?;
    Ok(out
        .auto_scaling_instances()
        .iter()
        .find(|a| a.instance_id() == Some(id.as_str()))
        .map(|a| {
            (
                a.auto_scaling_group_name().unwrap_or_default().to_string(),
                a.lifecycle_state().unwrap_or_default().to_string(),
                a.protected_from_scale_in().unwrap_or(false),
            )
        }))
}

/// The group tag that keeps its MinSize from before firebreak first
/// lowered it. Written before the first lowering and read by every later
/// containment and release, so that two instances of one group contained
/// (or released) at the same moment agree on the original, whatever order
/// their calls land in.
pub const MIN_SIZE_TAG: &str = "firebreak:min-size-before";

/// What release and containment read of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSizes {
    /// The group's current MinSize (0 if AWS omitted it).
    pub min: i32,
    /// The group's current DesiredCapacity (0 if AWS omitted it).
    pub desired: i32,
    /// [`MIN_SIZE_TAG`], when firebreak lowered the minimum.
    pub original_min: Option<i32>,
}

/// The sizes of a group and the minimum firebreak recorded on it.
pub(crate) async fn group_state(
    ctx: &StepContext,
    log: &StepLog<'_>,
    group: &str,
) -> Result<Option<GroupSizes>, StepError> {
    log.read(
        "autoscaling:DescribeAutoScalingGroups",
        format!("AutoScalingGroupNames=[{group}]"),
    );
    let out = ctx
        .aws
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:DescribeAutoScalingGroups", e))?;
    Ok(out.auto_scaling_groups().first().map(|g| GroupSizes {
        min: g.min_size().unwrap_or(0),
        desired: g.desired_capacity().unwrap_or(0),
        original_min: g
            .tags()
            .iter()
            .find(|t| t.key() == Some(MIN_SIZE_TAG))
            .and_then(|t| t.value())
            .and_then(|v| v.parse().ok()),
    }))
}

fn min_tag(group: &str, value: i32) -> aws_sdk_autoscaling::types::Tag {
    aws_sdk_autoscaling::types::Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(MIN_SIZE_TAG)
        .value(value.to_string())
        .propagate_at_launch(false)
        .build()
}

/// Writes the original minimum on the group (before lowering it).
pub(crate) async fn tag_original_min(
    ctx: &StepContext,
    log: &StepLog<'_>,
    group: &str,
    min: i32,
) -> Result<(), StepError> {
    ctx.aws
        .autoscaling
        .create_or_update_tags()
        .tags(min_tag(group, min))
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:CreateOrUpdateTags", e))?;
    log.done(
        "autoscaling:CreateOrUpdateTags",
        format!("AutoScalingGroupName={group}, {MIN_SIZE_TAG}={min} (the minimum before firebreak lowers it)"),
    );
    Ok(())
}

/// Removes the original-minimum tag once the minimum is back.
pub(crate) async fn untag_original_min(
    ctx: &StepContext,
    log: &StepLog<'_>,
    group: &str,
    min: i32,
) -> Result<(), StepError> {
    ctx.aws
        .autoscaling
        .delete_tags()
        .tags(min_tag(group, min))
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:DeleteTags", e))?;
    log.done(
        "autoscaling:DeleteTags",
        format!("AutoScalingGroupName={group}, {MIN_SIZE_TAG} (the minimum is back to {min})"),
    );
    Ok(())
}

/// Sets a group's MinSize.
pub(crate) async fn set_min(
    ctx: &StepContext,
    log: &StepLog<'_>,
    group: &str,
    min: i32,
    why: &str,
) -> Result<(), StepError> {
    ctx.aws
        .autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(group)
        .min_size(min.max(0))
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:UpdateAutoScalingGroup", e))?;
    log.done(
        "autoscaling:UpdateAutoScalingGroup",
        format!("AutoScalingGroupName={group}, MinSize={min} ({why})"),
    );
    Ok(())
}

/// The minimum a group should have once an instance is back in it: never
/// below what it has, never above its original, and never above the
/// desired capacity (other instances of the group may still be out,
/// contained). None when it already has it.
pub fn restored_min(now: &GroupSizes, recorded: Option<i32>) -> Option<i32> {
    let original = now.original_min.or(recorded)?;
    let target = now.min.max(original.min(now.desired));
    (target != now.min).then_some(target)
}

/// Tries to take the instance out: a refusal because another containment
/// of the same group got there first is read again and retried.
const LEAVE_ATTEMPTS: usize = 5;

fn no_dry_run(log: &StepLog<'_>, action: &str, params: String, group: &str) {
    log.not_checked(
        action,
        params,
        format!("Auto Scaling has no dry run; needs {action} on group {group}"),
    );
}

/// Takes the instance out of its group without a replacement: decrements
/// the desired capacity, lowering the minimum first when the group is at
/// it (the original kept in a tag). Returns the original minimum when it
/// was lowered, and whether anything changed.
async fn leave_group(
    ctx: &StepContext,
    log: &StepLog<'_>,
    group: &str,
    id: &InstanceId,
    mode: AsgMode,
) -> Result<(Option<i32>, bool), StepError> {
    let asg = &ctx.aws.autoscaling;
    let action = match mode {
        AsgMode::Standby => "autoscaling:EnterStandby",
        AsgMode::Detach => "autoscaling:DetachInstances",
    };
    let params = format!(
        "AutoScalingGroupName={group}, InstanceIds=[{id}], ShouldDecrementDesiredCapacity=true"
    );
    let mut lowered = None;
    let mut changed = false;
    for attempt in 1..=LEAVE_ATTEMPTS {
        let Some(g) = group_state(ctx, log, group).await? else {
            return Err(StepError::new(
                ErrorName::ResourceNotFound,
                format!("Auto Scaling group {group} vanished"),
            ));
        };
        if g.desired - 1 < g.min {
            let original = g.original_min.unwrap_or(g.min);
            lowered = Some(original);
            let why = format!(
                "was {}: the group is at its minimum; {MIN_SIZE_TAG}={original}",
                g.min
            );
            if ctx.is_dry_run() {
                no_dry_run(
                    log,
                    "autoscaling:UpdateAutoScalingGroup",
                    format!(
                        "AutoScalingGroupName={group}, MinSize={} ({why})",
                        g.desired - 1
                    ),
                    group,
                );
            } else {
                if g.original_min.is_none() {
                    tag_original_min(ctx, log, group, g.min).await?;
                }
                set_min(ctx, log, group, g.desired - 1, &why).await?;
                changed = true;
            }
        }
        if ctx.is_dry_run() {
            no_dry_run(log, action, params, group);
            return Ok((lowered, false));
        }
        let sent = match mode {
            AsgMode::Standby => asg
                .enter_standby()
                .auto_scaling_group_name(group)
                .instance_ids(id.as_str())
                .should_decrement_desired_capacity(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| (error_code(&e), aws_error(action, e))),
            AsgMode::Detach => asg
                .detach_instances()
                .auto_scaling_group_name(group)
                .instance_ids(id.as_str())
                .should_decrement_desired_capacity(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| (error_code(&e), aws_error(action, e))),
        };
        match sent {
            Ok(()) => {
                log.done(action, params.clone());
                changed = true;
                break;
            }
            // Another containment of the group decremented the capacity
            // between our read and our call: read again.
            Err((Some(code), e)) if code == "ValidationError" && attempt < LEAVE_ATTEMPTS => {
                log.progress(&format!("{e}; reading {group} again"));
            }
            Err((_, e)) => return Err(e),
        }
    }
    // Two containments that read the group at the same moment may both
    // lower the minimum from the same value: never leave it above the
    // desired capacity (AWS refuses that state; a group left in it would
    // launch a replacement).
    if let Some(g) = group_state(ctx, log, group).await? {
        if g.min > g.desired {
            set_min(
                ctx,
                log,
                group,
                g.desired,
                "no higher than the desired capacity",
            )
            .await?;
        }
    }
    Ok((lowered, changed))
}

/// Protects an instance from scale-in and puts it back in Standby
/// (release taking back its own ExitStandby when a later part failed).
pub(crate) async fn take_out(
    ctx: &StepContext,
    log: &StepLog<'_>,
    group: &str,
    id: &InstanceId,
) -> Result<(), StepError> {
    ctx.aws
        .autoscaling
        .set_instance_protection()
        .auto_scaling_group_name(group)
        .instance_ids(id.as_str())
        .protected_from_scale_in(true)
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:SetInstanceProtection", e))?;
    log.done(
        "autoscaling:SetInstanceProtection",
        format!("AutoScalingGroupName={group}, InstanceIds=[{id}], ProtectedFromScaleIn=true"),
    );
    leave_group(ctx, log, group, id, AsgMode::Standby)
        .await
        .map(|_| ())
}

#[async_trait]
impl Step for DetachFromAutoScaling {
    async fn run(ctx: &StepContext, input: DetachInput) -> Result<DetachOutput, StepError> {
        let (_, id) = InstanceRef {
            case_id: input.case_id.clone(),
            instance_id: input.instance_id.clone(),
        }
        .parse()?;
        let log = ctx.log(Self::NAME);
        let asg = &ctx.aws.autoscaling;
        let Some((group, state, protected)) = membership(ctx, &log, &id).await? else {
            return Ok(DetachOutput {
                group_name: None,
                mode: input.mode,
                lifecycle_state_before: None,
                lifecycle_state_after: None,
                protected_from_scale_in: false,
                lowered_min_size_from: None,
                changed: false,
                dry_run: ctx.is_dry_run(),
            });
        };
        let mut changed = false;
        if !protected {
            let params = format!(
                "AutoScalingGroupName={group}, InstanceIds=[{id}], ProtectedFromScaleIn=true"
            );
            if ctx.is_dry_run() {
                no_dry_run(&log, "autoscaling:SetInstanceProtection", params, &group);
            } else {
                asg.set_instance_protection()
                    .auto_scaling_group_name(&group)
                    .instance_ids(id.as_str())
                    .protected_from_scale_in(true)
                    .send()
                    .await
                    .map_err(|e| aws_error("autoscaling:SetInstanceProtection", e))?;
                log.done("autoscaling:SetInstanceProtection", params);
                changed = true;
            }
        }
        let leaving = matches!(
            (input.mode, state.as_str()),
            (AsgMode::Standby, "InService") | (AsgMode::Detach, _)
        );
        let already_standby = input.mode == AsgMode::Standby && state == "Standby";
        if !leaving && !already_standby {
            return Err(StepError::new(
                ErrorName::Unsupported,
                format!("{id} is {state} in {group}: only an InService instance can enter Standby"),
            ));
        }
        let mut lowered_min_size_from = None;
        if leaving {
            let (lowered, did) = leave_group(ctx, &log, &group, &id, input.mode).await?;
            lowered_min_size_from = lowered;
            changed |= did;
        }
        if ctx.is_dry_run() {
            return Ok(DetachOutput {
                group_name: Some(group),
                mode: input.mode,
                lifecycle_state_before: Some(state.clone()),
                lifecycle_state_after: Some(state),
                protected_from_scale_in: protected,
                lowered_min_size_from,
                changed: false,
                dry_run: true,
            });
        }
        let after = membership(ctx, &log, &id).await?;
        let ok = match (input.mode, &after) {
            (AsgMode::Standby, Some((_, s, p))) => s == "Standby" && *p,
            (AsgMode::Detach, None) => true,
            _ => false,
        };
        if !ok {
            return Err(StepError::verification(format!(
                "{id} after {:?}: {after:?}",
                input.mode
            )));
        }
        Ok(DetachOutput {
            group_name: Some(group),
            mode: input.mode,
            lifecycle_state_before: Some(state),
            lifecycle_state_after: after.as_ref().map(|a| a.1.clone()),
            protected_from_scale_in: after.map(|a| a.2).unwrap_or(true),
            lowered_min_size_from,
            changed,
            dry_run: false,
        })
    }
}
