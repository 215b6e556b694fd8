//! The `firebreak` command line: thin subcommands over the libraries.

mod analyze;
mod compile;
mod decoy;
mod evidence;
mod graph;
mod lime;
mod rehearse;
mod release;
mod respond;
mod session;
mod setup;
mod step;
mod summary;
mod tools;
mod validate;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Serverless incident response for AWS.
#[derive(Debug, Parser)]
#[command(name = "firebreak", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile a built-in playbook to a Step Functions definition.
    Compile(compile::CompileArgs),
    /// Validate Step Functions definitions (exit 0 valid, 2 invalid).
    Validate(validate::ValidateArgs),
    /// Render a playbook or a definition as Mermaid or DOT.
    Graph(graph::GraphArgs),
    /// Run a playbook against an instance now, locally.
    Respond(respond::RespondArgs),
    /// Undo containment: restore the recorded state of an instance.
    Release(release::ReleaseArgs),
    /// Rehearse on a decoy in a sandbox: contain, check, release, check.
    Rehearse(rehearse::RehearseArgs),
    /// Make the evidence bucket (Object Lock, encryption, TLS only).
    Setup(setup::SetupArgs),
    /// Decoy instances to rehearse on (sandbox accounts only).
    Decoy(decoy::DecoyArgs),
    /// A case's evidence: list it, verify its custody, hash files.
    Evidence(evidence::EvidenceArgs),
    /// Check the structure of a LiME or AVML memory image.
    Lime(lime::LimeArgs),
    /// Run Volatility 3 on a captured memory image and record the findings.
    Analyze(analyze::AnalyzeArgs),
    /// The LiME modules and AVML that memory capture sends to hosts.
    Tools(tools::ToolsArgs),
    /// Run one step with a JSON input (what a container step runs).
    Step(step::StepArgs),
}

/// Where AWS is: the standard chain plus these overrides.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Named profile from the AWS config files.
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// AWS region (default: from the environment or profile).
    #[arg(long)]
    pub region: Option<String>,
    /// Custom endpoint for every AWS service (a sandbox such as moto); the
    /// SDK also reads AWS_ENDPOINT_URL.
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

impl AwsArgs {
    pub fn options(&self) -> firebreak_steps::config::AwsOptions {
        firebreak_steps::config::AwsOptions {
            profile: self.profile.clone(),
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

/// Input the user got wrong: reported with exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Exit codes, as documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    /// The run failed (AWS, environment, or a failed execution).
    pub const FAILED: u8 = 1;
    /// Bad input: arguments, files, definitions.
    pub const BAD_INPUT: u8 = 2;
    /// Containment is partial: some steps failed (listed in the summary).
    pub const PARTIAL: u8 = 3;
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::OK
            });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("firebreak: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Compile(a) => compile::run(a),
            Command::Validate(a) => validate::run(a),
            Command::Graph(a) => graph::run(a),
            Command::Respond(a) => respond::run(a).await,
            Command::Decoy(a) => decoy::run(a).await,
            Command::Release(a) => release::run(a).await,
            Command::Setup(a) => setup::run(a).await,
            Command::Rehearse(a) => rehearse::run(a).await,
            Command::Evidence(a) => evidence::run(a).await,
            Command::Lime(a) => lime::run(a).await,
            Command::Analyze(a) => analyze::run(a).await,
            Command::Tools(a) => tools::run(a).await,
            Command::Step(a) => step::run(a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("firebreak: error: {e:#}");
            let code = if e.downcast_ref::<BadInput>().is_some() {
                exit::BAD_INPUT
            } else {
                exit::FAILED
            };
            ExitCode::from(code)
        }
    }
}
