//! The resources of `infra/template.yaml` and `infra/member-role.yaml`.
//!
//! Limits and settings that are choices carry their reason as a comment in
//! the rendered template, so that whoever audits the stack reads it there.

use firebreak_workflows::iam::{PolicyDocument, Statement};
use serde_json::{json, Map, Value};

use super::yaml::{to_yaml, Comments};
use super::Playbook;
use crate::PlaybookError;

/// The step runner's role name in the security account: the member role
/// trusts it by ARN, so it is fixed (per region: one stack per region).
const STEP_RUNNER_ROLE: &str = "firebreak-step-runner-${AWS::Region}";

use firebreak_steps::context::RESPONDER_ROLE;

fn sub(s: &str) -> Value {
    json!({ "Fn::Sub": s })
}

fn reference(name: &str) -> Value {
    json!({ "Ref": name })
}

fn arn_of(resource: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, "Arn"] })
}

/// `ec2-contain` to `Ec2Contain`, for logical ids.
fn pascal(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn allow(actions: &[&str], resources: Vec<Value>) -> Value {
    json!({"Effect": "Allow", "Action": actions, "Resource": resources})
}

fn policy(name: &str, statements: Vec<Value>) -> Value {
    json!({
        "PolicyName": name,
        "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}
    })
}

fn assumed_by(service: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
        }]
    })
}

/// A step's statement with its resources scoped to this stack where the
/// step declares "any": its S3 access to the stack's evidence and tools
/// buckets, its SNS publishing to the stack's topic.
fn scoped(s: &Statement) -> Value {
    let mut resources = Vec::new();
    for r in &s.resource {
        match r.as_str() {
            "arn:aws:s3:::*" => resources.extend([
                sub("arn:${AWS::Partition}:s3:::${EvidenceBucket}"),
                sub("arn:${AWS::Partition}:s3:::${EvidenceBucket}/*"),
                sub("arn:${AWS::Partition}:s3:::${ToolsBucket}"),
                sub("arn:${AWS::Partition}:s3:::${ToolsBucket}/*"),
            ]),
            "arn:aws:s3:::*/cases/*" => {
                resources.push(sub("arn:${AWS::Partition}:s3:::${EvidenceBucket}/cases/*"))
            }
            "arn:aws:sns:*:*:*" => resources.push(reference("AlertTopic")),
            other => resources.push(Value::String(other.to_string())),
        }
    }
    let mut v = json!({"Effect": "Allow", "Action": s.action, "Resource": resources});
    if let Some(c) = &s.condition {
        v["Condition"] = c.clone();
    }
    v
}

/// Assuming the member accounts' responder role, for cases there.
fn responder() -> Value {
    allow(
        &["sts:AssumeRole"],
        vec![sub(&format!(
            "arn:${{AWS::Partition}}:iam::*:role/{RESPONDER_ROLE}"
        ))],
    )
}

fn logs_to(group: &str) -> Value {
    allow(
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        vec![sub(&format!(
            "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:${{{group}}}:*"
        ))],
    )
}

fn xray() -> Value {
    // X-Ray's actions take no resource ARN.
    allow(
        &[
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
            "xray:GetSamplingRules",
            "xray:GetSamplingTargets",
        ],
        vec![json!("*")],
    )
}

fn parameters() -> Value {
    json!({
        "Architecture": {
            "Type": "String",
            "AllowedValues": ["x86_64", "arm64"],
            "Default": "x86_64",
            "Description": "The functions' and the container's CPU. x86_64 is what firebreak's CI builds and tests; arm64 needs `sam build` on an arm64 machine or with cargo-lambda's cross-compilation (see the README)."
        },
        "ContainerImage": {
            "Type": "String",
            "MinLength": 1,
            "Description": "URI of the firebreak container image (the firebreak binary with Volatility 3) that runs the long steps: hashing snapshots, verifying and analysing memory images."
        },
        "ContainerVpcId": {
            "Type": "String",
            "AllowedPattern": "^vpc-[0-9a-f]+$",
            "Description": "VPC of the container tasks."
        },
        "ContainerSubnetId": {
            "Type": "String",
            "AllowedPattern": "^subnet-[0-9a-f]+$",
            "Description": "Private subnet of the container tasks; it needs a route to S3, ECR, CloudWatch Logs and EBS (NAT or VPC endpoints): the tasks get no public IP."
        },
        "EvidenceRetentionDays": {
            "Type": "Number",
            "Default": 365,
            "MinValue": 1,
            "Description": "Object Lock COMPLIANCE retention of every evidence object, in days: nobody, root included, can delete evidence before then."
        },
        "LogRetentionDays": {
            "Type": "Number",
            "Default": 365,
            "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653],
            "Description": "Retention of the functions', state machines' and container's logs, in days."
        },
        "StateMachineLogLevel": {
            "Type": "String",
            "AllowedValues": ["ALL", "ERROR", "FATAL", "OFF"],
            "Default": "ERROR",
            "Description": "What the state machines log to CloudWatch Logs (ALL includes every state's input and output: case data)."
        },
        "InvestigatorCidr": {
            "Type": "String",
            "Default": "",
            "Description": "Automatic runs keep SSH open from this CIDR (or sg-...) through isolation; empty: none."
        },
        "EndpointExemptions": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "Automatic runs keep HTTPS open to these CIDRs or security groups (the SSM VPC endpoints, so memory can still be captured); empty: none."
        },
        "ForensicAccountId": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": "^([0-9]{12})?$",
            "Description": "Account the snapshots of automatic runs are copied to; empty: this account (with a region or key set) or no copy."
        },
        "ForensicRegion": {
            "Type": "String",
            "Default": "",
            "Description": "Region of the forensic copies; empty: the source region."
        },
        "ForensicKmsKeyArn": {
            "Type": "String",
            "Default": "",
            "Description": "KMS key the forensic copies are encrypted with; empty: no forensic copy."
        },
        "ForensicRoleArn": {
            "Type": "String",
            "Default": "",
            "Description": "Role in ForensicAccountId that makes the copies there (with ForensicAccountId)."
        },
        "ApprovalForAutomaticRuns": {
            "Type": "String",
            "AllowedValues": ["true", "false"],
            "Default": "false",
            "Description": "true: every run an alert starts waits for `firebreak approve` before its first change."
        },
        "AutomaticContainmentsPerHour": {
            "Type": "Number",
            "Default": 5,
            "MinValue": 0,
            "Description": "Automatic containments per hour; beyond them a run waits for approval (a storm of findings, or a forged one, cannot isolate a fleet)."
        },
        "StepRunnerConcurrency": {
            "Type": "Number",
            "Default": 0,
            "MinValue": 0,
            "Description": "Concurrency reserved for the step runner, so other functions cannot starve a containment; 0 reserves none (accounts with the default limit of 10 cannot reserve any)."
        }
    })
}

/// The evidence key: the buckets' SSE-KMS key and the topic's. The
/// account's IAM policies decide who uses it (the roles' statements name
/// the KMS actions their steps declare); naming the roles here would make
/// the key wait for roles whose policies wait for the key's topic. A JSON
/// string (not a YAML object) so that the sandbox's CloudFormation, which
/// breaks on an object here, takes it too; `Fn::Sub` fills the ARNs.
fn evidence_key_policy() -> Value {
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"},
                "Action": "kms:*",
                "Resource": "*"
            },
            {
                "Sid": "EventBridgePublishesToTheTopic",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*"
            }
        ]
    });
    sub(&serde_json::to_string(&policy).unwrap_or_default())
}

fn tls_only(bucket: &str) -> Value {
    json!({
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": reference(bucket),
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "DenyWithoutTls",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [
                        sub(&format!("arn:${{AWS::Partition}}:s3:::${{{bucket}}}")),
                        sub(&format!("arn:${{AWS::Partition}}:s3:::${{{bucket}}}/*")),
                    ],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}}
                }]
            }
        }
    })
}

fn log_group(name: Value) -> Value {
    json!({
        "Type": "AWS::Logs::LogGroup",
        "Properties": {"LogGroupName": name, "RetentionInDays": reference("LogRetentionDays")}
    })
}

/// A bucket of the stack: kept when the stack goes, versioned, SSE-KMS
/// with the evidence key, public access blocked, ACLs off.
fn bucket(name: &str) -> Value {
    json!({
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketName": sub(name),
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": arn_of("EvidenceKey")},
                "BucketKeyEnabled": true
            }]},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": true, "BlockPublicPolicy": true,
                "IgnorePublicAcls": true, "RestrictPublicBuckets": true
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        }
    })
}

fn storage(r: &mut Map<String, Value>) {
    r.insert(
        "EvidenceKey".into(),
        json!({
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Description": "firebreak evidence: the evidence and tools buckets and the alert topic",
                "EnableKeyRotation": true,
                "KeyPolicy": evidence_key_policy()
            }
        }),
    );
    let mut evidence = bucket("firebreak-evidence-${AWS::AccountId}-${AWS::Region}");
    // Versioning first, then Object Lock, as AWS documents the properties.
    let props = evidence["Properties"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut ordered = Map::new();
    for (k, v) in props {
        ordered.insert(k.clone(), v);
        if k == "VersioningConfiguration" {
            ordered.insert("ObjectLockEnabled".into(), json!(true));
            ordered.insert(
                "ObjectLockConfiguration".into(),
                json!({
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": reference("EvidenceRetentionDays")}}
                }),
            );
        }
    }
    evidence["Properties"] = Value::Object(ordered);
    r.insert("EvidenceBucket".into(), evidence);
    r.insert("EvidenceBucketPolicy".into(), tls_only("EvidenceBucket"));
    r.insert(
        "ToolsBucket".into(),
        bucket("firebreak-tools-${AWS::AccountId}-${AWS::Region}"),
    );
    r.insert("ToolsBucketPolicy".into(), tls_only("ToolsBucket"));
}

fn messaging(r: &mut Map<String, Value>) {
    r.insert(
        "AlertTopic".into(),
        json!({
            "Type": "AWS::SNS::Topic",
            "Properties": {"TopicName": "firebreak-alerts", "KmsMasterKeyId": reference("EvidenceKey")}
        }),
    );
    r.insert(
        "AlertTopicPolicy".into(),
        json!({
            "Type": "AWS::SNS::TopicPolicy",
            "Properties": {
                "Topics": [reference("AlertTopic")],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sns:Publish",
                    "Resource": reference("AlertTopic"),
                    "Condition": {"ArnEquals": {"aws:SourceArn": arn_of("ExecutionStatusRule")}}
                }]}
            }
        }),
    );
    for q in ["NotifyDeadLetterQueue", "FailedExecutionsQueue"] {
        r.insert(
            q.into(),
            json!({
                "Type": "AWS::SQS::Queue",
                "Properties": {"MessageRetentionPeriod": 1_209_600, "SqsManagedSseEnabled": true}
            }),
        );
    }
    r.insert(
        "QueuePolicy".into(),
        json!({
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [reference("NotifyDeadLetterQueue"), reference("FailedExecutionsQueue")],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": [arn_of("NotifyDeadLetterQueue"), arn_of("FailedExecutionsQueue")],
                    "Condition": {"ArnEquals": {"aws:SourceArn": [
                        arn_of("GuardDutyFindingsRule"),
                        arn_of("SecurityHubFindingsRule"),
                        arn_of("ExecutionStatusRule")
                    ]}}
                }]}
            }
        }),
    );
}

fn functions(
    r: &mut Map<String, Value>,
    c: &mut Comments,
    runner: &PolicyDocument,
    playbooks: &[Playbook],
) {
    let runner_statements: Vec<Value> = runner.statement.iter().map(scoped).collect();
    r.insert(
        "StepRunnerRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": sub(STEP_RUNNER_ROLE),
                "AssumeRolePolicyDocument": assumed_by("lambda.amazonaws.com"),
                "Policies": [
                    policy("steps", runner_statements),
                    policy("responder", vec![responder()]),
                    policy("logs", vec![logs_to("StepRunnerLogGroup"), xray()])
                ]
            }
        }),
    );
    c.insert(
        "Resources.StepRunnerRole.Properties.RoleName".into(),
        "Named: the member accounts' firebreak-responder role trusts it by ARN.".into(),
    );
    c.insert(
        "Resources.StepRunnerRole.Properties.Policies".into(),
        "The statements every step the step runner runs declares (firebreak's code is\nthe source: `firebreak steps` lists them); S3 is scoped to this stack's buckets\nand SNS to its topic.".into(),
    );
    r.insert(
        "StepRunnerFunction".into(),
        json!({
            "Type": "AWS::Serverless::Function",
            "Metadata": {"BuildMethod": "rust-cargolambda", "BuildProperties": {"Binary": "step-runner"}},
            "Properties": {
                "Description": "firebreak step runner: runs one step of a playbook for Step Functions",
                "CodeUri": "../lambdas",
                "Handler": "bootstrap",
                "Runtime": "provided.al2023",
                "Architectures": [reference("Architecture")],
                "MemorySize": 512,
                "Timeout": 300,
                "ReservedConcurrentExecutions": {"Fn::If": ["ReserveStepRunner", reference("StepRunnerConcurrency"), reference("AWS::NoValue")]},
                "Role": arn_of("StepRunnerRole"),
                "Tracing": "Active",
                "LoggingConfig": {"LogGroup": reference("StepRunnerLogGroup")},
                "Environment": {"Variables": {"FIREBREAK_NOTIFY_TOPIC": reference("AlertTopic")}}
            }
        }),
    );
    c.insert(
        "Resources.StepRunnerFunction.Properties.Timeout".into(),
        "No step waits inside the function: long waits are the state machines' Wait\nstates and the long work runs in the container. Five minutes bounds one step's\nAWS calls with the SDK's own retries.".into(),
    );
    r.insert(
        "StepRunnerLogGroup".into(),
        log_group(json!("/aws/lambda/firebreak-step-runner")),
    );
    let mut machines = Map::new();
    for p in playbooks {
        machines.insert(
            p.name.to_string(),
            json!(format!("${{{}StateMachine}}", pascal(p.name))),
        );
    }
    let machine_arns: Vec<Value> = playbooks
        .iter()
        .map(|p| reference(&format!("{}StateMachine", pascal(p.name))))
        .collect();
    let executions: Vec<Value> = playbooks
        .iter()
        .map(|p| {
            sub(&format!(
                "arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:firebreak-{}:*",
                p.name
            ))
        })
        .collect();
    r.insert(
        "NotifyRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assumed_by("lambda.amazonaws.com"),
                "Policies": [
                    policy("start", vec![
                        allow(&["states:StartExecution", "states:ListExecutions"], machine_arns),
                        allow(&["states:DescribeExecution"], executions),
                        allow(&["sqs:SendMessage"], vec![arn_of("NotifyDeadLetterQueue")]),
                    ]),
                    policy("logs", vec![logs_to("NotifyLogGroup"), xray()])
                ]
            }
        }),
    );
    r.insert(
        "NotifyFunction".into(),
        json!({
            "Type": "AWS::Serverless::Function",
            "Metadata": {"BuildMethod": "rust-cargolambda", "BuildProperties": {"Binary": "notify"}},
            "Properties": {
                "Description": "firebreak notify: starts the playbooks GuardDuty and Security Hub findings call for",
                "CodeUri": "../lambdas",
                "Handler": "bootstrap",
                "Runtime": "provided.al2023",
                "Architectures": [reference("Architecture")],
                "MemorySize": 256,
                "Timeout": 60,
                "ReservedConcurrentExecutions": 1,
                "Role": arn_of("NotifyRole"),
                "Tracing": "Active",
                "LoggingConfig": {"LogGroup": reference("NotifyLogGroup")},
                "DeadLetterQueue": {"Type": "SQS", "TargetArn": arn_of("NotifyDeadLetterQueue")},
                "Environment": {"Variables": {
                    "FIREBREAK_STATE_MACHINES": sub(&serde_json::to_string(&machines).unwrap_or_default()),
                    "FIREBREAK_EVIDENCE_BUCKET": reference("EvidenceBucket"),
                    "FIREBREAK_TOOLS_BUCKET": reference("ToolsBucket"),
                    "FIREBREAK_MAX_PER_HOUR": reference("AutomaticContainmentsPerHour"),
                    "FIREBREAK_APPROVAL": reference("ApprovalForAutomaticRuns"),
                    "FIREBREAK_ALLOW_SSH_FROM": reference("InvestigatorCidr"),
                    "FIREBREAK_ALLOW_HTTPS_TO": {"Fn::Join": [",", reference("EndpointExemptions")]},
                    "FIREBREAK_FORENSIC_ACCOUNT": reference("ForensicAccountId"),
                    "FIREBREAK_FORENSIC_REGION": reference("ForensicRegion"),
                    "FIREBREAK_FORENSIC_KMS_KEY": reference("ForensicKmsKeyArn"),
                    "FIREBREAK_FORENSIC_ROLE": reference("ForensicRoleArn")
                }}
            }
        }),
    );
    c.insert(
        "Resources.NotifyFunction.Properties.ReservedConcurrentExecutions".into(),
        "One at a time: the hourly limit counts the executions already started, and two\nfindings handled at once could both count under it. EventBridge retries a\nthrottled event (for up to a day), so none is lost.".into(),
    );
    c.insert(
        "Resources.NotifyFunction.Properties.Timeout".into(),
        "A few Step Functions calls per finding.".into(),
    );
    r.insert(
        "NotifyLogGroup".into(),
        log_group(json!("/aws/lambda/firebreak-notify")),
    );
}

fn container(r: &mut Map<String, Value>, c: &mut Comments, container: &PolicyDocument) {
    r.insert(
        "ContainerCluster".into(),
        json!({"Type": "AWS::ECS::Cluster"}),
    );
    r.insert(
        "ContainerLogGroup".into(),
        log_group(json!("/ecs/firebreak")),
    );
    r.insert(
        "ContainerExecutionRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assumed_by("ecs-tasks.amazonaws.com"),
                "Policies": [policy("pull-and-log", vec![
                    // GetAuthorizationToken takes no resource ARN.
                    allow(&["ecr:GetAuthorizationToken"], vec![json!("*")]),
                    allow(
                        &["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                        vec![sub("arn:${AWS::Partition}:ecr:*:${AWS::AccountId}:repository/*")],
                    ),
                    logs_to("ContainerLogGroup"),
                ])]
            }
        }),
    );
    let statements: Vec<Value> = container.statement.iter().map(scoped).collect();
    r.insert(
        "ContainerTaskRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assumed_by("ecs-tasks.amazonaws.com"),
                "Policies": [
                    policy("steps", statements),
                    policy("responder", vec![responder()])
                ]
            }
        }),
    );
    r.insert(
        "ContainerTaskDefinition".into(),
        json!({
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {
                "Family": "firebreak",
                "RequiresCompatibilities": ["FARGATE"],
                "NetworkMode": "awsvpc",
                "Cpu": "4096",
                "Memory": "16384",
                "EphemeralStorage": {"SizeInGiB": 200},
                "RuntimePlatform": {
                    "OperatingSystemFamily": "LINUX",
                    "CpuArchitecture": {"Fn::If": ["Arm", "ARM64", "X86_64"]}
                },
                "ExecutionRoleArn": arn_of("ContainerExecutionRole"),
                "TaskRoleArn": arn_of("ContainerTaskRole"),
                "ContainerDefinitions": [{
                    "Name": firebreak_workflows::step::CONTAINER_NAME,
                    "Image": reference("ContainerImage"),
                    "Essential": true,
                    "LogConfiguration": {"LogDriver": "awslogs", "Options": {
                        "awslogs-group": reference("ContainerLogGroup"),
                        "awslogs-region": reference("AWS::Region"),
                        "awslogs-stream-prefix": "firebreak"
                    }}
                }]
            }
        }),
    );
    c.insert(
        "Resources.ContainerTaskDefinition.Properties.EphemeralStorage".into(),
        "Fargate's most (200 GiB): a memory image is downloaded whole before it is\nverified and analysed, and an instance may have up to that much memory.".into(),
    );
    c.insert(
        "Resources.ContainerTaskDefinition.Properties.Cpu".into(),
        "Volatility and SHA-256 over a whole image: 4 vCPU and 16 GiB.".into(),
    );
    r.insert(
        "ContainerSecurityGroup".into(),
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "firebreak container tasks: HTTPS out to AWS, nothing in",
                "VpcId": reference("ContainerVpcId"),
                "SecurityGroupEgress": [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0", "Description": "AWS APIs (S3, ECR, EBS, Logs)"}]
            }
        }),
    );
}

fn state_machine(r: &mut Map<String, Value>, p: &Playbook) -> Result<(), PlaybookError> {
    let id = pascal(p.name);
    // The definition's placeholders become references Fn::Sub fills:
    // what DefinitionSubstitutions would do, in the one form the sandbox's
    // CloudFormation also applies (it ignores DefinitionSubstitutions, and
    // its Fn::Sub with a variable map turns `$$` into `$`).
    let mut text = p.definition_text();
    let mut offered = vec![("StepRunnerArn", "StepRunnerFunction.Arn")];
    if p.uses_container() {
        offered.extend([
            ("AnalysisClusterArn", "ContainerCluster.Arn"),
            ("AnalysisTaskDefinitionArn", "ContainerTaskDefinition"),
            ("AnalysisSubnetId", "ContainerSubnetId"),
            ("AnalysisSecurityGroupId", "ContainerSecurityGroup.GroupId"),
        ]);
    }
    let filled: Vec<String> = offered.iter().map(|(_, to)| format!("${{{to}}}")).collect();
    for (from, to) in &offered {
        text = text.replace(&format!("${{{from}}}"), &format!("${{{to}}}"));
    }
    // Fn::Sub would read any other `${...}` as a reference.
    let mut rest = text.as_str();
    while let Some(at) = rest.find("${") {
        let end = rest[at..]
            .find('}')
            .map(|e| at + e + 1)
            .unwrap_or(rest.len());
        let placeholder = &rest[at..end];
        if !filled.iter().any(|f| f == placeholder) {
            return Err(PlaybookError::Render(format!(
                "{}: the definition has {placeholder}, which the stack does not fill",
                p.name
            )));
        }
        rest = &rest[end..];
    }
    let mut statements = vec![allow(
        &["lambda:InvokeFunction"],
        vec![
            arn_of("StepRunnerFunction"),
            sub("${StepRunnerFunction.Arn}:*"),
        ],
    )];
    if p.uses_container() {
        statements.extend([
            allow(&["ecs:RunTask"], vec![reference("ContainerTaskDefinition")]),
            allow(
                &["ecs:StopTask", "ecs:DescribeTasks"],
                vec![sub("arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/${ContainerCluster}/*")],
            ),
            allow(&["iam:PassRole"], vec![arn_of("ContainerTaskRole"), arn_of("ContainerExecutionRole")]),
            allow(
                &["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                vec![sub("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/StepFunctionsGetEventsForECSTaskRule")],
            ),
        ]);
    }
    // Log delivery's actions take no resource ARN (AWS documents `*`).
    statements.push(allow(
        &[
            "logs:CreateLogDelivery",
            "logs:GetLogDelivery",
            "logs:UpdateLogDelivery",
            "logs:DeleteLogDelivery",
            "logs:ListLogDeliveries",
            "logs:PutResourcePolicy",
            "logs:DescribeResourcePolicies",
            "logs:DescribeLogGroups",
        ],
        vec![json!("*")],
    ));
    statements.push(xray());
    r.insert(
        format!("{id}StateMachineRole"),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assumed_by("states.amazonaws.com"),
                "Policies": [policy("run", statements)]
            }
        }),
    );
    r.insert(
        format!("{id}StateMachine"),
        json!({
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineName": format!("firebreak-{}", p.name),
                "RoleArn": arn_of(&format!("{id}StateMachineRole")),
                "DefinitionString": {"Fn::Sub": text},
                "LoggingConfiguration": {
                    "Level": reference("StateMachineLogLevel"),
                    "IncludeExecutionData": false,
                    "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": arn_of("StateMachineLogGroup")}}]
                },
                "TracingConfiguration": {"Enabled": true},
                "Tags": [{"Key": "firebreak:playbook", "Value": p.name}]
            }
        }),
    );
    Ok(())
}

fn rules(r: &mut Map<String, Value>, playbooks: &[Playbook]) {
    let to_notify = json!({
        "Id": "notify",
        "Arn": arn_of("NotifyFunction"),
        "RetryPolicy": {"MaximumEventAgeInSeconds": 86_400, "MaximumRetryAttempts": 185},
        "DeadLetterConfig": {"Arn": arn_of("NotifyDeadLetterQueue")}
    });
    for (id, source, detail_type) in [
        (
            "GuardDutyFindingsRule",
            "aws.guardduty",
            "GuardDuty Finding",
        ),
        (
            "SecurityHubFindingsRule",
            "aws.securityhub",
            "Security Hub Findings - Imported",
        ),
    ] {
        r.insert(
            id.into(),
            json!({
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Description": format!("{detail_type} events to firebreak notify"),
                    "EventPattern": {"source": [source], "detail-type": [detail_type]},
                    "State": "ENABLED",
                    "Targets": [to_notify.clone()]
                }
            }),
        );
        r.insert(
            format!("{id}Permission"),
            json!({
                "Type": "AWS::Lambda::Permission",
                "Properties": {
                    "FunctionName": reference("NotifyFunction"),
                    "Action": "lambda:InvokeFunction",
                    "Principal": "events.amazonaws.com",
                    "SourceArn": arn_of(id)
                }
            }),
        );
    }
    let machines: Vec<Value> = playbooks
        .iter()
        .map(|p| reference(&format!("{}StateMachine", pascal(p.name))))
        .collect();
    r.insert(
        "ExecutionStatusRule".into(),
        json!({
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": "firebreak executions that failed, timed out or were stopped, to the alert topic",
                "EventPattern": {
                    "source": ["aws.states"],
                    "detail-type": ["Step Functions Execution Status Change"],
                    "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": machines}
                },
                "State": "ENABLED",
                "Targets": [
                    {"Id": "topic", "Arn": reference("AlertTopic")},
                    {"Id": "queue", "Arn": arn_of("FailedExecutionsQueue")}
                ]
            }
        }),
    );
}

/// `infra/template.yaml`.
pub(super) fn template(
    playbooks: &[Playbook],
    runner: &PolicyDocument,
    container_policy: &PolicyDocument,
) -> Result<String, PlaybookError> {
    let mut r = Map::new();
    let mut c = Comments::new();
    storage(&mut r);
    messaging(&mut r);
    functions(&mut r, &mut c, runner, playbooks);
    container(&mut r, &mut c, container_policy);
    r.insert(
        "StateMachineLogGroup".into(),
        log_group(sub("/aws/vendedlogs/states/firebreak-${AWS::StackName}")),
    );
    for p in playbooks {
        state_machine(&mut r, p)?;
    }
    rules(&mut r, playbooks);
    let mut outputs = Map::new();
    let mut out = |name: &str, value: Value, what: &str| {
        outputs.insert(name.into(), json!({"Description": what, "Value": value}));
    };
    out(
        "StepRunnerArn",
        arn_of("StepRunnerFunction"),
        "The step runner function",
    );
    out(
        "ContainerTaskRoleArn",
        arn_of("ContainerTaskRole"),
        "The container steps' role: the member-role StackSet's ContainerTaskRoleArn",
    );
    out(
        "StepRunnerRoleArn",
        arn_of("StepRunnerRole"),
        "The step runner's role: the member-role StackSet's StepRunnerRoleArn",
    );
    for p in playbooks {
        out(
            &format!("{}StateMachineArn", pascal(p.name)),
            reference(&format!("{}StateMachine", pascal(p.name))),
            &format!("The {} state machine", p.name),
        );
    }
    out(
        "EvidenceBucketName",
        reference("EvidenceBucket"),
        "Evidence bucket (Object Lock)",
    );
    out(
        "ToolsBucketName",
        reference("ToolsBucket"),
        "Tools bucket (LiME modules, symbol tables)",
    );
    out(
        "AlertTopicArn",
        reference("AlertTopic"),
        "Notifications: approvals, starts, ends, failed executions",
    );
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": "firebreak: incident response for EC2 (step runner, notify function, one state machine per playbook, evidence storage)",
        "Parameters": parameters(),
        "Conditions": {
            "ReserveStepRunner": {"Fn::Not": [{"Fn::Equals": [reference("StepRunnerConcurrency"), 0]}]},
            "Arm": {"Fn::Equals": [reference("Architecture"), "arm64"]}
        },
        "Resources": r,
        "Outputs": outputs
    });
    Ok(to_yaml(&template, TEMPLATE_HEADER, &c))
}

const TEMPLATE_HEADER: &str =
    "Rendered by `firebreak infra render` from firebreak's code: do not edit (a test
fails when this file is not what the code renders).

Deploy: sam build --beta-features && sam deploy --guided (docs/deploying.md).";

/// `infra/member-role.yaml`: `firebreak-responder` in a member account,
/// trusted only by the step runner's and the container steps' roles, with
/// the permissions of the steps that act on the member's instances.
/// Evidence stays in the security account, so no S3, no SNS, and none of
/// the KMS actions of evidence and custody (`kms:Sign`, `Encrypt`,
/// `GenerateDataKey`): what is left of KMS is what EBS needs for snapshot
/// copies.
/// KMS actions of evidence and custody, which happen in the security
/// account.
const MEMBER_KMS_EXCLUDED: [&str; 3] = ["kms:Sign", "kms:Encrypt", "kms:GenerateDataKey"];

pub(super) fn member_role(runner: &PolicyDocument, container: &PolicyDocument) -> String {
    let statements: Vec<Value> = PolicyDocument::gather(
        runner
            .statement
            .iter()
            .chain(&container.statement)
            .filter(|s| {
                !s.action
                    .iter()
                    .all(|a| a.starts_with("s3:") || a.starts_with("sns:"))
            }),
    )
    .statement
    .iter()
    .filter_map(|s| {
        let mut s = s.clone();
        s.action.retain(|a| {
            !a.starts_with("s3:")
                && !a.starts_with("sns:")
                && !MEMBER_KMS_EXCLUDED.contains(&a.as_str())
        });
        (!s.action.is_empty()).then(|| scoped(&s))
    })
    .collect();
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "firebreak-responder: the role firebreak's step runner assumes in this (member) account",
        "Parameters": {
            "StepRunnerRoleArn": {
                "Type": "String",
                "AllowedPattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
                "Description": "The step runner's role in the security account (the stack's StepRunnerRoleArn output)."
            },
            "ContainerTaskRoleArn": {
                "Type": "String",
                "AllowedPattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
                "Description": "The container steps' role in the security account (the stack's ContainerTaskRoleArn output)."
            }
        },
        "Resources": {
            "ResponderRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": RESPONDER_ROLE,
                    "MaxSessionDuration": 3600,
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Effect": "Allow",
                            "Principal": {"AWS": [reference("StepRunnerRoleArn"), reference("ContainerTaskRoleArn")]},
                            "Action": "sts:AssumeRole"
                        }]
                    },
                    "Policies": [policy("steps", statements)]
                }
            }
        },
        "Outputs": {
            "ResponderRoleArn": {"Description": "The role", "Value": arn_of("ResponderRole")}
        }
    });
    let mut c = Comments::new();
    c.insert(
        "Resources.ResponderRole.Properties.RoleName".into(),
        "Named: the step runner assumes arn:aws:iam::MEMBER:role/firebreak-responder.".into(),
    );
    to_yaml(
        &template,
        "Rendered by `firebreak infra render`: do not edit.\n\nDeploy to every member account as a StackSet (docs/deploying.md, \"Several accounts\").",
        &c,
    )
}
