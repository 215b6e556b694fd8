//! Containment and release: record the instance's state, protect it, take
//! it out of Auto Scaling and load balancers, take away its public
//! addresses, isolate every interface, cut the network ACLs, deny its
//! credentials, snapshot its volumes, tag it; and restore all of it on
//! release (docs/containment-and-release.md).

pub mod autoscaling;
pub mod ec2;
pub mod elbv2;
pub mod iam;
