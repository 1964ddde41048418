"""Emulated Kubernetes cluster shared by the fake helm and kubectl, for the tests that need what
the Kubernetes test bed (tests/support/testbed.rs) cannot give on demand: RayJobs that finish,
a port-forward that drops, a kubectl that echoes Secrets, GPU nodes whose GPUs appear only with
NVIDIA's device plugin (whose chart the bed cannot fetch), and the whole of an aks deploy over the
fake terraform and az (the fault matrix, the lock, ordering against Terraform).

State ($RAYDEPLOY_FAKE_STATE/kube.json):
  objects   "Kind|namespace|name" -> object (cluster-scoped kinds have namespace "")
  releases  "namespace/name" -> {name, namespace, chart, version, values, revision, status, objects}
  counters  anything the fakes count (port-forwards, ...)

Behaviour:
  - kubeconfig context: none needed; namespaced objects need their namespace to exist.
  - RayCluster/RayJob need their CRD (rayclusters.ray.io / rayjobs.ray.io) to be applied.
  - Installing the ray-cluster chart creates the RayCluster, its head service and one pod per
    replica of every enabled group (label ray.io/cluster, ray.io/group, ray.io/node-type).
    Every `kubectl get` advances time: once the kuberay-operator release is deployed, the
    RayCluster becomes ready after two reads and its pods Ready. With
    $RAYDEPLOY_FAKE_READY_UNITS=N (benchmarks) it becomes ready N units of
    $RAYDEPLOY_FAKE_UNIT_MS after the ray-cluster release was installed or upgraded instead (an
    upgrade rolls its pods: not ready meanwhile), however often it is read.
  - Nodes exist only when a test puts them in the state. A node with
    status.capacity["nvidia.com/gpu"] advertises them (status.allocatable) only while a DaemonSet
    of NVIDIA's device plugin image schedules there: it tolerates the node's NoSchedule and
    NoExecute taints and its required node affinity matches the node's labels (or always, with the
    annotation fake.raydeploy.io/managed-plugin: a managed add-on). Installing the
    nvidia-device-plugin chart creates that DaemonSet from the values (tolerations, affinity and
    image; the chart's defaults where unset) and refuses the `default` namespace, as the chart does.
  - A pod that requests nvidia.com/gpu stays Pending (Unschedulable: Insufficient nvidia.com/gpu,
    with a FailedScheduling event) while no node advertises a GPU, and is scheduled once one does.
  - A RayJob goes Initializing -> Running (its submitter Job exists) -> Complete/SUCCEEDED, or
    Failed/FAILED when its entrypoint contains "fail", one step per read; one whose entrypoint
    contains "forever" stays Running. A RayJob with a rayClusterSpec gets a RayCluster of its own
    (named <rayjob>-<suffix>, owned by the RayJob, one pod per replica of each group, with the
    template's image) once the kuberay-operator is installed; deleting the RayJob deletes it.
"""

import base64
import datetime
import json
import os
import random
import string
import time

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "PersistentVolume", "Node"}
GPU = "nvidia.com/gpu"
INSUFFICIENT_GPU = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
# The nvidia-device-plugin chart's (v0.20.0) defaults for what the fake reads.
DEVICE_PLUGIN_DEFAULTS = {
    "image": {"repository": "nvcr.io/nvidia/k8s-device-plugin", "tag": "v0.20.0"},
    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In", "values": ["true"]}]},
        {"matchExpressions": [{"key": "feature.node.kubernetes.io/cpu-model.vendor_id", "operator": "In", "values": ["NVIDIA"]}]},
        {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]},
    ]}}},
}

RESOURCES = {
    "Namespace": ("namespaces", "", ["namespace", "namespaces", "ns"]),
    "CustomResourceDefinition": (
        "customresourcedefinitions",
        "apiextensions.k8s.io",
        ["crd", "crds", "customresourcedefinition", "customresourcedefinitions"],
    ),
    "RayCluster": ("rayclusters", "ray.io", ["raycluster", "rayclusters"]),
    "RayJob": ("rayjobs", "ray.io", ["rayjob", "rayjobs"]),
    "Pod": ("pods", "", ["pod", "pods", "po"]),
    "Secret": ("secrets", "", ["secret", "secrets"]),
    "Service": ("services", "", ["service", "services", "svc"]),
    "PersistentVolume": ("persistentvolumes", "", ["persistentvolume", "persistentvolumes", "pv"]),
    "PersistentVolumeClaim": ("persistentvolumeclaims", "", ["persistentvolumeclaim", "persistentvolumeclaims", "pvc"]),
    "Job": ("jobs", "batch", ["job", "jobs"]),
    "Event": ("events", "", ["event", "events", "ev"]),
    "Deployment": ("deployments", "apps", ["deployment", "deployments", "deploy"]),
    "DaemonSet": ("daemonsets", "apps", ["daemonset", "daemonsets", "ds"]),
    "Node": ("nodes", "", ["node", "nodes", "no"]),
}

CRD_OF = {"RayCluster": "rayclusters.ray.io", "RayJob": "rayjobs.ray.io"}


class KubeError(Exception):
    pass


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def suffix():
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def kind_of(word):
    w = word.lower().split(".")[0]
    for kind, (_, _, names) in RESOURCES.items():
        if w in names:
            return kind
    raise KubeError(f'error: the server doesn\'t have a resource type "{word}"')


def plural(kind):
    p, g, _ = RESOURCES[kind]
    return f"{p}.{g}" if g else p


def key(kind, ns, name):
    return f"{kind}|{'' if kind in CLUSTER_SCOPED else ns}|{name}"


def labels(obj):
    return obj.setdefault("metadata", {}).setdefault("labels", {}) or {}


def matches(obj, selector):
    if not selector:
        return True
    have = (obj.get("metadata") or {}).get("labels") or {}
    for part in selector.split(","):
        k, _, v = part.partition("=")
        if have.get(k) != v:
            return False
    return True


def tolerates(tolerations, taint):
    """Kubernetes' toleration matching of one taint."""
    for t in tolerations or []:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if not t.get("key"):
            if t.get("operator") == "Exists":
                return True
            continue
        if t["key"] != taint.get("key"):
            continue
        if t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", ""):
            return True
    return False


def affinity_matches(affinity, node_labels):
    """The required node affinity (terms ORed, expressions ANDed) against a node's labels."""
    req = (((affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = req.get("nodeSelectorTerms")
    if not terms:
        return True

    def expr_ok(e):
        have = node_labels.get(e["key"])
        op = e.get("operator")
        if op == "In":
            return have in (e.get("values") or [])
        if op == "NotIn":
            return have not in (e.get("values") or [])
        if op == "Exists":
            return have is not None
        if op == "DoesNotExist":
            return have is None
        raise KubeError(f"fake: unsupported node selector operator {op}")

    return any(all(expr_ok(e) for e in (t.get("matchExpressions") or [])) for t in terms)


def schedules_on(pod_spec, node):
    taints = (node.get("spec") or {}).get("taints") or []
    hard = [t for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")]
    if not all(tolerates(pod_spec.get("tolerations"), t) for t in hard):
        return False
    node_labels = (node.get("metadata") or {}).get("labels") or {}
    if any(node_labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    return affinity_matches(pod_spec.get("affinity"), node_labels)


def is_device_plugin(ds):
    cs = (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return any("k8s-device-plugin" in (c.get("image") or "") for c in cs)


def gpu_request(pod):
    n = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        n += int((res.get("limits") or res.get("requests") or {}).get(GPU, 0) or 0)
    return n


class Cluster:
    def __init__(self, st):
        self.st = st
        st.setdefault("objects", {})
        st.setdefault("releases", {})
        st.setdefault("counters", {})

    @property
    def objects(self):
        return self.st["objects"]

    def get(self, kind, ns, name):
        return self.objects.get(key(kind, ns, name))

    def require_kind(self, kind):
        crd = CRD_OF.get(kind)
        if crd and not self.get("CustomResourceDefinition", "", crd):
            raise KubeError(f'error: the server doesn\'t have a resource type "{RESOURCES[kind][0]}"')

    def require_ns(self, kind, ns):
        if kind not in CLUSTER_SCOPED and not self.get("Namespace", "", ns):
            raise KubeError(f'Error from server (NotFound): namespaces "{ns}" not found')

    def put(self, obj, ns):
        kind = obj["kind"]
        meta = obj.setdefault("metadata", {})
        if kind not in CLUSTER_SCOPED:
            meta["namespace"] = meta.get("namespace") or ns
        self.objects[key(kind, meta.get("namespace", ""), meta["name"])] = obj
        return obj

    def delete(self, kind, ns, name):
        k = key(kind, ns, name)
        if k not in self.objects:
            return False
        del self.objects[k]
        if kind == "RayJob":
            self.objects.pop(key("Job", ns, name), None)
            for pk in [pk for pk, o in self.objects.items() if o["kind"] == "Pod" and labels(o).get("job-name") == name]:
                del self.objects[pk]
            owned = [o["metadata"]["name"] for o in self.objects.values() if o["kind"] == "RayCluster"
                     and o["metadata"].get("namespace") == ns
                     and any(r.get("kind") == "RayJob" and r.get("name") == name
                             for r in o["metadata"].get("ownerReferences") or [])]
            for rc in owned:
                self.delete("RayCluster", ns, rc)
        if kind == "RayCluster":
            for pk in [pk for pk, o in self.objects.items() if o["kind"] == "Pod" and labels(o).get("ray.io/cluster") == name]:
                del self.objects[pk]
        return True

    def list(self, kind, ns, selector=None):
        out = []
        for o in self.objects.values():
            if o["kind"] != kind:
                continue
            if kind not in CLUSTER_SCOPED and ns is not None and o["metadata"].get("namespace") != ns:
                continue
            if matches(o, selector):
                out.append(o)
        return sorted(out, key=lambda o: o["metadata"]["name"])

    def event(self, ns, pod, reason, message):
        name = f"{pod}.{suffix()}"
        self.put(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns},
                "type": "Warning",
                "reason": reason,
                "message": message,
                "count": 1,
            },
            ns,
        )

    # ----------------------------------------------------------------------------------------
    # apply

    def apply(self, obj, ns):
        kind = obj.get("kind")
        if kind not in RESOURCES:
            raise KubeError(f'error: resource mapping not found for kind "{kind}"')
        if kind in CRD_OF and not self.get("CustomResourceDefinition", "", CRD_OF[kind]):
            raise KubeError(
                f'error: resource mapping not found for name: "{obj["metadata"]["name"]}": '
                f'no matches for kind "{kind}" in version "{obj.get("apiVersion")}"\nensure CRDs are installed first'
            )
        ns = (obj.get("metadata") or {}).get("namespace") or ns
        self.require_ns(kind, ns)
        obj = json.loads(json.dumps(obj))
        old = self.get(kind, ns, obj["metadata"]["name"])
        if kind == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(v.encode()).decode()
        if kind == "RayJob":
            obj["status"] = (old or {}).get("status") or {"jobDeploymentStatus": "Initializing"}
        elif old and "status" in old:
            obj["status"] = old["status"]
        self.put(obj, ns)
        return "configured" if old else "created"

    # ----------------------------------------------------------------------------------------
    # helm

    def install_chart(self, release, chart, ns, values):
        made = []
        if chart == "nvidia-device-plugin":
            if ns == "default" and not values.get("allowDefaultNamespace"):
                raise KubeError("Error: execution error at (nvidia-device-plugin/templates/validation.yml): "
                                "Running in the 'default' namespace is not recommended.")
            v = merge(json.loads(json.dumps(DEVICE_PLUGIN_DEFAULTS)), values)
            for k in ("tolerations", "affinity"):
                if k in values:
                    v[k] = values[k]
            ds = {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": release, "labels": {"app.kubernetes.io/instance": release,
                                                          "app.kubernetes.io/name": "nvidia-device-plugin"}},
                "spec": {"template": {"spec": {
                    "containers": [{"name": "nvidia-device-plugin-ctr", "image": image_of(v)}],
                    "tolerations": v.get("tolerations") or [],
                    "affinity": v.get("affinity") or {},
                    "nodeSelector": v.get("nodeSelector") or {},
                }}},
            }
            self.put(ds, ns)
            made.append(key("DaemonSet", ns, release))
        elif chart == "kuberay-operator":
            dep = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": release, "labels": {"app.kubernetes.io/name": "kuberay-operator",
                                                          "app.kubernetes.io/instance": release}},
                "spec": {"template": {"spec": {"containers": [{"name": "kuberay-operator", "image": image_of(values)}]}}},
                "status": {"updatedReplicas": 1, "availableReplicas": 1},
            }
            self.put(dep, ns)
            made.append(key("Deployment", ns, release))
        elif chart == "ray-cluster":
            if not self.get("CustomResourceDefinition", "", "rayclusters.ray.io"):
                raise KubeError(
                    "Error: unable to build kubernetes objects from release manifest: resource mapping not found "
                    f'for name: "{release}" namespace: "{ns}" from "": no matches for kind "RayCluster" in version '
                    '"ray.io/v1"\nensure CRDs are installed first'
                )
            name = values.get("fullnameOverride") or release
            groups = [("headgroup", "head", 1, image_of(values.get("head") or {}, image_of(values)), values.get("head") or {})]
            w = values.get("worker") or {}
            if not w.get("disabled"):
                groups.append((w.get("groupName", "workergroup"), "worker", w.get("replicas", 1), image_of(w, image_of(values)), w))
            for gname, g in sorted((values.get("additionalWorkerGroups") or {}).items()):
                if not g.get("disabled"):
                    groups.append((gname, "worker", g.get("replicas", 1), image_of(g, image_of(values)), g))
            old = self.get("RayCluster", ns, name)
            status = dict((old or {}).get("status") or {})
            if os.environ.get("RAYDEPLOY_FAKE_READY_UNITS"):
                status = {"since": time.time()}
            rc = {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": release}},
                "spec": {"groups": [{"name": g[0], "image": g[3], "replicas": g[2]} for g in groups]},
                "status": status,
            }
            self.put(rc, ns)
            made.append(key("RayCluster", ns, name))
            svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{name}-head-svc"},
                   "spec": {"ports": [{"name": "dashboard", "port": 8265}]}}
            self.put(svc, ns)
            made.append(key("Service", ns, f"{name}-head-svc"))
            for pk in [pk for pk, o in self.objects.items() if o["kind"] == "Pod" and labels(o).get("ray.io/cluster") == name]:
                del self.objects[pk]
            for gname, node_type, replicas, image, g in groups:
                group_label = ((g.get("labels") or {}).get("raydeploy.io/group")) or ("head" if node_type == "head" else gname)
                for _ in range(int(replicas or 0) if node_type == "worker" else 1):
                    pod = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": f"{name}-{'head' if node_type == 'head' else gname + '-worker'}-{suffix()}",
                            "labels": {
                                "ray.io/cluster": name,
                                "ray.io/group": gname,
                                "ray.io/node-type": node_type,
                                "raydeploy.io/group": group_label,
                            },
                        },
                        "spec": {"containers": [{"name": f"ray-{node_type}", "image": image,
                                                 "resources": g.get("resources") or {}}],
                                 "tolerations": g.get("tolerations") or [], "nodeSelector": g.get("nodeSelector") or {}},
                        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
                    }
                    self.put(pod, ns)
        return made

    # ----------------------------------------------------------------------------------------
    # time

    def tick_gpus(self):
        """Nodes advertise their GPUs while a device plugin runs there; GPU pods wait for them."""
        plugins = [o for o in self.objects.values() if o["kind"] == "DaemonSet" and is_device_plugin(o)]
        advertised = 0
        for node in [o for o in self.objects.values() if o["kind"] == "Node"]:
            status = node.setdefault("status", {})
            cap = int((status.get("capacity") or {}).get(GPU, 0) or 0)
            alloc = status.setdefault("allocatable", {})
            # A plugin the cluster runs that the fake does not model as a DaemonSet (a managed add-on).
            managed = ((node.get("metadata") or {}).get("annotations") or {}).get("fake.raydeploy.io/managed-plugin")
            if cap and (managed or any(schedules_on(ds["spec"]["template"]["spec"], node) for ds in plugins)):
                alloc[GPU] = str(cap)
                advertised += cap
            else:
                alloc.pop(GPU, None)
        for p in [o for o in self.objects.values() if o["kind"] == "Pod" and gpu_request(o)]:
            st = p["status"]
            if st["phase"] != "Pending":
                continue
            scheduled = st["conditions"][0]["status"] == "True"
            if not advertised and scheduled:
                st["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": INSUFFICIENT_GPU}]
                self.event(p["metadata"]["namespace"], p["metadata"]["name"], "FailedScheduling", INSUFFICIENT_GPU)
            elif advertised and not scheduled and st["conditions"][0].get("message") == INSUFFICIENT_GPU:
                st["conditions"] = [{"type": "PodScheduled", "status": "True"}]

    def tick(self):
        self.tick_gpus()
        operator = any(o["kind"] == "Deployment" and labels(o).get("app.kubernetes.io/name") == "kuberay-operator"
                       for o in self.objects.values())
        # Without the operator's Deployment, no RayCluster moves.
        for rc in [o for o in self.objects.values() if operator and o["kind"] == "RayCluster"]:
            name = rc["metadata"]["name"]
            pods = [o for o in self.objects.values() if o["kind"] == "Pod" and labels(o).get("ray.io/cluster") == name]
            st = rc.setdefault("status", {})
            st["reads"] = st.get("reads", 0) + 1
            ready_units = os.environ.get("RAYDEPLOY_FAKE_READY_UNITS")
            if ready_units:
                unit = float(os.environ.get("RAYDEPLOY_FAKE_UNIT_MS", "100")) / 1000.0
                if time.time() - st.get("since", 0) >= float(ready_units) * unit:
                    st["state"] = "ready"
            elif st["reads"] >= 2 and st.get("state") != "ready":
                st["state"] = "ready"
            if st.get("state") == "ready":
                for p in pods:
                    if p["status"]["phase"] == "Pending" and p["status"]["conditions"][0]["status"] == "True":
                        p["status"] = {
                            "phase": "Running",
                            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                        }
        for rj in [o for o in self.objects.values() if o["kind"] == "RayJob"]:
            self.tick_job(rj)

    def own_cluster(self, rj, ns, name):
        """The RayCluster of a RayJob with a rayClusterSpec, made once the operator runs."""
        st = rj["status"]
        operator = any(o["kind"] == "Deployment" and labels(o).get("app.kubernetes.io/name") == "kuberay-operator"
                       for o in self.objects.values())
        if not operator:
            return None
        rc_name = st.get("rayClusterName") or f"{name}-{suffix()}"
        st["rayClusterName"] = rc_name
        if not self.get("RayCluster", ns, rc_name):
            spec = rj["spec"]["rayClusterSpec"]
            groups = [("head", "head", 1, spec["headGroupSpec"])]
            groups += [(g["groupName"], "worker", g.get("replicas", 1), g) for g in spec.get("workerGroupSpecs") or []]
            self.put({"apiVersion": "ray.io/v1", "kind": "RayCluster",
                      "metadata": {"name": rc_name, "ownerReferences": [{"kind": "RayJob", "name": name}]},
                      "spec": spec, "status": {"state": "ready"}}, ns)
            for gname, node_type, replicas, g in groups:
                pod_spec = g["template"]["spec"]
                for _ in range(int(replicas or 0)):
                    self.put({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": f"{rc_name}-{gname}-{suffix()}",
                                           "labels": {"ray.io/cluster": rc_name, "ray.io/group": gname,
                                                      "ray.io/node-type": node_type}},
                              "spec": pod_spec,
                              "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}, ns)
        return self.get("RayCluster", ns, rc_name)

    def tick_job(self, rj):
        ns = rj["metadata"]["namespace"]
        name = rj["metadata"]["name"]
        st = rj.setdefault("status", {"jobDeploymentStatus": "Initializing"})
        if (rj.get("spec") or {}).get("rayClusterSpec"):
            rc = self.own_cluster(rj, ns, name)
            sel = st.get("rayClusterName")
        else:
            sel = ((rj.get("spec") or {}).get("clusterSelector") or {}).get("ray.io/cluster")
            rc = self.get("RayCluster", ns, sel) if sel else None
        if st.get("jobDeploymentStatus") == "Initializing":
            if not rc or (rc.get("status") or {}).get("state") != "ready":
                return
            st.update({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "startTime": now(),
                       "jobId": f"{name}-{suffix()}"})
            fail = "fail" in rj["spec"].get("entrypoint", "")
            logs = [f"Job submission server address: http://{sel}-head-svc.{ns}.svc.cluster.local:8265",
                    f"Job '{st['jobId']}' submitted successfully",
                    f"running: {rj['spec'].get('entrypoint', '')}"]
            if fail:
                logs += ["Traceback (most recent call last):", "RuntimeError: the job failed on purpose",
                         f"Job '{st['jobId']}' failed"]
            else:
                logs += ["result: 42", f"Job '{st['jobId']}' succeeded"]
            self.put({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": {"job-name": name}},
                      "logs": logs}, ns)
        elif st.get("jobDeploymentStatus") == "Running":
            if "forever" in rj["spec"].get("entrypoint", ""):
                return
            fail = "fail" in rj["spec"].get("entrypoint", "")
            st.update({"jobDeploymentStatus": "Failed" if fail else "Complete",
                       "jobStatus": "FAILED" if fail else "SUCCEEDED", "endTime": now()})
            if fail:
                st["message"] = "Job entrypoint command failed with exit code 1"


def image_of(values, default=None):
    img = values.get("image") if isinstance(values, dict) else None
    if not img or not img.get("repository"):
        return default
    return f"{img['repository']}:{img.get('tag', 'latest')}"


def load_docs(text):
    """JSON (one object or a List, as raydeploy pipes every apply), flattened."""
    text = text.strip()
    if not text:
        return []
    docs = [json.loads(text)]
    out = []
    for d in docs:
        if d.get("kind") == "List" or (d.get("kind", "").endswith("List") and "items" in d):
            out.extend(d.get("items") or [])
        else:
            out.append(d)
    return out


def load_values(path):
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:
        return _yaml().safe_load(text) or {}


def _yaml():
    """PyYAML, from site-packages: the fakes start without them (`python3 -S`, for speed)."""
    import site

    site.main()
    import yaml

    return yaml


def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = json.loads(json.dumps(v))
    return base
