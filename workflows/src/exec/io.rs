//! Input and output processing: InputPath, Parameters (templates with `.$`
//! keys and intrinsic calls), ResultSelector, ResultPath, OutputPath.

use serde_json::{Map, Value};

use crate::asl::NullablePath;
use crate::context::ContextSource;
use crate::intrinsics::{looks_like_call, Call, IntrinsicError};
use crate::path::{JsonPath, PathError};

/// Why input or output processing failed; the executor turns it into a
/// `States.*` error with Step Functions' wording.
#[derive(Clone, Debug, PartialEq)]
pub enum IoError {
    /// A path in InputPath/OutputPath/ItemsPath matched nothing.
    PathNotFound {
        /// The field the path came from (`InputPath`, `ItemsPath`...).
        field: String,
        /// The path as written.
        path: String,
        /// The value it was applied to (the context object for a `$$` path).
        input: Value,
    },
    /// A `.$` path in a template matched nothing.
    TemplatePath {
        /// The template key, with its `.$`.
        field: String,
        /// The path as written.
        path: String,
        /// The value it was applied to: the state's input, or the context
        /// object for a `$$` path (but the input for a path inside an intrinsic
        /// call).
        input: Value,
    },
    /// A path or intrinsic call did not parse.
    Syntax {
        /// The field (`InputPath`...) or template key that holds it.
        field: String,
        /// What the parser said.
        message: String,
    },
    /// An intrinsic call failed.
    Intrinsic {
        /// The template key that holds the call.
        field: String,
        /// Why the call failed.
        message: String,
    },
    /// ResultPath could not be applied.
    ResultPath {
        /// The `ResultPath` as written.
        path: String,
        /// Why: not a reference path, or it cannot be written into the
        /// input.
        message: String,
    },
}

impl IoError {
    /// Step Functions' wording for the cause (after "An error occurred
    /// while executing the state ...").
    pub fn message(&self) -> String {
        match self {
            IoError::PathNotFound { field, path, input } => format!(
                "Invalid path '{path}' : No results for path: {} (field {field}, input '{}')",
                bracketed(path),
                compact(input)
            ),
            IoError::TemplatePath { field, path, input } => format!(
                "The JSONPath '{path}' specified for the field '{field}' could not be found in the input '{}'",
                compact(input)
            ),
            IoError::Syntax { field, message } => format!("The field '{field}' is invalid: {message}"),
            IoError::Intrinsic { field, message } => {
                format!("The evaluation of the intrinsic function for the field '{field}' failed: {message}")
            }
            IoError::ResultPath { path, message } => {
                format!("Unable to apply ReferencePath {path} to input: {message}")
            }
        }
    }

    /// Whether this error is reported as `States.IntrinsicFailure` (the
    /// others are `States.Runtime`).
    pub fn is_intrinsic(&self) -> bool {
        matches!(self, IoError::Intrinsic { .. })
    }
}

/// `$.a.b` as Jayway prints it in "No results for path": `$['a']['b']`.
fn bracketed(path: &str) -> String {
    match JsonPath::parse(path) {
        Ok(p) => {
            let mut out = String::from(if p.context { "$$" } else { "$" });
            for s in &p.segments {
                match s {
                    crate::path::Segment::Field(n) => out.push_str(&format!("['{n}']")),
                    crate::path::Segment::Index(i) => out.push_str(&format!("[{i}]")),
                    _ => return path.to_string(),
                }
            }
            out
        }
        Err(_) => path.to_string(),
    }
}

/// A value as compact JSON text, as Step Functions quotes values in error
/// causes.
pub fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse(field: &str, path: &str) -> Result<JsonPath, IoError> {
    JsonPath::parse(path).map_err(|e| IoError::Syntax {
        field: field.to_string(),
        message: e.to_string(),
    })
}

/// Selects `path` from the input, or from the context object for `$$`.
pub fn select<C: ContextSource + ?Sized>(
    field: &str,
    path: &str,
    input: &Value,
    context: &C,
) -> Result<Value, IoError> {
    let p = parse(field, path)?;
    let root = if p.context { context.context() } else { input };
    p.select(root).map_err(|_| IoError::PathNotFound {
        field: field.to_string(),
        path: path.to_string(),
        input: root.clone(),
    })
}

/// InputPath / OutputPath: absent keeps the value, `null` gives `{}`.
pub fn apply_path<C: ContextSource + ?Sized>(
    field: &str,
    path: Option<&NullablePath>,
    value: &Value,
    context: &C,
) -> Result<Value, IoError> {
    match path {
        None => Ok(value.clone()),
        Some(NullablePath::Null) => Ok(Value::Object(Map::new())),
        Some(NullablePath::Path(p)) => select(field, p, value, context),
    }
}

/// Builds a payload template (Parameters, ResultSelector, ItemSelector).
pub fn apply_template<C: ContextSource + ?Sized>(
    template: &Value,
    input: &Value,
    context: &C,
) -> Result<Value, IoError> {
    match template {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                if let Some(name) = k.strip_suffix(".$") {
                    let Some(expr) = v.as_str() else {
                        return Err(IoError::Syntax {
                            field: k.clone(),
                            message: "a key ending in .$ must hold a string".into(),
                        });
                    };
                    let value = if looks_like_call(expr) {
                        let call = Call::parse(expr).map_err(|e| IoError::Syntax {
                            field: k.clone(),
                            message: e.to_string(),
                        })?;
                        call.eval(input, context).map_err(|e| match e {
                            IntrinsicError::Path(PathError::NotFound { path }) => {
                                IoError::TemplatePath {
                                    field: k.clone(),
                                    path,
                                    input: input.clone(),
                                }
                            }
                            other => IoError::Intrinsic {
                                field: k.clone(),
                                message: other.to_string(),
                            },
                        })?
                    } else {
                        let p = parse(k, expr)?;
                        let root = if p.context { context.context() } else { input };
                        p.select(root).map_err(|_| IoError::TemplatePath {
                            field: k.clone(),
                            path: expr.to_string(),
                            input: root.clone(),
                        })?
                    };
                    out.insert(name.to_string(), value);
                } else {
                    out.insert(k.clone(), apply_template(v, input, context)?);
                }
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => a
            .iter()
            .map(|v| apply_template(v, input, context))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// ResultPath: absent replaces the input with the result, `null` keeps the
/// input, a reference path writes the result into a copy of the input.
pub fn apply_result_path(
    path: Option<&NullablePath>,
    raw_input: &Value,
    result: Value,
) -> Result<Value, IoError> {
    match path {
        None => Ok(result),
        Some(NullablePath::Null) => Ok(raw_input.clone()),
        Some(NullablePath::Path(p)) => {
            let parsed = JsonPath::parse_reference(p).map_err(|e| IoError::ResultPath {
                path: p.clone(),
                message: e.to_string(),
            })?;
            let mut doc = raw_input.clone();
            parsed
                .set(&mut doc, result)
                .map_err(|e| IoError::ResultPath {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
            Ok(doc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_resolve_paths_context_and_intrinsics() {
        let input = json!({"id": "i-1", "n": 2});
        let ctx = json!({"Execution": {"Name": "run-1"}});
        let t = json!({
            "instance.$": "$.id",
            "exec.$": "$$.Execution.Name",
            "next.$": "States.MathAdd($.n, 1)",
            "fixed": {"nested.$": "$.n", "list": [1, {"x.$": "$.id"}]}
        });
        assert_eq!(
            apply_template(&t, &input, &ctx).unwrap(),
            json!({"instance": "i-1", "exec": "run-1", "next": 3,
                   "fixed": {"nested": 2, "list": [1, {"x": "i-1"}]}})
        );
    }

    #[test]
    fn missing_template_paths_name_the_field() {
        let err = apply_template(&json!({"a.$": "$.nope"}), &json!({}), &json!({})).unwrap_err();
        assert!(err.message().contains("specified for the field 'a.$'"));
    }

    #[test]
    fn result_path_forms() {
        let input = json!({"a": 1});
        assert_eq!(apply_result_path(None, &input, json!(2)).unwrap(), json!(2));
        assert_eq!(
            apply_result_path(Some(&NullablePath::Null), &input, json!(2)).unwrap(),
            input
        );
        assert_eq!(
            apply_result_path(Some(&NullablePath::Path("$.r".into())), &input, json!(2)).unwrap(),
            json!({"a": 1, "r": 2})
        );
    }
}
