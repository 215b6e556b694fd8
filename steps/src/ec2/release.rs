//! Undo containment: restore exactly what was recorded.

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, EbsInstanceBlockDeviceSpecification,
    IamInstanceProfileSpecification, InstanceBlockDeviceMappingSpecification,
};
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use firebreak_forensics::instance_state::{restorable_differences, InstanceStateRecord};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{load_record, read_live_state, InstanceRef};
use crate::autoscaling::membership;
use crate::case::InstanceId;
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, StepError};
use crate::iam::{deny_policy_name, profile_roles, role_policy};
use crate::registry::Step;

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseInput {
    pub case_id: String,
    pub instance_id: String,
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
    Keep,
    Remove,
}

/// Instance-profile credentials are observed to stay valid for about six
/// hours (AWS documents no maximum, only that they rotate); twice that is
/// the window in which a stolen one may still work.
pub const INSTANCE_CREDENTIAL_LIFETIME: chrono::Duration = chrono::Duration::hours(12);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseOutput {
    /// The record restored, and where it is kept.
    pub record_location: String,
    pub record_sha256: String,
    /// What this run changed, in order.
    pub actions: Vec<String>,
    /// Differences left after restoring (empty unless a dry run).
    pub differences: Vec<String>,
    /// When the deny on the role was kept, until when credentials issued
    /// before containment may still be valid (release again after it, or
    /// with `--remove-credential-deny`).
    pub credential_deny_kept_until: Option<chrono::DateTime<chrono::Utc>>,
    pub changed: bool,
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
        vec![
            Statement::allow(
                ["ec2:DescribeInstanceAttribute"],
                ["arn:aws:ec2:*:*:instance/*"],
            ),
            Statement::allow(
                [
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVolumes",
                    "ec2:DescribeIamInstanceProfileAssociations",
                    "ec2:DescribeAddresses",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeAutoScalingGroups",
                    "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetHealth",
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
            Statement::allow(["iam:PassRole"], ["arn:aws:iam::*:role/*"]).with_condition(
                serde_json::json!({"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
            ),
            Statement::allow(
                [
                    "iam:GetInstanceProfile",
                    "iam:GetRolePolicy",
                    "iam:DeleteRolePolicy",
                ],
                ["arn:aws:iam::*:instance-profile/*", "arn:aws:iam::*:role/*"],
            ),
            Statement::allow(
                [
                    "autoscaling:ExitStandby",
                    "autoscaling:AttachInstances",
                    "autoscaling:SetInstanceProtection",
                    "autoscaling:UpdateAutoScalingGroup",
                ],
                ["arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*"],
            ),
            Statement::allow(
                ["elasticloadbalancing:RegisterTargets"],
                ["arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"],
            ),
            Statement::allow(["s3:GetObject"], ["arn:aws:s3:::*/cases/*"]),
        ]
    }
}

/// Runs one change (or records its plan in a dry run).
struct Changes<'a> {
    ctx: &'a StepContext,
    log: StepLog<'a>,
    actions: Vec<String>,
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

async fn restore(
    c: &mut Changes<'_>,
    id: &InstanceId,
    rec: &InstanceStateRecord,
    now: &InstanceStateRecord,
    deny: DenyOnRelease,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StepError> {
    let mut kept_until = None;
    let ctx = c.ctx;
    let ec2 = &ctx.aws.ec2;
    let dry = ctx.is_dry_run();

    // Elastic IPs, back on the interface and private address they had.
    for eip in &rec.elastic_ips {
        let Some(eni) = &eip.network_interface_id else {
            continue;
        };
        let back = now.elastic_ips.iter().any(|e| {
            e.allocation_id == eip.allocation_id
                && e.network_interface_id.as_deref() == Some(eni.as_str())
                && e.private_ip == eip.private_ip
        });
        if back {
            continue;
        }
        let params = format!(
            "AllocationId={}, NetworkInterfaceId={eni}, PrivateIpAddress={:?}",
            eip.allocation_id, eip.private_ip
        );
        let req = ec2
            .associate_address()
            .allocation_id(&eip.allocation_id)
            .network_interface_id(eni)
            .set_private_ip_address(eip.private_ip.clone())
            .allow_reassociation(false);
        if dry {
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

    // Instance profile.
    let want_profile = rec.instance_profile.as_ref().and_then(|p| p.arn.clone());
    let have = now.instance_profile.as_ref();
    match (&want_profile, have) {
        (Some(arn), None) => {
            let params = format!("InstanceId={id}, IamInstanceProfile={arn}");
            if dry {
                c.planned("ec2:AssociateIamInstanceProfile", params, "this API has no DryRun; needs ec2:AssociateIamInstanceProfile and iam:PassRole");
            } else {
                ec2.associate_iam_instance_profile()
                    .instance_id(id.as_str())
                    .iam_instance_profile(
                        IamInstanceProfileSpecification::builder().arn(arn).build(),
                    )
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:AssociateIamInstanceProfile", e))?;
                c.done("ec2:AssociateIamInstanceProfile", params);
            }
        }
        (Some(arn), Some(cur)) if cur.arn.as_deref() != Some(arn.as_str()) => {
            let assoc = cur.association_id.clone().unwrap_or_default();
            let params = format!("AssociationId={assoc}, IamInstanceProfile={arn}");
            if dry {
                c.planned("ec2:ReplaceIamInstanceProfileAssociation", params, "this API has no DryRun; needs ec2:ReplaceIamInstanceProfileAssociation and iam:PassRole");
            } else {
                ec2.replace_iam_instance_profile_association()
                    .association_id(&assoc)
                    .iam_instance_profile(
                        IamInstanceProfileSpecification::builder().arn(arn).build(),
                    )
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:ReplaceIamInstanceProfileAssociation", e))?;
                c.done("ec2:ReplaceIamInstanceProfileAssociation", params);
            }
        }
        (None, Some(cur)) => {
            let assoc = cur.association_id.clone().unwrap_or_default();
            let params = format!("AssociationId={assoc} (no profile was recorded)");
            if dry {
                c.planned(
                    "ec2:DisassociateIamInstanceProfile",
                    params,
                    "this API has no DryRun",
                );
            } else {
                ec2.disassociate_iam_instance_profile()
                    .association_id(&assoc)
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DisassociateIamInstanceProfile", e))?;
                c.done("ec2:DisassociateIamInstanceProfile", params);
            }
        }
        _ => {}
    }

    // The inline deny on the profile's role.
    if let (Some(arn), false) = (&want_profile, deny == DenyOnRelease::Keep) {
        let name = deny_policy_name(id.as_str());
        for role in profile_roles(ctx, &c.log, arn).await? {
            let Some(doc) = role_policy(ctx, &c.log, &role, &name).await? else {
                continue;
            };
            if deny == DenyOnRelease::Auto {
                let until = crate::iam::deny_cutoff(&doc).map(|t| t + INSTANCE_CREDENTIAL_LIFETIME);
                if until.is_none_or(|u| u > chrono::Utc::now()) {
                    kept_until = until.or(kept_until);
                    continue;
                }
            }
            let params = format!("RoleName={role}, PolicyName={name}");
            if dry {
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
    }

    // Auto Scaling: back in service (or back in the group), then the
    // recorded scale-in protection.
    if let Some(asg) = &rec.auto_scaling {
        let group = &asg.group_name;
        let current = membership(ctx, &c.log, id).await?;
        let asc = &ctx.aws.autoscaling;
        match (&current, asg.lifecycle_state.as_str()) {
            (Some((_, state, _)), "InService") if state == "Standby" => {
                let params = format!("AutoScalingGroupName={group}, InstanceIds=[{id}]");
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
                }
            }
            (None, _) => {
                let params = format!("AutoScalingGroupName={group}, InstanceIds=[{id}]");
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
                }
            }
            _ => {}
        }
        if let Some(min) = asg.group_min_size {
            let now_min = crate::autoscaling::group_sizes(ctx, &c.log, group)
                .await?
                .map(|(m, _)| m);
            if now_min.is_some() && now_min != Some(min) {
                let params = format!("AutoScalingGroupName={group}, MinSize={min} (as recorded)");
                if dry {
                    c.planned(
                        "autoscaling:UpdateAutoScalingGroup",
                        params,
                        &no_dry_run("Auto Scaling", "autoscaling:UpdateAutoScalingGroup"),
                    );
                } else {
                    asc.update_auto_scaling_group()
                        .auto_scaling_group_name(group)
                        .min_size(min)
                        .send()
                        .await
                        .map_err(|e| aws_error("autoscaling:UpdateAutoScalingGroup", e))?;
                    c.done("autoscaling:UpdateAutoScalingGroup", params);
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
    }

    // Target groups.
    for r in &rec.target_groups {
        if now.target_groups.contains(r) {
            continue;
        }
        let params = format!(
            "TargetGroupArn={}, Targets=[{id}:{:?}]",
            r.target_group_arn, r.port
        );
        if dry {
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
            .targets(
                TargetDescription::builder()
                    .id(id.as_str())
                    .set_port(r.port)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_error("elasticloadbalancing:RegisterTargets", e))?;
        c.done("elasticloadbalancing:RegisterTargets", params);
    }

    // Attributes last: termination protection stays on until everything
    // else is back.
    let attr = |b: aws_sdk_ec2::operation::modify_instance_attribute::builders::ModifyInstanceAttributeFluentBuilder| b.instance_id(id.as_str());
    let mut reqs = Vec::new();
    let mismatched: Vec<_> = rec
        .volumes
        .iter()
        .filter(|v| {
            let cur = now
                .volumes
                .iter()
                .find(|n| n.volume_id == v.volume_id)
                .and_then(|n| n.delete_on_termination);
            v.delete_on_termination.is_some()
                && v.delete_on_termination != cur
                && v.device_name.is_some()
        })
        .collect();
    if !mismatched.is_empty() {
        let mut b = attr(ec2.modify_instance_attribute());
        for v in &mismatched {
            b = b.block_device_mappings(
                InstanceBlockDeviceMappingSpecification::builder()
                    .set_device_name(v.device_name.clone())
                    .ebs(
                        EbsInstanceBlockDeviceSpecification::builder()
                            .set_delete_on_termination(v.delete_on_termination)
                            .build(),
                    )
                    .build(),
            );
        }
        let what: Vec<String> = mismatched
            .iter()
            .map(|v| format!("{}={:?}", v.volume_id, v.delete_on_termination))
            .collect();
        reqs.push((b, format!("{id} DeleteOnTermination {what:?}")));
    }
    if rec.shutdown_behavior.is_some() && rec.shutdown_behavior != now.shutdown_behavior {
        let v = rec.shutdown_behavior.clone().unwrap_or_default();
        reqs.push((
            attr(ec2.modify_instance_attribute())
                .instance_initiated_shutdown_behavior(AttributeValue::builder().value(&v).build()),
            format!("{id} InstanceInitiatedShutdownBehavior={v}"),
        ));
    }
    if let Some(v) = rec
        .disable_api_stop
        .filter(|v| Some(*v) != now.disable_api_stop)
    {
        reqs.push((
            attr(ec2.modify_instance_attribute())
                .disable_api_stop(AttributeBooleanValue::builder().value(v).build()),
            format!("{id} DisableApiStop={v}"),
        ));
    }
    if let Some(v) = rec
        .disable_api_termination
        .filter(|v| Some(*v) != now.disable_api_termination)
    {
        reqs.push((
            attr(ec2.modify_instance_attribute())
                .disable_api_termination(AttributeBooleanValue::builder().value(v).build()),
            format!("{id} DisableApiTermination={v}"),
        ));
    }
    for (req, params) in reqs {
        if dry {
            c.log.dry_run(
                "ec2:ModifyInstanceAttribute",
                params,
                req.dry_run(true).send().await,
            )?;
        } else {
            req.send()
                .await
                .map_err(|e| aws_error(&format!("ec2:ModifyInstanceAttribute ({params})"), e))?;
            c.done("ec2:ModifyInstanceAttribute", params);
        }
    }
    // Interfaces last: groups (the whole set in one call) and source/dest
    // check. Everything else is back before the network opens again, so a
    // release that fails half-way leaves the instance isolated.
    for eni in &rec.network_interfaces {
        let Some(cur) = now
            .network_interfaces
            .iter()
            .find(|n| n.network_interface_id == eni.network_interface_id)
        else {
            return Err(StepError::new(
                ErrorName::ResourceNotFound,
                format!(
                    "interface {} is no longer attached to {id}",
                    eni.network_interface_id
                ),
            ));
        };
        let mut want = eni.security_group_ids.clone();
        want.sort();
        let mut have = cur.security_group_ids.clone();
        have.sort();
        if want != have {
            let params = format!(
                "NetworkInterfaceId={}, Groups={:?}",
                eni.network_interface_id, eni.security_group_ids
            );
            let req = ec2
                .modify_network_interface_attribute()
                .network_interface_id(&eni.network_interface_id)
                .set_groups(Some(eni.security_group_ids.clone()));
            if dry {
                c.log.dry_run(
                    "ec2:ModifyNetworkInterfaceAttribute",
                    params,
                    req.dry_run(true).send().await,
                )?;
            } else {
                req.send().await.map_err(|e| {
                    aws_error(
                        &format!(
                            "ec2:ModifyNetworkInterfaceAttribute {}",
                            eni.network_interface_id
                        ),
                        e,
                    )
                })?;
                c.done("ec2:ModifyNetworkInterfaceAttribute", params);
            }
        }
        if let (Some(want), Some(have)) = (eni.source_dest_check, cur.source_dest_check) {
            if want != have {
                let params = format!(
                    "NetworkInterfaceId={}, SourceDestCheck={want}",
                    eni.network_interface_id
                );
                let req = ec2
                    .modify_network_interface_attribute()
                    .network_interface_id(&eni.network_interface_id)
                    .source_dest_check(AttributeBooleanValue::builder().value(want).build());
                if dry {
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
        }
    }

    Ok(kept_until)
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
        let mut changes = Changes {
            ctx,
            log: ctx.log(Self::NAME),
            actions: Vec::new(),
        };
        let restored = restore(&mut changes, &id, rec, &now, input.credential_deny).await;
        let actions = changes.actions;
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
            dry_run: ctx.is_dry_run(),
        })
    }
}
