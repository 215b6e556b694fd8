//! `firebreak symbols add|list`: the ISF symbol tables memory analysis
//! uses, kept in the tools bucket by the banner of the kernel they were
//! built for (`dwarf2json linux --elf vmlinux --system-map System.map |
//! xz -c > REL.json.xz`).

use clap::{Args, Subcommand};
use firebreak_steps::evidence::tools;
use firebreak_steps::Mode;

use crate::session::Session;
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct SymbolsArgs {
    #[command(subcommand)]
    pub command: SymbolsCommand,
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
pub(crate) enum SymbolsCommand {
    /// Add an ISF table (`.json` or `.json.xz`); it is indexed by the
    /// banner it names, and analysis of any image with that banner finds it.
    Add { file: std::path::PathBuf },
    /// The tables the tools bucket holds, by banner.
    List,
}

pub(crate) async fn run(args: SymbolsArgs) -> anyhow::Result<u8> {
    let session = Session::open(&args.aws, Mode::Live, true).await?;
    let bucket = args
        .tools_bucket
        .clone()
        .unwrap_or_else(|| tools::default_tools_bucket(&session.who.account_id, &session.region));
    let ctx = &session.ctx;
    match args.command {
        SymbolsCommand::Add { file } => {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !(name.ends_with(".json") || name.ends_with(".json.xz")) {
                return Err(BadInput(format!(
                    "{}: a symbol table is a .json or .json.xz file (dwarf2json's output, xz-compressed)",
                    file.display()
                ))
                .into());
            }
            let bytes =
                std::fs::read(&file).map_err(|e| BadInput(format!("{}: {e}", file.display())))?;
            let t = tools::add_symbols(ctx, &bucket, &name, bytes)
                .await
                .map_err(|e| match e.name {
                    firebreak_workflows::ErrorName::InvalidInput => {
                        anyhow::Error::new(BadInput(e.message))
                    }
                    _ => anyhow::Error::new(e),
                })?;
            match args.output {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&t)?),
                OutputFormat::Human => {
                    outln!(
                        "added s3://{bucket}/{} ({} bytes, sha256 {})",
                        t.key,
                        t.size,
                        t.sha256
                    );
                    outln!("  for {}", t.banner);
                }
            }
        }
        SymbolsCommand::List => {
            let log = ctx.log("symbols");
            let index = tools::read_symbols_index(ctx, &log, &bucket)
                .await
                .map_err(anyhow::Error::new)?
                .unwrap_or_default();
            match args.output {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&index)?),
                OutputFormat::Human => {
                    outln!("s3://{bucket}/symbols/:");
                    for (banner, t) in &index.tables {
                        outln!("  {}  {}", t.key, banner);
                    }
                    if index.tables.is_empty() {
                        outln!("  nothing: add tables with `firebreak symbols add FILE.json.xz`");
                    }
                }
            }
        }
    }
    Ok(exit::OK)
}
