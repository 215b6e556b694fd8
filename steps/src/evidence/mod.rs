//! Evidence: the bucket where records and artifacts of a case are kept
//! (this module), their custody ledger, memory capture and its analysis,
//! and the tools sent to hosts (docs/evidence-and-custody.md,
//! docs/memory-and-analysis.md).
//!
//! Objects are written once (`If-None-Match: *`), with a SHA-256 checksum
//! that S3 verifies on arrival; an existing object is never overwritten,
//! so a second run finds what the first one preserved. The bucket's Object
//! Lock default retention (set by `firebreak setup`) applies to every
//! object.

pub mod analysis;
pub mod custody;
pub mod memory;
pub mod report;
pub mod tools;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use base64::Engine as _;
use firebreak_forensics::hash::{sha256_bytes, Digest};
use firebreak_workflows::ErrorName;

use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, StepError};

/// A stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The bucket's name.
    pub bucket: String,
    /// The object's key (`cases/CASE/...`).
    pub key: String,
    /// The version S3 gave the write; None when the bucket keeps no versions.
    pub version_id: Option<String>,
    /// SHA-256 and size of the bytes written, which S3 checked on arrival.
    pub digest: Digest,
}

impl Stored {
    /// `s3://bucket/key?versionId=...`.
    pub fn location(&self) -> String {
        match &self.version_id {
            Some(v) => format!("s3://{}/{}?versionId={v}", self.bucket, self.key),
            None => format!("s3://{}/{}", self.bucket, self.key),
        }
    }
}

/// Keys of a case's objects.
pub mod keys {
    /// The pre-incident record of an instance: `cases/CASE/instance-state/INSTANCE.json`.
    pub fn instance_state(case: &str, instance: &str) -> String {
        format!("cases/{case}/instance-state/{instance}.json")
    }
    /// The console output taken before containment:
    /// `cases/CASE/console-output/INSTANCE.txt`.
    pub fn console_output(case: &str, instance: &str) -> String {
        format!("cases/{case}/console-output/{instance}.txt")
    }
    /// Everything of one memory-capture attempt.
    pub fn memory_attempt(case: &str, instance: &str, attempt: u32) -> String {
        format!("cases/{case}/memory/{instance}/attempt-{attempt:03}/")
    }
    /// The prefix under which a case's custody records and signatures lie.
    pub fn custody_prefix(case: &str) -> String {
        format!("cases/{case}/custody/")
    }
    /// Custody records are numbered, so that listing gives chain order.
    pub fn custody(case: &str, sequence: u64) -> String {
        format!("cases/{case}/custody/{sequence:08}.json")
    }
    /// A record's signature, beside it.
    pub fn custody_signature(case: &str, sequence: u64) -> String {
        format!("cases/{case}/custody/{sequence:08}.sig")
    }
    /// The prefix of one evidence item's analysis results:
    /// `cases/CASE/analysis/EVIDENCE_ID/`.
    pub fn analysis(case: &str, evidence_id: &str) -> String {
        format!("cases/{case}/analysis/{evidence_id}/")
    }
}

/// How an evidence object is locked and encrypted. Unset fields fall back
/// to the bucket's defaults (which `firebreak setup` makes COMPLIANCE
/// retention and SSE).
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Lock {
    /// Object Lock COMPLIANCE retention, in days from the write.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// SSE-KMS with this key.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// An Object Lock legal hold on every object written, so that no
    /// retention period can lapse while the case is open (`firebreak
    /// evidence unhold` lifts it). Needs a bucket with Object Lock.
    #[serde(default)]
    pub legal_hold: bool,
    /// An asymmetric KMS key (ECC_NIST_P256, SIGN_VERIFY) that signs every
    /// custody record of the case.
    #[serde(default)]
    pub custody_key: Option<String>,
}

impl Lock {
    /// When an object written now must be retained until (now plus
    /// `retention_days`); None leaves it to the bucket's default retention.
    pub fn retain_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.retention_days
            .map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d)))
    }
}

/// `s3://bucket/key` (with an optional `?versionId=`) split up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Uri {
    /// The bucket's name.
    pub bucket: String,
    /// The object's key (non-empty).
    pub key: String,
    /// The version named by `?versionId=`; None when the URI names none (the
    /// latest version).
    pub version_id: Option<String>,
}

impl std::str::FromStr for S3Uri {
    type Err = String;
    fn from_str(s: &str) -> Result<S3Uri, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{s:?} is not an s3:// URI"))?;
        let (path, version_id) = match rest.split_once("?versionId=") {
            Some((p, v)) if !v.is_empty() => (p, Some(v.to_string())),
            Some(_) => return Err(format!("{s:?} has an empty versionId")),
            None => (rest, None),
        };
        let (bucket, key) = path
            .split_once('/')
            .ok_or_else(|| format!("{s:?} names no object (s3://BUCKET/KEY)"))?;
        if bucket.is_empty() || key.is_empty() {
            return Err(format!("{s:?} names no object (s3://BUCKET/KEY)"));
        }
        Ok(S3Uri {
            bucket: bucket.into(),
            key: key.into(),
            version_id,
        })
    }
}

impl std::fmt::Display for S3Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version_id {
            Some(v) => write!(f, "s3://{}/{}?versionId={v}", self.bucket, self.key),
            None => write!(f, "s3://{}/{}", self.bucket, self.key),
        }
    }
}

/// The outcome of a create-only write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Put {
    /// Written now; where it is and the digest of what was written.
    Created(Stored),
    /// The key already holds an object (written by an earlier run).
    Exists,
    /// Dry run: nothing written.
    Planned,
}

/// Reads an object: `None` when the key does not exist.
pub async fn get(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, Option<String>)>, StepError> {
    log.read("s3:GetObject", format!("s3://{bucket}/{key}"));
    match ctx.aws.s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let version = out.version_id().map(str::to_string);
            let bytes = out.body.collect().await.map_err(|e| {
                StepError::new(
                    ErrorName::AwsUnavailable,
                    format!("reading s3://{bucket}/{key}: {e}"),
                )
            })?;
            Ok(Some((bytes.into_bytes().to_vec(), version)))
        }
        Err(e) => match error_code(&e).as_deref() {
            Some("NoSuchKey") | Some("NotFound") => Ok(None),
            _ => Err(aws_error(&format!("s3:GetObject s3://{bucket}/{key}"), e)),
        },
    }
}

/// Reads the first version ever written at a key (versioned buckets; the
/// latest version when the bucket keeps no versions). A delete marker or
/// a later version does not hide it.
pub async fn get_first_version(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, Option<String>)>, StepError> {
    // S3 lists a key's versions newest first, and its times have a
    // resolution of a second: of equal times the one listed last is the
    // oldest. Every page is read (list_versions paginates).
    let versions = list_versions(ctx, log, bucket, key).await?;
    let mut first: Option<(usize, &Version)> = None;
    for (i, v) in versions.iter().enumerate() {
        if v.key != key || v.delete_marker {
            continue;
        }
        let older = match first {
            None => true,
            Some((_, f)) => v.last_modified <= f.last_modified,
        };
        if older {
            first = Some((i, v));
        }
    }
    let first = first.map(|(_, v)| v.version_id.clone());
    let Some(version) = first.filter(|v| v != "null") else {
        return get(ctx, log, bucket, key).await;
    };
    log.read(
        "s3:GetObject",
        format!("s3://{bucket}/{key}?versionId={version}"),
    );
    match ctx
        .aws
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .version_id(&version)
        .send()
        .await
    {
        Ok(o) => {
            let bytes = o.body.collect().await.map_err(|e| {
                StepError::new(
                    ErrorName::AwsUnavailable,
                    format!("reading s3://{bucket}/{key}: {e}"),
                )
            })?;
            Ok(Some((bytes.into_bytes().to_vec(), Some(version))))
        }
        Err(e) => Err(aws_error(
            &format!("s3:GetObject s3://{bucket}/{key}?versionId={version}"),
            e,
        )),
    }
}

/// Writes an object only if the key is free.
pub async fn put_new(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<Put, StepError> {
    put_new_locked(ctx, log, bucket, key, body, content_type, &Lock::default()).await
}

/// [`put_new`] with an explicit retention and key.
pub async fn put_new_locked(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
    lock: &Lock,
) -> Result<Put, StepError> {
    let digest = sha256_bytes(&body);
    let params = format!(
        "s3://{bucket}/{key} ({} bytes, sha256 {}, If-None-Match: *)",
        digest.size, digest.sha256
    );
    if ctx.is_dry_run() {
        log.not_checked(
            "s3:PutObject",
            params,
            format!("S3 has no dry run; needs s3:PutObject on arn:aws:s3:::{bucket}/cases/*"),
        );
        return Ok(Put::Planned);
    }
    let raw = hex::decode(&digest.sha256)
        .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
    let checksum = base64::engine::general_purpose::STANDARD.encode(raw);
    let result = ctx
        .aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .content_type(content_type)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .checksum_sha256(checksum)
        .if_none_match("*");
    let result = lock_put(result, lock).send().await;
    match result {
        Ok(out) => {
            log.done("s3:PutObject", params);
            Ok(Put::Created(Stored {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version_id: out.version_id().map(str::to_string),
                digest,
            }))
        }
        Err(e) => match error_code(&e).as_deref() {
            Some("PreconditionFailed") | Some("ConditionalRequestConflict") => Ok(Put::Exists),
            _ => Err(aws_error(&format!("s3:PutObject s3://{bucket}/{key}"), e)),
        },
    }
}

/// [`put_new_locked`] of a file, streamed from disk (a block manifest can
/// be gigabytes): its SHA-256 is computed first, sent for S3 to check,
/// and returned with the outcome.
#[allow(clippy::too_many_arguments)]
pub async fn put_new_file_locked(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
    path: &std::path::Path,
    content_type: &str,
    lock: &Lock,
) -> Result<(Put, Digest), StepError> {
    let file = std::fs::File::open(path)
        .map_err(|e| StepError::with_source(ErrorName::Internal, "opening a file to store", e))?;
    let digest =
        tokio::task::spawn_blocking(move || firebreak_forensics::hash::sha256_reader(file))
            .await
            .map_err(|e| StepError::with_source(ErrorName::Internal, "hashing a file to store", e))?
            .map_err(|e| {
                StepError::with_source(ErrorName::Internal, "hashing a file to store", e)
            })?;
    let params = format!(
        "s3://{bucket}/{key} ({} bytes, sha256 {}, If-None-Match: *)",
        digest.size, digest.sha256
    );
    if ctx.is_dry_run() {
        log.not_checked(
            "s3:PutObject",
            params,
            format!("S3 has no dry run; needs s3:PutObject on arn:aws:s3:::{bucket}/cases/*"),
        );
        return Ok((Put::Planned, digest));
    }
    let raw = hex::decode(&digest.sha256)
        .map_err(|e| StepError::with_source(ErrorName::Internal, "a file hash", e))?;
    let body = ByteStream::from_path(path)
        .await
        .map_err(|e| StepError::with_source(ErrorName::Internal, "reading a file to store", e))?;
    let req = ctx
        .aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .content_type(content_type)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(raw))
        .if_none_match("*");
    match lock_put(req, lock).send().await {
        Ok(out) => {
            log.done("s3:PutObject", params);
            Ok((
                Put::Created(Stored {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    version_id: out.version_id().map(str::to_string),
                    digest: digest.clone(),
                }),
                digest,
            ))
        }
        Err(e) => match error_code(&e).as_deref() {
            Some("PreconditionFailed") | Some("ConditionalRequestConflict") => {
                Ok((Put::Exists, digest))
            }
            _ => Err(aws_error(&format!("s3:PutObject s3://{bucket}/{key}"), e)),
        },
    }
}

fn lock_put(
    req: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    lock: &Lock,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    let mut req = req;
    if let Some(until) = lock.retain_until() {
        req = req
            .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
            .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(
                until.timestamp(),
            ));
    }
    if let Some(k) = &lock.kms_key_id {
        req = req
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .ssekms_key_id(k);
    }
    if lock.legal_hold {
        req = req.object_lock_legal_hold_status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On);
    }
    req
}

/// The bucket's default Object Lock retention in days (None: no default).
pub async fn default_retention_days(
    ctx: &StepContext,
    bucket: &str,
) -> Result<Option<u32>, StepError> {
    match ctx
        .aws
        .s3
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => {
            let r = out
                .object_lock_configuration()
                .and_then(|c| c.rule())
                .and_then(|r| r.default_retention());
            Ok(r.and_then(|r| {
                r.days()
                    .or_else(|| r.years().map(|y| y.saturating_mul(365)))
                    .and_then(|d| u32::try_from(d).ok())
            }))
        }
        Err(e) if error_code(&e).as_deref() == Some("ObjectLockConfigurationNotFoundError") => {
            Ok(None)
        }
        Err(e) => Err(aws_error(
            &format!("s3:GetObjectLockConfiguration {bucket}"),
            e,
        )),
    }
}

/// Makes sure an object version carries COMPLIANCE retention at least
/// until `until`: objects assembled from a multipart upload are locked by
/// the bucket's default on AWS, but the lock is read back rather than
/// assumed, and set when it is missing or shorter. Returns the date the
/// version is retained until.
pub async fn ensure_retention(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
    version_id: &str,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, StepError> {
    log.read(
        "s3:HeadObject",
        format!("s3://{bucket}/{key}?versionId={version_id}"),
    );
    let head = ctx
        .aws
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .version_id(version_id)
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:HeadObject s3://{bucket}/{key}"), e))?;
    let current = head
        .object_lock_retain_until_date()
        .and_then(|d| chrono::DateTime::from_timestamp(d.secs(), 0));
    let compliance =
        head.object_lock_mode() == Some(&aws_sdk_s3::types::ObjectLockMode::Compliance);
    if let (true, Some(c)) = (compliance, current) {
        if c >= until {
            return Ok(c);
        }
    }
    let params = format!(
        "s3://{bucket}/{key}?versionId={version_id} COMPLIANCE until {}",
        until.to_rfc3339()
    );
    ctx.aws
        .s3
        .put_object_retention()
        .bucket(bucket)
        .key(key)
        .version_id(version_id)
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Compliance)
                .retain_until_date(aws_smithy_types::DateTime::from_secs(until.timestamp()))
                .build(),
        )
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:PutObjectRetention s3://{bucket}/{key}"), e))?;
    log.done("s3:PutObjectRetention", params);
    Ok(until)
}

/// The SHA-256 of an object version, streamed from S3 in bounded memory
/// (one GET of one pinned version, hashed as its bytes arrive), with the
/// SHA-256 of each consecutive slice of `part_sizes` bytes (the parts of a
/// multipart upload; empty for none).
///
/// One stream, not parallel ranged reads: SHA-256 (about 2 GB/s here)
/// outruns one S3 stream, so the stream sets the pace either way, and a
/// single GET holds no more than the SDK's read buffer, where ranged reads
/// held every range in flight (33 MiB of RSS for 4 x 4 MiB). A ranged
/// read also costs some S3 implementations the whole object each time
/// (moto: 17 MB/s ranged against 360 MB/s for one GET of 256 MiB).
pub async fn hash_object(
    ctx: &StepContext,
    log: &StepLog<'_>,
    uri: &S3Uri,
    part_sizes: &[u64],
) -> Result<(Digest, Vec<Digest>), StepError> {
    hash_object_tapped(ctx, log, uri, part_sizes, None).await
}

/// [`hash_object`], also handing every chunk, as it arrives, to `tap` (a
/// check that reads the same bytes in the same pass). A tap that stops
/// reading early does not stop the hashing.
pub async fn hash_object_tapped(
    ctx: &StepContext,
    log: &StepLog<'_>,
    uri: &S3Uri,
    part_sizes: &[u64],
    mut tap: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
) -> Result<(Digest, Vec<Digest>), StepError> {
    log.read("s3:HeadObject", uri.to_string());
    let mut head = ctx.aws.s3.head_object().bucket(&uri.bucket).key(&uri.key);
    if let Some(v) = &uri.version_id {
        head = head.version_id(v);
    }
    let head = head
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:HeadObject {uri}"), e))?;
    let size = head
        .content_length()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    // The version measured, even if the key changes meanwhile.
    let version = uri
        .version_id
        .clone()
        .or_else(|| head.version_id().map(str::to_string))
        .filter(|v| v != "null");
    log.read(
        "s3:GetObject",
        format!("{uri} ({size} bytes, hashed as read)"),
    );
    let mut req = ctx.aws.s3.get_object().bucket(&uri.bucket).key(&uri.key);
    if let Some(v) = &version {
        req = req.version_id(v);
    }
    let mut body = req
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:GetObject {uri}"), e))?
        .body;
    let read_error = |e: &dyn std::fmt::Display| {
        StepError::new(ErrorName::AwsUnavailable, format!("reading {uri}: {e}"))
    };
    let mut whole = firebreak_forensics::hash::Hasher::new();
    let mut parts = Vec::new();
    let mut sizes = part_sizes.iter().copied();
    let mut left = sizes.next();
    let mut part = firebreak_forensics::hash::Hasher::new();
    let mut read = 0u64;
    while let Some(chunk) = body.try_next().await.map_err(|e| read_error(&e))? {
        read += chunk.len() as u64;
        whole.update(&chunk);
        if let Some(t) = &tap {
            if t.send(chunk.clone()).await.is_err() {
                tap = None;
            }
        }
        let mut rest: &[u8] = &chunk;
        while let (Some(n), false) = (left, rest.is_empty()) {
            let take = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
            part.update(&rest[..take]);
            rest = &rest[take..];
            let remaining = n - take as u64;
            if remaining == 0 {
                parts.push(std::mem::take(&mut part).finish());
                left = sizes.next();
            } else {
                left = Some(remaining);
            }
        }
    }
    if read != size {
        return Err(read_error(&format!(
            "{read} bytes came back where HeadObject said {size}"
        )));
    }
    Ok((whole.finish(), parts))
}

/// Every key under a prefix, in key order.
pub async fn list_keys(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, StepError> {
    log.read("s3:ListObjectsV2", format!("s3://{bucket}/{prefix}"));
    let mut keys = Vec::new();
    let mut pages = ctx
        .aws
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| aws_error(&format!("s3:ListObjectsV2 s3://{bucket}/{prefix}"), e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    keys.sort();
    Ok(keys)
}

/// One version (or delete marker) of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The object's key.
    pub key: String,
    /// S3's version id, or `null` for the version written while the bucket
    /// kept no versions.
    pub version_id: String,
    /// Whether it is the key's current version (or delete marker).
    pub is_latest: bool,
    /// Whether this is a delete marker rather than a version holding data.
    pub delete_marker: bool,
    /// When it was written, to the second, as S3 reports it.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every version and delete marker under a prefix.
pub async fn list_versions(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Version>, StepError> {
    log.read("s3:ListObjectVersions", format!("s3://{bucket}/{prefix}"));
    let mut out = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut version_marker: Option<String> = None;
    loop {
        let page = ctx
            .aws
            .s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .map_err(|e| aws_error(&format!("s3:ListObjectVersions s3://{bucket}/{prefix}"), e))?;
        let time = |t: Option<&aws_smithy_types::DateTime>| {
            t.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        };
        for v in page.versions() {
            out.push(Version {
                key: v.key().unwrap_or_default().to_string(),
                version_id: v.version_id().unwrap_or("null").to_string(),
                is_latest: v.is_latest().unwrap_or(false),
                delete_marker: false,
                last_modified: time(v.last_modified()),
            });
        }
        for m in page.delete_markers() {
            out.push(Version {
                key: m.key().unwrap_or_default().to_string(),
                version_id: m.version_id().unwrap_or("null").to_string(),
                is_latest: m.is_latest().unwrap_or(false),
                delete_marker: true,
                last_modified: time(m.last_modified()),
            });
        }
        if page.is_truncated() == Some(true) {
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        } else {
            break;
        }
    }
    Ok(out)
}

/// Whether the bucket exists and is reachable with these credentials.
pub async fn bucket_exists(ctx: &StepContext, bucket: &str) -> Result<bool, StepError> {
    match ctx.aws.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            if status == Some(404)
                || matches!(
                    error_code(&e).as_deref(),
                    Some("NotFound") | Some("NoSuchBucket")
                )
            {
                Ok(false)
            } else {
                Err(aws_error(&format!("s3:HeadBucket {bucket}"), e))
            }
        }
    }
}

/// What `setup` found or did for the evidence bucket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BucketSetup {
    /// The bucket's name.
    pub bucket: String,
    /// Whether `setup` created the bucket (false when it existed).
    pub created: bool,
    /// The COMPLIANCE default retention in force, in days.
    pub retention_days: i32,
    /// The default encryption set: `SSE-KMS (KEY)` or `SSE-S3`.
    pub encryption: String,
    /// What was done or found, one line each, for the operator.
    pub actions: Vec<String>,
}

/// Makes (or brings into line) the evidence bucket: Object Lock in
/// COMPLIANCE mode with a default retention, versioning (which Object Lock
/// implies), default encryption (SSE-KMS with the given key, else
/// SSE-S3), all public access blocked, and a policy that refuses any
/// request not over TLS. Idempotent. An existing bucket's retention is
/// kept unless `retention_days` is given (then it is set, lowered too, and
/// the actions say from what to what); a new bucket gets
/// `retention_days` or `default_days`.
pub async fn setup_bucket(
    ctx: &StepContext,
    bucket: &str,
    retention_days: Option<i32>,
    default_days: i32,
    kms_key_id: Option<&str>,
    plain_http: bool,
) -> Result<BucketSetup, StepError> {
    let mut actions = Vec::new();
    let created = create_locked_bucket(ctx, bucket, &mut actions).await?;
    let retention_days =
        set_default_retention(ctx, bucket, retention_days, default_days, &mut actions).await?;
    let encryption = set_encryption(ctx, bucket, kms_key_id, &mut actions).await?;
    block_public_access(ctx, bucket, &mut actions).await?;
    if plain_http {
        // A sandbox reached over plain HTTP (moto) would refuse every
        // request under a TLS-only policy. Say so rather than pretend.
        actions.push(
            "TLS-only bucket policy NOT applied: the endpoint is plain HTTP (a sandbox)".into(),
        );
    } else {
        deny_plain_http(ctx, bucket, &mut actions).await?;
    }
    Ok(BucketSetup {
        bucket: bucket.to_string(),
        created,
        retention_days,
        encryption,
        actions,
    })
}

/// Makes the bucket with Object Lock enabled, unless it exists; says
/// whether it made it.
async fn create_locked_bucket(
    ctx: &StepContext,
    bucket: &str,
    actions: &mut Vec<String>,
) -> Result<bool, StepError> {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let s3 = &ctx.aws.s3;
    Ok(if bucket_exists(ctx, bucket).await? {
        false
    } else {
        let mut req = s3
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true);
        // us-east-1 takes no location constraint; every other region needs one.
        if ctx.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(ctx.region.as_str()))
                    .build(),
            );
        }
        req.send()
            .await
            .map_err(|e| aws_error(&format!("s3:CreateBucket {bucket}"), e))?;
        actions.push(format!("created bucket {bucket} with Object Lock enabled"));
        true
    })
}

/// Sets the COMPLIANCE default retention (the given days, else the
/// bucket's, else the default); gives the days in force.
async fn set_default_retention(
    ctx: &StepContext,
    bucket: &str,
    retention_days: Option<i32>,
    default_days: i32,
    actions: &mut Vec<String>,
) -> Result<i32, StepError> {
    use aws_sdk_s3::types::{
        DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule,
    };
    let s3 = &ctx.aws.s3;
    // Only written when it differs: rewriting it is pointless, and some
    // implementations refuse it on a bucket that holds objects.
    let current = s3
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
        .ok()
        .and_then(|o| o.object_lock_configuration().cloned());
    let current_days = current.as_ref().and_then(|c| {
        let r = c.rule().and_then(|r| r.default_retention())?;
        if r.mode() != Some(&ObjectLockRetentionMode::Compliance) {
            return None;
        }
        r.days()
            .or_else(|| r.years().map(|y| y.saturating_mul(365)))
    });
    let retention_days = match (retention_days, current_days) {
        (Some(d), _) => d,
        (None, Some(c)) => c,
        (None, None) => default_days,
    };
    let lock = ObjectLockConfiguration::builder()
        .object_lock_enabled(ObjectLockEnabled::Enabled)
        .rule(
            ObjectLockRule::builder()
                .default_retention(
                    DefaultRetention::builder()
                        .mode(ObjectLockRetentionMode::Compliance)
                        .days(retention_days)
                        .build(),
                )
                .build(),
        )
        .build();
    let same = current.as_ref().is_some_and(|c| {
        let r = c.rule().and_then(|r| r.default_retention());
        c.object_lock_enabled() == Some(&ObjectLockEnabled::Enabled)
            && r.and_then(|r| r.mode()) == Some(&ObjectLockRetentionMode::Compliance)
            && r.and_then(|r| r.days()) == Some(retention_days)
    });
    if !same {
        s3.put_object_lock_configuration()
            .bucket(bucket)
            .object_lock_configuration(lock)
            .send()
            .await
            .map_err(|e| {
                let mut err = aws_error(&format!("s3:PutObjectLockConfiguration {bucket}"), e);
                err.message.push_str(
                    " (Object Lock can only be turned on when a bucket is created: use a new bucket)",
                );
                err
            })?;
    }
    actions.push(match current_days {
        Some(c) if c > retention_days => format!(
            "default retention LOWERED from {c} to {retention_days} days (COMPLIANCE), as --retention-days asked: objects written from now on can be deleted sooner; objects already stored keep their dates"
        ),
        Some(c) if c < retention_days => format!(
            "default retention raised from {c} to {retention_days} days (COMPLIANCE) for objects written from now on"
        ),
        Some(_) => format!("default retention: COMPLIANCE, {retention_days} days (unchanged)"),
        None => format!("default retention: COMPLIANCE, {retention_days} days"),
    });
    Ok(retention_days)
}

/// Sets default encryption (SSE-KMS with the key, else SSE-S3); gives
/// what it set.
async fn set_encryption(
    ctx: &StepContext,
    bucket: &str,
    kms_key_id: Option<&str>,
    actions: &mut Vec<String>,
) -> Result<String, StepError> {
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    let s3 = &ctx.aws.s3;
    let (sse, encryption) = match kms_key_id {
        Some(k) => (
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .kms_master_key_id(k)
                .build(),
            format!("SSE-KMS ({k})"),
        ),
        None => (
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::Aes256)
                .build(),
            "SSE-S3".to_string(),
        ),
    };
    let sse = sse.map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(sse)
                        .bucket_key_enabled(kms_key_id.is_some())
                        .build(),
                )
                .build()
                .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:PutBucketEncryption {bucket}"), e))?;
    actions.push(format!("default encryption: {encryption}"));
    Ok(encryption)
}

/// Blocks every kind of public access.
async fn block_public_access(
    ctx: &StepContext,
    bucket: &str,
    actions: &mut Vec<String>,
) -> Result<(), StepError> {
    use aws_sdk_s3::types::PublicAccessBlockConfiguration;
    ctx.aws
        .s3
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:PutPublicAccessBlock {bucket}"), e))?;
    actions.push("all public access blocked".into());
    Ok(())
}

/// A bucket policy that denies every request made without TLS.
async fn deny_plain_http(
    ctx: &StepContext,
    bucket: &str,
    actions: &mut Vec<String>,
) -> Result<(), StepError> {
    let partition = crate::containment::iam::partition(&ctx.region);
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "FirebreakTlsOnly",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [format!("arn:{partition}:s3:::{bucket}"), format!("arn:{partition}:s3:::{bucket}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        }]
    });
    ctx.aws
        .s3
        .put_bucket_policy()
        .bucket(bucket)
        .policy(policy.to_string())
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:PutBucketPolicy {bucket}"), e))?;
    actions.push("bucket policy: requests without TLS are denied".into());
    Ok(())
}

/// Whether the bucket has Object Lock enabled (legal holds need it).
pub async fn object_lock_enabled(ctx: &StepContext, bucket: &str) -> Result<bool, StepError> {
    match ctx
        .aws
        .s3
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled())
            == Some(&aws_sdk_s3::types::ObjectLockEnabled::Enabled)),
        Err(e) if error_code(&e).as_deref() == Some("ObjectLockConfigurationNotFoundError") => {
            Ok(false)
        }
        Err(e) => Err(aws_error(
            &format!("s3:GetObjectLockConfiguration {bucket}"),
            e,
        )),
    }
}

/// Puts a legal hold on one object version, or lifts it.
pub async fn set_legal_hold(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    on: bool,
) -> Result<(), StepError> {
    use aws_sdk_s3::types::{ObjectLockLegalHold, ObjectLockLegalHoldStatus};
    let status = if on {
        ObjectLockLegalHoldStatus::On
    } else {
        ObjectLockLegalHoldStatus::Off
    };
    let target = match version_id {
        Some(v) => format!("s3://{bucket}/{key}?versionId={v}"),
        None => format!("s3://{bucket}/{key}"),
    };
    let params = format!("{target} LegalHold={}", status.as_str());
    if ctx.is_dry_run() {
        log.not_checked(
            "s3:PutObjectLegalHold",
            params,
            format!(
                "S3 has no dry run; needs s3:PutObjectLegalHold on arn:aws:s3:::{bucket}/cases/*"
            ),
        );
        return Ok(());
    }
    ctx.aws
        .s3
        .put_object_legal_hold()
        .bucket(bucket)
        .key(key)
        .set_version_id(version_id.map(str::to_string))
        .legal_hold(ObjectLockLegalHold::builder().status(status).build())
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:PutObjectLegalHold {target}"), e))?;
    log.done("s3:PutObjectLegalHold", params);
    Ok(())
}

/// Whether one object version is under a legal hold.
pub async fn legal_hold(
    ctx: &StepContext,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<bool, StepError> {
    match ctx
        .aws
        .s3
        .get_object_legal_hold()
        .bucket(bucket)
        .key(key)
        .set_version_id(version_id.map(str::to_string))
        .send()
        .await
    {
        Ok(out) => Ok(out.legal_hold().and_then(|h| h.status())
            == Some(&aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)),
        Err(e) if error_code(&e).as_deref() == Some("NoSuchObjectLockConfiguration") => Ok(false),
        Err(e) => Err(aws_error(
            &format!("s3:GetObjectLegalHold s3://{bucket}/{key}"),
            e,
        )),
    }
}

/// What `evidence hold|unhold` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Holds {
    /// The case whose objects were held or released.
    pub case_id: String,
    /// The evidence bucket that holds them.
    pub bucket: String,
    /// Whether holds were put on (`hold`) or lifted (`unhold`).
    pub on: bool,
    /// Object versions changed.
    pub versions: usize,
    /// Versions that could not be changed, with why.
    pub failed: Vec<String>,
}

/// Puts a legal hold on every version of every object of a case (or
/// lifts them all): while it is on, no version can be deleted whatever its
/// retention date.
pub async fn hold_case(
    ctx: &StepContext,
    bucket: &str,
    case: &str,
    on: bool,
) -> Result<Holds, StepError> {
    let log = ctx.log(if on {
        "evidence_hold"
    } else {
        "evidence_unhold"
    });
    let versions = list_versions(ctx, &log, bucket, &format!("cases/{case}/")).await?;
    let mut out = Holds {
        case_id: case.to_string(),
        bucket: bucket.to_string(),
        on,
        ..Holds::default()
    };
    for v in versions.iter().filter(|v| !v.delete_marker) {
        let version = Some(v.version_id.as_str()).filter(|id| *id != "null");
        match set_legal_hold(ctx, &log, bucket, &v.key, version, on).await {
            Ok(()) => out.versions += 1,
            Err(e) => out
                .failed
                .push(format!("s3://{bucket}/{}: {}", v.key, e.message)),
        }
    }
    Ok(out)
}
