//! Disk images hashed without a helper instance: every block of a
//! snapshot is read through the EBS direct APIs (`ListSnapshotBlocks`,
//! `GetSnapshotBlock`, whose checksum is checked for each block) and the
//! SHA-256 of the whole volume image, as `dd if=/dev/xvdf | sha256sum`
//! of a volume restored from it would give, is recorded in custody with a
//! per-block manifest.
//!
//! Blocks the listing leaves out were never written: they read as zeros,
//! and are hashed as zeros. The whole image is hashed, so the time grows
//! with the volume's size, not its data: SHA-256 of a mostly empty 1 TiB
//! volume is still a TiB of hashing (about 13 minutes at 1.3 GB/s).

use async_trait::async_trait;
use base64::Engine as _;
use firebreak_forensics::custody::{Event, Location, NewRecord, Source};
use firebreak_forensics::hash::{Digest, Hasher};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use futures::StreamExt as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::evidence::{self, Lock, Put};
use crate::ids::CaseId;
use crate::step::Step;

/// Blocks fetched at once: enough to keep one EBS direct connection pool
/// busy (the API allows about a thousand GetSnapshotBlock requests a
/// second per account), few enough to hold little memory (16 x 512 KiB =
/// 8 MiB).
pub const BLOCKS_IN_FLIGHT: usize = 16;
/// The listing's largest page (the API's maximum).
const LIST_PAGE: i32 = 10_000;
/// A progress line at most this often, in blocks.
const PROGRESS_EVERY_BLOCKS: u64 = 2048;
const GIB: u64 = 1 << 30;

/// Hashes each snapshot of the case through the EBS direct APIs and
/// records the image's SHA-256 and block manifest in custody. Idempotent:
/// a snapshot already hashed for the case is not read again.
#[derive(Debug)]
pub struct HashSnapshots;

/// Input of [`HashSnapshots`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HashSnapshotsInput {
    /// The case, validated as a [`crate::ids::CaseId`]; its custody ledger
    /// receives the hashes.
    pub case_id: String,
    /// The snapshots to hash (`snap-...`), in this account and region.
    pub snapshot_ids: Vec<String>,
    /// The evidence bucket that holds the block manifests and the case's
    /// custody ledger.
    pub evidence_bucket: String,
    /// Retention, encryption, legal hold and custody signing of what is
    /// written (the bucket's defaults when unset).
    #[serde(default)]
    pub evidence_lock: Lock,
    /// Who acts, for the custody records.
    #[serde(default)]
    pub actor: String,
}

/// The SHA-256 of one snapshot's volume image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotDigest {
    /// The snapshot hashed (`snap-...`).
    pub snapshot_id: String,
    /// The volume's size in GiB, as `ListSnapshotBlocks` gives it (0 when
    /// read from a custody record that lacks it).
    pub volume_size_gib: u64,
    /// Bytes per block, as `ListSnapshotBlocks` gives it (524288 on EBS).
    pub block_size: u64,
    /// Blocks in the volume image.
    pub blocks: u64,
    /// Blocks ever written (listed, read and checked); the rest are zeros.
    pub blocks_written: u64,
    /// Bytes hashed: the volume's size.
    pub size: u64,
    /// SHA-256 of the whole volume image, lowercase hex.
    pub sha256: String,
    /// `s3://.../blocks.txt?versionId=..`: one line per written block,
    /// `INDEX SHA256`.
    #[serde(default)]
    pub manifest: Option<String>,
    /// SHA-256 (hex) of the stored block manifest.
    #[serde(default)]
    pub manifest_sha256: Option<String>,
    /// The custody record of the image's hash.
    #[serde(default)]
    pub custody_sequence: Option<u64>,
    /// True when an earlier run had hashed it.
    #[serde(default)]
    pub reused: bool,
}

/// The image hashes of the case's snapshots, from [`HashSnapshots`] or
/// [`ReadSnapshotHashes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotHashes {
    /// One digest per snapshot, in the order asked. In a dry run
    /// [`HashSnapshots`] gives none (nothing is read), and
    /// [`ReadSnapshotHashes`] only those already recorded.
    pub snapshots: Vec<SnapshotDigest>,
}

impl StepDef for HashSnapshots {
    const NAME: &'static str = "hash_snapshots";
    const SUMMARY: &'static str =
        "Read every block of each snapshot through the EBS direct APIs, checking each block's checksum; record the volume image's SHA-256 and a block manifest in custody.";
    const MUTATES: bool = true;
    type Input = HashSnapshotsInput;
    type Output = SnapshotHashes;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::ResourceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                ["ebs:ListSnapshotBlocks", "ebs:GetSnapshotBlock"],
                ["arn:aws:ec2:*::snapshot/*"],
            ),
            // Encrypted snapshots: EBS decrypts the blocks with the key.
            Statement::allow(["kms:Decrypt"], ["arn:aws:kms:*:*:key/*"]),
            Statement::allow(
                [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:PutObjectLegalHold",
                ],
                ["arn:aws:s3:::*/cases/*"],
            ),
            Statement::allow(
                ["s3:ListBucket", "s3:ListBucketVersions"],
                ["arn:aws:s3:::*"],
            ),
            Statement::allow(["kms:Sign"], ["arn:aws:kms:*:*:key/*"]),
        ]
    }
}

/// One page of a snapshot's block listing.
struct Page {
    volume_size_gib: u64,
    block_size: u64,
    /// (index, token), by index.
    blocks: Vec<(i32, String)>,
    next: Option<String>,
}

async fn list_page(
    ctx: &StepContext,
    snapshot_id: &str,
    token: Option<String>,
) -> Result<Page, StepError> {
    let page = ctx
        .aws
        .ebs
        .list_snapshot_blocks()
        .snapshot_id(snapshot_id)
        .max_results(LIST_PAGE)
        .set_next_token(token)
        .send()
        .await
        .map_err(|e| aws_error(&format!("ebs:ListSnapshotBlocks {snapshot_id}"), e))?;
    let volume = page
        .volume_size()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0);
    let block = page
        .block_size()
        .and_then(|b| u64::try_from(b).ok())
        .filter(|b| *b > 0);
    let (Some(volume), Some(block)) = (volume, block) else {
        return Err(StepError::new(
            ErrorName::AwsRequestFailed,
            format!("ebs:ListSnapshotBlocks {snapshot_id} gave no volume or block size"),
        ));
    };
    let mut blocks = Vec::with_capacity(page.blocks().len());
    for b in page.blocks() {
        let (Some(i), Some(t)) = (b.block_index(), b.block_token()) else {
            return Err(StepError::new(
                ErrorName::AwsRequestFailed,
                format!(
                    "ebs:ListSnapshotBlocks {snapshot_id} listed a block without index or token"
                ),
            ));
        };
        blocks.push((i, t.to_string()));
    }
    blocks.sort_by_key(|(i, _)| *i);
    Ok(Page {
        volume_size_gib: volume,
        block_size: block,
        blocks,
        next: page.next_token().map(str::to_string),
    })
}

/// Reads one block and checks it: its length is the block size, and its
/// SHA-256 the checksum EBS gives with it.
async fn read_block(
    ctx: &StepContext,
    snapshot_id: &str,
    index: i32,
    token: String,
    block_size: u64,
) -> Result<(i32, bytes::Bytes, String), StepError> {
    let out = ctx
        .aws
        .ebs
        .get_snapshot_block()
        .snapshot_id(snapshot_id)
        .block_index(index)
        .block_token(token)
        .send()
        .await
        .map_err(|e| {
            aws_error(
                &format!("ebs:GetSnapshotBlock {snapshot_id} block {index}"),
                e,
            )
        })?;
    let algorithm = out.checksum_algorithm().map(|a| a.as_str().to_string());
    let checksum = out.checksum().map(str::to_string);
    let data = out
        .block_data
        .collect()
        .await
        .map_err(|e| {
            StepError::with_source(
                ErrorName::AwsUnavailable,
                &format!("reading block {index} of {snapshot_id}"),
                e,
            )
        })?
        .into_bytes();
    if data.len() as u64 != block_size {
        return Err(StepError::verification(format!(
            "{snapshot_id} block {index}: {} bytes where blocks are {block_size}",
            data.len()
        )));
    }
    let digest = firebreak_forensics::hash::sha256_bytes(&data);
    let raw = hex::decode(&digest.sha256)
        .map_err(|e| StepError::with_source(ErrorName::Internal, "a block hash", e))?;
    let computed = base64::engine::general_purpose::STANDARD.encode(raw);
    match (algorithm.as_deref(), checksum.as_deref()) {
        (Some("SHA256"), Some(c)) if c == computed => {}
        (Some("SHA256"), Some(c)) => {
            return Err(StepError::verification(format!(
                "{snapshot_id} block {index}: its SHA-256 is {computed} (base64) but EBS gave the checksum {c}: the block was altered on the way"
            )))
        }
        (a, c) => {
            return Err(StepError::verification(format!(
                "{snapshot_id} block {index}: EBS gave no SHA-256 checksum to check it against (algorithm {}, checksum {})",
                a.unwrap_or("none"),
                c.unwrap_or("none")
            )))
        }
    }
    Ok((index, data, digest.sha256))
}

/// The SHA-256 of a snapshot's whole volume image; the SHA-256 of each
/// written block goes to `manifest` (`INDEX SHA256` lines, by index). The
/// listing is read a page at a time and each page's blocks fetched as it
/// comes, so memory stays flat whatever the volume's size.
pub async fn hash_snapshot(
    ctx: &StepContext,
    log: &StepLog<'_>,
    snapshot_id: &str,
    manifest: &mut (dyn std::io::Write + Send),
) -> Result<SnapshotDigest, StepError> {
    log.read(
        "ebs:ListSnapshotBlocks",
        format!("SnapshotId={snapshot_id}, {LIST_PAGE} blocks a page"),
    );
    log.read(
        "ebs:GetSnapshotBlock",
        format!("SnapshotId={snapshot_id}: every written block, {BLOCKS_IN_FLIGHT} at a time"),
    );
    let mut page = list_page(ctx, snapshot_id, None).await?;
    let (volume_size_gib, block_size) = (page.volume_size_gib, page.block_size);
    let total = volume_size_gib * GIB / block_size;
    let zeros = vec![0u8; usize::try_from(block_size).unwrap_or(0)];
    let mut whole = Hasher::new();
    // The next block index the image needs: blocks must come strictly in
    // order, or the image would be hashed in the wrong order.
    let mut next: u64 = 0;
    let mut written: u64 = 0;
    let started = std::time::Instant::now();
    let write_err = |e: std::io::Error| {
        StepError::with_source(ErrorName::Internal, "writing the block manifest", e)
    };
    loop {
        if let Some((i, _)) = page
            .blocks
            .iter()
            .find(|(i, _)| *i < 0 || (*i as u64) >= total)
        {
            return Err(StepError::verification(format!(
                "{snapshot_id}: block {i} lies outside a volume of {volume_size_gib} GiB in blocks of {block_size} bytes"
            )));
        }
        let token = page.next.take();
        let mut fetched = futures::stream::iter(std::mem::take(&mut page.blocks))
            .map(|(i, t)| read_block(ctx, snapshot_id, i, t, block_size))
            .buffered(BLOCKS_IN_FLIGHT);
        while let Some(block) = fetched.next().await {
            let (index, data, sha) = block?;
            let index = u64::try_from(index).unwrap_or(0);
            if index < next {
                return Err(StepError::verification(format!(
                    "{snapshot_id}: block {index} came after block {}: the listing is out of order",
                    next.saturating_sub(1)
                )));
            }
            // Blocks never written read as zeros.
            while next < index {
                whole.update(&zeros);
                next += 1;
            }
            whole.update(&data);
            next += 1;
            writeln!(manifest, "{index} {sha}").map_err(write_err)?;
            written += 1;
            if written.is_multiple_of(PROGRESS_EVERY_BLOCKS) {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                log.progress(&format!(
                    "{snapshot_id}: {written} written blocks read and checked, at block {next} of {total} ({:.0} MB/s)",
                    (written * block_size) as f64 / secs / 1e6
                ));
            }
        }
        drop(fetched);
        match token {
            Some(t) => page = list_page(ctx, snapshot_id, Some(t)).await?,
            None => break,
        }
    }
    while next < total {
        whole.update(&zeros);
        next += 1;
    }
    manifest.flush().map_err(write_err)?;
    let Digest { sha256, size } = whole.finish();
    Ok(SnapshotDigest {
        snapshot_id: snapshot_id.to_string(),
        volume_size_gib,
        block_size,
        blocks: total,
        blocks_written: written,
        size,
        sha256,
        manifest: None,
        manifest_sha256: None,
        custody_sequence: None,
        reused: false,
    })
}

/// The custody record of an image already hashed for the case.
async fn hashed_before(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
    snapshot_id: &str,
) -> Result<Option<SnapshotDigest>, StepError> {
    let ledger = crate::evidence::custody::read_ledger(ctx, log, bucket, case).await?;
    Ok(ledger.readable().into_iter().find_map(|r| {
        let same = r.kind == "ebs-snapshot"
            && matches!(&r.location, Location::Snapshot { snapshot_id: s, .. } if s == snapshot_id);
        if !same {
            return None;
        }
        let d = r.details.as_ref();
        let num = |k: &str| d.and_then(|d| d.get(k)).and_then(serde_json::Value::as_u64);
        let text = |k: &str| {
            d.and_then(|d| d.get(k))
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        Some(SnapshotDigest {
            snapshot_id: snapshot_id.to_string(),
            volume_size_gib: num("volume_size_gib").unwrap_or(0),
            block_size: num("block_size").unwrap_or(0),
            blocks: num("blocks").unwrap_or(0),
            blocks_written: num("blocks_written").unwrap_or(0),
            size: r.size.unwrap_or(0),
            sha256: r.sha256.clone()?,
            manifest: text("manifest"),
            manifest_sha256: text("manifest_sha256"),
            custody_sequence: Some(r.sequence),
            reused: true,
        })
    }))
}

#[async_trait]
impl Step for HashSnapshots {
    async fn run(
        ctx: &StepContext,
        input: HashSnapshotsInput,
    ) -> Result<SnapshotHashes, StepError> {
        let case: CaseId = input
            .case_id
            .parse()
            .map_err(|e: crate::ids::IdError| StepError::invalid_input(e.to_string()))?;
        let log = ctx.log(Self::NAME);
        let bucket = input.evidence_bucket.as_str();
        let mut out = Vec::new();
        for id in &input.snapshot_ids {
            if !id.starts_with("snap-") {
                return Err(StepError::invalid_input(format!(
                    "{id:?} is not a snapshot id"
                )));
            }
            if ctx.is_dry_run() {
                log.not_checked(
                    "ebs:GetSnapshotBlock",
                    format!("SnapshotId={id} (every written block, then custody)"),
                    "a read with no dry run: needs ebs:ListSnapshotBlocks and ebs:GetSnapshotBlock on the snapshot",
                );
                continue;
            }
            if let Some(d) = hashed_before(ctx, &log, bucket, &input.case_id, id).await? {
                out.push(d);
                continue;
            }
            log.progress(&format!(
                "{id}: reading every block through the EBS direct APIs"
            ));
            // The manifest goes to a file (a large volume's runs to
            // gigabytes), then to S3 from it.
            let path = std::env::temp_dir().join(format!(
                "firebreak-blocks-{id}-{}.txt",
                crate::evidence::memory::new_evidence_id()
            ));
            let file = std::fs::File::create(&path).map_err(|e| {
                StepError::with_source(ErrorName::Internal, "making the block manifest file", e)
            })?;
            let mut writer = std::io::BufWriter::new(file);
            let hashed = hash_snapshot(ctx, &log, id, &mut writer).await;
            drop(writer);
            let mut digest = match hashed {
                Ok(d) => d,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            };
            let key = format!("cases/{case}/snapshots/{id}/blocks.txt");
            let (location, m) =
                store_manifest(ctx, &log, bucket, &key, &path, &input.evidence_lock).await?;
            let uri: evidence::S3Uri = location.parse().map_err(StepError::invalid_input)?;
            let source = Source {
                account_id: ctx.account_id.clone(),
                region: ctx.region.clone(),
                instance_id: None,
                volume_id: None,
            };
            let record =
                |kind: &str, location: Location, size, sha256: String, note: String, details| {
                    NewRecord {
                        case_id: input.case_id.clone(),
                        evidence_id: format!("ebs-snapshot:{id}"),
                        event: Event::Acquired,
                        kind: kind.to_string(),
                        source: source.clone(),
                        location,
                        size: Some(size),
                        sha256: Some(sha256),
                        host_sha256: None,
                        at: chrono::Utc::now(),
                        actor: input.actor.clone(),
                        tool: "firebreak hash_snapshots (EBS direct APIs)".into(),
                        tool_version: env!("CARGO_PKG_VERSION").into(),
                        note: Some(note),
                        details,
                        signing_key: None,
                    }
                };
            crate::evidence::custody::append(
                ctx,
                &log,
                bucket,
                &input.evidence_lock,
                record(
                    "ebs-block-manifest",
                    Location::S3 {
                        bucket: uri.bucket.clone(),
                        key: uri.key.clone(),
                        version_id: uri.version_id.clone(),
                    },
                    m.size,
                    m.sha256.clone(),
                    format!("the SHA-256 of each written block of {id}, `INDEX SHA256` per line"),
                    None,
                ),
            )
            .await?;
            let rec = crate::evidence::custody::append(
                ctx,
                &log,
                bucket,
                &input.evidence_lock,
                record(
                    "ebs-snapshot",
                    Location::Snapshot {
                        snapshot_id: id.clone(),
                        account_id: ctx.account_id.clone(),
                        region: ctx.region.clone(),
                    },
                    digest.size,
                    digest.sha256.clone(),
                    format!(
                        "SHA-256 of the whole volume image ({} GiB): {} written blocks read and each checked against EBS's checksum, the other {} hashed as the zeros they read as",
                        digest.volume_size_gib,
                        digest.blocks_written,
                        digest.blocks - digest.blocks_written
                    ),
                    Some(serde_json::json!({
                        "volume_size_gib": digest.volume_size_gib,
                        "block_size": digest.block_size,
                        "blocks": digest.blocks,
                        "blocks_written": digest.blocks_written,
                        "manifest": location,
                        "manifest_sha256": m.sha256,
                    })),
                ),
            )
            .await?;
            digest.manifest = Some(location);
            digest.manifest_sha256 = Some(m.sha256);
            digest.custody_sequence = Some(rec.sequence);
            out.push(digest);
        }
        Ok(SnapshotHashes { snapshots: out })
    }
}

/// Stores a snapshot's block manifest (then removes the local file);
/// gives where it is (the first version, when an earlier run stored it and
/// died before its custody record) and its digest.
async fn store_manifest(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
    path: &std::path::Path,
    lock: &evidence::Lock,
) -> Result<(String, firebreak_forensics::hash::Digest), StepError> {
    let stored =
        evidence::put_new_file_locked(ctx, log, bucket, key, path, "text/plain", lock).await;
    let _ = std::fs::remove_file(path);
    let (stored, m) = stored?;
    let location = match stored {
        Put::Created(s) => s.location(),
        Put::Exists | Put::Planned => {
            match evidence::get_first_version(ctx, log, bucket, key).await? {
                Some((_, Some(v))) => format!("s3://{bucket}/{key}?versionId={v}"),
                _ => format!("s3://{bucket}/{key}"),
            }
        }
    };
    Ok((location, m))
}

/// Reads the hashes `hash_snapshots` recorded in the case's custody: that
/// step runs where time is not limited (a container task, whose result
/// does not come back to the execution), this one brings its result in.
#[derive(Debug)]
pub struct ReadSnapshotHashes;

/// Input of [`ReadSnapshotHashes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReadHashesInput {
    /// The case whose custody ledger is read (not validated here).
    pub case_id: String,
    /// The evidence bucket that holds the case's custody ledger.
    pub evidence_bucket: String,
    /// The snapshots whose hashes are wanted (`snap-...`); one without a
    /// hash fails the step, except in a dry run.
    pub snapshot_ids: Vec<String>,
}

impl StepDef for ReadSnapshotHashes {
    const NAME: &'static str = "read_snapshot_hashes";
    const SUMMARY: &'static str =
        "Read the snapshot hashes recorded in the case's custody (by hash_snapshots).";
    const MUTATES: bool = false;
    type Input = ReadHashesInput;
    type Output = SnapshotHashes;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::InvalidInput,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                ["s3:GetObject", "s3:GetObjectVersion"],
                ["arn:aws:s3:::*/cases/*"],
            ),
            Statement::allow(
                ["s3:ListBucket", "s3:ListBucketVersions"],
                ["arn:aws:s3:::*"],
            ),
        ]
    }
}

#[async_trait]
impl Step for ReadSnapshotHashes {
    async fn run(ctx: &StepContext, input: ReadHashesInput) -> Result<SnapshotHashes, StepError> {
        let log = ctx.log(Self::NAME);
        let mut snapshots = Vec::new();
        let mut missing = Vec::new();
        for id in &input.snapshot_ids {
            match hashed_before(ctx, &log, &input.evidence_bucket, &input.case_id, id).await? {
                Some(d) => snapshots.push(d),
                None => missing.push(id.as_str()),
            }
        }
        if !missing.is_empty() && !ctx.is_dry_run() {
            return Err(StepError::verification(format!(
                "case {} holds no hash of {}: hash_snapshots did not finish",
                input.case_id,
                missing.join(", ")
            )));
        }
        Ok(SnapshotHashes { snapshots })
    }
}
