//! `firebreak alert`: what an event triggers, and (without `--dry-run`)
//! starting it locally, once per finding and instance.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, Parser};
use firebreak_playbooks::alerts::triggers::{self, Decision, Trigger, Triggers};
use firebreak_playbooks::alerts::{self, Alert};
use serde::{Deserialize, Serialize};

use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct AlertArgs {
    /// The event: an EventBridge event, a `get-findings` export, or a
    /// custom alert (JSON; `-` reads standard input).
    #[arg(required_unless_present_any = ["triggers_schema", "show_triggers"])]
    pub event: Option<PathBuf>,
    /// Trigger rules (TOML); the built-in defaults when absent.
    #[arg(long)]
    pub triggers: Option<PathBuf>,
    /// Decide from the event and the rules alone: read nothing from AWS,
    /// start nothing (the hourly limit is counted when it runs).
    #[arg(long)]
    pub dry_run: bool,
    /// Run what the finding triggers in the deployed state machines
    /// (`respond --remote`, under the trigger's execution name, so Step
    /// Functions itself refuses a second run of the same finding).
    #[arg(long)]
    pub remote: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Print the JSON Schema of the triggers file and exit.
    #[arg(long)]
    pub triggers_schema: bool,
    /// Print the rules in force, as TOML, and exit.
    #[arg(long)]
    pub show_triggers: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// What `alert` answers (`--output json`).
#[derive(Debug, Serialize)]
struct Answer<'a> {
    /// The event's alerts, normalised.
    alerts: &'a [Alert],
    /// The playbooks it starts.
    triggers: &'a [Trigger],
    /// What starts nothing, and why.
    skipped: &'a [triggers::Skip],
    /// Why nothing starts, when nothing does.
    reason: Option<&'a str>,
    /// Per trigger, what this run did (absent in a dry run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    started: Vec<Started>,
}

/// What became of one trigger when `alert` ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Started {
    execution_name: String,
    instance: String,
    playbook: String,
    /// `started`, `waiting-for-approval` (started behind its approval
    /// gate), `already-started`, `failed`.
    outcome: String,
    /// The exit code of the run, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    at: chrono::DateTime<chrono::Utc>,
}

fn read_event(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| BadInput(format!("standard input: {e}")))?;
        return Ok(s);
    }
    std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())).into())
}

fn rules(args: &AlertArgs) -> anyhow::Result<Triggers> {
    load_rules(args.triggers.as_deref())
}

/// The trigger rules of a file, or the built-in ones.
fn load_rules(path: Option<&Path>) -> anyhow::Result<Triggers> {
    match path {
        Some(p) => Triggers::load(p).map_err(|e| BadInput(e.to_string()).into()),
        None => Ok(Triggers::defaults()),
    }
}

/// What an event file and the rules decide, without AWS (bad input when
/// the file or the rules do not read).
pub(crate) fn decide_file(
    event: &Path,
    triggers: Option<&Path>,
) -> anyhow::Result<(Vec<Alert>, Decision)> {
    let rules = load_rules(triggers)?;
    let text = read_event(event)?;
    let alerts = alerts::parse(&text).map_err(|e| BadInput(format!("{}: {e}", event.display())))?;
    let decision = triggers::decide(&alerts, &rules);
    Ok((alerts, decision))
}

pub(crate) async fn run(args: AlertArgs) -> anyhow::Result<u8> {
    if args.triggers_schema {
        let schema = schemars::schema_for!(Triggers);
        outln!("{}", serde_json::to_string_pretty(&schema)?);
        return Ok(exit::OK);
    }
    let rules = rules(&args)?;
    if args.show_triggers {
        out!("{}", toml::to_string(&rules)?);
        return Ok(exit::OK);
    }
    let Some(path) = &args.event else {
        return Err(BadInput("no event: give a file, or - for standard input".into()).into());
    };
    let text = read_event(path)?;
    let alerts = alerts::parse(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    let mut decision = triggers::decide(&alerts, &rules);
    let mut started = Vec::new();
    if !args.dry_run && !decision.triggers.is_empty() {
        let ledger = Ledger::open()?;
        let now = chrono::Utc::now();
        decision.limit(&rules.guard, |account| {
            ledger.started_within_hour(account, now)
        });
        // Every trigger's respond command is checked before any starts:
        // a rule whose params respond refuses stops the event whole.
        let commands = decision
            .triggers
            .iter()
            .map(|t| respond_command(&args, t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The triggers run at once (each its own instance): one waiting
        // for approval must not hold back the others.
        let runs = decision.triggers.iter().zip(commands).map(|(t, mut cmd)| {
            // The alert goes into the run's incident report.
            cmd.respond.alert = alerts
                .iter()
                .find(|a| a.finding_id == t.finding_id)
                .cloned();
            cmd.respond.execution_name = Some(t.execution_name.clone());
            start(t, cmd, &ledger)
        });
        for s in futures::future::join_all(runs).await {
            started.push(s?);
        }
    }
    print(&args, &alerts, &decision, &started);
    Ok(exit::OK)
}

fn print(args: &AlertArgs, alerts: &[Alert], d: &Decision, started: &[Started]) {
    if args.output == OutputFormat::Json {
        let answer = Answer {
            alerts,
            triggers: &d.triggers,
            skipped: &d.skipped,
            reason: d.reason.as_deref(),
            started: started.to_vec(),
        };
        outln!(
            "{}",
            serde_json::to_string_pretty(&answer)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        );
        return;
    }
    for a in alerts {
        outln!(
            "{} {} {} severity {} ({})",
            a.source.as_str(),
            a.finding_type,
            a.finding_id,
            a.severity.map_or("-".to_string(), |s| s.to_string()),
            a.severity_label
                .map_or("-".to_string(), |l| format!("{l:?}").to_uppercase()),
        );
    }
    for t in &d.triggers {
        outln!(
            "  triggers {} on {} (rule {}, execution {}){}",
            t.playbook,
            t.instance,
            t.rule,
            t.execution_name,
            t.approval_reason
                .as_deref()
                .map(|r| format!(" — waits for approval: {r}"))
                .unwrap_or_default()
        );
    }
    for s in &d.skipped {
        outln!(
            "  nothing for {}: {}",
            s.instance.as_deref().unwrap_or(&s.finding),
            s.detail
        );
    }
    for s in started {
        outln!(
            "  {} {} on {}: {}",
            s.execution_name,
            s.playbook,
            s.instance,
            s.outcome
        );
    }
    if d.triggers.is_empty() {
        outln!("nothing to trigger");
    }
}

/// The automatic runs `alert` started on this machine, one JSON line
/// each (`STATE_DIR/alerts/started.jsonl`): what makes a finding start
/// once, and the count behind the hourly limit.
struct Ledger {
    path: PathBuf,
    entries: Vec<Started>,
}

impl Ledger {
    fn open() -> anyhow::Result<Ledger> {
        let dir = crate::session::secure_state_dir()?.join("alerts");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("started.jsonl");
        let entries = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str::<Started>)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    anyhow::anyhow!("{}: a line is not a started run: {e}", path.display())
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(anyhow::Error::new(e).context(path.display().to_string())),
        };
        Ok(Ledger { path, entries })
    }

    fn started_within_hour(&self, account: &str, now: chrono::DateTime<chrono::Utc>) -> u32 {
        let n = self
            .entries
            .iter()
            .filter(|s| s.outcome == "started" || s.outcome == "failed")
            .filter(|s| s.account.as_deref().unwrap_or_default() == account)
            .filter(|s| now - s.at < chrono::Duration::hours(1))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn already(&self, execution_name: &str) -> Option<&Started> {
        self.entries
            .iter()
            .find(|s| s.execution_name == execution_name)
    }

    fn append(&self, s: &Started) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{}", serde_json::to_string(s)?)?;
        f.sync_all()?;
        Ok(())
    }
}

/// `respond`'s arguments, parsed as if typed: a trigger runs the very
/// command a person would.
#[derive(Parser)]
struct RespondCommand {
    #[command(flatten)]
    respond: crate::respond::RespondArgs,
}

/// The respond command of a trigger: its instance and playbook, the AWS
/// options `alert` was given, and the rule's params as options.
fn respond_command(args: &AlertArgs, t: &Trigger) -> anyhow::Result<RespondCommand> {
    let mut argv: Vec<String> = vec![
        "firebreak-respond".into(),
        "--instance".into(),
        t.instance.clone(),
        "--playbook".into(),
        t.playbook.clone(),
        "--quiet".into(),
        "--output".into(),
        if args.output == OutputFormat::Json {
            "json"
        } else {
            "human"
        }
        .into(),
    ];
    if args.remote {
        argv.push("--remote".into());
    }
    if t.approval {
        argv.push(format!(
            "--approval={}",
            t.approval_reason
                .as_deref()
                .unwrap_or("a trigger asks for approval")
        ));
    }
    let aws = &args.aws;
    for (flag, v) in [
        ("--profile", &aws.profile),
        ("--region", &aws.region),
        ("--endpoint-url", &aws.endpoint_url),
    ] {
        if let Some(v) = v {
            argv.push(flag.into());
            argv.push(v.clone());
        }
    }
    let params: BTreeMap<&String, &serde_json::Value> = t.params.iter().collect();
    for (k, v) in params {
        match v {
            serde_json::Value::Bool(true) => argv.push(format!("--{k}")),
            serde_json::Value::Bool(false) => {}
            serde_json::Value::String(s) => {
                argv.push(format!("--{k}"));
                argv.push(s.clone());
            }
            // A repeatable option (`allow-ssh-from = ["a", "b"]`).
            serde_json::Value::Array(items) => {
                for item in items {
                    argv.push(format!("--{k}"));
                    argv.push(
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_string),
                    );
                }
            }
            other => {
                argv.push(format!("--{k}"));
                argv.push(other.to_string());
            }
        }
    }
    RespondCommand::try_parse_from(&argv)
        .map_err(|e| {
            BadInput(format!(
                "rule {}: its params do not make a respond command: {}",
                t.rule,
                e.to_string().lines().next().unwrap_or_default()
            ))
        })
        .map_err(anyhow::Error::from)
}

/// Starts one trigger with `respond`, unless this finding already started
/// it or it waits for approval.
async fn start(t: &Trigger, cmd: RespondCommand, ledger: &Ledger) -> anyhow::Result<Started> {
    let mut s = Started {
        execution_name: t.execution_name.clone(),
        instance: t.instance.clone(),
        playbook: t.playbook.clone(),
        outcome: String::new(),
        exit_code: None,
        account: t.account.clone(),
        at: chrono::Utc::now(),
    };
    if let Some(before) = ledger.already(&t.execution_name) {
        s.outcome = "already-started".into();
        s.at = before.at;
        return Ok(s);
    }
    if t.approval {
        // The run starts behind its approval gate: it asks (the token and
        // the commands to answer it are said, and sent to the topic and
        // webhook) and changes nothing until `firebreak approve`.
        say!(
            "{}: {} on {} waits for approval ({}) before its first change",
            t.execution_name,
            t.playbook,
            t.instance,
            t.approval_reason.as_deref().unwrap_or("rule"),
        );
    }
    // Recorded before the run: a run that dies still counts, and the same
    // finding never starts a second one.
    s.outcome = if t.approval {
        "waiting-for-approval"
    } else {
        "started"
    }
    .into();
    ledger.append(&s)?;
    if !t.approval {
        say!("{}: {} on {}", t.execution_name, t.playbook, t.instance);
    }
    match crate::respond::run(cmd.respond).await {
        Ok(code) => s.exit_code = Some(code),
        Err(e) => {
            say!("{}: {e:#}", t.execution_name);
            s.outcome = "failed".into();
        }
    }
    Ok(s)
}
