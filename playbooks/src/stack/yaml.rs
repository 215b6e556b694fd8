//! A small YAML writer for CloudFormation templates: block style, keys in
//! their insertion order, multi-line strings as literal blocks, and
//! comments before chosen keys.
//!
//! Hand-written because the Rust YAML serializers (serde_yaml, now
//! unmaintained, and its forks) write no comments, and the template's
//! comments (why a limit, why a lint warning is kept) are part of what a
//! security team audits. The output is plain YAML 1.1/1.2 that PyYAML,
//! cfn-lint and the SAM translator read; a test reads every template back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// Comments by the dotted path of the key they precede
/// (`Resources.Notify.Properties.ReservedConcurrentExecutions`).
pub type Comments = BTreeMap<String, String>;

/// `value` as a YAML document, with `header` (comment lines) first.
pub fn to_yaml(value: &Value, header: &str, comments: &Comments) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "{}", format!("# {line}").trim_end());
    }
    let mut w = Writer {
        out,
        comments,
        path: Vec::new(),
    };
    match value {
        Value::Object(map) if !map.is_empty() => w.map(map, 0),
        other => {
            let s = w.scalar(other, 0);
            w.out.push_str(&s);
            w.out.push('\n');
        }
    }
    w.out
}

struct Writer<'a> {
    out: String,
    comments: &'a Comments,
    path: Vec<String>,
}

impl Writer<'_> {
    fn comment(&mut self, indent: usize) {
        if let Some(c) = self.comments.get(&self.path.join(".")) {
            for line in c.lines() {
                let _ = writeln!(self.out, "{:indent$}{}", "", format!("# {line}").trim_end());
            }
        }
    }

    fn map(&mut self, map: &serde_json::Map<String, Value>, indent: usize) {
        for (k, v) in map {
            self.path.push(k.clone());
            self.comment(indent);
            let key = key(k);
            let _ = write!(self.out, "{:indent$}{key}:", "");
            self.value(v, indent);
            self.path.pop();
        }
    }

    /// After `key:` or `-`: a scalar on the same line, a collection below.
    fn value(&mut self, v: &Value, indent: usize) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                self.out.push('\n');
                self.map(m, indent + 2);
            }
            Value::Array(a) if !a.is_empty() => {
                self.out.push('\n');
                self.list(a, indent + 2);
            }
            other => {
                let s = self.scalar(other, indent + 2);
                self.out.push(' ');
                self.out.push_str(&s);
                self.out.push('\n');
            }
        }
    }

    fn list(&mut self, items: &[Value], indent: usize) {
        for (i, item) in items.iter().enumerate() {
            self.path.push(i.to_string());
            let _ = write!(self.out, "{:indent$}-", "");
            match item {
                Value::Object(m) if !m.is_empty() => {
                    // The first key on the dash's line, the rest under it.
                    let mut first = true;
                    for (k, v) in m {
                        self.path.push(k.clone());
                        if first {
                            self.out.push(' ');
                            first = false;
                        } else {
                            self.comment(indent + 2);
                            let _ = write!(self.out, "{:w$}", "", w = indent + 2);
                        }
                        let _ = write!(self.out, "{}:", key(k));
                        self.value(v, indent + 2);
                        self.path.pop();
                    }
                }
                other => self.value(other, indent),
            }
            self.path.pop();
        }
    }

    fn scalar(&self, v: &Value, indent: usize) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => string(s, indent),
            Value::Array(_) => "[]".into(),
            Value::Object(_) => "{}".into(),
        }
    }
}

fn key(k: &str) -> String {
    if plain(k) {
        k.to_string()
    } else {
        quoted(k)
    }
}

/// A string as a plain scalar when YAML reads it back as that same string,
/// a literal block when it has several lines, else double-quoted.
fn string(s: &str, indent: usize) -> String {
    if plain(s) {
        return s.to_string();
    }
    let literal = s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.lines().all(|l| !l.ends_with([' ', '\t']))
        && !s.chars().any(|c| c.is_control() && c != '\n');
    if literal {
        let chomp = if s.ends_with('\n') { "" } else { "-" };
        let mut out = format!("|{chomp}");
        for line in s.lines() {
            out.push('\n');
            if !line.is_empty() {
                let _ = write!(out, "{:indent$}{line}", "");
            }
        }
        return out;
    }
    quoted(s)
}

/// JSON's double-quoted string is a YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Plain scalars: letters, digits and `_./-:${}*@+` only, starting with a
/// letter or `/`, never `: `, and no word YAML 1.1 reads as a boolean or
/// null.
fn plain(s: &str) -> bool {
    const RESERVED: [&str; 12] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "none", "nan",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-:${}*@+".contains(c))
        && !s.ends_with(':')
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn writes_block_yaml_with_comments() {
        let v = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {
                "Fn": {
                    "Type": "AWS::Lambda::Function",
                    "Properties": {
                        "Timeout": 30,
                        "Layers": [],
                        "Env": {"A": "yes", "B": "a: b", "C": ""},
                        "Tags": [{"Key": "k", "Value": "v"}, "x"],
                        "Code": "{\n  \"a\": 1\n}"
                    }
                }
            }
        });
        let mut c = Comments::new();
        c.insert("Resources.Fn.Properties.Timeout".into(), "why 30".into());
        let y = to_yaml(&v, "head", &c);
        assert_eq!(
            y,
            "# head\nAWSTemplateFormatVersion: \"2010-09-09\"\nResources:\n  Fn:\n    Type: AWS::Lambda::Function\n    Properties:\n      # why 30\n      Timeout: 30\n      Layers: []\n      Env:\n        A: \"yes\"\n        B: \"a: b\"\n        C: \"\"\n      Tags:\n        - Key: k\n          Value: v\n        - x\n      Code: |-\n        {\n          \"a\": 1\n        }\n"
        );
    }
}
