//! `evidence verify` against tampering, `lime check` and `analyze` against
//! corrupt images, `evidence hash`.

use chrono::Utc;
use firebreak_forensics::custody::{Event, Location, NewRecord, Source};
use firebreak_forensics::lime::lime_header;
use firebreak_steps::evidence::custody;
use firebreak_steps::evidence::{self, Lock, Put};
use serde_json::Value;

use crate::memory::{context, synthetic_image, Scratch};
use crate::support::{evidence_bucket, firebreak, sdk_config, stderr, stdout};

fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// A case with three artifacts, each with its custody record.
async fn case_with_evidence(case: &str) -> Vec<String> {
    let config = sdk_config().await;
    let ctx = context(&config);
    let log = ctx.log("test");
    let bucket = evidence_bucket();
    let mut keys = Vec::new();
    for (i, body) in [
        b"first artifact".to_vec(),
        b"second".to_vec(),
        vec![7u8; 70_000],
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("cases/{case}/artifacts/a{i}.bin");
        let Put::Created(stored) =
            evidence::put_new(&ctx, &log, bucket, &key, body, "application/octet-stream")
                .await
                .unwrap()
        else {
            panic!("{key} existed")
        };
        custody::append(
            &ctx,
            &log,
            bucket,
            &Lock::default(),
            NewRecord {
                case_id: case.into(),
                evidence_id: format!("e{i}"),
                event: if i == 2 {
                    Event::Acquired
                } else {
                    Event::Transferred
                },
                kind: "test-artifact".into(),
                source: Source {
                    account_id: "123456789012".into(),
                    region: "us-east-1".into(),
                    instance_id: Some("i-0123456789abcdef0".into()),
                    volume_id: None,
                },
                location: Location::S3 {
                    bucket: bucket.into(),
                    key: key.clone(),
                    version_id: stored.version_id.clone(),
                },
                size: Some(stored.digest.size),
                sha256: Some(stored.digest.sha256.clone()),
                host_sha256: None,
                at: Utc::now(),
                actor: "arn:aws:iam::123456789012:user/it".into(),
                tool: "it".into(),
                tool_version: "1".into(),
                note: None,
                details: None,
                signing_key: None,
            },
        )
        .await
        .unwrap();
        keys.push(key);
    }
    keys
}

fn verify(case: &str) -> (Option<i32>, String) {
    let out = firebreak(&["evidence", "verify", "--case", case, "-q"]);
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn record_key(case: &str, n: u64) -> String {
    format!("cases/{case}/custody/{n:08}.json")
}

async fn read(key: &str) -> Vec<u8> {
    let config = sdk_config().await;
    s3(&config)
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
        .into_bytes()
        .to_vec()
}

async fn overwrite(key: &str, body: Vec<u8>) {
    let config = sdk_config().await;
    s3(&config)
        .put_object()
        .bucket(evidence_bucket())
        .key(key)
        .body(body.into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
}

fn unique(name: &str) -> String {
    format!("it-{name}-{}", Utc::now().timestamp_micros())
}

#[tokio::test]
async fn sandbox_an_intact_case_verifies() {
    let case = unique("intact");
    case_with_evidence(&case).await;
    let (code, text) = verify(&case);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("3 custody records, 3 artifacts: INTACT"),
        "{text}"
    );
    // AND list shows the chain and the objects under custody
    let out = firebreak(&["evidence", "list", "--case", &case, "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("a2.bin"));
}

#[tokio::test]
async fn sandbox_one_flipped_byte_in_an_artifact_is_named() {
    // GIVEN a case, and one artifact rewritten with one byte flipped
    let case = unique("flip");
    let keys = case_with_evidence(&case).await;
    let mut body = read(&keys[2]).await;
    body[40_000] ^= 0x01;
    overwrite(&keys[2], body).await;
    // THEN verify fails and names it: the recorded version is intact, but
    // a version with another SHA-256 now hides it
    let (code, text) = verify(&case);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("TAMPERED"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(&keys[2]))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("!! replaced")
            && line.contains("the recorded version is intact")
            && line.contains("whose SHA-256 is now"),
        "{line}"
    );
    // AND the other artifacts are intact
    assert!(
        text.lines().filter(|l| l.contains("ok intact")).count() == 2,
        "{text}"
    );
}

#[tokio::test]
async fn sandbox_a_deleted_record_is_named() {
    let case = unique("delete");
    case_with_evidence(&case).await;
    let config = sdk_config().await;
    // A delete without a version id: Object Lock keeps the version, but a
    // delete marker hides it.
    s3(&config)
        .delete_object()
        .bucket(evidence_bucket())
        .key(record_key(&case, 1))
        .send()
        .await
        .unwrap();
    let (code, text) = verify(&case);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{}: the record was deleted (a delete marker hides it; the locked first version is read)",
            record_key(&case, 1)
        )),
        "{text}"
    );
    // The chain itself is read from the locked versions, and holds.
    assert!(!text.contains("chain broken"), "{text}");
}

#[tokio::test]
async fn sandbox_an_edited_record_is_named() {
    let case = unique("edit");
    case_with_evidence(&case).await;
    let key = record_key(&case, 1);
    let mut record: Value = serde_json::from_slice(&read(&key).await).unwrap();
    record["size"] = Value::from(1);
    overwrite(&key, serde_json::to_vec_pretty(&record).unwrap()).await;
    let (code, text) = verify(&case);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{key}: the record was overwritten (2 versions; the first, locked one is read)"
        )),
        "{text}"
    );
    assert!(!text.contains("chain broken"), "{text}");
}

#[tokio::test]
async fn sandbox_reordered_records_are_named() {
    let case = unique("reorder");
    case_with_evidence(&case).await;
    let (a, b) = (record_key(&case, 0), record_key(&case, 1));
    let (ba, bb) = (read(&a).await, read(&b).await);
    overwrite(&a, bb).await;
    overwrite(&b, ba).await;
    let (code, text) = verify(&case);
    assert_eq!(code, Some(1), "{text}");
    for k in [&a, &b] {
        assert!(
            text.contains(&format!("{k}: the record was overwritten")),
            "{text}"
        );
    }
}

/// Corrupt images: each named by range and offset.
fn corrupt_images() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good = synthetic_image(3, 4096);
    let second = 32 + 4096;
    let mut bad_magic = good.clone();
    bad_magic[second] = b'X';
    let mut bad_version = good.clone();
    bad_version[4] = 2;
    let mut overlapping = good.clone();
    // The second range starts inside the first.
    overlapping[second..second + 32].copy_from_slice(&lime_header(0x0010_0800, 0x0010_17ff));
    let truncated = good[..good.len() - 100].to_vec();
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage");
    vec![
        ("bad-magic", bad_magic, "range 1 at offset 4128: bad magic"),
        (
            "bad-version",
            bad_version,
            "range 0 at offset 4: bad version 2",
        ),
        (
            "overlapping",
            overlapping,
            "range 1 at offset 4136: start 0x100800",
        ),
        ("truncated", truncated, "range 2 at offset 8288"),
        ("trailing-garbage", trailing, "range 3 at offset 12384"),
    ]
}

#[test]
fn lime_check_names_the_range_and_offset_of_each_corruption() {
    let dir = Scratch::new("lime");
    for (name, bytes, expected) in corrupt_images() {
        let p = dir.0.join(format!("{name}.lime"));
        std::fs::write(&p, bytes).unwrap();
        let out = crate::support::firebreak_offline(&["lime", "check", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        assert!(stderr(&out).contains(expected), "{name}: {}", stderr(&out));
    }
    let p = dir.0.join("good.lime");
    std::fs::write(&p, synthetic_image(3, 4096)).unwrap();
    let out = crate::support::firebreak_offline(&["lime", "check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("3 ranges"), "{}", stdout(&out));
}

#[tokio::test]
async fn sandbox_analyze_refuses_a_corrupt_image_before_running_volatility() {
    // GIVEN corrupt images acquired into a case, and a "vol" that records
    // whether it was run
    let case = unique("corrupt");
    let dir = Scratch::new("corrupt");
    let marker = dir.0.join("vol-ran");
    let vol = dir.0.join("vol");
    std::fs::write(
        &vol,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&vol)
        .status()
        .unwrap();
    let config = sdk_config().await;
    let ctx = context(&config);
    let log = ctx.log("test");
    let bucket = evidence_bucket();
    for (i, (name, bytes, expected)) in corrupt_images().into_iter().enumerate() {
        let key = format!("cases/{case}/memory/{name}.lime");
        let Put::Created(stored) =
            evidence::put_new(&ctx, &log, bucket, &key, bytes, "application/octet-stream")
                .await
                .unwrap()
        else {
            panic!()
        };
        custody::append(
            &ctx,
            &log,
            bucket,
            &Lock::default(),
            NewRecord {
                case_id: case.clone(),
                evidence_id: format!("m{i}"),
                event: Event::Acquired,
                kind: "memory-image".into(),
                source: Source::default(),
                location: Location::S3 {
                    bucket: bucket.into(),
                    key: key.clone(),
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
        // WHEN it is analysed
        let out = firebreak(&[
            "analyze",
            "--case",
            &case,
            "--evidence",
            &stored.location(),
            "--vol",
            vol.to_str().unwrap(),
            "-q",
        ]);
        // THEN the analysis fails naming the range and offset, and
        // Volatility never ran
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{name}: {}", stderr(&out));
        assert!(!marker.exists(), "{name}: Volatility was run");
    }
}

#[test]
fn evidence_hash_streams_files_and_matches_sha256() {
    let dir = Scratch::new("hash");
    let p = dir.0.join("f");
    std::fs::write(&p, b"abc").unwrap();
    let out = crate::support::firebreak_offline(&["evidence", "hash", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out)
        .starts_with("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  3  "));
    let out = crate::support::firebreak_offline(&["evidence", "hash", "/nonexistent/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/x"));
}

#[tokio::test]
async fn sandbox_a_host_hash_that_differs_from_the_off_host_one_is_named() {
    // GIVEN a case whose memory image was acquired with a host hash that
    // is not the stored object's
    let case = unique("hosthash");
    case_with_evidence(&case).await;
    let config = sdk_config().await;
    let ctx = context(&config);
    let log = ctx.log("test");
    let bucket = evidence_bucket();
    let key = format!("cases/{case}/memory/m.lime");
    let Put::Created(stored) = evidence::put_new(
        &ctx,
        &log,
        bucket,
        &key,
        b"memory".to_vec(),
        "application/octet-stream",
    )
    .await
    .unwrap() else {
        panic!()
    };
    custody::append(
        &ctx,
        &log,
        bucket,
        &Lock::default(),
        NewRecord {
            case_id: case.clone(),
            evidence_id: "m".into(),
            event: Event::Acquired,
            kind: "memory-image".into(),
            source: Source::default(),
            location: Location::S3 {
                bucket: bucket.into(),
                key: key.clone(),
                version_id: stored.version_id.clone(),
            },
            size: Some(stored.digest.size),
            sha256: Some(stored.digest.sha256.clone()),
            host_sha256: Some("0".repeat(64)),
            at: Utc::now(),
            actor: "it".into(),
            tool: "lime".into(),
            tool_version: "1".into(),
            note: None,
            details: None,
            signing_key: None,
        },
    )
    .await
    .unwrap();
    // THEN verify fails and says which record
    let (code, text) = verify(&case);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("record 3 (memory-image") && text.contains("differ"),
        "{text}"
    );
    assert!(text.contains("chain head: record 3"), "{text}");
}
