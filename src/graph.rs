//! `firebreak graph`: a playbook or any definition as Mermaid or DOT.

use std::path::Path;

use clap::{Args, ValueEnum};
use firebreak_workflows::graph::{render, Format};
use firebreak_workflows::validate::validate_json;

use crate::{exit, BadInput};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Debug, Args)]
pub(crate) struct GraphArgs {
    /// A built-in playbook name or a definition file.
    pub target: String,
    /// Diagram format.
    #[arg(long, value_enum, default_value = "mermaid")]
    pub format: GraphFormat,
}

pub(crate) fn run(args: GraphArgs) -> anyhow::Result<u8> {
    let machine = if firebreak_playbooks::BUILT_IN.contains(&args.target.as_str()) {
        firebreak_playbooks::compile(&args.target)
            .map_err(|e| BadInput(e.to_string()))?
            .definition
    } else if Path::new(&args.target).exists() {
        let text = std::fs::read_to_string(&args.target)
            .map_err(|e| BadInput(format!("cannot read {}: {e}", args.target)))?;
        validate_json(&text)
            .map_err(|p| BadInput(format!("{} is not a valid definition:\n{p}", args.target)))?
    } else {
        return Err(BadInput(format!(
            "{:?} is neither a built-in playbook ({}) nor a file",
            args.target,
            firebreak_playbooks::BUILT_IN.join(", ")
        ))
        .into());
    };
    let format = match args.format {
        GraphFormat::Mermaid => Format::Mermaid,
        GraphFormat::Dot => Format::Dot,
    };
    out!("{}", render(&machine, format));
    Ok(exit::OK)
}
