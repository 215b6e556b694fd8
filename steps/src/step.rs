//! What a step implementation is. A leaf of the crate (the steps import
//! it; it imports none of them), apart from the registry that dispatches
//! to the steps.

use async_trait::async_trait;
use firebreak_workflows::step::StepDef;

use crate::context::StepContext;
use crate::error::StepError;

/// A step implementation.
#[async_trait]
pub trait Step: StepDef {
    /// Runs the step. Every step is idempotent: running it again with the
    /// same input changes nothing more and creates nothing twice.
    async fn run(ctx: &StepContext, input: Self::Input) -> Result<Self::Output, StepError>;
}
