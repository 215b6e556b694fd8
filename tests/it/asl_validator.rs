//! Every generated definition (and the hand-written corpus) passes the
//! independent asl-validator (npm), found through `ASL_VALIDATOR`.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{firebreak_offline, stderr};

fn asl_validator() -> String {
    std::env::var("ASL_VALIDATOR").unwrap_or_else(|_| {
        panic!("ASL_VALIDATOR is not set: run the tests with scripts/test, which installs asl-validator")
    })
}

/// Checks several files in one run (node starts in about 0.7 s, so one
/// process per file would dominate the test time).
fn check(paths: &[PathBuf]) {
    let mut cmd = Command::new(asl_validator());
    for p in paths {
        cmd.arg("--json-path").arg(p);
    }
    let out = cmd.output().expect("asl-validator runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "asl-validator rejects some of {paths:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One success line per file: nothing was skipped.
    assert_eq!(stdout.matches("is valid").count(), paths.len(), "{stdout}");
}

#[test]
fn generated_definitions_pass_asl_validator() {
    let dir = std::env::temp_dir().join(format!("firebreak-asl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for playbook in firebreak_playbooks::BUILT_IN {
        for (suffix, extra) in [
            ("placeholder", vec![]),
            (
                "substituted",
                vec![
                    "--step-runner-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:firebreak-step-runner",
                ],
            ),
        ] {
            let path = dir.join(format!("{playbook}-{suffix}.json"));
            let mut args = vec!["compile", playbook, "-o", path.to_str().unwrap()];
            args.extend(extra);
            let out = firebreak_offline(&args);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            files.push(path);
        }
    }
    check(&files);
}

#[test]
fn the_corpus_passes_asl_validator() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows/tests/corpus");
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(files.len() >= 20);
    check(&files);
}
