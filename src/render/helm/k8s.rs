//! Kubernetes object fragments that Helm values pass through unchanged (resources, tolerations,
//! env, volumes), as typed structs with the Kubernetes field names.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{self, DEPLOYMENT_LABEL, Deployment, GROUP_LABEL, MountModel, RayGroup};
use crate::spec::quantity::{format_cpu, format_memory};

/// Everything a Ray pod of one group gets — image, size, placement, environment, secrets,
/// volumes, labels, `ray start` parameters — decided in one place. The long-running cluster's
/// chart values ([`super::ray_cluster`]) and an ephemeral job's `rayClusterSpec`
/// ([`crate::render::manifests::rayjob`]) are two views of it.
#[derive(Debug, Clone)]
pub struct RayPod {
    pub labels: BTreeMap<String, String>,
    /// `ray start` parameters; always strings.
    pub ray_start_params: BTreeMap<String, String>,
    /// The group's image (CPU or GPU), as rendered: deploy pins it to its digest.
    pub image: model::ImageRef,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFrom>,
    pub resources: Resources,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub volumes: Vec<Volume>,
    pub volume_mounts: Vec<VolumeMount>,
}

impl RayPod {
    pub fn of(d: &Deployment, g: &RayGroup) -> Self {
        let c = &d.cluster;
        let (volumes, volume_mounts) = volumes(&c.mounts);
        Self {
            labels: BTreeMap::from([
                (DEPLOYMENT_LABEL.to_string(), d.name.clone()),
                (GROUP_LABEL.to_string(), g.name.clone()),
            ]),
            ray_start_params: g.ray_start_params.clone(),
            image: g.image.clone(),
            env: c.env.iter().map(|(k, v)| EnvVar { name: k.clone(), value: v.clone() }).collect(),
            env_from: c.env_from_secrets.iter().map(|s| EnvFrom { secret_ref: NameRef { name: s.clone() } }).collect(),
            resources: Resources::of_group(g),
            node_selector: g.node_selector.clone(),
            tolerations: g.tolerations.iter().map(Toleration::from).collect(),
            volumes,
            volume_mounts,
        }
    }
}

/// A container image split the way the charts take it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub repository: String,
    pub tag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<&'static str>,
}

/// Pull policy of the Ray images: their tags name their content (and deploy pins digests), so a
/// node's copy is always the right one.
pub const RAY_PULL_POLICY: &str = "IfNotPresent";

impl From<&model::ImageRef> for Image {
    /// A Ray image with its pull policy: the ray-cluster chart writes a group's
    /// `imagePullPolicy` from the group's own `image` when that is set, so a group image
    /// without one would render `imagePullPolicy: null`.
    fn from(r: &model::ImageRef) -> Self {
        Self { repository: r.repository.clone(), tag: r.tag.clone(), pull_policy: Some(RAY_PULL_POLICY) }
    }
}

/// `resources` of a container: quantities as strings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub limits: BTreeMap<String, String>,
    pub requests: BTreeMap<String, String>,
}

impl Resources {
    /// Requests equal to limits (Guaranteed QoS).
    pub fn guaranteed(amounts: BTreeMap<String, String>) -> Self {
        Self { limits: amounts.clone(), requests: amounts }
    }

    /// A Ray group's pod size, with `nvidia.com/gpu` for GPU groups.
    pub fn of_group(g: &RayGroup) -> Self {
        let mut amounts = BTreeMap::from([
            ("cpu".to_string(), format_cpu(g.cpu_m)),
            ("memory".to_string(), format_memory(g.memory_bytes)),
        ]);
        if g.is_gpu() {
            amounts.insert(model::GPU_TAINT_KEY.to_string(), g.gpus.to_string());
        }
        Self::guaranteed(amounts)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    pub key: String,
    pub operator: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: String,
}

impl From<&model::Toleration> for Toleration {
    fn from(t: &model::Toleration) -> Self {
        Self { key: t.key.clone(), operator: t.operator.clone(), value: t.value.clone(), effect: t.effect.clone() }
    }
}

/// One `env` entry with a literal value.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// One `envFrom` entry naming a Secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFrom {
    pub secret_ref: NameRef,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NameRef {
    pub name: String,
}

/// A pod volume: an `emptyDir` or a PersistentVolumeClaim.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcSource>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    pub claim_name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Name of the `emptyDir` volume for Ray's logs at `/tmp/ray` (the charts' default).
pub const LOG_VOLUME: &str = "log-volume";

/// Volumes and mounts of every Ray container: Ray's log folder plus the deployment's mounts.
/// Helm replaces lists wholesale, so the chart's default log volume is repeated here.
pub fn volumes(mounts: &[MountModel]) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut vols = vec![];
    let mut vms = vec![];
    if !mounts.iter().any(|m| m.name == LOG_VOLUME || m.path == "/tmp/ray") {
        vols.push(Volume { name: LOG_VOLUME.into(), empty_dir: Some(BTreeMap::new()), persistent_volume_claim: None });
        vms.push(VolumeMount { name: LOG_VOLUME.into(), mount_path: "/tmp/ray".into(), read_only: false });
    }
    for m in mounts {
        vols.push(Volume {
            name: m.name.clone(),
            empty_dir: None,
            persistent_volume_claim: Some(PvcSource { claim_name: m.claim_name.clone(), read_only: m.read_only }),
        });
        vms.push(VolumeMount { name: m.name.clone(), mount_path: m.path.clone(), read_only: m.read_only });
    }
    (vols, vms)
}
