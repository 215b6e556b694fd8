#!/usr/bin/env python3
"""Init time of Lambda bootstraps, on a minimal Lambda Runtime API emulator.

    scripts/lambda-init-time.py [--runs N] NAME=PATH/TO/bootstrap ...

For each function it starts the bootstrap N times (default 20), one at a
time, with the environment a provided.al2023 function has, and measures the
time from starting the process to its first
`GET /2018-06-01/runtime/invocation/next`: the moment the runtime is ready
for its first event. The emulator never answers that request: it records
the time and kills the process. It prints min, median and p95 in ms
(exit 1 if a bootstrap reports an init error, exits, or never asks).

What the figure includes: exec and dynamic loading of the binary, the
tokio runtime, the tracing subscriber, loading the AWS SDK configuration
from the environment, the function's own set-up (the clients; notify reads
FIREBREAK_STATE_MACHINES and the triggers) and the one AWS call both make
at init: STS GetCallerIdentity (the account id). That call goes to this
emulator (AWS_ENDPOINT_URL points at it; plain HTTP on loopback, a canned
answer), so the figure holds a loopback round trip where a deployed
function pays DNS, a TLS handshake and a network round trip to STS (tens
of ms): the "sts" column is when the call arrived, the time before it is
the part that does not depend on the network.

What it does not include: Lambda's own sandbox (Firecracker microVM) start,
the download and unpacking of the zip, and the extensions' init; nor a cold
page cache (the binary is read from this machine's cache after the first
run) or the CPU share of a 512 MB function (Lambda's is proportional to
memory, one vCPU at 1,769 MB; here the process may use a whole core). It is the function's part of a cold start,
measured on this machine, not Lambda's Init Duration.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

NEXT = "/2018-06-01/runtime/invocation/next"
INIT_ERROR = "/2018-06-01/runtime/init/error"
ACCOUNT = "123456789012"
STS_ANSWER = f"""<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::{ACCOUNT}:assumed-role/firebreak-lambda/init-time</Arn>
    <UserId>AROAEXAMPLEROLEID:init-time</UserId>
    <Account>{ACCOUNT}</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>
""".encode()


class Run:
    """What one start of a bootstrap did, as the emulator saw it."""

    def __init__(self):
        self.next_at = None
        self.sts_at = None
        self.init_error = None
        self.unexpected = []
        self.done = threading.Event()  # first `next` or an init error
        self.finished = threading.Event()  # the process is gone


class Emulator(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    run = Run()

    def log_message(self, *args):
        pass

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status, body=b"", content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        now = time.perf_counter()
        run = Emulator.run
        if self.path == NEXT:
            if run.next_at is None:
                run.next_at = now
            run.done.set()
            # Hold the long poll (a real Runtime API does, until an event
            # comes) until the measurement has killed the process.
            run.finished.wait(10)
            self.close_connection = True
            return
        run.unexpected.append(f"GET {self.path}")
        self._answer(404, b'{"errorMessage": "not emulated"}')

    def do_POST(self):
        now = time.perf_counter()
        run = Emulator.run
        body = self._body()
        if self.path == INIT_ERROR:
            run.init_error = body.decode(errors="replace")
            run.done.set()
            self._answer(202, b'{"status": "OK"}')
            return
        if self.path == "/":
            action = parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
            if action == "GetCallerIdentity":
                if run.sts_at is None:
                    run.sts_at = now
                self._answer(200, STS_ANSWER, "text/xml")
                return
            run.unexpected.append(f"AWS {action or body[:80]!r}")
        else:
            run.unexpected.append(f"POST {self.path}")
        self._answer(400, b"<ErrorResponse><Error><Code>NotEmulated</Code></Error></ErrorResponse>", "text/xml")


def lambda_env(name, port, bootstrap):
    """The environment Lambda gives a provided.al2023 function, pointed at
    the emulator; nothing from this shell leaks in."""
    endpoint = f"127.0.0.1:{port}"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/opt/bin",
        "LD_LIBRARY_PATH": "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": os.path.dirname(bootstrap),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": "bootstrap",
        "AWS_LAMBDA_RUNTIME_API": endpoint,
        "AWS_LAMBDA_FUNCTION_NAME": f"firebreak-{name}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/firebreak-{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/06/[$LATEST]00000000000000000000000000000000",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEINITTIME0",
        "AWS_SECRET_ACCESS_KEY": "dummy-secret-access-key-for-init-time0000",
        "AWS_SESSION_TOKEN": "dummy-session-token",
        # Not Lambda's: the init's one AWS call (STS) comes here too.
        "AWS_ENDPOINT_URL": f"http://{endpoint}",
    }
    if name == "notify":
        env["FIREBREAK_STATE_MACHINES"] = (
            '{"ec2-compromise": "arn:aws:states:us-east-1:%s:stateMachine:firebreak-ec2-compromise"}'
            % ACCOUNT
        )
    return env


def measure_once(name, bootstrap, port, log):
    run = Run()
    Emulator.run = run
    env = lambda_env(name, port, bootstrap)
    log.seek(0)
    log.truncate()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [bootstrap], env=env, cwd=os.path.dirname(bootstrap),
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not run.done.wait(0.005):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
        run.finished.set()
    if run.next_at is None or run.init_error is not None or run.unexpected:
        log.flush()
        log.seek(0)
        output = log.read().decode(errors="replace")[-4000:]
        why = (
            f"reported an init error: {run.init_error}" if run.init_error
            else f"made calls the emulator does not serve: {run.unexpected}" if run.unexpected
            else f"exited with {proc.returncode} before asking for an event" if proc.returncode not in (None, -9)
            else "did not ask for an event within 10 s"
        )
        sys.exit(f"lambda-init-time: {name} {why}\n--- its output ---\n{output}")
    sts = (run.sts_at - start) * 1000 if run.sts_at is not None else None
    return (run.next_at - start) * 1000, sts


def p95(values):
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    rank = max(1, -(-95 * len(ordered) // 100))
    return ordered[rank - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--target-ms", type=float, default=50.0)
    parser.add_argument("functions", nargs="+", metavar="NAME=BOOTSTRAP")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Emulator)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    print(f"init: start of bootstrap to its first GET {NEXT}, {args.runs} runs each, ms "
          f"({os.cpu_count()} cores; STS answered on loopback)")
    missed = []
    with tempfile.TemporaryFile() as log:
        for spec in args.functions:
            name, sep, bootstrap = spec.partition("=")
            if not sep or not os.access(bootstrap, os.X_OK):
                sys.exit(f"lambda-init-time: {spec!r} is not NAME=EXECUTABLE")
            bootstrap = os.path.abspath(bootstrap)
            times, sts = [], []
            for _ in range(args.runs):
                t, s = measure_once(name, bootstrap, port, log)
                times.append(t)
                if s is not None:
                    sts.append(s)
            med = statistics.median(times)
            line = (f"{name:<12} init min {min(times):.1f}  median {med:.1f}  "
                    f"p95 {p95(times):.1f}  max {max(times):.1f}  (first run {times[0]:.1f})")
            if sts:
                line += f"; STS call at median {statistics.median(sts):.1f}"
            print(line, flush=True)
            if med >= args.target_ms:
                missed.append(f"{name} (median {med:.1f} ms)")
    server.shutdown()
    if missed:
        print(f"lambda-init-time: over the {args.target_ms:g} ms target: {', '.join(missed)}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
