//! Validation of any ASL document (not only firebreak's), reporting every
//! problem at once, each with the location of the offending state.
//!
//! Two passes. The first reads the JSON value state by state, so that a
//! malformed field in one state does not hide problems in the others. When
//! the document parses, the second checks the typed graph: targets, names,
//! reachability, Retry/Catch rules and every path and intrinsic call.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::asl::{
    kind_of, ChoiceRule, Condition, Operand, ProcessorMode, QueryLanguage, State, StateMachine,
};
use crate::error_name::ErrorName;
use crate::intrinsics::{looks_like_call, Call};
use crate::path::JsonPath;

/// One problem in a definition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Where: `States.Isolate.Retry[0]`, `States.Par.Branches[1].States.X`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Limits from the Step Functions quotas and the States Language.
const MAX_STATE_NAME_CHARS: usize = 80;
/// Largest value AWS accepts for TimeoutSeconds, IntervalSeconds and
/// MaxAttempts (99999999).
const MAX_SECONDS: u64 = 99_999_999;
/// MaxDelaySeconds must be below one year plus a day (31622401).
const MAX_DELAY_SECONDS: u64 = 31_622_400;

/// Validates JSON text.
pub fn validate_json(text: &str) -> Result<StateMachine, Problems> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Problems(vec![Problem {
            location: format!("line {}, column {}", e.line(), e.column()),
            message: format!("not valid JSON: {e}"),
        }])
    })?;
    validate_value(&value)
}

/// Validates a parsed JSON value and returns the typed definition.
pub fn validate_value(value: &Value) -> Result<StateMachine, Problems> {
    let mut v = Validator::default();
    v.structure_top(value);
    if !v.problems.is_empty() {
        return Err(Problems(v.problems));
    }
    let machine: StateMachine = match serde_json::from_value(value.clone()) {
        Ok(m) => m,
        Err(e) => {
            return Err(Problems(vec![Problem {
                location: "(definition)".into(),
                message: e.to_string(),
            }]))
        }
    };
    v.semantics(&machine);
    if v.problems.is_empty() {
        Ok(machine)
    } else {
        Err(Problems(v.problems))
    }
}

/// Checks an already typed definition (for example one the compiler built).
pub fn validate_machine(machine: &StateMachine) -> Result<(), Problems> {
    let mut v = Validator::default();
    v.semantics(machine);
    if v.problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(v.problems))
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    /// Every state name seen anywhere, with its first location.
    names: BTreeMap<String, String>,
}

impl Validator {
    fn report(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.into(),
            message: message.into(),
        });
    }

    // ----- pass 1: structure, state by state ------------------------------

    fn structure_top(&mut self, value: &Value) {
        let Some(obj) = value.as_object() else {
            self.report(
                "(definition)",
                format!("a definition is a JSON object, found {}", kind_of(value)),
            );
            return;
        };
        const TOP: [&str; 6] = [
            "Comment",
            "QueryLanguage",
            "StartAt",
            "States",
            "TimeoutSeconds",
            "Version",
        ];
        for key in obj.keys() {
            if !TOP.contains(&key.as_str()) {
                self.report("(definition)", format!("unknown top-level field \"{key}\""));
            }
        }
        // Check the scalar top-level fields by deserialising a copy
        // without States.
        let mut top = obj.clone();
        top.insert("States".into(), Value::Object(Default::default()));
        if let Err(e) = typed::<StateMachine>(&Value::Object(top)) {
            self.report("(definition)", e);
        }
        self.structure_graph(obj, "");
    }

    /// A graph: top level, Parallel branch, Map processor.
    fn structure_graph(&mut self, obj: &serde_json::Map<String, Value>, prefix: &str) {
        let here = if prefix.is_empty() {
            "(definition)".to_string()
        } else {
            prefix.to_string()
        };
        match obj.get("StartAt") {
            Some(Value::String(_)) => {}
            Some(other) => self.report(
                here.clone(),
                format!("\"StartAt\" must be a string, found {}", kind_of(other)),
            ),
            None => self.report(here.clone(), "missing \"StartAt\""),
        }
        let states = match obj.get("States") {
            Some(Value::Object(s)) => s,
            Some(other) => {
                self.report(
                    here,
                    format!("\"States\" must be an object, found {}", kind_of(other)),
                );
                return;
            }
            None => {
                self.report(here, "missing \"States\"");
                return;
            }
        };
        if states.is_empty() {
            self.report(here, "\"States\" is empty");
        }
        for (name, state) in states {
            let loc = state_loc(prefix, name);
            self.structure_state(state, &loc);
        }
    }

    fn structure_state(&mut self, state: &Value, loc: &str) {
        let Some(obj) = state.as_object() else {
            self.report(
                loc,
                format!("a state is an object, found {}", kind_of(state)),
            );
            return;
        };
        let ty = match obj.get("Type") {
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                self.report(
                    loc,
                    format!("\"Type\" must be a string, found {}", kind_of(other)),
                );
                return;
            }
            None => {
                self.report(loc, "missing \"Type\"");
                return;
            }
        };
        // Check this state's own fields with nested graphs removed; the
        // nested graphs are checked on their own so each problem is named.
        let mut own = obj.clone();
        own.remove("Type");
        let result = match ty {
            "Task" => typed::<crate::asl::TaskState>(&Value::Object(own)),
            "Pass" => typed::<crate::asl::PassState>(&Value::Object(own)),
            "Choice" => self.structure_choice(&own, loc),
            "Wait" => typed::<crate::asl::WaitState>(&Value::Object(own)),
            "Succeed" => typed::<crate::asl::SucceedState>(&Value::Object(own)),
            "Fail" => typed::<crate::asl::FailState>(&Value::Object(own)),
            "Parallel" => {
                match own.get("Branches") {
                    Some(Value::Array(branches)) => {
                        for (i, b) in branches.iter().enumerate() {
                            let bloc = format!("{loc}.Branches[{i}]");
                            match b.as_object() {
                                Some(bobj) => {
                                    self.structure_nested_keys(
                                        bobj,
                                        &bloc,
                                        &["Comment", "StartAt", "States"],
                                    );
                                    self.structure_graph(bobj, &bloc);
                                }
                                None => self.report(bloc, "a branch is an object"),
                            }
                        }
                    }
                    Some(other) => self.report(
                        loc,
                        format!("\"Branches\" must be an array, found {}", kind_of(other)),
                    ),
                    None => self.report(loc, "missing \"Branches\""),
                }
                own.insert("Branches".into(), Value::Array(Vec::new()));
                typed::<crate::asl::ParallelState>(&Value::Object(own))
            }
            "Map" => {
                for key in ["ItemProcessor", "Iterator"] {
                    if let Some(p) = own.remove(key) {
                        let ploc = format!("{loc}.{key}");
                        match p.as_object() {
                            Some(pobj) => {
                                let allowed: &[&str] = if key == "ItemProcessor" {
                                    &["Comment", "ProcessorConfig", "StartAt", "States"]
                                } else {
                                    &["Comment", "StartAt", "States"]
                                };
                                self.structure_nested_keys(pobj, &ploc, allowed);
                                if let Some(cfg) = pobj.get("ProcessorConfig") {
                                    if let Err(e) = typed::<crate::asl::ProcessorConfig>(cfg) {
                                        self.report(format!("{ploc}.ProcessorConfig"), e);
                                    }
                                }
                                self.structure_graph(pobj, &ploc);
                            }
                            None => self.report(ploc, format!("\"{key}\" must be an object")),
                        }
                    }
                }
                typed::<crate::asl::MapState>(&Value::Object(own))
            }
            other => {
                self.report(
                    loc,
                    format!(
                        "unknown state type \"{other}\" (expected Task, Pass, Choice, Wait, Succeed, Fail, Parallel or Map)"
                    ),
                );
                Ok(())
            }
        };
        if let Err(e) = result {
            self.report(loc, e);
        }
    }

    fn structure_nested_keys(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        loc: &str,
        allowed: &[&str],
    ) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.report(loc, format!("unknown field \"{key}\""));
            }
        }
    }

    fn structure_choice(
        &mut self,
        own: &serde_json::Map<String, Value>,
        loc: &str,
    ) -> Result<(), String> {
        // Rules are parsed one by one so that each bad rule is reported.
        let mut rest = own.clone();
        if let Some(choices) = rest.remove("Choices") {
            match choices {
                Value::Array(rules) => {
                    for (i, r) in rules.iter().enumerate() {
                        if let Err(e) = ChoiceRule::from_value(r) {
                            self.report(format!("{loc}.Choices[{i}]"), e);
                        }
                    }
                }
                other => self.report(
                    loc,
                    format!("\"Choices\" must be an array, found {}", kind_of(&other)),
                ),
            }
        }
        typed::<crate::asl::ChoiceState>(&Value::Object(rest))
    }

    // ----- pass 2: semantics of the typed graph ---------------------------

    fn semantics(&mut self, m: &StateMachine) {
        if m.query_language == Some(QueryLanguage::Jsonata) {
            self.report(
                "(definition)",
                "QueryLanguage JSONata is not supported: firebreak runs JSONPath definitions",
            );
        }
        if let Some(v) = &m.version {
            if v != "1.0" {
                self.report(
                    "(definition)",
                    format!("Version must be \"1.0\", found {v:?}"),
                );
            }
        }
        if let Some(t) = m.timeout_seconds {
            if t == 0 || t > MAX_SECONDS {
                self.report(
                    "(definition)",
                    format!("TimeoutSeconds must be between 1 and {MAX_SECONDS}, found {t}"),
                );
            }
        }
        self.graph(&m.start_at, &m.states, "");
    }

    fn graph(&mut self, start_at: &str, states: &IndexMap<String, State>, prefix: &str) {
        let here = if prefix.is_empty() {
            "(definition)".to_string()
        } else {
            prefix.to_string()
        };
        if !states.contains_key(start_at) {
            self.report(
                here.clone(),
                format!("StartAt names \"{start_at}\", which is not a state here"),
            );
        }
        for (name, state) in states {
            let loc = state_loc(prefix, name);
            if let Some(first) = self.names.get(name) {
                self.report(
                    loc.clone(),
                    format!("duplicate state name \"{name}\" (also at {first}); names must be unique across the whole definition, branches included"),
                );
            } else {
                self.names.insert(name.clone(), loc.clone());
            }
            if name.is_empty() || name.chars().count() > MAX_STATE_NAME_CHARS {
                self.report(
                    loc.clone(),
                    format!("a state name has 1 to {MAX_STATE_NAME_CHARS} characters"),
                );
            }
            for (field, target) in state.targets() {
                if !states.contains_key(target) {
                    self.report(
                        loc.clone(),
                        format!("{field} names \"{target}\", which is not a state in this graph"),
                    );
                }
            }
            self.state(state, &loc);
        }
        self.reachability(start_at, states, &here, prefix);
    }

    fn reachability(
        &mut self,
        start_at: &str,
        states: &IndexMap<String, State>,
        here: &str,
        prefix: &str,
    ) {
        if !states.contains_key(start_at) {
            return;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue = VecDeque::from([start_at]);
        while let Some(s) = queue.pop_front() {
            if !seen.insert(s) {
                continue;
            }
            if let Some(state) = states.get(s) {
                for (_, t) in state.targets() {
                    if states.contains_key(t) {
                        queue.push_back(t);
                    }
                }
            }
        }
        for name in states.keys() {
            if !seen.contains(name.as_str()) {
                self.report(
                    state_loc(prefix, name),
                    format!("state \"{name}\" is unreachable from StartAt \"{start_at}\""),
                );
            }
        }
        // A state can finish when some path from it reaches a terminal
        // state: walk the graph backwards from the terminal states.
        let mut can_end: HashSet<&str> = states
            .iter()
            .filter(|(_, s)| s.is_terminal())
            .map(|(n, _)| n.as_str())
            .collect();
        loop {
            let before = can_end.len();
            for (name, state) in states {
                if !can_end.contains(name.as_str())
                    && state.targets().iter().any(|(_, t)| can_end.contains(t))
                {
                    can_end.insert(name.as_str());
                }
            }
            if can_end.len() == before {
                break;
            }
        }
        if can_end.is_empty() {
            self.report(
                here,
                "no terminal state (Succeed, Fail or End: true) in this graph",
            );
            return;
        }
        for name in states.keys() {
            if seen.contains(name.as_str()) && !can_end.contains(name.as_str()) {
                self.report(
                    state_loc(prefix, name),
                    format!("no terminal state can be reached from \"{name}\": every path from it loops forever"),
                );
            }
        }
    }

    fn state(&mut self, state: &State, loc: &str) {
        if let Some((next, end)) = state.next_end() {
            match (next, end) {
                (Some(_), Some(true)) => self.report(loc, "has both Next and End"),
                (None, None) | (None, Some(false)) => self.report(loc, "needs Next or End: true"),
                (Some(_), Some(false)) => self.report(loc, "End must be true when given"),
                _ => {}
            }
        }
        for (i, r) in state.retry().iter().enumerate() {
            let rloc = format!("{loc}.Retry[{i}]");
            self.error_equals(&r.error_equals, &rloc, i + 1 == state.retry().len());
            if let Some(v) = r.interval_seconds {
                if v == 0 || v > MAX_SECONDS {
                    self.report(
                        rloc.clone(),
                        format!("IntervalSeconds must be between 1 and {MAX_SECONDS}, found {v}"),
                    );
                }
            }
            if let Some(v) = r.max_attempts {
                if v > MAX_SECONDS {
                    self.report(
                        rloc.clone(),
                        format!("MaxAttempts must be between 0 and {MAX_SECONDS}, found {v}"),
                    );
                }
            }
            if let Some(b) = &r.backoff_rate {
                if b.as_f64().is_none_or(|b| b < 1.0) {
                    self.report(
                        rloc.clone(),
                        format!("BackoffRate must be at least 1.0, found {b}"),
                    );
                }
            }
            if let Some(v) = r.max_delay_seconds {
                if v == 0 || v > MAX_DELAY_SECONDS {
                    self.report(
                        rloc.clone(),
                        format!(
                            "MaxDelaySeconds must be between 1 and {MAX_DELAY_SECONDS}, found {v}"
                        ),
                    );
                }
            }
        }
        for (i, c) in state.catch().iter().enumerate() {
            let cloc = format!("{loc}.Catch[{i}]");
            self.error_equals(&c.error_equals, &cloc, i + 1 == state.catch().len());
            if let Some(p) = c.result_path.as_ref().and_then(|p| p.as_path()) {
                self.reference_path(p, &cloc, "ResultPath");
            }
        }
        match state {
            State::Task(t) => {
                self.io(t.input_path.as_ref(), t.output_path.as_ref(), loc);
                self.result_path(t.result_path.as_ref(), loc);
                self.template(t.parameters.as_ref(), loc, "Parameters");
                self.template(t.result_selector.as_ref(), loc, "ResultSelector");
                if !t.resource.starts_with("arn:") && !is_placeholder(&t.resource) {
                    self.report(
                        loc,
                        format!(
                            "Resource must be an ARN or a ${{Placeholder}}, found {:?}",
                            t.resource
                        ),
                    );
                }
                self.one_of(
                    loc,
                    &[
                        ("TimeoutSeconds", t.timeout_seconds.is_some()),
                        ("TimeoutSecondsPath", t.timeout_seconds_path.is_some()),
                    ],
                    false,
                );
                self.one_of(
                    loc,
                    &[
                        ("HeartbeatSeconds", t.heartbeat_seconds.is_some()),
                        ("HeartbeatSecondsPath", t.heartbeat_seconds_path.is_some()),
                    ],
                    false,
                );
                for (field, p) in [
                    ("TimeoutSecondsPath", &t.timeout_seconds_path),
                    ("HeartbeatSecondsPath", &t.heartbeat_seconds_path),
                ] {
                    if let Some(p) = p {
                        self.definite_path(p, loc, field);
                    }
                }
                if let Some(t0) = t.timeout_seconds {
                    if t0 == 0 || t0 > MAX_SECONDS {
                        self.report(
                            loc,
                            format!(
                                "TimeoutSeconds must be between 1 and {MAX_SECONDS}, found {t0}"
                            ),
                        );
                    }
                }
                if let Some(h) = t.heartbeat_seconds {
                    if h == 0 || h > MAX_SECONDS {
                        self.report(
                            loc,
                            format!(
                                "HeartbeatSeconds must be between 1 and {MAX_SECONDS}, found {h}"
                            ),
                        );
                    }
                    if let Some(t0) = t.timeout_seconds {
                        if h >= t0 {
                            self.report(loc, format!("HeartbeatSeconds ({h}) must be smaller than TimeoutSeconds ({t0})"));
                        }
                    }
                }
            }
            State::Pass(p) => {
                self.io(p.input_path.as_ref(), p.output_path.as_ref(), loc);
                self.result_path(p.result_path.as_ref(), loc);
                self.template(p.parameters.as_ref(), loc, "Parameters");
            }
            State::Choice(c) => {
                self.io(c.input_path.as_ref(), c.output_path.as_ref(), loc);
                if c.choices.is_empty() {
                    self.report(loc, "a Choice state needs at least one rule in Choices");
                }
                for (i, rule) in c.choices.iter().enumerate() {
                    let rloc = format!("{loc}.Choices[{i}]");
                    if rule.next.is_none() {
                        self.report(rloc.clone(), "a top-level Choice rule needs Next");
                    }
                    self.rule(rule, &rloc, true);
                }
            }
            State::Wait(w) => {
                self.io(w.input_path.as_ref(), w.output_path.as_ref(), loc);
                self.one_of(
                    loc,
                    &[
                        ("Seconds", w.seconds.is_some()),
                        ("SecondsPath", w.seconds_path.is_some()),
                        ("Timestamp", w.timestamp.is_some()),
                        ("TimestampPath", w.timestamp_path.is_some()),
                    ],
                    true,
                );
                if let Some(p) = &w.seconds_path {
                    self.definite_path(p, loc, "SecondsPath");
                }
                if let Some(p) = &w.timestamp_path {
                    self.definite_path(p, loc, "TimestampPath");
                }
                if let Some(ts) = &w.timestamp {
                    if crate::time::parse_timestamp(ts).is_none() {
                        self.report(
                            loc,
                            format!("Timestamp {ts:?} is not an RFC 3339 timestamp"),
                        );
                    }
                }
                if let Some(s) = w.seconds {
                    if s > MAX_SECONDS {
                        self.report(
                            loc,
                            format!("Seconds must be between 0 and {MAX_SECONDS}, found {s}"),
                        );
                    }
                }
            }
            State::Succeed(s) => self.io(s.input_path.as_ref(), s.output_path.as_ref(), loc),
            State::Fail(f) => {
                self.one_of(
                    loc,
                    &[
                        ("Error", f.error.is_some()),
                        ("ErrorPath", f.error_path.is_some()),
                    ],
                    false,
                );
                self.one_of(
                    loc,
                    &[
                        ("Cause", f.cause.is_some()),
                        ("CausePath", f.cause_path.is_some()),
                    ],
                    false,
                );
                for (field, p) in [("ErrorPath", &f.error_path), ("CausePath", &f.cause_path)] {
                    if let Some(p) = p {
                        if looks_like_call(p) {
                            if let Err(e) = Call::parse(p) {
                                self.report(loc, format!("{field}: {e}"));
                            }
                        } else {
                            self.definite_path(p, loc, field);
                        }
                    }
                }
            }
            State::Parallel(p) => {
                self.io(p.input_path.as_ref(), p.output_path.as_ref(), loc);
                self.result_path(p.result_path.as_ref(), loc);
                self.template(p.parameters.as_ref(), loc, "Parameters");
                self.template(p.result_selector.as_ref(), loc, "ResultSelector");
                if p.branches.is_empty() {
                    self.report(loc, "a Parallel state needs at least one branch");
                }
                for (i, b) in p.branches.iter().enumerate() {
                    self.graph(&b.start_at, &b.states, &format!("{loc}.Branches[{i}]"));
                }
            }
            State::Map(m) => {
                self.io(m.input_path.as_ref(), m.output_path.as_ref(), loc);
                self.result_path(m.result_path.as_ref(), loc);
                self.template(m.item_selector.as_ref(), loc, "ItemSelector");
                self.template(m.parameters.as_ref(), loc, "Parameters");
                self.template(m.result_selector.as_ref(), loc, "ResultSelector");
                self.one_of(
                    loc,
                    &[
                        ("ItemProcessor", m.item_processor.is_some()),
                        ("Iterator", m.iterator.is_some()),
                    ],
                    true,
                );
                self.one_of(
                    loc,
                    &[
                        ("ItemSelector", m.item_selector.is_some()),
                        ("Parameters", m.parameters.is_some()),
                    ],
                    false,
                );
                self.one_of(
                    loc,
                    &[
                        ("MaxConcurrency", m.max_concurrency.is_some()),
                        ("MaxConcurrencyPath", m.max_concurrency_path.is_some()),
                    ],
                    false,
                );
                self.one_of(
                    loc,
                    &[
                        ("ToleratedFailureCount", m.tolerated_failure_count.is_some()),
                        (
                            "ToleratedFailureCountPath",
                            m.tolerated_failure_count_path.is_some(),
                        ),
                    ],
                    false,
                );
                self.one_of(
                    loc,
                    &[
                        (
                            "ToleratedFailurePercentage",
                            m.tolerated_failure_percentage.is_some(),
                        ),
                        (
                            "ToleratedFailurePercentagePath",
                            m.tolerated_failure_percentage_path.is_some(),
                        ),
                    ],
                    false,
                );
                if let Some(p) = &m.items_path {
                    self.definite_path(p, loc, "ItemsPath");
                }
                for (field, p) in [
                    ("MaxConcurrencyPath", &m.max_concurrency_path),
                    ("ToleratedFailureCountPath", &m.tolerated_failure_count_path),
                    (
                        "ToleratedFailurePercentagePath",
                        &m.tolerated_failure_percentage_path,
                    ),
                ] {
                    if let Some(p) = p {
                        self.definite_path(p, loc, field);
                    }
                }
                if let Some(pct) = &m.tolerated_failure_percentage {
                    if pct.as_f64().is_none_or(|p| !(0.0..=100.0).contains(&p)) {
                        self.report(
                            loc,
                            format!(
                                "ToleratedFailurePercentage must be between 0 and 100, found {pct}"
                            ),
                        );
                    }
                }
                let distributed = m
                    .item_processor
                    .as_ref()
                    .and_then(|p| p.processor_config.as_ref())
                    .and_then(|c| c.mode)
                    == Some(ProcessorMode::Distributed);
                if distributed {
                    let has_type = m
                        .item_processor
                        .as_ref()
                        .and_then(|p| p.processor_config.as_ref())
                        .and_then(|c| c.execution_type)
                        .is_some();
                    if !has_type {
                        self.report(
                            format!("{loc}.ItemProcessor.ProcessorConfig"),
                            "DISTRIBUTED mode needs an ExecutionType",
                        );
                    }
                } else {
                    for (field, present) in [
                        ("ItemReader", m.item_reader.is_some()),
                        ("ItemBatcher", m.item_batcher.is_some()),
                        ("ResultWriter", m.result_writer.is_some()),
                        ("Label", m.label.is_some()),
                    ] {
                        if present {
                            self.report(loc, format!("{field} is only allowed in a Map with ProcessorConfig Mode DISTRIBUTED"));
                        }
                    }
                }
                if let Some(p) = &m.item_processor {
                    self.graph(&p.start_at, &p.states, &format!("{loc}.ItemProcessor"));
                } else if let Some(b) = &m.iterator {
                    self.graph(&b.start_at, &b.states, &format!("{loc}.Iterator"));
                }
            }
        }
    }

    /// At most one (or, when `required`, exactly one) of the fields.
    fn one_of(&mut self, loc: &str, fields: &[(&str, bool)], required: bool) {
        let given: Vec<&str> = fields.iter().filter(|(_, p)| *p).map(|(f, _)| *f).collect();
        let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
        if given.len() > 1 {
            self.report(
                loc,
                format!(
                    "only one of {} may be given, found {}",
                    names.join(", "),
                    given.join(" and ")
                ),
            );
        } else if required && given.is_empty() {
            self.report(loc, format!("needs one of {}", names.join(", ")));
        }
    }

    fn error_equals(&mut self, names: &[String], loc: &str, last: bool) {
        if names.is_empty() {
            self.report(loc, "ErrorEquals must name at least one error");
        }
        let has_all = names.iter().any(|n| n == "States.ALL");
        if has_all && names.len() > 1 {
            self.report(loc, "States.ALL must be alone in ErrorEquals");
        }
        if has_all && !last {
            self.report(loc, "the rule with States.ALL must be the last one");
        }
        for n in names {
            if n.is_empty() {
                self.report(loc, "an error name must not be empty");
            } else if n.starts_with("States.") && n.parse::<ErrorName>().is_err() {
                self.report(loc, format!("unknown predefined error name \"{n}\""));
            }
        }
    }

    fn io(
        &mut self,
        input: Option<&crate::asl::NullablePath>,
        output: Option<&crate::asl::NullablePath>,
        loc: &str,
    ) {
        for (field, p) in [("InputPath", input), ("OutputPath", output)] {
            if let Some(p) = p.and_then(|p| p.as_path()) {
                if let Err(e) = JsonPath::parse(p) {
                    self.report(loc, format!("{field}: {e}"));
                }
            }
        }
    }

    fn result_path(&mut self, p: Option<&crate::asl::NullablePath>, loc: &str) {
        if let Some(p) = p.and_then(|p| p.as_path()) {
            self.reference_path(p, loc, "ResultPath");
        }
    }

    fn reference_path(&mut self, p: &str, loc: &str, field: &str) {
        if let Err(e) = JsonPath::parse_reference(p) {
            self.report(loc, format!("{field}: {e}"));
        }
    }

    fn definite_path(&mut self, p: &str, loc: &str, field: &str) {
        match JsonPath::parse(p) {
            Ok(path) if !path.is_definite() => self.report(
                loc,
                format!(
                    "{field}: {p:?} must select a single value (no wildcards, slices or filters)"
                ),
            ),
            Ok(_) => {}
            Err(e) => self.report(loc, format!("{field}: {e}")),
        }
    }

    /// A payload template: every `.$` key holds a path or an intrinsic call.
    fn template(&mut self, v: Option<&Value>, loc: &str, field: &str) {
        let Some(v) = v else { return };
        self.template_value(v, loc, field);
    }

    fn template_value(&mut self, v: &Value, loc: &str, at: &str) {
        match v {
            Value::Object(o) => {
                for (k, val) in o {
                    let here = format!("{at}.{k}");
                    if k.ends_with(".$") {
                        match val {
                            Value::String(s) if looks_like_call(s) => {
                                if let Err(e) = Call::parse(s) {
                                    self.report(loc, format!("{here}: {e}"));
                                }
                            }
                            Value::String(s) => {
                                if let Err(e) = JsonPath::parse(s) {
                                    self.report(loc, format!("{here}: {e}"));
                                }
                            }
                            other => self.report(
                                loc,
                                format!("{here}: a key ending in .$ must hold a path or an intrinsic call, found {}", kind_of(other)),
                            ),
                        }
                    } else {
                        self.template_value(val, loc, &here);
                    }
                }
            }
            Value::Array(a) => {
                for (i, val) in a.iter().enumerate() {
                    self.template_value(val, loc, &format!("{at}[{i}]"));
                }
            }
            _ => {}
        }
    }

    fn rule(&mut self, rule: &ChoiceRule, loc: &str, top: bool) {
        if !top && rule.next.is_some() {
            self.report(loc, "Next is only allowed on top-level Choice rules");
        }
        match &rule.condition {
            Condition::And(rules) | Condition::Or(rules) => {
                let op = if matches!(rule.condition, Condition::And(_)) {
                    "And"
                } else {
                    "Or"
                };
                for (i, r) in rules.iter().enumerate() {
                    self.rule(r, &format!("{loc}.{op}[{i}]"), false);
                }
            }
            Condition::Not(r) => self.rule(r, &format!("{loc}.Not"), false),
            Condition::Compare {
                variable,
                op,
                operand,
            } => {
                if let Err(e) = JsonPath::parse(variable) {
                    self.report(loc, format!("Variable: {e}"));
                }
                match operand {
                    Operand::Path(p) => {
                        if let Err(e) = JsonPath::parse(p) {
                            self.report(loc, format!("{}Path: {e}", op.name()));
                        }
                    }
                    Operand::Literal(Value::String(s))
                        if op.name().starts_with("Timestamp")
                            && crate::time::parse_timestamp(s).is_none() =>
                    {
                        self.report(
                            loc,
                            format!("{}: {s:?} is not an RFC 3339 timestamp", op.name()),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
}

fn state_loc(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        format!("States.{name}")
    } else {
        format!("{prefix}.States.{name}")
    }
}

fn is_placeholder(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s.len() > 3
}

/// Deserialises a value into `T`, giving the path of the bad field.
fn typed<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    let de = v.clone();
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                Err(inner)
            } else {
                Err(format!("{path}: {inner}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(v: Value) -> Vec<String> {
        match validate_value(&v) {
            Ok(_) => Vec::new(),
            Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_minimal_definition_is_valid() {
        assert!(problems(json!({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}})).is_empty());
    }

    #[test]
    fn all_problems_are_reported_together() {
        let p = problems(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "Missing"},
                "B": {"Type": "Succeed"},
                "C": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:f", "End": true,
                      "Retry": [{"ErrorEquals": ["States.ALL", "X"]}]}
            }
        }));
        let text = p.join("\n");
        assert!(text.contains("States.A: Next names \"Missing\""), "{text}");
        assert!(
            text.contains("States.B: state \"B\" is unreachable"),
            "{text}"
        );
        assert!(
            text.contains("States.C.Retry[0]: States.ALL must be alone"),
            "{text}"
        );
    }

    #[test]
    fn structural_problems_in_several_states_are_all_named() {
        let p = problems(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Nxt": "B"},
                "B": {"Type": "Choice"},
                "C": {"Type": "Wait", "Seconds": "ten", "End": true}
            }
        }));
        let text = p.join("\n");
        assert!(
            text.contains("States.A: Nxt: unknown field `Nxt`"),
            "{text}"
        );
        assert!(text.contains("States.C: Seconds"), "{text}");
    }

    #[test]
    fn duplicate_names_across_branches() {
        let p = problems(json!({
            "StartAt": "P",
            "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
                {"StartAt": "X", "States": {"X": {"Type": "Succeed"}}},
                {"StartAt": "X", "States": {"X": {"Type": "Succeed"}}}
            ]}}
        }));
        assert!(
            p.iter()
                .any(|l| l.starts_with("States.P.Branches[1].States.X: duplicate state name")),
            "{p:?}"
        );
    }

    #[test]
    fn choice_without_choices_and_bad_paths() {
        let p = problems(json!({
            "StartAt": "C",
            "States": {
                "C": {"Type": "Choice", "Choices": [], "Default": "D"},
                "D": {"Type": "Pass", "InputPath": "$.a[", "End": true}
            }
        }));
        let text = p.join("\n");
        assert!(
            text.contains("States.C: a Choice state needs at least one rule"),
            "{text}"
        );
        assert!(
            text.contains("States.D: InputPath: invalid JSONPath"),
            "{text}"
        );
    }

    #[test]
    fn loops_without_exit_are_found() {
        let p = problems(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "B"},
                "B": {"Type": "Pass", "Next": "A"}
            }
        }));
        assert!(p.iter().any(|l| l.contains("no terminal state")), "{p:?}");
    }
}
