//! The step runner: `{"step": NAME, "input": {...}}`, the payload the
//! compiled definitions send, runs that step; a failed step's error name
//! is the invocation's `errorType`, so the compiled Retry and Catch behave
//! in AWS as in the local executor.

use firebreak_steps::config::{self, AwsOptions};
use firebreak_steps::context::AwsClients;
use firebreak_steps::{Mode, Registry, StepContext};
use firebreak_workflows::step::StepPayload;
use firebreak_workflows::ErrorName;
use lambda_runtime::Diagnostic;
use serde_json::Value;

use crate::diagnostic;

/// The steps and the AWS context they run in, made once per Lambda
/// instance (cold start) and reused by every invocation.
#[derive(Debug)]
pub struct Runner {
    registry: Registry,
    ctx: StepContext,
}

impl Runner {
    /// The runner of the function's own account and region (from the
    /// Lambda environment: its role's credentials, `AWS_REGION`, and
    /// `AWS_ENDPOINT_URL` for a sandbox), announcing to
    /// `FIREBREAK_NOTIFY_TOPIC` and `FIREBREAK_WEBHOOK_URL` when set.
    pub async fn from_env() -> Result<Runner, Diagnostic> {
        let sdk = config::load(&AwsOptions::default())
            .await
            .map_err(|e| diagnostic(ErrorName::InvalidInput, e.to_string()))?;
        Runner::new(&sdk).await
    }

    /// The runner of the account and region `sdk` is for (the caller's
    /// identity from STS), announcing where the environment says.
    pub async fn new(sdk: &aws_config::SdkConfig) -> Result<Runner, Diagnostic> {
        let sdk = sdk.clone();
        let who = config::identity(&sdk)
            .await
            .map_err(|e| diagnostic(ErrorName::AccessDenied, e.to_string()))?;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| diagnostic(ErrorName::InvalidInput, "no AWS region (AWS_REGION)"))?;
        // Announcements and approval requests go where the deployment
        // says (FIREBREAK_NOTIFY_TOPIC, FIREBREAK_WEBHOOK_URL).
        let ctx = StepContext::new(AwsClients::new(&sdk), Mode::Live, who.account_id, region)
            .with_notify(firebreak_steps::context::NotifyTargets::from_env());
        Ok(Runner {
            registry: Registry::standard(),
            ctx,
        })
    }

    /// Runs the step the payload names.
    pub async fn handle(&self, payload: Value) -> Result<Value, Diagnostic> {
        let payload: StepPayload = serde_json::from_value(payload).map_err(|e| {
            diagnostic(
                ErrorName::InvalidInput,
                format!("the payload is not {{\"step\": NAME, \"input\": {{...}}}}: {e}"),
            )
        })?;
        if !self.registry.contains(&payload.step) {
            return Err(diagnostic(
                ErrorName::InvalidInput,
                format!("no step named {:?}", payload.step),
            ));
        }
        // A case in another account acts through its firebreak-responder
        // role; evidence stays in this account's bucket.
        let ctx = self
            .ctx
            .for_account(payload.account.as_deref())
            .await
            .map_err(|e| diagnostic(e.name, e.message))?;
        self.registry
            .dispatch(&ctx, payload)
            .await
            .map_err(|e| diagnostic(e.name, e.message))
    }
}
