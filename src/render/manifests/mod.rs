//! Kubernetes manifests: Secrets (placeholders only), RayJobs, mount volumes.
//!
//! Every object is a typed struct serialized with serde; keys come out in a fixed order and
//! maps are `BTreeMap`s, so the output is byte-identical for the same deployment.

pub mod mounts;
pub mod rayjob;
pub mod secrets;

use std::collections::BTreeMap;

use serde::Serialize;

use super::RenderError;
use crate::model::{DEPLOYMENT_LABEL, Deployment};

/// Label naming the tool that manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The subset of Kubernetes `ObjectMeta` raydeploy writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// Metadata with the deployment's standard labels; `namespace` is none for cluster-scoped objects.
    pub fn new(d: &Deployment, name: &str, namespace: Option<&str>) -> Self {
        ObjectMeta {
            name: name.into(),
            namespace: namespace.map(Into::into),
            labels: labels(d),
            annotations: BTreeMap::new(),
        }
    }
}

/// Labels every raydeploy manifest carries.
pub fn labels(d: &Deployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (DEPLOYMENT_LABEL.to_string(), d.name.clone()),
        (MANAGED_BY_LABEL.to_string(), "raydeploy".to_string()),
    ])
}

/// Renders `manifests/secrets.yaml`, `manifests/jobs/<job>.yaml` and `manifests/mounts.yaml`;
/// files with nothing to hold are left out.
pub fn render(d: &Deployment) -> Result<Vec<(String, String)>, RenderError> {
    let mut files = vec![];
    if let Some(text) = secrets::render(d)? {
        files.push(("manifests/secrets.yaml".to_string(), text));
    }
    for job in &d.jobs {
        files.push((format!("manifests/jobs/{}.yaml", job.name), rayjob::render(d, job)?));
    }
    if let Some(text) = mounts::render(d)? {
        files.push(("manifests/mounts.yaml".to_string(), text));
    }
    Ok(files)
}
