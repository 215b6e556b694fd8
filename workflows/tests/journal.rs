//! Durable executions: a journal cut at ANY line (as a kill leaves it)
//! resumes to the same output, and exactly the task attempts the journal
//! does not hold are run again: Parallel branches, Map items, retries and
//! waits included.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeZone;
use firebreak_workflows::asl::StateMachine;
use firebreak_workflows::exec::journal::Start;
use firebreak_workflows::exec::{
    ExecutionConfig, Executor, History, Journal, Status, TaskCall, TaskFailure, TaskHandler,
    TokioClock,
};
use serde_json::{json, Value};

type Answer = fn(&TaskCall) -> Result<Value, TaskFailure>;

/// Answers from the call alone (so a resumed run gets the same answers),
/// and counts calls.
struct Counting {
    calls: AtomicUsize,
    answer: Answer,
}

impl Counting {
    fn new(answer: Answer) -> Arc<Counting> {
        Arc::new(Counting {
            calls: AtomicUsize::new(0),
            answer,
        })
    }
}

#[async_trait]
impl TaskHandler for Counting {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (self.answer)(&call)
    }
}

/// Echoes the call; fails the first attempt for Map item 1.
fn flaky_item_1(call: &TaskCall) -> Result<Value, TaskFailure> {
    if call.input.get("item") == Some(&json!(1)) && call.retry_count == 0 {
        return Err(TaskFailure::new("Flaky", "first try fails"));
    }
    Ok(json!({"resource": call.resource, "input": call.input}))
}

fn definition() -> StateMachine {
    serde_json::from_value(json!({
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "A", "States": {
                        "A": {"Type": "Task", "Resource": "a", "Next": "Pause"},
                        "Pause": {"Type": "Wait", "Seconds": 60, "Next": "B"},
                        "B": {"Type": "Task", "Resource": "b", "End": true}
                    }},
                    {"StartAt": "Each", "States": {
                        "Each": {
                            "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
                            "ItemSelector": {"item.$": "$$.Map.Item.Value"},
                            "ItemProcessor": {"StartAt": "C", "States": {
                                "C": {"Type": "Task", "Resource": "c", "End": true,
                                      "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 30}]}
                            }},
                            "End": true
                        }
                    }}
                ],
                "Next": "Loop"
            },
            "Loop": {"Type": "Pass", "Parameters": {"both.$": "$", "n": 0}, "Next": "Count"},
            "Count": {"Type": "Task", "Resource": "d", "ResultPath": "$.d", "Next": "Again"},
            "Again": {"Type": "Choice", "Choices": [
                {"Variable": "$.d.input.n", "NumericLessThan": 2, "Next": "Bump"}
            ], "Default": "Done"},
            "Bump": {"Type": "Pass", "Parameters": {"both.$": "$.both", "n.$": "States.MathAdd($.d.input.n, 1)"}, "Next": "Count"},
            "Done": {"Type": "Succeed"}
        }
    }))
    .unwrap()
}

fn start() -> Start {
    let at = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    Start {
        definition: definition(),
        input: json!({"items": [0, 1, 2, 3]}),
        config: ExecutionConfig {
            name: "journal-test".into(),
            ..ExecutionConfig::default()
        },
        start_time: firebreak_workflows::time::format_timestamp(at),
        runner: Value::Null,
    }
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("firebreak-journal-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The events of a history as a sorted list of (type, details), leaving
/// out what differs between runs (ids, times).
fn event_bag(events: &[firebreak_workflows::exec::HistoryEvent]) -> Vec<String> {
    let mut bag: Vec<String> = events
        .iter()
        .map(|e| format!("{} {}", e.kind, e.detail().unwrap_or_default()))
        .collect();
    bag.sort();
    bag
}

/// What `want` has that `got` lacks, and what `got` has beyond `want`
/// (both sorted).
fn bag_diff(want: &[String], got: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < got.len() {
        match (want.get(i), got.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                missing.push(a.chars().take(120).collect());
                i += 1;
            }
            (Some(a), None) => {
                missing.push(a.chars().take(120).collect());
                i += 1;
            }
            (_, Some(b)) => {
                extra.push(b.chars().take(120).collect());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (missing, extra)
}

fn clock() -> Arc<TokioClock> {
    Arc::new(TokioClock::starting_at(
        chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
    ))
}

#[tokio::test(start_paused = true)]
async fn a_journal_cut_anywhere_resumes_to_the_same_output_running_only_unfinished_attempts() {
    // a, b, c x 4 (+1 retry), d x 3
    every_cut_resumes_as_the_whole_run("loop", start(), flaky_item_1, 10).await;
}

/// `fb` fails while its Parallel is on its first try; `t` answers without
/// `ok` for item 2 (the Parallel around it succeeds, then its ResultSelector
/// fails) and fails for item 3.
fn failing_paths(call: &TaskCall) -> Result<Value, TaskFailure> {
    let item = call.input.get("item").and_then(Value::as_u64);
    match call.resource.as_str() {
        "fb" if call.input.get("try") == Some(&json!(0)) => {
            Err(TaskFailure::new("Flaky", "the first Parallel try fails"))
        }
        "t" if item == Some(2) => Ok(json!({})),
        "t" if item == Some(3) => Err(TaskFailure::new("Boom", "item 3 fails")),
        _ => Ok(json!({"ok": call.resource})),
    }
}

#[tokio::test(start_paused = true)]
async fn failures_in_parallels_and_map_iterations_resume_from_any_cut() {
    // GIVEN a Parallel that fails once and is retried, then a Map whose
    // iterations run a Parallel: item 2's succeeds and its ResultSelector
    // fails, item 3's task fails; both failures are tolerated
    let definition: StateMachine = serde_json::from_value(json!({
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Parallel",
                "Parameters": {"try.$": "$$.State.RetryCount"},
                "Branches": [
                    {"StartAt": "FA", "States": {"FA": {"Type": "Task", "Resource": "fa", "End": true}}},
                    {"StartAt": "FB", "States": {"FB": {"Type": "Task", "Resource": "fb", "End": true}}}
                ],
                "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 10, "MaxAttempts": 2}],
                "ResultPath": "$.fan",
                "Next": "Each"
            },
            "Each": {
                "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
                "ToleratedFailureCount": 2,
                "ItemSelector": {"item.$": "$$.Map.Item.Value"},
                "ItemProcessor": {"StartAt": "Inner", "States": {
                    "Inner": {
                        "Type": "Parallel",
                        "Branches": [{"StartAt": "T", "States": {
                            "T": {"Type": "Task", "Resource": "t", "End": true}
                        }}],
                        "ResultSelector": {"ok.$": "$[0].ok"},
                        "End": true
                    }
                }},
                "End": true
            }
        }
    }))
    .unwrap();
    let mut start = start();
    start.definition = definition;
    // fa and fb twice (the Parallel's two tries), t for each of 4 items
    every_cut_resumes_as_the_whole_run("failures", start, failing_paths, 8).await;
}

/// Runs `start` whole, then cuts its journal after each line (and in the
/// middle of each) and resumes it: the same outcome, only the attempts the
/// cut journal did not hold run, and the history holds the same events as
/// the whole run's, none twice.
async fn every_cut_resumes_as_the_whole_run(
    name: &str,
    start: Start,
    answer: Answer,
    expected_calls: usize,
) {
    // GIVEN a whole journaled run
    let path = dir().join(format!("{name}-whole.jsonl"));
    let _ = std::fs::remove_file(&path);
    let tasks = Counting::new(answer);
    let journal = Arc::new(Journal::create(&path, &start).unwrap());
    let history = History::new();
    let whole = Executor::new(tasks.clone())
        .with_clock(clock())
        .run_journaled(journal, &start, &history)
        .await;
    assert_eq!(whole.status, Status::Succeeded, "{whole:?}");
    let total_calls = tasks.calls.load(Ordering::SeqCst);
    assert_eq!(total_calls, expected_calls);
    let whole_events = event_bag(&history.events());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    // WHEN the journal is cut after each of its lines (and once in the
    // middle of a line) and resumed
    for cut in 1..lines.len() {
        for torn in [false, true] {
            let mut prefix = lines[..cut].join("\n");
            prefix.push('\n');
            if torn {
                prefix.push_str(&lines[cut][..lines[cut].len() / 2]);
            }
            let attempts_kept = lines[..cut]
                .iter()
                .filter(|l| l.contains(r#""t":"attempt""#))
                .count();
            let cut_path = dir().join(format!("{name}-cut-{cut}-{torn}.jsonl"));
            std::fs::write(&cut_path, &prefix).unwrap();
            let (journal, start) = Journal::open(&cut_path).unwrap();
            let tasks = Counting::new(answer);
            let (outcome, history) = Executor::new(tasks.clone())
                .with_clock(clock())
                .resume(Arc::new(journal), &start)
                .await;
            // THEN the output is the same
            assert_eq!(
                outcome, whole,
                "GIVEN the journal cut after line {cut} (torn: {torn})"
            );
            // AND only the attempts the journal did not hold ran
            assert_eq!(
                tasks.calls.load(Ordering::SeqCst),
                total_calls - attempts_kept,
                "GIVEN the journal cut after line {cut} (torn: {torn}) THEN only unfinished attempts run"
            );
            // AND the history is whole: dense ids, one start, one end
            let events = history.events();
            for (i, e) in events.iter().enumerate() {
                assert_eq!(e.id, i as u64 + 1, "cut {cut}: ids are dense");
            }
            let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(
                kinds.iter().filter(|k| **k == "ExecutionStarted").count(),
                1
            );
            assert_eq!(kinds.last(), Some(&"ExecutionSucceeded"), "cut {cut}");
            // AND it holds the same events as the whole run's, none twice
            // (an iteration's end, a re-run attempt's Scheduled/Started)
            let (missing, extra) = bag_diff(&whole_events, &event_bag(&events));
            assert!(
                missing.is_empty() && extra.is_empty(),
                "GIVEN the journal cut after line {cut} (torn: {torn}) THEN no event is missing or recorded twice; missing: {missing:#?}, extra: {extra:#?}"
            );
            // AND resuming the finished journal again changes nothing
            let (journal, start) = Journal::open(&cut_path).unwrap();
            let tasks = Counting::new(answer);
            let (again, _) = Executor::new(tasks.clone())
                .with_clock(clock())
                .resume(Arc::new(journal), &start)
                .await;
            assert_eq!(again, whole);
            assert_eq!(tasks.calls.load(Ordering::SeqCst), 0);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_journal_in_use_cannot_be_opened_by_another_resume() {
    // GIVEN an execution's journal held open (its run is alive)
    let path = dir().join("busy.jsonl");
    let _ = std::fs::remove_file(&path);
    let held = Journal::create(&path, &start()).unwrap();
    // WHEN another process (here: another handle) tries to resume it
    let second = Journal::open(&path);
    // THEN it is refused
    assert!(
        matches!(
            second,
            Err(firebreak_workflows::exec::JournalError::Busy { .. })
        ),
        "{second:?}"
    );
    // AND once the first is closed it can be resumed
    drop(held);
    assert!(Journal::open(&path).is_ok());
}

/// Fails `fast` at once, always.
struct FailsFast;

#[async_trait]
impl TaskHandler for FailsFast {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        Err(TaskFailure::new(
            "Fast",
            format!("{} failed", call.resource),
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn a_parallel_failure_is_replayed_as_it_was_not_recomputed_after_downtime() {
    // GIVEN a Parallel whose branch 1 fails at once (Fast, retried) while
    // branch 0 waits 5 s and then fails (Slow, not retried)
    let definition: StateMachine = serde_json::from_value(json!({
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "Pause", "States": {
                        "Pause": {"Type": "Wait", "Seconds": 5, "Next": "Slow"},
                        "Slow": {"Type": "Fail", "Error": "Slow"}
                    }},
                    {"StartAt": "Call", "States": {
                        "Call": {"Type": "Task", "Resource": "fast", "End": true}
                    }}
                ],
                "Retry": [{"ErrorEquals": ["Fast"], "IntervalSeconds": 30, "MaxAttempts": 1}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
                "End": true
            },
            "Done": {"Type": "Pass", "End": true}
        }
    }))
    .unwrap();
    let mut start = start();
    start.definition = definition;
    let path = dir().join("parallel-whole.jsonl");
    let _ = std::fs::remove_file(&path);
    let journal = Arc::new(Journal::create(&path, &start).unwrap());
    let whole = Executor::new(Arc::new(FailsFast))
        .with_clock(clock())
        .run_journaled(journal, &start, &History::new())
        .await;
    // (Fast, retried after 30 s, Fast again: caught)
    assert_eq!(whole.output.as_ref().unwrap()["error"]["Error"], "Fast");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // WHEN the journal is cut wherever no Parallel attempt is half done
    // (during the retry delay, say) and resumed a minute later: the 5 s
    // wait of branch 0 has long passed, so recomputing the failed attempt
    // would let branch 0's Slow win. (An attempt cut half way is run again
    // in the later world, where its branches may finish in another order:
    // nothing of it had been observed.)
    let mut checked = 0;
    for cut in 1..lines.len() {
        let kept = &lines[..cut];
        let started = kept
            .iter()
            .filter(|l| l.contains(r#""type":"ParallelStateStarted""#))
            .count();
        let failed = kept
            .iter()
            .filter(|l| l.contains(r#""t":"failed""#))
            .count();
        if started != failed || started == 0 {
            continue;
        }
        checked += 1;
        let cut_path = dir().join(format!("parallel-cut-{cut}.jsonl"));
        std::fs::write(&cut_path, lines[..cut].join("\n") + "\n").unwrap();
        let (journal, start) = Journal::open(&cut_path).unwrap();
        let later = Arc::new(TokioClock::starting_at(
            chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 5, 5).unwrap(),
        ));
        let (outcome, _) = Executor::new(Arc::new(FailsFast))
            .with_clock(later)
            .resume(Arc::new(journal), &start)
            .await;
        // THEN it ends as the uninterrupted run did
        assert_eq!(outcome, whole, "GIVEN the journal cut after line {cut}");
    }
    assert!(checked >= 5, "only {checked} cuts checked");
}
