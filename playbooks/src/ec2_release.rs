//! `ec2-release`: undo containment once the investigation allows it.

use firebreak_steps::case::CaseFile;
use firebreak_steps::ec2::{ReleaseInstance, TagInstance};
use firebreak_workflows::builder::{task, Chain, Workflow};
use serde_json::json;

use crate::ec2_contain::on_instance;

/// Restore the recorded pre-incident state, then tag the instance
/// `released`. A failed restore ends the playbook (the tag must not claim a
/// release that did not happen).
pub fn ec2_release() -> Workflow {
    Workflow::new::<CaseFile>(
        "ec2-release",
        "firebreak ec2-release: restore the recorded state of a contained instance, verify by diff, tag it released.",
    )
    .chain(
        Chain::new()
            .then(
                on_instance(task::<ReleaseInstance>("ReleaseInstance"))
                    .bind("evidence_bucket", "$.case.evidence_bucket")
                    .bind("keep_credential_deny", "$.options.keep_credential_deny")
                    .result_at("release"),
            )
            .then(
                on_instance(task::<TagInstance>("TagReleased"))
                    .set("status", json!("released"))
                    .result_at("tags"),
            ),
    )
}
