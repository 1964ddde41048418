//! Helm values for the kuberay-operator and ray-cluster charts (KubeRay v1.7.0 keys).
use super::RenderError;
use crate::model::Deployment;

pub fn render(_d: &Deployment) -> Result<Vec<(String, String)>, RenderError> {
    Ok(vec![])
}
