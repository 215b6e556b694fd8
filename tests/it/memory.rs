//! Memory capture over SSM, played end to end: moto's SSM runs nothing, so
//! the test reads the command firebreak sent (its parameters) and runs
//! that exact script here, with stand-ins for `uname`, `insmod` and
//! `rmmod` that "load LiME" by writing a synthetic image (a Linux banner
//! inside). The script uploads through the presigned URLs to moto's S3;
//! then the real Volatility 3 analyses the stored image.

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

pub const KERNEL: &str = "6.1.0-13-amd64";
pub const BANNER: &str = "Linux version 6.1.0-13-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)";

const ACCESS_KEY: &str = "AKIAFIREBREAKTEST777";
const SECRET_KEY: &str = "fbSecretKeyThatMustNeverReachTheHost0000";
const SESSION_TOKEN: &str = "FwoFirebreakSessionTokenThatMayOnlyBeInsidePresignedUrls";

pub fn tools_bucket() -> &'static str {
    "firebreak-tools-it"
}

/// A scratch directory, removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
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

/// A LiME image of three ranges with the banner in the second.
pub fn synthetic_image(seed: u64, range_bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let starts = [0x0010_0000u64, 0x0400_0000, 0x1000_0000];
    for (i, start) in starts.iter().enumerate() {
        let mut data = filler(seed + i as u64, range_bytes);
        if i == 1 {
            let b = format!("{BANNER}\n\0");
            data[0x40..0x40 + b.len()].copy_from_slice(b.as_bytes());
        }
        out.extend_from_slice(&lime_header(*start, start + range_bytes as u64 - 1));
        out.extend_from_slice(&data);
    }
    out
}

/// Stand-ins for the host's commands: `uname -r` prints the kernel,
/// `insmod lime.ko "path=P format=lime"` writes the image to P, `rmmod`
/// does nothing. Every call is logged.
pub fn fake_host(dir: &Path, image: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("calls.log");
    let scripts = [
        (
            "uname",
            format!(
                "#!/bin/sh\necho \"uname $*\" >> '{}'\nif [ \"$1\" = -r ]; then echo {KERNEL}; else echo Linux; fi\n",
                log.display()
            ),
        ),
        (
            "insmod",
            format!(
                "#!/bin/sh\necho \"insmod $*\" >> '{}'\nfor a in $2; do case \"$a\" in path=*) cat '{}' > \"${{a#path=}}\";; esac; done\n",
                log.display(),
                image.display()
            ),
        ),
        (
            "rmmod",
            format!("#!/bin/sh\necho \"rmmod $*\" >> '{}'\n", log.display()),
        ),
    ];
    for (name, body) in scripts {
        let p = bin.join(name);
        std::fs::write(&p, body).unwrap();
        Command::new("chmod").arg("755").arg(&p).status().unwrap();
    }
    bin
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

pub fn context(config: &SdkConfig) -> StepContext {
    StepContext::new(
        AwsClients::new(config),
        Mode::Live,
        "123456789012".into(),
        REGION.into(),
    )
}

/// Adds a stand-in LiME module for [`KERNEL`] to the tools bucket.
pub fn add_module(dir: &Path) {
    let module = dir.join("lime.ko");
    std::fs::write(&module, filler(99, 4096)).unwrap();
    let out = firebreak(&[
        "tools",
        "--tools-bucket",
        tools_bucket(),
        "add",
        "lime",
        "--kernel-release",
        KERNEL,
        module.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// The script of an SSM command, as moto kept its parameters.
pub async fn sent_script(config: &SdkConfig, command_id: &str) -> (String, Value) {
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

/// Runs the script as the host would (bash, our stand-ins first on the
/// PATH). Returns its last stdout line.
pub fn play_host(dir: &Path, bin: &Path, script: &str) -> String {
    let path = dir.join("capture.sh");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("bash")
        .arg(&path)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the capture script failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out).lines().last().unwrap_or_default().to_string()
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
pub fn shellcheck(path: &Path) {
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

async fn dispatch(ctx: &StepContext, step: &str, input: Value) -> Value {
    Registry::standard()
        .dispatch(
            ctx,
            StepPayload {
                step: step.into(),
                input,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{step}: {e}"))
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
    add_module(&dir.0);
    let image = synthetic_image(7, 4 << 20);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, &image).unwrap();
    let image_sha = sha256_bytes(&image).sha256;
    let bin = fake_host(&dir.0, &image_path);

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
    let plan_key = started["plan_key"].as_str().unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&crate::support::sdk_config().await)
            .force_path_style(true)
            .build(),
    );
    let plan = s3
        .get_object()
        .bucket(bucket)
        .key(plan_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let plan = String::from_utf8(plan.to_vec()).unwrap();
    assert_no_credentials("the capture plan", &plan);
    // AND every URL expires within the asked 15 minutes
    for url in plan.split_whitespace().filter(|w| w.starts_with("http")) {
        assert!(url.contains("X-Amz-Expires=900"), "{url}");
    }
    // AND the script passes shellcheck
    let script_path = dir.0.join("sent.sh");
    std::fs::write(&script_path, &script).unwrap();
    shellcheck(&script_path);

    // WHEN the host runs it
    let line = play_host(&dir.0, &bin, &script);
    let report: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(report["tool"], "lime");
    assert_eq!(report["kernel_release"], KERNEL);
    assert_eq!(report["image_sha256"], image_sha.as_str());
    let calls = std::fs::read_to_string(dir.0.join("calls.log")).unwrap();
    assert!(
        calls.contains("insmod") && calls.contains("rmmod lime"),
        "{calls}"
    );
    // AND a second delivery of the same command does nothing
    let again = play_host(&dir.0, &bin, &script);
    assert!(again.contains("already ran"), "{again}");

    // AND the wait completes the upload and verifies it off the host
    let awaited = dispatch(
        &ctx,
        "await_memory_capture",
        json!({
            "case_id": case,
            "evidence_bucket": bucket,
            "actor": "arn:aws:iam::123456789012:user/it",
            "capture": started,
        }),
    )
    .await;
    assert_eq!(awaited["done"], true, "{awaited:#}");
    let ev = &awaited["evidence"];
    // THEN the stored object's SHA-256 equals the host's and the image's
    assert_eq!(ev["sha256"], image_sha.as_str());
    assert_eq!(ev["host_sha256"], image_sha.as_str());
    assert_eq!(ev["size"], image.len());
    let location = ev["location"].as_str().unwrap().to_string();
    assert!(location.contains("?versionId="), "{location}");
    // AND the image carries COMPLIANCE retention (read back)
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(started["image_key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode(),
        Some(&aws_sdk_s3::types::ObjectLockMode::Compliance)
    );
    assert!(head.object_lock_retain_until_date().unwrap().secs() > Utc::now().timestamp() + 86_400);

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
    let again = dispatch(
        &ctx,
        "await_memory_capture",
        json!({
            "case_id": case,
            "evidence_bucket": bucket,
            "actor": "arn:aws:iam::123456789012:user/it",
            "capture": started,
        }),
    )
    .await;
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

    // AND analysing again adds a run and keeps the first one's outputs
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
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(second["findings_location"], analysis["findings_location"]);

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
    add_module(&dir.0);
    let image = synthetic_image(11, 2 << 20);
    let image_path = dir.0.join("image.lime");
    std::fs::write(&image_path, &image).unwrap();
    let bin = fake_host(&dir.0, &image_path);

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
    play_host(&dir.0, &bin, &script);
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
}
