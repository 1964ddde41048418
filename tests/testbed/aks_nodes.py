#!/usr/bin/env python3
"""AKS's nodes for the Kubernetes test bed, from the Terraform raydeploy rendered.

The terraform stand-in (tests/fakes/terraform, with $RAYDEPLOY_FAKE_TF_KUBECONFIG set) calls
`reconcile` when `apply` runs and `remove` when `destroy` runs: every node pool of the rendered
configuration (the cluster's `default_node_pool` and each `azurerm_kubernetes_cluster_node_pool`)
becomes kwok Nodes on the bed, shaped the way AKS shapes them. Written from AKS's documentation
and ../shared/azure, independently of raydeploy's own model (src/model/azure.rs):

- names `aks-<pool>-<8 digits>-vmss<6 base-36 digits>` (the digits: a hash of the node resource
  group and the pool, stable across applies);
- AKS's labels (`agentpool`, `kubernetes.azure.com/agentpool`, `kubernetes.azure.com/mode`
  system/user, `node.kubernetes.io/instance-type`, `kubernetes.azure.com/cluster` (the node
  resource group), region and zone, `kubernetes.azure.com/scalesetpriority: spot` on Spot pools,
  `kubernetes.azure.com/accelerator: nvidia` on GPU sizes) plus the pool's `node_labels`;
- taints: the pool's `node_taints`, `CriticalAddonsOnly=true:NoSchedule` on a default pool with
  `only_critical_addons_enabled`, `kubernetes.azure.com/scalesetpriority=spot:NoSchedule` on Spot;
- capacity from the VM size table (../shared/azure/azure-vm-sizes.csv: vCPUs, GiB), and
  allocatable per AKS's reservations (../shared/azure/aks-allocatable.md): CPU minus kube-reserved
  (60/100/140/180/260/420/740m for 1/2/4/8/16/32/64 cores, other counts by the documented fit),
  memory minus min(20 MiB x maxPods + 50 MiB, 25 %) and the 100 MiB eviction threshold (AKS 1.29
  and later; before: 25/20/10/6/2 % tiers and 750 MiB); maxPods from the pool's `max_pods`, else
  the network's default (Azure CNI Overlay 250, pod subnet and kubenet 110, node subnet 30);
- GPU sizes carry the annotation `raydeploy.test/gpus` (their GPU count) but no `nvidia.com/gpu`:
  the test bed's harness adds it to a node's status while a device plugin pod runs there, as a
  kubelet does (tests/support/testbed.rs, `TestBed::emulate_device_plugins`).

A pool's node count is `node_count` (what AKS creates), else `min_count`; an autoscaled pool that
already has nodes keeps their number within [min_count, max_count] (its node_count is ignored, as
the rendered `lifecycle { ignore_changes = [node_count] }` says). A node whose shape no longer
matches (another VM size, labels or taints) is replaced by a new one, as AKS rolls a pool.
`reconcile` waits until every node of the cluster is Ready and without the not-ready taint.

The HCL reader below covers what raydeploy's templates emit (blocks, attributes, strings,
numbers, booleans, lists, objects, references and function calls without operators).

As a program: `aks_nodes.py manifests TF_DIR [kubernetes_version]` prints the Node manifests.
"""
import csv
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
AZURE_DATA = os.environ.get("RAYDEPLOY_AZURE_DATA") or os.path.join(HERE, "..", "..", "..", "shared", "azure")
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPUS_ANNOTATION = "raydeploy.test/gpus"
CLUSTER_LABEL = "kubernetes.azure.com/cluster"
POOL_LABEL = "kubernetes.azure.com/agentpool"
SPOT_KEY = "kubernetes.azure.com/scalesetpriority"


# ---------------------------------------------------------------------------------------------
# HCL (the subset raydeploy's templates emit)

class HclError(Exception):
    pass


class Ref:
    """A reference (`azurerm_resource_group.this.name`, `var.x`) or an interpolated string."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return "Ref(%r)" % self.text


class Call:
    def __init__(self, name, args):
        self.name = name
        self.args = args


TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<punct>[{}\[\]()=,.:*-])
""", re.X | re.S)


def tokens(text, where):
    out, pos, line = [], 0, 1
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise HclError("%s:%d: cannot read %r" % (where, line, text[pos:pos + 20]))
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "nl":
            out.append(("nl", val, line))
        elif kind == "comment":
            if "\n" in val:
                out.append(("nl", "\n", line))
        elif kind != "ws":
            out.append((kind, val, line))
        line += val.count("\n")
        pos = m.end()
    out.append(("eof", "", line))
    return out


def unquote(lit, where, line):
    body = lit[1:-1]
    if re.search(r"(?<!\$)\$\{|(?<!%)%\{", body):
        return Ref(body)
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            n = body[i + 1]
            if n == "u":
                out.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
                continue
            if n == "U":
                out.append(chr(int(body[i + 2:i + 10], 16)))
                i += 10
                continue
            simple = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
            if n not in simple:
                raise HclError("%s:%d: unknown escape \\%s" % (where, line, n))
            out.append(simple[n])
            i += 2
            continue
        if body.startswith("$${", i) or body.startswith("%%{", i):
            out.append(c + "{")
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


class Parser:
    def __init__(self, text, where):
        self.t = tokens(text, where)
        self.i = 0
        self.where = where

    def peek(self, skip_nl=True):
        j = self.i
        while skip_nl and self.t[j][0] == "nl":
            j += 1
        return self.t[j]

    def next(self, skip_nl=True):
        while skip_nl and self.t[self.i][0] == "nl":
            self.i += 1
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, val):
        tok = self.next()
        if tok[1] != val:
            raise HclError("%s:%d: expected %r, found %r" % (self.where, tok[2], val, tok[1]))
        return tok

    def body(self, end):
        """Attributes (name -> value) and blocks (type -> [block]) until `end` ('}' or 'eof')."""
        attrs, blocks = {}, {}
        while True:
            tok = self.next()
            if (end == "eof" and tok[0] == "eof") or (tok[0] == "punct" and tok[1] == end):
                return {"attrs": attrs, "blocks": blocks}
            if tok[0] == "eof" or tok[0] != "ident":
                raise HclError("%s:%d: expected an attribute or a block, found %r" % (self.where, tok[2], tok[1]))
            if self.peek()[1] == "=":
                self.next()
                attrs[tok[1]] = self.expr()
                continue
            labels = []
            while self.peek()[0] == "str":
                lit = self.next()
                labels.append(unquote(lit[1], self.where, lit[2]))
            self.expect("{")
            inner = self.body("}")
            inner["labels"] = labels
            blocks.setdefault(tok[1], []).append(inner)

    def expr(self):
        tok = self.next()
        kind, val, line = tok
        if kind == "str":
            return unquote(val, self.where, line)
        if kind == "num":
            return float(val) if re.search(r"[.eE]", val) else int(val)
        if val == "-":
            n = self.next()
            if n[0] != "num":
                raise HclError("%s:%d: only numbers can be negated here" % (self.where, line))
            return -(float(n[1]) if "." in n[1] else int(n[1]))
        if val == "[":
            items = []
            while self.peek()[1] != "]":
                items.append(self.expr())
                if self.peek()[1] == ",":
                    self.next()
            self.expect("]")
            return items
        if val == "{":
            obj = {}
            while self.peek()[1] != "}":
                k = self.next()
                key = unquote(k[1], self.where, k[2]) if k[0] == "str" else k[1]
                sep = self.next()
                if sep[1] not in ("=", ":"):
                    raise HclError("%s:%d: expected = in an object, found %r" % (self.where, sep[2], sep[1]))
                obj[key] = self.expr()
                if self.peek()[1] == ",":
                    self.next()
            self.expect("}")
            return obj
        if kind == "ident":
            if val in ("true", "false"):
                return val == "true"
            if val == "null":
                return None
            if self.peek(skip_nl=False)[1] == "(":
                self.next()
                args = []
                while self.peek()[1] != ")":
                    args.append(self.expr())
                    if self.peek()[1] == ",":
                        self.next()
                self.expect(")")
                return Call(val, args)
            text = val
            while self.peek(skip_nl=False)[1] in (".", "["):
                p = self.next(skip_nl=False)
                if p[1] == ".":
                    part = self.next(skip_nl=False)
                    text += "." + part[1]
                else:
                    idx = self.expr()
                    self.expect("]")
                    text += "[%s]" % (idx.text if isinstance(idx, Ref) else json.dumps(idx))
            return Ref(text)
        raise HclError("%s:%d: unsupported expression starting with %r" % (self.where, line, val))


def parse_dir(tf_dir):
    """Every top-level block of the *.tf files in `tf_dir`: {type: [block]}."""
    blocks = {}
    for name in sorted(os.listdir(tf_dir)):
        if not name.endswith(".tf"):
            continue
        path = os.path.join(tf_dir, name)
        with open(path) as fh:
            body = Parser(fh.read(), path).body("eof")
        if body["attrs"]:
            raise HclError("%s: attributes outside a block: %s" % (path, sorted(body["attrs"])))
        for kind, bs in body["blocks"].items():
            blocks.setdefault(kind, []).extend(bs)
    return blocks


class Config:
    """The rendered configuration, with references to resource attributes, variables and locals
    resolved where they lead to literal values."""

    def __init__(self, tf_dir, variables=None):
        self.blocks = parse_dir(tf_dir)
        self.variables = dict(variables or {})
        for v in self.blocks.get("variable", []):
            name = v["labels"][0]
            if name not in self.variables:
                self.variables[name] = v["attrs"].get("default")
        self.locals = {}
        for l in self.blocks.get("locals", []):
            self.locals.update(l["attrs"])

    def resources(self, rtype):
        return [r for r in self.blocks.get("resource", []) if r["labels"][0] == rtype]

    def value(self, v):
        if not isinstance(v, Ref):
            return v
        parts = v.text.split(".")
        if parts[0] == "var" and len(parts) == 2:
            return self.value(self.variables.get(parts[1]))
        if parts[0] == "local" and len(parts) == 2:
            return self.value(self.locals.get(parts[1]))
        if len(parts) == 3:
            for r in self.resources(parts[0]):
                if r["labels"][1] == parts[1] and parts[2] in r["attrs"]:
                    return self.value(r["attrs"][parts[2]])
        return None


# ---------------------------------------------------------------------------------------------
# Azure's numbers

def vm_sizes():
    """name (lower case) -> (name, vcpus, memory GiB, gpus), from ../shared/azure."""
    out = {}
    with open(os.path.join(AZURE_DATA, "azure-vm-sizes.csv")) as fh:
        for row in csv.DictReader(fh):
            out[row["name"].lower()] = (row["name"], int(row["vcpus"]), float(row["memory_gib"]), int(row["gpus"] or 0))
    return out


KUBE_RESERVED_CPU_M = {1: 60, 2: 100, 4: 140, 8: 180, 16: 260, 32: 420, 64: 740}


def kube_reserved_cpu_m(cores):
    """AKS's table; other core counts by the fit that matches every row of it."""
    if cores in KUBE_RESERVED_CPU_M:
        return KUBE_RESERVED_CPU_M[cores]
    if cores <= 8:
        return int(round(60 + 40 * math.log2(cores)))
    return 100 + 10 * cores


def kube_reserved_memory_ki(memory_ki, max_pods, minor):
    """kube-reserved memory and the hard eviction threshold, in KiB."""
    mib = 1024
    if minor is None or minor >= (1, 29):
        return min((20 * max_pods + 50) * mib, memory_ki // 4), 100 * mib
    gib = 1024 * mib
    reserved, left = 0.0, memory_ki
    for size, rate in ((4 * gib, 0.25), (4 * gib, 0.20), (8 * gib, 0.10), (112 * gib, 0.06), (None, 0.02)):
        part = left if size is None else min(left, size)
        reserved += part * rate
        left -= part
        if left <= 0:
            break
    return int(reserved), 750 * mib


def default_max_pods(plugin, mode, pod_subnet):
    if plugin == "azure":
        if mode == "overlay":
            return 250
        return 110 if pod_subnet else 30
    return 110


def minor_of(version):
    m = re.match(r"v?(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def shape(vm_size, max_pods, minor):
    """(capacity, allocatable, gpus) of a node of `vm_size`."""
    sizes = vm_sizes()
    found = sizes.get(vm_size.lower())
    if not found:
        raise KeyError("VM size %s is not in %s/azure-vm-sizes.csv" % (vm_size, AZURE_DATA))
    _, vcpus, gib, gpus = found
    memory_ki = int(gib * 1024 * 1024)
    reserved, eviction = kube_reserved_memory_ki(memory_ki, max_pods, minor)
    capacity = {"cpu": str(vcpus), "memory": "%dKi" % memory_ki, "pods": str(max_pods),
                "ephemeral-storage": "129886128Ki"}
    allocatable = {"cpu": "%dm" % (vcpus * 1000 - kube_reserved_cpu_m(vcpus)),
                   "memory": "%dKi" % (memory_ki - reserved - eviction), "pods": str(max_pods),
                   "ephemeral-storage": "119703055367"}
    return capacity, allocatable, gpus


# ---------------------------------------------------------------------------------------------
# Pools and nodes

def taint(text):
    """`key=value:Effect` (or `key:Effect`)."""
    kv, _, effect = text.rpartition(":")
    key, _, value = kv.partition("=")
    t = {"key": key, "effect": effect}
    if value:
        t["value"] = value
    return t


def pools(cfg):
    """The cluster's node pools: one dict each, and the cluster facts the nodes carry."""
    clusters = cfg.resources("azurerm_kubernetes_cluster")
    if len(clusters) != 1:
        raise HclError("expected one azurerm_kubernetes_cluster, found %d" % len(clusters))
    c = clusters[0]
    val = lambda b, k: cfg.value(b["attrs"].get(k))
    name = val(c, "name")
    rg = val(c, "resource_group_name")
    location = val(c, "location")
    if not (name and rg and location):
        raise HclError("the cluster's name, resource group or location did not resolve to a value")
    net = (c["blocks"].get("network_profile") or [{"attrs": {}}])[0]
    plugin = cfg.value(net["attrs"].get("network_plugin")) or "kubenet"
    mode = cfg.value(net["attrs"].get("network_plugin_mode"))
    cluster_version = val(c, "kubernetes_version")
    facts = {"name": name, "node_resource_group": val(c, "node_resource_group") or "MC_%s_%s_%s" % (rg, name, location),
             "location": location}

    def pool(b, system):
        taints = [taint(t) for t in (val(b, "node_taints") or [])]
        if system and val(b, "only_critical_addons_enabled"):
            taints.append({"key": "CriticalAddonsOnly", "value": "true", "effect": "NoSchedule"})
        spot = (val(b, "priority") or "Regular") == "Spot"
        if spot:
            taints.append({"key": SPOT_KEY, "value": "spot", "effect": "NoSchedule"})
        unique = []
        for t in taints:
            if not any(u["key"] == t["key"] and u["effect"] == t["effect"] for u in unique):
                unique.append(t)
        pod_subnet = val(b, "pod_subnet_id") is not None
        max_pods = val(b, "max_pods") or default_max_pods(plugin, mode, pod_subnet)
        autoscaled = bool(val(b, "auto_scaling_enabled"))
        count = val(b, "node_count")
        if count is None:
            count = val(b, "min_count") or 0
        return {
            "name": val(b, "name"),
            "mode": "system" if system or (val(b, "mode") or "User") == "System" else "user",
            "vm_size": val(b, "vm_size"),
            "count": int(count),
            "autoscaled": autoscaled,
            "min": val(b, "min_count"),
            "max": val(b, "max_count"),
            "max_pods": int(max_pods),
            "version": val(b, "orchestrator_version") or cluster_version,
            "zones": [str(z) for z in (val(b, "zones") or [])],
            "labels": {k: str(cfg.value(v)) for k, v in (val(b, "node_labels") or {}).items()},
            "taints": unique,
            "spot": spot,
        }

    out = [pool(p, True) for p in c["blocks"].get("default_node_pool", [])]
    out += [pool(p, False) for p in cfg.resources("azurerm_kubernetes_cluster_node_pool")]
    return facts, out


def node_name(facts, pool, index):
    digits = int(hashlib.sha256((facts["node_resource_group"] + "/" + pool).encode()).hexdigest(), 16) % 10 ** 8
    b36, n = "", index
    for _ in range(6):
        b36 = "0123456789abcdefghijklmnopqrstuvwxyz"[n % 36] + b36
        n //= 36
    return "aks-%s-%08d-vmss%s" % (pool, digits, b36)


def node(facts, p, index, minor):
    capacity, allocatable, gpus = shape(p["vm_size"], p["max_pods"], minor)
    name = node_name(facts, p["name"], index)
    zone = "%s-%s" % (facts["location"], p["zones"][index % len(p["zones"])]) if p["zones"] else "0"
    labels = {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
        "kubernetes.io/role": "agent", "kubernetes.azure.com/role": "agent",
        "agentpool": p["name"], POOL_LABEL: p["name"], "kubernetes.azure.com/mode": p["mode"],
        CLUSTER_LABEL: facts["node_resource_group"],
        "node.kubernetes.io/instance-type": p["vm_size"], "beta.kubernetes.io/instance-type": p["vm_size"],
        "topology.kubernetes.io/region": facts["location"], "topology.kubernetes.io/zone": zone,
        "kubernetes.azure.com/os-sku": "Ubuntu",
    }
    if p["spot"]:
        labels[SPOT_KEY] = "spot"
    annotations = {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"}
    if gpus:
        labels["kubernetes.azure.com/accelerator"] = "nvidia"
        annotations[GPUS_ANNOTATION] = str(gpus)
    labels.update(p["labels"])
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"taints": p["taints"], "providerID": "azure:///subscriptions/bed/resourceGroups/%s/providers/"
                 "Microsoft.Compute/virtualMachineScaleSets/aks-%s-vmss/virtualMachines/%d"
                 % (facts["node_resource_group"], p["name"], index)},
        "status": {"capacity": capacity, "allocatable": allocatable},
    }


def manifests(tf_dir, variables=None, live_counts=None):
    """The cluster's node resource group and the Node manifests the configuration asks for.
    `live_counts`: pool -> nodes it has now (autoscaled pools keep that number, clamped)."""
    cfg = Config(tf_dir, variables)
    facts, ps = pools(cfg)
    out = []
    for p in ps:
        count = p["count"]
        if p["autoscaled"] and live_counts and p["name"] in live_counts:
            count = max(int(p["min"] or 0), min(live_counts[p["name"]], int(p["max"] or live_counts[p["name"]])))
        minor = minor_of(p["version"]) or minor_of(cfg.variables.get("kubernetes_version"))
        out += [node(facts, p, i, minor) for i in range(count)]
    return facts, out


# ---------------------------------------------------------------------------------------------
# On the bed

def kubectl(args, stdin=None):
    exe = os.environ.get("RAYDEPLOY_FAKE_TF_KUBECTL", "kubectl")
    cmd = [exe, "--kubeconfig", os.environ["RAYDEPLOY_FAKE_TF_KUBECONFIG"]] + args
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("kubectl %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def live_nodes(node_rg):
    out = kubectl(["get", "nodes", "-l", "%s=%s" % (CLUSTER_LABEL, node_rg), "-o", "json"])
    return json.loads(out)["items"]


def same_shape(live, want):
    lm, wm = live["metadata"], want["metadata"]
    strip = lambda ts: sorted((t["key"], t.get("value", ""), t["effect"]) for t in ts or []
                              if not t["key"].startswith("node.kubernetes.io/"))
    return (all(lm.get("labels", {}).get(k) == v for k, v in wm["labels"].items())
            and set(lm.get("labels", {})) <= set(wm["labels"])
            and strip(live["spec"].get("taints")) == strip(want["spec"]["taints"])
            and all(live["status"].get("allocatable", {}).get(k) == v for k, v in want["status"]["allocatable"].items()))


def reconcile(tf_dir, variables=None, log=sys.stderr, timeout=180):
    """Creates, replaces and deletes the cluster's kwok Nodes to match the configuration, then
    waits until each is Ready and schedulable."""
    cfg_facts, _ = manifests(tf_dir, variables)
    live = live_nodes(cfg_facts["node_resource_group"])
    counts = {}
    for n in live:
        pool = n["metadata"]["labels"].get(POOL_LABEL)
        counts[pool] = counts.get(pool, 0) + 1
    facts, want = manifests(tf_dir, variables, counts)
    by_name = {n["metadata"]["name"]: n for n in live}
    wanted = {n["metadata"]["name"] for n in want}
    delete = [name for name in by_name if name not in wanted]
    create = []
    for n in want:
        name = n["metadata"]["name"]
        if name in by_name and not same_shape(by_name[name], n):
            delete.append(name)
            create.append(n)
        elif name not in by_name:
            create.append(n)
    if delete:
        kubectl(["delete", "node", "--wait=true"] + sorted(delete))
        log.write("nodes deleted: %s\n" % " ".join(sorted(delete)))
    if create:
        kubectl(["create", "-f", "-"], json.dumps({"apiVersion": "v1", "kind": "List", "items": create}))
        log.write("nodes created: %s\n" % " ".join(n["metadata"]["name"] for n in create))
    deadline = time.time() + timeout
    while True:
        pending = []
        for n in live_nodes(facts["node_resource_group"]):
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])
            tainted = any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints") or [])
            if not ready or tainted:
                pending.append(n["metadata"]["name"])
        if not pending:
            return [n["metadata"]["name"] for n in want]
        if time.time() > deadline:
            raise RuntimeError("nodes not Ready after %ds: %s" % (timeout, " ".join(pending)))
        time.sleep(0.2)


def remove(tf_dir, variables=None, log=sys.stderr):
    """Deletes every node of the cluster (by its node resource group label)."""
    facts, _ = manifests(tf_dir, variables)
    names = [n["metadata"]["name"] for n in live_nodes(facts["node_resource_group"])]
    if names:
        kubectl(["delete", "node", "--wait=true"] + sorted(names))
        log.write("nodes deleted: %s\n" % " ".join(sorted(names)))
    return names


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "manifests":
        sys.exit("usage: aks_nodes.py manifests TF_DIR [kubernetes_version]")
    variables = {"kubernetes_version": sys.argv[3]} if len(sys.argv) > 3 else {}
    facts, nodes = manifests(sys.argv[2], variables)
    print(json.dumps({"node_resource_group": facts["node_resource_group"], "nodes": nodes}, indent=1))
