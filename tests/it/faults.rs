//! The harness of the containment tests: step contexts and case files,
//! faults injected into AWS's answers (after AWS did the work: a lost
//! answer; or instead of it: a refusal), and playbook runs with a fault in
//! one step.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use chrono::{DateTime, Utc};
use firebreak_playbooks::report::Report;
use firebreak_steps::case::{CaseFile, CaseInfo, CaseOptions};
use firebreak_steps::{AwsClients, Mode, Registry, StepContext, StepRunner};
use firebreak_workflows::exec::{
    Clock, ExecutionConfig, Executor, History, TaskCall, TaskFailure, TaskHandler,
};
use serde_json::{json, Value};

use crate::support::{decoy, evidence_bucket, s, sdk_config};

pub(crate) fn context(clients: AwsClients) -> StepContext {
    StepContext::new(
        clients,
        Mode::Live,
        "123456789012".into(),
        "us-east-1".into(),
    )
}

pub(crate) fn case_file(d: &Value, case: &str) -> CaseFile {
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
pub(crate) fn step_input(step: &str, case: &CaseFile, snapshot_ids: &[String]) -> Value {
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

/// Which calls a fault applies to.
#[derive(Clone, Debug)]
pub(crate) enum Calls {
    All,
    /// Calls that change something (not Describe/Get/List/Head).
    Mutating,
    /// One API operation, by name.
    Named(&'static str),
    /// One API operation whose request holds this text (an interface id,
    /// for one interface's calls).
    NamedWith(&'static str, String),
}

impl Calls {
    fn matches(&self, operation: &str, request: &str) -> bool {
        match self {
            Calls::All => true,
            Calls::Mutating => !["Describe", "Get", "List", "Head"]
                .iter()
                .any(|p| operation.starts_with(p)),
            Calls::Named(n) => operation == *n,
            Calls::NamedWith(n, needle) => operation == *n && request.contains(needle.as_str()),
        }
    }
}

/// Replaces the answer of the matching calls `skip+1 ..= skip+n` with
/// `status` (and an EC2 error code, when given): after the call reached
/// AWS, so its work is done (a lost answer), or, with `before_work`,
/// instead of it (the request sent is swapped for a harmless read: a
/// refusal, such as a group still in use).
#[derive(Debug)]
pub(crate) struct FailFirst {
    skip: Arc<AtomicUsize>,
    left: Arc<AtomicUsize>,
    injected: Arc<AtomicUsize>,
    status: u16,
    code: Option<&'static str>,
    before_work: bool,
    calls: Calls,
}

/// Whether this call is one the fault breaks.
#[derive(Clone, Debug)]
struct Broken;

impl Storable for Broken {
    type Storer = StoreReplace<Self>;
}

impl Intercept for FailFirst {
    fn name(&self) -> &'static str {
        "FailFirst"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        let request = ctx
            .request()
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .unwrap_or_default();
        if !self.calls.matches(&operation, &request) {
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
            self.injected.fetch_add(1, Ordering::SeqCst);
            cfg.interceptor_state().store_put(Broken);
            if self.before_work {
                let body = "Action=DescribeRegions&Version=2016-11-15";
                *ctx.request_mut().body_mut() = aws_smithy_types::body::SdkBody::from(body);
                ctx.request_mut()
                    .headers_mut()
                    .insert("Content-Length", body.len().to_string());
            }
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Broken>().is_none() {
            return Ok(());
        }
        let body = match self.code {
            Some(code) => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>injected by the test</Message></Error></Errors><RequestID>it</RequestID></Response>"
            ),
            None => String::new(),
        };
        *ctx.response_mut() = aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(self.status)?,
            aws_smithy_types::body::SdkBody::from(body),
        );
        Ok(())
    }
}

/// A fault: which calls, how many to let through first, how many to
/// break, and with what status.
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub calls: Calls,
    pub skip: usize,
    pub n: usize,
    pub status: u16,
    /// The EC2 error code of the answer (none: an empty body).
    pub code: Option<&'static str>,
    /// Refuse instead of doing the work.
    pub before_work: bool,
}

impl Fault {
    pub(crate) fn first(n: usize, status: u16) -> Fault {
        Fault {
            calls: Calls::All,
            skip: 0,
            n,
            status,
            code: None,
            before_work: false,
        }
    }
}

/// [`faulty_clients`], with the count of faults actually injected.
pub(crate) fn faulty_clients_counted(
    config: &SdkConfig,
    fault: Fault,
) -> (AwsClients, Arc<AtomicUsize>) {
    let skip = Arc::new(AtomicUsize::new(fault.skip));
    let left = Arc::new(AtomicUsize::new(fault.n));
    let injected = Arc::new(AtomicUsize::new(0));
    let f = || {
        SharedInterceptor::new(FailFirst {
            skip: skip.clone(),
            left: left.clone(),
            injected: injected.clone(),
            status: fault.status,
            code: fault.code,
            before_work: fault.before_work,
            calls: fault.calls.clone(),
        })
    };
    (intercepted_clients(config, f, false), injected)
}

/// Clients of every service with an interceptor (made once per client);
/// with `sdk_retries` false the SDK's own retries are off, so that a fault
/// reaches the step.
pub(crate) fn intercepted_clients(
    config: &SdkConfig,
    f: impl Fn() -> SharedInterceptor,
    sdk_retries: bool,
) -> AwsClients {
    let retry = if sdk_retries {
        aws_config::retry::RetryConfig::standard()
    } else {
        aws_config::retry::RetryConfig::disabled()
    };
    macro_rules! client {
        ($krate:ident) => {
            $krate::Client::from_conf(
                $krate::config::Builder::from(config)
                    .interceptor(f())
                    .retry_config(retry.clone())
                    .build(),
            )
        };
    }
    AwsClients {
        ec2: client!(aws_sdk_ec2),
        iam: client!(aws_sdk_iam),
        autoscaling: client!(aws_sdk_autoscaling),
        elbv2: client!(aws_sdk_elasticloadbalancingv2),
        elb: client!(aws_sdk_elasticloadbalancing),
        route53resolver: client!(aws_sdk_route53resolver),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(true)
                .interceptor(f())
                .retry_config(retry.clone())
                .build(),
        ),
        ssm: client!(aws_sdk_ssm),
        kms: client!(aws_sdk_kms),
        ebs: client!(aws_sdk_ebs),
        sns: client!(aws_sdk_sns),
        sdk: config.clone(),
    }
}

/// Holds the answers of matching calls until `parties` of them have been
/// answered (or a timeout passes): so that concurrent runs all read the
/// world before any of them changes it.
#[derive(Debug, Clone)]
pub(crate) struct Rendezvous {
    pub operation: &'static str,
    pub needle: String,
    pub parties: usize,
    pub state: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
    /// Matching calls sent, by operation and needle, counted.
    pub seen: Arc<AtomicUsize>,
    /// Set when a party gave up waiting: the calls did not meet.
    pub timed_out: Arc<std::sync::atomic::AtomicBool>,
}

impl Rendezvous {
    pub(crate) fn new(operation: &'static str, needle: &str, parties: usize) -> Rendezvous {
        Rendezvous {
            operation,
            needle: needle.to_string(),
            parties,
            state: Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new())),
            seen: Arc::new(AtomicUsize::new(0)),
            timed_out: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

impl Intercept for Rendezvous {
    fn name(&self) -> &'static str {
        "Rendezvous"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        let body = ctx
            .request()
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .unwrap_or_default();
        if operation == self.operation && body.contains(&self.needle) {
            self.seen.fetch_add(1, Ordering::SeqCst);
            cfg.interceptor_state().store_put(Broken);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        _ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Broken>().is_none() {
            return Ok(());
        }
        // Waiting blocks this thread: the runtime's other tasks queued on
        // it (the other party, maybe) are handed to other workers first.
        tokio::task::block_in_place(|| {
            let (lock, cv) = &*self.state;
            let mut n = lock.lock().unwrap();
            *n += 1;
            cv.notify_all();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while *n < self.parties {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    self.timed_out.store(true, Ordering::SeqCst);
                    break;
                }
                n = cv.wait_timeout(n, left).unwrap().0;
            }
        });
        Ok(())
    }
}

/// Sends one step's calls through faulty clients, the others through
/// healthy ones.
pub(crate) struct FaultInOneStep {
    pub step: &'static str,
    pub healthy: StepRunner,
    pub faulty: StepRunner,
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
pub(crate) struct NoWait;

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

/// Runs ec2-contain for a case with a task handler, as `respond` does
/// (retry delays taking no time), and reports.
pub(crate) async fn run_contain<H: TaskHandler + 'static>(case: &CaseFile, handler: H) -> Report {
    let compiled = firebreak_playbooks::compile("ec2-contain").unwrap();
    let history = History::new();
    let outcome = Executor::new(Arc::new(handler))
        .with_clock(Arc::new(NoWait))
        .run(
            &compiled.definition,
            serde_json::to_value(case).unwrap(),
            &ExecutionConfig::default(),
            &history,
        )
        .await;
    Report::build(
        "ec2-contain",
        &case.case,
        Mode::Live,
        &outcome,
        &history.events(),
        vec![],
        Duration::ZERO,
    )
}

/// A handler sending one step's calls through clients with `fault`, and
/// the count of faults it injected.
pub(crate) fn fault_in(
    config: &SdkConfig,
    step: &'static str,
    fault: Fault,
) -> (FaultInOneStep, Arc<AtomicUsize>) {
    let registry = Arc::new(Registry::standard());
    let healthy_ctx = context(AwsClients::new(config));
    let (clients, injected) = faulty_clients_counted(config, fault);
    let faulty_ctx = context(clients);
    (
        FaultInOneStep {
            step,
            healthy: StepRunner::new(registry.clone(), healthy_ctx),
            faulty: StepRunner::new(registry, faulty_ctx),
        },
        injected,
    )
}

pub(crate) async fn contain_with_fault(step: &'static str, fault: Fault) -> (Value, Report) {
    let (d, report, _) = contain_counting_faults(step, fault).await;
    (d, report)
}

/// [`contain_with_fault`], with the number of faults injected. The case
/// id (in the report) names the step, the status and this test process,
/// so that a sandbox kept between runs holds no earlier run's objects
/// under it.
pub(crate) async fn contain_counting_faults(
    step: &'static str,
    fault: Fault,
) -> (Value, Report, usize) {
    let d = decoy();
    let config = sdk_config().await;
    let case = case_file(
        &d,
        &format!("it-fault-{step}-{}-{}", fault.status, std::process::id()),
    );
    let (handler, injected) = fault_in(&config, step, fault);
    let report = run_contain(&case, handler).await;
    (d, report, injected.load(Ordering::SeqCst))
}

/// What a containment run leaves in the sandbox, without the ids that
/// differ from decoy to decoy: every object of the case with its number
/// of versions, the custody chain's events in order, the snapshots, the
/// VPC's firebreak groups, the network ACL entries, the instances the
/// role's deny policies name. Two runs that did the same work give the
/// same inventory.
pub(crate) async fn inventory(config: &SdkConfig, d: &Value, case: &str) -> Value {
    use std::collections::BTreeMap;
    let instance = s(d, "instance_id");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    );
    let versions = s3
        .list_object_versions()
        .bucket(evidence_bucket())
        .prefix(format!("cases/{case}/"))
        .send()
        .await
        .unwrap();
    let mut objects: BTreeMap<String, usize> = BTreeMap::new();
    for v in versions.versions() {
        let key = v
            .key()
            .unwrap_or_default()
            .replace(case, "CASE")
            .replace(&instance, "INSTANCE");
        *objects.entry(key).or_default() += 1;
    }
    let mut custody = Vec::new();
    for key in versions
        .versions()
        .iter()
        .filter_map(|v| v.key())
        .filter(|k| k.contains("/custody/") && k.ends_with(".json"))
        .collect::<std::collections::BTreeSet<_>>()
    {
        let body = s3
            .get_object()
            .bucket(evidence_bucket())
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let r: Value = serde_json::from_slice(&body).unwrap();
        custody.push(json!([r["sequence"], r["event"], r["kind"]]));
    }
    let ec2 = aws_sdk_ec2::Client::new(config);
    let snaps = ec2
        .describe_snapshots()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:firebreak:case")
                .values(case)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots()
        .len();
    let vpc = aws_sdk_ec2::types::Filter::builder()
        .name("vpc-id")
        .values(s(d, "vpc_id"))
        .build();
    let mut groups: Vec<String> = ec2
        .describe_security_groups()
        .filters(vpc.clone())
        .send()
        .await
        .unwrap()
        .security_groups()
        .iter()
        .filter(|g| g.tags().iter().any(|t| t.key() == Some("firebreak:role")))
        .filter_map(|g| g.group_name().map(|n| n.replace(case, "CASE")))
        .collect();
    groups.sort();
    let acl_entries: usize = ec2
        .describe_network_acls()
        .filters(vpc)
        .send()
        .await
        .unwrap()
        .network_acls()
        .iter()
        .map(|a| a.entries().len())
        .sum();
    let mut denied = 0;
    if let Some(role) = d["role_name"].as_str() {
        let ctx = context(AwsClients::new(config));
        let r =
            firebreak_steps::containment::iam::policies::read_role(&ctx, &ctx.log("test"), role)
                .await
                .unwrap();
        denied = r
            .policies
            .iter()
            .map(|p| p.denies.before.values().map(|s| s.len()).sum::<usize>())
            .sum();
    }
    json!({
        "objects": objects,
        "custody": custody,
        "snapshots": snaps,
        "groups": groups,
        "acl_entries": acl_entries,
        "denied_instances": denied,
    })
}

pub(crate) async fn isolated(d: &Value) -> bool {
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

/// The group names on each of the decoy's interfaces.
pub(crate) async fn interface_group_names(d: &Value) -> Vec<Vec<String>> {
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
