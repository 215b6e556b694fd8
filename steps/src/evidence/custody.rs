//! A case's custody ledger in the evidence bucket, and its verification.
//!
//! Each record is its own object, `cases/CASE/custody/NNNNNNNN.json`,
//! written once (`If-None-Match: *`) under Object Lock; its number is its
//! sequence, so a listing gives the chain in order. Its bytes are the
//! record's canonical JSON, and its hash is their SHA-256. In a signed case
//! (`--custody-key`) each record has `NNNNNNNN.sig` beside it: KMS's
//! ECDSA P-256 signature over that hash. Appending the same event twice (a
//! retried step) finds the first and writes nothing (but a signature the
//! first run did not get to write).
//!
//! What counts is the first version of each object: Object Lock keeps it
//! however many versions are written over it, and a delete marker only
//! hides it. Verification reads those first versions, and reports every
//! later version and delete marker as what it is: someone writing over, or
//! hiding, evidence.

use std::collections::BTreeMap;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use firebreak_forensics::custody::{
    self as chain, signature_breaks, verify_chain, Break, CustodyRecord, Event, Location,
    NewRecord, RecordSignature,
};
use firebreak_workflows::ErrorName;
use serde::Serialize;

use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, StepError};
use crate::evidence::{self, keys, Lock, Put, S3Uri, Version};

/// Concurrent appends race for the next number; the loser reads again.
const APPEND_TRIES: usize = 8;

/// A case's ledger as stored: the first version of each object.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Each record's key and what it holds, in key (chain) order.
    pub records: Vec<(String, Result<CustodyRecord, String>)>,
    /// Signatures by the sequence their key names.
    pub signatures: BTreeMap<u64, Result<RecordSignature, String>>,
    /// Later versions and delete markers over the first versions.
    pub problems: Vec<String>,
}

impl Ledger {
    /// The records that could be read.
    pub fn readable(&self) -> Vec<CustodyRecord> {
        self.records
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().cloned())
            .collect()
    }

    /// The signatures that could be read.
    pub fn readable_signatures(&self) -> BTreeMap<u64, RecordSignature> {
        self.signatures
            .iter()
            .filter_map(|(n, s)| Some((*n, s.as_ref().ok()?.clone())))
            .collect()
    }
}

/// The first version of each key among `versions` (the locked one), how
/// many versions it has, and whether a delete marker hides it now.
struct KeyVersions {
    first: Option<Version>,
    /// The newest version that is not a delete marker.
    latest: Option<Version>,
    count: usize,
    hidden: bool,
}

fn by_key(versions: &[Version]) -> BTreeMap<String, KeyVersions> {
    let mut out: BTreeMap<String, KeyVersions> = BTreeMap::new();
    // S3 lists the versions of a key newest first: among equal times
    // (second resolution in some implementations) the later one in the
    // list is the older.
    for v in versions {
        let e = out.entry(v.key.clone()).or_insert(KeyVersions {
            first: None,
            latest: None,
            count: 0,
            hidden: false,
        });
        if v.delete_marker {
            e.hidden |= v.is_latest;
            continue;
        }
        e.count += 1;
        let older = match &e.first {
            None => true,
            Some(f) => v.last_modified <= f.last_modified,
        };
        if older {
            e.first = Some(v.clone());
        }
        let newer = match &e.latest {
            None => true,
            Some(l) => v.last_modified > l.last_modified || v.is_latest,
        };
        if newer {
            e.latest = Some(v.clone());
        }
    }
    out
}

fn pinned(bucket: &str, key: &str, v: &Version) -> S3Uri {
    S3Uri {
        bucket: bucket.to_string(),
        key: key.to_string(),
        version_id: Some(v.version_id.clone()).filter(|id| id != "null"),
    }
}

/// The sequence a ledger key names (`.../NNNNNNNN.json` or `.sig`).
fn sequence_of(prefix: &str, key: &str, ext: &str) -> Option<u64> {
    key.strip_prefix(prefix)?
        .strip_suffix(ext)?
        .parse::<u64>()
        .ok()
}

/// Reads a case's ledger: the first version of every record and
/// signature, and what was done to them since.
pub async fn read_ledger(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
) -> Result<Ledger, StepError> {
    let prefix = keys::custody_prefix(case);
    let versions = evidence::list_versions(ctx, log, bucket, &prefix).await?;
    let mut ledger = Ledger::default();
    for (key, kv) in by_key(&versions) {
        let what = if key.ends_with(".sig") {
            "signature"
        } else {
            "record"
        };
        if kv.count > 1 {
            ledger.problems.push(format!(
                "s3://{bucket}/{key}: the {what} was overwritten ({} versions; the first, locked one is read)",
                kv.count
            ));
        }
        if kv.hidden {
            ledger.problems.push(format!(
                "s3://{bucket}/{key}: the {what} was deleted (a delete marker hides it; the locked first version is read)"
            ));
        }
        let Some(first) = kv.first else {
            ledger.problems.push(format!(
                "s3://{bucket}/{key}: every version is gone (the bucket does not lock its objects)"
            ));
            continue;
        };
        let bytes = get_version(ctx, log, &pinned(bucket, &key, &first)).await?;
        if let Some(n) = sequence_of(&prefix, &key, ".sig") {
            // A signature written over: whose key signs the newer one?
            if let Some(latest) = kv
                .latest
                .filter(|l| kv.count > 1 && l.version_id != first.version_id)
            {
                let newer = get_version(ctx, log, &pinned(bucket, &key, &latest)).await?;
                let (old, new) = (
                    serde_json::from_slice::<RecordSignature>(&bytes).ok(),
                    serde_json::from_slice::<RecordSignature>(&newer).ok(),
                );
                if let (Some(o), Some(n)) = (old, new) {
                    if o.key_id != n.key_id {
                        ledger.problems.push(format!(
                            "s3://{bucket}/{key}: record {} was re-signed with another key ({}, not {})",
                            o.sequence, n.key_id, o.key_id
                        ));
                    }
                }
            }
            let sig = serde_json::from_slice::<RecordSignature>(&bytes)
                .map_err(|e| format!("s3://{bucket}/{key} is not a record signature: {e}"));
            ledger.signatures.insert(n, sig);
            continue;
        }
        let parsed = CustodyRecord::parse(&bytes).map_err(|e| format!("{e}"));
        if let (Ok(r), Some(n)) = (&parsed, sequence_of(&prefix, &key, ".json")) {
            if r.sequence != n {
                ledger.problems.push(format!(
                    "s3://{bucket}/{key} holds record {}: records were moved or reordered",
                    r.sequence
                ));
            }
        }
        ledger.records.push((key, parsed));
    }
    Ok(ledger)
}

fn same_event(a: &CustodyRecord, b: &NewRecord) -> bool {
    a.evidence_id == b.evidence_id
        && a.event == b.event
        && a.kind == b.kind
        && a.location == b.location
        && a.sha256 == b.sha256
}

/// Appends a record to the case's chain (signed with the lock's custody
/// key, if any), or returns the one already there for the same event.
/// Refuses to extend a damaged ledger.
pub async fn append(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    lock: &Lock,
    record: NewRecord,
) -> Result<CustodyRecord, StepError> {
    for _ in 0..APPEND_TRIES {
        let ledger = read_ledger(ctx, log, bucket, &record.case_id).await?;
        let mut records = Vec::new();
        for (key, r) in &ledger.records {
            match r {
                Ok(r) => records.push(r.clone()),
                Err(e) => {
                    return Err(StepError::new(
                        ErrorName::VerificationFailed,
                        format!("the custody ledger is damaged at s3://{bucket}/{key} ({e}): run `firebreak evidence verify --case {}`", record.case_id),
                    ))
                }
            }
        }
        // A record stored by a run that died before its signature gets
        // the signature now, whichever event this append is for.
        for r in &records {
            if let Some(key_id) = &r.signing_key {
                if !ledger.signatures.contains_key(&r.sequence) {
                    write_signature(ctx, log, bucket, lock, r, key_id).await?;
                }
            }
        }
        if let Some(existing) = records.iter().find(|r| same_event(r, &record)) {
            return Ok(existing.clone());
        }
        let breaks = verify_chain(&record.case_id, &records);
        if let Some(b) = breaks.first() {
            return Err(StepError::new(
                ErrorName::VerificationFailed,
                format!(
                    "the custody ledger of case {} is broken at record {} ({}): nothing is appended to it; run `firebreak evidence verify`",
                    record.case_id, b.sequence, b.problem
                ),
            ));
        }
        // A signed case stays signed, whoever appends: the key comes from
        // the case's records when the caller names none.
        let case_key = records.iter().rev().find_map(|r| r.signing_key.clone());
        let signing_key = match (&lock.custody_key, case_key) {
            (Some(mine), Some(theirs)) if *mine != theirs => {
                return Err(StepError::invalid_input(format!(
                    "case {} is signed with {theirs}, not {mine}: one case, one custody key",
                    record.case_id
                )))
            }
            (Some(mine), _) => Some(mine.clone()),
            (None, theirs) => theirs,
        };
        let mut record = record.clone();
        record.signing_key = signing_key.clone();
        let (next, body) = record.chain_after(records.last()).map_err(|e| {
            StepError::with_source(ErrorName::Internal, "making a custody record", e)
        })?;
        // Signed before it is stored: a key that cannot sign leaves no
        // unsigned record in a signed case.
        let signature = match &signing_key {
            Some(k) => Some(sign(ctx, log, k, &next).await?),
            None => None,
        };
        let key = keys::custody(&next.case_id, next.sequence);
        match evidence::put_new_locked(ctx, log, bucket, &key, body, "application/json", lock)
            .await?
        {
            Put::Created(_) => {
                if let (Some(sig), Some(k)) = (signature, &signing_key) {
                    put_signature(ctx, log, bucket, lock, &next, k, sig).await?;
                }
                return Ok(next);
            }
            Put::Planned => return Ok(next),
            Put::Exists => continue,
        }
    }
    Err(StepError::new(
        ErrorName::Throttled,
        format!(
            "could not append to the custody ledger of case {}: {APPEND_TRIES} concurrent appends won the race",
            record.case_id
        ),
    ))
}

/// Checks that a key can sign custody records (an enabled asymmetric
/// ECC_NIST_P256 key for SIGN_VERIFY) and returns its ARN, which records
/// name: an alias could later point at another key.
pub async fn check_signing_key(ctx: &StepContext, key_id: &str) -> Result<String, StepError> {
    let out = ctx
        .aws
        .kms
        .describe_key()
        .key_id(key_id)
        .send()
        .await
        .map_err(|e| aws_error(&format!("kms:DescribeKey {key_id}"), e))?;
    let meta = out.key_metadata().ok_or_else(|| {
        StepError::new(
            ErrorName::AwsRequestFailed,
            format!("kms:DescribeKey {key_id} returned no key metadata"),
        )
    })?;
    let spec = meta.key_spec().map(|s| s.as_str().to_string());
    let usage = meta.key_usage().map(|u| u.as_str().to_string());
    if spec.as_deref() != Some("ECC_NIST_P256") || usage.as_deref() != Some("SIGN_VERIFY") {
        return Err(StepError::invalid_input(format!(
            "custody key {key_id} is {} for {}: custody records need an asymmetric ECC_NIST_P256 key for SIGN_VERIFY (aws kms create-key --key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY)",
            spec.as_deref().unwrap_or("of unknown spec"),
            usage.as_deref().unwrap_or("unknown use")
        )));
    }
    if !meta.enabled() {
        return Err(StepError::invalid_input(format!(
            "custody key {key_id} is disabled"
        )));
    }
    Ok(meta.arn().unwrap_or(key_id).to_string())
}

/// KMS's DER signature of a record's hash: the 32-byte hash is the
/// message (`MessageType=RAW`: KMS hashes it with SHA-256 and signs).
async fn sign(
    ctx: &StepContext,
    log: &StepLog<'_>,
    key_id: &str,
    record: &CustodyRecord,
) -> Result<Option<Vec<u8>>, StepError> {
    let params = format!(
        "KeyId={key_id}, SigningAlgorithm=ECDSA_SHA_256, MessageType=RAW (custody record {})",
        record.sequence
    );
    if ctx.is_dry_run() {
        log.not_checked(
            "kms:Sign",
            params,
            format!("KMS has no dry run; needs kms:Sign on {key_id}"),
        );
        return Ok(None);
    }
    let digest = hex::decode(&record.hash)
        .map_err(|e| StepError::with_source(ErrorName::Internal, "a record hash", e))?;
    let out = ctx
        .aws
        .kms
        .sign()
        .key_id(key_id)
        .message(Blob::new(digest))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .map_err(|e| aws_error(&format!("kms:Sign with {key_id}"), e))?;
    log.read("kms:Sign", params);
    let der = out
        .signature()
        .map(|b| b.as_ref().to_vec())
        .ok_or_else(|| {
            StepError::new(
                ErrorName::AwsRequestFailed,
                format!("kms:Sign with {key_id} returned no signature"),
            )
        })?;
    Ok(Some(der))
}

async fn put_signature(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    lock: &Lock,
    record: &CustodyRecord,
    key_id: &str,
    der: Option<Vec<u8>>,
) -> Result<(), StepError> {
    let Some(der) = der else { return Ok(()) };
    let sig = RecordSignature::new(record, key_id, &der);
    let body = serde_json::to_vec(&sig)
        .map_err(|e| StepError::with_source(ErrorName::Internal, "a record signature", e))?;
    let key = keys::custody_signature(&record.case_id, record.sequence);
    // Exists: a concurrent run signed the same record (the same bytes,
    // the same key); either signature is valid.
    evidence::put_new_locked(ctx, log, bucket, &key, body, "application/json", lock).await?;
    Ok(())
}

async fn write_signature(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    lock: &Lock,
    record: &CustodyRecord,
    key_id: &str,
) -> Result<(), StepError> {
    let der = sign(ctx, log, key_id, record).await?;
    put_signature(ctx, log, bucket, lock, record, key_id, der).await
}

/// How `evidence verify` checks the signatures of a signed case.
#[derive(Clone, Debug)]
pub enum SignatureCheck {
    /// With KMS `Verify`, on the key the case's first signed record names.
    Kms,
    /// Offline, with this public key (`--public-key`).
    PublicKey(Box<chain::VerifyingKey>),
}

/// What became of one artifact the ledger names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactState {
    /// The recorded version's bytes hash to the recorded SHA-256.
    Intact,
    /// The recorded version is intact, but later versions were written
    /// over it: whoever reads the object without its version id gets them.
    Replaced,
    /// Its bytes do not hash to the recorded SHA-256 (an unversioned
    /// object rewritten).
    Modified,
    /// It is gone (or hidden behind a delete marker).
    Missing,
    /// Not hashed by firebreak here (a snapshot): its existence was
    /// checked.
    Present,
    /// It could not be read (no such bucket, access denied): nothing can
    /// be said of it, which is not intact.
    Unreadable,
}

/// One artifact the ledger names, as `evidence verify` found it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArtifactCheck {
    /// The evidence id of the first record naming it (`instance-state:i-...`,
    /// `ebs-snapshot:snap-...`).
    pub evidence_id: String,
    /// What it is: `instance-state`, `console-output`, `memory-image`,
    /// `ebs-snapshot`, ...
    pub kind: String,
    /// Where it is: `s3://bucket/key?versionId=...`, or
    /// `snapshot:ACCOUNT/REGION/snap-...`.
    pub location: String,
    /// The SHA-256 its first record gave it (hex); None when none was
    /// recorded.
    pub recorded_sha256: Option<String>,
    /// The SHA-256 of the recorded version as read now; None for a snapshot
    /// (its blocks are not re-read) or what could not be read.
    pub current_sha256: Option<String>,
    /// Intact, replaced, modified, missing, present or unreadable.
    pub state: ArtifactState,
    /// The finding in words, for the operator.
    pub detail: String,
}

/// The signatures of a case, as verified.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Signatures {
    /// The key the case is signed with (None: an unsigned case).
    pub key: Option<String>,
    /// How they were checked: `kms`, `public key`.
    pub checked_with: Option<String>,
    /// Signatures that verified.
    pub valid: usize,
    /// Every problem: missing, re-signed, unsigned appends, invalid.
    pub problems: Vec<Break>,
}

/// The result of `evidence verify`.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// The case verified.
    pub case_id: String,
    /// The evidence bucket that holds its ledger.
    pub bucket: String,
    /// How many records could be read (the first version of each).
    pub records: usize,
    /// Broken links of the chain, the first one first.
    pub breaks: Vec<Break>,
    /// Custody records overwritten, hidden or unreadable.
    pub record_problems: Vec<String>,
    /// Evidence firebreak checked and rejected (hashes that disagree, an
    /// image not whole): recorded honestly, not a break of custody.
    pub rejected: Vec<String>,
    /// The signatures: the case's key (none for an unsigned case), how they
    /// were checked, how many verified, and every problem.
    pub signatures: Signatures,
    /// Every artifact the records name, once each, in the order first named.
    pub artifacts: Vec<ArtifactCheck>,
    /// The last record: keep its hash outside the bucket (the ticket, the
    /// case notes) to detect a chain cut short.
    pub head: Option<ChainHead>,
    /// What verification cannot vouch for (a bucket without COMPLIANCE
    /// Object Lock).
    pub warnings: Vec<String>,
    /// True only when the chain has no break, no record was overwritten,
    /// hidden or unreadable, every signature holds, and every artifact is
    /// intact or present. Rejected evidence and warnings do not count.
    pub intact: bool,
}

/// The last record of the chain, to keep outside the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    /// Its sequence number (`NNNNNNNN` of its key).
    pub sequence: u64,
    /// Its hash: the SHA-256 of its stored bytes, hex.
    pub hash: String,
}

/// Verifies a case: the chain (first versions), every record object, the
/// signatures, every artifact.
pub async fn verify(
    ctx: &StepContext,
    bucket: &str,
    case: &str,
    check: &SignatureCheck,
) -> Result<Verification, StepError> {
    let log = ctx.log("verify_custody");
    let ledger = read_ledger(ctx, &log, bucket, case).await?;
    let mut record_problems = ledger.problems.clone();
    for (key, r) in &ledger.records {
        if let Err(e) = r {
            record_problems.push(format!("s3://{bucket}/{key}: {e}"));
        }
    }
    for (n, s) in &ledger.signatures {
        if let Err(e) = s {
            record_problems.push(format!("signature of record {n}: {e}"));
        }
    }
    let records = ledger.readable();
    let breaks = verify_chain(case, &records);
    // Evidence rejected by firebreak (a Rejected record, or, before, a
    // Verified record whose note says so) is listed apart; a hash
    // disagreement nobody rejected is a problem of custody.
    let rejected_ids: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| {
            r.event == Event::Rejected
                || (r.event == Event::Verified && failed_note(r.note.as_deref()))
        })
        .map(|r| r.evidence_id.as_str())
        .collect();
    let mut rejected = Vec::new();
    for r in &records {
        if rejected_ids.contains(r.evidence_id.as_str()) {
            if r.event == Event::Rejected || r.event == Event::Verified {
                rejected.push(format!(
                    "record {} ({} {}): rejected: {}",
                    r.sequence,
                    r.kind,
                    r.location.uri(),
                    r.note.as_deref().unwrap_or("no reason recorded")
                ));
            }
            continue;
        }
        if r.host_sha256.is_some() && r.sha256.is_some() && r.host_sha256 != r.sha256 {
            record_problems.push(format!(
                "record {} ({} {}): the host's SHA-256 {} and the off-host SHA-256 {} differ",
                r.sequence,
                r.kind,
                r.location.uri(),
                r.host_sha256.as_deref().unwrap_or("?"),
                r.sha256.as_deref().unwrap_or("?")
            ));
        }
    }
    // Records of one artifact must agree on its hash.
    for (i, r) in records.iter().enumerate() {
        if let Some(first) = records
            .iter()
            .take(i)
            .find(|p| p.location == r.location && p.sha256.is_some())
        {
            if r.sha256.is_some() && r.sha256 != first.sha256 {
                record_problems.push(format!(
                    "record {} gives {} the SHA-256 {}, record {} gave it {}",
                    r.sequence,
                    r.location.uri(),
                    r.sha256.as_deref().unwrap_or("?"),
                    first.sequence,
                    first.sha256.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    let signatures = check_signatures(ctx, &log, &records, &ledger, check).await?;
    let mut warnings = Vec::new();
    if !compliance_locked(ctx, bucket).await {
        warnings.push(format!(
            "s3://{bucket} has no COMPLIANCE Object Lock default: versions can be deleted there, so records removed from the end of the chain cannot be detected; compare the chain head with the one kept outside the bucket"
        ));
    }

    let artifacts = check_artifacts(ctx, &log, &records).await;
    let intact = breaks.is_empty()
        && record_problems.is_empty()
        && signatures.problems.is_empty()
        && artifacts
            .iter()
            .all(|a| matches!(a.state, ArtifactState::Intact | ArtifactState::Present));
    Ok(Verification {
        case_id: case.to_string(),
        bucket: bucket.to_string(),
        records: records.len(),
        breaks,
        record_problems,
        rejected,
        signatures,
        artifacts,
        head: records.last().map(|r| ChainHead {
            sequence: r.sequence,
            hash: r.hash.clone(),
        }),
        warnings,
        intact,
    })
}

/// Whether the bucket's default retention is COMPLIANCE Object Lock.
async fn compliance_locked(ctx: &StepContext, bucket: &str) -> bool {
    ctx.aws
        .s3
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
        .ok()
        .and_then(|o| o.object_lock_configuration().cloned())
        .is_some_and(|c| {
            c.rule()
                .and_then(|r| r.default_retention())
                .and_then(|d| d.mode())
                == Some(&aws_sdk_s3::types::ObjectLockRetentionMode::Compliance)
        })
}

/// Each artifact the records name, read once and compared with the hash
/// its first record holds.
async fn check_artifacts(
    ctx: &StepContext,
    log: &StepLog<'_>,
    records: &[CustodyRecord],
) -> Vec<ArtifactCheck> {
    // Each artifact once: the first record that hashed it holds the
    // reference hash.
    let mut artifacts = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in records {
        let uri = r.location.uri();
        if !seen.insert(uri.clone()) {
            continue;
        }
        let check = match &r.location {
            Location::S3 {
                bucket: b,
                key,
                version_id,
            } => check_object(ctx, log, r, b.as_str(), key.as_str(), version_id.as_deref()).await,
            Location::Snapshot { snapshot_id, .. } => {
                check_snapshot(ctx, log, r, snapshot_id.as_str()).await
            }
        };
        // One artifact that cannot be read (a record naming a bucket that
        // does not exist, say) is reported; it does not stop the others.
        artifacts.push(check.unwrap_or_else(|e| ArtifactCheck {
            evidence_id: r.evidence_id.clone(),
            kind: r.kind.clone(),
            location: uri.clone(),
            recorded_sha256: r.sha256.clone(),
            current_sha256: None,
            state: ArtifactState::Unreadable,
            detail: format!("cannot be read: {}", e.message),
        }));
    }
    artifacts
}

/// The signed-case rules on what is stored, then each signature checked
/// with KMS (on the case's key, never on the key a signature names) or
/// with the public key given.
async fn check_signatures(
    ctx: &StepContext,
    log: &StepLog<'_>,
    records: &[CustodyRecord],
    ledger: &Ledger,
    check: &SignatureCheck,
) -> Result<Signatures, StepError> {
    let sigs = ledger.readable_signatures();
    let mut out = Signatures {
        key: records.iter().find_map(|r| r.signing_key.clone()),
        problems: signature_breaks(records, &sigs),
        ..Signatures::default()
    };
    let Some(case_key) = out.key.clone() else {
        return Ok(out);
    };
    out.checked_with = Some(
        match check {
            SignatureCheck::Kms => "kms",
            SignatureCheck::PublicKey(_) => "public key",
        }
        .to_string(),
    );
    for (position, r) in records.iter().enumerate() {
        let Some(sig) = sigs.get(&r.sequence) else {
            continue;
        };
        let ok = match check {
            SignatureCheck::PublicKey(k) => chain::verify_signature(k, &r.hash, sig).is_ok(),
            SignatureCheck::Kms => match kms_verify(ctx, log, &case_key, r, sig).await {
                Ok(ok) => ok,
                // A key disabled, deleted or out of reach: say so once and
                // stop asking KMS; the public key checks offline.
                Err(e) => {
                    out.problems.push(Break {
                        position,
                        sequence: r.sequence,
                        problem: format!(
                            "KMS could not check the signature ({}): check offline with `--public-key` and the key's public key",
                            e.message
                        ),
                    });
                    break;
                }
            },
        };
        if ok {
            out.valid += 1;
        } else {
            out.problems.push(Break {
                position,
                sequence: r.sequence,
                problem: format!(
                    "its signature does not verify with the case's key {case_key}: the record or its signature was replaced"
                ),
            });
        }
    }
    Ok(out)
}

async fn kms_verify(
    ctx: &StepContext,
    log: &StepLog<'_>,
    key_id: &str,
    r: &CustodyRecord,
    sig: &RecordSignature,
) -> Result<bool, StepError> {
    let (Ok(digest), Ok(der)) = (hex::decode(&r.hash), sig.der()) else {
        return Ok(false);
    };
    log.read(
        "kms:Verify",
        format!("KeyId={key_id} (custody record {})", r.sequence),
    );
    match ctx
        .aws
        .kms
        .verify()
        .key_id(key_id)
        .message(Blob::new(digest))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .signature(Blob::new(der))
        .send()
        .await
    {
        Ok(out) => Ok(out.signature_valid()),
        Err(e) if error_code(&e).as_deref() == Some("KMSInvalidSignatureException") => Ok(false),
        Err(e) => Err(aws_error(&format!("kms:Verify with {key_id}"), e)),
    }
}

async fn get_version(
    ctx: &StepContext,
    log: &StepLog<'_>,
    uri: &S3Uri,
) -> Result<Vec<u8>, StepError> {
    log.read("s3:GetObject", uri.to_string());
    let mut req = ctx.aws.s3.get_object().bucket(&uri.bucket).key(&uri.key);
    if let Some(v) = &uri.version_id {
        req = req.version_id(v);
    }
    let out = req
        .send()
        .await
        .map_err(|e| aws_error(&format!("s3:GetObject {uri}"), e))?;
    let bytes = out.body.collect().await.map_err(|e| {
        StepError::with_source(ErrorName::AwsUnavailable, "reading a custody object", e)
    })?;
    Ok(bytes.into_bytes().to_vec())
}

/// Hashes the version the record names (the one under custody) and looks
/// for versions written over it; an object recorded without a version id
/// (an unversioned bucket) is hashed as it is now.
async fn check_object(
    ctx: &StepContext,
    log: &StepLog<'_>,
    r: &CustodyRecord,
    bucket: &str,
    key: &str,
    recorded_version: Option<&str>,
) -> Result<ArtifactCheck, StepError> {
    let location = r.location.uri();
    let versions: Vec<Version> = evidence::list_versions(ctx, log, bucket, key)
        .await?
        .into_iter()
        .filter(|v| v.key == key)
        .collect();
    let base = |state, current: Option<String>, detail: String| ArtifactCheck {
        evidence_id: r.evidence_id.clone(),
        kind: r.kind.clone(),
        location: location.clone(),
        recorded_sha256: r.sha256.clone(),
        current_sha256: current,
        state,
        detail,
    };
    let latest = versions.iter().find(|v| v.is_latest);
    let hidden = latest.is_some_and(|v| v.delete_marker);
    let target = match recorded_version {
        Some(v) => versions
            .iter()
            .find(|x| x.version_id == v && !x.delete_marker),
        None => latest.filter(|v| !v.delete_marker),
    };
    let Some(target) = target else {
        return Ok(base(
            ArtifactState::Missing,
            None,
            match (recorded_version, hidden) {
                (Some(v), _) => format!("the recorded version {v} is gone"),
                (None, true) => "deleted: a delete marker hides it".into(),
                (None, false) => "no such object".into(),
            },
        ));
    };
    let uri = pinned(bucket, key, target);
    log.progress(&format!("hashing {uri}"));
    let (digest, _) = evidence::hash_object(ctx, log, &uri, &[]).await?;
    let over: Vec<&Version> = versions
        .iter()
        .filter(|v| v.version_id != target.version_id && v.last_modified >= target.last_modified)
        .collect();
    let matches = |d: &firebreak_forensics::hash::Digest| {
        r.sha256.as_deref() == Some(d.sha256.as_str()) && r.size.is_none_or(|s| s == d.size)
    };
    let Some(want) = &r.sha256 else {
        return Ok(base(
            ArtifactState::Present,
            Some(digest.sha256.clone()),
            format!("no recorded hash; {} bytes now", digest.size),
        ));
    };
    if !matches(&digest) {
        return Ok(base(
            ArtifactState::Modified,
            Some(digest.sha256.clone()),
            format!(
                "SHA-256 is now {} ({} bytes), recorded {want} ({} bytes)",
                digest.sha256,
                digest.size,
                r.size.map_or("?".into(), |s| s.to_string())
            ),
        ));
    }
    if recorded_version.is_some() && (hidden || !over.is_empty()) {
        let what = match latest {
            Some(l) if l.delete_marker => "a delete marker now hides it".to_string(),
            Some(l) => {
                let now = evidence::hash_object(ctx, log, &pinned(bucket, key, l), &[])
                    .await?
                    .0;
                format!(
                    "version {} written over it, whose SHA-256 is now {} ({} bytes)",
                    l.version_id, now.sha256, now.size
                )
            }
            None => "later versions exist".into(),
        };
        return Ok(base(
            ArtifactState::Replaced,
            Some(digest.sha256.clone()),
            format!(
                "the recorded version is intact ({} bytes, SHA-256 matches), but {what}: whoever reads the object without its version id gets something else",
                digest.size
            ),
        ));
    }
    Ok(base(
        ArtifactState::Intact,
        Some(digest.sha256.clone()),
        format!("{} bytes, SHA-256 matches", digest.size),
    ))
}

async fn check_snapshot(
    ctx: &StepContext,
    log: &StepLog<'_>,
    r: &CustodyRecord,
    snapshot_id: &str,
) -> Result<ArtifactCheck, StepError> {
    log.read(
        "ec2:DescribeSnapshots",
        format!("SnapshotIds=[{snapshot_id}]"),
    );
    let found = ctx
        .aws
        .ec2
        .describe_snapshots()
        .snapshot_ids(snapshot_id)
        .send()
        .await;
    let (state, detail) = match found {
        Ok(out) => match out.snapshots().first() {
            Some(s) => (
                ArtifactState::Present,
                format!(
                    "exists ({}){}",
                    s.state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    if r.sha256.is_some() {
                        "; its blocks are not re-read here: `firebreak evidence hash-snapshot` does"
                    } else {
                        ""
                    }
                ),
            ),
            None => (ArtifactState::Missing, "no such snapshot".into()),
        },
        Err(e) => match error_code(&e).as_deref() {
            Some("InvalidSnapshot.NotFound") => (ArtifactState::Missing, "no such snapshot".into()),
            _ => {
                return Err(aws_error(
                    &format!("ec2:DescribeSnapshots {snapshot_id}"),
                    e,
                ))
            }
        },
    };
    Ok(ArtifactCheck {
        evidence_id: r.evidence_id.clone(),
        kind: r.kind.clone(),
        location: r.location.uri(),
        recorded_sha256: r.sha256.clone(),
        current_sha256: None,
        state,
        detail,
    })
}

/// What `evidence export` wrote.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Export {
    /// The case exported.
    pub case_id: String,
    /// The evidence bucket read.
    pub bucket: String,
    /// The directory written to, as given.
    pub dir: String,
    /// Records and signatures written (their first versions).
    pub files: usize,
    /// Objects with later versions or a delete marker over the first.
    pub changed_after: Vec<String>,
}

/// Writes a case's ledger as its first versions (the ones Object Lock
/// keeps) into a directory, with `versions.json` listing every object's
/// versions and delete markers, for `scripts/verify-custody.py` or anyone
/// else to check without trusting firebreak.
pub async fn export_ledger(
    ctx: &StepContext,
    bucket: &str,
    case: &str,
    dir: &std::path::Path,
) -> Result<Export, StepError> {
    let log = ctx.log("evidence_export");
    let prefix = keys::custody_prefix(case);
    let versions = evidence::list_versions(ctx, &log, bucket, &prefix).await?;
    let io = |e: std::io::Error| {
        StepError::with_source(ErrorName::InvalidInput, "writing the export", e)
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut out = Export {
        case_id: case.to_string(),
        bucket: bucket.to_string(),
        dir: dir.display().to_string(),
        ..Export::default()
    };
    let mut listing = serde_json::Map::new();
    for (key, kv) in by_key(&versions) {
        let Some(name) = key.strip_prefix(&prefix).filter(|n| !n.contains('/')) else {
            continue;
        };
        let all: Vec<serde_json::Value> = versions
            .iter()
            .filter(|v| v.key == key)
            .map(|v| {
                serde_json::json!({
                    "version_id": v.version_id,
                    "delete_marker": v.delete_marker,
                    "last_modified": v.last_modified,
                })
            })
            .collect();
        listing.insert(
            name.to_string(),
            serde_json::json!({
                "first_version": kv.first.as_ref().map(|f| f.version_id.clone()),
                "versions": kv.count,
                "delete_marker": kv.hidden,
                "all": all,
            }),
        );
        if kv.count > 1 || kv.hidden {
            out.changed_after.push(name.to_string());
        }
        let Some(first) = kv.first else { continue };
        let bytes = get_version(ctx, &log, &pinned(bucket, &key, &first)).await?;
        std::fs::write(dir.join(name), bytes).map_err(io)?;
        out.files += 1;
    }
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "bucket": bucket,
        "case_id": case,
        "prefix": prefix,
        "objects": listing,
    }))
    .map_err(|e| StepError::with_source(ErrorName::Internal, "versions.json", e))?;
    std::fs::write(dir.join("versions.json"), body).map_err(io)?;
    Ok(out)
}

/// Whether a verification record's note says the image failed (hashes
/// that disagree, or checks it did not pass). Records since format 2 say
/// so with `Event::Rejected`; earlier ones were `verified` with the note.
pub fn failed_note(note: Option<&str>) -> bool {
    note.is_some_and(|n| n.starts_with("MISMATCH") || n.starts_with("FAILED"))
}
