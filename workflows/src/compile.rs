//! Compiler: builder -> ASL, with the case file typed along the way.
//!
//! Every path a state reads is resolved against the shape of the case file
//! at that point (the workflow input plus what earlier tasks wrote), so a
//! typo or a read of something that may be absent fails here, not in the
//! middle of an incident. The IAM statements of every step used are
//! gathered with the definition.

use std::collections::HashSet;

use indexmap::IndexMap;
use serde_json::{json, Map, Number, Value};

use crate::asl::{
    Branch, Catcher, ChoiceRule, ChoiceState, Comparison, Condition, FailState, ItemProcessor,
    MapState, NullablePath, Operand, ParallelState, PassState, ProcessorConfig, ProcessorMode,
    Retrier, State, StateMachine, SucceedState, TaskState, WaitState,
};
use crate::builder::{
    Binding, Chain, ChoiceNode, Cond, MapNode, Node, OnFailure, ParallelNode, PollNode, Runner,
    TaskNode, WaitFor, Workflow,
};
use crate::error_name::ErrorName;
use crate::iam::PolicyDocument;
use crate::intrinsics::{looks_like_call, Arg, Call};
use crate::path::JsonPath;
use crate::shape::Shape;
use crate::step::{
    StepInfo, CALLBACK_RESOURCE, CONTAINER_ACCOUNT_VAR, CONTAINER_INPUT_PREFIX, CONTAINER_NAME,
    CONTAINER_RESOURCE, STEP_RUNNER_RESOURCE, TASK_TOKEN_FIELD,
};

/// A compiled playbook: the definition, the steps it uses and the IAM
/// policy the step-runner needs for them.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The workflow's name.
    pub name: String,
    /// The ASL state machine, already passed by the validator.
    pub definition: StateMachine,
    /// Each step the workflow uses, once, in the order first met.
    pub steps: Vec<StepInfo>,
    /// The IAM policy the step-runner needs: the steps' statements gathered.
    pub policy: PolicyDocument,
}

/// Everything wrong with a workflow, reported together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("workflow {workflow:?} does not compile:\n  {}", .problems.join("\n  "))]
pub struct CompileError {
    /// The workflow's name.
    pub workflow: String,
    /// Every problem found, one message each.
    pub problems: Vec<String>,
}

/// Where failures are recorded in the case file.
pub const FAILURES_KEY: &str = "failures";
/// Where poll loops keep their attempt counters.
pub const POLLS_KEY: &str = "polls";

/// Compiles a workflow to ASL, checking every path a state reads against the
/// case file's shape at that point, and gathers the IAM statements of its
/// steps. Fails with every problem at once, including any the validator finds
/// in the output.
pub fn compile(wf: &Workflow) -> Result<Compiled, CompileError> {
    let mut cx = Cx {
        problems: Vec::new(),
        steps: Vec::new(),
        names: HashSet::new(),
        account_from: wf.account_from.clone(),
    };
    if wf.chain.is_empty() {
        cx.problems.push("the workflow has no steps".into());
    }
    let scope = Shape::from_schema(&wf.input_schema);
    if !matches!(scope, Shape::Object { .. }) {
        cx.problems
            .push(format!("the workflow input must be an object, not {scope}"));
    }
    let mut states = IndexMap::new();
    let start = wf
        .chain
        .nodes
        .first()
        .map(|n| n.name().to_string())
        .unwrap_or_default();
    let mut graph = Graph {
        states: &mut states,
        end_name: "Done".to_string(),
        end_used: false,
    };
    cx.chain(&wf.chain, &Follow::End, scope, &mut graph);
    if graph.end_used {
        // Claimed after the chain so that a state of the workflow with the
        // same name is reported as a clash, not silently replaced.
        let end = graph.end_name.clone();
        cx.claim(&end);
    }
    let definition = StateMachine {
        comment: Some(wf.comment.clone()),
        query_language: None,
        start_at: start,
        states,
        timeout_seconds: wf.timeout_seconds,
        version: None,
    };
    if cx.problems.is_empty() {
        // The compiler's own output must pass the validator; anything it
        // finds here is a bug or a name clash in the workflow.
        if let Err(problems) = crate::validate::validate_machine(&definition) {
            cx.problems
                .extend(problems.0.into_iter().map(|p| p.to_string()));
        }
    }
    if !cx.problems.is_empty() {
        return Err(CompileError {
            workflow: wf.name.clone(),
            problems: cx.problems,
        });
    }
    let policy = PolicyDocument::gather(cx.steps.iter().flat_map(|s| s.iam.iter()));
    Ok(Compiled {
        name: wf.name.clone(),
        definition,
        steps: cx.steps,
        policy,
    })
}

#[derive(Clone, Debug)]
enum Follow {
    Next(String),
    End,
}

/// The states of one graph (top level, a branch, a Map body) being built.
struct Graph<'a> {
    states: &'a mut IndexMap<String, State>,
    /// A Succeed state added on demand when something must jump to "the
    /// end" (a catcher or a Choice at the end of a chain).
    end_name: String,
    end_used: bool,
}

impl Graph<'_> {
    fn target(&mut self, follow: &Follow) -> String {
        match follow {
            Follow::Next(n) => n.clone(),
            Follow::End => {
                if !self.end_used {
                    self.end_used = true;
                    self.states.insert(
                        self.end_name.clone(),
                        State::Succeed(SucceedState {
                            comment: Some("End of the playbook.".into()),
                            input_path: None,
                            output_path: None,
                        }),
                    );
                }
                self.end_name.clone()
            }
        }
    }
}

fn next_end(follow: &Follow) -> (Option<String>, Option<bool>) {
    match follow {
        Follow::Next(n) => (Some(n.clone()), None),
        Follow::End => (None, Some(true)),
    }
}

struct Cx {
    problems: Vec<String>,
    steps: Vec<StepInfo>,
    names: HashSet<String>,
    /// The path of the account the steps act in ([`Workflow::acting_in`]).
    account_from: Option<String>,
}

fn reference(path: &str) -> Option<JsonPath> {
    JsonPath::parse_reference(path).ok()
}

fn key_path(key: &str) -> String {
    format!("$.{key}")
}

/// The context object (`$$`) as Step Functions fills it.
fn context_shape(map_item: Option<&Shape>) -> Shape {
    let s = |fields: &[(&str, Shape)]| {
        fields.iter().fold(Shape::object(), |acc, (k, v)| {
            acc.with_field(k, v.clone(), true)
        })
    };
    let mut ctx = s(&[
        (
            "Execution",
            s(&[
                ("Id", Shape::String),
                ("Name", Shape::String),
                ("StartTime", Shape::String),
                ("RoleArn", Shape::String),
                ("Input", Shape::Any),
            ]),
        ),
        (
            "State",
            s(&[
                ("Name", Shape::String),
                ("EnteredTime", Shape::String),
                ("RetryCount", Shape::Integer),
            ]),
        ),
        (
            "StateMachine",
            s(&[("Id", Shape::String), ("Name", Shape::String)]),
        ),
        ("Task", s(&[("Token", Shape::String)])),
    ]);
    if let Some(item) = map_item {
        ctx = ctx.with_field(
            "Map",
            s(&[(
                "Item",
                s(&[("Index", Shape::Integer), ("Value", item.clone())]),
            )]),
            true,
        );
    }
    ctx
}

fn failure_shape() -> Shape {
    Shape::object()
        .with_field("Error", Shape::String, true)
        .with_field("Cause", Shape::String, true)
}

impl Cx {
    fn problem(&mut self, state: &str, msg: impl Into<String>) {
        self.problems.push(format!("{state}: {}", msg.into()));
    }

    fn claim(&mut self, name: &str) {
        if name.is_empty() {
            self.problems.push("a state has an empty name".into());
        } else if !self.names.insert(name.to_string()) {
            self.problem(name, "this state name is used twice");
        }
    }

    fn chain(&mut self, chain: &Chain, follow: &Follow, mut scope: Shape, g: &mut Graph) -> Shape {
        self.problems.extend(chain.build_errors.iter().cloned());
        for (i, node) in chain.nodes.iter().enumerate() {
            let f = match chain.nodes.get(i + 1) {
                Some(next) => Follow::Next(next.name().to_string()),
                None => follow.clone(),
            };
            scope = self.node(node, &f, scope, g);
        }
        scope
    }

    fn node(&mut self, node: &Node, follow: &Follow, scope: Shape, g: &mut Graph) -> Shape {
        match node {
            Node::Task(t) => self.task(t, follow, follow, scope, g),
            Node::Pass(p) => {
                self.claim(&p.name);
                let result_path = p.result_at.as_deref().map(key_path);
                if let Some(params) = &p.parameters {
                    self.template(&p.name, params, &scope, None);
                }
                let (next, end) = next_end(follow);
                g.states.insert(
                    p.name.clone(),
                    State::Pass(PassState {
                        comment: p.comment.clone(),
                        input_path: None,
                        parameters: p.parameters.clone(),
                        result: p.result.clone(),
                        result_path: Some(match &result_path {
                            Some(rp) => NullablePath::Path(rp.clone()),
                            None => NullablePath::Null,
                        }),
                        output_path: None,
                        next,
                        end,
                    }),
                );
                let produced = match (&p.parameters, &p.result) {
                    (Some(t), _) => self.template_shape(t, &scope),
                    (None, Some(v)) => Shape::of_value(v),
                    (None, None) => scope.clone(),
                };
                match result_path.as_deref().and_then(reference) {
                    Some(rp) => scope.with_path(&rp, produced, true),
                    None => scope,
                }
            }
            Node::Wait(w) => {
                self.claim(&w.name);
                let (mut seconds, mut seconds_path, mut timestamp_path) = (None, None, None);
                match &w.wait {
                    WaitFor::Seconds(s) => seconds = Some(*s),
                    WaitFor::SecondsPath(p) => {
                        self.read(&w.name, p, &scope, None, Some(&Shape::Integer), true);
                        seconds_path = Some(p.clone());
                    }
                    WaitFor::TimestampPath(p) => {
                        self.read(&w.name, p, &scope, None, Some(&Shape::String), true);
                        timestamp_path = Some(p.clone());
                    }
                }
                let (next, end) = next_end(follow);
                g.states.insert(
                    w.name.clone(),
                    State::Wait(WaitState {
                        comment: w.comment.clone(),
                        input_path: None,
                        output_path: None,
                        seconds,
                        seconds_path,
                        timestamp: None,
                        timestamp_path,
                        next,
                        end,
                    }),
                );
                scope
            }
            Node::Choice(c) => self.choice(c, follow, scope, g),
            Node::Parallel(p) => self.parallel(p, follow, scope, g),
            Node::Map(m) => self.map(m, follow, scope, g),
            Node::Poll(p) => self.poll(p, follow, scope, g),
            Node::Succeed(s) => {
                self.claim(&s.name);
                g.states.insert(
                    s.name.clone(),
                    State::Succeed(SucceedState {
                        comment: s.comment.clone(),
                        input_path: None,
                        output_path: None,
                    }),
                );
                scope
            }
            Node::Fail(f) => {
                self.claim(&f.name);
                let state = match &f.from_paths {
                    Some((error_path, cause_path)) => {
                        for p in [error_path, cause_path] {
                            self.read(&f.name, p, &scope, None, Some(&Shape::String), true);
                        }
                        FailState {
                            comment: f.comment.clone(),
                            error: None,
                            error_path: Some(error_path.clone()),
                            cause: None,
                            cause_path: Some(cause_path.clone()),
                        }
                    }
                    None => FailState {
                        comment: f.comment.clone(),
                        error: Some(f.error.as_str().to_string()),
                        error_path: None,
                        cause: Some(f.cause.clone()),
                        cause_path: None,
                    },
                };
                g.states.insert(f.name.clone(), State::Fail(state));
                scope
            }
        }
    }

    /// Checks that `path` can be read from `scope` (or the context object)
    /// and, when `want` is given, that its shape fits.
    fn read(
        &mut self,
        state: &str,
        path: &str,
        scope: &Shape,
        map_item: Option<&Shape>,
        want: Option<&Shape>,
        must_be_present: bool,
    ) -> Option<(Shape, bool)> {
        let parsed = match JsonPath::parse(path) {
            Ok(p) => p,
            Err(e) => {
                self.problem(state, e.to_string());
                return None;
            }
        };
        let root = if parsed.context {
            context_shape(map_item)
        } else {
            scope.clone()
        };
        match root.resolve(&parsed) {
            Ok((shape, present)) => {
                if must_be_present && !present {
                    self.problem(
                        state,
                        format!("{path} may be absent here (it is optional, or written by a step that can fail and continue)"),
                    );
                }
                if let Some(want) = want {
                    if !want.accepts(&shape) {
                        self.problem(state, format!("{path} is {shape}, but {want} is needed"));
                    }
                }
                Some((shape, present))
            }
            Err(e) => {
                self.problem(state, format!("{path}: {e}"));
                None
            }
        }
    }

    /// Checks every `.$` path and intrinsic argument of a template.
    fn template(&mut self, state: &str, t: &Value, scope: &Shape, map_item: Option<&Shape>) {
        match t {
            Value::Object(o) => {
                for (k, v) in o {
                    if k.ends_with(".$") {
                        match v.as_str() {
                            Some(s) if looks_like_call(s) => match Call::parse(s) {
                                Ok(call) => self.call_paths(state, &call, scope, map_item),
                                Err(e) => self.problem(state, e.to_string()),
                            },
                            Some(s) => {
                                self.read(state, s, scope, map_item, None, true);
                            }
                            None => self.problem(
                                state,
                                format!("{k} must hold a path or an intrinsic call"),
                            ),
                        }
                    } else {
                        self.template(state, v, scope, map_item);
                    }
                }
            }
            Value::Array(a) => {
                for v in a {
                    self.template(state, v, scope, map_item);
                }
            }
            _ => {}
        }
    }

    fn call_paths(&mut self, state: &str, call: &Call, scope: &Shape, map_item: Option<&Shape>) {
        for a in &call.args {
            match a {
                Arg::Path(p) => {
                    self.read(state, p.as_str(), scope, map_item, None, true);
                }
                Arg::Call(c) => self.call_paths(state, c, scope, map_item),
                Arg::Literal(_) => {}
            }
        }
    }

    /// The shape a template produces (for what a Pass writes).
    fn template_shape(&mut self, t: &Value, scope: &Shape) -> Shape {
        match t {
            Value::Object(o) => {
                let mut out = Shape::object();
                for (k, v) in o {
                    if let Some(field) = k.strip_suffix(".$") {
                        let shape = match v.as_str() {
                            Some(s) if !looks_like_call(s) => JsonPath::parse(s)
                                .ok()
                                .filter(|p| !p.context)
                                .and_then(|p| scope.resolve(&p).ok())
                                .map(|(s, _)| s)
                                .unwrap_or(Shape::Any),
                            _ => Shape::Any,
                        };
                        out = out.with_field(field, shape, true);
                    } else {
                        let shape = self.template_shape(v, scope);
                        out = out.with_field(k, shape, true);
                    }
                }
                out
            }
            other => Shape::of_value(other),
        }
    }

    fn retriers(policies: &[crate::builder::RetryPolicy]) -> Vec<Retrier> {
        policies
            .iter()
            .map(|r| Retrier {
                comment: None,
                error_equals: r.errors.iter().map(|e| e.as_str().to_string()).collect(),
                interval_seconds: Some(r.interval_seconds),
                max_attempts: Some(r.max_attempts),
                backoff_rate: Number::from_f64(r.backoff_rate),
                max_delay_seconds: r.max_delay_seconds,
                jitter_strategy: r.jitter,
            })
            .collect()
    }

    /// Compiles a failure policy: the Catch list of the state, and the
    /// scope after the state (the merge of the success and failure paths).
    fn on_failure(
        &mut self,
        state: &str,
        on_failure: &OnFailure,
        follow: &Follow,
        before: &Shape,
        after_success: Shape,
        g: &mut Graph,
    ) -> (Vec<Catcher>, Shape) {
        match on_failure {
            OnFailure::Propagate => (Vec::new(), after_success),
            OnFailure::Handle { key, handler } => {
                let rp = format!("$.{FAILURES_KEY}.{key}");
                let Some(parsed) = reference(&rp) else {
                    self.problem(
                        state,
                        format!("failure key {key:?} does not make a reference path"),
                    );
                    return (Vec::new(), after_success);
                };
                let failed = before.with_path(&parsed, failure_shape(), true);
                let (next, after_failure) = if handler.is_empty() {
                    (g.target(follow), failed)
                } else {
                    let first = handler.nodes[0].name().to_string();
                    let s = self.chain(handler, follow, failed, g);
                    (first, s)
                };
                let ends = handler.nodes.last().is_some_and(Node::is_terminal);
                let catcher = Catcher {
                    comment: Some(if ends {
                        format!("Record the failure at {rp} and end the execution.")
                    } else {
                        format!(
                            "Record the failure at {rp} and go on: one failed step must not stop the rest."
                        )
                    }),
                    error_equals: vec![ErrorName::StatesAll.as_str().to_string()],
                    result_path: Some(NullablePath::Path(rp)),
                    next,
                };
                let merged = if ends {
                    after_success
                } else {
                    Shape::merge(&after_success, &after_failure)
                };
                (vec![catcher], merged)
            }
        }
    }

    /// A task state. `follow` is where success goes, `failure_follow`
    /// where the chain continues after a handled failure.
    fn task(
        &mut self,
        t: &TaskNode,
        follow: &Follow,
        failure_follow: &Follow,
        scope: Shape,
        g: &mut Graph,
    ) -> Shape {
        let name = t.name.as_str();
        self.claim(name);
        if !self.steps.iter().any(|s| s.name == t.step.name) {
            self.steps.push(t.step.clone());
        }
        let input_shape = Shape::from_schema(&t.step.input_schema);
        let mut input = Map::new();
        if let Some(from) = &t.input_from {
            if !t.bindings.is_empty() {
                self.problem(name, "use either input_from or bind/set, not both");
            }
            self.read(name, from, &scope, None, Some(&input_shape), true);
            input.insert("input.$".into(), Value::String(from.clone()));
        } else {
            let mut fields = Map::new();
            let mut given = HashSet::new();
            if t.runner == Runner::Callback {
                // The token is the context's, bound here: a playbook
                // cannot name `$$` paths.
                given.insert(TASK_TOKEN_FIELD);
                fields.insert(
                    format!("{TASK_TOKEN_FIELD}.$"),
                    Value::String("$$.Task.Token".into()),
                );
            }
            for (field, binding) in &t.bindings {
                if !given.insert(field.as_str()) {
                    self.problem(name, format!("input field {field:?} is bound twice"));
                }
                let want = match input_shape.field(field) {
                    Some((s, _)) => Some(s),
                    None => {
                        self.problem(
                            name,
                            format!(
                                "step {} has no input field {field:?} (its fields: {})",
                                t.step.name,
                                field_names(&input_shape)
                            ),
                        );
                        None
                    }
                };
                let required = input_shape.required_fields().contains(field);
                match binding {
                    Binding::Path(p) => {
                        self.read(name, p, &scope, None, want.as_ref(), required);
                        fields.insert(format!("{field}.$"), Value::String(p.clone()));
                    }
                    Binding::Literal(v) => {
                        if let Some(w) = &want {
                            if !w.accepts(&Shape::of_value(v)) {
                                self.problem(
                                    name,
                                    format!(
                                        "input field {field:?} needs {w}, the literal is {}",
                                        Shape::of_value(v)
                                    ),
                                );
                            }
                        }
                        fields.insert(field.clone(), v.clone());
                    }
                }
            }
            for req in input_shape.required_fields() {
                if !given.contains(req.as_str()) {
                    self.problem(
                        name,
                        format!(
                            "required input field {req:?} of step {} is not bound",
                            t.step.name
                        ),
                    );
                }
            }
            input.insert("input".into(), Value::Object(fields));
        }
        let container = t.runner == Runner::Container;
        if let Some(path) = self.account_from.clone() {
            // Every scope a task runs in must say which account it acts in.
            self.read(name, &path, &scope, None, Some(&Shape::String), true);
        }
        let (resource, params) = self.task_call(name, t, &input_shape, input);
        let output_shape = Shape::from_schema(&t.step.output_schema);
        let result_at = if container {
            None
        } else {
            t.result_at.as_deref()
        };
        let after_success = match result_at.map(key_path) {
            Some(rp) => match reference(&rp) {
                Some(p) => scope.with_path(&p, output_shape, true),
                None => {
                    self.problem(name, format!("result key {rp:?} is not a reference path"));
                    scope.clone()
                }
            },
            None => scope.clone(),
        };
        let (catch, after) = self.on_failure(
            name,
            &t.on_failure,
            failure_follow,
            &scope,
            after_success,
            g,
        );
        let (next, end) = next_end(follow);
        g.states.insert(
            name.to_string(),
            State::Task(TaskState {
                comment: Some(
                    t.comment
                        .clone()
                        .unwrap_or_else(|| format!("{}: {}", t.step.name, t.step.summary)),
                ),
                resource: resource.to_string(),
                credentials: None,
                input_path: None,
                parameters: Some(Value::Object(params)),
                result_selector: None,
                result_path: Some(match result_at {
                    Some(k) => NullablePath::Path(key_path(k)),
                    None => NullablePath::Null,
                }),
                output_path: None,
                timeout_seconds: t.timeout_seconds,
                timeout_seconds_path: None,
                heartbeat_seconds: t.heartbeat_seconds,
                heartbeat_seconds_path: None,
                retry: non_empty(Self::retriers(&t.retry)),
                catch: non_empty(catch),
                next,
                end,
            }),
        );
        move_before(g.states, name, &catch_targets(g.states, name));
        after
    }

    /// A task's `Resource` and `Parameters`: the step runner, a container
    /// (`ecs:runTask.sync`) or a callback (`lambda:invoke.waitForTaskToken`).
    fn task_call(
        &mut self,
        name: &str,
        t: &TaskNode,
        input_shape: &Shape,
        input: Map<String, Value>,
    ) -> (&'static str, Map<String, Value>) {
        match t.runner {
            Runner::Container => {
                if t.result_at.is_some() {
                    self.problem(
                        name,
                        "a container step's result does not come back to the execution: store it as evidence and read it with a step",
                    );
                }
                let mut params = container_parameters(t.step.name, input);
                if let Some(path) = &self.account_from {
                    if let Some(env) = params
                        .get_mut("Overrides")
                        .and_then(|o| o.pointer_mut("/ContainerOverrides/0/Environment"))
                        .and_then(Value::as_array_mut)
                    {
                        env.push(json!({"Name": CONTAINER_ACCOUNT_VAR, "Value.$": path}));
                    }
                }
                (CONTAINER_RESOURCE, params)
            }
            Runner::Callback => {
                if t.input_from.is_some() {
                    self.problem(
                        name,
                        "a callback step takes its input from bind/set (its task token is added to them), not input_from",
                    );
                }
                if input_shape.field(TASK_TOKEN_FIELD).is_none() {
                    self.problem(
                        name,
                        format!(
                            "step {} waits for its task token but has no input field {TASK_TOKEN_FIELD:?} to take it",
                            t.step.name
                        ),
                    );
                }
                let mut payload = Map::new();
                payload.insert("step".into(), Value::String(t.step.name.to_string()));
                payload.extend(input);
                if let Some(path) = &self.account_from {
                    payload.insert("account.$".into(), Value::String(path.clone()));
                }
                let mut params = Map::new();
                params.insert(
                    "FunctionName".into(),
                    Value::String(STEP_RUNNER_RESOURCE.into()),
                );
                params.insert("Payload".into(), Value::Object(payload));
                (CALLBACK_RESOURCE, params)
            }
            Runner::Lambda => {
                let mut params = Map::new();
                params.insert("step".into(), Value::String(t.step.name.to_string()));
                params.extend(input);
                if let Some(path) = &self.account_from {
                    params.insert("account.$".into(), Value::String(path.clone()));
                }
                (STEP_RUNNER_RESOURCE, params)
            }
        }
    }

    fn cond(&mut self, state: &str, c: &Cond, scope: &Shape) -> Condition {
        let cmp = |variable: &str, op: Comparison, v: Value| Condition::Compare {
            variable: variable.to_string(),
            op,
            operand: Operand::Literal(v),
        };
        let rule = |condition| ChoiceRule {
            condition,
            next: None,
            comment: None,
        };
        match c {
            Cond::StringEquals(p, v) => {
                self.read(state, p, scope, None, Some(&Shape::String), true);
                cmp(p, Comparison::StringEquals, json!(v))
            }
            Cond::NumericEquals(p, v) => {
                self.read(state, p, scope, None, Some(&Shape::Number), true);
                cmp(p, Comparison::NumericEquals, num(*v))
            }
            Cond::NumericGreaterThanEquals(p, v) => {
                self.read(state, p, scope, None, Some(&Shape::Number), true);
                cmp(p, Comparison::NumericGreaterThanEquals, num(*v))
            }
            Cond::NumericLessThan(p, v) => {
                self.read(state, p, scope, None, Some(&Shape::Number), true);
                cmp(p, Comparison::NumericLessThan, num(*v))
            }
            Cond::BooleanEquals(p, v) => {
                self.read(state, p, scope, None, Some(&Shape::Bool), true);
                cmp(p, Comparison::BooleanEquals, json!(v))
            }
            Cond::IsPresent(p, v) => {
                self.read(state, p, scope, None, None, false);
                cmp(p, Comparison::IsPresent, json!(v))
            }
            Cond::IsNull(p, v) => {
                self.read(state, p, scope, None, None, true);
                cmp(p, Comparison::IsNull, json!(v))
            }
            Cond::And(cs) => {
                // Step Functions evaluates And left to right and stops at
                // the first false rule: what an earlier rule establishes
                // (IsPresent, not IsNull) holds for the later ones.
                let mut local = scope.clone();
                let mut rules = Vec::new();
                for c in cs {
                    rules.push(rule(self.cond(state, c, &local)));
                    local = narrow(&local, c);
                }
                Condition::And(rules)
            }
            Cond::Or(cs) => Condition::Or(
                cs.iter()
                    .map(|c| rule(self.cond(state, c, scope)))
                    .collect(),
            ),
            Cond::Not(c) => Condition::Not(Box::new(rule(self.cond(state, c, scope)))),
        }
    }

    fn choice(&mut self, c: &ChoiceNode, follow: &Follow, scope: Shape, g: &mut Graph) -> Shape {
        self.claim(&c.name);
        if c.branches.is_empty() {
            self.problem(&c.name, "a choice needs at least one branch (when)");
        }
        // Insert the Choice first so the graph reads in order.
        g.states.insert(
            c.name.clone(),
            State::Choice(ChoiceState {
                comment: c.comment.clone(),
                input_path: None,
                output_path: None,
                choices: Vec::new(),
                default: None,
            }),
        );
        let mut rules = Vec::new();
        let mut outcomes: Vec<Shape> = Vec::new();
        for (cond, chain) in &c.branches {
            let condition = self.cond(&c.name, cond, &scope);
            let next = match chain.nodes.first() {
                Some(first) => {
                    let first = first.name().to_string();
                    let s = self.chain(chain, follow, narrow(&scope, cond), g);
                    if !chain.nodes.last().is_some_and(Node::is_terminal) {
                        outcomes.push(s);
                    }
                    first
                }
                None => {
                    outcomes.push(scope.clone());
                    g.target(follow)
                }
            };
            rules.push(ChoiceRule {
                condition,
                next: Some(next),
                comment: None,
            });
        }
        let default = match &c.otherwise {
            Some(chain) if !chain.is_empty() => {
                let first = chain.nodes[0].name().to_string();
                let s = self.chain(chain, follow, scope.clone(), g);
                if !chain.nodes.last().is_some_and(Node::is_terminal) {
                    outcomes.push(s);
                }
                first
            }
            _ => {
                outcomes.push(scope.clone());
                g.target(follow)
            }
        };
        if let Some(State::Choice(state)) = g.states.get_mut(&c.name) {
            state.choices = rules;
            state.default = Some(default);
        }
        outcomes
            .into_iter()
            .reduce(|a, b| Shape::merge(&a, &b))
            .unwrap_or(scope)
    }

    fn parallel(
        &mut self,
        p: &ParallelNode,
        follow: &Follow,
        scope: Shape,
        g: &mut Graph,
    ) -> Shape {
        self.claim(&p.name);
        if p.branches.is_empty() {
            self.problem(&p.name, "a parallel needs at least one branch");
        }
        let mut branches = Vec::new();
        for (i, chain) in p.branches.iter().enumerate() {
            let mut states = IndexMap::new();
            let mut bg = Graph {
                states: &mut states,
                end_name: format!("{} branch {} done", p.name, i + 1),
                end_used: false,
            };
            if chain.is_empty() {
                self.problem(&p.name, format!("branch {} is empty", i + 1));
                continue;
            }
            self.chain(chain, &Follow::End, scope.clone(), &mut bg);
            if bg.end_used {
                self.claim(&bg.end_name);
            }
            branches.push(Branch {
                comment: None,
                start_at: chain.nodes[0].name().to_string(),
                states,
            });
        }
        let after_success = match p
            .result_at
            .as_deref()
            .map(key_path)
            .as_deref()
            .and_then(reference)
        {
            Some(rp) => scope.with_path(&rp, Shape::Array(Box::new(Shape::Any)), true),
            None => scope.clone(),
        };
        let (catch, after) =
            self.on_failure(&p.name, &p.on_failure, follow, &scope, after_success, g);
        let (next, end) = next_end(follow);
        g.states.insert(
            p.name.clone(),
            State::Parallel(ParallelState {
                comment: p.comment.clone(),
                branches,
                input_path: None,
                parameters: None,
                result_selector: None,
                result_path: Some(match &p.result_at {
                    Some(k) => NullablePath::Path(key_path(k)),
                    None => NullablePath::Null,
                }),
                output_path: None,
                retry: non_empty(Self::retriers(&p.retry)),
                catch: non_empty(catch),
                next,
                end,
            }),
        );
        // Keep the state order readable: the Parallel before its catch
        // handler states.
        move_before(g.states, &p.name, &catch_targets(g.states, &p.name));
        after
    }

    fn map(&mut self, m: &MapNode, follow: &Follow, scope: Shape, g: &mut Graph) -> Shape {
        self.claim(&m.name);
        let item = match self.read(&m.name, &m.items_path, &scope, None, None, true) {
            Some((Shape::Array(item), _)) => *item,
            Some((Shape::Any, _)) => Shape::Any,
            Some((other, _)) => {
                self.problem(
                    &m.name,
                    format!("{} is {other}, not an array", m.items_path),
                );
                Shape::Any
            }
            None => Shape::Any,
        };
        let body_scope = match &m.item_selector {
            Some(sel) => {
                self.template(&m.name, sel, &scope, Some(&item));
                self.selector_shape(sel, &scope, &item)
            }
            None => item.clone(),
        };
        let mut states = IndexMap::new();
        let mut bg = Graph {
            states: &mut states,
            end_name: format!("{} item done", m.name),
            end_used: false,
        };
        if m.body.is_empty() {
            self.problem(&m.name, "the map body is empty");
        }
        self.chain(&m.body, &Follow::End, body_scope, &mut bg);
        if bg.end_used {
            self.claim(&bg.end_name);
        }
        let after_success = match m
            .result_at
            .as_deref()
            .map(key_path)
            .as_deref()
            .and_then(reference)
        {
            Some(rp) => scope.with_path(&rp, Shape::Array(Box::new(Shape::Any)), true),
            None => scope.clone(),
        };
        let (catch, after) =
            self.on_failure(&m.name, &m.on_failure, follow, &scope, after_success, g);
        let (next, end) = next_end(follow);
        g.states.insert(
            m.name.clone(),
            State::Map(MapState {
                comment: m.comment.clone(),
                item_processor: Some(ItemProcessor {
                    comment: None,
                    processor_config: Some(ProcessorConfig {
                        mode: Some(ProcessorMode::Inline),
                        execution_type: None,
                    }),
                    start_at: m
                        .body
                        .nodes
                        .first()
                        .map(|n| n.name().to_string())
                        .unwrap_or_default(),
                    states,
                }),
                iterator: None,
                items_path: Some(m.items_path.clone()),
                item_reader: None,
                item_selector: m.item_selector.clone(),
                item_batcher: None,
                result_writer: None,
                max_concurrency: m.max_concurrency,
                max_concurrency_path: None,
                tolerated_failure_count: None,
                tolerated_failure_count_path: None,
                tolerated_failure_percentage: None,
                tolerated_failure_percentage_path: None,
                label: None,
                input_path: None,
                parameters: None,
                result_selector: None,
                result_path: Some(match &m.result_at {
                    Some(k) => NullablePath::Path(key_path(k)),
                    None => NullablePath::Null,
                }),
                output_path: None,
                retry: None,
                catch: non_empty(catch),
                next,
                end,
            }),
        );
        move_before(g.states, &m.name, &catch_targets(g.states, &m.name));
        after
    }

    fn selector_shape(&mut self, sel: &Value, scope: &Shape, item: &Shape) -> Shape {
        match sel {
            Value::Object(o) => {
                let ctx = context_shape(Some(item));
                let mut out = Shape::object();
                for (k, v) in o {
                    if let Some(field) = k.strip_suffix(".$") {
                        let shape = match v.as_str().map(JsonPath::parse) {
                            Some(Ok(p)) if p.context => {
                                ctx.resolve(&p).map(|r| r.0).unwrap_or(Shape::Any)
                            }
                            Some(Ok(p)) => scope.resolve(&p).map(|r| r.0).unwrap_or(Shape::Any),
                            _ => Shape::Any,
                        };
                        out = out.with_field(field, shape, true);
                    } else {
                        let shape = self.selector_shape(v, scope, item);
                        out = out.with_field(k, shape, true);
                    }
                }
                out
            }
            other => Shape::of_value(other),
        }
    }

    /// Compiles a poll loop: an entry Pass that sets the attempt counter to
    /// 1, the check task, a `done?` Choice, a Wait and a counting Pass that
    /// loop back to the check, and a `gave up` state for when the attempts
    /// run out. Returns the scope after the check task.
    fn poll(&mut self, p: &PollNode, follow: &Follow, scope: Shape, g: &mut Graph) -> Shape {
        let Some(key) = p.check.result_at.clone() else {
            self.problem(
                &p.name,
                "the check task of a poll loop needs result_at: the loop reads its result",
            );
            return scope;
        };
        if p.max_attempts == 0 {
            self.problem(&p.name, "a poll loop needs at least one attempt");
        }
        let names = PollNames::of(p, &key);
        self.claim(&p.name);
        g.states.insert(p.name.clone(), poll_entry(p, &names));
        let Some(counter_path) = reference(&names.counter) else {
            self.problem(
                &p.name,
                format!("{} is not a reference path", names.counter),
            );
            return scope;
        };
        let counted = scope.with_path(
            &counter_path,
            Shape::object().with_field("attempts", Shape::Integer, true),
            true,
        );

        // The check task: success goes to the done? Choice; a handled
        // failure leaves the loop like any task failure.
        let after_check = self.task(
            &p.check,
            &Follow::Next(names.done.clone()),
            follow,
            counted.clone(),
            g,
        );
        self.poll_done(p, &key, &names, follow, &counted, g);
        self.poll_wait_and_count(p, &names, g);
        self.poll_gave_up(p, &names, follow, g);
        after_check
    }

    /// The `done?` Choice of a poll loop: leave to `follow` when the
    /// condition holds, give up after the last attempt, wait otherwise.
    fn poll_done(
        &mut self,
        p: &PollNode,
        key: &str,
        names: &PollNames,
        follow: &Follow,
        counted_scope: &Shape,
        g: &mut Graph,
    ) {
        self.claim(&names.done);
        // The condition is read only after a successful check.
        let checked = match reference(&key_path(key)) {
            Some(rp) => {
                counted_scope.with_path(&rp, Shape::from_schema(&p.check.step.output_schema), true)
            }
            None => counted_scope.clone(),
        };
        let cond = self.cond(&names.done, &p.done, &checked);
        let exit = g.target(follow);
        g.states.insert(
            names.done.clone(),
            State::Choice(ChoiceState {
                comment: Some(format!(
                    "Stop when done, or after {} attempts.",
                    p.max_attempts
                )),
                input_path: None,
                output_path: None,
                choices: vec![
                    ChoiceRule {
                        condition: cond,
                        next: Some(exit),
                        comment: None,
                    },
                    ChoiceRule {
                        condition: Condition::Compare {
                            variable: names.counter_attempts.clone(),
                            op: Comparison::NumericGreaterThanEquals,
                            operand: Operand::Literal(json!(p.max_attempts)),
                        },
                        next: Some(names.gave_up.clone()),
                        comment: None,
                    },
                ],
                default: Some(names.wait.clone()),
            }),
        );
    }

    /// The Wait of a poll loop and the Pass after it that adds one to the
    /// attempt counter and goes back to the check task.
    fn poll_wait_and_count(&mut self, p: &PollNode, names: &PollNames, g: &mut Graph) {
        self.claim(&names.wait);
        g.states.insert(
            names.wait.clone(),
            State::Wait(WaitState {
                comment: None,
                input_path: None,
                output_path: None,
                seconds: Some(p.interval_seconds),
                seconds_path: None,
                timestamp: None,
                timestamp_path: None,
                next: Some(names.count.clone()),
                end: None,
            }),
        );
        self.claim(&names.count);
        g.states.insert(
            names.count.clone(),
            State::Pass(PassState {
                comment: None,
                input_path: None,
                parameters: Some(json!({
                    "attempts.$": format!("States.MathAdd({}, 1)", names.counter_attempts)
                })),
                result: None,
                result_path: Some(NullablePath::Path(names.counter.clone())),
                output_path: None,
                next: Some(p.check.name.clone()),
                end: None,
            }),
        );
    }

    /// The `gave up` state of a poll loop, handled like a failure of the
    /// check task: a Fail when failures propagate, else a Pass that records
    /// the failure key and joins the check task's catcher.
    fn poll_gave_up(&mut self, p: &PollNode, names: &PollNames, follow: &Follow, g: &mut Graph) {
        self.claim(&names.gave_up);
        let cause = format!(
            "{} was not done after {} attempts, {} s apart",
            p.check.name, p.max_attempts, p.interval_seconds
        );
        let state = match &p.check.on_failure {
            OnFailure::Propagate => State::Fail(FailState {
                comment: None,
                error: Some(ErrorName::WaitExhausted.as_str().into()),
                error_path: None,
                cause: Some(cause),
                cause_path: None,
            }),
            OnFailure::Handle { key, .. } => {
                // The catcher of the check task already leads to the
                // handler (or the follow-up); the give-up records the same
                // failure key and joins it there.
                let target = match catch_targets(g.states, &p.check.name).first() {
                    Some(t) => t.clone(),
                    None => g.target(follow),
                };
                State::Pass(PassState {
                    comment: Some("Record that the wait ran out, and go on.".into()),
                    input_path: None,
                    parameters: None,
                    result: Some(json!({
                        "Error": ErrorName::WaitExhausted.as_str(),
                        "Cause": cause,
                    })),
                    result_path: Some(NullablePath::Path(format!("$.{FAILURES_KEY}.{key}"))),
                    output_path: None,
                    next: Some(target),
                    end: None,
                })
            }
        };
        g.states.insert(names.gave_up.clone(), state);
    }
}

/// The states a poll loop adds next to its check task, and the path of
/// its attempt counter (one per result key, under `$.polls`).
struct PollNames {
    /// `$.polls.<key>`: the counter object.
    counter: String,
    /// `$.polls.<key>.attempts`: the count itself.
    counter_attempts: String,
    done: String,
    wait: String,
    count: String,
    gave_up: String,
}

impl PollNames {
    fn of(p: &PollNode, key: &str) -> PollNames {
        let counter = format!("$.{POLLS_KEY}.{}", key.replace('.', "_"));
        PollNames {
            counter_attempts: format!("{counter}.attempts"),
            counter,
            done: format!("{} done?", p.name),
            wait: format!("{} wait", p.name),
            count: format!("{} count", p.name),
            gave_up: format!("{} gave up", p.name),
        }
    }
}

/// The entry Pass of a poll loop: sets the attempt counter to 1 and goes
/// to the check task.
fn poll_entry(p: &PollNode, names: &PollNames) -> State {
    State::Pass(PassState {
        comment: Some(p.comment.clone().unwrap_or_else(|| {
            format!(
                "Poll {} every {} s, at most {} times.",
                p.check.name, p.interval_seconds, p.max_attempts
            )
        })),
        input_path: None,
        parameters: None,
        result: Some(json!({"attempts": 1})),
        result_path: Some(NullablePath::Path(names.counter.clone())),
        output_path: None,
        next: Some(p.check.name.clone()),
        end: None,
    })
}

/// Inside a branch taken because `IsPresent(p)` held, `p` is present;
/// because `IsNull(p)` was false, `p` is not null.
fn narrow(scope: &Shape, cond: &Cond) -> Shape {
    match cond {
        Cond::IsNull(p, false) => match JsonPath::parse_reference(p) {
            Ok(path) => match scope.resolve(&path) {
                Ok((shape, present)) => scope.with_path(&path, shape.without_null(), present),
                Err(_) => scope.clone(),
            },
            Err(_) => scope.clone(),
        },
        Cond::IsPresent(p, true) => match JsonPath::parse_reference(p) {
            Ok(path) => match scope.resolve(&path) {
                Ok((shape, _)) => scope.with_path(&path, shape, true),
                Err(_) => scope.clone(),
            },
            Err(_) => scope.clone(),
        },
        Cond::And(cs) => cs.iter().fold(scope.clone(), |s, c| narrow(&s, c)),
        _ => scope.clone(),
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

fn num(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn field_names(s: &Shape) -> String {
    match s {
        Shape::Object { fields, .. } => fields.keys().cloned().collect::<Vec<_>>().join(", "),
        _ => String::new(),
    }
}

fn catch_targets(states: &IndexMap<String, State>, name: &str) -> Vec<String> {
    states
        .get(name)
        .map(|s| s.catch().iter().map(|c| c.next.clone()).collect())
        .unwrap_or_default()
}

/// Moves state `name` before the first of `others` that precedes it, so a
/// state reads before the handler states its catchers lead to.
fn move_before(states: &mut IndexMap<String, State>, name: &str, others: &[String]) {
    let Some(from) = states.get_index_of(name) else {
        return;
    };
    let to = others
        .iter()
        .filter_map(|o| states.get_index_of(o))
        .filter(|i| *i < from)
        .min();
    if let Some(to) = to {
        states.move_index(from, to);
    }
}

/// The `ecs:runTask.sync` parameters of a container step: the cluster,
/// task definition and network come from `DefinitionSubstitutions`; the
/// container runs `firebreak step NAME --input-from-env`, each input field
/// in an environment variable as JSON.
fn container_parameters(step: &str, input: Map<String, Value>) -> Map<String, Value> {
    let mut env = Vec::new();
    let var = |field: &str| {
        if field.is_empty() {
            "FIREBREAK_INPUT".to_string()
        } else {
            format!("{CONTAINER_INPUT_PREFIX}{}", field.to_ascii_uppercase())
        }
    };
    for (k, v) in input {
        match (k.as_str(), v) {
            ("input.$", Value::String(path)) => env.push(json!({
                "Name": var(""),
                "Value.$": format!("States.JsonToString({path})"),
            })),
            ("input", Value::Object(fields)) => {
                for (f, v) in fields {
                    match (f.strip_suffix(".$"), v) {
                        (Some(field), Value::String(path)) => env.push(json!({
                            "Name": var(field),
                            "Value.$": format!("States.JsonToString({path})"),
                        })),
                        (_, v) => env.push(json!({
                            "Name": var(&f),
                            "Value": v.to_string(),
                        })),
                    }
                }
            }
            _ => {}
        }
    }
    let mut p = Map::new();
    p.insert("Cluster".into(), json!("${AnalysisClusterArn}"));
    p.insert(
        "TaskDefinition".into(),
        json!("${AnalysisTaskDefinitionArn}"),
    );
    p.insert("LaunchType".into(), json!("FARGATE"));
    p.insert(
        "NetworkConfiguration".into(),
        json!({"AwsvpcConfiguration": {
            "Subnets": ["${AnalysisSubnetId}"],
            "SecurityGroups": ["${AnalysisSecurityGroupId}"],
            "AssignPublicIp": "DISABLED"
        }}),
    );
    p.insert(
        "Overrides".into(),
        json!({"ContainerOverrides": [{
            "Name": CONTAINER_NAME,
            "Command": ["step", step, "--input-from-env"],
            "Environment": env,
        }]}),
    );
    p
}
