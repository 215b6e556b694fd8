//! Pure evidence logic for firebreak: the records that describe evidence
//! and the SHA-256 digests that make them verifiable. No AWS SDK here, and
//! no panics: every failure is a typed error.
//!
//! ```
//! use firebreak_forensics::hash::sha256_reader;
//! let d = sha256_reader(&b"abc"[..]).unwrap();
//! assert_eq!(d.size, 3);
//! assert_eq!(d.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod capture;
pub mod coverage;
pub mod custody;
pub mod elf;
pub mod hash;
pub mod instance_state;
pub mod lime;
pub mod volatility;
