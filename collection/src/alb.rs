//! Application Load Balancer access logs: one request per line, fields
//! separated by single spaces, some in double quotes, `-` for "none".
//!
//! The fields, in AWS's documented order ("Access log entries", Elastic
//! Load Balancing user guide); AWS adds new fields at the end, so a line
//! with more fields than these is read, its extra fields ignored.

use std::net::IpAddr;

/// The documented fields, in order.
pub const FIELDS: [&str; 33] = [
    "type",
    "time",
    "elb",
    "client",
    "target",
    "request_processing_time",
    "target_processing_time",
    "response_processing_time",
    "elb_status_code",
    "target_status_code",
    "received_bytes",
    "sent_bytes",
    "request",
    "user_agent",
    "ssl_cipher",
    "ssl_protocol",
    "target_group_arn",
    "trace_id",
    "domain_name",
    "chosen_cert_arn",
    "matched_rule_priority",
    "request_creation_time",
    "actions_executed",
    "redirect_url",
    "error_reason",
    "target_port_list",
    "target_status_code_list",
    "classification",
    "classification_reason",
    "conn_trace_id",
    "transformed_host",
    "transformed_uri",
    "request_transform_status",
];

/// The fewest fields a line may have: through `target_group_arn` (older
/// logs end earlier than today's, never before that).
pub const MIN_FIELDS: usize = 17;

/// The request types ALB writes in the first field.
const TYPES: [&str; 6] = ["http", "https", "h2", "grpcs", "ws", "wss"];

/// One parsed line; every field borrows from the line. `-` (none) is
/// `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct AlbRecord<'a> {
    /// The fields in [`FIELDS`] order (missing trailing ones are `None`).
    pub fields: [Option<&'a str>; FIELDS.len()],
    /// The client's address.
    pub client_ip: IpAddr,
    /// The client's port.
    pub client_port: u16,
    /// The ELB's status code, when it answered.
    pub elb_status: Option<u16>,
    /// The request's method (`GET`), URL and protocol, when the request
    /// line could be read (`- - -` otherwise).
    pub method: Option<&'a str>,
    /// The request URL as sent (`http://host:80/path?query`).
    pub url: Option<&'a str>,
}

impl<'a> AlbRecord<'a> {
    /// A field by name (see [`FIELDS`]).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        FIELDS
            .iter()
            .position(|f| *f == name)
            .and_then(|i| self.fields[i])
    }

    /// The target's `ip:port`, when the request reached one.
    pub fn target(&self) -> Option<&'a str> {
        self.fields[4]
    }

    /// The request URL's path and query (`/search?q=...`), without the
    /// scheme and host the ALB adds.
    pub fn path_and_query(&self) -> Option<&'a str> {
        let url = self.url?;
        Some(match url.find("://") {
            Some(i) => url[i + 3..].find('/').map_or("", |j| &url[i + 3 + j..]),
            None => url,
        })
    }

    /// The request time (ISO 8601, UTC).
    pub fn time(&self) -> &'a str {
        self.fields[1].unwrap_or_default()
    }
}

/// Why a line is not an ALB record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlbError {
    /// A quoted field does not end.
    #[error("a quoted field has no closing quote")]
    Unterminated,
    /// Too few fields.
    #[error("{0} fields, an ALB line has at least {MIN_FIELDS}")]
    TooFew(usize),
    /// The first field is not a request type.
    #[error("{0:?} is not an ALB request type (http, https, h2, grpcs, ws, wss)")]
    Type(String),
    /// The client field is not `address:port`.
    #[error("client {0:?} is not address:port")]
    Client(String),
    /// The status code is not a number.
    #[error("elb_status_code {0:?} is not a number")]
    Status(String),
}

/// Splits a line into its fields: spaces separate, double quotes enclose a
/// field that may hold spaces (a `\"` inside stays part of it). Hand-
/// written rather than a CSV reader: the format is neither CSV nor TSV, and
/// this is the loop the throughput target rests on.
fn split<'a>(line: &'a str, out: &mut [Option<&'a str>; FIELDS.len()]) -> Result<usize, AlbError> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < bytes.len() {
        let (start, end, next) = if bytes[i] == b'"' {
            let mut from = i + 1;
            loop {
                let Some(q) = memchr::memchr(b'"', &bytes[from..]) else {
                    return Err(AlbError::Unterminated);
                };
                let at = from + q;
                if at > i + 1 && bytes[at - 1] == b'\\' {
                    from = at + 1;
                    continue;
                }
                break (i + 1, at, at + 1);
            }
        } else {
            // Most unquoted fields are a few bytes: a plain scan beats
            // memchr's setup there (measured with scripts/bench-collect).
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(bytes.len(), |s| i + s);
            (i, end, end)
        };
        if n < out.len() {
            let v = &line[start..end];
            out[n] = (v != "-").then_some(v);
        }
        n += 1;
        // One space between fields.
        i = next + 1;
    }
    Ok(n)
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Result<AlbRecord<'_>, AlbError> {
    let mut fields = [None; FIELDS.len()];
    let n = split(line, &mut fields)?;
    if n < MIN_FIELDS {
        return Err(AlbError::TooFew(n));
    }
    let kind = fields[0].unwrap_or("-");
    if !TYPES.contains(&kind) {
        return Err(AlbError::Type(kind.to_string()));
    }
    let client = fields[3].unwrap_or("-");
    let (ip, port) = client
        .rsplit_once(':')
        .and_then(|(ip, port)| {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            Some((ip.parse::<IpAddr>().ok()?, port.parse::<u16>().ok()?))
        })
        .ok_or_else(|| AlbError::Client(client.to_string()))?;
    let elb_status = match fields[8] {
        None => None,
        Some(s) => Some(
            s.parse::<u16>()
                .map_err(|_| AlbError::Status(s.to_string()))?,
        ),
    };
    let mut request = fields[12].unwrap_or_default().splitn(3, ' ');
    let method = request.next().filter(|v| *v != "-" && !v.is_empty());
    let url = request.next().filter(|v| *v != "-" && !v.is_empty());
    Ok(AlbRecord {
        fields,
        client_ip: ip,
        client_port: port,
        elb_status,
        method,
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's documented example entries ("Example log entries").
    const HTTP: &str = r#"http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.46.0" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "Root=1-58337262-36d228ad5d99923122bbe354" "-" "-" 0 2018-07-02T22:22:48.364000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-" TID_1234abcd5678ef90"#;
    const NEWEST: &str = r#"https 2024-09-26T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.086 0.048 0.037 200 200 0 57 "GET https://www.example.com:443/ HTTP/1.1" "curl/7.46.0" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "Root=1-58337281-1d84f3d73c47ec4e58577259" "www.example.com" "arn:aws:acm:us-east-2:123456789012:certificate/12345678-1234-1234-1234-123456789012" 1 2024-09-26T22:22:48.364000Z "authenticate,forward" "-" "-" "10.0.0.1:80" "200" "Acceptable" "-" TID_1234abcd5678ef90 "-" "-" "-" extra"#;

    #[test]
    fn reads_every_documented_field() {
        let r = parse(HTTP).unwrap();
        assert_eq!(r.get("type"), Some("http"));
        assert_eq!(r.client_ip.to_string(), "192.168.131.39");
        assert_eq!(r.client_port, 2817);
        assert_eq!(r.target(), Some("10.0.0.1:80"));
        assert_eq!(r.elb_status, Some(200));
        assert_eq!(r.method, Some("GET"));
        assert_eq!(r.url, Some("http://www.example.com:80/"));
        assert_eq!(r.path_and_query(), Some("/"));
        assert_eq!(r.get("user_agent"), Some("curl/7.46.0"));
        assert_eq!(r.get("ssl_cipher"), None);
        assert_eq!(r.get("domain_name"), None);
        assert_eq!(r.get("actions_executed"), Some("forward"));
        assert_eq!(r.get("conn_trace_id"), Some("TID_1234abcd5678ef90"));
        let n = parse(NEWEST).unwrap();
        assert_eq!(n.get("classification"), Some("Acceptable"));
        assert_eq!(n.get("ssl_protocol"), Some("TLSv1.2"));
        assert_eq!(n.get("actions_executed"), Some("authenticate,forward"));
        assert_eq!(n.get("request_transform_status"), None);
    }

    #[test]
    fn quotes_and_dashes() {
        let line = HTTP.replace(r#""curl/7.46.0""#, r#""Mozilla \"quoted\" agent""#);
        let r = parse(&line).unwrap();
        assert_eq!(r.get("user_agent"), Some(r#"Mozilla \"quoted\" agent"#));
        // A request ALB could not read is "- - -".
        let bad = HTTP.replace("GET http://www.example.com:80/ HTTP/1.1", "- - -");
        let r = parse(&bad).unwrap();
        assert_eq!((r.method, r.url), (None, None));
        let ipv6 = HTTP.replace("192.168.131.39:2817", "[2001:db8::1]:443");
        assert_eq!(parse(&ipv6).unwrap().client_ip.to_string(), "2001:db8::1");
    }

    #[test]
    fn malformed_lines_say_why() {
        assert_eq!(parse("http 2018-07-02T22:23:00Z"), Err(AlbError::TooFew(2)));
        assert!(matches!(
            parse(&HTTP.replacen("http", "ftp", 1)),
            Err(AlbError::Type(_))
        ));
        assert!(matches!(
            parse(&HTTP.replace("192.168.131.39:2817", "nobody")),
            Err(AlbError::Client(_))
        ));
        assert_eq!(
            parse(&format!("{HTTP} \"no end")),
            Err(AlbError::Unterminated)
        );
        assert!(matches!(
            parse(&HTTP.replace(" 200 200 ", " OK 200 ")),
            Err(AlbError::Status(_))
        ));
    }
}
