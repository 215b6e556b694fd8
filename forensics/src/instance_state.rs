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
    pub instance_id: String,
    pub account_id: String,
    pub region: String,
    /// When the state was read (UTC).
    pub captured_at: DateTime<Utc>,
    /// `pending`, `running`, `stopped`, ...
    pub state: String,
    pub instance_type: Option<String>,
    pub image_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub launch_time: Option<DateTime<Utc>>,
    pub network_interfaces: Vec<NetworkInterfaceRecord>,
    pub volumes: Vec<VolumeRecord>,
    /// The IAM instance profile association, if any.
    pub instance_profile: Option<InstanceProfileRecord>,
    pub disable_api_termination: Option<bool>,
    /// `stop` or `terminate`.
    pub shutdown_behavior: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkInterfaceRecord {
    pub network_interface_id: String,
    pub device_index: Option<i32>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    /// Security group ids, in the order EC2 reports them.
    pub security_group_ids: Vec<String>,
    pub source_dest_check: Option<bool>,
    pub private_ip_addresses: Vec<String>,
    pub ipv6_addresses: Vec<String>,
    pub public_ip: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VolumeRecord {
    pub volume_id: String,
    pub device_name: Option<String>,
    pub delete_on_termination: Option<bool>,
    pub size_gib: Option<i32>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceProfileRecord {
    pub association_id: Option<String>,
    pub arn: Option<String>,
}

/// A record together with the digest of its canonical JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedRecord<T> {
    pub record: T,
    pub digest: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot serialise the record: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("the record does not match its digest: recorded {recorded}, computed {computed}")]
    Mismatch { recorded: String, computed: String },
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
            shutdown_behavior: Some("stop".into()),
            tags: BTreeMap::from([("Name".to_string(), "web".to_string())]),
        }
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
