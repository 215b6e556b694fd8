//! Differential tests: every definition of `tests/differential/` runs in
//! moto's Step Functions (a private moto server started by
//! `run_moto.py`, executions on, canned Lambda results) and in `firebreak
//! run`; status, output and error must be equal. Where moto 5.2.5 is wrong
//! (the file's `moto_bug` says how, with the AWS documentation's rule),
//! firebreak must give AWS's documented result instead, and moto must still
//! be wrong (so the note stays true).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{same_json, stderr, stdout};

const LAMBDA: &str = "arn:aws:lambda:us-east-1:123456789012:function:differential";

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/differential exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// moto's result per file stem, from `run_moto.py --json`.
fn moto_results() -> serde_json::Map<String, Value> {
    let python = std::env::var("FIREBREAK_PYTHON").unwrap_or_else(|_| {
        panic!("FIREBREAK_PYTHON is not set: run the tests with scripts/test (it points it at the tools venv's python, which has moto and boto3)")
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/run_moto.py");
    let out = Command::new(python)
        .arg(script)
        .arg("--json")
        .output()
        .expect("run_moto.py runs");
    assert!(
        out.status.success(),
        "run_moto.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Object(m)) => m,
        other => panic!("run_moto.py printed no JSON object: {other:?}"),
    }
}

/// The fields compared: status, output, error, and the cause unless the
/// error is a `States.*` runtime error (whose wording moto does not copy).
fn differences(want: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    for k in ["status", "output", "error"] {
        if !same_json(&field(want, k), &field(got, k)) {
            out.push(format!(
                "{k}: expected {}, got {}",
                field(want, k),
                field(got, k)
            ));
        }
    }
    let error = field(want, "error");
    let runtime = error.as_str().is_some_and(|e| e.starts_with("States."));
    let cause = field(want, "cause");
    if !runtime && !cause.is_null() && cause != field(got, "cause") {
        out.push(format!(
            "cause: expected {cause}, got {}",
            field(got, "cause")
        ));
    }
    out
}

#[test]
fn every_differential_definition_gives_moto_s_result_or_aws_s_where_moto_is_wrong() {
    let files = corpus();
    assert!(
        files.len() >= 40,
        "the corpus has {} definitions",
        files.len()
    );
    let moto = moto_results();
    let dir = std::env::temp_dir().join(format!("firebreak-differential-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    let mut moto_bugs = 0;
    for path in &files {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{stem}: not JSON: {e}"));
        let Some(moto_result) = moto.get(&stem) else {
            failures.push(format!("{stem}: run_moto.py gave no result"));
            continue;
        };
        // The state machine is named after the file (`$$.StateMachine.Name`).
        let def = dir.join(format!("{stem}.json"));
        std::fs::write(&def, case["definition"].to_string()).unwrap();
        let mut args: Vec<String> = vec![
            "run".into(),
            def.display().to_string(),
            "--input".into(),
            case["input"].to_string(),
            "--name".into(),
            "differential".into(),
            "--fast-clock".into(),
        ];
        let results = case["lambda_results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for r in &results {
            args.push("--mock".into());
            args.push(format!("{LAMBDA}={r}"));
        }
        if results.is_empty() && case["definition"].to_string().contains(LAMBDA) {
            // The Lambda is never reached (the state fails first); `run`
            // still wants every resource answered before it starts.
            args.push("--mock".into());
            args.push(format!("{LAMBDA}={{}}"));
        }
        let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
            .args(&args)
            .env("FIREBREAK_STATE_DIR", dir.join(format!("state-{stem}")))
            .output()
            .expect("firebreak runs");
        let ours: Value = match serde_json::from_str(&stdout(&out)) {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!(
                    "{stem}: firebreak printed no result (exit {:?}): {}",
                    out.status.code(),
                    stderr(&out).trim()
                ));
                continue;
            }
        };
        let want = match case.get("moto_bug") {
            Some(bug) => {
                moto_bugs += 1;
                let aws = &bug["aws"];
                if differences(aws, moto_result).is_empty() {
                    failures.push(format!(
                        "{stem}: moto now gives AWS's documented result; the moto_bug note is stale"
                    ));
                }
                aws.clone()
            }
            None => moto_result.clone(),
        };
        let diff = differences(&want, &ours);
        if !diff.is_empty() {
            let whose = if case.get("moto_bug").is_some() {
                "AWS's documented result (moto is wrong here)"
            } else {
                "moto's result"
            };
            failures.push(format!("{stem}: against {whose}: {}", diff.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "GIVEN {} definitions ({moto_bugs} with a documented moto bug) WHEN each runs in moto and in `firebreak run` THEN the results agree; {} do not:\n{}",
        files.len(),
        failures.len(),
        failures.join("\n")
    );
}
