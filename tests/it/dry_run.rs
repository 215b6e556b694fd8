//! `firebreak respond --dry-run` changes nothing and reports a verdict for
//! every planned call.

use serde_json::Value;

use crate::support::{decoy, firebreak, s, sdk_config, stderr};

/// Everything a respond could change, as the SDK describes it.
async fn describe_all(
    ec2: &aws_sdk_ec2::Client,
    vpc: &str,
    instance: &str,
    volumes: &[String],
) -> String {
    let vpc_filter = aws_sdk_ec2::types::Filter::builder()
        .name("vpc-id")
        .values(vpc)
        .build();
    let instances = ec2
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    let groups = ec2
        .describe_security_groups()
        .filters(vpc_filter.clone())
        .send()
        .await
        .unwrap();
    let enis = ec2
        .describe_network_interfaces()
        .filters(vpc_filter)
        .send()
        .await
        .unwrap();
    // Other tests run at the same time: only this decoy's snapshots count.
    let snaps = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("volume-id")
                .set_values(Some(volumes.to_vec()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut snap_ids: Vec<String> = snaps
        .snapshots()
        .iter()
        .map(|s| format!("{:?}", s))
        .collect();
    snap_ids.sort();
    // Debug output of the SDK types covers every field AWS returned.
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        instances.reservations(),
        groups.security_groups(),
        enis.network_interfaces(),
        snap_ids
    )
}

#[tokio::test]
async fn sandbox_dry_run_changes_nothing_and_lists_verdicts() {
    // GIVEN a decoy
    let d = decoy();
    let instance = s(&d, "instance_id");
    let vpc = s(&d, "vpc_id");
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config().await);
    let volumes: Vec<String> = d["volume_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let before = describe_all(&ec2, &vpc, &instance, &volumes).await;

    // WHEN responding with --dry-run
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-dry-1",
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();

    // THEN the sandbox is unchanged
    let after = describe_all(&ec2, &vpc, &instance, &volumes).await;
    assert_eq!(before, after, "the dry run changed the sandbox");

    // AND every planned mutation carries its DryRun verdict, in order
    let calls = plan["calls"].as_array().unwrap();
    let mutations: Vec<(&str, &str)> = calls
        .iter()
        .filter(|c| c["mutating"] == true)
        .map(|c| {
            (
                c["action"].as_str().unwrap(),
                c["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    let actions: Vec<&str> = mutations.iter().map(|m| m.0).collect();
    assert_eq!(
        actions,
        [
            "ec2:CreateSecurityGroup",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:CreateSecurityGroup",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:CreateTags",
            "ec2:CreateSnapshots",
        ]
    );
    for (action, verdict) in &mutations {
        assert!(
            ["allowed", "not_checked"].contains(verdict),
            "{action}: {verdict}"
        );
    }
    assert!(mutations.iter().filter(|m| m.1 == "allowed").count() >= 7);
    assert_eq!(plan["containment"], "plan_allowed");
    assert_eq!(plan["mode"], "dry_run");
}
