//! The cases of an account, for `firebreak cases`: each case's record in
//! the evidence bucket (which instance, when it was opened) and where it
//! stands from the instances' tags. Reads only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::context::StepContext;
use crate::error::{aws_error, StepError};
use crate::tags;

/// One case as AWS shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseSummary {
    /// The case id, from the record's S3 key or the instance's
    /// `firebreak:case` tag.
    pub case_id: String,
    /// The instance its record is of (none when only a tag names it).
    pub instance_id: Option<String>,
    /// When its pre-incident record was stored.
    pub opened_at: Option<DateTime<Utc>>,
    /// `contained`, `containment-failed`, `release-failed`, `released`,
    /// or `unknown` (no tag of this case on its instance: the instance is
    /// gone, or the run stopped before tagging).
    pub status: String,
}

/// Every case with a record in the bucket or a tag on an instance, oldest
/// first.
pub async fn list_cases(ctx: &StepContext, bucket: &str) -> Result<Vec<CaseSummary>, StepError> {
    let log = ctx.log("cases");
    let mut cases: BTreeMap<String, CaseSummary> = BTreeMap::new();
    let mut token = None;
    loop {
        log.read("s3:ListObjectsV2", format!("s3://{bucket}/cases/"));
        let page = ctx
            .aws
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix("cases/")
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| aws_error(&format!("s3:ListObjectsV2 s3://{bucket}/cases/"), e))?;
        for o in page.contents() {
            let Some(key) = o.key() else { continue };
            // cases/CASE/instance-state/INSTANCE.json
            let parts: Vec<&str> = key.split('/').collect();
            let [_, case, "instance-state", file] = parts.as_slice() else {
                continue;
            };
            let Some(instance) = file.strip_suffix(".json") else {
                continue;
            };
            cases.insert(
                case.to_string(),
                CaseSummary {
                    case_id: case.to_string(),
                    instance_id: Some(instance.to_string()),
                    opened_at: o
                        .last_modified()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), 0)),
                    status: "unknown".into(),
                },
            );
        }
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    log.read(
        "ec2:DescribeInstances",
        format!("Filters=[tag-key={}]", tags::CASE),
    );
    let mut pages = ctx
        .aws
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag-key")
                .values(tags::CASE)
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("ec2:DescribeInstances", e))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            let Some(case) = tag(tags::CASE) else {
                continue;
            };
            let instance = i.instance_id().map(str::to_string);
            let status = tag(tags::STATUS).unwrap_or_else(|| "unknown".into());
            cases
                .entry(case.clone())
                .or_insert(CaseSummary {
                    case_id: case.clone(),
                    instance_id: instance.clone(),
                    opened_at: None,
                    status: "unknown".into(),
                })
                .status = status;
            // An older case of the same instance was released before this
            // one opened (a contained instance cannot open a second case).
            for older in cases.values_mut() {
                if older.case_id != case
                    && older.instance_id == instance
                    && older.status == "unknown"
                {
                    older.status = "released".into();
                }
            }
        }
    }
    let mut list: Vec<CaseSummary> = cases.into_values().collect();
    list.sort_by(|a, b| {
        a.opened_at
            .cmp(&b.opened_at)
            .then(a.case_id.cmp(&b.case_id))
    });
    Ok(list)
}
