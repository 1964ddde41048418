//! The phase graph of a deploy: which phases a target has, what each waits for, and a hash of
//! each phase's inputs (its rendered artifacts and the model facts it uses). The runner adds the
//! outputs of upstream phases to that hash at run time (an image digest, a kubeconfig path), so
//! a phase re-runs exactly when something it consumes changed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::Deployment;
use crate::render::Rendered;
use crate::spec::Target;

/// One step of a deploy.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub id: &'static str,
    /// Phases that must complete first.
    pub deps: Vec<&'static str>,
    /// Changes something outside this machine's state folder (a cloud resource, a release, a
    /// process). Read-only phases (checks, waits) have `mutating: false`.
    pub mutating: bool,
    /// Runs on every deploy, whatever the state says (checks and waits).
    pub always: bool,
    /// What the phase does, for `--dry-run` and `status`.
    pub summary: &'static str,
    /// Hash of the phase's own inputs (hex).
    pub hash: String,
}

/// Phases in a topological order (every phase after its dependencies).
#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    pub target: Target,
    pub phases: Vec<Phase>,
}

/// What the user asked to include.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Add the `jobs` phase (submit every job after the cluster is ready).
    pub with_jobs: bool,
}

/// Hashes labelled parts: `(label, bytes)` pairs, order-sensitive.
#[derive(Default)]
pub struct Inputs {
    h: Sha256,
}

impl Inputs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(mut self, label: &str, bytes: impl AsRef<[u8]>) -> Self {
        let b = bytes.as_ref();
        self.h.update((label.len() as u64).to_le_bytes());
        self.h.update(label.as_bytes());
        self.h.update((b.len() as u64).to_le_bytes());
        self.h.update(b);
        self
    }

    /// Adds a serializable model value.
    pub fn value(self, label: &str, v: &impl Serialize) -> Self {
        self.add(label, serde_json::to_vec(v).expect("model serializes"))
    }

    /// Adds every rendered file under `prefix` (path and content).
    pub fn files(mut self, r: &Rendered, prefix: &str) -> Self {
        for (path, text) in r.files.range(prefix.to_string()..) {
            if !path.starts_with(prefix) {
                break;
            }
            self = self.add(path, text);
        }
        self
    }

    pub fn finish(self) -> String {
        hex(&self.h.finalize())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash a phase runs with: its own inputs plus what its direct dependencies produced.
pub fn effective_hash(phase: &Phase, upstream: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let mut i = Inputs::new().add("self", &phase.hash);
    for d in &phase.deps {
        if let Some(outs) = upstream.get(*d) {
            for (k, v) in outs {
                i = i.add(&format!("{d}.{k}"), v);
            }
        }
    }
    i.finish()
}

fn phase(id: &'static str, deps: &[&'static str], mutating: bool, summary: &'static str, hash: Inputs) -> Phase {
    Phase { id, deps: deps.to_vec(), mutating, always: false, summary, hash: hash.finish() }
}

fn check(id: &'static str, deps: &[&'static str], summary: &'static str, hash: Inputs) -> Phase {
    Phase { always: true, ..phase(id, deps, false, summary, hash) }
}

/// The phase graph of `d` for its target.
pub fn graph(d: &Deployment, r: &Rendered, opts: Options) -> Graph {
    let mut phases = match d.target {
        Target::Aks | Target::Kubernetes => kube_graph(d, r),
        Target::Local => local_graph(d),
    };
    // Ephemeral jobs are `run`'s, each on a cluster of its own.
    if opts.with_jobs && d.jobs.iter().any(|j| j.ephemeral.is_none()) {
        // The jobs' code is in the image (their folders are copied into it), not in their
        // manifests: a change to it changes the image's content hash.
        let jobs = Inputs::new()
            .value("jobs", &d.jobs)
            .files(r, "manifests/jobs/")
            .value("image", &(&d.image.content_hash, &d.image.cpu, &d.image.gpu));
        phases.push(phase("jobs", &["ready"], true, "submit every job and wait for its result", jobs));
    }
    Graph { target: d.target, phases }
}

/// What `raydeploy run` brings up to date before an ephemeral job: the deploy's phases without
/// the long-running cluster (`cluster`, `ready`; on target local `head` and `workers` too, as
/// `run` starts the job's own cluster) and without `jobs`.
pub fn prerequisites(d: &Deployment, r: &Rendered) -> Graph {
    let mut g = graph(d, r, Options::default());
    g.phases.retain(|p| !matches!(p.id, "cluster" | "ready" | "head" | "workers"));
    g
}

fn kube_graph(d: &Deployment, r: &Rendered) -> Vec<Phase> {
    let aks = d.target == Target::Aks;
    let mut v = vec![check("preflight", &[], "tools, account and secret sources usable; spec valid", Inputs::new())];
    if aks {
        v.push(phase(
            "infra",
            &["preflight"],
            true,
            "terraform init, plan -out, apply of that plan",
            Inputs::new().files(r, "terraform/"),
        ));
    }
    let image = Inputs::new().files(r, "image/").value("image", &(&d.image.content_hash, &d.image.cpu, &d.image.gpu));
    v.push(phase("image-build", &["preflight"], true, "docker build of the Ray image (CPU and GPU tags)", image));
    let push_deps: &[&'static str] = if aks { &["image-build", "infra"] } else { &["image-build"] };
    v.push(phase("image-push", push_deps, true, "docker push to the registry; record the digest", Inputs::new()));
    let kube_root: &'static str = if aks {
        // Writes the deployment's own kubeconfig (in the state folder) from a read of the
        // cluster's credentials: nothing outside this machine changes.
        v.push(phase(
            "credentials",
            &["infra"],
            false,
            "az aks get-credentials into the deployment's own kubeconfig",
            Inputs::new().value("aks", &d.azure.as_ref().map(|a| (&a.resource_group, &a.aks_name))),
        ));
        "credentials"
    } else {
        "preflight"
    };
    let op = &d.operator;
    v.push(phase(
        "crds",
        &[kube_root],
        true,
        "kubectl apply --server-side of the KubeRay CRDs",
        Inputs::new().value("operator", &op.version),
    ));
    v.push(phase(
        "operator",
        &["crds"],
        true,
        "helm upgrade --install kuberay-operator",
        Inputs::new().files(r, "helm/kuberay-operator").value("operator", op),
    ));
    v.push(phase(
        "secrets",
        &[kube_root],
        true,
        "resolve secret values and kubectl apply them from stdin",
        Inputs::new().files(r, "manifests/secrets").value("secrets", &d.secrets),
    ));
    v.push(phase(
        "mounts",
        &[kube_root],
        true,
        "kubectl apply of storage volumes and claims",
        Inputs::new().files(r, "manifests/mounts"),
    ));
    // The ray-cluster release goes in once the operator is installed, as KubeRay's guides order
    // them: the operator starts while Helm installs the cluster, and the API server is not still
    // taking the CRDs (a 2-core machine spent the time of both Helm installs on them).
    let mut cluster_deps = vec!["crds", "operator", "secrets", "mounts", "image-push"];
    if let Some(p) = &d.device_plugin {
        v.push(phase(
            "device-plugin",
            &[kube_root],
            true,
            "helm upgrade --install nvidia-device-plugin, unless the cluster already runs a device plugin",
            Inputs::new().files(r, "helm/nvidia-device-plugin").value("device_plugin", p),
        ));
        cluster_deps.push("device-plugin");
    }
    v.push(phase(
        "cluster",
        &cluster_deps,
        true,
        "helm upgrade --install ray-cluster",
        Inputs::new().files(r, "helm/ray-cluster"),
    ));
    v.push(check(
        "ready",
        &["cluster", "operator"],
        "wait for the RayCluster and its head pod to be ready",
        Inputs::new(),
    ));
    v
}

fn local_graph(d: &Deployment) -> Vec<Phase> {
    let img = &d.image;
    vec![
        phase(
            "env",
            &[],
            true,
            "virtual environment with ray[default] and the spec's pip packages",
            Inputs::new().value("env", &(&img.ray_version, &img.python, &img.pip_packages)),
        ),
        phase(
            "head",
            &["env"],
            true,
            "ray start --head on free loopback ports",
            Inputs::new().value("head", &d.cluster.head).value("env", &d.cluster.env),
        ),
        phase(
            "workers",
            &["head"],
            true,
            "ray start --address, one per replica per group",
            Inputs::new().value("workers", &d.cluster.workers).value("env", &d.cluster.env),
        ),
        check("ready", &["workers"], "wait until every node is alive", Inputs::new()),
    ]
}

impl Graph {
    pub fn get(&self, id: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.id == id)
    }

    /// Phases grouped by depth: every phase of a level can run at the same time.
    pub fn levels(&self) -> Vec<Vec<&Phase>> {
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &self.phases {
            let d = p.deps.iter().filter_map(|d| depth.get(d)).map(|d| d + 1).max().unwrap_or(0);
            depth.insert(p.id, d);
        }
        let n = depth.values().max().map_or(0, |m| m + 1);
        let mut levels = vec![vec![]; n];
        for p in &self.phases {
            levels[depth[p.id]].push(p);
        }
        levels
    }

    /// The longest chain of `weight`s through the graph (the least possible wall time).
    pub fn critical_path(&self, weight: impl Fn(&str) -> f64) -> f64 {
        let mut finish: BTreeMap<&str, f64> = BTreeMap::new();
        for p in &self.phases {
            let start = p.deps.iter().filter_map(|d| finish.get(d)).fold(0.0, |a: f64, b| a.max(*b));
            finish.insert(p.id, start + weight(p.id));
        }
        finish.values().fold(0.0, |a: f64, b| a.max(*b))
    }

    /// `id` and every phase that (transitively) depends on it.
    pub fn downstream(&self, id: &str) -> BTreeSet<&'static str> {
        let mut out = BTreeSet::new();
        for p in &self.phases {
            if p.id == id || p.deps.iter().any(|d| out.contains(d)) {
                out.insert(p.id);
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The graph of examples/gpu-autoscaling, optionally with `gpu.devicePlugin: false` and
    /// another target.
    fn gpu_example(device_plugin: bool, target: Option<Target>) -> Graph {
        let dir = tempfile::tempdir().unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gpu-autoscaling/raydeploy.yaml");
        let mut text = std::fs::read_to_string(src).unwrap();
        if !device_plugin {
            text.push_str("gpu:\n  devicePlugin: false\n");
        }
        let spec = dir.path().join("raydeploy.yaml");
        std::fs::write(&spec, text).unwrap();
        let vars = |k: &str| (k == "AZURE_SUBSCRIPTION_ID").then(|| "00000000-0000-0000-0000-000000000000".to_string());
        let loaded = crate::spec::load(&spec, None, &vars).unwrap_or_else(|r| panic!("{}", r.short()));
        let d = crate::model::build(&loaded, target).unwrap();
        graph(&d, &crate::render::render(&d).unwrap(), Options::default())
    }

    #[test]
    fn gpu_groups_get_the_device_plugin_before_the_cluster() {
        let g = gpu_example(true, None);
        let p = g.get("device-plugin").expect("device-plugin phase");
        assert_eq!(p.deps, vec!["credentials"]);
        assert!(g.get("cluster").unwrap().deps.contains(&"device-plugin"));
        assert!(g.get("device-plugin").is_some_and(|p| p.mutating));
        assert!(gpu_example(false, None).get("device-plugin").is_none(), "gpu.devicePlugin: false");
        assert!(!gpu_example(false, None).get("cluster").unwrap().deps.contains(&"device-plugin"));
        assert!(gpu_example(true, Some(Target::Local)).get("device-plugin").is_none(), "no plugin for local processes");
    }

    /// A deployment with one job whose folder holds `code`, loaded from `dir`.
    pub(crate) fn with_job(dir: &std::path::Path, code: &str) -> (Deployment, Rendered) {
        std::fs::create_dir_all(dir.join("jobs/hello")).unwrap();
        std::fs::write(dir.join("jobs/hello/hello.py"), code).unwrap();
        let spec = dir.join("raydeploy.yaml");
        std::fs::write(
            &spec,
            "apiVersion: raydeploy/v1\nkind: RayDeployment\nname: hashes\ntarget: kubernetes\n\
             kubernetes: { registry: 127.0.0.1:5000/hashes }\nimage: { rayVersion: \"2.52.0\", python: \"3.12\" }\n\
             cluster: { head: { cpu: 1, memory: 2Gi } }\n\
             jobs:\n  - { name: hello, entrypoint: python hello.py, workingDir: ./jobs/hello }\n",
        )
        .unwrap();
        let loaded = crate::spec::load(&spec, None, &|_: &str| None).unwrap_or_else(|r| panic!("{}", r.short()));
        let d = crate::model::build(&loaded, None).unwrap();
        let r = crate::render::render(&d).unwrap();
        (d, r)
    }

    #[test]
    fn a_change_to_a_jobs_code_changes_the_jobs_phase() {
        let dir = tempfile::tempdir().unwrap();
        let hash = |code: &str| {
            let (d, r) = with_job(dir.path(), code);
            graph(&d, &r, Options { with_jobs: true }).get("jobs").expect("jobs phase").hash.clone()
        };
        let first = hash("print('hello')\n");
        assert_eq!(first, hash("print('hello')\n"));
        assert_ne!(first, hash("print('hello, world')\n"), "the job's code is one of its inputs");
    }

    #[test]
    fn the_cluster_release_goes_in_after_the_operator() {
        let g = gpu_example(true, None);
        let cluster = &g.get("cluster").unwrap().deps;
        assert!(cluster.contains(&"crds") && cluster.contains(&"operator"), "{cluster:?}");
        assert_eq!(g.get("ready").unwrap().deps, vec!["cluster", "operator"]);
        assert_eq!(g.get("operator").unwrap().deps, vec!["crds"]);
    }

    #[test]
    fn inputs_are_unambiguous() {
        assert_ne!(Inputs::new().add("a", "bc").finish(), Inputs::new().add("ab", "c").finish());
    }
}
