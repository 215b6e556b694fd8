//! `firebreak status EXECUTION`: where a run stands. A local run is read
//! from its journal (the name `respond` printed); a run in Step Functions
//! from its execution ARN.

use clap::Args;
use serde_json::{json, Value};

use crate::history::{current_state, failures};
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
    let waiting: Option<String> = crate::session::token_store()
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
