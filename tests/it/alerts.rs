//! `firebreak alert`: events written from AWS's documented formats
//! (tests/fixtures/alerts, README there) pick exactly the expected
//! playbooks, or none with the reason; bad events exit 2 naming the fault.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{firebreak_offline, stderr, stdout};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alerts")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    match serde_json::from_str(&text).expect("expected.json is JSON") {
        Value::Object(m) => m,
        other => panic!("expected.json is {other}"),
    }
}

fn alert(file: &str, extra: &[&str]) -> std::process::Output {
    let path = fixtures().join(file);
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["alert", path, "--dry-run", "--output", "json"];
    args.extend_from_slice(extra);
    firebreak_offline(&args)
}

/// (playbook, instance) pairs of a JSON list of triggers.
fn pairs(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        t["playbook"].as_str().unwrap_or_default().to_string(),
                        t["instance"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn every_fixture_triggers_exactly_what_the_default_rules_say() {
    let cases = expected();
    assert_eq!(cases.len(), 18, "one expectation per fixture");
    for (file, want) in &cases {
        let out = alert(file, &[]);
        if let Some(needle) = want.get("error").and_then(Value::as_str) {
            assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(needle),
                "{file}: error should name {needle}: {}",
                stderr(&out)
            );
            assert!(
                stdout(&out).is_empty() || stdout(&out).contains("\"error\""),
                "{file}: no decision on a bad event"
            );
            continue;
        }
        assert_eq!(out.status.code(), Some(0), "{file}: {}", stderr(&out));
        let got: Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("{file}: {e}: {}", stdout(&out)));
        assert_eq!(
            pairs(&got["triggers"]),
            pairs(&want["triggers"]),
            "{file}: {}",
            stdout(&out)
        );
        if want["triggers"].as_array().is_some_and(Vec::is_empty) {
            let category = want["reason"].as_str().expect("a reason category");
            let reasons: Vec<&str> = got["skipped"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s["reason"].as_str()).collect())
                .unwrap_or_default();
            assert!(
                reasons.contains(&category),
                "{file}: reasons {reasons:?}, want {category}"
            );
            assert!(
                got["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{file}: says why in words"
            );
        }
        for skip in want
            .get("skipped")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let found = got["skipped"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["finding"] == skip["finding"] && s["reason"] == skip["reason"]);
            assert!(found, "{file}: expected skip {skip} in {}", got["skipped"]);
        }
    }
}

#[test]
fn a_finding_delivered_again_or_updated_gets_the_same_execution_name() {
    let name = |file: &str| -> Value {
        let out = alert(file, &[]);
        let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
        v["triggers"][0]["execution_name"].clone()
    };
    let first = name("01-guardduty-backdoor-ec2.json");
    assert!(
        first
            .as_str()
            .is_some_and(|n| n.starts_with("fb-ec2-compromise-i-0123456789abcdef0-")),
        "{first}"
    );
    assert_eq!(first, name("18-guardduty-updated.json"));
}

#[test]
fn rules_from_a_file_decide_and_their_errors_name_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("firebreak-alert-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"alarms\"\nsources = [\"aws.cloudwatch\"]\nplaybook = \"ec2-contain\"\napproval = true\n\n[[rule]]\nname = \"custom\"\nsources = [\"custom\"]\ntypes = [\"EDR:*\"]\nmin_severity = 8.5\nplaybook = \"ec2-contain\"\n",
    )
    .expect("write");
    let out = alert(
        "10-cloudwatch-alarm.json",
        &["--triggers", rules.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        pairs(&v["triggers"]),
        vec![("ec2-contain".to_string(), "i-0123456789abcdef4".to_string())]
    );
    assert_eq!(v["triggers"][0]["approval"], true, "{v}");

    std::fs::write(
        &rules,
        "[guard]\nmax_per_hour = 2\n\n[[rule]]\nname = \"typo\"\nplaybook = \"ec2-compromize\"\n",
    )
    .expect("write");
    let out = alert(
        "01-guardduty-backdoor-ec2.json",
        &["--triggers", rules.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("rules.toml:4: rule \"typo\", key `playbook`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_triggers_schema_and_the_default_rules_print() {
    let out = firebreak_offline(&["alert", "--triggers-schema"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let schema: Value = serde_json::from_str(&stdout(&out)).expect("schema is JSON");
    assert!(schema["properties"]["rule"].is_object(), "{schema}");
    let out = firebreak_offline(&["alert", "--show-triggers"]);
    assert!(
        stdout(&out).contains("min_severity = 7.0"),
        "{}",
        stdout(&out)
    );
}

/// A finding about a fresh decoy, written into fixture 01's shape.
fn finding_about(instance: &str, id: &str) -> PathBuf {
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("01-guardduty-backdoor-ec2.json"))
            .expect("fixture"),
    )
    .expect("JSON");
    event["detail"]["id"] = Value::String(id.into());
    event["detail"]["accountId"] = Value::String("123456789012".into());
    event["detail"]["region"] = Value::String(crate::support::REGION.into());
    event["detail"]["resource"]["instanceDetails"]["instanceId"] = Value::String(instance.into());
    let path =
        std::env::temp_dir().join(format!("firebreak-alert-{id}-{}.json", std::process::id()));
    std::fs::write(&path, event.to_string()).expect("write event");
    path
}

#[test]
fn sandbox_an_alert_contains_its_instance_once() {
    let decoy = crate::support::decoy();
    let instance = crate::support::s(&decoy, "instance_id");
    let event = finding_about(&instance, &format!("alert-once-{instance}"));
    let rules = std::env::temp_dir().join(format!(
        "firebreak-alert-contain-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"contain\"\nsources = [\"aws.guardduty\"]\nmin_severity = 7.0\nplaybook = \"ec2-contain\"\n",
    )
    .expect("rules");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "alert",
            event.to_str().expect("utf-8"),
            "--triggers",
            rules.to_str().expect("utf-8"),
            "--output",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        crate::support::firebreak(&refs)
    };
    let first = run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let out = stdout(&first);
    // respond's own summary comes first; the alert's answer is the last
    // JSON document.
    let answer: Value =
        serde_json::from_str(&out[out.rfind("{\n  \"alerts\"").expect("the answer")..])
            .expect("answer JSON");
    assert_eq!(answer["started"][0]["outcome"], "started", "{answer}");
    assert_eq!(answer["started"][0]["exit_code"], 0, "{answer}");

    // The instance is isolated: every interface on firebreak's group.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let groups = rt.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&crate::support::sdk_config().await);
        let d = ec2
            .describe_instances()
            .instance_ids(&instance)
            .send()
            .await
            .expect("describe");
        d.reservations()[0].instances()[0]
            .network_interfaces()
            .iter()
            .flat_map(|n| {
                n.groups()
                    .iter()
                    .filter_map(|g| g.group_name().map(str::to_string))
            })
            .collect::<Vec<_>>()
    });
    assert!(
        !groups.is_empty() && groups.iter().all(|g| g.starts_with("firebreak-isolation")),
        "{groups:?}"
    );

    // The same finding again starts nothing.
    let again = run(&[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let answer: Value = serde_json::from_str(&stdout(&again)).expect("only the answer");
    assert_eq!(
        answer["started"][0]["outcome"], "already-started",
        "{answer}"
    );
    let _ = std::fs::remove_file(&event);
    let _ = std::fs::remove_file(&rules);
}

#[test]
fn a_rule_whose_params_respond_refuses_starts_nothing() {
    // Two findings: the first rule's trigger is sound, the second rule's
    // params are not an option of respond. Nothing may start.
    let rules = std::env::temp_dir().join(format!(
        "firebreak-alert-params-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"crypto\"\ntypes = [\"CryptoCurrency:*\"]\nplaybook = \"ec2-contain\"\n\n[[rule]]\nname = \"typo\"\ntypes = [\"Recon:*\"]\nplaybook = \"ec2-contain\"\nparams = { allow-ssh-form = [\"203.0.113.0/24\"] }\n",
    )
    .expect("rules");
    let event = fixtures().join("04-guardduty-cli-export.json");
    let out = crate::support::firebreak(&[
        "alert",
        event.to_str().expect("utf-8"),
        "--triggers",
        rules.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rule typo: its params do not make a respond command"),
        "{}",
        stderr(&out)
    );
    let ledger = crate::support::state_dir().join("alerts/started.jsonl");
    let started = std::fs::read_to_string(&ledger).unwrap_or_default();
    assert!(
        !started.contains("i-0bbbbbbbbbbbbbbbb"),
        "the sound trigger started: {started}"
    );
    let _ = std::fs::remove_file(&rules);
}

#[test]
fn sandbox_rehearse_from_a_finding_checks_every_lever_on_a_fresh_decoy() {
    crate::support::evidence_bucket();
    let finding = fixtures().join("01-guardduty-backdoor-ec2.json");
    let out = crate::support::firebreak(&[
        "rehearse",
        "--alert",
        finding.to_str().expect("utf-8"),
        "--output",
        "json",
        "-q",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["alert"]["playbook"], "ec2-compromise", "{report:#}");
    let phases: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|s| s["phase"].as_str())
        .collect();
    assert_eq!(phases, ["alert", "contained", "released", "cleanup"]);
    // The decoy is not the finding's instance.
    assert_ne!(report["decoy"]["instance_id"], report["alert"]["instance"]);
}

#[test]
fn rehearse_from_a_finding_that_triggers_nothing_creates_nothing() {
    for (file, why) in [
        ("02-guardduty-low-severity.json", "triggers nothing"),
        ("14-malformed.json", "14-malformed.json"),
    ] {
        let out = crate::support::firebreak_offline(&[
            "rehearse",
            "--alert",
            fixtures().join(file).to_str().expect("utf-8"),
        ]);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{file}: {}", stderr(&out));
    }
}
