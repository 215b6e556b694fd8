//! Decoy instances for rehearsals: an instance shaped like a real
//! workload (several network interfaces, IPv6, open ingress, several
//! volumes, an Elastic IP, an instance profile shared with a second
//! instance, an Auto Scaling group, a target group) in its own VPC, in a
//! sandbox account. What a failed creation made is deleted again.

use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, IamInstanceProfileSpecification,
    InstanceNetworkInterfaceSpecification, InstanceType, IpPermission, IpRange, Ipv6Range,
    ResourceType, TagSpecification,
};
use firebreak_workflows::ErrorName;
use serde::{Deserialize, Serialize};

use crate::containment::ec2::{filter, tag};
use crate::error::{aws_error, error_code, required, StepError};

/// What the decoy looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecoySpec {
    /// Name tag and prefix of the decoy's resources.
    pub name: String,
    /// Network interfaces (1 to 2: the smallest instance types take 2).
    pub interfaces: u8,
    /// Volume sizes in GiB; the first is the root volume.
    pub volume_gib: Vec<i32>,
    /// Give the VPC, subnet and first interface IPv6.
    pub ipv6: bool,
    /// Attach an instance profile (role + profile created for the decoy).
    pub instance_profile: bool,
    /// TCP ports open to the world in the decoy's security group.
    pub open_ports: Vec<i32>,
    /// AMI; by default the newest Amazon Linux 2023 image.
    pub image_id: Option<String>,
    /// An Elastic IP on the first interface.
    pub elastic_ip: bool,
    /// Membership of an Auto Scaling group (made for the decoy).
    pub auto_scaling: bool,
    /// Registration in an ELBv2 target group (made for the decoy), port
    /// 80, and of the first interface's address in an IP target group.
    pub target_group: bool,
    /// Registration with a Classic Load Balancer (made for the decoy).
    #[serde(default)]
    pub classic_load_balancer: bool,
    /// A second instance with the same instance profile, to show that
    /// revoking the decoy's credentials leaves others working.
    pub second_instance: bool,
}

impl Default for DecoySpec {
    fn default() -> Self {
        DecoySpec {
            name: "firebreak-decoy".into(),
            interfaces: 2,
            volume_gib: vec![8, 4],
            ipv6: true,
            instance_profile: true,
            open_ports: vec![22, 80],
            image_id: None,
            elastic_ip: true,
            auto_scaling: true,
            target_group: true,
            classic_load_balancer: true,
            second_instance: true,
        }
    }
}

/// What was made (filled in as it is made, so a failure can undo it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decoy {
    /// The decoy instance (`i-...`).
    pub instance_id: String,
    /// Its VPC, made for it.
    pub vpc_id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its security group, open on the ports asked for.
    pub security_group_id: String,
    /// Its network interfaces, first the primary.
    pub network_interface_ids: Vec<String>,
    /// Its EBS volumes.
    pub volume_ids: Vec<String>,
    /// Its instance profile, when one was asked for.
    pub instance_profile_name: Option<String>,
    /// The role in that profile.
    pub role_name: Option<String>,
    /// The internet gateway made for an Elastic IP.
    pub internet_gateway_id: Option<String>,
    /// The Elastic IP's allocation (`eipalloc-...`).
    pub allocation_id: Option<String>,
    /// The Elastic IP's address.
    pub public_ip: Option<String>,
    /// The Auto Scaling group it was attached to.
    pub auto_scaling_group: Option<String>,
    /// The launch template of that group.
    pub launch_template: Option<String>,
    /// The instance target group it is registered in.
    pub target_group_arn: Option<String>,
    /// The second interface's subnet (same Availability Zone).
    #[serde(default)]
    pub second_subnet_id: Option<String>,
    /// The IP target group its first interface's address is registered in.
    #[serde(default)]
    pub ip_target_group_arn: Option<String>,
    /// The Classic Load Balancer it is registered with.
    #[serde(default)]
    pub classic_load_balancer: Option<String>,
    /// A second instance sharing its profile.
    pub second_instance_id: Option<String>,
}

/// Data volumes go to /dev/sdf, /dev/sdg, ...
const DATA_DEVICE_LETTERS: &str = "fghijklmnop";
/// A new instance profile takes a few seconds to be usable by EC2 (IAM is
/// eventually consistent): up to 10 tries, 3 s apart.
const PROFILE_PROPAGATION_TRIES: u32 = 10;
const PROFILE_PROPAGATION_DELAY: Duration = Duration::from_secs(3);
/// Terminating takes a minute or two; the VPC cannot go before the
/// instances: up to 60 checks, 5 s apart.
const TERMINATION_CHECKS: u32 = 60;
const TERMINATION_CHECK_DELAY: Duration = Duration::from_secs(5);
/// The image used when none is given: Amazon Linux 2023, x86_64.
const DEFAULT_IMAGE_NAME: &str = "al2023-ami-2023*-x86_64";

/// The /64 after `block` (a subnet's), for a second subnet.
fn next_v6_subnet(block: &str) -> Result<String, StepError> {
    let net: ipnet::Ipv6Net = block
        .parse()
        .map_err(|_| StepError::new(ErrorName::Internal, format!("{block} is not an IPv6 /64")))?;
    let next = u128::from(net.network()) + (1u128 << 64);
    Ok(format!("{}/64", std::net::Ipv6Addr::from(next)))
}

fn unique_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Creates a decoy. Everything it makes is tagged `firebreak:decoy=<name>`;
/// when a step fails, what was made before it is deleted.
pub async fn create(config: &aws_config::SdkConfig, spec: &DecoySpec) -> Result<Decoy, StepError> {
    if spec.volume_gib.is_empty() || spec.volume_gib.len() > DATA_DEVICE_LETTERS.len() + 1 {
        return Err(StepError::invalid_input("a decoy needs 1 to 12 volumes"));
    }
    if !(1..=2).contains(&spec.interfaces) {
        return Err(StepError::invalid_input(
            "a decoy has 1 or 2 network interfaces",
        ));
    }
    let mut d = Decoy::default();
    match build(config, spec, &mut d).await {
        Ok(()) => Ok(d),
        Err(e) => {
            let (_, failed) = delete(config, &d, None).await;
            let note = if failed.is_empty() {
                "what was made is deleted".to_string()
            } else {
                format!("cleaning up failed too: {}", failed.join("; "))
            };
            Err(StepError::new(e.name, format!("{}; {note}", e.message)))
        }
    }
}

async fn pick_image(ec2: &aws_sdk_ec2::Client) -> Result<(String, String), StepError> {
    for name in [Some(DEFAULT_IMAGE_NAME), None] {
        let mut req = ec2
            .describe_images()
            .owners("amazon")
            .filters(filter("architecture", ["x86_64"]))
            .filters(filter("state", ["available"]))
            .filters(filter("root-device-type", ["ebs"]));
        if let Some(n) = name {
            req = req.filters(filter("name", [n]));
        }
        let out = req
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeImages", e))?;
        let mut images: Vec<_> = out.images().to_vec();
        images.sort_by(|a, b| b.creation_date().cmp(&a.creation_date()));
        if let Some(i) = images.first() {
            return Ok((
                required("ec2:DescribeImages", "an ImageId", i.image_id())?,
                i.root_device_name().unwrap_or("/dev/xvda").to_string(),
            ));
        }
    }
    Err(StepError::new(
        ErrorName::ResourceNotFound,
        "no Amazon x86_64 EBS image is visible; pass an image id",
    ))
}

/// The tags of everything a decoy is made of: its name and the decoy's.
struct Tags<'a> {
    name: &'a str,
    decoy: &'a str,
}

impl Tags<'_> {
    fn on(&self, rt: ResourceType) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(rt)
            .tags(tag("Name", self.name))
            .tags(tag("firebreak:decoy", self.decoy))
            .build()
    }
}

/// The VPC, its subnets (a second one for a second interface) and, for an
/// Elastic IP, an internet gateway.
async fn build_network(
    ec2: &aws_sdk_ec2::Client,
    spec: &DecoySpec,
    tags: &Tags<'_>,
    d: &mut Decoy,
) -> Result<(), StepError> {
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.99.0.0/16")
        .amazon_provided_ipv6_cidr_block(spec.ipv6)
        .tag_specifications(tags.on(ResourceType::Vpc))
        .send()
        .await
        .map_err(|e| aws_error("ec2:CreateVpc", e))?;
    d.vpc_id = required(
        "ec2:CreateVpc",
        "a VpcId",
        vpc.vpc().and_then(|v| v.vpc_id()),
    )?;
    let mut subnet = ec2
        .create_subnet()
        .vpc_id(&d.vpc_id)
        .cidr_block("10.99.1.0/24")
        .tag_specifications(tags.on(ResourceType::Subnet));
    if spec.ipv6 {
        let described = ec2
            .describe_vpcs()
            .vpc_ids(&d.vpc_id)
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeVpcs", e))?;
        let block = described
            .vpcs()
            .first()
            .and_then(|v| v.ipv6_cidr_block_association_set().first())
            .and_then(|a| a.ipv6_cidr_block())
            .ok_or_else(|| {
                StepError::new(ErrorName::Unsupported, "the decoy VPC got no IPv6 block")
            })?;
        // The VPC gets a /56; the subnet takes its first /64.
        subnet = subnet.ipv6_cidr_block(block.replace("/56", "/64"));
    }
    let subnet = subnet
        .send()
        .await
        .map_err(|e| aws_error("ec2:CreateSubnet", e))?;
    let subnet = subnet.subnet();
    d.subnet_id = required(
        "ec2:CreateSubnet",
        "a SubnetId",
        subnet.and_then(|s| s.subnet_id()),
    )?;
    if spec.interfaces > 1 {
        // The second interface in a subnet of its own (an interface must
        // be in the instance's Availability Zone).
        let mut second = ec2
            .create_subnet()
            .vpc_id(&d.vpc_id)
            .cidr_block("10.99.2.0/24")
            .set_availability_zone(
                subnet
                    .and_then(|s| s.availability_zone())
                    .map(str::to_string),
            )
            .tag_specifications(tags.on(ResourceType::Subnet));
        let first_v6 = subnet
            .and_then(|s| s.ipv6_cidr_block_association_set().first())
            .and_then(|a| a.ipv6_cidr_block());
        if let Some(v6) = first_v6 {
            second = second.ipv6_cidr_block(next_v6_subnet(v6)?);
        }
        let second = second
            .send()
            .await
            .map_err(|e| aws_error("ec2:CreateSubnet (second)", e))?;
        d.second_subnet_id = Some(required(
            "ec2:CreateSubnet (second)",
            "a SubnetId",
            second.subnet().and_then(|s| s.subnet_id()),
        )?);
    }
    if spec.elastic_ip {
        // An Elastic IP can only be associated in a VPC with an internet
        // gateway.
        let igw = ec2
            .create_internet_gateway()
            .tag_specifications(tags.on(ResourceType::InternetGateway))
            .send()
            .await
            .map_err(|e| aws_error("ec2:CreateInternetGateway", e))?;
        let igw_id = required(
            "ec2:CreateInternetGateway",
            "an InternetGatewayId",
            igw.internet_gateway().and_then(|g| g.internet_gateway_id()),
        )?;
        d.internet_gateway_id = Some(igw_id.clone());
        ec2.attach_internet_gateway()
            .internet_gateway_id(&igw_id)
            .vpc_id(&d.vpc_id)
            .send()
            .await
            .map_err(|e| aws_error("ec2:AttachInternetGateway", e))?;
    }
    Ok(())
}

/// The decoy's security group, open on its ports to the world.
async fn open_group(
    ec2: &aws_sdk_ec2::Client,
    spec: &DecoySpec,
    tags: &Tags<'_>,
    d: &mut Decoy,
) -> Result<(), StepError> {
    let sg = ec2
        .create_security_group()
        .group_name(format!("{}-web", tags.name))
        .description("firebreak decoy: open ingress, like a careless workload")
        .vpc_id(&d.vpc_id)
        .tag_specifications(tags.on(ResourceType::SecurityGroup))
        .send()
        .await
        .map_err(|e| aws_error("ec2:CreateSecurityGroup", e))?;
    d.security_group_id = required("ec2:CreateSecurityGroup", "a GroupId", sg.group_id())?;
    if spec.open_ports.is_empty() {
        return Ok(());
    }
    let mut ingress = ec2
        .authorize_security_group_ingress()
        .group_id(&d.security_group_id);
    for port in &spec.open_ports {
        let mut p = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(*port)
            .to_port(*port)
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build());
        if spec.ipv6 {
            p = p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build());
        }
        ingress = ingress.ip_permissions(p.build());
    }
    ingress
        .send()
        .await
        .map_err(|e| aws_error("ec2:AuthorizeSecurityGroupIngress", e))?;
    Ok(())
}

/// A role EC2 may assume, in an instance profile of the same name.
async fn build_role(iam: &aws_sdk_iam::Client, name: &str, d: &mut Decoy) -> Result<(), StepError> {
    let role = format!("{name}-role");
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role()
        .role_name(&role)
        .assume_role_policy_document(trust)
        .send()
        .await
        .map_err(|e| aws_error("iam:CreateRole", e))?;
    d.role_name = Some(role.clone());
    iam.create_instance_profile()
        .instance_profile_name(&role)
        .send()
        .await
        .map_err(|e| aws_error("iam:CreateInstanceProfile", e))?;
    d.instance_profile_name = Some(role.clone());
    iam.add_role_to_instance_profile()
        .instance_profile_name(&role)
        .role_name(&role)
        .send()
        .await
        .map_err(|e| aws_error("iam:AddRoleToInstanceProfile", e))?;
    Ok(())
}

/// The image to launch and its root device: the one asked for, or the
/// newest Amazon image.
async fn image_of(
    ec2: &aws_sdk_ec2::Client,
    spec: &DecoySpec,
) -> Result<(String, String), StepError> {
    let Some(i) = &spec.image_id else {
        return pick_image(ec2).await;
    };
    let out = ec2
        .describe_images()
        .image_ids(i)
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeImages", e))?;
    let root = out
        .images()
        .first()
        .and_then(|im| im.root_device_name())
        .unwrap_or("/dev/xvda")
        .to_string();
    Ok((i.clone(), root))
}

/// One mapping per volume asked for: the root where the image says its
/// root device is, the others on `/dev/sdb`, `/dev/sdc`, ...
fn mappings(spec: &DecoySpec, root_device: &str) -> Vec<BlockDeviceMapping> {
    spec.volume_gib
        .iter()
        .enumerate()
        .map(|(i, size)| {
            let device = if i == 0 {
                root_device.to_string()
            } else {
                format!(
                    "/dev/sd{}",
                    DATA_DEVICE_LETTERS.chars().nth(i - 1).unwrap_or('z')
                )
            };
            BlockDeviceMapping::builder()
                .device_name(device)
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(*size)
                        .delete_on_termination(true)
                        .build(),
                )
                .build()
        })
        .collect()
}

/// Runs the decoy instance (retrying while a new instance profile is not
/// yet visible to EC2) and notes its interfaces and volumes.
async fn launch(
    ec2: &aws_sdk_ec2::Client,
    spec: &DecoySpec,
    tags: &Tags<'_>,
    image: &str,
    root_device: &str,
    d: &mut Decoy,
) -> Result<(), StepError> {
    let mut tries = 0;
    let run = loop {
        tries += 1;
        let mut req = ec2
            .run_instances()
            .image_id(image)
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .set_block_device_mappings(Some(mappings(spec, root_device)))
            .tag_specifications(tags.on(ResourceType::Instance))
            .tag_specifications(tags.on(ResourceType::Volume));
        for idx in 0..spec.interfaces {
            let subnet = match (idx, &d.second_subnet_id) {
                (1, Some(s)) => s.clone(),
                _ => d.subnet_id.clone(),
            };
            req = req.network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(i32::from(idx))
                    .subnet_id(subnet)
                    .groups(&d.security_group_id)
                    .build(),
            );
        }
        if let Some(p) = &d.instance_profile_name {
            req = req
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        match req.send().await {
            Ok(r) => break r,
            Err(e) => {
                let propagating = error_code(&e).as_deref() == Some("InvalidParameterValue")
                    && d.instance_profile_name.is_some();
                if propagating && tries < PROFILE_PROPAGATION_TRIES {
                    tokio::time::sleep(PROFILE_PROPAGATION_DELAY).await;
                    continue;
                }
                return Err(aws_error("ec2:RunInstances", e));
            }
        }
    };
    let instance = run.instances().first().ok_or_else(|| {
        StepError::new(
            ErrorName::AwsRequestFailed,
            "RunInstances returned no instance",
        )
    })?;
    d.instance_id = required("ec2:RunInstances", "an InstanceId", instance.instance_id())?;
    d.network_interface_ids = crate::containment::ec2::interface_ids(instance);
    d.volume_ids = crate::containment::ec2::volumes(instance)
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    if spec.ipv6 {
        if let Some(first) = d.network_interface_ids.first() {
            ec2.assign_ipv6_addresses()
                .network_interface_id(first)
                .ipv6_address_count(1)
                .send()
                .await
                .map_err(|e| aws_error("ec2:AssignIpv6Addresses", e))?;
        }
    }
    Ok(())
}

/// An Elastic IP on the first interface.
async fn add_address(
    ec2: &aws_sdk_ec2::Client,
    tags: &Tags<'_>,
    d: &mut Decoy,
) -> Result<(), StepError> {
    let alloc = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .tag_specifications(tags.on(ResourceType::ElasticIp))
        .send()
        .await
        .map_err(|e| aws_error("ec2:AllocateAddress", e))?;
    let id = required(
        "ec2:AllocateAddress",
        "an AllocationId",
        alloc.allocation_id(),
    )?;
    d.allocation_id = Some(id.clone());
    d.public_ip = alloc.public_ip().map(str::to_string);
    if let Some(eni) = d.network_interface_ids.first() {
        ec2.associate_address()
            .allocation_id(&id)
            .network_interface_id(eni)
            .send()
            .await
            .map_err(|e| aws_error("ec2:AssociateAddress", e))?;
    }
    Ok(())
}

/// Creates a target group in the decoy's VPC and registers one target.
async fn target_group(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    d: &Decoy,
    kind: aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum,
    port: i32,
    target: &str,
) -> Result<String, StepError> {
    use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetDescription, TargetTypeEnum};
    let ip = kind == TargetTypeEnum::Ip;
    let what = if ip { " (ip)" } else { "" };
    // Target group names are at most 32 characters.
    let tg = elb
        .create_target_group()
        .name(format!(
            "fb-{}-{}",
            unique_suffix(),
            if ip { "ip" } else { "tg" }
        ))
        .protocol(ProtocolEnum::Http)
        .port(port)
        .vpc_id(&d.vpc_id)
        .target_type(kind)
        .send()
        .await
        .map_err(|e| aws_error(&format!("elasticloadbalancing:CreateTargetGroup{what}"), e))?;
    let arn = required(
        "elasticloadbalancing:CreateTargetGroup",
        "a TargetGroupArn",
        tg.target_groups()
            .first()
            .and_then(|t| t.target_group_arn()),
    )?;
    elb.register_targets()
        .target_group_arn(&arn)
        .targets(TargetDescription::builder().id(target).port(port).build())
        .send()
        .await
        .map_err(|e| aws_error(&format!("elasticloadbalancing:RegisterTargets{what}"), e))?;
    Ok(arn)
}

/// The instance in an instance target group, and its first interface's
/// address in an IP target group.
async fn add_target_groups(
    config: &aws_config::SdkConfig,
    ec2: &aws_sdk_ec2::Client,
    d: &mut Decoy,
) -> Result<(), StepError> {
    use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    d.target_group_arn =
        Some(target_group(&elb, d, TargetTypeEnum::Instance, 80, &d.instance_id).await?);
    let ip = ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(
            d.network_interface_ids.iter().take(1).cloned().collect(),
        ))
        .send()
        .await
        .map_err(|e| aws_error("ec2:DescribeNetworkInterfaces", e))?
        .network_interfaces()
        .first()
        .and_then(|n| n.private_ip_address())
        .map(str::to_string)
        .ok_or_else(|| {
            StepError::new(
                ErrorName::AwsRequestFailed,
                format!(
                    "ec2:DescribeNetworkInterfaces gave {}'s first interface no private address",
                    d.instance_id
                ),
            )
        })?;
    d.ip_target_group_arn = Some(target_group(&elb, d, TargetTypeEnum::Ip, 8080, &ip).await?);
    Ok(())
}

/// A Classic Load Balancer with the instance registered.
async fn add_classic(config: &aws_config::SdkConfig, d: &mut Decoy) -> Result<(), StepError> {
    let elb = aws_sdk_elasticloadbalancing::Client::new(config);
    // Classic names are at most 32 characters.
    let lb = format!("fb-{}-clb", unique_suffix());
    elb.create_load_balancer()
        .load_balancer_name(&lb)
        .listeners(
            aws_sdk_elasticloadbalancing::types::Listener::builder()
                .protocol("HTTP")
                .load_balancer_port(80)
                .instance_port(80)
                .build()
                .map_err(|e| StepError::new(ErrorName::Internal, e.to_string()))?,
        )
        .subnets(&d.subnet_id)
        .send()
        .await
        .map_err(|e| aws_error("elasticloadbalancing:CreateLoadBalancer (Classic)", e))?;
    d.classic_load_balancer = Some(lb.clone());
    elb.register_instances_with_load_balancer()
        .load_balancer_name(&lb)
        .instances(
            aws_sdk_elasticloadbalancing::types::Instance::builder()
                .instance_id(&d.instance_id)
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_error("elasticloadbalancing:RegisterInstancesWithLoadBalancer", e))?;
    Ok(())
}

/// An empty Auto Scaling group (0 desired) the decoy joins: nothing else
/// runs in it.
async fn add_auto_scaling(
    config: &aws_config::SdkConfig,
    ec2: &aws_sdk_ec2::Client,
    name: &str,
    image: &str,
    d: &mut Decoy,
) -> Result<(), StepError> {
    let lt = format!("{name}-lt");
    ec2.create_launch_template()
        .launch_template_name(&lt)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_error("ec2:CreateLaunchTemplate", e))?;
    d.launch_template = Some(lt.clone());
    let asc = aws_sdk_autoscaling::Client::new(config);
    let group = format!("{name}-asg");
    asc.create_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(&lt)
                .build(),
        )
        .min_size(0)
        .max_size(2)
        .desired_capacity(0)
        .vpc_zone_identifier(&d.subnet_id)
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:CreateAutoScalingGroup", e))?;
    d.auto_scaling_group = Some(group.clone());
    asc.attach_instances()
        .auto_scaling_group_name(&group)
        .instance_ids(&d.instance_id)
        .send()
        .await
        .map_err(|e| aws_error("autoscaling:AttachInstances", e))?;
    Ok(())
}

/// A second instance in the decoy's subnet, with the same profile (the
/// one role two instances share).
async fn add_second_instance(
    ec2: &aws_sdk_ec2::Client,
    tags: &Tags<'_>,
    image: &str,
    d: &mut Decoy,
) -> Result<(), StepError> {
    let mut req = ec2
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(&d.subnet_id)
        .tag_specifications(tags.on(ResourceType::Instance));
    if let Some(p) = &d.instance_profile_name {
        req = req.iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
    }
    let out = req
        .send()
        .await
        .map_err(|e| aws_error("ec2:RunInstances (second)", e))?;
    d.second_instance_id = Some(required(
        "ec2:RunInstances (second)",
        "an InstanceId",
        out.instances().first().and_then(|i| i.instance_id()),
    )?);
    Ok(())
}

/// Builds the decoy `spec` describes, noting in `d` each thing as soon as
/// it exists (so that a failure part way can still be torn down).
async fn build(
    config: &aws_config::SdkConfig,
    spec: &DecoySpec,
    d: &mut Decoy,
) -> Result<(), StepError> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let name = format!("{}-{}", spec.name, unique_suffix());
    let tags = Tags {
        name: &name,
        decoy: &spec.name,
    };
    build_network(&ec2, spec, &tags, d).await?;
    open_group(&ec2, spec, &tags, d).await?;
    if spec.instance_profile {
        build_role(&aws_sdk_iam::Client::new(config), &name, d).await?;
    }
    let (image, root_device) = image_of(&ec2, spec).await?;
    launch(&ec2, spec, &tags, &image, &root_device, d).await?;
    if spec.elastic_ip {
        add_address(&ec2, &tags, d).await?;
    }
    if spec.target_group {
        add_target_groups(config, &ec2, d).await?;
    }
    if spec.classic_load_balancer {
        add_classic(config, d).await?;
    }
    if spec.auto_scaling {
        add_auto_scaling(config, &ec2, &name, &image, d).await?;
    }
    if spec.second_instance {
        add_second_instance(&ec2, &tags, &image, d).await?;
    }
    Ok(())
}

/// Deletes everything a decoy is made of (whatever of it exists), and the
/// snapshots taken of it for `case` (rehearsals only: never run this on a
/// real case). Turns termination protection off first, as containment
/// turns it on, and waits (bounded) for the instances to be gone before
/// the network. Keeps going past failures; returns what was deleted and
/// what failed.
pub async fn delete(
    config: &aws_config::SdkConfig,
    decoy: &Decoy,
    case: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let mut t = Tally::default();
    delete_service(config, &mut t, decoy).await;
    delete_instances(&ec2, &mut t, decoy, case).await;
    delete_role(config, &mut t, decoy).await;
    delete_network(&ec2, &mut t, decoy).await;
    (t.done, t.failed)
}

/// What a deletion did and what it could not do.
#[derive(Default)]
struct Tally {
    done: Vec<String>,
    failed: Vec<String>,
}

impl Tally {
    fn note<T, E, R>(
        &mut self,
        what: String,
        r: Result<T, aws_smithy_runtime_api::client::result::SdkError<E, R>>,
    ) where
        E: std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        match r {
            Ok(_) => self.done.push(what),
            Err(e) => self
                .failed
                .push(format!("{what}: {}", crate::error::explain(&e))),
        }
    }
}

/// One deletion, noted in the tally.
macro_rules! attempt {
    ($t:expr, $what:expr, $call:expr) => {
        $t.note($what.to_string(), $call.await)
    };
}

/// The Auto Scaling group, launch template, target groups and Classic
/// Load Balancer.
async fn delete_service(config: &aws_config::SdkConfig, t: &mut Tally, decoy: &Decoy) {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let asc = aws_sdk_autoscaling::Client::new(config);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    if let Some(g) = &decoy.auto_scaling_group {
        attempt!(
            t,
            format!("Auto Scaling group {g}"),
            asc.delete_auto_scaling_group()
                .auto_scaling_group_name(g)
                .force_delete(true)
                .send()
        );
    }
    if let Some(lt) = &decoy.launch_template {
        attempt!(
            t,
            format!("launch template {lt}"),
            ec2.delete_launch_template().launch_template_name(lt).send()
        );
    }
    for tg in decoy
        .target_group_arn
        .iter()
        .chain(decoy.ip_target_group_arn.iter())
    {
        attempt!(
            t,
            format!("target group {tg}"),
            elb.delete_target_group().target_group_arn(tg).send()
        );
    }
    if let Some(lb) = &decoy.classic_load_balancer {
        attempt!(
            t,
            format!("Classic Load Balancer {lb}"),
            aws_sdk_elasticloadbalancing::Client::new(config)
                .delete_load_balancer()
                .load_balancer_name(lb)
                .send()
        );
    }
}

/// The instances (waited for until terminated), the Elastic IP and the
/// case's snapshots.
async fn delete_instances(
    ec2: &aws_sdk_ec2::Client,
    t: &mut Tally,
    decoy: &Decoy,
    case: Option<&str>,
) {
    let mut instances: Vec<String> = Vec::new();
    if !decoy.instance_id.is_empty() {
        instances.push(decoy.instance_id.clone());
    }
    instances.extend(decoy.second_instance_id.clone());
    if !instances.is_empty() {
        for i in &instances {
            attempt!(
                t,
                format!("termination protection off on {i}"),
                ec2.modify_instance_attribute()
                    .instance_id(i)
                    .disable_api_termination(
                        aws_sdk_ec2::types::AttributeBooleanValue::builder()
                            .value(false)
                            .build()
                    )
                    .send()
            );
        }
        attempt!(
            t,
            format!("instances {}", instances.join(", ")),
            ec2.terminate_instances()
                .set_instance_ids(Some(instances.clone()))
                .send()
        );
        for _ in 0..TERMINATION_CHECKS {
            let gone = match ec2
                .describe_instances()
                .set_instance_ids(Some(instances.clone()))
                .send()
                .await
            {
                Ok(out) => out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .all(|i| {
                        i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("terminated")
                    }),
                Err(_) => true,
            };
            if gone {
                break;
            }
            tokio::time::sleep(TERMINATION_CHECK_DELAY).await;
        }
    }
    if let Some(alloc) = &decoy.allocation_id {
        attempt!(
            t,
            format!("Elastic IP {alloc}"),
            ec2.release_address().allocation_id(alloc).send()
        );
    }
    if let Some(case) = case {
        if let Ok(out) = ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter(&format!("tag:{}", crate::tags::CASE), [case]))
            .send()
            .await
        {
            for s in out.snapshots() {
                if let Some(id) = s.snapshot_id() {
                    attempt!(
                        t,
                        format!("snapshot {id}"),
                        ec2.delete_snapshot().snapshot_id(id).send()
                    );
                }
            }
        }
    }
}

/// firebreak's policies on the role, its inline policies, the instance
/// profile and the role.
async fn delete_role(config: &aws_config::SdkConfig, t: &mut Tally, decoy: &Decoy) {
    let iam = aws_sdk_iam::Client::new(config);
    if let Some(role) = &decoy.role_name {
        // firebreak's managed deny policies, left when a rehearsal kept them.
        if let Ok(out) = iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
        {
            for p in out.attached_policies() {
                let Some(arn) = p.policy_arn() else { continue };
                attempt!(
                    t,
                    format!("detach {arn} from {role}"),
                    iam.detach_role_policy()
                        .role_name(role)
                        .policy_arn(arn)
                        .send()
                );
                if arn.contains(":policy/firebreak/") {
                    if let Ok(v) = iam.list_policy_versions().policy_arn(arn).send().await {
                        for ver in v.versions().iter().filter(|v| !v.is_default_version()) {
                            if let Some(id) = ver.version_id() {
                                attempt!(
                                    t,
                                    format!("version {id} of {arn}"),
                                    iam.delete_policy_version()
                                        .policy_arn(arn)
                                        .version_id(id)
                                        .send()
                                );
                            }
                        }
                    }
                    attempt!(
                        t,
                        format!("policy {arn}"),
                        iam.delete_policy().policy_arn(arn).send()
                    );
                }
            }
        }
        if let Ok(out) = iam.list_role_policies().role_name(role).send().await {
            for p in out.policy_names() {
                attempt!(
                    t,
                    format!("inline policy {p} of {role}"),
                    iam.delete_role_policy()
                        .role_name(role)
                        .policy_name(p)
                        .send()
                );
            }
        }
        if let Some(profile) = &decoy.instance_profile_name {
            attempt!(
                t,
                format!("role {role} out of {profile}"),
                iam.remove_role_from_instance_profile()
                    .instance_profile_name(profile)
                    .role_name(role)
                    .send()
            );
            attempt!(
                t,
                format!("instance profile {profile}"),
                iam.delete_instance_profile()
                    .instance_profile_name(profile)
                    .send()
            );
        }
        attempt!(
            t,
            format!("role {role}"),
            iam.delete_role().role_name(role).send()
        );
    }
}

/// Every non-default group of the VPC, the internet gateway, the subnets
/// and the VPC.
async fn delete_network(ec2: &aws_sdk_ec2::Client, t: &mut Tally, decoy: &Decoy) {
    if !decoy.vpc_id.is_empty() {
        // Every non-default group of the decoy's VPC: its own and firebreak's.
        if let Ok(out) = ec2
            .describe_security_groups()
            .filters(filter("vpc-id", [decoy.vpc_id.as_str()]))
            .send()
            .await
        {
            for g in out.security_groups() {
                if g.group_name() == Some("default") {
                    continue;
                }
                if let Some(id) = g.group_id() {
                    attempt!(
                        t,
                        format!("security group {id}"),
                        ec2.delete_security_group().group_id(id).send()
                    );
                }
            }
        }
        if let Some(igw) = &decoy.internet_gateway_id {
            attempt!(
                t,
                format!("detach {igw}"),
                ec2.detach_internet_gateway()
                    .internet_gateway_id(igw)
                    .vpc_id(&decoy.vpc_id)
                    .send()
            );
            attempt!(
                t,
                format!("internet gateway {igw}"),
                ec2.delete_internet_gateway()
                    .internet_gateway_id(igw)
                    .send()
            );
        }
        for subnet in std::iter::once(&decoy.subnet_id)
            .chain(decoy.second_subnet_id.iter())
            .filter(|s| !s.is_empty())
        {
            attempt!(
                t,
                format!("subnet {subnet}"),
                ec2.delete_subnet().subnet_id(subnet).send()
            );
        }
        attempt!(
            t,
            format!("VPC {}", decoy.vpc_id),
            ec2.delete_vpc().vpc_id(&decoy.vpc_id).send()
        );
    }
}
