//! Helpers: the sandbox's address, SDK clients for it, running the CLI.

use std::process::{Command, Output};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde_json::Value;

/// The sandbox endpoint set by `scripts/test`.
pub fn sandbox_url() -> String {
    std::env::var("FIREBREAK_SANDBOX_URL").unwrap_or_else(|_| {
        panic!("FIREBREAK_SANDBOX_URL is not set: run the tests with scripts/test, which starts the sandbox (moto server)")
    })
}

pub const REGION: &str = "us-east-1";

/// SDK configuration for the sandbox.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(sandbox_url())
        .region(Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "firebreak-tests",
        ))
        .load()
        .await
}

/// Runs the firebreak binary against the sandbox.
pub fn firebreak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env("AWS_ENDPOINT_URL", sandbox_url())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the firebreak binary runs")
}

/// Runs the firebreak binary without any AWS environment.
pub fn firebreak_offline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("the firebreak binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh decoy in the sandbox (its own VPC), made by the CLI.
pub fn decoy() -> Value {
    let out = firebreak(&["decoy", "create", "--output", "json"]);
    assert!(
        out.status.success(),
        "decoy create failed: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("decoy JSON")
}

pub fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_string()
}
