//! Firebreak's deny policies on a role, in IAM: the managed policies
//! (read, written as a new default version, attached, deleted once they
//! deny nothing) and the role-wide inline fallback.
//!
//! Two containments of instances sharing a role can write the same
//! policy at once. Each writes a new version from what it read, then
//! reads the default version back; if its instance is missing (the other
//! write won), it merges again from the new default. The sizes are
//! measured against IAM's quotas before writing: moto does not enforce
//! them, AWS refuses what exceeds them.

use chrono::{DateTime, Utc};
use firebreak_workflows::ErrorName;

use super::denies::{
    managed_policy_name, policy_chars, role_wide_cutoff, role_wide_document, stored_chars, Denies,
    MANAGED_POLICY_MAX_CHARS, POLICY_PATH, POLICY_VERSIONS_MAX, ROLE_INLINE_MAX_CHARS,
    ROLE_MANAGED_POLICIES_MAX, ROLE_WIDE_POLICY,
};
use super::{decode_policy, partition, role_policy};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, required, StepError};

/// Merge-and-verify rounds against concurrent writers.
const WRITE_ROUNDS: usize = 6;

/// One of firebreak's managed policies on a role.
#[derive(Clone, Debug)]
pub struct RolePolicy {
    /// The policy's ARN (`arn:aws:iam::ACCOUNT:policy/firebreak/NAME`).
    pub arn: String,
    /// Its name: `firebreak-deny-sessions-ROLE`, or with `-2`, `-3`, ... when
    /// an earlier one was full.
    pub name: String,
    /// What its default version denies (nothing, if the document could not
    /// be decoded).
    pub denies: Denies,
    /// The default version's size as IAM counts it.
    pub chars: usize,
}

/// What a role's policies deny, as read.
#[derive(Clone, Debug, Default)]
pub struct RoleDenies {
    /// Firebreak's managed policies attached to the role (under the
    /// `/firebreak/` path, named for the role), sorted by name.
    pub policies: Vec<RolePolicy>,
    /// Managed policies attached to the role, firebreak's and others'.
    pub attached: usize,
}

impl RoleDenies {
    /// The policy denying this instance's sessions issued before a cut-off,
    /// with that cut-off; None when none does.
    pub fn cutoff_of(&self, instance: &str) -> Option<(String, DateTime<Utc>)> {
        self.policies
            .iter()
            .find_map(|p| p.denies.cutoff_of(instance).map(|t| (p.arn.clone(), t)))
    }
    /// The ARN of the policy denying this instance's credentials outside its
    /// VPC; None when none does.
    pub fn outside_vpc(&self, instance: &str) -> Option<String> {
        self.policies
            .iter()
            .find(|p| p.denies.outside_vpc.contains(instance))
            .map(|p| p.arn.clone())
    }
}

/// What to add for an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deny {
    /// Its credentials used outside its VPC.
    OutsideVpc,
    /// Its sessions issued before the cut-off.
    Before(DateTime<Utc>),
}

/// What adding a deny came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    /// In a managed policy (`changed` false when it already was); the
    /// cut-off in force for [`Deny::Before`] (an earlier one is kept).
    Managed {
        /// The policy that holds the deny.
        arn: String,
        /// For [`Deny::Before`], the cut-off in force (an earlier one already in
        /// the policy is kept); None for [`Deny::OutsideVpc`].
        cutoff: Option<DateTime<Utc>>,
        /// Whether a policy version was written or a policy created.
        changed: bool,
    },
    /// No room left within IAM's quotas (why).
    NoRoom(String),
    /// Dry run: what would be written.
    Planned,
}

/// The denies of one of firebreak's policies. A document that does not
/// parse is an error: read as "denies nothing", the next change would write
/// a version without the denies it holds.
fn denies_of(arn: &str, text: &str) -> Result<Denies, StepError> {
    decode_policy(text)
        .map(|d| Denies::from_document(&d))
        .ok_or_else(|| {
            StepError::new(
                ErrorName::AwsRequestFailed,
                format!("the default version of firebreak's policy {arn} is not a JSON policy document: not changed (its denies would be lost); fix or delete it by hand"),
            )
        })
}

/// Firebreak's managed policies on a role, with their default documents.
pub async fn read_role(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
) -> Result<RoleDenies, StepError> {
    log.read("iam:ListAttachedRolePolicies", format!("RoleName={role}"));
    let mut attached = Vec::new();
    let mut pages = ctx
        .aws
        .iam
        .list_attached_role_policies()
        .role_name(role)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| aws_error(&format!("iam:ListAttachedRolePolicies {role}"), e))?;
        attached.extend(page.attached_policies().iter().cloned());
    }
    let mut out = RoleDenies {
        policies: Vec::new(),
        attached: attached.len(),
    };
    for p in attached {
        let (Some(arn), Some(name)) = (p.policy_arn(), p.policy_name()) else {
            continue;
        };
        if !arn.contains(&format!(":policy{POLICY_PATH}"))
            || !name.starts_with(&managed_policy_name(role, 1))
        {
            continue;
        }
        let Some(text) = default_document(ctx, log, arn).await? else {
            continue;
        };
        let denies = denies_of(arn, &text)?;
        out.policies.push(RolePolicy {
            arn: arn.to_string(),
            name: name.to_string(),
            denies,
            chars: stored_chars(&decoded(&text)),
        });
    }
    out.policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn decoded(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| raw.to_string())
}

/// The default version's document of a managed policy (URL-encoded, as
/// IAM returns it); None when the policy is gone.
async fn default_document(
    ctx: &StepContext,
    log: &StepLog<'_>,
    arn: &str,
) -> Result<Option<String>, StepError> {
    log.read("iam:GetPolicy", format!("PolicyArn={arn}"));
    let policy = match ctx.aws.iam.get_policy().policy_arn(arn).send().await {
        Ok(p) => p,
        Err(e) if error_code(&e).as_deref() == Some("NoSuchEntity") => return Ok(None),
        Err(e) => return Err(aws_error(&format!("iam:GetPolicy {arn}"), e)),
    };
    let Some(version) = policy.policy().and_then(|p| p.default_version_id()) else {
        return Ok(None);
    };
    log.read(
        "iam:GetPolicyVersion",
        format!("PolicyArn={arn}, VersionId={version}"),
    );
    match ctx
        .aws
        .iam
        .get_policy_version()
        .policy_arn(arn)
        .version_id(version)
        .send()
        .await
    {
        Ok(v) => Ok(v
            .policy_version()
            .and_then(|v| v.document())
            .map(str::to_string)),
        Err(e) if error_code(&e).as_deref() == Some("NoSuchEntity") => Ok(None),
        Err(e) => Err(aws_error(&format!("iam:GetPolicyVersion {arn}"), e)),
    }
}

/// Writes a document as the policy's new default version, first deleting
/// the oldest other version when IAM's five are used.
async fn write_version(
    ctx: &StepContext,
    log: &StepLog<'_>,
    arn: &str,
    doc: &serde_json::Value,
    what: &str,
) -> Result<(), StepError> {
    let iam = &ctx.aws.iam;
    log.read("iam:ListPolicyVersions", format!("PolicyArn={arn}"));
    let versions = iam
        .list_policy_versions()
        .policy_arn(arn)
        .send()
        .await
        .map_err(|e| aws_error(&format!("iam:ListPolicyVersions {arn}"), e))?;
    let mut old: Vec<_> = versions
        .versions()
        .iter()
        .filter(|v| !v.is_default_version())
        .collect();
    if versions.versions().len() >= POLICY_VERSIONS_MAX {
        old.sort_by_key(|v| v.create_date().map(|d| d.secs()));
        if let Some(v) = old.first().and_then(|v| v.version_id()) {
            match iam
                .delete_policy_version()
                .policy_arn(arn)
                .version_id(v)
                .send()
                .await
            {
                Ok(_) => log.done(
                    "iam:DeletePolicyVersion",
                    format!("PolicyArn={arn}, VersionId={v} (the oldest: IAM keeps five)"),
                ),
                Err(e) if error_code(&e).as_deref() == Some("NoSuchEntity") => {}
                Err(e) => return Err(aws_error(&format!("iam:DeletePolicyVersion {arn}"), e)),
            }
        }
    }
    iam.create_policy_version()
        .policy_arn(arn)
        .policy_document(doc.to_string())
        .set_as_default(true)
        .send()
        .await
        .map_err(|e| aws_error(&format!("iam:CreatePolicyVersion {arn}"), e))?;
    log.done(
        "iam:CreatePolicyVersion",
        format!("PolicyArn={arn}, SetAsDefault=true ({what}; {} characters of {MANAGED_POLICY_MAX_CHARS})", policy_chars(doc)),
    );
    Ok(())
}

/// Creates a managed policy under firebreak's path and attaches it.
async fn create_and_attach(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
    name: &str,
    doc: &serde_json::Value,
    what: &str,
) -> Result<String, StepError> {
    let iam = &ctx.aws.iam;
    let arn = match iam
        .create_policy()
        .policy_name(name)
        .path(POLICY_PATH)
        .description(format!(
            "firebreak: denies sessions of contained instances of role {role}; release removes them"
        ))
        .policy_document(doc.to_string())
        .send()
        .await
    {
        Ok(o) => {
            log.done(
                "iam:CreatePolicy",
                format!("PolicyName={name}, Path={POLICY_PATH} ({what}; {} characters of {MANAGED_POLICY_MAX_CHARS})", policy_chars(doc)),
            );
            required(
                &format!("iam:CreatePolicy {name}"),
                "an Arn",
                o.policy().and_then(|p| p.arn()),
            )?
        }
        // Left by a run that died before attaching it: take it over.
        Err(e) if error_code(&e).as_deref() == Some("EntityAlreadyExists") => {
            let arn = format!(
                "arn:{}:iam::{}:policy{POLICY_PATH}{name}",
                partition(&ctx.region),
                ctx.account_id
            );
            write_version(ctx, log, &arn, doc, what).await?;
            arn
        }
        Err(e) => return Err(aws_error(&format!("iam:CreatePolicy {name}"), e)),
    };
    iam.attach_role_policy()
        .role_name(role)
        .policy_arn(&arn)
        .send()
        .await
        .map_err(|e| aws_error(&format!("iam:AttachRolePolicy {role}"), e))?;
    log.done(
        "iam:AttachRolePolicy",
        format!("RoleName={role}, PolicyArn={arn}"),
    );
    Ok(arn)
}

/// Detaches and deletes a managed policy that denies nothing any more.
async fn delete_policy(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
    arn: &str,
) -> Result<(), StepError> {
    let iam = &ctx.aws.iam;
    match iam
        .detach_role_policy()
        .role_name(role)
        .policy_arn(arn)
        .send()
        .await
    {
        Ok(_) => log.done(
            "iam:DetachRolePolicy",
            format!("RoleName={role}, PolicyArn={arn} (it denies nothing any more)"),
        ),
        Err(e) if error_code(&e).as_deref() == Some("NoSuchEntity") => {}
        Err(e) => return Err(aws_error(&format!("iam:DetachRolePolicy {role}"), e)),
    }
    let versions = match iam.list_policy_versions().policy_arn(arn).send().await {
        Ok(v) => v,
        Err(e) if error_code(&e).as_deref() == Some("NoSuchEntity") => return Ok(()),
        Err(e) => return Err(aws_error(&format!("iam:ListPolicyVersions {arn}"), e)),
    };
    for v in versions
        .versions()
        .iter()
        .filter(|v| !v.is_default_version())
    {
        if let Some(id) = v.version_id() {
            iam.delete_policy_version()
                .policy_arn(arn)
                .version_id(id)
                .send()
                .await
                .map_err(|e| aws_error(&format!("iam:DeletePolicyVersion {arn}"), e))?;
        }
    }
    match iam.delete_policy().policy_arn(arn).send().await {
        Ok(_) => {
            log.done("iam:DeletePolicy", format!("PolicyArn={arn}"));
            Ok(())
        }
        // Attached elsewhere by someone, or already gone: leave it.
        Err(e)
            if matches!(
                error_code(&e).as_deref(),
                Some("NoSuchEntity") | Some("DeleteConflict")
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(aws_error(&format!("iam:DeletePolicy {arn}"), e)),
    }
}

fn with_instance(d: &Denies, instance: &str, deny: Deny) -> Denies {
    let mut d = d.clone();
    match deny {
        Deny::OutsideVpc => {
            d.outside_vpc.insert(instance.to_string());
        }
        Deny::Before(t) => {
            d.before.entry(t).or_default().insert(instance.to_string());
        }
    }
    d
}

fn present(r: &RoleDenies, instance: &str, deny: Deny) -> Option<(String, Option<DateTime<Utc>>)> {
    match deny {
        Deny::OutsideVpc => r.outside_vpc(instance).map(|a| (a, None)),
        Deny::Before(_) => r.cutoff_of(instance).map(|(a, t)| (a, Some(t))),
    }
}

/// Adds a deny for an instance to the role's managed policies: into the
/// first with room, else a new one, within IAM's quotas (6,144 characters
/// a policy, 10 managed policies a role). An instance already denied
/// keeps its earlier cut-off.
pub async fn add_deny(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
    instance: &str,
    deny: Deny,
) -> Result<Added, StepError> {
    let what = match deny {
        Deny::OutsideVpc => format!("deny {instance}'s credentials outside its VPC"),
        Deny::Before(t) => format!(
            "deny {instance}'s sessions issued before {}",
            t.to_rfc3339()
        ),
    };
    for _ in 0..WRITE_ROUNDS {
        let r = read_role(ctx, log, role).await?;
        if let Some((arn, cutoff)) = present(&r, instance, deny) {
            return Ok(Added::Managed {
                arn,
                cutoff,
                changed: false,
            });
        }
        if ctx.is_dry_run() {
            log.not_checked(
                "iam:CreatePolicyVersion",
                format!("a firebreak policy of role {role}: {what}"),
                format!("IAM has no dry run; needs iam:CreatePolicyVersion (or iam:CreatePolicy and iam:AttachRolePolicy) on role {role}"),
            );
            return Ok(Added::Planned);
        }
        let fits = r.policies.iter().find_map(|p| {
            let doc = with_instance(&p.denies, instance, deny).document()?;
            (policy_chars(&doc) <= MANAGED_POLICY_MAX_CHARS).then(|| (p.arn.clone(), doc))
        });
        let arn = match fits {
            Some((arn, doc)) => {
                write_version(ctx, log, &arn, &doc, &what).await?;
                arn
            }
            None if r.attached < ROLE_MANAGED_POLICIES_MAX => {
                let n = (1..=ROLE_MANAGED_POLICIES_MAX + 1)
                    .find(|n| !r.policies.iter().any(|p| p.name == managed_policy_name(role, *n)))
                    .unwrap_or(1);
                let doc = with_instance(&Denies::default(), instance, deny)
                    .document()
                    .unwrap_or_default();
                create_and_attach(ctx, log, role, &managed_policy_name(role, n), &doc, &what).await?
            }
            None => {
                return Ok(Added::NoRoom(format!(
                    "role {role} has {} managed policies attached (IAM allows {ROLE_MANAGED_POLICIES_MAX}) and firebreak's {} are full ({MANAGED_POLICY_MAX_CHARS} characters each)",
                    r.attached,
                    r.policies.len()
                )))
            }
        };
        // Read back: a concurrent writer may have replaced the version.
        let again = read_role(ctx, log, role).await?;
        if let Some((arn, cutoff)) = present(&again, instance, deny) {
            return Ok(Added::Managed {
                arn,
                cutoff,
                changed: true,
            });
        }
        log.progress(&format!(
            "{arn} was rewritten by another containment at the same time; merging again"
        ));
    }
    Err(StepError::new(
        ErrorName::VerificationFailed,
        format!("the deny for {instance} on role {role} did not hold after {WRITE_ROUNDS} rounds of concurrent writes"),
    ))
}

/// Takes an instance out of the role's managed policies: its outside-VPC
/// deny when `outside_vpc`, its cut-off deny when `before` says so for
/// that cut-off. A policy left denying nothing is detached and deleted.
/// Returns what was done.
pub async fn remove_deny(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
    instance: &str,
    outside_vpc: bool,
    before: &(dyn Fn(DateTime<Utc>) -> bool + Sync),
) -> Result<Vec<String>, StepError> {
    let mut done = Vec::new();
    for _ in 0..WRITE_ROUNDS {
        let r = read_role(ctx, log, role).await?;
        let mut pending = false;
        for p in &r.policies {
            let drop_before = p.denies.cutoff_of(instance).is_some_and(before);
            let mut d = p.denies.clone();
            if !d.remove(instance, outside_vpc, drop_before) {
                continue;
            }
            pending = true;
            if ctx.is_dry_run() {
                log.not_checked(
                    "iam:CreatePolicyVersion",
                    format!("PolicyArn={}: without {instance}", p.arn),
                    "IAM has no dry run; needs iam:CreatePolicyVersion (iam:DetachRolePolicy and iam:DeletePolicy when it empties)",
                );
                continue;
            }
            match d.document() {
                Some(doc) => {
                    write_version(ctx, log, &p.arn, &doc, &format!("release {instance}")).await?;
                    done.push(format!(
                        "iam:CreatePolicyVersion {} without {instance}",
                        p.arn
                    ));
                }
                None => {
                    delete_policy(ctx, log, role, &p.arn).await?;
                    done.push(format!(
                        "iam:DeletePolicy {} (denied only {instance})",
                        p.arn
                    ));
                }
            }
        }
        if !pending || ctx.is_dry_run() {
            return Ok(done);
        }
    }
    Err(StepError::new(
        ErrorName::VerificationFailed,
        format!("{instance} kept coming back in role {role}'s deny policies (concurrent writes)"),
    ))
}

/// The role-wide fallback in force on a role, if any.
pub async fn role_wide(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
) -> Result<Option<DateTime<Utc>>, StepError> {
    Ok(role_policy(ctx, log, role, ROLE_WIDE_POLICY)
        .await?
        .and_then(|d| role_wide_cutoff(&d)))
}

/// The characters of the role's inline policies other than `except`.
async fn inline_chars(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
    except: &str,
) -> Result<usize, StepError> {
    log.read("iam:ListRolePolicies", format!("RoleName={role}"));
    let mut names = Vec::new();
    let mut pages = ctx
        .aws
        .iam
        .list_role_policies()
        .role_name(role)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error(&format!("iam:ListRolePolicies {role}"), e))?;
        names.extend(page.policy_names().iter().cloned());
    }
    let mut total = 0;
    for n in names.iter().filter(|n| n.as_str() != except) {
        if let Some(doc) = role_policy(ctx, log, role, n).await? {
            total += policy_chars(&doc);
        }
    }
    Ok(total)
}

/// Writes (or moves forward) the role-wide deny: every session of the
/// role issued before the cut-off. Returns the cut-off in force.
pub async fn add_role_wide(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
    cutoff: DateTime<Utc>,
) -> Result<DateTime<Utc>, StepError> {
    let existing = role_wide(ctx, log, role).await?;
    if existing.is_some_and(|t| t >= cutoff) {
        return Ok(existing.unwrap_or(cutoff));
    }
    let doc = role_wide_document(cutoff);
    let others = inline_chars(ctx, log, role, ROLE_WIDE_POLICY).await?;
    if others + policy_chars(&doc) > ROLE_INLINE_MAX_CHARS {
        return Err(StepError::new(
            ErrorName::AwsRequestFailed,
            format!(
                "role {role}'s inline policies hold {others} characters: the role-wide deny ({} more) would pass IAM's {ROLE_INLINE_MAX_CHARS}",
                policy_chars(&doc)
            ),
        ));
    }
    let params = format!(
        "RoleName={role}, PolicyName={ROLE_WIDE_POLICY}: deny EVERY session of the role issued before {} (no room for a per-instance deny)",
        cutoff.to_rfc3339()
    );
    if ctx.is_dry_run() {
        log.not_checked(
            "iam:PutRolePolicy",
            params,
            format!("IAM has no dry run; needs iam:PutRolePolicy on role {role}"),
        );
        return Ok(cutoff);
    }
    ctx.aws
        .iam
        .put_role_policy()
        .role_name(role)
        .policy_name(ROLE_WIDE_POLICY)
        .policy_document(doc.to_string())
        .send()
        .await
        .map_err(|e| aws_error(&format!("iam:PutRolePolicy {role}"), e))?;
    log.done("iam:PutRolePolicy", params);
    Ok(cutoff)
}

/// Deletes the role-wide deny.
pub async fn remove_role_wide(
    ctx: &StepContext,
    log: &StepLog<'_>,
    role: &str,
) -> Result<bool, StepError> {
    let params = format!("RoleName={role}, PolicyName={ROLE_WIDE_POLICY}");
    if ctx.is_dry_run() {
        log.not_checked(
            "iam:DeleteRolePolicy",
            params,
            "IAM has no dry run; needs iam:DeleteRolePolicy",
        );
        return Ok(false);
    }
    match ctx
        .aws
        .iam
        .delete_role_policy()
        .role_name(role)
        .policy_name(ROLE_WIDE_POLICY)
        .send()
        .await
    {
        Ok(_) => {
            log.done("iam:DeleteRolePolicy", params);
            Ok(true)
        }
        Err(e) if error_code(&e).as_deref() == Some("NoSuchEntity") => Ok(false),
        Err(e) => Err(aws_error(&format!("iam:DeleteRolePolicy {role}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_that_does_not_parse_is_an_error_not_no_denies() {
        let arn = "arn:aws:iam::123456789012:policy/firebreak/x";
        let e = denies_of(arn, "%7B%22Version").expect_err("not JSON");
        assert!(e.message.contains(arn), "{}", e.message);
        assert!(denies_of(
            arn,
            "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D"
        )
        .is_ok());
    }
}
