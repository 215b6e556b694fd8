//! `firebreak compile`: a built-in playbook to ASL (and its IAM policy).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use firebreak_workflows::step::STEP_RUNNER_RESOURCE;
use serde_json::Value;

use crate::{exit, BadInput};

#[derive(Debug, Args)]
pub(crate) struct CompileArgs {
    /// Playbook name (built-in: ec2-contain).
    pub playbook: String,
    /// Write the definition to this file instead of standard output
    /// (`--output` is the output format in every other command, so files
    /// are `-o/--out`).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also write the IAM policy the step-runner needs to this file.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Put this Lambda ARN in place of the ${StepRunnerArn} placeholder
    /// (what DefinitionSubstitutions does when deployed).
    #[arg(long, value_name = "ARN")]
    pub step_runner_arn: Option<String>,
}

/// Replaces the step-runner placeholder in every Task `Resource`, and in
/// the `FunctionName` of callback tasks (`lambda:invoke.waitForTaskToken`).
pub(crate) fn substitute(definition: &mut Value, arn: &str) {
    match definition {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if (k == "Resource" || k == "FunctionName")
                    && v.as_str() == Some(STEP_RUNNER_RESOURCE)
                {
                    *v = Value::String(arn.to_string());
                } else {
                    substitute(v, arn);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| substitute(v, arn)),
        _ => {}
    }
}

pub(crate) fn run(args: CompileArgs) -> anyhow::Result<u8> {
    let compiled =
        firebreak_playbooks::compile(&args.playbook).map_err(|e| BadInput(e.to_string()))?;
    let mut definition = serde_json::to_value(&compiled.definition)?;
    if let Some(arn) = &args.step_runner_arn {
        if !arn.starts_with("arn:") {
            return Err(BadInput(format!("--step-runner-arn {arn:?} is not an ARN")).into());
        }
        substitute(&mut definition, arn);
    }
    let text = serde_json::to_string_pretty(&definition)? + "\n";
    match &args.out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => out!("{text}"),
    }
    if let Some(path) = &args.policy {
        let policy = serde_json::to_string_pretty(&compiled.policy)? + "\n";
        std::fs::write(path, policy).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::OK)
}
