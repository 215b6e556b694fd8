//! Execution history with Step Functions' event types and details.
//!
//! Events are numbered from 1 in the order they happen; each names the
//! event before it on the same path of execution (`previousEventId`), as in
//! `GetExecutionHistory`. The history is what `firebreak run --history`
//! prints and what the incident timeline is built from.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::time::{format_timestamp, parse_timestamp};

/// One history event, shaped like an element of `GetExecutionHistory`'s
/// `events`: `{"id", "previousEventId", "timestamp", "type",
/// "<type>EventDetails": {...}}`.
///
/// The details are kept as JSON text and the time as a number: a Map of
/// 10,000 items records 40,000 events, and building (and dropping) a
/// `serde_json` map for each was most of such a run's time (perf). The
/// text is what the journal and `--history` write anyway.
#[derive(Clone, Debug)]
pub struct HistoryEvent {
    /// The event's position in the history, from 1.
    pub id: u64,
    /// The id of the event before it on the same path of execution (0 for
    /// `ExecutionStarted`).
    pub previous_event_id: u64,
    /// Whole milliseconds, as Step Functions shows them.
    pub timestamp: DateTime<Utc>,
    /// The event type (`TaskStateEntered`, `LambdaFunctionSucceeded`...),
    /// written as `type`.
    pub kind: String,
    details: Option<Box<RawValue>>,
}

impl PartialEq for HistoryEvent {
    fn eq(&self, other: &HistoryEvent) -> bool {
        self.id == other.id
            && self.previous_event_id == other.previous_event_id
            && self.timestamp == other.timestamp
            && self.kind == other.kind
            && self.details.as_ref().map(|d| d.get()) == other.details.as_ref().map(|d| d.get())
    }
}

impl HistoryEvent {
    /// The details object (`stateEnteredEventDetails` and so on), if any.
    pub fn detail(&self) -> Option<Value> {
        serde_json::from_str(self.details.as_ref()?.get()).ok()
    }
}

impl Serialize for HistoryEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let key = self.details.as_ref().and_then(|_| details_key(&self.kind));
        let mut m = s.serialize_map(Some(4 + usize::from(key.is_some())))?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("previousEventId", &self.previous_event_id)?;
        m.serialize_entry("timestamp", &format_timestamp(self.timestamp))?;
        m.serialize_entry("type", &self.kind)?;
        if let (Some(k), Some(d)) = (key, &self.details) {
            m.serialize_entry(&k, d)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for HistoryEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HistoryEvent, D::Error> {
        // Through a JSON map, not raw values: a journal line is read as an
        // internally tagged enum, which buffers its fields (and raw values
        // cannot be read from that buffer).
        let mut fields = serde_json::Map::<String, Value>::deserialize(d)?;
        let mut take = |k: &str| {
            fields
                .remove(k)
                .ok_or_else(|| D::Error::custom(format!("history event without {k}")))
        };
        let number = |v: Value, k: &str| {
            v.as_u64()
                .ok_or_else(|| D::Error::custom(format!("history event {k} is not a number")))
        };
        let id = number(take("id")?, "id")?;
        let previous_event_id = number(take("previousEventId")?, "previousEventId")?;
        let timestamp = take("timestamp")?;
        let timestamp = timestamp
            .as_str()
            .and_then(parse_timestamp)
            .ok_or_else(|| D::Error::custom(format!("bad event timestamp {timestamp}")))?;
        let kind = match take("type")? {
            Value::String(k) => k,
            other => return Err(D::Error::custom(format!("bad event type {other}"))),
        };
        let details = match details_key(&kind).and_then(|k| fields.remove(&k)) {
            Some(v) => Some(serde_json::value::to_raw_value(&v).map_err(D::Error::custom)?),
            None => None,
        };
        Ok(HistoryEvent {
            id,
            previous_event_id,
            timestamp,
            kind,
            details,
        })
    }
}

/// Event details as recorded: `value` as JSON text.
pub fn details(value: &impl Serialize) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(value).ok()
}

/// Details of a `...StateEntered` event, without building a JSON map.
pub fn entered_details(name: &str, input: &Value) -> Option<Box<RawValue>> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Entered<'a> {
        name: &'a str,
        input: String,
        input_details: Truncated,
    }
    details(&Entered {
        name,
        input: payload(input),
        input_details: Truncated { truncated: false },
    })
}

/// Details of a `...StateExited` event.
pub fn exited_details(name: &str, output: &Value) -> Option<Box<RawValue>> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Exited<'a> {
        name: &'a str,
        output: String,
        output_details: Truncated,
    }
    details(&Exited {
        name,
        output: payload(output),
        output_details: Truncated { truncated: false },
    })
}

/// Details naming a Map iteration (`{"name", "index"}`).
pub fn iteration_details(name: &str, index: usize) -> Option<Box<RawValue>> {
    #[derive(Serialize)]
    struct Iteration<'a> {
        name: &'a str,
        index: usize,
    }
    details(&Iteration { name, index })
}

#[derive(Serialize)]
struct Truncated {
    truncated: bool,
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
    /// An empty history.
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
        details: Option<Box<RawValue>>,
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
        details: Option<Box<RawValue>>,
        observe: impl FnOnce(&HistoryEvent),
    ) -> u64 {
        let listeners: Vec<Listener> = self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
        let (id, copy) = {
            let Ok(mut events) = self.events.lock() else {
                return 0;
            };
            let id = events.len() as u64 + 1;
            let e = HistoryEvent {
                id,
                previous_event_id: previous,
                timestamp: at.trunc_subsecs(3),
                kind: kind.to_string(),
                details,
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

    /// How many events have been recorded (0 if the lock was poisoned).
    pub fn len(&self) -> usize {
        self.events.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether no event has been recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every event, in id order.
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
