//! The memory-capture script sent to the suspect host, and the result it
//! reports.
//!
//! The script (`scripts/capture.sh`) is a template: [`render`] fills in
//! presigned URLs and hashes, refusing anything that could break out of
//! the data blocks they are written into. It never contains credentials;
//! callers check that (see the integration tests).
//!
//! The plan (every presigned URL the host may use) is stored in the case
//! encrypted ([`encrypt_plan`]) with a one-time key that only the script
//! carries, so that nobody who can read the case's objects during the
//! capture can upload parts or a result in the host's place.

use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const TEMPLATE: &str = include_str!("../scripts/capture.sh");

/// 1 MiB: the script cuts parts in whole MiB.
pub const MIB: u64 = 1 << 20;
/// S3's smallest part (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * MIB;

/// A LiME module for one kernel release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The `uname -r` this module was built for; the script loads the one
    /// whose release matches the host's.
    pub kernel_release: String,
    /// Hex SHA-256 of the `.ko` file; the script refuses a download that
    /// does not match.
    pub sha256: String,
    /// Presigned GET.
    pub url: String,
}

/// A tool fetched by URL and checked by hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    /// Hex SHA-256 of the binary; the script refuses a download that does
    /// not match.
    pub sha256: String,
    /// Presigned GET.
    pub url: String,
}

/// What the host is given, behind the plan URL: every URL it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// LiME modules on offer, one per kernel release (may be empty if AVML
    /// is given).
    pub modules: Vec<Module>,
    /// AVML, the fallback when no module fits or loads; `None` leaves LiME
    /// the only way to capture.
    pub avml: Option<Tool>,
    /// Presigned UploadPart URLs, part 1 first.
    pub part_urls: Vec<String>,
    /// Presigned PUT for the result line.
    pub result_url: String,
}

/// What the script itself carries: ids, the part size, one presigned URL
/// (of the plan) and the plan's key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaptureScript {
    /// The case the capture belongs to, echoed in the result line (letters,
    /// digits and `._+-` only).
    pub case_id: String,
    /// A UUID: the script runs at most once per evidence id on a host.
    pub evidence_id: String,
    /// Bytes per uploaded part: a whole number of MiB, at least
    /// [`MIN_PART_SIZE`].
    pub part_size: u64,
    /// Presigned GET of the encrypted plan.
    pub plan_url: String,
    /// The plan's one-time key (64 hex digits): see [`encrypt_plan`].
    pub plan_key: String,
    /// LiME's `timeout` in milliseconds: 0 (none) unless a test forces
    /// LiME's own default of 1000, which zero-fills ranges.
    pub lime_timeout_ms: u32,
    /// Parts uploaded at once (the script lowers it to what memory holds).
    pub upload_slots: u32,
}

impl std::fmt::Debug for CaptureScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureScript")
            .field("case_id", &self.case_id)
            .field("evidence_id", &self.evidence_id)
            .field("part_size", &self.part_size)
            .field("plan_key", &"(hidden)")
            .finish_non_exhaustive()
    }
}

/// At most this many parts in flight: more rarely helps one host's
/// network, and each holds a part in the host's RAM.
pub const MAX_UPLOAD_SLOTS: u32 = 16;

/// The plan encrypted as `openssl enc -aes-256-cbc -md sha256 -pass`
/// writes it (and every openssl from 1.0 on reads it): `Salted__`, the
/// 8-byte salt, then AES-256-CBC with PKCS#7 padding under the key and IV
/// of OpenSSL's EVP_BytesToKey with SHA-256 and one round:
/// key = SHA-256(password ‖ salt), IV = first 16 bytes of
/// SHA-256(key ‖ password ‖ salt). One round is no weakness here: the
/// password is 256 random bits, not something a person chose. (Written
/// out rather than taken from a crate: it is these two hashes, and what
/// matters is matching the openssl command on the host exactly.)
pub fn encrypt_plan(plan: &[u8], password: &str, salt: [u8; 8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(password.as_bytes());
    h.update(salt);
    let key: [u8; 32] = h.finalize().into();
    let mut h = Sha256::new();
    h.update(key);
    h.update(password.as_bytes());
    h.update(salt);
    let d2: [u8; 32] = h.finalize().into();
    let mut iv = [0u8; 16];
    iv.copy_from_slice(d2.get(..16).unwrap_or(&[0u8; 16]));
    let cipher = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into());
    let mut out = b"Salted__".to_vec();
    out.extend_from_slice(&salt);
    out.extend(cipher.encrypt_padded_vec_mut::<Pkcs7>(plan));
    out
}

/// Why [`render`] or [`render_plan`] refused its input: which value was
/// missing or unsafe to write into the script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build the capture script: {0}")]
pub struct ScriptError(pub String);

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// URLs go into single quotes and into plan lines split on blanks: no
/// whitespace, no quote, nothing outside printable ASCII.
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

/// Renders the plan: one line per item (`module RELEASE SHA256 URL`,
/// `avml SHA256 URL`, `part URL` in part order, `result URL`).
pub fn render_plan(p: &Plan) -> Result<String, ScriptError> {
    let bad = |m: String| Err(ScriptError(m));
    if p.part_urls.is_empty() {
        return bad("no part URL".into());
    }
    if p.modules.is_empty() && p.avml.is_none() {
        return bad("no LiME module and no AVML: nothing to capture with".into());
    }
    let mut lines = Vec::new();
    for m in &p.modules {
        if !safe_word(&m.kernel_release) || !is_sha256(&m.sha256) || !safe_url(&m.url) {
            return bad(format!("module entry for {:?}", m.kernel_release));
        }
        lines.push(format!(
            "module {} {} {}",
            m.kernel_release, m.sha256, m.url
        ));
    }
    if let Some(t) = &p.avml {
        if !is_sha256(&t.sha256) || !safe_url(&t.url) {
            return bad("the AVML entry".into());
        }
        lines.push(format!("avml {} {}", t.sha256, t.url));
    }
    for u in p.part_urls.iter().chain([&p.result_url]) {
        if !safe_url(u) {
            return bad("a presigned URL has characters a script cannot hold safely".into());
        }
    }
    lines.extend(p.part_urls.iter().map(|u| format!("part {u}")));
    lines.push(format!("result {}", p.result_url));
    Ok(lines.join("\n") + "\n")
}

/// Renders the script.
pub fn render(s: &CaptureScript) -> Result<String, ScriptError> {
    let bad = |m: String| Err(ScriptError(m));
    if !safe_word(&s.case_id) {
        return bad(format!("case id {:?}", s.case_id));
    }
    if !safe_word(&s.evidence_id) {
        return bad(format!("evidence id {:?}", s.evidence_id));
    }
    if s.part_size < MIN_PART_SIZE || !s.part_size.is_multiple_of(MIB) {
        return bad(format!(
            "part size {} is not a whole number of MiB of at least 5 MiB",
            s.part_size
        ));
    }
    if !safe_url(&s.plan_url) {
        return bad("the plan URL has characters a script cannot hold safely".into());
    }
    if s.plan_key.len() != 64 || !s.plan_key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("the plan key is not 64 hex digits".into());
    }
    if !(1..=MAX_UPLOAD_SLOTS).contains(&s.upload_slots) {
        return bad(format!(
            "upload slots {} is not between 1 and {MAX_UPLOAD_SLOTS}",
            s.upload_slots
        ));
    }
    let out = TEMPLATE
        .replace("@@CASE@@", &s.case_id)
        .replace("@@EVIDENCE@@", &s.evidence_id)
        .replace("@@PART_SIZE@@", &s.part_size.to_string())
        .replace("@@PLAN_URL@@", &s.plan_url)
        .replace("@@PLAN_KEY@@", &s.plan_key)
        .replace("@@LIME_TIMEOUT@@", &s.lime_timeout_ms.to_string())
        .replace("@@UPLOAD_SLOTS@@", &s.upload_slots.to_string());
    if out.contains("@@") {
        return bad("a placeholder was left unfilled".into());
    }
    Ok(out)
}

/// One uploaded part, as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PartReport {
    /// S3 part number, from 1.
    pub number: i32,
    /// The ETag S3 returned for the upload, without its quotes.
    pub etag: String,
    /// Part length in bytes.
    pub size: u64,
    /// Hex SHA-256 of the part, computed on the host before upload.
    pub sha256: String,
}

/// The script's result line: a capture, or the reason it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum CaptureReport {
    /// The image was captured and every part uploaded.
    Done {
        /// The case id the script was rendered with.
        case_id: String,
        /// The host's `uname -r`.
        kernel_release: String,
        /// `lime` or `avml`: the tool that wrote the image.
        tool: String,
        /// Hex SHA-256 of the tool used (the LiME module or AVML binary).
        tool_sha256: String,
        /// Image length in bytes: the sum of the parts' sizes.
        image_size: u64,
        /// Hex SHA-256 of the whole image stream, hashed as it passed.
        image_sha256: String,
        /// Every uploaded part, in part-number order.
        parts: Vec<PartReport>,
        /// When the script started, UTC, as `YYYY-MM-DDThh:mm:ssZ`.
        started_at: String,
        /// When the capture and every upload had ended, UTC, as `YYYY-MM-DDThh:mm:ssZ`.
        finished_at: String,
        /// What the host says of itself, for the off-host checks (boxed:
        /// the variants stay of a size).
        #[serde(flatten)]
        host: Box<HostFacts>,
    },
    /// The script stopped before a complete capture.
    Failed {
        /// The case id the script was rendered with.
        case_id: String,
        /// Why it stopped, in words (may quote a tool's stderr).
        error: String,
        /// When the script started, UTC, as `YYYY-MM-DDThh:mm:ssZ`.
        started_at: String,
        /// `none`, `integrity`, `confidentiality` or `unknown`.
        #[serde(default)]
        lockdown: Option<String>,
    },
}

/// What the host says of itself besides the image (absent from reports of
/// scripts before these were added).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostFacts {
    /// Kernel lockdown: `none`, `integrity`, `confidentiality`, `unknown`.
    #[serde(default)]
    pub lockdown: Option<String>,
    /// Why AVML was used instead of LiME.
    #[serde(default)]
    pub fallback_reason: Option<String>,
    /// `acquire` (AVML 0.19+) or `legacy`.
    #[serde(default)]
    pub avml_syntax: Option<String>,
    /// The LiME `timeout` (milliseconds) the script was rendered with.
    #[serde(default)]
    pub lime_timeout_ms: Option<u32>,
    /// Parts the host uploaded at once.
    #[serde(default)]
    pub upload_slots: Option<u32>,
    /// `/proc/iomem` as the host read it, base64.
    #[serde(default)]
    pub iomem_base64: Option<String>,
    /// The host's swap devices (`none`): tmpfs pages, the part buffers
    /// among them, can be written to swap on a disk.
    #[serde(default)]
    pub swap: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            modules: vec![Module {
                kernel_release: "6.1.0-13-amd64".into(),
                sha256: "a".repeat(64),
                url: "https://b.s3.amazonaws.com/lime.ko?X-Amz-Expires=900&X-Amz-Signature=abc"
                    .into(),
            }],
            avml: None,
            part_urls: vec!["https://b.s3.amazonaws.com/m?partNumber=1&uploadId=x".into()],
            result_url: "https://b.s3.amazonaws.com/r?X-Amz-Signature=1".into(),
        }
    }

    fn script() -> CaptureScript {
        CaptureScript {
            case_id: "c1".into(),
            evidence_id: "0b8f4a8e-4a38-4c1e-9a43-2d6c1f1f0c11".into(),
            part_size: 8 * MIB,
            plan_url: "https://b.s3.amazonaws.com/plan.txt?X-Amz-Signature=2".into(),
            plan_key: "ab".repeat(32),
            lime_timeout_ms: 0,
            upload_slots: 4,
        }
    }

    #[test]
    fn the_plan_is_encrypted_as_openssl_enc_writes_it() {
        // Known answer from `openssl enc -aes-256-cbc -md sha256 -pass
        // pass:PASSWORD` (OpenSSL 3.0.19) with the salt it chose.
        let salt = [0x6b, 0xd3, 0xc3, 0x16, 0x34, 0x47, 0xdf, 0x15];
        let out = encrypt_plan(b"hello plan\n", &"a".repeat(64), salt);
        assert_eq!(
            hex::encode(&out),
            "53616c7465645f5f6bd3c3163447df159f32b85f2a830aa9cb4118f216ea8960"
        );
    }

    #[test]
    fn renders_every_placeholder() {
        let s = render(&script()).unwrap();
        assert!(!s.contains("@@"));
        assert!(s.contains("part_size=8388608"));
        assert!(s.contains("plan_url='https://b.s3.amazonaws.com/plan.txt?X-Amz-Signature=2'"));
        assert!(s.contains(&format!("plan_key='{}'", "ab".repeat(32))));
        assert!(s.contains("lime_timeout=0\n"));
        let p = render_plan(&plan()).unwrap();
        assert!(p.starts_with("module 6.1.0-13-amd64 aaaa"));
        assert!(p.contains("\npart https://b.s3.amazonaws.com/m?partNumber=1&uploadId=x\n"));
        assert!(p.ends_with("result https://b.s3.amazonaws.com/r?X-Amz-Signature=1\n"));
    }

    #[test]
    fn refuses_values_that_could_escape_their_place() {
        let mut p = plan();
        p.part_urls = vec!["https://x/a\nresult https://evil/".into()];
        assert!(render_plan(&p).is_err());
        let mut p = plan();
        p.modules[0].kernel_release = "6.1;reboot".into();
        assert!(render_plan(&p).is_err());
        let mut s = script();
        s.plan_url = "https://x/'; rm -rf / #".into();
        assert!(render(&s).is_err());
        let mut s = script();
        s.evidence_id = "../x".into();
        assert!(render(&s).is_err());
        let mut s = script();
        s.part_size = MIB;
        assert!(render(&s).is_err());
        let mut s = script();
        s.plan_key = "'; reboot; '".into();
        assert!(render(&s).is_err());
        let mut s = script();
        s.upload_slots = 0;
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
