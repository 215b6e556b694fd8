//! `firebreak respond` against a decoy in the sandbox: isolation per
//! interface, snapshots per volume, the summary, and idempotency.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{decoy, firebreak, s, sdk_config, stderr, stdout};

async fn groups_in_vpc(ec2: &aws_sdk_ec2::Client, vpc: &str) -> BTreeSet<String> {
    ec2.describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(vpc)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .security_groups()
        .iter()
        .map(|g| g.group_id().unwrap().to_string())
        .collect()
}

async fn snapshots_of_case(
    ec2: &aws_sdk_ec2::Client,
    case: &str,
) -> Vec<aws_sdk_ec2::types::Snapshot> {
    ec2.describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:firebreak:case")
                .values(case)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots()
        .to_vec()
}

#[tokio::test]
async fn sandbox_respond_isolates_every_interface_and_snapshots_every_volume() {
    // GIVEN a decoy with two interfaces (one with IPv6), an open group and
    // two volumes
    let d = decoy();
    let instance = s(&d, "instance_id");
    let vpc = s(&d, "vpc_id");
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config().await);

    // WHEN firebreak responds
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-respond-1",
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}\nstdout:\n{}",
        stderr(&out),
        stdout(&out)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();

    // THEN every interface carries only the no-rule isolation group, read
    // back per interface
    let iso_group = summary["isolation"]["groups"][0]["isolation_group_id"]
        .as_str()
        .unwrap()
        .to_string();
    let enis = ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(
            d["network_interface_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(enis.network_interfaces().len(), 2);
    for eni in enis.network_interfaces() {
        let groups: Vec<&str> = eni.groups().iter().map(|g| g.group_id().unwrap()).collect();
        assert_eq!(
            groups,
            [iso_group.as_str()],
            "{:?}",
            eni.network_interface_id()
        );
    }
    let first = enis
        .network_interfaces()
        .iter()
        .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
        .unwrap();
    assert!(
        !first.ipv6_addresses().is_empty(),
        "the decoy's first interface has IPv6"
    );

    // AND the isolation group has no rules at all, IPv4 or IPv6
    let g = ec2
        .describe_security_groups()
        .group_ids(&iso_group)
        .send()
        .await
        .unwrap();
    let g = &g.security_groups()[0];
    assert!(
        g.ip_permissions().is_empty(),
        "ingress: {:?}",
        g.ip_permissions()
    );
    assert!(
        g.ip_permissions_egress().is_empty(),
        "egress: {:?}",
        g.ip_permissions_egress()
    );
    assert_eq!(g.vpc_id(), Some(vpc.as_str()));

    // AND every volume has a completed snapshot tagged with the case, named
    // in the summary
    let snaps = snapshots_of_case(&ec2, "it-respond-1").await;
    let volumes: BTreeSet<String> = d["volume_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let snapped: BTreeSet<String> = snaps
        .iter()
        .map(|s| s.volume_id().unwrap().to_string())
        .collect();
    assert_eq!(snapped, volumes);
    for snap in &snaps {
        assert_eq!(snap.state().map(|s| s.as_str()), Some("completed"));
        let id = snap.snapshot_id().unwrap();
        let named = summary["snapshots"]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["snapshot_id"] == id);
        assert!(named, "{id} is not named in the summary");
    }
    assert_eq!(summary["containment"], "complete");
    assert_eq!(summary["failures"].as_array().unwrap().len(), 0);

    // WHEN the same command runs again
    let groups_before = groups_in_vpc(&ec2, &vpc).await;
    let again = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-respond-1",
        "--output",
        "json",
    ]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();

    // THEN it changes nothing: no second group, no second snapshot, no
    // mutating call at all
    assert_eq!(groups_in_vpc(&ec2, &vpc).await, groups_before);
    assert_eq!(
        snapshots_of_case(&ec2, "it-respond-1").await.len(),
        snaps.len()
    );
    assert_eq!(again["isolation"]["changed"], false);
    let mutations: Vec<&Value> = again["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["mutating"] == true)
        .collect();
    assert!(
        mutations.is_empty(),
        "second run made changes: {mutations:?}"
    );
}

#[tokio::test]
async fn sandbox_respond_without_case_continues_the_tagged_case() {
    // GIVEN a decoy contained once without --case
    let d = decoy();
    let instance = s(&d, "instance_id");
    let first = firebreak(&["respond", "--instance", &instance, "--output", "json", "-q"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    // WHEN responding again without --case
    let second = firebreak(&["respond", "--instance", &instance, "--output", "json", "-q"]);
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();
    // THEN the same case continues and no new snapshot is taken
    assert_eq!(first["case_id"], second["case_id"]);
    assert_eq!(
        second["snapshots"]["created_snapshot_ids"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn sandbox_respond_refuses_bad_input_with_exit_2() {
    for (args, needle) in [
        (
            vec!["respond", "--instance", "not-an-instance"],
            "not an EC2 instance id",
        ),
        (
            vec![
                "respond",
                "--instance",
                "i-0123456789abcdef0",
                "--case",
                "bad case",
            ],
            "not a valid case id",
        ),
        (
            vec!["respond", "--instance", "i-0123456789abcdef0"],
            "does not exist",
        ),
        (
            vec![
                "respond",
                "--instance",
                "i-0123456789abcdef0",
                "--playbook",
                "nope",
            ],
            "no playbook named",
        ),
    ] {
        let out = firebreak(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn sandbox_a_killed_respond_is_finished_by_resume_without_rerunning_finished_steps() {
    use std::os::unix::process::CommandExt;
    // GIVEN a respond on a decoy, killed (SIGKILL) once a step that calls
    // AWS has finished (the first, AnnounceStart, calls nothing without a
    // topic: its attempt notes no call)
    let d = decoy();
    let instance = s(&d, "instance_id");
    let state =
        std::env::temp_dir().join(format!("firebreak-respond-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let journals = state.join("executions");
    let journal = || -> Option<(std::path::PathBuf, String)> {
        let entry = std::fs::read_dir(&journals).ok()?.next()?.ok()?;
        let text = std::fs::read_to_string(entry.path()).ok()?;
        Some((entry.path(), text))
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args([
            "respond",
            "--instance",
            &instance,
            "--case",
            "it-resume-1",
            "--output",
            "json",
        ])
        .env("FIREBREAK_STATE_DIR", &state)
        .env("AWS_ENDPOINT_URL", crate::support::sandbox_url())
        .env("AWS_REGION", crate::support::REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut tries = 0;
    while !journal().is_some_and(|(_, t)| t.contains(r#""t":"note""#)) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "respond ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        tries += 1;
        assert!(tries < 30_000, "respond never finished a step");
    }
    std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    let _ = child.wait();
    let (path, before) = journal().unwrap();
    assert!(!before.contains(r#""t":"end""#), "killed before the end");
    let finished_before = before.matches(r#""t":"attempt""#).count();

    // WHEN it is resumed
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["resume", &name])
        .env("FIREBREAK_STATE_DIR", &state)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_REGION")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();

    // THEN containment completes (the journal remembers the endpoint and
    // region), with the summary of the whole run
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["containment"], "complete", "{report}");
    assert_eq!(report["case_id"], "it-resume-1");
    // AND no step attempt that had finished ran again
    let after = std::fs::read_to_string(&path).unwrap();
    let mut attempts = std::collections::HashSet::new();
    for line in after.lines().filter(|l| l.contains(r#""t":"attempt""#)) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            attempts.insert((v["key"].to_string(), v["n"].to_string())),
            "attempt {} {} ran twice",
            v["key"],
            v["n"]
        );
    }
    assert!(
        attempts.len() > finished_before,
        "the resume ran the remaining steps"
    );
    assert!(after.contains(r#""t":"end""#));
    // AND the summary lists the calls of the whole run, those the steps
    // finished before the kill made included (the journal noted them)
    let call = |c: &Value| (c["step"].to_string(), c["action"].to_string());
    let noted: Vec<(String, String)> = before
        .lines()
        .filter(|l| l.contains(r#""t":"note""#))
        .map(|l| call(&serde_json::from_str::<Value>(l).unwrap()["note"]["call"]))
        .collect();
    assert!(!noted.is_empty(), "the first step's calls were noted");
    let listed: Vec<(String, String)> = report["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(call)
        .collect();
    for n in &noted {
        assert!(
            listed.contains(n),
            "the call {n:?} made before the kill is not in the summary"
        );
    }
}
