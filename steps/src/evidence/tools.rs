//! The tools bucket: prebuilt LiME modules (one per kernel release) and
//! AVML, with a manifest that names each object and its SHA-256.
//!
//! Modules are never compiled on a suspect host: they are built beforehand
//! for the fleet's kernels and added here (`firebreak tools add`). The
//! capture script checks each download against the manifest's hash before
//! loading it.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use base64::Engine as _;
use firebreak_forensics::hash::{sha256_bytes, Digest};
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::evidence;

/// Where the manifest lives in the tools bucket: the only object the
/// capture trusts to name the others and their hashes.
pub const MANIFEST_KEY: &str = "manifest.json";

/// The default tools bucket of an account and region.
pub fn default_tools_bucket(account: &str, region: &str) -> String {
    format!("firebreak-tools-{account}-{region}")
}

/// One tool object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolObject {
    /// The object's key: `lime/KERNEL_RELEASE/lime.ko` or `avml/avml`.
    pub key: String,
    /// The version S3 gave the upload (the tools bucket is versioned), so
    /// the capture fetches exactly that one; None if S3 gave none.
    pub version_id: Option<String>,
    /// SHA-256 of the object's bytes (hex), which the capture script checks
    /// before loading it.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was added (UTC).
    pub added_at: chrono::DateTime<chrono::Utc>,
}

/// What the tools bucket holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    /// LiME modules by the kernel release they were built for (`uname -r`).
    #[serde(default)]
    pub lime: BTreeMap<String, ToolObject>,
    /// AVML, used when no module matches the kernel.
    #[serde(default)]
    pub avml: Option<ToolObject>,
}

/// Which tool is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolKind {
    /// A LiME kernel module, for one kernel release.
    Lime {
        /// The release it was built for, as `uname -r` prints it on the
        /// host (`5.10.0-28-cloud-amd64`).
        kernel_release: String,
    },
    /// The AVML binary, used when no module matches the kernel.
    Avml,
}

/// A kernel release as `uname -r` prints it.
pub fn valid_kernel_release(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 128
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// Reads the manifest (`None`: the bucket holds none).
pub async fn read_manifest(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
) -> Result<Option<Manifest>, StepError> {
    let Some((bytes, _)) = evidence::get(ctx, log, bucket, MANIFEST_KEY).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        StepError::new(
            ErrorName::InvalidInput,
            format!("s3://{bucket}/{MANIFEST_KEY} is not a firebreak tools manifest: {e}"),
        )
    })
}

/// Makes the tools bucket when it does not exist: versioned, encrypted,
/// no public access. Returns whether it was made.
pub async fn ensure_bucket(ctx: &StepContext, bucket: &str) -> Result<bool, StepError> {
    use aws_sdk_s3::types::{
        BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
        PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
        ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
    };
    if evidence::bucket_exists(ctx, bucket).await? {
        return Ok(false);
    }
    let s3 = &ctx.aws.s3;
    let mut req = s3.create_bucket().bucket(bucket);
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
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:PutBucketVersioning {bucket}"), e))?;
    let sse = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(sse)
        .build();
    let config = ServerSideEncryptionConfiguration::builder()
        .rules(rule)
        .build()
        .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(config)
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:PutBucketEncryption {bucket}"), e))?;
    s3.put_public_access_block()
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
    Ok(true)
}

async fn put(
    ctx: &StepContext,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    digest: &Digest,
) -> Result<Option<String>, StepError> {
    let raw = hex::decode(&digest.sha256)
        .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
    let out = ctx
        .aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(raw))
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:PutObject s3://{bucket}/{key}"), e))?;
    Ok(out.version_id().map(str::to_string))
}

/// Adds a tool (replacing the one for the same kernel) and updates the
/// manifest. Returns the entry.
pub async fn add(
    ctx: &StepContext,
    bucket: &str,
    kind: &ToolKind,
    bytes: Vec<u8>,
) -> Result<ToolObject, StepError> {
    let log = ctx.log("tools");
    // Checked before anything is made or written.
    match kind {
        ToolKind::Lime { kernel_release } => {
            firebreak_forensics::elf::check_lime_module(&bytes, kernel_release).map_err(|e| {
                StepError::invalid_input(format!(
                    "not a LiME module for kernel {kernel_release}: {e}"
                ))
            })?;
        }
        ToolKind::Avml => {
            firebreak_forensics::elf::check_avml(&bytes)
                .map_err(|e| StepError::invalid_input(format!("not an AVML binary: {e}")))?;
        }
    }
    ensure_bucket(ctx, bucket).await?;
    let mut manifest = read_manifest(ctx, &log, bucket).await?.unwrap_or_default();
    let digest = sha256_bytes(&bytes);
    let key = match kind {
        ToolKind::Lime { kernel_release } => {
            if !valid_kernel_release(kernel_release) {
                return Err(StepError::invalid_input(format!(
                    "{kernel_release:?} is not a kernel release as `uname -r` prints it"
                )));
            }
            format!("lime/{kernel_release}/lime.ko")
        }
        ToolKind::Avml => "avml/avml".to_string(),
    };
    let version_id = put(ctx, bucket, &key, bytes, &digest).await?;
    let entry = ToolObject {
        key,
        version_id,
        sha256: digest.sha256.clone(),
        size: digest.size,
        added_at: chrono::Utc::now(),
    };
    match kind {
        ToolKind::Lime { kernel_release } => {
            manifest.lime.insert(kernel_release.clone(), entry.clone());
        }
        ToolKind::Avml => manifest.avml = Some(entry.clone()),
    }
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
    let d = sha256_bytes(&body);
    put(ctx, bucket, MANIFEST_KEY, body, &d).await?;
    Ok(entry)
}

/// Where the symbol tables' index lives in the tools bucket.
pub const SYMBOLS_INDEX_KEY: &str = "symbols/index.json";

/// One ISF symbol table in the tools bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SymbolTable {
    /// The `linux_banner` it was built for: Volatility matches tables by it.
    pub banner: String,
    /// Its key: `symbols/linux/RELEASE-BANNERHASH.json` (or `.json.xz`).
    pub key: String,
    /// The version S3 gave the upload; None if S3 gave none.
    pub version_id: Option<String>,
    /// SHA-256 of the file's bytes as stored (hex).
    pub sha256: String,
    /// Size in bytes as stored.
    pub size: u64,
    /// When it was added (UTC).
    pub added_at: chrono::DateTime<chrono::Utc>,
}

/// The symbol tables in the tools bucket, by banner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SymbolsIndex {
    /// Each table by its full `linux_banner`; a later table for the same
    /// banner replaces the earlier one.
    #[serde(default)]
    pub tables: BTreeMap<String, SymbolTable>,
}

/// Reads the symbols index (`None`: the bucket holds none).
pub async fn read_symbols_index(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
) -> Result<Option<SymbolsIndex>, StepError> {
    let Some((bytes, _)) = evidence::get(ctx, log, bucket, SYMBOLS_INDEX_KEY).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        StepError::new(
            ErrorName::InvalidInput,
            format!("s3://{bucket}/{SYMBOLS_INDEX_KEY} is not a firebreak symbols index: {e}"),
        )
    })
}

/// Stores an ISF symbol table (`.json` or `.json.xz`, as dwarf2json and
/// xz make them) under `symbols/linux/`, indexed by its banner; a table
/// for the same banner is replaced in the index.
pub async fn add_symbols(
    ctx: &StepContext,
    bucket: &str,
    file_name: &str,
    bytes: Vec<u8>,
) -> Result<SymbolTable, StepError> {
    let banner = firebreak_forensics::volatility::isf_file_banner(file_name, &bytes)
        .map_err(|e| StepError::with_source(ErrorName::InvalidInput, file_name, e))?
        .filter(|b| b.starts_with("Linux version "))
        .ok_or_else(|| {
            StepError::invalid_input(format!(
                "{file_name} names no Linux banner (symbols.linux_banner): not a Linux ISF table from dwarf2json"
            ))
        })?;
    let log = ctx.log("symbols");
    ensure_bucket(ctx, bucket).await?;
    let digest = sha256_bytes(&bytes);
    let release = firebreak_forensics::volatility::kernel_release(&banner)
        .filter(|r| valid_kernel_release(r))
        .unwrap_or_else(|| "linux".into());
    let banner_id = sha256_bytes(banner.as_bytes());
    let ext = if file_name.ends_with(".json.xz") {
        "json.xz"
    } else {
        "json"
    };
    // The banner's hash in the name: two builds of one release differ.
    let key = format!(
        "symbols/linux/{release}-{}.{ext}",
        banner_id.sha256.get(..16).unwrap_or_default()
    );
    let version_id = put(ctx, bucket, &key, bytes, &digest).await?;
    let entry = SymbolTable {
        banner: banner.clone(),
        key,
        version_id,
        sha256: digest.sha256,
        size: digest.size,
        added_at: chrono::Utc::now(),
    };
    let mut index = read_symbols_index(ctx, &log, bucket)
        .await?
        .unwrap_or_default();
    index.tables.insert(banner, entry.clone());
    let body = serde_json::to_vec_pretty(&index)
        .map_err(|e| StepError::with_source(ErrorName::Internal, "the symbols index", e))?;
    let d = sha256_bytes(&body);
    put(ctx, bucket, SYMBOLS_INDEX_KEY, body, &d).await?;
    Ok(entry)
}
