//! Execution history with Step Functions' event types and details.
//!
//! Events are numbered from 1 in the order they happen; each names the
//! event before it on the same path of execution (`previousEventId`), as in
//! `GetExecutionHistory`. The history is what `firebreak run --history`
//! prints and what the incident timeline is built from.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::time::format_timestamp;

/// One history event, shaped like an element of `GetExecutionHistory`'s
/// `events`: `{"id", "previousEventId", "timestamp", "type",
/// "<type>EventDetails": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEvent {
    pub id: u64,
    pub previous_event_id: u64,
    pub timestamp: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl HistoryEvent {
    /// The details object (`stateEnteredEventDetails` and so on), if any.
    pub fn detail(&self) -> Option<&Value> {
        self.details.values().next()
    }

    /// The state name for state-entered/exited events.
    pub fn state_name(&self) -> Option<&str> {
        self.detail()?.get("name")?.as_str()
    }
}

type Listener = Arc<dyn Fn(&HistoryEvent) + Send + Sync>;

/// The history of one execution, shared by its concurrent branches.
#[derive(Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<HistoryEvent>>>,
    listeners: Arc<Mutex<Vec<Listener>>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("events", &self.len())
            .finish()
    }
}

/// The name of the details field for an event type, as AWS spells it
/// (`TaskStateEntered` -> `stateEnteredEventDetails`).
fn details_key(kind: &str) -> Option<String> {
    let generic = [
        ("StateEntered", "stateEnteredEventDetails"),
        ("StateExited", "stateExitedEventDetails"),
    ];
    for (suffix, key) in generic {
        if kind.ends_with(suffix) {
            return Some(key.to_string());
        }
    }
    let mut chars = kind.chars();
    let first = chars.next()?;
    Some(format!(
        "{}{}EventDetails",
        first.to_ascii_lowercase(),
        chars.as_str()
    ))
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Calls `f` for every event as it is recorded (progress display,
    /// journal).
    pub fn subscribe(&self, f: impl Fn(&HistoryEvent) + Send + Sync + 'static) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push(Arc::new(f));
        }
    }

    /// Records an event and returns its id. `details` of `None` gives an
    /// event without a details object (as `LambdaFunctionStarted`).
    pub fn record(
        &self,
        kind: &str,
        previous: u64,
        at: DateTime<Utc>,
        details: Option<Value>,
    ) -> u64 {
        self.record_with(kind, previous, at, details, |_| {})
    }

    /// Records an event, showing it to `observe` first (the journal), and
    /// returns its id (0 only if the history's lock was poisoned by a panic
    /// elsewhere). The event is copied only for subscribers, if any.
    pub fn record_with(
        &self,
        kind: &str,
        previous: u64,
        at: DateTime<Utc>,
        details: Option<Value>,
        observe: impl FnOnce(&HistoryEvent),
    ) -> u64 {
        let listeners: Vec<Listener> = self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
        let (id, copy) = {
            let Ok(mut events) = self.events.lock() else {
                return 0;
            };
            let id = events.len() as u64 + 1;
            let mut map = Map::new();
            if let (Some(d), Some(key)) = (details, details_key(kind)) {
                map.insert(key, d);
            }
            let e = HistoryEvent {
                id,
                previous_event_id: previous,
                timestamp: format_timestamp(at),
                kind: kind.to_string(),
                details: map,
            };
            observe(&e);
            let copy = (!listeners.is_empty()).then(|| e.clone());
            events.push(e);
            (id, copy)
        };
        if let Some(event) = copy {
            for l in listeners {
                l(&event);
            }
        }
        id
    }

    /// A history that continues `events` (a resumed execution's).
    pub fn restore(events: Vec<HistoryEvent>) -> History {
        History {
            events: Arc::new(Mutex::new(events)),
            listeners: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.events.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn events(&self) -> Vec<HistoryEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The whole history as `{"events": [...]}`, like `GetExecutionHistory`.
    pub fn to_json(&self) -> Value {
        json!({ "events": self.events() })
    }
}

/// JSON text of a value, as AWS puts inputs and outputs in event details.
pub fn payload(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `{"truncated": false}`: firebreak keeps whole payloads.
pub fn not_truncated() -> Value {
    json!({"truncated": false})
}
