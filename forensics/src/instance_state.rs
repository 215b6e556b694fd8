//! The record of an instance's state before containment: evidence of what
//! it looked like, and the reference `release` restores.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::hash::{sha256_bytes, Digest};

/// What an instance looked like at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceStateRecord {
    /// The EC2 instance id (`i-...`).
    pub instance_id: String,
    /// The AWS account (12 digits) that owns the instance.
    pub account_id: String,
    /// The instance's region, e.g. `us-east-1`.
    pub region: String,
    /// When the state was read (UTC).
    pub captured_at: DateTime<Utc>,
    /// `pending`, `running`, `stopped`, ...
    pub state: String,
    /// The instance type, e.g. `t3.micro`.
    pub instance_type: Option<String>,
    /// The AMI it was launched from (`ami-...`).
    pub image_id: Option<String>,
    /// The instance's VPC (`vpc-...`).
    pub vpc_id: Option<String>,
    /// The subnet of its primary interface (`subnet-...`).
    pub subnet_id: Option<String>,
    /// When EC2 last launched (or started) the instance (UTC).
    pub launch_time: Option<DateTime<Utc>>,
    /// The attached network interfaces.
    pub network_interfaces: Vec<NetworkInterfaceRecord>,
    /// The attached EBS volumes.
    pub volumes: Vec<VolumeRecord>,
    /// The IAM instance profile association, if any.
    pub instance_profile: Option<InstanceProfileRecord>,
    /// The `DisableApiTermination` attribute (termination protection).
    pub disable_api_termination: Option<bool>,
    /// The `DisableApiStop` attribute (stop protection).
    pub disable_api_stop: Option<bool>,
    /// `stop` or `terminate`.
    pub shutdown_behavior: Option<String>,
    /// Elastic IPs associated with any of the instance's interfaces.
    pub elastic_ips: Vec<ElasticIpRecord>,
    /// Auto Scaling membership, if any.
    pub auto_scaling: Option<AutoScalingRecord>,
    /// ELBv2 target group registrations of the instance (instance
    /// targets) and of its private addresses (IP targets).
    pub target_groups: Vec<TargetRegistration>,
    /// Classic Load Balancers the instance is registered with (names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classic_load_balancers: Vec<String>,
    /// The instance's tags, key to value (firebreak's own included).
    pub tags: BTreeMap<String, String>,
    /// The console output at capture time, stored as its own artifact.
    pub console_output: Option<ArtifactRef>,
}

/// An Elastic IP on one of the instance's interfaces (from
/// `DescribeAddresses`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ElasticIpRecord {
    /// The address's allocation id (`eipalloc-...`).
    pub allocation_id: String,
    /// The public IPv4 address.
    pub public_ip: Option<String>,
    /// The association id (`eipassoc-...`); a new one is issued on
    /// re-association, so it is not compared after release.
    pub association_id: Option<String>,
    /// The interface the address is associated with (`eni-...`).
    pub network_interface_id: Option<String>,
    /// The private IPv4 address it maps to.
    pub private_ip: Option<String>,
}

/// The instance's membership of an Auto Scaling group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AutoScalingRecord {
    /// The Auto Scaling group's name.
    pub group_name: String,
    /// `InService`, `Standby`, ...
    pub lifecycle_state: String,
    /// Whether the instance is protected from scale-in.
    pub protected_from_scale_in: Option<bool>,
    /// The group's MinSize (containment may lower it to take the instance
    /// out without a replacement; release puts it back).
    pub group_min_size: Option<i32>,
}

impl AutoScalingRecord {
    /// The lifecycle state, with the states an instance passes through on
    /// its way back into service (`Pending`, `Pending:Wait`,
    /// `Pending:Proceed`) counted as `InService`: right after a release the
    /// instance is on that way, and lifecycle hooks decide how long it takes.
    pub fn settled_state(&self) -> &str {
        if self.lifecycle_state.starts_with("Pending") {
            "InService"
        } else {
            &self.lifecycle_state
        }
    }
}

/// One registration of the instance, or of one of its addresses, in an
/// ELBv2 target group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct TargetRegistration {
    /// The target group's ARN.
    pub target_group_arn: String,
    /// The port the target is registered on, as `DescribeTargetHealth`
    /// reports it.
    pub port: Option<i32>,
    /// For an IP target group, the instance's address registered; none
    /// for an instance target (the instance id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The target's Availability Zone as registered (`all` for an IP
    /// outside the group's VPC), kept to register it back the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
}

/// An artifact stored elsewhere, by digest and location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactRef {
    /// SHA-256 and size in bytes of the artifact's content.
    pub digest: Digest,
    /// `s3://bucket/key` (with `?versionId=` when versioned), when stored.
    pub location: Option<String>,
}

/// A network interface attached to the instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkInterfaceRecord {
    /// The interface id (`eni-...`).
    pub network_interface_id: String,
    /// The attachment's device index (0 for the primary interface).
    pub device_index: Option<i32>,
    /// The interface's VPC.
    pub vpc_id: Option<String>,
    /// The interface's subnet.
    pub subnet_id: Option<String>,
    /// Security group ids, in the order EC2 reports them.
    pub security_group_ids: Vec<String>,
    /// The source/destination check flag.
    pub source_dest_check: Option<bool>,
    /// Every private IPv4 address of the interface.
    pub private_ip_addresses: Vec<String>,
    /// Every IPv6 address of the interface.
    pub ipv6_addresses: Vec<String>,
    /// The public IPv4 address associated with the interface, if any.
    pub public_ip: Option<String>,
}

/// An EBS volume attached to the instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VolumeRecord {
    /// The volume id (`vol-...`).
    pub volume_id: String,
    /// The device it is attached as, e.g. `/dev/xvda`.
    pub device_name: Option<String>,
    /// The attachment's `DeleteOnTermination` flag.
    pub delete_on_termination: Option<bool>,
    /// The volume's size in GiB.
    pub size_gib: Option<i32>,
    /// Whether the volume is encrypted.
    pub encrypted: Option<bool>,
    /// The KMS key that encrypts it, when encrypted.
    pub kms_key_id: Option<String>,
}

/// The instance's IAM instance profile association.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceProfileRecord {
    /// The association id (`iip-assoc-...`); a new one is issued on
    /// re-association, so it is not compared after release.
    pub association_id: Option<String>,
    /// The instance profile's ARN.
    pub arn: Option<String>,
}

/// A record together with the digest of its canonical JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedRecord<T> {
    /// The record itself.
    pub record: T,
    /// SHA-256 and size of the record's [`canonical_json`] bytes.
    pub digest: Digest,
}

/// Why a record could not be sealed or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The record could not be serialised to JSON.
    #[error("cannot serialise the record: {0}")]
    Serialise(#[from] serde_json::Error),
    /// The record's canonical bytes no longer hash to its digest: it was
    /// edited after sealing.
    #[error("the record does not match its digest: recorded {recorded}, computed {computed}")]
    Mismatch {
        /// The hex SHA-256 stored in the sealed record.
        recorded: String,
        /// The hex SHA-256 of the record as it is now.
        computed: String,
    },
}

/// The canonical bytes of a record: compact JSON in field order. Field
/// order is fixed by the struct definitions and maps are `BTreeMap`s, so
/// the same record always gives the same bytes.
pub fn canonical_json<T: Serialize>(record: &T) -> Result<Vec<u8>, SealError> {
    Ok(serde_json::to_vec(record)?)
}

impl<T: Serialize> SealedRecord<T> {
    /// Computes the digest of `record`.
    pub fn seal(record: T) -> Result<SealedRecord<T>, SealError> {
        let digest = sha256_bytes(&canonical_json(&record)?);
        Ok(SealedRecord { record, digest })
    }

    /// Recomputes the digest and compares.
    pub fn verify(&self) -> Result<(), SealError> {
        let computed = sha256_bytes(&canonical_json(&self.record)?);
        if computed.sha256 == self.digest.sha256 && computed.size == self.digest.size {
            Ok(())
        } else {
            Err(SealError::Mismatch {
                recorded: self.digest.sha256.clone(),
                computed: computed.sha256,
            })
        }
    }
}

/// Tag keys firebreak itself writes (they differ after a case by design).
pub const FIREBREAK_TAG_PREFIX: &str = "firebreak:";

/// What differs between a recorded state and the state now, for every
/// property `release` restores. Ignores what release does not own: the
/// capture time, console output, association ids (new ones are issued on
/// re-association) and firebreak's own tags. Empty means restored exactly.
pub fn restorable_differences(
    before: &InstanceStateRecord,
    after: &InstanceStateRecord,
) -> Vec<String> {
    differences_in(before, after, &Area::ALL)
}

/// What a difference is about: release restores the areas in an order
/// (service last, termination protection at the very end) and checks
/// each part before the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Running state, interfaces (groups, addresses, source/dest check),
    /// Elastic IPs, volumes, the instance profile, attributes other than
    /// termination protection, tags.
    Instance,
    /// Auto Scaling membership, target groups, Classic Load Balancers.
    Service,
    /// The `DisableApiTermination` attribute, restored last.
    TerminationProtection,
}

impl Area {
    /// Every area, in the order release restores them.
    pub const ALL: [Area; 3] = [Area::Instance, Area::Service, Area::TerminationProtection];
}

/// [`restorable_differences`] limited to some areas.
pub fn differences_in(
    before: &InstanceStateRecord,
    after: &InstanceStateRecord,
    areas: &[Area],
) -> Vec<String> {
    let mut all: Vec<(Area, String)> = Vec::new();
    let mut check = |area: Area, what: String, a: String, b: String| {
        if a != b {
            all.push((area, format!("{what}: recorded {a}, now {b}")));
        }
    };
    area_checks(before, after, &mut check);
    all.into_iter()
        .filter(|(a, _)| areas.contains(a))
        .map(|(_, d)| d)
        .collect()
}

fn area_checks(
    before: &InstanceStateRecord,
    after: &InstanceStateRecord,
    check: &mut impl FnMut(Area, String, String, String),
) {
    check(
        Area::Instance,
        "state".into(),
        before.state.clone(),
        after.state.clone(),
    );
    for eni in &before.network_interfaces {
        let now = after
            .network_interfaces
            .iter()
            .find(|n| n.network_interface_id == eni.network_interface_id);
        let Some(now) = now else {
            check(
                Area::Instance,
                format!("{} attachment", eni.network_interface_id),
                "attached".into(),
                "no longer attached".into(),
            );
            continue;
        };
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let id = &eni.network_interface_id;
        check(
            Area::Instance,
            format!("{id} security groups"),
            format!("{:?}", sorted(&eni.security_group_ids)),
            format!("{:?}", sorted(&now.security_group_ids)),
        );
        check(
            Area::Instance,
            format!("{id} source/dest check"),
            format!("{:?}", eni.source_dest_check),
            format!("{:?}", now.source_dest_check),
        );
        check(
            Area::Instance,
            format!("{id} private IPs"),
            format!("{:?}", sorted(&eni.private_ip_addresses)),
            format!("{:?}", sorted(&now.private_ip_addresses)),
        );
        check(
            Area::Instance,
            format!("{id} IPv6 addresses"),
            format!("{:?}", sorted(&eni.ipv6_addresses)),
            format!("{:?}", sorted(&now.ipv6_addresses)),
        );
        check(
            Area::Instance,
            format!("{id} public IP"),
            format!("{:?}", eni.public_ip),
            format!("{:?}", now.public_ip),
        );
    }
    for v in &before.volumes {
        match after.volumes.iter().find(|n| n.volume_id == v.volume_id) {
            Some(now) => check(
                Area::Instance,
                format!("{} DeleteOnTermination", v.volume_id),
                format!("{:?}", v.delete_on_termination),
                format!("{:?}", now.delete_on_termination),
            ),
            None => check(
                Area::Instance,
                format!("{} attachment", v.volume_id),
                "attached".into(),
                "no longer attached".into(),
            ),
        }
    }
    check(
        Area::Instance,
        "instance profile".into(),
        format!(
            "{:?}",
            before.instance_profile.as_ref().and_then(|p| p.arn.clone())
        ),
        format!(
            "{:?}",
            after.instance_profile.as_ref().and_then(|p| p.arn.clone())
        ),
    );
    check(
        Area::TerminationProtection,
        "termination protection".into(),
        format!("{:?}", before.disable_api_termination),
        format!("{:?}", after.disable_api_termination),
    );
    check(
        Area::Instance,
        "stop protection".into(),
        format!("{:?}", before.disable_api_stop),
        format!("{:?}", after.disable_api_stop),
    );
    check(
        Area::Instance,
        "shutdown behaviour".into(),
        format!("{:?}", before.shutdown_behavior),
        format!("{:?}", after.shutdown_behavior),
    );
    let eips = |r: &InstanceStateRecord| {
        let mut v: Vec<(String, Option<String>, Option<String>)> = r
            .elastic_ips
            .iter()
            .map(|e| {
                (
                    e.allocation_id.clone(),
                    e.network_interface_id.clone(),
                    e.private_ip.clone(),
                )
            })
            .collect();
        v.sort();
        format!("{v:?}")
    };
    check(
        Area::Instance,
        "Elastic IPs".into(),
        eips(before),
        eips(after),
    );
    let asg = |r: &InstanceStateRecord| {
        r.auto_scaling.as_ref().map(|a| {
            (
                a.group_name.clone(),
                a.settled_state().to_string(),
                a.protected_from_scale_in,
                a.group_min_size,
            )
        })
    };
    check(
        Area::Service,
        "Auto Scaling".into(),
        format!("{:?}", asg(before)),
        format!("{:?}", asg(after)),
    );
    check(
        Area::Service,
        "target groups".into(),
        format!("{:?}", before.target_groups),
        format!("{:?}", after.target_groups),
    );
    let own = |r: &InstanceStateRecord| {
        r.tags
            .iter()
            .filter(|(k, _)| !k.starts_with(FIREBREAK_TAG_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    check(
        Area::Instance,
        "tags".into(),
        format!("{:?}", own(before)),
        format!("{:?}", own(after)),
    );
    check(
        Area::Service,
        "Classic Load Balancers".into(),
        format!("{:?}", before.classic_load_balancers),
        format!("{:?}", after.classic_load_balancers),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> InstanceStateRecord {
        InstanceStateRecord {
            instance_id: "i-0abc".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            captured_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            state: "running".into(),
            instance_type: Some("t3.micro".into()),
            image_id: None,
            vpc_id: Some("vpc-1".into()),
            subnet_id: None,
            launch_time: None,
            network_interfaces: vec![],
            volumes: vec![],
            instance_profile: None,
            disable_api_termination: Some(false),
            disable_api_stop: Some(false),
            shutdown_behavior: Some("stop".into()),
            elastic_ips: vec![],
            auto_scaling: None,
            target_groups: vec![],
            classic_load_balancers: vec![],
            tags: BTreeMap::from([("Name".to_string(), "web".to_string())]),
            console_output: None,
        }
    }

    #[test]
    fn differences_ignore_capture_time_and_case_tags_only() {
        let before = record();
        let mut after = record();
        after.captured_at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        after.tags.insert("firebreak:case".into(), "c1".into());
        assert!(restorable_differences(&before, &after).is_empty());
        after.disable_api_termination = Some(true);
        after.tags.insert("Owner".into(), "x".into());
        let d = restorable_differences(&before, &after);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("termination protection: recorded Some(false), now Some(true)"));
    }

    #[test]
    fn sealing_is_deterministic_and_detects_edits() {
        let a = SealedRecord::seal(record()).unwrap();
        let b = SealedRecord::seal(record()).unwrap();
        assert_eq!(a.digest, b.digest);
        a.verify().unwrap();
        let mut edited = a.clone();
        edited.record.state = "stopped".into();
        assert!(matches!(edited.verify(), Err(SealError::Mismatch { .. })));
    }
}
