//! Revoke the credentials the instance holds.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::context::{StepContext, StepLog};
use crate::ec2::{filter, load_record, InstanceRef};
use crate::error::{aws_error, error_code, StepError};
use crate::registry::Step;

/// Removes the instance-profile association (no new credentials reach the
/// instance) after adding, on the profile's role, an inline policy that
/// denies everything to sessions issued before now *from this instance*
/// (`ec2:SourceInstanceARN` and `aws:TokenIssueTime`): credentials already
/// taken from it stop working, while other instances sharing the role keep
/// theirs. Idempotent: an existing deny keeps its original cut-off time.
#[derive(Debug)]
pub struct RevokeInstanceCredentials;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevokeInput {
    pub case_id: String,
    pub instance_id: String,
    /// Where the case's record is: after a first run the association is
    /// gone, and the record says which profile it was.
    pub evidence_bucket: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevokeOutput {
    pub instance_profile_arn: Option<String>,
    pub roles: Vec<String>,
    pub policy_name: String,
    /// Sessions issued before this time, from this instance, are denied.
    pub token_issue_cutoff: Option<DateTime<Utc>>,
    pub disassociated_association_id: Option<String>,
    pub changed: bool,
    pub dry_run: bool,
}

impl StepDef for RevokeInstanceCredentials {
    const NAME: &'static str = "revoke_instance_credentials";
    const SUMMARY: &'static str =
        "Deny older sessions from this instance only (inline policy on its role), then remove the profile association.";
    const MUTATES: bool = true;
    type Input = RevokeInput;
    type Output = RevokeOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(["ec2:DescribeIamInstanceProfileAssociations"], ["*"]),
            Statement::allow(
                ["ec2:DisassociateIamInstanceProfile"],
                ["arn:aws:ec2:*:*:instance/*"],
            ),
            Statement::allow(
                [
                    "iam:GetInstanceProfile",
                    "iam:GetRolePolicy",
                    "iam:PutRolePolicy",
                ],
                ["arn:aws:iam::*:instance-profile/*", "arn:aws:iam::*:role/*"],
            ),
            Statement::allow(["s3:GetObject"], ["arn:aws:s3:::*/cases/*"]),
        ]
    }
}

/// The inline policy's name on the role: one per instance.
pub fn deny_policy_name(instance: &str) -> String {
    format!("firebreak-deny-sessions-{instance}")
}

/// The AWS partition of a region.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

pub fn instance_arn(region: &str, account: &str, instance: &str) -> String {
    format!(
        "arn:{}:ec2:{region}:{account}:instance/{instance}",
        partition(region)
    )
}

/// The deny policy document.
pub fn deny_policy(instance_arn: &str, cutoff: DateTime<Utc>, case: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": case_sid(case),
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"ec2:SourceInstanceARN": instance_arn},
                "DateLessThan": {"aws:TokenIssueTime": cutoff.to_rfc3339_opts(SecondsFormat::Secs, true)}
            }
        }]
    })
}

/// The statement id names the case (IAM allows only letters and digits
/// in a Sid): a later case replaces the deny with its own cut-off, a re-run
/// of the same case keeps the first one.
pub fn case_sid(case: &str) -> String {
    let alnum: String = case.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("FirebreakDenyCase{alnum}")
}

/// The cut-off of an existing deny policy for `instance_arn` written for
/// `case`, if the document is that one.
fn existing_cutoff(doc: &Value, instance_arn: &str, case: &str) -> Option<DateTime<Utc>> {
    let stmt = doc.get("Statement")?.get(0)?;
    if stmt.get("Sid")?.as_str()? != case_sid(case) {
        return None;
    }
    let cond = stmt.get("Condition")?;
    if cond
        .get("StringEquals")?
        .get("ec2:SourceInstanceARN")?
        .as_str()?
        != instance_arn
    {
        return None;
    }
    let t = cond
        .get("DateLessThan")?
        .get("aws:TokenIssueTime")?
        .as_str()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The cut-off of any firebreak deny document (whatever its case).
pub fn deny_cutoff(doc: &Value) -> Option<DateTime<Utc>> {
    let t = doc
        .get("Statement")?
        .get(0)?
        .get("Condition")?
        .get("DateLessThan")?
        .get("aws:TokenIssueTime")?
        .as_str()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// IAM returns policy documents URL-encoded.
pub fn decode_policy(raw: &str) -> Option<Value> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    serde_json::from_str(&decoded)
        .or_else(|_| serde_json::from_str(raw))
        .ok()
}

/// The roles of an instance profile (by ARN).
pub(crate) async fn profile_roles(
    ctx: &StepContext,
    log: &StepLog<'_>,
    profile_arn: &str,
) -> Result<Vec<String>, StepError> {
    let name = profile_arn.rsplit('/').next().unwrap_or(profile_arn);
    log.read(
        "iam:GetInstanceProfile",
        format!("InstanceProfileName={name}"),
    );
    let out = ctx
        .aws
        .iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .map_err(|e| aws_error(&format!("iam:GetInstanceProfile {name}"), e))?;
    Ok(out
        .instance_profile()
        .map(|p| {
            p.roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .collect()
        })
        .unwrap_or_default())
}

/// The inline policy `name` on `role`, if any.
pub(crate) async fn role_policy(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
    name: &str,
) -> Result<Option<Value>, StepError> {
    log.read(
        "iam:GetRolePolicy",
        format!("RoleName={role}, PolicyName={name}"),
    );
    match ctx
        .aws
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(decode_policy(out.policy_document())),
        Err(e) if error_code(&e).as_deref() == Some("NoSuchEntity") => Ok(None),
        Err(e) => Err(aws_error(&format!("iam:GetRolePolicy {role} {name}"), e)),
    }
}

#[async_trait]
impl Step for RevokeInstanceCredentials {
    async fn run(ctx: &StepContext, input: RevokeInput) -> Result<RevokeOutput, StepError> {
        let (case, id) = InstanceRef {
            case_id: input.case_id.clone(),
            instance_id: input.instance_id.clone(),
        }
        .parse()?;
        crate::ec2::parse_bucket(&input.evidence_bucket)?;
        let log = ctx.log(Self::NAME);
        log.read(
            "ec2:DescribeIamInstanceProfileAssociations",
            format!("Filters=[instance-id={id}]"),
        );
        let assoc = ctx
            .aws
            .ec2
            .describe_iam_instance_profile_associations()
            .filters(filter("instance-id", [id.as_str()]))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeIamInstanceProfileAssociations", e))?;
        let current = assoc
            .iam_instance_profile_associations()
            .iter()
            .find(|a| {
                matches!(
                    a.state().map(|s| s.as_str()),
                    Some("associated") | Some("associating")
                )
            })
            .map(|a| {
                (
                    a.association_id().unwrap_or_default().to_string(),
                    a.iam_instance_profile()
                        .and_then(|p| p.arn())
                        .unwrap_or_default()
                        .to_string(),
                )
            });
        let profile_arn = match &current {
            Some((_, arn)) => Some(arn.clone()),
            None => load_record(
                ctx,
                &log,
                &input.evidence_bucket,
                case.as_str(),
                id.as_str(),
            )
            .await?
            .and_then(|(r, _)| r.record.instance_profile.and_then(|p| p.arn)),
        };
        let policy_name = deny_policy_name(id.as_str());
        let Some(profile_arn) = profile_arn else {
            return Ok(RevokeOutput {
                instance_profile_arn: None,
                roles: vec![],
                policy_name,
                token_issue_cutoff: None,
                disassociated_association_id: None,
                changed: false,
                dry_run: ctx.is_dry_run(),
            });
        };
        let arn = instance_arn(&ctx.region, &ctx.account_id, id.as_str());
        let roles = profile_roles(ctx, &log, &profile_arn).await?;
        let mut changed = false;
        let mut errors: Vec<StepError> = Vec::new();

        // First take the profile away, so the instance gets no new
        // credentials; each action is attempted even if the other fails.
        let mut disassociated = None;
        if let Some((association_id, _)) = &current {
            let params = format!("AssociationId={association_id} ({profile_arn})");
            if ctx.is_dry_run() {
                log.not_checked(
                    "ec2:DisassociateIamInstanceProfile",
                    params,
                    "this API has no DryRun; needs ec2:DisassociateIamInstanceProfile on the instance",
                );
            } else {
                match ctx
                    .aws
                    .ec2
                    .disassociate_iam_instance_profile()
                    .association_id(association_id)
                    .send()
                    .await
                {
                    Ok(_) => {
                        log.done("ec2:DisassociateIamInstanceProfile", params);
                        changed = true;
                    }
                    Err(e) => errors.push(aws_error(
                        &format!("ec2:DisassociateIamInstanceProfile {association_id}"),
                        e,
                    )),
                }
            }
            disassociated = Some(association_id.clone());
        }

        // Then deny what was issued before now (taken after the
        // disassociation, so no session slips in between), unless this
        // case already did.
        let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_else(Utc::now);
        let mut cutoff: Option<DateTime<Utc>> = None;
        for role in &roles {
            let existing = match role_policy(ctx, &log, role, &policy_name).await {
                Ok(d) => d,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if let Some(kept) = existing
                .as_ref()
                .and_then(|d| existing_cutoff(d, &arn, case.as_str()))
            {
                cutoff = Some(cutoff.map_or(kept, |c| c.min(kept)));
                continue;
            }
            let t = cutoff.unwrap_or(now);
            cutoff = Some(t);
            let doc = deny_policy(&arn, t, case.as_str());
            let params = format!(
                "RoleName={role}, PolicyName={policy_name}: Deny * when ec2:SourceInstanceARN={arn} and aws:TokenIssueTime < {}",
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            if ctx.is_dry_run() {
                log.not_checked(
                    "iam:PutRolePolicy",
                    params,
                    format!("IAM has no dry run; needs iam:PutRolePolicy on role {role}"),
                );
                continue;
            }
            match ctx
                .aws
                .iam
                .put_role_policy()
                .role_name(role)
                .policy_name(&policy_name)
                .policy_document(doc.to_string())
                .send()
                .await
            {
                Ok(_) => {
                    log.done("iam:PutRolePolicy", params);
                    changed = true;
                }
                Err(e) => {
                    let mut err = aws_error(&format!("iam:PutRolePolicy {role}"), e);
                    if err.message.contains("LimitExceeded") {
                        err.message.push_str(" (a role holds at most 10,240 characters of inline policies: too many instances sharing it are contained at once)");
                    }
                    errors.push(err);
                }
            }
        }
        if let Some(first) = errors.first() {
            return Err(StepError::new(
                first.name,
                errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        if !ctx.is_dry_run() {
            let mut wrong = Vec::new();
            for role in &roles {
                match role_policy(ctx, &log, role, &policy_name).await? {
                    Some(doc) if existing_cutoff(&doc, &arn, case.as_str()).is_some() => {}
                    other => wrong.push(format!(
                        "role {role} lacks the deny policy (found {other:?})"
                    )),
                }
            }
            let after = ctx
                .aws
                .ec2
                .describe_iam_instance_profile_associations()
                .filters(filter("instance-id", [id.as_str()]))
                .send()
                .await
                .map_err(|e| aws_error("ec2:DescribeIamInstanceProfileAssociations", e))?;
            log.read(
                "ec2:DescribeIamInstanceProfileAssociations",
                format!("Filters=[instance-id={id}]"),
            );
            if after.iam_instance_profile_associations().iter().any(|a| {
                matches!(
                    a.state().map(|s| s.as_str()),
                    Some("associated") | Some("associating")
                )
            }) {
                wrong.push("the instance profile is still associated".into());
            }
            if !wrong.is_empty() {
                return Err(StepError::verification(wrong.join("; ")));
            }
        }
        Ok(RevokeOutput {
            instance_profile_arn: Some(profile_arn),
            roles,
            policy_name,
            token_issue_cutoff: cutoff,
            disassociated_association_id: disassociated,
            changed,
            dry_run: ctx.is_dry_run(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_names_only_this_instance_and_the_cutoff() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let arn = instance_arn("us-east-1", "123456789012", "i-0abc1234");
        let doc = deny_policy(&arn, t, "INC-1");
        assert_eq!(existing_cutoff(&doc, &arn, "INC-1"), Some(t));
        assert_eq!(
            existing_cutoff(&doc, &arn, "INC-2"),
            None,
            "another case writes its own cut-off"
        );
        assert_eq!(
            existing_cutoff(
                &doc,
                "arn:aws:ec2:us-east-1:123456789012:instance/i-other",
                "INC-1"
            ),
            None
        );
        assert_eq!(deny_cutoff(&doc), Some(t));
        assert_eq!(case_sid("INC-2024.001_a"), "FirebreakDenyCaseINC2024001a");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        let encoded = percent_encoding::utf8_percent_encode(
            &doc.to_string(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        assert_eq!(decode_policy(&encoded), Some(doc));
    }
}
