//! Stop load balancers from sending traffic to the instance.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use firebreak_forensics::instance_state::TargetRegistration;
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::context::StepContext;
use crate::ec2::{describe_instance, registrations, InstanceRef};
use crate::error::{aws_error, StepError};
use crate::registry::Step;

/// Deregisters the instance from every ELBv2 target group it is in (every
/// port). Connections in flight drain for the group's deregistration
/// delay; no new ones arrive. Reads back. Idempotent.
#[derive(Debug)]
pub struct DeregisterFromTargetGroups;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeregisterOutput {
    pub deregistered: Vec<TargetRegistration>,
    pub changed: bool,
    pub dry_run: bool,
}

impl StepDef for DeregisterFromTargetGroups {
    const NAME: &'static str = "deregister_from_target_groups";
    const SUMMARY: &'static str = "Deregister the instance from every ELBv2 target group it is in.";
    const MUTATES: bool = true;
    type Input = InstanceRef;
    type Output = DeregisterOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::InstanceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                [
                    "ec2:DescribeInstances",
                    "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetHealth",
                ],
                ["*"],
            ),
            Statement::allow(
                ["elasticloadbalancing:DeregisterTargets"],
                ["arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"],
            ),
        ]
    }
}

#[async_trait]
impl Step for DeregisterFromTargetGroups {
    async fn run(ctx: &StepContext, input: InstanceRef) -> Result<DeregisterOutput, StepError> {
        let (_, id) = input.parse()?;
        let log = ctx.log(Self::NAME);
        let instance = describe_instance(ctx, &log, &id).await?;
        let vpc = instance.vpc_id().map(str::to_string);
        let now = registrations(ctx, &log, &id, vpc.as_deref()).await?;
        for r in &now {
            let params = format!(
                "TargetGroupArn={}, Targets=[{id}:{}]",
                r.target_group_arn,
                r.port
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "default".into())
            );
            if ctx.is_dry_run() {
                log.not_checked(
                    "elasticloadbalancing:DeregisterTargets",
                    params,
                    format!(
                        "ELBv2 has no dry run; needs elasticloadbalancing:DeregisterTargets on {}",
                        r.target_group_arn
                    ),
                );
                continue;
            }
            ctx.aws
                .elbv2
                .deregister_targets()
                .target_group_arn(&r.target_group_arn)
                .targets(
                    TargetDescription::builder()
                        .id(id.as_str())
                        .set_port(r.port)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| {
                    aws_error(
                        &format!(
                            "elasticloadbalancing:DeregisterTargets {}",
                            r.target_group_arn
                        ),
                        e,
                    )
                })?;
            log.done("elasticloadbalancing:DeregisterTargets", params);
        }
        if !ctx.is_dry_run() && !now.is_empty() {
            let left = registrations(ctx, &log, &id, vpc.as_deref()).await?;
            if !left.is_empty() {
                return Err(StepError::verification(format!(
                    "{id} is still registered: {left:?}"
                )));
            }
        }
        Ok(DeregisterOutput {
            changed: !now.is_empty() && !ctx.is_dry_run(),
            deregistered: now,
            dry_run: ctx.is_dry_run(),
        })
    }
}
