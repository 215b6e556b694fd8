//! Printing a playbook report and turning it into an exit code.

use firebreak_playbooks::report::{Containment, Report};

use crate::exit;
use crate::respond::OutputFormat;

pub fn print(report: &Report, format: OutputFormat) {
    match format {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        ),
        OutputFormat::Human => out!("{}", report.human()),
    }
}

/// Exit codes as docs/containment-and-release.md documents them.
pub fn exit_code(report: &Report) -> u8 {
    match report.containment {
        Containment::Complete | Containment::PlanAllowed => exit::OK,
        Containment::Partial | Containment::PlanDenied => exit::PARTIAL,
        Containment::Failed => exit::FAILED,
    }
}
