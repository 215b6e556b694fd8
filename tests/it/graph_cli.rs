//! `firebreak graph`: Mermaid and DOT for playbooks and any definition.

use crate::support::{firebreak_offline, stderr, stdout};

#[test]
fn graph_of_the_built_in_playbook_in_both_formats() {
    for format in ["mermaid", "dot"] {
        let out = firebreak_offline(&["graph", "ec2-contain", "--format", format]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        insta::assert_snapshot!(format!("ec2_contain_{format}"), stdout(&out));
    }
}

#[test]
fn graph_of_any_definition_file() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/workflows/tests/corpus/26-ir-isolate-instance.json"
    );
    for format in ["mermaid", "dot"] {
        let out = firebreak_offline(&["graph", file, "--format", format]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        insta::assert_snapshot!(format!("corpus_26_{format}"), stdout(&out));
    }
}

#[test]
fn graph_of_an_invalid_file_or_unknown_name_exits_2() {
    let out = firebreak_offline(&["graph", "no-such-playbook-or-file"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("neither a built-in playbook"));
    let dir = std::env::temp_dir().join(format!("firebreak-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"StartAt": "A", "States": {}}"#).unwrap();
    let out = firebreak_offline(&["graph", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a valid definition"));
}
