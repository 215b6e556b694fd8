//! `firebreak validate`: check any Step Functions definitions.

use std::path::PathBuf;

use clap::Args;
use firebreak_workflows::validate::validate_json;

use crate::exit;

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Definition files (JSON).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub(crate) fn run(args: ValidateArgs) -> anyhow::Result<u8> {
    let mut code = exit::OK;
    for path in &args.files {
        let shown = path.display();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                say!("{shown}: cannot read: {e}");
                code = exit::BAD_INPUT;
                continue;
            }
        };
        match validate_json(&text) {
            Ok(_) => outln!("{shown}: valid"),
            Err(problems) => {
                for p in &problems.0 {
                    say!("{shown}: {p}");
                }
                say!(
                    "{shown}: invalid ({} problem{})",
                    problems.0.len(),
                    if problems.0.len() == 1 { "" } else { "s" }
                );
                code = exit::BAD_INPUT;
            }
        }
    }
    Ok(code)
}
