//! Stop load balancers from sending traffic to the instance.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use firebreak_forensics::instance_state::TargetRegistration;
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::containment::ec2::{
    classic_registrations, describe_instance, registrations, InstanceRef,
};
use crate::context::StepContext;
use crate::error::{aws_error, StepError};
use crate::step::Step;

/// Deregisters the instance from every ELBv2 target group it is in (every
/// port), its private addresses from every IP target group of its VPCs,
/// and the instance from every Classic Load Balancer. Connections in
/// flight drain for the group's deregistration delay; no new ones arrive.
/// Reads back. Idempotent.
#[derive(Debug)]
pub struct DeregisterFromTargetGroups;

/// What [`DeregisterFromTargetGroups`] took the instance out of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeregisterOutput {
    /// The ELBv2 target registrations found before the step (the instance,
    /// or its private addresses in IP target groups, by port); all deregistered
    /// unless this is a dry run. Targets already draining are not listed.
    pub deregistered: Vec<TargetRegistration>,
    /// Classic Load Balancers the instance was taken out of.
    #[serde(default)]
    pub classic_load_balancers: Vec<String>,
    /// Whether anything was deregistered (false in a dry run, or when the
    /// instance was in no target group or Classic Load Balancer).
    pub changed: bool,
    /// Whether this was a dry run: ELB has no dry run, so the
    /// deregistrations are only logged as not checked.
    pub dry_run: bool,
}

impl StepDef for DeregisterFromTargetGroups {
    const NAME: &'static str = "deregister_from_target_groups";
    const SUMMARY: &'static str = "Deregister the instance and its addresses from every target group, and from Classic Load Balancers.";
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
                    "elasticloadbalancing:DescribeLoadBalancers",
                ],
                ["*"],
            ),
            Statement::allow(
                ["elasticloadbalancing:DeregisterTargets"],
                ["arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"],
            ),
            Statement::allow(
                ["elasticloadbalancing:DeregisterInstancesFromLoadBalancer"],
                ["arn:aws:elasticloadbalancing:*:*:loadbalancer/*"],
            ),
        ]
    }
}

/// The target description of a registration.
pub(crate) fn target_of(id: &str, r: &TargetRegistration) -> TargetDescription {
    TargetDescription::builder()
        .id(r.ip.as_deref().unwrap_or(id))
        .set_port(r.port)
        .set_availability_zone(r.availability_zone.clone())
        .build()
}

/// How a registration reads in the log.
pub(crate) fn describe_registration(id: &str, r: &TargetRegistration) -> String {
    format!(
        "TargetGroupArn={}, Targets=[{}:{}{}]",
        r.target_group_arn,
        r.ip.as_deref().unwrap_or(id),
        r.port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "default".into()),
        r.availability_zone
            .as_deref()
            .map(|z| format!(" in {z}"))
            .unwrap_or_default()
    )
}

#[async_trait]
impl Step for DeregisterFromTargetGroups {
    async fn run(ctx: &StepContext, input: InstanceRef) -> Result<DeregisterOutput, StepError> {
        let (_, id) = input.parse()?;
        let log = ctx.log(Self::NAME);
        let instance = describe_instance(ctx, &log, &id).await?;
        let now = registrations(ctx, &log, &instance).await?;
        let classic = classic_registrations(ctx, &log, &instance).await?;
        for r in &now {
            let params = describe_registration(id.as_str(), r);
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
                .targets(target_of(id.as_str(), r))
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
        for lb in &classic {
            let params = format!("LoadBalancerName={lb}, Instances=[{id}] (Classic)");
            if ctx.is_dry_run() {
                log.not_checked(
                    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
                    params,
                    format!("ELB has no dry run; needs elasticloadbalancing:DeregisterInstancesFromLoadBalancer on {lb}"),
                );
                continue;
            }
            ctx.aws
                .elb
                .deregister_instances_from_load_balancer()
                .load_balancer_name(lb)
                .instances(
                    aws_sdk_elasticloadbalancing::types::Instance::builder()
                        .instance_id(id.as_str())
                        .build(),
                )
                .send()
                .await
                .map_err(|e| {
                    aws_error(
                        &format!("elasticloadbalancing:DeregisterInstancesFromLoadBalancer {lb}"),
                        e,
                    )
                })?;
            log.done(
                "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
                params,
            );
        }
        let registered = !now.is_empty() || !classic.is_empty();
        if !ctx.is_dry_run() && registered {
            let left = registrations(ctx, &log, &instance).await?;
            let left_classic = classic_registrations(ctx, &log, &instance).await?;
            if !left.is_empty() || !left_classic.is_empty() {
                return Err(StepError::verification(format!(
                    "{id} is still registered: {left:?} {left_classic:?}"
                )));
            }
        }
        Ok(DeregisterOutput {
            changed: registered && !ctx.is_dry_run(),
            deregistered: now,
            classic_load_balancers: classic,
            dry_run: ctx.is_dry_run(),
        })
    }
}
