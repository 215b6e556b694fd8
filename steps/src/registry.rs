//! The step registry: steps by name, dispatched from a Task state's
//! payload. The step-runner Lambda and the local executor both go through
//! [`Registry::dispatch`].

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use firebreak_workflows::exec::{TaskCall, TaskFailure, TaskHandler};
use firebreak_workflows::step::{
    StepInfo, StepPayload, CALLBACK_RESOURCE, CONTAINER_RESOURCE, STEP_RUNNER_RESOURCE,
};
use firebreak_workflows::ErrorName;
use serde_json::Value;

use crate::context::StepContext;
use crate::error::StepError;

pub use crate::step::Step;

#[async_trait]
trait Erased: Send + Sync {
    fn info(&self) -> StepInfo;
    async fn run(&self, ctx: &StepContext, input: Value) -> Result<Value, StepError>;
}

struct Entry<S>(std::marker::PhantomData<fn() -> S>);

#[async_trait]
impl<S: Step> Erased for Entry<S> {
    fn info(&self) -> StepInfo {
        StepInfo::of::<S>()
    }

    async fn run(&self, ctx: &StepContext, input: Value) -> Result<Value, StepError> {
        let input: S::Input = serde_json::from_value(input).map_err(|e| {
            StepError::invalid_input(format!(
                "input of step {} does not match its type: {e}",
                S::NAME
            ))
        })?;
        let output = S::run(ctx, input).await?;
        serde_json::to_value(output).map_err(|e| {
            StepError::new(
                ErrorName::Internal,
                format!("cannot serialise the output of {}: {e}", S::NAME),
            )
        })
    }
}

/// Steps by name.
#[derive(Default)]
pub struct Registry {
    steps: BTreeMap<&'static str, Box<dyn Erased>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.steps.keys()).finish()
    }
}

impl Registry {
    /// An empty registry; add steps with [`Registry::register`].
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds step `S` under its `NAME` (a step already under that name is
    /// replaced).
    pub fn register<S: Step>(mut self) -> Registry {
        self.steps
            .insert(S::NAME, Box::new(Entry::<S>(std::marker::PhantomData)));
        self
    }

    /// What each registered step is, sorted by name: summary, input and
    /// output schemas, errors and the IAM it needs.
    pub fn infos(&self) -> Vec<StepInfo> {
        self.steps.values().map(|s| s.info()).collect()
    }

    /// Whether a step of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.steps.contains_key(name)
    }

    /// Runs the step a payload names.
    pub async fn dispatch(
        &self,
        ctx: &StepContext,
        payload: StepPayload,
    ) -> Result<Value, StepError> {
        let step = self.steps.get(payload.step.as_str()).ok_or_else(|| {
            StepError::new(
                ErrorName::UnknownStep,
                format!(
                    "no step named {:?} (known: {})",
                    payload.step,
                    self.steps.keys().copied().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        step.run(ctx, payload.input).await
    }
}

/// Runs firebreak steps for the local executor: Task states whose resource
/// is the step-runner (the `${StepRunnerArn}` placeholder, or the deployed
/// function's ARN) go to the registry.
#[derive(Clone, Debug)]
pub struct StepRunner {
    registry: Arc<Registry>,
    ctx: StepContext,
    /// Deployed step-runner ARNs also accepted as the resource.
    extra_resources: Vec<String>,
}

impl StepRunner {
    /// A runner that dispatches to `registry` with `ctx`, accepting the
    /// step-runner and container placeholders as resources.
    pub fn new(registry: Arc<Registry>, ctx: StepContext) -> StepRunner {
        StepRunner {
            registry,
            ctx,
            extra_resources: Vec::new(),
        }
    }

    /// Also accepts `arn` (a deployed step-runner function's ARN) as a Task
    /// resource.
    pub fn accept_resource(mut self, arn: impl Into<String>) -> StepRunner {
        self.extra_resources.push(arn.into());
        self
    }

    /// Whether a Task state with this resource is run here: the step-runner
    /// or container placeholder, or an ARN given to
    /// [`StepRunner::accept_resource`].
    pub fn handles(&self, resource: &str) -> bool {
        resource == STEP_RUNNER_RESOURCE
            || resource == CONTAINER_RESOURCE
            || self.extra_resources.iter().any(|r| r == resource)
    }

    /// Whether a callback task (`lambda:invoke.waitForTaskToken`) invokes
    /// the step-runner: its `FunctionName` is one this runner accepts.
    pub fn handles_callback(&self, resource: &str, params: &Value) -> bool {
        resource == CALLBACK_RESOURCE
            && params
                .get("FunctionName")
                .and_then(Value::as_str)
                .is_some_and(|f| self.handles(f))
    }

    /// Runs the step of a callback task (its `Payload`), which asks for the
    /// answer and returns at once. Waiting for the answer to the token is
    /// the host's part (a token store: see
    /// `firebreak_workflows::exec::callback`), as it is Step Functions'
    /// once the Lambda has returned.
    pub async fn start_callback(&self, params: Value) -> Result<Value, TaskFailure> {
        let payload = params.get("Payload").cloned().unwrap_or(Value::Null);
        let payload: StepPayload = serde_json::from_value(payload).map_err(|e| {
            TaskFailure::new(
                ErrorName::InvalidInput.as_str(),
                format!(
                    "the callback's Payload must be {{\"step\": NAME, \"input\": {{...}}}}: {e}"
                ),
            )
        })?;
        let ctx = self.acting(payload.account.as_deref()).await?;
        self.registry
            .dispatch(&ctx, payload)
            .await
            .map_err(|e| TaskFailure::new(e.name.as_str(), e.message))
    }

    /// The context of a step acting in `account` (see
    /// [`StepContext::for_account`]).
    async fn acting(&self, account: Option<&str>) -> Result<StepContext, TaskFailure> {
        self.ctx
            .for_account(account)
            .await
            .map_err(|e| TaskFailure::new(e.name.as_str(), e.message))
    }

    /// A container step (`ecs:runTask.sync`), run here in-process: the
    /// step and its input come from the container override, as
    /// `firebreak step NAME --input-from-env` reads them in the container.
    async fn run_container(&self, params: Value) -> Result<Value, TaskFailure> {
        let bad = |m: String| TaskFailure::new(ErrorName::InvalidInput.as_str(), m);
        let overrides = params
            .pointer("/Overrides/ContainerOverrides/0")
            .ok_or_else(|| bad("no ContainerOverrides in the ecs:runTask parameters".into()))?;
        let command: Vec<&str> = overrides
            .get("Command")
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ["step", name, "--input-from-env"] = command.as_slice() else {
            return Err(bad(format!(
                "the container command {command:?} is not `step NAME --input-from-env`"
            )));
        };
        let vars: Vec<(String, String)> = overrides
            .get("Environment")
            .and_then(Value::as_array)
            .map(|e| {
                e.iter()
                    .filter_map(|v| {
                        Some((
                            v.get("Name")?.as_str()?.to_string(),
                            v.get("Value")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let account = vars
            .iter()
            .find(|(k, _)| k == firebreak_workflows::step::CONTAINER_ACCOUNT_VAR)
            .map(|(_, v)| v.clone());
        let input = input_from_env(vars).map_err(bad)?;
        let ctx = self.acting(account.as_deref()).await?;
        // ECS reports a container that exits non-zero as a failed task.
        let output = self
            .registry
            .dispatch(
                &ctx,
                StepPayload {
                    step: (*name).to_string(),
                    input,
                    account,
                },
            )
            .await
            .map_err(|e| {
                TaskFailure::new(
                    ErrorName::StatesTaskFailed.as_str(),
                    format!("{}: {}", e.name, e.message),
                )
            })?;
        Ok(serde_json::json!({
            "LastStatus": "STOPPED",
            "Containers": [{"Name": firebreak_workflows::step::CONTAINER_NAME, "ExitCode": 0}],
            "Firebreak": output,
        }))
    }
}

/// A container step's input from its environment: `FIREBREAK_INPUT` holds
/// the whole input, or each `FIREBREAK_INPUT_<FIELD>` one field, as JSON.
pub fn input_from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Value, String> {
    use firebreak_workflows::step::CONTAINER_INPUT_PREFIX;
    let mut fields = serde_json::Map::new();
    for (k, v) in vars {
        let parse =
            |v: &str| serde_json::from_str::<Value>(v).map_err(|e| format!("{k} is not JSON: {e}"));
        if k == "FIREBREAK_INPUT" {
            return parse(&v);
        }
        if let Some(field) = k.strip_prefix(CONTAINER_INPUT_PREFIX) {
            fields.insert(field.to_ascii_lowercase(), parse(&v)?);
        }
    }
    if fields.is_empty() {
        return Err("no FIREBREAK_INPUT or FIREBREAK_INPUT_<FIELD> variable".into());
    }
    Ok(Value::Object(fields))
}

#[async_trait]
impl TaskHandler for StepRunner {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        if call.resource == CONTAINER_RESOURCE {
            return self.run_container(call.input).await;
        }
        if call.resource == CALLBACK_RESOURCE {
            // Run alone, the step would ask and the task end at once, as
            // if answered: the host must wait for the token.
            return Err(TaskFailure::new(
                ErrorName::StatesRuntime.as_str(),
                format!(
                    "state '{}' waits for a task token: its host runs the step with start_callback and waits for the answer",
                    call.state_name
                ),
            ));
        }
        if !self.handles(&call.resource) {
            return Err(TaskFailure::new(
                ErrorName::UnknownStep.as_str(),
                format!("no handler for resource {:?}", call.resource),
            ));
        }
        let payload: StepPayload = serde_json::from_value(call.input).map_err(|e| {
            TaskFailure::new(
                ErrorName::InvalidInput.as_str(),
                format!(
                    "the step-runner payload must be {{\"step\": NAME, \"input\": {{...}}}}: {e}"
                ),
            )
        })?;
        let ctx = self.acting(payload.account.as_deref()).await?;
        self.registry
            .dispatch(&ctx, payload)
            .await
            .map_err(|e| TaskFailure::new(e.name.as_str(), e.message))
    }
}
