//! JSONPath as Step Functions evaluates it, and reference paths.
//!
//! Step Functions evaluates paths with Jayway JsonPath semantics: a
//! *definite* path (only names and single indexes) yields one value and
//! fails when a part is missing; an *indefinite* path (wildcards, slices,
//! unions, deep scan, filters) yields the list of matches, possibly empty.
//! The Rust JSONPath crates implement RFC 9535, which always yields a node
//! list and differs in those results, so the evaluator is written here.

use std::fmt;

use serde_json::{Map, Value};

/// A parsed JSONPath.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonPath {
    /// `$$` (the context object) rather than `$`.
    pub context: bool,
    /// What follows the `$` or `$$`, in order (empty for the root itself).
    pub segments: Vec<Segment>,
    text: String,
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Segment {
    /// `.name` or `['name']`.
    Field(String),
    /// `[n]`; negative counts from the end.
    Index(i64),
    /// `.*` or `[*]`.
    Wildcard,
    /// `['a','b']`.
    Fields(Vec<String>),
    /// `[0,2]`.
    Indexes(Vec<i64>),
    /// `[start:end:step]`.
    Slice {
        /// The first index (negative: from the end); `None` for 0.
        start: Option<i64>,
        /// The index to stop before (negative: from the end); `None` for the
        /// length.
        end: Option<i64>,
        /// The stride; `None` for 1. A step of 0 or below selects nothing.
        step: Option<i64>,
    },
    /// `..` followed by what it looks for, at any depth.
    Descendant(Box<Segment>),
    /// `[?(...)]`.
    Filter(FilterExpr),
}

impl Segment {
    fn is_definite(&self) -> bool {
        matches!(self, Segment::Field(_) | Segment::Index(_))
    }
}

/// A filter expression inside `[?( )]`.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterExpr {
    /// `a || b`.
    Or(Box<FilterExpr>, Box<FilterExpr>),
    /// `a && b`.
    And(Box<FilterExpr>, Box<FilterExpr>),
    /// `!a`.
    Not(Box<FilterExpr>),
    /// `@.a.b` alone: true when the path exists (and is not `false`/null
    /// for booleans, as Jayway does for existence checks on values).
    Exists(FilterOperand),
    /// `left op right`: false when either side selects nothing. Numbers compare
    /// by value and strings by code point; other values only with `==` and
    /// `!=`.
    Compare(FilterOperand, CompareOp, FilterOperand),
}

/// One side of a filter comparison; a path gives the first value it selects.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterOperand {
    /// `@...`: relative to the current item.
    Current(Vec<Segment>),
    /// `$...`: relative to the document root.
    Root(Vec<Segment>),
    /// A quoted string, a number, `true`, `false` or `null`.
    Literal(Value),
}

/// A filter's comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`: equal.
    Eq,
    /// `!=`: not equal (true for values of different kinds).
    Ne,
    /// `<`: less than.
    Lt,
    /// `<=`: less than or equal.
    Le,
    /// `>`: greater than.
    Gt,
    /// `>=`: greater than or equal.
    Ge,
}

/// A path that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSONPath {path:?}: {reason} (at character {offset})")]
pub struct PathSyntaxError {
    /// The whole text that was parsed.
    pub path: String,
    /// What is wrong.
    pub reason: String,
    /// The character (counted from 0) where parsing stopped; 0 when the path as
    /// a whole is at fault.
    pub offset: usize,
}

/// A path that could not be applied to a document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A definite path named something the document does not have.
    #[error("path {path} not found in the input")]
    NotFound {
        /// The path as written.
        path: String,
    },
    /// A reference path could not be written into the document.
    #[error("unable to apply {path} to the input: {reason}")]
    CannotSet {
        /// The reference path as written.
        path: String,
        /// Why: a field of something not an object, an index of something
        /// not an array, or an index out of bounds.
        reason: String,
    },
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonPath {
    /// Parses a JSONPath (`$...` or `$$...`).
    pub fn parse(text: &str) -> Result<JsonPath, PathSyntaxError> {
        let mut p = Parser {
            src: text,
            chars: text.char_indices().collect(),
            pos: 0,
            depth: 0,
        };
        let path = p.path()?;
        if p.pos < p.chars.len() {
            return Err(p.err("unexpected character"));
        }
        Ok(path)
    }

    /// Parses a *reference path*: only names and single indexes, as
    /// `ResultPath` and other write targets require.
    pub fn parse_reference(text: &str) -> Result<JsonPath, PathSyntaxError> {
        let path = JsonPath::parse(text)?;
        if path.context {
            return Err(PathSyntaxError {
                path: text.to_string(),
                reason: "a reference path cannot point into the context object ($$)".into(),
                offset: 0,
            });
        }
        if let Some(bad) = path.segments.iter().position(|s| !s.is_definite()) {
            return Err(PathSyntaxError {
                path: text.to_string(),
                reason: format!(
                    "a reference path may only use names and single indexes (part {} is not one)",
                    bad + 1
                ),
                offset: 0,
            });
        }
        Ok(path)
    }

    /// The path as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the path selects at most one value.
    pub fn is_definite(&self) -> bool {
        self.segments.iter().all(Segment::is_definite)
    }

    /// Evaluates the path: a definite path gives the value (or
    /// [`PathError::NotFound`]); an indefinite one gives an array of the
    /// matches.
    pub fn select(&self, root: &Value) -> Result<Value, PathError> {
        if self.is_definite() {
            let mut cur = root;
            for seg in &self.segments {
                let next = match seg {
                    Segment::Field(name) => cur.as_object().and_then(|o| o.get(name)),
                    Segment::Index(i) => cur.as_array().and_then(|a| index(a, *i)),
                    _ => None,
                };
                cur = next.ok_or_else(|| PathError::NotFound {
                    path: self.text.clone(),
                })?;
            }
            Ok(cur.clone())
        } else {
            let mut nodes: Vec<&Value> = vec![root];
            for seg in &self.segments {
                let mut out = Vec::new();
                for n in nodes {
                    apply(seg, n, root, &mut out);
                }
                nodes = out;
            }
            Ok(Value::Array(nodes.into_iter().cloned().collect()))
        }
    }

    /// Writes `value` at this reference path inside `doc`, creating missing
    /// objects on the way (as `ResultPath` does).
    pub fn set(&self, doc: &mut Value, value: Value) -> Result<(), PathError> {
        let cannot = |reason: String| PathError::CannotSet {
            path: self.text.clone(),
            reason,
        };
        let mut cur = doc;
        let n = self.segments.len();
        for (i, seg) in self.segments.iter().enumerate() {
            let last = i + 1 == n;
            match seg {
                Segment::Field(name) => {
                    let obj = match cur {
                        Value::Object(o) => o,
                        other => {
                            return Err(cannot(format!(
                                "cannot set field {name:?} on {}",
                                crate::asl::kind_of(other)
                            )))
                        }
                    };
                    if last {
                        obj.insert(name.clone(), value);
                        return Ok(());
                    }
                    let entry = obj
                        .entry(name.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    cur = entry;
                }
                Segment::Index(idx) => {
                    let arr = match cur {
                        Value::Array(a) => a,
                        other => {
                            return Err(cannot(format!(
                                "cannot index {}",
                                crate::asl::kind_of(other)
                            )))
                        }
                    };
                    let len = arr.len();
                    let pos = resolve_index(*idx, len)
                        .ok_or_else(|| cannot(format!("index {idx} is out of bounds ({len})")))?;
                    let slot = arr
                        .get_mut(pos)
                        .ok_or_else(|| cannot(format!("index {idx} is out of bounds ({len})")))?;
                    if last {
                        *slot = value;
                        return Ok(());
                    }
                    cur = slot;
                }
                _ => return Err(cannot("not a reference path".into())),
            }
        }
        // Zero segments: the path is `$`, replace the whole document.
        *cur = value;
        Ok(())
    }
}

fn resolve_index(i: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let pos = if i < 0 { len + i } else { i };
    if pos < 0 || pos >= len {
        None
    } else {
        usize::try_from(pos).ok()
    }
}

fn index(a: &[Value], i: i64) -> Option<&Value> {
    resolve_index(i, a.len()).and_then(|p| a.get(p))
}

fn apply<'a>(seg: &Segment, node: &'a Value, root: &Value, out: &mut Vec<&'a Value>) {
    match seg {
        Segment::Field(name) => {
            if let Some(v) = node.as_object().and_then(|o| o.get(name)) {
                out.push(v);
            }
        }
        Segment::Index(i) => {
            if let Some(v) = node.as_array().and_then(|a| index(a, *i)) {
                out.push(v);
            }
        }
        Segment::Wildcard => match node {
            Value::Object(o) => out.extend(o.values()),
            Value::Array(a) => out.extend(a.iter()),
            _ => {}
        },
        Segment::Fields(names) => {
            if let Some(o) = node.as_object() {
                out.extend(names.iter().filter_map(|n| o.get(n)));
            }
        }
        Segment::Indexes(idx) => {
            if let Some(a) = node.as_array() {
                out.extend(idx.iter().filter_map(|i| index(a, *i)));
            }
        }
        Segment::Slice { start, end, step } => {
            if let Some(a) = node.as_array() {
                slice(a, *start, *end, *step, out);
            }
        }
        Segment::Descendant(inner) => descend(inner, node, root, out),
        Segment::Filter(expr) => {
            let items: Vec<&Value> = match node {
                Value::Array(a) => a.iter().collect(),
                Value::Object(o) => o.values().collect(),
                _ => Vec::new(),
            };
            out.extend(
                items
                    .into_iter()
                    .filter(|item| eval_filter(expr, item, root)),
            );
        }
    }
}

fn slice<'a>(
    a: &'a [Value],
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    out: &mut Vec<&'a Value>,
) {
    let len = i64::try_from(a.len()).unwrap_or(i64::MAX);
    let step = step.unwrap_or(1);
    if step <= 0 {
        return;
    }
    let norm = |v: i64| if v < 0 { (len + v).max(0) } else { v.min(len) };
    let s = start.map(norm).unwrap_or(0);
    let e = end.map(norm).unwrap_or(len);
    let mut i = s;
    while i < e {
        if let Some(v) = usize::try_from(i).ok().and_then(|u| a.get(u)) {
            out.push(v);
        }
        i += step;
    }
}

fn descend<'a>(inner: &Segment, node: &'a Value, root: &Value, out: &mut Vec<&'a Value>) {
    apply(inner, node, root, out);
    match node {
        Value::Object(o) => {
            for v in o.values() {
                descend(inner, v, root, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                descend(inner, v, root, out);
            }
        }
        _ => {}
    }
}

fn select_rel<'a>(segs: &[Segment], start: &'a Value, root: &Value) -> Option<&'a Value> {
    let mut nodes = vec![start];
    for seg in segs {
        let mut out = Vec::new();
        for n in nodes {
            apply(seg, n, root, &mut out);
        }
        nodes = out;
    }
    nodes.into_iter().next()
}

fn operand_value(op: &FilterOperand, item: &Value, root: &Value) -> Option<Value> {
    match op {
        FilterOperand::Literal(v) => Some(v.clone()),
        FilterOperand::Current(segs) => select_rel(segs, item, root).cloned(),
        FilterOperand::Root(segs) => select_rel(segs, root, root).cloned(),
    }
}

fn eval_filter(expr: &FilterExpr, item: &Value, root: &Value) -> bool {
    match expr {
        FilterExpr::Or(a, b) => eval_filter(a, item, root) || eval_filter(b, item, root),
        FilterExpr::And(a, b) => eval_filter(a, item, root) && eval_filter(b, item, root),
        FilterExpr::Not(a) => !eval_filter(a, item, root),
        FilterExpr::Exists(op) => operand_value(op, item, root).is_some(),
        FilterExpr::Compare(l, op, r) => {
            let (Some(l), Some(r)) = (operand_value(l, item, root), operand_value(r, item, root))
            else {
                return false;
            };
            compare_values(&l, *op, &r)
        }
    }
}

fn compare_values(l: &Value, op: CompareOp, r: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) => {
            return match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                _ => false,
            }
        }
    };
    match (ord, op) {
        (Some(o), CompareOp::Eq) => o == Ordering::Equal,
        (Some(o), CompareOp::Ne) => o != Ordering::Equal,
        (Some(o), CompareOp::Lt) => o == Ordering::Less,
        (Some(o), CompareOp::Le) => o != Ordering::Greater,
        (Some(o), CompareOp::Gt) => o == Ordering::Greater,
        (Some(o), CompareOp::Ge) => o != Ordering::Less,
        (None, CompareOp::Ne) => true,
        (None, _) => false,
    }
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
    depth: usize,
}

/// Filters nested deeper than this are refused, so hostile input cannot
/// exhaust the stack.
const MAX_FILTER_NESTING: usize = 32;

impl Parser<'_> {
    fn err(&self, reason: &str) -> PathSyntaxError {
        PathSyntaxError {
            path: self.src.to_string(),
            reason: reason.to_string(),
            offset: self.pos,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).map(|(_, c)| *c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), PathSyntaxError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected '{c}'")))
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn path(&mut self) -> Result<JsonPath, PathSyntaxError> {
        if !self.eat('$') {
            return Err(self.err("a path starts with '$'"));
        }
        let context = self.eat('$');
        let segments = self.segments(false)?;
        Ok(JsonPath {
            context,
            segments,
            text: self.src.to_string(),
        })
    }

    /// Segments until the end of input (or, inside a filter, until a
    /// character that cannot continue a path).
    fn segments(&mut self, in_filter: bool) -> Result<Vec<Segment>, PathSyntaxError> {
        let mut segs = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some('.') => {
                    self.pos += 1;
                    if self.eat('.') {
                        let inner = match self.peek() {
                            Some('[') => self.bracket()?,
                            Some('*') => {
                                self.pos += 1;
                                Segment::Wildcard
                            }
                            _ => Segment::Field(self.name(in_filter)?),
                        };
                        segs.push(Segment::Descendant(Box::new(inner)));
                    } else if self.eat('*') {
                        segs.push(Segment::Wildcard);
                    } else {
                        segs.push(Segment::Field(self.name(in_filter)?));
                    }
                }
                Some('[') => segs.push(self.bracket()?),
                Some(_) if in_filter => break,
                Some(_) => return Err(self.err("expected '.' or '['")),
            }
        }
        Ok(segs)
    }

    fn name(&mut self, in_filter: bool) -> Result<String, PathSyntaxError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let stop = c == '.'
                || c == '['
                || c == ']'
                || (in_filter && (c.is_whitespace() || "()=!<>&|,".contains(c)));
            if stop {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected a field name"));
        }
        Ok(self.chars[start..self.pos]
            .iter()
            .map(|(_, c)| *c)
            .collect())
    }

    fn bracket(&mut self) -> Result<Segment, PathSyntaxError> {
        self.expect('[')?;
        self.skip_ws();
        let seg = match self.peek() {
            Some('*') => {
                self.pos += 1;
                Segment::Wildcard
            }
            Some('\'') | Some('"') => {
                let mut names = vec![self.quoted()?];
                self.skip_ws();
                while self.eat(',') {
                    self.skip_ws();
                    names.push(self.quoted()?);
                    self.skip_ws();
                }
                if names.len() == 1 {
                    Segment::Field(names.remove(0))
                } else {
                    Segment::Fields(names)
                }
            }
            Some('?') => {
                self.pos += 1;
                self.expect('(')?;
                let expr = self.filter_or()?;
                self.skip_ws();
                self.expect(')')?;
                Segment::Filter(expr)
            }
            Some(c) if c == ':' || c == '-' || c.is_ascii_digit() => self.index_or_slice()?,
            _ => return Err(self.err("expected '*', a quoted name, an index, a slice or a filter")),
        };
        self.skip_ws();
        self.expect(']')?;
        Ok(seg)
    }

    fn int(&mut self) -> Result<Option<i64>, PathSyntaxError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        let s: String = self.chars[start..self.pos]
            .iter()
            .map(|(_, c)| *c)
            .collect();
        s.parse::<i64>()
            .map(Some)
            .map_err(|_| self.err("expected an integer"))
    }

    fn index_or_slice(&mut self) -> Result<Segment, PathSyntaxError> {
        let first = self.int()?;
        self.skip_ws();
        if self.eat(':') {
            let end = self.int()?;
            self.skip_ws();
            let step = if self.eat(':') { self.int()? } else { None };
            return Ok(Segment::Slice {
                start: first,
                end,
                step,
            });
        }
        let first = first.ok_or_else(|| self.err("expected an index"))?;
        let mut idx = vec![first];
        while self.eat(',') {
            idx.push(self.int()?.ok_or_else(|| self.err("expected an index"))?);
            self.skip_ws();
        }
        Ok(if idx.len() == 1 {
            Segment::Index(first)
        } else {
            Segment::Indexes(idx)
        })
    }

    fn quoted(&mut self) -> Result<String, PathSyntaxError> {
        let quote = self.peek().ok_or_else(|| self.err("expected a quote"))?;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some('\\') => {
                    self.pos += 1;
                    let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    out.push(c);
                    self.pos += 1;
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn filter_or(&mut self) -> Result<FilterExpr, PathSyntaxError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_NESTING {
            return Err(self.err("the filter is nested too deeply"));
        }
        let r = self.filter_or_inner();
        self.depth -= 1;
        r
    }

    fn filter_or_inner(&mut self) -> Result<FilterExpr, PathSyntaxError> {
        let mut left = self.filter_and()?;
        loop {
            self.skip_ws();
            if self.peek() == Some('|') && self.peek_at(1) == Some('|') {
                self.pos += 2;
                let right = self.filter_and()?;
                left = FilterExpr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn filter_and(&mut self) -> Result<FilterExpr, PathSyntaxError> {
        let mut left = self.filter_unary()?;
        loop {
            self.skip_ws();
            if self.peek() == Some('&') && self.peek_at(1) == Some('&') {
                self.pos += 2;
                let right = self.filter_unary()?;
                left = FilterExpr::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn filter_unary(&mut self) -> Result<FilterExpr, PathSyntaxError> {
        self.skip_ws();
        if self.peek() == Some('!') && self.peek_at(1) != Some('=') {
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_FILTER_NESTING {
                return Err(self.err("the filter is nested too deeply"));
            }
            let inner = self.filter_unary();
            self.depth -= 1;
            return Ok(FilterExpr::Not(Box::new(inner?)));
        }
        if self.eat('(') {
            let e = self.filter_or()?;
            self.skip_ws();
            self.expect(')')?;
            return Ok(e);
        }
        let left = self.filter_operand()?;
        self.skip_ws();
        let op = match (self.peek(), self.peek_at(1)) {
            (Some('='), Some('=')) => Some((CompareOp::Eq, 2)),
            (Some('!'), Some('=')) => Some((CompareOp::Ne, 2)),
            (Some('<'), Some('=')) => Some((CompareOp::Le, 2)),
            (Some('>'), Some('=')) => Some((CompareOp::Ge, 2)),
            (Some('<'), _) => Some((CompareOp::Lt, 1)),
            (Some('>'), _) => Some((CompareOp::Gt, 1)),
            _ => None,
        };
        match op {
            Some((op, n)) => {
                self.pos += n;
                let right = self.filter_operand()?;
                Ok(FilterExpr::Compare(left, op, right))
            }
            None => match left {
                FilterOperand::Literal(_) => Err(self.err("a filter needs a comparison")),
                other => Ok(FilterExpr::Exists(other)),
            },
        }
    }

    fn filter_operand(&mut self) -> Result<FilterOperand, PathSyntaxError> {
        self.skip_ws();
        match self.peek() {
            Some('@') => {
                self.pos += 1;
                Ok(FilterOperand::Current(self.segments(true)?))
            }
            Some('$') => {
                self.pos += 1;
                Ok(FilterOperand::Root(self.segments(true)?))
            }
            Some('\'') | Some('"') => Ok(FilterOperand::Literal(Value::String(self.quoted()?))),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E')
                {
                    self.pos += 1;
                }
                let s: String = self.chars[start..self.pos]
                    .iter()
                    .map(|(_, c)| *c)
                    .collect();
                let v: Value =
                    serde_json::from_str(&s).map_err(|_| self.err("expected a number"))?;
                Ok(FilterOperand::Literal(v))
            }
            _ => {
                for (word, v) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    let end = self.pos + word.len();
                    if end <= self.chars.len()
                        && self.chars[self.pos..end]
                            .iter()
                            .map(|(_, c)| *c)
                            .eq(word.chars())
                    {
                        self.pos = end;
                        return Ok(FilterOperand::Literal(v));
                    }
                }
                Err(self.err("expected @, $, a string, a number, true, false or null"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(p: &str, v: &Value) -> Result<Value, PathError> {
        JsonPath::parse(p).unwrap().select(v)
    }

    #[test]
    fn definite_paths_give_the_value() {
        let doc = json!({"a": {"b": [10, 20, {"c": "x"}]}, "odd key": 1});
        assert_eq!(sel("$", &doc).unwrap(), doc);
        assert_eq!(sel("$.a.b[1]", &doc).unwrap(), json!(20));
        assert_eq!(sel("$.a.b[-1].c", &doc).unwrap(), json!("x"));
        assert_eq!(sel("$['odd key']", &doc).unwrap(), json!(1));
        assert!(matches!(
            sel("$.a.missing", &doc),
            Err(PathError::NotFound { .. })
        ));
    }

    #[test]
    fn indefinite_paths_give_a_list() {
        let doc = json!({"items": [{"v": 1}, {"v": 2}, {"w": 3}]});
        assert_eq!(sel("$.items[*].v", &doc).unwrap(), json!([1, 2]));
        assert_eq!(sel("$.items[1:].v", &doc).unwrap(), json!([2]));
        assert_eq!(sel("$..v", &doc).unwrap(), json!([1, 2]));
        assert_eq!(sel("$.nothing[*].v", &doc).unwrap(), json!([]));
        assert_eq!(
            sel("$.items[0,2]", &doc).unwrap(),
            json!([{"v": 1}, {"w": 3}])
        );
    }

    #[test]
    fn filters_select_matching_items() {
        let doc = json!({"xs": [{"n": 1, "s": "a"}, {"n": 5, "s": "b"}, {"s": "c"}]});
        assert_eq!(sel("$.xs[?(@.n > 2)].s", &doc).unwrap(), json!(["b"]));
        assert_eq!(sel("$.xs[?(@.n)].s", &doc).unwrap(), json!(["a", "b"]));
        assert_eq!(
            sel("$.xs[?(@.s == 'a' || @.s == 'c')].s", &doc).unwrap(),
            json!(["a", "c"])
        );
        assert_eq!(sel("$.xs[?(!@.n)].s", &doc).unwrap(), json!(["c"]));
    }

    #[test]
    fn syntax_errors_name_the_offset() {
        for bad in ["a.b", "$.", "$[", "$.a[?(@.x ==)]", "$..", "$.a]", "$['x"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad} should not parse");
        }
        let e = JsonPath::parse("$.a]").unwrap_err();
        assert_eq!(e.offset, 3);
    }

    #[test]
    fn deep_filters_are_refused_not_a_crash() {
        let deep = format!("$.a[?({}@.x{})]", "(".repeat(100_000), ")".repeat(100_000));
        assert!(JsonPath::parse(&deep).is_err());
        let nots = format!("$.a[?({}@.x)]", "!".repeat(100_000));
        assert!(JsonPath::parse(&nots).is_err());
    }

    #[test]
    fn reference_paths_refuse_wildcards() {
        assert!(JsonPath::parse_reference("$.a.b[0]").is_ok());
        assert!(JsonPath::parse_reference("$.a[*]").is_err());
        assert!(JsonPath::parse_reference("$$.Execution.Id").is_err());
    }

    #[test]
    fn set_creates_missing_objects_and_refuses_non_objects() {
        let mut doc = json!({"a": 1});
        JsonPath::parse_reference("$.b.c")
            .unwrap()
            .set(&mut doc, json!(2))
            .unwrap();
        assert_eq!(doc, json!({"a": 1, "b": {"c": 2}}));
        let err = JsonPath::parse_reference("$.a.x")
            .unwrap()
            .set(&mut doc, json!(3));
        assert!(matches!(err, Err(PathError::CannotSet { .. })));
        JsonPath::parse_reference("$")
            .unwrap()
            .set(&mut doc, json!("all"))
            .unwrap();
        assert_eq!(doc, json!("all"));
    }
}
