//! The firebreak engine. It knows no AWS: it defines what a step is, the
//! Amazon States Language model, the typed builder and its compiler, a
//! validator for any definition, graph rendering and the local executor.
//!
//! ```
//! use firebreak_workflows::validate::validate_json;
//! let m = validate_json(r#"{"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}"#).unwrap();
//! assert_eq!(m.start_at, "A");
//! ```

pub mod asl;
pub mod builder;
pub mod compile;
pub mod context;
pub mod error_name;
pub mod exec;
pub mod graph;
pub mod iam;
pub mod intrinsics;
pub mod path;
pub mod shape;
pub mod step;
pub mod time;
pub mod validate;

pub use error_name::ErrorName;
