//! Executor behaviour on small definitions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::json;

use super::*;

/// Answers tasks by resource: a queue of results per resource.
#[derive(Default)]
struct Scripted {
    answers: Mutex<Vec<(String, Result<Value, TaskFailure>)>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn answer(self, resource: &str, r: Result<Value, TaskFailure>) -> Self {
        if let Ok(mut a) = self.answers.lock() {
            a.push((resource.to_string(), r));
        }
        self
    }
}

#[async_trait]
impl TaskHandler for Scripted {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap();
        match answers.iter().position(|(r, _)| *r == call.resource) {
            Some(i) => answers.remove(i).1,
            None => Ok(json!({"echo": call.input})),
        }
    }
}

fn machine(v: Value) -> StateMachine {
    crate::validate::validate_value(&v).unwrap()
}

async fn run(m: Value, input: Value, tasks: Arc<dyn TaskHandler>) -> (Outcome, History) {
    let history = History::new();
    let out = Executor::new(tasks)
        .run(&machine(m), input, &ExecutionConfig::default(), &history)
        .await;
    (out, history)
}

#[tokio::test(start_paused = true)]
async fn pass_chain_with_paths() {
    let (out, history) = run(
        json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.a", "Next": "B"},
            "B": {"Type": "Pass", "Parameters": {"sum.$": "States.MathAdd($.a.x, $.n)", "name.$": "$$.State.Name"}, "ResultPath": "$.b", "OutputPath": "$.b", "End": true}
        }}),
        json!({"n": 41}),
        Arc::new(Scripted::default()),
    )
    .await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(out.output, Some(json!({"sum": 42, "name": "B"})));
    let kinds: Vec<String> = history.events().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "ExecutionStarted",
            "PassStateEntered",
            "PassStateExited",
            "PassStateEntered",
            "PassStateExited",
            "ExecutionSucceeded"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_then_catch_records_error_and_waits_on_the_clock() {
    let tasks = Arc::new(
        Scripted::default()
            .answer(
                "arn:aws:lambda:us-east-1:1:function:f",
                Err(TaskFailure::new("Firebreak.Throttled", "slow down")),
            )
            .answer(
                "arn:aws:lambda:us-east-1:1:function:f",
                Err(TaskFailure::new("Firebreak.Throttled", "slow down")),
            )
            .answer(
                "arn:aws:lambda:us-east-1:1:function:f",
                Err(TaskFailure::new("Firebreak.AccessDenied", "no")),
            ),
    );
    let started = tokio::time::Instant::now();
    let (out, _) = run(
        json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:f",
                  "Retry": [{"ErrorEquals": ["Firebreak.Throttled"], "IntervalSeconds": 10, "MaxAttempts": 5, "BackoffRate": 2}],
                  "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "Done"}],
                  "End": true},
            "Done": {"Type": "Succeed"}
        }}),
        json!({"keep": true}),
        tasks.clone(),
    )
    .await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(
        out.output,
        Some(json!({"keep": true, "err": {"Error": "Firebreak.AccessDenied", "Cause": "no"}}))
    );
    assert_eq!(tasks.calls.load(Ordering::SeqCst), 3);
    // 10 s then 20 s of backoff, in virtual time.
    assert_eq!(started.elapsed().as_secs(), 30);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_zero_never_retries() {
    let tasks = Arc::new(Scripted::default().answer(
        "arn:aws:lambda:us-east-1:1:function:f",
        Err(TaskFailure::new("E", "c")),
    ));
    let (out, _) = run(
        json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:f",
            "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 0}], "End": true}}}),
        json!({}),
        tasks.clone(),
    )
    .await;
    assert_eq!(out.status, Status::Failed);
    assert_eq!(out.error.as_deref(), Some("E"));
    assert_eq!(tasks.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn choice_wait_and_fail() {
    let m = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [
            {"And": [{"Variable": "$.n", "IsPresent": true}, {"Variable": "$.n", "NumericGreaterThan": 5}], "Next": "W"}
        ], "Default": "F"},
        "W": {"Type": "Wait", "Seconds": 3600, "Next": "S"},
        "S": {"Type": "Succeed"},
        "F": {"Type": "Fail", "Error": "Too.Small", "Cause": "n <= 5"}
    }});
    let t0 = tokio::time::Instant::now();
    let (out, _) = run(m.clone(), json!({"n": 9}), Arc::new(Scripted::default())).await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(t0.elapsed().as_secs(), 3600);
    let (out, _) = run(m, json!({}), Arc::new(Scripted::default())).await;
    assert_eq!(out.status, Status::Failed);
    assert_eq!(
        (out.error.as_deref(), out.cause.as_deref()),
        (Some("Too.Small"), Some("n <= 5"))
    );
}

#[tokio::test(start_paused = true)]
async fn parallel_and_map_keep_order() {
    let (out, _) = run(
        json!({"StartAt": "P", "States": {
            "P": {"Type": "Parallel", "Next": "M", "ResultPath": "$.p", "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Wait", "Seconds": 5, "Next": "A2"}, "A2": {"Type": "Pass", "Result": "a", "End": true}}},
                {"StartAt": "B", "States": {"B": {"Type": "Pass", "Result": "b", "End": true}}}
            ]},
            "M": {"Type": "Map", "ItemsPath": "$.xs", "ResultPath": "$.m", "MaxConcurrency": 2,
                  "ItemSelector": {"i.$": "$$.Map.Item.Index", "v.$": "$$.Map.Item.Value"},
                  "ItemProcessor": {"StartAt": "Double", "States": {"Double": {"Type": "Pass", "Parameters": {"r.$": "States.MathAdd($.v, $.v)", "i.$": "$.i"}, "End": true}}},
                  "End": true}
        }}),
        json!({"xs": [1, 2, 3]}),
        Arc::new(Scripted::default()),
    )
    .await;
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    let o = out.output.unwrap();
    assert_eq!(o["p"], json!(["a", "b"]));
    assert_eq!(
        o["m"],
        json!([{"r": 2, "i": 0}, {"r": 4, "i": 1}, {"r": 6, "i": 2}])
    );
}

#[tokio::test(start_paused = true)]
async fn runtime_errors_name_the_state_and_are_not_caught() {
    let (out, _) = run(
        json!({"StartAt": "T", "States": {"T": {"Type": "Pass", "InputPath": "$.missing", "End": true}}}),
        json!({}),
        Arc::new(Scripted::default()),
    )
    .await;
    assert_eq!(out.error.as_deref(), Some("States.Runtime"));
    assert!(out
        .cause
        .unwrap()
        .contains("executing the state 'T' (entered at the event id #2)"));
}

#[tokio::test(start_paused = true)]
async fn task_timeout_raises_states_timeout() {
    struct Slow;
    #[async_trait]
    impl TaskHandler for Slow {
        async fn invoke(&self, _: TaskCall) -> Result<Value, TaskFailure> {
            tokio::time::sleep(Duration::from_secs(100)).await;
            Ok(json!(1))
        }
    }
    let (out, history) = run(
        json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:f", "TimeoutSeconds": 5,
            "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "S"}], "End": true}, "S": {"Type": "Succeed"}}}),
        json!({}),
        Arc::new(Slow),
    )
    .await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(
        out.output,
        Some(json!({"Error": "States.Timeout", "Cause": null}))
    );
    assert!(history
        .events()
        .iter()
        .any(|e| e.kind == "LambdaFunctionTimedOut"));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_seconds_path_that_is_not_a_positive_integer_fails_the_state() {
    let def = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f",
              "TimeoutSecondsPath": "$.limit", "End": true}
    }});
    for limit in [json!("soon"), json!(0), json!(-5)] {
        let tasks = Arc::new(Scripted::default());
        let (out, _) = run(def.clone(), json!({ "limit": limit }), tasks.clone()).await;
        assert_eq!(out.status, Status::Failed, "limit {limit}");
        assert_eq!(
            out.error.as_deref(),
            Some("States.Runtime"),
            "limit {limit}"
        );
        assert!(
            out.cause
                .as_deref()
                .unwrap_or_default()
                .contains("TimeoutSecondsPath"),
            "{:?}",
            out.cause
        );
        assert_eq!(tasks.calls.load(Ordering::SeqCst), 0, "the task never ran");
    }
    // A path that selects nothing fails too, naming the path.
    let (out, _) = run(def, json!({}), Arc::new(Scripted::default())).await;
    assert_eq!(out.error.as_deref(), Some("States.Runtime"));
}

#[tokio::test(start_paused = true)]
async fn a_map_with_an_item_batcher_fails_instead_of_running_unbatched() {
    // GIVEN a Distributed Map that batches its items (children would get
    // {"Items": [...]} in AWS)
    let (out, _) = run(
        json!({"StartAt": "Each", "States": {"Each": {
            "Type": "Map", "End": true, "ItemBatcher": {"MaxItemsPerBatch": 2},
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                              "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}
        }}}),
        json!([1, 2, 3]),
        Arc::new(Scripted::default()),
    )
    .await;
    // THEN the state fails naming the field, rather than give [1, 2, 3]
    assert_eq!(out.status, Status::Failed);
    assert_eq!(out.error.as_deref(), Some("States.Runtime"));
    assert!(
        out.cause.as_deref().unwrap_or("").contains("ItemBatcher"),
        "{out:?}"
    );
}
