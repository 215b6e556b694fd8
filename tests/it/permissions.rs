//! Each step runs with exactly the IAM statements it declares
//! (`StepDef::iam`, what the deployed roles and docs/iam-permissions.md
//! are made from), in a moto server of the test's own that enforces IAM.

use firebreak_steps::containment::ec2::{
    DisassociateElasticIps, ProtectInstance, RecordInstanceState, TagInstance,
};
use firebreak_steps::containment::elbv2::DeregisterFromTargetGroups;
use firebreak_workflows::iam::{PolicyDocument, Statement};
use firebreak_workflows::step::StepDef;
use serde_json::{json, Value};

use crate::support::{stderr, EnforcingMoto, REGION};

/// An IAM user of the enforcing server with this policy; gives its key.
async fn user(iam: &aws_sdk_iam::Client, name: &str, statements: &[Statement]) -> (String, String) {
    iam.create_user()
        .user_name(name)
        .send()
        .await
        .expect("create user");
    let doc = serde_json::to_string(&PolicyDocument::gather(statements)).expect("policy JSON");
    iam.put_user_policy()
        .user_name(name)
        .policy_name("declared")
        .policy_document(doc)
        .send()
        .await
        .expect("put policy");
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .expect("key")
        .access_key
        .expect("key");
    (
        key.access_key_id().to_string(),
        key.secret_access_key().to_string(),
    )
}

fn firebreak_as(
    url: &str,
    key: &(String, String),
    state: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .env("FIREBREAK_STATE_DIR", state)
        .env("AWS_ENDPOINT_URL", url)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("firebreak runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_each_step_runs_with_exactly_the_permissions_it_declares() {
    // GIVEN an account that enforces IAM: the first three calls make an
    // administrator, who makes the bucket and an instance
    let moto = EnforcingMoto::start(3);
    let bootstrap = crate::support::config_at(&moto.url, REGION, ("test", "test")).await;
    let iam = aws_sdk_iam::Client::new(&bootstrap);
    iam.create_user()
        .user_name("admin")
        .send()
        .await
        .expect("admin");
    iam.put_user_policy()
        .user_name("admin")
        .policy_name("all")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
        .send()
        .await
        .expect("admin policy");
    let k = iam
        .create_access_key()
        .user_name("admin")
        .send()
        .await
        .expect("key")
        .access_key
        .expect("key");
    let admin = (
        k.access_key_id().to_string(),
        k.secret_access_key().to_string(),
    );
    let state = std::env::temp_dir().join(format!("firebreak-perm-{}", std::process::id()));
    let out = firebreak_as(&moto.url, &admin, &state, &["setup"]);
    assert_eq!(out.status.code(), Some(0), "setup: {}", stderr(&out));
    let admin_config = crate::support::config_at(&moto.url, REGION, (&admin.0, &admin.1)).await;
    // A plain instance in the default VPC (`decoy create` is refused by
    // moto's signature check in IAM mode on CreateSecurityGroup, whose
    // description has a colon and a comma; boto3's same call passes).
    let ec2 = aws_sdk_ec2::Client::new(&admin_config);
    let images = ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("images");
    let image = images
        .images()
        .first()
        .and_then(|i| i.image_id())
        .expect("an Amazon image")
        .to_string();
    let run = ec2
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("run instance");
    let instance = run.instances()[0].instance_id().expect("id").to_string();
    let iam = aws_sdk_iam::Client::new(&admin_config);
    let bucket = "firebreak-evidence-123456789012-us-east-1";
    let whoami = Statement::allow(["sts:GetCallerIdentity"], ["*"]);

    // WHEN each step runs as a user holding only what the step declares
    // (and who it is: every command asks STS first)
    // isolate_network and snapshot_volumes are not here: moto's signature
    // check refuses their CreateSecurityGroup and CreateSnapshots in IAM
    // mode (their descriptions have punctuation; see the instance above).
    let of_instance = json!({"case_id": "perm-1", "instance_id": instance});
    let steps: [(&str, Vec<Statement>, Value); 5] = [
        (
            RecordInstanceState::NAME,
            RecordInstanceState::iam(),
            json!({"case_id": "perm-1", "instance_id": instance, "evidence_bucket": bucket, "actor": "it"}),
        ),
        (
            ProtectInstance::NAME,
            ProtectInstance::iam(),
            of_instance.clone(),
        ),
        (
            DisassociateElasticIps::NAME,
            DisassociateElasticIps::iam(),
            of_instance.clone(),
        ),
        (
            DeregisterFromTargetGroups::NAME,
            DeregisterFromTargetGroups::iam(),
            of_instance.clone(),
        ),
        (
            TagInstance::NAME,
            TagInstance::iam(),
            json!({"case_id": "perm-1", "instance_id": instance, "status": "contained"}),
        ),
    ];
    for (name, statements, input) in steps {
        // moto evaluates EC2 and most other actions against Resource "*",
        // so a statement scoped to ARNs never matches there: the test
        // checks the declared actions (resources widened, conditions
        // dropped); the ARN scoping is checked by parliament on the
        // generated policies.
        let mut statements: Vec<Statement> = statements
            .into_iter()
            .filter(|s| s.effect == firebreak_workflows::iam::Effect::Allow)
            .map(|mut s| {
                s.resource = vec!["*".into()];
                s.condition = None;
                s
            })
            .collect();
        statements.push(whoami.clone());
        let key = user(
            &iam,
            &format!("step-{}", name.replace('_', "-")),
            &statements,
        )
        .await;
        let out = firebreak_as(
            &moto.url,
            &key,
            &state,
            &["step", name, "--input", &input.to_string(), "-q"],
        );
        // THEN it succeeds: no call it makes is missing from its declaration
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} with its declared permissions: {}",
            stderr(&out)
        );
    }
    let _ = std::fs::remove_dir_all(&state);
}
