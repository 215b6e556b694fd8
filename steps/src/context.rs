//! What a step runs with: AWS clients, the mode (live or dry run), the log
//! of every AWS call it makes, and a progress channel for long waits.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

use firebreak_workflows::ErrorName;

use crate::error::{aws_error, error_code, StepError};

/// Live runs change the account; dry runs only read, and send EC2
/// mutations with `DryRun=true` to learn whether they would be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Calls are made for real and change the account.
    Live,
    /// Nothing changes: only reads are made, and EC2 mutations are sent
    /// with `DryRun=true` to learn whether they would be allowed.
    DryRun,
}

/// What happened to one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    /// A read, made for real in both modes.
    Read,
    /// A change, made.
    Done,
    /// Dry run: AWS answered `DryRunOperation`, the call would be allowed.
    Allowed,
    /// Dry run: AWS refused the call for lack of permission.
    Denied(String),
    /// Dry run: the call could not be checked (it depends on a resource an
    /// earlier planned call would create, or the API has no DryRun).
    NotChecked(String),
}

/// One AWS call made (or planned) by a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The step that made the call, as given to [`StepContext::log`].
    pub step: String,
    /// `ec2:CreateSecurityGroup`.
    pub action: String,
    /// The call's parameters, summarised for people.
    pub parameters: String,
    /// Whether the call changes the account (false only for reads).
    pub mutating: bool,
    /// What happened to it; flattened into `verdict` and `detail` in JSON.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The calls of one run, in order.
#[derive(Clone, Debug, Default)]
pub struct CallLog(Arc<Mutex<Vec<CallRecord>>>);

impl CallLog {
    /// Appends a record (dropped silently if the log's lock is poisoned).
    pub fn push(&self, r: CallRecord) {
        if let Ok(mut v) = self.0.lock() {
            v.push(r);
        }
    }
    /// A copy of every record so far, in call order (empty if the log's lock
    /// is poisoned).
    pub fn records(&self) -> Vec<CallRecord> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

type ProgressFn = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Tries per EBS direct API call (see [`AwsClients::new`]).
const EBS_ATTEMPTS: u32 = 12;

/// The AWS clients steps use.
#[derive(Clone, Debug)]
pub struct AwsClients {
    /// EC2: instances, interfaces, security groups, ACLs, addresses,
    /// snapshots, tags.
    pub ec2: aws_sdk_ec2::Client,
    /// IAM: the instance role's policies and the deny on its credentials.
    pub iam: aws_sdk_iam::Client,
    /// EC2 Auto Scaling: membership, scale-in protection, Standby or
    /// detach, and the group's minimum.
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// ELBv2 (Application, Network, Gateway Load Balancers): the
    /// instance's target group registrations, read and deregistered.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    /// Classic Load Balancers.
    pub elb: aws_sdk_elasticloadbalancing::Client,
    /// Route 53 Resolver: whether DNS queries from the VPC are logged.
    pub route53resolver: aws_sdk_route53resolver::Client,
    /// S3: the evidence and tools buckets.
    pub s3: aws_sdk_s3::Client,
    /// Systems Manager: Run Command for memory capture on the instance.
    pub ssm: aws_sdk_ssm::Client,
    /// Signs custody records (asymmetric keys) and checks signatures.
    pub kms: aws_sdk_kms::Client,
    /// The EBS direct APIs: reads snapshot blocks to hash disk images.
    pub ebs: aws_sdk_ebs::Client,
    /// SNS: announcements and approval requests to the responders' topic.
    pub sns: aws_sdk_sns::Client,
    /// The configuration the clients come from, for clients in another
    /// region or account (forensic copies).
    pub sdk: aws_config::SdkConfig,
}

impl AwsClients {
    /// Clients for every service from one configuration: S3 uses path-style
    /// addresses with a custom endpoint, and EBS direct calls are tried 12
    /// times.
    pub fn new(config: &aws_config::SdkConfig) -> AwsClients {
        // With a custom endpoint (a sandbox) S3 needs path-style addresses:
        // `bucket.127.0.0.1` does not resolve.
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(crate::config::has_custom_endpoint(config))
            .build();
        AwsClients {
            ec2: aws_sdk_ec2::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
            elb: aws_sdk_elasticloadbalancing::Client::new(config),
            route53resolver: aws_sdk_route53resolver::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            ssm: aws_sdk_ssm::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
            // Hashing a snapshot makes millions of GetSnapshotBlock calls:
            // one that fails its last retry restarts hours of work, so
            // twelve tries (as coldsnap does for the same API).
            ebs: aws_sdk_ebs::Client::from_conf(
                aws_sdk_ebs::config::Builder::from(config)
                    .retry_config(
                        aws_config::retry::RetryConfig::standard().with_max_attempts(EBS_ATTEMPTS),
                    )
                    .build(),
            ),
            sns: aws_sdk_sns::Client::new(config),
            sdk: config.clone(),
        }
    }
}

/// An operator's interrupt (Ctrl-C, SIGTERM) as the steps see it: a step
/// marks the moments that must not be cut short (an interface on the
/// allow-all transition group) as critical; an interrupted run stops only
/// outside them, and a critical section asked for after the interrupt
/// never starts.
#[derive(Debug, Default)]
pub struct Interrupt {
    /// (interrupt requested, critical sections open), under one lock so a
    /// section cannot open between the check and the stop.
    state: Mutex<(bool, usize)>,
    changed: tokio::sync::Notify,
}

/// An open critical section; dropping it closes it.
#[derive(Debug)]
pub struct Critical {
    of: Arc<Interrupt>,
}

impl Drop for Critical {
    fn drop(&mut self) {
        if let Ok(mut s) = self.of.state.lock() {
            s.1 = s.1.saturating_sub(1);
        }
        self.of.changed.notify_waiters();
    }
}

impl Interrupt {
    /// Opens a critical section; after an interrupt it waits forever (the
    /// run is being stopped, and nothing new must start).
    pub async fn critical(self: &Arc<Self>) -> Critical {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !s.0 {
                s.1 += 1;
                return Critical { of: self.clone() };
            }
        }
        std::future::pending().await
    }

    /// Asks the run to stop; says whether a critical section is open.
    pub fn request(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = true;
        let busy = s.1 > 0;
        drop(s);
        self.changed.notify_waiters();
        busy
    }

    /// Whether an interrupt was asked for (true if the lock is poisoned).
    pub fn requested(&self) -> bool {
        self.state.lock().map(|s| s.0).unwrap_or(true)
    }

    /// Returns once an interrupt was asked for and no critical section is
    /// open: the moment the run may be dropped.
    pub async fn stoppable(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if s.0 && s.1 == 0 {
                    return;
                }
            }
            changed.await;
        }
    }
}

/// Everything a step runs with.
#[derive(Clone)]
pub struct StepContext {
    /// The clients every AWS call goes through.
    pub aws: AwsClients,
    /// Live, or a dry run that changes nothing.
    pub mode: Mode,
    /// The caller's 12-digit account id, from STS.
    pub account_id: String,
    /// The region the clients call (`eu-west-1`).
    pub region: String,
    /// Every AWS call made or planned in this run, shared by all steps.
    pub calls: CallLog,
    /// The operator's interrupt (see [`Interrupt`]).
    pub interrupt: Arc<Interrupt>,
    /// Where announcements and approval requests go (none by default).
    pub notify: NotifyTargets,
    progress: Option<ProgressFn>,
}

/// Where a run announces itself and asks for approval: deployment
/// configuration (the step runner's environment, or `respond`'s options),
/// not part of the case, since a webhook URL is a secret and would
/// otherwise sit in every execution's input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyTargets {
    /// An SNS topic (`arn:aws:sns:REGION:ACCOUNT:NAME`).
    pub topic_arn: Option<String>,
    /// A Slack-compatible incoming webhook (`https://hooks.slack.com/...`):
    /// sent `{"text": ...}` by POST.
    pub webhook_url: Option<String>,
}

impl NotifyTargets {
    /// Targets from the environment: `FIREBREAK_NOTIFY_TOPIC` and
    /// `FIREBREAK_WEBHOOK_URL` (empty values count as unset).
    pub fn from_env() -> NotifyTargets {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        NotifyTargets {
            topic_arn: var("FIREBREAK_NOTIFY_TOPIC"),
            webhook_url: var("FIREBREAK_WEBHOOK_URL"),
        }
    }

    /// Whether there is anywhere to send to.
    pub fn is_empty(&self) -> bool {
        self.topic_arn.is_none() && self.webhook_url.is_none()
    }
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("mode", &self.mode)
            .field("account_id", &self.account_id)
            .field("region", &self.region)
            .finish()
    }
}

/// The role firebreak assumes in a member account to act on its
/// instances (`infra/member-role.yaml` makes it).
pub const RESPONDER_ROLE: &str = "firebreak-responder";

impl AwsClients {
    /// The clients of a step acting in a member account: every call on the
    /// instance's side (EC2, IAM, Auto Scaling, load balancers, Route 53
    /// Resolver, SSM, EBS) with the member's configuration, while evidence
    /// (S3, KMS) and notifications (SNS) stay with this account's.
    pub fn for_member(&self, member: &aws_config::SdkConfig) -> AwsClients {
        let mut c = AwsClients::new(member);
        c.s3 = self.s3.clone();
        c.kms = self.kms.clone();
        c.sns = self.sns.clone();
        c
    }
}

impl StepContext {
    /// The context of a step acting in `account`: this one when it is the
    /// caller's own account (or none is named); for another account, the
    /// member's `firebreak-responder` role, assumed with these credentials,
    /// for the instance's side of every call (see
    /// [`AwsClients::for_member`]). The role is tried at once, so that a
    /// member without it fails here with the role named.
    pub async fn for_account(&self, account: Option<&str>) -> Result<StepContext, StepError> {
        let Some(account) = account.filter(|a| *a != self.account_id) else {
            return Ok(self.clone());
        };
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StepError::invalid_input(format!(
                "{account:?} is not an AWS account id (12 digits)"
            )));
        }
        let partition = if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        let role = format!("arn:{partition}:iam::{account}:role/{RESPONDER_ROLE}");
        self.log("for_account").read("sts:AssumeRole", role.clone());
        let provider = aws_config::sts::AssumeRoleProvider::builder(&role)
            .session_name("firebreak-step-runner")
            .configure(&self.aws.sdk)
            .build()
            .await;
        let member = self
            .aws
            .sdk
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build();
        let who = aws_sdk_sts::Client::new(&member)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| {
                let mut err = aws_error("sts:AssumeRole", e);
                err.message = format!(
                    "cannot act in account {account} through {role}: {} (deploy infra/member-role.yaml there, trusting this step runner's role)",
                    err.message
                );
                err
            })?;
        if who.account() != Some(account) {
            return Err(StepError::new(
                ErrorName::AccessDenied,
                format!(
                    "{role} answered as account {:?}, not {account}",
                    who.account()
                ),
            ));
        }
        let mut ctx = self.clone();
        ctx.aws = self.aws.for_member(&member);
        ctx.account_id = account.to_string();
        Ok(ctx)
    }

    /// A context with an empty call log, no interrupt and no progress
    /// reporting.
    pub fn new(aws: AwsClients, mode: Mode, account_id: String, region: String) -> StepContext {
        StepContext {
            aws,
            mode,
            account_id,
            region,
            calls: CallLog::default(),
            interrupt: Arc::new(Interrupt::default()),
            notify: NotifyTargets::default(),
            progress: None,
        }
    }

    /// Where announcements and approval requests go.
    pub fn with_notify(mut self, targets: NotifyTargets) -> StepContext {
        self.notify = targets;
        self
    }

    /// Where progress messages of long waits go.
    pub fn with_progress(mut self, f: impl Fn(&str, &str) + Send + Sync + 'static) -> StepContext {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Whether this is a dry run: mutations must not be made.
    pub fn is_dry_run(&self) -> bool {
        self.mode == Mode::DryRun
    }

    /// A call logger for one step.
    pub fn log(&self, step: &'static str) -> StepLog<'_> {
        StepLog { ctx: self, step }
    }
}

/// Records the calls of one step.
#[derive(Debug)]
pub struct StepLog<'a> {
    ctx: &'a StepContext,
    step: &'static str,
}

impl StepLog<'_> {
    fn push(&self, action: &str, parameters: String, mutating: bool, verdict: Verdict) {
        self.ctx.calls.push(CallRecord {
            step: self.step.to_string(),
            action: action.to_string(),
            parameters,
            mutating,
            verdict,
        });
    }

    /// Records a read (made for real in both modes).
    pub fn read(&self, action: &str, parameters: impl Into<String>) {
        self.push(action, parameters.into(), false, Verdict::Read);
    }

    /// Records a change that was made (live mode).
    pub fn done(&self, action: &str, parameters: impl Into<String>) {
        self.push(action, parameters.into(), true, Verdict::Done);
    }

    /// Records a change that a dry run could not check, with why (it depends
    /// on a resource an earlier planned call would create, or the API has no
    /// `DryRun`).
    pub fn not_checked(&self, action: &str, parameters: impl Into<String>, why: impl Into<String>) {
        self.push(
            action,
            parameters.into(),
            true,
            Verdict::NotChecked(why.into()),
        );
    }

    /// Records the answer to a call sent with `DryRun=true`: AWS answers
    /// `DryRunOperation` when the call would succeed and
    /// `UnauthorizedOperation` when it is not allowed; anything else is an
    /// error of the plan itself.
    pub fn dry_run<T, E>(
        &self,
        action: &str,
        parameters: impl Into<String>,
        result: Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>,
    ) -> Result<(), StepError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let parameters = parameters.into();
        match result {
            // A service that ignored DryRun would have made the change: say
            // so loudly rather than pretend it was a check.
            Ok(_) => Err(StepError::new(
                firebreak_workflows::ErrorName::Internal,
                format!("{action} was sent with DryRun=true but AWS performed it"),
            )),
            Err(e) => match error_code(&e).as_deref() {
                Some("DryRunOperation") => {
                    self.push(action, parameters, true, Verdict::Allowed);
                    Ok(())
                }
                Some("UnauthorizedOperation") | Some("AccessDenied") => {
                    let msg = e
                        .as_service_error()
                        .and_then(|s| s.message())
                        .unwrap_or("not authorized")
                        .to_string();
                    self.push(action, parameters, true, Verdict::Denied(msg));
                    Ok(())
                }
                _ => Err(aws_error(action, e)),
            },
        }
    }

    /// Reports a message on a long wait, tagged with the step's name, to the
    /// [`StepContext::with_progress`] callback; nothing without one.
    pub fn progress(&self, message: &str) {
        if let Some(p) = &self.ctx.progress {
            p(self.step, message);
        }
    }
}
