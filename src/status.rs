//! `firebreak status EXECUTION`: where a run stands. A local run is read
//! from its journal (the name `respond` printed); a run in Step Functions
//! from its execution ARN.

use clap::Args;
use firebreak_workflows::exec::HistoryEvent;
use serde_json::{json, Value};

use crate::session::{journal_path, Session};
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The execution: a local run's name (as `respond` printed it), or a
    /// Step Functions execution ARN.
    pub execution: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// The state the run is in: the last one entered and not yet left, else
/// the last one left.
pub(crate) fn current_state(events: &[HistoryEvent]) -> Option<String> {
    let name = |e: &HistoryEvent| {
        e.detail()
            .and_then(|d| d.get("name").and_then(Value::as_str).map(str::to_string))
    };
    let mut open: Vec<String> = Vec::new();
    let mut last_left = None;
    for e in events {
        if e.kind.ends_with("StateEntered") {
            open.extend(name(e));
        } else if e.kind.ends_with("StateExited") {
            if let Some(n) = name(e) {
                if let Some(i) = open.iter().rposition(|o| *o == n) {
                    open.remove(i);
                }
                last_left = Some(n);
            }
        }
    }
    open.pop().or(last_left)
}

/// Every failure in the history (a task, a Lambda, the execution), with
/// the state it happened in.
pub(crate) fn failures(events: &[HistoryEvent]) -> Vec<Value> {
    let mut state: Option<String> = None;
    let mut out = Vec::new();
    for e in events {
        let d = e.detail();
        if e.kind.ends_with("StateEntered") {
            state = d
                .as_ref()
                .and_then(|d| d.get("name").and_then(Value::as_str).map(str::to_string));
        }
        if matches!(
            e.kind.as_str(),
            "TaskFailed"
                | "LambdaFunctionFailed"
                | "TaskTimedOut"
                | "LambdaFunctionTimedOut"
                | "ExecutionFailed"
        ) {
            let get = |k: &str| {
                d.as_ref()
                    .and_then(|d| d.get(k).cloned())
                    .unwrap_or(Value::Null)
            };
            out.push(json!({
                "state": state,
                "event": e.kind,
                "error": get("error"),
                "cause": get("cause"),
            }));
        }
    }
    out
}

/// A local run, from its journal.
fn local(name: &str) -> anyhow::Result<Value> {
    let path = journal_path(name);
    if !path.exists() {
        return Err(BadInput(format!(
            "no local run named {name} (no journal at {}); for a run in Step Functions give its execution ARN",
            path.display()
        ))
        .into());
    }
    // Read, not opened: a run going on holds its journal.
    let peek = firebreak_workflows::exec::Journal::inspect(&path)
        .map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    let (start, events) = (peek.start, peek.events);
    let ended = events.iter().rev().find(|e| {
        matches!(
            e.kind.as_str(),
            "ExecutionSucceeded" | "ExecutionFailed" | "ExecutionTimedOut" | "ExecutionAborted"
        )
    });
    let status = match ended.map(|e| e.kind.as_str()) {
        Some("ExecutionSucceeded") => "SUCCEEDED",
        Some("ExecutionFailed") => "FAILED",
        Some("ExecutionTimedOut") => "TIMED_OUT",
        Some(_) => "ABORTED",
        None if peek.running => "RUNNING",
        None => "INTERRUPTED",
    };
    // A task waiting for its token says so in the token store (its
    // events are written once it ends).
    let waiting: Option<String> = crate::run::token_store()
        .ok()
        .map(|store| store.pending())
        .unwrap_or_default()
        .into_iter()
        .find(|(_, r)| r.get("execution").and_then(Value::as_str) == Some(name))
        .and_then(|(_, r)| r.get("state").and_then(Value::as_str).map(str::to_string));
    let state = waiting.clone().or_else(|| current_state(&events));
    Ok(json!({
        "execution": name,
        "where": "local",
        "journal": path.display().to_string(),
        "status": status,
        "started": start.start_time,
        "stopped": ended.map(|e| firebreak_workflows::time::format_timestamp(e.timestamp)),
        "state": state,
        "waiting_for_approval": status == "RUNNING" && waiting.as_deref() == Some("WaitForApproval"),
        "waiting_for_token": status == "RUNNING" && waiting.is_some(),
        "failures": failures(&events),
        "case": start.input.pointer("/case/case_id"),
        "instance": start.input.pointer("/case/instance_id"),
    }))
}

fn human(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let mut o = format!(
        "{} ({}): {}\n  started {}{}\n  state   {}\n",
        s("execution"),
        s("where"),
        s("status"),
        s("started"),
        v.get("stopped")
            .and_then(Value::as_str)
            .map(|t| format!(", stopped {t}"))
            .unwrap_or_default(),
        s("state"),
    );
    if v["waiting_for_approval"] == true {
        o.push_str("  waiting for approval: `firebreak approve TOKEN` or `firebreak deny TOKEN --reason WHY` (the token was said when it started waiting)\n");
    }
    if v["status"] == "INTERRUPTED" {
        o.push_str(&format!(
            "  interrupted: `firebreak resume {}` finishes it\n",
            s("execution")
        ));
    }
    for f in v["failures"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "  failed in {}: {}: {}\n",
            f["state"].as_str().unwrap_or("-"),
            f["error"].as_str().unwrap_or("-"),
            f["cause"].as_str().unwrap_or("")
        ));
    }
    o
}

pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let remote = args.execution.starts_with("arn:") && args.execution.contains(":execution:");
    let v = if remote {
        let session = Session::open(&args.aws, firebreak_steps::Mode::Live, true).await?;
        let sfn = aws_sdk_sfn::Client::new(&session.config);
        crate::remote::status(&sfn, &args.execution).await?
    } else {
        local(&args.execution)?
    };
    match args.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        OutputFormat::Human => out!("{}", human(&v)),
    }
    Ok(exit::OK)
}
