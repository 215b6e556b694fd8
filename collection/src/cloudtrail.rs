//! CloudTrail log objects: one JSON document, `{"Records": [event, ...]}`
//! (the format of the CloudTrail user guide, "CloudTrail record contents").

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

/// One event, with the fields the detections read; the rest is kept in
/// `raw`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrailEvent {
    /// `eventTime` (ISO 8601, UTC).
    pub time: String,
    /// `eventSource` (`iam.amazonaws.com`).
    pub source: String,
    /// `eventName` (`ConsoleLogin`).
    pub name: String,
    /// `sourceIPAddress`: an address, or a service name
    /// (`ec2.amazonaws.com`, `AWS Internal`).
    pub source_ip: String,
    /// The caller's ARN (`userIdentity.arn`), when given.
    pub principal: Option<String>,
    /// `errorCode`, when the call failed.
    pub error_code: Option<String>,
    /// `recipientAccountId`, else `userIdentity.accountId`.
    pub account: Option<String>,
    /// `awsRegion`.
    pub region: Option<String>,
    /// The whole event.
    pub raw: Value,
}

impl TrailEvent {
    /// The caller's address, when `sourceIPAddress` is one (not a service
    /// name).
    pub fn address(&self) -> Option<IpAddr> {
        self.source_ip.parse().ok()
    }

    /// A console sign-in that failed.
    pub fn is_failed_console_login(&self) -> bool {
        self.name == "ConsoleLogin"
            && (self.raw.pointer("/responseElements/ConsoleLogin")
                == Some(&Value::String("Failure".into()))
                || self.error_code.is_some())
    }

    /// A call that changes IAM (not a read: `Get*`, `List*`, `Generate*`,
    /// `Simulate*`).
    pub fn is_iam_change(&self) -> bool {
        self.source == "iam.amazonaws.com"
            && !["Get", "List", "Generate", "Simulate"]
                .iter()
                .any(|p| self.name.starts_with(p))
    }
}

#[derive(Deserialize)]
struct Object {
    #[serde(rename = "Records")]
    records: Vec<Value>,
}

/// Why a CloudTrail object could not be read at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a CloudTrail object ({{\"Records\": [...]}}): {0}")]
pub struct TrailError(pub String);

/// An event that lacks a required field: its index (0-based) and what is
/// missing.
pub type BadEvent = (usize, String);

/// Reads an object: its events, and the events that lack a required field.
pub fn parse(bytes: &[u8]) -> Result<(Vec<TrailEvent>, Vec<BadEvent>), TrailError> {
    let o: Object = serde_json::from_slice(bytes).map_err(|e| TrailError(e.to_string()))?;
    let mut events = Vec::with_capacity(o.records.len());
    let mut bad = Vec::new();
    for (i, raw) in o.records.into_iter().enumerate() {
        let s = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_string);
        let missing: Vec<&str> = ["eventTime", "eventSource", "eventName", "sourceIPAddress"]
            .into_iter()
            .filter(|k| s(k).is_none())
            .collect();
        if !missing.is_empty() {
            bad.push((i, format!("event without {}", missing.join(", "))));
            continue;
        }
        events.push(TrailEvent {
            time: s("eventTime").unwrap_or_default(),
            source: s("eventSource").unwrap_or_default(),
            name: s("eventName").unwrap_or_default(),
            source_ip: s("sourceIPAddress").unwrap_or_default(),
            principal: raw
                .pointer("/userIdentity/arn")
                .and_then(Value::as_str)
                .map(str::to_string),
            error_code: s("errorCode"),
            account: s("recipientAccountId").or_else(|| {
                raw.pointer("/userIdentity/accountId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }),
            region: s("awsRegion"),
            raw,
        });
    }
    Ok((events, bad))
}

/// Whether an address is private, loopback or link-local: never "outside
/// the allowed countries".
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        // 100.64.0.0/10 is carrier-grade NAT (shared address space).
        IpAddr::V4(a) => {
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || (a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => a.is_loopback() || a.is_unique_local() || a.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_what_they_are() {
        let text = r#"{"Records": [
          {"eventVersion": "1.08", "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/alice", "accountId": "123456789012"},
           "eventTime": "2025-06-12T17:01:00Z", "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin",
           "awsRegion": "us-east-1", "sourceIPAddress": "81.2.69.142", "responseElements": {"ConsoleLogin": "Failure"},
           "errorMessage": "Failed authentication", "recipientAccountId": "123456789012"},
          {"eventTime": "2025-06-12T17:02:00Z", "eventSource": "iam.amazonaws.com", "eventName": "AttachUserPolicy",
           "sourceIPAddress": "ec2.amazonaws.com", "userIdentity": {"arn": "arn:aws:sts::123456789012:assumed-role/app/i-1"}},
          {"eventTime": "2025-06-12T17:03:00Z", "eventSource": "iam.amazonaws.com", "eventName": "ListUsers",
           "sourceIPAddress": "10.0.0.5"},
          {"eventSource": "s3.amazonaws.com", "eventName": "GetObject"}
        ]}"#;
        let (events, bad) = parse(text.as_bytes()).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            bad,
            vec![(3, "event without eventTime, sourceIPAddress".to_string())]
        );
        assert!(events[0].is_failed_console_login());
        assert_eq!(events[0].address(), Some("81.2.69.142".parse().unwrap()));
        assert!(events[1].is_iam_change());
        assert_eq!(events[1].address(), None);
        assert!(!events[2].is_iam_change());
        assert!(is_private(events[2].address().unwrap()));
        assert!(parse(b"[1, 2]").is_err());
    }
}
