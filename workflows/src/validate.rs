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

/// Validates JSON text (duplicate keys included, which a JSON value
/// cannot show).
pub fn validate_json(text: &str) -> Result<StateMachine, Problems> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Problems(vec![Problem {
            location: format!("line {}, column {}", e.line(), e.column()),
            message: format!("not valid JSON: {e}"),
        }])
    })?;
    let mut v = Validator::default();
    for (pointer, key) in duplicate_keys(text) {
        v.report(
            if pointer.is_empty() {
                "(definition)".to_string()
            } else {
                pointer
            },
            format!("duplicate key \"{key}\" (JSON keeps only the last one)"),
        );
    }
    v.run(&value)
}

/// Validates a parsed JSON value and returns the typed definition.
pub fn validate_value(value: &Value) -> Result<StateMachine, Problems> {
    Validator::default().run(value)
}

/// Checks an already typed definition (for example one the compiler built).
pub fn validate_machine(machine: &StateMachine) -> Result<(), Problems> {
    let value = serde_json::to_value(machine).map_err(|e| {
        Problems(vec![Problem {
            location: "(definition)".into(),
            message: format!("cannot serialise the definition: {e}"),
        }])
    })?;
    validate_value(&value).map(|_| ())
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    /// Every state name seen anywhere, with its first location.
    names: BTreeMap<String, String>,
}

/// What the graph checks need from a state, read from its raw JSON so they
/// run even when the state's fields do not parse.
struct RawState {
    targets: Vec<(String, String)>,
    terminal: bool,
}

impl Validator {
    fn report(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.into(),
            message: message.into(),
        });
    }

    fn run(mut self, value: &Value) -> Result<StateMachine, Problems> {
        self.top(value);
        if !self.problems.is_empty() {
            return Err(Problems(self.problems));
        }
        serde_json::from_value(value.clone()).map_err(|e| {
            Problems(vec![Problem {
                location: "(definition)".into(),
                message: e.to_string(),
            }])
        })
    }

    fn top(&mut self, value: &Value) {
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
        // The scalar top-level fields, through a copy without States.
        let mut top = obj.clone();
        top.insert("States".into(), Value::Object(Default::default()));
        if !top.contains_key("StartAt") {
            top.insert("StartAt".into(), Value::String(String::new()));
        }
        match typed::<StateMachine>(&Value::Object(top)) {
            Ok(m) => self.top_semantics(&m),
            Err(e) => self.report("(definition)", e),
        }
        self.graph(obj, "");
    }

    fn top_semantics(&mut self, m: &StateMachine) {
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
    }

    /// A graph: top level, Parallel branch, Map processor.
    fn graph(&mut self, obj: &serde_json::Map<String, Value>, prefix: &str) {
        let here = if prefix.is_empty() {
            "(definition)".to_string()
        } else {
            prefix.to_string()
        };
        let start_at = match obj.get("StartAt") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.report(
                    here.clone(),
                    format!("\"StartAt\" must be a string, found {}", kind_of(other)),
                );
                None
            }
            None => {
                self.report(here.clone(), "missing \"StartAt\"");
                None
            }
        };
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
            self.report(here.clone(), "\"States\" is empty");
        }
        let mut raw: IndexMap<&str, RawState> = IndexMap::new();
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
            let r = self.state_value(state, &loc);
            raw.insert(name.as_str(), r);
        }
        for (name, r) in &raw {
            for (field, target) in &r.targets {
                if !raw.contains_key(target.as_str()) {
                    self.report(
                        state_loc(prefix, name),
                        format!("{field} names \"{target}\", which is not a state in this graph"),
                    );
                }
            }
        }
        if let Some(start) = start_at {
            if raw.contains_key(start.as_str()) {
                self.reachability(&start, &raw, &here, prefix);
            } else {
                self.report(
                    here,
                    format!("StartAt names \"{start}\", which is not a state here"),
                );
            }
        }
    }

    /// Checks one state's JSON: its own fields (typed), its nested graphs,
    /// and returns its transitions for the graph checks.
    fn state_value(&mut self, state: &Value, loc: &str) -> RawState {
        let mut raw = RawState {
            targets: Vec::new(),
            terminal: false,
        };
        let Some(obj) = state.as_object() else {
            self.report(
                loc,
                format!("a state is an object, found {}", kind_of(state)),
            );
            return raw;
        };
        if let Some(Value::String(n)) = obj.get("Next") {
            raw.targets.push(("Next".into(), n.clone()));
        }
        if let Some(Value::String(d)) = obj.get("Default") {
            raw.targets.push(("Default".into(), d.clone()));
        }
        for (field, list) in [("Choices", obj.get("Choices")), ("Catch", obj.get("Catch"))] {
            if let Some(Value::Array(items)) = list {
                for (i, item) in items.iter().enumerate() {
                    if let Some(Value::String(n)) = item.get("Next") {
                        raw.targets.push((format!("{field}[{i}].Next"), n.clone()));
                    }
                }
            }
        }
        let ty = match obj.get("Type") {
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                self.report(
                    loc,
                    format!("\"Type\" must be a string, found {}", kind_of(other)),
                );
                return raw;
            }
            None => {
                self.report(loc, "missing \"Type\"");
                return raw;
            }
        };
        raw.terminal =
            matches!(ty, "Succeed" | "Fail") || obj.get("End") == Some(&Value::Bool(true));
        // This state's own fields are checked with nested graphs removed;
        // the nested graphs are checked on their own so each problem is
        // named with its place.
        let mut own = obj.clone();
        own.remove("Type");
        let mut distributed = false;
        let parsed: Result<State, String> = match ty {
            "Task" => typed(&Value::Object(own)).map(State::Task),
            "Pass" => typed(&Value::Object(own)).map(State::Pass),
            "Wait" => typed(&Value::Object(own)).map(State::Wait),
            "Succeed" => typed(&Value::Object(own)).map(State::Succeed),
            "Fail" => typed(&Value::Object(own)).map(State::Fail),
            "Choice" => {
                if let Some(choices) = own.remove("Choices") {
                    match choices {
                        Value::Array(rules) => {
                            if rules.is_empty() {
                                self.report(
                                    loc,
                                    "a Choice state needs at least one rule in Choices",
                                );
                            }
                            for (i, r) in rules.iter().enumerate() {
                                let rloc = format!("{loc}.Choices[{i}]");
                                match ChoiceRule::from_value(r) {
                                    Ok(rule) => {
                                        if rule.next.is_none() {
                                            self.report(
                                                rloc.clone(),
                                                "a top-level Choice rule needs Next",
                                            );
                                        }
                                        self.rule(&rule, &rloc, true);
                                    }
                                    Err(e) => self.report(rloc, e),
                                }
                            }
                        }
                        other => self.report(
                            loc,
                            format!("\"Choices\" must be an array, found {}", kind_of(&other)),
                        ),
                    }
                } else {
                    self.report(loc, "a Choice state needs at least one rule in Choices");
                }
                typed(&Value::Object(own)).map(State::Choice)
            }
            "Parallel" => {
                match own.get("Branches") {
                    Some(Value::Array(branches)) => {
                        if branches.is_empty() {
                            self.report(loc, "a Parallel state needs at least one branch");
                        }
                        for (i, b) in branches.iter().enumerate() {
                            let bloc = format!("{loc}.Branches[{i}]");
                            match b.as_object() {
                                Some(bobj) => {
                                    self.nested_keys(
                                        bobj,
                                        &bloc,
                                        &["Comment", "StartAt", "States"],
                                    );
                                    self.graph(bobj, &bloc);
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
                typed(&Value::Object(own)).map(State::Parallel)
            }
            "Map" => {
                let present: Vec<&str> = ["ItemProcessor", "Iterator"]
                    .into_iter()
                    .filter(|k| own.contains_key(*k))
                    .collect();
                match present.len() {
                    0 => self.report(loc, "needs one of ItemProcessor, Iterator"),
                    2 => self.report(loc, "only one of ItemProcessor, Iterator may be given"),
                    _ => {}
                }
                for key in present {
                    let Some(p) = own.remove(key) else { continue };
                    let ploc = format!("{loc}.{key}");
                    let Some(pobj) = p.as_object() else {
                        self.report(ploc, format!("\"{key}\" must be an object"));
                        continue;
                    };
                    let allowed: &[&str] = if key == "ItemProcessor" {
                        &["Comment", "ProcessorConfig", "StartAt", "States"]
                    } else {
                        &["Comment", "StartAt", "States"]
                    };
                    self.nested_keys(pobj, &ploc, allowed);
                    if let Some(cfg) = pobj.get("ProcessorConfig") {
                        match typed::<crate::asl::ProcessorConfig>(cfg) {
                            Ok(c) => {
                                distributed = c.mode == Some(ProcessorMode::Distributed);
                                if distributed && c.execution_type.is_none() {
                                    self.report(
                                        format!("{ploc}.ProcessorConfig"),
                                        "DISTRIBUTED mode needs an ExecutionType",
                                    );
                                }
                            }
                            Err(e) => self.report(format!("{ploc}.ProcessorConfig"), e),
                        }
                    }
                    self.graph(pobj, &ploc);
                }
                typed(&Value::Object(own)).map(State::Map)
            }
            other => {
                self.report(
                    loc,
                    format!(
                        "unknown state type \"{other}\" (expected Task, Pass, Choice, Wait, Succeed, Fail, Parallel or Map)"
                    ),
                );
                return raw;
            }
        };
        match parsed {
            Ok(s) => self.state(&s, loc, distributed),
            Err(e) => self.report(loc, e),
        }
        raw
    }

    fn nested_keys(&mut self, obj: &serde_json::Map<String, Value>, loc: &str, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.report(loc, format!("unknown field \"{key}\""));
            }
        }
    }

    fn reachability(
        &mut self,
        start_at: &str,
        states: &IndexMap<&str, RawState>,
        here: &str,
        prefix: &str,
    ) {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue = VecDeque::from([start_at]);
        while let Some(s) = queue.pop_front() {
            if !seen.insert(s) {
                continue;
            }
            if let Some(state) = states.get(s) {
                for (_, t) in &state.targets {
                    if let Some((k, _)) = states.get_key_value(t.as_str()) {
                        queue.push_back(k);
                    }
                }
            }
        }
        for name in states.keys() {
            if !seen.contains(name) {
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
            .filter(|(_, s)| s.terminal)
            .map(|(n, _)| *n)
            .collect();
        loop {
            let before = can_end.len();
            for (name, state) in states {
                if !can_end.contains(name)
                    && state
                        .targets
                        .iter()
                        .any(|(_, t)| can_end.contains(t.as_str()))
                {
                    can_end.insert(name);
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
            if seen.contains(name) && !can_end.contains(name) {
                self.report(
                    state_loc(prefix, name),
                    format!("no terminal state can be reached from \"{name}\": every path from it loops forever"),
                );
            }
        }
    }

    /// Checks one state's own fields (nested graphs are checked apart).
    fn state(&mut self, state: &State, loc: &str, distributed: bool) {
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
                // Choices are checked rule by rule from the raw JSON.
                self.io(c.input_path.as_ref(), c.output_path.as_ref(), loc);
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
                if !distributed {
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
            }
            // Other `States.*` names are accepted: AWS adds new ones
            // (States.Http.Socket, ...) and a validator must not lag behind.
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

/// Keys that appear twice in one JSON object, with the JSON Pointer of the
/// object. serde_json keeps the last value silently; a definition with a
/// state written twice must not pass for one with a single state.
fn duplicate_keys(text: &str) -> Vec<(String, String)> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Seed<'a> {
        pointer: String,
        found: &'a RefCell<Vec<(String, String)>>,
    }

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Seed {
                    pointer: format!("{}/{i}", self.pointer),
                    found: self.found,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !keys.insert(key.clone()) {
                    self.found
                        .borrow_mut()
                        .push((self.pointer.clone(), key.clone()));
                }
                let escaped = key.replace('~', "~0").replace('/', "~1");
                map.next_value_seed(Seed {
                    pointer: format!("{}/{escaped}", self.pointer),
                    found: self.found,
                })?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_str(text);
    let _ = Seed {
        pointer: String::new(),
        found: &found,
    }
    .deserialize(&mut de);
    found.into_inner()
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
fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    let de = v.clone();
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(t) => Ok(t),
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
    fn graph_problems_are_reported_even_when_fields_do_not_parse() {
        let p = problems(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Nxt": "B", "End": true},
                "B": {"Type": "Pass", "Next": "Missing"},
                "C": {"Type": "Succeed"}
            }
        }));
        let text = p.join("\n");
        assert!(text.contains("States.A: Nxt: unknown field"), "{text}");
        assert!(text.contains("States.B: Next names \"Missing\""), "{text}");
        assert!(
            text.contains("States.C: state \"C\" is unreachable"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_keys_are_found() {
        let text =
            r#"{"StartAt": "A", "States": {"A": {"Type": "Succeed"}, "A": {"Type": "Fail"}}}"#;
        let p = validate_json(text).unwrap_err().to_string();
        assert!(p.contains("/States: duplicate key \"A\""), "{p}");
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
