//! The steps firebreak ships, registered by name. Kept apart from the
//! registry and the steps, so that neither imports the other in a loop.

use crate::containment::{autoscaling, ec2, elbv2, iam};
use crate::evidence::{analysis, memory};
use crate::notify;
use crate::registry::Registry;

impl Registry {
    /// Every step firebreak ships.
    pub fn standard() -> Registry {
        Registry::new()
            .register::<ec2::RecordInstanceState>()
            .register::<ec2::ProtectInstance>()
            .register::<ec2::IsolateNetwork>()
            .register::<ec2::DisassociateElasticIps>()
            .register::<ec2::CutNetworkAcls>()
            .register::<autoscaling::DetachFromAutoScaling>()
            .register::<elbv2::DeregisterFromTargetGroups>()
            .register::<iam::RevokeInstanceCredentials>()
            .register::<iam::RestrictCredentialsToVpc>()
            .register::<ec2::ReleaseInstance>()
            .register::<ec2::CopySnapshots>()
            .register::<ec2::SnapshotVolumes>()
            .register::<ec2::AwaitSnapshots>()
            .register::<ec2::HashSnapshots>()
            .register::<ec2::ReadSnapshotHashes>()
            .register::<ec2::TagInstance>()
            .register::<memory::StartMemoryCapture>()
            .register::<memory::AwaitMemoryCapture>()
            .register::<memory::VerifyMemoryCapture>()
            .register::<memory::ReadMemoryEvidence>()
            .register::<analysis::AnalyzeMemory>()
            .register::<analysis::ReadAnalysis>()
            .register::<notify::RequestApproval>()
            .register::<notify::AnnounceStart>()
            .register::<notify::AnnounceEnd>()
    }
}
