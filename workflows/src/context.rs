//! The context object (`$$`) as path evaluation sees it.
//!
//! An execution's context holds its whole input (`$$.Execution.Input`);
//! building a fresh copy for every state would cost a copy of the input per
//! state (quadratic in a Map over a large input). [`LazyContext`] builds
//! `$$` only when a path actually reads it, once per state.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

/// Anything that can give the context object.
pub trait ContextSource {
    /// The context object (`$$`) as a JSON value.
    fn context(&self) -> &Value;
}

impl ContextSource for Value {
    fn context(&self) -> &Value {
        self
    }
}

/// `$$.State`: kept as fields until a path reads `$$` (most states never
/// do, and a JSON object per state was a visible cost in a large Map).
#[derive(Clone, Debug)]
pub struct StateContext {
    /// `$$.State.Name`: the state's name.
    pub name: String,
    /// `$$.State.EnteredTime`: when the state was entered
    /// (`2024-01-01T12:00:00.123Z`).
    pub entered_time: String,
    /// Only where retries exist (Task, Parallel, Map): AWS gives a Pass
    /// state's context none.
    pub retry_count: Option<u64>,
}

impl StateContext {
    fn to_json(&self) -> Value {
        let mut s = serde_json::Map::new();
        s.insert("Name".into(), Value::String(self.name.clone()));
        s.insert(
            "EnteredTime".into(),
            Value::String(self.entered_time.clone()),
        );
        if let Some(n) = self.retry_count {
            s.insert("RetryCount".into(), Value::from(n));
        }
        Value::Object(s)
    }
}

/// `$$` for one state: the execution's shared part, plus `State` and, in a
/// Map iteration, `Map`; assembled on first use. A clone shares the parts,
/// not what was assembled (that would be a copy of the execution input).
#[derive(Debug)]
pub struct LazyContext {
    base: Arc<Value>,
    state: Option<StateContext>,
    map: Option<Value>,
    task: Option<Value>,
    built: OnceLock<Value>,
}

impl Clone for LazyContext {
    fn clone(&self) -> LazyContext {
        LazyContext {
            base: self.base.clone(),
            state: self.state.clone(),
            map: self.map.clone(),
            task: self.task.clone(),
            built: OnceLock::new(),
        }
    }
}

impl LazyContext {
    /// The context of the execution-wide part `base` (`Execution`,
    /// `StateMachine`), without `State`, `Map` or `Task`.
    pub fn new(base: Arc<Value>) -> LazyContext {
        LazyContext {
            base,
            state: None,
            map: None,
            task: None,
            built: OnceLock::new(),
        }
    }

    /// The same context with `State` set.
    pub fn with_state(&self, state: StateContext) -> LazyContext {
        LazyContext {
            base: self.base.clone(),
            state: Some(state),
            map: self.map.clone(),
            task: self.task.clone(),
            built: OnceLock::new(),
        }
    }

    /// The same context with `Map` set (inside a Map's ItemSelector).
    pub fn with_map(&self, map: Value) -> LazyContext {
        LazyContext {
            base: self.base.clone(),
            state: self.state.clone(),
            map: Some(map),
            task: self.task.clone(),
            built: OnceLock::new(),
        }
    }

    /// The same context with `Task` set (`Task.Token` of a
    /// `.waitForTaskToken` task).
    pub fn with_task(&self, task: Value) -> LazyContext {
        LazyContext {
            base: self.base.clone(),
            state: self.state.clone(),
            map: self.map.clone(),
            task: Some(task),
            built: OnceLock::new(),
        }
    }
}

impl ContextSource for LazyContext {
    fn context(&self) -> &Value {
        self.built.get_or_init(|| {
            let mut v = (*self.base).clone();
            if let Some(o) = v.as_object_mut() {
                if let Some(s) = &self.state {
                    o.insert("State".into(), s.to_json());
                }
                if let Some(m) = &self.map {
                    o.insert("Map".into(), m.clone());
                }
                if let Some(t) = &self.task {
                    o.insert("Task".into(), t.clone());
                }
            }
            v
        })
    }
}
