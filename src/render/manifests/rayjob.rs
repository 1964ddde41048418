//! `ray.io/v1 RayJob` manifests. A shared job attaches to the RayCluster raydeploy deploys with
//! `spec.clusterSelector` (`ray.io/cluster: <cluster name>`); an ephemeral job carries its own
//! `rayClusterSpec`, whose pods are the long-running cluster's ([`RayPod`]), and the operator
//! shuts that cluster down after the job (`shutdownAfterJobFinishes`, `ttlSecondsAfterFinished`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::ObjectMeta;
use crate::model::{Deployment, EphemeralCluster, ImageRef, JobModel, RayGroup};
use crate::render::RenderError;
use crate::render::helm::k8s::{
    EnvFrom, EnvVar, RAY_PULL_POLICY, RayPod, Resources as PodResources, Toleration, Volume, VolumeMount,
};
use crate::render::helm::ray_cluster::{AutoscalerOptions, autoscaler_options};
use crate::render::yaml::to_yaml;

/// Label naming the raydeploy job a RayJob comes from.
pub const JOB_LABEL: &str = "raydeploy.io/job";
/// The clusterSelector key KubeRay matches against RayCluster names.
pub const CLUSTER_SELECTOR_KEY: &str = "ray.io/cluster";
/// Container name of the submitter pod KubeRay expects.
pub const SUBMITTER_CONTAINER: &str = "ray-job-submitter";

/// A `ray.io/v1 RayJob`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RayJob {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: RayJobSpec,
}

/// The RayJob fields raydeploy sets.
///
/// `shutdownAfterJobFinishes` is always `false` and `ttlSecondsAfterFinished` is never written:
/// the RayJob runs on a RayCluster it does not own (clusterSelector mode), so there is no
/// cluster for it to shut down, and the operator's RayJob validation rejects
/// `ttlSecondsAfterFinished > 0` unless `shutdownAfterJobFinishes` is true ("a RayJob with
/// shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished"). The CRD's own
/// CEL rules (`x-kubernetes-validations`) only constrain `deletionStrategy` and `managedBy`,
/// which are not written. The job's `shutdownAfterFinish`/`ttlSecondsAfterFinished` therefore
/// are recorded as the `raydeploy.io/delete-after-finished-seconds` annotation instead: the
/// object (not the cluster) is deleted that long after the job finishes.
///
/// An ephemeral job's RayJob owns its cluster: `rayClusterSpec` instead of the selector,
/// `shutdownAfterJobFinishes: true` and `ttlSecondsAfterFinished`; the operator deletes the
/// RayJob itself (and with it its cluster) that long after the job ends (the operator runs with
/// `DELETE_RAYJOB_CR_AFTER_JOB_FINISHES`, see [`crate::render::helm::operator`]).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RayJobSpec {
    pub entrypoint: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_selector: BTreeMap<String, String>,
    pub submission_mode: &'static str,
    /// Ray runtime environment, as a YAML document inside a string.
    #[serde(rename = "runtimeEnvYAML", skip_serializing_if = "Option::is_none")]
    pub runtime_env_yaml: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_gpus: Option<f64>,
    pub shutdown_after_job_finishes: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitter_pod_template: Option<PodTemplate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ray_cluster_spec: Option<RayClusterSpec>,
}

/// `spec.rayClusterSpec` of an ephemeral job: the head and worker groups of
/// [`EphemeralCluster`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterSpec {
    pub ray_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_in_tree_autoscaling: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaler_options: Option<AutoscalerOptions>,
    pub head_group_spec: HeadGroupSpec,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub worker_group_specs: Vec<WorkerGroupSpec>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadGroupSpec {
    pub ray_start_params: BTreeMap<String, String>,
    pub template: RayPodTemplate,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerGroupSpec {
    pub group_name: String,
    pub replicas: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub ray_start_params: BTreeMap<String, String>,
    pub template: RayPodTemplate,
}

/// The pod template of a Ray group: a [`RayPod`] as Kubernetes writes it.
#[derive(Debug, Clone, Serialize)]
pub struct RayPodTemplate {
    pub metadata: TemplateMeta,
    pub spec: RayPodSpec,
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplateMeta {
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RayPodSpec {
    pub containers: Vec<RayContainer>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// The Ray container (`ray-head` or `ray-worker`, the names the ray-cluster chart gives them).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RayContainer {
    pub name: &'static str,
    pub image: String,
    pub image_pull_policy: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFrom>,
    pub resources: PodResources,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// Ray's `runtime_env` (snake_case keys, as Ray reads them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeEnv {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
}

impl RuntimeEnv {
    fn is_empty(&self) -> bool {
        self.working_dir.is_none() && self.pip.is_empty() && self.env_vars.is_empty()
    }
}

/// Pod template of the submitter Kubernetes Job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodTemplate {
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub restart_policy: &'static str,
    pub containers: Vec<Container>,
}

/// A container; KubeRay fills in the `ray job submit` command when none is given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    pub name: &'static str,
    pub image: String,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

/// The job's Ray runtime environment.
pub fn runtime_env(job: &JobModel) -> RuntimeEnv {
    RuntimeEnv { working_dir: job.working_dir.clone(), pip: job.pip.clone(), env_vars: job.env_vars.clone() }
}

/// How a RayJob names its images: as rendered (`repository:tag`), or, when `run` submits it,
/// pinned to the digests `image-push` recorded.
pub type Images<'a> = &'a dyn Fn(&ImageRef) -> String;

fn rendered_image(r: &ImageRef) -> String {
    r.reference()
}

/// The submitter pod template, when KubeRay's default would not do.
///
/// With a `working_dir`, `ray job submit` uploads that folder from the submitter pod, so the
/// submitter must run an image that contains it. KubeRay's default submitter runs the head's
/// image; that is the CPU image raydeploy builds unless the head is a GPU group, and only then
/// is the submitter pinned to the CPU image here (same resources as KubeRay's default).
pub fn submitter(d: &Deployment, job: &JobModel) -> Option<PodTemplate> {
    submitter_with(d, job, &rendered_image)
}

fn submitter_with(d: &Deployment, job: &JobModel, images: Images) -> Option<PodTemplate> {
    let cpu = d.image.cpu.as_ref()?;
    if job.working_dir.is_none() || &d.cluster.head.image == cpu {
        return None;
    }
    let res = BTreeMap::from([("cpu".to_string(), "1".to_string()), ("memory".to_string(), "1Gi".to_string())]);
    Some(PodTemplate {
        spec: PodSpec {
            restart_policy: "Never",
            containers: vec![Container {
                name: SUBMITTER_CONTAINER,
                image: images(cpu),
                resources: Resources { requests: res.clone(), limits: res },
            }],
        },
    })
}

/// The pod template of one group of an ephemeral job's cluster: the group's [`RayPod`], labelled
/// with the job.
fn template(d: &Deployment, job: &JobModel, g: &RayGroup, container: &'static str, images: Images) -> RayPodTemplate {
    let p = RayPod::of(d, g);
    let mut labels = p.labels;
    labels.insert(JOB_LABEL.into(), job.name.clone());
    RayPodTemplate {
        metadata: TemplateMeta { labels },
        spec: RayPodSpec {
            containers: vec![RayContainer {
                name: container,
                image: images(&p.image),
                image_pull_policy: RAY_PULL_POLICY,
                env: p.env,
                env_from: p.env_from,
                resources: p.resources,
                volume_mounts: p.volume_mounts,
            }],
            volumes: p.volumes,
            node_selector: p.node_selector,
            tolerations: p.tolerations,
        },
    }
}

/// `rayClusterSpec` of an ephemeral job.
pub fn cluster_spec(d: &Deployment, job: &JobModel, c: &EphemeralCluster, images: Images) -> RayClusterSpec {
    let autoscaler = autoscaler_options(d);
    RayClusterSpec {
        ray_version: d.image.ray_version.clone(),
        enable_in_tree_autoscaling: autoscaler.is_some().then_some(true),
        autoscaler_options: autoscaler,
        head_group_spec: HeadGroupSpec {
            ray_start_params: c.head.ray_start_params.clone(),
            template: template(d, job, &c.head, "ray-head", images),
        },
        worker_group_specs: c
            .workers
            .iter()
            .map(|g| WorkerGroupSpec {
                group_name: g.name.clone(),
                replicas: g.replicas,
                min_replicas: g.min_replicas,
                max_replicas: g.max_replicas,
                ray_start_params: g.ray_start_params.clone(),
                template: template(d, job, g, "ray-worker", images),
            })
            .collect(),
    }
}

/// The RayJob object for one job, its images as rendered.
pub fn rayjob(d: &Deployment, job: &JobModel) -> Result<RayJob, RenderError> {
    rayjob_with(d, job, &rendered_image)
}

/// The RayJob object for one job, naming its images with `images`.
pub fn rayjob_with(d: &Deployment, job: &JobModel, images: Images) -> Result<RayJob, RenderError> {
    let mut metadata = ObjectMeta::new(d, &job.name, Some(&d.cluster.namespace));
    metadata.labels.insert(JOB_LABEL.into(), job.name.clone());
    let own = job.ephemeral.as_ref();
    if let (None, true, Some(ttl)) = (own, job.shutdown_after_finish, job.ttl_seconds_after_finished) {
        metadata.annotations.insert(crate::model::DELETE_AFTER_ANNOTATION.into(), ttl.to_string());
    }
    let env = runtime_env(job);
    let runtime_env_yaml = if env.is_empty() { None } else { Some(to_yaml("runtime env", &env)?) };
    let cluster_selector = match own {
        Some(_) => BTreeMap::new(),
        None => BTreeMap::from([(CLUSTER_SELECTOR_KEY.to_string(), d.cluster.name.clone())]),
    };
    Ok(RayJob {
        api_version: "ray.io/v1",
        kind: "RayJob",
        metadata,
        spec: RayJobSpec {
            entrypoint: job.entrypoint.clone(),
            cluster_selector,
            submission_mode: "K8sJobMode",
            runtime_env_yaml,
            entrypoint_num_cpus: job.entrypoint_num_cpus,
            entrypoint_num_gpus: job.entrypoint_num_gpus,
            shutdown_after_job_finishes: own.is_some(),
            ttl_seconds_after_finished: own.and(job.ttl_seconds_after_finished),
            active_deadline_seconds: job.active_deadline_seconds,
            submitter_pod_template: submitter_with(d, job, images),
            ray_cluster_spec: own.map(|c| cluster_spec(d, job, c, images)),
        },
    })
}

/// `manifests/jobs/<job>.yaml`.
pub fn render(d: &Deployment, job: &JobModel) -> Result<String, RenderError> {
    to_yaml("RayJob", &rayjob(d, job)?)
}
