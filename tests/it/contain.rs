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
use aws_smithy_runtime_api::client::orchestrator::Metadata;
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
            evidence_lock: Default::default(),
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
            o.insert("credential_deny".into(), json!("remove"));
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
    let checks = firebreak_steps::rehearsal::contained(
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
    // AND the deny on stolen sessions stays until they can have expired,
    // and the summary says until when
    let released: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        released.to_string().contains("credential_deny_kept_until"),
        "{released:#}"
    );
    let iam = aws_sdk_iam::Client::new(&config);
    let policies = || async {
        iam.list_role_policies()
            .role_name(s(&d, "role_name"))
            .send()
            .await
            .unwrap()
            .policy_names()
            .to_vec()
    };
    assert_eq!(policies().await.len(), 1);
    // AND releasing again with --remove-credential-deny removes it, and
    // changes nothing else
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
    assert!(policies().await.is_empty());
    let again_after = read_live_state(&ctx, &ctx.log("test"), &id).await.unwrap();
    assert!(restorable_differences(&before, &again_after).is_empty());
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

/// Which calls a fault applies to.
#[derive(Clone, Copy, Debug)]
enum Calls {
    All,
    /// Calls that change something (not Describe/Get/List/Head).
    Mutating,
    /// One API operation, by name.
    Named(&'static str),
}

impl Calls {
    fn matches(self, operation: &str) -> bool {
        match self {
            Calls::All => true,
            Calls::Mutating => !["Describe", "Get", "List", "Head"]
                .iter()
                .any(|p| operation.starts_with(p)),
            Calls::Named(n) => operation == n,
        }
    }
}

/// After the call reached AWS (so its work is done), replaces the answer
/// of the matching calls `skip+1 ..= skip+n` with an empty `status`: a
/// lost response, or a refusal.
#[derive(Debug)]
struct FailFirst {
    skip: Arc<AtomicUsize>,
    left: Arc<AtomicUsize>,
    status: u16,
    calls: Calls,
}

impl Intercept for FailFirst {
    fn name(&self) -> &'static str {
        "FailFirst"
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        if !self.calls.matches(&operation) {
            return Ok(());
        }
        let dec = |n: usize| n.checked_sub(1);
        if self
            .skip
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, dec)
            .is_ok()
        {
            return Ok(());
        }
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, dec)
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

/// A fault: which calls, how many to let through first, how many to
/// break, and with what status.
#[derive(Clone, Copy, Debug)]
struct Fault {
    calls: Calls,
    skip: usize,
    n: usize,
    status: u16,
}

impl Fault {
    fn first(n: usize, status: u16) -> Fault {
        Fault {
            calls: Calls::All,
            skip: 0,
            n,
            status,
        }
    }
}

/// Clients whose calls fail as `fault` says (all services counted
/// together); the SDK's own retries are off so the fault reaches the step.
fn faulty_clients(config: &SdkConfig, fault: Fault) -> AwsClients {
    let skip = Arc::new(AtomicUsize::new(fault.skip));
    let left = Arc::new(AtomicUsize::new(fault.n));
    let f = || FailFirst {
        skip: skip.clone(),
        left: left.clone(),
        status: fault.status,
        calls: fault.calls,
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
                .retry_config(retry.clone())
                .build(),
        ),
        ssm: aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(config)
                .interceptor(f())
                .retry_config(retry.clone())
                .build(),
        ),
        kms: aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::config::Builder::from(config)
                .interceptor(f())
                .retry_config(retry.clone())
                .build(),
        ),
        ebs: aws_sdk_ebs::Client::from_conf(
            aws_sdk_ebs::config::Builder::from(config)
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

async fn contain_with_fault(step: &'static str, fault: Fault) -> (Value, Report) {
    let d = decoy();
    let config = sdk_config().await;
    let case = case_file(&d, &format!("it-fault-{step}-{}", fault.status));
    let registry = Arc::new(Registry::standard());
    let healthy_ctx = context(AwsClients::new(&config));
    let faulty_ctx = context(faulty_clients(&config, fault));
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
    "detach_from_autoscaling",
    "isolate_network",
    "disassociate_elastic_ips",
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

#[tokio::test]
async fn sandbox_a_step_that_keeps_failing_is_recorded_and_containment_goes_on() {
    for step in STEPS {
        // GIVEN AWS refuses the step's first call (403: not retried)
        let (d, report) = contain_with_fault(step, Fault::first(1, 403)).await;
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
    // AND a third run neither
    let third = firebreak(&args);
    let third: Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(third["forensic_copies"]["changed"], false);
    assert_eq!(ids(&third), ids(&report));
}

#[tokio::test]
async fn sandbox_lost_answers_to_the_first_mutating_calls_of_each_step_change_nothing_twice() {
    for step in STEPS {
        // GIVEN AWS does the step's first 2 changes but the answers are
        // lost (503 after the work)
        let fault = Fault {
            calls: Calls::Mutating,
            skip: 0,
            n: 2,
            status: 503,
        };
        let (d, report) = contain_with_fault(step, fault).await;
        // THEN the retried step finds its own earlier work, the playbook
        // completes and the instance is isolated
        assert_eq!(
            report.containment,
            Containment::Complete,
            "{step}: {:#?}",
            report.failures
        );
        assert!(isolated(&d).await, "{step}: not isolated");
        // AND the faults are reported (await_snapshots only reads)
        let faults = report
            .retried
            .iter()
            .filter(|r| r.error == "Firebreak.AwsUnavailable")
            .count();
        if step == "await_snapshots" {
            assert_eq!(faults, 0, "{step}");
        } else {
            assert!(faults >= 1, "{step}: {:#?}", report.retried);
        }
        // AND nothing was made twice: one snapshot per volume, one
        // isolation group in the VPC and no transition group left
        let config = sdk_config().await;
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let snaps = ec2
            .describe_snapshots()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:firebreak:case")
                    .values(format!("it-fault-{step}-503"))
                    .build(),
            )
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("volume-id")
                    .set_values(serde_json::from_value(d["volume_ids"].clone()).ok())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            snaps.snapshots().len(),
            d["volume_ids"].as_array().unwrap().len(),
            "{step}: snapshots"
        );
        let groups = ec2
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
        let mut names: Vec<&str> = groups
            .security_groups()
            .iter()
            .filter_map(|g| g.group_name())
            .filter(|n| n.starts_with("firebreak-") && !n.starts_with("firebreak-decoy"))
            .collect();
        names.sort();
        assert_eq!(names, ["firebreak-isolation"], "{step}: groups");
    }
}

/// The group names on each of the decoy's interfaces.
async fn interface_group_names(d: &Value) -> Vec<Vec<String>> {
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
    out.network_interfaces()
        .iter()
        .map(|n| {
            n.groups()
                .iter()
                .map(|g| g.group_id().unwrap_or_default().to_string())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn sandbox_a_failed_move_puts_every_interface_back_and_leaves_no_open_group() {
    // GIVEN the second interface move is refused (after AWS made it)
    let fault = Fault {
        calls: Calls::Named("ModifyNetworkInterfaceAttribute"),
        skip: 1,
        n: 1,
        status: 403,
    };
    let (d, report) = contain_with_fault("isolate_network", fault).await;
    // THEN isolation is recorded as failed, naming what was put back
    assert_eq!(report.containment, Containment::Partial);
    let failure = report
        .failures
        .iter()
        .find(|f| f.step == "isolate_network")
        .expect("isolation failure recorded");
    assert!(
        failure
            .cause
            .as_deref()
            .unwrap_or_default()
            .contains("was put back on its previous groups"),
        "{failure:#?}"
    );
    // AND no interface is left on the allow-all transition group: both are
    // back on the decoy's own group
    let own = s(&d, "security_group_id");
    assert_eq!(
        interface_group_names(&d).await,
        vec![vec![own.clone()], vec![own]]
    );
    // AND the transition group is gone
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
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
    // THEN every interface is on one group holding exactly those rules
    let groups = interface_group_names(&d).await;
    assert!(groups.iter().all(|g| g.len() == 1 && g == &groups[0]));
    let sg = ec2
        .describe_security_groups()
        .group_ids(&groups[0][0])
        .send()
        .await
        .unwrap();
    let sg = &sg.security_groups()[0];
    let ingress: Vec<String> = sg
        .ip_permissions()
        .iter()
        .map(|p| {
            format!(
                "{:?}/{:?}/{:?}/{:?}/{:?}",
                p.ip_protocol(),
                p.from_port(),
                p.user_id_group_pairs()
                    .iter()
                    .filter_map(|u| u.group_id())
                    .collect::<Vec<_>>(),
                p.ipv6_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ipv6())
                    .collect::<Vec<_>>(),
                p.ip_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ip())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let text = ingress.join(" ");
    assert!(text.contains(&investigators), "{text}");
    assert!(text.contains("2001:db8::/32"), "{text}");
    assert!(sg
        .ip_permissions()
        .iter()
        .all(|p| p.from_port() == Some(22)));
    assert!(sg
        .ip_permissions_egress()
        .iter()
        .all(|p| p.from_port() == Some(443)
            && p.ip_ranges()
                .iter()
                .all(|r| r.cidr_ip() == Some("10.0.0.0/16"))));
    assert_eq!(sg.ip_permissions_egress().len(), 1, "{sg:?}");
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
