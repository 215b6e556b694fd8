//! Rehearsal checks: after `ec2-contain`, is every lever in its contained
//! state (read back from AWS, not from the steps' own reports)? After
//! `ec2-release`, is the instance as it was?

use chrono::Utc;
use firebreak_forensics::instance_state::{restorable_differences, InstanceStateRecord};
use serde::Serialize;

use crate::containment::ec2::{filter, load_record, read_live_state};
use crate::containment::iam::{policies, profile_roles};
use crate::context::StepContext;
use crate::error::{aws_error, StepError};
use crate::ids::InstanceId;
use crate::sandbox::decoy::{Decoy, DecoySpec};

/// One check of a rehearsal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, as a sentence shown to the operator ("the
    /// instance profile is no longer associated").
    pub name: String,
    /// Whether AWS, read back, shows the lever in the expected state.
    pub passed: bool,
    /// What was read, in plain words (see [`plain`]), to show why it passed or
    /// failed.
    pub detail: String,
}

fn check(name: &str, passed: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_string(),
        passed,
        detail: detail.into(),
    }
}

/// A decoy spec shaped like a real instance (read only).
pub async fn spec_like(ctx: &StepContext, id: &InstanceId) -> Result<DecoySpec, StepError> {
    let log = ctx.log("rehearse");
    let r = read_live_state(ctx, &log, id).await?;
    Ok(DecoySpec {
        name: format!("firebreak-decoy-like-{id}"),
        interfaces: r.network_interfaces.len().clamp(1, 2) as u8,
        volume_gib: {
            let v: Vec<i32> = r.volumes.iter().map(|v| v.size_gib.unwrap_or(8)).collect();
            if v.is_empty() {
                vec![8]
            } else {
                v
            }
        },
        ipv6: r
            .network_interfaces
            .iter()
            .any(|n| !n.ipv6_addresses.is_empty()),
        instance_profile: r.instance_profile.is_some(),
        open_ports: vec![22, 80],
        image_id: r.image_id.clone(),
        elastic_ip: !r.elastic_ips.is_empty(),
        auto_scaling: r.auto_scaling.is_some(),
        target_group: !r.target_groups.is_empty(),
        classic_load_balancer: !r.classic_load_balancers.is_empty(),
        second_instance: r.instance_profile.is_some(),
    })
}

async fn groups_of(
    ctx: &StepContext,
    enis: &[String],
) -> Result<Vec<(String, Vec<String>)>, StepError> {
    let out = ctx
        .aws
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(enis.to_vec()))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?;
    Ok(out
        .network_interfaces()
        .iter()
        .map(|n| {
            (
                n.network_interface_id().unwrap_or_default().to_string(),
                n.groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
            )
        })
        .collect())
}

/// Checks every containment lever on the decoy, reading AWS directly.
pub async fn contained(
    ctx: &StepContext,
    decoy: &Decoy,
    case: &str,
    bucket: &str,
    contained_at: chrono::DateTime<Utc>,
) -> Result<Vec<Check>, StepError> {
    let log = ctx.log("rehearse");
    let ec2 = &ctx.aws.ec2;
    let id: InstanceId = decoy
        .instance_id
        .parse()
        .map_err(|e: crate::ids::IdError| StepError::invalid_input(e.to_string()))?;
    let now = read_live_state(ctx, &log, &id).await?;
    let mut out = Vec::new();

    let enis = groups_of(ctx, &decoy.network_interface_ids).await?;
    let mut iso_groups: Vec<String> = enis.iter().flat_map(|(_, g)| g.clone()).collect();
    iso_groups.sort();
    iso_groups.dedup();
    let one_group = enis.iter().all(|(_, g)| g.len() == 1) && iso_groups.len() == 1;
    out.push(check(
        "every interface carries only the isolation group (read per interface)",
        one_group && enis.len() == decoy.network_interface_ids.len(),
        plain(&enis),
    ));
    if let Some(g) = iso_groups.first() {
        let d = ec2
            .describe_security_groups()
            .group_ids(g)
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeSecurityGroups", e))?;
        let sg = d.security_groups().first();
        let ingress = sg.map(|s| s.ip_permissions().len()).unwrap_or(usize::MAX);
        let egress = sg
            .map(|s| s.ip_permissions_egress().len())
            .unwrap_or(usize::MAX);
        out.push(check(
            "the isolation group has no ingress and no egress rule (IPv4 and IPv6)",
            ingress == 0 && egress == 0,
            format!("{g}: {ingress} ingress, {egress} egress permissions"),
        ));
    }
    if let Some(alloc) = &decoy.allocation_id {
        let a = ec2
            .describe_addresses()
            .allocation_ids(alloc)
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeAddresses", e))?;
        let assoc = a
            .addresses()
            .first()
            .and_then(|x| x.association_id())
            .map(str::to_string);
        out.push(check(
            "the Elastic IP is disassociated (allocation kept)",
            assoc.is_none() && !a.addresses().is_empty(),
            format!("{alloc}: association {}", plain(&assoc)),
        ));
    }
    out.push(check(
        "the instance profile is no longer associated",
        now.instance_profile.is_none(),
        plain(&now.instance_profile),
    ));
    out.extend(credential_checks(ctx, &log, decoy, contained_at).await?);
    if decoy.auto_scaling_group.is_some() {
        let asg = now.auto_scaling.as_ref();
        out.push(check(
            "out of service in its Auto Scaling group (Standby, scale-in protected)",
            asg.is_some_and(|a| {
                a.lifecycle_state == "Standby" && a.protected_from_scale_in == Some(true)
            }),
            plain(&asg),
        ));
    }
    if decoy.target_group_arn.is_some() {
        out.push(check(
            "deregistered from its target group",
            now.target_groups.is_empty(),
            plain(&now.target_groups),
        ));
    }
    out.push(check(
        "termination protection on, shutdown behaviour stop",
        now.disable_api_termination == Some(true)
            && now.shutdown_behavior.as_deref() == Some("stop"),
        format!(
            "termination protection {} / shutdown behaviour {}",
            plain(&now.disable_api_termination),
            plain(&now.shutdown_behavior)
        ),
    ));
    out.push(check(
        "every volume is kept on termination",
        now.volumes
            .iter()
            .all(|v| v.delete_on_termination == Some(false)),
        plain(
            &now.volumes
                .iter()
                .map(|v| (&v.volume_id, v.delete_on_termination))
                .collect::<Vec<_>>(),
        ),
    ));
    out.push(check(
        "tagged with the case, status contained",
        now.tags.get(crate::tags::CASE).map(String::as_str) == Some(case)
            && now.tags.get(crate::tags::STATUS).map(String::as_str) == Some("contained"),
        plain(&now.tags),
    ));
    out.extend(evidence_checks(ctx, &log, decoy, case, bucket).await?);
    Ok(out)
}

/// The role's deny names the instance with a cut-off at containment, and
/// the second instance sharing the role keeps its profile.
async fn credential_checks(
    ctx: &StepContext,
    log: &crate::context::StepLog<'_>,
    decoy: &Decoy,
    contained_at: chrono::DateTime<Utc>,
) -> Result<Vec<Check>, StepError> {
    let ec2 = &ctx.aws.ec2;
    let mut out = Vec::new();
    if let Some(role) = &decoy.role_name {
        let r = policies::read_role(ctx, log, role).await?;
        let cutoff = r.cutoff_of(&decoy.instance_id);
        // Padded and rounded up: a few minutes after containment, never
        // before it.
        let cutoff_ok = cutoff.as_ref().is_some_and(|(_, t)| {
            *t >= contained_at - chrono::Duration::seconds(1)
                && *t
                    <= Utc::now()
                        + crate::containment::iam::denies::CUTOFF_PAD
                        + chrono::Duration::seconds(
                            crate::containment::iam::denies::CUTOFF_QUANTUM_SECONDS,
                        )
        });
        let chars: Vec<usize> = r.policies.iter().map(|p| p.chars).collect();
        out.push(check(
            "the role's deny names this instance with a cut-off at containment, within IAM's quotas",
            cutoff_ok && chars.iter().all(|c| *c <= crate::containment::iam::denies::MANAGED_POLICY_MAX_CHARS),
            format!("{role}: cut-off {}, policy sizes {}", plain(&cutoff), plain(&chars)),
        ));
    }
    if let Some(second) = &decoy.second_instance_id {
        let a = ec2
            .describe_iam_instance_profile_associations()
            .filters(filter("instance-id", [second.as_str()]))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeIamInstanceProfileAssociations", e))?;
        let kept = a.iam_instance_profile_associations().iter().any(|x| {
            matches!(
                x.state().map(|s| s.as_str()),
                Some("associated") | Some("associating")
            )
        });
        out.push(check(
            "the second instance sharing the role keeps its profile",
            kept,
            second.to_string(),
        ));
    }
    Ok(out)
}

/// Every volume has a completed snapshot of the case, and the case's
/// record is stored and verifies.
async fn evidence_checks(
    ctx: &StepContext,
    log: &crate::context::StepLog<'_>,
    decoy: &Decoy,
    case: &str,
    bucket: &str,
) -> Result<Vec<Check>, StepError> {
    let ec2 = &ctx.aws.ec2;
    let mut out = Vec::new();
    let snaps = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(filter(&format!("tag:{}", crate::tags::CASE), [case]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeSnapshots", e))?;
    let snapped: Vec<(String, String)> = snaps
        .snapshots()
        .iter()
        .map(|s| {
            (
                s.volume_id().unwrap_or_default().to_string(),
                s.state()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let all = decoy
        .volume_ids
        .iter()
        .all(|v| snapped.iter().any(|(sv, st)| sv == v && st == "completed"));
    out.push(check(
        "every volume has a completed snapshot tagged with the case",
        all && snapped.len() == decoy.volume_ids.len(),
        plain(&snapped),
    ));
    let record = load_record(ctx, log, bucket, case, &decoy.instance_id).await;
    out.push(check(
        "the pre-incident record is stored and its SHA-256 verifies",
        matches!(record, Ok(Some(_))),
        match &record {
            Ok(Some((_, loc))) => loc.clone(),
            Ok(None) => "no record".into(),
            Err(e) => e.to_string(),
        },
    ));
    Ok(out)
}

/// Checks that the instance is as recorded before containment.
pub async fn released(
    ctx: &StepContext,
    decoy: &Decoy,
    before: &InstanceStateRecord,
    keep_deny: bool,
) -> Result<Vec<Check>, StepError> {
    let log = ctx.log("rehearse");
    let id: InstanceId = decoy
        .instance_id
        .parse()
        .map_err(|e: crate::ids::IdError| StepError::invalid_input(e.to_string()))?;
    let after = read_live_state(ctx, &log, &id).await?;
    let diff = restorable_differences(before, &after);
    let mut out = vec![check(
        "the state after release equals the state before containment (case tags aside)",
        diff.is_empty(),
        if diff.is_empty() {
            "no difference".to_string()
        } else {
            diff.join("; ")
        },
    )];
    if let (Some(arn), false) = (
        before.instance_profile.as_ref().and_then(|p| p.arn.clone()),
        keep_deny,
    ) {
        let mut left = Vec::new();
        for role in profile_roles(ctx, &log, &arn).await? {
            let r = policies::read_role(ctx, &log, &role).await?;
            if r.cutoff_of(&decoy.instance_id).is_some()
                || r.outside_vpc(&decoy.instance_id).is_some()
            {
                left.push(role);
            }
        }
        out.push(check(
            "the deny is removed from the role",
            left.is_empty(),
            format!("still on {}", plain(&left)),
        ));
    }
    out.push(check(
        "tagged released",
        after.tags.get(crate::tags::STATUS).map(String::as_str) == Some("released"),
        plain(&after.tags.get(crate::tags::STATUS)),
    ));
    Ok(out)
}

/// A value as a person reads it, without Rust's Debug syntax: strings
/// bare, `none` for nothing, a list's items separated by `; `, a pair
/// `first: second`, an object `key=value`.
pub fn plain(v: &impl serde::Serialize) -> String {
    fn render(v: &serde_json::Value, depth: usize) -> String {
        use serde_json::Value;
        match v {
            Value::Null => "none".into(),
            Value::String(s) => s.clone(),
            Value::Array(a) if a.is_empty() => "none".into(),
            Value::Array(a) if depth > 0 && a.len() == 2 && a[0].is_string() => {
                format!("{}: {}", render(&a[0], depth + 1), render(&a[1], depth + 1))
            }
            Value::Array(a) => a
                .iter()
                .map(|x| render(x, depth + 1))
                .collect::<Vec<_>>()
                .join(if depth == 0 { "; " } else { ", " }),
            Value::Object(o) => o
                .iter()
                .map(|(k, x)| format!("{k}={}", render(x, depth + 1)))
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        }
    }
    serde_json::to_value(v)
        .map(|v| render(&v, 0))
        .unwrap_or_else(|e| format!("(cannot show: {e})"))
}
