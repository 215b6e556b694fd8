//! Timestamps as the States Language defines them.

use chrono::{DateTime, SecondsFormat, Utc};

/// Parses an RFC 3339 timestamp with the States Language's extra rules: an
/// uppercase `T` between date and time, and an uppercase `Z` when no
/// numeric offset is given.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if s.as_bytes().get(10) != Some(&b'T') || s.ends_with('z') {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Formats a time as Step Functions shows it in the context object
/// (`2024-01-01T12:00:00.123Z`).
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms_only() {
        assert!(parse_timestamp("2016-03-14T01:59:00Z").is_some());
        assert!(parse_timestamp("2016-03-14T01:59:00.123+02:00").is_some());
        assert!(parse_timestamp("2016-03-14t01:59:00Z").is_none());
        assert!(parse_timestamp("2016-03-14 01:59:00Z").is_none());
        assert!(parse_timestamp("2016-03-14T01:59:00z").is_none());
        assert!(parse_timestamp("yesterday").is_none());
    }
}
