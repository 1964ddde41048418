//! The resolved deployment: every derived name, node pool, pod size and image reference that
//! the renderers need, computed once from a loaded spec, with every cross-layer rule checked.

pub mod azure;
pub mod build;
pub mod names;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

pub use build::build;

use crate::spec::{self, Target};
use azure::{Allocatable, VmShape};

/// Label every raydeploy node carries, naming its pool's Ray group.
pub const GROUP_LABEL: &str = "raydeploy.io/group";
/// Label every raydeploy node and object carries, naming the deployment.
pub const DEPLOYMENT_LABEL: &str = "raydeploy.io/deployment";
/// Taint and toleration key of GPU pools.
pub const GPU_TAINT_KEY: &str = "nvidia.com/gpu";
/// CPU (millicores) of the Ray autoscaler sidecar on the head pod (requests == limits).
pub const AUTOSCALER_CPU_M: u64 = 200;
/// Memory of the Ray autoscaler sidecar on the head pod.
pub const AUTOSCALER_MEMORY_BYTES: u64 = 512 << 20;
/// Annotation on a RayJob: seconds after it finishes when `raydeploy job` deletes the object
/// (the job runs on the deployed cluster, which stays).
pub const DELETE_AFTER_ANNOTATION: &str = "raydeploy.io/delete-after-finished-seconds";
/// Annotation on a RayJob the `jobs` phase (`deploy --with-jobs`) submitted: the hash of the job's
/// inputs (its rendered RayJob and the image its code is in). A later deploy, even from a fresh
/// checkout, skips the phase when every job's RayJob carries its current hash and succeeded.
pub const JOB_INPUTS_ANNOTATION: &str = "raydeploy.io/job-inputs";
/// Taint AKS puts on Spot pools.
pub const SPOT_TAINT_KEY: &str = "kubernetes.azure.com/scalesetpriority";
/// Label of the GPU pools raydeploy creates (value `true`): GPU pods and the device plugin
/// select it.
pub const GPU_LABEL: &str = "raydeploy.io/gpu";
/// The NVIDIA device plugin chart raydeploy installs, and its pinned version.
pub const DEVICE_PLUGIN_CHART: &str = "nvidia-device-plugin";
pub const DEVICE_PLUGIN_VERSION: &str = "0.20.0";
/// Namespace and Helm release of the device plugin.
pub const DEVICE_PLUGIN_NAMESPACE: &str = "nvidia-device-plugin";
pub const DEVICE_PLUGIN_RELEASE: &str = "nvidia-device-plugin";
/// Labels that mark NVIDIA GPU nodes on a cluster raydeploy did not create: Node Feature
/// Discovery's PCI vendor (10de is NVIDIA) and CPU vendor (Tegra) labels, and the label NVIDIA's
/// tools set (or an administrator sets by hand). Any one of them places the device plugin.
pub const GPU_NODE_LABELS: [(&str, &str); 3] = [
    ("feature.node.kubernetes.io/pci-10de.present", "true"),
    ("feature.node.kubernetes.io/cpu-model.vendor_id", "NVIDIA"),
    ("nvidia.com/gpu.present", "true"),
];

#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    /// The deployment's name (`name`, or `name-env` under an overlay).
    pub name: String,
    pub env: Option<String>,
    pub target: Target,
    /// sha256 of the resolved spec (hex, 12 chars): labels, image metadata.
    pub spec_hash: String,
    /// Folder of the spec: relative paths resolve against it.
    pub dir: PathBuf,
    pub azure: Option<AzureModel>,
    pub kubernetes: Option<KubernetesModel>,
    pub image: ImageModel,
    pub operator: OperatorModel,
    /// The NVIDIA device plugin to install before the Ray cluster: some group has GPUs, the
    /// target is a Kubernetes one and `gpu.devicePlugin` is not false.
    pub device_plugin: Option<DevicePluginModel>,
    pub cluster: ClusterModel,
    pub secrets: Vec<SecretModel>,
    pub jobs: Vec<JobModel>,
    /// Things that are allowed but worth knowing.
    pub warnings: Vec<String>,
    /// The resolved spec, for fields the model passes through unchanged.
    #[serde(skip)]
    pub spec: spec::Spec,
}

#[derive(Debug, Clone, Serialize)]
pub struct AzureModel {
    pub subscription_id: Option<String>,
    pub location: String,
    pub resource_group: String,
    pub aks_name: String,
    pub dns_prefix: String,
    /// Pinned version; none: the newest AKS offers outside preview, resolved at deploy time.
    pub kubernetes_version: Option<String>,
    /// Availability zones of every node pool (empty: regional).
    pub zones: Vec<String>,
    pub network_plugin: &'static str,
    /// `overlay` for Azure CNI Overlay, else none.
    pub network_plugin_mode: Option<&'static str>,
    pub max_pods: u32,
    pub system_pool: NodePool,
    /// One pool per Ray group, head first.
    pub ray_pools: Vec<NodePool>,
    pub acr_name: String,
    pub acr_sku: &'static str,
    pub acr_login_server: String,
    pub state: Option<StateModel>,
    pub tags: BTreeMap<String, String>,
    /// Blob CSI driver needed (an `azureblob` mount exists).
    pub blob_driver: bool,
    /// Azure Files CSI driver needed.
    pub file_driver: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StateModel {
    pub resource_group: String,
    pub storage_account: String,
    pub container: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubernetesModel {
    pub context: Option<String>,
    pub registry: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodePool {
    pub name: String,
    pub vm_size: String,
    pub vm: VmShape,
    pub allocatable: Allocatable,
    /// Ray group on this pool (none for the system pool).
    pub group: Option<String>,
    pub autoscaled: bool,
    pub min_count: u32,
    pub max_count: u32,
    /// Initial (or fixed) node count.
    pub node_count: u32,
    pub spot: bool,
    pub labels: BTreeMap<String, String>,
    /// `key=value:Effect`
    pub taints: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Head,
    Worker,
}

#[derive(Debug, Clone, Serialize)]
pub struct RayGroup {
    /// `head` or the worker group's name (the KubeRay `groupName`).
    pub name: String,
    pub role: Role,
    /// Path of the group in the spec, e.g. `cluster.workerGroups[1]`.
    pub spec_path: String,
    pub cpu_m: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub replicas: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub spot: bool,
    /// The AKS pool the group runs on (target aks).
    pub pool: Option<String>,
    pub vm_size: Option<String>,
    pub fit: Option<Fit>,
    pub image: ImageRef,
    pub ray_start_params: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

impl RayGroup {
    pub fn is_gpu(&self) -> bool {
        self.gpus > 0
    }
}

/// How a pod fits its node.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub allocatable: Allocatable,
    /// Left for Ray after the DaemonSet reserve.
    pub available_cpu_m: u64,
    pub available_memory_bytes: u64,
    pub pods_per_node: u32,
    pub cpu_utilisation_pct: f64,
    pub memory_utilisation_pct: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Toleration {
    pub key: String,
    pub operator: String,
    pub value: Option<String>,
    pub effect: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageModel {
    pub ray_version: String,
    pub python: String,
    /// `py311`
    pub python_tag: String,
    pub base: String,
    /// `2.52.0-py311`
    pub base_tag: String,
    /// `2.52.0-py311-gpu`
    pub base_tag_gpu: String,
    pub apt_packages: Vec<String>,
    pub pip_packages: Vec<String>,
    /// A user Dockerfile replacing the generated one (resolved path).
    pub dockerfile: Option<PathBuf>,
    /// That Dockerfile's text, read once when the spec was checked.
    #[serde(skip)]
    pub dockerfile_text: Option<String>,
    /// Repository the image is pushed to (none for target local).
    pub repository: Option<String>,
    /// Content hash of everything that goes into the image (hex, 12 chars).
    pub content_hash: String,
    pub cpu: Option<ImageRef>,
    /// Set when a GPU group exists.
    pub gpu: Option<ImageRef>,
    /// Job folders copied into the image: (source relative to the spec, destination).
    pub job_dirs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperatorModel {
    pub version: String,
    pub namespace: String,
    pub release: String,
    /// Where the `kuberay-operator` and `ray-cluster` charts come from.
    pub charts: ChartSource,
}

/// The head's ports, under KubeRay's names: KubeRay builds the head service from the head
/// container's ports, so the render lists them all (the GCS, the dashboard and job API, the Ray
/// client server, Serve's HTTP proxy, the metrics). Each: the `ray start` parameter that moves
/// it (none for Serve, whose proxy has its own setting) and Ray's default.
pub const HEAD_PORTS: [(&str, Option<&str>, u16); 5] = [
    ("gcs-server", Some("port"), 6379),
    ("dashboard", Some("dashboard-port"), 8265),
    ("client", Some("ray-client-server-port"), 10001),
    ("serve", None, 8000),
    ("metrics", Some("metrics-export-port"), 8080),
];

/// The head's port `name` (a name of [`HEAD_PORTS`]): its `rayStartParams` value where the spec
/// sets one (validated to be a port), else Ray's default.
pub fn head_port(head: &RayGroup, name: &str) -> u16 {
    let (_, param, default) = HEAD_PORTS.iter().find(|(n, _, _)| *n == name).expect("a head port name");
    param.and_then(|p| head.ray_start_params.get(p)).and_then(|v| v.parse().ok()).unwrap_or(*default)
}

/// KubeRay's own Helm repository, the default source of its charts.
pub const KUBERAY_REPO: &str = "https://ray-project.github.io/kuberay-helm/";

/// NVIDIA's Helm repository, the default source of the device plugin chart.
pub const NVIDIA_REPO: &str = "https://nvidia.github.io/k8s-device-plugin";

/// Where Helm charts come from (`kuberay.charts`, `gpu.charts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "at", rename_all = "lowercase")]
pub enum ChartSource {
    /// A Helm repository URL: `helm … CHART --repo URL --version V`.
    Repo(String),
    /// An OCI registry path: `helm … oci://PATH/CHART --version V`.
    Oci(String),
    /// A local folder (absolute) holding one folder per chart: `helm … DIR/CHART`.
    Dir(PathBuf),
}

impl ChartSource {
    /// The chart reference and source arguments for `helm upgrade|show|template`, with the
    /// version where the source is versioned (a local chart is the version it holds).
    pub fn chart_args(&self, chart: &str, version: &str) -> Vec<String> {
        match self {
            Self::Repo(url) => {
                vec![chart.into(), "--repo".into(), url.clone(), "--version".into(), version.into()]
            }
            Self::Oci(path) => {
                vec![format!("{}/{chart}", path.trim_end_matches('/')), "--version".into(), version.into()]
            }
            Self::Dir(dir) => vec![dir.join(chart).to_string_lossy().into_owned()],
        }
    }

    /// For messages: where the charts come from.
    pub fn describe(&self) -> String {
        match self {
            Self::Repo(url) => url.clone(),
            Self::Oci(path) => path.clone(),
            Self::Dir(dir) => dir.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DevicePluginModel {
    pub chart: &'static str,
    pub version: &'static str,
    pub namespace: String,
    pub release: String,
    /// Node labels (key, value) of the GPU nodes: the plugin runs on nodes with any of them.
    pub node_labels: Vec<(String, String)>,
    /// The taints of GPU nodes it tolerates (the GPU taint, and the Spot taint of AKS).
    pub tolerations: Vec<Toleration>,
    /// Where the chart comes from (`gpu.charts`; NVIDIA's repository by default).
    pub charts: ChartSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterModel {
    pub namespace: String,
    /// Helm release and RayCluster name.
    pub name: String,
    pub head: RayGroup,
    pub workers: Vec<RayGroup>,
    pub autoscaler: spec::Autoscaler,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<MountModel>,
    /// Secrets exposed to Ray containers with `envFrom`.
    pub env_from_secrets: Vec<String>,
    pub head_service: String,
    /// Worker groups only in ephemeral jobs' clusters (`ephemeralOnly`), not in this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ephemeral_only: Vec<RayGroup>,
}

impl ClusterModel {
    /// The groups of this (long-running) cluster.
    pub fn groups(&self) -> impl Iterator<Item = &RayGroup> {
        std::iter::once(&self.head).chain(self.workers.iter())
    }

    /// Every group of the spec: this cluster's and the ones only ephemeral jobs have.
    pub fn all_groups(&self) -> impl Iterator<Item = &RayGroup> {
        self.groups().chain(self.ephemeral_only.iter())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MountModel {
    pub name: String,
    pub kind: spec::MountType,
    /// Claim the pods mount.
    pub claim_name: String,
    /// PersistentVolume raydeploy creates (none for `pvc`).
    pub volume_name: Option<String>,
    pub container: Option<String>,
    pub share: Option<String>,
    pub storage_account: Option<String>,
    pub path: String,
    pub read_only: bool,
    pub size: String,
    /// Secret with the storage credentials (none: kubelet identity).
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretModel {
    pub name: String,
    pub keys: Vec<String>,
    pub sources: BTreeMap<String, spec::SecretSource>,
    pub expose_as_env: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobModel {
    pub name: String,
    pub entrypoint: String,
    /// Working dir inside the image (where `workingDir` was copied).
    pub working_dir: Option<String>,
    /// Working dir on this machine (target local).
    pub local_working_dir: Option<PathBuf>,
    pub pip: Vec<String>,
    pub env_vars: BTreeMap<String, String>,
    pub entrypoint_num_cpus: Option<f64>,
    pub entrypoint_num_gpus: Option<f64>,
    pub shutdown_after_finish: bool,
    pub ttl_seconds_after_finished: Option<u32>,
    pub active_deadline_seconds: Option<u32>,
    /// The job's own cluster (`cluster: ephemeral`); none: it runs on the long-running cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<EphemeralCluster>,
}

/// The Ray cluster of an ephemeral job: the deployment's head and worker groups (the same pods
/// as the long-running cluster's, `ephemeralOnly` groups included), with the job's changes to
/// their replicas and `rayStartParams`; groups the job sizes to nothing are left out.
#[derive(Debug, Clone, Serialize)]
pub struct EphemeralCluster {
    pub head: RayGroup,
    pub workers: Vec<RayGroup>,
}

impl EphemeralCluster {
    pub fn groups(&self) -> impl Iterator<Item = &RayGroup> {
        std::iter::once(&self.head).chain(self.workers.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_sources_give_helm_its_chart_reference_and_version() {
        let v = "1.7.0";
        assert_eq!(
            ChartSource::Repo(KUBERAY_REPO.into()).chart_args("kuberay-operator", v),
            ["kuberay-operator", "--repo", KUBERAY_REPO, "--version", v]
        );
        assert_eq!(
            ChartSource::Oci("oci://acr.example.io/helm/".into()).chart_args("ray-cluster", v),
            ["oci://acr.example.io/helm/ray-cluster", "--version", v]
        );
        // A local folder holds one version of each chart: no --version.
        assert_eq!(
            ChartSource::Dir("/spec/vendor/kuberay".into()).chart_args("ray-cluster", v),
            ["/spec/vendor/kuberay/ray-cluster"]
        );
    }
}
