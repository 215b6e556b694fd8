//! firebreak's collection side, pure: log objects are parsed (ALB access
//! logs, gzip or plain), every client address is enriched (country, city,
//! autonomous system), detections run on every record, and what they find
//! becomes `firebreak.collection` alerts, the events `firebreak alert` and
//! the notify function read.
//!
//! Not yet (see the collection issue): CloudTrail and VPC flow logs, the
//! Parquet lake, the periodic sweep over it, and the Lambda around this.

pub mod alb;
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
}

impl Detection {
    /// The alert type (`Collection:ALB/SqlInjection`).
    pub fn alert_type(self) -> &'static str {
        match self {
            Detection::AlbSqlInjection => "Collection:ALB/SqlInjection",
            Detection::AlbCrossSiteScripting => "Collection:ALB/CrossSiteScripting",
            Detection::AlbThreatListAddress => "Collection:ALB/ThreatListAddress",
        }
    }

    /// Severity on GuardDuty's scale.
    pub fn severity(self) -> f64 {
        match self {
            Detection::AlbSqlInjection => 8.0,
            Detection::AlbThreatListAddress => 7.0,
            Detection::AlbCrossSiteScripting => 6.0,
        }
    }

    fn title(self, ip: IpAddr) -> String {
        match self {
            Detection::AlbSqlInjection => format!("SQL injection attempts from {ip}"),
            Detection::AlbCrossSiteScripting => format!("cross-site scripting attempts from {ip}"),
            Detection::AlbThreatListAddress => format!("requests from {ip}, on the threat list"),
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
    #[error("{object}: {kind} is not read yet (ALB access logs are)")]
    Unsupported {
        /// The object.
        object: String,
        /// What it looks like.
        kind: &'static str,
    },
}

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
    summary: Summary,
    groups: BTreeMap<(Detection, IpAddr), GroupBox>,
}

struct GroupBox(Group);

impl std::fmt::Debug for GroupBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} detection(s)", self.0.count)
    }
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
            summary: Summary::default(),
            groups: BTreeMap::new(),
        }
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
            self.lines(object, inner)
        } else {
            self.lines(object, input)
        }
    }

    fn lines(&mut self, object: &str, mut input: impl BufRead) -> Result<(), CollectError> {
        let mut buf = Vec::with_capacity(4096);
        let mut n: u64 = 0;
        let mut counts = Counts::default();
        loop {
            buf.clear();
            let read = input
                .read_until(b'\n', &mut buf)
                .map_err(|source| CollectError::Read {
                    object: object.to_string(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            n += 1;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if n == 1 && matches!(line.first(), Some(b'{' | b'[')) {
                return Err(CollectError::Unsupported {
                    object: object.to_string(),
                    kind: "JSON (CloudTrail?)",
                });
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
                if self.summary.malformed_lines.len() < MALFORMED_KEPT {
                    self.summary.malformed_lines.push(Malformed {
                        object: object.to_string(),
                        line: n,
                        reason,
                    });
                }
            }
        }
        let s = &mut self.summary;
        s.lines += counts.lines;
        s.records += counts.records;
        s.malformed += counts.malformed;
        s.detections += counts.detections;
        let c = s.sources.entry("alb".into()).or_default();
        c.lines += counts.lines;
        c.records += counts.records;
        c.malformed += counts.malformed;
        c.detections += counts.detections;
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
        if let Some(url) = r.url {
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
        let geo = match (found.is_empty(), self.geo.as_mut()) {
            (false, Some(g)) => serde_json::to_value(g.lookup(r.client_ip)).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        for d in &found {
            let g = &mut self
                .groups
                .entry((*d, r.client_ip))
                .or_insert_with(|| {
                    GroupBox(Group {
                        first_seen: r.time().to_string(),
                        last_seen: r.time().to_string(),
                        count: 0,
                        targets: Vec::new(),
                        evidence: Vec::new(),
                        geo: geo.clone(),
                    })
                })
                .0;
            g.count += 1;
            if r.time() < g.first_seen.as_str() {
                g.first_seen = r.time().to_string();
            }
            if r.time() > g.last_seen.as_str() {
                g.last_seen = r.time().to_string();
            }
            if let Some(t) = r.target() {
                if !g.targets.iter().any(|x| x == t) && g.targets.len() < EVIDENCE_KEPT {
                    g.targets.push(t.to_string());
                }
            }
            if g.evidence.len() < EVIDENCE_KEPT {
                let request = r.fields[12].unwrap_or("-");
                let excerpt: String = request.chars().take(200).collect();
                g.evidence.push(json!({
                    "source": "alb", "line": line, "object": object, "excerpt": excerpt
                }));
            }
        }
        !found.is_empty()
    }

    /// The summary and the alert events (EventBridge events of source
    /// `firebreak.collection`, one per detection type and client address).
    pub fn finish(mut self) -> (Summary, Vec<Value>) {
        let mut alerts = Vec::new();
        for ((d, ip), GroupBox(g)) in std::mem::take(&mut self.groups) {
            let key = format!("{}|{ip}|{}", d.alert_type(), g.first_seen);
            let id = format!("fbd-{:016x}", fnv1a(key.as_bytes()));
            let date = g.first_seen.get(..10).unwrap_or_default().to_string();
            let targets: Vec<Value> = g
                .targets
                .iter()
                .map(|t| json!({"type": "AlbTarget", "id": t}))
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
