//! Runs in the deployed state machines: `respond --remote` starts one and
//! follows its history with the progress lines of a local run, and
//! `firebreak status` says where a run stands, local or remote.

use std::time::Duration;

use aws_sdk_sfn::error::ProvideErrorMetadata as _;
use aws_sdk_sfn::types::HistoryEvent as SfnEvent;
use firebreak_workflows::exec::{HistoryEvent, Outcome, Status};
use serde_json::{json, Value};

use crate::session::Session;
use crate::BadInput;

/// The tag the stack puts on each playbook's state machine.
pub(crate) const PLAYBOOK_TAG: &str = "firebreak:playbook";

/// How often a followed execution's history is read: GetExecutionHistory
/// is throttled at a few calls per second per account, and a second keeps
/// the lines live enough for a person.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// An SFN call that failed, with its code and message.
fn sfn_error<E: aws_sdk_sfn::error::ProvideErrorMetadata>(call: &str, e: &E) -> anyhow::Error {
    anyhow::anyhow!(
        "{call}: {}: {}",
        e.code().unwrap_or("error"),
        e.message().unwrap_or("no message")
    )
}

/// The state machine of a playbook: the one tagged
/// `firebreak:playbook=NAME` in the account and region.
pub(crate) async fn find_state_machine(
    sfn: &aws_sdk_sfn::Client,
    playbook: &str,
    session: &Session,
) -> anyhow::Result<String> {
    let mut pages = sfn.list_state_machines().into_paginator().send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sfn_error("states:ListStateMachines", &e))?;
        for m in page.state_machines() {
            let tags = sfn
                .list_tags_for_resource()
                .resource_arn(m.state_machine_arn())
                .send()
                .await
                .map_err(|e| sfn_error("states:ListTagsForResource", &e))?;
            if tags
                .tags()
                .iter()
                .any(|t| t.key() == Some(PLAYBOOK_TAG) && t.value() == Some(playbook))
            {
                found.push(m.state_machine_arn().to_string());
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(BadInput(format!(
            "no state machine tagged {PLAYBOOK_TAG}={playbook} in account {} region {}: deploy firebreak's stack there, or pass --state-machine ARN",
            session.who.account_id, session.region
        ))
        .into()),
        _ => Err(BadInput(format!(
            "{} state machines are tagged {PLAYBOOK_TAG}={playbook} ({}): pass --state-machine ARN",
            found.len(),
            found.join(", ")
        ))
        .into()),
    }
}

/// A Step Functions history event as firebreak's (the details the
/// progress lines and the report read; the others are left out).
fn convert(e: &SfnEvent) -> Option<HistoryEvent> {
    let kind = e.r#type().as_str().to_string();
    let mut v = json!({
        "id": e.id(),
        "previousEventId": e.previous_event_id(),
        "timestamp": e.timestamp().fmt(aws_smithy_types::date_time::Format::DateTime).ok()?,
        "type": kind,
    });
    let failure =
        |error: Option<&str>, cause: Option<&str>| json!({"error": error, "cause": cause});
    let details = if let Some(d) = e.state_entered_event_details() {
        Some((
            "stateEnteredEventDetails",
            json!({"name": d.name(), "input": d.input()}),
        ))
    } else if let Some(d) = e.state_exited_event_details() {
        Some((
            "stateExitedEventDetails",
            json!({"name": d.name(), "output": d.output()}),
        ))
    } else if let Some(d) = e.task_failed_event_details() {
        Some(("taskFailedEventDetails", failure(d.error(), d.cause())))
    } else if let Some(d) = e.lambda_function_failed_event_details() {
        Some((
            "lambdaFunctionFailedEventDetails",
            failure(d.error(), d.cause()),
        ))
    } else if let Some(d) = e.execution_failed_event_details() {
        Some(("executionFailedEventDetails", failure(d.error(), d.cause())))
    } else if let Some(d) = e.task_timed_out_event_details() {
        Some(("taskTimedOutEventDetails", failure(d.error(), d.cause())))
    } else if let Some(d) = e.lambda_function_timed_out_event_details() {
        Some((
            "lambdaFunctionTimedOutEventDetails",
            failure(d.error(), d.cause()),
        ))
    } else if let Some(d) = e.execution_timed_out_event_details() {
        Some((
            "executionTimedOutEventDetails",
            failure(d.error(), d.cause()),
        ))
    } else {
        e.execution_aborted_event_details().map(|d| {
            (
                "executionAbortedEventDetails",
                failure(d.error(), d.cause()),
            )
        })
    };
    if let (Some((key, d)), Some(m)) = (details, v.as_object_mut()) {
        m.insert(key.into(), d);
    }
    serde_json::from_value(v).ok()
}

/// Every event of the execution after `after` (by id), in order. Read
/// newest first, and only as far back as `after`: following a long run
/// reads each event about once, not the whole history every second.
async fn events_after(
    sfn: &aws_sdk_sfn::Client,
    execution: &str,
    after: i64,
) -> anyhow::Result<Vec<SfnEvent>> {
    let mut out = Vec::new();
    let mut pages = sfn
        .get_execution_history()
        .execution_arn(execution)
        .reverse_order(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sfn_error("states:GetExecutionHistory", &e))?;
        out.extend(page.events().iter().filter(|e| e.id() > after).cloned());
        // A page that reaches back to what was read already is the last
        // needed (whatever order the service returned it in).
        if page.events().iter().any(|e| e.id() <= after) {
            break;
        }
    }
    out.sort_by_key(SfnEvent::id);
    Ok(out)
}

/// Follows an execution to its end, telling each event to `seen` as it
/// appears; returns how it ended and its history.
pub(crate) async fn follow(
    sfn: &aws_sdk_sfn::Client,
    execution: &str,
    seen: impl Fn(&HistoryEvent),
) -> anyhow::Result<(Outcome, Vec<HistoryEvent>)> {
    let mut history: Vec<HistoryEvent> = Vec::new();
    let mut last = 0i64;
    loop {
        let d = sfn
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .map_err(|e| sfn_error("states:DescribeExecution", &e))?;
        // Read after the status: a finished execution's history is whole.
        for e in events_after(sfn, execution, last).await? {
            last = last.max(e.id());
            if let Some(h) = convert(&e) {
                seen(&h);
                history.push(h);
            }
        }
        let status = match d.status().as_str() {
            "RUNNING" | "PENDING_REDRIVE" => None,
            "SUCCEEDED" => Some(Status::Succeeded),
            "TIMED_OUT" => Some(Status::TimedOut),
            // ABORTED (stopped by someone) is a failure of the run; the
            // error and cause DescribeExecution gives say who.
            _ => Some(Status::Failed),
        };
        if let Some(status) = status {
            return Ok((
                Outcome {
                    status,
                    output: d.output().and_then(|o| serde_json::from_str(o).ok()),
                    error: d.error().map(str::to_string),
                    cause: d.cause().map(str::to_string),
                },
                history,
            ));
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Starts an execution, or finds the one of that name started before
/// (Step Functions keeps names unique per state machine for 90 days).
pub(crate) async fn start(
    sfn: &aws_sdk_sfn::Client,
    state_machine: &str,
    name: &str,
    input: &Value,
) -> anyhow::Result<String> {
    let r = sfn
        .start_execution()
        .state_machine_arn(state_machine)
        .name(name)
        .input(input.to_string())
        .send()
        .await;
    match r {
        Ok(r) => Ok(r.execution_arn().to_string()),
        // The same name started before (a finding delivered again): that
        // execution is the run, and it is followed instead.
        Err(e) if e.code() == Some("ExecutionAlreadyExists") => {
            let arn = format!(
                "{}:{name}",
                state_machine.replacen(":stateMachine:", ":execution:", 1)
            );
            say!("firebreak: an execution named {name} was started before; following it: {arn}");
            Ok(arn)
        }
        Err(e) => {
            let err = sfn_error(&format!("states:StartExecution {state_machine}"), &e);
            Err(match e.code() {
                Some("StateMachineDoesNotExist" | "InvalidArn" | "InvalidName") => {
                    BadInput(err.to_string()).into()
                }
                _ => err,
            })
        }
    }
}

/// Where a remote execution stands: status, the state it is in (or
/// ended in) and the failures so far.
pub(crate) async fn status(sfn: &aws_sdk_sfn::Client, execution: &str) -> anyhow::Result<Value> {
    let d = sfn
        .describe_execution()
        .execution_arn(execution)
        .send()
        .await
        .map_err(|e| {
            let err = sfn_error("states:DescribeExecution", &e);
            if e.code() == Some("ExecutionDoesNotExist") {
                BadInput(err.to_string()).into()
            } else {
                err
            }
        })?;
    let events: Vec<HistoryEvent> = events_after(sfn, execution, 0)
        .await?
        .iter()
        .filter_map(convert)
        .collect();
    Ok(json!({
        "execution": execution,
        "where": "step-functions",
        "status": d.status().as_str(),
        "started": d.start_date().fmt(aws_smithy_types::date_time::Format::DateTime).ok(),
        "stopped": d.stop_date().and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
        "state": crate::history::current_state(&events),
        "failures": crate::history::failures(&events),
        "error": d.error(),
        "cause": d.cause(),
    }))
}
