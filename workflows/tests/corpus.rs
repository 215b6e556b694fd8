//! The hand-written ASL corpus: every file parses, re-serialises to the
//! same JSON, passes the validator, and renders as Mermaid and DOT.

use std::path::PathBuf;

use firebreak_workflows::asl::StateMachine;
use firebreak_workflows::graph::{render, Format};
use firebreak_workflows::validate::validate_json;
use serde_json::Value;

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn corpus_is_large_enough() {
    assert!(corpus().len() >= 20);
}

#[test]
fn every_definition_round_trips_to_the_same_json() {
    for (name, text) in corpus() {
        let original: Value = serde_json::from_str(&text).unwrap();
        let parsed: StateMachine = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GIVEN {name} WHEN parsed THEN it parses: {e}"));
        let again = serde_json::to_value(&parsed).unwrap();
        assert_eq!(
            original, again,
            "GIVEN {name} WHEN parsed and serialised THEN the JSON is unchanged"
        );
    }
}

#[test]
fn every_definition_is_valid() {
    for (name, text) in corpus() {
        if let Err(p) = validate_json(&text) {
            panic!("GIVEN {name} WHEN validated THEN no problems, got:\n{p}");
        }
    }
}

#[test]
fn every_definition_renders() {
    for (name, text) in corpus() {
        let m: StateMachine = serde_json::from_str(&text).unwrap();
        let mermaid = render(&m, Format::Mermaid);
        let dot = render(&m, Format::Dot);
        assert!(mermaid.starts_with("flowchart TD"), "{name}");
        assert!(dot.starts_with("digraph"), "{name}");
        for state in m.states.keys() {
            let shown = state.replace('"', "#quot;");
            assert!(
                mermaid.contains(&shown),
                "{name}: {state} missing from the Mermaid graph"
            );
        }
    }
}
