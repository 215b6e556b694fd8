//! The notification Lambda: see `firebreak_lambdas::notify`.

use firebreak_lambdas::notify::Notifier;
use firebreak_steps::config::{self, AwsOptions};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let sdk = config::load(&AwsOptions::default()).await?;
    let who = config::identity(&sdk).await.map_err(|e| e.to_string())?;
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let notifier = Notifier::from_env(aws_sdk_sfn::Client::new(&sdk), who.account_id, region)?;
    let notifier = &notifier;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let handled = notifier
            .handle(&event.payload, chrono::Utc::now())
            .await
            .map_err(Diagnostic::from)?;
        lambda_runtime::tracing::info!(
            outcomes = %serde_json::to_string(&handled.outcomes).unwrap_or_default(),
            reason = handled.reason.as_deref().unwrap_or(""),
            "handled"
        );
        serde_json::to_value(&handled).map_err(|e| {
            firebreak_lambdas::diagnostic(firebreak_workflows::ErrorName::Internal, e.to_string())
        })
    }))
    .await
}
