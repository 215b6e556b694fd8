//! Revoke the credentials the instance holds.

pub mod denies;
pub mod policies;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::containment::ec2::{filter, load_record, InstanceRef};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, StepError};
use crate::step::Step;
use policies::{Added, Deny};

/// Removes the instance-profile association (no new credentials reach the
/// instance), then denies, on the profile's role, every session issued
/// before the cut-off *from this instance* (`ec2:SourceInstanceARN` and
/// `aws:TokenIssueTime`): credentials already taken from it stop working,
/// while other instances sharing the role keep theirs. The deny goes into
/// firebreak's managed policy for the role (a statement per cut-off lists
/// the instances), which holds hundreds of instances within IAM's quotas;
/// when no room is left it falls back to denying every session of the
/// role issued before the cut-off, and says so. Idempotent: an instance
/// already denied keeps its cut-off.
#[derive(Debug)]
pub struct RevokeInstanceCredentials;

/// Input of [`RevokeInstanceCredentials`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevokeInput {
    /// The case, validated as a [`crate::ids::CaseId`]; names the record read
    /// when the profile is no longer associated.
    pub case_id: String,
    /// The instance whose credentials are revoked (`i-...`), validated as an
    /// [`crate::ids::InstanceId`].
    pub instance_id: String,
    /// Where the case's record is: after a first run the association is
    /// gone, and the record says which profile it was.
    pub evidence_bucket: String,
}

/// What [`RevokeInstanceCredentials`] took away and denied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevokeOutput {
    /// The instance profile's ARN: the one associated now, else the one in
    /// the pre-incident record. None when the instance has no profile, and
    /// then nothing is done.
    pub instance_profile_arn: Option<String>,
    /// The IAM roles of that profile (by name), each given the deny.
    pub roles: Vec<String>,
    /// The managed policies that hold the deny.
    #[serde(default)]
    pub policy_arns: Vec<String>,
    /// Sessions issued before this time, from this instance, are denied.
    pub token_issue_cutoff: Option<DateTime<Utc>>,
    /// Roles where no per-instance deny fitted within IAM's quotas: every
    /// session of the role issued before the cut-off is denied (other
    /// instances sharing it fetch new credentials).
    #[serde(default)]
    pub role_wide: Vec<String>,
    /// The profile association (`iip-assoc-...`) removed, or in a dry run
    /// the one that would be; None when none was associated (a re-run).
    pub disassociated_association_id: Option<String>,
    /// Whether anything was disassociated, written or created (false in a
    /// dry run).
    pub changed: bool,
    /// Whether this was a dry run: IAM and the disassociation have no dry
    /// run, so the changes are only logged as not checked.
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
        let mut v = vec![
            Statement::allow(["ec2:DescribeIamInstanceProfileAssociations"], ["*"]),
            Statement::allow(
                ["ec2:DisassociateIamInstanceProfile"],
                ["arn:aws:ec2:*:*:instance/*"],
            ),
            Statement::allow(["s3:GetObject"], ["arn:aws:s3:::*/cases/*"]),
        ];
        v.extend(deny_policy_statements());
        v
    }
}

/// What writing firebreak's deny policies on a role takes.
pub fn deny_policy_statements() -> Vec<Statement> {
    vec![
        Statement::allow(
            [
                "iam:GetInstanceProfile",
                "iam:GetRolePolicy",
                "iam:PutRolePolicy",
                "iam:ListRolePolicies",
                "iam:ListAttachedRolePolicies",
            ],
            ["arn:aws:iam::*:instance-profile/*", "arn:aws:iam::*:role/*"],
        ),
        Statement::allow(
            [
                "iam:CreatePolicy",
                "iam:GetPolicy",
                "iam:GetPolicyVersion",
                "iam:ListPolicyVersions",
                "iam:CreatePolicyVersion",
                "iam:DeletePolicyVersion",
            ],
            ["arn:aws:iam::*:policy/firebreak/*"],
        ),
        Statement::allow(["iam:AttachRolePolicy"], ["arn:aws:iam::*:role/*"]).with_condition(
            json!({"ArnLike": {"iam:PolicyARN": "arn:aws:iam::*:policy/firebreak/*"}}),
        ),
    ]
}

/// The inline policy earlier versions put on the role, one per instance:
/// release still removes it.
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

/// The ARN of an EC2 instance in the region's partition
/// (`arn:aws:ec2:REGION:ACCOUNT:instance/i-...`).
pub fn instance_arn(region: &str, account: &str, instance: &str) -> String {
    format!(
        "arn:{}:ec2:{region}:{account}:instance/{instance}",
        partition(region)
    )
}

/// The cut-off of an earlier version's inline deny document.
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

/// The instance's current profile association: (association id, profile
/// ARN).
async fn current_association(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &str,
) -> Result<Option<(String, String)>, StepError> {
    log.read(
        "ec2:DescribeIamInstanceProfileAssociations",
        format!("Filters=[instance-id={id}]"),
    );
    let assoc = ctx
        .aws
        .ec2
        .describe_iam_instance_profile_associations()
        .filters(filter("instance-id", [id]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeIamInstanceProfileAssociations", e))?;
    Ok(assoc
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
        }))
}

/// What the deny of one role came to.
#[derive(Default)]
struct RoleDeny {
    arns: Vec<String>,
    cutoff: Option<DateTime<Utc>>,
    role_wide: Vec<String>,
    changed: bool,
}

/// Adds the cut-off deny on each role, falling back to the role-wide deny
/// where IAM's quotas leave no room. Each role is attempted even if
/// another fails.
async fn deny_on_roles(
    ctx: &StepContext,
    log: &StepLog<'_>,
    roles: &[String],
    instance: &str,
    cutoff: DateTime<Utc>,
    errors: &mut Vec<StepError>,
) -> RoleDeny {
    let mut out = RoleDeny::default();
    for role in roles {
        match policies::add_deny(ctx, log, role, instance, Deny::Before(cutoff)).await {
            Ok(Added::Managed {
                arn,
                cutoff: kept,
                changed,
            }) => {
                out.arns.push(arn);
                let t = kept.unwrap_or(cutoff);
                out.cutoff = Some(out.cutoff.map_or(t, |c| c.min(t)));
                out.changed |= changed;
            }
            Ok(Added::Planned) => out.cutoff = Some(cutoff),
            Ok(Added::NoRoom(why)) => {
                log.progress(&format!(
                    "{why}: denying every session of role {role} issued before {} instead",
                    cutoff.to_rfc3339()
                ));
                match policies::add_role_wide(ctx, log, role, cutoff).await {
                    Ok(t) => {
                        out.role_wide.push(role.clone());
                        out.cutoff = Some(out.cutoff.map_or(t, |c| c.min(t)));
                        out.changed = true;
                    }
                    Err(e) => errors.push(StepError::new(
                        e.name,
                        format!("{why}; the role-wide deny failed too: {}", e.message),
                    )),
                }
            }
            Err(e) => errors.push(e),
        }
    }
    out
}

fn joined(errors: Vec<StepError>) -> StepError {
    let name = errors
        .first()
        .map(|e| e.name)
        .unwrap_or(ErrorName::Internal);
    StepError::new(
        name,
        errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

#[async_trait]
impl Step for RevokeInstanceCredentials {
    async fn run(ctx: &StepContext, input: RevokeInput) -> Result<RevokeOutput, StepError> {
        let (case, id) = InstanceRef {
            case_id: input.case_id.clone(),
            instance_id: input.instance_id.clone(),
        }
        .parse()?;
        crate::containment::ec2::parse_bucket(&input.evidence_bucket)?;
        let log = ctx.log(Self::NAME);
        let current = current_association(ctx, &log, id.as_str()).await?;
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
        let Some(profile_arn) = profile_arn else {
            return Ok(RevokeOutput {
                instance_profile_arn: None,
                roles: vec![],
                policy_arns: vec![],
                token_issue_cutoff: None,
                role_wide: vec![],
                disassociated_association_id: None,
                changed: false,
                dry_run: ctx.is_dry_run(),
            });
        };
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

        // Then deny what was issued before the (padded) cut-off, taken
        // after the disassociation so no session slips in between.
        let cutoff = denies::cutoff_for(Utc::now());
        let done = deny_on_roles(ctx, &log, &roles, id.as_str(), cutoff, &mut errors).await;
        changed |= done.changed;
        if !errors.is_empty() {
            return Err(joined(errors));
        }
        if !ctx.is_dry_run() {
            let mut wrong = Vec::new();
            for role in &roles {
                let r = policies::read_role(ctx, &log, role).await?;
                let wide = policies::role_wide(ctx, &log, role).await?;
                if r.cutoff_of(id.as_str()).is_none() && wide.is_none() {
                    wrong.push(format!("role {role} has no deny for {id}"));
                }
            }
            if current_association(ctx, &log, id.as_str()).await?.is_some() {
                wrong.push("the instance profile is still associated".into());
            }
            if !wrong.is_empty() {
                return Err(StepError::verification(wrong.join("; ")));
            }
        }
        Ok(RevokeOutput {
            instance_profile_arn: Some(profile_arn),
            roles,
            policy_arns: done.arns,
            token_issue_cutoff: done.cutoff,
            role_wide: done.role_wide,
            disassociated_association_id: disassociated,
            changed,
            dry_run: ctx.is_dry_run(),
        })
    }
}

/// At isolation, in `ec2-compromise`: the role keeps working for the
/// instance while its memory is captured (the SSM agent may use it), but
/// only through the VPC endpoints of its own VPC. A credential taken off
/// the instance and used from anywhere else is denied at once, hours
/// before the full revocation after the capture.
#[derive(Debug)]
pub struct RestrictCredentialsToVpc;

/// What [`RestrictCredentialsToVpc`] denied, and what it could not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestrictOutput {
    /// The instance profile associated now; None when there is none, and then
    /// nothing is done.
    pub instance_profile_arn: Option<String>,
    /// The IAM roles of that profile (by name), each given the outside-VPC
    /// deny.
    pub roles: Vec<String>,
    /// The managed policies that hold the outside-VPC deny (empty in a dry
    /// run).
    pub policy_arns: Vec<String>,
    /// What the deny leaves open or breaks (missing SSM endpoints, no
    /// room in a role's policies).
    pub warnings: Vec<String>,
    /// Whether a policy version was written or a policy created (false in a
    /// dry run, or when every role already had the deny).
    pub changed: bool,
    /// Whether this was a dry run: IAM has no dry run, so the writes are only
    /// logged as not checked.
    pub dry_run: bool,
}

/// The SSM agent's services: without an interface endpoint for each in
/// the VPC, it reaches them through a NAT gateway or the internet, and the
/// outside-VPC deny stops it.
const SSM_SERVICES: [&str; 3] = ["ssm", "ssmmessages", "ec2messages"];

impl StepDef for RestrictCredentialsToVpc {
    const NAME: &'static str = "restrict_credentials_to_vpc";
    const SUMMARY: &'static str =
        "Deny the instance's role credentials used outside its VPC (aws:ec2InstanceSourceVPC against aws:SourceVpc), at once.";
    const MUTATES: bool = true;
    type Input = InstanceRef;
    type Output = RestrictOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::InstanceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        let mut v = vec![Statement::allow(
            [
                "ec2:DescribeInstances",
                "ec2:DescribeIamInstanceProfileAssociations",
                "ec2:DescribeVpcEndpoints",
            ],
            ["*"],
        )];
        v.extend(deny_policy_statements());
        v
    }
}

async fn missing_ssm_endpoints(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
) -> Result<Vec<String>, StepError> {
    log.read(
        "ec2:DescribeVpcEndpoints",
        format!("Filters=[vpc-id={vpc}]"),
    );
    let out = ctx
        .aws
        .ec2
        .describe_vpc_endpoints()
        .filters(filter("vpc-id", [vpc]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeVpcEndpoints", e))?;
    let have: Vec<String> = out
        .vpc_endpoints()
        .iter()
        .filter(|e| e.state().map(|s| s.as_str()) != Some("deleted"))
        .filter_map(|e| e.service_name().map(str::to_string))
        .collect();
    Ok(SSM_SERVICES
        .iter()
        .map(|s| format!("com.amazonaws.{}.{s}", ctx.region))
        .filter(|s| !have.contains(s))
        .collect())
}

#[async_trait]
impl Step for RestrictCredentialsToVpc {
    async fn run(ctx: &StepContext, input: InstanceRef) -> Result<RestrictOutput, StepError> {
        let (_, id) = input.parse()?;
        let log = ctx.log(Self::NAME);
        let instance = crate::containment::ec2::describe_instance(ctx, &log, &id).await?;
        let mut out = RestrictOutput {
            instance_profile_arn: None,
            roles: Vec::new(),
            policy_arns: Vec::new(),
            warnings: Vec::new(),
            changed: false,
            dry_run: ctx.is_dry_run(),
        };
        let Some((_, profile)) = current_association(ctx, &log, id.as_str()).await? else {
            return Ok(out);
        };
        if let Some(vpc) = instance.vpc_id() {
            let missing = missing_ssm_endpoints(ctx, &log, vpc).await?;
            if !missing.is_empty() {
                out.warnings.push(format!(
                    "{vpc} has no VPC endpoint for {}: the SSM agent, if it uses the instance's role, reaches them through a NAT gateway or the internet, where the deny stops it (Default Host Management's role is not affected)",
                    missing.join(", ")
                ));
            }
        }
        out.roles = profile_roles(ctx, &log, &profile).await?;
        out.instance_profile_arn = Some(profile);
        for role in out.roles.clone() {
            match policies::add_deny(ctx, &log, &role, id.as_str(), Deny::OutsideVpc).await? {
                Added::Managed { arn, changed, .. } => {
                    out.policy_arns.push(arn);
                    out.changed |= changed;
                }
                Added::Planned => {}
                Added::NoRoom(why) => out.warnings.push(format!(
                    "{why}: the outside-VPC deny is not in force on {role}; the full revocation after the capture still follows"
                )),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_denies_are_read_and_policies_decoded() {
        let doc = json!({"Statement": [{"Condition": {"DateLessThan": {"aws:TokenIssueTime": "2026-11-27T02:00:00Z"}}}]});
        assert_eq!(
            deny_cutoff(&doc).map(|t| t.to_rfc3339()),
            Some("2026-11-27T02:00:00+00:00".into())
        );
        assert_eq!(partition("cn-north-1"), "aws-cn");
        let encoded = percent_encoding::utf8_percent_encode(
            &doc.to_string(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        assert_eq!(decode_policy(&encoded), Some(doc));
    }
}
