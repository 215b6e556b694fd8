//! Containment without holes (issue 11): the network-ACL cut, every
//! interface, a resumed isolation, public paths before the allow-all
//! moment, credentials at once and at scale, release order, Auto Scaling
//! under concurrency, load balancers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, PortRange, RuleAction};
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use chrono::Utc;
use firebreak_playbooks::report::Containment;
use firebreak_steps::containment::iam::denies::MANAGED_POLICY_MAX_CHARS;
use firebreak_steps::containment::iam::policies::read_role;
use firebreak_steps::{AwsClients, Registry, StepContext, StepRunner};
use firebreak_workflows::exec::{TaskCall, TaskFailure, TaskHandler};
use firebreak_workflows::step::StepPayload;
use serde_json::{json, Value};

use crate::faults::{
    case_file, context, faulty_clients_counted, intercepted_clients, run_contain, Calls, Fault,
    Rendezvous,
};
use crate::support::{aws_state, decoy, evidence_bucket, firebreak, s, sdk_config, stderr, stdout};

async fn run_step(ctx: &StepContext, step: &str, input: Value) -> Result<Value, String> {
    Registry::standard()
        .dispatch(
            ctx,
            StepPayload {
                step: step.into(),
                input,
                account: None,
            },
        )
        .await
        .map_err(|e| format!("{}: {}", e.name.as_str(), e.message))
}

fn vpc_filter(d: &Value) -> Filter {
    Filter::builder()
        .name("vpc-id")
        .values(s(d, "vpc_id"))
        .build()
}

/// A subnet of the decoy's VPC with an ACL of its own that allows all
/// (as the default one does), returned as (subnet, acl).
async fn subnet_with_acl(ec2: &aws_sdk_ec2::Client, d: &Value, cidr: &str) -> (String, String) {
    let subnet = ec2
        .create_subnet()
        .vpc_id(s(d, "vpc_id"))
        .cidr_block(cidr)
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let acl = ec2
        .create_network_acl()
        .vpc_id(s(d, "vpc_id"))
        .send()
        .await
        .unwrap()
        .network_acl()
        .unwrap()
        .network_acl_id()
        .unwrap()
        .to_string();
    for egress in [false, true] {
        ec2.create_network_acl_entry()
            .network_acl_id(&acl)
            .rule_number(100)
            .protocol("-1")
            .rule_action(RuleAction::Allow)
            .egress(egress)
            .cidr_block("0.0.0.0/0")
            .send()
            .await
            .unwrap();
        ec2.create_network_acl_entry()
            .network_acl_id(&acl)
            .rule_number(101)
            .protocol("-1")
            .rule_action(RuleAction::Allow)
            .egress(egress)
            .ipv6_cidr_block("::/0")
            .send()
            .await
            .unwrap();
    }
    // Move the subnet from the default ACL to its own.
    let assoc = ec2
        .describe_network_acls()
        .filters(
            Filter::builder()
                .name("association.subnet-id")
                .values(&subnet)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let assoc_id = assoc.network_acls()[0]
        .associations()
        .iter()
        .find(|a| a.subnet_id() == Some(subnet.as_str()))
        .and_then(|a| a.network_acl_association_id())
        .unwrap()
        .to_string();
    ec2.replace_network_acl_association()
        .association_id(assoc_id)
        .network_acl_id(&acl)
        .send()
        .await
        .unwrap();
    (subnet, acl)
}

/// The entries of an ACL as `N in|out allow|deny PROTO CIDR PORTS`.
async fn acl_entries(ec2: &aws_sdk_ec2::Client, acl: &str) -> Vec<String> {
    let out = ec2
        .describe_network_acls()
        .network_acl_ids(acl)
        .send()
        .await
        .unwrap();
    let v: Vec<String> = out.network_acls()[0]
        .entries()
        .iter()
        .map(|e| {
            let dir = if e.egress().unwrap_or(false) {
                "out"
            } else {
                "in"
            };
            let act = match e.rule_action() {
                Some(RuleAction::Allow) => "allow",
                _ => "deny",
            };
            let ports = e
                .port_range()
                .map(|p| format!(" {}-{}", p.from().unwrap_or(0), p.to().unwrap_or(0)))
                .unwrap_or_default();
            format!(
                "{} {dir} {act} {} {}{ports}",
                e.rule_number().unwrap_or(0),
                e.protocol().unwrap_or_default(),
                e.cidr_block().or(e.ipv6_cidr_block()).unwrap_or_default()
            )
        })
        .collect();
    v
}

/// The instance's addresses as firebreak names them (/32, /128).
async fn addresses(ec2: &aws_sdk_ec2::Client, instance: &str) -> Vec<String> {
    let out = ec2
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(instance)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut v = Vec::new();
    for n in out.network_interfaces() {
        for p in n.private_ip_addresses() {
            v.push(format!("{}/32", p.private_ip_address().unwrap()));
        }
        for a in n.ipv6_addresses() {
            v.push(format!("{}/128", a.ipv6_address().unwrap()));
        }
    }
    v.sort();
    v
}

#[tokio::test]
async fn sandbox_the_acl_cut_denies_the_instance_where_its_packets_cross_and_release_removes_exactly_it(
) {
    // GIVEN a decoy (interfaces in subnets A and B, served by the default
    // ACL; IPv6 on the first; a secondary address on the second), a subnet
    // C with its own ACL (a Transit Gateway attachment's, say), and a
    // subnet D with its own ACL holding the SSM endpoints' interface and a
    // NAT gateway; DNS query logging on for the VPC
    let d = decoy();
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let enis: Vec<String> = serde_json::from_value(d["network_interface_ids"].clone()).unwrap();
    ec2.assign_private_ip_addresses()
        .network_interface_id(&enis[1])
        .secondary_private_ip_address_count(1)
        .send()
        .await
        .unwrap();
    let (_, acl_c) = subnet_with_acl(&ec2, &d, "10.99.3.0/24").await;
    let (subnet_d, acl_d) = subnet_with_acl(&ec2, &d, "10.99.4.0/24").await;
    let endpoints = ec2
        .create_security_group()
        .group_name("it-ssm-endpoints")
        .description("SSM endpoints")
        .vpc_id(s(&d, "vpc_id"))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    ec2.create_network_interface()
        .subnet_id(&subnet_d)
        .groups(&endpoints)
        .send()
        .await
        .unwrap();
    let eip = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap();
    let nat = ec2
        .create_nat_gateway()
        .subnet_id(&subnet_d)
        .allocation_id(eip.allocation_id().unwrap())
        .send()
        .await
        .unwrap()
        .nat_gateway()
        .unwrap()
        .nat_gateway_id()
        .unwrap()
        .to_string();
    let r53 = aws_sdk_route53resolver::Client::new(&config);
    let qlc = r53
        .create_resolver_query_log_config()
        .name(format!("it-{}", s(&d, "vpc_id")))
        .destination_arn("arn:aws:s3:::it-dns-logs")
        .creator_request_id(s(&d, "vpc_id"))
        .send()
        .await
        .unwrap()
        .resolver_query_log_config()
        .unwrap()
        .id()
        .unwrap()
        .to_string();
    r53.associate_resolver_query_log_config()
        .resolver_query_log_config_id(&qlc)
        .resource_id(s(&d, "vpc_id"))
        .send()
        .await
        .unwrap();
    let acls = ec2
        .describe_network_acls()
        .filters(vpc_filter(&d))
        .send()
        .await
        .unwrap();
    let acl_ab = acls
        .network_acls()
        .iter()
        .find(|a| a.is_default() == Some(true))
        .and_then(|a| a.network_acl_id())
        .unwrap()
        .to_string();
    let before = aws_state(&config, &d).await;
    let mut before_entries = std::collections::BTreeMap::new();
    for acl in [&acl_ab, &acl_c, &acl_d] {
        before_entries.insert(acl.clone(), acl_entries(&ec2, acl).await);
    }
    let instance = s(&d, "instance_id");
    let addrs = addresses(&ec2, &instance).await;
    assert_eq!(addrs.len(), 4, "{addrs:?}");

    // WHEN contained with HTTPS kept open to the endpoints
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-nacl",
        "--allow-https-to",
        &endpoints,
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    // THEN every ACL serving a subnet the instance's packets can cross
    // into holds, ahead of its own rules (all kept), a deny in and out for
    // each of its addresses, IPv4 (secondary too) and IPv6, and nothing
    // else; the endpoints' ACL also holds, ahead of the denies, the allows
    // the exemption needs (HTTPS in from each address, the replies out to
    // its ephemeral ports)
    let n = addrs.len() as i32;
    let denies = |first: i32| -> Vec<String> {
        let mut v = Vec::new();
        for dir in ["in", "out"] {
            for (i, a) in addrs.iter().enumerate() {
                let k = first + i as i32;
                v.push(format!("{k} {dir} deny -1 {a}"));
            }
        }
        v
    };
    let mut https = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let k = 100 - 2 * n + i as i32;
        https.push(format!("{k} in allow 6 {a} 443-443"));
        https.push(format!("{k} out allow 6 {a} 1024-65535"));
    }
    for (acl, wanted) in [
        (&acl_ab, denies(100 - n)),
        (&acl_c, denies(100 - n)),
        (&acl_d, [denies(100 - n), https].concat()),
    ] {
        let was = &before_entries[acl];
        let now = acl_entries(&ec2, acl).await;
        assert!(
            was.iter().all(|e| now.contains(e)),
            "{acl}: a rule of its own went"
        );
        let mut added: Vec<String> = now.into_iter().filter(|e| !was.contains(e)).collect();
        added.sort();
        let mut wanted = wanted;
        wanted.sort();
        assert_eq!(added, wanted, "{acl}");
    }
    // AND the summary warns that the NAT gateway sharing the endpoints'
    // ACL keeps such flows
    let warnings = report["network_acls"]["warnings"].to_string();
    assert!(
        warnings.contains(&nat) && warnings.contains(&acl_d),
        "{warnings}"
    );
    // AND the case records the entries, and the summary reports DNS query
    // logging on for the VPC
    assert!(report["network_acls"]["record_location"]
        .as_str()
        .unwrap()
        .contains("cases/it-nacl/network-acl-cut/"));
    assert_eq!(
        report["isolation"]["dns_query_logging"][0]["logged"], true,
        "{report:#}"
    );
    assert_eq!(
        report["isolation"]["dns_query_logging"][0]["configs"],
        json!([qlc])
    );

    // WHEN released
    let out = firebreak(&[
        "release",
        "--instance",
        &instance,
        "--case",
        "it-nacl",
        "--remove-credential-deny",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // THEN every ACL holds exactly its entries from before
    let after = aws_state(&config, &d).await;
    assert_eq!(after["network_acl_entries"], before["network_acl_entries"]);
    assert_eq!(after, before);
}

/// The ACL entries of the decoy's VPC, as `aws_state` reads them.
async fn vpc_acl_entries(d: &Value) -> Value {
    aws_state(&sdk_config().await, d).await["network_acl_entries"].clone()
}

#[tokio::test]
async fn sandbox_an_acl_without_room_is_left_whole_and_named_and_a_raised_limit_is_used() {
    // GIVEN a subnet whose ACL holds 19 inbound rules: no room for the
    // instance's three addresses under AWS's default 20
    let d = decoy();
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let (_, acl_c) = subnet_with_acl(&ec2, &d, "10.99.3.0/24").await;
    for k in 0..17 {
        ec2.create_network_acl_entry()
            .network_acl_id(&acl_c)
            .rule_number(200 + k)
            .protocol("6")
            .rule_action(RuleAction::Deny)
            .egress(false)
            .cidr_block(format!("192.0.2.{k}/32"))
            .port_range(PortRange::builder().from(23).to(23).build())
            .send()
            .await
            .unwrap();
    }
    let full_before = acl_entries(&ec2, &acl_c).await;
    let instance = s(&d, "instance_id");
    // WHEN contained
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-nacl-full",
        "--output",
        "json",
        "-q",
    ]);
    // THEN containment is partial (exit 3), the failure names the ACL and
    // the limit, that ACL is exactly as it was (never half-written), and
    // the other ACL is cut
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failure = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["step"] == "cut_network_acls")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(failure["error"], "Firebreak.PartiallyContained");
    let cause = failure["cause"].as_str().unwrap();
    assert!(
        cause.contains(&acl_c) && cause.contains("limit of 20"),
        "{cause}"
    );
    assert_eq!(acl_entries(&ec2, &acl_c).await, full_before);
    let default_acl = ec2
        .describe_network_acls()
        .filters(vpc_filter(&d))
        .filters(Filter::builder().name("default").values("true").build())
        .send()
        .await
        .unwrap()
        .network_acls()[0]
        .network_acl_id()
        .unwrap()
        .to_string();
    let cut = acl_entries(&ec2, &default_acl).await;
    assert_eq!(
        cut.iter()
            .filter(|e| e.contains(" deny -1 ") && !e.starts_with("32767 "))
            .count(),
        6,
        "{cut:?}"
    );
    // WHEN run again with the account's raised quota given
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-nacl-full",
        "--nacl-rule-limit",
        "40",
        "--output",
        "json",
        "-q",
    ]);
    // THEN that ACL is cut too
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    let now = acl_entries(&ec2, &acl_c).await;
    assert_eq!(now.len(), full_before.len() + 6, "{now:?}");
}

#[tokio::test]
async fn sandbox_no_nacl_cut_leaves_every_acl_alone_and_the_summary_says_dns_is_not_logged() {
    // GIVEN a decoy in a VPC without DNS query logging
    let d = decoy();
    let before = vpc_acl_entries(&d).await;
    // WHEN contained with --no-nacl-cut
    let out = firebreak(&[
        "respond",
        "--instance",
        &s(&d, "instance_id"),
        "--case",
        "it-no-nacl",
        "--no-nacl-cut",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    // THEN no ACL changed, and the summary says DNS goes unrecorded
    assert_eq!(vpc_acl_entries(&d).await, before);
    let summary = stdout(&out);
    assert!(!summary.contains("network ACLs cut"), "{summary}");
    assert!(
        summary.contains(&format!(
            "DNS: no Route 53 Resolver query logging for {}",
            s(&d, "vpc_id")
        )),
        "{summary}"
    );
}

/// Attaches a new interface to the instance when a given step starts: as
/// container networking would, while the playbook runs.
struct AttachDuring {
    step: &'static str,
    instance: String,
    subnet: String,
    group: String,
    ec2: aws_sdk_ec2::Client,
    attached: std::sync::Mutex<Option<String>>,
    inner: StepRunner,
}

#[async_trait]
impl TaskHandler for AttachDuring {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        let step = call.input["step"].as_str().unwrap_or_default().to_string();
        let first = step == self.step && self.attached.lock().unwrap().is_none();
        if first {
            let eni = self
                .ec2
                .create_network_interface()
                .subnet_id(&self.subnet)
                .groups(&self.group)
                .send()
                .await
                .unwrap()
                .network_interface()
                .unwrap()
                .network_interface_id()
                .unwrap()
                .to_string();
            self.ec2
                .attach_network_interface()
                .network_interface_id(&eni)
                .instance_id(&self.instance)
                .device_index(2)
                .send()
                .await
                .unwrap();
            *self.attached.lock().unwrap() = Some(eni);
        }
        self.inner.invoke(call).await
    }
}

#[tokio::test]
async fn sandbox_an_interface_attached_while_the_playbook_runs_is_isolated_before_tagging() {
    // GIVEN an interface attached to the instance after isolation (when
    // the credentials step starts)
    let d = decoy();
    let config = sdk_config().await;
    let handler = AttachDuring {
        step: "revoke_instance_credentials",
        instance: s(&d, "instance_id"),
        subnet: s(&d, "subnet_id"),
        group: s(&d, "security_group_id"),
        ec2: aws_sdk_ec2::Client::new(&config),
        attached: std::sync::Mutex::new(None),
        inner: StepRunner::new(
            Arc::new(Registry::standard()),
            context(AwsClients::new(&config)),
        ),
    };
    let attached = Arc::new(handler);
    let case = case_file(&d, "it-late-eni");
    // WHEN contained
    let report = run_contain(&case, ArcHandler(attached.clone())).await;
    // THEN containment is complete and the new interface is on the
    // isolation group, reported by the second look
    assert_eq!(
        report.containment,
        Containment::Complete,
        "{:#?}",
        report.failures
    );
    let eni = attached.attached.lock().unwrap().clone().expect("attached");
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let n = ec2
        .describe_network_interfaces()
        .network_interface_ids(&eni)
        .send()
        .await
        .unwrap();
    let groups: Vec<&str> = n.network_interfaces()[0]
        .groups()
        .iter()
        .filter_map(|g| g.group_name())
        .collect();
    assert_eq!(groups, ["firebreak-isolation"]);
    let late = report
        .steps
        .isolation_recheck
        .as_ref()
        .expect("second look");
    assert!(
        late.interfaces
            .iter()
            .any(|i| i.network_interface_id == eni && i.changed),
        "{late:#?}"
    );
}

/// A task handler shared with the test (to read what it did).
struct ArcHandler<H>(Arc<H>);

#[async_trait]
impl<H: TaskHandler> TaskHandler for ArcHandler<H> {
    async fn invoke(&self, call: TaskCall) -> Result<Value, TaskFailure> {
        self.0.invoke(call).await
    }
}

#[tokio::test]
async fn sandbox_a_resumed_isolation_puts_back_what_the_record_holds_never_a_transition_group() {
    // GIVEN a case whose record is stored, and an interface left on the
    // case's allow-all transition group by a run that died between the
    // two moves
    let d = decoy();
    let config = sdk_config().await;
    let ctx = context(AwsClients::new(&config));
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let case = "it-resume";
    let instance = s(&d, "instance_id");
    let enis: Vec<String> = serde_json::from_value(d["network_interface_ids"].clone()).unwrap();
    let own = s(&d, "security_group_id");
    run_step(
        &ctx,
        "record_instance_state",
        json!({"case_id": case, "instance_id": instance, "evidence_bucket": evidence_bucket()}),
    )
    .await
    .unwrap();
    let name = format!("firebreak-transition-{case}");
    let tr = ec2
        .create_security_group()
        .group_name(&name)
        .description("left by a run that died")
        .vpc_id(s(&d, "vpc_id"))
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("firebreak:role")
                        .value("transition")
                        .build(),
                )
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("firebreak:group")
                        .value(&name)
                        .build(),
                )
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("firebreak:case")
                        .value(case)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    ec2.modify_network_interface_attribute()
        .network_interface_id(&enis[0])
        .groups(&tr)
        .send()
        .await
        .unwrap();
    let input = json!({"case_id": case, "instance_id": instance, "exemptions": [],
                       "evidence_bucket": evidence_bucket()});
    // WHEN isolation resumes and that interface's move is refused (after
    // AWS made it)
    let (clients, injected) = faulty_clients_counted(
        &config,
        Fault {
            calls: Calls::NamedWith("ModifyNetworkInterfaceAttribute", enis[0].clone()),
            skip: 0,
            n: 1,
            status: 403,
            code: None,
            before_work: false,
        },
    );
    let failed = run_step(&context(clients), "isolate_network", input.clone()).await;
    assert_eq!(injected.load(Ordering::SeqCst), 1);
    // THEN it goes back to the groups the record holds, not the
    // transition group a live read shows
    let err = failed.unwrap_err();
    assert!(err.contains(&format!("previous groups [{own}]")), "{err}");
    let groups = |eni: String| {
        let ec2 = ec2.clone();
        async move {
            ec2.describe_network_interfaces()
                .network_interface_ids(eni)
                .send()
                .await
                .unwrap()
                .network_interfaces()[0]
                .groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(groups(enis[0].clone()).await, vec![own.clone()]);
    // AND a run without fault isolates it, naming the recorded groups as
    // the previous ones
    let out = run_step(&ctx, "isolate_network", input).await.unwrap();
    let i = out["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["network_interface_id"] == enis[0].as_str())
        .unwrap();
    assert_eq!(i["previous_group_ids"], json!([own]));
    assert_ne!(groups(enis[0].clone()).await, [tr]);
}

#[tokio::test]
async fn sandbox_a_transition_group_that_cannot_be_deleted_is_retried_and_reported() {
    // GIVEN EC2 refuses to delete the transition group (still in use)
    let d = decoy();
    let config = sdk_config().await;
    let (clients, injected) = faulty_clients_counted(
        &config,
        Fault {
            calls: Calls::Named("DeleteSecurityGroup"),
            skip: 0,
            n: 100,
            status: 400,
            code: Some("DependencyViolation"),
            before_work: true,
        },
    );
    // WHEN isolating
    let out = run_step(
        &context(clients),
        "isolate_network",
        json!({"case_id": "it-tr-left", "instance_id": s(&d, "instance_id"), "exemptions": []}),
    )
    .await
    .unwrap();
    // THEN the instance is isolated, the deletion was tried six times, and
    // the group left is reported by id with the reason
    assert_eq!(injected.load(Ordering::SeqCst), 6);
    let left = out["transition_groups_left"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{out:#}");
    let tr = out["groups"][0]["transition_group_id"].as_str().unwrap();
    let text = left[0].as_str().unwrap();
    assert!(
        text.contains(tr) && text.contains("DependencyViolation"),
        "{text}"
    );
}

#[tokio::test]
async fn sandbox_public_paths_are_cut_before_the_allow_all_moment_with_one_health_read_per_group() {
    // GIVEN a decoy with an Elastic IP, an instance and an IP target
    // group, and a Classic Load Balancer
    let d = decoy();
    // WHEN contained
    let out = firebreak(&[
        "respond",
        "--instance",
        &s(&d, "instance_id"),
        "--case",
        "it-public",
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let calls = report["calls"].as_array().unwrap();
    let at = |pred: &dyn Fn(&Value) -> bool| -> Vec<usize> {
        calls
            .iter()
            .enumerate()
            .filter(|(_, c)| pred(c))
            .map(|(i, _)| i)
            .collect()
    };
    // THEN the address and every registration are gone before the first
    // move to the allow-all group
    let first_move = at(&|c| {
        c["action"] == "ec2:ModifyNetworkInterfaceAttribute"
            && c["parameters"].as_str().unwrap().contains("first move")
    })[0];
    for action in [
        "ec2:DisassociateAddress",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
    ] {
        let made = at(&|c| c["action"] == action && c["verdict"] == "done");
        assert!(!made.is_empty(), "{action} was not made");
        assert!(
            made.iter().all(|i| *i < first_move),
            "{action} after the move"
        );
    }
    let ip_deregistered = report["target_groups"]["deregistered"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["ip"].is_string());
    assert!(ip_deregistered, "{:#}", report["target_groups"]);
    // AND each target group's health is read once per listing
    for tg in [s(&d, "target_group_arn"), s(&d, "ip_target_group_arn")] {
        let reads = calls
            .iter()
            .filter(|c| {
                c["step"] == "record_instance_state"
                    && c["action"] == "elasticloadbalancing:DescribeTargetHealth"
                    && c["parameters"].as_str().unwrap().contains(&tg)
            })
            .count();
        assert_eq!(reads, 1, "{tg}");
    }
}

#[test]
fn ec2_compromise_denies_credentials_outside_the_vpc_at_isolation_and_cuts_acls_after_the_capture()
{
    let c = firebreak_playbooks::compile("ec2-compromise").unwrap();
    let names: Vec<&str> = c.steps.iter().map(|s| s.name).collect();
    let at = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} not in {names:?}"))
    };
    assert_eq!(
        at("restrict_credentials_to_vpc"),
        at("isolate_network") + 1,
        "{names:?}"
    );
    assert!(at("restrict_credentials_to_vpc") < at("start_memory_capture"));
    assert!(
        at("cut_network_acls") > at("read_memory_evidence"),
        "{names:?}"
    );
    assert!(at("cut_network_acls") < at("revoke_instance_credentials"));
}

/// The statements of the role's firebreak policies, and the instances each
/// names.
async fn deny_statements(ctx: &StepContext, role: &str) -> Vec<Value> {
    let r = read_role(ctx, &ctx.log("test"), role).await.unwrap();
    r.policies
        .iter()
        .filter_map(|p| p.denies.document())
        .flat_map(|d| d["Statement"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn sandbox_credentials_are_denied_outside_the_vpc_at_isolation_for_this_instance_only() {
    // GIVEN a decoy whose role a second instance shares, in a VPC without
    // SSM endpoints
    let d = decoy();
    let config = sdk_config().await;
    let ctx = context(AwsClients::new(&config));
    let role = s(&d, "role_name");
    let (first, second) = (s(&d, "instance_id"), s(&d, "second_instance_id"));
    // WHEN the outside-VPC deny is added for the decoy
    let out = run_step(
        &ctx,
        "restrict_credentials_to_vpc",
        json!({"case_id": "it-vpc", "instance_id": first}),
    )
    .await
    .unwrap();
    // THEN the role's policy denies this instance's credentials used
    // anywhere but through the VPC's endpoints, and nothing else
    assert_eq!(
        deny_statements(&ctx, &role).await,
        [json!({
            "Sid": "FirebreakOutsideVpc", "Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {
                "StringLike": {"ec2:SourceInstanceARN": [format!("*/{first}")]},
                "StringNotEquals": {"aws:ec2InstanceSourceVPC": "${aws:SourceVpc}"},
                "BoolIfExists": {"aws:ViaAWSService": "false"}
            }
        })]
    );
    // AND it warns that the SSM agent needs the VPC's endpoints
    let warnings = out["warnings"].to_string();
    assert!(
        warnings.contains("com.amazonaws.us-east-1.ssm")
            && warnings.contains("ssmmessages")
            && warnings.contains("ec2messages"),
        "{warnings}"
    );
    // GIVEN the three endpoints, WHEN the second instance is restricted,
    // THEN there is no warning and both are named
    let ec2 = aws_sdk_ec2::Client::new(&config);
    for svc in ["ssm", "ssmmessages", "ec2messages"] {
        ec2.create_vpc_endpoint()
            .vpc_id(s(&d, "vpc_id"))
            .service_name(format!("com.amazonaws.us-east-1.{svc}"))
            .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Interface)
            .subnet_ids(s(&d, "subnet_id"))
            .send()
            .await
            .unwrap();
    }
    let out = run_step(
        &ctx,
        "restrict_credentials_to_vpc",
        json!({"case_id": "it-vpc-2", "instance_id": second}),
    )
    .await
    .unwrap();
    assert_eq!(out["warnings"], json!([]));
    let statements = deny_statements(&ctx, &role).await;
    let mut named = statements[0]["Condition"]["StringLike"]["ec2:SourceInstanceARN"].clone();
    named.as_array_mut().unwrap().sort_by_key(|v| v.to_string());
    let mut want = json!([format!("*/{first}"), format!("*/{second}")]);
    want.as_array_mut().unwrap().sort_by_key(|v| v.to_string());
    assert_eq!(named, want);
    // AND the full revocation adds the cut-off statement beside it, and
    // the decoy's release takes out both of its own, nothing of the other
    let before = Utc::now();
    run_step(
        &ctx,
        "revoke_instance_credentials",
        json!({"case_id": "it-vpc", "instance_id": first, "evidence_bucket": evidence_bucket()}),
    )
    .await
    .unwrap();
    let r = read_role(&ctx, &ctx.log("test"), &role).await.unwrap();
    let (_, cutoff) = r.cutoff_of(&first).unwrap();
    assert!(
        cutoff
            >= before + firebreak_steps::containment::iam::denies::CUTOFF_PAD
                - chrono::Duration::seconds(1)
    );
    firebreak_steps::containment::iam::policies::remove_deny(
        &ctx,
        &ctx.log("test"),
        &role,
        &first,
        true,
        &|_| true,
    )
    .await
    .unwrap();
    let r = read_role(&ctx, &ctx.log("test"), &role).await.unwrap();
    assert!(r.cutoff_of(&first).is_none() && r.outside_vpc(&first).is_none());
    assert!(r.outside_vpc(&second).is_some());
}

/// A policy document's size as IAM counts it, measured here: the
/// characters of its JSON without whitespace outside strings.
fn iam_chars(url_encoded: &str) -> usize {
    let text = percent_encoding::percent_decode_str(url_encoded)
        .decode_utf8()
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&text).unwrap();
    v.to_string().chars().count()
}

/// Measures a role's policies against IAM's documented quotas (moto
/// enforces none of them), reading them from IAM: each managed policy's
/// default version at most 6,144 characters, all inline policies together
/// at most 10,240, at most 10 managed policies attached. Returns (largest
/// managed policy, attached, inline).
async fn within_quotas(iam: &aws_sdk_iam::Client, role: &str) -> (usize, usize, usize) {
    let attached = iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .unwrap();
    let mut biggest = 0;
    for p in attached.attached_policies() {
        let arn = p.policy_arn().unwrap();
        let version = iam.get_policy().policy_arn(arn).send().await.unwrap();
        let doc = iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(version.policy().unwrap().default_version_id().unwrap())
            .send()
            .await
            .unwrap();
        let chars = iam_chars(doc.policy_version().unwrap().document().unwrap());
        assert!(chars <= 6144, "{arn}: {chars} characters");
        biggest = biggest.max(chars);
    }
    let n = attached.attached_policies().len();
    assert!(n <= 10, "{n} managed policies attached");
    let names = iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .unwrap();
    let mut inline = 0;
    for name in names.policy_names() {
        let p = iam
            .get_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
            .unwrap();
        inline += iam_chars(p.policy_document());
    }
    assert!(inline <= 10240, "{inline} characters inline");
    (biggest, n, inline)
}

#[tokio::test]
async fn sandbox_two_hundred_instances_of_one_role_are_denied_within_iam_quotas_and_released_one_by_one(
) {
    // GIVEN 200 instances sharing the decoy's instance profile
    let d = decoy();
    let config = sdk_config().await;
    let ctx = context(AwsClients::new(&config));
    let iam = aws_sdk_iam::Client::new(&config);
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let role = s(&d, "role_name");
    let image = ec2
        .describe_instances()
        .instance_ids(s(&d, "instance_id"))
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .image_id()
        .unwrap()
        .to_string();
    let run = ec2
        .run_instances()
        .image_id(image)
        .min_count(200)
        .max_count(200)
        .subnet_id(s(&d, "subnet_id"))
        .iam_instance_profile(
            aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                .name(s(&d, "instance_profile_name"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = run
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 200);
    // (moto associates the profile with the first instance of a
    // RunInstances only)
    let assoc = ec2
        .describe_iam_instance_profile_associations()
        .send()
        .await
        .unwrap();
    for id in &ids {
        if !assoc
            .iam_instance_profile_associations()
            .iter()
            .any(|a| a.instance_id() == Some(id.as_str()))
        {
            ec2.associate_iam_instance_profile()
                .instance_id(id)
                .iam_instance_profile(
                    aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                        .name(s(&d, "instance_profile_name"))
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    }
    // WHEN contained one after another
    let mut contained_at = Vec::new();
    let mut largest = 0;
    for (k, id) in ids.iter().enumerate() {
        contained_at.push(Utc::now());
        let out = run_step(
            &ctx,
            "revoke_instance_credentials",
            json!({"case_id": format!("it-200-{k}"), "instance_id": id,
                   "evidence_bucket": evidence_bucket()}),
        )
        .await
        .unwrap();
        assert_eq!(out["role_wide"], json!([]), "{k}: {out:#}");
        // THEN at every point the role's policies are within IAM's
        // quotas and every instance contained so far is denied, with a
        // cut-off no earlier than its containment
        let (biggest, _, _) = within_quotas(&iam, &role).await;
        largest = largest.max(biggest);
        let r = read_role(&ctx, &ctx.log("test"), &role).await.unwrap();
        for (j, other) in ids[..=k].iter().enumerate() {
            let (_, t) = r
                .cutoff_of(other)
                .unwrap_or_else(|| panic!("{other} ({j}) not denied after {k}"));
            assert!(
                t >= contained_at[j],
                "{other}: cut-off {t} before its containment"
            );
        }
    }
    assert!(
        largest > MANAGED_POLICY_MAX_CHARS / 2,
        "{largest}: the test did not fill a policy"
    );
    // WHEN released one by one (every other one first)
    let order: Vec<usize> = (0..200).step_by(2).chain((1..200).step_by(2)).collect();
    let mut released = std::collections::BTreeSet::new();
    for k in order {
        firebreak_steps::containment::iam::policies::remove_deny(
            &ctx,
            &ctx.log("test"),
            &role,
            &ids[k],
            true,
            &|_| true,
        )
        .await
        .unwrap();
        released.insert(k);
        // THEN it is no longer denied, every other one still is, and the
        // quotas hold
        within_quotas(&iam, &role).await;
        if released.len() % 20 == 0 || released.len() > 190 {
            let r = read_role(&ctx, &ctx.log("test"), &role).await.unwrap();
            for (j, id) in ids.iter().enumerate() {
                assert_eq!(
                    r.cutoff_of(id).is_some(),
                    !released.contains(&j),
                    "{id} after {k}"
                );
            }
        }
    }
    // AND none is left: the policy is detached and deleted
    let attached = iam
        .list_attached_role_policies()
        .role_name(&role)
        .send()
        .await
        .unwrap();
    assert!(attached.attached_policies().is_empty(), "{attached:?}");
}

#[tokio::test]
async fn sandbox_a_role_without_room_falls_back_to_a_role_wide_deny_and_says_so() {
    // GIVEN the decoy's role already carries ten managed policies (IAM's
    // default quota)
    let d = decoy();
    let config = sdk_config().await;
    let ctx = context(AwsClients::new(&config));
    let iam = aws_sdk_iam::Client::new(&config);
    let role = s(&d, "role_name");
    for k in 0..10 {
        let arn = iam
            .create_policy()
            .policy_name(format!("{role}-filler-{k}"))
            .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListAllMyBuckets","Resource":"*"}]}"#)
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap()
            .arn()
            .unwrap()
            .to_string();
        iam.attach_role_policy()
            .role_name(&role)
            .policy_arn(arn)
            .send()
            .await
            .unwrap();
    }
    // WHEN contained
    let out = firebreak(&[
        "respond",
        "--instance",
        &s(&d, "instance_id"),
        "--case",
        "it-full-role",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    // THEN every session of the role issued before the cut-off is denied,
    // within the inline quota, and the summary says so
    let summary = stdout(&out);
    assert!(
        summary.contains(&format!("role {role}: no room for a per-instance deny")),
        "{summary}"
    );
    let (_, attached, inline) = within_quotas(&iam, &role).await;
    assert_eq!(attached, 10);
    assert!(inline > 0);
    let wide =
        firebreak_steps::containment::iam::policies::role_wide(&ctx, &ctx.log("test"), &role)
            .await
            .unwrap();
    assert!(wide.is_some_and(|t| t > Utc::now()), "{wide:?}");
    let doc = iam
        .get_role_policy()
        .role_name(&role)
        .policy_name(firebreak_steps::containment::iam::denies::ROLE_WIDE_POLICY)
        .send()
        .await
        .unwrap();
    let doc = firebreak_steps::containment::iam::decode_policy(doc.policy_document()).unwrap();
    assert_eq!(
        doc["Statement"][0]["Condition"].as_object().unwrap().len(),
        1,
        "{doc:#}"
    );
    assert!(doc.to_string().len() < 300);
}

/// Where the decoy stands in service: its Auto Scaling state, the targets
/// registered in its target groups, the Classic Load Balancer's instances.
async fn service(d: &Value) -> Value {
    let state = aws_state(&sdk_config().await, d).await;
    json!([
        state["auto_scaling"]["members"],
        state["target_groups"],
        state["classic_load_balancer"]
    ])
}

async fn termination_protected(ec2: &aws_sdk_ec2::Client, id: &str) -> bool {
    ec2.describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .unwrap()
        .disable_api_termination()
        .and_then(|a| a.value())
        .unwrap_or(false)
}

#[tokio::test]
async fn sandbox_a_release_that_fails_leaves_the_instance_isolated_and_out_of_service() {
    // GIVEN a contained decoy
    let d = decoy();
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let before = aws_state(&config, &d).await;
    let id = s(&d, "instance_id");
    let out = firebreak(&["respond", "--instance", &id, "--case", "it-rel-fail", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let contained_service = service(&d).await;
    let contained_groups = crate::faults::interface_group_names(&d).await;
    let enis: Vec<String> = serde_json::from_value(d["network_interface_ids"].clone()).unwrap();
    let input = json!({"case_id": "it-rel-fail", "instance_id": id,
                       "evidence_bucket": evidence_bucket(), "credential_deny": "remove"});
    for (what, calls) in [
        (
            "the second interface's groups",
            Calls::NamedWith("ModifyNetworkInterfaceAttribute", enis[1].clone()),
        ),
        (
            "a target group registration",
            Calls::Named("RegisterTargets"),
        ),
    ] {
        // WHEN a release is refused part-way
        let (clients, injected) = faulty_clients_counted(
            &config,
            Fault {
                calls,
                skip: 0,
                n: 1,
                status: 403,
                code: Some("UnauthorizedOperation"),
                before_work: true,
            },
        );
        let failed = run_step(&context(clients), "release_instance", input.clone()).await;
        assert_eq!(injected.load(Ordering::SeqCst), 1, "{what}");
        let err = failed.unwrap_err();
        // THEN the instance is isolated again, out of service, and still
        // protected from termination
        assert!(err.contains("isolated again"), "{what}: {err}");
        assert_eq!(
            crate::faults::interface_group_names(&d).await,
            contained_groups,
            "{what}"
        );
        assert_eq!(service(&d).await, contained_service, "{what}");
        assert!(termination_protected(&ec2, &id).await, "{what}");
    }
    // AND a release without fault restores everything
    let ctx = context(AwsClients::new(&config));
    run_step(&ctx, "release_instance", input).await.unwrap();
    let mut after = aws_state(&config, &d).await;
    after["role"] = before["role"].clone();
    assert_eq!(after, before);
}

/// Adds the decoy's sibling to its Auto Scaling group and puts the group at
/// its minimum: two instances, MinSize 2.
async fn group_of_two(config: &aws_config::SdkConfig, d: &Value) -> String {
    let asg = aws_sdk_autoscaling::Client::new(config);
    let group = s(d, "auto_scaling_group");
    asg.attach_instances()
        .auto_scaling_group_name(&group)
        .instance_ids(s(d, "second_instance_id"))
        .send()
        .await
        .unwrap();
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .min_size(2)
        .send()
        .await
        .unwrap();
    group
}

async fn group_sizes(
    config: &aws_config::SdkConfig,
    group: &str,
) -> (i32, i32, usize, Vec<String>) {
    let asg = aws_sdk_autoscaling::Client::new(config);
    let g = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .unwrap();
    let g = &g.auto_scaling_groups()[0];
    (
        g.min_size().unwrap(),
        g.desired_capacity().unwrap(),
        g.instances().len(),
        g.tags()
            .iter()
            .filter_map(|t| t.key().map(str::to_string))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandbox_two_instances_of_a_group_at_its_minimum_contained_at_once_and_released_in_either_order(
) {
    // GIVEN a group of two instances at its minimum (2)
    let d = decoy();
    let config = sdk_config().await;
    let group = group_of_two(&config, &d).await;
    let ctx = context(AwsClients::new(&config));
    let pair = [s(&d, "instance_id"), s(&d, "second_instance_id")];
    for (round, order) in [[0usize, 1], [1, 0]].iter().enumerate() {
        let cases = [format!("it-asg-{round}-a"), format!("it-asg-{round}-b")];
        for (i, id) in pair.iter().enumerate() {
            run_step(
                &ctx,
                "record_instance_state",
                json!({"case_id": cases[i], "instance_id": id, "evidence_bucket": evidence_bucket()}),
            )
            .await
            .unwrap();
        }
        // WHEN both are contained at the same moment: each reads the group
        // before either changes it
        let meet = Rendezvous::new("DescribeAutoScalingGroups", &group, 2);
        let m = meet.clone();
        let racing = context(intercepted_clients(
            &config,
            move || SharedInterceptor::new(m.clone()),
            true,
        ));
        // (each on a task of its own: the meeting blocks a thread)
        let step = |i: usize| {
            let ctx = racing.clone();
            let input = json!({"case_id": cases[i], "instance_id": pair[i], "mode": "standby"});
            tokio::spawn(async move { run_step(&ctx, "detach_from_autoscaling", input).await })
        };
        let (a, b) = (step(0), step(1));
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        assert!(
            !meet.timed_out.load(Ordering::SeqCst),
            "the two reads did not meet"
        );
        assert!(meet.seen.load(Ordering::SeqCst) >= 2);
        // THEN both are out without a replacement, and MinSize is 0
        let (min, desired, members, tags) = group_sizes(&config, &group).await;
        assert_eq!((min, desired, members), (0, 0, 2), "round {round}");
        assert_eq!(tags, ["firebreak:min-size-before"]);
        // WHEN released one after the other (in this round's order)
        for (n, i) in order.iter().enumerate() {
            run_step(
                &ctx,
                "release_instance",
                json!({"case_id": cases[*i], "instance_id": pair[*i],
                       "evidence_bucket": evidence_bucket(), "credential_deny": "remove"}),
            )
            .await
            .unwrap();
            // THEN MinSize follows the instances back, never above the
            // desired capacity, and ends at its original 2, untagged
            let (min, desired, members, tags) = group_sizes(&config, &group).await;
            let back = n as i32 + 1;
            assert_eq!(
                (min, desired, members),
                (back, back, 2),
                "round {round}, release {n}"
            );
            assert_eq!(tags.is_empty(), back == 2, "round {round}: {tags:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandbox_two_isolations_in_one_vpc_at_the_same_moment_share_one_group() {
    // GIVEN two instances of one VPC, isolated at the same moment: both
    // look for the isolation group before either makes it
    let d = decoy();
    let config = sdk_config().await;
    let meet = Rendezvous::new("DescribeSecurityGroups", "Value.1=firebreak-isolation", 2);
    let m = meet.clone();
    let racing = context(intercepted_clients(
        &config,
        move || SharedInterceptor::new(m.clone()),
        true,
    ));
    // (each on a task of its own: the meeting blocks a thread)
    let isolate = |id: String, case: &'static str| {
        let ctx = racing.clone();
        tokio::spawn(async move {
            run_step(
                &ctx,
                "isolate_network",
                json!({"case_id": case, "instance_id": id, "exemptions": []}),
            )
            .await
            .unwrap()
        })
    };
    let (a, b) = (
        isolate(s(&d, "instance_id"), "it-race-a"),
        isolate(s(&d, "second_instance_id"), "it-race-b"),
    );
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(
        !meet.timed_out.load(Ordering::SeqCst),
        "the two reads did not meet"
    );
    assert!(meet.seen.load(Ordering::SeqCst) >= 2);
    // THEN both use one group: one made it, the other found it after its
    // own creation was refused as a duplicate
    let group_a = &a["groups"][0]["isolation_group_id"];
    assert_eq!(group_a, &b["groups"][0]["isolation_group_id"]);
    let made: Vec<bool> = [&a, &b]
        .iter()
        .map(|o| {
            o["groups"][0]["created_group_ids"]
                .as_array()
                .unwrap()
                .contains(group_a)
        })
        .collect();
    assert_eq!(made.iter().filter(|m| **m).count(), 1, "{a:#}\n{b:#}");
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let groups = ec2
        .describe_security_groups()
        .filters(vpc_filter(&d))
        .filters(
            Filter::builder()
                .name("tag:firebreak:role")
                .values("isolation")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(groups.security_groups().len(), 1);
}

#[tokio::test]
async fn sandbox_a_look_alike_group_holding_the_name_is_never_used() {
    // GIVEN a group someone else made with firebreak's name, untagged
    let d = decoy();
    let config = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let fake = ec2
        .create_security_group()
        .group_name("firebreak-isolation")
        .description("not firebreak's")
        .vpc_id(s(&d, "vpc_id"))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    let read = |id: String| {
        let ec2 = ec2.clone();
        async move {
            format!(
                "{:?}",
                ec2.describe_security_groups()
                    .group_ids(id)
                    .send()
                    .await
                    .unwrap()
                    .security_groups()
            )
        }
    };
    let fake_before = read(fake.clone()).await;
    // WHEN isolating
    let ctx = context(AwsClients::new(&config));
    let out = run_step(
        &ctx,
        "isolate_network",
        json!({"case_id": "it-lookalike", "instance_id": s(&d, "instance_id"), "exemptions": []}),
    )
    .await
    .unwrap();
    // THEN firebreak made its own group under a name of its own, tagged,
    // and left the look-alike as it was, with no interface on it
    let iso = out["groups"][0]["isolation_group_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(iso, fake);
    let g = ec2
        .describe_security_groups()
        .group_ids(&iso)
        .send()
        .await
        .unwrap();
    let g = &g.security_groups()[0];
    assert!(
        g.group_name().unwrap().starts_with("firebreak-isolation-"),
        "{g:?}"
    );
    assert!(g
        .tags()
        .iter()
        .any(|t| t.key() == Some("firebreak:group") && t.value() == Some("firebreak-isolation")));
    assert_eq!(read(fake.clone()).await, fake_before);
    let on_fake = ec2
        .describe_network_interfaces()
        .filters(Filter::builder().name("group-id").values(&fake).build())
        .send()
        .await
        .unwrap();
    assert!(on_fake.network_interfaces().is_empty());
}
