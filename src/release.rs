//! `firebreak release`: undo containment, restoring the recorded state.

use std::io::Write as _;

use clap::Args;
use firebreak_steps::case::{CaseFile, CaseOptions};
use firebreak_steps::containment::ec2::DenyOnRelease;
use firebreak_steps::Mode;

use crate::respond::parse_ids;
use crate::session::Session;
use crate::summary;
use crate::summary::OutputFormat;
use crate::{AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    /// The contained instance.
    #[arg(long)]
    pub instance: String,
    /// The case whose record to restore (default: the open case the
    /// instance is tagged with).
    #[arg(long)]
    pub case: Option<String>,
    /// Keep the inline deny on sessions issued before containment (by
    /// default it is removed once every credential it blocks has expired).
    #[arg(long, conflicts_with = "remove_credential_deny")]
    pub keep_credential_deny: bool,
    /// Remove the deny now, even though credentials taken from the
    /// instance before containment may still be valid.
    #[arg(long)]
    pub remove_credential_deny: bool,
    /// Change nothing: show the plan with DryRun verdicts.
    #[arg(long)]
    pub dry_run: bool,
    /// Bucket of the case's evidence (default firebreak-evidence-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// No progress lines on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub(crate) async fn run(args: ReleaseArgs) -> anyhow::Result<u8> {
    if args.output == OutputFormat::Json {
        crate::json_errors();
    }
    let (instance, given_case) = parse_ids(&args.instance, args.case.as_deref())?;
    let compiled =
        firebreak_playbooks::compile("ec2-release").map_err(|e| BadInput(e.to_string()))?;
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Live
    };
    let session = Session::open(&args.aws, mode, args.quiet).await?;
    // The instance first: one in another region is said as such, not as
    // a missing bucket there.
    session.case_tag(&instance).await?;
    let bucket = session
        .evidence_bucket(args.evidence_bucket.as_deref())
        .await?;
    let _lock = match mode {
        Mode::Live => Some(crate::session::lock_instance(&instance, "release").await?),
        Mode::DryRun => None,
    };
    let tag = session.case_tag(&instance).await?;
    // Released already: said, and run again (it changes nothing, unless a
    // credential deny kept at the first release may go now).
    let released = tag
        .released()
        .filter(|closed| given_case.as_ref().is_none_or(|c| c == *closed))
        .cloned();
    if let Some(closed) = &released {
        say!("firebreak release: {instance} is already released (case {closed}); checking it again, and removing a credential deny kept then if it may go now");
    }
    let case = match (given_case, tag.open().cloned().or(released)) {
        (Some(c), _) => c,
        (None, Some(c)) => c,
        (None, None) => {
            return Err(BadInput(format!(
                "{instance} has no open case: pass --case with the case to release"
            ))
            .into())
        }
    };
    let input = CaseFile {
        case: session.case_info(&case, &instance, bucket, Default::default()),
        options: CaseOptions {
            credential_deny: match (args.keep_credential_deny, args.remove_credential_deny) {
                (true, _) => DenyOnRelease::Keep,
                (_, true) => DenyOnRelease::Remove,
                _ => DenyOnRelease::Auto,
            },
            ..CaseOptions::default()
        },
    };
    if !args.quiet {
        say!(
            "firebreak {}: ec2-release on {instance} (account {}, region {}), case {case}",
            if args.dry_run { "dry run" } else { "release" },
            session.who.account_id,
            session.region
        );
    }
    if mode == Mode::Live {
        session.finish_with(format!(
            "firebreak release --instance {instance} --case {case}"
        ));
        session.stop_safely_on_interrupt();
    }
    let run = session.run(&compiled, &input).await?;
    let report = run.report("ec2-release", &input.case, mode, session.started.elapsed());
    let code = summary::exit_code(&report);
    if mode == Mode::Live && code == crate::exit::OK {
        // The case is closed: an unfinished respond of it must never be
        // resumed (it would contain the instance again, half way).
        crate::session::abandon_unfinished(&instance, &session.who.account_id, &case.to_string());
    }
    summary::print(&report, args.output);
    let _ = std::io::stdout().flush();
    Ok(code)
}
