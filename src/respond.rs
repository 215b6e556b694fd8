//! `firebreak respond`: run a playbook against an instance now, locally,
//! with live progress, ending with a summary.

use std::io::Write as _;

use chrono::Utc;
use clap::{Args, ValueEnum};
use firebreak_steps::case::{CaseFile, CaseOptions};
use firebreak_steps::containment::autoscaling::AsgMode;
use firebreak_steps::containment::ec2::{DenyOnRelease, Exemption, ForensicCopy};
use firebreak_steps::evidence::memory::{MemoryOptions, MAX_URL_EXPIRY_SECONDS};
use firebreak_steps::evidence::tools::default_tools_bucket;
use firebreak_steps::ids::{CaseId, IdError, InstanceId};
use firebreak_steps::Mode;

use crate::session::{lock_instance, unfinished_run, Session};
use crate::summary::{self, OutputFormat};
use crate::{AwsArgs, BadInput};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum AsgModeArg {
    Standby,
    Detach,
}

#[derive(Debug, Args)]
pub(crate) struct RespondArgs {
    /// The compromised instance (i-...); repeat it to contain several at
    /// once, one case each, with one summary.
    #[arg(long, required = true)]
    pub instance: Vec<String>,
    /// With several instances: how many are worked on at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=40))]
    pub max_concurrency: u32,
    /// The playbook to run.
    #[arg(long, default_value = "ec2-contain")]
    pub playbook: String,
    /// Case id (default: the open case the instance is tagged with, or a new one).
    #[arg(long)]
    pub case: Option<String>,
    /// Change nothing: list every call in order, send EC2 mutations with
    /// DryRun=true and show whether each would be allowed.
    #[arg(long)]
    pub dry_run: bool,
    /// Bucket for the case's evidence (default firebreak-evidence-ACCOUNT-REGION).
    #[arg(long, env = "FIREBREAK_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    /// How to take the instance out of an Auto Scaling group.
    #[arg(long, value_enum, default_value = "standby")]
    pub asg_mode: AsgModeArg,
    /// Keep SSH open from this CIDR or security group through isolation
    /// (for investigators; repeatable).
    #[arg(long, value_name = "CIDR|sg-ID")]
    pub allow_ssh_from: Vec<String>,
    /// Keep HTTPS open to this CIDR, security group or prefix list (the
    /// SSM interface endpoints; pl-... for the S3 gateway endpoint;
    /// repeatable).
    #[arg(long, value_name = "CIDR|sg-ID|pl-ID")]
    pub allow_https_to: Vec<String>,
    /// Leave the network ACLs alone. By default the instance's addresses
    /// are denied on the ACLs of the VPC's other subnets, which ends the
    /// connections AWS always tracks (NAT gateways, load balancers,
    /// Transit Gateway) that security groups cannot.
    #[arg(long)]
    pub no_nacl_cut: bool,
    /// Rules per direction a network ACL may hold, when the account's
    /// "Rules per network ACL" quota was raised (AWS's default: 20).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=40))]
    pub nacl_rule_limit: Option<u32>,
    /// Copy the snapshots to this region (forensic copy), re-encrypted with
    /// --forensic-kms-key.
    #[arg(long, value_name = "REGION", requires = "forensic_kms_key")]
    pub forensic_region: Option<String>,
    /// KMS key (in the forensic account and region) for the copies.
    #[arg(long, value_name = "KEY", requires = "forensic_region")]
    pub forensic_kms_key: Option<String>,
    /// Forensic account to copy to (the snapshots are shared with it).
    #[arg(long, value_name = "ACCOUNT_ID", requires_all = ["forensic_region", "forensic_role_arn"])]
    pub forensic_account: Option<String>,
    /// Role to assume in the forensic account to make the copies.
    #[arg(long, value_name = "ARN", requires = "forensic_account")]
    pub forensic_role_arn: Option<String>,
    /// ec2-compromise: the bucket of LiME modules and AVML (default
    /// firebreak-tools-ACCOUNT-REGION; `firebreak tools add`).
    #[arg(long, env = "FIREBREAK_TOOLS_BUCKET")]
    pub tools_bucket: Option<String>,
    /// ec2-compromise: how long the host's presigned URLs live, in seconds
    /// (default: an hour, longer for instances with more memory than a
    /// slow host uploads in one; never beyond the signing credentials).
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(60..=i64::from(MAX_URL_EXPIRY_SECONDS)))]
    pub memory_url_expiry: Option<u32>,
    /// ec2-compromise: part size of the memory upload in MiB (default:
    /// sized from the instance type's memory).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(5..=5120))]
    pub memory_part_size_mib: Option<u32>,
    /// Object Lock COMPLIANCE retention of this case's evidence, in days
    /// (default: the bucket's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub retention_days: Option<u32>,
    /// KMS key for this case's evidence objects (default: the bucket's
    /// encryption).
    #[arg(long)]
    pub kms_key_id: Option<String>,
    /// Sign every custody record of the case with this asymmetric KMS key
    /// (ECC_NIST_P256, SIGN_VERIFY); `evidence verify` then checks the
    /// signatures.
    #[arg(long, value_name = "KMS_KEY")]
    pub custody_key: Option<String>,
    /// Once the snapshots complete, read every block of each through the
    /// EBS direct APIs and record the volume image's SHA-256 and a block
    /// manifest in custody (takes time in proportion to the volumes' size).
    #[arg(long)]
    pub hash_snapshots: bool,
    /// Go on when the preflight finds the playbook cannot do its job
    /// (said as warnings): for example ec2-compromise without the
    /// exemptions memory capture needs, or an SSM agent that is not online.
    #[arg(long)]
    pub force: bool,
    /// Wait for a person's approval before the first change: the run asks
    /// (on standard error, the SNS topic and the webhook, with the token)
    /// and goes on after `firebreak approve TOKEN`; after `firebreak deny`
    /// it ends having changed nothing. REASON says why it waits.
    #[arg(long, value_name = "REASON", num_args = 0..=1,
          default_missing_value = "asked for with respond --approval")]
    pub approval: Option<String>,
    /// SNS topic that hears the run's start, end and approval requests.
    #[arg(long, value_name = "ARN", env = "FIREBREAK_NOTIFY_TOPIC")]
    pub notify_topic: Option<String>,
    /// Slack-compatible incoming webhook that hears them too (a secret:
    /// best given in the environment, not on a command line others see).
    #[arg(
        long,
        value_name = "URL",
        env = "FIREBREAK_WEBHOOK_URL",
        hide_env_values = true
    )]
    pub notify_webhook: Option<String>,
    /// Run in the deployed state machine (Step Functions) instead of on
    /// this machine, and follow it with the same progress lines.
    #[arg(long)]
    pub remote: bool,
    /// With --remote: the state machine (default: the one tagged
    /// firebreak:playbook=PLAYBOOK in the account and region).
    #[arg(long, value_name = "ARN", requires = "remote")]
    pub state_machine: Option<String>,
    /// The alert that started the run (`firebreak alert`), for its report.
    #[arg(skip)]
    pub alert: Option<firebreak_playbooks::alerts::Alert>,
    /// The execution name a trigger gives its run (`--remote`: Step
    /// Functions refuses a second execution of that name).
    #[arg(skip)]
    pub execution_name: Option<String>,
    /// Summary format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// No progress lines on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Checks, before the first change, that the playbook can do its job on
/// this instance; a problem stops the run with the fix (exit 2), unless
/// `--force` (or a dry run, which says them and plans on).
async fn preflight(
    session: &Session,
    args: &RespondArgs,
    instance: &InstanceId,
    mode: Mode,
) -> anyhow::Result<()> {
    let mut problems: Vec<String> = Vec::new();
    if args.playbook == "ec2-compromise" {
        if args.allow_https_to.is_empty() {
            problems.push("ec2-compromise captures memory after isolation, through SSM and S3, but no --allow-https-to keeps them reachable: the host could never answer while the capture waits. Pass --allow-https-to with the security group of the SSM interface endpoints (ssm, ssmmessages, ec2messages) and the S3 gateway endpoint's prefix list (pl-...)".into());
        }
        match firebreak_steps::evidence::memory::agent_ping_status(&session.ctx, instance.as_str()).await {
            Ok(Some(s)) if s == "Online" => {}
            Ok(Some(s)) => problems.push(format!(
                "the SSM agent of {instance} is {s}, not Online: memory capture cannot reach it; check the agent and its route to SSM, or run ec2-contain instead"
            )),
            Ok(None) => problems.push(format!(
                "{instance} is not registered with SSM (no agent, an instance profile without AmazonSSMManagedInstanceCore, or no route to SSM): memory capture cannot run; fix that, or run ec2-contain instead"
            )),
            Err(e) => say!(
                "firebreak: warning: cannot check the SSM agent of {instance} ({}); going on",
                e.message
            ),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    if args.force || mode == Mode::DryRun {
        for p in &problems {
            say!("firebreak: warning (preflight): {p}");
        }
        return Ok(());
    }
    Err(BadInput(format!(
        "preflight: nothing was changed: {} (--force goes on anyway)",
        problems.join("; ")
    ))
    .into())
}

pub(crate) fn parse_ids(
    instance: &str,
    case: Option<&str>,
) -> anyhow::Result<(InstanceId, Option<CaseId>)> {
    let instance: InstanceId = instance
        .parse()
        .map_err(|e: IdError| BadInput(e.to_string()))?;
    let case = match case {
        Some(c) => Some(c.parse().map_err(|e: IdError| BadInput(e.to_string()))?),
        None => None,
    };
    Ok((instance, case))
}

/// Why an unfinished run of the instance must not be resumed: its case
/// was released since, or the instance is now under another case.
fn superseded(
    start: &firebreak_workflows::exec::journal::Start,
    tag: &firebreak_steps::containment::ec2::CaseTag,
) -> Option<String> {
    let its = start.input.pointer("/case/case_id")?.as_str()?;
    if tag.released().is_some_and(|c| c.as_str() == its) {
        return Some(format!("its case {its} was released since"));
    }
    match tag.open() {
        Some(other) if other.as_str() != its => {
            Some(format!("the instance is now under case {other}, not {its}"))
        }
        _ => None,
    }
}

/// `--case C` naming a case that was closed: the instance has since been
/// under another case, and C's record (kept) is the state before an
/// earlier incident.
async fn refuse_closed_case(
    session: &Session,
    bucket: &str,
    case: &CaseId,
    instance: &InstanceId,
    tag: &firebreak_steps::containment::ec2::CaseTag,
) -> anyhow::Result<()> {
    let later = match &tag.case {
        Some(t) if t != case => t,
        _ => return Ok(()),
    };
    let log = session.ctx.log("respond");
    let record = firebreak_steps::containment::ec2::load_record(
        &session.ctx,
        &log,
        bucket,
        case.as_str(),
        instance.as_str(),
    )
    .await
    .map_err(|e| session.aws_failure(e))?;
    if record.is_some() {
        return Err(BadInput(format!(
            "case {case} was closed: {instance} has since been under case {later}, and {case}'s record is the state before an earlier incident; omit --case to open a new case"
        ))
        .into());
    }
    Ok(())
}

/// The isolation exemptions asked for, each checked.
fn exemptions(args: &RespondArgs) -> anyhow::Result<Vec<Exemption>> {
    let mut exemptions = Vec::new();
    for p in &args.allow_ssh_from {
        exemptions.push(Exemption::SshFrom(p.clone()));
    }
    for p in &args.allow_https_to {
        exemptions.push(Exemption::HttpsTo(p.clone()));
    }
    for e in &exemptions {
        e.validate()
            .map_err(|m| BadInput(format!("isolation exemption: {m}")))?;
    }
    Ok(exemptions)
}

/// Where the run's announcements go, each checked.
pub(crate) fn notify_targets(
    topic: Option<&str>,
    webhook: Option<&str>,
) -> anyhow::Result<firebreak_steps::context::NotifyTargets> {
    let topic = topic.map(str::trim).filter(|t| !t.is_empty());
    let webhook = webhook.map(str::trim).filter(|w| !w.is_empty());
    if let Some(t) = topic {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5].is_empty() {
            return Err(BadInput(format!(
                "--notify-topic {t:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
            ))
            .into());
        }
    }
    if let Some(w) = webhook {
        if !(w.starts_with("https://") || w.starts_with("http://")) {
            return Err(BadInput(
                "--notify-webhook is not an http(s) URL (the URL is not repeated here: it is a secret)"
                    .into(),
            )
            .into());
        }
    }
    Ok(firebreak_steps::context::NotifyTargets {
        topic_arn: topic.map(str::to_string),
        webhook_url: webhook.map(str::to_string),
    })
}

/// The case to run under, and whether it continues the one the instance
/// is tagged with: a released case stays closed, an open one is named.
fn choose_case(
    instance: &InstanceId,
    given: Option<CaseId>,
    tag: &firebreak_steps::containment::ec2::CaseTag,
) -> anyhow::Result<(CaseId, bool)> {
    if let (Some(c), Some(closed)) = (&given, tag.released()) {
        if c == closed {
            return Err(BadInput(format!(
                "case {c} was released ({instance} is tagged {}=released): a released case stays closed, since its record is the state before an earlier incident; omit --case to open a new case",
                firebreak_steps::tags::STATUS
            ))
            .into());
        }
    }
    Ok(match (given, tag.open().cloned()) {
        (Some(c), Some(o)) if c != o => {
            return Err(BadInput(format!(
                "{instance} is contained under case {o}: continue that case (omit --case or pass --case {o}), or release it before opening {c}"
            ))
            .into())
        }
        (Some(c), open) => (c, open.is_some()),
        (None, Some(c)) => (c, true),
        (None, None) => (CaseId::generate(Utc::now(), instance), false),
    })
}

fn case_options(args: &RespondArgs, session: &Session, exemptions: Vec<Exemption>) -> CaseOptions {
    CaseOptions {
        asg_mode: match args.asg_mode {
            AsgModeArg::Standby => AsgMode::Standby,
            AsgModeArg::Detach => AsgMode::Detach,
        },
        isolation_exemptions: exemptions,
        credential_deny: DenyOnRelease::Auto,
        forensic_copy: match (&args.forensic_region, &args.forensic_kms_key) {
            (Some(region), Some(key)) => Some(ForensicCopy {
                region: region.clone(),
                kms_key_id: key.clone(),
                account_id: args.forensic_account.clone(),
                role_arn: args.forensic_role_arn.clone(),
            }),
            _ => None,
        },
        memory: MemoryOptions {
            tools_bucket: args
                .tools_bucket
                .clone()
                .unwrap_or_else(|| default_tools_bucket(&session.who.account_id, &session.region)),
            part_size_mib: args.memory_part_size_mib,
            url_expiry_seconds: args.memory_url_expiry,
            ..MemoryOptions::default()
        },
        hash_snapshots: args.hash_snapshots,
        skip_nacl_cut: args.no_nacl_cut,
        nacl_rule_limit: args.nacl_rule_limit,
        approval: args.approval.clone(),
    }
}

/// A dry run's refusals for want of the evidence bucket say the remedy.
fn name_the_remedy(report: &mut firebreak_playbooks::report::Report, bucket: &str) {
    let remedy = format!(
        " (refused: the evidence bucket {bucket} does not exist; make it with `firebreak setup`)"
    );
    for f in &mut report.failures {
        if f.cause.as_deref().is_some_and(|c| c.contains(bucket)) {
            f.cause = f.cause.take().map(|c| c + &remedy);
        }
    }
}

/// Runs the playbook: journaled and safe to interrupt when live.
async fn run_playbook(
    session: &Session,
    args: &RespondArgs,
    compiled: &firebreak_workflows::compile::Compiled,
    input: &CaseFile,
    mode: Mode,
) -> anyhow::Result<crate::session::Run> {
    Ok(match mode {
        // A dry run changes nothing: there is nothing to resume.
        Mode::DryRun => session.run(compiled, input).await?,
        Mode::Live => {
            let runner = RespondRunner {
                command: "respond".into(),
                playbook: args.playbook.clone(),
                profile: args.aws.profile.clone(),
                // Where this run went, also when it came from the
                // environment: a resume must go to the same place.
                region: Some(session.region.clone()),
                endpoint_url: args
                    .aws
                    .endpoint_url
                    .clone()
                    .or_else(|| session.config.endpoint_url().map(str::to_string)),
                output_json: args.output == OutputFormat::Json,
                quiet: args.quiet,
                notify_topic: session.ctx.notify.topic_arn.clone(),
            };
            session.stop_safely_on_interrupt();
            session
                .run_journaled(compiled, input, serde_json::to_value(&runner)?)
                .await?
        }
    })
}

pub(crate) async fn run(args: RespondArgs) -> anyhow::Result<u8> {
    if args.output == OutputFormat::Json {
        crate::json_errors();
    }
    if args.remote {
        return respond_remote(&args).await;
    }
    let report = respond_one(&args, &args.instance[0], None).await?;
    summary::print(&report, args.output);
    let _ = std::io::stdout().flush();
    Ok(summary::exit_code(&report))
}

/// The playbook, compiled, and the isolation exemptions: checked before
/// any instance is touched.
pub(crate) fn checked_inputs(
    args: &RespondArgs,
) -> anyhow::Result<(firebreak_workflows::compile::Compiled, Vec<Exemption>)> {
    let compiled =
        firebreak_playbooks::compile(&args.playbook).map_err(|e| BadInput(e.to_string()))?;
    Ok((compiled, exemptions(args)?))
}

/// Opens a session for a run of `respond` (its notification targets
/// checked first), labelled with the instance when several run at once.
pub(crate) async fn open_session(
    args: &RespondArgs,
    label: Option<&str>,
) -> anyhow::Result<Session> {
    let targets = notify_targets(args.notify_topic.as_deref(), args.notify_webhook.as_deref())?;
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Live
    };
    let mut session = Session::open(&args.aws, mode, args.quiet).await?;
    session.ctx.notify = targets;
    session.label = label.map(str::to_string);
    Ok(session)
}

/// Runs the playbook on one instance and returns its report (printed by
/// the caller).
pub(crate) async fn respond_one(
    args: &RespondArgs,
    instance: &str,
    label: Option<&str>,
) -> anyhow::Result<firebreak_playbooks::report::Report> {
    let (instance, given_case) = parse_ids(instance, args.case.as_deref())?;
    let (compiled, exemptions) = checked_inputs(args)?;
    let session = open_session(args, label).await?;
    let mode = session.ctx.mode;
    // The instance must exist (in this account and region) before
    // anything starts.
    session.case_tag(&instance).await?;
    // One run per instance at a time: a second waits, then continues the
    // first's case.
    let _lock = match mode {
        Mode::Live => Some(lock_instance(&instance, &format!("respond {}", args.playbook)).await?),
        Mode::DryRun => None,
    };
    // Its tags (read again, holding the lock) name the case open for it.
    let tag = session.case_tag(&instance).await?;
    if mode == Mode::Live {
        if let Some((path, start)) = unfinished_run(&instance, &session.who.account_id) {
            if let Some(why) = superseded(&start, &tag) {
                let name = &start.config.name;
                let aside = crate::session::abandon(&path);
                say!("firebreak respond: the unfinished run {name} is not resumed: {why}; its journal is set aside ({aside})");
            } else {
                return resume_unfinished(&session, args, &instance, given_case, &path, start)
                    .await;
            }
        }
    }
    let (case, continuing) = choose_case(&instance, given_case.clone(), &tag)?;
    preflight(&session, args, &instance, mode).await?;
    // A dry run plans without the bucket too: the steps that need it are
    // refused in the plan, with the remedy.
    let (bucket, bucket_exists) = match mode {
        Mode::Live => (
            session
                .evidence_bucket(args.evidence_bucket.as_deref())
                .await?,
            true,
        ),
        Mode::DryRun => {
            session
                .evidence_bucket_named(args.evidence_bucket.as_deref())
                .await?
        }
    };
    if let (Some(c), true) = (&given_case, bucket_exists) {
        refuse_closed_case(&session, &bucket, c, &instance, &tag).await?;
    }
    if !bucket_exists {
        say!("firebreak: the evidence bucket {bucket} does not exist (account {}, region {}): the plan marks the steps that need it as refused; make it with `firebreak setup` (or pass --evidence-bucket)", session.who.account_id, session.region);
    }
    let evidence_lock = if bucket_exists {
        session
            .evidence_lock(
                &bucket,
                args.retention_days,
                args.kms_key_id.clone(),
                args.custody_key.as_deref(),
            )
            .await?
    } else {
        firebreak_steps::evidence::Lock::default()
    };
    let input = CaseFile {
        case: session.case_info(&case, &instance, bucket, evidence_lock),
        options: case_options(args, &session, exemptions),
    };
    if !args.quiet {
        say!(
            "firebreak {}: {} on {instance} (account {} as {}, region {}), case {case}{}",
            if args.dry_run { "dry run" } else { "respond" },
            args.playbook,
            session.who.account_id,
            session.who.arn,
            session.region,
            if continuing {
                " (continuing the case the instance is tagged with)"
            } else {
                ""
            },
        );
    }
    let run = run_playbook(&session, args, &compiled, &input, mode).await?;
    let mut report = run.report(&args.playbook, &input.case, mode, session.started.elapsed());
    if !bucket_exists {
        name_the_remedy(&mut report, &input.case.evidence_bucket);
    }
    crate::report::write_after_run(
        &session,
        &report,
        &run.history,
        &compiled.definition,
        args.alert.as_ref(),
        &run.name,
        &input.case,
    )
    .await;
    Ok(report)
}

/// What `firebreak resume` needs to finish a killed `respond`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct RespondRunner {
    pub command: String,
    pub playbook: String,
    pub profile: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub output_json: bool,
    pub quiet: bool,
    /// The SNS topic of the run's announcements (the webhook, a secret,
    /// comes from FIREBREAK_WEBHOOK_URL again when resumed).
    #[serde(default)]
    pub notify_topic: Option<String>,
}

/// Finishes a journaled `respond` (`firebreak resume`): the steps that
/// finished are not run again. The summary is the whole run's, its AWS
/// calls included (as the journal noted them; see `session::NotingRunner`).
/// Where AWS is comes from the journal, unless `aws` says otherwise.
pub(crate) async fn resume(
    journal: firebreak_workflows::exec::Journal,
    start: firebreak_workflows::exec::journal::Start,
    aws: AwsArgs,
) -> anyhow::Result<u8> {
    let r: RespondRunner = serde_json::from_value(start.runner.clone())
        .map_err(|e| BadInput(format!("not a journal written by `firebreak respond`: {e}")))?;
    if r.output_json {
        crate::json_errors();
    }
    let input: CaseFile = serde_json::from_value(start.input.clone())
        .map_err(|e| BadInput(format!("the journal's case file does not parse: {e}")))?;
    let aws = AwsArgs {
        profile: aws.profile.or(r.profile.clone()),
        region: aws.region.or(r.region.clone()),
        endpoint_url: aws.endpoint_url.or(r.endpoint_url.clone()),
        debug: aws.debug,
    };
    let mut session = Session::open(&aws, Mode::Live, r.quiet).await?;
    session.ctx.notify = notify_targets(
        r.notify_topic.as_deref(),
        std::env::var("FIREBREAK_WEBHOOK_URL").ok().as_deref(),
    )?;
    let instance: InstanceId = input
        .case
        .instance_id
        .parse()
        .map_err(|e: IdError| BadInput(e.to_string()))?;
    let _lock = lock_instance(&instance, &format!("resume {}", start.config.name)).await?;
    if !r.quiet {
        say!(
            "firebreak respond (resumed): {} on {}, case {}",
            r.playbook,
            input.case.instance_id,
            input.case.case_id
        );
    }
    let output = if r.output_json {
        OutputFormat::Json
    } else {
        OutputFormat::Human
    };
    let report = finish_resumed(&session, journal, start, &r.playbook).await?;
    summary::print(&report, output);
    let _ = std::io::stdout().flush();
    Ok(summary::exit_code(&report))
}

/// The options that shape a run, as given on this command line (a
/// resumed run keeps the ones it started with).
fn options_given(args: &RespondArgs) -> Vec<&'static str> {
    [
        (!args.allow_ssh_from.is_empty(), "--allow-ssh-from"),
        (!args.allow_https_to.is_empty(), "--allow-https-to"),
        (args.no_nacl_cut, "--no-nacl-cut"),
        (args.nacl_rule_limit.is_some(), "--nacl-rule-limit"),
        (args.evidence_bucket.is_some(), "--evidence-bucket"),
        (args.forensic_region.is_some(), "--forensic-region"),
        (args.tools_bucket.is_some(), "--tools-bucket"),
        (args.retention_days.is_some(), "--retention-days"),
        (args.kms_key_id.is_some(), "--kms-key-id"),
        (args.custody_key.is_some(), "--custody-key"),
        (args.hash_snapshots, "--hash-snapshots"),
        (args.asg_mode != AsgModeArg::Standby, "--asg-mode"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect()
}

/// `respond` on an instance whose earlier run on this machine did not end
/// (interrupted, killed): that run is resumed, under its case.
async fn resume_unfinished(
    session: &Session,
    args: &RespondArgs,
    instance: &InstanceId,
    given_case: Option<CaseId>,
    path: &std::path::Path,
    start: firebreak_workflows::exec::journal::Start,
) -> anyhow::Result<firebreak_playbooks::report::Report> {
    let name = start.config.name.clone();
    let case = start
        .input
        .pointer("/case/case_id")
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_string();
    let playbook = start
        .runner
        .get("playbook")
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_string();
    if given_case.as_ref().is_some_and(|c| c.as_str() != case) || playbook != args.playbook {
        return Err(BadInput(format!(
            "{instance} has an unfinished {playbook} run {name} of case {case} (started {}): finish it first with `firebreak resume {name}` (or run `firebreak respond --instance {instance} --playbook {playbook}` without --case)",
            start.start_time
        ))
        .into());
    }
    say!(
        "firebreak respond: {instance} has an unfinished run {name} of case {case} (started {}, interrupted or killed): resuming it",
        start.start_time
    );
    let ignored = options_given(args);
    if !ignored.is_empty() {
        say!(
            "firebreak respond: the run goes on with the options it started with; not applied now: {} (release the case and respond again to use them)",
            ignored.join(", ")
        );
    }
    let (journal, start) =
        firebreak_workflows::exec::Journal::open(path).map_err(|e| BadInput(e.to_string()))?;
    if session.who.account_id
        != start
            .input
            .pointer("/case/account_id")
            .and_then(|a| a.as_str())
            .unwrap_or_default()
    {
        return Err(BadInput(format!(
            "case {case} is in another account than these credentials"
        ))
        .into());
    }
    finish_resumed(session, journal, start, &playbook).await
}

async fn finish_resumed(
    session: &Session,
    journal: firebreak_workflows::exec::Journal,
    start: firebreak_workflows::exec::journal::Start,
    playbook: &str,
) -> anyhow::Result<firebreak_playbooks::report::Report> {
    let input: CaseFile = serde_json::from_value(start.input.clone())
        .map_err(|e| BadInput(format!("the journal's case file does not parse: {e}")))?;
    if session.who.account_id != input.case.account_id {
        return Err(BadInput(format!(
            "case {} is in account {}, but these credentials are for account {}",
            input.case.case_id, input.case.account_id, session.who.account_id
        ))
        .into());
    }
    session.stop_safely_on_interrupt();
    let run = crate::session::resume_run(session, journal, &start).await?;
    let report = run.report(playbook, &input.case, Mode::Live, session.started.elapsed());
    if let Ok(compiled) = firebreak_playbooks::compile(playbook) {
        crate::report::write_after_run(
            session,
            &report,
            &run.history,
            &compiled.definition,
            None,
            &run.name,
            &input.case,
        )
        .await;
    }
    Ok(report)
}

/// `respond --remote`: the case is opened here as for a local run, then
/// the deployed state machine runs it; its history is followed with the
/// local progress lines, and the summary is the same.
async fn respond_remote(args: &RespondArgs) -> anyhow::Result<u8> {
    if args.instance.len() > 1 {
        return Err(BadInput(
            "--remote runs one instance per execution: start one `respond --remote` per instance"
                .into(),
        )
        .into());
    }
    if args.dry_run {
        return Err(BadInput(
            "--dry-run plans on this machine: leave out --remote to see the plan".into(),
        )
        .into());
    }
    let (instance, given_case) = parse_ids(&args.instance[0], args.case.as_deref())?;
    let (compiled, exemptions) = checked_inputs(args)?;
    let session = open_session(args, None).await?;
    let sfn = aws_sdk_sfn::Client::new(&session.config);
    let machine = match &args.state_machine {
        Some(arn) => arn.clone(),
        None => crate::remote::find_state_machine(&sfn, &args.playbook, &session).await?,
    };
    let tag = session.case_tag(&instance).await?;
    let (case, continuing) = choose_case(&instance, given_case.clone(), &tag)?;
    preflight(&session, args, &instance, Mode::Live).await?;
    let bucket = session
        .evidence_bucket(args.evidence_bucket.as_deref())
        .await?;
    if let Some(c) = &given_case {
        refuse_closed_case(&session, &bucket, c, &instance, &tag).await?;
    }
    let evidence_lock = session
        .evidence_lock(
            &bucket,
            args.retention_days,
            args.kms_key_id.clone(),
            args.custody_key.as_deref(),
        )
        .await?;
    let input = CaseFile {
        case: session.case_info(&case, &instance, bucket, evidence_lock),
        options: case_options(args, &session, exemptions),
    };
    let name = args
        .execution_name
        .clone()
        .unwrap_or_else(|| format!("{case}-{}", Utc::now().format("%Y%m%dT%H%M%S")));
    let execution =
        crate::remote::start(&sfn, &machine, &name, &serde_json::to_value(&input)?).await?;
    if !args.quiet {
        say!(
            "firebreak respond --remote: {} on {instance}, case {case}{}\n  execution {execution}\n  (interrupting this command stops following, not the execution: `firebreak status {execution}`)",
            compiled.name,
            if continuing { " (continuing the case the instance is tagged with)" } else { "" },
        );
    }
    let printer = crate::session::progress_printer(&session);
    let (outcome, history) = crate::remote::follow(&sfn, &execution, |e| {
        if let Some(p) = &printer {
            p(e);
        }
    })
    .await?;
    let report = firebreak_playbooks::report::Report::build(
        &args.playbook,
        &input.case,
        Mode::Live,
        &outcome,
        &history,
        Vec::new(),
        session.started.elapsed(),
    );
    crate::report::write_after_run(
        &session,
        &report,
        &history,
        &compiled.definition,
        args.alert.as_ref(),
        &name,
        &input.case,
    )
    .await;
    summary::print(&report, args.output);
    let _ = std::io::stdout().flush();
    Ok(summary::exit_code(&report))
}
