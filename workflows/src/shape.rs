//! The shape of JSON values, derived from JSON Schema, so the compiler can
//! check the paths a state reads against the types that produce them.
//!
//! The case file that flows through a playbook starts as the workflow's
//! input type; each task writes its output type under its own key. A
//! [`Shape`] is the small subset of JSON Schema that matters for that check:
//! which fields exist, whether they are always there, and their JSON kind.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::path::{JsonPath, Segment};

/// The shape of a JSON value, as far as the compiler checks paths against it.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// Anything (an untyped `serde_json::Value`, or a schema we do not read).
    Any,
    /// Only `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A whole number (accepted where a `Number` is expected).
    Integer,
    /// Any number.
    Number,
    /// Any string (a schema's `format` is not kept).
    String,
    /// An array whose items all have this shape.
    Array(Box<Shape>),
    /// An object with known fields.
    Object {
        /// The listed properties, each with whether it is always present.
        fields: BTreeMap<String, Field>,
        /// Shape of fields not listed (`additionalProperties`), when allowed.
        open: Option<Box<Shape>>,
    },
    /// One of several shapes (`Option<T>` is `T | null`).
    Union(Vec<Shape>),
}

/// One field of an object shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The shape of its value.
    pub shape: Shape,
    /// Always present (not `Option`, not written by a step that may fail).
    pub required: bool,
}

/// Deep enough for any real type; recursive types stop here as `Any`.
const MAX_SCHEMA_DEPTH: usize = 32;

impl Shape {
    /// An object with no fields that allows no others.
    pub fn object() -> Shape {
        Shape::Object {
            fields: BTreeMap::new(),
            open: None,
        }
    }

    /// Reads a JSON Schema (as schemars writes it: draft 2020-12 with
    /// `$defs`, or draft 7 with `definitions`).
    pub fn from_schema(schema: &Value) -> Shape {
        convert(schema, schema, 0)
    }

    /// Adds or replaces a top-level field of an object shape.
    pub fn with_field(&self, name: &str, shape: Shape, required: bool) -> Shape {
        match self {
            Shape::Object { fields, open } => {
                let mut fields = fields.clone();
                fields.insert(name.to_string(), Field { shape, required });
                Shape::Object {
                    fields,
                    open: open.clone(),
                }
            }
            _ => self.clone(),
        }
    }

    /// Writes `shape` at a reference path (as `ResultPath` does), creating
    /// objects on the way.
    pub fn with_path(&self, path: &JsonPath, shape: Shape, required: bool) -> Shape {
        fn go(cur: &Shape, segs: &[Segment], shape: Shape, required: bool) -> Shape {
            match segs.split_first() {
                None => shape,
                Some((Segment::Field(name), rest)) => {
                    let base = match cur {
                        Shape::Object { .. } => cur.clone(),
                        _ => Shape::object(),
                    };
                    let inner = match &base {
                        Shape::Object { fields, .. } => fields
                            .get(name)
                            .map(|f| f.shape.clone())
                            .unwrap_or_else(Shape::object),
                        _ => Shape::object(),
                    };
                    // Writing below a field creates it, so it is present when
                    // the write always happens; otherwise it keeps its status.
                    let req = required
                        || match &base {
                            Shape::Object { fields, .. } => {
                                fields.get(name).is_some_and(|f| f.required)
                            }
                            _ => false,
                        };
                    base.with_field(name, go(&inner, rest, shape, required), req)
                }
                Some(_) => cur.clone(),
            }
        }
        go(self, &path.segments, shape, required)
    }

    /// The shape at a path, and whether the value is always there.
    pub fn resolve(&self, path: &JsonPath) -> Result<(Shape, bool), String> {
        if !path.is_definite() {
            // Indefinite paths give a list of whatever matches.
            return Ok((Shape::Array(Box::new(Shape::Any)), true));
        }
        let mut cur = self.clone();
        let mut always = true;
        let mut walked = String::from("$");
        for seg in &path.segments {
            let (next, present) = match seg {
                Segment::Field(name) => cur.field(name).ok_or_else(|| {
                    format!(
                        "{walked} has no field \"{name}\"{}",
                        cur.field_list()
                            .map(|l| format!(" (it has: {l})"))
                            .unwrap_or_default()
                    )
                })?,
                Segment::Index(_) => match cur.non_null() {
                    Shape::Array(item) => (*item, false),
                    Shape::Any => (Shape::Any, false),
                    other => return Err(format!("{walked} is {other}, not an array")),
                },
                _ => (Shape::Any, false),
            };
            always &= present;
            walked.push_str(&match seg {
                Segment::Field(n) => format!(".{n}"),
                Segment::Index(i) => format!("[{i}]"),
                _ => String::new(),
            });
            cur = next;
        }
        Ok((cur, always))
    }

    /// The shape without its `null` alternative.
    pub fn without_null(&self) -> Shape {
        self.non_null()
    }

    fn non_null(&self) -> Shape {
        match self {
            Shape::Union(members) => {
                let rest: Vec<Shape> = members
                    .iter()
                    .filter(|m| **m != Shape::Null)
                    .cloned()
                    .collect();
                match rest.len() {
                    0 => Shape::Null,
                    1 => rest.into_iter().next().unwrap_or(Shape::Any),
                    _ => Shape::Union(rest),
                }
            }
            other => other.clone(),
        }
    }

    fn nullable(&self) -> bool {
        match self {
            Shape::Null | Shape::Any => true,
            Shape::Union(m) => m.iter().any(Shape::nullable),
            _ => false,
        }
    }

    /// A field of an object shape, and whether it is always present.
    pub fn field(&self, name: &str) -> Option<(Shape, bool)> {
        let nullable = self.nullable() && !matches!(self, Shape::Any);
        match self.non_null() {
            Shape::Any => Some((Shape::Any, false)),
            Shape::Object { fields, open } => match fields.get(name) {
                Some(f) => Some((f.shape.clone(), f.required && !nullable)),
                None => open.map(|o| (*o, false)),
            },
            Shape::Union(members) => {
                // Present in some alternative: a field of a tagged enum.
                let found: Vec<(Shape, bool)> =
                    members.iter().filter_map(|m| m.field(name)).collect();
                if found.is_empty() {
                    None
                } else {
                    let all = found.len() == members.len() && found.iter().all(|f| f.1);
                    Some((Shape::union(found.into_iter().map(|f| f.0).collect()), all))
                }
            }
            _ => None,
        }
    }

    fn field_list(&self) -> Option<String> {
        match self.non_null() {
            Shape::Object { fields, .. } if !fields.is_empty() => {
                Some(fields.keys().cloned().collect::<Vec<_>>().join(", "))
            }
            _ => None,
        }
    }

    /// One of `members`: `Any` if one of them is (or there are none), the
    /// member itself if there is one. Adjacent duplicates are dropped.
    pub fn union(mut members: Vec<Shape>) -> Shape {
        members.dedup();
        if members.contains(&Shape::Any) {
            return Shape::Any;
        }
        match members.len() {
            0 => Shape::Any,
            1 => members.remove(0),
            _ => Shape::Union(members),
        }
    }

    /// Whether a value of shape `src` is acceptable where `self` is
    /// expected. Lenient where the schema says little (`Any`), strict on
    /// JSON kinds and required object fields.
    pub fn accepts(&self, src: &Shape) -> bool {
        match (self, src) {
            (Shape::Any, _) | (_, Shape::Any) => true,
            (_, Shape::Union(members)) => members.iter().all(|m| self.accepts(m)),
            (Shape::Union(members), s) => members.iter().any(|m| m.accepts(s)),
            (Shape::Number, Shape::Integer) => true,
            (Shape::Array(a), Shape::Array(b)) => a.accepts(b),
            (
                Shape::Object { fields: want, .. },
                Shape::Object {
                    fields: have,
                    open: have_open,
                },
            ) => want.iter().all(|(name, f)| match have.get(name) {
                Some(h) => f.shape.accepts(&h.shape) && (h.required || !f.required),
                None => !f.required || have_open.is_some(),
            }),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }

    /// The shape of a literal JSON value.
    pub fn of_value(v: &Value) -> Shape {
        match v {
            Value::Null => Shape::Null,
            Value::Bool(_) => Shape::Bool,
            Value::Number(n) if n.is_i64() || n.is_u64() => Shape::Integer,
            Value::Number(_) => Shape::Number,
            Value::String(_) => Shape::String,
            Value::Array(a) => Shape::Array(Box::new(Shape::union(
                a.iter().map(Shape::of_value).collect(),
            ))),
            Value::Object(o) => Shape::Object {
                fields: o
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            Field {
                                shape: Shape::of_value(v),
                                required: true,
                            },
                        )
                    })
                    .collect(),
                open: None,
            },
        }
    }

    /// Fields of an object shape that must be given.
    pub fn required_fields(&self) -> Vec<String> {
        match self.non_null() {
            Shape::Object { fields, .. } => fields
                .iter()
                .filter(|(_, f)| f.required)
                .map(|(k, _)| k.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Where two paths of a playbook meet again (after a Choice), a field
    /// is always present only if it is on every path.
    pub fn merge(a: &Shape, b: &Shape) -> Shape {
        match (a, b) {
            (
                Shape::Object {
                    fields: fa,
                    open: oa,
                },
                Shape::Object { fields: fb, .. },
            ) => {
                let mut fields = BTreeMap::new();
                for (k, f) in fa {
                    match fb.get(k) {
                        Some(g) => {
                            fields.insert(
                                k.clone(),
                                Field {
                                    shape: Shape::merge(&f.shape, &g.shape),
                                    required: f.required && g.required,
                                },
                            );
                        }
                        None => {
                            fields.insert(
                                k.clone(),
                                Field {
                                    shape: f.shape.clone(),
                                    required: false,
                                },
                            );
                        }
                    }
                }
                for (k, g) in fb {
                    fields.entry(k.clone()).or_insert(Field {
                        shape: g.shape.clone(),
                        required: false,
                    });
                }
                Shape::Object {
                    fields,
                    open: oa.clone(),
                }
            }
            (a, b) if a == b => a.clone(),
            (a, b) => Shape::union(vec![a.clone(), b.clone()]),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Any => f.write_str("any value"),
            Shape::Null => f.write_str("null"),
            Shape::Bool => f.write_str("a boolean"),
            Shape::Integer => f.write_str("an integer"),
            Shape::Number => f.write_str("a number"),
            Shape::String => f.write_str("a string"),
            Shape::Array(item) => write!(f, "an array of {item}"),
            Shape::Object { fields, .. } if fields.is_empty() => f.write_str("an object"),
            Shape::Object { fields, .. } => write!(
                f,
                "an object {{{}}}",
                fields.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Shape::Union(m) => {
                let parts: Vec<String> = m.iter().map(|s| s.to_string()).collect();
                f.write_str(&parts.join(" or "))
            }
        }
    }
}

fn resolve_ref<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let pointer = r.strip_prefix('#')?;
    root.pointer(pointer)
}

fn convert(s: &Value, root: &Value, depth: usize) -> Shape {
    if depth > MAX_SCHEMA_DEPTH {
        return Shape::Any;
    }
    let Some(obj) = s.as_object() else {
        return Shape::Any;
    };
    if let Some(Value::String(r)) = obj.get("$ref") {
        return resolve_ref(root, r)
            .map(|t| convert(t, root, depth + 1))
            .unwrap_or(Shape::Any);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = obj.get(key) {
            return Shape::union(alts.iter().map(|a| convert(a, root, depth + 1)).collect());
        }
    }
    if let Some(Value::Array(all)) = obj.get("allOf") {
        if all.len() == 1 {
            return convert(&all[0], root, depth + 1);
        }
        return Shape::Any;
    }
    if let Some(c) = obj.get("const") {
        return Shape::of_value(c);
    }
    if let Some(Value::Array(values)) = obj.get("enum") {
        return Shape::union(values.iter().map(Shape::of_value).collect());
    }
    let types: Vec<&str> = match obj.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ if obj.contains_key("properties") => vec!["object"],
        _ => return Shape::Any,
    };
    Shape::union(
        types
            .into_iter()
            .map(|t| match t {
                "null" => Shape::Null,
                "boolean" => Shape::Bool,
                "integer" => Shape::Integer,
                "number" => Shape::Number,
                "string" => Shape::String,
                "array" => Shape::Array(Box::new(
                    obj.get("items")
                        .map(|i| convert(i, root, depth + 1))
                        .unwrap_or(Shape::Any),
                )),
                "object" => {
                    let required: Vec<&str> = obj
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let fields = obj
                        .get("properties")
                        .and_then(Value::as_object)
                        .map(|props| {
                            props
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.clone(),
                                        Field {
                                            shape: convert(v, root, depth + 1),
                                            required: required.contains(&k.as_str()),
                                        },
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let open = match obj.get("additionalProperties") {
                        Some(Value::Bool(false)) => None,
                        Some(Value::Object(o)) => Some(Box::new(convert(
                            &Value::Object(o.clone()),
                            root,
                            depth + 1,
                        ))),
                        // JSON Schema's default is open; schemars writes
                        // `false` only for deny_unknown_fields. Treat the
                        // default as closed when properties are listed, so
                        // a typo in a path is caught.
                        _ if obj.contains_key("properties") => None,
                        _ => Some(Box::new(Shape::Any)),
                    };
                    Shape::Object { fields, open }
                }
                _ => Shape::Any,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> JsonPath {
        JsonPath::parse(s).unwrap()
    }

    #[test]
    fn reads_schemars_style_schemas() {
        let schema = json!({
            "type": "object",
            "properties": {
                "case": {"$ref": "#/$defs/Case"},
                "note": {"type": ["string", "null"]}
            },
            "required": ["case"],
            "$defs": {"Case": {"type": "object", "properties": {
                "id": {"type": "string"}, "n": {"type": "integer"}
            }, "required": ["id"]}}
        });
        let s = Shape::from_schema(&schema);
        assert_eq!(s.resolve(&p("$.case.id")).unwrap(), (Shape::String, true));
        assert!(!s.resolve(&p("$.case.n")).unwrap().1);
        let err = s.resolve(&p("$.case.idd")).unwrap_err();
        assert!(err.contains("no field \"idd\""), "{err}");
        assert!(err.contains("id, n"), "{err}");
    }

    #[test]
    fn accepts_checks_kinds_and_required_fields() {
        assert!(Shape::Number.accepts(&Shape::Integer));
        assert!(!Shape::String.accepts(&Shape::Integer));
        let want = Shape::object().with_field("a", Shape::String, true);
        let have = Shape::object().with_field("a", Shape::String, false);
        assert!(!want.accepts(&have));
        assert!(want.accepts(&want));
    }

    #[test]
    fn merge_keeps_only_common_fields_required() {
        let a = Shape::object()
            .with_field("x", Shape::String, true)
            .with_field("y", Shape::Bool, true);
        let b = Shape::object().with_field("x", Shape::String, true);
        let m = Shape::merge(&a, &b);
        assert!(m.resolve(&p("$.x")).unwrap().1);
        assert!(!m.resolve(&p("$.y")).unwrap().1);
    }
}
