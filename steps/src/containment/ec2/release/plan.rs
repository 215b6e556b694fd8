//! What release changes, decided from the record and the live state alone
//! (no AWS call): the executor in `mod.rs` carries it out area by area.
//!
//! Auto Scaling is not planned here: what it needs (membership, the
//! group's desired capacity and the other contained instances) is read
//! during the release, after the instance itself is back.

use firebreak_forensics::instance_state::{
    ElasticIpRecord, InstanceStateRecord, TargetRegistration,
};
use serde::Serialize;

/// The changes that bring an instance from its live state back to its
/// record, in the order release makes them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct ReleasePlan {
    /// DeleteOnTermination to set back on volumes (one call for all).
    pub(crate) delete_on_termination: Vec<VolumeFlag>,
    /// InstanceInitiatedShutdownBehavior to set back (`stop`/`terminate`).
    pub(crate) shutdown_behavior: Option<String>,
    /// DisableApiStop (stop protection) to set back.
    pub(crate) disable_api_stop: Option<bool>,
    /// The instance profile association to put back, if it differs.
    pub(crate) profile: Option<ProfileChange>,
    /// Elastic IPs to associate again with their recorded interface and
    /// private address.
    pub(crate) addresses: Vec<ElasticIpRecord>,
    /// Recorded interfaces no longer attached: release cannot restore
    /// them and fails when it reaches the interfaces.
    pub(crate) missing_interfaces: Vec<String>,
    /// Interfaces whose security groups go back to the recorded set (this
    /// is where the network opens).
    pub(crate) interface_groups: Vec<InterfaceGroups>,
    /// Interfaces whose source/destination check goes back.
    pub(crate) source_dest_checks: Vec<SourceDestCheck>,
    /// Target group registrations to make again.
    pub(crate) target_groups: Vec<TargetRegistration>,
    /// Classic Load Balancers to register the instance with again (names).
    pub(crate) classic_load_balancers: Vec<String>,
    /// DisableApiTermination to set back, last of all.
    pub(crate) disable_api_termination: Option<bool>,
}

/// A volume's DeleteOnTermination as recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct VolumeFlag {
    /// The volume (`vol-...`), for the operator.
    pub(crate) volume_id: String,
    /// The device it is attached as, which the API call names.
    pub(crate) device_name: String,
    /// The recorded value.
    pub(crate) delete_on_termination: bool,
}

/// How the instance profile association goes back to the record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) enum ProfileChange {
    /// None now: associate the recorded profile (ARN).
    Associate {
        /// The recorded profile's ARN.
        arn: String,
    },
    /// Another profile now: replace it with the recorded one.
    Replace {
        /// The live association (`iip-assoc-...`); `None` when EC2 did not
        /// say, which the executor refuses rather than guess.
        association_id: Option<String>,
        /// The recorded profile's ARN.
        arn: String,
    },
    /// A profile now where none was recorded: remove it.
    Disassociate {
        /// The live association, as for `Replace`.
        association_id: Option<String>,
    },
}

/// An interface's security groups as recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct InterfaceGroups {
    /// The interface (`eni-...`).
    pub(crate) network_interface_id: String,
    /// The recorded group ids, in the order EC2 reported them.
    pub(crate) groups: Vec<String>,
}

/// An interface's source/destination check as recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct SourceDestCheck {
    /// The interface (`eni-...`).
    pub(crate) network_interface_id: String,
    /// The recorded value.
    pub(crate) value: bool,
}

impl ReleasePlan {
    /// The plan that brings `now` back to `rec`. What already matches is
    /// left out, so a release run twice plans nothing the second time.
    pub(crate) fn of(rec: &InstanceStateRecord, now: &InstanceStateRecord) -> ReleasePlan {
        let (missing_interfaces, interface_groups, source_dest_checks) = interfaces(rec, now);
        let (target_groups, classic_load_balancers) = load_balancers(rec, now);
        ReleasePlan {
            delete_on_termination: volume_flags(rec, now),
            shutdown_behavior: rec
                .shutdown_behavior
                .clone()
                .filter(|v| now.shutdown_behavior.as_ref() != Some(v)),
            disable_api_stop: rec
                .disable_api_stop
                .filter(|v| Some(*v) != now.disable_api_stop),
            profile: profile(rec, now),
            addresses: addresses(rec, now),
            missing_interfaces,
            interface_groups,
            source_dest_checks,
            target_groups,
            classic_load_balancers,
            disable_api_termination: rec
                .disable_api_termination
                .filter(|v| Some(*v) != now.disable_api_termination),
        }
    }
}

/// Volumes whose DeleteOnTermination differs from the record (those the
/// record knows the device and the value of).
fn volume_flags(rec: &InstanceStateRecord, now: &InstanceStateRecord) -> Vec<VolumeFlag> {
    rec.volumes
        .iter()
        .filter_map(|v| {
            let want = v.delete_on_termination?;
            let device = v.device_name.clone()?;
            let cur = now
                .volumes
                .iter()
                .find(|n| n.volume_id == v.volume_id)
                .and_then(|n| n.delete_on_termination);
            (cur != Some(want)).then(|| VolumeFlag {
                volume_id: v.volume_id.clone(),
                device_name: device,
                delete_on_termination: want,
            })
        })
        .collect()
}

fn profile(rec: &InstanceStateRecord, now: &InstanceStateRecord) -> Option<ProfileChange> {
    let want = rec.instance_profile.as_ref().and_then(|p| p.arn.clone());
    match (want, now.instance_profile.as_ref()) {
        (Some(arn), None) => Some(ProfileChange::Associate { arn }),
        (Some(arn), Some(cur)) if cur.arn.as_deref() != Some(arn.as_str()) => {
            Some(ProfileChange::Replace {
                association_id: cur.association_id.clone(),
                arn,
            })
        }
        (None, Some(cur)) => Some(ProfileChange::Disassociate {
            association_id: cur.association_id.clone(),
        }),
        _ => None,
    }
}

/// Recorded Elastic IP associations (of an interface) not in place now.
fn addresses(rec: &InstanceStateRecord, now: &InstanceStateRecord) -> Vec<ElasticIpRecord> {
    rec.elastic_ips
        .iter()
        .filter(|eip| {
            let Some(eni) = &eip.network_interface_id else {
                return false;
            };
            !now.elastic_ips.iter().any(|e| {
                e.allocation_id == eip.allocation_id
                    && e.network_interface_id.as_deref() == Some(eni.as_str())
                    && e.private_ip == eip.private_ip
            })
        })
        .cloned()
        .collect()
}

/// The interfaces part: which recorded interfaces are gone, whose groups
/// (compared as sets) and whose source/destination check go back.
fn interfaces(
    rec: &InstanceStateRecord,
    now: &InstanceStateRecord,
) -> (Vec<String>, Vec<InterfaceGroups>, Vec<SourceDestCheck>) {
    let (mut missing, mut groups, mut checks) = (Vec::new(), Vec::new(), Vec::new());
    for eni in &rec.network_interfaces {
        let id = &eni.network_interface_id;
        let Some(cur) = now
            .network_interfaces
            .iter()
            .find(|n| &n.network_interface_id == id)
        else {
            missing.push(id.clone());
            continue;
        };
        let mut want = eni.security_group_ids.clone();
        want.sort();
        let mut have = cur.security_group_ids.clone();
        have.sort();
        if want != have {
            groups.push(InterfaceGroups {
                network_interface_id: id.clone(),
                groups: eni.security_group_ids.clone(),
            });
        }
        if let (Some(want), Some(have)) = (eni.source_dest_check, cur.source_dest_check) {
            if want != have {
                checks.push(SourceDestCheck {
                    network_interface_id: id.clone(),
                    value: want,
                });
            }
        }
    }
    (missing, groups, checks)
}

/// Registrations (target groups, then Classic Load Balancers) recorded
/// and not in place in `now`.
pub(crate) fn load_balancers(
    rec: &InstanceStateRecord,
    now: &InstanceStateRecord,
) -> (Vec<TargetRegistration>, Vec<String>) {
    (
        rec.target_groups
            .iter()
            .filter(|r| !now.target_groups.contains(r))
            .cloned()
            .collect(),
        rec.classic_load_balancers
            .iter()
            .filter(|lb| !now.classic_load_balancers.contains(lb))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_forensics::instance_state::{
        InstanceProfileRecord, NetworkInterfaceRecord, VolumeRecord,
    };

    fn interface(id: &str, groups: &[&str], check: bool) -> NetworkInterfaceRecord {
        NetworkInterfaceRecord {
            network_interface_id: id.into(),
            device_index: Some(0),
            vpc_id: Some("vpc-1".into()),
            subnet_id: Some("subnet-1".into()),
            security_group_ids: groups.iter().map(|g| g.to_string()).collect(),
            source_dest_check: Some(check),
            private_ip_addresses: vec!["10.0.0.5".into()],
            ipv6_addresses: vec![],
            public_ip: None,
        }
    }

    fn volume(id: &str, device: Option<&str>, delete: Option<bool>) -> VolumeRecord {
        VolumeRecord {
            volume_id: id.into(),
            device_name: device.map(str::to_string),
            delete_on_termination: delete,
            size_gib: Some(8),
            encrypted: Some(true),
            kms_key_id: None,
        }
    }

    fn eip(alloc: &str, eni: Option<&str>) -> ElasticIpRecord {
        ElasticIpRecord {
            allocation_id: alloc.into(),
            public_ip: Some("198.51.100.7".into()),
            association_id: eni.map(|_| format!("eipassoc-{alloc}")),
            network_interface_id: eni.map(str::to_string),
            private_ip: eni.map(|_| "10.0.0.5".to_string()),
        }
    }

    fn registration(arn: &str) -> TargetRegistration {
        TargetRegistration {
            target_group_arn: arn.into(),
            port: Some(443),
            ip: None,
            availability_zone: None,
        }
    }

    /// The instance as recorded before containment.
    fn recorded() -> InstanceStateRecord {
        InstanceStateRecord {
            instance_id: "i-0123456789abcdef0".into(),
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
            captured_at: "2026-12-01T10:00:00Z".parse().expect("time"),
            state: "running".into(),
            instance_type: Some("m5.large".into()),
            image_id: Some("ami-12345678".into()),
            vpc_id: Some("vpc-1".into()),
            subnet_id: Some("subnet-1".into()),
            launch_time: None,
            network_interfaces: vec![
                interface("eni-a", &["sg-web", "sg-admin"], true),
                interface("eni-b", &["sg-db"], false),
            ],
            volumes: vec![
                volume("vol-root", Some("/dev/xvda"), Some(true)),
                volume("vol-data", Some("/dev/xvdb"), Some(false)),
                volume("vol-unknown", None, Some(true)),
            ],
            instance_profile: Some(InstanceProfileRecord {
                association_id: Some("iip-assoc-1".into()),
                arn: Some("arn:aws:iam::123456789012:instance-profile/web".into()),
            }),
            disable_api_termination: Some(false),
            disable_api_stop: Some(false),
            shutdown_behavior: Some("stop".into()),
            elastic_ips: vec![eip("eipalloc-1", Some("eni-a")), eip("eipalloc-2", None)],
            auto_scaling: None,
            target_groups: vec![
                registration(
                    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/1",
                ),
                registration(
                    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/2",
                ),
            ],
            classic_load_balancers: vec!["legacy-web".into()],
            tags: Default::default(),
            console_output: None,
        }
    }

    /// The same instance contained: isolated groups, stop and termination
    /// protection on, volumes kept, the address detached, out of the load
    /// balancers (one target group already back), the profile replaced.
    fn contained() -> InstanceStateRecord {
        let mut now = recorded();
        now.network_interfaces = vec![
            interface("eni-a", &["sg-firebreak-isolation"], false),
            interface("eni-b", &["sg-db"], false),
        ];
        now.volumes = vec![
            volume("vol-root", Some("/dev/xvda"), Some(false)),
            volume("vol-data", Some("/dev/xvdb"), Some(false)),
            volume("vol-unknown", None, Some(false)),
        ];
        now.instance_profile = Some(InstanceProfileRecord {
            association_id: Some("iip-assoc-2".into()),
            arn: Some("arn:aws:iam::123456789012:instance-profile/quarantine".into()),
        });
        now.disable_api_termination = Some(true);
        now.disable_api_stop = Some(true);
        now.shutdown_behavior = Some("stop".into());
        now.elastic_ips = vec![eip("eipalloc-2", None)];
        now.target_groups = vec![registration(
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/2",
        )];
        now.classic_load_balancers = vec![];
        now
    }

    #[test]
    fn a_contained_instance_is_planned_back_to_its_record() {
        insta::assert_json_snapshot!(ReleasePlan::of(&recorded(), &contained()));
    }

    #[test]
    fn a_released_instance_plans_nothing() {
        assert_eq!(
            ReleasePlan::of(&recorded(), &recorded()),
            ReleasePlan::default()
        );
    }

    #[test]
    fn a_profile_added_or_lost_and_an_interface_gone() {
        let rec = recorded();
        let mut now = contained();
        now.instance_profile = None;
        now.network_interfaces
            .retain(|n| n.network_interface_id == "eni-a");
        let mut bare = recorded();
        bare.instance_profile = None;
        insta::assert_json_snapshot!((
            ReleasePlan::of(&rec, &now).profile,
            ReleasePlan::of(&rec, &now).missing_interfaces,
            ReleasePlan::of(&bare, &contained()).profile,
        ));
    }
}
