//! `firebreak lime check FILE [--iomem FILE]`: validate a LiME (or AVML)
//! image, and check it holds all of a host's memory.

use clap::{Args, Subcommand};
use firebreak_forensics::coverage::{self, Tool};
use firebreak_forensics::lime::{self, Format};

use crate::summary::OutputFormat;
use crate::{exit, BadInput};

#[derive(Debug, Args)]
pub(crate) struct LimeArgs {
    #[command(subcommand)]
    pub command: LimeCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LimeCommand {
    /// Walk every range and print them with their zero pages; exit 1
    /// naming the range and offset of the first problem, or, with
    /// --iomem, each System RAM range the image lacks.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The image.
    pub file: std::path::PathBuf,
    /// A copy of the host's /proc/iomem (read as root): every top-level
    /// "System RAM" range must be in the image, whole.
    #[arg(long, value_name = "FILE")]
    pub iomem: Option<std::path::PathBuf>,
    /// The image was made by AVML, which leaves out pieces of memory of up
    /// to 16 MiB that are all zero, and writes each range one byte short
    /// (implied for AVML's compressed format).
    #[arg(long)]
    pub avml: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}

pub(crate) async fn run(args: LimeArgs) -> anyhow::Result<u8> {
    let LimeCommand::Check(a) = args.command;
    let ram = match &a.iomem {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| BadInput(format!("--iomem {}: {e}", p.display())))?;
            Some(
                coverage::parse_iomem(&text)
                    .map_err(|e| BadInput(format!("--iomem {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let path = a.file.clone();
    let file =
        std::fs::File::open(&path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(BadInput(format!("{} is a directory", path.display())).into());
    }
    let result = tokio::task::spawn_blocking(move || {
        lime::check(std::io::BufReader::with_capacity(1 << 20, file))
    })
    .await?;
    let s = match result {
        Ok(s) => s,
        Err(e) => {
            match a.output {
                OutputFormat::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "file": a.file.display().to_string(),
                        "valid": false,
                        "range": e.range,
                        "offset": e.offset,
                        "problem": e.to_string(),
                    }))?
                ),
                OutputFormat::Human => say!("{}: INVALID: {e}", a.file.display()),
            }
            return Ok(exit::FAILED);
        }
    };
    let tool = match (s.format, a.avml) {
        (Format::AvmlCompressed, _) => Tool::AvmlCompressed,
        (Format::Lime, true) => Tool::Avml,
        (Format::Lime, false) => Tool::Lime,
    };
    let ranges: Vec<_> = s.ranges.iter().map(|r| r.image_range()).collect();
    let cv = coverage::coverage(&ranges, ram.as_deref(), tool);
    match a.output {
        OutputFormat::Json => {
            let mut v = serde_json::json!({
                "file": a.file.display().to_string(),
                "valid": true,
                "format": s.format,
                "file_size": s.file_size,
                "memory_bytes": s.memory_bytes,
                "ranges": s.ranges,
                "missing": cv.missing,
                "suspect_zero_tails": cv.suspect_zero_tails,
            });
            if let (Some(ram), Some(o)) = (&cv.system_ram, v.as_object_mut()) {
                o.insert("system_ram".into(), serde_json::to_value(ram)?);
                o.insert("omitted_zero_bytes".into(), cv.omitted_zero_bytes.into());
            }
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Human => {
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
                    "  range {:>4}  0x{:016x}-0x{:016x}  {:>14} bytes  header at offset {}  {} of {} pages zero",
                    r.index,
                    r.start,
                    r.end,
                    r.size(),
                    r.header_offset,
                    r.zeros.zero_pages,
                    r.zeros.pages
                );
            }
            outln!("coverage: {}", cv.summary());
            for m in &cv.missing {
                outln!(
                    "  MISSING 0x{:x}-0x{:x}: {} bytes of System RAM are not in the image",
                    m.start,
                    m.end,
                    m.missing_bytes
                );
            }
            for t in &cv.suspect_zero_tails {
                outln!(
                    "  warning: 0x{:x}-0x{:x} ends in {} bytes of zero pages: free memory, or a range the capture tool gave up on (LiME's timeout zero-fills the rest of a range)",
                    t.start,
                    t.end,
                    t.zero_bytes
                );
            }
        }
    }
    Ok(if cv.complete() {
        exit::OK
    } else {
        exit::FAILED
    })
}
