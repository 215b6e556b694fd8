//! firebreak's collection side, pure: log objects are parsed (ALB access
//! logs, gzip or plain), every client address is enriched (country, city,
//! autonomous system), detections run on every record, and what they find
//! becomes `firebreak.collection` alerts, the events `firebreak alert` and
//! the notify function read.
//!
//! CloudTrail objects (`{"Records": [...]}`) are read too: failed console
//! sign-ins, and calls from outside the allowed countries.
//!
//! Not yet (see the collection issue): VPC flow logs, IAM changes by
//! principals the lake has never seen, the Parquet lake, the periodic
//! sweep over it, and the Lambda around this.

pub mod alb;
pub mod cloudtrail;
pub mod detect;
pub mod geo;
pub mod threats;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{json, Value};

use crate::detect::{Detector, Injection};
use crate::geo::GeoIp;
use crate::threats::ThreatList;

/// Malformed lines kept with their line number and reason (all are
/// counted).
pub const MALFORMED_KEPT: usize = 100;

/// Evidence lines an alert carries (all are counted).
pub const EVIDENCE_KEPT: usize = 5;

/// What a detection is, as the alert's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Detection {
    /// SQL injection signatures in an ALB request.
    AlbSqlInjection,
    /// Cross-site scripting signatures in an ALB request.
    AlbCrossSiteScripting,
    /// A request from an address on the threat list.
    AlbThreatListAddress,
    /// A console sign-in that failed.
    TrailConsoleLoginFailure,
    /// An API call from an address outside the allowed countries.
    TrailUnexpectedCountry,
}

impl Detection {
    /// The alert type (`Collection:ALB/SqlInjection`).
    pub fn alert_type(self) -> &'static str {
        match self {
            Detection::AlbSqlInjection => "Collection:ALB/SqlInjection",
            Detection::AlbCrossSiteScripting => "Collection:ALB/CrossSiteScripting",
            Detection::AlbThreatListAddress => "Collection:ALB/ThreatListAddress",
            Detection::TrailConsoleLoginFailure => "Collection:CloudTrail/ConsoleLoginFailure",
            Detection::TrailUnexpectedCountry => "Collection:CloudTrail/UnexpectedCountry",
        }
    }

    /// Severity on GuardDuty's scale.
    pub fn severity(self) -> f64 {
        match self {
            Detection::AlbSqlInjection => 8.0,
            Detection::AlbThreatListAddress => 7.0,
            Detection::AlbCrossSiteScripting | Detection::TrailUnexpectedCountry => 6.0,
            Detection::TrailConsoleLoginFailure => 5.0,
        }
    }

    fn title(self, ip: IpAddr) -> String {
        match self {
            Detection::AlbSqlInjection => format!("SQL injection attempts from {ip}"),
            Detection::AlbCrossSiteScripting => format!("cross-site scripting attempts from {ip}"),
            Detection::AlbThreatListAddress => format!("requests from {ip}, on the threat list"),
            Detection::TrailConsoleLoginFailure => format!("failed console sign-ins from {ip}"),
            Detection::TrailUnexpectedCountry => {
                format!("API calls from {ip}, outside the allowed countries")
            }
        }
    }
}

/// A line that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Malformed {
    /// The object or file.
    pub object: String,
    /// 1-based line number.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// Counts of one log type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Lines read (blank lines not counted).
    pub lines: u64,
    /// Records parsed.
    pub records: u64,
    /// Lines that could not be parsed.
    pub malformed: u64,
    /// Records at least one detection matched.
    pub detections: u64,
}

/// What a run read and found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Records parsed (ALB lines).
    pub records: u64,
    /// Lines that could not be parsed.
    pub malformed: u64,
    /// Records at least one detection matched.
    pub detections: u64,
    /// Alert events raised (detections grouped by type and client address).
    pub alerts: u64,
    /// Records whose client address the GeoIP databases held.
    pub enriched: u64,
    /// Counts per log type (`alb`).
    pub sources: BTreeMap<String, Counts>,
    /// The first malformed lines, with why.
    pub malformed_lines: Vec<Malformed>,
}

/// Why an object could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Reading failed (or the gzip stream is corrupt).
    #[error("{object}: {source}")]
    Read {
        /// The object.
        object: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A log type this version does not read.
    #[error("{object}: {kind} is not read yet (ALB access logs and CloudTrail are)")]
    Unsupported {
        /// The object.
        object: String,
        /// What it looks like.
        kind: &'static str,
    },
}

#[derive(Debug)]
struct Group {
    first_seen: String,
    last_seen: String,
    count: u64,
    targets: Vec<String>,
    evidence: Vec<Value>,
    geo: Value,
}

/// The pipeline: feed it objects, then take the summary and the alerts.
#[derive(Debug)]
pub struct Collector {
    geo: Option<GeoIp>,
    threats: ThreatList,
    detector: Detector,
    account: String,
    region: String,
    allowed_countries: Option<Vec<String>>,
    summary: Summary,
    groups: BTreeMap<(Detection, IpAddr), Group>,
}

/// gzip's magic bytes.
const GZIP: [u8; 2] = [0x1f, 0x8b];

impl Collector {
    /// A collector enriching with `geo` (none: no enrichment) and matching
    /// `threats`; alerts name `account` and `region`.
    pub fn new(geo: Option<GeoIp>, threats: ThreatList, account: &str, region: &str) -> Collector {
        Collector {
            geo,
            threats,
            detector: Detector::new(),
            account: account.to_string(),
            region: region.to_string(),
            allowed_countries: None,
            summary: Summary::default(),
            groups: BTreeMap::new(),
        }
    }

    /// CloudTrail calls from an address the GeoIP databases place outside
    /// these countries (ISO codes) are detections; private addresses and
    /// AWS services never are.
    pub fn allow_countries(mut self, countries: Vec<String>) -> Collector {
        self.allowed_countries = Some(countries);
        self
    }

    /// Reads one object (gzip or plain, told apart by content): every line
    /// parsed, enriched and checked. A malformed line is counted and kept
    /// aside; only an unreadable object is an error.
    pub fn read(&mut self, object: &str, input: impl Read) -> Result<(), CollectError> {
        let mut input = BufReader::with_capacity(1 << 16, input);
        let err = |source| CollectError::Read {
            object: object.to_string(),
            source,
        };
        let head = input.fill_buf().map_err(err)?;
        if head.starts_with(&GZIP) {
            let inner =
                BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(input));
            self.dispatch(object, inner)
        } else {
            self.dispatch(object, input)
        }
    }

    /// A JSON document is a CloudTrail object; anything else, lines.
    fn dispatch(&mut self, object: &str, mut input: impl BufRead) -> Result<(), CollectError> {
        let err = |source| CollectError::Read {
            object: object.to_string(),
            source,
        };
        let head = input.fill_buf().map_err(err)?;
        if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            let mut all = Vec::new();
            input.read_to_end(&mut all).map_err(err)?;
            return self.trail(object, &all);
        }
        self.lines(object, input)
    }

    fn trail(&mut self, object: &str, bytes: &[u8]) -> Result<(), CollectError> {
        let mut counts = Counts::default();
        match cloudtrail::parse(bytes) {
            Err(e) => {
                counts.lines += 1;
                counts.malformed += 1;
                self.keep_malformed(object, 1, e.to_string());
            }
            Ok((events, bad)) => {
                counts.lines = (events.len() + bad.len()) as u64;
                counts.records = events.len() as u64;
                counts.malformed = bad.len() as u64;
                for (i, why) in bad {
                    self.keep_malformed(object, i as u64 + 1, why);
                }
                for (i, e) in events.iter().enumerate() {
                    if self.trail_event(object, i as u64 + 1, e) {
                        counts.detections += 1;
                    }
                }
            }
        }
        self.add("cloudtrail", &counts);
        Ok(())
    }

    /// Checks one CloudTrail event; true when a detection matched.
    fn trail_event(&mut self, object: &str, n: u64, e: &cloudtrail::TrailEvent) -> bool {
        let Some(ip) = e.address() else {
            return false;
        };
        let mut found = Vec::new();
        if e.is_failed_console_login() {
            found.push(Detection::TrailConsoleLoginFailure);
        }
        let country = match self.geo.as_mut() {
            Some(g) => {
                let geo = g.lookup(ip);
                if geo.country.is_some() || geo.asn.is_some() {
                    self.summary.enriched += 1;
                }
                geo.country.as_deref().map(str::to_string)
            }
            None => None,
        };
        if let (Some(allowed), Some(c), false) = (
            &self.allowed_countries,
            &country,
            cloudtrail::is_private(ip),
        ) {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(c)) {
                found.push(Detection::TrailUnexpectedCountry);
            }
        }
        let excerpt = format!(
            "{} {} by {}",
            e.source,
            e.name,
            e.principal.as_deref().unwrap_or("(no principal)")
        );
        let evidence =
            json!({"source": "cloudtrail", "line": n, "object": object, "excerpt": excerpt});
        for d in &found {
            self.note(*d, ip, &e.time, e.principal.as_deref(), &evidence);
        }
        !found.is_empty()
    }

    fn keep_malformed(&mut self, object: &str, line: u64, reason: String) {
        if self.summary.malformed_lines.len() < MALFORMED_KEPT {
            self.summary.malformed_lines.push(Malformed {
                object: object.to_string(),
                line,
                reason,
            });
        }
    }

    fn add(&mut self, source: &str, counts: &Counts) {
        let s = &mut self.summary;
        s.lines += counts.lines;
        s.records += counts.records;
        s.malformed += counts.malformed;
        s.detections += counts.detections;
        let c = s.sources.entry(source.into()).or_default();
        c.lines += counts.lines;
        c.records += counts.records;
        c.malformed += counts.malformed;
        c.detections += counts.detections;
    }

    /// Adds a detection to its group (type and address).
    fn note(
        &mut self,
        d: Detection,
        ip: IpAddr,
        time: &str,
        resource: Option<&str>,
        evidence: &Value,
    ) {
        let geo = match self.geo.as_mut() {
            Some(g) => serde_json::to_value(g.lookup(ip)).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let g = self.groups.entry((d, ip)).or_insert_with(|| Group {
            first_seen: time.to_string(),
            last_seen: time.to_string(),
            count: 0,
            targets: Vec::new(),
            evidence: Vec::new(),
            geo,
        });
        g.count += 1;
        if time < g.first_seen.as_str() {
            g.first_seen = time.to_string();
        }
        if time > g.last_seen.as_str() {
            g.last_seen = time.to_string();
        }
        if let Some(t) = resource {
            if !g.targets.iter().any(|x| x == t) && g.targets.len() < EVIDENCE_KEPT {
                g.targets.push(t.to_string());
            }
        }
        if g.evidence.len() < EVIDENCE_KEPT {
            g.evidence.push(evidence.clone());
        }
    }

    /// Reads lines in 1 MiB chunks (grown for a longer line), each line
    /// handled where it lies in the chunk: no copy per line.
    fn lines(&mut self, object: &str, mut input: impl Read) -> Result<(), CollectError> {
        let mut buf = vec![0u8; 1 << 20];
        let mut filled = 0;
        let mut n: u64 = 0;
        let mut counts = Counts::default();
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let read = input
                .read(&mut buf[filled..])
                .map_err(|source| CollectError::Read {
                    object: object.to_string(),
                    source,
                })?;
            filled += read;
            let mut start = 0;
            while let Some(at) = memchr::memchr(b'\n', &buf[start..filled]) {
                n += 1;
                self.line(object, n, &buf[start..start + at], &mut counts)?;
                start += at + 1;
            }
            if read == 0 {
                if start < filled {
                    n += 1;
                    self.line(object, n, &buf[start..filled], &mut counts)?;
                }
                break;
            }
            buf.copy_within(start..filled, 0);
            filled -= start;
        }
        self.add("alb", &counts);
        Ok(())
    }

    /// One line of a line-oriented object (its newline taken off).
    fn line(
        &mut self,
        object: &str,
        n: u64,
        line: &[u8],
        counts: &mut Counts,
    ) -> Result<(), CollectError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        if n == 1 && line.starts_with(b"version account-id") {
            return Err(CollectError::Unsupported {
                object: object.to_string(),
                kind: "a VPC flow log",
            });
        }
        counts.lines += 1;
        let reason = match std::str::from_utf8(line) {
            Err(_) => Some("not UTF-8".to_string()),
            Ok(text) => match alb::parse(text) {
                Err(e) => Some(e.to_string()),
                Ok(r) => {
                    counts.records += 1;
                    if self.record(object, n, &r) {
                        counts.detections += 1;
                    }
                    None
                }
            },
        };
        if let Some(reason) = reason {
            counts.malformed += 1;
            self.keep_malformed(object, n, reason);
        }
        Ok(())
    }

    /// Enriches and checks one record; true when a detection matched.
    fn record(&mut self, object: &str, line: u64, r: &alb::AlbRecord<'_>) -> bool {
        if let Some(g) = self.geo.as_mut() {
            let found = g.lookup(r.client_ip);
            if found.country.is_some() || found.asn.is_some() {
                self.summary.enriched += 1;
            }
        }
        let mut found = Vec::new();
        if let Some(url) = r.path_and_query() {
            for i in self.detector.scan(url) {
                found.push(match i {
                    Injection::Sql => Detection::AlbSqlInjection,
                    Injection::Xss => Detection::AlbCrossSiteScripting,
                });
            }
        }
        if !self.threats.is_empty() && self.threats.contains(r.client_ip) {
            found.push(Detection::AlbThreatListAddress);
        }
        if !found.is_empty() {
            let request = r.fields[12].unwrap_or("-");
            let excerpt: String = request.chars().take(200).collect();
            let evidence =
                json!({"source": "alb", "line": line, "object": object, "excerpt": excerpt});
            for d in &found {
                self.note(*d, r.client_ip, r.time(), r.target(), &evidence);
            }
        }
        !found.is_empty()
    }

    /// The summary and the alert events (EventBridge events of source
    /// `firebreak.collection`, one per detection type and client address).
    pub fn finish(mut self) -> (Summary, Vec<Value>) {
        let mut alerts = Vec::new();
        for ((d, ip), g) in std::mem::take(&mut self.groups) {
            let key = format!("{}|{ip}|{}", d.alert_type(), g.first_seen);
            let id = format!("fbd-{:016x}", fnv1a(key.as_bytes()));
            let date = g.first_seen.get(..10).unwrap_or_default().to_string();
            let kind = match d {
                Detection::AlbSqlInjection
                | Detection::AlbCrossSiteScripting
                | Detection::AlbThreatListAddress => "AlbTarget",
                Detection::TrailConsoleLoginFailure | Detection::TrailUnexpectedCountry => {
                    "AwsIamPrincipal"
                }
            };
            let targets: Vec<Value> = g
                .targets
                .iter()
                .map(|t| json!({"type": kind, "id": t}))
                .collect();
            alerts.push(json!({
                "version": "0",
                "id": id,
                "detail-type": "Firebreak Detection",
                "source": "firebreak.collection",
                "account": self.account,
                "time": g.last_seen,
                "region": self.region,
                "resources": [],
                "detail": {
                    "id": id,
                    "type": d.alert_type(),
                    "severity": d.severity(),
                    "title": d.title(ip),
                    "description": format!(
                        "{} request(s) from {ip} between {} and {} ({date}).",
                        g.count, g.first_seen, g.last_seen
                    ),
                    "first_seen": g.first_seen,
                    "last_seen": g.last_seen,
                    "count": g.count,
                    "source_address": ip.to_string(),
                    "source_geo": g.geo,
                    "resources": targets,
                    "evidence": g.evidence,
                }
            }));
        }
        self.summary.alerts = alerts.len() as u64;
        (self.summary, alerts)
    }
}

/// FNV-1a, 64 bits: a stable id for an alert from what it is about (not
/// a security hash; hand-written as it is five lines).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
