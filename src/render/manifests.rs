//! Kubernetes manifests: Secrets (placeholders only), RayJobs, mount volumes.
use super::RenderError;
use crate::model::Deployment;

pub fn render(_d: &Deployment) -> Result<Vec<(String, String)>, RenderError> {
    Ok(vec![])
}
