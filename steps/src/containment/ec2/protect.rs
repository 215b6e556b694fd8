//! Protect the instance and its volumes from termination.

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, EbsInstanceBlockDeviceSpecification,
    InstanceAttributeName, InstanceBlockDeviceMappingSpecification,
};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{describe_instance, InstanceRef};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::ids::InstanceId;
use crate::step::Step;

/// Turns termination protection on, sets the shutdown behaviour to `stop`
/// (a shutdown from inside the instance must not destroy it) and keeps
/// every volume on termination (DeleteOnTermination=false). Reads each
/// back. Idempotent: attributes already right are not written.
#[derive(Debug)]
pub struct ProtectInstance;

/// One EBS volume of the instance and whether it is deleted with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeptVolume {
    /// The EBS volume id (`vol-...`).
    pub volume_id: String,
    /// The device it is attached at (`/dev/xvda`), by which its
    /// DeleteOnTermination is changed.
    pub device_name: String,
    /// Whether terminating the instance deletes the volume; false for every
    /// volume after a live run.
    pub delete_on_termination: bool,
}

/// The protection [`ProtectInstance`] read back after its changes (as
/// found, in a dry run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProtectOutput {
    /// Whether termination protection (`disableApiTermination`) is on.
    pub termination_protection: bool,
    /// The instance-initiated shutdown behaviour: `stop` after a live run
    /// (`terminate` may show in a dry run).
    pub shutdown_behavior: String,
    /// The instance's EBS volumes by device, root included.
    pub volumes: Vec<KeptVolume>,
    /// Whether any attribute was written (false in a dry run, or when all
    /// were already right).
    pub changed: bool,
    /// Whether this was a dry run: each change was only sent with
    /// `DryRun=true`, and the output shows the instance as found.
    pub dry_run: bool,
}

impl StepDef for ProtectInstance {
    const NAME: &'static str = "protect_instance";
    const SUMMARY: &'static str =
        "Termination protection on, shutdown behaviour stop, every volume kept on termination.";
    const MUTATES: bool = true;
    type Input = InstanceRef;
    type Output = ProtectOutput;

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
            Statement::allow(
                [
                    "ec2:DescribeInstanceAttribute",
                    "ec2:ModifyInstanceAttribute",
                ],
                ["arn:aws:ec2:*:*:instance/*"],
            ),
        ]
    }
}

struct Current {
    termination: bool,
    shutdown: String,
    volumes: Vec<KeptVolume>,
}

async fn read(ctx: &StepContext, log: &StepLog<'_>, id: &InstanceId) -> Result<Current, StepError> {
    let instance = describe_instance(ctx, log, id).await?;
    let ec2 = &ctx.aws.ec2;
    log.read(
        "ec2:DescribeInstanceAttribute",
        format!("{id} disableApiTermination"),
    );
    let term = ec2
        .describe_instance_attribute()
        .instance_id(id.as_str())
        .attribute(InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeInstanceAttribute", e))?;
    log.read(
        "ec2:DescribeInstanceAttribute",
        format!("{id} instanceInitiatedShutdownBehavior"),
    );
    let shutdown = ec2
        .describe_instance_attribute()
        .instance_id(id.as_str())
        .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeInstanceAttribute", e))?;
    Ok(Current {
        termination: term
            .disable_api_termination()
            .and_then(|a| a.value())
            .unwrap_or(false),
        shutdown: shutdown
            .instance_initiated_shutdown_behavior()
            .and_then(|a| a.value())
            .unwrap_or("stop")
            .to_string(),
        volumes: instance
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                let ebs = m.ebs()?;
                Some(KeptVolume {
                    volume_id: ebs.volume_id()?.to_string(),
                    device_name: m.device_name()?.to_string(),
                    delete_on_termination: ebs.delete_on_termination().unwrap_or(false),
                })
            })
            .collect(),
    })
}

/// Sends one ModifyInstanceAttribute (or its dry run).
async fn modify(
    ctx: &StepContext,
    log: &StepLog<'_>,
    req: aws_sdk_ec2::operation::modify_instance_attribute::builders::ModifyInstanceAttributeFluentBuilder,
    params: String,
) -> Result<(), StepError> {
    if ctx.is_dry_run() {
        return log.dry_run(
            "ec2:ModifyInstanceAttribute",
            params,
            req.dry_run(true).send().await,
        );
    }
    req.send()
        .await
        .map_err(|e| aws_error(&format!("ec2:ModifyInstanceAttribute ({params})"), e))?;
    log.done("ec2:ModifyInstanceAttribute", params);
    Ok(())
}

#[async_trait]
impl Step for ProtectInstance {
    async fn run(ctx: &StepContext, input: InstanceRef) -> Result<ProtectOutput, StepError> {
        let (_, id) = input.parse()?;
        let log = ctx.log(Self::NAME);
        let ec2 = &ctx.aws.ec2;
        let now = read(ctx, &log, &id).await?;
        let mut changed = false;
        // The three changes are independent: one refused (termination
        // protection on a Spot instance, `stop` on an instance-store root)
        // must not keep the others from happening.
        let mut errors: Vec<StepError> = Vec::new();
        let mut attempt = |r: Result<(), StepError>, changed: &mut bool| match r {
            Ok(()) => *changed = true,
            Err(e) => errors.push(e),
        };
        if !now.termination {
            let req = ec2
                .modify_instance_attribute()
                .instance_id(id.as_str())
                .disable_api_termination(AttributeBooleanValue::builder().value(true).build());
            attempt(
                modify(ctx, &log, req, format!("{id} DisableApiTermination=true")).await,
                &mut changed,
            );
        }
        if now.shutdown != "stop" {
            let req = ec2
                .modify_instance_attribute()
                .instance_id(id.as_str())
                .instance_initiated_shutdown_behavior(
                    AttributeValue::builder().value("stop").build(),
                );
            attempt(
                modify(
                    ctx,
                    &log,
                    req,
                    format!("{id} InstanceInitiatedShutdownBehavior=stop"),
                )
                .await,
                &mut changed,
            );
        }
        let deleting: Vec<&KeptVolume> = now
            .volumes
            .iter()
            .filter(|v| v.delete_on_termination)
            .collect();
        if !deleting.is_empty() {
            let mut req = ec2.modify_instance_attribute().instance_id(id.as_str());
            for v in &deleting {
                req = req.block_device_mappings(
                    InstanceBlockDeviceMappingSpecification::builder()
                        .device_name(&v.device_name)
                        .ebs(
                            EbsInstanceBlockDeviceSpecification::builder()
                                .delete_on_termination(false)
                                .build(),
                        )
                        .build(),
                );
            }
            let devices: Vec<&str> = deleting.iter().map(|v| v.device_name.as_str()).collect();
            attempt(
                modify(
                    ctx,
                    &log,
                    req,
                    format!(
                        "{id} BlockDeviceMappings DeleteOnTermination=false for [{}]",
                        devices.join(", ")
                    ),
                )
                .await,
                &mut changed,
            );
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
        let changed = changed && !ctx.is_dry_run();
        if ctx.is_dry_run() {
            return Ok(ProtectOutput {
                termination_protection: now.termination,
                shutdown_behavior: now.shutdown,
                volumes: now.volumes,
                changed: false,
                dry_run: true,
            });
        }
        let after = if changed {
            read(ctx, &log, &id).await?
        } else {
            now
        };
        let mut wrong = Vec::new();
        if !after.termination {
            wrong.push("termination protection is off".to_string());
        }
        if after.shutdown != "stop" {
            wrong.push(format!("shutdown behaviour is {}", after.shutdown));
        }
        for v in after.volumes.iter().filter(|v| v.delete_on_termination) {
            wrong.push(format!(
                "{} ({}) is still deleted on termination",
                v.volume_id, v.device_name
            ));
        }
        if !wrong.is_empty() {
            return Err(StepError::verification(format!(
                "after protecting {id}: {}",
                wrong.join("; ")
            )));
        }
        Ok(ProtectOutput {
            termination_protection: after.termination,
            shutdown_behavior: after.shutdown,
            volumes: after.volumes,
            changed,
            dry_run: false,
        })
    }
}
