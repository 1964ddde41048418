//! Helm values rendered by the binary, checked against the KubeRay v1.7.0 charts' values-paths
//! lists (every key the chart templates read) and against the rules the values must keep.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

#[path = "support/specs.rs"]
mod shipped;
#[path = "support/values_paths.rs"]
mod values_paths;

use shipped::{label, render, root};
use values_paths::Paths;

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Every spec the tests render: (label, spec path, env); examples with target local render no values.
fn cases() -> Vec<(String, PathBuf, Option<&'static str>)> {
    shipped::specs(&["aks", "kubernetes"]).into_iter().map(|(spec, env)| (label(&spec, env), spec, env)).collect()
}

struct RenderedValues {
    label: String,
    spec: Value,
    operator: Value,
    ray_cluster: Value,
}

fn rendered() -> Vec<RenderedValues> {
    let cases = cases();
    assert!(cases.len() >= 6, "the root spec under three environments and the non-local examples");
    cases
        .into_iter()
        .map(|(label, spec, env)| {
            let out = render(&spec, env);
            let read = |f: &str| {
                yaml(
                    &std::fs::read_to_string(out.path().join("helm").join(f))
                        .unwrap_or_else(|e| panic!("{label}: {f}: {e}")),
                )
            };
            RenderedValues {
                spec: yaml(&std::fs::read_to_string(&spec).unwrap()),
                operator: read("kuberay-operator.values.yaml"),
                ray_cluster: read("ray-cluster.values.yaml"),
                label,
            }
        })
        .collect()
}

/// The enabled Ray groups of a ray-cluster values file: (name, values), head first.
fn groups(v: &Value) -> Vec<(String, &Value)> {
    let mut out = vec![("head".to_string(), &v["head"])];
    if v["worker"]["disabled"] != Value::Bool(true) {
        out.push((v["worker"]["groupName"].as_str().unwrap().to_string(), &v["worker"]));
    }
    for (name, g) in v["additionalWorkerGroups"].as_object().into_iter().flatten() {
        if g["disabled"] != Value::Bool(true) {
            out.push((name.clone(), g));
        }
    }
    out
}

#[test]
fn values_paths_checker_accepts_chart_keys() {
    let ray = Paths::load("ray-cluster");
    let ok = yaml(
        "head:\n  resources: {limits: {cpu: '1', nvidia.com/gpu: '1'}}\n  rayStartParams: {num-cpus: '0'}\n  volumes: [{name: a, emptyDir: {}}]\n  image: {tag: x}\n\
         worker: {groupName: w, tolerations: [{key: k, operator: Exists}]}\n\
         additionalWorkerGroups: {gpu: {disabled: false, rayStartParams: {x: y}, image: {repository: r}}}\n",
    );
    assert_eq!(ray.uncovered(&ok), Vec::<String>::new());
    let op = Paths::load("kuberay-operator");
    let ok = yaml(
        "watchNamespace: [ray, other]\nfeatureGates: [{name: A, enabled: true}]\nmetrics: {serviceMonitor: {enabled: false}}\n",
    );
    assert_eq!(op.uncovered(&ok), Vec::<String>::new());
}

#[test]
fn values_paths_checker_rejects_misspelled_and_misplaced_keys() {
    let ray = Paths::load("ray-cluster");
    let bad = yaml(
        "head:\n  rayStartParam: {num-cpus: '0'}\n  image: {tags: x}\n\
         worker: {nodeSelecter: {a: b}}\n\
         additionalWorkerGroups: {gpu: {groupName: gpu, disabled: false}}\n\
         rayVersion: '2.52.0'\n",
    );
    let got: BTreeSet<String> = ray.uncovered(&bad).into_iter().collect();
    for want in [
        "head.rayStartParam",
        "head.rayStartParam.num-cpus",
        "head.image.tags",
        "worker.nodeSelecter",
        "worker.nodeSelecter.a",
        "additionalWorkerGroups.gpu.groupName",
        "rayVersion",
    ] {
        assert!(got.contains(want), "{want} should be rejected; rejected {got:?}");
    }
    let op = Paths::load("kuberay-operator");
    // A list where the chart reads a scalar subtree, a nested key under a listed leaf-less parent.
    let bad = yaml("featureGates: [{name: A, enabld: true}]\nmetrics: {serviceMonitor: {interval: 30s, port: 1}}\n");
    let got: BTreeSet<String> = op.uncovered(&bad).into_iter().collect();
    assert_eq!(got, BTreeSet::from(["featureGates[].enabld".to_string(), "metrics.serviceMonitor.port".to_string()]));
}

#[test]
fn every_rendered_key_is_read_by_the_charts() {
    let (op, ray) = (Paths::load("kuberay-operator"), Paths::load("ray-cluster"));
    for r in rendered() {
        assert_eq!(op.uncovered(&r.operator), Vec::<String>::new(), "{}: kuberay-operator keys", r.label);
        assert_eq!(ray.uncovered(&r.ray_cluster), Vec::<String>::new(), "{}: ray-cluster keys", r.label);
    }
}

#[test]
fn groups_are_guaranteed_and_gpu_groups_complete() {
    let mut gpu_groups = 0;
    for r in rendered() {
        let v = &r.ray_cluster;
        let cpu_tag = v["image"]["tag"].as_str().unwrap();
        assert!(
            !cpu_tag.ends_with("-gpu") && !cpu_tag.contains("-gpu-"),
            "{}: top-level image is the CPU image",
            r.label
        );
        for (name, g) in groups(v) {
            let res = &g["resources"];
            assert!(res["limits"].is_object(), "{}: {name} has resources", r.label);
            assert_eq!(res["requests"], res["limits"], "{}: {name} requests == limits", r.label);
            for q in ["cpu", "memory"] {
                assert!(res["limits"][q].is_string(), "{}: {name} {q} is a quantity string", r.label);
            }
            let gpu = res["limits"].get("nvidia.com/gpu").is_some();
            let tolerates_gpu = g["tolerations"].as_array().into_iter().flatten().any(|t| t["key"] == "nvidia.com/gpu");
            let tag = g["image"]["tag"].as_str().unwrap_or(cpu_tag);
            assert_eq!(tolerates_gpu, gpu, "{}: {name} tolerates the GPU taint iff it has GPUs", r.label);
            assert_eq!(tag.contains("-gpu"), gpu, "{}: {name} runs the GPU image iff it has GPUs ({tag})", r.label);
            if gpu {
                gpu_groups += 1;
                assert!(res["requests"]["nvidia.com/gpu"].is_string(), "{}: {name} requests GPUs", r.label);
                assert_eq!(
                    g["image"]["repository"], v["image"]["repository"],
                    "{}: {name} GPU image repository",
                    r.label
                );
            }
            for (k, val) in g["rayStartParams"].as_object().into_iter().flatten() {
                assert!(val.is_string(), "{}: {name}.rayStartParams.{k} is {val} after re-parse", r.label);
            }
        }
    }
    assert!(gpu_groups > 0, "some example has a GPU group");
}

#[test]
fn gpu_example_has_gpu_limits_toleration_and_image() {
    let out = render(&root().join("examples/gpu-autoscaling/raydeploy.yaml"), None);
    let v = yaml(&std::fs::read_to_string(out.path().join("helm/ray-cluster.values.yaml")).unwrap());
    let g = &v["additionalWorkerGroups"]["gpu"];
    assert_eq!(g["disabled"], false);
    assert_eq!(g["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(g["resources"]["requests"]["nvidia.com/gpu"], "1");
    assert!(g["image"]["tag"].as_str().unwrap().contains("-gpu"), "{}", g["image"]["tag"]);
    let tolerations = g["tolerations"].as_array().unwrap();
    assert!(tolerations.iter().any(|t| t["key"] == "nvidia.com/gpu" && t["effect"] == "NoSchedule"));
    assert!(tolerations.iter().any(|t| t["key"] == "kubernetes.azure.com/scalesetpriority"), "spot toleration");
    assert_eq!(v["worker"]["groupName"], "cpu");
    assert_eq!(v["head"]["rayStartParams"]["num-cpus"], "0");
    assert_eq!(v["additionalWorkerGroups"]["smallGroup"], serde_json::json!({"disabled": true}));
}

#[test]
fn autoscaler_settings_present_iff_enabled() {
    let (mut on, mut off) = (0, 0);
    for r in rendered() {
        let a = &r.spec["cluster"]["autoscaler"];
        let head = &r.ray_cluster["head"];
        if a["enabled"] == true {
            on += 1;
            assert_eq!(head["enableInTreeAutoscaling"], true, "{}", r.label);
            let opts = &head["autoscalerOptions"];
            assert_eq!(
                opts["idleTimeoutSeconds"],
                a.get("idleTimeoutSeconds").cloned().unwrap_or(60.into()),
                "{}",
                r.label
            );
            assert_eq!(
                opts["upscalingMode"],
                a.get("upscalingMode").cloned().unwrap_or("Default".into()),
                "{}",
                r.label
            );
        } else {
            off += 1;
            assert!(head.get("enableInTreeAutoscaling").is_none(), "{}", r.label);
            assert!(head.get("autoscalerOptions").is_none(), "{}", r.label);
        }
    }
    assert!(on > 0 && off > 0, "both cases are exercised ({on} on, {off} off)");
}

#[test]
fn cluster_named_after_the_deployment_with_env_secrets_and_mounts() {
    for r in rendered() {
        let v = &r.ray_cluster;
        let name = v["fullnameOverride"].as_str().unwrap();
        assert!(name.starts_with(r.spec["name"].as_str().unwrap()), "{}: {name}", r.label);
        for (gname, g) in groups(v) {
            assert_eq!(g["labels"]["raydeploy.io/deployment"], name, "{}: {gname}", r.label);
            let env: BTreeSet<&str> =
                g["containerEnv"].as_array().into_iter().flatten().map(|e| e["name"].as_str().unwrap()).collect();
            for k in r.spec["cluster"]["env"].as_object().into_iter().flatten().map(|(k, _)| k.as_str()) {
                assert!(env.contains(k), "{}: {gname} has env {k}", r.label);
            }
            for m in r.spec["cluster"]["mounts"].as_array().into_iter().flatten() {
                let mname = &m["name"];
                assert!(
                    g["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|vol| vol["name"] == *mname && vol["persistentVolumeClaim"]["claimName"].is_string()),
                    "{}: {gname} volume {mname}",
                    r.label
                );
                assert!(
                    g["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|vm| vm["name"] == *mname && vm["mountPath"] == m["path"]),
                    "{}: {gname} mount {mname}",
                    r.label
                );
            }
        }
        let exposed = r.spec["secrets"].as_array().into_iter().flatten().filter(|s| s["exposeAsEnv"] == true).count();
        assert_eq!(v["head"]["envFrom"].as_array().map_or(0, Vec::len), exposed, "{}: envFrom", r.label);
    }
}

#[test]
fn operator_runs_on_the_aks_system_pool() {
    for r in rendered() {
        let op = &r.operator;
        assert_eq!(op["image"]["repository"], "quay.io/kuberay/operator", "{}", r.label);
        assert_eq!(op["image"]["tag"], "v1.7.0", "{}", r.label);
        assert_eq!(op["resources"]["requests"], op["resources"]["limits"], "{}", r.label);
        let tolerates = op["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "CriticalAddonsOnly" && t["effect"] == "NoSchedule");
        let aks = r.spec["target"].as_str().unwrap_or("aks") == "aks";
        assert_eq!(tolerates, aks, "{}: CriticalAddonsOnly toleration on aks only", r.label);
        assert_eq!(op["nodeSelector"]["kubernetes.azure.com/mode"] == "system", aks, "{}", r.label);
    }
}

#[test]
fn no_worker_groups_disables_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("raydeploy.yaml");
    std::fs::write(
        &spec,
        "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: solo\ntarget: kubernetes\n\
         kubernetes: { registry: ghcr.io/acme/solo }\n\
         image: { rayVersion: \"2.52.0\", python: \"3.11\" }\n\
         cluster:\n  head: { cpu: 2, memory: 8Gi, rayStartParams: { num-cpus: \"1\" } }\n",
    )
    .unwrap();
    let out = render(&spec, None);
    let v = yaml(&std::fs::read_to_string(out.path().join("helm/ray-cluster.values.yaml")).unwrap());
    assert_eq!(v["worker"], serde_json::json!({"disabled": true}));
    assert_eq!(v["additionalWorkerGroups"], serde_json::json!({"smallGroup": {"disabled": true}}));
    assert_eq!(v["head"]["resources"]["limits"], serde_json::json!({"cpu": "2", "memory": "8Gi"}));
    assert_eq!(v["head"]["rayStartParams"]["num-cpus"], "1");
    assert_eq!(Paths::load("ray-cluster").uncovered(&v), Vec::<String>::new());
}

/// KubeRay builds the head service from the head container's ports: every render lists them
/// under KubeRay's names, so the service exposes the dashboard, the Ray client and Serve
/// (`raydeploy session` forwards to them); a port the head's rayStartParams move follows.
#[test]
fn head_exposes_dashboard_client_and_serve_under_kuberay_names() {
    let want = serde_json::json!([
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": 8000},
        {"name": "metrics", "containerPort": 8080},
    ]);
    for r in rendered() {
        assert_eq!(r.ray_cluster["head"]["ports"], want, "{}", r.label);
        assert!(r.ray_cluster["worker"].get("ports").is_none(), "{}", r.label);
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("raydeploy.yaml");
    std::fs::write(
        &spec,
        "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: moved\ntarget: kubernetes\n\
         kubernetes: { registry: ghcr.io/acme/moved }\n\
         image: { rayVersion: \"2.52.0\", python: \"3.11\" }\n\
         cluster:\n  head: { cpu: 2, memory: 8Gi, rayStartParams: { dashboard-port: \"9265\", ray-client-server-port: \"11001\" } }\n",
    )
    .unwrap();
    let out = render(&spec, None);
    let v = yaml(&std::fs::read_to_string(out.path().join("helm/ray-cluster.values.yaml")).unwrap());
    let port = |name: &str| {
        v["head"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["containerPort"].clone()
    };
    assert_eq!((port("dashboard"), port("client"), port("serve")), (9265.into(), 11001.into(), 8000.into()));
}

/// Kubernetes' matching of a toleration list against one `key=value:Effect` taint.
fn tolerated(tolerations: &Value, taint: &str) -> bool {
    let (kv, effect) = taint.rsplit_once(':').unwrap();
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    tolerations.as_array().into_iter().flatten().any(|t| {
        t["key"] == key
            && t["effect"].as_str().is_none_or(|e| e == effect)
            && (t["operator"] == "Exists" || t["value"].as_str().unwrap_or("") == value)
    })
}

/// The required node affinity (terms ORed, `In` expressions ANDed) against a node's labels.
fn affinity_selects(affinity: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()
        .expect("required node affinity terms");
    terms.iter().any(|t| {
        t["matchExpressions"].as_array().unwrap().iter().all(|e| {
            assert_eq!(e["operator"], "In", "{e}");
            labels
                .get(e["key"].as_str().unwrap())
                .is_some_and(|v| e["values"].as_array().unwrap().contains(&v.as_str().into()))
        })
    })
}

/// On AKS the device plugin must land on every GPU pool raydeploy's Terraform creates (their
/// taints tolerated, their labels selected) and on no CPU pool; it is rendered exactly when a
/// group has GPUs.
#[test]
fn device_plugin_values_fit_the_gpu_pools() {
    let mut gpu_pools = 0;
    for (spec, env) in shipped::specs(&["aks", "kubernetes"]) {
        let what = label(&spec, env);
        let vars = |k: &str| (k == "AZURE_SUBSCRIPTION_ID").then(|| shipped::SUBSCRIPTION.to_string());
        let loaded = raydeploy::spec::load(&spec, env, &vars).unwrap_or_else(|r| panic!("{what}: {}", r.short()));
        let d = raydeploy::model::build(&loaded, None).unwrap_or_else(|p| panic!("{what}: {p:?}"));
        let out = render(&spec, env);
        let file = out.path().join("helm/nvidia-device-plugin.values.yaml");
        // Every group of the spec, those only ephemeral jobs' clusters have included.
        let gpus = d.cluster.all_groups().any(|g| g.gpus > 0);
        assert_eq!(file.is_file(), gpus, "{what}: device plugin values iff a group has GPUs");
        if !gpus {
            continue;
        }
        let v = yaml(&std::fs::read_to_string(&file).unwrap());
        assert_eq!(v["image"]["repository"], "nvcr.io/nvidia/k8s-device-plugin", "{what}");
        assert_eq!(v["image"]["tag"], "v0.20.0", "{what}: pinned");
        assert!(tolerated(&v["tolerations"], "kubernetes.azure.com/scalesetpriority=spot:NoSchedule"), "{what}: Spot");
        let Some(a) = &d.azure else { continue };
        for pool in &a.ray_pools {
            let group = d.cluster.all_groups().find(|g| Some(&g.name) == pool.group.as_ref()).unwrap();
            let selected = affinity_selects(&v["affinity"], &pool.labels);
            assert_eq!(selected, group.gpus > 0, "{what}: pool {} selected iff it is a GPU pool", pool.name);
            if group.gpus > 0 {
                gpu_pools += 1;
                for t in &pool.taints {
                    assert!(tolerated(&v["tolerations"], t), "{what}: pool {} taint {t} not tolerated", pool.name);
                }
            }
        }
        assert!(!affinity_selects(&v["affinity"], &a.system_pool.labels), "{what}: not on the system pool");
    }
    assert!(gpu_pools > 0, "some example has a GPU pool");
}
