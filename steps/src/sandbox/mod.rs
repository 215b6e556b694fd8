//! The sandbox side: decoy instances with every lever, and the rehearsal
//! that contains and releases one and checks each lever by reading AWS.

pub mod decoy;
pub mod rehearsal;
