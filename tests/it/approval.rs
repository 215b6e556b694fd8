//! The approval gate and the notifications: a run that must be approved
//! waits before its first change, goes on after `firebreak approve` and
//! changes nothing after `firebreak deny`; SNS (an SQS queue subscribed to
//! the topic in the sandbox) and a local HTTP receiver standing for a
//! Slack-compatible webhook hear the request, the start and the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::{self, s, stderr, stdout};

/// A local HTTP server that keeps the body of every POST it receives and
/// answers 200: a webhook receiver, as Slack's would.
struct Webhook {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/services/T000/B000/secret",
            listener.local_addr().expect("addr")
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Webhook { url, bodies }
    }

    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_str(b).expect("webhook body is JSON");
                v["text"].as_str().expect("a text field").to_string()
            })
            .collect()
    }
}

/// An SNS topic with an SQS queue subscribed, in the sandbox.
async fn topic_with_queue(name: &str) -> (String, String) {
    let config = support::sdk_config().await;
    let sns = aws_sdk_sns::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let topic = sns
        .create_topic()
        .name(name)
        .send()
        .await
        .expect("create topic")
        .topic_arn()
        .expect("topic arn")
        .to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    let queue_arn = format!("arn:aws:sqs:{}:123456789012:{name}", support::REGION);
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .expect("subscribe");
    (topic, queue_url)
}

/// The subjects of every message the queue received from the topic.
async fn subjects(queue_url: &str) -> Vec<String> {
    let sqs = aws_sdk_sqs::Client::new(&support::sdk_config().await);
    let mut out = Vec::new();
    loop {
        let r = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        if r.messages().is_empty() {
            return out;
        }
        for m in r.messages() {
            let body: Value = serde_json::from_str(m.body().unwrap_or("{}")).expect("SNS envelope");
            out.push(body["Subject"].as_str().unwrap_or_default().to_string());
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

/// Starts `respond --approval` on a fresh decoy and reads its standard
/// error until it says the token; returns the child, the token and the
/// lines read.
fn respond_waiting(
    instance: &str,
    topic: &str,
    webhook: &str,
) -> (std::process::Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args([
            "respond",
            "--instance",
            instance,
            "--approval=test: a person decides",
            "--notify-topic",
            topic,
            "--output",
            "json",
        ])
        .env("FIREBREAK_WEBHOOK_URL", webhook)
        .env("FIREBREAK_STATE_DIR", support::state_dir())
        .env("AWS_ENDPOINT_URL", support::sandbox_url())
        .env("AWS_REGION", support::REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("respond starts");
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
    let token = loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read stderr") == 0 {
            panic!(
                "respond ended without asking for approval:\n{}",
                lines.join("")
            );
        }
        lines.push(line.clone());
        if let Some(t) = line.trim().strip_prefix("firebreak approve ") {
            break t.to_string();
        }
    };
    // The rest of standard error, read so the child never blocks on it.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
    });
    (child, token, lines)
}

#[test]
fn sandbox_a_denied_run_changes_nothing_and_an_approved_one_contains() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let config = rt.block_on(support::sdk_config());
    let webhook = Webhook::start();
    let (topic, queue) = rt.block_on(topic_with_queue(&format!(
        "firebreak-it-approval-{}",
        std::process::id()
    )));

    // Denied: the run ends before its first change.
    let decoy = support::decoy();
    let instance = s(&decoy, "instance_id");
    let before = rt.block_on(support::world(&config, &decoy, ""));
    let (child, token, lines) = respond_waiting(&instance, &topic, &webhook.url);
    // Waiting, it has changed nothing.
    assert_eq!(
        rt.block_on(support::world(&config, &decoy, "")),
        before,
        "{}",
        lines.join("")
    );
    // `status` reads the waiting run without disturbing it.
    let name = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("execution ")?.split(' ').next())
        .expect("the execution's name is said")
        .to_string();
    let st = support::firebreak(&["status", &name, "--output", "json"]);
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    let st: Value = serde_json::from_slice(&st.stdout).expect("status JSON");
    assert_eq!(st["status"], "RUNNING", "{st}");
    assert_eq!(st["waiting_for_approval"], true, "{st}");
    assert_eq!(st["state"], "WaitForApproval", "{st}");
    let deny = support::firebreak(&["deny", &token, "--reason", "a false positive"]);
    assert_eq!(deny.status.code(), Some(0), "{}", stderr(&deny));
    let out = child.wait_with_output().expect("respond ends");
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(report["containment"], "not_approved", "{report}");
    assert!(
        report.to_string().contains("a false positive"),
        "the reason is kept: {report}"
    );
    assert_eq!(rt.block_on(support::world(&config, &decoy, "")), before);
    // Answered once: a second answer is refused.
    let again = support::firebreak(&["approve", &token]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));

    // Approved: the run goes on and contains the instance.
    let decoy = support::decoy();
    let instance = s(&decoy, "instance_id");
    let (child, token, _) = respond_waiting(&instance, &topic, &webhook.url);
    let approve = support::firebreak(&["approve", &token, "--note", "go"]);
    assert_eq!(approve.status.code(), Some(0), "{}", stderr(&approve));
    let out = child.wait_with_output().expect("respond ends");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(report["containment"], "complete", "{report}");
    assert!(report["isolation"].is_object(), "{report}");

    // What the topic and the webhook heard: two approval requests, one
    // start and one end (the denied run never started).
    let heard = rt.block_on(subjects(&queue));
    let count = |v: &[String], what: &str| v.iter().filter(|m| m.contains(what)).count();
    assert_eq!(count(&heard, "approval needed"), 2, "{heard:?}");
    assert_eq!(count(&heard, "containing"), 1, "{heard:?}");
    assert_eq!(
        count(&heard, "contained: every step succeeded"),
        1,
        "{heard:?}"
    );
    // The webhook URL is a secret: not in the summary, nor in a journal.
    assert!(!stdout(&out).contains("B000/secret"));
    for entry in std::fs::read_dir(support::state_dir().join("executions")).expect("journals") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        assert!(
            !text.contains("B000/secret"),
            "a journal holds the webhook URL"
        );
    }
    assert!(
        report["approval"]["approved_by"].is_string() && report["approval"]["note"] == "go",
        "the approval is in the summary: {report}"
    );
    let texts = webhook.texts();
    assert_eq!(count(&texts, "approval needed"), 2, "{texts:?}");
    assert_eq!(count(&texts, "firebreak approve "), 2, "{texts:?}");
    assert_eq!(
        count(&texts, "firebreak release --instance"),
        1,
        "{texts:?}"
    );
}

#[test]
fn a_bad_topic_or_webhook_is_refused_before_anything() {
    let out = support::firebreak_offline(&[
        "respond",
        "--instance",
        "i-0123456789abcdef0",
        "--notify-topic",
        "not-an-arn",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not an SNS topic ARN"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["respond", "--instance", "i-0123456789abcdef0"])
        .env("FIREBREAK_WEBHOOK_URL", "ftp://hooks.example/secret-path")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("secret-path"),
        "the webhook URL is a secret: {}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_local_token_is_refused_with_the_remote_hint() {
    let out = support::firebreak(&["approve", "0123456789abcdef"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--remote"), "{}", stderr(&out));
}
