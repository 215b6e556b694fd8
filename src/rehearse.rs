//! `firebreak rehearse`: on a decoy in a sandbox, contain, check every
//! lever, release, check the restore, clean up; a pass/fail line per check.

use chrono::Utc;
use clap::Args;
use firebreak_steps::case::{CaseFile, CaseOptions};
use firebreak_steps::containment::ec2::read_live_state;
use firebreak_steps::ids::{CaseId, InstanceId};
use firebreak_steps::sandbox::decoy::{self, DecoySpec};
use firebreak_steps::sandbox::rehearsal::{self, Check};
use firebreak_steps::Mode;
use serde::Serialize;

use crate::session::Session;
use crate::summary;
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};
use firebreak_playbooks::report::Report;

#[derive(Debug, Args)]
pub(crate) struct RehearseArgs {
    /// Shape the decoy like this instance (interfaces, volumes, profile,
    /// EIP, ASG, target groups); read only. Default: a decoy with all of them.
    #[arg(long, value_name = "INSTANCE")]
    pub like: Option<String>,
    /// Keep the decoy afterwards (to look at it).
    #[arg(long)]
    pub keep: bool,
    /// Confirms the account is a sandbox: rehearsals create and delete
    /// resources. Not needed against a local sandbox endpoint.
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub sandbox_account: Option<String>,
    /// A fire drill from a finding: the event (GuardDuty, Security Hub,
    /// any `alert` reads) must trigger a playbook on an instance under the
    /// rules; the decoy stands in for that instance, and the playbook's
    /// containment is rehearsed on it (the memory capture of
    /// ec2-compromise is not: a decoy has no SSM agent).
    #[arg(long, value_name = "EVENT.json")]
    pub alert: Option<std::path::PathBuf>,
    /// With --alert: the trigger rules (default: the built-in ones).
    #[arg(long, value_name = "FILE", requires = "alert")]
    pub triggers: Option<std::path::PathBuf>,
    /// Run the playbooks in the deployed stack's state machines (found by
    /// their `firebreak:playbook` tag) instead of locally: a rehearsal of
    /// the deployment itself.
    #[arg(long)]
    pub remote: bool,
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

#[derive(Serialize)]
struct Rehearsal {
    /// The finding's trigger the rehearsal stands in for (`--alert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<serde_json::Value>,
    decoy: decoy::Decoy,
    case_id: String,
    contain: Option<Report>,
    release: Option<Report>,
    checks: Vec<Section>,
    passed: bool,
}

#[derive(Serialize)]
struct Section {
    phase: &'static str,
    checks: Vec<Check>,
}

fn result_check(name: &str, s: &Report) -> Check {
    Check {
        name: name.to_string(),
        passed: summary::exit_code(s) == exit::OK,
        detail: format!(
            "{}{}",
            firebreak_steps::sandbox::rehearsal::plain(&s.containment),
            s.failures
                .iter()
                .map(|f| format!("; {}: {}", f.step, f.cause.as_deref().unwrap_or("")))
                .collect::<String>()
        ),
    }
}

type Phases = (Option<Report>, Option<Report>, Vec<Section>);

/// Runs one playbook on the case: here, or (with `remote`, Step Functions)
/// in the deployed state machine, followed to its end.
async fn run_playbook(
    session: &Session,
    remote: Option<&aws_sdk_sfn::Client>,
    playbook: &str,
    input: &CaseFile,
    quiet: bool,
) -> anyhow::Result<Report> {
    let compiled = firebreak_playbooks::compile(playbook).map_err(anyhow::Error::new)?;
    let Some(sfn) = remote else {
        let run = session.run(&compiled, input).await?;
        return Ok(run.report(playbook, &input.case, Mode::Live, session.started.elapsed()));
    };
    let machine = crate::remote::find_state_machine(sfn, playbook, session).await?;
    let name = format!("{}-{playbook}", input.case.case_id);
    let execution =
        crate::remote::start(sfn, &machine, &name, &serde_json::to_value(input)?).await?;
    if !quiet {
        say!("  execution {execution}");
    }
    let printer = crate::session::progress_printer(session);
    let (outcome, history) = crate::remote::follow(sfn, &execution, |e| {
        if let Some(p) = &printer {
            p(e);
        }
    })
    .await?;
    Ok(Report::build(
        playbook,
        &input.case,
        Mode::Live,
        &outcome,
        &history,
        Vec::new(),
        session.started.elapsed(),
    ))
}

/// Contain, check, release, check.
async fn rehearse_phases(
    session: &Session,
    d: &decoy::Decoy,
    case_id: &str,
    bucket: &str,
    remote: Option<&aws_sdk_sfn::Client>,
    quiet: bool,
) -> anyhow::Result<Phases> {
    let id: InstanceId = d
        .instance_id
        .parse()
        .map_err(|e: firebreak_steps::ids::IdError| anyhow::Error::new(e))?;
    let log = session.ctx.log("rehearse");
    let before = read_live_state(&session.ctx, &log, &id)
        .await
        .map_err(anyhow::Error::new)?;
    let input = CaseFile {
        case: session.case_info(case_id, &id, bucket.to_string(), Default::default()),
        // The rehearsal restores everything, the deny included.
        options: CaseOptions {
            credential_deny: firebreak_steps::containment::ec2::DenyOnRelease::Remove,
            ..CaseOptions::default()
        },
    };
    if !quiet {
        say!("decoy {} ready; case {case_id}: ec2-contain", d.instance_id);
    }
    let contained_at = Utc::now();
    let contain = run_playbook(session, remote, "ec2-contain", &input, quiet).await?;
    let mut contained = vec![result_check(
        "ec2-contain completed with every step succeeding",
        &contain,
    )];
    contained.extend(
        rehearsal::contained(&session.ctx, d, case_id, bucket, contained_at)
            .await
            .map_err(anyhow::Error::new)?,
    );
    if !quiet {
        say!("ec2-release");
    }
    let release = run_playbook(session, remote, "ec2-release", &input, quiet).await?;
    let mut released = vec![result_check("ec2-release completed", &release)];
    released.extend(
        rehearsal::released(&session.ctx, d, &before, false)
            .await
            .map_err(anyhow::Error::new)?,
    );
    Ok((
        Some(contain),
        Some(release),
        vec![
            Section {
                phase: "contained",
                checks: contained,
            },
            Section {
                phase: "released",
                checks: released,
            },
        ],
    ))
}

/// `--alert`: what the finding triggers under the rules, checked before
/// anything is created. `Ok(None)` without `--alert`.
fn alert_trigger(args: &RehearseArgs) -> anyhow::Result<Option<(serde_json::Value, Check)>> {
    let Some(event) = &args.alert else {
        return Ok(None);
    };
    let (alerts, decision) = crate::alert::decide_file(event, args.triggers.as_deref())?;
    let Some(t) = decision.triggers.first() else {
        return Err(BadInput(format!(
            "{}: the finding triggers nothing under these rules, so there is nothing to rehearse: {}",
            event.display(),
            decision.reason.as_deref().unwrap_or("no rule matched")
        ))
        .into());
    };
    let alert = alerts.iter().find(|a| a.finding_id == t.finding_id);
    let check = Check {
        name: format!(
            "the finding triggers {} on {} (rule {}); the decoy stands in for it",
            t.playbook, t.instance, t.rule
        ),
        passed: true,
        detail: String::new(),
    };
    let summary = serde_json::json!({
        "source": alert.map(|a| a.source.as_str()),
        "finding_id": t.finding_id,
        "finding_type": alert.map(|a| a.finding_type.clone()),
        "playbook": t.playbook,
        "instance": t.instance,
        "rule": t.rule,
        "approval": t.approval,
    });
    Ok(Some((summary, check)))
}

pub(crate) async fn run(args: RehearseArgs) -> anyhow::Result<u8> {
    // The finding is read and decided before any decoy is made.
    let trigger = alert_trigger(&args)?;
    let like: Option<InstanceId> = match &args.like {
        Some(l) => Some(
            l.parse()
                .map_err(|e: firebreak_steps::ids::IdError| BadInput(e.to_string()))?,
        ),
        None => None,
    };
    let session = Session::open(&args.aws, Mode::Live, args.quiet).await?;
    crate::session::confirm_sandbox(&session, args.sandbox_account.as_deref())?;
    let bucket = session
        .evidence_bucket(args.evidence_bucket.as_deref())
        .await?;
    let spec = match &like {
        Some(i) => rehearsal::spec_like(&session.ctx, i)
            .await
            .map_err(anyhow::Error::new)?,
        None => DecoySpec::default(),
    };
    if !args.quiet {
        say!(
            "firebreak rehearse: creating a decoy in account {} region {}",
            session.who.account_id,
            session.region
        );
    }
    // Ctrl-C from here on stops the rehearsal where nothing is half done,
    // and the decoy is still deleted on the way out (unless --keep).
    session.stop_safely_on_interrupt();
    let d = decoy::create(&session.config, &spec)
        .await
        .map_err(anyhow::Error::new)?;
    if let Err(e) = crate::decoy::save(&d) {
        say!("firebreak: warning: {e:#}");
    }
    // What a second interrupt (which stops at once) leaves behind.
    session.finish_with(format!(
        "firebreak decoy delete --instance {} (the rehearsal's decoy)",
        d.instance_id
    ));
    // Whatever happens between here and the end, the decoy is deleted
    // (unless --keep): a failed rehearsal must not leave it running.
    let case_id = format!(
        "rehearsal-{}",
        CaseId::generate(
            Utc::now(),
            &d.instance_id
                .parse()
                .map_err(|e: firebreak_steps::ids::IdError| anyhow::Error::new(e))?
        )
    );
    if let (Some((t, _)), false) = (&trigger, args.quiet) {
        say!(
            "firebreak rehearse: the finding {} would run {} on {}; rehearsing its containment on the decoy {}",
            t["finding_id"].as_str().unwrap_or("?"),
            t["playbook"].as_str().unwrap_or("?"),
            t["instance"].as_str().unwrap_or("?"),
            d.instance_id
        );
    }
    let sfn = args
        .remote
        .then(|| aws_sdk_sfn::Client::new(&session.config));
    let phases = rehearse_phases(&session, &d, &case_id, &bucket, sfn.as_ref(), args.quiet).await;
    let interrupted = phases
        .as_ref()
        .is_err_and(|e| e.downcast_ref::<crate::session::Interrupted>().is_some());
    let (contain, release, mut sections) = match phases {
        Ok(p) => p,
        Err(e) => (
            None,
            None,
            vec![Section {
                phase: "run",
                checks: vec![Check {
                    name: "the rehearsal ran to the end".into(),
                    passed: false,
                    detail: format!("{e:#}"),
                }],
            }],
        ),
    };
    if let Some((_, check)) = &trigger {
        sections.insert(
            0,
            Section {
                phase: "alert",
                checks: vec![check.clone()],
            },
        );
    }
    if !args.keep {
        let (_, failed) = decoy::delete(&session.config, &d, Some(&case_id)).await;
        sections.push(Section {
            phase: "cleanup",
            checks: vec![Check {
                name: "the decoy and its snapshots are deleted".into(),
                passed: failed.is_empty(),
                detail: if failed.is_empty() {
                    "all deleted".into()
                } else {
                    failed.join("; ")
                },
            }],
        });
    }
    let passed = sections.iter().all(|s| s.checks.iter().all(|c| c.passed));
    let report = Rehearsal {
        alert: trigger.map(|(t, _)| t),
        decoy: d,
        case_id,
        contain,
        release,
        checks: sections,
        passed,
    };
    match args.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Human => {
            outln!();
            outln!(
                "Rehearsal on decoy {} (case {})",
                report.decoy.instance_id,
                report.case_id
            );
            for s in &report.checks {
                outln!("  {}:", s.phase);
                for c in &s.checks {
                    outln!("    {} {}", if c.passed { "PASS" } else { "FAIL" }, c.name);
                    if !c.passed {
                        outln!("         {}", c.detail);
                    }
                }
            }
            outln!("{}", if report.passed { "PASSED" } else { "FAILED" });
        }
    }
    Ok(if interrupted {
        exit::INTERRUPTED
    } else if report.passed {
        exit::OK
    } else {
        exit::FAILED
    })
}
