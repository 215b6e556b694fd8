//! Disk images hashed through the EBS direct APIs: `evidence
//! hash-snapshot` and the `hash_snapshots` step against snapshots written
//! block by block into the sandbox (moto's EBS direct API only holds
//! snapshots made through it, and lists blocks of 512 bytes).

use std::io::{Seek, SeekFrom, Write};
use std::process::Command;

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::ChecksumAlgorithm;
use base64::Engine as _;
use chrono::Utc;
use serde_json::Value;

use crate::memory::Scratch;
use crate::support::{evidence_bucket, firebreak, sdk_config, stderr, stdout};

/// The block size moto's EBS direct API reports (AWS: 524288).
const BLOCK: usize = 512;
const GIB: u64 = 1 << 30;

fn block(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn checksum(data: &[u8]) -> String {
    let hex = firebreak_forensics::hash::sha256_bytes(data).sha256;
    base64::engine::general_purpose::STANDARD.encode(hex::decode(hex).unwrap())
}

/// A 1 GiB snapshot with these blocks written (index, data); a block
/// whose checksum is given wrong keeps it (moto checks none).
async fn snapshot(blocks: &[(i32, Vec<u8>)], wrong_checksum: Option<i32>) -> String {
    let ebs = aws_sdk_ebs::Client::new(&sdk_config().await);
    let id = ebs
        .start_snapshot()
        .volume_size(1)
        .description("firebreak test image")
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    for (i, data) in blocks {
        let sum = if Some(*i) == wrong_checksum {
            checksum(b"something else")
        } else {
            checksum(data)
        };
        ebs.put_snapshot_block()
            .snapshot_id(&id)
            .block_index(*i)
            .block_data(ByteStream::from(data.clone()))
            .data_length(data.len() as i32)
            .checksum(sum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .send()
            .await
            .unwrap();
    }
    ebs.complete_snapshot()
        .snapshot_id(&id)
        .changed_blocks_count(blocks.len() as i32)
        .send()
        .await
        .unwrap();
    id
}

/// `sha256sum` of the same volume: a sparse 1 GiB file with the blocks
/// written where they belong (never-written blocks read as zeros).
fn sha256sum_of(dir: &Scratch, blocks: &[(i32, Vec<u8>)]) -> String {
    let path = dir.0.join("volume.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(GIB).unwrap();
    for (i, data) in blocks {
        f.seek(SeekFrom::Start(*i as u64 * BLOCK as u64)).unwrap();
        f.write_all(data).unwrap();
    }
    drop(f);
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Blocks written: the first, scattered ones, a run of adjacent ones
/// (more than the reads in flight, so that they come back out of order
/// and must be put in order), and the very last.
fn written() -> Vec<(i32, Vec<u8>)> {
    let last = (GIB / BLOCK as u64) as i32 - 1;
    let mut at: Vec<i32> = vec![0, 1, 7, 100_000, 1_048_576, last];
    at.extend(4096..4096 + 3 * firebreak_steps::containment::ec2::BLOCKS_IN_FLIGHT as i32);
    at.sort();
    at.iter().map(|&i| (i, block(i as u64 + 1))).collect()
}

#[tokio::test]
async fn sandbox_a_snapshot_hashes_as_sha256sum_of_the_same_volume() {
    // GIVEN a 1 GiB snapshot with 54 blocks written, sparse elsewhere
    let dir = Scratch::new("snaphash");
    let blocks = written();
    let id = snapshot(&blocks, None).await;
    let expected = sha256sum_of(&dir, &blocks);

    // WHEN firebreak hashes it through the EBS direct APIs
    let manifest = dir.0.join("blocks.txt");
    let out = firebreak(&[
        "evidence",
        "hash-snapshot",
        &id,
        "--manifest",
        manifest.to_str().unwrap(),
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    // THEN its SHA-256 is sha256sum's of the same bytes, unwritten blocks
    // counted as the zeros they read as
    assert_eq!(d["sha256"], expected.as_str(), "{d:#}");
    assert_eq!(d["size"], GIB);
    assert_eq!(d["blocks_written"], blocks.len());
    assert_eq!(d["blocks"], GIB / BLOCK as u64);
    // AND the manifest lists each written block's SHA-256, by index
    let lines: Vec<String> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = blocks
        .iter()
        .map(|(i, b)| format!("{i} {}", firebreak_forensics::hash::sha256_bytes(b).sha256))
        .collect();
    assert_eq!(lines, want);
}

#[tokio::test]
async fn sandbox_hash_snapshots_records_the_image_and_its_manifest_in_custody() {
    // GIVEN a case with a snapshot (and the evidence bucket)
    let _ = evidence_bucket();
    let dir = Scratch::new("snapcustody");
    let blocks = written();
    let id = snapshot(&blocks, None).await;
    let expected = sha256sum_of(&dir, &blocks);
    let case = format!("it-snap-{}", Utc::now().timestamp_micros());

    // WHEN it is hashed for the case, twice
    let run = || {
        firebreak(&[
            "evidence",
            "hash-snapshot",
            &id,
            "--case",
            &case,
            "--output",
            "json",
            "-q",
        ])
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let second = run();
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();

    // THEN custody holds the image's hash and the manifest, once
    assert_eq!(first["sha256"], expected.as_str());
    assert_eq!(second["reused"], true);
    assert_eq!(second["custody_sequence"], first["custody_sequence"]);
    let list = firebreak(&[
        "evidence", "list", "--case", &case, "--output", "json", "-q",
    ]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let records = list["custody"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{list:#}");
    let image = records
        .iter()
        .find(|r| r["kind"] == "ebs-snapshot")
        .unwrap();
    assert_eq!(image["sha256"], expected.as_str());
    assert_eq!(image["location"]["snapshot_id"], id.as_str());
    assert_eq!(image["details"]["blocks_written"], blocks.len());
    assert!(records.iter().any(|r| r["kind"] == "ebs-block-manifest"));
    // AND the case verifies (the manifest re-hashed, the snapshot found:
    // moto's EC2 does not know snapshots made through EBS direct, so it
    // is reported missing there, and only there)
    let out = firebreak(&["evidence", "verify", "--case", &case, "-q"]);
    let text = stdout(&out);
    assert!(text.contains("ok intact   ebs-block-manifest"), "{text}");
}

#[tokio::test]
async fn sandbox_a_block_whose_checksum_does_not_match_is_named() {
    let blocks = written();
    let id = snapshot(&blocks, Some(4096)).await;
    let out = firebreak(&["evidence", "hash-snapshot", &id, "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let e = stderr(&out);
    assert!(
        e.contains(&format!("{id} block 4096")) && e.contains("altered"),
        "{e}"
    );
}
