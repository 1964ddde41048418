//! The typed deployment spec (contract: SPEC.md). Every struct rejects unknown keys; the JSON
//! Schema printed by `raydeploy schema` is derived from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::quantity::{CpuRequest, MemoryRequest};

/// One Ray deployment: the infrastructure, the image, the operator, the cluster, its secrets and jobs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "RayDeployment")]
pub struct Spec {
    /// Always `raydeploy/v1`.
    pub api_version: ApiVersion,
    /// Always `RayDeployment`.
    pub kind: Kind,
    /// DNS-1123 label, at most 40 characters; prefixes every derived name. With `-e ENV` the
    /// deployment is `<name>-<env>` unless the overlay sets `name` itself.
    pub name: String,
    /// Where the cluster runs.
    #[serde(default)]
    pub target: Target,
    /// Azure settings (target `aks` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<Azure>,
    /// An existing cluster (target `kubernetes` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTarget>,
    /// The Ray container image.
    #[serde(default)]
    pub image: Image,
    /// The KubeRay operator.
    #[serde(default)]
    pub kuberay: Kuberay,
    /// The Ray cluster: head, worker groups, autoscaler, environment, mounts.
    pub cluster: Cluster,
    /// GPU support on the cluster (targets `aks` and `kubernetes`, when a worker group has `gpus`).
    #[serde(default, skip_serializing_if = "Gpu::is_default")]
    pub gpu: Gpu,
    /// Kubernetes Secrets; values are resolved at deploy time and never written to disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// RayJobs submitted to the deployed cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum ApiVersion {
    #[serde(rename = "raydeploy/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum Kind {
    RayDeployment,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Azure Kubernetes Service, provisioned with Terraform.
    #[default]
    Aks,
    /// An existing Kubernetes cluster (kubeconfig context).
    Kubernetes,
    /// Real Ray processes on this machine.
    Local,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Aks => "aks",
            Target::Kubernetes => "kubernetes",
            Target::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Azure {
    /// Subscription to deploy into; `${env:AZURE_SUBSCRIPTION_ID}` is typical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// Azure region, e.g. `westeurope`.
    pub location: String,
    /// Resource group; default `rg-<deployment>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// AKS Kubernetes version (`1.X`, quoted), e.g. "1.33". Default: the newest version AKS
    /// offers in the region outside preview, looked up by `deploy` when it creates the cluster;
    /// an existing cluster keeps its version until one is set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Availability zones of every node pool, e.g. ["1", "2", "3"]; default: none (regional).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub system_pool: SystemPool,
    #[serde(default)]
    pub registry: Registry,
    /// Optional remote Terraform state (azurerm backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TerraformState>,
    /// Tags on every Azure resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Requests of the DaemonSets every node runs (kube-proxy, CNI, CSI drivers, agents),
    /// subtracted from allocatable before sizing Ray pods.
    #[serde(default)]
    pub daemonset_reserve: DaemonsetReserve,
    /// VM sizes missing from the built-in table: their vCPUs, memory and GPUs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vm_sizes: BTreeMap<String, VmShape>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonsetReserve {
    /// CPU kept free on every node for DaemonSets (default 500m).
    #[serde(default = "default_ds_cpu")]
    pub cpu: CpuRequest,
    /// Memory kept free on every node for DaemonSets (default 1Gi).
    #[serde(default = "default_ds_mem")]
    pub memory: MemoryRequest,
}

fn default_ds_cpu() -> CpuRequest {
    CpuRequest::Millis(500)
}
fn default_ds_mem() -> MemoryRequest {
    MemoryRequest::Bytes(1 << 30)
}

impl Default for DaemonsetReserve {
    fn default() -> Self {
        Self { cpu: default_ds_cpu(), memory: default_ds_mem() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmShape {
    pub vcpus: u32,
    /// Memory of the VM, e.g. `32Gi`.
    pub memory: MemoryRequest,
    #[serde(default)]
    pub gpus: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub plugin: NetworkPlugin,
    /// Azure CNI mode (plugin `azure` only).
    #[serde(default)]
    pub mode: NetworkMode,
    /// Maximum pods per node; feeds the AKS memory reservation. Default: 250 (overlay), 110
    /// (kubenet, pod subnet), 30 (node subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
}

impl Default for Network {
    fn default() -> Self {
        Self { plugin: NetworkPlugin::Azure, mode: NetworkMode::Overlay, max_pods: None }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPlugin {
    #[default]
    Azure,
    Kubenet,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum NetworkMode {
    #[default]
    Overlay,
    PodSubnet,
    NodeSubnet,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemPool {
    /// At least 2 vCPUs and 4 GiB.
    #[serde(default = "default_system_vm")]
    pub vm_size: String,
    /// Nodes of the system pool (an AKS node pool has at most 1000).
    #[serde(default = "one")]
    #[schemars(range(max = 1000))]
    pub count: u32,
}

fn default_system_vm() -> String {
    "Standard_D2s_v5".into()
}
fn one() -> u32 {
    1
}

impl Default for SystemPool {
    fn default() -> Self {
        Self { vm_size: default_system_vm(), count: 1 }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registry {
    /// ACR name, 5 to 50 alphanumerics; default `acr<name without hyphens>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub sku: RegistrySku,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum RegistrySku {
    #[default]
    Basic,
    Standard,
    Premium,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerraformState {
    pub resource_group: String,
    pub storage_account: String,
    pub container: String,
    /// State blob name; default `<deployment>.tfstate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesTarget {
    /// kubeconfig context; default: the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Repository the built image is pushed to, e.g. `docker.io/acme/ray`.
    pub registry: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    /// Ray version (`X.Y.Z`) of the image, the cluster and the autoscaler. Pin it: when left out,
    /// this raydeploy's default is used and every command warns with the version chosen.
    #[serde(default = "default_ray_version")]
    pub ray_version: String,
    /// Python version of the base image, `3.X`.
    #[serde(default = "default_python")]
    pub python: String,
    /// Base image repository; the tag is derived: `<rayVersion>-py<XY>[-gpu]`.
    #[serde(default = "default_base")]
    pub base: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apt_packages: Vec<String>,
    /// pip requirement specifiers; pin them (`pkg==1.2.3`) for reproducible images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip_packages: Vec<String>,
    /// Your own Dockerfile (relative to the spec) instead of the generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
}

pub fn default_ray_version() -> String {
    "2.52.0".into()
}
fn default_python() -> String {
    "3.11".into()
}
fn default_base() -> String {
    "rayproject/ray".into()
}

impl Default for Image {
    fn default() -> Self {
        Self {
            ray_version: default_ray_version(),
            python: default_python(),
            base: default_base(),
            apt_packages: vec![],
            pip_packages: vec![],
            dockerfile: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kuberay {
    /// Operator and chart version.
    #[serde(default = "default_kuberay_version")]
    pub version: String,
    /// Namespace of the operator.
    #[serde(default = "default_kuberay_ns")]
    pub namespace: String,
    /// Where the `kuberay-operator` and `ray-cluster` charts come from: a Helm repository URL
    /// (`https://…`, default KubeRay's), an OCI registry path (`oci://host/path`, the charts are
    /// `<path>/kuberay-operator` and `<path>/ray-cluster`), or a folder inside the spec's folder
    /// that holds both chart folders (air-gapped installs; each chart's version must equal
    /// `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charts: Option<String>,
}

fn default_kuberay_version() -> String {
    "1.7.0".into()
}
fn default_kuberay_ns() -> String {
    "kuberay".into()
}

impl Default for Kuberay {
    fn default() -> Self {
        Self { version: default_kuberay_version(), namespace: default_kuberay_ns(), charts: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gpu {
    /// Install the NVIDIA device plugin (Helm chart `nvidia-device-plugin`, pinned) in its own
    /// namespace before the Ray cluster, so that GPU nodes advertise `nvidia.com/gpu` to the
    /// scheduler. Skipped when the cluster already runs a device plugin. Set `false` when
    /// something else provides it (NVIDIA's GPU operator, a managed add-on). Default `true`.
    #[serde(default = "yes")]
    pub device_plugin: bool,
    /// Where the `nvidia-device-plugin` chart comes from: a Helm repository URL (`https://…`,
    /// default NVIDIA's), an OCI registry path (`oci://host/path`, the chart is
    /// `<path>/nvidia-device-plugin`), or a folder inside the spec's folder that holds the chart
    /// folder `nvidia-device-plugin/` (air-gapped installs; its version must be raydeploy's
    /// pinned one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charts: Option<String>,
}

impl Default for Gpu {
    fn default() -> Self {
        Self { device_plugin: true, charts: None }
    }
}

impl Gpu {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Namespace of the RayCluster, its Secrets and RayJobs.
    #[serde(default = "default_cluster_ns")]
    pub namespace: String,
    #[serde(default)]
    pub head: Head,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_groups: Vec<WorkerGroup>,
    #[serde(default)]
    pub autoscaler: Autoscaler,
    /// Environment variables of every Ray container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

fn default_cluster_ns() -> String {
    "ray".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Head {
    /// VM size of the head's own node pool (target `aks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,
    #[serde(default)]
    pub cpu: CpuRequest,
    #[serde(default)]
    pub memory: MemoryRequest,
    /// Extra `ray start` parameters (values are strings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ray_start_params: BTreeMap<String, String>,
    /// Override the derived AKS node pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerGroup {
    /// DNS-1123 label, unique within the cluster.
    pub name: String,
    /// VM size of the group's node pool (target `aks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,
    #[serde(default)]
    pub cpu: CpuRequest,
    #[serde(default)]
    pub memory: MemoryRequest,
    /// GPUs per Ray pod; a GPU group gets the GPU image, a tainted pool and tolerations.
    #[serde(default)]
    pub gpus: u32,
    /// Ray pods of the group (KubeRay keeps it in a 32-bit integer).
    #[serde(default = "one")]
    #[schemars(range(max = 2147483647))]
    pub replicas: u32,
    /// Default: `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub min_replicas: Option<u32>,
    /// Default: `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub max_replicas: Option<u32>,
    /// Run the pool on Spot VMs (evictable).
    #[serde(default)]
    pub spot: bool,
    /// Extra `ray start` parameters (values are strings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ray_start_params: BTreeMap<String, String>,
    /// Override the derived AKS node pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// Only in the clusters of ephemeral jobs (`jobs[].cluster: ephemeral`), never in the
    /// long-running cluster: on AKS its pool has no node between runs (min 0, autoscaled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral_only: bool,
}

/// A change to one worker group for an ephemeral job's own cluster, merged over the group of
/// that `name` like an environment overlay (given fields replace, `rayStartParams` merge).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerGroupOverride {
    /// The worker group of `cluster.workerGroups` this changes.
    pub name: String,
    /// Ray pods of the group in the job's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub min_replicas: Option<u32>,
    /// 0 (with `replicas: 0` and `minReplicas: 0`) leaves the group out of the job's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub max_replicas: Option<u32>,
    /// Merged into the group's `rayStartParams`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ray_start_params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaler {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_idle")]
    #[schemars(range(max = 2147483647))]
    pub idle_timeout_seconds: u32,
    #[serde(default)]
    pub upscaling_mode: UpscalingMode,
}

fn default_idle() -> u32 {
    60
}

impl Default for Autoscaler {
    fn default() -> Self {
        Self { enabled: false, idle_timeout_seconds: default_idle(), upscaling_mode: UpscalingMode::Default }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum UpscalingMode {
    #[default]
    Default,
    Aggressive,
    Conservative,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// DNS-1123 label; names the PersistentVolumeClaim.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Blob container (type `azureblob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// File share (type `azurefile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Storage account (types `azureblob`, `azurefile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<String>,
    /// Existing claim (type `pvc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// Mount path inside the Ray containers.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
    /// Secret holding the storage credentials (`azurestorageaccountname`, `azurestorageaccountkey`);
    /// without it the kubelet identity is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Capacity recorded on the volume (default 100Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Azureblob,
    Azurefile,
    Pvc,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    /// Name of the Kubernetes Secret.
    pub name: String,
    /// Key → where its value comes from at deploy time.
    pub data: BTreeMap<String, SecretSource>,
    /// Expose every key as an environment variable of the Ray containers (`envFrom`).
    #[serde(default)]
    pub expose_as_env: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the deploying process.
    FromEnv(String),
    /// A file, relative to the spec.
    FromFile(String),
    /// An Azure Key Vault secret.
    FromKeyVault(KeyVaultRef),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyVaultRef {
    pub vault: String,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    /// DNS-1123 label; names the RayJob.
    pub name: String,
    /// Command run by the job submitter.
    pub entrypoint: String,
    /// Local folder (relative to the spec) copied into the image and used as the job's working dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub runtime_env: RuntimeEnv,
    /// CPUs reserved for the entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_cpus: Option<f64>,
    /// GPUs reserved for the entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_gpus: Option<f64>,
    /// Delete the job's resources when it finishes (after `ttlSecondsAfterFinished`).
    #[serde(default = "yes")]
    pub shutdown_after_finish: bool,
    /// Seconds to keep a finished job before clean-up (default 300 when shutdownAfterFinish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub ttl_seconds_after_finished: Option<u32>,
    /// Fail the job when it runs longer than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2147483647))]
    pub active_deadline_seconds: Option<u32>,
    /// The Ray cluster the job runs on: `shared` (default) or `ephemeral`.
    #[serde(default, skip_serializing_if = "JobCluster::is_shared")]
    pub cluster: JobCluster,
    /// `cluster: ephemeral` only: changes to the spec's worker groups for this job's own cluster,
    /// merged by `name` (an unknown name is an error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_groups: Vec<WorkerGroupOverride>,
}

/// Which Ray cluster a job runs on.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobCluster {
    /// The deployment's long-running RayCluster (`deploy` creates it; the RayJob selects it).
    #[default]
    Shared,
    /// A cluster of its own, built from the spec's head and worker groups (same pods as the
    /// long-running cluster's), created for the run and deleted after it (`raydeploy run`).
    Ephemeral,
}

impl JobCluster {
    pub fn is_shared(&self) -> bool {
        *self == JobCluster::Shared
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeEnv {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
}
