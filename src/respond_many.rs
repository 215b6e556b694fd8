//! `firebreak respond --instance A --instance B ...`: several instances
//! contained at once, one case each, with one summary. Each instance is
//! its own run (its own journal, lock and case, so one that is
//! interrupted resumes alone), at most `--max-concurrency` at a time;
//! every instance id is checked, and every instance found, before any
//! run starts.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use firebreak_playbooks::report::Report;
use firebreak_steps::ids::{IdError, InstanceId};
use futures::StreamExt as _;

use crate::respond::{open_session, respond_one, RespondArgs};
use crate::summary::{self, OutputFormat};
use crate::{exit, BadInput};

/// One instance's outcome: its report, or why it could not run.
struct Outcome {
    instance: String,
    result: anyhow::Result<Report>,
}

/// The checks made before any instance is touched: ids valid and
/// distinct, no `--case` (each instance gets its own), the playbook and
/// options sound, and every instance present in the account.
async fn check_all(args: &RespondArgs) -> anyhow::Result<Vec<InstanceId>> {
    if args.case.is_some() {
        return Err(BadInput(
            "--case names one case, but several instances get one case each: leave --case out"
                .into(),
        )
        .into());
    }
    let mut ids: Vec<InstanceId> = Vec::new();
    for raw in &args.instance {
        let id: InstanceId = raw.parse().map_err(|e: IdError| BadInput(e.to_string()))?;
        if ids.contains(&id) {
            return Err(BadInput(format!("--instance {id} is given twice")).into());
        }
        ids.push(id);
    }
    crate::respond::checked_inputs(args)?;
    let session = open_session(args, None).await?;
    for id in &ids {
        session.case_tag(id).await?;
    }
    Ok(ids)
}

pub(crate) async fn run(args: RespondArgs) -> anyhow::Result<u8> {
    let ids = check_all(&args).await?;
    if !args.quiet {
        say!(
            "firebreak respond: {} on {} instances, at most {} at a time: {}",
            args.playbook,
            ids.len(),
            args.max_concurrency,
            ids.iter()
                .map(InstanceId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let args = &args;
    let limit = usize::try_from(args.max_concurrency).unwrap_or(1);
    let stop = stop_on_interrupt();
    let stop = &stop;
    let mut outcomes: Vec<Outcome> = futures::stream::iter(ids)
        .map(|id| async move {
            let instance = id.to_string();
            // After Ctrl-C, the instances still waiting for their turn
            // are not started (the running ones stop at a safe point).
            if stop.load(Ordering::SeqCst) {
                return Outcome {
                    instance,
                    result: Err(NotStarted.into()),
                };
            }
            let result = respond_one(args, &instance, Some(&instance)).await;
            Outcome { instance, result }
        })
        .buffer_unordered(limit)
        .collect()
        .await;
    // In the order given, whatever the order of finishing.
    outcomes.sort_by_key(|o| args.instance.iter().position(|i| *i == o.instance));
    print(&outcomes, args.output);
    let _ = std::io::stdout().flush();
    Ok(worst(&outcomes))
}

/// An instance not started because the command was interrupted first.
#[derive(Debug)]
struct NotStarted;

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not started: interrupted before its turn; nothing was changed")
    }
}

impl std::error::Error for NotStarted {}

/// A flag set by the first Ctrl-C or SIGTERM (each run's own handler
/// stops that run at a safe point).
fn stop_on_interrupt() -> Arc<AtomicBool> {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(AtomicBool::new(false));
    if let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        let flag = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            flag.store(true, Ordering::SeqCst);
        });
    }
    stop
}

/// The exit code of the whole: an interruption wins, then a failed run,
/// then bad input, a denied one, a partial one.
fn worst(outcomes: &[Outcome]) -> u8 {
    let codes: Vec<u8> = outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(r) => summary::exit_code(r),
            Err(e)
                if e.downcast_ref::<NotStarted>().is_some()
                    || e.downcast_ref::<crate::session::Interrupted>().is_some() =>
            {
                exit::INTERRUPTED
            }
            Err(e) if e.downcast_ref::<BadInput>().is_some() => exit::BAD_INPUT,
            Err(_) => exit::FAILED,
        })
        .collect();
    for code in [
        exit::INTERRUPTED,
        exit::FAILED,
        exit::BAD_INPUT,
        exit::NOT_APPROVED,
        exit::PARTIAL,
    ] {
        if codes.contains(&code) {
            return code;
        }
    }
    exit::OK
}

fn print(outcomes: &[Outcome], format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            let runs: Vec<serde_json::Value> = outcomes
                .iter()
                .map(|o| match &o.result {
                    Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                    Err(e) => serde_json::json!({
                        "instance_id": o.instance,
                        "error": format!("{e:#}"),
                    }),
                })
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "runs": runs }))
                    .unwrap_or_default()
            );
        }
        OutputFormat::Human => {
            for o in outcomes {
                match &o.result {
                    Ok(r) => out!("{}", r.human()),
                    Err(e) => outln!("\n{}: {e:#}", o.instance),
                }
            }
            let verdicts: Vec<String> = outcomes
                .iter()
                .map(|o| {
                    let v = match &o.result {
                        Ok(r) => serde_json::to_value(r.containment)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        Err(e) if e.downcast_ref::<crate::session::Interrupted>().is_some() => {
                            "interrupted (see above to finish it)".into()
                        }
                        Err(e) if e.downcast_ref::<NotStarted>().is_some() => "not started".into(),
                        Err(_) => "failed to run".into(),
                    };
                    format!("{}: {v}", o.instance)
                })
                .collect();
            outln!(
                "\nAll {} instances: {}",
                outcomes.len(),
                verdicts.join("; ")
            );
        }
    }
}
