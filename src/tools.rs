//! `firebreak tools add|list`: the LiME modules and AVML memory capture
//! sends to hosts.

use clap::{Args, Subcommand};
use firebreak_steps::evidence::tools::{self, ToolKind};
use firebreak_steps::Mode;

use crate::session::Session;
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct ToolsArgs {
    #[command(subcommand)]
    pub command: ToolsCommand,
    /// The tools bucket (default firebreak-tools-ACCOUNT-REGION; made when
    /// missing).
    #[arg(long, env = "FIREBREAK_TOOLS_BUCKET", global = true)]
    pub tools_bucket: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human", global = true)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ToolsCommand {
    /// Add a LiME module built for one kernel release, or AVML.
    Add {
        #[command(subcommand)]
        tool: AddTool,
    },
    /// What the tools bucket holds.
    List,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AddTool {
    /// A LiME kernel module (lime.ko) built for exactly this kernel.
    Lime {
        /// The kernel release it was built for, as `uname -r` prints it.
        #[arg(long)]
        kernel_release: String,
        file: std::path::PathBuf,
    },
    /// The AVML binary (the fallback for kernels without a module).
    Avml { file: std::path::PathBuf },
}

pub(crate) async fn run(args: ToolsArgs) -> anyhow::Result<u8> {
    let session = Session::open(&args.aws, Mode::Live, true).await?;
    let bucket = args
        .tools_bucket
        .clone()
        .unwrap_or_else(|| tools::default_tools_bucket(&session.who.account_id, &session.region));
    let ctx = &session.ctx;
    match args.command {
        ToolsCommand::Add { tool } => {
            let (kind, file) = match tool {
                AddTool::Lime {
                    kernel_release,
                    file,
                } => (ToolKind::Lime { kernel_release }, file),
                AddTool::Avml { file } => (ToolKind::Avml, file),
            };
            if let ToolKind::Lime { kernel_release } = &kind {
                if !tools::valid_kernel_release(kernel_release) {
                    return Err(BadInput(format!(
                        "--kernel-release {kernel_release:?} is not a kernel release as `uname -r` prints it"
                    ))
                    .into());
                }
            }
            let bytes =
                std::fs::read(&file).map_err(|e| BadInput(format!("{}: {e}", file.display())))?;
            if bytes.is_empty() {
                return Err(BadInput(format!("{} is empty", file.display())).into());
            }
            let entry = tools::add(ctx, &bucket, &kind, bytes)
                .await
                .map_err(|e| match e.name {
                    firebreak_workflows::ErrorName::InvalidInput => {
                        anyhow::Error::new(BadInput(format!("{}: {}", file.display(), e.message)))
                    }
                    _ => anyhow::Error::new(e),
                })?;
            match args.output {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&entry)?),
                OutputFormat::Human => outln!(
                    "added s3://{bucket}/{} ({} bytes, sha256 {})",
                    entry.key,
                    entry.size,
                    entry.sha256
                ),
            }
        }
        ToolsCommand::List => {
            let log = ctx.log("tools");
            let manifest = tools::read_manifest(ctx, &log, &bucket)
                .await
                .map_err(anyhow::Error::new)?
                .unwrap_or_default();
            match args.output {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&manifest)?),
                OutputFormat::Human => {
                    outln!("s3://{bucket}:");
                    for (release, t) in &manifest.lime {
                        outln!("  lime  {release:<40} {}  {}", t.sha256, t.key);
                    }
                    if let Some(t) = &manifest.avml {
                        outln!("  avml  {:<40} {}  {}", "(any kernel)", t.sha256, t.key);
                    }
                    if manifest.lime.is_empty() && manifest.avml.is_none() {
                        outln!("  nothing: add tools with `firebreak tools add lime|avml`");
                    }
                }
            }
        }
    }
    Ok(exit::OK)
}
