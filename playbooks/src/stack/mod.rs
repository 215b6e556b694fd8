//! The deployable stack, rendered from the code: the SAM template that runs
//! firebreak in an account (`infra/template.yaml`), the member-account role
//! (`infra/member-role.yaml`), and each built-in playbook's definition and
//! step-runner policy. Pure: it builds documents, `firebreak infra render`
//! writes them.
//!
//! Which step runs where is read from the compiled definitions (a Task on
//! the step runner, a callback through it, or a container task), so each
//! role gets the statements of exactly the steps it runs.

mod resources;
pub mod yaml;

use std::collections::BTreeSet;

use firebreak_workflows::compile::Compiled;
use firebreak_workflows::iam::{PolicyDocument, Statement};
use firebreak_workflows::step::{
    StepInfo, CALLBACK_RESOURCE, CONTAINER_RESOURCE, STEP_RUNNER_RESOURCE,
};
use serde_json::Value;

use crate::PlaybookError;

/// One rendered file: its path under `infra/` and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Relative to the infra directory (`template.yaml`,
    /// `statemachines/ec2-contain.asl.json`, ...).
    pub path: String,
    /// The file's content.
    pub text: String,
}

/// Where a step runs in the deployed stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Runs {
    /// In the step-runner Lambda (a Task or a callback).
    StepRunner,
    /// In the Fargate container task.
    Container,
}

/// A built-in playbook, compiled, with where each of its steps runs.
#[derive(Debug)]
pub struct Playbook {
    /// `ec2-contain`, ...
    pub name: &'static str,
    /// The compiled definition and policy.
    pub compiled: Compiled,
    /// Each step used, with where it runs.
    pub placement: Vec<(String, Runs)>,
}

impl Playbook {
    fn compile(name: &'static str) -> Result<Playbook, PlaybookError> {
        let compiled = crate::compile(name)?;
        let def = serde_json::to_value(&compiled.definition)
            .map_err(|e| PlaybookError::Render(format!("{name}: {e}")))?;
        let mut placement = Vec::new();
        placements(&def, &mut placement);
        placement.sort();
        placement.dedup();
        Ok(Playbook {
            name,
            compiled,
            placement,
        })
    }

    /// The definition as the file `infra/statemachines/NAME.asl.json` holds.
    pub fn definition_text(&self) -> String {
        serde_json::to_string_pretty(&self.compiled.definition).unwrap_or_default() + "\n"
    }

    /// True when some step runs in the container.
    pub fn uses_container(&self) -> bool {
        self.placement.iter().any(|(_, r)| *r == Runs::Container)
    }

    fn infos(&self, runs: Runs) -> impl Iterator<Item = &StepInfo> {
        self.compiled.steps.iter().filter(move |s| {
            self.placement
                .iter()
                .any(|(n, r)| n == s.name && *r == runs)
        })
    }
}

/// Collects the steps Task states run: `Parameters.step` of step-runner
/// tasks, `Parameters.Payload.step` of callbacks, the container command's
/// step of container tasks.
fn placements(v: &Value, out: &mut Vec<(String, Runs)>) {
    match v {
        Value::Object(o) => {
            if o.get("Type").and_then(Value::as_str) == Some("Task") {
                let p = o.get("Parameters");
                let found = match o.get("Resource").and_then(Value::as_str) {
                    Some(STEP_RUNNER_RESOURCE) => {
                        p.and_then(|p| p.get("step")).map(|s| (s, Runs::StepRunner))
                    }
                    Some(CALLBACK_RESOURCE) => p
                        .and_then(|p| p.pointer("/Payload/step"))
                        .map(|s| (s, Runs::StepRunner)),
                    Some(CONTAINER_RESOURCE) => p
                        .and_then(|p| p.pointer("/Overrides/ContainerOverrides/0/Command/1"))
                        .map(|s| (s, Runs::Container)),
                    _ => None,
                };
                if let Some((Value::String(s), r)) = found {
                    out.push((s.clone(), r));
                }
            }
            o.values().for_each(|v| placements(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| placements(v, out)),
        _ => {}
    }
}

/// The statements of the steps that run in `runs`, over every playbook.
fn statements(playbooks: &[Playbook], runs: Runs) -> Vec<Statement> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in playbooks {
        for info in p.infos(runs) {
            if seen.insert(info.name) {
                out.extend(info.iam.iter().cloned());
            }
        }
    }
    out
}

/// Every file `firebreak infra render` writes, in a stable order.
pub fn render() -> Result<Vec<File>, PlaybookError> {
    let playbooks = crate::BUILT_IN
        .iter()
        .map(|n| Playbook::compile(n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut files = Vec::new();
    for p in &playbooks {
        files.push(File {
            path: format!("statemachines/{}.asl.json", p.name),
            text: p.definition_text(),
        });
        files.push(File {
            path: format!("policies/{}.json", p.name),
            text: serde_json::to_string_pretty(&p.compiled.policy).unwrap_or_default() + "\n",
        });
    }
    let runner = PolicyDocument::gather(statements(&playbooks, Runs::StepRunner).iter());
    let container = PolicyDocument::gather(statements(&playbooks, Runs::Container).iter());
    files.push(File {
        path: "template.yaml".into(),
        text: resources::template(&playbooks, &runner, &container)?,
    });
    files.push(File {
        path: "member-role.yaml".into(),
        text: resources::member_role(&runner, &container),
    });
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_role_acts_on_instances_and_keeps_no_evidence() {
        let files = render().unwrap();
        let member = &files
            .iter()
            .find(|f| f.path == "member-role.yaml")
            .unwrap()
            .text;
        for want in [
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:CreateSnapshots",
            "kms:CreateGrant",
        ] {
            assert!(member.contains(want), "{want}");
        }
        for not in [
            "s3:",
            "sns:",
            "kms:Sign",
            "kms:Encrypt\n",
            "kms:GenerateDataKey\n",
        ] {
            assert!(!member.contains(not), "{not}");
        }
        let template = &files
            .iter()
            .find(|f| f.path == "template.yaml")
            .unwrap()
            .text;
        assert!(template.contains("role/firebreak-responder"));
    }

    #[test]
    fn each_step_is_placed_where_its_task_runs() {
        let p = Playbook::compile("ec2-compromise").unwrap();
        let at = |name: &str| p.placement.iter().find(|(n, _)| n == name).map(|(_, r)| *r);
        assert_eq!(at("isolate_network"), Some(Runs::StepRunner));
        assert_eq!(at("request_approval"), Some(Runs::StepRunner));
        assert_eq!(at("analyze_memory"), Some(Runs::Container));
        assert_eq!(at("hash_snapshots"), Some(Runs::Container));
        // Every compiled step is placed somewhere.
        for s in &p.compiled.steps {
            assert!(at(s.name).is_some(), "{} has no place", s.name);
        }
    }
}
