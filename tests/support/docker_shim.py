#!/usr/bin/env -S python3 -S
"""The real docker CLI behind the fakes' call log: records each call like the fakes do (and
obeys RAYDEPLOY_FAKE_FAULTS / RAYDEPLOY_FAKE_LATENCY for tool `docker`), then runs the docker
binary named by $RAYDEPLOY_REAL_DOCKER with the same arguments, stdin and environment, and
exits with its code. SIGINT and SIGTERM are passed on to it.
"""
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _fake import Fake  # noqa: E402

f = Fake("docker")
real = os.environ["RAYDEPLOY_REAL_DOCKER"]
p = subprocess.Popen([real] + f.argv, stdin=subprocess.PIPE if f.stdin else subprocess.DEVNULL)


def forward(sig, _frame):
    p.send_signal(sig)


signal.signal(signal.SIGINT, forward)
signal.signal(signal.SIGTERM, forward)
if f.stdin:
    p.communicate(f.stdin.encode())
code = p.wait()
f.log(exit=code)
sys.exit(code)
