"""Shared by the fake terraform, az, helm and kubectl in this folder. They run as `python3 -S`
(no site-packages: a quicker start, as every deploy starts dozens of them) and use the standard
library only (_kube.py loads PyYAML from site-packages when it parses YAML).

Every call appends one JSON line to $RAYDEPLOY_FAKE_LOG:
  {"tool": "helm", "argv": [...], "stdin": "...", "env": {...selected...}, "pid": ..., "t0": ..., "t1": ...}
Emulated state lives in $RAYDEPLOY_FAKE_STATE/<tool>.json (created on first use).

Faults and latency, for ordering, failure, timeout and benchmark tests:
  RAYDEPLOY_FAKE_FAULTS   "tool:word word=action,..." where every word must appear in argv and
                          (`stdin:TEXT` matches a call whose stdin contains TEXT, e.g. which
                          objects a `kubectl apply -f -` applies); action is fail (exit 1),
                          hang (wait for a signal; SIGINT exits 130),
                          or failN (fail the first N matching calls, then behave).
  RAYDEPLOY_FAKE_LATENCY  "tool:word word=units,..." sleep units x RAYDEPLOY_FAKE_UNIT_MS
                          (default 100 ms) before answering (benchmarks; tests use gates).
  RAYDEPLOY_FAKE_WAIT     "tool:word word=gate,..." before answering, wait until the gate opens:
                          `file:NAME` when $RAYDEPLOY_FAKE_STATE/NAME exists (the test creates it),
                          `call:TOOL WORD...` when the call log holds a finished call of TOOL with
                          every WORD, `running:TOOL WORD...` when such a call has started (two
                          calls that each wait for the other to be running prove they overlap).
                          At most RAYDEPLOY_FAKE_WAIT_SECONDS (default 120), then it answers anyway;
                          the logged call says `"gates": "open"` or `"timeout"` for the test.
"""

import fcntl
import json
import os
import signal
import sys
import time

ENV_KEYS = ("KUBECONFIG", "DOCKER_HOST", "ARM_SUBSCRIPTION_ID", "TF_IN_AUTOMATION", "TF_INPUT", "AZURE_CONFIG_DIR",
            "DOCKER_BUILDKIT")


def _rules(var):
    out = []
    for item in filter(None, (x.strip() for x in os.environ.get(var, "").split(","))):
        pat, _, action = item.rpartition("=")
        tool, _, words = pat.partition(":")
        out.append((tool, words.split(), action))
    return out


class Fake:
    def __init__(self, tool):
        self.tool = tool
        self.argv = sys.argv[1:]
        self.t0 = time.time()
        self.state_dir = os.environ.get("RAYDEPLOY_FAKE_STATE") or os.path.join(os.getcwd(), ".fake-state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        self.gates = None
        self._started()
        self._faults()
        self._wait()
        self._latency()

    def matches(self, words):
        """Every word is an argument; a word `stdin:TEXT` matches when stdin contains TEXT."""
        return all(w[6:] in self.stdin if w.startswith("stdin:") else w in self.argv for w in words)

    def flag(self, name, default=None):
        """Value of `--name value` or `--name=value`."""
        for i, a in enumerate(self.argv):
            if a == name and i + 1 < len(self.argv):
                return self.argv[i + 1]
            if a.startswith(name + "="):
                return a[len(name) + 1 :]
        return default

    def _faults(self):
        for tool, words, action in _rules("RAYDEPLOY_FAKE_FAULTS"):
            if tool != self.tool or not self.matches(words):
                continue
            if action == "fail":
                self.log(exit=1)
                sys.stderr.write(f"{self.tool}: injected failure\n")
                sys.exit(1)
            if action.startswith("fail") and action[4:].isdigit():
                key = "fault:" + " ".join(words)
                with self.locked() as st:
                    n = st.get(key, 0)
                    st[key] = n + 1
                if n < int(action[4:]):
                    self.log(exit=1)
                    sys.stderr.write(f"{self.tool}: injected failure {n + 1}\n")
                    sys.exit(1)
            if action == "hang":

                def stop(sig, _frame):
                    self.log(exit=f"signal {sig}")
                    sys.exit(128 + sig)

                # The handlers first: a test that sees "hang" in the log may signal at once.
                signal.signal(signal.SIGINT, stop)
                signal.signal(signal.SIGTERM, stop)
                self.log(exit="hang")
                while True:
                    time.sleep(0.05)

    def _started(self):
        """Records that this call started (for `running:` gates)."""
        with open(os.path.join(self.state_dir, "started.jsonl"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps({"tool": self.tool, "argv": self.argv}) + "\n")

    def _gate_open(self, gate):
        kind, _, what = gate.partition(":")
        if kind == "file":
            return os.path.exists(os.path.join(self.state_dir, what))
        if kind in ("call", "running"):
            tool, *words = what.split()
            path = os.environ.get("RAYDEPLOY_FAKE_LOG")
            if kind == "running":
                path = os.path.join(self.state_dir, "started.jsonl")
            try:
                with open(path) as f:
                    lines = f.read().splitlines()
            except (TypeError, FileNotFoundError):
                return False
            for line in lines:
                try:
                    c = json.loads(line)
                except ValueError:  # a line being written
                    continue
                if c["tool"] == tool and all(w in c["argv"] for w in words):
                    return True
            return False
        raise SystemExit(f"{self.tool}: unknown gate {gate!r} in RAYDEPLOY_FAKE_WAIT")

    def _wait(self):
        limit = time.time() + float(os.environ.get("RAYDEPLOY_FAKE_WAIT_SECONDS", "120"))
        for tool, words, gate in _rules("RAYDEPLOY_FAKE_WAIT"):
            if tool != self.tool or not self.matches(words):
                continue
            while not self._gate_open(gate) and time.time() < limit:
                time.sleep(0.02)
            opened = self._gate_open(gate)
            self.gates = "open" if opened and self.gates != "timeout" else "timeout"

    def _latency(self):
        unit = float(os.environ.get("RAYDEPLOY_FAKE_UNIT_MS", "100")) / 1000.0
        for tool, words, units in _rules("RAYDEPLOY_FAKE_LATENCY"):
            if tool == self.tool and self.matches(words):
                time.sleep(float(units) * unit)
                break

    def log(self, **extra):
        path = os.environ.get("RAYDEPLOY_FAKE_LOG")
        if not path:
            return
        rec = {
            "tool": self.tool,
            "argv": self.argv,
            "stdin": self.stdin,
            "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "t0": self.t0,
            "t1": time.time(),
        }
        if self.gates is not None:
            rec["gates"] = self.gates
        rec.update(extra)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps(rec) + "\n")

    class _Locked:
        def __init__(self, path):
            self.path = path

        def __enter__(self):
            self.lock = open(self.path + ".lock", "w")
            fcntl.flock(self.lock, fcntl.LOCK_EX)
            try:
                with open(self.path) as f:
                    self.data = json.load(f)
            except FileNotFoundError:
                self.data = {}
            return self.data

        def __exit__(self, *exc):
            if exc[0] is None:
                tmp = self.path + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(self.data, f, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            self.lock.close()

    def locked(self, name=None):
        """`with fake.locked() as state:` read-modify-write of this tool's state file."""
        return Fake._Locked(os.path.join(self.state_dir, (name or self.tool) + ".json"))

    def read(self, name=None):
        try:
            with open(os.path.join(self.state_dir, (name or self.tool) + ".json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def done(self, stdout="", code=0, stderr=""):
        """Logs the call, prints, exits."""
        self.log(exit=code)
        if stdout:
            sys.stdout.write(stdout if stdout.endswith("\n") else stdout + "\n")
        if stderr:
            sys.stderr.write(stderr if stderr.endswith("\n") else stderr + "\n")
        sys.exit(code)
