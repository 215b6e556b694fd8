//! Containment on a decoy with every lever (2 interfaces, IPv6, an EIP, an
//! instance profile whose role a second instance shares, an Auto Scaling
//! group, a target group): idempotency of each step, the contained state
//! read back, release to the recorded state, failure injection, rehearse.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, Utc};
use firebreak_forensics::instance_state::restorable_differences;
use firebreak_playbooks::report::{Containment, Report};
use firebreak_steps::case::{CaseFile, CaseInfo, CaseOptions, InstanceId};
use firebreak_steps::decoy::Decoy;
use firebreak_steps::ec2::read_live_state;
use firebreak_steps::{AwsClients, Mode, Registry, StepContext, StepRunner};
use firebreak_workflows::exec::{
    Clock, ExecutionConfig, Executor, History, TaskCall, TaskFailure, TaskHandler,
};
use firebreak_workflows::step::StepPayload;
use serde_json::{json, Value};

use crate::support::{decoy, evidence_bucket, firebreak, s, sdk_config, stderr, stdout, world};

fn context(clients: AwsClients) -> StepContext {
    StepContext::new(
        clients,
        Mode::Live,
        "123456789012".into(),
        "us-east-1".into(),
    )
}

fn case_file(d: &Value, case: &str) -> CaseFile {
    CaseFile {
        case: CaseInfo {
            case_id: case.into(),
            instance_id: s(d, "instance_id"),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            opened_at: Utc::now(),
            actor: "arn:aws:iam::123456789012:user/it".into(),
            evidence_bucket: evidence_bucket().into(),
        },
        options: CaseOptions::default(),
    }
}

/// The input each step of the playbooks takes, built from a case file as
/// the compiled definition builds it.
fn step_input(step: &str, case: &CaseFile, snapshot_ids: &[String]) -> Value {
    let c = &case.case;
    let base = json!({"case_id": c.case_id, "instance_id": c.instance_id});
    let mut v = base.clone();
    let o = v.as_object_mut().unwrap();
    match step {
        "record_instance_state" | "revoke_instance_credentials" => {
            o.insert("evidence_bucket".into(), json!(c.evidence_bucket));
        }
        "isolate_network" => {
            o.insert("exemptions".into(), json!([]));
        }
        "detach_from_autoscaling" => {
            o.insert("mode".into(), json!("standby"));
        }
        "tag_instance" => {
            o.insert("status".into(), json!("contained"));
        }
        "await_snapshots" => return json!({"snapshot_ids": snapshot_ids}),
        "release_instance" => {
            o.insert("evidence_bucket".into(), json!(c.evidence_bucket));
            o.insert("keep_credential_deny".into(), json!(false));
        }
        _ => {}
    }
    v
}

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
    let checks =
        firebreak_steps::rehearsal::contained(&ctx, &decoy_typed, "it-levers", evidence_bucket())
            .await
            .unwrap();
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(checks.len() >= 13);

    // AND the inline deny on the shared role names only this instance's
    // ARN and the containment time (asserted on the stored document)
    let iam = aws_sdk_iam::Client::new(&config);
    let role = s(&d, "role_name");
    let name = format!("firebreak-deny-sessions-{}", s(&d, "instance_id"));
    let raw = iam
        .get_role_policy()
        .role_name(&role)
        .policy_name(&name)
        .send()
        .await
        .unwrap();
    let doc = firebreak_steps::iam::decode_policy(raw.policy_document()).unwrap();
    let stmt = &doc["Statement"][0];
    assert_eq!(stmt["Effect"], "Deny");
    assert_eq!(stmt["Action"], "*");
    assert_eq!(
        stmt["Condition"]["StringEquals"],
        json!({"ec2:SourceInstanceARN": format!("arn:aws:ec2:us-east-1:123456789012:instance/{}", s(&d, "instance_id"))})
    );
    let cutoff: DateTime<Utc> = stmt["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        cutoff >= before - chrono::Duration::seconds(1) && cutoff <= Utc::now(),
        "{cutoff}"
    );
    // AND the role holds no other policy and the second instance keeps
    // its profile (its sessions are not affected by the condition)
    let names = iam
        .list_role_policies()
        .role_name(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(names.policy_names(), [name.as_str()]);
    let second = s(&d, "second_instance_id");
    assert!(stmt["Condition"].to_string().find(&second).is_none());
}

#[tokio::test]
async fn sandbox_release_restores_the_recorded_state() {
    // GIVEN a decoy's state before containment
    let d = decoy();
    let config = sdk_config().await;
    let ctx = context(AwsClients::new(&config));
    let id: InstanceId = s(&d, "instance_id").parse().unwrap();
    let before = read_live_state(&ctx, &ctx.log("test"), &id).await.unwrap();

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
    let contained = read_live_state(&ctx, &ctx.log("test"), &id).await.unwrap();
    assert!(!restorable_differences(&before, &contained).is_empty());
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

    // THEN the state equals the one before, except firebreak's case tags
    let after = read_live_state(&ctx, &ctx.log("test"), &id).await.unwrap();
    let diff = restorable_differences(&before, &after);
    assert!(diff.is_empty(), "{diff:#?}");
    assert_eq!(
        after.tags.get("firebreak:status").map(String::as_str),
        Some("released")
    );
    // AND the deny is gone from the role
    let iam = aws_sdk_iam::Client::new(&config);
    let names = iam
        .list_role_policies()
        .role_name(s(&d, "role_name"))
        .send()
        .await
        .unwrap();
    assert!(names.policy_names().is_empty());
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

/// Replaces the response of the first `left` calls with an HTTP 503 (the
/// request reached AWS: its effect may have happened, only the answer is
/// lost, the nastiest kind of fault for idempotency).
#[derive(Debug)]
struct FailFirst {
    left: Arc<AtomicUsize>,
    status: u16,
}

impl Intercept for FailFirst {
    fn name(&self) -> &'static str {
        "FailFirst"
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            *ctx.response_mut() = aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(self.status)?,
                aws_smithy_types::body::SdkBody::from(""),
            );
        }
        Ok(())
    }
}

/// Clients whose first `n` calls (all services together) fail with
/// `status`; the SDK's own retries are off so the fault reaches the step.
fn faulty_clients(config: &SdkConfig, n: usize, status: u16) -> AwsClients {
    let left = Arc::new(AtomicUsize::new(n));
    let f = || FailFirst {
        left: left.clone(),
        status,
    };
    let retry = aws_config::retry::RetryConfig::disabled();
    AwsClients {
        ec2: aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(config)
                .interceptor(f())
                .retry_config(retry.clone())
                .build(),
        ),
        iam: aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(config)
                .interceptor(f())
                .retry_config(retry.clone())
                .build(),
        ),
        autoscaling: aws_sdk_autoscaling::Client::from_conf(
            aws_sdk_autoscaling::config::Builder::from(config)
                .interceptor(f())
                .retry_config(retry.clone())
                .build(),
        ),
        elbv2: aws_sdk_elasticloadbalancingv2::Client::from_conf(
            aws_sdk_elasticloadbalancingv2::config::Builder::from(config)
                .interceptor(f())
                .retry_config(retry.clone())
                .build(),
        ),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(true)
                .interceptor(f())
                .retry_config(retry)
                .build(),
        ),
        sdk: config.clone(),
    }
}

/// Sends one step's calls through faulty clients, the others through
/// healthy ones.
struct FaultInOneStep {
    step: &'static str,
    healthy: StepRunner,
    faulty: StepRunner,
}

#[async_trait]
impl TaskHandler for FaultInOneStep {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        let step = call
            .input
            .get("step")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if step == self.step {
            self.faulty.invoke(call).await
        } else {
            self.healthy.invoke(call).await
        }
    }
}

/// Retry delays take no time: the test is about what happens, not when.
#[derive(Debug)]
struct NoWait;

impl Clock for NoWait {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, _: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
    fn deadline(&self, _: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(std::future::pending())
    }
}

async fn contain_with_fault(step: &'static str, n: usize, status: u16) -> (Value, Report) {
    let d = decoy();
    let config = sdk_config().await;
    let case = case_file(&d, &format!("it-fault-{step}-{status}"));
    let registry = Arc::new(Registry::standard());
    let healthy_ctx = context(AwsClients::new(&config));
    let faulty_ctx = context(faulty_clients(&config, n, status));
    let handler = FaultInOneStep {
        step,
        healthy: StepRunner::new(registry.clone(), healthy_ctx.clone()),
        faulty: StepRunner::new(registry, faulty_ctx),
    };
    let compiled = firebreak_playbooks::compile("ec2-contain").unwrap();
    let history = History::new();
    let outcome = Executor::new(Arc::new(handler))
        .with_clock(Arc::new(NoWait))
        .run(
            &compiled.definition,
            serde_json::to_value(&case).unwrap(),
            &ExecutionConfig::default(),
            &history,
        )
        .await;
    let report = Report::build(
        "ec2-contain",
        &case.case,
        Mode::Live,
        &outcome,
        &history.events(),
        vec![],
        Duration::ZERO,
    );
    (d, report)
}

async fn isolated(d: &Value) -> bool {
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let enis: Vec<String> = d["network_interface_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let out = ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(enis))
        .send()
        .await
        .unwrap();
    let groups: Vec<Vec<String>> = out
        .network_interfaces()
        .iter()
        .map(|n| {
            n.groups()
                .iter()
                .map(|g| g.group_name().unwrap_or_default().to_string())
                .collect()
        })
        .collect();
    groups.len() == 2
        && groups
            .iter()
            .all(|g| g == &["firebreak-isolation".to_string()])
}

const STEPS: [&str; 10] = [
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
];

#[tokio::test]
async fn sandbox_transient_faults_in_each_step_are_retried_isolation_happens_and_faults_are_reported(
) {
    for step in STEPS {
        // GIVEN AWS answers the step's first 2 calls with 503 (after
        // doing the work)
        let (d, report) = contain_with_fault(step, 2, 503).await;
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

#[tokio::test]
async fn sandbox_a_step_that_keeps_failing_is_recorded_and_containment_goes_on() {
    for step in STEPS {
        // GIVEN AWS refuses the step's first call (403: not retried)
        let (d, report) = contain_with_fault(step, 1, 403).await;
        // THEN the failure is recorded under the step's name, the report
        // says containment is partial, and every other step still ran:
        // isolation happens unless isolation itself is the failing step
        assert_eq!(report.containment, Containment::Partial, "{step}");
        let names: Vec<&str> = report.failures.iter().map(|f| f.step.as_str()).collect();
        assert!(names.contains(&step), "{step}: failures {names:?}");
        assert!(
            report
                .failures
                .iter()
                .all(|f| f.error.as_deref() == Some("Firebreak.AccessDenied")),
            "{:#?}",
            report.failures
        );
        assert_eq!(isolated(&d).await, step != "isolate_network", "{step}");
        if step != "snapshot_volumes" && step != "await_snapshots" {
            assert!(
                report
                    .steps
                    .snapshot_progress
                    .as_ref()
                    .is_some_and(|p| p.all_completed),
                "{step}: snapshots skipped"
            );
        }
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
    // THEN both complete, and the VPC holds one isolation group and one
    // transition group, shared
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
    assert_eq!(names, ["firebreak-isolation", "firebreak-transition"]);
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
    let west = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(crate::support::sandbox_url())
        .region(aws_config::Region::new("us-west-2"))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test", "test", None, None, "it",
        ))
        .load()
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
}
