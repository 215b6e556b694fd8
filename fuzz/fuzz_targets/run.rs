//! Any definition the validator accepts runs to an end in the executor
//! (tasks echo their input; waits on a paused clock; at most 2,000 history
//! events) without panicking.
#![no_main]

use std::sync::Arc;

use async_trait::async_trait;
use firebreak_workflows::exec::{
    ExecutionConfig, Executor, History, TaskCall, TaskFailure, TaskHandler,
};
use firebreak_workflows::validate::validate_json;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct Echo;

#[async_trait]
impl TaskHandler for Echo {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        if call.input.get("fail").is_some() {
            return Err(TaskFailure::new("Fuzz.Failed", "asked to fail"));
        }
        Ok(call.input)
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the input, the rest the definition.
    let (input, def) = text.split_once('\n').unwrap_or(("{}", text));
    let Ok(machine) = validate_json(def) else {
        return;
    };
    let input: Value = serde_json::from_str(input).unwrap_or(Value::Null);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let executor = Executor::new(Arc::new(Echo)).with_max_events(2_000);
        let _ = executor
            .run(&machine, input, &ExecutionConfig::default(), &History::new())
            .await;
    });
});
