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
use firebreak_steps::containment::ec2::{Exemption, ForensicCopy};
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
    /// What the deployment sets for every automatic run.
    pub automatic: Automatic,
}

/// What a deployment sets for every run an alert starts (the stack's
/// parameters, through the function's environment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Automatic {
    /// Every run waits for approval before its first change.
    pub approval: bool,
    /// Isolation exemptions (SSH from the investigators, HTTPS to the SSM
    /// endpoints).
    pub exemptions: Vec<Exemption>,
    /// Forensic copies, when the deployment asks for them.
    pub forensic: Option<Forensic>,
    /// The deployment's evidence bucket (`FIREBREAK_EVIDENCE_BUCKET`);
    /// none: `firebreak-evidence-ACCOUNT-REGION` of the deployment.
    pub evidence_bucket: Option<String>,
    /// The deployment's tools bucket (`FIREBREAK_TOOLS_BUCKET`); none:
    /// `firebreak-tools-ACCOUNT-REGION` of the deployment.
    pub tools_bucket: Option<String>,
}

/// Where automatic runs copy the snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forensic {
    /// The KMS key the copies are encrypted with.
    pub kms_key: String,
    /// The region of the copies; none: the alert's.
    pub region: Option<String>,
    /// The account of the copies; none: the alert's.
    pub account: Option<String>,
    /// The role in that account that makes the copies.
    pub role: Option<String>,
}

impl Automatic {
    /// Reads `FIREBREAK_APPROVAL` (`true`/`false`), `FIREBREAK_ALLOW_SSH_FROM`
    /// and `FIREBREAK_ALLOW_HTTPS_TO` (comma-separated CIDRs or sg-...),
    /// `FIREBREAK_FORENSIC_KMS_KEY`, `_REGION`, `_ACCOUNT` and `_ROLE`
    /// through `var`; unset or empty is "none". Each value is checked.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Automatic, NotifyError> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let approval = match get("FIREBREAK_APPROVAL").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(NotifyError::Config(format!(
                    "FIREBREAK_APPROVAL is {other:?}: true or false"
                )))
            }
        };
        let mut exemptions = Vec::new();
        let list = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| {
                    v.split(',')
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        exemptions.extend(
            list("FIREBREAK_ALLOW_SSH_FROM")
                .into_iter()
                .map(Exemption::SshFrom),
        );
        exemptions.extend(
            list("FIREBREAK_ALLOW_HTTPS_TO")
                .into_iter()
                .map(Exemption::HttpsTo),
        );
        for e in &exemptions {
            e.validate()
                .map_err(|m| NotifyError::Config(format!("isolation exemption: {m}")))?;
        }
        let forensic = match (
            get("FIREBREAK_FORENSIC_KMS_KEY"),
            get("FIREBREAK_FORENSIC_REGION"),
            get("FIREBREAK_FORENSIC_ACCOUNT"),
            get("FIREBREAK_FORENSIC_ROLE"),
        ) {
            (None, None, None, None) => None,
            (None, ..) => {
                return Err(NotifyError::Config(
                    "a forensic region, account or role is set without FIREBREAK_FORENSIC_KMS_KEY (the copies' key)".into(),
                ))
            }
            (Some(_), _, Some(_), None) | (Some(_), _, None, Some(_)) => {
                return Err(NotifyError::Config(
                    "FIREBREAK_FORENSIC_ACCOUNT and FIREBREAK_FORENSIC_ROLE go together (the copies are made by the role, in that account)".into(),
                ))
            }
            (Some(kms_key), region, account, role) => Some(Forensic {
                kms_key,
                region,
                account,
                role,
            }),
        };
        Ok(Automatic {
            approval,
            exemptions,
            forensic,
            evidence_bucket: get("FIREBREAK_EVIDENCE_BUCKET"),
            tools_bucket: get("FIREBREAK_TOOLS_BUCKET"),
        })
    }

    /// Sets these on the options of a run in `region`.
    fn apply(&self, options: &mut CaseOptions, region: &str) {
        if self.approval {
            options.approval = Some("the deployment asks approval for every automatic run".into());
        }
        options.isolation_exemptions = self.exemptions.clone();
        options.forensic_copy = self.forensic.as_ref().map(|f| ForensicCopy {
            region: f.region.clone().unwrap_or_else(|| region.to_string()),
            kms_key_id: f.kms_key.clone(),
            account_id: f.account.clone(),
            role_arn: f.role.clone(),
        });
    }
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
        let mut triggers = match std::env::var("FIREBREAK_TRIGGERS") {
            Ok(text) => Triggers::from_toml(&text, "FIREBREAK_TRIGGERS")
                .map_err(|e| NotifyError::Config(e.to_string()))?,
            Err(_) => Triggers::defaults(),
        };
        if let Some(n) = std::env::var("FIREBREAK_MAX_PER_HOUR")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            triggers.guard.max_per_hour = n.trim().parse().map_err(|_| {
                NotifyError::Config(format!(
                    "FIREBREAK_MAX_PER_HOUR is {n:?}: a whole number of runs"
                ))
            })?;
        }
        let automatic = Automatic::from_vars(|name| std::env::var(name).ok())?;
        Ok(Notifier {
            sfn,
            triggers,
            state_machines,
            account,
            region,
            automatic,
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
        // The evidence stays with the deployment, whichever account the
        // instance is in (a member's is reached through its role).
        let mut options = CaseOptions::default();
        options.memory.tools_bucket = self
            .automatic
            .tools_bucket
            .clone()
            .unwrap_or_else(|| default_tools_bucket(&self.account, &self.region));
        self.automatic.apply(&mut options, &region);
        let evidence_bucket = self
            .automatic
            .evidence_bucket
            .clone()
            .unwrap_or_else(|| default_evidence_bucket(&self.account, &self.region));
        Ok(CaseFile {
            case: CaseInfo {
                case_id: CaseId::generate(now, &instance).to_string(),
                instance_id: t.instance.clone(),
                evidence_bucket,
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
        let approval = t.approval || self.automatic.approval;
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
                out.outcome = if approval {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Automatic, NotifyError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Automatic::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_stacks_parameters_become_each_runs_options() {
        // As the stack sets them when the parameters are left empty.
        let none = from(&[
            ("FIREBREAK_APPROVAL", "false"),
            ("FIREBREAK_ALLOW_SSH_FROM", ""),
            ("FIREBREAK_ALLOW_HTTPS_TO", ""),
            ("FIREBREAK_FORENSIC_KMS_KEY", ""),
            ("FIREBREAK_FORENSIC_REGION", ""),
        ])
        .unwrap();
        assert_eq!(none, Automatic::default());
        let set = from(&[
            ("FIREBREAK_APPROVAL", "true"),
            ("FIREBREAK_ALLOW_SSH_FROM", "203.0.113.0/24"),
            (
                "FIREBREAK_ALLOW_HTTPS_TO",
                "sg-0123456789abcdef0, 10.0.0.0/24",
            ),
            (
                "FIREBREAK_FORENSIC_KMS_KEY",
                "arn:aws:kms:eu-west-1:111122223333:key/k",
            ),
        ])
        .unwrap();
        let mut options = CaseOptions::default();
        set.apply(&mut options, "eu-west-1");
        assert!(options.approval.is_some());
        assert_eq!(
            options.isolation_exemptions,
            vec![
                Exemption::SshFrom("203.0.113.0/24".into()),
                Exemption::HttpsTo("sg-0123456789abcdef0".into()),
                Exemption::HttpsTo("10.0.0.0/24".into()),
            ]
        );
        let copy = options.forensic_copy.unwrap();
        assert_eq!(copy.region, "eu-west-1");
        assert_eq!(copy.account_id, None);
    }

    #[test]
    fn a_member_accounts_case_keeps_its_evidence_with_the_deployment() {
        // A GuardDuty finding from member account 111122223333, handled by
        // a deployment in 123456789012.
        let mut event: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/alerts/01-guardduty-backdoor-ec2.json"
        ))
        .unwrap();
        event["account"] = "111122223333".into();
        event["detail"]["accountId"] = "111122223333".into();
        let alerts = alerts::parse_value(&event).unwrap();
        let decision = triggers::decide(&alerts, &Triggers::defaults());
        let t = &decision.triggers[0];
        let config = aws_sdk_sfn::Config::builder()
            .behavior_version(aws_sdk_sfn::config::BehaviorVersion::latest())
            .region(aws_sdk_sfn::config::Region::new("eu-west-1"))
            .build();
        let mut n = Notifier {
            sfn: aws_sdk_sfn::Client::from_conf(config),
            triggers: Triggers::defaults(),
            state_machines: BTreeMap::new(),
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            automatic: Automatic::default(),
        };
        let case = n.case(t, &alerts[0], Utc::now()).unwrap();
        assert_eq!(case.case.account_id, "111122223333");
        assert_eq!(
            case.case.evidence_bucket,
            "firebreak-evidence-123456789012-eu-west-1"
        );
        assert_eq!(
            case.options.memory.tools_bucket,
            "firebreak-tools-123456789012-eu-west-1"
        );
        // The stack names its buckets.
        n.automatic = from(&[
            ("FIREBREAK_EVIDENCE_BUCKET", "evidence-b"),
            ("FIREBREAK_TOOLS_BUCKET", "tools-b"),
        ])
        .unwrap();
        let case = n.case(t, &alerts[0], Utc::now()).unwrap();
        assert_eq!(case.case.evidence_bucket, "evidence-b");
        assert_eq!(case.options.memory.tools_bucket, "tools-b");
    }

    #[test]
    fn a_wrong_setting_is_named() {
        for (vars, says) in [
            (vec![("FIREBREAK_APPROVAL", "yes")], "FIREBREAK_APPROVAL"),
            (vec![("FIREBREAK_ALLOW_SSH_FROM", "0.0.0.0/0")], "exemption"),
            (
                vec![("FIREBREAK_FORENSIC_REGION", "eu-west-1")],
                "FIREBREAK_FORENSIC_KMS_KEY",
            ),
            (
                vec![
                    ("FIREBREAK_FORENSIC_KMS_KEY", "k"),
                    ("FIREBREAK_FORENSIC_ACCOUNT", "111122223333"),
                ],
                "FIREBREAK_FORENSIC_ROLE",
            ),
        ] {
            let e = from(&vars).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
