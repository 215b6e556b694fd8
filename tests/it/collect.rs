//! `firebreak collect`: ALB access logs from AWS's documented format
//! (tests/fixtures/logs, a plain and a gzip object, malformed lines
//! included), enriched from the MaxMind test databases
//! (tests/fixtures/geoip), checked against a threat list.

use serde_json::Value;

use crate::support::{firebreak_offline, stderr, stdout};

fn fixture(p: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
        .display()
        .to_string()
}

/// Each alert's type, source address and count, sorted.
fn kinds(alerts: &[Value]) -> Vec<(String, String, u64)> {
    let mut kinds: Vec<(String, String, u64)> = alerts
        .iter()
        .map(|a| {
            let d = &a["detail"];
            (
                d["type"].as_str().unwrap().to_string(),
                d["source_address"].as_str().unwrap().to_string(),
                d["count"].as_u64().unwrap(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn alb_logs_are_parsed_enriched_and_checked() {
    let alerts =
        std::env::temp_dir().join(format!("firebreak-collect-{}.json", std::process::id()));
    let out = firebreak_offline(&[
        "collect",
        &fixture("logs/alb-web.log"),
        &fixture("logs/alb-web2.log.gz"),
        "--geoip",
        &fixture("geoip"),
        "--threat-list",
        &fixture("logs/threats.txt"),
        "--alerts-out",
        alerts.to_str().unwrap(),
        "--account",
        "123456789012",
        "--region",
        "eu-west-1",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Each object: 11 lines, 8 records, 3 malformed, 4 records detected.
    assert_eq!(s["lines"], 22, "{s:#}");
    assert_eq!(s["records"], 16);
    assert_eq!(s["malformed"], 6);
    assert_eq!(s["detections"], 8);
    assert_eq!(s["sources"]["alb"]["records"], 16);
    // Malformed lines are kept with their line numbers and why.
    let kept: Vec<(String, u64)> = s["malformed_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["object"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                m["line"].as_u64().unwrap(),
            )
        })
        .collect();
    for object in ["alb-web.log", "alb-web2.log.gz"] {
        let lines: Vec<u64> = kept
            .iter()
            .filter(|(o, _)| o == object)
            .map(|(_, l)| *l)
            .collect();
        assert_eq!(lines, [6, 9, 11], "{object}: {s:#}");
    }
    assert!(
        s["malformed_lines"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("client"),
        "{s:#}"
    );
    // Detections grouped per type and client address, over both objects.
    let alerts: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&alerts).unwrap()).unwrap();
    assert_eq!(s["alerts"], 4);
    let kinds = kinds(&alerts);
    assert_eq!(
        kinds,
        [
            (
                "Collection:ALB/CrossSiteScripting".into(),
                "216.160.83.57".into(),
                2
            ),
            (
                "Collection:ALB/SqlInjection".into(),
                "198.51.100.23".into(),
                4
            ),
            (
                "Collection:ALB/ThreatListAddress".into(),
                "198.51.100.23".into(),
                4
            ),
            (
                "Collection:ALB/ThreatListAddress".into(),
                "203.0.113.50".into(),
                2
            ),
        ]
    );
    // Enriched from the databases: Milton, US, AS209.
    let xss = alerts
        .iter()
        .find(|a| a["detail"]["type"] == "Collection:ALB/CrossSiteScripting")
        .unwrap();
    assert_eq!(xss["detail"]["source_geo"]["country"], "US", "{xss:#}");
    assert_eq!(xss["detail"]["source_geo"]["city"], "Milton");
    assert_eq!(xss["detail"]["source_geo"]["asn"], 209);
    assert_eq!(xss["detail"]["first_seen"], "2025-06-12T17:01:14.186641Z");
    assert_eq!(xss["detail"]["last_seen"], "2025-06-12T17:02:14.186641Z");
    assert_eq!(xss["detail"]["resources"][0]["id"], "10.0.1.12:80");
    assert!(xss["detail"]["evidence"][0]["excerpt"]
        .as_str()
        .unwrap()
        .contains("%3Cscript%3E"));

    // AND each alert is an event `firebreak alert` reads
    let one =
        std::env::temp_dir().join(format!("firebreak-collect-one-{}.json", std::process::id()));
    std::fs::write(&one, xss.to_string()).unwrap();
    let read = firebreak_offline(&[
        "alert",
        one.to_str().unwrap(),
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(
        read.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&read),
        stdout(&read)
    );
    let answer: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(
        answer["alerts"][0]["finding_type"], "Collection:ALB/CrossSiteScripting",
        "{answer:#}"
    );
}

#[test]
fn bad_input_is_named_before_anything_is_read() {
    let out = firebreak_offline(&["collect", &fixture("logs/alb-web.log"), "/no/such/file.log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/no/such/file.log"),
        "{}",
        stderr(&out)
    );
    let out = firebreak_offline(&["collect", &fixture("logs/alb-web.log"), "--geoip", "/tmp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(".mmdb"), "{}", stderr(&out));
    // A VPC flow log is not read yet: said, exit 2.
    let out = firebreak_offline(&["collect", &fixture("logs/vpc-flow.log")]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("not read yet"), "{}", stdout(&out));
    let out = firebreak_offline(&[
        "collect",
        &fixture("logs/alb-web.log"),
        "--allow-countries",
        "GB",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--allow-countries needs --geoip"
    );
    let out = firebreak_offline(&[
        "collect",
        &fixture("logs/alb-web.log"),
        "--geoip",
        &fixture("geoip"),
        "--allow-countries",
        "GB,England",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\"England\""), "{}", stderr(&out));
}

#[test]
fn cloudtrail_sign_in_failures_and_calls_from_elsewhere() {
    let alerts =
        std::env::temp_dir().join(format!("firebreak-collect-ct-{}.json", std::process::id()));
    let out = firebreak_offline(&[
        "collect",
        &fixture("logs/cloudtrail.json"),
        "--geoip",
        &fixture("geoip"),
        "--allow-countries",
        "GB,US",
        "--alerts-out",
        alerts.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    // 7 events: one without its time and address (malformed, event 6);
    // two failed sign-ins from GB (allowed) and a call from CN detected; a
    // private address, an AWS service and a US address are not.
    assert_eq!(s["sources"]["cloudtrail"]["records"], 6, "{s:#}");
    assert_eq!(s["malformed"], 1);
    assert_eq!(s["malformed_lines"][0]["line"], 6);
    assert_eq!(s["detections"], 3);
    let alerts: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&alerts).unwrap()).unwrap();
    let kinds = kinds(&alerts);
    assert_eq!(
        kinds,
        [
            (
                "Collection:CloudTrail/ConsoleLoginFailure".into(),
                "81.2.69.142".into(),
                2
            ),
            (
                "Collection:CloudTrail/UnexpectedCountry".into(),
                "175.16.199.5".into(),
                1
            ),
        ]
    );
    let elsewhere = alerts
        .iter()
        .find(|a| a["detail"]["type"] == "Collection:CloudTrail/UnexpectedCountry")
        .unwrap();
    assert_eq!(elsewhere["detail"]["source_geo"]["country"], "CN");
    assert_eq!(
        elsewhere["detail"]["resources"][0]["id"],
        "arn:aws:iam::123456789012:user/deploy"
    );
}
