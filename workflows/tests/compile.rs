//! The compiler checks the case file's paths and types, and what it emits
//! runs in the local executor: poll loops, failure handling, choices.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use firebreak_workflows::builder::{choice, poll, succeed, task, Chain, Cond, Workflow};
use firebreak_workflows::compile::{compile, CompileError};
use firebreak_workflows::exec::{
    ExecutionConfig, Executor, History, Status, TaskCall, TaskFailure, TaskHandler,
};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::{StepDef, StepPayload};
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Serialize, Deserialize, JsonSchema)]
struct Input {
    case: Case,
}
#[derive(Serialize, Deserialize, JsonSchema)]
struct Case {
    instance_id: String,
    note: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct LookupIn {
    instance_id: String,
}
#[derive(Serialize, Deserialize, JsonSchema)]
struct LookupOut {
    ids: Vec<String>,
    done: bool,
}
struct Lookup;
impl StepDef for Lookup {
    const NAME: &'static str = "lookup";
    const SUMMARY: &'static str = "Look things up.";
    const MUTATES: bool = false;
    type Input = LookupIn;
    type Output = LookupOut;
    fn errors() -> Vec<ErrorName> {
        vec![ErrorName::Throttled]
    }
    fn iam() -> Vec<Statement> {
        vec![Statement::allow(["ec2:DescribeInstances"], ["*"])]
    }
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct ActIn {
    ids: Vec<String>,
    reason: Option<String>,
}
#[derive(Serialize, Deserialize, JsonSchema)]
struct ActOut {
    acted: usize,
}
struct Act;
impl StepDef for Act {
    const NAME: &'static str = "act";
    const SUMMARY: &'static str = "Act on them.";
    const MUTATES: bool = true;
    type Input = ActIn;
    type Output = ActOut;
    fn errors() -> Vec<ErrorName> {
        vec![]
    }
    fn iam() -> Vec<Statement> {
        vec![Statement::allow(["ec2:CreateTags"], ["*"])]
    }
}

fn problems(wf: &Workflow) -> Vec<String> {
    match compile(wf) {
        Ok(_) => Vec::new(),
        Err(CompileError { problems, .. }) => problems,
    }
}

fn wf(chain: Chain) -> Workflow {
    Workflow::new::<Input>("t", "test").chain(chain)
}

#[test]
fn a_typo_in_a_path_is_named_with_the_fields_that_exist() {
    let p = problems(&wf(
        Chain::new().then(task::<Lookup>("Lookup").bind("instance_id", "$.case.instnce_id"))
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("Lookup: $.case.instnce_id: $.case has no field \"instnce_id\""),
        "{p:?}"
    );
    assert!(p[0].contains("instance_id, note"), "{p:?}");
}

#[test]
fn a_value_of_the_wrong_type_is_refused() {
    let p = problems(&wf(
        Chain::new().then(task::<Act>("Act").bind("ids", "$.case.instance_id"))
    ));
    assert!(
        p.iter()
            .any(|m| m
                .contains("$.case.instance_id is a string, but an array of a string is needed")),
        "{p:?}"
    );
}

#[test]
fn required_fields_must_be_bound_and_unknown_fields_are_refused() {
    let p = problems(&wf(
        Chain::new().then(task::<Act>("Act").bind("idz", "$.case.instance_id"))
    ));
    assert!(
        p.iter()
            .any(|m| m.contains("step act has no input field \"idz\"")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("required input field \"ids\" of step act is not bound")),
        "{p:?}"
    );
}

#[test]
fn output_of_a_step_that_may_fail_is_maybe_absent_until_guarded() {
    let lookup = || {
        task::<Lookup>("Lookup")
            .bind("instance_id", "$.case.instance_id")
            .result_at("lookup")
            .continue_on_failure("lookup")
    };
    // GIVEN a step that continues on failure, and a step reading its output
    let p = problems(&wf(Chain::new()
        .then(lookup())
        .then(task::<Act>("Act").bind("ids", "$.lookup.ids"))));
    // THEN the read is refused: the output may be absent
    assert!(
        p.iter().any(|m| m.contains("$.lookup.ids may be absent")),
        "{p:?}"
    );
    // AND guarded by a Choice on its presence, it compiles
    let p = problems(&wf(Chain::new().then(lookup()).then(
        choice("Found?").when(
            Cond::present("$.lookup"),
            Chain::new().then(task::<Act>("Act").bind("ids", "$.lookup.ids")),
        ),
    )));
    assert!(p.is_empty(), "{p:?}");
    // AND an optional input field may take a maybe-absent value
    let p = problems(&wf(Chain::new().then(lookup()).then(
        task::<Act>("Act")
            .set("ids", json!([]))
            .bind("reason", "$.case.note"),
    )));
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn nothing_may_follow_succeed_and_names_are_unique() {
    let p = problems(&wf(Chain::new().then(succeed("Done1")).then(
        task::<Lookup>("Lookup").bind("instance_id", "$.case.instance_id"),
    )));
    assert!(
        p.iter()
            .any(|m| m.contains("nothing runs after a Succeed state")),
        "{p:?}"
    );
    let p = problems(&wf(Chain::new()
        .then(task::<Lookup>("Same").bind("instance_id", "$.case.instance_id"))
        .then(task::<Lookup>("Same").bind("instance_id", "$.case.instance_id"))));
    assert!(
        p.iter()
            .any(|m| m.contains("Same: this state name is used twice")),
        "{p:?}"
    );
}

#[test]
fn iam_statements_are_gathered() {
    let c = compile(&wf(Chain::new()
        .then(
            task::<Lookup>("Lookup")
                .bind("instance_id", "$.case.instance_id")
                .result_at("lookup"),
        )
        .then(task::<Act>("Act").bind("ids", "$.lookup.ids"))))
    .unwrap();
    assert_eq!(
        c.policy.allowed_actions().into_iter().collect::<Vec<_>>(),
        ["ec2:CreateTags", "ec2:DescribeInstances"]
    );
}

/// Answers `lookup` with `done` after `ready_after` calls, and counts calls.
struct Poller {
    ready_after: usize,
    calls: AtomicUsize,
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl TaskHandler for Poller {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        let p: StepPayload = serde_json::from_value(call.input).unwrap();
        self.seen.lock().unwrap().push(p.step.clone());
        match p.step.as_str() {
            "lookup" => {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(json!({"ids": ["a"], "done": n >= self.ready_after}))
            }
            "act" => Err(TaskFailure::new("Firebreak.AccessDenied", "no")),
            other => panic!("unexpected step {other}"),
        }
    }
}

fn poll_workflow(max: u64, continue_on_failure: bool) -> Workflow {
    let mut check = task::<Lookup>("Check")
        .bind("instance_id", "$.case.instance_id")
        .result_at("check");
    if continue_on_failure {
        check = check.continue_on_failure("check");
    }
    wf(Chain::new()
        .then(
            poll("WaitUntilDone", check, Cond::is_true("$.check.done"))
                .every(30)
                .at_most(max),
        )
        .then(
            task::<Act>("Act")
                .set("ids", json!([]))
                .result_at("act")
                .continue_on_failure("act"),
        ))
}

async fn run(wf: &Workflow, handler: Arc<Poller>) -> (firebreak_workflows::exec::Outcome, u64) {
    let c = compile(wf).unwrap();
    let t0 = tokio::time::Instant::now();
    let out = Executor::new(handler)
        .run(
            &c.definition,
            json!({"case": {"instance_id": "i-1", "note": null}}),
            &ExecutionConfig::default(),
            &History::new(),
        )
        .await;
    (out, t0.elapsed().as_secs())
}

#[tokio::test(start_paused = true)]
async fn a_poll_loop_waits_while_pending_then_goes_on() {
    // GIVEN a resource that is ready on the third check
    let h = Arc::new(Poller {
        ready_after: 3,
        calls: AtomicUsize::new(0),
        seen: Mutex::new(vec![]),
    });
    // WHEN the compiled poll loop runs
    let (out, secs) = run(&poll_workflow(5, false), h.clone()).await;
    // THEN it checked three times, waited twice, and went on; the failure
    // of the next step is recorded, not fatal
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    assert_eq!(h.calls.load(Ordering::SeqCst), 3);
    assert_eq!(secs, 60);
    let o = out.output.unwrap();
    assert_eq!(o["polls"]["check"]["attempts"], 3);
    assert_eq!(o["failures"]["act"]["Error"], "Firebreak.AccessDenied");
}

#[tokio::test(start_paused = true)]
async fn a_poll_loop_is_bounded() {
    // GIVEN a resource that is never ready
    let never = || {
        Arc::new(Poller {
            ready_after: usize::MAX,
            calls: AtomicUsize::new(0),
            seen: Mutex::new(vec![]),
        })
    };
    // WHEN the loop may try 4 times and failures propagate
    let h = never();
    let (out, _) = run(&poll_workflow(4, false), h.clone()).await;
    // THEN the execution fails with WaitExhausted after exactly 4 checks
    assert_eq!(out.status, Status::Failed);
    assert_eq!(out.error.as_deref(), Some("Firebreak.WaitExhausted"));
    assert_eq!(h.calls.load(Ordering::SeqCst), 4);
    // AND with continue-on-failure, the give-up is recorded and the
    // playbook goes on to the next step
    let h = never();
    let (out, _) = run(&poll_workflow(4, true), h.clone()).await;
    assert_eq!(out.status, Status::Succeeded);
    let o = out.output.unwrap();
    assert_eq!(o["failures"]["check"]["Error"], "Firebreak.WaitExhausted");
    assert_eq!(
        h.seen.lock().unwrap().last().map(String::as_str),
        Some("act")
    );
}
