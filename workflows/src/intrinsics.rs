//! Intrinsic functions (`States.Format(...)` and friends): parser and
//! evaluator.
//!
//! Arguments are string literals in single quotes (with `\'`, `\{`, `\}`
//! and `\\` escapes), numbers, `true`/`false`/`null`, paths into the input
//! (`$...`) or the context object (`$$...`), and nested intrinsic calls.

use crate::context::ContextSource;
use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::path::{JsonPath, PathError};

/// A parsed intrinsic call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The function called.
    pub function: Function,
    /// Its arguments as written, evaluated left to right when the call is.
    pub args: Vec<Arg>,
}

/// One argument of an intrinsic call.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A string, number, `true`, `false` or `null` (a string keeps its `\{` and
    /// `\}` escapes until evaluated).
    Literal(Value),
    /// A path into the input (`$...`) or the context object (`$$...`); the call
    /// fails when a definite one selects nothing.
    Path(JsonPath),
    /// A nested call, evaluated before the call that holds it.
    Call(Box<Call>),
}

macro_rules! functions {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal ),* $(,)?) => {
        /// The intrinsic functions of the States Language.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Function { $( $(#[$doc])* $variant, )* }

        impl Function {
            /// The function's name as written in a definition
            /// (`States.Format`).
            pub const fn name(self) -> &'static str {
                match self { $( Function::$variant => $name, )* }
            }
            fn from_name(name: &str) -> Option<Function> {
                match name { $( $name => Some(Function::$variant), )* _ => None }
            }
        }
    };
}

functions! {
    /// Fills each `{}` of a template string with the next argument.
    Format => "States.Format",
    /// Parses a string as JSON.
    StringToJson => "States.StringToJson",
    /// A value as compact JSON text.
    JsonToString => "States.JsonToString",
    /// An array of its arguments.
    Array => "States.Array",
    /// An array split into chunks of a given size.
    ArrayPartition => "States.ArrayPartition",
    /// Whether an array holds a value.
    ArrayContains => "States.ArrayContains",
    /// The integers from a start to an end (both included) by a step.
    ArrayRange => "States.ArrayRange",
    /// The item of an array at an index.
    ArrayGetItem => "States.ArrayGetItem",
    /// The number of items of an array.
    ArrayLength => "States.ArrayLength",
    /// An array without its repeated values.
    ArrayUnique => "States.ArrayUnique",
    /// A string's UTF-8 bytes in base64.
    Base64Encode => "States.Base64Encode",
    /// Base64 decoded into a (UTF-8) string.
    Base64Decode => "States.Base64Decode",
    /// The hex digest of a value (`MD5`, `SHA-1`, `SHA-256`, `SHA-384` or
    /// `SHA-512`).
    Hash => "States.Hash",
    /// Two objects merged, the second one's keys winning (shallow only).
    JsonMerge => "States.JsonMerge",
    /// A random integer from a start (included) to an end (excluded),
    /// optionally seeded.
    MathRandom => "States.MathRandom",
    /// The sum of two integers.
    MathAdd => "States.MathAdd",
    /// A string split on any of the delimiter's characters.
    StringSplit => "States.StringSplit",
    /// A random version 4 UUID.
    Uuid => "States.UUID",
}

/// Limits AWS documents for intrinsic functions.
const MAX_BASE64_INPUT_CHARS: usize = 10_000;
const MAX_ARRAY_RANGE_ITEMS: usize = 1_000;
const MAX_HASH_INPUT_CHARS: usize = 10_000;

/// An intrinsic call that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid intrinsic function call {text:?}: {reason}")]
pub struct IntrinsicSyntaxError {
    /// The call as written.
    pub text: String,
    /// What is wrong, and at which character (counted from 0).
    pub reason: String,
}

/// A call that failed at run time: becomes `States.IntrinsicFailure` (or,
/// for a missing path, `States.Runtime`) in the executor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntrinsicError {
    /// The function refused its arguments (their number, a type, a value out of
    /// range); the message says why.
    #[error("{0}")]
    Failure(String),
    /// A path argument selected nothing.
    #[error(transparent)]
    Path(#[from] PathError),
}

/// True when a `.$` value looks like an intrinsic call rather than a path.
pub fn looks_like_call(s: &str) -> bool {
    s.trim_start().starts_with("States.")
}

impl Call {
    /// Parses one call, such as `States.Format('{}', $.id)`. Fails on an
    /// unknown function, bad syntax, text after the call, or calls nested more
    /// than 32 deep; the number and types of the arguments are checked when the
    /// call is evaluated.
    pub fn parse(text: &str) -> Result<Call, IntrinsicSyntaxError> {
        let mut p = P {
            text,
            chars: text.chars().collect(),
            pos: 0,
            depth: 0,
        };
        p.ws();
        let call = p.call()?;
        p.ws();
        if p.pos != p.chars.len() {
            return Err(p.err("unexpected text after the closing parenthesis"));
        }
        Ok(call)
    }

    /// Evaluates the call against the state input (`$`) and the context
    /// object (`$$`).
    pub fn eval<C: ContextSource + ?Sized>(
        &self,
        input: &Value,
        context: &C,
    ) -> Result<Value, IntrinsicError> {
        let mut args = Vec::with_capacity(self.args.len());
        for (i, a) in self.args.iter().enumerate() {
            args.push(match a {
                // Only a Format template gives brace escapes a meaning.
                Arg::Literal(Value::String(s))
                    if !(i == 0 && self.function == Function::Format) =>
                {
                    Value::String(unescape_braces(s))
                }
                Arg::Literal(v) => v.clone(),
                Arg::Path(p) => {
                    if p.context {
                        p.select(context.context())?
                    } else {
                        p.select(input)?
                    }
                }
                Arg::Call(c) => c.eval(input, context)?,
            });
        }
        apply(self.function, args)
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, IntrinsicError> {
    Err(IntrinsicError::Failure(msg.into()))
}

fn arity(f: Function, args: &[Value], min: usize, max: usize) -> Result<(), IntrinsicError> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return fail(format!(
            "{} takes {want} argument(s), {} given",
            f.name(),
            args.len()
        ));
    }
    Ok(())
}

fn as_int(f: Function, v: &Value, what: &str) -> Result<i64, IntrinsicError> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            if let Some(x) = n.as_f64() {
                if x.fract() == 0.0 && x.abs() < 9.0e15 {
                    return Ok(x as i64);
                }
            }
            fail(format!("{}: {what} must be an integer", f.name()))
        }
        _ => fail(format!("{}: {what} must be an integer", f.name())),
    }
}

/// An integer argument of States.MathAdd: AWS rounds a number with a
/// fraction half up (Java's `Math.round`: 3.5 -> 4, -3.5 -> -3, 1.49 -> 1),
/// as recorded against AWS.
fn as_rounded_int(f: Function, v: &Value, what: &str) -> Result<i64, IntrinsicError> {
    if let Value::Number(n) = v {
        if n.as_i64().is_none() {
            if let Some(x) = n.as_f64() {
                let r = (x + 0.5).floor();
                if r.is_finite() && r.abs() < 9.0e15 {
                    return Ok(r as i64);
                }
            }
        }
    }
    as_int(f, v, what)
}

fn as_str<'a>(f: Function, v: &'a Value, what: &str) -> Result<&'a str, IntrinsicError> {
    v.as_str()
        .ok_or_else(|| IntrinsicError::Failure(format!("{}: {what} must be a string", f.name())))
}

fn as_array<'a>(f: Function, v: &'a Value, what: &str) -> Result<&'a Vec<Value>, IntrinsicError> {
    v.as_array()
        .ok_or_else(|| IntrinsicError::Failure(format!("{}: {what} must be an array", f.name())))
}

/// Renders a value the way `States.Format` inserts it.
fn format_arg(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Runs one intrinsic on its evaluated arguments: a dispatch table, one
/// helper per function that needs more than a line.
fn apply(f: Function, args: Vec<Value>) -> Result<Value, IntrinsicError> {
    match f {
        Function::Format => states_format(f, &args),
        Function::StringToJson => string_to_json(f, &args),
        Function::JsonToString => {
            arity(f, &args, 1, 1)?;
            Ok(Value::String(args[0].to_string()))
        }
        Function::Array => Ok(Value::Array(args)),
        Function::ArrayPartition => array_partition(f, &args),
        Function::ArrayContains => {
            arity(f, &args, 2, 2)?;
            let a = as_array(f, &args[0], "the first argument")?;
            Ok(Value::Bool(a.iter().any(|v| json_eq(v, &args[1]))))
        }
        Function::ArrayRange => array_range(f, &args),
        Function::ArrayGetItem => array_get_item(f, &args),
        Function::ArrayLength => {
            arity(f, &args, 1, 1)?;
            Ok(Value::from(as_array(f, &args[0], "the argument")?.len()))
        }
        Function::ArrayUnique => array_unique(f, &args),
        Function::Base64Encode => base64_encode(f, &args),
        Function::Base64Decode => base64_decode(f, &args),
        Function::Hash => hash_of(f, &args),
        Function::JsonMerge => json_merge(f, &args),
        Function::MathRandom => math_random(f, &args),
        Function::MathAdd => math_add(f, &args),
        Function::StringSplit => string_split(f, &args),
        Function::Uuid => {
            arity(f, &args, 0, 0)?;
            Ok(Value::String(uuid::Uuid::new_v4().to_string()))
        }
    }
}

/// `States.Format`: fills each `{}` of the template with the next
/// argument; `\{` and `\}` are literal braces. Placeholders and arguments
/// must match in number.
fn states_format(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    let Some((template, args)) = args.split_first() else {
        return fail("States.Format needs a template");
    };
    let template = as_str(f, template, "the template")?;
    let mut out = String::new();
    let mut rest = args.iter();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.peek(), Some('{') | Some('}')) {
            out.extend(chars.next());
        } else if c == '{' && chars.peek() == Some(&'}') {
            chars.next();
            match rest.next() {
                Some(v) => out.push_str(&format_arg(v)),
                None => return fail("States.Format: the template has more {} than arguments"),
            }
        } else {
            out.push(c);
        }
    }
    if rest.next().is_some() {
        return fail("States.Format: more arguments than {} in the template");
    }
    Ok(Value::String(out))
}

/// `States.StringToJson`: parses its one string argument as JSON.
fn string_to_json(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 1, 1)?;
    let s = as_str(f, &args[0], "the argument")?;
    serde_json::from_str(s).or_else(|e| fail(format!("States.StringToJson: not valid JSON: {e}")))
}

/// `States.ArrayPartition`: splits an array into chunks of a positive
/// size, the last one possibly shorter.
fn array_partition(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 2, 2)?;
    let a = as_array(f, &args[0], "the first argument")?;
    let size = as_int(f, &args[1], "the chunk size")?;
    if size <= 0 {
        return fail("States.ArrayPartition: the chunk size must be positive");
    }
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    Ok(Value::Array(
        a.chunks(size).map(|c| Value::Array(c.to_vec())).collect(),
    ))
}

/// `States.ArrayRange`: the integers from start to end inclusive, by a
/// non-zero step, at most `MAX_ARRAY_RANGE_ITEMS` of them.
fn array_range(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 3, 3)?;
    let start = as_int(f, &args[0], "the start")?;
    let end = as_int(f, &args[1], "the end")?;
    let step = as_int(f, &args[2], "the step")?;
    if step == 0 {
        return fail("States.ArrayRange: the step must not be 0");
    }
    let mut out = Vec::new();
    let mut i = start;
    while (step > 0 && i <= end) || (step < 0 && i >= end) {
        out.push(Value::from(i));
        if out.len() > MAX_ARRAY_RANGE_ITEMS {
            return fail(format!(
                "States.ArrayRange: more than {MAX_ARRAY_RANGE_ITEMS} items"
            ));
        }
        i += step;
    }
    Ok(Value::Array(out))
}

/// `States.ArrayGetItem`: the item at a zero-based index, an error when
/// the index is negative or past the end.
fn array_get_item(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 2, 2)?;
    let a = as_array(f, &args[0], "the first argument")?;
    let i = as_int(f, &args[1], "the index")?;
    usize::try_from(i)
        .ok()
        .and_then(|i| a.get(i))
        .cloned()
        .ok_or_else(|| {
            IntrinsicError::Failure(format!("States.ArrayGetItem: index {i} is out of bounds"))
        })
}

/// `States.ArrayUnique`: the array without repeated values, first
/// occurrences kept in order.
fn array_unique(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 1, 1)?;
    let a = as_array(f, &args[0], "the argument")?;
    let mut out: Vec<Value> = Vec::new();
    for v in a {
        if !out.iter().any(|o| json_eq(o, v)) {
            out.push(v.clone());
        }
    }
    Ok(Value::Array(out))
}

/// `States.Base64Encode`: the standard base64 of a string's UTF-8 bytes.
fn base64_encode(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 1, 1)?;
    let s = as_str(f, &args[0], "the argument")?;
    if s.chars().count() > MAX_BASE64_INPUT_CHARS {
        return fail("States.Base64Encode: the input is over 10000 characters");
    }
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes()),
    ))
}

/// `States.Base64Decode`: decodes standard base64 that must hold UTF-8.
fn base64_decode(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 1, 1)?;
    let s = as_str(f, &args[0], "the argument")?;
    if s.chars().count() > MAX_BASE64_INPUT_CHARS {
        return fail("States.Base64Decode: the input is over 10000 characters");
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|e| fail(format!("States.Base64Decode: {e}")))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .or_else(|_| fail("States.Base64Decode: the decoded data is not UTF-8"))
}

/// `States.Hash`: the hex digest of a value (a string as is, anything else
/// as compact JSON) under a named algorithm.
fn hash_of(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 2, 2)?;
    let data = match &args[0] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if data.chars().count() > MAX_HASH_INPUT_CHARS {
        return fail("States.Hash: the input is over 10000 characters");
    }
    let algo = as_str(f, &args[1], "the algorithm")?;
    Ok(Value::String(hash(algo, data.as_bytes())?))
}

/// `States.JsonMerge`: a shallow merge of two objects, the second one's
/// keys winning; deep merge (`true`) is refused.
fn json_merge(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 3, 3)?;
    let (Value::Object(a), Value::Object(b)) = (&args[0], &args[1]) else {
        return fail("States.JsonMerge: the first two arguments must be objects");
    };
    if args[2] != Value::Bool(false) {
        return fail("States.JsonMerge: only shallow merge (false) is supported");
    }
    let mut out: Map<String, Value> = a.clone();
    for (k, v) in b {
        out.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(out))
}

/// `States.MathRandom`: an integer in `start..end`, reproducible when a
/// seed is given.
fn math_random(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    use rand::{Rng, SeedableRng};
    arity(f, args, 2, 3)?;
    let start = as_int(f, &args[0], "the start")?;
    let end = as_int(f, &args[1], "the end")?;
    if start >= end {
        return fail("States.MathRandom: the start must be below the end");
    }
    let n = if let Some(seed) = args.get(2) {
        let seed = as_int(f, seed, "the seed")?;
        rand::rngs::StdRng::seed_from_u64(seed as u64).random_range(start..end)
    } else {
        rand::rng().random_range(start..end)
    };
    Ok(Value::from(n))
}

/// `States.MathAdd`: the sum of two integers (fractions rounded as AWS
/// does), an error on overflow.
fn math_add(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 2, 2)?;
    let a = as_rounded_int(f, &args[0], "the first argument")?;
    let b = as_rounded_int(f, &args[1], "the second argument")?;
    a.checked_add(b)
        .map(Value::from)
        .ok_or_else(|| IntrinsicError::Failure("States.MathAdd: overflow".into()))
}

/// `States.StringSplit`: splits on any character of the delimiter,
/// dropping empty parts; an empty delimiter leaves the string whole.
fn string_split(f: Function, args: &[Value]) -> Result<Value, IntrinsicError> {
    arity(f, args, 2, 2)?;
    let s = as_str(f, &args[0], "the first argument")?;
    let d = as_str(f, &args[1], "the delimiter")?;
    let parts: Vec<Value> = if d.is_empty() {
        vec![Value::String(s.to_string())]
    } else {
        s.split(|c| d.contains(c))
            .filter(|p| !p.is_empty())
            .map(|p| Value::String(p.to_string()))
            .collect()
    };
    Ok(Value::Array(parts))
}

fn hash(algo: &str, data: &[u8]) -> Result<String, IntrinsicError> {
    use sha2::Digest;
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    Ok(match algo {
        "MD5" => hex(&md5::Md5::digest(data)),
        "SHA-1" => hex(&sha1::Sha1::digest(data)),
        "SHA-256" => hex(&sha2::Sha256::digest(data)),
        "SHA-384" => hex(&sha2::Sha384::digest(data)),
        "SHA-512" => hex(&sha2::Sha512::digest(data)),
        other => {
            return fail(format!(
                "States.Hash: unknown algorithm {other:?} (MD5, SHA-1, SHA-256, SHA-384, SHA-512)"
            ))
        }
    })
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn num_eq(x: &Number, y: &Number) -> bool {
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => a == b,
        _ => x.as_f64() == y.as_f64(),
    }
}

struct P<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

/// Nested calls deeper than this are refused: real definitions nest a few
/// levels, and the parser must not exhaust the stack on hostile input.
const MAX_NESTING: usize = 32;

impl P<'_> {
    fn err(&self, reason: &str) -> IntrinsicSyntaxError {
        IntrinsicSyntaxError {
            text: self.text.to_string(),
            reason: format!("{reason} (at character {})", self.pos),
        }
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn call(&mut self) -> Result<Call, IntrinsicSyntaxError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err(&format!("calls are nested more than {MAX_NESTING} deep")));
        }
        let call = self.call_inner();
        self.depth -= 1;
        call
    }

    fn call_inner(&mut self) -> Result<Call, IntrinsicSyntaxError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        let function = Function::from_name(&name).ok_or_else(|| {
            self.pos = start;
            self.err(&format!("unknown intrinsic function {name:?}"))
        })?;
        self.ws();
        if !self.eat('(') {
            return Err(self.err("expected '('"));
        }
        let mut args = Vec::new();
        self.ws();
        if !self.eat(')') {
            loop {
                self.ws();
                args.push(self.arg()?);
                self.ws();
                if self.eat(')') {
                    break;
                }
                if !self.eat(',') {
                    return Err(self.err("expected ',' or ')'"));
                }
            }
        }
        Ok(Call { function, args })
    }

    fn arg(&mut self) -> Result<Arg, IntrinsicSyntaxError> {
        match self.peek() {
            Some('\'') => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err("unterminated string")),
                        Some('\\') => {
                            self.pos += 1;
                            let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                            // `\{` and `\}` keep their backslash so that
                            // States.Format can tell a literal brace from a
                            // placeholder; `\'` and `\\` stand for the
                            // character itself.
                            if c == '{' || c == '}' {
                                s.push('\\');
                            }
                            s.push(c);
                            self.pos += 1;
                        }
                        Some('\'') => {
                            self.pos += 1;
                            break;
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Arg::Literal(Value::String(s)))
            }
            Some('$') => {
                let start = self.pos;
                let mut depth = 0i32;
                let mut quote: Option<char> = None;
                while let Some(c) = self.peek() {
                    match quote {
                        Some(q) => {
                            if c == q {
                                quote = None;
                            }
                        }
                        None => match c {
                            '\'' | '"' => quote = Some(c),
                            '[' | '(' => depth += 1,
                            ']' => depth -= 1,
                            ')' if depth == 0 => break,
                            ')' => depth -= 1,
                            ',' if depth == 0 => break,
                            c if c.is_whitespace() && depth == 0 => break,
                            _ => {}
                        },
                    }
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                let path = JsonPath::parse(&text).map_err(|e| self.err(&e.to_string()))?;
                Ok(Arg::Path(path))
            }
            Some('S') => Ok(Arg::Call(Box::new(self.call()?))),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || ".eE+-".contains(c))
                {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                let v: Value = serde_json::from_str(&text)
                    .map_err(|_| self.err(&format!("invalid number {text:?}")))?;
                Ok(Arg::Literal(v))
            }
            _ => {
                for (word, v) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    let end = self.pos + word.len();
                    if end <= self.chars.len()
                        && self.chars[self.pos..end].iter().copied().eq(word.chars())
                    {
                        self.pos = end;
                        return Ok(Arg::Literal(v));
                    }
                }
                Err(self.err("expected a string, number, boolean, null, path or intrinsic call"))
            }
        }
    }
}

/// Removes the escape kept in front of literal braces once formatting is
/// done (see [`P::arg`]).
pub(crate) fn unescape_braces(s: &str) -> String {
    s.replace("\\{", "{").replace("\\}", "}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(expr: &str, input: Value) -> Result<Value, IntrinsicError> {
        Call::parse(expr).unwrap().eval(&input, &json!({}))
    }

    #[test]
    fn math_add_and_format() {
        assert_eq!(
            run("States.MathAdd($.n, 1)", json!({"n": 41})).unwrap(),
            json!(42)
        );
        assert_eq!(
            run(
                "States.Format('i-{} in {}', $.id, 'vpc')",
                json!({"id": "0abc"})
            )
            .unwrap(),
            json!("i-0abc in vpc")
        );
    }

    #[test]
    fn nested_calls_and_arrays() {
        assert_eq!(
            run(
                "States.ArrayLength(States.Array(1, 'a', $.x))",
                json!({"x": [1]})
            )
            .unwrap(),
            json!(3)
        );
        assert_eq!(
            run("States.ArrayRange(1, 9, 3)", json!({})).unwrap(),
            json!([1, 4, 7])
        );
        assert_eq!(
            run("States.ArrayPartition($.a, 2)", json!({"a": [1, 2, 3]})).unwrap(),
            json!([[1, 2], [3]])
        );
    }

    #[test]
    fn hashes_match_known_digests() {
        assert_eq!(
            run("States.Hash('abc', 'SHA-256')", json!({})).unwrap(),
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(
            run("States.Hash('abc', 'MD5')", json!({})).unwrap(),
            json!("900150983cd24fb0d6963f7d28e17f72")
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!("{}1{}", "States.Array(".repeat(20_000), ")".repeat(20_000));
        assert!(Call::parse(&deep).is_err());
    }

    #[test]
    fn bad_calls_are_syntax_errors() {
        for bad in [
            "States.Nope()",
            "States.Format('x'",
            "States.Format('x') y",
            "States.Format($.)",
        ] {
            assert!(Call::parse(bad).is_err(), "{bad}");
        }
    }
}
