//! A case in a member account: the steps act through the member's
//! `firebreak-responder` role, assumed from the runner's credentials,
//! while the evidence stays in the runner's account. moto keeps accounts
//! apart by the assumed role's credentials, so the member's instance is
//! not even visible to the runner's own.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::{self, evidence_bucket, sandbox_url, stderr, stdout, REGION};

/// A member account of this test run (12 digits, not the sandbox's own).
fn member_account() -> String {
    format!("2{:011}", std::process::id())
}

/// Credentials of the member's firebreak-responder role, as the runner
/// would get them (the runner's own credentials are "test").
async fn member_credentials(account: &str) -> (String, String, String) {
    let home = support::sdk_config().await;
    let c = aws_sdk_sts::Client::new(&home)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/firebreak-responder"))
        .role_session_name("test-setup")
        .send()
        .await
        .expect("moto assumes the member role")
        .credentials
        .expect("credentials");
    (c.access_key_id, c.secret_access_key, c.session_token)
}

/// The firebreak binary as the member account (for making the decoy).
fn firebreak_as(creds: &(String, String, String), args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env("FIREBREAK_STATE_DIR", support::state_dir())
        .env("AWS_ENDPOINT_URL", sandbox_url())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", &creds.0)
        .env("AWS_SECRET_ACCESS_KEY", &creds.1)
        .env("AWS_SESSION_TOKEN", &creds.2)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the firebreak binary runs")
}

async fn member_ec2(creds: &(String, String, String)) -> aws_sdk_ec2::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(sandbox_url())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            &creds.0,
            &creds.1,
            Some(creds.2.clone()),
            None,
            "member",
        ))
        .load()
        .await;
    aws_sdk_ec2::Client::new(&config)
}

/// The groups of every interface of an instance, as its account sees them.
async fn interface_groups(ec2: &aws_sdk_ec2::Client, instance: &str) -> Vec<Vec<String>> {
    let out = ec2
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .expect("the member sees its instance");
    out.reservations()[0].instances()[0]
        .network_interfaces()
        .iter()
        .map(|n| {
            n.groups()
                .iter()
                .filter_map(|g| g.group_name().map(str::to_string))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_a_member_accounts_instance_is_contained_through_its_responder_role() {
    // GIVEN a decoy in a member account, which the runner's own
    // credentials cannot see
    let bucket = evidence_bucket();
    let account = member_account();
    let creds = member_credentials(&account).await;
    let out = firebreak_as(&creds, &["decoy", "create", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let decoy: Value = serde_json::from_slice(&out.stdout).unwrap();
    let instance = support::s(&decoy, "instance_id");
    let home = aws_sdk_ec2::Client::new(&support::sdk_config().await);
    assert!(
        home.describe_instances()
            .instance_ids(&instance)
            .send()
            .await
            .is_err(),
        "the runner's own account sees the member's instance"
    );

    // WHEN ec2-contain runs (the rendered definition, in the local
    // executor) on a case in the member account, with the runner's
    // credentials
    let case = serde_json::to_value(firebreak_steps::case::CaseFile {
        case: firebreak_steps::case::CaseInfo {
            case_id: format!("member-{}", std::process::id()),
            instance_id: instance.clone(),
            account_id: account.clone(),
            region: REGION.into(),
            opened_at: chrono::Utc::now(),
            actor: "arn:aws:iam::123456789012:role/firebreak-step-runner-us-east-1".into(),
            evidence_bucket: bucket.into(),
            evidence_lock: Default::default(),
        },
        options: Default::default(),
    })
    .unwrap();
    let definition = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("infra/statemachines/ec2-contain.asl.json");
    let out = support::firebreak(&[
        "run",
        definition.to_str().unwrap(),
        "--input",
        &case.to_string(),
        "--no-journal",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("run's JSON");
    let output = &result["output"];
    assert!(
        output["failures"].as_object().is_none_or(|f| f.is_empty()),
        "{output:#}"
    );

    // THEN the member's instance is isolated, as the member sees it
    let member = member_ec2(&creds).await;
    let groups = interface_groups(&member, &instance).await;
    assert!(!groups.is_empty());
    for g in &groups {
        assert!(
            g.iter().all(|n| n.starts_with("firebreak-isolation")),
            "{groups:?}"
        );
    }
    // AND its snapshots are in the member account
    let snaps = output["snapshots"]["snapshot_ids"].as_array().unwrap();
    assert!(!snaps.is_empty(), "{output:#}");
    let listed = member
        .describe_snapshots()
        .snapshot_ids(snaps[0].as_str().unwrap())
        .send()
        .await
        .expect("the member owns the snapshot");
    assert_eq!(listed.snapshots()[0].owner_id(), Some(account.as_str()));
    // AND the instance's record is evidence in the runner's bucket
    let record = output["instance_state"]["location"].as_str().unwrap_or("");
    assert!(record.starts_with(&format!("s3://{bucket}/")), "{output:#}");
}

#[tokio::test]
async fn sandbox_the_step_runner_acts_in_the_account_the_payload_names() {
    // GIVEN the step runner with the sandbox account's credentials, and a
    // decoy in a member account
    evidence_bucket();
    let account = member_account();
    let creds = member_credentials(&account).await;
    let out = firebreak_as(&creds, &["decoy", "create", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let instance = support::s(&serde_json::from_slice(&out.stdout).unwrap(), "instance_id");
    let runner = firebreak_lambdas::step_runner::Runner::new(&support::sdk_config().await)
        .await
        .expect("the runner starts");
    let isolate = |account: Option<&str>| {
        let mut p = json!({
            "step": "isolate_network",
            "input": {"case_id": "member-runner", "instance_id": instance, "exemptions": []}
        });
        if let Some(a) = account {
            p["account"] = json!(a);
        }
        p
    };

    // WHEN a payload names no account, the runner looks in its own: no
    // such instance there
    let err = runner.handle(isolate(None)).await.unwrap_err();
    assert_eq!(err.error_type, "Firebreak.InstanceNotFound", "{err:?}");

    // WHEN it names the member's, the runner acts through the member's
    // role and isolates the instance
    let out = runner
        .handle(isolate(Some(&account)))
        .await
        .expect("isolated");
    assert!(
        out["interfaces"].as_array().is_some_and(|i| !i.is_empty()),
        "{out}"
    );
    let groups = interface_groups(&member_ec2(&creds).await, &instance).await;
    assert!(
        groups
            .iter()
            .all(|g| g.iter().all(|n| n.starts_with("firebreak-isolation"))),
        "{groups:?}"
    );

    // AND a payload with something that is not an account id is refused
    let err = runner.handle(isolate(Some("12345"))).await.unwrap_err();
    assert_eq!(err.error_type, "Firebreak.InvalidInput", "{err:?}");
}
