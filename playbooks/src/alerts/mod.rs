//! Alerts: security events from GuardDuty, Security Hub, CloudWatch
//! alarms, firebreak's own collection and other tools, parsed into one
//! [`Alert`] type. Pure: no AWS call, no clock.
//!
//! What is accepted (docs/alerts-and-triggers.md shows each):
//! - EventBridge events: `GuardDuty Finding` (`aws.guardduty`), `Security
//!   Hub Findings - Imported` (`aws.securityhub`, one event may carry
//!   several findings), `CloudWatch Alarm State Change` (`aws.cloudwatch`),
//!   and firebreak's own detections (`firebreak.collection`);
//! - findings exported by `aws guardduty get-findings` and `aws
//!   securityhub get-findings` (`{"Findings": [...]}`, PascalCase, no
//!   envelope), and one bare finding of either;
//! - a custom alert (`{"firebreak_alert": "v1", ...}`).
//!
//! Anything else is refused with an error naming what is wrong; a finding
//! that cannot be read is never half-handled: the whole event is refused.

pub mod triggers;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// Where an alert comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum AlertSource {
    /// An Amazon GuardDuty finding.
    #[serde(rename = "aws.guardduty")]
    GuardDuty,
    /// An AWS Security Hub finding (ASFF).
    #[serde(rename = "aws.securityhub")]
    SecurityHub,
    /// A CloudWatch alarm that went into ALARM.
    #[serde(rename = "aws.cloudwatch")]
    CloudWatchAlarm,
    /// A detection of firebreak's collection side.
    #[serde(rename = "firebreak.collection")]
    Collection,
    /// A custom alert posted by another tool.
    #[serde(rename = "custom")]
    Custom,
}

impl AlertSource {
    /// The name rules match on (`aws.guardduty`, `custom`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::GuardDuty => "aws.guardduty",
            AlertSource::SecurityHub => "aws.securityhub",
            AlertSource::CloudWatchAlarm => "aws.cloudwatch",
            AlertSource::Collection => "firebreak.collection",
            AlertSource::Custom => "custom",
        }
    }

    /// Every source, for error messages and the schema.
    pub const ALL: [AlertSource; 5] = [
        AlertSource::GuardDuty,
        AlertSource::SecurityHub,
        AlertSource::CloudWatchAlarm,
        AlertSource::Collection,
        AlertSource::Custom,
    ];
}

/// A severity label, as Security Hub names its ranges (GuardDuty's
/// numbers map onto the same labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SeverityLabel {
    /// No threat (Security Hub 0).
    Informational,
    /// GuardDuty 1.0-3.9, Security Hub 1-39.
    Low,
    /// GuardDuty 4.0-6.9, Security Hub 40-69.
    Medium,
    /// GuardDuty 7.0-8.9, Security Hub 70-89.
    High,
    /// GuardDuty 9.0-10.0, Security Hub 90-100.
    Critical,
}

impl SeverityLabel {
    /// The label of a severity on GuardDuty's 0-10 scale.
    pub fn of(severity: f64) -> SeverityLabel {
        match severity {
            s if s >= 9.0 => SeverityLabel::Critical,
            s if s >= 7.0 => SeverityLabel::High,
            s if s >= 4.0 => SeverityLabel::Medium,
            s if s >= 1.0 => SeverityLabel::Low,
            _ => SeverityLabel::Informational,
        }
    }

    fn parse(label: &str) -> Option<SeverityLabel> {
        Some(match label.to_ascii_uppercase().as_str() {
            "INFORMATIONAL" => SeverityLabel::Informational,
            "LOW" => SeverityLabel::Low,
            "MEDIUM" => SeverityLabel::Medium,
            "HIGH" => SeverityLabel::High,
            "CRITICAL" => SeverityLabel::Critical,
            _ => return None,
        })
    }
}

/// One resource an alert is about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resource {
    /// Its kind as the source names it (`Instance` and `AwsEc2Instance`
    /// both become `AwsEc2Instance`; `AccessKey`, `AwsS3Bucket`, ...).
    pub kind: String,
    /// Its id as the source gives it (an ARN for Security Hub).
    pub id: String,
    /// The EC2 instance id, when the resource is an instance with a valid
    /// id (`i-` and 8 or 17 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Why an instance resource has no `instance_id` (its id is not a
    /// valid EC2 instance id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The resource's tags, as the finding carries them.
    pub tags: BTreeMap<String, String>,
}

/// The kind every EC2 instance resource is given.
pub const EC2_INSTANCE: &str = "AwsEc2Instance";

/// A security finding or alarm, whatever its source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// Where it comes from.
    pub source: AlertSource,
    /// The finding's id (GuardDuty's `id`, ASFF `Id`, the alarm's ARN or
    /// name): the same finding updated keeps it.
    pub finding_id: String,
    /// Its type (`Backdoor:EC2/C&CActivity.B!DNS`; for Security Hub the
    /// first of `Types`; for an alarm, `CloudWatch:Alarm/ALARM`).
    pub finding_type: String,
    /// Every type it has (Security Hub findings may have several; the
    /// others have one): rules match any of them.
    pub types: Vec<String>,
    /// Its title, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Severity on GuardDuty's 0-10 scale (Security Hub's normalized
    /// 0-100 divided by 10); `None` for an alarm, which has none.
    pub severity: Option<f64>,
    /// The severity's label.
    pub severity_label: Option<SeverityLabel>,
    /// The account the finding is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Its region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// When it was last updated (or raised).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// What it is about.
    pub resources: Vec<Resource>,
    /// The finding as received, for the case.
    pub raw: Value,
}

impl Alert {
    /// The EC2 instances (valid ids) the alert is about, each once.
    pub fn instances(&self) -> Vec<&Resource> {
        let mut seen = std::collections::BTreeSet::new();
        self.resources
            .iter()
            .filter(|r| {
                r.instance_id
                    .as_ref()
                    .is_some_and(|i| seen.insert(i.clone()))
            })
            .collect()
    }
}

/// Why an event could not be turned into alerts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// The text is not JSON.
    #[error("not JSON (line {line}, column {column}): {message}")]
    Malformed {
        /// The line of the first error, from 1.
        line: usize,
        /// Its column, from 1.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// JSON, but not an event firebreak knows.
    #[error("{0}")]
    Unknown(String),
    /// A known event with a field missing or of the wrong type.
    #[error("{path}: {message}")]
    Invalid {
        /// Where, as a path into the event (`detail.severity`,
        /// `Findings[1].Resources`).
        path: String,
        /// What is wrong there.
        message: String,
    },
}

/// Whether `id` is a valid EC2 instance id: `i-` and 8 or 17 lowercase
/// hexadecimal digits.
pub fn valid_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Parses an event into its alerts (several for a Security Hub event or
/// an export with several findings).
pub fn parse(text: &str) -> Result<Vec<Alert>, AlertError> {
    let value: Value = serde_json::from_str(text).map_err(|e| AlertError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    parse_value(&value)
}

/// As [`parse`], from JSON already read.
pub fn parse_value(value: &Value) -> Result<Vec<Alert>, AlertError> {
    let root = At::root(value);
    let Some(obj) = value.as_object() else {
        return Err(AlertError::Unknown(format!(
            "an event is a JSON object; this is {}",
            kind_of(value)
        )));
    };
    if obj.contains_key("detail-type") {
        return eventbridge(value);
    }
    if obj.contains_key("Findings") {
        let findings = root.req("Findings")?.array()?;
        if findings.is_empty() {
            return Err(root.req("Findings")?.invalid("holds no finding"));
        }
        let list = root.req("Findings")?;
        return findings
            .iter()
            .enumerate()
            .map(|(i, f)| exported(&list.index(i, f)))
            .collect();
    }
    if obj.contains_key("firebreak_alert") {
        return custom(root).map(|a| vec![a]);
    }
    if obj.contains_key("AwsAccountId") || obj.contains_key("schemaVersion") {
        return exported(&root).map(|a| vec![a]);
    }
    Err(AlertError::Unknown(
        "not an event firebreak knows: expected an EventBridge event (with `detail-type`), a `get-findings` export (`Findings`), a bare GuardDuty or Security Hub finding, or a custom alert (`firebreak_alert`)".into(),
    ))
}

/// An EventBridge event, by its source and detail type.
fn eventbridge(value: &Value) -> Result<Vec<Alert>, AlertError> {
    use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
    let root = At::root(value);
    // The envelope as aws_lambda_events types it; the details are read
    // below, field by field, because the crate has no GuardDuty or
    // Security Hub detail types.
    let envelope: CloudWatchEvent<Value> =
        serde_json::from_value(value.clone()).map_err(|e| AlertError::Invalid {
            path: "(envelope)".into(),
            message: format!("not an EventBridge event: {e}"),
        })?;
    let source = envelope.source.as_deref().unwrap_or_default();
    let detail_type = envelope.detail_type.as_deref().unwrap_or_default();
    let detail = root.req("detail")?;
    match (source, detail_type) {
        ("aws.guardduty", "GuardDuty Finding") => guardduty(&detail, Case::Camel).map(|a| vec![a]),
        ("aws.securityhub", "Security Hub Findings - Imported") => {
            let findings = detail.req("findings")?.array()?;
            if findings.is_empty() {
                return Err(detail.req("findings")?.invalid("holds no finding"));
            }
            let list = detail.req("findings")?;
            findings
                .iter()
                .enumerate()
                .map(|(i, f)| asff(&list.index(i, f)))
                .collect()
        }
        ("aws.cloudwatch", "CloudWatch Alarm State Change") => {
            alarm(&detail, &envelope).map(|a| vec![a])
        }
        ("firebreak.collection", _) => collection(&detail, &envelope).map(|a| vec![a]),
        _ => Err(AlertError::Unknown(format!(
            "EventBridge event {detail_type:?} from {source:?} is not one firebreak handles (it takes GuardDuty Finding, Security Hub Findings - Imported, CloudWatch Alarm State Change and firebreak.collection)"
        ))),
    }
}

/// A finding of a `get-findings` export (or a bare one): Security Hub's
/// ASFF has `AwsAccountId`; GuardDuty's has `AccountId` (PascalCase from
/// the CLI) or `accountId` (as in its events).
fn exported(at: &At<'_>) -> Result<Alert, AlertError> {
    let obj = at.value.as_object();
    let has = |k: &str| obj.is_some_and(|o| o.contains_key(k));
    if has("AwsAccountId") {
        asff(at)
    } else if has("AccountId") {
        guardduty(at, Case::Pascal)
    } else if has("accountId") {
        guardduty(at, Case::Camel)
    } else {
        Err(at.invalid(
            "is neither a GuardDuty finding (AccountId) nor a Security Hub finding (AwsAccountId)",
        ))
    }
}

/// Key spelling: GuardDuty events use camelCase, its CLI PascalCase.
#[derive(Clone, Copy)]
enum Case {
    Camel,
    Pascal,
}

impl Case {
    fn key(self, camel: &str) -> String {
        match self {
            Case::Camel => camel.to_string(),
            Case::Pascal => {
                let mut c = camel.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        }
    }
}

/// A GuardDuty finding (its EventBridge `detail`, or one exported).
fn guardduty(f: &At<'_>, case: Case) -> Result<Alert, AlertError> {
    let k = |s| case.key(s);
    let severity = f.req(&k("severity"))?.number()?;
    if !(0.0..=10.0).contains(&severity) {
        return Err(f.req(&k("severity"))?.invalid("is not between 0 and 10"));
    }
    let resource = f.req(&k("resource"))?;
    let kind = resource.req(&k("resourceType"))?.string()?;
    let mut resources = Vec::new();
    if kind == "Instance" {
        let details = resource.req(&k("instanceDetails"))?;
        let id = details.req(&k("instanceId"))?.string()?;
        let tags = match details.opt(&k("tags")) {
            Some(t) => key_value_tags(&t, case)?,
            None => BTreeMap::new(),
        };
        resources.push(instance(id, tags));
    } else {
        resources.push(Resource {
            kind: kind.to_string(),
            id: other_resource_id(&resource, case),
            instance_id: None,
            problem: None,
            tags: BTreeMap::new(),
        });
    }
    Ok(Alert {
        source: AlertSource::GuardDuty,
        finding_id: f.req(&k("id"))?.string()?.to_string(),
        finding_type: f.req(&k("type"))?.string()?.to_string(),
        types: vec![f.req(&k("type"))?.string()?.to_string()],
        title: f
            .opt(&k("title"))
            .and_then(|t| t.value.as_str().map(str::to_string)),
        severity: Some(severity),
        severity_label: Some(SeverityLabel::of(severity)),
        account: Some(f.req(&k("accountId"))?.string()?.to_string()),
        region: f
            .opt(&k("region"))
            .and_then(|r| r.value.as_str().map(str::to_string)),
        time: f
            .opt(&k("updatedAt"))
            .or_else(|| f.opt(&k("createdAt")))
            .map(|t| t.time())
            .transpose()?,
        resources,
        raw: f.value.clone(),
    })
}

/// What names a GuardDuty resource that is not an instance (the access
/// key's id, the bucket's name, ...), for the answer.
fn other_resource_id(resource: &At<'_>, case: Case) -> String {
    let pick = |detail: &str, field: &str| {
        resource
            .opt(&case.key(detail))
            .and_then(|d| d.opt(&case.key(field)))
            .and_then(|v| v.value.as_str().map(str::to_string))
    };
    pick("accessKeyDetails", "accessKeyId")
        .or_else(|| pick("accessKeyDetails", "userName"))
        .unwrap_or_default()
}

/// Tags as GuardDuty lists them: `[{"key": K, "value": V}]`.
fn key_value_tags(tags: &At<'_>, case: Case) -> Result<BTreeMap<String, String>, AlertError> {
    let mut out = BTreeMap::new();
    for (i, t) in tags.array()?.iter().enumerate() {
        let t = tags.index(i, t);
        let key = t.req(&case.key("key"))?.string()?;
        let value = t
            .opt(&case.key("value"))
            .and_then(|v| v.value.as_str().map(str::to_string));
        out.insert(key.to_string(), value.unwrap_or_default());
    }
    Ok(out)
}

/// An instance resource: valid ids only become `instance_id`.
fn instance(id: &str, tags: BTreeMap<String, String>) -> Resource {
    let valid = valid_instance_id(id);
    Resource {
        kind: EC2_INSTANCE.into(),
        id: id.to_string(),
        instance_id: valid.then(|| id.to_string()),
        problem: (!valid).then(|| {
            format!("{id:?} is not an EC2 instance id (i- and 8 or 17 hexadecimal digits)")
        }),
        tags,
    }
}

/// A Security Hub finding in the AWS Security Finding Format.
fn asff(f: &At<'_>) -> Result<Alert, AlertError> {
    let sev = f.req("Severity")?;
    let label = match sev.opt("Label") {
        Some(l) => Some(
            SeverityLabel::parse(l.string()?)
                .ok_or_else(|| l.invalid("is not INFORMATIONAL, LOW, MEDIUM, HIGH or CRITICAL"))?,
        ),
        None => None,
    };
    let normalized = match sev.opt("Normalized") {
        Some(n) => Some(n.number()?),
        None => None,
    };
    // GuardDuty's own severity survives import (`Original`, or the older
    // `Product`); its Normalized does not follow GuardDuty's bands (8.0 is
    // imported as HIGH with Normalized 60), so it is kept when present.
    let from_guardduty = f
        .opt("ProductArn")
        .and_then(|p| p.value.as_str())
        .is_some_and(|p| p.ends_with("/guardduty"));
    let own = if from_guardduty {
        ["Original", "Product"]
            .iter()
            .find_map(|k| sev.opt(k).and_then(|v| v.number().ok()))
    } else {
        None
    };
    let severity = own.or(normalized.map(|n| n / 10.0));
    let label = label
        .or(severity.map(SeverityLabel::of))
        .ok_or_else(|| sev.invalid("has neither Label nor Normalized"))?;
    let list = f.req("Resources")?;
    let items = list.array()?;
    if items.is_empty() {
        return Err(list.invalid("is empty (a finding has at least one resource)"));
    }
    let mut resources = Vec::new();
    for (i, r) in items.iter().enumerate() {
        let r = list.index(i, r);
        let kind = r.req("Type")?.string()?;
        let id = r.req("Id")?.string()?;
        let mut tags = BTreeMap::new();
        if let Some(t) = r.opt("Tags") {
            for (k, v) in t.object()? {
                tags.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        if kind == EC2_INSTANCE {
            // `arn:aws:ec2:REGION:ACCOUNT:instance/i-...`, or the bare id.
            let bare = id.rsplit('/').next().unwrap_or(id);
            let mut res = instance(bare, tags);
            res.id = id.to_string();
            resources.push(res);
        } else {
            resources.push(Resource {
                kind: kind.to_string(),
                id: id.to_string(),
                instance_id: None,
                problem: None,
                tags,
            });
        }
    }
    let mut types = Vec::new();
    if let Some(list) = f.opt("Types") {
        for (i, t) in list.array()?.iter().enumerate() {
            types.push(list.index(i, t).string()?.to_string());
        }
    }
    Ok(Alert {
        source: AlertSource::SecurityHub,
        finding_id: f.req("Id")?.string()?.to_string(),
        finding_type: types.first().cloned().unwrap_or_else(|| "Unknown".into()),
        types,
        title: f
            .opt("Title")
            .and_then(|t| t.value.as_str().map(str::to_string)),
        severity: severity.or_else(|| Some(label_floor(label))),
        severity_label: Some(label),
        account: Some(f.req("AwsAccountId")?.string()?.to_string()),
        region: f
            .opt("Region")
            .and_then(|r| r.value.as_str().map(str::to_string)),
        time: f
            .opt("UpdatedAt")
            .or_else(|| f.opt("CreatedAt"))
            .map(|t| t.time())
            .transpose()?,
        resources,
        raw: f.value.clone(),
    })
}

/// The lowest 0-10 severity of a label (a finding with a label only).
fn label_floor(label: SeverityLabel) -> f64 {
    match label {
        SeverityLabel::Informational => 0.0,
        SeverityLabel::Low => 1.0,
        SeverityLabel::Medium => 4.0,
        SeverityLabel::High => 7.0,
        SeverityLabel::Critical => 9.0,
    }
}

/// A CloudWatch alarm state change: an alert only when it goes into
/// ALARM; its instances are the `InstanceId` dimensions of its metrics.
fn alarm(
    d: &At<'_>,
    envelope: &aws_lambda_events::event::cloudwatch_events::CloudWatchEvent<Value>,
) -> Result<Alert, AlertError> {
    let name = d.req("alarmName")?.string()?;
    let state = d.req("state")?.req("value")?.string()?;
    let mut resources = Vec::new();
    if let Some(metrics) = d.opt("configuration").and_then(|c| c.opt("metrics")) {
        for (i, m) in metrics.array()?.iter().enumerate() {
            let m = metrics.index(i, m);
            let id = m
                .opt("metricStat")
                .and_then(|s| s.opt("metric"))
                .and_then(|s| s.opt("dimensions"))
                .and_then(|s| s.opt("InstanceId"));
            if let Some(id) = id {
                resources.push(instance(id.string()?, BTreeMap::new()));
            }
        }
    }
    Ok(Alert {
        source: AlertSource::CloudWatchAlarm,
        finding_id: envelope
            .resources
            .first()
            .cloned()
            .unwrap_or_else(|| name.to_string()),
        finding_type: format!("CloudWatch:Alarm/{state}"),
        types: vec![format!("CloudWatch:Alarm/{state}")],
        title: Some(name.to_string()),
        severity: None,
        severity_label: None,
        account: envelope.account_id.clone(),
        region: envelope.region.clone(),
        time: Some(envelope.time),
        resources,
        raw: d.value.clone(),
    })
}

/// A detection of firebreak's collection side (`firebreak.collection`;
/// its `detail` is documented in docs/alerts-and-triggers.md).
fn collection(
    d: &At<'_>,
    envelope: &aws_lambda_events::event::cloudwatch_events::CloudWatchEvent<Value>,
) -> Result<Alert, AlertError> {
    let severity = d.req("severity")?.number()?;
    let resources = simple_resources(&d.req("resources")?, "type")?;
    Ok(Alert {
        source: AlertSource::Collection,
        finding_id: d.req("id")?.string()?.to_string(),
        finding_type: d.req("type")?.string()?.to_string(),
        types: vec![d.req("type")?.string()?.to_string()],
        title: d
            .opt("title")
            .and_then(|t| t.value.as_str().map(str::to_string)),
        severity: Some(severity),
        severity_label: Some(SeverityLabel::of(severity)),
        account: envelope.account_id.clone(),
        region: envelope.region.clone(),
        time: Some(envelope.time),
        resources,
        raw: d.value.clone(),
    })
}

/// Resources written as `[{"type": ..., "id": ..., "tags": {...}}]`
/// (`kind_key` absent means an instance).
fn simple_resources(list: &At<'_>, kind_key: &str) -> Result<Vec<Resource>, AlertError> {
    let mut out = Vec::new();
    for (i, r) in list.array()?.iter().enumerate() {
        let r = list.index(i, r);
        let id = r.req("id")?.string()?;
        let kind = match r.opt(kind_key) {
            Some(k) => k.string()?.to_string(),
            None => EC2_INSTANCE.to_string(),
        };
        let mut tags = BTreeMap::new();
        if let Some(t) = r.opt("tags") {
            for (k, v) in t.object()? {
                tags.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        out.push(if kind == EC2_INSTANCE || kind == "Instance" {
            instance(id, tags)
        } else {
            Resource {
                kind,
                id: id.to_string(),
                instance_id: None,
                problem: None,
                tags,
            }
        });
    }
    Ok(out)
}

/// A custom alert: `{"firebreak_alert": "v1", "id", "type", "severity",
/// "instances": [{"id", "tags"}], ...}`.
fn custom(a: At<'_>) -> Result<Alert, AlertError> {
    let version = a.req("firebreak_alert")?;
    if version.string()? != "v1" {
        return Err(version.invalid("is not \"v1\" (the only version there is)"));
    }
    let severity = a.req("severity")?.number()?;
    if !(0.0..=10.0).contains(&severity) {
        return Err(a.req("severity")?.invalid("is not between 0 and 10"));
    }
    Ok(Alert {
        source: AlertSource::Custom,
        finding_id: a.req("id")?.string()?.to_string(),
        finding_type: a.req("type")?.string()?.to_string(),
        types: vec![a.req("type")?.string()?.to_string()],
        title: a
            .opt("title")
            .and_then(|t| t.value.as_str().map(str::to_string)),
        severity: Some(severity),
        severity_label: Some(SeverityLabel::of(severity)),
        account: a
            .opt("account")
            .and_then(|t| t.value.as_str().map(str::to_string)),
        region: a
            .opt("region")
            .and_then(|t| t.value.as_str().map(str::to_string)),
        time: a.opt("time").map(|t| t.time()).transpose()?,
        resources: match a.opt("instances") {
            Some(list) => simple_resources(&list, "type")?,
            None => Vec::new(),
        },
        raw: a.value.clone(),
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value in the event and the path that leads to it, so that every
/// error names where it is.
#[derive(Clone, Debug)]
struct At<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> At<'a> {
    fn root(value: &'a Value) -> At<'a> {
        At {
            value,
            path: String::new(),
        }
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn invalid(&self, message: &str) -> AlertError {
        AlertError::Invalid {
            path: if self.path.is_empty() {
                "(top level)".into()
            } else {
                self.path.clone()
            },
            message: message.to_string(),
        }
    }

    /// A field that may be absent (null counts as absent).
    fn opt(&self, key: &str) -> Option<At<'a>> {
        self.value
            .get(key)
            .filter(|v| !v.is_null())
            .map(|value| At {
                value,
                path: self.child(key),
            })
    }

    /// A field that must be there.
    fn req(&self, key: &str) -> Result<At<'a>, AlertError> {
        self.opt(key).ok_or_else(|| AlertError::Invalid {
            path: self.child(key),
            message: "is missing".into(),
        })
    }

    fn index(&self, i: usize, value: &'a Value) -> At<'a> {
        At {
            value,
            path: format!("{}[{i}]", self.path),
        }
    }

    fn string(&self) -> Result<&'a str, AlertError> {
        self.value
            .as_str()
            .ok_or_else(|| self.invalid(&format!("is {}, not a string", kind_of(self.value))))
    }

    fn number(&self) -> Result<f64, AlertError> {
        // GuardDuty's CLI and some exporters write numbers as strings.
        match self.value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| self.invalid(&format!("is {}, not a number", kind_of(self.value))))
    }

    fn array(&self) -> Result<&'a [Value], AlertError> {
        self.value
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.invalid(&format!("is {}, not an array", kind_of(self.value))))
    }

    fn object(&self) -> Result<&'a serde_json::Map<String, Value>, AlertError> {
        self.value
            .as_object()
            .ok_or_else(|| self.invalid(&format!("is {}, not an object", kind_of(self.value))))
    }

    fn time(&self) -> Result<DateTime<Utc>, AlertError> {
        let s = self.string()?;
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.invalid(&format!("{s:?} is not an RFC 3339 time ({e})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_i_and_8_or_17_hex_digits() {
        assert!(valid_instance_id("i-0123456789abcdef0"));
        assert!(valid_instance_id("i-12345678"));
        assert!(!valid_instance_id("i-12345"));
        assert!(!valid_instance_id("i-0123456789ABCDEF0"));
        assert!(!valid_instance_id("i-0123456789abcdefg"));
        assert!(!valid_instance_id("0123456789abcdef0"));
    }

    #[test]
    fn severities_map_to_labels_at_the_documented_bounds() {
        assert_eq!(SeverityLabel::of(0.0), SeverityLabel::Informational);
        assert_eq!(SeverityLabel::of(3.9), SeverityLabel::Low);
        assert_eq!(SeverityLabel::of(4.0), SeverityLabel::Medium);
        assert_eq!(SeverityLabel::of(6.9), SeverityLabel::Medium);
        assert_eq!(SeverityLabel::of(7.0), SeverityLabel::High);
        assert_eq!(SeverityLabel::of(9.0), SeverityLabel::Critical);
    }
}
