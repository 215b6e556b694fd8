//! Memory capture over SSM: `start_memory_capture` sends the capture
//! script to exactly the instance, `await_memory_capture` (in a bounded
//! poll loop) completes the upload, re-hashes the image off the host and
//! records custody.
//!
//! The host never receives AWS credentials. It gets one presigned URL (of
//! the plan, which lists presigned URLs for the tools, each part of the
//! image's multipart upload and the result), all expiring together.
//!
//! Each capture is an attempt, kept under
//! `cases/CASE/memory/INSTANCE/attempt-NNN/`: `capture.json` (what was
//! started), `plan.enc` (what the host was given, encrypted with a
//! one-time key that only the SSM command carries), `result.json` (what
//! the host reported) and `memory.lime` (the image). A re-run continues
//! the latest attempt while it can still finish; a failed or expired one
//! is followed by a new attempt, never overwritten.
//!
//! The wait re-hashes the image off the host and, in the same pass,
//! walks its LiME structure and counts its zero pages, then compares its
//! ranges with the host's `/proc/iomem`: an image that is not whole is
//! recorded as failed, never as verified.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use firebreak_forensics::capture::{self, CaptureReport, Module, PartReport, Plan, Tool, MIB};
use firebreak_forensics::custody::{Event, Location, NewRecord, Source};
use firebreak_forensics::hash::{sha256_bytes, Digest};
use firebreak_forensics::{coverage, lime};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::containment::ec2::describe_instance;
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, required, StepError};
use crate::evidence::tools;
use crate::evidence::{self, keys, Lock, Put, S3Uri};
use crate::ids::{CaseId, InstanceId};
use crate::step::Step;
use aws_sdk_ec2::types::Instance;

/// The presigned URLs live at least an hour: short enough that a leaked
/// URL is soon worthless, and longer for instances with much memory (see
/// [`url_lifetime_for`]).
pub const DEFAULT_URL_EXPIRY_SECONDS: u32 = 3600;
/// The rate the lifetime assumes for writing and uploading memory from an
/// isolated host: 20 MB/s, well under what one instance uploads to S3
/// (hundreds of MB/s), so that a slow, busy or throttled host still
/// finishes.
const CAPTURE_BYTES_PER_SECOND: u64 = 20_000_000;
/// Before the first byte: SSM delivers the command (the agent polls), the
/// tools download, the module loads.
const CAPTURE_SETUP_SECONDS: u64 = 600;
/// The URLs must not outlive the credentials that sign them; a minute of
/// margin for clock skew between here and S3.
const CREDENTIAL_MARGIN_SECONDS: i64 = 60;
/// Parts in flight at once on the host: four keep one instance's upload
/// busy without holding much of its memory (the script lowers it to what
/// memory allows).
pub const DEFAULT_UPLOAD_SLOTS: u32 = 4;
/// SigV4 allows a week; a capture that needs more than 12 hours is stuck.
pub const MAX_URL_EXPIRY_SECONDS: u32 = 12 * 3600;
/// Parts of at least 8 MiB, and at most about 900 of them: the plan stays
/// small (a URL is about 1 KiB) whatever the instance size, far below
/// S3's 10,000-part limit.
const MIN_PART_MIB: u64 = 8;
const TARGET_PARTS: u64 = 900;
const MAX_PARTS: u64 = 10_000;
/// SSM waits this long for the agent to pick the command up.
const DELIVERY_TIMEOUT_SECONDS: i32 = 600;
/// SSM comments are at most 100 characters.
const COMMENT_PREFIX: &str = "firebreak memory capture";

/// Memory capture settings of a case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MemoryOptions {
    /// The bucket holding the LiME modules and AVML (`firebreak tools add`).
    pub tools_bucket: String,
    /// Part size in MiB (at least 5); sized from the instance type's
    /// memory when absent.
    #[serde(default)]
    pub part_size_mib: Option<u32>,
    /// How long the host's presigned URLs stay valid; scaled to the
    /// instance's memory when absent (see [`url_lifetime_for`]).
    #[serde(default)]
    pub url_expiry_seconds: Option<u32>,
    /// LiME's `timeout` in milliseconds. 0, the default, waits for every
    /// page; LiME's own default (1000) writes zeros for the rest of a
    /// range when one page waits longer, which a slow upload causes.
    #[serde(default)]
    pub lime_timeout_ms: u32,
    /// Parts the host uploads at once (default 4; the host lowers it to
    /// what its free memory holds).
    #[serde(default)]
    pub upload_slots: Option<u32>,
}

/// Sends the capture script to the instance over SSM.
#[derive(Debug)]
pub struct StartMemoryCapture;

/// How long after the capture started a command that ended without a
/// result is taken as failed: the host writes its result before the
/// command ends, so only a result on its way is waited for.
const RESULT_GRACE: chrono::Duration = chrono::Duration::seconds(120);

/// Reads where the capture stands (polled, in a Lambda): `done` ends the
/// poll loop once the host has reported; a host that reported a failure,
/// an SSM command that ended without a result, or URLs that expired fail
/// the step.
#[derive(Debug)]
pub struct AwaitMemoryCapture;

/// Completes the upload, re-hashes the image off the host and in the same
/// pass checks its structure and coverage, and records custody: verified,
/// or rejected. Where time is not limited (a container task: a pass over
/// a large image outlasts a Lambda's 15 minutes); idempotent.
#[derive(Debug)]
pub struct VerifyMemoryCapture;

/// Reads the verification `verify_memory_capture` recorded in custody:
/// the evidence, or the reason it was rejected.
#[derive(Debug)]
pub struct ReadMemoryEvidence;

/// What `start_memory_capture` is asked to capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StartCaptureInput {
    /// The case.
    pub case_id: String,
    /// The instance whose memory is captured (`i-...`).
    pub instance_id: String,
    /// The evidence bucket the image goes to.
    pub evidence_bucket: String,
    /// How the image and its records are locked.
    #[serde(default)]
    pub evidence_lock: Lock,
    /// The tools bucket, part size, URL lifetime and the host's limits.
    #[serde(default)]
    pub options: MemoryOptions,
}

/// What was started (stored as `capture.json` of the attempt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CaptureStarted {
    /// The image's evidence id (new for each attempt).
    pub evidence_id: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The case.
    pub case_id: String,
    /// The instance (`i-...`).
    pub instance_id: String,
    /// The evidence bucket.
    pub bucket: String,
    /// Where the image goes (`.../attempt-NNN/memory.lime`).
    pub image_key: String,
    /// Where the host writes its report (`result.json`).
    pub result_key: String,
    /// Where the encrypted plan of presigned URLs is (`plan.enc`).
    pub plan_key: String,
    /// The image's S3 multipart upload (empty in a dry run).
    pub upload_id: String,
    /// Bytes per part.
    pub part_size: u64,
    /// Parts presigned (enough for the memory, LiME's headers and spare).
    pub part_count: u64,
    /// The instance's memory, from its instance type, in MiB.
    pub memory_mib: u64,
    /// Kernel releases a LiME module is offered for.
    pub lime_kernels: Vec<String>,
    /// True when AVML is offered (for kernels with no LiME module).
    pub avml: bool,
    /// The SHA-256 of each tool offered (`lime:RELEASE`, `avml`): the
    /// host's report must name one of them.
    #[serde(default)]
    pub offered: std::collections::BTreeMap<String, String>,
    /// When the capture was started.
    pub started_at: DateTime<Utc>,
    /// When the host's URLs expire.
    pub expires_at: DateTime<Utc>,
    /// The signing credentials are temporary and said no expiry: the URLs
    /// may die before `expires_at` (said in the summary).
    #[serde(default)]
    pub credentials_expiry_unknown: bool,
    /// LiME's timeout and the parts in flight the host was asked for.
    #[serde(default)]
    pub lime_timeout_ms: u32,
    /// Parts the host uploads at once.
    #[serde(default)]
    pub upload_slots: u32,
    /// The SSM command (set once sent).
    #[serde(default)]
    pub command_id: Option<String>,
    /// True when an attempt already under way was continued.
    #[serde(default)]
    pub reused: bool,
    /// True in a dry run: nothing was created or sent.
    #[serde(default)]
    pub dry_run: bool,
}

/// What the wait and the verification of a capture are given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AwaitCaptureInput {
    /// The case.
    pub case_id: String,
    /// The evidence bucket (must be the capture's).
    pub evidence_bucket: String,
    /// How the image and its records are locked.
    #[serde(default)]
    pub evidence_lock: Lock,
    /// Who acts, for the custody records.
    pub actor: String,
    /// What `start_memory_capture` started.
    pub capture: CaptureStarted,
}

/// A captured, verified memory image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MemoryEvidence {
    /// The image's evidence id.
    pub evidence_id: String,
    /// `s3://bucket/key?versionId=...`
    pub location: String,
    /// The image's size in bytes, as stored.
    pub size: u64,
    /// Computed off the host, from the stored object.
    pub sha256: String,
    /// What the host reported.
    pub host_sha256: String,
    /// The kernel release (`uname -r`) of the host.
    pub kernel_release: String,
    /// `lime` or `avml`.
    pub tool: String,
    /// The SHA-256 of the tool the host ran.
    pub tool_sha256: String,
    /// Until when Object Lock retains the image, when it does.
    pub retained_until: Option<DateTime<Utc>>,
    /// The custody record of the verification.
    pub custody_sequence: u64,
    /// The image against the host's memory map, with its zero pages.
    #[serde(default)]
    pub coverage: Option<firebreak_forensics::coverage::Coverage>,
    /// Why AVML was used instead of LiME.
    #[serde(default)]
    pub fallback_reason: Option<String>,
    /// The host's kernel lockdown state.
    #[serde(default)]
    pub lockdown: Option<String>,
}

/// Where a capture is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CaptureProgress {
    /// True once the host has reported (or the dry run is done).
    pub done: bool,
    /// The SSM command's status (`Pending`, `InProgress`, `Success`, ...).
    pub command_status: Option<String>,
    /// The verified image, once verified.
    pub evidence: Option<MemoryEvidence>,
}

const CAPTURE_ERRORS: [ErrorName; 9] = [
    ErrorName::InvalidInput,
    ErrorName::InstanceNotFound,
    ErrorName::Unsupported,
    ErrorName::AccessDenied,
    ErrorName::Throttled,
    ErrorName::AwsUnavailable,
    ErrorName::AwsRequestFailed,
    ErrorName::CaptureFailed,
    ErrorName::VerificationFailed,
];

impl StepDef for StartMemoryCapture {
    const NAME: &'static str = "start_memory_capture";
    const SUMMARY: &'static str =
        "Send the memory-capture script (LiME, or AVML) to the instance over SSM, with presigned URLs only.";
    const MUTATES: bool = true;
    type Input = StartCaptureInput;
    type Output = CaptureStarted;

    fn errors() -> Vec<ErrorName> {
        CAPTURE_ERRORS.to_vec()
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                [
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypes",
                    "ssm:ListCommands",
                ],
                ["*"],
            ),
            Statement::allow(
                ["ssm:SendCommand"],
                [
                    "arn:aws:ec2:*:*:instance/*",
                    "arn:aws:ssm:*:*:document/AWS-RunShellScript",
                ],
            ),
            Statement::allow(
                [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:ListBucket",
                    "s3:AbortMultipartUpload",
                ],
                ["arn:aws:s3:::*"],
            ),
            // SSE-KMS evidence (--kms-key-id): writing needs a data key.
            Statement::allow(
                ["kms:GenerateDataKey", "kms:Decrypt"],
                ["arn:aws:kms:*:*:key/*"],
            ),
        ]
    }
}

impl StepDef for VerifyMemoryCapture {
    const NAME: &'static str = "verify_memory_capture";
    const SUMMARY: &'static str =
        "Complete the upload, re-hash the image off the host with its structure and coverage in the same pass, record custody.";
    const MUTATES: bool = true;
    type Input = AwaitCaptureInput;
    type Output = CaptureProgress;

    fn errors() -> Vec<ErrorName> {
        CAPTURE_ERRORS.to_vec()
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(["ssm:ListCommands"], ["*"]),
            Statement::allow(
                [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:PutObjectRetention",
                    "s3:PutObjectLegalHold",
                    "s3:GetObjectLegalHold",
                    "s3:ListBucket",
                    "s3:ListBucketVersions",
                    "s3:GetBucketObjectLockConfiguration",
                ],
                ["arn:aws:s3:::*"],
            ),
            Statement::allow(
                ["kms:GenerateDataKey", "kms:Decrypt", "kms:Sign"],
                ["arn:aws:kms:*:*:key/*"],
            ),
        ]
    }
}

impl StepDef for ReadMemoryEvidence {
    const NAME: &'static str = "read_memory_evidence";
    const SUMMARY: &'static str =
        "Read the memory image's verification from custody: the evidence, or why it was rejected.";
    const MUTATES: bool = false;
    type Input = AwaitCaptureInput;
    type Output = CaptureProgress;

    fn errors() -> Vec<ErrorName> {
        CAPTURE_ERRORS.to_vec()
    }

    fn iam() -> Vec<Statement> {
        vec![Statement::allow(
            [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:ListBucket",
                "s3:ListBucketVersions",
            ],
            ["arn:aws:s3:::*"],
        )]
    }
}

impl StepDef for AwaitMemoryCapture {
    const NAME: &'static str = "await_memory_capture";
    const SUMMARY: &'static str =
        "Wait for the host's result (polled): done once the host has reported.";
    const MUTATES: bool = true;
    type Input = AwaitCaptureInput;
    type Output = CaptureProgress;

    fn errors() -> Vec<ErrorName> {
        CAPTURE_ERRORS.to_vec()
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(["ssm:ListCommands"], ["*"]),
            Statement::allow(
                [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:PutObjectRetention",
                    "s3:ListBucket",
                    "s3:ListBucketVersions",
                    "s3:GetBucketObjectLockConfiguration",
                ],
                ["arn:aws:s3:::*"],
            ),
            Statement::allow(
                ["kms:GenerateDataKey", "kms:Decrypt"],
                ["arn:aws:kms:*:*:key/*"],
            ),
        ]
    }
}

/// The part size for an instance's memory: at least 8 MiB, large enough
/// that about 900 parts hold the image.
pub fn part_size_for(memory_mib: u64) -> u64 {
    MIN_PART_MIB.max(memory_mib.div_ceil(TARGET_PARTS)) * MIB
}

/// How long a capture of this much memory may take: the setup, then the
/// memory at [`CAPTURE_BYTES_PER_SECOND`].
pub fn capture_seconds_for(memory_mib: u64) -> u64 {
    CAPTURE_SETUP_SECONDS + (memory_mib * MIB).div_ceil(CAPTURE_BYTES_PER_SECOND)
}

/// The presigned URLs' lifetime for an instance: what the capture may
/// take, at least [`DEFAULT_URL_EXPIRY_SECONDS`], at most
/// [`MAX_URL_EXPIRY_SECONDS`].
pub fn url_lifetime_for(memory_mib: u64) -> u64 {
    capture_seconds_for(memory_mib).clamp(
        u64::from(DEFAULT_URL_EXPIRY_SECONDS),
        u64::from(MAX_URL_EXPIRY_SECONDS),
    )
}

/// The credentials that sign every URL of one capture, resolved once and
/// held: the presigner would otherwise fetch its own (a fresh role session
/// for assume-role or SSO), whose expiry nobody checked.
struct Signer {
    s3: aws_sdk_s3::Client,
    /// When they expire (None: unknown, or never).
    expires: Option<DateTime<Utc>>,
    /// Temporary credentials (a session token) whose expiry the provider
    /// does not say (a Lambda's environment, say).
    expiry_unknown: bool,
}

impl Signer {
    async fn resolve(ctx: &StepContext) -> Result<Signer, StepError> {
        use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
        let provider = ctx.aws.sdk.credentials_provider().ok_or_else(|| {
            StepError::new(
                ErrorName::AccessDenied,
                "no AWS credentials to sign the host's URLs with",
            )
        })?;
        let creds = provider.provide_credentials().await.map_err(|e| {
            StepError::with_source(
                ErrorName::AccessDenied,
                "reading the signing credentials",
                e,
            )
        })?;
        let expires = creds.expiry().map(DateTime::<Utc>::from);
        let expiry_unknown = expires.is_none() && creds.session_token().is_some();
        let config = aws_sdk_s3::config::Builder::from(&ctx.aws.sdk)
            .credentials_provider(SharedCredentialsProvider::new(creds))
            .force_path_style(crate::config::has_custom_endpoint(&ctx.aws.sdk))
            .build();
        Ok(Signer {
            s3: aws_sdk_s3::Client::from_conf(config),
            expires,
            expiry_unknown,
        })
    }
}

/// The URLs' lifetime: asked for, or scaled to the memory; cut to the
/// signing credentials' lifetime, and refused when those cannot last as
/// long as the capture needs.
fn url_lifetime(
    asked: Option<u32>,
    memory_mib: u64,
    credentials_expire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<u64, StepError> {
    let needed = capture_seconds_for(memory_mib).min(u64::from(MAX_URL_EXPIRY_SECONDS));
    let wanted = asked.map_or_else(|| url_lifetime_for(memory_mib), u64::from);
    let Some(expire) = credentials_expire else {
        return Ok(wanted);
    };
    let left = (expire - now).num_seconds() - CREDENTIAL_MARGIN_SECONDS;
    let left = u64::try_from(left).unwrap_or(0);
    if left < needed.min(wanted) {
        return Err(StepError::invalid_input(format!(
            "the credentials that sign the host's URLs expire at {} ({} min from now), but capturing {} GiB may take {} min (at {} MB/s, plus {} min to start): use credentials that last longer (a role session of at least {} min, `aws sts assume-role --duration-seconds {}`), or --memory-url-expiry if the host is known to be faster",
            expire.to_rfc3339(),
            left / 60,
            memory_mib / 1024,
            needed.div_ceil(60),
            CAPTURE_BYTES_PER_SECOND / 1_000_000,
            CAPTURE_SETUP_SECONDS / 60,
            needed.div_ceil(60) + 5,
            needed + 300
        )));
    }
    Ok(wanted.min(left))
}

/// Parts to presign: the image is at most the memory plus LiME's 32-byte
/// range headers; 5% and one part spare.
pub fn part_count_for(memory_mib: u64, part_size: u64) -> u64 {
    let bytes = memory_mib * MIB + memory_mib * MIB / 20;
    (bytes.div_ceil(part_size) + 1).min(MAX_PARTS)
}

fn internal(e: impl std::fmt::Display) -> StepError {
    StepError::new(ErrorName::Internal, e.to_string())
}

/// A claim older than this without its `capture.json` belongs to a run
/// that died while starting: the attempt is skipped.
const STALE_CLAIM: chrono::Duration = chrono::Duration::minutes(5);

/// The latest attempt claimed for a capture: its number, when it was
/// claimed and what was started (None while the claiming run is still
/// starting it, or if it died doing so).
async fn latest_attempt(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
    instance: &str,
) -> Result<Option<(u32, Option<DateTime<Utc>>, Option<CaptureStarted>)>, StepError> {
    let prefix = format!("cases/{case}/memory/{instance}/");
    let keys = evidence::list_keys(ctx, log, bucket, &prefix).await?;
    let attempt_of = |k: &str| {
        k.strip_prefix(&prefix)?
            .strip_prefix("attempt-")?
            .split('/')
            .next()?
            .parse::<u32>()
            .ok()
    };
    let Some(n) = keys.iter().filter_map(|k| attempt_of(k)).max() else {
        return Ok(None);
    };
    let dir = format!("{prefix}attempt-{n:03}/");
    let claimed_at = match evidence::get(ctx, log, bucket, &format!("{dir}claim.json")).await? {
        Some((bytes, _)) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("claimed_at")?.as_str()?.parse().ok()),
        None => None,
    };
    let key = format!("{dir}capture.json");
    let started = match evidence::get(ctx, log, bucket, &key).await? {
        Some((bytes, _)) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            StepError::verification(format!("s3://{bucket}/{key} is unreadable: {e}"))
        })?),
        None => None,
    };
    Ok(Some((n, claimed_at, started)))
}

/// Where an attempt stands.
enum AttemptState {
    /// The host reported success (the wait completes and verifies it).
    Finished,
    /// Still running, and can still finish.
    InProgress,
    /// Over without a usable image (the reason).
    Failed(String),
}

async fn attempt_state(
    ctx: &StepContext,
    log: &StepLog<'_>,
    c: &CaptureStarted,
) -> Result<AttemptState, StepError> {
    let ledger = crate::evidence::custody::read_ledger(ctx, log, &c.bucket, &c.case_id).await?;
    for r in ledger.readable() {
        if r.evidence_id == c.evidence_id && matches!(r.event, Event::Verified | Event::Rejected) {
            return Ok(
                if r.event == Event::Rejected
                    || crate::evidence::custody::failed_note(r.note.as_deref())
                {
                    AttemptState::Failed(r.note.clone().unwrap_or_default())
                } else {
                    AttemptState::Finished
                },
            );
        }
    }
    match read_report(ctx, log, c).await {
        Ok(Some((CaptureReport::Done { .. }, _, _))) => return Ok(AttemptState::Finished),
        Ok(Some((CaptureReport::Failed { error, .. }, _, _))) => {
            return Ok(AttemptState::Failed(format!("the host reported: {error}")))
        }
        Err(e) if e.name == ErrorName::CaptureFailed => return Ok(AttemptState::Failed(e.message)),
        Err(e) => return Err(e),
        Ok(None) => {}
    }
    if let Some(id) = c.command_id.as_deref().filter(|i| !i.is_empty()) {
        if let Some(status) = command_status(ctx, log, id).await? {
            if matches!(status.as_str(), "Failed" | "TimedOut" | "Cancelled") {
                return Ok(AttemptState::Failed(format!(
                    "the SSM command {id} ended {status} without a result"
                )));
            }
        }
    }
    if c.expires_at <= Utc::now() {
        return Ok(AttemptState::Failed(format!(
            "no result before its URLs expired at {}",
            c.expires_at.to_rfc3339()
        )));
    }
    Ok(AttemptState::InProgress)
}

async fn exists(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
) -> Result<bool, StepError> {
    log.read("s3:HeadObject", format!("s3://{bucket}/{key}"));
    match ctx
        .aws
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            if status == Some(404) || error_code(&e).as_deref() == Some("NotFound") {
                Ok(false)
            } else {
                Err(aws_error(&format!("s3:HeadObject s3://{bucket}/{key}"), e))
            }
        }
    }
}

async fn read_report(
    ctx: &StepContext,
    log: &StepLog<'_>,
    c: &CaptureStarted,
) -> Result<Option<(CaptureReport, Vec<u8>, Option<String>)>, StepError> {
    // The first version: the host writes its result once; anything put
    // there later (the URL is valid until it expires) is not the report.
    let Some((bytes, version)) =
        evidence::get_first_version(ctx, log, &c.bucket, &c.result_key).await?
    else {
        return Ok(None);
    };
    let report: CaptureReport = serde_json::from_slice(&bytes).map_err(|e| {
        StepError::new(
            ErrorName::CaptureFailed,
            format!(
                "the host's result s3://{}/{} is not a capture report ({e}): {}",
                c.bucket,
                c.result_key,
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ),
        )
    })?;
    Ok(Some((report, bytes, version)))
}

/// The firebreak command already sent for this capture, if any: SSM has
/// no idempotency token, so a retried start looks for its own comment.
async fn find_command(
    ctx: &StepContext,
    log: &StepLog<'_>,
    instance: &str,
    evidence_id: &str,
) -> Result<Option<(String, String)>, StepError> {
    log.read("ssm:ListCommands", format!("InstanceId={instance}"));
    let mut pages = ctx
        .aws
        .ssm
        .list_commands()
        .instance_id(instance)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("ssm:ListCommands", e))?;
        for c in page.commands() {
            if c.comment().is_some_and(|m| m.contains(evidence_id)) {
                return Ok(Some((
                    c.command_id().unwrap_or_default().to_string(),
                    c.status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )));
            }
        }
    }
    Ok(None)
}

async fn command_status(
    ctx: &StepContext,
    log: &StepLog<'_>,
    command_id: &str,
) -> Result<Option<String>, StepError> {
    log.read("ssm:ListCommands", format!("CommandId={command_id}"));
    let out = ctx
        .aws
        .ssm
        .list_commands()
        .command_id(command_id)
        .send()
        .await
        .map_err(|e| aws_error("ssm:ListCommands", e))?;
    Ok(out
        .commands()
        .first()
        .and_then(|c| c.status())
        .map(|s| s.as_str().to_string()))
}

async fn memory_mib(
    ctx: &StepContext,
    log: &StepLog<'_>,
    instance_type: &str,
) -> Result<u64, StepError> {
    log.read(
        "ec2:DescribeInstanceTypes",
        format!("InstanceTypes=[{instance_type}]"),
    );
    let out = ctx
        .aws
        .ec2
        .describe_instance_types()
        .instance_types(instance_type.into())
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeInstanceTypes", e))?;
    out.instance_types()
        .first()
        .and_then(|t| t.memory_info())
        .and_then(|m| m.size_in_mib())
        .and_then(|m| u64::try_from(m).ok())
        .filter(|m| *m > 0)
        .ok_or_else(|| {
            StepError::new(
                ErrorName::Unsupported,
                format!("EC2 reports no memory size for instance type {instance_type}"),
            )
        })
}

async fn presign_get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    expiry: Duration,
) -> Result<String, StepError> {
    let cfg = PresigningConfig::expires_in(expiry).map_err(internal)?;
    let mut req = s3.get_object().bucket(bucket).key(key);
    if let Some(v) = version {
        req = req.version_id(v);
    }
    Ok(req
        .presigned(cfg)
        .await
        .map_err(|e| aws_error(&format!("presigning GET s3://{bucket}/{key}"), e))?
        .uri()
        .to_string())
}

/// Checks the capture options; gives the upload slots to use.
fn check_options(o: &MemoryOptions) -> Result<u32, StepError> {
    if o.tools_bucket.is_empty() {
        return Err(StepError::invalid_input(
            "no tools bucket: memory capture needs the LiME modules and AVML (`firebreak tools add`)",
        ));
    }
    if let Some(e) = o
        .url_expiry_seconds
        .filter(|e| !(60..=MAX_URL_EXPIRY_SECONDS).contains(e))
    {
        return Err(StepError::invalid_input(format!(
            "url_expiry_seconds {e} is not between 60 and {MAX_URL_EXPIRY_SECONDS}"
        )));
    }
    let upload_slots = o.upload_slots.unwrap_or(DEFAULT_UPLOAD_SLOTS);
    if !(1..=capture::MAX_UPLOAD_SLOTS).contains(&upload_slots) {
        return Err(StepError::invalid_input(format!(
            "upload_slots {upload_slots} is not between 1 and {}",
            capture::MAX_UPLOAD_SLOTS
        )));
    }
    if o.part_size_mib.is_some_and(|p| p < 5) {
        return Err(StepError::invalid_input(
            "part_size_mib must be at least 5 (S3's smallest part)",
        ));
    }
    Ok(upload_slots)
}

/// A running Linux instance, or why its memory cannot be captured; gives
/// its instance type.
fn check_capturable(id: &InstanceId, instance: &Instance) -> Result<String, StepError> {
    if instance
        .platform()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("windows"))
    {
        return Err(StepError::new(
            ErrorName::Unsupported,
            format!("{id} runs Windows: LiME and AVML capture Linux memory"),
        ));
    }
    let state = instance
        .state()
        .and_then(|s| s.name())
        .map_or("in an unknown state", |s| s.as_str());
    if state != "running" {
        return Err(StepError::new(
            ErrorName::Unsupported,
            format!("{id} is {state}: memory can only be captured from a running instance"),
        ));
    }
    instance
        .instance_type()
        .map(|t| t.as_str().to_string())
        .ok_or_else(|| {
            StepError::new(
                ErrorName::AwsRequestFailed,
                format!(
                    "ec2:DescribeInstances gave {id} no instance type: its memory size is unknown"
                ),
            )
        })
}

/// What the earlier attempts leave to do.
enum Earlier {
    /// An attempt that finished or may still finish: followed, not redone.
    Continue(Box<CaptureStarted>),
    /// Start this attempt (1 when there was none).
    Start(u32),
}

/// Continues the latest attempt while it can still finish; otherwise
/// clears what a failed one left and names the next attempt.
async fn earlier_attempts(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &CaseId,
    id: &InstanceId,
) -> Result<Earlier, StepError> {
    let (n, mut prev) = match latest_attempt(ctx, log, bucket, case.as_str(), id.as_str()).await? {
        None => return Ok(Earlier::Start(1)),
        Some((n, claimed_at, None)) => {
            let stale = claimed_at.is_none_or(|t| Utc::now() - t > STALE_CLAIM);
            if !stale {
                return Err(StepError::new(
                    ErrorName::Throttled,
                    format!(
                        "capture attempt {n} is being started by another run; retry to follow it"
                    ),
                ));
            }
            log.progress(&format!(
                "attempt {n} was claimed but never started: starting attempt {}",
                n + 1
            ));
            return Ok(Earlier::Start(n + 1));
        }
        Some((n, _, Some(prev))) => (n, prev),
    };
    let mut state = attempt_state(ctx, log, &prev).await?;
    if matches!(state, AttemptState::InProgress) && !ctx.is_dry_run() {
        // The plan's key lives only in the command sent: an attempt whose
        // command never went cannot be sent now.
        match find_command(ctx, log, &prev.instance_id, &prev.evidence_id).await? {
            Some((id, _)) => prev.command_id = Some(id),
            None => {
                state = AttemptState::Failed(
                    "its command was never sent (the run starting it died)".into(),
                )
            }
        }
    }
    match state {
        AttemptState::Finished | AttemptState::InProgress => {
            prev.reused = true;
            prev.dry_run = ctx.is_dry_run();
            log.progress(&format!(
                "continuing capture attempt {} ({})",
                prev.attempt, prev.evidence_id
            ));
            Ok(Earlier::Continue(Box::new(prev)))
        }
        AttemptState::Failed(why) => {
            if !ctx.is_dry_run() && !exists(ctx, log, bucket, &prev.image_key).await? {
                // Best effort: an upload left open only costs storage.
                let _ = ctx
                    .aws
                    .s3
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(&prev.image_key)
                    .upload_id(&prev.upload_id)
                    .send()
                    .await;
            }
            log.progress(&format!(
                "attempt {} failed ({why}): starting attempt {}",
                prev.attempt,
                n + 1
            ));
            Ok(Earlier::Start(n + 1))
        }
    }
}

/// What a capture is decided from, besides its input.
#[derive(Debug)]
struct CaptureFacts<'a> {
    /// The attempt to start.
    attempt: u32,
    /// The new evidence id of the image.
    evidence_id: String,
    /// The instance's memory, from its type.
    memory_mib: u64,
    /// The tools the tools bucket offers.
    manifest: &'a tools::Manifest,
    /// Now.
    started_at: DateTime<Utc>,
    /// The URLs' lifetime (`url_lifetime`), seconds.
    lifetime: u64,
    /// The signing credentials are temporary and say no expiry.
    expiry_unknown: bool,
    /// Parts the host uploads at once (checked).
    upload_slots: u32,
    /// A dry run.
    dry_run: bool,
}

/// The capture to start, decided without AWS: its keys, parts, tools and
/// deadline. Refuses parts too few to hold the memory.
fn plan_capture(
    input: &StartCaptureInput,
    case: &CaseId,
    id: &InstanceId,
    f: &CaptureFacts<'_>,
) -> Result<CaptureStarted, StepError> {
    let o = &input.options;
    let memory_mib = f.memory_mib;
    let part_size = o
        .part_size_mib
        .map_or_else(|| part_size_for(memory_mib), |p| u64::from(p) * MIB);
    let part_count = part_count_for(memory_mib, part_size);
    if part_count * part_size < memory_mib * MIB {
        return Err(StepError::invalid_input(format!(
            "{part_count} parts of {} MiB cannot hold {memory_mib} MiB of memory: use larger parts",
            part_size / MIB
        )));
    }
    let prefix = keys::memory_attempt(case.as_str(), id.as_str(), f.attempt);
    let lime = f.manifest.lime.iter();
    Ok(CaptureStarted {
        evidence_id: f.evidence_id.clone(),
        attempt: f.attempt,
        case_id: case.to_string(),
        instance_id: id.to_string(),
        bucket: input.evidence_bucket.clone(),
        image_key: format!("{prefix}memory.lime"),
        result_key: format!("{prefix}result.json"),
        plan_key: format!("{prefix}plan.enc"),
        upload_id: String::new(),
        part_size,
        part_count,
        memory_mib,
        lime_kernels: f.manifest.lime.keys().cloned().collect(),
        avml: f.manifest.avml.is_some(),
        offered: lime
            .map(|(r, t)| (format!("lime:{r}"), t.sha256.clone()))
            .chain(
                f.manifest
                    .avml
                    .iter()
                    .map(|t| ("avml".to_string(), t.sha256.clone())),
            )
            .collect(),
        started_at: f.started_at,
        expires_at: f.started_at
            + chrono::Duration::seconds(i64::try_from(f.lifetime).unwrap_or(i64::MAX)),
        credentials_expiry_unknown: f.expiry_unknown,
        lime_timeout_ms: o.lime_timeout_ms,
        upload_slots: f.upload_slots,
        command_id: None,
        reused: false,
        dry_run: f.dry_run,
    })
}

/// What a dry run shows of a capture: none of its calls has a dry run.
fn show_dry_run(log: &StepLog<'_>, id: &InstanceId, started: &CaptureStarted) {
    let why = "S3 and SSM have no dry run";
    let bucket = &started.bucket;
    log.not_checked(
        "s3:CreateMultipartUpload",
        format!(
            "s3://{bucket}/{} ({} parts of {} MiB)",
            started.image_key,
            started.part_count,
            started.part_size / MIB
        ),
        format!("{why}; needs s3:PutObject on arn:aws:s3:::{bucket}/cases/*"),
    );
    log.not_checked(
        "s3:PutObject",
        format!(
            "s3://{bucket}/{} (the plan: presigned URLs only, encrypted for the host)",
            started.plan_key
        ),
        why,
    );
    log.not_checked(
        "ssm:SendCommand",
        format!("InstanceIds=[{id}], DocumentName=AWS-RunShellScript (the capture script)"),
        format!("{why}; needs ssm:SendCommand on {id} and document AWS-RunShellScript, and the instance's SSM agent must reach SSM"),
    );
}

/// Claims the attempt: of two runs starting at once, one goes on, the
/// other retries and follows it.
async fn claim_attempt(
    ctx: &StepContext,
    log: &StepLog<'_>,
    input: &StartCaptureInput,
    started: &CaptureStarted,
) -> Result<(), StepError> {
    let claim = serde_json::to_vec(&serde_json::json!({
        "claimed_at": Utc::now(),
        "evidence_id": started.evidence_id,
    }))
    .map_err(internal)?;
    let prefix = keys::memory_attempt(&started.case_id, &started.instance_id, started.attempt);
    match evidence::put_new_locked(
        ctx,
        log,
        &started.bucket,
        &format!("{prefix}claim.json"),
        claim,
        "application/json",
        &input.evidence_lock,
    )
    .await?
    {
        Put::Exists => Err(StepError::new(
            ErrorName::Throttled,
            format!(
                "another run claimed capture attempt {} at the same moment; retry to follow it",
                started.attempt
            ),
        )),
        Put::Created(_) | Put::Planned => Ok(()),
    }
}

/// Opens the image's multipart upload, locked like every piece of
/// evidence; gives its upload id.
async fn open_upload(
    ctx: &StepContext,
    log: &StepLog<'_>,
    lock: &Lock,
    started: &CaptureStarted,
) -> Result<String, StepError> {
    let bucket = &started.bucket;
    let mut mpu = ctx
        .aws
        .s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(&started.image_key)
        .content_type("application/octet-stream");
    if let Some(until) = lock.retain_until() {
        mpu = mpu
            .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
            .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(
                until.timestamp(),
            ));
    }
    if let Some(k) = &lock.kms_key_id {
        mpu = mpu
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .ssekms_key_id(k);
    }
    if lock.legal_hold {
        mpu = mpu.object_lock_legal_hold_status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On);
    }
    let mpu = mpu
        .send()
        .await
        .map_err(|e| aws_error("s3:CreateMultipartUpload", e))?;
    let upload_id = required(
        &format!(
            "s3:CreateMultipartUpload s3://{bucket}/{}",
            started.image_key
        ),
        "an UploadId",
        mpu.upload_id(),
    )?;
    log.done(
        "s3:CreateMultipartUpload",
        format!(
            "s3://{bucket}/{} ({} parts of {} MiB)",
            started.image_key,
            started.part_count,
            started.part_size / MIB
        ),
    );
    Ok(upload_id)
}

/// Every URL the host may use, all expiring together: a part each, the
/// result, the tools.
async fn sign_urls(
    signer: &Signer,
    tools_bucket: &str,
    manifest: &tools::Manifest,
    started: &CaptureStarted,
    expiry: Duration,
) -> Result<Plan, StepError> {
    let cfg = || PresigningConfig::expires_in(expiry).map_err(internal);
    let bucket = &started.bucket;
    let mut part_urls = Vec::with_capacity(usize::try_from(started.part_count).unwrap_or(0));
    for n in 1..=started.part_count {
        let number = i32::try_from(n).map_err(internal)?;
        let url = signer
            .s3
            .upload_part()
            .bucket(bucket)
            .key(&started.image_key)
            .upload_id(&started.upload_id)
            .part_number(number)
            .presigned(cfg()?)
            .await
            .map_err(|e| aws_error("presigning UploadPart", e))?;
        part_urls.push(url.uri().to_string());
    }
    let result_url = signer
        .s3
        .put_object()
        .bucket(bucket)
        .key(&started.result_key)
        .presigned(cfg()?)
        .await
        .map_err(|e| aws_error("presigning PutObject", e))?
        .uri()
        .to_string();
    let mut modules = Vec::new();
    for (release, t) in &manifest.lime {
        modules.push(Module {
            kernel_release: release.clone(),
            sha256: t.sha256.clone(),
            url: presign_get(
                &signer.s3,
                tools_bucket,
                &t.key,
                t.version_id.as_deref(),
                expiry,
            )
            .await?,
        });
    }
    let avml = match &manifest.avml {
        Some(t) => Some(Tool {
            sha256: t.sha256.clone(),
            url: presign_get(
                &signer.s3,
                tools_bucket,
                &t.key,
                t.version_id.as_deref(),
                expiry,
            )
            .await?,
        }),
        None => None,
    };
    Ok(Plan {
        modules,
        avml,
        part_urls,
        result_url,
    })
}

/// Stores the plan encrypted for the host alone (the case's objects are
/// readable by whoever may read evidence, and these URLs let one upload
/// parts and the result in the host's place until they expire); gives the
/// script that fetches and decrypts it.
async fn seal_plan(
    ctx: &StepContext,
    log: &StepLog<'_>,
    input: &StartCaptureInput,
    signer: &Signer,
    started: &CaptureStarted,
    plan: &Plan,
    expiry: Duration,
) -> Result<String, StepError> {
    let plan = capture::render_plan(plan).map_err(|e| StepError::invalid_input(e.to_string()))?;
    let plan_secret = hex::encode(rand::random::<[u8; 32]>());
    let sealed_plan = capture::encrypt_plan(plan.as_bytes(), &plan_secret, rand::random());
    let bucket = &started.bucket;
    let plan_version = match evidence::put_new_locked(
        ctx,
        log,
        bucket,
        &started.plan_key,
        sealed_plan,
        "application/octet-stream",
        &input.evidence_lock,
    )
    .await?
    {
        Put::Created(s) => s.version_id,
        Put::Exists | Put::Planned => None,
    };
    let plan_url = presign_get(
        &signer.s3,
        bucket,
        &started.plan_key,
        plan_version.as_deref(),
        expiry,
    )
    .await?;
    capture::render(&capture::CaptureScript {
        case_id: started.case_id.clone(),
        evidence_id: started.evidence_id.clone(),
        part_size: started.part_size,
        plan_url,
        plan_key: plan_secret,
        lime_timeout_ms: input.options.lime_timeout_ms,
        upload_slots: started.upload_slots,
    })
    .map_err(|e| StepError::invalid_input(e.to_string()))
}

/// Stores what was started before the command goes, so that a retry finds
/// it and never starts a second capture.
async fn store_started(
    ctx: &StepContext,
    log: &StepLog<'_>,
    lock: &Lock,
    started: &CaptureStarted,
) -> Result<(), StepError> {
    let prefix = keys::memory_attempt(&started.case_id, &started.instance_id, started.attempt);
    let state_key = format!("{prefix}capture.json");
    let body = serde_json::to_vec_pretty(started).map_err(internal)?;
    let bucket = &started.bucket;
    match evidence::put_new_locked(ctx, log, bucket, &state_key, body, "application/json", lock)
        .await?
    {
        Put::Exists => Err(StepError::new(
            ErrorName::Internal,
            format!(
                "s3://{bucket}/{state_key} exists although this run claimed attempt {}",
                started.attempt
            ),
        )),
        Put::Created(_) | Put::Planned => Ok(()),
    }
}

#[async_trait]
impl Step for StartMemoryCapture {
    async fn run(ctx: &StepContext, input: StartCaptureInput) -> Result<CaptureStarted, StepError> {
        let case: CaseId = input
            .case_id
            .parse()
            .map_err(|e: crate::ids::IdError| StepError::invalid_input(e.to_string()))?;
        let id: InstanceId = input
            .instance_id
            .parse()
            .map_err(|e: crate::ids::IdError| StepError::invalid_input(e.to_string()))?;
        let o = &input.options;
        let upload_slots = check_options(o)?;
        let log = ctx.log(Self::NAME);
        let bucket = input.evidence_bucket.as_str();
        let instance = describe_instance(ctx, &log, &id).await?;
        let instance_type = check_capturable(&id, &instance)?;
        let attempt = match earlier_attempts(ctx, &log, bucket, &case, &id).await? {
            Earlier::Continue(prev) => return Ok(*prev),
            Earlier::Start(n) => n,
        };
        let manifest = tools::read_manifest(ctx, &log, &o.tools_bucket)
            .await?
            .filter(|m| !m.lime.is_empty() || m.avml.is_some())
            .ok_or_else(|| {
                StepError::new(
                    ErrorName::Unsupported,
                    format!(
                        "s3://{}/{} lists no LiME module and no AVML: add them with `firebreak tools add`",
                        o.tools_bucket,
                        tools::MANIFEST_KEY
                    ),
                )
            })?;
        let memory_mib = memory_mib(ctx, &log, &instance_type).await?;
        let started_at = Utc::now();
        let signer = Signer::resolve(ctx).await?;
        let lifetime = url_lifetime(o.url_expiry_seconds, memory_mib, signer.expires, started_at)?;
        if signer.expiry_unknown {
            log.progress(&format!(
                "the signing credentials are temporary but say no expiry: the host's URLs are signed for {} min, and die sooner if they do",
                lifetime / 60
            ));
        }
        let facts = CaptureFacts {
            attempt,
            evidence_id: new_evidence_id(),
            memory_mib,
            manifest: &manifest,
            started_at,
            lifetime,
            expiry_unknown: signer.expiry_unknown,
            upload_slots,
            dry_run: ctx.is_dry_run(),
        };
        let mut started = plan_capture(&input, &case, &id, &facts)?;
        if ctx.is_dry_run() {
            show_dry_run(&log, &id, &started);
            return Ok(started);
        }
        claim_attempt(ctx, &log, &input, &started).await?;
        started.upload_id = open_upload(ctx, &log, &input.evidence_lock, &started).await?;
        let expiry = Duration::from_secs(lifetime);
        let plan = sign_urls(&signer, &o.tools_bucket, &manifest, &started, expiry).await?;
        let script = seal_plan(ctx, &log, &input, &signer, &started, &plan, expiry).await?;
        store_started(ctx, &log, &input.evidence_lock, &started).await?;
        started.command_id = Some(send(ctx, &log, &started, &script).await?);
        Ok(started)
    }
}

async fn send(
    ctx: &StepContext,
    log: &StepLog<'_>,
    c: &CaptureStarted,
    script: &str,
) -> Result<String, StepError> {
    if let Some((command_id, _)) = find_command(ctx, log, &c.instance_id, &c.evidence_id).await? {
        return Ok(command_id);
    }
    let timeout = (c.expires_at - Utc::now()).num_seconds().max(60);
    let comment = format!("{COMMENT_PREFIX} {}", c.evidence_id);
    let out = ctx
        .aws
        .ssm
        .send_command()
        .instance_ids(&c.instance_id)
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec![script.to_string()])
        .parameters("executionTimeout", vec![timeout.to_string()])
        .timeout_seconds(DELIVERY_TIMEOUT_SECONDS)
        .comment(comment)
        .send()
        .await
        .map_err(|e| aws_error("ssm:SendCommand", e))?;
    let command_id = out
        .command()
        .and_then(|c| c.command_id())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            StepError::new(
                ErrorName::AwsRequestFailed,
                format!(
                    "ssm:SendCommand to {} returned no command id",
                    c.instance_id
                ),
            )
        })?
        .to_string();
    log.done(
        "ssm:SendCommand",
        format!(
            "InstanceIds=[{}], DocumentName=AWS-RunShellScript, CommandId={command_id} (capture {})",
            c.instance_id, c.evidence_id
        ),
    );
    Ok(command_id)
}

/// A new evidence id (a random UUID).
pub fn new_evidence_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn strip_quotes(s: &str) -> &str {
    s.trim_matches('"')
}

#[async_trait]
impl Step for AwaitMemoryCapture {
    async fn run(
        ctx: &StepContext,
        input: AwaitCaptureInput,
    ) -> Result<CaptureProgress, StepError> {
        let log = ctx.log(Self::NAME);
        let c = &input.capture;
        if c.dry_run || ctx.is_dry_run() {
            return Ok(CaptureProgress {
                done: true,
                command_status: None,
                evidence: None,
            });
        }
        if c.bucket != input.evidence_bucket {
            return Err(StepError::invalid_input(format!(
                "the capture was started in bucket {}, not {}",
                c.bucket, input.evidence_bucket
            )));
        }
        // Verified before (a retried or repeated wait): the ledger has it.
        if let Some(done) = verified_before(ctx, &log, &input).await? {
            return Ok(CaptureProgress {
                done: true,
                command_status: None,
                evidence: Some(done),
            });
        }
        let status = match &c.command_id {
            Some(id) if !id.is_empty() => command_status(ctx, &log, id).await?,
            _ => None,
        };
        match read_report(ctx, &log, c).await? {
            Some((
                CaptureReport::Failed {
                    error, lockdown, ..
                },
                _,
                _,
            )) => Err(StepError::new(
                ErrorName::CaptureFailed,
                format!(
                    "the host reported: {error}{}",
                    lockdown
                        .filter(|l| l != "none" && l != "unknown")
                        .map(|l| format!(" (kernel lockdown: {l})"))
                        .unwrap_or_default()
                ),
            )),
            Some((CaptureReport::Done { .. }, _, _)) => Ok(CaptureProgress {
                done: true,
                command_status: status,
                evidence: None,
            }),
            None => {
                // The script writes its result before it exits: a command
                // that ended, even with Success, and left none never will.
                let ended = status.as_deref().is_some_and(|s| {
                    matches!(
                        s,
                        "Success" | "Failed" | "TimedOut" | "Cancelled" | "Cancelling"
                    )
                });
                // The grace covers a result still on its way when the
                // status is read (and moto, whose commands end Success at
                // once, before the host has run anything).
                if ended && Utc::now() - c.started_at > RESULT_GRACE {
                    return Err(StepError::new(
                        ErrorName::CaptureFailed,
                        format!(
                            "the SSM command {} ended {} without a result: is the SSM agent running and can the isolated instance reach SSM and S3 (--allow-https-to)?",
                            c.command_id.as_deref().unwrap_or("?"),
                            status.as_deref().unwrap_or("?")
                        ),
                    ));
                }
                if Utc::now() > c.expires_at {
                    return Err(StepError::new(
                        ErrorName::CaptureFailed,
                        format!(
                            "no result from the host before its URLs expired at {} (SSM status {})",
                            c.expires_at.to_rfc3339(),
                            status.as_deref().unwrap_or("unknown")
                        ),
                    ));
                }
                log.progress(&format!(
                    "capture {}: waiting for the host (SSM {})",
                    c.evidence_id,
                    status.as_deref().unwrap_or("status unknown")
                ));
                Ok(CaptureProgress {
                    done: false,
                    command_status: status,
                    evidence: None,
                })
            }
        }
    }
}

#[async_trait]
impl Step for ReadMemoryEvidence {
    async fn run(
        ctx: &StepContext,
        input: AwaitCaptureInput,
    ) -> Result<CaptureProgress, StepError> {
        let log = ctx.log(Self::NAME);
        let c = &input.capture;
        if c.dry_run || ctx.is_dry_run() {
            return Ok(CaptureProgress {
                done: true,
                command_status: None,
                evidence: None,
            });
        }
        if let Some(done) = verified_before(ctx, &log, &input).await? {
            return Ok(CaptureProgress {
                done: true,
                command_status: None,
                evidence: Some(done),
            });
        }
        let ledger =
            crate::evidence::custody::read_ledger(ctx, &log, &input.evidence_bucket, &c.case_id)
                .await?;
        let rejected = ledger.readable().into_iter().find(|r| {
            r.evidence_id == c.evidence_id
                && (r.event == Event::Rejected
                    || (r.event == Event::Verified
                        && crate::evidence::custody::failed_note(r.note.as_deref())))
        });
        Err(match rejected {
            Some(r) => StepError::verification(format!(
                "the memory image was rejected (custody record {}): {}",
                r.sequence,
                r.note.as_deref().unwrap_or("no reason recorded")
            )),
            None => StepError::verification(format!(
                "the memory image of capture {} was never verified (no custody record of its verification)",
                c.evidence_id
            )),
        })
    }
}

/// A finished capture as the host reported it.
#[derive(Debug)]
struct HostDone {
    /// `uname -r` of the host.
    kernel_release: String,
    /// `lime` or `avml`.
    tool: String,
    /// The SHA-256 of the tool the host ran.
    tool_sha256: String,
    /// The image's size and SHA-256, computed on the host.
    image_size: u64,
    image_sha256: String,
    /// The parts uploaded, with their hashes on the host.
    parts: Vec<PartReport>,
    /// When the host started and finished writing (its clock).
    started_at: String,
    finished_at: String,
    /// What the host says of itself.
    host: Box<capture::HostFacts>,
}

/// The host's report of a finished capture of this case, or why there is
/// nothing to verify.
fn accept_report(report: CaptureReport, c: &CaptureStarted) -> Result<HostDone, StepError> {
    match report {
        CaptureReport::Failed {
            error, lockdown, ..
        } => Err(StepError::new(
            ErrorName::CaptureFailed,
            format!(
                "the host reported: {error}{}",
                lockdown
                    .filter(|l| l != "none" && l != "unknown")
                    .map(|l| format!(" (kernel lockdown: {l})"))
                    .unwrap_or_default()
            ),
        )),
        CaptureReport::Done { case_id, .. } if case_id != c.case_id => {
            Err(StepError::verification(format!(
                "the host's result names case {case_id}, not {}",
                c.case_id
            )))
        }
        CaptureReport::Done {
            kernel_release,
            tool,
            tool_sha256,
            image_size,
            image_sha256,
            parts,
            started_at,
            finished_at,
            host,
            ..
        } => Ok(HostDone {
            kernel_release,
            tool,
            tool_sha256,
            image_size,
            image_sha256,
            parts,
            started_at,
            finished_at,
            host,
        }),
    }
}

/// What was measured off the host, from the stored image.
#[derive(Debug)]
struct OffHost {
    /// The whole image.
    digest: Digest,
    /// Each part, in order.
    part_digests: Vec<Digest>,
    /// Why the image is not a sound LiME image (None: it is).
    unsound: Option<String>,
    /// Why the host's memory map cannot be read (None: it was).
    no_memory_map: Option<String>,
    /// The image's ranges against the host's System RAM (None when the
    /// image is unsound).
    cover: Option<coverage::Coverage>,
}

/// The verdict on a capture: hashes that disagree (MISMATCH), then checks
/// the image fails (FAILED); either way never "verified".
#[derive(Debug, Serialize)]
struct Verdict {
    mismatches: Vec<String>,
    failures: Vec<String>,
    /// The custody record's note.
    note: String,
}

impl Verdict {
    fn rejected(&self) -> bool {
        !self.mismatches.is_empty() || !self.failures.is_empty()
    }
}

/// Judges a capture from what the host reported and what was measured off
/// it (no AWS call).
fn judge(c: &CaptureStarted, done: &HostDone, off: &OffHost) -> Verdict {
    let (tool, tool_sha256, kernel) = (&done.tool, &done.tool_sha256, &done.kernel_release);
    let mut mismatches = Vec::new();
    let offered_key = match tool.as_str() {
        "lime" => format!("lime:{kernel}"),
        other => other.to_string(),
    };
    if !c.offered.is_empty() && c.offered.get(&offered_key) != Some(tool_sha256) {
        mismatches.push(format!(
            "the host reports running {tool} with SHA-256 {tool_sha256} for kernel {kernel}, which is not a tool the plan offered"
        ));
    }
    let d = &off.digest;
    if d.sha256 != done.image_sha256 || d.size != done.image_size {
        mismatches.push(format!(
            "the stored image hashes to {} ({} bytes); the host reported {} ({} bytes)",
            d.sha256, d.size, done.image_sha256, done.image_size
        ));
    }
    for (p, d) in done.parts.iter().zip(&off.part_digests) {
        if p.sha256 != d.sha256 {
            mismatches.push(format!(
                "part {} hashes to {} off the host, {} on it",
                p.number, d.sha256, p.sha256
            ));
        }
    }
    let mut failures = Vec::new();
    if let Some(e) = &off.unsound {
        failures.push(format!("the image is not a sound LiME image: {e}"));
    }
    // The script always sends the memory map: without one (or one that
    // does not parse) nothing says the image holds all of memory.
    if let (Some(why), None) = (&off.no_memory_map, &off.unsound) {
        failures.push(format!(
            "the coverage of the image cannot be checked: {why}"
        ));
    }
    if let Some(cv) = off.cover.as_ref().filter(|cv| !cv.complete()) {
        let missing: Vec<String> = cv
            .missing
            .iter()
            .take(5)
            .map(|m| format!("0x{:x}-0x{:x} ({} bytes)", m.start, m.end, m.missing_bytes))
            .collect();
        failures.push(format!(
            "the image lacks System RAM the host has: {}{}",
            missing.join(", "),
            if cv.missing.len() > 5 { ", ..." } else { "" }
        ));
    }
    let coverage_note = match (&off.cover, &off.no_memory_map) {
        (Some(cv), None) => cv.summary(),
        (Some(cv), Some(why)) => format!("{}; coverage not checked: {why}", cv.summary()),
        (None, _) => "structure invalid: coverage not computed".to_string(),
    };
    let note = if !mismatches.is_empty() {
        format!("MISMATCH: {}", mismatches.join("; "))
    } else if !failures.is_empty() {
        format!("FAILED: {}", failures.join("; "))
    } else {
        format!(
            "SHA-256 computed off the host from the stored object equals the host's, whole and per part; LiME structure sound; {coverage_note}"
        )
    };
    Verdict {
        mismatches,
        failures,
        note,
    }
}

/// Completes the upload and measures the stored image off the host.
async fn measure(
    ctx: &StepContext,
    log: &StepLog<'_>,
    c: &CaptureStarted,
    done: &HostDone,
) -> Result<(Option<String>, OffHost), StepError> {
    let version = complete_upload(ctx, log, c, &done.parts).await?;
    let image = S3Uri {
        bucket: c.bucket.clone(),
        key: c.image_key.clone(),
        version_id: version.clone(),
    };
    log.progress(&format!(
        "re-hashing {image} off the host and checking its ranges ({} bytes)",
        done.image_size
    ));
    let sizes: Vec<u64> = done.parts.iter().map(|p| p.size).collect();
    let (digest, part_digests, structure) = scan_image(ctx, log, &image, &sizes).await?;
    let ram = host_memory_map(&done.host);
    let capture_tool = if done.tool == "avml" {
        coverage::Tool::Avml
    } else {
        coverage::Tool::Lime
    };
    let cover = structure.as_ref().ok().map(|summary| {
        let ranges: Vec<coverage::ImageRange> =
            summary.ranges.iter().map(|r| r.image_range()).collect();
        coverage::coverage(&ranges, ram.as_ref().ok().map(Vec::as_slice), capture_tool)
    });
    Ok((
        version,
        OffHost {
            digest,
            part_digests,
            unsound: structure.err().map(|e| e.to_string()),
            no_memory_map: ram.err(),
            cover,
        },
    ))
}

/// Retention read back and set where missing, and the legal hold the
/// upload asked for read back rather than assumed (an object assembled
/// from parts may not carry it everywhere). Gives until when the image is
/// retained.
async fn lock_image(
    ctx: &StepContext,
    log: &StepLog<'_>,
    input: &AwaitCaptureInput,
    version: Option<&str>,
) -> Result<Option<DateTime<Utc>>, StepError> {
    let (c, bucket) = (&input.capture, input.evidence_bucket.as_str());
    let until = match input.evidence_lock.retain_until() {
        Some(u) => Some(u),
        None => evidence::default_retention_days(ctx, bucket)
            .await?
            .map(|d| c.started_at + chrono::Duration::days(i64::from(d))),
    };
    let retained_until = match (until, version) {
        (Some(u), Some(v)) => {
            Some(evidence::ensure_retention(ctx, log, bucket, &c.image_key, v, u).await?)
        }
        _ => None,
    };
    if input.evidence_lock.legal_hold
        && !evidence::legal_hold(ctx, bucket, &c.image_key, version).await?
    {
        evidence::set_legal_hold(ctx, log, bucket, &c.image_key, version, true).await?;
    }
    Ok(retained_until)
}

/// A custody record of the capture, by firebreak unless said otherwise.
fn capture_record(
    ctx: &StepContext,
    input: &AwaitCaptureInput,
    event: Event,
    kind: &str,
    location: Location,
) -> NewRecord {
    let c = &input.capture;
    NewRecord {
        case_id: c.case_id.clone(),
        evidence_id: c.evidence_id.clone(),
        event,
        kind: kind.to_string(),
        source: Source {
            account_id: ctx.account_id.clone(),
            region: ctx.region.clone(),
            instance_id: Some(c.instance_id.clone()),
            volume_id: None,
        },
        location,
        size: None,
        sha256: None,
        host_sha256: None,
        at: Utc::now(),
        actor: input.actor.clone(),
        tool: "firebreak".to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        note: None,
        details: None,
        signing_key: None,
    }
}

/// Custody of the acquisition: the host's report as stored, then the image
/// with both hashes. Gives the image's record, for the verdict.
async fn record_acquired(
    ctx: &StepContext,
    log: &StepLog<'_>,
    input: &AwaitCaptureInput,
    report: (&[u8], Option<String>),
    done: &HostDone,
    off: &OffHost,
    version: Option<String>,
) -> Result<impl Fn(Event, String) -> NewRecord, StepError> {
    let (c, bucket, lock) = (
        &input.capture,
        input.evidence_bucket.as_str(),
        &input.evidence_lock,
    );
    let (report_bytes, report_version) = report;
    let result_digest = sha256_bytes(report_bytes);
    let report_location = Location::S3 {
        bucket: bucket.to_string(),
        key: c.result_key.clone(),
        version_id: report_version,
    };
    let acquired_report = NewRecord {
        size: Some(result_digest.size),
        sha256: Some(result_digest.sha256),
        tool: "firebreak capture script".to_string(),
        note: Some(format!(
            "what the host reported; SSM command {}",
            c.command_id.as_deref().unwrap_or("?")
        )),
        ..capture_record(
            ctx,
            input,
            Event::Acquired,
            "capture-report",
            report_location,
        )
    };
    crate::evidence::custody::append(ctx, log, bucket, lock, acquired_report).await?;
    let image_location = Location::S3 {
        bucket: bucket.to_string(),
        key: c.image_key.clone(),
        version_id: version,
    };
    let host = &done.host;
    let details = serde_json::json!({
        // Addresses as hex strings: custody records hold no integer a
        // JSON double cannot (and a host chooses its /proc/iomem).
        "coverage": off.cover.as_ref().map(coverage::Coverage::to_record),
        "host": {
            "lockdown": host.lockdown,
            "fallback_reason": host.fallback_reason,
            "avml_syntax": host.avml_syntax,
            "lime_timeout_ms": host.lime_timeout_ms,
            "upload_slots": host.upload_slots,
            "swap": host.swap,
        },
    });
    let base = capture_record(ctx, input, Event::Acquired, "memory-image", image_location);
    let (size, sha256, host_sha256) = (
        off.digest.size,
        off.digest.sha256.clone(),
        done.image_sha256.clone(),
    );
    let measured = move |event, note: String| NewRecord {
        event,
        size: Some(size),
        sha256: Some(sha256.clone()),
        host_sha256: Some(host_sha256.clone()),
        note: Some(note),
        details: Some(details.clone()),
        at: Utc::now(),
        ..base.clone()
    };
    let acquired_image = NewRecord {
        tool: done.tool.clone(),
        tool_version: format!("sha256:{}", done.tool_sha256),
        ..measured(
            Event::Acquired,
            format!(
                "kernel {}; written on the host from {} to {}; uploaded in {} parts through presigned URLs{}",
                done.kernel_release,
                done.started_at,
                done.finished_at,
                done.parts.len(),
                host.fallback_reason
                    .as_deref()
                    .map(|w| format!("; AVML because {w}"))
                    .unwrap_or_default()
            ),
        )
    };
    crate::evidence::custody::append(ctx, log, bucket, lock, acquired_image).await?;
    Ok(measured)
}

/// What the dry run shows of verification.
fn verify_dry_run(log: &StepLog<'_>, c: &CaptureStarted) -> CaptureProgress {
    log.not_checked(
        "s3:CompleteMultipartUpload",
        format!(
            "s3://{}/{} (then re-hashed and checked off the host)",
            c.bucket, c.image_key
        ),
        "S3 has no dry run",
    );
    CaptureProgress {
        done: true,
        command_status: None,
        evidence: None,
    }
}

#[async_trait]
impl Step for VerifyMemoryCapture {
    async fn run(
        ctx: &StepContext,
        input: AwaitCaptureInput,
    ) -> Result<CaptureProgress, StepError> {
        let log = ctx.log(Self::NAME);
        let c = &input.capture;
        if c.dry_run || ctx.is_dry_run() {
            return Ok(verify_dry_run(&log, c));
        }
        let bucket = input.evidence_bucket.as_str();
        if c.bucket != bucket {
            return Err(StepError::invalid_input(format!(
                "the capture was started in bucket {}, not {bucket}",
                c.bucket
            )));
        }
        if let Some(done) = verified_before(ctx, &log, &input).await? {
            return Ok(CaptureProgress {
                done: true,
                command_status: None,
                evidence: Some(done),
            });
        }
        let Some((report, report_bytes, report_version)) = read_report(ctx, &log, c).await? else {
            return Err(StepError::new(
                ErrorName::CaptureFailed,
                format!(
                    "the host has not reported for capture {}: nothing to verify yet",
                    c.evidence_id
                ),
            ));
        };
        let done = accept_report(report, c)?;
        // The host wrote its result through a presigned PUT that carries no
        // legal hold: it gets one now, like every object of the case.
        if input.evidence_lock.legal_hold {
            let v = report_version.as_deref();
            evidence::set_legal_hold(ctx, &log, bucket, &c.result_key, v, true).await?;
        }
        let (version, off) = measure(ctx, &log, c, &done).await?;
        let retained_until = lock_image(ctx, &log, &input, version.as_deref()).await?;

        let report = (report_bytes.as_slice(), report_version);
        let measured =
            record_acquired(ctx, &log, &input, report, &done, &off, version.clone()).await?;
        let lock = &input.evidence_lock;
        let verdict = judge(c, &done, &off);
        let event = if verdict.rejected() {
            Event::Rejected
        } else {
            Event::Verified
        };
        let verified = crate::evidence::custody::append(
            ctx,
            &log,
            bucket,
            lock,
            measured(event, verdict.note.clone()),
        )
        .await?;
        if verdict.rejected() {
            let all: Vec<String> = verdict
                .mismatches
                .into_iter()
                .chain(verdict.failures)
                .collect();
            return Err(StepError::verification(all.join("; ")));
        }
        let image = S3Uri {
            bucket: bucket.to_string(),
            key: c.image_key.clone(),
            version_id: version,
        };
        Ok(CaptureProgress {
            done: true,
            command_status: None,
            evidence: Some(MemoryEvidence {
                evidence_id: c.evidence_id.clone(),
                location: image.to_string(),
                size: off.digest.size,
                sha256: off.digest.sha256,
                host_sha256: done.image_sha256,
                kernel_release: done.kernel_release,
                tool: done.tool,
                tool_sha256: done.tool_sha256,
                retained_until,
                custody_sequence: verified.sequence,
                coverage: off.cover,
                fallback_reason: done.host.fallback_reason.clone(),
                lockdown: done.host.lockdown.clone(),
            }),
        })
    }
}

/// The host's System RAM ranges, from the `/proc/iomem` it reported.
fn host_memory_map(host: &capture::HostFacts) -> Result<Vec<coverage::RamRange>, String> {
    use base64::Engine as _;
    let b64 = host
        .iomem_base64
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or("the host reported no /proc/iomem")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the host's /proc/iomem is not base64: {e}"))?;
    coverage::parse_iomem(&String::from_utf8_lossy(&bytes))
        .map_err(|e| format!("the host's /proc/iomem: {e}"))
}

/// Chunks of the image in flight between the S3 stream and the LiME
/// check: the check outruns the network, so a few suffice.
const SCAN_QUEUE_CHUNKS: usize = 16;

/// The image's bytes, as they come from S3, for the blocking LiME walk.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        buf.get_mut(..n)
            .ok_or_else(|| std::io::Error::other("read buffer"))?
            .copy_from_slice(&chunk);
        Ok(n)
    }
}

/// One pass over the stored image: its SHA-256 (whole and per part) and,
/// from the same bytes, its LiME structure with the zero pages of each
/// range.
async fn scan_image(
    ctx: &StepContext,
    log: &StepLog<'_>,
    image: &S3Uri,
    part_sizes: &[u64],
) -> Result<
    (
        firebreak_forensics::hash::Digest,
        Vec<firebreak_forensics::hash::Digest>,
        Result<lime::Summary, lime::LimeError>,
    ),
    StepError,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(SCAN_QUEUE_CHUNKS);
    let walker = tokio::task::spawn_blocking(move || {
        lime::check(ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        })
    });
    let hashed = evidence::hash_object_tapped(ctx, log, image, part_sizes, Some(tx)).await;
    let structure = walker
        .await
        .map_err(|e| StepError::with_source(ErrorName::Internal, "the LiME check", e))?;
    let (digest, parts) = hashed?;
    Ok((digest, parts, structure))
}

/// The evidence of a capture already verified (from its custody records).
async fn verified_before(
    ctx: &StepContext,
    log: &StepLog<'_>,
    input: &AwaitCaptureInput,
) -> Result<Option<MemoryEvidence>, StepError> {
    let c = &input.capture;
    let ledger =
        crate::evidence::custody::read_ledger(ctx, log, &input.evidence_bucket, &c.case_id).await?;
    let records = ledger.readable();
    let Some(v) = records.iter().find(|r| {
        r.evidence_id == c.evidence_id
            && r.event == Event::Verified
            && r.kind == "memory-image"
            && !crate::evidence::custody::failed_note(r.note.as_deref())
    }) else {
        return Ok(None);
    };
    let acquired = records.iter().find(|r| {
        r.evidence_id == c.evidence_id && r.event == Event::Acquired && r.kind == "memory-image"
    });
    let kernel_release = acquired
        .and_then(|a| a.note.as_deref())
        .and_then(|n| n.strip_prefix("kernel "))
        .and_then(|n| n.split(';').next())
        .unwrap_or_default()
        .to_string();
    let details = v.details.as_ref();
    let host = |k: &str| {
        details
            .and_then(|d| d.get("host"))
            .and_then(|h| h.get(k))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    Ok(Some(MemoryEvidence {
        evidence_id: c.evidence_id.clone(),
        location: v.location.uri(),
        size: v.size.unwrap_or(0),
        sha256: v.sha256.clone().unwrap_or_default(),
        host_sha256: v.host_sha256.clone().unwrap_or_default(),
        kernel_release,
        tool: acquired.map(|a| a.tool.clone()).unwrap_or_default(),
        tool_sha256: acquired
            .map(|a| a.tool_version.trim_start_matches("sha256:").to_string())
            .unwrap_or_default(),
        retained_until: None,
        custody_sequence: v.sequence,
        coverage: details
            .and_then(|d| d.get("coverage"))
            .and_then(coverage::Coverage::from_record),
        fallback_reason: host("fallback_reason"),
        lockdown: host("lockdown"),
    }))
}

/// Completes the multipart upload with the parts the host reported. S3
/// checks each part's ETag (its MD5) as it completes and refuses a part
/// that is not there or differs (`InvalidPart`); the whole image is then
/// re-hashed off the host. (ListParts is not used: the parts the host
/// reports are the ones that count, and moto answers it with an XML root
/// the SDK rejects.) Returns the image's version id; an upload completed
/// by an earlier run is found as the object.
async fn complete_upload(
    ctx: &StepContext,
    log: &StepLog<'_>,
    c: &CaptureStarted,
    reported: &[PartReport],
) -> Result<Option<String>, StepError> {
    let s3 = &ctx.aws.s3;
    for (i, r) in reported.iter().enumerate() {
        if usize::try_from(r.number).ok() != Some(i + 1) {
            return Err(StepError::verification(format!(
                "the host reported part {} in position {}: parts must be numbered 1, 2, ...",
                r.number,
                i + 1
            )));
        }
    }
    if reported.is_empty() {
        return Err(StepError::new(
            ErrorName::CaptureFailed,
            "the host reported no part".to_string(),
        ));
    }
    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(
            reported
                .iter()
                .map(|p| {
                    CompletedPart::builder()
                        .part_number(p.number)
                        .e_tag(format!("\"{}\"", strip_quotes(&p.etag)))
                        .build()
                })
                .collect(),
        ))
        .build();
    let params = format!(
        "s3://{}/{} ({} parts, ETags as the host reported them)",
        c.bucket,
        c.image_key,
        reported.len()
    );
    match s3
        .complete_multipart_upload()
        .bucket(&c.bucket)
        .key(&c.image_key)
        .upload_id(&c.upload_id)
        .multipart_upload(completed)
        .send()
        .await
    {
        Ok(out) => {
            log.done("s3:CompleteMultipartUpload", params);
            Ok(out.version_id().map(str::to_string))
        }
        Err(e) => match error_code(&e).as_deref() {
            Some("NoSuchUpload") => {
                // Completed before (or aborted): the object tells.
                log.read(
                    "s3:HeadObject",
                    format!("s3://{}/{}", c.bucket, c.image_key),
                );
                match s3
                    .head_object()
                    .bucket(&c.bucket)
                    .key(&c.image_key)
                    .send()
                    .await
                {
                    Ok(h) => Ok(h.version_id().map(str::to_string)),
                    Err(_) => Err(StepError::new(
                        ErrorName::CaptureFailed,
                        format!("the upload {} is gone and no image was stored", c.upload_id),
                    )),
                }
            }
            Some("InvalidPart") | Some("InvalidPartOrder") | Some("EntityTooSmall") => {
                Err(StepError::verification(format!(
                    "S3 refused the parts the host reported: {}",
                    aws_error("s3:CompleteMultipartUpload", e)
                )))
            }
            _ => Err(aws_error("s3:CompleteMultipartUpload", e)),
        },
    }
}

/// Whether the SSM agent of an instance answers (`Online`), as
/// DescribeInstanceInformation says: `Ok(Some(status))` with its
/// PingStatus, `Ok(None)` when the instance is not registered with SSM
/// (no agent, no instance profile allowing it, or no route to SSM).
pub async fn agent_ping_status(
    ctx: &StepContext,
    instance: &str,
) -> Result<Option<String>, StepError> {
    let log = ctx.log("preflight");
    log.read(
        "ssm:DescribeInstanceInformation",
        format!("Filters=[InstanceIds={instance}]"),
    );
    let out = ctx
        .aws
        .ssm
        .describe_instance_information()
        .filters(
            aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .values(instance)
                .build()
                .map_err(|e| StepError::invalid_input(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| crate::error::aws_error("ssm:DescribeInstanceInformation", e))?;
    Ok(out
        .instance_information_list()
        .iter()
        .find(|i| i.instance_id() == Some(instance))
        .map(|i| {
            i.ping_status()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "unknown".into())
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(offered: &[(&str, char)]) -> CaptureStarted {
        let input = start_input(MemoryOptions {
            tools_bucket: "tools".into(),
            ..MemoryOptions::default()
        });
        let manifest = tools::Manifest::default();
        let at = "2026-12-06T07:00:00Z".parse().expect("time");
        let facts = CaptureFacts {
            attempt: 1,
            evidence_id: "ev-0001".into(),
            memory_mib: 1024,
            manifest: &manifest,
            started_at: at,
            lifetime: 3600,
            expiry_unknown: false,
            upload_slots: 4,
            dry_run: false,
        };
        let (case, id) = (
            input.case_id.parse().expect("case"),
            input.instance_id.parse().expect("id"),
        );
        let mut c = plan_capture(&input, &case, &id, &facts).expect("plan");
        c.offered = offered
            .iter()
            .map(|(k, h)| (k.to_string(), h.to_string().repeat(64)))
            .collect();
        c
    }

    fn host_done(image_sha: char, parts: &[char]) -> HostDone {
        HostDone {
            kernel_release: "6.1.0-13-amd64".into(),
            tool: "lime".into(),
            tool_sha256: "a".repeat(64),
            image_size: 3 * MIB,
            image_sha256: image_sha.to_string().repeat(64),
            parts: parts
                .iter()
                .enumerate()
                .map(|(n, h)| PartReport {
                    number: i32::try_from(n + 1).expect("few"),
                    etag: format!("etag{n}"),
                    size: MIB,
                    sha256: h.to_string().repeat(64),
                })
                .collect(),
            started_at: "2026-12-06T07:01:00Z".into(),
            finished_at: "2026-12-06T07:02:00Z".into(),
            host: Box::default(),
        }
    }

    fn off_host(image_sha: char, parts: &[char], ram_end: u64) -> OffHost {
        let zeros = coverage::ZeroStats::default();
        let image = [coverage::ImageRange {
            start: 0x1000,
            end: 0x1000 + 3 * MIB - 1,
            zeros,
        }];
        let ram = [coverage::RamRange {
            start: 0x1000,
            end: ram_end,
        }];
        OffHost {
            digest: Digest {
                sha256: image_sha.to_string().repeat(64),
                size: 3 * MIB,
            },
            part_digests: parts
                .iter()
                .map(|h| Digest {
                    sha256: h.to_string().repeat(64),
                    size: MIB,
                })
                .collect(),
            unsound: None,
            no_memory_map: None,
            cover: Some(coverage::coverage(&image, Some(&ram), coverage::Tool::Lime)),
        }
    }

    /// The verdicts on a capture: verified when every hash agrees and the
    /// image holds the host's RAM; MISMATCH (a tool not offered, a part
    /// changed on the way) before FAILED (RAM missing, no memory map).
    #[test]
    fn a_capture_is_judged_from_the_host_and_the_stored_image() {
        let c = started(&[("lime:6.1.0-13-amd64", 'a')]);
        let full = 0x1000 + 3 * MIB - 1;
        let sound = judge(
            &c,
            &host_done('f', &['1', '2', '3']),
            &off_host('f', &['1', '2', '3'], full),
        );
        assert!(!sound.rejected(), "{}", sound.note);
        let mut changed = host_done('f', &['1', '2', '3']);
        changed.tool_sha256 = "e".repeat(64);
        let mismatch = judge(&c, &changed, &off_host('d', &['1', '9', '3'], full));
        let mut short = off_host('f', &['1', '2', '3'], full + 2 * MIB);
        let short_verdict = judge(&c, &host_done('f', &['1', '2', '3']), &short);
        short.no_memory_map = Some("the host reported no /proc/iomem".into());
        short.cover = None;
        short.unsound = None;
        let unmapped = judge(&c, &host_done('f', &['1', '2', '3']), &short);
        insta::assert_json_snapshot!([sound, mismatch, short_verdict, unmapped]);
    }

    fn tool(key: &str, sha: char) -> tools::ToolObject {
        tools::ToolObject {
            key: key.into(),
            version_id: Some("v1".into()),
            sha256: sha.to_string().repeat(64),
            size: 1 << 20,
            added_at: "2026-11-30T08:00:00Z".parse().expect("time"),
        }
    }

    fn start_input(options: MemoryOptions) -> StartCaptureInput {
        StartCaptureInput {
            case_id: "case-2026-12-06".into(),
            instance_id: "i-0123456789abcdef0".into(),
            evidence_bucket: "evidence".into(),
            evidence_lock: Lock::default(),
            options,
        }
    }

    /// The capture of a 16 GiB instance, second attempt, with one LiME
    /// module and AVML: keys, parts, tools offered and deadline.
    #[test]
    fn a_capture_is_planned_from_memory_and_tools() {
        let manifest = tools::Manifest {
            lime: [(
                "6.1.0-13-amd64".to_string(),
                tool("lime/6.1.0-13-amd64.ko", 'a'),
            )]
            .into(),
            avml: Some(tool("avml/avml", 'b')),
        };
        let input = start_input(MemoryOptions {
            tools_bucket: "tools".into(),
            lime_timeout_ms: 1000,
            ..MemoryOptions::default()
        });
        let started_at = "2026-12-06T07:00:00Z".parse().expect("time");
        let facts = CaptureFacts {
            attempt: 2,
            evidence_id: "ev-0001".into(),
            memory_mib: 16_384,
            manifest: &manifest,
            started_at,
            lifetime: url_lifetime(None, 16_384, None, started_at).expect("lifetime"),
            expiry_unknown: false,
            upload_slots: check_options(&input.options).expect("options"),
            dry_run: false,
        };
        let (case, id) = (
            input.case_id.parse().expect("case"),
            input.instance_id.parse().expect("id"),
        );
        insta::assert_json_snapshot!(plan_capture(&input, &case, &id, &facts).expect("plan"));
    }

    /// Parts asked too small for the memory are refused before anything
    /// is created; so are options out of range.
    #[test]
    fn a_capture_that_cannot_hold_the_memory_is_refused() {
        let manifest = tools::Manifest::default();
        let mut input = start_input(MemoryOptions {
            tools_bucket: "tools".into(),
            part_size_mib: Some(5),
            ..MemoryOptions::default()
        });
        let facts = CaptureFacts {
            attempt: 1,
            evidence_id: "ev".into(),
            memory_mib: 786_432,
            manifest: &manifest,
            started_at: Utc::now(),
            lifetime: 3600,
            expiry_unknown: false,
            upload_slots: 4,
            dry_run: false,
        };
        let (case, id) = (
            input.case_id.parse().expect("case"),
            input.instance_id.parse().expect("id"),
        );
        let e = plan_capture(&input, &case, &id, &facts).expect_err("too small");
        assert!(
            e.message.contains("cannot hold 786432 MiB"),
            "{}",
            e.message
        );
        input.options.upload_slots = Some(0);
        assert!(check_options(&input.options).is_err());
        input.options.upload_slots = None;
        input.options.tools_bucket.clear();
        assert!(check_options(&input.options).is_err());
    }

    #[test]
    fn parts_hold_the_whole_memory_and_stay_few() {
        for mib in [512, 1024, 8192, 65_536, 786_432] {
            let size = part_size_for(mib);
            let count = part_count_for(mib, size);
            assert!(size >= 8 * MIB && size.is_multiple_of(MIB), "{mib}");
            assert!(count * size >= mib * MIB + mib * MIB / 20, "{mib}");
            assert!(count <= 1000, "{mib}: {count} parts");
        }
    }
}
