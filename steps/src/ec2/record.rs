//! Record the instance's pre-incident state as evidence.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::InstanceAttributeName;
use chrono::{DateTime, Utc};
use firebreak_forensics::instance_state::{
    InstanceProfileRecord, InstanceStateRecord, NetworkInterfaceRecord, SealedRecord, VolumeRecord,
};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;

use super::{describe_instance, filter, interface_ids, volumes, InstanceRef};
use crate::context::StepContext;
use crate::error::{aws_error, StepError};
use crate::registry::Step;

/// Reads the instance's network interfaces and their groups, volumes,
/// instance-profile association, termination and shutdown attributes and
/// tags, and seals them with a SHA-256 digest. Only reads: safe to run any
/// number of times, in a dry run too.
#[derive(Debug)]
pub struct RecordInstanceState;

impl StepDef for RecordInstanceState {
    const NAME: &'static str = "record_instance_state";
    const SUMMARY: &'static str =
        "Record the instance's network interfaces, groups, volumes, profile, attributes and tags as evidence.";
    const MUTATES: bool = false;
    type Input = InstanceRef;
    type Output = SealedRecord<InstanceStateRecord>;

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
        // Describe calls do not support resource-level permissions.
        vec![Statement::allow(
            [
                "ec2:DescribeInstances",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeVolumes",
                "ec2:DescribeIamInstanceProfileAssociations",
                "ec2:DescribeInstanceAttribute",
            ],
            ["*"],
        )]
    }
}

fn to_utc(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[async_trait]
impl Step for RecordInstanceState {
    async fn run(ctx: &StepContext, input: InstanceRef) -> Result<Self::Output, StepError> {
        let (_, id) = input.parse()?;
        let log = ctx.log(Self::NAME);
        let ec2 = &ctx.aws.ec2;
        let instance = describe_instance(ctx, &log, &id).await?;

        // Groups are read per interface: the instance-level list can be
        // stale or merged across interfaces.
        let eni_ids = interface_ids(&instance);
        let mut network_interfaces = Vec::new();
        if !eni_ids.is_empty() {
            log.read(
                "ec2:DescribeNetworkInterfaces",
                format!("NetworkInterfaceIds={eni_ids:?}"),
            );
            let out = ec2
                .describe_network_interfaces()
                .set_network_interface_ids(Some(eni_ids.clone()))
                .send()
                .await
                .map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?;
            for eni_id in &eni_ids {
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
        }

        let vols = volumes(&instance);
        let mut volume_records = Vec::new();
        if !vols.is_empty() {
            let ids: Vec<String> = vols.iter().map(|(v, _)| v.clone()).collect();
            log.read("ec2:DescribeVolumes", format!("VolumeIds={ids:?}"));
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

        log.read(
            "ec2:DescribeIamInstanceProfileAssociations",
            format!("Filters=[instance-id={id}, state=associated]"),
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
                a.state().map(|s| s.as_str()) == Some("associated")
                    && a.instance_id() == Some(id.as_str())
            })
            .map(|a| InstanceProfileRecord {
                association_id: a.association_id().map(str::to_string),
                arn: a
                    .iam_instance_profile()
                    .and_then(|p| p.arn())
                    .map(str::to_string),
            })
            .or_else(|| {
                instance
                    .iam_instance_profile()
                    .map(|p| InstanceProfileRecord {
                        association_id: None,
                        arn: p.arn().map(str::to_string),
                    })
            });

        log.read(
            "ec2:DescribeInstanceAttribute",
            format!("{id} disableApiTermination"),
        );
        let term = ec2
            .describe_instance_attribute()
            .instance_id(id.as_str())
            .attribute(InstanceAttributeName::DisableApiTermination)
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeInstanceAttribute", e))?;
        log.read(
            "ec2:DescribeInstanceAttribute",
            format!("{id} instanceInitiatedShutdownBehavior"),
        );
        let shutdown = ec2
            .describe_instance_attribute()
            .instance_id(id.as_str())
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeInstanceAttribute", e))?;

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

        let record = InstanceStateRecord {
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
            shutdown_behavior: shutdown
                .instance_initiated_shutdown_behavior()
                .and_then(|a| a.value())
                .map(str::to_string),
            tags,
        };
        SealedRecord::seal(record).map_err(|e| {
            StepError::new(ErrorName::Internal, format!("cannot seal the record: {e}"))
        })
    }
}
