//! What infra/ holds is what the code generates, and the policies pass
//! parliament (found through `PARLIAMENT`).

use std::process::Command;

use crate::support::{firebreak_offline, stderr};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn infra_holds_what_the_code_renders() {
    let infra = root().join("infra");
    let out = firebreak_offline(&[
        "infra",
        "render",
        "--check",
        "--out",
        infra.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} (run scripts/generate)",
        stderr(&out)
    );
}

#[test]
fn the_rendered_definitions_are_what_compile_gives() {
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
            assert_eq!(have, want, "{}", checked_in.display());
        }
    }
}

#[test]
fn a_stale_file_is_named() {
    let dir = std::env::temp_dir().join(format!("firebreak-infra-stale-{}", std::process::id()));
    let out = firebreak_offline(&["infra", "render", "--out", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let template = dir.join("template.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        text.replace(
            "ReservedConcurrentExecutions: 1",
            "ReservedConcurrentExecutions: 2",
        ),
    )
    .unwrap();
    let out = firebreak_offline(&["infra", "render", "--check", "--out", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("template.yaml"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
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
