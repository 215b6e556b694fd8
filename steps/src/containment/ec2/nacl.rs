//! Cut the instance's tracked flows with network ACL entries.
//!
//! Security groups do not end connections AWS always tracks: those through
//! NAT gateways, Network and Gateway Load Balancers, Transit Gateway,
//! Network Firewall and Global Accelerator, and all ICMP. Network ACLs are
//! stateless: a deny entry drops every packet it matches, tracked or not.
//!
//! An ACL entry's CIDR is the *source* of inbound packets and the
//! *destination* of outbound ones, and an ACL sees only packets that enter
//! or leave the subnets it serves. Entries naming the instance's addresses
//! therefore match where its packets cross into *another* subnet (the NAT
//! gateway's, a load balancer's, a Transit Gateway attachment's, an
//! endpoint's, another host's) and nothing at all on an ACL that serves
//! only the instance's own subnet. So the deny entries go on every ACL of
//! the VPC that serves some other subnet, numbered ahead of its rules, and
//! an ACL that only serves the instance's subnet is left alone (and said
//! so). What crosses no other subnet (the internet gateway straight to the
//! instance, a peer in the same subnet, Global Accelerator, DNS to the VPC
//! resolver, IMDS, Time Sync) is not cut by ACLs.
//!
//! Every entry is planned, recorded in the case, then written; release
//! removes exactly the recorded entries that are still as written.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use async_trait::async_trait;
use aws_sdk_ec2::types::{NetworkAcl, NetworkAclEntry, PortRange, RuleAction};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::isolate::Exemption;
use super::{filter, InstanceRef};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, StepError};
use crate::evidence::{self, Put};
use crate::step::Step;

/// Rules per direction an ACL holds unless the account's quota ("Rules per
/// network ACL") was raised.
pub const DEFAULT_RULE_LIMIT: u32 = 20;
/// Where new entries go when a direction has no rule but the default.
const TOP_WHEN_EMPTY: i32 = 100;
/// Rule numbers at and above this are the defaults (`*`), not counted.
const DEFAULT_RULE_NUMBER: i32 = 32767;
/// The return ports of TCP connections, as AWS advises for ACLs.
const EPHEMERAL: (i32, i32) = (1024, 65535);
/// Two runs writing one ACL at once pick the same numbers: the loser
/// takes back what it wrote, reads again and retries this often.
const CONFLICT_RETRIES: usize = 4;

/// Denies all traffic to and from the instance's addresses on every
/// network ACL of its VPCs that serves another subnet, numbered ahead of
/// the ACL's rules, with the exemptions' allow entries ahead of the denies.
/// Each entry is recorded in the case before it is written (release removes
/// exactly those), and read back. An ACL that cannot be cut is left as it
/// was, and the step fails `PartiallyContained` naming it. Idempotent.
#[derive(Debug)]
pub struct CutNetworkAcls;

/// Input of [`CutNetworkAcls`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NaclCutInput {
    /// The case, validated as a [`crate::ids::CaseId`]; the entries are
    /// recorded under `cases/CASE/network-acl-cut/INSTANCE/`.
    pub case_id: String,
    /// The instance to cut off (`i-...`), validated as a
    /// [`crate::ids::InstanceId`]; it needs an interface in a VPC.
    pub instance_id: String,
    /// Where the case records the entries (release reads them there).
    pub evidence_bucket: String,
    /// The isolation's exemptions, kept open through the ACLs too.
    #[serde(default)]
    pub exemptions: Vec<Exemption>,
    /// The case's options: `nacl_rule_limit`, rules per direction per
    /// ACL (default 20, AWS's default quota). The whole options object is
    /// passed, so that a case file written without the field still runs.
    #[serde(default)]
    pub options: CutOptions,
}

/// What the cut reads of the case's options (the rest is ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CutOptions {
    /// Rules per direction an ACL may hold, 1 to 40 (AWS's default quota,
    /// 20, when None).
    #[serde(default)]
    pub nacl_rule_limit: Option<u32>,
}

/// What an ACL entry does to the packets it matches.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AclAction {
    /// Lets them through. Firebreak writes one only for an exemption, and
    /// only where the ACL's own rules already let that traffic through.
    Allow,
    /// Drops them: the cut itself.
    Deny,
}

/// What an entry does, without its rule number.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct EntrySpec {
    /// Whether the entry applies to outbound packets (true) or inbound ones
    /// (false).
    pub egress: bool,
    /// Allow (an exemption) or deny (the cut).
    pub action: AclAction,
    /// `-1` (all) or `6` (TCP), as EC2 writes them.
    pub protocol: String,
    /// `/32` or `/128` of an instance address (or a delegated prefix).
    pub cidr: String,
    /// First port of the range, for TCP (or UDP, in a live entry); None
    /// for all traffic.
    pub from_port: Option<i32>,
    /// Last port of the range (inclusive), for TCP (or UDP, in a live
    /// entry); None for all traffic.
    pub to_port: Option<i32>,
}

/// One entry firebreak wrote (or plans to write).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct AclEntry {
    /// The network ACL it is on (`acl-...`).
    pub network_acl_id: String,
    /// Its rule number: rules apply in ascending order and the first match
    /// decides; firebreak's go just below the ACL's lowest rule.
    pub rule_number: i32,
    /// What the entry matches and does.
    #[serde(flatten)]
    pub spec: EntrySpec,
}

/// An ACL left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AclNote {
    /// The network ACL left alone (`acl-...`).
    pub network_acl_id: String,
    /// Why, for the operator: it serves no subnet, or only the instance's own
    /// subnet, where entries naming the instance's addresses match nothing.
    pub reason: String,
}

/// What [`CutNetworkAcls`] has in force on the VPC's network ACLs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NaclCutOutput {
    /// The instance cut off (`i-...`).
    pub instance_id: String,
    /// The instance's addresses the entries name.
    pub addresses: Vec<String>,
    /// Entries in force (written by this run or an earlier one of the case).
    pub entries: Vec<AclEntry>,
    /// ACLs left alone on purpose (they serve only the instance's subnets).
    pub skipped: Vec<AclNote>,
    /// Flows the entries leave open (exemptions sharing a NAT gateway's
    /// ACL, peers outside the VPC).
    pub warnings: Vec<String>,
    /// The case's record of the entries.
    pub record_location: Option<String>,
    /// Whether an entry was written by this run (false in a dry run, or when
    /// every entry was already in force).
    pub changed: bool,
    /// Whether this was a dry run: each entry was only sent with
    /// `DryRun=true` (an endpoint that ignores it has the entry taken back),
    /// and nothing was recorded.
    pub dry_run: bool,
}

/// The case's record of the entries: one numbered object per change, each
/// holding every entry of the case for the instance so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NaclCutRecord {
    /// The case the entries belong to.
    pub case_id: String,
    /// The instance whose addresses the entries name (`i-...`).
    pub instance_id: String,
    /// When this record was written (UTC).
    pub written_at: chrono::DateTime<chrono::Utc>,
    /// Every entry the case has planned for the instance so far, on every
    /// ACL, whether or not writing it succeeded; release removes those still as
    /// recorded.
    pub entries: Vec<AclEntry>,
}

impl StepDef for CutNetworkAcls {
    const NAME: &'static str = "cut_network_acls";
    const SUMMARY: &'static str =
        "Deny the instance's addresses on the VPC's network ACLs (stateless: ends tracked flows through NAT gateways, load balancers, Transit Gateway); recorded for release.";
    const MUTATES: bool = true;
    type Input = NaclCutInput;
    type Output = NaclCutOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::Unsupported,
            ErrorName::InvalidInput,
            ErrorName::InstanceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
            ErrorName::PartiallyContained,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                [
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeNetworkAcls",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeNatGateways",
                ],
                ["*"],
            ),
            Statement::allow(
                ["ec2:CreateNetworkAclEntry", "ec2:DeleteNetworkAclEntry"],
                ["arn:aws:ec2:*:*:network-acl/*"],
            ),
            Statement::allow(["s3:PutObject", "s3:GetObject"], ["arn:aws:s3:::*/cases/*"]),
            Statement::allow(["s3:ListBucket"], ["arn:aws:s3:::*"]),
        ]
    }
}

/// S3 keys of the ACL-cut records in the evidence bucket.
pub mod keys {
    /// The prefix of one instance's ACL records in a case.
    pub fn prefix(case: &str, instance: &str) -> String {
        format!("cases/{case}/network-acl-cut/{instance}/")
    }
    /// The key of the `n`th record (`.../0001.json`): each change to the
    /// cut writes the next number, never overwriting one.
    pub fn record(case: &str, instance: &str, n: u32) -> String {
        format!("{}{n:04}.json", prefix(case, instance))
    }
}

impl EntrySpec {
    fn deny(egress: bool, cidr: &str) -> EntrySpec {
        EntrySpec {
            egress,
            action: AclAction::Deny,
            protocol: "-1".into(),
            cidr: cidr.into(),
            from_port: None,
            to_port: None,
        }
    }

    fn allow_tcp(egress: bool, cidr: &str, (from, to): (i32, i32)) -> EntrySpec {
        EntrySpec {
            egress,
            action: AclAction::Allow,
            protocol: "6".into(),
            cidr: cidr.into(),
            from_port: Some(from),
            to_port: Some(to),
        }
    }

    /// The spec of a live entry (None for the defaults and what firebreak
    /// never writes, like ICMP entries).
    pub fn of(e: &NetworkAclEntry) -> Option<EntrySpec> {
        let cidr = e.cidr_block().or(e.ipv6_cidr_block())?.to_string();
        let action = match e.rule_action()? {
            RuleAction::Allow => AclAction::Allow,
            RuleAction::Deny => AclAction::Deny,
            _ => return None,
        };
        let protocol = e.protocol()?.to_string();
        let (from_port, to_port) = match (protocol.as_str(), e.port_range()) {
            ("6" | "17", Some(r)) => (r.from(), r.to()),
            _ => (None, None),
        };
        Some(EntrySpec {
            egress: e.egress()?,
            action,
            protocol,
            cidr,
            from_port,
            to_port,
        })
    }

    /// The entry in words, for logs and reports (`ingress deny all traffic
    /// from 10.0.1.5/32`).
    pub fn describe(&self) -> String {
        let what = match (self.protocol.as_str(), self.from_port, self.to_port) {
            ("-1", _, _) => "all traffic".to_string(),
            ("6", Some(f), Some(t)) if f == t => format!("tcp/{f}"),
            ("6", Some(f), Some(t)) => format!("tcp/{f}-{t}"),
            (p, _, _) => format!("protocol {p}"),
        };
        let (dir, side) = if self.egress {
            ("egress", "to")
        } else {
            ("ingress", "from")
        };
        let act = match self.action {
            AclAction::Allow => "allow",
            AclAction::Deny => "deny",
        };
        format!("{dir} {act} {what} {side} {}", self.cidr)
    }
}

/// Whether an ACL's own entries let (`egress`, TCP, every port of
/// `ports`) through for `addr`: NACL rules apply in number order, the
/// first whose CIDR and protocol match decides, nothing matching denies.
/// An exemption's allow entry is only written where this holds, so that
/// it never opens what the owner's rules close.
fn existing_rules_allow(
    entries: &[NetworkAclEntry],
    egress: bool,
    addr: IpAddr,
    ports: (i32, i32),
) -> bool {
    let mut rules: Vec<(i32, IpNet, EntrySpec)> = entries
        .iter()
        .filter_map(|e| {
            let spec = EntrySpec::of(e)?;
            let net: IpNet = spec.cidr.parse().ok()?;
            (spec.egress == egress).then_some((e.rule_number()?, net, spec))
        })
        .collect();
    rules.sort_by_key(|r| r.0);
    (ports.0..=ports.1).all(|port| {
        rules
            .iter()
            .find(|(_, net, s)| {
                net.contains(&addr)
                    && match s.protocol.as_str() {
                        "-1" => true,
                        "6" => {
                            s.from_port.is_none_or(|f| f <= port)
                                && s.to_port.is_none_or(|t| port <= t)
                        }
                        _ => false,
                    }
            })
            .is_some_and(|(_, _, s)| s.action == AclAction::Allow)
    })
}

/// Rule numbers for `n` new entries in one direction: just below the
/// lowest rule there (so they come first), or below 100 when there is
/// none but the default.
fn allocate(existing: &BTreeSet<i32>, n: usize) -> Result<Vec<i32>, String> {
    let top = existing
        .iter()
        .copied()
        .find(|r| *r < DEFAULT_RULE_NUMBER)
        .unwrap_or(TOP_WHEN_EMPTY);
    let n = i32::try_from(n).map_err(|_| "too many entries".to_string())?;
    if top - n < 1 {
        return Err(format!(
            "its lowest rule is number {top}: no {n} free numbers below it to put entries ahead of it"
        ));
    }
    Ok((top - n..top).collect())
}

/// One interface's addresses (IPv4 and IPv6, delegated prefixes too).
#[derive(Clone, Debug)]
struct Interface {
    vpc: String,
    subnet: String,
    cidrs: Vec<String>,
}

/// One subnet of the VPC.
#[derive(Clone, Debug)]
struct Subnet {
    id: String,
    nets: Vec<IpNet>,
}

/// Where an exemption's peer is.
enum PeerPlace {
    /// In these subnets of the VPC.
    Subnets(BTreeSet<String>),
    /// A prefix list (a gateway endpoint): its traffic crosses no other
    /// subnet's ACL.
    Gateway,
    /// Not in the VPC.
    Outside,
}

async fn interfaces_of(
    ctx: &StepContext,
    log: &StepLog<'_>,
    instance: &str,
) -> Result<Vec<Interface>, StepError> {
    log.read(
        "ec2:DescribeNetworkInterfaces",
        format!("Filters=[attachment.instance-id={instance}]"),
    );
    let out = ctx
        .aws
        .ec2
        .describe_network_interfaces()
        .filters(filter("attachment.instance-id", [instance]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?;
    let mut v = Vec::new();
    for n in out.network_interfaces() {
        let mut cidrs = Vec::new();
        for p in n.private_ip_addresses() {
            if let Some(a) = p.private_ip_address() {
                cidrs.push(format!("{a}/32"));
            }
        }
        for a in n.ipv6_addresses() {
            if let Some(a) = a.ipv6_address() {
                cidrs.push(format!("{a}/128"));
            }
        }
        for p in n.ipv4_prefixes() {
            cidrs.extend(p.ipv4_prefix().map(str::to_string));
        }
        for p in n.ipv6_prefixes() {
            cidrs.extend(p.ipv6_prefix().map(str::to_string));
        }
        // EC2 writes addresses in canonical form; parse to make sure.
        let cidrs = cidrs
            .into_iter()
            .filter_map(|c| c.parse::<IpNet>().ok().map(|n| n.trunc().to_string()))
            .collect();
        v.push(Interface {
            vpc: n.vpc_id().unwrap_or_default().to_string(),
            subnet: n.subnet_id().unwrap_or_default().to_string(),
            cidrs,
        });
    }
    Ok(v)
}

async fn subnets_of(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
) -> Result<Vec<Subnet>, StepError> {
    log.read("ec2:DescribeSubnets", format!("Filters=[vpc-id={vpc}]"));
    let mut out = Vec::new();
    let mut pages = ctx
        .aws
        .ec2
        .describe_subnets()
        .filters(filter("vpc-id", [vpc]))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("ec2:DescribeSubnets", e))?;
        for s in page.subnets() {
            let mut nets: Vec<IpNet> = s
                .cidr_block()
                .and_then(|c| c.parse().ok())
                .into_iter()
                .collect();
            for a in s.ipv6_cidr_block_association_set() {
                nets.extend(a.ipv6_cidr_block().and_then(|c| c.parse::<IpNet>().ok()));
            }
            out.push(Subnet {
                id: s.subnet_id().unwrap_or_default().to_string(),
                nets,
            });
        }
    }
    Ok(out)
}

async fn acls_of(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
) -> Result<Vec<NetworkAcl>, StepError> {
    log.read("ec2:DescribeNetworkAcls", format!("Filters=[vpc-id={vpc}]"));
    let mut out = Vec::new();
    let mut pages = ctx
        .aws
        .ec2
        .describe_network_acls()
        .filters(filter("vpc-id", [vpc]))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("ec2:DescribeNetworkAcls", e))?;
        out.extend(page.network_acls().iter().cloned());
    }
    out.sort_by(|a, b| a.network_acl_id().cmp(&b.network_acl_id()));
    Ok(out)
}

async fn read_acl(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &str,
) -> Result<Option<NetworkAcl>, StepError> {
    log.read("ec2:DescribeNetworkAcls", format!("NetworkAclIds=[{id}]"));
    match ctx
        .aws
        .ec2
        .describe_network_acls()
        .network_acl_ids(id)
        .send()
        .await
    {
        Ok(o) => Ok(o.network_acls().first().cloned()),
        Err(e) if error_code(&e).as_deref() == Some("InvalidNetworkAclID.NotFound") => Ok(None),
        Err(e) => Err(aws_error(&format!("ec2:DescribeNetworkAcls {id}"), e)),
    }
}

/// The subnets an exemption's peer is in.
async fn peer_place(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
    subnets: &[Subnet],
    peer: &str,
) -> Result<PeerPlace, StepError> {
    if peer.starts_with("pl-") {
        return Ok(PeerPlace::Gateway);
    }
    if peer.starts_with("sg-") {
        log.read(
            "ec2:DescribeNetworkInterfaces",
            format!("Filters=[vpc-id={vpc}, group-id={peer}]"),
        );
        let out = ctx
            .aws
            .ec2
            .describe_network_interfaces()
            .filters(filter("vpc-id", [vpc]))
            .filters(filter("group-id", [peer]))
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?;
        let s: BTreeSet<String> = out
            .network_interfaces()
            .iter()
            .filter_map(|n| n.subnet_id().map(str::to_string))
            .collect();
        return Ok(if s.is_empty() {
            PeerPlace::Outside
        } else {
            PeerPlace::Subnets(s)
        });
    }
    let Ok(net) = peer.parse::<IpNet>() else {
        return Ok(PeerPlace::Outside);
    };
    let s: BTreeSet<String> = subnets
        .iter()
        .filter(|s| {
            s.nets
                .iter()
                .any(|n| n.contains(&net.network()) || net.contains(&n.network()))
        })
        .map(|s| s.id.clone())
        .collect();
    Ok(if s.is_empty() {
        PeerPlace::Outside
    } else {
        PeerPlace::Subnets(s)
    })
}

fn subnets_served(acl: &NetworkAcl) -> BTreeSet<String> {
    acl.associations()
        .iter()
        .filter_map(|a| a.subnet_id().map(str::to_string))
        .collect()
}

/// The entries one exemption needs on an ACL serving the peer's subnet,
/// for one instance address. Outbound and inbound both cross it: the
/// request one way, the reply (to an ephemeral port) the other.
fn exemption_specs(ex: &Exemption, cidr: &str) -> [EntrySpec; 2] {
    match ex {
        // The peer's packets leave its subnet to port 22 of the instance;
        // the instance's replies enter it to the peer's ephemeral port.
        Exemption::SshFrom(_) => [
            EntrySpec::allow_tcp(true, cidr, (22, 22)),
            EntrySpec::allow_tcp(false, cidr, EPHEMERAL),
        ],
        Exemption::HttpsTo(_) => [
            EntrySpec::allow_tcp(false, cidr, (443, 443)),
            EntrySpec::allow_tcp(true, cidr, EPHEMERAL),
        ],
    }
}

fn same_family(cidr: &str, peer: &str) -> bool {
    if peer.starts_with("sg-") || peer.starts_with("pl-") {
        return true;
    }
    cidr.contains(':') == peer.contains(':')
}

/// The entries wanted on each ACL of one VPC, ACLs left alone, warnings.
struct Plan {
    wanted: BTreeMap<String, Vec<EntrySpec>>,
    skipped: Vec<AclNote>,
    warnings: Vec<String>,
}

async fn plan_vpc(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
    interfaces: &[&Interface],
    exemptions: &[Exemption],
    acls: &[NetworkAcl],
) -> Result<Plan, StepError> {
    let own: BTreeSet<String> = interfaces.iter().map(|i| i.subnet.clone()).collect();
    let cidrs: Vec<String> = interfaces
        .iter()
        .flat_map(|i| i.cidrs.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let subnets = subnets_of(ctx, log, vpc).await?;
    let mut places = Vec::new();
    let mut warnings = Vec::new();
    for ex in exemptions {
        let place = peer_place(ctx, log, vpc, &subnets, ex.peer()).await?;
        if matches!(place, PeerPlace::Outside) {
            warnings.push(format!(
                "exemption {ex}: the peer is not in {vpc}; if it is reached through a NAT gateway, a Transit Gateway or a load balancer in another subnet, the ACL entries block it too (use --no-nacl-cut to keep it)"
            ));
        }
        places.push((ex, place));
    }
    log.read("ec2:DescribeNatGateways", format!("Filters=[vpc-id={vpc}]"));
    let nats = ctx
        .aws
        .ec2
        .describe_nat_gateways()
        .filter(filter("vpc-id", [vpc]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeNatGateways", e))?;
    let nat_subnets: BTreeMap<String, String> = nats
        .nat_gateways()
        .iter()
        .filter(|n| {
            !matches!(
                n.state().map(|s| s.as_str()),
                Some("deleted") | Some("deleting") | Some("failed")
            )
        })
        .filter_map(|n| Some((n.subnet_id()?.to_string(), n.nat_gateway_id()?.to_string())))
        .collect();

    let mut wanted = BTreeMap::new();
    let mut skipped = Vec::new();
    for acl in acls {
        let id = acl.network_acl_id().unwrap_or_default().to_string();
        let served = subnets_served(acl);
        if served.is_empty() {
            skipped.push(AclNote {
                network_acl_id: id,
                reason: "serves no subnet".into(),
            });
            continue;
        }
        // Every address of the instance lives in one subnet this ACL
        // serves, and it serves nothing else: none of the instance's
        // packets cross it.
        if served.len() == 1 && own.len() == 1 && served == own {
            skipped.push(AclNote {
                network_acl_id: id,
                reason: format!(
                    "serves only the instance's own subnet {}: an ACL entry matches the source of inbound and the destination of outbound packets, so entries naming the instance's addresses would match nothing there",
                    own.iter().next().map(String::as_str).unwrap_or_default()
                ),
            });
            continue;
        }
        let mut specs = Vec::new();
        for (ex, place) in &places {
            let PeerPlace::Subnets(peer_subnets) = place else {
                continue;
            };
            if served.is_disjoint(peer_subnets) {
                continue;
            }
            let mut added = false;
            for cidr in cidrs.iter().filter(|c| same_family(c, ex.peer())) {
                let Ok(net) = cidr.parse::<IpNet>() else {
                    continue;
                };
                for spec in exemption_specs(ex, cidr) {
                    let ports = (spec.from_port.unwrap_or(0), spec.to_port.unwrap_or(65535));
                    if existing_rules_allow(acl.entries(), spec.egress, net.network(), ports) {
                        specs.push(spec);
                        added = true;
                    } else {
                        warnings.push(format!(
                            "{id}: its own rules already restrict {} for exemption {ex}; no allow entry written there (the rules stay as they are)",
                            spec.describe()
                        ));
                    }
                }
            }
            if added {
                for s in served.iter().filter(|s| nat_subnets.contains_key(*s)) {
                    warnings.push(format!(
                        "{id} also serves subnet {s} of NAT gateway {}: the allow entries of exemption {ex} let tracked connections through it on those ports go on",
                        nat_subnets[s]
                    ));
                }
            }
        }
        for cidr in &cidrs {
            specs.push(EntrySpec::deny(false, cidr));
            specs.push(EntrySpec::deny(true, cidr));
        }
        wanted.insert(id, specs);
    }
    Ok(Plan {
        wanted,
        skipped,
        warnings,
    })
}

/// The entries of the case's latest record, and the next record number.
pub async fn recorded_entries(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
    instance: &str,
) -> Result<(Vec<AclEntry>, u32), StepError> {
    let prefix = keys::prefix(case, instance);
    let mut names = evidence::list_keys(ctx, log, bucket, &prefix).await?;
    names.retain(|k| k.ends_with(".json"));
    names.sort();
    let Some(last) = names.last() else {
        return Ok((Vec::new(), 1));
    };
    let next = last
        .trim_start_matches(&prefix)
        .trim_end_matches(".json")
        .parse::<u32>()
        .map(|n| n + 1)
        .map_err(|_| {
            StepError::new(
                ErrorName::VerificationFailed,
                format!("s3://{bucket}/{last} is not a numbered record of the ACL cut"),
            )
        })?;
    let Some((bytes, _)) = evidence::get(ctx, log, bucket, last).await? else {
        return Ok((Vec::new(), next));
    };
    let rec: NaclCutRecord = serde_json::from_slice(&bytes).map_err(|e| {
        StepError::new(
            ErrorName::VerificationFailed,
            format!("s3://{bucket}/{last} is not a record of the ACL cut: {e}"),
        )
    })?;
    Ok((rec.entries, next))
}

async fn write_record(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
    instance: &str,
    n: u32,
    entries: &[AclEntry],
) -> Result<Option<String>, StepError> {
    let rec = NaclCutRecord {
        case_id: case.into(),
        instance_id: instance.into(),
        written_at: chrono::Utc::now(),
        entries: entries.to_vec(),
    };
    let body = serde_json::to_vec_pretty(&rec)
        .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?;
    let key = keys::record(case, instance, n);
    match evidence::put_new(ctx, log, bucket, &key, body, "application/json").await? {
        Put::Created(s) => Ok(Some(s.location())),
        Put::Planned => Ok(None),
        Put::Exists => Err(StepError::new(
            ErrorName::VerificationFailed,
            format!("s3://{bucket}/{key} was written by another run at the same time; run again"),
        )),
    }
}

fn create_request(
    ctx: &StepContext,
    e: &AclEntry,
) -> aws_sdk_ec2::operation::create_network_acl_entry::builders::CreateNetworkAclEntryFluentBuilder
{
    let s = &e.spec;
    let mut req = ctx
        .aws
        .ec2
        .create_network_acl_entry()
        .network_acl_id(&e.network_acl_id)
        .rule_number(e.rule_number)
        .egress(s.egress)
        .protocol(&s.protocol)
        .rule_action(match s.action {
            AclAction::Allow => RuleAction::Allow,
            AclAction::Deny => RuleAction::Deny,
        });
    req = if s.cidr.contains(':') {
        req.ipv6_cidr_block(&s.cidr)
    } else {
        req.cidr_block(&s.cidr)
    };
    if let (Some(f), Some(t)) = (s.from_port, s.to_port) {
        req = req.port_range(PortRange::builder().from(f).to(t).build());
    }
    req
}

fn entry_params(e: &AclEntry) -> String {
    format!(
        "NetworkAclId={}, RuleNumber={}, {}",
        e.network_acl_id,
        e.rule_number,
        e.spec.describe()
    )
}

/// What a dry run says of a call the endpoint performed although DryRun
/// was set (moto's network ACL calls ignore it; AWS honours it).
fn ignored_dry_run(action: &str, undone: bool, how: &str) -> String {
    if undone {
        format!("the endpoint ignored DryRun and made the change; it was {how}, so nothing changed, but the permission was not checked: needs {action} on the network ACL")
    } else {
        format!("the endpoint ignored DryRun and made the change, and it could NOT be {how}: check this ACL by hand; needs {action} on the network ACL")
    }
}

/// Deletes one entry if it is still exactly as written.
pub(crate) async fn delete_entry(
    ctx: &StepContext,
    log: &StepLog<'_>,
    e: &AclEntry,
    why: &str,
) -> Result<(), StepError> {
    let params = format!("{} ({why})", entry_params(e));
    let req = ctx
        .aws
        .ec2
        .delete_network_acl_entry()
        .network_acl_id(&e.network_acl_id)
        .rule_number(e.rule_number)
        .egress(e.spec.egress);
    if ctx.is_dry_run() {
        return match req.dry_run(true).send().await {
            // Performed despite DryRun (moto does): put it back.
            Ok(_) => {
                let redo = create_request(ctx, e).send().await;
                log.not_checked(
                    "ec2:DeleteNetworkAclEntry",
                    params,
                    ignored_dry_run("ec2:DeleteNetworkAclEntry", redo.is_ok(), "made again"),
                );
                Ok(())
            }
            Err(err) => log.dry_run("ec2:DeleteNetworkAclEntry", params, Err::<(), _>(err)),
        };
    }
    match req.send().await {
        Ok(_) => {
            log.done("ec2:DeleteNetworkAclEntry", params);
            Ok(())
        }
        Err(err) if error_code(&err).as_deref() == Some("InvalidNetworkAclEntry.NotFound") => {
            Ok(())
        }
        Err(err) => Err(aws_error(
            &format!(
                "ec2:DeleteNetworkAclEntry {} {}",
                e.network_acl_id, e.rule_number
            ),
            err,
        )),
    }
}

/// What an ACL needs: the wanted entries not already there (as recorded
/// by this case), with rule numbers, allows ahead of denies.
fn entries_to_write(
    acl: &NetworkAcl,
    wanted: &[EntrySpec],
    recorded: &[AclEntry],
    limit: u32,
) -> Result<(Vec<AclEntry>, Vec<AclEntry>), String> {
    let id = acl.network_acl_id().unwrap_or_default();
    let live: Vec<(i32, EntrySpec)> = acl
        .entries()
        .iter()
        .filter_map(|e| Some((e.rule_number()?, EntrySpec::of(e)?)))
        .collect();
    // Entries of this case still in place.
    let kept: Vec<AclEntry> = recorded
        .iter()
        .filter(|r| r.network_acl_id == id)
        .filter(|r| {
            live.iter()
                .any(|(n, s)| *n == r.rule_number && *s == r.spec)
        })
        .cloned()
        .collect();
    let mut out = Vec::new();
    for egress in [false, true] {
        let missing: Vec<&EntrySpec> = wanted
            .iter()
            .filter(|w| w.egress == egress)
            .filter(|w| !kept.iter().any(|k| &k.spec == *w))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let numbers: BTreeSet<i32> = acl
            .entries()
            .iter()
            .filter(|e| e.egress() == Some(egress))
            .filter_map(|e| e.rule_number())
            .collect();
        let used = numbers.iter().filter(|n| **n < DEFAULT_RULE_NUMBER).count();
        let dir = if egress { "outbound" } else { "inbound" };
        if used + missing.len() > limit as usize {
            return Err(format!(
                "{id} holds {used} {dir} rules and needs {} more: over the limit of {limit} per direction (raise the \"Rules per network ACL\" quota and pass --nacl-rule-limit, or free rules)",
                missing.len()
            ));
        }
        // A retry (after a lost answer) writes what it recorded, at the
        // same numbers, when they are all still free: the plan stays the
        // one recorded.
        let replanned: Option<Vec<AclEntry>> = missing
            .iter()
            .map(|spec| {
                recorded
                    .iter()
                    .find(|r| r.network_acl_id == id && &r.spec == *spec)
                    .filter(|r| !numbers.contains(&r.rule_number))
                    .cloned()
            })
            .collect();
        if let Some(again) = replanned {
            out.extend(again);
            continue;
        }
        let nums = allocate(&numbers, missing.len()).map_err(|e| format!("{id} ({dir}): {e}"))?;
        // Allows first: an allow must come before the deny of its address.
        let mut ordered = missing.clone();
        ordered.sort_by_key(|s| s.action);
        for (n, spec) in nums.into_iter().zip(ordered) {
            out.push(AclEntry {
                network_acl_id: id.to_string(),
                rule_number: n,
                spec: spec.clone(),
            });
        }
    }
    Ok((kept, out))
}

/// Why an ACL's entries could not be written (what was written is taken
/// back in every case).
enum WriteFailure {
    /// A concurrent run took a rule number: read again and retry.
    Conflict,
    /// Throttling, a 5xx, a lost answer: the step fails retriable and its
    /// retry finds the recorded entries (one whose answer was lost is
    /// there, and kept).
    Transient(StepError),
    /// Anything else (the rule limit, a refusal): the ACL is left.
    Refused(String),
}

/// Writes one ACL's new entries, denies first (cut at once, investigator
/// access follows a moment later). All or nothing: on a failure what was
/// written is taken back.
async fn write_acl(
    ctx: &StepContext,
    log: &StepLog<'_>,
    new: &[AclEntry],
) -> Result<(), WriteFailure> {
    let mut order: Vec<&AclEntry> = new.iter().collect();
    order.sort_by_key(|e| std::cmp::Reverse(e.spec.action));
    let mut written: Vec<&AclEntry> = Vec::new();
    for e in order {
        let req = create_request(ctx, e);
        if ctx.is_dry_run() {
            let checked = match req.dry_run(true).send().await {
                // Performed despite DryRun (moto does): take it back.
                Ok(_) => {
                    let undo = ctx
                        .aws
                        .ec2
                        .delete_network_acl_entry()
                        .network_acl_id(&e.network_acl_id)
                        .rule_number(e.rule_number)
                        .egress(e.spec.egress)
                        .send()
                        .await;
                    log.not_checked(
                        "ec2:CreateNetworkAclEntry",
                        entry_params(e),
                        ignored_dry_run("ec2:CreateNetworkAclEntry", undo.is_ok(), "deleted again"),
                    );
                    Ok(())
                }
                Err(err) => log.dry_run(
                    "ec2:CreateNetworkAclEntry",
                    entry_params(e),
                    Err::<(), _>(err),
                ),
            };
            if let Err(err) = checked {
                return Err(WriteFailure::Refused(err.to_string()));
            }
            continue;
        }
        match req.send().await {
            Ok(_) => {
                log.done("ec2:CreateNetworkAclEntry", entry_params(e));
                written.push(e);
            }
            Err(err) => {
                let code = error_code(&err);
                let conflict = code.as_deref() == Some("NetworkAclEntryAlreadyExists");
                let failed = aws_error(
                    &format!(
                        "ec2:CreateNetworkAclEntry {} {}",
                        e.network_acl_id, e.rule_number
                    ),
                    err,
                );
                let transient = failed.name.is_transient();
                let msg = failed.to_string();
                let mut undo = Vec::new();
                for w in written.iter().rev() {
                    if let Err(u) =
                        delete_entry(ctx, log, w, "taking back a half-written ACL").await
                    {
                        undo.push(format!(
                            "rule {} could not be taken back: {u}",
                            w.rule_number
                        ));
                    }
                }
                let msg = if undo.is_empty() {
                    msg
                } else {
                    format!("{msg}; {}", undo.join("; "))
                };
                return Err(match (conflict && undo.is_empty(), transient) {
                    (true, _) => WriteFailure::Conflict,
                    (false, true) => WriteFailure::Transient(StepError::new(failed.name, msg)),
                    (false, false) => WriteFailure::Refused(msg),
                });
            }
        }
    }
    Ok(())
}

/// One run's cut: what it has recorded and written so far.
struct Cut<'a> {
    bucket: &'a str,
    case: &'a str,
    instance: &'a str,
    limit: u32,
    /// The case's entries as the run found them.
    recorded: &'a [AclEntry],
    /// Everything recorded, this run's plans included.
    all_recorded: BTreeSet<AclEntry>,
    /// The next record's number.
    next: u32,
    in_force: Vec<AclEntry>,
    not_cut: Vec<String>,
    record_location: Option<String>,
    changed: bool,
}

impl Cut<'_> {
    /// Cuts one ACL: plans its missing entries, records them, writes them
    /// (all or none); a conflict with a concurrent run is read again and
    /// retried; an ACL that cannot be cut is noted and left as it was.
    async fn acl(
        &mut self,
        ctx: &StepContext,
        log: &StepLog<'_>,
        acl_id: &str,
        specs: &[EntrySpec],
        mut acl: Option<NetworkAcl>,
    ) -> Result<(), StepError> {
        for attempt in 0..=CONFLICT_RETRIES {
            let Some(current) = acl.as_ref() else {
                self.not_cut
                    .push(format!("{acl_id} vanished while being cut"));
                return Ok(());
            };
            let (kept, new) = match entries_to_write(current, specs, self.recorded, self.limit) {
                Ok(x) => x,
                Err(why) => {
                    self.not_cut.push(why);
                    return Ok(());
                }
            };
            if new.is_empty() {
                self.in_force.extend(kept);
                return Ok(());
            }
            // Recorded before written: a run that dies in between leaves
            // nothing release does not know of.
            let before = self.all_recorded.len();
            self.all_recorded.extend(new.iter().cloned());
            if self.all_recorded.len() != before && !ctx.is_dry_run() {
                let list: Vec<AclEntry> = self.all_recorded.iter().cloned().collect();
                let at = write_record(
                    ctx,
                    log,
                    self.bucket,
                    self.case,
                    self.instance,
                    self.next,
                    &list,
                )
                .await?;
                self.record_location = at.or(self.record_location.take());
                self.next += 1;
            }
            match write_acl(ctx, log, &new).await {
                Ok(()) => {
                    self.changed |= !ctx.is_dry_run();
                    self.in_force.extend(kept);
                    self.in_force.extend(new);
                    return Ok(());
                }
                Err(WriteFailure::Conflict) if attempt < CONFLICT_RETRIES => {
                    acl = read_acl(ctx, log, acl_id).await?;
                }
                Err(WriteFailure::Transient(e)) => return Err(e),
                Err(WriteFailure::Conflict) => {
                    self.not_cut.push(format!(
                        "{acl_id}: its rule numbers kept being taken by concurrent runs"
                    ));
                    self.in_force.extend(kept);
                    return Ok(());
                }
                Err(WriteFailure::Refused(why)) => {
                    self.not_cut.push(format!("{acl_id}: {why}"));
                    self.in_force.extend(kept);
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Step for CutNetworkAcls {
    async fn run(ctx: &StepContext, input: NaclCutInput) -> Result<NaclCutOutput, StepError> {
        let (case, id) = InstanceRef {
            case_id: input.case_id.clone(),
            instance_id: input.instance_id.clone(),
        }
        .parse()?;
        super::parse_bucket(&input.evidence_bucket)?;
        let exemptions = input
            .exemptions
            .iter()
            .map(Exemption::canonical)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StepError::invalid_input)?;
        let limit = input.options.nacl_rule_limit.unwrap_or(DEFAULT_RULE_LIMIT);
        if !(1..=40).contains(&limit) {
            return Err(StepError::invalid_input(format!(
                "rule_limit {limit}: AWS allows 1 to 40 rules per direction"
            )));
        }
        let log = ctx.log(Self::NAME);
        super::describe_instance(ctx, &log, &id).await?;
        let interfaces = interfaces_of(ctx, &log, id.as_str()).await?;
        if interfaces.is_empty() || interfaces.iter().any(|i| i.vpc.is_empty()) {
            return Err(StepError::new(
                ErrorName::Unsupported,
                format!("{id} has no network interface in a VPC"),
            ));
        }
        let addresses: Vec<String> = interfaces.iter().flat_map(|i| i.cidrs.clone()).collect();
        let vpcs: BTreeSet<String> = interfaces.iter().map(|i| i.vpc.clone()).collect();
        let (recorded, next) = recorded_entries(
            ctx,
            &log,
            &input.evidence_bucket,
            case.as_str(),
            id.as_str(),
        )
        .await?;

        let mut skipped = Vec::new();
        let mut warnings = Vec::new();
        let mut wanted: BTreeMap<String, Vec<EntrySpec>> = BTreeMap::new();
        let mut acls: BTreeMap<String, NetworkAcl> = BTreeMap::new();
        for vpc in &vpcs {
            let mine: Vec<&Interface> = interfaces.iter().filter(|i| &i.vpc == vpc).collect();
            let list = acls_of(ctx, &log, vpc).await?;
            let plan = plan_vpc(ctx, &log, vpc, &mine, &exemptions, &list).await?;
            skipped.extend(plan.skipped);
            warnings.extend(plan.warnings);
            wanted.extend(plan.wanted);
            for a in list {
                acls.insert(a.network_acl_id().unwrap_or_default().to_string(), a);
            }
        }

        let mut cut = Cut {
            bucket: &input.evidence_bucket,
            case: case.as_str(),
            instance: id.as_str(),
            limit,
            recorded: &recorded,
            all_recorded: recorded.iter().cloned().collect(),
            next,
            in_force: Vec::new(),
            not_cut: Vec::new(),
            record_location: None,
            changed: false,
        };
        for (acl_id, specs) in &wanted {
            cut.acl(ctx, &log, acl_id, specs, acls.get(acl_id).cloned())
                .await?;
        }
        let Cut {
            mut in_force,
            not_cut,
            record_location,
            changed,
            ..
        } = cut;
        if !ctx.is_dry_run() {
            // Read back: every entry in force is there as written.
            let mut wrong = Vec::new();
            let ids: BTreeSet<&String> = in_force.iter().map(|e| &e.network_acl_id).collect();
            for acl_id in ids {
                let live = read_acl(ctx, &log, acl_id).await?;
                let live: Vec<(i32, EntrySpec)> = live
                    .iter()
                    .flat_map(|a| a.entries())
                    .filter_map(|e| Some((e.rule_number()?, EntrySpec::of(e)?)))
                    .collect();
                for e in in_force.iter().filter(|e| &e.network_acl_id == acl_id) {
                    if !live
                        .iter()
                        .any(|(n, s)| *n == e.rule_number && *s == e.spec)
                    {
                        wrong.push(format!("{} is missing", entry_params(e)));
                    }
                }
            }
            if !wrong.is_empty() {
                return Err(StepError::verification(wrong.join("; ")));
            }
        }
        in_force.sort();
        if !not_cut.is_empty() {
            let cut: BTreeSet<&String> = in_force.iter().map(|e| &e.network_acl_id).collect();
            return Err(StepError::new(
                ErrorName::PartiallyContained,
                format!(
                    "network ACLs not cut (left as they were): {}; cut: {}",
                    not_cut.join("; "),
                    if cut.is_empty() {
                        "none".to_string()
                    } else {
                        cut.into_iter().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            ));
        }
        Ok(NaclCutOutput {
            instance_id: id.to_string(),
            addresses,
            entries: in_force,
            skipped,
            warnings,
            record_location,
            changed,
            dry_run: ctx.is_dry_run(),
        })
    }
}

/// Removes the entries a case recorded for an instance, each only if it
/// is still exactly as written (a rule someone replaced is theirs and is
/// reported, not deleted). Returns what was done and what was left.
pub async fn remove_cut(
    ctx: &StepContext,
    log: &StepLog<'_>,
    bucket: &str,
    case: &str,
    instance: &str,
) -> Result<(Vec<String>, Vec<String>), StepError> {
    let (recorded, _) = recorded_entries(ctx, log, bucket, case, instance).await?;
    let mut done = Vec::new();
    let mut left = Vec::new();
    let ids: BTreeSet<&String> = recorded.iter().map(|e| &e.network_acl_id).collect();
    for acl_id in ids {
        let Some(acl) = read_acl(ctx, log, acl_id).await? else {
            continue;
        };
        let live: Vec<(i32, bool, Option<EntrySpec>)> = acl
            .entries()
            .iter()
            .filter_map(|e| Some((e.rule_number()?, e.egress()?, EntrySpec::of(e))))
            .collect();
        for e in recorded.iter().filter(|e| &e.network_acl_id == acl_id) {
            match live
                .iter()
                .find(|(n, eg, _)| *n == e.rule_number && *eg == e.spec.egress)
            {
                None => {}
                Some((_, _, Some(s))) if *s == e.spec => {
                    delete_entry(ctx, log, e, "release: the ACL cut of the case").await?;
                    done.push(format!("ec2:DeleteNetworkAclEntry {}", entry_params(e)));
                }
                Some(_) => left.push(format!(
                    "{} rule {} ({}) no longer holds the case's entry ({}): left as it is",
                    e.network_acl_id,
                    e.rule_number,
                    if e.spec.egress { "outbound" } else { "inbound" },
                    e.spec.describe()
                )),
            }
        }
    }
    Ok((done, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        n: i32,
        egress: bool,
        action: RuleAction,
        proto: &str,
        cidr: &str,
        ports: Option<(i32, i32)>,
    ) -> NetworkAclEntry {
        let mut b = NetworkAclEntry::builder()
            .rule_number(n)
            .egress(egress)
            .rule_action(action)
            .protocol(proto);
        b = if cidr.contains(':') {
            b.ipv6_cidr_block(cidr)
        } else {
            b.cidr_block(cidr)
        };
        if let Some((f, t)) = ports {
            b = b.port_range(PortRange::builder().from(f).to(t).build());
        }
        b.build()
    }

    #[test]
    fn numbers_go_ahead_of_the_lowest_rule_and_run_out_cleanly() {
        let existing: BTreeSet<i32> = [100, 200, 32767].into();
        assert_eq!(allocate(&existing, 3).unwrap(), vec![97, 98, 99]);
        assert_eq!(allocate(&[32767].into(), 2).unwrap(), vec![98, 99]);
        assert!(allocate(&[2, 32767].into(), 2)
            .unwrap_err()
            .contains("lowest rule is number 2"));
        assert_eq!(allocate(&[3].into(), 2).unwrap(), vec![1, 2]);
    }

    #[test]
    fn rules_are_evaluated_in_order_first_match_decides() {
        let a: IpAddr = "10.0.1.5".parse().unwrap();
        let rules = vec![
            entry(100, false, RuleAction::Allow, "-1", "0.0.0.0/0", None),
            entry(
                50,
                false,
                RuleAction::Deny,
                "6",
                "10.0.1.0/24",
                Some((443, 443)),
            ),
            entry(32767, false, RuleAction::Deny, "-1", "0.0.0.0/0", None),
        ];
        assert!(!existing_rules_allow(&rules, false, a, (443, 443)));
        assert!(existing_rules_allow(&rules, false, a, (22, 22)));
        assert!(!existing_rules_allow(&rules, false, a, (400, 500)));
        // Other direction: only the default deny matches.
        assert!(!existing_rules_allow(&rules, true, a, (22, 22)));
        // IPv6: nothing matches, so denied.
        let v6: IpAddr = "2600:1f18::5".parse().unwrap();
        assert!(!existing_rules_allow(&rules, false, v6, (22, 22)));
    }

    #[test]
    fn allows_come_before_denies_and_the_limit_is_checked_before_writing() {
        let mut b = NetworkAcl::builder().network_acl_id("acl-1");
        for e in [
            entry(100, false, RuleAction::Allow, "-1", "0.0.0.0/0", None),
            entry(32767, false, RuleAction::Deny, "-1", "0.0.0.0/0", None),
            entry(100, true, RuleAction::Allow, "-1", "0.0.0.0/0", None),
            entry(32767, true, RuleAction::Deny, "-1", "0.0.0.0/0", None),
        ] {
            b = b.entries(e);
        }
        let acl = b.build();
        let wanted = vec![
            EntrySpec::deny(false, "10.0.1.5/32"),
            EntrySpec::deny(true, "10.0.1.5/32"),
            EntrySpec::allow_tcp(false, "10.0.1.5/32", (443, 443)),
            EntrySpec::allow_tcp(true, "10.0.1.5/32", EPHEMERAL),
        ];
        let (kept, new) = entries_to_write(&acl, &wanted, &[], 20).unwrap();
        assert!(kept.is_empty());
        let inbound: Vec<_> = new.iter().filter(|e| !e.spec.egress).collect();
        assert_eq!(inbound.len(), 2);
        assert_eq!(inbound[0].rule_number, 98);
        assert_eq!(inbound[0].spec.action, AclAction::Allow);
        assert_eq!(inbound[1].rule_number, 99);
        assert_eq!(inbound[1].spec.action, AclAction::Deny);
        // A retry after a lost answer: the entry written stays, the rest
        // go where the record put them.
        let mut b = NetworkAcl::builder().network_acl_id("acl-1");
        for e in acl.entries() {
            b = b.entries(e.clone());
        }
        let retry_acl = b
            .entries(entry(
                99,
                false,
                RuleAction::Deny,
                "-1",
                "10.0.1.5/32",
                None,
            ))
            .build();
        let (kept, again) = entries_to_write(&retry_acl, &wanted, &new, 20).unwrap();
        assert_eq!(kept.len(), 1);
        let mut rest = new.clone();
        rest.retain(|e| e.rule_number != 99 || e.spec.egress);
        let mut again = again;
        again.sort();
        rest.sort();
        assert_eq!(again, rest);
        // One rule of room per direction: refused, naming the ACL.
        let err = entries_to_write(&acl, &wanted, &[], 2).unwrap_err();
        assert!(err.contains("acl-1") && err.contains("limit of 2"), "{err}");
    }
}
