//! `firebreak infra render`: writes the deployable stack (the SAM template,
//! the member-account role, each playbook's definition and policy) from
//! the code, or checks that a directory holds exactly that.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::exit;

#[derive(Debug, Args)]
pub(crate) struct InfraArgs {
    #[command(subcommand)]
    pub command: InfraCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InfraCommand {
    /// Write infra/: template.yaml (AWS SAM), member-role.yaml,
    /// statemachines/*.asl.json and policies/*.json.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RenderArgs {
    /// The directory to write into.
    #[arg(short = 'o', long = "out", value_name = "DIR", default_value = "infra")]
    pub out: PathBuf,
    /// Write nothing: exit 1 and name each file that differs from what
    /// the code renders.
    #[arg(long)]
    pub check: bool,
}

pub(crate) fn run(args: InfraArgs) -> anyhow::Result<u8> {
    match args.command {
        InfraCommand::Render(a) => render(&a),
    }
}

fn render(a: &RenderArgs) -> anyhow::Result<u8> {
    let files = firebreak_playbooks::stack::render()?;
    if a.check {
        let stale: Vec<String> = files
            .iter()
            .filter(|f| {
                std::fs::read_to_string(a.out.join(&f.path)).ok().as_deref() != Some(&f.text)
            })
            .map(|f| a.out.join(&f.path).display().to_string())
            .collect();
        if stale.is_empty() {
            say!(
                "firebreak infra: {} files in {} are what the code renders",
                files.len(),
                a.out.display()
            );
            return Ok(exit::OK);
        }
        say!(
            "firebreak infra: stale (run `firebreak infra render --out {}`):\n  {}",
            a.out.display(),
            stale.join("\n  ")
        );
        return Ok(exit::FAILED);
    }
    for f in &files {
        write(&a.out.join(&f.path), &f.text)?;
    }
    say!(
        "firebreak infra: wrote {} files into {}",
        files.len(),
        a.out.display()
    );
    Ok(exit::OK)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
