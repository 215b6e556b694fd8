//! The incident report a live run writes into its case, read back with
//! `firebreak report` in each format.

use serde_json::Value;

use crate::support::{self, s, stderr, stdout};

#[test]
fn sandbox_the_report_of_a_run_holds_its_timeline_evidence_and_failures() {
    let decoy = support::decoy();
    let instance = s(&decoy, "instance_id");
    // A topic that does not exist: both announcements fail, and the
    // report must list them.
    let out = support::firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--notify-topic",
        "arn:aws:sns:us-east-1:123456789012:firebreak-it-no-such-topic",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("incident report: s3://"),
        "{}",
        stderr(&out)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    let case = summary["case_id"].as_str().expect("case").to_string();
    let record_sha = summary["instance_state"]["sha256"]
        .as_str()
        .expect("the record's sha256")
        .to_string();

    let json = support::firebreak(&["report", "--case", &case, "--format", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let report: Value = serde_json::from_slice(&json.stdout).expect("report JSON");
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(
        timeline
            .iter()
            .any(|e| e["state"] == "IsolateNetwork" && e["what"] == "succeeded"),
        "{timeline:#?}"
    );
    let evidence = report["evidence"].as_array().expect("evidence");
    assert!(
        evidence
            .iter()
            .any(|e| e["sha256"] == record_sha.as_str() && e["location"].as_str().is_some()),
        "the instance record with its SHA-256: {evidence:#?}"
    );
    let snapshots = summary["snapshots"]["snapshot_ids"]
        .as_array()
        .expect("snapshots");
    for snap in snapshots {
        assert!(
            evidence.iter().any(|e| e["id"] == *snap),
            "snapshot {snap} in {evidence:#?}"
        );
    }
    let failures: Vec<&str> = report["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(|f| f["step"].as_str())
        .collect();
    assert!(
        failures.contains(&"announce_start") && failures.contains(&"announce_end"),
        "{failures:?}"
    );

    let md = support::firebreak(&["report", "--case", &case]);
    assert_eq!(md.status.code(), Some(0), "{}", stderr(&md));
    assert!(stdout(&md).contains("```mermaid"), "{}", stdout(&md));
    let html = support::firebreak(&["report", "--case", &case, "--format", "html"]);
    assert!(stdout(&html).contains("<html"), "{}", stdout(&html));
    // The report is under custody, and the chain still verifies.
    let verify = support::firebreak(&["evidence", "verify", "--case", &case]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("incident-report"),
        "{}",
        stdout(&verify)
    );

    let none = support::firebreak(&["report", "--case", "fb-20000101-000000-00000000"]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
}
