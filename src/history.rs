//! Where a run stands, read from its history (local or Step Functions):
//! the state it is in and the failures so far.

use firebreak_workflows::exec::HistoryEvent;
use serde_json::{json, Value};

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
