//! `ec2-release`: undo containment once the investigation allows it.

use firebreak_steps::case::CaseFile;
use firebreak_steps::containment::ec2::{ReleaseInstance, TagInstance};
use firebreak_workflows::builder::{fail_with_recorded, task, Chain, Workflow};
use serde_json::json;

use crate::ec2_contain::on_instance;
use crate::CASE_ACCOUNT;

/// Restore the recorded pre-incident state, then tag the instance
/// `released`. A failed restore tags it `release-failed` and ends the
/// playbook with the restore's error (the tag must never claim a release
/// that did not happen).
pub fn ec2_release() -> Workflow {
    Workflow::new::<CaseFile>(
        "ec2-release",
        "firebreak ec2-release: restore the recorded state of a contained instance, verify by diff, tag it released.",
    )
    .acting_in(CASE_ACCOUNT)
    .chain(
        Chain::new()
            .then(
                on_instance(task::<ReleaseInstance>("ReleaseInstance"))
                    .bind("evidence_bucket", "$.case.evidence_bucket")
                    .bind("credential_deny", "$.options.credential_deny")
                    .result_at("release")
                    .on_failure(
                        "release_instance",
                        Chain::new()
                            .then(
                                on_instance(task::<TagInstance>("TagReleaseFailed"))
                                    .set("status", json!("release_failed"))
                                    .continue_on_failure("tag_instance"),
                            )
                            .then(fail_with_recorded("ReleaseFailed", "release_instance")),
                    ),
            )
            .then(
                on_instance(task::<TagInstance>("TagReleased"))
                    .set("status", json!("released"))
                    .result_at("tags"),
            ),
    )
}
