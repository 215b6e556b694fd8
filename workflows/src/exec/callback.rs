//! Callback tasks (`.waitForTaskToken`): how a task waits for the answer
//! to its token, with the heartbeat AWS enforces, and how an answer or a
//! heartbeat is given. One interface ([`CallbackStore`]); the local CLI's
//! store is [`FileStore`] (a folder of files, so an answer can come from
//! another process and a waiting run survives being killed and resumed);
//! the Lambdas and remote runs will give their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::{TaskCall, TaskFailure};
use crate::context::ContextSource;
use crate::ErrorName;

/// Whether a Task resource is a callback (`.waitForTaskToken`).
pub fn is_callback(resource: &str) -> bool {
    resource.ends_with(".waitForTaskToken")
}

/// The answer to a callback task.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// `SendTaskSuccess`: the task's result.
    Success(Value),
    /// `SendTaskFailure`.
    Failure {
        /// The error name, matched by the state's Retry and Catch.
        error: String,
        /// A human-readable cause, if one was given.
        cause: Option<String>,
    },
}

/// What a waiting task finds when it looks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Look {
    /// The answer, once one has been given; `None` while the task waits.
    pub answer: Option<Answer>,
    /// When the worker last said it is alive, if it did.
    pub heartbeat: Option<SystemTime>,
}

/// An answer or heartbeat that cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The token cannot be one: empty, over 128 characters, or with characters
    /// other than ASCII letters, digits and `-`.
    #[error("{0:?} is not a task token")]
    BadToken(String),
    /// No task waits on the token (never opened, or closed since).
    #[error("no execution waits for task token {token} (under {place})")]
    NotWaiting {
        /// The token given.
        token: String,
        /// Where the store looked (its folder).
        place: String,
    },
    /// The token was answered already: a task takes one answer.
    #[error("task token {0} has already been answered")]
    Answered(String),
    /// The store could not be read or written (the message says which file and
    /// why).
    #[error("{0}")]
    Store(String),
}

/// Where callback tasks wait and their answers arrive.
pub trait CallbackStore: Send + Sync {
    /// A task starts waiting on `token` (`record` says what waits).
    fn open(&self, token: &str, record: &Value) -> Result<(), CallbackError>;
    /// What the task finds now.
    fn look(&self, token: &str) -> Result<Look, CallbackError>;
    /// The task no longer waits (answered, timed out, caught).
    fn close(&self, token: &str);
    /// Answers a waiting task (once).
    fn answer(&self, token: &str, answer: &Answer) -> Result<(), CallbackError>;
    /// Says the worker of a waiting task is alive.
    fn heartbeat(&self, token: &str) -> Result<(), CallbackError>;
}

/// Closes the token however the wait ends.
struct CloseOnDrop<'a>(&'a dyn CallbackStore, &'a str);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close(self.1);
    }
}

/// Waits until the task's token is answered, failing with
/// `States.HeartbeatTimeout` when the task has `HeartbeatSeconds` and no
/// heartbeat comes in time. `said` is told the token once the task waits
/// (the CLI prints how to answer it).
pub async fn wait_for_answer(
    store: &dyn CallbackStore,
    call: &TaskCall,
    poll: Duration,
    said: impl FnOnce(&str),
) -> Result<Value, TaskFailure> {
    let failed = |cause: String| TaskFailure::new(ErrorName::StatesTaskFailed.as_str(), cause);
    let token = call
        .context
        .context()
        .pointer("/Task/Token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let record = json!({
        "execution": call.context.context().pointer("/Execution/Name"),
        "state": call.state_name,
        "resource": call.resource,
        "input": call.input,
    });
    store.open(&token, &record).map_err(|e| match e {
        CallbackError::BadToken(_) => failed(format!(
            "state '{}' has no usable task token",
            call.state_name
        )),
        e => failed(e.to_string()),
    })?;
    said(&token);
    let _close = CloseOnDrop(store, &token);
    let mut last_beat = Instant::now();
    let mut last_seen = None;
    loop {
        let look = store.look(&token).map_err(|e| failed(e.to_string()))?;
        match look.answer {
            Some(Answer::Success(v)) => return Ok(v),
            Some(Answer::Failure { error, cause }) => return Err(TaskFailure { error, cause }),
            None => {}
        }
        if let Some(limit) = call.heartbeat_seconds {
            if look.heartbeat.is_some() && look.heartbeat != last_seen {
                last_seen = look.heartbeat;
                last_beat = Instant::now();
            }
            if last_beat.elapsed() > Duration::from_secs(limit) {
                return Err(TaskFailure {
                    error: ErrorName::StatesHeartbeatTimeout.as_str().into(),
                    cause: Some(format!(
                        "no heartbeat for task token {token} within {limit} s"
                    )),
                });
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Callback tokens as files in one folder: `TOKEN.json` while a task
/// waits, `TOKEN.answer.json` once answered (written whole, then renamed),
/// `TOKEN.heartbeat` whose modification time is the last heartbeat. Files
/// are created 0600 and never written through a symbolic link; the caller
/// gives a folder only its owner can write (the CLI checks its state
/// directory).
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir`, created (mode 0700) when a task first waits.
    pub fn new(dir: impl Into<PathBuf>) -> FileStore {
        FileStore { dir: dir.into() }
    }

    /// The folder holding the token files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A token as a file name: the executor's are hex; anything else a
    /// user types is refused before it touches a path.
    fn file(&self, token: &str, suffix: &str) -> Result<PathBuf, CallbackError> {
        let ok = !token.is_empty()
            && token.len() <= 128
            && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(CallbackError::BadToken(token.to_string()));
        }
        Ok(self.dir.join(format!("{token}{suffix}")))
    }

    /// The tasks waiting now: each token with the record it was opened
    /// with (`{"execution", "state", ...}`), those answered left out. A
    /// folder that does not exist holds none.
    pub fn pending(&self) -> Vec<(String, Value)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(token) = name.strip_suffix(".json") else {
                continue;
            };
            if token.ends_with(".answer") || self.dir.join(format!("{token}.answer.json")).exists()
            {
                continue;
            }
            if let Some(record) = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                out.push((token.to_string(), record));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The file `suffix` of a token a task waits on.
    fn waiting(&self, token: &str, suffix: &str) -> Result<PathBuf, CallbackError> {
        if !self.file(token, ".json")?.is_file() {
            return Err(CallbackError::NotWaiting {
                token: token.to_string(),
                place: self.dir.display().to_string(),
            });
        }
        self.file(token, suffix)
    }
}

/// Writes a file only its owner can read, never through a symbolic link.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(contents)
}

fn store_error(path: &Path, e: std::io::Error) -> CallbackError {
    CallbackError::Store(format!("cannot write {}: {e}", path.display()))
}

impl CallbackStore for FileStore {
    fn open(&self, token: &str, record: &Value) -> Result<(), CallbackError> {
        use std::os::unix::fs::DirBuilderExt;
        let pending = self.file(token, ".json")?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| store_error(&self.dir, e))?;
        write_private(&pending, record.to_string().as_bytes()).map_err(|e| store_error(&pending, e))
    }

    fn look(&self, token: &str) -> Result<Look, CallbackError> {
        let answer_file = self.file(token, ".answer.json")?;
        let heartbeat = std::fs::metadata(self.file(token, ".heartbeat")?)
            .and_then(|m| m.modified())
            .ok();
        let Ok(text) = std::fs::read_to_string(&answer_file) else {
            return Ok(Look {
                answer: None,
                heartbeat,
            });
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            CallbackError::Store(format!("{}: not JSON: {e}", answer_file.display()))
        })?;
        let answer = match v.get("output") {
            Some(o) => Answer::Success(o.clone()),
            None => Answer::Failure {
                error: v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                cause: v.get("cause").and_then(Value::as_str).map(str::to_string),
            },
        };
        Ok(Look {
            answer: Some(answer),
            heartbeat,
        })
    }

    fn close(&self, token: &str) {
        for suffix in [".json", ".answer.json", ".heartbeat"] {
            if let Ok(p) = self.file(token, suffix) {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    fn answer(&self, token: &str, answer: &Answer) -> Result<(), CallbackError> {
        let done = self.waiting(token, ".answer.json")?;
        if done.exists() {
            return Err(CallbackError::Answered(token.to_string()));
        }
        let body = match answer {
            Answer::Success(v) => json!({ "output": v }),
            Answer::Failure { error, cause } => json!({ "error": error, "cause": cause }),
        };
        // Written whole, then renamed: the waiting run never reads half.
        let tmp = self.dir.join(format!("{token}.answer.tmp"));
        write_private(&tmp, body.to_string().as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &done))
            .map_err(|e| store_error(&done, e))
    }

    fn heartbeat(&self, token: &str) -> Result<(), CallbackError> {
        let beat = self.waiting(token, ".heartbeat")?;
        // The file's modification time is the heartbeat.
        write_private(&beat, chrono::Utc::now().to_rfc3339().as_bytes())
            .map_err(|e| store_error(&beat, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> FileStore {
        let dir =
            std::env::temp_dir().join(format!("firebreak-callback-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        FileStore::new(dir)
    }

    #[test]
    fn an_answer_is_given_once_and_found_by_the_waiting_task() {
        let s = scratch("answer");
        assert!(matches!(
            s.answer("abc", &Answer::Success(json!(1))),
            Err(CallbackError::NotWaiting { .. })
        ));
        s.open("abc", &json!({})).unwrap();
        assert_eq!(s.look("abc").unwrap().answer, None);
        s.answer("abc", &Answer::Success(json!({"x": 1}))).unwrap();
        assert!(matches!(
            s.answer("abc", &Answer::Success(json!(2))),
            Err(CallbackError::Answered(_))
        ));
        assert_eq!(
            s.look("abc").unwrap().answer,
            Some(Answer::Success(json!({"x": 1})))
        );
        s.close("abc");
        assert!(!s.dir().join("abc.json").exists());
    }

    #[test]
    fn tokens_that_are_not_file_names_are_refused() {
        let s = scratch("bad");
        for t in ["", "../x", "a/b", "a b"] {
            assert!(matches!(
                s.open(t, &json!({})),
                Err(CallbackError::BadToken(_))
            ));
        }
    }

    #[test]
    fn files_are_private_and_a_planted_link_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let s = scratch("private");
        s.open("abc", &json!({})).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.dir()), 0o700);
        assert_eq!(mode(&s.dir().join("abc.json")), 0o600);
        let victim = s.dir().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, s.dir().join("abc.heartbeat")).unwrap();
        assert!(s.heartbeat("abc").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }
}
