//! The chain of custody: one record per event in the life of a piece of
//! evidence, each carrying the hash of the record before it.
//!
//! Records follow RFC 3227 (§4.1: who collected or handled the evidence,
//! when, where it is stored, every change of custody; §2.1: say whether
//! times are UTC: they all are) and NIST SP 800-86 (examine copies, verify
//! the integrity of the original and the copy); the incident-response
//! process around them is NIST SP 800-61r3 (2025).
//!
//! A record is stored as the RFC 8785 (JSON Canonicalization Scheme) form
//! of its fields, and its hash is the SHA-256 of exactly those stored
//! bytes: anyone can check a chain with a JSON parser and SHA-256
//! (`scripts/verify-custody.py` does, with the standard library alone).
//! `previous_hash` is the hash of the record before (64 zeros for the
//! first), so deleting, editing or reordering a record breaks the chain at
//! a place [`verify_chain`] names. A case may be signed: each record then
//! names the KMS key (`signing_key`) whose ECDSA P-256 signature of the
//! record's SHA-256 sits beside it ([`RecordSignature`]).
//!
//! Records written before this format (no `format` field, pretty JSON
//! carrying their own `hash`) are still read and checked as they were
//! made; a chain may continue after them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::Signature;
/// A P-256 public key that checks custody signatures offline.
pub use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hash::sha256_bytes;

/// `previous_hash` of the first record of a case.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `format` of records written now.
pub const FORMAT: &str = "firebreak-custody/2";

/// The `format` of a record's detached signature.
pub const SIGNATURE_FORMAT: &str = "firebreak-custody-signature/1";

/// The only signing algorithm firebreak uses (KMS `ECC_NIST_P256` keys).
pub const SIGNING_ALGORITHM: &str = "ECDSA_SHA_256";

/// What happened to the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Taken from its source (a memory capture, a snapshot, a record).
    Acquired,
    /// Moved or copied to a new place (a forensic account, a region).
    Transferred,
    /// Its hash was checked against the recorded one.
    Verified,
    /// Examined; the record names the tool.
    Analysed,
    /// Checked and found wanting (hashes that disagree, memory missing, a
    /// structure that does not hold): kept, never used as evidence.
    Rejected,
}

/// Where the evidence came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The AWS account (12 digits) the evidence was taken in.
    pub account_id: String,
    /// The AWS region it was taken in, e.g. `eu-west-1`.
    pub region: String,
    /// The EC2 instance (`i-...`) it came from; `None` if not from one.
    pub instance_id: Option<String>,
    /// The EBS volume (`vol-...`) it came from; `None` if not from one.
    pub volume_id: Option<String>,
}

/// Where the evidence is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Location {
    /// An S3 object.
    S3 {
        /// The bucket's name.
        bucket: String,
        /// The object key within the bucket.
        key: String,
        /// The S3 object version; `None` when no version was recorded.
        version_id: Option<String>,
    },
    /// An EBS snapshot.
    Snapshot {
        /// The snapshot id (`snap-...`).
        snapshot_id: String,
        /// The AWS account that owns the snapshot.
        account_id: String,
        /// The region the snapshot is in.
        region: String,
    },
}

impl Location {
    /// `s3://bucket/key?versionId=..` or `snapshot:account/region/snap-..`.
    pub fn uri(&self) -> String {
        match self {
            Location::S3 {
                bucket,
                key,
                version_id: Some(v),
            } => format!("s3://{bucket}/{key}?versionId={v}"),
            Location::S3 { bucket, key, .. } => format!("s3://{bucket}/{key}"),
            Location::Snapshot {
                snapshot_id,
                account_id,
                region,
            } => format!("snapshot:{account_id}/{region}/{snapshot_id}"),
        }
    }
}

/// How a record was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// Pretty JSON with its own `hash` field (firebreak before format 2).
    Legacy,
    /// [`FORMAT`]: canonical JSON, hashed as stored.
    Canonical,
}

/// One custody record, as read or as made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CustodyRecord {
    /// Whether the record was stored in the legacy or the canonical format.
    pub format: RecordFormat,
    /// Position in the case's chain, from 0.
    pub sequence: u64,
    /// The case the record belongs to; every record of a chain has the same.
    pub case_id: String,
    /// The same id in every record about one piece of evidence.
    pub evidence_id: String,
    /// What happened to the evidence.
    pub event: Event,
    /// `memory-image`, `instance-state`, `console-output`, `ebs-snapshot`,
    /// `volatility-output`, ...
    pub kind: String,
    /// Where the evidence came from.
    pub source: Source,
    /// Where the evidence is kept.
    pub location: Location,
    /// The evidence's size in bytes, when known.
    pub size: Option<u64>,
    /// Computed off the suspect host, by firebreak.
    pub sha256: Option<String>,
    /// What the suspect host reported, when it reported a hash.
    pub host_sha256: Option<String>,
    /// UTC.
    pub at: DateTime<Utc>,
    /// The principal or execution ARN that acted.
    pub actor: String,
    /// The program that handled the evidence (`lime`, a firebreak step, ...).
    pub tool: String,
    /// That program's version.
    pub tool_version: String,
    /// Free text for the reader, if any.
    pub note: Option<String>,
    /// Structured facts about the evidence (the coverage of a memory
    /// image, the block manifest of a disk image). Integers only: no
    /// floating-point number is ever written, so that any JSON library
    /// reproduces the canonical bytes.
    pub details: Option<Value>,
    /// The KMS key whose signature must accompany this record.
    pub signing_key: Option<String>,
    /// Hex SHA-256 of the record before it in the chain ([`GENESIS`] for
    /// the first).
    pub previous_hash: String,
    /// The record's hash: the SHA-256 of its stored bytes (a legacy
    /// record: its `hash` field).
    pub hash: String,
    /// What reading the stored bytes found wrong (not canonical, a legacy
    /// hash that does not match): the chain check reports each.
    #[serde(skip)]
    pub defects: Vec<String>,
}

/// A record as stored in format 2. Unknown fields are refused: a
/// verifier must see every byte it vouches for.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format: String,
    sequence: u64,
    case_id: String,
    evidence_id: String,
    event: Event,
    kind: String,
    source: Source,
    location: Location,
    size: Option<u64>,
    sha256: Option<String>,
    host_sha256: Option<String>,
    at: DateTime<Utc>,
    actor: String,
    tool: String,
    tool_version: String,
    note: Option<String>,
    details: Option<Value>,
    signing_key: Option<String>,
    previous_hash: String,
}

/// A record as firebreak stored it before format 2, field for field in
/// the order its hash was computed over.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Legacy {
    sequence: u64,
    case_id: String,
    evidence_id: String,
    event: Event,
    kind: String,
    source: Source,
    location: Location,
    size: Option<u64>,
    sha256: Option<String>,
    host_sha256: Option<String>,
    at: DateTime<Utc>,
    actor: String,
    tool: String,
    tool_version: String,
    note: Option<String>,
    previous_hash: String,
    hash: String,
}

/// The fields of a new record; `sequence` and `previous_hash` are set
/// when it is appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    /// The case the record belongs to.
    pub case_id: String,
    /// The same id in every record about one piece of evidence.
    pub evidence_id: String,
    /// What happened to the evidence.
    pub event: Event,
    /// `memory-image`, `instance-state`, `console-output`, ... (see
    /// [`CustodyRecord::kind`]).
    pub kind: String,
    /// Where the evidence came from.
    pub source: Source,
    /// Where the evidence is kept.
    pub location: Location,
    /// The evidence's size in bytes, when known.
    pub size: Option<u64>,
    /// Hex SHA-256 computed off the suspect host, by firebreak.
    pub sha256: Option<String>,
    /// Hex SHA-256 the suspect host reported, when it reported one.
    pub host_sha256: Option<String>,
    /// When it happened (UTC).
    pub at: DateTime<Utc>,
    /// The principal or execution ARN that acted.
    pub actor: String,
    /// The program that handled the evidence.
    pub tool: String,
    /// That program's version.
    pub tool_version: String,
    /// Free text for the reader, if any.
    pub note: Option<String>,
    /// Structured facts about the evidence: integers only, none above
    /// [`MAX_SAFE_INTEGER`] ([`NewRecord::chain_after`] refuses others).
    pub details: Option<Value>,
    /// The KMS key that will sign the record; `None` for an unsigned case.
    pub signing_key: Option<String>,
}

/// Why a record cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record could not be turned into JSON or its canonical form.
    #[error("cannot serialise a custody record")]
    Serialise(#[source] serde_json::Error),
    /// The bytes are not JSON, or not the fields of a record.
    #[error("not a custody record: {0}")]
    Parse(#[source] serde_json::Error),
    /// A floating-point number in the record; the JSON path of the first
    /// (`$.details...` when a record is made).
    #[error("a custody record holds a floating-point number at {0}: records hold integers only")]
    Float(String),
    /// An integer above [`MAX_SAFE_INTEGER`]; the JSON path of the first.
    #[error("a custody record holds an integer above 2^53-1 at {0}: JSON readers that use doubles (and RFC 8785) would change it; write it as a string")]
    Unsafe(String),
    /// The new record, read back, has a defect (the first one given).
    #[error("the record would not verify: {0}")]
    Defective(String),
}

/// The largest integer a record holds: above it, readers that parse JSON
/// numbers as doubles (JavaScript, RFC 8785's own number form) change it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The path of the first floating-point number in a value, if any.
fn float_at(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Number(n) if !(n.is_u64() || n.is_i64()) => Some(path.to_string()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| float_at(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .find_map(|(k, x)| float_at(x, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// The path of the first integer beyond [`MAX_SAFE_INTEGER`], if any.
fn unsafe_at(v: &Value, path: &str) -> Option<String> {
    let beyond = |n: &serde_json::Number| {
        n.as_u64().is_some_and(|u| u > MAX_SAFE_INTEGER)
            || n.as_i64()
                .is_some_and(|i| i.unsigned_abs() > MAX_SAFE_INTEGER)
    };
    match v {
        Value::Number(n) if beyond(n) => Some(path.to_string()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| unsafe_at(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .find_map(|(k, x)| unsafe_at(x, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// A legacy record's hash: SHA-256 of its compact JSON with `hash` empty.
fn legacy_hash(r: &Legacy) -> Result<String, RecordError> {
    let mut copy = r.clone();
    copy.hash = String::new();
    Ok(sha256_bytes(&serde_json::to_vec(&copy).map_err(RecordError::Serialise)?).sha256)
}

impl CustodyRecord {
    /// Reads a stored record. Defects that leave it readable (bytes not
    /// in canonical form, a legacy hash that does not match) are kept in
    /// `defects` for the chain check; bytes that are not a record at all
    /// are an error.
    pub fn parse(bytes: &[u8]) -> Result<CustodyRecord, RecordError> {
        let value: Value = serde_json::from_slice(bytes).map_err(RecordError::Parse)?;
        if value.get("format").is_none() {
            let l: Legacy = serde_json::from_value(value).map_err(RecordError::Parse)?;
            let mut defects = Vec::new();
            let computed = legacy_hash(&l)?;
            if computed != l.hash {
                defects.push(format!(
                    "its content does not match its hash (recorded {}, computed {computed}): the record was edited",
                    l.hash
                ));
            }
            return Ok(CustodyRecord {
                format: RecordFormat::Legacy,
                sequence: l.sequence,
                case_id: l.case_id,
                evidence_id: l.evidence_id,
                event: l.event,
                kind: l.kind,
                source: l.source,
                location: l.location,
                size: l.size,
                sha256: l.sha256,
                host_sha256: l.host_sha256,
                at: l.at,
                actor: l.actor,
                tool: l.tool,
                tool_version: l.tool_version,
                note: l.note,
                details: None,
                signing_key: None,
                previous_hash: l.previous_hash,
                hash: l.hash,
                defects,
            });
        }
        let mut defects = Vec::new();
        if let Some(at) = float_at(&value, "$") {
            defects.push(RecordError::Float(at).to_string());
        }
        if let Some(at) = unsafe_at(&value, "$") {
            defects.push(RecordError::Unsafe(at).to_string());
        }
        match serde_json_canonicalizer::to_vec(&value) {
            Ok(canonical) if canonical == bytes => {}
            Ok(_) => defects.push(
                "its bytes are not in canonical form (RFC 8785): the record was edited or written by something else".into(),
            ),
            Err(e) => defects.push(format!("its canonical form cannot be computed: {e}")),
        }
        let st: Stored = serde_json::from_value(value).map_err(RecordError::Parse)?;
        if st.format != FORMAT {
            defects.push(format!("unknown record format {:?}", st.format));
        }
        Ok(CustodyRecord {
            format: RecordFormat::Canonical,
            sequence: st.sequence,
            case_id: st.case_id,
            evidence_id: st.evidence_id,
            event: st.event,
            kind: st.kind,
            source: st.source,
            location: st.location,
            size: st.size,
            sha256: st.sha256,
            host_sha256: st.host_sha256,
            at: st.at,
            actor: st.actor,
            tool: st.tool,
            tool_version: st.tool_version,
            note: st.note,
            details: st.details,
            signing_key: st.signing_key,
            previous_hash: st.previous_hash,
            hash: sha256_bytes(bytes).sha256,
            defects,
        })
    }
}

impl NewRecord {
    /// The record that follows `previous` (None for the first of a case),
    /// with the bytes to store: its canonical JSON, whose SHA-256 is its
    /// hash.
    pub fn chain_after(
        self,
        previous: Option<&CustodyRecord>,
    ) -> Result<(CustodyRecord, Vec<u8>), RecordError> {
        if let Some(at) = self.details.as_ref().and_then(|d| float_at(d, "$.details")) {
            return Err(RecordError::Float(at));
        }
        let stored = Stored {
            format: FORMAT.to_string(),
            sequence: previous.map_or(0, |p| p.sequence + 1),
            case_id: self.case_id,
            evidence_id: self.evidence_id,
            event: self.event,
            kind: self.kind,
            source: self.source,
            location: self.location,
            size: self.size,
            sha256: self.sha256,
            host_sha256: self.host_sha256,
            at: self.at,
            actor: self.actor,
            tool: self.tool,
            tool_version: self.tool_version,
            note: self.note,
            details: self.details,
            signing_key: self.signing_key,
            previous_hash: previous.map_or_else(|| GENESIS.to_string(), |p| p.hash.clone()),
        };
        let value = serde_json::to_value(&stored).map_err(RecordError::Serialise)?;
        if let Some(at) = unsafe_at(&value, "$") {
            return Err(RecordError::Unsafe(at));
        }
        let bytes = serde_json_canonicalizer::to_vec(&value).map_err(RecordError::Serialise)?;
        let record = CustodyRecord::parse(&bytes)?;
        // What would not verify is never written: a defect stored once
        // breaks the chain for every later record.
        if let Some(d) = record.defects.first() {
            return Err(RecordError::Defective(d.clone()));
        }
        Ok((record, bytes))
    }
}

/// A problem found in a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Break {
    /// Where in the list as read (0-based).
    pub position: usize,
    /// The sequence number the record claims.
    pub sequence: u64,
    /// What is wrong, in words.
    pub problem: String,
}

/// Walks a case's records in storage order and reports every break: a
/// record whose bytes were edited (not canonical; a legacy record whose
/// hash does not match), a sequence number out of place (deleted or
/// reordered), a `previous_hash` that is not the hash of the record
/// before it, a record of another case. The first element, if any, is the
/// first broken link.
pub fn verify_chain(case_id: &str, records: &[CustodyRecord]) -> Vec<Break> {
    let mut out = Vec::new();
    let mut previous: Option<&CustodyRecord> = None;
    for (position, r) in records.iter().enumerate() {
        let mut problem = |p: String| {
            out.push(Break {
                position,
                sequence: r.sequence,
                problem: p,
            })
        };
        if r.case_id != case_id {
            problem(format!("belongs to case {:?}, not {case_id:?}", r.case_id));
        }
        for d in &r.defects {
            problem(d.clone());
        }
        let expected_seq = previous.map_or(0, |p| p.sequence + 1);
        if r.sequence != expected_seq {
            problem(format!(
                "sequence {} where {expected_seq} was expected: a record was deleted or the records were reordered",
                r.sequence
            ));
        }
        let expected_prev = previous.map_or(GENESIS, |p| p.hash.as_str());
        if r.previous_hash != expected_prev {
            problem(format!(
                "previous_hash {} is not the hash of the record before it ({expected_prev}): a record was inserted, replaced or removed",
                r.previous_hash
            ));
        }
        previous = Some(r);
    }
    out
}

/// A record's detached signature, stored beside it
/// (`NNNNNNNN.sig`): an ECDSA P-256 / SHA-256 signature, DER-encoded (as
/// KMS returns it), whose message is the 32-byte SHA-256 of the record's
/// stored bytes (KMS `Sign`, `MessageType=RAW`, `ECDSA_SHA_256`). The
/// message is the record's hash rather than the record so that it has one
/// small size (KMS signs raw messages of at most 4 KiB); `openssl dgst
/// -sha256 -verify KEY.pem -signature SIG.der DIGEST.bin` checks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSignature {
    /// [`SIGNATURE_FORMAT`].
    pub format: String,
    /// The `sequence` of the signed record.
    pub sequence: u64,
    /// The signed record's hash (hex SHA-256 of its stored bytes): the
    /// message signed.
    pub record_sha256: String,
    /// The KMS key that signed, as the record's `signing_key` names it.
    pub key_id: String,
    /// [`SIGNING_ALGORITHM`].
    pub algorithm: String,
    /// Base64 of the DER signature.
    pub signature: String,
}

impl RecordSignature {
    /// The signature of `record` by `key_id`.
    pub fn new(record: &CustodyRecord, key_id: &str, der: &[u8]) -> RecordSignature {
        use base64::Engine as _;
        RecordSignature {
            format: SIGNATURE_FORMAT.to_string(),
            sequence: record.sequence,
            record_sha256: record.hash.clone(),
            key_id: key_id.to_string(),
            algorithm: SIGNING_ALGORITHM.to_string(),
            signature: base64::engine::general_purpose::STANDARD.encode(der),
        }
    }

    /// The DER signature bytes.
    pub fn der(&self) -> Result<Vec<u8>, SignatureError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| SignatureError::Encoding("the signature is not base64".into()))
    }
}

/// Why a signature could not be checked or does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key could not be read; the parser's message.
    #[error("the public key is neither a PEM nor a DER SubjectPublicKeyInfo of a P-256 key: {0}")]
    Key(String),
    /// The signature is not base64 or not DER, or the record hash is not
    /// hex; says which.
    #[error("{0}")]
    Encoding(String),
    /// Well-formed, but not a signature of the hash by this key.
    #[error("the signature does not verify with the public key")]
    Invalid,
}

/// A P-256 public key from PEM or DER SubjectPublicKeyInfo (what
/// `aws kms get-public-key` returns, in DER).
pub fn public_key(bytes: &[u8]) -> Result<VerifyingKey, SignatureError> {
    let der = VerifyingKey::from_public_key_der(bytes);
    match der {
        Ok(k) => Ok(k),
        Err(der_err) => match std::str::from_utf8(bytes) {
            Ok(pem) if pem.contains("-----BEGIN") => VerifyingKey::from_public_key_pem(pem)
                .map_err(|e| SignatureError::Key(e.to_string())),
            _ => Err(SignatureError::Key(der_err.to_string())),
        },
    }
}

/// Checks a record's signature offline with its public key.
pub fn verify_signature(
    key: &VerifyingKey,
    record_sha256: &str,
    sig: &RecordSignature,
) -> Result<(), SignatureError> {
    let digest = hex::decode(record_sha256)
        .map_err(|_| SignatureError::Encoding("the record hash is not hex".into()))?;
    let der = sig.der()?;
    let signature = Signature::from_der(&der).map_err(|_| {
        SignatureError::Encoding("the signature is not a DER ECDSA signature".into())
    })?;
    key.verify(&digest, &signature)
        .map_err(|_| SignatureError::Invalid)
}

/// The rules of a signed case, on what is stored (the cryptographic check
/// of each signature is the caller's: with KMS or a public key): once a
/// record names a signing key every later record names the same one; a
/// record that names one has its signature beside it, for its sequence,
/// its hash and that key; a signature belongs to a signed record.
pub fn signature_breaks(
    records: &[CustodyRecord],
    signatures: &BTreeMap<u64, RecordSignature>,
) -> Vec<Break> {
    let mut out = Vec::new();
    let mut case_key: Option<&str> = None;
    for (position, r) in records.iter().enumerate() {
        let mut problem = |p: String| {
            out.push(Break {
                position,
                sequence: r.sequence,
                problem: p,
            })
        };
        match (case_key, r.signing_key.as_deref()) {
            (Some(k), None) => problem(format!(
                "unsigned in a case signed by {k}: appended without the case's key"
            )),
            (Some(k), Some(own)) if own != k => problem(format!(
                "names signing key {own}, but the case is signed by {k}"
            )),
            (None, Some(own)) => case_key = Some(own),
            _ => {}
        }
        let sig = signatures.get(&r.sequence);
        match (r.signing_key.as_deref(), sig) {
            (Some(_), None) => problem("its signature is missing".into()),
            (None, Some(_)) => {
                problem("has a signature although the record names no signing key".into())
            }
            (Some(key), Some(s)) => {
                if s.format != SIGNATURE_FORMAT || s.algorithm != SIGNING_ALGORITHM {
                    problem(format!(
                        "its signature has format {:?} and algorithm {:?}, not {SIGNATURE_FORMAT} / {SIGNING_ALGORITHM}",
                        s.format, s.algorithm
                    ));
                }
                if s.record_sha256 != r.hash {
                    problem(format!(
                        "its signature is over {}, not over the record ({})",
                        s.record_sha256, r.hash
                    ));
                }
                if s.key_id != key {
                    problem(format!(
                        "signed with key {}, but the record names key {key}: re-signed",
                        s.key_id
                    ));
                }
            }
            (None, None) => {}
        }
    }
    let known: std::collections::BTreeSet<u64> = records.iter().map(|r| r.sequence).collect();
    for (seq, _) in signatures.iter().filter(|(s, _)| !known.contains(s)) {
        out.push(Break {
            position: records.len(),
            sequence: *seq,
            problem: "a signature for a record that is not there".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::EncodePublicKey;

    fn new(n: u64) -> NewRecord {
        NewRecord {
            case_id: "c1".into(),
            evidence_id: format!("e{n}"),
            event: Event::Acquired,
            kind: "memory-image".into(),
            source: Source {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                instance_id: Some("i-0abc1234".into()),
                volume_id: None,
            },
            location: Location::S3 {
                bucket: "b".into(),
                key: format!("k{n}"),
                version_id: Some("v".into()),
            },
            size: Some(n),
            sha256: Some("aa".into()),
            host_sha256: None,
            at: DateTime::from_timestamp(1_700_000_000 + n as i64, 5).unwrap(),
            actor: "arn:aws:iam::123456789012:user/x".into(),
            tool: "firebreak".into(),
            tool_version: "0.1.0".into(),
            note: Some("caf\u{e9} \"quoted\" \u{1}".into()),
            details: None,
            signing_key: None,
        }
    }

    /// A chain of n records as stored (bytes), read back.
    fn stored(n: u64) -> Vec<Vec<u8>> {
        let mut v: Vec<(CustodyRecord, Vec<u8>)> = Vec::new();
        for i in 0..n {
            let r = new(i).chain_after(v.last().map(|(r, _)| r)).unwrap();
            v.push(r);
        }
        v.into_iter().map(|(_, b)| b).collect()
    }

    fn read(bytes: &[Vec<u8>]) -> Vec<CustodyRecord> {
        bytes
            .iter()
            .map(|b| CustodyRecord::parse(b).unwrap())
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_its_hashes_are_of_the_stored_bytes() {
        let b = stored(5);
        let c = read(&b);
        assert!(verify_chain("c1", &c).is_empty());
        assert_eq!(c[0].previous_hash, GENESIS);
        assert_eq!(c[1].previous_hash, sha256_bytes(&b[0]).sha256);
        assert_eq!(c[4].hash, sha256_bytes(&b[4]).sha256);
        // Canonical: sorted keys, no whitespace, RFC 8785 escapes.
        let text = String::from_utf8(b[0].clone()).unwrap();
        assert!(
            text.starts_with(r#"{"actor":"arn:aws:iam::123456789012:user/x","at":"#),
            "{text}"
        );
        assert!(
            text.contains(r#""note":"café \"quoted\" \u0001""#),
            "{text}"
        );
        assert!(!text.contains(": ") && !text.contains('\n'));
    }

    #[test]
    fn an_edited_byte_breaks_the_next_link_or_the_canonical_form() {
        let mut b = stored(5);
        // Still canonical JSON: the hash changes, so record 3's link breaks.
        let t = String::from_utf8(b[2].clone())
            .unwrap()
            .replace(r#""size":2"#, r#""size":9"#);
        b[2] = t.into_bytes();
        let breaks = verify_chain("c1", &read(&b));
        assert_eq!(breaks.len(), 1, "{breaks:?}");
        assert_eq!(breaks[0].sequence, 3);
        assert!(breaks[0].problem.contains("previous_hash"), "{breaks:?}");
        // Not canonical any more: named at the record itself.
        let mut b = stored(3);
        let t = String::from_utf8(b[1].clone())
            .unwrap()
            .replacen(',', ", ", 1);
        b[1] = t.into_bytes();
        let breaks = verify_chain("c1", &read(&b));
        assert_eq!(breaks[0].sequence, 1);
        assert!(breaks[0].problem.contains("canonical"), "{breaks:?}");
    }

    #[test]
    fn deleted_and_reordered_records_are_named() {
        let mut c = read(&stored(5));
        c.remove(1);
        let b = verify_chain("c1", &c);
        assert_eq!((b[0].position, b[0].sequence), (1, 2));
        assert!(b[0]
            .problem
            .contains("deleted or the records were reordered"));
        let mut c = read(&stored(5));
        c.swap(1, 3);
        let b = verify_chain("c1", &c);
        assert_eq!((b[0].position, b[0].sequence), (1, 3));
    }

    /// A record as firebreak wrote it before format 2.
    fn legacy(n: u64, previous: &str) -> Vec<u8> {
        let r = new(n);
        let mut l = Legacy {
            sequence: n,
            case_id: r.case_id,
            evidence_id: r.evidence_id,
            event: r.event,
            kind: r.kind,
            source: r.source,
            location: r.location,
            size: r.size,
            sha256: r.sha256,
            host_sha256: r.host_sha256,
            at: r.at,
            actor: r.actor,
            tool: r.tool,
            tool_version: r.tool_version,
            note: r.note,
            previous_hash: previous.into(),
            hash: String::new(),
        };
        l.hash = legacy_hash(&l).unwrap();
        serde_json::to_vec_pretty(&l).unwrap()
    }

    #[test]
    fn legacy_records_are_read_checked_and_continued() {
        let first = legacy(0, GENESIS);
        let r0 = CustodyRecord::parse(&first).unwrap();
        assert_eq!(r0.format, RecordFormat::Legacy);
        assert!(r0.defects.is_empty(), "{:?}", r0.defects);
        let (r1, b1) = new(1).chain_after(Some(&r0)).unwrap();
        assert_eq!(r1.previous_hash, r0.hash);
        assert!(verify_chain("c1", &read(&[first.clone(), b1])).is_empty());
        // An edited legacy record is named as before.
        let edited = String::from_utf8(first)
            .unwrap()
            .replace("\"size\": 0", "\"size\": 7");
        let r = CustodyRecord::parse(edited.as_bytes()).unwrap();
        assert!(r.defects[0].contains("was edited"), "{:?}", r.defects);
    }

    #[test]
    fn floats_are_refused_in_new_records_and_named_in_stored_ones() {
        let mut r = new(0);
        r.details = Some(serde_json::json!({"share": 0.5}));
        assert!(
            matches!(r.chain_after(None), Err(RecordError::Float(p)) if p == "$.details.share")
        );
        let b = String::from_utf8(stored(1).remove(0))
            .unwrap()
            .replace(r#""details":null"#, r#""details":{"x":1.5}"#);
        let r = CustodyRecord::parse(b.as_bytes()).unwrap();
        assert!(
            r.defects.iter().any(|d| d.contains("floating-point")),
            "{:?}",
            r.defects
        );
    }

    #[test]
    fn integers_beyond_doubles_are_refused_in_new_records_and_named_in_stored_ones() {
        let mut r = new(0);
        r.details = Some(serde_json::json!({"end": u64::MAX}));
        assert!(matches!(r.chain_after(None), Err(RecordError::Unsafe(p)) if p == "$.details.end"));
        let mut r = new(0);
        r.size = Some(1 << 60);
        assert!(matches!(r.chain_after(None), Err(RecordError::Unsafe(p)) if p == "$.size"));
        let b = String::from_utf8(stored(1).remove(0))
            .unwrap()
            .replace(r#""size":0"#, r#""size":18446744073709551615"#);
        let r = CustodyRecord::parse(b.as_bytes()).unwrap();
        assert!(
            r.defects.iter().any(|d| d.contains("2^53")),
            "{:?}",
            r.defects
        );
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32].into()).unwrap()
    }

    fn sign(k: &SigningKey, r: &CustodyRecord, key_id: &str) -> RecordSignature {
        let digest = hex::decode(&r.hash).unwrap();
        let sig: Signature = k.sign(&digest);
        RecordSignature::new(r, key_id, sig.to_der().as_bytes())
    }

    /// Three records, the last two signed by key "K".
    fn signed() -> (Vec<CustodyRecord>, BTreeMap<u64, RecordSignature>) {
        let k = key(7);
        let mut recs: Vec<CustodyRecord> = Vec::new();
        let mut sigs = BTreeMap::new();
        for i in 0..3 {
            let mut n = new(i);
            if i > 0 {
                n.signing_key = Some("K".into());
            }
            let (r, _) = n.chain_after(recs.last()).unwrap();
            if i > 0 {
                sigs.insert(i, sign(&k, &r, "K"));
            }
            recs.push(r);
        }
        (recs, sigs)
    }

    #[test]
    fn signatures_verify_offline_and_every_tampering_is_named() {
        let (recs, sigs) = signed();
        assert!(signature_breaks(&recs, &sigs).is_empty());
        let pk = key(7).verifying_key().to_public_key_der().unwrap();
        let vk = public_key(pk.as_bytes()).unwrap();
        let pem = key(7)
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        assert_eq!(public_key(pem.as_bytes()).unwrap(), vk);
        for r in &recs[1..] {
            verify_signature(&vk, &r.hash, &sigs[&r.sequence]).unwrap();
        }
        // Re-signed with another key but the same key id: only the
        // cryptographic check sees it.
        let forged = sign(&key(9), &recs[2], "K");
        assert_eq!(
            verify_signature(&vk, &recs[2].hash, &forged),
            Err(SignatureError::Invalid)
        );
        // Re-signed naming another key.
        let mut s = sigs.clone();
        s.insert(2, sign(&key(9), &recs[2], "OTHER"));
        let b = signature_breaks(&recs, &s);
        assert!(b[0].problem.contains("re-signed"), "{b:?}");
        // An unsigned record appended to a signed case.
        let mut r = recs.clone();
        let (extra, _) = new(3).chain_after(r.last()).unwrap();
        r.push(extra);
        let b = signature_breaks(&r, &sigs);
        assert_eq!(b[0].sequence, 3);
        assert!(
            b[0].problem.contains("appended without the case's key"),
            "{b:?}"
        );
        // A signature removed.
        let mut s = sigs.clone();
        s.remove(&1);
        assert!(signature_breaks(&recs, &s)[0].problem.contains("missing"));
        // A record signed with a key it does not name.
        let mut r = recs.clone();
        let mut n = new(3);
        n.signing_key = Some("MINE".into());
        let (extra, _) = n.chain_after(r.last()).unwrap();
        let mut s = sigs.clone();
        s.insert(3, sign(&key(3), &extra, "MINE"));
        r.push(extra);
        assert!(signature_breaks(&r, &s)[0]
            .problem
            .contains("the case is signed by K"));
        // Garbage keys and signatures are errors, not panics.
        assert!(matches!(public_key(b"nope"), Err(SignatureError::Key(_))));
        let mut bad = sigs[&1].clone();
        bad.signature = "!!".into();
        assert!(verify_signature(&vk, &recs[1].hash, &bad).is_err());
    }
}
