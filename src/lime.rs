//! `firebreak lime check FILE`: validate a LiME (or AVML) image.

use clap::{Args, Subcommand};
use firebreak_forensics::lime::{self, Format};

use crate::respond::OutputFormat;
use crate::{exit, BadInput};

#[derive(Debug, Args)]
pub struct LimeArgs {
    #[command(subcommand)]
    pub command: LimeCommand,
}

#[derive(Debug, Subcommand)]
pub enum LimeCommand {
    /// Walk every range and print them; exit 1 naming the range and
    /// offset of the first problem.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The image.
    pub file: std::path::PathBuf,
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}

pub async fn run(args: LimeArgs) -> anyhow::Result<u8> {
    let LimeCommand::Check(a) = args.command;
    let path = a.file.clone();
    let file =
        std::fs::File::open(&path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    let result = tokio::task::spawn_blocking(move || {
        lime::check(std::io::BufReader::with_capacity(1 << 20, file))
    })
    .await?;
    match (result, a.output) {
        (Ok(s), OutputFormat::Json) => {
            outln!("{}", serde_json::to_string_pretty(&s)?);
            Ok(exit::OK)
        }
        (Ok(s), OutputFormat::Human) => {
            outln!(
                "{}: {} ({} ranges, {} bytes of memory, {} bytes)",
                a.file.display(),
                match s.format {
                    Format::Lime => "LiME",
                    Format::AvmlCompressed => "AVML (compressed)",
                },
                s.ranges.len(),
                s.memory_bytes,
                s.file_size
            );
            for r in &s.ranges {
                outln!(
                    "  range {:>4}  0x{:016x}-0x{:016x}  {:>14} bytes  header at offset {}",
                    r.index,
                    r.start,
                    r.end,
                    r.size(),
                    r.header_offset
                );
            }
            Ok(exit::OK)
        }
        (Err(e), OutputFormat::Json) => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "file": a.file.display().to_string(),
                    "valid": false,
                    "range": e.range,
                    "offset": e.offset,
                    "problem": e.to_string(),
                }))?
            );
            Ok(exit::FAILED)
        }
        (Err(e), OutputFormat::Human) => {
            say!("{}: INVALID: {e}", a.file.display());
            Ok(exit::FAILED)
        }
    }
}
