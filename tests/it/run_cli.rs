//! `firebreak run`: Step Functions' recorded behaviour (the shared
//! conformance cases, recorded against real AWS), mocks, exit codes and
//! bad input.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{same_json as same, stderr, stdout};

/// Where the conformance cases are: `FIREBREAK_SFN_CONFORMANCE`, or
/// `shared/data/sfn-conformance/cases.jsonl` beside the clone (or beside any
/// folder above it).
fn conformance_file() -> PathBuf {
    if let Ok(p) = std::env::var("FIREBREAK_SFN_CONFORMANCE") {
        return PathBuf::from(p);
    }
    let rel = Path::new("shared/data/sfn-conformance/cases.jsonl");
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        let candidate = d.join(rel);
        if candidate.is_file() {
            return candidate;
        }
        dir = d.parent();
    }
    let fallback = Path::new("/work").join(rel);
    assert!(
        fallback.is_file(),
        "the conformance cases are not found: set FIREBREAK_SFN_CONFORMANCE to cases.jsonl"
    );
    fallback
}

/// Removes the value at a JSON pointer, returning whether it was there.
fn take(v: &mut Value, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(o)) => o.remove(&last).is_some(),
        Some(Value::Array(a)) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a[i] = Value::Null;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// What is wrong with `actual` (the printed object) against `expected`.
fn compare(expected: &Value, actual: &Value) -> Option<String> {
    let mut expected = expected.clone();
    let mut actual = actual.clone();
    let fuzzy: Vec<String> = expected
        .get("fuzzy")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(o) = expected.as_object_mut() {
        o.remove("fuzzy");
    }
    // Fuzzy values depend on the run: present, not compared.
    for p in &fuzzy {
        if actual.pointer(p).is_none_or(Value::is_null) {
            return Some(format!("{p} is missing"));
        }
        take(&mut expected, p);
        take(&mut actual, p);
    }
    let mut problems = Vec::new();
    for field in ["status", "output", "error", "cause"] {
        let want = expected.get(field).cloned().unwrap_or(Value::Null);
        let got = actual.get(field).cloned().unwrap_or(Value::Null);
        if !same(&want, &got) {
            problems.push(format!("{field}: expected {want}, got {got}"));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[test]
fn every_recorded_aws_execution_gives_the_same_result() {
    let path = conformance_file();
    let text = std::fs::read_to_string(&path).expect("the conformance cases are readable");
    let dir = tempfile_dir();
    let mut failures = Vec::new();
    let mut count = 0;
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        count += 1;
        let case: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}:{}: not JSON: {e}", path.display(), line_no + 1));
        let name = case["name"].as_str().unwrap_or("(unnamed)").to_string();
        let def = dir.join(format!("case-{line_no}.json"));
        std::fs::write(&def, case["definition"].to_string()).unwrap();
        let input = case["input"].to_string();
        let out = firebreak_run(&[
            "run",
            def.to_str().unwrap(),
            "--input",
            &input,
            "--fast-clock",
        ]);
        let printed: Value = match serde_json::from_str(&stdout(&out)) {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!(
                    "{name}: exit {:?}, no result printed: {}",
                    out.status.code(),
                    stderr(&out).trim()
                ));
                continue;
            }
        };
        if let Some(problem) = compare(&case["expected"], &printed) {
            failures.push(format!("{name}: {problem}"));
            continue;
        }
        let want_code = if case["expected"]["status"] == "SUCCEEDED" {
            0
        } else {
            1
        };
        if out.status.code() != Some(want_code) {
            failures.push(format!(
                "{name}: exit {:?}, expected {want_code}",
                out.status.code()
            ));
        }
    }
    assert!(count >= 200, "only {count} cases in {}", path.display());
    assert!(
        failures.is_empty(),
        "GIVEN {count} executions recorded against AWS WHEN each runs in `firebreak run` THEN each gives AWS's result; {} do not:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `firebreak` with its journals in this test run's temporary folder.
fn firebreak_run(args: &[&str]) -> std::process::Output {
    firebreak_in(&tempfile_dir().join("state"), args)
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firebreak-run-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts that a command's stderr says `needle` (and shows it if not).
fn assert_stderr_has(out: &std::process::Output, needle: &str) {
    assert!(stderr(out).contains(needle), "{}", stderr(out));
}

/// An empty folder of its own for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = tempfile_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p.to_string_lossy().into_owned()
}

const LAMBDA: &str = "arn:aws:lambda:us-east-1:123456789012:function:enrich";

#[test]
fn mocked_tasks_answer_in_order_and_retries_use_the_next_answer() {
    // GIVEN a Task with a Retry whose mock fails once, then succeeds
    let dir = tempfile_dir();
    let def = write(
        &dir,
        "retry.json",
        &json!({
            "StartAt": "Enrich",
            "States": {"Enrich": {
                "Type": "Task", "Resource": LAMBDA,
                "Retry": [{"ErrorEquals": ["Throttled"], "IntervalSeconds": 30, "MaxAttempts": 2}],
                "ResultPath": "$.enriched", "End": true
            }}
        }),
    );
    let fail = write(
        &dir,
        "fail.json",
        &json!({"Error": "Throttled", "Cause": "slow down"}),
    );
    let out = firebreak_run(&[
        "run",
        &def,
        "--input",
        r#"{"id": 7}"#,
        "--mock",
        &format!("{LAMBDA}=@{fail}"),
        "--mock",
        &format!(r#"{LAMBDA}={{"score": 3}}"#),
        "--fast-clock",
        "--history",
    ]);
    // THEN it succeeds with the second answer, after one retry recorded
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed["status"], "SUCCEEDED");
    assert_eq!(
        printed["output"],
        json!({"id": 7, "enriched": {"score": 3}})
    );
    assert_eq!(printed["error"], Value::Null);
    let kinds: Vec<&str> = printed["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "LambdaFunctionFailed")
            .count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"ExecutionSucceeded"));
}

#[test]
fn a_failed_execution_prints_error_and_cause_and_exits_1() {
    let dir = tempfile_dir();
    let def = write(
        &dir,
        "fail.json",
        &json!({"StartAt": "Stop", "States": {"Stop": {"Type": "Fail", "Error": "Bad", "Cause": "because"}}}),
    );
    let out = firebreak_run(&["run", &def]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        printed,
        json!({"status": "FAILED", "output": null, "error": "Bad", "cause": "because"})
    );
}

#[test]
fn bad_definitions_inputs_and_mocks_exit_2_naming_what_is_wrong() {
    let dir = tempfile_dir();
    let unmocked = write(
        &dir,
        "unmocked.json",
        &json!({"StartAt": "Call", "States": {"Call": {"Type": "Task", "Resource": LAMBDA, "End": true}}}),
    );
    let broken = write(
        &dir,
        "broken.json",
        &json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}),
    );
    let good = write(
        &dir,
        "good.json",
        &json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}),
    );
    // A Distributed Map reading its items from S3, nested in a Parallel:
    // running it on the input instead would give another result than AWS
    let reader = write(
        &dir,
        "reader.json",
        &json!({"StartAt": "Both", "States": {"Both": {"Type": "Parallel", "End": true,
        "Branches": [{"StartAt": "Each", "States": {"Each": {
            "Type": "Map", "End": true,
            "ItemReader": {"Resource": "arn:aws:states:::s3:getObject",
                           "ReaderConfig": {"InputType": "JSON"},
                           "Parameters": {"Bucket": "b", "Key": "k"}},
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                              "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}
        }}}]}}}),
    );
    let batcher = write(
        &dir,
        "batcher.json",
        &json!({"StartAt": "Each", "States": {"Each": {
            "Type": "Map", "End": true, "ItemBatcher": {"MaxItemsPerBatch": 2},
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                              "StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}
        }}}),
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![unmocked.clone()], "state 'Call': field Resource"),
        (
            vec![reader.clone()],
            "state 'Both/branch 0/Each': field ItemReader is not supported",
        ),
        (
            vec![batcher.clone()],
            "state 'Each': field ItemBatcher is not supported",
        ),
        (vec![broken.clone()], "Nowhere"),
        (
            vec![good.clone(), "--input".into(), "{not json".into()],
            "--input is not valid JSON",
        ),
        (
            vec![
                good.clone(),
                "--input".into(),
                "@/nonexistent/input.json".into(),
            ],
            "cannot read /nonexistent/input.json",
        ),
        (
            vec![unmocked.clone(), "--mock".into(), "no-equals-sign".into()],
            "expected RESOURCE=",
        ),
        (
            vec![unmocked.clone(), "--mock".into(), format!("{LAMBDA}={{bad")],
            "is not valid JSON",
        ),
        (vec!["/nonexistent/def.json".into()], "cannot read"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["run".to_string()];
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = firebreak_run(&refs);
        assert_eq!(
            out.status.code(),
            Some(2),
            "GIVEN run {args:?} THEN exit 2; stderr: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(needle),
            "GIVEN run {args:?} THEN the error names {needle:?}; got: {}",
            stderr(&out)
        );
        assert!(
            stdout(&out).is_empty(),
            "nothing printed on stdout for {args:?}"
        );
    }
}

/// Runs `firebreak run|resume` with journals under `state`.
fn firebreak_in(state: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env("FIREBREAK_STATE_DIR", state)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("the firebreak binary runs")
}

/// A definition with two counted tasks around a real-time Wait: each task
/// appends a line to `count` when it starts and when it finishes.
fn counted_definition(dir: &Path) -> (String, Vec<String>) {
    let count = dir.join("count");
    let def = write(
        dir,
        "durable.json",
        &json!({
            "StartAt": "First",
            "States": {
                "First": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:first",
                          "ResultPath": "$.first", "Next": "Pause"},
                "Pause": {"Type": "Wait", "Seconds": 3, "Next": "Second"},
                "Second": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:second",
                           "ResultPath": "$.second", "Next": "Done"},
                "Done": {"Type": "Pass", "Parameters": {"first.$": "$.first", "second.$": "$.second", "id.$": "$.id"}, "End": true}
            }
        }),
    );
    let c = count.display();
    let mocks = vec![
        "--mock-command".to_string(),
        format!(
            r#"arn:aws:lambda:us-east-1:123456789012:function:first=echo first-start >> {c}; echo first-done >> {c}; echo '{{"a": 1}}'"#
        ),
        "--mock-command".to_string(),
        format!(
            r#"arn:aws:lambda:us-east-1:123456789012:function:second=echo second-start >> {c}; sleep 2; echo second-done >> {c}; echo '{{"b": 2}}'"#
        ),
    ];
    (def, mocks)
}

fn lines(path: &Path, what: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == what)
        .count()
}

/// Starts a run in its own process group, waits until `ready` holds, then
/// kills the whole group (firebreak and its task programs) with SIGKILL.
fn run_and_kill(state: &Path, args: &[String], ready: impl Fn() -> bool) {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env("FIREBREAK_STATE_DIR", state)
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("firebreak starts");
    let pid = child.id();
    let mut waited = 0;
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        waited += 1;
        assert!(waited < 1500, "the run never reached the point to kill it");
    }
    let killed = std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = child.wait();
}

fn journal_has(state: &Path, name: &str, entry: &str) -> bool {
    std::fs::read_to_string(state.join("executions").join(format!("{name}.jsonl")))
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(entry))
}

#[test]
fn a_run_killed_in_a_wait_resumes_to_the_same_output_without_rerunning_tasks() {
    let dir = fresh_dir("killed-in-wait");
    let (def, mocks) = counted_definition(&dir);
    let count = dir.join("count");
    // GIVEN the output of an uninterrupted run
    let mut args: Vec<String> = vec![
        "run".into(),
        def.clone(),
        "--input".into(),
        r#"{"id": 9}"#.into(),
    ];
    args.extend(mocks.iter().cloned());
    let mut whole = args.clone();
    whole.extend(["--name".to_string(), "whole".to_string()]);
    let refs: Vec<&str> = whole.iter().map(String::as_str).collect();
    let out = firebreak_in(&dir, &refs);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected: Value = serde_json::from_str(&stdout(&out)).unwrap();
    std::fs::remove_file(&count).unwrap();
    // WHEN a second run is killed while it waits
    let mut killed = args.clone();
    killed.extend(["--name".to_string(), "killed-in-wait".to_string()]);
    run_and_kill(&dir, &killed, || {
        journal_has(&dir, "killed-in-wait", r#""t":"wait""#)
    });
    assert_eq!(lines(&count, "first-done"), 1);
    assert_eq!(
        lines(&count, "second-start"),
        0,
        "killed before the second task"
    );
    // AND it is resumed
    let out = firebreak_in(&dir, &["resume", "killed-in-wait"]);
    // THEN it ends with the same output, the first task never ran again
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let resumed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(resumed, expected);
    assert_eq!(
        lines(&count, "first-start"),
        1,
        "the finished task ran again"
    );
    assert_eq!(lines(&count, "second-done"), 1);
    // AND resuming an ended execution prints its outcome again
    let again = firebreak_in(&dir, &["resume", "killed-in-wait"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&again)).unwrap(),
        expected
    );
    assert_eq!(lines(&count, "second-start"), 1);
}

#[test]
fn a_run_killed_in_a_task_resumes_and_reruns_only_the_unfinished_task() {
    let dir = fresh_dir("killed-in-task");
    let (def, mocks) = counted_definition(&dir);
    let count = dir.join("count");
    let mut args: Vec<String> = vec!["run".into(), def, "--input".into(), r#"{"id": 9}"#.into()];
    args.extend(mocks);
    args.extend(["--name".to_string(), "killed-in-task".to_string()]);
    // WHEN the run is killed while the second task runs
    run_and_kill(&dir, &args, || lines(&count, "second-start") == 1);
    assert_eq!(lines(&count, "second-done"), 0, "killed inside the task");
    // AND it is resumed
    let out = firebreak_in(&dir, &["resume", "killed-in-task", "--history"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let resumed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // THEN the output is the uninterrupted one
    assert_eq!(
        resumed["output"],
        json!({"first": {"a": 1}, "second": {"b": 2}, "id": 9})
    );
    // AND the finished task ran once, the interrupted one finished once
    assert_eq!(lines(&count, "first-start"), 1);
    assert_eq!(lines(&count, "second-start"), 2);
    assert_eq!(lines(&count, "second-done"), 1);
    // AND the history goes on from the journal's: the first task is
    // scheduled once, events are numbered without a gap
    let history = resumed["history"].as_array().unwrap();
    let first_scheduled = history
        .iter()
        .filter(|e| {
            e["type"] == "LambdaFunctionScheduled"
                && e["lambdaFunctionScheduledEventDetails"]["resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(":first"))
        })
        .count();
    assert_eq!(first_scheduled, 1);
    for (i, e) in history.iter().enumerate() {
        assert_eq!(e["id"], json!(i + 1), "event ids are dense");
    }
    assert_eq!(history.last().unwrap()["type"], "ExecutionSucceeded");
}

#[test]
fn resume_names_a_missing_execution_and_exits_2() {
    let dir = tempfile_dir().join("resume-missing");
    std::fs::create_dir_all(&dir).unwrap();
    let out = firebreak_in(&dir, &["resume", "no-such-execution"]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_has(&out, "no journal for execution \"no-such-execution\"");
}

#[test]
fn a_run_whose_journal_cannot_be_written_warns_at_once_finishes_and_refuses_resume() {
    // GIVEN a run whose files may not grow past 4 KiB (a full disk, as the
    // process sees it: writes fail with EFBIG), with a state whose output
    // is larger than that, then a Wait
    let dir = fresh_dir("journal-full");
    let def = write(
        &dir,
        "big.json",
        &json!({
            "StartAt": "Big",
            "States": {
                "Big": {"Type": "Pass", "Parameters": {
                    "big.$": "States.ArrayRange(1, 1000, 1)", "n.$": "$.n"
                }, "Next": "Pause"},
                "Pause": {"Type": "Wait", "Seconds": 3, "Next": "Done"},
                "Done": {"Type": "Pass", "Parameters": {"n.$": "$.n"}, "End": true}
            }
        }),
    );
    let mut child = std::process::Command::new("bash")
        .args([
            "-c",
            r#"trap '' XFSZ; ulimit -f 4; exec "$@""#,
            "bash",
            env!("CARGO_BIN_EXE_firebreak"),
            "run",
            &def,
            "--input",
            r#"{"n": 7}"#,
            "--name",
            "full",
        ])
        .env("FIREBREAK_STATE_DIR", &dir)
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // THEN it says so at once, while the run is still in its Wait
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut warning = String::new();
    while !warning.contains("cannot write the journal") {
        warning.clear();
        let n = std::io::BufRead::read_line(&mut err, &mut warning).unwrap();
        assert!(n > 0, "no warning before stderr closed");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the warning came only after the run ended"
    );
    assert!(warning.contains("cannot be resumed"), "{warning}");
    // AND the run still finishes with the right output
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["output"], json!({"n": 7}));
    // AND the journal is set aside, so a resume refuses it (exit 2)
    let journal = dir.join("executions/full.jsonl");
    assert!(!journal.exists());
    assert!(dir.join("executions/full.jsonl.broken").exists());
    let out = firebreak_in(&dir, &["resume", "full"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_has(&out, "cannot be resumed");
    // AND so does a resume given the set-aside file itself
    let broken = dir.join("executions/full.jsonl.broken");
    let out = firebreak_in(&dir, &["resume", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // AND a new run cannot take the name (its resume would be refused)
    let out = firebreak_in(&dir, &["run", &def, "--input", "{}", "--name", "full"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_has(&out, "choose another name");
}

#[test]
fn a_result_that_cannot_be_written_fails_the_command() {
    // GIVEN stdout on a full disk (/dev/full: every write fails, ENOSPC)
    let dir = fresh_dir("stdout-full");
    let def = write(
        &dir,
        "pass.json",
        &json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", &def, "--input", "{}", "--no-journal"])
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    // THEN the command fails and says why, instead of a silent, cut result
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_has(&out, "cannot write the output");
}

#[test]
fn a_run_whose_readers_went_away_still_finishes() {
    // GIVEN a run whose stdout and stderr are pipes nobody reads any more
    // (a terminal closed, `| head` done): before, its first progress line
    // panicked (exit 101) half way through the run
    let dir = fresh_dir("closed-pipes");
    let def = write(
        &dir,
        "wait.json",
        &json!({"StartAt": "Pause", "States": {
            "Pause": {"Type": "Wait", "Seconds": 1, "End": true}
        }}),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", &def, "--input", "{}", "--name", "closed"])
        .env("FIREBREAK_STATE_DIR", &dir)
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    // THEN it ends as it would have, and its journal says so
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(journal_has(&dir, "closed", r#""t":"end""#));
}

/// Starts `firebreak run` on a callback task and returns the child and the
/// token it printed.
fn run_waiting_for_token(state: &Path, def: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", def, "--input", r#"{"id": 5}"#])
        .env("FIREBREAK_STATE_DIR", state)
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("firebreak starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads stderr to its end, so the run never writes to a closed pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.trim().strip_prefix("firebreak task-success ") {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    });
    let token = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("run printed the task token");
    (child, token)
}

fn callback_definition(dir: &Path) -> String {
    write(
        dir,
        "callback.json",
        &json!({
            "StartAt": "Ask",
            "States": {
                "Ask": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                    "Parameters": {"QueueUrl": "https://sqs/approvals", "MessageBody": {"token.$": "$$.Task.Token", "id.$": "$.id"}},
                    "ResultPath": "$.answer",
                    "Catch": [{"ErrorEquals": ["Denied"], "ResultPath": "$.denied", "Next": "No"}],
                    "End": true
                },
                "No": {"Type": "Pass", "End": true}
            }
        }),
    )
}

#[test]
fn a_callback_task_waits_for_task_success_or_task_failure() {
    let dir = fresh_dir("callback");
    let def = callback_definition(&dir);

    // GIVEN a run waiting on a callback task
    let (child, token) = run_waiting_for_token(&dir, &def);
    // WHEN the token is answered with a result
    let out = firebreak_in(
        &dir,
        &["task-success", &token, "--output", r#"{"approved": true}"#],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // THEN the run goes on with it
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0));
    let printed: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(
        printed["output"],
        json!({"id": 5, "answer": {"approved": true}})
    );
    // AND the token cannot be answered twice
    let again = firebreak_in(&dir, &["task-success", &token, "--output", "{}"]);
    assert_eq!(again.status.code(), Some(2));
    assert_stderr_has(&again, "no execution waits for task token");

    // GIVEN another run WHEN its token is failed THEN the Catch takes it
    let (child, token) = run_waiting_for_token(&dir, &def);
    let out = firebreak_in(
        &dir,
        &[
            "task-failure",
            &token,
            "--error",
            "Denied",
            "--cause",
            "not today",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done = child.wait_with_output().unwrap();
    let printed: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(
        printed["output"],
        json!({"id": 5, "denied": {"Error": "Denied", "Cause": "not today"}})
    );

    // AND a token nobody waits for, or a malformed one, is bad input
    let out = firebreak_in(&dir, &["task-success", "0123abcd", "--output", "{}"]);
    assert_eq!(out.status.code(), Some(2));
    let out = firebreak_in(&dir, &["task-failure", "../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_has(&out, "is not a task token");
    // AND --fast-clock refuses to wait for a person
    let out = firebreak_in(&dir, &["run", &def, "--fast-clock"]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_has(&out, "wait for task tokens");
}

#[test]
fn a_callback_task_without_heartbeats_times_out_and_heartbeats_keep_it_alive() {
    let dir = fresh_dir("heartbeat");
    let def = write(
        &dir,
        "heartbeat.json",
        &json!({
            "StartAt": "Ask",
            "States": {
                "Ask": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                    "Parameters": {"MessageBody": {"token.$": "$$.Task.Token"}},
                    "HeartbeatSeconds": 3,
                    "ResultPath": "$.answer",
                    "End": true
                }
            }
        }),
    );
    // GIVEN a waiting callback task with HeartbeatSeconds 3
    // WHEN nobody sends a heartbeat THEN it fails with States.HeartbeatTimeout
    let (child, _token) = run_waiting_for_token(&dir, &def);
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(1));
    let printed: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(printed["error"], "States.HeartbeatTimeout", "{printed}");

    // WHEN heartbeats come every second for four seconds, then the answer
    // THEN the task succeeds
    let (child, token) = run_waiting_for_token(&dir, &def);
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let out = firebreak_in(&dir, &["task-heartbeat", &token]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let out = firebreak_in(&dir, &["task-success", &token, "--output", "7"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done = child.wait_with_output().unwrap();
    let printed: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(printed["status"], "SUCCEEDED", "{printed}");
    assert_eq!(printed["output"], json!({"id": 5, "answer": 7}));
}

#[test]
fn a_callback_answered_while_its_run_was_dead_is_taken_by_the_resume() {
    let dir = fresh_dir("callback-resume");
    let def = callback_definition(&dir);
    // GIVEN a run waiting on a callback task, killed while it waits
    let mut args: Vec<String> = vec!["run".into(), def, "--input".into(), r#"{"id": 5}"#.into()];
    args.extend(["--name".to_string(), "callback-resume".to_string()]);
    let tokens = dir.join("tokens");
    let waiting = || {
        std::fs::read_dir(&tokens)
            .map(|d| d.filter_map(|e| e.ok()).count() > 0)
            .unwrap_or(false)
    };
    run_and_kill(&dir, &args, waiting);
    let token = std::fs::read_dir(&tokens)
        .unwrap()
        .filter_map(|e| e.ok())
        .find_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .expect("the pending token is left for the resume");
    // WHEN the token is answered meanwhile, then the run is resumed
    let out = firebreak_in(
        &dir,
        &["task-success", &token, "--output", r#""late but here""#],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = firebreak_in(&dir, &["resume", "callback-resume"]);
    // THEN the resumed attempt has the same token and takes the answer
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        printed["output"],
        json!({"id": 5, "answer": "late but here"})
    );
}
