//! Memory capture over SSM, played end to end: moto's SSM runs nothing, so
//! the test reads the command firebreak sent (its parameters) and runs
//! that exact script as the host would (`host::play`: a private mount
//! namespace, stand-ins for `insmod`/`rmmod`/`uname` that "load LiME" by
//! writing a synthetic image with a Linux banner inside, as LiME writes).
//! The script uploads through the presigned URLs to moto's S3; the wait
//! checks the image off the host; the real Volatility 3 analyses it.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::Utc;
use firebreak_forensics::hash::sha256_bytes;
use firebreak_forensics::lime::lime_header;
use firebreak_steps::{AwsClients, Mode, Registry, StepContext};
use firebreak_workflows::step::StepPayload;
use serde_json::{json, Value};

use crate::support::{decoy, evidence_bucket, firebreak, s, sandbox_url, stderr, stdout, REGION};

pub(crate) const KERNEL: &str = "6.1.0-13-amd64";
pub(crate) const BANNER: &str = "Linux version 6.1.0-13-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)";

const ACCESS_KEY: &str = "AKIAFIREBREAKTEST777";
const SECRET_KEY: &str = "fbSecretKeyThatMustNeverReachTheHost0000";
const SESSION_TOKEN: &str = "FwoFirebreakSessionTokenThatMayOnlyBeInsidePresignedUrls";

pub(crate) fn tools_bucket() -> &'static str {
    "firebreak-tools-it"
}

/// A scratch directory, removed at the end.
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "firebreak-it-{name}-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic filler bytes (xorshift), so images differ by seed.
fn filler(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The ranges (start, bytes) of [`synthetic_image`].
pub(crate) fn synthetic_ranges(range_bytes: usize) -> Vec<(u64, u64)> {
    [0x0010_0000u64, 0x0400_0000, 0x1000_0000]
        .iter()
        .map(|s| (*s, range_bytes as u64))
        .collect()
}

/// A LiME image of the given ranges, random bytes with the banner in the
/// second.
pub(crate) fn image_of(seed: u64, ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (start, size)) in ranges.iter().enumerate() {
        let mut data = filler(seed + i as u64, *size as usize);
        if i == 1 {
            let b = format!("{BANNER}\n\0");
            data[0x40..0x40 + b.len()].copy_from_slice(b.as_bytes());
        }
        out.extend_from_slice(&lime_header(*start, start + size - 1));
        out.extend_from_slice(&data);
    }
    out
}

/// A LiME image of three ranges with the banner in the second.
pub(crate) fn synthetic_image(seed: u64, range_bytes: usize) -> Vec<u8> {
    image_of(seed, &synthetic_ranges(range_bytes))
}

/// SDK configuration with distinctive credentials (and a session token),
/// to look for them in what the host receives.
async fn distinctive_config() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(sandbox_url())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            Some(SESSION_TOKEN.into()),
            None,
            "firebreak-tests",
        ))
        .load()
        .await
}

/// Keeps the body of every SSM request the step sends: moto records any
/// SendCommand as sent to every instance it knows, so what firebreak asked
/// for is read from the request itself.
#[derive(Debug, Clone, Default)]
struct SentRequests(Arc<Mutex<Vec<String>>>);

impl Intercept for SentRequests {
    fn name(&self) -> &'static str {
        "SentRequests"
    }
    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(b) = ctx.request().body().bytes() {
            if let Ok(mut v) = self.0.lock() {
                v.push(String::from_utf8_lossy(b).into_owned());
            }
        }
        Ok(())
    }
}

pub(crate) fn context(config: &SdkConfig) -> StepContext {
    StepContext::new(
        AwsClients::new(config),
        Mode::Live,
        "123456789012".into(),
        REGION.into(),
    )
}

/// Puts a LiME module for [`KERNEL`] and AVML in the tools bucket, once
/// per test run (both real ELF files: `tools add` checks them).
pub(crate) fn tools_ready() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        let lime = crate::host::lime_module();
        let out = firebreak(&[
            "tools",
            "--tools-bucket",
            tools_bucket(),
            "add",
            "lime",
            "--kernel-release",
            KERNEL,
            lime.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let avml = crate::host::avml_binary();
        let out = firebreak(&[
            "tools",
            "--tools-bucket",
            tools_bucket(),
            "add",
            "avml",
            avml.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    });
}

/// The script of an SSM command, as moto kept its parameters.
pub(crate) async fn sent_script(config: &SdkConfig, command_id: &str) -> (String, Value) {
    let ssm = aws_sdk_ssm::Client::new(config);
    let out = ssm
        .list_commands()
        .command_id(command_id)
        .send()
        .await
        .unwrap();
    let c = &out.commands()[0];
    let params = c.parameters().unwrap();
    let script = params["commands"].join("\n");
    let meta = json!({
        "instance_ids": c.instance_ids(),
        "document": c.document_name(),
        "comment": c.comment(),
    });
    (script, meta)
}

/// Removes every `NAME=value` query parameter from the URLs in `text`.
fn without_param(text: &str, name: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(name) {
        out.push_str(&rest[..i]);
        let after = &rest[i + name.len()..];
        let end = after
            .find(|c: char| c == '&' || c.is_whitespace() || c == '\'')
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Asserts that `text` holds no credential: never the secret; the access
/// key id and the session token only where SigV4 query signing puts them
/// (`X-Amz-Credential`, `X-Amz-Security-Token`), which sign nothing else.
fn assert_no_credentials(what: &str, text: &str) {
    let encoded_token = percent(SESSION_TOKEN);
    assert!(!text.contains(SECRET_KEY), "{what} holds the secret key");
    let stripped = without_param(
        &without_param(text, "X-Amz-Security-Token="),
        "X-Amz-Credential=",
    );
    for needle in [ACCESS_KEY, SESSION_TOKEN, encoded_token.as_str()] {
        assert!(
            !stripped.contains(needle),
            "{what} holds {needle} outside a presigned URL's signature parameters"
        );
    }
    for needle in [
        "aws_secret_access_key",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(!text.contains(needle), "{what} mentions {needle}");
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs shellcheck on a script, as CI does.
pub(crate) fn shellcheck(path: &Path) {
    let out = Command::new(std::env::var("SHELLCHECK").unwrap_or_else(|_| "shellcheck".into()))
        .args(["-s", "bash", "-f", "gcc"])
        .arg(path)
        .output()
        .expect("shellcheck runs (scripts/tools installs it)");
    assert!(
        out.status.success(),
        "shellcheck: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn vol() -> String {
    std::env::var("FIREBREAK_VOL").unwrap_or_else(|_| {
        panic!("FIREBREAK_VOL is not set: run the tests with scripts/test, which installs Volatility 3")
    })
}

async fn try_dispatch(ctx: &StepContext, step: &str, input: Value) -> Result<Value, String> {
    Registry::standard()
        .dispatch(
            ctx,
            StepPayload {
                step: step.into(),
                input,
                account: None,
            },
        )
        .await
        .map_err(|e| e.to_string())
}

async fn dispatch(ctx: &StepContext, step: &str, input: Value) -> Value {
    try_dispatch(ctx, step, input)
        .await
        .unwrap_or_else(|e| panic!("{step}: {e}"))
}

/// The plan's one-time key, as the script carries it.
fn plan_secret(script: &str) -> String {
    let at = script
        .find("plan_key='")
        .expect("the script carries the plan key")
        + 10;
    script[at..at + 64].to_string()
}

/// Decrypts a stored plan as the host does, with openssl.
fn decrypt_plan(dir: &Path, sealed: &[u8], secret: &str) -> String {
    let enc = dir.join("plan.enc");
    std::fs::write(&enc, sealed).unwrap();
    let mut child = Command::new("openssl")
        .args([
            "enc",
            "-d",
            "-aes-256-cbc",
            "-md",
            "sha256",
            "-pass",
            "stdin",
            "-in",
        ])
        .arg(&enc)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    writeln!(child.stdin.take().unwrap(), "{secret}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

async fn s3_client() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&crate::support::sdk_config().await)
            .force_path_style(true)
            .build(),
    )
}

async fn object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

async fn legal_hold(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    s3.get_object_legal_hold()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .ok()
        .and_then(|o| o.legal_hold().and_then(|h| h.status()).cloned())
        == Some(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)
}

/// A capture started on the decoy: the step's output and the script sent.
struct Started {
    ctx: StepContext,
    output: Value,
    script: String,
}

/// Starts a capture on the decoy for `case`, with these options (the
/// tools bucket and 5 MiB parts added), and reads the script SSM got.
async fn start(case: &str, options: Value) -> Started {
    tools_ready();
    let instance = s(&decoy(), "instance_id");
    let config = crate::support::sdk_config().await;
    let ctx = context(&config);
    let mut o = json!({"tools_bucket": tools_bucket(), "part_size_mib": 5});
    for (k, v) in options.as_object().unwrap() {
        o[k] = v.clone();
    }
    let output = dispatch(
        &ctx,
        "start_memory_capture",
        json!({
            "case_id": case,
            "instance_id": instance,
            "evidence_bucket": evidence_bucket(),
            "evidence_lock": {"legal_hold": true},
            "options": o,
        }),
    )
    .await;
    let (script, _) = sent_script(&config, output["command_id"].as_str().unwrap()).await;
    Started {
        ctx,
        output,
        script,
    }
}

/// What the playbook does once the capture is started: the poll (until
/// the host has reported), the verification (a container step in AWS)
/// and the read of its result. The first failure is returned.
async fn wait_verify_read(ctx: &StepContext, case: &str, capture: &Value) -> Result<Value, String> {
    let input = json!({
        "case_id": case,
        "evidence_bucket": evidence_bucket(),
        "evidence_lock": {"legal_hold": true},
        "actor": "arn:aws:iam::123456789012:user/it",
        "capture": capture,
    });
    let polled = try_dispatch(ctx, "await_memory_capture", input.clone()).await?;
    assert_eq!(polled["done"], true, "the host has reported: {polled:#}");
    try_dispatch(ctx, "verify_memory_capture", input.clone()).await?;
    try_dispatch(ctx, "read_memory_evidence", input).await
}

impl Started {
    async fn wait(&self, case: &str) -> Result<Value, String> {
        wait_verify_read(&self.ctx, case, &self.output).await
    }
}

#[tokio::test]
async fn sandbox_memory_is_captured_over_ssm_verified_off_the_host_and_analysed() {
    // GIVEN a running decoy, a LiME module for its kernel in the tools
    // bucket, and the image the stand-in insmod will write
    let d = decoy();
    let instance = s(&d, "instance_id");
    let bucket = evidence_bucket();
    let case = format!("it-mem-{}", &instance[2..10]);
    let dir = Scratch::new("memory");
    tools_ready();
    let ranges = synthetic_ranges(4 << 20);
    let image = image_of(7, &ranges);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, &image).unwrap();
    let image_sha = sha256_bytes(&image).sha256;

    // WHEN the capture starts (with credentials that carry a session token)
    let config = distinctive_config().await;
    let sent = SentRequests::default();
    let mut clients = AwsClients::new(&config);
    clients.ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(&config)
            .interceptor(sent.clone())
            .build(),
    );
    let ctx = StepContext::new(clients, Mode::Live, "123456789012".into(), REGION.into());
    let start_input = json!({
        "case_id": case,
        "instance_id": instance,
        "evidence_bucket": bucket,
        "evidence_lock": {"legal_hold": true},
        "options": {"tools_bucket": tools_bucket(), "part_size_mib": 5, "url_expiry_seconds": 900},
    });
    let started = dispatch(&ctx, "start_memory_capture", start_input.clone()).await;
    let command_id = started["command_id"].as_str().unwrap().to_string();

    // THEN one AWS-RunShellScript command went to exactly this instance,
    // and neither the script nor the plan it fetches holds a credential
    let (script, meta) = sent_script(&config, &command_id).await;
    assert_eq!(meta["document"], "AWS-RunShellScript");
    let requests = sent.0.lock().unwrap().clone();
    let sends: Vec<Value> = requests
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter(|v| v.get("DocumentName").is_some())
        .collect();
    assert_eq!(sends.len(), 1, "{requests:#?}");
    assert_eq!(sends[0]["InstanceIds"], json!([instance]));
    assert!(sends[0].get("Targets").is_none(), "{:#}", sends[0]);
    assert_no_credentials("the SendCommand request", &sends[0].to_string());
    assert_no_credentials("the SSM script", &script);
    // AND the plan is stored encrypted: whoever reads the case's objects
    // gets no URL; the key travels only in the command
    let plan_key = started["plan_key"].as_str().unwrap();
    assert!(plan_key.ends_with("plan.enc"), "{plan_key}");
    let s3 = s3_client().await;
    let sealed = object(&s3, bucket, plan_key).await;
    assert!(sealed.starts_with(b"Salted__"), "not openssl's format");
    assert!(
        !String::from_utf8_lossy(&sealed).contains("http"),
        "the stored plan holds URLs in clear"
    );
    let secret = plan_secret(&script);
    assert!(
        !serde_json::to_string(&started).unwrap().contains(&secret),
        "the plan key is in the step's output (journals, Step Functions history)"
    );
    let capture_json = object(
        &s3,
        bucket,
        &started["plan_key"]
            .as_str()
            .unwrap()
            .replace("plan.enc", "capture.json"),
    )
    .await;
    assert!(!String::from_utf8_lossy(&capture_json).contains(&secret));
    let plan = decrypt_plan(&dir.0, &sealed, &secret);
    assert_no_credentials("the capture plan", &plan);
    // AND every URL expires within the asked 15 minutes
    let urls: Vec<&str> = plan
        .split_whitespace()
        .filter(|w| w.starts_with("http"))
        .collect();
    assert!(urls.len() > 3, "{plan}");
    for url in urls {
        assert!(url.contains("X-Amz-Expires=900"), "{url}");
    }
    // AND the script passes shellcheck
    let script_path = dir.0.join("sent.sh");
    std::fs::write(&script_path, &script).unwrap();
    shellcheck(&script_path);

    // WHEN the host runs it, and SSM delivers it a second time
    let played = crate::host::play(
        &dir,
        &crate::host::HostSetup::default(),
        &image_path,
        &ranges,
        &script,
        2,
    );
    let first = &played.deliveries[0];
    assert_eq!(first.code, 0, "{first:#?}");
    let report = first.report();
    assert_eq!(report["tool"], "lime");
    assert_eq!(report["kernel_release"], KERNEL);
    assert_eq!(report["image_sha256"], image_sha.as_str());
    assert_eq!(report["lockdown"], "none");
    assert_eq!(report["lime_timeout_ms"], 0);
    assert!(report["fallback_reason"].is_null(), "{report:#}");
    // THEN LiME was loaded without a timeout, and unloaded
    assert!(
        played.calls.contains("insmod") && played.calls.contains("timeout=0"),
        "{}",
        played.calls
    );
    assert!(played.calls.contains("rmmod lime"), "{}", played.calls);
    assert!(!played.lime_loaded_after);
    // AND the second delivery did nothing
    assert!(
        played.deliveries[1].stdout.contains("already ran"),
        "{:#?}",
        played.deliveries[1]
    );
    assert_eq!(
        played.calls.matches("insmod").count(),
        1,
        "{}",
        played.calls
    );
    // AND nothing is left but the once-marker, in tmpfs
    assert_eq!(
        played.shm_after,
        vec![format!(
            "firebreak-capture-{}.once",
            started["evidence_id"].as_str().unwrap()
        )]
    );

    // AND the wait completes the upload and verifies it off the host
    let awaited = wait_verify_read(&ctx, &case, &started).await.unwrap();
    assert_eq!(awaited["done"], true, "{awaited:#}");
    let ev = &awaited["evidence"];
    // THEN the stored object's SHA-256 equals the host's and the image's
    assert_eq!(ev["sha256"], image_sha.as_str());
    assert_eq!(ev["host_sha256"], image_sha.as_str());
    assert_eq!(ev["size"], image.len());
    // AND every System RAM range of the host is in it, with no zero tail
    let cov = &ev["coverage"];
    assert_eq!(cov["missing"], json!([]), "{cov:#}");
    assert_eq!(cov["suspect_zero_tails"], json!([]), "{cov:#}");
    assert_eq!(cov["system_ram"].as_array().unwrap().len(), 3, "{cov:#}");
    let location = ev["location"].as_str().unwrap().to_string();
    assert!(location.contains("?versionId="), "{location}");
    // AND the image carries COMPLIANCE retention (read back)
    let image_key = started["image_key"].as_str().unwrap();
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(image_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode(),
        Some(&aws_sdk_s3::types::ObjectLockMode::Compliance)
    );
    assert!(head.object_lock_retain_until_date().unwrap().secs() > Utc::now().timestamp() + 86_400);
    // AND a legal hold on the image, the host's result, the plan and the
    // custody records (read back)
    for key in [
        image_key.to_string(),
        started["result_key"].as_str().unwrap().to_string(),
        plan_key.to_string(),
        format!("cases/{case}/custody/00000000.json"),
    ] {
        assert!(
            legal_hold(&s3, bucket, &key).await,
            "no legal hold on {key}"
        );
    }
    // AND the image's custody record carries the coverage
    let ledger = firebreak(&[
        "evidence", "list", "--case", &case, "--output", "json", "-q",
    ]);
    let ledger: Value = serde_json::from_slice(&ledger.stdout).unwrap();
    let acquired = ledger["custody"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "memory-image" && r["event"] == "acquired")
        .unwrap_or_else(|| panic!("{ledger:#}"));
    assert_eq!(acquired["details"]["coverage"]["missing"], json!([]));

    // AND starting again continues the same capture: no second command
    let restarted = dispatch(&ctx, "start_memory_capture", start_input).await;
    assert_eq!(restarted["reused"], true);
    assert_eq!(restarted["evidence_id"], started["evidence_id"]);
    let sends = sent
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b.contains("\"DocumentName\""))
        .count();
    assert_eq!(sends, 1, "a second SendCommand was made");
    // AND waiting again records nothing twice
    let again = wait_verify_read(&ctx, &case, &started).await.unwrap();
    assert_eq!(
        again["evidence"]["custody_sequence"],
        ev["custody_sequence"]
    );

    // WHEN the image is analysed with the real Volatility 3
    let out = firebreak(&[
        "analyze",
        "--case",
        &case,
        "--evidence",
        &location,
        "--vol",
        &vol(),
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    let analysis: Value = serde_json::from_slice(&out.stdout).unwrap();
    // THEN banners names the synthetic kernel at its offset
    assert_eq!(analysis["kernel_release"], KERNEL);
    let banners = analysis["banners"].as_array().unwrap();
    assert!(
        banners.iter().any(|b| b["banner"] == BANNER),
        "{banners:#?}"
    );
    // AND the missing symbol table is a finding with the exact banner
    let symbols = analysis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["source"] == "symbols")
        .unwrap_or_else(|| panic!("{analysis:#}"));
    assert!(symbols["detail"].as_str().unwrap().contains(BANNER));
    assert!(symbols["detail"].as_str().unwrap().contains("dwarf2json"));
    assert_eq!(analysis["symbols_found"], false);

    // WHEN a symbol table for the kernel's banner is added to a tools
    // bucket (an ISF naming the banner; not a real kernel's, so it cannot
    // satisfy Volatility's kernel requirements)
    let symbols_bucket = "firebreak-tools-it-symbols";
    let constant = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{BANNER}\n\0"))
    };
    let isf = json!({
        "metadata": {"format": "6.2.0", "producer": {"name": "dwarf2json", "version": "0.8.0"}},
        "base_types": {}, "user_types": {}, "enums": {},
        "symbols": {"linux_banner": {"address": 1, "constant_data": constant}},
    });
    let table = dir.0.join(format!("{KERNEL}.json"));
    std::fs::write(&table, serde_json::to_vec(&isf).unwrap()).unwrap();
    let xz = Command::new("xz").arg("-f").arg(&table).status().unwrap();
    assert!(xz.success());
    let table = dir.0.join(format!("{KERNEL}.json.xz"));
    let out = firebreak(&[
        "symbols",
        "--tools-bucket",
        symbols_bucket,
        "add",
        table.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["banner"], BANNER);
    // AND analysing again adds a run, keeps the first one's outputs, and
    // finds the table in the tools bucket by the image's banner
    let out = firebreak(&[
        "analyze",
        "--case",
        &case,
        "--evidence",
        &location,
        "--vol",
        &vol(),
        "--tools-bucket",
        symbols_bucket,
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(second["findings_location"], analysis["findings_location"]);
    let at = second["symbols_table"]
        .as_str()
        .unwrap_or_else(|| panic!("{second:#}"));
    assert!(
        at.starts_with(&format!(
            "s3://{symbols_bucket}/{}",
            added["key"].as_str().unwrap()
        )),
        "{at}"
    );
    // THEN Volatility ran with it, and says it does not fit this image
    let symbols = second["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["source"] == "symbols")
        .unwrap_or_else(|| panic!("{second:#}"));
    assert!(
        symbols["title"]
            .as_str()
            .unwrap()
            .contains("does not fit the image"),
        "{symbols:#}"
    );

    // AND the case's custody verifies
    let out = firebreak(&["evidence", "verify", "--case", &case, "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("INTACT"));
}

#[tokio::test]
async fn sandbox_ec2_compromise_contains_captures_memory_and_analyses_it() {
    // GIVEN a decoy whose host will answer the capture
    let d = decoy();
    let instance = s(&d, "instance_id");
    let case = format!("it-comp-{}", &instance[2..10]);
    let dir = Scratch::new("compromise");
    tools_ready();
    let ranges = synthetic_ranges(2 << 20);
    let image = image_of(11, &ranges);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, &image).unwrap();

    // WHEN ec2-compromise runs (the local executor runs the container step
    // in-process)
    let child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args([
            "respond",
            "--instance",
            &instance,
            "--case",
            &case,
            "--playbook",
            "ec2-compromise",
            "--tools-bucket",
            tools_bucket(),
            "--memory-part-size-mib",
            "5",
            // The sandbox host needs no route (the test plays it) and moto
            // has no DescribeInstanceInformation: past the preflight.
            "--force",
            "--output",
            "json",
            "-q",
        ])
        .env("AWS_ENDPOINT_URL", sandbox_url())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("FIREBREAK_VOL", vol())
        .env("FIREBREAK_STATE_DIR", crate::support::state_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // AND the host runs the script SSM delivers
    let config = crate::support::sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&config);
    let mut script = None;
    for _ in 0..120 {
        let out = ssm.list_commands().send().await.unwrap();
        script = out.commands().iter().find_map(|c| {
            let lines = c.parameters()?.get("commands")?.join("\n");
            (c.comment()
                .is_some_and(|m| m.starts_with("firebreak memory capture"))
                && lines.contains(&format!("for case {case},")))
            .then_some(lines)
        });
        if script.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let script = script.expect("the capture command was sent");
    let played = crate::host::play(
        &dir,
        &crate::host::HostSetup::default(),
        &image_path,
        &ranges,
        &script,
        1,
    );
    assert_eq!(played.deliveries[0].code, 0, "{:#?}", played.deliveries);
    let out = child.wait_with_output().unwrap();

    // THEN containment is complete, the memory captured and verified, and
    // its analysis names the kernel
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["containment"], "complete", "{report:#}");
    let ev = &report["memory_progress"]["evidence"];
    assert_eq!(ev["sha256"], sha256_bytes(&image).sha256.as_str());
    assert_eq!(ev["sha256"], ev["host_sha256"]);
    assert_eq!(report["analysis"]["kernel_release"], KERNEL);
    assert!(report["analysis"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["source"] == "symbols"));
    // AND the credentials were revoked after the capture
    let states: Vec<&str> = report["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["action"].as_str())
        .collect();
    let sent = states.iter().position(|a| *a == "ssm:SendCommand").unwrap();
    let revoked = states
        .iter()
        .position(|a| *a == "ec2:DisassociateIamInstanceProfile")
        .unwrap();
    assert!(sent < revoked, "{states:?}");

    // AND the incident report written into the case holds the timeline,
    // every evidence item with its SHA-256 (the record, the memory image,
    // the analysis) and the findings
    let out = crate::support::firebreak(&["report", "--case", &case, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let incident: Value = serde_json::from_slice(&out.stdout).unwrap();
    let evidence = incident["evidence"].as_array().unwrap();
    for sha in [&ev["sha256"], &report["instance_state"]["sha256"]] {
        assert!(
            evidence.iter().any(|e| e["sha256"] == *sha),
            "{sha} in {evidence:#?}"
        );
    }
    assert!(
        evidence
            .iter()
            .all(|e| !e["location"].as_str().unwrap_or("").is_empty()),
        "{evidence:#?}"
    );
    // every item but an EBS snapshot (blocks, hashed only when asked) has
    // its SHA-256; each Volatility output's is that of the stored object
    assert!(
        evidence
            .iter()
            .all(|e| e["kind"] == "ebs_snapshot" || e["sha256"].is_string()),
        "{evidence:#?}"
    );
    let analysed: Vec<&Value> = evidence
        .iter()
        .filter(|e| e["kind"] == "memory_analysis")
        .collect();
    assert!(analysed.len() >= 2, "plugins and findings: {evidence:#?}");
    let s3 = aws_sdk_s3::Client::new(&config);
    for e in &analysed {
        let uri = e["location"].as_str().unwrap();
        let (path, version) = uri
            .strip_prefix("s3://")
            .and_then(|u| u.split_once("?versionId="))
            .expect(uri);
        let (bucket, key) = path.split_once('/').unwrap();
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(e["sha256"], sha256_bytes(&body).sha256.as_str(), "{uri}");
        assert_eq!(e["size"], body.len() as u64, "{uri}");
    }
    // the snapshots were not imaged (no --hash-snapshots): the report says
    // why they have no SHA-256 and how to get one
    assert!(
        evidence
            .iter()
            .any(|e| e["kind"] == "ebs_snapshot" && e["sha256"].is_null()),
        "{evidence:#?}"
    );
    let md = crate::support::firebreak(&["report", "--case", &case, "--format", "md"]);
    let md = stdout(&md);
    assert!(
        md.contains("was not imaged") && md.contains("--hash-snapshots"),
        "{md}"
    );
    let entered: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"] == "succeeded")
        .filter_map(|e| e["state"].as_str())
        .collect();
    for state in [
        "IsolateNetwork",
        "StartMemoryCapture",
        "VerifyMemoryCapture",
        "AnalyzeMemory",
    ] {
        assert!(entered.contains(&state), "{state} in {entered:?}");
    }
    assert!(incident["findings"]["findings"]
        .as_array()
        .is_some_and(|f| !f.is_empty()));
    assert_eq!(
        incident["failures"].as_array().map(Vec::len),
        Some(0),
        "{incident:#}"
    );
}

/// Two 12 MiB ranges: with 5 MiB parts and one part in flight, the
/// third part waits for the second's upload, 10 MiB into the first range.
fn two_ranges() -> Vec<(u64, u64)> {
    vec![(0x0010_0000, 12 << 20), (0x0100_0000, 12 << 20)]
}

/// A case id of its own for one test on the shared decoy.
fn case_for(name: &str) -> String {
    format!("it-{name}-{}", Utc::now().timestamp_micros())
}

#[tokio::test]
async fn sandbox_a_slow_upload_no_longer_zero_fills_memory() {
    // GIVEN a stand-in LiME that zero-fills the rest of a range when one
    // page waits longer than its timeout, as LiME does, and an upload of
    // part 2 that takes 3 s
    let dir = Scratch::new("slow");
    let ranges = two_ranges();
    let image = image_of(21, &ranges);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, &image).unwrap();
    let image_sha = sha256_bytes(&image).sha256;
    let setup = crate::host::HostSetup {
        slow_part: Some((2, 3)),
        ..Default::default()
    };

    // WHEN firebreak captures with its settings (timeout=0, parts
    // uploaded in parallel from a RAM buffer)
    let case = case_for("slow-new");
    let c = start(&case, json!({})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    assert_eq!(played.deliveries[0].code, 0, "{:#?}", played.deliveries);
    assert!(played.calls.contains("part 2 waits"), "{}", played.calls);
    assert!(played.calls.contains("timeout=0"), "{}", played.calls);
    let done = c.wait(&case).await.unwrap();
    // THEN the stored image is the memory, byte for byte: no range was
    // zero-filled, and the coverage check has nothing to say
    let ev = &done["evidence"];
    assert_eq!(ev["sha256"], image_sha.as_str(), "{done:#}");
    assert_eq!(ev["coverage"]["missing"], json!([]));
    assert_eq!(ev["coverage"]["suspect_zero_tails"], json!([]), "{ev:#}");

    // WHEN the old settings are forced: LiME's default timeout (1000 ms)
    // and one part in flight, as the serial uploader had
    let case = case_for("slow-old");
    let c = start(&case, json!({"lime_timeout_ms": 1000, "upload_slots": 1})).await;
    let dir2 = Scratch::new("slow-old");
    let played = crate::host::play(&dir2, &setup, &image_path, &ranges, &c.script, 1);
    assert_eq!(played.deliveries[0].code, 0, "{:#?}", played.deliveries);
    assert!(played.calls.contains("timeout=1000"), "{}", played.calls);
    let done = c.wait(&case).await.unwrap();
    // THEN the image is sound and hashes the same on and off the host, yet
    // the second range ends in zeros: the coverage check flags it
    let ev = &done["evidence"];
    assert_ne!(ev["sha256"], image_sha.as_str(), "nothing was zero-filled");
    assert_eq!(ev["sha256"], ev["host_sha256"]);
    assert_eq!(ev["coverage"]["missing"], json!([]), "{ev:#}");
    let tails = ev["coverage"]["suspect_zero_tails"].as_array().unwrap();
    // The third part is read once the second is uploaded: LiME waited
    // just past 10 MiB, in the first range, whose rest it zero-filled.
    // (Another slow upload on a loaded machine may zero-fill the second
    // range too: at least the first is flagged.)
    let (start1, size1) = ranges[0];
    let first = tails
        .iter()
        .find(|t| t["end"] == start1 + size1 - 1)
        .unwrap_or_else(|| panic!("{ev:#}"));
    assert!(
        first["zero_bytes"].as_u64().unwrap() >= 1 << 20,
        "{tails:#?}"
    );
    // AND `lime check` with the host's memory map says the same of the
    // stored image (a warning: exit 0)
    let s3 = s3_client().await;
    let stored = object(
        &s3,
        evidence_bucket(),
        c.output["image_key"].as_str().unwrap(),
    )
    .await;
    let stored_path = dir2.0.join("stored.lime");
    std::fs::write(&stored_path, &stored).unwrap();
    let iomem = dir2.0.join("iomem");
    std::fs::write(&iomem, crate::host::iomem_for(&ranges)).unwrap();
    let out = firebreak(&[
        "lime",
        "check",
        stored_path.to_str().unwrap(),
        "--iomem",
        iomem.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let check: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check["missing"], json!([]));
    assert!(
        !check["suspect_zero_tails"].as_array().unwrap().is_empty(),
        "{check:#}"
    );
}

#[tokio::test]
async fn sandbox_a_module_the_kernel_refuses_falls_back_to_avml_and_says_why() {
    // GIVEN a kernel in integrity lockdown that rejects the module's key,
    // and AVML 0.19 or later (`avml acquire FILE`)
    let dir = Scratch::new("fallback");
    let ranges = synthetic_ranges(2 << 20);
    let image = image_of(31, &ranges);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, &image).unwrap();
    let setup = crate::host::HostSetup {
        lime: "key",
        lockdown: Some("none [integrity] confidentiality"),
        ..Default::default()
    };
    let case = case_for("fallback");
    let c = start(&case, json!({})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    let d = &played.deliveries[0];
    assert_eq!(d.code, 0, "{d:#?}");
    // THEN AVML captured with its subcommand, and the result says why
    let report = d.report();
    assert_eq!(report["tool"], "avml");
    assert_eq!(report["avml_syntax"], "acquire");
    assert_eq!(report["lockdown"], "integrity");
    let why = report["fallback_reason"].as_str().unwrap();
    assert!(why.contains("Key was rejected by service"), "{why}");
    assert!(why.contains("kernel lockdown (integrity)"), "{why}");
    assert!(played.calls.contains("avml acquire "), "{}", played.calls);
    assert!(!played.lime_loaded_after);
    // AND the wait verifies it and keeps the reason
    let done = c.wait(&case).await.unwrap();
    assert_eq!(done["evidence"]["tool"], "avml");
    assert_eq!(done["evidence"]["fallback_reason"], why);
    assert_eq!(
        done["evidence"]["sha256"],
        sha256_bytes(&image).sha256.as_str()
    );
}

#[tokio::test]
async fn sandbox_an_older_avml_is_called_without_a_subcommand() {
    // GIVEN a kernel no module was built for, and AVML before 0.19
    let dir = Scratch::new("avml-old");
    let ranges = synthetic_ranges(2 << 20);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, image_of(41, &ranges)).unwrap();
    let setup = crate::host::HostSetup {
        avml: "legacy",
        release: "6.1.0-99-amd64",
        ..Default::default()
    };
    let case = case_for("avml-old");
    let c = start(&case, json!({})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    let d = &played.deliveries[0];
    assert_eq!(d.code, 0, "{d:#?}");
    let report = d.report();
    assert_eq!(report["tool"], "avml");
    assert_eq!(report["avml_syntax"], "legacy");
    assert_eq!(
        report["fallback_reason"],
        "no LiME module for kernel 6.1.0-99-amd64"
    );
    assert!(!played.calls.contains("insmod"), "{}", played.calls);
    let avml_call = played
        .calls
        .lines()
        .find(|l| l.starts_with("avml ") && !l.contains("--help"))
        .unwrap_or_else(|| panic!("{}", played.calls));
    assert!(!avml_call.contains("acquire"), "{avml_call}");
    c.wait(&case).await.unwrap();
}

#[tokio::test]
async fn sandbox_lime_is_unloaded_when_the_uploader_dies() {
    // GIVEN an uploader killed as it uploads part 1, with one part in
    // flight so that LiME is still writing the rest (insmod inherits the
    // default SIGPIPE disposition: a stream that loses its reader kills
    // it once LiME has loaded)
    let dir = Scratch::new("crash");
    let ranges = two_ranges();
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, image_of(51, &ranges)).unwrap();
    let setup = crate::host::HostSetup {
        crash_part: Some(1),
        ..Default::default()
    };
    let case = case_for("crash");
    let c = start(&case, json!({"upload_slots": 1})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    // THEN the capture fails and says so, and LiME is not left loaded
    assert!(
        played.calls.contains("kills the uploader"),
        "{}",
        played.calls
    );
    let d = &played.deliveries[0];
    assert_eq!(d.code, 1, "{d:#?}");
    assert!(
        d.report()["error"].as_str().unwrap().contains("upload"),
        "{d:#?}"
    );
    assert!(played.calls.contains("rmmod lime"), "{}", played.calls);
    assert!(
        !played.lime_loaded_after,
        "LiME is still loaded: {}",
        played.calls
    );
    // AND the wait reports the host's failure at once
    let e = c.wait(&case).await.unwrap_err();
    assert!(
        e.contains("Firebreak.CaptureFailed") && e.contains("upload"),
        "{e}"
    );
}

#[tokio::test]
async fn sandbox_avml_runs_where_dev_shm_is_noexec() {
    // GIVEN /dev/shm mounted noexec (CIS) and a module with the wrong
    // vermagic, so AVML must run
    let dir = Scratch::new("noexec");
    let ranges = synthetic_ranges(2 << 20);
    let image = image_of(61, &ranges);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, &image).unwrap();
    let setup = crate::host::HostSetup {
        lime: "vermagic",
        noexec_shm: true,
        ..Default::default()
    };
    let case = case_for("noexec");
    let c = start(&case, json!({})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    let d = &played.deliveries[0];
    // THEN AVML ran from the tmpfs the script mounted for itself
    assert_eq!(d.code, 0, "{d:#?}");
    let report = d.report();
    assert_eq!(report["tool"], "avml");
    assert!(
        report["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("Invalid module format"),
        "{report:#}"
    );
    let done = c.wait(&case).await.unwrap();
    assert_eq!(
        done["evidence"]["sha256"],
        sha256_bytes(&image).sha256.as_str()
    );
}

#[tokio::test]
async fn sandbox_a_lime_module_loaded_by_someone_else_is_left_alone() {
    let dir = Scratch::new("preloaded");
    let ranges = synthetic_ranges(2 << 20);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, image_of(71, &ranges)).unwrap();
    let setup = crate::host::HostSetup {
        lime_preloaded: true,
        ..Default::default()
    };
    let case = case_for("preloaded");
    let c = start(&case, json!({})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    let d = &played.deliveries[0];
    assert_eq!(d.code, 0, "{d:#?}");
    assert_eq!(d.report()["tool"], "avml");
    assert!(!played.calls.contains("insmod"), "{}", played.calls);
    assert!(!played.calls.contains("rmmod"), "{}", played.calls);
    assert!(
        played.lime_loaded_after,
        "someone else's module was unloaded"
    );
}

#[tokio::test]
async fn sandbox_kernel_lockdown_is_reported_at_once() {
    // GIVEN a kernel in confidentiality lockdown (no unsigned module, no
    // /proc/kcore, no /dev/mem) that no LiME module is offered for
    let dir = Scratch::new("lockdown");
    let ranges = synthetic_ranges(2 << 20);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, image_of(81, &ranges)).unwrap();
    let setup = crate::host::HostSetup {
        lockdown: Some("none integrity [confidentiality]"),
        release: "6.1.0-98-amd64",
        ..Default::default()
    };
    let case = case_for("lockdown");
    let c = start(&case, json!({})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    // THEN the script tries nothing and says why
    let d = &played.deliveries[0];
    assert_eq!(d.code, 1, "{d:#?}");
    let error = d.report()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("memory capture impossible: kernel lockdown (confidentiality)"),
        "{error}"
    );
    assert!(!played.calls.contains("insmod") && !played.calls.contains("avml"));
    // AND the wait fails with it now, not when the URLs expire
    let e = c.wait(&case).await.unwrap_err();
    assert!(
        e.contains("kernel lockdown (confidentiality)") && e.contains("Firebreak.CaptureFailed"),
        "{e}"
    );

    // WHEN a module is offered but the kernel refuses its key
    let dir = Scratch::new("lockdown-key");
    let setup = crate::host::HostSetup {
        lockdown: Some("none integrity [confidentiality]"),
        lime: "key",
        ..Default::default()
    };
    let case = case_for("lockdown-key");
    let c = start(&case, json!({})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    // THEN LiME is tried (a module signed with a trusted key would load),
    // and AVML never is
    let d = &played.deliveries[0];
    assert_eq!(d.code, 1, "{d:#?}");
    let error = d.report()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("kernel lockdown (confidentiality)") && error.contains("Key was rejected"),
        "{error}"
    );
    assert!(played.calls.contains("insmod"), "{}", played.calls);
    assert!(!played.calls.contains("avml"), "{}", played.calls);
}

#[tokio::test]
async fn sandbox_a_capture_stopped_by_a_signal_still_unloads_lime() {
    // GIVEN a capture whose script is sent SIGTERM while LiME writes
    let dir = Scratch::new("term");
    let ranges = two_ranges();
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, image_of(91, &ranges)).unwrap();
    let setup = crate::host::HostSetup {
        term_part: Some(1),
        ..Default::default()
    };
    let case = case_for("term");
    let c = start(&case, json!({"upload_slots": 1})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    // THEN the script ends on the signal, through its cleanup, which
    // unloads LiME
    assert!(played.calls.contains("sends SIGTERM"), "{}", played.calls);
    let d = &played.deliveries[0];
    assert_eq!(d.code, 143, "{d:#?}");
    assert_eq!(
        played.calls.matches("rmmod lime").count(),
        1,
        "{}",
        played.calls
    );
    assert!(!played.lime_loaded_after, "{}", played.calls);
}

#[tokio::test]
async fn sandbox_a_host_that_claims_memory_it_did_not_send_gets_its_image_rejected() {
    // GIVEN a host whose memory map claims a range beyond 2^53 (which no
    // JSON double holds) that the image lacks
    let dir = Scratch::new("liar");
    let ranges = synthetic_ranges(2 << 20);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, image_of(101, &ranges)).unwrap();
    let setup = crate::host::HostSetup {
        extra_iomem: Some("ffffffffff000000-ffffffffffffffff : System RAM\n"),
        ..Default::default()
    };
    let case = case_for("liar");
    let c = start(&case, json!({})).await;
    let played = crate::host::play(&dir, &setup, &image_path, &ranges, &c.script, 1);
    assert_eq!(played.deliveries[0].code, 0, "{:#?}", played.deliveries);
    // THEN the image is rejected, naming the range it lacks
    let e = c.wait(&case).await.unwrap_err();
    assert!(
        e.contains("lacks System RAM") && e.contains("0xffffffffff000000"),
        "{e}"
    );
    let read = try_dispatch(
        &c.ctx,
        "read_memory_evidence",
        json!({"case_id": case, "evidence_bucket": evidence_bucket(), "actor": "it", "capture": c.output}),
    )
    .await
    .unwrap_err();
    assert!(read.contains("was rejected"), "{read}");
    // AND the case's custody holds the rejection, with the range as text,
    // and stays sound: verify passes (a rejection is no break of custody)
    // and lists it
    let out = firebreak(&["evidence", "verify", "--case", &case, "-q"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("rejected: FAILED"), "{text}");
    let list = firebreak(&[
        "evidence", "list", "--case", &case, "--output", "json", "-q",
    ]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let rejected = list["custody"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "rejected")
        .unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(
        rejected["details"]["coverage"]["missing"][0]["start"],
        "0xffffffffff000000"
    );
}

#[tokio::test]
async fn sandbox_credentials_too_short_for_the_capture_are_refused_with_the_fix() {
    // GIVEN credentials that expire in ten minutes: the decoy's 1 GiB
    // takes longer than that at the rate firebreak plans for
    tools_ready();
    let instance = s(&decoy(), "instance_id");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(sandbox_url())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test",
            "test",
            Some("token".into()),
            Some(std::time::SystemTime::now() + std::time::Duration::from_secs(600)),
            "short-lived",
        ))
        .load()
        .await;
    let ctx = context(&config);
    let e = try_dispatch(
        &ctx,
        "start_memory_capture",
        json!({
            "case_id": case_for("short-creds"),
            "instance_id": instance,
            "evidence_bucket": evidence_bucket(),
            "options": {"tools_bucket": tools_bucket(), "part_size_mib": 5},
        }),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("Firebreak.InvalidInput")
            && e.contains("expire")
            && e.contains("--duration-seconds"),
        "{e}"
    );
}

#[test]
fn every_plugin_firebreak_runs_exists_in_the_pinned_volatility() {
    // GIVEN the volatility3 scripts/tools installs
    let out = Command::new(vol()).arg("--help").output().unwrap();
    let help = format!("{}{}", stdout(&out), stderr(&out));
    // THEN every plugin of the analysis plan is one of its plugins
    let listed: Vec<&str> = help
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for plugin in firebreak_forensics::volatility::PLUGINS
        .iter()
        .chain([&firebreak_forensics::volatility::BANNERS])
    {
        assert!(
            listed.contains(plugin),
            "{plugin} is not a plugin of this Volatility:\n{help}"
        );
    }
}
