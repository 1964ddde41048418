//! Rendered Kubernetes objects against the KubeRay v1.7.0 CRDs: every RayJob manifest and the
//! RayCluster the real ray-cluster chart builds from the rendered values (`helm template` with
//! every Helm of the test bed, tests/support/helm.rs) validate against the `v1`
//! `openAPIV3Schema` (strict about unknown fields) and the CEL and operator rules that apply to
//! what is rendered. Also: no secret value in any rendered file, and hostile strings survive the
//! YAML round trip.

#[path = "support/helm.rs"]
mod helm;
#[path = "support/kuberay_crd.rs"]
mod kuberay_crd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use kuberay_crd::{cel_rules, crd, v1_schema, validate, yaml, yaml_stream};
use serde_json::{Value, json};

#[path = "support/specs.rs"]
mod shipped;

use shipped::{SUBSCRIPTION, label, root};

/// Values of every `fromEnv` secret source of the specs; none may appear in a rendered file.
const CANARIES: &[(&str, &str)] = &[
    ("SP_CLIENT_SECRET", "canary-7f3a9"),
    ("SP_CLIENT_ID", "canary-client-51c2"),
    ("XGB_STORAGE_ACCOUNT", "canary-account-93be"),
];

/// Renders with the canary values in the environment.
fn render(spec: &Path, env: Option<&str>) -> tempfile::TempDir {
    shipped::render_with(spec, env, CANARIES)
}

/// The deployment model of a spec, for expectations that come from the spec itself.
fn model(spec: &Path, env: Option<&str>) -> raydeploy::model::Deployment {
    let vars = |k: &str| {
        if k == "AZURE_SUBSCRIPTION_ID" {
            Some(SUBSCRIPTION.to_string())
        } else {
            CANARIES.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        }
    };
    let loaded = raydeploy::spec::load(spec, env, &vars).unwrap_or_else(|_| panic!("{} loads", spec.display()));
    raydeploy::model::build(&loaded, None).unwrap_or_else(|p| panic!("{} builds: {p:?}", spec.display()))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

fn job_manifests(out: &Path) -> Vec<(PathBuf, Value)> {
    let dir = out.join("manifests/jobs");
    files(&dir)
        .into_iter()
        .map(|p| {
            let v = yaml(&std::fs::read_to_string(&p).unwrap());
            (p, v)
        })
        .collect()
}

/// The CEL rules of the RayJob v1 schema (KubeRay v1.7.0), each with the check that keeps
/// rendered RayJobs inside it. A rule not listed here fails the test, so a CRD update gets read.
const RAYJOB_RULES: &[&str] = &[
    // spec.deletionStrategy.deletionRules[].condition
    "!(has(self.jobStatus) && has(self.jobDeploymentStatus))",
    "has(self.jobStatus) || has(self.jobDeploymentStatus)",
    // spec.deletionStrategy
    "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))",
    "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))",
    // spec.managedBy and spec.rayClusterSpec.managedBy
    "self == oldSelf",
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']",
];

/// Hand-written equivalents of the CEL rules and of the operator's RayJob validation
/// (`ValidateRayJobMetadata`/`ValidateRayJobSpec`, KubeRay v1.7.0) for the fields raydeploy renders.
fn check_rayjob_rules(job: &Value) -> Result<(), String> {
    let spec = &job["spec"];
    let mut errs = vec![];
    // deletionStrategy rules: a condition names jobStatus xor jobDeploymentStatus; the strategy
    // uses either onSuccess+onFailure or deletionRules. raydeploy writes no deletionStrategy.
    if let Some(ds) = spec.get("deletionStrategy") {
        let legacy = ds.get("onSuccess").is_some() || ds.get("onFailure").is_some();
        let rules = ds.get("deletionRules").is_some();
        if legacy && rules {
            errs.push("!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))".to_string());
        }
        if !((ds.get("onSuccess").is_some() && ds.get("onFailure").is_some()) || rules) {
            errs.push("((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))".to_string());
        }
        for r in ds["deletionRules"].as_array().into_iter().flatten() {
            let c = &r["condition"];
            if c.get("jobStatus").is_some() == c.get("jobDeploymentStatus").is_some() {
                errs.push("has(self.jobStatus) xor has(self.jobDeploymentStatus)".to_string());
            }
        }
    }
    // self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue'] (self == oldSelf: updates only).
    if let Some(m) = spec.get("managedBy")
        && !["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"].contains(&m.as_str().unwrap_or_default())
    {
        errs.push(format!("managedBy {m} not allowed"));
    }
    // Operator: name is a DNS-1035 label of at most 47 characters (MaxRayJobNameLength).
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    let dns1035 = name.len() <= 47
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !dns1035 {
        errs.push(format!("name `{name}` is not a DNS-1035 label of at most 47 characters"));
    }
    // Operator: "a RayJob with shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished".
    let shutdown = spec["shutdownAfterJobFinishes"].as_bool().unwrap_or(false);
    if !shutdown && spec["ttlSecondsAfterFinished"].as_i64().unwrap_or(0) > 0 {
        errs.push("ttlSecondsAfterFinished > 0 needs shutdownAfterJobFinishes".into());
    }
    if spec["ttlSecondsAfterFinished"].as_i64().is_some_and(|t| t < 0) {
        errs.push("ttlSecondsAfterFinished must be non-negative".into());
    }
    // Operator: "one of RayClusterSpec or ClusterSelector must be set". A shared job uses the
    // selector; an ephemeral job carries its own cluster.
    if let Some(rc) = spec.get("rayClusterSpec") {
        if spec.get("clusterSelector").is_some_and(|s| s.as_object().is_some_and(|o| !o.is_empty())) {
            errs.push("rayClusterSpec and clusterSelector together".into());
        }
        // raydeploy's own rule: a RayJob that owns its cluster shuts it down after the job.
        if !shutdown || spec.get("ttlSecondsAfterFinished").is_none() {
            errs.push("rayClusterSpec without shutdownAfterJobFinishes and ttlSecondsAfterFinished".into());
        }
        if let Err(e) = check_cluster_spec(rc) {
            errs.push(e);
        }
    } else {
        let cluster = spec["clusterSelector"]["ray.io/cluster"].as_str().unwrap_or_default();
        if cluster.is_empty() {
            errs.push("clusterSelector with a non-empty ray.io/cluster and no rayClusterSpec".into());
        }
        // The RayJob does not own the cluster it selects: it must not ask to shut it down.
        if shutdown {
            errs.push("shutdownAfterJobFinishes with clusterSelector".into());
        }
        // Operator: "the ClusterSelector mode doesn't support the suspend operation"; and
        // SidecarMode does not support ClusterSelector.
        if spec["suspend"] == true || spec["submissionMode"] == "SidecarMode" {
            errs.push("suspend/SidecarMode with clusterSelector".into());
        }
    }
    // Operator: "activeDeadlineSeconds must be a positive integer".
    if spec.get("activeDeadlineSeconds").is_some_and(|v| v.as_i64().unwrap_or(0) <= 0) {
        errs.push("activeDeadlineSeconds must be positive".into());
    }
    // Operator: runtimeEnvYAML must parse as YAML (a mapping for Ray).
    if let Some(text) = spec.get("runtimeEnvYAML") {
        let env = yaml(text.as_str().unwrap_or_default());
        if !env.is_object() {
            errs.push(format!("runtimeEnvYAML is not a mapping: {env}"));
        }
    }
    // A user submitter template must be a runnable Job pod: restartPolicy Never, a container.
    if let Some(t) = spec.get("submitterPodTemplate")
        && (t["spec"]["restartPolicy"] != "Never" || t["spec"]["containers"].as_array().is_none_or(|c| c.is_empty()))
    {
        errs.push("submitterPodTemplate needs restartPolicy Never and a container".into());
    }
    if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
}

/// The operator's `ValidateRayClusterSpec` (KubeRay v1.7.0) for the fields raydeploy renders in
/// an ephemeral job's `rayClusterSpec`.
fn check_cluster_spec(rc: &Value) -> Result<(), String> {
    let mut errs = vec![];
    let groups: Vec<(&str, &Value)> = std::iter::once(("head", &rc["headGroupSpec"]))
        .chain(
            rc["workerGroupSpecs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| (g["groupName"].as_str().unwrap_or("?"), g)),
        )
        .collect();
    let autoscaling = rc["enableInTreeAutoscaling"] == true;
    for (name, g) in groups {
        let containers = g["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
        if containers.is_empty() {
            errs.push(format!("{name}: a group needs at least one container"));
            continue;
        }
        let params = g["rayStartParams"].as_object().cloned().unwrap_or_default();
        // Resources in both rayStartParams and the group's `resources`.
        let start_resources = ["num-cpus", "num-gpus", "memory", "resources"].iter().any(|k| params.contains_key(*k));
        if start_resources && g["resources"].as_object().is_some_and(|r| !r.is_empty()) {
            errs.push(format!("{name}: resources in both rayStartParams and resources"));
        }
        if params.contains_key("labels") {
            errs.push(format!("{name}: rayStartParams['labels'] is not supported"));
        }
        let env = containers[0]["env"].as_array().cloned().unwrap_or_default();
        let set = |k: &str| env.iter().find(|e| e["name"] == k).and_then(|e| e["value"].as_str().map(str::to_string));
        // GCS fault tolerance is not configured: RAY_REDIS_ADDRESS would turn it on implicitly.
        if name == "head" && set("RAY_REDIS_ADDRESS").is_some() {
            errs.push("RAY_REDIS_ADDRESS without gcsFaultToleranceOptions".into());
        }
        if name == "head" && (params.contains_key("redis-username") || set("REDIS_USERNAME").is_some()) {
            errs.push("redis username set".into());
        }
        if name == "head" && !autoscaling && matches!(set("RAY_enable_autoscaler_v2").as_deref(), Some("1" | "true")) {
            errs.push("RAY_enable_autoscaler_v2 without enableInTreeAutoscaling".into());
        }
        // KubeRay reads the Ray container at index 0 by name: ray-head, ray-worker.
        let want = if name == "head" { "ray-head" } else { "ray-worker" };
        if containers[0]["name"] != want {
            errs.push(format!("{name}: Ray container named {} not {want}", containers[0]["name"]));
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
}

#[test]
fn rayjob_crd_has_only_the_cel_rules_we_check() {
    let schema = v1_schema(&crd("ray.io_rayjobs.yaml"));
    let rules = cel_rules(&schema);
    assert!(!rules.is_empty());
    for (at, rule) in rules {
        assert!(RAYJOB_RULES.contains(&rule.as_str()), "new CEL rule at {at}: {rule}; add a check for it");
    }
}

#[test]
fn rayjobs_validate_against_the_rayjob_crd() {
    let schema = v1_schema(&crd("ray.io_rayjobs.yaml"));
    let mut seen = 0;
    let mut ephemeral = 0;
    for (spec, env) in shipped::specs(&["aks", "kubernetes"]) {
        let d = model(&spec, env);
        let out = render(&spec, env);
        let jobs = job_manifests(out.path());
        assert_eq!(jobs.len(), d.jobs.len(), "{}: one RayJob per job", label(&spec, env));
        for (path, job) in jobs {
            let what = format!("{} {}", label(&spec, env), path.display());
            validate(&schema, &job)
                .unwrap_or_else(|e| panic!("{what}: not valid against the RayJob CRD:\n{e}\n{job:#}"));
            check_rayjob_rules(&job).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(job["apiVersion"], "ray.io/v1");
            assert_eq!(job["kind"], "RayJob");
            assert_eq!(job["metadata"]["namespace"], json!(d.cluster.namespace), "{what}");
            let name = job["metadata"]["name"].as_str().unwrap();
            let jm = d.jobs.iter().find(|j| j.name == name).unwrap_or_else(|| panic!("{what}: no job {name}"));
            match &jm.ephemeral {
                None => {
                    assert_eq!(job["spec"]["clusterSelector"], json!({ "ray.io/cluster": d.cluster.name }), "{what}");
                    assert!(job["spec"].get("rayClusterSpec").is_none(), "{what}");
                }
                Some(c) => {
                    assert!(job["spec"].get("clusterSelector").is_none(), "{what}");
                    assert_eq!(job["spec"]["shutdownAfterJobFinishes"], true, "{what}");
                    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], json!(jm.ttl_seconds_after_finished), "{what}");
                    let rc = &job["spec"]["rayClusterSpec"];
                    let got: Vec<(String, u64, u64, u64)> = rc["workerGroupSpecs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|g| {
                            let n = |k: &str| g[k].as_u64().unwrap();
                            (
                                g["groupName"].as_str().unwrap().to_string(),
                                n("replicas"),
                                n("minReplicas"),
                                n("maxReplicas"),
                            )
                        })
                        .collect();
                    let want: Vec<(String, u64, u64, u64)> = c
                        .workers
                        .iter()
                        .map(|g| (g.name.clone(), g.replicas.into(), g.min_replicas.into(), g.max_replicas.into()))
                        .collect();
                    assert_eq!(got, want, "{what}: the job's groups");
                    ephemeral += 1;
                }
            }
            assert_eq!(job["spec"]["entrypoint"], json!(jm.entrypoint), "{what}");
            if let Some(text) = job["spec"].get("runtimeEnvYAML") {
                let env = yaml(text.as_str().unwrap());
                assert_eq!(env.get("working_dir").and_then(Value::as_str), jm.working_dir.as_deref(), "{what}");
            } else {
                assert!(
                    jm.working_dir.is_none() && jm.pip.is_empty() && jm.env_vars.is_empty(),
                    "{what}: runtime env missing"
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "the examples define RayJobs; saw {seen}");
    assert!(ephemeral >= 1, "an example defines an ephemeral job");
}

/// The RayCluster the real ray-cluster chart renders from the rendered values and the image pins
/// deploy adds (release: the deployment's cluster name), with Helm `h`.
fn chart_raycluster(h: &helm::Helm, out: &Path, d: &raydeploy::model::Deployment) -> Value {
    let values = out.join("helm/ray-cluster.values.yaml");
    let text = std::fs::read_to_string(&values).expect("helm/ray-cluster.values.yaml rendered");
    assert!(!text.trim().is_empty(), "helm/ray-cluster.values.yaml is empty");
    let pins = helm::deploy_pins(d, out);
    let chart = helm::shared("kuberay/charts/ray-cluster");
    let text = helm::template(h, &chart, &d.cluster.name, &d.cluster.namespace, &[&values, &pins])
        .unwrap_or_else(|e| panic!("{e}"));
    helm::object(&text, "RayCluster")
}

#[test]
fn rayclusters_from_the_chart_validate_against_the_raycluster_crd() {
    let crd_doc = crd("ray.io_rayclusters.yaml");
    let schema = v1_schema(&crd_doc);
    for (at, rule) in cel_rules(&schema) {
        // Transition rules (self == oldSelf) only apply to updates; managedBy is not set.
        assert!(
            rule == "self == oldSelf" || rule == "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']",
            "new CEL rule at {at}: {rule}; add a check for it"
        );
    }
    let helms = helm::helms();
    for (spec, env) in shipped::specs(&["aks", "kubernetes"]) {
        let what = label(&spec, env);
        let d = model(&spec, env);
        let out = render(&spec, env);
        for h in &helms {
            let what = format!("{what} ({})", h.name);
            let rc = chart_raycluster(h, out.path(), &d);
            validate(&schema, &rc)
                .unwrap_or_else(|e| panic!("{what}: RayCluster not valid against the CRD:\n{e}\n{rc:#}"));
            assert!(rc["spec"].get("managedBy").is_none(), "{what}: managedBy set");

            // The shared jobs' RayJobs select the cluster the chart creates (an ephemeral job's
            // has its own).
            assert_eq!(rc["metadata"]["name"], json!(d.cluster.name), "{what}: RayCluster name");
            for (path, job) in
                job_manifests(out.path()).into_iter().filter(|(_, j)| j["spec"].get("rayClusterSpec").is_none())
            {
                assert_eq!(
                    job["spec"]["clusterSelector"]["ray.io/cluster"],
                    rc["metadata"]["name"],
                    "{what} {}",
                    path.display()
                );
            }

            // Groups, in chart order (additionalWorkerGroups by name, then worker).
            let mut want: Vec<&str> = d.cluster.workers.iter().map(|g| g.name.as_str()).collect();
            want.sort();
            let mut got: Vec<&str> = rc["spec"]["workerGroupSpecs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["groupName"].as_str().unwrap())
                .collect();
            got.sort();
            assert_eq!(got, want, "{what}: worker groups");
            for g in rc["spec"]["workerGroupSpecs"].as_array().unwrap() {
                let m = d.cluster.workers.iter().find(|w| g["groupName"] == json!(w.name)).unwrap();
                assert_eq!(
                    (g["replicas"].as_u64(), g["minReplicas"].as_u64(), g["maxReplicas"].as_u64()),
                    (Some(m.replicas.into()), Some(m.min_replicas.into()), Some(m.max_replicas.into())),
                    "{what}: {} sizes",
                    m.name
                );
            }

            let pods: Vec<&Value> = std::iter::once(&rc["spec"]["headGroupSpec"])
                .chain(rc["spec"]["workerGroupSpecs"].as_array().unwrap())
                .map(|g| &g["template"]["spec"])
                .collect();
            for pod in &pods {
                let c = &pod["containers"][0];
                // Cluster env reaches every Ray container.
                for (k, v) in &d.cluster.env {
                    let env = c["env"].as_array().unwrap_or_else(|| panic!("{what}: no env in {c:#}"));
                    assert!(
                        env.iter().any(|e| e["name"] == json!(k) && e["value"] == json!(v)),
                        "{what}: env {k} missing"
                    );
                }
                // Secrets exposed as env are referenced, by name.
                for s in &d.cluster.env_from_secrets {
                    assert!(
                        c["envFrom"].as_array().into_iter().flatten().any(|e| e["secretRef"]["name"] == json!(s)),
                        "{what}: envFrom {s} missing"
                    );
                }
                // Every mount points at a declared volume; Azure mounts use the rendered claims.
                let volumes: Vec<&str> =
                    pod["volumes"].as_array().into_iter().flatten().map(|v| v["name"].as_str().unwrap()).collect();
                for vm in c["volumeMounts"].as_array().into_iter().flatten() {
                    assert!(volumes.contains(&vm["name"].as_str().unwrap()), "{what}: volumeMount {vm} has no volume");
                }
                for m in &d.cluster.mounts {
                    let claim =
                        pod["volumes"].as_array().into_iter().flatten().find_map(|v| {
                            v["persistentVolumeClaim"]["claimName"].as_str().filter(|c| *c == m.claim_name)
                        });
                    assert!(claim.is_some(), "{what}: mount {} has no volume with claim {}", m.name, m.claim_name);
                }
            }
            let claims: Vec<String> = std::fs::read_to_string(out.path().join("manifests/mounts.yaml"))
                .map(|t| {
                    yaml_stream(&t)
                        .into_iter()
                        .filter(|o| o["kind"] == "PersistentVolumeClaim")
                        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            for m in d.cluster.mounts.iter().filter(|m| m.volume_name.is_some()) {
                assert!(claims.contains(&m.claim_name), "{what}: claim {} not in manifests/mounts.yaml", m.claim_name);
            }
        }
    }
}

/// An ephemeral job's cluster runs the long-running cluster's pods: for every group both have,
/// the pod template the real chart renders from the values (with deploy's digest pins) and the
/// one in the job's `rayClusterSpec` (pinned as `run` pins it) carry the same image, pull
/// policy, resources, env, envFrom, volume mounts, volumes, node selector, tolerations and
/// labels; the pinned RayJob is valid for the CRD and the operator's rules.
#[test]
fn ephemeral_clusters_run_the_pods_of_the_long_running_cluster() {
    let schema = v1_schema(&crd("ray.io_rayjobs.yaml"));
    let h = &helm::helms()[0];
    let mut compared = 0;
    for (spec, env) in shipped::specs(&["aks", "kubernetes"]) {
        let d = model(&spec, env);
        if d.jobs.iter().all(|j| j.ephemeral.is_none()) {
            continue;
        }
        let what = label(&spec, env);
        let out = render(&spec, env);
        let rc = chart_raycluster(h, out.path(), &d);
        // The digest helm::deploy_pins gives the chart.
        let digest = format!("@sha256:{}", "a".repeat(64));
        let pin = |i: &raydeploy::model::ImageRef| format!("{}{digest}", i.reference());
        for j in d.jobs.iter().filter(|j| j.ephemeral.is_some()) {
            let job =
                serde_json::to_value(raydeploy::render::manifests::rayjob::rayjob_with(&d, j, &pin).unwrap()).unwrap();
            validate(&schema, &job).unwrap_or_else(|e| panic!("{what} {}: {e}\n{job:#}", j.name));
            check_rayjob_rules(&job).unwrap_or_else(|e| panic!("{what} {}: {e}", j.name));
            let own = &job["spec"]["rayClusterSpec"];
            let mut pairs = vec![("head".to_string(), &rc["spec"]["headGroupSpec"], &own["headGroupSpec"])];
            for g in own["workerGroupSpecs"].as_array().unwrap() {
                let name = g["groupName"].as_str().unwrap();
                if let Some(c) =
                    rc["spec"]["workerGroupSpecs"].as_array().unwrap().iter().find(|c| c["groupName"] == name)
                {
                    pairs.push((name.to_string(), c, g));
                }
            }
            assert!(pairs.len() >= 2, "{what} {}: a worker group shared with the long-running cluster", j.name);
            for (group, chart, mine) in pairs {
                let at = format!("{what} job {} group {group}", j.name);
                let (cp, mp) = (&chart["template"]["spec"], &mine["template"]["spec"]);
                for k in ["volumes", "nodeSelector", "tolerations"] {
                    assert_eq!(cp.get(k), mp.get(k), "{at}: {k}");
                }
                let (cc, mc) = (&cp["containers"][0], &mp["containers"][0]);
                for k in ["name", "image", "imagePullPolicy", "resources", "env", "envFrom", "volumeMounts"] {
                    assert_eq!(cc.get(k), mc.get(k), "{at}: container {k}");
                }
                assert!(mc["image"].as_str().unwrap().ends_with(&digest), "{at}: pinned by digest");
                for (k, v) in mine["template"]["metadata"]["labels"].as_object().unwrap() {
                    if k != "raydeploy.io/job" {
                        assert_eq!(chart["template"]["metadata"]["labels"].get(k), Some(v), "{at}: label {k}");
                    }
                }
                if group == "head" {
                    assert_eq!(chart["rayStartParams"], mine["rayStartParams"], "{at}: rayStartParams");
                }
                compared += 1;
            }
            // The autoscaler and the Ray version are the long-running cluster's too.
            for k in ["rayVersion", "enableInTreeAutoscaling", "autoscalerOptions"] {
                assert_eq!(rc["spec"].get(k), own.get(k), "{what} job {}: {k}", j.name);
            }
        }
    }
    assert!(compared >= 2, "an example has an ephemeral job sharing a group with the long-running cluster");
}

#[test]
fn mounts_bind_claims_to_csi_volumes() {
    for (spec, env) in shipped::specs(&["aks", "kubernetes"]) {
        let what = label(&spec, env);
        let d = model(&spec, env);
        let out = render(&spec, env);
        let azure: Vec<_> = d.cluster.mounts.iter().filter(|m| m.volume_name.is_some()).collect();
        let Ok(text) = std::fs::read_to_string(out.path().join("manifests/mounts.yaml")) else {
            assert!(azure.is_empty(), "{what}: Azure mounts but no manifests/mounts.yaml");
            continue;
        };
        let objs = yaml_stream(&text);
        assert_eq!(objs.len(), azure.len() * 2, "{what}: a PV and a PVC per Azure mount");
        let mut handles = vec![];
        for m in azure {
            let pv = objs
                .iter()
                .find(|o| o["kind"] == "PersistentVolume" && o["metadata"]["name"] == json!(m.volume_name))
                .unwrap();
            let pvc = objs
                .iter()
                .find(|o| o["kind"] == "PersistentVolumeClaim" && o["metadata"]["name"] == json!(m.claim_name))
                .unwrap();
            assert!(pv["metadata"].get("namespace").is_none(), "{what}: PVs are cluster-scoped");
            assert_eq!(pvc["metadata"]["namespace"], json!(d.cluster.namespace));
            assert_eq!(pvc["spec"]["volumeName"], pv["metadata"]["name"]);
            assert_eq!(pvc["spec"]["storageClassName"], "");
            assert_eq!(pv["spec"]["storageClassName"], "");
            assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
            assert_eq!(pv["spec"]["capacity"]["storage"], json!(m.size));
            assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], json!(m.size));
            let mode = if m.read_only { "ReadOnlyMany" } else { "ReadWriteMany" };
            assert_eq!(pv["spec"]["accessModes"], json!([mode]));
            assert_eq!(pvc["spec"]["accessModes"], json!([mode]));
            let csi = &pv["spec"]["csi"];
            assert_eq!(csi["readOnly"], json!(m.read_only));
            assert_eq!(csi["volumeAttributes"]["storageAccount"], json!(m.storage_account));
            match m.kind {
                raydeploy::spec::MountType::Azureblob => {
                    assert_eq!(csi["driver"], "blob.csi.azure.com");
                    assert_eq!(csi["volumeAttributes"]["containerName"], json!(m.container));
                }
                _ => {
                    assert_eq!(csi["driver"], "file.csi.azure.com");
                    assert_eq!(csi["volumeAttributes"]["shareName"], json!(m.share));
                }
            }
            match &m.secret {
                Some(s) => {
                    assert_eq!(csi["nodeStageSecretRef"], json!({ "name": s, "namespace": d.cluster.namespace }))
                }
                None => assert!(csi.get("nodeStageSecretRef").is_none()),
            }
            handles.push(csi["volumeHandle"].as_str().unwrap().to_string());
        }
        let n = handles.len();
        handles.sort();
        handles.dedup();
        assert_eq!(handles.len(), n, "{what}: volume handles are unique");
    }
}

fn expected_placeholder(src: &raydeploy::spec::SecretSource) -> String {
    use raydeploy::spec::SecretSource::*;
    match src {
        FromEnv(v) => format!("<from env {v}>"),
        FromFile(f) => format!("<from file {f}>"),
        FromKeyVault(kv) => format!("<from key vault {}/{}>", kv.vault, kv.secret),
    }
}

fn assert_no_canary(out: &Path, canaries: &[&str], what: &str) {
    for f in files(out) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        for c in canaries {
            assert!(!text.contains(c), "{what}: secret value `{c}` leaked into {}", f.display());
        }
    }
}

#[test]
fn secrets_hold_placeholders_never_values() {
    let canaries: Vec<&str> = CANARIES.iter().map(|(_, v)| *v).collect();
    for (spec, env) in shipped::specs(&["aks", "kubernetes"]) {
        let what = label(&spec, env);
        let d = model(&spec, env);
        let out = render(&spec, env);
        assert_no_canary(out.path(), &canaries, &what);
        let Ok(text) = std::fs::read_to_string(out.path().join("manifests/secrets.yaml")) else {
            assert!(d.secrets.is_empty(), "{what}: secrets but no manifests/secrets.yaml");
            continue;
        };
        let docs = yaml_stream(&text);
        assert_eq!(docs.len(), d.secrets.len(), "{what}: one Secret per secret");
        for s in &d.secrets {
            let doc = docs
                .iter()
                .find(|o| o["metadata"]["name"] == json!(s.name))
                .unwrap_or_else(|| panic!("{what}: no Secret {}", s.name));
            assert_eq!(
                (doc["apiVersion"].as_str(), doc["kind"].as_str(), doc["type"].as_str()),
                (Some("v1"), Some("Secret"), Some("Opaque"))
            );
            assert_eq!(doc["metadata"]["namespace"], json!(d.cluster.namespace));
            assert_eq!(doc["metadata"]["labels"]["raydeploy.io/deployment"], json!(d.name));
            assert!(doc.get("data").is_none(), "{what}: Secret {} has data", s.name);
            let data = doc["stringData"].as_object().unwrap();
            let mut keys: Vec<&String> = data.keys().collect();
            keys.sort();
            let mut want: Vec<&String> = s.keys.iter().collect();
            want.sort();
            assert_eq!(keys, want, "{what}: keys of {}", s.name);
            for (k, src) in &s.sources {
                assert_eq!(data[k], json!(expected_placeholder(src)), "{what}: {}.{k}", s.name);
            }
        }
    }
}

/// A spec on target kubernetes with a secret from a file; the file's content must not leak.
#[test]
fn secret_from_file_is_not_read_into_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), "canary-file-0d4e\n").unwrap();
    std::fs::write(
        dir.path().join("raydeploy.yaml"),
        r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: filesecret
target: kubernetes
kubernetes: { registry: ghcr.io/acme/ray }
image: { rayVersion: "2.52.0", python: "3.11" }
cluster:
  namespace: work
  head: { cpu: 2, memory: 8Gi }
  workerGroups:
    - { name: w, cpu: 2, memory: 8Gi, replicas: 1 }
secrets:
  - name: tok
    data:
      TOKEN: { fromFile: ./token.txt }
      OTHER: { fromEnv: SP_CLIENT_SECRET }
    exposeAsEnv: true
"#,
    )
    .unwrap();
    let spec = dir.path().join("raydeploy.yaml");
    let out = render(&spec, None);
    assert_no_canary(out.path(), &["canary-file-0d4e", "canary-7f3a9"], "fromFile spec");
    let docs = yaml_stream(&std::fs::read_to_string(out.path().join("manifests/secrets.yaml")).unwrap());
    assert_eq!(
        docs[0]["stringData"],
        json!({ "OTHER": "<from env SP_CLIENT_SECRET>", "TOKEN": "<from file ./token.txt>" })
    );
}

/// Strings that break naive YAML writers, or that YAML 1.1 readers (kubectl's) turn into other types.
const HOSTILE: &[&str] = &[
    "it's \"quoted\"",
    "line one\nline two\n",
    "trailing newline\n",
    "  leading and trailing spaces  ",
    "${HOME} and ${env:SP_CLIENT_SECRET}",
    "{{ .Values.secret }}",
    "key: value",
    "a # not a comment",
    "#comment",
    "- item",
    "* star",
    "&anchor",
    "*alias",
    "!tag",
    "? key",
    "| block",
    "> folded",
    "%directive",
    "@at",
    "`tick`",
    "[a, b]",
    "{a: b}",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "~",
    "null",
    "NULL",
    "0",
    "007",
    "0x1F",
    "0o17",
    "1e3",
    "1_000",
    "12:30:00",
    ".inf",
    ".nan",
    "-1",
    "",
    "tab\there",
    "back\\slash",
    "unicode é ✓ \u{200b}",
    "---",
    "...",
    "python -c \"import os; print(os.environ['A'])\" && echo 'done' # end",
];

/// Loads a YAML stream with PyYAML (a YAML 1.1 reader, like the one kubectl uses), when present.
fn pyyaml(text: &str) -> Option<Vec<Value>> {
    let probe = Process::new("python3").args(["-c", "import yaml"]).output().ok()?;
    if !probe.status.success() {
        eprintln!("python3 with PyYAML not found: YAML 1.1 round trip not checked");
        return None;
    }
    let mut child = Process::new("python3")
        .args(["-c", "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin.read()))))"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML cannot read:\n{text}");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn hostile_model() -> raydeploy::model::Deployment {
    let mut d = model(&root().join("examples/pytorch-mnist-aks/raydeploy.yaml"), None);
    let job = &mut d.jobs[0];
    job.entrypoint = HOSTILE.join(" ");
    job.env_vars = HOSTILE.iter().enumerate().map(|(i, s)| (format!("V{i:02}"), s.to_string())).collect();
    job.env_vars.insert("key: with # hash".into(), "x".into());
    job.pip = HOSTILE.iter().map(|s| s.to_string()).collect();
    job.working_dir = Some("/home/ray/jobs/it's: ${here} #1".into());
    d
}

#[test]
fn hostile_strings_round_trip_through_rendered_yaml() {
    let d = hostile_model();
    let files: BTreeMap<String, String> = raydeploy::render::manifests::render(&d).unwrap().into_iter().collect();
    let text = &files["manifests/jobs/pytorch-mnist.yaml"];
    let job = &d.jobs[0];
    let check = |doc: &Value, reader: &str| {
        assert_eq!(doc["spec"]["entrypoint"], json!(job.entrypoint), "{reader}: entrypoint\n{text}");
        let env_text =
            doc["spec"]["runtimeEnvYAML"].as_str().unwrap_or_else(|| panic!("{reader}: runtimeEnvYAML is a string"));
        let env = yaml(env_text);
        assert_eq!(env["env_vars"], json!(job.env_vars), "{reader}: env_vars\n{env_text}");
        assert_eq!(env["pip"], json!(job.pip), "{reader}: pip");
        assert_eq!(env["working_dir"], json!(job.working_dir), "{reader}: working_dir");
        if let Some(py) = pyyaml(env_text) {
            assert_eq!(py[0], env, "PyYAML reads runtimeEnvYAML differently\n{env_text}");
        }
    };
    check(&yaml(text), "serde-saphyr");
    if let Some(docs) = pyyaml(text) {
        check(&docs[0], "PyYAML");
    }
}

#[test]
fn hostile_secret_sources_round_trip() {
    let mut d = hostile_model();
    let mut sources = BTreeMap::new();
    for (i, s) in HOSTILE.iter().enumerate() {
        sources.insert(format!("K{i:02}"), raydeploy::spec::SecretSource::FromEnv(s.to_string()));
    }
    d.secrets = vec![raydeploy::model::SecretModel {
        name: "s".into(),
        keys: sources.keys().cloned().collect(),
        sources: sources.clone(),
        expose_as_env: false,
    }];
    let files: BTreeMap<String, String> = raydeploy::render::manifests::render(&d).unwrap().into_iter().collect();
    let text = &files["manifests/secrets.yaml"];
    let want: serde_json::Map<String, Value> =
        sources.iter().map(|(k, s)| (k.clone(), json!(expected_placeholder(s)))).collect();
    assert_eq!(yaml_stream(text)[0]["stringData"], Value::Object(want.clone()), "{text}");
    if let Some(docs) = pyyaml(text) {
        assert_eq!(docs[0]["stringData"], Value::Object(want), "PyYAML\n{text}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn any_entrypoint_and_env_value_round_trips(entry in "\\PC*", value in "[ -~\\n\\t]*") {
        let mut d = hostile_model();
        d.jobs[0].entrypoint = entry.clone();
        d.jobs[0].env_vars = BTreeMap::from([("V".to_string(), value.clone())]);
        let files: BTreeMap<String, String> = raydeploy::render::manifests::render(&d).unwrap().into_iter().collect();
        let doc = yaml(&files["manifests/jobs/pytorch-mnist.yaml"]);
        proptest::prop_assert_eq!(doc["spec"]["entrypoint"].as_str(), Some(entry.as_str()));
        let env = yaml(doc["spec"]["runtimeEnvYAML"].as_str().unwrap());
        proptest::prop_assert_eq!(env["env_vars"]["V"].as_str(), Some(value.as_str()));
    }
}

/// The checks above would pass vacuously if the schema accepted anything: it must reject an
/// unknown (pruned) field, a wrong type, and a missing required field, and the rule checks must
/// reject what the operator rejects.
#[test]
fn validation_rejects_what_the_api_server_would() {
    let jobs = v1_schema(&crd("ray.io_rayjobs.yaml"));
    let base = json!({
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": { "name": "j", "namespace": "ns" },
        "spec": { "entrypoint": "python x.py", "clusterSelector": { "ray.io/cluster": "c" }, "shutdownAfterJobFinishes": false },
    });
    validate(&jobs, &base).unwrap();
    check_rayjob_rules(&base).unwrap();
    let with = |ptr: &str, v: Value| {
        let mut o = base.clone();
        *o.pointer_mut(ptr).unwrap_or_else(|| panic!("{ptr}")) = v;
        o
    };
    let mut typo = base.clone();
    typo["spec"]["entrypointNumCpu"] = json!(1);
    assert!(validate(&jobs, &typo).is_err(), "unknown field accepted");
    assert!(validate(&jobs, &with("/spec/entrypoint", json!(3))).is_err(), "wrong type accepted");
    let mut ttl = base.clone();
    ttl["spec"]["ttlSecondsAfterFinished"] = json!(60);
    assert!(check_rayjob_rules(&ttl).is_err(), "TTL without shutdown accepted");
    assert!(check_rayjob_rules(&with("/spec/clusterSelector", json!({}))).is_err(), "empty selector accepted");
    let mut ds = base.clone();
    ds["spec"]["deletionStrategy"] = json!({ "onSuccess": { "policy": "DeleteSelf" } });
    assert!(check_rayjob_rules(&ds).is_err(), "half a legacy deletionStrategy accepted");
    // A RayJob with its own cluster.
    let container = json!({ "name": "ray-head", "image": "rayproject/ray:2.52.0" });
    let mut own = base.clone();
    own["spec"].as_object_mut().unwrap().remove("clusterSelector");
    own["spec"]["shutdownAfterJobFinishes"] = json!(true);
    own["spec"]["ttlSecondsAfterFinished"] = json!(60);
    own["spec"]["rayClusterSpec"] =
        json!({ "headGroupSpec": { "rayStartParams": {}, "template": { "spec": { "containers": [container] } } } });
    validate(&jobs, &own).unwrap();
    check_rayjob_rules(&own).unwrap();
    let mut both = own.clone();
    both["spec"]["clusterSelector"] = json!({ "ray.io/cluster": "c" });
    assert!(check_rayjob_rules(&both).is_err(), "rayClusterSpec with a selector accepted");
    let mut kept = own.clone();
    kept["spec"]["shutdownAfterJobFinishes"] = json!(false);
    assert!(check_rayjob_rules(&kept).is_err(), "an own cluster that is never shut down accepted");
    let mut labels = own.clone();
    labels["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"] = json!({ "labels": "a=b" });
    assert!(check_rayjob_rules(&labels).is_err(), "rayStartParams labels accepted");
    let mut empty = own.clone();
    empty["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"] = json!([]);
    assert!(check_rayjob_rules(&empty).is_err(), "a head without containers accepted");
    let mut typo = own.clone();
    typo["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["nodeSelectors"] = json!({});
    assert!(validate(&jobs, &typo).is_err(), "unknown field in the pod template accepted");

    let clusters = v1_schema(&crd("ray.io_rayclusters.yaml"));
    let h = &helm::helms()[0];
    let text = helm::template(h, &helm::shared("kuberay/charts/ray-cluster"), "demo", "demo", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let rc = helm::object(&text, "RayCluster");
    validate(&clusters, &rc).unwrap_or_else(|e| panic!("chart defaults:\n{e}"));
    let mut bad = rc.clone();
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].as_object_mut().unwrap().remove("name");
    assert!(validate(&clusters, &bad).is_err(), "container without name accepted");
    let mut bad = rc.clone();
    bad["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{ "secretRef": { "name": "s", "bogus": 1 } }]);
    assert!(validate(&clusters, &bad).is_err(), "unknown nested field accepted");
}

/// A GPU head runs the GPU image; the submitter, which uploads the working dir, is pinned to the
/// CPU image, and the template is valid for the CRD and the operator.
#[test]
fn submitter_is_pinned_to_the_cpu_image_when_the_head_runs_another() {
    let schema = v1_schema(&crd("ray.io_rayjobs.yaml"));
    let mut d = model(&root().join("examples/pytorch-mnist-aks/raydeploy.yaml"), None);
    let job = raydeploy::render::manifests::rayjob::rayjob(&d, &d.jobs[0]).unwrap();
    assert!(job.spec.submitter_pod_template.is_none(), "the default submitter (head image) suffices");
    let cpu = d.image.cpu.clone().unwrap();
    d.cluster.head.image =
        raydeploy::model::ImageRef { repository: cpu.repository.clone(), tag: format!("{}-gpu", cpu.tag) };
    let files: BTreeMap<String, String> = raydeploy::render::manifests::render(&d).unwrap().into_iter().collect();
    let doc = yaml(&files["manifests/jobs/pytorch-mnist.yaml"]);
    validate(&schema, &doc).unwrap_or_else(|e| panic!("{e}\n{doc:#}"));
    check_rayjob_rules(&doc).unwrap();
    let c = &doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0];
    assert_eq!(c["image"], json!(cpu.reference()));
    assert_eq!(c["name"], "ray-job-submitter");
}
