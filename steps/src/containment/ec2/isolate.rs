//! Isolate an instance's network interfaces.
//!
//! Changing an interface's security groups does not cut connections that
//! are already tracked. So every interface moves in two steps: first to a
//! group that allows all traffic in and out (IPv4 and IPv6), which makes
//! its flows untracked, then to a group with no rules at all, which stops
//! untracked flows at once. The no-rule group is made once per VPC, tagged,
//! and reused by every later isolation there; the allow-all group belongs
//! to the case and is deleted after the moves.
//!
//! Each interface moves on its own: one that cannot be moved goes back to
//! its groups before the case (from the stored record, never a transition
//! group) and is reported, the others are isolated. Interfaces are listed
//! by attachment, again after the moves, so those attached meanwhile are
//! isolated too; branch interfaces of a trunk are listed through the trunk.
//! Flows AWS always tracks (NAT gateways, load balancers, Transit Gateway)
//! are left to the network-ACL cut (`nacl`).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use aws_sdk_ec2::types::{
    IpPermission, IpRange, Ipv6Range, NetworkInterface, PrefixListId, ResourceType, SecurityGroup,
    TagSpecification, UserIdGroupPair,
};
use firebreak_workflows::iam::Statement;
use firebreak_workflows::step::StepDef;
use firebreak_workflows::ErrorName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{describe_instance, filter, interface_ids, load_record, tag, InstanceRef};
use crate::context::{StepContext, StepLog};
use crate::error::{aws_error, error_code, required, StepError};
use crate::ids::InstanceId;
use crate::step::Step;
use crate::tags;

/// Name of the no-rule group, one per VPC.
pub(super) const ISOLATION_GROUP_NAME: &str = "firebreak-isolation";
/// Name prefix of the allow-all group used for the first move, one per
/// case while it moves interfaces.
pub(super) const TRANSITION_GROUP_NAME: &str = "firebreak-transition";

/// Between the two moves: lets the allow-all rules reach the interfaces'
/// existing flows (turning them untracked) before the no-rule group cuts
/// them. Short, as every second of it the instance can talk.
const TRANSITION_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// What a dry run shows for a group it would create.
const PLANNED_GROUP: &str = "(planned)";

/// Moves every network interface of the instance onto firebreak's
/// isolation group of its VPC, in two moves (an allow-all group first, so
/// that tracked connections become untracked and are cut), and reads each
/// interface back.
#[derive(Debug)]
pub struct IsolateNetwork;

/// The groups firebreak uses in one VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VpcIsolationGroups {
    /// The VPC (`vpc-...`).
    pub vpc_id: String,
    /// The isolation group of the VPC (`sg-...`; a `(planned) ...` name in a
    /// dry run when it does not exist yet).
    pub isolation_group_id: String,
    /// The case's transition group, while interfaces had to move (deleted
    /// after).
    pub transition_group_id: Option<String>,
    /// Groups created by this run (empty when they already existed).
    pub created_group_ids: Vec<String>,
}

/// One interface, before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IsolatedInterface {
    /// The interface (`eni-...`).
    pub network_interface_id: String,
    /// Its VPC (`vpc-...`).
    pub vpc_id: String,
    /// Its security groups before the case (from the record when there is
    /// one): what release puts back. Empty when unknown.
    pub previous_group_ids: Vec<String>,
    /// Read back after the change.
    pub group_ids: Vec<String>,
    /// False when the interface was already isolated.
    pub changed: bool,
    /// For a branch interface (ECS task, EKS pod), its trunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk_interface_id: Option<String>,
}

/// What `isolate_network` is asked to isolate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IsolateInput {
    /// The case (validated as a case id).
    pub case_id: String,
    /// The instance to isolate (`i-...`).
    pub instance_id: String,
    /// Investigator access kept open (SSH in, HTTPS out to SSM); empty
    /// means no traffic at all.
    pub exemptions: Vec<Exemption>,
    /// Where the case's record is: each interface's groups before the
    /// case come from it, so a resumed run never takes a transition group
    /// for them.
    #[serde(default)]
    pub evidence_bucket: Option<String>,
}

/// What isolation did, interface by interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IsolationOutput {
    /// The instance isolated (`i-...`).
    pub instance_id: String,
    /// The exemptions in force (canonical form).
    pub exemptions: Vec<Exemption>,
    /// Why the asked-for exemptions could not be applied (the instance
    /// was isolated without them).
    pub exemption_error: Option<String>,
    /// firebreak's groups in each VPC of the instance.
    pub groups: Vec<VpcIsolationGroups>,
    /// Every interface, with its groups before and after.
    pub interfaces: Vec<IsolatedInterface>,
    /// Transition groups (allow-all) that could not be deleted, with why.
    #[serde(default)]
    pub transition_groups_left: Vec<String>,
    /// What isolation leaves open that the responder should know.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Whether DNS queries from each VPC are logged (neither groups nor
    /// ACLs stop DNS to the VPC resolver).
    #[serde(default)]
    pub dns_query_logging: Vec<DnsLogging>,
    /// True when this run changed anything.
    pub changed: bool,
    /// True in a dry run: nothing was changed, the calls were checked.
    pub dry_run: bool,
}

impl StepDef for IsolateNetwork {
    const NAME: &'static str = "isolate_network";
    const SUMMARY: &'static str =
        "Move every network interface to an allow-all group, then to a group with no rules; read back per interface.";
    const MUTATES: bool = true;
    type Input = IsolateInput;
    type Output = IsolationOutput;

    fn errors() -> Vec<ErrorName> {
        vec![
            ErrorName::ResourceNotFound,
            ErrorName::PartiallyContained,
            ErrorName::InvalidInput,
            ErrorName::InstanceNotFound,
            ErrorName::AccessDenied,
            ErrorName::Throttled,
            ErrorName::AwsUnavailable,
            ErrorName::AwsRequestFailed,
            ErrorName::VerificationFailed,
            ErrorName::Unsupported,
        ]
    }

    fn iam() -> Vec<Statement> {
        vec![
            Statement::allow(
                [
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeTrunkInterfaceAssociations",
                    "route53resolver:ListResolverQueryLogConfigAssociations",
                ],
                ["*"],
            ),
            Statement::allow(
                [
                    "ec2:CreateSecurityGroup",
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:AuthorizeSecurityGroupEgress",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupEgress",
                    "ec2:DeleteSecurityGroup",
                    "ec2:CreateTags",
                ],
                ["arn:aws:ec2:*:*:security-group/*", "arn:aws:ec2:*:*:vpc/*"],
            ),
            Statement::allow(["s3:GetObject"], ["arn:aws:s3:::*/cases/*"]),
            Statement::allow(
                ["ec2:ModifyNetworkInterfaceAttribute"],
                [
                    "arn:aws:ec2:*:*:network-interface/*",
                    "arn:aws:ec2:*:*:security-group/*",
                    "arn:aws:ec2:*:*:instance/*",
                ],
            ),
        ]
    }
}

/// An exception to isolation, for investigators: SSH in from a network or
/// group, or HTTPS out to one (the SSM endpoints). Nothing else can be
/// exempted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "allow", content = "peer")]
pub enum Exemption {
    /// TCP 22 in from a CIDR (`203.0.113.0/24`, `2001:db8::/32`) or a
    /// security group (`sg-...`).
    SshFrom(String),
    /// TCP 443 out to a CIDR or a security group (SSM VPC endpoints).
    HttpsTo(String),
}

impl std::fmt::Display for Exemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exemption::SshFrom(p) => write!(f, "SSH in from {p}"),
            Exemption::HttpsTo(p) => write!(f, "HTTPS out to {p}"),
        }
    }
}

impl Exemption {
    /// The address range or the group/prefix list the exemption opens to.
    pub fn peer(&self) -> &str {
        match self {
            Exemption::SshFrom(p) | Exemption::HttpsTo(p) => p,
        }
    }

    /// Checks the peer: a security group id or a CIDR narrower than the
    /// whole internet.
    pub fn validate(&self) -> Result<(), String> {
        canonical_peer(self.peer()).map(|_| ())
    }

    /// The same exemption with its peer in the form AWS stores it.
    pub fn canonical(&self) -> Result<Exemption, String> {
        let p = canonical_peer(self.peer())?;
        Ok(match self {
            Exemption::SshFrom(_) => Exemption::SshFrom(p),
            Exemption::HttpsTo(_) => Exemption::HttpsTo(p),
        })
    }
}

/// The narrowest prefixes an exemption may open: an investigator network
/// or a VPC endpoint, never a large part of the internet.
const MIN_IPV4_PREFIX: u8 = 8;
const MIN_IPV6_PREFIX: u8 = 32;

/// A security group (`sg-...`), a prefix list (`pl-...`, for example the
/// S3 gateway endpoint's) or a CIDR, returned in canonical form (AWS
/// stores CIDRs that way, and the read-back compares with it). A CIDR with
/// host bits set is refused, as EC2 refuses it.
fn canonical_peer(p: &str) -> Result<String, String> {
    for prefix in ["sg-", "pl-"] {
        if let Some(rest) = p.strip_prefix(prefix) {
            return if !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                Ok(p.to_string())
            } else {
                Err(format!("{p:?} is not a {prefix}... id"))
            };
        }
    }
    let Some((addr, len)) = p.split_once('/') else {
        return Err(format!(
            "{p:?} is neither a CIDR, a security group nor a prefix list"
        ));
    };
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{p:?}: bad prefix length"))?;
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            if !(MIN_IPV4_PREFIX..=32).contains(&len) {
                return Err(format!(
                    "{p:?}: an IPv4 exemption must be a /{MIN_IPV4_PREFIX} or narrower"
                ));
            }
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let net = std::net::Ipv4Addr::from(u32::from(a) & mask);
            if net != a {
                return Err(format!(
                    "{p:?} has host bits set: did you mean {net}/{len}?"
                ));
            }
            Ok(format!("{net}/{len}"))
        }
        Ok(std::net::IpAddr::V6(a)) => {
            if a.to_ipv4_mapped().is_some() {
                return Err(format!(
                    "{p:?}: IPv4-mapped addresses are not allowed, give the IPv4 CIDR"
                ));
            }
            if !(MIN_IPV6_PREFIX..=128).contains(&len) {
                return Err(format!(
                    "{p:?}: an IPv6 exemption must be a /{MIN_IPV6_PREFIX} or narrower"
                ));
            }
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let net = std::net::Ipv6Addr::from(u128::from(a) & mask);
            if net != a {
                return Err(format!(
                    "{p:?} has host bits set: did you mean {net}/{len}?"
                ));
            }
            Ok(format!("{net}/{len}"))
        }
        Err(_) => Err(format!("{p:?}: bad address")),
    }
}

/// One security group rule, flattened (a permission with several ranges
/// is several rules).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
struct Rule {
    egress: bool,
    protocol: String,
    from: Option<i32>,
    to: Option<i32>,
    peer: Peer,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
enum Peer {
    V4(String),
    V6(String),
    Group(String),
    PrefixList(String),
}

impl Rule {
    fn all(egress: bool, peer: Peer) -> Rule {
        Rule {
            egress,
            protocol: "-1".into(),
            from: None,
            to: None,
            peer,
        }
    }

    fn tcp(egress: bool, port: i32, peer: &str) -> Rule {
        let peer = if peer.starts_with("sg-") {
            Peer::Group(peer.to_string())
        } else if peer.starts_with("pl-") {
            Peer::PrefixList(peer.to_string())
        } else if peer.contains(':') {
            Peer::V6(peer.to_string())
        } else {
            Peer::V4(peer.to_string())
        };
        Rule {
            egress,
            protocol: "tcp".into(),
            from: Some(port),
            to: Some(port),
            peer,
        }
    }

    fn permission(&self) -> IpPermission {
        let mut b = IpPermission::builder().ip_protocol(&self.protocol);
        if self.protocol != "-1" {
            b = b.set_from_port(self.from).set_to_port(self.to);
        }
        match &self.peer {
            Peer::V4(c) => b = b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
            Peer::V6(c) => b = b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
            Peer::Group(g) => {
                b = b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build())
            }
            Peer::PrefixList(p) => {
                b = b.prefix_list_ids(PrefixListId::builder().prefix_list_id(p).build())
            }
        }
        b.build()
    }

    fn describe(&self) -> String {
        let ports = match (self.protocol.as_str(), self.from) {
            ("-1", _) => "all traffic".to_string(),
            (p, Some(f)) => format!("{p}/{f}"),
            (p, None) => p.to_string(),
        };
        let peer = match &self.peer {
            Peer::V4(c) | Peer::V6(c) | Peer::Group(c) | Peer::PrefixList(c) => c,
        };
        format!(
            "{} {ports} {} {peer}",
            if self.egress { "egress" } else { "ingress" },
            if self.egress { "to" } else { "from" }
        )
    }
}

fn rules_of(g: &SecurityGroup) -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    for (egress, perms) in [
        (false, g.ip_permissions()),
        (true, g.ip_permissions_egress()),
    ] {
        for p in perms {
            let protocol = p.ip_protocol().unwrap_or("-1").to_string();
            let (from, to) = if protocol == "-1" {
                (None, None)
            } else {
                (p.from_port(), p.to_port())
            };
            let mk = |peer| Rule {
                egress,
                protocol: protocol.clone(),
                from,
                to,
                peer,
            };
            for r in p.ip_ranges() {
                out.insert(mk(Peer::V4(r.cidr_ip().unwrap_or_default().to_string())));
            }
            for r in p.ipv6_ranges() {
                out.insert(mk(Peer::V6(r.cidr_ipv6().unwrap_or_default().to_string())));
            }
            for r in p.user_id_group_pairs() {
                out.insert(mk(Peer::Group(
                    r.group_id().unwrap_or_default().to_string(),
                )));
            }
            for r in p.prefix_list_ids() {
                out.insert(mk(Peer::PrefixList(
                    r.prefix_list_id().unwrap_or_default().to_string(),
                )));
            }
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Isolation(Vec<Exemption>),
    /// The allow-all group of one case, deleted after its moves.
    Transition(String),
}

impl Role {
    fn name(&self) -> String {
        match self {
            Role::Isolation(ex) if ex.is_empty() => ISOLATION_GROUP_NAME.to_string(),
            Role::Isolation(ex) => {
                // One group per distinct set of exemptions, named by it.
                let mut parts: Vec<String> = ex.iter().map(|e| format!("{e:?}")).collect();
                parts.sort();
                let digest = firebreak_forensics::hash::sha256_bytes(parts.join("\n").as_bytes());
                format!("{ISOLATION_GROUP_NAME}-{}", &digest.sha256[..8])
            }
            Role::Transition(case) => format!("{TRANSITION_GROUP_NAME}-{case}"),
        }
    }
    fn tag(&self) -> &'static str {
        match self {
            Role::Isolation(_) => "isolation",
            Role::Transition(_) => "transition",
        }
    }
    fn description(&self) -> String {
        match self {
            Role::Isolation(ex) if ex.is_empty() => "firebreak isolation: no traffic in or out".into(),
            Role::Isolation(ex) => format!(
                "firebreak isolation: no traffic but investigator access ({})",
                ex.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ")
            ),
            Role::Transition(case) => format!(
                "firebreak transition for case {case}: allows all traffic so tracked connections become untracked before isolation; deleted after"
            ),
        }
    }
    /// The rules the group must have, no more, no less.
    fn wanted(&self) -> BTreeSet<Rule> {
        match self {
            Role::Transition(_) => [
                Rule::all(false, Peer::V4("0.0.0.0/0".into())),
                Rule::all(false, Peer::V6("::/0".into())),
                Rule::all(true, Peer::V4("0.0.0.0/0".into())),
                Rule::all(true, Peer::V6("::/0".into())),
            ]
            .into_iter()
            .collect(),
            Role::Isolation(ex) => ex
                .iter()
                .map(|e| match e {
                    Exemption::SshFrom(p) => Rule::tcp(false, 22, p),
                    Exemption::HttpsTo(p) => Rule::tcp(true, 443, p),
                })
                .collect(),
        }
    }
}

/// Finds firebreak's group for `role` in `vpc` by its tags (not by name:
/// anyone may create a group with our name, and it would not be ours).
async fn find_group(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
    role: &Role,
) -> Result<Option<SecurityGroup>, StepError> {
    let name = role.name();
    log.read(
        "ec2:DescribeSecurityGroups",
        format!("Filters=[vpc-id={vpc}, tag:{}={name}]", tags::GROUP),
    );
    let out = ctx
        .aws
        .ec2
        .describe_security_groups()
        .filters(filter("vpc-id", [vpc]))
        .filters(filter(&format!("tag:{}", tags::GROUP), [name.as_str()]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeSecurityGroups", e))?;
    // Oldest first, so that concurrent runs settle on the same group.
    let mut groups: Vec<SecurityGroup> = out.security_groups().to_vec();
    groups.sort_by(|a, b| a.group_id().cmp(&b.group_id()));
    Ok(groups.into_iter().next())
}

async fn read_group(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &str,
) -> Result<SecurityGroup, StepError> {
    log.read("ec2:DescribeSecurityGroups", format!("GroupIds=[{id}]"));
    let out = ctx
        .aws
        .ec2
        .describe_security_groups()
        .group_ids(id)
        .send()
        .await
        .map_err(|e| aws_error(&format!("ec2:DescribeSecurityGroups {id}"), e))?;
    out.security_groups().first().cloned().ok_or_else(|| {
        StepError::new(
            ErrorName::ResourceNotFound,
            format!("security group {id} vanished"),
        )
    })
}

fn group_tags(role: &Role, case: &str) -> TagSpecification {
    let name = role.name();
    TagSpecification::builder()
        .resource_type(ResourceType::SecurityGroup)
        .tags(tag(tags::ROLE, role.tag()))
        .tags(tag(tags::GROUP, &name))
        .tags(tag("Name", &name))
        .tags(tag(tags::CASE, case))
        .build()
}

/// Revokes or authorizes one direction's rules.
async fn change_rules(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &str,
    rules: &[&Rule],
    authorize: bool,
    egress: bool,
) -> Result<(), StepError> {
    if rules.is_empty() {
        return Ok(());
    }
    let perms: Vec<IpPermission> = rules.iter().map(|r| r.permission()).collect();
    let what: Vec<String> = rules.iter().map(|r| r.describe()).collect();
    let params = format!("GroupId={id}, {}", what.join("; "));
    let ec2 = &ctx.aws.ec2;
    // One macro for the four calls: their builders and error types differ,
    // their handling does not.
    macro_rules! send {
        ($req:expr, $action:expr) => {{
            let req = $req;
            if ctx.is_dry_run() {
                log.dry_run($action, params, req.dry_run(true).send().await)
            } else {
                match req.send().await {
                    Ok(_) => {
                        log.done($action, params);
                        Ok(())
                    }
                    // Another run (another instance in the VPC) got there
                    // first: the rule is already as wanted.
                    Err(e)
                        if matches!(
                            error_code(&e).as_deref(),
                            Some("InvalidPermission.Duplicate")
                                | Some("InvalidPermission.NotFound")
                        ) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(aws_error(&format!("{} {id}", $action), e)),
                }
            }
        }};
    }
    match (authorize, egress) {
        (true, false) => send!(
            ec2.authorize_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(perms)),
            "ec2:AuthorizeSecurityGroupIngress"
        ),
        (true, true) => send!(
            ec2.authorize_security_group_egress()
                .group_id(id)
                .set_ip_permissions(Some(perms)),
            "ec2:AuthorizeSecurityGroupEgress"
        ),
        (false, false) => send!(
            ec2.revoke_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(perms)),
            "ec2:RevokeSecurityGroupIngress"
        ),
        (false, true) => send!(
            ec2.revoke_security_group_egress()
                .group_id(id)
                .set_ip_permissions(Some(perms)),
            "ec2:RevokeSecurityGroupEgress"
        ),
    }
}

/// Finds or makes the group for `role` in `vpc` and brings its rules to
/// exactly the wanted set, reading back to verify. Returns the group id and
/// whether it was created.
async fn ensure_group(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
    case: &str,
    role: &Role,
    wanted: &BTreeSet<Rule>,
) -> Result<(String, bool), StepError> {
    let ec2 = &ctx.aws.ec2;
    let name = role.name();
    let (group, created) = match find_group(ctx, log, vpc, role).await? {
        Some(g) => (g, false),
        None => {
            let params = format!(
                "GroupName={name}, VpcId={vpc}, Tags=[{}={}]",
                tags::ROLE,
                role.tag()
            );
            let req = ec2
                .create_security_group()
                .group_name(&name)
                .description(role.description())
                .vpc_id(vpc)
                .tag_specifications(group_tags(role, case));
            if ctx.is_dry_run() {
                log.dry_run(
                    "ec2:CreateSecurityGroup",
                    params,
                    req.dry_run(true).send().await,
                )?;
                let why = "the group does not exist yet: the CreateSecurityGroup above makes it";
                let default_egress = [Rule::all(true, Peer::V4("0.0.0.0/0".into()))];
                for r in &default_egress {
                    if !wanted.contains(r) {
                        log.not_checked(
                            "ec2:RevokeSecurityGroupEgress",
                            format!("new {name}: {}", r.describe()),
                            why,
                        );
                    }
                }
                for r in wanted.iter().filter(|r| !default_egress.contains(r)) {
                    let action = if r.egress {
                        "ec2:AuthorizeSecurityGroupEgress"
                    } else {
                        "ec2:AuthorizeSecurityGroupIngress"
                    };
                    log.not_checked(action, format!("new {name}: {}", r.describe()), why);
                }
                return Ok((format!("{PLANNED_GROUP} {name} in {vpc}"), true));
            }
            match req.send().await {
                Ok(out) => {
                    log.done("ec2:CreateSecurityGroup", params);
                    let id = required("ec2:CreateSecurityGroup", "a GroupId", out.group_id())?;
                    (read_group(ctx, log, &id).await?, true)
                }
                Err(e) if error_code(&e).as_deref() == Some("InvalidGroup.Duplicate") => {
                    // A concurrent run made ours (found by tag), or a group
                    // that is not ours holds the name: then ours gets a
                    // name of its own.
                    match find_group(ctx, log, vpc, role).await? {
                        Some(g) => (g, false),
                        None => {
                            let unique =
                                format!("{name}-{:06x}", rand::random::<u32>() & 0x00ff_ffff);
                            let params = format!("GroupName={unique}, VpcId={vpc} ({name} is taken by a group that is not firebreak's)");
                            let out = ec2
                                .create_security_group()
                                .group_name(&unique)
                                .description(role.description())
                                .vpc_id(vpc)
                                .tag_specifications(group_tags(role, case))
                                .send()
                                .await
                                .map_err(|e| {
                                    aws_error(
                                        &format!("ec2:CreateSecurityGroup {unique} in {vpc}"),
                                        e,
                                    )
                                })?;
                            log.done("ec2:CreateSecurityGroup", params);
                            let id =
                                required("ec2:CreateSecurityGroup", "a GroupId", out.group_id())?;
                            (read_group(ctx, log, &id).await?, true)
                        }
                    }
                }
                Err(e) => {
                    return Err(aws_error(
                        &format!("ec2:CreateSecurityGroup {name} in {vpc}"),
                        e,
                    ))
                }
            }
        }
    };
    let id = required(
        &format!("ec2:DescribeSecurityGroups of firebreak's group {name} in {vpc}"),
        "a GroupId",
        group.group_id(),
    )?;
    let have = rules_of(&group);
    // Revoke before authorizing: an isolation group never has more than
    // it should, even for a moment.
    for egress in [false, true] {
        let extra: Vec<&Rule> = have
            .difference(wanted)
            .filter(|r| r.egress == egress)
            .collect();
        change_rules(ctx, log, &id, &extra, false, egress).await?;
    }
    for egress in [false, true] {
        let missing: Vec<&Rule> = wanted
            .difference(&have)
            .filter(|r| r.egress == egress)
            .collect();
        change_rules(ctx, log, &id, &missing, true, egress).await?;
    }
    if !ctx.is_dry_run() {
        let now = rules_of(&read_group(ctx, log, &id).await?);
        if &now != wanted {
            let show = |s: &BTreeSet<Rule>| s.iter().map(Rule::describe).collect::<Vec<_>>();
            return Err(StepError::verification(format!(
                "group {id} ({name}) has rules [{}], expected [{}]",
                show(&now).join("; "),
                show(wanted).join("; ")
            )));
        }
    }
    Ok((id, created))
}

/// One interface of the instance, as listed now.
#[derive(Clone, Debug)]
struct Eni {
    id: String,
    vpc: String,
    groups: Vec<String>,
    /// `interface`, `trunk`, `branch`, ...
    kind: String,
    /// The trunk a branch interface (ECS awsvpc task, EKS pod with its own
    /// security groups) hangs off.
    trunk: Option<String>,
    /// A public IPv4 EC2 assigned (not an Elastic IP: those are taken
    /// away before isolation).
    public_ip: Option<String>,
}

fn eni_of(n: &NetworkInterface, trunk: Option<&str>) -> Option<Eni> {
    let assoc = n.association();
    // An Elastic IP has an allocation id; an address without one is
    // EC2's own, which cannot be removed and given back.
    let public_ip = assoc
        .filter(|a| a.allocation_id().is_none())
        .and_then(|a| a.public_ip())
        .map(str::to_string);
    Some(Eni {
        id: n.network_interface_id()?.to_string(),
        vpc: n.vpc_id().unwrap_or_default().to_string(),
        groups: n
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        kind: n
            .interface_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_else(|| "interface".into()),
        trunk: trunk.map(str::to_string),
        public_ip,
    })
}

async fn describe_enis(
    ctx: &StepContext,
    log: &StepLog<'_>,
    ids: &[String],
    trunk: Option<&str>,
) -> Result<Vec<Eni>, StepError> {
    log.read(
        "ec2:DescribeNetworkInterfaces",
        format!("NetworkInterfaceIds=[{}]", ids.join(", ")),
    );
    let out = ctx
        .aws
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?;
    Ok(out
        .network_interfaces()
        .iter()
        .filter_map(|n| eni_of(n, trunk))
        .collect())
}

/// The interfaces attached to the instance now (listed by attachment, so
/// a second listing finds those attached while the playbook runs) and
/// the branch interfaces of its trunks. A trunk whose branches cannot be
/// listed is returned with the reason.
async fn attached_interfaces(
    ctx: &StepContext,
    log: &StepLog<'_>,
    id: &InstanceId,
    known: &[String],
) -> Result<(Vec<Eni>, Vec<(String, String)>), StepError> {
    log.read(
        "ec2:DescribeNetworkInterfaces",
        format!("Filters=[attachment.instance-id={id}]"),
    );
    let mut enis: Vec<Eni> = Vec::new();
    let mut pages = ctx
        .aws
        .ec2
        .describe_network_interfaces()
        .filters(filter("attachment.instance-id", [id.as_str()]))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?;
        enis.extend(
            page.network_interfaces()
                .iter()
                .filter_map(|n| eni_of(n, None)),
        );
    }
    // What DescribeInstances showed but the filter did not (yet) return.
    let missing: Vec<String> = known
        .iter()
        .filter(|k| !enis.iter().any(|e| &e.id == *k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        enis.extend(describe_enis(ctx, log, &missing, None).await?);
    }
    let mut problems = Vec::new();
    let trunks: Vec<String> = enis
        .iter()
        .filter(|e| e.kind == "trunk")
        .map(|e| e.id.clone())
        .collect();
    for trunk in trunks {
        match branches_of(ctx, log, &trunk).await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => enis.extend(describe_enis(ctx, log, &ids, Some(&trunk)).await?),
            Err(e) => problems.push((
                trunk.clone(),
                format!("a trunk interface whose branch interfaces (ECS tasks, EKS pods with their own security groups) could not be listed ({e}): they are not isolated"),
            )),
        }
    }
    enis.sort_by(|a, b| a.id.cmp(&b.id));
    enis.dedup_by(|a, b| a.id == b.id);
    Ok((enis, problems))
}

/// The branch interfaces of a trunk interface.
async fn branches_of(
    ctx: &StepContext,
    log: &StepLog<'_>,
    trunk: &str,
) -> Result<Vec<String>, StepError> {
    log.read(
        "ec2:DescribeTrunkInterfaceAssociations",
        format!("Filters=[trunk-interface-association.trunk-interface-id={trunk}]"),
    );
    let out = ctx
        .aws
        .ec2
        .describe_trunk_interface_associations()
        .filters(filter(
            "trunk-interface-association.trunk-interface-id",
            [trunk],
        ))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeTrunkInterfaceAssociations", e))?;
    Ok(out
        .interface_associations()
        .iter()
        .filter_map(|a| a.branch_interface_id().map(str::to_string))
        .collect())
}

/// Firebreak's transition groups in a VPC (of any case): no interface is
/// ever put back on one.
async fn transition_groups(
    ctx: &StepContext,
    log: &StepLog<'_>,
    vpc: &str,
) -> Result<BTreeSet<String>, StepError> {
    log.read(
        "ec2:DescribeSecurityGroups",
        format!("Filters=[vpc-id={vpc}, tag:{}=transition]", tags::ROLE),
    );
    let out = ctx
        .aws
        .ec2
        .describe_security_groups()
        .filters(filter("vpc-id", [vpc]))
        .filters(filter(&format!("tag:{}", tags::ROLE), ["transition"]))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeSecurityGroups", e))?;
    Ok(out
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect())
}

/// One interface on its way to isolation.
#[derive(Clone, Debug, Serialize)]
struct Move {
    eni: String,
    vpc: String,
    /// Where it goes back if isolation fails: its groups before the case
    /// (from the stored record when there is one), never a transition
    /// group. None when they are unknown (a resumed run with no record
    /// found the interface on a transition group).
    previous: Option<Vec<String>>,
    /// Already on the allow-all group (a run that died between the moves).
    on_transition: bool,
}

/// What happened to the interfaces of one round.
#[derive(Default)]
struct Round {
    isolated: Vec<String>,
    failed: Vec<(String, String)>,
}

/// Moves each interface in two steps, each interface on its own: one that
/// cannot be moved is put back where it was and reported, the others go
/// on.
async fn move_interfaces(
    ctx: &StepContext,
    log: &StepLog<'_>,
    moves: &[Move],
    groups: &[VpcIsolationGroups],
) -> Round {
    let mut round = Round::default();
    // From the first move to the last, an interrupt waits: an interface
    // must never be left on the allow-all group.
    let _critical = ctx.interrupt.critical().await;
    let group_of = |vpc: &str| groups.iter().find(|g| g.vpc_id == vpc);
    let mut second: Vec<&Move> = Vec::new();
    for m in moves {
        if m.on_transition {
            second.push(m);
            continue;
        }
        let Some(tr) = group_of(&m.vpc).and_then(|g| g.transition_group_id.clone()) else {
            // Never sent to an empty group id: not moved at all.
            let why = format!("no transition group in {}: not moved", m.vpc);
            round.failed.push((m.eni.clone(), why));
            continue;
        };
        match set_groups(
            ctx,
            log,
            &m.eni,
            vec![tr],
            "first move: allow-all, connections become untracked",
        )
        .await
        {
            Ok(()) => second.push(m),
            // The change may have been made and only the answer lost: put
            // it back where it was.
            Err(e) => {
                let back = put_back(ctx, log, m).await;
                round.failed.push((m.eni.clone(), format!("{e}; {back}")));
            }
        }
    }
    if second.is_empty() {
        return round;
    }
    // Let the allow-all rules reach the interfaces' existing flows
    // before they are cut.
    tokio::time::sleep(TRANSITION_SETTLE).await;
    for m in second {
        let Some(iso) = group_of(&m.vpc).map(|g| g.isolation_group_id.clone()) else {
            let back = put_back(ctx, log, m).await;
            let why = format!("no isolation group in {}; {back}", m.vpc);
            round.failed.push((m.eni.clone(), why));
            continue;
        };
        match set_groups(
            ctx,
            log,
            &m.eni,
            vec![iso.clone()],
            "second move: no rules, traffic stops",
        )
        .await
        {
            Ok(()) => round.isolated.push(m.eni.clone()),
            Err(e) => {
                // Never leave it on the allow-all group.
                let back = put_back(ctx, log, m).await;
                round.failed.push((m.eni.clone(), format!("{e}; {back}")));
            }
        }
    }
    round
}

/// Puts one interface back on the groups it had before the case (never a
/// transition group); says what became of it.
async fn put_back(ctx: &StepContext, log: &StepLog<'_>, m: &Move) -> String {
    let Some(previous) = &m.previous else {
        return format!(
            "its groups before the case are unknown (no record): it may still be on the allow-all transition group; move {} by hand",
            m.eni
        );
    };
    match set_groups(
        ctx,
        log,
        &m.eni,
        previous.clone(),
        "undo the first move: isolation failed",
    )
    .await
    {
        Ok(()) => format!(
            "it was put back on its previous groups [{}]",
            previous.join(", ")
        ),
        Err(b) => format!(
            "putting it back on [{}] failed too ({b}): it may be on the allow-all transition group",
            previous.join(", ")
        ),
    }
}

/// Attempts to delete a transition group: in use for a moment after the
/// moves (EC2 applies them asynchronously), so retried with backoff.
const DELETE_ATTEMPTS: u32 = 6;

/// Deletes a case's transition group once nothing uses it. Returns why it
/// could not be, after retrying.
async fn delete_group(ctx: &StepContext, log: &StepLog<'_>, id: &str) -> Option<String> {
    let params = format!("GroupId={id} (the transition group: the interfaces have moved on)");
    let mut delay = std::time::Duration::from_secs(1);
    let mut last = String::new();
    for attempt in 1..=DELETE_ATTEMPTS {
        match ctx
            .aws
            .ec2
            .delete_security_group()
            .group_id(id)
            .send()
            .await
        {
            Ok(_) => {
                log.done("ec2:DeleteSecurityGroup", params);
                return None;
            }
            Err(e) if error_code(&e).as_deref() == Some("InvalidGroup.NotFound") => return None,
            Err(e) => {
                let retry = matches!(
                    error_code(&e).as_deref(),
                    Some("DependencyViolation") | Some("RequestLimitExceeded") | None
                );
                last = aws_error("ec2:DeleteSecurityGroup", e).to_string();
                if !retry || attempt == DELETE_ATTEMPTS {
                    break;
                }
                log.progress(&format!(
                    "the transition group {id} is still in use ({last}); retrying in {} s",
                    delay.as_secs()
                ));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(8));
            }
        }
    }
    Some(format!(
        "{id} (allows all traffic; no interface is on it) could not be deleted: {last}; delete it by hand"
    ))
}

/// Sets an interface's groups (the whole set, in one call).
async fn set_groups(
    ctx: &StepContext,
    log: &StepLog<'_>,
    eni: &str,
    groups: Vec<String>,
    why: &str,
) -> Result<(), StepError> {
    let params = format!(
        "NetworkInterfaceId={eni}, Groups=[{}] ({why})",
        groups.join(", ")
    );
    let req = ctx
        .aws
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(eni)
        .set_groups(Some(groups));
    req.send()
        .await
        .map_err(|e| aws_error(&format!("ec2:ModifyNetworkInterfaceAttribute {eni}"), e))?;
    log.done("ec2:ModifyNetworkInterfaceAttribute", params);
    Ok(())
}

/// Whether Route 53 Resolver query logging covers a VPC: the only record
/// of DNS from the instance, which neither groups nor ACLs stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsLogging {
    /// The VPC (`vpc-...`).
    pub vpc_id: String,
    /// None when it could not be read (the reason in `error`).
    pub logged: Option<bool>,
    /// The query-logging configurations associated with the VPC.
    pub configs: Vec<String>,
    /// Why the logging could not be read (None when it was).
    pub error: Option<String>,
}

async fn dns_logging(ctx: &StepContext, log: &StepLog<'_>, vpc: &str) -> DnsLogging {
    log.read(
        "route53resolver:ListResolverQueryLogConfigAssociations",
        format!("Filters=[ResourceId={vpc}]"),
    );
    let out = ctx
        .aws
        .route53resolver
        .list_resolver_query_log_config_associations()
        .filters(
            aws_sdk_route53resolver::types::Filter::builder()
                .name("ResourceId")
                .values(vpc)
                .build(),
        )
        .send()
        .await;
    match out {
        Ok(o) => {
            let configs: Vec<String> = o
                .resolver_query_log_config_associations()
                .iter()
                .filter(|a| {
                    matches!(
                        a.status().map(|s| s.as_str()),
                        Some("ACTIVE") | Some("CREATING")
                    )
                })
                .filter_map(|a| a.resolver_query_log_config_id().map(str::to_string))
                .collect();
            DnsLogging {
                vpc_id: vpc.into(),
                logged: Some(!configs.is_empty()),
                configs,
                error: None,
            }
        }
        Err(e) => DnsLogging {
            vpc_id: vpc.into(),
            logged: None,
            configs: Vec::new(),
            error: Some(
                aws_error("route53resolver:ListResolverQueryLogConfigAssociations", e).to_string(),
            ),
        },
    }
}

/// The isolation group of each VPC (shared by every case there). An
/// exemption group that cannot be made must not stop isolation: it falls
/// back to the group with no rules at all, and says so.
async fn isolation_groups(
    ctx: &StepContext,
    log: &StepLog<'_>,
    case: &str,
    vpcs: &[String],
    exemptions: &[Exemption],
) -> Result<(Vec<VpcIsolationGroups>, Option<String>), StepError> {
    let mut exemption_error = None;
    let mut groups = Vec::new();
    for vpc in vpcs {
        let wanted = Role::Isolation(exemptions.to_vec());
        let (iso, iso_new) =
            match ensure_group(ctx, log, vpc, case, &wanted, &wanted.wanted()).await {
                Ok(g) => g,
                Err(e) if !exemptions.is_empty() => {
                    log.progress(&format!(
                        "the exemption group failed ({e}); isolating with no exemption"
                    ));
                    exemption_error = Some(e.to_string());
                    let plain = Role::Isolation(Vec::new());
                    ensure_group(ctx, log, vpc, case, &plain, &plain.wanted()).await?
                }
                Err(e) => return Err(e),
            };
        groups.push(VpcIsolationGroups {
            vpc_id: vpc.clone(),
            isolation_group_id: iso.clone(),
            transition_group_id: None,
            created_group_ids: if iso_new { vec![iso] } else { Vec::new() },
        });
    }
    Ok((groups, exemption_error))
}

/// Makes (or finds) the case's transition group in each VPC that has an
/// interface to move.
async fn transition_for(
    ctx: &StepContext,
    log: &StepLog<'_>,
    case: &str,
    groups: &mut [VpcIsolationGroups],
    moves: &[Move],
) -> Result<(), StepError> {
    let transition = Role::Transition(case.to_string());
    for g in groups.iter_mut() {
        if g.transition_group_id.is_some() || !moves.iter().any(|m| m.vpc == g.vpc_id) {
            continue;
        }
        let (tr, tr_new) =
            ensure_group(ctx, log, &g.vpc_id, case, &transition, &transition.wanted()).await?;
        if tr_new {
            g.created_group_ids.push(tr.clone());
        }
        g.transition_group_id = Some(tr);
    }
    Ok(())
}

/// The dry run of the two moves: each checked with DryRun=true.
async fn plan_moves(
    ctx: &StepContext,
    log: &StepLog<'_>,
    moves: &[Move],
    current: &BTreeMap<String, Vec<String>>,
    groups: &[VpcIsolationGroups],
) -> Result<(), StepError> {
    for m in moves {
        let Some(g) = groups.iter().find(|g| g.vpc_id == m.vpc) else {
            continue;
        };
        let now = current.get(&m.eni).cloned().unwrap_or_default();
        let tr = g.transition_group_id.clone().unwrap_or_default();
        for (target, why) in [
            (&tr, "first move: allow-all, connections become untracked"),
            (
                &g.isolation_group_id,
                "second move: no rules, traffic stops",
            ),
        ] {
            // A planned group does not exist yet: the interface's current
            // groups check the same permission on it.
            let planned = target.starts_with(PLANNED_GROUP);
            let probe = if planned {
                now.clone()
            } else {
                vec![target.clone()]
            };
            let params = if planned {
                format!("NetworkInterfaceId={}, Groups=[{target}] ({why}; checked with the interface's current groups [{}])", m.eni, now.join(", "))
            } else {
                format!("NetworkInterfaceId={}, Groups=[{target}] ({why})", m.eni)
            };
            let result = ctx
                .aws
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(&m.eni)
                .set_groups(Some(probe))
                .dry_run(true)
                .send()
                .await;
            log.dry_run("ec2:ModifyNetworkInterfaceAttribute", params, result)?;
        }
    }
    for g in groups {
        if let Some(tr) = &g.transition_group_id {
            log.not_checked(
                "ec2:DeleteSecurityGroup",
                format!("GroupId={tr} (the transition group, once the interfaces have moved on)"),
                "the group is in use until the moves are done",
            );
        }
    }
    Ok(())
}

/// Rounds of listing and moving: the interfaces attached after the first
/// listing (container networking attaches them at any time) are found by
/// the next and isolated too.
const LISTING_ROUNDS: usize = 3;

/// Everything isolation learnt about the interfaces.
#[derive(Debug, Default, Serialize)]
struct Progress {
    interfaces: BTreeMap<String, IsolatedInterface>,
    failed: BTreeMap<String, String>,
    warnings: Vec<String>,
    changed: bool,
}

/// The moves one listing calls for, and the interfaces already isolated.
fn plan_round(
    enis: &[Eni],
    groups: &[VpcIsolationGroups],
    recorded: &BTreeMap<String, Vec<String>>,
    transitions: &BTreeMap<String, BTreeSet<String>>,
    p: &mut Progress,
    dry_run: bool,
) -> Vec<Move> {
    let mut moves = Vec::new();
    for e in enis {
        if p.interfaces.contains_key(&e.id) || p.failed.contains_key(&e.id) {
            continue;
        }
        let Some(iso) = groups
            .iter()
            .find(|g| g.vpc_id == e.vpc)
            .map(|g| g.isolation_group_id.clone())
        else {
            // Never moved to a group that does not exist (an empty id).
            p.failed.insert(
                e.id.clone(),
                format!("no isolation group in {}: not isolated", e.vpc),
            );
            continue;
        };
        let trs = transitions.get(&e.vpc).cloned().unwrap_or_default();
        let on_transition = e.groups.iter().any(|g| trs.contains(g));
        // The record's groups, never a live read that may show a
        // transition group; without a record the live groups minus any
        // transition group.
        let previous = recorded.get(&e.id).cloned().or_else(|| {
            let live: Vec<String> = e
                .groups
                .iter()
                .filter(|g| !trs.contains(*g))
                .cloned()
                .collect();
            (!live.is_empty()).then_some(live)
        });
        let moves_now = e.groups != [iso.clone()];
        if let Some(ip) = &e.public_ip {
            if moves_now {
                p.warnings.push(format!(
                    "{} keeps the public IPv4 {ip} EC2 assigned it (not an Elastic IP: removing it would lose it for good), reachable from the internet during the {} s allow-all moment",
                    e.id,
                    TRANSITION_SETTLE.as_secs()
                ));
            }
        }
        p.interfaces.insert(
            e.id.clone(),
            IsolatedInterface {
                network_interface_id: e.id.clone(),
                vpc_id: e.vpc.clone(),
                previous_group_ids: previous.clone().unwrap_or_default(),
                group_ids: e.groups.clone(),
                changed: moves_now && !dry_run,
                trunk_interface_id: e.trunk.clone(),
            },
        );
        if moves_now {
            moves.push(Move {
                eni: e.id.clone(),
                vpc: e.vpc.clone(),
                previous,
                on_transition,
            });
        }
    }
    moves
}

#[async_trait]
impl Step for IsolateNetwork {
    async fn run(ctx: &StepContext, input: IsolateInput) -> Result<IsolationOutput, StepError> {
        let (case, id) = InstanceRef {
            case_id: input.case_id.clone(),
            instance_id: input.instance_id.clone(),
        }
        .parse()?;
        let exemptions = input
            .exemptions
            .iter()
            .map(Exemption::canonical)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StepError::invalid_input)?;
        if let Some(b) = &input.evidence_bucket {
            super::parse_bucket(b)?;
        }
        let log = ctx.log(Self::NAME);
        let instance = describe_instance(ctx, &log, &id).await?;
        let known = interface_ids(&instance);
        let (enis, trunk_problems) = attached_interfaces(ctx, &log, &id, &known).await?;
        if enis.is_empty() {
            return Err(StepError::new(
                ErrorName::Unsupported,
                format!("instance {id} has no network interface in a VPC"),
            ));
        }
        let mut vpcs: Vec<String> = enis.iter().map(|e| e.vpc.clone()).collect();
        vpcs.sort();
        vpcs.dedup();
        if vpcs.iter().any(String::is_empty) {
            return Err(StepError::new(
                ErrorName::Unsupported,
                format!("an interface of {id} is not in a VPC"),
            ));
        }
        let mut p = Progress::default();
        for (trunk, why) in trunk_problems {
            p.failed.insert(trunk, why);
        }
        // The groups each interface had before the case, as recorded.
        let mut recorded: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(bucket) = &input.evidence_bucket {
            match load_record(ctx, &log, bucket, case.as_str(), id.as_str()).await {
                Ok(Some((r, _))) => {
                    for n in &r.record.network_interfaces {
                        recorded.insert(n.network_interface_id.clone(), n.security_group_ids.clone());
                    }
                }
                Ok(None) => {}
                Err(e) => p.warnings.push(format!(
                    "the case's record could not be read ({e}): previous groups come from the interfaces, transition groups left out"
                )),
            }
        }
        let (mut groups, exemption_error) =
            isolation_groups(ctx, &log, case.as_str(), &vpcs, &exemptions).await?;
        let mut transitions = BTreeMap::new();
        for vpc in &vpcs {
            transitions.insert(vpc.clone(), transition_groups(ctx, &log, vpc).await?);
        }
        p.changed = groups.iter().any(|g| !g.created_group_ids.is_empty());

        let w = World {
            id: &id,
            case: case.as_str(),
            vpcs: &vpcs,
            recorded: &recorded,
            transitions: &transitions,
        };
        isolate_rounds(ctx, &log, &w, enis, &mut groups, &mut p).await?;
        let mut transition_groups_left = Vec::new();
        if !ctx.is_dry_run() {
            // A transition group of this case that an earlier run left
            // (stopped after its moves, before the delete) goes too.
            let transition = Role::Transition(case.to_string());
            for g in groups
                .iter_mut()
                .filter(|g| g.transition_group_id.is_none())
            {
                if let Some(left) = find_group(ctx, &log, &g.vpc_id, &transition).await? {
                    g.transition_group_id = left.group_id().map(str::to_string);
                }
            }
            for g in &groups {
                if let Some(tr) = &g.transition_group_id {
                    transition_groups_left.extend(delete_group(ctx, &log, tr).await);
                }
            }
            verify_isolated(ctx, &log, &groups, &mut p).await?;
        }
        let mut dns = Vec::new();
        for vpc in &vpcs {
            dns.push(dns_logging(ctx, &log, vpc).await);
        }
        let exemptions_applied = exemption_error.is_none();
        let output = IsolationOutput {
            instance_id: id.to_string(),
            exemptions: if exemptions_applied {
                exemptions
            } else {
                Vec::new()
            },
            exemption_error,
            groups,
            interfaces: p.interfaces.into_values().collect(),
            transition_groups_left,
            warnings: p.warnings,
            dns_query_logging: dns,
            changed: p.changed,
            dry_run: ctx.is_dry_run(),
        };
        if !p.failed.is_empty() {
            return Err(StepError::new(
                ErrorName::PartiallyContained,
                format!(
                    "not isolated: {}; isolated: {}",
                    p.failed
                        .iter()
                        .map(|(e, why)| format!("{e}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                    if output.interfaces.is_empty() {
                        "none".to_string()
                    } else {
                        output
                            .interfaces
                            .iter()
                            .map(|i| i.network_interface_id.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            ));
        }
        Ok(output)
    }
}

/// What the rounds of listing and moving work from.
struct World<'a> {
    id: &'a InstanceId,
    case: &'a str,
    vpcs: &'a [String],
    recorded: &'a BTreeMap<String, Vec<String>>,
    transitions: &'a BTreeMap<String, BTreeSet<String>>,
}

/// Lists and moves, round after round, until a listing finds nothing new
/// (or the dry run has planned the first).
async fn isolate_rounds(
    ctx: &StepContext,
    log: &StepLog<'_>,
    w: &World<'_>,
    mut enis: Vec<Eni>,
    groups: &mut [VpcIsolationGroups],
    p: &mut Progress,
) -> Result<(), StepError> {
    for round in 0..LISTING_ROUNDS {
        if round > 0 {
            let (again, problems) = attached_interfaces(ctx, log, w.id, &[]).await?;
            for (trunk, why) in problems {
                p.failed.entry(trunk).or_insert(why);
            }
            let new_vpc = again.iter().find(|e| !w.vpcs.contains(&e.vpc));
            if let Some(e) = new_vpc {
                p.failed.insert(
                    e.id.clone(),
                    format!("attached while isolating, in {} where the instance had no interface: not isolated", e.vpc),
                );
            }
            enis = again
                .into_iter()
                .filter(|e| w.vpcs.contains(&e.vpc))
                .collect();
        }
        let moves = plan_round(
            &enis,
            groups,
            w.recorded,
            w.transitions,
            p,
            ctx.is_dry_run(),
        );
        if moves.is_empty() {
            if round > 0 {
                break;
            }
            continue;
        }
        transition_for(ctx, log, w.case, groups, &moves).await?;
        if ctx.is_dry_run() {
            let current: BTreeMap<String, Vec<String>> = enis
                .iter()
                .map(|e| (e.id.clone(), e.groups.clone()))
                .collect();
            plan_moves(ctx, log, &moves, &current, groups).await?;
            break;
        }
        let done = move_interfaces(ctx, log, &moves, groups).await;
        p.changed |= !done.isolated.is_empty() || !done.failed.is_empty();
        for (eni, why) in done.failed {
            p.interfaces.remove(&eni);
            p.failed.insert(eni, why);
        }
    }
    Ok(())
}

/// Reads every interface back: each must carry exactly the isolation
/// group of its VPC; one that does not is no longer counted as isolated.
async fn verify_isolated(
    ctx: &StepContext,
    log: &StepLog<'_>,
    groups: &[VpcIsolationGroups],
    p: &mut Progress,
) -> Result<(), StepError> {
    let ids: Vec<String> = p.interfaces.keys().cloned().collect();
    if ids.is_empty() {
        return Ok(());
    }
    let after = describe_enis(ctx, log, &ids, None).await?;
    for id in ids {
        let now = after
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.groups.clone())
            .unwrap_or_default();
        let Some(i) = p.interfaces.get_mut(&id) else {
            continue;
        };
        let want: Vec<String> = groups
            .iter()
            .find(|g| g.vpc_id == i.vpc_id)
            .map(|g| vec![g.isolation_group_id.clone()])
            .unwrap_or_default();
        i.group_ids = now.clone();
        if now != want {
            p.interfaces.remove(&id);
            p.failed.insert(
                id,
                format!(
                    "read back with groups [{}], expected [{}]",
                    now.join(", "),
                    want.join(", ")
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eni(id: &str, vpc: &str, groups: &[&str], public_ip: Option<&str>) -> Eni {
        Eni {
            id: id.into(),
            vpc: vpc.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            kind: "interface".into(),
            trunk: None,
            public_ip: public_ip.map(str::to_string),
        }
    }

    /// One listing of a resumed isolation: an interface on its own groups
    /// with EC2's public address (moved, warned about), one already
    /// isolated (kept), one left on the transition group by the run that
    /// died (moved on, its groups from the record), one on the transition
    /// group with no record (moved, previous groups unknown), a branch of a
    /// trunk, and one in a VPC with no isolation group (failed, never sent
    /// to an empty group id). Plus the isolation group's rules with
    /// exemptions.
    #[test]
    fn a_listing_is_planned_into_moves() {
        let groups = vec![VpcIsolationGroups {
            vpc_id: "vpc-1".into(),
            isolation_group_id: "sg-iso".into(),
            transition_group_id: Some("sg-transition".into()),
            created_group_ids: vec![],
        }];
        let mut branch = eni("eni-branch", "vpc-1", &["sg-pod"], None);
        branch.kind = "branch".into();
        branch.trunk = Some("eni-trunk".into());
        let enis = vec![
            eni(
                "eni-web",
                "vpc-1",
                &["sg-web", "sg-admin"],
                Some("198.51.100.7"),
            ),
            eni("eni-done", "vpc-1", &["sg-iso"], Some("198.51.100.8")),
            eni("eni-resumed", "vpc-1", &["sg-transition"], None),
            eni("eni-unknown", "vpc-1", &["sg-transition"], None),
            branch,
            eni("eni-elsewhere", "vpc-2", &["sg-other"], None),
        ];
        let recorded = [("eni-resumed".to_string(), vec!["sg-db".to_string()])].into();
        let transitions = [("vpc-1".to_string(), ["sg-transition".to_string()].into())].into();
        let mut p = Progress::default();
        let moves = plan_round(&enis, &groups, &recorded, &transitions, &mut p, false);
        let again = plan_round(&enis, &groups, &recorded, &transitions, &mut p, false);
        assert!(again.is_empty(), "a second listing moves nothing twice");
        let rules = Role::Isolation(vec![
            Exemption::SshFrom("203.0.113.0/24".into()),
            Exemption::HttpsTo("pl-63a5400a".into()),
        ])
        .wanted();
        insta::assert_json_snapshot!((moves, p, rules));
    }

    #[test]
    fn rules_round_trip_through_permissions() {
        let wanted = Role::Transition("c".into()).wanted();
        let g = SecurityGroup::builder()
            .set_ip_permissions(Some(
                wanted
                    .iter()
                    .filter(|r| !r.egress)
                    .map(Rule::permission)
                    .collect(),
            ))
            .set_ip_permissions_egress(Some(
                wanted
                    .iter()
                    .filter(|r| r.egress)
                    .map(Rule::permission)
                    .collect(),
            ))
            .build();
        assert_eq!(rules_of(&g), wanted);
    }

    #[test]
    fn exemptions_are_narrow_and_name_their_group() {
        assert!(Exemption::SshFrom("203.0.113.0/24".into())
            .validate()
            .is_ok());
        assert!(Exemption::HttpsTo("sg-0123abcd".into()).validate().is_ok());
        assert!(Exemption::SshFrom("0.0.0.0/0".into()).validate().is_err());
        assert!(Exemption::SshFrom("::/0".into()).validate().is_err());
        assert!(Exemption::SshFrom("example.com".into()).validate().is_err());
        assert!(Exemption::SshFrom("0.0.0.0/1".into()).validate().is_err());
        assert!(Exemption::SshFrom("203.0.113.5/24".into())
            .validate()
            .unwrap_err()
            .contains("did you mean 203.0.113.0/24"));
        assert!(Exemption::SshFrom("::ffff:0.0.0.0/96".into())
            .validate()
            .is_err());
        assert_eq!(
            Exemption::SshFrom("2001:DB8::/32".into())
                .canonical()
                .unwrap(),
            Exemption::SshFrom("2001:db8::/32".into())
        );
        assert!(Exemption::HttpsTo("pl-63a5400a".into()).validate().is_ok());
        assert_eq!(Role::Isolation(vec![]).name(), "firebreak-isolation");
        let with = Role::Isolation(vec![Exemption::SshFrom("203.0.113.0/24".into())]);
        assert!(with.name().starts_with("firebreak-isolation-"));
        assert_eq!(with.wanted().len(), 1);
    }
}
