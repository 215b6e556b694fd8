//! `firebreak step NAME`: run one step with a JSON input and print its
//! output. What the container of a container step runs
//! (`step NAME --input-from-env`), and a tool for operators.

use clap::Args;
use firebreak_steps::registry::input_from_env;
use firebreak_steps::{Mode, Registry};
use firebreak_workflows::step::{StepPayload, CONTAINER_ACCOUNT_VAR};
use firebreak_workflows::ErrorName;

use crate::session::Session;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct StepArgs {
    /// The step (see `firebreak compile --policy` for what each needs).
    pub name: String,
    /// The step's input, as JSON.
    #[arg(
        long,
        conflicts_with = "input_from_env",
        required_unless_present = "input_from_env"
    )]
    pub input: Option<String>,
    /// Read the input from FIREBREAK_INPUT (all of it) or from
    /// FIREBREAK_INPUT_<FIELD> variables (one field each, as JSON).
    #[arg(long)]
    pub input_from_env: bool,
    /// No progress on standard error.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub(crate) async fn run(a: StepArgs) -> anyhow::Result<u8> {
    let registry = Registry::standard();
    if !registry.contains(&a.name) {
        return Err(BadInput(format!("no step named {:?}", a.name)).into());
    }
    let input = match &a.input {
        Some(text) => {
            serde_json::from_str(text).map_err(|e| BadInput(format!("--input is not JSON: {e}")))?
        }
        None => input_from_env(std::env::vars()).map_err(BadInput)?,
    };
    // In the container, the account the step acts in comes with its input.
    let account = a
        .input
        .is_none()
        .then(|| std::env::var(CONTAINER_ACCOUNT_VAR).ok())
        .flatten();
    let session = Session::open(&a.aws, Mode::Live, a.quiet).await?;
    let result = match session.ctx.for_account(account.as_deref()).await {
        Ok(ctx) => {
            registry
                .dispatch(
                    &ctx,
                    StepPayload {
                        step: a.name.clone(),
                        input,
                        account,
                    },
                )
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(out) => {
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(exit::OK)
        }
        Err(e) if e.name == ErrorName::InvalidInput => Err(BadInput(e.to_string()).into()),
        Err(e) => {
            say!("firebreak: step {} failed: {e}", a.name);
            Ok(exit::FAILED)
        }
    }
}
