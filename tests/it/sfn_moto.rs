//! The compiled playbook runs in moto's Step Functions: the AWS-side
//! control flow (Task -> Choice -> poll loop) executes to the end. Lambda
//! tasks there do not run firebreak's steps: moto answers them from a
//! queue of canned results, one per invocation, in order.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{firebreak_offline, sandbox_url, sdk_config, stderr, stdout};

const STEP_RUNNER: &str = "arn:aws:lambda:us-east-1:123456789012:function:firebreak-step-runner";
/// The execution waits 15 s once in the poll loop; 600 x 100 ms bounds the
/// wait without making a slow machine fail.
const POLL_TRIES: u32 = 600;

fn queue_lambda_results(results: &[Value]) {
    crate::support::queue_lambda_results(&sandbox_url(), results);
}

#[tokio::test]
async fn sandbox_compiled_playbook_runs_in_moto_step_functions() {
    // GIVEN ec2-contain compiled with the step-runner ARN substituted
    let out = firebreak_offline(&["compile", "ec2-contain", "--step-runner-arn", STEP_RUNNER]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let definition = stdout(&out);
    let sfn = aws_sdk_sfn::Client::new(&sdk_config().await);
    let machine = sfn
        .create_state_machine()
        .name(format!("firebreak-ec2-contain-{}", std::process::id()))
        .definition(&definition)
        .role_arn("arn:aws:iam::123456789012:role/firebreak-states")
        .send()
        .await
        .expect("moto accepts the definition");

    // AND the step-runner's answers, in the order the playbook calls it;
    // the first snapshot check says "not yet", so the poll loop waits once
    // (15 s of real time in moto) and counts a second attempt
    queue_lambda_results(&[
        json!({"webhook": false, "dry_run": false}),
        json!({"record": {"record": {"instance_id": "i-0abc1234"}, "digest": {"sha256": "00", "size": 2}}, "location": null, "reused": false}),
        json!({"termination_protection": true, "shutdown_behavior": "stop", "volumes": [], "changed": true, "dry_run": false}),
        json!({"group_name": null, "mode": "standby", "lifecycle_state_before": null, "lifecycle_state_after": null, "protected_from_scale_in": false, "changed": false, "dry_run": false}),
        json!({"disassociated": [], "changed": false, "dry_run": false}),
        json!({"deregistered": [], "changed": false, "dry_run": false}),
        json!({"instance_id": "i-0abc1234", "exemptions": [], "groups": [], "interfaces": [], "changed": true, "dry_run": false}),
        json!({"instance_id": "i-0abc1234", "addresses": [], "entries": [], "skipped": [], "warnings": [], "record_location": null, "changed": false, "dry_run": false}),
        json!({"instance_profile_arn": null, "roles": [], "token_issue_cutoff": null, "disassociated_association_id": null, "changed": false, "dry_run": false}),
        json!({"instance_id": "i-0abc1234", "exemptions": [], "groups": [], "interfaces": [], "changed": false, "dry_run": false}),
        json!({"tags": {"firebreak:case": "it-sfn"}, "changed": true}),
        json!({"instance_id": "i-0abc1234", "snapshots": [], "snapshot_ids": ["snap-1"], "created_snapshot_ids": ["snap-1"], "dry_run": false}),
        json!({"all_completed": false, "completed": 0, "total": 1, "snapshots": []}),
        json!({"all_completed": true, "completed": 1, "total": 1, "snapshots": []}),
        json!({"webhook": false, "dry_run": false}),
    ]);

    // WHEN an execution starts with a case file
    let input = json!({
        "case": {
            "case_id": "it-sfn", "instance_id": "i-0abc1234", "account_id": "123456789012",
            "region": "us-east-1", "opened_at": "2026-01-01T00:00:00Z", "actor": "arn:aws:iam::123456789012:user/it",
            "evidence_bucket": "firebreak-evidence-123456789012-us-east-1",
            "evidence_lock": {"legal_hold": true}
        },
        "options": {"asg_mode": "standby", "isolation_exemptions": [], "credential_deny": "auto", "hash_snapshots": false}
    });
    let exec = sfn
        .start_execution()
        .state_machine_arn(machine.state_machine_arn())
        .name(format!("it-sfn-{}", std::process::id()))
        .input(input.to_string())
        .send()
        .await
        .unwrap();
    let mut described = None;
    for _ in 0..POLL_TRIES {
        let d = sfn
            .describe_execution()
            .execution_arn(exec.execution_arn())
            .send()
            .await
            .unwrap();
        if d.status().as_str() != "RUNNING" {
            described = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = described.expect("the execution finished");

    // THEN it succeeds, having gone through every task and the poll loop
    assert_eq!(
        d.status().as_str(),
        "SUCCEEDED",
        "error {:?} cause {:?}",
        d.error(),
        d.cause()
    );
    let output: Value = serde_json::from_str(d.output().unwrap()).unwrap();
    assert_eq!(
        output["snapshot_progress"]["all_completed"], true,
        "{output:#}"
    );
    // The poll loop ran twice: its counter went through States.MathAdd.
    assert_eq!(output["polls"]["snapshot_progress"]["attempts"], 2);
    assert_eq!(output["tags"]["tags"]["firebreak:case"], "it-sfn");
    let history = sfn
        .get_execution_history()
        .execution_arn(exec.execution_arn())
        .send()
        .await
        .unwrap();
    let entered: Vec<String> = history
        .events()
        .iter()
        .filter(|e| e.r#type().as_str() == "TaskStateEntered")
        .filter_map(|e| {
            e.state_entered_event_details()
                .map(|d| d.name().to_string())
        })
        .collect();
    assert_eq!(
        entered,
        [
            "AnnounceStart",
            "RecordInstanceState",
            "ProtectInstance",
            "DetachFromAutoScaling",
            "DisassociateElasticIps",
            "DeregisterFromTargetGroups",
            "IsolateNetwork",
            "CutNetworkAcls",
            "RevokeInstanceCredentials",
            "IsolateLateInterfaces",
            "TagContained",
            "SnapshotVolumes",
            "CheckSnapshots",
            "CheckSnapshots",
            "AnnounceEnd"
        ]
    );
}
