//! Record the instance's pre-incident state as evidence.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_ec2::types::InstanceAttributeName;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use firebreak_forensics::hash::sha256_bytes;
use firebreak_forensics::instance_state::{
    ArtifactRef, AutoScalingRecord, ElasticIpRecord, InstanceProfileRecord, InstanceStateRecord,
    NetworkInterfaceRecord, SealedRecord, TargetRegistration, VolumeRecord,
};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{describe_instance, filter, interface_ids, volumes};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::evidence::{self, keys, Lock, Put};
use crate::ids::{CaseId, InstanceId};
use crate::step::Step;

/// Reads the instance's complete state (interfaces with their groups and
/// source/dest check, Elastic IPs, instance-profile association, Auto
/// Scaling membership, target group registrations, termination and stop
/// protection, shutdown behaviour, DeleteOnTermination per volume, tags,
/// console output), seals it with a SHA-256 digest and stores it in the
/// evidence bucket.
///
/// Idempotent, and careful about it: when the case already holds a record
/// for the instance, that record (taken before containment) is verified
/// and returned; the instance is not read again, so a re-run never
/// replaces the pre-incident state with the contained one.
#[derive(Debug)]
pub struct RecordInstanceState;

/// Input of [`RecordInstanceState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordInput {
    /// The case, validated as a [`crate::ids::CaseId`]; the record is kept
    /// under `cases/CASE/instance-state/`.
    pub case_id: String,
    /// The instance to record (`i-...`), validated as a
    /// [`crate::ids::InstanceId`].
    pub instance_id: String,
    /// The evidence bucket's name (3 to 63 of `a-z 0-9 . -`), checked before
    /// anything is read.
    pub evidence_bucket: String,
    /// Retention, encryption and legal hold of the objects written (the
    /// bucket's defaults when unset).
    #[serde(default)]
    pub evidence_lock: Lock,
    /// Who acts, for the custody records.
    #[serde(default)]
    pub actor: String,
}

/// The sealed pre-incident record [`RecordInstanceState`] stored or found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordOutput {
    /// The record with the SHA-256 of its canonical JSON: the state release
    /// restores. In a dry run with no stored record, the state as read,
    /// sealed but not stored.
    pub record: SealedRecord<InstanceStateRecord>,
    /// Where the sealed record is kept (none in a dry run).
    pub location: Option<String>,
    /// SHA-256 of the stored object's bytes, as `evidence hash` gives it
    /// (the record's own seal, `record.digest`, covers its compact JSON).
    #[serde(default)]
    pub sha256: Option<String>,
    /// The custody record of the stored object (none in a dry run).
    #[serde(default)]
    pub custody_sequence: Option<u64>,
    /// True when an earlier run's record was returned.
    pub reused: bool,
}

impl StepDef for RecordInstanceState {
    const NAME: &'static str = "record_instance_state";
    const SUMMARY: &'static str =
        "Record the instance's complete pre-incident state as sealed evidence (kept, never replaced).";
    const MUTATES: bool = true;
    type Input = RecordInput;
    type Output = RecordOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::InstanceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
            ErrorName::AlreadyContained,
        ]
    }

    fn iam() -> Vec<Statement> {
        // Describe calls do not support resource-level permissions; the
        // instance attribute and console reads do.
        vec![
            Statement::allow(
                ["ec2:DescribeInstanceAttribute", "ec2:GetConsoleOutput"],
                ["arn:aws:ec2:*:*:instance/*"],
            ),
            Statement::allow(
                [
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVolumes",
                    "ec2:DescribeIamInstanceProfileAssociations",
                    "ec2:DescribeAddresses",
                    "ec2:DescribeSecurityGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    // The group's MinSize, recorded for release.
                    "autoscaling:DescribeAutoScalingGroups",
                    "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetHealth",
                    // Classic Load Balancers the instance is registered with.
                    "elasticloadbalancing:DescribeLoadBalancers",
                ],
                ["*"],
            ),
            Statement::allow(
                [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:PutObjectLegalHold",
                ],
                ["arn:aws:s3:::*/cases/*"],
            ),
            Statement::allow(
                ["s3:ListBucket", "s3:ListBucketVersions"],
                ["arn:aws:s3:::*"],
            ),
            // Signed custody (--custody-key).
            Statement::allow(["kms:Sign"], ["arn:aws:kms:*:*:key/*"]),
        ]
    }
}

/// Puts a stored artifact of the record step under custody: acquired
/// from the instance, by this actor, with the SHA-256 of the stored bytes.
#[allow(clippy::too_many_arguments)]
async fn custody_of(
    ctx: &StepContext,
    log: &StepLog<'_>,
    input: &RecordInput,
    kind: &str,
    location: &str,
    digest: &firebreak_forensics::hash::Digest,
    tool: &str,
    note: &str,
) -> Result<Option<u64>, StepError> {
    let uri: evidence::S3Uri = location.parse().map_err(StepError::invalid_input)?;
    let record = crate::evidence::custody::append(
        ctx,
        log,
        &input.evidence_bucket,
        &input.evidence_lock,
        firebreak_forensics::custody::NewRecord {
            case_id: input.case_id.clone(),
            // One evidence id per artifact of the instance, stable across
            // re-runs, so a retried step finds its own record.
            evidence_id: format!("{kind}:{}", input.instance_id),
            event: firebreak_forensics::custody::Event::Acquired,
            kind: kind.to_string(),
            source: firebreak_forensics::custody::Source {
                account_id: ctx.account_id.clone(),
                region: ctx.region.clone(),
                instance_id: Some(input.instance_id.clone()),
                volume_id: None,
            },
            location: firebreak_forensics::custody::Location::S3 {
                bucket: uri.bucket,
                key: uri.key,
                version_id: uri.version_id,
            },
            size: Some(digest.size),
            sha256: Some(digest.sha256.clone()),
            host_sha256: None,
            at: Utc::now(),
            actor: input.actor.clone(),
            tool: tool.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            note: Some(note.to_string()),
            details: None,
            signing_key: None,
        },
    )
    .await?;
    Ok((!ctx.is_dry_run()).then_some(record.sequence))
}

fn to_utc(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Reads the instance's state as it is now (without console output).
pub async fn read_live_state(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &InstanceId,
) -> Result<InstanceStateRecord, StepError> {
    let ec2 = &ctx.aws.ec2;
    let instance = describe_instance(ctx, log, id).await?;

    // Groups are read per interface: the instance-level list can be stale
    // or merged across interfaces.
    let eni_ids = interface_ids(&instance);
    let (network_interfaces, elastic_ips) = if eni_ids.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (
            read_interfaces(ctx, log, &eni_ids).await?,
            read_elastic_ips(ctx, log, &eni_ids).await?,
        )
    };
    let volume_records = read_volumes(ctx, log, &instance).await?;

    log.read(
        "ec2:DescribeIamInstanceProfileAssociations",
        format!("Filters=[instance-id={id}]"),
    );
    let assoc = ec2
        .describe_iam_instance_profile_associations()
        .filters(filter("instance-id", [id.as_str()]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeIamInstanceProfileAssociations", e))?;
    let instance_profile = assoc
        .iam_instance_profile_associations()
        .iter()
        .find(|a| {
            matches!(
                a.state().map(|s| s.as_str()),
                Some("associated") | Some("associating")
            ) && a.instance_id() == Some(id.as_str())
        })
        .map(|a| InstanceProfileRecord {
            association_id: a.association_id().map(str::to_string),
            arn: a
                .iam_instance_profile()
                .and_then(|p| p.arn())
                .map(str::to_string),
        });

    let attribute = |name: InstanceAttributeName| {
        let what = name.as_str().to_string();
        log.read("ec2:DescribeInstanceAttribute", format!("{id} {what}"));
        ec2.describe_instance_attribute()
            .instance_id(id.as_str())
            .attribute(name)
            .send()
    };
    let term = attribute(InstanceAttributeName::DisableApiTermination)
        .await
        .map_err(|e| aws_error("ec2:DescribeInstanceAttribute", e))?;
    let stop = attribute(InstanceAttributeName::DisableApiStop)
        .await
        .map_err(|e| aws_error("ec2:DescribeInstanceAttribute", e))?;
    let shutdown = attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .await
        .map_err(|e| aws_error("ec2:DescribeInstanceAttribute", e))?;

    log.read(
        "autoscaling:DescribeAutoScalingInstances",
        format!("InstanceIds=[{id}]"),
    );
    let asg = ctx
        .aws
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(id.as_str())
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:DescribeAutoScalingInstances", e))?;
    let mut auto_scaling = asg
        .auto_scaling_instances()
        .iter()
        .find(|a| a.instance_id() == Some(id.as_str()))
        .map(|a| AutoScalingRecord {
            group_name: a.auto_scaling_group_name().unwrap_or_default().to_string(),
            lifecycle_state: a.lifecycle_state().unwrap_or_default().to_string(),
            protected_from_scale_in: a.protected_from_scale_in(),
            group_min_size: None,
        });
    if let Some(a) = auto_scaling.as_mut() {
        // The minimum before firebreak lowered it (kept on the group while
        // any instance of it is contained), else the minimum.
        a.group_min_size = crate::containment::autoscaling::group_state(ctx, log, &a.group_name)
            .await?
            .map(|g| g.original_min.unwrap_or(g.min));
    }

    let target_groups = registrations(ctx, log, &instance).await?;
    let classic_load_balancers = classic_registrations(ctx, log, &instance).await?;

    let tags: BTreeMap<String, String> = instance
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect();

    Ok(InstanceStateRecord {
        instance_id: id.to_string(),
        account_id: ctx.account_id.clone(),
        region: ctx.region.clone(),
        captured_at: Utc::now(),
        state: instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        instance_type: instance.instance_type().map(|t| t.as_str().to_string()),
        image_id: instance.image_id().map(str::to_string),
        vpc_id: instance.vpc_id().map(str::to_string),
        subnet_id: instance.subnet_id().map(str::to_string),
        launch_time: to_utc(instance.launch_time()),
        network_interfaces,
        volumes: volume_records,
        instance_profile,
        disable_api_termination: term.disable_api_termination().and_then(|a| a.value()),
        disable_api_stop: stop.disable_api_stop().and_then(|a| a.value()),
        shutdown_behavior: shutdown
            .instance_initiated_shutdown_behavior()
            .and_then(|a| a.value())
            .map(str::to_string),
        elastic_ips,
        auto_scaling,
        target_groups,
        classic_load_balancers,
        tags,
        console_output: None,
    })
}

/// Each interface as it is now, read per interface (the instance-level
/// list of groups can be stale or merged across interfaces).
async fn read_interfaces(
    ctx: &StepContext,
    log: &StepLog<'_>,
    eni_ids: &[String],
) -> Result<Vec<NetworkInterfaceRecord>, StepError> {
    let ec2 = &ctx.aws.ec2;
    let mut network_interfaces = Vec::new();
    log.read(
        "ec2:DescribeNetworkInterfaces",
        format!("NetworkInterfaceIds=[{}]", eni_ids.join(", ")),
    );
    let out = ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(eni_ids.to_vec()))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?;
    for eni_id in eni_ids {
        let Some(eni) = out
            .network_interfaces()
            .iter()
            .find(|n| n.network_interface_id() == Some(eni_id.as_str()))
        else {
            continue;
        };
        network_interfaces.push(NetworkInterfaceRecord {
            network_interface_id: eni_id.clone(),
            device_index: eni.attachment().and_then(|a| a.device_index()),
            vpc_id: eni.vpc_id().map(str::to_string),
            subnet_id: eni.subnet_id().map(str::to_string),
            security_group_ids: eni
                .groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect(),
            source_dest_check: eni.source_dest_check(),
            private_ip_addresses: eni
                .private_ip_addresses()
                .iter()
                .filter_map(|p| p.private_ip_address().map(str::to_string))
                .collect(),
            ipv6_addresses: eni
                .ipv6_addresses()
                .iter()
                .filter_map(|a| a.ipv6_address().map(str::to_string))
                .collect(),
            public_ip: eni
                .association()
                .and_then(|a| a.public_ip())
                .map(str::to_string),
        });
    }
    Ok(network_interfaces)
}

/// The Elastic IPs on the interfaces.
async fn read_elastic_ips(
    ctx: &StepContext,
    log: &StepLog<'_>,
    eni_ids: &[String],
) -> Result<Vec<ElasticIpRecord>, StepError> {
    let ec2 = &ctx.aws.ec2;
    let mut elastic_ips = Vec::new();
    // Elastic IPs by interface: an address on a secondary interface is
    // not reported under the instance id.
    log.read(
        "ec2:DescribeAddresses",
        format!("Filters=[network-interface-id=[{}]]", eni_ids.join(", ")),
    );
    let addrs = ec2
        .describe_addresses()
        .filters(filter("network-interface-id", eni_ids.to_vec()))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeAddresses", e))?;
    for a in addrs.addresses() {
        if let Some(alloc) = a.allocation_id() {
            elastic_ips.push(ElasticIpRecord {
                allocation_id: alloc.to_string(),
                public_ip: a.public_ip().map(str::to_string),
                association_id: a.association_id().map(str::to_string),
                network_interface_id: a.network_interface_id().map(str::to_string),
                private_ip: a.private_ip_address().map(str::to_string),
            });
        }
    }
    elastic_ips.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
    Ok(elastic_ips)
}

/// The instance's volumes, with their DeleteOnTermination.
async fn read_volumes(
    ctx: &StepContext,
    log: &StepLog<'_>,
    instance: &aws_sdk_ec2::types::Instance,
) -> Result<Vec<VolumeRecord>, StepError> {
    let ec2 = &ctx.aws.ec2;
    let vols = volumes(instance);
    let mut volume_records = Vec::new();
    if !vols.is_empty() {
        let ids: Vec<String> = vols.iter().map(|(v, _)| v.clone()).collect();
        log.read(
            "ec2:DescribeVolumes",
            format!("VolumeIds=[{}]", ids.join(", ")),
        );
        let out = ec2
            .describe_volumes()
            .set_volume_ids(Some(ids))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeVolumes", e))?;
        for (vid, dev) in &vols {
            let v = out
                .volumes()
                .iter()
                .find(|v| v.volume_id() == Some(vid.as_str()));
            let delete_on_termination = instance
                .block_device_mappings()
                .iter()
                .find(|m| m.ebs().and_then(|e| e.volume_id()) == Some(vid.as_str()))
                .and_then(|m| m.ebs())
                .and_then(|e| e.delete_on_termination());
            volume_records.push(VolumeRecord {
                volume_id: vid.clone(),
                device_name: dev.clone(),
                delete_on_termination,
                size_gib: v.and_then(|v| v.size()),
                encrypted: v.and_then(|v| v.encrypted()),
                kms_key_id: v.and_then(|v| v.kms_key_id()).map(str::to_string),
            });
        }
    }
    Ok(volume_records)
}

/// The instance's private addresses (IPv4 and IPv6) and VPCs, from its
/// interfaces.
pub(crate) fn addresses_of(
    instance: &aws_sdk_ec2::types::Instance,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ips = BTreeSet::new();
    let mut vpcs: BTreeSet<String> = instance.vpc_id().map(str::to_string).into_iter().collect();
    for n in instance.network_interfaces() {
        vpcs.extend(n.vpc_id().map(str::to_string));
        for p in n.private_ip_addresses() {
            ips.extend(p.private_ip_address().map(str::to_string));
        }
        for a in n.ipv6_addresses() {
            ips.extend(a.ipv6_address().map(str::to_string));
        }
    }
    (ips, vpcs)
}

/// The instance's ELBv2 target group registrations: as an instance target
/// (groups of its VPC) and by its private addresses (IP target groups of
/// its VPCs). One DescribeTargetHealth per group.
pub(crate) async fn registrations(
    ctx: &StepContext,
    log: &StepLog<'_>,
    instance: &aws_sdk_ec2::types::Instance,
) -> Result<Vec<TargetRegistration>, StepError> {
    let id = instance.instance_id().unwrap_or_default();
    let (ips, vpcs) = addresses_of(instance);
    let elb = &ctx.aws.elbv2;
    log.read(
        "elasticloadbalancing:DescribeTargetGroups",
        "all target groups (paginated)",
    );
    let mut groups = Vec::new();
    let mut pages = elb.describe_target_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("elasticloadbalancing:DescribeTargetGroups", e))?;
        for tg in page.target_groups() {
            let kind = tg.target_type().map(|t| t.as_str()).unwrap_or("instance");
            let in_vpc = tg.vpc_id().is_some_and(|v| vpcs.contains(v));
            let wanted = match kind {
                "instance" => in_vpc || instance.vpc_id().is_none(),
                "ip" => in_vpc && !ips.is_empty(),
                _ => false,
            };
            if wanted {
                if let Some(arn) = tg.target_group_arn() {
                    groups.push((arn.to_string(), kind == "ip"));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (arn, by_ip) in groups {
        log.read(
            "elasticloadbalancing:DescribeTargetHealth",
            format!("TargetGroupArn={arn}"),
        );
        let health = elb
            .describe_target_health()
            .target_group_arn(&arn)
            .send()
            .await
            .map_err(|e| aws_error("elasticloadbalancing:DescribeTargetHealth", e))?;
        for d in health.target_health_descriptions() {
            let Some(t) = d.target() else { continue };
            let state = d
                .target_health()
                .and_then(|h| h.state())
                .map(|s| s.as_str());
            // A target being drained is on its way out, as after containment.
            if state == Some("draining") {
                continue;
            }
            let target = t.id().unwrap_or_default();
            let mine = if by_ip {
                ips.contains(target)
            } else {
                target == id
            };
            if mine {
                out.push(TargetRegistration {
                    target_group_arn: arn.clone(),
                    port: t.port(),
                    ip: by_ip.then(|| target.to_string()),
                    availability_zone: if by_ip {
                        t.availability_zone().map(str::to_string)
                    } else {
                        None
                    },
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The Classic Load Balancers (of the instance's VPC) it is registered
/// with, by name.
pub(crate) async fn classic_registrations(
    ctx: &StepContext,
    log: &StepLog<'_>,
    instance: &aws_sdk_ec2::types::Instance,
) -> Result<Vec<String>, StepError> {
    let id = instance.instance_id().unwrap_or_default();
    log.read(
        "elasticloadbalancing:DescribeLoadBalancers",
        "all Classic Load Balancers (paginated)",
    );
    let mut out = Vec::new();
    let mut pages = ctx
        .aws
        .elb
        .describe_load_balancers()
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| aws_error("elasticloadbalancing:DescribeLoadBalancers (Classic)", e))?;
        for lb in page.load_balancer_descriptions() {
            if lb.instances().iter().any(|i| i.instance_id() == Some(id)) {
                out.extend(lb.load_balancer_name().map(str::to_string));
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn console_output(
    ctx: &StepContext,
    log: &StepLog<'_>,
    case: &CaseId,
    id: &InstanceId,
    bucket: &str,
    lock: &Lock,
) -> Result<Option<ArtifactRef>, StepError> {
    log.read(
        "ec2:GetConsoleOutput",
        format!("InstanceId={id}, Latest=true"),
    );
    let out = ctx
        .aws
        .ec2
        .get_console_output()
        .instance_id(id.as_str())
        .latest(true)
        .send()
        .await
        .map_err(|e| aws_error("ec2:GetConsoleOutput", e))?;
    let Some(encoded) = out.output() else {
        return Ok(None);
    };
    let text = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap_or_else(|_| encoded.as_bytes().to_vec());
    let key = keys::console_output(case.as_str(), id.as_str());
    let digest = sha256_bytes(&text);
    let location =
        match evidence::put_new_locked(ctx, log, bucket, &key, text, "text/plain", lock).await? {
            Put::Created(s) => Some(s.location()),
            // Kept from an earlier run of this case: that one is the evidence.
            Put::Exists => {
                return match evidence::get_first_version(ctx, log, bucket, &key).await? {
                    Some((bytes, version)) => Ok(Some(ArtifactRef {
                        digest: sha256_bytes(&bytes),
                        location: Some(match version {
                            Some(v) => format!("s3://{bucket}/{key}?versionId={v}"),
                            None => format!("s3://{bucket}/{key}"),
                        }),
                    })),
                    None => Ok(None),
                }
            }
            Put::Planned => None,
        };
    Ok(Some(ArtifactRef { digest, location }))
}

pub(crate) fn parse_bucket(bucket: &str) -> Result<(), StepError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(StepError::invalid_input(format!(
            "{bucket:?} is not an S3 bucket name"
        )))
    }
}

/// Refuses to take a contained instance's state for its pre-incident
/// state: it is tagged with another open case, or its interfaces are on
/// firebreak's groups.
async fn refuse_contained(
    ctx: &StepContext,
    log: &StepLog<'_>,
    record: &InstanceStateRecord,
    case: &str,
) -> Result<(), StepError> {
    let open = matches!(
        record.tags.get(crate::tags::STATUS).map(String::as_str),
        Some("contained") | Some("containment-failed") | Some("release-failed")
    );
    if let (true, Some(other)) = (open, record.tags.get(crate::tags::CASE)) {
        if other != case {
            return Err(StepError::new(
                ErrorName::AlreadyContained,
                format!(
                    "{} is contained under case {other}: continue that case, or release it before opening a new one",
                    record.instance_id
                ),
            ));
        }
    }
    // Each group once: interfaces share groups, and moto answers NotFound
    // when an id repeats.
    let groups: Vec<String> = record
        .network_interfaces
        .iter()
        .flat_map(|n| n.security_group_ids.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !groups.is_empty() {
        log.read(
            "ec2:DescribeSecurityGroups",
            format!("GroupIds=[{}]", groups.join(", ")),
        );
        let out = ctx
            .aws
            .ec2
            .describe_security_groups()
            .set_group_ids(Some(groups))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeSecurityGroups", e))?;
        let tag_of = |g: &aws_sdk_ec2::types::SecurityGroup, k: &str| {
            g.tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        let ours: Vec<&aws_sdk_ec2::types::SecurityGroup> = out
            .security_groups()
            .iter()
            .filter(|g| tag_of(g, crate::tags::ROLE).is_some())
            .collect();
        if !ours.is_empty() {
            let ids: Vec<&str> = ours.iter().filter_map(|g| g.group_id()).collect();
            // A transition group belongs to one case; an isolation group
            // is shared, and carries the case that made it.
            let mut cases: Vec<String> = ours
                .iter()
                .filter(|g| tag_of(g, crate::tags::ROLE).as_deref() == Some("transition"))
                .chain(ours.iter())
                .filter_map(|g| tag_of(g, crate::tags::CASE))
                .collect();
            cases.dedup();
            let case = cases
                .first()
                .map(|c| format!(" (case {c})"))
                .unwrap_or_default();
            return Err(StepError::new(
                ErrorName::AlreadyContained,
                format!(
                    "{}'s interfaces are on firebreak's groups [{}]: it was contained before{case} and its pre-incident state is no longer there to record; continue that case (its record holds that state) or release it",
                    record.instance_id,
                    ids.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Loads and verifies a stored record.
pub async fn load_record(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
    instance: &str,
) -> Result<Option<(SealedRecord<InstanceStateRecord>, String)>, StepError> {
    Ok(load_stored(ctx, log, bucket, case, instance)
        .await?
        .map(|(r, l, _)| (r, l)))
}

/// [`load_record`], with the digest of the stored bytes.
async fn load_stored(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
    instance: &str,
) -> Result<
    Option<(
        SealedRecord<InstanceStateRecord>,
        String,
        firebreak_forensics::hash::Digest,
    )>,
    StepError,
> {
    let key = keys::instance_state(case, instance);
    // The first version, not the latest: firebreak writes a record once,
    // and Object Lock keeps that version; anything written after it is
    // someone else's, and must not decide what release restores.
    let Some((bytes, version)) = evidence::get_first_version(ctx, log, bucket, &key).await? else {
        return Ok(None);
    };
    let sealed: SealedRecord<InstanceStateRecord> =
        serde_json::from_slice(&bytes).map_err(|e| {
            StepError::verification(format!(
                "the stored record s3://{bucket}/{key} is not a sealed instance record: {e}"
            ))
        })?;
    sealed.verify().map_err(|e| {
        StepError::verification(format!(
            "the stored record s3://{bucket}/{key} was altered: {e}"
        ))
    })?;
    let location = match version {
        Some(v) => format!("s3://{bucket}/{key}?versionId={v}"),
        None => format!("s3://{bucket}/{key}"),
    };
    Ok(Some((sealed, location, sha256_bytes(&bytes))))
}

#[async_trait]
impl Step for RecordInstanceState {
    async fn run(ctx: &StepContext, input: RecordInput) -> Result<RecordOutput, StepError> {
        let (case, id) = super::InstanceRef {
            case_id: input.case_id.clone(),
            instance_id: input.instance_id.clone(),
        }
        .parse()?;
        parse_bucket(&input.evidence_bucket)?;
        let log = ctx.log(Self::NAME);
        let bucket = input.evidence_bucket.as_str();

        let stored = match load_stored(ctx, &log, bucket, case.as_str(), id.as_str()).await? {
            Some(found) => Some((found, true)),
            None => {
                let mut record = read_live_state(ctx, &log, &id).await?;
                refuse_contained(ctx, &log, &record, case.as_str()).await?;
                record.console_output =
                    console_output(ctx, &log, &case, &id, bucket, &input.evidence_lock).await?;
                let sealed = SealedRecord::seal(record).map_err(|e| {
                    StepError::with_source(ErrorName::Internal, "cannot seal the record", e)
                })?;
                let body = serde_json::to_vec_pretty(&sealed).map_err(|e| {
                    StepError::with_source(ErrorName::Internal, "cannot serialise the record", e)
                })?;
                let key = keys::instance_state(case.as_str(), id.as_str());
                match evidence::put_new_locked(
                    ctx,
                    &log,
                    bucket,
                    &key,
                    body,
                    "application/json",
                    &input.evidence_lock,
                )
                .await?
                {
                    Put::Created(stored) => {
                        Some(((sealed, stored.location(), stored.digest), false))
                    }
                    // Another run stored its record first: that one stands.
                    Put::Exists => Some((
                        load_stored(ctx, &log, bucket, case.as_str(), id.as_str())
                            .await?
                            .ok_or_else(|| {
                                StepError::new(
                                    ErrorName::AwsRequestFailed,
                                    format!("s3://{bucket}/{key} exists but cannot be read"),
                                )
                            })?,
                        true,
                    )),
                    Put::Planned => {
                        return Ok(RecordOutput {
                            record: sealed,
                            location: None,
                            sha256: None,
                            custody_sequence: None,
                            reused: false,
                        })
                    }
                }
            }
        };
        let Some(((record, location, digest), reused)) = stored else {
            return Err(StepError::new(
                ErrorName::Internal,
                "no instance record after storing one",
            ));
        };
        // Custody of what is stored (a re-run finds its records and
        // writes none twice): the console output, then the record.
        if let Some(console) = &record.record.console_output {
            if let Some(at) = &console.location {
                custody_of(
                    ctx,
                    &log,
                    &input,
                    "console-output",
                    at,
                    &console.digest,
                    "ec2:GetConsoleOutput",
                    "the instance's console output before containment",
                )
                .await?;
            }
        }
        let custody_sequence = custody_of(
            ctx,
            &log,
            &input,
            "instance-state",
            &location,
            &digest,
            "firebreak record_instance_state",
            &format!(
                "pre-incident state, sealed (SHA-256 of its compact JSON {}); release restores it",
                record.digest.sha256
            ),
        )
        .await?;
        Ok(RecordOutput {
            record,
            location: Some(location),
            sha256: Some(digest.sha256),
            custody_sequence,
            reused,
        })
    }
}
