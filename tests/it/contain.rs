//! Containment on a decoy with every lever (2 interfaces, IPv6, an EIP, an
//! instance profile whose role a second instance shares, an Auto Scaling
//! group, a target group): idempotency of each step, the contained state
//! read back, release to the recorded state, failure injection, rehearse.

use chrono::{DateTime, Utc};
use firebreak_forensics::instance_state::restorable_differences;
use firebreak_playbooks::report::Containment;
use firebreak_steps::containment::ec2::read_live_state;
use firebreak_steps::ids::InstanceId;
use firebreak_steps::sandbox::decoy::Decoy;
use firebreak_steps::{AwsClients, Registry};
use firebreak_workflows::step::StepPayload;
use serde_json::{json, Value};

use crate::faults::{
    case_file, contain_counting_faults, contain_with_fault, context, interface_group_names,
    inventory, isolated, step_input, Calls, Fault,
};
use crate::support::{
    aws_state, decoy, evidence_bucket, firebreak, s, sdk_config, stderr, stdout, world,
};

#[tokio::test]
async fn sandbox_every_step_run_three_times_changes_nothing_the_third_time() {
    // GIVEN a decoy with every lever and a case
    let d = decoy();
    let config = sdk_config().await;
    let ctx = context(AwsClients::new(&config));
    let registry = Registry::standard();
    let case = case_file(&d, "it-thrice");
    let mut snapshot_ids: Vec<String> = Vec::new();
    for step in [
        "record_instance_state",
        "protect_instance",
        "isolate_network",
        "disassociate_elastic_ips",
        "detach_from_autoscaling",
        "deregister_from_target_groups",
        "revoke_instance_credentials",
        "tag_instance",
        "snapshot_volumes",
        "await_snapshots",
        "release_instance",
    ] {
        // WHEN the step runs three times in a row
        let mut outputs = Vec::new();
        let mut worlds = Vec::new();
        for _ in 0..3 {
            let payload = StepPayload {
                step: step.into(),
                input: step_input(step, &case, &snapshot_ids),
                account: None,
            };
            let out = registry
                .dispatch(&ctx, payload)
                .await
                .unwrap_or_else(|e| panic!("{step} failed: {e}"));
            worlds.push(world(&config, &d, "it-thrice").await);
            outputs.push(out);
        }
        if step == "snapshot_volumes" {
            snapshot_ids = serde_json::from_value(outputs[0]["snapshot_ids"].clone()).unwrap();
        }
        // THEN the third run changes nothing and creates nothing new
        assert_eq!(
            worlds[1], worlds[2],
            "GIVEN {step} run twice WHEN run a third time THEN nothing changes"
        );
        if let Some(changed) = outputs[2].get("changed") {
            assert_eq!(
                changed,
                &json!(false),
                "{step}: the third run reports a change: {}",
                outputs[2]
            );
        }
        if step == "snapshot_volumes" {
            assert_eq!(outputs[2]["created_snapshot_ids"], json!([]), "{step}");
        }
        if step == "record_instance_state" {
            assert_eq!(outputs[2]["reused"], json!(true));
            assert_eq!(
                outputs[0]["record"]["digest"],
                outputs[2]["record"]["digest"]
            );
        }
    }
}

#[tokio::test]
async fn sandbox_contain_puts_every_lever_in_its_contained_state() {
    // GIVEN a decoy with every lever
    let d = decoy();
    let decoy_typed: Decoy = serde_json::from_value(d.clone()).unwrap();
    let config = sdk_config().await;
    let ctx = context(AwsClients::new(&config));
    let before = Utc::now();

    // WHEN ec2-contain runs
    let out = firebreak(&[
        "respond",
        "--instance",
        &s(&d, "instance_id"),
        "--case",
        "it-levers",
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );

    // THEN every lever reads back contained
    let checks = firebreak_steps::sandbox::rehearsal::contained(
        &ctx,
        &decoy_typed,
        "it-levers",
        evidence_bucket(),
        before,
    )
    .await
    .unwrap();
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(checks.len() >= 13);

    // AND the shared role carries firebreak's managed deny policy, whose
    // only statement names this instance (not the second one sharing the
    // role) with a cut-off padded a few minutes past containment; no
    // inline policy is added
    let iam = aws_sdk_iam::Client::new(&config);
    let role = s(&d, "role_name");
    let attached = iam
        .list_attached_role_policies()
        .role_name(&role)
        .send()
        .await
        .unwrap();
    let arns: Vec<&str> = attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .collect();
    assert_eq!(
        arns,
        [format!(
            "arn:aws:iam::123456789012:policy/firebreak/firebreak-deny-sessions-{role}"
        )]
    );
    let policy = iam.get_policy().policy_arn(arns[0]).send().await.unwrap();
    let version = iam
        .get_policy_version()
        .policy_arn(arns[0])
        .version_id(policy.policy().unwrap().default_version_id().unwrap())
        .send()
        .await
        .unwrap();
    let doc = firebreak_steps::containment::iam::decode_policy(
        version.policy_version().unwrap().document().unwrap(),
    )
    .unwrap();
    let statements = doc["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{doc:#}");
    let stmt = &statements[0];
    assert_eq!(stmt["Effect"], "Deny");
    assert_eq!(stmt["Action"], "*");
    assert_eq!(stmt["Resource"], "*");
    assert_eq!(
        stmt["Condition"]["StringLike"],
        json!({"ec2:SourceInstanceARN": [format!("*/{}", s(&d, "instance_id"))]})
    );
    let cutoff: DateTime<Utc> = stmt["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pad = firebreak_steps::containment::iam::denies::CUTOFF_PAD;
    let quantum = chrono::Duration::seconds(
        firebreak_steps::containment::iam::denies::CUTOFF_QUANTUM_SECONDS,
    );
    assert!(
        cutoff >= before + pad - chrono::Duration::seconds(1)
            && cutoff <= Utc::now() + pad + quantum,
        "{cutoff}"
    );
    let inline = iam
        .list_role_policies()
        .role_name(&role)
        .send()
        .await
        .unwrap();
    assert!(inline.policy_names().is_empty(), "{inline:?}");
    assert!(!doc.to_string().contains(&s(&d, "second_instance_id")));
}

#[tokio::test]
async fn sandbox_release_restores_the_recorded_state() {
    // GIVEN a decoy with two interfaces in two subnets, an Elastic IP, an
    // instance and an IP target group, a Classic Load Balancer, and an
    // Auto Scaling group at its minimum; its whole state read from AWS
    let d = decoy();
    let config = sdk_config().await;
    let ctx = context(AwsClients::new(&config));
    let id: InstanceId = s(&d, "instance_id").parse().unwrap();
    let asg = aws_sdk_autoscaling::Client::new(&config);
    let group = s(&d, "auto_scaling_group");
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .min_size(1)
        .send()
        .await
        .unwrap();
    let before = read_live_state(&ctx, &ctx.log("test"), &id).await.unwrap();
    let world_before = aws_state(&config, &d).await;

    // WHEN contained, then released
    let out = firebreak(&[
        "respond",
        "--instance",
        id.as_str(),
        "--case",
        "it-release",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let contained = aws_state(&config, &d).await;
    assert_ne!(
        contained["network_acl_entries"],
        world_before["network_acl_entries"]
    );
    assert_ne!(contained["target_groups"], world_before["target_groups"]);
    assert_ne!(
        contained["classic_load_balancer"],
        world_before["classic_load_balancer"]
    );
    assert_eq!(contained["auto_scaling"]["min"], 0, "{contained:#}");
    let out = firebreak(&[
        "release",
        "--instance",
        id.as_str(),
        "--case",
        "it-release",
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );

    // THEN everything read from AWS is as before (ACL entries, target
    // groups, the Classic Load Balancer, the group's sizes and tags
    // included), but for the deny on stolen sessions, kept until they can
    // have expired (the summary says until when)
    let after = aws_state(&config, &d).await;
    let mut expected = world_before.clone();
    expected["role"]["attached"] = after["role"]["attached"].clone();
    assert_eq!(after, expected);
    assert_eq!(after["role"]["attached"].as_array().unwrap().len(), 1);
    let released: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        released["release"]["credential_deny_kept_until"].is_string(),
        "{released:#}"
    );
    let live = read_live_state(&ctx, &ctx.log("test"), &id).await.unwrap();
    assert_eq!(
        live.tags.get("firebreak:status").map(String::as_str),
        Some("released")
    );
    // AND releasing again with --remove-credential-deny removes it (the
    // policy is deleted, as it denies nothing else), and the whole state is
    // then exactly as before
    let out = firebreak(&[
        "release",
        "--instance",
        id.as_str(),
        "--case",
        "it-release",
        "--remove-credential-deny",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(aws_state(&config, &d).await, world_before);
    let iam = aws_sdk_iam::Client::new(&config);
    let gone = iam
        .get_policy()
        .policy_arn(format!(
            "arn:aws:iam::123456789012:policy/firebreak/firebreak-deny-sessions-{}",
            s(&d, "role_name")
        ))
        .send()
        .await;
    assert!(gone.is_err(), "{gone:?}");
    assert!(restorable_differences(
        &before,
        &read_live_state(&ctx, &ctx.log("test"), &id).await.unwrap()
    )
    .is_empty());
    // AND a later respond on the released instance opens a new case
    let again = firebreak(&[
        "respond",
        "--instance",
        id.as_str(),
        "--output",
        "json",
        "-q",
    ]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_ne!(again["case_id"], "it-release");
}

const STEPS: [&str; 11] = [
    "record_instance_state",
    "protect_instance",
    "detach_from_autoscaling",
    "disassociate_elastic_ips",
    "deregister_from_target_groups",
    "isolate_network",
    "cut_network_acls",
    "revoke_instance_credentials",
    "tag_instance",
    "snapshot_volumes",
    "await_snapshots",
];

#[tokio::test]
async fn sandbox_transient_faults_in_each_step_are_retried_isolation_happens_and_faults_are_reported(
) {
    for step in STEPS {
        // GIVEN AWS answers the step's first 2 calls with 503 (after
        // doing the work)
        let (d, report) = contain_with_fault(step, Fault::first(2, 503)).await;
        // THEN the playbook completes, the instance is isolated, and the
        // report names the faults it recovered from
        assert_eq!(
            report.containment,
            Containment::Complete,
            "{step}: {:#?}",
            report.failures
        );
        assert!(isolated(&d).await, "{step}: not isolated");
        let faults: Vec<_> = report
            .retried
            .iter()
            .filter(|r| r.error == "Firebreak.AwsUnavailable")
            .collect();
        assert_eq!(faults.len(), 2, "{step}: {:#?}", report.retried);
        assert!(report.human().contains("Faults recovered from by retrying"));
    }
}

/// Which case outputs a step leaves (its own, and those of steps that
/// only run after it succeeded).
fn outputs_of(step: &str) -> &'static [&'static str] {
    match step {
        "record_instance_state" => &["instance_state"],
        "protect_instance" => &["protection"],
        "detach_from_autoscaling" => &["auto_scaling"],
        "disassociate_elastic_ips" => &["elastic_ips"],
        "deregister_from_target_groups" => &["target_groups"],
        "isolate_network" => &["isolation", "isolation_recheck"],
        "cut_network_acls" => &["network_acls"],
        "revoke_instance_credentials" => &["credentials"],
        "tag_instance" => &["tags"],
        "snapshot_volumes" => &["snapshots", "snapshot_progress"],
        "await_snapshots" => &["snapshot_progress"],
        _ => &[],
    }
}

#[tokio::test]
async fn sandbox_a_step_that_keeps_failing_is_recorded_and_containment_goes_on() {
    for step in STEPS {
        // GIVEN AWS refuses the step's first call (403: not retried)
        let (d, report) = contain_with_fault(step, Fault::first(1, 403)).await;
        // THEN the failure is recorded under the step's name, and it is
        // the only failure: the report says containment is partial
        assert_eq!(report.containment, Containment::Partial, "{step}");
        let names: Vec<&str> = report.failures.iter().map(|f| f.step.as_str()).collect();
        assert_eq!(names, [step], "{step}: {:#?}", report.failures);
        assert_eq!(
            report.failures[0].error.as_deref(),
            Some("Firebreak.AccessDenied"),
            "{:#?}",
            report.failures
        );
        // AND every other step ran and left its output; isolation happens
        // unless isolation itself is the failing step
        let out = serde_json::to_value(&report.steps).unwrap();
        for other in STEPS.iter().filter(|o| **o != step) {
            for key in outputs_of(other) {
                let skipped = outputs_of(step).contains(key);
                assert_eq!(
                    out[*key].is_null(),
                    skipped,
                    "{step} failing: the output {key} of {other}: {}",
                    out[*key]
                );
            }
        }
        assert_eq!(isolated(&d).await, step != "isolate_network", "{step}");
    }
}

#[test]
fn sandbox_rehearse_passes_every_check() {
    evidence_bucket();
    let out = firebreak(&["rehearse", "--output", "json", "-q"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["passed"], true);
    let phases: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["contained", "released", "cleanup"]);
    let n: usize = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["checks"].as_array().unwrap().len())
        .sum();
    assert!(n >= 19, "{n} checks");
    // AND no Rust Debug formatting reaches the reader
    for detail in report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["checks"].as_array().unwrap())
        .map(|c| c["detail"].as_str().unwrap())
    {
        for debug in ["Some(", "None", "(\"", "\", \"", "{\""] {
            assert!(!detail.contains(debug), "{debug} in {detail:?}");
        }
    }
}

#[tokio::test]
async fn sandbox_two_responds_in_one_vpc_at_once_both_isolate_with_one_group() {
    // GIVEN two instances in the same VPC (the decoy and its sibling)
    let d = decoy();
    let first = s(&d, "instance_id");
    let second = s(&d, "second_instance_id");
    let spawn = |i: &str, case: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
            .args([
                "respond",
                "--instance",
                i,
                "--case",
                case,
                "-q",
                "--output",
                "json",
            ])
            .env("AWS_ENDPOINT_URL", crate::support::sandbox_url())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("FIREBREAK_STATE_DIR", crate::support::state_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // WHEN both are contained at the same moment (as the notification
    // Lambda would, one execution per finding)
    let a = spawn(&first, "it-race-a");
    let b = spawn(&second, "it-race-b");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    // THEN both complete, and the VPC holds one isolation group, shared;
    // the transition groups are gone
    for (who, out) in [(&first, &a), (&second, &b)] {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{who}: {}\n{}",
            stderr(out),
            stdout(out)
        );
    }
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let groups = ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(s(&d, "vpc_id"))
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag-key")
                .values("firebreak:role")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> = groups
        .security_groups()
        .iter()
        .filter_map(|g| g.group_name())
        .collect();
    names.sort();
    assert_eq!(names, ["firebreak-isolation"]);
}

#[tokio::test]
async fn sandbox_snapshots_are_copied_to_the_forensic_region_with_their_tags() {
    // GIVEN a decoy, and a forensic region with a key
    let d = decoy();
    let key = "arn:aws:kms:us-west-2:123456789012:key/11111111-2222-3333-4444-555555555555";
    let args = [
        "respond",
        "--instance",
        &s(&d, "instance_id"),
        "--case",
        "it-copy",
        "--output",
        "json",
        "-q",
        "--forensic-region",
        "us-west-2",
        "--forensic-kms-key",
        key,
    ];
    // WHEN containment runs with a forensic copy
    let out = firebreak(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // THEN every snapshot has a copy in the forensic region, made with the
    // key and carrying the case tags and where it came from
    assert_eq!(
        report["forensic_copies"]["all_completed"], true,
        "{report:#}"
    );
    let copies = report["forensic_copies"]["copies"].as_array().unwrap();
    assert_eq!(copies.len(), d["volume_ids"].as_array().unwrap().len());
    let west = crate::support::config_at(
        &crate::support::sandbox_url(),
        "us-west-2",
        ("test", "test"),
    )
    .await;
    let ec2 = aws_sdk_ec2::Client::new(&west);
    for c in copies {
        let snap = ec2
            .describe_snapshots()
            .snapshot_ids(c["snapshot_id"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let snap = &snap.snapshots()[0];
        // moto does not check that the key exists, but keeps the one given.
        assert_eq!(snap.kms_key_id(), Some(key));
        let tags: std::collections::BTreeMap<&str, &str> = snap
            .tags()
            .iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect();
        assert_eq!(tags.get("firebreak:case"), Some(&"it-copy"));
        assert_eq!(
            tags.get("firebreak:source-snapshot"),
            c["source_snapshot_id"].as_str().as_ref()
        );
        assert_eq!(tags.get("firebreak:source-region"), Some(&"us-east-1"));
        assert!(
            tags.contains_key("firebreak:instance"),
            "source tags are carried: {tags:?}"
        );
    }
    // AND a second run makes no second copy
    let again = firebreak(&args);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["forensic_copies"]["changed"], false);
    let ids = |r: &Value| {
        r["forensic_copies"]["copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["snapshot_id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&report));
    // AND a third run neither
    let third = firebreak(&args);
    let third: Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(third["forensic_copies"]["changed"], false);
    assert_eq!(ids(&third), ids(&report));
}

#[tokio::test]
async fn sandbox_lost_answers_to_the_first_mutating_calls_of_each_step_change_nothing_twice() {
    // GIVEN what a run with no fault leaves in the sandbox
    let config = sdk_config().await;
    let (clean_decoy, clean, _) = contain_counting_faults("none", Fault::first(0, 503)).await;
    assert_eq!(
        clean.containment,
        Containment::Complete,
        "{:#?}",
        clean.failures
    );
    let reference = inventory(&config, &clean_decoy, &clean.case_id).await;
    for step in STEPS {
        // WHEN AWS does the step's first 2 changes but the answers are
        // lost (503 after the work)
        let fault = Fault {
            calls: Calls::Mutating,
            skip: 0,
            n: 2,
            status: 503,
            code: None,
            before_work: false,
        };
        let (d, report, injected) = contain_counting_faults(step, fault).await;
        // THEN the retried step finds its own earlier work, the playbook
        // completes and the instance is isolated
        assert_eq!(
            report.containment,
            Containment::Complete,
            "{step}: {:#?}",
            report.failures
        );
        assert!(isolated(&d).await, "{step}: not isolated");
        // AND every fault injected is reported, no more (await_snapshots
        // only reads, so none reaches it)
        let faults = report
            .retried
            .iter()
            .filter(|r| r.error == "Firebreak.AwsUnavailable")
            .count();
        // (await_snapshots only reads; a step whose retry finds its one
        // change made has nothing left to break a second time)
        if step == "await_snapshots" {
            assert_eq!(injected, 0, "{step}");
        } else {
            assert!(
                (1..=2).contains(&injected),
                "{step}: {injected} faults injected"
            );
        }
        // (a step that goes on after a failed call, as protect_instance
        // does, reports two faults in one retry)
        let reported: usize = report
            .retried
            .iter()
            .filter_map(|r| r.cause.as_deref())
            .map(|c| c.matches("HTTP 503").count())
            .sum();
        assert_eq!(reported, injected, "{step}: {:#?}", report.retried);
        assert!(faults >= usize::from(injected > 0), "{step}");
        // AND nothing was made twice: the sandbox holds what the run
        // without faults left (every object and its versions, the custody
        // chain, snapshots, groups, ACL entries, the role's deny)
        assert_eq!(
            inventory(&config, &d, &report.case_id).await,
            reference,
            "{step}: the sandbox differs from a run without faults"
        );
    }
}

#[tokio::test]
async fn sandbox_one_interface_that_cannot_move_leaves_the_others_isolated_and_no_open_group() {
    // GIVEN the first move of the second interface is refused (after AWS
    // made it: the answer says 403)
    let d = decoy();
    let config = sdk_config().await;
    let enis: Vec<String> = serde_json::from_value(d["network_interface_ids"].clone()).unwrap();
    let case = case_file(&d, "it-one-eni");
    let fault = Fault {
        calls: Calls::NamedWith("ModifyNetworkInterfaceAttribute", enis[1].clone()),
        skip: 0,
        n: 1,
        status: 403,
        code: None,
        before_work: false,
    };
    let (handler, injected) = crate::faults::fault_in(&config, "isolate_network", fault);
    let report = crate::faults::run_contain(&case, handler).await;
    assert_eq!(injected.load(std::sync::atomic::Ordering::SeqCst), 1);
    // THEN containment is partial, and the failure names the interface
    // left out, what became of it, and the one isolated
    assert_eq!(report.containment, Containment::Partial);
    let failure = report
        .failures
        .iter()
        .find(|f| f.step == "isolate_network")
        .expect("isolation failure recorded");
    assert_eq!(
        failure.error.as_deref(),
        Some("Firebreak.PartiallyContained")
    );
    let cause = failure.cause.as_deref().unwrap_or_default();
    assert!(
        cause.contains(&format!("not isolated: {}", enis[1]))
            && cause.contains("was put back on its previous groups")
            && cause.contains(&format!("isolated: {}", enis[0])),
        "{cause}"
    );
    // AND the first interface is isolated, the second back on the
    // decoy's own group, never on the allow-all transition group
    let groups = interface_group_names(&d).await;
    let own = s(&d, "security_group_id");
    assert_eq!(groups[1], vec![own.clone()]);
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let iso = ec2
        .describe_security_groups()
        .group_ids(&groups[0][0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        iso.security_groups()[0].group_name(),
        Some("firebreak-isolation")
    );
    // AND the transition group is gone
    let open = ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(s(&d, "vpc_id"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        !open
            .security_groups()
            .iter()
            .any(|g| g.group_name().is_some_and(|n| n.contains("transition"))),
        "{:?}",
        open.security_groups()
    );
    // AND the summary tags the instance containment-failed
    assert_eq!(
        report
            .steps
            .tags
            .as_ref()
            .and_then(|t| t.tags.get("firebreak:status"))
            .map(String::as_str),
        Some("containment-failed")
    );
}

#[tokio::test]
async fn sandbox_exemptions_keep_only_ssh_in_and_https_out_to_the_given_peers() {
    // GIVEN a decoy and an investigator group in its VPC
    let d = decoy();
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let investigators = ec2
        .create_security_group()
        .group_name("it-investigators")
        .description("investigators")
        .vpc_id(s(&d, "vpc_id"))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    // WHEN contained with exemptions (one written loosely: upper-case IPv6)
    let out = firebreak(&[
        "respond",
        "--instance",
        &s(&d, "instance_id"),
        "--case",
        "it-exempt",
        "--allow-ssh-from",
        &investigators,
        "--allow-ssh-from",
        "2001:DB8::/32",
        "--allow-https-to",
        "10.0.0.0/16",
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // THEN every interface is on one group holding exactly those rules,
    // every rule of it compared (protocol, ports, peer, direction)
    let groups = interface_group_names(&d).await;
    assert!(groups.iter().all(|g| g.len() == 1 && g == &groups[0]));
    let sg = ec2
        .describe_security_groups()
        .group_ids(&groups[0][0])
        .send()
        .await
        .unwrap();
    let sg = &sg.security_groups()[0];
    let rules = |perms: &[aws_sdk_ec2::types::IpPermission], dir: &str| {
        let mut v = Vec::new();
        for p in perms {
            let head = format!(
                "{dir} {} {:?}-{:?}",
                p.ip_protocol().unwrap_or_default(),
                p.from_port(),
                p.to_port()
            );
            for r in p.ip_ranges() {
                v.push(format!("{head} {}", r.cidr_ip().unwrap_or_default()));
            }
            for r in p.ipv6_ranges() {
                v.push(format!("{head} {}", r.cidr_ipv6().unwrap_or_default()));
            }
            for g in p.user_id_group_pairs() {
                v.push(format!("{head} {}", g.group_id().unwrap_or_default()));
            }
            for l in p.prefix_list_ids() {
                v.push(format!("{head} {}", l.prefix_list_id().unwrap_or_default()));
            }
        }
        v
    };
    let mut all = rules(sg.ip_permissions(), "in");
    all.extend(rules(sg.ip_permissions_egress(), "out"));
    all.sort();
    let mut expected = vec![
        format!("in tcp Some(22)-Some(22) {investigators}"),
        "in tcp Some(22)-Some(22) 2001:db8::/32".to_string(),
        "out tcp Some(443)-Some(443) 10.0.0.0/16".to_string(),
    ];
    expected.sort();
    assert_eq!(all, expected);
    // AND the report lists the exemptions in canonical form
    assert!(
        report["isolation"]["exemptions"]
            .to_string()
            .contains("2001:db8::/32"),
        "{report:#}"
    );
}

#[tokio::test]
async fn sandbox_an_auto_scaling_group_at_its_minimum_is_lowered_and_restored_on_release() {
    // GIVEN the decoy's group is at its minimum (1 of 1)
    let d = decoy();
    let config = sdk_config().await;
    let asc = aws_sdk_autoscaling::Client::new(&config);
    let group = s(&d, "auto_scaling_group");
    asc.update_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .min_size(1)
        .send()
        .await
        .unwrap();
    let sizes = || async {
        let g = asc
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await
            .unwrap();
        let g = &g.auto_scaling_groups()[0];
        (g.min_size(), g.desired_capacity())
    };
    assert_eq!(sizes().await, (Some(1), Some(1)));
    // WHEN contained
    let id = s(&d, "instance_id");
    let out = firebreak(&[
        "respond",
        "--instance",
        &id,
        "--case",
        "it-asg-min",
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // THEN the instance is in standby, the minimum lowered to 0 (and said)
    assert_eq!(
        report["auto_scaling"]["lowered_min_size_from"], 1,
        "{report:#}"
    );
    assert_eq!(sizes().await, (Some(0), Some(0)));
    // AND release puts the minimum back with the instance
    let out = firebreak(&["release", "--instance", &id, "--case", "it-asg-min", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sizes().await, (Some(1), Some(1)));
}

#[test]
fn sandbox_respond_under_another_case_is_refused_while_the_first_is_open() {
    // GIVEN an instance contained under a case
    let d = decoy();
    let id = s(&d, "instance_id");
    let out = firebreak(&["respond", "--instance", &id, "--case", "it-first", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // WHEN a second case is opened on it
    let out = firebreak(&["respond", "--instance", &id, "--case", "it-second", "-q"]);
    // THEN it is refused with exit code 2, naming the open case
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("it-first"), "{}", stderr(&out));
}

#[tokio::test]
async fn sandbox_a_release_that_cannot_restore_everything_says_so_and_keeps_isolation() {
    // GIVEN a contained decoy whose Elastic IP was since given to another
    // instance
    let d = decoy();
    let id = s(&d, "instance_id");
    let out = firebreak(&["respond", "--instance", &id, "--case", "it-partial", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    ec2.associate_address()
        .allocation_id(s(&d, "allocation_id"))
        .instance_id(s(&d, "second_instance_id"))
        .send()
        .await
        .unwrap();
    let isolated_groups = interface_group_names(&d).await;
    // WHEN released
    let out = firebreak(&["release", "--instance", &id, "--case", "it-partial", "-q"]);
    // THEN the release fails, naming the address, and the instance is
    // tagged release-failed
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains(&s(&d, "allocation_id")), "{text}");
    let tags = ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(&id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let status = tags
        .tags()
        .iter()
        .find(|t| t.key() == Some("firebreak:status"))
        .and_then(|t| t.value());
    assert_eq!(status, Some("release-failed"));
    // AND the network isolation is still in place (groups go back last)
    assert_eq!(interface_group_names(&d).await, isolated_groups);
}
