//! The memory-capture script sent to the suspect host, and the result it
//! reports.
//!
//! The script (`scripts/capture.sh`) is a template: [`render`] fills in
//! presigned URLs and hashes, refusing anything that could break out of
//! the data blocks they are written into. It never contains credentials;
//! callers check that (see the integration tests).

use serde::{Deserialize, Serialize};

const TEMPLATE: &str = include_str!("../scripts/capture.sh");

/// 1 MiB: the script cuts parts in whole MiB.
pub const MIB: u64 = 1 << 20;
/// S3's smallest part (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * MIB;

/// A LiME module for one kernel release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub kernel_release: String,
    pub sha256: String,
    /// Presigned GET.
    pub url: String,
}

/// A tool fetched by URL and checked by hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    pub sha256: String,
    /// Presigned GET.
    pub url: String,
}

/// What the script needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureScript {
    pub case_id: String,
    pub modules: Vec<Module>,
    pub avml: Option<Tool>,
    /// Presigned UploadPart URLs, part 1 first.
    pub part_urls: Vec<String>,
    pub part_size: u64,
    /// Presigned PUT for the result line.
    pub result_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build the capture script: {0}")]
pub struct ScriptError(pub String);

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// URLs go into heredoc data blocks read line by line: no whitespace, no
/// quote, nothing outside printable ASCII.
fn safe_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://"))
        && u.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\'' && b != b'"' && b != b'`' && b != b'\\')
}

fn safe_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// Renders the script.
pub fn render(s: &CaptureScript) -> Result<String, ScriptError> {
    let bad = |m: String| Err(ScriptError(m));
    if !safe_word(&s.case_id) {
        return bad(format!("case id {:?}", s.case_id));
    }
    if s.part_size < MIN_PART_SIZE || !s.part_size.is_multiple_of(MIB) {
        return bad(format!(
            "part size {} is not a whole number of MiB of at least 5 MiB",
            s.part_size
        ));
    }
    if s.part_urls.is_empty() {
        return bad("no part URL".into());
    }
    if s.modules.is_empty() && s.avml.is_none() {
        return bad("no LiME module and no AVML: nothing to capture with".into());
    }
    let mut modules = Vec::new();
    for m in &s.modules {
        if !safe_word(&m.kernel_release) || !is_sha256(&m.sha256) || !safe_url(&m.url) {
            return bad(format!("module entry for {:?}", m.kernel_release));
        }
        modules.push(format!("{} {} {}", m.kernel_release, m.sha256, m.url));
    }
    for u in s.part_urls.iter().chain([&s.result_url]) {
        if !safe_url(u) {
            return bad("a presigned URL has characters a script cannot hold safely".into());
        }
    }
    let (avml_sha, avml_url) = match &s.avml {
        Some(t) if is_sha256(&t.sha256) && safe_url(&t.url) => (t.sha256.clone(), t.url.clone()),
        Some(_) => return bad("the AVML entry".into()),
        None => (String::new(), String::new()),
    };
    let out = TEMPLATE
        .replace("@@CASE@@", &s.case_id)
        .replace("@@PART_SIZE@@", &s.part_size.to_string())
        .replace("@@MODULES@@", &modules.join("\n"))
        .replace("@@PART_URLS@@", &s.part_urls.join("\n"))
        .replace("@@RESULT_URL@@", &s.result_url)
        .replace("@@AVML_SHA256@@", &avml_sha)
        .replace("@@AVML_URL@@", &avml_url);
    if out.contains("@@") {
        return bad("a placeholder was left unfilled".into());
    }
    Ok(out)
}

/// One uploaded part, as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PartReport {
    pub number: i32,
    pub etag: String,
    pub size: u64,
    pub sha256: String,
}

/// The script's result line: a capture, or the reason it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum CaptureReport {
    Done {
        case_id: String,
        kernel_release: String,
        tool: String,
        tool_sha256: String,
        image_size: u64,
        image_sha256: String,
        parts: Vec<PartReport>,
        started_at: String,
        finished_at: String,
    },
    Failed {
        case_id: String,
        error: String,
        started_at: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> CaptureScript {
        CaptureScript {
            case_id: "c1".into(),
            modules: vec![Module {
                kernel_release: "6.1.0-13-amd64".into(),
                sha256: "a".repeat(64),
                url: "https://b.s3.amazonaws.com/lime.ko?X-Amz-Expires=900&X-Amz-Signature=abc"
                    .into(),
            }],
            avml: None,
            part_urls: vec!["https://b.s3.amazonaws.com/m?partNumber=1&uploadId=x".into()],
            part_size: 8 * MIB,
            result_url: "https://b.s3.amazonaws.com/r?X-Amz-Signature=1".into(),
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let s = render(&script()).unwrap();
        assert!(!s.contains("@@"));
        assert!(s.contains("part_size=8388608"));
        assert!(s.contains("6.1.0-13-amd64 aaaa"));
    }

    #[test]
    fn refuses_values_that_could_escape_the_data_blocks() {
        let mut s = script();
        s.part_urls = vec!["https://x/a\nFIREBREAK_PARTS\nrm -rf /".into()];
        assert!(render(&s).is_err());
        let mut s = script();
        s.modules[0].kernel_release = "6.1;reboot".into();
        assert!(render(&s).is_err());
        let mut s = script();
        s.part_size = MIB;
        assert!(render(&s).is_err());
    }

    #[test]
    fn reports_parse() {
        let done: CaptureReport = serde_json::from_str(r#"{"case_id":"c","kernel_release":"k","tool":"lime","tool_sha256":"x","image_size":3,"image_sha256":"y","parts":[{"number":1,"etag":"e","size":3,"sha256":"z"}],"started_at":"s","finished_at":"f"}"#).unwrap();
        assert!(matches!(done, CaptureReport::Done { .. }));
        let failed: CaptureReport =
            serde_json::from_str(r#"{"case_id":"c","error":"no","started_at":"s"}"#).unwrap();
        assert!(matches!(failed, CaptureReport::Failed { .. }));
    }
}
