//! Issue 12: what operators do in a bad hour (Ctrl-C, running a command
//! again, several runs at once, the wrong profile, a closed case, local
//! state other users could read or plant), on the sandbox.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use aws_sdk_ec2::types::Filter;
use serde_json::Value;

use crate::support::{
    decoy, firebreak, s, sandbox_url, sdk_config, stderr, stdout, EnforcingMoto, REGION,
};

/// A state directory of the test's own.
fn fresh_state(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("firebreak-op-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The firebreak binary against the sandbox, with `state` as its state
/// directory.
fn command(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_firebreak"));
    c.args(args)
        .env("FIREBREAK_STATE_DIR", state)
        .env("AWS_ENDPOINT_URL", sandbox_url())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE");
    c
}

fn run(state: &Path, args: &[&str]) -> Output {
    command(state, args).output().expect("firebreak runs")
}

fn spawn(state: &Path, args: &[&str]) -> Child {
    command(state, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("firebreak starts")
}

/// firebreak's groups in the decoy's VPC with this role tag.
async fn groups_with_role(ec2: &aws_sdk_ec2::Client, vpc: &str, role: &str) -> Vec<String> {
    ec2.describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .filters(
            Filter::builder()
                .name("tag:firebreak:role")
                .values(role)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect()
}

/// The groups of each of the instance's interfaces.
async fn interface_groups(ec2: &aws_sdk_ec2::Client, instance: &str) -> Vec<Vec<String>> {
    ec2.describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(instance)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .network_interfaces()
        .iter()
        .map(|n| {
            n.groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect()
        })
        .collect()
}

/// Waits (while `child` runs) until an interface of the instance is on
/// its case's transition group: the moment to interrupt.
async fn wait_for_transition(
    ec2: &aws_sdk_ec2::Client,
    vpc: &str,
    instance: &str,
    child: &mut Child,
) {
    for _ in 0..3000 {
        let transition = groups_with_role(ec2, vpc, "transition").await;
        if interface_groups(ec2, instance)
            .await
            .iter()
            .any(|g| g.iter().any(|id| transition.contains(id)))
        {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "respond ended before its interfaces reached the transition group"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the interfaces never reached the transition group");
}

/// The instance is terminated (or on its way).
async fn assert_terminated(instance: &str) {
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config().await);
    let state_name = ec2
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string());
    assert!(
        matches!(
            state_name.as_deref(),
            Some("terminated") | Some("shutting-down")
        ),
        "{state_name:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_an_interrupted_respond_leaves_no_interface_open_and_running_it_again_finishes_the_case(
) {
    // GIVEN a respond on a decoy with two interfaces, quiet (so the
    // execution name is never printed on the way)
    let d = decoy();
    let instance = s(&d, "instance_id");
    let vpc = s(&d, "vpc_id");
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config().await);
    let state = fresh_state("sigint");
    let mut child = spawn(
        &state,
        &["respond", "--instance", &instance, "-q", "--output", "json"],
    );
    // WHEN SIGINT arrives while its interfaces are on the transition group
    wait_for_transition(&ec2, &vpc, &instance, &mut child).await;
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-s", "INT", &pid])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();

    // THEN it stops with exit 130, says how to finish, and no interface is
    // on an allow-all group
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("firebreak resume "), "{err}");
    let said: Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", stdout(&out)));
    assert_eq!(said["exit"], 130, "{said}");
    let finish = said["finish_with"].as_str().unwrap().to_string();
    assert!(finish.starts_with("firebreak resume "), "{said}");
    let transition = groups_with_role(&ec2, &vpc, "transition").await;
    for groups in interface_groups(&ec2, &instance).await {
        assert!(
            !groups.iter().any(|g| transition.contains(g)),
            "an interface is on the transition group {groups:?}"
        );
    }

    // WHEN respond is run again on the instance (with an option the run
    // did not start with)
    let again = run(
        &state,
        &[
            "respond",
            "--instance",
            &instance,
            "-q",
            "--output",
            "json",
            "--no-nacl-cut",
        ],
    );
    // THEN it finishes the same case (no second case), saying the new
    // option is not applied
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("not applied now: --no-nacl-cut"),
        "{}",
        stderr(&again)
    );
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["containment"], "complete", "{report}");
    let case = report["case_id"].as_str().unwrap().to_string();
    assert!(
        finish.starts_with(&format!("firebreak resume {case}-")),
        "{finish} is not a run of {case}"
    );
    let tags = ec2
        .describe_tags()
        .filters(
            Filter::builder()
                .name("resource-id")
                .values(&instance)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("key")
                .values("firebreak:case")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let cases: Vec<&str> = tags.tags().iter().filter_map(|t| t.value()).collect();
    assert_eq!(cases, vec![case.as_str()]);

    // AND release restores it, leaving no transition group in the VPC
    let released = run(
        &state,
        &["release", "--instance", &instance, "-q", "--output", "json"],
    );
    assert_eq!(released.status.code(), Some(0), "{}", stderr(&released));
    assert!(
        groups_with_role(&ec2, &vpc, "transition").await.is_empty(),
        "a transition group is left in {vpc}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_three_responds_of_one_case_in_one_second_all_end_with_exit_0() {
    // GIVEN a decoy
    let d = decoy();
    let instance = s(&d, "instance_id");
    let state = fresh_state("three");
    // WHEN three runs of one case start at the same moment
    let children: Vec<Child> = (0..3)
        .map(|_| {
            spawn(
                &state,
                &[
                    "respond",
                    "--instance",
                    &instance,
                    "--case",
                    "it-three-at-once",
                    "-q",
                    "--output",
                    "json",
                ],
            )
        })
        .collect();
    // THEN all three end with exit 0 and a complete containment of the case
    let mut names = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["containment"], "complete", "{report}");
        assert_eq!(report["case_id"], "it-three-at-once");
        names.push(report["execution"].clone());
    }
    // AND each run had a journal of its own
    let journals = std::fs::read_dir(state.join("executions"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "jsonl")
        })
        .count();
    assert_eq!(journals, 3, "{names:?}");
}

#[test]
fn sandbox_a_released_case_stays_closed_and_a_second_release_says_so() {
    // GIVEN a case contained and released
    let d = decoy();
    let instance = s(&d, "instance_id");
    let contain = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-closed-1",
        "-q",
    ]);
    assert_eq!(contain.status.code(), Some(0), "{}", stderr(&contain));
    let release = firebreak(&["release", "--instance", &instance, "-q"]);
    assert_eq!(release.status.code(), Some(0), "{}", stderr(&release));
    // (said as released, with the principal and the deny kept until when)
    let said = stdout(&release);
    assert!(said.contains("Result: RELEASED"), "{said}");
    assert!(said.contains("as arn:aws:"), "{said}");
    assert!(said.contains("is KEPT until"), "{said}");
    // WHEN the released case is named again
    let reopen = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--case",
        "it-closed-1",
        "-q",
    ]);
    // THEN it is refused, changing nothing, and says why
    assert_eq!(reopen.status.code(), Some(2), "{}", stderr(&reopen));
    let err = stderr(&reopen);
    assert!(
        err.contains("it-closed-1") && err.contains("released") && err.contains("omit --case"),
        "{err}"
    );
    // AND a second release says it was already released
    let again = firebreak(&["release", "--instance", &instance]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already released (case it-closed-1)"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn sandbox_the_named_profile_wins_over_credentials_in_the_environment() {
    let dir = fresh_state("profile");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    // A profile whose credentials cannot be had: used, it fails.
    std::fs::write(
        &config,
        "[profile broken]\ncredential_process = sh -c 'exit 3'\nregion = us-east-1\n",
    )
    .unwrap();
    let with = |profile: &str| {
        command(
            &dir,
            &[
                "release",
                "--dry-run",
                "--instance",
                "i-0123456789abcdef0",
                "--profile",
                profile,
            ],
        )
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .output()
        .unwrap()
    };
    // WHEN a profile that does not exist is named, with credentials in the
    // environment
    let missing = with("nope");
    // THEN it is an error naming it (not a run in the environment's account)
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    let err = stderr(&missing);
    assert!(
        err.contains("\"nope\" does not exist") && err.contains("broken"),
        "{err}"
    );
    // WHEN an existing profile is named
    let broken = with("broken");
    // THEN its credentials are the ones used (they fail), never the
    // environment's
    let err = stderr(&broken);
    assert_ne!(broken.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("i-0123456789abcdef0"),
        "the run went on with the environment's credentials: {err}"
    );
    assert!(err.contains("sts:GetCallerIdentity"), "{err}");
}

#[test]
fn sandbox_local_state_is_private_and_a_state_directory_others_can_write_is_refused() {
    // GIVEN a run that journals
    let d = decoy();
    let instance = s(&d, "instance_id");
    let state = fresh_state("private");
    let out = run(
        &state,
        &[
            "respond",
            "--instance",
            &instance,
            "-q",
            "--case",
            "it-private-1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // THEN the state directories are 0700 and the journal 0600
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    let executions = state.join("executions");
    assert_eq!(mode(&executions), 0o700);
    for e in std::fs::read_dir(&executions).unwrap() {
        assert_eq!(mode(&e.unwrap().path()), 0o600);
    }

    // WHEN others may write to the state directory
    std::fs::set_permissions(&executions, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = run(
        &state,
        &[
            "respond",
            "--instance",
            &instance,
            "-q",
            "--case",
            "it-private-1",
        ],
    );
    // THEN nothing runs: exit 2, naming the directory and the fix
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("writable by others") && stderr(&refused).contains("chmod 700"),
        "{}",
        stderr(&refused)
    );

    // WHEN a token file is a symbolic link someone planted
    std::fs::set_permissions(&executions, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tokens = state.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = state.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::write(tokens.join("abc123.json"), "{}").unwrap();
    std::os::unix::fs::symlink(&victim, tokens.join("abc123.heartbeat")).unwrap();
    let beat = run(&state, &["task-heartbeat", "abc123"]);
    // THEN it is not followed
    assert_ne!(beat.status.code(), Some(0), "{}", stderr(&beat));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}

#[test]
fn compile_writes_files_with_out_and_output_is_not_a_file_name() {
    let dir = fresh_state("compile");
    std::fs::create_dir_all(&dir).unwrap();
    let compile = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_firebreak"))
            .arg("compile")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    // WHEN --output json is given to compile
    let wrong = compile(&["ec2-contain", "--output", "json"]);
    // THEN it is refused and no file named `json` appears
    assert_eq!(wrong.status.code(), Some(2), "{}", stderr(&wrong));
    assert!(!dir.join("json").exists());
    // AND -o and --out write the file
    for flag in ["-o", "--out"] {
        let out = compile(&["ec2-contain", flag, "def.json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let def: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("def.json")).unwrap()).unwrap();
        assert!(def["States"].is_object());
        std::fs::remove_file(dir.join("def.json")).unwrap();
    }
}

#[test]
fn sandbox_cases_lists_each_case_with_its_instance_and_status_and_resume_takes_a_case_id() {
    use std::os::unix::process::CommandExt;
    // GIVEN a case contained and released, and one killed in its run
    let released = decoy();
    let released_id = s(&released, "instance_id");
    let state = fresh_state("cases");
    let out = run(
        &state,
        &[
            "respond",
            "--instance",
            &released_id,
            "--case",
            "it-cases-released",
            "-q",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&state, &["release", "--instance", &released_id, "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let killed = decoy();
    let killed_id = s(&killed, "instance_id");
    let mut child = command(
        &state,
        &[
            "respond",
            "--instance",
            &killed_id,
            "--case",
            "it-cases-killed",
            "-q",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0)
    .spawn()
    .unwrap();
    let journal_has_a_step = || {
        std::fs::read_dir(state.join("executions"))
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("it-cases-killed-")
            })
            .any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(r#""t":"attempt""#))
            })
    };
    let mut tries = 0;
    while !journal_has_a_step() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "respond ended before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        tries += 1;
        assert!(tries < 30_000, "respond never finished a step");
    }
    Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    let _ = child.wait();

    // WHEN the cases are listed
    let out = run(&state, &["cases", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cases: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |id: &str| {
        cases
            .iter()
            .find(|c| c["case_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {cases:#?}"))
            .clone()
    };
    // THEN each is there with its instance, status and last run
    let r = find("it-cases-released");
    assert_eq!(r["instance_id"], released_id.as_str());
    assert_eq!(r["status"], "released", "{r}");
    assert_eq!(r["last_run"]["ended"], true, "{r}");
    let k = find("it-cases-killed");
    assert_eq!(k["instance_id"], killed_id.as_str());
    assert_eq!(k["last_run"]["ended"], false, "{k}");
    // AND the human table names the command that finishes the killed run
    let table = stdout(&run(&state, &["cases"]));
    assert!(
        table.contains("it-cases-killed") && table.contains("firebreak resume it-cases-killed-"),
        "{table}"
    );

    // WHEN resume is given the case id
    let out = run(&state, &["resume", "it-cases-killed"]);
    // THEN it finishes that case's run
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("it-cases-killed"), "{}", stdout(&out));
}

#[test]
fn sandbox_a_dry_run_without_the_evidence_bucket_plans_and_names_the_remedy() {
    let d = decoy();
    let instance = s(&d, "instance_id");
    // WHEN a dry run names a bucket that does not exist
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--dry-run",
        "--evidence-bucket",
        "firebreak-no-such-bucket-it",
        "--output",
        "json",
        "-q",
    ]);
    // THEN the whole plan is printed, refusals name `firebreak setup`,
    // exit 3
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["containment"], "plan_denied", "{report}");
    let steps: std::collections::BTreeSet<&str> = report["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["step"].as_str())
        .collect();
    for step in ["protect_instance", "isolate_network", "snapshot_volumes"] {
        assert!(steps.contains(step), "{step} not planned: {steps:?}");
    }
    let failures = report["failures"].as_array().unwrap();
    assert!(!failures.is_empty());
    assert!(
        failures.iter().any(|f| f["cause"]
            .as_str()
            .unwrap_or("")
            .contains("firebreak setup")),
        "{failures:#?}"
    );
}

#[tokio::test]
async fn sandbox_preflight_stops_a_compromise_that_cannot_capture_and_an_instance_in_another_region(
) {
    let d = decoy();
    let instance = s(&d, "instance_id");
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config().await);
    let before = interface_groups(&ec2, &instance).await;
    // WHEN ec2-compromise is asked for without the exemptions the capture needs
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--playbook",
        "ec2-compromise",
        "-q",
    ]);
    // THEN nothing changes and the error says the fix
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("nothing was changed")
            && err.contains("--allow-https-to")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(interface_groups(&ec2, &instance).await, before);
    let tagged = ec2
        .describe_tags()
        .filters(
            Filter::builder()
                .name("resource-id")
                .values(&instance)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("key")
                .values("firebreak:case")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(tagged.tags().is_empty(), "{tagged:?}");

    // WHEN the region is not the instance's
    let out = firebreak(&[
        "respond",
        "--instance",
        &instance,
        "--region",
        "us-west-2",
        "-q",
    ]);
    // THEN it says the instance is not in that region (not that a bucket
    // is missing there)
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("does not exist in account 123456789012 region us-west-2")
            && err.contains("--region")
            && !err.contains("firebreak setup"),
        "{err}"
    );
}

#[test]
fn errors_are_one_sentence_without_debug_structures_and_json_when_asked() {
    let dir = fresh_state("errors");
    std::fs::create_dir_all(&dir).unwrap();
    let offline = |args: &[&str], endpoint: Option<&str>, creds: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_firebreak"));
        c.args(args)
            .env("FIREBREAK_STATE_DIR", &dir)
            .env("AWS_REGION", REGION)
            .env("AWS_CONFIG_FILE", dir.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE");
        if let Some(e) = endpoint {
            c.env("AWS_ENDPOINT_URL", e);
        }
        if creds {
            c.env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test");
        }
        c.output().unwrap()
    };
    let instance = "i-0123456789abcdef0";
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (what, out, says) in [
        (
            "no credentials",
            offline(
                &["respond", "--instance", instance, "--output", "json"],
                Some(&sandbox_url()),
                false,
            ),
            "no usable AWS credentials",
        ),
        (
            "an endpoint that refuses",
            offline(
                &["respond", "--instance", instance, "--output", "json"],
                Some(&closed),
                true,
            ),
            "cannot connect to the AWS endpoint",
        ),
    ] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
        for debug in ["DispatchFailure(", "ConnectorError {", "Some(", "source:"] {
            assert!(!err.contains(debug), "{what}: {debug} in {err}");
        }
        // With --output json the error is a JSON object on stdout
        let object: Value = serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {:?}", stdout(&out)));
        assert_eq!(object["exit"], 1, "{what}: {object}");
        assert!(
            object["error"].as_str().unwrap().contains(says),
            "{what}: {object}"
        );
    }
}

#[test]
fn an_endpoint_that_never_answers_is_said_within_seconds() {
    use std::io::{BufRead, BufReader};
    // GIVEN an endpoint that accepts connections and never answers
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let dir = fresh_state("silent");
    let mut child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["respond", "--instance", "i-0123456789abcdef0"])
        .env("FIREBREAK_STATE_DIR", &dir)
        .env("AWS_ENDPOINT_URL", &url)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // WHEN it waits
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // THEN a "connecting to" line names the endpoint within seconds
    let line = rx.recv_timeout(std::time::Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    drop(silent);
    let line = line.expect("nothing said within 5 seconds");
    assert!(
        line.contains("connecting to") && line.contains(&url),
        "{line}"
    );
}

#[test]
fn every_option_of_every_command_says_what_it_does() {
    let commands: &[&[&str]] = &[
        &["compile"],
        &["validate"],
        &["graph"],
        &["respond"],
        &["release"],
        &["cases"],
        &["rehearse"],
        &["setup"],
        &["decoy", "create"],
        &["decoy", "delete"],
        &["evidence", "list"],
        &["evidence", "verify"],
        &["lime"],
        &["analyze"],
        &["tools", "add"],
        &["symbols", "add"],
        &["step"],
        &["task-success"],
        &["task-failure"],
        &["task-heartbeat"],
        &["run"],
        &["resume"],
    ];
    let mut silent = Vec::new();
    for c in commands {
        let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
            .args(*c)
            .arg("--help")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{c:?}: {}", stderr(&out));
        let help = stdout(&out);
        let lines: Vec<&str> = help.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let option = l.starts_with("  -") || l.starts_with("      --");
            if !option {
                continue;
            }
            // The help is on the option's line (short help) or the next.
            let same_line = l
                .trim()
                .split("  ")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .nth(1);
            let next = lines.get(i + 1).map(|n| n.trim()).unwrap_or("");
            let help = same_line.unwrap_or(next);
            let next_is_option = next.starts_with('-');
            if help.is_empty() || help.starts_with('[') || (same_line.is_none() && next_is_option) {
                silent.push(format!("{}: {}", c.join(" "), l.trim()));
            }
        }
    }
    assert!(silent.is_empty(), "options without help: {silent:#?}");
}

#[tokio::test]
async fn sandbox_decoy_create_says_everything_it_made_and_decoy_delete_removes_it() {
    crate::support::evidence_bucket();
    let state = fresh_state("decoy");
    // WHEN a decoy is made (human output)
    let out = run(&state, &["decoy", "create"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    // THEN every resource is named, and how to delete it
    for field in [
        "vpc_id:",
        "subnet_id:",
        "second_subnet_id:",
        "security_group_id:",
        "network_interface_ids:",
        "volume_ids:",
        "role_name:",
        "allocation_id:",
        "auto_scaling_group:",
        "launch_template:",
        "target_group_arn:",
        "ip_target_group_arn:",
        "classic_load_balancer:",
        "second_instance_id:",
    ] {
        assert!(said.contains(field), "{field} not said: {said}");
    }
    let instance = said.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        said.contains(&format!("firebreak decoy delete --instance {instance}")),
        "{said}"
    );
    // WHEN it is deleted
    let out = run(&state, &["decoy", "delete", "--instance", &instance]);
    // THEN the instance is terminated
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_terminated(&instance).await;
}

#[test]
fn sandbox_long_waits_draw_a_live_bar_on_a_terminal_and_lines_when_piped() {
    // GIVEN a decoy, and respond run once on a terminal (a pty from
    // script(1)) and once piped
    let d = decoy();
    let on_tty = s(&d, "instance_id");
    let piped_instance = s(&decoy(), "instance_id");
    let state = fresh_state("live");
    let bin = env!("CARGO_BIN_EXE_firebreak");
    let tty = command(&state, &[])
        .get_envs()
        .fold(Command::new("script"), |mut c, (k, v)| {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
            c
        })
        .args([
            "-qec",
            &format!("{bin} respond --instance {on_tty} --case it-live-tty"),
            "/dev/null",
        ])
        .output()
        .unwrap();
    let piped = run(
        &state,
        &[
            "respond",
            "--instance",
            &piped_instance,
            "--case",
            "it-live-piped",
        ],
    );
    // THEN on the terminal the snapshot wait is one line redrawn in place,
    // with a bar
    let shown = String::from_utf8_lossy(&tty.stdout).into_owned();
    assert_eq!(tty.status.code(), Some(0), "{shown}");
    assert!(shown.contains("\r\x1b[2K"), "no live line: {shown:?}");
    assert!(
        shown.contains("] 100% await_snapshots: 2/2 snapshots completed"),
        "{shown:?}"
    );
    // AND piped, the progress is plain lines
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    let err = stderr(&piped);
    assert!(!err.contains('\r') && !err.contains("\x1b["), "{err:?}");
    assert!(
        err.contains("await_snapshots: 2/2 snapshots completed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_access_denied_names_the_action_the_resource_and_the_principal() {
    // GIVEN an account that enforces IAM, and a user allowed only to say
    // who it is (the three setup calls below go unchecked)
    let moto = EnforcingMoto::start(3);
    let admin = crate::support::config_at(&moto.url, REGION, ("test", "test")).await;
    let iam = aws_sdk_iam::Client::new(&admin);
    iam.create_user().user_name("limited").send().await.unwrap();
    let key = iam
        .create_access_key()
        .user_name("limited")
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    iam.put_user_policy()
        .user_name("limited")
        .policy_name("whoami")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    // WHEN it runs respond
    let state = fresh_state("denied");
    let out = command(&state, &["respond", "--instance", "i-0123456789abcdef0"])
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", key.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", key.secret_access_key())
        .output()
        .unwrap();
    // THEN one sentence names the action, the resource, the principal and
    // where the permissions are listed
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for said in [
        "ec2:DescribeInstances",
        "i-0123456789abcdef0",
        "user/limited",
        "iam-permissions",
    ] {
        assert!(err.contains(said), "{said} not in {err}");
    }
    for debug in ["DispatchFailure", "Some(", "ServiceError {"] {
        assert!(!err.contains(debug), "{debug} in {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_a_release_after_an_interrupt_closes_the_case_leaves_no_transition_group_and_is_never_undone(
) {
    // GIVEN a respond interrupted while its interfaces are on the
    // transition group
    let d = decoy();
    let instance = s(&d, "instance_id");
    let vpc = s(&d, "vpc_id");
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config().await);
    let state = fresh_state("int-release");
    let mut child = spawn(
        &state,
        &[
            "respond",
            "--instance",
            &instance,
            "--case",
            "it-int-release",
            "-q",
        ],
    );
    wait_for_transition(&ec2, &vpc, &instance, &mut child).await;
    Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    // WHEN the case is released instead of finished
    let released = run(
        &state,
        &[
            "release",
            "--instance",
            &instance,
            "--case",
            "it-int-release",
            "-q",
        ],
    );
    assert_eq!(released.status.code(), Some(0), "{}", stderr(&released));
    // THEN no transition group is left in the VPC
    assert!(
        groups_with_role(&ec2, &vpc, "transition").await.is_empty(),
        "a transition group is left"
    );
    // AND a later respond opens a new case: the released case's
    // unfinished run is never resumed
    let again = run(
        &state,
        &["respond", "--instance", &instance, "-q", "--output", "json"],
    );
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_ne!(report["case_id"], "it-int-release", "{report}");
    assert!(!stderr(&again).contains("resuming"), "{}", stderr(&again));
}

#[test]
fn sandbox_a_case_closed_before_a_later_one_cannot_be_reopened() {
    // GIVEN case A contained and released, then case B contained and
    // released on the same instance
    let d = decoy();
    let instance = s(&d, "instance_id");
    let state = fresh_state("closed-older");
    for case in ["it-older-a", "it-older-b"] {
        let out = run(
            &state,
            &["respond", "--instance", &instance, "--case", case, "-q"],
        );
        assert_eq!(out.status.code(), Some(0), "{case}: {}", stderr(&out));
        let out = run(&state, &["release", "--instance", &instance, "-q"]);
        assert_eq!(out.status.code(), Some(0), "{case}: {}", stderr(&out));
    }
    // WHEN case A is named again
    let out = run(
        &state,
        &[
            "respond",
            "--instance",
            &instance,
            "--case",
            "it-older-a",
            "-q",
        ],
    );
    // THEN it is refused (its record is the state before an older incident)
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("it-older-a was closed") && err.contains("it-older-b"),
        "{err}"
    );
}

#[test]
fn sandbox_a_long_case_id_gives_a_run_that_resume_accepts() {
    let d = decoy();
    let instance = s(&d, "instance_id");
    let state = fresh_state("long-case");
    let case = format!("it-{}", "l".repeat(61));
    assert_eq!(case.len(), 64);
    let out = run(
        &state,
        &["respond", "--instance", &instance, "--case", &case, "-q"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = std::fs::read_dir(state.join("executions"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().file_stem().unwrap().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&case))
        .unwrap();
    assert!(name.len() > 80, "{name}");
    // WHEN the name respond made is given to resume
    let out = run(&state, &["resume", &name]);
    // THEN it is accepted (the run had ended: nothing to do)
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn every_command_with_output_json_errs_in_json_parse_errors_too() {
    let dir = fresh_state("json-errors");
    std::fs::create_dir_all(&dir).unwrap();
    for args in [
        &[
            "lime",
            "check",
            "/nonexistent/memory.lime",
            "--output",
            "json",
        ][..],
        &["respond", "--output", "json"][..],
        &["release", "--instance", "nope", "--output", "json"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
            .args(args)
            .env("FIREBREAK_STATE_DIR", &dir)
            .output()
            .unwrap();
        let code = out.status.code().unwrap();
        assert_ne!(code, 0, "{args:?}");
        let object: Value = serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {:?}", stdout(&out)));
        assert_eq!(object["exit"], code, "{args:?}: {object}");
        assert!(
            object["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{object}"
        );
    }
}

#[test]
fn sandbox_release_in_another_region_names_the_region_not_a_bucket() {
    let d = decoy();
    let instance = s(&d, "instance_id");
    let out = firebreak(&[
        "release",
        "--instance",
        &instance,
        "--region",
        "us-west-2",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("region us-west-2")
            && err.contains("--region")
            && !err.contains("firebreak setup"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_an_interrupted_rehearsal_deletes_its_decoy_on_the_way_out() {
    use std::io::{BufRead, BufReader};
    crate::support::evidence_bucket();
    let state = fresh_state("int-rehearse");
    // GIVEN a rehearsal under way (its containment has started)
    let mut child = spawn(&state, &["rehearse", "--output", "json"]);
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the containment never started: {said:#?}"));
        let started = line.contains("-> RecordInstanceState");
        said.push(line);
        if started {
            break;
        }
    }
    // WHEN it is interrupted
    Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // THEN it stops (exit 130) and the decoy is deleted
    assert_eq!(out.status.code(), Some(130), "{said:#?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let instance = report["decoy"]["instance_id"].as_str().unwrap().to_string();
    let cleanup = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["phase"] == "cleanup")
        .unwrap_or_else(|| panic!("no cleanup: {report:#}"));
    assert_eq!(cleanup["checks"][0]["passed"], true, "{cleanup}");
    assert_terminated(&instance).await;
}
