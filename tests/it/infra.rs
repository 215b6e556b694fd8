//! What infra/ holds is what the code generates, and the policies pass
//! parliament (found through `PARLIAMENT`).

use std::process::Command;

use crate::support::{firebreak_offline, stderr};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn infra_holds_what_the_playbooks_compile_to() {
    let dir = std::env::temp_dir().join(format!("firebreak-infra-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for playbook in firebreak_playbooks::BUILT_IN {
        let def = dir.join("def.json");
        let pol = dir.join("pol.json");
        let out = firebreak_offline(&[
            "compile",
            playbook,
            "-o",
            def.to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        for (generated, checked_in) in [
            (
                def,
                root().join(format!("infra/statemachines/{playbook}.asl.json")),
            ),
            (pol, root().join(format!("infra/policies/{playbook}.json"))),
        ] {
            let want = std::fs::read_to_string(&generated).unwrap();
            let have = std::fs::read_to_string(&checked_in).unwrap_or_default();
            assert_eq!(
                have,
                want,
                "{} is stale: run scripts/generate",
                checked_in.display()
            );
        }
    }
}

#[test]
fn the_policies_pass_parliament() {
    let parliament = std::env::var("PARLIAMENT").unwrap_or_else(|_| {
        panic!("PARLIAMENT is not set: run the tests with scripts/test, which installs parliament")
    });
    let files: Vec<String> = firebreak_playbooks::BUILT_IN
        .iter()
        .map(|p| {
            root()
                .join(format!("infra/policies/{p}.json"))
                .display()
                .to_string()
        })
        .collect();
    let out = Command::new(parliament)
        .arg("--files")
        .arg(files.join(","))
        .output()
        .expect("parliament runs");
    assert!(
        out.status.success(),
        "parliament findings:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
