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

fn check(path: &PathBuf) {
    let out = Command::new(asl_validator())
        .arg("--json-path")
        .arg(path)
        .output()
        .expect("asl-validator runs");
    assert!(
        out.status.success(),
        "asl-validator rejects {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generated_definitions_pass_asl_validator() {
    let dir = std::env::temp_dir().join(format!("firebreak-asl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
            check(&path);
        }
    }
}

#[test]
fn the_corpus_passes_asl_validator() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows/tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            check(&p);
            n += 1;
        }
    }
    assert!(n >= 20);
}
