//! Helpers: the sandbox's address, SDK clients for it, running the CLI.

use std::process::{Command, Output};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde_json::Value;

/// The sandbox endpoint set by `scripts/test`.
pub(crate) fn sandbox_url() -> String {
    std::env::var("FIREBREAK_SANDBOX_URL").unwrap_or_else(|_| {
        panic!("FIREBREAK_SANDBOX_URL is not set: run the tests with scripts/test, which starts the sandbox (moto server)")
    })
}

pub(crate) const REGION: &str = "us-east-1";

/// SDK configuration for the sandbox.
pub(crate) async fn sdk_config() -> SdkConfig {
    config_at(&sandbox_url(), REGION, ("test", "test")).await
}

/// SDK configuration for a moto server at `url`, in `region`, with these
/// static credentials (access key, secret).
pub(crate) async fn config_at(url: &str, region: &str, (key, secret): (&str, &str)) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new(region.to_string()))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            key,
            secret,
            None,
            None,
            "firebreak-tests",
        ))
        .load()
        .await
}

/// Journals of the runs the tests start (never the user's own).
pub(crate) fn state_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("firebreak-it-state-{}", std::process::id()))
}

/// Runs the firebreak binary against the sandbox.
pub(crate) fn firebreak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env("FIREBREAK_STATE_DIR", state_dir())
        .env("AWS_ENDPOINT_URL", sandbox_url())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the firebreak binary runs")
}

/// Runs the firebreak binary without any AWS environment.
pub(crate) fn firebreak_offline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("the firebreak binary runs")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The sandbox's evidence bucket, made once per test run with
/// `firebreak setup` (idempotent).
pub(crate) fn evidence_bucket() -> &'static str {
    static SETUP: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    SETUP.get_or_init(|| {
        let out = firebreak(&["setup"]);
        assert!(
            out.status.success(),
            "firebreak setup failed: {}",
            stderr(&out)
        );
    });
    "firebreak-evidence-123456789012-us-east-1"
}

/// A fresh decoy in the sandbox (its own VPC), made by the CLI, with the
/// evidence bucket ready.
pub(crate) fn decoy() -> Value {
    evidence_bucket();
    let out = firebreak(&["decoy", "create", "--output", "json"]);
    assert!(
        out.status.success(),
        "decoy create failed: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("decoy JSON")
}

pub(crate) fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_string()
}

/// Everything containment or release could change about a decoy, as the
/// SDK describes it (Debug output covers every field AWS returned). Two
/// equal worlds mean nothing changed.
pub(crate) async fn world(config: &SdkConfig, decoy: &Value, case: &str) -> String {
    use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
    let ec2 = aws_sdk_ec2::Client::new(config);
    let instance = s(decoy, "instance_id");
    let vpc = s(decoy, "vpc_id");
    let volumes: Vec<String> = decoy["volume_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let vpc_filter = Filter::builder().name("vpc-id").values(&vpc).build();
    let mut out = Vec::new();
    out.push(format!(
        "{:?}",
        ec2.describe_instances()
            .instance_ids(&instance)
            .send()
            .await
            .unwrap()
            .reservations()
    ));
    for attr in [
        InstanceAttributeName::DisableApiTermination,
        InstanceAttributeName::DisableApiStop,
        InstanceAttributeName::InstanceInitiatedShutdownBehavior,
    ] {
        let a = ec2
            .describe_instance_attribute()
            .instance_id(&instance)
            .attribute(attr)
            .send()
            .await
            .unwrap();
        out.push(format!(
            "{:?} {:?} {:?}",
            a.disable_api_termination(),
            a.disable_api_stop(),
            a.instance_initiated_shutdown_behavior()
        ));
    }
    let mut groups: Vec<String> = ec2
        .describe_security_groups()
        .filters(vpc_filter.clone())
        .send()
        .await
        .unwrap()
        .security_groups()
        .iter()
        .map(|g| format!("{g:?}"))
        .collect();
    groups.sort();
    out.push(groups.join("\n"));
    out.push(format!(
        "{:?}",
        ec2.describe_network_interfaces()
            .filters(vpc_filter)
            .send()
            .await
            .unwrap()
            .network_interfaces()
    ));
    let mut snaps: Vec<String> = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder()
                .name("volume-id")
                .set_values(Some(volumes))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots()
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    snaps.sort();
    out.push(snaps.join("\n"));
    if let Some(alloc) = decoy["allocation_id"].as_str() {
        out.push(format!(
            "{:?}",
            ec2.describe_addresses()
                .allocation_ids(alloc)
                .send()
                .await
                .unwrap()
                .addresses()
        ));
    }
    let asg = aws_sdk_autoscaling::Client::new(config);
    out.push(format!(
        "{:?}",
        asg.describe_auto_scaling_instances()
            .instance_ids(&instance)
            .send()
            .await
            .unwrap()
            .auto_scaling_instances()
    ));
    if let Some(tg) = decoy["target_group_arn"].as_str() {
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
        out.push(format!(
            "{:?}",
            elb.describe_target_health()
                .target_group_arn(tg)
                .send()
                .await
                .unwrap()
                .target_health_descriptions()
        ));
    }
    if let Some(role) = decoy["role_name"].as_str() {
        let iam = aws_sdk_iam::Client::new(config);
        let names = iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap()
            .policy_names()
            .to_vec();
        for n in &names {
            let p = iam
                .get_role_policy()
                .role_name(role)
                .policy_name(n)
                .send()
                .await
                .unwrap();
            out.push(format!("{n}: {}", p.policy_document()));
        }
    }
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    );
    let versions = s3
        .list_object_versions()
        .bucket(evidence_bucket())
        .prefix(format!("cases/{case}/"))
        .send()
        .await
        .unwrap();
    let mut v: Vec<String> = versions
        .versions()
        .iter()
        .map(|v| format!("{:?} {:?}", v.key(), v.version_id()))
        .collect();
    v.sort();
    out.push(v.join("\n"));
    out.join("\n---\n")
}

/// JSON equality with numbers compared by value (1 equals 1.0).
pub(crate) fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// What containment and release can change about a decoy, read from AWS
/// and written out independently of firebreak's own code: the instance
/// (state, attributes, profile, volumes, tags other than firebreak's),
/// every interface of its VPC (groups, addresses, source/dest check,
/// public address), the VPC's security groups (firebreak's too) and their
/// rules, every network ACL entry, the Elastic IP, the Auto
/// Scaling group (sizes, tags, the instance's state and protection),
/// every target group's registrations, the Classic Load Balancer's
/// instances, and the role's inline and attached policies. Equal before
/// containment and after release means nothing is left behind.
pub(crate) async fn aws_state(config: &SdkConfig, decoy: &Value) -> Value {
    use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
    use serde_json::json;
    let ec2 = aws_sdk_ec2::Client::new(config);
    let instance = s(decoy, "instance_id");
    let vpc = s(decoy, "vpc_id");
    let in_vpc = || Filter::builder().name("vpc-id").values(&vpc).build();
    let mut out = serde_json::Map::new();

    let r = ec2
        .describe_instances()
        .instance_ids(&instance)
        .send()
        .await
        .unwrap();
    let i = &r.reservations()[0].instances()[0];
    let mut tags: Vec<(String, String)> = i
        .tags()
        .iter()
        .filter(|t| !t.key().unwrap_or_default().starts_with("firebreak:"))
        .map(|t| {
            (
                t.key().unwrap_or_default().into(),
                t.value().unwrap_or_default().into(),
            )
        })
        .collect();
    tags.sort();
    let mut volumes: Vec<String> = i
        .block_device_mappings()
        .iter()
        .map(|m| {
            format!(
                "{:?} {:?} {:?}",
                m.device_name(),
                m.ebs().and_then(|e| e.volume_id()),
                m.ebs().and_then(|e| e.delete_on_termination())
            )
        })
        .collect();
    volumes.sort();
    let mut attrs = Vec::new();
    for a in [
        InstanceAttributeName::DisableApiTermination,
        InstanceAttributeName::DisableApiStop,
        InstanceAttributeName::InstanceInitiatedShutdownBehavior,
    ] {
        let v = ec2
            .describe_instance_attribute()
            .instance_id(&instance)
            .attribute(a)
            .send()
            .await
            .unwrap();
        attrs.push(format!(
            "{:?} {:?} {:?}",
            v.disable_api_termination().and_then(|x| x.value()),
            v.disable_api_stop().and_then(|x| x.value()),
            v.instance_initiated_shutdown_behavior()
                .and_then(|x| x.value())
        ));
    }
    let profile = ec2
        .describe_iam_instance_profile_associations()
        .filters(
            Filter::builder()
                .name("instance-id")
                .values(&instance)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .iam_instance_profile_associations()
        .iter()
        .filter(|a| a.state().map(|s| s.as_str()) == Some("associated"))
        .filter_map(|a| {
            a.iam_instance_profile()
                .and_then(|p| p.arn())
                .map(str::to_string)
        })
        .collect::<Vec<_>>();
    out.insert(
        "instance".into(),
        json!({
            "state": i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()),
            "tags": tags,
            "volumes": volumes,
            "attributes": attrs,
            "profile": profile,
        }),
    );

    let enis = ec2
        .describe_network_interfaces()
        .filters(in_vpc())
        .send()
        .await
        .unwrap();
    let mut interfaces: Vec<Value> = enis
        .network_interfaces()
        .iter()
        .map(|n| {
            let mut groups: Vec<&str> = n.groups().iter().filter_map(|g| g.group_id()).collect();
            groups.sort();
            let mut ips: Vec<&str> = n
                .private_ip_addresses()
                .iter()
                .filter_map(|p| p.private_ip_address())
                .collect();
            ips.sort();
            let mut v6: Vec<&str> = n
                .ipv6_addresses()
                .iter()
                .filter_map(|a| a.ipv6_address())
                .collect();
            v6.sort();
            json!({
                "id": n.network_interface_id(),
                "attached_to": n.attachment().and_then(|a| a.instance_id()),
                "groups": groups,
                "source_dest_check": n.source_dest_check(),
                "ips": ips,
                "ipv6": v6,
                "public_ip": n.association().and_then(|a| a.public_ip()),
                "allocation": n.association().and_then(|a| a.allocation_id()),
            })
        })
        .collect();
    interfaces.sort_by_key(|v| v["id"].to_string());
    out.insert("interfaces".into(), json!(interfaces));

    let sgs = ec2
        .describe_security_groups()
        .filters(in_vpc())
        .send()
        .await
        .unwrap();
    let mut groups: Vec<String> = sgs
        .security_groups()
        .iter()
        .map(|g| {
            format!(
                "{:?} {:?} {:?} {:?}",
                g.group_id(),
                g.group_name(),
                g.ip_permissions(),
                g.ip_permissions_egress()
            )
        })
        .collect();
    groups.sort();
    out.insert("security_groups".into(), json!(groups));

    let acls = ec2
        .describe_network_acls()
        .filters(in_vpc())
        .send()
        .await
        .unwrap();
    let mut entries: Vec<String> = acls
        .network_acls()
        .iter()
        .flat_map(|a| {
            a.entries().iter().map(move |e| {
                format!(
                    "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                    a.network_acl_id(),
                    e.rule_number(),
                    e.egress(),
                    e.rule_action(),
                    e.protocol(),
                    e.cidr_block(),
                    e.ipv6_cidr_block(),
                    e.port_range()
                )
            })
        })
        .collect();
    entries.sort();
    out.insert("network_acl_entries".into(), json!(entries));

    if let Some(alloc) = decoy["allocation_id"].as_str() {
        let a = ec2
            .describe_addresses()
            .allocation_ids(alloc)
            .send()
            .await
            .unwrap();
        let a = &a.addresses()[0];
        out.insert(
            "elastic_ip".into(),
            json!([
                a.network_interface_id(),
                a.private_ip_address(),
                a.public_ip()
            ]),
        );
    }

    if let Some(group) = decoy["auto_scaling_group"].as_str() {
        let asg = aws_sdk_autoscaling::Client::new(config);
        let g = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .unwrap();
        let g = &g.auto_scaling_groups()[0];
        let mut members: Vec<String> = g
            .instances()
            .iter()
            .map(|m| {
                format!(
                    "{:?} {:?} {:?}",
                    m.instance_id(),
                    m.lifecycle_state(),
                    m.protected_from_scale_in()
                )
            })
            .collect();
        members.sort();
        let mut tags: Vec<String> = g
            .tags()
            .iter()
            .map(|t| format!("{:?}={:?}", t.key(), t.value()))
            .collect();
        tags.sort();
        out.insert(
            "auto_scaling".into(),
            json!({
                "min": g.min_size(), "max": g.max_size(), "desired": g.desired_capacity(),
                "members": members, "tags": tags,
            }),
        );
    }

    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let mut targets = Vec::new();
    for key in ["target_group_arn", "ip_target_group_arn"] {
        if let Some(tg) = decoy[key].as_str() {
            let h = elb
                .describe_target_health()
                .target_group_arn(tg)
                .send()
                .await
                .unwrap();
            let mut t: Vec<String> = h
                .target_health_descriptions()
                .iter()
                .filter(|d| {
                    d.target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str())
                        != Some("draining")
                })
                .filter_map(|d| d.target())
                .map(|t| format!("{:?}:{:?}", t.id(), t.port()))
                .collect();
            t.sort();
            targets.push(json!({key: t}));
        }
    }
    out.insert("target_groups".into(), json!(targets));
    if let Some(lb) = decoy["classic_load_balancer"].as_str() {
        let clb = aws_sdk_elasticloadbalancing::Client::new(config);
        let d = clb
            .describe_load_balancers()
            .load_balancer_names(lb)
            .send()
            .await
            .unwrap();
        let mut ids: Vec<&str> = d.load_balancer_descriptions()[0]
            .instances()
            .iter()
            .filter_map(|i| i.instance_id())
            .collect();
        ids.sort();
        out.insert("classic_load_balancer".into(), json!(ids));
    }

    if let Some(role) = decoy["role_name"].as_str() {
        let iam = aws_sdk_iam::Client::new(config);
        let inline = iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap();
        let attached = iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap();
        let mut arns: Vec<&str> = attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
            .collect();
        arns.sort();
        out.insert(
            "role".into(),
            json!({"inline": inline.policy_names(), "attached": arns}),
        );
    }
    Value::Object(out)
}

/// A moto server of the test's own that enforces IAM (moto's
/// `INITIAL_NO_AUTH_ACTION_COUNT`: the first `free` requests go unchecked;
/// `u32::MAX` for a server that checks nothing). It runs no Step
/// Functions executions (moto's default).
pub(crate) struct EnforcingMoto {
    child: std::process::Child,
    /// Its endpoint.
    pub(crate) url: String,
}

impl EnforcingMoto {
    pub(crate) fn start(free: u32) -> EnforcingMoto {
        let exe = std::env::var("MOTO_SERVER").expect("MOTO_SERVER is set by scripts/test");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", free.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Dropped (killed and waited for) however the wait below ends.
        let moto = EnforcingMoto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("moto did not start on {}", moto.url);
    }
}

impl Drop for EnforcingMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs JSON to a moto server's control API (`/moto-api/...`).
pub(crate) fn moto_api(url: &str, path: &str, body: &serde_json::Value) {
    let url = format!("{url}/moto-api/{path}");
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
        ])
        .arg(body.to_string())
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "POST {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Queues canned Lambda results in the moto server at `url`: it answers
/// every Lambda invocation from this one queue, in order.
pub(crate) fn queue_lambda_results(url: &str, results: &[serde_json::Value]) {
    moto_api(
        url,
        "static/lambda-simple/response",
        &serde_json::json!({
            "results": results.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "region": REGION,
            "account_id": "123456789012",
        }),
    );
}
