//! The notification handler against Step Functions in moto: the state
//! machine is the compiled `ec2-compromise`; the handler starts it once
//! per finding and instance, and the sixth automatic containment within an
//! hour waits for approval. Each test has a moto server of its own, which
//! does not run executions: run in the shared sandbox, they would invoke
//! the step runner and take the Lambda results other tests queued there.

use std::collections::BTreeMap;

use firebreak_lambdas::notify::Notifier;
use firebreak_playbooks::alerts::triggers::Triggers;
use serde_json::Value;

use crate::support::{firebreak_offline, stderr, stdout, EnforcingMoto, REGION};

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/alerts")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture is JSON")
}

async fn notifier(tag: &str, moto: &EnforcingMoto) -> (Notifier, aws_sdk_sfn::Client, String) {
    let config = crate::support::config_at(&moto.url, REGION, ("test", "test")).await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    // As deployed: the step runner's ARN substituted into the definition.
    let out = firebreak_offline(&[
        "compile",
        "ec2-compromise",
        "--step-runner-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:firebreak-step-runner",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let definition = stdout(&out);
    let arn = sfn
        .create_state_machine()
        .name(format!(
            "firebreak-ec2-compromise-{tag}-{}",
            std::process::id()
        ))
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/firebreak-states")
        .send()
        .await
        .expect("moto accepts the compiled ec2-compromise")
        .state_machine_arn()
        .to_string();
    let n = Notifier {
        sfn: sfn.clone(),
        triggers: Triggers::defaults(),
        state_machines: BTreeMap::from([("ec2-compromise".to_string(), arn.clone())]),
        account: "123456789012".into(),
        region: REGION.into(),
        automatic: Default::default(),
    };
    (n, sfn, arn)
}

async fn executions(sfn: &aws_sdk_sfn::Client, arn: &str) -> Vec<String> {
    sfn.list_executions()
        .state_machine_arn(arn)
        .send()
        .await
        .expect("lists")
        .executions()
        .iter()
        .map(|e| e.name().to_string())
        .collect()
}

#[tokio::test]
async fn sandbox_the_same_finding_twice_starts_one_execution() {
    let moto = EnforcingMoto::start(u32::MAX);
    let (n, sfn, arn) = notifier("once", &moto).await;
    let now = chrono::Utc::now();
    let first = n
        .handle(&fixture("01-guardduty-backdoor-ec2.json"), now)
        .await
        .expect("handled");
    assert_eq!(first.outcomes.len(), 1, "{:?}", first.outcomes);
    assert_eq!(first.outcomes[0].outcome, "started");
    // The same event again, then GuardDuty's update of the finding.
    let again = n
        .handle(&fixture("01-guardduty-backdoor-ec2.json"), now)
        .await
        .expect("handled");
    let updated = n
        .handle(&fixture("18-guardduty-updated.json"), now)
        .await
        .expect("handled");
    assert_eq!(again.outcomes[0].outcome, "already-started");
    assert_eq!(updated.outcomes[0].outcome, "already-started");
    assert_eq!(
        executions(&sfn, &arn).await,
        vec![first.outcomes[0].execution_name.clone()]
    );

    // A finding that triggers nothing starts nothing, and says why.
    let low = n
        .handle(&fixture("02-guardduty-low-severity.json"), now)
        .await
        .expect("handled");
    assert!(low.outcomes.is_empty());
    assert!(
        low.reason.as_deref().is_some_and(|r| r.contains("below")),
        "{:?}",
        low.reason
    );
    assert_eq!(executions(&sfn, &arn).await.len(), 1);
}

#[tokio::test]
async fn sandbox_the_sixth_automatic_containment_within_an_hour_waits_for_approval() {
    let moto = EnforcingMoto::start(u32::MAX);
    let (n, sfn, arn) = notifier("limit", &moto).await;
    let now = chrono::Utc::now();
    let mut outcomes = Vec::new();
    for i in 0..6 {
        let mut event = fixture("01-guardduty-backdoor-ec2.json");
        event["detail"]["id"] = Value::String(format!("finding-{i}"));
        event["detail"]["resource"]["instanceDetails"]["instanceId"] =
            Value::String(format!("i-0123456789abcde{i:02}"));
        let handled = n.handle(&event, now).await.expect("handled");
        outcomes.push(handled.outcomes[0].outcome.clone());
    }
    assert_eq!(
        outcomes,
        [
            "started",
            "started",
            "started",
            "started",
            "started",
            "waiting-for-approval"
        ]
    );
    // The sixth started behind its approval gate: its case asks for it.
    assert_eq!(executions(&sfn, &arn).await.len(), 6);
    let sixth = sfn
        .describe_execution()
        .execution_arn(format!(
            "{}:{}",
            arn.replacen(":stateMachine:", ":execution:", 1),
            n.handle(
                &{
                    let mut e = fixture("01-guardduty-backdoor-ec2.json");
                    e["detail"]["id"] = Value::String("finding-5".into());
                    e["detail"]["resource"]["instanceDetails"]["instanceId"] =
                        Value::String("i-0123456789abcde05".into());
                    e
                },
                now
            )
            .await
            .expect("handled")
            .outcomes[0]
                .execution_name
        ))
        .send()
        .await
        .expect("the sixth execution");
    let input: Value = serde_json::from_str(sixth.input().unwrap_or("{}")).expect("input");
    assert!(
        input["options"]["approval"]
            .as_str()
            .is_some_and(|r| r.contains("within an hour")),
        "{input}"
    );
    // The first finding delivered again is still its own run, not a new
    // containment waiting for approval.
    let mut first = fixture("01-guardduty-backdoor-ec2.json");
    first["detail"]["id"] = Value::String("finding-0".into());
    first["detail"]["resource"]["instanceDetails"]["instanceId"] =
        Value::String("i-0123456789abcde00".into());
    let again = n.handle(&first, now).await.expect("handled");
    assert_eq!(again.outcomes[0].outcome, "already-started");
    assert_eq!(executions(&sfn, &arn).await.len(), 6);
}
