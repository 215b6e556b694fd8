//! Which playbook an alert starts, for which instance: rules read from a
//! TOML file (or the built-in defaults), and the blast-radius guard that
//! keeps a storm of false positives from isolating production.
//!
//! Deciding is pure: [`decide`] needs only the alerts and the rules, and
//! [`Decision::limit`] applies the hourly limit from counts the caller
//! read. The file format is documented in docs/alerts-and-triggers.md;
//! `firebreak alert --triggers-schema` prints its JSON Schema.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Alert, AlertSource, SeverityLabel};

/// The tag that keeps automation off an instance when set to `never`.
pub const DEFAULT_NEVER_TAG: &str = "firebreak:auto";

/// Automatic containments per account per hour before the next ones wait
/// for a person's approval: a handful is an incident, more is more likely
/// a detector gone wrong, and each one isolates a machine.
pub const DEFAULT_MAX_PER_HOUR: u32 = 5;

/// The ASFF type namespaces of threats (the others are `Software and
/// Configuration Checks` and `Sensitive Data Identifications`).
pub const SECURITY_HUB_THREAT_TYPES: [&str; 3] = ["TTPs/*", "Effects/*", "Unusual Behaviors/*"];

/// Step Functions execution names: at most 80 characters.
const EXECUTION_NAME_MAX: usize = 80;

/// The trigger rules and the guard, as a triggers file holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// The blast-radius guard.
    #[serde(default)]
    pub guard: Guard,
    /// The rules, tried in order: the first that matches an instance
    /// decides for it.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

/// What keeps automation from acting where it should not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// An instance with this tag set to `never` is never acted on
    /// automatically (a person can still run `firebreak respond`).
    #[serde(default = "default_never_tag")]
    pub never_tag: String,
    /// Automatic containments per account within an hour; beyond them a
    /// run waits for approval instead of acting.
    #[serde(default = "default_max_per_hour")]
    pub max_per_hour: u32,
}

fn default_never_tag() -> String {
    DEFAULT_NEVER_TAG.to_string()
}

fn default_max_per_hour() -> u32 {
    DEFAULT_MAX_PER_HOUR
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            never_tag: default_never_tag(),
            max_per_hour: default_max_per_hour(),
        }
    }
}

/// One rule: what an alert must be for the rule to start its playbook on
/// each of the alert's instances. An empty list matches anything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The rule's name, shown in every decision it makes.
    pub name: String,
    /// Alert sources: `aws.guardduty`, `aws.securityhub`,
    /// `aws.cloudwatch`, `firebreak.collection`, `custom`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Finding types, as globs (`Backdoor:EC2/*`, `*:EC2/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// The lowest severity, on GuardDuty's 0-10 scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<f64>,
    /// The lowest severity label (`LOW`, `MEDIUM`, `HIGH`, `CRITICAL`),
    /// as Security Hub labels its findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_label: Option<Label>,
    /// Accounts (12 digits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// Regions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Tags the instance must carry, each value a glob (`*` for any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The playbook to start (`ec2-compromise`, `ec2-contain`).
    pub playbook: String,
    /// Start the playbook behind an approval gate: it waits for
    /// `firebreak approve` before its first change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
    /// Parameters for the playbook's case (`memory = false`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// A severity label in a rule (upper case, as Security Hub writes it).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Label {
    /// Security Hub's INFORMATIONAL.
    Informational,
    /// LOW.
    Low,
    /// MEDIUM.
    Medium,
    /// HIGH.
    High,
    /// CRITICAL.
    Critical,
}

impl Label {
    fn severity(self) -> SeverityLabel {
        match self {
            Label::Informational => SeverityLabel::Informational,
            Label::Low => SeverityLabel::Low,
            Label::Medium => SeverityLabel::Medium,
            Label::High => SeverityLabel::High,
            Label::Critical => SeverityLabel::Critical,
        }
    }
}

/// Why a triggers file was refused: the file, the line and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the triggers format (toml's message names the line,
    /// the column and the key).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What the TOML parser said.
        message: String,
    },
    /// Valid TOML whose rule says something firebreak cannot do.
    #[error("{path}:{line}: rule {rule:?}, key `{key}`: {message}")]
    Rule {
        /// The file.
        path: String,
        /// The line of the rule's `[[rule]]` header, from 1.
        line: usize,
        /// The rule's name.
        rule: String,
        /// The key at fault.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Triggers {
    /// The built-in rules: a GuardDuty finding of severity 7.0 or more and
    /// a Security Hub threat finding (TTPs, Effects, Unusual Behaviors)
    /// labelled HIGH or CRITICAL start `ec2-compromise` on each EC2
    /// instance they name.
    pub fn defaults() -> Triggers {
        let rule = |name: &str, source: &str| Rule {
            name: name.into(),
            sources: vec![source.into()],
            types: Vec::new(),
            min_severity: None,
            min_label: None,
            accounts: Vec::new(),
            regions: Vec::new(),
            tags: BTreeMap::new(),
            playbook: "ec2-compromise".into(),
            approval: false,
            params: BTreeMap::new(),
        };
        Triggers {
            guard: Guard::default(),
            rules: vec![
                Rule {
                    min_severity: Some(7.0),
                    ..rule("guardduty-high-ec2", "aws.guardduty")
                },
                // Threats only: Security Hub also imports vulnerabilities
                // and compliance checks (`Software and Configuration
                // Checks/...`) labelled HIGH or CRITICAL, and an unpatched
                // CVE is no reason to isolate a production instance.
                Rule {
                    min_label: Some(Label::High),
                    types: SECURITY_HUB_THREAT_TYPES
                        .iter()
                        .map(|t| t.to_string())
                        .collect(),
                    ..rule("securityhub-high-ec2", "aws.securityhub")
                },
            ],
        }
    }

    /// Reads a triggers file.
    pub fn load(path: &Path) -> Result<Triggers, TriggerError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TriggerError::Read {
            path: shown.clone(),
            source,
        })?;
        Triggers::from_toml(&text, &shown)
    }

    /// Parses and checks a triggers file's text (`path` names it in errors).
    pub fn from_toml(text: &str, path: &str) -> Result<Triggers, TriggerError> {
        let triggers: Triggers = toml::from_str(text).map_err(|e| TriggerError::Syntax {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for (i, rule) in triggers.rules.iter().enumerate() {
            rule.check().map_err(|(key, message)| TriggerError::Rule {
                path: path.to_string(),
                line: rule_line(text, i),
                rule: rule.name.clone(),
                key: key.to_string(),
                message,
            })?;
        }
        Ok(triggers)
    }
}

/// The line of the `i`-th `[[rule]]` header (1 when it cannot be found).
fn rule_line(text: &str, i: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[rule]]"))
        .nth(i)
        .map_or(1, |(n, _)| n + 1)
}

impl Rule {
    /// What in the rule firebreak cannot do: the key and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        for s in &self.sources {
            if !AlertSource::ALL.iter().any(|a| a.as_str() == s) {
                let known: Vec<&str> = AlertSource::ALL.iter().map(|a| a.as_str()).collect();
                return Err((
                    "sources",
                    format!("{s:?} is not a source (sources: {})", known.join(", ")),
                ));
            }
        }
        for t in &self.types {
            glob::Pattern::new(t).map_err(|e| ("types", format!("{t:?} is not a glob: {e}")))?;
        }
        for v in self.tags.values() {
            glob::Pattern::new(v).map_err(|e| ("tags", format!("{v:?} is not a glob: {e}")))?;
        }
        if let Some(s) = self.min_severity.filter(|s| !(0.0..=10.0).contains(s)) {
            return Err(("min_severity", format!("{s} is not between 0 and 10")));
        }
        if let Some(a) = self
            .accounts
            .iter()
            .find(|a| a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err((
                "accounts",
                format!("{a:?} is not an account id (12 digits)"),
            ));
        }
        if !crate::BUILT_IN.contains(&self.playbook.as_str()) {
            return Err((
                "playbook",
                format!(
                    "{:?} is not a playbook (built-in playbooks: {})",
                    self.playbook,
                    crate::BUILT_IN.join(", ")
                ),
            ));
        }
        if self.playbook == "ec2-release" {
            return Err((
                "playbook",
                "ec2-release undoes a containment: an alert never starts it".into(),
            ));
        }
        if self.name.trim().is_empty() {
            return Err(("name", "is empty".into()));
        }
        Ok(())
    }

    /// Whether the alert (not yet its instances) is one for this rule;
    /// `Err` says why not.
    fn takes(&self, a: &Alert) -> Result<(), Miss> {
        if !self.sources.is_empty() && !self.sources.iter().any(|s| s == a.source.as_str()) {
            return Err(Miss::Source);
        }
        if let Some(min) = self.min_severity {
            match a.severity {
                Some(s) if s >= min => {}
                Some(s) => {
                    return Err(Miss::Severity(format!("severity {s} is below {min}")));
                }
                None => return Err(Miss::Severity("it has no severity".into())),
            }
        }
        if let Some(min) = self.min_label {
            match a.severity_label {
                Some(l) if l >= min.severity() => {}
                Some(l) => {
                    return Err(Miss::Severity(format!("label {l:?} is below {min:?}")));
                }
                None => return Err(Miss::Severity("it has no severity label".into())),
            }
        }
        if !self.types.is_empty()
            && !self.types.iter().any(|t| {
                glob::Pattern::new(t).is_ok_and(|p| a.types.iter().any(|ty| p.matches(ty)))
            })
        {
            return Err(Miss::Other(format!(
                "type {} matches none of {}",
                a.types.join(", "),
                self.types.join(", ")
            )));
        }
        if !self.accounts.is_empty()
            && !a
                .account
                .as_ref()
                .is_some_and(|x| self.accounts.contains(x))
        {
            return Err(Miss::Other(format!(
                "account {} is not one of {}",
                a.account.as_deref().unwrap_or("(none)"),
                self.accounts.join(", ")
            )));
        }
        if !self.regions.is_empty() && !a.region.as_ref().is_some_and(|x| self.regions.contains(x))
        {
            return Err(Miss::Other(format!(
                "region {} is not one of {}",
                a.region.as_deref().unwrap_or("(none)"),
                self.regions.join(", ")
            )));
        }
        Ok(())
    }

    /// Whether the instance's tags are those the rule asks for.
    fn tags_match(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tags.iter().all(|(k, want)| {
            tags.get(k)
                .is_some_and(|v| glob::Pattern::new(want).is_ok_and(|p| p.matches(v)))
        })
    }
}

/// Why a rule does not take an alert.
enum Miss {
    Source,
    Severity(String),
    Other(String),
}

/// Why a finding or one of its instances starts nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// No rule takes alerts of this source.
    NoRule,
    /// A rule takes the source, but the finding's severity is too low.
    BelowThreshold,
    /// Rules take the source but not this finding (type, account, region).
    NotMatched,
    /// The finding names no EC2 instance.
    NoInstance,
    /// It names an instance by an id that is not an EC2 instance id.
    InvalidInstanceId,
    /// The instance is tagged to keep automation off.
    ProtectedTag,
    /// The instance lacks the tags the matching rules ask for.
    TagsNotMatched,
}

/// A playbook to start on one instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trigger {
    /// The playbook.
    pub playbook: String,
    /// The instance (`i-...`).
    pub instance: String,
    /// The Step Functions execution name: the same finding (updated or
    /// delivered again) gives the same name, so it never starts twice.
    pub execution_name: String,
    /// The rule that decided.
    pub rule: String,
    /// The finding that started it.
    pub finding_id: String,
    /// The account the finding is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The run waits for a person's approval before its first change.
    pub approval: bool,
    /// Why it waits (the rule asks, or the hourly limit is reached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_reason: Option<String>,
    /// The rule's parameters for the case.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// A finding, or one of its instances, that starts nothing, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skip {
    /// The finding.
    pub finding: String,
    /// The instance, when the reason is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The reason, as a category.
    pub reason: SkipReason,
    /// The reason in words.
    pub detail: String,
}

/// What a set of alerts starts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The playbooks to start, one per (finding, instance).
    pub triggers: Vec<Trigger>,
    /// What starts nothing, and why.
    pub skipped: Vec<Skip>,
    /// In words: why nothing starts, when nothing does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The execution name of a playbook started by a finding on an instance:
/// `fb-PLAYBOOK-INSTANCE-` and 16 hex digits of the finding id's SHA-256
/// (finding ids are long and hold characters names may not).
pub fn execution_name(playbook: &str, instance: &str, finding_id: &str) -> String {
    let digest = Sha256::digest(finding_id.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut name = format!("fb-{playbook}-{instance}-{hex}");
    name.truncate(EXECUTION_NAME_MAX);
    name
}

/// Decides what the alerts start under the rules (no hourly limit: see
/// [`Decision::limit`]).
pub fn decide(alerts: &[Alert], triggers: &Triggers) -> Decision {
    let mut d = Decision {
        triggers: Vec::new(),
        skipped: Vec::new(),
        reason: None,
    };
    for a in alerts {
        decide_one(a, triggers, &mut d);
    }
    if d.triggers.is_empty() {
        d.reason = Some(if d.skipped.is_empty() {
            "the event holds no finding".into()
        } else {
            d.skipped
                .iter()
                .map(|s| s.detail.clone())
                .collect::<Vec<_>>()
                .join("; ")
        });
    }
    d
}

/// Why no rule takes an alert: its severity (for the rules of its
/// source), something else a rule asks, or no rule for its source.
fn no_rule_takes(a: &Alert, misses: &[(&Rule, Miss)]) -> Skip {
    let what = format!(
        "{} finding {} ({})",
        a.source.as_str(),
        a.finding_id,
        a.finding_type
    );
    let why = |pick: fn(&Miss) -> Option<&String>| -> Vec<String> {
        misses
            .iter()
            .filter_map(|(r, m)| pick(m).map(|why| format!("rule {}: {why}", r.name)))
            .collect()
    };
    let severity = why(|m| match m {
        Miss::Severity(w) => Some(w),
        _ => None,
    });
    let other = why(|m| match m {
        Miss::Other(w) => Some(w),
        _ => None,
    });
    let (reason, detail) = if !severity.is_empty() {
        (
            SkipReason::BelowThreshold,
            format!("{what}: {}", severity.join("; ")),
        )
    } else if !other.is_empty() {
        (
            SkipReason::NotMatched,
            format!("{what}: {}", other.join("; ")),
        )
    } else {
        (
            SkipReason::NoRule,
            format!("{what}: no rule takes {} alerts", a.source.as_str()),
        )
    };
    Skip {
        finding: a.finding_id.clone(),
        instance: None,
        reason,
        detail,
    }
}

fn decide_one(a: &Alert, triggers: &Triggers, d: &mut Decision) {
    let skip = |reason, instance: Option<&str>, detail: String| Skip {
        finding: a.finding_id.clone(),
        instance: instance.map(str::to_string),
        reason,
        detail,
    };
    let mut taking = Vec::new();
    let mut misses = Vec::new();
    for r in &triggers.rules {
        match r.takes(a) {
            Ok(()) => taking.push(r),
            Err(m) => misses.push((r, m)),
        }
    }
    if taking.is_empty() {
        d.skipped.push(no_rule_takes(a, &misses));
        return;
    }
    let instances = a.instances();
    if instances.is_empty() {
        let bad: Vec<&str> = a
            .resources
            .iter()
            .filter_map(|r| r.problem.as_deref())
            .collect();
        d.skipped.push(if bad.is_empty() {
            let kinds: Vec<&str> = a.resources.iter().map(|r| r.kind.as_str()).collect();
            skip(
                SkipReason::NoInstance,
                None,
                format!(
                    "finding {} names no EC2 instance (its resources: {})",
                    a.finding_id,
                    if kinds.is_empty() {
                        "none".to_string()
                    } else {
                        kinds.join(", ")
                    }
                ),
            )
        } else {
            skip(
                SkipReason::InvalidInstanceId,
                None,
                format!("finding {}: {}", a.finding_id, bad.join("; ")),
            )
        });
        return;
    }
    for res in instances {
        let Some(id) = res.instance_id.as_deref() else {
            continue;
        };
        let never = &triggers.guard.never_tag;
        if res
            .tags
            .get(never)
            .is_some_and(|v| v.eq_ignore_ascii_case("never"))
        {
            d.skipped.push(skip(
                SkipReason::ProtectedTag,
                Some(id),
                format!("{id} is tagged {never}=never: no automatic action (a person can still run `firebreak respond --instance {id}`)"),
            ));
            continue;
        }
        let Some(rule) = taking.iter().find(|r| r.tags_match(&res.tags)) else {
            d.skipped.push(skip(
                SkipReason::TagsNotMatched,
                Some(id),
                format!(
                    "{id} lacks the tags rules {} ask for",
                    taking
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            continue;
        };
        d.triggers.push(Trigger {
            playbook: rule.playbook.clone(),
            instance: id.to_string(),
            execution_name: execution_name(&rule.playbook, id, &a.finding_id),
            rule: rule.name.clone(),
            finding_id: a.finding_id.clone(),
            account: a.account.clone(),
            approval: rule.approval,
            approval_reason: rule
                .approval
                .then(|| format!("rule {} asks for approval", rule.name)),
            params: rule.params.clone(),
        });
    }
}

impl Decision {
    /// Applies the hourly limit: `started(account)` is how many automatic
    /// containments started in that account within the last hour; the
    /// ones beyond `max_per_hour` (counting these, in order) wait for
    /// approval.
    pub fn limit(&mut self, guard: &Guard, mut started: impl FnMut(&str) -> u32) {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for t in &mut self.triggers {
            let account = t.account.clone().unwrap_or_default();
            let n = counts
                .entry(account.clone())
                .or_insert_with(|| started(&account));
            *n += 1;
            if *n > guard.max_per_hour && !t.approval {
                t.approval = true;
                t.approval_reason = Some(format!(
                    "containment {n} in account {} within an hour, beyond the {} allowed without approval",
                    if account.is_empty() { "(unknown)" } else { &account },
                    guard.max_per_hour
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_finding_gives_the_same_short_name() {
        let a = execution_name("ec2-compromise", "i-0123456789abcdef0", "abc");
        assert_eq!(
            a,
            execution_name("ec2-compromise", "i-0123456789abcdef0", "abc")
        );
        assert_ne!(
            a,
            execution_name("ec2-compromise", "i-0123456789abcdef0", "abd")
        );
        assert!(a.len() <= EXECUTION_NAME_MAX, "{a}");
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{a}"
        );
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = toml::to_string(&Triggers::defaults()).expect("serialises");
        assert_eq!(
            Triggers::from_toml(&text, "x").expect("parses"),
            Triggers::defaults()
        );
    }

    #[test]
    fn rule_errors_name_the_file_line_and_key() {
        let text = "[guard]\nmax_per_hour = 3\n\n[[rule]]\nname = \"ok\"\nplaybook = \"ec2-contain\"\n\n[[rule]]\nname = \"bad\"\nsources = [\"aws.guarduty\"]\nplaybook = \"ec2-contain\"\n";
        let e = Triggers::from_toml(text, "t.toml").expect_err("typo");
        assert_eq!(
            e.to_string(),
            "t.toml:8: rule \"bad\", key `sources`: \"aws.guarduty\" is not a source (sources: aws.guardduty, aws.securityhub, aws.cloudwatch, firebreak.collection, custom)"
        );
        let e = Triggers::from_toml("[[rule]]\nname = \"x\"\nplaybok = \"y\"\n", "t.toml")
            .expect_err("unknown key");
        assert!(
            e.to_string()
                .starts_with("t.toml: TOML parse error at line 3"),
            "{e}"
        );
        assert!(e.to_string().contains("playbok"), "{e}");
    }
}
