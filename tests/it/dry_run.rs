//! `firebreak respond --dry-run` changes nothing and reports a verdict for
//! every planned call.

use serde_json::Value;

use crate::support::{decoy, firebreak, s, sdk_config, stderr, world};

#[tokio::test]
async fn sandbox_dry_run_changes_nothing_and_lists_verdicts() {
    // GIVEN a decoy
    let d = decoy();
    let instance = s(&d, "instance_id");
    let config = sdk_config().await;
    let before = world(&config, &d, "it-dry-1").await;

    // WHEN responding with --dry-run
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-dry-1",
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();

    // THEN the sandbox is unchanged
    let after = world(&config, &d, "it-dry-1").await;
    assert_eq!(before, after, "the dry run changed the sandbox");

    // AND every planned change carries a verdict, step by step in the
    // playbook's order: EC2 calls were sent with DryRun and would be
    // allowed; calls without a dry run name the permission they need
    let calls = plan["calls"].as_array().unwrap();
    let mutations: Vec<&Value> = calls.iter().filter(|c| c["mutating"] == true).collect();
    let mut steps: Vec<&str> = mutations
        .iter()
        .map(|c| c["step"].as_str().unwrap())
        .collect();
    steps.dedup();
    assert_eq!(
        steps,
        [
            "record_instance_state",
            "protect_instance",
            "detach_from_autoscaling",
            "disassociate_elastic_ips",
            "deregister_from_target_groups",
            "isolate_network",
            "cut_network_acls",
            "revoke_instance_credentials",
            // the second look before tagging plans the same moves again
            "isolate_network",
            "tag_instance",
            "snapshot_volumes"
        ]
    );
    for c in &mutations {
        let action = c["action"].as_str().unwrap();
        let verdict = c["verdict"].as_str().unwrap();
        if verdict == "not_checked" {
            let why = c["detail"].as_str().unwrap();
            assert!(
                why.contains("needs")
                    || why.contains("does not exist yet")
                    || why.contains("in use until"),
                "{action}: not checked without saying why: {why}"
            );
        } else {
            assert_eq!(verdict, "allowed", "{action}: {c}");
            assert!(
                action.starts_with("ec2:"),
                "{action} claims a DryRun verdict"
            );
        }
    }
    for action in [
        "ec2:ModifyInstanceAttribute",
        "ec2:CreateSecurityGroup",
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:DisassociateAddress",
        "ec2:CreateTags",
        "ec2:CreateSnapshots",
    ] {
        assert!(
            mutations
                .iter()
                .any(|c| c["action"] == action && c["verdict"] == "allowed"),
            "{action} has no DryRun verdict"
        );
    }
    for action in [
        "s3:PutObject",
        "autoscaling:EnterStandby",
        "elasticloadbalancing:DeregisterTargets",
        "iam:CreatePolicyVersion",
        "ec2:DisassociateIamInstanceProfile",
    ] {
        assert!(
            mutations
                .iter()
                .any(|c| c["action"] == action && c["verdict"] == "not_checked"),
            "{action} is not in the plan"
        );
    }
    assert_eq!(plan["containment"], "plan_allowed");
    assert_eq!(plan["mode"], "dry_run");
}
