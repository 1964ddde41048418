//! Every rendered values file through `helm template` of its real chart — kuberay-operator and
//! ray-cluster (KubeRay v1.7.0, `../shared/kuberay/charts`) and nvidia-device-plugin (v0.20.0,
//! `../shared/nvidia`) — with every real Helm of the test bed (helm3 and helm4, see
//! tests/support/helm.rs), for every shipped spec and environment and a GPU spec on target
//! kubernetes. Each must render, with no `null` anywhere in the output (a value the templates read
//! from a key the values leave unset, like a group image without `pullPolicy`) and no values key
//! the templates do not read (Helm ignores those silently). The ray-cluster release is also
//! rendered with the image pins deploy adds.

#[path = "support/helm.rs"]
mod helm;
#[path = "support/specs.rs"]
mod shipped;
#[path = "support/values_paths.rs"]
mod values_paths;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raydeploy::model::Deployment;
use serde_json::{Value, json};
use shipped::{SUBSCRIPTION, label, render};
use values_paths::Paths;

/// A GPU group on an existing cluster: the device plugin's values for target kubernetes.
const KUBERNETES_GPU_SPEC: &str = "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: kgpu\ntarget: kubernetes\n\
     kubernetes: { registry: ghcr.io/acme/kgpu }\nimage: { rayVersion: \"2.52.0\", python: \"3.11\" }\n\
     cluster:\n  head: { cpu: 2, memory: 8Gi }\n  workerGroups:\n    - { name: gpu, cpu: 4, memory: 16Gi, gpus: 1, replicas: 1 }\n";

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn model(spec: &Path, env: Option<&str>) -> Deployment {
    let vars = |k: &str| (k == "AZURE_SUBSCRIPTION_ID").then(|| SUBSCRIPTION.to_string());
    let loaded =
        raydeploy::spec::load(spec, env, &vars).unwrap_or_else(|r| panic!("{}: {}", spec.display(), r.short()));
    raydeploy::model::build(&loaded, None).unwrap_or_else(|p| panic!("{} builds: {p:?}", spec.display()))
}

/// A chart and the keys its templates read.
struct Chart {
    dir: PathBuf,
    paths: Paths,
}

fn charts() -> BTreeMap<&'static str, Chart> {
    let nvidia = helm::shared("nvidia/nvidia-device-plugin");
    BTreeMap::from([
        (
            "kuberay-operator",
            Chart { dir: helm::shared("kuberay/charts/kuberay-operator"), paths: Paths::load("kuberay-operator") },
        ),
        ("ray-cluster", Chart { dir: helm::shared("kuberay/charts/ray-cluster"), paths: Paths::load("ray-cluster") }),
        ("nvidia-device-plugin", Chart { paths: Paths::from_templates(&nvidia), dir: nvidia }),
    ])
}

/// Every spec to check: (label, spec path, environment); the scratch spec lives in `scratch`.
fn cases(scratch: &Path) -> Vec<(String, PathBuf, Option<&'static str>)> {
    let mut out: Vec<_> =
        shipped::specs(&["aks", "kubernetes"]).into_iter().map(|(spec, env)| (label(&spec, env), spec, env)).collect();
    let spec = scratch.join("raydeploy.yaml");
    std::fs::write(&spec, KUBERNETES_GPU_SPEC).unwrap();
    out.push(("kubernetes GPU spec".into(), spec, None));
    out
}

/// The chart, release, namespace and extra values files of a rendered values file, as deploy
/// installs it.
fn release_of(file: &str, d: &Deployment, out: &Path) -> (&'static str, String, String, Vec<PathBuf>) {
    match file {
        "kuberay-operator.values.yaml" => {
            ("kuberay-operator", d.operator.release.clone(), d.operator.namespace.clone(), vec![])
        }
        "ray-cluster.values.yaml" => {
            ("ray-cluster", d.cluster.name.clone(), d.cluster.namespace.clone(), vec![helm::deploy_pins(d, out)])
        }
        "nvidia-device-plugin.values.yaml" => {
            let p = d.device_plugin.as_ref().expect("device plugin values only with a device plugin");
            ("nvidia-device-plugin", p.release.clone(), p.namespace.clone(), vec![])
        }
        other => panic!("helm/{other} has no chart to check it with: add it here"),
    }
}

/// What is wrong with one values file under `helm template` of its chart (empty: nothing).
fn problems(h: &helm::Helm, chart: &Chart, release: &str, ns: &str, files: &[&Path]) -> Result<String, Vec<String>> {
    let mut bad = vec![];
    for f in files {
        let v = yaml(&std::fs::read_to_string(f).unwrap());
        bad.extend(
            chart.paths.uncovered(&v).into_iter().map(|k| format!("{}: key `{k}` is read by no template", f.display())),
        );
    }
    match helm::template(h, &chart.dir, release, ns, files) {
        Err(e) => bad.push(e),
        Ok(text) => {
            bad.extend(helm::nulls(&text).into_iter().map(|n| format!("null in the output: {n}")));
            if bad.is_empty() {
                return Ok(text);
            }
        }
    }
    Err(bad)
}

#[test]
fn every_values_file_renders_with_its_real_chart_without_nulls_or_unread_keys() {
    let helms = helm::helms();
    let charts = charts();
    let scratch = tempfile::tempdir().unwrap();
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = vec![];
    for (what, spec, env) in cases(scratch.path()) {
        let d = model(&spec, env);
        let out = render(&spec, env);
        let mut files: Vec<String> = std::fs::read_dir(out.path().join("helm"))
            .unwrap_or_else(|e| panic!("{what}: helm/: {e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        for file in files {
            let (chart, release, ns, extra) = release_of(&file, &d, out.path());
            let values = out.path().join("helm").join(&file);
            for h in &helms {
                // Alone, and (ray-cluster) with the second file deploy passes.
                let mut sets = vec![vec![values.as_path()]];
                if !extra.is_empty() {
                    sets.push(std::iter::once(values.as_path()).chain(extra.iter().map(PathBuf::as_path)).collect());
                }
                for set in sets {
                    match problems(h, &charts[chart], &release, &ns, &set) {
                        Ok(text) => check_output(&what, chart, &text, &d, &mut failures),
                        Err(bad) => failures.push(format!(
                            "{what}: {file} ({}, {} file(s)):\n  {}",
                            h.name,
                            set.len(),
                            bad.join("\n  ")
                        )),
                    }
                }
            }
            *checked.entry(chart).or_default() += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for c in charts.keys() {
        assert!(checked.get(c).copied().unwrap_or(0) > 0, "no spec rendered values for {c}: {checked:?}");
    }
}

/// What the real charts make of raydeploy's values: the settings arrive where they are meant to.
fn check_output(what: &str, chart: &str, text: &str, d: &Deployment, failures: &mut Vec<String>) {
    let mut expect = |ok: bool, msg: String| {
        if !ok {
            failures.push(format!("{what}: {chart}: {msg}"));
        }
    };
    match chart {
        "ray-cluster" => {
            let rc = helm::object(text, "RayCluster");
            let pods = std::iter::once(&rc["spec"]["headGroupSpec"])
                .chain(rc["spec"]["workerGroupSpecs"].as_array().into_iter().flatten())
                .map(|g| &g["template"]["spec"]);
            for pod in pods {
                for c in pod["containers"].as_array().into_iter().flatten() {
                    expect(
                        c["imagePullPolicy"] == "IfNotPresent",
                        format!("{} imagePullPolicy {}", c["name"], c["imagePullPolicy"]),
                    );
                }
            }
            expect(
                rc["metadata"]["name"] == json!(d.cluster.name),
                format!("RayCluster named {}", rc["metadata"]["name"]),
            );
        }
        "nvidia-device-plugin" => {
            let p = d.device_plugin.as_ref().unwrap();
            let ds = helm::docs(text).into_iter().find(|o| o["kind"] == "DaemonSet").expect("a DaemonSet");
            let spec = &ds["spec"]["template"]["spec"];
            let c = &spec["containers"][0];
            expect(c["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.20.0", format!("image {}", c["image"]));
            expect(c["imagePullPolicy"] == "IfNotPresent", format!("imagePullPolicy {}", c["imagePullPolicy"]));
            for t in &p.tolerations {
                let found = spec["tolerations"].as_array().into_iter().flatten().any(|x| x["key"] == json!(t.key));
                expect(found, format!("toleration {} missing: {}", t.key, spec["tolerations"]));
            }
            let terms = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
            let keys: Vec<&str> = terms
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["matchExpressions"][0]["key"].as_str())
                .collect();
            let want: Vec<&str> = p.node_labels.iter().map(|(k, _)| k.as_str()).collect();
            expect(keys == want, format!("node affinity keys {keys:?}, want {want:?}"));
            expect(
                ds["metadata"]["namespace"] == json!(p.namespace),
                format!("namespace {}", ds["metadata"]["namespace"]),
            );
        }
        _ => {}
    }
}

/// The checks would pass vacuously if helm rendered nothing or the checkers accepted anything:
/// a group image without a pull policy gives `imagePullPolicy: null`, an unknown key is reported,
/// the chart's own validation (no `default` namespace) fails the render.
#[test]
fn the_checks_catch_nulls_unread_keys_and_chart_errors() {
    let helms = helm::helms();
    let charts = charts();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let no_policy = file("ray.yaml", "worker:\n  groupName: w\n  image: { repository: r/ray, tag: '2.52.0' }\n");
    let typo = file("op.yaml", "image: { repository: quay.io/kuberay/operator, tag: v1.7.0, pullPolicey: Always }\n");
    let plain = file("dp.yaml", "image: { tag: v0.20.0 }\n");
    for h in &helms {
        let bad = problems(h, &charts["ray-cluster"], "demo", "ray", &[&no_policy]).unwrap_err();
        assert!(bad.iter().any(|b| b.contains("imagePullPolicy")), "{}: {bad:?}", h.name);
        let bad = problems(h, &charts["kuberay-operator"], "op", "kuberay", &[&typo]).unwrap_err();
        assert!(bad.iter().any(|b| b.contains("image.pullPolicey")), "{}: {bad:?}", h.name);
        let bad = problems(h, &charts["nvidia-device-plugin"], "dp", "default", &[&plain]).unwrap_err();
        assert!(bad.iter().any(|b| b.contains("default")), "{}: {bad:?}", h.name);
        let text = problems(h, &charts["nvidia-device-plugin"], "dp", "nvidia-device-plugin", &[&plain]).unwrap();
        assert!(text.contains("kind: DaemonSet"), "{}: {text}", h.name);
    }
}

/// The key list derived from templates agrees with the reference lists of the KubeRay charts
/// (their automatic part), so the nvidia chart's derived list is trustworthy.
#[test]
fn derived_key_lists_match_the_reference_lists() {
    for chart in ["kuberay-operator", "ray-cluster"] {
        let listed: Vec<String> = std::fs::read_to_string(helm::shared(&format!("kuberay/values-paths/{chart}.txt")))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let derived = values_paths::template_paths(&helm::shared(&format!("kuberay/charts/{chart}")));
        assert!(derived.len() > 10, "{chart}: {derived:?}");
        for p in &derived {
            assert!(listed.contains(p), "{chart}: {p} derived from the templates but not in the reference list");
        }
    }
    let nvidia = values_paths::template_paths(&helm::shared("nvidia/nvidia-device-plugin"));
    for p in ["image.repository", "image.tag", "image.pullPolicy", "tolerations", "affinity"] {
        assert!(nvidia.iter().any(|x| x == p), "{p} not in {nvidia:?}");
    }
}
