//! firebreak's incident-response steps over the AWS SDK.
//!
//! Each step is a typed [`firebreak_workflows::step::StepDef`] with an
//! implementation ([`step::Step`]) that is idempotent, reads back what
//! it changed, and in a dry run only reads and sends EC2 mutations with
//! `DryRun=true`.

pub mod analysis;
pub mod autoscaling;
pub mod case;
pub mod cases;
pub mod config;
pub mod context;
pub mod custody;
pub mod decoy;
pub mod ec2;
pub mod elbv2;
pub mod error;
pub mod evidence;
pub mod iam;
pub mod ids;
pub mod memory;
pub mod registry;
pub mod rehearsal;
pub mod standard;
pub mod step;
pub mod tools;

pub use context::{AwsClients, Mode, StepContext};
pub use error::StepError;
pub use registry::{Registry, Step, StepRunner};

/// Tag keys firebreak writes.
pub mod tags {
    /// The case an instance, group or snapshot belongs to.
    pub const CASE: &str = "firebreak:case";
    /// What a firebreak-made resource is for (`isolation`, `transition`).
    pub const ROLE: &str = "firebreak:role";
    /// Which of firebreak's groups a security group is (its intended
    /// name): groups are found by this tag, never by name alone.
    pub const GROUP: &str = "firebreak:group";
    /// Where the case stands for an instance (`contained`, `released`).
    pub const STATUS: &str = "firebreak:status";
    /// The instance a snapshot was taken from.
    pub const INSTANCE: &str = "firebreak:instance";
}
