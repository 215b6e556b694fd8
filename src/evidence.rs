//! `firebreak evidence list|verify|hold|unhold|hash`: a case's evidence
//! and custody.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use firebreak_forensics::custody::CustodyRecord;
use firebreak_forensics::hash::{sha256_reader, Digest};
use firebreak_steps::case::default_evidence_bucket;
use firebreak_steps::evidence::custody::{read_ledger, verify, ArtifactState, SignatureCheck};
use firebreak_steps::evidence::{hash_object, hold_case, list_versions, S3Uri};
use firebreak_steps::ids::CaseId;
use firebreak_steps::Mode;

use crate::session::Session;
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct EvidenceArgs {
    #[command(subcommand)]
    pub command: EvidenceCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EvidenceCommand {
    /// Every object of a case and the custody chain that covers it.
    List(CaseArgs),
    /// Verify the custody chain and re-hash every artifact (exit 0 intact,
    /// 1 tampered or missing, with the items named).
    Verify(VerifyArgs),
    /// Put an Object Lock legal hold on every object version of a case, so
    /// that no retention can lapse while it is open.
    Hold(CaseArgs),
    /// Lift the legal holds of a case (its retention dates still apply).
    Unhold(CaseArgs),
    /// Write a case's custody ledger as stored first (the versions Object
    /// Lock keeps) into a directory, with versions.json, for
    /// scripts/verify-custody.py or any other checker.
    Export(ExportArgs),
    /// SHA-256 and size of files or S3 objects, streamed in bounded memory.
    Hash(HashArgs),
    /// SHA-256 of a snapshot's whole volume image, read block by block
    /// through the EBS direct APIs (each block's checksum checked); with
    /// --case, the block manifest and the hash go under the case's custody.
    HashSnapshot(HashSnapshotArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CaseArgs {
    /// The case id.
    #[arg(long)]
    pub case: String,
    /// Bucket of the case's evidence (default firebreak-evidence-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// No progress on standard error.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub case: CaseArgs,
    /// Check the signatures of a signed case offline with this public key
    /// (PEM or DER SubjectPublicKeyInfo, as `aws kms get-public-key`
    /// gives it) instead of with KMS.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub case: CaseArgs,
    /// The directory to write (made when missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct HashSnapshotArgs {
    /// The snapshot (snap-...).
    pub snapshot_id: String,
    /// Record the hash and the block manifest in this case's custody.
    #[arg(long)]
    pub case: Option<String>,
    /// Bucket of the case's evidence (default firebreak-evidence-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    /// Without --case: also write the block manifest (`INDEX SHA256` per
    /// written block) to this file.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// No progress on standard error.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct HashArgs {
    /// Files, `-` for standard input, or s3://bucket/key[?versionId=...].
    #[arg(required = true)]
    pub items: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub(crate) async fn run(args: EvidenceArgs) -> anyhow::Result<u8> {
    match args.command {
        EvidenceCommand::List(a) => list(a).await,
        EvidenceCommand::Verify(a) => verify_case(a).await,
        EvidenceCommand::Hold(a) => hold(a, true).await,
        EvidenceCommand::Unhold(a) => hold(a, false).await,
        EvidenceCommand::Export(a) => export(a).await,
        EvidenceCommand::Hash(a) => hash(a).await,
        EvidenceCommand::HashSnapshot(a) => hash_snapshot(a).await,
    }
}

async fn open(a: &CaseArgs) -> anyhow::Result<(Session, CaseId, String)> {
    let case: CaseId = a
        .case
        .parse()
        .map_err(|e: firebreak_steps::ids::IdError| BadInput(e.to_string()))?;
    let session = Session::open(&a.aws, Mode::Live, a.quiet).await?;
    let bucket = a
        .evidence_bucket
        .clone()
        .unwrap_or_else(|| default_evidence_bucket(&session.who.account_id, &session.region));
    if !firebreak_steps::evidence::bucket_exists(&session.ctx, &bucket)
        .await
        .map_err(anyhow::Error::new)?
    {
        return Err(BadInput(format!(
            "the evidence bucket {bucket} does not exist (or these credentials cannot see it)"
        ))
        .into());
    }
    Ok((session, case, bucket))
}

async fn list(a: CaseArgs) -> anyhow::Result<u8> {
    let (session, case, bucket) = open(&a).await?;
    let ctx = &session.ctx;
    let log = ctx.log("evidence_list");
    let ledger = read_ledger(ctx, &log, &bucket, case.as_str())
        .await
        .map_err(anyhow::Error::new)?;
    let records: Vec<CustodyRecord> = ledger.readable();
    let versions = list_versions(ctx, &log, &bucket, &format!("cases/{case}/"))
        .await
        .map_err(anyhow::Error::new)?;
    let objects: Vec<_> = versions
        .iter()
        .filter(|v| v.is_latest && !v.delete_marker && !v.key.contains("/custody/"))
        .collect();
    if records.is_empty() && objects.is_empty() {
        return Err(BadInput(format!(
            "case {case} has nothing in s3://{bucket}/cases/{case}/"
        ))
        .into());
    }
    let covered = |key: &str| {
        records.iter().any(|r| match &r.location {
            firebreak_forensics::custody::Location::S3 { key: k, .. } => k == key,
            _ => false,
        })
    };
    match a.output {
        OutputFormat::Json => {
            let objs: Vec<_> = objects
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "key": v.key,
                        "version_id": v.version_id,
                        "under_custody": covered(&v.key),
                    })
                })
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "case_id": case.as_str(),
                    "bucket": bucket,
                    "custody": records,
                    "objects": objs,
                }))?
            );
        }
        OutputFormat::Human => {
            outln!("Case {case}: s3://{bucket}/cases/{case}/");
            outln!("\nCustody chain ({} records):", records.len());
            for r in &records {
                outln!(
                    "  {:>4}  {}  {:<11} {:<18} {}",
                    r.sequence,
                    r.at.format("%Y-%m-%dT%H:%M:%SZ"),
                    format!("{:?}", r.event).to_lowercase(),
                    r.kind,
                    r.location.uri()
                );
                if let Some(h) = &r.sha256 {
                    outln!(
                        "        sha256 {h}{}",
                        r.size.map(|s| format!("  {s} bytes")).unwrap_or_default()
                    );
                }
            }
            for (key, r) in &ledger.records {
                if let Err(e) = r {
                    outln!("  !!    s3://{bucket}/{key}: {e}");
                }
            }
            outln!("\nObjects:");
            for v in &objects {
                outln!(
                    "  {}  {}",
                    if covered(&v.key) {
                        "custody "
                    } else {
                        "        "
                    },
                    v.key
                );
            }
        }
    }
    Ok(exit::OK)
}

async fn hold(a: CaseArgs, on: bool) -> anyhow::Result<u8> {
    let (session, case, bucket) = open(&a).await?;
    let h = hold_case(&session.ctx, &bucket, case.as_str(), on)
        .await
        .map_err(anyhow::Error::new)?;
    if h.versions == 0 && h.failed.is_empty() {
        return Err(BadInput(format!(
            "case {case} has nothing in s3://{bucket}/cases/{case}/"
        ))
        .into());
    }
    match a.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&h)?),
        OutputFormat::Human => {
            outln!(
                "case {case}: legal hold {} on {} object versions in s3://{bucket}/cases/{case}/",
                if on { "put" } else { "lifted" },
                h.versions
            );
            for f in &h.failed {
                outln!("  !! {f}");
            }
        }
    }
    Ok(if h.failed.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

async fn export(ea: ExportArgs) -> anyhow::Result<u8> {
    let (session, case, bucket) = open(&ea.case).await?;
    let e = firebreak_steps::evidence::custody::export_ledger(
        &session.ctx,
        &bucket,
        case.as_str(),
        &ea.out,
    )
    .await
    .map_err(|e| match e.name {
        firebreak_workflows::ErrorName::InvalidInput => anyhow::Error::new(BadInput(e.message)),
        _ => anyhow::Error::new(e),
    })?;
    if e.files == 0 {
        return Err(BadInput(format!(
            "case {case} has no custody record in s3://{bucket}/cases/{case}/custody/"
        ))
        .into());
    }
    match ea.case.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&e)?),
        OutputFormat::Human => {
            outln!(
                "case {case}: {} custody objects (first versions) and versions.json written to {}",
                e.files,
                e.dir
            );
            for n in &e.changed_after {
                outln!("  !! {n} was written over or hidden after it was stored");
            }
            outln!(
                "  check it: scripts/verify-custody.py {} [--public-key KEY.pem] [--head HASH]",
                e.dir
            );
        }
    }
    Ok(exit::OK)
}

async fn verify_case(va: VerifyArgs) -> anyhow::Result<u8> {
    let a = &va.case;
    let check = match &va.public_key {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| BadInput(format!("--public-key {}: {e}", path.display())))?;
            let key = firebreak_forensics::custody::public_key(&bytes)
                .map_err(|e| BadInput(format!("--public-key {}: {e}", path.display())))?;
            SignatureCheck::PublicKey(Box::new(key))
        }
        None => SignatureCheck::Kms,
    };
    let (session, case, bucket) = open(a).await?;
    let v = verify(&session.ctx, &bucket, case.as_str(), &check)
        .await
        .map_err(anyhow::Error::new)?;
    if v.records == 0 && v.record_problems.is_empty() {
        return Err(BadInput(format!(
            "case {case} has no custody record in s3://{bucket}/cases/{case}/custody/"
        ))
        .into());
    }
    match a.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&v)?),
        OutputFormat::Human => {
            outln!(
                "Case {case}: {} custody records, {} artifacts: {}",
                v.records,
                v.artifacts.len(),
                if v.intact {
                    "INTACT"
                } else {
                    "TAMPERED OR MISSING"
                }
            );
            for b in &v.breaks {
                outln!(
                    "  !! chain broken at position {} (record {}): {}",
                    b.position,
                    b.sequence,
                    b.problem
                );
            }
            for p in &v.record_problems {
                outln!("  !! {p}");
            }
            if let Some(k) = &v.signatures.key {
                outln!(
                    "  signed with {k}: {} signatures verified ({})",
                    v.signatures.valid,
                    v.signatures
                        .checked_with
                        .as_deref()
                        .unwrap_or("not checked")
                );
            }
            for b in &v.signatures.problems {
                outln!("  !! signature: record {}: {}", b.sequence, b.problem);
            }
            for r in &v.rejected {
                outln!("  note: {r}");
            }
            for w in &v.warnings {
                outln!("  warning: {w}");
            }
            if let Some(h) = &v.head {
                outln!(
                    "  chain head: record {} hash {} (keep it outside the bucket: a chain cut short ends before it)",
                    h.sequence, h.hash
                );
            }
            for art in &v.artifacts {
                let mark = match art.state {
                    ArtifactState::Intact | ArtifactState::Present => "ok",
                    ArtifactState::Modified
                    | ArtifactState::Missing
                    | ArtifactState::Replaced
                    | ArtifactState::Unreadable => "!!",
                };
                outln!(
                    "  {mark} {:<8} {:<18} {}: {}",
                    format!("{:?}", art.state).to_lowercase(),
                    art.kind,
                    art.location,
                    art.detail
                );
            }
        }
    }
    Ok(if v.intact { exit::OK } else { exit::FAILED })
}

async fn hash(a: HashArgs) -> anyhow::Result<u8> {
    let mut results: Vec<(String, Digest)> = Vec::new();
    let mut session: Option<Session> = None;
    for item in &a.items {
        let digest = if item.starts_with("s3://") {
            let uri: S3Uri = item.parse().map_err(BadInput)?;
            if session.is_none() {
                session = Some(Session::open(&a.aws, Mode::Live, true).await?);
            }
            let s = session
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("no AWS session"))?;
            let log = s.ctx.log("evidence_hash");
            hash_object(&s.ctx, &log, &uri, &[])
                .await
                .map_err(anyhow::Error::new)?
                .0
        } else if item == "-" {
            tokio::task::spawn_blocking(|| sha256_reader(std::io::stdin())).await??
        } else {
            let path = PathBuf::from(item);
            let file = std::fs::File::open(&path).map_err(|e| BadInput(format!("{item}: {e}")))?;
            if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                return Err(BadInput(format!("{item} is a directory")).into());
            }
            // Plain blocking reads (on threads of their own): tokio's file
            // reads hop threads per chunk and cost throughput.
            tokio::task::spawn_blocking(move || sha256_reader(file)).await??
        };
        results.push((item.clone(), digest));
    }
    match a.output {
        OutputFormat::Json => {
            let v: Vec<_> = results
                .iter()
                .map(|(i, d)| serde_json::json!({"item": i, "sha256": d.sha256, "size": d.size}))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Human => {
            for (i, d) in &results {
                outln!("{}  {}  {i}", d.sha256, d.size);
            }
        }
    }
    Ok(exit::OK)
}

async fn hash_snapshot(a: HashSnapshotArgs) -> anyhow::Result<u8> {
    use firebreak_steps::containment::ec2::{HashSnapshots, HashSnapshotsInput};
    use firebreak_steps::Step as _;
    if !a.snapshot_id.starts_with("snap-") {
        return Err(BadInput(format!(
            "{:?} is not a snapshot id (snap-...)",
            a.snapshot_id
        ))
        .into());
    }
    let session = Session::open(&a.aws, Mode::Live, a.quiet).await?;
    let ctx = &session.ctx;
    let map = |e: firebreak_steps::StepError| match e.name {
        firebreak_workflows::ErrorName::InvalidInput
        | firebreak_workflows::ErrorName::ResourceNotFound => {
            anyhow::Error::new(BadInput(e.message))
        }
        _ => anyhow::Error::new(e),
    };
    let digest = match &a.case {
        Some(case) => {
            let case: CaseId = case
                .parse()
                .map_err(|e: firebreak_steps::ids::IdError| BadInput(e.to_string()))?;
            let bucket = session
                .evidence_bucket(a.evidence_bucket.as_deref())
                .await?;
            let evidence_lock = session.evidence_lock(&bucket, None, None, None).await?;
            let out = HashSnapshots::run(
                ctx,
                HashSnapshotsInput {
                    case_id: case.to_string(),
                    snapshot_ids: vec![a.snapshot_id.clone()],
                    evidence_bucket: bucket,
                    evidence_lock,
                    actor: session.who.arn.clone(),
                },
            )
            .await
            .map_err(map)?;
            out.snapshots
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no hash came back for {}", a.snapshot_id))?
        }
        None => {
            let log = ctx.log("evidence_hash_snapshot");
            let mut out: Box<dyn std::io::Write + Send> = match &a.manifest {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .map_err(|e| BadInput(format!("--manifest {}: {e}", p.display())))?,
                )),
                None => Box::new(std::io::sink()),
            };
            firebreak_steps::containment::ec2::hash_snapshot(ctx, &log, &a.snapshot_id, &mut out)
                .await
                .map_err(map)?
        }
    };
    match a.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&digest)?),
        OutputFormat::Human => {
            outln!(
                "{}  {}  {} ({} GiB, {} of {} blocks of {} bytes written)",
                digest.sha256,
                digest.size,
                digest.snapshot_id,
                digest.volume_size_gib,
                digest.blocks_written,
                digest.blocks,
                digest.block_size
            );
            if let Some(m) = &digest.manifest {
                outln!(
                    "  block manifest {m} (sha256 {})",
                    digest.manifest_sha256.as_deref().unwrap_or("?")
                );
            }
            if let Some(n) = digest.custody_sequence {
                outln!(
                    "  custody record {n}{}",
                    if digest.reused {
                        " (hashed before)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(exit::OK)
}
