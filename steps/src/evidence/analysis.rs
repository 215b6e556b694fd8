//! `analyze_memory`: Volatility 3 on a captured image, where time and disk
//! are not limited (`firebreak analyze`, a Fargate task or a forensic
//! instance; never a 15-minute Lambda).
//!
//! The image is copied from the evidence bucket and its SHA-256 checked
//! against the custody record before anything reads it (NIST SP 800-86:
//! examine a verified copy). Its LiME structure is validated (an AVML
//! image converted) before Volatility runs, because Volatility silently
//! misreads a corrupt image. `banners.Banners` names the kernel; with a
//! symbol table for that exact banner the Linux plugins run, each under a
//! timeout; without one, the missing table is a finding with the banner
//! and the command that builds it. Every output is stored as evidence with
//! a custody record.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use firebreak_forensics::custody::{CustodyRecord, Event, Location, NewRecord, Source};
use firebreak_forensics::hash::Hasher;
use firebreak_forensics::lime::{self, Format};
use firebreak_forensics::volatility::{self, Banner, Finding, Severity};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::evidence::{self, keys, Lock, Put, S3Uri};
use crate::step::Step;

/// Runs Volatility 3 on a memory image and stores what it finds.
#[derive(Debug)]
pub struct AnalyzeMemory;

/// Where and how the analysis runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisOptions {
    /// The Volatility 3 program (default `vol` on the PATH, or
    /// `FIREBREAK_VOL`).
    #[serde(default)]
    pub vol: Option<String>,
    /// Directory of ISF symbol tables (`.json`, `.json.xz`).
    #[serde(default)]
    pub symbols_dir: Option<String>,
    /// Where the image is copied (default the system's temporary
    /// directory); it needs the image's size free.
    #[serde(default)]
    pub work_dir: Option<String>,
    /// Kernel modules expected on the host; others are reported.
    #[serde(default)]
    pub module_baseline: Vec<String>,
    /// Per-plugin timeout in seconds (default 30 minutes; banners 20).
    #[serde(default)]
    pub plugin_timeout_seconds: Option<u64>,
}

/// What `analyze_memory` is asked to analyse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnalyzeInput {
    /// The case the image belongs to.
    pub case_id: String,
    /// `s3://bucket/key?versionId=...` of the image.
    pub evidence: String,
    /// The evidence bucket of the case (its custody ledger and the outputs).
    pub evidence_bucket: String,
    /// How the outputs are locked (retention, KMS key, legal hold).
    #[serde(default)]
    pub evidence_lock: Lock,
    /// Who runs the analysis, for the custody records.
    pub actor: String,
    /// Where Volatility, the symbols and the work directory are.
    #[serde(default)]
    pub options: AnalysisOptions,
    /// The tools bucket, where `firebreak symbols add` keeps symbol
    /// tables by banner (looked in when the symbols directory has none).
    #[serde(default)]
    pub tools_bucket: Option<String>,
}

/// What the image's LiME structure says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageSummary {
    /// `lime` or `avml_compressed` (converted to LiME before analysis).
    pub format: String,
    /// Memory ranges in the image.
    pub ranges: usize,
    /// Bytes of memory the ranges hold.
    pub memory_bytes: u64,
    /// The image file's size in bytes (headers included).
    pub file_size: u64,
}

/// How one Volatility plugin ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginStatus {
    /// It ran and printed JSON.
    Ok,
    /// It failed (its last lines of stderr in `detail`).
    Failed,
    /// It ran past its time limit and was stopped.
    TimedOut,
    /// Not run: no symbol table for the kernel.
    Skipped,
}

/// One Volatility plugin's run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginRun {
    /// The plugin (`linux.pslist.PsList`, ...).
    pub plugin: String,
    /// How it ended.
    pub status: PluginStatus,
    /// Where its JSON output is kept.
    pub output: Option<String>,
    /// Rows of its JSON output, when it gave any.
    pub rows: Option<usize>,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// Why it failed or was skipped, or what its output did not say.
    pub detail: Option<String>,
}

/// What an analysis found, and where its outputs are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisOutput {
    /// The evidence id of the image analysed.
    pub evidence_id: String,
    /// The image as `s3://bucket/key?versionId=...`.
    pub image: String,
    /// The SHA-256 of the copy analysed (equal to custody's).
    pub sha256: String,
    /// The image's structure.
    pub image_summary: ImageSummary,
    /// Volatility's version, as it printed it.
    pub volatility_version: Option<String>,
    /// The kernel banners found in the image.
    pub banners: Vec<Banner>,
    /// The kernel release (`uname -r`) of the Linux banner, when found.
    pub kernel_release: Option<String>,
    /// True when a symbol table fitted the image and the plugins that need
    /// one ran.
    pub symbols_found: bool,
    /// The symbol table used: a path under the symbols directory, or the
    /// tools bucket's `s3://` location.
    #[serde(default)]
    pub symbols_table: Option<String>,
    /// Every plugin, in the order run (skipped ones included).
    pub plugins: Vec<PluginRun>,
    /// What the plugins show, most severe first.
    pub findings: Vec<Finding>,
    /// Where the findings are kept.
    pub findings_location: Option<String>,
}

impl StepDef for AnalyzeMemory {
    const NAME: &'static str = "analyze_memory";
    const SUMMARY: &'static str =
        "Verify and validate a memory image, run Volatility 3 (banners, then the Linux plugins), store outputs and findings with custody.";
    const MUTATES: bool = true;
    type Input = AnalyzeInput;
    type Output = AnalysisOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::ResourceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
            ErrorName::EvidenceInvalid,
            ErrorName::AnalysisFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:ListBucket",
                    "s3:ListBucketVersions",
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

fn internal(e: impl std::fmt::Display) -> StepError {
    StepError::new(ErrorName::Internal, e.to_string())
}

/// A private working directory, removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn work_dir(base: Option<&str>, evidence_id: &str) -> Result<WorkDir, StepError> {
    let base = base.map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(format!(
        "firebreak-analysis-{evidence_id}-{}",
        std::process::id()
    ));
    // Only this user may read the copy of the memory.
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .and_then(|()| {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir.join("volcache"))
        })
        .map_err(|e| {
            StepError::invalid_input(format!(
                "cannot make the work directory {}: {e}",
                dir.display()
            ))
        })?;
    Ok(WorkDir(dir))
}

/// Copies an object to a file, hashing it on the way.
async fn download(
    ctx: &StepContext,
    log: &StepLog<'_>,
    uri: &S3Uri,
    to: &Path,
) -> Result<firebreak_forensics::hash::Digest, StepError> {
    log.read("s3:GetObject", format!("{uri} -> {}", to.display()));
    let mut req = ctx.aws.s3.get_object().bucket(&uri.bucket).key(&uri.key);
    if let Some(v) = &uri.version_id {
        req = req.version_id(v);
    }
    let out = req.send().await.map_err(|e| {
        let mut err = aws_error(&format!("s3:GetObject {uri}"), e);
        if err.name == ErrorName::AwsRequestFailed && err.message.contains("NoSuchKey") {
            err.name = ErrorName::ResourceNotFound;
        }
        err
    })?;
    let mut body = out.body;
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| StepError::invalid_input(format!("{}: {e}", to.display())))?;
    let mut hasher = Hasher::new();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| StepError::new(ErrorName::AwsUnavailable, format!("reading {uri}: {e}")))?
    {
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| StepError::invalid_input(format!("writing {}: {e}", to.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| StepError::invalid_input(format!("writing {}: {e}", to.display())))?;
    Ok(hasher.finish())
}

/// Validates the image (and converts AVML to LiME). Returns the file to
/// analyse.
async fn validate(image: &Path) -> Result<(lime::Summary, PathBuf), StepError> {
    let path = image.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)
            .map_err(|e| StepError::invalid_input(format!("{}: {e}", path.display())))?;
        let summary = lime::check(std::io::BufReader::new(file)).map_err(|e| {
            StepError::new(
                ErrorName::EvidenceInvalid,
                format!("the image is not a valid LiME/AVML file: {e}; Volatility was not run"),
            )
        })?;
        if summary.format == Format::Lime {
            return Ok((summary, path));
        }
        let converted = path.with_extension("converted.lime");
        let input = std::fs::File::open(&path)
            .map_err(|e| StepError::invalid_input(format!("{}: {e}", path.display())))?;
        let out = std::fs::File::create(&converted)
            .map_err(|e| StepError::invalid_input(format!("{}: {e}", converted.display())))?;
        let mut w = std::io::BufWriter::new(out);
        lime::to_lime(std::io::BufReader::new(input), &mut w).map_err(|e| {
            StepError::new(ErrorName::EvidenceInvalid, format!("converting AVML: {e}"))
        })?;
        Ok((summary, converted))
    })
    .await
    .map_err(internal)?
}

/// One Volatility run.
struct VolRun {
    status: PluginStatus,
    stdout: Vec<u8>,
    stderr: String,
    seconds: f64,
}

async fn run_vol(program: &str, args: &[String], timeout: Duration) -> Result<VolRun, StepError> {
    let started = std::time::Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            StepError::new(
                ErrorName::AnalysisFailed,
                format!("cannot run Volatility 3 ({program}): {e}; install it (pip install volatility3) or give its path with --vol"),
            )
        })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(VolRun {
            status: if out.status.success() {
                PluginStatus::Ok
            } else {
                PluginStatus::Failed
            },
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            seconds: started.elapsed().as_secs_f64(),
        }),
        Ok(Err(e)) => Err(StepError::new(
            ErrorName::AnalysisFailed,
            format!("Volatility 3 ({program}): {e}"),
        )),
        // The child is killed when its future is dropped (kill_on_drop).
        Err(_) => Ok(VolRun {
            status: PluginStatus::TimedOut,
            stdout: Vec::new(),
            stderr: String::new(),
            seconds: started.elapsed().as_secs_f64(),
        }),
    }
}

fn volatility_version(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Volatility 3 Framework "))
        .map(|v| v.trim().to_string())
}

/// How deep the symbols directory is searched: Volatility itself looks
/// through `symbols/linux/**`; packs nest a few levels.
const SYMBOLS_DEPTH: usize = 8;

/// What a symbols directory holds for a banner.
#[derive(Debug, Default)]
struct LocalTables {
    /// A table built for exactly this banner.
    matched: Option<PathBuf>,
    /// Tables in a compression read here (gzip, bzip2): Volatility may
    /// still find one for the banner.
    unreadable: bool,
}

/// Looks through a symbols directory, recursively (as Volatility does),
/// for the table of this banner: `.json` and `.json.xz` are read and
/// matched; other compressions count as "let Volatility try".
fn local_tables(dir: Option<&str>, banner: &str) -> LocalTables {
    let mut out = LocalTables::default();
    let Some(dir) = dir else { return out };
    let mut stack = vec![(PathBuf::from(dir), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                if depth < SYMBOLS_DEPTH {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") || name.ends_with(".json.xz") {
                let matched = std::fs::read(&path)
                    .ok()
                    .and_then(|b| volatility::isf_file_banner(&name, &b).ok().flatten())
                    .is_some_and(|b| b == banner);
                if matched {
                    out.matched = Some(path);
                    return out;
                }
            } else if name.ends_with(".json.gz") || name.ends_with(".json.bz2") {
                out.unreadable = true;
            }
        }
    }
    out
}

/// The tools bucket's table for a banner, downloaded under `dir/linux/`
/// and checked against the index's SHA-256; its `s3://` location.
async fn bucket_table(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    banner: &str,
    dir: &Path,
) -> Result<Option<String>, StepError> {
    let index = match crate::evidence::tools::read_symbols_index(ctx, log, bucket).await {
        Ok(Some(index)) => index,
        // No tools bucket (or no index in it): nothing to find there.
        Ok(None) => return Ok(None),
        Err(e) if e.name == ErrorName::ResourceNotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(t) = index.tables.get(banner) else {
        return Ok(None);
    };
    let uri = S3Uri {
        bucket: bucket.to_string(),
        key: t.key.clone(),
        version_id: t.version_id.clone(),
    };
    let name = t.key.rsplit('/').next().unwrap_or("table.json.xz");
    std::fs::create_dir_all(dir.join("linux")).map_err(|e| {
        StepError::with_source(ErrorName::Internal, "making the symbols directory", e)
    })?;
    let path = dir.join("linux").join(name);
    let got = download(ctx, log, &uri, &path).await?;
    if got.sha256 != t.sha256 {
        return Err(StepError::verification(format!(
            "the symbol table {uri} hashes to {}, the index says {}: not used",
            got.sha256, t.sha256
        )));
    }
    Ok(Some(uri.to_string()))
}

/// Volatility's message when no symbol table matched.
fn unsatisfied_symbols(run: &VolRun) -> bool {
    let out = String::from_utf8_lossy(&run.stdout);
    out.contains("Unsatisfied requirement") && out.contains("symbol_table_name")
}

/// Stores analysis outputs as evidence, each with its custody record.
struct Store<'a> {
    ctx: &'a StepContext,
    log: &'a StepLog<'a>,
    bucket: &'a str,
    lock: &'a Lock,
    prefix: String,
    source: &'a Source,
    evidence_id: &'a str,
    image_uri: String,
    case_id: &'a str,
    actor: &'a str,
}

impl Store<'_> {
    async fn put(
        &self,
        plugin: &str,
        bytes: Vec<u8>,
        tool_version: Option<String>,
    ) -> Result<String, StepError> {
        let (ctx, log, bucket) = (self.ctx, self.log, self.bucket);
        let key = format!("{}{plugin}.json", self.prefix);
        let d = firebreak_forensics::hash::sha256_bytes(&bytes);
        let version = match evidence::put_new_locked(
            ctx,
            log,
            bucket,
            &key,
            bytes,
            "application/json",
            self.lock,
        )
        .await?
        {
            Put::Created(s) => s.version_id,
            Put::Exists | Put::Planned => evidence::get(ctx, log, bucket, &key)
                .await?
                .and_then(|(_, v)| v),
        };
        let location = Location::S3 {
            bucket: bucket.to_string(),
            key: key.clone(),
            version_id: version.clone(),
        };
        crate::evidence::custody::append(
            ctx,
            log,
            bucket,
            self.lock,
            NewRecord {
                case_id: self.case_id.to_string(),
                evidence_id: self.evidence_id.to_string(),
                event: Event::Analysed,
                kind: "volatility-output".into(),
                source: self.source.clone(),
                location,
                size: Some(d.size),
                sha256: Some(d.sha256),
                host_sha256: None,
                at: Utc::now(),
                actor: self.actor.to_string(),
                tool: if plugin == "findings" {
                    "firebreak".into()
                } else {
                    format!("volatility3 {plugin}")
                },
                tool_version: tool_version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
                note: Some(format!("from {}", self.image_uri)),
                details: None,
                signing_key: None,
            },
        )
        .await?;
        Ok(S3Uri {
            bucket: bucket.to_string(),
            key,
            version_id: version,
        }
        .to_string())
    }
}

/// The acquired image a request names, from custody, with its version
/// pinned; refused unless it was verified off the host (when firebreak
/// captured it) and no record says it failed its checks.
fn admissible(
    records: &[CustodyRecord],
    uri: &S3Uri,
    case: &str,
) -> Result<(CustodyRecord, S3Uri), StepError> {
    let recorded = records.iter().find(|r| {
        r.event == Event::Acquired
            && match &r.location {
                Location::S3 {
                    bucket: b,
                    key,
                    version_id,
                } => {
                    *b == uri.bucket
                        && *key == uri.key
                        && (uri.version_id.is_none() || *version_id == uri.version_id)
                }
                Location::Snapshot { .. } => false,
            }
    });
    let Some(recorded) = recorded.cloned() else {
        return Err(StepError::new(
            ErrorName::ResourceNotFound,
            format!("case {case} has no custody record of {uri}: only acquired evidence is analysed (see `firebreak evidence list --case {case}`)"),
        ));
    };
    let evidence_id = &recorded.evidence_id;
    // An image whose host and off-host hashes differ is not examined.
    let mismatch = records.iter().find(|r| {
        &r.evidence_id == evidence_id
            && (r.event == Event::Rejected
                || (r.event == Event::Verified
                    && crate::evidence::custody::failed_note(r.note.as_deref()))
                || (r.host_sha256.is_some() && r.host_sha256 != r.sha256))
    });
    // A capture firebreak made is analysed once verified off the host: an
    // image with only its acquisition record (the wait died before
    // checking it) has not been shown to be whole.
    let captured = recorded.kind == "memory-image" && recorded.host_sha256.is_some();
    let verified = records.iter().any(|r| {
        &r.evidence_id == evidence_id
            && r.event == Event::Verified
            && !crate::evidence::custody::failed_note(r.note.as_deref())
    });
    if captured && !verified && mismatch.is_none() {
        return Err(StepError::verification(format!(
            "{uri} was never verified off the host (case {case} holds no verification record for evidence {evidence_id}): run the wait again (`firebreak resume` of the response) before analysing"
        )));
    }
    if let Some(m) = mismatch {
        return Err(StepError::verification(format!(
            "custody record {} says the image failed its checks ({}): not analysed",
            m.sequence,
            m.note
                .as_deref()
                .unwrap_or("host and off-host SHA-256 differ")
        )));
    }
    let image_uri = S3Uri {
        version_id: match (&uri.version_id, &recorded.location) {
            (Some(v), _) => Some(v.clone()),
            (None, Location::S3 { version_id, .. }) => version_id.clone(),
            _ => None,
        },
        ..uri.clone()
    };
    Ok((recorded, image_uri))
}

/// Copies the image into the work directory and checks the copy against
/// custody and LiME's structure; gives its digest, summary and the path
/// Volatility reads.
async fn verified_copy(
    ctx: &StepContext,
    log: &StepLog<'_>,
    recorded: &CustodyRecord,
    image_uri: &S3Uri,
    work: &WorkDir,
) -> Result<(firebreak_forensics::hash::Digest, lime::Summary, PathBuf), StepError> {
    let local = work.0.join("memory.img");
    log.progress(&format!("copying {image_uri} for analysis"));
    let digest = download(ctx, log, image_uri, &local).await?;
    if recorded.sha256.as_deref() != Some(digest.sha256.as_str()) {
        return Err(StepError::verification(format!(
            "the copy of {image_uri} hashes to {} ({} bytes); custody record {} says {}: not analysed",
            digest.sha256,
            digest.size,
            recorded.sequence,
            recorded.sha256.as_deref().unwrap_or("nothing")
        )));
    }
    let (summary, image) = validate(&local).await?;
    log.progress(&format!(
        "{image_uri}: {} ranges, {} bytes of memory, SHA-256 verified",
        summary.ranges.len(),
        summary.memory_bytes
    ));
    Ok((digest, summary, image))
}

/// Where the operator can put a symbol table, as the finding says it.
fn symbols_location(symbols_dir: Option<&str>, tools_bucket: Option<&str>) -> String {
    match (symbols_dir, tools_bucket) {
        (Some(d), Some(b)) => format!("{d} or s3://{b}/symbols/ (`firebreak symbols add`)"),
        (Some(d), None) => d.to_string(),
        (None, Some(b)) => format!("s3://{b}/symbols/ (`firebreak symbols add`)"),
        (None, None) => {
            "a symbols directory (--symbols-dir) or the tools bucket (`firebreak symbols add`)"
                .into()
        }
    }
}

/// The symbol table Volatility is given for the image's kernel.
struct Symbols {
    /// The directory Volatility searches (`-s`).
    dir: Option<String>,
    /// The table that matched the banner, where it came from.
    table: Option<String>,
    /// Where the operator can put one, for the finding that none fits.
    location: String,
}

/// How Volatility is run on one image.
struct Vol<'a> {
    /// The `vol` program.
    program: &'a str,
    /// The image's path.
    image: String,
    /// Volatility's cache directory.
    cache: String,
    /// The limit per plugin.
    plugin_timeout: Duration,
}

/// What the plugins that need symbols gave.
#[derive(Default)]
struct PluginResults {
    plugins: Vec<PluginRun>,
    findings: Vec<Finding>,
    /// Each plugin's parsed output, for the cross-view comparisons.
    outputs: Vec<(String, Value)>,
    /// False when Volatility could not use the symbol table.
    symbols_fit: bool,
}

/// banners.Banners: the kernel the image holds; stored as evidence.
async fn run_banners(
    vol: &Vol<'_>,
    timeout: Duration,
    store: &Store<'_>,
) -> Result<(Vec<Banner>, Option<String>, PluginRun), StepError> {
    store.log.progress("Volatility 3: banners.Banners");
    let args = volatility::command(&vol.image, &vol.cache, None, volatility::BANNERS);
    let run = run_vol(vol.program, &args, timeout).await?;
    let version = volatility_version(&run.stderr);
    if run.status != PluginStatus::Ok {
        return Err(StepError::new(
            ErrorName::AnalysisFailed,
            format!(
                "banners.Banners {} after {:.0} s: {}",
                if run.status == PluginStatus::TimedOut {
                    "timed out"
                } else {
                    "failed"
                },
                run.seconds,
                run.stderr.trim()
            ),
        ));
    }
    let json: Value = serde_json::from_slice(&run.stdout).map_err(|e| {
        StepError::new(
            ErrorName::AnalysisFailed,
            format!(
                "banners.Banners printed no JSON ({e}): {}",
                run.stderr.trim()
            ),
        )
    })?;
    let banners = volatility::parse_banners(&json)
        .map_err(|e| StepError::new(ErrorName::AnalysisFailed, e.to_string()))?;
    let entry = PluginRun {
        plugin: volatility::BANNERS.into(),
        status: PluginStatus::Ok,
        output: Some(
            store
                .put(volatility::BANNERS, run.stdout, version.clone())
                .await?,
        ),
        rows: Some(banners.len()),
        seconds: run.seconds,
        detail: None,
    };
    Ok((banners, version, entry))
}

/// A plugin's run as the output says it: its rows and findings when it
/// gave JSON, why not otherwise.
fn plugin_entry(
    plugin: &str,
    run: &VolRun,
    parsed: Option<&Value>,
    timeout: Duration,
    baseline: &[String],
    findings: &mut Vec<Finding>,
) -> PluginRun {
    let mut entry = PluginRun {
        plugin: plugin.into(),
        status: run.status.clone(),
        output: None,
        rows: None,
        seconds: run.seconds,
        detail: None,
    };
    match (&run.status, parsed) {
        (PluginStatus::Ok, Some(v)) => {
            entry.rows = v.as_array().map(Vec::len);
            match volatility::findings(plugin, v, baseline) {
                Ok(f) => findings.extend(f),
                Err(e) => entry.detail = Some(e.to_string()),
            }
        }
        (PluginStatus::TimedOut, _) => {
            entry.detail = Some(format!("stopped after {} s", timeout.as_secs()));
        }
        (_, _) => {
            entry.status = PluginStatus::Failed;
            let tail: String = run
                .stderr
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ");
            entry.detail = Some(tail);
        }
    }
    entry
}

/// Runs the plugins that need the kernel's symbols, storing each output;
/// stops at the first that says the table does not fit the image.
async fn run_plugins(
    vol: &Vol<'_>,
    symbols: &Symbols,
    banner: &str,
    store: &Store<'_>,
    baseline: &[String],
    version: Option<&String>,
) -> Result<PluginResults, StepError> {
    let (use_dir, table) = (symbols.dir.as_deref(), symbols.table.as_deref());
    let mut r = PluginResults {
        symbols_fit: true,
        ..PluginResults::default()
    };
    for plugin in volatility::PLUGINS {
        store.log.progress(&format!("Volatility 3: {plugin}"));
        let args = volatility::command(&vol.image, &vol.cache, use_dir, plugin);
        let run = run_vol(vol.program, &args, vol.plugin_timeout).await?;
        if run.status == PluginStatus::Failed && unsatisfied_symbols(&run) {
            r.symbols_fit = false;
            r.findings.push(match table {
                // The table matched the banner, yet does not fit the
                // image: another build, or a bad table.
                Some(t) => Finding {
                    severity: Severity::Medium,
                    source: "symbols".into(),
                    title: "the symbol table for this kernel's banner does not fit the image: process, module, network and code-injection analysis did not run".into(),
                    detail: format!("banner: {banner}\ntable: {t}\nVolatility could not satisfy its kernel requirements with it (the table may come from another build of the same release, or be incomplete): build it again from this kernel's own debug symbols"),
                },
                None => volatility::missing_symbols(banner, &symbols.location),
            });
            break;
        }
        let parsed: Option<Value> = serde_json::from_slice(&run.stdout).ok();
        let mut entry = plugin_entry(
            plugin,
            &run,
            parsed.as_ref(),
            vol.plugin_timeout,
            baseline,
            &mut r.findings,
        );
        if let (PluginStatus::Ok, Some(v)) = (&entry.status, parsed) {
            r.outputs.push((plugin.to_string(), v));
            entry.output = Some(store.put(plugin, run.stdout, version.cloned()).await?);
        }
        r.plugins.push(entry);
    }
    Ok(r)
}

/// Finds the symbol table for the banner's kernel: the symbols directory
/// first, then the tools bucket (fetched into the work directory).
async fn find_symbols(
    ctx: &StepContext,
    log: &StepLog<'_>,
    input: &AnalyzeInput,
    symbols_dir: Option<&str>,
    banner: &str,
    work: &WorkDir,
) -> Result<(Symbols, bool), StepError> {
    let tools_bucket = input.tools_bucket.as_deref().filter(|b| !b.is_empty());
    let mut s = Symbols {
        dir: symbols_dir.map(str::to_string),
        table: None,
        location: symbols_location(symbols_dir, tools_bucket),
    };
    let local = local_tables(symbols_dir, banner);
    if let Some(p) = &local.matched {
        s.table = Some(p.display().to_string());
    } else if let Some(tb) = tools_bucket {
        let fetched = work.0.join("symbols");
        if let Some(at) = bucket_table(ctx, log, tb, banner, &fetched).await? {
            log.progress(&format!("symbol table for this kernel from {at}"));
            s.table = Some(at);
            s.dir = Some(fetched.to_string_lossy().into_owned());
        }
    }
    // An unreadable table still goes to Volatility, which says why.
    let usable = s.table.is_some() || local.unreadable;
    Ok((s, usable))
}

#[async_trait]
impl Step for AnalyzeMemory {
    async fn run(ctx: &StepContext, input: AnalyzeInput) -> Result<AnalysisOutput, StepError> {
        let log = ctx.log(Self::NAME);
        let case: crate::ids::CaseId = input
            .case_id
            .parse()
            .map_err(|e: crate::ids::IdError| StepError::invalid_input(e.to_string()))?;
        let uri: S3Uri = input.evidence.parse().map_err(StepError::invalid_input)?;
        let bucket = input.evidence_bucket.as_str();
        let o = &input.options;
        let program = o
            .vol
            .clone()
            .or_else(|| std::env::var("FIREBREAK_VOL").ok())
            .unwrap_or_else(|| "vol".into());
        let symbols_dir = o
            .symbols_dir
            .clone()
            .or_else(|| std::env::var("FIREBREAK_SYMBOLS").ok());

        let ledger =
            crate::evidence::custody::read_ledger(ctx, &log, bucket, case.as_str()).await?;
        let (recorded, image_uri) = admissible(&ledger.readable(), &uri, case.as_str())?;
        let evidence_id = recorded.evidence_id.clone();
        if ctx.is_dry_run() {
            log.not_checked(
                "s3:GetObject",
                format!("{image_uri} (copied and verified, then Volatility 3)"),
                "S3 has no dry run",
            );
            return Err(StepError::invalid_input(
                "analysis has no dry run: it only reads the image and writes its own outputs",
            ));
        }
        let work = work_dir(o.work_dir.as_deref(), &evidence_id)?;
        let (digest, summary, image) =
            verified_copy(ctx, &log, &recorded, &image_uri, &work).await?;

        // Each analysis run keeps its own outputs: a later run (with the
        // symbols built, say) never touches an earlier one's.
        let run_id = format!(
            "{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            &crate::evidence::memory::new_evidence_id()[..8]
        );
        let store = Store {
            ctx,
            log: &log,
            bucket,
            lock: &input.evidence_lock,
            prefix: format!("{}{run_id}/", keys::analysis(case.as_str(), &evidence_id)),
            source: &recorded.source,
            evidence_id: &evidence_id,
            image_uri: image_uri.to_string(),
            case_id: &input.case_id,
            actor: &input.actor,
        };
        let vol = Vol {
            program: &program,
            image: image.to_string_lossy().into_owned(),
            cache: work.0.join("volcache").to_string_lossy().into_owned(),
            plugin_timeout: o
                .plugin_timeout_seconds
                .map_or(volatility::PLUGIN_TIMEOUT, Duration::from_secs),
        };
        let banners_timeout = o
            .plugin_timeout_seconds
            .map_or(volatility::BANNERS_TIMEOUT, Duration::from_secs);
        let (banners, version, banners_run) = run_banners(&vol, banners_timeout, &store).await?;
        let banner = banners
            .iter()
            .find(|b| b.banner.starts_with("Linux version "))
            .map(|b| b.banner.clone());
        let kernel_release = banner.as_deref().and_then(volatility::kernel_release);
        let mut r = PluginResults::default();
        let mut symbols_table = None;
        match &banner {
            None => r.findings.push(Finding {
                severity: Severity::High,
                source: volatility::BANNERS.into(),
                title: "no Linux banner in the image".into(),
                detail: "the image holds no `Linux version ...` string: it may be empty, encrypted or not a memory image of a Linux host".into(),
            }),
            Some(b) => {
                let (symbols, usable) =
                    find_symbols(ctx, &log, &input, symbols_dir.as_deref(), b, &work).await?;
                symbols_table = symbols.table.clone();
                if usable {
                    r = run_plugins(&vol, &symbols, b, &store, &o.module_baseline, version.as_ref())
                        .await?;
                } else {
                    r.findings.push(volatility::missing_symbols(b, &symbols.location));
                }
            }
        }
        let mut plugins = vec![banners_run];
        plugins.append(&mut r.plugins);
        if !r.symbols_fit {
            for plugin in volatility::PLUGINS {
                if !plugins.iter().any(|p| p.plugin == plugin) {
                    plugins.push(PluginRun {
                        plugin: plugin.into(),
                        status: PluginStatus::Skipped,
                        output: None,
                        rows: None,
                        seconds: 0.0,
                        detail: Some("no symbol table for the kernel".into()),
                    });
                }
            }
        }
        let mut findings = r.findings;
        // Views compared: what one plugin hides another shows.
        findings.extend(volatility::cross_view(&r.outputs));
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let findings_json = serde_json::to_vec_pretty(&serde_json::json!({
            "case_id": input.case_id,
            "evidence_id": evidence_id,
            "image": image_uri.to_string(),
            "sha256": digest.sha256,
            "banners": banners,
            "kernel_release": kernel_release,
            "findings": findings,
        }))
        .map_err(internal)?;
        let findings_location = Some(store.put("findings", findings_json, None).await?);
        Ok(AnalysisOutput {
            evidence_id,
            image: image_uri.to_string(),
            sha256: digest.sha256,
            image_summary: ImageSummary {
                format: match summary.format {
                    Format::Lime => "lime".into(),
                    Format::AvmlCompressed => "avml_compressed".into(),
                },
                ranges: summary.ranges.len(),
                memory_bytes: summary.memory_bytes,
                file_size: summary.file_size,
            },
            volatility_version: version,
            banners,
            kernel_release,
            symbols_found: r.symbols_fit,
            symbols_table,
            plugins,
            findings,
            findings_location,
        })
    }
}

/// Reads what an analysis stored (its findings), for the execution that
/// ran it in a container.
#[derive(Debug)]
pub struct ReadAnalysis;

/// Which analysis to read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReadAnalysisInput {
    /// The case.
    pub case_id: String,
    /// The evidence bucket of the case.
    pub evidence_bucket: String,
    /// The evidence id of the image analysed.
    pub evidence_id: String,
}

/// An analysis's findings as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisSummary {
    /// The evidence id of the image analysed.
    pub evidence_id: String,
    /// The image as `s3://bucket/key?versionId=...`.
    pub image: String,
    /// The kernel release (`uname -r`), when a banner named it.
    pub kernel_release: Option<String>,
    /// The kernel banners found in the image.
    pub banners: Vec<Banner>,
    /// What the plugins showed, most severe first.
    pub findings: Vec<Finding>,
    /// Where the findings are kept.
    pub location: String,
    /// Every output of the analysis run (Volatility's JSON per plugin, and
    /// the findings), each with the SHA-256 its custody record holds.
    #[serde(default)]
    pub outputs: Vec<AnalysisFile>,
}

/// One stored output of an analysis, as its custody record describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisFile {
    /// `s3://bucket/key?versionId=...`.
    pub location: String,
    /// The SHA-256 recorded when it was stored.
    pub sha256: Option<String>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// The program that wrote it (`volatility3 linux.pslist.PsList`, ...).
    pub tool: String,
}

impl StepDef for ReadAnalysis {
    const NAME: &'static str = "read_analysis";
    const SUMMARY: &'static str = "Read the findings a memory analysis stored.";
    const MUTATES: bool = false;
    type Input = ReadAnalysisInput;
    type Output = AnalysisSummary;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::ResourceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:ListBucket",
                    "s3:ListBucketVersions",
                ],
                ["arn:aws:s3:::*"],
            ),
            Statement::allow(["kms:Decrypt"], ["arn:aws:kms:*:*:key/*"]),
        ]
    }
}

#[async_trait]
impl Step for ReadAnalysis {
    async fn run(
        ctx: &StepContext,
        input: ReadAnalysisInput,
    ) -> Result<AnalysisSummary, StepError> {
        let log = ctx.log(Self::NAME);
        let case: crate::ids::CaseId = input
            .case_id
            .parse()
            .map_err(|e: crate::ids::IdError| StepError::invalid_input(e.to_string()))?;
        if input.evidence_id.is_empty()
            || !input
                .evidence_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(StepError::invalid_input(format!(
                "{:?} is not an evidence id",
                input.evidence_id
            )));
        }
        // The latest run's findings (run ids sort by time).
        let prefix = keys::analysis(case.as_str(), &input.evidence_id);
        let key = evidence::list_keys(ctx, &log, &input.evidence_bucket, &prefix)
            .await?
            .into_iter()
            .filter(|k| k.ends_with("/findings.json"))
            .max()
            .unwrap_or_else(|| format!("{prefix}findings.json"));
        let Some((bytes, version)) = evidence::get(ctx, &log, &input.evidence_bucket, &key).await?
        else {
            return Err(StepError::new(
                ErrorName::ResourceNotFound,
                format!(
                    "s3://{}/{key} does not exist: the analysis did not finish",
                    input.evidence_bucket
                ),
            ));
        };
        #[derive(Deserialize)]
        struct Stored {
            image: String,
            kernel_release: Option<String>,
            banners: Vec<Banner>,
            findings: Vec<Finding>,
        }
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| {
            StepError::verification(format!(
                "s3://{}/{key} is not firebreak's findings: {e}",
                input.evidence_bucket
            ))
        })?;
        let outputs = run_outputs(
            &crate::evidence::custody::read_ledger(
                ctx,
                &log,
                &input.evidence_bucket,
                case.as_str(),
            )
            .await?
            .readable(),
            &input.evidence_bucket,
            &input.evidence_id,
            key.trim_end_matches("findings.json"),
        );
        Ok(AnalysisSummary {
            evidence_id: input.evidence_id.clone(),
            image: stored.image,
            kernel_release: stored.kernel_release,
            banners: stored.banners,
            findings: stored.findings,
            location: S3Uri {
                bucket: input.evidence_bucket.clone(),
                key,
                version_id: version,
            }
            .to_string(),
            outputs,
        })
    }
}

/// The outputs one analysis run stored under `run_prefix`, from their
/// custody records (first record of each location wins).
fn run_outputs(
    records: &[CustodyRecord],
    bucket: &str,
    evidence_id: &str,
    run_prefix: &str,
) -> Vec<AnalysisFile> {
    let mut out: Vec<AnalysisFile> = Vec::new();
    for r in records {
        let Location::S3 { bucket: b, key, .. } = &r.location else {
            continue;
        };
        if r.event != Event::Analysed
            || r.evidence_id != evidence_id
            || b != bucket
            || !key.starts_with(run_prefix)
        {
            continue;
        }
        let location = r.location.uri();
        if out.iter().any(|o| o.location == location) {
            continue;
        }
        out.push(AnalysisFile {
            location,
            sha256: r.sha256.clone(),
            size: r.size,
            tool: r.tool.clone(),
        });
    }
    out
}
