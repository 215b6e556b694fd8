//! Take the instance's Elastic IPs away from it.

use async_trait::async_trait;
use firebreak_forensics::instance_state::ElasticIpRecord;
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{describe_instance, filter, interface_ids, InstanceRef};
use crate::context::StepContext;
use crate::error::{aws_error, StepError};
use crate::step::Step;

/// Disassociates every Elastic IP from the instance's interfaces, so its
/// public addresses stop reaching it (and cannot be used to reach out).
/// The allocations are kept: `release` associates them again as recorded.
/// Idempotent: with nothing associated, nothing is done.
#[derive(Debug)]
pub struct DisassociateElasticIps;

/// What [`DisassociateElasticIps`] took away, for the report (release
/// associates the addresses again from the pre-incident record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ElasticIpsOutput {
    /// The addresses taken away by this run.
    pub disassociated: Vec<ElasticIpRecord>,
    /// Whether any address was disassociated (false in a dry run, or when
    /// none was associated).
    pub changed: bool,
    /// Whether this was a dry run: each disassociation was only sent with
    /// `DryRun=true`, and `disassociated` lists what would be taken.
    pub dry_run: bool,
}

impl StepDef for DisassociateElasticIps {
    const NAME: &'static str = "disassociate_elastic_ips";
    const SUMMARY: &'static str =
        "Disassociate every Elastic IP from the instance's interfaces (kept for release).";
    const MUTATES: bool = true;
    type Input = InstanceRef;
    type Output = ElasticIpsOutput;

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
            Statement::allow(["ec2:DescribeInstances", "ec2:DescribeAddresses"], ["*"]),
            Statement::allow(
                ["ec2:DisassociateAddress"],
                ["arn:aws:ec2:*:*:elastic-ip/*"],
            ),
        ]
    }
}

#[async_trait]
impl Step for DisassociateElasticIps {
    async fn run(ctx: &StepContext, input: InstanceRef) -> Result<ElasticIpsOutput, StepError> {
        let (_, id) = input.parse()?;
        let log = ctx.log(Self::NAME);
        let ec2 = &ctx.aws.ec2;
        let instance = describe_instance(ctx, &log, &id).await?;
        let enis = interface_ids(&instance);
        if enis.is_empty() {
            return Ok(ElasticIpsOutput {
                disassociated: vec![],
                changed: false,
                dry_run: ctx.is_dry_run(),
            });
        }
        log.read(
            "ec2:DescribeAddresses",
            format!("Filters=[network-interface-id=[{}]]", enis.join(", ")),
        );
        let addrs = ec2
            .describe_addresses()
            .filters(filter("network-interface-id", enis.clone()))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeAddresses", e))?;
        let mut taken = Vec::new();
        for a in addrs.addresses() {
            let (Some(alloc), Some(assoc)) = (a.allocation_id(), a.association_id()) else {
                continue;
            };
            let params = format!(
                "AssociationId={assoc} ({} on {})",
                a.public_ip().unwrap_or("?"),
                a.network_interface_id().unwrap_or("?")
            );
            let req = ec2.disassociate_address().association_id(assoc);
            if ctx.is_dry_run() {
                log.dry_run(
                    "ec2:DisassociateAddress",
                    params,
                    req.dry_run(true).send().await,
                )?;
            } else {
                req.send()
                    .await
                    .map_err(|e| aws_error(&format!("ec2:DisassociateAddress {assoc}"), e))?;
                log.done("ec2:DisassociateAddress", params);
            }
            taken.push(ElasticIpRecord {
                allocation_id: alloc.to_string(),
                public_ip: a.public_ip().map(str::to_string),
                association_id: Some(assoc.to_string()),
                network_interface_id: a.network_interface_id().map(str::to_string),
                private_ip: a.private_ip_address().map(str::to_string),
            });
        }
        if !ctx.is_dry_run() && !taken.is_empty() {
            let ids: Vec<String> = taken.iter().map(|t| t.allocation_id.clone()).collect();
            log.read(
                "ec2:DescribeAddresses",
                format!("AllocationIds=[{}]", ids.join(", ")),
            );
            let after = ec2
                .describe_addresses()
                .set_allocation_ids(Some(ids))
                .send()
                .await
                .map_err(|e| aws_error("ec2:DescribeAddresses", e))?;
            let still: Vec<String> = after
                .addresses()
                .iter()
                .filter(|a| a.association_id().is_some())
                .map(|a| a.public_ip().unwrap_or("?").to_string())
                .collect();
            if !still.is_empty() {
                return Err(StepError::verification(format!(
                    "still associated after disassociating: {still:?}"
                )));
            }
        }
        Ok(ElasticIpsOutput {
            changed: !taken.is_empty() && !ctx.is_dry_run(),
            disassociated: taken,
            dry_run: ctx.is_dry_run(),
        })
    }
}
