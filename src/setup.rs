//! `firebreak setup`: make the evidence bucket (Object Lock, encryption,
//! TLS only, no public access).

use clap::Args;
use firebreak_steps::case::default_evidence_bucket;
use firebreak_steps::evidence::setup_bucket;
use firebreak_steps::Mode;

use crate::session::Session;
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};

/// Default retention: a year covers most regulatory and litigation holds
/// that start after an incident; longer holds can be set per case later.
const DEFAULT_RETENTION_DAYS: i32 = 365;

#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    /// Bucket name (default firebreak-evidence-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    /// Object Lock COMPLIANCE retention of every object, in days. Nobody,
    /// not even the account root, can delete an object before it ends.
    /// Default: 365 for a new bucket; an existing bucket keeps its own
    /// (it is changed, lowered too, only when this is given).
    #[arg(long)]
    pub retention_days: Option<i32>,
    /// KMS key for default encryption (SSE-KMS); SSE-S3 otherwise.
    #[arg(long)]
    pub kms_key_id: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub(crate) async fn run(args: SetupArgs) -> anyhow::Result<u8> {
    if let Some(d) = args.retention_days.filter(|d| !(1..=36_500).contains(d)) {
        return Err(BadInput(format!("--retention-days {d} is not between 1 and 36500")).into());
    }
    let session = Session::open(&args.aws, Mode::Live, true).await?;
    let bucket = args
        .evidence_bucket
        .clone()
        .unwrap_or_else(|| default_evidence_bucket(&session.who.account_id, &session.region));
    let plain_http = session
        .config
        .endpoint_url()
        .is_some_and(|u| u.starts_with("http://"));
    let done = setup_bucket(
        &session.ctx,
        &bucket,
        args.retention_days,
        DEFAULT_RETENTION_DAYS,
        args.kms_key_id.as_deref(),
        plain_http,
    )
    .await
    .map_err(anyhow::Error::new)?;
    match args.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&done)?),
        OutputFormat::Human => {
            outln!(
                "evidence bucket {} {}",
                done.bucket,
                if done.created { "created" } else { "exists" }
            );
            for a in &done.actions {
                outln!("  {a}");
            }
        }
    }
    Ok(exit::OK)
}
