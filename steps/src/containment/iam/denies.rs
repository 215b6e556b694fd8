//! The deny documents firebreak keeps on an instance profile's role, and
//! IAM's size quotas they must stay within.
//!
//! One customer managed policy per role (more when one is full) holds a
//! statement per cut-off time, each listing the instances whose sessions
//! issued before it are denied, and one statement listing the instances
//! whose credentials are denied outside their VPC. Instances are named by
//! the pattern `*/i-...` on `ec2:SourceInstanceARN` (24 characters each),
//! so a policy holds about 240 of them, where an inline policy per
//! instance exhausted the role's 10,240 characters after a few dozen.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

/// IAM's quotas (whitespace is not counted, and firebreak writes none).
pub const MANAGED_POLICY_MAX_CHARS: usize = 6144;
/// Characters all inline policies of one role may hold together; the
/// role-wide fallback must fit beside the role's own.
pub const ROLE_INLINE_MAX_CHARS: usize = 10240;
/// Managed policies attached to one role (IAM's default quota; an account
/// whose quota was raised is still held to 10).
pub const ROLE_MANAGED_POLICIES_MAX: usize = 10;
/// Versions IAM keeps per managed policy.
pub const POLICY_VERSIONS_MAX: usize = 5;

/// The cut-off is padded against clock skew between where firebreak runs
/// and AWS (a laptop's clock can be minutes off): sessions issued a little
/// after containment from this instance are denied too, which costs
/// nothing, as its profile is gone by then.
pub const CUTOFF_PAD: chrono::Duration = chrono::Duration::minutes(5);
/// Cut-offs are rounded up to this, so that instances contained around
/// the same time share one statement.
pub const CUTOFF_QUANTUM_SECONDS: i64 = 15 * 60;

/// The path of firebreak's managed policies.
pub const POLICY_PATH: &str = "/firebreak/";
/// The inline policy of the role-wide fallback.
pub const ROLE_WIDE_POLICY: &str = "firebreak-deny-role-sessions";

const OUTSIDE_VPC_SID: &str = "FirebreakOutsideVpc";
const BEFORE_SID: &str = "FirebreakBefore";
const ROLE_WIDE_SID: &str = "FirebreakRoleWide";

/// The managed policy names of a role: `firebreak-deny-sessions-ROLE`,
/// then `-2`, `-3`, ... when one is full.
pub fn managed_policy_name(role: &str, n: usize) -> String {
    if n <= 1 {
        format!("firebreak-deny-sessions-{role}")
    } else {
        format!("firebreak-deny-sessions-{role}-{n}")
    }
}

/// The cut-off for a containment at `now`: padded, rounded up.
pub fn cutoff_for(now: DateTime<Utc>) -> DateTime<Utc> {
    let t = (now + CUTOFF_PAD).timestamp();
    let q = CUTOFF_QUANTUM_SECONDS;
    let up = (t + q - 1).div_euclid(q) * q;
    Utc.timestamp_opt(up, 0)
        .single()
        .unwrap_or(now + CUTOFF_PAD)
}

fn pattern(instance: &str) -> String {
    format!("*/{instance}")
}

fn instance_of(pattern: &str) -> Option<&str> {
    pattern.strip_prefix("*/").filter(|i| i.starts_with("i-"))
}

/// What a role's firebreak managed policy denies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Denies {
    /// Instances whose credentials are denied outside their VPC.
    pub outside_vpc: BTreeSet<String>,
    /// Per cut-off, the instances whose sessions issued before it are
    /// denied.
    pub before: BTreeMap<DateTime<Utc>, BTreeSet<String>>,
}

impl Denies {
    /// Whether no instance is denied, either way (its document would then be
    /// None).
    pub fn is_empty(&self) -> bool {
        self.outside_vpc.is_empty() && self.before.values().all(BTreeSet::is_empty)
    }

    /// The cut-off this instance's sessions are denied before, if any.
    pub fn cutoff_of(&self, instance: &str) -> Option<DateTime<Utc>> {
        self.before
            .iter()
            .find(|(_, s)| s.contains(instance))
            .map(|(t, _)| *t)
    }

    /// Takes an instance out; says whether it was in.
    pub fn remove(&mut self, instance: &str, outside_vpc: bool, before: bool) -> bool {
        let mut was = false;
        if outside_vpc {
            was |= self.outside_vpc.remove(instance);
        }
        if before {
            for s in self.before.values_mut() {
                was |= s.remove(instance);
            }
            self.before.retain(|_, s| !s.is_empty());
        }
        was
    }

    /// The policy document (None when it denies nothing: IAM refuses a
    /// policy without statements).
    pub fn document(&self) -> Option<Value> {
        let mut statements = Vec::new();
        if !self.outside_vpc.is_empty() {
            let arns: Vec<String> = self.outside_vpc.iter().map(|i| pattern(i)).collect();
            // AWS's documented pattern: instance credentials used anywhere
            // but through a VPC endpoint of the VPC they were delivered to
            // are denied (aws:SourceVpc is only set through an endpoint),
            // except when an AWS service calls on the principal's behalf.
            statements.push(json!({
                "Sid": OUTSIDE_VPC_SID,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {
                    "StringLike": {"ec2:SourceInstanceARN": arns},
                    "StringNotEquals": {"aws:ec2InstanceSourceVPC": "${aws:SourceVpc}"},
                    "BoolIfExists": {"aws:ViaAWSService": "false"}
                }
            }));
        }
        for (t, instances) in &self.before {
            if instances.is_empty() {
                continue;
            }
            let arns: Vec<String> = instances.iter().map(|i| pattern(i)).collect();
            statements.push(json!({
                "Sid": format!("{BEFORE_SID}{}", t.format("%Y%m%dT%H%M%SZ")),
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {
                    "StringLike": {"ec2:SourceInstanceARN": arns},
                    "DateLessThan": {"aws:TokenIssueTime": t.to_rfc3339_opts(SecondsFormat::Secs, true)}
                }
            }));
        }
        (!statements.is_empty()).then(|| json!({"Version": "2012-10-17", "Statement": statements}))
    }

    /// Reads a document firebreak wrote (statements it did not write are
    /// ignored: a firebreak policy holds only its own).
    pub fn from_document(doc: &Value) -> Denies {
        let mut d = Denies::default();
        let statements = match doc.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(v @ Value::Object(_)) => vec![v.clone()],
            _ => Vec::new(),
        };
        for s in statements {
            let sid = s.get("Sid").and_then(Value::as_str).unwrap_or_default();
            let cond = s.get("Condition");
            let patterns: Vec<String> = match cond
                .and_then(|c| c.get("StringLike"))
                .and_then(|c| c.get("ec2:SourceInstanceARN"))
            {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                Some(Value::String(p)) => vec![p.clone()],
                _ => Vec::new(),
            };
            let instances = patterns
                .iter()
                .filter_map(|p| instance_of(p).map(str::to_string));
            if sid == OUTSIDE_VPC_SID {
                d.outside_vpc.extend(instances);
            } else if sid.starts_with(BEFORE_SID) {
                let Some(t) = cond
                    .and_then(|c| c.get("DateLessThan"))
                    .and_then(|c| c.get("aws:TokenIssueTime"))
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                else {
                    continue;
                };
                d.before
                    .entry(t.with_timezone(&Utc))
                    .or_default()
                    .extend(instances);
            }
        }
        d
    }
}

/// A policy's size as IAM counts it: characters, whitespace outside
/// strings not counted.
pub fn policy_chars(doc: &Value) -> usize {
    // serde_json's compact form has no whitespace outside strings.
    doc.to_string().chars().count()
}

/// The size of a policy document as stored (IAM may return it with
/// whitespace): whitespace outside strings not counted.
pub fn stored_chars(text: &str) -> usize {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => policy_chars(&v),
        Err(_) => text.chars().filter(|c| !c.is_whitespace()).count(),
    }
}

/// The role-wide fallback: every session of the role issued before the
/// cut-off is denied (what the console's "Revoke active sessions" does).
pub fn role_wide_document(cutoff: DateTime<Utc>) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": ROLE_WIDE_SID,
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "DateLessThan": {"aws:TokenIssueTime": cutoff.to_rfc3339_opts(SecondsFormat::Secs, true)}
            }
        }]
    })
}

/// The cut-off of a role-wide fallback document.
pub fn role_wide_cutoff(doc: &Value) -> Option<DateTime<Utc>> {
    let s = doc.get("Statement")?.get(0)?;
    if s.get("Sid")?.as_str()? != ROLE_WIDE_SID {
        return None;
    }
    let t = s
        .get("Condition")?
        .get("DateLessThan")?
        .get("aws:TokenIssueTime")?
        .as_str()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cutoffs_are_padded_and_rounded_up() {
        assert_eq!(
            cutoff_for(t("2026-12-06T03:00:00Z")),
            t("2026-12-06T03:15:00Z")
        );
        assert_eq!(
            cutoff_for(t("2026-12-06T03:10:00Z")),
            t("2026-12-06T03:15:00Z")
        );
        assert_eq!(
            cutoff_for(t("2026-12-06T03:10:01Z")),
            t("2026-12-06T03:30:00Z")
        );
    }

    #[test]
    fn documents_round_trip_and_instances_come_out_exactly() {
        let mut d = Denies::default();
        d.outside_vpc.insert("i-0aaa1111".into());
        let c = t("2026-12-06T03:15:00Z");
        d.before
            .entry(c)
            .or_default()
            .extend(["i-0aaa1111".to_string(), "i-0bbb2222".to_string()]);
        let doc = d.document().unwrap();
        assert_eq!(Denies::from_document(&doc), d);
        assert_eq!(d.cutoff_of("i-0bbb2222"), Some(c));
        let mut e = d.clone();
        assert!(e.remove("i-0aaa1111", true, true));
        assert_eq!(e.outside_vpc.len(), 0);
        assert_eq!(e.before[&c].len(), 1);
        assert!(e.remove("i-0bbb2222", false, true));
        assert!(e.is_empty() && e.document().is_none());
    }

    #[test]
    fn a_policy_holds_more_than_two_hundred_instances_of_one_cutoff() {
        let mut d = Denies::default();
        let c = t("2026-12-06T03:15:00Z");
        for n in 0..240u32 {
            d.before.entry(c).or_default().insert(format!("i-{n:017x}"));
        }
        let chars = policy_chars(&d.document().unwrap());
        assert!(chars <= MANAGED_POLICY_MAX_CHARS, "{chars}");
        assert_eq!(
            stored_chars(&serde_json::to_string_pretty(&d.document().unwrap()).unwrap()),
            chars
        );
    }
}
