//! The NVIDIA device plugin phase, driven through the real binary on a target-kubernetes spec
//! with a GPU group, with the fake helm and kubectl (tests/fakes): the emulated cluster has a CPU
//! node and a tainted GPU node whose GPU is advertised only while a device plugin DaemonSet
//! tolerates the node and matches its labels, and GPU pods stay Pending ("Insufficient
//! nvidia.com/gpu") until then — as on AKS, where the driver is installed but nothing advertises
//! the GPUs. Checked: the plugin is installed (pinned chart, its own namespace) before the Ray
//! cluster and the GPU pod runs; a cluster that already runs a device plugin gets none; the spec
//! can turn it off; plan, status, explain and destroy show it.

#[path = "support/kube_env.rs"]
mod kube_env;

use kube_env::{Call, KubeEnv};
use serde_json::{Value, json};

const NS: &str = "nvidia-device-plugin";

fn spec(extra: &str) -> String {
    format!(
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: gpus
target: kubernetes
kubernetes:
  registry: 127.0.0.1:5999/acme/ray-gpus
image:
  rayVersion: "2.52.0"
  python: "3.12"
cluster:
  namespace: rayns
  head: {{ cpu: 1, memory: 2Gi }}
  workerGroups:
    - {{ name: gpu, cpu: 1, memory: 4Gi, gpus: 1, replicas: 1 }}
{extra}"#
    )
}

/// A CPU node, and a GPU node as NVIDIA's tools label it, tainted for GPU pods only.
fn nodes() -> Value {
    json!({
        "Node||cpu-0": {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "cpu-0", "labels": {"kubernetes.io/hostname": "cpu-0"}},
            "status": {"capacity": {"cpu": "4"}, "allocatable": {"cpu": "4"}}},
        "Node||gpu-0": {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "gpu-0", "labels": {"kubernetes.io/hostname": "gpu-0", "nvidia.com/gpu.present": "true"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "4", "nvidia.com/gpu": "1"}, "allocatable": {"cpu": "4"}}},
    })
}

fn sandbox(extra: &str, objects: Value) -> KubeEnv {
    let mut env = KubeEnv::new(&spec(extra), &["helm", "kubectl"]);
    env.add_name_only_docker();
    env.set("RAYDEPLOY_POLL_SECONDS", "0.05");
    env.set("RAYDEPLOY_READY_TIMEOUT", "60");
    env.set_fake_state("kube", &json!({"objects": objects, "releases": {}, "counters": {}}));
    env
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run(env: &KubeEnv, args: &[&str]) -> (i32, String) {
    let o = env.raydeploy().args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), text(&o))
}

/// A command's JSON document (stdout) and exit code.
fn run_json(env: &KubeEnv, args: &[&str]) -> (i32, Value) {
    let o = env.raydeploy().args(args).output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code().unwrap_or(-1), v)
}

fn deployed(env: &KubeEnv) -> String {
    let (code, out) = run(env, &["deploy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    out
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

fn mutating(env: &KubeEnv) -> Vec<String> {
    env.calls().iter().filter(|c| c.mutating()).map(Call::line).collect()
}

/// The GPU worker pods of the RayCluster and whether each runs.
fn gpu_pods(env: &KubeEnv) -> Vec<(String, String)> {
    let st = env.fake_state("kube");
    st["objects"]
        .as_object()
        .unwrap()
        .values()
        .filter(|o| o["kind"] == "Pod" && o["metadata"]["labels"]["ray.io/group"] == "gpu")
        .map(|p| {
            (p["metadata"]["name"].as_str().unwrap().to_string(), p["status"]["phase"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Reads until the GPU pod left Pending (the emulated cluster moves on each read), bounded.
fn gpu_pod_phase(env: &KubeEnv) -> String {
    for _ in 0..20 {
        let pods = gpu_pods(env);
        assert_eq!(pods.len(), 1, "one GPU worker: {pods:?}");
        if pods[0].1 != "Pending" {
            return pods[0].1.clone();
        }
        let (code, out) = run(env, &["status"]);
        assert_eq!(code, 0, "{out}");
    }
    gpu_pods(env)[0].1.clone()
}

#[test]
fn the_device_plugin_is_installed_before_the_cluster_and_gpu_pods_get_their_gpu() {
    let mut env = sandbox("", nodes());

    // plan: the layer is created after preflight; the dry run names the chart.
    let (code, plan) = run_json(&env, &["plan", "--output", "json"]);
    assert_eq!(code, 2, "{plan}");
    let layer = plan["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "device-plugin").expect("layer");
    assert_eq!(layer["status"], "create", "{layer}");
    assert!(layer["diff"].as_str().unwrap().contains("nvidia.com/gpu"), "{layer}");
    let (code, plan) = run_json(&env, &["plan", "--offline", "--output", "json"]);
    assert_eq!(code, 2, "{plan}");
    let layer = plan["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "device-plugin").expect("layer");
    assert_eq!(layer["status"], "create", "{layer}");
    assert!(layer["diff"].as_str().unwrap().contains("+++ b/helm/nvidia-device-plugin.values.yaml"), "{layer}");
    let (code, out) = run(&env, &["deploy", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("helm upgrade --install nvidia-device-plugin nvidia-device-plugin"), "{out}");
    assert!(out.contains("kubectl get daemonsets -A -o json"), "{out}");

    deployed(&env);
    let calls = env.calls();
    let plugin = calls
        .iter()
        .position(|c| {
            c.tool == "helm" && c.has(&["upgrade", "--install", "nvidia-device-plugin", "nvidia-device-plugin"])
        })
        .unwrap_or_else(|| panic!("no device plugin install: {:#?}", lines(&calls)));
    let cluster = calls.iter().position(|c| c.tool == "helm" && c.has(&["upgrade", "gpus", "ray-cluster"])).unwrap();
    assert!(plugin < cluster, "the plugin before the Ray cluster: {:#?}", lines(&calls));
    let c = &calls[plugin];
    for w in
        ["--repo", "https://nvidia.github.io/k8s-device-plugin", "--version", "0.20.0", "-n", NS, "--create-namespace"]
    {
        assert!(c.has(&[w]), "{w} missing: {}", c.line());
    }
    // Its DaemonSet rolled out (watched by kubectl, not polled by Helm) before the Ray cluster.
    let rollout = calls
        .iter()
        .position(|c| {
            c.tool == "kubectl"
                && c.has(&["rollout", "status", "daemonset", "-l", "app.kubernetes.io/instance=nvidia-device-plugin"])
        })
        .unwrap_or_else(|| panic!("no rollout wait: {:#?}", lines(&calls)));
    assert!(plugin < rollout && rollout < cluster, "{:#?}", lines(&calls));
    let values = c.argv.iter().skip_while(|a| *a != "-f").nth(1).unwrap();
    assert!(values.ends_with("helm/nvidia-device-plugin.values.yaml"), "{}", c.line());

    // The plugin runs on the GPU node, which now advertises its GPU; the GPU pod is scheduled.
    assert_eq!(gpu_pod_phase(&env), "Running");
    let st = env.fake_state("kube");
    assert_eq!(st["objects"]["Node||gpu-0"]["status"]["allocatable"]["nvidia.com/gpu"], "1");
    assert!(st["objects"]["Node||cpu-0"]["status"]["allocatable"].get("nvidia.com/gpu").is_none());
    assert_eq!(env.phase_status("gpus", "device-plugin"), "completed");

    // Nothing changed: nothing is installed again, from the state or from a fresh checkout.
    env.clear_calls();
    deployed(&env);
    assert_eq!(mutating(&env), Vec::<String>::new());
    env.fresh_checkout();
    env.clear_calls();
    deployed(&env);
    assert_eq!(mutating(&env), Vec::<String>::new());

    let (code, out) = run(&env, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("device plugin release nvidia-device-plugin/nvidia-device-plugin: deployed (chart nvidia-device-plugin-0.20.0"),
        "{out}"
    );
    let (_, v) = run_json(&env, &["status", "--output", "json"]);
    assert_eq!(v["cluster"]["device_plugin"]["release"]["status"], "deployed", "{v}");
    let (code, plan) = run_json(&env, &["plan", "--output", "json"]);
    assert_eq!(code, 0, "{plan}");
    for l in plan["layers"].as_array().unwrap() {
        assert_eq!(l["status"], "unchanged", "{l}");
    }

    // destroy removes it after the Ray cluster.
    env.clear_calls();
    let (code, out) = run(&env, &["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    let calls = env.calls();
    let rc = calls.iter().position(|c| c.tool == "helm" && c.has(&["uninstall", "gpus"])).unwrap();
    let dp = calls
        .iter()
        .position(|c| c.tool == "helm" && c.has(&["uninstall", "nvidia-device-plugin", "-n", NS]))
        .unwrap_or_else(|| panic!("device plugin not uninstalled: {:#?}", lines(&calls)));
    assert!(rc < dp, "{:#?}", lines(&calls));
    let st = env.fake_state("kube");
    assert!(st["objects"].get(format!("DaemonSet|{NS}|nvidia-device-plugin")).is_none());
    assert_eq!(env.phase_status("gpus", "device-plugin"), "");
}

#[test]
fn a_cluster_that_runs_a_device_plugin_gets_none() {
    // NVIDIA's GPU operator runs the plugin under its own name, in its own namespace.
    let mut objects = nodes();
    objects["Namespace||gpu-operator"] =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu-operator"}});
    objects["DaemonSet|gpu-operator|nvidia-device-plugin-daemonset"] = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "gpu-operator"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "nvidia-device-plugin", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"}],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"nvidia.com/gpu.present": "true"}}}},
    });
    let env = sandbox("", objects);
    let out = deployed(&env);
    assert!(
        out.contains("already runs a device plugin (daemonset gpu-operator/nvidia-device-plugin-daemonset)"),
        "{out}"
    );
    assert!(env.find("helm", &["upgrade", "nvidia-device-plugin"]).is_empty(), "{:#?}", lines(&env.calls()));
    assert_eq!(gpu_pod_phase(&env), "Running");
    let (_, out) = run(&env, &["status"]);
    assert!(
        out.contains("device plugin: the cluster's own (daemonset gpu-operator/nvidia-device-plugin-daemonset)"),
        "{out}"
    );
    let (_, plan) = run_json(&env, &["plan", "--output", "json"]);
    let layer = plan["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "device-plugin").expect("layer");
    assert_eq!(layer["status"], "unchanged", "{layer}");
    assert!(layer["note"].as_str().unwrap().contains("the cluster already runs a device plugin"), "{layer}");

    let (code, out) = run(&env, &["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    assert!(env.find("helm", &["uninstall", "nvidia-device-plugin-daemonset"]).is_empty());
    let st = env.fake_state("kube");
    assert!(st["objects"].get("DaemonSet|gpu-operator|nvidia-device-plugin-daemonset").is_some(), "not ours: kept");
}

#[test]
fn nodes_that_already_advertise_gpus_need_no_plugin() {
    // A managed add-on the cluster runs (no DaemonSet of NVIDIA's image): the node advertises GPUs.
    let mut objects = nodes();
    objects["Node||gpu-0"]["metadata"]["annotations"] = json!({"fake.raydeploy.io/managed-plugin": "true"});
    let env = sandbox("", objects);
    let out = deployed(&env);
    assert!(out.contains("already runs a device plugin (nodes advertise nvidia.com/gpu)"), "{out}");
    assert!(out.contains("node gpu-0 advertises 1 nvidia.com/gpu"), "{out}");
    assert!(env.find("helm", &["upgrade", "nvidia-device-plugin"]).is_empty(), "{:#?}", lines(&env.calls()));
}

#[test]
fn the_spec_can_leave_the_device_plugin_to_the_gpu_operator() {
    let env = sandbox("gpu:\n  devicePlugin: false\n", nodes());
    let (code, out) = run(&env, &["explain"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("device plugin   off (gpu.devicePlugin: false)"), "{out}");
    let (code, out) = run(&env, &["deploy", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("device-plugin") && !out.contains("nvidia-device-plugin"), "{out}");
    deployed(&env);
    assert!(env.find("helm", &["upgrade", "nvidia-device-plugin"]).is_empty());
    assert!(!env.spec_dir.join(".raydeploy/gpus/rendered/helm/nvidia-device-plugin.values.yaml").exists());
    // Nothing advertises the GPU: the pod waits, and status says who must provide the plugin.
    let (_, out) = run(&env, &["status"]);
    assert!(out.contains("device plugin: off (gpu.devicePlugin: false)"), "{out}");
    assert_eq!(gpu_pods(&env)[0].1, "Pending");
}

#[test]
fn without_the_plugin_gpu_pods_stay_pending() {
    // The emulation the tests above rely on: with the release removed, the GPU is no longer
    // advertised and a new GPU pod cannot be scheduled.
    let env = sandbox("", nodes());
    deployed(&env);
    let (code, out) = run(&env, &["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    let mut st = env.fake_state("kube");
    st["objects"]["Pod|rayns|probe"] = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "rayns", "labels": {}},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}});
    env.set_fake_state("kube", &st);
    let (_, out) = run(&env, &["status"]);
    assert!(out.contains("not installed"), "{out}");
    let st = env.fake_state("kube");
    let p = &st["objects"]["Pod|rayns|probe"]["status"];
    assert_eq!(p["phase"], "Pending");
    assert!(p["conditions"][0]["message"].as_str().unwrap().contains("Insufficient nvidia.com/gpu"), "{p}");
}
