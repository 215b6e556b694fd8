//! Evaluation of Choice rules.

use crate::context::ContextSource;
use std::cmp::Ordering;

use serde_json::Value;

use crate::asl::{ChoiceRule, Comparison, Condition, Operand};
use crate::path::JsonPath;
use crate::time::parse_timestamp;

/// A Choice rule that could not be evaluated (a path that matches nothing
/// where a value is needed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChoiceError(pub String);

/// The `Next` of the first rule that holds.
pub fn first_match<'a, C: ContextSource + ?Sized>(
    rules: &'a [ChoiceRule],
    input: &Value,
    context: &C,
) -> Result<Option<&'a str>, ChoiceError> {
    for rule in rules {
        if holds(rule, input, context)? {
            return Ok(rule.next.as_deref());
        }
    }
    Ok(None)
}

fn lookup<C: ContextSource + ?Sized>(
    path: &str,
    input: &Value,
    context: &C,
) -> Result<Option<Value>, ChoiceError> {
    let p = JsonPath::parse(path).map_err(|e| ChoiceError(e.to_string()))?;
    let root = if p.context { context.context() } else { input };
    Ok(p.select(root).ok())
}

/// Whether one Choice rule holds (`And`, `Or` and `Not` evaluated left to
/// right, stopping once decided). Fails when a path does not parse, or when
/// `Variable` (or a `...Path` operand) selects nothing, except for `IsPresent`.
pub fn holds<C: ContextSource + ?Sized>(
    rule: &ChoiceRule,
    input: &Value,
    context: &C,
) -> Result<bool, ChoiceError> {
    match &rule.condition {
        Condition::And(rules) => {
            for r in rules {
                if !holds(r, input, context)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Condition::Or(rules) => {
            for r in rules {
                if holds(r, input, context)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Condition::Not(r) => Ok(!holds(r, input, context)?),
        Condition::Compare {
            variable,
            op,
            operand,
        } => {
            let value = lookup(variable, input, context)?;
            if *op == Comparison::IsPresent {
                let want = operand_bool(operand);
                return Ok(value.is_some() == want);
            }
            let Some(value) = value else {
                return Err(ChoiceError(format!(
                    "Invalid path '{variable}': The choice state's condition path references an invalid value."
                )));
            };
            let rhs = match operand {
                Operand::Literal(v) => v.clone(),
                Operand::Path(p) => lookup(p, input, context)?.ok_or_else(|| {
                    ChoiceError(format!(
                        "Invalid path '{p}': The choice state's condition path references an invalid value."
                    ))
                })?,
            };
            Ok(compare(*op, &value, &rhs))
        }
    }
}

fn operand_bool(o: &Operand) -> bool {
    match o {
        Operand::Literal(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// Java's `String.compareTo`: by UTF-16 code units, as Step Functions
/// compares strings.
fn cmp_strings(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn cmp_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn ord_test(op: Comparison, o: Ordering) -> bool {
    use Comparison::*;
    match op {
        StringEquals | NumericEquals | TimestampEquals => o == Ordering::Equal,
        StringLessThan | NumericLessThan | TimestampLessThan => o == Ordering::Less,
        StringGreaterThan | NumericGreaterThan | TimestampGreaterThan => o == Ordering::Greater,
        StringLessThanEquals | NumericLessThanEquals | TimestampLessThanEquals => {
            o != Ordering::Greater
        }
        StringGreaterThanEquals | NumericGreaterThanEquals | TimestampGreaterThanEquals => {
            o != Ordering::Less
        }
        _ => false,
    }
}

/// A comparison on values of the wrong type is false, as in Step Functions.
pub fn compare(op: Comparison, value: &Value, rhs: &Value) -> bool {
    use Comparison::*;
    match op {
        StringEquals
        | StringLessThan
        | StringGreaterThan
        | StringLessThanEquals
        | StringGreaterThanEquals => match (value, rhs) {
            (Value::String(a), Value::String(b)) => ord_test(op, cmp_strings(a, b)),
            _ => false,
        },
        NumericEquals
        | NumericLessThan
        | NumericGreaterThan
        | NumericLessThanEquals
        | NumericGreaterThanEquals => match (value, rhs) {
            (Value::Number(a), Value::Number(b)) => {
                cmp_numbers(a, b).is_some_and(|o| ord_test(op, o))
            }
            _ => false,
        },
        BooleanEquals => match (value, rhs) {
            (Value::Bool(a), Value::Bool(b)) => a == b,
            _ => false,
        },
        TimestampEquals
        | TimestampLessThan
        | TimestampGreaterThan
        | TimestampLessThanEquals
        | TimestampGreaterThanEquals => match (value, rhs) {
            (Value::String(a), Value::String(b)) => {
                match (parse_timestamp(a), parse_timestamp(b)) {
                    (Some(x), Some(y)) => ord_test(op, x.cmp(&y)),
                    _ => false,
                }
            }
            _ => false,
        },
        StringMatches => match (value, rhs) {
            (Value::String(a), Value::String(pattern)) => string_matches(a, pattern),
            _ => false,
        },
        IsNull => value.is_null() == (rhs == &Value::Bool(true)),
        IsNumeric => value.is_number() == (rhs == &Value::Bool(true)),
        IsString => value.is_string() == (rhs == &Value::Bool(true)),
        IsBoolean => value.is_boolean() == (rhs == &Value::Bool(true)),
        IsTimestamp => {
            let is = value.as_str().is_some_and(|s| parse_timestamp(s).is_some());
            is == (rhs == &Value::Bool(true))
        }
        IsPresent => true,
    }
}

/// `StringMatches`: `*` matches any run of characters; `\*` is a literal
/// star and `\\` a literal backslash.
pub fn string_matches(s: &str, pattern: &str) -> bool {
    #[derive(PartialEq)]
    enum Tok {
        Star,
        Char(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => toks.push(Tok::Char(n)),
                None => toks.push(Tok::Char('\\')),
            },
            '*' => toks.push(Tok::Star),
            c => toks.push(Tok::Char(c)),
        }
    }
    let text: Vec<char> = s.chars().collect();
    // Classic wildcard matching with backtracking to the last star.
    let (mut t, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            Some(Tok::Star) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_matches_wildcards_and_escapes() {
        assert!(string_matches("log-2024.txt", "log-*.txt"));
        assert!(string_matches("anything", "*"));
        assert!(!string_matches("log.csv", "log-*.txt"));
        assert!(string_matches("a*b", "a\\*b"));
        assert!(!string_matches("axb", "a\\*b"));
        assert!(string_matches("", "*"));
    }

    #[test]
    fn wrong_types_compare_false() {
        assert!(!compare(Comparison::StringEquals, &json!(1), &json!("1")));
        assert!(compare(Comparison::NumericEquals, &json!(1), &json!(1.0)));
        assert!(compare(
            Comparison::TimestampLessThan,
            &json!("2020-01-01T00:00:00Z"),
            &json!("2020-01-01T00:00:01+00:00")
        ));
    }
}
