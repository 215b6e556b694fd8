//! `firebreak validate`: exit 2 naming the state for each kind of mistake,
//! exit 0 for everything `firebreak compile` produces.

use serde_json::{json, Value};

use crate::support::{firebreak_offline, stderr, stdout};

fn validate(def: &Value) -> (Option<i32>, String) {
    let dir = tempdir();
    let path = dir.join("def.json");
    std::fs::write(&path, serde_json::to_string_pretty(def).unwrap()).unwrap();
    let out = firebreak_offline(&["validate", path.to_str().unwrap()]);
    (out.status.code(), stderr(&out))
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("firebreak-it-{}", uuid_like()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

#[test]
fn each_kind_of_mistake_exits_2_and_names_the_state() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "Next to a missing state",
            json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}),
            "States.A: Next names \"Nowhere\"",
        ),
        (
            "unreachable state",
            json!({"StartAt": "A", "States": {"A": {"Type": "Succeed"}, "Orphan": {"Type": "Succeed"}}}),
            "States.Orphan: state \"Orphan\" is unreachable",
        ),
        (
            "States.ALL not alone",
            json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f", "End": true,
                "Retry": [{"ErrorEquals": ["States.ALL", "States.Timeout"]}]}}}),
            "States.T.Retry[0]: States.ALL must be alone",
        ),
        (
            "States.ALL not last",
            json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f", "End": true,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "S"}, {"ErrorEquals": ["X"], "Next": "S"}]}, "S": {"Type": "Succeed"}}}),
            "States.T.Catch[0]: the rule with States.ALL must be the last one",
        ),
        (
            "duplicate names across Parallel branches",
            json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
                {"StartAt": "Same", "States": {"Same": {"Type": "Succeed"}}},
                {"StartAt": "Same", "States": {"Same": {"Type": "Succeed"}}}]}}}),
            "States.P.Branches[1].States.Same: duplicate state name \"Same\"",
        ),
        (
            "malformed JSONPath",
            json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Parameters": {"x.$": "$.a[?(@.b =="}, "End": true}}}),
            "States.A: Parameters.x.$: invalid JSONPath",
        ),
        (
            "Choice without Choices",
            json!({"StartAt": "C", "States": {"C": {"Type": "Choice", "Default": "D"}, "D": {"Type": "Succeed"}}}),
            "States.C: a Choice state needs at least one rule",
        ),
    ];
    for (what, def, expected) in cases {
        let (code, err) = validate(&def);
        assert_eq!(code, Some(2), "GIVEN {what} THEN exit 2; stderr:\n{err}");
        assert!(
            err.contains(expected),
            "GIVEN {what} THEN the message names the state: want {expected:?} in:\n{err}"
        );
    }
}

#[test]
fn all_problems_of_one_file_are_reported_together() {
    let (code, err) = validate(&json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "Nowhere"},
        "B": {"Type": "Choice", "Choices": []},
        "C": {"Type": "Wait", "End": true}
    }}));
    assert_eq!(code, Some(2));
    for needle in [
        "States.A: Next names",
        "States.B: a Choice state needs",
        "States.C: needs one of Seconds",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
}

#[test]
fn everything_compile_produces_is_valid() {
    for playbook in firebreak_playbooks::BUILT_IN {
        let dir = tempdir();
        let path = dir.join(format!("{playbook}.json"));
        let out = firebreak_offline(&["compile", playbook, "-o", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let out = firebreak_offline(&["validate", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{playbook}: {}", stderr(&out));
        assert!(stdout(&out).contains("valid"));
    }
}

#[test]
fn unreadable_and_non_json_files_exit_2() {
    let dir = tempdir();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let out = firebreak_offline(&["validate", bad.to_str().unwrap(), "/nonexistent/x.json"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("not valid JSON"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}
