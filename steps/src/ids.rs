//! Validated identifiers: EC2 instance ids and case ids. A leaf module
//! (it imports nothing of the crate), so every step can take them without
//! depending on the case file.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// An EC2 instance id (`i-` and 8 or 17 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

/// A case id: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or
/// digit. It goes into tags, S3 keys and execution names, which all accept
/// these characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaseId(String);

/// Why a string was refused as an identifier; the message says what a
/// valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not an EC2 instance id: the refused string.
    #[error("{0:?} is not an EC2 instance id (expected i- followed by 8 or 17 hexadecimal digits, like i-0abc123def4567890)")]
    Instance(String),
    /// Not a valid case id: the refused string.
    #[error("{0:?} is not a valid case id (1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit)")]
    Case(String),
}

/// Longest case id: fits in an execution name (80) with a prefix.
const MAX_CASE_ID_CHARS: usize = 64;

impl FromStr for InstanceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.strip_prefix("i-").is_some_and(|h| {
            (h.len() == 8 || h.len() == 17)
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if ok {
            Ok(InstanceId(s.to_string()))
        } else {
            Err(IdError::Instance(s.to_string()))
        }
    }
}

impl FromStr for CaseId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CASE_ID_CHARS
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(CaseId(s.to_string()))
        } else {
            Err(IdError::Case(s.to_string()))
        }
    }
}

impl InstanceId {
    /// The id as given, e.g. `i-0abc123def4567890`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl CaseId {
    /// The id as given, e.g. `INC-2024.001_a`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new case id from the time and the instance: `fb-20261127-012455-0abc1234`.
    pub fn generate(now: DateTime<Utc>, instance: &InstanceId) -> CaseId {
        let short: String = instance
            .as_str()
            .trim_start_matches("i-")
            .chars()
            .take(8)
            .collect();
        CaseId(format!("fb-{}-{short}", now.format("%Y%m%d-%H%M%S")))
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        assert!("i-0abc1234".parse::<InstanceId>().is_ok());
        assert!("i-0abc123def4567890".parse::<InstanceId>().is_ok());
        for bad in [
            "",
            "i-",
            "i-xyz12345",
            "0abc1234",
            "i-0ABC1234",
            "i-0abc12345",
        ] {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn case_ids() {
        assert!("INC-2024.001_a".parse::<CaseId>().is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(bad.parse::<CaseId>().is_err(), "{bad}");
        }
    }
}
