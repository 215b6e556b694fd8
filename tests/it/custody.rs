//! Custody anyone can verify: an `ec2-contain` case under signed custody,
//! its ledger checked by firebreak (with KMS and offline) and by the
//! shipped stdlib script, and each kind of tampering named by both; legal
//! holds put and lifted; setup never lowering retention unasked; tools
//! that are not what they claim refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use firebreak_forensics::custody::{CustodyRecord, Event, Location, NewRecord, Source};
use serde_json::Value;

use crate::memory::Scratch;
use crate::support::{decoy, evidence_bucket, firebreak, s, sdk_config, stderr, stdout};

/// An asymmetric KMS key in the sandbox (ARN) and its public key (DER).
async fn signing_key() -> (String, Vec<u8>) {
    let kms = aws_sdk_kms::Client::new(&sdk_config().await);
    let key = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .description("firebreak custody test")
        .send()
        .await
        .unwrap();
    let arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    let public = kms
        .get_public_key()
        .key_id(&arn)
        .send()
        .await
        .unwrap()
        .public_key()
        .unwrap()
        .as_ref()
        .to_vec();
    (arn, public)
}

async fn sign_with(arn: &str, digest_hex: &str) -> Vec<u8> {
    let kms = aws_sdk_kms::Client::new(&sdk_config().await);
    kms.sign()
        .key_id(arn)
        .message(aws_sdk_kms::primitives::Blob::new(
            hex::decode(digest_hex).unwrap(),
        ))
        .message_type(aws_sdk_kms::types::MessageType::Raw)
        .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap()
        .signature()
        .unwrap()
        .as_ref()
        .to_vec()
}

fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// The ledger as `aws s3 cp --recursive` would give it: the latest
/// version of each object under the case's custody prefix.
async fn download_ledger(case: &str, dir: &Path) {
    let client = s3(&sdk_config().await);
    let prefix = format!("cases/{case}/custody/");
    let list = client
        .list_objects_v2()
        .bucket(evidence_bucket())
        .prefix(&prefix)
        .send()
        .await
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for o in list.contents() {
        let key = o.key().unwrap();
        let body = client
            .get_object()
            .bucket(evidence_bucket())
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        std::fs::write(dir.join(key.strip_prefix(&prefix).unwrap()), body).unwrap();
    }
}

fn python() -> String {
    std::env::var("FIREBREAK_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the shipped verifier on a ledger directory.
fn verify_script(dir: &Path, public_key: Option<&Path>) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify-custody.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(dir).arg("--json");
    if let Some(k) = public_key {
        cmd.arg("--public-key").arg(k);
    }
    let out = cmd.output().expect("python runs");
    // Standard output is the JSON report alone (notes go to stderr).
    assert!(out.status.code() != Some(2), "bad usage: {}", stderr(&out));
    (out.status.code().unwrap_or(-1), stdout(&out))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A record appended after the last one, chained correctly, by someone
/// without the case's key (no `signing_key`, no signature): its bytes and
/// its file name.
fn unsigned_append(dir: &Path, case: &str) -> (Vec<u8>, String) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let last = CustodyRecord::parse(&std::fs::read(names.last().unwrap()).unwrap()).unwrap();
    let (r, bytes) = NewRecord {
        case_id: case.into(),
        evidence_id: "planted".into(),
        event: Event::Verified,
        kind: "memory-image".into(),
        source: Source::default(),
        location: Location::S3 {
            bucket: "elsewhere".into(),
            key: "fake".into(),
            version_id: None,
        },
        size: Some(1),
        sha256: Some("00".repeat(32)),
        host_sha256: None,
        at: Utc::now(),
        actor: "someone".into(),
        tool: "hand".into(),
        tool_version: "0".into(),
        note: None,
        details: None,
        signing_key: None,
    }
    .chain_after(Some(&last))
    .unwrap();
    (bytes, format!("{:08}.json", r.sequence))
}

#[tokio::test]
async fn sandbox_a_signed_ec2_contain_case_is_under_custody_and_verifiable_by_anyone() {
    // GIVEN a decoy, and an asymmetric KMS key for custody
    let d = decoy();
    let instance = s(&d, "instance_id");
    let case = format!("it-cust-{}", &instance[2..10]);
    let (key, public_der) = signing_key().await;
    let dir = Scratch::new("custody");
    let public = dir.0.join("custody.pub.der");
    std::fs::write(&public, &public_der).unwrap();

    // WHEN ec2-contain runs with --custody-key
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        &case,
        "--custody-key",
        &key,
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();

    // THEN the digest shown beside the instance state is the stored
    // object's, as `evidence hash` gives it
    let state = &summary["instance_state"];
    let location = state["location"].as_str().unwrap();
    let hashed = firebreak(&["evidence", "hash", location, "--output", "json"]);
    let hashed: Value = serde_json::from_slice(&hashed.stdout).unwrap();
    assert_eq!(hashed[0]["sha256"], state["sha256"], "{state:#}");
    // AND the instance state and console output are under custody, signed
    let list = firebreak(&[
        "evidence", "list", "--case", &case, "--output", "json", "-q",
    ]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let kinds: Vec<&str> = list["custody"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"instance-state") && kinds.contains(&"console-output"),
        "{kinds:?}"
    );
    for r in list["custody"].as_array().unwrap() {
        assert_eq!(r["signing_key"], key.as_str(), "{r:#}");
    }
    let record = list["custody"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "instance-state")
        .unwrap();
    assert_eq!(record["sha256"], state["sha256"]);
    // AND `evidence verify` checks the chain and every signature, with KMS
    // and offline with the public key
    let out = firebreak(&["evidence", "verify", "--case", &case, "-q"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("INTACT"), "{text}");
    assert!(
        text.contains(&format!(
            "signed with {key}: {} signatures verified (kms)",
            kinds.len()
        )),
        "{text}"
    );
    let out = firebreak(&[
        "evidence",
        "verify",
        "--case",
        &case,
        "--public-key",
        public.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("(public key)"), "{}", stdout(&out));

    // WHEN the ledger is downloaded and checked with the shipped script
    let ledger = dir.0.join("ledger");
    download_ledger(&case, &ledger).await;
    let (code, text) = verify_script(&ledger, Some(&public));
    // THEN it is intact, with the same head as firebreak's
    assert_eq!(code, 0, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["signatures_checked"], true);
    assert_eq!(report["records"], kinds.len());
    let v = firebreak(&[
        "evidence", "verify", "--case", &case, "--output", "json", "-q",
    ]);
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["head"]["hash"], v["head"]["hash"]);

    // AND each kind of tampering is named by the script
    let tampered = |name: &str| {
        let t = dir.0.join(name);
        copy_dir(&ledger, &t);
        t
    };
    // an edited byte
    let t = tampered("edited");
    let path = t.join("00000000.json");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("\"size\":", "\"size\":1", 1);
    std::fs::write(&path, edited).unwrap();
    let (code, text) = verify_script(&t, Some(&public));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("00000000.json"), "{text}");
    // a record re-signed with another key
    let t = tampered("resigned");
    let (other, other_public) = signing_key().await;
    let sig_path = t.join("00000001.sig");
    let mut sig: Value = serde_json::from_slice(&std::fs::read(&sig_path).unwrap()).unwrap();
    let forged = sign_with(&other, sig["record_sha256"].as_str().unwrap()).await;
    use base64::Engine as _;
    sig["signature"] = base64::engine::general_purpose::STANDARD
        .encode(&forged)
        .into();
    sig["key_id"] = other.clone().into();
    std::fs::write(&sig_path, serde_json::to_vec(&sig).unwrap()).unwrap();
    let (code, text) = verify_script(&t, Some(&public));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("re-signed"), "{text}");
    // the same, keeping the key id: only the signature check sees it
    sig["key_id"] = key.clone().into();
    std::fs::write(&sig_path, serde_json::to_vec(&sig).unwrap()).unwrap();
    let (code, text) = verify_script(&t, Some(&public));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not verify"), "{text}");
    let _ = other_public;
    // an unsigned append
    let t = tampered("appended");
    let (bytes, name) = unsigned_append(&t, &case);
    std::fs::write(t.join(&name), bytes).unwrap();
    let (code, text) = verify_script(&t, Some(&public));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("unsigned in a signed case"), "{text}");
    // a deleted record
    let t = tampered("deleted");
    std::fs::remove_file(t.join("00000000.json")).unwrap();
    let (code, text) = verify_script(&t, Some(&public));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("missing"), "{text}");
}

#[tokio::test]
async fn sandbox_evidence_verify_names_each_tampering_of_a_signed_case() {
    // GIVEN a signed case with three records
    let bucket = evidence_bucket();
    let (key, _) = signing_key().await;
    let case = format!("it-tamper-{}", Utc::now().timestamp_micros());
    let config = sdk_config().await;
    let ctx = crate::memory::context(&config);
    let log = ctx.log("test");
    let lock = firebreak_steps::evidence::Lock {
        custody_key: Some(key.clone()),
        legal_hold: true,
        ..Default::default()
    };
    for i in 0..3 {
        let body = format!("artifact {i}").into_bytes();
        let k = format!("cases/{case}/artifacts/a{i}");
        let firebreak_steps::evidence::Put::Created(stored) =
            firebreak_steps::evidence::put_new_locked(
                &ctx,
                &log,
                bucket,
                &k,
                body,
                "text/plain",
                &lock,
            )
            .await
            .unwrap()
        else {
            panic!("{k} existed")
        };
        firebreak_steps::evidence::custody::append(
            &ctx,
            &log,
            bucket,
            &lock,
            NewRecord {
                case_id: case.clone(),
                evidence_id: format!("e{i}"),
                event: Event::Acquired,
                kind: "test-artifact".into(),
                source: Source::default(),
                location: Location::S3 {
                    bucket: bucket.into(),
                    key: k,
                    version_id: stored.version_id.clone(),
                },
                size: Some(stored.digest.size),
                sha256: Some(stored.digest.sha256.clone()),
                host_sha256: None,
                at: Utc::now(),
                actor: "it".into(),
                tool: "it".into(),
                tool_version: "1".into(),
                note: None,
                details: None,
                signing_key: None,
            },
        )
        .await
        .unwrap();
    }
    let verify = || {
        let out = firebreak(&["evidence", "verify", "--case", &case, "-q"]);
        (out.status.code(), stdout(&out))
    };
    let (code, text) = verify();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("3 signatures verified (kms)"), "{text}");
    let client = s3(&config);
    let put = |key: String, body: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .put_object()
                .bucket(evidence_bucket())
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    };
    let prefix = format!("cases/{case}/custody");

    // WHEN someone without the key appends a record
    let dir = Scratch::new("tamper");
    download_ledger(&case, &dir.0).await;
    let (bytes, name) = unsigned_append(&dir.0, &case);
    put(format!("{prefix}/{name}"), bytes).await;
    // THEN it is named
    let (code, text) = verify();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("record 3: unsigned in a case signed by"),
        "{text}"
    );

    // WHEN a record is re-signed with another key
    let (other, _) = signing_key().await;
    let sig_key = format!("{prefix}/00000001.sig");
    let mut sig: Value =
        serde_json::from_slice(&std::fs::read(dir.0.join("00000001.sig")).unwrap()).unwrap();
    use base64::Engine as _;
    sig["signature"] = base64::engine::general_purpose::STANDARD
        .encode(sign_with(&other, sig["record_sha256"].as_str().unwrap()).await)
        .into();
    sig["key_id"] = other.clone().into();
    put(sig_key.clone(), serde_json::to_vec(&sig).unwrap()).await;
    let (_, text) = verify();
    assert!(
        text.contains(&format!(
            "{sig_key}: record 1 was re-signed with another key ({other}"
        )),
        "{text}"
    );

    // WHEN a byte of a record is edited (a new version over it)
    let rec_key = format!("{prefix}/00000002.json");
    let edited = std::fs::read_to_string(dir.0.join("00000002.json"))
        .unwrap()
        .replacen("artifacts/a2", "artifacts/a9", 1);
    put(rec_key.clone(), edited.into_bytes()).await;
    let (_, text) = verify();
    assert!(
        text.contains(&format!("{rec_key}: the record was overwritten")),
        "{text}"
    );

    // WHEN a record is deleted (a delete marker over it)
    let del_key = format!("{prefix}/00000000.json");
    client
        .delete_object()
        .bucket(bucket)
        .key(&del_key)
        .send()
        .await
        .unwrap();
    let (_, text) = verify();
    assert!(
        text.contains(&format!("{del_key}: the record was deleted")),
        "{text}"
    );

    // AND an export of the first versions, checked by the shipped script,
    // names the same: the record and signature written over, the deleted
    // record, the unsigned append
    let out_dir = dir.0.join("export");
    let out = firebreak(&[
        "evidence",
        "export",
        "--case",
        &case,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out_dir.join("versions.json").exists());
    let (code, text) = verify_script(&out_dir, None);
    assert_eq!(code, 1, "{text}");
    for want in [
        "the record was overwritten after it was stored",
        "the signature was overwritten after it was stored",
        "the record was deleted after it was stored",
        "unsigned in a signed case",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // the exported record 2 is the first version: its chain holds
    let report: Value = serde_json::from_str(&text).unwrap();
    assert!(
        !report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["problem"]
                .as_str()
                .unwrap_or_default()
                .contains("previous_hash")),
        "{text}"
    );
}

#[tokio::test]
async fn sandbox_legal_holds_are_put_and_lifted_for_a_whole_case() {
    let bucket = evidence_bucket();
    let case = format!("it-hold-{}", Utc::now().timestamp_micros());
    let config = sdk_config().await;
    let client = s3(&config);
    for i in 0..2 {
        client
            .put_object()
            .bucket(bucket)
            .key(format!("cases/{case}/x{i}"))
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let held = |key: String| {
        let client = client.clone();
        async move {
            client
                .get_object_legal_hold()
                .bucket(evidence_bucket())
                .key(key)
                .send()
                .await
                .ok()
                .and_then(|o| o.legal_hold().and_then(|h| h.status()).cloned())
                == Some(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)
        }
    };
    let out = firebreak(&["evidence", "hold", "--case", &case]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("legal hold put on 2 object versions"),
        "{}",
        stdout(&out)
    );
    for i in 0..2 {
        assert!(held(format!("cases/{case}/x{i}")).await);
    }
    let out = firebreak(&["evidence", "unhold", "--case", &case]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for i in 0..2 {
        assert!(!held(format!("cases/{case}/x{i}")).await);
    }
    let out = firebreak(&["evidence", "hold", "--case", "it-hold-nothing-here"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn sandbox_setup_never_lowers_a_buckets_retention_unasked() {
    // GIVEN a bucket made with 2555 days
    let bucket = format!("fb-retention-{}", Utc::now().timestamp_micros());
    let out = firebreak(&[
        "setup",
        "--evidence-bucket",
        &bucket,
        "--retention-days",
        "2555",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // WHEN setup runs again without --retention-days
    let out = firebreak(&["setup", "--evidence-bucket", &bucket]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // THEN the retention stays, and setup says so
    assert!(
        stdout(&out).contains("COMPLIANCE, 2555 days (unchanged)"),
        "{}",
        stdout(&out)
    );
    // AND lowering it takes asking, and is said loudly
    let out = firebreak(&[
        "setup",
        "--evidence-bucket",
        &bucket,
        "--retention-days",
        "365",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("LOWERED from 2555 to 365 days"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn sandbox_tools_that_are_not_what_they_claim_are_refused() {
    let dir = Scratch::new("badtools");
    let text = dir.0.join("avml.txt");
    std::fs::write(&text, "#!/bin/sh\necho not avml\n").unwrap();
    let module = crate::host::lime_module();
    let module = module.to_str().unwrap();
    let random = dir.0.join("random.ko");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["avml", text.to_str().unwrap()],
            "not an AVML binary: not an ELF file",
        ),
        (
            &[
                "lime",
                "--kernel-release",
                crate::memory::KERNEL,
                random.to_str().unwrap(),
            ],
            "not a LiME module for kernel",
        ),
        (&["avml", module], "not an executable"),
        (
            &["lime", "--kernel-release", "6.1.0-99-amd64", module],
            "built for \"6.1.0-13-amd64",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["tools", "--tools-bucket", "firebreak-tools-it-bad", "add"];
        all.extend_from_slice(args);
        let out = firebreak(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}
