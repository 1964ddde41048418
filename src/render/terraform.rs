//! Terraform for AKS (azurerm 4.x).
use super::RenderError;
use crate::model::Deployment;

pub fn render(_d: &Deployment, _tera: &tera::Tera) -> Result<Vec<(String, String)>, RenderError> {
    Ok(vec![])
}
