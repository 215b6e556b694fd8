//! The case file: the execution input every playbook starts from. It
//! gathers the steps' options, so it depends on the steps; the validated
//! identifiers the steps take live in [`crate::ids`], which depends on
//! nothing.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The execution input of a playbook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CaseFile {
    /// Who, what and when: the case and the instance it is about.
    pub case: CaseInfo,
    /// How the steps act in this case (Auto Scaling mode, exemptions, evidence).
    pub options: CaseOptions,
}

/// How the playbooks act, chosen when the case is opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CaseOptions {
    /// Standby (default) or detach from an Auto Scaling group.
    pub asg_mode: crate::containment::autoscaling::AsgMode,
    /// Investigator access kept through isolation (SSH in, HTTPS out).
    pub isolation_exemptions: Vec<crate::containment::ec2::Exemption>,
    /// On release, what to do with the deny on sessions issued before
    /// containment.
    pub credential_deny: crate::containment::ec2::DenyOnRelease,
    /// Copy the snapshots to a forensic account/region when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forensic_copy: Option<crate::containment::ec2::ForensicCopy>,
    /// Memory capture (ec2-compromise).
    #[serde(default)]
    pub memory: crate::evidence::memory::MemoryOptions,
    /// Hash every snapshot's whole volume image through the EBS direct
    /// APIs once completed (`hash_snapshots`).
    #[serde(default)]
    pub hash_snapshots: bool,
    /// Leave the network ACLs alone (`--no-nacl-cut`).
    #[serde(default)]
    pub skip_nacl_cut: bool,
    /// Rules per direction an ACL may hold, when the account's quota was
    /// raised above AWS's default of 20.
    #[serde(default)]
    pub nacl_rule_limit: Option<u32>,
    /// Why this run must wait for a person's approval before its first
    /// change (`respond --approval`, a trigger with `approval = true`, or
    /// the hourly limit of automatic containments); no wait when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// Who, what and when: set once when the case is opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CaseInfo {
    /// The validated case id ([`crate::ids::CaseId`]): it goes into tags, S3
    /// keys and execution names.
    pub case_id: String,
    /// The EC2 instance the case is about (`i-...`), validated as an
    /// [`crate::ids::InstanceId`].
    pub instance_id: String,
    /// The 12-digit AWS account the instance lives in (the caller's, from STS).
    pub account_id: String,
    /// The AWS region the instance lives in (`eu-west-1`).
    pub region: String,
    /// When this run started (UTC): `respond` and `rehearse` set it when they
    /// open the case, `release` when it starts the release.
    pub opened_at: DateTime<Utc>,
    /// The principal (ARN) that started the response.
    pub actor: String,
    /// The bucket that keeps the case's evidence and records.
    pub evidence_bucket: String,
    /// Retention and key of the evidence objects (the bucket's defaults
    /// when unset).
    #[serde(default)]
    pub evidence_lock: crate::evidence::Lock,
}

/// The default evidence bucket of an account and region.
pub fn default_evidence_bucket(account: &str, region: &str) -> String {
    format!("firebreak-evidence-{account}-{region}")
}
