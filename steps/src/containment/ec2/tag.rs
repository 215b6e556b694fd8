//! Tag the instance with its case and status.

use std::collections::BTreeMap;

use async_trait::async_trait;
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{describe_instance, tag, InstanceRef};
use crate::context::StepContext;
use crate::error::{aws_error, StepError};
use crate::step::Step;
use crate::tags;

/// Writes `firebreak:case` and `firebreak:status` on the instance, so
/// anyone looking at it sees it is under investigation, and a later
/// `respond` without `--case` continues the same case. Idempotent: tags
/// already right are not written again.
#[derive(Debug)]
pub struct TagInstance;

/// Where a case stands for an instance: the value of its
/// `firebreak:status` tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Network isolation succeeded (other steps' failures are on the case).
    Contained,
    /// Network isolation did not succeed: the instance may still talk.
    ContainmentFailed,
    /// Release finished: the instance is back in its recorded state; a new
    /// `respond` opens a new case.
    Released,
    /// A release stopped half-way: the instance is not in its recorded
    /// state (the report lists what was done).
    ReleaseFailed,
}

impl CaseStatus {
    /// The tag value: `contained`, `containment-failed`, `released` or
    /// `release-failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Contained => "contained",
            CaseStatus::ContainmentFailed => "containment-failed",
            CaseStatus::Released => "released",
            CaseStatus::ReleaseFailed => "release-failed",
        }
    }
}

/// Input of [`TagInstance`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TagInstanceInput {
    /// The case written to `firebreak:case`, validated as a
    /// [`crate::ids::CaseId`].
    pub case_id: String,
    /// The instance to tag (`i-...`), validated as a
    /// [`crate::ids::InstanceId`].
    pub instance_id: String,
    /// The status written to `firebreak:status`.
    pub status: CaseStatus,
}

/// What [`TagInstance`] wrote (or, in a dry run, would write).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TagOutput {
    /// The `firebreak:case` and `firebreak:status` tags the instance carries
    /// after the step (read back when written; in a dry run, the tags asked for).
    pub tags: BTreeMap<String, String>,
    /// Whether a tag was written (false when both were already right, and in
    /// a dry run).
    pub changed: bool,
}

impl StepDef for TagInstance {
    const NAME: &'static str = "tag_instance";
    const SUMMARY: &'static str = "Tag the instance with the case id and its status.";
    const MUTATES: bool = true;
    type Input = TagInstanceInput;
    type Output = TagOutput;

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
        vec![
            Statement::allow(["ec2:DescribeInstances"], ["*"]),
            Statement::allow(["ec2:CreateTags"], ["arn:aws:ec2:*:*:instance/*"]),
        ]
    }
}

#[async_trait]
impl Step for TagInstance {
    async fn run(ctx: &StepContext, input: TagInstanceInput) -> Result<TagOutput, StepError> {
        let (case, id) = InstanceRef {
            case_id: input.case_id.clone(),
            instance_id: input.instance_id.clone(),
        }
        .parse()?;
        let log = ctx.log(Self::NAME);
        let instance = describe_instance(ctx, &log, &id).await?;
        let want = BTreeMap::from([
            (tags::CASE.to_string(), case.to_string()),
            (tags::STATUS.to_string(), input.status.as_str().to_string()),
        ]);
        let current: BTreeMap<String, String> = instance
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect();
        let missing: Vec<(&String, &String)> = want
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .collect();
        if missing.is_empty() {
            return Ok(TagOutput {
                tags: want,
                changed: false,
            });
        }
        let params = format!(
            "Resources=[{id}], Tags=[{}]",
            missing
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut req = ctx.aws.ec2.create_tags().resources(id.as_str());
        for (k, v) in &missing {
            req = req.tags(tag(k, v));
        }
        if ctx.is_dry_run() {
            log.dry_run("ec2:CreateTags", params, req.dry_run(true).send().await)?;
            return Ok(TagOutput {
                tags: want,
                changed: false,
            });
        }
        req.send()
            .await
            .map_err(|e| aws_error(&format!("ec2:CreateTags {id}"), e))?;
        log.done("ec2:CreateTags", params);
        let after = describe_instance(ctx, &log, &id).await?;
        for (k, v) in &want {
            let got = after
                .tags()
                .iter()
                .find(|t| t.key() == Some(k.as_str()))
                .and_then(|t| t.value());
            if got != Some(v.as_str()) {
                return Err(StepError::verification(format!(
                    "tag {k} on {id} reads {got:?} after writing {v:?}"
                )));
            }
        }
        Ok(TagOutput {
            tags: want,
            changed: true,
        })
    }
}

/// The case an instance is tagged with and where it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseTag {
    /// The `firebreak:case` tag, when the instance has one that is a valid
    /// case id (an invalid value reads as None).
    pub case: Option<crate::ids::CaseId>,
    /// The `firebreak:status` tag (`contained`, `released`, ...).
    pub status: Option<String>,
}

impl CaseTag {
    /// The case, if it is still open (contained or containment failed,
    /// not released): `respond` without `--case` continues it. A released
    /// instance starts a new case, with new evidence.
    pub fn open(&self) -> Option<&crate::ids::CaseId> {
        let open = matches!(
            self.status.as_deref(),
            Some(s) if s == CaseStatus::Contained.as_str()
                || s == CaseStatus::ContainmentFailed.as_str()
                || s == CaseStatus::ReleaseFailed.as_str()
        );
        self.case.as_ref().filter(|_| open)
    }

    /// The case, if it was released (closed).
    pub fn released(&self) -> Option<&crate::ids::CaseId> {
        self.case
            .as_ref()
            .filter(|_| self.status.as_deref() == Some(CaseStatus::Released.as_str()))
    }
}

/// Reads the instance's case tags (failing with `InstanceNotFound` when
/// there is no such instance).
pub async fn case_tag(
    ctx: &StepContext,
    id: &crate::ids::InstanceId,
) -> Result<CaseTag, StepError> {
    let log = ctx.log("respond");
    let instance = describe_instance(ctx, &log, id).await?;
    let tag = |key: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    Ok(CaseTag {
        case: tag(tags::CASE).and_then(|v| v.parse().ok()),
        status: tag(tags::STATUS),
    })
}

/// The case an instance is tagged with, if it is still open (see
/// [`CaseTag::open`]).
pub async fn open_case(
    ctx: &StepContext,
    id: &crate::ids::InstanceId,
) -> Result<Option<crate::ids::CaseId>, StepError> {
    Ok(case_tag(ctx, id).await?.open().cloned())
}
