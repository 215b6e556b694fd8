//! The incident report of a playbook run: who and what, the alert that
//! started it, a timeline from the execution history, each containment
//! lever's outcome, the evidence with its hashes, the memory findings,
//! every failure, the commands to follow up with, and the playbook's graph
//! coloured by what happened to each state.
//!
//! Built from the run's [`Report`], its history and its definition;
//! rendered as Markdown, as one self-contained HTML page, or as JSON that
//! is stored and rendered again later. Pure: no AWS call, no I/O, no clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use firebreak_steps::Mode;
use firebreak_workflows::asl::{NullablePath, State, StateMachine};
use firebreak_workflows::compile::FAILURES_KEY;
use firebreak_workflows::exec::{HistoryEvent, Status};
use firebreak_workflows::graph::{mermaid_node_ids, render, Format};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alerts::{Alert, SeverityLabel};
use crate::report::{CaseOutput, Containment, Report, StepFailure};

/// The version of [`IncidentReport`]'s JSON, stored in it: a later
/// firebreak that reads an older stored report knows what it reads.
pub const INCIDENT_REPORT_VERSION: u32 = 1;

/// The key [`Report`] files an execution-level failure under.
const EXECUTION_STEP: &str = "execution";

/// Everything about one playbook run that a responder hands on: built by
/// [`IncidentReport::build`], rendered by [`IncidentReport::to_markdown`]
/// and [`IncidentReport::to_html`], stored as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentReport {
    /// [`INCIDENT_REPORT_VERSION`] when the report was built.
    pub version: u32,
    /// Case, instance, run and verdict.
    pub header: Header,
    /// The alert that started the run; `None` when it was started by hand.
    pub alert: Option<AlertSummary>,
    /// What happened, in history order.
    pub timeline: Vec<TimelineEntry>,
    /// One row per containment lever the playbook has, in playbook order.
    pub levers: Vec<LeverRow>,
    /// Every piece of evidence the run left, with its hash when known.
    pub evidence: Vec<EvidenceRow>,
    /// The memory analysis's findings, when an analysis was read.
    pub findings: Option<FindingsSummary>,
    /// Every step that failed for good, and the execution if it failed.
    pub failures: Vec<FailureRow>,
    /// The commands to run next, exactly as to type them.
    pub commands: Vec<FollowUp>,
    /// The playbook's graph as Mermaid text, each state styled by what
    /// happened to it (classes `succeeded`, `caught`, `failed`, `notrun`).
    pub graph: String,
}

/// Case, instance, run and verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The case id.
    pub case_id: String,
    /// The instance acted on (`i-...`).
    pub instance_id: String,
    /// The instance's AWS account.
    pub account_id: String,
    /// The instance's region.
    pub region: String,
    /// The playbook run (`ec2-contain`, ...).
    pub playbook: String,
    /// The principal that acted.
    pub actor: String,
    /// Live, or a dry run that changed nothing.
    pub mode: Mode,
    /// The execution's name, when the history carries it.
    pub execution_name: Option<String>,
    /// How the execution ended.
    pub execution_status: Status,
    /// When the execution started (its `ExecutionStarted` event).
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (its `ExecutionSucceeded`, `...Failed`, `...TimedOut`
    /// or `...Aborted` event).
    pub ended_at: Option<DateTime<Utc>>,
    /// From start to end in the history; the run's wall-clock time when
    /// the history lacks either.
    pub duration_seconds: f64,
    /// Where containment stands.
    pub containment: Containment,
    /// The case's evidence bucket: from the execution's input, else from
    /// an evidence location; `None` when neither names it.
    pub evidence_bucket: Option<String>,
}

/// The alert that started a run, as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertSummary {
    /// Where it came from (`aws.guardduty`, `custom`, ...).
    pub source: String,
    /// The finding's id.
    pub finding_id: String,
    /// Its type (`Backdoor:EC2/C&CActivity.B!DNS`, ...).
    pub finding_type: String,
    /// Its title, when it has one.
    pub title: Option<String>,
    /// Severity on GuardDuty's 0-10 scale; `None` for an alarm.
    pub severity: Option<f64>,
    /// The severity's label (`HIGH`, ...).
    pub severity_label: Option<String>,
    /// When it was last updated (or raised).
    pub time: Option<DateTime<Utc>>,
}

/// One line of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When (the history event's timestamp; RFC 3339 in JSON).
    pub at: DateTime<Utc>,
    /// The state it happened in; `None` for the execution's own events.
    pub state: Option<String>,
    /// What happened: `entered`, `succeeded`, `failed: ERROR: cause`,
    /// `retried`, `caught`, `execution started`...
    pub what: String,
}

/// A containment lever: one thing a playbook does to the instance or its
/// evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lever {
    /// The sealed pre-incident record of the instance's state.
    Record,
    /// Termination protection, shutdown behaviour, volumes kept.
    TerminationProtection,
    /// Out of its Auto Scaling group without a replacement.
    AutoScaling,
    /// Elastic IPs taken off.
    ElasticIps,
    /// Out of target groups and Classic Load Balancers.
    TargetGroups,
    /// Security groups swapped for isolation groups.
    NetworkIsolation,
    /// Network ACL entries that cut tracked flows.
    NetworkAclCut,
    /// The role's credentials denied outside the VPC while memory is
    /// captured.
    CredentialsInVpc,
    /// Instance profile removed, older sessions denied.
    CredentialRevocation,
    /// The case's tags on the instance.
    Tags,
    /// EBS snapshots of every volume, completed.
    Snapshots,
    /// SHA-256 of each snapshot's volume image.
    SnapshotHashes,
    /// Memory captured over SSM and verified.
    MemoryCapture,
    /// Volatility's analysis of the memory image.
    MemoryAnalysis,
    /// Snapshots copied to the forensic account or region.
    ForensicCopy,
    /// The recorded state restored (`ec2-release`).
    Release,
}

impl Lever {
    /// Every lever, in the order the report lists them.
    pub const ALL: [Lever; 16] = [
        Lever::Record,
        Lever::TerminationProtection,
        Lever::AutoScaling,
        Lever::ElasticIps,
        Lever::TargetGroups,
        Lever::NetworkIsolation,
        Lever::NetworkAclCut,
        Lever::CredentialsInVpc,
        Lever::CredentialRevocation,
        Lever::Tags,
        Lever::Snapshots,
        Lever::SnapshotHashes,
        Lever::MemoryCapture,
        Lever::MemoryAnalysis,
        Lever::ForensicCopy,
        Lever::Release,
    ];

    /// The lever in words.
    pub fn label(self) -> &'static str {
        match self {
            Lever::Record => "Pre-incident record",
            Lever::TerminationProtection => "Termination protection",
            Lever::AutoScaling => "Auto Scaling",
            Lever::ElasticIps => "Elastic IPs",
            Lever::TargetGroups => "Target groups",
            Lever::NetworkIsolation => "Network isolation (security groups)",
            Lever::NetworkAclCut => "Network ACL cut",
            Lever::CredentialsInVpc => "Credentials kept in the VPC",
            Lever::CredentialRevocation => "Credential revocation",
            Lever::Tags => "Tags",
            Lever::Snapshots => "Snapshots",
            Lever::SnapshotHashes => "Disk image hashes",
            Lever::MemoryCapture => "Memory capture",
            Lever::MemoryAnalysis => "Memory analysis",
            Lever::ForensicCopy => "Forensic copy",
            Lever::Release => "Release",
        }
    }

    /// The step names and failure keys (`$.failures.<key>`) of the lever's
    /// states: a state belongs to the lever when it runs one of these steps
    /// or records a failure under one of these keys.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Lever::Record => &["record_instance_state"],
            Lever::TerminationProtection => &["protect_instance"],
            Lever::AutoScaling => &["detach_from_autoscaling"],
            Lever::ElasticIps => &["disassociate_elastic_ips"],
            Lever::TargetGroups => &["deregister_from_target_groups"],
            Lever::NetworkIsolation => &["isolate_network", "isolate_late_interfaces"],
            Lever::NetworkAclCut => &["cut_network_acls"],
            Lever::CredentialsInVpc => &["restrict_credentials_to_vpc"],
            Lever::CredentialRevocation => &["revoke_instance_credentials"],
            Lever::Tags => &["tag_instance"],
            Lever::Snapshots => &["snapshot_volumes", "await_snapshots"],
            Lever::SnapshotHashes => &["hash_snapshots", "read_snapshot_hashes"],
            Lever::MemoryCapture => &[
                "start_memory_capture",
                "await_memory_capture",
                "verify_memory_capture",
                "read_memory_evidence",
            ],
            Lever::MemoryAnalysis => &["analyze_memory", "read_analysis"],
            Lever::ForensicCopy => &["copy_snapshots"],
            Lever::Release => &["release_instance"],
        }
    }
}

/// Where a lever stands at the end of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeverStatus {
    /// Its steps ran and left their output (in a dry run: were checked).
    Done,
    /// One of its steps failed (recorded on the case, or the execution
    /// stopped there).
    Failed,
    /// None of its steps ran (the playbook's choices skipped them, or the
    /// execution ended first).
    NotRun,
}

impl LeverStatus {
    fn as_str(self) -> &'static str {
        match self {
            LeverStatus::Done => "done",
            LeverStatus::Failed => "failed",
            LeverStatus::NotRun => "not_run",
        }
    }
}

/// One lever's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeverRow {
    /// Which lever.
    pub lever: Lever,
    /// Done, failed or not run.
    pub status: LeverStatus,
    /// One line: what the step output says, or the failure.
    pub detail: String,
}

/// What a piece of evidence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// The sealed record of the instance's pre-incident state.
    InstanceStateRecord,
    /// An EBS snapshot of one of its volumes.
    EbsSnapshot,
    /// The per-block SHA-256 manifest of a snapshot's image.
    BlockManifest,
    /// A snapshot's copy in the forensic account or region.
    ForensicCopy,
    /// The memory image.
    MemoryImage,
    /// The findings of the memory image's analysis.
    MemoryAnalysis,
}

impl EvidenceKind {
    fn label(self) -> &'static str {
        match self {
            EvidenceKind::InstanceStateRecord => "instance-state record",
            EvidenceKind::EbsSnapshot => "EBS snapshot",
            EvidenceKind::BlockManifest => "block manifest",
            EvidenceKind::ForensicCopy => "forensic copy",
            EvidenceKind::MemoryImage => "memory image",
            EvidenceKind::MemoryAnalysis => "memory analysis",
        }
    }
}

/// One piece of evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRow {
    /// What it is.
    pub kind: EvidenceKind,
    /// Its id: snapshot id, evidence id, or the instance for the record.
    pub id: String,
    /// Where it is kept (`s3://...?versionId=...`, or the account and
    /// region of a snapshot).
    pub location: String,
    /// Its SHA-256, lowercase hex, when known.
    pub sha256: Option<String>,
    /// Its size in bytes, when known.
    pub size: Option<u64>,
}

/// What the memory analysis found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingsSummary {
    /// The image analysed (`s3://...`).
    pub image: String,
    /// Its kernel release, when a banner named it.
    pub kernel_release: Option<String>,
    /// Where the findings are kept.
    pub location: String,
    /// The findings, most severe first.
    pub findings: Vec<FindingRow>,
}

/// One finding of the memory analysis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRow {
    /// `high`, `medium`, `low` or `info`.
    pub severity: String,
    /// The plugin (or `cross-view`, `symbols`) that shows it.
    pub source: String,
    /// What was found, in one line.
    pub title: String,
    /// The evidence for it; may span lines.
    pub detail: String,
}

/// A step that failed for good, or the execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRow {
    /// The key it was recorded under, or `execution`.
    pub step: String,
    /// The error name, when there is one.
    pub error: Option<String>,
    /// The cause, when there is one.
    pub cause: Option<String>,
}

/// A command to run next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    /// What it is for, in one line.
    pub purpose: String,
    /// The command line, its words quoted for a POSIX shell where needed.
    pub command: String,
}

impl IncidentReport {
    /// The incident report of a finished run: `report` gives the case, the
    /// steps' outputs and failures; `history` the timeline, the times and
    /// what happened to each state; `definition` (the compiled playbook's
    /// `definition`) the levers the playbook has and its graph; `alert`
    /// the alert that started the run, if one did.
    pub fn build(
        report: &Report,
        history: &[HistoryEvent],
        definition: &StateMachine,
        alert: Option<&Alert>,
    ) -> IncidentReport {
        let mut walk = Walk::default();
        for e in history {
            walk.event(e);
        }
        let (timeline, outcomes) = walk.finish();
        let evidence = evidence_rows(report);
        let bucket = bucket_from_input(history)
            .or_else(|| evidence.iter().find_map(|r| s3_bucket(&r.location)));
        let header = header(report, history, bucket);
        let keyed = state_keys(definition);
        IncidentReport {
            version: INCIDENT_REPORT_VERSION,
            commands: commands(&header),
            header,
            alert: alert.map(alert_summary),
            timeline,
            levers: lever_rows(report, &keyed, &outcomes),
            evidence,
            findings: findings(&report.steps),
            failures: failure_rows(report),
            graph: coloured_graph(definition, &outcomes),
        }
    }

    /// The report as pretty JSON, to store and render again later.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// A report stored by [`IncidentReport::to_json`].
    pub fn from_json(text: &str) -> Result<IncidentReport, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The report as Markdown: headings, tables, the follow-up commands in
    /// a shell block and the graph in a ```` ```mermaid ```` block. Text
    /// from the run (causes, titles) is escaped so that it cannot become
    /// markup.
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# {}\n", md_text(&self.title()));
        for s in self.sections() {
            let _ = writeln!(o, "## {}\n", s.title);
            if let Some(intro) = &s.intro {
                let _ = writeln!(o, "{}\n", md_text(intro));
            }
            match &s.table {
                Some(t) if !t.rows.is_empty() => md_table(&mut o, t),
                _ => {
                    let _ = writeln!(o, "{}\n", s.empty);
                }
            }
        }
        o.push_str("## Follow-up commands\n\n");
        let commands = self
            .commands
            .iter()
            .map(|c| format!("# {}\n{}", c.purpose.replace('\n', " "), c.command))
            .collect::<Vec<_>>()
            .join("\n\n");
        let f = fence(&commands);
        let _ = writeln!(o, "{f}sh\n{commands}\n{f}\n");
        o.push_str("## Playbook graph\n\n");
        o.push_str(GRAPH_LEGEND);
        o.push_str("\n\n");
        let f = fence(&self.graph);
        let _ = writeln!(o, "{f}mermaid\n{}{f}", self.graph);
        o
    }

    /// The report as one self-contained HTML page: no script, no external
    /// stylesheet (a Content-Security-Policy forbids both), every value
    /// HTML-escaped. The graph is shown as Mermaid text in a
    /// `<pre class="mermaid">`, for a Mermaid viewer to draw.
    pub fn to_html(&self) -> String {
        let title = html(&self.title());
        let mut o = String::new();
        o.push_str(HTML_HEAD);
        let _ = writeln!(
            o,
            "<title>{title}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>"
        );
        for s in self.sections() {
            let _ = writeln!(o, "<h2>{}</h2>", html(s.title));
            if let Some(intro) = &s.intro {
                let _ = writeln!(o, "<p>{}</p>", html(intro));
            }
            match &s.table {
                Some(t) if !t.rows.is_empty() => html_table(&mut o, t),
                _ => {
                    let _ = writeln!(o, "<p>{}</p>", html(s.empty));
                }
            }
        }
        o.push_str("<h2>Follow-up commands</h2>\n");
        for c in &self.commands {
            let _ = writeln!(
                o,
                "<p>{}</p>\n<pre class=\"command\">{}</pre>",
                html(&c.purpose),
                html(&c.command)
            );
        }
        let _ = writeln!(
            o,
            "<h2>Playbook graph</h2>\n<p>{}</p>\n<p class=\"note\">{}</p>\n\
             <pre class=\"mermaid\">{}</pre>\n</body>\n</html>",
            html(GRAPH_LEGEND),
            html(MERMAID_NOTE),
            html(&self.graph)
        );
        o
    }

    fn title(&self) -> String {
        format!(
            "Incident report: case {} ({})",
            self.header.case_id, self.header.instance_id
        )
    }

    /// The sections both renderings share, in order.
    fn sections(&self) -> Vec<Section> {
        vec![
            Section {
                title: "Summary",
                intro: None,
                table: Some(self.summary_table()),
                empty: "",
            },
            Section {
                title: "Alert",
                intro: None,
                table: self.alert.as_ref().map(alert_table),
                empty: "None: the run was not started by an alert.",
            },
            self.levers_section(),
            self.evidence_section(),
            self.findings_section(),
            self.failures_section(),
            self.timeline_section(),
        ]
    }

    fn summary_table(&self) -> Table {
        let h = &self.header;
        let when = |t: Option<DateTime<Utc>>| t.map(rfc3339).unwrap_or_else(|| "unknown".into());
        let mut rows = vec![
            ("Case", Cell::Code(h.case_id.clone())),
            ("Instance", Cell::Code(h.instance_id.clone())),
            ("Account", Cell::Code(h.account_id.clone())),
            ("Region", Cell::Code(h.region.clone())),
            ("Playbook", Cell::Code(h.playbook.clone())),
            ("Actor", Cell::Code(h.actor.clone())),
            (
                "Mode",
                Cell::Text(match h.mode {
                    Mode::Live => "live".into(),
                    Mode::DryRun => "dry run (nothing was changed)".into(),
                }),
            ),
        ];
        if let Some(n) = &h.execution_name {
            rows.push(("Execution", Cell::Code(n.clone())));
        }
        rows.extend([
            (
                "Execution status",
                Cell::Text(status_name(h.execution_status).into()),
            ),
            ("Started", Cell::Text(when(h.started_at))),
            ("Ended", Cell::Text(when(h.ended_at))),
            ("Duration", Cell::Text(duration(h.duration_seconds))),
            (
                "Containment",
                Cell::Badge(
                    match h.containment {
                        Containment::Complete | Containment::PlanAllowed => "done",
                        Containment::NotApproved => "not_run",
                        _ => "failed",
                    },
                    h.containment.label().into(),
                ),
            ),
        ]);
        if let Some(b) = &h.evidence_bucket {
            rows.push(("Evidence bucket", Cell::Code(b.clone())));
        }
        Table {
            headers: &["Field", "Value"],
            rows: rows
                .into_iter()
                .map(|(k, v)| vec![Cell::Text(k.into()), v])
                .collect(),
        }
    }

    fn levers_section(&self) -> Section {
        Section {
            title: "Containment levers",
            intro: None,
            table: Some(Table {
                headers: &["Lever", "Status", "Detail"],
                rows: self
                    .levers
                    .iter()
                    .map(|l| {
                        vec![
                            Cell::Text(l.lever.label().into()),
                            Cell::Badge(l.status.as_str(), l.status.as_str().into()),
                            Cell::Text(l.detail.clone()),
                        ]
                    })
                    .collect(),
            }),
            empty: "The playbook has no containment lever.",
        }
    }

    fn evidence_section(&self) -> Section {
        let rows = self
            .evidence
            .iter()
            .map(|e| {
                vec![
                    Cell::Text(e.kind.label().into()),
                    Cell::Code(e.id.clone()),
                    Cell::Code(e.location.clone()),
                    e.sha256
                        .clone()
                        .map(Cell::Code)
                        .unwrap_or_else(|| Cell::Text("-".into())),
                    Cell::Text(e.size.map(size).unwrap_or_else(|| "-".into())),
                ]
            })
            .collect();
        let unhashed = self
            .evidence
            .iter()
            .any(|e| e.kind == EvidenceKind::EbsSnapshot && e.sha256.is_none());
        Section {
            title: "Evidence",
            // A snapshot is blocks inside EBS, not a file: it has a SHA-256
            // only once its blocks are read back and hashed.
            intro: unhashed.then(|| {
                "An EBS snapshot without a SHA-256 was not imaged: AWS keeps it \
                 as blocks, so firebreak hashes it only when asked (respond \
                 --hash-snapshots, or firebreak evidence hash-snapshot SNAP \
                 --case CASE afterwards)."
                    .to_string()
            }),
            table: Some(Table {
                headers: &["Kind", "Id", "Location", "SHA-256", "Size"],
                rows,
            }),
            empty: "None: the run left no evidence.",
        }
    }

    fn findings_section(&self) -> Section {
        let Some(f) = &self.findings else {
            return Section {
                title: "Memory findings",
                intro: None,
                table: None,
                empty: "None: no memory analysis was read.",
            };
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for x in &f.findings {
            *counts.entry(x.severity.as_str()).or_default() += 1;
        }
        let counted = ["high", "medium", "low", "info"]
            .iter()
            .map(|s| format!("{} {s}", counts.get(s).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ");
        Section {
            title: "Memory findings",
            intro: Some(format!(
                "{} finding(s) ({counted}) in {} (kernel {}); kept at {}. \
                 The JSON report has each finding's detail.",
                f.findings.len(),
                f.image,
                f.kernel_release.as_deref().unwrap_or("unknown"),
                f.location
            )),
            table: Some(Table {
                headers: &["Severity", "Source", "Finding"],
                rows: f
                    .findings
                    .iter()
                    .map(|x| {
                        vec![
                            Cell::Text(x.severity.clone()),
                            Cell::Text(x.source.clone()),
                            Cell::Text(x.title.clone()),
                        ]
                    })
                    .collect(),
            }),
            empty: "No findings.",
        }
    }

    fn failures_section(&self) -> Section {
        Section {
            title: "Failures",
            intro: None,
            table: Some(Table {
                headers: &["Step", "Error", "Cause"],
                rows: self
                    .failures
                    .iter()
                    .map(|f| {
                        vec![
                            Cell::Code(f.step.clone()),
                            Cell::Text(f.error.clone().unwrap_or_else(|| "-".into())),
                            Cell::Text(f.cause.clone().unwrap_or_else(|| "-".into())),
                        ]
                    })
                    .collect(),
            }),
            empty: "None.",
        }
    }

    fn timeline_section(&self) -> Section {
        Section {
            title: "Timeline",
            intro: None,
            table: Some(Table {
                headers: &["Time (UTC)", "State", "What"],
                rows: self
                    .timeline
                    .iter()
                    .map(|t| {
                        vec![
                            Cell::Text(rfc3339(t.at)),
                            t.state
                                .clone()
                                .map(Cell::Code)
                                .unwrap_or_else(|| Cell::Text("-".into())),
                            Cell::Text(t.what.clone()),
                        ]
                    })
                    .collect(),
            }),
            empty: "No history.",
        }
    }
}

fn alert_table(a: &AlertSummary) -> Table {
    let mut rows = vec![
        ("Source", Cell::Code(a.source.clone())),
        ("Finding id", Cell::Code(a.finding_id.clone())),
        ("Type", Cell::Code(a.finding_type.clone())),
    ];
    if let Some(t) = &a.title {
        rows.push(("Title", Cell::Text(t.clone())));
    }
    let severity = match (a.severity, &a.severity_label) {
        (Some(s), Some(l)) => format!("{s} ({l})"),
        (Some(s), None) => s.to_string(),
        (None, Some(l)) => l.clone(),
        (None, None) => "none".into(),
    };
    rows.push(("Severity", Cell::Text(severity)));
    if let Some(t) = a.time {
        rows.push(("Time", Cell::Text(rfc3339(t))));
    }
    Table {
        headers: &["Field", "Value"],
        rows: rows
            .into_iter()
            .map(|(k, v)| vec![Cell::Text(k.into()), v])
            .collect(),
    }
}

// ---- Building ----

/// What happened to one state over the run; ordered from best to worst,
/// so that several visits (a poll loop, Map iterations) keep the worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum StateOutcome {
    NotRun,
    Succeeded,
    /// Failed, and a Catch took the playbook on (the failure is recorded).
    Caught,
    /// Failed, and nothing caught it: the execution stopped there.
    Failed,
}

impl StateOutcome {
    fn class(self) -> &'static str {
        match self {
            StateOutcome::NotRun => "notrun",
            StateOutcome::Succeeded => "succeeded",
            StateOutcome::Caught => "caught",
            StateOutcome::Failed => "failed",
        }
    }
}

/// One pass over the history: the timeline, and each state's outcome.
/// Events are put in their state by following `previousEventId` back to a
/// `...StateEntered`, so interleaved branches are told apart.
#[derive(Default)]
struct Walk {
    state_of: HashMap<u64, String>,
    /// States whose latest attempt failed (a retry or an exit follows).
    failing: HashSet<String>,
    /// Visits entered and not yet exited, by state.
    open: HashMap<String, usize>,
    outcomes: HashMap<String, StateOutcome>,
    timeline: Vec<TimelineEntry>,
}

impl Walk {
    fn event(&mut self, e: &HistoryEvent) {
        let detail = e.detail();
        let kind = e.kind.as_str();
        let execution = kind.starts_with("Execution");
        let state = if execution {
            None
        } else if kind.ends_with("StateEntered") || kind.ends_with("StateExited") {
            detail
                .as_ref()
                .and_then(|d| d.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string)
        } else {
            self.state_of.get(&e.previous_event_id).cloned()
        };
        if let Some(s) = &state {
            self.state_of.insert(e.id, s.clone());
        }
        if let Some(what) = self.what(kind, state.as_deref(), detail.as_ref()) {
            self.timeline.push(TimelineEntry {
                at: e.timestamp,
                state,
                what,
            });
        }
    }

    /// The timeline's words for an event (`None`: not shown), keeping
    /// each state's visits and failures up to date.
    fn what(&mut self, kind: &str, state: Option<&str>, detail: Option<&Value>) -> Option<String> {
        match kind {
            "ExecutionStarted" => Some("execution started".into()),
            "ExecutionSucceeded" => Some("execution succeeded".into()),
            "ExecutionFailed" => Some(format!("execution failed: {}", error_cause(detail))),
            "ExecutionTimedOut" => Some("execution timed out (States.Timeout)".into()),
            "ExecutionAborted" => Some("execution aborted".into()),
            k if k.ends_with("StateEntered") => {
                *self.open.entry(state?.to_string()).or_default() += 1;
                Some("entered".into())
            }
            k if k.ends_with("StateExited") => {
                let s = state?;
                if let Some(n) = self.open.get_mut(s) {
                    *n = n.saturating_sub(1);
                }
                let caught = self.failing.remove(s);
                self.merge(
                    s,
                    if caught {
                        StateOutcome::Caught
                    } else {
                        StateOutcome::Succeeded
                    },
                );
                caught.then(|| "caught".into())
            }
            "LambdaFunctionScheduled" | "TaskScheduled" => {
                self.failing.remove(state?).then(|| "retried".into())
            }
            "MapIterationStarted" | "MapIterationSucceeded" => None,
            k if k.ends_with("Succeeded") => Some("succeeded".into()),
            k if k.ends_with("Failed") || k.ends_with("TimedOut") => {
                if let Some(s) = state {
                    self.failing.insert(s.to_string());
                }
                let verb = if k.ends_with("Failed") {
                    "failed"
                } else {
                    "timed out"
                };
                Some(format!("{verb}: {}", error_cause(detail)))
            }
            _ => None,
        }
    }

    fn merge(&mut self, state: &str, outcome: StateOutcome) {
        let o = self
            .outcomes
            .entry(state.to_string())
            .or_insert(StateOutcome::NotRun);
        *o = (*o).max(outcome);
    }

    /// The timeline and the outcomes; a visit never exited (a Fail state,
    /// a failure nothing caught, a timeout) is where the execution stopped.
    fn finish(mut self) -> (Vec<TimelineEntry>, HashMap<String, StateOutcome>) {
        let open: Vec<String> = self
            .open
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, _)| s.clone())
            .collect();
        for s in open {
            self.merge(&s, StateOutcome::Failed);
        }
        (self.timeline, self.outcomes)
    }
}

/// `ERROR: cause` from an event's details (`?` for a missing error name).
fn error_cause(detail: Option<&Value>) -> String {
    let field = |k: &str| detail.and_then(|d| d.get(k)).and_then(Value::as_str);
    match (field("error"), field("cause")) {
        (e, Some(c)) if !c.is_empty() => format!("{}: {c}", e.unwrap_or("?")),
        (e, _) => e.unwrap_or("?").to_string(),
    }
}

fn header(report: &Report, history: &[HistoryEvent], bucket: Option<String>) -> Header {
    let started = history.iter().find(|e| e.kind == "ExecutionStarted");
    let ended = history.iter().rev().find(|e| {
        matches!(
            e.kind.as_str(),
            "ExecutionSucceeded" | "ExecutionFailed" | "ExecutionTimedOut" | "ExecutionAborted"
        )
    });
    let started_at = started.map(|e| e.timestamp);
    let ended_at = ended.map(|e| e.timestamp);
    let duration_seconds = match (started_at, ended_at) {
        (Some(s), Some(e)) => (e - s).num_milliseconds() as f64 / 1000.0,
        _ => report.duration_seconds,
    };
    let execution_name = started.and_then(|e| e.detail()).and_then(|d| {
        let name = d.get("name").and_then(Value::as_str);
        let arn = d.get("executionArn").and_then(Value::as_str);
        name.or_else(|| arn.and_then(|a| a.rsplit(':').next()))
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    });
    Header {
        case_id: report.case_id.clone(),
        instance_id: report.instance_id.clone(),
        account_id: report.account_id.clone(),
        region: report.region.clone(),
        playbook: report.playbook.clone(),
        actor: report.actor.clone(),
        mode: report.mode,
        execution_name,
        execution_status: report.execution.status,
        started_at,
        ended_at,
        duration_seconds,
        containment: report.containment,
        evidence_bucket: bucket,
    }
}

/// The case's evidence bucket, from the execution's input (the case file).
fn bucket_from_input(history: &[HistoryEvent]) -> Option<String> {
    let started = history.iter().find(|e| e.kind == "ExecutionStarted")?;
    let input = started.detail()?.get("input")?.as_str()?.to_string();
    let case: Value = serde_json::from_str(&input).ok()?;
    let bucket = case.pointer("/case/evidence_bucket")?.as_str()?;
    (!bucket.is_empty()).then(|| bucket.to_string())
}

/// The bucket of an `s3://bucket/key` location.
fn s3_bucket(location: &str) -> Option<String> {
    let rest = location.strip_prefix("s3://")?;
    let bucket = rest.split(['/', '?']).next()?;
    (!bucket.is_empty()).then(|| bucket.to_string())
}

fn alert_summary(a: &Alert) -> AlertSummary {
    AlertSummary {
        source: a.source.as_str().to_string(),
        finding_id: a.finding_id.clone(),
        finding_type: a.finding_type.clone(),
        title: a.title.clone(),
        severity: a.severity,
        severity_label: a.severity_label.map(|l| {
            match l {
                SeverityLabel::Informational => "INFORMATIONAL",
                SeverityLabel::Low => "LOW",
                SeverityLabel::Medium => "MEDIUM",
                SeverityLabel::High => "HIGH",
                SeverityLabel::Critical => "CRITICAL",
            }
            .to_string()
        }),
        time: a.time,
    }
}

/// Every state of a definition (nested ones too) with the step it runs
/// and the failure keys it records under (`$.failures.<key>` in a Catch's
/// or a Pass state's `ResultPath`).
fn state_keys(machine: &StateMachine) -> Vec<(String, Vec<String>)> {
    fn walk<'a>(
        states: impl IntoIterator<Item = (&'a String, &'a State)>,
        out: &mut Vec<(String, Vec<String>)>,
    ) {
        for (name, state) in states {
            out.push((name.clone(), keys_of(state)));
            match state {
                State::Parallel(p) => {
                    for b in &p.branches {
                        walk(&b.states, out);
                    }
                }
                State::Map(m) => {
                    if let Some((_, _, states)) = m.processor() {
                        walk(states, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&machine.states, &mut out);
    out
}

fn keys_of(state: &State) -> Vec<String> {
    let prefix = format!("$.{FAILURES_KEY}.");
    let failure_key = |p: Option<&NullablePath>| {
        p.and_then(NullablePath::as_path)
            .and_then(|p| p.strip_prefix(&prefix))
            .map(str::to_string)
    };
    let mut keys = Vec::new();
    match state {
        State::Task(t) => {
            let step = t.parameters.as_ref().and_then(|p| p.get("step"));
            if let Some(s) = step.and_then(Value::as_str) {
                keys.push(s.to_string());
            }
        }
        State::Pass(p) => keys.extend(failure_key(p.result_path.as_ref())),
        _ => {}
    }
    keys.extend(
        state
            .catch()
            .iter()
            .filter_map(|c| failure_key(c.result_path.as_ref())),
    );
    keys
}

fn lever_rows(
    report: &Report,
    keyed: &[(String, Vec<String>)],
    outcomes: &HashMap<String, StateOutcome>,
) -> Vec<LeverRow> {
    Lever::ALL
        .iter()
        .filter_map(|&lever| {
            let mine = |k: &str| lever.keys().contains(&k);
            let states: Vec<&str> = keyed
                .iter()
                .filter(|(_, ks)| ks.iter().any(|k| mine(k)))
                .map(|(n, _)| n.as_str())
                .collect();
            if states.is_empty() {
                return None;
            }
            let outcome = |s: &str| outcomes.get(s).copied().unwrap_or(StateOutcome::NotRun);
            let worst = states
                .iter()
                .map(|s| outcome(s))
                .max()
                .unwrap_or(StateOutcome::NotRun);
            let failed: Vec<&StepFailure> =
                report.failures.iter().filter(|f| mine(&f.step)).collect();
            let output = lever_detail(lever, &report.steps);
            let (status, detail) = if !failed.is_empty() {
                let many = lever.keys().len() > 1;
                let d = failed
                    .iter()
                    .map(|f| failure_line(f, many))
                    .collect::<Vec<_>>();
                (LeverStatus::Failed, d.join("; "))
            } else if worst >= StateOutcome::Caught {
                let at = states.iter().filter(|s| outcome(s) == worst).copied();
                let at = at.collect::<Vec<_>>().join(", ");
                let d = match worst {
                    StateOutcome::Failed => format!("the execution stopped in {at}"),
                    _ => format!("failed in {at} (caught)"),
                };
                (LeverStatus::Failed, d)
            } else if let Some(d) = output {
                (LeverStatus::Done, d)
            } else if worst == StateOutcome::Succeeded {
                (LeverStatus::Done, "succeeded".into())
            } else {
                (LeverStatus::NotRun, "not run".into())
            };
            let detail = match (report.mode, status) {
                (Mode::DryRun, LeverStatus::Done) => format!("dry run: {detail}"),
                _ => detail,
            };
            Some(LeverRow {
                lever,
                status,
                detail,
            })
        })
        .collect()
}

fn failure_line(f: &StepFailure, with_step: bool) -> String {
    let what = match (&f.error, &f.cause) {
        (Some(e), Some(c)) => format!("{e}: {c}"),
        (Some(e), None) => e.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => "failed (no error recorded)".into(),
    };
    if with_step {
        format!("{}: {what}", f.step)
    } else {
        what
    }
}

/// One line from a lever's step output, `None` when it left none.
fn lever_detail(lever: Lever, st: &CaseOutput) -> Option<String> {
    containment_detail(lever, st).or_else(|| evidence_detail(lever, st))
}

fn containment_detail(lever: Lever, st: &CaseOutput) -> Option<String> {
    let already = |changed: bool| if changed { "" } else { " (already so)" };
    Some(match lever {
        Lever::Record => {
            let r = st.instance_state.as_ref()?;
            let s = &r.record.record;
            format!(
                "{} interface(s), {} volume(s), {} Elastic IP(s) recorded; sealed record at {}{}",
                s.network_interfaces.len(),
                s.volumes.len(),
                s.elastic_ips.len(),
                r.location.as_deref().unwrap_or("(not stored)"),
                if r.reused {
                    " (kept from the first run of this case)"
                } else {
                    ""
                }
            )
        }
        Lever::TerminationProtection => {
            let p = st.protection.as_ref()?;
            format!(
                "termination protection {}, shutdown behaviour {}, {} volume(s) kept on termination{}",
                if p.termination_protection { "on" } else { "off" },
                p.shutdown_behavior,
                p.volumes.iter().filter(|v| !v.delete_on_termination).count(),
                already(p.changed)
            )
        }
        Lever::AutoScaling => match &st.auto_scaling.as_ref()?.group_name {
            None => "not in an Auto Scaling group".into(),
            Some(g) => {
                let a = st.auto_scaling.as_ref()?;
                format!(
                    "group {g}: {} -> {}, no replacement",
                    a.lifecycle_state_before.as_deref().unwrap_or("?"),
                    a.lifecycle_state_after.as_deref().unwrap_or("detached")
                )
            }
        },
        Lever::ElasticIps => {
            let e = st.elastic_ips.as_ref()?;
            if e.disassociated.is_empty() {
                "none associated".into()
            } else {
                let ips = e.disassociated.iter().map(|a| {
                    format!(
                        "{} ({})",
                        a.public_ip.as_deref().unwrap_or("?"),
                        a.allocation_id
                    )
                });
                format!("taken off: {}", ips.collect::<Vec<_>>().join(", "))
            }
        }
        Lever::TargetGroups => {
            let t = st.target_groups.as_ref()?;
            format!(
                "deregistered from {} target group registration(s) and {} Classic Load Balancer(s)",
                t.deregistered.len(),
                t.classic_load_balancers.len()
            )
        }
        Lever::NetworkIsolation => {
            let i = st.isolation.as_ref()?;
            let groups: Vec<&str> = i
                .groups
                .iter()
                .map(|g| g.isolation_group_id.as_str())
                .collect();
            let late = st.isolation_recheck.iter().flat_map(|r| &r.interfaces);
            format!(
                "{} interface(s) on isolation group(s) {}{}; \
                 {} interface(s) attached later isolated too",
                i.interfaces.len(),
                groups.join(", "),
                already(i.changed),
                late.filter(|x| x.changed).count()
            )
        }
        Lever::NetworkAclCut => {
            let n = st.network_acls.as_ref()?;
            let acls: std::collections::BTreeSet<&str> = n
                .entries
                .iter()
                .map(|e| e.network_acl_id.as_str())
                .collect();
            format!(
                "{} entries on {} naming {}{}",
                n.entries.len(),
                acls.into_iter().collect::<Vec<_>>().join(", "),
                n.addresses.join(", "),
                already(n.changed)
            )
        }
        _ => return credentials_detail(lever, st),
    })
}

fn credentials_detail(lever: Lever, st: &CaseOutput) -> Option<String> {
    Some(match lever {
        Lever::CredentialsInVpc => match &st.credentials_in_vpc.as_ref()?.instance_profile_arn {
            None => "no instance profile".into(),
            Some(p) => format!("credentials of {p} denied outside the instance's VPC"),
        },
        Lever::CredentialRevocation => {
            let c = st.credentials.as_ref()?;
            match &c.instance_profile_arn {
                None => "no instance profile".into(),
                Some(p) => format!(
                    "profile {p} removed{}; role(s) {} deny sessions issued before {}{}",
                    if c.disassociated_association_id.is_some() {
                        ""
                    } else {
                        " (already)"
                    },
                    c.roles.join(", "),
                    c.token_issue_cutoff
                        .map(rfc3339)
                        .unwrap_or_else(|| "?".into()),
                    if c.role_wide.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; EVERY session of role(s) {} issued before then is denied \
                             (no room for a per-instance deny)",
                            c.role_wide.join(", ")
                        )
                    }
                ),
            }
        }
        Lever::Tags => {
            let t = st.tags.as_ref()?;
            let tags = t.tags.iter().map(|(k, v)| format!("{k}={v}"));
            tags.collect::<Vec<_>>().join(", ")
        }
        _ => return None,
    })
}

fn evidence_detail(lever: Lever, st: &CaseOutput) -> Option<String> {
    Some(match lever {
        Lever::Snapshots => {
            let s = st.snapshots.as_ref()?;
            let done = st
                .snapshot_progress
                .as_ref()
                .is_some_and(|p| p.all_completed);
            format!(
                "{} snapshot(s), {}{}",
                s.snapshots.len(),
                if done {
                    "all completed"
                } else {
                    "not confirmed complete"
                },
                if !s.snapshots.is_empty() && s.created_snapshot_ids.is_empty() {
                    " (all taken earlier for this case)"
                } else {
                    ""
                }
            )
        }
        Lever::SnapshotHashes => {
            let h = st.snapshot_hashes.as_ref()?;
            format!("{} volume image(s) hashed", h.snapshots.len())
        }
        Lever::MemoryCapture => match st
            .memory_progress
            .as_ref()
            .and_then(|p| p.evidence.as_ref())
        {
            Some(m) => format!(
                "{} image of {} from kernel {}, verified off the host",
                m.tool,
                size(m.size),
                m.kernel_release
            ),
            None => {
                let c = st.memory_capture.as_ref()?;
                if c.dry_run {
                    format!("would capture {} MiB over SSM", c.memory_mib)
                } else {
                    format!("capture started (attempt {}), no verified image", c.attempt)
                }
            }
        },
        Lever::MemoryAnalysis => {
            let a = st.analysis.as_ref()?;
            let high = a
                .findings
                .iter()
                .filter(|f| severity_name(&f.severity) == "high");
            format!(
                "{} finding(s), {} high; kernel {}",
                a.findings.len(),
                high.count(),
                a.kernel_release.as_deref().unwrap_or("unknown")
            )
        }
        Lever::ForensicCopy => {
            let c = st.forensic_copies.as_ref()?;
            let places: std::collections::BTreeSet<String> = c
                .copies
                .iter()
                .map(|x| format!("{}/{}", x.account_id, x.region))
                .collect();
            format!(
                "{} cop(ies) in {}, {}",
                c.copies.len(),
                places.into_iter().collect::<Vec<_>>().join(", "),
                if c.all_completed {
                    "all completed"
                } else {
                    "not confirmed complete"
                }
            )
        }
        Lever::Release => {
            let r = st.release.as_ref()?;
            format!(
                "restored to the record ({} change(s)){}",
                r.actions.len(),
                match r.credential_deny_kept_until {
                    Some(t) => format!(
                        "; the deny on older credentials is kept until {}",
                        rfc3339(t)
                    ),
                    None => String::new(),
                }
            )
        }
        _ => return None,
    })
}

/// A severity's serde name (`high`...), the way the findings store it.
fn severity_name(s: &impl Serialize) -> String {
    match serde_json::to_value(s) {
        Ok(Value::String(name)) => name,
        _ => "unknown".into(),
    }
}

fn evidence_rows(report: &Report) -> Vec<EvidenceRow> {
    let st = &report.steps;
    let mut rows = Vec::new();
    if let Some(r) = &st.instance_state {
        // The stored object's hash when it was stored; the record's own
        // seal (its canonical JSON) otherwise, with that JSON's size.
        let sealed = r.sha256.is_none();
        rows.push(EvidenceRow {
            kind: EvidenceKind::InstanceStateRecord,
            id: report.instance_id.clone(),
            location: r.location.clone().unwrap_or_else(|| "(not stored)".into()),
            sha256: r
                .sha256
                .clone()
                .or_else(|| Some(r.record.digest.sha256.clone())),
            size: sealed.then_some(r.record.digest.size),
        });
    }
    if let Some(r) = &st.release {
        rows.push(EvidenceRow {
            kind: EvidenceKind::InstanceStateRecord,
            id: report.instance_id.clone(),
            location: r.record_location.clone(),
            sha256: Some(r.record_sha256.clone()),
            size: None,
        });
    }
    snapshot_rows(report, &mut rows);
    if let Some(m) = st
        .memory_progress
        .as_ref()
        .and_then(|p| p.evidence.as_ref())
    {
        rows.push(EvidenceRow {
            kind: EvidenceKind::MemoryImage,
            id: m.evidence_id.clone(),
            location: m.location.clone(),
            sha256: Some(m.sha256.clone()),
            size: Some(m.size),
        });
    }
    if let Some(a) = &st.analysis {
        // One row per stored output, with the hash its custody record
        // holds; the findings' location alone when no record was read.
        if a.outputs.is_empty() {
            rows.push(EvidenceRow {
                kind: EvidenceKind::MemoryAnalysis,
                id: a.evidence_id.clone(),
                location: a.location.clone(),
                sha256: None,
                size: None,
            });
        }
        for o in &a.outputs {
            rows.push(EvidenceRow {
                kind: EvidenceKind::MemoryAnalysis,
                id: a.evidence_id.clone(),
                location: o.location.clone(),
                sha256: o.sha256.clone(),
                size: o.size,
            });
        }
    }
    rows
}

/// Snapshots (with their image hashes), block manifests and forensic
/// copies; planned snapshots of a dry run are no evidence.
fn snapshot_rows(report: &Report, rows: &mut Vec<EvidenceRow>) {
    let st = &report.steps;
    let hashes = st
        .snapshot_hashes
        .as_ref()
        .map(|h| h.snapshots.as_slice())
        .unwrap_or_default();
    let here = format!("account {}, {}", report.account_id, report.region);
    for s in st
        .snapshots
        .iter()
        .filter(|s| !s.dry_run)
        .flat_map(|s| &s.snapshots)
    {
        let digest = hashes.iter().find(|d| d.snapshot_id == s.snapshot_id);
        rows.push(EvidenceRow {
            kind: EvidenceKind::EbsSnapshot,
            id: s.snapshot_id.clone(),
            location: format!("{here} (of {})", s.volume_id),
            sha256: digest.map(|d| d.sha256.clone()),
            size: digest.map(|d| d.size),
        });
    }
    for d in hashes {
        if let Some(m) = &d.manifest {
            rows.push(EvidenceRow {
                kind: EvidenceKind::BlockManifest,
                id: d.snapshot_id.clone(),
                location: m.clone(),
                sha256: d.manifest_sha256.clone(),
                size: None,
            });
        }
    }
    for c in st.forensic_copies.iter().flat_map(|c| &c.copies) {
        rows.push(EvidenceRow {
            kind: EvidenceKind::ForensicCopy,
            id: c.snapshot_id.clone(),
            location: format!(
                "account {}, {} (copy of {}, {})",
                c.account_id, c.region, c.source_snapshot_id, c.state
            ),
            sha256: None,
            size: None,
        });
    }
}

fn findings(st: &CaseOutput) -> Option<FindingsSummary> {
    let a = st.analysis.as_ref()?;
    Some(FindingsSummary {
        image: a.image.clone(),
        kernel_release: a.kernel_release.clone(),
        location: a.location.clone(),
        findings: a
            .findings
            .iter()
            .map(|f| FindingRow {
                severity: severity_name(&f.severity),
                source: f.source.clone(),
                title: f.title.clone(),
                detail: f.detail.clone(),
            })
            .collect(),
    })
}

fn failure_rows(report: &Report) -> Vec<FailureRow> {
    let mut rows: Vec<FailureRow> = report
        .failures
        .iter()
        .map(|f| FailureRow {
            step: f.step.clone(),
            error: f.error.clone(),
            cause: f.cause.clone(),
        })
        .collect();
    let e = &report.execution;
    if e.status != Status::Succeeded && !rows.iter().any(|r| r.step == EXECUTION_STEP) {
        rows.push(FailureRow {
            step: EXECUTION_STEP.into(),
            error: e
                .error
                .clone()
                .or_else(|| (e.status == Status::TimedOut).then(|| "States.Timeout".to_string())),
            cause: e.cause.clone(),
        });
    }
    rows
}

/// The commands to run next, with the case's region (and bucket, when
/// known: without it the CLI takes firebreak-evidence-ACCOUNT-REGION).
fn commands(h: &Header) -> Vec<FollowUp> {
    let mut common = vec!["--case".to_string(), h.case_id.clone()];
    if let Some(b) = &h.evidence_bucket {
        common.extend(["--evidence-bucket".to_string(), b.clone()]);
    }
    common.extend(["--region".to_string(), h.region.clone()]);
    let line = |words: &[&str], extra: &[String]| {
        let all = words
            .iter()
            .map(|w| w.to_string())
            .chain(extra.iter().cloned());
        all.map(|w| shell_word(&w)).collect::<Vec<_>>().join(" ")
    };
    let mut out = vec![
        FollowUp {
            purpose: "Verify the custody chain and re-hash every artifact of the case".into(),
            command: line(&["firebreak", "evidence", "verify"], &common),
        },
        FollowUp {
            purpose: "List the case's evidence and the custody records that cover it".into(),
            command: line(&["firebreak", "evidence", "list"], &common),
        },
    ];
    if h.playbook != "ec2-release" && h.mode == Mode::Live {
        let release = ["--instance".to_string(), h.instance_id.clone()];
        let args: Vec<String> = release.into_iter().chain(common).collect();
        out.push(FollowUp {
            purpose: "When the investigation allows it: show the release plan, changing nothing"
                .into(),
            command: line(
                &["firebreak", "release"],
                &[args.clone(), vec!["--dry-run".into()]].concat(),
            ),
        });
        out.push(FollowUp {
            purpose: "Then release the instance to its recorded state".into(),
            command: line(&["firebreak", "release"], &args),
        });
    }
    out
}

/// A word as a POSIX shell reads it: as is when plain, else single-quoted.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/=@+%".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The classes the graph's states are styled with (green, orange, red,
/// grey), after the ones [`render`] defines.
const CLASS_DEFS: &str = concat!(
    "    classDef succeeded fill:#d4edda,stroke:#28a745,color:#155724\n",
    "    classDef caught fill:#ffe8cc,stroke:#fd7e14,color:#7a3e00\n",
    "    classDef failed fill:#f5c6cb,stroke:#c82333,stroke-width:3px,color:#721c24\n",
    "    classDef notrun fill:#e9ecef,stroke:#adb5bd,color:#6c757d\n",
);

/// What the graph's colours mean.
const GRAPH_LEGEND: &str =
    "Green: succeeded. Orange: failed, recorded on the case, and the playbook went on. \
Red: failed the execution. Grey: not run.";

fn coloured_graph(machine: &StateMachine, outcomes: &HashMap<String, StateOutcome>) -> String {
    let mut out = render(machine, Format::Mermaid);
    out.push_str(CLASS_DEFS);
    let mut by_outcome: BTreeMap<StateOutcome, Vec<String>> = BTreeMap::new();
    for (state, node) in mermaid_node_ids(machine) {
        let o = outcomes
            .get(&state)
            .copied()
            .unwrap_or(StateOutcome::NotRun);
        by_outcome.entry(o).or_default().push(node);
    }
    for (o, nodes) in by_outcome {
        let _ = writeln!(out, "    class {} {}", nodes.join(","), o.class());
    }
    out
}

// ---- Rendering ----

/// A section of the report, rendered the same way in Markdown and HTML.
struct Section {
    title: &'static str,
    intro: Option<String>,
    table: Option<Table>,
    /// Shown instead of an absent or empty table.
    empty: &'static str,
}

struct Table {
    headers: &'static [&'static str],
    rows: Vec<Vec<Cell>>,
}

enum Cell {
    Text(String),
    /// An id, hash or location: monospace.
    Code(String),
    /// A status, styled by its class (`done`, `failed`, `not_run`).
    Badge(&'static str, String),
}

fn md_table(o: &mut String, t: &Table) {
    let _ = writeln!(o, "| {} |", t.headers.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(t.headers.len()));
    for row in &t.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|c| match c {
                // A code span shows entities as typed: only plain text
                // goes in one.
                Cell::Code(s) if !s.is_empty() && !s.contains(['`', '|', '<', '>', '&', '\n']) => {
                    format!("`{s}`")
                }
                Cell::Code(s) | Cell::Text(s) => md_text(s),
                Cell::Badge("failed", s) => format!("**{}**", md_text(s)),
                Cell::Badge(_, s) => md_text(s),
            })
            .collect();
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    o.push('\n');
}

/// Text for a Markdown table cell or paragraph: HTML-significant
/// characters as entities (a cause such as `<script>` stays text), pipes
/// escaped, on one line.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("\\|"),
            '\\' => out.push_str("\\\\"),
            '`' => out.push_str("\\`"),
            '\r' => {}
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A code fence longer than any run of backticks in `content`.
fn fence(content: &str) -> String {
    let longest = content.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn html_table(o: &mut String, t: &Table) {
    o.push_str("<table>\n<thead><tr>");
    for h in t.headers {
        let _ = write!(o, "<th>{}</th>", html(h));
    }
    o.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        o.push_str("<tr>");
        for c in row {
            let _ = match c {
                Cell::Text(s) => write!(o, "<td>{}</td>", html(s)),
                Cell::Code(s) => write!(o, "<td><code>{}</code></td>", html(s)),
                Cell::Badge(class, s) => write!(
                    o,
                    "<td><span class=\"status {}\">{}</span></td>",
                    html(class),
                    html(s)
                ),
            };
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody>\n</table>\n");
}

/// Text escaped for HTML content and attribute values.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's start, up to its title: no script may run and nothing is
/// loaded from elsewhere, whatever the report holds.
const HTML_HEAD: &str = concat!(
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
    "<meta http-equiv=\"Content-Security-Policy\" ",
    "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
);

/// Said above the graph of the HTML page, which draws nothing itself.
const MERMAID_NOTE: &str = "The graph is Mermaid text: a Mermaid viewer (a Markdown page that \
renders Mermaid, or the Mermaid live editor) draws it. This page loads no script.";

const HTML_STYLE: &str = concat!(
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;",
    "color:#212529}",
    "table{border-collapse:collapse;margin:.5em 0 1.5em}",
    "th,td{border:1px solid #dee2e6;padding:.3em .6em;text-align:left;vertical-align:top}",
    "th{background:#f1f3f5}",
    "code,pre{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}",
    "pre{background:#f8f9fa;border:1px solid #dee2e6;padding:.6em;white-space:pre-wrap}",
    ".status{padding:0 .4em;border-radius:3px}",
    ".status.done{background:#d4edda}",
    ".status.failed{background:#f5c6cb;font-weight:bold}",
    ".status.not_run{background:#e9ecef}",
    ".note{color:#6c757d;font-size:.9em}",
);

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "SUCCEEDED",
        Status::Failed => "FAILED",
        Status::TimedOut => "TIMED_OUT",
    }
}

/// `12.3 s`, `4 min 05 s`, `2 h 03 min 04 s`.
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h == 0 {
        format!("{m} min {s:02} s")
    } else {
        format!("{h} h {m:02} min {s:02} s")
    }
}

/// Bytes in binary units, exact below 1 KiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = *u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;
    use firebreak_steps::case::CaseInfo;
    use firebreak_workflows::exec::history::{details, entered_details, exited_details};
    use firebreak_workflows::exec::{History, Outcome};
    use serde_json::json;

    use super::*;
    use crate::alerts::AlertSource;

    const BUCKET: &str = "firebreak-evidence-123456789012-eu-west-1";
    const MANIFEST_KEY: &str =
        "cases/case-20261206-1/snapshots/snap-0a1b2c3d4e5f60718/blocks.txt?versionId=v1";
    const CAUSE: &str =
        "not authorized to ModifyNetworkInterfaceAttribute <script>alert(1)</script>";

    /// A small containment playbook: each task records its failure and
    /// goes on; the forensic copy is not asked for.
    fn definition() -> StateMachine {
        let task = |step: &str, result: &str, next: &str| {
            json!({
                "Type": "Task",
                "Resource": "${StepRunnerArn}",
                "Parameters": {"step": step, "input": {}},
                "ResultPath": format!("$.{result}"),
                "Catch": [{
                    "ErrorEquals": ["States.ALL"],
                    "ResultPath": format!("$.failures.{step}"),
                    "Next": next
                }],
                "Next": next
            })
        };
        let def = json!({
            "StartAt": "IsolateNetwork",
            "States": {
                "IsolateNetwork": task("isolate_network", "isolation", "TagContained"),
                "TagContained": task("tag_instance", "tags", "SnapshotVolumes"),
                "SnapshotVolumes": task("snapshot_volumes", "snapshots", "ReadSnapshotHashes"),
                "ReadSnapshotHashes":
                    task("read_snapshot_hashes", "snapshot_hashes", "ForensicCopyRequested?"),
                "ForensicCopyRequested?": {
                    "Type": "Choice",
                    "Choices": [{
                        "Variable": "$.options.forensic_copy",
                        "IsPresent": true,
                        "Next": "CopySnapshotsToForensics"
                    }],
                    "Default": "Done"
                },
                "CopySnapshotsToForensics": task("copy_snapshots", "forensic_copies", "Done"),
                "Done": {"Type": "Succeed"}
            }
        });
        serde_json::from_value(def).unwrap()
    }

    fn case() -> CaseInfo {
        serde_json::from_value(json!({
            "case_id": "case-20261206-1",
            "instance_id": "i-0123456789abcdef0",
            "account_id": "123456789012",
            "region": "eu-west-1",
            "opened_at": "2026-12-06T10:00:00Z",
            "actor": "arn:aws:iam::123456789012:role/responder",
            "evidence_bucket": BUCKET
        }))
        .unwrap()
    }

    /// Records a history, one event a second from 10:00:00.
    struct Recorder {
        history: History,
        last: u64,
    }

    enum TaskEnd {
        Succeeded,
        Caught,
        Uncaught,
    }

    impl Recorder {
        fn new() -> Recorder {
            let mut r = Recorder {
                history: History::new(),
                last: 0,
            };
            let input = json!({"case": case(), "options": {}});
            let role = "arn:aws:iam::123456789012:role/sfn";
            r.event(
                "ExecutionStarted",
                json!({"input": input.to_string(), "roleArn": role}),
            );
            r
        }

        fn push(&mut self, kind: &str, d: Option<Box<serde_json::value::RawValue>>) {
            let at = Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap()
                + chrono::Duration::seconds(self.history.len() as i64);
            self.last = self.history.record(kind, self.last, at, d);
        }

        fn event(&mut self, kind: &str, d: Value) {
            self.push(kind, details(&d));
        }

        /// A Task state: each of `failures` is a failed attempt; then a
        /// success, the last failure caught, or nothing (the execution
        /// stops there).
        fn task(&mut self, name: &str, failures: &[(&str, &str)], end: TaskEnd) {
            self.push("TaskStateEntered", entered_details(name, &json!({})));
            for (error, cause) in failures {
                self.push("LambdaFunctionScheduled", None);
                self.push("LambdaFunctionStarted", None);
                self.event(
                    "LambdaFunctionFailed",
                    json!({"error": error, "cause": cause}),
                );
            }
            match end {
                TaskEnd::Succeeded => {
                    self.push("LambdaFunctionScheduled", None);
                    self.push("LambdaFunctionStarted", None);
                    self.event("LambdaFunctionSucceeded", json!({"output": "{}"}));
                }
                TaskEnd::Caught => {}
                TaskEnd::Uncaught => return,
            }
            self.push("TaskStateExited", exited_details(name, &json!({})));
        }

        fn state(&mut self, kind: &str, name: &str) {
            self.push(
                &format!("{kind}StateEntered"),
                entered_details(name, &json!({})),
            );
            self.push(
                &format!("{kind}StateExited"),
                exited_details(name, &json!({})),
            );
        }
    }

    /// GIVEN isolation refused (recorded, went on), a throttled snapshot
    /// retried, hashes read, and no forensic copy asked for.
    fn contained_history() -> Vec<HistoryEvent> {
        let mut r = Recorder::new();
        r.task(
            "IsolateNetwork",
            &[("Firebreak.AccessDenied", CAUSE)],
            TaskEnd::Caught,
        );
        r.task("TagContained", &[], TaskEnd::Succeeded);
        r.task(
            "SnapshotVolumes",
            &[("Firebreak.Throttled", "Rate exceeded")],
            TaskEnd::Succeeded,
        );
        r.task("ReadSnapshotHashes", &[], TaskEnd::Succeeded);
        r.state("Choice", "ForensicCopyRequested?");
        r.state("Succeed", "Done");
        r.event("ExecutionSucceeded", json!({"output": "{}"}));
        r.history.events()
    }

    fn case_output() -> Value {
        json!({
            "case": case(),
            "options": {},
            "tags": {
                "tags": {"firebreak:case": "case-20261206-1", "firebreak:status": "contained"},
                "changed": true
            },
            "snapshots": {
                "instance_id": "i-0123456789abcdef0",
                "snapshots": [{
                    "snapshot_id": "snap-0a1b2c3d4e5f60718",
                    "volume_id": "vol-0a1b2c3d4e5f60718",
                    "device_name": "/dev/xvda",
                    "state": "completed",
                    "progress": "100%"
                }],
                "snapshot_ids": ["snap-0a1b2c3d4e5f60718"],
                "created_snapshot_ids": ["snap-0a1b2c3d4e5f60718"],
                "dry_run": false
            },
            "snapshot_progress": {
                "all_completed": true, "completed": 1, "total": 1, "snapshots": []
            },
            "snapshot_hashes": {"snapshots": [{
                "snapshot_id": "snap-0a1b2c3d4e5f60718",
                "volume_size_gib": 8,
                "block_size": 524288,
                "blocks": 16384,
                "blocks_written": 1200,
                "size": 8589934592u64,
                "sha256": "ab".repeat(32),
                "manifest": format!("s3://{BUCKET}/{MANIFEST_KEY}"),
                "manifest_sha256": "cd".repeat(32),
                "custody_sequence": 4
            }]},
            "failures": {"isolate_network": {"Error": "Firebreak.AccessDenied", "Cause": CAUSE}}
        })
    }

    fn alert() -> Alert {
        Alert {
            source: AlertSource::GuardDuty,
            finding_id: "5eb1c0a6f6a14b8e9d0c".into(),
            finding_type: "Backdoor:EC2/C&CActivity.B!DNS".into(),
            types: vec!["Backdoor:EC2/C&CActivity.B!DNS".into()],
            title: Some("Instance queried a command and control domain".into()),
            severity: Some(8.0),
            severity_label: Some(SeverityLabel::High),
            account: Some("123456789012".into()),
            region: Some("eu-west-1".into()),
            time: Some(Utc.with_ymd_and_hms(2026, 12, 6, 9, 58, 0).unwrap()),
            resources: Vec::new(),
            raw: json!({}),
        }
    }

    fn built() -> IncidentReport {
        built_from(case_output())
    }

    fn built_from(output: Value) -> IncidentReport {
        let history = contained_history();
        let outcome = Outcome {
            status: Status::Succeeded,
            output: Some(output),
            error: None,
            cause: None,
        };
        let report = Report::build(
            "ec2-contain",
            &case(),
            Mode::Live,
            &outcome,
            &history,
            Vec::new(),
            Duration::from_secs(30),
        );
        IncidentReport::build(&report, &history, &definition(), Some(&alert()))
    }

    /// The ids of the nodes a class line of the graph styles.
    fn styled(graph: &str, class: &str) -> Vec<String> {
        graph
            .lines()
            .filter_map(|l| l.trim().strip_prefix("class "))
            .filter_map(|l| l.strip_suffix(&format!(" {class}")))
            .flat_map(|ids| ids.split(',').map(str::to_string))
            .collect()
    }

    fn node(machine: &StateMachine, state: &str) -> String {
        mermaid_node_ids(machine)
            .into_iter()
            .find(|(s, _)| s == state)
            .map(|(_, n)| n)
            .unwrap()
    }

    #[test]
    fn the_timeline_follows_the_history() {
        // WHEN the report is built
        let r = built();
        // THEN each state's events are in order, with failures, the retry
        // and the catch named
        let lines: Vec<(Option<&str>, &str)> = r
            .timeline
            .iter()
            .map(|t| (t.state.as_deref(), t.what.as_str()))
            .collect();
        let failed = format!("failed: Firebreak.AccessDenied: {CAUSE}");
        assert_eq!(
            lines,
            [
                (None, "execution started"),
                (Some("IsolateNetwork"), "entered"),
                (Some("IsolateNetwork"), failed.as_str()),
                (Some("IsolateNetwork"), "caught"),
                (Some("TagContained"), "entered"),
                (Some("TagContained"), "succeeded"),
                (Some("SnapshotVolumes"), "entered"),
                (
                    Some("SnapshotVolumes"),
                    "failed: Firebreak.Throttled: Rate exceeded"
                ),
                (Some("SnapshotVolumes"), "retried"),
                (Some("SnapshotVolumes"), "succeeded"),
                (Some("ReadSnapshotHashes"), "entered"),
                (Some("ReadSnapshotHashes"), "succeeded"),
                (Some("ForensicCopyRequested?"), "entered"),
                (Some("Done"), "entered"),
                (None, "execution succeeded"),
            ]
        );
        assert_eq!(
            r.timeline[0].at,
            Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap()
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["timeline"][0]["at"], "2026-12-06T10:00:00Z");
        assert_eq!(r.header.started_at, Some(r.timeline[0].at));
        assert_eq!(r.header.evidence_bucket.as_deref(), Some(BUCKET));
    }

    #[test]
    fn levers_say_what_failed_and_what_did_not_run() {
        let r = built();
        let levers: Vec<(Lever, LeverStatus)> =
            r.levers.iter().map(|l| (l.lever, l.status)).collect();
        assert_eq!(
            levers,
            [
                (Lever::NetworkIsolation, LeverStatus::Failed),
                (Lever::Tags, LeverStatus::Done),
                (Lever::Snapshots, LeverStatus::Done),
                (Lever::SnapshotHashes, LeverStatus::Done),
                (Lever::ForensicCopy, LeverStatus::NotRun),
            ]
        );
        assert_eq!(
            r.levers[0].detail,
            format!("isolate_network: Firebreak.AccessDenied: {CAUSE}")
        );
        assert_eq!(
            r.levers[1].detail,
            "firebreak:case=case-20261206-1, firebreak:status=contained"
        );
        assert_eq!(r.header.containment, Containment::Partial);
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].step, "isolate_network");
    }

    #[test]
    fn snapshots_carry_their_image_hashes() {
        let r = built();
        let snap = r
            .evidence
            .iter()
            .find(|e| e.kind == EvidenceKind::EbsSnapshot)
            .unwrap();
        assert_eq!(snap.id, "snap-0a1b2c3d4e5f60718");
        assert_eq!(snap.sha256, Some("ab".repeat(32)));
        assert_eq!(snap.size, Some(8 << 30));
        let manifest = r
            .evidence
            .iter()
            .find(|e| e.kind == EvidenceKind::BlockManifest)
            .unwrap();
        assert_eq!(manifest.sha256, Some("cd".repeat(32)));
        assert!(manifest.location.starts_with(&format!("s3://{BUCKET}/")));
    }

    #[test]
    fn every_analysis_output_carries_its_custody_hash() {
        let mut output = case_output();
        let prefix = format!("s3://{BUCKET}/cases/case-20261206-1/analysis/ev-1/run-1");
        output["analysis"] = json!({
            "evidence_id": "ev-1",
            "image": format!("s3://{BUCKET}/cases/case-20261206-1/memory/ev-1.lime?versionId=v1"),
            "kernel_release": "6.1.0",
            "banners": [],
            "findings": [],
            "location": format!("{prefix}/findings.json?versionId=v3"),
            "outputs": [
                {"location": format!("{prefix}/linux.pslist.PsList.json?versionId=v2"),
                 "sha256": "01".repeat(32), "size": 512, "tool": "volatility3 linux.pslist.PsList"},
                {"location": format!("{prefix}/findings.json?versionId=v3"),
                 "sha256": "02".repeat(32), "size": 64, "tool": "firebreak"}
            ]
        });
        let r = built_from(output);
        let rows: Vec<_> = r
            .evidence
            .iter()
            .filter(|e| e.kind == EvidenceKind::MemoryAnalysis)
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0]
            .location
            .ends_with("linux.pslist.PsList.json?versionId=v2"));
        assert_eq!(rows[0].sha256, Some("01".repeat(32)));
        assert_eq!(rows[1].sha256, Some("02".repeat(32)));
        assert_eq!(rows[1].size, Some(64));
        assert!(r.evidence.iter().all(|e| e.sha256.is_some()));
    }

    #[test]
    fn an_unhashed_snapshot_says_why() {
        let hashed = built().to_markdown();
        assert!(!hashed.contains("was not imaged"));
        let mut output = case_output();
        output.as_object_mut().unwrap().remove("snapshot_hashes");
        let r = built_from(output);
        let snap = r
            .evidence
            .iter()
            .find(|e| e.kind == EvidenceKind::EbsSnapshot)
            .unwrap();
        assert_eq!(snap.sha256, None);
        let md = r.to_markdown();
        assert!(md.contains("was not imaged"), "{md}");
        assert!(md.contains("--hash-snapshots"), "{md}");
    }

    #[test]
    fn the_graph_colours_each_state_by_what_happened() {
        let r = built();
        let def = definition();
        assert!(styled(&r.graph, "caught").contains(&node(&def, "IsolateNetwork")));
        assert!(styled(&r.graph, "succeeded").contains(&node(&def, "SnapshotVolumes")));
        assert!(styled(&r.graph, "notrun").contains(&node(&def, "CopySnapshotsToForensics")));
        assert!(r.graph.contains("classDef caught "));
    }

    #[test]
    fn a_failed_execution_is_red_and_listed() {
        // GIVEN a release whose restore fails with nothing to catch it
        let def: StateMachine = serde_json::from_value(json!({
            "StartAt": "ReleaseInstance",
            "States": {
                "ReleaseInstance": {
                    "Type": "Task",
                    "Resource": "${StepRunnerArn}",
                    "Parameters": {"step": "release_instance"},
                    "End": true
                }
            }
        }))
        .unwrap();
        let mut rec = Recorder::new();
        rec.task(
            "ReleaseInstance",
            &[("Firebreak.VerificationFailed", "differs")],
            TaskEnd::Uncaught,
        );
        rec.event(
            "ExecutionFailed",
            json!({"error": "Firebreak.VerificationFailed", "cause": "differs"}),
        );
        let history = rec.history.events();
        let outcome = Outcome {
            status: Status::Failed,
            output: None,
            error: Some("Firebreak.VerificationFailed".into()),
            cause: Some("differs".into()),
        };
        let report = Report::build(
            "ec2-release",
            &case(),
            Mode::Live,
            &outcome,
            &history,
            Vec::new(),
            Duration::from_secs(3),
        );
        // WHEN its incident report is built
        let r = IncidentReport::build(&report, &history, &def, None);
        // THEN the state is red, the lever failed, the execution listed
        assert_eq!(styled(&r.graph, "failed"), [node(&def, "ReleaseInstance")]);
        assert_eq!(r.levers.len(), 1);
        assert_eq!(r.levers[0].status, LeverStatus::Failed);
        assert_eq!(
            r.levers[0].detail,
            "the execution stopped in ReleaseInstance"
        );
        assert_eq!(r.failures[0].step, "execution");
        assert_eq!(r.header.containment, Containment::Failed);
        assert_eq!(
            r.timeline.last().map(|t| t.what.as_str()),
            Some("execution failed: Firebreak.VerificationFailed: differs")
        );
        // and no release is offered after a release
        assert!(r
            .commands
            .iter()
            .all(|c| !c.command.starts_with("firebreak release")));
    }

    #[test]
    fn html_escapes_every_value() {
        let page = built().to_html();
        assert!(!page.contains("<script"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("<pre class=\"mermaid\">flowchart TD"));
        // The Mermaid line breaks are text for the viewer, not markup.
        assert!(page.contains("IsolateNetwork&lt;br/&gt;isolate_network"));
        let md = built().to_markdown();
        assert!(!md.contains("<script"));
    }

    #[test]
    fn commands_name_the_case_bucket_and_region() {
        let r = built();
        let commands: Vec<&str> = r.commands.iter().map(|c| c.command.as_str()).collect();
        let case = format!("--case case-20261206-1 --evidence-bucket {BUCKET} --region eu-west-1");
        let release = "firebreak release --instance i-0123456789abcdef0";
        assert_eq!(
            commands,
            [
                format!("firebreak evidence verify {case}"),
                format!("firebreak evidence list {case}"),
                format!("{release} {case} --dry-run"),
                format!("{release} {case}"),
            ]
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_stored_json_reads_back() {
        let r = built();
        let back = IncidentReport::from_json(&r.to_json().unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.to_markdown(), r.to_markdown());
    }

    #[test]
    fn verdict_and_mode_read_back() {
        let all = [
            Containment::Complete,
            Containment::Partial,
            Containment::Failed,
            Containment::NotApproved,
            Containment::PlanAllowed,
            Containment::PlanDenied,
        ];
        for c in all {
            let json = serde_json::to_value(c).unwrap();
            assert_eq!(serde_json::from_value::<Containment>(json).unwrap(), c);
        }
        for m in [Mode::Live, Mode::DryRun] {
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(serde_json::from_value::<Mode>(json).unwrap(), m);
        }
    }

    #[test]
    fn the_markdown_report() {
        // GIVEN a partial containment started by a GuardDuty finding
        // WHEN it is rendered as Markdown
        // THEN headings, tables, commands and the coloured graph
        insta::assert_snapshot!(built().to_markdown());
    }
}
