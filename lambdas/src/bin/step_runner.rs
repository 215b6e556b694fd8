//! The step-runner Lambda: see `firebreak_lambdas::step_runner`.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let runner = firebreak_lambdas::step_runner::Runner::from_env()
        .await
        .map_err(|d| format!("{}: {}", d.error_type, d.error_message))?;
    let runner = &runner;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let out: Result<Value, Diagnostic> = runner.handle(event.payload).await;
        out
    }))
    .await
}
