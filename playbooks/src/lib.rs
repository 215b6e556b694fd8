//! firebreak's built-in playbooks, written with the typed builder, and
//! the report of a run. It may import `firebreak_workflows` and the steps'
//! types from `firebreak_steps`; it makes no AWS call and never imports
//! the CLI.
//!
//! ```
//! let compiled = firebreak_playbooks::compile("ec2-contain").unwrap();
//! assert_eq!(compiled.definition.start_at, "ApprovalRequired?");
//! ```

pub mod alerts;
mod ec2_contain;
mod ec2_release;
pub mod incident;
pub mod report;
pub mod stack;

use firebreak_workflows::builder::Workflow;
use firebreak_workflows::compile::{compile as compile_workflow, CompileError, Compiled};

pub use ec2_contain::{ec2_compromise, ec2_contain};
pub use ec2_release::ec2_release;

/// The names of the built-in playbooks.
pub const BUILT_IN: &[&str] = &["ec2-contain", "ec2-compromise", "ec2-release"];

/// Where a case says which account its instance is in: every step of a
/// built-in playbook acts there (through the member's
/// `firebreak-responder` role when it is not the runner's own account).
pub const CASE_ACCOUNT: &str = "$.case.account_id";

/// Why a playbook could not be found or compiled.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// The name is not one of [`BUILT_IN`].
    #[error("no playbook named {name:?} (built-in playbooks: {})", BUILT_IN.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// The playbook's workflow did not compile to a state machine.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A compiled playbook could not be rendered into the stack.
    #[error("the stack cannot be rendered: {0}")]
    Render(String),
}

/// A built-in playbook by name.
pub fn by_name(name: &str) -> Result<Workflow, PlaybookError> {
    match name {
        "ec2-contain" => Ok(ec2_contain()),
        "ec2-compromise" => Ok(ec2_compromise()),
        "ec2-release" => Ok(ec2_release()),
        other => Err(PlaybookError::Unknown {
            name: other.to_string(),
        }),
    }
}

/// Compiles a built-in playbook.
pub fn compile(name: &str) -> Result<Compiled, PlaybookError> {
    Ok(compile_workflow(&by_name(name)?)?)
}
