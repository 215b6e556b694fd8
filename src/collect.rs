//! `firebreak collect FILE...`: the collection pipeline on local log files
//! (ALB access logs and CloudTrail objects, gzip or plain): every record
//! parsed, every address enriched, the detections run; a summary, and the
//! alerts they raise (the events `firebreak alert` reads).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use firebreak_collection::geo::GeoIp;
use firebreak_collection::threats::ThreatList;
use firebreak_collection::{CollectError, Collector};

use crate::summary::OutputFormat;
use crate::{exit, BadInput};

#[derive(Debug, Args)]
pub(crate) struct CollectArgs {
    /// Log files: ALB access logs, CloudTrail objects (plain or gzip).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A directory with GeoLite2/GeoIP2 City (or Country) and ASN .mmdb
    /// files: every client address is enriched from them.
    #[arg(long, value_name = "DIR")]
    pub geoip: Option<PathBuf>,
    /// A threat list: CIDRs or addresses, one per line (`#` comments).
    #[arg(long, value_name = "FILE")]
    pub threat_list: Option<PathBuf>,
    /// CloudTrail calls from outside these countries (ISO codes, comma-
    /// separated) are detections; private addresses and AWS services never
    /// are. Needs --geoip.
    #[arg(long, value_delimiter = ',', value_name = "CC,...", requires = "geoip")]
    pub allow_countries: Vec<String>,
    /// Write the alert events (a JSON array of firebreak.collection
    /// events) to this file.
    #[arg(long, value_name = "FILE")]
    pub alerts_out: Option<PathBuf>,
    /// The account and region the alerts name.
    #[arg(long, default_value = "000000000000", value_name = "ACCOUNT_ID")]
    pub account: String,
    /// See --account.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}

pub(crate) fn run(a: CollectArgs) -> anyhow::Result<u8> {
    let geo = match &a.geoip {
        Some(dir) => Some(GeoIp::open(dir).map_err(|e| BadInput(format!("--geoip {e}")))?),
        None => None,
    };
    let threats = match &a.threat_list {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| BadInput(format!("--threat-list {}: {e}", p.display())))?;
            ThreatList::parse(&text)
                .map_err(|e| BadInput(format!("--threat-list {}: {e}", p.display())))?
        }
        None => ThreatList::default(),
    };
    // Every file is opened before any is read: a wrong name stops the run
    // before it starts.
    let mut opened = Vec::new();
    for f in &a.files {
        let file = std::fs::File::open(f).map_err(|e| BadInput(format!("{}: {e}", f.display())))?;
        opened.push((f.display().to_string(), file));
    }
    for cc in &a.allow_countries {
        if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(BadInput(format!(
                "--allow-countries: {cc:?} is not an ISO 3166 country code (two letters, like GB)"
            ))
            .into());
        }
    }
    let mut c = Collector::new(geo, threats, &a.account, &a.region);
    if !a.allow_countries.is_empty() {
        c = c.allow_countries(a.allow_countries.clone());
    }
    let mut unread = Vec::new();
    for (name, file) in opened {
        match c.read(&name, file) {
            Ok(()) => {}
            Err(e @ CollectError::Unsupported { .. }) => unread.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    let (summary, alerts) = c.finish();
    if let Some(p) = &a.alerts_out {
        std::fs::write(p, serde_json::to_string_pretty(&alerts)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    match a.output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&summary)?;
            v["unread"] = serde_json::json!(unread);
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Human => {
            outln!(
                "{} lines, {} records, {} malformed, {} detections, {} alerts ({} records enriched)",
                summary.lines,
                summary.records,
                summary.malformed,
                summary.detections,
                summary.alerts,
                summary.enriched
            );
            for m in &summary.malformed_lines {
                outln!("  malformed {}:{}: {}", m.object, m.line, m.reason);
            }
            for u in &unread {
                outln!("  not read: {u}");
            }
            for al in &alerts {
                let d = &al["detail"];
                outln!(
                    "  alert {} {}: {} ({} requests)",
                    d["type"].as_str().unwrap_or(""),
                    d["id"].as_str().unwrap_or(""),
                    d["title"].as_str().unwrap_or(""),
                    d["count"]
                );
            }
        }
    }
    Ok(if unread.is_empty() {
        exit::OK
    } else {
        exit::BAD_INPUT
    })
}
