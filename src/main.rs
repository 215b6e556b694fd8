//! The `firebreak` command line: thin subcommands over the libraries.

/// Writes a line to stderr (progress, warnings) and ignores a failure: a
/// reader that went away (a closed pipe) must not stop a response half way,
/// as `eprintln!` would by panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::live::clear();
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Writes to stdout (the result). A closed pipe is ignored, like `say!`
/// (the exit code still tells the outcome); any other failure (a full
/// disk under `> file`, a hung-up terminal) is said at the end, and a
/// command that would have exited 0 exits 1.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::live::clear();
        let mut stdout = std::io::stdout().lock();
        let r = write!(stdout, $($arg)*).and_then(|()| stdout.flush());
        $crate::output_written(r);
    }};
}

/// `out!` with a newline.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::live::clear();
        let mut stdout = std::io::stdout().lock();
        let r = writeln!(stdout, $($arg)*).and_then(|()| stdout.flush());
        $crate::output_written(r);
    }};
}

/// The first failure to write stdout other than a closed pipe.
static OUTPUT_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Keeps the result of a write to stdout (see `out!`).
fn output_written(r: std::io::Result<()>) {
    if let Err(e) = r {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = OUTPUT_ERROR.set(e.to_string());
        }
    }
}

mod alert;
mod analyze;
mod approve;
mod cases;
mod collect;
mod compile;
mod decoy;
mod evidence;
mod graph;
mod history;
mod infra;
mod lime;
mod rehearse;
mod release;
mod remote;
mod report;
mod respond;
mod respond_many;
mod run;
mod session;
mod setup;
mod status;
mod step;
mod summary;
mod symbols;
mod tools;
mod validate;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serverless incident response for AWS.
#[derive(Debug, Parser)]
#[command(name = "firebreak", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    OnRuntime(OnRuntime),
    /// Run any Step Functions definition in the local executor.
    Run(run::RunArgs),
    /// Finish a journaled run that was interrupted.
    Resume(run::ResumeArgs),
}

/// The commands that run on the shared multi-threaded runtime (`run` and
/// `resume` choose their own: a paused clock for --fast-clock).
#[derive(Debug, Subcommand)]
enum OnRuntime {
    /// Compile a built-in playbook to a Step Functions definition.
    Compile(compile::CompileArgs),
    /// The collection pipeline on local log files: parse, enrich, detect.
    Collect(collect::CollectArgs),
    /// The deployable stack: `infra render` writes infra/ from the code.
    Infra(infra::InfraArgs),
    /// Validate Step Functions definitions (exit 0 valid, 2 invalid).
    Validate(validate::ValidateArgs),
    /// Render a playbook or a definition as Mermaid or DOT.
    Graph(graph::GraphArgs),
    /// Run a playbook against an instance now, locally (or --remote).
    Respond(Box<respond::RespondArgs>),
    /// What a GuardDuty, Security Hub or other alert starts (and start it).
    Alert(alert::AlertArgs),
    /// A case's incident report (Markdown, JSON or HTML).
    Report(report::ReportArgs),
    /// Where a run stands: a local run's name, or an execution ARN.
    Status(status::StatusArgs),
    /// Approve a run that waits for approval (local, or --remote).
    Approve(approve::ApproveArgs),
    /// Deny a run that waits for approval: it ends, having changed nothing.
    Deny(approve::DenyArgs),
    /// Undo containment: restore the recorded state of an instance.
    Release(release::ReleaseArgs),
    /// The account's cases: open, released, failed, with their instance
    /// and the last run on this machine.
    Cases(cases::CasesArgs),
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
    /// ISF symbol tables for memory analysis, kept in the tools bucket by
    /// the kernel banner they were built for.
    Symbols(symbols::SymbolsArgs),
    /// Run one step with a JSON input (what a container step runs).
    Step(step::StepArgs),
    /// Answer a `.waitForTaskToken` task of a local run with its result.
    TaskSuccess(run::TaskSuccessArgs),
    /// Fail a `.waitForTaskToken` task of a local run.
    TaskFailure(run::TaskFailureArgs),
    /// Report that the worker of a `.waitForTaskToken` task is alive.
    TaskHeartbeat(run::TaskHeartbeatArgs),
}

/// Where AWS is: the standard chain plus these overrides.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Named profile from the AWS config files. It wins over credentials
    /// in the environment, as with the AWS CLI (AWS_PROFILE, read by the
    /// SDK, does not).
    #[arg(long)]
    pub profile: Option<String>,
    /// AWS region (default: from the environment or profile).
    #[arg(long)]
    pub region: Option<String>,
    /// Custom endpoint for every AWS service (a sandbox such as moto); the
    /// SDK also reads AWS_ENDPOINT_URL.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// On an AWS error, print the SDK's whole error as well.
    #[arg(long)]
    pub debug: bool,
}

impl AwsArgs {
    /// The AWS options (profile, region, endpoint) these arguments give.
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

/// Exit codes, as documented in docs/containment-and-release.md.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The run failed (AWS, environment, or a failed execution).
    pub const FAILED: u8 = 1;
    /// Bad input: arguments, files, definitions.
    pub const BAD_INPUT: u8 = 2;
    /// Containment is partial: some steps failed (listed in the summary).
    pub const PARTIAL: u8 = 3;
    /// The run waited for approval and was denied (or timed out): nothing
    /// was changed.
    pub const NOT_APPROVED: u8 = 4;
    /// Stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// The live progress line of long waits on a terminal: one line redrawn
/// in place (a bar when the step says how far it is, the elapsed time and
/// what it waits for); piped, or with `--output json`, progress stays one
/// line per message.
pub mod live {
    use std::io::{IsTerminal as _, Write as _};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A live line is on the screen.
    static SHOWN: AtomicBool = AtomicBool::new(false);

    /// Whether errors are JSON too (`--output json`).
    pub fn json() -> bool {
        super::JSON_ERRORS.load(Ordering::Relaxed)
    }

    /// Whether progress is drawn live.
    pub fn enabled() -> bool {
        !super::JSON_ERRORS.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
    }

    /// Erases the live line, if one is shown, before other output.
    pub fn clear() {
        if SHOWN.swap(false, Ordering::Relaxed) {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }

    /// How far a progress message says its wait is: `3/4` or `40%`.
    pub fn fraction(message: &str) -> Option<f64> {
        let words = message.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')');
        for w in words {
            if let Some((a, b)) = w.split_once('/') {
                if let (Ok(a), Ok(b)) = (a.parse::<f64>(), b.parse::<f64>()) {
                    if b > 0.0 && a <= b {
                        return Some(a / b);
                    }
                }
            }
            if let Some(p) = w.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
                if (0.0..=100.0).contains(&p) {
                    return Some(p / 100.0);
                }
            }
        }
        None
    }

    /// Draws the live line (cut to the terminal's usual width).
    pub fn draw(elapsed: &str, step: &str, message: &str) {
        let bar = fraction(message)
            .map(|f| {
                let full = (f * 20.0).round() as usize;
                format!(
                    "[{}{}] {:>3.0}% ",
                    "#".repeat(full),
                    ".".repeat(20 - full.min(20)),
                    f * 100.0
                )
            })
            .unwrap_or_default();
        let mut text = format!("  [{elapsed}] {bar}{step}: {message}");
        if text.chars().count() > 150 {
            text = text.chars().take(147).collect::<String>() + "...";
        }
        let _ = write!(std::io::stderr(), "\r\x1b[2K{text}");
        let _ = std::io::stderr().flush();
        SHOWN.store(true, Ordering::Relaxed);
    }
}

/// Set by a command run with `--output json`: its error, too, is a JSON
/// object on stdout.
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Errors of this command go to stdout as JSON as well (`--output json`).
pub fn json_errors() {
    JSON_ERRORS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the command line asks for JSON output (`--output json`), read
/// before parsing so that even a parse error is a JSON object.
fn asks_for_json(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.iter().any(|a| a == "--output=json")
}

/// An error as the JSON object `--output json` promises on stdout.
pub fn print_json_error(error: &str, cause: &str, code: u8, extra: serde_json::Value) {
    let mut object = serde_json::json!({ "error": error, "cause": cause, "exit": code });
    if let (Some(o), serde_json::Value::Object(more)) = (object.as_object_mut(), extra) {
        o.extend(more);
    }
    outln!("{object}");
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if asks_for_json(&argv) {
        json_errors();
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() && JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
                let text = e.to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                print_json_error(first, text.trim(), exit::BAD_INPUT, serde_json::json!({}));
            }
            return ExitCode::from(if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::OK
            });
        }
    };
    let command = match cli.command {
        Command::Run(a) => return finish(run::main(a)),
        Command::Resume(a) => return finish(run::resume_main(a)),
        Command::OnRuntime(c) => c,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say!("firebreak: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = runtime.block_on(async {
        match command {
            OnRuntime::Compile(a) => compile::run(a),
            OnRuntime::Collect(a) => collect::run(a),
            OnRuntime::Infra(a) => infra::run(a),
            OnRuntime::Validate(a) => validate::run(a),
            OnRuntime::Graph(a) => graph::run(a),
            // Several instances: one run each (respond_many builds on
            // respond's single run).
            OnRuntime::Respond(a) if a.instance.len() > 1 && !a.remote => {
                if a.output == summary::OutputFormat::Json {
                    json_errors();
                }
                respond_many::run(*a).await
            }
            OnRuntime::Respond(a) => respond::run(*a).await,
            OnRuntime::Alert(a) => alert::run(a).await,
            OnRuntime::Approve(a) => approve::approve(a).await,
            OnRuntime::Status(a) => status::run(a).await,
            OnRuntime::Report(a) => report::run(a).await,
            OnRuntime::Deny(a) => approve::deny(a).await,
            OnRuntime::Decoy(a) => decoy::run(a).await,
            OnRuntime::Release(a) => release::run(a).await,
            OnRuntime::Cases(a) => cases::run(a).await,
            OnRuntime::Setup(a) => setup::run(a).await,
            OnRuntime::Rehearse(a) => rehearse::run(a).await,
            OnRuntime::Evidence(a) => evidence::run(a).await,
            OnRuntime::Lime(a) => lime::run(a).await,
            OnRuntime::Analyze(a) => analyze::run(a).await,
            OnRuntime::Tools(a) => tools::run(a).await,
            OnRuntime::Symbols(a) => symbols::run(a).await,
            OnRuntime::Step(a) => step::run(a).await,
            OnRuntime::TaskSuccess(a) => run::task_success(a),
            OnRuntime::TaskFailure(a) => run::task_failure(a),
            OnRuntime::TaskHeartbeat(a) => run::task_heartbeat(a),
        }
    });
    finish(result)
}

/// The exit code for a command's result, printing its error.
fn finish(result: anyhow::Result<u8>) -> ExitCode {
    live::clear();
    if let Some(e) = OUTPUT_ERROR.get() {
        say!("firebreak: error: cannot write the output: {e}");
        if matches!(result, Ok(exit::OK)) {
            return ExitCode::from(exit::FAILED);
        }
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = if e.downcast_ref::<BadInput>().is_some() {
                exit::BAD_INPUT
            } else if e.downcast_ref::<session::Interrupted>().is_some() {
                exit::INTERRUPTED
            } else {
                exit::FAILED
            };
            say!("firebreak: error: {e:#}");
            if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
                let extra = match e.downcast_ref::<session::Interrupted>() {
                    Some(i) => serde_json::json!({
                        "finished": i.finished,
                        "finish_with": i.finish_with,
                    }),
                    None => serde_json::json!({}),
                };
                print_json_error(&e.to_string(), &format!("{e:#}"), code, extra);
            }
            ExitCode::from(code)
        }
    }
}
