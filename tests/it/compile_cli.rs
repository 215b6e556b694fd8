//! `firebreak compile`: the generated definition and IAM policy
//! (snapshots), and the step-runner substitution.

use serde_json::Value;

use crate::support::{firebreak_offline, stderr, stdout};

#[test]
fn compiled_ec2_contain_definition_and_policy() {
    // GIVEN the built-in ec2-contain playbook
    let dir = std::env::temp_dir().join(format!("firebreak-compile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    // WHEN compiled with its policy
    let out = firebreak_offline(&[
        "compile",
        "ec2-contain",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let def: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let policy: Value = serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    // THEN they are exactly the reviewed ones
    insta::assert_json_snapshot!("ec2_contain_definition", def);
    insta::assert_json_snapshot!("ec2_contain_policy", policy);
}

#[test]
fn step_runner_arn_is_substituted_everywhere() {
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:firebreak-step-runner";
    let out = firebreak_offline(&["compile", "ec2-contain", "--step-runner-arn", arn]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(!text.contains("${StepRunnerArn}"));
    assert!(text.contains(arn));
    let bad = firebreak_offline(&["compile", "ec2-contain", "--step-runner-arn", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    let unknown = firebreak_offline(&["compile", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("no playbook named"));
}
