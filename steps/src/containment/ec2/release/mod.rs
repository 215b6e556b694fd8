//! Undo containment: restore exactly what was recorded.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, EbsInstanceBlockDeviceSpecification,
    IamInstanceProfileSpecification, InstanceBlockDeviceMappingSpecification,
};
use firebreak_forensics::instance_state::{
    differences_in, restorable_differences, Area, InstanceStateRecord, TargetRegistration,
};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{load_record, read_live_state, InstanceRef};
use crate::containment::autoscaling::membership;
use crate::containment::iam::denies::ROLE_WIDE_POLICY;
use crate::containment::iam::{deny_policy_name, policies, profile_roles, role_policy};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, required, StepError};
use crate::ids::InstanceId;
use crate::step::Step;
use plan::{ProfileChange, ReleasePlan};

mod plan;

/// Restores what `record_instance_state` recorded for the case: security
/// groups and source/dest check per interface, Elastic IP associations,
/// the instance-profile association, Auto Scaling membership and scale-in
/// protection, target group registrations, termination and stop
/// protection, shutdown behaviour and DeleteOnTermination per volume; and
/// removes the inline deny from the profile's role (unless asked to keep
/// it). Then reads the instance again and fails, naming each difference,
/// unless it equals the record (firebreak's own tags aside). Idempotent:
/// what already matches the record is not touched.
#[derive(Debug)]
pub struct ReleaseInstance;

/// What `release_instance` is asked to release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseInput {
    /// The case whose record is restored.
    pub case_id: String,
    /// The instance to release (`i-...`).
    pub instance_id: String,
    /// The evidence bucket that holds the case's record of the instance.
    pub evidence_bucket: String,
    /// What to do with the deny on sessions issued before containment.
    pub credential_deny: DenyOnRelease,
}

/// The deny on the role only ever blocks sessions issued from this
/// instance before containment, which an attacker may still hold; removing
/// it gives nothing back to legitimate use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DenyOnRelease {
    /// Remove it once every credential it can block has expired; keep it
    /// (and say until when) before that.
    #[default]
    Auto,
    /// Keep it until a later release removes it.
    Keep,
    /// Remove it now, even if credentials it blocks may still be valid.
    Remove,
}

/// Instance-profile credentials are observed to stay valid for about six
/// hours (AWS documents no maximum, only that they rotate); twice that is
/// the window in which a stolen one may still work.
pub const INSTANCE_CREDENTIAL_LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// What release restored and what it left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseOutput {
    /// The record restored, and where it is kept.
    pub record_location: String,
    /// The SHA-256 of the record's canonical JSON, as sealed at containment.
    pub record_sha256: String,
    /// What this run changed, in order.
    pub actions: Vec<String>,
    /// Differences left after restoring (empty unless a dry run).
    pub differences: Vec<String>,
    /// When the deny on the role was kept, until when credentials issued
    /// before containment may still be valid (release again after it, or
    /// with `--remove-credential-deny`).
    pub credential_deny_kept_until: Option<chrono::DateTime<chrono::Utc>>,
    /// What release left as it found it, and why (an ACL rule someone
    /// replaced, for example).
    #[serde(default)]
    pub notes: Vec<String>,
    /// True when this run changed anything.
    pub changed: bool,
    /// True in a dry run: nothing was changed, the calls were checked.
    pub dry_run: bool,
}

impl StepDef for ReleaseInstance {
    const NAME: &'static str = "release_instance";
    const SUMMARY: &'static str =
        "Restore the recorded pre-incident state (groups, EIPs, profile, ASG, target groups, attributes); verify by diff.";
    const MUTATES: bool = true;
    type Input = ReleaseInput;
    type Output = ReleaseOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::InstanceNotFound,
            ErrorName::ResourceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        let mut v = vec![
            Statement::allow(
                ["ec2:DescribeInstanceAttribute"],
                ["arn:aws:ec2:*:*:instance/*"],
            ),
            Statement::allow(
                [
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeNetworkAcls",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeVolumes",
                    "ec2:DescribeIamInstanceProfileAssociations",
                    "ec2:DescribeAddresses",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeAutoScalingGroups",
                    "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetHealth",
                    "elasticloadbalancing:DescribeLoadBalancers",
                ],
                ["*"],
            ),
            Statement::allow(
                [
                    "ec2:ModifyNetworkInterfaceAttribute",
                    "ec2:ModifyInstanceAttribute",
                    "ec2:AssociateAddress",
                    "ec2:AssociateIamInstanceProfile",
                    "ec2:ReplaceIamInstanceProfileAssociation",
                    "ec2:DisassociateIamInstanceProfile",
                ],
                [
                    "arn:aws:ec2:*:*:instance/*",
                    "arn:aws:ec2:*:*:network-interface/*",
                    "arn:aws:ec2:*:*:security-group/*",
                    "arn:aws:ec2:*:*:elastic-ip/*",
                ],
            ),
            Statement::allow(
                ["ec2:DeleteNetworkAclEntry"],
                ["arn:aws:ec2:*:*:network-acl/*"],
            ),
            Statement::allow(
                ["ec2:DeleteSecurityGroup"],
                ["arn:aws:ec2:*:*:security-group/*"],
            )
            .with_condition(serde_json::json!({"StringEquals": {"aws:ResourceTag/firebreak:role": "isolation"}})),
            Statement::allow(["iam:PassRole"], ["arn:aws:iam::*:role/*"]).with_condition(
                serde_json::json!({"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
            ),
            Statement::allow(
                ["iam:DeleteRolePolicy"],
                ["arn:aws:iam::*:role/*"],
            ),
            Statement::allow(
                ["iam:DeletePolicy"],
                ["arn:aws:iam::*:policy/firebreak/*"],
            ),
            Statement::allow(["iam:DetachRolePolicy"], ["arn:aws:iam::*:role/*"]).with_condition(
                serde_json::json!({"ArnLike": {"iam:PolicyARN": "arn:aws:iam::*:policy/firebreak/*"}}),
            ),
            Statement::allow(
                [
                    "autoscaling:ExitStandby",
                    "autoscaling:EnterStandby",
                    "autoscaling:AttachInstances",
                    "autoscaling:SetInstanceProtection",
                    "autoscaling:UpdateAutoScalingGroup",
                    "autoscaling:CreateOrUpdateTags",
                    "autoscaling:DeleteTags",
                ],
                ["arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*"],
            ),
            Statement::allow(
                [
                    "elasticloadbalancing:RegisterTargets",
                    "elasticloadbalancing:DeregisterTargets",
                ],
                ["arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"],
            ),
            Statement::allow(
                [
                    "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
                ],
                ["arn:aws:elasticloadbalancing:*:*:loadbalancer/*"],
            ),
            Statement::allow(["s3:GetObject"], ["arn:aws:s3:::*/cases/*"]),
            Statement::allow(["s3:ListBucket"], ["arn:aws:s3:::*"]),
        ];
        v.extend(crate::containment::iam::deny_policy_statements());
        v
    }
}

/// Runs one change (or records its plan in a dry run).
struct Changes<'a> {
    ctx: &'a StepContext,
    log: StepLog<'a>,
    actions: Vec<String>,
    /// What was left as found, and why.
    notes: Vec<String>,
}

impl Changes<'_> {
    fn planned(&mut self, action: &str, params: String, why: &str) {
        self.log.not_checked(action, params, why);
    }

    fn done(&mut self, action: &str, params: String) {
        self.actions.push(format!("{action} {params}"));
        self.log.done(action, params);
    }
}

fn no_dry_run(service: &str, action: &str) -> String {
    format!("{service} has no dry run; needs {action}")
}

/// Sends one ModifyInstanceAttribute (or checks it in a dry run).
async fn modify_attribute(
    c: &mut Changes<'_>,
    req: aws_sdk_ec2::operation::modify_instance_attribute::builders::ModifyInstanceAttributeFluentBuilder,
    params: String,
) -> Result<(), StepError> {
    if c.ctx.is_dry_run() {
        return c.log.dry_run(
            "ec2:ModifyInstanceAttribute",
            params,
            req.dry_run(true).send().await,
        );
    }
    req.send()
        .await
        .map_err(|e| aws_error(&format!("ec2:ModifyInstanceAttribute ({params})"), e))?;
    c.done("ec2:ModifyInstanceAttribute", params);
    Ok(())
}

/// Attributes other than termination protection: DeleteOnTermination per
/// volume, shutdown behaviour, stop protection.
async fn restore_attributes(
    c: &mut Changes<'_>,
    id: &InstanceId,
    plan: &ReleasePlan,
) -> Result<(), StepError> {
    let ec2 = c.ctx.aws.ec2.clone();
    let attr = || ec2.modify_instance_attribute().instance_id(id.as_str());
    if !plan.delete_on_termination.is_empty() {
        let mut b = attr();
        for v in &plan.delete_on_termination {
            b = b.block_device_mappings(
                InstanceBlockDeviceMappingSpecification::builder()
                    .device_name(&v.device_name)
                    .ebs(
                        EbsInstanceBlockDeviceSpecification::builder()
                            .delete_on_termination(v.delete_on_termination)
                            .build(),
                    )
                    .build(),
            );
        }
        let what: Vec<String> = plan
            .delete_on_termination
            .iter()
            .map(|v| format!("{}={}", v.volume_id, v.delete_on_termination))
            .collect();
        let params = format!("{id} DeleteOnTermination [{}]", what.join(", "));
        modify_attribute(c, b, params).await?;
    }
    if let Some(v) = &plan.shutdown_behavior {
        let b =
            attr().instance_initiated_shutdown_behavior(AttributeValue::builder().value(v).build());
        modify_attribute(c, b, format!("{id} InstanceInitiatedShutdownBehavior={v}")).await?;
    }
    if let Some(v) = plan.disable_api_stop {
        let b = attr().disable_api_stop(AttributeBooleanValue::builder().value(v).build());
        modify_attribute(c, b, format!("{id} DisableApiStop={v}")).await?;
    }
    Ok(())
}

/// Termination protection, last: everything else is back.
async fn restore_termination(
    c: &mut Changes<'_>,
    id: &InstanceId,
    plan: &ReleasePlan,
) -> Result<(), StepError> {
    let Some(v) = plan.disable_api_termination else {
        return Ok(());
    };
    let b = c
        .ctx
        .aws
        .ec2
        .modify_instance_attribute()
        .instance_id(id.as_str())
        .disable_api_termination(AttributeBooleanValue::builder().value(v).build());
    let params = format!("{id} DisableApiTermination={v} (last: everything else is back)");
    modify_attribute(c, b, params).await
}

/// The live association a profile change acts on; an error naming the
/// call when EC2 did not report one (never an empty id sent to AWS).
fn association(id: &InstanceId, a: &Option<String>, call: &str) -> Result<String, StepError> {
    required(
        &format!("{call}: ec2:DescribeIamInstanceProfileAssociations of {id}'s profile"),
        "an AssociationId",
        a.as_deref(),
    )
}

/// The instance profile association, as recorded.
async fn restore_profile(
    c: &mut Changes<'_>,
    id: &InstanceId,
    plan: &ReleasePlan,
) -> Result<(), StepError> {
    let ec2 = c.ctx.aws.ec2.clone();
    let dry = c.ctx.is_dry_run();
    let profile = |arn: &str| IamInstanceProfileSpecification::builder().arn(arn).build();
    match &plan.profile {
        None => {}
        Some(ProfileChange::Associate { arn }) => {
            let call = "ec2:AssociateIamInstanceProfile";
            let params = format!("InstanceId={id}, IamInstanceProfile={arn}");
            if dry {
                c.planned(call, params, "this API has no DryRun; needs ec2:AssociateIamInstanceProfile and iam:PassRole");
                return Ok(());
            }
            ec2.associate_iam_instance_profile()
                .instance_id(id.as_str())
                .iam_instance_profile(profile(arn))
                .send()
                .await
                .map_err(|e| aws_error(call, e))?;
            c.done(call, params);
        }
        Some(ProfileChange::Replace {
            association_id,
            arn,
        }) => {
            let call = "ec2:ReplaceIamInstanceProfileAssociation";
            let assoc = association(id, association_id, call)?;
            let params = format!("AssociationId={assoc}, IamInstanceProfile={arn}");
            if dry {
                c.planned(call, params, "this API has no DryRun; needs ec2:ReplaceIamInstanceProfileAssociation and iam:PassRole");
                return Ok(());
            }
            ec2.replace_iam_instance_profile_association()
                .association_id(&assoc)
                .iam_instance_profile(profile(arn))
                .send()
                .await
                .map_err(|e| aws_error(call, e))?;
            c.done(call, params);
        }
        Some(ProfileChange::Disassociate { association_id }) => {
            let call = "ec2:DisassociateIamInstanceProfile";
            let assoc = association(id, association_id, call)?;
            let params = format!("AssociationId={assoc} (no profile was recorded)");
            if dry {
                c.planned(call, params, "this API has no DryRun");
                return Ok(());
            }
            ec2.disassociate_iam_instance_profile()
                .association_id(&assoc)
                .send()
                .await
                .map_err(|e| aws_error(call, e))?;
            c.done(call, params);
        }
    }
    Ok(())
}

/// The denies on the profile's roles: the outside-VPC deny always goes;
/// the cut-off deny as `deny` says (by default once every credential it
/// can block has expired); the role-wide fallback once its cut-off is that
/// old; an earlier version's inline deny likewise. Returns until when a
/// kept deny matters.
async fn remove_denies(
    c: &mut Changes<'_>,
    id: &InstanceId,
    rec: &InstanceStateRecord,
    deny: DenyOnRelease,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StepError> {
    let Some(arn) = rec.instance_profile.as_ref().and_then(|p| p.arn.clone()) else {
        return Ok(None);
    };
    let ctx = c.ctx;
    let now = chrono::Utc::now();
    let expired = |t: chrono::DateTime<chrono::Utc>| t + INSTANCE_CREDENTIAL_LIFETIME <= now;
    let drop_cutoff = |t: chrono::DateTime<chrono::Utc>| match deny {
        DenyOnRelease::Keep => false,
        DenyOnRelease::Remove => true,
        DenyOnRelease::Auto => expired(t),
    };
    let mut kept_until: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut keep = |t: chrono::DateTime<chrono::Utc>| {
        let until = t + INSTANCE_CREDENTIAL_LIFETIME;
        kept_until = Some(kept_until.map_or(until, |k| k.max(until)));
    };
    for role in profile_roles(ctx, &c.log, &arn).await? {
        let before = policies::read_role(ctx, &c.log, &role).await?;
        if let Some((_, t)) = before.cutoff_of(id.as_str()) {
            if !drop_cutoff(t) {
                keep(t);
            }
        }
        let done =
            policies::remove_deny(ctx, &c.log, &role, id.as_str(), true, &drop_cutoff).await?;
        for d in done {
            c.actions.push(d);
        }
        // The role-wide fallback denies every instance of the role: it
        // goes only once every session it can block has expired.
        if let Some(t) = policies::role_wide(ctx, &c.log, &role).await? {
            if deny != DenyOnRelease::Keep && expired(t) {
                if policies::remove_role_wide(ctx, &c.log, &role).await? {
                    c.actions
                        .push(format!("iam:DeleteRolePolicy {role} {ROLE_WIDE_POLICY}"));
                }
            } else {
                keep(t);
            }
        }
        // An earlier version's inline deny for this instance.
        let name = deny_policy_name(id.as_str());
        let Some(doc) = role_policy(ctx, &c.log, &role, &name).await? else {
            continue;
        };
        if let Some(t) = crate::containment::iam::deny_cutoff(&doc) {
            if !drop_cutoff(t) {
                keep(t);
                continue;
            }
        } else if deny != DenyOnRelease::Remove {
            continue;
        }
        let params = format!("RoleName={role}, PolicyName={name}");
        if ctx.is_dry_run() {
            c.planned(
                "iam:DeleteRolePolicy",
                params,
                &no_dry_run("IAM", "iam:DeleteRolePolicy"),
            );
            continue;
        }
        match ctx
            .aws
            .iam
            .delete_role_policy()
            .role_name(&role)
            .policy_name(&name)
            .send()
            .await
        {
            Ok(_) => c.done("iam:DeleteRolePolicy", params),
            Err(e) if error_code(&e).as_deref() == Some("NoSuchEntity") => {}
            Err(e) => return Err(aws_error(&format!("iam:DeleteRolePolicy {role}"), e)),
        }
    }
    Ok(kept_until)
}

/// Elastic IPs, back on the interface and private address they had.
async fn restore_eips(c: &mut Changes<'_>, plan: &ReleasePlan) -> Result<(), StepError> {
    let ec2 = c.ctx.aws.ec2.clone();
    for eip in &plan.addresses {
        let Some(eni) = &eip.network_interface_id else {
            continue;
        };
        let params = format!(
            "AllocationId={}, NetworkInterfaceId={eni}, PrivateIpAddress={}",
            eip.allocation_id,
            eip.private_ip.as_deref().unwrap_or("(the primary)")
        );
        let req = ec2
            .associate_address()
            .allocation_id(&eip.allocation_id)
            .network_interface_id(eni)
            .set_private_ip_address(eip.private_ip.clone())
            .allow_reassociation(false);
        if c.ctx.is_dry_run() {
            c.log.dry_run(
                "ec2:AssociateAddress",
                params,
                req.dry_run(true).send().await,
            )?;
        } else {
            req.send().await.map_err(|e| {
                aws_error(&format!("ec2:AssociateAddress {}", eip.allocation_id), e)
            })?;
            c.done("ec2:AssociateAddress", params);
        }
    }
    Ok(())
}

/// Sets one interface's groups (the whole set in one call).
async fn set_interface_groups(
    c: &mut Changes<'_>,
    eni: &str,
    groups: &[String],
    why: &str,
) -> Result<(), StepError> {
    let params = format!(
        "NetworkInterfaceId={eni}, Groups=[{}] ({why})",
        groups.join(", ")
    );
    let req = c
        .ctx
        .aws
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(eni)
        .set_groups(Some(groups.to_vec()));
    if c.ctx.is_dry_run() {
        return c.log.dry_run(
            "ec2:ModifyNetworkInterfaceAttribute",
            params,
            req.dry_run(true).send().await,
        );
    }
    req.send()
        .await
        .map_err(|e| aws_error(&format!("ec2:ModifyNetworkInterfaceAttribute {eni}"), e))?;
    c.done("ec2:ModifyNetworkInterfaceAttribute", params);
    Ok(())
}

/// Interfaces: groups and source/dest check. The network opens here, so
/// it comes after everything else of the instance. Returns the interfaces
/// whose groups this run restored (so a later failure can isolate them
/// again).
async fn restore_interfaces(
    c: &mut Changes<'_>,
    id: &InstanceId,
    plan: &ReleasePlan,
    opened: &mut Vec<String>,
) -> Result<(), StepError> {
    if let Some(gone) = plan.missing_interfaces.first() {
        return Err(StepError::new(
            ErrorName::ResourceNotFound,
            format!("interface {gone} is no longer attached to {id}"),
        ));
    }
    for g in &plan.interface_groups {
        set_interface_groups(c, &g.network_interface_id, &g.groups, "as recorded").await?;
        opened.push(g.network_interface_id.clone());
    }
    for s in &plan.source_dest_checks {
        let (eni, want) = (&s.network_interface_id, s.value);
        let params = format!("NetworkInterfaceId={eni}, SourceDestCheck={want}");
        let req = c
            .ctx
            .aws
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(eni)
            .source_dest_check(AttributeBooleanValue::builder().value(want).build());
        if c.ctx.is_dry_run() {
            c.log.dry_run(
                "ec2:ModifyNetworkInterfaceAttribute",
                params,
                req.dry_run(true).send().await,
            )?;
        } else {
            req.send()
                .await
                .map_err(|e| aws_error("ec2:ModifyNetworkInterfaceAttribute", e))?;
            c.done("ec2:ModifyNetworkInterfaceAttribute", params);
        }
    }
    Ok(())
}

/// Puts interfaces this run opened back on the groups they had when it
/// started (the isolation groups): a release that fails leaves the
/// instance isolated. Says what became of each.
async fn isolate_again(
    c: &mut Changes<'_>,
    now: &InstanceStateRecord,
    opened: &[String],
) -> Vec<String> {
    let mut said = Vec::new();
    for eni in opened {
        let Some(cur) = now
            .network_interfaces
            .iter()
            .find(|n| &n.network_interface_id == eni)
        else {
            continue;
        };
        let groups = cur.security_group_ids.clone();
        match set_interface_groups(c, eni, &groups, "release failed: isolated again").await {
            Ok(()) => said.push(format!("{eni} is isolated again ({})", groups.join(", "))),
            Err(e) => said.push(format!(
                "{eni} could NOT be isolated again ({e}): it is on its recorded groups"
            )),
        }
    }
    said
}

/// Auto Scaling: back in service (or back in the group), the minimum as
/// it was (never above the desired capacity while other instances of the
/// group are still contained), then the recorded scale-in protection.
async fn restore_auto_scaling(
    c: &mut Changes<'_>,
    id: &InstanceId,
    rec: &InstanceStateRecord,
    undo: &mut Vec<Undo>,
) -> Result<(), StepError> {
    let Some(asg) = &rec.auto_scaling else {
        return Ok(());
    };
    let ctx = c.ctx;
    let dry = ctx.is_dry_run();
    let group = &asg.group_name;
    let current = membership(ctx, &c.log, id).await?;
    let asc = &ctx.aws.autoscaling;
    let params = format!("AutoScalingGroupName={group}, InstanceIds=[{id}]");
    match (&current, asg.lifecycle_state.as_str()) {
        (Some((_, state, _)), "InService") if state == "Standby" => {
            if dry {
                c.planned(
                    "autoscaling:ExitStandby",
                    params,
                    &no_dry_run("Auto Scaling", "autoscaling:ExitStandby"),
                );
            } else {
                asc.exit_standby()
                    .auto_scaling_group_name(group)
                    .instance_ids(id.as_str())
                    .send()
                    .await
                    .map_err(|e| aws_error("autoscaling:ExitStandby", e))?;
                c.done("autoscaling:ExitStandby", params);
                undo.push(Undo::Group(group.clone()));
            }
        }
        (None, _) => {
            if dry {
                c.planned(
                    "autoscaling:AttachInstances",
                    params,
                    &no_dry_run("Auto Scaling", "autoscaling:AttachInstances"),
                );
            } else {
                asc.attach_instances()
                    .auto_scaling_group_name(group)
                    .instance_ids(id.as_str())
                    .send()
                    .await
                    .map_err(|e| aws_error("autoscaling:AttachInstances", e))?;
                c.done("autoscaling:AttachInstances", params);
                undo.push(Undo::Group(group.clone()));
            }
        }
        _ => {}
    }
    if let Some(g) = crate::containment::autoscaling::group_state(ctx, &c.log, group).await? {
        if let Some(min) = crate::containment::autoscaling::restored_min(&g, asg.group_min_size) {
            let why = format!(
                "the original {} as far as the desired capacity {} allows",
                g.original_min.or(asg.group_min_size).unwrap_or(min),
                g.desired
            );
            if dry {
                c.planned(
                    "autoscaling:UpdateAutoScalingGroup",
                    format!("AutoScalingGroupName={group}, MinSize={min} ({why})"),
                    &no_dry_run("Auto Scaling", "autoscaling:UpdateAutoScalingGroup"),
                );
            } else {
                crate::containment::autoscaling::set_min(ctx, &c.log, group, min, &why).await?;
                c.actions.push(format!(
                    "autoscaling:UpdateAutoScalingGroup {group} MinSize={min}"
                ));
            }
        }
        let min_now =
            crate::containment::autoscaling::restored_min(&g, asg.group_min_size).unwrap_or(g.min);
        if let Some(orig) = g.original_min.filter(|o| *o == min_now) {
            if !dry {
                crate::containment::autoscaling::untag_original_min(ctx, &c.log, group, orig)
                    .await?;
                c.actions.push(format!(
                    "autoscaling:DeleteTags {group} {}",
                    crate::containment::autoscaling::MIN_SIZE_TAG
                ));
            }
        }
    }
    let want = asg.protected_from_scale_in.unwrap_or(false);
    let have = if dry {
        current.as_ref().map(|m| m.2)
    } else {
        membership(ctx, &c.log, id).await?.map(|m| m.2)
    };
    if have != Some(want) {
        let params = format!(
            "AutoScalingGroupName={group}, InstanceIds=[{id}], ProtectedFromScaleIn={want}"
        );
        if dry {
            c.planned(
                "autoscaling:SetInstanceProtection",
                params,
                &no_dry_run("Auto Scaling", "autoscaling:SetInstanceProtection"),
            );
        } else {
            asc.set_instance_protection()
                .auto_scaling_group_name(group)
                .instance_ids(id.as_str())
                .protected_from_scale_in(want)
                .send()
                .await
                .map_err(|e| aws_error("autoscaling:SetInstanceProtection", e))?;
            c.done("autoscaling:SetInstanceProtection", params);
        }
    }
    Ok(())
}

/// Load balancers: target groups (instance and IP targets) and Classic
/// Load Balancers, as recorded.
async fn restore_load_balancers(
    c: &mut Changes<'_>,
    id: &InstanceId,
    rec: &InstanceStateRecord,
    now: &InstanceStateRecord,
    undo: &mut Vec<Undo>,
) -> Result<(), StepError> {
    let ctx = c.ctx;
    let (targets, classics) = plan::load_balancers(rec, now);
    for r in &targets {
        let params = crate::containment::elbv2::describe_registration(id.as_str(), r);
        if ctx.is_dry_run() {
            c.planned(
                "elasticloadbalancing:RegisterTargets",
                params,
                &no_dry_run("ELBv2", "elasticloadbalancing:RegisterTargets"),
            );
            continue;
        }
        ctx.aws
            .elbv2
            .register_targets()
            .target_group_arn(&r.target_group_arn)
            .targets(crate::containment::elbv2::target_of(id.as_str(), r))
            .send()
            .await
            .map_err(|e| aws_error("elasticloadbalancing:RegisterTargets", e))?;
        c.done("elasticloadbalancing:RegisterTargets", params);
        undo.push(Undo::Target(r.clone()));
    }
    for lb in &classics {
        let params = format!("LoadBalancerName={lb}, Instances=[{id}] (Classic)");
        if ctx.is_dry_run() {
            c.planned(
                "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                params,
                &no_dry_run(
                    "ELB",
                    "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                ),
            );
            continue;
        }
        ctx.aws
            .elb
            .register_instances_with_load_balancer()
            .load_balancer_name(lb)
            .instances(
                aws_sdk_elasticloadbalancing::types::Instance::builder()
                    .instance_id(id.as_str())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_error("elasticloadbalancing:RegisterInstancesWithLoadBalancer", e))?;
        c.done(
            "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
            params,
        );
        undo.push(Undo::Classic(lb.clone()));
    }
    Ok(())
}

/// A service change this run made, to take back if release fails later.
#[derive(Clone, Debug)]
enum Undo {
    Group(String),
    Target(TargetRegistration),
    Classic(String),
}

/// Takes the instance out of service again (what this run put back).
async fn out_of_service_again(c: &mut Changes<'_>, id: &InstanceId, undo: &[Undo]) -> Vec<String> {
    let ctx = c.ctx;
    let mut said = Vec::new();
    for u in undo.iter().rev() {
        let r = match u {
            Undo::Target(r) => ctx
                .aws
                .elbv2
                .deregister_targets()
                .target_group_arn(&r.target_group_arn)
                .targets(crate::containment::elbv2::target_of(id.as_str(), r))
                .send()
                .await
                .map(|_| format!("deregistered from {} again", r.target_group_arn))
                .map_err(|e| aws_error("elasticloadbalancing:DeregisterTargets", e)),
            Undo::Classic(lb) => ctx
                .aws
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
                .map(|_| format!("deregistered from {lb} again"))
                .map_err(|e| {
                    aws_error(
                        "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
                        e,
                    )
                }),
            Undo::Group(g) => crate::containment::autoscaling::take_out(ctx, &c.log, g, id)
                .await
                .map(|_| format!("out of {g} again (Standby)")),
        };
        said.push(r.unwrap_or_else(|e| format!("could NOT take it out of service again: {e}")));
    }
    said
}

/// Fails naming the differences left in some areas.
fn check_areas(
    id: &InstanceId,
    rec: &InstanceStateRecord,
    after: &InstanceStateRecord,
    areas: &[Area],
) -> Result<(), StepError> {
    let d = differences_in(rec, after, areas);
    if d.is_empty() {
        Ok(())
    } else {
        Err(StepError::verification(format!(
            "after release {id} differs from the record: {}",
            d.join("; ")
        )))
    }
}

/// Restores in the order that never puts an isolated instance into
/// service: the instance itself first (attributes, profile and denies,
/// addresses, the ACL cut, then its groups), checked; then service (Auto
/// Scaling, load balancers), checked; termination protection last. A
/// failure before service is complete isolates the instance again and
/// takes it out of service again.
async fn restore(
    c: &mut Changes<'_>,
    r: &Restore<'_>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StepError> {
    let (id, rec, now) = (r.id, r.rec, r.now);
    let plan = ReleasePlan::of(rec, now);
    restore_attributes(c, id, &plan).await?;
    restore_profile(c, id, &plan).await?;
    let kept_until = remove_denies(c, id, rec, r.deny).await?;
    restore_eips(c, &plan).await?;
    let (done, left) =
        super::nacl::remove_cut(c.ctx, &c.log, r.bucket, r.case, id.as_str()).await?;
    if !c.ctx.is_dry_run() {
        c.actions.extend(done);
    }
    c.notes.extend(left);
    let mut opened = Vec::new();
    let mut undo = Vec::new();
    let result = async {
        restore_interfaces(c, id, &plan, &mut opened).await?;
        if c.ctx.is_dry_run() {
            restore_auto_scaling(c, id, rec, &mut undo).await?;
            return restore_load_balancers(c, id, rec, now, &mut undo).await;
        }
        let after = read_live_state(c.ctx, &c.log, id).await?;
        check_areas(id, rec, &after, &[Area::Instance])?;
        restore_auto_scaling(c, id, rec, &mut undo).await?;
        restore_load_balancers(c, id, rec, &after, &mut undo).await?;
        let after = read_live_state(c.ctx, &c.log, id).await?;
        check_areas(id, rec, &after, &[Area::Service])
    }
    .await;
    if let Err(e) = result {
        if c.ctx.is_dry_run() {
            return Err(e);
        }
        let mut said = out_of_service_again(c, id, &undo).await;
        said.extend(isolate_again(c, now, &opened).await);
        return Err(StepError::new(
            e.name,
            if said.is_empty() {
                e.message
            } else {
                format!("{}; so: {}", e.message, said.join("; "))
            },
        ));
    }
    restore_termination(c, id, &plan).await?;
    drop_unused_isolation_groups(c, now).await;
    drop_case_transition_groups(c, r.case).await;
    Ok(kept_until)
}

/// Deletes the case's allow-all transition groups that no interface uses:
/// a containment stopped after its moves (Ctrl-C, a kill) and released
/// without being run again leaves one behind.
async fn drop_case_transition_groups(c: &mut Changes<'_>, case: &str) {
    let ec2 = &c.ctx.aws.ec2;
    c.log.read(
        "ec2:DescribeSecurityGroups",
        format!(
            "Filters=[tag:{}=transition, tag:{}={case}]",
            crate::tags::ROLE,
            crate::tags::CASE
        ),
    );
    let Ok(out) = ec2
        .describe_security_groups()
        .filters(super::filter(
            &format!("tag:{}", crate::tags::ROLE),
            ["transition"],
        ))
        .filters(super::filter(&format!("tag:{}", crate::tags::CASE), [case]))
        .send()
        .await
    else {
        return;
    };
    for id in out.security_groups().iter().filter_map(|g| g.group_id()) {
        delete_group_if_unused(
            c,
            id,
            "the case's transition group",
            "the case's allow-all transition group, left by a stopped run",
            true,
        )
        .await;
    }
}

/// Deletes the firebreak isolation groups the instance was on that no
/// interface uses any more, so a release leaves the VPC as it was. One
/// still in use (another contained instance of the VPC) stays. A
/// containment in the VPC that found the group a moment before fails that
/// interface (reported); running it again makes the group anew.
async fn drop_unused_isolation_groups(c: &mut Changes<'_>, now: &InstanceStateRecord) {
    let ec2 = &c.ctx.aws.ec2;
    let ids: BTreeSet<String> = now
        .network_interfaces
        .iter()
        .flat_map(|n| n.security_group_ids.iter().cloned())
        .collect();
    if ids.is_empty() {
        return;
    }
    c.log.read(
        "ec2:DescribeSecurityGroups",
        format!(
            "GroupIds=[{}], Filters=[tag:{}=isolation]",
            ids.iter().cloned().collect::<Vec<_>>().join(", "),
            crate::tags::ROLE
        ),
    );
    let Ok(out) = ec2
        .describe_security_groups()
        .set_group_ids(Some(ids.into_iter().collect()))
        .filters(super::filter(
            &format!("tag:{}", crate::tags::ROLE),
            ["isolation"],
        ))
        .send()
        .await
    else {
        return;
    };
    for id in out.security_groups().iter().filter_map(|g| g.group_id()) {
        delete_group_if_unused(
            c,
            id,
            "firebreak's isolation group",
            "firebreak's isolation group: no interface uses it now",
            false,
        )
        .await;
    }
}

/// Deletes one of firebreak's groups when no interface uses it (a dry run
/// checks the delete); a group that stays is noted, with why, and one in
/// use only when `note_in_use`.
async fn delete_group_if_unused(
    c: &mut Changes<'_>,
    id: &str,
    what: &str,
    why: &str,
    note_in_use: bool,
) {
    let ec2 = &c.ctx.aws.ec2;
    c.log.read(
        "ec2:DescribeNetworkInterfaces",
        format!("Filters=[group-id={id}]"),
    );
    let used = ec2
        .describe_network_interfaces()
        .filters(super::filter("group-id", [id]))
        .send()
        .await
        .map(|o| !o.network_interfaces().is_empty())
        .unwrap_or(true);
    if used {
        if note_in_use {
            c.notes
                .push(format!("{what} {id} stays: an interface is on it"));
        }
        return;
    }
    let params = format!("GroupId={id} ({why})");
    if c.ctx.is_dry_run() {
        let r = ec2
            .delete_security_group()
            .group_id(id)
            .dry_run(true)
            .send()
            .await;
        let _ = c.log.dry_run("ec2:DeleteSecurityGroup", params, r);
        return;
    }
    match ec2.delete_security_group().group_id(id).send().await {
        Ok(_) => c.done("ec2:DeleteSecurityGroup", params),
        Err(e) => c.notes.push(format!(
            "{what} {id} stays: {}",
            aws_error("ec2:DeleteSecurityGroup", e)
        )),
    }
}

/// What one release works from.
struct Restore<'a> {
    id: &'a InstanceId,
    case: &'a str,
    bucket: &'a str,
    rec: &'a InstanceStateRecord,
    now: &'a InstanceStateRecord,
    deny: DenyOnRelease,
}

#[async_trait]
impl Step for ReleaseInstance {
    async fn run(ctx: &StepContext, input: ReleaseInput) -> Result<ReleaseOutput, StepError> {
        let (case, id) = InstanceRef {
            case_id: input.case_id.clone(),
            instance_id: input.instance_id.clone(),
        }
        .parse()?;
        super::parse_bucket(&input.evidence_bucket)?;
        let log = ctx.log(Self::NAME);
        let Some((sealed, location)) = load_record(
            ctx,
            &log,
            &input.evidence_bucket,
            case.as_str(),
            id.as_str(),
        )
        .await?
        else {
            return Err(StepError::new(
                ErrorName::ResourceNotFound,
                format!(
                    "case {case} has no record of {id} in s3://{}: without it there is nothing to restore to",
                    input.evidence_bucket
                ),
            ));
        };
        let rec = &sealed.record;
        let now = read_live_state(ctx, &log, &id).await?;
        // An interrupt waits for the whole restore: stopping between the
        // groups and the return to service would leave it half released.
        let critical = ctx.interrupt.critical().await;
        let mut changes = Changes {
            ctx,
            log: ctx.log(Self::NAME),
            actions: Vec::new(),
            notes: Vec::new(),
        };
        let restored = restore(
            &mut changes,
            &Restore {
                id: &id,
                case: case.as_str(),
                bucket: &input.evidence_bucket,
                rec,
                now: &now,
                deny: input.credential_deny,
            },
        )
        .await;
        drop(critical);
        let actions = changes.actions;
        let notes = changes.notes;
        let kept_until = match restored {
            Ok(k) => k,
            Err(e) => {
                return Err(StepError::new(
                    e.name,
                    format!(
                        "{}; done before the failure: {}",
                        e.message,
                        if actions.is_empty() {
                            "nothing".to_string()
                        } else {
                            actions.join("; ")
                        }
                    ),
                ))
            }
        };
        let differences = if ctx.is_dry_run() {
            restorable_differences(rec, &now)
        } else {
            let after = read_live_state(ctx, &log, &id).await?;
            let d = restorable_differences(rec, &after);
            if !d.is_empty() {
                return Err(StepError::verification(format!(
                    "after release {id} differs from the record: {}",
                    d.join("; ")
                )));
            }
            d
        };
        Ok(ReleaseOutput {
            record_location: location,
            record_sha256: sealed.digest.sha256.clone(),
            changed: !actions.is_empty(),
            actions,
            differences,
            credential_deny_kept_until: kept_until,
            notes,
            dry_run: ctx.is_dry_run(),
        })
    }
}
