//! Any text: the validator never panics; a definition it accepts
//! re-serialises to JSON that parses to the same definition, and renders.
#![no_main]

use firebreak_workflows::asl::StateMachine;
use firebreak_workflows::graph::{render, Format};
use firebreak_workflows::validate::validate_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(machine) = validate_json(text) {
        let again = serde_json::to_string(&machine).expect("a parsed definition serialises");
        let reparsed: StateMachine =
            serde_json::from_str(&again).expect("a serialised definition parses");
        assert_eq!(machine, reparsed, "the definition round-trips");
        let _ = render(&machine, Format::Mermaid);
        let _ = render(&machine, Format::Dot);
    }
});
