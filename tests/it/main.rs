//! firebreak's integration tests: one binary, one module per area.
//!
//! Tests whose name starts with `sandbox_` need the sandbox AWS (moto
//! server): `scripts/test` starts one and sets `FIREBREAK_SANDBOX_URL`.
//! Tests that run external checkers find them through environment
//! variables set by the same script (`ASL_VALIDATOR`).

mod faults;
mod support;

mod accounts;
mod alerts;
mod approval;
mod asl_validator;
mod collect;
mod compile_cli;
mod contain;
mod custody;
mod differential;
mod dry_run;
mod evidence;
mod graph_cli;
mod holes;
mod host;
mod infra;
mod memory;
mod notify;
mod operator;
mod permissions;
mod remote;
mod report;
mod respond;
mod run_cli;
mod sfn_moto;
mod snapshot_hash;
mod validate_cli;
