//! `firebreak approve` and `firebreak deny`: answer a run that waits for
//! approval before its first change. A run of this machine's local
//! executor waits in the token store (the state directory); a run in Step
//! Functions is answered with SendTaskSuccess / SendTaskFailure.

use clap::Args;
use firebreak_workflows::exec::callback::{Answer, CallbackError, CallbackStore as _};
use firebreak_workflows::ErrorName;
use serde_json::json;

use crate::session::Session;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// The token the waiting run announced.
    pub token: String,
    /// A note kept with the approval (the run's result and report).
    #[arg(long)]
    pub note: Option<String>,
    /// The run is in Step Functions (SendTaskSuccess), not on this
    /// machine. A token longer than a local one is sent there anyway.
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DenyArgs {
    /// The token the waiting run announced.
    pub token: String,
    /// Why: kept as the cause of the run's end.
    #[arg(long)]
    pub reason: String,
    /// The run is in Step Functions (SendTaskFailure), not on this machine.
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Who answers, on this machine: the login name.
fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| format!("{u} (local)"))
        .unwrap_or_else(|_| "an unnamed local user".into())
}

/// Where the token waits: `Some(store)` on this machine, `None` in Step
/// Functions.
fn local_store(
    token: &str,
    remote: bool,
) -> anyhow::Result<Option<firebreak_workflows::exec::callback::FileStore>> {
    if remote {
        return Ok(None);
    }
    let store = crate::session::token_store()?;
    match store.look(token) {
        // Not a token of the local store's form: one of Step Functions'.
        Err(CallbackError::BadToken(_)) => Ok(None),
        // Whether a run waits on it is the answer's to say.
        _ => Ok(Some(store)),
    }
}

/// An answer the local store cannot take, as the user's mistake (exit 2).
fn refused(e: CallbackError) -> anyhow::Error {
    match e {
        CallbackError::Store(m) => anyhow::anyhow!(m),
        e @ CallbackError::NotWaiting { .. } => {
            BadInput(format!("{e}; for a run in Step Functions add --remote")).into()
        }
        e => BadInput(e.to_string()).into(),
    }
}

/// Step Functions' refusal of an answer, named.
fn sfn_refused(call: &str, code: Option<&str>, message: Option<&str>) -> anyhow::Error {
    let what = format!(
        "{call}: {}: {}",
        code.unwrap_or("error"),
        message.unwrap_or("no message")
    );
    match code {
        Some("TaskDoesNotExist" | "TaskTimedOut" | "InvalidToken") => BadInput(format!(
            "{what} (the run no longer waits for this token, or it is not one)"
        ))
        .into(),
        _ => anyhow::anyhow!(what),
    }
}

pub(crate) async fn approve(args: ApproveArgs) -> anyhow::Result<u8> {
    if let Some(store) = local_store(&args.token, args.remote)? {
        let answer = json!({
            "approved_by": local_user(),
            "at": chrono::Utc::now().to_rfc3339(),
            "note": args.note,
        });
        store
            .answer(&args.token, &Answer::Success(answer))
            .map_err(refused)?;
        say!("firebreak approve: approved; the run goes on");
        return Ok(exit::OK);
    }
    let session = Session::open(&args.aws, firebreak_steps::Mode::Live, true).await?;
    let sfn = aws_sdk_sfn::Client::new(&session.config);
    let answer = json!({
        "approved_by": session.who.arn,
        "at": chrono::Utc::now().to_rfc3339(),
        "note": args.note,
    });
    sfn.send_task_success()
        .task_token(&args.token)
        .output(answer.to_string())
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_sfn::error::ProvideErrorMetadata as _;
            sfn_refused("states:SendTaskSuccess", e.code(), e.message())
        })?;
    say!("firebreak approve: approved in Step Functions; the execution goes on");
    Ok(exit::OK)
}

pub(crate) async fn deny(args: DenyArgs) -> anyhow::Result<u8> {
    if args.reason.trim().is_empty() {
        return Err(BadInput("--reason must say why the run is denied".into()).into());
    }
    if let Some(store) = local_store(&args.token, args.remote)? {
        store
            .answer(
                &args.token,
                &Answer::Failure {
                    error: ErrorName::ApprovalDenied.as_str().into(),
                    cause: Some(format!("denied by {}: {}", local_user(), args.reason)),
                },
            )
            .map_err(refused)?;
        say!("firebreak deny: denied; the run ends without changing anything");
        return Ok(exit::OK);
    }
    let session = Session::open(&args.aws, firebreak_steps::Mode::Live, true).await?;
    let sfn = aws_sdk_sfn::Client::new(&session.config);
    sfn.send_task_failure()
        .task_token(&args.token)
        .error(ErrorName::ApprovalDenied.as_str())
        .cause(format!("denied by {}: {}", session.who.arn, args.reason))
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_sfn::error::ProvideErrorMetadata as _;
            sfn_refused("states:SendTaskFailure", e.code(), e.message())
        })?;
    say!("firebreak deny: denied in Step Functions; the execution ends without changing anything");
    Ok(exit::OK)
}
