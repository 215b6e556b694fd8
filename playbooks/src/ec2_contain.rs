//! `ec2-contain`: contain a compromised EC2 instance and preserve its disks.

use firebreak_steps::case::CaseFile;
use firebreak_steps::containment::autoscaling::DetachFromAutoScaling;
use firebreak_steps::containment::ec2::{
    AwaitSnapshots, CopySnapshots, CutNetworkAcls, DisassociateElasticIps, HashSnapshots,
    IsolateNetwork, ProtectInstance, ReadSnapshotHashes, RecordInstanceState, SnapshotVolumes,
    TagInstance,
};
use firebreak_steps::containment::elbv2::DeregisterFromTargetGroups;
use firebreak_steps::containment::iam::{RestrictCredentialsToVpc, RevokeInstanceCredentials};
use firebreak_steps::evidence::analysis::{AnalyzeMemory, ReadAnalysis};
use firebreak_steps::evidence::memory::{
    AwaitMemoryCapture, ReadMemoryEvidence, StartMemoryCapture, VerifyMemoryCapture,
};
use firebreak_steps::notify::{AnnounceEnd, AnnounceStart, RequestApproval};
use firebreak_workflows::builder::{
    choice, fail_with_recorded, poll, task, Chain, Cond, TaskNode, Workflow,
};
use serde_json::json;

use crate::CASE_ACCOUNT;

/// Snapshots are checked every 15 s: EC2 updates snapshot progress every
/// few seconds and DescribeSnapshots is cheap.
const SNAPSHOT_POLL_SECONDS: u64 = 15;
/// 480 checks x 15 s = 2 hours: the first snapshot of a large, busy volume
/// can take over an hour; past two hours something is wrong and the case
/// should say so rather than wait forever.
const SNAPSHOT_POLL_ATTEMPTS: u64 = 480;

/// Forensic copies are checked every 30 s: a cross-region copy of a large
/// snapshot takes tens of minutes, and the first call starts them.
const COPY_POLL_SECONDS: u64 = 30;
/// 480 x 30 s = 4 hours: cross-region copies of large snapshots are slow;
/// past that the case records the give-up and the copies carry on in AWS.
const COPY_POLL_ATTEMPTS: u64 = 480;

/// Binds the case and instance ids every instance step takes.
pub(crate) fn on_instance(t: TaskNode) -> TaskNode {
    t.bind("case_id", "$.case.case_id")
        .bind("instance_id", "$.case.instance_id")
}

/// The containment steps in the order experts use: record the state that
/// release will restore, protect it from termination, take it out of its
/// Auto Scaling group (once isolated it fails its health checks, and the
/// group would replace it; termination protection does not stop a group),
/// cut the network in two moves, take away public addresses and load
/// balancers, revoke credentials, tag; then preserve the disks. Every step records its
/// failure on the case and the playbook goes on: a failed record or snapshot
/// never prevents isolation, and isolation comes before anything that can
/// take long.
pub fn ec2_contain() -> Workflow {
    Workflow::new::<CaseFile>(
        "ec2-contain",
        "firebreak ec2-contain: record, protect, isolate, take EIPs/ASG/target groups/credentials away, tag, snapshot.",
    )
    .acting_in(CASE_ACCOUNT)
    .chain(announced(containment(false)))
}

/// The network-ACL cut, unless the case turned it off.
fn nacl_cut() -> firebreak_workflows::builder::ChoiceNode {
    choice("NaclCutWanted?").when(
        Cond::not(Cond::and(vec![
            Cond::present("$.options.skip_nacl_cut"),
            Cond::is_true("$.options.skip_nacl_cut"),
        ])),
        Chain::new().then(
            on_instance(task::<CutNetworkAcls>("CutNetworkAcls"))
                .bind("evidence_bucket", "$.case.evidence_bucket")
                .bind("exemptions", "$.options.isolation_exemptions")
                .bind("options", "$.options")
                .result_at("network_acls")
                .continue_on_failure("cut_network_acls"),
        ),
    )
}

/// Memory is polled every 15 s: the host writes and uploads the image in
/// minutes (a few per 10 GiB).
const MEMORY_POLL_SECONDS: u64 = 15;
/// 2880 x 15 s = 12 hours, the longest the presigned URLs may live; the
/// wait itself fails as soon as the URLs of the capture have expired.
const MEMORY_POLL_ATTEMPTS: u64 = 2880;

/// `ec2-compromise`: containment with the volatile evidence first. Memory
/// is captured once the instance is isolated (its SSM agent reaches SSM
/// and S3 through the `--allow-https-to` exemptions) and before its
/// credentials are revoked: the agent uses the instance profile unless
/// Default Host Management is on. The image is analysed in a container
/// (`ecs:runTask.sync`: Volatility needs more than a Lambda's 15 minutes
/// and disk), then its findings are read into the case.
pub fn ec2_compromise() -> Workflow {
    Workflow::new::<CaseFile>(
        "ec2-compromise",
        "firebreak ec2-compromise: contain, capture memory over SSM (LiME/AVML), snapshot, analyse the memory with Volatility 3.",
    )
    .acting_in(CASE_ACCOUNT)
    .chain(announced(containment(true)))
}

/// How long an approval may wait: a day, so that a run held overnight
/// can still be approved in the morning; past that the run ends, changing
/// nothing, and a new alert or `respond` starts again.
const APPROVAL_TIMEOUT_SECONDS: u64 = 24 * 3600;

/// The gate before the first change, when the case asks for approval:
/// the responders are asked (with the token), and the run waits; a denial
/// or no answer in time ends it before anything was changed.
fn approval_gate() -> firebreak_workflows::builder::ChoiceNode {
    choice("ApprovalRequired?").when(
        Cond::given("$.options.approval"),
        Chain::new().then(
            task::<RequestApproval>("WaitForApproval")
                .bind("case_id", "$.case.case_id")
                .bind("instance_id", "$.case.instance_id")
                .bind("reason", "$.options.approval")
                .wait_for_token(APPROVAL_TIMEOUT_SECONDS)
                .result_at("approval")
                .on_failure(
                    "approval",
                    Chain::new().then(fail_with_recorded(
                        crate::report::NOT_APPROVED_STATE,
                        "approval",
                    )),
                ),
        ),
    )
}

/// The start announcement (a failure to tell is recorded, never stops
/// containment).
fn announce_start() -> TaskNode {
    task::<AnnounceStart>("AnnounceStart")
        .input_from("$")
        .result_at("announced_start")
        .continue_on_failure("announce_start")
}

/// Every playbook run that changes things is wrapped the same way: the
/// approval gate, the start announcement, the work, the end announcement.
fn announced(work: Chain) -> Chain {
    let mut chain = Chain::new().then(approval_gate()).then(announce_start());
    chain.build_errors.extend(work.build_errors);
    for node in work.nodes {
        chain = chain.then(node);
    }
    chain.then(
        task::<AnnounceEnd>("AnnounceEnd")
            .input_from("$")
            .result_at("announced_end")
            .continue_on_failure("announce_end"),
    )
}

fn containment(memory: bool) -> Chain {
    let tag_with = |name: &str, status: &str| {
        on_instance(task::<TagInstance>(name))
            .set("status", json!(status))
            .result_at("tags")
            .continue_on_failure("tag_instance")
    };
    let mut chain = Chain::new()
        .then(
            on_instance(task::<RecordInstanceState>("RecordInstanceState"))
                .bind("evidence_bucket", "$.case.evidence_bucket")
                .bind("evidence_lock", "$.case.evidence_lock")
                .bind("actor", "$.case.actor")
                .result_at("instance_state")
                .continue_on_failure("record_instance_state"),
        )
        .then(
            on_instance(task::<ProtectInstance>("ProtectInstance"))
                .result_at("protection")
                .continue_on_failure("protect_instance"),
        )
        .then(
            on_instance(task::<DetachFromAutoScaling>("DetachFromAutoScaling"))
                .bind("mode", "$.options.asg_mode")
                .result_at("auto_scaling")
                .continue_on_failure("detach_from_autoscaling"),
        )
        // Public paths go before the moves: the allow-all moment between
        // them never has an Elastic IP or a load balancer attached.
        .then(
            on_instance(task::<DisassociateElasticIps>("DisassociateElasticIps"))
                .result_at("elastic_ips")
                .continue_on_failure("disassociate_elastic_ips"),
        )
        .then(
            on_instance(task::<DeregisterFromTargetGroups>(
                "DeregisterFromTargetGroups",
            ))
            .result_at("target_groups")
            .continue_on_failure("deregister_from_target_groups"),
        )
        .then(
            on_instance(task::<IsolateNetwork>("IsolateNetwork"))
                .bind("exemptions", "$.options.isolation_exemptions")
                .bind("evidence_bucket", "$.case.evidence_bucket")
                .result_at("isolation")
                .continue_on_failure("isolate_network"),
        );
    if memory {
        // The role keeps working through the VPC's endpoints while memory
        // is captured (the SSM agent may use it); anywhere else, at once.
        chain = chain.then(
            on_instance(task::<RestrictCredentialsToVpc>("RestrictCredentialsToVpc"))
                .result_at("credentials_in_vpc")
                .continue_on_failure("restrict_credentials_to_vpc"),
        );
    } else {
        chain = chain.then(nacl_cut());
    }
    if memory {
        chain = chain
            .then(
                on_instance(task::<StartMemoryCapture>("StartMemoryCapture"))
                    .bind("evidence_bucket", "$.case.evidence_bucket")
                    .bind("evidence_lock", "$.case.evidence_lock")
                    .bind("options", "$.options.memory")
                    .result_at("memory_capture")
                    .continue_on_failure("start_memory_capture"),
            )
            .then(
                choice("MemoryCaptureStarted?").when(
                    Cond::present("$.memory_capture"),
                    Chain::new()
                        .then(
                            poll(
                                "WaitForMemory",
                                task::<AwaitMemoryCapture>("CheckMemoryCapture")
                                    .bind("case_id", "$.case.case_id")
                                    .bind("evidence_bucket", "$.case.evidence_bucket")
                                    .bind("evidence_lock", "$.case.evidence_lock")
                                    .bind("actor", "$.case.actor")
                                    .bind("capture", "$.memory_capture")
                                    .result_at("memory_progress")
                                    .continue_on_failure("await_memory_capture"),
                                Cond::is_true("$.memory_progress.done"),
                            )
                            .every(MEMORY_POLL_SECONDS)
                            .at_most(MEMORY_POLL_ATTEMPTS),
                        )
                        .then(
                            choice("MemoryReported?").when(
                                Cond::and(vec![
                                    Cond::present("$.memory_progress"),
                                    Cond::is_true("$.memory_progress.done"),
                                ]),
                                Chain::new()
                                    .then(
                                        // One pass over the whole image: a
                                        // container, not a 15-minute Lambda.
                                        task::<VerifyMemoryCapture>("VerifyMemoryCapture")
                                            .bind("case_id", "$.case.case_id")
                                            .bind("evidence_bucket", "$.case.evidence_bucket")
                                            .bind("evidence_lock", "$.case.evidence_lock")
                                            .bind("actor", "$.case.actor")
                                            .bind("capture", "$.memory_capture")
                                            .in_container()
                                            .continue_on_failure("verify_memory_capture"),
                                    )
                                    .then(
                                        task::<ReadMemoryEvidence>("ReadMemoryEvidence")
                                            .bind("case_id", "$.case.case_id")
                                            .bind("evidence_bucket", "$.case.evidence_bucket")
                                            .bind("evidence_lock", "$.case.evidence_lock")
                                            .bind("actor", "$.case.actor")
                                            .bind("capture", "$.memory_capture")
                                            .result_at("memory_progress")
                                            .continue_on_failure("read_memory_evidence"),
                                    ),
                            ),
                        ),
                ),
            );
    }
    if memory {
        // After the capture (finished or failed): the ACL entries would cut
        // the uploads through a NAT gateway or an endpoint in another
        // subnet.
        chain = chain.then(nacl_cut());
    }
    chain = chain
        .then(
            on_instance(task::<RevokeInstanceCredentials>(
                "RevokeInstanceCredentials",
            ))
            .bind("evidence_bucket", "$.case.evidence_bucket")
            .result_at("credentials")
            .continue_on_failure("revoke_instance_credentials"),
        )
        // A second look before tagging: interfaces attached since
        // isolation (container networking attaches them at any time) are
        // isolated too.
        .then(
            choice("IsolationDone?").when(
                Cond::present("$.isolation"),
                Chain::new().then(
                    on_instance(task::<IsolateNetwork>("IsolateLateInterfaces"))
                        .bind("exemptions", "$.options.isolation_exemptions")
                        .bind("evidence_bucket", "$.case.evidence_bucket")
                        .result_at("isolation_recheck")
                        .continue_on_failure("isolate_late_interfaces"),
                ),
            ),
        )
        .then(
            choice("IsolationSucceeded?")
                .when(
                    Cond::present("$.isolation"),
                    Chain::new().then(tag_with("TagContained", "contained")),
                )
                .otherwise(
                    Chain::new().then(tag_with("TagContainmentFailed", "containment_failed")),
                ),
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
        );
    chain = chain.then(
        choice("HashSnapshotsRequested?").when(
            Cond::and(vec![
                Cond::present("$.snapshots"),
                Cond::present("$.snapshot_progress"),
                Cond::is_true("$.snapshot_progress.all_completed"),
                Cond::present("$.options.hash_snapshots"),
                Cond::is_true("$.options.hash_snapshots"),
            ]),
            Chain::new()
                .then(
                    task::<HashSnapshots>("HashSnapshots")
                        .bind("case_id", "$.case.case_id")
                        .bind("snapshot_ids", "$.snapshots.snapshot_ids")
                        .bind("evidence_bucket", "$.case.evidence_bucket")
                        .bind("evidence_lock", "$.case.evidence_lock")
                        .bind("actor", "$.case.actor")
                        // Hours for large volumes: where time is not
                        // limited; the hashes go to custody.
                        .in_container()
                        .continue_on_failure("hash_snapshots"),
                )
                .then(
                    task::<ReadSnapshotHashes>("ReadSnapshotHashes")
                        .bind("case_id", "$.case.case_id")
                        .bind("evidence_bucket", "$.case.evidence_bucket")
                        .bind("snapshot_ids", "$.snapshots.snapshot_ids")
                        .result_at("snapshot_hashes")
                        .continue_on_failure("read_snapshot_hashes"),
                ),
        ),
    );
    if memory {
        chain = chain.then(
            choice("MemoryCaptured?").when(
                Cond::and(vec![
                    Cond::present("$.memory_progress"),
                    Cond::given("$.memory_progress.evidence"),
                ]),
                Chain::new()
                    .then(
                        task::<AnalyzeMemory>("AnalyzeMemory")
                            .bind("case_id", "$.case.case_id")
                            .bind("evidence", "$.memory_progress.evidence.location")
                            .bind("evidence_bucket", "$.case.evidence_bucket")
                            .bind("evidence_lock", "$.case.evidence_lock")
                            .bind("actor", "$.case.actor")
                            .bind("tools_bucket", "$.options.memory.tools_bucket")
                            .in_container()
                            .continue_on_failure("analyze_memory"),
                    )
                    .then(
                        task::<ReadAnalysis>("ReadAnalysis")
                            .bind("case_id", "$.case.case_id")
                            .bind("evidence_bucket", "$.case.evidence_bucket")
                            .bind("evidence_id", "$.memory_progress.evidence.evidence_id")
                            .result_at("analysis")
                            .continue_on_failure("read_analysis"),
                    ),
            ),
        );
    }
    chain.then(
        choice("ForensicCopyRequested?").when(
            Cond::and(vec![
                Cond::present("$.snapshots"),
                Cond::present("$.snapshot_progress"),
                Cond::is_true("$.snapshot_progress.all_completed"),
                Cond::given("$.options.forensic_copy"),
            ]),
            Chain::new().then(
                poll(
                    "WaitForForensicCopies",
                    task::<CopySnapshots>("CopySnapshotsToForensics")
                        .bind("case_id", "$.case.case_id")
                        .bind("snapshot_ids", "$.snapshots.snapshot_ids")
                        .bind("target", "$.options.forensic_copy")
                        .result_at("forensic_copies")
                        .continue_on_failure("copy_snapshots"),
                    Cond::is_true("$.forensic_copies.all_completed"),
                )
                .every(COPY_POLL_SECONDS)
                .at_most(COPY_POLL_ATTEMPTS),
            ),
        ),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn compiles_with_every_containment_step_in_order() {
        let c = crate::compile("ec2-contain").unwrap();
        let names: Vec<&str> = c.steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "request_approval",
                "announce_start",
                "record_instance_state",
                "protect_instance",
                "detach_from_autoscaling",
                "disassociate_elastic_ips",
                "deregister_from_target_groups",
                "isolate_network",
                "cut_network_acls",
                "revoke_instance_credentials",
                "tag_instance",
                "snapshot_volumes",
                "await_snapshots",
                "hash_snapshots",
                "read_snapshot_hashes",
                "copy_snapshots",
                "announce_end"
            ]
        );
    }
}
