#!/usr/bin/env python3
"""Run differential-corpus definitions in moto's Step Functions.

Usage:
    run_moto.py [--endpoint URL] [--json] [FILE.json ...]

Without FILE arguments every NN-*.json next to this script is run. Without
--endpoint the script starts its own moto server (from the firebreak tools
venv, or $MOTO_SERVER) on a free 127.0.0.1 port and stops it at the end.
With --endpoint it uses that server and RESETS it (POST /moto-api/reset)
before each file, so never point it at a server that holds anything else.

For each file: reset moto, enable execution (execute_state_machine,
lambda use_docker false), create the IAM role and the Lambda function
"differential", queue the file's lambda_results, create a state machine
named after the file stem, start an execution named "differential" with
the file's input and poll DescribeExecution until it is not RUNNING (30 s
cap). Prints status, output (parsed JSON), error and cause per file; with
--json prints one JSON object keyed by file stem instead. Files carrying
"moto_bug" also show the documented AWS result next to moto's, and a note
when moto has started to agree with it (the entry is then stale).
"""

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import boto3

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE_NAME = "differential"
FUNCTION_NAME = "differential"
EXECUTION_NAME = "differential"
POLL_CAP_SECONDS = 30.0
HERE = Path(__file__).resolve().parent
DEFAULT_MOTO = Path.home() / ".cache/firebreak-tools/venv/bin/moto_server"


def post_json(url, body):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    exe = os.environ.get("MOTO_SERVER", str(DEFAULT_MOTO))
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            return proc, url
        except Exception:
            time.sleep(0.1)
    proc.kill()
    sys.exit("moto server did not start")


def clients(endpoint):
    kw = dict(
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    return (
        boto3.client("stepfunctions", **kw),
        boto3.client("iam", **kw),
        boto3.client("lambda", **kw),
    )


def prepare(endpoint, iam, lam, lambda_results):
    post_json(endpoint + "/moto-api/reset", {})
    post_json(
        endpoint + "/moto-api/config",
        {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}},
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["states.amazonaws.com", "lambda.amazonaws.com"]},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role_arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"
    ]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return event\n")
    lam.create_function(
        FunctionName=FUNCTION_NAME,
        Runtime="python3.12",
        Role=role_arn,
        Handler="index.handler",
        Code={"ZipFile": buf.getvalue()},
    )
    if lambda_results:
        post_json(
            endpoint + "/moto-api/static/lambda-simple/response",
            {
                "results": [json.dumps(r) for r in lambda_results],
                "region": REGION,
                "account_id": ACCOUNT,
            },
        )
    return role_arn


def parse(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def matches(result, aws):
    """Whether moto's result equals the documented AWS one (a null AWS cause is not compared)."""
    if result["status"] != aws.get("status"):
        return False
    if aws.get("status") == "SUCCEEDED":
        return result["output"] == aws.get("output")
    if result["error"] != aws.get("error"):
        return False
    return aws.get("cause") is None or result["cause"] == aws.get("cause")


def run_one(endpoint, path):
    case = json.loads(path.read_text())
    sfn, iam, lam = clients(endpoint)
    role_arn = prepare(endpoint, iam, lam, case.get("lambda_results") or [])
    sm = sfn.create_state_machine(
        name=path.stem, definition=json.dumps(case["definition"]), roleArn=role_arn
    )
    ex = sfn.start_execution(
        stateMachineArn=sm["stateMachineArn"],
        name=EXECUTION_NAME,
        input=json.dumps(case.get("input", {})),
    )
    started = time.time()
    while True:
        d = sfn.describe_execution(executionArn=ex["executionArn"])
        if d["status"] != "RUNNING" or time.time() - started > POLL_CAP_SECONDS:
            break
        time.sleep(0.05)
    return {
        "status": d["status"],
        "output": parse(d.get("output")),
        "error": d.get("error"),
        "cause": d.get("cause"),
        "seconds": round(time.time() - started, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--endpoint", help="use this moto server (it is reset before each file)")
    ap.add_argument("--json", action="store_true", help="print one JSON object keyed by file stem")
    args = ap.parse_args()
    files = args.files or sorted(p for p in HERE.glob("[0-9][0-9]-*.json"))
    proc = None
    endpoint = args.endpoint
    if endpoint is None:
        proc, endpoint = start_moto()
    results = {}
    try:
        for path in files:
            try:
                r = run_one(endpoint, path)
            except Exception as e:  # a definition moto refuses, a bad file
                r = {"status": "HARNESS_ERROR", "output": None, "error": type(e).__name__, "cause": str(e)}
            bug = json.loads(path.read_text()).get("moto_bug")
            if bug:
                r["moto_bug_aws"] = bug.get("aws")
                r["moto_matches_aws"] = matches(r, bug.get("aws") or {})
            results[path.stem] = r
            if not args.json:
                print(f"== {path.name}  ({r.get('seconds', '-')} s)")
                print(f"   status: {r['status']}")
                print(f"   output: {json.dumps(r['output'], sort_keys=True)}")
                if r["error"] is not None or r["cause"] is not None:
                    print(f"   error:  {r['error']}")
                    print(f"   cause:  {r['cause']}")
                if bug:
                    print(f"   moto_bug, AWS documents: {json.dumps(bug.get('aws'), sort_keys=True)}")
                    if r["moto_matches_aws"]:
                        print("   NOTE: moto now gives the documented AWS result; this moto_bug entry looks stale")
                sys.stdout.flush()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
