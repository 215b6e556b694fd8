//! The report of a playbook run: what each step did, every failure and
//! every fault recovered from, for people or as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use firebreak_steps::case::CaseInfo;
use firebreak_steps::containment::autoscaling::DetachOutput;
use firebreak_steps::containment::ec2::{
    CopyOutput, ElasticIpsOutput, IsolationOutput, ProtectOutput, RecordOutput, ReleaseOutput,
    SnapshotProgress, SnapshotSet, TagOutput,
};
use firebreak_steps::containment::elbv2::DeregisterOutput;
use firebreak_steps::containment::iam::RevokeOutput;
use firebreak_steps::context::{CallRecord, Verdict};
use firebreak_steps::Mode;
use firebreak_workflows::exec::{HistoryEvent, Outcome, Status};
use serde::{Deserialize, Serialize};

use serde_json::Value;

/// The name of the approval gate's Fail state in the playbooks.
pub const NOT_APPROVED_STATE: &str = "NotApproved";

/// Where containment stands at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Containment {
    /// Every step succeeded.
    Complete,
    /// The playbook ran to the end but some steps failed (listed).
    Partial,
    /// The execution itself failed.
    Failed,
    /// The run waited for approval and was denied (or no answer came in
    /// time): it ended before its first change, having changed nothing.
    NotApproved,
    /// Dry run: every planned change would be allowed.
    PlanAllowed,
    /// Dry run: some planned change would be refused.
    PlanDenied,
}

impl Containment {
    /// The verdict in words.
    pub fn label(self) -> &'static str {
        match self {
            Containment::Complete => "complete: every step succeeded",
            Containment::Partial => "PARTIAL: some steps failed (see Failures)",
            Containment::NotApproved => {
                "NOT APPROVED: the run ended before its first change; nothing was changed"
            }
            Containment::Failed => "FAILED: the execution failed",
            Containment::PlanAllowed => {
                "dry run: every planned change would be allowed; nothing was changed"
            }
            Containment::PlanDenied => {
                "dry run: some planned changes would be REFUSED; nothing was changed"
            }
        }
    }
}

/// A task failure that a retry recovered from (the fault is reported even
/// though the step succeeded in the end).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retried {
    /// The Task state that failed and was tried again (empty if the
    /// history named none).
    pub state: String,
    /// The failure's error name (`States.Timeout` for a timeout).
    pub error: String,
    /// The failure's cause, if the history gave one.
    pub cause: Option<String>,
}

/// A step that failed for good: recorded on the case (`$.failures`), or the
/// execution itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepFailure {
    /// The key the failure was recorded under (e.g. `isolate_network`);
    /// `execution` when the execution failed with nothing recorded, `summary`
    /// when its output was not a case file.
    pub step: String,
    /// The recorded `Error` name, when there is one.
    pub error: Option<String>,
    /// The recorded `Cause`, when there is one.
    pub cause: Option<String>,
}

/// The case file as the built-in playbooks leave it: each step's output
/// under its own key.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct CaseOutput {
    /// `WaitForApproval`: who approved the run, when, and their note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<firebreak_steps::notify::Approval>,
    /// `RecordInstanceState`: the recorded pre-containment state.
    pub instance_state: Option<RecordOutput>,
    /// `ProtectInstance`: termination protection and volumes kept.
    pub protection: Option<ProtectOutput>,
    /// `IsolateNetwork`: the isolation security groups and interfaces moved.
    pub isolation: Option<IsolationOutput>,
    /// The second look before tagging.
    pub isolation_recheck: Option<IsolationOutput>,
    /// `CutNetworkAcls`: the network ACL entries added (`None` also when
    /// the case turned the cut off).
    pub network_acls: Option<firebreak_steps::containment::ec2::NaclCutOutput>,
    /// `RestrictCredentialsToVpc` (`ec2-compromise` only): the role's
    /// credentials denied outside the VPC while memory is captured.
    pub credentials_in_vpc: Option<firebreak_steps::containment::iam::RestrictOutput>,
    /// `DisassociateElasticIps`: the Elastic IPs taken off.
    pub elastic_ips: Option<ElasticIpsOutput>,
    /// `DetachFromAutoScaling`: the group and lifecycle states.
    pub auto_scaling: Option<DetachOutput>,
    /// `DeregisterFromTargetGroups`: target groups and Classic Load
    /// Balancers left.
    pub target_groups: Option<DeregisterOutput>,
    /// `RevokeInstanceCredentials`: the instance profile removed and the
    /// deny on older sessions.
    pub credentials: Option<RevokeOutput>,
    /// The last `TagInstance`: the tags written (status `contained`,
    /// `released`, ...).
    pub tags: Option<TagOutput>,
    /// `SnapshotVolumes`: the snapshots started (or found from an earlier
    /// run).
    pub snapshots: Option<SnapshotSet>,
    /// The last `CheckSnapshots` poll: each snapshot's state.
    pub snapshot_progress: Option<SnapshotProgress>,
    /// `ReleaseInstance` (`ec2-release`): what was restored.
    pub release: Option<ReleaseOutput>,
    /// The last `CopySnapshotsToForensics` poll: copies to the forensic
    /// account or region; `None` unless the case asked for them.
    pub forensic_copies: Option<CopyOutput>,
    /// `ReadSnapshotHashes`: each disk image's SHA-256; `None` unless the
    /// case asked for hashing.
    pub snapshot_hashes: Option<firebreak_steps::containment::ec2::SnapshotHashes>,
    /// `StartMemoryCapture` (`ec2-compromise` only): the capture sent to
    /// the host.
    pub memory_capture: Option<firebreak_steps::evidence::memory::CaptureStarted>,
    /// The last `CheckMemoryCapture` poll or `ReadMemoryEvidence`: the
    /// capture's state and, once verified, the evidence.
    pub memory_progress: Option<firebreak_steps::evidence::memory::CaptureProgress>,
    /// `ReadAnalysis`: the Volatility findings.
    pub analysis: Option<firebreak_steps::evidence::analysis::AnalysisSummary>,
    /// Failures recorded by `continue_on_failure`, by key, each
    /// `{"Error", "Cause"}`; read only, reported as [`Report::failures`].
    #[serde(default, skip_serializing)]
    pub failures: BTreeMap<String, Value>,
}

/// Everything about one playbook run, printed by [`Report::human`] or
/// serialised as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The playbook's name, e.g. `ec2-contain`.
    pub playbook: String,
    /// The case the run belongs to.
    pub case_id: String,
    /// The instance the playbook acted on (`i-...`).
    pub instance_id: String,
    /// The instance's AWS account.
    pub account_id: String,
    /// The principal that acted (the case file's `actor`).
    #[serde(default)]
    pub actor: String,
    /// The instance's region.
    pub region: String,
    /// Live, or a dry run that changed nothing.
    pub mode: Mode,
    /// Where containment stands, from the outcome, failures and verdicts.
    pub containment: Containment,
    /// How the execution ended: status, output, error and cause.
    pub execution: Outcome,
    /// Wall-clock time of the run, in seconds.
    pub duration_seconds: f64,
    /// Each step's output, at the top level of the JSON.
    #[serde(flatten)]
    pub steps: CaseOutput,
    /// Steps that failed for good (see [`StepFailure`]).
    pub failures: Vec<StepFailure>,
    /// Faults that retries recovered from.
    pub retried: Vec<Retried>,
    /// Every AWS call, in order (the plan, in a dry run).
    pub calls: Vec<CallRecord>,
}

impl Report {
    /// The report of a finished run: parses the execution's output as the
    /// case file, gathers its recorded failures and the retries in
    /// `history`, and decides [`Containment`]; an output that is not a case
    /// file makes the run [`Containment::Failed`].
    pub fn build(
        playbook: &str,
        case: &CaseInfo,
        mode: Mode,
        outcome: &Outcome,
        history: &[HistoryEvent],
        calls: Vec<CallRecord>,
        took: Duration,
    ) -> Report {
        // An output that does not read as a case file is a failure, never
        // an empty (and so "complete") one.
        let parsed: Result<CaseOutput, String> = match &outcome.output {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| e.to_string()),
            None => Ok(CaseOutput::default()),
        };
        let unreadable = parsed.as_ref().err().cloned();
        let out = parsed.unwrap_or_default();
        let mut failures: Vec<StepFailure> = out
            .failures
            .iter()
            .map(|(step, v)| StepFailure {
                step: step.clone(),
                error: v.get("Error").and_then(Value::as_str).map(str::to_string),
                cause: v.get("Cause").and_then(Value::as_str).map(str::to_string),
            })
            .collect();
        if outcome.status != Status::Succeeded && failures.is_empty() {
            failures.push(StepFailure {
                step: "execution".into(),
                error: outcome.error.clone(),
                cause: outcome.cause.clone(),
            });
        }
        if let Some(e) = &unreadable {
            failures.push(StepFailure {
                step: "summary".into(),
                error: Some("Firebreak.Internal".into()),
                cause: Some(format!("the execution output is not a case file: {e}")),
            });
        }
        let denied = calls
            .iter()
            .any(|c| matches!(c.verdict, Verdict::Denied(_)));
        // The approval gate's Fail state: the run ended before its first
        // change.
        let not_approved = outcome.status == Status::Failed
            && history.iter().any(|e| {
                e.kind == "FailStateEntered"
                    && e.detail()
                        .and_then(|d| d.get("name").and_then(Value::as_str).map(str::to_string))
                        .as_deref()
                        == Some(NOT_APPROVED_STATE)
            });
        let containment = match (mode, outcome.status) {
            _ if not_approved => Containment::NotApproved,
            _ if unreadable.is_some() => Containment::Failed,
            (_, Status::Failed | Status::TimedOut) => Containment::Failed,
            (Mode::DryRun, _) if denied || !failures.is_empty() => Containment::PlanDenied,
            (Mode::DryRun, _) => Containment::PlanAllowed,
            (Mode::Live, _) if failures.is_empty() => Containment::Complete,
            (Mode::Live, _) => Containment::Partial,
        };
        Report {
            retried: retried(history),
            playbook: playbook.to_string(),
            case_id: case.case_id.clone(),
            instance_id: case.instance_id.clone(),
            account_id: case.account_id.clone(),
            actor: case.actor.clone(),
            region: case.region.clone(),
            mode,
            containment,
            execution: outcome.clone(),
            duration_seconds: took.as_secs_f64(),
            steps: out,
            failures,
            calls,
        }
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let mut line = |s: String| {
            o.push_str(&s);
            o.push('\n');
        };
        line(String::new());
        line(format!(
            "Case {}: {} on {} (account {} as {}, region {})",
            self.case_id, self.playbook, self.instance_id, self.account_id, self.actor, self.region
        ));
        line(format!(
            "Result: {} in {:.1} s",
            match self.containment {
                Containment::Complete if self.playbook == "ec2-release" => "RELEASED",
                Containment::Partial if self.playbook == "ec2-release" =>
                    "release PARTIAL (see failures)",
                Containment::Complete => "containment COMPLETE",
                Containment::Partial => "containment PARTIAL (see failures)",
                Containment::Failed => "execution FAILED",
                Containment::NotApproved =>
                    "NOT APPROVED (denied, no answer in time, or the request failed: see failures): the run ended before its first change; nothing was changed",
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
            let st = &self.steps;
            if let Some(a) = &st.approval {
                if let Some(who) = &a.approved_by {
                    line(format!(
                        "  ok  approved by {who}{}{}",
                        a.at.as_deref()
                            .map(|t| format!(" at {t}"))
                            .unwrap_or_default(),
                        a.note
                            .as_deref()
                            .map(|n| format!(": {n}"))
                            .unwrap_or_default()
                    ));
                }
            }
            if let Some(r) = &st.instance_state {
                let s = &r.record;
                line(format!(
                    "  ok  state recorded{}: {} interface(s), {} volume(s), {} EIP(s), ASG {}, {} target group registration(s), profile {}",
                    if r.reused { " (kept from the first run of this case)" } else { "" },
                    s.record.network_interfaces.len(),
                    s.record.volumes.len(),
                    s.record.elastic_ips.len(),
                    s.record.auto_scaling.as_ref().map(|a| a.group_name.as_str()).unwrap_or("none"),
                    s.record.target_groups.len(),
                    s.record.instance_profile.as_ref().and_then(|p| p.arn.as_deref()).unwrap_or("none"),
                ));
                line(format!(
                    "        sha256 {} at {}{}",
                    r.sha256.as_deref().unwrap_or(&s.digest.sha256),
                    r.location.as_deref().unwrap_or("(not stored)"),
                    r.custody_sequence
                        .map(|n| format!(" (custody record {n})"))
                        .unwrap_or_default()
                ));
            }
            if let Some(p) = &st.protection {
                line(format!(
                    "  ok  protected{}: termination protection {}, shutdown behaviour {}, {} volume(s) kept on termination",
                    if p.changed { "" } else { " (already)" },
                    if p.termination_protection { "on" } else { "off" },
                    p.shutdown_behavior,
                    p.volumes.iter().filter(|v| !v.delete_on_termination).count()
                ));
            }
            if let Some(iso) = &st.isolation {
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
                        "        {}: isolation group {} ({}){}{}",
                        g.vpc_id,
                        g.isolation_group_id,
                        if iso.exemptions.is_empty() {
                            "no rules".to_string()
                        } else {
                            format!(
                                "only {}",
                                iso.exemptions
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        },
                        match &g.transition_group_id {
                            Some(t) => format!(", through transition group {t} (deleted after)"),
                            None => String::new(),
                        },
                        if g.created_group_ids.is_empty() {
                            ""
                        } else {
                            ", created now"
                        }
                    ));
                }
                if let Some(e) = &iso.exemption_error {
                    line(format!(
                        "  !!  the exemptions could not be applied, isolated without them: {e}"
                    ));
                }
                for i in &iso.interfaces {
                    line(format!(
                        "        {}: {} -> {}{}",
                        i.network_interface_id,
                        i.previous_group_ids.join(","),
                        i.group_ids.join(","),
                        i.trunk_interface_id
                            .as_deref()
                            .map(|t| format!(" (branch of trunk {t})"))
                            .unwrap_or_default()
                    ));
                }
                for t in &iso.transition_groups_left {
                    line(format!("  !!  transition group left: {t}"));
                }
                for w in &iso.warnings {
                    line(format!("  !   {w}"));
                }
                for d in &iso.dns_query_logging {
                    line(match d.logged {
                        Some(true) => format!(
                            "  ok  DNS: Route 53 Resolver query logging is on for {} ({}): the only record of the instance's DNS, which isolation does not stop",
                            d.vpc_id,
                            d.configs.join(", ")
                        ),
                        Some(false) => format!(
                            "  !   DNS: no Route 53 Resolver query logging for {}: the instance's DNS queries to the VPC resolver are neither stopped nor recorded",
                            d.vpc_id
                        ),
                        None => format!(
                            "  ?   DNS: query logging of {} unknown ({})",
                            d.vpc_id,
                            d.error.as_deref().unwrap_or("?")
                        ),
                    });
                }
            }
            if let Some(r) = &st.isolation_recheck {
                let late: Vec<&str> = r
                    .interfaces
                    .iter()
                    .filter(|i| i.changed)
                    .map(|i| i.network_interface_id.as_str())
                    .collect();
                if !late.is_empty() {
                    line(format!(
                        "  ok  interfaces attached after isolation, isolated too: {}",
                        late.join(", ")
                    ));
                }
            }
            if let Some(n) = &st.network_acls {
                let acls: std::collections::BTreeSet<&str> = n
                    .entries
                    .iter()
                    .map(|e| e.network_acl_id.as_str())
                    .collect();
                line(format!(
                    "  ok  network ACLs cut{}: {} entries on {} naming {} (stateless: ends tracked flows through NAT gateways, load balancers, Transit Gateway in other subnets)",
                    if n.changed { "" } else { " (already)" },
                    n.entries.len(),
                    if acls.is_empty() { "no ACL".to_string() } else { acls.into_iter().collect::<Vec<_>>().join(", ") },
                    n.addresses.join(", ")
                ));
                for k in &n.skipped {
                    line(format!(
                        "        {} left alone: {}",
                        k.network_acl_id, k.reason
                    ));
                }
                for w in &n.warnings {
                    line(format!("  !   {w}"));
                }
            }
            if let Some(c) = &st.credentials_in_vpc {
                if let Some(p) = &c.instance_profile_arn {
                    line(format!(
                        "  ok  credentials of {p} denied outside the instance's VPC (role(s) {}) until the full revocation",
                        c.roles.join(", ")
                    ));
                }
                for w in &c.warnings {
                    line(format!("  !   {w}"));
                }
            }
            if let Some(e) = &st.elastic_ips {
                if e.disassociated.is_empty() {
                    line("  ok  Elastic IPs: none associated".into());
                } else {
                    for a in &e.disassociated {
                        line(format!(
                            "  ok  Elastic IP {} ({}) taken off {}",
                            a.public_ip.as_deref().unwrap_or("?"),
                            a.allocation_id,
                            a.network_interface_id.as_deref().unwrap_or("?")
                        ));
                    }
                }
            }
            if let Some(a) = &st.auto_scaling {
                match &a.group_name {
                    None => line("  ok  Auto Scaling: not in a group".into()),
                    Some(g) => line(format!(
                        "  ok  Auto Scaling group {g}: {} -> {} (scale-in protected, no replacement)",
                        a.lifecycle_state_before.as_deref().unwrap_or("?"),
                        a.lifecycle_state_after.as_deref().unwrap_or("detached")
                    )),
                }
            }
            if let Some(t) = &st.target_groups {
                if t.deregistered.is_empty() {
                    line("  ok  target groups: none".into());
                }
                for r in &t.deregistered {
                    line(format!(
                        "  ok  deregistered {}from {} (port {})",
                        r.ip.as_deref()
                            .map(|ip| format!("{ip} "))
                            .unwrap_or_default(),
                        r.target_group_arn,
                        r.port
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "default".into())
                    ));
                }
                for lb in &t.classic_load_balancers {
                    line(format!(
                        "  ok  deregistered from Classic Load Balancer {lb}"
                    ));
                }
            }
            if let Some(c) = &st.credentials {
                match &c.instance_profile_arn {
                    None => line("  ok  credentials: no instance profile".into()),
                    Some(p) => line(format!(
                        "  ok  credentials: profile {p} removed{}; role(s) {} deny sessions from this instance issued before {}",
                        if c.disassociated_association_id.is_some() { "" } else { " (already)" },
                        c.roles.join(", "),
                        c.token_issue_cutoff.map(|t| t.to_rfc3339()).unwrap_or_else(|| "?".into())
                    )),
                }
                for r in &c.role_wide {
                    line(format!(
                        "  !!  role {r}: no room for a per-instance deny within IAM's quotas, so EVERY session of the role issued before the cut-off is denied (other instances sharing it fetch new credentials)"
                    ));
                }
            }
            if let Some(t) = &st.tags {
                line(format!(
                    "  ok  tagged: {}",
                    t.tags
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(s) = &st.snapshots {
                let done = st
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
                    let state = st
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
            if let Some(c) = &st.forensic_copies {
                line(format!(
                    "  ok  forensic copies ({}):",
                    if c.all_completed {
                        "completed"
                    } else {
                        "not confirmed complete"
                    }
                ));
                for copy in &c.copies {
                    line(format!(
                        "        {} -> {} in {}/{}: {}",
                        copy.source_snapshot_id,
                        copy.snapshot_id,
                        copy.account_id,
                        copy.region,
                        copy.state
                    ));
                }
            }
            if let Some(h) = &st.snapshot_hashes {
                for d in &h.snapshots {
                    line(format!(
                        "  ok  disk image of {} hashed{}: sha256 {} ({} GiB, {} of {} blocks written){}",
                        d.snapshot_id,
                        if d.reused { " (before)" } else { "" },
                        d.sha256,
                        d.volume_size_gib,
                        d.blocks_written,
                        d.blocks,
                        d.custody_sequence
                            .map(|n| format!(", custody record {n}"))
                            .unwrap_or_default()
                    ));
                }
            }
            if let Some(m) = st
                .memory_progress
                .as_ref()
                .and_then(|p| p.evidence.as_ref())
            {
                line(format!(
                    "  ok  memory ({} on kernel {}): {} bytes at {}",
                    m.tool, m.kernel_release, m.size, m.location
                ));
                line(format!(
                    "        sha256 {} off the host = the host's (custody record {})",
                    m.sha256, m.custody_sequence
                ));
                if let Some(why) = &m.fallback_reason {
                    line(format!("        AVML, because {why}"));
                }
                match &m.coverage {
                    Some(cv) => line(format!("        coverage: {}", cv.summary())),
                    None => {
                        line("        coverage: not checked (no memory map from the host)".into())
                    }
                }
                for t in m.coverage.iter().flat_map(|cv| &cv.suspect_zero_tails) {
                    line(format!(
                        "        warning: 0x{:x}-0x{:x} ends in {} bytes of zero pages: free memory, or a range the tool gave up on",
                        t.start, t.end, t.zero_bytes
                    ));
                }
            } else if let Some(c) = &st.memory_capture {
                if c.dry_run {
                    line(format!(
                        "  ..  memory: would capture {} MiB in {} parts of {} MiB over SSM",
                        c.memory_mib,
                        c.part_count,
                        c.part_size >> 20
                    ));
                }
            }
            if let Some(a) = &st.analysis {
                line(format!(
                    "  ok  memory analysis of {}: kernel {}, {} finding(s), kept at {}",
                    a.image,
                    a.kernel_release.as_deref().unwrap_or("unknown"),
                    a.findings.len(),
                    a.location
                ));
                for f in &a.findings {
                    line(format!(
                        "        [{:?}] {}: {}",
                        f.severity, f.source, f.title
                    ));
                }
            }
            if let Some(r) = &st.release {
                line(format!(
                    "  ok  released to the record {} (sha256 {}): {}",
                    r.record_location,
                    r.record_sha256,
                    if r.actions.is_empty() {
                        "nothing to change".to_string()
                    } else {
                        format!("{} change(s)", r.actions.len())
                    }
                ));
                for a in &r.actions {
                    line(format!("        {a}"));
                }
                for n in &r.notes {
                    line(format!("        note: {n}"));
                }
                if let Some(until) = r.credential_deny_kept_until {
                    line(format!(
                        "        the deny on credentials issued before containment is KEPT until {} (they may be valid until then): release again after it, or with --remove-credential-deny",
                        until.format("%Y-%m-%d %H:%M:%SZ")
                    ));
                }
                line(
                    "        verified: the instance matches the record (firebreak tags aside)"
                        .into(),
                );
            }
        }
        if !self.retried.is_empty() {
            line(String::new());
            line("Faults recovered from by retrying:".into());
            for r in &self.retried {
                line(format!(
                    "  ..  {}: {}: {}",
                    r.state,
                    r.error,
                    r.cause.as_deref().unwrap_or("")
                ));
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

/// Task failures followed by another attempt of the same state.
fn retried(history: &[HistoryEvent]) -> Vec<Retried> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut pending: Option<Retried> = None;
    for e in history {
        let detail = e.detail();
        let field = |k: &str| {
            detail
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        match e.kind.as_str() {
            "TaskStateEntered" => {
                current = field("name");
                pending = None;
            }
            "LambdaFunctionFailed" | "TaskFailed" | "LambdaFunctionTimedOut" | "TaskTimedOut" => {
                pending = Some(Retried {
                    state: current.clone().unwrap_or_default(),
                    error: field("error").unwrap_or_default(),
                    cause: field("cause"),
                });
            }
            "LambdaFunctionScheduled" | "TaskScheduled" => {
                if let Some(p) = pending.take() {
                    out.push(p);
                }
            }
            _ => {}
        }
    }
    out
}
