//! The chain of custody: one record per event in the life of a piece of
//! evidence, each carrying the hash of the record before it.
//!
//! Records follow RFC 3227 §4.1 (who collected or handled the evidence,
//! when, where it is stored, every change of custody) and NIST SP 800-61r2
//! §3.2.2 (the time zone of every handling: all times are UTC). Each
//! record's `hash` is the SHA-256 of its canonical JSON without the `hash`
//! field; `previous_hash` is the hash of the record before (64 zeros for
//! the first), so deleting, editing or reordering a record breaks the
//! chain at a place [`verify_chain`] names.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::hash::sha256_bytes;

/// `previous_hash` of the first record of a case.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
}

/// Where the evidence came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Source {
    pub account_id: String,
    pub region: String,
    pub instance_id: Option<String>,
    pub volume_id: Option<String>,
}

/// Where the evidence is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Location {
    S3 {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    Snapshot {
        snapshot_id: String,
        account_id: String,
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

/// One custody record. Unknown fields are refused: a record's hash covers
/// exactly these fields, so anything added to a stored record would
/// otherwise pass unseen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustodyRecord {
    /// Position in the case's chain, from 0.
    pub sequence: u64,
    pub case_id: String,
    /// The same id in every record about one piece of evidence.
    pub evidence_id: String,
    pub event: Event,
    /// `memory-image`, `instance-state`, `console-output`, `ebs-snapshot`,
    /// `volatility-output`, ...
    pub kind: String,
    pub source: Source,
    pub location: Location,
    pub size: Option<u64>,
    /// Computed off the suspect host, by firebreak.
    pub sha256: Option<String>,
    /// What the suspect host reported, when it reported a hash.
    pub host_sha256: Option<String>,
    /// UTC.
    pub at: DateTime<Utc>,
    /// The principal or execution ARN that acted.
    pub actor: String,
    pub tool: String,
    pub tool_version: String,
    pub note: Option<String>,
    pub previous_hash: String,
    pub hash: String,
}

/// The fields of a new record; `sequence`, `previous_hash` and `hash` are
/// set when it is appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    pub case_id: String,
    pub evidence_id: String,
    pub event: Event,
    pub kind: String,
    pub source: Source,
    pub location: Location,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub host_sha256: Option<String>,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub tool: String,
    pub tool_version: String,
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serialise a custody record: {0}")]
pub struct RecordError(#[from] serde_json::Error);

/// The record's hash: SHA-256 of its JSON with `hash` empty. Field order
/// is the struct's, so the bytes are the same wherever they are computed.
pub fn record_hash(r: &CustodyRecord) -> Result<String, RecordError> {
    let mut copy = r.clone();
    copy.hash = String::new();
    Ok(sha256_bytes(&serde_json::to_vec(&copy)?).sha256)
}

impl NewRecord {
    /// The record that follows `previous` (None for the first of a case).
    pub fn chain_after(
        self,
        previous: Option<&CustodyRecord>,
    ) -> Result<CustodyRecord, RecordError> {
        let mut r = CustodyRecord {
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
            previous_hash: previous.map_or_else(|| GENESIS.to_string(), |p| p.hash.clone()),
            hash: String::new(),
        };
        r.hash = record_hash(&r)?;
        Ok(r)
    }
}

/// A problem found in a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Break {
    /// Where in the list as read (0-based).
    pub position: usize,
    /// The sequence number the record claims.
    pub sequence: u64,
    pub problem: String,
}

/// Walks a case's records in storage order and reports every break: a
/// record whose own hash does not match its content (edited), a sequence
/// number out of place (deleted or reordered), a `previous_hash` that is
/// not the hash of the record before it, a record of another case.
/// The first element, if any, is the first broken link.
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
        match record_hash(r) {
            Ok(h) if h == r.hash => {}
            Ok(h) => problem(format!(
                "its content does not match its hash (recorded {}, computed {h}): the record was edited",
                r.hash
            )),
            Err(e) => problem(e.to_string()),
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
                "previous_hash {} is not the hash of the record before it ({expected_prev})",
                r.previous_hash
            ));
        }
        previous = Some(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            at: DateTime::from_timestamp(1_700_000_000 + n as i64, 0).unwrap(),
            actor: "arn:aws:iam::123456789012:user/x".into(),
            tool: "firebreak".into(),
            tool_version: "0.1.0".into(),
            note: None,
        }
    }

    fn chain(n: u64) -> Vec<CustodyRecord> {
        let mut v: Vec<CustodyRecord> = Vec::new();
        for i in 0..n {
            let r = new(i).chain_after(v.last()).unwrap();
            v.push(r);
        }
        v
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert!(verify_chain("c1", &chain(5)).is_empty());
        assert_eq!(chain(2)[0].previous_hash, GENESIS);
    }

    #[test]
    fn an_edited_record_is_named() {
        let mut c = chain(5);
        c[2].size = Some(999);
        let b = verify_chain("c1", &c);
        assert_eq!(b[0].sequence, 2);
        assert!(b[0].problem.contains("was edited"), "{b:?}");
    }

    #[test]
    fn an_edited_record_with_a_recomputed_hash_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].size = Some(999);
        c[2].hash = record_hash(&c[2]).unwrap();
        let b = verify_chain("c1", &c);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].sequence, 3);
        assert!(b[0].problem.contains("previous_hash"), "{b:?}");
    }

    #[test]
    fn a_deleted_record_is_named() {
        let mut c = chain(5);
        c.remove(1);
        let b = verify_chain("c1", &c);
        assert_eq!((b[0].position, b[0].sequence), (1, 2));
        assert!(b[0]
            .problem
            .contains("deleted or the records were reordered"));
    }

    #[test]
    fn reordered_records_are_named() {
        let mut c = chain(5);
        c.swap(1, 3);
        let b = verify_chain("c1", &c);
        assert_eq!((b[0].position, b[0].sequence), (1, 3));
    }
}
