//! The notification handler: an EventBridge event (a GuardDuty or
//! Security Hub finding, ...) becomes alerts, the trigger rules pick the
//! playbooks, and each starts once as an execution of the deployed state
//! machine, named from (finding, playbook, instance): a finding delivered
//! again or updated finds its execution already there
//! (`ExecutionAlreadyExists` is success).

use std::collections::BTreeMap;

use aws_sdk_sfn::error::ProvideErrorMetadata as _;
use chrono::{DateTime, Utc};
use firebreak_playbooks::alerts::triggers::{self, Trigger, Triggers};
use firebreak_playbooks::alerts::{self, Alert, AlertError};
use firebreak_steps::case::{default_evidence_bucket, CaseFile, CaseInfo, CaseOptions};
use firebreak_steps::evidence::tools::default_tools_bucket;
use firebreak_steps::ids::{CaseId, InstanceId};
use serde::Serialize;
use serde_json::Value;

/// Why an event could not be handled. The invocation fails, so that
/// EventBridge retries it and the dead-letter queue keeps it.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The event is not one firebreak reads.
    #[error("the event cannot be read: {0}")]
    Event(#[from] AlertError),
    /// A trigger names a playbook no state machine is configured for.
    #[error("no state machine for playbook {0} (set FIREBREAK_STATE_MACHINES)")]
    NoStateMachine(String),
    /// Step Functions refused or failed a call.
    #[error("{call}: {message}")]
    StepFunctions {
        /// The call (`states:StartExecution ...`).
        call: String,
        /// What Step Functions said.
        message: String,
    },
    /// The handler's configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

/// What became of one trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The execution's name.
    pub execution_name: String,
    /// The playbook.
    pub playbook: String,
    /// The instance.
    pub instance: String,
    /// `started`, `waiting-for-approval` (started behind its approval
    /// gate) or `already-started`.
    pub outcome: String,
    /// The execution's ARN, when one was started or found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
}

/// What the handler answers (and logs).
#[derive(Debug, Serialize)]
pub struct Handled {
    /// The event's alerts.
    pub alerts: Vec<Alert>,
    /// What each trigger became.
    pub outcomes: Vec<Outcome>,
    /// What started nothing, and why.
    pub skipped: Vec<triggers::Skip>,
    /// Why nothing started, when nothing did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The handler's configuration and its Step Functions client.
#[derive(Debug)]
pub struct Notifier {
    /// Step Functions, where the playbooks are deployed.
    pub sfn: aws_sdk_sfn::Client,
    /// The rules.
    pub triggers: Triggers,
    /// The state machine of each playbook (ARN by playbook name).
    pub state_machines: BTreeMap<String, String>,
    /// The account and region of this deployment, for alerts that do not
    /// say theirs.
    pub account: String,
    /// The deployment's region.
    pub region: String,
}

impl Notifier {
    /// The configuration from the environment: `FIREBREAK_STATE_MACHINES`
    /// (a JSON object, playbook name to state machine ARN) and
    /// `FIREBREAK_TRIGGERS` (the rules as TOML; the built-in ones when
    /// unset).
    pub fn from_env(
        sfn: aws_sdk_sfn::Client,
        account: String,
        region: String,
    ) -> Result<Notifier, NotifyError> {
        let machines = std::env::var("FIREBREAK_STATE_MACHINES")
            .map_err(|_| NotifyError::Config("FIREBREAK_STATE_MACHINES is not set".into()))?;
        let state_machines: BTreeMap<String, String> =
            serde_json::from_str(&machines).map_err(|e| {
                NotifyError::Config(format!(
                    "FIREBREAK_STATE_MACHINES is not a JSON object of ARNs: {e}"
                ))
            })?;
        let triggers = match std::env::var("FIREBREAK_TRIGGERS") {
            Ok(text) => Triggers::from_toml(&text, "FIREBREAK_TRIGGERS")
                .map_err(|e| NotifyError::Config(e.to_string()))?,
            Err(_) => Triggers::defaults(),
        };
        Ok(Notifier {
            sfn,
            triggers,
            state_machines,
            account,
            region,
        })
    }

    /// Handles one event.
    pub async fn handle(&self, event: &Value, now: DateTime<Utc>) -> Result<Handled, NotifyError> {
        let alerts = alerts::parse_value(event)?;
        let mut decision = triggers::decide(&alerts, &self.triggers);
        let recent = if decision.triggers.is_empty() {
            0
        } else {
            self.started_within_hour(now).await?
        };
        // One deployment serves one account: every automatic run counts.
        decision.limit(&self.triggers.guard, |_| recent);
        let mut outcomes = Vec::new();
        for t in &decision.triggers {
            let alert = alerts
                .iter()
                .find(|a| a.finding_id == t.finding_id)
                .ok_or_else(|| {
                    NotifyError::Config(format!("trigger without its finding {}", t.finding_id))
                })?;
            outcomes.push(self.start(t, alert, now).await?);
        }
        Ok(Handled {
            alerts,
            outcomes,
            skipped: decision.skipped,
            reason: decision.reason,
        })
    }

    /// Automatic executions (named `fb-...`) started within the hour, over
    /// every playbook's state machine.
    async fn started_within_hour(&self, now: DateTime<Utc>) -> Result<u32, NotifyError> {
        let since = now - chrono::Duration::hours(1);
        let mut n = 0u32;
        for arn in self.state_machines.values() {
            let mut pages = self
                .sfn
                .list_executions()
                .state_machine_arn(arn)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| NotifyError::StepFunctions {
                    call: format!("states:ListExecutions {arn}"),
                    message: e.message().unwrap_or("no message").to_string(),
                })?;
                let recent = page.executions().iter().filter(|x| {
                    x.name().starts_with("fb-")
                        && DateTime::from_timestamp(x.start_date().secs(), 0)
                            .is_some_and(|t| t >= since)
                });
                n = n.saturating_add(u32::try_from(recent.count()).unwrap_or(u32::MAX));
            }
        }
        Ok(n)
    }

    /// The case a trigger opens: a new case id, the default buckets of
    /// the alert's account and region, the default options.
    fn case(
        &self,
        t: &Trigger,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Result<CaseFile, NotifyError> {
        let instance: InstanceId = t
            .instance
            .parse()
            .map_err(|e: firebreak_steps::ids::IdError| NotifyError::Config(e.to_string()))?;
        let account = alert
            .account
            .clone()
            .unwrap_or_else(|| self.account.clone());
        let region = alert.region.clone().unwrap_or_else(|| self.region.clone());
        let mut options = CaseOptions::default();
        options.memory.tools_bucket = default_tools_bucket(&account, &region);
        Ok(CaseFile {
            case: CaseInfo {
                case_id: CaseId::generate(now, &instance).to_string(),
                instance_id: t.instance.clone(),
                evidence_bucket: default_evidence_bucket(&account, &region),
                account_id: account,
                region,
                opened_at: now,
                actor: format!(
                    "firebreak notify ({} finding {})",
                    alert.source.as_str(),
                    alert.finding_id
                ),
                evidence_lock: Default::default(),
            },
            options,
        })
    }

    async fn start(
        &self,
        t: &Trigger,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Result<Outcome, NotifyError> {
        let mut out = Outcome {
            execution_name: t.execution_name.clone(),
            playbook: t.playbook.clone(),
            instance: t.instance.clone(),
            outcome: String::new(),
            execution_arn: None,
        };
        let arn = self
            .state_machines
            .get(&t.playbook)
            .ok_or_else(|| NotifyError::NoStateMachine(t.playbook.clone()))?;
        // Looked up first: a running execution started with the same input
        // is returned by StartExecution as if new (idempotent), and a
        // finished one refused; either way it is the same run.
        let existing = execution_arn(arn, &t.execution_name);
        match self
            .sfn
            .describe_execution()
            .execution_arn(&existing)
            .send()
            .await
        {
            Ok(_) => {
                out.outcome = "already-started".into();
                out.execution_arn = Some(existing);
                return Ok(out);
            }
            Err(e) if e.code() == Some("ExecutionDoesNotExist") => {}
            Err(e) => {
                return Err(NotifyError::StepFunctions {
                    call: format!("states:DescribeExecution {existing}"),
                    message: e.message().unwrap_or("no message").to_string(),
                })
            }
        }
        // After the lookup: a finding delivered again is its run, even
        // when the hour's limit is reached since. A run that needs
        // approval starts behind its gate: it changes nothing until
        // `firebreak approve` answers the token it announces.
        let mut case = self.case(t, alert, now)?;
        if t.approval {
            case.options.approval = Some(
                t.approval_reason
                    .clone()
                    .unwrap_or_else(|| "a trigger asks for approval".into()),
            );
        }
        let input = serde_json::to_string(&case).map_err(|e| NotifyError::Config(e.to_string()))?;
        let call = format!("states:StartExecution {arn} name {}", t.execution_name);
        match self
            .sfn
            .start_execution()
            .state_machine_arn(arn)
            .name(&t.execution_name)
            .input(input)
            .send()
            .await
        {
            Ok(r) => {
                out.outcome = if t.approval {
                    "waiting-for-approval"
                } else {
                    "started"
                }
                .into();
                out.execution_arn = Some(r.execution_arn().to_string());
            }
            Err(e) if e.code() == Some("ExecutionAlreadyExists") => {
                out.outcome = "already-started".into();
                out.execution_arn = Some(existing);
            }
            Err(e) => {
                return Err(NotifyError::StepFunctions {
                    call,
                    message: e.message().unwrap_or("no message").to_string(),
                })
            }
        }
        Ok(out)
    }
}

/// The ARN of a state machine's execution of that name.
fn execution_arn(state_machine: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        state_machine.replacen(":stateMachine:", ":execution:", 1)
    )
}

impl From<NotifyError> for lambda_runtime::Diagnostic {
    fn from(e: NotifyError) -> Self {
        use firebreak_workflows::ErrorName;
        let name = match &e {
            NotifyError::Event(_) | NotifyError::NoStateMachine(_) | NotifyError::Config(_) => {
                ErrorName::InvalidInput
            }
            NotifyError::StepFunctions { .. } => ErrorName::AwsRequestFailed,
        };
        crate::diagnostic(name, e.to_string())
    }
}
