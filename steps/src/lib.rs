//! firebreak's incident-response steps over the AWS SDK, in one folder
//! per phase: `containment/` (the instance's network, addresses, load
//! balancers, Auto Scaling, credentials, snapshots, tags, and release),
//! `evidence/` (the evidence bucket, custody, memory capture and
//! analysis, the tools sent to hosts), `sandbox/` (decoys and rehearsals).
//!
//! Steps talk to AWS; they may import `firebreak_workflows` and
//! `firebreak_forensics`, never the playbooks or the CLI.
//!
//! Each step is a typed [`firebreak_workflows::step::StepDef`] with an
//! implementation ([`step::Step`]) that is idempotent, reads back what
//! it changed, and in a dry run only reads and sends EC2 mutations with
//! `DryRun=true`.

// The engine's side: the case file, identifiers, configuration, the step
// context and errors, the registry.
pub mod case;
pub mod cases;
pub mod config;
pub mod context;
pub mod error;
pub mod ids;
pub mod registry;
pub mod standard;
pub mod step;

// The phases, as the playbooks and docs/ name them.
pub mod containment;
pub mod evidence;
pub mod notify;
pub mod sandbox;

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
