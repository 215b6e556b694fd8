//! A path or intrinsic call (first line) against a JSON document (the
//! rest): parsing and evaluating never panic, whatever either holds.
#![no_main]

use firebreak_workflows::intrinsics::Call;
use firebreak_workflows::path::JsonPath;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (expr, doc) = text.split_once('\n').unwrap_or((text, ""));
    let doc: Value = serde_json::from_str(doc).unwrap_or_else(|_| {
        json!({"a": [1, 2.5, "x", null, {"b": [true, {"c": "d"}]}], "s": "a,b", "n": -3})
    });
    let context = json!({"Execution": {"Input": doc.clone(), "Name": "fuzz"}, "State": {"Name": "S"}});
    if let Ok(p) = JsonPath::parse(expr) {
        let _ = p.select(if p.context { &context } else { &doc });
    }
    if let Ok(c) = Call::parse(expr) {
        let _ = c.eval(&doc, &context);
    }
    let template = json!({"v.$": expr, "nested": {"w.$": expr}});
    let _ = firebreak_workflows::exec::io::apply_template(&template, &doc, &context);
});
