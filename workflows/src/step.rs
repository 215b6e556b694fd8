//! What a step is: a stable name, typed input and output, the error names
//! it can raise and the IAM statements it needs.
//!
//! The definition lives here, in the engine, so that the builder and the
//! compiler can check a playbook without knowing AWS; the implementation
//! (the code that calls AWS) lives in the `steps` crate.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error_name::ErrorName;
use crate::iam::Statement;

/// The static description of a step, like an activity definition: its
/// name is what the step-runner dispatches on, so it never changes once
/// released.
pub trait StepDef: 'static {
    /// Stable snake_case name (`isolate_network`).
    const NAME: &'static str;
    /// One sentence for plans, graphs and docs.
    const SUMMARY: &'static str;
    /// Whether the step changes anything in the account (dry-run shows
    /// these calls as planned rather than made).
    const MUTATES: bool;
    /// What the step takes: the Task's input, deserialized. Its JSON Schema is
    /// what the compiler checks the step's input against.
    type Input: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    /// What the step returns; its JSON Schema types what the compiler adds to
    /// the case file.
    type Output: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    /// The error names the step reports (beyond the transient Lambda
    /// ones every task can see).
    fn errors() -> Vec<ErrorName>;
    /// The IAM statements the step-runner needs to run this step.
    fn iam() -> Vec<Statement>;
}

/// A step's definition with the types erased: what the builder, compiler,
/// graphs and the step-runner registry keep.
#[derive(Clone, Debug)]
pub struct StepInfo {
    /// The stable name the step-runner dispatches on ([`StepDef::NAME`]).
    pub name: &'static str,
    /// One sentence describing the step ([`StepDef::SUMMARY`]).
    pub summary: &'static str,
    /// Whether the step changes anything in the account ([`StepDef::MUTATES`]).
    pub mutates: bool,
    /// The JSON Schema of [`StepDef::Input`].
    pub input_schema: Value,
    /// The JSON Schema of [`StepDef::Output`].
    pub output_schema: Value,
    /// The error names the step can report ([`StepDef::errors`]).
    pub errors: Vec<ErrorName>,
    /// The IAM statements the step-runner needs for it ([`StepDef::iam`]).
    pub iam: Vec<Statement>,
}

impl StepInfo {
    /// The description of step `S`, with its input and output schemas
    /// generated.
    pub fn of<S: StepDef>() -> StepInfo {
        StepInfo {
            name: S::NAME,
            summary: S::SUMMARY,
            mutates: S::MUTATES,
            input_schema: schemars::schema_for!(S::Input).to_value(),
            output_schema: schemars::schema_for!(S::Output).to_value(),
            errors: S::errors(),
            iam: S::iam(),
        }
    }
}

/// The Task `Resource` of every firebreak step: the step-runner Lambda,
/// filled in by `DefinitionSubstitutions` when deployed.
pub const STEP_RUNNER_RESOURCE: &str = "${StepRunnerArn}";

/// The Task `Resource` of steps that run in a container: an ECS task on
/// Fargate, waited for (`.sync`). For work that needs more time or disk
/// than a Lambda has (memory analysis).
pub const CONTAINER_RESOURCE: &str = "arn:aws:states:::ecs:runTask.sync";

/// The Task `Resource` of steps that wait for a person's answer (an
/// approval): the step-runner is invoked with the task token in the
/// step's input (`task_token`), says who must answer and returns; the
/// state waits until `SendTaskSuccess` or `SendTaskFailure` answers the
/// token (`firebreak approve` / `firebreak deny`).
pub const CALLBACK_RESOURCE: &str = "arn:aws:states:::lambda:invoke.waitForTaskToken";

/// The input field a callback step receives its task token in.
pub const TASK_TOKEN_FIELD: &str = "task_token";

/// The container's name in the task definition, and the prefix of the
/// environment variables that carry a container step's input fields (each
/// holds one field as JSON: `FIREBREAK_INPUT_CASE_ID` is `case_id`).
pub const CONTAINER_NAME: &str = "firebreak";
/// The prefix of the environment variables of a container step:
/// `FIREBREAK_INPUT_` and a field's name in upper case holds that input field
/// as JSON (`FIREBREAK_INPUT` alone, the whole input when one path gives it).
pub const CONTAINER_INPUT_PREFIX: &str = "FIREBREAK_INPUT_";

/// The payload the step-runner receives: which step, its input, and the
/// account it acts in.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct StepPayload {
    /// The name of the step to run ([`StepDef::NAME`]).
    pub step: String,
    /// The step's input, as JSON.
    pub input: Value,
    /// The AWS account the step acts in (the case's, from the workflow's
    /// [`crate::builder::Workflow::acting_in`] path); none: the runner's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// The environment variable that gives a container step its account (as
/// [`StepPayload::account`] does for the step runner).
pub const CONTAINER_ACCOUNT_VAR: &str = "FIREBREAK_ACCOUNT";
