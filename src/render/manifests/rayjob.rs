//! `ray.io/v1 RayJob` manifests that submit a job to the RayCluster raydeploy deploys.
//!
//! Jobs attach to that cluster with `spec.clusterSelector` (`ray.io/cluster: <cluster name>`)
//! instead of carrying their own `rayClusterSpec`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ObjectMeta;
use crate::model::{Deployment, JobModel};
use crate::render::RenderError;
use crate::render::yaml::to_yaml;

/// Label naming the raydeploy job a RayJob comes from.
pub const JOB_LABEL: &str = "raydeploy.io/job";
/// The clusterSelector key KubeRay matches against RayCluster names.
pub const CLUSTER_SELECTOR_KEY: &str = "ray.io/cluster";
/// Container name of the submitter pod KubeRay expects.
pub const SUBMITTER_CONTAINER: &str = "ray-job-submitter";

/// A `ray.io/v1 RayJob`.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RayJobSpec {
    pub entrypoint: String,
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
    pub active_deadline_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitter_pod_template: Option<PodTemplate>,
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

/// The submitter pod template, when KubeRay's default would not do.
///
/// With a `working_dir`, `ray job submit` uploads that folder from the submitter pod, so the
/// submitter must run an image that contains it. KubeRay's default submitter runs the head's
/// image; that is the CPU image raydeploy builds unless the head is a GPU group, and only then
/// is the submitter pinned to the CPU image here (same resources as KubeRay's default).
pub fn submitter(d: &Deployment, job: &JobModel) -> Option<PodTemplate> {
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
                image: cpu.reference(),
                resources: Resources { requests: res.clone(), limits: res },
            }],
        },
    })
}

/// The RayJob object for one job.
pub fn rayjob(d: &Deployment, job: &JobModel) -> Result<RayJob, RenderError> {
    let mut metadata = ObjectMeta::new(d, &job.name, Some(&d.cluster.namespace));
    metadata.labels.insert(JOB_LABEL.into(), job.name.clone());
    if let (true, Some(ttl)) = (job.shutdown_after_finish, job.ttl_seconds_after_finished) {
        metadata.annotations.insert(crate::model::DELETE_AFTER_ANNOTATION.into(), ttl.to_string());
    }
    let env = runtime_env(job);
    let runtime_env_yaml = if env.is_empty() { None } else { Some(to_yaml("runtime env", &env)?) };
    Ok(RayJob {
        api_version: "ray.io/v1",
        kind: "RayJob",
        metadata,
        spec: RayJobSpec {
            entrypoint: job.entrypoint.clone(),
            cluster_selector: BTreeMap::from([(CLUSTER_SELECTOR_KEY.to_string(), d.cluster.name.clone())]),
            submission_mode: "K8sJobMode",
            runtime_env_yaml,
            entrypoint_num_cpus: job.entrypoint_num_cpus,
            entrypoint_num_gpus: job.entrypoint_num_gpus,
            shutdown_after_job_finishes: false,
            active_deadline_seconds: job.active_deadline_seconds,
            submitter_pod_template: submitter(d, job),
        },
    })
}

/// `manifests/jobs/<job>.yaml`.
pub fn render(d: &Deployment, job: &JobModel) -> Result<String, RenderError> {
    to_yaml("RayJob", &rayjob(d, job)?)
}
