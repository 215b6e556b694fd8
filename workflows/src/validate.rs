//! Validation of any ASL document (not only firebreak's), reporting every
//! problem at once, each with the location of the offending state.
//!
//! The JSON value is read state by state and field by field, so that a
//! malformed field hides neither the other fields of its state nor the
//! other states; the graph checks (targets, reachability, ends) read the
//! transitions from the raw JSON too. A problem that only follows from one
//! already reported is not reported again: a target that names no state is
//! reported once, and the graph checks then take it as unknown, not as a
//! dead end; a field that does not parse is not also called missing.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::asl::{
    kind_of, Catcher, ChoiceRule, Condition, FailState, MapState, Operand, ProcessorConfig,
    ProcessorMode, QueryLanguage, Retrier, State, StateMachine, TaskState, WaitState,
};
use crate::intrinsics::{looks_like_call, Call};
use crate::path::JsonPath;

/// One problem in a definition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Where: `States.Isolate.Retry[0]`, `States.Par.Branches[1].States.X`.
    pub location: String,
    /// What is wrong, in a sentence.
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
#[derive(Default)]
struct RawState {
    /// `(field, target)` for each transition written as a string.
    targets: Vec<(String, String)>,
    terminal: bool,
    /// Whether the state ends cannot be read: an unknown `Type`, a
    /// transition field of the wrong type, neither `Next` nor `End: true`,
    /// a Choice without a usable rule. That problem is reported with the
    /// state; the graph checks assume the state may end, so that they build
    /// no loop and no missing end on what it was meant to say.
    open: bool,
    /// How many of its transitions cannot be read (a `Next` of the wrong
    /// type or missing, a Choice rule or catcher without one);
    /// [`UNBOUNDED`] when they cannot be counted (a Choice without rules).
    lost: usize,
}

/// [`RawState::lost`] when a state's transitions cannot even be counted.
const UNBOUNDED: usize = usize::MAX;

/// The transitions of one graph, as far as they are known.
struct Flow<'a> {
    /// The states each state can move to. A target that names no state
    /// counts as the state it probably means, when one is close enough
    /// (see [`likely_meant`]).
    next: IndexMap<&'a str, Vec<&'a str>>,
    /// The states that end, or may: terminal, open, or with a target that
    /// names no state. Such a target is a typo or a state not written yet;
    /// either way nobody knows where that path goes.
    may_end: HashSet<&'a str>,
    /// Per state, how many of its transitions go nobody knows where: the
    /// lost ones, and targets that name no state and resemble none.
    unknown: IndexMap<&'a str, usize>,
}

/// The fields of one object that did not parse: reported already, and
/// skipped by the checks that would read them, which would only repeat the
/// problem in other words ("needs Next or End" after a bad `End`).
type BadFields = HashSet<String>;

/// A target that names no state is taken to mean an existing state when at
/// most one character in this many differs (case aside): "Chek" means
/// "Check", but "B" does not mean "C". Two states as close mean neither.
const TYPO_CHARS_PER_EDIT: usize = 4;

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
        // The scalar top-level fields, through a copy without the unknown
        // fields (named here) and with StartAt and States left to `graph`.
        let mut top = serde_json::Map::new();
        for (key, v) in obj {
            if !TOP.contains(&key.as_str()) {
                self.report("(definition)", format!("unknown top-level field \"{key}\""));
            } else if key != "StartAt" && key != "States" {
                top.insert(key.clone(), v.clone());
            }
        }
        top.insert("StartAt".into(), Value::String(String::new()));
        top.insert("States".into(), Value::Object(Default::default()));
        if let Some((m, _)) = self.lenient::<StateMachine>(top, "(definition)", "", &[]) {
            self.top_semantics(&m);
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
            self.state_name(name, &loc);
            let r = self.state_value(state, &loc);
            raw.insert(name.as_str(), r);
        }
        let flow = self.flow(&raw, prefix);
        let start = start_at.and_then(|s| self.start(&s, &flow, &here));
        if !raw.is_empty() {
            self.reachability(start, &flow, &here, prefix);
        }
    }

    fn state_name(&mut self, name: &str, loc: &str) {
        if let Some(first) = self.names.get(name) {
            self.report(
                loc,
                format!("duplicate state name \"{name}\" (also at {first}); names must be unique across the whole definition, branches included"),
            );
        } else {
            self.names.insert(name.to_string(), loc.to_string());
        }
        if name.is_empty() || name.chars().count() > MAX_STATE_NAME_CHARS {
            self.report(
                loc,
                format!("a state name has 1 to {MAX_STATE_NAME_CHARS} characters"),
            );
        }
    }

    /// Reports every target that names no state of the graph, and returns
    /// what the graph checks may take for granted about each transition.
    fn flow<'a>(&mut self, raw: &IndexMap<&'a str, RawState>, prefix: &str) -> Flow<'a> {
        let mut flow = Flow {
            next: IndexMap::new(),
            may_end: HashSet::new(),
            unknown: IndexMap::new(),
        };
        for (name, state) in raw {
            if state.terminal || state.open {
                flow.may_end.insert(*name);
            }
            let mut next = Vec::new();
            let mut unknown = state.lost;
            for (field, target) in &state.targets {
                if let Some((t, _)) = raw.get_key_value(target.as_str()) {
                    next.push(*t);
                    continue;
                }
                flow.may_end.insert(*name);
                let meant = likely_meant(target, raw.keys().copied());
                self.report(
                    state_loc(prefix, name),
                    format!(
                        "{field} names \"{target}\", which is not a state in this graph{}",
                        did_you_mean(meant)
                    ),
                );
                match meant {
                    Some(m) => next.push(m),
                    None => unknown = unknown.saturating_add(1),
                }
            }
            flow.next.insert(*name, next);
            flow.unknown.insert(*name, unknown);
        }
        flow
    }

    /// The state the graph starts at: the one StartAt names, or the one it
    /// probably means; None when that is unknown.
    fn start<'a>(&mut self, start_at: &str, flow: &Flow<'a>, here: &str) -> Option<&'a str> {
        if let Some((name, _)) = flow.next.get_key_value(start_at) {
            return Some(*name);
        }
        let meant = likely_meant(start_at, flow.next.keys().copied());
        self.report(
            here,
            format!(
                "StartAt names \"{start_at}\", which is not a state here{}",
                did_you_mean(meant)
            ),
        );
        meant
    }

    /// Checks one state's JSON: its own fields, its nested graphs, and
    /// returns its transitions for the graph checks.
    fn state_value(&mut self, state: &Value, loc: &str) -> RawState {
        let Some(obj) = state.as_object() else {
            self.report(
                loc,
                format!("a state is an object, found {}", kind_of(state)),
            );
            return RawState {
                open: true,
                lost: UNBOUNDED,
                ..RawState::default()
            };
        };
        match obj.get("Type") {
            Some(Value::String(ty)) => {
                // This state's own fields are checked with nested graphs
                // removed; the nested graphs are checked on their own so
                // each problem is named with its place.
                let mut own = obj.clone();
                own.remove("Type");
                self.own_fields(ty, own, loc);
            }
            Some(other) => self.report(
                loc,
                format!("\"Type\" must be a string, found {}", kind_of(other)),
            ),
            None => self.report(loc, "missing \"Type\""),
        }
        transitions(obj)
    }

    /// The fields of a state of type `ty` (without `Type`), nested graphs
    /// and Retry/Catch entries included.
    fn own_fields(&mut self, ty: &str, mut own: serde_json::Map<String, Value>, loc: &str) {
        let mut distributed = Some(false);
        match ty {
            "Task" | "Pass" | "Wait" | "Succeed" | "Fail" => {}
            "Choice" => self.choices(&mut own, loc),
            "Parallel" => self.branches(&mut own, loc),
            "Map" => distributed = self.processors(&mut own, loc),
            other => {
                self.report(
                    loc,
                    format!(
                        "unknown state type \"{other}\" (expected Task, Pass, Choice, Wait, Succeed, Fail, Parallel or Map)"
                    ),
                );
                return;
            }
        }
        // Retry and Catch are read entry by entry, so that one bad entry
        // hides no other; a list that is no array stays for the parse below.
        let (retry, catch) = if matches!(ty, "Task" | "Parallel" | "Map") {
            (take_array(&mut own, "Retry"), take_array(&mut own, "Catch"))
        } else {
            (Vec::new(), Vec::new())
        };
        let resource = [("Resource", Value::String(String::new()))];
        let parsed = match ty {
            "Task" => self.typed_state(own, loc, &resource, State::Task),
            "Pass" => self.typed_state(own, loc, &[], State::Pass),
            "Wait" => self.typed_state(own, loc, &[], State::Wait),
            "Succeed" => self.typed_state(own, loc, &[], State::Succeed),
            "Fail" => self.typed_state(own, loc, &[], State::Fail),
            "Choice" => self.typed_state(own, loc, &[], State::Choice),
            "Parallel" => self.typed_state(own, loc, &[], State::Parallel),
            _ => self.typed_state(own, loc, &[], State::Map),
        };
        if let Some((state, bad)) = parsed {
            self.state(&state, loc, distributed, &bad);
        }
        self.retry_catch(&retry, &catch, loc);
    }

    /// A state's own fields as [`Validator::lenient`] reads them, wrapped
    /// as the `State` of its type.
    fn typed_state<T: DeserializeOwned>(
        &mut self,
        own: serde_json::Map<String, Value>,
        loc: &str,
        required: &[(&str, Value)],
        wrap: fn(T) -> State,
    ) -> Option<(State, BadFields)> {
        self.lenient(own, loc, "", required)
            .map(|(s, bad)| (wrap(s), bad))
    }

    /// A Choice state's rules, one by one (taken out of `own`).
    fn choices(&mut self, own: &mut serde_json::Map<String, Value>, loc: &str) {
        let Some(choices) = own.remove("Choices") else {
            self.report(loc, "a Choice state needs at least one rule in Choices");
            return;
        };
        let Value::Array(rules) = choices else {
            self.report(
                loc,
                format!("\"Choices\" must be an array, found {}", kind_of(&choices)),
            );
            return;
        };
        if rules.is_empty() {
            self.report(loc, "a Choice state needs at least one rule in Choices");
        }
        for (i, r) in rules.iter().enumerate() {
            let rloc = format!("{loc}.Choices[{i}]");
            match ChoiceRule::from_value(r) {
                Ok(rule) => {
                    if rule.next.is_none() {
                        self.report(rloc.clone(), "a top-level Choice rule needs Next");
                    }
                    self.rule(&rule, &rloc, true);
                }
                Err(e) => self.report(rloc, e),
            }
        }
    }

    /// A Parallel state's branches, each a graph of its own (left in `own`
    /// as an empty list, for the parse of the other fields).
    fn branches(&mut self, own: &mut serde_json::Map<String, Value>, loc: &str) {
        match own.get("Branches") {
            Some(Value::Array(branches)) => {
                if branches.is_empty() {
                    self.report(loc, "a Parallel state needs at least one branch");
                }
                for (i, b) in branches.iter().enumerate() {
                    let bloc = format!("{loc}.Branches[{i}]");
                    match b.as_object() {
                        Some(bobj) => {
                            self.nested_keys(bobj, &bloc, &["Comment", "StartAt", "States"]);
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
    }

    /// A Map state's ItemProcessor or Iterator (taken out of `own`).
    /// Returns whether the Map is DISTRIBUTED, None when that cannot be read.
    fn processors(&mut self, own: &mut serde_json::Map<String, Value>, loc: &str) -> Option<bool> {
        let present: Vec<&str> = ["ItemProcessor", "Iterator"]
            .into_iter()
            .filter(|k| own.contains_key(*k))
            .collect();
        match present.len() {
            0 => self.report(loc, "needs one of ItemProcessor, Iterator"),
            2 => self.report(loc, "only one of ItemProcessor, Iterator may be given"),
            _ => {}
        }
        let mut distributed = Some(false);
        for key in present {
            let Some(p) = own.remove(key) else { continue };
            let ploc = format!("{loc}.{key}");
            let Some(pobj) = p.as_object() else {
                self.report(ploc, format!("\"{key}\" must be an object"));
                distributed = None;
                continue;
            };
            let allowed: &[&str] = if key == "ItemProcessor" {
                &["Comment", "ProcessorConfig", "StartAt", "States"]
            } else {
                &["Comment", "StartAt", "States"]
            };
            self.nested_keys(pobj, &ploc, allowed);
            if let Some(cfg) = pobj.get("ProcessorConfig") {
                let cloc = format!("{ploc}.ProcessorConfig");
                distributed = None;
                if let Some((c, bad)) = self.entry::<ProcessorConfig>(cfg, &cloc, "", &[]) {
                    if !bad.contains("Mode") {
                        distributed = Some(c.mode == Some(ProcessorMode::Distributed));
                    }
                    if distributed == Some(true)
                        && c.execution_type.is_none()
                        && !bad.contains("ExecutionType")
                    {
                        self.report(cloc, "DISTRIBUTED mode needs an ExecutionType");
                    }
                }
            }
            self.graph(pobj, &ploc);
        }
        distributed
    }

    /// A state's Retry and Catch entries, one by one.
    fn retry_catch(&mut self, retry: &[Value], catch: &[Value], loc: &str) {
        let error_equals = ("ErrorEquals", Value::Array(Vec::new()));
        for (i, item) in retry.iter().enumerate() {
            let at = format!("Retry[{i}]");
            let required = [error_equals.clone()];
            if let Some((r, bad)) = self.entry::<Retrier>(item, loc, &at, &required) {
                self.retrier(&r, &format!("{loc}.{at}"), i + 1 == retry.len(), &bad);
            }
        }
        for (i, item) in catch.iter().enumerate() {
            let at = format!("Catch[{i}]");
            let required = [error_equals.clone(), ("Next", Value::String(String::new()))];
            if let Some((c, bad)) = self.entry::<Catcher>(item, loc, &at, &required) {
                let cloc = format!("{loc}.{at}");
                if !bad.contains("ErrorEquals") {
                    self.error_equals(&c.error_equals, &cloc, i + 1 == catch.len());
                }
                if let Some(p) = c.result_path.as_ref().and_then(|p| p.as_path()) {
                    self.reference_path(p, &cloc, "ResultPath");
                }
            }
        }
    }

    fn retrier(&mut self, r: &Retrier, rloc: &str, last: bool, bad: &BadFields) {
        if !bad.contains("ErrorEquals") {
            self.error_equals(&r.error_equals, rloc, last);
        }
        if let Some(v) = r.interval_seconds {
            if v == 0 || v > MAX_SECONDS {
                self.report(
                    rloc,
                    format!("IntervalSeconds must be between 1 and {MAX_SECONDS}, found {v}"),
                );
            }
        }
        if let Some(v) = r.max_attempts {
            if v > MAX_SECONDS {
                self.report(
                    rloc,
                    format!("MaxAttempts must be between 0 and {MAX_SECONDS}, found {v}"),
                );
            }
        }
        if let Some(b) = &r.backoff_rate {
            if b.as_f64().is_none_or(|b| b < 1.0) {
                self.report(rloc, format!("BackoffRate must be at least 1.0, found {b}"));
            }
        }
        if let Some(v) = r.max_delay_seconds {
            if v == 0 || v > MAX_DELAY_SECONDS {
                self.report(
                    rloc,
                    format!("MaxDelaySeconds must be between 1 and {MAX_DELAY_SECONDS}, found {v}"),
                );
            }
        }
    }

    /// One object nested in a state (a retrier, a catcher, a processor
    /// configuration), parsed as [`Validator::lenient`] does.
    fn entry<T: DeserializeOwned>(
        &mut self,
        item: &Value,
        loc: &str,
        at: &str,
        required: &[(&str, Value)],
    ) -> Option<(T, BadFields)> {
        if let Value::Object(obj) = item {
            return self.lenient(obj.clone(), loc, at, required);
        }
        // Not an object: the typed parse says what it is instead.
        match serde_path_to_error::deserialize::<_, T>(item.clone()) {
            Ok(t) => Some((t, BadFields::new())),
            Err(e) => {
                self.report(loc, error_at(at, e));
                None
            }
        }
    }

    /// Parses an object into `T` one bad field at a time: a field that does
    /// not parse is reported, set aside, and the rest parsed again, so that
    /// one bad field hides neither another nor the checks of the good ones.
    /// An absent `required` field is reported and stood in for, for the
    /// same reason. `at` places the messages inside the state (`Retry[0]`).
    fn lenient<T: DeserializeOwned>(
        &mut self,
        mut obj: serde_json::Map<String, Value>,
        loc: &str,
        at: &str,
        required: &[(&str, Value)],
    ) -> Option<(T, BadFields)> {
        let mut bad = BadFields::new();
        for (field, stand_in) in required {
            if !obj.contains_key(*field) {
                self.report(loc, placed(at, "", &format!("missing field `{field}`")));
                obj.insert((*field).to_string(), stand_in.clone());
                bad.insert((*field).to_string());
            }
        }
        // Each round takes a field out, or puts a stand-in (which parses)
        // in place of a required one, so the loop ends.
        loop {
            match serde_path_to_error::deserialize::<_, T>(Value::Object(obj.clone())) {
                Ok(t) => return Some((t, bad)),
                Err(e) => {
                    let field = match e.path().iter().next() {
                        Some(Segment::Map { key }) => Some(key.clone()),
                        _ => None,
                    };
                    self.report(loc, error_at(at, e));
                    let field = field.filter(|f| obj.remove(f).is_some())?;
                    if let Some((_, stand_in)) = required.iter().find(|(r, _)| *r == field) {
                        obj.insert(field.clone(), stand_in.clone());
                    }
                    bad.insert(field);
                }
            }
        }
    }

    fn nested_keys(&mut self, obj: &serde_json::Map<String, Value>, loc: &str, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.report(loc, format!("unknown field \"{key}\""));
            }
        }
    }

    /// Unreachable states, and states from which no path ends. Without a
    /// known `start` no state is called unreachable, and every state is
    /// checked for an end.
    fn reachability(&mut self, start: Option<&str>, flow: &Flow, here: &str, prefix: &str) {
        let seen = match start {
            Some(start) => {
                let seen = reached_from(start, flow);
                let unreached: Vec<&str> = flow
                    .next
                    .keys()
                    .copied()
                    .filter(|n| !seen.contains(n))
                    .collect();
                // A transition that goes nobody knows where may have been
                // meant for any state: when such transitions could lead into
                // every group of unreached states, none is surely unreachable.
                let unknown = seen
                    .iter()
                    .map(|s| flow.unknown.get(s).copied().unwrap_or(0))
                    .fold(0, usize::saturating_add);
                if unknown == 0 || unknown < entry_groups(&unreached, flow) {
                    for name in unreached {
                        self.report(
                            state_loc(prefix, name),
                            format!("state \"{name}\" is unreachable from StartAt \"{start}\""),
                        );
                    }
                }
                seen
            }
            None => flow.next.keys().copied().collect(),
        };
        let can_end = can_end(flow);
        if can_end.is_empty() {
            self.report(
                here,
                "no terminal state (Succeed, Fail or End: true) in this graph",
            );
            return;
        }
        for name in flow.next.keys() {
            if seen.contains(name) && !can_end.contains(name) {
                self.report(
                    state_loc(prefix, name),
                    format!("no terminal state can be reached from \"{name}\": every path from it loops forever"),
                );
            }
        }
    }

    /// Checks one state's own fields (nested graphs, Retry and Catch are
    /// checked apart). `bad` fields did not parse and are not read again.
    fn state(&mut self, state: &State, loc: &str, distributed: Option<bool>, bad: &BadFields) {
        if let Some((next, end)) = state.next_end() {
            if !bad.contains("Next") && !bad.contains("End") {
                match (next, end) {
                    (Some(_), Some(true)) => self.report(loc, "has both Next and End"),
                    (None, None) | (None, Some(false)) => {
                        self.report(loc, "needs Next or End: true")
                    }
                    (Some(_), Some(false)) => self.report(loc, "End must be true when given"),
                    _ => {}
                }
            }
        }
        match state {
            State::Task(t) => self.task(t, loc, bad),
            State::Pass(p) => {
                self.io(p.input_path.as_ref(), p.output_path.as_ref(), loc);
                self.result_path(p.result_path.as_ref(), loc);
                self.template(p.parameters.as_ref(), loc, "Parameters");
            }
            State::Choice(c) => {
                // Choices are checked rule by rule from the raw JSON.
                self.io(c.input_path.as_ref(), c.output_path.as_ref(), loc);
            }
            State::Wait(w) => self.wait(w, loc, bad),
            State::Succeed(s) => self.io(s.input_path.as_ref(), s.output_path.as_ref(), loc),
            State::Fail(f) => self.fail(f, loc, bad),
            State::Parallel(p) => {
                self.io(p.input_path.as_ref(), p.output_path.as_ref(), loc);
                self.result_path(p.result_path.as_ref(), loc);
                self.template(p.parameters.as_ref(), loc, "Parameters");
                self.template(p.result_selector.as_ref(), loc, "ResultSelector");
            }
            State::Map(m) => self.map(m, loc, distributed, bad),
        }
    }

    fn task(&mut self, t: &TaskState, loc: &str, bad: &BadFields) {
        self.io(t.input_path.as_ref(), t.output_path.as_ref(), loc);
        self.result_path(t.result_path.as_ref(), loc);
        self.template(t.parameters.as_ref(), loc, "Parameters");
        self.template(t.result_selector.as_ref(), loc, "ResultSelector");
        if !bad.contains("Resource")
            && !t.resource.starts_with("arn:")
            && !is_placeholder(&t.resource)
        {
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
            bad,
        );
        self.one_of(
            loc,
            &[
                ("HeartbeatSeconds", t.heartbeat_seconds.is_some()),
                ("HeartbeatSecondsPath", t.heartbeat_seconds_path.is_some()),
            ],
            false,
            bad,
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
                    format!("TimeoutSeconds must be between 1 and {MAX_SECONDS}, found {t0}"),
                );
            }
        }
        if let Some(h) = t.heartbeat_seconds {
            if h == 0 || h > MAX_SECONDS {
                self.report(
                    loc,
                    format!("HeartbeatSeconds must be between 1 and {MAX_SECONDS}, found {h}"),
                );
            }
            if let Some(t0) = t.timeout_seconds {
                if h >= t0 {
                    self.report(
                        loc,
                        format!(
                            "HeartbeatSeconds ({h}) must be smaller than TimeoutSeconds ({t0})"
                        ),
                    );
                }
            }
        }
    }

    fn wait(&mut self, w: &WaitState, loc: &str, bad: &BadFields) {
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
            bad,
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

    fn fail(&mut self, f: &FailState, loc: &str, bad: &BadFields) {
        self.one_of(
            loc,
            &[
                ("Error", f.error.is_some()),
                ("ErrorPath", f.error_path.is_some()),
            ],
            false,
            bad,
        );
        self.one_of(
            loc,
            &[
                ("Cause", f.cause.is_some()),
                ("CausePath", f.cause_path.is_some()),
            ],
            false,
            bad,
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

    fn map(&mut self, m: &MapState, loc: &str, distributed: Option<bool>, bad: &BadFields) {
        self.io(m.input_path.as_ref(), m.output_path.as_ref(), loc);
        self.result_path(m.result_path.as_ref(), loc);
        self.template(m.item_selector.as_ref(), loc, "ItemSelector");
        self.template(m.parameters.as_ref(), loc, "Parameters");
        self.template(m.result_selector.as_ref(), loc, "ResultSelector");
        for pair in [
            [
                ("ItemSelector", m.item_selector.is_some()),
                ("Parameters", m.parameters.is_some()),
            ],
            [
                ("MaxConcurrency", m.max_concurrency.is_some()),
                ("MaxConcurrencyPath", m.max_concurrency_path.is_some()),
            ],
            [
                ("ToleratedFailureCount", m.tolerated_failure_count.is_some()),
                (
                    "ToleratedFailureCountPath",
                    m.tolerated_failure_count_path.is_some(),
                ),
            ],
            [
                (
                    "ToleratedFailurePercentage",
                    m.tolerated_failure_percentage.is_some(),
                ),
                (
                    "ToleratedFailurePercentagePath",
                    m.tolerated_failure_percentage_path.is_some(),
                ),
            ],
        ] {
            self.one_of(loc, &pair, false, bad);
        }
        for (field, p) in [
            ("ItemsPath", &m.items_path),
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
                    format!("ToleratedFailurePercentage must be between 0 and 100, found {pct}"),
                );
            }
        }
        // Without a readable ProcessorConfig the mode is unknown, and these
        // fields may be right.
        if distributed == Some(false) {
            for (field, present) in [
                ("ItemReader", m.item_reader.is_some()),
                ("ItemBatcher", m.item_batcher.is_some()),
                ("ResultWriter", m.result_writer.is_some()),
                ("Label", m.label.is_some() || bad.contains("Label")),
            ] {
                if present {
                    self.report(loc, format!("{field} is only allowed in a Map with ProcessorConfig Mode DISTRIBUTED"));
                }
            }
        }
    }

    /// At most one (or, when `required`, exactly one) of the fields. A
    /// field in `bad` was given, though it did not parse.
    fn one_of(&mut self, loc: &str, fields: &[(&str, bool)], required: bool, bad: &BadFields) {
        let given: Vec<&str> = fields
            .iter()
            .filter(|(f, p)| *p || bad.contains(*f))
            .map(|(f, _)| *f)
            .collect();
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

/// `Retry[0].IntervalSeconds: message`: where in the state, then what.
fn placed(at: &str, path: &str, message: &str) -> String {
    let place: Vec<&str> = [at, path].into_iter().filter(|s| !s.is_empty()).collect();
    if place.is_empty() {
        message.to_string()
    } else {
        format!("{}: {message}", place.join("."))
    }
}

/// A parse error with the path of the bad field, inside `at`.
fn error_at(at: &str, e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let path = if path == "." { "" } else { path.as_str() };
    placed(at, path, &e.inner().to_string())
}

/// Takes `key` out of `obj` when it holds an array.
fn take_array(obj: &mut serde_json::Map<String, Value>, key: &str) -> Vec<Value> {
    if !matches!(obj.get(key), Some(Value::Array(_))) {
        return Vec::new();
    }
    match obj.remove(key) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// Where a state can go, read from its raw JSON (see [`RawState`]).
fn transitions(obj: &serde_json::Map<String, Value>) -> RawState {
    let mut raw = RawState::default();
    for field in ["Next", "Default"] {
        match obj.get(field) {
            Some(Value::String(t)) => raw.targets.push((field.into(), t.clone())),
            Some(_) => raw.lost += 1,
            None => {}
        }
    }
    for field in ["Choices", "Catch"] {
        match obj.get(field) {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item.get("Next") {
                        Some(Value::String(n)) => {
                            raw.targets.push((format!("{field}[{i}].Next"), n.clone()))
                        }
                        _ => raw.lost = raw.lost.saturating_add(1),
                    }
                }
            }
            Some(_) => raw.lost = UNBOUNDED,
            None => {}
        }
    }
    let ty = obj.get("Type").and_then(Value::as_str);
    let end = obj.get("End");
    raw.terminal = matches!(ty, Some("Succeed" | "Fail")) || end == Some(&Value::Bool(true));
    match ty {
        Some("Succeed" | "Fail") => {}
        Some("Choice") => {
            if !matches!(obj.get("Choices"), Some(Value::Array(r)) if !r.is_empty()) {
                raw.lost = UNBOUNDED;
            }
        }
        Some("Task" | "Pass" | "Wait" | "Parallel" | "Map") => {
            // No Next, and no End that says it ends: where it goes is lost.
            if !obj.contains_key("Next") && matches!(end, None | Some(Value::Bool(false))) {
                raw.lost = raw.lost.saturating_add(1);
            }
            // An End of the wrong type says nothing either way.
            raw.open |= end.is_some_and(|e| !e.is_boolean());
        }
        _ => raw.open = true,
    }
    raw.open |= raw.lost > 0;
    raw
}

/// The states reachable from `start`, itself included.
fn reached_from<'a>(start: &'a str, flow: &Flow<'a>) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([start]);
    while let Some(s) = queue.pop_front() {
        if seen.insert(s) {
            queue.extend(flow.next.get(s).into_iter().flatten().copied());
        }
    }
    seen
}

/// How many states at least must be made reachable for all of `unreached`
/// to be: its groups that no other unreached state leads into (cycles
/// count once).
fn entry_groups(unreached: &[&str], flow: &Flow) -> usize {
    let within: HashSet<&str> = unreached.iter().copied().collect();
    let descendants: IndexMap<&str, HashSet<&str>> = unreached
        .iter()
        .map(|u| {
            let mut d = reached_from(u, flow);
            d.retain(|v| within.contains(v));
            (*u, d)
        })
        .collect();
    let reaches = |from: &str, to: &str| descendants.get(from).is_some_and(|d| d.contains(to));
    let mut counted: HashSet<&str> = HashSet::new();
    let mut groups = 0;
    for u in unreached {
        // `u` heads a group when whatever leads to it, it leads back to.
        if counted.contains(u) || !unreached.iter().all(|v| !reaches(v, u) || reaches(u, v)) {
            continue;
        }
        groups += 1;
        counted.extend(unreached.iter().filter(|v| reaches(u, v) && reaches(v, u)));
    }
    groups
}

/// The states from which some path ends (or may): the graph walked
/// backwards from [`Flow::may_end`].
fn can_end<'a>(flow: &Flow<'a>) -> HashSet<&'a str> {
    let mut can_end = flow.may_end.clone();
    loop {
        let before = can_end.len();
        for (name, next) in &flow.next {
            if !can_end.contains(name) && next.iter().any(|t| can_end.contains(t)) {
                can_end.insert(name);
            }
        }
        if can_end.len() == before {
            return can_end;
        }
    }
}

/// The state a target that names none probably means: the only state whose
/// name is within [`TYPO_CHARS_PER_EDIT`] of it.
fn likely_meant<'a>(missing: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let want: Vec<char> = missing.to_lowercase().chars().collect();
    let mut best: Option<(usize, &'a str)> = None;
    let mut tied = false;
    for name in names {
        let have: Vec<char> = name.to_lowercase().chars().collect();
        let d = edit_distance(&want, &have);
        if d * TYPO_CHARS_PER_EDIT > want.len().max(have.len()) {
            continue;
        }
        match best {
            Some((b, _)) if d > b => {}
            Some((b, _)) if d == b => tied = true,
            _ => {
                best = Some((d, name));
                tied = false;
            }
        }
    }
    best.filter(|_| !tied).map(|(_, name)| name)
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`:
/// the optimal string alignment distance.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    // Three rows of the usual table: two rows back is needed for swaps.
    let mut back2: Vec<usize> = Vec::new();
    let mut back: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let replace = back[j] + usize::from(ca != cb);
            let mut d = replace.min(back[j + 1] + 1).min(row[j] + 1);
            if i > 0 && j > 0 && a[i - 1] == *cb && *ca == b[j - 1] {
                d = d.min(back2[j - 1] + 1);
            }
            row[j + 1] = d;
        }
        back2 = std::mem::replace(&mut back, row);
    }
    back[b.len()]
}

fn did_you_mean(meant: Option<&str>) -> String {
    meant.map_or_else(String::new, |m| format!("; did you mean \"{m}\"?"))
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

    /// The problems of a definition, checked to hold no message twice.
    fn distinct_problems(v: Value) -> Vec<String> {
        let p = problems(v);
        let mut seen = HashSet::new();
        for line in &p {
            assert!(seen.insert(line), "reported twice: {line}\nin {p:#?}");
        }
        p
    }

    const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:f";

    #[test]
    fn a_typo_in_next_is_reported_once() {
        // GIVEN a Next that misspells the state it means
        let p = distinct_problems(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "Chek"},
                "Check": {"Type": "Pass", "Next": "Done"},
                "Done": {"Type": "Succeed"}
            }
        }));
        // THEN the typo alone is reported, with the state it probably means,
        // and neither a loop from A nor unreachable Check and Done
        assert_eq!(
            p,
            ["States.A: Next names \"Chek\", which is not a state in this graph; did you mean \"Check\"?"],
        );
    }

    #[test]
    fn a_missing_name_means_a_state_only_when_one_is_close() {
        let names = ["Check", "Done", "Step1", "Step2", "B"];
        for (missing, meant) in [
            ("Chek", Some("Check")),
            ("check", Some("Check")),
            ("Chekc", Some("Check")),
            ("Dnoe", Some("Done")),
            ("Step3", None),
            ("C", None),
            ("Nowhere", None),
        ] {
            assert_eq!(likely_meant(missing, names), meant, "{missing}");
        }
    }

    #[test]
    fn a_target_that_names_no_state_is_not_a_loop() {
        // GIVEN a path that ends in a state that was never written
        let p = distinct_problems(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "B"},
                "B": {"Type": "Task", "Resource": ARN, "Next": "Finish",
                      "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "A"}]}
            }
        }));
        // THEN only the missing target is reported: where it leads is unknown
        assert_eq!(
            p,
            ["States.B: Next names \"Finish\", which is not a state in this graph"],
        );
    }

    #[test]
    fn states_cut_off_by_a_lost_transition_are_not_called_unreachable() {
        for (what, a) in [
            (
                "a Next that names no state",
                json!({"Type": "Pass", "Next": "Nowhere"}),
            ),
            ("no Next", json!({"Type": "Pass"})),
            (
                "a Next of the wrong type",
                json!({"Type": "Pass", "Next": 5}),
            ),
        ] {
            // GIVEN a first state whose transition is lost, then a chain
            let p = distinct_problems(json!({
                "StartAt": "A",
                "States": {
                    "A": a,
                    "B": {"Type": "Pass", "Next": "C"},
                    "C": {"Type": "Succeed"}
                }
            }));
            // THEN the lost transition alone is reported: it may have been
            // meant for B
            assert_eq!(p.len(), 1, "GIVEN {what} THEN one problem: {p:#?}");
            assert!(p[0].starts_with("States.A: "), "GIVEN {what}: {p:#?}");
        }
    }

    #[test]
    fn more_orphans_than_lost_transitions_are_all_reported() {
        // GIVEN one target that names no state, and two separate orphans:
        // one of them at least is unreachable whatever the target meant
        let p = distinct_problems(json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "Nowhere"},
                "B": {"Type": "Pass", "Next": "C"},
                "C": {"Type": "Succeed"},
                "D": {"Type": "Succeed"}
            }
        }));
        let text = p.join("\n");
        // THEN every unreachable state is named, as nobody can tell which
        for name in ["B", "C", "D"] {
            assert!(
                text.contains(&format!("States.{name}: state \"{name}\" is unreachable")),
                "{text}"
            );
        }
        assert_eq!(p.len(), 4, "{text}");
    }

    #[test]
    fn independent_graph_problems_survive_a_dangling_target() {
        // GIVEN a typo, and apart from it a real loop and a real orphan
        let p = distinct_problems(json!({
            "StartAt": "Start",
            "States": {
                "Start": {"Type": "Choice", "Choices": [
                    {"Variable": "$.a", "IsPresent": true, "Next": "Chek"},
                    {"Variable": "$.b", "IsPresent": true, "Next": "Loop1"}
                ]},
                "Check": {"Type": "Pass", "Next": "Done"},
                "Done": {"Type": "Succeed"},
                "Loop1": {"Type": "Pass", "Next": "Loop2"},
                "Loop2": {"Type": "Pass", "Next": "Loop1"},
                "Orphan": {"Type": "Succeed"}
            }
        }));
        let text = p.join("\n");
        // THEN each of the three is reported
        assert!(
            text.contains("States.Start: Choices[0].Next names \"Chek\""),
            "{text}"
        );
        assert!(
            text.contains("States.Loop1: no terminal state can be reached"),
            "{text}"
        );
        assert!(
            text.contains("States.Loop2: no terminal state can be reached"),
            "{text}"
        );
        assert!(
            text.contains("States.Orphan: state \"Orphan\" is unreachable"),
            "{text}"
        );
        // AND nothing that follows from the typo
        assert_eq!(p.len(), 4, "{text}");
    }

    #[test]
    fn a_missing_start_hides_no_loop() {
        // GIVEN a StartAt naming no state, and a loop without exit
        let p = distinct_problems(json!({
            "StartAt": "Nowhere",
            "States": {
                "A": {"Type": "Pass", "Next": "B"},
                "B": {"Type": "Pass", "Next": "A"},
                "C": {"Type": "Succeed"}
            }
        }));
        let text = p.join("\n");
        // THEN both are reported, and no state is called unreachable
        assert!(
            text.contains("(definition): StartAt names \"Nowhere\""),
            "{text}"
        );
        assert!(
            text.contains("States.A: no terminal state can be reached"),
            "{text}"
        );
        assert!(
            text.contains("States.B: no terminal state can be reached"),
            "{text}"
        );
        assert_eq!(p.len(), 3, "{text}");
    }

    #[test]
    fn a_state_whose_end_cannot_be_read_is_not_a_loop() {
        for (what, last) in [
            ("a misspelt Type", json!({"Type": "Succed"})),
            ("End as a string", json!({"Type": "Pass", "End": "true"})),
            ("neither Next nor End", json!({"Type": "Pass"})),
        ] {
            // GIVEN a path whose last state says badly whether it ends
            let p = distinct_problems(json!({
                "StartAt": "A",
                "States": {"A": {"Type": "Pass", "Next": "B"}, "B": last}
            }));
            // THEN that state alone is reported, not a graph without end
            assert_eq!(p.len(), 1, "GIVEN {what} THEN one problem: {p:#?}");
            assert!(p[0].starts_with("States.B: "), "GIVEN {what}: {p:#?}");
        }
    }

    #[test]
    fn a_bad_field_hides_no_other_problem_of_its_state() {
        // GIVEN a Task with a mistyped field and four other mistakes
        let p = distinct_problems(json!({
            "StartAt": "T",
            "States": {"T": {"Type": "Task", "Resource": ARN,
                "TimeoutSeconds": "ten",
                "InputPath": "$.a[",
                "ResultPath": "$.x[*]",
                "Retry": [{"ErrorEquals": ["States.ALL", "X"]}]
            }}
        }));
        let text = p.join("\n");
        // THEN all five are reported
        for needle in [
            "States.T: TimeoutSeconds: invalid type: string \"ten\"",
            "States.T: InputPath: invalid JSONPath",
            "States.T: ResultPath: invalid JSONPath",
            "States.T.Retry[0]: States.ALL must be alone",
            "States.T: needs Next or End: true",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert_eq!(p.len(), 5, "{text}");
    }

    #[test]
    fn every_bad_field_of_a_state_is_named() {
        // GIVEN a Wait state with three fields that do not parse
        let p = distinct_problems(json!({
            "StartAt": "W",
            "States": {"W": {"Type": "Wait", "Seconds": "ten", "Nxt": "B", "OutputPath": 5, "End": true}}
        }));
        let text = p.join("\n");
        // THEN each is named, and Seconds is not also said to be missing
        assert!(text.contains("States.W: Seconds: invalid type"), "{text}");
        assert!(
            text.contains("States.W: Nxt: unknown field `Nxt`"),
            "{text}"
        );
        assert!(
            text.contains("States.W: OutputPath: invalid type"),
            "{text}"
        );
        assert_eq!(p.len(), 3, "{text}");
    }

    #[test]
    fn a_bad_retrier_or_catcher_hides_no_other() {
        // GIVEN a bad field in Retry[0], a missing Next in Catch[0], and
        // independent mistakes in Retry[1], Catch[0] and the state
        let p = distinct_problems(json!({
            "StartAt": "T",
            "States": {
                "T": {"Type": "Task", "Resource": ARN, "Next": "S", "HeartbeatSeconds": 0,
                    "Retry": [
                        {"ErrorEquals": ["X"], "IntervalSeconds": "one", "BackoffRate": 0.5},
                        {"ErrorEquals": ["States.ALL"]},
                        {"ErrorEquals": ["Y"]}
                    ],
                    "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.a["}]
                },
                "S": {"Type": "Succeed"}
            }
        }));
        let text = p.join("\n");
        for needle in [
            "States.T: Retry[0].IntervalSeconds: invalid type",
            "States.T.Retry[0]: BackoffRate must be at least 1.0",
            "States.T.Retry[1]: the rule with States.ALL must be the last one",
            "States.T: Catch[0]: missing field `Next`",
            "States.T.Catch[0]: ResultPath: invalid JSONPath",
            "States.T: HeartbeatSeconds must be between 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert_eq!(p.len(), 6, "{text}");
    }

    #[test]
    fn a_missing_resource_hides_no_other_problem() {
        let p = distinct_problems(json!({
            "StartAt": "T",
            "States": {"T": {"Type": "Task", "OutputPath": "$.a[", "End": true}}
        }));
        let text = p.join("\n");
        assert!(
            text.contains("States.T: missing field `Resource`"),
            "{text}"
        );
        assert!(
            text.contains("States.T: OutputPath: invalid JSONPath"),
            "{text}"
        );
        assert_eq!(p.len(), 2, "{text}");
    }

    #[test]
    fn a_required_field_of_the_wrong_type_is_not_also_missing() {
        let p = distinct_problems(json!({
            "StartAt": "T",
            "States": {"T": {"Type": "Task", "Resource": 5, "End": true,
                "Catch": [{"ErrorEquals": "X", "Next": "T", "ResultPath": "$.a["}]}}
        }));
        let text = p.join("\n");
        assert!(text.contains("States.T: Resource: invalid type"), "{text}");
        assert!(
            text.contains("States.T: Catch[0].ErrorEquals: invalid type"),
            "{text}"
        );
        assert!(
            text.contains("States.T.Catch[0]: ResultPath: invalid JSONPath"),
            "{text}"
        );
        assert_eq!(p.len(), 3, "{text}");
    }

    #[test]
    fn top_level_fields_are_each_checked_once() {
        let p = distinct_problems(json!({
            "StartAt": "A",
            "TimeoutSeconds": "ten",
            "Version": "2.0",
            "Extra": 1,
            "States": {"A": {"Type": "Succeed"}}
        }));
        let text = p.join("\n");
        assert!(
            text.contains("(definition): TimeoutSeconds: invalid type"),
            "{text}"
        );
        assert!(
            text.contains("(definition): Version must be \"1.0\""),
            "{text}"
        );
        assert!(
            text.contains("(definition): unknown top-level field \"Extra\""),
            "{text}"
        );
        assert_eq!(p.len(), 3, "{text}");
        // AND an unknown field or a StartAt of the wrong type, alone, once
        for (what, def) in [
            (
                "an unknown field",
                json!({"StartAt": "A", "Extra": 1, "States": {"A": {"Type": "Succeed"}}}),
            ),
            (
                "a StartAt of the wrong type",
                json!({"StartAt": 5, "States": {"A": {"Type": "Succeed"}}}),
            ),
        ] {
            let p = distinct_problems(def);
            assert_eq!(p.len(), 1, "GIVEN {what} THEN one problem: {p:#?}");
        }
    }
}
