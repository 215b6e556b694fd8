//! EC2 steps: record the instance's state, isolate its network, snapshot
//! its volumes, tag it.

mod copy;
mod eip;
mod hash_snapshot;
mod isolate;
pub mod nacl;
mod protect;
mod record;
mod release;
mod snapshot;
mod tag;

pub use copy::{CopyInput, CopyOutput, CopySnapshots, ForensicCopy, SnapshotCopy};
pub use eip::{DisassociateElasticIps, ElasticIpsOutput};
pub use hash_snapshot::{
    hash_snapshot, HashSnapshots, HashSnapshotsInput, ReadHashesInput, ReadSnapshotHashes,
    SnapshotDigest, SnapshotHashes, BLOCKS_IN_FLIGHT,
};
pub use isolate::{
    DnsLogging, Exemption, IsolateInput, IsolateNetwork, IsolatedInterface, IsolationOutput,
    VpcIsolationGroups,
};
pub use nacl::{AclEntry, CutNetworkAcls, NaclCutInput, NaclCutOutput};
pub use protect::{KeptVolume, ProtectInstance, ProtectOutput};
pub(crate) use record::{classic_registrations, parse_bucket, registrations};
pub use record::{load_record, read_live_state, RecordInput, RecordInstanceState, RecordOutput};
pub use release::{
    DenyOnRelease, ReleaseInput, ReleaseInstance, ReleaseOutput, INSTANCE_CREDENTIAL_LIFETIME,
};
pub use snapshot::{
    AwaitSnapshots, SnapshotIds, SnapshotProgress, SnapshotRef, SnapshotSet, SnapshotVolumes,
};
pub use tag::{case_tag, open_case, CaseStatus, CaseTag, TagInstance, TagInstanceInput, TagOutput};

use aws_sdk_ec2::types::{Filter, Instance, Tag};
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::ids::{CaseId, InstanceId};

/// The input of steps that act on one instance for one case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceRef {
    /// The case, validated as a [`crate::ids::CaseId`] by [`InstanceRef::parse`].
    pub case_id: String,
    /// The instance (`i-...`), validated as a [`crate::ids::InstanceId`] by
    /// [`InstanceRef::parse`].
    pub instance_id: String,
}

impl InstanceRef {
    /// Validates both ids.
    pub fn parse(&self) -> Result<(CaseId, InstanceId), StepError> {
        let case = self
            .case_id
            .parse::<CaseId>()
            .map_err(|e| StepError::invalid_input(e.to_string()))?;
        let instance = self
            .instance_id
            .parse::<InstanceId>()
            .map_err(|e| StepError::invalid_input(e.to_string()))?;
        Ok((case, instance))
    }
}

/// An EC2 describe filter: `name` (`tag-key`, `vpc-id`, ...) matching any
/// of `values`.
pub fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    let mut b = Filter::builder().name(name);
    for v in values {
        b = b.values(v);
    }
    b.build()
}

/// An EC2 tag of `key` and `value`.
pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// Describes one instance; a missing or terminated instance is
/// `Firebreak.InstanceNotFound`.
pub async fn describe_instance(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &InstanceId,
) -> Result<Instance, StepError> {
    let call = format!("ec2:DescribeInstances {id}");
    log.read("ec2:DescribeInstances", format!("InstanceIds=[{id}]"));
    let out = ctx
        .aws
        .ec2
        .describe_instances()
        .instance_ids(id.as_str())
        .send()
        .await
        .map_err(|e| aws_error(&call, e))?;
    let instance = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(id.as_str()))
        .cloned()
        .ok_or_else(|| {
            StepError::new(
                ErrorName::InstanceNotFound,
                format!(
                    "instance {id} does not exist in account {} region {}",
                    ctx.account_id, ctx.region
                ),
            )
        })?;
    let state = instance
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_default();
    if state == "terminated" {
        return Err(StepError::new(
            ErrorName::InstanceNotFound,
            format!("instance {id} is terminated"),
        ));
    }
    Ok(instance)
}

/// The ids of the instance's network interfaces, by device index.
pub fn interface_ids(instance: &Instance) -> Vec<String> {
    let mut enis: Vec<(i32, String)> = instance
        .network_interfaces()
        .iter()
        .filter_map(|n| {
            Some((
                n.attachment().and_then(|a| a.device_index()).unwrap_or(0),
                n.network_interface_id()?.to_string(),
            ))
        })
        .collect();
    enis.sort();
    enis.into_iter().map(|(_, id)| id).collect()
}

/// The ids of the instance's EBS volumes with their device names; the
/// root volume first.
pub fn volumes(instance: &Instance) -> Vec<(String, Option<String>)> {
    let root = instance.root_device_name();
    let mut v: Vec<(bool, String, Option<String>)> = instance
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            let id = m.ebs()?.volume_id()?.to_string();
            let dev = m.device_name().map(str::to_string);
            Some((dev.as_deref() != root, id, dev))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, id, dev)| (id, dev)).collect()
}
