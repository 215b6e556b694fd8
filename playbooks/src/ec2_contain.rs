//! `ec2-contain`: contain a compromised EC2 instance and preserve its disks.

use firebreak_steps::case::CaseFile;
use firebreak_steps::ec2::{
    AwaitSnapshots, IsolateNetwork, RecordInstanceState, SnapshotVolumes, TagInstance,
};
use firebreak_workflows::builder::{choice, poll, task, Chain, Cond, Workflow};
use serde_json::json;

/// Snapshots are checked every 15 s: EC2 updates snapshot progress every
/// few seconds and DescribeSnapshots is cheap.
const SNAPSHOT_POLL_SECONDS: u64 = 15;
/// 480 checks x 15 s = 2 hours: the first snapshot of a large, busy volume
/// can take over an hour; past two hours something is wrong and the case
/// should say so rather than wait forever.
const SNAPSHOT_POLL_ATTEMPTS: u64 = 480;

/// Record the instance's state, isolate every network interface, tag the
/// instance, snapshot every volume and wait for the snapshots. Every step
/// records its failure on the case and the playbook goes on: a failed
/// record or snapshot never prevents isolation, and isolation comes before
/// anything that can take long.
pub fn ec2_contain() -> Workflow {
    let on_instance = |t: firebreak_workflows::builder::TaskNode| {
        t.bind("case_id", "$.case.case_id")
            .bind("instance_id", "$.case.instance_id")
    };
    let tag_with = |name: &str, status: &str| {
        on_instance(task::<TagInstance>(name))
            .set("status", json!(status))
            .result_at("tags")
            .continue_on_failure("tag_instance")
    };
    Workflow::new::<CaseFile>(
        "ec2-contain",
        "firebreak ec2-contain: record the instance's state, isolate its network, tag it, snapshot its volumes.",
    )
    .chain(
        Chain::new()
            .then(
                on_instance(task::<RecordInstanceState>("RecordInstanceState"))
                    .result_at("instance_state")
                    .continue_on_failure("record_instance_state"),
            )
            .then(
                on_instance(task::<IsolateNetwork>("IsolateNetwork"))
                    .result_at("isolation")
                    .continue_on_failure("isolate_network"),
            )
            .then(
                choice("IsolationSucceeded?")
                    .when(
                        Cond::present("$.isolation"),
                        Chain::new().then(tag_with("TagContained", "contained")),
                    )
                    .otherwise(Chain::new().then(tag_with("TagContainmentFailed", "containment_failed"))),
            )
            .then(
                on_instance(task::<SnapshotVolumes>("SnapshotVolumes"))
                    .result_at("snapshots")
                    .continue_on_failure("snapshot_volumes"),
            )
            .then(
                choice("SnapshotsStarted?").when(
                    Cond::present("$.snapshots"),
                    Chain::new().then(
                        poll(
                            "WaitForSnapshots",
                            task::<AwaitSnapshots>("CheckSnapshots")
                                .bind("snapshot_ids", "$.snapshots.snapshot_ids")
                                .result_at("snapshot_progress")
                                .continue_on_failure("await_snapshots"),
                            Cond::is_true("$.snapshot_progress.all_completed"),
                        )
                        .every(SNAPSHOT_POLL_SECONDS)
                        .at_most(SNAPSHOT_POLL_ATTEMPTS),
                    ),
                ),
            ),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn compiles() {
        let c = crate::compile("ec2-contain").unwrap();
        let names: Vec<&str> = c.steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "record_instance_state",
                "isolate_network",
                "tag_instance",
                "snapshot_volumes",
                "await_snapshots"
            ]
        );
    }
}
