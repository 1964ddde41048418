//! From a loaded spec to the [`Deployment`]: derived names, node pools, pod sizing and every
//! cross-layer rule of SPEC.md. All problems are collected, each with the field it concerns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path as FsPath, PathBuf};

use sha2::{Digest, Sha256};

use super::azure::{self, VmShape};
use super::names;
use super::*;
use crate::spec::paths::{self, PathError};
use crate::spec::quantity::{GI, format_cpu, format_memory, gib};
use crate::spec::{self, CpuRequest, Loaded, MemoryRequest, Problem, Problems, Target};

/// KubeRay versions raydeploy renders values for, and the oldest Ray each supports.
pub const KUBERAY_SUPPORT: &[(&str, &str)] = &[("1.6", "2.9.0"), ("1.7", "2.9.0")];
/// Python versions the rayproject/ray images are published for.
pub const PYTHON_VERSIONS: &[&str] = &["3.9", "3.10", "3.11", "3.12", "3.13"];
/// Max deployment name length (it prefixes every derived name).
pub const MAX_NAME: usize = 40;
/// Nodes an AKS node pool can have.
pub const AKS_MAX_POOL_NODES: u32 = 1000;
/// Where job folders are copied inside the image.
pub const JOBS_DIR: &str = "/home/ray/jobs";
/// Default for `cpu/memory: auto` when there is no VM to size for (target local).
const LOCAL_DEFAULT_CPU_M: u64 = 1000;
const LOCAL_DEFAULT_MEM: u64 = 2 * GI;

/// Builds the model; `target` overrides the spec's target (`--target`).
pub fn build(loaded: &Loaded, target: Option<Target>) -> Result<Deployment, Problems> {
    let mut b = Builder {
        spec: &loaded.spec,
        dir: &loaded.dir,
        job_limits: loaded.job_limits,
        job_paths: BTreeMap::new(),
        problems: Problems::default(),
        warnings: vec![],
        demand: vec![],
    };
    b.warnings.extend(default_ray_version_warning(loaded));
    let target = target.unwrap_or(loaded.spec.target);
    let d = b.deployment(&loaded.deployment, loaded.env.clone(), target);
    if b.problems.is_empty() { Ok(Deployment { warnings: b.warnings, ..d }) } else { Err(b.problems) }
}

/// `image.rayVersion` left out: the default is this raydeploy's, so an upgrade of raydeploy
/// could change the cluster's Ray version. It stays optional (SPEC.md's contract does not require
/// it, and specs without it keep working), but every command says which version it chose, at the
/// `image` section (or the top of the spec).
fn default_ray_version_warning(loaded: &Loaded) -> Option<String> {
    let image = loaded.doc.get("image");
    if image.and_then(|i| i.get("rayVersion")).is_some() {
        return None;
    }
    let loc = match image {
        Some(_) => loaded.doc.locate_key(&spec::Path::parse("image")),
        None => loaded.doc.loc,
    };
    Some(format!(
        "{}:{}:{}: image.rayVersion is not set: using Ray {} (this raydeploy's default, which a raydeploy upgrade \
         may change); set image.rayVersion: \"{}\" to pin it",
        loaded.sources.name(loc.source),
        loc.line,
        loc.col,
        loaded.spec.image.ray_version,
        loaded.spec.image.ray_version
    ))
}

struct Builder<'a> {
    spec: &'a spec::Spec,
    dir: &'a FsPath,
    job_limits: paths::Limits,
    /// Each job's `workingDir`, resolved (by job index).
    job_paths: BTreeMap<usize, PathBuf>,
    problems: Problems,
    warnings: Vec<String>,
    /// What each group's pool holds beyond the long-running cluster (index 0: the head).
    demand: Vec<PoolDemand>,
}

impl Builder<'_> {
    fn err(&mut self, path: impl std::fmt::Display, msg: impl Into<String>, help: Option<String>) {
        let mut p = Problem::new(path, msg);
        p.help = help;
        self.problems.push(p);
    }

    /// A spec path that broke the rule of [`paths`].
    fn path_err(&mut self, field: &str, e: PathError) {
        self.err(field, e.message, Some(e.help));
    }

    fn check_name(&mut self, path: &str, value: &str, rule: fn(&str) -> Result<(), String>, what: &str) {
        if let Err(e) = rule(value) {
            self.err(path, format!("`{value}` {e}"), Some(format!("choose a valid {what}")));
        }
    }

    fn deployment(&mut self, name: &str, env: Option<String>, target: Target) -> Deployment {
        let s = self.spec;
        if let Err(e) = names::dns1123_label(name) {
            self.err(
                "name",
                format!("deployment name `{name}` {e}"),
                Some("use lowercase letters, digits and -".into()),
            );
        } else if name.len() > MAX_NAME {
            let why = if env.is_some() {
                format!(" (the environment adds `-{}`)", env.as_deref().unwrap_or(""))
            } else {
                String::new()
            };
            self.err(
                "name",
                format!(
                    "deployment name `{name}` is {} characters long{why}; at most {MAX_NAME} are allowed",
                    name.len()
                ),
                Some("it prefixes every derived name: shorten it".into()),
            );
        }
        let spec_hash = short_hash(&serde_json::to_vec(&(s, &env, target.as_str())).unwrap_or_default());

        match target {
            Target::Aks if s.azure.is_none() => self.err(
                "target",
                "target `aks` needs an `azure` section",
                Some("add azure: { location: … } or choose another target".into()),
            ),
            Target::Kubernetes if s.kubernetes.is_none() => self.err(
                "target",
                "target `kubernetes` needs a `kubernetes` section with the image `registry`",
                Some("add kubernetes: { registry: docker.io/acme/ray }".into()),
            ),
            _ => {}
        }
        if let Some(k) = s.kubernetes.as_ref().filter(|_| target == Target::Kubernetes)
            && let Err(e) = names::image_repository(&k.registry)
        {
            self.err(
                "kubernetes.registry",
                format!("`{}` {e}", k.registry),
                Some("give the repository only, e.g. registry: docker.io/acme/ray".into()),
            );
        }
        if target != Target::Aks && s.azure.is_some() && s.target != Target::Aks {
            self.warnings.push(format!("`azure` is ignored: the target is `{}`", target.as_str()));
        }

        self.versions();
        self.check_name("cluster.namespace", &s.cluster.namespace, names::dns1123_label, "namespace (DNS-1123 label)");
        self.check_name("kuberay.namespace", &s.kuberay.namespace, names::dns1123_label, "namespace (DNS-1123 label)");
        for k in s.cluster.env.keys() {
            if let Err(e) = names::env_var(k) {
                self.err(format!("cluster.env.{k}"), format!("`{k}` {e}"), Some("rename it, e.g. LOG_LEVEL".into()));
            }
        }

        let azure_ctx = if target == Target::Aks { s.azure.as_ref() } else { None };
        let max_pods = azure_ctx
            .map(|a| a.network.max_pods.unwrap_or_else(|| azure::default_max_pods(a.network.plugin, a.network.mode)));
        let k8s = azure_ctx.and_then(|a| a.kubernetes_version.as_deref()).and_then(azure::k8s_minor);

        let image = self.image(name, target);
        let mut head = self.group_head(&image, target, max_pods, k8s);
        let mut workers = self.workers(&image, target, max_pods, k8s);
        let plans = self.ephemeral_plans(&workers);
        self.demand = self.pool_demand(&workers, &plans);
        let azure_model = azure_ctx.map(|a| self.azure(name, a, &mut head, &mut workers, max_pods.unwrap_or(250), k8s));
        let ephemeral = ephemeral_clusters(&head, &workers, plans);
        // The long-running cluster leaves out the groups only ephemeral jobs use.
        let (mut ephemeral_only, mut shared) = (vec![], vec![]);
        for (g, w) in workers.into_iter().zip(&s.cluster.worker_groups) {
            if w.ephemeral_only { ephemeral_only.push(g) } else { shared.push(g) }
        }
        let workers = shared;
        let secrets = self.secrets();
        let mounts = self.mounts(name, &secrets);
        let jobs = self.jobs(&head, &workers, ephemeral, target);

        let cluster = ClusterModel {
            namespace: s.cluster.namespace.clone(),
            name: name.to_string(),
            head_service: format!("{name}-head-svc"),
            head,
            workers,
            autoscaler: s.cluster.autoscaler.clone(),
            env: s.cluster.env.clone(),
            mounts,
            env_from_secrets: secrets.iter().filter(|s| s.expose_as_env).map(|s| s.name.clone()).collect(),
            ephemeral_only,
        };
        if let Err(e) = names::dns1035_label(name) {
            self.err(
                "name",
                format!("the RayCluster would be named `{name}`, which {e}"),
                Some("KubeRay requires a DNS-1035 name: start it with a letter".into()),
            );
        }
        Deployment {
            name: name.to_string(),
            env,
            target,
            spec_hash,
            dir: self.dir.to_path_buf(),
            azure: azure_model,
            kubernetes: if target == Target::Kubernetes {
                s.kubernetes
                    .as_ref()
                    .map(|k| KubernetesModel { context: k.context.clone(), registry: k.registry.clone() })
            } else {
                None
            },
            image,
            operator: OperatorModel {
                version: s.kuberay.version.clone(),
                namespace: s.kuberay.namespace.clone(),
                release: "kuberay-operator".into(),
                charts: self.chart_source(),
            },
            device_plugin: self.device_plugin(target, &cluster),
            cluster,
            secrets,
            jobs,
            warnings: vec![],
            spec: s.clone(),
        }
    }

    /// `kuberay.charts`: a repository URL, an OCI path, or a folder inside the spec's folder
    /// holding `kuberay-operator/` and `ray-cluster/` at `kuberay.version`.
    fn chart_source(&mut self) -> ChartSource {
        let k = &self.spec.kuberay;
        let (at, version) = (k.charts.clone(), k.version.clone());
        self.charts_at("kuberay.charts", at.as_deref(), KUBERAY_REPO, &["kuberay-operator", "ray-cluster"], &version)
    }

    /// A chart source setting (`field`): a repository URL, an OCI path, or a folder inside the
    /// spec's folder holding a folder per chart of `charts`, each at `version`; `default` (a
    /// repository URL) when unset. Problems are reported against `field`.
    fn charts_at(
        &mut self,
        field: &str,
        at: Option<&str>,
        default: &str,
        charts: &[&str],
        version: &str,
    ) -> ChartSource {
        let Some(at) = at else { return ChartSource::Repo(default.into()) };
        if at.starts_with("https://") || at.starts_with("http://") {
            return ChartSource::Repo(at.into());
        }
        if let Some(rest) = at.strip_prefix("oci://") {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                self.err(
                    field,
                    format!("`{at}` is not an OCI reference"),
                    Some("e.g. oci://myregistry.azurecr.io/helm".into()),
                );
            }
            return ChartSource::Oci(at.into());
        }
        let dir = match paths::resolve(self.dir, at, paths::Kind::Folder) {
            Ok(r) => r.path,
            Err(e) => {
                self.err(
                    field,
                    e.message,
                    Some(format!("{}; or give a Helm repository URL (https://…) or an OCI path (oci://…)", e.help)),
                );
                return ChartSource::Dir(self.dir.join(at));
            }
        };
        for chart in charts {
            let rel = format!("{at}/{chart}/Chart.yaml");
            let text = match paths::read_text(self.dir, &rel, paths::MAX_TEXT_BYTES) {
                Ok((_, text)) => text,
                Err(e) => {
                    self.err(field, format!("`{at}` has no chart {chart}: {}", e.message), None);
                    continue;
                }
            };
            let found = text
                .lines()
                .find_map(|l| l.strip_prefix("version:"))
                .map(|v| v.trim().trim_matches(['"', '\'']))
                .unwrap_or("");
            if found.trim_start_matches('v') != version.trim_start_matches('v') {
                let fix = if field == "kuberay.charts" {
                    "use the charts of kuberay.version, or set kuberay.version to theirs".to_string()
                } else {
                    format!("use {chart} {version}, the version raydeploy pins")
                };
                let wanted = if field == "kuberay.charts" {
                    format!("kuberay.version is {version}")
                } else {
                    format!("raydeploy installs {version}")
                };
                self.err(field, format!("chart {chart} in `{at}` is version {found}, {wanted}"), Some(fix));
            }
        }
        ChartSource::Dir(dir)
    }

    /// The NVIDIA device plugin, when a GPU group runs on a Kubernetes target and the spec does
    /// not turn it off. On AKS it runs on raydeploy's GPU pools (their label); on another cluster
    /// on nodes that carry a GPU node label ([`GPU_NODE_LABELS`]). It tolerates the GPU taint
    /// (any value) and the Spot taint of AKS. `gpu.charts` is checked whenever it is set.
    fn device_plugin(&mut self, target: Target, cluster: &ClusterModel) -> Option<DevicePluginModel> {
        let at = self.spec.gpu.charts.clone();
        let charts =
            self.charts_at("gpu.charts", at.as_deref(), NVIDIA_REPO, &[DEVICE_PLUGIN_CHART], DEVICE_PLUGIN_VERSION);
        let gpus = cluster.all_groups().any(RayGroup::is_gpu);
        if target == Target::Local || !gpus || !self.spec.gpu.device_plugin {
            return None;
        }
        let node_labels = if target == Target::Aks {
            vec![(GPU_LABEL.to_string(), "true".to_string())]
        } else {
            GPU_NODE_LABELS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        Some(DevicePluginModel {
            chart: DEVICE_PLUGIN_CHART,
            version: DEVICE_PLUGIN_VERSION,
            namespace: DEVICE_PLUGIN_NAMESPACE.into(),
            release: DEVICE_PLUGIN_RELEASE.into(),
            node_labels,
            tolerations: vec![
                Toleration {
                    key: GPU_TAINT_KEY.into(),
                    operator: "Exists".into(),
                    value: None,
                    effect: "NoSchedule".into(),
                },
                Toleration {
                    key: SPOT_TAINT_KEY.into(),
                    operator: "Equal".into(),
                    value: Some("spot".into()),
                    effect: "NoSchedule".into(),
                },
            ],
            charts,
        })
    }

    fn versions(&mut self) {
        let s = self.spec;
        let ray = parse_semver(&s.image.ray_version);
        if ray.is_none() {
            self.err(
                "image.rayVersion",
                format!("`{}` is not a Ray release version (X.Y.Z)", s.image.ray_version),
                Some("e.g. rayVersion: \"2.52.0\"".into()),
            );
        }
        if !PYTHON_VERSIONS.contains(&s.image.python.as_str()) {
            self.err(
                "image.python",
                format!("Python `{}` has no rayproject/ray image", s.image.python),
                Some(format!("use one of {}", PYTHON_VERSIONS.join(", "))),
            );
        }
        let kr = parse_semver(&s.kuberay.version);
        let support = kr.and_then(|(ma, mi, _)| KUBERAY_SUPPORT.iter().find(|(v, _)| *v == format!("{ma}.{mi}")));
        match (support, ray) {
            (None, _) => self.err(
                "kuberay.version",
                format!("KubeRay `{}` is not supported", s.kuberay.version),
                Some(format!(
                    "use one of {}",
                    KUBERAY_SUPPORT.iter().map(|(v, _)| format!("{v}.x")).collect::<Vec<_>>().join(", ")
                )),
            ),
            (Some((kv, min_ray)), Some(rv)) if rv < parse_semver(min_ray).unwrap_or_default() || rv.0 != 2 => self.err(
                "image.rayVersion",
                format!("KubeRay {kv} supports Ray {min_ray} to 2.x; rayVersion is {}", s.image.ray_version),
                Some(format!("use rayVersion {min_ray} or later")),
            ),
            _ => {}
        }
    }

    fn image(&mut self, name: &str, target: Target) -> ImageModel {
        let s = &self.spec.image;
        for (i, p) in s.pip_packages.iter().enumerate() {
            if p.trim().is_empty() || p.contains(['\n', '\r']) || p.trim_start().starts_with('-') {
                self.err(
                    format!("image.pipPackages[{i}]"),
                    format!("{p:?} is not a pip requirement"),
                    Some("one requirement per entry, e.g. \"xgboost==2.1.1\"; no options or line breaks".into()),
                );
            }
        }
        for (i, p) in s.apt_packages.iter().enumerate() {
            if let Err(e) = names::apt_package(p) {
                self.err(
                    format!("image.aptPackages[{i}]"),
                    format!("`{p}` {e}"),
                    Some("e.g. unixodbc-dev or curl=7.88.1-10".into()),
                );
            }
        }
        let python_tag = format!("py{}", s.python.replace('.', ""));
        let base_tag = format!("{}-{python_tag}", s.ray_version);
        let mut hasher = Sha256::new();
        hasher.update(serde_json::to_vec(s).unwrap_or_default());
        let dockerfile = s.dockerfile.as_ref().map(|f| self.dir.join(f));
        let mut dockerfile_text = None;
        if let Some(f) = &s.dockerfile {
            match paths::read_text(self.dir, f, paths::MAX_TEXT_BYTES) {
                Ok((_, text)) => {
                    hasher.update(text.as_bytes());
                    self.check_custom_dockerfile(&text);
                    dockerfile_text = Some(text);
                }
                Err(e) => self.path_err("image.dockerfile", e),
            }
        }
        match paths::template_override(self.dir, crate::render::dockerfile::TEMPLATE) {
            Ok(Some(t)) => hasher.update(t.as_bytes()),
            Ok(None) => {}
            Err(e) => self.path_err("", e),
        }
        let mut job_dirs = vec![];
        for (i, j) in self.spec.jobs.iter().enumerate() {
            let Some(wd) = &j.working_dir else { continue };
            let field = format!("jobs[{i}].workingDir");
            let resolved = match paths::resolve(self.dir, wd, paths::Kind::Folder) {
                Ok(r) => r,
                Err(e) => {
                    self.path_err(&field, e);
                    continue;
                }
            };
            // The state folder is never part of a job (nor of the staged build context).
            let state = self.dir.canonicalize().ok().map(|d| d.join(".raydeploy"));
            let hashing = target != Target::Local;
            let dst = format!("{JOBS_DIR}/{}", j.name);
            if hashing {
                hasher.update(dst.as_bytes());
            }
            match paths::walk_tree(
                &resolved.path,
                state.as_deref(),
                self.job_limits,
                if hashing { Some(&mut hasher) } else { None },
            ) {
                Ok(tree) if target == Target::Local => {
                    // Ray's upload of a working dir follows links: only links to files of the folder.
                    if let Some(l) = tree.links.iter().find(|l| !l.regular_inside) {
                        self.err(
                            &field,
                            format!(
                                "`{wd}` holds `{}`, a link to {} that does not lead to a file of the folder; Ray's upload follows links",
                                l.rel,
                                l.target.display()
                            ),
                            Some("on target local, a job folder's links must point at files inside it: copy the file in or remove the link".into()),
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.path_err(&field, PathError { message: format!("job folder `{wd}`: {}", e.message), ..e });
                    continue;
                }
            }
            self.job_paths.insert(i, resolved.path.clone());
            if hashing {
                job_dirs.push((wd.clone(), dst));
            }
        }
        let content_hash = hex(&hasher.finalize())[..12].to_string();
        let repository = match target {
            Target::Aks => self.spec.azure.as_ref().map(|a| {
                let acr = a.registry.name.clone().unwrap_or_else(|| names::default_acr(name));
                format!("{}.azurecr.io/{name}", acr.to_lowercase())
            }),
            Target::Kubernetes => self.spec.kubernetes.as_ref().map(|k| k.registry.clone()),
            Target::Local => None,
        };
        let needs_gpu = self.spec.cluster.worker_groups.iter().any(|g| g.gpus > 0);
        let cpu =
            repository.as_ref().map(|r| ImageRef { repository: r.clone(), tag: format!("{base_tag}-{content_hash}") });
        let gpu = if needs_gpu {
            repository
                .as_ref()
                .map(|r| ImageRef { repository: r.clone(), tag: format!("{base_tag}-gpu-{content_hash}") })
        } else {
            None
        };
        ImageModel {
            ray_version: s.ray_version.clone(),
            python: s.python.clone(),
            python_tag,
            base: s.base.clone(),
            base_tag_gpu: format!("{base_tag}-gpu"),
            base_tag,
            apt_packages: s.apt_packages.clone(),
            pip_packages: s.pip_packages.clone(),
            dockerfile,
            dockerfile_text,
            repository,
            content_hash,
            cpu,
            gpu,
            job_dirs,
        }
    }

    /// A custom Dockerfile built on rayproject/ray must use the spec's Ray version.
    fn check_custom_dockerfile(&mut self, text: &str) {
        for line in text.lines() {
            let l = line.trim();
            let Some(from) = l.strip_prefix("FROM ").or_else(|| l.strip_prefix("from ")) else { continue };
            let image = from.split_whitespace().find(|w| !w.starts_with("--")).unwrap_or("");
            if let Some((_, tag)) = image.rsplit_once(':')
                && image.contains("ray")
                && !tag.contains('$')
            {
                let v = tag.split('-').next().unwrap_or("");
                if parse_semver(v).is_some() && v != self.spec.image.ray_version {
                    self.err(
                        "image.dockerfile",
                        format!(
                            "the Dockerfile builds FROM Ray {v} but image.rayVersion is {}",
                            self.spec.image.ray_version
                        ),
                        Some("the cluster, the autoscaler and the image must run one Ray version: align them".into()),
                    );
                }
            }
        }
    }

    fn group_head(
        &mut self,
        image: &ImageModel,
        target: Target,
        max_pods: Option<u32>,
        k8s: Option<(u32, u32)>,
    ) -> RayGroup {
        let h = &self.spec.cluster.head;
        let mut params = BTreeMap::from([("dashboard-host".to_string(), "0.0.0.0".to_string())]);
        params.extend(self.start_params("cluster.head", &h.ray_start_params));
        let mut g = RayGroup {
            name: "head".into(),
            role: Role::Head,
            spec_path: "cluster.head".into(),
            cpu_m: 0,
            memory_bytes: 0,
            gpus: 0,
            replicas: 1,
            min_replicas: 1,
            max_replicas: 1,
            spot: false,
            pool: None,
            vm_size: h.vm_size.clone(),
            fit: None,
            image: image.cpu.clone().unwrap_or_else(|| local_image(image)),
            ray_start_params: params,
            node_selector: BTreeMap::new(),
            tolerations: vec![],
        };
        if target == Target::Aks && h.vm_size.is_none() {
            self.err(
                "cluster.head.vmSize",
                "the head needs a `vmSize` on target aks (it gets its own node pool)",
                Some("e.g. vmSize: Standard_D8s_v5".into()),
            );
        }
        self.size(&mut g, h.cpu, h.memory, target, max_pods, k8s);
        g
    }

    fn workers(
        &mut self,
        image: &ImageModel,
        target: Target,
        max_pods: Option<u32>,
        k8s: Option<(u32, u32)>,
    ) -> Vec<RayGroup> {
        let mut seen = BTreeSet::new();
        let mut out = vec![];
        for (i, w) in self.spec.cluster.worker_groups.iter().enumerate() {
            let path = format!("cluster.workerGroups[{i}]");
            if let Err(e) = names::dns1123_label(&w.name) {
                self.err(
                    format!("{path}.name"),
                    format!("`{}` {e}", w.name),
                    Some("worker group names are DNS-1123 labels".into()),
                );
            } else if w.name == "head" {
                self.err(
                    format!("{path}.name"),
                    "`head` is reserved for the head group",
                    Some("choose another name".into()),
                );
            }
            if !seen.insert(w.name.clone()) {
                self.err(
                    format!("{path}.name"),
                    format!("worker group `{}` is defined twice", w.name),
                    Some("group names must be unique".into()),
                );
            }
            let min = w.min_replicas.unwrap_or(w.replicas);
            let max = w.max_replicas.unwrap_or(w.replicas.max(min));
            if min > w.replicas || w.replicas > max {
                self.err(
                    format!("{path}.replicas"),
                    format!("needs minReplicas <= replicas <= maxReplicas; got {min} <= {} <= {max}", w.replicas),
                    Some("adjust replicas or its bounds".into()),
                );
            }
            if max == 0 {
                self.err(
                    format!("{path}.maxReplicas"),
                    "maxReplicas is 0: the group could never run a pod",
                    Some("set maxReplicas to at least 1 or remove the group".into()),
                );
            }
            if !self.spec.cluster.autoscaler.enabled && min != max {
                self.warnings.push(format!(
                    "{path}: without cluster.autoscaler.enabled the group stays at {} replicas (bounds {min}..{max} are used only by the autoscaler)",
                    w.replicas
                ));
            }
            if target == Target::Aks && w.vm_size.is_none() {
                self.err(
                    format!("{path}.vmSize"),
                    format!("worker group `{}` needs a `vmSize` on target aks", w.name),
                    Some("e.g. vmSize: Standard_D8s_v5".into()),
                );
            }
            let gpu = w.gpus > 0;
            let mut tolerations = vec![];
            if gpu {
                tolerations.push(Toleration {
                    key: GPU_TAINT_KEY.into(),
                    operator: "Exists".into(),
                    value: None,
                    effect: "NoSchedule".into(),
                });
            }
            if w.spot && target == Target::Aks {
                tolerations.push(Toleration {
                    key: SPOT_TAINT_KEY.into(),
                    operator: "Equal".into(),
                    value: Some("spot".into()),
                    effect: "NoSchedule".into(),
                });
            }
            if w.spot && target != Target::Aks {
                self.warnings.push(format!("{path}.spot: Spot applies only to target aks; ignored"));
            }
            let image_ref =
                if gpu { image.gpu.clone() } else { image.cpu.clone() }.unwrap_or_else(|| local_image(image));
            let mut g = RayGroup {
                name: w.name.clone(),
                role: Role::Worker,
                spec_path: path.clone(),
                cpu_m: 0,
                memory_bytes: 0,
                gpus: w.gpus,
                replicas: w.replicas,
                min_replicas: min,
                max_replicas: max,
                spot: w.spot && target == Target::Aks,
                pool: None,
                vm_size: w.vm_size.clone(),
                fit: None,
                image: image_ref,
                ray_start_params: self.start_params(&path, &w.ray_start_params),
                node_selector: BTreeMap::new(),
                tolerations,
            };
            self.size(&mut g, w.cpu, w.memory, target, max_pods, k8s);
            out.push(g);
        }
        out
    }

    /// `rayStartParams`: KubeRay joins them unquoted into the pod's shell command (`--key=value`),
    /// so keys are flag names and values keep to a conservative charset; anything else is a
    /// located error naming the key. `resources` is the exception Ray documents: a JSON object of
    /// resource names to amounts, re-serialized here and single-quoted for the shell.
    fn start_params(&mut self, group: &str, params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in params {
            let path = format!("{group}.rayStartParams.{k}");
            if let Err(e) = start_param_key(k) {
                self.err(&path, format!("`{k}` {e}"), Some("use the flag's name without --, e.g. num-cpus".into()));
                continue;
            }
            if k == "resources" {
                match resources_param(v) {
                    Ok(q) => {
                        out.insert(k.clone(), q);
                    }
                    Err(e) => self.err(
                        &path,
                        format!("rayStartParams `resources` {e}"),
                        Some("e.g. resources: '{\"accelerator_x\": 1}'".into()),
                    ),
                }
                continue;
            }
            if super::HEAD_PORTS.iter().any(|(_, p, _)| *p == Some(k.as_str()))
                && !v.parse::<u16>().is_ok_and(|p| p > 0)
            {
                self.err(
                    &path,
                    format!("rayStartParams `{k}` is {v:?}, not a port number"),
                    Some("a port is a number from 1 to 65535".into()),
                );
                continue;
            }
            if let Some(c) = v.chars().find(|c| !start_param_char(*c)) {
                self.err(
                    &path,
                    format!(
                        "rayStartParams `{k}` holds {c:?}: KubeRay puts the value unquoted into the pod's shell command"
                    ),
                    Some("values are letters, digits and _ . , : / = + @ % - only".into()),
                );
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
        out
    }

    fn vm(&mut self, path: &str, vm_size: &str) -> Option<VmShape> {
        let custom =
            self.spec.azure.as_ref().and_then(|a| a.vm_sizes.iter().find(|(k, _)| k.eq_ignore_ascii_case(vm_size)));
        if let Some((_, v)) = custom {
            let memory_bytes = match v.memory {
                MemoryRequest::Bytes(b) => b,
                MemoryRequest::Auto => 0,
            };
            if memory_bytes == 0 || v.vcpus == 0 {
                self.err(
                    format!("azure.vmSizes.{vm_size}"),
                    "a custom VM size needs vcpus and memory",
                    Some(format!("describe it fully, e.g. {vm_size}: {{ vcpus: 8, memory: 32Gi, gpus: 0 }}")),
                );
                return None;
            }
            return Some(VmShape { vcpus: v.vcpus, memory_bytes, gpus: v.gpus });
        }
        let shape = azure::vm_shape(vm_size);
        if shape.is_none() {
            let known: Vec<String> = azure::VM_SIZES.iter().map(|v| v.0.to_string()).collect();
            let hint = match crate::spec::schema_check::did_you_mean(vm_size, &known) {
                Some(s) => format!(
                    "did you mean `{s}`? Or describe it: azure.vmSizes: {{ {vm_size}: {{ vcpus: 8, memory: 32Gi, gpus: 0 }} }}"
                ),
                None => format!("describe it: azure.vmSizes: {{ {vm_size}: {{ vcpus: 8, memory: 32Gi, gpus: 0 }} }}"),
            };
            self.err(path, format!("unknown VM size `{vm_size}`"), Some(hint));
        }
        shape
    }

    /// Sizes a group's pod: `auto` fills the node; explicit requests must fit.
    fn size(
        &mut self,
        g: &mut RayGroup,
        cpu: CpuRequest,
        mem: MemoryRequest,
        target: Target,
        max_pods: Option<u32>,
        k8s: Option<(u32, u32)>,
    ) {
        let path = g.spec_path.clone();
        // Explicit zeros are refused on every target: a pod (or a local node) with no CPU or no
        // memory cannot run Ray.
        let mut zero = false;
        if cpu == CpuRequest::Millis(0) {
            zero = true;
            self.err(
                format!("{path}.cpu"),
                "cpu is 0: a Ray pod needs some CPU",
                Some(if g.role == Role::Head {
                    "e.g. cpu: 1; to keep tasks off the head, set rayStartParams: { num-cpus: \"0\" }".into()
                } else {
                    "e.g. cpu: 1".into()
                }),
            );
        }
        if mem == MemoryRequest::Bytes(0) {
            zero = true;
            self.err(format!("{path}.memory"), "memory is 0: a Ray pod needs memory", Some("e.g. memory: 4Gi".into()));
        }
        if zero {
            return;
        }
        let Some(vm_size) = g.vm_size.clone() else {
            // No VM to size for: explicit values, or local defaults.
            match (target, cpu, mem) {
                (Target::Local, _, _) => {}
                (_, CpuRequest::Auto, _) | (_, _, MemoryRequest::Auto) if target == Target::Kubernetes => {
                    self.err(
                            format!("{path}.cpu"),
                            "`auto` sizing needs a vmSize; on target kubernetes give cpu and memory explicitly (or the nodes' vmSize)",
                            Some("e.g. cpu: 4, memory: 16Gi".into()),
                        );
                }
                _ => {}
            }
            g.cpu_m = match cpu {
                CpuRequest::Millis(m) => m,
                CpuRequest::Auto => LOCAL_DEFAULT_CPU_M,
            };
            g.memory_bytes = match mem {
                MemoryRequest::Bytes(b) => b,
                MemoryRequest::Auto => LOCAL_DEFAULT_MEM,
            };
            return;
        };
        let Some(vm) = self.vm(&format!("{path}.vmSize"), &vm_size) else { return };
        let max_pods = max_pods.unwrap_or(110);
        let alloc = azure::allocatable(vm, max_pods, k8s);
        let reserve = self.spec.azure.as_ref().map(|a| a.daemonset_reserve.clone()).unwrap_or_default();
        let res_cpu = match reserve.cpu {
            CpuRequest::Millis(m) => m,
            CpuRequest::Auto => 500,
        };
        let res_mem = match reserve.memory {
            MemoryRequest::Bytes(b) => b,
            MemoryRequest::Auto => GI,
        };
        // The head shares its node with the autoscaler sidecar when the autoscaler is on.
        let sidecar = g.role == Role::Head && self.spec.cluster.autoscaler.enabled;
        let (res_cpu, res_mem) = if sidecar {
            (res_cpu.saturating_add(super::AUTOSCALER_CPU_M), res_mem.saturating_add(super::AUTOSCALER_MEMORY_BYTES))
        } else {
            (res_cpu, res_mem)
        };
        let avail_cpu = alloc.cpu_m.saturating_sub(res_cpu);
        let avail_mem = alloc.memory_bytes.saturating_sub(res_mem);
        if alloc.cpu_interpolated {
            self.warnings.push(format!(
                "{path}.vmSize: AKS does not document the CPU reservation for {} cores; {vm_size} uses an interpolated {}m",
                vm.vcpus,
                (u64::from(vm.vcpus) * 1000).saturating_sub(alloc.cpu_m)
            ));
        }
        if vm.gpus > 0 && g.gpus == 0 && g.role == Role::Worker {
            self.err(
                format!("{path}.gpus"),
                format!("{vm_size} has {} GPU(s) but the group asks for none", vm.gpus),
                Some(format!(
                    "set gpus: {} (GPU image, taint and tolerations follow) or choose a CPU VM size",
                    vm.gpus
                )),
            );
        }
        if g.gpus > vm.gpus {
            let fits: Vec<&str> = azure::VM_SIZES.iter().filter(|v| v.3 >= g.gpus).map(|v| v.0).take(3).collect();
            self.err(
                format!("{path}.gpus"),
                format!("requests {} GPU(s), {vm_size} has {}", g.gpus, vm.gpus),
                Some(if fits.is_empty() {
                    "lower gpus".into()
                } else {
                    format!("use a GPU VM size such as {}", fits.join(", "))
                }),
            );
        }
        let cpu_m = match cpu {
            CpuRequest::Auto => (avail_cpu / 1000) * 1000,
            CpuRequest::Millis(m) => m,
        };
        let memory_bytes = match mem {
            MemoryRequest::Auto => (avail_mem / GI) * GI,
            MemoryRequest::Bytes(b) => b,
        };
        let reserve_note = format!(
            "after the {} CPU / {} GiB {}",
            format_cpu(res_cpu),
            gib(res_mem),
            if sidecar { "DaemonSet reserve and autoscaler sidecar" } else { "DaemonSet reserve" }
        );
        if cpu_m == 0 || memory_bytes == 0 {
            self.err(
                format!("{path}.vmSize"),
                format!("{vm_size} leaves no whole CPU or GiB to a Ray pod {reserve_note}"),
                Some(
                    suggest_vm(&vm_size, 1000, GI, g.gpus, max_pods, k8s, res_cpu, res_mem)
                        .map(|v| format!("use {v}"))
                        .unwrap_or_default(),
                ),
            );
            return;
        }
        if cpu_m > avail_cpu {
            let alt = suggest_vm(&vm_size, cpu_m, memory_bytes, g.gpus, max_pods, k8s, res_cpu, res_mem);
            self.err(
                format!("{path}.cpu"),
                format!(
                    "requests {} CPU, {vm_size} allocates {:.2} CPU to pods ({:.2} {reserve_note})",
                    cpus(cpu_m),
                    alloc.cpu_m as f64 / 1000.0,
                    avail_cpu as f64 / 1000.0
                ),
                Some(format!("use cpu: {}{}", avail_cpu / 1000, alt.map(|v| format!(" or {v}")).unwrap_or_default())),
            );
        }
        if memory_bytes > avail_mem {
            let alt = suggest_vm(&vm_size, cpu_m, memory_bytes, g.gpus, max_pods, k8s, res_cpu, res_mem);
            self.err(
                format!("{path}.memory"),
                format!(
                    "requests {} ({} GiB), {vm_size} allocates {} GiB to pods ({} GiB {reserve_note}, maxPods {max_pods})",
                    format_memory(memory_bytes),
                    gib(memory_bytes),
                    gib(alloc.memory_bytes),
                    gib(avail_mem)
                ),
                Some(format!("use memory: {}Gi{}", avail_mem / GI, alt.map(|v| format!(" or {v}")).unwrap_or_default())),
            );
        }
        let per_node = |have: u64, want: u64| have.checked_div(want).unwrap_or(u64::MAX);
        let mut ppn = per_node(avail_cpu, cpu_m).min(per_node(avail_mem, memory_bytes));
        if let Some(n) = vm.gpus.checked_div(g.gpus) {
            ppn = ppn.min(u64::from(n));
        }
        // At most max_pods, a u32.
        let ppn = u32::try_from(ppn.clamp(1, u64::from(max_pods))).unwrap_or(max_pods);
        g.cpu_m = cpu_m;
        g.memory_bytes = memory_bytes;
        g.fit = Some(Fit {
            allocatable: alloc,
            available_cpu_m: avail_cpu,
            available_memory_bytes: avail_mem,
            pods_per_node: ppn,
            cpu_utilisation_pct: pct(cpu_m.saturating_mul(u64::from(ppn)), alloc.cpu_m),
            memory_utilisation_pct: pct(memory_bytes.saturating_mul(u64::from(ppn)), alloc.memory_bytes),
        });
    }

    fn azure(
        &mut self,
        name: &str,
        a: &spec::Azure,
        head: &mut RayGroup,
        workers: &mut [RayGroup],
        max_pods: u32,
        k8s: Option<(u32, u32)>,
    ) -> AzureModel {
        if let Some(v) = &a.kubernetes_version
            && k8s.is_none()
        {
            self.err(
                "azure.kubernetesVersion",
                format!("`{v}` is not a Kubernetes version (1.X)"),
                Some("e.g. kubernetesVersion: \"1.33\", or leave it out for the newest AKS offers".into()),
            );
        }
        let mut zones: Vec<String> = vec![];
        for z in &a.zones {
            if !matches!(z.as_str(), "1" | "2" | "3") {
                self.err(
                    "azure.zones",
                    format!("`{z}` is not an availability zone"),
                    Some("Azure regions number their zones \"1\", \"2\" and \"3\"".into()),
                );
            } else if zones.contains(z) {
                self.err("azure.zones", format!("zone `{z}` is listed twice"), None);
            } else {
                zones.push(z.clone());
            }
        }
        if a.location.is_empty() || !a.location.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            self.err(
                "azure.location",
                format!("`{}` is not an Azure region name", a.location),
                Some("region names are lowercase, e.g. westeurope".into()),
            );
        }
        if let Some(sub) = &a.subscription_id
            && !is_guid(sub)
        {
            self.err(
                "azure.subscriptionId",
                format!("`{sub}` is not a subscription id (a GUID)"),
                Some("e.g. 00000000-0000-0000-0000-000000000000; `az account show --query id` prints yours".into()),
            );
        }
        if !(10..=250).contains(&max_pods) {
            self.err(
                "azure.network.maxPods",
                format!("maxPods {max_pods} is outside 10..250"),
                Some("AKS accepts 10 to 250 pods per node".into()),
            );
        }
        if a.network.plugin == spec::NetworkPlugin::Kubenet && a.network.mode != spec::NetworkMode::Overlay {
            self.warnings.push("azure.network.mode applies to the azure plugin only; ignored with kubenet".into());
        }
        let rg = a.resource_group.clone().unwrap_or_else(|| format!("rg-{name}"));
        self.check_name(
            if a.resource_group.is_some() { "azure.resourceGroup" } else { "name" },
            &rg,
            names::resource_group,
            "resource group name",
        );
        let aks_name = format!("aks-{name}");
        self.check_name("name", &aks_name, names::aks_cluster, "deployment name");
        let acr = a.registry.name.clone().unwrap_or_else(|| names::default_acr(name));
        if let Err(e) = names::acr(&acr) {
            let path = if a.registry.name.is_some() { "azure.registry.name" } else { "name" };
            self.err(
                path,
                format!("registry name `{acr}` {e}"),
                Some("set azure.registry.name to 5-50 letters and digits".into()),
            );
        }
        if let Some(st) = &a.state {
            self.check_name(
                "azure.state.storageAccount",
                &st.storage_account,
                names::storage_account,
                "storage account name",
            );
            self.check_name(
                "azure.state.resourceGroup",
                &st.resource_group,
                names::resource_group,
                "resource group name",
            );
            if st.container.len() < 3 || st.container.len() > 63 || names::dns1123_label(&st.container).is_err() {
                self.err(
                    "azure.state.container",
                    format!("`{}` is not a valid blob container name", st.container),
                    Some("3-63 lowercase letters, digits and -".into()),
                );
            }
        }

        // System pool: tainted CriticalAddonsOnly, at least 2 vCPU / 4 GiB.
        let sys_vm = self.vm("azure.systemPool.vmSize", &a.system_pool.vm_size);
        if let Some(v) = sys_vm {
            if v.vcpus < 2 || v.memory_bytes < 4 * GI {
                self.err(
                    "azure.systemPool.vmSize",
                    format!(
                        "{} has {} vCPU / {} GiB; the system pool needs at least 2 vCPU and 4 GiB",
                        a.system_pool.vm_size,
                        v.vcpus,
                        gib(v.memory_bytes)
                    ),
                    Some("use Standard_D2s_v5 or larger".into()),
                );
            }
            if v.gpus > 0 {
                self.warnings.push("azure.systemPool.vmSize is a GPU size: system pods will not use its GPUs".into());
            }
        }
        if a.system_pool.count == 0 {
            self.err(
                "azure.systemPool.count",
                "the system pool needs at least one node",
                Some("set count: 1 or more".into()),
            );
        }
        let sys_vm = sys_vm.unwrap_or(VmShape { vcpus: 2, memory_bytes: 8 * GI, gpus: 0 });
        let system_pool = NodePool {
            name: "system".into(),
            vm_size: a.system_pool.vm_size.clone(),
            vm: sys_vm,
            allocatable: azure::allocatable(sys_vm, max_pods, k8s),
            group: None,
            autoscaled: false,
            min_count: a.system_pool.count,
            max_count: a.system_pool.count,
            node_count: a.system_pool.count,
            spot: false,
            labels: BTreeMap::new(),
            taints: vec!["CriticalAddonsOnly=true:NoSchedule".into()],
        };

        // One pool per Ray group.
        let mut pools = vec![];
        let mut used: BTreeMap<String, String> =
            BTreeMap::from([("system".to_string(), "the system pool".to_string())]);
        let explicit: Vec<Option<String>> = std::iter::once(self.spec.cluster.head.node_pool.clone())
            .chain(self.spec.cluster.worker_groups.iter().map(|w| w.node_pool.clone()))
            .collect();
        for (idx, g) in std::iter::once(&mut *head).chain(workers.iter_mut()).enumerate() {
            let explicit_name = explicit.get(idx).cloned().flatten();
            let pool_name = explicit_name.clone().unwrap_or_else(|| {
                if g.role == Role::Head { "rayhead".into() } else { names::pool_from_group(&g.name) }
            });
            let field = format!("{}.{}", g.spec_path, if explicit_name.is_some() { "nodePool" } else { "name" });
            if let Err(e) = names::aks_pool(&pool_name) {
                self.err(
                    &field,
                    format!("node pool name `{pool_name}` {e}"),
                    Some(format!("set {}.nodePool to 1-12 lowercase letters and digits", g.spec_path)),
                );
            }
            if let Some(other) = used.get(&pool_name) {
                self.err(
                    &field,
                    format!("node pool name `{pool_name}` is already used by {other}"),
                    Some(format!("AKS pool names are unique: set {}.nodePool to another name", g.spec_path)),
                );
            }
            used.insert(pool_name.clone(), format!("group `{}`", g.name));
            let Some(fit) = g.fit.clone() else { continue };
            let vm_size = g.vm_size.clone().unwrap_or_default();
            let vm = self.vm(&format!("{}.vmSize", g.spec_path), &vm_size).unwrap_or(VmShape {
                vcpus: 0,
                memory_bytes: 0,
                gpus: 0,
            });
            let nodes = |pods: u32| pods.div_ceil(fit.pods_per_node);
            // The long-running cluster's pods (none for an ephemeral-only group), and room for
            // the largest ephemeral job cluster's beside them.
            let want = self.demand.get(idx).copied().unwrap_or_default();
            let (min, now, max) = if want.ephemeral_only {
                (0, 0, want.extra_max)
            } else {
                (g.min_replicas, g.replicas, g.max_replicas.saturating_add(want.extra_max))
            };
            let (min_count, max_count, node_count) = (nodes(min), nodes(max), nodes(now));
            if max_count > AKS_MAX_POOL_NODES {
                let sets_max =
                    idx > 0 && self.spec.cluster.worker_groups.get(idx - 1).is_some_and(|w| w.max_replicas.is_some());
                let ephemeral = if want.extra_max > 0 { " (with room for an ephemeral job's cluster)" } else { "" };
                self.err(
                    format!("{}.{}", g.spec_path, if sets_max { "maxReplicas" } else { "replicas" }),
                    format!(
                        "{max} pods{ephemeral} at {} per {vm_size} node need {max_count} nodes; an AKS node pool has at most {AKS_MAX_POOL_NODES}",
                        fit.pods_per_node
                    ),
                    Some("lower the replicas or use a larger vmSize (more pods per node)".into()),
                );
            }
            let mut labels = BTreeMap::from([
                (DEPLOYMENT_LABEL.to_string(), name.to_string()),
                (GROUP_LABEL.to_string(), g.name.clone()),
            ]);
            let mut taints = vec![];
            if g.is_gpu() {
                labels.insert(GPU_LABEL.into(), "true".into());
                taints.push(format!("{GPU_TAINT_KEY}=present:NoSchedule"));
            }
            if g.spot {
                taints.push(format!("{SPOT_TAINT_KEY}=spot:NoSchedule"));
            }
            g.pool = Some(pool_name.clone());
            g.node_selector = BTreeMap::from([(GROUP_LABEL.to_string(), g.name.clone())]);
            if g.is_gpu() {
                g.node_selector.insert(GPU_LABEL.into(), "true".into());
            }
            pools.push(NodePool {
                name: pool_name,
                vm_size,
                vm,
                allocatable: fit.allocatable,
                group: Some(g.name.clone()),
                autoscaled: min_count != max_count,
                min_count,
                max_count,
                node_count,
                spot: g.spot,
                labels,
                taints,
            });
        }

        let mount_kinds: Vec<spec::MountType> = self.spec.cluster.mounts.iter().map(|m| m.kind).collect();
        AzureModel {
            subscription_id: a.subscription_id.clone(),
            location: a.location.clone(),
            resource_group: rg,
            dns_prefix: name.to_string(),
            aks_name,
            kubernetes_version: a.kubernetes_version.clone(),
            zones,
            network_plugin: match a.network.plugin {
                spec::NetworkPlugin::Azure => "azure",
                spec::NetworkPlugin::Kubenet => "kubenet",
            },
            network_plugin_mode: (a.network.plugin == spec::NetworkPlugin::Azure
                && a.network.mode == spec::NetworkMode::Overlay)
                .then_some("overlay"),
            max_pods,
            system_pool,
            ray_pools: pools,
            acr_login_server: format!("{}.azurecr.io", acr.to_lowercase()),
            acr_name: acr,
            acr_sku: match a.registry.sku {
                spec::RegistrySku::Basic => "Basic",
                spec::RegistrySku::Standard => "Standard",
                spec::RegistrySku::Premium => "Premium",
            },
            state: a.state.as_ref().map(|s| StateModel {
                resource_group: s.resource_group.clone(),
                storage_account: s.storage_account.clone(),
                container: s.container.clone(),
                key: s.key.clone().unwrap_or_else(|| format!("{name}.tfstate")),
            }),
            tags: {
                let mut t = a.tags.clone();
                t.entry("raydeploy-deployment".into()).or_insert_with(|| name.to_string());
                t
            },
            blob_driver: mount_kinds.contains(&spec::MountType::Azureblob),
            file_driver: mount_kinds.contains(&spec::MountType::Azurefile),
        }
    }

    fn secrets(&mut self) -> Vec<SecretModel> {
        let mut seen = BTreeSet::new();
        let mut out = vec![];
        // Environment variables of the Ray containers, and who sets them: `cluster.env`, then
        // each exposed secret's keys (envFrom). One name set twice is ambiguous: refused.
        let mut env_owner: BTreeMap<String, String> =
            self.spec.cluster.env.keys().map(|k| (k.clone(), "cluster.env".to_string())).collect();
        for (i, s) in self.spec.secrets.iter().enumerate() {
            let path = format!("secrets[{i}]");
            if s.expose_as_env {
                for k in s.data.keys() {
                    if let Some(owner) = env_owner.get(k) {
                        self.err(
                            format!("{path}.data.{k}"),
                            format!(
                                "`{k}` is also set by {owner}: secret `{}` exposes it as an environment variable of the Ray containers too",
                                s.name
                            ),
                            Some("rename one of them, or set exposeAsEnv: false on this secret".into()),
                        );
                    } else {
                        env_owner.insert(k.clone(), format!("secret `{}` ({path})", s.name));
                    }
                }
            }
            self.check_name(&format!("{path}.name"), &s.name, names::dns1123_subdomain, "Secret name (DNS-1123)");
            if !seen.insert(s.name.clone()) {
                self.err(
                    format!("{path}.name"),
                    format!("secret `{}` is defined twice", s.name),
                    Some("secret names must be unique: merge the keys into one secret or rename it".into()),
                );
            }
            if s.data.is_empty() {
                self.err(
                    format!("{path}.data"),
                    format!("secret `{}` has no keys", s.name),
                    Some("add at least one key".into()),
                );
            }
            for (k, src) in &s.data {
                if let Err(e) = names::secret_key(k) {
                    self.err(
                        format!("{path}.data.{k}"),
                        format!("`{k}` {e}"),
                        Some("rename the key, e.g. api-key".into()),
                    );
                }
                if s.expose_as_env && names::env_var(k).is_err() {
                    self.warnings.push(format!(
                        "{path}.data.{k}: `{k}` is not a portable environment variable name; Kubernetes before 1.32 skips it in envFrom"
                    ));
                }
                match src {
                    spec::SecretSource::FromEnv(v) if names::env_var(v).is_err() => self.err(
                        format!("{path}.data.{k}.fromEnv"),
                        format!("`{v}` is not a valid environment variable name"),
                        Some("name a variable of letters, digits and _".into()),
                    ),
                    // Read at deploy time (it need not exist to validate), under the same rule.
                    spec::SecretSource::FromFile(f) => {
                        if let Err(e) = paths::check_relative(f) {
                            self.path_err(&format!("{path}.data.{k}.fromFile"), e);
                        }
                    }
                    spec::SecretSource::FromKeyVault(kv) => {
                        if kv.vault.len() < 3
                            || kv.vault.len() > 24
                            || !kv.vault.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        {
                            self.err(
                                format!("{path}.data.{k}.fromKeyVault.vault"),
                                format!("`{}` is not a Key Vault name (3-24 letters, digits, -)", kv.vault),
                                Some("use the vault's name, not its URL".into()),
                            );
                        }
                        if kv.secret.is_empty() || !kv.secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                            self.err(
                                format!("{path}.data.{k}.fromKeyVault.secret"),
                                format!("`{}` is not a Key Vault secret name (letters, digits, -)", kv.secret),
                                Some("use the secret's name as Key Vault shows it".into()),
                            );
                        }
                    }
                    _ => {}
                }
            }
            out.push(SecretModel {
                name: s.name.clone(),
                keys: s.data.keys().cloned().collect(),
                sources: s.data.clone(),
                expose_as_env: s.expose_as_env,
            });
        }
        out
    }

    fn mounts(&mut self, name: &str, secrets: &[SecretModel]) -> Vec<MountModel> {
        let mut seen = BTreeSet::new();
        let mut paths = BTreeSet::new();
        let mut out = vec![];
        for (i, m) in self.spec.cluster.mounts.iter().enumerate() {
            let path = format!("cluster.mounts[{i}]");
            self.check_name(&format!("{path}.name"), &m.name, names::dns1123_label, "mount name (DNS-1123 label)");
            if !seen.insert(m.name.clone()) {
                self.err(
                    format!("{path}.name"),
                    format!("mount `{}` is defined twice", m.name),
                    Some("mount names must be unique: rename one".into()),
                );
            }
            let mount_path = match normalize_mount_path(&m.path) {
                Ok(p) => p,
                Err((e, help)) => {
                    self.err(format!("{path}.path"), format!("`{}` {e}", m.path), Some(help.into()));
                    m.path.clone()
                }
            };
            if mount_path.starts_with('/') && overlaps(&mount_path, JOBS_DIR) {
                self.err(
                    format!("{path}.path"),
                    format!("`{}` would cover {JOBS_DIR}, where the image holds the jobs' folders", m.path),
                    Some("mount it elsewhere, e.g. /data".into()),
                );
            }
            if !paths.insert(mount_path.clone()) {
                self.err(
                    format!("{path}.path"),
                    format!("`{mount_path}` is already a mount path"),
                    Some("give each mount its own path".into()),
                );
            }
            let need = |b: &mut Self, field: &str, v: &Option<String>, t: &str| {
                if v.as_deref().is_none_or(str::is_empty) {
                    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                    b.err(
                        format!("{path}.{field}"),
                        format!("{article} `{t}` mount needs `{field}`"),
                        Some(format!("add {field}: … to the mount")),
                    );
                }
            };
            let (kind, azure_only) = match m.kind {
                spec::MountType::Azureblob => {
                    need(self, "container", &m.container, "azureblob");
                    need(self, "storageAccount", &m.storage_account, "azureblob");
                    ("azureblob", true)
                }
                spec::MountType::Azurefile => {
                    need(self, "share", &m.share, "azurefile");
                    need(self, "storageAccount", &m.storage_account, "azurefile");
                    ("azurefile", true)
                }
                spec::MountType::Pvc => {
                    need(self, "claimName", &m.claim_name, "pvc");
                    if let Some(c) = m.claim_name.as_deref().filter(|c| !c.is_empty()) {
                        self.check_name(
                            &format!("{path}.claimName"),
                            c,
                            names::dns1123_subdomain,
                            "PersistentVolumeClaim name (DNS-1123)",
                        );
                    }
                    ("pvc", false)
                }
            };
            if let Some(sa) = &m.storage_account {
                self.check_name(&format!("{path}.storageAccount"), sa, names::storage_account, "storage account name");
            }
            if azure_only && self.spec.target == Target::Kubernetes && m.secret.is_none() {
                self.warnings.push(format!(
                    "{path}: a `{kind}` mount on target kubernetes needs the Azure CSI driver and usually `secret`"
                ));
            }
            if let Some(sec) = &m.secret {
                match secrets.iter().find(|s| &s.name == sec) {
                    None => self.err(
                        format!("{path}.secret"),
                        format!("secret `{sec}` is not defined in `secrets`"),
                        Some(
                            match crate::spec::schema_check::did_you_mean(
                                sec,
                                &secrets.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                            ) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => {
                                    "add it under secrets with keys azurestorageaccountname and azurestorageaccountkey"
                                        .into()
                                }
                            },
                        ),
                    ),
                    Some(s) if m.kind != spec::MountType::Pvc => {
                        for key in ["azurestorageaccountname", "azurestorageaccountkey"] {
                            if !s.keys.iter().any(|k| k == key) {
                                self.err(
                                    format!("{path}.secret"),
                                    format!("secret `{sec}` has no key `{key}`, which the CSI driver reads"),
                                    Some(format!("add {key}: {{ fromEnv: … }} to secret `{sec}`")),
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
            let size = m.size.clone().unwrap_or_else(|| "100Gi".into());
            if crate::spec::quantity::parse_memory(&size).is_none() {
                self.err(
                    format!("{path}.size"),
                    format!("`{size}` is not a quantity such as 100Gi"),
                    Some("write a Kubernetes quantity, e.g. size: 500Gi".into()),
                );
            }
            let pvc = m.kind == spec::MountType::Pvc;
            out.push(MountModel {
                name: m.name.clone(),
                kind: m.kind,
                claim_name: if pvc { m.claim_name.clone().unwrap_or_default() } else { format!("{name}-{}", m.name) },
                volume_name: (!pvc).then(|| format!("{name}-{}", m.name)),
                container: m.container.clone(),
                share: m.share.clone(),
                storage_account: m.storage_account.clone(),
                path: mount_path,
                read_only: m.read_only,
                size,
                secret: m.secret.clone(),
            });
        }
        out
    }

    fn jobs(
        &mut self,
        head: &RayGroup,
        workers: &[RayGroup],
        ephemeral: Vec<Option<EphemeralCluster>>,
        target: Target,
    ) -> Vec<JobModel> {
        let mut seen = BTreeSet::new();
        let mut out = vec![];
        let mut ephemeral = ephemeral.into_iter();
        for (i, j) in self.spec.jobs.iter().enumerate() {
            let path = format!("jobs[{i}]");
            let own = ephemeral.next().flatten();
            // The groups of the cluster the job runs on.
            let groups: Vec<&RayGroup> = match &own {
                Some(c) => c.groups().collect(),
                None => std::iter::once(head).chain(workers.iter()).collect(),
            };
            let groups: Vec<&RayGroup> = groups.into_iter().filter(|g| g.max_replicas > 0).collect();
            let max_cpu = groups.iter().map(|g| g.cpu_m).max().unwrap_or(0);
            let max_gpu = groups.iter().map(|g| g.gpus).max().unwrap_or(0);
            self.check_name(
                &format!("{path}.name"),
                &j.name,
                names::dns1035_label,
                "RayJob name (DNS-1035: lowercase, starting with a letter)",
            );
            if !seen.insert(j.name.clone()) {
                self.err(
                    format!("{path}.name"),
                    format!("job `{}` is defined twice", j.name),
                    Some("job names must be unique: rename one".into()),
                );
            }
            if j.entrypoint.trim().is_empty() {
                self.err(
                    format!("{path}.entrypoint"),
                    "the entrypoint is empty",
                    Some("e.g. entrypoint: python train.py".into()),
                );
            }
            for (field, v) in
                [("entrypointNumCpus", j.entrypoint_num_cpus), ("entrypointNumGpus", j.entrypoint_num_gpus)]
            {
                if v.is_some_and(|v| v < 0.0) {
                    self.err(
                        format!("{path}.{field}"),
                        format!("{field} is negative"),
                        Some(format!("use 0 or more, or drop {field}")),
                    );
                }
            }
            if let Some(c) = j.entrypoint_num_cpus {
                // Compared in CPUs (f64): no cast of an unbounded float to an integer.
                if c > 0.0 && c * 1000.0 > max_cpu as f64 {
                    self.err(
                        format!("{path}.entrypointNumCpus"),
                        format!("the entrypoint needs {c} CPU but the largest Ray pod has {}", format_cpu(max_cpu)),
                        Some("lower entrypointNumCpus or give a group more CPU".into()),
                    );
                }
            }
            if let Some(gp) = j.entrypoint_num_gpus
                && gp > 0.0
                && gp > f64::from(max_gpu)
            {
                self.err(
                    format!("{path}.entrypointNumGpus"),
                    format!(
                        "the entrypoint needs {gp} GPU but {}",
                        if max_gpu == 0 {
                            "no group has GPUs".to_string()
                        } else {
                            format!("the largest GPU pod has {max_gpu}")
                        }
                    ),
                    Some("add a GPU worker group (gpus: 1 on a GPU VM size) or drop entrypointNumGpus".into()),
                );
            }
            if !j.shutdown_after_finish && j.ttl_seconds_after_finished.is_some() {
                self.err(
                    format!("{path}.ttlSecondsAfterFinished"),
                    "ttlSecondsAfterFinished applies only with shutdownAfterFinish: true",
                    Some("set shutdownAfterFinish: true or remove the TTL".into()),
                );
            }
            for k in j.runtime_env.env_vars.keys() {
                if let Err(e) = names::env_var(k) {
                    self.err(
                        format!("{path}.runtimeEnv.envVars.{k}"),
                        format!("`{k}` {e}"),
                        Some("rename it, e.g. NUM_WORKERS".into()),
                    );
                }
            }
            let in_image = j.working_dir.as_ref().map(|_| format!("{JOBS_DIR}/{}", j.name));
            out.push(JobModel {
                name: j.name.clone(),
                entrypoint: j.entrypoint.clone(),
                working_dir: if target == Target::Local { None } else { in_image },
                local_working_dir: self.job_paths.get(&i).cloned(),
                pip: j.runtime_env.pip.clone(),
                env_vars: j.runtime_env.env_vars.clone(),
                entrypoint_num_cpus: j.entrypoint_num_cpus,
                entrypoint_num_gpus: j.entrypoint_num_gpus,
                shutdown_after_finish: j.shutdown_after_finish,
                ttl_seconds_after_finished: if j.shutdown_after_finish {
                    Some(j.ttl_seconds_after_finished.unwrap_or(300))
                } else {
                    None
                },
                active_deadline_seconds: j.active_deadline_seconds,
                ephemeral: own,
            });
        }
        out
    }

    /// Each job's changes to the worker groups of its own cluster (none for a shared job), merged
    /// over the spec's groups like an environment overlay: a field the job gives replaces the
    /// group's, `rayStartParams` merge. Every problem is located at the job's field.
    fn ephemeral_plans(&mut self, workers: &[RayGroup]) -> Vec<Option<Vec<GroupPlan>>> {
        let groups = &self.spec.cluster.worker_groups;
        let mut out = vec![];
        for (i, j) in self.spec.jobs.iter().enumerate() {
            let path = format!("jobs[{i}]");
            if j.cluster.is_shared() {
                if !j.worker_groups.is_empty() {
                    self.err(
                        format!("{path}.workerGroups"),
                        "workerGroups changes the groups of a job's own cluster, but this job runs on the \
                         long-running cluster (cluster: shared)",
                        Some("set cluster: ephemeral, or remove workerGroups".into()),
                    );
                }
                out.push(None);
                continue;
            }
            if !j.shutdown_after_finish {
                self.err(
                    format!("{path}.shutdownAfterFinish"),
                    "the cluster of an ephemeral job is deleted after the job: shutdownAfterFinish cannot be false",
                    Some(
                        "remove shutdownAfterFinish: false (ttlSecondsAfterFinished keeps the cluster for a while)"
                            .into(),
                    ),
                );
            }
            let mut plans: Vec<GroupPlan> = workers
                .iter()
                .enumerate()
                .map(|(idx, g)| GroupPlan {
                    idx,
                    replicas: g.replicas,
                    min: g.min_replicas,
                    max: g.max_replicas,
                    params: g.ray_start_params.clone(),
                })
                .collect();
            let mut seen = BTreeSet::new();
            for (k, o) in j.worker_groups.iter().enumerate() {
                let opath = format!("{path}.workerGroups[{k}]");
                let Some(idx) = groups.iter().position(|g| g.name == o.name) else {
                    let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                    self.err(
                        format!("{opath}.name"),
                        format!("no worker group `{}` in cluster.workerGroups", o.name),
                        Some(if known.is_empty() {
                            "the spec has no worker group to change".into()
                        } else {
                            format!("name one of: {}", known.join(", "))
                        }),
                    );
                    continue;
                };
                if !seen.insert(idx) {
                    self.err(
                        format!("{opath}.name"),
                        format!("worker group `{}` is changed twice for this job", o.name),
                        Some("merge the two changes into one".into()),
                    );
                    continue;
                }
                let base = &groups[idx];
                let replicas = o.replicas.unwrap_or(base.replicas);
                let min = o.min_replicas.or(base.min_replicas).unwrap_or(replicas);
                let max = o.max_replicas.or(base.max_replicas).unwrap_or(replicas.max(min));
                if min > replicas || replicas > max {
                    let field = if o.replicas.is_some() {
                        "replicas"
                    } else if o.min_replicas.is_some() {
                        "minReplicas"
                    } else {
                        "maxReplicas"
                    };
                    self.err(
                        format!("{opath}.{field}"),
                        format!(
                            "needs minReplicas <= replicas <= maxReplicas in the job's cluster; got {min} <= {replicas} <= {max} \
                             (group `{}` with this change)",
                            o.name
                        ),
                        Some("give replicas and its bounds together, e.g. { replicas: 4, minReplicas: 4, maxReplicas: 4 }".into()),
                    );
                }
                let mut params = workers[idx].ray_start_params.clone();
                params.extend(self.start_params(&opath, &o.ray_start_params));
                plans[idx] = GroupPlan { idx, replicas, min, max, params };
            }
            out.push(Some(plans));
        }
        for (idx, w) in groups.iter().enumerate().filter(|(_, w)| w.ephemeral_only) {
            let used = out.iter().flatten().any(|plans| plans.get(idx).is_some_and(|p| p.max > 0));
            if !used {
                self.err(
                    format!("cluster.workerGroups[{idx}].ephemeralOnly"),
                    format!(
                        "group `{}` is only for ephemeral jobs, but no job with cluster: ephemeral uses it",
                        w.name
                    ),
                    Some("add a job with cluster: ephemeral, or remove ephemeralOnly".into()),
                );
            }
        }
        out
    }

    /// What the pools must hold beyond the long-running cluster (index 0: the head): room for
    /// the largest ephemeral job cluster at a time; a run beyond that waits for nodes.
    fn pool_demand(&self, workers: &[RayGroup], plans: &[Option<Vec<GroupPlan>>]) -> Vec<PoolDemand> {
        let any = plans.iter().any(Option::is_some);
        let mut demand = vec![PoolDemand { ephemeral_only: false, extra_max: u32::from(any) }];
        for (idx, w) in self.spec.cluster.worker_groups.iter().enumerate().take(workers.len()) {
            let extra_max = plans.iter().flatten().filter_map(|p| p.get(idx)).map(|p| p.max).max().unwrap_or(0);
            demand.push(PoolDemand { ephemeral_only: w.ephemeral_only, extra_max });
        }
        demand
    }
}

/// One worker group as an ephemeral job's cluster has it.
struct GroupPlan {
    /// Index of the group in `cluster.workerGroups`.
    idx: usize,
    replicas: u32,
    min: u32,
    max: u32,
    params: BTreeMap<String, String>,
}

/// What one Ray group's AKS pool holds besides the long-running cluster's pods.
#[derive(Debug, Clone, Copy, Default)]
struct PoolDemand {
    /// The group is not in the long-running cluster.
    ephemeral_only: bool,
    /// Pods of the largest ephemeral job cluster.
    extra_max: u32,
}

/// The clusters of ephemeral jobs: the final groups (pools, node selectors, tolerations set)
/// with each job's sizes; a group sized to nothing is left out.
fn ephemeral_clusters(
    head: &RayGroup,
    workers: &[RayGroup],
    plans: Vec<Option<Vec<GroupPlan>>>,
) -> Vec<Option<EphemeralCluster>> {
    plans
        .into_iter()
        .map(|plans| {
            plans.map(|plans| EphemeralCluster {
                head: head.clone(),
                workers: plans
                    .into_iter()
                    .filter(|p| p.max > 0)
                    .filter_map(|p| {
                        let mut g = workers.get(p.idx)?.clone();
                        (g.replicas, g.min_replicas, g.max_replicas, g.ray_start_params) =
                            (p.replicas, p.min, p.max, p.params);
                        Some(g)
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Characters a `rayStartParams` value may hold: none of them means anything to a shell.
fn start_param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.,:/=+@%-".contains(c)
}

/// A `ray start` flag name: lowercase letters, digits, `-` and `_`, starting with a letter.
fn start_param_key(k: &str) -> Result<(), String> {
    let ok = k.starts_with(|c: char| c.is_ascii_lowercase())
        && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok { Ok(()) } else { Err("is not a `ray start` flag name (lowercase letters, digits, - and _)".into()) }
}

/// `resources`: a JSON object (optionally already quoted) of resource names to non-negative
/// amounts, returned as compact JSON in single quotes (one shell word, nothing expanded).
fn resources_param(v: &str) -> Result<String, String> {
    let inner = v.trim().trim_matches(['\'', '"'].as_ref()).replace("\\\"", "\"");
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&inner).map_err(|_| "is not a JSON object of resource names to amounts".to_string())?;
    for (name, amount) in &obj {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.:/-".contains(c)) {
            return Err(format!("names `{name}`: resource names are letters, digits and _ . : / -"));
        }
        if !amount.as_f64().is_some_and(|a| a >= 0.0) {
            return Err(format!("gives `{name}` the amount {amount}: amounts are numbers, 0 or more"));
        }
    }
    Ok(format!("'{}'", serde_json::Value::Object(obj)))
}

/// A mount path, normalized (`//` and `.` dropped, no trailing `/`); `..` and `/` are refused.
/// The error is (what is wrong, how to fix it).
fn normalize_mount_path(p: &str) -> Result<String, (&'static str, &'static str)> {
    if !p.starts_with('/') {
        return Err(("is not an absolute path", "mount paths start with /"));
    }
    let mut parts = vec![];
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(("contains `..`", "write the folder itself, e.g. /data/in")),
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Err(("is the root folder", "mount a folder such as /data"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// `a` is `b` or a folder above or below it.
fn overlaps(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || x.strip_prefix(y).is_some_and(|rest| rest.starts_with('/'));
    under(a, b) || under(b, a)
}

fn local_image(image: &ImageModel) -> ImageRef {
    ImageRef { repository: image.base.clone(), tag: image.base_tag.clone() }
}

/// The smallest VM (same family first) whose pod space fits the request.
#[allow(clippy::too_many_arguments)]
fn suggest_vm(
    current: &str,
    cpu_m: u64,
    mem: u64,
    gpus: u32,
    max_pods: u32,
    k8s: Option<(u32, u32)>,
    res_cpu: u64,
    res_mem: u64,
) -> Option<String> {
    let fits = |name: &str| {
        let Some(vm) = azure::vm_shape(name) else { return false };
        let a = azure::allocatable(vm, max_pods, k8s);
        a.cpu_m.saturating_sub(res_cpu) >= cpu_m && a.memory_bytes.saturating_sub(res_mem) >= mem && vm.gpus >= gpus
    };
    let by_size = |mut v: Vec<&'static str>| {
        v.sort_by_key(|n| azure::vm_shape(n).map(|s| (s.vcpus, s.memory_bytes)).unwrap_or_default());
        v
    };
    let family = by_size(azure::same_family(current));
    family
        .into_iter()
        .find(|n| fits(n))
        .or_else(|| {
            by_size(azure::VM_SIZES.iter().map(|v| v.0).collect())
                .into_iter()
                .find(|n| fits(n) && (gpus > 0) == azure::vm_shape(n).is_some_and(|s| s.gpus > 0))
        })
        .map(String::from)
}

/// CPUs as a plain number: 7, 7.5, 0.25.
fn cpus(millis: u64) -> String {
    let s = format!("{:.3}", millis as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn pct(used: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { (used as f64 * 1000.0 / of as f64).round() / 10.0 }
}

pub fn parse_semver(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split('.');
    let v = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    it.next().is_none().then_some(v)
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn short_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(text: &str) -> Result<Deployment, Problems> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raydeploy.yaml");
        std::fs::write(&path, text).unwrap();
        let loaded = crate::spec::load(&path, None, &|_| None).unwrap_or_else(|r| panic!("{}", r.short()));
        build(&loaded, None)
    }

    const AKS: &str = r#"apiVersion: raydeploy/v1
kind: RayDeployment
name: eph
target: aks
azure: { location: westeurope, kubernetesVersion: "1.34" }
image: { rayVersion: "2.52.0" }
cluster:
  head: { vmSize: Standard_D8s_v5, rayStartParams: { num-cpus: "0" } }
  workerGroups:
    - { name: cpu, vmSize: Standard_D8s_v5, replicas: 1, minReplicas: 1, maxReplicas: 3, rayStartParams: { object-store-memory: "1000000000" } }
    - { name: gpu, vmSize: Standard_NC4as_T4_v3, gpus: 1, replicas: 1, ephemeralOnly: true }
  autoscaler: { enabled: true }
jobs:
  - { name: shared, entrypoint: python a.py }
  - name: big
    cluster: ephemeral
    entrypoint: python b.py
    workerGroups:
      - { name: cpu, replicas: 2, rayStartParams: { num-cpus: "4" } }
      - { name: gpu, replicas: 4 }
  - name: small
    cluster: ephemeral
    entrypoint: python c.py
    workerGroups:
      - { name: gpu, replicas: 0, minReplicas: 0, maxReplicas: 0 }
"#;

    #[test]
    fn ephemeral_jobs_get_their_own_groups_merged_like_an_overlay() {
        let d = model(AKS).unwrap();
        // The long-running cluster leaves the ephemeral-only group out.
        assert_eq!(d.cluster.workers.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["cpu"]);
        assert_eq!(d.cluster.ephemeral_only.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["gpu"]);
        assert!(d.jobs[0].ephemeral.is_none());
        let big = d.jobs[1].ephemeral.as_ref().unwrap();
        let cpu = &big.workers[0];
        // Replicas replace; the bounds the job leaves out are the group's; maps merge.
        assert_eq!((cpu.replicas, cpu.min_replicas, cpu.max_replicas), (2, 1, 3));
        assert_eq!(cpu.ray_start_params["num-cpus"], "4");
        assert_eq!(cpu.ray_start_params["object-store-memory"], "1000000000");
        // A group without bounds takes the job's replicas as its bounds.
        let gpu = &big.workers[1];
        assert_eq!((gpu.replicas, gpu.min_replicas, gpu.max_replicas), (4, 4, 4));
        // Same pods as the long-running cluster: placement, size and image come from the group.
        assert_eq!(cpu.node_selector, d.cluster.workers[0].node_selector);
        assert_eq!(cpu.cpu_m, d.cluster.workers[0].cpu_m);
        assert_eq!(gpu.tolerations, d.cluster.ephemeral_only[0].tolerations);
        assert_eq!(Some(&gpu.image), d.image.gpu.as_ref());
        assert_eq!(big.head.ray_start_params, d.cluster.head.ray_start_params);
        // A group sized to nothing is left out of that job's cluster.
        let small = d.jobs[2].ephemeral.as_ref().unwrap();
        assert_eq!(small.workers.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["cpu"]);
        assert_eq!(small.workers[0].replicas, 1);
        // The device plugin is there for the ephemeral-only GPU group.
        assert!(d.device_plugin.is_some());
    }

    #[test]
    fn pools_of_groups_only_ephemeral_jobs_use_scale_to_zero() {
        let d = model(AKS).unwrap();
        let a = d.azure.as_ref().unwrap();
        let pool = |g: &str| a.ray_pools.iter().find(|p| p.group.as_deref() == Some(g)).unwrap();
        let (head, cpu, gpu) = (pool("head"), pool("cpu"), pool("gpu"));
        // Room for the largest ephemeral job's cluster beside the long-running one.
        assert_eq!((head.min_count, head.max_count, head.node_count, head.autoscaled), (1, 2, 1, true));
        // cpu: the long-running cluster's 1..3 pods and a job cluster's at most 3 (both jobs keep
        // the group's bounds 1..3).
        assert_eq!((cpu.min_count, cpu.max_count, cpu.node_count), (1, 3 + 3, 1));
        // No GPU node between runs; at most the largest job's four.
        assert_eq!((gpu.min_count, gpu.max_count, gpu.node_count, gpu.autoscaled), (0, 4, 0, true));
        let text = crate::explain::explain(&d);
        assert!(
            text.contains("gpu: only in ephemeral jobs' clusters (big): its pool scales to zero between runs (0..4 nodes, autoscaled)"),
            "{text}"
        );
        assert!(text.contains("on a cluster of its own (head ×1, cpu ×2, gpu ×4)"), "{text}");
    }

    #[test]
    fn without_ephemeral_jobs_nothing_changes() {
        let shared = AKS.split("  - name: big").next().unwrap().replace(", ephemeralOnly: true", "");
        let d = model(&shared).unwrap();
        let a = d.azure.as_ref().unwrap();
        let head = a.ray_pools.iter().find(|p| p.group.as_deref() == Some("head")).unwrap();
        assert_eq!((head.min_count, head.max_count, head.autoscaled), (1, 1, false));
        assert_eq!(d.cluster.workers.len(), 2);
        assert!(d.cluster.ephemeral_only.is_empty());
        let j = serde_json::to_value(&d.jobs[0]).unwrap();
        assert!(j.get("ephemeral").is_none(), "{j}");
    }
}
