//! The journal of a durable execution: one JSON line per entry, appended
//! before the execution moves on, so a killed process can be resumed
//! without re-running what finished.
//!
//! What is journaled:
//! - `start`: the definition, input, identity and start time, and an opaque
//!   `runner` object the caller uses to rebuild its task handler;
//! - `event`: every history event (with the logical key of the states that
//!   must not record it twice on resume);
//! - `exit`: a state finished, with its output and where it went;
//! - `attempt`: a Task attempt finished, with its result or failure;
//! - `wait`: a Wait state or a retry delay started, with when it ends;
//! - `failed`: a Parallel attempt failed, with the error it failed with
//!   (which branch fails first depends on timing, so it is not recomputed);
//! - `note`: the caller's own record of something that happened (the
//!   CLI notes each AWS call a step made), kept in order like events;
//! - `end`: the execution ended.
//!
//! Entries are keyed by the state's logical position, not by event ids,
//! because Parallel branches and Map iterations interleave differently on
//! every run: `3` is the fourth state the top-level graph ran, `3.a0.b1.2`
//! the third state of branch 1 of that (Parallel) state's first attempt,
//! `3.a0.i17.0` the first state of Map item 17. Resume runs the definition
//! again from the start, taking each finished state's recorded output and
//! transition instead of running it, and each finished Task attempt's
//! recorded result instead of calling the task.
//!
//! Each state's end (`exit`), Task attempt, wait, start and end is written
//! at once, with a single `write` holding the history events (and notes)
//! recorded since the last such entry, so what resume relies on survives
//! the process being killed. Resume keeps the events up to the last other
//! entry (those after it are what a kill left of a write) and records the
//! rest again; events at a logical position (a state entered, an
//! iteration's end, a Task attempt's Scheduled/Started) carry its key, so
//! a resume that passes that position again does not record them twice.
//!
//! `attempt` and `failed` entries are also synced to the disk, so a
//! finished task (or the branch failure that decided a Parallel) is never
//! lost to a crash of the machine either; the other entries need not be:
//! whatever a machine crash loses of them is computed again from the input
//! and the synced results.
//!
//! A write that fails sets the journal aside (`NAME.jsonl.broken`): a
//! journal with a hole in it could make a resume run finished tasks again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ExecutionConfig, HistoryEvent, Outcome, TaskFailure};
use crate::asl::StateMachine;

/// What a journal starts with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Start {
    /// The definition run: a resume runs this one, whatever the file it came
    /// from holds now.
    pub definition: StateMachine,
    /// The execution input (`$$.Execution.Input`).
    pub input: Value,
    /// The execution's name, state machine, region, account and role.
    pub config: ExecutionConfig,
    /// `$$.Execution.StartTime`, kept on resume.
    pub start_time: String,
    /// The caller's own record of how to run tasks (mocks, AWS options).
    #[serde(default)]
    pub runner: Value,
}

/// One line of the journal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Entry {
    /// The first line: what runs, and how (see [`Start`]).
    Start(Box<Start>),
    /// A history event, buffered and written with the next other entry.
    Event {
        /// The event as recorded.
        event: HistoryEvent,
        /// The logical key of an event a resume must not record twice
        /// (`3#entered`, `3#0#scheduled`); `None` for the others.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// A state finished (as [`Journal::append_exit`] writes it): a resume takes
    /// its output and transition instead of running it.
    Exit {
        /// The state's logical position (`3`, `3.a0.b1.2`).
        key: String,
        /// The state's output, the next state's input.
        output: Value,
        /// The state it went to; `None` when it ended its graph.
        next: Option<String>,
        /// The id of the state's last history event, which the next event names
        /// as its `previousEventId`.
        last: u64,
    },
    /// A Task attempt finished (synced to the disk): a resume takes its result
    /// instead of calling the task again.
    Attempt {
        /// The Task state's logical position.
        key: String,
        /// Which attempt: 0 for the first try, then 1, 2, ... for retries.
        n: u64,
        /// The Task's `Resource`, counted in [`Replay::attempts_per_resource`].
        resource: String,
        /// The task's result, or its failure (`States.Timeout` when it timed
        /// out).
        result: Result<Value, TaskFailure>,
        /// The id of the last history event the attempt recorded.
        last: u64,
    },
    /// A Wait state or a retry delay started: a resume waits only what is left
    /// of it.
    Wait {
        /// The Wait state's logical position, or `KEY.rN` for the delay after
        /// attempt N of the state at `KEY`.
        key: String,
        /// When the wait ends: an RFC 3339 UTC time, to the nanosecond.
        until: String,
    },
    /// A Parallel attempt failed with this error: on resume it fails the
    /// same way at once (which branch fails first depends on timing).
    Failed {
        /// The Parallel attempt's key with `#failed` (`3.a0.#failed`).
        key: String,
        /// The error name; `None` only from a Fail state without one.
        error: Option<String>,
        /// The cause, if the failure gave one.
        cause: Option<String>,
    },
    /// The caller's note (buffered like an event).
    Note {
        /// Whatever the caller recorded (the CLI: an AWS call a step made).
        note: Value,
    },
    /// The execution ended: resuming the journal returns this outcome without
    /// running anything.
    End {
        /// How it ended.
        outcome: Outcome,
    },
}

/// A finished state.
#[derive(Clone, Debug)]
pub struct Exit {
    /// The state's output.
    pub output: Value,
    /// The state it went to; `None` when its graph ended there.
    pub next: Option<String>,
    /// The id of its last history event (the next event's `previousEventId`).
    pub last: u64,
}

/// A finished Task attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The task's result or failure.
    pub result: Result<Value, TaskFailure>,
    /// The id of the last history event the attempt recorded.
    pub last: u64,
}

/// What a journal on disk says happened.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// Finished states, by logical key.
    pub exits: HashMap<String, Exit>,
    /// Finished Task attempts, by state key and attempt number (0 for the first
    /// try).
    pub attempts: HashMap<(String, u64), Attempt>,
    /// When each started Wait or retry delay ends (RFC 3339), by key.
    pub waits: HashMap<String, String>,
    /// Parallel attempts that failed: (error, cause).
    pub failures: HashMap<String, (Option<String>, Option<String>)>,
    /// The id of each keyed event kept, by key: a resume that passes that
    /// position again takes the id instead of recording the event twice.
    pub keyed_events: HashMap<String, u64>,
    /// The history events kept, sorted by id and without gaps from 1: the
    /// resumed history continues from them.
    pub events: Vec<HistoryEvent>,
    /// Finished attempts per Task resource (to continue scripted mocks:
    /// their answers are given at once, so an attempt that got one has
    /// finished; a `--mock-command` can be cut off, but has one answer).
    pub attempts_per_resource: HashMap<String, usize>,
    /// The caller's notes, in order.
    pub notes: Vec<Value>,
    /// The outcome of the `end` entry, if the execution ended.
    pub ended: Option<Outcome>,
}

/// Why a journal cannot be created, opened or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file (or its folder) could not be created, read, written or locked.
    #[error("{path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The error from the system.
        source: std::io::Error,
    },
    /// A line before the last is not a journal entry (a torn last line is
    /// ignored instead).
    #[error("{path}: line {line} is not a journal entry: {message}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// The file is empty or does not begin with a `start` entry.
    #[error("{path}: the journal does not start with a start entry")]
    NoStart {
        /// The journal file.
        path: PathBuf,
    },
    /// [`Journal::create`] found a journal at the path already.
    #[error(
        "{path}: a journal for this execution already exists (resume it, or choose another name)"
    )]
    Exists {
        /// The journal file.
        path: PathBuf,
    },
    /// Another process holds the journal's lock.
    #[error("{path}: another process is running this execution (a run or a resume still alive)")]
    Busy {
        /// The journal file.
        path: PathBuf,
    },
    /// The journal was set aside after a failed write, so it cannot be resumed.
    #[error(
        "{path}: the run could not write its journal completely (see {broken}); resuming from it could run finished tasks again, so it cannot be resumed"
    )]
    Broken {
        /// The journal asked for.
        path: PathBuf,
        /// The `.broken` file that marks it (the path itself when that is
        /// the `.broken` file).
        broken: PathBuf,
    },
    /// [`Journal::create`] refused a name whose earlier journal was set aside
    /// as broken.
    #[error(
        "{broken}: an earlier run of this name could not write its journal completely (see that file); choose another name"
    )]
    NameTaken {
        /// The set-aside journal, or the marker left in its place.
        broken: PathBuf,
    },
}

/// Takes the journal's exclusive lock for as long as it is open, so two
/// processes never run the same execution (a resume started while the run
/// is still alive, or twice).
fn lock(path: &Path, file: &File) -> Result<(), JournalError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Busy {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(JournalError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

type FailureListener = Box<dyn Fn(&str) + Send + Sync>;

/// A journal as [`Journal::inspect`] reads it.
#[derive(Debug)]
pub struct Inspection {
    /// What runs, and how.
    pub start: Start,
    /// The history events written so far.
    pub events: Vec<HistoryEvent>,
    /// Whether a process holds the journal: the run is going on.
    pub running: bool,
}

/// An open journal, appended to as the execution runs.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    /// Event entries not yet written (they go with the next other entry).
    pending: Mutex<Vec<u8>>,
    replay: Replay,
    /// Set when a write fails: the execution goes on unjournaled, the
    /// journal is set aside (see [`Journal::broken_path`]) and nothing is
    /// written to it any more.
    write_error: Mutex<Option<String>>,
    /// `write_error` is set (checked on every line, without a lock).
    broken: AtomicBool,
    /// Told at once when a write fails (the CLI warns).
    on_failure: OnceLock<FailureListener>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("write_error", &self.write_error())
            .finish()
    }
}

impl Journal {
    /// Starts a new journal; fails if one exists at `path`.
    pub fn create(path: &Path, start: &Start) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            // Journals hold the whole input (a case's account, instance
            // state, buckets): only their owner reads them.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let broken = Journal::broken_path(path);
        if broken.exists() {
            // An earlier run of this name broke its journal: a new one
            // beside it would be refused by resume, wrongly.
            return Err(JournalError::NameTaken { broken });
        }
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    JournalError::Exists {
                        path: path.to_path_buf(),
                    }
                } else {
                    io(e)
                }
            })?;
        lock(path, &file)?;
        let journal = Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            pending: Mutex::new(Vec::new()),
            replay: Replay::default(),
            write_error: Mutex::new(None),
            broken: AtomicBool::new(false),
            on_failure: OnceLock::new(),
        };
        journal.append(&Entry::Start(Box::new(start.clone())), false);
        if let Some(e) = journal.write_error() {
            return Err(JournalError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            });
        }
        Ok(journal)
    }

    /// Reads a journal without opening it for a resume (no lock taken,
    /// nothing cut): its start, the events written so far (events are
    /// written with the entry after them, so the latest may not be there
    /// yet), and whether a process holds it (the run is going on).
    pub fn inspect(path: &Path) -> Result<Inspection, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let running = match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        };
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut start = None;
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Entry>(line) {
                Ok(Entry::Start(s)) => start = Some(*s),
                Ok(Entry::Event { event, .. }) => events.push(event),
                Ok(_) => {}
                // A last line being written (or cut by a kill).
                Err(_) if i + 1 == text.lines().count() => {}
                Err(e) => {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message: e.to_string(),
                    })
                }
            }
        }
        let start = start.ok_or_else(|| JournalError::Corrupt {
            path: path.to_path_buf(),
            line: 1,
            message: "no start entry".into(),
        })?;
        Ok(Inspection {
            start,
            events,
            running,
        })
    }

    /// Opens a journal to resume it: reads every entry, then appends. A
    /// last line cut short by a kill is ignored (it was never acted on).
    pub fn open(path: &Path) -> Result<(Journal, Start), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let broken = Journal::broken_path(path);
        if broken.exists() || path.extension().is_some_and(|e| e == "broken") {
            return Err(JournalError::Broken {
                path: path.to_path_buf(),
                broken: if broken.exists() {
                    broken
                } else {
                    path.to_path_buf()
                },
            });
        }
        // Locked first: the run may still be writing it.
        let mut file = OpenOptions::new().append(true).open(path).map_err(io)?;
        lock(path, &file)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        // Where the entries we keep end. Events are written in one write
        // with the entry after them, so events after the last other entry
        // (and a torn last line) are what a kill left of an unfinished
        // write: they are cut off, and recorded again by the resume.
        let mut keep_len = 0u64;
        let mut start = None;
        let mut replay = Replay::default();
        // Events and notes seen since the last other entry.
        let mut tail: Vec<Entry> = Vec::new();
        let mut offset = 0usize;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            offset += line.len();
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = match serde_json::from_str(line) {
                Ok(e) => e,
                Err(_) if offset == text.len() && !line.ends_with('\n') => break,
                Err(e) => {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message: e.to_string(),
                    })
                }
            };
            if matches!(entry, Entry::Event { .. } | Entry::Note { .. }) {
                tail.push(entry);
                continue;
            }
            keep_len = offset as u64;
            for buffered in tail.drain(..) {
                match buffered {
                    Entry::Event { event, key } => {
                        if let Some(k) = key {
                            replay.keyed_events.insert(k, event.id);
                        }
                        replay.events.push(event);
                    }
                    Entry::Note { note } => replay.notes.push(note),
                    _ => {}
                }
            }
            match entry {
                Entry::Start(s) => start = Some(*s),
                Entry::Event { .. } | Entry::Note { .. } => {}
                Entry::Exit {
                    key,
                    output,
                    next,
                    last,
                } => {
                    replay.exits.insert(key, Exit { output, next, last });
                }
                Entry::Attempt {
                    key,
                    n,
                    resource,
                    result,
                    last,
                } => {
                    *replay.attempts_per_resource.entry(resource).or_default() += 1;
                    replay.attempts.insert((key, n), Attempt { result, last });
                }
                Entry::Wait { key, until } => {
                    replay.waits.insert(key, until);
                }
                Entry::Failed { key, error, cause } => {
                    replay.failures.insert(key, (error, cause));
                }
                Entry::End { outcome } => replay.ended = Some(outcome),
            }
        }
        let start = start.ok_or_else(|| JournalError::NoStart {
            path: path.to_path_buf(),
        })?;
        replay.events.sort_by_key(|e| e.id);
        // Events from a kill between two writes can leave a gap in the ids;
        // keep the events up to the first gap, so ids stay dense.
        let dense = replay
            .events
            .iter()
            .enumerate()
            .take_while(|(i, e)| e.id == *i as u64 + 1)
            .count();
        replay.events.truncate(dense);
        replay.keyed_events.retain(|_, id| *id <= dense as u64);
        if keep_len < text.len() as u64 {
            // What a kill left of an unfinished write was never acted on:
            // cut it off, so the next entry starts on a line of its own.
            file.set_len(keep_len).map_err(io)?;
        } else if !text.is_empty() && !text.ends_with('\n') {
            file.write_all(b"\n").map_err(io)?;
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file: Mutex::new(file),
                pending: Mutex::new(Vec::new()),
                replay,
                write_error: Mutex::new(None),
                broken: AtomicBool::new(false),
                on_failure: OnceLock::new(),
            },
            start,
        ))
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads a journal's start and whether it ended, without opening it
    /// (no lock is taken: the run may be alive).
    pub fn peek(path: &Path) -> Result<(Start, bool), JournalError> {
        let text = std::fs::read_to_string(path).map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let start = match lines.next().map(serde_json::from_str::<Entry>) {
            Some(Ok(Entry::Start(s))) => *s,
            _ => {
                return Err(JournalError::NoStart {
                    path: path.to_path_buf(),
                })
            }
        };
        // The end entry is the last line written.
        let ended = lines.next_back().is_some_and(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .is_some_and(|v| v.get("t").and_then(Value::as_str) == Some("end"))
        });
        Ok((start, ended))
    }

    /// Where a journal whose writing failed is moved (`NAME.jsonl.broken`),
    /// so that it is kept for a person to read but never resumed.
    pub fn broken_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_os_string();
        p.push(".broken");
        PathBuf::from(p)
    }

    /// Calls `f` once, at the first failed write, with what went wrong.
    pub fn on_failure(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_failure.set(Box::new(f));
    }

    /// What the journal held when it was opened (empty for a new one).
    pub fn replay(&self) -> &Replay {
        &self.replay
    }

    /// The first write error, if any write failed.
    pub fn write_error(&self) -> Option<String> {
        self.write_error.lock().ok().and_then(|e| e.clone())
    }

    /// Appends one entry (not a history event: see `append_event`) at
    /// once, with the events buffered before it, in a single write; with
    /// `sync` also flushed to the disk.
    pub fn append(&self, entry: &Entry, sync: bool) {
        self.write(entry, sync)
    }

    fn write(&self, line: &impl Serialize, sync: bool) {
        let Some(mut pending) = self.buffer(line) else {
            return;
        };
        let Ok(mut file) = self.file.lock() else {
            return self.failed("the journal lock is poisoned".into());
        };
        let r = file
            .write_all(&pending)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        pending.clear();
        if let Err(e) = r {
            drop(file);
            self.failed(format!("cannot write {}: {e}", self.path.display()));
        }
    }

    /// Appends an `exit` entry (as `append` does), without copying the
    /// output: the same line as `Entry::Exit`.
    pub fn append_exit(&self, key: &str, output: &Value, next: Option<&str>, last: u64) {
        #[derive(Serialize)]
        struct ExitLine<'a> {
            t: &'static str,
            key: &'a str,
            output: &'a Value,
            next: Option<&'a str>,
            last: u64,
        }
        self.write(
            &ExitLine {
                t: "exit",
                key,
                output,
                next,
                last,
            },
            false,
        );
    }

    /// Buffers a note of the caller's (written with the next other entry;
    /// see [`Replay::notes`]).
    pub fn append_note(&self, note: &impl Serialize) {
        #[derive(Serialize)]
        struct NoteLine<'a, T: Serialize> {
            t: &'static str,
            note: &'a T,
        }
        self.buffer(&NoteLine { t: "note", note });
    }

    /// Buffers a history event (written with the next other entry),
    /// without copying it: the same line as `Entry::Event`.
    pub fn append_event(&self, event: &HistoryEvent, key: Option<&str>) {
        #[derive(Serialize)]
        struct EventLine<'a> {
            t: &'static str,
            event: &'a HistoryEvent,
            #[serde(skip_serializing_if = "Option::is_none")]
            key: Option<&'a str>,
        }
        self.buffer(&EventLine {
            t: "event",
            event,
            key,
        });
    }

    /// Adds one line to the buffer; returns the buffer, still locked.
    fn buffer(&self, line: &impl Serialize) -> Option<std::sync::MutexGuard<'_, Vec<u8>>> {
        if self.broken.load(Ordering::Relaxed) {
            // Set aside: nothing more is kept or written.
            return None;
        }
        let Ok(mut pending) = self.pending.lock() else {
            self.failed("the journal lock is poisoned".into());
            return None;
        };
        if let Err(e) = serde_json::to_writer(&mut *pending, line) {
            self.failed(format!("cannot encode a journal entry: {e}"));
            return None;
        }
        pending.push(b'\n');
        Some(pending)
    }

    /// The first failure sets the journal aside: a journal with a hole in
    /// it would make a resume run finished states and tasks again.
    fn failed(&self, message: String) {
        let Ok(mut e) = self.write_error.lock() else {
            return;
        };
        if e.is_some() {
            return;
        }
        self.broken.store(true, Ordering::Relaxed);
        let broken = Journal::broken_path(&self.path);
        let message = match std::fs::rename(&self.path, &broken) {
            Ok(()) => format!(
                "{message}; the journal is set aside as {}",
                broken.display()
            ),
            // Then at least a marker beside it, which open() refuses, saying
            // why (never over an existing file).
            Err(r) => match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&broken)
                .and_then(|mut f| {
                    writeln!(
                        f,
                        "firebreak: {} could not be written completely ({message}) nor moved here ({r}); do not resume it",
                        self.path.display()
                    )
                }) {
                Ok(()) => format!(
                    "{message}; the journal could not be moved ({r}), {} marks it as not resumable",
                    broken.display()
                ),
                Err(m) => format!(
                    "{message}; the journal could not be set aside ({r}; {m}): do not resume {}",
                    self.path.display()
                ),
            },
        };
        *e = Some(message.clone());
        drop(e);
        if let Some(f) = self.on_failure.get() {
            f(&message);
        }
    }
}
