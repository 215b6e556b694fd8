//! Signatures of injection in a request URL, matched after URL decoding:
//! SQL injection and cross-site scripting. One Aho-Corasick pass (ASCII
//! case-insensitive) over the decoded URL finds every signature at once.

use std::borrow::Cow;

use aho_corasick::AhoCorasick;

/// What a request looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Injection {
    /// SQL injection.
    Sql,
    /// Cross-site scripting.
    Xss,
}

/// SQL injection signatures (after decoding, whitespace collapsed).
pub const SQL: &[&str] = &[
    "' or '",
    "' or 1=1",
    "\" or \"",
    " or 1=1",
    "union select",
    "union all select",
    "sleep(",
    "benchmark(",
    "waitfor delay",
    "information_schema",
    "xp_cmdshell",
    "; drop table",
    ";drop table",
    "'--",
    "' --",
    "';",
    "@@version",
    "load_file(",
    "into outfile",
];

/// Cross-site scripting signatures.
pub const XSS: &[&str] = &[
    "<script",
    "javascript:",
    "onerror=",
    "onload=",
    "onmouseover=",
    "<svg",
    "<iframe",
    "document.cookie",
    "alert(",
    "<img src=",
];

/// The matcher.
#[derive(Debug, Clone)]
pub struct Detector {
    matcher: AhoCorasick,
}

impl Default for Detector {
    fn default() -> Self {
        Detector::new()
    }
}

/// Percent-decodes (twice, for double encoding), turns `+` into a space,
/// drops `/**/` comments and collapses whitespace; borrows when there is
/// nothing to change.
pub fn normalize(url: &str) -> Cow<'_, str> {
    if !url
        .bytes()
        .any(|b| matches!(b, b'%' | b'+' | b'/' | b' ' | b'\t'))
    {
        return Cow::Borrowed(url);
    }
    let mut s: Cow<'_, str> = Cow::Borrowed(url);
    for _ in 0..2 {
        if !s.contains('%') {
            break;
        }
        let decoded = percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned();
        s = Cow::Owned(decoded);
    }
    if s.contains('+') || s.contains("/*") || s.contains("  ") || s.contains('\t') {
        let replaced = s.replace('+', " ").replace("/**/", " ");
        let mut out = String::with_capacity(replaced.len());
        let mut space = false;
        for c in replaced.chars() {
            if c.is_whitespace() {
                if !space {
                    out.push(' ');
                }
                space = true;
            } else {
                out.push(c);
                space = false;
            }
        }
        s = Cow::Owned(out);
    }
    s
}

impl Detector {
    /// The signatures of [`SQL`] and [`XSS`].
    pub fn new() -> Detector {
        // A DFA: the fastest kind on the short haystacks a URL makes.
        let matcher = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(SQL.iter().chain(XSS))
            // A fixed, small list of literal patterns always builds.
            .unwrap_or_else(|_| AhoCorasick::new(["\u{0}never"]).expect("one literal builds"));
        Detector { matcher }
    }

    /// What a URL's signatures say, SQL injection first.
    pub fn scan(&self, url: &str) -> Vec<Injection> {
        let text = normalize(url);
        let mut found = Vec::new();
        // Non-overlapping matches: a signature of one kind hidden inside a
        // match of the other kind is not reported (the first still is).
        for m in self.matcher.find_iter(text.as_ref()) {
            let kind = if m.pattern().as_usize() < SQL.len() {
                Injection::Sql
            } else {
                Injection::Xss
            };
            if !found.contains(&kind) {
                found.push(kind);
            }
            if found.len() == 2 {
                break;
            }
        }
        found.sort();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_injection_after_decoding() {
        let d = Detector::new();
        for (url, want) in [
            ("http://a:80/?id=1' OR '1'='1", vec![Injection::Sql]),
            (
                "http://a:80/?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
                vec![Injection::Sql],
            ),
            (
                "http://a:80/?id=1%2527%2520or%25201=1",
                vec![Injection::Sql],
            ),
            (
                "http://a:80/?id=1/**/UNION/**/SELECT/**/1",
                vec![Injection::Sql],
            ),
            (
                "http://a:80/?id=1;SELECT+pg_sleep(5)--",
                vec![Injection::Sql],
            ),
            (
                "http://a:80/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
                vec![Injection::Xss],
            ),
            (
                "http://a:80/?q=<img src=x onerror=alert(1)>",
                vec![Injection::Xss],
            ),
            (
                "http://a:80/?q=' or '1'='1<script>",
                vec![Injection::Sql, Injection::Xss],
            ),
            ("http://a:80/products?id=42&sort=price", vec![]),
            ("http://a:80/blog/union-selection-of-songs", vec![]),
            ("http://a:80/?q=100%", vec![]),
        ] {
            assert_eq!(d.scan(url), want, "{url}");
        }
    }
}
