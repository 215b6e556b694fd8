//! Take the instance out of its Auto Scaling group's hands.

use async_trait::async_trait;
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::case::InstanceId;
use crate::context::{StepContext, StepLog};
use crate::ec2::InstanceRef;
use crate::error::{aws_error, StepError};
use crate::registry::Step;

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DetachInput {
    pub case_id: String,
    pub instance_id: String,
    pub mode: AsgMode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DetachOutput {
    /// None when the instance is in no Auto Scaling group.
    pub group_name: Option<String>,
    pub mode: AsgMode,
    pub lifecycle_state_before: Option<String>,
    /// `Standby`, or None once detached.
    pub lifecycle_state_after: Option<String>,
    pub protected_from_scale_in: bool,
    /// When the group was at its minimum, its MinSize was lowered by one so
    /// the instance could leave without a replacement; this is the old
    /// value (release restores it from the record).
    pub lowered_min_size_from: Option<i32>,
    pub changed: bool,
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

/// (MinSize, DesiredCapacity) of a group.
pub(crate) async fn group_sizes(
    ctx: &StepContext,
    log: &StepLog<'_>,
    group: &str,
) -> Result<Option<(i32, i32)>, StepError> {
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
    Ok(out
        .auto_scaling_groups()
        .first()
        .map(|g| (g.min_size().unwrap_or(0), g.desired_capacity().unwrap_or(0))))
}

fn no_dry_run(log: &StepLog<'_>, action: &str, params: String, group: &str) {
    log.not_checked(
        action,
        params,
        format!("Auto Scaling has no dry run; needs {action} on group {group}"),
    );
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
        // Decrementing the desired capacity below the group's minimum is
        // refused; at the minimum, lower the minimum by one first (the
        // record keeps the original, release restores it).
        let leaving = matches!(
            (input.mode, state.as_str()),
            (AsgMode::Standby, "InService") | (AsgMode::Detach, _)
        );
        let mut lowered_min_size_from = None;
        if leaving {
            if let Some((min, desired)) = group_sizes(ctx, &log, &group).await? {
                if desired - 1 < min {
                    let params = format!("AutoScalingGroupName={group}, MinSize={} (was {min}: the group is at its minimum)", desired - 1);
                    if ctx.is_dry_run() {
                        no_dry_run(&log, "autoscaling:UpdateAutoScalingGroup", params, &group);
                    } else {
                        asg.update_auto_scaling_group()
                            .auto_scaling_group_name(&group)
                            .min_size((desired - 1).max(0))
                            .send()
                            .await
                            .map_err(|e| aws_error("autoscaling:UpdateAutoScalingGroup", e))?;
                        log.done("autoscaling:UpdateAutoScalingGroup", params);
                        changed = true;
                    }
                    lowered_min_size_from = Some(min);
                }
            }
        }
        match (input.mode, state.as_str()) {
            (AsgMode::Standby, "Standby") => {}
            (AsgMode::Standby, "InService") => {
                let params = format!("AutoScalingGroupName={group}, InstanceIds=[{id}], ShouldDecrementDesiredCapacity=true");
                if ctx.is_dry_run() {
                    no_dry_run(&log, "autoscaling:EnterStandby", params, &group);
                } else {
                    asg.enter_standby()
                        .auto_scaling_group_name(&group)
                        .instance_ids(id.as_str())
                        .should_decrement_desired_capacity(true)
                        .send()
                        .await
                        .map_err(|e| aws_error("autoscaling:EnterStandby", e))?;
                    log.done("autoscaling:EnterStandby", params);
                    changed = true;
                }
            }
            (AsgMode::Detach, _) => {
                let params = format!("AutoScalingGroupName={group}, InstanceIds=[{id}], ShouldDecrementDesiredCapacity=true");
                if ctx.is_dry_run() {
                    no_dry_run(&log, "autoscaling:DetachInstances", params, &group);
                } else {
                    asg.detach_instances()
                        .auto_scaling_group_name(&group)
                        .instance_ids(id.as_str())
                        .should_decrement_desired_capacity(true)
                        .send()
                        .await
                        .map_err(|e| aws_error("autoscaling:DetachInstances", e))?;
                    log.done("autoscaling:DetachInstances", params);
                    changed = true;
                }
            }
            (AsgMode::Standby, other) => {
                return Err(StepError::new(
                    ErrorName::Unsupported,
                    format!(
                        "{id} is {other} in {group}: only an InService instance can enter Standby"
                    ),
                ))
            }
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
