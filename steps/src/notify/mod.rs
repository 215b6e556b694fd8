//! Telling the responders: a run announces its start and its end (with
//! the containment verdict and the commands to follow up), and asks for
//! approval before its first change when it must. Messages go to an SNS
//! topic and a Slack-compatible incoming webhook (ChatOps), whichever the
//! context names ([`NotifyTargets`]); with neither, the steps succeed and
//! say that nobody was told.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::case::CaseInfo;
use crate::context::{NotifyTargets, StepContext, StepLog};
use crate::error::{aws_error, StepError};
use crate::step::Step;

/// The longest a webhook may take to answer: a chat service that hangs
/// must not hold a containment step for the SDK's minutes.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// SNS subjects are at most 100 ASCII characters, without line breaks.
const SUBJECT_MAX: usize = 100;

/// One message, sent to every target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// A one-line summary (the SNS subject, the first line in chat).
    pub subject: String,
    /// The whole message, plain text.
    pub text: String,
}

/// Where a message went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sent {
    /// The SNS message id, when it went to a topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_message_id: Option<String>,
    /// Whether the webhook accepted it (2xx).
    #[serde(default)]
    pub webhook: bool,
    /// Whether this was a dry run (nothing was sent).
    #[serde(default)]
    pub dry_run: bool,
}

/// The SNS subject: ASCII, one line, at most 100 characters.
fn subject(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                ' '
            }
        })
        .collect();
    clean.chars().take(SUBJECT_MAX).collect()
}

/// The webhook's host, for logs (the URL's path is the secret).
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "(an address that does not parse)".into())
}

/// Sends `msg` to every target of the context: both are tried, and the
/// step fails (naming each failure) if either did.
pub async fn send(ctx: &StepContext, log: &StepLog<'_>, msg: &Message) -> Result<Sent, StepError> {
    let targets: &NotifyTargets = &ctx.notify;
    let mut sent = Sent {
        dry_run: ctx.is_dry_run(),
        ..Sent::default()
    };
    let mut errors: Vec<StepError> = Vec::new();
    if let Some(topic) = &targets.topic_arn {
        if ctx.is_dry_run() {
            log.not_checked(
                "sns:Publish",
                format!("{topic}: {}", msg.subject),
                "not sent in a dry run; needs sns:Publish on the topic",
            );
        } else {
            match ctx
                .aws
                .sns
                .publish()
                .topic_arn(topic)
                .subject(subject(&msg.subject))
                .message(&msg.text)
                .send()
                .await
            {
                Ok(out) => {
                    log.done("sns:Publish", format!("{topic}: {}", msg.subject));
                    sent.sns_message_id = out.message_id().map(str::to_string);
                }
                Err(e) => errors.push(aws_error(&format!("sns:Publish {topic}"), e)),
            }
        }
    }
    if let Some(url) = &targets.webhook_url {
        let host = host_of(url);
        if ctx.is_dry_run() {
            log.not_checked(
                "webhook:POST",
                format!("{host}: {}", msg.subject),
                "not sent in a dry run",
            );
        } else {
            match post_webhook(url, msg).await {
                Ok(()) => {
                    log.done("webhook:POST", format!("{host}: {}", msg.subject));
                    sent.webhook = true;
                }
                Err(why) => errors.push(StepError::new(
                    ErrorName::AwsRequestFailed,
                    format!("the webhook at {host} refused the message: {why}"),
                )),
            }
        }
    }
    match errors.len() {
        0 => Ok(sent),
        1 => Err(errors.remove(0)),
        _ => Err(StepError::new(
            errors[0].name,
            errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// POSTs `{"text": ...}`, the body every Slack-compatible incoming webhook
/// (Slack, Mattermost, Rocket.Chat, Google Chat) reads.
async fn post_webhook(url: &str, msg: &Message) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(url)
        .json(&serde_json::json!({ "text": format!("*{}*\n{}", msg.subject, msg.text) }))
        .send()
        .await
        // Without the URL: it is the webhook's secret.
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let body = response.text().await.unwrap_or_default();
        Err(format!(
            "HTTP {status}{}",
            if body.is_empty() {
                String::new()
            } else {
                format!(": {}", body.chars().take(200).collect::<String>())
            }
        ))
    }
}

fn notify_iam() -> Vec<Statement> {
    // The topic is the deployment's: the stack scopes this to its ARN.
    vec![Statement::allow(["sns:Publish"], ["arn:aws:sns:*:*:*"])]
}

fn notify_errors() -> Vec<ErrorName> {
    vec![
        ErrorName::InvalidInput,
        ErrorName::AccessDenied,
        ErrorName::Throttled,
        ErrorName::AwsUnavailable,
        ErrorName::AwsRequestFailed,
    ]
}

/// Asks a person to approve the run before its first change, with the
/// task token the run waits on and the commands that answer it. The
/// step returns at once; the state waits (`.waitForTaskToken`) until
/// `firebreak approve` or `firebreak deny` answers.
#[derive(Debug)]
pub struct RequestApproval;

/// What [`RequestApproval`] takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRequest {
    /// The case.
    pub case_id: String,
    /// The instance the run would contain.
    pub instance_id: String,
    /// Why the run waits (the rule, or the hourly limit).
    pub reason: String,
    /// The token to answer (`$$.Task.Token`, bound by the compiler).
    pub task_token: String,
}

/// The approval: what the step reports when it has asked, and what the
/// answer (`firebreak approve`) carries, which becomes the state's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Approval {
    /// Where the request went (the step's own output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Sent>,
    /// Who approved (the answer): the principal or user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// What they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A dry run does not wait: it plans on as if approved.
    #[serde(default)]
    pub dry_run: bool,
}

impl StepDef for RequestApproval {
    const NAME: &'static str = "request_approval";
    const SUMMARY: &'static str =
        "Ask the responders to approve the run (SNS, webhook) and wait for the answer.";
    const MUTATES: bool = false;
    type Input = ApprovalRequest;
    type Output = Approval;

    fn errors() -> Vec<ErrorName> {
        let mut e = notify_errors();
        e.push(ErrorName::ApprovalDenied);
        e
    }

    fn iam() -> Vec<Statement> {
        notify_iam()
    }
}

/// The approval request's text: what waits, why, and the two answers.
pub fn approval_message(input: &ApprovalRequest) -> Message {
    Message {
        subject: format!(
            "firebreak: approval needed to contain {} (case {})",
            input.instance_id, input.case_id
        ),
        text: format!(
            "A firebreak run waits for approval before its first change to {instance} (case {case}).\nWhy: {reason}\n\nApprove:  firebreak approve {token}\nDeny:     firebreak deny {token} --reason 'WHY'\n\nNothing has been changed yet; a denied run changes nothing.",
            instance = input.instance_id,
            case = input.case_id,
            reason = input.reason,
            token = input.task_token,
        ),
    }
}

#[async_trait]
impl Step for RequestApproval {
    async fn run(ctx: &StepContext, input: ApprovalRequest) -> Result<Approval, StepError> {
        if input.task_token.is_empty() {
            return Err(StepError::new(
                ErrorName::InvalidInput,
                "request_approval has no task token to wait on",
            ));
        }
        let log = ctx.log(Self::NAME);
        let sent = send(ctx, &log, &approval_message(&input)).await?;
        Ok(Approval {
            dry_run: sent.dry_run,
            requested: Some(sent),
            ..Approval::default()
        })
    }
}

/// The run as the announcements read it: the case file, of which only
/// these parts matter (the rest is ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunState {
    /// The case.
    pub case: CaseInfo,
    /// The approval, when the run waited for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// The isolation's output, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Value>,
    /// The failures recorded so far, by step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, Value>,
}

/// Announces that a run has started on an instance.
#[derive(Debug)]
pub struct AnnounceStart;

/// Announces the end of a run: the containment verdict, every failure,
/// and the commands to follow up.
#[derive(Debug)]
pub struct AnnounceEnd;

impl StepDef for AnnounceStart {
    const NAME: &'static str = "announce_start";
    const SUMMARY: &'static str = "Tell the responders (SNS, webhook) that containment starts.";
    const MUTATES: bool = false;
    type Input = RunState;
    type Output = Sent;

    fn errors() -> Vec<ErrorName> {
        notify_errors()
    }

    fn iam() -> Vec<Statement> {
        notify_iam()
    }
}

impl StepDef for AnnounceEnd {
    const NAME: &'static str = "announce_end";
    const SUMMARY: &'static str =
        "Tell the responders (SNS, webhook) how containment ended, with the commands to follow up.";
    const MUTATES: bool = false;
    type Input = RunState;
    type Output = Sent;

    fn errors() -> Vec<ErrorName> {
        notify_errors()
    }

    fn iam() -> Vec<Statement> {
        notify_iam()
    }
}

/// The start announcement.
pub fn start_message(run: &RunState) -> Message {
    let c = &run.case;
    let approved = match &run.approval {
        Some(Approval {
            approved_by: Some(who),
            ..
        }) => format!("\nApproved by {who}."),
        _ => String::new(),
    };
    Message {
        subject: format!(
            "firebreak: containing {} (case {})",
            c.instance_id, c.case_id
        ),
        text: format!(
            "firebreak is containing {} in account {} ({}), case {}, started by {}.{approved}",
            c.instance_id, c.account_id, c.region, c.case_id, c.actor
        ),
    }
}

/// The containment verdict of a finished run, in a few words.
pub fn verdict(run: &RunState) -> String {
    let failed: Vec<&str> = run
        .failures
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("announce"))
        .collect();
    match (run.isolation.is_some(), failed.is_empty()) {
        (true, true) => "contained: every step succeeded".into(),
        (true, false) => format!("isolated, with failures: {}", failed.join(", ")),
        (false, _) => format!(
            "NOT isolated: network isolation failed{}",
            if failed.is_empty() {
                String::new()
            } else {
                format!(" (failures: {})", failed.join(", "))
            }
        ),
    }
}

/// The end announcement: verdict, failures with their causes, commands.
pub fn end_message(run: &RunState) -> Message {
    let c = &run.case;
    let mut failures = String::new();
    for (step, f) in &run.failures {
        let error = f.get("Error").and_then(Value::as_str).unwrap_or("?");
        let cause = f.get("Cause").and_then(Value::as_str).unwrap_or("");
        failures.push_str(&format!("\n- {step}: {error}: {cause}"));
    }
    if !failures.is_empty() {
        failures = format!("\n\nFailures:{failures}");
    }
    Message {
        subject: format!(
            "firebreak: {} {} (case {})",
            c.instance_id,
            verdict(run),
            c.case_id
        ),
        text: format!(
            "{instance} (account {account}, {region}), case {case}: {verdict}.{failures}\n\nReport:          firebreak report --case {case} --evidence-bucket {bucket}\nVerify custody:  firebreak evidence verify --case {case} --evidence-bucket {bucket}\nRelease:         firebreak release --instance {instance} --case {case}",
            instance = c.instance_id,
            account = c.account_id,
            region = c.region,
            case = c.case_id,
            verdict = verdict(run),
            bucket = c.evidence_bucket,
        ),
    }
}

#[async_trait]
impl Step for AnnounceStart {
    async fn run(ctx: &StepContext, input: RunState) -> Result<Sent, StepError> {
        let log = ctx.log(Self::NAME);
        send(ctx, &log, &start_message(&input)).await
    }
}

#[async_trait]
impl Step for AnnounceEnd {
    async fn run(ctx: &StepContext, input: RunState) -> Result<Sent, StepError> {
        let log = ctx.log(Self::NAME);
        send(ctx, &log, &end_message(&input)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RunState {
        serde_json::from_value(serde_json::json!({
            "case": {
                "case_id": "fb-20261206-0001", "instance_id": "i-0123456789abcdef0",
                "account_id": "123456789012", "region": "eu-west-1",
                "opened_at": "2026-12-06T10:00:00Z", "actor": "arn:aws:iam::123456789012:user/ana",
                "evidence_bucket": "ev"
            },
            "options": {"ignored": true},
            "isolation": {"interfaces": []},
            "failures": {"snapshot_volumes": {"Error": "Firebreak.AccessDenied", "Cause": "no"}}
        }))
        .unwrap()
    }

    #[test]
    fn the_end_message_names_the_verdict_failures_and_commands() {
        let m = end_message(&state());
        assert!(m
            .subject
            .contains("isolated, with failures: snapshot_volumes"));
        assert!(m
            .text
            .contains("- snapshot_volumes: Firebreak.AccessDenied: no"));
        assert!(m
            .text
            .contains("firebreak release --instance i-0123456789abcdef0 --case fb-20261206-0001"));
    }

    #[test]
    fn without_isolation_the_verdict_says_not_isolated() {
        let mut s = state();
        s.isolation = None;
        assert!(verdict(&s).starts_with("NOT isolated"));
    }

    #[test]
    fn subjects_are_one_ascii_line_of_at_most_100() {
        let s = subject(&format!("é\nline {}", "x".repeat(200)));
        assert!(s.is_ascii() && !s.contains('\n') && s.len() == 100);
    }

    #[test]
    fn the_approval_request_carries_both_answers() {
        let m = approval_message(&ApprovalRequest {
            case_id: "c".into(),
            instance_id: "i-1".into(),
            reason: "sixth in the hour".into(),
            task_token: "tok".into(),
        });
        assert!(m.text.contains("firebreak approve tok"));
        assert!(m.text.contains("firebreak deny tok --reason"));
    }
}
