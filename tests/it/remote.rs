//! Several instances in one `respond`, `respond --remote` in Step
//! Functions, and `firebreak status` for both kinds of run.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::support::{self, s, stderr, stdout, EnforcingMoto, REGION};

const STEP_RUNNER: &str = "arn:aws:lambda:us-east-1:123456789012:function:firebreak-step-runner";

#[test]
fn sandbox_two_instances_are_contained_concurrently_with_one_summary() {
    let a = support::decoy();
    let b = support::decoy();
    let (ia, ib) = (s(&a, "instance_id"), s(&b, "instance_id"));
    let out = support::firebreak(&[
        "respond",
        "--instance",
        &ia,
        "--instance",
        &ib,
        "--output",
        "json",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one summary");
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for (run, id) in runs.iter().zip([&ia, &ib]) {
        assert_eq!(run["instance_id"], id.as_str(), "in the order given");
        assert_eq!(run["containment"], "complete", "{run}");
    }
    assert_ne!(runs[0]["case_id"], runs[1]["case_id"], "one case each");
    // Concurrently: the second started before the first ended.
    let line = |needle: &str| {
        err.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{err}"))
    };
    // Each started before the other ended.
    assert!(
        line(&format!("{ib}] -> RecordInstanceState")) < line(&format!("{ia}] ok AnnounceEnd"))
            && line(&format!("{ia}] -> RecordInstanceState"))
                < line(&format!("{ib}] ok AnnounceEnd")),
        "the runs did not overlap:\n{err}"
    );

    // `status` reads a local run from its journal.
    let name = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("execution ")?.split(' ').next())
        .expect("an execution name")
        .to_string();
    let st = support::firebreak(&["status", &name, "--output", "json"]);
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    let st: Value = serde_json::from_slice(&st.stdout).expect("status JSON");
    assert_eq!(st["status"], "SUCCEEDED", "{st}");
    assert_eq!(st["where"], "local");
    assert_eq!(st["state"], "AnnounceEnd", "{st}");
}

#[test]
fn several_instances_are_checked_before_any_starts() {
    let out = support::firebreak_offline(&[
        "respond",
        "--instance",
        "i-0123456789abcdef0",
        "--instance",
        "i-nothex",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = support::firebreak_offline(&[
        "respond",
        "--instance",
        "i-0123456789abcdef0",
        "--instance",
        "i-0123456789abcdef0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("given twice"), "{}", stderr(&out));
    let out = support::firebreak_offline(&["status", "no-such-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The CLI against a moto server of the test's own.
fn firebreak_at(url: &str, state: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env("FIREBREAK_STATE_DIR", state)
        .env("AWS_ENDPOINT_URL", url)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the firebreak binary runs")
}

/// The step runner's answers in moto, in the order ec2-contain calls it:
/// moto runs no firebreak step, it answers each Lambda invocation from
/// this queue (so the instance is not contained there: what is tested is
/// that the execution is started and followed to its end).
fn canned(instance: &str) -> Vec<Value> {
    vec![
        json!({"webhook": false, "dry_run": false}),
        json!({"record": {"record": {
            "instance_id": instance, "account_id": "123456789012", "region": REGION,
            "captured_at": "2026-12-06T10:00:00Z", "state": "running", "instance_type": "t3.micro",
            "image_id": "ami-1", "vpc_id": "vpc-1", "subnet_id": "subnet-1",
            "launch_time": "2026-12-06T09:00:00Z", "network_interfaces": [], "volumes": [],
            "instance_profile": null, "disable_api_termination": false, "disable_api_stop": false,
            "shutdown_behavior": "stop", "elastic_ips": [], "auto_scaling": null,
            "target_groups": [], "classic_load_balancers": [], "tags": {}, "console_output": null
        }, "digest": {"sha256": "00", "size": 2}}, "location": null, "reused": false}),
        json!({"termination_protection": true, "shutdown_behavior": "stop", "volumes": [], "changed": true, "dry_run": false}),
        json!({"group_name": null, "mode": "standby", "lifecycle_state_before": null, "lifecycle_state_after": null, "protected_from_scale_in": false, "changed": false, "dry_run": false}),
        json!({"disassociated": [], "changed": false, "dry_run": false}),
        json!({"deregistered": [], "changed": false, "dry_run": false}),
        json!({"instance_id": instance, "exemptions": [], "groups": [], "interfaces": [], "changed": true, "dry_run": false}),
        json!({"instance_id": instance, "addresses": [], "entries": [], "skipped": [], "warnings": [], "record_location": null, "changed": false, "dry_run": false}),
        json!({"instance_profile_arn": null, "roles": [], "token_issue_cutoff": null, "disassociated_association_id": null, "changed": false, "dry_run": false}),
        json!({"instance_id": instance, "exemptions": [], "groups": [], "interfaces": [], "changed": false, "dry_run": false}),
        json!({"tags": {"firebreak:case": "remote"}, "changed": true}),
        json!({"instance_id": instance, "snapshots": [], "snapshot_ids": ["snap-1"], "created_snapshot_ids": ["snap-1"], "dry_run": false}),
        json!({"all_completed": true, "completed": 1, "total": 1, "snapshots": []}),
        json!({"webhook": false, "dry_run": false}),
    ]
}

#[tokio::test]
async fn sandbox_respond_remote_starts_and_follows_the_deployed_state_machine() {
    // A moto of its own that runs executions: its Lambda answers come from
    // a queue shared by everything in that server.
    let moto = EnforcingMoto::start(u32::MAX);
    support::moto_api(
        &moto.url,
        "config",
        &json!({"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}),
    );
    let state = std::env::temp_dir().join(format!("firebreak-it-remote-{}", std::process::id()));
    let run = |args: &[&str]| firebreak_at(&moto.url, &state, args);
    assert_eq!(run(&["setup"]).status.code(), Some(0));
    let decoy = run(&["decoy", "create", "--output", "json"]);
    assert_eq!(decoy.status.code(), Some(0), "{}", stderr(&decoy));
    let decoy: Value = serde_json::from_slice(&decoy.stdout).expect("decoy JSON");
    let instance = s(&decoy, "instance_id");

    // Without a deployed state machine, the error says what to do.
    let none = run(&["respond", "--remote", "--instance", &instance]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(
        stderr(&none).contains("firebreak:playbook=ec2-contain"),
        "{}",
        stderr(&none)
    );

    // Deployed as the stack does: the step runner substituted, tagged.
    let compiled =
        support::firebreak_offline(&["compile", "ec2-contain", "--step-runner-arn", STEP_RUNNER]);
    assert_eq!(compiled.status.code(), Some(0), "{}", stderr(&compiled));
    let config = crate::support::config_at(&moto.url, REGION, ("test", "test")).await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    sfn.create_state_machine()
        .name("firebreak-ec2-contain")
        .definition(stdout(&compiled))
        .role_arn("arn:aws:iam::123456789012:role/firebreak-states")
        .tags(
            aws_sdk_sfn::types::Tag::builder()
                .key("firebreak:playbook")
                .value("ec2-contain")
                .build(),
        )
        .send()
        .await
        .expect("moto accepts the compiled ec2-contain");
    support::queue_lambda_results(&moto.url, &canned(&instance));

    let out = run(&[
        "respond",
        "--remote",
        "--instance",
        &instance,
        "--output",
        "json",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", stdout(&out));
    // Followed live, with the local progress lines.
    for line in ["-> AnnounceStart", "ok IsolateNetwork", "ok AnnounceEnd"] {
        assert!(err.contains(line), "no {line:?} in:\n{err}");
    }
    let report: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(report["containment"], "complete", "{report}");
    assert_eq!(report["instance_id"], instance.as_str());

    // `status` reads it from Step Functions.
    let arn = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("execution arn:"))
        .map(|rest| format!("arn:{rest}"))
        .expect("the execution ARN is said");
    let st = run(&["status", &arn, "--output", "json"]);
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    let st: Value = serde_json::from_slice(&st.stdout).expect("status JSON");
    assert_eq!(st["status"], "SUCCEEDED", "{st}");
    assert_eq!(st["where"], "step-functions");

    // `alert --remote`: the finding's trigger runs in the state machine,
    // under the trigger's execution name.
    support::queue_lambda_results(&moto.url, &canned(&instance));
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/alerts/01-guardduty-backdoor-ec2.json"),
        )
        .expect("fixture"),
    )
    .expect("JSON");
    event["detail"]["region"] = Value::String(REGION.into());
    event["detail"]["resource"]["instanceDetails"]["instanceId"] = Value::String(instance.clone());
    let finding = state.join("finding.json");
    let rules = state.join("rules.toml");
    std::fs::write(&finding, event.to_string()).expect("finding");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"contain\"\nsources = [\"aws.guardduty\"]\nmin_severity = 7.0\nplaybook = \"ec2-contain\"\n",
    )
    .expect("rules");
    let args = [
        "alert",
        finding.to_str().expect("utf-8"),
        "--triggers",
        rules.to_str().expect("utf-8"),
        "--remote",
        "--output",
        "json",
    ];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let answer: Value =
        serde_json::from_str(&text[text.rfind("{\n  \"alerts\"").expect("the answer")..])
            .expect("answer JSON");
    assert_eq!(answer["started"][0]["outcome"], "started", "{answer}");
    assert_eq!(answer["started"][0]["exit_code"], 0, "{answer}");
    let name = answer["started"][0]["execution_name"]
        .as_str()
        .expect("execution name")
        .to_string();
    // From another machine (no local ledger), the same finding follows
    // that execution: Step Functions refuses a second one of the name.
    let elsewhere = state.join("elsewhere");
    let again = firebreak_at(&moto.url, &elsewhere, &args);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("was started before; following it"),
        "{}",
        stderr(&again)
    );
    let machine = sfn
        .list_state_machines()
        .send()
        .await
        .expect("list")
        .state_machines()[0]
        .state_machine_arn()
        .to_string();
    let named: Vec<String> = sfn
        .list_executions()
        .state_machine_arn(machine)
        .send()
        .await
        .expect("executions")
        .executions()
        .iter()
        .map(|e| e.name().to_string())
        .filter(|n| *n == name)
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test]
async fn sandbox_rehearse_remote_runs_the_deployed_state_machines() {
    // GIVEN ec2-contain and ec2-release deployed (tagged) in a moto of
    // its own that runs executions
    let moto = EnforcingMoto::start(u32::MAX);
    support::moto_api(
        &moto.url,
        "config",
        &json!({"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}),
    );
    let state = std::env::temp_dir().join(format!("firebreak-it-rehearse-{}", std::process::id()));
    let run = |args: &[&str]| firebreak_at(&moto.url, &state, args);
    assert_eq!(run(&["setup"]).status.code(), Some(0));
    let sfn =
        aws_sdk_sfn::Client::new(&support::config_at(&moto.url, REGION, ("test", "test")).await);
    let mut machines = Vec::new();
    for playbook in ["ec2-contain", "ec2-release"] {
        let compiled =
            support::firebreak_offline(&["compile", playbook, "--step-runner-arn", STEP_RUNNER]);
        assert_eq!(compiled.status.code(), Some(0), "{}", stderr(&compiled));
        let arn = sfn
            .create_state_machine()
            .name(format!("firebreak-{playbook}"))
            .definition(stdout(&compiled))
            .role_arn("arn:aws:iam::123456789012:role/firebreak-states")
            .tags(
                aws_sdk_sfn::types::Tag::builder()
                    .key("firebreak:playbook")
                    .value(playbook)
                    .build(),
            )
            .send()
            .await
            .expect("moto accepts the compiled playbook")
            .state_machine_arn()
            .to_string();
        machines.push((playbook, arn));
    }

    // WHEN the deployment is rehearsed
    let out = run(&["rehearse", "--remote", "--output", "json", "-q"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    let case = s(&report, "case_id");

    // THEN each playbook ran as an execution of its deployed state
    // machine, named after the case, and was followed to its end
    for (playbook, arn) in &machines {
        let names: Vec<String> = sfn
            .list_executions()
            .state_machine_arn(arn)
            .send()
            .await
            .unwrap()
            .executions()
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        assert_eq!(names, [format!("{case}-{playbook}")], "{report:#}");
    }
    assert_eq!(report["contain"]["playbook"], "ec2-contain", "{report:#}");
    assert_eq!(report["release"]["playbook"], "ec2-release", "{report:#}");
    assert!(
        report["contain"]["execution"]["status"].is_string(),
        "{report:#}"
    );
    // AND, since the sandbox's Step Functions runs no firebreak step (its
    // Lambda echoes each task's input), the decoy was not contained: the
    // rehearsal says so and fails, and the decoy is deleted
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(report["passed"], false);
    let contained = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["phase"] == "contained")
        .expect("the contained checks");
    assert!(
        contained["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["passed"] == false),
        "{contained:#}"
    );
    let cleanup = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["phase"] == "cleanup")
        .expect("cleanup");
    assert_eq!(cleanup["checks"][0]["passed"], true, "{cleanup:#}");
}
