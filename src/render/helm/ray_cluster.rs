//! Values for the ray-cluster chart: the RayCluster named after the deployment, its head, the
//! first worker group in `worker` and the others in `additionalWorkerGroups`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::k8s::{EnvFrom, EnvVar, Image, RayPod, Resources, Toleration, Volume, VolumeMount};
use crate::model::{Deployment, RayGroup};
use crate::spec::UpscalingMode;

/// The chart's sample worker group, disabled unless the deployment defines a group of that name.
pub const CHART_SAMPLE_GROUP: &str = "smallGroup";

/// Top level of `ray-cluster.values.yaml`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterValues {
    pub image: Image,
    pub name_override: String,
    pub fullname_override: String,
    pub head: HeadValues,
    pub worker: WorkerValues,
    pub additional_worker_groups: BTreeMap<String, WorkerValues>,
}

/// The pod fields head and workers share.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodValues {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `ray start` parameters; always strings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ray_start_params: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFrom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadValues {
    pub ray_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_in_tree_autoscaling: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaler_options: Option<AutoscalerOptions>,
    #[serde(flatten)]
    pub pod: PodValues,
    /// The head container's ports, from which KubeRay builds the head service (see
    /// [`crate::model::HEAD_PORTS`]): the dashboard, the Ray client and Serve are reachable
    /// through it (`raydeploy session`).
    pub ports: Vec<ContainerPort>,
}

/// A port of the Ray container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: &'static str,
    pub container_port: u16,
}

/// The head's ports (see [`crate::model::HEAD_PORTS`]).
pub fn head_ports(head: &RayGroup) -> Vec<ContainerPort> {
    crate::model::HEAD_PORTS
        .iter()
        .map(|(name, _, _)| ContainerPort { name, container_port: crate::model::head_port(head, name) })
        .collect()
}

/// `head.autoscalerOptions` (the autoscaler sidecar of the head pod).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerOptions {
    pub idle_timeout_seconds: u32,
    pub upscaling_mode: &'static str,
    pub resources: Resources,
}

/// `worker` or one entry of `additionalWorkerGroups`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerValues {
    /// `Some(true)` switches the group off; the other fields are then omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    #[serde(flatten)]
    pub pod: PodValues,
}

impl WorkerValues {
    fn off() -> Self {
        Self { disabled: Some(true), ..Self::default() }
    }
}

fn upscaling_mode(m: UpscalingMode) -> &'static str {
    match m {
        UpscalingMode::Default => "Default",
        UpscalingMode::Aggressive => "Aggressive",
        UpscalingMode::Conservative => "Conservative",
    }
}

/// `head.autoscalerOptions` when the autoscaler is on (the long-running cluster and ephemeral
/// job clusters alike).
pub fn autoscaler_options(d: &Deployment) -> Option<AutoscalerOptions> {
    let a = &d.cluster.autoscaler;
    a.enabled.then(|| AutoscalerOptions {
        idle_timeout_seconds: a.idle_timeout_seconds,
        upscaling_mode: upscaling_mode(a.upscaling_mode),
        resources: Resources::guaranteed(BTreeMap::from([
            ("cpu".to_string(), crate::spec::quantity::format_cpu(crate::model::AUTOSCALER_CPU_M)),
            ("memory".to_string(), crate::spec::quantity::format_memory(crate::model::AUTOSCALER_MEMORY_BYTES)),
        ])),
    })
}

/// Builds the ray-cluster values.
pub fn values(d: &Deployment) -> RayClusterValues {
    let c = &d.cluster;
    let head = HeadValues {
        ray_version: d.image.ray_version.clone(),
        enable_in_tree_autoscaling: c.autoscaler.enabled.then_some(true),
        autoscaler_options: autoscaler_options(d),
        pod: pod(d, &c.head),
        ports: head_ports(&c.head),
    };
    let mut workers = c.workers.iter();
    let worker = workers.next().map_or_else(WorkerValues::off, |g| worker_group(d, g));
    // The chart names additional groups by their map key (it reads no `groupName` there).
    let mut additional: BTreeMap<String, WorkerValues> = workers
        .map(|g| (g.name.clone(), WorkerValues { disabled: Some(false), group_name: None, ..worker_group(d, g) }))
        .collect();
    // A group named like the chart's sample replaces it; otherwise the sample stays off (a
    // first group of that name lives in `worker`, so the sample entry is switched off too).
    additional.entry(CHART_SAMPLE_GROUP.to_string()).or_insert_with(WorkerValues::off);
    RayClusterValues {
        image: Image::from(d.image.cpu.as_ref().unwrap_or(&c.head.image)),
        name_override: c.name.clone(),
        fullname_override: c.name.clone(),
        head,
        worker,
        additional_worker_groups: additional,
    }
}

fn worker_group(d: &Deployment, g: &RayGroup) -> WorkerValues {
    WorkerValues {
        disabled: None,
        group_name: Some(g.name.clone()),
        replicas: Some(g.replicas),
        min_replicas: Some(g.min_replicas),
        max_replicas: Some(g.max_replicas),
        // A group's own `image` replaces the chart's top-level one, pull policy included: without
        // it the chart renders `imagePullPolicy: null`, which the RayCluster CRD's schema refuses
        // when Helm applies server-side (Helm 4).
        image: Some(Image::from(&g.image)),
        pod: pod(d, g),
    }
}

/// The chart's view of a group's [`RayPod`] (its image goes in the group's `image`).
fn pod(d: &Deployment, g: &RayGroup) -> PodValues {
    let p = RayPod::of(d, g);
    PodValues {
        labels: p.labels,
        ray_start_params: p.ray_start_params,
        container_env: p.env,
        env_from: p.env_from,
        resources: Some(p.resources),
        node_selector: p.node_selector,
        tolerations: p.tolerations,
        volumes: p.volumes,
        volume_mounts: p.volume_mounts,
    }
}
