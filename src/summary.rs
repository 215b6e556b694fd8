//! Printing a playbook report and turning it into an exit code, and the
//! output format every command takes (`--output human|json`).

use clap::ValueEnum;
use firebreak_playbooks::report::{Containment, Report};

use crate::exit;

/// How a command prints its result: for a person, or as JSON.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Human,
    Json,
}

pub(crate) fn print(report: &Report, format: OutputFormat) {
    match format {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        ),
        OutputFormat::Human => out!("{}", report.human()),
    }
}

/// Exit codes as docs/containment-and-release.md documents them.
pub(crate) fn exit_code(report: &Report) -> u8 {
    match report.containment {
        Containment::Complete | Containment::PlanAllowed => exit::OK,
        Containment::Partial | Containment::PlanDenied => exit::PARTIAL,
        Containment::Failed => exit::FAILED,
        Containment::NotApproved => exit::NOT_APPROVED,
    }
}
