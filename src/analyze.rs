//! `firebreak analyze --case ID --evidence s3://...`: Volatility 3 on a
//! captured memory image, wherever time and disk allow (a workstation, a
//! forensic instance, a Fargate task).

use clap::Args;
use firebreak_steps::case::default_evidence_bucket;
use firebreak_steps::evidence::analysis::{
    AnalysisOptions, AnalyzeInput, AnalyzeMemory, PluginStatus,
};
use firebreak_steps::evidence::S3Uri;
use firebreak_steps::ids::CaseId;
use firebreak_steps::{Mode, Step};
use firebreak_workflows::ErrorName;

use crate::session::Session;
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    /// The case the image belongs to.
    #[arg(long)]
    pub case: String,
    /// The image: s3://bucket/key[?versionId=...], as its custody record
    /// names it.
    #[arg(long)]
    pub evidence: String,
    /// Bucket of the case's evidence (default firebreak-evidence-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    /// The Volatility 3 program.
    #[arg(long, env = "FIREBREAK_VOL", default_value = "vol")]
    pub vol: String,
    /// Directory of ISF symbol tables for the fleet's kernels (searched
    /// recursively, as Volatility does).
    #[arg(long, env = "FIREBREAK_SYMBOLS")]
    pub symbols_dir: Option<String>,
    /// The tools bucket, whose symbol tables (`firebreak symbols add`) are
    /// used when the directory has none for the kernel (default
    /// firebreak-tools-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_TOOLS_BUCKET")]
    pub tools_bucket: Option<String>,
    /// Where the image is copied (it needs the image's size free).
    #[arg(long)]
    pub work_dir: Option<String>,
    /// A file listing the kernel modules expected on the host, one per line.
    #[arg(long)]
    pub module_baseline: Option<std::path::PathBuf>,
    /// Stop a plugin after this many seconds (default: banners 20 min,
    /// other plugins 30 min).
    #[arg(long)]
    pub plugin_timeout: Option<u64>,
    /// Object Lock COMPLIANCE retention of the outputs, in days (default:
    /// the bucket's).
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// No progress on standard error.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub(crate) async fn run(a: AnalyzeArgs) -> anyhow::Result<u8> {
    let case: CaseId = a
        .case
        .parse()
        .map_err(|e: firebreak_steps::ids::IdError| BadInput(e.to_string()))?;
    let _: S3Uri = a.evidence.parse().map_err(BadInput)?;
    let baseline = match &a.module_baseline {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| BadInput(format!("{}: {e}", p.display())))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    let session = Session::open(&a.aws, Mode::Live, a.quiet).await?;
    let bucket = a
        .evidence_bucket
        .clone()
        .unwrap_or_else(|| default_evidence_bucket(&session.who.account_id, &session.region));
    let input = AnalyzeInput {
        case_id: case.to_string(),
        evidence: a.evidence.clone(),
        evidence_lock: session
            .evidence_lock(&bucket, a.retention_days, None, None)
            .await?,
        evidence_bucket: bucket,
        tools_bucket: Some(a.tools_bucket.clone().unwrap_or_else(|| {
            firebreak_steps::evidence::tools::default_tools_bucket(
                &session.who.account_id,
                &session.region,
            )
        })),
        actor: session.who.arn.clone(),
        options: AnalysisOptions {
            vol: Some(a.vol.clone()),
            symbols_dir: a.symbols_dir.clone(),
            work_dir: a.work_dir.clone(),
            module_baseline: baseline,
            plugin_timeout_seconds: a.plugin_timeout,
        },
    };
    let out = match AnalyzeMemory::run(&session.ctx, input).await {
        Ok(o) => o,
        Err(e) => {
            return match e.name {
                ErrorName::InvalidInput | ErrorName::ResourceNotFound => {
                    Err(BadInput(e.to_string()).into())
                }
                _ => {
                    say!("firebreak: analysis failed: {e}");
                    Ok(exit::FAILED)
                }
            }
        }
    };
    match a.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&out)?),
        OutputFormat::Human => {
            outln!("Analysis of {} (case {case})", out.image);
            outln!(
                "  image: {} ranges, {} bytes of memory, SHA-256 {} (verified against custody)",
                out.image_summary.ranges,
                out.image_summary.memory_bytes,
                out.sha256
            );
            outln!(
                "  Volatility 3 {}",
                out.volatility_version
                    .as_deref()
                    .unwrap_or("(version unknown)")
            );
            for b in &out.banners {
                outln!("  banner at 0x{:x}: {}", b.offset, b.banner);
            }
            outln!("  plugins:");
            for p in &out.plugins {
                let status = match p.status {
                    PluginStatus::Ok => "ok",
                    PluginStatus::Failed => "FAILED",
                    PluginStatus::TimedOut => "TIMED OUT",
                    PluginStatus::Skipped => "skipped",
                };
                outln!(
                    "    {:<44} {status:<9} {}",
                    p.plugin,
                    p.detail
                        .clone()
                        .or_else(|| p.rows.map(|r| format!("{r} rows")))
                        .unwrap_or_default()
                );
            }
            outln!("  findings ({}):", out.findings.len());
            for f in &out.findings {
                outln!("    [{:?}] {}: {}", f.severity, f.source, f.title);
                for line in f.detail.lines() {
                    outln!("        {line}");
                }
            }
            if let Some(l) = &out.findings_location {
                outln!("  kept at {l}");
            }
        }
    }
    Ok(exit::OK)
}
