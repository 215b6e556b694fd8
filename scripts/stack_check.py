"""The deployable stack, checked by the real tools and deployed into a
sandbox's CloudFormation (moto). Run by scripts/stack-check, which starts
the sandbox, builds the functions and passes:

    stack_check.py SANDBOX_URL STEP_RUNNER_ZIP NOTIFY_ZIP CARGO_LAMBDA

Steps, each printing what it checked:
1. cfn-lint on infra/template.yaml and infra/member-role.yaml: no errors,
   and no warning that the template does not name as kept.
2. The SAM template translated to plain CloudFormation (aws-sam-translator),
   with the functions' CodeUri pointing at the packages uploaded to the
   sandbox's S3.
3. parliament on every IAM policy of both templates (intrinsics resolved
   to example ARNs): no findings.
4. create_stack in the sandbox: CREATE_COMPLETE; the state machines hold
   the rendered definitions with the ARNs in place, the rules their
   patterns and targets, the functions their code and settings. What the
   sandbox ignores is checked on the translated template instead.
5. The notify function, run by `cargo lambda watch` with the environment
   the stack gave it, handles a GuardDuty finding by starting the deployed
   ec2-compromise state machine.
"""

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
VENV_BIN = Path(sys.executable).parent
REGION = "us-east-1"
ACCOUNT = "123456789012"


def say(msg):
    print(f"stack-check: {msg}", flush=True)


def fail(msg):
    print(f"stack-check: FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def kept_warnings(text):
    """The cfn-lint rules the template keeps, each with its reason in a
    `# cfn-lint W...: why` comment."""
    return set(re.findall(r"#\s*cfn-lint (W\d+):", text))


def lint():
    for name in ("template.yaml", "member-role.yaml"):
        path = INFRA / name
        out = subprocess.run(
            [str(VENV_BIN / "cfn-lint"), "--format", "parseable", str(path)],
            capture_output=True,
            text=True,
        )
        lines = [l for l in out.stdout.splitlines() if l.strip()]
        errors = [l for l in lines if re.search(r":E\d+:", l)]
        kept = kept_warnings(path.read_text())
        unexplained = [
            l for l in lines if re.search(r":W\d+:", l) and not any(f":{w}:" in l for w in kept)
        ]
        if out.returncode & 1 or errors or unexplained:
            fail(f"cfn-lint on {name} (exit {out.returncode}):\n" + "\n".join(errors + unexplained) + out.stderr)
        say(f"cfn-lint: {name} has no errors and no unexplained warning ({len(lines)} kept)")


def translate(code):
    """The SAM template as plain CloudFormation, functions' code in S3."""
    sam = yaml_parse((INFRA / "template.yaml").read_text())
    for logical, (bucket, key) in code.items():
        sam["Resources"][logical]["Properties"]["CodeUri"] = f"s3://{bucket}/{key}"

    class Loader:
        def load(self):
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    cfn = transform(sam, {}, Loader())
    say(f"aws-sam-translator: {len(cfn['Resources'])} CloudFormation resources")
    return cfn


EXAMPLES = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::StackName": "firebreak",
    "AWS::NoValue": None,
}


def resolve(v, cfn, params):
    """Intrinsics to example values, for parliament: Ref and GetAtt to
    ARNs of this account, Sub filled, Join joined."""
    if isinstance(v, list):
        return [resolve(x, cfn, params) for x in v]
    if not isinstance(v, dict):
        return v
    if "Ref" in v:
        name = v["Ref"]
        if name in EXAMPLES:
            return EXAMPLES[name]
        if name in params:
            return params[name]
        kind = cfn["Resources"].get(name, {}).get("Type", "")
        # Ref gives a name for these (CloudFormation's resource reference),
        # an ARN for the rest used here.
        if kind in ("AWS::ECS::Cluster", "AWS::Logs::LogGroup", "AWS::IAM::Role", "AWS::Events::Rule"):
            return name
        return example_arn(kind, name)
    if "Fn::GetAtt" in v:
        res, _att = v["Fn::GetAtt"] if isinstance(v["Fn::GetAtt"], list) else v["Fn::GetAtt"].split(".", 1)
        return example_arn(cfn["Resources"][res]["Type"], res)
    if "Fn::Sub" in v:
        arg = v["Fn::Sub"]
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def fill(m):
            name = m.group(1)
            if name in extra:
                return str(resolve(extra[name], cfn, params))
            if "." in name:
                return str(resolve({"Fn::GetAtt": name.split(".", 1)}, cfn, params))
            return str(resolve({"Ref": name}, cfn, params))

        return re.sub(r"\$\{([^}!]+)\}", fill, text)
    if "Fn::Join" in v:
        sep, items = v["Fn::Join"]
        return sep.join(str(x) for x in resolve(items, cfn, params))
    if "Fn::If" in v:
        return resolve(v["Fn::If"][1], cfn, params)
    return {k: resolve(x, cfn, params) for k, x in v.items()}


# Example ARNs (or names) by resource type, `{n}` the logical id.
EXAMPLE_ARNS = {
    "AWS::S3::Bucket": "firebreak-{lower}",
    "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{{n}}",
    "AWS::StepFunctions::StateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{{n}}",
    "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{{n}}",
    "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{{n}}",
    "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{{n}}",
    "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{{n}}",
    "AWS::ECS::TaskDefinition": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{{n}}:1",
    "AWS::ECS::Cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{{n}}",
    "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{{n}}",
    "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{{n}}",
}


def example_arn(kind, name):
    pattern = EXAMPLE_ARNS.get(kind, f"arn:aws:x:{REGION}:{ACCOUNT}:{{lower}}")
    return pattern.format(n=name, lower=name.lower())


def policies(cfn, params):
    """Every IAM policy document of a template, by where it is."""
    found = []
    for logical, res in cfn["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            for p in props.get("Policies", []):
                found.append((f"{logical}/{p['PolicyName']}", resolve(p["PolicyDocument"], cfn, params)))
        if res["Type"] in ("AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy"):
            found.append((logical, resolve(props["PolicyDocument"], cfn, params)))
        if res["Type"] == "AWS::KMS::Key":
            doc = resolve(props["KeyPolicy"], cfn, params)
            found.append((f"{logical}/KeyPolicy", json.loads(doc) if isinstance(doc, str) else doc))
    return found


# Where parliament 1.6.4's action database is behind AWS's Service
# Authorization Reference, which lists for ListExecutions the state machine
# (not only map runs) and for DescribeExecution the execution (not only
# express executions): a RESOURCE_MISMATCH naming only these actions, on
# resources of the documented form, is the database's, not the policy's.
DATABASE_GAPS = {
    "states:ListExecutions": r"arn:aws:states:[a-z0-9-]+:\d{12}:stateMachine:[\w-]+",
    "states:DescribeExecution": r"arn:aws:states:[a-z0-9-]+:\d{12}:execution:[\w-]+:\*",
}


def database_gap(finding, doc):
    if finding["issue"] != "RESOURCE_MISMATCH":
        return False
    for d in finding["detail"]:
        pattern = DATABASE_GAPS.get(d["action"])
        if pattern is None:
            return False
        resources = [
            r
            for s in doc["Statement"]
            if d["action"] in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
            for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
        ]
        if not resources or not all(re.fullmatch(pattern, r) for r in resources):
            return False
    return True


def parliament(cfn, member):
    docs = policies(cfn, {}) + policies(
        member,
        {
            "StepRunnerRoleArn": f"arn:aws:iam::{ACCOUNT}:role/runner",
            "ContainerTaskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/container",
        },
    )
    bad = []
    passed_over = []
    for where, doc in docs:
        for s in doc["Statement"]:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            if "*" in actions:
                bad.append(f"{where}: action *")
        out = subprocess.run(
            [str(VENV_BIN / "parliament"), "--json", "--string", json.dumps(doc)], capture_output=True, text=True
        )
        for line in out.stdout.splitlines():
            finding = json.loads(line)
            if where.endswith("/KeyPolicy") and finding["issue"] == "RESOURCE_STAR":
                # A key policy's Resource is always "*": it means this key.
                passed_over.append(f"{where}: RESOURCE_STAR (a key policy names its key as *)")
            elif database_gap(finding, doc):
                passed_over.append(f"{where}: {finding['issue']} {[d['action'] for d in finding['detail']]} (parliament's database)")
            else:
                bad.append(f"{where}: {line}")
        if out.returncode not in (0, 1) or out.stderr.strip():
            bad.append(f"{where}: parliament exit {out.returncode}: {out.stderr}")
    if bad:
        fail("parliament:\n" + "\n".join(bad))
    say(f"parliament: no findings on {len(docs)} policies (no action is *); passed over:")
    for p in passed_over:
        print(f"  {p}", flush=True)


def client(name, url):
    return boto3.client(
        name, endpoint_url=url, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test"
    )


def main():
    url, runner_zip, notify_zip, cargo_lambda = sys.argv[1:5]
    lint()
    s3 = client("s3", url)
    s3.create_bucket(Bucket="firebreak-deploy")
    code = {}
    for logical, path in (("StepRunnerFunction", runner_zip), ("NotifyFunction", notify_zip)):
        key = f"{logical}.zip"
        s3.upload_file(path, "firebreak-deploy", key)
        code[logical] = ("firebreak-deploy", key)
    cfn = translate(code)
    member = yaml_parse((INFRA / "member-role.yaml").read_text())
    parliament(cfn, member)
    deployed = deploy(url, cfn, {"StepRunnerFunction": runner_zip, "NotifyFunction": notify_zip})
    asked_for(cfn)
    notify(url, deployed, cargo_lambda)
    say("ok")


PARAMETERS = {
    "ContainerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/firebreak:latest",
    "ContainerVpcId": "vpc-0a1b2c3d",
    "ContainerSubnetId": "subnet-0a1b2c3d",
    "AutomaticContainmentsPerHour": "7",
}


def deploy(url, cfn, zips):
    # moto 5.2.5 makes a stack's state machines in its plain Step Functions
    # backend, but serves the API from another one while it executes state
    # machines (execute_state_machine, which scripts/sandbox turns on):
    # they would be made and never found. Off here; the executions the
    # check starts need only be started.
    req = urllib.request.Request(
        f"{url}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": False}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=30).read()
    cf = client("cloudformation", url)
    ec2 = client("ec2", url)
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    params = dict(PARAMETERS, ContainerVpcId=vpc, ContainerSubnetId=subnet)
    t0 = time.time()
    cf.create_stack(
        StackName="firebreak",
        TemplateBody=json.dumps(cfn),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    status = None
    for _ in range(300):
        status = cf.describe_stacks(StackName="firebreak")["Stacks"][0]["StackStatus"]
        if not status.endswith("IN_PROGRESS"):
            break
        time.sleep(1)
    if status != "CREATE_COMPLETE":
        events = cf.describe_stack_events(StackName="firebreak")["StackEvents"]
        fail(f"stack {status}: " + json.dumps([e.get("ResourceStatusReason") for e in events][:10]))
    # moto lists the resources it does not implement (bucket policies)
    # without ids: those are checked on the template (asked_for).
    listed = cf.describe_stack_resources(StackName="firebreak")["StackResources"]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in listed if r.get("PhysicalResourceId")}
    unlisted = sorted(set(cfn["Resources"]) - set(physical))
    if unlisted:
        say(f"the sandbox made no {', '.join(unlisted)} (not implemented): checked on the template")
    say(f"create_stack: CREATE_COMPLETE in {time.time() - t0:.1f} s, {len(physical)} resources")

    lam = client("lambda", url)
    functions = {}
    for logical, path in zips.items():
        conf = lam.get_function(FunctionName=physical[logical])["Configuration"]
        want = base64.b64encode(hashlib.sha256(Path(path).read_bytes()).digest()).decode()
        if conf["CodeSha256"] != want or conf["Runtime"] != "provided.al2023" or conf["Handler"] != "bootstrap":
            fail(f"{logical}: {conf}")
        functions[logical] = conf
    say("functions: both exist with the uploaded code (SHA-256), provided.al2023, bootstrap")
    # Lambda's variables are strings; moto hands a Number parameter back as
    # a number.
    env = {k: str(v) for k, v in functions["NotifyFunction"]["Environment"]["Variables"].items()}
    if env.get("FIREBREAK_MAX_PER_HOUR") != "7" or env.get("FIREBREAK_APPROVAL") != "false":
        fail(f"notify environment: {env}")

    sfn = client("stepfunctions", url)
    runner_arn = functions["StepRunnerFunction"]["FunctionArn"]
    cluster = client("ecs", url).describe_clusters(clusters=[physical["ContainerCluster"]])["clusters"][0]["clusterArn"]
    group = physical["ContainerSecurityGroup"]
    fill = {
        "StepRunnerArn": runner_arn,
        "AnalysisClusterArn": cluster,
        "AnalysisTaskDefinitionArn": physical["ContainerTaskDefinition"],
        "AnalysisSubnetId": subnet,
        "AnalysisSecurityGroupId": group,
    }
    machines = {}
    for path in sorted((INFRA / "statemachines").glob("*.asl.json")):
        playbook = path.name.removesuffix(".asl.json")
        text = path.read_text()
        for k, v in fill.items():
            text = text.replace("${" + k + "}", v)
        arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:firebreak-{playbook}"
        try:
            d = sfn.describe_state_machine(stateMachineArn=arn)
        except sfn.exceptions.StateMachineDoesNotExist:
            made = [m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]]
            fail(f"{arn} was not made (the stack says {physical.get(logical_id(playbook))!r}; made: {made})")
        if json.loads(d["definition"]) != json.loads(text):
            have = [l for l in d["definition"].splitlines() if l not in text.splitlines()]
            want = [l for l in text.splitlines() if l not in d["definition"].splitlines()]
            fail(f"{arn}: the definition is not the rendered one with the ARNs in place:\n  deployed {have[:6]}\n  expected {want[:6]}")
        tags = {t["key"]: t["value"] for t in sfn.list_tags_for_resource(resourceArn=arn)["tags"]}
        if tags.get("firebreak:playbook") != playbook:
            fail(f"{arn}: tags {tags}")
        if "${" in d["definition"]:
            fail(f"{arn}: a placeholder is left")
        machines[playbook] = arn
    if env.get("FIREBREAK_STATE_MACHINES") and json.loads(env["FIREBREAK_STATE_MACHINES"]) != machines:
        fail(f"notify's FIREBREAK_STATE_MACHINES: {env['FIREBREAK_STATE_MACHINES']}")
    say(f"state machines: {', '.join(machines)} hold the rendered definitions, step runner and container ARNs in place, tagged")

    events = client("events", url)
    notify_arn = functions["NotifyFunction"]["FunctionArn"]
    for logical, source in (("GuardDutyFindingsRule", "aws.guardduty"), ("SecurityHubFindingsRule", "aws.securityhub")):
        rule = events.describe_rule(Name=physical[logical])
        pattern = json.loads(rule["EventPattern"])
        targets = events.list_targets_by_rule(Rule=physical[logical])["Targets"]
        if pattern.get("source") != [source] or [t["Arn"] for t in targets] != [notify_arn]:
            fail(f"{logical}: {pattern} -> {targets}")
    rule = events.describe_rule(Name=physical["ExecutionStatusRule"])
    pattern = json.loads(rule["EventPattern"])
    targets = {t["Id"]: t["Arn"] for t in events.list_targets_by_rule(Rule=physical["ExecutionStatusRule"])["Targets"]}
    topic = physical["AlertTopic"]
    if sorted(pattern["detail"]["status"]) != ["ABORTED", "FAILED", "TIMED_OUT"] or sorted(
        pattern["detail"]["stateMachineArn"]
    ) != sorted(machines.values()) or targets.get("topic") != topic:
        fail(f"ExecutionStatusRule: {pattern} -> {targets}")
    say("rules: GuardDuty and Security Hub findings to notify; FAILED/TIMED_OUT/ABORTED executions to the topic and queue")

    logs = client("logs", url)
    groups = {g["logGroupName"]: g.get("retentionInDays") for g in logs.describe_log_groups()["logGroups"]}
    for name in ("/aws/lambda/firebreak-step-runner", "/aws/lambda/firebreak-notify", "/ecs/firebreak"):
        if groups.get(name) != 365:
            fail(f"log group {name}: {groups}")
    say("log groups: made with 365 days' retention")
    return {"machines": machines, "notify_env": env}


# What the sandbox's CloudFormation ignores (TOOLING.md): checked on the
# translated template, which is what AWS would be asked for.
def asked_for(cfn):
    r = cfn["Resources"]
    bucket = r["EvidenceBucket"]["Properties"]
    assert bucket["ObjectLockEnabled"] is True, bucket
    rule = bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert rule["Mode"] == "COMPLIANCE" and rule["Days"] == {"Ref": "EvidenceRetentionDays"}, rule
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}, bucket
    assert all(bucket["PublicAccessBlockConfiguration"].values()), bucket
    enc = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert enc["SSEAlgorithm"] == "aws:kms", enc
    for p in ("EvidenceBucketPolicy", "ToolsBucketPolicy"):
        s = r[p]["Properties"]["PolicyDocument"]["Statement"][0]
        assert s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, s
    notify = r["NotifyFunction"]["Properties"]
    assert notify["DeadLetterConfig"]["TargetArn"] == {"Fn::GetAtt": ["NotifyDeadLetterQueue", "Arn"]}, notify
    assert notify["ReservedConcurrentExecutions"] == 1, notify
    for logical in ("StepRunnerFunction", "NotifyFunction"):
        p = r[logical]["Properties"]
        assert p["Architectures"] == [{"Ref": "Architecture"}], p
        assert p["TracingConfig"] == {"Mode": "Active"}, p
    for logical, res in r.items():
        if res["Type"] == "AWS::StepFunctions::StateMachine":
            p = res["Properties"]
            assert p["LoggingConfiguration"]["Level"] == {"Ref": "StateMachineLogLevel"}, p
            assert p["TracingConfiguration"] == {"Enabled": True}, p
        if res["Type"] == "AWS::Events::Rule" and logical != "ExecutionStatusRule":
            assert res["Properties"]["Targets"][0]["DeadLetterConfig"], res
    assert cfn["Parameters"]["StateMachineLogLevel"]["Default"] == "ERROR"
    say(
        "checked on the translated template (the sandbox ignores them): Object Lock COMPLIANCE with the "
        "retention parameter, versioning, public access block, SSE-KMS, TLS-only bucket policies, the "
        "notify DLQ and reserved concurrency, architectures, X-Ray, state machine logging (ERROR) and "
        "tracing, rule dead-letter queues"
    )


def logical_id(playbook):
    """`ec2-contain` to `Ec2ContainStateMachine`, as the template names it."""
    return "".join(w[:1].upper() + w[1:] for w in playbook.split("-")) + "StateMachine"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def notify(url, deployed, cargo_lambda):
    port = free_port()
    # An env file, not --env-var: cargo lambda splits those at commas, and
    # FIREBREAK_STATE_MACHINES is JSON.
    env = dict(deployed["notify_env"])
    env.update(AWS_ENDPOINT_URL=url, AWS_REGION=REGION, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    env_file = Path(os.environ.get("STACK_CHECK_WORK", "/tmp")) / "notify.env"
    for k, v in env.items():
        if "'" in v or "\n" in v:
            fail(f"{k} cannot go into an env file: {v!r}")
    env_file.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
    env_args = ["--env-file", str(env_file)]
    log = open(os.environ.get("STACK_CHECK_WATCH_LOG", "/dev/null"), "w")
    watch = subprocess.Popen(
        [cargo_lambda, "lambda", "watch", "--manifest-path", str(ROOT / "lambdas/Cargo.toml"), "--bin", "notify",
         "--invoke-port", str(port)] + env_args,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if watch.poll() is not None:
                    fail("cargo lambda watch exited")
                time.sleep(1)
        event = json.loads((ROOT / "tests/fixtures/alerts/01-guardduty-backdoor-ec2.json").read_text())
        event["detail"]["region"] = REGION
        event["detail"]["accountId"] = ACCOUNT
        event["account"] = ACCOUNT
        event["region"] = REGION
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/2015-03-31/functions/notify/invocations",
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(req, timeout=600).read())
        outcomes = answer.get("outcomes") or []
        if [o["playbook"] for o in outcomes] != ["ec2-compromise"]:
            fail(f"notify answered {answer}")
        sfn = client("stepfunctions", url)
        arn = deployed["machines"]["ec2-compromise"]
        names = [e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]]
        if names != [outcomes[0]["execution_name"]]:
            fail(f"executions of {arn}: {names}, notify said {outcomes}")
        say(f"notify: a GuardDuty finding started {names[0]} of the deployed ec2-compromise")
    finally:
        os.killpg(watch.pid, 15)
        watch.wait()


if __name__ == "__main__":
    main()
