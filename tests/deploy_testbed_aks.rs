//! Target `aks` against the real Kubernetes test bed (tests/support/testbed.rs): the real
//! `raydeploy` binary with real Helm (3 and 4), the bed's kubectl, the real Docker engine and a
//! private registry for the image phases, and the Azure stand-ins that stay (tests/fakes/terraform
//! and az, see tests/support/bed_aks.rs). The terraform stand-in turns the rendered node pools into
//! kwok Nodes shaped like AKS's (tests/testbed/aks_nodes.py: names, labels, taints, capacity and
//! allocatable from ../shared/azure, computed independently of raydeploy's model), so the real
//! scheduler decides where every Ray pod goes and whether it fits. GPU nodes advertise
//! `nvidia.com/gpu` only while a device plugin pod runs on them (tests/support/device_plugins.rs).
//!
//! The tests share one bed and run one at a time (the KubeRay operator release and the bed's
//! nodes are cluster-wide); each has its own deployment (and so its own nodes: every node carries
//! its cluster's `kubernetes.azure.com/cluster` label). Needs root (network namespace, dockerd).
//! Timings are printed, never asserted.

#[path = "support/testbed.rs"]
mod testbed;

#[path = "support/kube_env.rs"]
mod kube_env;

#[path = "support/bed_deploy.rs"]
mod bed_deploy;

#[path = "support/docker_env.rs"]
mod docker_env;

#[path = "support/bed_aks.rs"]
mod bed_aks;

#[path = "support/device_plugins.rs"]
mod device_plugins;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bed_aks::NodesGone;
use bed_deploy::{BedDeploy, text};
use docker_env::DockerEnv;
use serde_json::{Value, json};
use testbed::{TestBed, shared};

const CANARY: &str = "cnry-a5c0e2f19b47";
const WAIT: Duration = Duration::from_secs(180);
const LOCATION: &str = "eastus";

/// One test at a time: the operator release and the scheduler's nodes are shared.
static SERIAL: Mutex<()> = Mutex::new(());

/// The bed with the KubeRay CRDs, the operator and the device plugin emulation.
fn bed() -> &'static TestBed {
    let bed = shared();
    bed.start_operator();
    device_plugins::emulate(bed);
    bed
}

fn aks_spec(name: &str, cluster: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: {name}
target: aks

azure:
  location: {LOCATION}
  systemPool: {{ vmSize: Standard_D2s_v5, count: 1 }}

image:
  rayVersion: "2.52.0"
  python: "3.12"
  pipPackages: ["requests==2.32.3"]

kuberay:
  charts: vendor/kuberay

cluster:
  namespace: {name}
{cluster}
secrets:
  - name: api
    exposeAsEnv: true
    data:
      token: {{ fromEnv: BED_TOKEN }}
{extra}"#
    )
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

fn label<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj["metadata"]["labels"][key].as_str().unwrap_or("")
}

/// A private engine and registry with stand-ins for the Ray base images.
fn docker() -> DockerEnv {
    DockerEnv::start().with_base("rayproject/ray", &["2.52.0-py312", "2.52.0-py312-gpu"])
}

fn project(bed: &'static TestBed, helm: &str, spec: &str, docker: &DockerEnv) -> BedDeploy {
    let mut p = bed_aks::project(bed, helm, spec, docker);
    p.set("BED_TOKEN", CANARY);
    p.set("RAYDEPLOY_READY_TIMEOUT", "300");
    p
}

fn deploy(p: &BedDeploy) -> (std::process::Output, Duration) {
    let t0 = Instant::now();
    let o = p.run(&["deploy", "--auto-approve"]);
    (o, t0.elapsed())
}

fn all_calls(p: &BedDeploy) -> String {
    format!("{:#?}\n{:#?}", p.calls(), bed_aks::azure_calls(p))
}

/// The pods of RayCluster `name` (namespace `name`), once `count` of them run.
fn running_pods(bed: &TestBed, name: &str, count: usize) -> Vec<Value> {
    bed.wait_for(&format!("RayCluster {name}'s {count} pods to run"), WAIT, |note| {
        let pods = bed.get_json(&["pods", "-n", name, "-l", &format!("ray.io/cluster={name}")]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        *note = items
            .iter()
            .map(|p| format!("{} {} {}", p["metadata"]["name"], p["status"]["phase"], p["spec"]["nodeName"]))
            .collect::<Vec<_>>()
            .join("; ");
        let running = items.iter().filter(|p| p["status"]["phase"] == "Running").count();
        (running == count && items.len() == count).then_some(items)
    })
}

/// Pool → the node labels of every pod of that Ray group: the scheduler placed each pod on a
/// node of its own pool.
fn assert_pods_on_their_pools(bed: &TestBed, pods: &[Value], pool_of: &BTreeMap<&str, &str>) {
    for pod in pods {
        let group = label(pod, "ray.io/group");
        let group = if label(pod, "ray.io/node-type") == "head" { "head" } else { group };
        let want = pool_of.get(group).unwrap_or_else(|| panic!("a pool for group {group}"));
        let node = bed.get_json(&["node", pod["spec"]["nodeName"].as_str().unwrap()]);
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert_eq!(label(&node, "kubernetes.azure.com/agentpool"), *want, "{name} ({group}) on pool {want}");
        assert_eq!(label(&node, "agentpool"), *want, "{name}");
        assert_eq!(label(&node, "raydeploy.io/group"), group, "{name}: the pool's node_labels");
        assert_eq!(label(&node, "kubernetes.azure.com/mode"), "user", "{name} stays off the system pool");
    }
}

/// The device plugin's pods, by node name, once one runs on each GPU node.
fn plugin_pods(bed: &TestBed) -> BTreeMap<String, Value> {
    let pods = bed.get_json(&["pods", "-n", "nvidia-device-plugin"]);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running")
        .map(|p| (p["spec"]["nodeName"].as_str().unwrap_or("").to_string(), p.clone()))
        .collect()
}

/// Waits until no device plugin of an earlier test is left on the bed: no DaemonSet or pod
/// named like NVIDIA's in any namespace (an uninstalled release's pods go after its DaemonSet, in the
/// background). Otherwise a leftover DaemonSet puts a pod on this test's GPU node, which then
/// advertises a GPU, and the device-plugin phase rightly finds a plugin already running.
fn no_device_plugin_left(bed: &TestBed) {
    bed.wait_for("the device plugin of an earlier test to be gone", WAIT, |note| {
        let items = plugin_objects(bed);
        *note = items.join(", ");
        items.is_empty().then_some(())
    });
}

/// DaemonSets and pods named like NVIDIA's device plugin, in any namespace: `KIND NS/NAME`.
fn plugin_objects(bed: &TestBed) -> Vec<String> {
    let left = bed.get_json(&["daemonsets,pods", "-A"]);
    left["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["metadata"]["name"].as_str().is_some_and(|n| n.contains("nvidia-device-plugin")))
        .map(|i| {
            let m = &i["metadata"];
            format!(
                "{} {}/{}",
                i["kind"].as_str().unwrap_or(""),
                m["namespace"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Destroy said it removed the device plugin release and its DaemonSets are gone (their pods go
/// after them, in the background).
fn assert_plugin_removed(bed: &TestBed, out: &str) {
    assert!(out.contains("removed the NVIDIA device plugin release"), "destroy removes the device plugin:\n{out}");
    let left: Vec<String> = plugin_objects(bed).into_iter().filter(|o| o.starts_with("DaemonSet ")).collect();
    assert!(left.is_empty(), "left after destroy: {left:?}\n{out}");
}

/// A memory quantity as the API server prints it (`27618Mi`, `12480512Ki`), in MiB.
fn mib(q: &Value) -> u64 {
    let q = q.as_str().unwrap_or_else(|| panic!("a quantity: {q}"));
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap();
    match unit {
        "Ki" => n / 1024,
        "Mi" => n,
        "Gi" => n * 1024,
        _ => panic!("unexpected unit in {q}"),
    }
}

fn assert_no_canary(what: &str, t: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    assert!(!t.contains(CANARY) && !t.contains(&b64), "the secret value appears in {what}");
}

const FULL_CLUSTER: &str = r#"  head: { vmSize: Standard_D8s_v5, cpu: 2, memory: 8Gi }
  workerGroups:
    - { name: cpu, vmSize: Standard_D4s_v5, cpu: 3, memory: 8Gi, replicas: 2 }
    - { name: gpu, vmSize: Standard_NC4as_T4_v3, gpus: 1, cpu: 3, memory: 16Gi, replicas: 1, spot: true }
"#;

/// From nothing: infra makes the pools' nodes, the image is built and pushed to the registry
/// infra reports, credentials give the bed's kubeconfig, the device plugin runs on the GPU node,
/// the scheduler places head and workers on their pools' nodes, ready. Then again, and from a
/// fresh checkout: no mutating call. Then destroy: the nodes go with the infrastructure.
fn aks_from_nothing(helm: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("aks-{helm}");
    let bed = bed();
    let docker = docker();
    no_device_plugin_left(bed);
    let _gone = NodesGone::new(bed, &name, LOCATION);
    let mut p = project(bed, helm, &aks_spec(&name, FULL_CLUSTER, "gpu:\n  charts: vendor/nvidia\n"), &docker);

    // 1. From nothing.
    let (o, first) = deploy(&p);
    let out = text(&o);
    assert!(o.status.success(), "deploy with {helm}:\n{out}\ncalls:\n{}", all_calls(&p));
    eprintln!("aks, {helm}: deploy from nothing took {:.1} s", first.as_secs_f64());

    // The nodes, shaped like the plan: one pool each, AKS's names, labels and taints, and the
    // allocatable AKS leaves on each VM size (../shared/azure/aks-allocatable.md).
    let nodes = bed_aks::nodes(bed, &name, LOCATION);
    let mut by_pool: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for n in &nodes {
        by_pool.entry(label(n, "kubernetes.azure.com/agentpool").to_string()).or_default().push(n);
    }
    let counts: BTreeMap<&str, usize> = by_pool.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    assert_eq!(counts, BTreeMap::from([("cpu", 2), ("gpu", 1), ("rayhead", 1), ("system", 1)]));
    for (pool, ns) in &by_pool {
        for n in ns {
            let node = n["metadata"]["name"].as_str().unwrap();
            let digits = node.strip_prefix(&format!("aks-{pool}-")).and_then(|r| r.split_once("-vmss"));
            assert!(
                digits.is_some_and(|(d, i)| d.len() == 8
                    && d.bytes().all(|b| b.is_ascii_digit())
                    && i.len() == 6
                    && i.bytes().all(|b| b.is_ascii_alphanumeric())),
                "{node} is named like AKS's nodes"
            );
            let ready = condition(n, "Ready").is_some_and(|c| c["status"] == "True");
            assert!(ready, "{node} is Ready");
            assert_eq!(label(n, "agentpool"), pool);
        }
    }
    let taints = |n: &Value| -> Vec<String> {
        n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}={}:{}",
                    t["key"].as_str().unwrap(),
                    t["value"].as_str().unwrap_or(""),
                    t["effect"].as_str().unwrap()
                )
            })
            .collect()
    };
    let system = by_pool["system"][0];
    assert_eq!(label(system, "kubernetes.azure.com/mode"), "system");
    assert_eq!(label(system, "node.kubernetes.io/instance-type"), "Standard_D2s_v5");
    assert_eq!(taints(system), vec!["CriticalAddonsOnly=true:NoSchedule"]);
    let head = by_pool["rayhead"][0];
    assert_eq!(label(head, "node.kubernetes.io/instance-type"), "Standard_D8s_v5");
    assert_eq!(label(head, "raydeploy.io/deployment"), name);
    assert_eq!(taints(head), Vec::<String>::new());
    // Standard_D8s_v5 with Azure CNI Overlay (250 pods): 8000m − 180m, and 32 GiB − min(20 MiB ×
    // 250 + 50 MiB, 8 GiB) − 100 MiB = 27618 MiB: the worked example of aks-allocatable.md.
    assert_eq!(head["status"]["capacity"]["cpu"], "8");
    assert_eq!(head["status"]["capacity"]["pods"], "250");
    assert_eq!(head["status"]["allocatable"]["cpu"], "7820m");
    assert_eq!(mib(&head["status"]["allocatable"]["memory"]), 27618);
    let cpu = by_pool["cpu"][0];
    assert_eq!(cpu["status"]["allocatable"]["cpu"], "3860m", "Standard_D4s_v5: 4000m − 140m");
    assert_eq!(mib(&cpu["status"]["allocatable"]["memory"]), 16384 - 4096 - 100);
    let gpu = by_pool["gpu"][0];
    let gpu_name = gpu["metadata"]["name"].as_str().unwrap();
    assert_eq!(label(gpu, "kubernetes.azure.com/scalesetpriority"), "spot");
    assert_eq!(label(gpu, "kubernetes.azure.com/accelerator"), "nvidia");
    let gt = taints(gpu);
    assert!(gt.contains(&"kubernetes.azure.com/scalesetpriority=spot:NoSchedule".to_string()), "{gt:?}");
    assert!(gt.iter().any(|t| t.starts_with("nvidia.com/gpu=")), "{gt:?}");

    // The device plugin (its local chart) runs on the GPU node, which advertises its GPU.
    let plugins = plugin_pods(bed);
    assert!(plugins.contains_key(gpu_name), "a device plugin pod on {gpu_name}: {:?}", plugins.keys());
    let gpu_now = bed.get_json(&["node", gpu_name]);
    assert_eq!(gpu_now["status"]["allocatable"]["nvidia.com/gpu"], "1", "{}", gpu_now["status"]);
    let ups: Vec<String> = p
        .calls()
        .iter()
        .filter(|c| c.tool == "helm" && c.argv.iter().any(|a| a == "upgrade"))
        .map(|c| c.line())
        .collect();
    assert!(ups.iter().any(|l| l.contains("nvidia-device-plugin") && l.contains("vendor/nvidia")), "{ups:#?}");
    // The CRDs of a chart folder are read from it, without `helm show crds`.
    let shows: Vec<String> =
        p.calls().iter().filter(|c| c.argv.iter().any(|a| a == "show")).map(|c| c.line()).collect();
    assert_eq!(shows, Vec::<String>::new());

    // Head and workers on their own pools' nodes; RayCluster ready, as `ready` read it.
    let pods = running_pods(bed, &name, 4);
    let pool_of = BTreeMap::from([("head", "rayhead"), ("cpu", "cpu"), ("gpu", "gpu")]);
    assert_pods_on_their_pools(bed, &pods, &pool_of);
    let rc = bed.get_json(&["raycluster", &name, "-n", &name]);
    assert_eq!(rc["status"]["state"], "ready", "{}", rc["status"]);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(p.state_dir(&name).join("state.json")).unwrap()).unwrap();
    assert_eq!(state["phases"]["ready"]["status"], "completed", "{}", state["phases"]);

    // The image went to the registry infra reported, and the pods run it by digest.
    let head_pod = pods.iter().find(|p| label(p, "ray.io/node-type") == "head").unwrap();
    let image = head_pod["spec"]["containers"][0]["image"].as_str().unwrap();
    assert!(image.starts_with(&format!("{}/", docker.registry.addr)) && image.contains("@sha256:"), "{image}");
    let (repo_tag, digest) = image.split_once('@').unwrap();
    let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
    let path = repo.split_once('/').unwrap().1;
    assert_eq!(docker.registry.digest(path, tag).as_deref(), Some(digest), "the registry serves {image}");
    // Credentials: the deployment's own kubeconfig, the bed's cluster under AKS's names.
    let kc = std::fs::read_to_string(p.state_dir(&name).join("kubeconfig")).unwrap();
    assert!(kc.contains(&format!("current-context: aks-{name}")) && kc.contains("https://127.0.0.1:6443"), "{kc}");

    assert_no_canary("deploy's output", &out);
    assert_no_canary("the recorded calls", &all_calls(&p));

    // 2. Again: nothing to do.
    bed_aks::clear_calls(&p);
    let (o, second) = deploy(&p);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(bed_aks::mutating(&p), Vec::<String>::new(), "a second deploy changes nothing");
    eprintln!("aks, {helm}: second (no-op) deploy took {:.1} s", second.as_secs_f64());

    // 3. From a fresh checkout: no state, no kubeconfig, no Terraform working folder; the
    // infrastructure is read from the tag Terraform's apply left on the resource group (one
    // `az group show`, no Terraform run), the image from the registry, the rest from the cluster.
    std::fs::remove_dir_all(p.spec_dir.join(".raydeploy")).unwrap();
    bed_aks::clear_calls(&p);
    let (o, fresh) = deploy(&p);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(bed_aks::mutating(&p), Vec::<String>::new(), "a deploy from a fresh checkout changes nothing");
    let azure = bed_aks::azure_calls(&p);
    assert!(
        azure.iter().any(|(t, a)| t == "az" && a.starts_with(&["group".into(), "show".into()])),
        "infra read the applied tag: {}",
        all_calls(&p)
    );
    assert!(
        !azure.iter().any(|(t, a)| t == "terraform" && a.iter().any(|w| w == "init" || w == "plan" || w == "apply")),
        "the applied tag matched, so Terraform was not run: {}",
        all_calls(&p)
    );
    eprintln!("aks, {helm}: deploy from a fresh checkout took {:.1} s", fresh.as_secs_f64());
    assert_eq!(bed_aks::nodes(bed, &name, LOCATION).len(), 5, "the nodes stay");

    // 4. destroy: the cluster's objects, then the infrastructure and with it the nodes.
    p.set("RAYDEPLOY_READY_TIMEOUT", "300");
    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
    assert_plugin_removed(bed, &text(&o));
    assert_eq!(bed_aks::nodes(bed, &name, LOCATION), Vec::<Value>::new(), "destroy removes the nodes");
    let releases = bed.helm(helm, &["list", "-A", "-q", "--deployed", "--failed", "--pending", "--uninstalling"]);
    assert!(!releases.lines().any(|l| l == name || l == "nvidia-device-plugin"), "releases gone: {releases}");
}

#[test]
fn helm3_aks_from_nothing_pods_on_their_pools_noop_fresh_checkout_destroy() {
    aks_from_nothing("helm3");
}

#[test]
fn helm4_aks_from_nothing_pods_on_their_pools_noop_fresh_checkout_destroy() {
    aks_from_nothing("helm4");
}

/// A worker group whose pod fits the VM size raydeploy was told about (`azure.vmSizes` says
/// Standard_D4s_v5 has 8 vCPUs) but not the node AKS makes (4 vCPUs, 3860m allocatable): the
/// scheduler refuses it and `ready` says so, naming the pod, "Insufficient cpu" and the pool.
/// The GPU group, without the device plugin (`gpu.devicePlugin: false`): its node advertises no
/// GPU, so its pod waits too ("Insufficient nvidia.com/gpu"). Then the group gets a VM size that
/// fits it (the pool's node is replaced; the pending pod, unchanged, lands on the new one) and the
/// device plugin phase is turned on: the plugin's pod runs on the GPU node, the node advertises
/// its GPU, and the pending GPU pod lands there.
fn misfit_then_device_plugin(helm: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("fit-{helm}");
    let bed = bed();
    let docker = docker();
    no_device_plugin_left(bed);
    let _gone = NodesGone::new(bed, &name, LOCATION);
    let cluster = |big_vm: &str| {
        format!(
            "  head: {{ vmSize: Standard_D4s_v5, cpu: 2, memory: 8Gi }}\n  workerGroups:\n    \
             - {{ name: big, vmSize: {big_vm}, cpu: 6, memory: 8Gi, replicas: 1 }}\n    \
             - {{ name: gpu, vmSize: Standard_NC4as_T4_v3, gpus: 1, cpu: 3, memory: 16Gi, replicas: 1 }}\n"
        )
    };
    let wrong_sizes = "  vmSizes: { Standard_D4s_v5: { vcpus: 8, memory: 32Gi } }\n";
    let spec1 = aks_spec(&name, &cluster("Standard_D4s_v5"), "gpu:\n  devicePlugin: false\n")
        .replace("  systemPool:", &format!("{wrong_sizes}  systemPool:"));
    let mut p = project(bed, helm, &spec1, &docker);
    p.set("RAYDEPLOY_READY_TIMEOUT", "20");
    let (o, _) = deploy(&p);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "deploy with a worker larger than its nodes:\n{out}");
    eprintln!("{}", out.lines().skip_while(|l| !l.starts_with("error:")).collect::<Vec<_>>().join("\n"));
    let pod_of = |group: &str| {
        let pods = bed.get_json(&["pods", "-n", &name, "-l", &format!("ray.io/cluster={name},ray.io/group={group}")]);
        assert_eq!(pods["items"][0]["status"]["phase"], "Pending", "{pods}");
        pods["items"][0]["metadata"]["name"].as_str().expect("the group's pod exists").to_string()
    };
    let big = pod_of("big");
    let gpu = pod_of("gpu");
    assert!(out.contains("is not ready after 20s"), "{out}");
    let line_of = |pod: &str| out.lines().find(|l| l.contains(pod) && l.contains("node pool")).map(str::to_string);
    assert_eq!(line_of(&big), Some(format!("  {big} (group big, node pool big): Pending")), "{out}");
    assert_eq!(line_of(&gpu), Some(format!("  {gpu} (group gpu, node pool gpu): Pending")), "{out}");
    assert!(out.contains("Insufficient cpu"), "the scheduler's reason:\n{out}");
    assert!(out.contains("Insufficient nvidia.com/gpu"), "the scheduler's reason:\n{out}");
    assert!(
        out.contains("node pool big (Standard_D4s_v5): 1 node, allocatable cpu 3860m"),
        "what the pool's nodes offer:\n{out}"
    );
    assert!(out.contains("nvidia.com/gpu none advertised"), "the GPU node without a plugin:\n{out}");
    let gpu_node = bed_aks::nodes(bed, &name, LOCATION)
        .into_iter()
        .find(|n| label(n, "agentpool") == "gpu")
        .expect("the GPU pool's node");
    let gpu_node_name = gpu_node["metadata"]["name"].as_str().unwrap().to_string();
    assert!(gpu_node["status"]["allocatable"].get("nvidia.com/gpu").is_none(), "{}", gpu_node["status"]);

    // A VM size that fits, and the device plugin: both pending pods land.
    p.write_spec(&aks_spec(&name, &cluster("Standard_D8s_v5"), "gpu:\n  charts: vendor/nvidia\n"));
    p.set("RAYDEPLOY_READY_TIMEOUT", "300");
    let (o, _) = deploy(&p);
    assert!(o.status.success(), "deploy after the fix:\n{}\ncalls:\n{}", text(&o), all_calls(&p));
    let pods = running_pods(bed, &name, 3);
    let pool_of = BTreeMap::from([("head", "rayhead"), ("big", "big"), ("gpu", "gpu")]);
    assert_pods_on_their_pools(bed, &pods, &pool_of);
    let big_pod = pods.iter().find(|p| label(p, "ray.io/group") == "big").unwrap();
    assert_eq!(big_pod["metadata"]["name"], big.as_str(), "the pending pod itself landed");
    let big_node = bed.get_json(&["node", big_pod["spec"]["nodeName"].as_str().unwrap()]);
    assert_eq!(label(&big_node, "node.kubernetes.io/instance-type"), "Standard_D8s_v5");
    let gpu_pod = pods.iter().find(|p| label(p, "ray.io/group") == "gpu").unwrap();
    assert_eq!(gpu_pod["metadata"]["name"], gpu.as_str(), "the pending pod itself landed");
    assert_eq!(gpu_pod["spec"]["nodeName"], gpu_node_name.as_str());
    let plugin = plugin_pods(bed).remove(&gpu_node_name).expect("the device plugin's pod on the GPU node");
    // The plugin's pod was Ready before the GPU pod was scheduled (both as the API recorded them).
    let at = |obj: &Value, kind: &str| {
        condition(obj, kind).and_then(|c| c["lastTransitionTime"].as_str()).map(str::to_string)
    };
    let (ready, scheduled) = (at(&plugin, "Ready").unwrap(), at(gpu_pod, "PodScheduled").unwrap());
    assert!(ready <= scheduled, "plugin Ready at {ready}, GPU pod scheduled at {scheduled}");

    let o = p.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "destroy:\n{}", text(&o));
    assert_plugin_removed(bed, &text(&o));
    assert_eq!(bed_aks::nodes(bed, &name, LOCATION), Vec::<Value>::new());
}

#[test]
fn helm3_misfit_pod_names_the_pool_and_gpu_pod_lands_once_the_device_plugin_runs() {
    misfit_then_device_plugin("helm3");
}

#[test]
fn helm4_misfit_pod_names_the_pool_and_gpu_pod_lands_once_the_device_plugin_runs() {
    misfit_then_device_plugin("helm4");
}

/// The harness's device plugin emulation: a GPU node advertises its GPUs only while a device
/// plugin DaemonSet's pod runs on it.
#[test]
fn gpu_nodes_advertise_gpus_only_while_a_device_plugin_pod_runs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = shared();
    device_plugins::emulate(bed);
    let node = "emu-gpu-node";
    let mut manifest =
        testbed::NodeSpec::new(node).label("emu", "gpu").taint("nvidia.com/gpu", "present", "NoSchedule").manifest();
    manifest["metadata"]["annotations"][device_plugins::GPUS_ANNOTATION] = json!("2");
    bed.kubectl_stdin(&["create", "-f", "-"], &manifest.to_string());
    let gpus = |note: &mut String| {
        let n = bed.get_json(&["node", node]);
        *note = n["status"]["allocatable"].to_string();
        n["status"]["allocatable"]["nvidia.com/gpu"].as_str().map(str::to_string)
    };
    bed.wait_for("the node to be Ready", WAIT, |note| {
        let n = bed.get_json(&["node", node]);
        *note = n["status"]["conditions"].to_string();
        condition(&n, "Ready").is_some_and(|c| c["status"] == "True").then_some(())
    });
    assert_eq!(gpus(&mut String::new()), None, "no GPU without a device plugin");
    let ns = bed.namespace("emu-plugin");
    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": "plugin"}},
            "template": {
                "metadata": {"labels": {"app": "plugin"}},
                "spec": {
                    "nodeSelector": {"emu": "gpu"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "plugin", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"}]
                }
            }
        }
    });
    bed.kubectl_stdin(&["create", "-f", "-"], &ds.to_string());
    let n = bed.wait_for("the node to advertise 2 GPUs", WAIT, |note| gpus(note).filter(|g| g == "2"));
    assert_eq!(n, "2");
    let cap = bed.get_json(&["node", node]);
    assert_eq!(cap["status"]["capacity"]["nvidia.com/gpu"], "2");
    bed.kubectl(&["delete", "daemonset", "nvidia-device-plugin-daemonset", "-n", &ns, "--wait=true"]);
    bed.wait_for("the node to stop advertising GPUs", WAIT, |note| gpus(note).is_none().then_some(()));
    bed.kubectl(&["delete", "node", node]);
}

/// The AKS node stand-in's numbers against AKS's documentation (../shared/azure/aks-allocatable.md):
/// the worked examples for Standard_D8s_v5 with each network's default maxPods, AKS 1.29 and later
/// and before, from a small configuration of the shape raydeploy's templates render.
#[test]
fn aks_node_stand_in_matches_the_documented_allocatable() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = |network: &str, max_pods: &str, version: &str| -> Vec<Value> {
        let tf = format!(
            r#"# a comment
variable "kubernetes_version" {{
  type    = string
  default = null
}}
resource "azurerm_resource_group" "this" {{
  name     = "rg-demo"
  location = "westeurope"
}}
resource "azurerm_kubernetes_cluster" "this" {{
  name                = "aks-demo"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  kubernetes_version  = var.kubernetes_version
  tags                = {{ "a b" = "c\"d" }}
  default_node_pool {{
    name                         = "system"
    vm_size                      = "Standard_D2s_v5"
    node_count                   = 1
    only_critical_addons_enabled = true
  }}
  network_profile {{
    {network}
  }}
}}
resource "azurerm_kubernetes_cluster_node_pool" "w" {{
  name                  = "w"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.this.id
  vm_size               = "Standard_D8s_v5"
  {max_pods}
  auto_scaling_enabled  = true
  min_count             = 2
  max_count             = 3
  priority              = "Spot"
  spot_max_price        = -1
  node_taints           = ["kubernetes.azure.com/scalesetpriority=spot:NoSchedule", "x=y:NoExecute"]
  node_labels = {{
    "raydeploy.io/group" = "w"
  }}
}}
"#
        );
        std::fs::write(dir.path().join("main.tf"), tf).unwrap();
        let out = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/aks_nodes.py"))
            .args(["manifests", &dir.path().display().to_string(), version])
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["node_resource_group"], "MC_rg-demo_aks-demo_westeurope");
        v["nodes"].as_array().unwrap().clone()
    };
    let mib = |n: u64| format!("{}Ki", n * 1024);
    let worker = |nodes: &[Value]| nodes.iter().find(|n| label(n, "agentpool") == "w").unwrap().clone();
    // Azure CNI, node subnet: 30 pods → 650 MiB reserved.
    let nodes = manifests(r#"network_plugin = "azure""#, "", "1.33");
    assert_eq!(nodes.len(), 3, "the system node and min_count workers");
    let w = worker(&nodes);
    assert_eq!(w["status"]["allocatable"]["memory"], mib(32018));
    assert_eq!(w["status"]["allocatable"]["cpu"], "7820m");
    assert_eq!(w["status"]["capacity"]["pods"], "30");
    assert_eq!(label(&w, "kubernetes.azure.com/scalesetpriority"), "spot");
    assert_eq!(label(&w, "kubernetes.azure.com/mode"), "user");
    let t = w["spec"]["taints"].as_array().unwrap();
    assert_eq!(t.len(), 2, "the Spot taint once, and the pool's own: {t:?}");
    let system = nodes.iter().find(|n| label(n, "agentpool") == "system").unwrap();
    assert_eq!(
        system["spec"]["taints"],
        json!([{"key": "CriticalAddonsOnly", "value": "true", "effect": "NoSchedule"}])
    );
    assert_eq!(label(system, "kubernetes.azure.com/mode"), "system");
    // kubenet: 110 pods → 2250 MiB.
    let w = worker(&manifests(r#"network_plugin = "kubenet""#, "", "1.33"));
    assert_eq!(w["status"]["allocatable"]["memory"], mib(30418));
    // Azure CNI Overlay: 250 pods → 5050 MiB; an explicit max_pods wins.
    let w = worker(&manifests("network_plugin = \"azure\"\n    network_plugin_mode = \"overlay\"", "", "1.33"));
    assert_eq!(w["status"]["allocatable"]["memory"], mib(27618));
    let w = worker(&manifests(
        "network_plugin = \"azure\"\n    network_plugin_mode = \"overlay\"",
        "max_pods = 30",
        "1.33",
    ));
    assert_eq!(w["status"]["allocatable"]["memory"], mib(32018));
    // Before AKS 1.29: 25/20/10/6 % tiers (3.56 GiB on 32 GiB) and a 750 MiB eviction threshold.
    let w = worker(&manifests(r#"network_plugin = "kubenet""#, "", "1.28"));
    let reserved_ki = (3.56 * 1024.0 * 1024.0) as u64;
    assert_eq!(w["status"]["allocatable"]["memory"], format!("{}Ki", 32 * 1024 * 1024 - reserved_ki - 750 * 1024));
}
