//! The end-of-run summary of `respond`: for people, or as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use firebreak_forensics::instance_state::{InstanceStateRecord, SealedRecord};
use firebreak_steps::case::CaseInfo;
use firebreak_steps::context::{CallRecord, Verdict};
use firebreak_steps::ec2::{IsolationOutput, SnapshotProgress, SnapshotSet, TagOutput};
use firebreak_steps::Mode;
use firebreak_workflows::exec::{Outcome, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exit;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryFormat {
    Human,
    Json,
}

/// Where containment stands at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Containment {
    /// Every step succeeded.
    Complete,
    /// The playbook ran to the end but some steps failed (listed).
    Partial,
    /// The execution itself failed.
    Failed,
    /// Dry run: every planned change would be allowed.
    PlanAllowed,
    /// Dry run: some planned change would be refused.
    PlanDenied,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepFailure {
    pub step: String,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// The case file as `ec2-contain` leaves it.
#[derive(Debug, Default, Deserialize)]
struct CaseOutput {
    instance_state: Option<SealedRecord<InstanceStateRecord>>,
    isolation: Option<IsolationOutput>,
    tags: Option<TagOutput>,
    snapshots: Option<SnapshotSet>,
    snapshot_progress: Option<SnapshotProgress>,
    #[serde(default)]
    failures: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub playbook: String,
    pub case_id: String,
    pub instance_id: String,
    pub account_id: String,
    pub region: String,
    pub mode: Mode,
    pub containment: Containment,
    pub execution: Outcome,
    pub duration_seconds: f64,
    pub instance_state: Option<SealedRecord<InstanceStateRecord>>,
    pub isolation: Option<IsolationOutput>,
    pub tags: Option<TagOutput>,
    pub snapshots: Option<SnapshotSet>,
    pub snapshot_progress: Option<SnapshotProgress>,
    pub failures: Vec<StepFailure>,
    /// Every AWS call, in order (the plan, in a dry run).
    pub calls: Vec<CallRecord>,
}

impl Summary {
    pub fn build(
        playbook: &str,
        case: &CaseInfo,
        mode: Mode,
        outcome: &Outcome,
        calls: Vec<CallRecord>,
        took: Duration,
    ) -> Summary {
        let out: CaseOutput = outcome
            .output
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let failures: Vec<StepFailure> = out
            .failures
            .iter()
            .map(|(step, v)| StepFailure {
                step: step.clone(),
                error: v.get("Error").and_then(Value::as_str).map(str::to_string),
                cause: v.get("Cause").and_then(Value::as_str).map(str::to_string),
            })
            .collect();
        let denied = calls
            .iter()
            .any(|c| matches!(c.verdict, Verdict::Denied(_)));
        let containment = match (mode, outcome.status) {
            (_, Status::Failed | Status::TimedOut) => Containment::Failed,
            (Mode::DryRun, _) if denied || !failures.is_empty() => Containment::PlanDenied,
            (Mode::DryRun, _) => Containment::PlanAllowed,
            (Mode::Live, _) if failures.is_empty() => Containment::Complete,
            (Mode::Live, _) => Containment::Partial,
        };
        Summary {
            playbook: playbook.to_string(),
            case_id: case.case_id.clone(),
            instance_id: case.instance_id.clone(),
            account_id: case.account_id.clone(),
            region: case.region.clone(),
            mode,
            containment,
            execution: outcome.clone(),
            duration_seconds: took.as_secs_f64(),
            instance_state: out.instance_state,
            isolation: out.isolation,
            tags: out.tags,
            snapshots: out.snapshots,
            snapshot_progress: out.snapshot_progress,
            failures,
            calls,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self.containment {
            Containment::Complete | Containment::PlanAllowed => exit::OK,
            Containment::Partial | Containment::PlanDenied => exit::PARTIAL,
            Containment::Failed => exit::FAILED,
        }
    }

    pub fn print(&self, format: SummaryFormat) {
        match format {
            SummaryFormat::Json => {
                println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
            }
            SummaryFormat::Human => print!("{}", self.human()),
        }
    }

    fn human(&self) -> String {
        let mut o = String::new();
        let mut line = |s: String| {
            o.push_str(&s);
            o.push('\n');
        };
        line(String::new());
        line(format!(
            "Case {}: {} on {} (account {}, region {})",
            self.case_id, self.playbook, self.instance_id, self.account_id, self.region
        ));
        line(format!(
            "Result: {} in {:.1} s",
            match self.containment {
                Containment::Complete => "containment COMPLETE",
                Containment::Partial => "containment PARTIAL (see failures)",
                Containment::Failed => "execution FAILED",
                Containment::PlanAllowed =>
                    "dry run: every planned change would be allowed; nothing was changed",
                Containment::PlanDenied =>
                    "dry run: some planned changes would be REFUSED; nothing was changed",
            },
            self.duration_seconds
        ));
        if self.mode == Mode::DryRun {
            line(String::new());
            line("Plan (in order):".into());
            for (i, c) in self.calls.iter().enumerate() {
                let verdict = match &c.verdict {
                    Verdict::Read => "read (made)".to_string(),
                    Verdict::Done => "made".to_string(),
                    Verdict::Allowed => "would be allowed (DryRun)".to_string(),
                    Verdict::Denied(m) => format!("would be REFUSED (DryRun): {m}"),
                    Verdict::NotChecked(why) => format!("not checked: {why}"),
                };
                line(format!(
                    "  {:>2}. [{}] {} {}",
                    i + 1,
                    c.step,
                    c.action,
                    c.parameters
                ));
                line(format!("      -> {verdict}"));
            }
        } else {
            line(String::new());
            if let Some(s) = &self.instance_state {
                line(format!(
                    "  ok  state recorded: {} network interface(s), {} volume(s), profile {}; sha256 {}",
                    s.record.network_interfaces.len(),
                    s.record.volumes.len(),
                    s.record
                        .instance_profile
                        .as_ref()
                        .and_then(|p| p.arn.as_deref())
                        .unwrap_or("none"),
                    s.digest.sha256
                ));
            }
            if let Some(iso) = &self.isolation {
                line(format!(
                    "  ok  network isolated{}:",
                    if iso.changed {
                        ""
                    } else {
                        " (already isolated, nothing changed)"
                    }
                ));
                for g in &iso.groups {
                    line(format!(
                        "        {}: isolation group {} (no rules), transition group {}{}",
                        g.vpc_id,
                        g.isolation_group_id,
                        g.transition_group_id,
                        if g.created_group_ids.is_empty() {
                            ""
                        } else {
                            ", created now"
                        }
                    ));
                }
                for i in &iso.interfaces {
                    line(format!(
                        "        {}: {} -> {}",
                        i.network_interface_id,
                        i.previous_group_ids.join(","),
                        i.group_ids.join(",")
                    ));
                }
            }
            if let Some(t) = &self.tags {
                line(format!(
                    "  ok  tagged: {}",
                    t.tags
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(s) = &self.snapshots {
                let done = self
                    .snapshot_progress
                    .as_ref()
                    .filter(|p| p.all_completed)
                    .map(|_| "completed")
                    .unwrap_or("not confirmed complete");
                line(format!(
                    "  ok  snapshots ({done}{}):",
                    if s.created_snapshot_ids.is_empty() {
                        ", all taken earlier for this case"
                    } else {
                        ""
                    }
                ));
                for snap in &s.snapshots {
                    let state = self
                        .snapshot_progress
                        .as_ref()
                        .and_then(|p| {
                            p.snapshots
                                .iter()
                                .find(|x| x.snapshot_id == snap.snapshot_id)
                        })
                        .map(|x| x.state.clone())
                        .unwrap_or_else(|| snap.state.clone());
                    line(format!(
                        "        {} of {} ({}): {state}",
                        snap.snapshot_id,
                        snap.volume_id,
                        snap.device_name.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
        if !self.failures.is_empty() {
            line(String::new());
            line("Failures (recorded on the case):".into());
            for f in &self.failures {
                line(format!(
                    "  !!  {}: {}: {}",
                    f.step,
                    f.error.as_deref().unwrap_or("?"),
                    f.cause.as_deref().unwrap_or("")
                ));
            }
        }
        if let (Some(e), Status::Failed | Status::TimedOut) =
            (&self.execution.error, self.execution.status)
        {
            line(String::new());
            line(format!(
                "Execution failed: {e}: {}",
                self.execution.cause.as_deref().unwrap_or("")
            ));
        }
        o
    }
}
