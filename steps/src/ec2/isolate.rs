//! Isolate an instance's network interfaces.
//!
//! Changing an interface's security groups does not cut connections that
//! are already tracked. So every interface moves in two steps: first to a
//! group that allows all traffic in and out (IPv4 and IPv6), which makes
//! its flows untracked, then to a group with no rules at all, which stops
//! untracked flows at once. Both groups are made once per VPC, tagged, and
//! reused by every later isolation in that VPC.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroup, TagSpecification,
};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{describe_instance, filter, interface_ids, tag, InstanceRef};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::registry::Step;
use crate::tags;

/// Name of the no-rule group, one per VPC.
pub const ISOLATION_GROUP_NAME: &str = "firebreak-isolation";
/// Name of the allow-all group used for the first move, one per VPC.
pub const TRANSITION_GROUP_NAME: &str = "firebreak-transition";

/// What a dry run shows for a group it would create.
const PLANNED_GROUP: &str = "(planned)";

#[derive(Debug)]
pub struct IsolateNetwork;

/// The groups firebreak uses in one VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VpcIsolationGroups {
    pub vpc_id: String,
    pub isolation_group_id: String,
    pub transition_group_id: String,
    /// Groups created by this run (empty when they already existed).
    pub created_group_ids: Vec<String>,
}

/// One interface, before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IsolatedInterface {
    pub network_interface_id: String,
    pub vpc_id: String,
    pub previous_group_ids: Vec<String>,
    /// Read back after the change.
    pub group_ids: Vec<String>,
    /// False when the interface was already isolated.
    pub changed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IsolationOutput {
    pub instance_id: String,
    pub groups: Vec<VpcIsolationGroups>,
    pub interfaces: Vec<IsolatedInterface>,
    /// True when this run changed anything.
    pub changed: bool,
    pub dry_run: bool,
}

impl StepDef for IsolateNetwork {
    const NAME: &'static str = "isolate_network";
    const SUMMARY: &'static str =
        "Move every network interface to an allow-all group, then to a group with no rules; read back per interface.";
    const MUTATES: bool = true;
    type Input = InstanceRef;
    type Output = IsolationOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::InstanceNotFound,
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
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSecurityGroups",
                ],
                ["*"],
            ),
            Statement::allow(
                [
                    "ec2:CreateSecurityGroup",
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:AuthorizeSecurityGroupEgress",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupEgress",
                    "ec2:CreateTags",
                ],
                ["arn:aws:ec2:*:*:security-group/*", "arn:aws:ec2:*:*:vpc/*"],
            ),
            Statement::allow(
                ["ec2:ModifyNetworkInterfaceAttribute"],
                [
                    "arn:aws:ec2:*:*:network-interface/*",
                    "arn:aws:ec2:*:*:security-group/*",
                    "arn:aws:ec2:*:*:instance/*",
                ],
            ),
        ]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Isolation,
    Transition,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Isolation => ISOLATION_GROUP_NAME,
            Role::Transition => TRANSITION_GROUP_NAME,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Role::Isolation => "isolation",
            Role::Transition => "transition",
        }
    }
    fn description(self) -> &'static str {
        match self {
            Role::Isolation => "firebreak isolation: no traffic in or out",
            Role::Transition => {
                "firebreak transition: allows all traffic so tracked connections become untracked before isolation"
            }
        }
    }
}

/// Whether a rule list allows all traffic for IPv4 and for IPv6.
fn allows_all(perms: &[IpPermission]) -> (bool, bool) {
    let all = perms.iter().filter(|p| p.ip_protocol() == Some("-1"));
    let mut v4 = false;
    let mut v6 = false;
    for p in all {
        v4 |= p
            .ip_ranges()
            .iter()
            .any(|r| r.cidr_ip() == Some("0.0.0.0/0"));
        v6 |= p
            .ipv6_ranges()
            .iter()
            .any(|r| r.cidr_ipv6() == Some("::/0"));
    }
    (v4, v6)
}

fn all_for(v4: bool, v6: bool) -> IpPermission {
    let mut b = IpPermission::builder().ip_protocol("-1");
    if v4 {
        b = b.ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build());
    }
    if v6 {
        b = b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build());
    }
    b.build()
}

async fn find_group(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
    role: Role,
) -> Result<Option<SecurityGroup>, StepError> {
    log.read(
        "ec2:DescribeSecurityGroups",
        format!("Filters=[vpc-id={vpc}, group-name={}]", role.name()),
    );
    let out = ctx
        .aws
        .ec2
        .describe_security_groups()
        .filters(filter("vpc-id", [vpc]))
        .filters(filter("group-name", [role.name()]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeSecurityGroups", e))?;
    let Some(g) = out.security_groups().first().cloned() else {
        return Ok(None);
    };
    let ours = g
        .tags()
        .iter()
        .any(|t| t.key() == Some(tags::ROLE) && t.value() == Some(role.tag()));
    if !ours {
        return Err(StepError::new(
            ErrorName::Unsupported,
            format!(
                "a security group named {} already exists in {vpc} ({}) but was not made by firebreak (no {}={} tag); rename it or tag it",
                role.name(),
                g.group_id().unwrap_or_default(),
                tags::ROLE,
                role.tag()
            ),
        ));
    }
    Ok(Some(g))
}

async fn read_group(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &str,
) -> Result<SecurityGroup, StepError> {
    log.read("ec2:DescribeSecurityGroups", format!("GroupIds=[{id}]"));
    let out = ctx
        .aws
        .ec2
        .describe_security_groups()
        .group_ids(id)
        .send()
        .await
        .map_err(|e| aws_error(&format!("ec2:DescribeSecurityGroups {id}"), e))?;
    out.security_groups().first().cloned().ok_or_else(|| {
        StepError::new(
            ErrorName::ResourceNotFound,
            format!("security group {id} vanished"),
        )
    })
}

/// Finds or makes the group for `role` in `vpc` and brings its rules to
/// the wanted state (no rules; or allow-all both ways), reading back to
/// verify. Returns the group id and whether it was created.
async fn ensure_group(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
    case: &str,
    role: Role,
) -> Result<(String, bool), StepError> {
    let ec2 = &ctx.aws.ec2;
    let existing = find_group(ctx, log, vpc, role).await?;
    let (group, created) = match existing {
        Some(g) => (g, false),
        None => {
            let params = format!(
                "GroupName={}, VpcId={vpc}, Tags=[{}={}]",
                role.name(),
                tags::ROLE,
                role.tag()
            );
            let req = ec2
                .create_security_group()
                .group_name(role.name())
                .description(role.description())
                .vpc_id(vpc)
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::SecurityGroup)
                        .tags(tag(tags::ROLE, role.tag()))
                        .tags(tag("Name", role.name()))
                        .tags(tag(tags::CASE, case))
                        .build(),
                );
            if ctx.is_dry_run() {
                log.dry_run(
                    "ec2:CreateSecurityGroup",
                    params,
                    req.dry_run(true).send().await,
                )?;
                let why = "the group does not exist yet: the CreateSecurityGroup above makes it";
                match role {
                    Role::Isolation => log.not_checked(
                        "ec2:RevokeSecurityGroupEgress",
                        format!("new {} group: revoke the default egress rule", role.name()),
                        why,
                    ),
                    Role::Transition => {
                        log.not_checked(
                            "ec2:AuthorizeSecurityGroupIngress",
                            format!(
                                "new {} group: all traffic from 0.0.0.0/0 and ::/0",
                                role.name()
                            ),
                            why,
                        );
                        log.not_checked(
                            "ec2:AuthorizeSecurityGroupEgress",
                            format!("new {} group: all traffic to ::/0", role.name()),
                            why,
                        );
                    }
                }
                return Ok((format!("{PLANNED_GROUP} {} in {vpc}", role.name()), true));
            }
            let out = req.send().await.map_err(|e| {
                aws_error(
                    &format!("ec2:CreateSecurityGroup {} in {vpc}", role.name()),
                    e,
                )
            })?;
            log.done("ec2:CreateSecurityGroup", params);
            let id = out.group_id().unwrap_or_default().to_string();
            (read_group(ctx, log, &id).await?, true)
        }
    };
    let id = group.group_id().unwrap_or_default().to_string();

    match role {
        Role::Isolation => {
            // Remove whatever rules the group has (a new group comes with
            // an allow-all IPv4 egress rule; someone may have added more).
            if !group.ip_permissions().is_empty() {
                let req = ec2
                    .revoke_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(group.ip_permissions().to_vec()));
                let params = format!(
                    "GroupId={id}, all {} ingress rules",
                    group.ip_permissions().len()
                );
                if ctx.is_dry_run() {
                    log.dry_run(
                        "ec2:RevokeSecurityGroupIngress",
                        params,
                        req.dry_run(true).send().await,
                    )?;
                } else {
                    req.send().await.map_err(|e| {
                        aws_error(&format!("ec2:RevokeSecurityGroupIngress {id}"), e)
                    })?;
                    log.done("ec2:RevokeSecurityGroupIngress", params);
                }
            }
            if !group.ip_permissions_egress().is_empty() {
                let req = ec2
                    .revoke_security_group_egress()
                    .group_id(&id)
                    .set_ip_permissions(Some(group.ip_permissions_egress().to_vec()));
                let params = format!(
                    "GroupId={id}, all {} egress rules (IPv4 and IPv6)",
                    group.ip_permissions_egress().len()
                );
                if ctx.is_dry_run() {
                    log.dry_run(
                        "ec2:RevokeSecurityGroupEgress",
                        params,
                        req.dry_run(true).send().await,
                    )?;
                } else {
                    req.send().await.map_err(|e| {
                        aws_error(&format!("ec2:RevokeSecurityGroupEgress {id}"), e)
                    })?;
                    log.done("ec2:RevokeSecurityGroupEgress", params);
                }
            }
        }
        Role::Transition => {
            let (in4, in6) = allows_all(group.ip_permissions());
            if !(in4 && in6) {
                let req = ec2
                    .authorize_security_group_ingress()
                    .group_id(&id)
                    .ip_permissions(all_for(!in4, !in6));
                let params = format!("GroupId={id}, all traffic from 0.0.0.0/0 and ::/0");
                if ctx.is_dry_run() {
                    log.dry_run(
                        "ec2:AuthorizeSecurityGroupIngress",
                        params,
                        req.dry_run(true).send().await,
                    )?;
                } else {
                    req.send().await.map_err(|e| {
                        aws_error(&format!("ec2:AuthorizeSecurityGroupIngress {id}"), e)
                    })?;
                    log.done("ec2:AuthorizeSecurityGroupIngress", params);
                }
            }
            let (out4, out6) = allows_all(group.ip_permissions_egress());
            if !(out4 && out6) {
                let req = ec2
                    .authorize_security_group_egress()
                    .group_id(&id)
                    .ip_permissions(all_for(!out4, !out6));
                let params = format!("GroupId={id}, all traffic to 0.0.0.0/0 and ::/0");
                if ctx.is_dry_run() {
                    log.dry_run(
                        "ec2:AuthorizeSecurityGroupEgress",
                        params,
                        req.dry_run(true).send().await,
                    )?;
                } else {
                    req.send().await.map_err(|e| {
                        aws_error(&format!("ec2:AuthorizeSecurityGroupEgress {id}"), e)
                    })?;
                    log.done("ec2:AuthorizeSecurityGroupEgress", params);
                }
            }
        }
    }

    if !ctx.is_dry_run() {
        // Read back: the group must be exactly what isolation relies on.
        let g = read_group(ctx, log, &id).await?;
        match role {
            Role::Isolation => {
                if !g.ip_permissions().is_empty() || !g.ip_permissions_egress().is_empty() {
                    return Err(StepError::verification(format!(
                        "isolation group {id} still has {} ingress and {} egress rules after revoking them",
                        g.ip_permissions().len(),
                        g.ip_permissions_egress().len()
                    )));
                }
            }
            Role::Transition => {
                let i = allows_all(g.ip_permissions());
                let e = allows_all(g.ip_permissions_egress());
                if i != (true, true) || e != (true, true) {
                    return Err(StepError::verification(format!(
                        "transition group {id} does not allow all traffic both ways (ingress v4/v6 {i:?}, egress v4/v6 {e:?})"
                    )));
                }
            }
        }
    }
    Ok((id, created))
}

/// Sets an interface's groups (the whole set, in one call).
async fn set_groups(
    ctx: &StepContext,
    log: &StepLog<'_>,
    eni: &str,
    groups: Vec<String>,
    why: &str,
) -> Result<(), StepError> {
    let params = format!("NetworkInterfaceId={eni}, Groups={groups:?} ({why})");
    let req = ctx
        .aws
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(eni)
        .set_groups(Some(groups));
    req.send()
        .await
        .map_err(|e| aws_error(&format!("ec2:ModifyNetworkInterfaceAttribute {eni}"), e))?;
    log.done("ec2:ModifyNetworkInterfaceAttribute", params);
    Ok(())
}

/// The groups of each interface, read per interface.
async fn read_interfaces(
    ctx: &StepContext,
    log: &StepLog<'_>,
    ids: &[String],
) -> Result<BTreeMap<String, (String, Vec<String>)>, StepError> {
    log.read(
        "ec2:DescribeNetworkInterfaces",
        format!("NetworkInterfaceIds={ids:?}"),
    );
    let out = ctx
        .aws
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?;
    Ok(out
        .network_interfaces()
        .iter()
        .filter_map(|n| {
            Some((
                n.network_interface_id()?.to_string(),
                (
                    n.vpc_id().unwrap_or_default().to_string(),
                    n.groups()
                        .iter()
                        .filter_map(|g| g.group_id().map(str::to_string))
                        .collect(),
                ),
            ))
        })
        .collect())
}

#[async_trait]
impl Step for IsolateNetwork {
    async fn run(ctx: &StepContext, input: InstanceRef) -> Result<IsolationOutput, StepError> {
        let (case, id) = input.parse()?;
        let log = ctx.log(Self::NAME);
        let instance = describe_instance(ctx, &log, &id).await?;
        let eni_ids = interface_ids(&instance);
        if eni_ids.is_empty() {
            return Err(StepError::new(
                ErrorName::Unsupported,
                format!("instance {id} has no network interface in a VPC"),
            ));
        }
        let before = read_interfaces(ctx, &log, &eni_ids).await?;

        // One pair of groups per VPC the interfaces are in.
        let mut vpcs: Vec<String> = before.values().map(|(v, _)| v.clone()).collect();
        vpcs.sort();
        vpcs.dedup();
        let mut groups = Vec::new();
        for vpc in &vpcs {
            if vpc.is_empty() {
                return Err(StepError::new(
                    ErrorName::Unsupported,
                    format!("an interface of {id} is not in a VPC"),
                ));
            }
            let (iso, iso_new) =
                ensure_group(ctx, &log, vpc, case.as_str(), Role::Isolation).await?;
            let (tr, tr_new) =
                ensure_group(ctx, &log, vpc, case.as_str(), Role::Transition).await?;
            let mut created = Vec::new();
            if iso_new {
                created.push(iso.clone());
            }
            if tr_new {
                created.push(tr.clone());
            }
            groups.push(VpcIsolationGroups {
                vpc_id: vpc.clone(),
                isolation_group_id: iso,
                transition_group_id: tr,
                created_group_ids: created,
            });
        }

        let mut changed_any = groups.iter().any(|g| !g.created_group_ids.is_empty());
        let mut interfaces = Vec::new();
        for eni in &eni_ids {
            let Some((vpc, previous)) = before.get(eni).cloned() else {
                return Err(StepError::new(
                    ErrorName::ResourceNotFound,
                    format!("network interface {eni} of {id} was not returned by DescribeNetworkInterfaces"),
                ));
            };
            let Some(g) = groups.iter().find(|g| g.vpc_id == vpc) else {
                continue;
            };
            if previous == [g.isolation_group_id.clone()] {
                interfaces.push(IsolatedInterface {
                    network_interface_id: eni.clone(),
                    vpc_id: vpc,
                    previous_group_ids: previous.clone(),
                    group_ids: previous,
                    changed: false,
                });
                continue;
            }
            if ctx.is_dry_run() {
                // The planned groups may not exist yet; the interface's
                // current groups check the same permission on it.
                let planned = g.transition_group_id.starts_with(PLANNED_GROUP);
                for (target, why) in [
                    (
                        &g.transition_group_id,
                        "first move: allow-all, connections become untracked",
                    ),
                    (
                        &g.isolation_group_id,
                        "second move: no rules, traffic stops",
                    ),
                ] {
                    let probe = if planned {
                        previous.clone()
                    } else {
                        vec![target.clone()]
                    };
                    let params = if planned {
                        format!("NetworkInterfaceId={eni}, Groups=[{target}] ({why}; checked with the interface's current groups {previous:?})")
                    } else {
                        format!("NetworkInterfaceId={eni}, Groups=[{target}] ({why})")
                    };
                    let result = ctx
                        .aws
                        .ec2
                        .modify_network_interface_attribute()
                        .network_interface_id(eni)
                        .set_groups(Some(probe))
                        .dry_run(true)
                        .send()
                        .await;
                    log.dry_run("ec2:ModifyNetworkInterfaceAttribute", params, result)?;
                }
                interfaces.push(IsolatedInterface {
                    network_interface_id: eni.clone(),
                    vpc_id: vpc,
                    previous_group_ids: previous.clone(),
                    group_ids: previous,
                    changed: false,
                });
                continue;
            }
            set_groups(
                ctx,
                &log,
                eni,
                vec![g.transition_group_id.clone()],
                "first move: allow-all, connections become untracked",
            )
            .await?;
            set_groups(
                ctx,
                &log,
                eni,
                vec![g.isolation_group_id.clone()],
                "second move: no rules, traffic stops",
            )
            .await?;
            changed_any = true;
            interfaces.push(IsolatedInterface {
                network_interface_id: eni.clone(),
                vpc_id: vpc,
                previous_group_ids: previous,
                group_ids: Vec::new(),
                changed: true,
            });
        }

        if !ctx.is_dry_run() {
            // Read back per interface: each must carry exactly the
            // isolation group of its VPC.
            let after = read_interfaces(ctx, &log, &eni_ids).await?;
            let mut wrong = Vec::new();
            for i in &mut interfaces {
                let now = after
                    .get(&i.network_interface_id)
                    .map(|(_, g)| g.clone())
                    .unwrap_or_default();
                let want = groups
                    .iter()
                    .find(|g| g.vpc_id == i.vpc_id)
                    .map(|g| vec![g.isolation_group_id.clone()])
                    .unwrap_or_default();
                if now != want {
                    wrong.push(format!(
                        "{} has {now:?}, expected {want:?}",
                        i.network_interface_id
                    ));
                }
                i.group_ids = now;
            }
            if !wrong.is_empty() {
                return Err(StepError::verification(format!(
                    "after isolation: {}",
                    wrong.join("; ")
                )));
            }
        }
        Ok(IsolationOutput {
            instance_id: id.to_string(),
            groups,
            interfaces,
            changed: changed_any,
            dry_run: ctx.is_dry_run(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_all_detection() {
        assert_eq!(allows_all(&[all_for(true, true)]), (true, true));
        assert_eq!(allows_all(&[all_for(true, false)]), (true, false));
        let tcp = IpPermission::builder()
            .ip_protocol("tcp")
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        assert_eq!(allows_all(&[tcp]), (false, false));
    }
}
